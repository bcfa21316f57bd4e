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

mod io;
mod pipeline;
mod reductions;
mod shuffle;

pub use io::expand_glob;
#[cfg(feature = "dataframe")]
pub(crate) use io::{file_blocks, read_block};

use crate::client::{CallArg, Client, Future};
use crate::collections::array::{Array, Element};
use crate::collections::delayed::{Delayed, Session};
use crate::error::Result;
use crate::protocol::Bytes;
use crate::task::{CallError, TaskInput, encode_result, function_name};
use pipeline::{
    Origin, SourceFn, Step, Stream, TaskResult, collect_sink, elements, encode_parameter,
    filter_step, filter_with_step, flat_map_step, flat_map_with_step, map_partitions_step,
    map_step, map_with_step, range_source, stored_source,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// What a bag's element may be.
pub trait Item: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Item for T {}

/// A partitioned list of `T` on the workers: where each partition's elements come from,
/// and the steps they go through.
pub struct Bag<T> {
    client: Client,
    /// The function every origin is read with.
    source: SourceFn,
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

// ----- building bags -----------------------------------------------------------------------

impl<T: Item> Bag<T> {
    fn with_origins(
        client: &Client,
        source: SourceFn,
        origin_name: &str,
        origins: Vec<Origin>,
    ) -> Self {
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
                slot: CallArg::Future(part.erase()),
            })
            .collect();
        Bag::with_origins(client, stored_source::<T>, "", origins)
    }

    /// A bag whose partition `i` is the one element `elements[i]` stores (a list of one
    /// future each, which the stored source decodes as a partition of one element): for
    /// collections whose partitions are single values, such as a dataframe's frames.
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub(crate) fn from_element_futures(client: &Client, elements: Vec<Future<T>>) -> Bag<T> {
        let origins = elements
            .into_iter()
            .map(|element| Origin {
                slot: CallArg::Futures(vec![element.erase()]),
            })
            .collect();
        Bag::with_origins(client, stored_source::<T>, "", origins)
    }

    /// A bag of `items` cut into `npartitions` partitions of nearly equal length (some are
    /// empty when there are more partitions than items), each sent to a worker.
    ///
    /// ```
    /// use mpidask::bag::Bag;
    /// fn triple(x: u64) -> u64 { 3 * x }
    /// fn is_even(x: &u64) -> bool { x % 2 == 0 }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let bag = Bag::from_sequence(client, (1..=10u64).collect(), 4).unwrap();
    ///     let evens = bag.map(triple).filter(is_even); // lazy: one task per partition later
    ///     assert_eq!(evens.compute().unwrap(), vec![6, 12, 18, 24, 30]);
    ///     assert_eq!(evens.sum().result().unwrap(), 90); // a reduction is a Future
    /// });
    /// ```
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

    /// The client the bag's tasks go through.
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The bag of partition `i` alone, with the same steps (for results that need only
    /// some partitions, such as a dataframe's `head`).
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub(crate) fn partition(&self, i: usize) -> Bag<T> {
        Bag {
            client: self.client.clone(),
            source: self.source,
            origins: Arc::new(vec![self.origins[i].clone()]),
            origin_name: self.origin_name.clone(),
            steps: self.steps.clone(),
            _elements: PhantomData,
        }
    }

    /// The partitions as futures of lists: stored partitions as they are, otherwise one
    /// task per partition that runs the pipeline (submitted by every call).
    pub fn to_futures(&self) -> Vec<Future<Vec<T>>> {
        if self.steps.is_empty() && self.origins.iter().all(|o| o.stored().is_some()) {
            return self
                .origins
                .iter()
                .filter_map(|o| o.stored().cloned().map(Future::retype))
                .collect();
        }
        self.run(collect_sink::<T>, "", |_| Vec::new())
    }

    // ----- element-wise steps (lazy) -----

    /// `f` applied to every element.
    pub fn map<F, U>(&self, f: F) -> Bag<U>
    where
        F: Fn(T) -> U + Copy + Send + Sync + 'static,
        U: Item,
    {
        self.map_named(f, format!("map-{}", function_name::<F>()))
    }

    /// [`map`](Self::map) with the step's name (in task names) given: for collections
    /// built on bags, whose step is a generic wrapper of the user's function.
    pub(crate) fn map_named<F, U>(&self, f: F, name: String) -> Bag<U>
    where
        F: Fn(T) -> U + Copy + Send + Sync + 'static,
        U: Item,
    {
        let _ = f;
        self.then(map_step::<F, T, U>, name)
    }

    /// [`map_with`](Self::map_with) with the step's name given.
    pub(crate) fn map_with_named<F, A, U>(
        &self,
        f: F,
        parameter: &A,
        name: String,
    ) -> Result<Bag<U>>
    where
        F: Fn(T, &A) -> U + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        U: Item,
    {
        let _ = f;
        Ok(self.then_with(
            map_with_step::<F, T, A, U>,
            encode_parameter(parameter)?,
            name,
        ))
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
        self.map_with_named(f, parameter, format!("map-{}", function_name::<F>()))
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

    /// Every element, in order, on the client.
    pub fn compute(&self) -> Result<Vec<T>> {
        Ok(self
            .client
            .gather(&self.to_futures())?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The bag with its pipeline run once and its partitions kept on the workers (waits
    /// for them); results of the returned bag start from the stored partitions.
    pub fn persist(&self) -> Result<Bag<T>> {
        let partitions = self.to_futures();
        self.client.wait(&partitions)?;
        Ok(Bag::from_futures(&self.client, partitions))
    }
}

/// `n` items cut into `npartitions` (at least one) ranges of consecutive items, the first
/// `n % npartitions` one longer: `(start, end)` of each.
pub(crate) fn range_bounds(n: u64, npartitions: usize) -> Vec<(u64, u64)> {
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
            .iter()
            .map(Origin::value)
            .collect();
        Bag::with_origins(client, range_source, "range", origins)
    }
}

// ----- bags and arrays ---------------------------------------------------------------------

fn chunk_sink<T: Item + Element>(s: Stream, _: &TaskInput<'_>) -> TaskResult<Bytes> {
    let items: Vec<T> = elements::<T>(s)?.collect();
    let chunk = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[items.len()]), items)
        .map_err(|e| CallError::Failed(format!("could not make an array chunk: {e}")))?;
    encode_result(&chunk)
}

fn chunk_length<T: Element>(chunk: ndarray::ArrayD<T>) -> u64 {
    chunk.len() as u64
}

impl<T: Item + Element> Bag<T> {
    /// The elements as a 1-D [`Array`] with one chunk per non-empty partition (the chunks
    /// stay on the workers; this waits for the partitions to learn their lengths). Bags of
    /// other numbers `map` to `f64`, `f32`, `i64`, `i32`, `u8` or `bool` first.
    pub fn to_array(&self) -> Result<Array> {
        let chunks: Vec<Future<ndarray::ArrayD<T>>> =
            self.run(chunk_sink::<T>, "to_array", |_| Vec::new());
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::RuntimeArgs;
    use std::collections::HashMap;

    /// Runs `program` in local mode with three workers.
    pub(crate) fn on_three_workers(program: impl FnOnce(&Client) + Send) {
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
