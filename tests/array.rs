//! Every array operation compared with plain `ndarray` code on small random inputs: odd
//! shapes, chunks that do not divide the shape, 1-D to 3-D, broadcasting and empty axes.
//! Runs in local mode; `tests/mpi.rs` repeats a sample under mpirun.

mod support;

use mpidask::array::{self, Array, DType, Span, random};
use mpidask::{Client, RuntimeArgs};
use ndarray::{ArrayD, Axis, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::python::run_python;

fn local<T: Send>(workers: u32, f: impl FnOnce(&Client) -> T + Send) -> T {
    let args = RuntimeArgs {
        local_workers: workers,
        nthreads: Some(2),
        ..RuntimeArgs::default()
    };
    mpidask::run_local(args, f)
}

fn data(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

fn ints(shape: &[usize], seed: u64) -> ArrayD<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let values: Vec<i64> = (0..n).map(|_| rng.random_range(-5..6)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

fn close(got: &ArrayD<f64>, want: &ArrayD<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (g, w) in got.iter().zip(want.iter()) {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-9 * (1.0 + w.abs());
        assert!(ok, "{what}: got {g}, want {w}\n got {got}\nwant {want}");
    }
}

/// Shapes and chunk sizes that do not divide them.
const CASES: &[(&[usize], &[usize])] = &[
    (&[7], &[3]),
    (&[7, 5], &[3, 2]),
    (&[4, 6, 3], &[3, 4, 2]),
    (&[1, 9], &[1, 4]),
];

#[test]
fn elementwise_operations_match_ndarray() {
    local(2, |client| {
        for (i, (shape, chunks)) in CASES.iter().enumerate() {
            let (a, b) = (data(shape, i as u64), data(shape, 100 + i as u64));
            let (x, y) = (array::from_array(&a, chunks), array::from_array(&b, chunks));
            let cases: Vec<(&str, Array, ArrayD<f64>)> = vec![
                ("add", &x + &y, &a + &b),
                ("sub", &x - &y, &a - &b),
                ("mul", &x * &y, &a * &b),
                ("div", &x / &y, &a / &b),
                ("neg", -&x, -&a),
                (
                    "scalar",
                    (&x * 2.0 + 1.0) / 4.0 - 0.5,
                    a.mapv(|v| (v * 2.0 + 1.0) / 4.0 - 0.5),
                ),
                ("scalar first", 1.0 - &x, a.mapv(|v| 1.0 - v)),
                ("powi", x.powi(3), a.mapv(|v| v.powi(3))),
                ("powf", x.abs().powf(1.5), a.mapv(|v| v.abs().powf(1.5))),
                ("sqrt", x.abs().sqrt(), a.mapv(|v| v.abs().sqrt())),
                ("exp", x.exp(), a.mapv(f64::exp)),
                ("ln", x.abs().ln(), a.mapv(|v| v.abs().ln())),
                (
                    "sin cos",
                    x.sin() + y.cos(),
                    a.mapv(f64::sin) + b.mapv(f64::cos),
                ),
                (
                    "where",
                    array::where_(&x.gt(&y), &x, 0.0),
                    ndarray::Zip::from(&a)
                        .and(&b)
                        .map_collect(|&p, &q| if p > q { p } else { 0.0 }),
                ),
            ];
            for (name, got, want) in cases {
                close(
                    &got.compute::<f64>(client).unwrap(),
                    &want,
                    &format!("{name} {shape:?}"),
                );
            }
            let lt = x.lt(&y).compute::<bool>(client).unwrap();
            assert_eq!(lt, ndarray::Zip::from(&a).and(&b).map_collect(|p, q| p < q));
            for (name, got, want) in [
                ("le", x.le(0.5), a.mapv(|v| v <= 0.5)),
                ("ge", x.ge(0.5), a.mapv(|v| v >= 0.5)),
                ("eq", x.eq(&x), a.mapv(|_| true)),
                ("ne", x.ne(&x), a.mapv(|_| false)),
                ("not", x.gt(0.0).not(), a.mapv(|v| v <= 0.0)),
            ] {
                assert_eq!(
                    got.compute::<bool>(client).unwrap(),
                    want,
                    "{name} {shape:?}"
                );
            }
            let as_int = x.astype(DType::I64).compute::<i64>(client).unwrap();
            assert_eq!(as_int, a.mapv(|v| v as i64), "astype {shape:?}");
        }
    });
}

#[test]
fn broadcasting_follows_numpy() {
    local(2, |client| {
        let a = data(&[6, 5], 1);
        let row = data(&[5], 2);
        let col = data(&[6, 1], 3);
        let x = array::from_array(&a, &[4, 2]);
        let r = array::from_array(&row, &[3]);
        let c = array::from_array(&col, &[5, 1]);
        close(&(&x + &r).compute(client).unwrap(), &(&a + &row), "row");
        close(&(&x * &c).compute(client).unwrap(), &(&a * &col), "column");
        close(&(&c - &r).compute(client).unwrap(), &(&col - &row), "outer");
        let bad = &x + &array::from_array(&data(&[4], 4), &[2]);
        let message = bad.check().unwrap_err().to_string();
        assert!(
            message.contains("[6, 5]") && message.contains("[4]"),
            "{message}"
        );
        assert!(bad.compute::<f64>(client).is_err());
    });
}

fn reference(a: &ArrayD<f64>, op: &str, axis: Option<usize>) -> ArrayD<f64> {
    let along = |f: &dyn Fn(ndarray::ArrayView1<f64>) -> f64| -> ArrayD<f64> {
        match axis {
            None => ndarray::arr0(f(a.view().into_shape_with_order(a.len()).unwrap())).into_dyn(),
            Some(k) => a.map_axis(Axis(k), f),
        }
    };
    let argbest = |lane: ndarray::ArrayView1<f64>, min: bool| -> f64 {
        let mut best = 0;
        for (i, &v) in lane.iter().enumerate() {
            if (min && v < lane[best]) || (!min && v > lane[best]) {
                best = i;
            }
        }
        best as f64
    };
    match op {
        "sum" => along(&|l| l.sum()),
        "mean" => along(&|l| l.sum() / l.len() as f64),
        "min" => along(&|l| l.fold(f64::INFINITY, |m, &v| m.min(v))),
        "max" => along(&|l| l.fold(f64::NEG_INFINITY, |m, &v| m.max(v))),
        "var" => along(&|l| l.var(0.0)),
        "std" => along(&|l| l.std(0.0)),
        "argmin" => along(&|l| argbest(l, true)),
        "argmax" => along(&|l| argbest(l, false)),
        "count_nonzero" => along(&|l| l.iter().filter(|&&v| v > 0.0).count() as f64),
        _ => unreachable!(),
    }
}

#[test]
fn reductions_match_ndarray_over_all_and_each_axis() {
    local(3, |client| {
        for (i, (shape, chunks)) in CASES.iter().enumerate() {
            let a = data(shape, 10 + i as u64);
            let x = array::from_array(&a, chunks);
            let mut axes: Vec<Option<usize>> = vec![None];
            axes.extend((0..shape.len()).map(Some));
            for axis in axes {
                for op in [
                    "sum",
                    "mean",
                    "min",
                    "max",
                    "var",
                    "std",
                    "argmin",
                    "argmax",
                    "count_nonzero",
                ] {
                    let got = match (op, axis) {
                        ("sum", None) => x.sum(),
                        ("sum", Some(k)) => x.sum_axis(k as isize),
                        ("mean", None) => x.mean(),
                        ("mean", Some(k)) => x.mean_axis(k as isize),
                        ("min", None) => x.min(),
                        ("min", Some(k)) => x.min_axis(k as isize),
                        ("max", None) => x.max(),
                        ("max", Some(k)) => x.max_axis(k as isize),
                        ("var", None) => x.var(),
                        ("var", Some(k)) => x.var_axis(k as isize),
                        ("std", None) => x.std(),
                        ("std", Some(k)) => x.std_axis(k as isize),
                        ("argmin", None) => x.argmin(),
                        ("argmin", Some(k)) => x.argmin_axis(k as isize),
                        ("argmax", None) => x.argmax(),
                        ("argmax", Some(k)) => x.argmax_axis(k as isize),
                        ("count_nonzero", None) => x.gt(0.0).count_nonzero(),
                        ("count_nonzero", Some(k)) => x.gt(0.0).count_nonzero_axis(k as isize),
                        _ => unreachable!(),
                    };
                    let got = got.astype(DType::F64).compute::<f64>(client).unwrap();
                    let want = reference(&a, op, axis);
                    close(
                        &got,
                        &want,
                        &format!("{op} axis {axis:?} of {shape:?} in {chunks:?}"),
                    );
                }
            }
            // keepdims keeps the reduced axes with length 1.
            let kept = x.reduce(array::ReduceOp::Sum, Some(&[-1]), true);
            let want = a
                .sum_axis(Axis(shape.len() - 1))
                .insert_axis(Axis(shape.len() - 1));
            close(&kept.compute(client).unwrap(), &want, "keepdims");
            let any = x.gt(2.5).any().compute_scalar::<bool>(client).unwrap();
            let all = x.gt(-3.5).all().compute_scalar::<bool>(client).unwrap();
            assert_eq!(any, a.iter().any(|&v| v > 2.5));
            assert!(all);
            let isum = array::from_array(&ints(shape, 3), chunks)
                .sum()
                .compute_scalar::<i64>(client)
                .unwrap();
            assert_eq!(isum, ints(shape, 3).sum());
        }
    });
}

#[test]
fn empty_axes() {
    local(1, |client| {
        let x = array::zeros(&[0, 3], &[2, 2]);
        assert_eq!(
            x.sum_axis(0).compute::<f64>(client).unwrap(),
            ndarray::arr1(&[0.0, 0.0, 0.0]).into_dyn()
        );
        assert_eq!(x.sum().compute_scalar::<f64>(client).unwrap(), 0.0);
        assert!(x.mean().compute_scalar::<f64>(client).unwrap().is_nan());
        let message = x.min().check().unwrap_err().to_string();
        assert!(message.contains("empty axis"), "{message}");
        assert_eq!(x.sum_axis(1).compute::<f64>(client).unwrap().shape(), &[0]);
    });
}

#[test]
fn constructors_match_ndarray() {
    local(2, |client| {
        assert_eq!(
            array::ones(&[5, 3], &[2, 2])
                .compute::<f64>(client)
                .unwrap(),
            ArrayD::from_elem(IxDyn(&[5, 3]), 1.0)
        );
        assert_eq!(
            array::full(&[4], &[3], 7i64)
                .compute::<i64>(client)
                .unwrap(),
            ArrayD::from_elem(IxDyn(&[4]), 7)
        );
        close(
            &array::arange(1.0, 10.0, 2.5, 2).compute(client).unwrap(),
            &ndarray::Array1::range(1.0, 10.0, 2.5).into_dyn(),
            "arange",
        );
        close(
            &array::linspace(0.0, 1.0, 11, 4).compute(client).unwrap(),
            &ndarray::Array1::linspace(0.0, 1.0, 11).into_dyn(),
            "linspace",
        );
        let a = data(&[5, 4], 7);
        close(
            &array::from_array(&a, &[2, 3]).compute(client).unwrap(),
            &a,
            "from_array",
        );
    });
}

#[test]
fn random_arrays_are_the_same_at_any_worker_count() {
    let draw = |workers| {
        local(workers, |client| {
            let u = random::uniform(-1.0, 2.0, &[1000, 3], &[300, 2], 5)
                .compute::<f64>(client)
                .unwrap();
            let n = random::normal(1.0, 2.0, &[2000], &[700], 5)
                .compute::<f64>(client)
                .unwrap();
            (u, n)
        })
    };
    let (u1, n1) = draw(1);
    let (u3, n3) = draw(3);
    assert_eq!(u1, u3);
    assert_eq!(n1, n3);
    assert!(u1.iter().all(|v| (-1.0..2.0).contains(v)));
    let mean = n1.mean().unwrap();
    assert!((mean - 1.0).abs() < 0.2, "{mean}");
    let other_seed = local(1, |client| {
        random::uniform(-1.0, 2.0, &[1000, 3], &[300, 2], 6)
            .compute::<f64>(client)
            .unwrap()
    });
    assert_ne!(u1, other_seed);
}

#[test]
fn structure_operations_match_ndarray() {
    local(2, |client| {
        let a = data(&[9, 7], 21);
        let x = array::from_array(&a, &[4, 3]);
        // slicing with steps and negative starts
        let s = x.slice(&[Span::new(Some(1), Some(8), 3), Span::new(Some(-5), None, 2)]);
        close(
            &s.compute(client).unwrap(),
            &a.slice(ndarray::s![1..8;3, 2..;2]).to_owned().into_dyn(),
            "slice",
        );
        close(
            &x.slice(&[Span::from(3..3)]).compute(client).unwrap(),
            &a.slice(ndarray::s![3..3, ..]).to_owned().into_dyn(),
            "empty slice",
        );
        // transpose (fused with arithmetic)
        close(
            &(x.t() * 2.0).compute(client).unwrap(),
            &(a.t().to_owned() * 2.0).into_dyn(),
            "transpose",
        );
        // reshape where chunks allow
        let b = data(&[10, 2], 22);
        let y = array::from_array(&b, &[4, 2]);
        close(
            &y.reshape(&[-1]).compute(client).unwrap(),
            &b.clone().into_shape_with_order(IxDyn(&[20])).unwrap(),
            "reshape",
        );
        // Chunks across rows of the new shape: rechunked first, as Dask does.
        for (shape, label) in [
            (vec![7, 9], "reshape with a rechunk"),
            (vec![3, 21], "to 3 x 21"),
        ] {
            let want = a.clone().into_shape_with_order(IxDyn(&shape)).unwrap();
            let shape: Vec<isize> = shape.iter().map(|&n| n as isize).collect();
            close(&x.reshape(&shape).compute(client).unwrap(), &want, label);
        }
        close(
            &x.rechunk(&[-1, 0])
                .reshape(&[7, 9])
                .compute(client)
                .unwrap(),
            &a.clone().into_shape_with_order(IxDyn(&[7, 9])).unwrap(),
            "reshape after rechunk",
        );
        let auto = random::uniform(0.0, 1.0, &[9000, 4000], &[100, 100], 1).rechunk_auto();
        // 128 MiB of f64: the 4000 columns whole, then 4194 rows.
        assert_eq!(
            (auto.chunks()[0][0], auto.chunks()[1][0]),
            (4194, 4000),
            "auto"
        );
        assert!(x.rechunk(&[-2, 3]).check().is_err(), "-2 is no chunk size");
        // rechunk
        let r = x.rechunk(&[2, 5]);
        assert_eq!(r.chunks(), &vec![vec![2, 2, 2, 2, 1], vec![5, 2]]);
        close(&r.compute(client).unwrap(), &a, "rechunk");
        // concatenate and stack
        let c = data(&[4, 7], 23);
        let z = array::from_array(&c, &[3, 3]);
        let joined = array::concatenate(&[x.clone(), z.clone()], 0);
        close(
            &joined.compute(client).unwrap(),
            &ndarray::concatenate(Axis(0), &[a.view(), c.view()]).unwrap(),
            "concatenate",
        );
        let stacked = array::stack(&[x.clone(), x.clone() + 1.0], 1);
        let want = ndarray::stack(Axis(1), &[a.view(), (&a + 1.0).view()]).unwrap();
        close(&stacked.compute(client).unwrap(), &want, "stack");
        // dot
        let m = data(&[7, 5], 24);
        let w = array::from_array(&m, &[2, 4]);
        let want = a
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap()
            .dot(&m.view().into_dimensionality::<ndarray::Ix2>().unwrap());
        close(&x.dot(&w).compute(client).unwrap(), &want.into_dyn(), "dot");
        // Transposed operands are read untransposed (the product takes their transposes).
        let a2 = a.view().into_dimensionality::<ndarray::Ix2>().unwrap();
        let want = a2.t().dot(&a2);
        close(
            &x.t().dot(&x).compute(client).unwrap(),
            &want.into_dyn(),
            "x.T . x",
        );
        let want = a2.dot(&a2.t());
        close(
            &x.dot(&x.t()).compute(client).unwrap(),
            &want.into_dyn(),
            "x . x.T",
        );
        assert!(
            x.dot(&x)
                .check()
                .unwrap_err()
                .to_string()
                .contains("[9, 7] and [9, 7]")
        );
    });
}

fn double_block(block: ArrayD<f64>) -> ArrayD<f64> {
    block * 2.0
}

fn sum_blocks(blocks: Vec<ArrayD<f64>>) -> ArrayD<f64> {
    let mut total = blocks[0].clone();
    for b in &blocks[1..] {
        total += b;
    }
    total
}

#[test]
fn map_blocks_and_blockwise_run_plain_functions() {
    local(2, |client| {
        let a = data(&[8, 3], 31);
        let x = array::from_array(&a, &[3, 3]);
        close(
            &x.map_blocks(double_block).compute(client).unwrap(),
            &(&a * 2.0),
            "map_blocks",
        );
        let y = x.clone() + 1.0;
        close(
            &array::blockwise(sum_blocks, &[x, y])
                .compute(client)
                .unwrap(),
            &(&a * 2.0 + 1.0),
            "blockwise",
        );
    });
}

/// Every other row of a block, from its first.
fn every_other_row(block: ArrayD<f64>) -> ArrayD<f64> {
    block
        .slice_axis(Axis(0), ndarray::Slice::new(0, None, 2))
        .to_owned()
}

#[test]
fn map_blocks_to_makes_blocks_of_other_sizes() {
    local(2, |client| {
        let a = data(&[8, 3], 32);
        let x = array::from_array(&a, &[3, 2]);
        let y = x.map_blocks_to(every_other_row, vec![vec![2, 2, 1], vec![2, 1]]);
        // Rows 0, 2 of the first chunk, 3, 5 of the second, 6 of the third.
        let want = a.select(Axis(0), &[0, 2, 3, 5, 6]);
        close(&y.compute(client).unwrap(), &want, "map_blocks_to");
        close(
            &y.sum_axis(0).compute(client).unwrap(),
            &want.sum_axis(Axis(0)),
            "then summed",
        );
        let wrong = x.map_blocks_to(every_other_row, vec![vec![3, 3, 2], vec![2, 1]]);
        let error = format!(
            "{:#}",
            anyhow::Error::new(wrong.compute::<f64>(client).unwrap_err())
        );
        assert!(error.contains("expected"), "{error}");
        let counts = x.map_blocks_to(every_other_row, vec![vec![5], vec![2, 1]]);
        assert!(
            counts
                .check()
                .unwrap_err()
                .to_string()
                .contains("one size per chunk")
        );
    });
}

fn floor_to_ints(block: ArrayD<f64>) -> ArrayD<i64> {
    block.mapv(|v| v.floor() as i64)
}

fn keeps_no_shape(block: ArrayD<f64>) -> ArrayD<f64> {
    block.sum_axis(Axis(0)).into_dyn()
}

#[test]
fn map_blocks_runs_inside_the_program_that_reads_it() {
    local(2, |client| {
        let a = data(&[9, 7], 32);
        let x = array::from_array(&a, &[4, 3]);
        let y = x.map_blocks(double_block);
        // Read once, chunk for chunk: the function runs inside the reduction's tasks.
        let total = y.sum();
        let plan = total.explain();
        assert!(
            plan.contains("fused (map_blocks double_block) task"),
            "{plan}"
        );
        assert!(!plan.contains("map_blocks: double_block"), "{plan}");
        close(
            &total.compute(client).unwrap(),
            &ndarray::arr0(a.sum() * 2.0).into_dyn(),
            "map_blocks then sum",
        );
        let both = (&y - 1.0).mean_axis(1);
        close(
            &both.compute(client).unwrap(),
            &(&a * 2.0 - 1.0).mean_axis(Axis(1)).unwrap(),
            "map_blocks then an expression reduced along an axis",
        );
        let listed = array::blockwise(sum_blocks, &[x.clone(), x.clone() + 1.0]).max();
        assert!(
            listed
                .explain()
                .contains("fused (map_blocks sum_blocks) task")
        );
        close(
            &listed.compute(client).unwrap(),
            &ndarray::arr0((&a * 2.0 + 1.0).fold(f64::MIN, |m, &v| m.max(v))).into_dyn(),
            "blockwise then max",
        );
        // Blocks of integers, read by the general kernels.
        let ints = x.map_blocks(floor_to_ints).sum();
        assert!(
            ints.explain()
                .contains("fused (map_blocks floor_to_ints) task")
        );
        assert_eq!(
            ints.compute::<i64>(client).unwrap().sum(),
            a.mapv(|v| v.floor() as i64).sum()
        );
        // Read twice: computed once, as a task of its own.
        let twice = (&y + &y.t().t()).sum();
        let plan = twice.explain();
        assert!(plan.contains("map_blocks: double_block"), "{plan}");
        close(
            &twice.compute(client).unwrap(),
            &ndarray::arr0(a.sum() * 4.0).into_dyn(),
            "map_blocks read twice",
        );
        // A function that changes the chunk's shape fails its task with what to fix.
        match x.map_blocks(keeps_no_shape).sum().compute::<f64>(client) {
            Err(mpidask::Error::Task(error)) => {
                assert!(
                    error.message.contains("must keep the chunk's shape"),
                    "{error:?}"
                );
            }
            other => panic!("a block of another shape: {other:?}"),
        }
    });
}

#[test]
fn persist_keeps_chunks_on_workers() {
    local(2, |client| {
        let x = random::uniform(0.0, 1.0, &[100], &[30], 3);
        let kept = x.persist(client).unwrap();
        let direct = x.compute::<f64>(client).unwrap();
        assert_eq!(kept.compute::<f64>(client).unwrap(), direct);
        close(
            &(kept.clone() * 2.0).sum().compute(client).unwrap(),
            &ndarray::arr0(direct.sum() * 2.0).into_dyn(),
            "reuse",
        );
        let futures = kept.to_futures::<f64>(client).unwrap();
        assert_eq!(futures.len(), 4);
    });
}

#[test]
fn the_pi_workload_fuses_into_one_task_per_chunk() {
    let n = 1000;
    let xy = random::uniform(0.0, 1.0, &[n, 2], &[300, 2], 42);
    let pi = xy.powi(2).sum_axis(-1).lt(1.0).mean() * 4.0;
    let plan = pi.explain();
    assert!(plan.contains("4 x fused task"), "{plan}");
    assert!(plan.contains("random.uniform"), "{plan}");
    assert!(plan.contains("partial mean"), "{plan}");
    assert!(plan.contains("1 x combine mean"), "{plan}");
    let value = local(2, |client| pi.compute_scalar::<f64>(client).unwrap());
    assert!((value - std::f64::consts::PI).abs() < 0.2, "{value}");
}

#[test]
fn wrong_element_types_are_clear_errors() {
    local(1, |client| {
        let x = array::ones(&[3], &[2]);
        let message = x.compute::<i64>(client).unwrap_err().to_string();
        assert!(message.contains("astype"), "{message}");
    });
}

fn chunk_total(block: ArrayD<f64>) -> f64 {
    block.sum()
}

fn add_all(values: Vec<f64>) -> f64 {
    values.into_iter().sum()
}

fn scaled(block: ArrayD<f64>, factor: f64) -> ArrayD<f64> {
    block * factor
}

#[test]
fn delayed_calls_consume_and_produce_array_chunks() {
    use mpidask::delayed::{Session, delayed};
    local(2, |client| {
        let a = data(&[10, 3], 41);
        let x = array::from_array(&a, &[4, 3]);
        // consume chunks
        let totals: Vec<_> = x
            .to_delayed::<f64>()
            .into_iter()
            .map(|c| delayed(chunk_total, c))
            .collect();
        let total = delayed(add_all, totals);
        let value = total.compute(client).unwrap();
        assert!((value - a.sum()).abs() < 1e-9);
        // produce chunks
        let doubled: Vec<_> = x
            .to_delayed::<f64>()
            .into_iter()
            .map(|c| delayed(scaled, (c, 2.0)))
            .collect();
        let y = array::from_delayed(doubled, &[10, 3], &[4, 3]);
        close(&y.compute(client).unwrap(), &(&a * 2.0), "from_delayed");
        // shared parts run once per session
        let shared = delayed(chunk_total, x.to_delayed::<f64>().remove(0));
        let before = client.scheduler_info().unwrap().tasks_completed;
        let mut session = Session::new(client);
        let f1 = session.submit(&delayed(add_all, vec![shared.clone(), shared.clone()]));
        let f2 = session.submit(&shared);
        let (v1, v2) = (f1.result().unwrap(), f2.result().unwrap());
        assert!((v1 - 2.0 * v2).abs() < 1e-9);
        let after = client.scheduler_info().unwrap().tasks_completed;
        // The chunk, the shared call and the sum: the shared call ran once.
        assert_eq!(after - before, 3);
    });
}

/// Dask's stacks of `.npy` files: one written by `dask.array.to_npy_stack` opens in mpidask
/// with Dask's chunks and NumPy's values, and one written by mpidask opens in
/// `dask.array.from_npy_stack` with the same values.
#[test]
fn npy_stacks_move_between_dask_and_mpidask() {
    let base = std::env::temp_dir().join(format!("mpidask-npy-stack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let (from_dask, reference) = (base.join("from-dask"), base.join("reference.npy"));
    // Dask writes a 23 x 6 x 4 float64 array in (5, 3, 2) chunks along axis 0, and int64
    // values along axis 1; NumPy saves the same values whole.
    let text = run_python(
        "import sys, numpy as np, dask.array as da\n\
         import os\n\
         d, ref = sys.argv[1], sys.argv[2]\n\
         os.makedirs(d)\n\
         a = np.random.default_rng(3).standard_normal((23, 6, 4))\n\
         da.to_npy_stack(d + '/floats', da.from_array(a, chunks=(5, 3, 2)), axis=0)\n\
         np.save(ref, a)\n\
         i = np.arange(7 * 10, dtype=np.int64).reshape(7, 10) - 30\n\
         da.to_npy_stack(d + '/ints', da.from_array(i, chunks=(2, 4)), axis=1)\n\
         print('written')",
        &[&from_dask, &reference],
    );
    assert_eq!(text.trim(), "written");
    let want: ArrayD<f64> = ndarray_npy::read_npy(&reference).unwrap();
    let want_ints = ArrayD::from_shape_fn(IxDyn(&[7, 10]), |i| (i[0] * 10 + i[1]) as i64 - 30);
    let ours = base.join("ours");
    let mine = data(&[9, 10], 77);
    local(2, |client| {
        let floats = array::from_npy_stack(from_dask.join("floats")).unwrap();
        assert_eq!(floats.dtype(), DType::F64);
        assert_eq!(
            floats.chunks(),
            &vec![vec![5, 5, 5, 5, 3], vec![6], vec![4]]
        );
        assert_eq!(floats.compute::<f64>(client).unwrap(), want);
        let ints = array::from_npy_stack(from_dask.join("ints")).unwrap();
        assert_eq!(ints.dtype(), DType::I64);
        assert_eq!(ints.chunks(), &vec![vec![7], vec![4, 4, 2]]);
        assert_eq!(ints.compute::<i64>(client).unwrap(), want_ints);
        // mpidask writes along the last axis from (4, 3) chunks: whole rows per block.
        array::from_array(&mine, &[4, 3])
            .to_npy_stack(client, &ours, -1)
            .unwrap();
        let back = array::from_npy_stack(&ours).unwrap();
        assert_eq!(back.chunks(), &vec![vec![9], vec![3, 3, 3, 1]]);
        assert_eq!(back.compute::<f64>(client).unwrap(), mine);
        // Bad stacks are errors naming the file and the fix.
        let error = array::from_npy_stack(&base).unwrap_err().to_string();
        assert!(
            error.contains("info") && error.contains("to_npy_stack"),
            "{error}"
        );
        std::fs::write(from_dask.join("ints/info"), b"junk").unwrap();
        let error = array::from_npy_stack(from_dask.join("ints"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a Python pickle"), "{error}");
    });
    let mine_path = base.join("mine.npy");
    ndarray_npy::write_npy(&mine_path, &mine).unwrap();
    let text = run_python(
        "import sys, numpy as np, dask.array as da\n\
         x = da.from_npy_stack(sys.argv[1])\n\
         want = np.load(sys.argv[2])\n\
         assert x.dtype == np.float64, x.dtype\n\
         assert x.chunks == ((9,), (3, 3, 3, 1)), x.chunks\n\
         assert np.array_equal(x.compute(), want)\n\
         print('dask read it')",
        &[&ours, &mine_path],
    );
    assert_eq!(text.trim(), "dask read it");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn arrays_round_trip_through_npy_directories_readable_by_numpy() {
    let dir = std::env::temp_dir().join(format!("mpidask-npy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let a = data(&[7, 5], 51);
    let (back, sum) = local(2, |client| {
        let x = array::from_array(&a, &[3, 2]);
        x.to_npy_dir(client, &dir).unwrap();
        let y = array::from_npy_dir(&dir).unwrap();
        assert_eq!(y.chunks(), x.chunks());
        (
            y.compute::<f64>(client).unwrap(),
            (y * 2.0).sum().compute_scalar::<f64>(client).unwrap(),
        )
    });
    assert_eq!(back, a);
    assert!((sum - 2.0 * a.sum()).abs() < 1e-9);
    // NumPy reads the files (MPIDASK_TEST_PYTHON: a Python with numpy; `make test` sets it up).
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
    let python = std::env::var("MPIDASK_TEST_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    });
    let script = "import json, sys, numpy as np\n\
        d = sys.argv[1]\n\
        meta = json.load(open(d + '/meta.json'))\n\
        parts = [np.load(d + '/' + f) for f in meta['files']]\n\
        assert all(p.dtype == np.float64 for p in parts)\n\
        print(repr(float(sum(p.sum() for p in parts))), sum(p.size for p in parts))";
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (`make test` creates target/pyenv with numpy; or set MPIDASK_TEST_PYTHON to a Python with numpy)"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "numpy could not read the directory with {python} (`make test` creates target/pyenv with numpy; or set MPIDASK_TEST_PYTHON to a Python with numpy): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    let numpy_sum: f64 = words.next().unwrap().parse().unwrap();
    assert!((numpy_sum - a.sum()).abs() < 1e-9, "{text}");
    assert_eq!(words.next(), Some("35"));
}

/// The graphs of everyday workloads read what they need and no more (from
/// `Array::graph_summary`, the numbers `explain()` prints), so a change that makes one move
/// whole chunks again fails here.
#[test]
fn everyday_graphs_move_only_what_they_need() {
    let (n, c) = (2000, 200);
    let x_bytes = (n * n * 8) as u64;
    let chunks = (n / c) * (n / c);
    local(2, |client| {
        let x = random::uniform(0.0, 1.0, &[n, n], &[c, c], 5)
            .persist(client)
            .unwrap();
        let summary = |a: Array| a.graph_summary().unwrap();

        // Standardisation moves the reduced rows (and reduction states), not chunks.
        let standardize = summary(((&x - x.mean_axis(0)) / x.std_axis(0)).sum_axis(1));
        assert!(
            standardize.moved_bytes < x_bytes / 10,
            "{standardize:?}: {}",
            ((&x - x.mean_axis(0)) / x.std_axis(0))
                .sum_axis(1)
                .explain()
        );

        // A transposed reduction reads each chunk where it lies: one task per chunk and a
        // tree of combines of single numbers.
        let t = summary(x.t().sum());
        assert_eq!(t.tasks, chunks + 13 + 2 + 1, "{}", x.t().sum().explain());
        assert!(t.moved_bytes < 4096, "{t:?}");
        let t_axis = summary(x.t().sum_axis(1));
        assert!(t_axis.moved_bytes < x_bytes / 50, "{t_axis:?}");

        // x + x.T reads each chunk's transposed partner: about x once.
        let xt = summary((&x + x.t()).mean_axis(0));
        assert!(xt.moved_bytes <= x_bytes + x_bytes / 20, "{xt:?}");

        // Rechunking moves the pieces, each once, not whole chunks per piece.
        let columns = summary(x.rechunk(&[n as isize, 20]).sum_axis(0));
        assert!(columns.moved_bytes <= x_bytes + x_bytes / 20, "{columns:?}");
    });
}

/// Workloads whose chunks are read through views (a transpose, a slice, a broadcast row)
/// or reduced over some axes give NumPy's values.
#[test]
fn views_and_axis_reductions_match_ndarray() {
    let a = data(&[23, 31], 7);
    let z = data(&[4, 9, 6], 8);
    local(2, |client| {
        let x = array::from_array(&a, &[7, 10]).persist(client).unwrap();
        let zz = array::from_array(&z, &[3, 4, 6]).persist(client).unwrap();
        let m = a.mean_axis(Axis(0)).unwrap();
        let s = a.std_axis(Axis(0), 0.0);
        let standardized = ((&a - &m) / &s).sum_axis(Axis(1));
        let got = ((&x - x.mean_axis(0)) / x.std_axis(0)).sum_axis(1);
        close(
            &got.compute::<f64>(client).unwrap(),
            &standardized,
            "standardize",
        );

        let square = data(&[23, 23], 9);
        let sq = array::from_array(&square, &[7, 7]).persist(client).unwrap();
        let want = (&square + &square.t()).mean_axis(Axis(0)).unwrap();
        let got = (&sq + sq.t()).mean_axis(0).compute::<f64>(client).unwrap();
        close(&got, &want, "x + x.T");
        close(
            &sq.t().sum_axis(1).compute::<f64>(client).unwrap(),
            &square.t().sum_axis(Axis(1)),
            "x.T.sum(1)",
        );
        close(
            &ArrayD::from_elem(
                IxDyn(&[]),
                x.t().sum().compute_scalar::<f64>(client).unwrap(),
            ),
            &ArrayD::from_elem(IxDyn(&[]), a.sum()),
            "x.T.sum()",
        );
        close(
            &x.t().max_axis(0).compute::<f64>(client).unwrap(),
            &a.t()
                .fold_axis(Axis(0), f64::NEG_INFINITY, |m, &v| m.max(v)),
            "x.T.max(0)",
        );
        let strided = x.slice(&[Span::new(None, None, 2), Span::new(Some(5), Some(27), 1)]);
        let want = a
            .slice(ndarray::s![..;2, 5..27])
            .sum_axis(Axis(1))
            .into_dyn();
        close(
            &strided.sum_axis(1).compute::<f64>(client).unwrap(),
            &want,
            "x[::2, 5:27].sum(1)",
        );
        close(
            &zz.mean_axis(1).compute::<f64>(client).unwrap(),
            &z.mean_axis(Axis(1)).unwrap(),
            "3-D mean over the middle axis",
        );
        close(
            &x.rechunk(&[23, 3])
                .sum_axis(0)
                .compute::<f64>(client)
                .unwrap(),
            &a.sum_axis(Axis(0)),
            "rechunk to columns",
        );
        close(
            &x.var_axis(0).compute::<f64>(client).unwrap(),
            &a.var_axis(Axis(0), 0.0),
            "var(0)",
        );
        let argmin: ArrayD<f64> = x
            .argmin_axis(0)
            .compute::<i64>(client)
            .unwrap()
            .mapv(|v| v as f64);
        let want = ndarray::Array1::from_iter(a.axis_iter(Axis(1)).map(|col| {
            col.iter()
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |(bi, bv), (i, &v)| if v < bv { (i, v) } else { (bi, bv) },
                )
                .0 as f64
        }))
        .into_dyn();
        close(&argmin, &want, "argmin(0)");
    });
}
