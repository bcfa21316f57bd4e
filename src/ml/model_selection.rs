//! Hyper-parameter search by cross-validation, as `dask_ml.model_selection`'s
//! `GridSearchCV` and `RandomizedSearchCV`: the samples are broadcast to every worker once
//! (`MPI_Ibcast`), each (candidate, fold) pair is one task, a preprocessing step shared by
//! several candidates is fitted once per fold (dask-ml's pipeline-aware search), and the
//! best candidate is refitted on all the samples, where it stays for `predict`.

use super::estimator::{Estimator, FittedPipeline, Target, Transformer, guarded};
use super::rows::{as_f64, error, row_chunked};
use super::wrappers::ParallelPostFit;
use crate::Client;
use crate::array::Array;
use crate::client::Future;
use crate::error::Result;
use ndarray::{Array2, Axis, Ix2};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// K-fold cross-validation (scikit-learn's `KFold`): `n_splits` consecutive folds of the
/// samples, the first `n % n_splits` one sample longer, each the test rows once while
/// the others train; `shuffle` (a seed) permutes the samples first. Train rows are in
/// their order in the data, as scikit-learn's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KFold {
    /// Folds (at least 2).
    pub n_splits: usize,
    /// Permute the samples first, from this seed.
    pub shuffle: Option<u64>,
}

impl KFold {
    /// `n_splits` folds of the samples in order.
    pub fn new(n_splits: usize) -> Self {
        KFold {
            n_splits,
            shuffle: None,
        }
    }

    /// The test rows of fold `fold` of `n` samples.
    pub fn test_rows(&self, n: usize, fold: usize) -> Vec<usize> {
        let k = self.n_splits.max(1);
        let (size, longer) = (n / k, n % k);
        let start = fold * size + fold.min(longer);
        let len = size + usize::from(fold < longer);
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = self.shuffle {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            for i in (1..n).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
        }
        order[start.min(n)..(start + len).min(n)].to_vec()
    }

    /// The (train, test) rows of every fold of `n` samples.
    pub fn split(&self, n: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
        (0..self.n_splits)
            .map(|fold| {
                let test = self.test_rows(n, fold);
                let mut held = vec![false; n];
                test.iter().for_each(|&i| held[i] = true);
                ((0..n).filter(|&i| !held[i]).collect(), test)
            })
            .collect()
    }
}

/// The samples every fold task reads (broadcast once).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Samples<T: Target> {
    x: Array2<f64>,
    y: Vec<T>,
}

/// One fold's rows, after the candidate's preprocessing step.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Fold<T: Target> {
    x_train: Array2<f64>,
    y_train: Vec<T>,
    x_test: Array2<f64>,
    y_test: Vec<T>,
}

/// What one (candidate, fold) task found: its test score and how long fit and score
/// took, or its error.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FoldScore {
    score: f64,
    fit_seconds: f64,
    score_seconds: f64,
}

type Outcome<T> = std::result::Result<T, String>;

/// A fold prepared by a task.
type PreparedFold<T> = Future<Outcome<Fold<T>>>;

/// Fold `fold`'s train and test rows of `samples`.
fn fold_rows<T: Target>(samples: &Samples<T>, cv: &KFold, fold: usize) -> Fold<T> {
    let n = samples.x.nrows();
    let (train, test) = cv.split(n).swap_remove(fold);
    let pick = |rows: &[usize]| {
        (
            samples.x.select(Axis(0), rows),
            rows.iter().map(|&i| samples.y[i].clone()).collect(),
        )
    };
    let ((x_train, y_train), (x_test, y_test)) = (pick(&train), pick(&test));
    Fold {
        x_train,
        y_train,
        x_test,
        y_test,
    }
}

/// Task: fold `fold` of the samples with `step` fitted on its train rows and applied to
/// both parts.
fn prepare_task<S: Transformer, T: Target>(
    samples: Samples<T>,
    step: S,
    cv: KFold,
    fold: usize,
) -> Outcome<Fold<T>> {
    guarded("the preprocessing step", || {
        let f = fold_rows(&samples, &cv, fold);
        let fitted = step.fit(f.x_train.view())?;
        Ok(Fold {
            x_train: S::transform(&fitted, f.x_train.view())?,
            x_test: S::transform(&fitted, f.x_test.view())?,
            ..f
        })
    })
}

/// The score of `estimator` fitted on `fold`'s train rows, on its test rows.
fn score_fold<E: Estimator>(estimator: &E, fold: &Fold<E::Target>) -> Outcome<FoldScore> {
    guarded("the estimator", || {
        let started = Instant::now();
        let model = estimator.fit(fold.x_train.view(), &fold.y_train)?;
        let fit_seconds = started.elapsed().as_secs_f64();
        let predicted = E::predict(&model, fold.x_test.view())?;
        if predicted.len() != fold.y_test.len() {
            return Err(format!(
                "predict gave {} values for {} rows",
                predicted.len(),
                fold.y_test.len()
            ));
        }
        let score = E::Target::score(&predicted, &fold.y_test);
        Ok(FoldScore {
            score,
            fit_seconds,
            score_seconds: started.elapsed().as_secs_f64() - fit_seconds,
        })
    })
}

/// Task: a candidate without a preprocessing step on fold `fold` of the samples.
fn fold_task<E: Estimator>(
    samples: Samples<E::Target>,
    estimator: E,
    cv: KFold,
    fold: usize,
) -> Outcome<FoldScore> {
    score_fold(&estimator, &fold_rows(&samples, &cv, fold))
}

/// Task: a candidate on a fold its preprocessing step prepared.
fn prepared_fold_task<E: Estimator>(
    fold: Outcome<Fold<E::Target>>,
    estimator: E,
) -> Outcome<FoldScore> {
    score_fold(&estimator, &fold?)
}

/// Task: the pipeline fitted on all the samples.
fn refit_task<S: Transformer, E: Estimator>(
    samples: Samples<E::Target>,
    step: S,
    estimator: E,
) -> Outcome<FittedPipeline<S, E>> {
    guarded("the refit", || {
        FittedPipeline::fit(&step, &estimator, samples.x.view(), &samples.y)
    })
}

fn refit_or_fail<S: Transformer, E: Estimator>(
    fitted: Outcome<FittedPipeline<S, E>>,
) -> std::result::Result<FittedPipeline<S, E>, String> {
    fitted.map_err(|e| format!("refitting the best candidate failed: {e}"))
}

/// The table of a search's results (scikit-learn's `cv_results_`), one row per candidate
/// in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct CvResults {
    /// Each candidate's parameters (its `Debug` form).
    pub params: Vec<String>,
    /// Per candidate, the test score of each fold.
    pub split_test_scores: Vec<Vec<f64>>,
    /// Per candidate, the mean of its fold scores.
    pub mean_test_score: Vec<f64>,
    /// Per candidate, their standard deviation (`ddof = 0`).
    pub std_test_score: Vec<f64>,
    /// Per candidate, its rank (1 the best; ties share the lowest rank).
    pub rank_test_score: Vec<usize>,
    /// Per candidate, the mean seconds its fits took.
    pub mean_fit_time: Vec<f64>,
    /// Per candidate, the mean seconds its predictions and scores took.
    pub mean_score_time: Vec<f64>,
}

impl std::fmt::Display for CvResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .params
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(6)
            .max(6);
        writeln!(
            f,
            "{:>4}  {:<width$}  {:>10}  {:>9}  {:>10}",
            "rank", "params", "mean score", "std", "fit (s)"
        )?;
        for i in 0..self.params.len() {
            writeln!(
                f,
                "{:>4}  {:<width$}  {:>10.6}  {:>9.6}  {:>10.4}",
                self.rank_test_score[i],
                self.params[i],
                self.mean_test_score[i],
                self.std_test_score[i],
                self.mean_fit_time[i]
            )?;
        }
        Ok(())
    }
}

/// The fitted part of a search.
struct Searched<S: Transformer, E: Estimator> {
    results: CvResults,
    best_index: usize,
    best: Option<ParallelPostFit<S, E>>,
}

/// Exhaustive search over candidates by cross-validation (`GridSearchCV` of scikit-learn
/// and dask-ml). A candidate is an [`Estimator`]'s parameters, optionally after a
/// preprocessing [`Transformer`] (a two-stage pipeline; `()` for none).
///
/// ```
/// use mpidask::array;
/// use mpidask::ml::estimator::Estimator;
/// use mpidask::ml::model_selection::GridSearchCV;
/// use ndarray::ArrayView2;
/// /// Predicts the training mean plus `shift`.
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let x = array::zeros(&[60, 2], &[20, 2]);
///     let y = array::zeros(&[60], &[20]) + 3.0;
///     let candidates = [-1.0, 0.0, 2.0].map(|shift| Mean { shift });
///     let mut search = GridSearchCV::new(candidates.to_vec());
///     search.fit(client, &x, &y).unwrap();
///     assert_eq!(search.best_params().unwrap().1, Mean { shift: 0.0 });
/// });
/// ```
pub struct GridSearchCV<S: Transformer, E: Estimator> {
    candidates: Vec<(S, E)>,
    /// The folds (scikit-learn's `cv=5`: 5 folds in order).
    pub cv: KFold,
    /// Refit the best candidate on all the samples, for `predict` and `score`.
    pub refit: bool,
    /// The search's name in its errors.
    name: &'static str,
    fitted: Option<Searched<S, E>>,
}

impl<E: Estimator> GridSearchCV<(), E> {
    /// A search over `candidates` (every point of the grid; build it with nested
    /// iterators), 5 folds, refitting the best.
    pub fn new(candidates: Vec<E>) -> Self {
        Self::pipeline(candidates.into_iter().map(|e| ((), e)).collect())
    }
}

impl<S: Transformer, E: Estimator> GridSearchCV<S, E> {
    /// A search over pipelines (a step, then an estimator): candidates with equal steps
    /// share each fold's fit of the step.
    pub fn pipeline(candidates: Vec<(S, E)>) -> Self {
        GridSearchCV {
            candidates,
            cv: KFold::new(5),
            refit: true,
            name: "GridSearchCV",
            fitted: None,
        }
    }

    /// The candidates, in order.
    pub fn candidates(&self) -> &[(S, E)] {
        &self.candidates
    }

    /// Cross-validates every candidate on the rows of `x` (2-D, computed to the client and
    /// broadcast to the workers once: a sample that fits one task) and their targets `y`
    /// (1-D), then refits the best on them all.
    pub fn fit(&mut self, client: &Client, x: &Array, y: &Array) -> Result<&mut Self> {
        let who = format!("{}.fit", self.name);
        let x = as_f64(&row_chunked(x, &who)?)
            .compute::<f64>(client)?
            .into_dimensionality::<Ix2>()
            .map_err(|e| error(format!("{who}: samples not 2-D: {e}")))?;
        let y = E::Target::from_array(client, y).map_err(|e| error(format!("{who}: {e}")))?;
        self.fit_samples(client, x, y)
    }

    /// [`fit`](Self::fit) on samples already in memory.
    pub fn fit_samples(
        &mut self,
        client: &Client,
        x: Array2<f64>,
        y: Vec<E::Target>,
    ) -> Result<&mut Self> {
        let who = format!("{}.fit", self.name);
        let n = x.nrows();
        if self.candidates.is_empty() {
            return Err(error(format!(
                "{who}: the parameter grid is empty; give at least one candidate"
            )));
        }
        if y.len() != n {
            return Err(error(format!(
                "{who}: {n} samples need as many targets, got {}",
                y.len()
            )));
        }
        if self.cv.n_splits < 2 || self.cv.n_splits > n {
            return Err(error(format!(
                "{who}: cv.n_splits = {} must be between 2 and the {n} samples",
                self.cv.n_splits
            )));
        }
        if let Some(((row, column), _)) = x.indexed_iter().find(|(_, v)| v.is_nan()) {
            return Err(error(format!(
                "{who}: the samples hold NaN (first at row {row}, column {column}); drop or \
                 fill the missing values first"
            )));
        }
        let folds = self.cv.n_splits;
        let n_features = x.ncols();
        let samples = client.scatter_broadcast(Samples { x, y })?;
        // One prepared fold per distinct step and fold.
        let mut steps: Vec<(S, Vec<PreparedFold<E::Target>>)> = vec![];
        let mut futures = Vec::with_capacity(self.candidates.len() * folds);
        for (step, estimator) in &self.candidates {
            if S::IDENTITY {
                for fold in 0..folds {
                    futures.push(
                        client.submit(fold_task::<E>, (&samples, estimator.clone(), self.cv, fold)),
                    );
                }
                continue;
            }
            let index = match steps.iter().position(|(s, _)| s == step) {
                Some(index) => index,
                None => {
                    let prepared = (0..folds)
                        .map(|fold| {
                            client.submit(
                                prepare_task::<S, E::Target>,
                                (&samples, step.clone(), self.cv, fold),
                            )
                        })
                        .collect();
                    steps.push((step.clone(), prepared));
                    steps.len() - 1
                }
            };
            for prepared in &steps[index].1 {
                futures.push(client.submit(prepared_fold_task::<E>, (prepared, estimator.clone())));
            }
        }
        let outcomes = client.gather(&futures)?;
        let mut scores = vec![];
        for (i, chunk) in outcomes.chunks(folds).enumerate() {
            let mut row = vec![];
            for (fold, outcome) in chunk.iter().enumerate() {
                row.push(outcome.clone().map_err(|e| {
                    error(format!(
                        "{who}: candidate {i} ({:?}) failed on fold {fold}: {e}",
                        self.candidates[i]
                    ))
                })?);
            }
            scores.push(row);
        }
        let results = cv_results(&self.candidates, &scores);
        let best_index = results
            .rank_test_score
            .iter()
            .position(|&r| r == 1)
            .expect("a best candidate");
        let best = if self.refit {
            let (step, estimator) = self.candidates[best_index].clone();
            let fitted = client.submit(refit_task::<S, E>, (&samples, step, estimator));
            Some(ParallelPostFit::from_future(
                client.try_submit(refit_or_fail::<S, E>, &fitted),
                n_features,
            ))
        } else {
            None
        };
        self.fitted = Some(Searched {
            results,
            best_index,
            best,
        });
        Ok(self)
    }

    fn searched(&self, who: &str) -> Result<&Searched<S, E>> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("{}.{who} before fit: call fit first", self.name)))
    }

    /// The table of results, if fitted.
    pub fn cv_results(&self) -> Option<&CvResults> {
        self.fitted.as_ref().map(|f| &f.results)
    }

    /// The index of the best candidate (the first of the highest mean score).
    pub fn best_index(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.best_index)
    }

    /// The best candidate.
    pub fn best_params(&self) -> Option<&(S, E)> {
        self.best_index().map(|i| &self.candidates[i])
    }

    /// The best candidate's mean score.
    pub fn best_score(&self) -> Option<f64> {
        self.fitted
            .as_ref()
            .map(|f| f.results.mean_test_score[f.best_index])
    }

    /// The best candidate refitted on all the samples (it stays on a worker), to predict
    /// chunked arrays with.
    pub fn best_estimator(&self) -> Result<&ParallelPostFit<S, E>> {
        self.best("best_estimator")
    }

    fn best(&self, who: &str) -> Result<&ParallelPostFit<S, E>> {
        let searched = self.searched(who)?;
        searched.best.as_ref().ok_or_else(|| {
            error(format!(
                "{}.{who}: the search ran with refit = false; set refit and fit again",
                self.name
            ))
        })
    }

    /// The refitted best candidate's predictions for the rows of `x` (2-D), lazily, one
    /// task per row chunk.
    pub fn predict(&self, x: &Array) -> Result<Array> {
        self.best("predict")?.predict(x)
    }

    /// The refitted best candidate's default score (accuracy or R^2) on `x` and `y`.
    pub fn score(&self, client: &Client, x: &Array, y: &Array) -> Result<f64> {
        self.best("score")?.score(client, x, y)
    }
}

/// The results table of `scores` (candidates x folds).
fn cv_results<C: std::fmt::Debug>(candidates: &[C], scores: &[Vec<FoldScore>]) -> CvResults {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let split: Vec<Vec<f64>> = scores
        .iter()
        .map(|row| row.iter().map(|s| s.score).collect())
        .collect();
    let means: Vec<f64> = split.iter().map(|row| mean(row)).collect();
    let stds = split
        .iter()
        .zip(&means)
        .map(|(row, m)| mean(&row.iter().map(|v| (v - m).powi(2)).collect::<Vec<_>>()).sqrt())
        .collect();
    // NaN scores rank with the worst, as scikit-learn's.
    let keyed: Vec<f64> = means
        .iter()
        .map(|&m| if m.is_nan() { f64::NEG_INFINITY } else { m })
        .collect();
    let ranks = keyed
        .iter()
        .map(|&m| 1 + keyed.iter().filter(|&&o| o > m).count())
        .collect();
    let per = |f: fn(&FoldScore) -> f64| -> Vec<f64> {
        scores
            .iter()
            .map(|row| mean(&row.iter().map(f).collect::<Vec<_>>()))
            .collect()
    };
    CvResults {
        params: candidates.iter().map(|c| format!("{c:?}")).collect(),
        split_test_scores: split,
        mean_test_score: means,
        std_test_score: stds,
        rank_test_score: ranks,
        mean_fit_time: per(|s| s.fit_seconds),
        mean_score_time: per(|s| s.score_seconds),
    }
}

/// Draws a randomised search's candidates: values from distributions, reproducible from
/// the search's seed.
pub struct Sampler {
    rng: Xoshiro256PlusPlus,
}

impl Sampler {
    /// A value uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    /// A value whose logarithm is uniform between those of `low` and `high` (scipy's
    /// `loguniform`; both positive).
    pub fn log_uniform(&mut self, low: f64, high: f64) -> f64 {
        self.uniform(low.ln(), high.ln()).exp()
    }

    /// An integer uniform in `low..high` (`high > low`).
    pub fn integer(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low).max(1) as u64;
        low + (self.rng.next_u64() % span) as i64
    }

    /// One of `choices` (not empty), each as likely.
    pub fn choice<T: Clone>(&mut self, choices: &[T]) -> T {
        choices[(self.rng.next_u64() % choices.len().max(1) as u64) as usize].clone()
    }
}

/// Randomised search (`RandomizedSearchCV`): `n_iter` candidates drawn by `draw` from a
/// [`Sampler`] seeded with `seed` (the same candidates at any rank count), then searched
/// as [`GridSearchCV`] does.
pub struct RandomizedSearchCV;

impl RandomizedSearchCV {
    /// The search over `n_iter` candidates of `draw`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<E: Estimator>(
        draw: impl FnMut(&mut Sampler) -> E,
        n_iter: usize,
        seed: u64,
    ) -> GridSearchCV<(), E> {
        Self::pipeline(
            draw_n(draw, n_iter, seed)
                .into_iter()
                .map(|e| ((), e))
                .collect(),
        )
    }

    /// The search over `n_iter` pipelines of `draw`.
    pub fn pipelines<S: Transformer, E: Estimator>(
        draw: impl FnMut(&mut Sampler) -> (S, E),
        n_iter: usize,
        seed: u64,
    ) -> GridSearchCV<S, E> {
        Self::pipeline(draw_n(draw, n_iter, seed))
    }

    fn pipeline<S: Transformer, E: Estimator>(candidates: Vec<(S, E)>) -> GridSearchCV<S, E> {
        let mut search = GridSearchCV::pipeline(candidates);
        search.name = "RandomizedSearchCV";
        search
    }
}

fn draw_n<C>(mut draw: impl FnMut(&mut Sampler) -> C, n: usize, seed: u64) -> Vec<C> {
    let mut sampler = Sampler {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed),
    };
    (0..n).map(|_| draw(&mut sampler)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_scikit_learns() {
        let cv = KFold::new(3);
        let split = cv.split(8);
        assert_eq!(split[0].1, vec![0, 1, 2]);
        assert_eq!(split[1].1, vec![3, 4, 5]);
        assert_eq!(split[2].1, vec![6, 7]);
        assert_eq!(split[1].0, vec![0, 1, 2, 6, 7]);
        let shuffled = KFold {
            n_splits: 3,
            shuffle: Some(4),
        };
        let mut all: Vec<usize> = shuffled.split(8).into_iter().flat_map(|(_, t)| t).collect();
        assert_ne!(all, (0..8).collect::<Vec<_>>());
        all.sort();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn ranks_share_the_lowest_on_ties() {
        let s = |score| FoldScore {
            score,
            fit_seconds: 0.0,
            score_seconds: 0.0,
        };
        let r = cv_results(
            &["a", "b", "c", "d"],
            &[vec![s(0.5)], vec![s(0.9)], vec![s(0.5)], vec![s(f64::NAN)]],
        );
        assert_eq!(r.rank_test_score, vec![2, 1, 2, 4]);
    }

    #[test]
    fn sampler_is_reproducible() {
        let draw = |s: &mut Sampler| (s.uniform(0.0, 1.0), s.integer(3, 5), s.choice(&[7, 8]));
        assert_eq!(draw_n(draw, 4, 1), draw_n(draw, 4, 1));
        assert!(draw_n(draw, 50, 2).iter().all(|&(u, i, c)| {
            (0.0..1.0).contains(&u) && (3..5).contains(&i) && (c == 7 || c == 8)
        }));
    }
}
