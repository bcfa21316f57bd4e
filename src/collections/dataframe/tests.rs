//! Every operation against the same done by Polars on the whole frame, in local mode.

use super::{Aggregation, CsvOptions, DataFrame, Frame, ParquetOptions};
use crate::collections::bag::tests::on_three_workers;
use polars::prelude::{
    BooleanChunked, DataType, Expr, IntoLazy, PolarsResult, SortMultipleOptions, col, df, lit,
    polars_bail,
};

/// `n` rows: integers, floats with NaN and nulls, strings with nulls, booleans.
pub(super) fn sample(n: usize) -> Frame {
    let id: Vec<i64> = (0..n as i64).collect();
    let x: Vec<Option<f64>> = (0..n)
        .map(|i| match i % 7 {
            3 => None,
            5 => Some(f64::NAN),
            _ => Some((i as f64) * 0.5 - 3.0),
        })
        .collect();
    let name: Vec<Option<String>> = (0..n)
        .map(|i| (i % 4 != 2).then(|| format!("n{}", i % 5)))
        .collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    df!("id" => id, "x" => x, "name" => name, "flag" => flag).unwrap()
}

/// The rows whose `id` is even, with a new column `y = 2 x + 1`: a row-wise function, so
/// applying it per partition and stacking equals applying it to the whole frame.
fn even_rows_with_y(df: Frame) -> PolarsResult<Frame> {
    let even = df
        .column("id")?
        .i64()?
        .iter()
        .map(|v| v.map(|v| v % 2 == 0));
    let mask: BooleanChunked = even.collect();
    let mut kept = df.filter(&mask)?;
    let y = kept.column("x")?.as_materialized_series() * 2.0 + 1.0;
    kept.with_column(y.with_name("y".into()).into())?;
    Ok(kept)
}

/// Fails on any partition holding id 13, and on an empty frame never.
pub(super) fn fails_on_13(df: Frame) -> PolarsResult<Frame> {
    if df.column("id")?.i64()?.iter().any(|v| v == Some(13)) {
        polars_bail!(ComputeError: "id 13 is unlucky");
    }
    Ok(df)
}

/// The task failure `err` is (a test failure otherwise).
pub(super) fn task_failure(err: &crate::Error) -> &crate::error::TaskError {
    match err {
        crate::Error::Task(failure) => failure,
        other => panic!("not a task failure: {other}"),
    }
}

/// Needs a column `z`, which the sample lacks.
fn needs_z(df: Frame) -> PolarsResult<Frame> {
    df.select(["z"])
}

#[test]
fn operations_match_polars_on_the_whole_frame() {
    on_three_workers(|client| {
        for (n, parts) in [(0usize, 3usize), (1, 4), (10, 3), (57, 5), (7, 20)] {
            let frame = sample(n);
            let case = format!("{n} rows in {parts} partitions");
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();
            assert_eq!(ddf.npartitions(), parts, "{case}");
            assert_eq!(ddf.columns(), vec!["id", "x", "name", "flag"], "{case}");
            assert_eq!(ddf.schema(), frame.schema(), "{case}");
            assert!(ddf.compute().unwrap().equals_missing(&frame), "{case}");
            assert_eq!(ddf.len().unwrap(), n, "{case}");
            assert_eq!(ddf.is_empty().unwrap(), n == 0, "{case}");
            for k in [0, 1, 3, n] {
                let head = ddf.head(k).unwrap();
                assert!(
                    head.equals_missing(&frame.head(Some(k))),
                    "{case}: head({k})"
                );
            }
            let selected = ddf.select(&["name", "id"]).unwrap();
            assert_eq!(selected.columns(), vec!["name", "id"], "{case}");
            let expected = frame.select(["name", "id"]).unwrap();
            assert!(
                selected.compute().unwrap().equals_missing(&expected),
                "{case}"
            );
            let mapped = ddf.map_partitions(even_rows_with_y).unwrap();
            let expected = even_rows_with_y(frame.clone()).unwrap();
            assert_eq!(mapped.schema(), expected.schema(), "{case}");
            let got = mapped.compute().unwrap();
            assert!(got.equals_missing(&expected), "{case}:\n{got}\n{expected}");
            assert_eq!(mapped.len().unwrap(), expected.height(), "{case}");
            // Steps chain, and a persisted dataframe gives the same.
            let chained = mapped.select(&["y"]).unwrap().persist().unwrap();
            let expected_y = expected.select(["y"]).unwrap();
            assert!(
                chained.compute().unwrap().equals_missing(&expected_y),
                "{case}"
            );
        }
    });
}

#[test]
fn bad_input_is_named() {
    on_three_workers(|client| {
        let frame = sample(30);
        let ddf = DataFrame::from_polars(client, &frame, 3).unwrap();
        let err = ddf.select(&["id", "nope"]).err().unwrap().to_string();
        assert!(
            err.contains("no column 'nope'") && err.contains("id (i64), x (f64), name (str)"),
            "{err}"
        );
        let err = ddf.select(&["id", "id"]).err().unwrap().to_string();
        assert!(err.contains(r#"select(["id", "id"])"#), "{err}");
        let err = ddf.map_partitions(needs_z).err().unwrap().to_string();
        assert!(
            err.contains("map_partitions(needs_z)") && err.contains("empty frame"),
            "{err}"
        );
        // An error the function returns on a worker fails that partition's task.
        let err = ddf
            .map_partitions(fails_on_13)
            .unwrap()
            .compute()
            .err()
            .unwrap();
        let failure = task_failure(&err);
        assert!(
            failure.key.starts_with("map_partitions-fails_on_13")
                && failure.message.contains("map_partitions(fails_on_13)")
                && failure.message.contains("id 13 is unlucky"),
            "{failure:?}"
        );
        let other = df!("id" => [1.5f64]).unwrap();
        let err = DataFrame::from_partitions(client, vec![frame.head(Some(2)), other])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("partition 1 has the columns id (f64)"),
            "{err}"
        );
        let err = DataFrame::from_partitions(client, Vec::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("at least one partition"), "{err}");
    });
}

/// `frame` after Polars' own lazy query `f`.
fn polars(
    frame: &Frame,
    f: impl FnOnce(polars::prelude::LazyFrame) -> polars::prelude::LazyFrame,
) -> Frame {
    f(frame.clone().lazy()).collect().unwrap()
}

#[test]
fn expression_steps_match_polars() {
    on_three_workers(|client| {
        for (n, parts) in [(0usize, 2usize), (10, 3), (57, 5)] {
            let frame = sample(n);
            let case = format!("{n} rows in {parts} partitions");
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();
            let check = |got: DataFrame, expected: Frame, what: &str| {
                assert_eq!(got.schema(), expected.schema(), "{case}: {what}");
                let values = got.compute().unwrap();
                assert!(
                    values.equals_missing(&expected),
                    "{case}: {what}\n{values}\n{expected}"
                );
            };
            let keep = col("x").gt(lit(1.0)).and(col("flag").not());
            check(
                ddf.filter(keep.clone()).unwrap(),
                polars(&frame, |f| f.filter(keep.clone())),
                "filter",
            );
            let new: Vec<Expr> = vec![
                (col("x") * lit(2.0) + col("id").cast(DataType::Float64)).alias("y"),
                col("name").fill_null(lit("?")).alias("name"),
            ];
            check(
                ddf.with_columns(&new).unwrap(),
                polars(&frame, |f| f.with_columns(&new)),
                "with_columns",
            );
            let picked = [col("id"), (col("id") % lit(3)).alias("id3")];
            check(
                ddf.select_exprs(picked.clone()).unwrap(),
                polars(&frame, |f| f.select(picked.clone())),
                "select_exprs",
            );
            check(
                ddf.rename(&[("x", "value"), ("flag", "f")]).unwrap(),
                polars(&frame, |f| f.rename(["x", "flag"], ["value", "f"], true)),
                "rename",
            );
            check(
                ddf.drop(&["x", "flag"]).unwrap(),
                frame.drop_many(["x", "flag"]),
                "drop",
            );
            check(
                ddf.astype("id", DataType::Float32).unwrap(),
                polars(&frame, |f| {
                    f.with_columns([col("id").cast(DataType::Float32)])
                }),
                "astype",
            );
            check(
                ddf.select(&["x"]).unwrap().fill_null(lit(0.25)).unwrap(),
                polars(&frame, |f| f.select([col("x")]).fill_null(lit(0.25))),
                "fill_null",
            );
            check(
                ddf.select(&["name"]).unwrap().fill_null(lit("?")).unwrap(),
                polars(&frame, |f| f.select([col("name")]).fill_null(lit("?"))),
                "fill_null of strings",
            );
            check(
                ddf.drop_nulls(Some(&["name"])).unwrap(),
                frame.drop_nulls(Some(&["name".to_string()])).unwrap(),
                "drop_nulls",
            );
            check(
                ddf.drop_nulls(None).unwrap(),
                frame.drop_nulls::<String>(None).unwrap(),
                "drop_nulls(None)",
            );
            // Steps chain with map_partitions and select.
            let chained = ddf
                .filter(col("id").gt(lit(2)))
                .unwrap()
                .map_partitions(even_rows_with_y)
                .unwrap()
                .with_columns([(col("y") - lit(1.0)).alias("y1")])
                .unwrap()
                .select(&["id", "y1"])
                .unwrap();
            let expected = even_rows_with_y(polars(&frame, |f| f.filter(col("id").gt(lit(2)))))
                .unwrap()
                .lazy()
                .with_columns([(col("y") - lit(1.0)).alias("y1")])
                .select([col("id"), col("y1")])
                .collect()
                .unwrap();
            check(chained, expected, "chained");
        }
    });
}

/// Keys with nulls and many groups, values with nulls and NaN, an integer column.
pub(super) fn grouped_sample(n: usize) -> Frame {
    let k: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 11 != 4).then_some((i * 7 % 5) as i64))
        .collect();
    let s: Vec<&str> = (0..n).map(|i| ["a", "b", "c"][i % 3]).collect();
    let v: Vec<Option<f64>> = (0..n)
        .map(|i| match i % 13 {
            2 => None,
            _ => Some(((i * 37) % 101) as f64 / 7.0 - 5.0),
        })
        .collect();
    let c: Vec<Option<i32>> = (0..n)
        .map(|i| (i % 6 != 1).then_some((i % 4) as i32))
        .collect();
    df!("k" => k, "s" => s, "v" => v, "c" => c).unwrap()
}

/// Every aggregation of `v` and `c`, as Polars names them (the column's name) but aliased.
pub(super) fn every_aggregation() -> Vec<Aggregation> {
    let mut aggs = Vec::new();
    for column in ["v", "c"] {
        for (a, tag) in [
            (Aggregation::sum(column), "sum"),
            (Aggregation::mean(column), "mean"),
            (Aggregation::count(column), "count"),
            (Aggregation::min(column), "min"),
            (Aggregation::max(column), "max"),
            (Aggregation::std(column), "std"),
            (Aggregation::var(column), "var"),
            (Aggregation::first(column), "first"),
            (Aggregation::last(column), "last"),
            (Aggregation::n_unique(column), "n_unique"),
        ] {
            aggs.push(a.alias(&format!("{column}_{tag}")));
        }
    }
    aggs
}

/// The same by Polars on the whole frame, sorted by the keys.
pub(super) fn polars_groupby(frame: &Frame, keys: &[&str]) -> Frame {
    let mut exprs = Vec::new();
    for column in ["v", "c"] {
        let x = || col(column);
        for (e, tag) in [
            (x().sum(), "sum"),
            (x().mean(), "mean"),
            (x().count(), "count"),
            (x().min(), "min"),
            (x().max(), "max"),
            (x().std(1), "std"),
            (x().var(1), "var"),
            (x().first(), "first"),
            (x().last(), "last"),
            (x().n_unique(), "n_unique"),
        ] {
            exprs.push(e.alias(format!("{column}_{tag}")));
        }
    }
    let keys_expr: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    frame
        .clone()
        .lazy()
        .group_by(keys_expr)
        .agg(exprs)
        .sort(
            keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            SortMultipleOptions::default(),
        )
        .collect()
        .unwrap()
}

/// Values equal, floats within `1e-12` relative (the partial sums and deviations are
/// added in another order than Polars adds them).
pub(super) fn assert_close(got: &Frame, expected: &Frame, case: &str) {
    assert_eq!(got.schema(), expected.schema(), "{case}");
    assert_eq!(
        got.height(),
        expected.height(),
        "{case}:\n{got}\n{expected}"
    );
    for (g, e) in got.columns().iter().zip(expected.columns()) {
        if g.dtype() == &DataType::Float64 {
            for (a, b) in g.f64().unwrap().iter().zip(e.f64().unwrap().iter()) {
                let same = match (a, b) {
                    (Some(a), Some(b)) => {
                        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs().max(1.0)
                    }
                    (a, b) => a == b,
                };
                assert!(same, "{case}: column {}: {a:?} against {b:?}", g.name());
            }
        } else {
            assert!(
                g.equals_missing(e),
                "{case}: column {}:\n{got}\n{expected}",
                g.name()
            );
        }
    }
}

#[test]
fn groupby_aggregations_match_polars() {
    on_three_workers(|client| {
        for (n, parts, split_every, keys) in [
            (0usize, 2usize, 8usize, vec!["k"]),
            (1, 3, 8, vec!["k"]),
            (200, 7, 2, vec!["k"]),
            (200, 7, 3, vec!["k", "s"]),
            (1000, 20, 8, vec!["s"]),
        ] {
            let frame = grouped_sample(n);
            let case =
                format!("{n} rows in {parts} partitions by {keys:?}, split_every {split_every}");
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();
            let result = ddf
                .groupby(&keys)
                .unwrap()
                .split_every(split_every)
                .agg(&every_aggregation())
                .unwrap();
            let expected = polars_groupby(&frame, &keys);
            assert_eq!(result.schema(), expected.schema(), "{case}");
            assert_eq!(result.npartitions(), 1, "{case}");
            assert_close(&result.compute().unwrap(), &expected, &case);
        }
    });
}

#[test]
fn bad_expressions_and_aggregations_are_named() {
    on_three_workers(|client| {
        let ddf = DataFrame::from_polars(client, &sample(20), 2).unwrap();
        let err = ddf
            .filter(col("nope").gt(lit(1)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("filter: ")
                && err.contains("nope")
                && err.contains("the columns are id (i64)")
                && !err.contains("Resolved plan"),
            "{err}"
        );
        // A Rust closure cannot travel to the workers.
        let closure = col("x").map(Ok, |_, field| Ok(field.clone()));
        let err = ddf.with_columns([closure]).err().unwrap().to_string();
        assert!(
            err.contains("with_columns: the expression cannot be sent to the workers")
                && err.contains("map_partitions"),
            "{err}"
        );
        let err = ddf.rename(&[("zz", "a")]).err().unwrap().to_string();
        assert!(err.contains("rename: ") && err.contains("zz"), "{err}");
        let err = ddf.drop(&["zz"]).err().unwrap().to_string();
        assert!(err.contains("drop: ") && err.contains("zz"), "{err}");
        let err = ddf.groupby(&["zz"]).err().unwrap().to_string();
        assert!(err.contains("no column 'zz'"), "{err}");
        let err = ddf.groupby(&[]).err().unwrap().to_string();
        assert!(err.contains("no key column"), "{err}");
        let by_id = ddf.groupby(&["id"]).unwrap();
        let err = by_id.agg(&[]).err().unwrap().to_string();
        assert!(err.contains("no aggregation"), "{err}");
        let err = by_id
            .agg(&[Aggregation::sum("zz")])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no column 'zz'"), "{err}");
        let err = by_id
            .agg(&[Aggregation::sum("x"), Aggregation::mean("x")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("two output columns named 'x'") && err.contains(".alias"),
            "{err}"
        );
        let err = by_id
            .agg(&[Aggregation::sum("id")])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("two output columns named 'id'"), "{err}");
        // A value that does not convert fails the partition's task, naming the op.
        let err = ddf
            .astype("name", DataType::Int64)
            .unwrap()
            .compute()
            .err()
            .unwrap();
        let failure = task_failure(&err);
        assert!(
            failure.key.starts_with("astype")
                && failure.message.contains("astype: ")
                && failure.message.contains("conversion"),
            "{failure:?}"
        );
    });
}

/// A fresh scratch directory for one test.
pub(super) fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mpidask-df-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Rows of `frame` without NaN (CSV writes NaN as text that reads back as a string
/// unless typed; kept out of the round trip).
pub(super) fn csv_sample(n: usize) -> Frame {
    sample(n)
        .lazy()
        .with_columns([col("x").fill_nan(lit(1.5))])
        .collect()
        .unwrap()
}

#[test]
fn files_read_back_as_polars_reads_them() {
    use polars::prelude::{CsvWriter, ParquetWriter, SerWriter};
    let dir = scratch("files");
    // Three Parquet files (one empty) and three CSV files with a header each.
    let pieces = [csv_sample(40), csv_sample(0), csv_sample(333)];
    let mut whole = csv_sample(0);
    for (i, piece) in pieces.iter().enumerate() {
        let mut piece = piece.clone();
        let file = std::fs::File::create(dir.join(format!("part-{i}.parquet"))).unwrap();
        ParquetWriter::new(file).finish(&mut piece).unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{i}.csv"))).unwrap();
        CsvWriter::new(file)
            .include_header(true)
            .finish(&mut piece)
            .unwrap();
        whole.vstack_mut(&piece).unwrap();
    }
    let parquet = dir.join("part-*.parquet").display().to_string();
    let csv = dir.join("part-*.csv").display().to_string();
    on_three_workers(|client| {
        let ddf = DataFrame::read_parquet(client, &parquet).unwrap();
        assert_eq!(ddf.npartitions(), 3);
        assert_eq!(ddf.schema(), whole.schema());
        assert!(ddf.compute().unwrap().equals_missing(&whole));
        let keep = col("id").gt(lit(30));
        let some = DataFrame::read_parquet_with(
            client,
            &parquet,
            &ParquetOptions {
                columns: Some(vec!["name".into(), "id".into()]),
                filter: Some(keep.clone()),
            },
        )
        .unwrap();
        let expected = polars(&whole, |f| {
            f.select([col("name"), col("id")]).filter(keep.clone())
        });
        assert_eq!(some.schema(), expected.schema());
        assert!(some.compute().unwrap().equals_missing(&expected));
        // Blocks of every size from a few bytes to whole files give the same rows.
        for blocksize in [7u64, 100, 1000, 1 << 20] {
            let ddf = DataFrame::read_csv(client, &csv, blocksize).unwrap();
            assert_eq!(ddf.schema(), whole.schema(), "blocksize {blocksize}");
            let got = ddf.compute().unwrap();
            assert!(
                got.equals_missing(&whole),
                "blocksize {blocksize}:\n{got}\n{whole}"
            );
        }
        let typed = DataFrame::read_csv_with(
            client,
            &csv,
            &CsvOptions {
                blocksize: 500,
                dtypes: vec![("id".into(), DataType::Float64)],
                ..CsvOptions::default()
            },
        )
        .unwrap();
        let expected = polars(&whole, |f| {
            f.with_columns([col("id").cast(DataType::Float64)])
        });
        assert!(typed.compute().unwrap().equals_missing(&expected));
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_are_named() {
    let dir = scratch("bad");
    // Types inferred from the first rows that a later row breaks.
    let mut text = String::from("a,b\n");
    for i in 0..50 {
        text.push_str(&format!("{i},x{i}\n"));
    }
    text.push_str("1.5,y\n");
    std::fs::write(dir.join("late.csv"), &text).unwrap();
    std::fs::write(dir.join("other-1.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(dir.join("other-2.csv"), "a,c\n1,2\n").unwrap();
    std::fs::write(dir.join("broken.parquet"), b"not parquet at all").unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    on_three_workers(|client| {
        let err = DataFrame::read_csv(client, &path("none-*.csv"), 100)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no file matches") && err.contains("none-*.csv"),
            "{err}"
        );
        let err = DataFrame::read_csv(client, &path("other-*.csv"), 100)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("other-2.csv") && err.contains("same columns"),
            "{err}"
        );
        let err = DataFrame::read_csv_with(
            client,
            &path("late.csv"),
            &CsvOptions {
                infer_rows: 10,
                ..CsvOptions::default()
            },
        )
        .unwrap()
        .compute()
        .err()
        .unwrap();
        let failure = task_failure(&err);
        assert!(
            failure.message.contains("late.csv") && failure.message.contains("CsvOptions::dtypes"),
            "{failure:?}"
        );
        let err = DataFrame::read_csv_with(
            client,
            &path("late.csv"),
            &CsvOptions {
                dtypes: vec![("zz".into(), DataType::Int64)],
                ..CsvOptions::default()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("'zz'") && err.contains("a (f64), b (str)"),
            "{err}"
        );
        let err = DataFrame::read_parquet(client, &path("broken.parquet"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("broken.parquet"), "{err}");
        let err = DataFrame::read_csv(client, &path("late.csv"), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("blocksize"), "{err}");
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
