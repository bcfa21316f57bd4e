//! Machine learning of issue 21 under `mpirun -np 4` (mpidask: 2 workers of one thread),
//! each round launching mpidask and then dask-mpi with dask-ml (`benches/ml_dask.py`) on
//! data of the same definition, shapes and chunks (interleaved):
//!
//! * the data: `rows` x 20 `f64` (default 20,000,000 rows, 3.2 GB, in chunks of 250,000
//!   rows, 40 MB): `x[i, j] = 6 cos(k (j + 1)) + e[i, j]`, `k = i % 8`, `e` standard
//!   normal (8 well-separated clusters), and classes `y = (x . w + 3 f > 0)` with
//!   `w[j] = cos(j)` and `f` standard normal. Both persisted, untimed.
//! * `kmeans_s`: `KMeans` of k = 8 from the same given centres (`6 cos(k (j + 1)) + 0.5`),
//!   exactly 10 Lloyd iterations (`tol = -1`, `max_iter = 10`) against
//!   `dask_ml.cluster.KMeans(8, init=centres, max_iter=10, tol=-1)`. Checked: 10
//!   iterations and an inertia within 1 % of `rows x 20` (the noise's). Goal: 10x.
//! * `logistic_s`: `LogisticRegression` (L2, C = 1; mpidask: Newton) against
//!   `dask_ml.linear_model.LogisticRegression(solver="lbfgs")` (the same objective: L2,
//!   C = 1; its default solver, ADMM, took over 80 s where L-BFGS took 17 s on 400,000
//!   rows), fitted on all rows. Checked: training accuracy at least 0.7. Goal: 10x.
//! * `gridsearch_s`: 24 decision trees (`max_depth` 1, 2, 3, 4, 6, 8 x `min_samples_leaf`
//!   1, 5, 20, 50) x 3 folds = 72 fits on the first `sample` rows (default 100,000):
//!   mpidask's `GridSearchCV` of `ml::linfa::DecisionTreeClassifier` against dask-ml's
//!   `GridSearchCV(DecisionTreeClassifier(), cv=3)` with scikit-learn's trees, both timed
//!   from the sample's computation to the best score. Checked: best score at least 0.7.
//!   Reported, no goal.
//!
//! Both runtimes' workers get a memory limit of 12 GB each, spilling into a scratch
//! directory under `$TMPDIR`. `MPIDASK_BENCH_ML_ROWS` and `MPIDASK_BENCH_ML_SAMPLE` make it
//! smaller. A smoke run (20,000 rows in chunks of 2,500, a sample of 2,000) runs mpidask
//! only, as the other benchmarks' smoke runs do.
//! * `kmeans_linfa_scaled_s` (with `kmeans_s`): `linfa_clustering::KMeans`
//!   (`benches/linfa_kmeans`, a program of its own that the bench builds, sharing no code
//!   with mpidask) on a tenth of the rows of the same definition on one core, the same 10
//!   iterations from the same centres (10 fits of one iteration each: linfa stops when the
//!   centres stop moving), its time times 10 and divided by the 2 workers. Checked: an
//!   inertia within 1 % of the noise's. Reported as `kmeans_vs_linfa`, no goal.
//!
//! Only the workloads whose figures are asked for run, on both sides.
//!
//! ```text
//! cargo bench --bench ml [-- kmeans_s | logistic_s | gridsearch_s]
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{Scratch, env_count, figure, peer_python, ratio, rounds, size, smoke};
use mpidask::array::{self, Array, DType, Span, random};
use mpidask::ml::cluster::{Init, KMeans};
use mpidask::ml::linear_model::LogisticRegression;
use mpidask::ml::linfa::DecisionTreeClassifier;
use mpidask::ml::model_selection::GridSearchCV;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
const COLS: usize = 20;
const CLUSTERS: usize = 8;
const SEED: u64 = 11;
const MEMORY_LIMIT: u64 = 12_000_000_000;
const PEER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ml_dask.py");
/// The workloads, each the figure `<name>_s`.
const WORKLOADS: [&str; 3] = ["kmeans", "logistic", "gridsearch"];
/// Tells the mpidask role which workloads to run (comma-separated).
const CHOSEN: &str = "MPIDASK_BENCH_ML_WORKLOADS";

/// The sizes: rows, rows per chunk, grid-search sample rows.
fn sizes() -> (usize, usize, usize) {
    let rows = env_count("MPIDASK_BENCH_ML_ROWS", size(20_000_000, 20_000));
    let chunk = size(250_000, 2_500).min(rows);
    let sample = env_count("MPIDASK_BENCH_ML_SAMPLE", size(100_000, 2_000)).min(rows);
    assert!(
        sample >= 30,
        "the sample needs at least 30 rows, got {sample}"
    );
    (rows, chunk, sample)
}

/// The clusters' centres, `6 cos(k (j + 1))`, shifted by `offset`.
fn centres(offset: f64) -> ndarray::Array2<f64> {
    ndarray::Array2::from_shape_fn((CLUSTERS, COLS), |(k, j)| {
        6.0 * ((k * (j + 1)) as f64).cos() + offset
    })
}

/// The samples and their classes, lazily.
fn data(rows: usize, chunk: usize) -> (Array, Array) {
    let n = rows as isize;
    let k = array::arange(0.0, rows as f64, 1.0, chunk).reshape(&[n, 1]) % CLUSTERS as f64;
    let j = array::arange(1.0, COLS as f64 + 1.0, 1.0, COLS).reshape(&[1, COLS as isize]);
    let x = &(&k * &j).cos() * 6.0 + random::normal(0.0, 1.0, &[rows, COLS], &[chunk, COLS], SEED);
    let w = ndarray::Array1::from_shape_fn(COLS, |j| (j as f64).cos());
    let w = array::from_array(
        &w.into_shape_with_order((COLS, 1)).expect("w").into_dyn(),
        &[COLS, 1],
    );
    let f = random::normal(0.0, 1.0, &[rows], &[chunk], SEED + 1);
    let y = (x.dot(&w).reshape(&[n]) + f * 3.0)
        .gt(0.0)
        .astype(DType::I64);
    (x, y)
}

fn role_ml() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let (rows, chunk, sample) = sizes();
        let (x, y) = data(rows, chunk);
        let x = x.persist(client)?;
        let y = y.persist(client)?;
        client.wait(&x.to_futures::<f64>(client)?)?;
        client.wait(&y.to_futures::<i64>(client)?)?;
        let chosen = std::env::var(CHOSEN).unwrap_or_default();
        let chosen: Vec<&str> = chosen.split(',').collect();
        if chosen.contains(&"kmeans") {
            kmeans_fit(client, &x)?;
        }
        if chosen.contains(&"logistic") {
            logistic_fit(client, &x, &y)?;
        }
        if chosen.contains(&"gridsearch") {
            gridsearch_fit(client, &x, &y, sample)?;
        }
        Ok(())
    })
}

fn kmeans_fit(client: &mpidask::Client, x: &Array) -> anyhow::Result<()> {
    let rows = x.shape()[0];
    let started = Instant::now();
    let mut kmeans = KMeans::new(CLUSTERS);
    kmeans.init = Init::Centers(centres(0.5));
    kmeans.max_iter = 10;
    kmeans.tol = -1.0;
    kmeans.fit(client, x)?;
    let seconds = started.elapsed().as_secs_f64();
    let inertia = kmeans.inertia().unwrap_or(f64::NAN) / (rows * COLS) as f64;
    anyhow::ensure!(
        kmeans.n_iter() == Some(10),
        "k-means ran {:?} iterations",
        kmeans.n_iter()
    );
    anyhow::ensure!(
        (inertia - 1.0).abs() < 0.01,
        "k-means inertia per value {inertia}"
    );
    println!("RESULT name=kmeans seconds={seconds} inertia={inertia}");
    Ok(())
}

fn logistic_fit(client: &mpidask::Client, x: &Array, y: &Array) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut logistic = LogisticRegression::new();
    logistic.fit(client, x, y)?;
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = logistic.score(client, x, y)?;
    anyhow::ensure!(accuracy >= 0.7, "logistic regression's accuracy {accuracy}");
    println!("RESULT name=logistic seconds={seconds} accuracy={accuracy}");
    Ok(())
}

fn gridsearch_fit(
    client: &mpidask::Client,
    x: &Array,
    y: &Array,
    sample: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut grid = vec![];
    for max_depth in [1, 2, 3, 4, 6, 8] {
        for min_samples_leaf in [1, 5, 20, 50] {
            grid.push(DecisionTreeClassifier {
                max_depth: Some(max_depth),
                min_samples_leaf,
                ..Default::default()
            });
        }
    }
    let mut search = GridSearchCV::new(grid);
    search.cv.n_splits = 3;
    search.refit = false;
    let first: Span = (0..sample as isize).into();
    search.fit(client, &x.slice(&[first, Span::all()]), &y.slice(&[first]))?;
    let seconds = started.elapsed().as_secs_f64();
    let best = search.best_score().unwrap_or(f64::NAN);
    anyhow::ensure!(best >= 0.7, "the grid search's best score {best}");
    println!("RESULT name=gridsearch seconds={seconds} best={best}");
    Ok(())
}

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 180 } else { 3600 })
}

/// The numbers `keys` of the launch's line `RESULT name=<name> ...`.
fn result(run: &Run, who: &str, name: &str, keys: &[&str]) -> Vec<f64> {
    run.expect_code(0);
    common::named_result(&run.stdout, who, name, keys, || run.dump())
}

fn launch_mpidask(chosen: &[&str]) -> Run {
    let scratch = Scratch::new("ml");
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_MEMORY_LIMIT", MEMORY_LIMIT.to_string())
        .env("MPIDASK_LOCAL_DIRECTORY", &scratch.0)
        .env("MPIDASK_BENCH_ROLE", "ml")
        .env(CHOSEN, chosen.join(","));
    run_with_deadline(command, deadline())
}

/// dask-mpi with dask-ml: `ml_dask.py ROWS COLS CHUNK SAMPLE LIMIT DIR` under mpirun.
fn launch_dask(python: &Path, chosen: &[&str]) -> Run {
    let (rows, chunk, sample) = sizes();
    let scratch = Scratch::new("ml-daskmpi");
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(PEER_SCRIPT)
        .args([rows, COLS, chunk, sample].map(|v| v.to_string()))
        .arg(MEMORY_LIMIT.to_string())
        .arg(&scratch.0)
        .arg(chosen.join(","))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    run_with_deadline(command, deadline())
}

fn main() {
    if std::env::var("MPIDASK_BENCH_ROLE").as_deref() == Ok("ml") {
        role_ml();
    }
    let wanted = common::wanted_by_args();
    let chosen: Vec<&str> = WORKLOADS
        .into_iter()
        .filter(|name| wanted(&format!("{name}_s")))
        .collect();
    if chosen.is_empty() {
        return;
    }
    let python = (!smoke()).then(|| peer_python("dask_ml"));
    let linfa = (!smoke() && chosen.contains(&"kmeans")).then(build_linfa_baseline);
    let (mut ours, mut dask) = (vec![vec![]; chosen.len()], vec![vec![]; chosen.len()]);
    let mut linfa_scaled = vec![];
    for _ in 0..rounds() {
        let run = launch_mpidask(&chosen);
        for (i, name) in chosen.iter().enumerate() {
            ours[i].push(result(&run, "mpidask", name, &["seconds"])[0]);
        }
        if let Some(python) = &python {
            let run = launch_dask(python, &chosen);
            for (i, name) in chosen.iter().enumerate() {
                dask[i].push(result(&run, "dask-mpi", name, &["seconds"])[0]);
            }
        }
        if let Some(linfa) = &linfa {
            let run = launch_linfa(linfa);
            let seconds = result(&run, "linfa", "linfa_kmeans", &["seconds"])[0];
            linfa_scaled.push(seconds * LINFA_SCALE);
        }
    }
    let (rows, chunk, sample) = sizes();
    println!(
        "ml: {rows} x {COLS} f64 ({:.2} GB) in chunks of {chunk} rows, grid search on {sample} \
         rows, -np {NP} (2 workers)",
        (rows * COLS * 8) as f64 / 1e9
    );
    for (i, name) in chosen.iter().enumerate() {
        let figure_name = format!("{name}_s");
        figure(&figure_name, "s", &ours[i], None);
        if !dask[i].is_empty() {
            let peer = format!("{name}_daskml_s");
            figure(&peer, "s", &dask[i], None);
            ratio(
                &format!("{name}_vs_daskml"),
                &ours[i],
                &dask[i],
                true,
                &peer,
            );
        }
        if *name == "kmeans" && !linfa_scaled.is_empty() {
            let baseline = "kmeans_linfa_scaled_s";
            figure(baseline, "s", &linfa_scaled, None);
            ratio("kmeans_vs_linfa", &ours[i], &linfa_scaled, true, baseline);
        }
    }
}

/// linfa's run on a tenth of the rows, on one core, times 10 and divided by the workers:
/// what single-process linfa would take on the whole data with the workers' cores.
const LINFA_SCALE: f64 = 10.0 / (NP - 2) as f64;

/// Builds `benches/linfa_kmeans` (its own package and target directory): the baseline
/// program, or a panic saying why there is none.
fn build_linfa_baseline() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join("benches/linfa_kmeans/Cargo.toml");
    let target = root.join("target/linfa-kmeans");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the linfa baseline: {e}"));
    assert!(
        status.success(),
        "the linfa baseline ({}) did not build: {status}",
        manifest.display()
    );
    target.join("release/linfa-kmeans-baseline")
}

/// The linfa baseline on a tenth of the rows, on one core.
fn launch_linfa(program: &Path) -> Run {
    let (rows, _, _) = sizes();
    let mut command = Command::new(program);
    command
        .arg((rows / 10).to_string())
        .env("RAYON_NUM_THREADS", "1");
    run_with_deadline(command, deadline())
}
