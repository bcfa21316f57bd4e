//! The seed's Monte-Carlo Pi (`4 * ((xy**2).sum(axis=-1) < 1).mean()` over 200 MB chunks)
//! under `mpirun -np 4`, each round running, in turn:
//!
//! * mpidask (`runtime`): the array expression, 2 workers;
//! * `handwritten_rust`: a plain rsmpi SPMD program sharing no code with mpidask: its own
//!   loop over points drawn from `rand_xoshiro`'s xoshiro256+ (one generator per chunk, a
//!   double being the top 53 bits times 2^-53), chunks dealt round-robin to all 4 ranks,
//!   then `MPI_Reduce`;
//! * `handwritten_c`: the same in C (`benches/pi_handwritten.c`, eight generators stepped
//!   together so the compiler vectorises them), built by this bench with
//!   `mpicc -O3 -march=native`: the physical reference;
//! * dask-mpi: `../shared/peers/pi_daskmpi.py`, from the peers' venv (`make peers`); a
//!   missing venv fails the bench.
//!
//! Every figure is the median of the rounds (at least 5); ratios are taken round by round.
//! `samples` are points (x, y); per worker core means divided by the cores the workers
//! use (the machine's cores, at most one per worker thread).
//!
//! ```text
//! cargo bench --bench pi                      # 10 GB, then 100 GB
//! cargo bench --bench pi -- pi_10gb           # 10 GB only
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{figure, peer_python, ratio, rounds, shared_peers, size, smoke};
use mpi::collective::SystemOperation;
use mpi::traits::*;
use mpidask::array::{Array, random};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
const WORKERS: usize = NP - 2;
const SEED: u64 = 42;

fn inside(bytes: u64, chunk_bytes: u64) -> Array {
    let n = (bytes / 8) as usize;
    let c = (chunk_bytes / 8) as usize;
    random::uniform(0.0, 1.0, &[n / 2, 2], &[c / 2, 2], SEED)
        .powi(2)
        .sum_axis(-1)
        .lt(1.0)
}

/// How far from pi an estimate from `bytes` may be: 5 standard errors.
fn tolerance(bytes: u64) -> f64 {
    let points = (bytes / 16) as f64;
    5.0 * 4.0 * (std::f64::consts::FRAC_PI_4 * (1.0 - std::f64::consts::FRAC_PI_4) / points).sqrt()
}

fn role_runtime(bytes: u64, chunk_bytes: u64) -> ! {
    mpidask::run(move |client| -> anyhow::Result<()> {
        let pi = inside(bytes, chunk_bytes).mean() * 4.0;
        let started = Instant::now();
        let value = pi.compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            (value - std::f64::consts::PI).abs() < tolerance(bytes),
            "pi = {value}"
        );
        println!("MEASURE seconds={seconds}");
        println!("MEASURE pi={value}");
        Ok(())
    })
}

/// The hand-written Rust program: nothing from mpidask, a loop a scientist would write.
fn role_handwritten_rust(bytes: u64, chunk_bytes: u64) {
    use rand_xoshiro::Xoshiro256Plus;
    use rand_xoshiro::rand_core::{Rng, SeedableRng};

    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (rank, size) = (world.rank() as u64, world.size() as u64);
    let points = bytes / 16;
    let chunk_points = chunk_bytes / 16;
    let chunks = points.div_ceil(chunk_points);
    world.barrier();
    let started = Instant::now();
    let mut local = [0u64, 0];
    for chunk in (rank..chunks).step_by(size as usize) {
        let n = chunk_points.min(points - chunk * chunk_points);
        let mut rng =
            Xoshiro256Plus::seed_from_u64(SEED ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let scale = 1.0 / (1u64 << 53) as f64;
        let mut hits = 0u64;
        for _ in 0..n {
            let x = (rng.next_u64() >> 11) as f64 * scale;
            let y = (rng.next_u64() >> 11) as f64 * scale;
            hits += u64::from(x * x + y * y < 1.0);
        }
        local[0] += hits;
        local[1] += n;
    }
    let root = world.process_at_rank(0);
    if rank == 0 {
        let mut total = [0u64, 0];
        root.reduce_into_root(&local[..], &mut total[..], SystemOperation::sum());
        let seconds = started.elapsed().as_secs_f64();
        let pi = 4.0 * total[0] as f64 / total[1] as f64;
        assert!(
            (pi - std::f64::consts::PI).abs() < tolerance(bytes),
            "pi = {pi}"
        );
        println!("MEASURE seconds={seconds}");
        println!("MEASURE pi={pi}");
    } else {
        root.reduce_into(&local[..], SystemOperation::sum());
    }
}

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 120 } else { 3600 })
}

fn launch(role: &str, bytes: u64, chunk_bytes: u64) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", role)
        .env("MPIDASK_BENCH_BYTES", bytes.to_string())
        .env("MPIDASK_BENCH_CHUNK_BYTES", chunk_bytes.to_string());
    seconds_of(&run_with_deadline(command, deadline()), bytes)
}

/// The compute time of a run, after checking its estimate of pi.
fn seconds_of(run: &Run, bytes: u64) -> f64 {
    run.expect_code(0);
    let pi = run.measure("pi");
    assert!(
        (pi - std::f64::consts::PI).abs() < tolerance(bytes),
        "{}: pi = {pi}\n{}",
        run.command,
        run.dump()
    );
    run.measure("seconds")
}

/// Builds the C reference with `mpicc -O3 -march=native` into `target/bench/`.
fn build_c() -> PathBuf {
    common::build_c(
        ("MPICC", "mpicc"),
        "pi_handwritten.c",
        &[],
        "make deps installs it",
    )
}

fn launch_c(exe: &Path, bytes: u64, chunk_bytes: u64) -> f64 {
    let command = mpirun(
        NP,
        exe,
        &[
            &bytes.to_string(),
            &chunk_bytes.to_string(),
            &SEED.to_string(),
        ],
    );
    seconds_of(&run_with_deadline(command, deadline()), bytes)
}

fn launch_daskmpi(python: &Path, bytes: u64, chunk_bytes: u64) -> f64 {
    let peers = shared_peers();
    let mut command = mpirun(NP, python, &[]);
    command
        .arg(peers.join("pi_daskmpi.py"))
        .arg(bytes.to_string())
        .arg(chunk_bytes.to_string())
        .current_dir(&peers);
    let run = run_with_deadline(command, deadline());
    run.expect_code(0);
    let field = |name: &str| -> f64 {
        run.stdout
            .lines()
            .filter(|l| l.starts_with("RESULT"))
            .flat_map(|l| l.split_whitespace())
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("dask-mpi printed no {name}\n{}", run.dump()))
    };
    let pi = field("pi=");
    assert!(
        (pi - std::f64::consts::PI).abs() < tolerance(bytes),
        "dask-mpi: pi = {pi}"
    );
    field("seconds=")
}

/// The cores the workers compute on.
fn worker_cores() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(WORKERS) as f64
}

/// One size: every program once per round, in turn.
fn compare(label: &str, bytes: u64, chunk_bytes: u64, c: &Path, dask: Option<&Path>) {
    let (mut ours, mut rust, mut hand_c, mut peer) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds() {
        ours.push(launch("runtime", bytes, chunk_bytes));
        rust.push(launch("handwritten_rust", bytes, chunk_bytes));
        hand_c.push(launch_c(c, bytes, chunk_bytes));
        if let Some(python) = dask {
            peer.push(launch_daskmpi(python, bytes, chunk_bytes));
        }
    }
    let points = (bytes / 16) as f64;
    let per_core =
        |s: &[f64]| -> Vec<f64> { s.iter().map(|t| points / t / worker_cores()).collect() };
    figure(&format!("pi_{label}_s"), "s", &ours, None);
    figure(&format!("pi_{label}_handwritten_rust_s"), "s", &rust, None);
    figure(&format!("pi_{label}_handwritten_c_s"), "s", &hand_c, None);
    figure(
        &format!("pi_{label}_samples_per_s_per_worker_core"),
        "samples/s",
        &per_core(&ours),
        None,
    );
    figure(
        &format!("pi_{label}_handwritten_c_samples_per_s_per_core"),
        "samples/s",
        &per_core(&hand_c),
        None,
    );
    ratio(
        &format!("pi_{label}_vs_handwritten_rust"),
        &ours,
        &rust,
        true,
        &format!("pi_{label}_handwritten_rust_s"),
    );
    ratio(
        &format!("pi_{label}_vs_handwritten_c"),
        &ours,
        &hand_c,
        true,
        &format!("pi_{label}_handwritten_c_s"),
    );
    if dask.is_some() {
        figure(&format!("pi_{label}_daskmpi_s"), "s", &peer, None);
        ratio(
            &format!("pi_{label}_speedup_vs_daskmpi"),
            &ours,
            &peer,
            true,
            &format!("pi_{label}_daskmpi_s"),
        );
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a byte count"))
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        let bytes = env_u64("MPIDASK_BENCH_BYTES");
        let chunk_bytes = env_u64("MPIDASK_BENCH_CHUNK_BYTES");
        match role.as_str() {
            "runtime" => role_runtime(bytes, chunk_bytes),
            "handwritten_rust" => role_handwritten_rust(bytes, chunk_bytes),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let wanted = common::wanted_by_args();
    let c = build_c();
    // The peer runs in real runs only: a smoke run checks the project's own code.
    let dask = (!smoke()).then(|| peer_python("dask_mpi"));
    let chunk = size(200_000_000, 20_000_000);
    if wanted("pi_10gb") {
        compare(
            "10gb",
            size(10_000_000_000, 200_000_000),
            chunk,
            &c,
            dask.as_deref(),
        );
    }
    if wanted("pi_100gb") {
        let bytes = size(100_000_000_000, 400_000_000);
        let runs: Vec<f64> = (0..rounds())
            .map(|_| launch("runtime", bytes, chunk))
            .collect();
        figure("pi_100gb_s", "s", &runs, None);
    }
}
