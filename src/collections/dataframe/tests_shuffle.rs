//! Shuffles, sorts, merges, writers and conversions against the same done by Polars (and
//! ndarray) on the whole frame, in local mode.

use super::tests::{
    assert_close, csv_sample, every_aggregation, fails_on_13, grouped_sample, polars_groupby,
    sample, scratch, task_failure,
};
use super::{DataFrame, Frame, How, MergeOptions, SortOptions};
use crate::collections::bag::tests::on_three_workers;
use polars::prelude::{
    IntoLazy, JoinArgs, JoinCoalesce, JoinType, SortMultipleOptions, UniqueKeepStrategy, by_name,
    col, df,
};

/// `frame` sorted by every column, nulls last (a canonical order for comparing results
/// that come in no particular order).
fn canonical(frame: &Frame) -> Frame {
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    frame
        .clone()
        .lazy()
        .sort(names, SortMultipleOptions::default().with_nulls_last(true))
        .collect()
        .unwrap()
}

fn polars_sort(frame: &Frame, by: &[&str], descending: bool) -> Frame {
    frame
        .clone()
        .lazy()
        .sort(
            by.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            SortMultipleOptions::default()
                .with_order_descending(descending)
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
        .collect()
        .unwrap()
}

/// The partitions one by one.
fn partitions(ddf: &DataFrame) -> Vec<Frame> {
    ddf.to_bag().compute().unwrap()
}

#[test]
fn shuffles_sorts_and_repeats_match_polars() {
    on_three_workers(|client| {
        for (n, parts, out) in [(0usize, 3usize, 2usize), (1, 2, 3), (57, 5, 4), (300, 7, 3)] {
            let frame = sample(n);
            let case = format!("{n} rows in {parts} partitions");
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();

            let shuffled = ddf.shuffle(&["name"], out).unwrap();
            assert_eq!(shuffled.npartitions(), out, "{case}");
            let pieces = partitions(&shuffled);
            let mut seen: Vec<(usize, Option<String>)> = Vec::new();
            for (j, piece) in pieces.iter().enumerate() {
                for name in piece.column("name").unwrap().str().unwrap().iter() {
                    let name = name.map(String::from);
                    if let Some((k, _)) = seen.iter().find(|(_, v)| *v == name) {
                        assert_eq!(*k, j, "{case}: {name:?} in partitions {k} and {j}");
                    } else {
                        seen.push((j, name));
                    }
                }
            }
            let all = shuffled.compute().unwrap();
            assert!(
                polars_sort(&all, &["id"], false).equals_missing(&frame),
                "{case}: shuffle lost or changed rows"
            );

            for (by, descending) in [(vec!["x", "id"], false), (vec!["name", "id"], true)] {
                let options = SortOptions {
                    descending,
                    npartitions: Some(out),
                    samples: 5,
                };
                let sorted = ddf.sort_values_with(&by, &options).unwrap();
                let expected = polars_sort(&frame, &by, descending);
                assert!(
                    sorted.compute().unwrap().equals_missing(&expected),
                    "{case}: sort_values({by:?}, descending {descending})"
                );
            }

            let indexed = ddf.set_index("id").unwrap();
            let all = indexed.compute().unwrap();
            assert!(all.equals_missing(&frame), "{case}: set_index");
            match indexed.divisions() {
                None => assert_eq!(n, 0, "{case}: no divisions"),
                Some(d) => {
                    assert_eq!(d.column, "id");
                    let values: Vec<i64> = d.values.i64().unwrap().into_no_null_iter().collect();
                    assert_eq!(
                        values.len(),
                        indexed.npartitions() + 1,
                        "{case}: {values:?}"
                    );
                    assert_eq!(values[0], 0, "{case}");
                    assert_eq!(*values.last().unwrap(), n as i64 - 1, "{case}");
                    for (i, piece) in partitions(&indexed).iter().enumerate() {
                        for id in piece
                            .column("id")
                            .unwrap()
                            .i64()
                            .unwrap()
                            .into_no_null_iter()
                        {
                            let last = i + 1 == indexed.npartitions();
                            assert!(
                                id >= values[i]
                                    && (id < values[i + 1] || last && id == values[i + 1]),
                                "{case}: id {id} in partition {i} of {values:?}"
                            );
                        }
                    }
                }
            }

            let twice = frame.vstack(&frame).unwrap();
            let doubled = DataFrame::from_polars(client, &twice, parts).unwrap();
            let unique = doubled.drop_duplicates(None).unwrap().compute().unwrap();
            assert!(
                polars_sort(&unique, &["id"], false).equals_missing(&frame),
                "{case}: drop_duplicates"
            );
            let unique_names = ddf
                .drop_duplicates(Some(&["name"]))
                .unwrap()
                .compute()
                .unwrap();
            let expected = frame
                .clone()
                .lazy()
                .unique_stable(
                    Some(by_name(["name"], true, false)),
                    UniqueKeepStrategy::First,
                )
                .collect()
                .unwrap();
            assert!(
                polars_sort(&unique_names, &["id"], false).equals_missing(&expected),
                "{case}: drop_duplicates(name)"
            );

            let counts = ddf.value_counts("name").unwrap().compute().unwrap();
            let expected = frame
                .clone()
                .lazy()
                .drop_nulls(Some(by_name(["name"], true, false)))
                .group_by([col("name")])
                .agg([col("name").count().alias("count")])
                .sort(["name"], SortMultipleOptions::default())
                .sort(
                    ["count"],
                    SortMultipleOptions::default()
                        .with_order_descending(true)
                        .with_maintain_order(true),
                )
                .collect()
                .unwrap();
            assert!(
                counts.equals_missing(&expected),
                "{case}: value_counts\n{counts}\n{expected}"
            );

            let distinct = ddf.nunique().unwrap().compute().unwrap();
            let expected = frame
                .clone()
                .lazy()
                .select(
                    ["id", "x", "name", "flag"].map(|c| col(c).drop_nulls().n_unique().alias(c)),
                )
                .collect()
                .unwrap();
            assert!(
                distinct.equals_missing(&expected),
                "{case}: nunique\n{distinct}\n{expected}"
            );

            let even = ddf.repartition(4).unwrap();
            assert_eq!(even.npartitions(), 4, "{case}");
            let lengths: Vec<usize> = partitions(&even).iter().map(Frame::height).collect();
            assert!(
                lengths.iter().max().unwrap() - lengths.iter().min().unwrap() <= 1,
                "{case}: {lengths:?}"
            );
            assert!(
                even.compute().unwrap().equals_missing(&frame),
                "{case}: repartition"
            );
        }
    });
}

#[test]
fn shuffled_groupby_matches_polars() {
    on_three_workers(|client| {
        for (n, parts, split_out, keys) in [
            (0usize, 2usize, 3usize, vec!["k"]),
            (200, 7, 2, vec!["k"]),
            (1000, 9, 4, vec!["k", "s"]),
        ] {
            let frame = grouped_sample(n);
            let case = format!("{n} rows in {parts} partitions by {keys:?}, split_out {split_out}");
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();
            let result = ddf
                .groupby(&keys)
                .unwrap()
                .split_out(split_out)
                .agg(&every_aggregation())
                .unwrap();
            assert_eq!(result.npartitions(), split_out, "{case}");
            let expected = polars_groupby(&frame, &keys);
            // Sorted as Polars' group-by result is: nulls first.
            let got = result
                .compute()
                .unwrap()
                .lazy()
                .sort(keys.clone(), SortMultipleOptions::default())
                .collect()
                .unwrap();
            assert_close(&got, &expected, &case);
        }
    });
}

/// Left rows: key `k` with repeats and nulls, a value `v`; right rows: `k`, `v` (a name
/// the left has too) and `w`.
fn merge_sides(n: usize) -> (Frame, Frame) {
    let k: Vec<Option<i64>> = (0..n)
        .map(|i| (i % 9 != 4).then_some((i % 13) as i64))
        .collect();
    let v: Vec<f64> = (0..n).map(|i| i as f64 * 0.25).collect();
    let left = df!("k" => k, "v" => v).unwrap();
    let m = n / 2 + 3;
    let k: Vec<Option<i64>> = (0..m)
        .map(|i| (i % 7 != 6).then_some((i % 17) as i64))
        .collect();
    let v: Vec<i32> = (0..m as i32).collect();
    let w: Vec<String> = (0..m).map(|i| format!("w{i}")).collect();
    let right = df!("key" => k, "v" => v, "w" => w).unwrap();
    (left, right)
}

#[test]
fn merges_match_polars() {
    on_three_workers(|client| {
        let (left, right) = merge_sides(120);
        for how in [How::Inner, How::Left, How::Right, How::Outer] {
            let polars_how = match how {
                How::Inner => JoinType::Inner,
                How::Left => JoinType::Left,
                How::Right => JoinType::Right,
                How::Outer => JoinType::Full,
            };
            let expected = left
                .clone()
                .lazy()
                .join(
                    right.clone().lazy(),
                    [col("k")],
                    [col("key")],
                    JoinArgs::new(polars_how).with_coalesce(JoinCoalesce::CoalesceColumns),
                )
                .collect()
                .unwrap();
            for (lp, rp, broadcast, inline) in [
                (4usize, 1usize, None, 1usize << 20),
                (4, 1, None, 0),
                (1, 3, None, 1 << 20),
                (1, 3, None, 0),
                (4, 3, None, 1 << 20),
                (3, 2, Some(false), 1 << 20),
                (2, 3, Some(true), 1 << 20),
                (2, 3, Some(true), 0),
            ] {
                if how == How::Outer && broadcast == Some(true) {
                    continue; // an error, checked below
                }
                let case = format!(
                    "{how:?}, {lp} and {rp} partitions, broadcast {broadcast:?}, inline up to {inline} B"
                );
                let l = DataFrame::from_polars(client, &left, lp).unwrap();
                let r = DataFrame::from_polars(client, &right, rp).unwrap();
                let options = MergeOptions {
                    broadcast,
                    broadcast_inline_bytes: inline,
                    ..MergeOptions::default()
                };
                let merged = l.merge_with(&r, &["k"], &["key"], how, &options).unwrap();
                assert_eq!(merged.schema(), expected.schema(), "{case}");
                let got = merged.compute().unwrap();
                assert!(
                    canonical(&got).equals_missing(&canonical(&expected)),
                    "{case}:\n{got}\n{expected}"
                );
            }
        }
        // One name on both sides: `merge`.
        let right_k = right
            .clone()
            .lazy()
            .rename(["key"], ["k"], true)
            .collect()
            .unwrap();
        let l = DataFrame::from_polars(client, &left, 3).unwrap();
        let r = DataFrame::from_polars(client, &right_k, 2).unwrap();
        let merged = l.merge(&r, &["k"], How::Inner).unwrap().compute().unwrap();
        let expected = left
            .clone()
            .lazy()
            .join(
                right_k.lazy(),
                [col("k")],
                [col("k")],
                JoinArgs::new(JoinType::Inner),
            )
            .collect()
            .unwrap();
        assert!(canonical(&merged).equals_missing(&canonical(&expected)));

        // Bad merges are errors before anything runs.
        let bad = |e: crate::Error, words: &[&str]| {
            let message = e.to_string();
            for w in words {
                assert!(message.contains(w), "{message:?} lacks {w:?}");
            }
        };
        let r = DataFrame::from_polars(client, &right, 2).unwrap();
        bad(
            l.merge(&r, &["k"], How::Inner).unwrap_err(),
            &["right side", "'k'", "key"],
        );
        bad(
            l.merge_with(&r, &["v"], &["v"], How::Inner, &MergeOptions::default())
                .unwrap_err(),
            &["'v' is f64", "i32", "astype"],
        );
        bad(
            l.merge_with(
                &r,
                &["k", "v"],
                &["key"],
                How::Inner,
                &MergeOptions::default(),
            )
            .unwrap_err(),
            &["2 left keys", "1 right keys"],
        );
        let always = MergeOptions {
            broadcast: Some(true),
            ..MergeOptions::default()
        };
        bad(
            l.merge_with(&r, &["k"], &["key"], How::Outer, &always)
                .unwrap_err(),
            &["outer", "broadcast"],
        );
    });
}

#[test]
fn written_parts_read_back_and_a_failed_write_leaves_nothing() {
    on_three_workers(|client| {
        let frame = sample(150);
        // 12 partitions: part.10 and part.11 must read back after part.9.
        let ddf = DataFrame::from_polars(client, &frame, 12).unwrap();
        let dir = scratch("write-parquet");
        let paths = ddf.to_parquet(dir.join("out")).unwrap();
        assert_eq!(paths.len(), 12);
        assert!(paths[10].ends_with("part.10.parquet"), "{paths:?}");
        let pattern = dir.join("out/*.parquet").display().to_string();
        let back = DataFrame::read_parquet(client, &pattern).unwrap();
        assert!(
            back.compute().unwrap().equals_missing(&frame),
            "parquet round trip"
        );

        let again = ddf.to_parquet(dir.join("out")).unwrap_err().to_string();
        assert!(
            again.contains("already holds part.") && again.contains("nothing was written"),
            "{again}"
        );

        let csv = csv_sample(150);
        let cdf = DataFrame::from_polars(client, &csv, 5).unwrap();
        cdf.to_csv(dir.join("csv")).unwrap();
        let pattern = dir.join("csv/*.csv").display().to_string();
        let back = DataFrame::read_csv(client, &pattern, 1 << 20)
            .unwrap()
            .compute()
            .unwrap();
        assert!(back.equals_missing(&csv), "csv round trip\n{back}\n{csv}");

        // id 13 is in partition 1 of 12: that task fails, and no file stays.
        let failing = ddf.map_partitions(fails_on_13).unwrap();
        let error = failing.to_parquet(dir.join("failed")).unwrap_err();
        assert!(
            task_failure(&error).message.contains("id 13 is unlucky"),
            "{error}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.join("failed")).unwrap().collect();
        assert!(left.is_empty(), "files left after a failed write: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn arrays_in_and_out() {
    on_three_workers(|client| {
        let frame = sample(23);
        let ddf = DataFrame::from_polars(client, &frame, 4).unwrap();
        let array = ddf.to_array(&["id", "x", "flag"]).unwrap();
        assert_eq!(array.shape(), &[23, 3]);
        let values = array.compute::<f64>(client).unwrap();
        for (r, row) in values.outer_iter().enumerate() {
            let x = frame
                .column("x")
                .unwrap()
                .f64()
                .unwrap()
                .get(r)
                .unwrap_or(f64::NAN);
            assert_eq!(row[0], r as f64);
            assert!(
                row[1] == x || (row[1].is_nan() && x.is_nan()),
                "row {r}: {} against {x}",
                row[1]
            );
            assert_eq!(row[2], if r % 3 == 0 { 1.0 } else { 0.0 });
        }
        let text = ddf.to_array(&["name"]).unwrap_err().to_string();
        assert!(
            text.contains("'name' is str") && text.contains("astype"),
            "{text}"
        );

        let grid = ndarray::Array2::from_shape_fn((10, 3), |(i, j)| (i * 3 + j) as f64).into_dyn();
        let chunked = crate::collections::array::from_array(&grid, &[4, 2]);
        let back = DataFrame::from_array(client, &chunked, &["a", "b", "c"]).unwrap();
        assert_eq!(back.npartitions(), 3);
        let expected = df!(
            "a" => (0..10).map(|i| (i * 3) as f64).collect::<Vec<_>>(),
            "b" => (0..10).map(|i| (i * 3 + 1) as f64).collect::<Vec<_>>(),
            "c" => (0..10).map(|i| (i * 3 + 2) as f64).collect::<Vec<_>>()
        )
        .unwrap();
        assert!(back.compute().unwrap().equals_missing(&expected));
        let text = DataFrame::from_array(client, &chunked, &["a"])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("1 column names") && text.contains("(3)"),
            "{text}"
        );
    });
}

#[test]
fn describe_matches_polars_statistics() {
    use polars::prelude::{QuantileMethod, lit};
    on_three_workers(|client| {
        for (n, parts) in [(0usize, 2usize), (1, 3), (200, 7)] {
            let frame = grouped_sample(n);
            let ddf = DataFrame::from_polars(client, &frame, parts).unwrap();
            let got = ddf.describe().unwrap();
            let statistic: Vec<&str> = got
                .column("statistic")
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .flatten()
                .collect();
            assert_eq!(statistic, super::DESCRIBE_ROWS);
            assert_eq!(
                got.get_column_names(),
                ["statistic", "k", "v", "c"],
                "{n} rows: string columns are left out"
            );
            for c in ["k", "v", "c"] {
                let x = || col(c).cast(polars::prelude::DataType::Float64);
                let q = |p: f64| x().quantile(lit(p), QuantileMethod::Nearest);
                let expected = frame
                    .clone()
                    .lazy()
                    .select([
                        x().count()
                            .cast(polars::prelude::DataType::Float64)
                            .alias("count"),
                        x().mean().alias("mean"),
                        x().std(1).alias("std"),
                        x().min().alias("min"),
                        q(0.25).alias("25%"),
                        q(0.5).alias("50%"),
                        q(0.75).alias("75%"),
                        x().max().alias("max"),
                    ])
                    .collect()
                    .unwrap();
                let mine = got.column(c).unwrap().f64().unwrap();
                for (row, stat) in super::DESCRIBE_ROWS.iter().enumerate() {
                    let e = expected.column(stat).unwrap().f64().unwrap().get(0);
                    let m = mine.get(row);
                    let same = match (m, e) {
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                        (a, b) => a == b,
                    };
                    assert!(same, "{n} rows, {c} {stat}: {m:?} against Polars' {e:?}");
                }
            }
        }
        let words = DataFrame::from_polars(client, &df!("w" => ["a", "b"]).unwrap(), 1).unwrap();
        let text = words.describe().unwrap_err().to_string();
        assert!(
            text.contains("no numeric column") && text.contains("w (str)"),
            "{text}"
        );
    });
}

/// Rows `start..start + 5` as a frame (a delayed call's partition).
fn rows_from(start: i64) -> Frame {
    df!("n" => (start..start + 5).collect::<Vec<i64>>(), "sq" => (start..start + 5).map(|i| i * i).collect::<Vec<i64>>()).unwrap()
}

/// A bag partition's numbers as one frame.
fn numbers_frame(numbers: Vec<u64>) -> Vec<Frame> {
    let n: Vec<i64> = numbers.iter().map(|&x| x as i64).collect();
    let sq: Vec<i64> = n.iter().map(|x| x * x).collect();
    vec![df!("n" => n, "sq" => sq).unwrap()]
}

/// Other columns for odd starts.
fn wrong_for_odd(start: i64) -> Frame {
    if start % 2 == 1 {
        df!("other" => [1.5f64]).unwrap()
    } else {
        rows_from(start)
    }
}

#[test]
fn delayed_frames_and_bags_make_dataframes() {
    use crate::collections::bag::Bag;
    use crate::collections::delayed::delayed;
    on_three_workers(|client| {
        let expected = rows_from(0)
            .vstack(&rows_from(5))
            .unwrap()
            .vstack(&rows_from(10))
            .unwrap();
        let parts: Vec<_> = [0i64, 5, 10]
            .iter()
            .map(|&s| delayed(rows_from, s))
            .collect();
        let ddf = DataFrame::from_delayed(client, &parts).unwrap();
        assert_eq!(ddf.npartitions(), 3);
        assert_eq!(ddf.columns(), vec!["n", "sq"]);
        assert!(ddf.compute().unwrap().equals_missing(&expected));
        assert_eq!(
            ddf.filter(col("n").gt(polars::prelude::lit(7)))
                .unwrap()
                .len()
                .unwrap(),
            7
        );

        let bag = Bag::range(client, 15, 4).map_partitions(numbers_frame);
        let from_bag = DataFrame::from_bag(&bag).unwrap();
        assert_eq!(from_bag.npartitions(), 4);
        assert!(from_bag.compute().unwrap().equals_missing(&expected));

        let mixed: Vec<_> = [0i64, 1]
            .iter()
            .map(|&s| delayed(wrong_for_odd, s))
            .collect();
        let error = DataFrame::from_delayed(client, &mixed)
            .unwrap()
            .compute()
            .unwrap_err();
        let message = &task_failure(&error).message;
        assert!(
            message.contains("other (f64)") && message.contains("n (i64)"),
            "{message}"
        );
    });
}
