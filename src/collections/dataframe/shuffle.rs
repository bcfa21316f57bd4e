//! Moving rows between partitions, worker to worker by MPI: the shuffle under
//! [`shuffle`](DataFrame::shuffle), `merge`, `sort_values`, `drop_duplicates` and group-bys
//! with `split_out`.
//!
//! Every input partition is split where it is computed into one bucket per output
//! partition (by a hash of key columns, or by where a column's value falls among sorted
//! boundaries), all buckets packed in one value. A bucket task per (input, output) runs
//! where that value lies and takes its bucket out as a view of those bytes (no copy, no
//! decoding), so only buckets travel; each output partition's task fetches exactly its
//! buckets from the workers that hold them (point-to-point MPI messages of the data plane,
//! spilled to disk under the workers' memory limits like any value) and stacks them in
//! input order: a plain shuffle as bytes (their record batches under one schema), the
//! others decoded, to compute on. A shuffle of `m` partitions into `n` is `m + m * n + n`
//! tasks.

use super::{DataFrame, polars_message, value_arg};
use crate::client::{CallArg, Future};
use crate::collections::bag::Bag;
use crate::error::{Error, Result};
use crate::protocol::{Bytes, encode_value};
use crate::task::{CallError, TaskInput, conjure, decode_args, encode_result, function_name};
use polars::prelude::{DataFrame as Frame, DataType, PlSeedableRandomStateQuality, PolarsResult};
use serde::{Deserialize, Serialize};

type TaskResult<T> = std::result::Result<T, CallError>;

/// Where each row of a partition goes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum Route {
    /// To partition `hash(values of on) % n`: equal keys meet in one partition.
    Hash { on: Vec<String>, n: u64 },
    /// By the column's value among the sorted `boundaries` (a frame of that one column, no
    /// nulls): partition `k` holds the values from boundary `k - 1` (included) to boundary
    /// `k` (excluded), reversed when descending; nulls go to the last partition.
    Range {
        column: String,
        boundaries: Frame,
        descending: bool,
    },
}

impl Route {
    /// Number of output partitions.
    pub(super) fn n(&self) -> usize {
        match self {
            Route::Hash { n, .. } => *n as usize,
            Route::Range { boundaries, .. } => boundaries.height() + 1,
        }
    }

    /// The output partition of every row of `frame`.
    pub(super) fn targets(&self, frame: &Frame) -> PolarsResult<Vec<u32>> {
        match self {
            Route::Hash { on, n } => {
                // Polars' own hashing with fixed seeds: the same on every rank.
                let state = PlSeedableRandomStateQuality::fixed();
                let mut hashes = vec![0u64; frame.height()];
                for (k, name) in on.iter().enumerate() {
                    let column = frame.column(name)?;
                    if k == 0 {
                        hashes.clear();
                        column.vec_hash(state.clone(), &mut hashes)?;
                    } else {
                        column.vec_hash_combine(state.clone(), &mut hashes)?;
                    }
                }
                Ok(hashes.iter().map(|h| (h % n.max(&1)) as u32).collect())
            }
            Route::Range {
                column,
                boundaries,
                descending,
            } => {
                let last = boundaries.height() as u32;
                let values = frame.column(column)?.as_materialized_series();
                let bounds = boundaries.column(column)?.as_materialized_series();
                let mut targets = match Ordered::of(values)? {
                    Ordered::Numbers(values) => {
                        let Ordered::Numbers(bounds) = Ordered::of(bounds)? else {
                            unreachable!("a column and its boundaries have one type")
                        };
                        range_targets(&values, &bounds, last, |a, b| a.total_cmp(b))
                    }
                    Ordered::Strings(values) => {
                        let Ordered::Strings(bounds) = Ordered::of(bounds)? else {
                            unreachable!("a column and its boundaries have one type")
                        };
                        range_targets(&values, &bounds, last, |a, b| a.cmp(b))
                    }
                };
                if *descending {
                    // Reversed, nulls (at `last`) staying last.
                    let nulls = values.is_null();
                    for (t, null) in targets.iter_mut().zip(nulls.iter()) {
                        if null != Some(true) {
                            *t = last - *t;
                        }
                    }
                }
                Ok(targets)
            }
        }
    }
}

/// A column's values in a form ordered as Polars sorts them (numbers and times by their
/// value, NaN above every number; strings by their bytes).
enum Ordered {
    Numbers(Vec<Option<f64>>),
    Strings(Vec<Option<String>>),
}

impl Ordered {
    fn of(series: &polars::prelude::Series) -> PolarsResult<Ordered> {
        let dtype = series.dtype();
        if dtype.is_primitive_numeric() || dtype.is_temporal() || dtype == &DataType::Boolean {
            // Times by their integer value; integers beyond 2^53 round, which keeps the order
            // (rounding never reverses two values), so a partition's range stays a range.
            let floats = series.to_physical_repr().cast(&DataType::Float64)?;
            let numbers = floats
                .f64()?
                .iter()
                .map(|v| v.map(|x| if x.is_nan() { f64::NAN } else { x }))
                .collect();
            Ok(Ordered::Numbers(numbers))
        } else if dtype == &DataType::String {
            Ok(Ordered::Strings(
                series.str()?.iter().map(|v| v.map(String::from)).collect(),
            ))
        } else {
            Err(polars::prelude::PolarsError::InvalidOperation(
                format!(
                    "column '{}' is of type {dtype}, which has no order to partition by \
                     (numbers, times, booleans and strings have)",
                    series.name()
                )
                .into(),
            ))
        }
    }
}

/// For every value, the number of boundaries at or below it (`last` for a null).
fn range_targets<V>(
    values: &[Option<V>],
    bounds: &[Option<V>],
    last: u32,
    cmp: impl Fn(&V, &V) -> std::cmp::Ordering,
) -> Vec<u32> {
    let bounds: Vec<&V> = bounds.iter().flatten().collect();
    values
        .iter()
        .map(|v| match v {
            Some(v) => bounds.partition_point(|b| cmp(b, v) != std::cmp::Ordering::Greater) as u32,
            None => last,
        })
        .collect()
}

/// `frame` split by `route`, the buckets packed: the number of buckets `n`, then where
/// each bucket starts and how long it is (`2 n` little-endian `u64`s), then the buckets, each
/// encoded as a one-frame partition, one after the other (a few bytes of padding before
/// each).
///
/// The rows are first put in bucket order in one pass ([`bucket_order`]), then each bucket
/// is a slice of that frame (a gather per bucket would walk the whole frame once per
/// bucket, in random order), encoded straight into the packed buffer.
fn split(frame: &Frame, route: &Route) -> PolarsResult<Bytes> {
    let n = route.n();
    let targets = route.targets(frame)?;
    let (mut ordered, starts) = bucket_order(frame, &targets, n)?;
    drop(targets);
    // No statistics flags: a flag true of every bucket (sorted) need not be true of
    // buckets joined, and buckets of one schema encode one schema message, so a plain
    // shuffle's outputs are joined as bytes ([`stack_task`]).
    // SAFETY: the flags are not part of the schema.
    for column in unsafe { ordered.columns_mut_retain_schema() } {
        column.set_flags(polars::chunked_array::flags::StatisticsFlags::empty());
    }
    let header = 8 * (1 + 2 * n);
    let mut packed =
        crate::protocol::frame_buffer(header + crate::protocol::encoded_estimate(frame) + n * 4096);
    packed.resize(header, 0);
    let mut places = Vec::with_capacity(n);
    for w in starts.windows(2) {
        let bucket = ordered.slice(w[0] as i64, w[1] - w[0]);
        places.push(
            crate::protocol::append_frame(&mut packed, &bucket)
                .map_err(|e| polars::prelude::PolarsError::ComputeError(e.to_string().into()))?,
        );
    }
    packed[..8].copy_from_slice(&(n as u64).to_le_bytes());
    for (k, (start, len)) in places.into_iter().enumerate() {
        packed[8 + 16 * k..16 + 16 * k].copy_from_slice(&(start as u64).to_le_bytes());
        packed[16 + 16 * k..24 + 16 * k].copy_from_slice(&(len as u64).to_le_bytes());
    }
    Ok(Bytes::from(packed))
}

/// `frame`'s rows grouped by their target bucket (`targets[i] < n`), keeping their order
/// within a bucket, and where each bucket starts (`n + 1` offsets). A counting sort gives
/// each row its place; a numeric column without nulls in one chunk is then scattered
/// there in one sequential read, any other column is gathered by Polars.
fn bucket_order(frame: &Frame, targets: &[u32], n: usize) -> PolarsResult<(Frame, Vec<usize>)> {
    use polars::prelude::{Column, IdxCa, IdxSize, IntoColumn};
    let mut starts = vec![0usize; n + 1];
    for t in targets {
        starts[*t as usize + 1] += 1;
    }
    for j in 1..=n {
        starts[j] += starts[j - 1];
    }
    // `place[i]`: where row `i` goes; `order[k]`: the row that goes to `k`.
    let mut next = starts.clone();
    let mut place = vec![0 as IdxSize; targets.len()];
    let mut order = vec![0 as IdxSize; targets.len()];
    for (i, t) in targets.iter().enumerate() {
        let k = next[*t as usize];
        next[*t as usize] += 1;
        place[i] = k as IdxSize;
        order[k] = i as IdxSize;
    }
    let order = IdxCa::from_vec("".into(), order);
    let columns = frame
        .columns()
        .iter()
        .map(|column| match scattered(column, &place) {
            Some(series) => Ok(series.into_column()),
            None => Ok::<Column, polars::prelude::PolarsError>(column.take(&order)?),
        })
        .collect::<PolarsResult<Vec<Column>>>()?;
    Ok((Frame::new(frame.height(), columns)?, starts))
}

/// `column` with value `i` moved to `place[i]`, when it is numeric, in one chunk, without
/// nulls; `None` otherwise.
fn scattered(
    column: &polars::prelude::Column,
    place: &[polars::prelude::IdxSize],
) -> Option<polars::prelude::Series> {
    use polars::prelude::{ChunkedArray, IntoSeries, PolarsNumericType};
    fn scatter<T: PolarsNumericType>(
        ca: &ChunkedArray<T>,
        place: &[polars::prelude::IdxSize],
    ) -> Option<polars::prelude::Series> {
        let values = ca.cont_slice().ok()?;
        let mut out = vec![T::Native::default(); values.len()];
        for (v, p) in values.iter().zip(place) {
            out[*p as usize] = *v;
        }
        Some(ChunkedArray::<T>::from_vec(ca.name().clone(), out).into_series())
    }
    let series = column.as_series()?;
    match series.dtype() {
        DataType::Int32 => scatter(series.i32().ok()?, place),
        DataType::Int64 => scatter(series.i64().ok()?, place),
        DataType::UInt32 => scatter(series.u32().ok()?, place),
        DataType::UInt64 => scatter(series.u64().ok()?, place),
        DataType::Float32 => scatter(series.f32().ok()?, place),
        DataType::Float64 => scatter(series.f64().ok()?, place),
        _ => None,
    }
}

/// The split of one partition (the pipeline's frames, stacked), packed.
fn split_sink(frames: Vec<Frame>, route: Route) -> TaskResult<Bytes> {
    let failed = |e: polars::prelude::PolarsError| {
        CallError::Failed(format!("shuffle: {}", polars_message(&e)))
    };
    let frame = stack_frames(frames, None).map_err(failed)?;
    split(&frame, &route).map_err(failed)
}

/// Bucket `j` of a packed split, as it is: a view of the split's bytes, no copy (checked
/// against the packing first). The split's memory is freed with the last of its buckets.
fn bucket_task(input: &TaskInput<'_>) -> TaskResult<Bytes> {
    let corrupt = |what: &str| CallError::Corrupt(format!("shuffle: a packed split {what}"));
    let (whole, j) = match (input.deps.first(), input.args.get(1)) {
        (Some(whole), Some(crate::protocol::ArgSlot::Value(j))) => (whole, j),
        _ => return Err(corrupt("is missing from the bucket task")),
    };
    let j: u64 = crate::protocol::decode_value(j).map_err(|_| corrupt("has no bucket number"))?;
    let packed = whole.as_slice();
    let word = |k: usize| -> TaskResult<usize> {
        packed
            .get(8 * k..8 * k + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .and_then(|w| usize::try_from(w).ok())
            .ok_or_else(|| corrupt("is shorter than its header"))
    };
    let n = word(0)?;
    if j >= n as u64 {
        return Err(corrupt(&format!("has {n} buckets, not bucket {j}")));
    }
    let j = j as usize;
    let header = n
        .checked_mul(2)
        .and_then(|w| w.checked_add(1))
        .and_then(|w| w.checked_mul(8))
        .ok_or_else(|| corrupt("has an impossible bucket count"))?;
    let (start, len) = (word(1 + 2 * j)?, word(2 + 2 * j)?);
    start
        .checked_add(len)
        .filter(|_| start >= header)
        .and_then(|end| Bytes::view(whole, start..end))
        .ok_or_else(|| corrupt("places a bucket outside itself"))
}

/// `frames` one under the other; none gives an empty frame of `empty`'s columns.
pub(super) fn stack_frames(frames: Vec<Frame>, empty: Option<&Frame>) -> PolarsResult<Frame> {
    let mut frames = frames.into_iter();
    let Some(mut all) = frames.next() else {
        return Ok(empty.cloned().unwrap_or_default());
    };
    for frame in frames {
        all.vstack_mut_owned(frame)?;
    }
    all.rechunk_mut();
    Ok(all)
}

/// One output partition: its buckets stacked in input order, then `F` with its parameter.
fn gather_task<F, P>(input: &TaskInput<'_>) -> TaskResult<Bytes>
where
    F: Fn(Frame, &P) -> PolarsResult<Frame> + Copy + 'static,
    P: serde::de::DeserializeOwned + 'static,
{
    let (buckets, empty, parameter): (Vec<Vec<Frame>>, Frame, P) = decode_args(input)
        .map_err(|e| CallError::Failed(format!("shuffle: could not decode a bucket: {e}")))?;
    let frame = stack_frames(buckets.into_iter().flatten().collect(), Some(&empty))
        .and_then(|frame| conjure::<F>()(frame, &parameter))
        .map_err(|e| {
            CallError::Failed(format!(
                "{}: {}",
                function_name::<F>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("shuffle"),
                polars_message(&e)
            ))
        })?;
    encode_result(&vec![frame])
}

/// One output partition of a plain shuffle: its buckets' record batches joined as bytes
/// under one schema, nothing decoded or copied but once ([`join_frames`]); stacked as
/// [`gather_task`] does when they cannot be (no buckets, schemas that differ).
///
/// [`join_frames`]: crate::protocol::join_frames
fn stack_task(input: &TaskInput<'_>) -> TaskResult<Bytes> {
    let Some(crate::protocol::ArgSlot::Futures(keys)) = input.args.first() else {
        return Err(CallError::Corrupt(
            "shuffle: an output partition's task has no buckets".into(),
        ));
    };
    let buckets = input.deps.get(..keys.len()).ok_or_else(|| {
        CallError::Corrupt("shuffle: an output partition's task lacks buckets".into())
    })?;
    let parts: Vec<&[u8]> = buckets.iter().map(|bucket| bucket.as_slice()).collect();
    match crate::protocol::join_frames(&parts) {
        Some(joined) => Ok(joined),
        None => gather_of::<_, ()>(unchanged)(input),
    }
}

/// The [`gather_task`] of `F`, named by a value of `F` (a function item's type has no name).
fn gather_of<F, P>(_f: F) -> fn(&TaskInput<'_>) -> TaskResult<Bytes>
where
    F: Fn(Frame, &P) -> PolarsResult<Frame> + Copy + 'static,
    P: serde::de::DeserializeOwned + 'static,
{
    gather_task::<F, P>
}

/// The buckets of a shuffle: `buckets[i][j]`, bucket `j` of input partition `i`.
pub(super) fn buckets(
    frame: &DataFrame,
    route: &Route,
    name: &str,
) -> Result<Vec<Vec<Future<()>>>> {
    let route_arg = value_arg("a shuffle's route", route)?;
    let client = frame.parts.client().clone();
    let splits: Vec<Future<()>> = frame
        .parts
        .run_raw(split_sink, &format!("{name}-split"), |_| {
            vec![route_arg.clone()]
        });
    let n = route.n() as u64;
    Ok(splits
        .iter()
        .map(|split| {
            (0..n)
                .map(|j| {
                    let j = CallArg::Value(encode_value(&j).expect("a number encodes"));
                    // Before the splits still to run: a split's buckets are taken out
                    // as soon as it is done, and its packing is then released, its memory
                    // reused by the next split rather than new memory faulted in.
                    client.submit_raw_prioritized(
                        bucket_task,
                        &format!("{name}-bucket"),
                        &[],
                        vec![CallArg::Future(split.clone()), j],
                        1,
                    )
                })
                .collect()
        })
        .collect())
}

/// The column `j` of `buckets`.
pub(super) fn column_of(buckets: &[Vec<Future<()>>], j: usize) -> Vec<Future<()>> {
    buckets.iter().map(|row| row[j].clone()).collect()
}

impl DataFrame {
    /// A shuffle of this dataframe's rows by `route`, each output partition's buckets
    /// stacked and then given to `f` with `parameter`; `schema` is the result's columns.
    pub(super) fn shuffled<F, P>(
        &self,
        route: &Route,
        name: &str,
        f: F,
        parameter: &P,
        schema: polars::prelude::SchemaRef,
    ) -> Result<DataFrame>
    where
        F: Fn(Frame, &P) -> PolarsResult<Frame> + Copy + 'static,
        P: Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.gathered(route, name, gather_of(f), parameter, schema)
    }

    /// A shuffle of this dataframe's rows by `route`, each output partition made by
    /// `task` from its buckets, the empty frame and `parameter` (the arguments of
    /// [`gather_task`]).
    fn gathered<P: Serialize>(
        &self,
        route: &Route,
        name: &str,
        task: fn(&TaskInput<'_>) -> TaskResult<Bytes>,
        parameter: &P,
        schema: polars::prelude::SchemaRef,
    ) -> Result<DataFrame> {
        let buckets = buckets(self, route, name)?;
        let client = self.parts.client().clone();
        let empty = self.empty_arg()?;
        let parameter = value_arg(&format!("a {name}"), parameter)?;
        let parts = (0..route.n())
            .map(|j| {
                client
                    .submit_raw(
                        task,
                        name,
                        &[],
                        vec![
                            CallArg::Futures(column_of(&buckets, j)),
                            empty.clone(),
                            parameter.clone(),
                        ],
                    )
                    .retype()
            })
            .collect();
        Ok(DataFrame {
            parts: Bag::from_futures(&client, parts),
            schema,
            divisions: None,
        })
    }

    /// The rows moved so that equal values of `on` are in one partition, into
    /// `npartitions` partitions (Dask's `shuffle(on, npartitions)`): a hash shuffle between
    /// the workers. A name that is not a column is an error naming the columns.
    pub fn shuffle(&self, on: &[&str], npartitions: usize) -> Result<DataFrame> {
        let on = self.key_columns("shuffle", on)?;
        let route = Route::Hash {
            on,
            n: npartitions.max(1) as u64,
        };
        self.gathered(&route, "shuffle", stack_task, &(), self.schema.clone())
    }

    /// The rows without repeats of the values of `subset` (every column when `None`),
    /// the first of each kept: Dask's `drop_duplicates(subset, keep="first")`. Each
    /// partition drops its own repeats, then a hash shuffle on those columns brings equal
    /// rows into one partition (buckets stacked in input order, so the first stays
    /// first), as many partitions as the input; rows come grouped by that hash, not in
    /// their original order.
    pub fn drop_duplicates(&self, subset: Option<&[&str]>) -> Result<DataFrame> {
        let on = match subset {
            Some(columns) => self.key_columns("drop_duplicates", columns)?,
            None => self.columns().iter().map(|c| c.to_string()).collect(),
        };
        let subset: Option<Vec<String>> = subset.map(|_| on.clone());
        let local = self.then_op(super::ops::Op::Unique(subset.clone()))?;
        let route = Route::Hash {
            on,
            n: self.npartitions() as u64,
        };
        local.shuffled(
            &route,
            "drop_duplicates",
            super::ops::unique_rows,
            &subset,
            self.schema.clone(),
        )
    }

    /// `names` as owned strings, each checked to be a column (at least one).
    pub(super) fn key_columns(&self, what: &str, names: &[&str]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Err(Error::Config(format!(
                "{what}: no column given; name at least one"
            )));
        }
        if let Some(missing) = names.iter().find(|k| self.schema.get(k).is_none()) {
            return Err(Error::Config(format!(
                "{what}: no column '{missing}' (the columns are {})",
                super::describe(&self.schema)
            )));
        }
        Ok(names.iter().map(|k| k.to_string()).collect())
    }
}

fn unchanged(frame: Frame, _: &()) -> PolarsResult<Frame> {
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{NamedFrom, Series, df};

    #[test]
    fn hash_routes_equal_keys_alike_and_ranges_keep_order() {
        let frame =
            df!("k" => [3i64, 1, 3, 7, 1, 2], "s" => ["a", "b", "a", "c", "b", "d"]).unwrap();
        let route = Route::Hash {
            on: vec!["k".into(), "s".into()],
            n: 4,
        };
        let t = route.targets(&frame).unwrap();
        assert_eq!((t[0], t[1]), (t[2], t[4]));
        assert!(t.iter().all(|&x| x < 4));

        let values =
            df!("x" => [Some(5.0), None, Some(-1.0), Some(2.0), Some(f64::NAN), Some(3.0)])
                .unwrap();
        let boundaries = df!("x" => [2.0, 4.0]).unwrap();
        let up = Route::Range {
            column: "x".into(),
            boundaries: boundaries.clone(),
            descending: false,
        };
        // [.., 2) [2, 4) [4, ..] and nulls last; NaN above every number.
        assert_eq!(up.targets(&values).unwrap(), vec![2, 2, 0, 1, 2, 1]);
        let down = Route::Range {
            column: "x".into(),
            boundaries,
            descending: true,
        };
        assert_eq!(down.targets(&values).unwrap(), vec![0, 2, 2, 1, 0, 1]);

        let words = df!("w" => ["pear", "apple", "fig"]).unwrap();
        let route = Route::Range {
            column: "w".into(),
            boundaries: Frame::new_infer_height(vec![Series::new("w".into(), ["b", "g"]).into()])
                .unwrap(),
            descending: false,
        };
        assert_eq!(route.targets(&words).unwrap(), vec![2, 0, 1]);
    }

    #[test]
    fn a_bucket_comes_out_of_its_packing_and_a_bad_packing_is_an_error() {
        let frame = df!("k" => [1i64, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let route = Route::Hash {
            on: vec!["k".into()],
            n: 3,
        };
        let packed = split_sink(vec![frame.clone()], route.clone()).unwrap();
        let targets = route.targets(&frame).unwrap();
        let mut seen = 0;
        for j in 0..3u64 {
            let bucket = bucket_of(&packed, j).unwrap();
            let frames: Vec<Frame> = crate::protocol::decode_value(&bucket).unwrap();
            let expected: Vec<i64> = (0..8)
                .filter(|&i| targets[i] as u64 == j)
                .map(|i| i as i64 + 1)
                .collect();
            let got: Vec<i64> = frames[0]
                .column("k")
                .unwrap()
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect();
            assert_eq!(got, expected);
            seen += got.len();
        }
        assert_eq!(seen, 8);
        assert!(bucket_of(&packed, 3).is_err());
        assert!(bucket_of(&packed[..20], 0).is_err());
        for (word, value) in [(0, u64::MAX), (3, u64::MAX), (3, 0), (4, u64::MAX)] {
            let mut lying = packed.to_vec();
            lying[8 * word..8 * word + 8].copy_from_slice(&value.to_le_bytes());
            assert!(bucket_of(&lying, 1).is_err(), "word {word} = {value}");
        }
    }

    #[test]
    fn buckets_of_any_partitions_join_as_bytes_into_their_rows() {
        use polars::prelude::IntoColumn;
        // One input sorted (flagged so), one not: their buckets still share one schema
        // message, so every output is joined as bytes, and holds its rows in input order.
        let mut k = Series::new("k".into(), (0..40i64).collect::<Vec<_>>());
        k.set_sorted_flag(polars::series::IsSorted::Ascending);
        let s = Series::new("s".into(), vec!["x"; 40]);
        let sorted = Frame::new(40, vec![k.into_column(), s.into_column()]).unwrap();
        assert!(sorted.column("k").unwrap().get_flags().bits() != 0);
        let shuffled =
            df!("k" => (0..30i64).rev().collect::<Vec<_>>(), "s" => vec!["y"; 30]).unwrap();
        let route = Route::Hash {
            on: vec!["k".into()],
            n: 3,
        };
        let splits = [&sorted, &shuffled]
            .map(|frame| split_sink(vec![frame.clone()], route.clone()).unwrap());
        let mut rows = 0;
        for j in 0..3 {
            let buckets: Vec<Bytes> = splits.iter().map(|s| bucket_of(s, j).unwrap()).collect();
            let slices: Vec<&[u8]> = buckets.iter().map(|b| b.as_slice()).collect();
            let joined = crate::protocol::join_frames(&slices).expect("one schema");
            let out: Vec<Frame> = crate::protocol::decode_value(&joined).unwrap();
            let mut want = Frame::empty();
            for frame in [&sorted, &shuffled] {
                let targets = route.targets(frame).unwrap();
                let mask: polars::prelude::BooleanChunked =
                    targets.iter().map(|&t| t as u64 == j).collect();
                want.vstack_mut(&frame.filter(&mask).unwrap()).unwrap();
            }
            assert!(
                out[0].equals_missing(&want),
                "output {j}: {} against {want}",
                out[0]
            );
            rows += out[0].height();
        }
        assert_eq!(rows, 70);
    }

    #[test]
    fn bucket_order_scatters_and_gathers_alike() {
        use polars::prelude::{IdxCa, IdxSize};
        // Numbers without nulls (scattered), with nulls, strings, and a column in two
        // chunks (gathered by Polars).
        let mut frame = df!(
            "i" => [5i64, 4, 3, 2, 1, 0],
            "f" => [0.5f64, 1.5, 2.5, 3.5, 4.5, 5.5],
            "u" => [1u32, 2, 3, 4, 5, 6],
            "null" => [Some(1i32), None, Some(3), None, Some(5), Some(6)],
            "s" => ["a", "b", "c", "d", "e", "f"]
        )
        .unwrap();
        let more = frame.clone();
        frame.vstack_mut(&more).unwrap();
        let mut one_chunk = frame.clone();
        one_chunk.rechunk_mut();
        let targets = [2u32, 0, 1, 2, 2, 0, 1, 1, 0, 2, 2, 2];
        for frame in [one_chunk, frame] {
            let (ordered, starts) = bucket_order(&frame, &targets, 4).unwrap();
            assert_eq!(starts, vec![0, 3, 6, 12, 12]);
            for j in 0..4 {
                let rows: Vec<IdxSize> = (0..targets.len() as IdxSize)
                    .filter(|&i| targets[i as usize] == j as u32)
                    .collect();
                let want = frame.take(&IdxCa::from_vec("".into(), rows)).unwrap();
                let got = ordered.slice(starts[j] as i64, starts[j + 1] - starts[j]);
                assert!(
                    got.equals_missing(&want),
                    "bucket {j}: {got} against {want}"
                );
            }
        }
        // A column in one chunk, no nulls, of a scattered type is scattered.
        let place = [1 as IdxSize, 0, 2];
        let column = polars::prelude::Column::new("x".into(), [7i64, 8, 9]);
        let moved = scattered(&column, &place).expect("scattered");
        assert_eq!(
            moved.i64().unwrap().into_no_null_iter().collect::<Vec<_>>(),
            vec![8, 7, 9]
        );
    }

    fn bucket_of(packed: &[u8], j: u64) -> TaskResult<Bytes> {
        let payload = crate::protocol::Payload::from(Bytes::from(packed.to_vec()));
        let functions = crate::task::FunctionTable::new(0);
        let args = vec![
            crate::protocol::ArgSlot::Future(crate::protocol::Key(0)),
            crate::protocol::ArgSlot::Value(encode_value(&j).unwrap()),
        ];
        bucket_task(&TaskInput {
            args: &args,
            deps: std::slice::from_ref(&payload),
            uses: &[],
            functions: &functions,
        })
    }
}
