//! Benchmarks of the runtime core under `mpirun -np 4`, each with its baseline measured in
//! the same run: every figure is the median of at least 5 launches, the baseline's launches
//! taking turns with ours, printed as `BENCH name=<id> value=<median> unit=<unit> median=
//! min= max= n=` (see `benches/common`).
//!
//! ```text
//! cargo bench --bench runtime                 # all
//! cargo bench --bench runtime -- chain_us     # the benchmarks whose name contains chain_us
//! ```
//!
//! The binary is also every program it measures: started with `MPIDASK_BENCH_ROLE=<role>`
//! (under `mpirun`) it plays that role.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{figure, median, ratio, rounds, size};
use mpi::traits::*;
use mpidask::Client;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
const DEADLINE: Duration = Duration::from_secs(600);
const REPEATS: usize = 3;
/// The seed's chunk size: 200 MB moved worker to worker.
const TRANSFER_BYTES: usize = 200_000_000;
const TRANSFERS: usize = 7;

/// Sizes, tiny in a smoke run.
fn tasks() -> u64 {
    size(100_000, 1_000)
}
fn million() -> u64 {
    size(1_000_000, 10_000)
}
fn chain() -> usize {
    size(10_000, 100)
}
fn pingpongs() -> usize {
    size(100_000, 1_000)
}
fn idle_seconds() -> u64 {
    size(5, 1)
}
fn transfer_bytes() -> usize {
    size(TRANSFER_BYTES, 2_000_000)
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn noop(x: u64) -> u64 {
    x
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// A block of bytes that encodes as one byte string.
#[derive(serde::Serialize, serde::Deserialize)]
struct Blob(serde_bytes::ByteBuf);

fn make_blob((len, fill): (usize, u8)) -> Blob {
    Blob(serde_bytes::ByteBuf::from(vec![fill; len]))
}

fn blob_len(blob: Blob) -> usize {
    blob.0.len()
}

// ----- roles -------------------------------------------------------------------------------

/// Moves a 200 MB value from worker rank 2 to worker rank 3, `TRANSFERS` times; the trace
/// (`MPIDASK_TRACE`) times each move from request to arrival.
fn role_transfer(client: &Client) -> anyhow::Result<()> {
    for round in 0..TRANSFERS {
        let made = client
            .with_options(mpidask::TaskOptions::default().workers([2]))
            .submit(make_blob, (transfer_bytes(), round as u8));
        client.wait(std::slice::from_ref(&made))?;
        let read = client
            .with_options(mpidask::TaskOptions::default().workers([3]))
            .submit(blob_len, &made);
        anyhow::ensure!(read.result()? == transfer_bytes());
    }
    Ok(())
}

/// Raw rsmpi: rank 2 sends 200 MB to rank 3, `TRANSFERS` + 1 times. The receiver reuses
/// one buffer, or (role `raw_transfer_new`) receives each time into a new one with huge
/// pages advised, as mpidask must for a value it will keep.
fn role_raw_transfer(new_buffer: bool) {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let rank = world.rank();
    if rank == 2 || rank == 3 {
        let mut buffer = vec![1u8; transfer_bytes()];
        let peer = world.process_at_rank(5 - rank);
        for _ in 0..TRANSFERS + 1 {
            if rank == 2 {
                peer.send(&buffer[..]);
                peer.receive_into(&mut buffer[..1]);
            } else {
                // A new buffer is part of receiving a value to keep: its allocation and
                // page faults are timed too.
                let started = mpi::time();
                if new_buffer {
                    buffer = new_huge_buffer(transfer_bytes());
                }
                peer.receive_into(&mut buffer[..]);
                let seconds = mpi::time() - started;
                println!("MEASURE raw_transfer_s={seconds}");
                peer.send(&buffer[..1]);
            }
        }
    }
    wait_without_spinning(&world);
}

/// A buffer of `len` zero bytes, not yet touched (calloc'd pages are faulted in on first
/// write), whose pages the kernel backs with huge pages.
fn new_huge_buffer(len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    let huge = 2 << 20;
    let start = (buffer.as_mut_ptr() as usize).next_multiple_of(huge);
    let end = (buffer.as_mut_ptr() as usize + len) / huge * huge;
    // SAFETY: the range lies inside the allocation; the advice changes no contents.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end.saturating_sub(start),
            libc::MADV_HUGEPAGE,
        );
    }
    buffer
}

/// Keeps 1.2 GB of array chunks (40 MB each) on 2 workers limited to 200 MB each, then
/// reads them all: most are spilled and read back.
fn role_spill(client: &Client) -> anyhow::Result<()> {
    let (n, chunk) = size((150_000_000, 5_000_000), (3_000_000, 100_000));
    let x = mpidask::array::random::uniform(0.0, 1.0, &[n], &[chunk], 3);
    let kept = x.persist(client)?;
    let mean = kept.mean().compute_scalar::<f64>(client)?;
    anyhow::ensure!((mean - 0.5).abs() < 1e-3, "mean {mean}");
    Ok(())
}

fn role_tasks(client: &Client) -> anyhow::Result<()> {
    client.gather(&client.map(noop, 0..1000u64))?;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let futures = client.map(noop, 0..tasks());
        println!("MEASURE tasks_submit_s={}", started.elapsed().as_secs_f64());
        let values = client.gather(&futures)?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(values.len() == tasks() as usize && values[7] == 7);
        drop(futures);
        println!("MEASURE tasks_per_s={}", tasks() as f64 / seconds);
    }
    Ok(())
}

/// A million tiny tasks in one map: completes, and the scheduler's peak memory stays bounded.
fn role_million(client: &Client) -> anyhow::Result<()> {
    let before = client.scheduler_info()?.peak_rss_bytes;
    let started = Instant::now();
    let futures = client.map(noop, 0..million());
    let values = client.gather(&futures)?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        values.len() == million() as usize && values.iter().copied().eq(0..million()),
        "a million no-op tasks came back in order"
    );
    let peak = client.scheduler_info()?.peak_rss_bytes;
    println!("MEASURE million_seconds={seconds}");
    println!("MEASURE scheduler_peak_rss_bytes={peak}");
    println!("MEASURE scheduler_rss_before_bytes={before}");
    Ok(())
}

fn role_chain(client: &Client) -> anyhow::Result<()> {
    for _ in 0..REPEATS {
        let started = Instant::now();
        let mut x = client.submit(inc, 0u64);
        for _ in 1..chain() {
            x = client.submit(inc, &x);
        }
        let submitted = started.elapsed().as_secs_f64();
        let value = x.result()?;
        println!(
            "MEASURE chain_submit_us={}",
            submitted * 1e6 / chain() as f64
        );
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(value == chain() as u64);
        println!("MEASURE chain_us={}", seconds * 1e6 / chain() as f64);
    }
    Ok(())
}

/// Ready when every worker has joined (as the scheduler reports it), then done.
fn role_empty(client: &Client) -> anyhow::Result<()> {
    while client.scheduler_info()?.workers.len() < NP - 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("MEASURE ready_at={}", epoch_seconds());
    println!("MEASURE done_at={}", epoch_seconds());
    Ok(())
}

fn role_idle(client: &Client) -> anyhow::Result<()> {
    let before = client.scheduler_info()?.cpu_seconds;
    let client_before = mpidask::internals::process::cpu_seconds();
    std::thread::sleep(Duration::from_secs(idle_seconds()));
    let client_cpu = mpidask::internals::process::cpu_seconds() - client_before;
    let scheduler_cpu = client.scheduler_info()?.cpu_seconds - before;
    println!("MEASURE idle_scheduler_cpu_s={scheduler_cpu}");
    println!("MEASURE idle_client_cpu_s={client_cpu}");
    Ok(())
}

/// A bare rsmpi program: initialise, synchronise, report, finalise.
fn role_hello() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    world.barrier();
    if world.rank() == 0 {
        println!("MEASURE ready_at={}", epoch_seconds());
        println!("MEASURE done_at={}", epoch_seconds());
    }
}

/// Raw rsmpi ping-pong of 8 bytes between ranks 0 and 1; the other ranks wait without
/// spinning (a non-blocking barrier tested every millisecond).
fn role_pingpong() {
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let rank = world.rank();
    let mut buffer = [0u64; 1];
    if rank <= 1 {
        let peer = world.process_at_rank(1 - rank);
        for round in 0..(pingpongs() / 10 + pingpongs()) {
            if round == pingpongs() / 10 && rank == 0 {
                // Warm-up done.
                buffer[0] = 0;
                println!("MEASURE start_at={}", epoch_seconds());
            }
            if rank == 0 {
                peer.send(&buffer[..]);
                peer.receive_into(&mut buffer[..]);
            } else {
                peer.receive_into(&mut buffer[..]);
                buffer[0] += 1;
                peer.send(&buffer[..]);
            }
        }
        if rank == 0 {
            println!("MEASURE end_at={}", epoch_seconds());
        }
    }
    wait_without_spinning(&world);
}

/// A barrier the idle ranks wait in without spinning a core (as mpidask's idle ranks do):
/// a non-blocking barrier tested every millisecond.
fn wait_without_spinning(world: &mpi::topology::SimpleCommunicator) {
    let mut request = world.immediate_barrier();
    loop {
        match request.test() {
            Ok(_) => break,
            Err(r) => request = r,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn play(role: &str) -> ! {
    match role {
        "tasks" => mpidask::run(role_tasks),
        "chain" => mpidask::run(role_chain),
        "million" => mpidask::run(role_million),
        "empty" => mpidask::run(role_empty),
        "idle" => mpidask::run(role_idle),
        "hello" => role_hello(),
        "pingpong" => role_pingpong(),
        "transfer" => mpidask::run(role_transfer),
        "spill" => mpidask::run(role_spill),
        "raw_transfer" => role_raw_transfer(false),
        "raw_transfer_new" => role_raw_transfer(true),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0)
}

// ----- driver ------------------------------------------------------------------------------

fn launch(role: &str) -> (Run, f64) {
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command.env("MPIDASK_BENCH_ROLE", role);
    let spawned_at = epoch_seconds();
    let run = run_with_deadline(command, DEADLINE);
    run.expect_code(0);
    (run, spawned_at)
}

fn pingpong_us() -> f64 {
    let (run, _) = launch("pingpong");
    let seconds = run.measures("end_at")[0] - run.measures("start_at")[0];
    seconds * 1e6 / (2 * pingpongs()) as f64
}

/// Startup (launch to every worker joined, as the client sees it) and shutdown (program
/// end to launcher exit) of one launch.
fn startup_shutdown(role: &str) -> (f64, f64) {
    let (run, spawned_at) = launch(role);
    let ready = run.measures("ready_at")[0];
    let done = run.measures("done_at")[0];
    (
        ready - spawned_at,
        spawned_at + run.wall.as_secs_f64() - done,
    )
}

/// `transfer_gb_per_s` of one launch: a 200 MB value worker to worker, seconds per move,
/// timed by the task stream (request to arrival).
fn transfer_seconds() -> f64 {
    let json = traced("transfer", &[]);
    let seconds: Vec<f64> = json["traceEvents"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["cat"] == "transfer"
                && e["pid"] == 3
                && e["args"]["bytes"]
                    .as_u64()
                    .is_some_and(|b| b >= transfer_bytes() as u64)
        })
        .map(|e| e["dur"].as_f64().expect("a duration") * 1e-6)
        .collect();
    assert_eq!(seconds.len(), TRANSFERS, "one traced transfer per round");
    median(&seconds)
}

/// Raw rsmpi's seconds per move in one launch (the first move warms up).
fn raw_transfer_seconds(role: &str) -> f64 {
    median(&launch(role).0.measures("raw_transfer_s")[1..])
}

/// Runs `role` under mpirun with a trace and extra environment; returns the trace.
fn traced(role: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let trace =
        std::env::temp_dir().join(format!("mpidask-bench-{role}-{}.json", std::process::id()));
    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", role)
        .env("MPIDASK_TRACE", &trace)
        .envs(env.iter().copied());
    run_with_deadline(command, DEADLINE).expect_code(0);
    let json = serde_json::from_slice(&std::fs::read(&trace).expect("the trace")).expect("JSON");
    let _ = std::fs::remove_file(&trace);
    json
}

/// One spill launch: GB/s written, GB/s read back (bytes over the time the I/O thread spent
/// in those writes and reads, from the task stream) and GB written.
fn spill_rates() -> (f64, f64, f64) {
    let limit = size("200MB", "10MB");
    let json = traced("spill", &[("MPIDASK_MEMORY_LIMIT", limit)]);
    let rate = |name: &str| {
        let (bytes, seconds) = json["traceEvents"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["cat"] == "spill" && e["name"] == name)
            .fold((0.0, 0.0), |(b, s), e| {
                (
                    b + e["args"]["bytes"].as_f64().expect("bytes"),
                    s + e["dur"].as_f64().expect("a duration") * 1e-6,
                )
            });
        assert!(bytes > 0.0, "no {name} in the trace");
        (bytes / 1e9 / seconds, bytes / 1e9)
    };
    let (write, written) = rate("spill");
    let (read, _) = rate("read back");
    (write, read, written)
}

/// Baseline: `gb` GB written as 40 MB files into `$TMPDIR` with `std::fs::write`, then read
/// back with `std::fs::read`, from this (otherwise idle) process.
fn raw_file_rates(gb: f64) -> (f64, f64) {
    let dir = std::env::temp_dir().join(format!("mpidask-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let chunk = vec![7u8; 40_000_000];
    let files = ((gb * 1e9) / chunk.len() as f64).ceil() as usize;
    let started = Instant::now();
    for i in 0..files {
        std::fs::write(dir.join(i.to_string()), &chunk).expect("write");
    }
    let write = (files * chunk.len()) as f64 / 1e9 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..files {
        let bytes = std::fs::read(dir.join(i.to_string())).expect("read");
        assert_eq!(bytes.len(), chunk.len());
    }
    let read = (files * chunk.len()) as f64 / 1e9 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    (write, read)
}

/// `rounds()` samples of `measure`.
fn sample<T>(mut measure: impl FnMut() -> T) -> Vec<T> {
    (0..rounds()).map(|_| measure()).collect()
}

fn main() {
    if let Ok(role) = std::env::var("MPIDASK_BENCH_ROLE") {
        play(&role);
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));

    if wanted("tasks_per_s") || wanted("chain_us") || wanted("pingpong_us") {
        // Each round: the ping-pong baseline, then the task rate, then the chain.
        let (mut pingpong, mut rates, mut chains) = (vec![], vec![], vec![]);
        for _ in 0..rounds() {
            pingpong.push(pingpong_us());
            rates.push(median(&launch("tasks").0.measures("tasks_per_s")));
            chains.push(median(&launch("chain").0.measures("chain_us")));
        }
        figure("pingpong_us", "us", &pingpong, None);
        figure("tasks_per_s", "tasks/s", &rates, None);
        let pingpong_rates: Vec<f64> = pingpong.iter().map(|us| 1e6 / us).collect();
        ratio(
            "tasks_per_s_vs_pingpong_rate",
            &rates,
            &pingpong_rates,
            false,
            "pingpong_us",
        );
        figure("chain_us", "us", &chains, None);
        let over: Vec<f64> = chains.iter().zip(&pingpong).map(|(c, p)| c / p).collect();
        figure("chain_us_over_pingpong", "x", &over, Some("pingpong_us"));
    }
    if wanted("startup_s") || wanted("shutdown_s") {
        let (mut ours, mut bare) = (vec![], vec![]);
        for _ in 0..rounds() {
            ours.push(startup_shutdown("empty"));
            bare.push(startup_shutdown("hello"));
        }
        let first = |v: &[(f64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        let second = |v: &[(f64, f64)]| v.iter().map(|p| p.1).collect::<Vec<_>>();
        figure("startup_s", "s", &first(&ours), None);
        figure("startup_bare_mpi_s", "s", &first(&bare), None);
        ratio(
            "startup_vs_bare_mpi",
            &first(&ours),
            &first(&bare),
            true,
            "startup_bare_mpi_s",
        );
        figure("shutdown_s", "s", &second(&ours), None);
        figure("shutdown_bare_mpi_s", "s", &second(&bare), None);
        ratio(
            "shutdown_vs_bare_mpi",
            &second(&ours),
            &second(&bare),
            true,
            "shutdown_bare_mpi_s",
        );
    }
    if wanted("million_tasks") {
        let runs = sample(|| launch("million").0);
        let seconds: Vec<f64> = runs
            .iter()
            .map(|r| r.measures("million_seconds")[0])
            .collect();
        let peak: Vec<f64> = runs
            .iter()
            .map(|r| r.measures("scheduler_peak_rss_bytes")[0] / 1e6)
            .collect();
        let per_task: Vec<f64> = runs
            .iter()
            .map(|r| {
                (r.measures("scheduler_peak_rss_bytes")[0]
                    - r.measures("scheduler_rss_before_bytes")[0])
                    / million() as f64
            })
            .collect();
        figure("million_tasks_s", "s", &seconds, None);
        figure("million_tasks_scheduler_peak_rss_mb", "MB", &peak, None);
        figure(
            "million_tasks_scheduler_bytes_per_task",
            "bytes",
            &per_task,
            None,
        );
    }
    if wanted("transfer_gb_per_s") {
        let gb = transfer_bytes() as f64 / 1e9;
        let (mut ours, mut reused, mut fresh) = (vec![], vec![], vec![]);
        for _ in 0..rounds() {
            reused.push(gb / raw_transfer_seconds("raw_transfer"));
            fresh.push(gb / raw_transfer_seconds("raw_transfer_new"));
            ours.push(gb / transfer_seconds());
        }
        figure("transfer_gb_per_s", "GB/s", &ours, None);
        figure("transfer_raw_mpi_gb_per_s", "GB/s", &reused, None);
        ratio(
            "transfer_vs_raw_mpi",
            &ours,
            &reused,
            false,
            "transfer_raw_mpi_gb_per_s",
        );
        figure("transfer_raw_mpi_new_buffer_gb_per_s", "GB/s", &fresh, None);
        ratio(
            "transfer_vs_raw_mpi_new_buffer",
            &ours,
            &fresh,
            false,
            "transfer_raw_mpi_new_buffer_gb_per_s",
        );
    }
    if wanted("spill_gb_per_s") {
        let (mut write, mut read, mut raw_write, mut raw_read, mut written) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds() {
            let (w, r, gb) = spill_rates();
            let (rw, rr) = raw_file_rates(gb);
            write.push(w);
            read.push(r);
            raw_write.push(rw);
            raw_read.push(rr);
            written.push(gb);
        }
        figure("spill_gb_per_s", "GB/s", &write, None);
        figure("spill_raw_write_gb_per_s", "GB/s", &raw_write, None);
        ratio(
            "spill_vs_raw_write",
            &write,
            &raw_write,
            false,
            "spill_raw_write_gb_per_s",
        );
        figure("spill_read_gb_per_s", "GB/s", &read, None);
        figure("spill_raw_read_gb_per_s", "GB/s", &raw_read, None);
        ratio(
            "spill_read_vs_raw_read",
            &read,
            &raw_read,
            false,
            "spill_raw_read_gb_per_s",
        );
        figure("spill_written_gb", "GB", &written, None);
    }
    if wanted("idle_cpu_s") {
        let runs = sample(|| launch("idle").0);
        let of = |name: &str| -> Vec<f64> { runs.iter().map(|r| r.measures(name)[0]).collect() };
        figure("idle_cpu_s", "s", &of("idle_scheduler_cpu_s"), None);
        figure("idle_cpu_client_s", "s", &of("idle_client_cpu_s"), None);
    }
}
