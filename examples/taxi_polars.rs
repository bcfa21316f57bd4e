//! The taxi example's group-by and merge by Polars alone, in one process, over a directory
//! of the example's Parquet files: the baseline `benches/dataframes.rs` runs beside
//! mpidask. It names Polars directly and does not link mpidask, so it runs on the system
//! allocator and shares none of mpidask's code.
//!
//! ```text
//! cargo build --release --example taxi_polars
//! target/release/examples/taxi_polars DIR       # POLARS_MAX_THREADS=1 for one thread
//! ```
//!
//! Prints one `RESULT name=... seconds=... check=... rows=...` line per query, then checks
//! itself against counts the queries did not make (a group for each passenger count with a
//! fare, each mean a tip fraction, every trip in the merge); exit code 1 when wrong.

#[path = "taxi/data.rs"]
#[allow(dead_code)] // only the zone table: the trips are read from the files
mod data;

use anyhow::{Context, ensure};
use polars::prelude::{
    DataType, IntoLazy, JoinArgs, JoinCoalesce, JoinType, LazyFrame, ScanArgsParquet, col, lit,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

type Frame = polars::prelude::DataFrame;

/// The Parquet files of `dir`, sorted.
fn parquet_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no Parquet file in {}", dir.display());
    Ok(files)
}

/// The sum of the `f64` column `name`.
fn column_sum(frame: &Frame, name: &str) -> anyhow::Result<f64> {
    Ok(frame.column(name)?.f64()?.into_no_null_iter().sum())
}

/// The sum of the column `name` as a count.
fn count_sum(frame: &Frame, name: &str) -> anyhow::Result<i64> {
    Ok(frame
        .column(name)?
        .cast(&DataType::Int64)?
        .i64()?
        .into_no_null_iter()
        .sum())
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: taxi_polars DIR (a directory of the taxi example's Parquet files)")?;
    let files = parquet_files(&dir)?;
    let scan = |columns: &[&str]| -> anyhow::Result<LazyFrame> {
        let paths = files
            .iter()
            .map(|p| p.display().to_string().as_str().into())
            .collect();
        let columns: Vec<_> = columns.iter().map(|c| col(*c)).collect();
        Ok(LazyFrame::scan_parquet_files(paths, ScanArgsParquet::default())?.select(columns))
    };

    let started = Instant::now();
    let means = scan(&["passenger_count", "fare_amount", "tip_amount"])?
        .filter(col("fare_amount").gt(lit(0.0)))
        .with_columns([(col("tip_amount") / col("fare_amount")).alias("tip_fraction")])
        .group_by([col("passenger_count")])
        .agg([col("tip_fraction").mean()])
        .collect()?;
    let seconds = started.elapsed().as_secs_f64();
    let check = column_sum(&means, "tip_fraction")?;
    println!("RESULT name=taxi_groupby seconds={seconds} check={check:?} rows=-1");

    let started = Instant::now();
    let boroughs = scan(&["PULocationID", "fare_amount"])?
        .join(
            data::zones().lazy(),
            [col("PULocationID")],
            [col("LocationID")],
            JoinArgs::new(JoinType::Left).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .group_by([col("Borough")])
        .agg([
            col("fare_amount").count().alias("trips"),
            col("fare_amount").mean().alias("fare"),
        ])
        .collect()?;
    let seconds = started.elapsed().as_secs_f64();
    let (check, rows) = (
        column_sum(&boroughs, "fare")?,
        count_sum(&boroughs, "trips")?,
    );
    println!("RESULT name=taxi_merge seconds={seconds} check={check:?} rows={rows}");

    // The checks, untimed, against counts the queries did not make: a group for every
    // passenger count of a trip with a fare, each mean a tip fraction (the data's tips are
    // 10 % to 25 % of card fares, none otherwise), every trip in the merge.
    let counted = |frame: LazyFrame| -> anyhow::Result<i64> {
        count_sum(&frame.select([col("n")]).collect()?, "n")
    };
    let groups = counted(
        scan(&["passenger_count", "fare_amount"])?
            .filter(col("fare_amount").gt(lit(0.0)))
            .select([col("passenger_count").n_unique().alias("n")]),
    )?;
    let all = counted(scan(&["fare_amount"])?.select([col("fare_amount").count().alias("n")]))?;
    ensure!(
        means.height() as i64 == groups,
        "the group-by gave {} groups, the files have {groups} passenger counts with a fare",
        means.height()
    );
    let fractions = means.column("tip_fraction")?.f64()?;
    ensure!(
        fractions
            .into_no_null_iter()
            .all(|f| (0.0..=0.25).contains(&f)),
        "a mean tip fraction outside [0, 0.25]: {means}"
    );
    ensure!(
        rows == all,
        "the merge counted {rows} trips, the files hold {all}"
    );
    Ok(())
}
