//! Linear algebra of chunked arrays, as `dask.array.linalg`: the tall-and-skinny QR
//! (TSQR) and what is made of it (`qr`, `svd`, `lstsq`, the randomised `svd_compressed`),
//! and `cholesky`, `solve` and `inv` of matrices that fit one chunk. Each block is
//! factorised by the machine's LAPACK (the one OpenBLAS carries, as NumPy's wheels do; the
//! `lapack` crate only declares its functions, so no LAPACK is compiled).
//!
//! TSQR (Demmel et al.; Dask's `tsqr`): each row chunk `A_i` is factorised `Q_i R_i` where
//! it lies, the small `R_i` are stacked and factorised once more, `Q' R`, and each `Q_i` is
//! multiplied by its rows of `Q'` where it lies: only the `R_i` (`n` x `n` each) and `Q'`
//! travel. Every function is lazy, as Dask's: it records tasks (delayed calls on the
//! chunks) that run when a result is computed.

use super::dtype::DType;
use super::structure::Span;
use super::{Array, concatenate, from_delayed_chunks, random};
use crate::delayed::{Delayed, delayed, try_delayed};
use ndarray::{Array2, ArrayD, Axis, Ix2, s};

mod lapack;

/// Two blocks made by one task.
type Pair = (ArrayD<f64>, ArrayD<f64>);
/// Three blocks made by one task (an SVD's `U`, `S` and `V^T`).
type Triple = (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>);

// ----- tasks (run on the workers) ---------------------------------------------------------

fn matrix(a: ArrayD<f64>) -> Result<Array2<f64>, String> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix2>()
        .map_err(|_| format!("a block of shape {shape:?} where a matrix was expected"))
}

fn qr_task(a: ArrayD<f64>) -> Result<Pair, String> {
    super::blas::one_thread();
    let (q, r) = lapack::qr(matrix(a)?.view())?;
    Ok((q.into_dyn(), r.into_dyn()))
}

fn first(pair: Pair) -> ArrayD<f64> {
    pair.0
}

fn second(pair: Pair) -> ArrayD<f64> {
    pair.1
}

/// The QR of the `R_i` stacked (TSQR's second stage).
fn stacked_qr_task(rs: Vec<ArrayD<f64>>) -> Result<Pair, String> {
    let rs = rs.into_iter().map(matrix).collect::<Result<Vec<_>, _>>()?;
    let views: Vec<_> = rs.iter().map(|r| r.view()).collect();
    let stacked = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
    qr_task(stacked.into_dyn())
}

/// `Q_i` times its rows (from `offset`) of the second stage's `Q'`.
fn q_block_task(pair: Pair, q2: ArrayD<f64>, offset: usize) -> Result<ArrayD<f64>, String> {
    super::blas::one_thread();
    let (q, q2) = (matrix(pair.0)?, matrix(q2)?);
    let rows = offset..offset + q.ncols();
    if rows.end > q2.nrows() {
        return Err(format!("rows {rows:?} of a Q' of {} rows", q2.nrows()));
    }
    Ok(q.dot(&q2.slice(s![rows, ..])).into_dyn())
}

fn svd_task(a: ArrayD<f64>) -> Result<Triple, String> {
    let (u, s, vt) = lapack::svd(matrix(a)?.view())?;
    Ok((u.into_dyn(), s.into_dyn(), vt.into_dyn()))
}

fn u_of(t: Triple) -> ArrayD<f64> {
    t.0
}

fn s_of(t: Triple) -> ArrayD<f64> {
    t.1
}

fn vt_of(t: Triple) -> ArrayD<f64> {
    t.2
}

fn solve_upper_task(r: ArrayD<f64>, b: ArrayD<f64>) -> Result<ArrayD<f64>, String> {
    Ok(lapack::solve_upper(matrix(r)?.view(), matrix(b)?.view())?.into_dyn())
}

/// The rank NumPy's `matrix_rank` gives of an `m` x `n` matrix with singular values `s`.
fn rank_task(s: ArrayD<f64>, m: usize, n: usize) -> ArrayD<i64> {
    let largest = s.iter().copied().fold(0.0, f64::max);
    let tolerance = largest * m.max(n) as f64 * f64::EPSILON;
    ndarray::arr0(s.iter().filter(|&&v| v > tolerance).count() as i64).into_dyn()
}

/// The block a lazy function's task makes, or its error as the task's failure.
fn or_fail(result: Result<Array2<f64>, String>) -> ArrayD<f64> {
    result.unwrap_or_else(|e| panic!("{e}")).into_dyn()
}

fn cholesky_lower_block(a: ArrayD<f64>) -> ArrayD<f64> {
    or_fail(matrix(a).and_then(|a| lapack::cholesky(a.view())))
}

fn cholesky_upper_block(a: ArrayD<f64>) -> ArrayD<f64> {
    or_fail(matrix(a).and_then(|a| lapack::cholesky(a.view()).map(|l| l.t().to_owned())))
}

/// Of `[A | B]` (`n` x `n + k`): `[A | X]` with `A X = B`.
fn solve_block(joined: ArrayD<f64>) -> ArrayD<f64> {
    or_fail(matrix(joined).and_then(|ab| {
        let n = ab.nrows();
        let x = lapack::solve(ab.slice(s![.., ..n]), ab.slice(s![.., n..]))?;
        let mut out = ab;
        out.slice_mut(s![.., n..]).assign(&x);
        Ok(out)
    }))
}

fn inv_block(a: ArrayD<f64>) -> ArrayD<f64> {
    or_fail(matrix(a).and_then(|a| lapack::solve(a.view(), Array2::eye(a.nrows()).view())))
}

// ----- the graph, on the client -----------------------------------------------------------

/// `a` as `f64` in row chunks holding whole rows, or why it cannot be factorised by TSQR.
fn tall_skinny(a: &Array, name: &str) -> std::result::Result<Array, Array> {
    if a.check().is_err() {
        return Err(a.clone());
    }
    if a.ndim() != 2 {
        return Err(Array::invalid(format!(
            "{name} needs a 2-D array, got shape {:?}",
            a.shape()
        )));
    }
    let (m, n) = (a.shape()[0], a.shape()[1]);
    if m < n {
        return Err(Array::invalid(format!(
            "{name} needs a tall-and-skinny array (at least as many rows as columns), got \
             shape {:?}: factorise its transpose",
            a.shape()
        )));
    }
    let rows = a.chunks()[0].clone();
    Ok(a.astype(DType::F64).rechunk_to(vec![rows, vec![n]]))
}

/// The only chunk of `a` (rechunked to one chunk) as a delayed value.
fn only_chunk(a: &Array) -> Delayed<ArrayD<f64>> {
    let one = a.rechunk_to(a.shape().iter().map(|&n| vec![n]).collect());
    one.to_delayed::<f64>().remove(0)
}

/// An array of the one block `part` makes, of shape `shape`.
fn one_block(part: Delayed<ArrayD<f64>>, shape: &[usize]) -> Array {
    from_delayed_chunks(&[part], shape.iter().map(|&n| vec![n]).collect())
}

/// The QR factors of a tall-and-skinny matrix `a` (`m` x `n`, `m >= n`) by TSQR: `Q`
/// (`m` x `n`, orthonormal columns, in `a`'s row chunks) and `R` (`n` x `n`, upper
/// triangular, one chunk). `a` is rechunked to one chunk across its columns if it has
/// several, and computed in `f64`. The signs of `Q`'s columns and `R`'s rows may differ
/// from NumPy's `qr` (both factorisations are exact). A wide `a` gives two invalid arrays
/// whose error says so.
///
/// ```
/// use mpidask::array::{linalg, random};
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let a = random::uniform(0.0, 1.0, &[1000, 5], &[300, 5], 1);
///     let (q, r) = linalg::tsqr(&a);
///     let error = (q.dot(&r) - &a).abs().max().compute_scalar::<f64>(client).unwrap();
///     assert!(error < 1e-12);
/// });
/// ```
pub fn tsqr(a: &Array) -> (Array, Array) {
    let a = match tall_skinny(a, "tsqr") {
        Ok(a) => a,
        Err(invalid) => return (invalid.clone(), invalid),
    };
    let rows = a.chunks()[0].clone();
    let n = a.shape()[1];
    let ranks: Vec<usize> = rows.iter().map(|&m| m.min(n)).collect();
    let k = ranks.iter().sum::<usize>().min(n);
    let qrs: Vec<Delayed<Pair>> = a
        .to_delayed::<f64>()
        .iter()
        .map(|block| try_delayed(qr_task, block))
        .collect();
    let rs: Vec<Delayed<ArrayD<f64>>> = qrs.iter().map(|p| delayed(second, p)).collect();
    let top = try_delayed(stacked_qr_task, rs);
    let q2 = delayed(first, &top);
    let mut offset = 0;
    let qs: Vec<Delayed<ArrayD<f64>>> = qrs
        .iter()
        .zip(&ranks)
        .map(|(p, &rank)| {
            let q = try_delayed(q_block_task, (p, &q2, offset));
            offset += rank;
            q
        })
        .collect();
    (
        from_delayed_chunks(&qs, vec![rows, vec![k]]),
        one_block(delayed(second, &top), &[k, n]),
    )
}

/// The QR factors of `a`: [`tsqr`] (Dask's `qr` is TSQR too, for tall-and-skinny arrays).
pub fn qr(a: &Array) -> (Array, Array) {
    tsqr(a)
}

/// The singular value decomposition `a = U diag(S) V^T` of a tall-and-skinny or
/// short-and-fat matrix (`m` x `n`): `U` (`m` x `k`), `S` (`k`, descending) and `V^T`
/// (`k` x `n`), `k = min(m, n)`, through TSQR of `a` (of `a^T` when it is wide) and the
/// SVD of the small `R` (Dask's `svd`). The signs of singular vector pairs may differ from
/// NumPy's.
pub fn svd(a: &Array) -> (Array, Array, Array) {
    if a.ndim() == 2 && a.shape()[0] < a.shape()[1] && a.check().is_ok() {
        let (u, s, vt) = svd(&a.t());
        return (vt.t(), s, u.t());
    }
    let (q, r) = tsqr(a);
    if r.check().is_err() {
        return (r.clone(), r.clone(), r);
    }
    let (k, n) = (r.shape()[0], r.shape()[1]);
    let usv = try_delayed(svd_task, only_chunk(&r));
    let ur = one_block(delayed(u_of, &usv), &[k, k]);
    let s = one_block(delayed(s_of, &usv), &[k]);
    let vt = one_block(delayed(vt_of, &usv), &[k, n]);
    (q.dot(&ur), s, vt)
}

/// The `k` leading singular triplets of `a`, approximated by the randomised method of
/// Halko, Martinsson and Tropp (Dask's `svd_compressed`): `a` times a Gaussian matrix of
/// `k + 10` columns (`seed`), `n_power_iter` power iterations (each re-orthonormalised by
/// TSQR), then the SVD of `a` projected on the orthonormal basis found. Exact when `a` has
/// rank `k` or less.
pub fn svd_compressed(
    a: &Array,
    k: usize,
    n_power_iter: usize,
    seed: u64,
) -> (Array, Array, Array) {
    let invalid = |message: String| {
        let a = Array::invalid(message);
        (a.clone(), a.clone(), a)
    };
    if a.check().is_err() {
        return (a.clone(), a.clone(), a.clone());
    }
    if a.ndim() != 2 {
        return invalid(format!(
            "svd_compressed needs a 2-D array, got shape {:?}",
            a.shape()
        ));
    }
    let (m, n) = (a.shape()[0], a.shape()[1]);
    if k == 0 || k > m.min(n) {
        return invalid(format!(
            "svd_compressed: k = {k} must be between 1 and min(m, n) = {} for shape {:?}",
            m.min(n),
            a.shape()
        ));
    }
    let a = a.astype(DType::F64);
    let q = range_finder(&a, (k + 10).min(m.min(n)), n_power_iter, seed);
    let (ub, s, vt) = svd(&q.t().dot(&a));
    let first_k: Span = (0..k as isize).into();
    (
        q.dot(&ub).slice(&[Span::all(), first_k]),
        s.slice(&[first_k]),
        vt.slice(&[first_k]),
    )
}

/// An orthonormal basis (`m` x `l`, in `a`'s row chunks) of approximately the range of
/// `a`'s `l` leading left singular vectors: `a` (`m` x `n`, `f64`, checked by the caller)
/// times a Gaussian matrix of `l` columns (`seed`), then `n_power_iter` power iterations,
/// each re-orthonormalised by TSQR (Halko, Martinsson and Tropp's randomised range finder).
pub(crate) fn range_finder(a: &Array, l: usize, n_power_iter: usize, seed: u64) -> Array {
    let n = a.shape()[1];
    let omega_rows = a.chunks()[1].first().copied().unwrap_or(1).max(1);
    let omega = random::normal(0.0, 1.0, &[n, l], &[omega_rows, l], seed);
    let mut y = a.dot(&omega);
    for _ in 0..n_power_iter {
        let (q, _) = tsqr(&y);
        let (z, _) = tsqr(&a.t().dot(&q));
        y = a.dot(&z);
    }
    tsqr(&y).0
}

/// The SVD of a matrix in memory (`U`, `S` descending, `V^T`; `k = min(m, n)`), by the
/// machine's LAPACK: for the small factors the distributed methods reduce to.
pub(crate) fn svd_in_memory(a: ndarray::ArrayView2<'_, f64>) -> Result<lapack::Svd, String> {
    lapack::svd(a)
}

/// The least-squares solution of `a x = b` and what NumPy's `lstsq` reports of it (Dask's
/// `lstsq`, by TSQR).
pub struct Lstsq {
    /// The solution (`n`, or `n` x `k` for a 2-D `b`).
    pub x: Array,
    /// The sums of squared residuals, per column of `b` (shape `(1,)` for a 1-D `b`).
    pub residuals: Array,
    /// The rank of `a` (0-d, `i64`), as NumPy's `matrix_rank`.
    pub rank: Array,
    /// The singular values of `a`, descending.
    pub s: Array,
}

/// The `x` minimising `|a x - b|` for a tall-and-skinny `a` (`m` x `n`, `m >= n`, full
/// column rank) and `b` of `m` rows, by TSQR: `R x = Q^T b`.
pub fn lstsq(a: &Array, b: &Array) -> Lstsq {
    let invalid = |a: Array| Lstsq {
        x: a.clone(),
        residuals: a.clone(),
        rank: a.clone(),
        s: a,
    };
    if b.check().is_err() {
        return invalid(b.clone());
    }
    let a = match tall_skinny(a, "lstsq") {
        Ok(a) => a,
        Err(e) => return invalid(e),
    };
    let (m, n) = (a.shape()[0], a.shape()[1]);
    if !(b.ndim() == 1 || b.ndim() == 2) || b.shape()[0] != m {
        return invalid(Array::invalid(format!(
            "lstsq: b of shape {:?} does not match a of shape {:?}: it needs {m} rows",
            b.shape(),
            a.shape()
        )));
    }
    let vector = b.ndim() == 1;
    let b2 = if vector {
        b.reshape(&[m as isize, 1])
    } else {
        b.clone()
    }
    .astype(DType::F64);
    let nrhs = b2.shape()[1];
    let (q, r) = tsqr(&a);
    let r_chunk = only_chunk(&r);
    let qtb = only_chunk(&q.t().dot(&b2));
    let x = one_block(try_delayed(solve_upper_task, (&r_chunk, &qtb)), &[n, nrhs]);
    let residuals = (a.dot(&x) - &b2)
        .powi(2)
        .reduce(super::ReduceOp::Sum, Some(&[0]), vector);
    let usv = try_delayed(svd_task, &r_chunk);
    let s_chunk = delayed(s_of, &usv);
    let rank = delayed(rank_task, (&s_chunk, m, n));
    Lstsq {
        x: if vector { x.reshape(&[n as isize]) } else { x },
        residuals: if vector {
            residuals.reshape(&[1])
        } else {
            residuals
        },
        rank: from_delayed_chunks(&[rank], vec![]),
        s: one_block(s_chunk, &[n.min(m)]),
    }
}

/// `a` as one `f64` chunk, if it is a square matrix.
fn square(a: &Array, name: &str) -> std::result::Result<Array, Array> {
    if a.check().is_err() {
        return Err(a.clone());
    }
    if a.ndim() != 2 || a.shape()[0] != a.shape()[1] {
        return Err(Array::invalid(format!(
            "{name} needs a square matrix, got shape {:?}",
            a.shape()
        )));
    }
    Ok(a.astype(DType::F64).rechunk(&[0, 0]))
}

/// The Cholesky factor of a symmetric positive definite matrix: `L` with `L L^T = a` when
/// `lower`, `U = L^T` otherwise (Dask's `cholesky(a, lower=False)` is upper; NumPy's is
/// lower). The matrix is one chunk; one that is not positive definite fails the
/// computation with an error that says so.
pub fn cholesky(a: &Array, lower: bool) -> Array {
    match square(a, "cholesky") {
        Ok(a) if lower => a.map_blocks(cholesky_lower_block),
        Ok(a) => a.map_blocks(cholesky_upper_block),
        Err(invalid) => invalid,
    }
}

/// The `x` with `a x = b` for a square `a` (`n` x `n`) and `b` of `n` rows (1-D or 2-D),
/// by LU with partial pivoting in one chunk (NumPy's `solve`); a singular `a` fails the
/// computation with an error that says so.
pub fn solve(a: &Array, b: &Array) -> Array {
    let a = match square(a, "solve") {
        Ok(a) => a,
        Err(invalid) => return invalid,
    };
    if b.check().is_err() {
        return b.clone();
    }
    let n = a.shape()[0];
    if !(b.ndim() == 1 || b.ndim() == 2) || b.shape()[0] != n {
        return Array::invalid(format!(
            "solve: b of shape {:?} does not match a of shape {:?}: it needs {n} rows",
            b.shape(),
            a.shape()
        ));
    }
    let vector = b.ndim() == 1;
    let b2 = if vector {
        b.reshape(&[n as isize, 1])
    } else {
        b.clone()
    };
    let k = b2.shape()[1] as isize;
    let joined = concatenate(&[a, b2.astype(DType::F64)], 1)
        .rechunk(&[0, 0])
        .map_blocks(solve_block);
    let x = joined.slice(&[Span::all(), (n as isize..n as isize + k).into()]);
    if vector { x.reshape(&[n as isize]) } else { x }
}

/// The inverse of a square matrix (one chunk; NumPy's `inv`); a singular one fails the
/// computation with an error that says so.
pub fn inv(a: &Array) -> Array {
    match square(a, "inv") {
        Ok(a) => a.map_blocks(inv_block),
        Err(invalid) => invalid,
    }
}

/// A 1-D block as a vector, for the tests.
#[cfg(test)]
fn vector(a: ArrayD<f64>) -> ndarray::Array1<f64> {
    a.into_dimensionality::<ndarray::Ix1>().expect("1-D")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::{from_array, random};

    fn local<T: Send>(f: impl FnOnce(&crate::Client) -> T + Send) -> T {
        crate::run_local(crate::RuntimeArgs::default(), f)
    }

    #[test]
    fn tsqr_reconstructs_with_uneven_chunks() {
        local(|client| {
            let a = random::uniform(-1.0, 1.0, &[103, 7], &[20, 3], 5);
            let (q, r) = tsqr(&a);
            assert_eq!(q.chunks()[0], a.chunks()[0]);
            let err = (q.dot(&r) - &a).abs().max();
            assert!(err.compute_scalar::<f64>(client).unwrap() < 1e-12);
            let qtq = q.t().dot(&q).compute::<f64>(client).unwrap();
            let eye = Array2::<f64>::eye(7).into_dyn();
            assert!(qtq.iter().zip(&eye).all(|(a, b)| (a - b).abs() < 1e-12));
        });
    }

    /// The chunks of a lazy array handed to delayed calls (TSQR's first stage) share what
    /// is upstream of them: each task runs once, however many stages and chunks read it.
    #[test]
    fn svd_compressed_runs_each_task_once() {
        local(|client| {
            let a = random::normal(0.0, 1.0, &[1600, 10], &[100, 10], 3);
            let before = client.scheduler_info().unwrap().tasks_completed;
            let (_, s, _) = svd_compressed(&a, 3, 2, 7);
            assert_eq!(s.compute::<f64>(client).unwrap().len(), 3);
            let tasks = client.scheduler_info().unwrap().tasks_completed - before;
            assert!(
                tasks < 450,
                "{tasks} tasks for 16 chunks (315 when written)"
            );
        });
    }

    #[test]
    fn svd_of_wide_and_solve() {
        local(|client| {
            let a = random::uniform(-1.0, 1.0, &[4, 30], &[4, 7], 6);
            let (u, s, vt) = svd(&a);
            let s = vector(s.compute::<f64>(client).unwrap());
            assert!(s.windows(2).into_iter().all(|w| w[0] >= w[1]));
            let us = u.compute::<f64>(client).unwrap();
            let rebuilt = matrix(us)
                .unwrap()
                .dot(&Array2::from_diag(&s))
                .dot(&matrix(vt.compute::<f64>(client).unwrap()).unwrap());
            let a = matrix(a.compute::<f64>(client).unwrap()).unwrap();
            assert!((rebuilt - &a).iter().all(|d| d.abs() < 1e-12));
            let m = from_array(&ndarray::array![[3.0, 1.0], [1.0, 2.0]].into_dyn(), &[1, 1]);
            let b = from_array(&ndarray::array![9.0, 8.0].into_dyn(), &[1]);
            let x = solve(&m, &b).compute::<f64>(client).unwrap();
            assert!((x[0] - 2.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12);
        });
    }

    #[test]
    fn shapes_are_checked_when_built() {
        let a = random::uniform(0.0, 1.0, &[3, 4], &[3, 4], 1);
        assert!(
            cholesky(&a, true)
                .check()
                .unwrap_err()
                .to_string()
                .contains("square")
        );
        let sq = random::uniform(0.0, 1.0, &[3, 3], &[3, 3], 1);
        let b = random::uniform(0.0, 1.0, &[4], &[4], 1);
        assert!(
            solve(&sq, &b)
                .check()
                .unwrap_err()
                .to_string()
                .contains("needs 3 rows")
        );
    }
}
