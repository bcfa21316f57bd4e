//! Benchmarks of the runtime core under `mpirun -np 4`, each with its baseline measured in
//! the same run. Prints one `BENCH name=<id> value=<number> unit=<unit>` line per figure.
//!
//! ```text
//! cargo bench --bench runtime                 # all
//! cargo bench --bench runtime -- chain_us     # the benchmarks whose name contains chain_us
//! ```
//!
//! The binary is also every program it measures: started with `MPIDASK_BENCH_ROLE=<role>`
//! (under `mpirun`) it plays that role.

#[path = "../tests/support/mod.rs"]
mod support;

use mpi::traits::*;
use mpidask::Client;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Run, bench, median, mpirun, run_with_deadline};

const NP: usize = 4;
const DEADLINE: Duration = Duration::from_secs(600);
const TASKS: u64 = 100_000;
const MILLION: u64 = 1_000_000;
const CHAIN: usize = 10_000;
const PINGPONGS: usize = 100_000;
const IDLE_SECONDS: u64 = 5;
const REPEATS: usize = 3;
/// The seed's chunk size: 200 MB moved worker to worker.
const TRANSFER_BYTES: usize = 200_000_000;
const TRANSFERS: usize = 7;

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
            .submit(make_blob, (TRANSFER_BYTES, round as u8));
        client.wait(std::slice::from_ref(&made))?;
        let read = client
            .with_options(mpidask::TaskOptions::default().workers([3]))
            .submit(blob_len, &made);
        anyhow::ensure!(read.result()? == TRANSFER_BYTES);
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
        let mut buffer = vec![1u8; TRANSFER_BYTES];
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
                    buffer = new_huge_buffer(TRANSFER_BYTES);
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
    let x = mpidask::array::random::uniform(0.0, 1.0, &[150_000_000], &[5_000_000], 3);
    let kept = x.persist(client)?;
    let mean = kept.mean().compute_scalar::<f64>(client)?;
    anyhow::ensure!((mean - 0.5).abs() < 1e-3, "mean {mean}");
    Ok(())
}

fn role_tasks(client: &Client) -> anyhow::Result<()> {
    client.gather(&client.map(noop, 0..1000u64))?;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let futures = client.map(noop, 0..TASKS);
        println!("MEASURE tasks_submit_s={}", started.elapsed().as_secs_f64());
        let values = client.gather(&futures)?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(values.len() == TASKS as usize && values[7] == 7);
        drop(futures);
        println!("MEASURE tasks_per_s={}", TASKS as f64 / seconds);
    }
    Ok(())
}

/// A million tiny tasks in one map: completes, and the scheduler's peak memory stays bounded.
fn role_million(client: &Client) -> anyhow::Result<()> {
    let before = client.scheduler_info()?.peak_rss_bytes;
    let started = Instant::now();
    let futures = client.map(noop, 0..MILLION);
    let values = client.gather(&futures)?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(values.len() == MILLION as usize && values[12_345] == 12_345);
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
        for _ in 1..CHAIN {
            x = client.submit(inc, &x);
        }
        let submitted = started.elapsed().as_secs_f64();
        let value = x.result()?;
        println!("MEASURE chain_submit_us={}", submitted * 1e6 / CHAIN as f64);
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(value == CHAIN as u64);
        println!("MEASURE chain_us={}", seconds * 1e6 / CHAIN as f64);
    }
    Ok(())
}

fn role_empty(_client: &Client) {
    println!("MEASURE ready_at={}", epoch_seconds());
    println!("MEASURE done_at={}", epoch_seconds());
}

fn role_idle(client: &Client) -> anyhow::Result<()> {
    let before = client.scheduler_info()?.cpu_seconds;
    let client_before = mpidask::internals::process::cpu_seconds();
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
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
        for round in 0..(PINGPONGS / 10 + PINGPONGS) {
            if round == PINGPONGS / 10 && rank == 0 {
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
    seconds * 1e6 / (2 * PINGPONGS) as f64
}

/// Startup (launch to program start) and shutdown (program end to launcher exit).
fn startup_shutdown(role: &str) -> (f64, f64) {
    let mut startups = Vec::new();
    let mut shutdowns = Vec::new();
    for _ in 0..REPEATS {
        let (run, spawned_at) = launch(role);
        let ready = run.measures("ready_at")[0];
        let done = run.measures("done_at")[0];
        startups.push(ready - spawned_at);
        shutdowns.push(spawned_at + run.wall.as_secs_f64() - done);
    }
    (median(startups), median(shutdowns))
}

/// `transfer_gb_per_s`: a 200 MB value worker to worker, timed by the task stream (request
/// to arrival), against raw rsmpi send/recv of the same bytes.
fn transfer_benchmark() {
    // The first round warms up the raw path's buffers and connections.
    let raw_seconds = |role: &str| median(launch(role).0.measures("raw_transfer_s")[1..].to_vec());
    let (raw_reused, raw_new) = (raw_seconds("raw_transfer"), raw_seconds("raw_transfer_new"));
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
                    .is_some_and(|b| b >= TRANSFER_BYTES as u64)
        })
        .map(|e| e["dur"].as_f64().expect("a duration") * 1e-6)
        .collect();
    assert_eq!(seconds.len(), TRANSFERS, "one traced transfer per round");
    let gb = TRANSFER_BYTES as f64 / 1e9;
    let ours = gb / median(seconds);
    bench("transfer_gb_per_s", ours, "GB/s");
    bench("transfer_raw_mpi_gb_per_s", gb / raw_reused, "GB/s");
    bench("transfer_vs_raw_mpi", ours * raw_reused / gb, "x");
    bench("transfer_raw_mpi_new_buffer_gb_per_s", gb / raw_new, "GB/s");
    bench("transfer_vs_raw_mpi_new_buffer", ours * raw_new / gb, "x");
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

/// `spill_gb_per_s`: bytes written to (and read back from) the spill directory over the
/// time the worker spent in those writes (reads), from the task stream.
fn spill_benchmark() {
    let json = traced("spill", &[("MPIDASK_MEMORY_LIMIT", "200MB")]);
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
    let (raw_write, raw_read) = raw_file_rates(written);
    bench("spill_gb_per_s", write, "GB/s");
    bench("spill_raw_write_gb_per_s", raw_write, "GB/s");
    bench("spill_vs_raw_write", write / raw_write, "x");
    bench("spill_read_gb_per_s", read, "GB/s");
    bench("spill_raw_read_gb_per_s", raw_read, "GB/s");
    bench("spill_read_vs_raw_read", read / raw_read, "x");
    bench("spill_written_gb", written, "GB");
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

    let needs_pingpong = ["pingpong_us", "tasks_per_s", "chain_us"];
    let pingpong = needs_pingpong.iter().any(|n| wanted(n)).then(pingpong_us);
    if let Some(us) = pingpong {
        bench("pingpong_us", us, "us");
    }
    if wanted("tasks_per_s") {
        let (run, _) = launch("tasks");
        let rate = median(run.measures("tasks_per_s"));
        bench("tasks_per_s", rate, "tasks/s");
        let us = pingpong.expect("measured");
        bench("tasks_per_s_vs_pingpong_rate", rate * us * 1e-6, "x");
    }
    if wanted("chain_us") {
        let (run, _) = launch("chain");
        let us = median(run.measures("chain_us"));
        bench("chain_us", us, "us");
        bench(
            "chain_us_over_pingpong",
            us / pingpong.expect("measured"),
            "x",
        );
    }
    if wanted("startup_s") || wanted("shutdown_s") {
        let (startup, shutdown) = startup_shutdown("empty");
        let (bare_startup, bare_shutdown) = startup_shutdown("hello");
        bench("startup_s", startup, "s");
        bench("startup_bare_mpi_s", bare_startup, "s");
        bench("startup_ratio", startup / bare_startup, "x");
        bench("shutdown_s", shutdown, "s");
        bench("shutdown_bare_mpi_s", bare_shutdown, "s");
        bench("shutdown_ratio", shutdown / bare_shutdown, "x");
    }
    if wanted("million_tasks") {
        let (run, _) = launch("million");
        let peak = run.measures("scheduler_peak_rss_bytes")[0];
        let before = run.measures("scheduler_rss_before_bytes")[0];
        bench("million_tasks_s", run.measures("million_seconds")[0], "s");
        bench("million_tasks_scheduler_peak_rss_mb", peak / 1e6, "MB");
        bench(
            "million_tasks_scheduler_bytes_per_task",
            (peak - before) / MILLION as f64,
            "bytes",
        );
    }
    if wanted("transfer_gb_per_s") {
        transfer_benchmark();
    }
    if wanted("spill_gb_per_s") {
        spill_benchmark();
    }
    if wanted("idle_cpu_s") {
        let (run, _) = launch("idle");
        bench("idle_cpu_s", run.measures("idle_scheduler_cpu_s")[0], "s");
        bench(
            "idle_cpu_client_s",
            run.measures("idle_client_cpu_s")[0],
            "s",
        );
    }
}
