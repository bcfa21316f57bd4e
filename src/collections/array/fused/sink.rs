//! What becomes of a program's root, tile after tile: written into the chunk, or reduced
//! over every axis or over a block of neighbouring axes.

use super::super::kernel::{self, Block, Outcome, Partial};
use super::super::program::ReduceOp;
use crate::protocol::Bytes;
use ndarray::{ArrayD, IxDyn};

/// What becomes of the root's tiles.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Sink {
    /// Written into the chunk (as booleans when `bool`).
    Store { bool: bool },
    /// Reduced over every axis.
    Reduce { op: ReduceOp, bool: bool },
    /// Reduced over a block of neighbouring axes (a sum, mean, minimum, maximum, variance or
    /// standard deviation of `f64` values, or a mean of booleans): the chunk seen as
    /// `outer` x `reduced` x
    /// `inner` elements, reduced along the middle; `kept` is the chunk's shape with the
    /// reduced axes 1.
    Axes {
        op: ReduceOp,
        outer: usize,
        reduced: usize,
        inner: usize,
        kept: Vec<usize>,
        /// For arg-reductions: the chunk's offset along the reduced axis.
        first: usize,
    },
}

impl Sink {
    /// The sink reducing a chunk of `shape` over `axes` with `op`, if the tile loops can:
    /// the axes are neighbours and the values `f64` (or booleans for a mean).
    pub(super) fn axes(
        op: ReduceOp,
        axes: &[usize],
        shape: &[usize],
        offset: &[usize],
        bool: bool,
    ) -> Option<Sink> {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let (&first, &last) = (sorted.first()?, sorted.last()?);
        if last - first + 1 != sorted.len() || last >= shape.len() {
            return None;
        }
        match (op, bool) {
            (
                ReduceOp::Sum | ReduceOp::Min | ReduceOp::Max | ReduceOp::Var(_) | ReduceOp::Std(_),
                false,
            )
            | (ReduceOp::Mean, _) => {}
            // The index along one axis of several (over all axes it is a flat index).
            (ReduceOp::ArgMin | ReduceOp::ArgMax, false)
                if sorted.len() == 1 && shape.len() > 1 => {}
            _ => return None,
        }
        let kept = shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if sorted.contains(&d) { 1 } else { n })
            .collect();
        Some(Sink::Axes {
            op,
            outer: shape[..first].iter().product(),
            reduced: shape[first..=last].iter().product(),
            inner: shape[last + 1..].iter().product(),
            kept,
            first: offset.get(first).copied().unwrap_or(0),
        })
    }
}

/// Sums added pairwise in a fixed order: the sum of `2^k` tiles is made before it is added
/// to anything else (a binary counter of partial sums).
#[derive(Default)]
pub(super) struct Cascade {
    stack: Vec<f64>,
    count: u64,
}

impl Cascade {
    pub(super) fn push(&mut self, x: f64) {
        self.stack.push(x);
        self.count += 1;
        let mut c = self.count;
        while c.is_multiple_of(2) {
            let b = self.stack.pop().expect("two partial sums");
            let a = self.stack.pop().expect("two partial sums");
            self.stack.push(a + b);
            c /= 2;
        }
    }

    fn total(&self) -> f64 {
        self.stack.iter().rev().fold(0.0, |s, &x| x + s)
    }
}

/// The sink's running state.
pub(super) enum SinkState {
    /// An `f64` chunk, written in its encoded form (header, then the elements' bytes).
    Encoded(Bytes),
    /// A boolean chunk.
    Bools(Vec<bool>),
    Sum(Cascade),
    Fold {
        value: f64,
        min: bool,
    },
    /// One accumulator per kept element (`outer` x `inner`), and the flat position of the
    /// next tile's first element. For moments, `acc` sums the values less `shift` (the
    /// first value of each lane, so that the sums stay small and the variance accurate)
    /// and `squares` their squares.
    Axes {
        acc: Vec<f64>,
        next: usize,
        shift: Vec<f64>,
        squares: Vec<f64>,
        /// For arg-reductions: the index of each best value.
        best: Vec<i64>,
    },
}

impl SinkState {
    pub(super) fn new(sink: &Sink, shape: &[usize], len: usize) -> SinkState {
        match sink {
            Sink::Store { bool: true } => SinkState::Bools(Vec::with_capacity(len)),
            Sink::Store { bool: false } => {
                SinkState::Encoded(encoded_f64_with_capacity(shape, len))
            }
            Sink::Reduce {
                op: ReduceOp::Min, ..
            } => SinkState::Fold {
                value: f64::INFINITY,
                min: true,
            },
            Sink::Reduce {
                op: ReduceOp::Max, ..
            } => SinkState::Fold {
                value: f64::NEG_INFINITY,
                min: false,
            },
            Sink::Reduce { .. } => SinkState::Sum(Cascade::default()),
            Sink::Axes {
                op, outer, inner, ..
            } => SinkState::Axes {
                acc: vec![
                    match op {
                        ReduceOp::Min => f64::INFINITY,
                        ReduceOp::Max => f64::NEG_INFINITY,
                        _ => 0.0,
                    };
                    outer * inner
                ],
                next: 0,
                shift: if moments(*op) {
                    vec![0.0; outer * inner]
                } else {
                    Vec::new()
                },
                squares: if moments(*op) {
                    vec![0.0; outer * inner]
                } else {
                    Vec::new()
                },
                best: if arg(*op) {
                    vec![0; outer * inner]
                } else {
                    Vec::new()
                },
            },
        }
    }

    /// Consumes the root's next tile.
    #[inline(always)]
    pub(super) fn take(&mut self, sink: &Sink, tile: &[f64]) {
        match self {
            SinkState::Encoded(out) => out.extend_from_slice(bytemuck::cast_slice(tile)),
            SinkState::Bools(out) => out.extend(tile.iter().map(|&v| v != 0.0)),
            SinkState::Sum(_) => unreachable!("sums read their root through sum_root"),
            SinkState::Fold { value, min } => {
                let f: fn(f64, f64) -> f64 = if *min {
                    kernel::nan_min
                } else {
                    kernel::nan_max
                };
                *value = tile.iter().fold(*value, |s, &v| f(s, v));
            }
            SinkState::Axes {
                acc,
                next,
                shift,
                squares,
                best,
            } => {
                let Sink::Axes {
                    op,
                    reduced,
                    inner,
                    first,
                    ..
                } = sink
                else {
                    unreachable!("the sink state matches the sink")
                };
                if arg(*op) {
                    let min = *op == ReduceOp::ArgMin;
                    take_arg(min, (*reduced, *inner, *first), acc, best, *next, tile);
                } else if moments(*op) {
                    take_moments(*reduced, *inner, acc, shift, squares, *next, tile);
                } else {
                    take_axes(*op, *reduced, *inner, acc, *next, tile);
                }
                *next += tile.len();
            }
        }
    }

    pub(super) fn finish(self, sink: &Sink, shape: &[usize]) -> Outcome {
        let ones = vec![1usize; shape.len()];
        let one = |v: f64| ArrayD::from_elem(IxDyn(&ones), v);
        match (self, sink) {
            (SinkState::Encoded(bytes), _) => Outcome::Encoded(bytes),
            (SinkState::Bools(data), _) => Outcome::Chunk(Block::Bool(
                ArrayD::from_shape_vec(IxDyn(shape), data).expect("chunk shape"),
            )),
            (SinkState::Sum(cascade), Sink::Reduce { op, bool }) => {
                let sum = cascade.total();
                Outcome::Partial(Box::new(match op {
                    ReduceOp::Mean => Partial::SumCount {
                        sum: one(sum),
                        count: one(shape.iter().product::<usize>() as f64),
                    },
                    _ if *bool => {
                        Partial::Sum(Block::I64(ArrayD::from_elem(IxDyn(&ones), sum as i64)))
                    }
                    _ => Partial::Sum(Block::F64(one(sum))),
                }))
            }
            (SinkState::Fold { value, min }, _) => Outcome::Partial(Box::new(if min {
                Partial::Min(Block::F64(one(value)))
            } else {
                Partial::Max(Block::F64(one(value)))
            })),
            (
                SinkState::Axes {
                    acc,
                    shift,
                    squares,
                    ..
                },
                Sink::Axes {
                    op, reduced, kept, ..
                },
            ) if moments(*op) => {
                let n = *reduced as f64;
                let mean = acc.iter().zip(&shift).map(|(s, k)| k + s / n).collect();
                let m2 = acc
                    .iter()
                    .zip(&squares)
                    .map(|(s, q)| (q - s * s / n).max(0.0))
                    .collect();
                let shaped = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(kept), v).expect("kept");
                Outcome::Partial(Box::new(Partial::Moments {
                    count: ArrayD::from_elem(IxDyn(kept), n),
                    mean: shaped(mean),
                    m2: shaped(m2),
                }))
            }
            (SinkState::Axes { acc, best, .. }, Sink::Axes { op, kept, .. }) if arg(*op) => {
                Outcome::Partial(Box::new(Partial::Arg {
                    value: ArrayD::from_shape_vec(IxDyn(kept), acc).expect("kept shape"),
                    index: ArrayD::from_shape_vec(IxDyn(kept), best).expect("kept shape"),
                }))
            }
            (
                SinkState::Axes { acc, .. },
                Sink::Axes {
                    op, reduced, kept, ..
                },
            ) => {
                let values = ArrayD::from_shape_vec(IxDyn(kept), acc).expect("kept shape");
                Outcome::Partial(Box::new(match op {
                    ReduceOp::Mean => Partial::SumCount {
                        sum: values,
                        count: ArrayD::from_elem(IxDyn(kept), *reduced as f64),
                    },
                    ReduceOp::Min => Partial::Min(Block::F64(values)),
                    ReduceOp::Max => Partial::Max(Block::F64(values)),
                    _ => Partial::Sum(Block::F64(values)),
                }))
            }
            _ => unreachable!("the sink state matches the sink"),
        }
    }
}

/// Adds a tile (flat elements `first ..` of the chunk seen as `outer` x `reduced` x
/// `inner`) into the accumulators, run by run: along the inner axis a run is added into
/// as many accumulators, element by element; with no inner axis a run of reduced
/// elements is summed first (eight accumulators, as the interpreter sums a row).
#[inline(always)]
fn take_axes(
    op: ReduceOp,
    reduced: usize,
    inner: usize,
    acc: &mut [f64],
    first: usize,
    tile: &[f64],
) {
    let fold: fn(f64, f64) -> f64 = match op {
        ReduceOp::Min => kernel::nan_min,
        ReduceOp::Max => kernel::nan_max,
        _ => |s, v| s + v,
    };
    let summed = matches!(op, ReduceOp::Sum | ReduceOp::Mean);
    let mut e = first;
    let mut rest = tile;
    while !rest.is_empty() {
        if inner == 1 {
            let (o, r) = (e / reduced, e % reduced);
            let run = (reduced - r).min(rest.len());
            let (part, tail) = rest.split_at(run);
            acc[o] = if summed {
                acc[o] + kernel::lane_sum(part)
            } else {
                part.iter().fold(acc[o], |s, &v| fold(s, v))
            };
            rest = tail;
            e += run;
        } else {
            let (o, i) = (e / (reduced * inner), e % inner);
            let run = (inner - i).min(rest.len());
            let (part, tail) = rest.split_at(run);
            let target = &mut acc[o * inner + i..o * inner + i + run];
            if summed {
                for (a, &v) in target.iter_mut().zip(part) {
                    *a += v;
                }
            } else {
                for (a, &v) in target.iter_mut().zip(part) {
                    *a = fold(*a, v);
                }
            }
            rest = tail;
            e += run;
        }
    }
}

/// The encoded form of an `f64` chunk of `shape` up to its elements, with room for `len`
/// of them.
pub(in crate::collections::array) fn encoded_f64_with_capacity(
    shape: &[usize],
    len: usize,
) -> Bytes {
    let head = kernel::raw_header(shape, len);
    // The elements start on a cache line, where the tile loops of the next program read
    // them in place.
    let mut bytes = Bytes::aligned_after(head.len(), head.len() + 8 * len);
    bytes.extend_from_slice(&head);
    bytes
}

fn moments(op: ReduceOp) -> bool {
    matches!(op, ReduceOp::Var(_) | ReduceOp::Std(_))
}

/// [`take_axes`] for variances: each lane's first value becomes its shift, then the
/// shifted values and their squares are summed.
#[inline(always)]
fn take_moments(
    reduced: usize,
    inner: usize,
    acc: &mut [f64],
    shift: &mut [f64],
    squares: &mut [f64],
    first: usize,
    tile: &[f64],
) {
    let mut e = first;
    let mut rest = tile;
    while !rest.is_empty() {
        if inner == 1 {
            let (o, r) = (e / reduced, e % reduced);
            let run = (reduced - r).min(rest.len());
            let (part, tail) = rest.split_at(run);
            if r == 0 {
                shift[o] = part[0];
            }
            let k = shift[o];
            let (mut s, mut q) = ([0.0f64; 8], [0.0f64; 8]);
            let mut groups = part.chunks_exact(8);
            for g in &mut groups {
                for j in 0..8 {
                    let d = g[j] - k;
                    s[j] += d;
                    q[j] += d * d;
                }
            }
            for &v in groups.remainder() {
                let d = v - k;
                s[0] += d;
                q[0] += d * d;
            }
            acc[o] += s.iter().sum::<f64>();
            squares[o] += q.iter().sum::<f64>();
            rest = tail;
            e += run;
        } else {
            let (o, r, i) = (e / (reduced * inner), (e / inner) % reduced, e % inner);
            let run = (inner - i).min(rest.len());
            let (part, tail) = rest.split_at(run);
            let at = o * inner + i..o * inner + i + run;
            if r == 0 {
                shift[at.clone()].copy_from_slice(part);
            }
            for (((a, q), &k), &v) in acc[at.clone()]
                .iter_mut()
                .zip(&mut squares[at.clone()])
                .zip(&shift[at])
                .zip(part)
            {
                let d = v - k;
                *a += d;
                *q += d * d;
            }
            rest = tail;
            e += run;
        }
    }
}

fn arg(op: ReduceOp) -> bool {
    matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax)
}

/// [`take_axes`] for arg-reductions along one axis: each lane's best value and its index
/// along the axis (`first_index` is the chunk's offset along it).
#[inline(always)]
fn take_arg(
    min: bool,
    (reduced, inner, first_index): (usize, usize, usize),
    acc: &mut [f64],
    best: &mut [i64],
    first: usize,
    tile: &[f64],
) {
    // The interpreter's rule: a NaN wins and stays, ties keep the first.
    let better = kernel::arg_better;
    let mut e = first;
    let mut rest = tile;
    while !rest.is_empty() {
        if inner == 1 {
            let (o, r) = (e / reduced, e % reduced);
            let run = (reduced - r).min(rest.len());
            let (part, tail) = rest.split_at(run);
            if part.iter().any(|v| v.is_nan()) {
                for (k, &v) in part.iter().enumerate() {
                    if r + k == 0 || better(min, v, acc[o]) {
                        acc[o] = v;
                        best[o] = (first_index + r + k) as i64;
                    }
                }
            } else {
                // No NaN: the run's best value (a vector fold), then its first position.
                let m = if min {
                    part.iter()
                        .fold(f64::INFINITY, |a, &v| if v < a { v } else { a })
                } else {
                    part.iter()
                        .fold(f64::NEG_INFINITY, |a, &v| if v > a { v } else { a })
                };
                let k = part.iter().position(|&v| v == m).unwrap_or(0);
                if r == 0 || better(min, m, acc[o]) {
                    acc[o] = m;
                    best[o] = (first_index + r + k) as i64;
                }
            }
            rest = tail;
            e += run;
        } else {
            let (o, r, i) = (e / (reduced * inner), (e / inner) % reduced, e % inner);
            let run = (inner - i).min(rest.len());
            let (part, tail) = rest.split_at(run);
            let at = o * inner + i..o * inner + i + run;
            let index = (first_index + r) as i64;
            for ((a, b), &v) in acc[at.clone()].iter_mut().zip(&mut best[at]).zip(part) {
                if r == 0 || better(min, v, *a) {
                    *a = v;
                    *b = index;
                }
            }
            rest = tail;
            e += run;
        }
    }
}
