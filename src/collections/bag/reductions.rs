//! Reductions of a bag: a per-partition function at the end of every partition's pipeline,
//! then one task that combines the partitions' results (Dask's
//! `reduction(perpartition, aggregate)`), and the built-in ones (count, sum, min, max,
//! mean, std, frequencies, distinct, topk).

use super::pipeline::{Elements, TaskResult, decoded, list_sink, streaming_sink};
use super::{Bag, Item};
use crate::client::{CallArg, Future};
use crate::protocol::Bytes;
use crate::task::{TaskInput, Trampoline, conjure, encode_result, function_name};
use rustc_hash::FxHashMap;
use std::hash::Hash;

/// The task that combines a list of partial results.
fn combine_task<C: Fn(Vec<A>) -> R + Copy + 'static, A: Item, R: Item>(
    input: &TaskInput<'_>,
) -> TaskResult<Bytes> {
    let (parts,): (Vec<A>,) = decoded(input)?;
    encode_result(&conjure::<C>()(parts))
}

fn topk_sink<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    s: super::pipeline::Stream,
    input: &TaskInput<'_>,
) -> TaskResult<Bytes> {
    let k: u64 = decoded(input)?;
    encode_result(&top_k::<K, T, O>(
        super::pipeline::elements::<T>(s)?,
        k as usize,
    ))
}

fn topk_combine_task<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    input: &TaskInput<'_>,
) -> TaskResult<Bytes> {
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

pub(super) fn count_of<T>(items: Elements<T>) -> u64 {
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
    sorted_distinct(parts.into_iter().flatten().collect())
}

impl<T: Item> Bag<T> {
    /// One task over the list of `partials` (plus `extra` arguments): the last step of a
    /// reduction.
    pub(super) fn combine<A, R>(
        &self,
        partials: Vec<Future<A>>,
        task: Trampoline,
        name: &str,
        extra: Vec<CallArg>,
    ) -> Future<R> {
        let mut args = vec![CallArg::Futures(
            partials.into_iter().map(Future::erase).collect(),
        )];
        args.extend(extra);
        self.client.submit_raw(task, name, &[], args).retype()
    }

    /// A built-in `per_partition` on the streamed elements of every partition.
    pub(super) fn stream_each<P, A>(&self, name: &str, per_partition: P) -> Vec<Future<A>>
    where
        P: Fn(Elements<T>) -> A + Copy + 'static,
        A: Item,
    {
        let _ = per_partition;
        self.run(streaming_sink::<P, T, A>, name, |_| Vec::new())
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
        self.combine(partials, combine_task::<C, A, R>, name, Vec::new())
    }

    /// `f` on every partition: one future per partition.
    pub fn apply_each<P, A>(&self, f: P) -> Vec<Future<A>>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        A: Item,
    {
        let _ = f;
        self.run(list_sink::<P, T, A>, &function_name::<P>(), |_| Vec::new())
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
            combine_task::<C, A, R>,
            &function_name::<C>(),
            Vec::new(),
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
        let k_arg =
            CallArg::Value(crate::protocol::encode_value(&(k as u64)).expect("a u64 encodes"));
        let name = format!("topk-{}", function_name::<K>());
        let partials: Vec<Future<Vec<T>>> =
            self.run(topk_sink::<K, T, O>, &name, |_| vec![k_arg.clone()]);
        let top = self.combine(partials, topk_combine_task::<K, T, O>, &name, vec![k_arg]);
        Bag::from_futures(&self.client, vec![top])
    }

    /// Number of elements.
    pub fn count(&self) -> Future<u64> {
        self.stream_then("count", count_of::<T>, sum_list::<u64>)
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
    pub fn mean(&self) -> crate::Result<f64> {
        let (n, sum, _) = self
            .stream_then("mean", moments_of::<T>, add_moments)
            .result()?;
        Ok(sum / n as f64)
    }

    /// The population standard deviation of the elements (NaN for an empty bag).
    pub fn std(&self) -> crate::Result<f64> {
        let (n, sum, squares) = self
            .stream_then("std", moments_of::<T>, add_moments)
            .result()?;
        let n = n as f64;
        let mean = sum / n;
        Ok((squares / n - mean * mean).max(0.0).sqrt())
    }
}
