//! Turning an array graph into tasks, on the client: fused per-chunk programs, reduction
//! trees, and the tasks that move data between chunks (their worker side is in
//! [`super::tasks`]).

use super::dtype::{DType, Element};
use super::grid::{self, Chunks};
use super::kernel::Block;
use super::program::{AxisSlice, Node, Op, Output, Program, ReduceOp};
use super::source::ChunkSource;
use super::structure::only_unit_axes_differ;
use super::tasks::{
    AssembleSpec, BlockFn, CombineSpec, DotSpec, Mapped, ProgramSpec, assemble_task, combine_task,
    dot_task, program_task,
};
use super::{Array, Expr, random};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::encode_value;
use crate::task::Trampoline;
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// Partial states combined by one task of a reduction tree.
pub const FAN_IN: usize = 8;

mod explain;
use explain::ExplainSink;
pub(super) use explain::{explain, summary};

/// A chunk given to a program: one computed by another task, or data from the client.
enum Input<R> {
    Chunk(R),
    Literal(Block),
    /// The block a `map_blocks` function makes of the chunks `parts` (one argument holding
    /// them all when `list`), called inside the program task.
    Mapped {
        function: BlockFn,
        name: String,
        list: bool,
        parts: Vec<R>,
    },
}

/// Where tasks go: submitted to a client, or only counted and described.
trait Sink {
    type Ref: Clone;
    /// A chunk already computed (`bytes` long).
    fn stored(&mut self, future: &Future<()>, bytes: u64) -> Self::Ref;
    fn program(&mut self, program: Program, inputs: Vec<Input<Self::Ref>>) -> Self::Ref;
    fn combine(&mut self, spec: CombineSpec, parts: Vec<Self::Ref>) -> Self::Ref;
    fn assemble(&mut self, spec: AssembleSpec, parts: Vec<Self::Ref>) -> Self::Ref;
    fn dot(&mut self, spec: DotSpec, parts: Vec<Self::Ref>) -> Self::Ref;
    fn map_blocks(
        &mut self,
        trampoline: Trampoline,
        name: &str,
        list: bool,
        parts: Vec<Self::Ref>,
    ) -> Self::Ref;
    fn delayed(
        &mut self,
        node: &std::sync::Arc<crate::collections::delayed::Node>,
        bytes: u64,
    ) -> Self::Ref;
    /// Chunk `index` of `array`, read from `source`.
    fn read(&mut self, source: &dyn ChunkSource, array: &Array, index: &[usize]) -> Self::Ref;
}

struct ClientSink<'a, 'c> {
    client: &'c Client,
    /// The session delayed calls in the graph go to (shared with the caller's, when a
    /// delayed call needs an array's chunk).
    session: &'a mut crate::collections::delayed::Session<'c>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_value(value).expect("array task descriptions encode")
}

impl ClientSink<'_, '_> {
    fn submit(
        &self,
        entry: Trampoline,
        name: &str,
        head: Vec<u8>,
        parts: Vec<Future<()>>,
    ) -> Future<()> {
        self.client.submit_raw(
            entry,
            name,
            &[],
            vec![CallArg::Value(head), CallArg::Futures(parts)],
        )
    }
}

impl Sink for ClientSink<'_, '_> {
    type Ref = Future<()>;

    fn stored(&mut self, future: &Future<()>, _bytes: u64) -> Future<()> {
        future.clone()
    }

    fn program(&mut self, program: Program, inputs: Vec<Input<Future<()>>>) -> Future<()> {
        let mut args = Vec::with_capacity(inputs.len() + 1);
        let mut mapped = Vec::new();
        let mut uses = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                Input::Chunk(future) => args.push(CallArg::Future(future)),
                Input::Literal(block) => {
                    args.push(CallArg::Value(
                        block.encode().expect("blocks encode").into_vec(),
                    ));
                }
                Input::Mapped {
                    function,
                    name,
                    list,
                    parts,
                } => {
                    let slots = if list {
                        args.push(CallArg::Futures(parts));
                        1
                    } else {
                        let n = parts.len();
                        args.extend(parts.into_iter().map(CallArg::Future));
                        n
                    };
                    mapped.push(Mapped { input: i, slots });
                    uses.push(self.client.register(function, || name));
                }
            }
        }
        args.insert(0, CallArg::Value(encode(&ProgramSpec { program, mapped })));
        self.client.submit_raw(program_task, "array", &uses, args)
    }

    fn combine(&mut self, spec: CombineSpec, parts: Vec<Future<()>>) -> Future<()> {
        self.submit(combine_task, spec.op.name(), encode(&spec), parts)
    }

    fn assemble(&mut self, spec: AssembleSpec, parts: Vec<Future<()>>) -> Future<()> {
        self.submit(assemble_task, "rechunk", encode(&spec), parts)
    }

    fn dot(&mut self, spec: DotSpec, parts: Vec<Future<()>>) -> Future<()> {
        self.submit(dot_task, "dot", encode(&spec), parts)
    }

    fn map_blocks(
        &mut self,
        trampoline: Trampoline,
        name: &str,
        list: bool,
        parts: Vec<Future<()>>,
    ) -> Future<()> {
        let args = if list {
            vec![CallArg::Futures(parts)]
        } else {
            parts.into_iter().map(CallArg::Future).collect()
        };
        self.client.submit_raw(trampoline, name, &[], args)
    }

    fn delayed(
        &mut self,
        node: &std::sync::Arc<crate::collections::delayed::Node>,
        _bytes: u64,
    ) -> Future<()> {
        self.session.node(node)
    }

    fn read(&mut self, source: &dyn ChunkSource, array: &Array, index: &[usize]) -> Future<()> {
        source.read(self.client, array.chunks(), index, array.dtype())
    }
}

/// Bytes of a chunk of `shape` of `dtype`.
fn chunk_bytes(shape: &[usize], dtype: DType) -> u64 {
    (shape.iter().product::<usize>() * dtype.size()) as u64
}

/// Builds one fused program.
struct ProgramBuilder<R> {
    nodes: Vec<Node>,
    inputs: Vec<(DType, Input<R>)>,
    memo: FxHashMap<(usize, Vec<usize>), usize>,
    no_streaming: bool,
}

impl<R: Clone> ProgramBuilder<R> {
    fn new() -> Self {
        ProgramBuilder {
            nodes: Vec::new(),
            inputs: Vec::new(),
            memo: FxHashMap::default(),
            no_streaming: false,
        }
    }

    fn push(&mut self, op: Op, shape: Vec<usize>, dtype: DType, streams: bool) -> usize {
        self.nodes.push(Node {
            op,
            shape,
            dtype,
            streams,
        });
        self.nodes.len() - 1
    }

    fn input(&mut self, dtype: DType, input: Input<R>, shape: Vec<usize>) -> usize {
        self.inputs.push((dtype, input));
        let streams = shape.first().is_some_and(|&r| r > 1);
        let i = self.inputs.len() - 1;
        self.push(Op::Input(i), shape, dtype, streams)
    }

    /// Whether an operand of `shape` that streams can take part in a result of `out` axes
    /// row by row (its axis 0 must be the result's axis 0).
    fn operand_streams(&mut self, operand: usize, out_ndim: usize) -> bool {
        let node = &self.nodes[operand];
        if node.streams && node.shape.len() != out_ndim {
            self.no_streaming = true;
        }
        node.streams && node.shape.len() == out_ndim
    }

    fn finish(mut self, output: Output) -> (Program, Vec<Input<R>>) {
        if self.no_streaming {
            for node in &mut self.nodes {
                node.streams = false;
            }
        }
        let (dtypes, inputs) = self.inputs.into_iter().unzip();
        (
            Program {
                inputs: dtypes,
                nodes: self.nodes,
                output,
            },
            inputs,
        )
    }
}

/// Walks an array graph, creating tasks through a [`Sink`].
struct Lowerer<'s, S: Sink> {
    sink: &'s mut S,
    chunks: FxHashMap<(usize, usize), S::Ref>,
    /// `map_blocks` arrays run inside the one program that reads each of their chunks.
    fusable: FxHashSet<usize>,
}

impl<'s, S: Sink> Lowerer<'s, S> {
    /// A lowerer of the graph of `root`.
    fn new(sink: &'s mut S, root: &Array) -> Self {
        Self::with_roots(sink, &[root])
    }

    /// A lowerer of the graph of all `roots` together.
    fn with_roots(sink: &'s mut S, roots: &[&Array]) -> Self {
        Lowerer {
            sink,
            chunks: FxHashMap::default(),
            fusable: fusable_map_blocks(roots),
        }
    }
}

/// The operands of `array`, each with whether every chunk of the operand is read by exactly
/// one chunk of `array`, inside that chunk's program.
fn operands(array: &Array) -> Vec<(&Array, bool)> {
    let same_grid = |x: &Array| x.chunks() == array.chunks();
    match &array.node().expr {
        Expr::Unary(_, x) | Expr::Cast(_, x) | Expr::Scan(_, _, x) => vec![(x, same_grid(x))],
        Expr::Binary(_, x, y) => vec![(x, same_grid(x)), (y, same_grid(y))],
        Expr::Where(c, x, y) => vec![(c, same_grid(c)), (x, same_grid(x)), (y, same_grid(y))],
        Expr::Reduce { x, .. } | Expr::Transpose(_, x) => vec![(x, true)],
        Expr::Slice(plans, x) => vec![(x, chunk_for_chunk(plans, x))],
        Expr::Reshape(x) | Expr::Rechunk(x) | Expr::Windows(_, x) => vec![(x, false)],
        Expr::Concatenate(_, parts) | Expr::Stack(_, parts) => {
            parts.iter().map(|p| (p, false)).collect()
        }
        Expr::Dot(a, b) => vec![(a, false), (b, false)],
        Expr::MapBlocks { x, .. } => x.iter().map(|a| (a, false)).collect(),
        Expr::Invalid(_)
        | Expr::Fill(_)
        | Expr::Random { .. }
        | Expr::Arange { .. }
        | Expr::Literal(_)
        | Expr::Stored(_)
        | Expr::Read(_)
        | Expr::FromDelayed(_) => Vec::new(),
    }
}

/// Whether a slice takes a part of every chunk of `x`, output chunk `k` of chunk `k` (as
/// the trimming of `map_overlap` does).
fn chunk_for_chunk(plans: &[super::structure::AxisPlan], x: &Array) -> bool {
    plans.iter().zip(x.chunks()).all(|(plan, sizes)| {
        plan.len() == sizes.len() && plan.iter().enumerate().all(|(k, (c, _))| *c == k)
    })
}

/// The `map_blocks` arrays of the graph of `roots` that one program array reads, chunk for chunk,
/// and nothing else reads: their function runs inside that program's tasks, so its block
/// is never stored (Dask's blockwise fusion). A block read by several arrays, or read
/// across chunks, stays a task of its own so that it is computed once.
fn fusable_map_blocks(roots: &[&Array]) -> FxHashSet<usize> {
    let mut readers: FxHashMap<usize, (usize, bool)> = FxHashMap::default();
    let mut mapped = Vec::new();
    let mut seen = FxHashSet::default();
    // A root's chunks are kept (its reader is outside the graph): never fused.
    for root in roots {
        readers.insert(root.id(), (1, false));
    }
    let mut stack: Vec<Array> = roots.iter().map(|&r| r.clone()).collect();
    while let Some(array) = stack.pop() {
        if !seen.insert(array.id()) {
            continue;
        }
        if matches!(array.node().expr, Expr::MapBlocks { .. }) {
            mapped.push(array.id());
        }
        for (x, one_to_one) in operands(&array) {
            let entry = readers.entry(x.id()).or_insert((0, true));
            entry.0 += 1;
            entry.1 &= one_to_one;
            stack.push(x.clone());
        }
    }
    mapped
        .into_iter()
        .filter(|id| readers.get(id) == Some(&(1, true)))
        .collect()
}

/// The chunk index of a `map_blocks` input for chunk `index` of its result.
fn input_index(index_map: &Option<Vec<Option<usize>>>, index: &[usize]) -> Vec<usize> {
    match index_map {
        None => index.to_vec(),
        Some(map) => map.iter().map(|at| at.map_or(0, |a| index[a])).collect(),
    }
}

fn flat(array: &Array, index: &[usize]) -> usize {
    grid::ravel(index, &grid::grid(array.chunks()))
}

/// `true` when every axis in `axes` of `x` lies in one chunk: the reduction is per chunk.
fn within_chunks(x: &Array, axes: &[usize]) -> bool {
    axes.iter().all(|&a| x.chunks()[a].len() <= 1)
}

impl<S: Sink> Lowerer<'_, S> {
    /// Chunk `index` of `array`, computed by a task.
    fn chunk(&mut self, array: &Array, index: &[usize]) -> Result<S::Ref> {
        let key = (array.id(), flat(array, index));
        if let Some(r) = self.chunks.get(&key) {
            return Ok(r.clone());
        }
        let r = match &array.node().expr {
            Expr::Stored(futures) => {
                let bytes = chunk_bytes(&grid::chunk_shape(array.chunks(), index), array.dtype());
                self.sink.stored(&futures[key.1], bytes)
            }
            Expr::FromDelayed(nodes) => {
                let bytes = chunk_bytes(&grid::chunk_shape(array.chunks(), index), array.dtype());
                self.sink.delayed(&nodes[key.1], bytes)
            }
            Expr::Read(source) => self.sink.read(source.as_ref(), array, index),
            Expr::Reduce {
                op,
                axes,
                keepdims,
                x,
            } if !within_chunks(x, axes) => {
                self.reduce_chunk(*op, axes, *keepdims, x, array, index)?
            }
            Expr::Rechunk(x) => {
                let offset = grid::chunk_offset(array.chunks(), index);
                let shape = grid::chunk_shape(array.chunks(), index);
                let ranges = offset.iter().zip(&shape).map(|(&o, &n)| (o, n)).collect();
                self.window_chunk(x, array, index, ranges)?
            }
            Expr::Windows(windows, x) => {
                let ranges = windows.iter().zip(index).map(|(w, &i)| w[i]).collect();
                self.window_chunk(x, array, index, ranges)?
            }
            Expr::Dot(a, b) => self.dot_chunk(a, b, array, index)?,
            Expr::MapBlocks {
                trampoline,
                name,
                x,
                list,
                index_map,
                ..
            } => {
                let index = input_index(index_map, index);
                let parts = x
                    .iter()
                    .map(|a| self.chunk(a, &index))
                    .collect::<Result<Vec<_>>>()?;
                self.sink.map_blocks(*trampoline, name, *list, parts)
            }
            _ => {
                let mut builder = ProgramBuilder::new();
                self.fuse(&mut builder, array, index)?;
                let (program, mut inputs) = builder.finish(Output::Store);
                match (program.nodes.as_slice(), inputs.as_mut_slice()) {
                    // A chunk that is another task's chunk as it is (a slice of a whole
                    // chunk): no task of its own.
                    ([only], [Input::Chunk(r)]) if only.op == Op::Input(0) => r.clone(),
                    _ => self.sink.program(program, inputs),
                }
            }
        };
        self.chunks.insert(key, r.clone());
        Ok(r)
    }

    /// Adds the nodes computing chunk `index` of `array` to `b`; returns the root node.
    fn fuse(
        &mut self,
        b: &mut ProgramBuilder<S::Ref>,
        array: &Array,
        index: &[usize],
    ) -> Result<usize> {
        let memo_key = (array.id(), index.to_vec());
        if let Some(&node) = b.memo.get(&memo_key) {
            return Ok(node);
        }
        let shape = grid::chunk_shape(array.chunks(), index);
        let dtype = array.dtype();
        let rows = shape.first().is_some_and(|&r| r > 1);
        let node = match &array.node().expr {
            Expr::Invalid(message) => return Err(Error::Config(message.clone())),
            Expr::Fill(value) if array.ndim() == 0 => {
                b.push(Op::Scalar(*value), vec![], dtype, false)
            }
            Expr::Fill(value) => b.push(Op::Fill(*value), shape, dtype, rows),
            Expr::Random { dist, seed } => {
                let key = random::chunk_key(*seed, flat(array, index) as u64);
                b.push(Op::Random { dist: *dist, key }, shape, dtype, rows)
            }
            Expr::Arange { start, step } => {
                let first = grid::chunk_offset(array.chunks(), index)[0] as u64;
                b.push(
                    Op::Arange {
                        start: *start,
                        step: *step,
                        first,
                    },
                    shape,
                    dtype,
                    rows,
                )
            }
            Expr::Literal(block) => {
                let offset = grid::chunk_offset(array.chunks(), index);
                let slices: Vec<AxisSlice> = offset
                    .iter()
                    .zip(&shape)
                    .map(|(&start, &len)| AxisSlice {
                        start,
                        step: 1,
                        len,
                        reverse: false,
                    })
                    .collect();
                let piece = if slices
                    .iter()
                    .zip(block.shape())
                    .all(|(s, &n)| s.start == 0 && s.len == n)
                {
                    (**block).clone()
                } else {
                    block.slice(&slices)
                };
                b.input(dtype, Input::Literal(piece), shape)
            }
            Expr::MapBlocks {
                block_fn,
                name,
                x,
                list,
                index_map,
                ..
            } if self.fusable.contains(&array.id()) => {
                let index = input_index(index_map, index);
                let parts = x
                    .iter()
                    .map(|a| self.chunk(a, &index))
                    .collect::<Result<Vec<_>>>()?;
                let input = Input::Mapped {
                    function: *block_fn,
                    name: name.clone(),
                    list: *list,
                    parts,
                };
                b.input(dtype, input, shape)
            }
            Expr::Stored(_)
            | Expr::FromDelayed(_)
            | Expr::Read(_)
            | Expr::Rechunk(_)
            | Expr::Windows(..)
            | Expr::Dot(..)
            | Expr::MapBlocks { .. } => {
                let r = self.chunk(array, index)?;
                b.input(dtype, Input::Chunk(r), shape)
            }
            Expr::Reduce { axes, x, .. } if !within_chunks(x, axes) => {
                let r = self.chunk(array, index)?;
                b.input(dtype, Input::Chunk(r), shape)
            }
            Expr::Reduce {
                op,
                axes,
                keepdims,
                x,
            } => {
                // Every reduced axis is one chunk: the reduction happens inside the chunk.
                let mut x_index = Vec::with_capacity(x.ndim());
                let mut out = index.iter();
                for axis in 0..x.ndim() {
                    if axes.contains(&axis) {
                        x_index.push(0);
                        if *keepdims {
                            out.next();
                        }
                    } else {
                        x_index.push(*out.next().expect("index of a kept axis"));
                    }
                }
                let arg = self.fuse(b, x, &x_index)?;
                let streams = b.nodes[arg].streams && !axes.contains(&0);
                if b.nodes[arg].streams && axes.contains(&0) {
                    b.no_streaming = true;
                }
                b.push(
                    Op::Reduce {
                        op: *op,
                        axes: axes.clone(),
                        keepdims: *keepdims,
                        arg,
                    },
                    shape,
                    dtype,
                    streams,
                )
            }
            Expr::Unary(op, x) => {
                let a = self.fuse(b, x, index)?;
                let streams = b.nodes[a].streams;
                b.push(Op::Unary(*op, a), shape, dtype, streams)
            }
            Expr::Cast(to, x) => {
                let a = self.fuse(b, x, index)?;
                let streams = b.nodes[a].streams;
                b.push(Op::Cast(*to, a), shape, dtype, streams)
            }
            Expr::Scan(op, axis, x) => {
                // A running value along the axis: the whole chunk at once.
                let a = self.fuse(b, x, index)?;
                b.no_streaming = true;
                b.push(Op::Scan(*op, *axis, a), shape, dtype, false)
            }
            Expr::Binary(op, x, y) => {
                let xi = grid::operand_index(index, x.shape(), array.shape());
                let yi = grid::operand_index(index, y.shape(), array.shape());
                let a = self.fuse(b, x, &xi)?;
                let c = self.fuse(b, y, &yi)?;
                let n = shape.len();
                let streams = b.operand_streams(a, n) | b.operand_streams(c, n);
                b.push(Op::Binary(*op, a, c), shape, dtype, streams)
            }
            Expr::Where(cond, x, y) => {
                let mut operands = [0; 3];
                let mut streams = false;
                for (slot, operand) in operands.iter_mut().zip([cond, x, y]) {
                    let oi = grid::operand_index(index, operand.shape(), array.shape());
                    *slot = self.fuse(b, operand, &oi)?;
                    streams |= b.operand_streams(*slot, shape.len());
                }
                b.push(
                    Op::Where(operands[0], operands[1], operands[2]),
                    shape,
                    dtype,
                    streams,
                )
            }
            Expr::Transpose(perm, x) => {
                let mut x_index = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    x_index[p] = index[i];
                }
                let a = self.fuse(b, x, &x_index)?;
                b.no_streaming = true;
                b.push(Op::Transpose(perm.clone(), a), shape, dtype, false)
            }
            Expr::Slice(plans, x) => {
                let x_index: Vec<usize> = plans
                    .iter()
                    .zip(index)
                    .map(|(plan, &i)| plan[i].0)
                    .collect();
                let slices: Vec<AxisSlice> = plans
                    .iter()
                    .zip(index)
                    .map(|(plan, &i)| plan[i].1)
                    .collect();
                let a = self.fuse(b, x, &x_index)?;
                let x_shape = grid::chunk_shape(x.chunks(), &x_index);
                if slices
                    .iter()
                    .zip(&x_shape)
                    .all(|(s, &n)| s.start == 0 && s.step == 1 && s.len == n && !s.reverse)
                {
                    // The whole chunk: nothing to cut.
                    a
                } else {
                    b.no_streaming = true;
                    b.push(Op::Slice(slices, a), shape, dtype, false)
                }
            }
            Expr::Reshape(x) => {
                let x_index: Vec<usize> = if only_unit_axes_differ(x.shape(), array.shape()) {
                    // Axes of length 1 inserted or removed: the other axes' indices, in
                    // order.
                    let mut kept = index
                        .iter()
                        .zip(array.shape())
                        .filter(|(_, n)| **n != 1)
                        .map(|(i, _)| *i);
                    x.shape()
                        .iter()
                        .map(|&n| if n == 1 { 0 } else { kept.next().unwrap_or(0) })
                        .collect()
                } else {
                    (0..x.ndim())
                        .map(|d| {
                            if d == 0 {
                                index.first().copied().unwrap_or(0)
                            } else {
                                0
                            }
                        })
                        .collect()
                };
                let a = self.fuse(b, x, &x_index)?;
                b.no_streaming = true;
                b.push(Op::Reshape(shape.clone(), a), shape, dtype, false)
            }
            Expr::Concatenate(axis, parts) => {
                let mut i = index[*axis];
                let mut chosen = None;
                for part in parts {
                    let n = part.chunks()[*axis].iter().filter(|&&s| s > 0).count();
                    if i < n {
                        chosen = Some(part);
                        break;
                    }
                    i -= n;
                }
                let part = chosen.expect("concatenated chunk index in range");
                let mut part_index = index.to_vec();
                // Skip empty chunks of the part when counting.
                let nonempty: Vec<usize> = part.chunks()[*axis]
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s > 0)
                    .map(|(k, _)| k)
                    .collect();
                part_index[*axis] = nonempty[i];
                self.fuse(b, part, &part_index)?
            }
            Expr::Stack(axis, parts) => {
                let mut part_index = index.to_vec();
                let k = part_index.remove(*axis);
                let a = self.fuse(b, &parts[k], &part_index)?;
                b.no_streaming = true;
                b.push(Op::Reshape(shape.clone(), a), shape, dtype, false)
            }
        };
        b.memo.insert(memo_key, node);
        Ok(node)
    }

    /// Output chunk `index` of a reduction across chunks: the first stage fused into each
    /// input chunk's program, then a tree of combine tasks.
    fn reduce_chunk(
        &mut self,
        op: ReduceOp,
        axes: &[usize],
        keepdims: bool,
        x: &Array,
        array: &Array,
        index: &[usize],
    ) -> Result<S::Ref> {
        let mut template = Vec::with_capacity(x.ndim());
        let mut out = index.iter();
        for axis in 0..x.ndim() {
            if axes.contains(&axis) {
                template.push(None);
                if keepdims {
                    out.next();
                }
            } else {
                template.push(Some(*out.next().expect("index of a kept axis")));
            }
        }
        let x_grid = grid::grid(x.chunks());
        let reduced_counts: Vec<usize> = axes.iter().map(|&a| x_grid[a]).collect();
        let combos: usize = reduced_counts.iter().product();
        let mut parts = Vec::with_capacity(combos);
        for combo in 0..combos {
            let picks = grid::unravel(combo, &reduced_counts);
            let mut x_index = Vec::with_capacity(x.ndim());
            let mut pick = picks.iter();
            for slot in &template {
                x_index
                    .push(slot.unwrap_or_else(|| *pick.next().expect("a pick per reduced axis")));
            }
            let mut builder = ProgramBuilder::new();
            self.fuse(&mut builder, x, &x_index)?;
            let (program, inputs) = builder.finish(Output::Partial {
                op,
                axes: axes.to_vec(),
                offset: grid::chunk_offset(x.chunks(), &x_index),
                global_shape: x.shape().to_vec(),
            });
            parts.push(self.sink.program(program, inputs));
        }
        let squeeze = if keepdims { Vec::new() } else { axes.to_vec() };
        loop {
            if parts.len() <= FAN_IN {
                let spec = CombineSpec {
                    op,
                    finish: Some((array.dtype(), squeeze)),
                };
                return Ok(self.sink.combine(spec, parts));
            }
            parts = parts
                .chunks(FAN_IN)
                .map(|group| {
                    self.sink
                        .combine(CombineSpec { op, finish: None }, group.to_vec())
                })
                .collect();
        }
    }

    /// Output chunk `index` of a rechunked or windowed array: the pieces of the input
    /// chunks that overlap `ranges` (`(start, len)` of `x` per axis).
    fn window_chunk(
        &mut self,
        x: &Array,
        array: &Array,
        index: &[usize],
        ranges: Vec<(usize, usize)>,
    ) -> Result<S::Ref> {
        let shape = grid::chunk_shape(array.chunks(), index);
        // Per axis: the overlapping source chunks, with (start, len) in the source and the
        // destination start.
        let mut per_axis: Vec<Vec<(usize, usize, usize, usize)>> = Vec::new();
        for (axis, &(lo, len)) in ranges.iter().enumerate() {
            let bounds = grid::boundaries(&x.chunks()[axis]);
            let hi = lo + len;
            let mut overlaps = Vec::new();
            for (c, w) in bounds.windows(2).enumerate() {
                let (b, e) = (w[0].max(lo), w[1].min(hi));
                if b < e || (lo == hi && c == 0) {
                    overlaps.push((c, b - w[0], e.saturating_sub(b), b - lo));
                }
            }
            per_axis.push(overlaps);
        }
        let counts: Vec<usize> = per_axis.iter().map(Vec::len).collect();
        let total: usize = counts.iter().product();
        let mut parts = Vec::with_capacity(total);
        let mut pieces = Vec::with_capacity(total);
        for k in 0..total {
            let pick = grid::unravel(k, &counts);
            let src: Vec<usize> = pick.iter().zip(&per_axis).map(|(&p, o)| o[p].0).collect();
            let region: Vec<(usize, usize)> = pick
                .iter()
                .zip(&per_axis)
                .map(|(&p, o)| (o[p].1, o[p].2))
                .collect();
            let dest = pick.iter().zip(&per_axis).map(|(&p, o)| o[p].3).collect();
            let source = self.chunk(x, &src)?;
            let source_shape = grid::chunk_shape(x.chunks(), &src);
            let whole = region
                .iter()
                .zip(&source_shape)
                .all(|(&(start, len), &n)| start == 0 && len == n);
            if whole {
                parts.push(source);
                pieces.push((region, dest));
            } else {
                // Only the piece travels: cut where the source chunk lies.
                parts.push(self.piece(x.dtype(), source, source_shape, &region));
                pieces.push((region.iter().map(|&(_, len)| (0, len)).collect(), dest));
            }
        }
        Ok(self.sink.assemble(
            AssembleSpec {
                dtype: array.dtype(),
                shape,
                pieces,
            },
            parts,
        ))
    }

    /// The region (`(start, len)` per axis) of a chunk of `shape`, cut by a task of its own.
    fn piece(
        &mut self,
        dtype: DType,
        source: S::Ref,
        shape: Vec<usize>,
        region: &[(usize, usize)],
    ) -> S::Ref {
        let mut builder = ProgramBuilder::new();
        let input = builder.input(dtype, Input::Chunk(source), shape);
        builder.no_streaming = true;
        let slices = AxisSlice::of_region(region);
        let piece_shape = region.iter().map(|&(_, len)| len).collect();
        builder.push(Op::Slice(slices, input), piece_shape, dtype, false);
        let (program, inputs) = builder.finish(Output::Store);
        self.sink.program(program, inputs)
    }

    fn dot_chunk(
        &mut self,
        a: &Array,
        b: &Array,
        array: &Array,
        index: &[usize],
    ) -> Result<S::Ref> {
        let inner = a.chunks()[1].len();
        // A transposed operand is read untransposed: the product takes its transpose.
        let untransposed = |x: &Array| match &x.node().expr {
            Expr::Transpose(perm, y) if perm.as_slice() == [1, 0] => Some(y.clone()),
            _ => None,
        };
        let (a_t, b_t) = (untransposed(a), untransposed(b));
        let mut parts = Vec::with_capacity(2 * inner);
        for l in 0..inner {
            parts.push(match &a_t {
                Some(y) => self.chunk(y, &[l, index[0]])?,
                None => self.chunk(a, &[index[0], l])?,
            });
            parts.push(match &b_t {
                Some(y) => self.chunk(y, &[index[1], l])?,
                None => self.chunk(b, &[l, index[1]])?,
            });
        }
        Ok(self.sink.dot(
            DotSpec {
                a: a.dtype(),
                b: b.dtype(),
                a_transposed: a_t.is_some(),
                b_transposed: b_t.is_some(),
                dtype: array.dtype(),
                terms: inner,
                bytes: chunk_bytes(&grid::chunk_shape(array.chunks(), index), array.dtype()),
            },
            parts,
        ))
    }
}

/// What a session keeps of the lowering of one array's graph, so that its chunks, asked
/// for one by one (by delayed calls, through `Array::to_delayed`), share every task
/// upstream of them.
struct Lowered {
    /// The graph's root, kept alive: the keys below are addresses of its nodes.
    _root: Array,
    chunks: FxHashMap<(usize, usize), Future<()>>,
    fusable: FxHashSet<usize>,
}

/// Submits the tasks computing chunk `index` of `array` into `session`; returns its
/// future. Chunks of one array asked for in one session share what they have in common
/// (each task is submitted once), and the delayed calls in the array's graph are the
/// session's own.
pub(super) fn materialize_chunk_in(
    session: &mut crate::collections::delayed::Session<'_>,
    array: &Array,
    index: &[usize],
) -> Result<Future<()>> {
    let key = array.id();
    let mut state = session
        .take_state::<Lowered>(key)
        .unwrap_or_else(|| Lowered {
            _root: array.clone(),
            chunks: FxHashMap::default(),
            fusable: fusable_map_blocks(&[array]),
        });
    let client = session.client();
    let result = {
        let mut sink = ClientSink {
            client,
            session: &mut *session,
        };
        let mut lowerer = Lowerer {
            sink: &mut sink,
            chunks: std::mem::take(&mut state.chunks),
            fusable: std::mem::take(&mut state.fusable),
        };
        let result = lowerer.chunk(array, index);
        state.chunks = lowerer.chunks;
        state.fusable = lowerer.fusable;
        result
    };
    session.put_state(key, state);
    result
}

/// Submits the tasks computing every chunk of `array`; returns their futures, C order.
pub(super) fn materialize(client: &Client, array: &Array) -> Result<Vec<Future<()>>> {
    Ok(materialize_many(client, &[array])?
        .pop()
        .expect("one array"))
}

/// Submits the tasks computing every chunk of each of `arrays`, in one graph (a chunk
/// they share is computed once); returns their futures, per array, C order.
pub(super) fn materialize_many(client: &Client, arrays: &[&Array]) -> Result<Vec<Vec<Future<()>>>> {
    let mut session = crate::collections::delayed::Session::new(client);
    let mut sink = ClientSink {
        client,
        session: &mut session,
    };
    let mut lowerer = Lowerer::with_roots(&mut sink, arrays);
    arrays
        .iter()
        .map(|array| {
            if array.ndim() == 0 {
                return Ok(vec![lowerer.chunk(array, &[])?]);
            }
            grid::indices(array.chunks())
                .map(|index| lowerer.chunk(array, &index))
                .collect()
        })
        .collect()
}

/// Computes `arrays` in one graph and has `task` run on each chunk, where the chunk lies:
/// its arguments are `head(k, start)` (`k` the array's position in `arrays`, `start` the
/// chunk's first element) and the chunk. Waits for every task; what writes chunks to files
/// and stores is made of this.
#[cfg(any(feature = "zarr", feature = "hdf5"))]
pub(super) fn for_each_chunk(
    client: &Client,
    arrays: &[&Array],
    task: Trampoline,
    name: &str,
    head: impl Fn(usize, Vec<usize>) -> Vec<u8>,
) -> Result<()> {
    let chunks = materialize_many(client, arrays)?;
    // Each task returns a count (of bytes or elements written); gathering it reports the
    // first failure.
    let mut runs: Vec<Future<u64>> = Vec::new();
    for (k, (array, futures)) in arrays.iter().zip(chunks).enumerate() {
        let starts =
            grid::indices(array.chunks()).map(|index| grid::chunk_offset(array.chunks(), &index));
        for (start, chunk) in starts.zip(futures) {
            let args = vec![CallArg::Value(head(k, start)), CallArg::Future(chunk)];
            runs.push(client.submit_raw(task, name, &[], args).retype());
        }
    }
    client.gather(&runs)?;
    Ok(())
}

/// The fused program of chunk `index` of `x` ending in the first stage of reduction `op`
/// over all axes (what each chunk's task of `x.reduce(op, None, ..)` runs).
pub(super) fn partial_program(x: &Array, op: ReduceOp, index: &[usize]) -> Result<Program> {
    let mut sink = ExplainSink::default();
    let mut lowerer = Lowerer::new(&mut sink, x);
    let mut builder = ProgramBuilder::new();
    lowerer.fuse(&mut builder, x, index)?;
    if !builder.inputs.is_empty() {
        return Err(Error::Config(
            "partial_program works for arrays computed from scratch (no input chunks)".into(),
        ));
    }
    Ok(builder
        .finish(Output::Partial {
            op,
            axes: (0..x.ndim()).collect(),
            offset: grid::chunk_offset(x.chunks(), index),
            global_shape: x.shape().to_vec(),
        })
        .0)
}

/// Joins computed chunks (C order) into one array.
pub(super) fn assemble<T: Element>(
    shape: &[usize],
    chunks: &Chunks,
    parts: Vec<ArrayD<T>>,
) -> Result<ArrayD<T>> {
    if parts.len() == 1 {
        let only = parts.into_iter().next().expect("one chunk");
        if only.shape() != shape {
            return Err(Error::Config(format!(
                "a chunk of shape {:?} where {shape:?} was expected (a map_blocks function that changes shapes?)",
                only.shape()
            )));
        }
        return Ok(only);
    }
    let Some(fill) = parts.iter().find_map(|p| p.iter().next().copied()) else {
        return ArrayD::from_shape_vec(IxDyn(shape), Vec::new())
            .map_err(|e| Error::Config(e.to_string()));
    };
    let mut out = ArrayD::from_elem(IxDyn(shape), fill);
    for (index, part) in grid::indices(chunks).zip(parts) {
        let offset = grid::chunk_offset(chunks, &index);
        let expected = grid::chunk_shape(chunks, &index);
        if part.shape() != expected.as_slice() {
            return Err(Error::Config(format!(
                "chunk {index:?} has shape {:?}, expected {expected:?} (a map_blocks function that changes shapes?)",
                part.shape()
            )));
        }
        let mut view = out.view_mut();
        for (axis, (&o, &n)) in offset.iter().zip(&expected).enumerate() {
            view.slice_axis_inplace(Axis(axis), Slice::from(o..o + n));
        }
        view.assign(&part);
    }
    Ok(out)
}
