//! The dense factorisations of one block, by the machine's LAPACK (the one in OpenBLAS,
//! which the matrix products already link and NumPy's wheels ship): QR, SVD, Cholesky,
//! LU solves and triangular solves of `f64` matrices, with LAPACK's failures (a matrix
//! that is singular or not positive definite) and non-finite inputs as errors.

use ndarray::{Array1, Array2, ArrayView2};

/// A matrix in LAPACK's column-major layout.
struct ColMajor {
    rows: usize,
    data: Vec<f64>,
}

impl ColMajor {
    fn of(a: ArrayView2<'_, f64>) -> ColMajor {
        // The transpose's C order is the matrix's column-major order.
        let data = a.t().iter().copied().collect();
        ColMajor {
            rows: a.nrows(),
            data,
        }
    }

    fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i + j * self.rows]
    }

    /// The first `rows` x `cols` corner, row-major.
    fn corner(&self, rows: usize, cols: usize) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |(i, j)| self.get(i, j))
    }

    fn ld(&self) -> i32 {
        self.rows.max(1) as i32
    }
}

fn dim(n: usize, what: &str) -> Result<i32, String> {
    i32::try_from(n).map_err(|_| format!("{what} of {n} is more than LAPACK's 32-bit sizes take"))
}

/// An error unless every element is finite.
pub(super) fn finite(a: ArrayView2<'_, f64>, what: &str) -> Result<(), String> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some(((i, j), v)) => Err(format!(
            "{what}: the matrix holds {v} at [{i}, {j}]; it needs finite values"
        )),
    }
}

/// The workspace size LAPACK asked for (`query` holds it after a call with `lwork = -1`).
fn workspace(query: f64) -> usize {
    (query as usize).max(1)
}

/// The reduced QR of an `m` x `n` matrix: `Q` (`m` x `k`, orthonormal columns) and `R`
/// (`k` x `n`, upper triangular), `k = min(m, n)`.
pub(super) fn qr(a: ArrayView2<'_, f64>) -> Result<(Array2<f64>, Array2<f64>), String> {
    let (m, n) = a.dim();
    let k = m.min(n);
    if k == 0 {
        return Ok((Array2::zeros((m, 0)), Array2::zeros((0, n))));
    }
    finite(a, "qr")?;
    let (mi, ni, ki) = (dim(m, "rows")?, dim(n, "columns")?, dim(k, "rank")?);
    let mut c = ColMajor::of(a);
    let ld = c.ld();
    let mut tau = vec![0.0; k];
    let mut info = 0;
    let mut query = [0.0];
    // SAFETY: `c` holds m x n values with leading dimension m, `tau` min(m, n); a query
    // (lwork -1) writes one value.
    unsafe { lapack::dgeqrf(mi, ni, &mut c.data, ld, &mut tau, &mut query, -1, &mut info) };
    let mut work = vec![0.0; workspace(query[0])];
    let lwork = work.len() as i32;
    // SAFETY: as above, with the workspace LAPACK asked for.
    unsafe {
        lapack::dgeqrf(
            mi,
            ni,
            &mut c.data,
            ld,
            &mut tau,
            &mut work,
            lwork,
            &mut info,
        )
    };
    if info != 0 {
        return Err(format!("qr: LAPACK's dgeqrf failed (info {info})"));
    }
    let r = Array2::from_shape_fn((k, n), |(i, j)| if j >= i { c.get(i, j) } else { 0.0 });
    // SAFETY: the first k columns of `c` hold the reflectors dgeqrf made (k <= n), `tau`
    // their k factors.
    unsafe { lapack::dorgqr(mi, ki, ki, &mut c.data, ld, &tau, &mut query, -1, &mut info) };
    let mut work = vec![0.0; workspace(query[0])];
    let lwork = work.len() as i32;
    // SAFETY: as above, with the workspace LAPACK asked for.
    unsafe {
        lapack::dorgqr(
            mi,
            ki,
            ki,
            &mut c.data,
            ld,
            &tau,
            &mut work,
            lwork,
            &mut info,
        )
    };
    if info != 0 {
        return Err(format!("qr: LAPACK's dorgqr failed (info {info})"));
    }
    Ok((c.corner(m, k), r))
}

/// An SVD's `U`, singular values and `V^T`.
pub(crate) type Svd = (Array2<f64>, Array1<f64>, Array2<f64>);

/// The reduced SVD of an `m` x `n` matrix: `U` (`m` x `k`), the singular values (`k`,
/// descending) and `V^T` (`k` x `n`), `k = min(m, n)`.
pub(super) fn svd(a: ArrayView2<'_, f64>) -> Result<Svd, String> {
    let (m, n) = a.dim();
    let k = m.min(n);
    if k == 0 {
        return Ok((
            Array2::zeros((m, 0)),
            Array1::zeros(0),
            Array2::zeros((0, n)),
        ));
    }
    finite(a, "svd")?;
    let (mi, ni) = (dim(m, "rows")?, dim(n, "columns")?);
    let mut c = ColMajor::of(a);
    let ld = c.ld();
    let mut s = vec![0.0; k];
    let mut u = ColMajor {
        rows: m,
        data: vec![0.0; m * k],
    };
    let mut vt = ColMajor {
        rows: k,
        data: vec![0.0; k * n],
    };
    let mut iwork = vec![0i32; 8 * k];
    let mut info = 0;
    let mut query = [0.0];
    let (ldu, ldvt) = (u.ld(), vt.ld());
    // SAFETY: jobz 'S': `u` is m x min(m, n) (leading dimension m), `vt` min(m, n) x n
    // (leading dimension min(m, n)), `s` min(m, n), `iwork` 8 min(m, n); a query writes
    // one value to `query`.
    unsafe {
        lapack::dgesdd(
            b'S',
            mi,
            ni,
            &mut c.data,
            ld,
            &mut s,
            &mut u.data,
            ldu,
            &mut vt.data,
            ldvt,
            &mut query,
            -1,
            &mut iwork,
            &mut info,
        )
    };
    let mut work = vec![0.0; workspace(query[0])];
    let lwork = work.len() as i32;
    // SAFETY: as above, with the workspace LAPACK asked for.
    unsafe {
        lapack::dgesdd(
            b'S',
            mi,
            ni,
            &mut c.data,
            ld,
            &mut s,
            &mut u.data,
            ldu,
            &mut vt.data,
            ldvt,
            &mut work,
            lwork,
            &mut iwork,
            &mut info,
        )
    };
    if info != 0 {
        return Err(format!(
            "svd: LAPACK's dgesdd did not converge (info {info})"
        ));
    }
    Ok((u.corner(m, k), Array1::from(s), vt.corner(k, n)))
}

/// The lower-triangular `L` with `L L^T = a`, for a symmetric positive definite `a`.
pub(super) fn cholesky(a: ArrayView2<'_, f64>) -> Result<Array2<f64>, String> {
    let n = a.nrows();
    finite(a, "cholesky")?;
    let mut c = ColMajor::of(a);
    let ld = c.ld();
    let mut info = 0;
    // SAFETY: `c` holds n x n values with leading dimension n.
    unsafe { lapack::dpotrf(b'L', dim(n, "rows")?, &mut c.data, ld, &mut info) };
    if info > 0 {
        return Err(format!(
            "cholesky: the matrix is not positive definite (its leading {info} x {info} minor \
             is not)"
        ));
    }
    if info < 0 {
        return Err(format!("cholesky: LAPACK's dpotrf failed (info {info})"));
    }
    Ok(Array2::from_shape_fn((n, n), |(i, j)| {
        if j <= i { c.get(i, j) } else { 0.0 }
    }))
}

/// `x` with `a x = b` (`a` square, `b` `n` x `k`), by LU with partial pivoting.
pub(super) fn solve(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Result<Array2<f64>, String> {
    let (n, k) = b.dim();
    finite(a, "solve")?;
    finite(b, "solve (right-hand side)")?;
    if n == 0 || k == 0 {
        return Ok(Array2::zeros((n, k)));
    }
    let mut c = ColMajor::of(a);
    let lda = c.ld();
    let mut x = ColMajor::of(b);
    let mut pivots = vec![0i32; n];
    let mut info = 0;
    let ldb = x.ld();
    // SAFETY: `c` is n x n, `x` n x k, both with leading dimension n; `pivots` n.
    unsafe {
        lapack::dgesv(
            dim(n, "rows")?,
            dim(k, "right-hand sides")?,
            &mut c.data,
            lda,
            &mut pivots,
            &mut x.data,
            ldb,
            &mut info,
        )
    };
    if info > 0 {
        return Err(format!(
            "solve: the matrix is singular (U[{0}, {0}] of its LU factors is 0)",
            info - 1
        ));
    }
    if info < 0 {
        return Err(format!("solve: LAPACK's dgesv failed (info {info})"));
    }
    Ok(x.corner(n, k))
}

/// `x` with `r x = b` for an upper-triangular `r` (`n` x `n`) and `b` (`n` x `k`).
pub(super) fn solve_upper(
    r: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
) -> Result<Array2<f64>, String> {
    let (n, k) = b.dim();
    if n == 0 || k == 0 {
        return Ok(Array2::zeros((n, k)));
    }
    let c = ColMajor::of(r);
    let lda = c.ld();
    let mut x = ColMajor::of(b);
    let mut info = 0;
    let ld = x.ld();
    // SAFETY: `c` is n x n, `x` n x k, both with leading dimension n.
    unsafe {
        lapack::dtrtrs(
            b'U',
            b'N',
            b'N',
            dim(n, "rows")?,
            dim(k, "right-hand sides")?,
            &c.data,
            lda,
            &mut x.data,
            ld,
            &mut info,
        )
    };
    if info > 0 {
        return Err(format!(
            "lstsq: the matrix does not have full column rank (R[{0}, {0}] is 0)",
            info - 1
        ));
    }
    if info < 0 {
        return Err(format!("lstsq: LAPACK's dtrtrs failed (info {info})"));
    }
    Ok(x.corner(n, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn close(a: &Array2<f64>, b: &Array2<f64>) -> bool {
        a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn qr_reconstructs_with_orthonormal_q() {
        let a = array![[2.0, -1.0], [1.0, 3.0], [0.5, 4.0]];
        let (q, r) = qr(a.view()).unwrap();
        assert!(close(&q.dot(&r), &a));
        assert!(close(&q.t().dot(&q), &Array2::eye(2)));
        assert_eq!(r[[1, 0]], 0.0);
    }

    #[test]
    fn svd_cholesky_solve() {
        let a = array![[4.0, 2.0], [2.0, 3.0]];
        let (u, s, vt) = svd(a.view()).unwrap();
        assert!(close(&u.dot(&Array2::from_diag(&s)).dot(&vt), &a));
        assert!(s[0] >= s[1]);
        let l = cholesky(a.view()).unwrap();
        assert!(close(&l.dot(&l.t()), &a));
        let x = solve(a.view(), array![[2.0], [1.0]].view()).unwrap();
        assert!(close(&a.dot(&x), &array![[2.0], [1.0]]));
        let upper = array![[2.0, 1.0], [0.0, 4.0]];
        let y = solve_upper(upper.view(), array![[3.0], [8.0]].view()).unwrap();
        assert!(close(&y, &array![[0.5], [2.0]]));
    }

    #[test]
    fn failures_are_named() {
        let not_pd = array![[1.0, 2.0], [2.0, 1.0]];
        assert!(
            cholesky(not_pd.view())
                .unwrap_err()
                .contains("not positive definite")
        );
        let singular = array![[1.0, 2.0], [2.0, 4.0]];
        let b = array![[1.0], [1.0]];
        assert!(
            solve(singular.view(), b.view())
                .unwrap_err()
                .contains("singular")
        );
        let nan = array![[1.0, f64::NAN]];
        assert!(qr(nan.view()).unwrap_err().contains("NaN at [0, 1]"));
    }
}
