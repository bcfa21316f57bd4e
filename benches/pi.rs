//! The seed's Monte-Carlo Pi (`4 * ((xy**2).sum(axis=-1) < 1).mean()` over 200 MB chunks)
//! under `mpirun -np 4`, against baselines measured in the same run:
//!
//! * `spmd_kernel`: a handwritten rsmpi SPMD program; chunks are dealt round-robin to all
//!   ranks, each runs the *same* fused kernel mpidask runs per chunk, then `MPI_Reduce`;
//! * `spmd_loop`: the same, with a plain loop over the same random numbers instead of the
//!   kernel (what a hand-tuned program would do);
//! * dask-mpi: `../shared/peers/pi_daskmpi.py` when its venv exists (`make peers`).
//!
//! ```text
//! cargo bench --bench pi                      # 10 GB and 100 GB
//! cargo bench --bench pi -- pi_gb_per_s       # 10 GB only
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use mpi::collective::SystemOperation;
use mpi::traits::*;
use mpidask::array::{Array, ReduceOp, random};
use mpidask::internals::kernel::{self, Outcome, Partial};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, bench, mpirun, run_with_deadline};

const NP: usize = 4;
const CHUNK_BYTES: usize = 200_000_000;
const SEED: u64 = 42;

fn inside(bytes: u64) -> Array {
    let n = (bytes / 8) as usize;
    let c = CHUNK_BYTES / 8;
    random::uniform(0.0, 1.0, &[n / 2, 2], &[c / 2, 2], SEED)
        .powi(2)
        .sum_axis(-1)
        .lt(1.0)
}

fn role_runtime(bytes: u64) -> ! {
    mpidask::run(move |client| -> anyhow::Result<()> {
        let pi = inside(bytes).mean() * 4.0;
        let started = Instant::now();
        let value = pi.compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!((value - std::f64::consts::PI).abs() < 1e-3, "pi = {value}");
        println!("MEASURE seconds={seconds}");
        Ok(())
    })
}

/// Hits and points of one chunk, computed by a plain loop over the same random numbers
/// (drawn a block at a time, as the generator produces them).
fn loop_chunk(key: u64, points: usize) -> (f64, f64) {
    let mut buffer = vec![0.0f64; random::BLOCK];
    let mut hits = 0u64;
    let mut done = 0;
    while done < points {
        let take = (random::BLOCK / 2).min(points - done);
        let values = &mut buffer[..2 * take];
        random::fill_uniform(values, key, 2 * done as u64, 0.0, 1.0);
        for xy in values.chunks_exact(2) {
            hits += u64::from(xy[0] * xy[0] + xy[1] * xy[1] < 1.0);
        }
        done += take;
    }
    (hits as f64, points as f64)
}

fn role_spmd(bytes: u64, plain_loop: bool) {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let array = inside(bytes);
    let chunks = array.num_chunks();
    world.barrier();
    let started = Instant::now();
    let mut local = [0.0f64, 0.0];
    for chunk in (rank..chunks).step_by(size) {
        let (sum, count) = if plain_loop {
            let key = random::chunk_key(SEED, chunk as u64);
            loop_chunk(key, array.chunks()[0][chunk])
        } else {
            let program = array
                .partial_program(ReduceOp::Mean, &[chunk])
                .expect("a program");
            match kernel::run(&program, &[]).expect("the kernel runs") {
                Outcome::Partial(state) => match *state {
                    Partial::SumCount { sum, count } => (sum.sum(), count.sum()),
                    other => panic!("unexpected state {other:?}"),
                },
                Outcome::Chunk(_) => panic!("a partial state"),
            }
        };
        local[0] += sum;
        local[1] += count;
    }
    let root = world.process_at_rank(0);
    if rank == 0 {
        let mut total = [0.0f64, 0.0];
        root.reduce_into_root(&local[..], &mut total[..], SystemOperation::sum());
        let seconds = started.elapsed().as_secs_f64();
        let pi = 4.0 * total[0] / total[1];
        assert!((pi - std::f64::consts::PI).abs() < 1e-3, "pi = {pi}");
        println!("MEASURE seconds={seconds}");
    } else {
        root.reduce_into(&local[..], SystemOperation::sum());
    }
}

fn launch(role: &str, bytes: u64) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", role)
        .env("MPIDASK_BENCH_BYTES", bytes.to_string());
    seconds_of(&run_with_deadline(command, Duration::from_secs(3600)))
}

fn seconds_of(run: &Run) -> f64 {
    run.expect_code(0);
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEASURE seconds="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MEASURE line\n{}", run.dump()))
}

/// dask-mpi's compute time for `bytes`, if the peers' venv exists.
fn daskmpi_seconds(bytes: u64) -> Option<f64> {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/peers");
    let venv = std::env::var("PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/mpidask-peers/venv")
        });
    let python = venv.join("bin/python");
    if !python.exists() || !peers.join("pi_daskmpi.py").exists() {
        println!(
            "# dask-mpi baseline not run: {} or the peers folder is missing (make peers)",
            python.display()
        );
        return None;
    }
    let mut command = mpirun(NP, &python, &[]);
    command
        .arg(peers.join("pi_daskmpi.py"))
        .arg(format!("{bytes}"))
        .current_dir(&peers);
    let run = run_with_deadline(command, Duration::from_secs(1800));
    run.expect_code(0);
    run.stdout
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
        })
        .and_then(|v| v.parse().ok())
}

/// Runs that move by +-15 % from one launch to the next on this machine.
const ROUNDS: usize = 3;

/// The best of [`ROUNDS`] launches of each role, the roles taking turns so that a slow
/// spell of the machine touches them alike.
fn best_of_interleaved(roles: &[&str], bytes: u64) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; roles.len()];
    for _ in 0..ROUNDS {
        for (role, best) in roles.iter().zip(&mut best) {
            *best = best.min(launch(role, bytes));
        }
    }
    best
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        let bytes: u64 = std::env::var("MPIDASK_BENCH_BYTES")
            .expect("MPIDASK_BENCH_BYTES")
            .parse()
            .expect("a byte count");
        match role.as_str() {
            "runtime" => role_runtime(bytes),
            "spmd_kernel" => role_spmd(bytes, false),
            "spmd_loop" => role_spmd(bytes, true),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let ten_gb = 10_000_000_000u64;
    if wanted("pi_gb_per_s") {
        let best = best_of_interleaved(&["runtime", "spmd_kernel", "spmd_loop"], ten_gb);
        let (runtime, spmd, plain) = (best[0], best[1], best[2]);
        let gb = ten_gb as f64 / 1e9;
        bench("pi_gb_per_s", gb / runtime, "GB/s");
        bench("pi_spmd_kernel_gb_per_s", gb / spmd, "GB/s");
        bench("pi_vs_spmd_kernel", spmd / runtime, "x");
        bench("pi_spmd_loop_gb_per_s", gb / plain, "GB/s");
        bench("pi_vs_spmd_loop", plain / runtime, "x");
        if let Some(dask) = daskmpi_seconds(ten_gb) {
            bench("pi_daskmpi_s", dask, "s");
            bench("pi_speedup_vs_daskmpi", dask / runtime, "x");
        }
    }
    if wanted("pi_100gb_s") {
        bench("pi_100gb_s", launch("runtime", 10 * ten_gb), "s");
    }
}
