//! Futures with large arguments under `mpirun -np 4` (2 workers): `client.map(f, items)`
//! over vectors of 8 MB, mapped twice and summed, as a Dask user writes it:
//!
//! ```text
//! a = client.map(twice_plus_one, items)   # 8 MB in, 8 MB out, per item
//! b = client.map(vector_sum, a)           # 8 MB in, one number out
//! total = client.submit(sum, b).result()
//! ```
//!
//! `futures_large_args` maps 50 items (400 MB), `futures_large_args_1gb` 125 (1 GB). Each
//! round runs three launches, each timing both variants once, from the first `map` call to
//! the total on the client (the items are built before, untimed):
//!
//! * mpidask (role `large_args`): the items are `Vec<f64>`; every argument of 64 KiB or
//!   more goes from the client straight to a worker, never through the scheduler rank;
//! * dask-mpi (`benches/large_args.py`): the same with NumPy arrays, `client.map` with its
//!   defaults;
//! * `raw_mpi` (role `raw_large_args`): a plain rsmpi program sharing no code with
//!   mpidask: rank 1 sends item i to worker rank `2 + i % 2` (`MPI_Send`), the worker
//!   receives it into a new vector, computes both steps and sends the number back, rank 1
//!   adds them up. The same bytes from the client to the workers, with no runtime at all.
//!
//! Every side checks its total against the closed form. Every figure is the median of the
//! rounds (at least 5); a ratio is taken round by round.
//!
//! ```text
//! cargo bench --bench futures [-- futures_large_args]
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{figure, peer_python, ratio, rounds, size, smoke};
use mpi::traits::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;

/// The variants: name, items, values (f64) per item.
fn variants() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("futures_large_args", size(50, 6), size(1_000_000, 20_000)),
        (
            "futures_large_args_1gb",
            size(125, 9),
            size(1_000_000, 20_000),
        ),
    ]
}

/// Item `i`: `i + j * 1e-6` for `j` in `0..len`.
fn item(i: usize, len: usize) -> Vec<f64> {
    (0..len).map(|j| i as f64 + j as f64 * 1e-6).collect()
}

/// The total of `count` items of `len` values: the sum of `2 v + 1` over every value.
fn expected(count: usize, len: usize) -> f64 {
    let (c, l) = (count as f64, len as f64);
    let values = c * (c - 1.0) / 2.0 * l + c * (l * (l - 1.0) / 2.0) * 1e-6;
    2.0 * values + c * l
}

fn check(name: &str, total: f64, count: usize, len: usize) {
    let want = expected(count, len);
    assert!(
        (total - want).abs() <= 1e-9 * want.abs(),
        "{name}: total {total}, expected {want}"
    );
}

fn twice_plus_one(x: Vec<f64>) -> Vec<f64> {
    x.into_iter().map(|v| 2.0 * v + 1.0).collect()
}

fn vector_sum(x: Vec<f64>) -> f64 {
    x.iter().sum()
}

fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

/// mpidask: each variant once, printing `RESULT name=<variant> seconds=<s>`.
fn role_large_args() -> ! {
    mpidask::run(|client| -> anyhow::Result<()> {
        // A first task, so no variant pays for the workers' first steps.
        anyhow::ensure!(client.submit(vector_sum, vec![1.0; 8]).result()? == 8.0);
        for (name, count, len) in variants() {
            let items: Vec<Vec<f64>> = (0..count).map(|i| item(i, len)).collect();
            let started = Instant::now();
            let scaled = client.map(twice_plus_one, items);
            let sums = client.map(vector_sum, scaled);
            let sum = client.submit(total, sums).result()?;
            let seconds = started.elapsed().as_secs_f64();
            check(name, sum, count, len);
            println!("RESULT name={name} seconds={seconds}");
        }
        Ok(())
    })
}

/// The hand-written program: nothing from mpidask.
fn role_raw_large_args() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let rank = world.rank();
    let workers = world.size() - 2;
    for (name, count, len) in variants() {
        world.barrier();
        if rank == 1 {
            let items: Vec<Vec<f64>> = (0..count).map(|i| item(i, len)).collect();
            world.barrier();
            let started = Instant::now();
            for (i, values) in items.iter().enumerate() {
                world
                    .process_at_rank(2 + i as i32 % workers)
                    .send(&values[..]);
            }
            let mut sum = 0.0;
            for i in 0..count {
                let (value, _) = world
                    .process_at_rank(2 + i as i32 % workers)
                    .receive::<f64>();
                sum += value;
            }
            let seconds = started.elapsed().as_secs_f64();
            check(name, sum, count, len);
            println!("RESULT name={name} seconds={seconds}");
        } else {
            world.barrier();
            if rank >= 2 {
                let mine = (0..count)
                    .filter(|i| 2 + *i as i32 % workers == rank)
                    .count();
                for _ in 0..mine {
                    let (values, _) = world.process_at_rank(1).receive_vec::<f64>();
                    let sum = vector_sum(twice_plus_one(values));
                    world.process_at_rank(1).send(&sum);
                }
            }
        }
    }
    world.barrier();
}

fn deadline() -> Duration {
    Duration::from_secs(if smoke() { 120 } else { 600 })
}

/// One launch's `RESULT name=<variant> seconds=<s>` lines.
fn results(run: &Run, who: &str) -> BTreeMap<String, f64> {
    run.expect_code(0);
    let found: BTreeMap<String, f64> = common::named_results(&run.stdout, who, &["seconds"])
        .into_iter()
        .map(|(name, numbers)| (name, numbers[0]))
        .collect();
    for (name, _, _) in variants() {
        assert!(
            found.contains_key(name),
            "{who} printed no result for {name}\n{}",
            run.dump()
        );
    }
    found
}

fn launch(role: &str) -> BTreeMap<String, f64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command.env("MPIDASK_BENCH_ROLE", role);
    results(&run_with_deadline(command, deadline()), role)
}

fn launch_daskmpi(python: &std::path::Path) -> BTreeMap<String, f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/large_args.py");
    let spec: Vec<String> = variants()
        .iter()
        .map(|(name, count, len)| format!("{name}:{count}:{len}"))
        .collect();
    let mut command: Command = mpirun(NP, python, &[]);
    command
        .arg(script)
        .args(&spec)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    results(&run_with_deadline(command, deadline()), "dask-mpi")
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        match role.as_str() {
            "large_args" => role_large_args(),
            "raw_large_args" => role_raw_large_args(),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let wanted = common::wanted_by_args();
    if !variants().iter().any(|(name, _, _)| wanted(name)) {
        return;
    }
    // The peer runs in real runs only: a smoke run checks the project's own code.
    let python = (!smoke()).then(|| peer_python("dask_mpi"));
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut dask: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds() {
        let launches = [
            (&mut ours, launch("large_args")),
            (&mut raw, launch("raw_large_args")),
        ];
        for (into, found) in launches {
            for (name, seconds) in found {
                into.entry(name).or_default().push(seconds);
            }
        }
        if let Some(python) = &python {
            for (name, seconds) in launch_daskmpi(python) {
                dask.entry(name).or_default().push(seconds);
            }
        }
    }
    for (name, _, _) in variants() {
        let mine = &ours[name];
        figure(&format!("{name}_s"), "s", mine, None);
        let raw_name = format!("{name}_raw_mpi_s");
        figure(&raw_name, "s", &raw[name], None);
        ratio(
            &format!("{name}_vs_raw_mpi"),
            mine,
            &raw[name],
            true,
            &raw_name,
        );
        if let Some(peer) = dask.get(name) {
            let peer_name = format!("{name}_daskmpi_s");
            figure(&peer_name, "s", peer, None);
            ratio(&format!("{name}_vs_daskmpi"), mine, peer, true, &peer_name);
        }
    }
}
