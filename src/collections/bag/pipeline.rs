//! A bag's per-partition pipeline: the one task every partition runs. It reads the
//! partition's origin (a stored list, `range` bounds, a block of a file) with a *source*,
//! streams the elements through every element-wise *step* as boxed iterators, and ends in
//! the result's *sink* (collect, count, counts by key, split by key hash, write lines, ...).
//! Nothing between steps is encoded or stored.
//!
//! The functions are type-erased ([`SourceFn`], [`StepFn`], [`SinkFn`]) and travel as the
//! task's registered *uses*, in order `[source, steps..., sink]`; the task's first argument
//! holds the steps' encoded parameters.

use super::{Bag, Item};
use crate::client::{CallArg, Future};
use crate::protocol::Bytes;
use crate::protocol::{ArgSlot, decode_value, encode_value};
use crate::task::{CallError, TaskInput, conjure, decode_args};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;

pub(super) type TaskResult<T> = std::result::Result<T, CallError>;

/// A partition's elements flowing through a pipeline inside one task.
pub(super) type Elements<T> = Box<dyn Iterator<Item = T>>;

/// [`Elements`] of some element type, so that steps of different types chain.
pub(super) type Stream = Box<dyn Any>;

/// Starts a pipeline from its origin's argument (a stored partition, a block of a file, ...).
pub(super) type SourceFn = fn(&TaskInput<'_>) -> TaskResult<Stream>;
/// One element-wise step, given its encoded parameter.
pub(super) type StepFn = fn(Stream, &[u8]) -> TaskResult<Stream>;
/// Ends a pipeline with the task's result, given the arguments that follow the origin's.
pub(super) type SinkFn = fn(Stream, &TaskInput<'_>) -> TaskResult<Bytes>;

crate::task::fn_pointer!(SourceFn, StepFn, SinkFn);

/// One element-wise step: its function, its encoded parameter (empty for steps without
/// one) and its name (for task names).
#[derive(Clone)]
pub(super) struct Step {
    pub(super) func: StepFn,
    pub(super) parameter: Vec<u8>,
    pub(super) name: String,
}

/// Where one partition's elements come from: the source function's one argument.
#[derive(Clone)]
pub(super) struct Origin {
    pub(super) slot: CallArg,
}

impl Origin {
    /// The stored partition the origin names, if it names one.
    pub(super) fn stored(&self) -> Option<&Future<()>> {
        match &self.slot {
            CallArg::Future(future) => Some(future),
            _ => None,
        }
    }

    /// An origin that is an encoded value (bounds, a block of a file).
    pub(super) fn value<V: Serialize>(value: &V) -> Origin {
        Origin {
            slot: CallArg::Value(encode_value(value).expect("an origin encodes")),
        }
    }
}

/// The task of every pipeline: arguments `[step parameters, origin, sink arguments...]`,
/// uses `[source, steps..., sink]`.
pub(super) fn pipeline_task(input: &TaskInput<'_>) -> TaskResult<Bytes> {
    let [ArgSlot::Value(parameters), origin, ..] = input.args else {
        return Err(CallError::Corrupt(
            "a bag task needs its step parameters and its partition's origin".into(),
        ));
    };
    let parameters: Vec<Vec<u8>> = decode_value(parameters)
        .map_err(|e| CallError::Corrupt(format!("could not decode a bag plan: {e}")))?;
    if input.uses.len() != parameters.len() + 2 {
        return Err(CallError::Corrupt(format!(
            "a bag task with {} step parameters uses {} functions, not {}",
            parameters.len(),
            input.uses.len(),
            parameters.len() + 2
        )));
    }
    let origin_deps = origin.dependencies().len();
    if input.deps.len() < origin_deps {
        return Err("a bag task is missing its partition".into());
    }
    let (origin_values, sink_values) = input.deps.split_at(origin_deps);
    let source: SourceFn = input.used(0)?;
    let mut stream = source(&input.part(1..2, origin_values))?;
    for (i, parameter) in parameters.iter().enumerate() {
        let step: StepFn = input.used(1 + i)?;
        stream = step(stream, parameter)?;
    }
    let sink: SinkFn = input.used(1 + parameters.len())?;
    sink(stream, &input.part(2..input.args.len(), sink_values))
}

impl<T: Item> Bag<T> {
    /// The bag with one more step, which receives `parameter` (encoded).
    pub(super) fn then_with<U>(&self, func: StepFn, parameter: Vec<u8>, name: String) -> Bag<U> {
        let mut steps = (*self.steps).clone();
        steps.push(Step {
            func,
            parameter,
            name,
        });
        Bag {
            client: self.client.clone(),
            source: self.source,
            origins: self.origins.clone(),
            origin_name: self.origin_name.clone(),
            steps: std::sync::Arc::new(steps),
            _elements: std::marker::PhantomData,
        }
    }

    /// The bag with one more step without a parameter.
    pub(super) fn then<U>(&self, func: StepFn, name: String) -> Bag<U> {
        self.then_with(func, Vec::new(), name)
    }

    /// One task per partition: the pipeline ending in `sink`, which also reads the
    /// arguments `extra(i)` for partition `i`.
    pub(super) fn run<R>(
        &self,
        sink: SinkFn,
        sink_name: &str,
        extra: impl Fn(usize) -> Vec<CallArg>,
    ) -> Vec<Future<R>> {
        let client = &self.client;
        let mut uses =
            vec![client.register(self.source, || format!("{} source", self.origin_name))];
        uses.extend(
            self.steps
                .iter()
                .map(|s| client.register(s.func, || s.name.clone())),
        );
        uses.push(client.register(sink, || sink_name.to_string()));
        let parameters: Vec<&[u8]> = self.steps.iter().map(|s| s.parameter.as_slice()).collect();
        let parameters = encode_value(&parameters).expect("step parameters encode");
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
                let mut args = vec![CallArg::Value(parameters.clone()), origin.slot.clone()];
                args.extend(extra(i));
                client.submit_raw(pipeline_task, name, &uses, args).retype()
            })
            .collect()
    }
}

/// A stream of `items`.
pub(super) fn stream<T: 'static>(items: impl Iterator<Item = T> + 'static) -> Stream {
    Box::new(Box::new(items) as Elements<T>)
}

/// The elements of `stream`, which must be of type `T`.
pub(super) fn elements<T: 'static>(stream: Stream) -> TaskResult<Elements<T>> {
    stream
        .downcast::<Elements<T>>()
        .map(|items| *items)
        .map_err(|_| {
            CallError::Corrupt(format!(
                "a bag step expected elements of type {}: the pipeline is corrupted",
                std::any::type_name::<T>()
            ))
        })
}

/// Encodes a step's parameter on the client.
pub(super) fn encode_parameter<A: Serialize>(parameter: &A) -> crate::Result<Vec<u8>> {
    encode_value(parameter).map_err(|e| {
        crate::Error::encode(
            format!("a bag step's parameter ({})", std::any::type_name::<A>()),
            e,
        )
    })
}

/// Decodes a task's arguments as a bag partition's.
pub(super) fn decoded<Args: DeserializeOwned + 'static>(input: &TaskInput<'_>) -> TaskResult<Args> {
    decode_args(input)
        .map_err(|e| CallError::Failed(format!("could not decode a bag partition: {e}")))
}

fn parameter_of<A: DeserializeOwned>(parameter: &[u8]) -> TaskResult<A> {
    decode_value(parameter)
        .map_err(|e| CallError::Failed(format!("could not decode a bag step's parameter: {e}")))
}

// Sources.

pub(super) fn stored_source<T: Item>(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let part: Vec<T> = decoded(input)?;
    Ok(stream(part.into_iter()))
}

pub(super) fn range_source(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let (start, end): (u64, u64) = decoded(input)?;
    Ok(stream(start..end))
}

// Steps.

pub(super) fn map_step<F: Fn(T) -> U + Copy + 'static, T: 'static, U: 'static>(
    s: Stream,
    _: &[u8],
) -> TaskResult<Stream> {
    Ok(stream(elements::<T>(s)?.map(conjure::<F>())))
}

pub(super) fn filter_step<F: Fn(&T) -> bool + Copy + 'static, T: 'static>(
    s: Stream,
    _: &[u8],
) -> TaskResult<Stream> {
    let f = conjure::<F>();
    Ok(stream(elements::<T>(s)?.filter(move |x| f(x))))
}

pub(super) fn map_with_step<F, T, A, U>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
where
    F: Fn(T, &A) -> U + Copy + 'static,
    T: 'static,
    A: DeserializeOwned + 'static,
    U: 'static,
{
    let (f, a) = (conjure::<F>(), parameter_of::<A>(parameter)?);
    Ok(stream(elements::<T>(s)?.map(move |x| f(x, &a))))
}

pub(super) fn filter_with_step<F, T, A>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
where
    F: Fn(&T, &A) -> bool + Copy + 'static,
    T: 'static,
    A: DeserializeOwned + 'static,
{
    let (f, a) = (conjure::<F>(), parameter_of::<A>(parameter)?);
    Ok(stream(elements::<T>(s)?.filter(move |x| f(x, &a))))
}

pub(super) fn flat_map_with_step<F, T, A, I>(s: Stream, parameter: &[u8]) -> TaskResult<Stream>
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

pub(super) fn flat_map_step<F, T, I>(s: Stream, _: &[u8]) -> TaskResult<Stream>
where
    F: Fn(T) -> I + Copy + 'static,
    T: 'static,
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
{
    Ok(stream(elements::<T>(s)?.flat_map(conjure::<F>())))
}

pub(super) fn map_partitions_step<F, T, U>(s: Stream, _: &[u8]) -> TaskResult<Stream>
where
    F: Fn(Vec<T>) -> Vec<U> + Copy + 'static,
    T: 'static,
    U: 'static,
{
    let part: Vec<T> = elements::<T>(s)?.collect();
    Ok(stream(conjure::<F>()(part).into_iter()))
}

// Sinks.

pub(super) fn collect_sink<T: Item>(s: Stream, _: &TaskInput<'_>) -> TaskResult<Bytes> {
    crate::task::encode_result(&elements::<T>(s)?.collect::<Vec<T>>())
}

/// A user's per-partition function of the whole list.
pub(super) fn list_sink<P: Fn(Vec<T>) -> A + Copy + 'static, T: Item, A: Item>(
    s: Stream,
    _: &TaskInput<'_>,
) -> TaskResult<Bytes> {
    crate::task::encode_result(&conjure::<P>()(elements::<T>(s)?.collect()))
}

/// A built-in per-partition function that consumes the elements as they come.
pub(super) fn streaming_sink<P: Fn(Elements<T>) -> A + Copy + 'static, T: Item, A: Item>(
    s: Stream,
    _: &TaskInput<'_>,
) -> TaskResult<Bytes> {
    crate::task::encode_result(&conjure::<P>()(elements::<T>(s)?))
}
