//! DataFrames under a real `mpirun` (-np 3, 4 and 6) and in local mode, against Polars on
//! the same data: the client builds a frame, cuts it into partitions on the workers, runs
//! every operation there (functions, Polars expressions, a group-by's tree of partial
//! aggregates, shuffles moving rows worker to worker for merges, sorts and group-bys,
//! Parquet written by the workers) and compares each result with Polars' own on the whole
//! frame.
//! The test binary is also the program under test (`MPIDASK_SCENARIO=dataframe`).

mod support;

use anyhow::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::Client;
use mpidask::dataframe::{Aggregation, DataFrame, polars};
use polars::prelude::{
    BooleanChunked, ChunkAgg, DataType, IntoLazy, PolarsResult, SortMultipleOptions, col, df, lit,
};
use std::process::Command;
use std::time::Duration;
use support::{check, local_command, mpirun, run_with_deadline};

type Frame = polars::prelude::DataFrame;

const DEADLINE: Duration = Duration::from_secs(120);

/// `n` rows: integers, floats with NaN and nulls, strings with nulls, booleans.
fn sample(n: usize) -> Frame {
    let id: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % 1009).collect();
    let x: Vec<Option<f64>> = (0..n)
        .map(|i| match i % 7 {
            3 => None,
            5 => Some(f64::NAN),
            _ => Some((i as f64) * 0.25 - 3.0),
        })
        .collect();
    let name: Vec<Option<String>> = (0..n)
        .map(|i| (i % 4 != 2).then(|| format!("n{}", i % 5)))
        .collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    df!("id" => id, "x" => x, "name" => name, "flag" => flag).expect("a sample frame")
}

/// Rows with an odd `id` and a new column `y = x * x - 1` (row-wise, so per partition
/// equals on the whole frame).
fn odd_rows_with_y(frame: Frame) -> PolarsResult<Frame> {
    let odd: BooleanChunked = frame
        .column("id")?
        .i64()?
        .iter()
        .map(|v| v.map(|v| v % 2 == 1))
        .collect();
    let mut kept = frame.filter(&odd)?;
    let x = kept.column("x")?.as_materialized_series().clone();
    let y = ((&x * &x)? - 1.0).with_name("y".into());
    kept.with_column(y.into())?;
    Ok(kept)
}

fn same(what: &str, got: &Frame, expected: &Frame) -> anyhow::Result<()> {
    ensure!(
        got.equals_missing(expected),
        "{what}: mpidask gave\n{got}\nPolars gave\n{expected}"
    );
    Ok(())
}

fn scenario_dataframe(client: &Client) -> anyhow::Result<()> {
    for (rows, parts) in [(0usize, 3usize), (5, 8), (1000, 7), (20_000, 5)] {
        let frame = sample(rows);
        let case = format!("{rows} rows in {parts} partitions");
        let ddf = DataFrame::from_polars(client, &frame, parts)?;
        same(&case, &ddf.compute()?, &frame)?;
        ensure!(ddf.len()? == rows, "{case}: len");
        same(
            &format!("{case}: head(7)"),
            &ddf.head(7)?,
            &frame.head(Some(7)),
        )?;
        let mapped = ddf.map_partitions(odd_rows_with_y)?.persist()?;
        let expected = odd_rows_with_y(frame.clone())?;
        same(
            &format!("{case}: map_partitions"),
            &mapped.compute()?,
            &expected,
        )?;
        ensure!(
            mapped.len()? == expected.height(),
            "{case}: len after a step"
        );
        let picked = mapped.select(&["y", "name"])?;
        same(
            &format!("{case}: select"),
            &picked.compute()?,
            &expected.select(["y", "name"])?,
        )?;
    }
    expressions_and_groupby(client)?;
    files(client)?;
    shuffles(client)?;
    println!("DATAFRAME ok workers={}", client.workers().len());
    Ok(())
}

/// Polars expressions travel to the workers encoded; a group-by's partial frames are
/// combined in a tree (`split_every` 2, so three levels for 7 partitions).
fn expressions_and_groupby(client: &Client) -> anyhow::Result<()> {
    let frame = sample(20_000);
    let ddf = DataFrame::from_polars(client, &frame, 7)?;
    let keep = col("x").gt(lit(0.5)).or(col("name").is_null());
    let new = [
        (col("x") * lit(3.0)).alias("x3"),
        (col("id") % lit(10)).alias("decile"),
    ];
    let got = ddf
        .filter(keep.clone())?
        .with_columns(new.clone())?
        .persist()?;
    let expected = frame
        .clone()
        .lazy()
        .filter(keep)
        .with_columns(new)
        .collect()?;
    same("filter and with_columns", &got.compute()?, &expected)?;
    let aggs = [
        Aggregation::sum("x").alias("x_sum"),
        Aggregation::mean("x3").alias("x3_mean"),
        Aggregation::count("name").alias("names"),
        Aggregation::std("id").alias("id_std"),
        Aggregation::max("name").alias("last_name"),
        Aggregation::n_unique("name").alias("distinct_names"),
    ];
    let grouped = got
        .groupby(&["decile", "flag"])?
        .split_every(2)
        .agg(&aggs)?
        .compute()?;
    let expected = expected
        .lazy()
        .group_by([col("decile"), col("flag")])
        .agg([
            col("x").sum().alias("x_sum"),
            col("x3").mean().alias("x3_mean"),
            col("name").count().alias("names"),
            col("id").std(1).alias("id_std"),
            col("name").max().alias("last_name"),
            col("name").n_unique().alias("distinct_names"),
        ])
        .sort(["decile", "flag"], SortMultipleOptions::default())
        .collect()?;
    ensure!(
        grouped.schema() == expected.schema() && grouped.height() == expected.height(),
        "groupby: mpidask gave\n{grouped}\nPolars gave\n{expected}"
    );
    for column in expected.columns() {
        let name = column.name().as_str();
        let mine = grouped.column(name)?;
        if column.dtype() == &DataType::Float64 {
            for (a, b) in mine.f64()?.iter().zip(column.f64()?.iter()) {
                let close = match (a, b) {
                    (Some(a), Some(b)) => {
                        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs().max(1.0)
                    }
                    (a, b) => a == b,
                };
                ensure!(close, "groupby {name}: {a:?} against Polars' {b:?}");
            }
        } else {
            ensure!(
                mine.equals_missing(column),
                "groupby {name}: mpidask gave\n{grouped}\nPolars gave\n{expected}"
            );
        }
    }
    Ok(())
}

/// Parquet and CSV files written by the client, read by the workers (a filter pushed into
/// the Parquet reader, CSV cut into blocks of 10 kB), against the frame written.
fn files(client: &Client) -> anyhow::Result<()> {
    use polars::prelude::{CsvWriter, ParquetWriter, SerWriter};
    let dir = std::env::temp_dir().join(format!("mpidask-dataframe-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut whole = sample(0)
        .lazy()
        .with_columns([col("x").fill_nan(lit(0.5))])
        .collect()?;
    for i in 0..4 {
        let mut piece = sample(3000 + i * 1000)
            .lazy()
            .with_columns([col("x").fill_nan(lit(0.5))])
            .collect()?;
        ParquetWriter::new(std::fs::File::create(
            dir.join(format!("trips-{i}.parquet")),
        )?)
        .finish(&mut piece)?;
        CsvWriter::new(std::fs::File::create(dir.join(format!("trips-{i}.csv")))?)
            .finish(&mut piece)?;
        whole.vstack_mut(&piece)?;
    }
    let keep = col("id").lt(lit(500));
    let parquet = DataFrame::read_parquet_with(
        client,
        &dir.join("trips-*.parquet").display().to_string(),
        &mpidask::dataframe::ParquetOptions {
            columns: Some(vec!["id".into(), "x".into()]),
            filter: Some(keep.clone()),
        },
    )?;
    let expected = whole
        .clone()
        .lazy()
        .select([col("id"), col("x")])
        .filter(keep)
        .collect()?;
    same("read_parquet", &parquet.compute()?, &expected)?;
    let csv = DataFrame::read_csv(
        client,
        &dir.join("trips-*.csv").display().to_string(),
        10_000,
    )?;
    ensure!(
        csv.npartitions() > 4,
        "read_csv: {} blocks",
        csv.npartitions()
    );
    same("read_csv", &csv.compute()?, &whole)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `frame` sorted by every column, nulls last (results of a shuffle come in no order).
fn canonical(frame: &Frame) -> anyhow::Result<Frame> {
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    Ok(frame
        .clone()
        .lazy()
        .sort(names, SortMultipleOptions::default().with_nulls_last(true))
        .collect()?)
}

/// Rows moved between workers: merges (hash and broadcast), a sort, `set_index`, repeats
/// dropped, a group-by with `split_out`, a Parquet round trip through the workers' writer
/// and the numeric columns as an array.
fn shuffles(client: &Client) -> anyhow::Result<()> {
    use mpidask::dataframe::How;
    use polars::prelude::{JoinArgs, JoinCoalesce, JoinType};
    let frame = sample(20_000);
    let ddf = DataFrame::from_polars(client, &frame, 7)?.persist()?;
    let zones = df!(
        "id" => (0..1009i64).step_by(3).collect::<Vec<_>>(),
        "zone" => (0..1009i64).step_by(3).map(|i| format!("z{}", i % 17)).collect::<Vec<_>>()
    )?;
    for (zone_parts, how) in [(1usize, How::Left), (4, How::Inner), (3, How::Outer)] {
        let right = DataFrame::from_polars(client, &zones, zone_parts)?;
        let merged = ddf.merge(&right, &["id"], how)?.compute()?;
        let polars_how = match how {
            How::Left => JoinType::Left,
            How::Inner => JoinType::Inner,
            _ => JoinType::Full,
        };
        let expected = frame
            .clone()
            .lazy()
            .join(
                zones.clone().lazy(),
                [col("id")],
                [col("id")],
                JoinArgs::new(polars_how).with_coalesce(JoinCoalesce::CoalesceColumns),
            )
            .collect()?;
        same(
            &format!("merge {how:?} with {zone_parts} partitions"),
            &canonical(&merged)?,
            &canonical(&expected)?,
        )?;
    }
    let sort = |by: &[&str]| -> anyhow::Result<Frame> {
        Ok(frame
            .clone()
            .lazy()
            .sort(
                by.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                SortMultipleOptions::default()
                    .with_nulls_last(true)
                    .with_maintain_order(true),
            )
            .collect()?)
    };
    same(
        "sort_values",
        &ddf.sort_values(&["x", "id"])?.compute()?,
        &sort(&["x", "id"])?,
    )?;
    let indexed = ddf.set_index("id")?;
    let divisions = indexed.divisions().map(|d| d.values.len());
    ensure!(
        divisions == Some(indexed.npartitions() + 1),
        "set_index: divisions {divisions:?} for {} partitions",
        indexed.npartitions()
    );
    same("set_index", &indexed.compute()?, &sort(&["id"])?)?;
    let names = ddf.drop_duplicates(Some(&["name", "flag"]))?.compute()?;
    ensure!(
        names.height() == 12,
        "drop_duplicates: {} rows, not 12 (6 names with null times 2 flags)",
        names.height()
    );
    let grouped = ddf
        .groupby(&["name"])?
        .split_out(3)
        .agg(&[Aggregation::count("id").alias("n")])?;
    ensure!(grouped.npartitions() == 3, "split_out 3");
    let grouped = canonical(&grouped.compute()?)?;
    let expected = canonical(
        &frame
            .clone()
            .lazy()
            .group_by([col("name")])
            .agg([col("id").count().alias("n")])
            .collect()?,
    )?;
    same("groupby split_out", &grouped, &expected)?;

    let dir = std::env::temp_dir().join(format!("mpidask-dataframe-out-{}", std::process::id()));
    ddf.to_parquet(&dir)?;
    let back = DataFrame::read_parquet(client, &dir.join("*.parquet").display().to_string())?;
    same("to_parquet and back", &back.compute()?, &frame)?;
    std::fs::remove_dir_all(&dir)?;

    let array = ddf.to_array(&["id"])?.compute::<f64>(client)?;
    let ids: Vec<f64> = frame
        .column("id")?
        .i64()?
        .into_no_null_iter()
        .map(|v| v as f64)
        .collect();
    ensure!(
        array.iter().copied().collect::<Vec<f64>>() == ids,
        "to_array: the ids differ"
    );
    Ok(())
}

/// A shuffle of 3x the workers' memory (run with a 40 MB limit on 2 workers): 240 MB of
/// random values made on the workers, a key column added, the rows shuffled on the key and
/// kept; the rows, their sum and the keys' partitions are checked.
fn scenario_shuffle_spill(client: &Client) -> anyhow::Result<()> {
    use mpidask::array::random;
    let (rows, chunk) = (7_500_000usize, 250_000usize);
    let x = random::uniform(0.0, 1.0, &[rows, 2], &[chunk, 2], 11);
    let total = x.sum().compute_scalar::<f64>(client)?;
    let ddf = DataFrame::from_array(client, &x, &["a", "b"])?
        .with_columns([(col("a") * lit(1000.0)).cast(DataType::Int64).alias("k")])?;
    let shuffled = ddf.shuffle(&["k"], 30)?.persist()?;
    ensure!(shuffled.len()? == rows, "rows lost in the shuffle");
    let sums = shuffled
        .groupby(&["k"])?
        .split_out(4)
        .agg(&[Aggregation::sum("a"), Aggregation::sum("b")])?
        .compute()?;
    ensure!(sums.height() == 1000, "{} keys, not 1000", sums.height());
    let after: f64 = sums.column("a")?.f64()?.sum().unwrap_or(0.0)
        + sums.column("b")?.f64()?.sum().unwrap_or(0.0);
    ensure!(
        (after - total).abs() <= 1e-9 * total,
        "sum {after} after the shuffle, {total} before"
    );
    // Every key in exactly one partition.
    let per_partition: Vec<usize> = shuffled.to_bag().map(distinct_keys).compute()?;
    ensure!(
        per_partition.iter().sum::<usize>() == 1000,
        "keys split between partitions: {per_partition:?}"
    );
    println!("DATAFRAME shuffle_spill ok");
    Ok(())
}

fn distinct_keys(frame: Frame) -> usize {
    frame
        .column("k")
        .and_then(|k| k.n_unique())
        .expect("a key column")
}

fn run_scenario(name: &str) -> ! {
    match name {
        "dataframe" => mpidask::run(scenario_dataframe),
        "shuffle_spill" => mpidask::run(scenario_shuffle_spill),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(99)
        }
    }
}

fn under_mpirun(np: usize) -> Result<(), Failed> {
    check(|| {
        let mut command = mpirun(np, &std::env::current_exe().expect("current exe"), &[]);
        command.env("MPIDASK_SCENARIO", "dataframe");
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0)
            .expect_stdout(&format!("DATAFRAME ok workers={}", np - 2))
            .expect_quiet();
    })
}

/// The shuffle of 3x the workers' memory completes by spilling (the trace's summary counts
/// the spills and read-backs) and leaves no spill file.
fn shuffle_spills() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("dataframe-spill");
        let spill_dir = dir.join("local");
        std::fs::create_dir_all(&spill_dir).expect("a spill directory");
        let trace_path = dir.join("trace.json");
        let mut command = mpirun(4, &std::env::current_exe().expect("current exe"), &[]);
        command
            .env("MPIDASK_SCENARIO", "shuffle_spill")
            .env("MPIDASK_MEMORY_LIMIT", "40MB")
            .env("MPIDASK_LOCAL_DIRECTORY", &spill_dir)
            .env("MPIDASK_TRACE", &trace_path);
        let run = run_with_deadline(command, Duration::from_secs(300));
        run.expect_code(0)
            .expect_stdout("DATAFRAME shuffle_spill ok")
            .expect_quiet();
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&trace_path).expect("the trace"))
                .expect("a JSON trace");
        let summary = &trace["otherData"]["summary"];
        let spilled = summary["spilled_bytes"].as_u64().unwrap_or(0);
        let read_backs = summary["read_backs"].as_u64().unwrap_or(0);
        assert!(
            spilled >= 200_000_000 && read_backs >= 30,
            "the shuffle should spill: {summary}\n{}",
            run.dump()
        );
        let left: Vec<_> = std::fs::read_dir(&spill_dir)
            .expect("the spill directory")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "spill files left behind: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// `examples/taxi/` writes its trips, runs its four analyses and checks them against
/// Polars on its first file.
fn taxi_example(np: Option<usize>) -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir(&format!("taxi-{np:?}"));
        let data = dir.join("trips").display().to_string();
        let args = ["--rows", "120000", "--files", "5", "--dir", data.as_str()];
        let command = match np {
            Some(np) => mpirun(np, &support::example("taxi"), &args),
            None => {
                let mut command = local_command(&support::example("taxi"));
                command.args(args);
                command
            }
        };
        let run = run_with_deadline(command, Duration::from_secs(300));
        run.expect_code(0)
            .expect_stdout("RESULT rows=120000")
            .expect_stdout("CHECK ok: the four analyses equal Polars'")
            .expect_quiet();
        if np.is_some() {
            // The benchmark's Polars baseline reads the same files and checks itself.
            let mut polars = Command::new(support::example("taxi_polars"));
            polars.arg(&data);
            let run = run_with_deadline(polars, Duration::from_secs(120));
            run.expect_code(0)
                .expect_stdout("RESULT name=taxi_groupby")
                .expect_stdout("RESULT name=taxi_merge seconds=");
            assert!(run.stdout.contains("rows=120000\n"), "{}", run.dump());
            let mut empty = Command::new(support::example("taxi_polars"));
            empty.arg(&dir);
            run_with_deadline(empty, Duration::from_secs(60))
                .expect_code(1)
                .expect_stderr("no Parquet file in");
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn in_local_mode() -> Result<(), Failed> {
    check(|| {
        let mut command = local_command(&std::env::current_exe().expect("current exe"));
        command.env("MPIDASK_SCENARIO", "dataframe");
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0)
            .expect_stdout("DATAFRAME ok")
            .expect_quiet();
    })
}

fn main() {
    if let Ok(name) = std::env::var("MPIDASK_SCENARIO") {
        run_scenario(&name);
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("dataframe_np3_matches_polars", || under_mpirun(3)),
        Trial::test("dataframe_np4_matches_polars", || under_mpirun(4)),
        Trial::test("dataframe_np6_matches_polars", || under_mpirun(6)),
        Trial::test("dataframe_local_matches_polars", in_local_mode),
        Trial::test("dataframe_shuffle_of_3x_memory_spills_np4", shuffle_spills),
        Trial::test("taxi_example_checks_itself_np4", || taxi_example(Some(4))),
        Trial::test("taxi_example_checks_itself_local", || taxi_example(None)),
    ];
    libtest_mimic::run(&args, tests).exit();
}
