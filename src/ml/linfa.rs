//! `linfa` models as [`Estimator`]s (the `linfa` feature): decision trees ready to
//! search, and the conversions to write an [`Estimator`] for any other `linfa` model
//! (`linfa` works on `ndarray` 0.16; both are re-exported here, as [`linfa`] and
//! [`ndarray16`]).
//!
//! ```
//! use mpidask::ml::estimator::Estimator;
//! use mpidask::ml::linfa::{DecisionTreeClassifier, dataset};
//! let x = ndarray::array![[0.0], [1.0], [2.0], [3.0]];
//! let y = [0usize, 0, 1, 1];
//! let tree = DecisionTreeClassifier { max_depth: Some(1), ..Default::default() };
//! let model = tree.fit(x.view(), &y).unwrap();
//! assert_eq!(DecisionTreeClassifier::predict(&model, x.view()).unwrap(), y);
//! assert_eq!(dataset(x.view(), &y).records.nrows(), 4);
//! ```

use super::estimator::Estimator;
use linfa::prelude::{Fit, Predict};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub use ::linfa;
pub use ndarray16;

/// The rows of `x` as `linfa`'s records (a copy in `ndarray` 0.16).
pub fn records(x: ArrayView2<f64>) -> ndarray16::Array2<f64> {
    ndarray16::Array2::from_shape_fn(x.dim(), |(i, j)| x[[i, j]])
}

/// The rows of `x` and their targets `y` as a `linfa` data set.
pub fn dataset<L: linfa::Label>(
    x: ArrayView2<f64>,
    y: &[L],
) -> linfa::Dataset<f64, L, ndarray16::Ix1> {
    linfa::Dataset::new(records(x), ndarray16::Array1::from(y.to_vec()))
}

/// How a tree measures a split's impurity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Criterion {
    /// Gini impurity (scikit-learn's default).
    #[default]
    Gini,
    /// Entropy.
    Entropy,
}

/// `linfa_trees::DecisionTree` classification (labels 0, 1, 2, ...) with scikit-learn's
/// parameter names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionTreeClassifier {
    /// The deepest a leaf may be (`None`: no limit).
    pub max_depth: Option<usize>,
    /// The fewest samples a node needs to be split (at least 2).
    pub min_samples_split: usize,
    /// The fewest samples each side of a split must keep (at least 1).
    pub min_samples_leaf: usize,
    /// The impurity measure.
    pub criterion: Criterion,
}

impl Default for DecisionTreeClassifier {
    fn default() -> Self {
        DecisionTreeClassifier {
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            criterion: Criterion::Gini,
        }
    }
}

impl Estimator for DecisionTreeClassifier {
    type Target = usize;
    type Model = linfa_trees::DecisionTree<f64, usize>;

    fn fit(&self, x: ArrayView2<f64>, y: &[usize]) -> Result<Self::Model, String> {
        if x.nrows() == 0 {
            return Err("a decision tree needs at least one sample".into());
        }
        let quality = match self.criterion {
            Criterion::Gini => linfa_trees::SplitQuality::Gini,
            Criterion::Entropy => linfa_trees::SplitQuality::Entropy,
        };
        linfa_trees::DecisionTree::params()
            .max_depth(self.max_depth)
            .min_weight_split(self.min_samples_split as f32)
            .min_weight_leaf(self.min_samples_leaf as f32)
            .split_quality(quality)
            .fit(&dataset(x, y))
            .map_err(|e| format!("linfa decision tree ({self:?}): {e}"))
    }

    fn predict(model: &Self::Model, x: ArrayView2<f64>) -> Result<Vec<usize>, String> {
        Ok(model.predict(&records(x)).to_vec())
    }
}
