//! Every operation against the same done by Polars on the whole frame, in local mode.

use super::{DataFrame, Frame};
use crate::collections::bag::tests::on_three_workers;
use polars::prelude::{BooleanChunked, PolarsResult, df, polars_bail};

/// `n` rows: integers, floats with NaN and nulls, strings with nulls, booleans.
fn sample(n: usize) -> Frame {
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
fn fails_on_13(df: Frame) -> PolarsResult<Frame> {
    if df.column("id")?.i64()?.iter().any(|v| v == Some(13)) {
        polars_bail!(ComputeError: "id 13 is unlucky");
    }
    Ok(df)
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
        let crate::Error::Task(failure) = &err else {
            panic!("not a task failure: {err}");
        };
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
