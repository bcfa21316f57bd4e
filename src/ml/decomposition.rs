//! Principal component analysis over a row-chunked array, as `dask_ml.decomposition.PCA`:
//! the features' means in one tree reduction, then the SVD of the centred data by TSQR (the
//! small `R` factor decomposed on the client) or by the randomised range finder of
//! `svd_compressed`; `transform` is a lazy product with the components.

use super::preprocessing::{column_stats, row_of};
use super::rows::{as_f64, error, row_chunked, same_features};
use crate::Client;
use crate::array::{self, Array, linalg};
use crate::error::Result;
use ndarray::{Array1, Array2, Axis, Ix2, s};

/// How [`PCA`] decomposes the centred data.
#[derive(Debug, Clone, PartialEq)]
pub enum SvdSolver {
    /// The exact SVD, through TSQR: needs at least as many samples as features
    /// (scikit-learn's `svd_solver="full"`; dask-ml's `"tsqr"`).
    Full,
    /// The randomised SVD of Halko et al. (as [`linalg::svd_compressed`]): a basis of
    /// `n_components + n_oversamples` columns refined by `n_power_iter` power iterations,
    /// from `seed` (the same result at any rank count). Exact when the centred data has
    /// rank at most `n_components + n_oversamples`.
    Randomized {
        /// Extra basis columns (scikit-learn's 10).
        n_oversamples: usize,
        /// Power iterations (scikit-learn's `"auto"` gives 4 to 7).
        n_power_iter: usize,
        /// The Gaussian matrix's seed.
        seed: u64,
    },
}

/// Principal component analysis (`sklearn.decomposition.PCA`, `dask_ml.decomposition.PCA`).
///
/// The signs of the components follow scikit-learn's rule (each component's largest
/// entry in absolute value is positive). NaN in the input is an error.
///
/// ```
/// use mpidask::array;
/// use mpidask::ml::decomposition::PCA;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     // Points on the line y = 2x: one component carries all the variance.
///     let v = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[30, 2]), |i| {
///         (i[0] as f64) * (1.0 + i[1] as f64)
///     });
///     let x = array::from_array(&v, &[10, 2]);
///     let mut pca = PCA::new(Some(1));
///     pca.fit(client, &x).unwrap();
///     assert!((pca.explained_variance_ratio().unwrap()[0] - 1.0).abs() < 1e-12);
///     let c = pca.components().unwrap();
///     assert!((c[[0, 1]] / c[[0, 0]] - 2.0).abs() < 1e-12);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct PCA {
    /// Components to keep (`None`: all, `min(n_samples, n_features)`).
    pub n_components: Option<usize>,
    /// Scale the transformed components to unit variance (scikit-learn's `whiten`).
    pub whiten: bool,
    /// How the SVD is computed.
    pub svd_solver: SvdSolver,
    fitted: Option<Fitted>,
}

#[derive(Debug, Clone)]
struct Fitted {
    mean: Array1<f64>,
    /// `k` x `d`.
    components: Array2<f64>,
    explained_variance: Array1<f64>,
    explained_variance_ratio: Array1<f64>,
    singular_values: Array1<f64>,
    noise_variance: f64,
    n_samples: usize,
}

impl PCA {
    /// A PCA keeping `n_components` (`None`: all) by the exact solver, unwhitened.
    pub fn new(n_components: Option<usize>) -> Self {
        PCA {
            n_components,
            whiten: false,
            svd_solver: SvdSolver::Full,
            fitted: None,
        }
    }

    /// Fits the components of `x` (2-D, samples x features).
    pub fn fit(&mut self, client: &Client, x: &Array) -> Result<&mut Self> {
        let who = "PCA.fit";
        let x = as_f64(&row_chunked(x, who)?);
        let (n, d) = (x.shape()[0], x.shape()[1]);
        let most = n.min(d);
        let k = self.n_components.unwrap_or(most);
        if k == 0 || k > most {
            return Err(error(format!(
                "{who}: n_components = {k} must be between 1 and min(n_samples, n_features) \
                 = {most} for an array of shape {:?}",
                x.shape()
            )));
        }
        if n < 2 {
            return Err(error(format!(
                "{who}: needs at least 2 samples to estimate variances, got shape {:?}",
                x.shape()
            )));
        }
        if self.svd_solver == SvdSolver::Full && n < d {
            return Err(error(format!(
                "{who}: the full solver (TSQR) needs at least as many samples as features, \
                 got shape {:?}; use SvdSolver::Randomized",
                x.shape()
            )));
        }
        let stats = column_stats(client, &x, who)?;
        let mean = Array1::from(stats.mean.clone());
        let ddof1 = (n - 1) as f64;
        let total_var: f64 = stats.m2.iter().sum::<f64>() / ddof1;
        let centred = &x - &row_of(&mean);
        let small = match &self.svd_solver {
            SvdSolver::Full => linalg::tsqr(&centred).1,
            SvdSolver::Randomized {
                n_oversamples,
                n_power_iter,
                seed,
            } => {
                let l = (k + n_oversamples).min(most);
                let q = linalg::range_finder(&centred, l, *n_power_iter, *seed);
                q.t().dot(&centred)
            }
        };
        let small = small
            .compute::<f64>(client)?
            .into_dimensionality::<Ix2>()
            .map_err(|e| error(format!("{who}: the reduced matrix is not 2-D: {e}")))?;
        let (_, s, mut vt) = linalg::svd_in_memory(small.view())
            .map_err(|e| error(format!("{who}: the SVD of the reduced matrix failed: {e}")))?;
        flip_signs(&mut vt);
        let variances = s.mapv(|v| v * v / ddof1);
        let explained_variance = variances.slice(s![..k]).to_owned();
        let kept: f64 = explained_variance.sum();
        let noise_variance = match self.svd_solver {
            // scikit-learn's: the mean of the variances left out.
            SvdSolver::Full if k < most => variances.slice(s![k..]).mean().unwrap_or(0.0),
            SvdSolver::Randomized { .. } if k < most => (total_var - kept) / (most - k) as f64,
            _ => 0.0,
        };
        self.fitted = Some(Fitted {
            mean,
            components: vt.slice(s![..k, ..]).to_owned(),
            explained_variance_ratio: if total_var > 0.0 {
                &explained_variance / total_var
            } else {
                Array1::zeros(k)
            },
            explained_variance,
            singular_values: s.slice(s![..k]).to_owned(),
            noise_variance,
            n_samples: n,
        });
        Ok(self)
    }

    fn fitted(&self, who: &str) -> Result<&Fitted> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("PCA.{who} before fit: call fit first")))
    }

    /// The rows of `x` in the components' coordinates (`n` x `k`), lazily: `(x - mean_)`
    /// times the components, divided by their standard deviations when whitening.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("transform")?;
        same_features(x, f.mean.len(), "PCA.transform")?;
        let mut basis = f.components.t().to_owned();
        if self.whiten {
            let spread = f.explained_variance.mapv(f64::sqrt);
            basis /= &spread.insert_axis(Axis(0));
        }
        Ok((&as_f64(x) - &row_of(&f.mean)).dot(&matrix(&basis)))
    }

    /// [`fit`](Self::fit), then [`transform`](Self::transform) of the same rows.
    pub fn fit_transform(&mut self, client: &Client, x: &Array) -> Result<Array> {
        self.fit(client, x)?;
        self.transform(x)
    }

    /// Rows of `k` component coordinates back in the features' space, lazily.
    pub fn inverse_transform(&self, z: &Array) -> Result<Array> {
        let f = self.fitted("inverse_transform")?;
        same_features(z, f.components.nrows(), "PCA.inverse_transform")?;
        let mut basis = f.components.clone();
        if self.whiten {
            let spread = f.explained_variance.mapv(f64::sqrt);
            basis *= &spread.insert_axis(Axis(1));
        }
        Ok(&as_f64(z).dot(&matrix(&basis)) + &row_of(&f.mean))
    }

    /// The principal axes, `n_components` x `n_features` (`components_`).
    pub fn components(&self) -> Option<&Array2<f64>> {
        self.fitted.as_ref().map(|f| &f.components)
    }

    /// The variance along each component (`explained_variance_`, `ddof = 1`).
    pub fn explained_variance(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.explained_variance)
    }

    /// Each component's share of the total variance (`explained_variance_ratio_`).
    pub fn explained_variance_ratio(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.explained_variance_ratio)
    }

    /// The singular values of the centred data (`singular_values_`).
    pub fn singular_values(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.singular_values)
    }

    /// The features' means (`mean_`).
    pub fn mean(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.mean)
    }

    /// The variance left out, per discarded dimension (`noise_variance_`).
    pub fn noise_variance(&self) -> Option<f64> {
        self.fitted.as_ref().map(|f| f.noise_variance)
    }

    /// The samples it was fitted on (`n_samples_`).
    pub fn n_samples(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.n_samples)
    }
}

/// scikit-learn's `svd_flip(u_based_decision=False)`: each row of `vt` signed so that its
/// largest entry in absolute value is positive.
fn flip_signs(vt: &mut Array2<f64>) {
    for mut row in vt.rows_mut() {
        let largest = row.iter().copied().fold(
            0.0f64,
            |best, v| if v.abs() > best.abs() { v } else { best },
        );
        if largest < 0.0 {
            row.mapv_inplace(|v| -v);
        }
    }
}

/// A small matrix as a one-chunk array.
fn matrix(m: &Array2<f64>) -> Array {
    let (r, c) = m.dim();
    array::from_array(&m.clone().into_dyn(), &[r.max(1), c.max(1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_follow_the_largest_entry() {
        let mut vt = ndarray::array![[0.1, -0.9, 0.3], [0.5, 0.2, -0.1]];
        flip_signs(&mut vt);
        assert_eq!(vt, ndarray::array![[-0.1, 0.9, -0.3], [0.5, 0.2, -0.1]]);
    }
}
