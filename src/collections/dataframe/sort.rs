//! Sorting across partitions, Dask's `sort_values` and `set_index`: the dataframe is
//! persisted, every partition sends a sorted sample of the first sort column (at most
//! [`SortOptions::samples`] values, weighted by the partition's length), the client picks
//! boundaries at the weighted quantiles of the samples, the rows move by a range shuffle
//! (`shuffle`) and each output partition is sorted where it lands. Partition `k` then holds
//! the values between boundaries `k - 1` and `k`, so the partitions in order are the
//! sorted rows; nulls come last, as in Dask.

use super::shuffle::{Route, stack_frames};
use super::{DataFrame, Divisions, describe, polars_message, value_arg};
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::task::{CallError, encode_result};
use polars::prelude::{
    DataFrame as Frame, DataType, IdxCa, IdxSize, IntoColumn, IntoLazy, PolarsResult, Series,
    SortMultipleOptions, SortOptions as PolarsSortOptions,
};
use serde::{Deserialize, Serialize};

/// How [`DataFrame::sort_values_with`] sorts.
#[derive(Clone, Debug)]
pub struct SortOptions {
    /// Largest first (nulls still last). Default: smallest first.
    pub descending: bool,
    /// Partitions of the result (default: as many as the input has).
    pub npartitions: Option<usize>,
    /// Values of the first sort column each partition sends to choose the boundaries
    /// (default 1000): more gives partitions of more even lengths.
    pub samples: usize,
}

impl Default for SortOptions {
    fn default() -> Self {
        SortOptions {
            descending: false,
            npartitions: None,
            samples: 1000,
        }
    }
}

/// How each output partition is sorted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Spec {
    by: Vec<String>,
    descending: bool,
}

fn sort_frame(frame: Frame, spec: &Spec) -> PolarsResult<Frame> {
    frame
        .lazy()
        .sort(
            spec.by.clone(),
            SortMultipleOptions::default()
                .with_order_descending(spec.descending)
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .collect()
}

/// For each of `columns`, a sorted sample of its non-null values in a partition (the first
/// and last included) and the partition's number of non-null values, encoded.
pub(super) fn sample_sink(
    frames: Vec<Frame>,
    (columns, samples): (Vec<String>, u64),
) -> std::result::Result<Bytes, CallError> {
    let sample = |frame: &Frame, column: &str| -> PolarsResult<(Frame, u64)> {
        let values = frame
            .column(column)?
            .as_materialized_series()
            .drop_nulls()
            .sort(PolarsSortOptions::default().with_maintain_order(true))?;
        let len = values.len();
        let take = (samples as usize).min(len);
        let idx: Vec<IdxSize> = match take {
            0 => Vec::new(),
            1 => vec![0],
            _ => (0..take)
                .map(|k| ((k * (len - 1)) / (take - 1)) as IdxSize)
                .collect(),
        };
        let picked = values.take(&IdxCa::from_vec("".into(), idx))?;
        Ok((
            Frame::new_infer_height(vec![picked.into_column()])?,
            len as u64,
        ))
    };
    let frame = stack_frames(frames, None)
        .map_err(|e| CallError::Failed(format!("sampling: {}", polars_message(&e))))?;
    let result = columns
        .iter()
        .map(|c| {
            sample(&frame, c)
                .map_err(|e| CallError::Failed(format!("sampling '{c}': {}", polars_message(&e))))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    encode_result(&result)
}

/// The samples of every column of `columns` in every partition (the dataframe should be
/// stored: the partitions are computed for this).
pub(super) fn samples(
    frame: &DataFrame,
    columns: &[String],
    size: usize,
) -> Result<Vec<Vec<(Frame, u64)>>> {
    let parameter = value_arg("a sample size", &(columns.to_vec(), size.max(2) as u64))?;
    let samples: Vec<crate::client::Future<Vec<(Frame, u64)>>> =
        frame
            .parts
            .run_raw(sample_sink, "sample", |_| vec![parameter.clone()]);
    frame.parts.client().gather(&samples)
}

/// The value at quantile `q` (nearest rank, as Polars' `describe`) of the values the
/// weighted samples stand for: exact when every value was sampled.
pub(super) fn weighted_quantile(samples: &[(Vec<f64>, u64)], q: f64) -> Option<f64> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (values, len) in samples {
        if values.is_empty() {
            continue;
        }
        let weight = *len as f64 / values.len() as f64;
        points.extend(values.iter().map(|&v| (v, weight)));
    }
    if points.is_empty() {
        return None;
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = points.iter().map(|p| p.1).sum();
    let target = (q * (total - 1.0)).round();
    let mut cumulative = 0.0;
    for (value, weight) in &points {
        cumulative += weight;
        if cumulative > target + 1e-9 {
            return Some(*value);
        }
    }
    points.last().map(|p| p.0)
}

/// `n - 1` boundaries (fewer when values repeat) at the weighted quantiles of the samples,
/// and the smallest and largest value sampled (every partition's first and last are).
fn boundaries(
    column: &str,
    samples: Vec<(Frame, u64)>,
    n: usize,
) -> PolarsResult<Option<(Series, Series)>> {
    let mut values: Vec<Series> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    for (sample, len) in samples {
        let s = sample.column(column)?.as_materialized_series().clone();
        if s.is_empty() {
            continue;
        }
        weights.extend(std::iter::repeat_n(len as f64 / s.len() as f64, s.len()));
        values.push(s);
    }
    let Some(first) = values.first() else {
        return Ok(None);
    };
    let mut all = first.clone();
    for s in &values[1..] {
        all.append(s)?;
    }
    let order = all.arg_sort(PolarsSortOptions::default().with_maintain_order(true));
    let sorted = all.take(&order)?;
    let total: f64 = weights.iter().sum();
    let mut picks: Vec<IdxSize> = Vec::new();
    let mut cumulative = 0.0;
    let mut k = 1;
    for (rank, i) in order.into_no_null_iter().enumerate() {
        cumulative += weights[i as usize];
        while k < n && cumulative >= total * k as f64 / n as f64 {
            picks.push(rank as IdxSize);
            k += 1;
        }
    }
    let picked = sorted.take(&IdxCa::from_vec("".into(), picks))?;
    // Equal boundaries would make empty partitions: keep each value once.
    let picked = picked.unique_stable()?;
    let ends = sorted.take(&IdxCa::from_vec(
        "".into(),
        vec![0, sorted.len() as IdxSize - 1],
    ))?;
    Ok(Some((picked, ends)))
}

impl DataFrame {
    /// The rows sorted by the columns `by` (the first decides the partitions; the others
    /// break ties), smallest first, nulls last: Dask's `sort_values`. Persists the
    /// dataframe and samples it first (see the module's documentation), so this waits for
    /// the input to be computed; the sort itself is lazy like any result.
    pub fn sort_values(&self, by: &[&str]) -> Result<DataFrame> {
        self.sort_values_with(by, &SortOptions::default())
    }

    /// [`sort_values`](Self::sort_values) with options (descending, number of partitions,
    /// sample size).
    pub fn sort_values_with(&self, by: &[&str], options: &SortOptions) -> Result<DataFrame> {
        self.sorted(by, options).map(|(frame, _)| frame)
    }

    /// The rows sorted by `column` with each partition's range of it known (Dask's
    /// `set_index`, whose partitions' ranges are its `divisions`; a Polars frame has no
    /// index, so the column stays a column): see [`divisions`](Self::divisions).
    pub fn set_index(&self, column: &str) -> Result<DataFrame> {
        let (mut frame, ends) = self.sorted(&[column], &SortOptions::default())?;
        if let Some((boundaries, ends)) = ends {
            let mut values = ends.slice(0, 1);
            values
                .append(&boundaries)
                .and_then(|v| v.append(&ends.slice(1, 1)).map(|_| ()))
                .map_err(|e| Error::Config(format!("set_index('{column}'): {e}")))?;
            frame.divisions = Some(Divisions {
                column: column.to_string(),
                values,
            });
        }
        Ok(frame)
    }

    /// The sort, with the boundaries and the smallest and largest value when any.
    fn sorted(
        &self,
        by: &[&str],
        options: &SortOptions,
    ) -> Result<(DataFrame, Option<(Series, Series)>)> {
        let by = self.key_columns("sort_values", by)?;
        let first = &by[0];
        let dtype = self.schema.get(first).cloned().unwrap_or(DataType::Null);
        let failed = |e: polars::prelude::PolarsError| {
            Error::Config(format!(
                "sort_values({by:?}): {} (the columns are {})",
                polars_message(&e),
                describe(&self.schema)
            ))
        };
        // A type without an order is an error here, before anything runs.
        let probe =
            Frame::new_infer_height(vec![Series::new_empty(first.into(), &dtype).into_column()])
                .map_err(failed)?;
        Route::Range {
            column: first.clone(),
            boundaries: probe.clone(),
            descending: false,
        }
        .targets(&probe)
        .map_err(failed)?;
        let spec = Spec {
            by: by.clone(),
            descending: options.descending,
        };
        sort_frame(Frame::empty_with_arc_schema(self.schema.clone()), &spec).map_err(failed)?;

        let stored = self.persist()?;
        let n = options.npartitions.unwrap_or(self.npartitions()).max(1);
        let samples = samples(&stored, std::slice::from_ref(first), options.samples)?
            .into_iter()
            .flatten()
            .collect();
        let ends = boundaries(first, samples, n).map_err(failed)?;
        let bounds = match &ends {
            Some((b, _)) => {
                Frame::new_infer_height(vec![b.clone().into_column()]).map_err(failed)?
            }
            None => probe,
        };
        let route = Route::Range {
            column: first.clone(),
            boundaries: bounds,
            descending: options.descending,
        };
        let sorted = stored.shuffled(
            &route,
            "sort_values",
            sort_frame,
            &spec,
            self.schema.clone(),
        )?;
        Ok((sorted, ends))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{NamedFrom, df};

    #[test]
    fn boundaries_follow_the_weights_and_skip_repeats() {
        // Partition 0: 1..=100 sampled at 10 values; partition 1: 1000 rows of 500.
        let a = Frame::new_infer_height(vec![
            Series::new(
                "x".into(),
                (0..10).map(|k| 1 + k * 11).collect::<Vec<i64>>(),
            )
            .into_column(),
        ])
        .unwrap();
        let b = df!("x" => [500i64, 500]).unwrap();
        let (picked, ends) = boundaries("x", vec![(a, 100), (b, 1000)], 4)
            .unwrap()
            .unwrap();
        // 1100 rows: the quantiles at 275, 550 and 825 all fall among the 500s.
        assert_eq!(
            picked
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect::<Vec<_>>(),
            vec![500]
        );
        assert_eq!(
            ends.i64().unwrap().into_no_null_iter().collect::<Vec<_>>(),
            vec![1, 500]
        );
        let empty = df!("x" => Vec::<i64>::new()).unwrap();
        assert!(boundaries("x", vec![(empty, 0)], 3).unwrap().is_none());
    }
}
