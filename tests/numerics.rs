//! Array numerics against NumPy: the everyday elementwise functions
//! (`src/collections/array/ufunc.rs`), the functions made of other expressions
//! (`derived.rs`: `eye`, `tril`, `triu`, `*_like`, `diff`, `cumsum`, `cumprod`, `take`),
//! `prod`, slices with negative steps, random integers and exponential values (by their
//! statistics), and halos and stencils (`overlap.rs`: `overlap`, `map_overlap`,
//! `iterate_overlap`, against `numpy.pad`), linear algebra (`linalg`), products
//! (`products.rs`: `einsum`, `tensordot`, `matmul`), statistics (`stats.rs`), boolean-mask
//! selection (`mask.rs`) and block functions that drop or add axes or take a `BlockInfo`
//! (`blocks.rs`). The same inputs (1-D to 3-D, chunks that do not
//! divide the shape, NaN and infinities, integers with zeros to divide by), every result's
//! type and values compared by NumPy itself, under `mpirun` at -np 3 and 5 and in local
//! mode. Fused chains (a function then a reduction) run through the kernel's fused loops as
//! well. The heat example (`examples/heat.rs`) checks itself under mpirun and locally.

mod support;

use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::Client;
use mpidask::array::Boundary;
use mpidask::array::{self, Array, DType, Span, linalg, random};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};
use std::ops::Range;
use std::time::Duration;
use support::python::run_python;
use support::stored::save;
use support::{check, local_command, mpirun, run_with_deadline};

/// The variable that makes this binary the job (the directory its results go to).
const OUT: &str = "MPIDASK_NUMERICS_OUT";

/// Deterministic values `f(i)` of `shape`, in chunks of `chunks`.
fn values(shape: &[usize], chunks: &[usize], f: impl Fn(u64) -> f64) -> Array {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n as u64).map(f).collect();
    array::from_array(&ArrayD::from_shape_vec(IxDyn(shape), v).unwrap(), chunks)
}

/// The part of `b` at `rows` and `cols` of its first two axes (the other axes whole).
fn part(b: &ArrayD<f64>, rows: Range<usize>, cols: Range<usize>) -> ArrayViewD<'_, f64> {
    b.slice_each_axis(|ax| match ax.axis.index() {
        0 => Slice::from(rows.clone()),
        1 => Slice::from(cols.clone()),
        _ => Slice::from(..),
    })
}

/// The 5-point Laplacian over the first two axes of the inner cells; the outer cells as
/// they are.
fn laplacian(b: ArrayD<f64>) -> ArrayD<f64> {
    let (n0, n1) = (b.shape()[0], b.shape()[1]);
    let mut out = b.clone();
    if n0 >= 3 && n1 >= 3 {
        let (inner0, inner1) = (1..n0 - 1, 1..n1 - 1);
        let lap = &part(&b, 0..n0 - 2, inner1.clone())
            + &part(&b, 2..n0, inner1.clone())
            + &part(&b, inner0.clone(), 0..n1 - 2)
            + &part(&b, inner0.clone(), 2..n1)
            - &(&part(&b, inner0.clone(), inner1.clone()) * 4.0);
        out.slice_each_axis_mut(|ax| match ax.axis.index() {
            0 => Slice::from(inner0.clone()),
            1 => Slice::from(inner1.clone()),
            _ => Slice::from(..),
        })
        .assign(&lap);
    }
    out
}

/// One explicit step of the heat equation (halo cells made too, then cut off).
fn heat(b: ArrayD<f64>) -> ArrayD<f64> {
    &b + &(laplacian(b.clone()) * 0.1)
}

/// Of an integer block: each inner cell of the first two axes the sum of itself and its
/// four neighbours; the outer cells as they are.
fn sum5(b: ArrayD<i64>) -> ArrayD<i64> {
    let (n0, n1) = (b.shape()[0], b.shape()[1]);
    let mut out = b.clone();
    for r in 1..n0.saturating_sub(1) {
        for c in 1..n1.saturating_sub(1) {
            let at = |r: usize, c: usize| b[IxDyn(&[r, c])];
            out[IxDyn(&[r, c])] =
                at(r - 1, c) + at(r + 1, c) + at(r, c - 1) + at(r, c + 1) + at(r, c);
        }
    }
    out
}

/// A stencil that fails on the padded blocks of the inner chunks of `x` (7 x 6 cells).
fn fails_inside(b: ArrayD<f64>) -> ArrayD<f64> {
    assert!(b.len() != 42, "no stencil for a block of 42 cells");
    b
}

/// Of a 1-D block: each inner cell the sum of the 15 cells around it (7 on each side).
fn window_sum_7(b: ArrayD<f64>) -> ArrayD<f64> {
    let mut out = b.clone();
    for i in 7..b.len().saturating_sub(7) {
        out[i] = (i - 7..=i + 7).fold(0.0, |acc, k| acc + b[k]);
    }
    out
}

/// A hash of `i` in `0..m`.
/// Each row's sum (axis 1 dropped).
fn row_sums(b: ArrayD<f64>) -> ArrayD<f64> {
    b.sum_axis(ndarray::Axis(1))
}

/// Each value and its square along a new last axis.
fn with_square(b: ArrayD<f64>) -> ArrayD<f64> {
    let squares = b.mapv(|v| v * v);
    ndarray::stack(ndarray::Axis(1), &[b.view(), squares.view()]).expect("same shapes")
}

/// The minimum and maximum along the last axis, stacked along a new first axis.
fn min_max_first(b: ArrayD<f64>) -> ArrayD<f64> {
    let last = ndarray::Axis(b.ndim() - 1);
    let min = b.fold_axis(last, f64::INFINITY, |a, &v| a.min(v));
    let max = b.fold_axis(last, f64::NEG_INFINITY, |a, &v| a.max(v));
    ndarray::stack(ndarray::Axis(0), &[min.view(), max.view()]).expect("same shapes")
}

/// Each element's flat (C order) index in the whole array, from where its block lies.
fn flat_index(b: ArrayD<f64>, info: array::BlockInfo) -> ArrayD<f64> {
    ArrayD::from_shape_fn(b.raw_dim(), |i| {
        let mut flat = 0;
        for (axis, &n) in info.shape.iter().enumerate() {
            flat = flat * n + info.array_location[axis].0 + i[axis];
        }
        flat as f64
    })
}

/// A block one row short: the wrong shape.
fn one_row_short(b: ArrayD<f64>, _info: array::BlockInfo) -> ArrayD<f64> {
    b.slice_axis(ndarray::Axis(0), (0..b.shape()[0] - 1).into())
        .to_owned()
}

fn hash(i: u64, seed: u64, m: u64) -> u64 {
    (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97)) % m
}

/// The factorisations of `array::linalg` (checked by their defining properties and
/// NumPy's values where those are unique), and their errors.
fn linalg_cases(client: &Client) -> anyhow::Result<Vec<(&'static str, Array)>> {
    // Tall with uneven row chunks and two column chunks; wide; rank 4; symmetric positive
    // definite.
    let tall = values(&[203, 6], &[50, 4], |i| {
        hash(i, 11, 2001) as f64 / 1000.0 - 1.0
    });
    let wide = values(&[5, 140], &[5, 33], |i| {
        hash(i, 12, 3001) as f64 / 1000.0 - 1.5
    });
    let low_rank = values(&[300, 4], &[70, 4], |i| {
        hash(i, 13, 1001) as f64 / 500.0 - 1.0
    })
    .dot(&values(&[4, 50], &[4, 20], |i| {
        hash(i, 14, 999) as f64 / 300.0 - 1.5
    }));
    let g = values(&[6, 6], &[4, 4], |i| hash(i, 15, 101) as f64 / 20.0 - 2.5);
    let spd = g.t().dot(&g) + array::eye(6, None, 0, 4) * 6.0;
    let rhs = values(&[203], &[60], |i| hash(i, 16, 501) as f64 / 100.0 - 2.5);
    let rhs2 = values(&[203, 2], &[60, 2], |i| {
        hash(i, 17, 501) as f64 / 100.0 - 2.5
    });
    let (q, r) = linalg::qr(&tall);
    let (u, s, vt) = linalg::svd(&tall);
    let (wu, ws, wvt) = linalg::svd(&wide);
    let (cu, cs, cvt) = linalg::svd_compressed(&low_rank, 4, 2, 7);
    let fit = linalg::lstsq(&tall, &rhs);
    let fit2 = linalg::lstsq(&tall, &rhs2);
    let b6 = rhs.slice(&[(0..6).into()]);
    let b63 = rhs2.slice(&[(0..6).into()]);
    let mut cases = vec![
        ("la_tall", tall.clone()),
        ("la_wide", wide),
        ("la_low_rank", low_rank),
        ("la_spd", spd.clone()),
        ("la_rhs", rhs),
        ("la_rhs2", rhs2),
        ("qr_q", q),
        ("qr_r", r),
        ("svd_u", u),
        ("svd_s", s),
        ("svd_vt", vt),
        ("svdw_u", wu),
        ("svdw_s", ws),
        ("svdw_vt", wvt),
        ("svdc_u", cu),
        ("svdc_s", cs),
        ("svdc_vt", cvt),
        ("chol_lower", linalg::cholesky(&spd, true)),
        ("chol_upper", linalg::cholesky(&spd, false)),
        ("solve_v", linalg::solve(&spd, &b6)),
        ("solve_m", linalg::solve(&spd, &b63)),
        ("inv_spd", linalg::inv(&spd)),
    ];
    for (name, fit) in [("lstsq", fit), ("lstsq2", fit2)] {
        let [x, res, rank, sv] = ["x", "res", "rank", "s"].map(|p| format!("{name}_{p}"));
        let names: [&'static str; 4] = [x, res, rank, sv].map(|n| &*n.leak());
        cases.extend(
            names
                .into_iter()
                .zip([fit.x, fit.residuals, fit.rank, fit.s]),
        );
    }
    // Bad input: found when the graph is built, or by LAPACK on the worker.
    let not_pd = spd.clone() - array::eye(6, None, 0, 4) * 1000.0;
    let singular = array::zeros(&[6, 6], &[3, 3]);
    let errors = [
        (
            linalg::tsqr(&tall.t()).0.check(),
            "needs a tall-and-skinny array",
        ),
        (
            linalg::cholesky(&not_pd, true)
                .compute::<f64>(client)
                .map(|_| ()),
            "not positive definite",
        ),
        (
            linalg::solve(&singular, &b6)
                .compute::<f64>(client)
                .map(|_| ()),
            "the matrix is singular",
        ),
        (
            linalg::inv(&(tall.slice(&[(0..6).into()]) / 0.0))
                .compute::<f64>(client)
                .map(|_| ()),
            "it needs finite values",
        ),
        (linalg::solve(&spd, &tall).check(), "needs 6 rows"),
    ];
    for (result, wanted) in errors {
        // The task's own message is the error's source.
        let error = result
            .err()
            .map(|e| format!("{:#}", anyhow::Error::new(e)))
            .unwrap_or_default();
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error:?}");
    }
    Ok(cases)
}

/// Products of n-dimensional arrays (`products.rs`), and their errors. Saves the operands
/// it makes itself as `pr_*`.
fn product_cases([x, i, z, v]: [&Array; 4]) -> anyhow::Result<Vec<(&'static str, Array)>> {
    let make = |shape: &[usize], chunks: &[usize], seed: u64| {
        values(shape, chunks, move |k| {
            hash(k, seed, 2001) as f64 / 1000.0 - 1.0
        })
    };
    let w = make(&[5, 3, 4], &[2, 2, 3], 20);
    let m = make(&[3, 6], &[2, 4], 21);
    let vm = make(&[17, 4], &[6, 3], 22);
    let w1 = make(&[11], &[4], 23);
    let t = make(&[7, 3, 4], &[3, 2, 3], 24);
    // 50 x 40 by 40 x 40 per batch element: one 2-D product each.
    let b1 = make(&[2, 50, 40], &[1, 20, 15], 25);
    let b2 = make(&[2, 40, 40], &[2, 15, 40], 26);
    let z1 = z.slice(&[(0..1).into()]);
    let cases = vec![
        ("pr_w", w.clone()),
        ("pr_m", m.clone()),
        ("pr_vm", vm.clone()),
        ("pr_w1", w1.clone()),
        ("pr_t", t.clone()),
        ("pr_b1", b1.clone()),
        ("pr_b2", b2.clone()),
        ("mm_x_xt", array::matmul(x, &x.t())),
        ("mm_z_w", array::matmul(z, &w)),
        ("mm_z_m", array::matmul(z, &m)),
        ("mm_v_vm", array::matmul(v, &vm)),
        ("mm_x_w1", array::matmul(x, &w1)),
        ("mm_b", array::matmul(&b1, &b2)),
        ("mm_z1_w", array::matmul(&z1, &w)),
        ("mm_i_it", array::matmul(i, &i.t())),
        ("td_z_t", array::tensordot(z, &t, (&[1, 2], &[0, 1]))),
        ("td_v_w1", array::tensordot(v, &w1, (&[], &[]))),
        ("td_z_z", array::tensordot(z, z, (&[0, -1], &[0, 2]))),
        ("es_kj", array::einsum("ij,kj->ik", &[x, x])),
        ("es_ji", array::einsum("ij->ji", &[x])),
        ("es_all", array::einsum("ij->", &[x])),
        ("es_j", array::einsum("ij->j", &[x])),
        ("es_outer", array::einsum("i,j->ij", &[v, &w1])),
        ("es_rows", array::einsum("ij,ij->i", &[x, x])),
        ("es_batch", array::einsum("bij,bjk->bik", &[z, &w])),
        (
            "es_ellipsis",
            array::einsum("...ij,...jk->...ik", &[&z1, &w]),
        ),
        ("es_three", array::einsum("ij,jk,kl->il", &[x, &x.t(), x])),
        ("es_ijk_jkl", array::einsum("ijk,jkl->il", &[z, &t])),
        ("es_inner", array::einsum("i,i->", &[v, v])),
        ("es_int", array::einsum("ij,kj->ki", &[i, i])),
        ("es_bik", array::einsum("bij,bjk->ikb", &[&b1, &b2])),
    ];
    let mut cases = cases;
    cases.extend([
        ("mba_drop", x.map_blocks_axes(row_sums, &[1], &[])),
        ("mba_new", v.map_blocks_axes(with_square, &[], &[(1, 2)])),
        (
            "mba_both",
            z.map_blocks_axes(min_max_first, &[-1], &[(0, 2)]),
        ),
        ("mbi_x", x.map_blocks_with_info(flat_index)),
    ]);
    for (bad, wanted) in [
        (
            x.map_blocks_axes(row_sums, &[2], &[]),
            "axis 2 is out of range",
        ),
        (
            x.map_blocks_axes(row_sums, &[1], &[(3, 2)]),
            "a new axis at 3, but the result has 2 axes",
        ),
    ] {
        let error = bad.check().unwrap_err().to_string();
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error}");
    }
    // Bad input, found when the graph is built.
    let a34 = array::ones(&[3, 4], &[3, 4]);
    let a56 = array::ones(&[5, 6], &[5, 6]);
    for (bad, wanted) in [
        (
            array::matmul(&a34, &a56),
            "matmul of shapes [3, 4] and [5, 6]",
        ),
        (array::einsum("ii->i", &[x]), "repeats `i` (a diagonal)"),
        (
            array::einsum("ij,jk->ik", &[x, x]),
            "`j` has length 11 in operand 0 (shape [13, 11]) and 13 in operand 1",
        ),
        (
            array::einsum("ij,jk", &[x, x]),
            "give the output's subscripts",
        ),
        (
            array::einsum("ijk->i", &[x]),
            "names 3 axes; its array has 2",
        ),
        (
            array::tensordot(z, &t, (&[1], &[1])),
            "axis 1 has length 7 and axis 1 3",
        ),
    ] {
        let error = bad.check().unwrap_err().to_string();
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error}");
    }
    Ok(cases)
}

/// Boolean-mask selection (`mask.rs`), and its errors.
fn select_cases(
    client: &Client,
    [x, y, i, z, v]: [&Array; 5],
) -> anyhow::Result<Vec<(&'static str, Array)>> {
    let sel_x = x.select(&x.gt(0.5));
    anyhow::ensure!(
        sel_x.len(client)? == sel_x.to_array(client)?.len(),
        "select: len and the array's length differ"
    );
    let cases = vec![
        ("sel_x", sel_x.to_array(client)?),
        ("sel_y", y.select(&y.isnan().not()).to_array(client)?),
        ("sel_i", i.select(&i.lt(0)).to_array(client)?),
        ("sel_z", z.select(&z.gt(0.0)).to_array(client)?),
        ("sel_v_none", v.select(&v.gt(1e9)).to_array(client)?),
        ("sel_x_sum", sel_x.to_array(client)?.sum()),
        (
            "sel_v",
            array::from_array(
                &v.select(&v.lt(0.0)).compute::<f64>(client)?.into_dyn(),
                &[4],
            ),
        ),
    ];
    let error = x
        .map_blocks_with_info(one_row_short)
        .compute::<f64>(client)
        .err()
        .map(|e| format!("{:#}", anyhow::Error::new(e)))
        .unwrap_or_default();
    anyhow::ensure!(
        error.contains("shape [4, 4] for chunk [0, 0], of shape [5, 4]: it must keep"),
        "map_blocks_with_info of another shape: {error:?}"
    );
    for (bad, wanted) in [
        (
            x.select(x),
            "the mask is an array of f64; give a boolean one",
        ),
        (
            x.select(&z.gt(0.0)),
            "the mask has shape [5, 7, 3] and the array [13, 11]",
        ),
    ] {
        let error = bad.check().unwrap_err().to_string();
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error}");
    }
    Ok(cases)
}

/// Statistics and ordering (`stats.rs`), and their errors.
fn stats_cases(
    client: &Client,
    [x, y, i, z, v]: [&Array; 5],
) -> anyhow::Result<Vec<(&'static str, Array)>> {
    let (hx, ex) = x.histogram(10, (-2.5, 2.5));
    let (hy, ey) = y.histogram(7, (-20.0, 20.0));
    let (hi, ei) = i.histogram(5, (-50.0, 50.0));
    let small = values(&[200], &[37], |k| hash(k, 18, 17) as f64).astype(DType::I64);
    let long = values(&[1000], &[77], |k| {
        hash(k, 19, 100_003) as f64 / 1000.0 - 40.0
    });
    let q = [0.0, 10.0, 33.3, 50.0, 90.0, 100.0];
    let (uy, cy) = y.unique::<f64>(client)?;
    let (ui, ci) = i.unique::<i64>(client)?;
    let as_array = |a: ndarray::ArrayD<f64>| array::from_array(&a, &[a.len().max(1)]);
    let as_ints = |a: ndarray::ArrayD<i64>| array::from_array(&a, &[a.len().max(1)]);
    let cases = vec![
        ("stat_small", small.clone()),
        ("stat_long", long.clone()),
        ("hist_x", hx),
        ("hist_x_edges", ex),
        ("hist_y", hy),
        ("hist_y_edges", ey),
        ("hist_i", hi),
        ("hist_i_edges", ei),
        ("bincount_small", small.bincount(20)),
        ("pct_v", v.percentile(&q)),
        ("pct_v_one_chunk", v.rechunk(&[17]).percentile(&q)),
        ("pct_long", long.percentile(&q)),
        ("qtl_long", long.quantile(&[0.25, 0.75])),
        ("topk_x_3", x.topk(3)),
        ("topk_x_m4", x.topk(-4)),
        ("topk_z_2", z.topk(2)),
        ("topk_v_5", v.topk(5)),
        ("argtopk_x_3", x.argtopk(3)),
        ("argtopk_x_m4", x.argtopk(-4)),
        ("argtopk_v_m3", v.argtopk(-3)),
        ("sort_z_1", z.sort(1)),
        ("sort_y_0", y.sort(0)),
        ("sort_i_m1", i.sort(-1)),
        ("unique_y", as_array(uy.into_dyn())),
        ("unique_y_counts", as_ints(cy.into_dyn())),
        ("unique_i", as_ints(ui.into_dyn())),
        ("unique_i_counts", as_ints(ci.into_dyn())),
    ];
    let error = |a: Array| {
        a.compute::<i64>(client)
            .err()
            .map(|e| format!("{:#}", anyhow::Error::new(e)))
            .unwrap_or_default()
    };
    for (wanted, got) in [
        ("not below minlength 10", error(small.bincount(10))),
        (
            "needs at least one bin",
            error(x.histogram(0, (0.0, 1.0)).0),
        ),
        (
            "bincount needs a 1-D array of integers",
            error(v.bincount(3)),
        ),
        (
            "percentile needs a non-empty 1-D array",
            error(x.percentile(&[5.0])),
        ),
        (
            "150 is not between 0 and 100",
            error(v.percentile(&[150.0])),
        ),
        ("axis 5 is out of range", error(x.sort(5))),
        (
            "take at most 17 without replacement",
            error(random::choice(v, 18, false, None, 5, 1)),
        ),
        (
            "lam -1 must be finite and above 0",
            error(random::poisson(-1.0, &[3], &[3], 1)),
        ),
    ] {
        anyhow::ensure!(got.contains(wanted), "{wanted}: {got:?}");
    }
    Ok(cases)
}

/// The job: inputs and every case saved to the directory in [`OUT`].
fn job(client: &Client) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::var(OUT)?);
    let (shape, chunks) = ([13, 11], [5, 4]);
    // In (-3, 3); in (0, 1); with NaN, +-inf and exact halves; integers with zeros.
    let x = values(&shape, &chunks, |i| hash(i, 1, 6001) as f64 / 1000.0 - 3.0);
    let p = values(&shape, &chunks, |i| (hash(i, 2, 997) as f64 + 1.0) / 999.0);
    let y = values(&shape, &chunks, |i| match hash(i, 3, 11) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => hash(i, 4, 9) as f64 - 4.5,
        _ => hash(i, 5, 4001) as f64 / 100.0 - 20.0,
    });
    let i = values(&shape, &chunks, |i| hash(i, 6, 101) as f64 - 50.0).astype(DType::I64);
    let j = values(&shape, &chunks, |i| hash(i, 7, 13) as f64 - 6.0).astype(DType::I32);
    let u = values(&shape, &chunks, |i| hash(i, 8, 256) as f64).astype(DType::U8);
    let c = (&x * 0.5).astype(DType::F32);
    let z = values(&[5, 7, 3], &[2, 3, 2], |i| {
        hash(i, 9, 2001) as f64 / 100.0 - 10.0
    });
    let v = values(&[17], &[5], |i| hash(i, 10, 301) as f64 / 10.0 - 15.0);
    for (name, a) in [
        ("x", &x),
        ("p", &p),
        ("y", &y),
        ("i", &i),
        ("j", &j),
        ("u", &u),
        ("c", &c),
        ("z", &z),
        ("v", &v),
    ] {
        save(client, &dir, &format!("in_{name}"), a)?;
    }
    let q = &(&p * 2.0) - 1.0;
    let cases: Vec<(&str, Array)> = vec![
        ("log10_p", p.log10()),
        ("log2_p", p.log2()),
        ("log1p_absx", x.abs().log1p()),
        ("expm1_x", x.expm1()),
        ("tan_x", x.tan()),
        ("arcsin_q", q.arcsin()),
        ("arccos_q", q.arccos()),
        ("arctan_x", x.arctan()),
        ("sinh_x", x.sinh()),
        ("cosh_x", x.cosh()),
        ("tanh_x", x.tanh()),
        ("floor_x", x.floor()),
        ("ceil_x", x.ceil()),
        ("trunc_x", x.trunc()),
        ("sign_x", x.sign()),
        ("sign_y", y.sign()),
        ("sign_i", i.sign()),
        ("sign_u", u.sign()),
        ("round_x_2", x.round(2)),
        ("round_y_0", y.round(0)),
        ("round_i_m1", i.round(-1)),
        ("floor_i", i.floor()),
        ("ceil_j", j.ceil()),
        ("isnan_y", y.isnan()),
        ("isinf_y", y.isinf()),
        ("isfinite_y", y.isfinite()),
        ("isnan_i", i.isnan()),
        ("isfinite_u", u.isfinite()),
        ("maximum_x_y", x.maximum(&y)),
        ("minimum_y_x", y.minimum(&x)),
        ("minimum_x_half", x.minimum(0.5)),
        ("maximum_i_j", i.maximum(&j)),
        ("minimum_u_100", u.minimum(100u8)),
        ("arctan2_x_q", x.arctan2(&q)),
        ("hypot_x_p", x.hypot(&p)),
        ("x_mod_07", &x % 0.7),
        ("x_mod_m07", &x % -0.7),
        ("y_mod_x", &y % &x),
        ("i_mod_j", &i % &j),
        ("u_mod_7", &u % 7u8),
        ("i_floordiv_j", i.floor_div(&j)),
        ("x_floordiv_03", x.floor_div(0.3)),
        ("y_floordiv_x", y.floor_div(&x)),
        ("clip_x", x.clip(-1.0, 1.0)),
        ("clip_y", y.clip(0.0, 2.0)),
        ("clip_i", i.clip(-20i64, 30i64)),
        ("tanh_c", c.tanh()),
        ("round_c_1", c.round(1)),
        ("c_mod_03", &c % 0.3f32),
        ("maximum_c_x", c.maximum(&x)),
        ("round_z_m1", z.round(-1)),
        ("z_mod_15", &z % 1.5),
        ("floor_z", z.floor()),
        ("hypot_v_v", v.hypot(&v)),
        ("log1p_absv", v.abs().log1p()),
        // Made of other expressions: index grids, slices.
        ("eye_7_9_1", array::eye(7, Some(9), 1, 4)),
        ("eye_5", array::eye(5, None, 0, 2)),
        ("tril_x", x.tril(0)),
        ("triu_x_m2", x.triu(-2)),
        ("tril_z_1", z.tril(1)),
        ("triu_i_3", i.triu(3)),
        ("zeros_like_i", i.zeros_like()),
        ("ones_like_c", c.ones_like()),
        ("full_like_j", j.full_like(7.9)),
        ("diff_x_0", x.diff(0, 1)),
        ("diff_x_1_2", x.diff(1, 2)),
        ("diff_z_m1", z.diff(-1, 1)),
        ("diff_v", v.diff(0, 1)),
        ("diff_u", u.diff(0, 1)),
        ("diff_isnan_y", y.isnan().diff(1, 1)),
        // Products (integers in i64, wrapping as NumPy's int64).
        ("prod_p", p.prod()),
        ("prod_x_0", x.prod_axis(0)),
        ("prod_i", i.prod()),
        ("prod_j_1", j.prod_axis(1)),
        ("prod_c_1", c.prod_axis(1)),
        ("prod_z_1", z.prod_axis(1)),
        ("prod_isfinite_y_0", y.isfinite().prod_axis(0)),
        // Running sums and products along each axis.
        ("cumsum_x_0", x.cumsum(0)),
        ("cumsum_x_1", x.cumsum(1)),
        ("cumsum_i_m1", i.cumsum(-1)),
        ("cumsum_u_0", u.cumsum(0)),
        ("cumsum_c_1", c.cumsum(1)),
        ("cumsum_y_0", y.cumsum(0)),
        ("cumsum_z_1", z.cumsum(1)),
        ("cumsum_v", v.cumsum(0)),
        ("cumprod_q_0", q.cumprod(0)),
        ("cumprod_j_1", j.cumprod(1)),
        ("cumprod_z_2", (&z * 0.1).cumprod(2)),
        ("cumsum_isnan_y_1", y.isnan().cumsum(1)),
        ("sum_cumsum_x_0", x.cumsum(0).sum_axis(1)),
        // Negative steps: each part of a chunk read backwards, the chunks in reverse.
        ("x_rev", x.slice(&[Span::new(None, None, -1)])),
        (
            "x_cols_9_1_m3",
            x.slice(&[Span::all(), Span::new(Some(9), Some(1), -3)]),
        ),
        (
            "z_rev2",
            z.slice(&[Span::all(), Span::all(), Span::new(None, None, -2)]),
        ),
        ("v_rev", v.slice(&[Span::new(Some(-2), None, -4)])),
        (
            "i_rev",
            i.slice(&[Span::new(None, None, -2), Span::new(None, None, -1)]),
        ),
        (
            "sum_x_rev2_0",
            x.slice(&[Span::new(None, None, -2), Span::new(None, None, -1)])
                .sum_axis(0),
        ),
        ("x_plus_rev", &x + &x.slice(&[Span::new(None, None, -1)])),
        // Integer indices along one axis: runs of evenly spaced ones as slices.
        ("take_x_0", x.take(&[3, 2, 0, 0, 5, 10, -1, 12], 0)),
        ("take_x_1", x.take(&[10, 8, 6, 4, 2, 0, 9], 1)),
        ("take_z_2", z.take(&[2, 0], -1)),
        ("take_v", v.take(&[16, 0, 5, 6, 7], 0)),
        ("take_i_sum", i.take(&[1, 1, 4], 1).sum_axis(0)),
        // Random generators made of uniform values (checked by their statistics).
        (
            "rand_integers",
            array::random::integers(-5, 7, &[400, 30], &[70, 13], 3),
        ),
        (
            "rand_exponential",
            array::random::exponential(2.0, &[400, 30], &[70, 13], 4),
        ),
        (
            "rand_poisson",
            random::poisson(3.5, &[400, 30], &[70, 13], 5),
        ),
        (
            "rand_binomial",
            random::binomial(10, 0.3, &[400, 30], &[70, 13], 6),
        ),
        (
            "rand_gamma",
            random::gamma(2.0, 1.5, &[400, 30], &[70, 13], 7),
        ),
        (
            "rand_beta",
            random::beta(2.0, 5.0, &[400, 30], &[70, 13], 8),
        ),
        ("rand_t", random::standard_t(5.0, &[400, 30], &[70, 13], 9)),
        ("choice_v", random::choice(&v, 30, true, None, 7, 3)),
        ("choice_v_all", random::choice(&v, 17, false, None, 5, 4)),
        (
            "choice_v_last",
            random::choice(
                &v,
                9,
                true,
                Some(&[[0.0; 16].as_slice(), &[1.0]].concat()),
                4,
                5,
            ),
        ),
        ("perm_x", random::permutation(&x, 6)),
        ("perm_50", random::permutation_of(50, 7, 7)),
        (
            "perm_big",
            random::permutation(
                &array::from_array(
                    &ndarray::Array1::from_iter((0..7).map(|k| (1i64 << 62) + k)).into_dyn(),
                    &[3],
                ),
                8,
            ),
        ),
        // Halos (chunks [5 5 3] x [4 4 3]): the padded chunks, and stencils on them.
        ("ov_x_periodic", x.overlap(&[1, 2], Boundary::Periodic)),
        ("ov_x_none", x.overlap(&[2, 1], Boundary::None)),
        ("ov_i_const", i.overlap(&[1, 1], Boundary::Constant(-7.0))),
        (
            "mo_x_reflect",
            x.map_overlap(laplacian, &[1, 1], Boundary::Reflect),
        ),
        (
            "mo_x_periodic",
            x.map_overlap(laplacian, &[1, 1], Boundary::Periodic),
        ),
        (
            "mo_x_nearest",
            x.map_overlap(laplacian, &[1, 1], Boundary::Nearest),
        ),
        (
            "mo_x_const",
            x.map_overlap(laplacian, &[1, 1], Boundary::Constant(1.5)),
        ),
        (
            "mo_x_none",
            x.map_overlap(laplacian, &[1, 1], Boundary::None),
        ),
        (
            "mo_z_reflect",
            z.map_overlap(laplacian, &[1, 1, 0], Boundary::Reflect),
        ),
        // A halo deeper than a chunk (7 cells; chunks of 5).
        (
            "mo_v_wsum7",
            v.map_overlap(window_sum_7, &[7], Boundary::Periodic),
        ),
        (
            "max_mo_x_reflect_0",
            x.map_overlap(laplacian, &[1, 1], Boundary::Reflect)
                .max_axis(0),
        ),
        (
            "it_x_heat5",
            x.iterate_overlap(client, heat, &[1, 1], Boundary::Periodic, 5)?,
        ),
        // Under MPI these run resident (one MPI task, halos worker to worker), except the
        // halo deeper than a chunk; locally as graphs: NumPy checks both ways.
        (
            "it_x_reflect3",
            x.iterate_overlap(client, heat, &[1, 1], Boundary::Reflect, 3)?,
        ),
        (
            "it_x_nearest2",
            x.iterate_overlap(client, heat, &[1, 1], Boundary::Nearest, 2)?,
        ),
        (
            "it_x_const2",
            x.iterate_overlap(client, heat, &[1, 1], Boundary::Constant(1.5), 2)?,
        ),
        (
            "it_x_none3",
            x.iterate_overlap(client, heat, &[1, 1], Boundary::None, 3)?,
        ),
        (
            "it_x_periodic_2_1",
            x.iterate_overlap(client, heat, &[2, 1], Boundary::Periodic, 3)?,
        ),
        (
            "it_z_reflect2",
            z.iterate_overlap(client, heat, &[1, 1, 0], Boundary::Reflect, 2)?,
        ),
        (
            "it_i_const2",
            i.iterate_overlap(client, sum5, &[1, 1], Boundary::Constant(-7.0), 2)?,
        ),
        (
            "it_v_wsum7_2",
            v.iterate_overlap(client, window_sum_7, &[7], Boundary::Periodic, 2)?,
        ),
        // A function, then a reduction: the fused loops.
        ("sum_maximum_x_0", (x.maximum(0.0) * 2.0).sum()),
        ("sum_floordiv_x_05_axis0", x.floor_div(0.5).sum_axis(0)),
        ("sum_isnan_y", y.isnan().sum()),
        ("sum_tanh_z_axis1", z.tanh().sum_axis(1)),
        ("sum_mod_x_axis1", (&x % 0.7).sum_axis(1)),
    ];
    let mut cases = cases;
    cases.extend(linalg_cases(client)?);
    cases.extend(product_cases([&x, &i, &z, &v])?);
    cases.extend(select_cases(client, [&x, &y, &i, &z, &v])?);
    cases.extend(stats_cases(client, [&x, &y, &i, &z, &v])?);
    for (name, a) in &cases {
        save(client, &dir, name, a)?;
    }
    // Bad input: an error naming the index and the axis, before anything runs.
    let error = x.take(&[0, 13], 0).check().unwrap_err().to_string();
    anyhow::ensure!(
        error.contains("index 13") && error.contains("length 13"),
        "take out of range: {error}"
    );
    for (bad, wanted) in [
        (x.overlap(&[1], Boundary::Nearest), "depth [1] gives 1 axes"),
        (
            v.overlap(&[18], Boundary::Periodic),
            "depth 18 along axis 0 is more than the axis length 17",
        ),
        (
            i.overlap(&[1, 1], Boundary::Constant(0.5)),
            "0.5 is not a value of",
        ),
    ] {
        let error = bad.check().unwrap_err().to_string();
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error}");
    }
    // A stencil that panics on some chunks: an error naming it, and the job goes on.
    let failed = x
        .iterate_overlap(client, fails_inside, &[1, 1], Boundary::Periodic, 2)
        .and_then(|a| a.compute::<f64>(client));
    match failed {
        Err(e) => {
            let chain = format!("{:#}", anyhow::Error::from(e));
            anyhow::ensure!(
                chain.contains("no stencil for a block of 42 cells"),
                "the failing stencil's error: {chain}"
            )
        }
        Ok(_) => anyhow::bail!("a stencil that panics gave a value"),
    }
    println!("NUMERICS saved {}", cases.len());
    Ok(())
}

/// What NumPy computes for each name the job saved, from the inputs it saved.
const CHECK: &str = r#"
import sys, numpy as np, warnings
warnings.simplefilter('ignore', RuntimeWarning)  # log of 0, % 0, inf - inf
d = sys.argv[1]
L = lambda n: np.load(f'{d}/{n}.npy')
x, p, y, i, j, u, c, z, v = (L(f'in_{n}') for n in 'x p y i j u c z v'.split())
assert (i.dtype, j.dtype, u.dtype, c.dtype) == (np.int64, np.int32, np.uint8, np.float32)
q = p * 2.0 - 1.0
cases = {
    'log10_p': np.log10(p), 'log2_p': np.log2(p), 'log1p_absx': np.log1p(np.abs(x)),
    'expm1_x': np.expm1(x), 'tan_x': np.tan(x), 'arcsin_q': np.arcsin(q),
    'arccos_q': np.arccos(q), 'arctan_x': np.arctan(x), 'sinh_x': np.sinh(x),
    'cosh_x': np.cosh(x), 'tanh_x': np.tanh(x), 'floor_x': np.floor(x), 'ceil_x': np.ceil(x),
    'trunc_x': np.trunc(x), 'sign_x': np.sign(x), 'sign_y': np.sign(y), 'sign_i': np.sign(i),
    'sign_u': np.sign(u), 'round_x_2': np.round(x, 2), 'round_y_0': np.round(y, 0),
    'round_i_m1': np.round(i, -1), 'floor_i': np.floor(i), 'ceil_j': np.ceil(j),
    'isnan_y': np.isnan(y), 'isinf_y': np.isinf(y), 'isfinite_y': np.isfinite(y),
    'isnan_i': np.isnan(i), 'isfinite_u': np.isfinite(u),
    'maximum_x_y': np.maximum(x, y), 'minimum_y_x': np.minimum(y, x),
    'minimum_x_half': np.minimum(x, 0.5), 'maximum_i_j': np.maximum(i, j),
    'minimum_u_100': np.minimum(u, 100), 'arctan2_x_q': np.arctan2(x, q),
    'hypot_x_p': np.hypot(x, p), 'x_mod_07': x % 0.7, 'x_mod_m07': x % -0.7, 'y_mod_x': y % x,
    'i_mod_j': i % j, 'u_mod_7': u % 7, 'i_floordiv_j': i // j, 'x_floordiv_03': x // 0.3,
    'y_floordiv_x': y // x, 'clip_x': np.clip(x, -1.0, 1.0), 'clip_y': np.clip(y, 0.0, 2.0),
    'clip_i': np.clip(i, -20, 30), 'tanh_c': np.tanh(c), 'round_c_1': np.round(c, 1),
    'c_mod_03': c % np.float32(0.3), 'maximum_c_x': np.maximum(c, x),
    'round_z_m1': np.round(z, -1), 'z_mod_15': z % 1.5, 'floor_z': np.floor(z),
    'hypot_v_v': np.hypot(v, v), 'log1p_absv': np.log1p(np.abs(v)),
    'eye_7_9_1': np.eye(7, 9, 1), 'eye_5': np.eye(5), 'tril_x': np.tril(x),
    'triu_x_m2': np.triu(x, -2), 'tril_z_1': np.tril(z, 1), 'triu_i_3': np.triu(i, 3),
    'zeros_like_i': np.zeros_like(i), 'ones_like_c': np.ones_like(c),
    'full_like_j': np.full_like(j, 7.9), 'diff_x_0': np.diff(x, axis=0),
    'diff_x_1_2': np.diff(x, n=2, axis=1), 'diff_z_m1': np.diff(z, axis=-1),
    'diff_v': np.diff(v), 'diff_u': np.diff(u, axis=0), 'diff_isnan_y': np.diff(np.isnan(y), axis=1),
    'prod_p': np.prod(p), 'prod_x_0': np.prod(x, 0), 'prod_i': np.prod(i),
    'prod_j_1': np.prod(j, 1), 'prod_c_1': np.prod(c, 1), 'prod_z_1': np.prod(z, 1),
    'prod_isfinite_y_0': np.prod(np.isfinite(y), 0),
    'cumsum_x_0': np.cumsum(x, 0), 'cumsum_x_1': np.cumsum(x, 1), 'cumsum_i_m1': np.cumsum(i, -1),
    'cumsum_u_0': np.cumsum(u, 0).astype(np.int64),  # NumPy: uint64; mpidask: i64
    'cumsum_c_1': np.cumsum(c, 1),
    'cumsum_y_0': np.cumsum(y, 0), 'cumsum_z_1': np.cumsum(z, 1), 'cumsum_v': np.cumsum(v),
    'cumprod_q_0': np.cumprod(q, 0), 'cumprod_j_1': np.cumprod(j, 1),
    'cumprod_z_2': np.cumprod(z * 0.1, 2), 'cumsum_isnan_y_1': np.cumsum(np.isnan(y), 1),
    'sum_cumsum_x_0': np.cumsum(x, 0).sum(1),
    'x_rev': x[::-1], 'x_cols_9_1_m3': x[:, 9:1:-3], 'z_rev2': z[:, :, ::-2],
    'v_rev': v[-2::-4], 'i_rev': i[::-2, ::-1], 'sum_x_rev2_0': x[::-2, ::-1].sum(0),
    'x_plus_rev': x + x[::-1],
    'take_x_0': np.take(x, [3, 2, 0, 0, 5, 10, -1, 12], 0),
    'take_x_1': np.take(x, [10, 8, 6, 4, 2, 0, 9], 1), 'take_z_2': np.take(z, [2, 0], -1),
    'take_v': np.take(v, [16, 0, 5, 6, 7]), 'take_i_sum': np.take(i, [1, 1, 4], 1).sum(0),
    'sum_maximum_x_0': (np.maximum(x, 0.0) * 2.0).sum(),
    'sum_floordiv_x_05_axis0': (x // 0.5).sum(0), 'sum_isnan_y': np.isnan(y).sum(),
    'sum_tanh_z_axis1': np.tanh(z).sum(1), 'sum_mod_x_axis1': (x % 0.7).sum(1),
}
def win(P, ws):  # the windows [(start, len), ...] of each axis, joined
    for ax, w in enumerate(ws):
        P = np.concatenate([np.take(P, range(s, s + n), axis=ax) for s, n in w], axis=ax)
    return P
def lap(a):
    out = a.copy()
    out[1:-1, 1:-1] = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4.0 * a[1:-1, 1:-1]
    return out
def mo(f, a, depth, mode, **kw):
    P = np.pad(a, [(k, k) for k in depth], mode=mode, **kw)
    return f(P)[tuple(slice(k, k + n) for k, n in zip(depth, a.shape))]
def wsum7(a):
    out = a.copy()
    out[7:-7] = sum(a[7 + o:len(a) - 7 + o] for o in range(-7, 8))
    return out
h = x
for _ in range(5):
    h = mo(lambda P: P + lap(P) * 0.1, h, (1, 1), 'wrap')
def it(f, a, steps, depth=None, mode=None, **kw):
    for _ in range(steps):
        a = f(a) if mode is None else mo(f, a, depth, mode, **kw)
    return a
heat = lambda P: P + lap(P) * 0.1
def sum5(a):
    out = a.copy()
    out[1:-1, 1:-1] = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] + a[1:-1, 1:-1]
    return out
cases.update({
    'it_x_reflect3': it(heat, x, 3, (1, 1), 'symmetric'),
    'it_x_nearest2': it(heat, x, 2, (1, 1), 'edge'),
    'it_x_const2': it(heat, x, 2, (1, 1), 'constant', constant_values=1.5),
    'it_x_none3': it(heat, x, 3),
    'it_x_periodic_2_1': it(heat, x, 3, (2, 1), 'wrap'),
    'it_z_reflect2': it(heat, z, 2, (1, 1, 0), 'symmetric'),
    'it_i_const2': it(sum5, i, 2, (1, 1), 'constant', constant_values=-7),
    'it_v_wsum7_2': it(wsum7, v, 2, (7,), 'wrap'),
})
cases.update({
    'ov_x_periodic': win(np.pad(x, ((1, 1), (2, 2)), 'wrap'), [[(0, 7), (5, 7), (10, 5)], [(0, 8), (4, 8), (8, 7)]]),
    'ov_x_none': win(x, [[(0, 7), (3, 9), (8, 5)], [(0, 5), (3, 6), (7, 4)]]),
    'ov_i_const': win(np.pad(i, 1, constant_values=-7), [[(0, 7), (5, 7), (10, 5)], [(0, 6), (4, 6), (8, 5)]]),
    'mo_x_reflect': mo(lap, x, (1, 1), 'symmetric'), 'mo_x_periodic': mo(lap, x, (1, 1), 'wrap'),
    'mo_x_nearest': mo(lap, x, (1, 1), 'edge'),
    'mo_x_const': mo(lap, x, (1, 1), 'constant', constant_values=1.5), 'mo_x_none': lap(x),
    'mo_z_reflect': mo(lap, z, (1, 1, 0), 'symmetric'), 'mo_v_wsum7': mo(wsum7, v, (7,), 'wrap'),
    'max_mo_x_reflect_0': mo(lap, x, (1, 1), 'symmetric').max(0), 'it_x_heat5': h,
})
# Linear algebra: properties (the signs of factors are not unique) and NumPy's values.
la = {n: L(n) for n in '''la_tall la_wide la_low_rank la_spd la_rhs la_rhs2 qr_q qr_r svd_u svd_s svd_vt
    svdw_u svdw_s svdw_vt svdc_u svdc_s svdc_vt chol_lower chol_upper solve_v solve_m inv_spd
    lstsq_x lstsq_res lstsq_rank lstsq_s lstsq2_x lstsq2_res lstsq2_rank lstsq2_s'''.split()}
A, W, K, S = la['la_tall'], la['la_wide'], la['la_low_rank'], la['la_spd']
def near(got, want, rtol=1e-10):
    got, want = np.asarray(got), np.asarray(want)
    return got.shape == want.shape and np.abs(got - want).max() <= rtol * max(np.abs(want).max(), 1.0)
def orthonormal(m, axis):
    g = m.T @ m if axis == 0 else m @ m.T
    return near(g, np.eye(len(g)))
checks = {
    'qr': near(la['qr_q'] @ la['qr_r'], A) and orthonormal(la['qr_q'], 0)
          and np.all(np.tril(la['qr_r'], -1) == 0) and la['qr_r'].shape == (6, 6),
    'svd': near(la['svd_s'], np.linalg.svd(A, compute_uv=False))
           and near(la['svd_u'] * la['svd_s'] @ la['svd_vt'], A)
           and orthonormal(la['svd_u'], 0) and orthonormal(la['svd_vt'], 1),
    'svd_wide': near(la['svdw_s'], np.linalg.svd(W, compute_uv=False))
                and near(la['svdw_u'] * la['svdw_s'] @ la['svdw_vt'], W)
                and orthonormal(la['svdw_u'], 0) and orthonormal(la['svdw_vt'], 1),
    'svd_compressed': near(la['svdc_s'], np.linalg.svd(K, compute_uv=False)[:4])
                      and near(la['svdc_u'] * la['svdc_s'] @ la['svdc_vt'], K)
                      and orthonormal(la['svdc_u'], 0) and orthonormal(la['svdc_vt'], 1),
    'cholesky': near(la['chol_lower'], np.linalg.cholesky(S))
                and near(la['chol_upper'], np.linalg.cholesky(S).T),
    'solve': near(la['solve_v'], np.linalg.solve(S, la['la_rhs'][:6]))
             and near(la['solve_m'], np.linalg.solve(S, la['la_rhs2'][:6])),
    'inv': near(la['inv_spd'], np.linalg.inv(S)),
}
for name, b in (('lstsq', la['la_rhs']), ('lstsq2', la['la_rhs2'])):
    lx, res, rank, sv = np.linalg.lstsq(A, b, rcond=None)
    checks[name] = (near(la[name + '_x'], lx) and near(la[name + '_res'], res, 1e-8)
                    and la[name + '_rank'].shape == () and int(la[name + '_rank']) == rank
                    and near(la[name + '_s'], sv))
# Statistics: NumPy's values; Dask's own percentile where there are several chunks.
import dask.array as da
small, long_ = L('stat_small'), L('stat_long')
qs = [0.0, 10.0, 33.3, 50.0, 90.0, 100.0]
def merged_percentiles(a, chunk, qs):  # Dask's merge_percentiles, its sort made stable
    cq = np.concatenate(([0.0], qs, [100.0]))
    parts = [a[k:k + chunk] for k in range(0, len(a), chunk)]
    v = np.concatenate([np.percentile(p, cq) for p in parts])
    c = np.concatenate([np.diff(cq, prepend=0.0) * len(p) for p in parts])
    o = np.argsort(v, kind='stable')
    return np.interp(np.asarray(qs) * len(a), np.cumsum(c[o]), v[o])
assert np.abs(merged_percentiles(long_, 77, qs) - np.percentile(long_, qs)).max() < 0.02 * np.ptp(long_)
desc = lambda a, k: np.flip(np.sort(a, -1), -1)[..., :k]
uy, cy = np.unique(y, return_counts=True)
ui, ci = np.unique(i, return_counts=True)
cases.update({
    'hist_x': np.histogram(x, 10, (-2.5, 2.5))[0], 'hist_x_edges': np.histogram(x, 10, (-2.5, 2.5))[1],
    'hist_y': np.histogram(y[np.isfinite(y)], 7, (-20, 20))[0], 'hist_y_edges': np.histogram(y[np.isfinite(y)], 7, (-20, 20))[1],
    'hist_i': np.histogram(i, 5, (-50, 50))[0], 'hist_i_edges': np.histogram(i, 5, (-50, 50))[1],
    'bincount_small': np.bincount(small, minlength=20),
    'pct_v': da.percentile(da.from_array(v, chunks=5), qs).compute(),
    'pct_v_one_chunk': np.percentile(v, qs),
    'pct_long': merged_percentiles(long_, 77, qs),
    'qtl_long': merged_percentiles(long_, 77, [25.0, 75.0]),
    'topk_x_3': desc(x, 3), 'topk_x_m4': np.sort(x, -1)[..., :4], 'topk_z_2': desc(z, 2),
    'topk_v_5': desc(v, 5), 'sort_z_1': np.sort(z, 1), 'sort_y_0': np.sort(y, 0),
    'sort_i_m1': np.sort(i, -1), 'unique_y': uy, 'unique_y_counts': cy, 'unique_i': ui,
    'unique_i_counts': ci,
})
for name, a, want in (('argtopk_x_3', x, desc(x, 3)), ('argtopk_x_m4', x, np.sort(x, -1)[..., :4]),
                      ('argtopk_v_m3', v, np.sort(v)[:3])):
    idx = L(name)
    checks[name] = idx.dtype == np.int64 and np.array_equal(np.take_along_axis(a, idx, -1), want)
# Products: NumPy's, within 1e-12 of the largest value (BLAS sums in its own order).
pr = {n: L(f'pr_{n}') for n in 'w m vm w1 t b1 b2'.split()}
products = {
    'mm_x_xt': x @ x.T, 'mm_z_w': z @ pr['w'], 'mm_z_m': z @ pr['m'], 'mm_v_vm': v @ pr['vm'],
    'mm_x_w1': x @ pr['w1'], 'mm_b': pr['b1'] @ pr['b2'], 'mm_z1_w': z[:1] @ pr['w'], 'mm_i_it': i @ i.T,
    'td_z_t': np.tensordot(z, pr['t'], ([1, 2], [0, 1])), 'td_v_w1': np.tensordot(v, pr['w1'], 0),
    'td_z_z': np.tensordot(z, z, ([0, -1], [0, 2])), 'es_kj': np.einsum('ij,kj->ik', x, x),
    'es_ji': np.einsum('ij->ji', x), 'es_all': np.einsum('ij->', x), 'es_j': np.einsum('ij->j', x),
    'es_outer': np.einsum('i,j->ij', v, pr['w1']), 'es_rows': np.einsum('ij,ij->i', x, x),
    'es_batch': np.einsum('bij,bjk->bik', z, pr['w']),
    'es_ellipsis': np.einsum('...ij,...jk->...ik', z[:1], pr['w']),
    'es_three': np.einsum('ij,jk,kl->il', x, x.T, x), 'es_ijk_jkl': np.einsum('ijk,jkl->il', z, pr['t']),
    'es_inner': np.einsum('i,i->', v, v), 'es_int': np.einsum('ij,kj->ki', i, i),
    'es_bik': np.einsum('bij,bjk->ikb', pr['b1'], pr['b2']),
}
cases.update({
    'sel_x': x[x > 0.5], 'sel_y': y[~np.isnan(y)], 'sel_i': i[i < 0], 'sel_z': z[z > 0],
    'sel_v_none': v[v > 1e9], 'sel_x_sum': x[x > 0.5].sum(), 'sel_v': v[v < 0],
    'mba_drop': x.sum(1), 'mba_new': np.stack([v, v * v], 1),
    'mba_both': np.stack([z.min(2), z.max(2)], 0), 'mbi_x': np.arange(143.0).reshape(13, 11),
})
for name, want in products.items():
    got, want = L(name), np.asarray(want)
    exact = want.dtype.kind in 'iu'
    checks[name] = got.dtype == want.dtype and got.shape == want.shape and (
        np.array_equal(got, want) if exact else near(got, want, 1e-12))
bad = [f'{name}: differs from NumPy' for name, ok in checks.items() if not ok]
# Random values: their statistics (12000 values each).
r = L('rand_integers')
counts = np.bincount(r.ravel() + 5, minlength=12)
if r.dtype != np.int64 or r.min() != -5 or r.max() != 6 or abs(counts / r.size * 12 - 1).max() > 0.15:
    bad.append(f'rand_integers: {r.dtype}, counts {counts.tolist()}')
e = L('rand_exponential')
if e.min() <= 0 or abs(e.mean() - 2) > 0.08 or abs(e.var() - 4) > 0.4:
    bad.append(f'rand_exponential: min {e.min()}, mean {e.mean()}, var {e.var()}')
# (name, dtype, lowest allowed, mean, its tolerance, variance, its tolerance)
for name, kind, low, mean, dm, var, dv in (
        ('rand_poisson', np.int64, 0, 3.5, 0.1, 3.5, 0.3), ('rand_binomial', np.int64, 0, 3.0, 0.1, 2.1, 0.2),
        ('rand_gamma', np.float64, 0, 3.0, 0.1, 4.5, 0.45), ('rand_beta', np.float64, 0, 2 / 7, 0.01, 10 / 392, 0.003),
        ('rand_t', np.float64, -np.inf, 0.0, 0.06, 5 / 3, 0.3)):
    r = L(name)
    if r.dtype != kind or r.shape != (400, 30) or r.min() < low or abs(r.mean() - mean) > dm or abs(r.var() - var) > dv:
        bad.append(f'{name}: {r.dtype}{r.shape}, min {r.min()}, mean {r.mean()}, var {r.var()}')
rows = lambda a: sorted(map(tuple, a.reshape(len(a), -1)))
choices = {'choice_v': L('choice_v').shape == (30,) and np.isin(L('choice_v'), v).all(),
           'choice_v_all': np.array_equal(np.sort(L('choice_v_all')), np.sort(v)),
           'choice_v_last': np.array_equal(L('choice_v_last'), np.full(9, v[-1])),
           'perm_x': rows(L('perm_x')) == rows(x) and not np.array_equal(L('perm_x'), x),
           'perm_50': L('perm_50').dtype == np.int64 and np.array_equal(np.sort(L('perm_50')), np.arange(50)),
           'perm_big': np.array_equal(np.sort(L('perm_big')), 2**62 + np.arange(7))}
bad += [f'{name}: not a choice or permutation of its input' for name, ok in choices.items() if not ok]
for name, want in cases.items():
    want = np.asarray(want)
    got = L(name)
    if name == 'sum_isnan_y':
        want = want.astype(np.int64)  # NumPy counts in its default integer, mpidask in i64
    if got.dtype != want.dtype or got.shape != want.shape:
        bad.append(f'{name}: {got.dtype}{got.shape} where NumPy gives {want.dtype}{want.shape}')
    elif want.dtype.kind == 'f':
        rtol = 1e-6 if want.dtype == np.float32 else 1e-12
        if not np.allclose(got, want, rtol=rtol, atol=0, equal_nan=True):
            far = np.nanmax(np.abs(np.where(np.isclose(got, want, rtol=rtol, atol=0, equal_nan=True), 0, got - want)))
            bad.append(f'{name}: values differ, largest by {far}')
    elif not np.array_equal(got, want):
        bad.append(f'{name}: values differ at {np.argwhere(got != want)[:3].tolist()}')
print('\n'.join(bad) if bad else f'numpy agrees on {len(cases) + len(checks) + len(choices) + 7}')
"#;

/// The job launched by `command` (mpirun or local), then NumPy's verdict.
fn against_numpy(label: &str, mut command: std::process::Command) {
    let dir = support::scratch_dir(&format!("numerics-{label}"));
    command.env(OUT, &dir);
    let run = run_with_deadline(command, Duration::from_secs(120));
    run.expect_code(0)
        .expect_stdout("NUMERICS saved 239")
        .expect_quiet();
    let text = run_python(CHECK, &[&dir]);
    assert!(text.starts_with("numpy agrees on 209"), "{label}: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The heat example on a grid its chunks do not divide, checking every cell against its
/// run on one array (under mpirun at `np` ranks, or locally for 0).
fn heat_example(np: usize) {
    let args = ["--n", "301", "--chunk", "70", "--steps", "40", "--check"];
    let run = support::run_example("heat", np, &args, Duration::from_secs(120));
    run.expect_code(0)
        .expect_quiet()
        .expect_stdout("CHECK ok: 90601 cells equal to the single-array run");
    assert_eq!(
        run.field("RESULT", "steps").as_deref(),
        Some("40"),
        "{}",
        run.dump()
    );
}

fn main() {
    if std::env::var_os(OUT).is_some() {
        mpidask::run(job);
    }
    let exe = std::env::current_exe().expect("current exe");
    let args = Arguments::from_args();
    let mut tests = vec![];
    for np in [3, 5] {
        let exe = exe.clone();
        tests.push(Trial::test(
            format!("numerics_match_numpy_np{np}"),
            move || check(|| against_numpy(&format!("np{np}"), mpirun(np, &exe, &[]))),
        ));
    }
    tests.push(Trial::test(
        "numerics_match_numpy_local",
        move || -> Result<(), Failed> { check(|| against_numpy("local", local_command(&exe))) },
    ));
    for np in [0, 4] {
        let label = if np == 0 {
            "local".to_string()
        } else {
            format!("np{np}")
        };
        tests.push(Trial::test(
            format!("heat_example_checks_itself_{label}"),
            move || check(|| heat_example(np)),
        ));
    }
    libtest_mimic::run(&args, tests).exit();
}
