//! Tile loops against the interpreter, on every instruction set the CPU has.

use super::super::dtype::Scalar;
use super::super::kernel::{Partial, interpret};
use super::super::program::AxisSlice;
use super::*;
use ndarray::{ArrayD, IxDyn};

/// A program over chunks of `rows` rows; nodes are `(op, shape, dtype)`, all streaming
/// but the single values.
fn program(inputs: Vec<DType>, nodes: Vec<(Op, Vec<usize>, DType)>, output: Output) -> Program {
    Program {
        inputs,
        nodes: nodes
            .into_iter()
            .map(|(op, shape, dtype)| super::super::program::Node {
                streams: !matches!(op, Op::Scalar(_)),
                op,
                shape,
                dtype,
            })
            .collect(),
        output,
    }
}

fn total(op: ReduceOp, shape: &[usize]) -> Output {
    Output::Partial {
        op,
        axes: (0..shape.len()).collect(),
        offset: vec![0; shape.len()],
        global_shape: shape.to_vec(),
    }
}

fn uniform(key: u64) -> Op {
    Op::Random {
        dist: Distribution::Uniform {
            low: -1.0,
            high: 1.0,
        },
        key,
    }
}

fn raw(inputs: &[Block]) -> Vec<Option<Raw<'_>>> {
    inputs.iter().map(Raw::of).collect()
}

fn run_both(program: &Program, inputs: &[Block]) -> (Outcome, Outcome) {
    let slices = raw(inputs);
    let plan = Plan::compile(program, &slices).expect("the program compiles to tiles");
    let best = plan.run(&slices);
    // The same bits from every instruction set this CPU has.
    let same = |a: &Outcome, b: &Outcome| match (a, b) {
        (Outcome::Chunk(x), Outcome::Chunk(y)) => x == y,
        (Outcome::Encoded(x), Outcome::Encoded(y)) => x == y,
        // Debug text: the same bits print the same, NaN included.
        (Outcome::Partial(x), Outcome::Partial(y)) => format!("{x:?}") == format!("{y:?}"),
        _ => false,
    };
    assert!(same(&best, &plan.run_tiles::<false>(&slices)));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        assert!(same(&best, &unsafe { plan.run_avx2(&slices) }));
    }
    (best, interpret(program, inputs).expect("interpreted"))
}

fn chunk(outcome: Outcome) -> Block {
    match outcome {
        Outcome::Chunk(block) => block,
        Outcome::Encoded(bytes) => Block::decode(&bytes, DType::F64).expect("a chunk"),
        Outcome::Partial(_) => panic!("a chunk expected"),
    }
}

fn partial(outcome: Outcome) -> Partial {
    match outcome {
        Outcome::Partial(p) => *p,
        _ => panic!("a partial expected"),
    }
}

fn f64s(block: Block) -> Vec<f64> {
    match block {
        Block::F64(a) => a.iter().copied().collect(),
        other => panic!("f64 expected, got {}", other.dtype()),
    }
}

#[test]
fn the_seeds_pi_counts_exactly_what_the_interpreter_counts() {
    let rows = 100_003;
    let p = program(
        vec![],
        vec![
            (uniform(11), vec![rows, 2], DType::F64),
            (Op::Unary(UnaryOp::Powi(2), 0), vec![rows, 2], DType::F64),
            (
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: vec![1],
                    keepdims: false,
                    arg: 1,
                },
                vec![rows],
                DType::F64,
            ),
            (Op::Scalar(Scalar::F64(1.0)), vec![], DType::F64),
            (Op::Binary(BinaryOp::Lt, 2, 3), vec![rows], DType::Bool),
        ],
        total(ReduceOp::Mean, &[rows]),
    );
    let (fused, interpreted) = run_both(&p, &[]);
    assert_eq!(partial(fused), partial(interpreted));
}

#[test]
fn a_memory_bound_sum_agrees_with_the_interpreter() {
    let n = 50_001;
    let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
    let block = |v: Vec<f64>| Block::F64(ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap());
    let inputs = [block(a.clone()), block(b.clone())];
    let p = program(
        vec![DType::F64, DType::F64],
        vec![
            (Op::Input(0), vec![n], DType::F64),
            (Op::Input(1), vec![n], DType::F64),
            (Op::Binary(BinaryOp::Sub, 0, 1), vec![n], DType::F64),
            (Op::Unary(UnaryOp::Powi(2), 2), vec![n], DType::F64),
        ],
        total(ReduceOp::Sum, &[n]),
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    let Partial::Sum(fused) = partial(fused) else {
        panic!("a sum")
    };
    let Partial::Sum(interpreted) = partial(interpreted) else {
        panic!("a sum")
    };
    let (x, y) = (f64s(fused)[0], f64s(interpreted)[0]);
    let exact: f64 = a.iter().zip(&b).map(|(p, q)| (p - q) * (p - q)).sum();
    assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} {y}");
    assert!((x - exact).abs() <= 1e-10 * exact.abs(), "{x} {exact}");
    // The square of an input less a constant, the constant first or second.
    for (first, second) in [(0, 1), (1, 0)] {
        let p = program(
            vec![DType::F64],
            vec![
                (Op::Input(0), vec![n], DType::F64),
                (Op::Scalar(Scalar::F64(0.5)), vec![], DType::F64),
                (
                    Op::Binary(BinaryOp::Sub, first, second),
                    vec![n],
                    DType::F64,
                ),
                (Op::Unary(UnaryOp::Powi(2), 2), vec![n], DType::F64),
            ],
            total(ReduceOp::Sum, &[n]),
        );
        let (fused, interpreted) = run_both(&p, &inputs[..1]);
        let (Partial::Sum(x), Partial::Sum(y)) = (partial(fused), partial(interpreted)) else {
            panic!("sums")
        };
        let (x, y) = (f64s(x)[0], f64s(y)[0]);
        assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} {y}");
    }
}

#[test]
fn stored_chunks_are_bit_identical_to_the_interpreters() {
    // Rows of three: row tiling, a last partial tile, every row reduction, a normal
    // source, where, comparisons, casts and booleans.
    let rows = 5_003;
    let s = |v: f64| (Op::Scalar(Scalar::F64(v)), vec![], DType::F64);
    let reduce = |op, arg| {
        (
            Op::Reduce {
                op,
                axes: vec![1],
                keepdims: false,
                arg,
            },
            vec![rows],
            DType::F64,
        )
    };
    let normal = Op::Random {
        dist: Distribution::Normal {
            mean: 1.0,
            std: 2.0,
        },
        key: 5,
    };
    let nodes = vec![
        (uniform(3), vec![rows, 3], DType::F64), // 0
        (normal, vec![rows, 3], DType::F64),     // 1
        s(0.25),                                 // 2
        (Op::Binary(BinaryOp::Gt, 0, 2), vec![rows, 3], DType::Bool), // 3
        (Op::Binary(BinaryOp::Mul, 1, 0), vec![rows, 3], DType::F64), // 4
        (Op::Where(3, 4, 1), vec![rows, 3], DType::F64), // 5
        (Op::Unary(UnaryOp::Exp, 5), vec![rows, 3], DType::F64), // 6
        reduce(ReduceOp::Sum, 6),                // 7
        reduce(ReduceOp::Mean, 5),               // 8
        reduce(ReduceOp::Min, 1),                // 9
        reduce(ReduceOp::Max, 0),                // 10
        (Op::Binary(BinaryOp::Add, 7, 8), vec![rows], DType::F64), // 11
        (Op::Binary(BinaryOp::Div, 9, 10), vec![rows], DType::F64), // 12
        (Op::Binary(BinaryOp::Le, 11, 12), vec![rows], DType::Bool), // 13
        (Op::Unary(UnaryOp::Not, 13), vec![rows], DType::Bool), // 14
        (Op::Cast(DType::Bool, 12), vec![rows], DType::Bool), // 15
        (Op::Binary(BinaryOp::Or, 14, 15), vec![rows], DType::Bool), // 16
        (Op::Cast(DType::F64, 16), vec![rows], DType::F64), // 17
        (Op::Binary(BinaryOp::Sub, 17, 12), vec![rows], DType::F64), // 18
    ];
    let p = program(vec![], nodes.clone(), Output::Store);
    let (fused, interpreted) = run_both(&p, &[]);
    assert_eq!(chunk(fused), chunk(interpreted));
    // A boolean root.
    let p = program(vec![], nodes[..17].to_vec(), Output::Store);
    let (fused, interpreted) = run_both(&p, &[]);
    let fused = chunk(fused);
    assert_eq!(fused.dtype(), DType::Bool);
    assert_eq!(fused, chunk(interpreted));
}

#[test]
fn flat_chunks_and_minima_match() {
    let shape = vec![37, 129];
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 - 500.0).collect();
    let input = Block::F64(ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap());
    let nodes = vec![
        (Op::Input(0), shape.clone(), DType::F64),
        (uniform(9), shape.clone(), DType::F64),
        (Op::Binary(BinaryOp::Mul, 0, 1), shape.clone(), DType::F64),
        (Op::Unary(UnaryOp::Abs, 2), shape.clone(), DType::F64),
    ];
    for output in [
        Output::Store,
        total(ReduceOp::Min, &shape),
        total(ReduceOp::Max, &shape),
    ] {
        let p = program(vec![DType::F64], nodes.clone(), output);
        let (fused, interpreted) = run_both(&p, std::slice::from_ref(&input));
        match fused {
            Outcome::Partial(p) => assert_eq!(*p, partial(interpreted)),
            chunked => assert_eq!(chunk(chunked), chunk(interpreted)),
        }
    }
}

#[test]
fn inputs_are_read_at_any_alignment() {
    let n = 3_001;
    let values: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 7.0).collect();
    let block = Block::F64(ArrayD::from_shape_vec(IxDyn(&[n]), values).unwrap());
    let encoded = block.encode().unwrap();
    // One byte in, so that the elements cannot be aligned for f64.
    let mut moved = vec![0u8; encoded.len() + 1];
    moved[1..].copy_from_slice(&encoded);
    let (shape, bytes) = super::super::kernel::raw_f64(&moved[1..]).unwrap();
    assert_ne!(
        bytes.as_ptr() as usize % 8,
        0,
        "the test needs unaligned elements"
    );
    let p = program(
        vec![DType::F64],
        vec![
            (Op::Input(0), vec![n], DType::F64),
            (Op::Unary(UnaryOp::Neg, 0), vec![n], DType::F64),
        ],
        Output::Store,
    );
    let inputs = [Some(Raw {
        shape: &shape,
        bytes,
    })];
    let plan = Plan::compile(&p, &inputs).unwrap();
    let out = chunk(plan.run(&inputs));
    let Outcome::Chunk(expected) = interpret(&p, &[block]).unwrap() else {
        panic!("a chunk")
    };
    assert_eq!(out, expected);
    // A chunk whose bytes do not match its shape is refused.
    let short = [Some(Raw {
        shape: &shape,
        bytes: &bytes[8..],
    })];
    assert!(Plan::compile(&p, &short).is_none());
}

#[test]
fn sums_of_booleans_are_integer_counts() {
    let rows = 4_099;
    let p = program(
        vec![],
        vec![
            (uniform(1), vec![rows], DType::F64),
            (Op::Scalar(Scalar::F64(0.5)), vec![], DType::F64),
            (Op::Binary(BinaryOp::Ge, 0, 1), vec![rows], DType::Bool),
        ],
        total(ReduceOp::Sum, &[rows]),
    );
    let (fused, interpreted) = run_both(&p, &[]);
    let fused = partial(fused);
    assert!(matches!(&fused, Partial::Sum(Block::I64(_))));
    assert_eq!(fused, partial(interpreted));
}

#[test]
fn what_tiles_cannot_do_is_left_to_the_interpreter() {
    let rows = 100;
    // Integers.
    let p = program(
        vec![],
        vec![
            (uniform(1), vec![rows], DType::F64),
            (Op::Cast(DType::I64, 0), vec![rows], DType::I64),
        ],
        Output::Store,
    );
    assert!(Plan::compile(&p, &[]).is_none());
    // An arg-reduction over every axis (a flat index; along one axis it is tiled).
    let p = program(
        vec![],
        vec![(uniform(1), vec![rows, 4], DType::F64)],
        Output::Partial {
            op: ReduceOp::ArgMax,
            axes: vec![0, 1],
            offset: vec![0, 0],
            global_shape: vec![rows, 4],
        },
    );
    assert!(Plan::compile(&p, &[]).is_none());
    // An input that is not f64.
    let p = program(
        vec![DType::I64],
        vec![(Op::Input(0), vec![rows], DType::I64)],
        Output::Store,
    );
    let input = Block::I64(ArrayD::zeros(IxDyn(&[rows])));
    assert!(Plan::compile(&p, &raw(&[input])).is_none());
}

// ----- inputs read through views, reductions over some axes --------------------------------

/// A program the interpreter evaluates whole (as lowering marks one with a transpose, a
/// slice or a broadcast operand).
fn whole(inputs: Vec<DType>, nodes: Vec<(Op, Vec<usize>, DType)>, output: Output) -> Program {
    let mut p = program(inputs, nodes, output);
    for node in &mut p.nodes {
        node.streams = false;
    }
    p
}

fn over(op: ReduceOp, axes: &[usize], shape: &[usize]) -> Output {
    Output::Partial {
        op,
        axes: axes.to_vec(),
        offset: vec![0; shape.len()],
        global_shape: shape.to_vec(),
    }
}

fn values(shape: &[usize], seed: f64) -> Block {
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n).map(|i| ((i as f64 + seed) * 0.731).sin()).collect();
    Block::F64(ArrayD::from_shape_vec(IxDyn(shape), data).unwrap())
}

/// A partial's numbers, flat (sums then counts for a mean).
fn numbers(p: Partial) -> Vec<f64> {
    match p {
        Partial::Sum(b) | Partial::Min(b) | Partial::Max(b) => f64s(b),
        Partial::SumCount { sum, count } => sum.iter().chain(count.iter()).copied().collect(),
        other => panic!("unexpected partial {other:?}"),
    }
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{what}: {g} against {w}"
        );
    }
}

#[test]
fn standardising_with_broadcast_rows_reads_them_in_place() {
    // ((x - m) / s).sum(1) over a 37 x 1500 chunk: rows longer than a tile.
    let shape = vec![37, 1500];
    let inputs = vec![
        values(&shape, 0.0),
        values(&[1500], 3.0),
        values(&[1, 1500], 5.0),
    ];
    let p = whole(
        vec![DType::F64; 3],
        vec![
            (Op::Input(0), shape.clone(), DType::F64),
            (Op::Input(1), vec![1500], DType::F64),
            (Op::Input(2), vec![1, 1500], DType::F64),
            (Op::Binary(BinaryOp::Sub, 0, 1), shape.clone(), DType::F64),
            (Op::Binary(BinaryOp::Div, 3, 2), shape.clone(), DType::F64),
        ],
        over(ReduceOp::Sum, &[1], &shape),
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    assert_close(
        &numbers(partial(fused)),
        &numbers(partial(interpreted)),
        "row sums",
    );
}

#[test]
fn a_transposed_input_is_read_without_a_copy() {
    // (x + y.T).mean(0), and the transposed chunk stored alone.
    let inputs = vec![values(&[300, 70], 0.0), values(&[70, 300], 9.0)];
    let p = whole(
        vec![DType::F64; 2],
        vec![
            (Op::Input(0), vec![300, 70], DType::F64),
            (Op::Input(1), vec![70, 300], DType::F64),
            (Op::Transpose(vec![1, 0], 1), vec![300, 70], DType::F64),
            (Op::Binary(BinaryOp::Add, 0, 2), vec![300, 70], DType::F64),
        ],
        over(ReduceOp::Mean, &[0], &[300, 70]),
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    assert_close(
        &numbers(partial(fused)),
        &numbers(partial(interpreted)),
        "column means",
    );
    let t = whole(
        vec![DType::F64],
        vec![
            (Op::Input(0), vec![70, 300], DType::F64),
            (Op::Transpose(vec![1, 0], 0), vec![300, 70], DType::F64),
        ],
        Output::Store,
    );
    let (fused, interpreted) = run_both(&t, &inputs[1..]);
    assert_eq!(chunk(fused), chunk(interpreted));
}

#[test]
fn a_strided_slice_is_read_where_it_lies() {
    let slices = vec![
        AxisSlice {
            start: 1,
            step: 2,
            len: 40,
            reverse: false,
        },
        AxisSlice {
            start: 30,
            step: 1,
            len: 500,
            reverse: false,
        },
    ];
    let inputs = vec![values(&[81, 600], 1.0)];
    let p = whole(
        vec![DType::F64],
        vec![
            (Op::Input(0), vec![81, 600], DType::F64),
            (Op::Slice(slices, 0), vec![40, 500], DType::F64),
        ],
        over(ReduceOp::Max, &[1], &[40, 500]),
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    assert_eq!(
        numbers(partial(fused)),
        numbers(partial(interpreted)),
        "a maximum is exact"
    );
}

#[test]
fn a_mean_over_the_middle_axis_of_three() {
    let shape = vec![3, 400, 50];
    let inputs = vec![values(&shape, 2.0)];
    let p = program(
        vec![DType::F64],
        vec![
            (Op::Input(0), shape.clone(), DType::F64),
            (Op::Unary(UnaryOp::Abs, 0), shape.clone(), DType::F64),
        ],
        over(ReduceOp::Mean, &[1], &shape),
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    assert_close(
        &numbers(partial(fused)),
        &numbers(partial(interpreted)),
        "means",
    );
}

#[test]
fn views_outside_their_input_are_refused() {
    // A slice that claims more rows than the input has: the interpreter's error, not a read
    // past the end.
    let slices = vec![AxisSlice {
        start: 5,
        step: 1,
        len: 10,
        reverse: false,
    }];
    let inputs = vec![values(&[8], 0.0)];
    let p = whole(
        vec![DType::F64],
        vec![
            (Op::Input(0), vec![8], DType::F64),
            (Op::Slice(slices, 0), vec![10], DType::F64),
        ],
        Output::Store,
    );
    assert!(Plan::compile(&p, &raw(&inputs)).is_none());
}

#[test]
fn variances_over_rows_columns_and_everything() {
    // Values far from zero: the shifted sums keep the variance accurate.
    let shape = vec![45, 1300];
    let mut input = values(&shape, 4.0);
    if let Block::F64(a) = &mut input {
        a.mapv_inplace(|v| 1e4 + v);
    }
    let inputs = vec![input];
    for axes in [vec![0], vec![1], vec![0, 1]] {
        for op in [ReduceOp::Var(0), ReduceOp::Std(1)] {
            let p = program(
                vec![DType::F64],
                vec![(Op::Input(0), shape.clone(), DType::F64)],
                over(op, &axes, &shape),
            );
            let (fused, interpreted) = run_both(&p, &inputs);
            let moments = |p: Partial| match p {
                Partial::Moments { count, mean, m2 } => (
                    count.into_raw_vec_and_offset().0,
                    mean.into_raw_vec_and_offset().0,
                    m2.into_raw_vec_and_offset().0,
                ),
                other => panic!("moments expected, got {other:?}"),
            };
            let (fc, fm, f2) = moments(partial(fused));
            let (ic, im, i2) = moments(partial(interpreted));
            assert_eq!(fc, ic, "{axes:?} counts");
            assert_close(&fm, &im, "means");
            for (g, w) in f2.iter().zip(&i2) {
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs(),
                    "{axes:?}: m2 {g} against {w}"
                );
            }
        }
    }
}

#[test]
fn a_transposed_slice_is_one_view() {
    // x[2:9, 1:21:2].T stored: the slice and the transpose compose into one strided read.
    let slices = vec![
        AxisSlice {
            start: 2,
            step: 1,
            len: 7,
            reverse: false,
        },
        AxisSlice {
            start: 1,
            step: 2,
            len: 10,
            reverse: false,
        },
    ];
    let inputs = vec![values(&[12, 25], 3.0)];
    let p = whole(
        vec![DType::F64],
        vec![
            (Op::Input(0), vec![12, 25], DType::F64),
            (Op::Slice(slices, 0), vec![7, 10], DType::F64),
            (Op::Transpose(vec![1, 0], 1), vec![10, 7], DType::F64),
        ],
        Output::Store,
    );
    let (fused, interpreted) = run_both(&p, &inputs);
    assert_eq!(chunk(fused), chunk(interpreted));
}

#[test]
fn arg_reductions_along_one_axis_with_ties_and_nan() {
    // Repeated values (ties keep the first) and a NaN (which wins) in a 3-D chunk whose
    // offset along the reduced axis is not zero.
    let shape = vec![3, 70, 40];
    let n: usize = shape.iter().product();
    let mut data: Vec<f64> = (0..n).map(|i| ((i * 7919) % 13) as f64).collect();
    data[5 * 40 + 3] = f64::NAN;
    let inputs = vec![Block::F64(
        ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap(),
    )];
    for axis in 0..3 {
        for op in [ReduceOp::ArgMin, ReduceOp::ArgMax] {
            let mut offset = vec![0; 3];
            offset[axis] = 100;
            let p = program(
                vec![DType::F64],
                vec![(Op::Input(0), shape.clone(), DType::F64)],
                Output::Partial {
                    op,
                    axes: vec![axis],
                    offset,
                    global_shape: vec![500, 500, 500],
                },
            );
            let (fused, interpreted) = run_both(&p, &inputs);
            let (Partial::Arg { index: a, .. }, Partial::Arg { index: b, .. }) =
                (partial(fused), partial(interpreted))
            else {
                panic!("arg partials expected")
            };
            assert_eq!(a, b, "{op:?} along {axis}");
        }
    }
}
