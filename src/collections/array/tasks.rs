//! The worker side of array tasks: running a fused program, combining reduction states,
//! assembling a rechunked chunk, one chunk of a matrix product. Each task's first argument
//! describes it (a [`Program`] or a spec below); the chunks it reads are its dependencies.

use super::Scalar;
use super::dtype::DType;
use super::fused::{Plan, Raw};
use super::kernel::{self, Block, Outcome, Partial};
use super::program::{AxisSlice, BinaryOp, Program, ReduceOp};
use crate::protocol::Bytes;
use crate::protocol::{ArgSlot, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use serde::{Deserialize, Serialize};

/// What a reduction-combine task does.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct CombineSpec {
    pub(super) op: ReduceOp,
    /// `Some` for the last stage: turn the state into a chunk of this type, dropping the
    /// listed (length 1) axes.
    pub(super) finish: Option<(DType, Vec<usize>)>,
}

/// A region of a source chunk: `(start, len)` per axis, and where it goes in the output.
pub(super) type Piece = (Vec<(usize, usize)>, Vec<usize>);

/// Pieces of source chunks copied into one output chunk (rechunking).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct AssembleSpec {
    pub(super) dtype: DType,
    pub(super) shape: Vec<usize>,
    /// One per source chunk, in argument order.
    pub(super) pieces: Vec<Piece>,
}

/// One chunk of a matrix product: `sum_l a[l] . b[l]`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(super) struct DotSpec {
    pub(super) a: DType,
    pub(super) b: DType,
    /// The blocks sent are of `a`'s (`b`'s) transpose: the product transposes them back.
    pub(super) a_transposed: bool,
    pub(super) b_transposed: bool,
    pub(super) dtype: DType,
    pub(super) terms: usize,
    /// Bytes of the chunk made (for [`Array::explain`](super::Array::explain); not sent).
    #[serde(skip)]
    pub(super) bytes: u64,
}

fn split_head<'a>(input: &'a TaskInput<'a>) -> Result<(&'a [u8], &'a [ArgSlot]), String> {
    match input.args {
        [ArgSlot::Value(head), rest @ ..] => Ok((head, rest)),
        _ => Err("an array task needs its description first".into()),
    }
}

fn decode_head<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    decode_value(bytes).map_err(|e| format!("could not decode an array task description: {e}"))
}

/// Runs a fused program (the worker side of a program task).
pub(super) fn program_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, rest) = split_head(input)?;
    let program: Program = decode_head(head)?;
    let mut deps = input.deps.iter();
    let slots = rest
        .iter()
        .zip(&program.inputs)
        .map(|(slot, &dtype)| {
            let bytes: &[u8] = match slot {
                ArgSlot::Value(bytes) => bytes,
                _ => deps.next().ok_or("a program input is missing")?,
            };
            Ok((bytes, dtype))
        })
        .collect::<Result<Vec<(&[u8], DType)>, String>>()?;
    if slots.len() != program.inputs.len() {
        return Err(format!(
            "the program has {} inputs but the task has {}",
            program.inputs.len(),
            slots.len()
        )
        .into());
    }
    // Tile loops read f64 chunks where they lie, without decoding them into copies.
    let shapes: Vec<Option<(Vec<usize>, &[u8])>> = slots
        .iter()
        .map(|&(bytes, dtype)| {
            (dtype == DType::F64)
                .then(|| kernel::raw_f64(bytes))
                .transpose()
                .map_err(|e| format!("could not decode an input chunk of {dtype}: {e}"))
        })
        .collect::<Result<_, String>>()?;
    let raw: Vec<Option<Raw<'_>>> = shapes
        .iter()
        .map(|s| s.as_ref().map(|(shape, bytes)| Raw { shape, bytes }))
        .collect();
    let outcome = match Plan::compile(&program, &raw) {
        Some(plan) => plan.run(&raw),
        None => {
            let blocks = slots
                .iter()
                .map(|&(bytes, dtype)| {
                    Block::decode(bytes, dtype)
                        .map_err(|e| format!("could not decode an input chunk of {dtype}: {e}"))
                })
                .collect::<Result<Vec<Block>, String>>()?;
            kernel::run(&program, &blocks)?
        }
    };
    let encoded = match outcome {
        Outcome::Chunk(block) => block.encode(),
        Outcome::Encoded(bytes) => Ok(bytes),
        Outcome::Partial(partial) => encode_value(&*partial).map(Bytes::from),
    };
    Ok(encoded.map_err(|e| format!("could not encode a chunk: {e}"))?)
}

/// Merges reduction states in order, finishing the reduction at the last stage.
pub(super) fn combine_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, _) = split_head(input)?;
    let spec: CombineSpec = decode_head(head)?;
    let mut state: Option<Partial> = None;
    for bytes in input.deps {
        let part: Partial =
            decode_value(bytes).map_err(|e| format!("could not decode a reduction state: {e}"))?;
        state = Some(match state {
            None => part,
            Some(before) => before.merge(part, spec.op)?,
        });
    }
    let state = state.ok_or("a combine task without states")?;
    let encoded = match spec.finish {
        None => encode_value(&state).map(Bytes::from),
        Some((dtype, squeeze)) => state.finish(spec.op, dtype).squeeze(&squeeze).encode(),
    };
    Ok(encoded.map_err(|e| format!("could not encode a reduction result: {e}"))?)
}

/// Copies pieces of source chunks into a new chunk.
pub(super) fn assemble_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, _) = split_head(input)?;
    let spec: AssembleSpec = decode_head(head)?;
    let mut out = Block::full(Scalar::Bool(false), &spec.shape).cast(spec.dtype);
    for ((region, dest), bytes) in spec.pieces.iter().zip(input.deps) {
        let source = Block::decode(bytes, spec.dtype)
            .map_err(|e| format!("could not decode a chunk: {e}"))?;
        let slices = AxisSlice::of_region(region);
        let piece = source.slice(&slices);
        kernel::write_region(&mut out, dest, &piece);
    }
    Ok(out
        .encode()
        .map_err(|e| format!("could not encode a chunk: {e}"))?)
}

/// One chunk of a matrix product.
pub(super) fn dot_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, _) = split_head(input)?;
    let spec: DotSpec = decode_head(head)?;
    if input.deps.len() != 2 * spec.terms {
        return Err("a dot task needs pairs of blocks".into());
    }
    let mut total: Option<Block> = None;
    for pair in input.deps.chunks(2) {
        let flip = |block: Block, transposed: bool| {
            if transposed {
                block.into_permuted(&[1, 0])
            } else {
                block
            }
        };
        let a = flip(
            Block::decode(&pair[0], spec.a).map_err(|e| e.to_string())?,
            spec.a_transposed,
        );
        let b = flip(
            Block::decode(&pair[1], spec.b).map_err(|e| e.to_string())?,
            spec.b_transposed,
        );
        total = Some(match total {
            None => kernel::matmul(&a, &b, spec.dtype)?,
            Some(mut sum) => {
                // Floats accumulate in place (`sum += a . b` in one pass of the product).
                if !kernel::matmul_add(&mut sum, &a, &b)? {
                    let product = kernel::matmul(&a, &b, spec.dtype)?;
                    sum = Block::binary(BinaryOp::Add, &sum, &product)?.cast(spec.dtype);
                }
                sum
            }
        });
    }
    Ok(total
        .ok_or("a dot task without blocks")?
        .encode()
        .map_err(|e| e.to_string())?)
}
