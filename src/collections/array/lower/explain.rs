//! What an array's graph would run, without running it: tasks counted by kind, the bytes
//! they read from other tasks and those that may cross between workers ([`explain`],
//! [`summary`]).

use super::super::Array;
use super::super::grid;
use super::super::program::{Output, Program, ReduceOp};
use super::super::source::ChunkSource;
use super::super::tasks::{AssembleSpec, CombineSpec, DotSpec};
use super::{FAN_IN, Input, Lowerer, Sink, chunk_bytes};
use crate::client::Future;
use crate::error::Result;
use crate::task::Trampoline;
use std::collections::BTreeMap;

/// What one kind of task of a graph reads.
#[derive(Default, Clone, Copy)]
struct KindCount {
    tasks: usize,
    /// Bytes the tasks read from other tasks.
    read: u64,
    /// Of those, the bytes not in each task's largest input: what crosses between workers
    /// when each task runs where its largest input lies (the scheduler's rule), an upper
    /// bound when inputs share a worker.
    moved: u64,
}

/// A task as [`ExplainSink`] sees it: the bytes of its value.
#[derive(Clone, Copy)]
pub(super) struct Made {
    bytes: u64,
}

/// Counts tasks by kind and the bytes they read, and keeps one example program per kind of
/// fused task.
#[derive(Default)]
pub(super) struct ExplainSink {
    kinds: BTreeMap<String, KindCount>,
    examples: Vec<(String, String)>,
}

impl ExplainSink {
    fn record(&mut self, kind: String, inputs: &[Made], bytes: u64) -> Made {
        let read: u64 = inputs.iter().map(|i| i.bytes).sum();
        let largest = inputs.iter().map(|i| i.bytes).max().unwrap_or(0);
        let count = self.kinds.entry(kind).or_default();
        count.tasks += 1;
        count.read += read;
        count.moved += read - largest;
        Made { bytes }
    }

    fn total(&self) -> KindCount {
        self.kinds
            .values()
            .fold(KindCount::default(), |t, k| KindCount {
                tasks: t.tasks + k.tasks,
                read: t.read + k.read,
                moved: t.moved + k.moved,
            })
    }
}

/// Bytes of what `program` returns: its chunk, or the reduction state of its root.
fn program_bytes(program: &Program) -> u64 {
    let root = program.root();
    match &program.output {
        Output::Store => chunk_bytes(&root.shape, root.dtype),
        Output::Partial { op, axes, .. } => {
            let kept: usize = (0..root.shape.len())
                .filter(|a| !axes.contains(a))
                .map(|a| root.shape[a])
                .product();
            let per = match op {
                ReduceOp::Var(_) | ReduceOp::Std(_) => 3,
                ReduceOp::Mean | ReduceOp::ArgMin | ReduceOp::ArgMax => 2,
                _ => 1,
            };
            (kept * 8 * per) as u64
        }
    }
}

impl Sink for ExplainSink {
    type Ref = Made;

    fn stored(&mut self, _future: &Future<()>, bytes: u64) -> Made {
        Made { bytes }
    }

    fn program(&mut self, program: Program, inputs: Vec<Input<Made>>) -> Made {
        let mapped: Vec<&str> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Mapped { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let kind = if mapped.is_empty() {
            format!("fused: {}", program.signature())
        } else {
            format!(
                "fused (map_blocks {}): {}",
                mapped.join(", "),
                program.signature()
            )
        };
        if !self.kinds.contains_key(&kind) {
            self.examples.push((kind.clone(), program.to_string()));
        }
        // A literal travels with the task from the client, not from another task.
        let read: Vec<Made> = inputs
            .iter()
            .flat_map(|i| match i {
                Input::Chunk(r) => vec![*r],
                Input::Literal(_) => Vec::new(),
                Input::Mapped { parts, .. } => parts.clone(),
            })
            .collect();
        let bytes = program_bytes(&program);
        self.record(kind, &read, bytes)
    }

    fn combine(&mut self, spec: CombineSpec, parts: Vec<Made>) -> Made {
        let bytes = parts.first().map_or(0, |p| p.bytes);
        self.record(
            format!(
                "combine {} states (up to {FAN_IN} per task){}",
                spec.op.name(),
                if spec.finish.is_some() {
                    ", last stage"
                } else {
                    ""
                }
            ),
            &parts,
            bytes,
        )
    }

    fn assemble(&mut self, spec: AssembleSpec, parts: Vec<Made>) -> Made {
        let bytes = chunk_bytes(&spec.shape, spec.dtype);
        self.record(
            "rechunk: copy pieces of chunks into a new chunk".into(),
            &parts,
            bytes,
        )
    }

    fn dot(&mut self, spec: DotSpec, parts: Vec<Made>) -> Made {
        self.record(
            "dot: sum of block matrix products".into(),
            &parts,
            spec.bytes,
        )
    }

    fn map_blocks(
        &mut self,
        _trampoline: Trampoline,
        name: &str,
        _list: bool,
        parts: Vec<Made>,
    ) -> Made {
        let bytes = parts.first().map_or(0, |p| p.bytes);
        self.record(format!("map_blocks: {name}"), &parts, bytes)
    }

    fn delayed(
        &mut self,
        _node: &std::sync::Arc<crate::collections::delayed::Node>,
        bytes: u64,
    ) -> Made {
        self.record("delayed calls making a chunk".into(), &[], bytes)
    }

    fn read(&mut self, source: &dyn ChunkSource, array: &Array, index: &[usize]) -> Made {
        let shape = grid::chunk_shape(array.chunks(), index);
        self.record(
            source.describe().into(),
            &[],
            chunk_bytes(&shape, array.dtype()),
        )
    }
}

/// The tasks `array` would run, counted by kind (nothing is submitted).
fn graph(array: &Array) -> Result<ExplainSink> {
    let mut sink = ExplainSink::default();
    let mut lowerer = Lowerer::new(&mut sink, array);
    let indices: Vec<Vec<usize>> = if array.ndim() == 0 {
        vec![vec![]]
    } else {
        grid::indices(array.chunks()).collect()
    };
    for index in &indices {
        lowerer.chunk(array, index)?;
    }
    Ok(sink)
}

/// How many tasks `array` would run and the bytes they would read.
pub(in crate::collections::array) fn summary(array: &Array) -> Result<super::super::GraphSummary> {
    let total = graph(array)?.total();
    Ok(super::super::GraphSummary {
        tasks: total.tasks,
        read_bytes: total.read,
        moved_bytes: total.moved,
    })
}

/// A description of the tasks `array` would run.
pub(in crate::collections::array) fn explain(array: &Array) -> String {
    let sink = match graph(array) {
        Ok(sink) => sink,
        Err(e) => return format!("invalid array: {e}"),
    };
    let bytes = |n: u64| crate::human_bytes(n);
    let total = sink.total();
    let mut text = format!(
        "array {} {:?} in {} chunks: {} tasks reading {} from other tasks, {} of it \
         between workers at most\n",
        array.dtype(),
        array.shape(),
        array.num_chunks(),
        total.tasks,
        bytes(total.read),
        bytes(total.moved),
    );
    for (kind, count) in &sink.kinds {
        let title = kind.split(':').next().unwrap_or(kind);
        let reads = format!(
            "reading {} ({} between workers at most)",
            bytes(count.read),
            bytes(count.moved)
        );
        if let Some((_, program)) = sink.examples.iter().find(|(k, _)| k == kind) {
            text.push_str(&format!(
                "  {} x {title} task {reads}, each one pass over its chunk:\n{program}",
                count.tasks
            ));
        } else {
            text.push_str(&format!("  {} x {kind}, {reads}\n", count.tasks));
        }
    }
    text
}
