//! The six element types (`bool`, `u8`, `i32`, `i64`, `f32`, `f64`) against NumPy: the
//! same inputs, the same operations, and every result's type and values compared by NumPy
//! itself: promotion between types, weak scalars (NumPy 2), wrapping integer arithmetic,
//! reductions (and the NaN-skipping ones, all-NaN lanes included), comparisons, `where`
//! and `astype` between every pair. Local mode, chunks that do not divide the shape;
//! `tests/mpi.rs` reads and writes the types under mpirun.

mod support;

use mpidask::array::{self, Array, DType};
use ndarray::{ArrayD, IxDyn};
use support::python::run_python;
use support::stored::{local, save, workdir};

fn inputs(shape: &[usize]) -> [(String, ArrayD<f64>); 4] {
    let n: usize = shape.iter().product();
    let make = |f: &dyn Fn(u64) -> f64| {
        let v: Vec<f64> = (0..n as u64).map(f).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    };
    let hash = |i: u64, seed: u64| (i * 2_654_435_761 + seed * 97) % 100_003;
    [
        ("a".into(), make(&|i| (hash(i, 1) % 256) as f64)),
        ("b".into(), make(&|i| hash(i, 2) as f64 - 50_000.0)),
        (
            "c".into(),
            make(&|i| (hash(i, 3) % 8750) as f64 / 25.0 - 100.0),
        ),
        (
            "f".into(),
            make(&|i| (hash(i, 4) % 7000) as f64 / 27.0 - 50.0),
        ),
    ]
}

/// What NumPy computes for each name the Rust side saved, with the inputs loaded in their
/// types; NumPy sums `u8` in `u64` where mpidask sums in `i64` (the one type told apart).
const CHECK: &str = r#"
import sys, numpy as np
d = sys.argv[1]
L = lambda n: np.load(f'{d}/{n}.npy')
a, b, c, f, m, w, g = L('in_a'), L('in_b'), L('in_c'), L('in_f'), L('in_m'), L('in_w'), L('in_g')
import warnings; warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN lanes
assert (a.dtype, b.dtype, c.dtype, f.dtype, m.dtype, w.dtype) == (np.uint8, np.int32, np.float32, np.float64, np.bool_, np.int64)
types = dict(bool=np.bool_, u8=np.uint8, i32=np.int32, i64=np.int64, f32=np.float32, f64=np.float64)
cases = {
    'a_plus_200': a + 200, 'a_times_a': a * a, 'a_minus_b': a - b, 'a_plus_b': a + b,
    'b_times_c': b * c, 'a_times_c': a * c, 'a_times_half': a * 0.5, 'c_times_3': c * 3.0,
    'b_plus_w': b + w, 'w_times_c': w * c, 'm_plus_1': m + 1, 'b_div_7': b / 7,
    'seven_minus_a': 7.0 - a.astype(np.int64),
    'neg_a': -a, 'abs_b': np.abs(b), 'b_squared': b ** 2, 'sqrt_a': np.sqrt(a.astype(np.float64)),
    'sum_a': a.sum().astype(np.int64), 'sum_a_0': a.sum(0).astype(np.int64), 'sum_b_1': b.sum(1),
    'max_a_1': a.max(1), 'min_b': b.min(), 'max_c_0': c.max(0), 'mean_a': a.mean(), 'std_b_0': b.std(0),
    'argmax_a_1': a.argmax(1), 'a_gt_100': a > 100, 'b_lt_c': b < c, 'a_eq_b': a == b,
    'where_m_a_b': np.where(m, a, b), 'where_m_a_3': np.where(m, a, np.uint8(3)),
    'nansum_g_0': np.nansum(g, 0), 'nansum_g': np.nansum(g), 'nanmean_g_1': np.nanmean(g, 1),
    'nanmean_g_0': np.nanmean(g, 0), 'nanmin_g_1': np.nanmin(g, 1), 'nanmax_g_0': np.nanmax(g, 0),
    'nanvar_g_1': np.nanvar(g, 1), 'nanstd_g': np.nanstd(g), 'nanmean_c_0': np.nanmean(c, 0),
    'nansum_b_1': np.nansum(b, 1), 'nanmax_a_0': np.nanmax(a, 0),
}
src = dict(a=a, b=b, c=c, f=f, m=m, w=w)
for s, x in src.items():
    for t, dt in types.items():
        # A float outside 0..255 to u8 is platform-defined in NumPy.
        y = np.abs(x) if t == 'u8' and x.dtype.kind == 'f' else x
        cases[f'{s}_as_{t}'] = y.astype(dt)
bad = []
for name, want in cases.items():
    want = np.asarray(want)
    got = L(name)
    if got.dtype != want.dtype or got.shape != want.shape:
        bad.append(f'{name}: {got.dtype}{got.shape} where NumPy gives {want.dtype}{want.shape}')
    elif want.dtype.kind == 'f':
        if not np.allclose(got, want, rtol=1e-6 if want.dtype == np.float32 else 1e-12, atol=0, equal_nan=True):
            bad.append(f'{name}: values differ, largest by {np.nanmax(np.abs(got - want))}')
    elif not np.array_equal(got, want):
        bad.append(f'{name}: values differ at {np.argwhere(got != want)[:3].tolist()}')
print('\n'.join(bad) if bad else f'numpy agrees on {len(cases)}')
"#;

#[test]
fn every_element_type_computes_as_numpy_does() {
    let dir = workdir("dtypes");
    let shape = [13, 11];
    let chunks = [5, 4];
    local(|client| {
        let [a, b, c, f] = inputs(&shape).map(|(_, v)| array::from_array(&v, &chunks));
        let a = a.astype(DType::U8);
        let b = b.astype(DType::I32);
        let c = c.astype(DType::F32);
        let m = b.gt(0);
        let w = (&b * 3).astype(DType::I64);
        // Missing values: NaN where f > 40 and in all of row 2.
        let g = array::where_(&f.gt(40.0), f64::NAN, &f);
        let row2 = array::from_array(
            &ArrayD::from_shape_fn(IxDyn(&shape), |i| i[0] == 2),
            &chunks,
        );
        let g = array::where_(&row2, f64::NAN, &g);
        for (name, x, dtype) in [
            ("a", &a, DType::U8),
            ("b", &b, DType::I32),
            ("c", &c, DType::F32),
            ("f", &f, DType::F64),
            ("m", &m, DType::Bool),
            ("w", &w, DType::I64),
            ("g", &g, DType::F64),
        ] {
            assert_eq!(x.dtype(), dtype, "{name}");
            save(client, &dir, &format!("in_{name}"), x).unwrap();
        }
        let cases: Vec<(&str, Array)> = vec![
            ("a_plus_200", &a + 200),
            ("a_times_a", &a * &a),
            ("a_minus_b", &a - &b),
            ("a_plus_b", &a + &b),
            ("b_times_c", &b * &c),
            ("a_times_c", &a * &c),
            ("a_times_half", &a * 0.5),
            ("c_times_3", &c * 3.0),
            ("b_plus_w", &b + &w),
            ("w_times_c", &w * &c),
            ("m_plus_1", &m + 1),
            ("b_div_7", &b / 7),
            ("seven_minus_a", 7.0 - &a.astype(DType::I64)),
            ("neg_a", -&a),
            ("abs_b", b.abs()),
            ("b_squared", b.powi(2)),
            // NumPy takes the root of u8 in float16, which mpidask arrays do not have.
            ("sqrt_a", a.sqrt()),
            ("sum_a", a.sum()),
            ("sum_a_0", a.sum_axis(0)),
            ("sum_b_1", b.sum_axis(1)),
            ("max_a_1", a.max_axis(1)),
            ("min_b", b.min()),
            ("max_c_0", c.max_axis(0)),
            ("mean_a", a.mean()),
            ("std_b_0", b.std_axis(0)),
            ("argmax_a_1", a.argmax_axis(1)),
            ("a_gt_100", a.gt(100)),
            ("b_lt_c", b.lt(&c)),
            ("a_eq_b", a.eq(&b)),
            ("where_m_a_b", array::where_(&m, &a, &b)),
            ("where_m_a_3", array::where_(&m, &a, 3u8)),
            ("nansum_g_0", g.nansum_axis(0)),
            ("nansum_g", g.nansum()),
            ("nanmean_g_1", g.nanmean_axis(1)),
            ("nanmean_g_0", g.nanmean_axis(0)),
            ("nanmin_g_1", g.nanmin_axis(1)),
            ("nanmax_g_0", g.nanmax_axis(0)),
            ("nanvar_g_1", g.nanvar_axis(1)),
            ("nanstd_g", g.nanstd()),
            ("nanmean_c_0", c.nanmean_axis(0)),
            ("nansum_b_1", b.nansum_axis(1)),
            ("nanmax_a_0", a.nanmax_axis(0)),
        ];
        for (name, x) in &cases {
            save(client, &dir, name, x).unwrap();
        }
        for (s, x) in [
            ("a", &a),
            ("b", &b),
            ("c", &c),
            ("f", &f),
            ("m", &m),
            ("w", &w),
        ] {
            for t in DType::ALL {
                let x = if t == DType::U8 && x.dtype().is_float() {
                    x.abs()
                } else {
                    x.clone()
                };
                save(client, &dir, &format!("{s}_as_{t}"), &x.astype(t)).unwrap();
            }
        }
        // A weak scalar the array's type cannot hold is an error, as in NumPy 2.
        let error = (&a + 300).check().unwrap_err().to_string();
        assert!(
            error.contains("300") && error.contains("u8") && error.contains("astype"),
            "{error}"
        );
    });
    let text = run_python(CHECK, &[&dir]);
    assert!(text.starts_with("numpy agrees on"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
