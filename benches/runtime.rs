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
//!
//! `fib_tasks_per_s`: the recursive Fibonacci, fib(20) with every call of 2 or more
//! submitting its two calls from its task (21,891 tasks, submitted by task clients), against
//! as many no-op tasks in one `client.map` (`fib_flat_tasks_per_s`), taking turns in one job.
//!
//! `mpi_task_overhead_us`: the time from submitting an empty MPI task on 2 workers to its
//! result, one task at a time, against the same for an empty plain task
//! (`plain_task_us`), taking turns in one job ([`MPI_TASKS`] of each per turn).
//!
//! `checkpoint_overhead`: a job of [`CHECKPOINT_TASKS`] tasks (each about 20 ms of
//! arithmetic returning 800 KB) run with `--checkpoint` into a new directory, so every
//! result is also written there, against the same job without it, launches taking turns;
//! timed inside the program from the map to the gathered sum. The same job started again
//! on the full directory, so every result is loaded, is `checkpoint_resume_s`.
//!
//! `tasks_per_s` and `chain_us` are also compared with two Python peers, each launched once
//! per round under the same `mpirun -np 4`, from the peers' venv (`make peers`; a missing
//! venv or script fails the bench):
//!
//! * dask-mpi, `../shared/peers/tasks_daskmpi.py` (default settings: 2 workers of 1
//!   thread, worker-saturation 1.1): `client.map(inc, range(T))` + `client.gather` with
//!   [`tasks`] (100,000) tasks, as many as ours; one launch takes minutes here (its rate
//!   is in BENCHMARKS.md). Its chain is `client.submit(inc, x)` [`PEER_CHAIN`]
//!   times, then `x.result()`, as ours.
//! * mpi4py.futures, `../shared/peers/tasks_mpi4py.py` (`MPICommExecutor`: rank 0 the
//!   master, 3 workers): `list(executor.map(inc, range(100_000)))` with the default
//!   `chunksize=1` (one message pair per task) is the peer's figure; `chunksize=1000` is
//!   printed as its own figure. It has no futures as arguments, so its chain is
//!   `v = executor.submit(inc, v).result()` [`PEER_CHAIN`] times: a round trip per task.
//!
//! Each peer launch runs its measurement once (REPS=1) after its 100-task warm-up; the
//! figure is the median over the launches. Smoke runs (`MPIDASK_BENCH_SMOKE=1`) and
//! `scripts/bench-compare.sh` (which compares two builds of mpidask) do not run the peers.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{
    blob_len, figure, make_blob, median, one_run_for_compare, peer_python, ratio, rounds,
    shared_peers, size, smoke, wait_without_spinning,
};
use mpi::traits::*;
use mpidask::{Client, WorkerInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::recursion::fib_tree;
use support::{Run, mpirun, run_with_deadline};

const NP: usize = 4;
const DEADLINE: Duration = Duration::from_secs(600);
const REPEATS: usize = 3;
/// The seed's chunk size: 200 MB moved worker to worker.
const TRANSFER_BYTES: usize = 200_000_000;
/// Values moved per launch (odd: the median is one of them).
const TRANSFERS: usize = 7;
/// The peers' dependent chain, in tasks (dask-mpi takes about 6 ms per task here).
const PEER_CHAIN: usize = 1_000;
/// The batch size of mpi4py.futures' second map.
const MPI4PY_CHUNKSIZE: usize = 1_000;

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

/// The sizes of the values one launch moves, in order: the fixed size every time, or
/// (`varying`) 50 to 250 MB in 7 steps of 33.3 MB, shuffled (50, 150, 250, 117, 217, 83,
/// 183 MB): no two alike, so the receiver's pool of kept buffers, which offers a buffer only
/// for a value of exactly its size, never has one.
fn transfer_sizes(varying: bool) -> Vec<usize> {
    if !varying {
        return vec![transfer_bytes(); TRANSFERS];
    }
    let (low, high) = size((50_000_000, 250_000_000), (1_500_000, 3_000_000));
    (0..TRANSFERS)
        .map(|i| low + (i * 3 % TRANSFERS) * (high - low) / (TRANSFERS - 1))
        .collect()
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

/// The recursive Fibonacci of `fib_tasks_per_s`: fib(20), every call of 2 or more
/// submitting its two calls from its task: 21,891 tasks.
fn fib_n() -> u32 {
    size(20, 10)
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// Tasks of the `checkpoint_overhead` job.
const CHECKPOINT_TASKS: u64 = 200;

/// A task of the `checkpoint_overhead` job: `size` values of a slowly converging series
/// (about 20 ms of arithmetic for 100,000 values), 8 bytes each.
fn series(seed: u64) -> Vec<f64> {
    let n = size(100_000, 1_000);
    let mut x = seed as f64 + 0.5;
    (0..n)
        .map(|k| {
            for _ in 0..12 {
                x = (x * 1.000_001 + k as f64).sqrt();
            }
            x
        })
        .collect()
}

fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

// ----- roles -------------------------------------------------------------------------------

/// Moves values of [`transfer_sizes`] from worker rank 2 to worker rank 3, one at a time,
/// each released before the next; the trace (`MPIDASK_TRACE`) times each move.
fn role_transfer(client: &Client, varying: bool) -> anyhow::Result<()> {
    for (round, len) in transfer_sizes(varying).into_iter().enumerate() {
        let made = client
            .with_options(mpidask::TaskOptions::default().workers([2]))
            .submit(make_blob, (len, round as u8));
        client.wait(std::slice::from_ref(&made))?;
        let read = client
            .with_options(mpidask::TaskOptions::default().workers([3]))
            .submit(blob_len, &made);
        anyhow::ensure!(read.result()? == len);
    }
    Ok(())
}

/// Raw rsmpi: rank 2 sends rank 3 a warm-up message of the first size, then one of each of
/// [`transfer_sizes`]. The receiver reuses one buffer, or (`new_buffer`) receives each
/// time into a new one with huge pages advised, as mpidask must for a value it will keep.
fn role_raw_transfer(new_buffer: bool, varying: bool) {
    let sizes = transfer_sizes(varying);
    let sizes: Vec<usize> = std::iter::once(sizes[0]).chain(sizes).collect();
    let universe = mpi::initialize().expect("MPI initialises");
    let world = universe.world();
    let rank = world.rank();
    if rank == 2 || rank == 3 {
        let largest = sizes.iter().copied().max().expect("sizes");
        let mut buffer = vec![1u8; largest];
        let peer = world.process_at_rank(5 - rank);
        for &len in &sizes {
            if rank == 2 {
                peer.send(&buffer[..len]);
                peer.receive_into(&mut buffer[..1]);
            } else {
                // A new buffer is part of receiving a value to keep: its allocation and
                // page faults are timed too.
                let started = mpi::time();
                if new_buffer {
                    buffer = new_huge_buffer(len);
                }
                peer.receive_into(&mut buffer[..len]);
                let seconds = mpi::time() - started;
                println!("MEASURE raw_transfer_s={seconds}");
                println!("MEASURE raw_transfer_bytes={len}");
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

/// Keeps 1.2 GB of array chunks (40 MB each) on 2 workers limited to 200 MB each, then as
/// much again of a second array, then reads the first: most of its chunks are spilled and
/// read back. (Without the second array a slow disk could still be writing the first when
/// the reads came, and a value being written is read from memory: nothing would be read
/// back.)
fn role_spill(client: &Client) -> anyhow::Result<()> {
    let (n, chunk) = size((150_000_000, 5_000_000), (3_000_000, 100_000));
    let x = mpidask::array::random::uniform(0.0, 1.0, &[n], &[chunk], 3);
    let kept = x.persist(client)?;
    let other = mpidask::array::random::uniform(0.0, 1.0, &[n], &[chunk], 4).persist(client)?;
    let mean = kept.mean().compute_scalar::<f64>(client)?;
    anyhow::ensure!((mean - 0.5).abs() < 1e-3, "mean {mean}");
    drop(other);
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

/// Tasks per second of the recursive Fibonacci, and of as many no-op tasks in one
/// `client.map`, taking turns in one job.
fn role_fib(client: &Client) -> anyhow::Result<()> {
    client.try_submit(fib_tree, 8u32).result()?;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let (value, tasks) = client.try_submit(fib_tree, fib_n()).result()?;
        let fib_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let values = client.gather(&client.map(noop, 0..tasks))?;
        let flat_seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(values.len() as u64 == tasks && value > 0);
        println!("MEASURE fib_tasks_per_s={}", tasks as f64 / fib_seconds);
        println!(
            "MEASURE fib_flat_tasks_per_s={}",
            tasks as f64 / flat_seconds
        );
    }
    Ok(())
}

/// The `checkpoint_overhead` job: the seconds from the map to the gathered sum.
fn role_checkpoint(client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    let parts = client.map(series, 0..CHECKPOINT_TASKS);
    let sums = client.map(total, parts.iter());
    let sum: f64 = client.gather(&sums)?.into_iter().sum();
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(sum.is_finite() && sum > 0.0, "the sum {sum}");
    println!("MEASURE checkpoint_job_s={seconds}");
    Ok(())
}

/// Empty MPI tasks of `mpi_task_overhead_us`, and as many plain ones, per turn.
const MPI_TASKS: usize = 200;

/// The empty MPI task: it only learns its communicator's size.
fn empty_mpi_task(comm: &mpidask::MpiComm) -> i32 {
    comm.size()
}

/// Microseconds from submit to result of an empty MPI task on 2 workers, and of an empty
/// plain task, one at a time, taking turns.
fn role_mpi_overhead(client: &Client) -> anyhow::Result<()> {
    client.submit_mpi(empty_mpi_task, (), 2).result()?;
    for _ in 0..REPEATS {
        let started = Instant::now();
        for _ in 0..MPI_TASKS {
            anyhow::ensure!(client.submit_mpi(empty_mpi_task, (), 2).result()? == 2);
        }
        let mpi_us = started.elapsed().as_secs_f64() * 1e6 / MPI_TASKS as f64;
        let started = Instant::now();
        for i in 0..MPI_TASKS {
            client.submit(noop, i as u64).result()?;
        }
        let plain_us = started.elapsed().as_secs_f64() * 1e6 / MPI_TASKS as f64;
        println!("MEASURE mpi_task_overhead_us={mpi_us}");
        println!("MEASURE plain_task_us={plain_us}");
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

/// The CPU time of every rank over an idle window (the client sleeping with nothing
/// submitted), printed as `idle_cpu_s_rank<N>`: the scheduler's as it reports it
/// (`scheduler_info().cpu_seconds`, its process CPU clock), the client's own, and each
/// worker's read from outside by its process CPU clock (see [`CpuClock`]). Every clock counts
/// all threads of its process, user and system time. The window of each rank starts and
/// ends within a millisecond of the others'.
fn role_idle(client: &Client) -> anyhow::Result<()> {
    // The answer waits until every worker has joined.
    let workers: Vec<(u32, CpuClock)> = client
        .scheduler_info()?
        .workers
        .iter()
        .map(|w| Ok((w.rank.0, CpuClock::of_worker(w)?)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(workers.len() == NP - 2, "{} workers joined", workers.len());
    let read_workers = || -> anyhow::Result<Vec<f64>> {
        workers.iter().map(|(_, clock)| clock.seconds()).collect()
    };
    let scheduler_before = client.scheduler_info()?.cpu_seconds;
    let client_before = mpidask::internals::process::cpu_seconds();
    let workers_before = read_workers()?;
    std::thread::sleep(Duration::from_secs(idle_seconds()));
    let scheduler_after = client.scheduler_info()?.cpu_seconds;
    let client_after = mpidask::internals::process::cpu_seconds();
    let workers_after = read_workers()?;
    println!(
        "MEASURE idle_cpu_s_rank0={}",
        scheduler_after - scheduler_before
    );
    println!("MEASURE idle_cpu_s_rank1={}", client_after - client_before);
    for (((rank, _), before), after) in workers.iter().zip(workers_before).zip(workers_after) {
        println!("MEASURE idle_cpu_s_rank{rank}={}", after - before);
    }
    Ok(())
}

/// The CPU-time clock of a worker process of this job on this node (`clock_getcpuclockid`),
/// which another process may read: the time of all its threads (those that ended too), in
/// nanoseconds, as `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` gives it inside the process.
struct CpuClock(libc::clockid_t);

impl CpuClock {
    /// The clock of `worker`, after checking that its pid is, on this node, that rank of an
    /// `idle` job (a pid from another node would name an unrelated process).
    fn of_worker(worker: &WorkerInfo) -> anyhow::Result<Self> {
        let pid = worker.hello.pid;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let has = |entry: &str| environ.split(|b| *b == 0).any(|e| e == entry.as_bytes());
        anyhow::ensure!(
            support::rank_of_process(pid as i32) == Some(worker.rank.0)
                && has("MPIDASK_BENCH_ROLE=idle"),
            "worker rank {} reports pid {pid} (host {}), which is not that rank of this \
             benchmark here: the workers must run on the client's node",
            worker.rank.0,
            worker.hello.host
        );
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `clock` is a valid place for the result.
        let error = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
        anyhow::ensure!(
            error == 0,
            "no CPU clock for pid {pid}: {}",
            std::io::Error::from_raw_os_error(error)
        );
        Ok(CpuClock(clock))
    }

    /// CPU seconds the process has used so far.
    fn seconds(&self) -> anyhow::Result<f64> {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid place for the result.
        let failed = unsafe { libc::clock_gettime(self.0, &mut time) } != 0;
        anyhow::ensure!(
            !failed,
            "reading a worker's CPU clock: {}",
            std::io::Error::last_os_error()
        );
        Ok(time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9)
    }
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

fn play(role: &str) -> ! {
    match role {
        "tasks" => mpidask::run(role_tasks),
        "fib" => mpidask::run(role_fib),
        "checkpoint" => mpidask::run(role_checkpoint),
        "mpi_overhead" => mpidask::run(role_mpi_overhead),
        "chain" => mpidask::run(role_chain),
        "million" => mpidask::run(role_million),
        "empty" => mpidask::run(role_empty),
        "idle" => mpidask::run(role_idle),
        "hello" => role_hello(),
        "pingpong" => role_pingpong(),
        "transfer" => mpidask::run(|client| role_transfer(client, false)),
        "transfer_varying" => mpidask::run(|client| role_transfer(client, true)),
        "spill" => mpidask::run(role_spill),
        "raw_transfer" => role_raw_transfer(false, false),
        "raw_transfer_new_varying" => role_raw_transfer(true, true),
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

/// One launch moving the values of [`transfer_sizes`] from rank 2 to rank 3, timed by rank
/// 3's task stream; per launch the median over the moves of two rates, GB (of the value) per
/// second:
///
/// * `moved`: rank 3's `transfer` entry, from its request (`GetData`, sent when the task
///   reading the value was placed on it) until the last part of the message carrying the
///   value was received and the message's frame decoded: the request's trip, rank 2
///   serving it, the allocation of the receive buffer (or one from the pool) and the
///   transfer. The value's encoding (bincode: its length, then its bytes, received into a
///   buffer of its own) is stored as it came: it is not yet decoded into the task's
///   argument type.
/// * `decoded`: from the same request until the task reading the value (`blob_len`) ended:
///   also the wait for a task thread and the decode into a `Blob` (bincode, copying the
///   bytes into a new buffer), then its length, O(1).
fn transfer_rates(varying: bool) -> (f64, f64) {
    let json = traced(
        if varying {
            "transfer_varying"
        } else {
            "transfer"
        },
        &[],
    );
    let events = json["traceEvents"].as_array().expect("events");
    let on_rank_3 = |cat: &str, name: Option<&str>| {
        let mut found: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["cat"] == cat && e["pid"] == 3 && name.is_none_or(|n| e["name"] == n))
            .collect();
        found
            .sort_by(|a, b| f64::total_cmp(&a["ts"].as_f64().unwrap(), &b["ts"].as_f64().unwrap()));
        found
    };
    let receives = on_rank_3("transfer", Some("receive"));
    let tasks = on_rank_3("task", None);
    let sizes = transfer_sizes(varying);
    assert!(
        receives.len() == sizes.len() && tasks.len() == sizes.len(),
        "rank 3 traced {} receives and {} tasks for {} moves",
        receives.len(),
        tasks.len(),
        sizes.len()
    );
    let (mut moved, mut decoded) = (vec![], vec![]);
    for ((receive, task), &len) in receives.iter().zip(&tasks).zip(&sizes) {
        let time = |e: &serde_json::Value, field: &str| e[field].as_f64().expect("a time");
        let bytes = receive["args"]["bytes"].as_u64().expect("bytes") as usize;
        // The encoding of a `Blob`: its length, then its bytes.
        assert!(
            (len..=len + 16).contains(&bytes),
            "rank 3 received {bytes} bytes for a value of {len}"
        );
        let start = time(receive, "ts");
        let arrived = start + time(receive, "dur");
        assert!(
            time(task, "ts") >= arrived,
            "the task reading the value of {len} bytes started before it arrived"
        );
        let gb = len as f64 / 1e9;
        moved.push(gb / ((arrived - start) * 1e-6));
        decoded.push(gb / ((time(task, "ts") + time(task, "dur") - start) * 1e-6));
    }
    (median(&moved), median(&decoded))
}

/// Raw rsmpi's GB/s per move in one launch of `role`: the median over the moves after the
/// first (a warm-up), which must be those of [`transfer_sizes`]`(varying)`.
fn raw_transfer_rate(role: &str, varying: bool) -> f64 {
    let run = launch(role).0;
    let seconds = run.measures("raw_transfer_s");
    let bytes = run.measures("raw_transfer_bytes");
    let sizes: Vec<f64> = transfer_sizes(varying)
        .into_iter()
        .map(|b| b as f64)
        .collect();
    assert!(
        seconds.len() == sizes.len() + 1 && bytes.len() == seconds.len() && bytes[1..] == sizes[..],
        "{role} moved {bytes:?}, expected a warm-up then {sizes:?}"
    );
    let rates: Vec<f64> = bytes[1..]
        .iter()
        .zip(&seconds[1..])
        .map(|(b, s)| b / 1e9 / s)
        .collect();
    median(&rates)
}

/// One launch of a peer's `script` (from `../shared/peers`) under the same `mpirun -np 4`
/// as ours.
fn launch_peer(python: &Path, script: &str, args: &[String]) -> Run {
    let peers = shared_peers();
    let path = peers.join(script);
    assert!(
        path.is_file(),
        "{} is missing: the peers' scripts come from the shared folder next to the project",
        path.display()
    );
    let mut command = mpirun(NP, python, &[]);
    command.arg(&path).args(args).current_dir(&peers);
    let run = run_with_deadline(command, DEADLINE);
    run.expect_code(0);
    run
}

/// The fields of a peer's `RESULT` line for `bench` with `variant` (or none).
fn peer_result(run: &Run, bench: &str, variant: Option<&str>) -> HashMap<String, String> {
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        })
        .find(|fields| {
            fields.get("bench").map(String::as_str) == Some(bench)
                && fields.get("variant").map(String::as_str) == variant
        })
        .unwrap_or_else(|| {
            panic!(
                "{} printed no RESULT line for {bench} {variant:?}\n{}",
                run.command,
                run.dump()
            )
        })
}

/// The number `name` of a peer's result, after checking that `expected` fields hold.
fn peer_number(fields: &HashMap<String, String>, name: &str, expected: &[(&str, String)]) -> f64 {
    for (key, value) in expected {
        assert_eq!(
            fields.get(*key),
            Some(value),
            "the peer's result {fields:?} has the wrong {key}"
        );
    }
    fields
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the peer's result {fields:?} has no number {name}"))
}

/// What one peer launch measured.
struct PeerRound {
    /// The map's tasks per second (chunk size 1 for mpi4py.futures).
    tasks_per_s: f64,
    /// The dependent chain, microseconds per task.
    chain_us: f64,
    /// mpi4py.futures' map with chunk size [`MPI4PY_CHUNKSIZE`], tasks per second.
    chunked_tasks_per_s: Option<f64>,
}

/// One launch of dask-mpi's `tasks_daskmpi.py` ([`tasks`] tasks, a chain of
/// [`PEER_CHAIN`], once each).
fn daskmpi_round(python: &Path) -> PeerRound {
    let args = [tasks().to_string(), PEER_CHAIN.to_string(), "1".into()];
    let run = launch_peer(python, "tasks_daskmpi.py", &args);
    let workers = ("workers", (NP - 2).to_string());
    let map = peer_result(&run, "tasks_map", None);
    let chain = peer_result(&run, "chain_submit", None);
    PeerRound {
        tasks_per_s: peer_number(
            &map,
            "tasks_per_s",
            &[workers.clone(), ("tasks", args[0].clone())],
        ),
        chain_us: 1e3 * peer_number(&chain, "latency_ms", &[workers, ("tasks", args[1].clone())]),
        chunked_tasks_per_s: None,
    }
}

/// One launch of mpi4py.futures' `tasks_mpi4py.py` (as many tasks as ours, a chain of
/// [`PEER_CHAIN`], once each).
fn mpi4py_round(python: &Path) -> PeerRound {
    let args = [
        tasks().to_string(),
        PEER_CHAIN.to_string(),
        "1".into(),
        MPI4PY_CHUNKSIZE.to_string(),
    ];
    let run = launch_peer(python, "tasks_mpi4py.py", &args);
    let tasks = ("tasks", args[0].clone());
    // Rank 0 is the master, every other rank a worker.
    let workers = ("workers", (NP - 1).to_string());
    let variant = format!("chunksize{MPI4PY_CHUNKSIZE}");
    PeerRound {
        tasks_per_s: peer_number(
            &peer_result(&run, "tasks_map", None),
            "tasks_per_s",
            &[tasks.clone(), ("chunksize", "1".into()), workers.clone()],
        ),
        chain_us: peer_number(
            &peer_result(&run, "chain_submit", None),
            "latency_us",
            &[("tasks", args[1].clone()), workers],
        ),
        chunked_tasks_per_s: Some(peer_number(
            &peer_result(&run, "tasks_map", Some(&variant)),
            "tasks_per_s",
            &[tasks, ("chunksize", args[3].clone())],
        )),
    }
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
    let wanted = common::wanted_by_args();
    let wanted_any = |names: &[&str]| names.iter().any(|name| wanted(name));

    // The peers' figures; their runs are resolved first, so a missing peer fails at once.
    let peer_figures = [
        "tasks_per_s_daskmpi",
        "tasks_per_s_vs_daskmpi",
        "tasks_per_s_mpi4py_futures",
        "tasks_per_s_vs_mpi4py_futures",
        "tasks_per_s_mpi4py_futures_chunksize1000",
        "chain_us_daskmpi",
        "chain_us_vs_daskmpi",
        "chain_us_mpi4py_futures",
        "chain_us_vs_mpi4py_futures",
    ];
    let peers = (wanted_any(&peer_figures) && !smoke() && !one_run_for_compare()).then(|| {
        let dask: PathBuf = peer_python("dask_mpi");
        let futures: PathBuf = peer_python("mpi4py.futures");
        (dask, futures)
    });
    if wanted_any(&["tasks_per_s", "chain_us", "pingpong_us"]) || peers.is_some() {
        // Each round: the ping-pong baseline, the task rate, the chain, then each peer.
        let (mut pingpong, mut rates, mut chains) = (vec![], vec![], vec![]);
        let (mut dask, mut futures) = (vec![], vec![]);
        for _ in 0..rounds() {
            pingpong.push(pingpong_us());
            rates.push(median(&launch("tasks").0.measures("tasks_per_s")));
            chains.push(median(&launch("chain").0.measures("chain_us")));
            if let Some((dask_python, futures_python)) = &peers {
                dask.push(daskmpi_round(dask_python));
                futures.push(mpi4py_round(futures_python));
            }
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
        if peers.is_some() {
            for (label, runs) in [("daskmpi", &dask), ("mpi4py_futures", &futures)] {
                let peer_rates: Vec<f64> = runs.iter().map(|r| r.tasks_per_s).collect();
                let peer_chains: Vec<f64> = runs.iter().map(|r| r.chain_us).collect();
                let rate_name = format!("tasks_per_s_{label}");
                figure(&rate_name, "tasks/s", &peer_rates, None);
                ratio(
                    &format!("tasks_per_s_vs_{label}"),
                    &rates,
                    &peer_rates,
                    false,
                    &rate_name,
                );
                let chain_name = format!("chain_us_{label}");
                figure(&chain_name, "us", &peer_chains, None);
                ratio(
                    &format!("chain_us_vs_{label}"),
                    &chains,
                    &peer_chains,
                    true,
                    &chain_name,
                );
            }
            let chunked: Vec<f64> = futures
                .iter()
                .map(|r| r.chunked_tasks_per_s.expect("mpi4py's chunked map"))
                .collect();
            figure(
                &format!("tasks_per_s_mpi4py_futures_chunksize{MPI4PY_CHUNKSIZE}"),
                "tasks/s",
                &chunked,
                None,
            );
        }
    }
    if wanted("fib_tasks_per_s") {
        let (mut fib, mut flat) = (vec![], vec![]);
        for _ in 0..rounds() {
            let run = launch("fib").0;
            fib.push(median(&run.measures("fib_tasks_per_s")));
            flat.push(median(&run.measures("fib_flat_tasks_per_s")));
        }
        figure("fib_tasks_per_s", "tasks/s", &fib, None);
        figure("fib_flat_tasks_per_s", "tasks/s", &flat, None);
        ratio(
            "fib_tasks_per_s_vs_flat",
            &fib,
            &flat,
            false,
            "fib_flat_tasks_per_s",
        );
    }
    if wanted("checkpoint_overhead") || wanted("checkpoint_resume_s") {
        let (mut plain, mut kept, mut resumed) = (vec![], vec![], vec![]);
        let scratch = tempfile::tempdir().expect("a scratch directory");
        for round in 0..rounds() {
            plain.push(launch("checkpoint").0.measure("checkpoint_job_s"));
            let dir = scratch.path().join(format!("round{round}"));
            let with_dir = |dir: &Path| {
                let exe = std::env::current_exe().expect("current exe");
                let mut command: Command = mpirun(NP, &exe, &[]);
                command
                    .env("MPIDASK_BENCH_ROLE", "checkpoint")
                    .env("MPIDASK_CHECKPOINT", dir);
                let run = run_with_deadline(command, DEADLINE);
                run.expect_code(0);
                run
            };
            kept.push(with_dir(&dir).measure("checkpoint_job_s"));
            let run = with_dir(&dir);
            // The series and their sums: every one loaded.
            let loaded = format!(
                "{n} of them loaded from the checkpoint, 0 computed",
                n = 2 * CHECKPOINT_TASKS
            );
            assert!(
                run.stderr.contains(&loaded),
                "the second start loads every result:\n{}",
                run.dump()
            );
            resumed.push(run.measure("checkpoint_job_s"));
        }
        figure("checkpoint_job_s", "s", &kept, None);
        figure("checkpoint_plain_job_s", "s", &plain, None);
        // With over without: the slowdown the checkpoint costs (the target is <= 1.2x).
        ratio(
            "checkpoint_overhead",
            &kept,
            &plain,
            false,
            "checkpoint_plain_job_s",
        );
        figure(
            "checkpoint_resume_s",
            "s",
            &resumed,
            Some("checkpoint_plain_job_s"),
        );
    }
    if wanted("mpi_task_overhead_us") {
        let (mut mpi, mut plain) = (vec![], vec![]);
        for _ in 0..rounds() {
            let run = launch("mpi_overhead").0;
            mpi.push(median(&run.measures("mpi_task_overhead_us")));
            plain.push(median(&run.measures("plain_task_us")));
        }
        figure("mpi_task_overhead_us", "us", &mpi, None);
        figure("plain_task_us", "us", &plain, None);
        let over: Vec<f64> = mpi.iter().zip(&plain).map(|(m, p)| m / p).collect();
        figure("mpi_task_us_over_plain", "x", &over, Some("plain_task_us"));
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
    if wanted_any(&[
        "transfer_gb_per_s",
        "transfer_with_decode_gb_per_s",
        "transfer_raw_mpi_gb_per_s",
        "transfer_vs_raw_mpi",
        "transfer_varying_gb_per_s",
        "transfer_varying_with_decode_gb_per_s",
        "transfer_varying_raw_mpi_new_buffer_gb_per_s",
        "transfer_varying_vs_raw_mpi_new_buffer",
    ]) {
        // Each round: raw rsmpi into a reused buffer, ours with one size (whose buffers the
        // receiver's pool reuses), raw rsmpi into a new buffer each time and ours, both with
        // sizes that never repeat.
        let (mut reused, mut ours, mut ours_decoded) = (vec![], vec![], vec![]);
        let (mut fresh, mut varying, mut varying_decoded) = (vec![], vec![], vec![]);
        for _ in 0..rounds() {
            reused.push(raw_transfer_rate("raw_transfer", false));
            let (moved, decoded) = transfer_rates(false);
            ours.push(moved);
            ours_decoded.push(decoded);
            fresh.push(raw_transfer_rate("raw_transfer_new_varying", true));
            let (moved, decoded) = transfer_rates(true);
            varying.push(moved);
            varying_decoded.push(decoded);
        }
        figure("transfer_gb_per_s", "GB/s", &ours, None);
        figure("transfer_with_decode_gb_per_s", "GB/s", &ours_decoded, None);
        figure("transfer_raw_mpi_gb_per_s", "GB/s", &reused, None);
        ratio(
            "transfer_vs_raw_mpi",
            &ours,
            &reused,
            false,
            "transfer_raw_mpi_gb_per_s",
        );
        figure("transfer_varying_gb_per_s", "GB/s", &varying, None);
        figure(
            "transfer_varying_with_decode_gb_per_s",
            "GB/s",
            &varying_decoded,
            None,
        );
        figure(
            "transfer_varying_raw_mpi_new_buffer_gb_per_s",
            "GB/s",
            &fresh,
            None,
        );
        ratio(
            "transfer_varying_vs_raw_mpi_new_buffer",
            &varying,
            &fresh,
            false,
            "transfer_varying_raw_mpi_new_buffer_gb_per_s",
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
    if wanted_any(&[
        "idle_cpu_s_rank0",
        "idle_cpu_s_rank1",
        "idle_cpu_s_rank2",
        "idle_cpu_s_rank3",
        "idle_cpu_s_all_ranks",
        "idle_cpu_client_s",
    ]) {
        let runs = sample(|| launch("idle").0);
        let of_rank = |rank: usize| -> Vec<f64> {
            let name = format!("idle_cpu_s_rank{rank}");
            runs.iter()
                .map(|r| match r.measures(&name)[..] {
                    [seconds] => seconds,
                    _ => panic!("one {name} per launch\n{}", r.dump()),
                })
                .collect()
        };
        let per_rank: Vec<Vec<f64>> = (0..NP).map(of_rank).collect();
        for (rank, seconds) in per_rank.iter().enumerate() {
            figure(&format!("idle_cpu_s_rank{rank}"), "s", seconds, None);
        }
        let all: Vec<f64> = (0..runs.len())
            .map(|i| per_rank.iter().map(|s| s[i]).sum())
            .collect();
        figure("idle_cpu_s_all_ranks", "s", &all, None);
        // The earlier names of the scheduler's and the client's figures (the same samples
        // as rank 0's and rank 1's), for comparisons with older runs.
        figure("idle_cpu_s", "s", &per_rank[0], None);
        figure("idle_cpu_client_s", "s", &per_rank[1], None);
    }
}
