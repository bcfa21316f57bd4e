//! `groupby(keys).agg(...)` as a tree of partial aggregates, Dask's `groupby().agg` with
//! `split_out=1`: every partition is reduced to one row per group of *partial* columns
//! (a sum, a count, a mean and a sum of squared deviations, a list of distinct values,
//! ...), the partial frames are combined `split_every` at a time, level after level, and
//! the last combination turns them into the aggregates. The result is a dataframe of one
//! partition, sorted by the keys (Dask's `sort=True`); a null key is a group, as in Polars.
//!
//! Every level is a Polars lazy `group_by` on the workers. The client runs the three
//! stages on an empty frame first, so a missing column or an aggregation a type does not
//! have is an error before anything runs, and the result's columns have the types Polars'
//! own `group_by().agg()` gives them.

use super::shuffle::{Route, stack_frames};
use super::{DataFrame, describe, polars_message, value_arg};
use crate::client::{CallArg, Future};
use crate::collections::bag::Bag;
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::task::{CallError, TaskInput, decode_args, encode_result};
use polars::prelude::{
    DataFrame as Frame, DataType, ExplodeOptions, Expr, IntoLazy, NULL, PolarsResult,
    SortMultipleOptions, col, lit, when,
};
use serde::{Deserialize, Serialize};

/// Partial frames combined by one task, unless set otherwise (Dask's `split_every`).
pub const SPLIT_EVERY: usize = 8;

/// An aggregation of a column, within each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Agg {
    /// Sum of the non-null values (0 when there are none).
    Sum,
    /// Mean of the non-null values (null when there are none).
    Mean,
    /// Number of non-null values.
    Count,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sample standard deviation (`ddof` 1), null below two values.
    Std,
    /// Sample variance (`ddof` 1), null below two values.
    Var,
    /// The first value (null included), in row order.
    First,
    /// The last value (null included), in row order.
    Last,
    /// Number of distinct values (null counts as one).
    NUnique,
}

impl Agg {
    fn name(self) -> &'static str {
        match self {
            Agg::Sum => "sum",
            Agg::Mean => "mean",
            Agg::Count => "count",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Std => "std",
            Agg::Var => "var",
            Agg::First => "first",
            Agg::Last => "last",
            Agg::NUnique => "n_unique",
        }
    }
}

/// One output column of [`GroupBy::agg`]: `how` of `column`, named `column` unless
/// [`alias`](Aggregation::alias) names it (as Polars' `col(column).sum()` is named).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregation {
    column: String,
    how: Agg,
    name: String,
}

macro_rules! constructors {
    ($($f:ident => $agg:ident),+ $(,)?) => {
        impl Aggregation {
            $(
                #[doc = concat!("`", stringify!($f), "` of `column`.")]
                pub fn $f(column: &str) -> Aggregation {
                    Aggregation::new(column, Agg::$agg)
                }
            )+
        }
    };
}

constructors!(sum => Sum, mean => Mean, count => Count, min => Min, max => Max, std => Std,
    var => Var, first => First, last => Last, n_unique => NUnique);

impl Aggregation {
    /// `how` of `column`.
    pub fn new(column: &str, how: Agg) -> Aggregation {
        Aggregation {
            column: column.to_string(),
            how,
            name: column.to_string(),
        }
    }

    /// The output column named `name`.
    pub fn alias(mut self, name: &str) -> Aggregation {
        self.name = name.to_string();
        self
    }

    /// The same aggregation done by Polars in one step (for the result's types).
    fn whole(&self) -> Expr {
        let x = col(self.column.as_str());
        match self.how {
            Agg::Sum => x.sum(),
            Agg::Mean => x.mean(),
            Agg::Count => x.count(),
            Agg::Min => x.min(),
            Agg::Max => x.max(),
            Agg::Std => x.std(1),
            Agg::Var => x.var(1),
            Agg::First => x.first(),
            Agg::Last => x.last(),
            Agg::NUnique => x.n_unique(),
        }
        .alias(self.name.as_str())
    }
}

/// What every level of the tree needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Spec {
    keys: Vec<String>,
    aggs: Vec<Aggregation>,
}

/// Partial column `part` of aggregation `i`.
fn partial(i: usize, part: &str) -> String {
    format!("__mpidask_{i}_{part}")
}

fn explode() -> ExplodeOptions {
    ExplodeOptions {
        empty_as_null: false,
        keep_nulls: true,
    }
}

impl Spec {
    fn keys(&self) -> Vec<Expr> {
        self.keys.iter().map(|k| col(k.as_str())).collect()
    }

    /// Per partition: one row per group of partial columns.
    fn partial_exprs(&self) -> Vec<Expr> {
        let mut exprs = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let x = col(a.column.as_str());
            let p = |part: &str| partial(i, part);
            let f = x.clone().cast(DataType::Float64);
            match a.how {
                Agg::Sum => exprs.push(x.sum().alias(p("sum"))),
                Agg::Min => exprs.push(x.min().alias(p("min"))),
                Agg::Max => exprs.push(x.max().alias(p("max"))),
                Agg::First => exprs.push(x.first().alias(p("first"))),
                Agg::Last => exprs.push(x.last().alias(p("last"))),
                Agg::Count => exprs.push(x.count().alias(p("n"))),
                Agg::Mean => {
                    exprs.push(f.sum().alias(p("sum")));
                    exprs.push(x.count().alias(p("n")));
                }
                Agg::Std | Agg::Var => {
                    let d = f.clone() - f.clone().mean();
                    exprs.push(x.count().alias(p("n")));
                    exprs.push(f.mean().alias(p("mean")));
                    exprs.push((d.clone() * d).sum().alias(p("m2")));
                }
                Agg::NUnique => exprs.push(x.unique().alias(p("distinct"))),
            }
        }
        exprs
    }

    /// Partial frames (concatenated) to one of the same columns; at the `last` level the
    /// distinct values become their number.
    fn combine_exprs(&self, last: bool) -> Vec<Expr> {
        let mut exprs = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let p = |part: &str| partial(i, part);
            let c = |part: &str| col(partial(i, part).as_str());
            match a.how {
                Agg::Sum => exprs.push(c("sum").sum().alias(p("sum"))),
                Agg::Min => exprs.push(c("min").min().alias(p("min"))),
                Agg::Max => exprs.push(c("max").max().alias(p("max"))),
                Agg::First => exprs.push(c("first").first().alias(p("first"))),
                Agg::Last => exprs.push(c("last").last().alias(p("last"))),
                Agg::Count => exprs.push(c("n").sum().alias(p("n"))),
                Agg::Mean => {
                    exprs.push(c("sum").sum().alias(p("sum")));
                    exprs.push(c("n").sum().alias(p("n")));
                }
                Agg::Std | Agg::Var => {
                    // Chan et al.: the means weighted by their counts, and the squared
                    // deviations of each part's mean from the whole's added to its own.
                    let n = c("n").cast(DataType::Float64);
                    let total = n.clone().sum();
                    let mean = (n.clone() * c("mean")).sum() / total.clone();
                    let gap = c("mean") - mean.clone();
                    exprs.push(c("n").sum().alias(p("n")));
                    exprs.push(
                        when(total.gt(lit(0.0)))
                            .then(mean)
                            .otherwise(lit(NULL).cast(DataType::Float64))
                            .alias(p("mean")),
                    );
                    exprs.push((c("m2") + n * gap.clone() * gap).sum().alias(p("m2")));
                }
                Agg::NUnique => {
                    let values = c("distinct").explode(explode());
                    exprs.push(
                        if last {
                            values.n_unique()
                        } else {
                            values.unique()
                        }
                        .alias(p("distinct")),
                    )
                }
            }
        }
        exprs
    }

    /// The aggregates from the last level's frame (one row per group), in a `select`.
    fn final_exprs(&self) -> Vec<Expr> {
        let mut exprs = self.keys();
        for (i, a) in self.aggs.iter().enumerate() {
            let c = |part: &str| col(partial(i, part).as_str());
            let name = a.name.as_str();
            let var = || {
                let n = c("n").cast(DataType::Float64);
                when(n.clone().gt(lit(1.0)))
                    .then(c("m2") / (n - lit(1.0)))
                    .otherwise(lit(NULL).cast(DataType::Float64))
            };
            exprs.push(
                match a.how {
                    Agg::Sum => c("sum"),
                    Agg::Min => c("min"),
                    Agg::Max => c("max"),
                    Agg::First => c("first"),
                    Agg::Last => c("last"),
                    Agg::Count => c("n"),
                    Agg::Mean => {
                        let n = c("n").cast(DataType::Float64);
                        when(n.clone().gt(lit(0.0)))
                            .then(c("sum") / n)
                            .otherwise(lit(NULL).cast(DataType::Float64))
                    }
                    Agg::Var => var(),
                    Agg::Std => var().sqrt(),
                    Agg::NUnique => c("distinct"),
                }
                .alias(name),
            );
        }
        exprs
    }

    fn partial(&self, frame: Frame) -> PolarsResult<Frame> {
        frame
            .lazy()
            .group_by(self.keys())
            .agg(self.partial_exprs())
            .collect()
    }

    fn combine(&self, frames: Vec<Frame>, last: bool) -> PolarsResult<Frame> {
        stack_frames(frames, None)?
            .lazy()
            .group_by_stable(self.keys())
            .agg(self.combine_exprs(last))
            .collect()
    }

    /// The aggregates, sorted by the keys, with the types of `meta`'s columns.
    fn finish(&self, frame: Frame, meta: &Frame) -> PolarsResult<Frame> {
        let casts: Vec<Expr> = meta
            .schema()
            .iter()
            .map(|(name, dtype)| col(name.clone()).strict_cast(dtype.clone()))
            .collect();
        frame
            .lazy()
            .select(self.final_exprs())
            .select(casts)
            .sort(self.keys.clone(), SortMultipleOptions::default())
            .collect()
    }
}

/// A dataframe grouped by key columns, waiting for its aggregations.
#[derive(Clone)]
pub struct GroupBy {
    frame: DataFrame,
    keys: Vec<String>,
    split_every: usize,
    split_out: usize,
}

impl DataFrame {
    /// The rows grouped by the values of `keys` (at least one column): Dask's
    /// `df.groupby(keys)`. A name that is not a column is an error naming the columns.
    pub fn groupby(&self, keys: &[&str]) -> Result<GroupBy> {
        if keys.is_empty() {
            return Err(Error::Config(
                "groupby: no key column given; name at least one".into(),
            ));
        }
        if let Some(missing) = keys.iter().find(|k| self.schema.get(k).is_none()) {
            return Err(Error::Config(format!(
                "groupby: no column '{missing}' (the columns are {})",
                describe(&self.schema)
            )));
        }
        Ok(GroupBy {
            frame: self.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            split_every: SPLIT_EVERY,
            split_out: 1,
        })
    }
}

impl GroupBy {
    /// Partial frames combined by one task (at least 2; [`SPLIT_EVERY`] unless set).
    pub fn split_every(mut self, n: usize) -> GroupBy {
        self.split_every = n.max(2);
        self
    }

    /// Partitions of the result (Dask's `split_out`; 1 unless set): above 1 the partial
    /// frames move by a hash shuffle on the keys (`shuffle`), so each group's partials meet
    /// in one partition, which is sorted by the keys; the partitions one after the other
    /// are then not sorted.
    pub fn split_out(mut self, n: usize) -> GroupBy {
        self.split_out = n.max(1);
        self
    }

    /// One row per group, sorted by the keys: the keys, then one column per aggregation
    /// (Polars' `group_by(keys).agg([...])` with the named aggregations). Two output
    /// columns of one name (a key's included), a column that does not exist or an
    /// aggregation its type does not have are errors here, before anything runs.
    pub fn agg(&self, aggs: &[Aggregation]) -> Result<DataFrame> {
        let schema = &self.frame.schema;
        if aggs.is_empty() {
            return Err(Error::Config(format!(
                "groupby({:?}).agg: no aggregation given; name at least one, e.g. \
                 Aggregation::sum(\"x\")",
                self.keys
            )));
        }
        let mut names: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        for a in aggs {
            if schema.get(&a.column).is_none() {
                return Err(Error::Config(format!(
                    "groupby({:?}).agg: no column '{}' (the columns are {})",
                    self.keys,
                    a.column,
                    describe(schema)
                )));
            }
            if names.contains(&a.name.as_str()) {
                return Err(Error::Config(format!(
                    "groupby({:?}).agg: two output columns named '{}' ({} of '{}' among \
                     them): name one with .alias(..)",
                    self.keys,
                    a.name,
                    a.how.name(),
                    a.column
                )));
            }
            names.push(&a.name);
        }
        let spec = Spec {
            keys: self.keys.clone(),
            aggs: aggs.to_vec(),
        };
        let empty = || Frame::empty_with_arc_schema(schema.clone());
        let failed = |e: polars::prelude::PolarsError| {
            Error::Config(format!(
                "groupby({:?}).agg: {} (the columns are {})",
                self.keys,
                polars_message(&e),
                describe(schema)
            ))
        };
        let keys = spec.keys();
        let meta = empty()
            .lazy()
            .group_by(keys)
            .agg(aggs.iter().map(Aggregation::whole).collect::<Vec<_>>())
            .collect()
            .map_err(failed)?;
        let partial = spec.partial(empty()).map_err(failed)?;
        let combined = spec.combine(vec![partial.clone()], true).map_err(failed)?;
        spec.finish(combined, &meta).map_err(failed)?;
        let meta = Frame::empty_with_arc_schema(meta.schema().clone());

        let partials =
            self.frame
                .parts
                .map_with_named(partial_step, &spec, "groupby-partial".into())?;
        if self.split_out > 1 {
            let partials = DataFrame {
                parts: partials,
                schema: partial.schema().clone(),
                divisions: None,
            };
            let route = Route::Hash {
                on: self.keys.clone(),
                n: self.split_out as u64,
            };
            let schema = meta.schema().clone();
            return partials.shuffled(
                &route,
                "groupby-agg",
                finish_shuffled,
                &(spec, meta),
                schema,
            );
        }
        let client = self.frame.parts.client().clone();
        let mut level: Vec<Future<()>> = partials
            .to_futures()
            .into_iter()
            .map(Future::erase)
            .collect();
        let spec_arg = value_arg("a groupby", &spec)?;
        let meta_arg = value_arg("a groupby's columns", &meta)?;
        loop {
            let last = level.len() <= self.split_every;
            let (task, name): (crate::task::Trampoline, &str) = if last {
                (finish_task, "groupby-agg")
            } else {
                (combine_task, "groupby-combine")
            };
            level = level
                .chunks(self.split_every)
                .map(|group| {
                    let mut args = vec![CallArg::Futures(group.to_vec()), spec_arg.clone()];
                    if last {
                        args.push(meta_arg.clone());
                    }
                    client.submit_raw(task, name, &[], args)
                })
                .collect();
            if last {
                break;
            }
        }
        Ok(DataFrame {
            parts: Bag::from_futures(&client, level.into_iter().map(Future::retype).collect()),
            schema: meta.schema().clone(),
            divisions: None,
        })
    }
}

/// The first stage, on each partition.
fn partial_step(frame: Frame, spec: &Spec) -> Frame {
    match spec.partial(frame) {
        Ok(frame) => frame,
        Err(e) => panic!("groupby({:?}): {}", spec.keys, polars_message(&e)),
    }
}

/// One partition of a shuffled group-by: its groups' partial frames to the aggregates.
fn finish_shuffled(frame: Frame, (spec, meta): &(Spec, Frame)) -> PolarsResult<Frame> {
    let combined = spec.combine(vec![frame], true)?;
    spec.finish(combined, meta)
}

/// A middle level: partial frames to one.
fn combine_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let (parts, spec): (Vec<Vec<Frame>>, Spec) = decode_args(input).map_err(|e| {
        CallError::Failed(format!("groupby: could not decode a partial frame: {e}"))
    })?;
    let frame = spec
        .combine(parts.into_iter().flatten().collect(), false)
        .map_err(|e| {
            CallError::Failed(format!("groupby({:?}): {}", spec.keys, polars_message(&e)))
        })?;
    encode_result(&vec![frame])
}

/// The last level: partial frames to the aggregates.
fn finish_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let (parts, spec, meta): (Vec<Vec<Frame>>, Spec, Frame) = decode_args(input).map_err(|e| {
        CallError::Failed(format!("groupby: could not decode a partial frame: {e}"))
    })?;
    let frame = spec
        .combine(parts.into_iter().flatten().collect(), true)
        .and_then(|frame| spec.finish(frame, &meta))
        .map_err(|e| {
            CallError::Failed(format!("groupby({:?}): {}", spec.keys, polars_message(&e)))
        })?;
    encode_result(&vec![frame])
}
