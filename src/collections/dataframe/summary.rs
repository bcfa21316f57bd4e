//! Summaries of a dataframe's values, each a small dataframe of one partition built from
//! the group-by's tree of partial aggregates (`groupby`): [`value_counts`](DataFrame::value_counts)
//! and [`nunique`](DataFrame::nunique).

use super::DataFrame;
use super::groupby::Aggregation;
use super::ops::Op;
use crate::error::Result;
use polars::prelude::{DataType, IDX_DTYPE, col, lit};

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
}
