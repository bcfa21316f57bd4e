//! Fused programs compiled to tile loops: each operation of a chunk's program runs over a
//! small tile of elements that stays in the L1 cache, tile after tile, with no allocation,
//! and the reduction consumes each tile as it is made.
//!
//! A [`Plan`] is made from a [`Program`] when every operation that streams is one the tile
//! machine knows (elementwise arithmetic, comparisons, `where`, casts between float and
//! bool, random and `arange` sources, sums, means, minima and maxima along the last axis)
//! over `f64` and `bool` values, the other operands are single values, and the output is
//! the chunk or a reduction over all of its axes. Anything else runs in the interpreter
//! ([`super::kernel::run`] falls back by itself).
//!
//! Booleans are `0.0` and `1.0` inside a tile. Every operation gives the same bits as the
//! interpreter; only the order in which a sum adds up its tiles differs (32 lanes per
//! tile, then tiles pairwise), and that order is fixed: a chunk gives the same result on
//! any machine and at any rank count. The loops are compiled three times, for AVX-512,
//! AVX2 and plain x86-64 (or the target's baseline), and the best one the CPU has is used.

use super::dtype::DType;
use super::kernel::{Block, Float, Outcome};
use super::program::{BinaryOp, Distribution, Op, Output, Program, ReduceOp, UnaryOp};
use super::random::{self, Stream};
use sink::{Sink, SinkState};
use std::mem::MaybeUninit;
use views::View;

mod sink;
pub(super) use sink::encoded_f64_with_capacity;
mod views;

/// Elements of one tile register: 8 KiB of `f64`, so a program's live tiles stay in L1.
pub const TILE: usize = 1024;

/// Where an operation reads one operand.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arg {
    /// A tile register.
    Reg(usize),
    /// Input chunk `index`, whose rows have `per_unit` elements per tiling unit.
    Input { index: usize, per_unit: usize },
    /// The same value everywhere.
    Const(f64),
}

/// Reductions along the last axis inside a program.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowOp {
    Sum,
    Mean,
    Min,
    Max,
    /// Sums and means of squares, of rows of two (the seed's `(xy ** 2).sum(-1)`).
    SumSquares,
    MeanSquares,
}

/// The root of a program reduced by a sum or mean: either a value in a tile, or an
/// operation the sum applies as it reads its operands (never written to a tile).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    Value(Arg),
    Binary(BinaryOp, Arg, Arg),
    Square(Arg),
    /// The square of an arithmetic operation (`((a - b) ** 2).sum()`).
    SquareOf(BinaryOp, Arg, Arg),
}

/// One operation over a tile. `per_unit` is the number of the destination's elements per
/// tiling unit (a row, or an element when the program tiles flat).
#[derive(Debug, Clone, PartialEq)]
enum Instr {
    Uniform {
        dst: usize,
        per_unit: usize,
        stream: usize,
        low: f64,
        scale: f64,
    },
    Normal {
        dst: usize,
        per_unit: usize,
        stream: usize,
        mean: f64,
        std: f64,
    },
    Arange {
        dst: usize,
        start: f64,
        step: f64,
        first: u64,
    },
    Unary {
        op: UnaryOp,
        a: Arg,
        dst: usize,
        per_unit: usize,
    },
    Binary {
        op: BinaryOp,
        a: Arg,
        b: Arg,
        dst: usize,
        per_unit: usize,
    },
    Where {
        c: Arg,
        a: Arg,
        b: Arg,
        dst: usize,
        per_unit: usize,
    },
    ToBool {
        a: Arg,
        dst: usize,
        per_unit: usize,
    },
    Row {
        op: RowOp,
        width: usize,
        a: Arg,
        dst: usize,
        per_unit: usize,
    },
    /// An input read through a view (flat tiling only).
    Gather {
        view: View,
        dst: usize,
    },
}

/// An `f64` input chunk as the tile loops read it: its shape and its elements as
/// little-endian bytes, at any alignment (a received value is read where it lies, never
/// decoded into a copy).
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// Shape of the chunk.
    pub shape: &'a [usize],
    /// The elements' bytes.
    pub bytes: &'a [u8],
}

impl<'a> Raw<'a> {
    /// The view of an `f64` block in standard layout.
    pub fn of(block: &'a Block) -> Option<Raw<'a>> {
        match block {
            Block::F64(a) => Some(Raw {
                shape: a.shape(),
                bytes: bytemuck::cast_slice(a.as_slice()?),
            }),
            _ => None,
        }
    }
}

/// A program compiled to tile loops.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Elements per unit of each input (0 for inputs no streaming node reads).
    input_per_unit: Vec<usize>,
    /// Inputs read through a view (as a whole, not tile by tile).
    viewed: Vec<bool>,
    instrs: Vec<Instr>,
    registers: usize,
    /// The root's value, and its elements per unit.
    root: Root,
    root_per_unit: usize,
    /// Tiling units (rows, or elements when flat) of the chunk, and per tile.
    units: usize,
    units_per_tile: usize,
    /// Generator keys of the random sources, one stream each.
    streams: Vec<u64>,
    sink: Sink,
    root_shape: Vec<usize>,
}

/// The value of a single-valued node, if it is one.
fn constant(op: &Op) -> Option<f64> {
    match op {
        Op::Scalar(v) | Op::Fill(v) => Some(v.as_f64()),
        _ => None,
    }
}

fn float_or_bool(dtype: DType) -> bool {
    matches!(dtype, DType::F64 | DType::Bool)
}

impl Plan {
    /// The tile plan of `program` over `inputs` (`None` for an input that is not `f64`),
    /// or `None` when the program needs the interpreter.
    pub fn compile(program: &Program, inputs: &[Option<Raw<'_>>]) -> Option<Plan> {
        if program.streams()
            && let Some(plan) = Self::compile_with(program, inputs, &[])
        {
            return Some(plan);
        }
        // Broadcast, transposed and sliced inputs read through views, flat.
        let (flat, views) = views::normalize(program)?;
        if views.iter().all(Option::is_none) && program.streams() {
            return None;
        }
        Self::compile_with(&flat, inputs, &views)
    }

    /// [`Plan::compile`] with the nodes that read an input through a view (`views[i]`,
    /// none when `views` is empty).
    fn compile_with(
        program: &Program,
        inputs: &[Option<Raw<'_>>],
        views: &[Option<View>],
    ) -> Option<Plan> {
        if !program.streams() {
            return None;
        }
        let root = program.root();
        let rows = root.shape[0];
        let row_len = |shape: &[usize]| shape.iter().skip(1).product::<usize>();
        // Flat tiling when every streaming node has the root's shape, else by rows.
        let streaming: Vec<usize> = (0..program.nodes.len())
            .filter(|&i| program.nodes[i].streams)
            .collect();
        if streaming.iter().any(|&i| {
            let node = &program.nodes[i];
            node.shape.first() != Some(&rows) || !float_or_bool(node.dtype)
        }) {
            return None;
        }
        let flat = streaming
            .iter()
            .all(|&i| program.nodes[i].shape == root.shape);
        let widest = streaming
            .iter()
            .map(|&i| row_len(&program.nodes[i].shape))
            .max()
            .unwrap_or(1);
        if widest == 0 {
            return None;
        }
        let (units, units_per_tile) = if flat {
            (rows * widest, TILE)
        } else {
            if widest > TILE {
                return None;
            }
            let per_tile = TILE / widest;
            (
                rows,
                if per_tile >= 8 {
                    per_tile - per_tile % 8
                } else {
                    per_tile
                },
            )
        };
        let per_unit = |i: usize| {
            if flat {
                1
            } else {
                row_len(&program.nodes[i].shape)
            }
        };

        // Registers are given back after a node's last use.
        let mut last_use = vec![0usize; program.nodes.len()];
        for (i, node) in program.nodes.iter().enumerate() {
            for a in node.op.operands() {
                last_use[a] = i;
            }
        }
        last_use[program.nodes.len() - 1] = usize::MAX;
        let root_index = program.nodes.len() - 1;
        let is_bool = root.dtype == DType::Bool;
        let sink = match &program.output {
            Output::Store => Sink::Store { bool: is_bool },
            Output::Partial {
                op, axes, offset, ..
            } => {
                let all: Vec<usize> = (0..root.shape.len()).collect();
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                match (op, is_bool) {
                    (ReduceOp::Sum | ReduceOp::Mean, _)
                    | (ReduceOp::Min | ReduceOp::Max, false)
                        if sorted == all =>
                    {
                        Sink::Reduce {
                            op: *op,
                            bool: is_bool,
                        }
                    }
                    // Some axes (or moments over all of them): flat tiles only.
                    _ if flat => Sink::axes(*op, axes, &root.shape, offset, is_bool)?,
                    _ => return None,
                }
            }
        };
        let summed = matches!(
            sink,
            Sink::Reduce {
                op: ReduceOp::Sum | ReduceOp::Mean,
                ..
            }
        );
        // `x ** 2` read only by a sum or mean along a last axis of two is not written to a
        // tile: the reduction squares as it reads `x`.
        let mut users = vec![0usize; program.nodes.len()];
        let mut user = vec![usize::MAX; program.nodes.len()];
        for (i, node) in program.nodes.iter().enumerate() {
            for a in node.op.operands() {
                users[a] += 1;
                user[a] = i;
            }
        }
        let mut square_of: Vec<Option<usize>> = vec![None; program.nodes.len()];
        for (i, node) in program.nodes.iter().enumerate() {
            if let Op::Unary(UnaryOp::Powi(2), x) = node.op
                && !flat
                && node.streams
                && node.dtype == DType::F64
                && users[i] == 1
                && program.nodes[x].streams
                && program.nodes[x].dtype == DType::F64
                && program.nodes[x].shape == node.shape
                && let Op::Reduce { op, axes, .. } = &program.nodes[user[i]].op
                && matches!(op, ReduceOp::Sum | ReduceOp::Mean)
                && node.shape.len() >= 2
                && axes.as_slice() == [node.shape.len() - 1]
                && node.shape.last() == Some(&2)
            {
                square_of[i] = Some(x);
                last_use[x] = last_use[x].max(user[i]);
            }
        }
        // `(a op b) ** 2` at the root of a sum, `a op b` read by nothing else: the sum
        // computes it as it reads `a` and `b`, which stay alive to the end.
        let square_of_binary = match program.nodes[root_index].op {
            Op::Unary(UnaryOp::Powi(2), b)
                if summed
                    && root.streams
                    && users[b] == 1
                    && program.nodes[b].streams
                    && program.nodes[b].dtype == DType::F64
                    && program.nodes[b].shape == root.shape
                    && matches!(
                        program.nodes[b].op,
                        Op::Binary(
                            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div,
                            ..
                        )
                    ) =>
            {
                for a in program.nodes[b].op.operands() {
                    last_use[a] = last_use[a].max(root_index);
                }
                Some(b)
            }
            _ => None,
        };
        let mut pending_square: Option<Root> = None;
        let mut fused_root: Option<Root> = None;
        let mut input_per_unit = vec![0usize; inputs.len()];
        let mut viewed = vec![false; inputs.len()];
        let mut free: Vec<usize> = Vec::new();
        let mut registers = 0;
        let mut allocate = |free: &mut Vec<usize>| {
            free.pop().unwrap_or_else(|| {
                registers += 1;
                registers - 1
            })
        };

        let mut args: Vec<Option<Arg>> = vec![None; program.nodes.len()];
        let mut instrs = Vec::new();
        let mut streams = Vec::new();
        for (i, node) in program.nodes.iter().enumerate() {
            if !node.streams {
                // Only single values may be read by the streaming part.
                args[i] = constant(&node.op).map(Arg::Const);
                continue;
            }
            if square_of[i].is_some() {
                continue;
            }
            if let Some(Some(view)) = views.get(i) {
                let raw = (*inputs.get(view.input)?)?;
                let len = raw
                    .shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))?;
                if !flat || raw.bytes.len() != len * 8 || !view.fits(&node.shape, len) {
                    return None;
                }
                viewed[view.input] = true;
                let dst = allocate(&mut free);
                instrs.push(Instr::Gather {
                    view: view.clone(),
                    dst,
                });
                args[i] = Some(Arg::Reg(dst));
                continue;
            }
            let unit = per_unit(i);
            let arg = |k: usize, args: &[Option<Arg>]| -> Option<Arg> {
                let a = args[k]?;
                match a {
                    Arg::Const(_) => Some(a),
                    _ if program.nodes[k].shape == node.shape => Some(a),
                    _ => None,
                }
            };
            let value = match &node.op {
                Op::Input(index) => {
                    let raw = (*inputs.get(*index)?)?;
                    if raw.shape != node.shape.as_slice()
                        || Some(raw.bytes.len())
                            != node.shape.iter().try_fold(8usize, |n, &d| n.checked_mul(d))
                        || input_per_unit[*index] != 0 && input_per_unit[*index] != unit
                    {
                        return None;
                    }
                    input_per_unit[*index] = unit;
                    Arg::Input {
                        index: *index,
                        per_unit: unit,
                    }
                }
                Op::Fill(v) => Arg::Const(v.as_f64()),
                Op::Random { dist, key } => {
                    streams.push(*key);
                    let dst = allocate(&mut free);
                    instrs.push(match *dist {
                        Distribution::Uniform { low, high } => Instr::Uniform {
                            dst,
                            per_unit: unit,
                            stream: streams.len() - 1,
                            low,
                            scale: high - low,
                        },
                        Distribution::Normal { mean, std } => Instr::Normal {
                            dst,
                            per_unit: unit,
                            stream: streams.len() - 1,
                            mean,
                            std,
                        },
                    });
                    Arg::Reg(dst)
                }
                Op::Arange { start, step, first } if node.shape.len() == 1 => {
                    let dst = allocate(&mut free);
                    instrs.push(Instr::Arange {
                        dst,
                        start: *start,
                        step: *step,
                        first: *first,
                    });
                    Arg::Reg(dst)
                }
                Op::Unary(op, k) => {
                    let a = arg(*k, &args)?;
                    let expected = if matches!(op, UnaryOp::Not) || op.is_predicate() {
                        DType::Bool
                    } else {
                        DType::F64
                    };
                    if node.dtype != expected || !float_or_bool(program.nodes[*k].dtype) {
                        return None;
                    }
                    if i == root_index && square_of_binary == Some(*k) {
                        fused_root = pending_square.take();
                        args[i] = Some(Arg::Const(f64::NAN));
                        continue;
                    }
                    if i == root_index
                        && summed
                        && *op == UnaryOp::Powi(2)
                        && !matches!(a, Arg::Const(_))
                    {
                        fused_root = Some(Root::Square(a));
                        args[i] = Some(Arg::Const(f64::NAN));
                        continue;
                    }
                    let dst = allocate(&mut free);
                    instrs.push(Instr::Unary {
                        op: *op,
                        a,
                        dst,
                        per_unit: unit,
                    });
                    Arg::Reg(dst)
                }
                Op::Binary(op, a, b) => {
                    let (x, y) = (arg(*a, &args)?, arg(*b, &args)?);
                    // `x - c` as `x + (-c)`: the same value in IEEE arithmetic, and an
                    // addition takes its operand straight from memory, which streams
                    // measurably faster here (16 against 12 GB/s on one core for
                    // `((x - 0.5)**2).sum()`).
                    let (op, y) = match (op, y) {
                        (BinaryOp::Sub, Arg::Const(c)) => (&BinaryOp::Add, Arg::Const(-c)),
                        _ => (op, y),
                    };
                    let bools = [*a, *b].map(|k| program.nodes[k].dtype == DType::Bool);
                    let ok = match op {
                        BinaryOp::And | BinaryOp::Or => bools == [true, true],
                        _ if op.is_comparison() => true,
                        _ => node.dtype == DType::F64,
                    };
                    if !ok
                        || [*a, *b]
                            .iter()
                            .any(|&k| !float_or_bool(program.nodes[k].dtype))
                    {
                        return None;
                    }
                    if square_of_binary == Some(i)
                        && !(matches!(x, Arg::Const(_)) && matches!(y, Arg::Const(_)))
                    {
                        pending_square = Some(Root::SquareOf(*op, x, y));
                        args[i] = Some(Arg::Const(f64::NAN));
                        continue;
                    }
                    if i == root_index
                        && summed
                        && !(matches!(x, Arg::Const(_)) && matches!(y, Arg::Const(_)))
                    {
                        fused_root = Some(Root::Binary(*op, x, y));
                        args[i] = Some(Arg::Const(f64::NAN));
                        continue;
                    }
                    let dst = allocate(&mut free);
                    instrs.push(Instr::Binary {
                        op: *op,
                        a: x,
                        b: y,
                        dst,
                        per_unit: unit,
                    });
                    Arg::Reg(dst)
                }
                Op::Where(c, a, b) => {
                    let (cc, x, y) = (arg(*c, &args)?, arg(*a, &args)?, arg(*b, &args)?);
                    if [*c, *a, *b]
                        .iter()
                        .any(|&k| !float_or_bool(program.nodes[k].dtype))
                    {
                        return None;
                    }
                    let dst = allocate(&mut free);
                    instrs.push(Instr::Where {
                        c: cc,
                        a: x,
                        b: y,
                        dst,
                        per_unit: unit,
                    });
                    Arg::Reg(dst)
                }
                Op::Cast(dtype, a) => {
                    let x = arg(*a, &args)?;
                    match (program.nodes[*a].dtype, dtype) {
                        (DType::F64, DType::Bool) => {
                            let dst = allocate(&mut free);
                            instrs.push(Instr::ToBool {
                                a: x,
                                dst,
                                per_unit: unit,
                            });
                            Arg::Reg(dst)
                        }
                        (DType::Bool | DType::F64, DType::F64) | (DType::Bool, DType::Bool) => {
                            // The same tile, read again: keep the operand's register alive
                            // as long as this node's.
                            last_use[*a] = last_use[*a].max(last_use[i]);
                            x
                        }
                        _ => return None,
                    }
                }
                Op::Reduce {
                    op,
                    axes,
                    keepdims: _,
                    arg: a,
                } => {
                    let operand = &program.nodes[*a];
                    let last = operand.shape.len().checked_sub(1)?;
                    if flat || axes.as_slice() != [last] || last == 0 || !operand.streams {
                        return None;
                    }
                    let squared = square_of[*a];
                    let row = match (op, operand.dtype, squared.is_some()) {
                        (ReduceOp::Sum, DType::F64, true) => RowOp::SumSquares,
                        (ReduceOp::Mean, DType::F64, true) => RowOp::MeanSquares,
                        (ReduceOp::Sum, DType::F64, false) => RowOp::Sum,
                        (ReduceOp::Mean, DType::F64 | DType::Bool, false) => RowOp::Mean,
                        (ReduceOp::Min, DType::F64, false) => RowOp::Min,
                        (ReduceOp::Max, DType::F64, false) => RowOp::Max,
                        _ => return None,
                    };
                    let width = operand.shape[last];
                    if width == 0 && matches!(row, RowOp::Min | RowOp::Max) {
                        return None;
                    }
                    let x = args[squared.unwrap_or(*a)]?;
                    let dst = allocate(&mut free);
                    instrs.push(Instr::Row {
                        op: row,
                        width,
                        a: x,
                        dst,
                        per_unit: unit,
                    });
                    Arg::Reg(dst)
                }
                _ => return None,
            };
            args[i] = Some(value);
            // Operands read for the last time give their registers back.
            let read: Vec<usize> = node
                .op
                .operands()
                .into_iter()
                .flat_map(|a| [Some(a), square_of[a]])
                .flatten()
                .collect();
            for a in read {
                if last_use[a] == i
                    && let Some(Arg::Reg(r)) = args[a]
                    && !free.contains(&r)
                    && Some(Arg::Reg(r)) != args[i]
                {
                    free.push(r);
                }
            }
        }
        let root_value = match fused_root {
            Some(fused) => fused,
            None => match args[root_index]? {
                Arg::Const(_) => return None,
                value => Root::Value(value),
            },
        };
        Some(Plan {
            input_per_unit,
            viewed,
            instrs,
            registers,
            root: root_value,
            root_per_unit: per_unit(root_index),
            units,
            units_per_tile,
            streams,
            sink,
            root_shape: root.shape.clone(),
        })
    }

    /// Runs the plan over the chunk's inputs (those it was compiled with).
    pub fn run(&self, inputs: &[Option<Raw<'_>>]) -> Outcome {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
                // SAFETY: the CPU has these features (checked just above).
                return unsafe { self.run_avx512(inputs) };
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: the CPU has these features (checked just above).
                return unsafe { self.run_avx2(inputs) };
            }
        }
        self.run_tiles::<false>(inputs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
    unsafe fn run_avx512(&self, inputs: &[Option<Raw<'_>>]) -> Outcome {
        self.run_tiles::<true>(inputs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, inputs: &[Option<Raw<'_>>]) -> Outcome {
        self.run_tiles::<false>(inputs)
    }

    /// The tile loop; `AVX512` when compiled for (and running on) AVX-512, where the sums
    /// use explicit vector code (the same additions in the same order).
    #[inline(always)]
    fn run_tiles<const AVX512: bool>(&self, inputs: &[Option<Raw<'_>>]) -> Outcome {
        let mut registers = vec![0.0f64; self.registers.max(1) * TILE];
        // Inputs whose bytes are not aligned for f64 are copied a tile at a time.
        let mut staging: Vec<Vec<f64>> = vec![Vec::new(); inputs.len()];
        let mut streams: Vec<Stream> = self.streams.iter().map(|&k| Stream::new(k)).collect();
        let root_len = self.units * self.root_per_unit;
        let mut sink = SinkState::new(&self.sink, &self.root_shape, root_len);
        // Inputs read through views, whole (copied once if their bytes are not aligned).
        let copies: Vec<Option<Vec<f64>>> = inputs
            .iter()
            .zip(&self.viewed)
            .map(|(raw, &viewed)| match raw {
                Some(raw) if viewed && bytemuck::try_cast_slice::<u8, f64>(raw.bytes).is_err() => {
                    Some(bytemuck::pod_collect_to_vec(raw.bytes))
                }
                _ => None,
            })
            .collect();
        let whole: Vec<&[f64]> = inputs
            .iter()
            .zip(&copies)
            .map(|(raw, copy)| match (raw, copy) {
                (_, Some(copy)) => &copy[..],
                (Some(raw), None) => bytemuck::try_cast_slice(raw.bytes).unwrap_or(&[]),
                (None, None) => &[],
            })
            .collect();
        let mut u0 = 0;
        while u0 < self.units {
            let n = self.units_per_tile.min(self.units - u0);
            let bytes_of = |i: usize| -> &[u8] {
                let per_unit = self.input_per_unit[i];
                match inputs[i] {
                    Some(raw) if per_unit > 0 => {
                        &raw.bytes[u0 * per_unit * 8..(u0 + n) * per_unit * 8]
                    }
                    _ => &[],
                }
            };
            for (i, stage) in staging.iter_mut().enumerate() {
                let bytes = bytes_of(i);
                if bytemuck::try_cast_slice::<u8, f64>(bytes).is_err() {
                    stage.resize(bytes.len() / 8, 0.0);
                    bytemuck::cast_slice_mut::<f64, u8>(stage).copy_from_slice(bytes);
                }
            }
            let views: Vec<&[f64]> = (0..inputs.len())
                .map(|i| {
                    bytemuck::try_cast_slice::<u8, f64>(bytes_of(i)).unwrap_or(&staging[i][..])
                })
                .collect();
            for instr in &self.instrs {
                self.exec(
                    instr,
                    (u0, n),
                    (&views, &whole),
                    &mut registers,
                    &mut streams,
                );
            }
            let len = n * self.root_per_unit;
            match (&mut sink, self.root) {
                (SinkState::Sum(cascade), root) => {
                    cascade.push(sum_root::<AVX512>(root, len, &views, &registers));
                }
                (sink, Root::Value(value)) => match read(value, len, &views, &registers) {
                    Src::Slice(s) => sink.take(&self.sink, s),
                    Src::Const(_) => unreachable!("a constant root is refused at compile time"),
                },
                _ => unreachable!("only sums read an operation as their root"),
            }
            u0 += n;
        }
        sink.finish(&self.sink, &self.root_shape)
    }

    /// Runs one instruction over units `u0 .. u0 + n`; `inputs` are the tile's views of
    /// the input chunks, `whole` the inputs read through views.
    #[inline(always)]
    fn exec(
        &self,
        instr: &Instr,
        (u0, n): (usize, usize),
        (inputs, whole): (&[&[f64]], &[&[f64]]),
        registers: &mut [f64],
        streams: &mut [Stream],
    ) {
        // The destination register is never one of the operands (registers are handed out
        // before the operands' are given back), so it is split off as the only mutable one.
        match *instr {
            Instr::Uniform {
                dst,
                per_unit,
                stream,
                low,
                scale,
            } => {
                let len = n * per_unit;
                let out = &mut registers[dst * TILE..dst * TILE + len];
                // SAFETY: `MaybeUninit<f64>` has the layout of `f64`; only valid f64 are
                // written.
                let slots = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
                streams[stream].fill(slots, (u0 * per_unit) as u64, low, scale);
            }
            Instr::Normal {
                dst,
                per_unit,
                stream,
                mean,
                std,
            } => {
                let len = n * per_unit;
                let out = &mut registers[dst * TILE..dst * TILE + len];
                // SAFETY: as above.
                let slots = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
                random::fill_normal_uninit(
                    &mut streams[stream],
                    slots,
                    (u0 * per_unit) as u64,
                    mean,
                    std,
                );
            }
            Instr::Arange {
                dst,
                start,
                step,
                first,
            } => {
                let out = &mut registers[dst * TILE..dst * TILE + n];
                for (k, o) in out.iter_mut().enumerate() {
                    *o = start + (first + (u0 + k) as u64) as f64 * step;
                }
            }
            Instr::Unary {
                op,
                a,
                dst,
                per_unit,
            } => {
                let len = n * per_unit;
                let (out, rest) = split(registers, dst, len);
                let a = read_split(a, len, inputs, &rest);
                unary(op, a, out);
            }
            Instr::Binary {
                op,
                a,
                b,
                dst,
                per_unit,
            } => {
                let len = n * per_unit;
                let (out, rest) = split(registers, dst, len);
                let a = read_split(a, len, inputs, &rest);
                let b = read_split(b, len, inputs, &rest);
                binary(op, a, b, out);
            }
            Instr::Where {
                c,
                a,
                b,
                dst,
                per_unit,
            } => {
                let len = n * per_unit;
                let (out, rest) = split(registers, dst, len);
                let c = read_split(c, len, inputs, &rest);
                let a = read_split(a, len, inputs, &rest);
                let b = read_split(b, len, inputs, &rest);
                select(c, a, b, out);
            }
            Instr::ToBool { a, dst, per_unit } => {
                let len = n * per_unit;
                let (out, rest) = split(registers, dst, len);
                match read_split(a, len, inputs, &rest) {
                    Src::Slice(a) => {
                        for (o, &x) in out.iter_mut().zip(a) {
                            *o = if x != 0.0 { 1.0 } else { 0.0 };
                        }
                    }
                    Src::Const(x) => out.fill(if x != 0.0 { 1.0 } else { 0.0 }),
                }
            }
            Instr::Row {
                op,
                width,
                a,
                dst,
                per_unit,
            } => {
                let len = n * per_unit;
                let (out, rest) = split(registers, dst, len);
                let Src::Slice(a) = read_split(a, len * width, inputs, &rest) else {
                    unreachable!("a reduced operand streams")
                };
                row(op, width, a, out);
            }
            Instr::Gather { ref view, dst } => {
                let out = &mut registers[dst * TILE..dst * TILE + n];
                view.gather(&self.root_shape, whole[view.input], u0, out);
            }
        }
    }
}

/// The operands' view of the registers while `dst` is written: every register but `dst`.
struct Rest<'a> {
    before: &'a [f64],
    after: &'a [f64],
    dst: usize,
}

/// Splits register `dst` (its first `len` elements) off the others.
#[inline(always)]
fn split(registers: &mut [f64], dst: usize, len: usize) -> (&mut [f64], Rest<'_>) {
    let (before, from) = registers.split_at_mut(dst * TILE);
    let (mine, after) = from.split_at_mut(TILE);
    (&mut mine[..len], Rest { before, after, dst })
}

/// An operand: a slice of `len` elements, or one value.
#[derive(Clone, Copy)]
enum Src<'a> {
    Slice(&'a [f64]),
    Const(f64),
}

/// Operand `arg` of the tile (`inputs` are the tile's views of the input chunks).
#[inline(always)]
fn read_split<'a>(arg: Arg, len: usize, inputs: &[&'a [f64]], rest: &Rest<'a>) -> Src<'a> {
    match arg {
        Arg::Reg(r) => {
            let at = if r < rest.dst {
                &rest.before[r * TILE..]
            } else {
                assert!(r != rest.dst, "an operand is never the destination");
                &rest.after[(r - rest.dst - 1) * TILE..]
            };
            Src::Slice(&at[..len])
        }
        Arg::Input { index, .. } => Src::Slice(&inputs[index][..len]),
        Arg::Const(v) => Src::Const(v),
    }
}

#[inline(always)]
fn read<'a>(arg: Arg, len: usize, inputs: &[&'a [f64]], registers: &'a [f64]) -> Src<'a> {
    match arg {
        Arg::Reg(r) => Src::Slice(&registers[r * TILE..r * TILE + len]),
        Arg::Input { index, .. } => Src::Slice(&inputs[index][..len]),
        Arg::Const(v) => Src::Const(v),
    }
}

fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// `out[k] = f(a[k], b[k])` for slices or single values.
macro_rules! zip2 {
    ($a:expr, $b:expr, $out:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Src::Slice(a), Src::Slice(b)) => {
                for ((o, &$x), &$y) in $out.iter_mut().zip(a).zip(b) {
                    *o = $body;
                }
            }
            (Src::Slice(a), Src::Const($y)) => {
                for (o, &$x) in $out.iter_mut().zip(a) {
                    *o = $body;
                }
            }
            (Src::Const($x), Src::Slice(b)) => {
                for (o, &$y) in $out.iter_mut().zip(b) {
                    *o = $body;
                }
            }
            (Src::Const($x), Src::Const($y)) => $out.fill($body),
        }
    };
}

#[inline(always)]
fn binary(op: BinaryOp, a: Src<'_>, b: Src<'_>, out: &mut [f64]) {
    match op {
        BinaryOp::Add => zip2!(a, b, out, |x, y| x + y),
        BinaryOp::Sub => zip2!(a, b, out, |x, y| x - y),
        BinaryOp::Mul => zip2!(a, b, out, |x, y| x * y),
        BinaryOp::Div => zip2!(a, b, out, |x, y| x / y),
        BinaryOp::Lt => zip2!(a, b, out, |x, y| truth(x < y)),
        BinaryOp::Le => zip2!(a, b, out, |x, y| truth(x <= y)),
        BinaryOp::Gt => zip2!(a, b, out, |x, y| truth(x > y)),
        BinaryOp::Ge => zip2!(a, b, out, |x, y| truth(x >= y)),
        BinaryOp::Eq => zip2!(a, b, out, |x, y| truth(x == y)),
        BinaryOp::Ne => zip2!(a, b, out, |x, y| truth(x != y)),
        BinaryOp::And => zip2!(a, b, out, |x, y| truth(x != 0.0 && y != 0.0)),
        BinaryOp::Or => zip2!(a, b, out, |x, y| truth(x != 0.0 || y != 0.0)),
        op => zip2!(a, b, out, |x, y| super::ufunc::binary_f64(op, x, y)),
    }
}

#[inline(always)]
fn unary(op: UnaryOp, a: Src<'_>, out: &mut [f64]) {
    let a = match a {
        Src::Slice(a) => a,
        Src::Const(x) => {
            out.fill(x.map(op));
            return;
        }
    };
    macro_rules! each {
        (|$x:ident| $body:expr) => {
            for (o, &$x) in out.iter_mut().zip(a) {
                *o = $body;
            }
        };
    }
    match op {
        UnaryOp::Neg => each!(|x| -x),
        UnaryOp::Abs => each!(|x| x.abs()),
        UnaryOp::Sqrt => each!(|x| x.sqrt()),
        UnaryOp::Powi(2) => each!(|x| x * x),
        UnaryOp::Not => each!(|x| truth(x == 0.0)),
        op => each!(|x| x.map(op)),
    }
}

#[inline(always)]
fn select(c: Src<'_>, a: Src<'_>, b: Src<'_>, out: &mut [f64]) {
    match c {
        Src::Const(c) => match if c != 0.0 { a } else { b } {
            Src::Slice(v) => out.copy_from_slice(v),
            Src::Const(v) => out.fill(v),
        },
        Src::Slice(c) => match (a, b) {
            (Src::Slice(a), Src::Slice(b)) => {
                for (((o, &c), &x), &y) in out.iter_mut().zip(c).zip(a).zip(b) {
                    *o = if c != 0.0 { x } else { y };
                }
            }
            (Src::Slice(a), Src::Const(y)) => {
                for ((o, &c), &x) in out.iter_mut().zip(c).zip(a) {
                    *o = if c != 0.0 { x } else { y };
                }
            }
            (Src::Const(x), Src::Slice(b)) => {
                for ((o, &c), &y) in out.iter_mut().zip(c).zip(b) {
                    *o = if c != 0.0 { x } else { y };
                }
            }
            (Src::Const(x), Src::Const(y)) => {
                for (o, &c) in out.iter_mut().zip(c) {
                    *o = if c != 0.0 { x } else { y };
                }
            }
        },
    }
}

/// Each row of `width` elements of `a` reduced into one element of `out`, in the
/// interpreter's order (pairs added directly, wider rows with eight accumulators).
#[inline(always)]
fn row(op: RowOp, width: usize, a: &[f64], out: &mut [f64]) {
    match op {
        RowOp::Sum | RowOp::Mean => {
            match width {
                0 => out.fill(0.0),
                1 => out.copy_from_slice(&a[..out.len()]),
                2 => {
                    let n = out.len();
                    let a = &a[..2 * n];
                    for k in 0..n {
                        out[k] = a[2 * k] + a[2 * k + 1];
                    }
                }
                _ => {
                    for (o, lane) in out.iter_mut().zip(a.chunks_exact(width)) {
                        *o = super::kernel::lane_sum(lane);
                    }
                }
            }
            if op == RowOp::Mean {
                let w = width as f64;
                for o in out.iter_mut() {
                    *o /= w;
                }
            }
        }
        RowOp::SumSquares | RowOp::MeanSquares => {
            let n = out.len();
            let a = &a[..2 * n];
            for k in 0..n {
                let (x, y) = (a[2 * k], a[2 * k + 1]);
                out[k] = x * x + y * y;
            }
            if op == RowOp::MeanSquares {
                for o in out.iter_mut() {
                    *o /= 2.0;
                }
            }
        }
        RowOp::Min | RowOp::Max => {
            let (init, f): (f64, fn(f64, f64) -> f64) = if op == RowOp::Min {
                (f64::INFINITY, super::kernel::nan_min)
            } else {
                (f64::NEG_INFINITY, super::kernel::nan_max)
            };
            for (o, lane) in out.iter_mut().zip(a.chunks_exact(width)) {
                *o = lane.iter().fold(init, |s, &v| f(s, v));
            }
        }
    }
}

/// Accumulators of a tile's sum: four AVX-512 registers' worth, so the additions overlap.
const ACCUMULATORS: usize = 32;

/// The accumulators (accumulator `8 r + j` is `acc[r][j]`) added pairwise in a fixed order.
#[inline(always)]
fn combine(acc: [[f64; 8]; 4]) -> f64 {
    let mut half = [0.0f64; 8];
    let mut other = [0.0f64; 8];
    for j in 0..8 {
        half[j] = acc[0][j] + acc[2][j];
        other[j] = acc[1][j] + acc[3][j];
    }
    let mut quarter = [0.0f64; 8];
    for j in 0..8 {
        quarter[j] = half[j] + other[j];
    }
    ((quarter[0] + quarter[4]) + (quarter[1] + quarter[5]))
        + ((quarter[2] + quarter[6]) + (quarter[3] + quarter[7]))
}

/// Sum of `f` over a tile: element `k` of each group of [`ACCUMULATORS`] into accumulator
/// `k`, the last partial group in order, added last.
#[inline(always)]
fn lanes_sum_map(a: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [[0.0f64; 8]; 4];
    let mut groups = a.chunks_exact(ACCUMULATORS);
    for g in &mut groups {
        for (r, part) in acc.iter_mut().zip(g.chunks_exact(8)) {
            for j in 0..8 {
                r[j] += f(part[j]);
            }
        }
    }
    let rest = groups.remainder().iter().fold(0.0, |s, &x| s + f(x));
    combine(acc) + rest
}

/// [`lanes_sum_map`] of `f` over two tiles, element by element.
#[inline(always)]
fn lanes_sum_map2(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [[0.0f64; 8]; 4];
    let mut ga = a.chunks_exact(ACCUMULATORS);
    let mut gb = b.chunks_exact(ACCUMULATORS);
    for (x, y) in (&mut ga).zip(&mut gb) {
        for ((r, px), py) in acc.iter_mut().zip(x.chunks_exact(8)).zip(y.chunks_exact(8)) {
            for j in 0..8 {
                r[j] += f(px[j], py[j]);
            }
        }
    }
    let rest = ga
        .remainder()
        .iter()
        .zip(gb.remainder())
        .fold(0.0, |s, (&x, &y)| s + f(x, y));
    combine(acc) + rest
}

/// `$body` with `$f` bound to the function of a binary operation.
macro_rules! with_op {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            BinaryOp::Add => {
                let $f = |x: f64, y: f64| x + y;
                $body
            }
            BinaryOp::Sub => {
                let $f = |x: f64, y: f64| x - y;
                $body
            }
            BinaryOp::Mul => {
                let $f = |x: f64, y: f64| x * y;
                $body
            }
            BinaryOp::Div => {
                let $f = |x: f64, y: f64| x / y;
                $body
            }
            BinaryOp::Lt => {
                let $f = |x: f64, y: f64| truth(x < y);
                $body
            }
            BinaryOp::Le => {
                let $f = |x: f64, y: f64| truth(x <= y);
                $body
            }
            BinaryOp::Gt => {
                let $f = |x: f64, y: f64| truth(x > y);
                $body
            }
            BinaryOp::Ge => {
                let $f = |x: f64, y: f64| truth(x >= y);
                $body
            }
            BinaryOp::Eq => {
                let $f = |x: f64, y: f64| truth(x == y);
                $body
            }
            BinaryOp::Ne => {
                let $f = |x: f64, y: f64| truth(x != y);
                $body
            }
            BinaryOp::And => {
                let $f = |x: f64, y: f64| truth(x != 0.0 && y != 0.0);
                $body
            }
            BinaryOp::Or => {
                let $f = |x: f64, y: f64| truth(x != 0.0 || y != 0.0);
                $body
            }
            op => {
                let $f = move |x: f64, y: f64| super::ufunc::binary_f64(op, x, y);
                $body
            }
        }
    };
}

/// The sum over one tile of the root (`len` elements from unit `u0`).
#[inline(always)]
fn sum_root<const AVX512: bool>(
    root: Root,
    len: usize,
    inputs: &[&[f64]],
    registers: &[f64],
) -> f64 {
    let src = |a: Arg| read(a, len, inputs, registers);
    #[cfg(target_arch = "x86_64")]
    if AVX512 && let Some(sum) = avx512::sum_root(root, src) {
        return sum;
    }
    match root {
        Root::Value(a) | Root::Square(a) => {
            let Src::Slice(a) = src(a) else {
                unreachable!("a constant root is refused at compile time")
            };
            if matches!(root, Root::Square(_)) {
                lanes_sum_map(a, |x| x * x)
            } else {
                lanes_sum_map(a, |x| x)
            }
        }
        Root::Binary(op, a, b) => with_op!(op, f => match (src(a), src(b)) {
            (Src::Slice(a), Src::Slice(b)) => lanes_sum_map2(a, b, f),
            (Src::Slice(a), Src::Const(c)) => lanes_sum_map(a, |x| f(x, c)),
            (Src::Const(c), Src::Slice(b)) => lanes_sum_map(b, |y| f(c, y)),
            (Src::Const(_), Src::Const(_)) => {
                unreachable!("two constants are not fused into a sum")
            }
        }),
        Root::SquareOf(op, a, b) => {
            with_op!(op, f => {
                let g = |x: f64, y: f64| {
                    let d = f(x, y);
                    d * d
                };
                match (src(a), src(b)) {
                    (Src::Slice(a), Src::Slice(b)) => lanes_sum_map2(a, b, g),
                    (Src::Slice(a), Src::Const(c)) => lanes_sum_map(a, |x| g(x, c)),
                    (Src::Const(c), Src::Slice(b)) => lanes_sum_map(b, |y| g(c, y)),
                    (Src::Const(_), Src::Const(_)) => {
                        unreachable!("two constants are not fused into a sum")
                    }
                }
            })
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
