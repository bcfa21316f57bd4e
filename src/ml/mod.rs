//! Machine learning over chunked arrays, as dask-ml: estimators fitted by reductions over
//! the chunks where they lie, and transforms that stay lazy.
//!
//! * [`preprocessing`]: `StandardScaler`, `MinMaxScaler` (fitted by one tree reduction of
//!   per-chunk column statistics), `OneHotEncoder` of integer columns, and
//!   `train_test_split` (rows shuffled and split within each row chunk, from a seed, the
//!   same at any rank count, as dask-ml's `blockwise` split).
//! * [`cluster`]: `KMeans` with `k-means||` initialisation and Lloyd iterations of one task
//!   per chunk merged by a tree reduction.
//! * [`linear_model`]: `LinearRegression` (normal equations of one Gram reduction) and
//!   `LogisticRegression` (Newton's method with an L2 penalty, one reduction of gradients
//!   and Hessians per iteration).
//! * [`decomposition`]: `PCA`, by TSQR of the centred data or by the randomised SVD.
//! * [`model_selection`]: `GridSearchCV` and `RandomizedSearchCV` over any [`estimator`]
//!   (a single-node model fitted in one task, e.g. from `linfa`): the samples broadcast
//!   once, one task per (candidate, fold), a shared preprocessing step fitted once per
//!   fold; [`wrappers::ParallelPostFit`] predicts chunked arrays with a fitted model.

pub mod cluster;
pub mod decomposition;
pub mod estimator;
pub mod linear_model;
#[cfg(feature = "linfa")]
pub mod linfa;
mod lloyd;
pub mod model_selection;
pub mod preprocessing;
mod rows;
pub mod wrappers;
