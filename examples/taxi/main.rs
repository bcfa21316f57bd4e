//! Taxi trips with dataframes, as a Dask user writes them:
//!
//! ```python
//! df = dd.read_parquet("taxi/*.parquet")
//! df[df.fare_amount > 0].assign(tip_fraction=df.tip_amount / df.fare_amount) \
//!     .groupby("passenger_count").tip_fraction.mean().compute()
//! df.PULocationID.value_counts().head(10)
//! df.merge(zones, left_on="PULocationID", right_on="LocationID", how="left") \
//!     .groupby("Borough").agg(trips=("fare_amount", "count"), fare=("fare_amount", "mean"))
//! df.sort_values("fare_amount", ascending=False).head(10)
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/taxi                      # writes 0.5 GB of Parquet first
//! mpirun -np 4 target/release/examples/taxi --rows 1000000 --files 8
//! mpirun -np 4 target/release/examples/taxi --input taxi-data
//! ```
//!
//! Without `--input` the workers first write `--rows` trips (40 million by default, about
//! 1.9 GB in memory, 0.5 GB of Parquet) in `--files` files to `--dir`, in the shape of the
//! NYC taxi trips table: pickup time (`pickup_ms`, milliseconds since 1970: this
//! Polars build has no datetime type), passenger count, distance, fare, tip, payment type
//! and pickup and drop-off zone ids (1 to 265). Every value comes from a counter-based
//! hash of its row, so the data is the same at any rank count. Then it runs the four
//! analyses above and prints them with their times, and checks itself: the same analyses
//! by Polars alone on the first file (a sample the client holds) must equal mpidask's on
//! that file; it exits non-zero when they differ (`CHECK ok` otherwise).

use anyhow::{Context, ensure};
use clap::Parser;
use mpidask::Client;
use mpidask::dataframe::{Aggregation, DataFrame, How, MergeOptions, SortOptions, polars};
use polars::prelude::{
    DataType, IntoLazy, JoinArgs, JoinCoalesce, JoinType, LazyFrame, ScanArgsParquet,
    SortMultipleOptions, col, lit,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod data;
use data::{trips, zones};

type Frame = polars::prelude::DataFrame;

/// Mean tip fraction by passenger count, top zones, a merge with the zones, a sort by fare.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// A directory of Parquet files with the taxi columns, instead of writing new ones
    #[arg(long)]
    input: Option<PathBuf>,

    /// Trips to write
    #[arg(long, default_value_t = 40_000_000)]
    rows: u64,

    /// Files to write them to (one partition each)
    #[arg(long, default_value_t = 40)]
    files: u64,

    /// Where the files are written (must not hold parts already)
    #[arg(long, default_value = "taxi-data")]
    dir: PathBuf,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// The workers write the synthetic trips, one file per partition.
fn generate(client: &Client, cli: &Cli) -> anyhow::Result<()> {
    let files = cli.files.max(1);
    let per_file = cli.rows.div_ceil(files);
    let parts: Vec<_> = (0..files)
        .map(|i| {
            let (start, end) = (
                (i * per_file).min(cli.rows),
                ((i + 1) * per_file).min(cli.rows),
            );
            mpidask::delayed::delayed(trips, (start, end))
        })
        .collect();
    DataFrame::from_delayed(client, &parts)?
        .to_parquet(&cli.dir)
        .with_context(|| format!("writing the trips to {}", cli.dir.display()))?;
    Ok(())
}

/// The four results.
struct Results {
    tip_by_passengers: Frame,
    top_zones: Frame,
    boroughs: Frame,
    top_fares: Frame,
}

/// The analyses by mpidask, each timed (printed when `show`).
fn analyses(client: &Client, trips: &DataFrame, show: bool) -> anyhow::Result<Results> {
    let timed = |what: &str, started: Instant, frame: &Frame| {
        if show {
            println!(
                "{what} ({:.2} s):\n{frame}",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let started = Instant::now();
    let tip_by_passengers = trips
        .filter(col("fare_amount").gt(lit(0.0)))?
        .with_columns([(col("tip_amount") / col("fare_amount")).alias("tip_fraction")])?
        .groupby(&["passenger_count"])?
        .agg(&[Aggregation::mean("tip_fraction")])?
        .compute()?;
    timed(
        "mean tip fraction by passenger count",
        started,
        &tip_by_passengers,
    );

    let started = Instant::now();
    let top_zones = trips.value_counts("PULocationID")?.head(10)?;
    timed("top 10 pickup zones by trips", started, &top_zones);

    let started = Instant::now();
    let zones = DataFrame::from_polars(client, &zones(), 1)?;
    let boroughs = trips
        .merge_with(
            &zones,
            &["PULocationID"],
            &["LocationID"],
            How::Left,
            &MergeOptions::default(),
        )?
        .groupby(&["Borough"])?
        .agg(&[
            Aggregation::count("fare_amount").alias("trips"),
            Aggregation::mean("fare_amount").alias("fare"),
        ])?
        .compute()?;
    timed(
        "trips and mean fare by pickup borough (a merge with the zones)",
        started,
        &boroughs,
    );

    let started = Instant::now();
    let options = SortOptions {
        descending: true,
        ..SortOptions::default()
    };
    let top_fares = trips
        .sort_values_with(&["fare_amount"], &options)?
        .head(10)?;
    let shown = top_fares.select(["fare_amount", "tip_amount", "trip_distance", "PULocationID"])?;
    timed("the 10 highest fares (a sort)", started, &shown);
    Ok(Results {
        tip_by_passengers,
        top_zones,
        boroughs,
        top_fares,
    })
}

/// The same analyses by Polars alone on `trips`.
fn by_polars(trips: LazyFrame) -> anyhow::Result<Results> {
    let tip_by_passengers = trips
        .clone()
        .filter(col("fare_amount").gt(lit(0.0)))
        .with_columns([(col("tip_amount") / col("fare_amount")).alias("tip_fraction")])
        .group_by([col("passenger_count")])
        .agg([col("tip_fraction").mean()])
        .sort(["passenger_count"], SortMultipleOptions::default())
        .collect()?;
    let top_zones = trips
        .clone()
        .group_by([col("PULocationID")])
        .agg([col("PULocationID").count().alias("count")])
        .sort(["PULocationID"], SortMultipleOptions::default())
        .sort(
            ["count"],
            SortMultipleOptions::default()
                .with_order_descending(true)
                .with_maintain_order(true),
        )
        .limit(10)
        .collect()?;
    let boroughs = trips
        .clone()
        .join(
            zones().lazy(),
            [col("PULocationID")],
            [col("LocationID")],
            JoinArgs::new(JoinType::Left).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .group_by([col("Borough")])
        .agg([
            col("fare_amount").count().alias("trips"),
            col("fare_amount").mean().alias("fare"),
        ])
        .sort(["Borough"], SortMultipleOptions::default())
        .collect()?;
    let top_fares = trips
        .sort(
            ["fare_amount"],
            SortMultipleOptions::default()
                .with_order_descending(true)
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .limit(10)
        .collect()?;
    Ok(Results {
        tip_by_passengers,
        top_zones,
        boroughs,
        top_fares,
    })
}

/// Equal frames, floats within 1e-12 relative (sums added in another order).
fn same(what: &str, mine: &Frame, polars: &Frame) -> anyhow::Result<()> {
    ensure!(
        mine.schema() == polars.schema() && mine.height() == polars.height(),
        "{what}: mpidask gave\n{mine}\nPolars gave\n{polars}"
    );
    for (a, b) in mine.columns().iter().zip(polars.columns()) {
        if a.dtype() == &DataType::Float64 {
            for (x, y) in a.f64()?.iter().zip(b.f64()?.iter()) {
                let close = match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * y.abs().max(1.0),
                    (x, y) => x == y,
                };
                ensure!(close, "{what}, {}: mpidask {x:?}, Polars {y:?}", a.name());
            }
        } else {
            ensure!(
                a.equals_missing(b),
                "{what}: mpidask gave\n{mine}\nPolars gave\n{polars}"
            );
        }
    }
    Ok(())
}

fn first_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let pattern = dir.join("*.parquet").display().to_string();
    mpidask::bag::expand_glob(&pattern)?
        .into_iter()
        .next()
        .with_context(|| format!("no Parquet file in {}", dir.display()))
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let dir = match &cli.input {
            Some(dir) => dir.clone(),
            None => {
                let started = Instant::now();
                generate(client, &cli)?;
                println!(
                    "wrote {} trips to {} in {:.1} s",
                    cli.rows,
                    cli.dir.display(),
                    started.elapsed().as_secs_f64()
                );
                cli.dir.clone()
            }
        };
        let pattern = dir.join("*.parquet").display().to_string();
        let started = Instant::now();
        let trips = DataFrame::read_parquet(client, &pattern)?.persist()?;
        let rows = trips.len()?;
        println!(
            "read {rows} trips in {} partitions in {:.2} s",
            trips.npartitions(),
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let results = analyses(client, &trips, true)?;
        println!(
            "RESULT rows={rows} seconds={:.3}",
            started.elapsed().as_secs_f64()
        );
        let total: u64 = results
            .boroughs
            .column("trips")?
            .cast(&DataType::UInt64)?
            .u64()?
            .into_no_null_iter()
            .sum();
        ensure!(
            total == rows as u64,
            "the boroughs count {total} trips of {rows}"
        );

        // The check: both on the first file, which the client can hold.
        let sample_path = first_file(&dir)?;
        let sample = DataFrame::read_parquet(client, &sample_path.display().to_string())?;
        let mine = analyses(client, &sample, false)?;
        let sample_name = sample_path.display().to_string();
        let polars = by_polars(LazyFrame::scan_parquet(
            sample_name.as_str().into(),
            ScanArgsParquet::default(),
        )?)?;
        same(
            "tip fraction",
            &mine.tip_by_passengers,
            &polars.tip_by_passengers,
        )?;
        same("top zones", &mine.top_zones, &polars.top_zones)?;
        same("boroughs", &mine.boroughs, &polars.boroughs)?;
        same("top fares", &mine.top_fares, &polars.top_fares)?;
        println!(
            "CHECK ok: the four analyses equal Polars' on {} ({} trips)",
            sample_path.display(),
            sample.len()?
        );
        Ok(())
    });
}
