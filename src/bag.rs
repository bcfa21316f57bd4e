//! Bags: dask.bag's parallel lists. A [`Bag<T>`] is a list of any serde type cut into
//! partitions that live on the workers; operations run plain Rust functions over every
//! partition as tasks, and reductions combine the partitions' results in one more task.
//!
//! Each operation submits its tasks at once (they wait for the partitions they read), so a
//! chain of operations is a task graph the scheduler runs as partitions become ready.
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
use crate::error::Result;
use crate::protocol::{ArgSlot, encode_value};
use crate::task::{KeepAlive, TaskInput, conjure, decode_args, function_name, offset_of};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::hash::Hash;

/// What a bag's element may be.
pub trait Item: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Item for T {}

/// A partitioned list of `T` on the workers.
pub struct Bag<T> {
    client: Client,
    partitions: Vec<Future<Vec<T>>>,
}

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Self {
        Bag {
            client: self.client.clone(),
            partitions: self.partitions.clone(),
        }
    }
}

fn encode_result<R: Serialize>(value: &R) -> std::result::Result<Vec<u8>, String> {
    encode_value(value).map_err(|e| format!("could not encode the result: {e}"))
}

fn decoded<Args: DeserializeOwned>(input: &TaskInput<'_>) -> std::result::Result<Args, String> {
    decode_args(input).map_err(|e| format!("could not decode a bag partition: {e}"))
}

// ----- trampolines: the tasks bag operations submit ---------------------------------------

fn map_task<F: Fn(T) -> U + Copy + 'static, T: Item, U: Item>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (part,): (Vec<T>,) = decoded(input)?;
    let f = conjure::<F>();
    encode_result(&part.into_iter().map(f).collect::<Vec<U>>())
}

fn filter_task<F: Fn(&T) -> bool + Copy + 'static, T: Item>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (mut part,): (Vec<T>,) = decoded(input)?;
    let f = conjure::<F>();
    part.retain(|x| f(x));
    encode_result(&part)
}

fn flat_map_task<F, T, I>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    F: Fn(T) -> I + Copy + 'static,
    T: Item,
    I: IntoIterator,
    I::Item: Item,
{
    let (part,): (Vec<T>,) = decoded(input)?;
    let f = conjure::<F>();
    encode_result(&part.into_iter().flat_map(f).collect::<Vec<I::Item>>())
}

fn map_partitions_task<F: Fn(Vec<T>) -> Vec<U> + Copy + 'static, T: Item, U: Item>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (part,): (Vec<T>,) = decoded(input)?;
    encode_result(&conjure::<F>()(part))
}

fn reduce_task<F: Fn(Vec<T>) -> A + Copy + 'static, T: Item, A: Item>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (part,): (Vec<T>,) = decoded(input)?;
    encode_result(&conjure::<F>()(part))
}

/// The `k` largest elements by `K`'s key, largest first (ties keep the earlier element).
fn top_k<K: Fn(&T) -> O + Copy + 'static, T, O: Ord>(mut items: Vec<T>, k: usize) -> Vec<T> {
    let key = conjure::<K>();
    items.sort_by_key(|x| std::cmp::Reverse(key(x)));
    items.truncate(k);
    items
}

fn topk_task<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (part, k): (Vec<T>, u64) = decoded(input)?;
    encode_result(&top_k::<K, T, O>(part, k as usize))
}

fn topk_combine_task<K: Fn(&T) -> O + Copy + 'static, T: Item, O: Ord>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    let (parts, k): (Vec<Vec<T>>, u64) = decoded(input)?;
    encode_result(&top_k::<K, T, O>(concat(parts), k as usize))
}

// ----- built-in per-partition and combine functions ---------------------------------------

fn count_of<T>(part: Vec<T>) -> u64 {
    part.len() as u64
}

fn sum_of<T: std::iter::Sum<T>>(part: Vec<T>) -> T {
    part.into_iter().sum()
}

fn min_of<T: Ord>(part: Vec<T>) -> Option<T> {
    part.into_iter().min()
}

fn max_of<T: Ord>(part: Vec<T>) -> Option<T> {
    part.into_iter().max()
}

fn min_of_some<T: Ord>(parts: Vec<Option<T>>) -> Option<T> {
    parts.into_iter().flatten().min()
}

fn max_of_some<T: Ord>(parts: Vec<Option<T>>) -> Option<T> {
    parts.into_iter().flatten().max()
}

/// Count, sum and sum of squares, for `mean` and `std`.
fn moments_of<T: Into<f64>>(part: Vec<T>) -> (u64, f64, f64) {
    part.into_iter().fold((0, 0.0, 0.0), |(n, s, q), x| {
        let x: f64 = x.into();
        (n + 1, s + x, q + x * x)
    })
}

fn add_moments(parts: Vec<(u64, f64, f64)>) -> (u64, f64, f64) {
    parts
        .into_iter()
        .fold((0, 0.0, 0.0), |(n, s, q), (m, t, r)| (n + m, s + t, q + r))
}

fn counts_of<T: Hash + Eq + Ord>(part: Vec<T>) -> Vec<(T, u64)> {
    let mut counts: HashMap<T, u64> = HashMap::new();
    for x in part {
        *counts.entry(x).or_default() += 1;
    }
    let mut counts: Vec<(T, u64)> = counts.into_iter().collect();
    counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    counts
}

/// Merges per-partition counts; most frequent first, ties in the elements' order.
fn merge_counts<T: Hash + Eq + Ord>(parts: Vec<Vec<(T, u64)>>) -> Vec<(T, u64)> {
    let mut counts: HashMap<T, u64> = HashMap::new();
    for (x, n) in parts.into_iter().flatten() {
        *counts.entry(x).or_default() += n;
    }
    let mut counts: Vec<(T, u64)> = counts.into_iter().collect();
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

fn distinct_of<T: Ord>(mut part: Vec<T>) -> Vec<T> {
    part.sort_unstable();
    part.dedup();
    part
}

fn merge_distinct<T: Ord>(parts: Vec<Vec<T>>) -> Vec<T> {
    distinct_of(parts.into_iter().flatten().collect())
}

fn concat<T>(parts: Vec<Vec<T>>) -> Vec<T> {
    parts.into_iter().flatten().collect()
}

impl<T: Item> Bag<T> {
    fn with_partitions<U>(&self, partitions: Vec<Future<Vec<U>>>) -> Bag<U> {
        Bag {
            client: self.client.clone(),
            partitions,
        }
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
        Ok(Bag {
            client: client.clone(),
            partitions,
        })
    }

    /// A bag made of partitions computed elsewhere (e.g. by delayed calls or tasks).
    pub fn from_futures(client: &Client, partitions: Vec<Future<Vec<T>>>) -> Bag<T> {
        Bag {
            client: client.clone(),
            partitions,
        }
    }

    /// The partitions' futures.
    pub fn partitions(&self) -> &[Future<Vec<T>>] {
        &self.partitions
    }

    /// Number of partitions.
    pub fn npartitions(&self) -> usize {
        self.partitions.len()
    }

    /// One task per partition calling `trampoline` on it (plus `extra` argument slots).
    fn per_partition<U>(&self, offset: i64, name: &str, extra: &[ArgSlot]) -> Vec<Future<Vec<U>>> {
        self.partitions
            .iter()
            .map(|part| {
                let mut args = vec![ArgSlot::Future(part.key())];
                args.extend_from_slice(extra);
                let keep: KeepAlive = vec![part.clone().erase()];
                self.client.submit_raw(offset, name, args, keep).retype()
            })
            .collect()
    }

    /// `f` applied to every element.
    pub fn map<F, U>(&self, f: F) -> Bag<U>
    where
        F: Fn(T) -> U + Copy + Send + Sync + 'static,
        U: Item,
    {
        let _ = f;
        let name = format!("map-{}", function_name::<F>());
        let offset = offset_of(map_task::<F, T, U>);
        self.with_partitions(self.per_partition(offset, &name, &[]))
    }

    /// The elements for which `f` is true.
    pub fn filter<F>(&self, f: F) -> Bag<T>
    where
        F: Fn(&T) -> bool + Copy + Send + Sync + 'static,
    {
        let _ = f;
        let name = format!("filter-{}", function_name::<F>());
        let offset = offset_of(filter_task::<F, T>);
        self.with_partitions(self.per_partition(offset, &name, &[]))
    }

    /// The elements of `f(x)` for every element `x`, in order.
    pub fn flat_map<F, I>(&self, f: F) -> Bag<I::Item>
    where
        F: Fn(T) -> I + Copy + Send + Sync + 'static,
        I: IntoIterator,
        I::Item: Item,
    {
        let _ = f;
        let name = format!("flat_map-{}", function_name::<F>());
        let offset = offset_of(flat_map_task::<F, T, I>);
        self.with_partitions(self.per_partition(offset, &name, &[]))
    }

    /// `f` applied to every whole partition.
    pub fn map_partitions<F, U>(&self, f: F) -> Bag<U>
    where
        F: Fn(Vec<T>) -> Vec<U> + Copy + Send + Sync + 'static,
        U: Item,
    {
        let _ = f;
        let name = format!("map_partitions-{}", function_name::<F>());
        let offset = offset_of(map_partitions_task::<F, T, U>);
        self.with_partitions(self.per_partition(offset, &name, &[]))
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

    /// The `k` largest elements by `key`, largest first.
    pub fn topk<K, O>(&self, k: usize, key: K) -> Future<Vec<T>>
    where
        K: Fn(&T) -> O + Copy + Send + Sync + 'static,
        O: Ord,
    {
        let _ = key;
        let k_slot = ArgSlot::Value(encode_value(&(k as u64)).expect("a u64 encodes"));
        let name = format!("topk-{}", function_name::<K>());
        let partials: Vec<Future<Vec<T>>> = self.per_partition(
            offset_of(topk_task::<K, T, O>),
            &name,
            std::slice::from_ref(&k_slot),
        );
        let keys = partials.iter().map(Future::key).collect();
        let keep: KeepAlive = partials.into_iter().map(Future::erase).collect();
        self.client
            .submit_raw(
                offset_of(topk_combine_task::<K, T, O>),
                &name,
                vec![ArgSlot::Futures(keys), k_slot],
                keep,
            )
            .retype()
    }

    /// Number of elements.
    pub fn count(&self) -> Future<u64> {
        self.partial_then(count_of::<T>, sum_of::<u64>)
    }

    /// Every element, in order, on the client.
    pub fn compute(&self) -> Result<Vec<T>> {
        Ok(concat(self.client.gather(&self.partitions)?))
    }

    /// The bag with its partitions computed and kept on the workers (its partitions are
    /// already tasks on their way; this waits for them).
    pub fn persist(&self) -> Result<Bag<T>> {
        self.client.wait(&self.partitions)?;
        Ok(self.clone())
    }
}

fn range_part((start, end): (u64, u64)) -> Vec<u64> {
    (start..end).collect()
}

impl Bag<u64> {
    /// The numbers `0..n` in `npartitions` partitions, each made on a worker.
    pub fn range(client: &Client, n: u64, npartitions: usize) -> Bag<u64> {
        let parts = npartitions.max(1) as u64;
        let (base, extra) = (n / parts, n % parts);
        let mut start = 0;
        let bounds: Vec<(u64, u64)> = (0..parts)
            .map(|i| {
                let end = start + base + u64::from(i < extra);
                let bounds = (start, end);
                start = end;
                bounds
            })
            .collect();
        Bag {
            client: client.clone(),
            partitions: client.map(range_part, bounds),
        }
    }
}

impl<T: Item + std::iter::Sum<T>> Bag<T> {
    /// The sum of the elements.
    pub fn sum(&self) -> Future<T> {
        self.reduction(sum_of::<T>, sum_of::<T>)
    }
}

impl<T: Item + Ord> Bag<T> {
    /// The smallest element (`None` for an empty bag).
    pub fn min(&self) -> Future<Option<T>> {
        self.partial_then(min_of::<T>, min_of_some::<T>)
    }

    /// The largest element (`None` for an empty bag).
    pub fn max(&self) -> Future<Option<T>> {
        self.partial_then(max_of::<T>, max_of_some::<T>)
    }

    /// The distinct elements, sorted.
    pub fn distinct(&self) -> Future<Vec<T>> {
        self.partial_then(distinct_of::<T>, merge_distinct::<T>)
    }
}

impl<T: Item> Bag<T> {
    /// `per_partition` on every partition, then `combine` on the list of their results,
    /// where the two may have different types.
    pub fn partial_then<P, C, A, R>(&self, per_partition: P, combine: C) -> Future<R>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        C: Fn(Vec<A>) -> R + Copy + Send + Sync + 'static,
        A: Item,
        R: Item,
    {
        let _ = (per_partition, combine);
        let partials: Vec<Future<A>> = self
            .per_partition::<()>(
                offset_of(reduce_task::<P, T, A>),
                &function_name::<P>(),
                &[],
            )
            .into_iter()
            .map(Future::retype)
            .collect();
        let keys = partials.iter().map(Future::key).collect();
        let keep: KeepAlive = partials.into_iter().map(Future::erase).collect();
        self.client
            .submit_raw(
                offset_of(reduce_task::<C, A, R>),
                &function_name::<C>(),
                vec![ArgSlot::Futures(keys)],
                keep,
            )
            .retype()
    }
}

impl<T: Item + Hash + Eq + Ord> Bag<T> {
    /// How often each distinct element occurs, most frequent first (ties in the elements'
    /// order).
    pub fn frequencies(&self) -> Future<Vec<(T, u64)>> {
        self.partial_then(counts_of::<T>, merge_counts::<T>)
    }
}

impl<T: Item + Into<f64>> Bag<T> {
    /// The mean of the elements (NaN for an empty bag).
    pub fn mean(&self) -> Result<f64> {
        let (n, sum, _) = self.partial_then(moments_of::<T>, add_moments).result()?;
        Ok(sum / n as f64)
    }

    /// The population standard deviation of the elements (NaN for an empty bag).
    pub fn std(&self) -> Result<f64> {
        let (n, sum, squares) = self.partial_then(moments_of::<T>, add_moments).result()?;
        let n = n as f64;
        let mean = sum / n;
        Ok((squares / n - mean * mean).max(0.0).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeArgs;

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
        let args = RuntimeArgs {
            local_workers: 3,
            ..RuntimeArgs::default()
        };
        crate::run_local(args, |client| {
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
                let per_part_reversed = bag.map_partitions(reversed).compute().unwrap();
                assert_eq!(per_part_reversed.len(), items.len(), "{case}");
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
                assert_eq!(bag.distinct().result().unwrap(), distinct, "{case}");
                let mut counts: HashMap<u64, u64> = HashMap::new();
                for x in items.iter().map(|x| x % 10) {
                    *counts.entry(x).or_default() += 1;
                }
                let mut expected: Vec<(u64, u64)> = counts.into_iter().collect();
                expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                assert_eq!(
                    bag.map(ones).frequencies().result().unwrap(),
                    expected,
                    "{case}"
                );
                let mut top = items.clone();
                top.sort_by(|a, b| b.cmp(a));
                top.truncate(3);
                assert_eq!(bag.topk(3, identity).result().unwrap(), top, "{case}");
                let by_digit = bag.topk(2, last_digit).result().unwrap();
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
