//! What a single-node model gives the model selection and the post-fit wrapper: an
//! [`Estimator`] fitted in one task on rows in memory, an optional preprocessing
//! [`Transformer`] fitted on the same rows before it, and the [`Target`] type they
//! predict with its default score.

use crate::Client;
use crate::array::{Array, DType, Element};
use crate::error::Result;
use ndarray::{Array2, ArrayView2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// The values a model predicts: class labels (scored by accuracy) or numbers (scored by
/// the coefficient of determination, R^2), as scikit-learn's classifiers' and regressors'
/// `score`.
pub trait Target: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The array element a prediction becomes.
    type Element: Element;
    /// The default score of `predicted` against `truth` (higher is better).
    fn score(predicted: &[Self], truth: &[Self]) -> f64;
    /// A prediction as an array element.
    fn into_element(self) -> Self::Element;
    /// The targets held in the 1-D array `y`, computed.
    fn from_array(client: &Client, y: &Array) -> Result<Vec<Self>>;
}

fn accuracy<T: PartialEq>(predicted: &[T], truth: &[T]) -> f64 {
    let right = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    right as f64 / truth.len().max(1) as f64
}

fn one_dimensional(y: &Array, who: &str) -> Result<()> {
    y.check()?;
    if y.ndim() != 1 {
        return Err(super::rows::error(format!(
            "{who} targets must be a 1-D array, got shape {:?}",
            y.shape()
        )));
    }
    Ok(())
}

impl Target for usize {
    type Element = i64;
    fn score(predicted: &[Self], truth: &[Self]) -> f64 {
        accuracy(predicted, truth)
    }
    fn into_element(self) -> i64 {
        self as i64
    }
    fn from_array(client: &Client, y: &Array) -> Result<Vec<Self>> {
        one_dimensional(y, "class")?;
        let values = y.astype(DType::I64).compute::<i64>(client)?;
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                usize::try_from(v).map_err(|_| {
                    super::rows::error(format!(
                        "class label {v} (sample {i}) is negative; labels are 0, 1, 2, ..."
                    ))
                })
            })
            .collect()
    }
}

impl Target for i64 {
    type Element = i64;
    fn score(predicted: &[Self], truth: &[Self]) -> f64 {
        accuracy(predicted, truth)
    }
    fn into_element(self) -> i64 {
        self
    }
    fn from_array(client: &Client, y: &Array) -> Result<Vec<Self>> {
        one_dimensional(y, "class")?;
        Ok(y.astype(DType::I64)
            .compute::<i64>(client)?
            .into_iter()
            .collect())
    }
}

impl Target for f64 {
    type Element = f64;
    /// R^2 (scikit-learn's `r2_score`: 1 for a perfect fit; 0 for constant truth matched
    /// exactly is scikit-learn's 1, and not matched its 0).
    fn score(predicted: &[Self], truth: &[Self]) -> f64 {
        let n = truth.len().max(1) as f64;
        let mean = truth.iter().sum::<f64>() / n;
        let residual: f64 = predicted
            .iter()
            .zip(truth)
            .map(|(p, t)| (t - p).powi(2))
            .sum();
        let spread: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
        if spread == 0.0 {
            return if residual == 0.0 { 1.0 } else { 0.0 };
        }
        1.0 - residual / spread
    }
    fn into_element(self) -> f64 {
        self
    }
    fn from_array(client: &Client, y: &Array) -> Result<Vec<Self>> {
        one_dimensional(y, "regression")?;
        Ok(y.astype(DType::F64)
            .compute::<f64>(client)?
            .into_iter()
            .collect())
    }
}

/// A model's hyper-parameters, fitted in one task on rows in memory: a candidate of
/// [`GridSearchCV`](super::model_selection::GridSearchCV) or the model of
/// [`ParallelPostFit`](super::wrappers::ParallelPostFit). Implement it for a struct of
/// parameters and call any single-node library (`linfa`, with the `linfa` feature's
/// [`ml::linfa`](super::linfa) helpers, or your own code) in `fit` and `predict`.
///
/// ```
/// use mpidask::ml::estimator::Estimator;
/// use ndarray::ArrayView2;
/// /// Predicts the mean of the training targets plus `shift`.
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// struct Mean { shift: f64 }
/// impl Estimator for Mean {
///     type Target = f64;
///     type Model = f64;
///     fn fit(&self, _x: ArrayView2<f64>, y: &[f64]) -> Result<f64, String> {
///         Ok(y.iter().sum::<f64>() / y.len() as f64 + self.shift)
///     }
///     fn predict(model: &f64, x: ArrayView2<f64>) -> Result<Vec<f64>, String> {
///         Ok(vec![*model; x.nrows()])
///     }
/// }
/// ```
pub trait Estimator: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// What it predicts.
    type Target: Target;
    /// The fitted model.
    type Model: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Fits a model on the rows of `x` and their targets `y`.
    fn fit(
        &self,
        x: ArrayView2<f64>,
        y: &[Self::Target],
    ) -> std::result::Result<Self::Model, String>;
    /// The model's predictions for the rows of `x`.
    fn predict(
        model: &Self::Model,
        x: ArrayView2<f64>,
    ) -> std::result::Result<Vec<Self::Target>, String>;
}

/// A preprocessing step before an [`Estimator`] (a pipeline's first stage): fitted on the
/// training rows, applied to every row the model sees. `()` is the step that changes
/// nothing. Candidates of a search that share a step share its fit on each fold.
pub trait Transformer:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The fitted step.
    type Fitted: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// `true` only for the step that changes nothing (its work is skipped).
    const IDENTITY: bool = false;
    /// Fits the step on the rows of `x`.
    fn fit(&self, x: ArrayView2<f64>) -> std::result::Result<Self::Fitted, String>;
    /// The rows of `x` transformed.
    fn transform(
        fitted: &Self::Fitted,
        x: ArrayView2<f64>,
    ) -> std::result::Result<Array2<f64>, String>;
}

impl Transformer for () {
    type Fitted = ();
    const IDENTITY: bool = true;
    fn fit(&self, _x: ArrayView2<f64>) -> std::result::Result<(), String> {
        Ok(())
    }
    fn transform(_: &(), x: ArrayView2<f64>) -> std::result::Result<Array2<f64>, String> {
        Ok(x.to_owned())
    }
}

/// Standardisation of each feature to zero mean and unit variance (scikit-learn's
/// `StandardScaler` as a pipeline step, on rows in memory).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Standardize;

impl Transformer for Standardize {
    /// Per feature: mean and scale.
    type Fitted = (Vec<f64>, Vec<f64>);
    fn fit(&self, x: ArrayView2<f64>) -> std::result::Result<Self::Fitted, String> {
        let n = x.nrows().max(1) as f64;
        let mean: Vec<f64> = x.columns().into_iter().map(|c| c.sum() / n).collect();
        let scale = x
            .columns()
            .into_iter()
            .zip(&mean)
            .map(|(c, m)| {
                let var = c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
                if var == 0.0 { 1.0 } else { var.sqrt() }
            })
            .collect();
        Ok((mean, scale))
    }
    fn transform(
        (mean, scale): &Self::Fitted,
        x: ArrayView2<f64>,
    ) -> std::result::Result<Array2<f64>, String> {
        if x.ncols() != mean.len() {
            return Err(format!(
                "Standardize was fitted on {} features; these rows have {}",
                mean.len(),
                x.ncols()
            ));
        }
        let mut out = x.to_owned();
        for (mut column, (m, s)) in out.columns_mut().into_iter().zip(mean.iter().zip(scale)) {
            column.mapv_inplace(|v| (v - m) / s);
        }
        Ok(out)
    }
}

/// A fitted pipeline: its step and its model.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FittedPipeline<S: Transformer, E: Estimator> {
    /// The features it was fitted on.
    pub n_features: usize,
    /// The fitted step.
    pub step: S::Fitted,
    /// The fitted model.
    pub model: E::Model,
}

impl<S: Transformer, E: Estimator> FittedPipeline<S, E> {
    /// The step and then the model fitted on `x` and `y`.
    pub fn fit(
        step: &S,
        estimator: &E,
        x: ArrayView2<f64>,
        y: &[E::Target],
    ) -> std::result::Result<Self, String> {
        let fitted = step.fit(x)?;
        let model = if S::IDENTITY {
            estimator.fit(x, y)?
        } else {
            estimator.fit(S::transform(&fitted, x)?.view(), y)?
        };
        Ok(FittedPipeline {
            n_features: x.ncols(),
            step: fitted,
            model,
        })
    }

    /// The predictions for the rows of `x`.
    pub fn predict(&self, x: ArrayView2<f64>) -> std::result::Result<Vec<E::Target>, String> {
        if x.ncols() != self.n_features {
            return Err(format!(
                "the model was fitted on {} features; these rows have {}",
                self.n_features,
                x.ncols()
            ));
        }
        if S::IDENTITY {
            E::predict(&self.model, x)
        } else {
            E::predict(&self.model, S::transform(&self.step, x)?.view())
        }
    }
}

/// Runs `f`, a panic in it becoming its error (user code runs inside these tasks), with
/// the panic's location when the panic hook recorded it.
pub(crate) fn guarded<R>(
    what: &str,
    f: impl FnOnce() -> std::result::Result<R, String>,
) -> std::result::Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|panic| Err(format!("{what} {}", crate::task::panic_message(&*panic))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_scikit_learns() {
        assert_eq!(usize::score(&[1, 0, 1, 1], &[1, 1, 1, 0]), 0.5);
        assert_eq!(f64::score(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert!((f64::score(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0])).abs() < 1e-15);
        assert_eq!(f64::score(&[1.0], &[1.0]), 1.0);
    }

    #[test]
    fn standardize_centres_and_scales() {
        let x = ndarray::array![[1.0, 5.0], [3.0, 5.0]];
        let fitted = Standardize.fit(x.view()).unwrap();
        assert_eq!(fitted, (vec![2.0, 5.0], vec![1.0, 1.0]));
        let z = Standardize::transform(&fitted, x.view()).unwrap();
        assert_eq!(z, ndarray::array![[-1.0, 0.0], [1.0, 0.0]]);
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let e = guarded::<()>("fit", || panic!("boom")).unwrap_err();
        assert_eq!(e, "fit panicked: boom");
    }
}
