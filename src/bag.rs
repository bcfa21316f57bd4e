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
        self.combine(
            partials,
            offset_of(topk_combine_task::<K, T, O>),
            &name,
            &[k_slot],
        )
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
    /// `f` on every partition: one future per partition.
    pub fn apply_each<P, A>(&self, f: P) -> Vec<Future<A>>
    where
        P: Fn(Vec<T>) -> A + Copy + Send + Sync + 'static,
        A: Item,
    {
        let _ = f;
        self.per_partition::<()>(
            offset_of(reduce_task::<P, T, A>),
            &function_name::<P>(),
            &[],
        )
        .into_iter()
        .map(Future::retype)
        .collect()
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
            offset_of(reduce_task::<C, A, R>),
            &function_name::<C>(),
            &[],
        )
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

// ----- grouping, joining, repartitioning, files ---------------------------------------------

/// A hash that is the same on every rank (the standard library's is seeded per process).
fn stable_hash<K: Hash>(key: &K) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

fn foldby_task<K, B, T, G, A>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    K: Fn(&T) -> G + Copy + 'static,
    B: Fn(A, T) -> A + Copy + 'static,
    T: Item,
    G: Item + Hash + Eq + Ord,
    A: Item + Clone,
{
    let (part, init): (Vec<T>, A) = decoded(input)?;
    let (key, binop) = (conjure::<K>(), conjure::<B>());
    let mut acc: HashMap<G, A> = HashMap::new();
    for x in part {
        let k = key(&x);
        let a = acc.remove(&k).unwrap_or_else(|| init.clone());
        acc.insert(k, binop(a, x));
    }
    let mut acc: Vec<(G, A)> = acc.into_iter().collect();
    acc.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    encode_result(&acc)
}

fn foldby_combine_task<C, G, A>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    C: Fn(A, A) -> A + Copy + 'static,
    G: Item + Hash + Eq + Ord,
    A: Item,
{
    let (parts,): (Vec<Vec<(G, A)>>,) = decoded(input)?;
    let combine = conjure::<C>();
    let mut acc: HashMap<G, A> = HashMap::new();
    for (k, a) in parts.into_iter().flatten() {
        let merged = match acc.remove(&k) {
            Some(b) => combine(b, a),
            None => a,
        };
        acc.insert(k, merged);
    }
    let mut acc: Vec<(G, A)> = acc.into_iter().collect();
    acc.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    encode_result(&acc)
}

/// Splits a partition into `n` buckets by the key's stable hash.
fn split_task<K, T, G>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item,
    G: Hash,
{
    let (part, n): (Vec<T>, u64) = decoded(input)?;
    let key = conjure::<K>();
    let mut buckets: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for x in part {
        let bucket = (stable_hash(&key(&x)) % n.max(1)) as usize;
        buckets[bucket].push(x);
    }
    encode_result(&buckets)
}

/// Bucket `j` of a split partition (runs where the split is, so only the bucket moves).
fn bucket_task<T: Item>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String> {
    let (mut buckets, j): (Vec<Vec<T>>, u64) = decoded(input)?;
    let j = j as usize;
    if j >= buckets.len() {
        return Err(format!("bucket {j} of {}", buckets.len()));
    }
    encode_result(&buckets.swap_remove(j))
}

/// The groups of one output partition: every element with the same key, by key.
fn group_task<K, T, G>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item,
    G: Item + Hash + Eq + Ord,
{
    let (buckets,): (Vec<Vec<T>>,) = decoded(input)?;
    let key = conjure::<K>();
    let mut groups: HashMap<G, Vec<T>> = HashMap::new();
    for x in buckets.into_iter().flatten() {
        groups.entry(key(&x)).or_default().push(x);
    }
    let mut groups: Vec<(G, Vec<T>)> = groups.into_iter().collect();
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    encode_result(&groups)
}

fn join_task<K, T, G, V>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String>
where
    K: Fn(&T) -> G + Copy + 'static,
    T: Item + Clone,
    G: Item + Hash + Eq,
    V: Item + Clone,
{
    let (part, other): (Vec<T>, Vec<(G, V)>) = decoded(input)?;
    let key = conjure::<K>();
    let mut index: HashMap<G, Vec<V>> = HashMap::new();
    for (k, v) in other {
        index.entry(k).or_default().push(v);
    }
    let mut joined = Vec::new();
    for x in part {
        if let Some(values) = index.get(&key(&x)) {
            for v in values {
                joined.push((x.clone(), v.clone()));
            }
        }
    }
    encode_result(&joined)
}

/// `take` elements after skipping `skip`, from the concatenation of some partitions.
fn slice_task<T: Item>(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, String> {
    let (parts, (skip, take)): (Vec<Vec<T>>, (u64, u64)) = decoded(input)?;
    let slice: Vec<T> = parts
        .into_iter()
        .flatten()
        .skip(skip as usize)
        .take(take as usize)
        .collect();
    encode_result(&slice)
}

fn write_lines_task<T: Item + std::fmt::Display>(
    input: &TaskInput<'_>,
) -> std::result::Result<Vec<u8>, String> {
    use std::io::Write;
    let (part, path): (Vec<T>, String) = decoded(input)?;
    let file = std::fs::File::create(&path).map_err(|e| format!("cannot create {path}: {e}"))?;
    let mut out = std::io::BufWriter::new(file);
    for x in &part {
        writeln!(out, "{x}").map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    out.flush()
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    encode_result(&path)
}

/// The lines that start in bytes `start..end` of `path` (a line crossing `start` belongs to
/// the block before), without their line ends; a `.gz` file is read whole.
fn read_block((path, start, end): (String, u64, u64)) -> std::result::Result<Vec<String>, String> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let open = || std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"));
    if path.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(open()?)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {path} (gzip): {e}"))?;
        return Ok(text.lines().map(str::to_string).collect());
    }
    let mut file = std::io::BufReader::with_capacity(1 << 20, open()?);
    let mut position = start;
    if start > 0 {
        // Skip the end of the line that began in the previous block.
        file.seek(SeekFrom::Start(start - 1))
            .map_err(|e| format!("cannot seek in {path}: {e}"))?;
        let mut skipped = Vec::new();
        let n = file
            .read_until(b'\n', &mut skipped)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        position = start - 1 + n as u64;
    }
    let mut lines = Vec::new();
    let mut line = Vec::new();
    while position < end {
        line.clear();
        let n = file
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        if n == 0 {
            break;
        }
        position += n as u64;
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
    }
    Ok(lines)
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
    /// belongs to the block it starts in); `.gz` files are one partition each.
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
        Ok(Bag {
            client: client.clone(),
            partitions: client.try_map(read_block, blocks),
        })
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
        let name = format!("foldby-{}", function_name::<B>());
        let partials: Vec<Future<Vec<(G, A)>>> = self.per_partition(
            offset_of(foldby_task::<K, B, T, G, A>),
            &name,
            std::slice::from_ref(&init),
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
        let splits: Vec<Future<Vec<Vec<T>>>> = self.per_partition(
            offset_of(split_task::<K, T, G>),
            &format!("{name}-split"),
            std::slice::from_ref(&n_slot),
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
        self.with_partitions(partitions)
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
        let name = format!("join-{}", function_name::<K>());
        let partitions = self
            .partitions
            .iter()
            .map(|part| {
                let args = vec![ArgSlot::Future(part.key()), ArgSlot::Future(other.key())];
                let keep: KeepAlive = vec![part.clone().erase(), other.clone().erase()];
                self.client
                    .submit_raw(offset_of(join_task::<K, T, G, V>), &name, args, keep)
                    .retype()
            })
            .collect();
        Ok(self.with_partitions(partitions))
    }

    /// The same elements in `npartitions` partitions of nearly equal length (waits for the
    /// partitions' lengths; each new partition reads only the old ones it overlaps).
    pub fn repartition(&self, npartitions: usize) -> Result<Bag<T>> {
        let lengths: Vec<u64> = self.client.gather(&self.apply_each(count_of::<T>))?;
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
            let keys = overlapping
                .iter()
                .map(|&p| self.partitions[p].key())
                .collect();
            let keep: KeepAlive = overlapping
                .iter()
                .map(|&p| self.partitions[p].clone().erase())
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
        Ok(self.with_partitions(partitions))
    }
}

impl<T: Item + std::fmt::Display> Bag<T> {
    /// Writes partition `i` as lines of text to `pattern` with `*` replaced by `i`, on the
    /// worker holding it; returns the paths once all are written.
    pub fn to_textfiles(&self, pattern: &str) -> Result<Vec<String>> {
        if !pattern.contains('*') {
            return Err(crate::Error::Config(format!(
                "to_textfiles: the pattern '{pattern}' needs a '*' for the partition number"
            )));
        }
        let written: Vec<Future<String>> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let path = pattern.replace('*', &i.to_string());
                let args = vec![
                    ArgSlot::Future(part.key()),
                    ArgSlot::Value(encode_value(&path).expect("a path encodes")),
                ];
                self.client
                    .submit_raw(
                        offset_of(write_lines_task::<T>),
                        "to_textfiles",
                        args,
                        vec![part.clone().erase()],
                    )
                    .retype()
            })
            .collect();
        self.client.gather(&written)
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
        let args = RuntimeArgs {
            local_workers: 3,
            ..RuntimeArgs::default()
        };
        crate::run_local(args, |client| {
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
