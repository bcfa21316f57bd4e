//! Summaries of a dataframe's values, each a small dataframe of one partition built from
//! the group-by's tree of partial aggregates (`groupby`): [`value_counts`](DataFrame::value_counts)
//! and [`nunique`](DataFrame::nunique); and [`describe`](DataFrame::describe), whose
//! quantiles come from the sort's weighted samples (`sort`).

use super::groupby::Aggregation;
use super::ops::Op;
use super::sort::{samples, weighted_quantile};
use super::{DataFrame, describe, polars_message};
use crate::error::{Error, Result};
use polars::prelude::{
    DataFrame as Frame, DataType, IDX_DTYPE, IntoColumn, NamedFrom, Series, col, lit,
};

/// The rows of [`DataFrame::describe`], as Dask names them.
pub const DESCRIBE_ROWS: [&str; 8] = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"];

/// Values sampled per partition and column for `describe`'s quantiles.
const DESCRIBE_SAMPLES: usize = 1000;

/// The name of the constant key the whole-frame summaries group by.
const ALL: &str = "__mpidask_all";

impl DataFrame {
    /// How often each value of `column` occurs, most frequent first (ties in the values'
    /// order), nulls left out: Dask's `ddf[column].value_counts()`, as a dataframe of one
    /// partition with the columns `column` and `count`.
    pub fn value_counts(&self, column: &str) -> Result<DataFrame> {
        self.key_columns("value_counts", &[column])?;
        self.drop_nulls(Some(&[column]))?
            .groupby(&[column])?
            .agg(&[Aggregation::count(column).alias("count")])?
            // The groups come sorted by value; a stable sort keeps that among equal counts.
            .then_op(Op::Sort {
                by: vec!["count".into()],
                descending: true,
            })
    }

    /// The number of distinct non-null values of every column: Dask's `ddf.nunique()`, as a
    /// dataframe of one partition and one row, a column of counts per column.
    pub fn nunique(&self) -> Result<DataFrame> {
        let columns: Vec<String> = self.columns().iter().map(|c| c.to_string()).collect();
        let distinct = |c: &str| format!("{ALL}distinct_{c}");
        let nulls = |c: &str| format!("{ALL}nulls_{c}");
        let mut marked = vec![lit(0i32).alias(ALL)];
        marked.extend(columns.iter().map(|c| {
            col(c.as_str())
                .is_null()
                .cast(DataType::UInt64)
                .alias(nulls(c))
        }));
        let mut aggs = Vec::new();
        for c in &columns {
            aggs.push(Aggregation::n_unique(c).alias(&distinct(c)));
            aggs.push(Aggregation::sum(&nulls(c)));
        }
        let grouped = self.with_columns(marked)?.groupby(&[ALL])?.agg(&aggs)?;
        // A null counts as a distinct value for n_unique: take it off where there was one.
        // The sums make one row of the one group, or of zeros when there are no rows.
        grouped.then_op(Op::Select(
            columns
                .iter()
                .map(|c| {
                    (col(distinct(c)).sum().cast(IDX_DTYPE)
                        - col(nulls(c)).sum().gt(lit(0u64)).cast(IDX_DTYPE))
                    .alias(c.as_str())
                })
                .collect(),
        ))
    }

    /// Count, mean, standard deviation (`ddof` 1), min, the 25 %, 50 % and 75 % quantiles
    /// and max of every numeric column, as a Polars frame on the client: a column
    /// `statistic` naming the rows ([`DESCRIBE_ROWS`], Dask's `describe()` rows) and one
    /// `f64` column per numeric column (nulls left out). Count, mean, std, min and max are
    /// exact (the group-by's tree of partial aggregates). The quantiles are the nearest
    /// ranks (as Polars' `describe`) among sorted samples of 1000 values per partition,
    /// weighted by the partition's length: exact when no partition holds more values,
    /// approximate above, as Dask's are. The dataframe is persisted first and computed.
    pub fn describe(&self) -> Result<Frame> {
        let numeric: Vec<String> = self
            .schema
            .iter()
            .filter(|(_, dtype)| dtype.is_primitive_numeric())
            .map(|(name, _)| name.to_string())
            .collect();
        if numeric.is_empty() {
            return Err(Error::Config(format!(
                "describe: no numeric column (the columns are {})",
                describe(&self.schema)
            )));
        }
        let names: Vec<&str> = numeric.iter().map(String::as_str).collect();
        let values = self
            .select(&names)?
            .with_columns(
                numeric
                    .iter()
                    .map(|c| col(c.as_str()).cast(DataType::Float64))
                    .collect::<Vec<_>>(),
            )?
            .persist()?;
        let stat = |c: &str, s: &str| format!("{ALL}{s}_{c}");
        let mut aggs = Vec::new();
        for c in &numeric {
            aggs.push(Aggregation::count(c).alias(&stat(c, "count")));
            aggs.push(Aggregation::mean(c).alias(&stat(c, "mean")));
            aggs.push(Aggregation::std(c).alias(&stat(c, "std")));
            aggs.push(Aggregation::min(c).alias(&stat(c, "min")));
            aggs.push(Aggregation::max(c).alias(&stat(c, "max")));
        }
        let stats = values
            .with_columns([lit(0i32).alias(ALL)])?
            .groupby(&[ALL])?
            .agg(&aggs)?
            .compute()?;
        let sampled = samples(&values, &numeric, DESCRIBE_SAMPLES)?;
        let failed = |e: polars::prelude::PolarsError| {
            Error::Config(format!("describe: {}", polars_message(&e)))
        };
        let mut columns = vec![Series::new("statistic".into(), DESCRIBE_ROWS).into_column()];
        for (i, c) in numeric.iter().enumerate() {
            let get = |s: &str| -> Result<Option<f64>> {
                if stats.height() == 0 {
                    return Ok(None);
                }
                let column = stats
                    .column(&stat(c, s))
                    .and_then(|v| v.cast(&DataType::Float64))
                    .map_err(failed)?;
                Ok(column.f64().map_err(failed)?.get(0))
            };
            let per_partition: Vec<(Vec<f64>, u64)> = sampled
                .iter()
                .map(|partition| {
                    let (sample, len) = &partition[i];
                    let values = sample
                        .column(c)
                        .and_then(|v| v.f64().map(|v| v.into_no_null_iter().collect()))
                        .map_err(failed)?;
                    Ok((values, *len))
                })
                .collect::<Result<_>>()?;
            let quantile = |q: f64| weighted_quantile(&per_partition, q);
            let count = get("count")?.unwrap_or(0.0);
            let values = [
                Some(count),
                get("mean")?,
                get("std")?,
                get("min")?,
                quantile(0.25),
                quantile(0.5),
                quantile(0.75),
                get("max")?,
            ];
            columns.push(Series::new(c.as_str().into(), values).into_column());
        }
        Frame::new_infer_height(columns).map_err(failed)
    }
}
