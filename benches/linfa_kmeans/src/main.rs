//! The `ml` bench's single-process baseline (issue 21): `linfa_clustering::KMeans` on
//! ROWS x 20 `f64` of the bench's definition (`x[i, j] = 6 cos(k (j + 1)) + e[i, j]`,
//! `k = i % 8`, `e` standard normal, drawn here by splitmix64 and Box-Muller), k = 8 from
//! the bench's centres (`6 cos(k (j + 1)) + 0.5`), exactly 10 iterations. Only
//! the fit is timed. Run it with `RAYON_NUM_THREADS=1` for one core.
//!
//! ```text
//! linfa-kmeans-baseline ROWS
//! ```
//!
//! Prints `RESULT name=linfa_kmeans seconds=<s> inertia=<per value>` and exits 0, or exits
//! 1 when the inertia per value is not within 1 % of the noise's (1).

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use std::time::Instant;

const COLS: usize = 20;
const CLUSTERS: usize = 8;
const ITERATIONS: usize = 10;

/// Uniform numbers in (0, 1) from splitmix64.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal number (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next(), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn main() {
    let rows: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(rows)) if rows >= CLUSTERS => rows,
        _ => {
            eprintln!("usage: linfa-kmeans-baseline ROWS (at least {CLUSTERS})");
            std::process::exit(2);
        }
    };
    let mut noise = Uniform(11);
    let x = Array2::from_shape_fn((rows, COLS), |(i, j)| {
        6.0 * (((i % CLUSTERS) * (j + 1)) as f64).cos() + noise.normal()
    });
    let centres = Array2::from_shape_fn((CLUSTERS, COLS), |(k, j)| {
        6.0 * ((k * (j + 1)) as f64).cos() + 0.5
    });
    let data = DatasetBase::from(x);
    let started = Instant::now();
    // linfa stops when the centres move by less than its tolerance, which must be
    // positive, and they stop moving here after a few iterations: each iteration is a fit
    // of one iteration from the centres of the one before, so that exactly 10 run.
    let mut centres = centres;
    let mut inertia = f64::NAN;
    for _ in 0..ITERATIONS {
        let model = KMeans::params(CLUSTERS)
            .n_runs(1)
            .max_n_iterations(1)
            .tolerance(f64::MIN_POSITIVE)
            .init_method(KMeansInit::Precomputed(centres))
            .fit(&data)
            .unwrap_or_else(|e| {
                eprintln!("linfa's KMeans failed: {e}");
                std::process::exit(1);
            });
        centres = model.centroids().clone();
        inertia = model.inertia();
    }
    let seconds = started.elapsed().as_secs_f64();
    // linfa's inertia is per sample (of the last iteration's centres).
    let inertia = inertia / COLS as f64;
    if (inertia - 1.0).abs() >= 0.01 {
        eprintln!("CHECK FAILED: linfa's k-means inertia per value {inertia}");
        std::process::exit(1);
    }
    println!("RESULT name=linfa_kmeans seconds={seconds} inertia={inertia}");
}
