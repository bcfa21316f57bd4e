//! DataFrames: dask.dataframe's model over Polars. A [`DataFrame`] is a list of Polars
//! `DataFrame` partitions that live on the workers, with the columns and their types known
//! on the client before anything runs (the *schema*, Dask's `meta`).
//!
//! Operations are lazy and fused per partition, as a bag's are (a dataframe's partitions
//! are a [`Bag`] of one Polars frame each): [`map_partitions`](DataFrame::map_partitions),
//! [`select`](DataFrame::select) and the steps taking Polars expressions
//! ([`filter`](DataFrame::filter), [`with_columns`](DataFrame::with_columns), ... in `ops`)
//! add a step, and a result ([`compute`](DataFrame::compute), [`len`](DataFrame::len),
//! [`head`](DataFrame::head), [`persist`](DataFrame::persist)) runs one task per partition
//! through every step. [`groupby`](DataFrame::groupby) aggregates in a tree of tasks
//! (`groupby`). [`read_parquet`](DataFrame::read_parquet) and
//! [`read_csv`](DataFrame::read_csv) have the workers read the files (`io`). Partitions travel between ranks as Arrow IPC bytes (Polars' own
//! serialisation).
//!
//! ```
//! use mpidask::dataframe::{DataFrame, polars};
//! use polars::prelude::{ChunkAgg, PolarsResult, df};
//! type Frame = polars::prelude::DataFrame;
//!
//! fn doubled(frame: Frame) -> PolarsResult<Frame> {
//!     let x2 = frame.column("x")?.as_materialized_series() * 2;
//!     Frame::new_infer_height(vec![x2.with_name("x2".into()).into()])
//! }
//!
//! mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let frame = df!("x" => [1i64, 2, 3, 4, 5]).unwrap();
//!     let ddf = DataFrame::from_polars(client, &frame, 2).unwrap();
//!     let twice = ddf.map_partitions(doubled).unwrap(); // lazy; its columns are known
//!     assert_eq!(twice.columns(), vec!["x2"]);
//!     assert_eq!(twice.len().unwrap(), 5);
//!     let all = twice.compute().unwrap();
//!     assert_eq!(all.column("x2").unwrap().i64().unwrap().sum(), Some(30));
//! });
//! ```

pub use polars;

use crate::client::{CallArg, Client, Future};
use crate::collections::bag::{Bag, range_bounds};
use crate::error::{Error, Result};
use crate::protocol::{Bytes, encode_value};
use crate::task::{CallError, TaskInput, conjure, decode_args, encode_result, function_name};
use polars::prelude::{DataFrame as Frame, PolarsResult, SchemaRef};

/// A partitioned Polars dataframe on the workers, with a known schema.
#[derive(Clone)]
pub struct DataFrame {
    /// One Polars frame per bag partition.
    parts: Bag<Frame>,
    /// The columns and their types, the same in every partition.
    schema: SchemaRef,
    /// The column the partitions are sorted and ranged by, when known.
    divisions: Option<Divisions>,
}

impl std::fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFrame")
            .field("npartitions", &self.npartitions())
            .field("columns", &describe(&self.schema))
            .field("divisions", &self.divisions)
            .finish()
    }
}

/// A dataframe sorted by one column, with the range of that column's values in each
/// partition (Dask's index and `divisions`, made by [`DataFrame::set_index`]).
#[derive(Clone, Debug)]
pub struct Divisions {
    /// The column.
    pub column: String,
    /// `npartitions + 1` values, ascending: partition `i` holds the values from `values[i]`
    /// (included) up to `values[i + 1]` (excluded, except in the last partition, which also
    /// holds the nulls). A partition may be empty.
    pub values: polars::prelude::Series,
}

impl DataFrame {
    /// `frame` cut into `npartitions` partitions of consecutive rows of nearly equal
    /// length (some are empty when there are more partitions than rows), each sent to a
    /// worker.
    pub fn from_polars(client: &Client, frame: &Frame, npartitions: usize) -> Result<DataFrame> {
        let parts = range_bounds(frame.height() as u64, npartitions)
            .into_iter()
            .map(|(start, end)| frame.slice(start as i64, (end - start) as usize))
            .collect();
        DataFrame::from_partitions(client, parts)
    }

    /// A dataframe of the given partitions (at least one), which must have the same
    /// columns with the same types, in the same order.
    pub fn from_partitions(client: &Client, parts: Vec<Frame>) -> Result<DataFrame> {
        let Some(first) = parts.first() else {
            return Err(Error::Config(
                "DataFrame::from_partitions needs at least one partition (an empty one gives \
                 the columns)"
                    .into(),
            ));
        };
        let schema = first.schema().clone();
        if let Some((i, other)) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.schema() != &schema)
        {
            return Err(Error::Config(format!(
                "DataFrame::from_partitions: partition {i} has the columns {}, partition 0 {}; \
                 every partition needs the same columns and types",
                describe(other.schema()),
                describe(&schema)
            )));
        }
        let futures = parts
            .into_iter()
            .map(|part| client.scatter(vec![part]))
            .collect::<Result<Vec<_>>>()?;
        Ok(DataFrame {
            parts: Bag::from_futures(client, futures),
            schema,
            divisions: None,
        })
    }

    /// Number of partitions.
    pub fn npartitions(&self) -> usize {
        self.parts.npartitions()
    }

    /// The columns and their types (known without computing anything).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The column the rows are sorted by and each partition's range of it, when known
    /// (after [`set_index`](DataFrame::set_index); kept by `filter`, `persist` and a
    /// `select` that keeps the column; other steps may change the column and forget it).
    pub fn divisions(&self) -> Option<&Divisions> {
        self.divisions.as_ref()
    }

    /// The column names, in order.
    pub fn columns(&self) -> Vec<&str> {
        self.schema.iter_names().map(|n| n.as_str()).collect()
    }

    /// The partitions as a bag of Polars frames, one per partition (for what the
    /// dataframe does not offer; [`Bag::map`] and friends take plain functions of a frame).
    pub fn to_bag(&self) -> Bag<Frame> {
        self.parts.clone()
    }

    // ----- steps (lazy) -----

    /// `f` applied to every partition, Dask's `map_partitions`. The new columns are found
    /// on the client by running `f` on an empty frame with this dataframe's columns (Dask's
    /// `meta`), so `f` must accept an empty frame; an error there is returned here, before
    /// anything runs. An error `f` returns on a worker fails that partition's task with its
    /// message.
    pub fn map_partitions<F>(&self, f: F) -> Result<DataFrame>
    where
        F: Fn(Frame) -> PolarsResult<Frame> + Copy + Send + Sync + 'static,
    {
        let meta = f(Frame::empty_with_arc_schema(self.schema.clone())).map_err(|e| {
            Error::Config(format!(
                "map_partitions({}): the function failed on an empty frame with the columns \
                 {} (which tells the new columns, as Dask's meta): {e}",
                function_name::<F>(),
                describe(&self.schema)
            ))
        })?;
        Ok(DataFrame {
            parts: self.parts.map_named(
                apply::<F>,
                format!("map_partitions-{}", function_name::<F>()),
            ),
            schema: meta.schema().clone(),
            divisions: None,
        })
    }

    /// The given columns, in that order. A name that is not a column is an error naming
    /// the columns there are.
    pub fn select(&self, columns: &[&str]) -> Result<DataFrame> {
        let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let meta = Frame::empty_with_arc_schema(self.schema.clone())
            .select(names.iter().map(String::as_str))
            .map_err(|e| {
                let missing: Vec<String> = columns
                    .iter()
                    .filter(|c| self.schema.get(c).is_none())
                    .map(|c| format!("'{c}'"))
                    .collect();
                Error::Config(if missing.is_empty() {
                    // Every name is a column: a name given twice, for one.
                    format!("select({columns:?}): {e}")
                } else {
                    format!(
                        "select: no column {} (the columns are {})",
                        missing.join(", "),
                        describe(&self.schema)
                    )
                })
            })?;
        Ok(DataFrame {
            parts: self
                .parts
                .map_with_named(select_columns, &names, "select".into())?,
            schema: meta.schema().clone(),
            divisions: self.divisions.clone().filter(|d| names.contains(&d.column)),
        })
    }

    // ----- results -----

    /// Number of rows (a count per partition, summed).
    pub fn len(&self) -> Result<usize> {
        Ok(self.parts.map_named(height, "len".into()).sum().result()? as usize)
    }

    /// Whether the dataframe has no rows.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The first `n` rows, computing partitions in order only until there are `n` (Dask's
    /// `head` looks at the first partition only; this goes on to the next when it is short).
    pub fn head(&self, n: usize) -> Result<Frame> {
        let mut rows = Frame::empty_with_arc_schema(self.schema.clone());
        for i in 0..self.npartitions() {
            if rows.height() >= n {
                break;
            }
            for part in self.parts.partition(i).compute()? {
                rows = stack(rows, part)?;
            }
        }
        Ok(rows.head(Some(n)))
    }

    /// Every partition, one after the other, as one Polars frame on the client.
    pub fn compute(&self) -> Result<Frame> {
        let mut all = Frame::empty_with_arc_schema(self.schema.clone());
        for part in self.parts.compute()? {
            all = stack(all, part)?;
        }
        all.rechunk_mut();
        Ok(all)
    }

    /// The same rows, in order, in `npartitions` partitions of nearly equal length (Dask's
    /// `repartition(npartitions=..)`): persists the dataframe, learns its partitions'
    /// lengths (so this waits for them), and each new partition takes the rows of the old
    /// ones it overlaps, worker to worker.
    pub fn repartition(&self, npartitions: usize) -> Result<DataFrame> {
        let stored = self.persist()?;
        let client = stored.parts.client().clone();
        let stored_parts: Vec<Future<()>> = stored
            .parts
            .to_futures()
            .into_iter()
            .map(Future::erase)
            .collect();
        let lengths: Vec<Future<u64>> = stored.parts.run_raw(rows_sink, "len", |_| Vec::new());
        let lengths = client.gather(&lengths)?;
        let mut starts = Vec::with_capacity(lengths.len());
        let mut total = 0u64;
        for len in &lengths {
            starts.push(total);
            total += len;
        }
        let empty = self.empty_arg()?;
        let parts = range_bounds(total, npartitions)
            .into_iter()
            .map(|(start, end)| {
                let (mut inputs, mut slices) = (Vec::new(), Vec::new());
                for (i, (&s, &len)) in starts.iter().zip(&lengths).enumerate() {
                    let (from, to) = (start.max(s), end.min(s + len));
                    if from < to {
                        inputs.push(stored_parts[i].clone());
                        slices.push((from - s, to - from));
                    }
                }
                let slices = CallArg::Value(encode_value(&slices).expect("numbers encode"));
                client
                    .submit_raw(
                        slices_task,
                        "repartition",
                        &[],
                        vec![CallArg::Futures(inputs), slices, empty.clone()],
                    )
                    .retype()
            })
            .collect();
        Ok(DataFrame {
            parts: Bag::from_futures(&client, parts),
            schema: self.schema.clone(),
            divisions: None,
        })
    }

    /// The dataframe with its steps run once and its partitions kept on the workers
    /// (waits for them).
    pub fn persist(&self) -> Result<DataFrame> {
        Ok(DataFrame {
            parts: self.parts.persist()?,
            schema: self.schema.clone(),
            divisions: self.divisions.clone(),
        })
    }
}

/// `v` encoded as a task argument (`what` names it in the error if it cannot be).
fn value_arg<V: serde::Serialize>(what: &str, v: &V) -> Result<CallArg> {
    Ok(CallArg::Value(
        encode_value(v).map_err(|e| Error::encode(what, e))?,
    ))
}

impl DataFrame {
    /// An empty frame with this dataframe's columns, as a task argument (what a task
    /// stacks no partition into).
    fn empty_arg(&self) -> Result<CallArg> {
        value_arg(
            "a dataframe's columns",
            &Frame::empty_with_arc_schema(self.schema.clone()),
        )
    }
}

/// The columns of `schema` as `name (type), ...`.
fn describe(schema: &SchemaRef) -> String {
    let columns: Vec<String> = schema
        .iter()
        .map(|(name, dtype)| format!("{name} ({dtype})"))
        .collect();
    if columns.is_empty() {
        "none".into()
    } else {
        columns.join(", ")
    }
}

/// A Polars error's message without the query plan Polars adds after it (which repeats
/// the columns, already named in every message here).
fn polars_message(e: &polars::prelude::PolarsError) -> String {
    let message = e.to_string();
    match message.find("\n\nResolved plan until failure") {
        Some(end) => message[..end].trim_end().to_string(),
        None => message,
    }
}

/// `part` under `rows`, the columns checked.
fn stack(mut rows: Frame, part: Frame) -> Result<Frame> {
    let columns = rows.schema().clone();
    rows.vstack_mut_owned(part).map_err(|e| {
        Error::Config(format!(
            "a partition does not have the dataframe's columns ({}): {e}",
            describe(&columns)
        ))
    })?;
    Ok(rows)
}

/// The step of [`DataFrame::map_partitions`]: the user's function, whose error fails the
/// task (a panic in a task is data sent back to the client, with this message).
fn apply<F>(frame: Frame) -> Frame
where
    F: Fn(Frame) -> PolarsResult<Frame> + Copy + 'static,
{
    let f: F = conjure();
    match f(frame) {
        Ok(frame) => frame,
        Err(e) => panic!("map_partitions({}): {e}", function_name::<F>()),
    }
}

/// The step of [`DataFrame::select`] (the names were checked on the client).
#[allow(clippy::ptr_arg)] // a step's parameter is a reference to its decoded value
fn select_columns(frame: Frame, names: &Vec<String>) -> Frame {
    match frame.select(names.iter().map(String::as_str)) {
        Ok(frame) => frame,
        Err(e) => panic!("select: {e}"),
    }
}

/// A partition's number of rows.
fn rows_sink(frames: Vec<Frame>, (): ()) -> std::result::Result<Bytes, CallError> {
    encode_result(&frames.iter().map(|f| f.height() as u64).sum::<u64>())
}

/// `(offset, length)` slices of the given partitions, one under the other.
fn slices_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    type Args = (Vec<Vec<Frame>>, Vec<(u64, u64)>, Frame);
    let (parts, slices, empty): Args = decode_args(input).map_err(|e| {
        CallError::Failed(format!("repartition: could not decode a partition: {e}"))
    })?;
    if parts.len() != slices.len() {
        return Err(CallError::Corrupt(format!(
            "repartition: {} partitions for {} slices",
            parts.len(),
            slices.len()
        )));
    }
    let pieces = parts
        .into_iter()
        .zip(slices)
        .map(|(frames, (offset, len))| {
            shuffle::stack_frames(frames, Some(&empty))
                .map(|f| f.slice(offset as i64, len as usize))
        })
        .collect::<PolarsResult<Vec<Frame>>>()
        .and_then(|pieces| shuffle::stack_frames(pieces, Some(&empty)))
        .map_err(|e| CallError::Failed(format!("repartition: {}", polars_message(&e))))?;
    encode_result(&vec![pieces])
}

fn height(frame: Frame) -> u64 {
    frame.height() as u64
}

mod convert;
mod groupby;
mod io;
mod merge;
mod ops;
mod shuffle;
mod sort;
mod summary;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_shuffle;
mod write;

pub use groupby::{Agg, Aggregation, GroupBy, SPLIT_EVERY};
pub use io::{CsvOptions, ParquetOptions};
pub use merge::{BROADCAST_INLINE_BYTES, How, MergeOptions};
pub use sort::SortOptions;
pub use summary::DESCRIBE_ROWS;
