//! Dataframes under `mpirun -np 4` (2 workers of one thread), against their peers and
//! baselines in the same run.
//!
//! The taxi workloads read 5 GB of trips (5 GB in memory: 104 million rows of the eight
//! columns of `examples/taxi/data.rs`, 48 bytes a row; the files hold 1.35 GB, the
//! rounded values compress well), written once before the rounds by mpidask's workers as
//! 53 Parquet files of up to 2 million rows (untimed) and removed at the end. Each
//! workload reads the files inside its timing, from the call to the value on the client,
//! with the columns it needs:
//!
//! * `taxi_groupby`: the trips with a fare, the mean tip fraction by passenger count;
//! * `taxi_merge`: a left merge with the 265-zone table (a broadcast join), then the trips
//!   and the mean fare by borough.
//!
//! Each round launches, in turn: mpidask (both workloads, one launch); Python's
//! `dask.dataframe` under `dask-mpi` at the same `-np` (`benches/taxi_dask.py`, the same
//! expressions on the same files); Polars alone in one process (`examples/taxi_polars.rs`,
//! which does not link mpidask: lazy scans of the same files, the same queries; `make
//! bench` builds it) on one thread (`POLARS_MAX_THREADS=1`: one worker's share
//! of the machine, the unit of the goal of 0.7 x workers) and on every core. Every side's
//! answer is compared with mpidask's (the sum of the means, within 1e-9 relative; the
//! merge's trips must count every row).
//!
//! `shuffle`: a full hash shuffle of 5 GB (125 million rows: a random `u64` key and four
//! `f64` columns, 40 bytes a row, in 50 partitions of 100 MB made and persisted on the
//! workers untimed) by the key into 50 partitions, timed from the call until every output
//! partition is held by a worker (`shuffle(&["key"], 50).persist()`); then its rows and the
//! sum of a column are checked against the input's. Its baseline moves the same bytes with
//! one `MPI_Alltoallv` between two ranks of a hand-written C program (`benches/alltoallv.c`,
//! built by this bench with `mpicc -O3 -march=native`; a communicator split from 4 ranks,
//! the other two waiting as mpidask's scheduler and client do), each rank sending half of
//! its 2.5 GB to the other, timed from a barrier to a barrier, the received words checked;
//! its buffers ask for huge pages as mpidask's allocator does. It times two calls: into a
//! new receive buffer (`shuffle_alltoallv_s`: the kernel faults the pages in, as it does
//! for every new value of the shuffle) and again into the same one
//! (`shuffle_alltoallv_warm_s`: the raw bandwidth of the call). Figures: GB/s of each, and
//! the shuffle's ratio to each, round by round.
//!
//! `MPIDASK_BENCH_TAXI_GB` and `MPIDASK_BENCH_SHUFFLE_GB` change the sizes (in memory).
//!
//! ```text
//! cargo bench --bench dataframes [-- taxi | shuffle]
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../examples/taxi/data.rs"]
mod taxi_data;

use anyhow::ensure;
use common::{Scratch, figure, peer_python, ratio, rounds, size, smoke};
use mpidask::dataframe::polars;
use mpidask::dataframe::{Aggregation, DataFrame, How, MergeOptions, ParquetOptions};
use polars::prelude::{DataType, col, df, lit};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, run_with_deadline};

type Frame = polars::prelude::DataFrame;

const NP: usize = 4;
const WORKERS: usize = NP - 2;
/// Bytes of a taxi row in memory: an `i64`, three `f64` and four `i32` columns.
const TAXI_ROW_BYTES: u64 = 48;
/// Bytes of a shuffled row: a `u64` key and four `f64` columns.
const SHUFFLE_ROW_BYTES: u64 = 40;
/// Rows of a file or partition: about 100 MB in memory.
const ROWS_PER_PART: u64 = 2_000_000;
const WORKLOADS: [&str; 2] = ["taxi_groupby", "taxi_merge"];

/// Gigabytes from `var`, or `default`.
fn gigabytes(var: &str, default: f64) -> f64 {
    std::env::var(var)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var}={v} is not a number of gigabytes"))
        })
        .unwrap_or(default)
}

/// Taxi rows and files.
fn taxi_sizes() -> (u64, u64) {
    let rows = size(
        (gigabytes("MPIDASK_BENCH_TAXI_GB", 5.0) * 1e9) as u64 / TAXI_ROW_BYTES,
        200_000,
    );
    (rows, rows.div_ceil(size(ROWS_PER_PART, 50_000)))
}

/// Shuffled rows and partitions.
fn shuffle_sizes() -> (u64, u64) {
    let rows = size(
        (gigabytes("MPIDASK_BENCH_SHUFFLE_GB", 5.0) * 1e9) as u64 / SHUFFLE_ROW_BYTES,
        200_000,
    );
    let per_part = size(ROWS_PER_PART + ROWS_PER_PART / 4, 50_000);
    (rows, rows.div_ceil(per_part))
}

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 180 } else { 1800 })
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_u64(name: &str) -> u64 {
    env(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

// ---- the taxi workloads ----

/// mpidask's workers write the trips, one file per partition (untimed).
fn role_generate() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let (rows, files) = (env_u64("BENCH_ROWS"), env_u64("BENCH_FILES"));
        let per_file = rows.div_ceil(files);
        let parts: Vec<_> = (0..files)
            .map(|i| {
                let range = ((i * per_file).min(rows), ((i + 1) * per_file).min(rows));
                mpidask::delayed::delayed(taxi_data::trips, range)
            })
            .collect();
        DataFrame::from_delayed(client, &parts)?.to_parquet(env("BENCH_DIR"))?;
        Ok(())
    })
}

fn projection(columns: &[&str]) -> ParquetOptions {
    ParquetOptions {
        columns: Some(columns.iter().map(|c| c.to_string()).collect()),
        filter: None,
    }
}

/// The sum of the `f64` column `name` of `frame`.
fn column_sum(frame: &Frame, name: &str) -> anyhow::Result<f64> {
    Ok(frame.column(name)?.f64()?.into_no_null_iter().sum())
}

/// The sum of the column `name` of `frame` as a count.
fn count_sum(frame: &Frame, name: &str) -> anyhow::Result<i64> {
    Ok(frame
        .column(name)?
        .cast(&DataType::Int64)?
        .i64()?
        .into_no_null_iter()
        .sum())
}

/// mpidask's side: both workloads, each printed as `RESULT name= seconds= check= rows=`.
fn role_taxi() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let pattern = format!("{}/*.parquet", env("BENCH_DIR"));
        let started = Instant::now();
        let means = DataFrame::read_parquet_with(
            client,
            &pattern,
            &projection(&["passenger_count", "fare_amount", "tip_amount"]),
        )?
        .filter(col("fare_amount").gt(lit(0.0)))?
        .with_columns([(col("tip_amount") / col("fare_amount")).alias("tip_fraction")])?
        .groupby(&["passenger_count"])?
        .agg(&[Aggregation::mean("tip_fraction")])?
        .compute()?;
        let seconds = started.elapsed().as_secs_f64();
        let check = column_sum(&means, "tip_fraction")?;
        println!("RESULT name=taxi_groupby seconds={seconds} check={check:?} rows=-1");

        let started = Instant::now();
        let zones = DataFrame::from_polars(client, &taxi_data::zones(), 1)?;
        let boroughs = DataFrame::read_parquet_with(
            client,
            &pattern,
            &projection(&["PULocationID", "fare_amount"]),
        )?
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
        let seconds = started.elapsed().as_secs_f64();
        let (check, rows) = (
            column_sum(&boroughs, "fare")?,
            count_sum(&boroughs, "trips")?,
        );
        println!("RESULT name=taxi_merge seconds={seconds} check={check:?} rows={rows}");
        Ok(())
    })
}

/// The Parquet files of `dir`, by a plain directory listing.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

/// One launch's `RESULT` lines: (seconds, check, rows) by workload, all present.
fn taxi_results(run: &Run, who: &str) -> BTreeMap<String, (f64, f64, f64)> {
    run.expect_code(0);
    let found = common::named_results(&run.stdout, who, &["seconds", "check", "rows"]);
    WORKLOADS
        .iter()
        .map(|name| {
            let v = found
                .get(*name)
                .unwrap_or_else(|| panic!("{who} gave no result for {name}\n{}", run.dump()));
            (name.to_string(), (v[0], v[1], v[2]))
        })
        .collect()
}

fn launch_self(role: &str, np: Option<usize>) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = match np {
        Some(np) => mpirun(np, &exe, &[]),
        None => Command::new(&exe),
    };
    command.env("MPIDASK_BENCH_ROLE", role);
    command
}

fn generate(dir: &Path, rows: u64, files: u64) {
    let mut command = launch_self("generate", Some(NP));
    command
        .env("BENCH_DIR", dir)
        .env("BENCH_ROWS", rows.to_string())
        .env("BENCH_FILES", files.to_string());
    run_with_deadline(command, deadline()).expect_code(0);
}

fn launch_taxi(dir: &Path) -> BTreeMap<String, (f64, f64, f64)> {
    let mut command = launch_self("taxi", Some(NP));
    command.env("BENCH_DIR", dir);
    taxi_results(&run_with_deadline(command, deadline()), "mpidask")
}

/// Polars alone: `examples/taxi_polars.rs`, a program of its own that does not link mpidask
/// (so neither its code nor its allocator).
fn launch_polars(dir: &Path, threads: Option<usize>) -> BTreeMap<String, (f64, f64, f64)> {
    let mut command = Command::new(support::example("taxi_polars"));
    command.arg(dir);
    match threads {
        Some(n) => command.env("POLARS_MAX_THREADS", n.to_string()),
        None => command.env_remove("POLARS_MAX_THREADS"),
    };
    taxi_results(&run_with_deadline(command, deadline()), "polars")
}

fn launch_taxi_daskmpi(python: &Path, dir: &Path) -> BTreeMap<String, (f64, f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/taxi_dask.py");
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(script)
        .arg(dir)
        .arg(WORKERS.to_string())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    taxi_results(&run_with_deadline(command, deadline()), "dask-mpi")
}

/// The taxi workloads, round by round against dask-mpi and Polars.
fn taxi() {
    let (rows, files) = taxi_sizes();
    // The peer runs in real runs only: a smoke run checks the project's own code.
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let scratch = Scratch::new("taxi");
    let dir = scratch.0.join("trips");
    let started = Instant::now();
    generate(&dir, rows, files);
    println!(
        "wrote {rows} trips in {files} files ({:.2} GB of Parquet) in {:.1} s",
        parquet_files(&dir)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>() as f64
            / 1e9,
        started.elapsed().as_secs_f64()
    );
    // Every side's times by workload, and the checks compared with mpidask's.
    let sides = ["mpidask", "daskmpi", "polars_1thread", "polars"];
    let mut times: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds() {
        let mut round = vec![("mpidask", launch_taxi(&dir))];
        if let Some(python) = &python {
            round.push(("daskmpi", launch_taxi_daskmpi(python, &dir)));
        }
        round.push(("polars_1thread", launch_polars(&dir, Some(1))));
        round.push(("polars", launch_polars(&dir, None)));
        let ours = round[0].1.clone();
        for (side, results) in &round {
            for name in WORKLOADS {
                let (seconds, check, counted) = results[name];
                let (_, our_check, _) = ours[name];
                assert!(
                    (check - our_check).abs() <= 1e-9 * our_check.abs(),
                    "{name}: {side}'s answer sums to {check}, mpidask's to {our_check}"
                );
                assert!(
                    counted < 0.0 || counted == rows as f64,
                    "{name}: {side} counted {counted} trips of {rows}"
                );
                times.entry((side, name)).or_default().push(seconds);
            }
        }
    }
    for name in WORKLOADS {
        let ours = &times[&("mpidask", name)];
        figure(&format!("{name}_s"), "s", ours, None);
        for side in &sides[1..] {
            let Some(theirs) = times.get(&(*side, name)) else {
                continue;
            };
            let baseline = format!("{name}_{side}_s");
            figure(&baseline, "s", theirs, None);
            ratio(&format!("{name}_vs_{side}"), ours, theirs, true, &baseline);
        }
    }
}

// ---- the shuffle ----

/// Rows `start..end` of the shuffled table: a random key and four uniform columns.
fn shuffle_rows((start, end): (u64, u64)) -> Frame {
    let mix = |mut x: u64| {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
    let key: Vec<u64> = (start..end).map(mix).collect();
    let column = |field: u64| -> Vec<f64> {
        key.iter()
            .map(|k| unit(mix(k.wrapping_add(field))))
            .collect()
    };
    let (a, b, c, d) = (column(1), column(2), column(3), column(4));
    df!("key" => key, "a" => a, "b" => b, "c" => c, "d" => d).expect("one length")
}

/// A partition's row count and the sum of its column `a`, as a one-row frame.
fn rows_and_sum(frame: Frame) -> polars::prelude::PolarsResult<Frame> {
    let sum: f64 = frame.column("a")?.f64()?.into_no_null_iter().sum();
    df!("rows" => [frame.height() as u64], "a" => [sum])
}

/// The rows and the sum of `a` of `frame` (one task per partition).
fn totals(frame: &DataFrame) -> anyhow::Result<(u64, f64)> {
    let parts = frame.map_partitions(rows_and_sum)?.compute()?;
    let rows = parts.column("rows")?.u64()?.into_no_null_iter().sum();
    Ok((rows, column_sum(&parts, "a")?))
}

/// mpidask's shuffle: makes and persists the table (untimed), then times the shuffle.
fn role_shuffle() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let (rows, parts) = (env_u64("BENCH_ROWS"), env_u64("BENCH_PARTS"));
        let per_part = rows.div_ceil(parts);
        let pieces: Vec<_> = (0..parts)
            .map(|i| {
                let range = ((i * per_part).min(rows), ((i + 1) * per_part).min(rows));
                mpidask::delayed::delayed(shuffle_rows, range)
            })
            .collect();
        let table = DataFrame::from_delayed(client, &pieces)?.persist()?;
        let before = totals(&table)?;
        let started = Instant::now();
        let shuffled = table.shuffle(&["key"], parts as usize)?.persist()?;
        let seconds = started.elapsed().as_secs_f64();
        let after = totals(&shuffled)?;
        ensure!(
            after.0 == before.0 && (after.1 - before.1).abs() <= 1e-9 * before.1,
            "the shuffle gave {after:?} (rows, sum) of {before:?}"
        );
        ensure!(before.0 == rows, "{} rows made of {rows}", before.0);
        println!("MEASURE seconds={seconds}");
        Ok(())
    })
}

/// The shuffle against `MPI_Alltoallv` of the same bytes, round by round.
fn shuffle() {
    let (rows, parts) = shuffle_sizes();
    let bytes = rows * SHUFFLE_ROW_BYTES;
    let baseline = common::build_c(
        ("MPICC", "mpicc"),
        "alltoallv.c",
        &[],
        "make deps installs mpicc",
    );
    let (mut ours, mut cold, mut warm) = (vec![], vec![], vec![]);
    for _ in 0..rounds() {
        let mut command = launch_self("shuffle", Some(NP));
        command
            .env("BENCH_ROWS", rows.to_string())
            .env("BENCH_PARTS", parts.to_string())
            .env("MPIDASK_MEMORY_LIMIT", "10GB");
        ours.push(
            run_with_deadline(command, deadline())
                .expect_code(0)
                .measure("seconds"),
        );
        let command = mpirun(NP, &baseline, &[&bytes.to_string()]);
        let run = run_with_deadline(command, deadline());
        cold.push(run.expect_code(0).measure("seconds"));
        warm.push(run.measure("warm_seconds"));
    }
    let gb = bytes as f64 / 1e9;
    let rate = |s: &[f64]| -> Vec<f64> { s.iter().map(|t| gb / t).collect() };
    figure("shuffle_s", "s", &ours, None);
    figure("shuffle_alltoallv_s", "s", &cold, None);
    figure("shuffle_alltoallv_warm_s", "s", &warm, None);
    figure("shuffle_gb_per_s", "GB/s", &rate(&ours), None);
    figure("shuffle_alltoallv_gb_per_s", "GB/s", &rate(&cold), None);
    figure(
        "shuffle_alltoallv_warm_gb_per_s",
        "GB/s",
        &rate(&warm),
        None,
    );
    ratio(
        "shuffle_vs_alltoallv",
        &rate(&ours),
        &rate(&cold),
        false,
        "shuffle_alltoallv_gb_per_s",
    );
    ratio(
        "shuffle_vs_alltoallv_warm",
        &rate(&ours),
        &rate(&warm),
        false,
        "shuffle_alltoallv_warm_gb_per_s",
    );
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        match role.as_str() {
            "generate" => role_generate(),
            "taxi" => role_taxi(),
            "shuffle" => role_shuffle(),
            other => panic!("unknown role {other}"),
        }
    }
    let wanted = common::wanted_by_args();
    if wanted("taxi") {
        taxi();
    }
    if wanted("shuffle") {
        shuffle();
    }
}
