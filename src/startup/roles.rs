//! The three roles a rank can take, over any transport: the scheduler (rank 0), the client
//! running the user's program (rank 1), and a worker (ranks 2 and up).

use super::panics;
use crate::client::{Client, ClientNode, Command, Shared};
use crate::config::RuntimeArgs;
use crate::exit::ExitCode;
use crate::logging;
use crate::node::{self, DriveSettings, HEARTBEAT, abort_job, drive};
use crate::protocol::{Rank, WorkerHello};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerNode};
use crate::trace::{ReportSettings, TraceCollector};
use crate::transport::{Collectives, Transport};
use crate::worker::executor::Executor;
use crate::worker::store::{DiskReport, SpillPolicy};
use crate::worker::{WorkerEvent, WorkerNode};
use log::{error, info};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The loop settings of a client or worker rank (the scheduler watches no scheduler). The
/// workers give a silent scheduler one second more than the client, so that the client
/// alone reports it.
fn settings(args: &RuntimeArgs, rank: Rank, stop_signal: &Arc<AtomicUsize>) -> DriveSettings {
    let grace = if rank == Rank::CLIENT {
        Duration::ZERO
    } else {
        HEARTBEAT
    };
    DriveSettings {
        poll_max: args.poll_max(),
        shutdown_timeout: args.shutdown_timeout(),
        scheduler_timeout: Some(args.worker_timeout() + grace),
        stop_signal: stop_signal.clone(),
    }
}

/// Rank 0: the scheduler state machine behind the communication loop.
pub(super) fn scheduler_main(
    transport: &mut dyn Transport,
    args: &RuntimeArgs,
    stop_signal: &Arc<AtomicUsize>,
    job_key: u64,
    workers: Vec<Rank>,
) -> i32 {
    logging::set_thread_role(0, "scheduler");
    let mut others = workers.clone();
    others.push(Rank::CLIENT);
    let config = SchedulerConfig {
        workers,
        worker_timeout: args.worker_timeout(),
        shutdown_timeout: args.shutdown_timeout(),
        stall_warning: args.stall_warning(),
        work_stealing: !args.no_work_stealing,
        job_key,
    };
    let trace = args.tracing().then(|| {
        TraceCollector::new(
            args.trace.clone(),
            args.report.clone(),
            ReportSettings {
                interval: args.report_interval(),
                memory_spill: args.memory_spill,
                memory_pause: args.memory_pause,
            },
        )
    });
    let mut node = SchedulerNode::new(Scheduler::new(config, Instant::now()), others, trace);
    if super::signals::handlers_installed() {
        crate::scheduler::last_words::watch(node.last_words(), &super::signals::STOP_SIGNALS);
    }
    let code = drive(
        &mut node,
        transport,
        None,
        &crossbeam_channel::never(),
        DriveSettings {
            scheduler_timeout: None,
            ..settings(args, Rank::SCHEDULER, stop_signal)
        },
    );
    node.finish(code);
    info!("job ends with exit code {code}");
    code
}

/// Where a worker runs and who its peers are.
pub(super) struct WorkerPlace {
    /// The node's name.
    pub host: String,
    /// Workers that share this worker's cores (in this process in local mode, on this
    /// node's cores under MPI).
    pub sharing: usize,
    /// Ranks sharing the node's memory.
    pub ranks_on_node: usize,
    /// Every worker of the job.
    pub workers: Vec<Rank>,
    /// The workers of this worker's collectives (empty if it takes part in none).
    pub group: Vec<Rank>,
}

/// A worker rank, placed as `place` says.
pub(super) fn worker_main(
    transport: &mut dyn Transport,
    collectives: Option<&mut dyn Collectives>,
    args: &RuntimeArgs,
    stop_signal: &Arc<AtomicUsize>,
    job_key: u64,
    place: WorkerPlace,
) -> i32 {
    let WorkerPlace {
        host,
        sharing,
        ranks_on_node,
        workers,
        group,
    } = place;
    let rank = transport.rank();
    logging::set_thread_role(rank.0, "worker");
    let nthreads = args.worker_threads(sharing);
    let (events, received) = node::event_channel();
    let disk_events = events.clone();
    let disk_report: DiskReport = Arc::new(move |done| disk_events.send(WorkerEvent::Disk(done)));
    let client_events = events.clone();
    let secede_events = events.clone();
    let mpi_events = events.clone();
    let task_client = crate::client::host_task_client(
        rank,
        move || client_events.send(WorkerEvent::Client),
        workers.clone(),
        job_key,
    );
    let task_shared = task_client.as_ref().map(|(shared, _)| shared.clone());
    let executor = Executor::new(
        rank,
        nthreads,
        args.resources.0.clone(),
        move |outcome| events.send(WorkerEvent::Task(outcome)),
        move || {
            logging::set_thread_role(rank.0, "worker");
            if let Some(shared) = &task_shared {
                crate::client::enter_task_thread(shared);
            }
        },
    );
    let executor = match executor {
        Ok(executor) => executor
            .with_checkpoint_dir(args.checkpoint.clone())
            .with_secede_report(move |key, attempt, waiting| {
                secede_events.send(WorkerEvent::Seceded {
                    key,
                    attempt,
                    waiting,
                })
            }),
        Err(e) => {
            error!("cannot start {nthreads} worker threads: {e}");
            abort_job(transport, ExitCode::Startup.code());
        }
    };
    let (memory_limit, memory_limit_source) = crate::memory::worker_limit(
        args.memory_limit,
        ranks_on_node,
        &crate::memory::node_memory(),
    );
    let hello = WorkerHello {
        nthreads: u32::try_from(nthreads).unwrap_or(u32::MAX),
        resources: args.resources.0.clone(),
        host,
        pid: std::process::id(),
        memory_limit,
        memory_limit_source,
        mpi_group: collectives
            .as_ref()
            .is_some_and(|c| c.lends_communicators())
            && group.contains(&rank),
    };
    let spill = SpillPolicy {
        threshold: memory_limit.map(|limit| (limit as f64 * args.memory_spill) as u64),
        local_directory: args.local_directory(),
        rank: rank.0,
    };
    let pause = memory_limit.map(|limit| (limit as f64 * args.memory_pause) as u64);
    let runs_mpi_tasks = hello.mpi_group;
    let mut node = WorkerNode::new(rank, hello, executor, job_key)
        .with_memory_policy(spill, pause, Some(disk_report))
        .with_workers(workers, group);
    if runs_mpi_tasks {
        node = node.with_mpi_report(move |outcome| mpi_events.send(WorkerEvent::Task(outcome)));
    }
    if let Some((_, client_node)) = task_client {
        node = node.with_task_client(client_node);
    }
    if args.tracing() {
        node = node.with_trace();
    }
    drive(
        &mut node,
        transport,
        collectives,
        &received,
        settings(args, rank, stop_signal),
    )
}

/// Rank 1: runs `program` on its own thread while this thread runs the communication loop.
/// `exit_code` turns the program's result into the job's exit code (it runs on the program
/// thread, before the shutdown starts, and learns whether the job was already stopping).
/// Returns the code and what `exit_code` made of the result.
pub(super) fn client_main<R, T, F>(
    transport: &mut dyn Transport,
    args: &RuntimeArgs,
    stop_signal: &Arc<AtomicUsize>,
    job_key: u64,
    workers: Vec<Rank>,
    program: F,
    exit_code: impl FnOnce(std::thread::Result<R>, bool) -> (i32, T) + Send,
) -> (i32, T)
where
    F: FnOnce(&Client) -> R + Send,
    T: Send,
{
    logging::set_thread_role(1, "client");
    let (commands, events) = node::event_channel();
    let shared = Shared::new(
        commands.clone(),
        workers,
        args.progress_interval(),
        job_key,
        args.checkpoint.is_some(),
    );
    let mut node = ClientNode::new(shared.clone(), args.shutdown_timeout());
    if args.tracing() {
        node = node.with_trace();
    }
    let program_returned = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let program_returned = &program_returned;
        let program_thread = std::thread::Builder::new()
            .name("client".into())
            .spawn_scoped(scope, move || {
                logging::set_thread_role(1, "client");
                panics::mark_client_program_thread();
                let client = Client::new(shared.clone());
                let result = catch_unwind(AssertUnwindSafe(|| program(&client)));
                drop(client);
                let (code, value) = exit_code(result, shared.stopped());
                if code == 0 {
                    // Tasks given to `fire_and_forget` run to the end.
                    shared.wait_forgotten();
                }
                program_returned.store(true, Ordering::SeqCst);
                commands.send(Command::Done(code));
                value
            });
        let program_thread = match program_thread {
            Ok(handle) => handle,
            Err(e) => {
                error!("cannot start the client program thread: {e}");
                abort_job(transport, ExitCode::Startup.code());
            }
        };
        let code = drive(
            &mut node,
            transport,
            None,
            &events,
            settings(args, Rank::CLIENT, stop_signal),
        );
        if !program_returned.load(Ordering::SeqCst) {
            // The job was stopped (a signal) while the program still runs: end the process
            // now rather than wait for code that may never return.
            log::debug!("the client program is still running; exiting");
            exit_now(code);
        }
        let value = program_thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (code, value)
    })
}

/// Finalises MPI if it is initialised and exits the process with `code`, without waiting
/// for other threads.
fn exit_now(code: i32) -> ! {
    crate::exit::run_exit_hooks();
    crate::transport::mpi::bootstrap::finalize_now();
    std::process::exit(code)
}
