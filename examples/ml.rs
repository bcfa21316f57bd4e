//! Machine learning over a chunked data set larger than one process would like to hold, as
//! with dask-ml: a two-class data set is generated where it will be used (counter-based
//! random numbers, the same at any rank count), scaled, classified by logistic regression
//! and clustered by k-means over all its rows, and a grid of 24 decision trees (`linfa`)
//! is searched with 3-fold cross-validation on a sample. In Dask:
//!
//! ```python
//! z = StandardScaler().fit_transform(x)
//! LogisticRegression().fit(z_train, y_train).score(z_test, y_test)
//! KMeans(2).fit(x).cluster_centers_
//! GridSearchCV(DecisionTreeClassifier(), grid, cv=3).fit(x_sample, y_sample)
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/ml     # 40,000,000 samples x 8 features: 2.6 GB
//! ```
//!
//! The samples: `--features` (at least 4) columns of unit normal noise; the first 4 are
//! shifted by +2 for class 1 and -2 for class 0, the rest carry nothing. Then 5 % of the
//! labels are flipped, so no model can be right on more than about 95 % of the samples.
//! It checks itself and exits non-zero when a check fails: logistic regression's test
//! accuracy and the best tree's cross-validated and held-out accuracies at least 0.94,
//! each k-means centre within 0.05 of a generating centre (+-2 on the first 4 features,
//! 0 elsewhere). The last line is `RESULT ...` with the figures.

use anyhow::ensure;
use clap::Parser;
use mpidask::array::{self, Array, DType, Span, random};
use mpidask::ml::cluster::KMeans;
use mpidask::ml::estimator::Standardize;
use mpidask::ml::linear_model::LogisticRegression;
use mpidask::ml::linfa::DecisionTreeClassifier;
use mpidask::ml::model_selection::{GridSearchCV, KFold};
use mpidask::ml::preprocessing::{StandardScaler, train_test_split};
use std::time::Instant;

/// The shift of the informative features (+ for class 1, - for class 0).
const SHIFT: f64 = 2.0;
/// The share of labels flipped.
const FLIP: f64 = 0.05;
/// The accuracy every classifier must reach (the best possible is about 1 - FLIP).
const ACCURACY: f64 = 0.94;
/// How far a k-means centre may lie from a generating centre.
const CENTRE_TOLERANCE: f64 = 0.05;

/// Classification, clustering and a grid search over a generated data set.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Samples (rows)
    #[arg(long, default_value_t = 40_000_000)]
    rows: usize,

    /// Features (columns; at least 4)
    #[arg(long, default_value_t = 8)]
    features: usize,

    /// Rows per chunk
    #[arg(long, default_value_t = 500_000)]
    chunk_rows: usize,

    /// Rows of the grid search's sample (at least 100)
    #[arg(long, default_value_t = 20_000)]
    sample: usize,

    /// Seed of the data set
    #[arg(long, default_value_t = 2024)]
    seed: u64,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// The samples and their (noisy) labels.
fn data_set(cli: &Cli) -> (Array, Array) {
    let (n, d, c) = (cli.rows, cli.features, cli.chunk_rows);
    let class = random::integers(0, 2, &[n], &[c], cli.seed);
    let side = (class.astype(DType::F64) * 2.0 - 1.0).reshape(&[n as isize, 1]);
    let shift = ndarray::Array1::from_shape_fn(d, |j| if j < 4 { SHIFT } else { 0.0 });
    let shift = array::from_array(&shift.into_dyn(), &[d]);
    let x = &random::normal(0.0, 1.0, &[n, d], &[c, d], cli.seed + 1) + &(&side * &shift);
    let flipped = random::uniform(0.0, 1.0, &[n], &[c], cli.seed + 2).lt(FLIP);
    let y = array::where_(&flipped, &(-&class + 1), &class);
    (x, y)
}

/// Rows `rows` of `a`.
fn rows(a: &Array, rows: std::ops::Range<usize>) -> Array {
    let mut spans = vec![Span::from(rows.start as isize..rows.end as isize)];
    spans.extend((1..a.ndim()).map(|_| Span::all()));
    a.slice(&spans)
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        ensure!(
            cli.features >= 4,
            "--features must be at least 4, got {}",
            cli.features
        );
        ensure!(cli.chunk_rows >= 1, "--chunk-rows must be at least 1");
        ensure!(
            cli.sample >= 100 && 2 * cli.sample <= cli.rows,
            "--sample must be at least 100 and at most half of --rows ({}), got {}",
            cli.rows,
            cli.sample
        );
        let (x, y) = data_set(&cli);
        let gb = (cli.rows * cli.features * 8) as f64 / 1e9;
        println!(
            "{} samples x {} features ({gb:.2} GB) in chunks of {} rows",
            cli.rows, cli.features, cli.chunk_rows
        );

        // Scale, split, and fit a logistic regression on every training row.
        let started = Instant::now();
        let z = StandardScaler::new().fit_transform(client, &x)?;
        let split = train_test_split(&[&z, &y], 0.2, cli.seed)?;
        let ((z_train, z_test), (y_train, y_test)) = (split[0].clone(), split[1].clone());
        let mut logistic = LogisticRegression::new();
        logistic.fit(client, &z_train, &y_train)?;
        let logistic_accuracy = logistic.score(client, &z_test, &y_test)?;
        let logistic_s = started.elapsed().as_secs_f64();
        println!(
            "logistic regression: test accuracy {logistic_accuracy:.4} after {} Newton \
             iterations ({logistic_s:.2} s)",
            logistic.n_iter().unwrap_or(0)
        );

        // K-means on the unscaled samples: the centres should be the generating ones.
        let started = Instant::now();
        let mut kmeans = KMeans::new(2);
        kmeans.seed = cli.seed;
        kmeans.fit(client, &x)?;
        let kmeans_s = started.elapsed().as_secs_f64();
        let centres = kmeans.cluster_centers().expect("fitted");
        let generating = |class: usize, j: usize| {
            let sign = if class == 1 { 1.0 } else { -1.0 };
            if j < 4 { sign * SHIFT } else { 0.0 }
        };
        let mut centre_error: f64 = 0.0;
        for centre in centres.rows() {
            let nearest = (0..2)
                .map(|class| {
                    centre
                        .iter()
                        .enumerate()
                        .map(|(j, v)| (v - generating(class, j)).abs())
                        .fold(0.0, f64::max)
                })
                .fold(f64::INFINITY, f64::min);
            centre_error = centre_error.max(nearest);
        }
        println!(
            "k-means: {} iterations, inertia {:.6e}, centres within {centre_error:.4} of the \
             generating ones ({kmeans_s:.2} s)",
            kmeans.n_iter().unwrap_or(0),
            kmeans.inertia().unwrap_or(f64::NAN)
        );

        // A grid of 24 trees (after standardisation, fitted once per fold) on a sample,
        // 3 folds each; the best refitted and scored on other rows.
        let started = Instant::now();
        let mut grid = vec![];
        for max_depth in [1, 2, 3, 4, 6, 8] {
            for min_samples_leaf in [1, 5, 20, 50] {
                let tree = DecisionTreeClassifier {
                    max_depth: Some(max_depth),
                    min_samples_leaf,
                    ..Default::default()
                };
                grid.push((Standardize, tree));
            }
        }
        let mut search = GridSearchCV::pipeline(grid);
        search.cv = KFold {
            n_splits: 3,
            shuffle: Some(cli.seed),
        };
        search.fit(client, &rows(&x, 0..cli.sample), &rows(&y, 0..cli.sample))?;
        let held_out = 2 * cli.sample;
        let tree_accuracy = search.score(
            client,
            &rows(&x, cli.sample..held_out),
            &rows(&y, cli.sample..held_out),
        )?;
        let search_s = started.elapsed().as_secs_f64();
        print!("{}", search.cv_results().expect("fitted"));
        let best_score = search.best_score().expect("fitted");
        println!(
            "grid search: best {:?}, cross-validated accuracy {best_score:.4}, held-out \
             accuracy {tree_accuracy:.4} ({search_s:.2} s)",
            search.best_params().expect("fitted").1
        );
        println!(
            "RESULT rows={} logistic_accuracy={logistic_accuracy:.6} \
             kmeans_centre_error={centre_error:.6} best_tree_cv={best_score:.6} \
             best_tree_held_out={tree_accuracy:.6} logistic_s={logistic_s:.3} \
             kmeans_s={kmeans_s:.3} gridsearch_s={search_s:.3}",
            cli.rows
        );
        ensure!(
            logistic_accuracy >= ACCURACY,
            "CHECK failed: logistic regression's test accuracy {logistic_accuracy} is below \
             {ACCURACY}"
        );
        ensure!(
            centre_error <= CENTRE_TOLERANCE,
            "CHECK failed: a k-means centre lies {centre_error} from the generating centres \
             (tolerance {CENTRE_TOLERANCE})"
        );
        ensure!(
            best_score >= ACCURACY && tree_accuracy >= ACCURACY,
            "CHECK failed: the best tree's accuracies {best_score} (cross-validated) and \
             {tree_accuracy} (held out) must be at least {ACCURACY}"
        );
        println!("CHECK ok");
        Ok(())
    })
}
