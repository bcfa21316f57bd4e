//! A memory-bound array workload under `mpirun -np 4`, against a hand-written loop in the
//! same run: `((x - 0.5) ** 2).sum()` over a persisted 10 GB array of uniform values in the
//! seed's 200 MB chunks. Each round runs, in turn:
//!
//! * mpidask (`runtime`): persists `x` on the 2 workers and waits for it (untimed), then
//!   times the sum, from the call to the value. Each worker holds 5 GB, so the workers get
//!   `--memory-limit 12GB` (spilling from 60 % of it): the `auto` limit gives each of the 4
//!   ranks a quarter of the node, 6 GB here, and the workers would spill;
//! * `handwritten_rust`: a plain rsmpi SPMD program sharing no code with mpidask: the
//!   same chunks dealt round-robin to all 4 ranks, on huge pages as mpidask's chunks are
//!   (`madvise`), filled from `rand_xoshiro` (untimed), then, timed, a loop with eight
//!   accumulators (so the compiler vectorises it, as a performance-aware author would
//!   write it) and `MPI_Reduce`.
//!
//! Both check their sum against its expectation (`n / 12`).
//!
//! The suite (`arrays_<workload>`): the everyday `dask.array` workloads of
//! `tests/support/array_suite.rs` (standardisation, `x + x.T`, transposed reductions,
//! rechunking, strided slices, arg-reductions, `where`, `dot`, generation, `var`/`std`,
//! `concatenate`, `map_blocks`, a 3-D mean) on a 3.2 GB `x` in 2000 x 2000 chunks and the
//! other inputs of [`Sizes::bench`], each round one mpidask launch and one dask-mpi launch
//! (`benches/array_suite.py`, the same expressions, shapes and chunks), both at
//! `-np 4` (2 workers of one thread). Each launch persists its inputs (untimed) and times
//! every workload once, from the call to the value on the client. The dask-mpi launch also
//! times the dot's product by NumPy alone in its client (the machine's BLAS). The two sides
//! draw different random numbers, so a workload's results are compared loosely (a check
//! against nonsense); `tests/mpi.rs` compares every value with NumPy on the same inputs.
//!
//! Larger than memory (`spill_workload`): a 6 GB array of uniform values in 100 MB chunks
//! on 2 workers limited to 1.5 GB each (the array is twice what they may hold, so they
//! spill), each round one mpidask launch and one dask-mpi launch
//! (`benches/spill_workload.py`, `memory_limit` the same) timing, from the call to the
//! value: the persist (`spill_persist`), `x.sum()` (`spill_sum`) and
//! `abs(x - x.mean(0)).max()` (`spill_center_max`), and their total (`spill_workload`).
//! Both spill into a scratch directory under `$TMPDIR`, removed after the launch, and
//! check their sum (6 standard deviations) and spread (0.49 to 0.5 plus 6 standard
//! deviations of a column mean).
//!
//! Every figure is the median of the rounds (at least 5); a ratio is taken round by round.
//!
//! ```text
//! cargo bench --bench arrays [-- sum_squares_10gb | arrays_suite | spill_workload]
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{Scratch, advise_huge_pages, figure, peer_python, ratio, rounds, size, smoke};
use mpi::collective::SystemOperation;
use mpi::traits::*;
use mpidask::array::random;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::array_suite::{Inputs, Sizes, compute_f64, workloads};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
const SEED: u64 = 7;

/// How far the sum of `n` values of `(u - 0.5)^2` may be from `n / 12`: 6 standard
/// deviations (the variance of one term is `1/80 - 1/144 = 1/180`).
fn tolerance(n: u64) -> f64 {
    6.0 * (n as f64 / 180.0).sqrt()
}

fn check(sum: f64, n: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (sum - n as f64 / 12.0).abs() < tolerance(n),
        "sum of squares {sum} is not near {}",
        n as f64 / 12.0
    );
    Ok(())
}

fn role_runtime(bytes: u64, chunk_bytes: u64) -> ! {
    mpidask::run(move |client| -> anyhow::Result<()> {
        let n = bytes / 8;
        let x = random::uniform(0.0, 1.0, &[n as usize], &[(chunk_bytes / 8) as usize], SEED)
            .persist(client)?;
        client.wait(&x.to_futures::<f64>(client)?)?;
        let started = Instant::now();
        let sum = (x - 0.5).powi(2).sum().compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        check(sum, n)?;
        println!("MEASURE seconds={seconds}");
        Ok(())
    })
}

/// The suite's mpidask side: persists the inputs, then times each workload once.
fn role_suite() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let sizes = suite_sizes();
        let inputs = Inputs::new(&sizes, SEED).persist(client)?;
        // `MPIDASK_SUITE_ONLY=<name>`: that workload alone (to trace it).
        let only = std::env::var("MPIDASK_SUITE_ONLY").ok();
        for (name, build) in workloads(&sizes) {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let started = Instant::now();
            let value = compute_f64(client, &build(&inputs))?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(value.iter().all(|v| v.is_finite()), "{name}: {value}");
            println!(
                "RESULT name={name} seconds={seconds} check={:?}",
                value.sum()
            );
        }
        Ok(())
    })
}

/// The spill workload: shape, chunk shape, and the memory limit of each of the 2 workers
/// (bytes): a quarter of the array, so the two hold half of it at most.
fn spill_sizes() -> ([usize; 2], [usize; 2], u64) {
    let (shape, chunks) = if smoke() {
        ([600, 500], [100, 100])
    } else {
        ([30_000, 25_000], [2_500, 5_000])
    };
    (shape, chunks, (shape[0] * shape[1] * 8 / 4) as u64)
}

/// The spill workload's checks: a sum within 6 standard deviations of `n / 2`, a spread
/// from the column means near 0.5.
fn check_spill(name: &str, value: f64) {
    let ([rows, cols], _, _) = spill_sizes();
    let n = (rows * cols) as f64;
    let ok = match name {
        "spill_sum" => (value - n / 2.0).abs() < 6.0 * (n / 12.0).sqrt(),
        // At most 0.5 plus how far a column's mean strays from 0.5 (6 standard deviations).
        "spill_center_max" => value > 0.49 && value <= 0.5 + 6.0 / (12.0 * rows as f64).sqrt(),
        _ => true,
    };
    assert!(ok, "{name}: {value} is not what uniform values give");
}

/// mpidask's side of the spill workload.
fn role_spill_workload() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        let ([rows, cols], [chunk_rows, chunk_cols], _) = spill_sizes();
        let started = Instant::now();
        let x = random::uniform(0.0, 1.0, &[rows, cols], &[chunk_rows, chunk_cols], SEED)
            .persist(client)?;
        client.wait(&x.to_futures::<f64>(client)?)?;
        let seconds = started.elapsed().as_secs_f64();
        println!("RESULT name=spill_persist seconds={seconds} check=0");
        let started = Instant::now();
        let total = x.sum().compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        println!("RESULT name=spill_sum seconds={seconds} check={total:?}");
        let started = Instant::now();
        let spread = (&x - x.mean_axis(0))
            .abs()
            .max()
            .compute_scalar::<f64>(client)?;
        let seconds = started.elapsed().as_secs_f64();
        println!("RESULT name=spill_center_max seconds={seconds} check={spread:?}");
        Ok(())
    })
}

/// The hand-written program: nothing from mpidask.
fn role_handwritten_rust(bytes: u64, chunk_bytes: u64) {
    use rand_xoshiro::Xoshiro256Plus;
    use rand_xoshiro::rand_core::{Rng, SeedableRng};

    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let (rank, ranks) = (world.rank() as u64, world.size() as u64);
    let n = bytes / 8;
    let per_chunk = chunk_bytes / 8;
    let chunks = n.div_ceil(per_chunk);
    let scale = 1.0 / (1u64 << 53) as f64;
    let mine: Vec<Vec<f64>> = (rank..chunks)
        .step_by(ranks as usize)
        .map(|chunk| {
            let len = per_chunk.min(n - chunk * per_chunk) as usize;
            let mut rng = Xoshiro256Plus::seed_from_u64(SEED ^ chunk);
            let mut values: Vec<f64> = Vec::with_capacity(len);
            advise_huge_pages(&mut values);
            values.extend((0..len).map(|_| (rng.next_u64() >> 11) as f64 * scale));
            values
        })
        .collect();
    world.barrier();
    let started = Instant::now();
    let mut local = 0.0;
    for chunk in &mine {
        let mut acc = [0.0f64; 8];
        let mut groups = chunk.chunks_exact(8);
        for g in &mut groups {
            for k in 0..8 {
                let d = g[k] - 0.5;
                acc[k] += d * d;
            }
        }
        let rest: f64 = groups
            .remainder()
            .iter()
            .map(|v| (v - 0.5) * (v - 0.5))
            .sum();
        local += acc.iter().sum::<f64>() + rest;
    }
    let root = world.process_at_rank(0);
    if rank == 0 {
        let mut total = 0.0;
        root.reduce_into_root(&local, &mut total, SystemOperation::sum());
        let seconds = started.elapsed().as_secs_f64();
        check(total, n).expect("the hand-written sum is right");
        println!("MEASURE seconds={seconds}");
    } else {
        root.reduce_into(&local, SystemOperation::sum());
    }
}

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 120 } else { 1800 })
}

fn launch(role: &str, bytes: u64, chunk_bytes: u64) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_MEMORY_LIMIT", "12GB")
        .env("MPIDASK_BENCH_ROLE", role)
        .env("MPIDASK_BENCH_BYTES", bytes.to_string())
        .env("MPIDASK_BENCH_CHUNK_BYTES", chunk_bytes.to_string());
    run_with_deadline(command, deadline())
        .expect_code(0)
        .measure("seconds")
}

fn suite_sizes() -> Sizes {
    if smoke() {
        Sizes::small(NP - 2)
    } else {
        Sizes::bench(NP - 2)
    }
}

/// One launch's `RESULT name=<workload> seconds=<s> check=<number>` lines.
fn suite_results(run: &Run, who: &str) -> BTreeMap<String, (f64, f64)> {
    run.expect_code(0);
    common::named_results(&run.stdout, who, &["seconds", "check"])
        .into_iter()
        .map(|(name, numbers)| (name, (numbers[0], numbers[1])))
        .collect()
}

fn launch_suite() -> BTreeMap<String, (f64, f64)> {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_MEMORY_LIMIT", "10GB")
        .env("MPIDASK_BENCH_ROLE", "suite");
    suite_results(&run_with_deadline(command, deadline()), "mpidask")
}

fn launch_suite_daskmpi(python: &std::path::Path) -> BTreeMap<String, (f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/array_suite.py");
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(script)
        .arg("dask")
        .arg(suite_sizes().json())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    suite_results(&run_with_deadline(command, deadline()), "dask-mpi")
}

/// The suite: every workload against dask-mpi, round by round.
fn suite() {
    let sizes = suite_sizes();
    let names: Vec<&str> = workloads(&sizes).iter().map(|(name, _)| *name).collect();
    // The peer runs in real runs only: a smoke run checks the project's own code.
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let mut ours: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut theirs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut numpy_dot = vec![];
    for _ in 0..rounds() {
        let mine = launch_suite();
        let peer = python.as_deref().map(launch_suite_daskmpi);
        for name in &names {
            let &(seconds, check) = mine
                .get(*name)
                .unwrap_or_else(|| panic!("mpidask gave no result for {name}"));
            ours.entry(name).or_default().push(seconds);
            let Some(peer) = &peer else { continue };
            let &(peer_seconds, peer_check) = peer
                .get(*name)
                .unwrap_or_else(|| panic!("dask-mpi gave no result for {name}"));
            theirs.entry(name).or_default().push(peer_seconds);
            // Different random numbers on the two sides: agreement to 5 %, or to ten
            // standard deviations of a sum of the inputs' elements.
            let slack = 0.05 * check.abs().max(peer_check.abs()) + 10.0 * sizes.n as f64;
            assert!(
                (check - peer_check).abs() <= slack,
                "{name}: mpidask's result sums to {check}, dask-mpi's to {peer_check}"
            );
        }
        if let Some(peer) = &peer {
            numpy_dot.push(peer.get("dot_numpy").expect("the NumPy dot").0);
        }
    }
    for name in &names {
        let mine = &ours[name];
        figure(&format!("arrays_{name}_s"), "s", mine, None);
        if let Some(peer) = theirs.get(name) {
            let peer_name = format!("arrays_{name}_daskmpi_s");
            figure(&peer_name, "s", peer, None);
            ratio(
                &format!("arrays_{name}_vs_daskmpi"),
                mine,
                peer,
                true,
                &peer_name,
            );
        }
    }
    if !numpy_dot.is_empty() {
        figure("arrays_dot_numpy_s", "s", &numpy_dot, None);
        ratio(
            "arrays_dot_vs_numpy",
            &ours["dot"],
            &numpy_dot,
            true,
            "arrays_dot_numpy_s",
        );
    }
    // Generation: normal values against uniform ones (speed, so uniform time / normal time).
    ratio(
        "arrays_normal_vs_uniform",
        &ours["normal_sum"],
        &ours["uniform_sum"],
        true,
        "arrays_uniform_sum_s",
    );
}

const SPILL_PHASES: [&str; 3] = ["spill_persist", "spill_sum", "spill_center_max"];

/// One launch's phase times, checked.
fn spill_results(run: &Run, who: &str) -> Vec<f64> {
    let found = suite_results(run, who);
    SPILL_PHASES
        .iter()
        .map(|name| {
            let &(seconds, check) = found
                .get(*name)
                .unwrap_or_else(|| panic!("{who} gave no result for {name}\n{}", run.dump()));
            check_spill(name, check);
            seconds
        })
        .collect()
}

fn launch_spill() -> Vec<f64> {
    let (_, _, limit) = spill_sizes();
    let scratch = Scratch::new("spill-mpidask");
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_MEMORY_LIMIT", limit.to_string())
        .env("MPIDASK_LOCAL_DIRECTORY", &scratch.0)
        .env("MPIDASK_BENCH_ROLE", "spill_workload");
    spill_results(&run_with_deadline(command, deadline()), "mpidask")
}

fn launch_spill_daskmpi(python: &std::path::Path) -> Vec<f64> {
    let ([rows, cols], [chunk_rows, chunk_cols], limit) = spill_sizes();
    let scratch = Scratch::new("spill-daskmpi");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/spill_workload.py");
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(script)
        .args([rows, cols, chunk_rows, chunk_cols].map(|v| v.to_string()))
        .arg(limit.to_string())
        .arg(&scratch.0)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    spill_results(&run_with_deadline(command, deadline()), "dask-mpi")
}

/// The spill workload against dask-mpi, round by round.
fn spill_workload() {
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..rounds() {
        ours.push(launch_spill());
        if let Some(python) = &python {
            theirs.push(launch_spill_daskmpi(python));
        }
    }
    let total = |phases: &[f64]| phases.iter().sum::<f64>();
    let mut series: Vec<(String, Vec<f64>, Vec<f64>)> = SPILL_PHASES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.to_string(),
                ours.iter().map(|p| p[i]).collect(),
                theirs.iter().map(|p| p[i]).collect(),
            )
        })
        .collect();
    series.push((
        "spill_workload".into(),
        ours.iter().map(|p| total(p)).collect(),
        theirs.iter().map(|p| total(p)).collect(),
    ));
    for (name, mine, peer) in &series {
        figure(&format!("{name}_s"), "s", mine, None);
        if !peer.is_empty() {
            let peer_name = format!("{name}_daskmpi_s");
            figure(&peer_name, "s", peer, None);
            ratio(&format!("{name}_vs_daskmpi"), mine, peer, true, &peer_name);
        }
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
        if role == "suite" {
            role_suite();
        }
        if role == "spill_workload" {
            role_spill_workload();
        }
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
    if wanted("sum_squares_10gb") {
        let bytes = size(10_000_000_000, 100_000_000);
        let chunk = size(200_000_000, 10_000_000);
        let (mut ours, mut hand) = (vec![], vec![]);
        for _ in 0..rounds() {
            ours.push(launch("runtime", bytes, chunk));
            hand.push(launch("handwritten_rust", bytes, chunk));
        }
        let gb = bytes as f64 / 1e9;
        let rate = |s: &[f64]| -> Vec<f64> { s.iter().map(|t| gb / t).collect() };
        figure("sum_squares_10gb_s", "s", &ours, None);
        figure("sum_squares_10gb_handwritten_rust_s", "s", &hand, None);
        figure("sum_squares_10gb_gb_per_s", "GB/s", &rate(&ours), None);
        figure(
            "sum_squares_10gb_handwritten_rust_gb_per_s",
            "GB/s",
            &rate(&hand),
            None,
        );
        ratio(
            "sum_squares_10gb_vs_handwritten_rust",
            &ours,
            &hand,
            true,
            "sum_squares_10gb_handwritten_rust_s",
        );
    }
    if wanted("arrays_suite") {
        suite();
    }
    if wanted("spill_workload") {
        spill_workload();
    }
}
