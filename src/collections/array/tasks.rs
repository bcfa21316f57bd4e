//! The worker side of array tasks: running a fused program, combining reduction states,
//! assembling a rechunked chunk, one chunk of a matrix product. Each task's first argument
//! describes it (a [`Program`] or a spec below); the chunks it reads are its dependencies.

use super::Scalar;
use super::dtype::{DType, Element};
use super::fused::{Plan, Raw};
use super::kernel::{self, Block, Outcome, Partial};
use super::program::{AxisSlice, BinaryOp, Program, ReduceOp};
use crate::protocol::Bytes;
use crate::protocol::Payload;
use crate::protocol::{ArgSlot, decode_value, encode_value, recycle_owned};
use crate::task::{CallError, TaskFn, TaskInput, decode_args, describe_decode_error};
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2};
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

/// A `map_blocks` function's typed entry point: it decodes the task's chunks, calls the
/// function and returns its block as it is, for a program to read in place (the function
/// runs inside the program task that consumes its block, as Dask fuses `map_blocks` into
/// what follows it).
pub(crate) type BlockFn = fn(&TaskInput<'_>) -> Result<Block, CallError>;

crate::task::fn_pointer!(BlockFn);

/// The [`BlockFn`] of `F`, a function of `Args` returning an array of `U`.
pub(crate) fn block_fn_of<F, Args, U>() -> BlockFn
where
    F: TaskFn<Args, Output = ArrayD<U>>,
    Args: serde::de::DeserializeOwned + 'static,
    U: Element,
{
    block_fn::<F, Args, U>
}

fn block_fn<F, Args, U>(input: &TaskInput<'_>) -> Result<Block, CallError>
where
    F: TaskFn<Args, Output = ArrayD<U>>,
    Args: serde::de::DeserializeOwned + 'static,
    U: Element,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    Ok(super::block_of(crate::task::conjure::<F>().call(args)))
}

/// A program input computed inside the program task by a `map_blocks` function: the
/// input's position, and how many argument slots (after those of the inputs before it) hold
/// the function's chunks. The `k`-th mapped input calls the task's `k`-th used function.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Mapped {
    pub(super) input: usize,
    pub(super) slots: usize,
}

/// What a program task's first argument holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct ProgramSpec {
    pub(super) program: Program,
    /// The inputs computed by `map_blocks` functions, by input position.
    pub(super) mapped: Vec<Mapped>,
}

/// One input chunk of a program task: a value's encoding, or a block a function made.
enum Chunk<'a> {
    Encoded(&'a [u8]),
    Made(Block),
}

/// Calls the `k`-th used function on `slots` (with their dependency values `deps`); its
/// block must have the shape and element type the program expects of its input `which`.
fn call_mapped(
    input: &TaskInput<'_>,
    program: &Program,
    k: usize,
    which: usize,
    slots: std::ops::Range<usize>,
    deps: &[crate::protocol::Payload],
) -> Result<Block, CallError> {
    let function: BlockFn = input.used(k)?;
    let block = function(&input.part(slots, deps))?;
    let expected = program
        .nodes
        .iter()
        .find(|n| n.op == super::program::Op::Input(which))
        .map(|n| n.shape.as_slice());
    if expected.is_some_and(|shape| shape != block.shape())
        || block.dtype() != program.inputs[which]
    {
        return Err(CallError::Failed(format!(
            "a map_blocks function returned a block of {}{:?} where {}{:?} was expected: it must \
             keep the chunk's shape (map_blocks) or make the one declared (map_blocks_to), of \
             the element type it declares",
            block.dtype(),
            block.shape(),
            program.inputs[which],
            expected.unwrap_or(&[]),
        )));
    }
    Ok(block)
}

/// Runs a fused program (the worker side of a program task).
pub(super) fn program_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, rest) = split_head(input)?;
    let ProgramSpec { program, mapped } = decode_head(head)?;
    if input.uses.len() != mapped.len() {
        return Err(CallError::Corrupt(format!(
            "a program with {} mapped inputs uses {} functions",
            mapped.len(),
            input.uses.len()
        )));
    }
    let mut deps_used = 0;
    let mut slot: usize = 0;
    let mut chunks = Vec::with_capacity(program.inputs.len());
    for which in 0..program.inputs.len() {
        let k = mapped.iter().position(|m| m.input == which);
        let taken = k.map_or(1, |k| mapped[k].slots);
        let slots = slot
            .checked_add(taken)
            .and_then(|end| rest.get(slot..end))
            .ok_or("a program input is missing")?;
        let ndeps: usize = slots.iter().map(|s| s.dependencies().len()).sum();
        let deps = input
            .deps
            .get(deps_used..deps_used + ndeps)
            .ok_or("a program input is missing")?;
        chunks.push(match (k, slots) {
            (Some(k), _) => {
                // `rest` starts one slot after the task's arguments (the head).
                let range = 1 + slot..1 + slot + slots.len();
                Chunk::Made(call_mapped(input, &program, k, which, range, deps)?)
            }
            (None, [ArgSlot::Value(bytes)]) => Chunk::Encoded(bytes),
            (None, _) => Chunk::Encoded(deps.first().ok_or("a program input is missing")?),
        });
        slot += taken;
        deps_used += ndeps;
    }
    if slot != rest.len() {
        return Err(format!(
            "the program has {} inputs but the task has {} more arguments",
            program.inputs.len(),
            rest.len() - slot
        )
        .into());
    }
    // Tile loops read f64 chunks where they lie, without decoding them into copies.
    let shapes: Vec<Option<(Vec<usize>, &[u8])>> = chunks
        .iter()
        .zip(&program.inputs)
        .map(|(chunk, &dtype)| match chunk {
            Chunk::Encoded(bytes) => (dtype == DType::F64)
                .then(|| kernel::raw_f64(bytes))
                .transpose()
                .map_err(|e| format!("could not decode an input chunk of {dtype}: {e}")),
            Chunk::Made(block) => Ok(Raw::of(block).map(|raw| (raw.shape.to_vec(), raw.bytes))),
        })
        .collect::<Result<_, String>>()?;
    let raw: Vec<Option<Raw<'_>>> = shapes
        .iter()
        .map(|s| s.as_ref().map(|(shape, bytes)| Raw { shape, bytes }))
        .collect();
    let outcome = match Plan::compile(&program, &raw) {
        Some(plan) => plan.run(&raw),
        None => {
            let blocks = std::mem::take(&mut chunks)
                .into_iter()
                .zip(&program.inputs)
                .map(|(chunk, &dtype)| match chunk {
                    Chunk::Encoded(bytes) => Block::decode(bytes, dtype)
                        .map_err(|e| format!("could not decode an input chunk of {dtype}: {e}")),
                    Chunk::Made(block) => Ok(block),
                })
                .collect::<Result<Vec<Block>, String>>()?;
            kernel::run(&program, &blocks)?
        }
    };
    // A function's block gives its memory to the next chunk this thread decodes.
    for chunk in chunks {
        if let Chunk::Made(Block::F64(array)) = chunk {
            recycle_owned(array);
        }
    }
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

/// An encoded `f64` block read in place as a matrix (transposed if `transposed`); `None`
/// if its elements do not lie at an address `f64`s may be read from.
fn f64_matrix(bytes: &[u8], transposed: bool) -> Result<Option<ArrayView2<'_, f64>>, String> {
    let (shape, elements) = kernel::raw_f64(bytes).map_err(|e| e.to_string())?;
    let [rows, cols] = shape[..] else {
        return Err(format!("dot of a block of shape {shape:?}, not 2-D"));
    };
    let Ok(values) = bytemuck::try_cast_slice::<u8, f64>(elements) else {
        return Ok(None);
    };
    let matrix = ArrayView2::from_shape((rows, cols), values).map_err(|e| e.to_string())?;
    Ok(Some(if transposed {
        matrix.reversed_axes()
    } else {
        matrix
    }))
}

/// A chunk of an `f64` product computed on the blocks where they lie, into the memory of
/// its encoded result: no block is copied (`None` if one is not aligned for that).
fn dot_f64_in_place(spec: &DotSpec, deps: &[Payload]) -> Result<Option<Bytes>, String> {
    let mut pairs = Vec::with_capacity(spec.terms);
    for pair in deps.chunks(2) {
        match (
            f64_matrix(&pair[0], spec.a_transposed)?,
            f64_matrix(&pair[1], spec.b_transposed)?,
        ) {
            (Some(a), Some(b)) => pairs.push((a, b)),
            _ => return Ok(None),
        }
    }
    let Some((a, b)) = pairs.first() else {
        return Err("a dot task without blocks".into());
    };
    let (rows, cols) = (a.nrows(), b.ncols());
    for (a, b) in &pairs {
        if a.ncols() != b.nrows() || a.nrows() != rows || b.ncols() != cols {
            return Err("dot blocks of mismatched shapes".into());
        }
    }
    let len = rows * cols;
    let mut out = super::fused::encoded_f64_with_capacity(&[rows, cols], len);
    let head = out.as_slice().len();
    out.extend_zeroed(8 * len);
    {
        let values: &mut [f64] = bytemuck::try_cast_slice_mut(&mut out.as_mut_slice()[head..])
            .map_err(|e| format!("a result buffer not aligned for f64: {e}"))?;
        let mut c = ArrayViewMut2::from_shape((rows, cols), values).map_err(|e| e.to_string())?;
        super::blas::one_thread();
        for (i, (a, b)) in pairs.iter().enumerate() {
            let beta = if i == 0 { 0.0 } else { 1.0 };
            ndarray::linalg::general_mat_mul(1.0, a, b, beta, &mut c);
        }
    }
    Ok(Some(out))
}

/// One chunk of a matrix product.
pub(super) fn dot_task(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let (head, _) = split_head(input)?;
    let spec: DotSpec = decode_head(head)?;
    if input.deps.len() != 2 * spec.terms {
        return Err("a dot task needs pairs of blocks".into());
    }
    if [spec.a, spec.b, spec.dtype] == [DType::F64; 3]
        && let Some(bytes) = dot_f64_in_place(&spec, input.deps)?
    {
        return Ok(bytes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use std::sync::Arc;

    fn encoded(a: &Array2<f64>) -> Payload {
        Arc::new(Block::F64(a.clone().into_dyn()).encode().unwrap())
    }

    #[test]
    fn an_f64_product_is_computed_on_the_blocks_where_they_lie() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64 * 0.5);
        let b = Array2::from_shape_fn((4, 2), |(i, j)| 1.0 + (i * 2 + j) as f64);
        let c = Array2::from_shape_fn((3, 4), |(i, j)| (i + j) as f64 - 2.0);
        let spec = DotSpec {
            a: DType::F64,
            b: DType::F64,
            a_transposed: false,
            b_transposed: false,
            dtype: DType::F64,
            terms: 2,
            bytes: 0,
        };
        // a . b + c . b, the second pair's left block sent as its transpose.
        let mut transposed = spec.clone();
        transposed.a_transposed = true;
        let deps = vec![encoded(&a), encoded(&b), encoded(&c), encoded(&b)];
        let got = dot_f64_in_place(&spec, &deps)
            .unwrap()
            .expect("aligned blocks");
        let want = a.dot(&b) + c.dot(&b);
        let Block::F64(got) = Block::decode(&got, DType::F64).unwrap() else {
            unreachable!()
        };
        assert_eq!(got, want.into_dyn());
        let ct = c.t().to_owned();
        let deps = vec![
            encoded(&a.t().to_owned()),
            encoded(&b),
            encoded(&ct),
            encoded(&b),
        ];
        let got = dot_f64_in_place(&transposed, &deps)
            .unwrap()
            .expect("aligned");
        let Block::F64(got) = Block::decode(&got, DType::F64).unwrap() else {
            unreachable!()
        };
        assert_eq!(got, (a.dot(&b) + c.dot(&b)).into_dyn());
        // Mismatched shapes are an error, not a panic.
        let deps = vec![encoded(&a), encoded(&a), encoded(&a), encoded(&b)];
        assert!(dot_f64_in_place(&spec, &deps).is_err());
    }
}
