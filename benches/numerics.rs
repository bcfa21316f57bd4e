//! Numerical workloads of issue 20 under `mpirun -np 4` (mpidask: 2 workers of one
//! thread), each round launching mpidask and its baselines in turn (interleaved):
//!
//! * `stencil_cells_per_s`: the 5-point heat stencil `u' = u + 0.2 (u[i-1, j] + u[i+1, j] +
//!   u[i, j-1] + u[i, j+1] - 4 u[i, j])` with a periodic boundary, `steps` times on an
//!   n x n grid of `f64` starting from `u0[i, j] = ((7 i + 13 j) % 101) / 100`. Each side
//!   builds and persists the grid (untimed), then times the steps alone:
//!   - mpidask: `u.iterate_overlap(client, stencil_block, &[1, 1], Boundary::Periodic,
//!     steps)`, until the last step's chunks are on the workers. The block function
//!     updates the inner cells of the padded block in place (a row kept aside);
//!   - `stencil_spmd`: a hand-written rsmpi program (nothing from mpidask): the rows cut
//!     into 4 blocks, one per rank, each step one halo row exchanged with each neighbour
//!     (`MPI_Sendrecv`, rank 3 and rank 0 neighbours), the periodic columns wrapped
//!     locally, the update into a second buffer and the buffers swapped;
//!   - dask-mpi (`benches/numerics_dask.py stencil`): `u = u.map_overlap(step, depth=1,
//!     boundary='periodic').persist(); wait(u)` per step, NumPy on the padded block.
//!
//!   Cells per second are `n * n * steps / seconds`. Every side checks that the sum of `u`
//!   is conserved (1e-9 relative), and the bench that the three sums of squares agree
//!   (1e-9 relative) and that every side started from the grid's exact sum. The ratio to
//!   the SPMD program has a target: at least 0.8x.
//!
//! * `tsqr_gb_per_s`: `linalg::tsqr` of a persisted `random::normal` matrix of
//!   `rows` x 64 in row chunks (default 20,000,000 x 64, 10.24 GB, in chunks of 390,625
//!   rows, 200 MB). Timed: `R` and the column sums of `Q * Q` computed together, in one
//!   graph (they are joined into one array, so TSQR's tasks run once: mpidask has no
//!   public call computing several arrays in one graph, as `dask.compute(a, b)`; `Q` is
//!   never gathered). Checks: the sum of squares of `Q` is 64 (1e-8 relative), `R` is upper
//!   triangular and `|R[0, 0]|` is within 5 % of `sqrt(rows)`. GB/s are the bytes of the
//!   matrix per second. Beside it in each round: Dask's `da.linalg.tsqr` under dask-mpi
//!   (`dask.compute(r, (q ** 2).sum(axis=0))`, the same shape and chunks) and NumPy's
//!   `np.linalg.qr` of one chunk in one process on one core (`OPENBLAS_NUM_THREADS=1`),
//!   its GB/s times the 2 workers (`tsqr_numpy_chunk_x2`).
//!
//! * `svd_compressed_s`: `linalg::svd_compressed(&x, 20, 2, seed)` of `x = a b + 0.01 e`
//!   (`a`: rows x 20, `b`: 20 x 1,250, `e`: rows x 1,250, all standard normal: rank 20
//!   plus noise), default 1,000,000 x 1,250 (10 GB) in row chunks of 20,000 (200 MB),
//!   persisted untimed. Timed: `u`, `s` and `v` persisted together (joined into one array
//!   again). Checks (after the timing): 20 singular values, decreasing, and
//!   `|x - u diag(s) v| / |x| < 0.01` (Frobenius norms). Against Dask's
//!   `da.linalg.svd_compressed(x, k=20, n_power_iter=2, seed=...)`, `u, s, v` persisted
//!   together.
//!
//! The workers of both runtimes get a memory limit of 12 GB each and spill into a scratch
//! directory under `$TMPDIR`. Sizes can be made smaller for a shorter run (the figures'
//! header lines print the sizes used):
//!
//! | variable | default | smoke |
//! |---|---|---|
//! | `MPIDASK_BENCH_STENCIL_N` (grid side) | 16384 | 256 |
//! | `MPIDASK_BENCH_STENCIL_CHUNK` (chunk side) | 4096 | 64 |
//! | `MPIDASK_BENCH_STENCIL_STEPS` | 200 | 3 |
//! | `MPIDASK_BENCH_TSQR_ROWS` (chunks of 390,625 rows, at most all) | 20,000,000 | 20,000 (chunks of 2,500) |
//! | `MPIDASK_BENCH_SVD_ROWS` (chunks of 20,000 rows, at most all) | 1,000,000 | 4,000 x 125 (chunks of 500) |
//!
//! The Python peers (dask-mpi, NumPy) run in real runs only, as in the other benchmarks: a
//! smoke run checks the project's own code and its baseline.
//!
//! ```text
//! cargo bench --bench numerics [-- stencil | tsqr | svd_compressed]
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{
    Scratch, advise_huge_pages, env_count, figure, median, peer_python, ratio, rounds, size, smoke,
};
use mpi::collective::SystemOperation;
use mpi::point_to_point::send_receive_into_with_tags;
use mpi::traits::*;
use mpidask::array::{self, Array, Boundary, linalg, random};
use ndarray::{ArrayD, Ix2};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
/// mpidask's workers (ranks 2..), of one thread each.
const WORKERS: usize = NP - 2;
const SEED: u64 = 7;
/// The diffusion number of the stencil.
const ALPHA: f64 = 0.2;
/// Each worker's memory limit, both runtimes (bytes).
const MEMORY_LIMIT: u64 = 12_000_000_000;
/// The stencil's target against the SPMD program.
const STENCIL_TARGET: f64 = 0.8;
/// Columns of the TSQR matrix.
const TSQR_COLS: usize = 64;
/// The SVD's rank and power iterations.
const SVD_K: usize = 20;
const SVD_POWER_ITER: usize = 2;
const PEER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/numerics_dask.py");

// ----- sizes (the parent's and every role's: the roles inherit the environment) -----------

#[derive(Debug, Clone, Copy)]
struct Stencil {
    n: usize,
    chunk: usize,
    steps: usize,
}

impl Stencil {
    fn get() -> Stencil {
        let s = Stencil {
            n: env_count("MPIDASK_BENCH_STENCIL_N", size(16_384, 256)),
            chunk: env_count("MPIDASK_BENCH_STENCIL_CHUNK", size(4_096, 64)),
            steps: env_count("MPIDASK_BENCH_STENCIL_STEPS", size(200, 3)),
        };
        assert!(
            s.n >= 2 * NP && (1..=s.n).contains(&s.chunk) && s.steps >= 1,
            "stencil sizes {s:?}: n must be at least {}, chunk between 1 and n, steps at least 1",
            2 * NP
        );
        s
    }

    fn cells(&self) -> f64 {
        (self.n * self.n * self.steps) as f64
    }
}

/// A tall matrix in row chunks.
#[derive(Debug, Clone, Copy)]
struct Tall {
    rows: usize,
    cols: usize,
    chunk: usize,
}

impl Tall {
    fn tsqr() -> Tall {
        let rows = env_count("MPIDASK_BENCH_TSQR_ROWS", size(20_000_000, 20_000));
        Tall::checked(rows, TSQR_COLS, size(390_625, 2_500).min(rows))
    }

    fn svd() -> Tall {
        let rows = env_count("MPIDASK_BENCH_SVD_ROWS", size(1_000_000, 4_000));
        Tall::checked(rows, size(1_250, 125), size(20_000, 500).min(rows))
    }

    fn checked(rows: usize, cols: usize, chunk: usize) -> Tall {
        let t = Tall { rows, cols, chunk };
        assert!(
            rows >= cols && chunk >= 1,
            "matrix sizes {t:?}: at least as many rows as columns"
        );
        t
    }

    fn bytes(&self) -> f64 {
        (self.rows * self.cols * 8) as f64
    }

    fn args(&self) -> Vec<String> {
        [self.rows, self.cols, self.chunk]
            .map(|v| v.to_string())
            .to_vec()
    }
}

// ----- the stencil -----------------------------------------------------------------------

/// The exact sum of the starting grid, `sum ((7 i + 13 j) % 101) / 100`, by residues.
fn initial_sum(n: usize) -> f64 {
    let (mut rows, mut cols) = ([0u64; 101], [0u64; 101]);
    for k in 0..n {
        rows[(7 * k) % 101] += 1;
        cols[(13 * k) % 101] += 1;
    }
    let mut total = 0u64;
    for (a, &ra) in rows.iter().enumerate() {
        for (b, &cb) in cols.iter().enumerate() {
            total += ra * cb * ((a + b) % 101) as u64;
        }
    }
    total as f64 / 100.0
}

/// mpidask's starting grid, lazily from two index vectors.
fn initial_grid(s: Stencil) -> Array {
    let n = s.n as isize;
    let i = array::arange(0.0, s.n as f64, 1.0, s.chunk).reshape(&[n, 1]);
    let j = array::arange(0.0, s.n as f64, 1.0, s.chunk).reshape(&[1, n]);
    ((i * 7.0 + j * 13.0) % 101.0) / 100.0
}

/// mpidask's task: one step of the inner cells of a padded block, in place (the row being
/// overwritten is copied aside first, the row above kept from the previous one); the halo
/// ring is left as it is and cut off by `map_overlap`.
fn stencil_block(block: ArrayD<f64>) -> ArrayD<f64> {
    let mut block = if block.is_standard_layout() {
        block
    } else {
        block.as_standard_layout().into_owned()
    };
    let (rows, cols) = (block.shape()[0], block.shape()[1]);
    if rows < 3 || cols < 3 {
        return block;
    }
    let cells = block.as_slice_mut().expect("a standard layout block");
    let mut above = cells[..cols].to_vec();
    let mut here = vec![0.0; cols];
    for i in 1..rows - 1 {
        let (row, below) = cells[i * cols..(i + 2) * cols].split_at_mut(cols);
        here.copy_from_slice(row);
        let inner = row[1..cols - 1]
            .iter_mut()
            .zip(&above[1..cols - 1])
            .zip(&below[1..cols - 1])
            .zip(&here[..cols - 2])
            .zip(&here[1..cols - 1])
            .zip(&here[2..]);
        for (((((out, &up), &down), &left), &c), &right) in inner {
            *out = c + ALPHA * (up + down + left + right - 4.0 * c);
        }
        std::mem::swap(&mut above, &mut here);
    }
    block
}

/// The checks every side makes of its own stencil run: the sum conserved.
fn check_conserved(sum0: f64, sum: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (sum - sum0).abs() <= 1e-9 * sum0.abs(),
        "the sum went from {sum0} to {sum}: not conserved"
    );
    Ok(())
}

fn role_stencil() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let s = Stencil::get();
        let u = initial_grid(s).persist(client)?;
        client.wait(&u.to_futures::<f64>(client)?)?;
        let sum0 = u.sum().compute_scalar::<f64>(client)?;
        let started = Instant::now();
        let u = u.iterate_overlap(client, stencil_block, &[1, 1], Boundary::Periodic, s.steps)?;
        client.wait(&u.to_futures::<f64>(client)?)?;
        let seconds = started.elapsed().as_secs_f64();
        let sum = u.sum().compute_scalar::<f64>(client)?;
        let sumsq = u.powi(2).sum().compute_scalar::<f64>(client)?;
        check_conserved(sum0, sum)?;
        println!("RESULT name=stencil seconds={seconds} sum0={sum0:?} sum={sum:?} sumsq={sumsq:?}");
        Ok(())
    })
}

/// The hand-written SPMD stencil: rsmpi and std only. Rank `r` holds rows `first..first +
/// rows` of the grid in a buffer of `rows + 2` rows (row 0 and the last: the neighbours'
/// halo rows).
fn role_stencil_spmd() {
    let s = Stencil::get();
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (rank, ranks) = (world.rank() as usize, world.size() as usize);
    let n = s.n;
    let rows = n / ranks + usize::from(rank < n % ranks);
    let first = rank * (n / ranks) + rank.min(n % ranks);
    let buffer = || {
        let mut cells: Vec<f64> = Vec::with_capacity((rows + 2) * n);
        advise_huge_pages(&mut cells);
        cells.resize((rows + 2) * n, 0.0);
        cells
    };
    let (mut u, mut next) = (buffer(), buffer());
    for r in 0..rows {
        let i = first + r;
        for (j, cell) in u[(r + 1) * n..(r + 2) * n].iter_mut().enumerate() {
            *cell = ((i * 7 + j * 13) % 101) as f64 / 100.0;
        }
    }
    let sums = |u: &[f64]| -> [f64; 2] {
        let mut total = [0.0; 2];
        for row in u[n..(rows + 1) * n].chunks_exact(n) {
            total[0] += row.iter().sum::<f64>();
            total[1] += row.iter().map(|v| v * v).sum::<f64>();
        }
        total
    };
    let root = world.process_at_rank(0);
    let reduce = |local: [f64; 2]| -> [f64; 2] {
        let mut total = [0.0; 2];
        if rank == 0 {
            root.reduce_into_root(&local[..], &mut total[..], SystemOperation::sum());
        } else {
            root.reduce_into(&local[..], SystemOperation::sum());
        }
        total
    };
    let sum0 = reduce(sums(&u))[0];
    let above = world.process_at_rank(((rank + ranks - 1) % ranks) as i32);
    let below = world.process_at_rank(((rank + 1) % ranks) as i32);
    world.barrier();
    let started = Instant::now();
    for _ in 0..s.steps {
        // My first row goes up, the bottom halo comes from below; my last row goes down,
        // the top halo comes from above.
        let (mine, bottom) = u.split_at_mut((rows + 1) * n);
        send_receive_into_with_tags(&mine[n..2 * n], &above, 1, bottom, &below, 1);
        let (top, mine) = mine.split_at_mut(n);
        send_receive_into_with_tags(&mine[(rows - 1) * n..], &below, 2, top, &above, 2);
        for i in 1..=rows {
            let (up, row, down) = (
                &u[(i - 1) * n..i * n],
                &u[i * n..(i + 1) * n],
                &u[(i + 1) * n..(i + 2) * n],
            );
            let out = &mut next[i * n..(i + 1) * n];
            let cells = out[1..n - 1]
                .iter_mut()
                .zip(&up[1..n - 1])
                .zip(&down[1..n - 1])
                .zip(&row[..n - 2])
                .zip(&row[1..n - 1])
                .zip(&row[2..]);
            for (((((o, &a), &b), &l), &c), &r) in cells {
                *o = c + ALPHA * (a + b + l + r - 4.0 * c);
            }
            // The periodic columns: 0's left neighbour is n - 1, n - 1's right is 0.
            let (c, l, r) = (row[0], row[n - 1], row[1]);
            out[0] = c + ALPHA * (up[0] + down[0] + l + r - 4.0 * c);
            let (c, l, r) = (row[n - 1], row[n - 2], row[0]);
            out[n - 1] = c + ALPHA * (up[n - 1] + down[n - 1] + l + r - 4.0 * c);
        }
        std::mem::swap(&mut u, &mut next);
    }
    world.barrier();
    let seconds = started.elapsed().as_secs_f64();
    let [sum, sumsq] = reduce(sums(&u));
    if rank == 0 {
        check_conserved(sum0, sum).expect("the SPMD stencil conserves the sum");
        println!("RESULT name=stencil seconds={seconds} sum0={sum0:?} sum={sum:?} sumsq={sumsq:?}");
    }
}

/// One stencil launch's (seconds, sum of squares), its sums checked.
fn stencil_result(run: &Run, who: &str, exact_sum0: f64) -> (f64, f64) {
    let [seconds, sum0, sum, sumsq] =
        result(run, who, "stencil", &["seconds", "sum0", "sum", "sumsq"])[..]
    else {
        unreachable!("four keys")
    };
    assert!(
        (sum0 - exact_sum0).abs() <= 1e-9 * exact_sum0 && (sum - sum0).abs() <= 1e-9 * sum0,
        "{who}: the grid's sum went from {sum0} (exactly {exact_sum0}) to {sum}"
    );
    (seconds, sumsq)
}

fn agree(what: &str, a: f64, b: f64) {
    assert!(
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        "{what}: {a} and {b} differ by more than 1e-9 relative"
    );
}

fn stencil() {
    let s = Stencil::get();
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let exact = initial_sum(s.n);
    let (mut ours, mut spmd, mut dask) = (vec![], vec![], vec![]);
    for _ in 0..rounds() {
        let (seconds, sumsq) = stencil_result(&launch_mpidask("stencil"), "mpidask", exact);
        ours.push(s.cells() / seconds);
        let (hand, hand_sumsq) = stencil_result(&launch_spmd(), "stencil_spmd", exact);
        agree(
            "the sums of squares of mpidask and stencil_spmd",
            sumsq,
            hand_sumsq,
        );
        spmd.push(s.cells() / hand);
        if let Some(python) = &python {
            let args = [
                "stencil".to_string(),
                s.n.to_string(),
                s.chunk.to_string(),
                s.steps.to_string(),
            ];
            let (peer, peer_sumsq) = stencil_result(&launch_dask(python, &args), "dask-mpi", exact);
            agree(
                "the sums of squares of mpidask and dask-mpi",
                sumsq,
                peer_sumsq,
            );
            dask.push(s.cells() / peer);
        }
    }
    println!(
        "stencil: n = {}, chunks of {} x {}, {} steps, periodic, -np {NP} ({WORKERS} workers)",
        s.n, s.chunk, s.chunk, s.steps
    );
    figure("stencil_cells_per_s", "cells/s", &ours, None);
    figure("stencil_spmd_cells_per_s", "cells/s", &spmd, None);
    ratio(
        "stencil_vs_spmd",
        &ours,
        &spmd,
        false,
        "stencil_spmd_cells_per_s",
    );
    let against: Vec<f64> = ours.iter().zip(&spmd).map(|(o, h)| o / h).collect();
    let got = median(&against);
    let verdict = match (smoke(), got >= STENCIL_TARGET) {
        (true, _) => "not judged in a smoke run",
        (false, true) => "met",
        (false, false) => "missed",
    };
    println!("TARGET stencil_vs_spmd >= {STENCIL_TARGET}: {verdict} (median {got:.3}x)");
    if !dask.is_empty() {
        figure("stencil_daskmpi_cells_per_s", "cells/s", &dask, None);
        ratio(
            "stencil_vs_daskmpi",
            &ours,
            &dask,
            false,
            "stencil_daskmpi_cells_per_s",
        );
    }
}

// ----- TSQR ------------------------------------------------------------------------------

/// The checks of a QR: the sum of squares of `Q` is its column count, `R` is upper
/// triangular, `|R[0, 0]|` (the first column's norm) is near `sqrt(rows)`.
fn check_qr(t: Tall, qsq: f64, r: &ndarray::Array2<f64>) -> anyhow::Result<()> {
    let cols = t.cols as f64;
    anyhow::ensure!(
        (qsq - cols).abs() <= 1e-8 * cols,
        "the sum of squares of Q is {qsq}, not {cols}"
    );
    let r00 = r[[0, 0]].abs();
    let below = r
        .indexed_iter()
        .filter(|((i, j), _)| i > j)
        .fold(0.0f64, |m, (_, v)| m.max(v.abs()));
    anyhow::ensure!(
        below <= 1e-12 * r00,
        "R is not upper triangular ({below} below)"
    );
    let want = (t.rows as f64).sqrt();
    anyhow::ensure!(
        (r00 - want).abs() <= 0.05 * want,
        "|R[0, 0]| = {r00} is not within 5 % of sqrt({}) = {want}",
        t.rows
    );
    Ok(())
}

fn role_tsqr() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let t = Tall::tsqr();
        let x = random::normal(0.0, 1.0, &[t.rows, t.cols], &[t.chunk, t.cols], SEED)
            .persist(client)?;
        client.wait(&x.to_futures::<f64>(client)?)?;
        let started = Instant::now();
        let (q, r) = linalg::tsqr(&x);
        // R (rows 0..cols) and the column sums of Q * Q (the last row), one graph.
        let columns = q.powi(2).sum_axis(0).reshape(&[1, t.cols as isize]);
        let both = array::concatenate(&[r, columns], 0).compute::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        let both = both.into_dimensionality::<Ix2>()?;
        let r = both.slice(ndarray::s![..t.cols, ..]).to_owned();
        let qsq = both.row(t.cols).sum();
        check_qr(t, qsq, &r)?;
        println!(
            "RESULT name=tsqr seconds={seconds} qsq={qsq:?} r00={:?}",
            r[[0, 0]]
        );
        Ok(())
    })
}

fn tsqr() {
    let t = Tall::tsqr();
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let (mut ours, mut dask, mut numpy) = (vec![], vec![], vec![]);
    let gb = t.bytes() / 1e9;
    let chunk_gb = (t.chunk * t.cols * 8) as f64 / 1e9;
    for _ in 0..rounds() {
        ours.push(gb / result(&launch_mpidask("tsqr"), "mpidask", "tsqr", &["seconds"])[0]);
        if let Some(python) = &python {
            let mut args = vec!["tsqr".to_string()];
            args.extend(t.args());
            let run = launch_dask(python, &args);
            dask.push(gb / result(&run, "dask-mpi", "tsqr", &["seconds"])[0]);
            let run = launch_numpy_qr(python, t);
            let seconds = result(&run, "numpy", "numpy_qr", &["seconds"])[0];
            numpy.push(chunk_gb / seconds * WORKERS as f64);
        }
    }
    println!(
        "tsqr: {} x {} f64 ({gb:.2} GB) in chunks of {} rows, -np {NP} ({WORKERS} workers); \
         NumPy: one chunk, one core, times {WORKERS}",
        t.rows, t.cols, t.chunk
    );
    figure("tsqr_gb_per_s", "GB/s", &ours, None);
    if !dask.is_empty() {
        figure("tsqr_daskmpi_gb_per_s", "GB/s", &dask, None);
        ratio(
            "tsqr_vs_daskmpi",
            &ours,
            &dask,
            false,
            "tsqr_daskmpi_gb_per_s",
        );
        figure("tsqr_numpy_chunk_x2", "GB/s", &numpy, None);
        ratio(
            "tsqr_vs_numpy_chunk_x2",
            &ours,
            &numpy,
            false,
            "tsqr_numpy_chunk_x2",
        );
    }
}

// ----- the compressed SVD ----------------------------------------------------------------

fn role_svd() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let t = Tall::svd();
        let (m, k) = (t.rows, SVD_K);
        let a = random::normal(0.0, 1.0, &[m, k], &[t.chunk, k], SEED);
        let b = random::normal(0.0, 1.0, &[k, t.cols], &[k, t.cols], SEED + 1);
        let noise = random::normal(0.0, 0.01, &[m, t.cols], &[t.chunk, t.cols], SEED + 2);
        let x = (a.dot(&b) + noise).persist(client)?;
        client.wait(&x.to_futures::<f64>(client)?)?;
        let started = Instant::now();
        let (u, s, v) = linalg::svd_compressed(&x, k, SVD_POWER_ITER, SEED + 3);
        // u (rows 0..m), s (row m) and v transposed (the rest) persisted in one graph.
        let usv =
            array::concatenate(&[u, s.reshape(&[1, k as isize]), v.t()], 0).persist(client)?;
        client.wait(&usv.to_futures::<f64>(client)?)?;
        let seconds = started.elapsed().as_secs_f64();
        let mi = m as isize;
        let u = usv.slice(&[(0..mi).into()]);
        let s = usv.slice(&[(mi..mi + 1).into()]).reshape(&[k as isize]);
        let v = usv.slice(&[(mi + 1..).into()]).t();
        let values = s.compute::<f64>(client)?;
        anyhow::ensure!(
            values.len() == k
                && values
                    .iter()
                    .zip(values.iter().skip(1))
                    .all(|(a, b)| a >= b),
            "the singular values are not {k} decreasing values: {values}"
        );
        let residual = (&x - (&u * &s).dot(&v))
            .powi(2)
            .sum()
            .compute_scalar::<f64>(client)?;
        let norm = x.powi(2).sum().compute_scalar::<f64>(client)?;
        let error = (residual / norm).sqrt();
        anyhow::ensure!(error < 0.01, "the relative reconstruction error is {error}");
        println!("RESULT name=svd seconds={seconds} error={error:?}");
        Ok(())
    })
}

fn svd_compressed() {
    let t = Tall::svd();
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let (mut ours, mut dask) = (vec![], vec![]);
    for _ in 0..rounds() {
        ours.push(result(&launch_mpidask("svd"), "mpidask", "svd", &["seconds"])[0]);
        if let Some(python) = &python {
            let mut args = vec!["svd".to_string()];
            args.extend(t.args());
            args.extend([SVD_K, SVD_POWER_ITER].map(|v| v.to_string()));
            dask.push(result(&launch_dask(python, &args), "dask-mpi", "svd", &["seconds"])[0]);
        }
    }
    println!(
        "svd_compressed: {} x {} f64 ({:.2} GB) in chunks of {} rows, k = {SVD_K}, \
         n_power_iter = {SVD_POWER_ITER}, -np {NP} ({WORKERS} workers)",
        t.rows,
        t.cols,
        t.bytes() / 1e9,
        t.chunk
    );
    figure("svd_compressed_s", "s", &ours, None);
    if !dask.is_empty() {
        figure("svd_compressed_daskmpi_s", "s", &dask, None);
        ratio(
            "svd_compressed_vs_daskmpi",
            &ours,
            &dask,
            true,
            "svd_compressed_daskmpi_s",
        );
    }
}

// ----- launches ----------------------------------------------------------------------------

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 180 } else { 3600 })
}

/// The numbers `keys` of the launch's line `RESULT name=<name> ...`; panics with its output
/// unless it exited with 0 and printed it.
fn result(run: &Run, who: &str, name: &str, keys: &[&str]) -> Vec<f64> {
    run.expect_code(0);
    common::named_result(&run.stdout, who, name, keys, || run.dump())
}

/// mpidask's side: this binary under mpirun in `role`.
fn launch_mpidask(role: &str) -> Run {
    let scratch = Scratch::new(&format!("numerics-{role}"));
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_MEMORY_LIMIT", MEMORY_LIMIT.to_string())
        .env("MPIDASK_LOCAL_DIRECTORY", &scratch.0)
        .env("MPIDASK_BENCH_ROLE", role);
    run_with_deadline(command, deadline())
}

/// The hand-written SPMD stencil: this binary under mpirun, every rank computing.
fn launch_spmd() -> Run {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command.env("MPIDASK_BENCH_ROLE", "stencil_spmd");
    run_with_deadline(command, deadline())
}

/// dask-mpi: `numerics_dask.py <args> LIMIT DIR` under mpirun.
fn launch_dask(python: &Path, args: &[String]) -> Run {
    let scratch = Scratch::new("numerics-daskmpi");
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(PEER_SCRIPT)
        .args(args)
        .arg(MEMORY_LIMIT.to_string())
        .arg(&scratch.0)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    run_with_deadline(command, deadline())
}

/// NumPy's QR of one chunk, in one process on one core.
fn launch_numpy_qr(python: &Path, t: Tall) -> Run {
    let mut command = Command::new(python);
    command
        .arg(PEER_SCRIPT)
        .args([
            "numpy_qr".to_string(),
            t.chunk.to_string(),
            t.cols.to_string(),
        ])
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1");
    run_with_deadline(command, deadline())
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        match role.as_str() {
            "stencil" => role_stencil(),
            "stencil_spmd" => role_stencil_spmd(),
            "tsqr" => role_tsqr(),
            "svd" => role_svd(),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let wanted = common::wanted_by_args();
    if wanted("stencil_cells_per_s") {
        stencil();
    }
    if wanted("tsqr_gb_per_s") {
        tsqr();
    }
    if wanted("svd_compressed_s") {
        svd_compressed();
    }
}
