//! A model fitted on one node applied to a chunked array (`dask_ml.wrappers.
//! ParallelPostFit`): the fitted model is broadcast to the workers once and each row chunk
//! is predicted where it lies, lazily.

use super::estimator::{Estimator, FittedPipeline, Target, Transformer, guarded};
use super::rows::{as_f64, error, row_chunked, same_features};
use crate::Client;
use crate::array::Array;
use crate::client::Future;
use crate::collections::array::from_delayed_chunks;
use crate::delayed::{Delayed, try_delayed};
use crate::error::Result;
use ndarray::{ArrayD, Ix2, IxDyn};

/// A fitted model (after an optional preprocessing step, `()` for none) held on the
/// workers, predicting chunked arrays one row chunk per task.
///
/// ```
/// use mpidask::array;
/// use mpidask::ml::estimator::Estimator;
/// use mpidask::ml::wrappers::ParallelPostFit;
/// use ndarray::ArrayView2;
/// /// The class of a point: 1 when its first feature exceeds the threshold.
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// struct Threshold;
/// impl Estimator for Threshold {
///     type Target = usize;
///     type Model = f64;
///     fn fit(&self, _x: ArrayView2<f64>, _y: &[usize]) -> Result<f64, String> {
///         Ok(0.5)
///     }
///     fn predict(model: &f64, x: ArrayView2<f64>) -> Result<Vec<usize>, String> {
///         Ok(x.column(0).iter().map(|&v| usize::from(v > *model)).collect())
///     }
/// }
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let model = ParallelPostFit::<(), Threshold>::new(client, 0.5, 1).unwrap();
///     let x = array::arange(0.0, 1.0, 0.25, 2).reshape(&[4, 1]);
///     let classes = model.predict(&x).unwrap().compute::<i64>(client).unwrap();
///     assert_eq!(classes.iter().copied().collect::<Vec<_>>(), vec![0, 0, 0, 1]);
/// });
/// ```
pub struct ParallelPostFit<S: Transformer, E: Estimator> {
    fitted: Future<FittedPipeline<S, E>>,
    /// The features it was fitted on, when known on the client.
    n_features: Option<usize>,
}

impl<E: Estimator> ParallelPostFit<(), E> {
    /// A model fitted elsewhere (on `n_features` features), broadcast to the workers.
    pub fn new(client: &Client, model: E::Model, n_features: usize) -> Result<Self> {
        let fitted = FittedPipeline::<(), E> {
            n_features,
            step: (),
            model,
        };
        Ok(ParallelPostFit {
            fitted: client.scatter_broadcast(fitted)?,
            n_features: Some(n_features),
        })
    }
}

fn fit_task<S: Transformer, E: Estimator>(
    x: ArrayD<f64>,
    y: Vec<E::Target>,
    step: S,
    estimator: E,
) -> std::result::Result<FittedPipeline<S, E>, String> {
    let x = x
        .into_dimensionality::<Ix2>()
        .map_err(|e| format!("samples not 2-D: {e}"))?;
    guarded("fit", || {
        FittedPipeline::fit(&step, &estimator, x.view(), &y)
    })
}

fn predict_task<S: Transformer, E: Estimator>(
    x: ArrayD<f64>,
    fitted: FittedPipeline<S, E>,
) -> std::result::Result<ArrayD<<E::Target as Target>::Element>, String> {
    let x = x
        .into_dimensionality::<Ix2>()
        .map_err(|e| format!("a row chunk that is not 2-D: {e}"))?;
    let predicted = guarded("predict", || fitted.predict(x.view()))?;
    if predicted.len() != x.nrows() {
        return Err(format!(
            "predict gave {} values for {} rows",
            predicted.len(),
            x.nrows()
        ));
    }
    let values = predicted.into_iter().map(Target::into_element).collect();
    ArrayD::from_shape_vec(IxDyn(&[x.nrows()]), values).map_err(|e| e.to_string())
}

impl<S: Transformer, E: Estimator> ParallelPostFit<S, E> {
    /// Fits the step and the estimator in one task on the samples `x` (2-D) and `y`
    /// (1-D): a sample that fits one task.
    pub fn fit(client: &Client, step: S, estimator: E, x: &Array, y: &Array) -> Result<Self> {
        let who = "ParallelPostFit.fit";
        let x = as_f64(&row_chunked(x, who)?);
        let y = E::Target::from_array(client, y).map_err(|e| error(format!("{who}: {e}")))?;
        if y.len() != x.shape()[0] {
            return Err(error(format!(
                "{who}: {} samples need as many targets, got {}",
                x.shape()[0],
                y.len()
            )));
        }
        let n_features = x.shape()[1];
        let samples = x.compute::<f64>(client)?;
        Ok(ParallelPostFit {
            fitted: client.try_submit(fit_task::<S, E>, (samples, y, step, estimator)),
            n_features: Some(n_features),
        })
    }

    /// A fitted pipeline held by `fitted` (the search's refit).
    pub(crate) fn from_future(fitted: Future<FittedPipeline<S, E>>, n_features: usize) -> Self {
        ParallelPostFit {
            fitted,
            n_features: Some(n_features),
        }
    }

    /// The predictions for the rows of `x` (2-D), lazily: one task per row chunk, a 1-D
    /// array in `x`'s row chunks (`i64` classes or `f64` values).
    pub fn predict(&self, x: &Array) -> Result<Array> {
        let who = "ParallelPostFit.predict";
        let x = as_f64(&row_chunked(x, who)?);
        if let Some(n) = self.n_features {
            same_features(&x, n, who)?;
        }
        let model = Delayed::from_future(self.fitted.clone());
        let parts: Vec<Delayed<ArrayD<<E::Target as Target>::Element>>> = x
            .to_delayed::<f64>()
            .iter()
            .map(|chunk| try_delayed(predict_task::<S, E>, (chunk, &model)))
            .collect();
        Ok(from_delayed_chunks(&parts, vec![x.chunks()[0].clone()]))
    }

    /// The default score (accuracy for classes, R^2 for values) of the predictions for
    /// `x` against `y`, computed.
    pub fn score(&self, client: &Client, x: &Array, y: &Array) -> Result<f64> {
        let who = "ParallelPostFit.score";
        let truth = E::Target::from_array(client, y).map_err(|e| error(format!("{who}: {e}")))?;
        if truth.len() != x.shape().first().copied().unwrap_or(0) {
            return Err(error(format!(
                "{who}: x of shape {:?} and {} targets",
                x.shape(),
                truth.len()
            )));
        }
        let predicted = self.predict(x)?;
        let values = E::Target::from_array(client, &predicted)?;
        Ok(E::Target::score(&values, &truth))
    }

    /// The fitted pipeline, fetched to the client.
    pub fn fitted(&self) -> Result<FittedPipeline<S, E>> {
        self.fitted.result()
    }
}
