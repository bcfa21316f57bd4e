//! Bags: dask.bag's parallel lists. A [`Bag<T>`] is a list of any serde type cut into
//! partitions that live on the workers (or are read or generated there); operations run
//! plain Rust functions over every partition as tasks, and reductions combine the
//! partitions' results in one more task.
//!
//! Like dask.bag, element-wise operations are *fused*: `map`, `filter`, `flat_map` and
//! `map_partitions` only add a step to the bag's per-partition pipeline. A result
//! ([`compute`](Bag::compute), a reduction, [`persist`](Bag::persist), `groupby`, ...)
//! submits one task per partition that reads its partition, streams the elements through
//! every step and ends in the result's own step (collect, count, fold by key, split by
//! key hash, ...), so no intermediate list is ever stored or sent. A bag used by several
//! results runs its pipeline for each of them: [`persist`](Bag::persist) it to run it once.
//!
//! ```
//! use mpidask::bag::Bag;
//! fn is_even(x: &u64) -> bool { x % 2 == 0 }
//! fn square(x: u64) -> u64 { x * x }
//!
//! mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let evens = Bag::range(client, 10, 3).filter(is_even).map(square);
//!     assert_eq!(evens.compute().unwrap(), vec![0, 4, 16, 36, 64]);
//!     assert_eq!(evens.sum().result().unwrap(), 120);
//! });
//! ```

use crate::client::{Client, Future};
use crate::collections::array::{Array, Element};
use crate::collections::delayed::{Delayed, Session};
use crate::error::Result;
use crate::protocol::{ArgSlot, decode_value, encode_value};
use crate::task::{
    KeepAlive, TaskInput, code_at, code_offset, conjure, decode_args, function_name, offset_of,
};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

/// What a bag's element may be.
pub trait Item: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Item for T {}

/// A partitioned list of `T` on the workers: where each partition's elements come from,
/// and the steps they go through.
pub struct Bag<T> {
    client: Client,
    /// Offset of the [`SourceFn`] every origin is read with.
    source: i64,
    /// One per partition.
    origins: Arc<Vec<Origin>>,
    /// What the origins are called in task names (empty for stored partitions).
    origin_name: Arc<str>,
    steps: Arc<Vec<Step>>,
    _elements: PhantomData<fn() -> T>,
}

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Self {
        Bag {
            client: self.client.clone(),
            source: self.source,
            origins: self.origins.clone(),
            origin_name: self.origin_name.clone(),
            steps: self.steps.clone(),
            _elements: PhantomData,
        }
    }
}

/// Where one partition's elements come from: the source function's one argument.
#[derive(Clone)]
struct Origin {
    slot: ArgSlot,
    /// The stored partition the slot names, if it names one.
    stored: Option<Future<()>>,
}

/// One element-wise step: its function's offset, its encoded parameter (empty for steps
/// without one) and its name (for task names).
#[derive(Clone)]
struct Step {
    offset: i64,
    parameter: Vec<u8>,
    name: String,
}

// ----- pipelines: the one task every partition runs ----------------------------------------

type TaskResult<T> = std::result::Result<T, String>;

/// A partition's elements flowing through a pipeline inside one task.
type Elements<T> = Box<dyn Iterator<Item = T>>;

/// [`Elements`] of some element type, so that steps of different types chain by offset.
type Stream = Box<dyn Any>;

/// Starts a pipeline from its origin's argument (a stored partition, a block of a file, ...).
type SourceFn = fn(&TaskInput<'_>) -> TaskResult<Stream>;
/// One element-wise step, given its encoded parameter.
type StepFn = fn(Stream, &[u8]) -> TaskResult<Stream>;
/// Ends a pipeline with the task's result, given the arguments that follow the origin's.
type SinkFn = fn(Stream, &TaskInput<'_>) -> TaskResult<Vec<u8>>;

/// A pipeline as it travels in its task's first argument: offsets of its functions from
/// the task anchor (every rank runs the same executable; see [`crate::task`]).
#[derive(Serialize, Deserialize)]
struct Plan {
    source: i64,
    /// Each step's offset and encoded parameter.
    steps: Vec<(i64, Vec<u8>)>,
    sink: i64,
}

fn source_offset(f: SourceFn) -> i64 {
    code_offset(f as *const ())
}

fn step_offset(f: StepFn) -> i64 {
    code_offset(f as *const ())
}

fn sink_offset(f: SinkFn) -> i64 {
    code_offset(f as *const ())
}

/// The task of every pipeline: arguments `[plan, origin, sink arguments...]`.
fn pipeline_task(input: &TaskInput<'_>) -> TaskResult<Vec<u8>> {
    let [ArgSlot::Value(plan), origin, ..] = input.args else {
        return Err("a bag task needs its plan and its partition's origin".into());
    };
    let plan: Plan = decode_value(plan).map_err(|e| format!("could not decode a bag plan: {e}"))?;
    let origin_deps = origin.dependencies().len();
    if input.deps.len() < origin_deps {
        return Err("a bag task is missing its partition".into());
    }
    let (origin_values, sink_values) = input.deps.split_at(origin_deps);
    let origin_input = TaskInput {
        args: &input.args[1..2],
        deps: origin_values,
    };
    let sink_input = TaskInput {
        args: &input.args[2..],
        deps: sink_values,
    };
    // SAFETY (all three): the client took each offset with `source_offset`, `step_offset`
    // or `sink_offset` of a function of exactly that type, in this same executable.
    let source = unsafe { std::mem::transmute::<*const (), SourceFn>(code_at(plan.source)) };
    let mut stream = source(&origin_input)?;
    for (step, parameter) in &plan.steps {
        let step = unsafe { std::mem::transmute::<*const (), StepFn>(code_at(*step)) };
        stream = step(stream, parameter)?;
    }
    let sink = unsafe { std::mem::transmute::<*const (), SinkFn>(code_at(plan.sink)) };
    sink(stream, &sink_input)
}

fn stream<T: 'static>(items: impl Iterator<Item = T> + 'static) -> Stream {
    Box::new(Box::new(items) as Elements<T>)
}

fn elements<T: 'static>(stream: Stream) -> TaskResult<Elements<T>> {
    stream
        .downcast::<Elements<T>>()
        .map(|items| *items)
        .map_err(|_| {
            format!(
                "a bag step expected elements of type {}: the pipeline is corrupted",
                std::any::type_name::<T>()
            )
        })
}

fn encode_parameter<A: Serialize>(parameter: &A) -> Result<Vec<u8>> {
    encode_value(parameter).map_err(|e| {
        crate::Error::encode(
            format!("a bag step's parameter ({})", std::any::type_name::<A>()),
            e,
        )
    })
}

fn encode_result<R: Serialize>(value: &R) -> TaskResult<Vec<u8>> {
    encode_value(value).map_err(|e| format!("could not encode the result: {e}"))
}

fn decoded<Args: DeserializeOwned>(input: &TaskInput<'_>) -> TaskResult<Args> {
    decode_args(input).map_err(|e| format!("could not decode a bag partition: {e}"))
}

// Sources.

fn stored_source<T: Item>(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let part: Vec<T> = decoded(input)?;
    Ok(stream(part.into_iter()))
}

fn range_source(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let (start, end): (u64, u64) = decoded(input)?;
    Ok(stream(start..end))
}

fn text_source(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let block: (String, u64, u64) = decoded(input)?;
    let bytes = read_block(block)?;
    Ok(stream(LinesOf { bytes, at: 0 }))
}

// Steps.

fn map_step<F: Fn(T) -> U + Copy + 'static, T: 'static, U: 'static>(
    s: Stream,
    _: &[u8],
) -> TaskResult<Stream> {
    Ok(stream(elements::<T>(s)?.map(conjure::<F>())))
}

fn filter_step<F: Fn(&T) -> bool + Copy + 'static, T: 'static>(
    s: Stream,
    _: &[u8],
) -> TaskResult<Stream> {
    let f = conjure::<F>();
    Ok(stream(elements::<T>(s)?.filter(move |x| f(x))))
}

fn parameter_of<A: DeserializeOwned>(parameter: &[u8]) -> TaskResult<A> {
    decode_value(parameter).map_err(|e| format!("could not decode a bag step's parameter: {e}"))
}

fn map_with_step<F, T, A, U>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
where
    F: Fn(T, &A) -> U + Copy + 'static,
    T: 'static,
    A: DeserializeOwned + 'static,
    U: 'static,
{
    let (f, a) = (conjure::<F>(), parameter_of::<A>(parameter)?);
    Ok(stream(elements::<T>(s)?.map(move |x| f(x, &a))))
}

fn filter_with_step<F, T, A>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
where
    F: Fn(&T, &A) -> bool + Copy + 'static,
    T: 'static,
    A: DeserializeOwned + 'static,
{
    let (f, a) = (conjure::<F>(), parameter_of::<A>(parameter)?);
    Ok(stream(elements::<T>(s)?.filter(move |x| f(x, &a))))
}

fn flat_map_with_step<F, T, A, I>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
where
    F: Fn(T, &A) -> I + Copy + 'static,
    T: 'static,
    A: DeserializeOwned + 'static,
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
{
    let (f, a) = (conjure::<F>(), parameter_of::<A>(parameter)?);
    Ok(stream(elements::<T>(s)?.flat_map(move |x| f(x, &a))))
}

fn flat_map_step<F, T, I>(s: Stream, _: &[u8]) -> TaskResult<Stream>
where
    F: Fn(T) -> I + Copy + 'static,
    T: 'static,
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
{
    Ok(stream(elements::<T>(s)?.flat_map(conjure::<F>())))
}

fn map_partitions_step<F, T, U>(s: Stream, _: &[u8]) -> TaskResult<Stream>
where
    F: Fn(Vec<T>) -> Vec<U> + Copy + 'static,
    T: 'static,
    U: 'static,
{
    let part: Vec<T> = elements::<T>(s)?.collect();
    Ok(stream(conjure::<F>()(part).into_iter()))
}

// Sinks.

fn collect_sink<T: Item>(s: Stream, _: &TaskInput<'_>) -> TaskResult<Vec<u8>> {
    encode_result(&elements::<T>(s)?.collect::<Vec<T>>())
}

/// A user's per-partition function of the whole list.
fn list_sink<P: Fn(Vec<T>) -> A + Copy + 'static, T: Item, A: Item>(
    s: Stream,
    _: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    encode_result(&conjure::<P>()(elements::<T>(s)?.collect()))
}

/// A built-in per-partition function that consumes the elements as they come.
fn streaming_sink<P: Fn(Elements<T>) -> A + Copy + 'static, T: Item, A: Item>(
    s: Stream,
    _: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    encode_result(&conjure::<P>()(elements::<T>(s)?))
}

fn topk_sink<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    s: Stream,
    input: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    let k: u64 = decoded(input)?;
    encode_result(&top_k::<K, T, O>(elements::<T>(s)?, k as usize))
}

/// The task that combines a list of partial results (a regular task, not a pipeline).
fn combine_task<C: Fn(Vec<A>) -> R + Copy + 'static, A: Item, R: Item>(
    input: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    let (parts,): (Vec<A>,) = decoded(input)?;
    encode_result(&conjure::<C>()(parts))
}

fn topk_combine_task<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    input: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    let (parts, k): (Vec<Vec<T>>, u64) = decoded(input)?;
    encode_result(&top_k::<K, T, O>(parts.into_iter().flatten(), k as usize))
}

/// The `k` largest elements by `K`'s key, largest first (ties keep the earlier element),
/// holding at most `2k` elements at a time.
fn top_k<K: Fn(&T) -> O + Copy + 'static, T, O: Ord>(
    items: impl Iterator<Item = T>,
    k: usize,
) -> Vec<T> {
    let key = conjure::<K>();
    let mut best: Vec<T> = Vec::new();
    if k == 0 {
        return best;
    }
    for x in items {
        best.push(x);
        if best.len() >= 2 * k {
            best.sort_by_key(|x| std::cmp::Reverse(key(x)));
            best.truncate(k);
        }
    }
    best.sort_by_key(|x| std::cmp::Reverse(key(x)));
    best.truncate(k);
    best
}

// ----- built-in per-partition and combine functions ---------------------------------------

fn count_of<T>(items: Elements<T>) -> u64 {
    items.count() as u64
}

fn sum_of<T: std::iter::Sum<T>>(items: Elements<T>) -> T {
    items.sum()
}

fn sum_list<T: std::iter::Sum<T>>(parts: Vec<T>) -> T {
    parts.into_iter().sum()
}

fn min_of<T: Ord>(items: Elements<T>) -> Option<T> {
    items.min()
}

fn max_of<T: Ord>(items: Elements<T>) -> Option<T> {
    items.max()
}

fn min_of_some<T: Ord>(parts: Vec<Option<T>>) -> Option<T> {
    parts.into_iter().flatten().min()
}

fn max_of_some<T: Ord>(parts: Vec<Option<T>>) -> Option<T> {
    parts.into_iter().flatten().max()
}

/// Count, sum and sum of squares, for `mean` and `std`.
fn moments_of<T: Into<f64>>(items: Elements<T>) -> (u64, f64, f64) {
    items.fold((0, 0.0, 0.0), |(n, s, q), x| {
        let x: f64 = x.into();
        (n + 1, s + x, q + x * x)
    })
}

fn add_moments(parts: Vec<(u64, f64, f64)>) -> (u64, f64, f64) {
    parts
        .into_iter()
        .fold((0, 0.0, 0.0), |(n, s, q), (m, t, r)| (n + m, s + t, q + r))
}

fn counts_of<T: Hash + Eq + Ord>(items: Elements<T>) -> Vec<(T, u64)> {
    let mut counts: FxHashMap<T, u64> = FxHashMap::default();
    for x in items {
        *counts.entry(x).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Merges per-partition counts; most frequent first, ties in the elements' order.
fn merge_counts<T: Hash + Eq + Ord>(parts: Vec<Vec<(T, u64)>>) -> Vec<(T, u64)> {
    let mut counts: FxHashMap<T, u64> = FxHashMap::default();
    for (x, n) in parts.into_iter().flatten() {
        *counts.entry(x).or_default() += n;
    }
    let mut counts: Vec<(T, u64)> = counts.into_iter().collect();
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

fn distinct_of<T: Ord>(items: Elements<T>) -> Vec<T> {
    sorted_distinct(items.collect())
}

fn sorted_distinct<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort_unstable();
    items.dedup();
    items
}

fn merge_distinct<T: Ord>(parts: Vec<Vec<T>>) -> Vec<T> {
    sorted_distinct(concat(parts))
}

fn concat<T>(parts: Vec<Vec<T>>) -> Vec<T> {
    parts.into_iter().flatten().collect()
}

// ----- building bags -----------------------------------------------------------------------

impl<T: Item> Bag<T> {
    fn with_origins(client: &Client, source: i64, origin_name: &str, origins: Vec<Origin>) -> Self {
        Bag {
            client: client.clone(),
            source,
            origins: Arc::new(origins),
            origin_name: origin_name.into(),
            steps: Arc::new(Vec::new()),
            _elements: PhantomData,
        }
    }

    /// A bag made of partitions computed elsewhere (e.g. by tasks or [`Client::scatter`]).
    pub fn from_futures(client: &Client, partitions: Vec<Future<Vec<T>>>) -> Bag<T> {
        let origins = partitions
            .into_iter()
            .map(|part| Origin {
                slot: ArgSlot::Future(part.key()),
                stored: Some(part.erase()),
            })
            .collect();
        Bag::with_origins(client, source_offset(stored_source::<T>), "", origins)
    }

    /// A bag of `items` cut into `npartitions` partitions of nearly equal length (some are
    /// empty when there are more partitions than items), each sent to a worker.
    pub fn from_sequence(client: &Client, items: Vec<T>, npartitions: usize) -> Result<Bag<T>> {
        let npartitions = npartitions.max(1);
        let (base, extra) = (items.len() / npartitions, items.len() % npartitions);
        let mut items = items.into_iter();
        let mut partitions = Vec::with_capacity(npartitions);
        for i in 0..npartitions {
            let part: Vec<T> = items.by_ref().take(base + usize::from(i < extra)).collect();
            partitions.push(client.scatter(part)?);
        }
        Ok(Bag::from_futures(client, partitions))
    }

    /// A bag whose partitions are the values of delayed calls (each call runs once, on a
    /// worker, with whatever it depends on).
    pub fn from_delayed(client: &Client, partitions: &[Delayed<Vec<T>>]) -> Bag<T> {
        let mut session = Session::new(client);
        let futures = partitions.iter().map(|d| session.submit(d)).collect();
        Bag::from_futures(client, futures)
    }

    /// Number of partitions.
    pub fn npartitions(&self) -> usize {
        self.origins.len()
    }

    /// The partitions as futures of lists: stored partitions as they are, otherwise one
    /// task per partition that runs the pipeline (submitted by every call).
    pub fn to_futures(&self) -> Vec<Future<Vec<T>>> {
        if self.steps.is_empty() && self.origins.iter().all(|o| o.stored.is_some()) {
            return self
                .origins
                .iter()
                .filter_map(|o| o.stored.clone().map(Future::retype))
                .collect();
        }
        self.run(collect_sink::<T>, "", |_| Vec::new(), &[])
    }

    /// The bag with one more step.
    fn then<U>(&self, step: StepFn, name: String) -> Bag<U> {
        self.then_with(step, Vec::new(), name)
    }

    /// The bag with one more step, which receives `parameter` (encoded).
    fn then_with<U>(&self, step: StepFn, parameter: Vec<u8>, name: String) -> Bag<U> {
        let mut steps = (*self.steps).clone();
        steps.push(Step {
            offset: step_offset(step),
            parameter,
            name,
        });
        Bag {
            client: self.client.clone(),
            source: self.source,
            origins: self.origins.clone(),
            origin_name: self.origin_name.clone(),
            steps: Arc::new(steps),
            _elements: PhantomData,
        }
    }

    /// One task per partition: the pipeline ending in `sink`, which also reads the slots
    /// `extra(i)` for partition `i` (kept alive by `keep`).
    fn run<R>(
        &self,
        sink: SinkFn,
        sink_name: &str,
        extra: impl Fn(usize) -> Vec<ArgSlot>,
        keep: &[Future<()>],
    ) -> Vec<Future<R>> {
        let plan = Plan {
            source: self.source,
            steps: self
                .steps
                .iter()
                .map(|s| (s.offset, s.parameter.clone()))
                .collect(),
            sink: sink_offset(sink),
        };
        let plan = encode_value(&plan).expect("a plan encodes");
        let name = std::iter::once(&*self.origin_name)
            .chain(self.steps.iter().map(|s| s.name.as_str()))
            .chain(std::iter::once(sink_name))
            .filter(|n| !n.is_empty())
            .collect::<Vec<&str>>()
            .join(" | ");
        let name = if name.is_empty() { "bag" } else { &name };
        self.origins
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                let mut args = vec![ArgSlot::Value(plan.clone()), origin.slot.clone()];
                args.extend(extra(i));
                let mut alive: KeepAlive = origin.stored.iter().cloned().collect();
                alive.extend_from_slice(keep);
                self.client
                    .submit_raw(offset_of(pipeline_task), name, args, alive)
                    .retype()
            })
            .collect()
    }

    /// One task over the list of `partials` (plus `extra` argument slots): the last step
    /// of a reduction.
    fn combine<A, R>(
        &self,
        partials: Vec<Future<A>>,
        offset: i64,
        name: &str,
        extra: &[ArgSlot],
    ) -> Future<R> {
        let keys = partials.iter().map(Future::key).collect();
        let keep: KeepAlive = partials.into_iter().map(Future::erase).collect();
        let mut args = vec![ArgSlot::Futures(keys)];
        args.extend_from_slice(extra);
        self.client.submit_raw(offset, name, args, keep).retype()
    }

    /// A built-in `per_partition` on the streamed elements of every partition.
    fn stream_each<P, A>(&self, name: &str, per_partition: P) -> Vec<Future<A>>
    where
        P: Fn(Elements<T>) -> A + Copy + 'static,
        A: Item,
    {
        let _ = per_partition;
        self.run(streaming_sink::<P, T, A>, name, |_| Vec::new(), &[])
    }

    /// [`stream_each`](Self::stream_each), then `combine` on the list of the results.
    fn stream_then<P, C, A, R>(&self, name: &str, per_partition: P, combine: C) -> Future<R>
    where
        P: Fn(Elements<T>) -> A + Copy + 'static,
        C: Fn(Vec<A>) -> R + Copy + 'static,
        A: Item,
        R: Item,
    {
        let _ = combine;
        let partials = self.stream_each(name, per_partition);
        self.combine(partials, offset_of(combine_task::<C, A, R>), name, &[])
    }

    // ----- element-wise steps (lazy) -----

    /// `f` applied to every element.
    pub fn map<F, U>(&self, f: F) -> Bag<U>
    where
        F: Fn(T) -> U + Copy + Send + Sync + 'static,
        U: Item,
    {
        let _ = f;
        self.then(map_step::<F, T, U>, format!("map-{}", function_name::<F>()))
    }

    /// The elements for which `f` is true.
    pub fn filter<F>(&self, f: F) -> Bag<T>
    where
        F: Fn(&T) -> bool + Copy + Send + Sync + 'static,
    {
        let _ = f;
        self.then(
            filter_step::<F, T>,
            format!("filter-{}", function_name::<F>()),
        )
    }

    /// The elements of `f(x)` for every element `x`, in order.
    pub fn flat_map<F, I>(&self, f: F) -> Bag<I::Item>
    where
        F: Fn(T) -> I + Copy + Send + Sync + 'static,
        I: IntoIterator + 'static,
        I::IntoIter: 'static,
        I::Item: Item,
    {
        let _ = f;
        self.then(
            flat_map_step::<F, T, I>,
            format!("flat_map-{}", function_name::<F>()),
        )
    }

    /// `f` applied to every whole partition.
    pub fn map_partitions<F, U>(&self, f: F) -> Bag<U>
    where
        F: Fn(Vec<T>) -> Vec<U> + Copy + Send + Sync + 'static,
        U: Item,
    {
        let _ = f;
        self.then(
            map_partitions_step::<F, T, U>,
            format!("map_partitions-{}", function_name::<F>()),
        )
    }

    /// `f(x, &parameter)` for every element `x`: `map` with a value the function needs
    /// (task functions capture nothing), sent once with every partition's task. Dask's
    /// `bag.map(f, parameter)`.
    pub fn map_with<F, A, U>(&self, f: F, parameter: &A) -> Result<Bag<U>>
    where
        F: Fn(T, &A) -> U + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        U: Item,
    {
        let _ = f;
        Ok(self.then_with(
            map_with_step::<F, T, A, U>,
            encode_parameter(parameter)?,
            format!("map-{}", function_name::<F>()),
        ))
    }

    /// The elements `x` for which `f(&x, &parameter)` is true.
    pub fn filter_with<F, A>(&self, f: F, parameter: &A) -> Result<Bag<T>>
    where
        F: Fn(&T, &A) -> bool + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        Ok(self.then_with(
            filter_with_step::<F, T, A>,
            encode_parameter(parameter)?,
            format!("filter-{}", function_name::<F>()),
        ))
    }

    /// The elements of `f(x, &parameter)` for every element `x`, in order.
    pub fn flat_map_with<F, A, I>(&self, f: F, parameter: &A) -> Result<Bag<I::Item>>
    where
        F: Fn(T, &A) -> I + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        I: IntoIterator + 'static,
        I::IntoIter: 'static,
        I::Item: Item,
    {
        let _ = f;
        Ok(self.then_with(
            flat_map_with_step::<F, T, A, I>,
            encode_parameter(parameter)?,
            format!("flat_map-{}", function_name::<F>()),
        ))
    }

    // ----- results -----

    /// `f` on every partition: one future per partition.
    pub fn apply_each<P, A>(&self, f: P) -> Vec<Future<A>>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        A: Item,
    {
        let _ = f;
        self.run(
            list_sink::<P, T, A>,
            &function_name::<P>(),
            |_| Vec::new(),
            &[],
        )
    }

    /// `per_partition` on every partition, then `combine` on the list of their results,
    /// where the two may have different types.
    pub fn partial_then<P, C, A, R>(&self, per_partition: P, combine: C) -> Future<R>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        C: Fn(Vec<A>) -> R + Copy + Send + Sync + 'static,
        A: Item,
        R: Item,
    {
        let _ = combine;
        let partials: Vec<Future<A>> = self.apply_each(per_partition);
        self.combine(
            partials,
            offset_of(combine_task::<C, A, R>),
            &function_name::<C>(),
            &[],
        )
    }

    /// `per_partition` on every partition, then `combine` on the list of their results:
    /// Dask's `reduction(perpartition, aggregate)`.
    pub fn reduction<P, C, A>(&self, per_partition: P, combine: C) -> Future<A>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        C: Fn(Vec<A>) -> A + Copy + Send + Sync + 'static,
        A: Item,
    {
        self.partial_then(per_partition, combine)
    }

    /// Like [`reduction`](Self::reduction) with one function for both steps (it must
    /// accept its own results): Dask's `fold` with a binary operator becomes a function of
    /// a list.
    pub fn fold<F>(&self, f: F) -> Future<T>
    where
        F: Fn(Vec<T>) -> T + Copy + Send + Sync + 'static,
    {
        self.reduction(f, f)
    }

    /// The `k` largest elements by `key`, largest first (ties keep the earlier element),
    /// as a bag of one partition.
    pub fn topk<K, O>(&self, k: usize, key: K) -> Bag<T>
    where
        K: Fn(&T) -> O + Copy + Send + Sync + 'static,
        O: Ord,
    {
        let _ = key;
        let k_slot = ArgSlot::Value(encode_value(&(k as u64)).expect("a u64 encodes"));
        let name = format!("topk-{}", function_name::<K>());
        let partials: Vec<Future<Vec<T>>> =
            self.run(topk_sink::<K, T, O>, &name, |_| vec![k_slot.clone()], &[]);
        let top = self.combine(
            partials,
            offset_of(topk_combine_task::<K, T, O>),
            &name,
            &[k_slot],
        );
        Bag::from_futures(&self.client, vec![top])
    }

    /// Number of elements.
    pub fn count(&self) -> Future<u64> {
        self.stream_then("count", count_of::<T>, sum_list::<u64>)
    }

    /// Every element, in order, on the client.
    pub fn compute(&self) -> Result<Vec<T>> {
        Ok(concat(self.client.gather(&self.to_futures())?))
    }

    /// The bag with its pipeline run once and its partitions kept on the workers (waits
    /// for them); results of the returned bag start from the stored partitions.
    pub fn persist(&self) -> Result<Bag<T>> {
        let partitions = self.to_futures();
        self.client.wait(&partitions)?;
        Ok(Bag::from_futures(&self.client, partitions))
    }
}

fn range_bounds(n: u64, npartitions: usize) -> Vec<(u64, u64)> {
    let parts = npartitions.max(1) as u64;
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + base + u64::from(i < extra);
            let bounds = (start, end);
            start = end;
            bounds
        })
        .collect()
}

impl Bag<u64> {
    /// The numbers `0..n` in `npartitions` partitions, each generated where it is used.
    pub fn range(client: &Client, n: u64, npartitions: usize) -> Bag<u64> {
        let origins = range_bounds(n, npartitions)
            .into_iter()
            .map(|bounds| Origin {
                slot: ArgSlot::Value(encode_value(&bounds).expect("numbers encode")),
                stored: None,
            })
            .collect();
        Bag::with_origins(client, source_offset(range_source), "range", origins)
    }
}

impl<T: Item + std::iter::Sum<T>> Bag<T> {
    /// The sum of the elements.
    pub fn sum(&self) -> Future<T> {
        self.stream_then("sum", sum_of::<T>, sum_list::<T>)
    }
}

impl<T: Item + Ord> Bag<T> {
    /// The smallest element (`None` for an empty bag).
    pub fn min(&self) -> Future<Option<T>> {
        self.stream_then("min", min_of::<T>, min_of_some::<T>)
    }

    /// The largest element (`None` for an empty bag).
    pub fn max(&self) -> Future<Option<T>> {
        self.stream_then("max", max_of::<T>, max_of_some::<T>)
    }

    /// The distinct elements, sorted, as a bag of one partition.
    pub fn distinct(&self) -> Bag<T> {
        let distinct = self.stream_then("distinct", distinct_of::<T>, merge_distinct::<T>);
        Bag::from_futures(&self.client, vec![distinct])
    }
}

impl<T: Item + Hash + Eq + Ord> Bag<T> {
    /// How often each distinct element occurs, most frequent first (ties in the elements'
    /// order), as a bag of one partition.
    pub fn frequencies(&self) -> Bag<(T, u64)> {
        let counts = self.stream_then("frequencies", counts_of::<T>, merge_counts::<T>);
        Bag::from_futures(&self.client, vec![counts])
    }
}

impl<T: Item + Into<f64>> Bag<T> {
    /// The mean of the elements (NaN for an empty bag).
    pub fn mean(&self) -> Result<f64> {
        let (n, sum, _) = self
            .stream_then("mean", moments_of::<T>, add_moments)
            .result()?;
        Ok(sum / n as f64)
    }

    /// The population standard deviation of the elements (NaN for an empty bag).
    pub fn std(&self) -> Result<f64> {
        let (n, sum, squares) = self
            .stream_then("std", moments_of::<T>, add_moments)
            .result()?;
        let n = n as f64;
        let mean = sum / n;
        Ok((squares / n - mean * mean).max(0.0).sqrt())
    }
}

// ----- bags and arrays ---------------------------------------------------------------------

fn chunk_sink<T: Item + Element>(s: Stream, _: &TaskInput<'_>) -> TaskResult<Vec<u8>> {
    let items: Vec<T> = elements::<T>(s)?.collect();
    let chunk = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[items.len()]), items)
        .map_err(|e| format!("could not make an array chunk: {e}"))?;
    encode_result(&chunk)
}

fn chunk_length<T: Element>(chunk: ndarray::ArrayD<T>) -> u64 {
    chunk.len() as u64
}

impl<T: Item + Element> Bag<T> {
    /// The elements as a 1-D [`Array`] with one chunk per non-empty partition (the chunks
    /// stay on the workers; this waits for the partitions to learn their lengths). Bags of
    /// other numbers `map` to `f64`, `f32`, `i64` or `bool` first.
    pub fn to_array(&self) -> Result<Array> {
        let chunks: Vec<Future<ndarray::ArrayD<T>>> =
            self.run(chunk_sink::<T>, "to_array", |_| Vec::new(), &[]);
        let lengths: Vec<Future<u64>> = chunks
            .iter()
            .map(|chunk| self.client.submit(chunk_length::<T>, chunk))
            .collect();
        let lengths = self.client.gather(&lengths)?;
        let mut kept = Vec::new();
        let mut sizes = Vec::new();
        for (chunk, len) in chunks.iter().zip(&lengths) {
            if *len > 0 {
                kept.push(chunk.clone());
                sizes.push(*len as usize);
            }
        }
        if kept.is_empty() {
            let empty = ndarray::ArrayD::<T>::from_shape_vec(ndarray::IxDyn(&[0]), Vec::new())
                .expect("an empty shape fits no elements");
            return Ok(crate::collections::array::from_array(&empty, &[1]));
        }
        Ok(crate::collections::array::from_chunk_futures(
            kept,
            vec![sizes],
        ))
    }
}

// ----- grouping, joining, repartitioning, files ---------------------------------------------

/// A hash that is the same on every rank (the standard library's is seeded per process).
fn stable_hash<K: Hash>(key: &K) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Sorts `(key, value)` pairs by key.
fn sorted_by_key<G: Ord, A>(map: FxHashMap<G, A>) -> Vec<(G, A)> {
    let mut pairs: Vec<(G, A)> = map.into_iter().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    pairs
}

fn foldby_sink<K, B, T, G, A>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Vec<u8>>
where
    K: Fn(&T) -> G + Copy + 'static,
    B: Fn(A, T) -> A + Copy + 'static,
    T: Item,
    G: Item + Hash + Eq + Ord,
    A: Item + Clone,
{
    let init: A = decoded(input)?;
    let (key, binop) = (conjure::<K>(), conjure::<B>());
    let mut acc: FxHashMap<G, A> = FxHashMap::default();
    for x in elements::<T>(s)? {
        let k = key(&x);
        let a = acc.remove(&k).unwrap_or_else(|| init.clone());
        acc.insert(k, binop(a, x));
    }
    encode_result(&sorted_by_key(acc))
}

fn foldby_combine_task<C, G, A>(input: &TaskInput<'_>) -> TaskResult<Vec<u8>>
where
    C: Fn(A, A) -> A + Copy + 'static,
    G: Item + Hash + Eq + Ord,
    A: Item,
{
    let (parts,): (Vec<Vec<(G, A)>>,) = decoded(input)?;
    let combine = conjure::<C>();
    let mut acc: FxHashMap<G, A> = FxHashMap::default();
    for (k, a) in parts.into_iter().flatten() {
        let merged = match acc.remove(&k) {
            Some(b) => combine(b, a),
            None => a,
        };
        acc.insert(k, merged);
    }
    encode_result(&sorted_by_key(acc))
}

/// Splits a partition into `n` buckets by the key's stable hash.
fn split_sink<K, T, G>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Vec<u8>>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item,
    G: Hash,
{
    let n: u64 = decoded(input)?;
    let key = conjure::<K>();
    let mut buckets: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for x in elements::<T>(s)? {
        let bucket = (stable_hash(&key(&x)) % n.max(1)) as usize;
        buckets[bucket].push(x);
    }
    encode_result(&buckets)
}

/// Bucket `j` of a split partition (runs where the split is, so only the bucket moves).
fn bucket_task<T: Item>(input: &TaskInput<'_>) -> TaskResult<Vec<u8>> {
    let (mut buckets, j): (Vec<Vec<T>>, u64) = decoded(input)?;
    let j = j as usize;
    if j >= buckets.len() {
        return Err(format!("bucket {j} of {}", buckets.len()));
    }
    encode_result(&buckets.swap_remove(j))
}

/// The groups of one output partition: every element with the same key, by key.
fn group_task<K, T, G>(input: &TaskInput<'_>) -> TaskResult<Vec<u8>>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item,
    G: Item + Hash + Eq + Ord,
{
    let (buckets,): (Vec<Vec<T>>,) = decoded(input)?;
    let key = conjure::<K>();
    let mut groups: FxHashMap<G, Vec<T>> = FxHashMap::default();
    for x in buckets.into_iter().flatten() {
        groups.entry(key(&x)).or_default().push(x);
    }
    encode_result(&sorted_by_key(groups))
}

fn join_sink<K, T, G, V>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Vec<u8>>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item + Clone,
    G: Item + Hash + Eq,
    V: Item + Clone,
{
    let other: Vec<(G, V)> = decoded(input)?;
    let key = conjure::<K>();
    let mut index: FxHashMap<G, Vec<V>> = FxHashMap::default();
    for (k, v) in other {
        index.entry(k).or_default().push(v);
    }
    let mut joined = Vec::new();
    for x in elements::<T>(s)? {
        if let Some(values) = index.get(&key(&x)) {
            for v in values {
                joined.push((x.clone(), v.clone()));
            }
        }
    }
    encode_result(&joined)
}

/// `take` elements after skipping `skip`, from the concatenation of some partitions.
fn slice_task<T: Item>(input: &TaskInput<'_>) -> TaskResult<Vec<u8>> {
    let (parts, (skip, take)): (Vec<Vec<T>>, (u64, u64)) = decoded(input)?;
    let slice: Vec<T> = parts
        .into_iter()
        .flatten()
        .skip(skip as usize)
        .take(take as usize)
        .collect();
    encode_result(&slice)
}

fn write_lines_sink<T: Item + std::fmt::Display>(
    s: Stream,
    input: &TaskInput<'_>,
) -> TaskResult<Vec<u8>> {
    use std::io::Write;
    let path: String = decoded(input)?;
    let file = std::fs::File::create(&path).map_err(|e| format!("cannot create {path}: {e}"))?;
    let mut out = std::io::BufWriter::new(file);
    for x in elements::<T>(s)? {
        writeln!(out, "{x}").map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    out.flush()
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    encode_result(&path)
}

/// The bytes of the lines that start in bytes `start..end` of `path` (a line crossing
/// `start` belongs to the block before, so the block runs on to the end of the line crossing
/// `end`); a `.gz` file is read whole.
fn read_block((path, start, end): (String, u64, u64)) -> TaskResult<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut bytes = Vec::new();
    if path.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {path} (gzip): {e}"))?;
        return Ok(bytes);
    }
    let cannot_read = |e: std::io::Error| format!("cannot read {path}: {e}");
    // From one byte early: whether it is a line end tells if `start` begins a line.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).map_err(cannot_read)?;
    bytes.reserve((end - from) as usize + 4096);
    (&mut file)
        .take(end - from)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    // Finish the line that crosses `end`.
    let mut tail = [0u8; 4096];
    while bytes.last().is_some_and(|b| *b != b'\n') {
        let n = file.read(&mut tail).map_err(cannot_read)?;
        if n == 0 {
            break;
        }
        match tail[..n].iter().position(|b| *b == b'\n') {
            Some(i) => bytes.extend_from_slice(&tail[..=i]),
            None => bytes.extend_from_slice(&tail[..n]),
        }
    }
    if start > 0 {
        // Drop the end of the line that began in the block before.
        let skip = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..skip);
    }
    Ok(bytes)
}

/// The lines of a block, without their line ends (`\n` or `\r\n`), as strings (invalid
/// UTF-8 replaced).
struct LinesOf {
    bytes: Vec<u8>,
    at: usize,
}

impl Iterator for LinesOf {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        self.at += len + 1;
        let line = rest[..len].strip_suffix(b"\r").unwrap_or(&rest[..len]);
        Some(String::from_utf8_lossy(line).into_owned())
    }
}

/// The files matching `pattern`: a path whose last component may hold `*` and `?`.
pub fn expand_glob(pattern: &str) -> Result<Vec<std::path::PathBuf>> {
    let path = std::path::Path::new(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| crate::Error::Config(format!("'{pattern}' names no file")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(crate::Error::Config(format!(
            "'{pattern}': only the file name may hold wildcards (* and ?)"
        )));
    }
    if !name.contains(['*', '?']) {
        return if path.is_file() {
            Ok(vec![path.to_path_buf()])
        } else {
            Err(crate::Error::Config(format!("no file {pattern}")))
        };
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| crate::Error::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(name, n))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(crate::Error::Config(format!("no file matches {pattern}")));
    }
    Ok(files)
}

/// `*` matches any run of characters, `?` any one.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

impl Bag<String> {
    /// The lines of the files matching `pattern` (wildcards in the file name), each file
    /// cut into blocks of about `blocksize` bytes read by the workers themselves (a line
    /// belongs to the block it starts in); `.gz` files are one partition each. Nothing is
    /// read until a result needs the lines.
    pub fn read_text(client: &Client, pattern: &str, blocksize: u64) -> Result<Bag<String>> {
        if blocksize == 0 {
            return Err(crate::Error::Config(
                "read_text: blocksize must be above 0".into(),
            ));
        }
        let mut blocks = Vec::new();
        for path in expand_glob(pattern)? {
            let len = std::fs::metadata(&path)
                .map_err(|e| crate::Error::Io {
                    path: path.display().to_string(),
                    source: e,
                })?
                .len();
            let name = path.display().to_string();
            if name.ends_with(".gz") || len == 0 {
                blocks.push((name, 0, len.max(1)));
                continue;
            }
            let mut start = 0;
            while start < len {
                let end = (start + blocksize).min(len);
                blocks.push((name.clone(), start, end));
                start = end;
            }
        }
        let origins = blocks
            .iter()
            .map(|block| Origin {
                slot: ArgSlot::Value(encode_value(block).expect("a block encodes")),
                stored: None,
            })
            .collect();
        Ok(Bag::with_origins(
            client,
            source_offset(text_source),
            "read_text",
            origins,
        ))
    }
}

impl<T: Item> Bag<T> {
    /// Dask's `foldby`: for each key, `binop` folds the elements with that key (starting
    /// from `init`) within each partition, and `combine` merges the partitions' results.
    /// Sorted by key.
    pub fn foldby<K, G, B, A, C>(
        &self,
        key: K,
        binop: B,
        init: A,
        combine: C,
    ) -> Future<Vec<(G, A)>>
    where
        K: Fn(&T) -> G + Copy + Send + Sync + 'static,
        G: Item + Hash + Eq + Ord,
        B: Fn(A, T) -> A + Copy + Send + Sync + 'static,
        A: Item + Clone,
        C: Fn(A, A) -> A + Copy + Send + Sync + 'static,
    {
        let _ = (key, binop, combine);
        let init = ArgSlot::Value(encode_value(&init).expect("the initial value encodes"));
        let partials: Vec<Future<Vec<(G, A)>>> = self.run(
            foldby_sink::<K, B, T, G, A>,
            &format!("foldby-{}", function_name::<B>()),
            |_| vec![init.clone()],
            &[],
        );
        self.combine(
            partials,
            offset_of(foldby_combine_task::<C, G, A>),
            &format!("foldby-{}", function_name::<C>()),
            &[],
        )
    }

    /// Groups the elements by `key` into `npartitions` partitions of `(key, elements)`,
    /// sorted by key within each: a shuffle between the workers (each partition is split
    /// by key hash where it is, and each group partition fetches only its buckets).
    pub fn groupby<K, G>(&self, key: K, npartitions: usize) -> Bag<(G, Vec<T>)>
    where
        K: Fn(&T) -> G + Copy + Send + Sync + 'static,
        G: Item + Hash + Eq + Ord,
    {
        let _ = key;
        let n = npartitions.max(1) as u64;
        let n_slot = ArgSlot::Value(encode_value(&n).expect("a u64 encodes"));
        let name = format!("groupby-{}", function_name::<K>());
        let splits: Vec<Future<Vec<Vec<T>>>> = self.run(
            split_sink::<K, T, G>,
            &format!("{name}-split"),
            |_| vec![n_slot.clone()],
            &[],
        );
        // buckets[i][j]: bucket j of split i.
        let buckets: Vec<Vec<Future<Vec<T>>>> = splits
            .iter()
            .map(|split| {
                (0..n)
                    .map(|j| {
                        let args = vec![
                            ArgSlot::Future(split.key()),
                            ArgSlot::Value(encode_value(&j).expect("a u64 encodes")),
                        ];
                        self.client
                            .submit_raw(
                                offset_of(bucket_task::<T>),
                                &format!("{name}-bucket"),
                                args,
                                vec![split.clone().erase()],
                            )
                            .retype()
                    })
                    .collect()
            })
            .collect();
        let partitions = (0..n as usize)
            .map(|j| {
                let column: Vec<Future<Vec<T>>> =
                    buckets.iter().map(|row| row[j].clone()).collect();
                self.combine(column, offset_of(group_task::<K, T, G>), &name, &[])
            })
            .collect();
        Bag::from_futures(&self.client, partitions)
    }

    /// Pairs `(x, v)` for every element `x` and every `(k, v)` of `other` with
    /// `k == key(x)` (an inner join with a small sequence, which goes to every worker once,
    /// by broadcast).
    pub fn join<K, G, V>(&self, other: Vec<(G, V)>, key: K) -> Result<Bag<(T, V)>>
    where
        K: Fn(&T) -> G + Copy + Send + Sync + 'static,
        T: Clone,
        G: Item + Hash + Eq,
        V: Item + Clone,
    {
        let _ = key;
        let other = self.client.scatter_broadcast(other)?;
        let partitions = self.run(
            join_sink::<K, T, G, V>,
            &format!("join-{}", function_name::<K>()),
            |_| vec![ArgSlot::Future(other.key())],
            &[other.clone().erase()],
        );
        Ok(Bag::from_futures(&self.client, partitions))
    }

    /// The same elements in `npartitions` partitions of nearly equal length (runs the
    /// pipeline and waits for the partitions' lengths; each new partition reads only the
    /// old ones it overlaps).
    pub fn repartition(&self, npartitions: usize) -> Result<Bag<T>> {
        let parts = self.to_futures();
        let stored = Bag::from_futures(&self.client, parts.clone());
        let lengths: Vec<u64> = self
            .client
            .gather(&stored.stream_each("length", count_of::<T>))?;
        let total: u64 = lengths.iter().sum();
        let n = npartitions.max(1) as u64;
        let (base, extra) = (total / n, total % n);
        let mut starts = Vec::with_capacity(lengths.len());
        let mut offset = 0;
        for len in &lengths {
            starts.push(offset);
            offset += len;
        }
        let mut begin = 0;
        let mut partitions = Vec::with_capacity(n as usize);
        for i in 0..n {
            let take = base + u64::from(i < extra);
            let end = begin + take;
            let overlapping: Vec<usize> = (0..lengths.len())
                .filter(|&p| lengths[p] > 0 && starts[p] < end && starts[p] + lengths[p] > begin)
                .collect();
            let skip = overlapping.first().map_or(0, |&p| begin - starts[p]);
            let keys = overlapping.iter().map(|&p| parts[p].key()).collect();
            let keep: KeepAlive = overlapping
                .iter()
                .map(|&p| parts[p].clone().erase())
                .collect();
            let args = vec![
                ArgSlot::Futures(keys),
                ArgSlot::Value(encode_value(&(skip, take)).expect("numbers encode")),
            ];
            partitions.push(
                self.client
                    .submit_raw(offset_of(slice_task::<T>), "repartition", args, keep)
                    .retype(),
            );
            begin = end;
        }
        Ok(Bag::from_futures(&self.client, partitions))
    }
}

impl<T: Item + std::fmt::Display> Bag<T> {
    /// Writes partition `i` as lines of text to `pattern` with `*` replaced by `i`, on the
    /// worker that computes it; returns the paths once all are written.
    pub fn to_textfiles(&self, pattern: &str) -> Result<Vec<String>> {
        if !pattern.contains('*') {
            return Err(crate::Error::Config(format!(
                "to_textfiles: the pattern '{pattern}' needs a '*' for the partition number"
            )));
        }
        let written: Vec<Future<String>> = self.run(
            write_lines_sink::<T>,
            "to_textfiles",
            |i| {
                let path = pattern.replace('*', &i.to_string());
                vec![ArgSlot::Value(encode_value(&path).expect("a path encodes"))]
            },
            &[],
        );
        self.client.gather(&written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeArgs;
    use std::collections::HashMap;

    /// Runs `program` in local mode with three workers.
    fn on_three_workers(program: impl FnOnce(&Client) + Send) {
        crate::run_local(
            RuntimeArgs {
                local_workers: 3,
                ..RuntimeArgs::default()
            },
            program,
        );
    }

    fn square(x: u64) -> u64 {
        x * x
    }
    fn is_odd(x: &u64) -> bool {
        x % 2 == 1
    }
    fn digits(x: u64) -> Vec<u64> {
        x.to_string().bytes().map(|b| u64::from(b - b'0')).collect()
    }
    fn reversed(mut part: Vec<u64>) -> Vec<u64> {
        part.reverse();
        part
    }
    fn ones(x: u64) -> u64 {
        x % 10
    }
    fn sum_list(part: Vec<u64>) -> u64 {
        part.into_iter().sum()
    }
    fn last_digit(x: &u64) -> u64 {
        x % 10
    }
    fn identity(x: &u64) -> u64 {
        *x
    }

    /// Every operation against the same on a plain `Vec`, for several partitionings
    /// (including empty partitions and more partitions than items).
    #[test]
    fn operations_match_a_sequential_vec() {
        on_three_workers(|client| {
            for (n, parts) in [(0u64, 3usize), (1, 4), (10, 3), (57, 5), (7, 20)] {
                let items: Vec<u64> = (0..n).map(|i| (i * 7919) % 101).collect();
                let bag = Bag::from_sequence(client, items.clone(), parts).unwrap();
                let case = format!("{n} items in {parts} partitions");
                assert_eq!(bag.npartitions(), parts, "{case}");
                assert_eq!(bag.compute().unwrap(), items, "{case}");
                let squares: Vec<u64> = items.iter().map(|x| x * x).collect();
                assert_eq!(bag.map(square).compute().unwrap(), squares, "{case}");
                let odd: Vec<u64> = items.iter().copied().filter(|x| x % 2 == 1).collect();
                assert_eq!(bag.filter(is_odd).compute().unwrap(), odd, "{case}");
                let flat: Vec<u64> = items.iter().flat_map(|x| digits(*x)).collect();
                assert_eq!(bag.flat_map(digits).compute().unwrap(), flat, "{case}");
                // from_sequence's partitions: the first `n % parts` one longer.
                let mut expected_reversed: Vec<u64> = Vec::new();
                let mut rest = items.as_slice();
                for i in 0..parts {
                    let len = items.len() / parts + usize::from(i < items.len() % parts);
                    let (part, tail) = rest.split_at(len);
                    expected_reversed.extend(part.iter().rev());
                    rest = tail;
                }
                assert_eq!(
                    bag.map_partitions(reversed).compute().unwrap(),
                    expected_reversed,
                    "{case}"
                );
                assert_eq!(bag.count().result().unwrap(), n, "{case}");
                assert_eq!(
                    bag.sum().result().unwrap(),
                    items.iter().sum::<u64>(),
                    "{case}"
                );
                assert_eq!(
                    bag.fold(sum_list).result().unwrap(),
                    items.iter().sum::<u64>()
                );
                assert_eq!(bag.min().result().unwrap(), items.iter().min().copied());
                assert_eq!(bag.max().result().unwrap(), items.iter().max().copied());
                let mut distinct = items.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(bag.distinct().compute().unwrap(), distinct, "{case}");
                let mut counts: HashMap<u64, u64> = HashMap::new();
                for x in items.iter().map(|x| x % 10) {
                    *counts.entry(x).or_default() += 1;
                }
                let mut expected: Vec<(u64, u64)> = counts.into_iter().collect();
                expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                assert_eq!(
                    bag.map(ones).frequencies().compute().unwrap(),
                    expected,
                    "{case}"
                );
                let mut top = items.clone();
                top.sort_by(|a, b| b.cmp(a));
                top.truncate(3);
                assert_eq!(bag.topk(3, identity).compute().unwrap(), top, "{case}");
                let by_digit = bag.topk(2, last_digit).compute().unwrap();
                assert!(by_digit.len() == 2.min(items.len()), "{case}");
                if n > 0 {
                    let xs: Vec<f64> = items.iter().map(|x| *x as f64).collect();
                    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
                    let bag_f: Bag<f64> = Bag::from_sequence(client, xs, parts).unwrap();
                    assert!((bag_f.mean().unwrap() - mean).abs() < 1e-9, "{case}");
                    assert!((bag_f.std().unwrap() - var.sqrt()).abs() < 1e-9, "{case}");
                }
            }
        });
    }

    fn tens(x: &u64) -> u64 {
        x / 10
    }
    fn skewed(x: &u64) -> u64 {
        if x.is_multiple_of(10) { x % 7 } else { 0 }
    }
    fn add(a: u64, x: u64) -> u64 {
        a + x
    }
    fn plus(a: u64, b: u64) -> u64 {
        a + b
    }
    fn mod3(x: &u64) -> u64 {
        x % 3
    }

    #[test]
    fn grouping_joining_and_repartitioning_match_a_sequential_vec() {
        on_three_workers(|client| {
            for (n, parts) in [(0u64, 3usize), (5, 8), (200, 6)] {
                let items: Vec<u64> = (0..n).collect();
                let bag = Bag::from_sequence(client, items.clone(), parts).unwrap();
                let case = format!("{n} items in {parts} partitions");
                // foldby: sums by tens.
                let mut sums: std::collections::BTreeMap<u64, u64> = Default::default();
                for x in &items {
                    *sums.entry(x / 10).or_default() += x;
                }
                let expected: Vec<(u64, u64)> = sums.into_iter().collect();
                assert_eq!(
                    bag.foldby(tens, add, 0, plus).result().unwrap(),
                    expected,
                    "{case}"
                );
                // groupby with skewed keys: most elements share key 0.
                for out_parts in [1, 4] {
                    let groups = bag.groupby(skewed, out_parts).compute().unwrap();
                    let mut seen: Vec<u64> = groups.iter().flat_map(|(_, xs)| xs.clone()).collect();
                    seen.sort_unstable();
                    assert_eq!(seen, items, "{case}: every element once");
                    let mut keys: Vec<u64> = groups.iter().map(|(k, _)| *k).collect();
                    keys.sort_unstable();
                    let before = keys.len();
                    keys.dedup();
                    assert_eq!(keys.len(), before, "{case}: each key in one group");
                    for (k, xs) in &groups {
                        assert!(xs.iter().all(|x| skewed(x) == *k), "{case}");
                    }
                }
                // join with a small sequence.
                let other: Vec<(u64, String)> = [(0u64, "zero"), (1, "one"), (1, "uno")]
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string()))
                    .collect();
                let mut joined = bag.join(other.clone(), mod3).unwrap().compute().unwrap();
                let mut expected: Vec<(u64, String)> = items
                    .iter()
                    .flat_map(|&x| {
                        other
                            .iter()
                            .filter(move |(k, _)| *k == x % 3)
                            .map(move |(_, v)| (x, v.clone()))
                    })
                    .collect();
                joined.sort();
                expected.sort();
                assert_eq!(joined, expected, "{case}");
                // repartition keeps the order.
                for target in [1, 4, 11] {
                    let re = bag.repartition(target).unwrap();
                    assert_eq!(re.npartitions(), target);
                    assert_eq!(re.compute().unwrap(), items, "{case} into {target}");
                }
            }
        });
    }

    #[test]
    fn text_files_round_trip_in_blocks() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("mpidask-bag-text-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pattern = dir.join("part-*.txt").display().to_string();
        crate::run_local(RuntimeArgs::default(), |client| {
            let words: Vec<String> = (0..500)
                .map(|i| format!("line {i} {}", "x".repeat(i % 13)))
                .collect();
            let bag = Bag::from_sequence(client, words.clone(), 4).unwrap();
            let paths = bag.to_textfiles(&pattern).unwrap();
            assert_eq!(paths.len(), 4);
            // Tiny blocks: lines cross block boundaries everywhere.
            for blocksize in [7, 100, 1 << 20] {
                let back = Bag::read_text(client, &pattern, blocksize).unwrap();
                assert_eq!(back.compute().unwrap(), words, "blocksize {blocksize}");
            }
            // A gzip file is one partition.
            let gz = dir.join("more.txt.gz");
            let mut encoder = flate2::write::GzEncoder::new(
                std::fs::File::create(&gz).unwrap(),
                flate2::Compression::fast(),
            );
            encoder.write_all(b"a\nb\nc\n").unwrap();
            encoder.finish().unwrap();
            let gz_bag = Bag::read_text(client, &gz.display().to_string(), 1).unwrap();
            assert_eq!(gz_bag.npartitions(), 1);
            assert_eq!(gz_bag.compute().unwrap(), vec!["a", "b", "c"]);
            // Windows line ends, an empty line, no line end at the end of the file.
            let odd = dir.join("odd.txt");
            std::fs::write(&odd, b"a\r\n\nbb\nccc").unwrap();
            for blocksize in 1..=12 {
                let lines = Bag::read_text(client, &odd.display().to_string(), blocksize)
                    .unwrap()
                    .compute()
                    .unwrap();
                assert_eq!(lines, vec!["a", "", "bb", "ccc"], "blocksize {blocksize}");
            }
            let missing = Bag::read_text(client, &dir.join("none-*.txt").display().to_string(), 10);
            assert!(
                missing
                    .err()
                    .unwrap()
                    .to_string()
                    .contains("no file matches")
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("part-*.txt", "part-12.txt"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("part-*.txt", "part-1.txt.gz"));
        assert!(!wildcard_match("a?c", "ac"));
    }

    fn to_f64(x: u64) -> f64 {
        x as f64
    }
    fn to_i64(x: u64) -> i64 {
        x as i64
    }
    fn part_of_range((start, end): (u64, u64)) -> Vec<u64> {
        (start..end).collect()
    }
    fn words(x: u64) -> Vec<String> {
        vec![format!("w{}", x % 4); (x % 3) as usize]
    }
    fn not_w0(w: &String) -> bool {
        w != "w0"
    }
    fn doubled(part: Vec<String>) -> Vec<String> {
        part.iter().chain(part.iter()).cloned().collect()
    }

    #[test]
    fn bags_become_arrays_with_one_chunk_per_non_empty_partition() {
        on_three_workers(|client| {
            for (n, parts) in [(0u64, 3usize), (3, 5), (57, 5)] {
                let case = format!("{n} items in {parts} partitions");
                let xs: Vec<f64> = (0..n).map(|i| ((i * 7919) % 101) as f64).collect();
                let bag = Bag::from_sequence(client, xs.clone(), parts).unwrap();
                let array = bag.to_array().unwrap();
                assert_eq!(array.shape(), &[n as usize], "{case}");
                assert!(
                    array.chunks()[0].iter().all(|c| *c > 0) || n == 0,
                    "{case}: {:?}",
                    array.chunks()
                );
                let back: ndarray::ArrayD<f64> = array.compute(client).unwrap();
                assert_eq!(back.iter().copied().collect::<Vec<f64>>(), xs, "{case}");
                let doubled_sum: f64 = (&array * 2.0).sum().compute_scalar(client).unwrap();
                assert_eq!(doubled_sum, 2.0 * xs.iter().sum::<f64>(), "{case}");
            }
            // Integers, from a lazy pipeline, mixed with a regular array of the same length.
            let ints = Bag::range(client, 10, 4).map(to_i64).to_array().unwrap();
            let total: i64 = ints.sum().compute_scalar(client).unwrap();
            assert_eq!(total, 45);
            let floats = Bag::range(client, 10, 4).map(to_f64).to_array().unwrap();
            let shifted = &floats + &crate::collections::array::arange(0.0, 10.0, 1.0, 3);
            let sum: f64 = shifted.sum().compute_scalar(client).unwrap();
            assert_eq!(sum, 90.0);
        });
    }

    #[test]
    fn bags_from_delayed_calls() {
        crate::run_local(RuntimeArgs::default(), |client| {
            let parts: Vec<crate::collections::delayed::Delayed<Vec<u64>>> =
                [(0u64, 4u64), (4, 4), (4, 10)]
                    .into_iter()
                    .map(|bounds| crate::collections::delayed::delayed(part_of_range, bounds))
                    .collect();
            let bag = Bag::from_delayed(client, &parts);
            assert_eq!(bag.npartitions(), 3);
            assert_eq!(bag.compute().unwrap(), (0..10).collect::<Vec<u64>>());
            assert_eq!(
                bag.map(square).sum().result().unwrap(),
                (0..10u64).map(square).sum::<u64>()
            );
        });
    }

    /// Element-wise steps are fused: a chain of them and a reduction submit one task per
    /// partition plus the combine, and give what the same chain gives on a `Vec`.
    #[test]
    fn element_wise_steps_run_in_one_task_per_partition() {
        crate::run_local(RuntimeArgs::default(), |client| {
            let items: Vec<u64> = (0..100).collect();
            let bag = Bag::from_sequence(client, items.clone(), 6).unwrap();
            let chain = bag
                .filter(is_odd)
                .map(square)
                .flat_map(words)
                .filter(not_w0)
                .map_partitions(doubled);
            let before = client.job_progress().unwrap().submitted;
            let counts = chain.frequencies().compute().unwrap();
            let submitted = client.job_progress().unwrap().submitted - before;
            assert_eq!(
                submitted,
                6 + 1,
                "one task per partition and one to combine"
            );
            let mut expected: HashMap<String, u64> = HashMap::new();
            for w in items
                .iter()
                .filter(|x| is_odd(x))
                .map(|x| square(*x))
                .flat_map(words)
                .filter(not_w0)
            {
                *expected.entry(w).or_default() += 2;
            }
            assert_eq!(counts.into_iter().collect::<HashMap<_, _>>(), expected);
            // Nothing was submitted for the lazy chain itself.
            let before = client.job_progress().unwrap().submitted;
            let _lazy = chain.map(ones_of_word);
            assert_eq!(client.job_progress().unwrap().submitted, before);
        });
    }

    fn plus_offset(x: u64, offset: &u64) -> u64 {
        x + offset
    }
    fn is_in(x: &u64, set: &std::collections::BTreeSet<u64>) -> bool {
        set.contains(x)
    }
    fn repeated(x: u64, times: &usize) -> Vec<u64> {
        vec![x; *times]
    }

    /// Steps with a parameter (task functions capture nothing) give what the same closures
    /// give on a `Vec`, and stay fused.
    #[test]
    fn steps_with_a_parameter_match_a_sequential_vec() {
        on_three_workers(|client| {
            let items: Vec<u64> = (0..50).collect();
            let wanted: std::collections::BTreeSet<u64> = [3, 7, 10, 11, 49].into();
            let bag = Bag::from_sequence(client, items.clone(), 4).unwrap();
            let before = client.job_progress().unwrap().submitted;
            let got = bag
                .filter_with(is_in, &wanted)
                .unwrap()
                .map_with(plus_offset, &100)
                .unwrap()
                .flat_map_with(repeated, &2)
                .unwrap()
                .compute()
                .unwrap();
            assert_eq!(client.job_progress().unwrap().submitted - before, 4);
            let expected: Vec<u64> = items
                .iter()
                .filter(|x| wanted.contains(x))
                .map(|x| x + 100)
                .flat_map(|x| [x, x])
                .collect();
            assert_eq!(got, expected);
        });
    }

    fn ones_of_word(w: String) -> usize {
        w.len()
    }

    #[test]
    fn range_and_persist() {
        crate::run_local(RuntimeArgs::default(), |client| {
            let bag = Bag::range(client, 100, 7).persist().unwrap();
            assert_eq!(bag.compute().unwrap(), (0..100).collect::<Vec<u64>>());
            assert_eq!(
                bag.map(square).sum().result().unwrap(),
                (0..100u64).map(square).sum::<u64>()
            );
            assert_eq!(Bag::range(client, 0, 2).count().result().unwrap(), 0);
        });
    }
}
