//! The scheduler state machine alone, in process: simulated workers, no MPI. Prints
//! `BENCH name=<id> value=<median> unit=<unit> median= min= max= n=` lines (see
//! `benches/common`). No baseline: these figures track the scheduler's own cost.
//!
//! ```text
//! cargo bench --bench scheduler
//! cargo bench --bench scheduler -- 4096     # only the runs whose name contains 4096
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{figure, rounds, size};
use mpidask::internals::process::rss_bytes;
use mpidask::internals::protocol::{
    ArgSlot, FnId, Key, Rank, TaskOptions, TaskRun, TaskSpec, ToScheduler, ToWorker, WorkerHello,
};
use mpidask::internals::scheduler::{Output, Scheduler, SchedulerConfig};
use std::time::{Duration, Instant};

fn hello(nthreads: u32) -> ToScheduler {
    ToScheduler::WorkerHello(WorkerHello {
        nthreads,
        resources: vec![],
        host: "sim".into(),
        pid: 1,
        memory_limit: None,
        memory_limit_source: String::new(),
        mpi_group: false,
    })
}

/// The job key of the simulated job.
const JOB_KEY: u64 = 42;

/// The simulated tasks' function (never called: the workers are simulated).
fn task_function(
    _: &mpidask::internals::task::TaskInput<'_>,
) -> Result<mpidask::internals::protocol::Bytes, mpidask::internals::task::CallError> {
    Ok(Vec::new().into())
}

/// Registers the tasks' function with `scheduler` as the client does, as `FnId(0)`.
fn register(scheduler: &mut Scheduler, now: Instant) {
    let mut registry = mpidask::internals::task::Registry::new(JOB_KEY);
    let trampoline: mpidask::internals::task::Trampoline = task_function;
    let (_, registration) = registry.id_of(trampoline, || "f".into());
    let registration = registration.expect("a new function");
    scheduler.handle(
        Rank::CLIENT,
        ToScheduler::RegisterFunction(registration),
        now,
    );
}

fn spec(key: u64) -> TaskSpec {
    TaskSpec {
        key: Key(key),
        func: FnId(0),
        uses: vec![],
        args: vec![ArgSlot::Value(vec![1, 2, 3, 4, 5, 6, 7, 8])],
        options: TaskOptions::default(),
        checkpoint: None,
    }
}

/// Submits `tasks` independent tasks in batches of 4096, lets every simulated worker finish
/// what it was given, releases the results, until all are done. Returns (seconds, placements).
fn run(workers: u32, nthreads: u32, tasks: u64) -> (f64, u64) {
    let now = Instant::now();
    let ranks: Vec<Rank> = (2..2 + workers).map(Rank).collect();
    let mut scheduler = Scheduler::new(
        SchedulerConfig {
            workers: ranks.clone(),
            worker_timeout: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(10),
            stall_warning: Duration::from_secs(60),
            job_key: JOB_KEY,
            work_stealing: true,
        },
        now,
    );
    register(&mut scheduler, now);
    for rank in &ranks {
        scheduler.handle(*rank, hello(nthreads), now);
    }
    let mut out = Vec::new();
    scheduler.drain_outbox(&mut out);
    out.clear();
    let started = Instant::now();
    let mut submitted = 0;
    let mut finished = 0;
    let mut placements = 0;
    while finished < tasks {
        if submitted < tasks {
            let batch: Vec<TaskSpec> = (submitted..(submitted + 4096).min(tasks))
                .map(spec)
                .collect();
            submitted += batch.len() as u64;
            scheduler.handle(Rank::CLIENT, ToScheduler::Submit(batch), now);
        }
        scheduler.drain_outbox(&mut out);
        let mut done = Vec::new();
        for output in out.drain(..) {
            match output {
                Output::Worker(rank, ToWorker::Compute(c)) => {
                    placements += 1;
                    done.push((rank, c.key, c.attempt));
                }
                Output::Client(_) | Output::Worker(..) | Output::Info(_) => {}
                Output::Abort { message, .. } => panic!("{message}"),
            }
        }
        let mut released = Vec::with_capacity(done.len());
        for (rank, key, attempt) in done {
            scheduler.handle(
                rank,
                ToScheduler::TaskFinished {
                    key,
                    attempt,
                    nbytes: 8,
                    // As a worker reports a run: the task stream records it.
                    run: Some(TaskRun {
                        start_us: 0,
                        duration_us: 1,
                        thread: 0,
                    }),
                },
                now,
            );
            released.push(key);
            finished += 1;
        }
        scheduler.handle(Rank::CLIENT, ToScheduler::ReleaseKeys(released), now);
    }
    scheduler.drain_outbox(&mut out);
    assert_eq!(
        scheduler.task_count(),
        0,
        "every task finished and was released"
    );
    (started.elapsed().as_secs_f64(), placements)
}

/// Memory the scheduler holds per submitted task: `tasks` tasks submitted while no worker
/// has joined, so every one is kept (waiting to be placed).
fn bytes_per_task(tasks: u64) -> f64 {
    let now = Instant::now();
    let mut scheduler = Scheduler::new(
        SchedulerConfig {
            workers: vec![Rank(2)],
            worker_timeout: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(10),
            stall_warning: Duration::from_secs(60),
            job_key: JOB_KEY,
            work_stealing: true,
        },
        now,
    );
    register(&mut scheduler, now);
    let before = rss_bytes();
    let mut submitted = 0;
    while submitted < tasks {
        let batch: Vec<TaskSpec> = (submitted..(submitted + 4096).min(tasks))
            .map(spec)
            .collect();
        submitted += batch.len() as u64;
        scheduler.handle(Rank::CLIENT, ToScheduler::Submit(batch), now);
    }
    assert_eq!(scheduler.task_count() as u64, tasks);
    (rss_bytes().saturating_sub(before)) as f64 / tasks as f64
}

fn main() {
    let wanted = common::wanted_by_args();
    let tasks = size(1_000_000u64, 10_000);
    if wanted("scheduler_bytes_per_task") {
        let bytes: Vec<f64> = (0..rounds()).map(|_| bytes_per_task(tasks)).collect();
        figure("scheduler_bytes_per_task", "bytes", &bytes, None);
    }
    for (workers, nthreads) in [(2u32, 2u32), (4096, 1)] {
        let name = format!("scheduler_assignments_per_s_{workers}w");
        if !wanted(&name) {
            continue;
        }
        let rates: Vec<f64> = (0..rounds())
            .map(|_| {
                let (seconds, placements) = run(workers, nthreads, tasks);
                placements as f64 / seconds
            })
            .collect();
        figure(&name, "assignments/s", &rates, None);
    }
}
