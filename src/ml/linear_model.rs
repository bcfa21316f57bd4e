//! Linear models over row-chunked arrays, as dask-ml's (and dask-glm's):
//! `LinearRegression` by the normal equations of one tree reduction of per-chunk Gram
//! matrices, `LogisticRegression` by Newton's method with an L2 penalty, each iteration
//! one tree reduction of per-chunk gradients and Hessians over the input persisted once.
//! The small systems are solved on the client.

use super::rows::{as_f64, error, row_chunked, same_features, tree};
use crate::Client;
use crate::array::{self, Array, DType};
use crate::collections::array::{delayed_on_rows, delayed_on_rows2};
use crate::delayed::Delayed;
use crate::error::Result;
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, Ix1, s};
use serde::{Deserialize, Serialize};

/// Sums over some rows: `n`, the sums of `x` and `y`, `x^T x` and `x^T y` (row-major),
/// and the first NaN met.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gram {
    rows: u64,
    sum_x: Vec<f64>,
    sum_y: f64,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    nan: Option<u64>,
}

/// The targets of a chunk of samples `x`, checked: 1-D, one per row.
fn targets(x: &ArrayView2<'_, f64>, y: ArrayD<f64>) -> std::result::Result<Array1<f64>, String> {
    let y = y
        .into_dimensionality::<Ix1>()
        .map_err(|e| format!("a block of targets that is not 1-D: {e}"))?;
    if x.nrows() != y.len() {
        return Err(format!(
            "a block of {} samples with {} targets",
            x.nrows(),
            y.len()
        ));
    }
    Ok(y)
}

/// The first row of `x` or element of `y` holding NaN.
fn first_nan(x: &ArrayView2<'_, f64>, y: &Array1<f64>) -> Option<u64> {
    x.outer_iter()
        .zip(y)
        .position(|(row, v)| v.is_nan() || row.iter().any(|a| a.is_nan()))
        .map(|r| r as u64)
}

/// The Gram sums of a chunk's rows (read in place) and its targets.
fn gram_chunk(x: ArrayView2<'_, f64>, y: ArrayD<f64>) -> std::result::Result<Gram, String> {
    crate::collections::array::blas_one_thread();
    let y = targets(&x, y)?;
    let d = x.ncols();
    let xtx = x.t().dot(&x);
    let xty = x.t().dot(&y);
    Ok(Gram {
        rows: x.nrows() as u64,
        sum_x: x.sum_axis(ndarray::Axis(0)).to_vec(),
        sum_y: y.sum(),
        xtx: xtx
            .into_shape_with_order(d * d)
            .map_err(|e| e.to_string())?
            .to_vec(),
        xty: xty.to_vec(),
        nan: first_nan(&x, &y),
    })
}

fn merge_grams(parts: Vec<Gram>) -> Gram {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("a combine task has parts");
    for p in parts {
        if acc.nan.is_none() {
            acc.nan = p.nan.map(|r| acc.rows + r);
        }
        acc.rows += p.rows;
        acc.sum_y += p.sum_y;
        for (a, b) in acc.sum_x.iter_mut().zip(&p.sum_x) {
            *a += b;
        }
        for (a, b) in acc.xtx.iter_mut().zip(&p.xtx) {
            *a += b;
        }
        for (a, b) in acc.xty.iter_mut().zip(&p.xty) {
            *a += b;
        }
    }
    acc
}

/// Solves `a z = b` for a symmetric positive definite `a` by Cholesky; `None` when `a` is
/// not positive definite (singular).
fn solve_spd(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    let scale = (0..n)
        .map(|i| a[[i, i]].abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let v = a[[i, i]] - s;
                if v <= 1e-12 * scale {
                    return None;
                }
                l[[i, i]] = v.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    let mut z = Array1::<f64>::zeros(n);
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[[i, k]] * z[k]).sum();
        z[i] = (b[i] - s) / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[[k, i]] * x[k]).sum();
        x[i] = (z[i] - s) / l[[i, i]];
    }
    Some(x)
}

/// `x` (2-D, rows are samples) and `y` (1-D, one target per row) checked and cut alike.
fn samples(x: &Array, y: &Array, who: &str) -> Result<(Array, Array)> {
    let x = as_f64(&row_chunked(x, who)?);
    y.check()?;
    if y.ndim() != 1 || y.shape()[0] != x.shape()[0] {
        return Err(error(format!(
            "{who}: {} samples (x of shape {:?}) need as many targets in a 1-D y; y has \
             shape {:?}",
            x.shape()[0],
            x.shape(),
            y.shape()
        )));
    }
    if x.shape()[0] == 0 {
        return Err(error(format!("{who}: there are no samples")));
    }
    let y = as_f64(y).rechunk_to(vec![x.chunks()[0].clone()]);
    Ok((x, y))
}

/// A column vector of `coef` as an array, to multiply samples by.
fn column(coef: &Array1<f64>) -> Array {
    let n = coef.len();
    array::from_array(
        &coef
            .clone()
            .into_shape_with_order((n, 1))
            .expect("n x 1")
            .into_dyn(),
        &[n.max(1), 1],
    )
}

/// `x . coef + intercept`, lazily, 1-D.
fn linear(x: &Array, coef: &Array1<f64>, intercept: f64) -> Array {
    let rows = x.shape()[0] as isize;
    as_f64(x).dot(&column(coef)).reshape(&[rows]) + intercept
}

/// Ordinary least squares (`sklearn.linear_model.LinearRegression`, `fit_intercept`): the
/// coefficients solve the normal equations of the centred data, summed over the chunks in
/// one tree reduction. Collinear features (a singular `x^T x`) are an error: scikit-learn
/// returns the minimum-norm solution instead.
#[derive(Debug, Clone)]
pub struct LinearRegression {
    /// Fit an intercept (the data centred first).
    pub fit_intercept: bool,
    fitted: Option<(Array1<f64>, f64)>,
}

impl Default for LinearRegression {
    fn default() -> Self {
        Self::new()
    }
}

impl LinearRegression {
    /// A model with an intercept.
    pub fn new() -> Self {
        LinearRegression {
            fit_intercept: true,
            fitted: None,
        }
    }

    /// Fits `y` (1-D) on the rows of `x` (2-D).
    pub fn fit(&mut self, client: &Client, x: &Array, y: &Array) -> Result<&mut Self> {
        let (x, y) = samples(x, y, "LinearRegression.fit")?;
        let d = x.shape()[1];
        let parts: Vec<Delayed<Gram>> = x
            .to_delayed::<f64>()
            .iter()
            .zip(y.to_delayed::<f64>().iter())
            .map(|(xb, yb)| delayed_on_rows(gram_chunk, xb, yb))
            .collect();
        let g = tree(parts, merge_grams)
            .expect("samples come in chunks")
            .compute(client)?;
        if let Some(row) = g.nan {
            return Err(error(format!(
                "LinearRegression.fit: sample {row} holds NaN (in x or y); drop or fill the \
                 missing values first"
            )));
        }
        let n = g.rows as f64;
        let mut xtx = Array2::from_shape_vec((d, d), g.xtx).expect("d x d sums");
        let mut xty = Array1::from(g.xty);
        let mean_x = Array1::from(g.sum_x) / n;
        let mean_y = g.sum_y / n;
        if self.fit_intercept {
            for i in 0..d {
                xty[i] -= n * mean_x[i] * mean_y;
                for j in 0..d {
                    xtx[[i, j]] -= n * mean_x[i] * mean_x[j];
                }
            }
        }
        let coef = solve_spd(&xtx, &xty).ok_or_else(|| {
            error(
                "LinearRegression.fit: the features are collinear or constant (x^T x is \
                 singular); drop the redundant features",
            )
        })?;
        let intercept = if self.fit_intercept {
            mean_y - coef.dot(&mean_x)
        } else {
            0.0
        };
        self.fitted = Some((coef, intercept));
        Ok(self)
    }

    fn fitted(&self, who: &str) -> Result<&(Array1<f64>, f64)> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("LinearRegression.{who} before fit: call fit first")))
    }

    /// The predictions for the rows of `x`, lazily.
    pub fn predict(&self, x: &Array) -> Result<Array> {
        let (coef, intercept) = self.fitted("predict")?;
        same_features(x, coef.len(), "LinearRegression.predict")?;
        Ok(linear(x, coef, *intercept))
    }

    /// The coefficient of determination R^2 of the predictions for `x` against `y`.
    pub fn score(&self, client: &Client, x: &Array, y: &Array) -> Result<f64> {
        let predicted = self.predict(x)?;
        let (_, y) = samples(x, y, "LinearRegression.score")?;
        let residual = (&y - &predicted)
            .powi(2)
            .sum()
            .compute_scalar::<f64>(client)?;
        let spread = (&y - y.mean())
            .powi(2)
            .sum()
            .compute_scalar::<f64>(client)?;
        Ok(1.0 - residual / spread)
    }

    /// The coefficients (`coef_`), once fitted.
    pub fn coef(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.0)
    }

    /// The intercept (`intercept_`), once fitted.
    pub fn intercept(&self) -> Option<f64> {
        self.fitted.as_ref().map(|f| f.1)
    }
}

/// One chunk's part of a Newton step of the logistic loss at `w` (the intercept last):
/// the loss, its gradient and its Hessian (row-major), over these rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Newton {
    rows: u64,
    loss: f64,
    grad: Vec<f64>,
    hess: Vec<f64>,
    /// The first sample with NaN, or with a target other than 0 and 1.
    bad: Option<(u64, f64)>,
}

/// Rows per block of [`newton_chunk`]: a block's weighted rows stay in the cache for the
/// Hessian's product.
const NEWTON_BLOCK_ROWS: usize = 512;

/// The loss, gradient and Hessian of a chunk's rows (read in place) at the coefficients
/// `w` (the intercept last), a block of rows at a time: the block's `z = x . w` by BLAS,
/// then per row the loss, `p - y` and the row scaled by `sqrt(p (1 - p))`, then the block's
/// gradient `x^T (p - y)` and Hessian `B^T B` of the scaled rows `B` by BLAS.
fn newton_chunk(
    x: ArrayView2<'_, f64>,
    (y, w): (ArrayD<f64>, Vec<f64>),
) -> std::result::Result<Newton, String> {
    crate::collections::array::blas_one_thread();
    let y = targets(&x, y)?;
    let d = x.ncols();
    let m = d + 1;
    if w.len() != m {
        return Err(format!("{} coefficients for {d} features", w.len()));
    }
    let coef = ArrayView1::from(&w[..d]);
    let mut part = Newton {
        rows: x.nrows() as u64,
        loss: 0.0,
        grad: vec![0.0; m],
        hess: vec![0.0; m * m],
        bad: None,
    };
    let mut hess = Array2::<f64>::zeros((m, m));
    let mut grad = Array1::<f64>::zeros(m);
    let block_rows = NEWTON_BLOCK_ROWS.min(x.nrows()).max(1);
    let mut scaled = Array2::<f64>::zeros((block_rows, m));
    let mut residual = Array1::<f64>::zeros(block_rows);
    let mut offset = 0;
    for (xb, yb) in x
        .axis_chunks_iter(Axis(0), NEWTON_BLOCK_ROWS)
        .zip(y.axis_chunks_iter(Axis(0), NEWTON_BLOCK_ROWS))
    {
        let n = xb.nrows();
        let z = xb.dot(&coef);
        let mut scaled = scaled.slice_mut(s![..n, ..]);
        let mut residual = residual.slice_mut(s![..n]);
        for i in 0..n {
            let (zi, yi) = (z[i] + w[d], yb[i]);
            if part.bad.is_none() && yi != 0.0 && yi != 1.0 {
                part.bad = Some(((offset + i) as u64, yi));
            }
            // log(1 + e^z) - y z, computed without overflow.
            let softplus = if zi > 0.0 {
                zi + (-zi).exp().ln_1p()
            } else {
                zi.exp().ln_1p()
            };
            part.loss += softplus - yi * zi;
            let p = 1.0 / (1.0 + (-zi).exp());
            residual[i] = p - yi;
            let root = (p * (1.0 - p)).sqrt();
            let mut out = scaled.row_mut(i);
            for (o, &v) in out.iter_mut().zip(xb.row(i)) {
                *o = root * v;
            }
            out[d] = root;
        }
        ndarray::linalg::general_mat_vec_mul(
            1.0,
            &xb.t(),
            &residual,
            1.0,
            &mut grad.slice_mut(s![..d]),
        );
        grad[d] += residual.sum();
        ndarray::linalg::general_mat_mul(1.0, &scaled.t(), &scaled, 1.0, &mut hess);
        offset += n;
    }
    // NaN anywhere makes the loss NaN: then find the first sample holding it, which comes
    // before a target other than 0 and 1 (as the messages are ordered).
    if part.loss.is_nan()
        && let Some(row) = first_nan(&x, &y)
    {
        part.bad = Some((row, f64::NAN));
    }
    part.grad = grad.to_vec();
    part.hess = hess.into_iter().collect();
    Ok(part)
}

fn merge_newton(parts: Vec<Newton>) -> Newton {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("a combine task has parts");
    for p in parts {
        if acc.bad.is_none() {
            acc.bad = p.bad.map(|(r, v)| (acc.rows + r, v));
        }
        acc.rows += p.rows;
        acc.loss += p.loss;
        acc.grad.iter_mut().zip(&p.grad).for_each(|(a, b)| *a += b);
        acc.hess.iter_mut().zip(&p.hess).for_each(|(a, b)| *a += b);
    }
    acc
}

/// Binary logistic regression with an L2 penalty (`sklearn.linear_model.LogisticRegression`
/// with its defaults `penalty='l2'`, `C=1.0`, `fit_intercept=True`): it minimises
/// `C * sum(log-loss) + |coef|^2 / 2` (the intercept not penalised) by Newton's method,
/// each iteration one tree reduction of per-chunk gradients and Hessians over the samples
/// persisted once. Targets are 0 and 1.
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    /// The inverse of the penalty's strength (scikit-learn's `C`).
    pub c: f64,
    /// At most this many Newton iterations.
    pub max_iter: usize,
    /// Converged when the largest gradient entry is at most `tol` (scikit-learn's 1e-4).
    pub tol: f64,
    fitted: Option<(Array1<f64>, f64, usize)>,
}

impl Default for LogisticRegression {
    fn default() -> Self {
        Self::new()
    }
}

impl LogisticRegression {
    /// scikit-learn's defaults: `C = 1`, `tol = 1e-4`, 100 iterations at most.
    pub fn new() -> Self {
        LogisticRegression {
            c: 1.0,
            max_iter: 100,
            tol: 1e-4,
            fitted: None,
        }
    }

    /// Fits the targets `y` (0 or 1) on the rows of `x`.
    pub fn fit(&mut self, client: &Client, x: &Array, y: &Array) -> Result<&mut Self> {
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(error(format!(
                "LogisticRegression: C {} must be finite and above 0",
                self.c
            )));
        }
        let (x, y) = samples(x, y, "LogisticRegression.fit")?;
        let x = x.persist(client)?;
        let y = y.persist(client)?;
        let (xs, ys) = (x.to_delayed::<f64>(), y.to_delayed::<f64>());
        let d = x.shape()[1];
        let m = d + 1;
        let mut w = vec![0.0; m];
        let mut n_iter = 0;
        loop {
            let parts: Vec<Delayed<Newton>> = xs
                .iter()
                .zip(&ys)
                .map(|(xb, yb)| delayed_on_rows2(newton_chunk, xb, yb, w.clone()))
                .collect();
            let step = tree(parts, merge_newton)
                .expect("samples come in chunks")
                .compute(client)?;
            if let Some((row, value)) = step.bad {
                return Err(error(if value.is_nan() {
                    format!(
                        "LogisticRegression.fit: sample {row} holds NaN (in x or y); drop or \
                         fill the missing values first"
                    )
                } else {
                    format!(
                        "LogisticRegression.fit: target {value} of sample {row} is not 0 or \
                         1; encode the two classes as 0 and 1"
                    )
                }));
            }
            // C times the loss's derivatives, plus the penalty's (not on the intercept).
            let mut grad = Array1::from(step.grad) * self.c;
            let mut hess = Array2::from_shape_vec((m, m), step.hess).expect("m x m sums") * self.c;
            for i in 0..d {
                grad[i] += w[i];
                hess[[i, i]] += 1.0;
            }
            if grad.iter().fold(0.0f64, |a, g| a.max(g.abs())) <= self.tol
                || n_iter >= self.max_iter
            {
                break;
            }
            let delta = solve_spd(&hess, &grad).ok_or_else(|| {
                error(
                    "LogisticRegression.fit: the Hessian is singular (a constant or \
                     duplicated feature with an unpenalised intercept?)",
                )
            })?;
            w.iter_mut().zip(&delta).for_each(|(wi, di)| *wi -= di);
            n_iter += 1;
        }
        let intercept = w[d];
        self.fitted = Some((Array1::from(w[..d].to_vec()), intercept, n_iter));
        Ok(self)
    }

    fn fitted(&self, who: &str) -> Result<&(Array1<f64>, f64, usize)> {
        self.fitted.as_ref().ok_or_else(|| {
            error(format!(
                "LogisticRegression.{who} before fit: call fit first"
            ))
        })
    }

    /// The probability of class 1 for each row of `x`, lazily.
    pub fn predict_proba(&self, x: &Array) -> Result<Array> {
        let (coef, intercept, _) = self.fitted("predict_proba")?;
        same_features(x, coef.len(), "LogisticRegression.predict_proba")?;
        let z = linear(x, coef, *intercept);
        Ok(1.0 / ((-z).exp() + 1.0))
    }

    /// The class (0 or 1, `i64`) of each row of `x`, lazily: 1 where the probability is
    /// above 1/2.
    pub fn predict(&self, x: &Array) -> Result<Array> {
        let (coef, intercept, _) = self.fitted("predict")?;
        same_features(x, coef.len(), "LogisticRegression.predict")?;
        Ok(linear(x, coef, *intercept).gt(0.0).astype(DType::I64))
    }

    /// The fraction of rows of `x` whose predicted class is `y`'s.
    pub fn score(&self, client: &Client, x: &Array, y: &Array) -> Result<f64> {
        let predicted = self.predict(x)?;
        let (_, y) = samples(x, y, "LogisticRegression.score")?;
        predicted
            .astype(DType::F64)
            .eq(&y)
            .astype(DType::F64)
            .mean()
            .compute_scalar::<f64>(client)
    }

    /// The coefficients (`coef_`, one per feature), once fitted.
    pub fn coef(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.0)
    }

    /// The intercept (`intercept_`), once fitted.
    pub fn intercept(&self) -> Option<f64> {
        self.fitted.as_ref().map(|f| f.1)
    }

    /// The Newton iterations run (`n_iter_`).
    pub fn n_iter(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cholesky_solves_and_refuses_singular() {
        let a = array![[4.0, 2.0], [2.0, 3.0]];
        let x = solve_spd(&a, &array![2.0, 1.0]).unwrap();
        assert!(
            (a.dot(&x) - array![2.0, 1.0])
                .iter()
                .all(|v| v.abs() < 1e-12)
        );
        assert!(solve_spd(&array![[1.0, 1.0], [1.0, 1.0]], &array![1.0, 1.0]).is_none());
    }

    #[test]
    fn merged_grams_are_the_sums_of_all_rows() {
        let x = array![[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]];
        let y = array![1.0, 0.0, 2.0];
        let whole = gram_chunk(x.view(), y.clone().into_dyn()).unwrap();
        let a = gram_chunk(
            x.slice(ndarray::s![..1, ..]),
            y.slice(ndarray::s![..1]).to_owned().into_dyn(),
        )
        .unwrap();
        let b = gram_chunk(
            x.slice(ndarray::s![1.., ..]),
            y.slice(ndarray::s![1..]).to_owned().into_dyn(),
        )
        .unwrap();
        let merged = merge_grams(vec![a, b]);
        assert_eq!(merged.xtx, whole.xtx);
        assert_eq!(merged.xty, whole.xty);
        assert_eq!(merged.rows, 3);
    }

    #[test]
    fn a_newton_step_sums_each_rows_loss_gradient_and_hessian() {
        // More rows than a block, so the blocks' sums are checked too.
        let n = 1300;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| ((i * 5 + j * 7) % 13) as f64 / 4.0 - 1.5);
        let y = Array1::from_shape_fn(n, |i| (i % 3 == 0) as u8 as f64);
        let w = vec![0.3, -0.2, 0.1, 0.05];
        let part = newton_chunk(x.view(), (y.clone().into_dyn(), w.clone())).unwrap();
        let (mut loss, mut grad, mut hess) = (0.0, [0.0; 4], [[0.0; 4]; 4]);
        for (row, &t) in x.outer_iter().zip(&y) {
            let r = [row[0], row[1], row[2], 1.0];
            let z: f64 = r.iter().zip(&w).map(|(a, b)| a * b).sum();
            loss += (1.0 + z.exp()).ln() - t * z;
            let p = 1.0 / (1.0 + (-z).exp());
            for (i, (g, h)) in grad.iter_mut().zip(hess.iter_mut()).enumerate() {
                *g += (p - t) * r[i];
                for (hj, rj) in h.iter_mut().zip(r) {
                    *hj += p * (1.0 - p) * r[i] * rj;
                }
            }
        }
        assert!((part.loss - loss).abs() < 1e-9 * loss.abs());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * (1.0 + b.abs());
        assert!(part.grad.iter().zip(grad).all(|(&a, b)| close(a, b)));
        assert!(
            part.hess
                .iter()
                .zip(hess.iter().flatten())
                .all(|(&a, &b)| close(a, b))
        );
        assert_eq!(part.bad, None);
        // The first target other than 0 and 1, past the first block; NaN comes first.
        let mut bad = y.clone();
        bad[1000] = 2.0;
        bad[1100] = 3.0;
        let part = newton_chunk(x.view(), (bad.clone().into_dyn(), w.clone())).unwrap();
        assert_eq!(part.bad, Some((1000, 2.0)));
        let mut with_nan = x.clone();
        with_nan[[1200, 2]] = f64::NAN;
        let part = newton_chunk(with_nan.view(), (bad.into_dyn(), w)).unwrap();
        assert!(matches!(part.bad, Some((1200, v)) if v.is_nan()));
    }
}
