//! Jobs across the nodes `make nodes` imitates on this machine (network namespaces on a
//! bridge, TCP between them) against the same jobs on one node, each round running both,
//! interleaved; every figure is the median of the rounds (at least 5):
//!
//! * `pi_gb_per_s_3nodes` against `pi_gb_per_s_1node`: the seed's Pi over 2 GB in 200 MB
//!   chunks at `-np 8` (6 workers), 3 ranks per node (`node1: 3, node2: 3, node3: 2`)
//!   against all 8 on one node;
//! * `tasks_per_s_3nodes` against `tasks_per_s_1node`: 100,000 no-op tasks in one map at
//!   `-np 4`, the scheduler and the client on node1 and one worker on node2 and on node3
//!   (every message crosses nodes) against all 4 on one node;
//! * `transfer_gb_per_s_internode` against `transfer_raw_mpi_gb_per_s_internode`: 200 MB
//!   values moved from the worker on node2 to the worker on node3 (same placement), timed
//!   by the receiver's task stream from its request to the value's arrival, against a
//!   plain rsmpi program sending rank 2's buffer to rank 3 (which reuses one buffer).
//!
//! The nodes share this machine's cores, page cache and memory: a 3-node figure says what
//! the network path costs, not what three machines would give (docs/multinode.md).
//!
//! ```text
//! make nodes && cargo bench --bench multinode
//! ```

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{blob_len, figure, make_blob, median, ratio, rounds, size, wait_without_spinning};
use mpi::traits::*;
use mpidask::{Client, TaskOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Run, mpirun, mpirun_on_nodes, run_with_deadline};

const DEADLINE: Duration = Duration::from_secs(600);
/// Values moved per transfer launch (odd: the median is one of them).
const TRANSFERS: usize = 7;

fn pi_bytes() -> u64 {
    size(2_000_000_000, 100_000_000)
}
fn pi_chunk_bytes() -> u64 {
    size(200_000_000, 10_000_000)
}
fn tasks() -> u64 {
    size(100_000, 1_000)
}
fn transfer_bytes() -> usize {
    size(200_000_000, 2_000_000)
}

// ----- roles (run under the launcher) ------------------------------------------------------

fn noop(x: u64) -> u64 {
    x
}

fn role_pi(client: &Client) -> anyhow::Result<()> {
    use mpidask::array::random;
    let (n, c) = ((pi_bytes() / 8) as usize, (pi_chunk_bytes() / 8) as usize);
    let pi = random::uniform(0.0, 1.0, &[n / 2, 2], &[c / 2, 2], 42)
        .powi(2)
        .sum_axis(-1)
        .lt(1.0)
        .mean()
        * 4.0;
    let started = Instant::now();
    let value = pi.compute_scalar::<f64>(client)?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!((value - std::f64::consts::PI).abs() < 0.01, "pi = {value}");
    println!("MEASURE gb_per_s={}", pi_bytes() as f64 / 1e9 / seconds);
    Ok(())
}

fn role_tasks(client: &Client) -> anyhow::Result<()> {
    client.gather(&client.map(noop, 0..1000u64))?;
    let started = Instant::now();
    let values = client.gather(&client.map(noop, 0..tasks()))?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(values.len() == tasks() as usize && values[7] == 7);
    println!("MEASURE tasks_per_s={}", tasks() as f64 / seconds);
    Ok(())
}

/// Moves [`TRANSFERS`] values from worker rank 2 to worker rank 3, one at a time, each
/// released before the next; the trace (`MPIDASK_TRACE`) times each move.
fn role_transfer(client: &Client) -> anyhow::Result<()> {
    for round in 0..TRANSFERS {
        let len = transfer_bytes();
        let made = client
            .with_options(TaskOptions::default().workers([2]))
            .submit(make_blob, (len, round as u8));
        client.wait(std::slice::from_ref(&made))?;
        let read = client
            .with_options(TaskOptions::default().workers([3]))
            .submit(blob_len, &made);
        anyhow::ensure!(read.result()? == len);
    }
    Ok(())
}

/// Raw rsmpi: rank 2 sends rank 3 a warm-up message, then [`TRANSFERS`] of
/// [`transfer_bytes`], each acknowledged; rank 3 times each receive into one reused buffer.
fn role_raw_transfer() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let rank = world.rank();
    if rank == 2 || rank == 3 {
        let len = transfer_bytes();
        let mut buffer = vec![1u8; len];
        let peer = world.process_at_rank(5 - rank);
        for _ in 0..=TRANSFERS {
            if rank == 2 {
                peer.send(&buffer[..]);
                peer.receive_into(&mut buffer[..1]);
            } else {
                let started = mpi::time();
                peer.receive_into(&mut buffer[..]);
                println!("MEASURE raw_transfer_s={}", mpi::time() - started);
                peer.send(&buffer[..1]);
            }
        }
    }
    // The others wait without spinning, so the two movers have the cores.
    wait_without_spinning(&world);
}

fn play(role: &str) -> ! {
    match role {
        "pi" => mpidask::run(role_pi),
        "tasks" => mpidask::run(role_tasks),
        "transfer" => mpidask::run(role_transfer),
        "raw_transfer" => {
            role_raw_transfer();
            std::process::exit(0)
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- launching ---------------------------------------------------------------------------

/// Where a launch puts its ranks: one node (this namespace), or the imitated nodes with
/// `slots[k]` ranks on node `k + 1`.
#[derive(Clone, Copy)]
enum Placement {
    OneNode,
    Nodes(&'static [usize]),
}

/// 8 ranks, 3 per node.
const PI_NODES: Placement = Placement::Nodes(&[3, 3, 3]);
/// 4 ranks: the scheduler and the client on node1, rank 2 on node2, rank 3 on node3.
const SPREAD: Placement = Placement::Nodes(&[2, 1, 1]);

fn command(placement: Placement, np: usize, exe: &Path) -> Command {
    match placement {
        Placement::OneNode => mpirun(np, exe, &[]),
        Placement::Nodes(slots) => mpirun_on_nodes(slots, np, exe, &[]),
    }
}

fn launch(role: &str, placement: Placement, np: usize, env: &[(&str, &Path)]) -> Run {
    let exe = std::env::current_exe().expect("current exe");
    let mut command = command(placement, np, &exe);
    command.env("MPIDASK_BENCH_ROLE", role);
    for (name, value) in env {
        command.env(name, value);
    }
    let run = run_with_deadline(command, DEADLINE);
    run.expect_code(0);
    run
}

/// One transfer launch across the nodes: the median GB/s of its moves, each from rank 3's
/// request for the value to the arrival of its last byte (the receive in its task stream).
fn transfer_rate() -> f64 {
    let trace = std::env::temp_dir().join(format!(
        "mpidask-bench-internode-{}.json",
        std::process::id()
    ));
    launch("transfer", SPREAD, 4, &[("MPIDASK_TRACE", &trace)]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).expect("the trace")).expect("JSON");
    let _ = std::fs::remove_file(&trace);
    let events = json["traceEvents"].as_array().expect("events");
    let receives: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["cat"] == "transfer" && e["pid"] == 3 && e["name"] == "receive")
        .collect();
    assert_eq!(receives.len(), TRANSFERS, "rank 3 traced its receives");
    let rates: Vec<f64> = receives
        .iter()
        .map(|r| {
            let bytes = r["args"]["bytes"].as_u64().expect("bytes") as f64;
            bytes / 1e9 / (r["dur"].as_f64().expect("a duration") * 1e-6)
        })
        .collect();
    median(&rates)
}

/// One raw rsmpi launch across the nodes: the median GB/s of its moves after the warm-up.
fn raw_transfer_rate() -> f64 {
    let run = launch("raw_transfer", SPREAD, 4, &[]);
    let seconds = run.measures("raw_transfer_s");
    assert_eq!(seconds.len(), TRANSFERS + 1, "{}", run.dump());
    let rates: Vec<f64> = seconds[1..]
        .iter()
        .map(|s| transfer_bytes() as f64 / 1e9 / s)
        .collect();
    median(&rates)
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        play(&role);
    }
    support::require_nodes(3);
    let wanted = common::wanted_by_args();
    if wanted("pi_gb_per_s_3nodes") || wanted("pi_gb_per_s_1node") {
        let (mut one, mut three) = (vec![], vec![]);
        for _ in 0..rounds() {
            one.push(launch("pi", Placement::OneNode, 8, &[]).measure("gb_per_s"));
            three.push(launch("pi", PI_NODES, 8, &[]).measure("gb_per_s"));
        }
        figure("pi_gb_per_s_1node", "GB/s", &one, None);
        figure("pi_gb_per_s_3nodes", "GB/s", &three, None);
        ratio(
            "pi_3nodes_vs_1node",
            &three,
            &one,
            false,
            "pi_gb_per_s_1node",
        );
    }
    if wanted("tasks_per_s_3nodes") || wanted("tasks_per_s_1node") {
        let (mut one, mut three) = (vec![], vec![]);
        for _ in 0..rounds() {
            one.push(launch("tasks", Placement::OneNode, 4, &[]).measure("tasks_per_s"));
            three.push(launch("tasks", SPREAD, 4, &[]).measure("tasks_per_s"));
        }
        figure("tasks_per_s_1node", "tasks/s", &one, None);
        figure("tasks_per_s_3nodes", "tasks/s", &three, None);
        ratio(
            "tasks_3nodes_vs_1node",
            &three,
            &one,
            false,
            "tasks_per_s_1node",
        );
    }
    if wanted("transfer_gb_per_s_internode") || wanted("transfer_raw_mpi_gb_per_s_internode") {
        let (mut ours, mut raw) = (vec![], vec![]);
        for _ in 0..rounds() {
            raw.push(raw_transfer_rate());
            ours.push(transfer_rate());
        }
        figure("transfer_gb_per_s_internode", "GB/s", &ours, None);
        figure("transfer_raw_mpi_gb_per_s_internode", "GB/s", &raw, None);
        ratio(
            "transfer_internode_vs_raw_mpi",
            &ours,
            &raw,
            false,
            "transfer_raw_mpi_gb_per_s_internode",
        );
    }
}
