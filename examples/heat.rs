//! The 2-D heat equation, explicit in time with a 5-point stencil, on a grid cut into
//! chunks that stay on the workers: each step only the halos (one cell deep) move between
//! neighbouring chunks, as MPI messages. In Dask:
//!
//! ```python
//! for _ in range(steps):
//!     u = u.map_overlap(step, depth=1, boundary=0).persist()
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/heat --n 2000 --chunk 500 --steps 100 --check
//! ```
//!
//! The grid holds a hot square in a cold plate whose edges are kept at 0. It prints the
//! heat left and the time, then `RESULT n=<n> steps=<n> heat=<value> seconds=<value>
//! cells_per_s=<value>`. With `--check` it also runs the same steps on one `ndarray` on
//! the client and exits non-zero if any cell differs by more than 1e-12.

use anyhow::ensure;
use clap::Parser;
use mpidask::array::{self, Boundary};
use ndarray::{Array2, ArrayD, Ix2};
use std::time::Instant;

/// The diffusion number `alpha dt / dx^2` (stable up to 1/4).
const ALPHA: f64 = 0.2;

/// The 2-D heat equation on a chunked grid with mpidask's map_overlap.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Grid side (the grid is n x n)
    #[arg(long, default_value_t = 1000)]
    n: usize,

    /// Chunk side
    #[arg(long, default_value_t = 300)]
    chunk: usize,

    /// Time steps
    #[arg(long, default_value_t = 50)]
    steps: usize,

    /// Also run the steps on one array on the client and compare
    #[arg(long)]
    check: bool,

    /// Print the task graph of one step first
    #[arg(long)]
    explain: bool,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// One time step of the inner cells of a padded block (its outer ring is the halo, left
/// as it is and cut off afterwards).
fn step_block(u: &Array2<f64>) -> Array2<f64> {
    let (rows, cols) = u.dim();
    let mut next = u.clone();
    let src = u.as_slice().expect("a standard layout block");
    let dst = next.as_slice_mut().expect("a standard layout block");
    for i in 1..rows.saturating_sub(1) {
        let (up, row, down) = (
            &src[(i - 1) * cols..i * cols],
            &src[i * cols..(i + 1) * cols],
            &src[(i + 1) * cols..(i + 2) * cols],
        );
        let out = &mut dst[i * cols..(i + 1) * cols];
        for j in 1..cols - 1 {
            let c = row[j];
            out[j] = c + ALPHA * (up[j] + down[j] + row[j - 1] + row[j + 1] - 4.0 * c);
        }
    }
    next
}

/// The task: one step of a padded chunk.
fn step(block: ArrayD<f64>) -> ArrayD<f64> {
    let u = block.into_dimensionality::<Ix2>().expect("a 2-D block");
    if u.is_standard_layout() {
        step_block(&u).into_dyn()
    } else {
        step_block(&u.as_standard_layout().into_owned()).into_dyn()
    }
}

/// The starting grid: 1 in the middle third, 0 elsewhere.
fn initial(n: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, n), |(i, j)| {
        let inside = |k: usize| 3 * k >= n && 3 * k < 2 * n;
        if inside(i) && inside(j) { 1.0 } else { 0.0 }
    })
}

/// The same steps on one array: padded with the zero edge, stepped, cut.
fn sequential(u0: &Array2<f64>, steps: usize) -> Array2<f64> {
    let n = u0.nrows();
    let mut padded = Array2::zeros((n + 2, n + 2));
    padded.slice_mut(ndarray::s![1..n + 1, 1..n + 1]).assign(u0);
    for _ in 0..steps {
        padded = step_block(&padded);
    }
    padded.slice(ndarray::s![1..n + 1, 1..n + 1]).to_owned()
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        ensure!(cli.n >= 3, "--n must be at least 3, got {}", cli.n);
        ensure!(
            cli.chunk >= 1,
            "--chunk must be at least 1, got {}",
            cli.chunk
        );
        let u0 = initial(cli.n);
        let u = array::from_array(&u0.clone().into_dyn(), &[cli.chunk, cli.chunk]);
        if cli.explain {
            println!(
                "{}",
                u.map_overlap(step, &[1, 1], Boundary::Constant(0.0))
                    .explain()
            );
        }
        let started = Instant::now();
        let u = u.iterate_overlap(client, step, &[1, 1], Boundary::Constant(0.0), cli.steps)?;
        let heat = u.sum().compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        let cells = (cli.n * cli.n * cli.steps) as f64;
        println!(
            "heat left after {} steps on {} x {} in chunks of {}: {heat:.6} ({seconds:.3} s)",
            cli.steps, cli.n, cli.n, cli.chunk
        );
        println!(
            "RESULT n={} steps={} heat={heat:.9} seconds={seconds:.6} cells_per_s={:.0}",
            cli.n,
            cli.steps,
            cells / seconds
        );
        if cli.check {
            let got = u.compute::<f64>(client)?;
            let want = sequential(&u0, cli.steps);
            let far = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            ensure!(
                far <= 1e-12,
                "CHECK failed: a cell differs from the single-array run by {far:e}"
            );
            println!(
                "CHECK ok: {} cells equal to the single-array run (largest difference {far:e})",
                cli.n * cli.n
            );
        }
        Ok(())
    })
}
