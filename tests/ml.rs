//! Machine learning (`src/ml/`) against scikit-learn on the same data: the job fits and
//! transforms, saves the inputs, the fitted attributes and the results as `.npy` files,
//! and scikit-learn (in `target/pyenv`) fits the same inputs and compares, under `mpirun`
//! at -np 3 and 5 and in local mode. Bad input is checked in the job itself. The ml
//! example checks itself under mpirun and locally.

mod support;

use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::Client;
use mpidask::array::{self, Array, DType, Span};
use mpidask::ml::cluster::{Init, KMeans};
use mpidask::ml::decomposition::{PCA, SvdSolver};
use mpidask::ml::estimator::{Estimator, Standardize};
use mpidask::ml::linear_model::{LinearRegression, LogisticRegression};
use mpidask::ml::model_selection::{GridSearchCV, KFold, RandomizedSearchCV};
use mpidask::ml::preprocessing::{MinMaxScaler, OneHotEncoder, StandardScaler, train_test_split};
use ndarray::{Array1, ArrayD, IxDyn};
use std::time::Duration;
use support::python::run_python;
use support::stored::save;
use support::{check, local_command, mpirun, run_with_deadline};

/// The variable that makes this binary the job (the directory its results go to).
const OUT: &str = "MPIDASK_ML_OUT";

fn hash(i: u64, seed: u64, m: u64) -> u64 {
    let mut h = i
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 31;
    h.wrapping_mul(0x94D0_49BB_1331_11EB) % m
}

/// Deterministic values `f(i)` of `shape`, in chunks of `chunks`.
fn values(shape: &[usize], chunks: &[usize], f: impl Fn(u64) -> f64) -> Array {
    let n: usize = shape.iter().product();
    let data = ArrayD::from_shape_vec(IxDyn(shape), (0..n as u64).map(f).collect())
        .expect("the shape's length");
    array::from_array(&data, chunks)
}

fn vector(name: &str, v: Option<&Array1<f64>>) -> anyhow::Result<(String, Array)> {
    let v = v.ok_or_else(|| anyhow::anyhow!("{name}: not fitted"))?;
    Ok((
        name.to_string(),
        array::from_array(&v.clone().into_dyn(), &[v.len()]),
    ))
}

fn job(client: &Client) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::var(OUT)?);
    // 203 samples of 5 features of different scales, in uneven row chunks and 2 column
    // chunks; a constant feature; integer categories.
    let x = values(&[203, 5], &[50, 3], |i| {
        let column = i % 5;
        match column {
            3 => 2.5,
            _ => (hash(i, 1, 10_007) as f64 / 100.0 - 30.0) * (column + 1) as f64,
        }
    });
    let cats = values(&[203, 3], &[60, 3], |i| {
        (hash(i, 2, 4 + i % 3) as f64) - 1.0
    })
    .astype(DType::I64);
    let y = values(&[203], &[50], |i| hash(i, 3, 2) as f64).astype(DType::I64);

    let mut standard = StandardScaler::new();
    let z = standard.fit_transform(client, &x)?;
    let back = standard.inverse_transform(&z)?;
    let mut minmax = MinMaxScaler::new((-1.0, 2.0));
    let m = minmax.fit_transform(client, &x)?;
    let m_back = minmax.inverse_transform(&m)?;
    let mut onehot = OneHotEncoder::new();
    let h = onehot.fit_transform(client, &cats)?;
    let split = train_test_split(&[&x, &y], 0.3, 11)?;
    let (x_train, x_test) = split[0].clone();
    let (y_train, y_test) = split[1].clone();
    // The same split again: the same rows.
    let again = train_test_split(&[&x, &y], 0.3, 11)?;

    let mut cases: Vec<(String, Array)> = vec![
        ("in_x".into(), x.clone()),
        ("in_cats".into(), cats.clone()),
        ("in_y".into(), y.clone()),
        ("std_z".into(), z),
        ("std_back".into(), back),
        ("mm_z".into(), m),
        ("mm_back".into(), m_back),
        ("onehot".into(), h),
        ("x_train".into(), x_train.clone()),
        ("x_test".into(), x_test.clone()),
        ("y_train".into(), y_train),
        ("y_test".into(), y_test),
    ];
    cases.push(vector("std_mean", standard.mean())?);
    cases.push(vector("std_var", standard.var())?);
    cases.push(vector("std_scale", standard.scale())?);
    cases.push(vector("mm_data_min", minmax.data_min())?);
    cases.push(vector("mm_data_max", minmax.data_max())?);
    cases.push(vector("mm_scale", minmax.scale())?);
    cases.push(vector("mm_min", minmax.min())?);
    let categories: Vec<i64> = onehot
        .categories()
        .ok_or_else(|| anyhow::anyhow!("one-hot: not fitted"))?
        .iter()
        .flat_map(|c| c.iter().copied().chain([i64::MIN]))
        .collect();
    cases.push(("onehot_categories".into(), {
        let n = categories.len();
        array::from_array(&Array1::from(categories).into_dyn(), &[n])
    }));
    // K-means: three groups of 2-D points (around (0, 0), (10, 0) and (0, 10), spread
    // +-2), 301 rows in chunks of 70.
    let blobs = values(&[301, 2], &[70, 2], |i| {
        let (row, column) = (i / 2, i % 2);
        let centre = match (row % 3, column) {
            (1, 0) | (2, 1) => 10.0,
            _ => 0.0,
        };
        centre + hash(i, 4, 4001) as f64 / 1000.0 - 2.0
    });
    let start = ndarray::array![[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]];
    let mut given = KMeans::new(3);
    given.init = Init::Centers(start.clone());
    given.fit(client, &blobs)?;
    let mut parallel = KMeans::new(3);
    parallel.seed = 5;
    parallel.fit(client, &blobs)?;
    cases.extend([
        ("km_x".to_string(), blobs.clone()),
        ("km_start".to_string(), matrix(&start)),
        (
            "km_centers".to_string(),
            matrix(given.cluster_centers().expect("fitted")),
        ),
        (
            "km_inertia".to_string(),
            scalar(given.inertia().expect("fitted")),
        ),
        ("km_labels".to_string(), given.predict(&blobs)?),
        (
            "kmpar_centers".to_string(),
            matrix(parallel.cluster_centers().expect("fitted")),
        ),
        (
            "kmpar_inertia".to_string(),
            scalar(parallel.inertia().expect("fitted")),
        ),
    ]);
    // Linear models: y = x . (1, -2, 0.5, 3, 0) + 4 + noise on the first 4 features of x
    // (the constant one left out), and classes from the same with more noise.
    let features = x.slice(&[Span::all(), (0..3).into()]);
    let features = array::concatenate(&[features, x.slice(&[Span::all(), (4..5).into()])], 1);
    let beta = array::from_array(&ndarray::arr1(&[0.05, -0.02, 0.01, 0.0]).into_dyn(), &[4]);
    let noise = values(&[203], &[50], |i| hash(i, 5, 1001) as f64 / 1000.0 - 0.5);
    let signal = (&features * &beta).sum_axis(1);
    let target = &(&signal + 4.0) + &noise;
    let classes = (&signal + &(&noise * 4.0)).gt(0.0).astype(DType::I64);
    let mut ols = LinearRegression::new();
    ols.fit(client, &features, &target)?;
    let r2 = ols.score(client, &features, &target)?;
    let mut logistic = LogisticRegression::new();
    logistic.tol = 1e-10;
    logistic.fit(client, &features, &classes)?;
    let accuracy = logistic.score(client, &features, &classes)?;
    let coef = |c: Option<&Array1<f64>>, b: Option<f64>| -> anyhow::Result<Array> {
        let mut v = c.ok_or_else(|| anyhow::anyhow!("not fitted"))?.to_vec();
        v.push(b.ok_or_else(|| anyhow::anyhow!("not fitted"))?);
        let n = v.len();
        Ok(array::from_array(&Array1::from(v).into_dyn(), &[n]))
    };
    cases.extend([
        ("lin_x".to_string(), features.clone()),
        ("lin_y".to_string(), target.clone()),
        ("lin_classes".to_string(), classes.clone()),
        ("ols_coef".to_string(), coef(ols.coef(), ols.intercept())?),
        ("ols_pred".to_string(), ols.predict(&features)?),
        ("ols_r2".to_string(), scalar(r2)),
        (
            "logit_coef".to_string(),
            coef(logistic.coef(), logistic.intercept())?,
        ),
        (
            "logit_proba".to_string(),
            logistic.predict_proba(&features)?,
        ),
        ("logit_pred".to_string(), logistic.predict(&features)?),
        ("logit_score".to_string(), scalar(accuracy)),
    ]);
    anyhow::ensure!(
        given.n_iter().is_some_and(|n| (1..=300).contains(&n)),
        "n_iter {:?}",
        given.n_iter()
    );
    let (pca, pca_errors) = pca_cases(client)?;
    cases.extend(pca);
    let (search, search_errors) = search_cases(client, &features, &target)?;
    cases.extend(search);
    for (name, a) in &cases {
        save(client, &dir, name, a)?;
    }
    anyhow::ensure!(
        standard.n_samples_seen() == Some(203),
        "n_samples_seen {:?}",
        standard.n_samples_seen()
    );
    let same = (&again[0].1 - &x_test)
        .abs()
        .max()
        .compute_scalar::<f64>(client)?;
    anyhow::ensure!(same == 0.0, "the same seed split differently ({same})");

    // Bad input: each a clear error naming the value.
    let with_nan = values(&[10, 2], &[4, 2], |i| if i == 13 { f64::NAN } else { 1.0 });
    let fresh = StandardScaler::new();
    let errors: Vec<(String, &str)> = vec![
        (
            err(StandardScaler::new().fit(client, &with_nan).map(|_| ())),
            "the input holds NaN (first at row 6, column 1)",
        ),
        (
            err(fresh.transform(&x).map(|_| ())),
            "StandardScaler.transform before fit: call fit first",
        ),
        (
            err(standard.transform(&cats).map(|_| ())),
            "fitted on 5 features; this array has shape [203, 3]",
        ),
        (
            err(MinMaxScaler::new((1.0, 1.0)).fit(client, &x).map(|_| ())),
            "feature_range (1, 1) must have its minimum below its maximum",
        ),
        (
            err(OneHotEncoder::new().fit(client, &x).map(|_| ())),
            "encodes integer columns; this array holds f64",
        ),
        (
            err(onehot
                .transform(&(&cats + 100))
                .and_then(|a| a.compute::<f64>(client))
                .map(|_| ())),
            "was not seen by fit",
        ),
        (
            err(train_test_split(&[&x, &cats.slice(&[(0..9).into()])], 0.3, 1).map(|_| ())),
            "do not have the same number of rows",
        ),
        (
            err(train_test_split(&[&x], 1.0, 1).map(|_| ())),
            "test_size 1 must lie strictly between 0 and 1",
        ),
        (
            err(StandardScaler::new().fit(client, &y).map(|_| ())),
            "needs a 2-D array (samples x features), got shape [203]",
        ),
    ];
    let mut errors = errors;
    errors.extend([
        (
            err(KMeans::new(400).fit(client, &blobs).map(|_| ())),
            "n_clusters 400 must be at least 1 and at most the 301 rows",
        ),
        (
            err(KMeans::new(2).predict(&blobs).map(|_| ())),
            "KMeans.predict before fit: call fit first",
        ),
        (
            err(given.predict(&x).map(|_| ())),
            "fitted on 2 features; this array has shape [203, 5]",
        ),
        (
            err(KMeans::new(2).fit(client, &with_nan).map(|_| ())),
            "the input holds NaN (first at row 6, column 1)",
        ),
    ]);
    errors.extend([
        (
            err(LinearRegression::new()
                .fit(client, &x, &y.slice(&[(0..9).into()]))
                .map(|_| ())),
            "203 samples (x of shape [203, 5]) need as many targets in a 1-D y",
        ),
        (
            err(LinearRegression::new().fit(client, &x, &target).map(|_| ())),
            "the features are collinear or constant",
        ),
        (
            err(LogisticRegression::new()
                .fit(client, &features, &target)
                .map(|_| ())),
            "is not 0 or 1; encode the two classes as 0 and 1",
        ),
        (
            err(LogisticRegression::new().predict(&features).map(|_| ())),
            "LogisticRegression.predict before fit: call fit first",
        ),
        (
            err(ols.predict(&x).map(|_| ())),
            "fitted on 4 features; this array has shape [203, 5]",
        ),
    ]);
    errors.extend(pca_errors);
    errors.extend(search_errors);
    for (error, wanted) in errors {
        anyhow::ensure!(error.contains(wanted), "{wanted}: {error:?}");
    }
    println!("ML saved {}", cases.len());
    Ok(())
}

/// A small matrix as a one-chunk array.
fn matrix(m: &ndarray::Array2<f64>) -> Array {
    let (r, c) = m.dim();
    array::from_array(&m.clone().into_dyn(), &[r, c])
}

fn scalar(v: f64) -> Array {
    array::from_array(&ndarray::arr1(&[v]).into_dyn(), &[1])
}

/// PCA: the exact solver on 6 correlated features of different spreads (203 rows in
/// uneven chunks, 2 column chunks), whitened too; the randomised one on data of rank 3 in
/// 30 features (exact there). Its results and its bad input's errors.
#[allow(clippy::type_complexity)]
fn pca_cases(
    client: &Client,
) -> anyhow::Result<(Vec<(String, Array)>, Vec<(String, &'static str)>)> {
    let independent = values(&[203, 6], &[50, 4], |i| {
        let column = i % 6;
        (hash(i, 6, 10_007) as f64 / 10_007.0 - 0.5) * (column + 1) as f64 + column as f64
    });
    let mix = ndarray::Array2::from_shape_fn((6, 6), |(i, j)| {
        if i == j {
            1.0
        } else {
            0.1 * ((i * 7 + j * 3) % 5) as f64
        }
    });
    let px = independent.dot(&matrix(&mix)).rechunk(&[50, 4]);
    let mut full = PCA::new(Some(4));
    let z = full.fit_transform(client, &px)?;
    let back = full.inverse_transform(&z)?;
    let mut white = PCA::new(Some(3));
    white.whiten = true;
    let zw = white.fit_transform(client, &px)?;
    let w_back = white.inverse_transform(&zw)?;
    let low = values(&[157, 3], &[40, 3], |i| {
        hash(i, 7, 1009) as f64 / 100.0 - 5.0
    });
    let spread = ndarray::Array2::from_shape_fn((3, 30), |(i, j)| {
        (hash((i * 30 + j) as u64, 8, 201) as f64 - 100.0) / 50.0
    });
    let rx = &low.dot(&matrix(&spread)) + 5.0;
    let mut randomized = PCA::new(Some(2));
    randomized.svd_solver = SvdSolver::Randomized {
        n_oversamples: 10,
        n_power_iter: 2,
        seed: 9,
    };
    let rz = randomized.fit_transform(client, &rx)?;
    let vector = |name: &str, v: Option<&Array1<f64>>| vector(name, v);
    let fitted = |m: Option<&ndarray::Array2<f64>>| {
        m.map(matrix)
            .ok_or_else(|| anyhow::anyhow!("PCA not fitted"))
    };
    let cases = vec![
        ("pca_x".to_string(), px.clone()),
        ("pca_components".into(), fitted(full.components())?),
        vector("pca_ev", full.explained_variance())?,
        vector("pca_evr", full.explained_variance_ratio())?,
        vector("pca_sv", full.singular_values())?,
        vector("pca_mean", full.mean())?,
        (
            "pca_noise".into(),
            scalar(full.noise_variance().unwrap_or(f64::NAN)),
        ),
        ("pca_z".into(), z),
        ("pca_back".into(), back),
        ("pca_white".into(), zw),
        ("pca_white_back".into(), w_back),
        ("rpca_x".into(), rx.clone()),
        ("rpca_components".into(), fitted(randomized.components())?),
        vector("rpca_ev", randomized.explained_variance())?,
        vector("rpca_evr", randomized.explained_variance_ratio())?,
        ("rpca_z".into(), rz),
    ];
    let with_nan = values(&[10, 2], &[4, 2], |i| if i == 13 { f64::NAN } else { 1.0 });
    let wide = values(&[4, 6], &[4, 6], |i| i as f64 * (i % 3) as f64);
    let errors = vec![
        (
            err(PCA::new(Some(7)).fit(client, &px).map(|_| ())),
            "n_components = 7 must be between 1 and min(n_samples, n_features) = 6",
        ),
        (
            err(PCA::new(None).transform(&px).map(|_| ())),
            "PCA.transform before fit: call fit first",
        ),
        (
            err(full.transform(&rx).map(|_| ())),
            "fitted on 6 features; this array has shape [157, 30]",
        ),
        (
            err(PCA::new(None).fit(client, &with_nan).map(|_| ())),
            "PCA.fit: the input holds NaN (first at row 6, column 1)",
        ),
        (
            err(PCA::new(Some(2)).fit(client, &wide).map(|_| ())),
            "needs at least as many samples as features, got shape [4, 6]; use \
             SvdSolver::Randomized",
        ),
    ];
    Ok((cases, errors))
}

/// Ridge regression with an intercept (scikit-learn's `Ridge(alpha)` solved by Cholesky),
/// an estimator written here for the search: `(x - mean)^T (x - mean) + alpha I` solved
/// by Gaussian elimination.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ridge {
    alpha: f64,
}

impl Estimator for Ridge {
    type Target = f64;
    type Model = (Vec<f64>, f64);

    fn fit(&self, x: ndarray::ArrayView2<f64>, y: &[f64]) -> Result<Self::Model, String> {
        if self.alpha < 0.0 {
            return Err(format!("alpha {} must not be negative", self.alpha));
        }
        let (n, d) = x.dim();
        let mean = x.mean_axis(ndarray::Axis(0)).ok_or("no rows")?;
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let xc = &x - &mean;
        let mut a = xc.t().dot(&xc);
        for i in 0..d {
            a[[i, i]] += self.alpha;
        }
        let yc = Array1::from_iter(y.iter().map(|v| v - y_mean));
        let mut b = xc.t().dot(&yc);
        // Gaussian elimination (a is symmetric positive definite).
        for k in 0..d {
            for i in k + 1..d {
                let f = a[[i, k]] / a[[k, k]];
                for j in k..d {
                    a[[i, j]] -= f * a[[k, j]];
                }
                b[i] -= f * b[k];
            }
        }
        let mut w = vec![0.0; d];
        for i in (0..d).rev() {
            let rest: f64 = (i + 1..d).map(|j| a[[i, j]] * w[j]).sum();
            w[i] = (b[i] - rest) / a[[i, i]];
        }
        let intercept = y_mean - mean.iter().zip(&w).map(|(m, w)| m * w).sum::<f64>();
        Ok((w, intercept))
    }

    fn predict((w, b): &Self::Model, x: ndarray::ArrayView2<f64>) -> Result<Vec<f64>, String> {
        Ok(x.rows()
            .into_iter()
            .map(|r| r.iter().zip(w).map(|(v, w)| v * w).sum::<f64>() + b)
            .collect())
    }
}

/// Searches: ridge regressions after standardisation (one step shared by all candidates)
/// on shuffled folds, and a randomised search without a step; their tables, folds and
/// predictions for scikit-learn to redo; the errors of bad searches.
#[allow(clippy::type_complexity)]
fn search_cases(
    client: &Client,
    x: &Array,
    y: &Array,
) -> anyhow::Result<(Vec<(String, Array)>, Vec<(String, &'static str)>)> {
    let alphas = [0.01, 0.3, 3.0, 30.0, 300.0, 3000.0];
    let mut grid = GridSearchCV::pipeline(
        alphas
            .iter()
            .map(|&alpha| (Standardize, Ridge { alpha }))
            .collect(),
    );
    grid.cv = KFold {
        n_splits: 4,
        shuffle: Some(3),
    };
    grid.fit(client, x, y)?;
    let n = x.shape()[0];
    let folds: Vec<f64> = grid
        .cv
        .split(n)
        .iter()
        .enumerate()
        .flat_map(|(fold, (_, test))| test.iter().map(move |&i| (fold * n + i) as f64))
        .collect();
    let mut randomized = RandomizedSearchCV::new(
        |s| Ridge {
            alpha: s.log_uniform(1e-2, 1e4),
        },
        5,
        17,
    );
    randomized.cv = KFold::new(3);
    randomized.fit(client, x, y)?;
    let results = grid.cv_results().expect("fitted");
    let row = |v: Vec<f64>| {
        let n = v.len();
        array::from_array(&Array1::from(v).into_dyn(), &[n])
    };
    let drawn: Vec<f64> = randomized
        .candidates()
        .iter()
        .map(|(_, r)| r.alpha)
        .collect();
    let cases = vec![
        ("gs_alphas".to_string(), row(alphas.to_vec())),
        ("gs_folds".into(), row(folds)),
        ("gs_mean".into(), row(results.mean_test_score.clone())),
        ("gs_std".into(), row(results.std_test_score.clone())),
        ("gs_split".into(), row(results.split_test_scores.concat())),
        (
            "gs_rank".into(),
            row(results.rank_test_score.iter().map(|&r| r as f64).collect()),
        ),
        (
            "gs_best".into(),
            row(vec![grid.best_index().expect("fitted") as f64]),
        ),
        ("gs_pred".into(), grid.predict(x)?),
        ("gs_score".into(), scalar(grid.score(client, x, y)?)),
        ("rs_alphas".into(), row(drawn)),
        (
            "rs_mean".into(),
            row(randomized
                .cv_results()
                .expect("fitted")
                .mean_test_score
                .clone()),
        ),
        (
            "rs_best".into(),
            row(vec![randomized.best_index().expect("fitted") as f64]),
        ),
    ];
    let failing = [1.0, -1.0].map(|alpha| Ridge { alpha });
    let errors = vec![
        (
            err(GridSearchCV::<(), Ridge>::new(vec![])
                .fit(client, x, y)
                .map(|_| ())),
            "GridSearchCV.fit: the parameter grid is empty; give at least one candidate",
        ),
        (
            err(GridSearchCV::new(vec![Ridge { alpha: 1.0 }])
                .predict(x)
                .map(|_| ())),
            "GridSearchCV.predict before fit: call fit first",
        ),
        (
            err(GridSearchCV::new(failing.to_vec())
                .fit(client, x, y)
                .map(|_| ())),
            "candidate 1 (((), Ridge { alpha: -1.0 })) failed on fold 0: alpha -1 must not \
             be negative",
        ),
        (
            err({
                let mut s = GridSearchCV::new(vec![Ridge { alpha: 1.0 }]);
                s.cv = KFold::new(300);
                s.fit(client, x, y).map(|_| ())
            }),
            "cv.n_splits = 300 must be between 2 and the 203 samples",
        ),
        (
            err(grid
                .predict(&x.slice(&[Span::all(), (0..2).into()]))
                .map(|_| ())),
            "fitted on 4 features; this array has shape [203, 2]",
        ),
    ];
    Ok((cases, errors))
}

/// The error's message with its sources, or "" for none.
fn err(result: mpidask::Result<()>) -> String {
    result
        .err()
        .map(|e| format!("{:#}", anyhow::Error::new(e)))
        .unwrap_or_default()
}

/// What scikit-learn computes from the same inputs.
const CHECK: &str = r#"
import sys, numpy as np
from sklearn.preprocessing import StandardScaler, MinMaxScaler, OneHotEncoder
d = sys.argv[1]
L = lambda n: np.load(f'{d}/{n}.npy')
x, cats, y = L('in_x'), L('in_cats'), L('in_y')
bad = []
def near(name, got, want, rtol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        bad.append(f'{name}: {got.dtype}{got.shape} where scikit-learn gives {want.dtype}{want.shape}')
    elif np.abs(got - want).max(initial=0) > rtol * max(np.abs(want).max(initial=0), 1.0):
        bad.append(f'{name}: differs by {np.abs(got - want).max()}')
s = StandardScaler().fit(x)
near('std_mean', L('std_mean'), s.mean_); near('std_var', L('std_var'), s.var_)
near('std_scale', L('std_scale'), s.scale_); near('std_z', L('std_z'), s.transform(x))
near('std_back', L('std_back'), x)
m = MinMaxScaler(feature_range=(-1.0, 2.0)).fit(x)
for a in 'data_min data_max scale min'.split():
    near(f'mm_{a}', L(f'mm_{a}'), getattr(m, a + '_'))
near('mm_z', L('mm_z'), m.transform(x)); near('mm_back', L('mm_back'), x)
o = OneHotEncoder(sparse_output=False).fit(cats)
got_cats = L('onehot_categories')
want_cats = np.concatenate([np.append(c, np.iinfo(np.int64).min) for c in o.categories_])
if not np.array_equal(got_cats, want_cats):
    bad.append(f'onehot_categories: {got_cats} where scikit-learn gives {want_cats}')
near('onehot', L('onehot'), o.transform(cats))
# The split: the two parts hold every row once, test has ceil(0.3 n) rows per chunk of 50,
# and X and y were split alike.
xtr, xte, ytr, yte = L('x_train'), L('x_test'), L('y_train'), L('y_test')
rows = lambda a: sorted(map(tuple, a))
if rows(np.concatenate([xtr, xte])) != rows(x):
    bad.append('split: train and test are not the rows of x')
if len(xte) != sum(int(np.ceil(0.3 * n)) for n in (50, 50, 50, 50, 3)):
    bad.append(f'split: {len(xte)} test rows')
pair = {tuple(r): v for r, v in zip(x, y)}
if any(pair[tuple(r)] != v for r, v in zip(np.concatenate([xtr, xte]), np.concatenate([ytr, yte]))):
    bad.append('split: X and y rows were not kept together')
if np.array_equal(xte, x[:len(xte)]):
    bad.append('split: the test rows are not shuffled')
from sklearn.cluster import KMeans
kx = L('km_x')
km = KMeans(3, init=L('km_start'), n_init=1, algorithm='lloyd').fit(kx)
near('km_centers', L('km_centers'), km.cluster_centers_, 1e-8)
if abs(L('km_inertia')[0] - km.inertia_) > 0.01 * km.inertia_:
    bad.append(f"km_inertia: {L('km_inertia')[0]} where scikit-learn gives {km.inertia_}")
if not np.array_equal(L('km_labels'), km.predict(kx).astype(np.int64)):
    bad.append('km_labels: differ from scikit-learn predict')
best = KMeans(3, n_init=10, random_state=0).fit(kx)
if abs(L('kmpar_inertia')[0] - best.inertia_) > 0.01 * best.inertia_:
    bad.append(f"kmpar_inertia: k-means|| gives {L('kmpar_inertia')[0]}, scikit-learn's best of 10 {best.inertia_}")
from sklearn.linear_model import LinearRegression, LogisticRegression
lx, ly, lc = L('lin_x'), L('lin_y'), L('lin_classes')
ols = LinearRegression().fit(lx, ly)
near('ols_coef', L('ols_coef'), np.append(ols.coef_, ols.intercept_), 1e-8)
near('ols_pred', L('ols_pred'), ols.predict(lx), 1e-8)
near('ols_r2', L('ols_r2'), [ols.score(lx, ly)], 1e-8)
lr = LogisticRegression(tol=1e-12, max_iter=10000).fit(lx, lc)
near('logit_coef', L('logit_coef'), np.append(lr.coef_[0], lr.intercept_[0]), 1e-4)
near('logit_proba', L('logit_proba'), lr.predict_proba(lx)[:, 1], 1e-4)
if not np.array_equal(L('logit_pred'), lr.predict(lx).astype(np.int64)):
    bad.append('logit_pred: differs from scikit-learn predict')
near('logit_score', L('logit_score'), [lr.score(lx, lc)], 1e-12)
from sklearn.decomposition import PCA
def signed(name, got, want, tol=1e-8):
    # Components (rows) and their coordinates (columns) up to each component's sign.
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        bad.append(f'{name}: shape {got.shape} where scikit-learn gives {want.shape}'); return
    sign = np.sign((got * want).sum(axis=1 if name.endswith('components') else 0))
    near(name, got * (sign[:, None] if name.endswith('components') else sign), want, tol)
px = L('pca_x')
p = PCA(4, svd_solver='full').fit(px)
signed('pca_components', L('pca_components'), p.components_)
near('pca_ev', L('pca_ev'), p.explained_variance_, 1e-8)
near('pca_evr', L('pca_evr'), p.explained_variance_ratio_, 1e-8)
near('pca_sv', L('pca_sv'), p.singular_values_, 1e-8)
near('pca_mean', L('pca_mean'), p.mean_, 1e-12)
near('pca_noise', L('pca_noise'), [p.noise_variance_], 1e-8)
signed('pca_z', L('pca_z'), p.transform(px))
near('pca_back', L('pca_back'), p.inverse_transform(p.transform(px)), 1e-8)
w = PCA(3, whiten=True, svd_solver='full').fit(px)
signed('pca_white', L('pca_white'), w.transform(px))
near('pca_white_back', L('pca_white_back'), w.inverse_transform(w.transform(px)), 1e-8)
rx = L('rpca_x')
r = PCA(2, svd_solver='full').fit(rx)
signed('rpca_components', L('rpca_components'), r.components_)
near('rpca_ev', L('rpca_ev'), r.explained_variance_, 1e-8)
near('rpca_evr', L('rpca_evr'), r.explained_variance_ratio_, 1e-8)
signed('rpca_z', L('rpca_z'), r.transform(rx))
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.linear_model import Ridge
n = len(lx)
fold_of = L('gs_folds').astype(np.int64)
cv = [(np.setdiff1d(np.arange(n), t % n), t % n) for t in
      (fold_of[fold_of // n == f] for f in range(4))]
gs = GridSearchCV(make_pipeline(StandardScaler(), Ridge(solver='cholesky')),
                  {'ridge__alpha': list(L('gs_alphas'))}, cv=cv).fit(lx, ly)
r = gs.cv_results_
near('gs_mean', L('gs_mean'), r['mean_test_score'], 1e-8)
near('gs_std', L('gs_std'), r['std_test_score'], 1e-6)
near('gs_split', L('gs_split'), np.stack([r[f'split{f}_test_score'] for f in range(4)], 1).ravel(), 1e-8)
if not np.array_equal(L('gs_rank').astype(np.int64), r['rank_test_score']):
    bad.append(f"gs_rank: {L('gs_rank')} where scikit-learn gives {r['rank_test_score']}")
if int(L('gs_best')[0]) != gs.best_index_:
    bad.append(f"gs_best: {L('gs_best')} where scikit-learn picks {gs.best_index_}")
m = np.sort(r['mean_test_score'])
if m[-1] - m[-2] < 1e-9:
    bad.append('gs: the two best candidates are too close to tell apart')
near('gs_pred', L('gs_pred'), gs.predict(lx), 1e-8)
near('gs_score', L('gs_score'), [gs.score(lx, ly)], 1e-8)
from sklearn.model_selection import KFold
rs = GridSearchCV(Ridge(solver='cholesky'), {'alpha': list(L('rs_alphas'))}, cv=KFold(3)).fit(lx, ly)
near('rs_mean', L('rs_mean'), rs.cv_results_['mean_test_score'], 1e-8)
if int(L('rs_best')[0]) != rs.best_index_:
    bad.append(f"rs_best: {L('rs_best')} where scikit-learn picks {rs.best_index_}")
print('\n'.join(bad) if bad else 'scikit-learn agrees')
"#;

fn against_sklearn(label: &str, mut command: std::process::Command) {
    let dir = support::scratch_dir(&format!("ml-{label}"));
    command.env(OUT, &dir);
    let run = run_with_deadline(command, Duration::from_secs(120));
    run.expect_code(0)
        .expect_stdout("ML saved 65")
        .expect_quiet();
    let text = run_python(CHECK, &[&dir]);
    assert!(text.starts_with("scikit-learn agrees"), "{label}: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ml example on a small data set (under mpirun at `np` ranks, or locally for 0):
/// it checks its own accuracies and centres.
fn ml_example(np: usize) {
    let args = [
        "--rows",
        "300000",
        "--chunk-rows",
        "40000",
        "--sample",
        "6000",
    ];
    let run = support::run_example("ml", np, &args, Duration::from_secs(120));
    run.expect_code(0).expect_quiet().expect_stdout("CHECK ok");
    assert_eq!(
        run.field("RESULT", "rows").as_deref(),
        Some("300000"),
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
            format!("ml_matches_sklearn_np{np}"),
            move || check(|| against_sklearn(&format!("np{np}"), mpirun(np, &exe, &[]))),
        ));
    }
    tests.push(Trial::test(
        "ml_matches_sklearn_local",
        move || -> Result<(), Failed> { check(|| against_sklearn("local", local_command(&exe))) },
    ));
    for np in [0, 4] {
        let label = if np == 0 {
            "local".into()
        } else {
            format!("np{np}")
        };
        tests.push(Trial::test(
            format!("ml_example_checks_itself_{label}"),
            move || check(|| ml_example(np)),
        ));
    }
    libtest_mimic::run(&args, tests).exit();
}
