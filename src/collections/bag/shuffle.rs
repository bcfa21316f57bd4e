//! Moving a bag's elements between partitions: `foldby` (a reduction by key), `groupby` (a
//! shuffle: every partition split by key hash where it is, each output partition fetching
//! only its buckets), `join` with a small sequence (sent to every worker by broadcast) and
//! `repartition`.

use super::pipeline::{Stream, TaskResult, decoded, elements};
use super::reductions::count_of;
use super::{Bag, Item};
use crate::client::{CallArg, Future};
use crate::error::Result;
use crate::protocol::Bytes;
use crate::protocol::encode_value;
use crate::task::{TaskInput, conjure, encode_result, function_name};
use rustc_hash::FxHashMap;
use std::hash::Hash;

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

fn value_arg<V: serde::Serialize>(value: &V) -> CallArg {
    CallArg::Value(encode_value(value).expect("bag task arguments encode"))
}

fn foldby_sink<K, B, T, G, A>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Bytes>
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

fn foldby_combine_task<C, G, A>(input: &TaskInput<'_>) -> TaskResult<Bytes>
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
fn split_sink<K, T, G>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Bytes>
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
fn bucket_task<T: Item>(input: &TaskInput<'_>) -> TaskResult<Bytes> {
    let (mut buckets, j): (Vec<Vec<T>>, u64) = decoded(input)?;
    let j = j as usize;
    if j >= buckets.len() {
        return Err(format!("bucket {j} of {}", buckets.len()).into());
    }
    encode_result(&buckets.swap_remove(j))
}

/// The groups of one output partition: every element with the same key, by key.
fn group_task<K, T, G>(input: &TaskInput<'_>) -> TaskResult<Bytes>
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

fn join_sink<K, T, G, V>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Bytes>
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
fn slice_task<T: Item>(input: &TaskInput<'_>) -> TaskResult<Bytes> {
    let (parts, (skip, take)): (Vec<Vec<T>>, (u64, u64)) = decoded(input)?;
    let slice: Vec<T> = parts
        .into_iter()
        .flatten()
        .skip(skip as usize)
        .take(take as usize)
        .collect();
    encode_result(&slice)
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
        let init = value_arg(&init);
        let partials: Vec<Future<Vec<(G, A)>>> = self.run(
            foldby_sink::<K, B, T, G, A>,
            &format!("foldby-{}", function_name::<B>()),
            |_| vec![init.clone()],
        );
        self.combine(
            partials,
            foldby_combine_task::<C, G, A>,
            &format!("foldby-{}", function_name::<C>()),
            Vec::new(),
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
        let n_arg = value_arg(&n);
        let name = format!("groupby-{}", function_name::<K>());
        let splits: Vec<Future<Vec<Vec<T>>>> =
            self.run(split_sink::<K, T, G>, &format!("{name}-split"), |_| {
                vec![n_arg.clone()]
            });
        // buckets[i][j]: bucket j of split i.
        let buckets: Vec<Vec<Future<Vec<T>>>> = splits
            .iter()
            .map(|split| {
                (0..n)
                    .map(|j| {
                        let args = vec![CallArg::Future(split.clone().erase()), value_arg(&j)];
                        self.client
                            .submit_raw(bucket_task::<T>, &format!("{name}-bucket"), &[], args)
                            .retype()
                    })
                    .collect()
            })
            .collect();
        let partitions = (0..n as usize)
            .map(|j| {
                let column: Vec<Future<Vec<T>>> =
                    buckets.iter().map(|row| row[j].clone()).collect();
                self.combine(column, group_task::<K, T, G>, &name, Vec::new())
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
        let other = self.client.scatter_broadcast(other)?.erase();
        let partitions = self.run(
            join_sink::<K, T, G, V>,
            &format!("join-{}", function_name::<K>()),
            |_| vec![CallArg::Future(other.clone())],
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
            let args = vec![
                CallArg::Futures(
                    overlapping
                        .iter()
                        .map(|&p| parts[p].clone().erase())
                        .collect(),
                ),
                value_arg(&(skip, take)),
            ];
            partitions.push(
                self.client
                    .submit_raw(slice_task::<T>, "repartition", &[], args)
                    .retype(),
            );
            begin = end;
        }
        Ok(Bag::from_futures(&self.client, partitions))
    }
}
