//! Start-up and shutdown of a job: MPI initialisation and checks, the role of each rank,
//! local mode, and the exit code every rank ends with.

pub mod driver;
pub mod launch;

use crate::client::{Client, ClientNode, Command, Shared};
use crate::config::RuntimeArgs;
use crate::error::{Error, TaskError};
use crate::exit::ExitCode;
use crate::logging;
use crate::protocol::{PROTOCOL_VERSION, Rank, ToClient, ToScheduler, ToWorker, WorkerHello};
use crate::scheduler::{Output, Scheduler, SchedulerConfig};
use crate::trace::TraceCollector;
use crate::transport::local::LocalTransport;
use crate::transport::mpi::MpiTransport;
use crate::transport::{Outbox, Transport};
use crate::worker::WorkerNode;
use crate::worker::executor::{self, Executor};
use crate::worker::store::SpillPolicy;
use driver::{DriveSettings, Node, NodeStatus, drive};
use log::{debug, error, info};
use mpi::Threading;
use mpi::traits::*;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// How MPI was set up for this process, for diagnostics ([`mpi_setup`]).
#[derive(Debug, Clone)]
pub struct MpiSetup {
    /// `MPI_Get_library_version`.
    pub library_version: String,
    /// The thread level MPI provides (mpidask asks for `Funneled`).
    pub thread_level: String,
    /// Ranks in `MPI_COMM_WORLD`.
    pub world_size: usize,
}

static MPI_SETUP: std::sync::OnceLock<MpiSetup> = std::sync::OnceLock::new();

/// How MPI was set up, once [`run`] initialised it (`None` in [`run_local`]).
pub fn mpi_setup() -> Option<&'static MpiSetup> {
    MPI_SETUP.get()
}

static RANKS_PER_NODE: std::sync::OnceLock<Vec<(String, usize)>> = std::sync::OnceLock::new();

/// The job's nodes (MPI processor names) and how many ranks run on each, once [`run`]
/// started a job of 3 or more ranks.
pub fn ranks_per_node() -> Option<&'static [(String, usize)]> {
    RANKS_PER_NODE.get().map(Vec::as_slice)
}

/// Counts the ranks on each node with one `MPI_Allgather` of the processor names.
fn gather_ranks_per_node(world: &mpi::topology::SimpleCommunicator) -> Vec<(String, usize)> {
    const NAME_BYTES: usize = 256;
    let host = mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into());
    let mut mine = [0u8; NAME_BYTES];
    let len = host.len().min(NAME_BYTES);
    mine[..len].copy_from_slice(&host.as_bytes()[..len]);
    let mut all = vec![0u8; NAME_BYTES * world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for name in all.chunks(NAME_BYTES) {
        let end = name.iter().position(|b| *b == 0).unwrap_or(NAME_BYTES);
        *counts
            .entry(String::from_utf8_lossy(&name[..end]).into_owned())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// A fingerprint of the cores this process may run on (its affinity mask).
fn core_set_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    // SAFETY: `cpu_set_t` is plain bytes (all zero is valid) and `sched_getaffinity` writes
    // at most `size_of::<cpu_set_t>()` bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        set
    };
    // SAFETY: reading the initialised bytes of a plain-data struct.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&set as *const libc::cpu_set_t).cast::<u8>(),
            std::mem::size_of::<libc::cpu_set_t>(),
        )
    };
    let mut hasher = rustc_hash::FxHasher::default();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// How many worker ranks of this node may run on exactly the cores this one may (one
/// `MPI_Allgather` on the node's communicator; every rank takes part). Unbound ranks all
/// share the whole node, so their default thread counts divide its cores between them.
fn workers_sharing_my_cores(node: &mpi::topology::SimpleCommunicator, worker: bool) -> usize {
    let mine = [core_set_fingerprint(), u64::from(worker)];
    let mut all = vec![0u64; 2 * node.size() as usize];
    node.all_gather_into(&mine[..], &mut all[..]);
    all.chunks(2)
        .filter(|other| other[1] == 1 && other[0] == mine[0])
        .count()
        .max(1)
}

/// What the user's program returns: `()` or `Result<(), E>`. Decides the job's exit code.
pub trait ClientOutcome {
    /// The exit code and, for a failure, the message to log. `task_failures` are the
    /// messages of the task errors the client handed to the program: an error that is (or
    /// wraps) one of them is an unhandled task failure.
    fn exit_status(self, task_failures: &[String]) -> (ExitCode, Option<String>);
}

impl ClientOutcome for () {
    fn exit_status(self, _task_failures: &[String]) -> (ExitCode, Option<String>) {
        (ExitCode::Success, None)
    }
}

impl<E> ClientOutcome for Result<(), E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn exit_status(self, task_failures: &[String]) -> (ExitCode, Option<String>) {
        let Err(error) = self else {
            return (ExitCode::Success, None);
        };
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        let mut task_failure = false;
        let mut shutting_down = false;
        let mut parts = Vec::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = current {
            let text = e.to_string();
            // By type where the error is visible as itself; by message where a wrapper
            // (such as anyhow's) hides the type.
            task_failure |= e.downcast_ref::<TaskError>().is_some()
                || matches!(e.downcast_ref::<Error>(), Some(Error::Task(_)))
                || task_failures.contains(&text);
            shutting_down |= matches!(e.downcast_ref::<Error>(), Some(Error::ShuttingDown))
                || text == Error::ShuttingDown.to_string();
            if parts.last() != Some(&text) {
                parts.push(text);
            }
            current = e.source();
        }
        let chain = parts.join(": ");
        if shutting_down {
            // The job is being stopped (a signal); the scheduler has said why, and this
            // error is only its echo in the program.
            log::debug!("the client program ended while the job stopped: {chain}");
            return (ExitCode::Signal, None);
        }
        if task_failure {
            (
                ExitCode::TaskFailed,
                Some(format!(
                    "the client program returned a task failure: {chain}"
                )),
            )
        } else {
            (
                ExitCode::ClientError,
                Some(format!("the client program returned an error: {chain}")),
            )
        }
    }
}

/// Runs a job: call it first thing in `main`. Reads the runtime settings from `MPIDASK_*`
/// environment variables; use [`run_with`] to take them from the command line.
///
/// Under `mpirun`/`srun`, rank 0 becomes the scheduler, rank 1 runs `program` and ranks 2
/// and up run tasks. Started without a launcher (a world of one rank) the same program runs
/// in local mode, with the scheduler and workers as threads. Never returns: every rank exits
/// with the same code (see [`ExitCode`]).
pub fn run<F, R>(program: F) -> !
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    logging::init();
    let args = launch::runtime_args_from_env();
    run_with(args, program)
}

/// [`run`] with explicit settings, e.g. flattened into the program's own `clap` parser.
pub fn run_with<F, R>(args: RuntimeArgs, program: F) -> !
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    logging::init();
    install_panic_hook();
    install_signal_handlers();
    let code = start(&args, program);
    crate::private_dir::remove_all();
    std::process::exit(code)
}

/// SIGTERM, SIGINT and SIGUSR1 set [`driver::PENDING_SIGNAL`]; the communication loop
/// turns it into an orderly stop of the whole job (exit code 9).
fn install_signal_handlers() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let result = unsafe {
            signal_hook::low_level::register(signal, move || {
                driver::PENDING_SIGNAL.store(signal as usize, std::sync::atomic::Ordering::Relaxed);
            })
        };
        if let Err(e) = result {
            log::warn!("cannot handle signal {signal}: {e}; it will end this rank abruptly");
        }
    }
}

/// Runs `program` against a scheduler and workers on threads of this process and returns
/// its value (for tests, examples and notebooks-style use; no MPI involved).
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let total: u64 = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let squares = client.map(square, 1..=4u64);
///     client.gather(&squares).unwrap().into_iter().sum()
/// });
/// assert_eq!(total, 30);
/// ```
pub fn run_local<T: Send>(args: RuntimeArgs, program: impl FnOnce(&Client) -> T + Send) -> T {
    logging::init();
    install_panic_hook();
    let (_, result) = local_job(&args, program, |result, _failures| match &result {
        Ok(_) => (ExitCode::Success.code(), result),
        Err(_) => (ExitCode::ClientPanic.code(), result),
    });
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn start<F, R>(args: &RuntimeArgs, program: F) -> i32
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    let Some((universe, threading)) = launch::initialize_mpi() else {
        error!("MPI was initialized before mpidask::run; let mpidask initialize it");
        return ExitCode::Startup.code();
    };
    if threading < Threading::Funneled {
        error!(
            "the MPI library gives thread level {threading:?}; mpidask needs FUNNELED \
             (use an MPI library built with thread support)"
        );
        return ExitCode::Startup.code();
    }
    let world = universe.world();
    let rank = world.rank() as u32;
    let size = world.size() as usize;
    logging::set_process_role(rank, logging::role_of(rank, size));
    let _ = MPI_SETUP.set(MpiSetup {
        library_version: mpi::environment::library_version()
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        thread_level: format!("{threading:?}"),
        world_size: size,
    });
    if let Some(message) = launch::launcher_mismatch(size) {
        // Every process of the launch is a world of its own here: the launcher's rank 0
        // alone reports it.
        if launch::launcher_rank().unwrap_or(0) == 0 {
            error!("{message}");
        }
        return ExitCode::Startup.code();
    }
    match size {
        1 => {
            debug!("world of one rank: local mode");
            let (code, _) = local_job(args, program, exit_code_with_message);
            return code;
        }
        2 => {
            if rank == 0 {
                error!(
                    "mpidask needs at least 3 ranks (0: scheduler, 1: your program, 2 and up: \
                     workers) but runs with 2: use mpirun -np 3 (or more), or start the \
                     program without mpirun/srun to run it in local mode"
                );
            }
            return ExitCode::Startup.code();
        }
        _ => {}
    }
    if let Err(message) = check_same_program(&world) {
        if rank == 0 {
            error!("{message}");
        }
        return ExitCode::Startup.code();
    }
    // Ranks sharing this node's memory, and the ranks of every node (collectives: every
    // rank takes part).
    let (ranks_on_node, workers_sharing_cores) = {
        // Freed here: a communicator must not outlive MPI_Finalize.
        let node = world.split_shared(rank as i32);
        let sharing = workers_sharing_my_cores(&node, rank >= Rank::FIRST_WORKER.0);
        (node.size() as usize, sharing)
    };
    let _ = RANKS_PER_NODE.set(gather_ranks_per_node(&world));
    // The workers' communicator, for broadcasts (also a collective).
    let workers_color = if rank >= Rank::FIRST_WORKER.0 {
        mpi::topology::Color::with_value(0)
    } else {
        mpi::topology::Color::undefined()
    };
    let workers_comm = world.split_by_color(workers_color);
    let workers: Vec<Rank> = (2..size as u32).map(Rank).collect();
    let mut transport = MpiTransport::new(world, args.message_part_bytes, workers_comm);
    let code = match rank {
        0 => scheduler_main(&mut transport, args, workers),
        1 => {
            client_main(
                &mut transport,
                args,
                workers,
                program,
                exit_code_with_message,
            )
            .0
        }
        _ => {
            let host = mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into());
            worker_main(
                &mut transport,
                args,
                host,
                workers_sharing_cores,
                ranks_on_node,
                workers,
            )
        }
    };
    drop(transport);
    drop(universe);
    code
}

/// The exit code of the user's program, logging its failure once.
fn exit_code_with_message<R: ClientOutcome>(
    result: std::thread::Result<R>,
    task_failures: &[String],
) -> (i32, ()) {
    let (code, message) = match result {
        Ok(outcome) => outcome.exit_status(task_failures),
        Err(payload) => (
            ExitCode::ClientPanic,
            Some(format!(
                "the client program {}",
                take_client_panic()
                    .unwrap_or_else(|| format!("panicked: {}", payload_text(&*payload)))
            )),
        ),
    };
    if let Some(message) = message {
        error!("{message}");
    }
    (code.code(), ())
}

/// Checks with a collective that every rank runs the same executable and protocol version.
fn check_same_program(world: &mpi::topology::SimpleCommunicator) -> Result<(), String> {
    let path = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let fingerprint = std::fs::read("/proc/self/exe")
        .or_else(|_| std::fs::read(&path))
        .map(|bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
        .unwrap_or(0);
    let mine = [fingerprint, PROTOCOL_VERSION as u64];
    let mut all = vec![0u64; 2 * world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    let reference = [all[0], all[1]];
    let differing: Vec<String> = all
        .chunks(2)
        .enumerate()
        .filter(|(_, id)| *id != reference)
        .map(|(rank, id)| {
            format!(
                "rank {rank} (executable fingerprint {:016x}, protocol {})",
                id[0], id[1]
            )
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "every rank must run the same program: {} differ(s) from rank 0 (executable \
         fingerprint {:016x}, protocol {}; rank 0 runs {path}). Build once and start the \
         same file on every rank (put it on storage all nodes share).",
        differing.join(", "),
        reference[0],
        reference[1]
    ))
}

/// The loop settings of a client or worker rank (the scheduler watches no scheduler). The
/// workers give a silent scheduler one second more than the client, so that the client
/// alone reports it.
fn settings(args: &RuntimeArgs, rank: Rank) -> DriveSettings {
    let grace = if rank == Rank::CLIENT {
        std::time::Duration::ZERO
    } else {
        driver::HEARTBEAT
    };
    DriveSettings {
        poll_max: args.poll_max(),
        shutdown_timeout: args.shutdown_timeout(),
        scheduler_timeout: Some(args.worker_timeout() + grace),
    }
}

/// Rank 0: the scheduler state machine behind the communication loop.
struct SchedulerNode {
    scheduler: Scheduler,
    outputs: Vec<Output>,
    abort: Option<(i32, String)>,
    /// Every other rank, told every [`driver::HEARTBEAT`] that the scheduler is alive.
    others: Vec<Rank>,
    last_heartbeat: Instant,
    /// The job's task stream (`--trace`/`--report`), written when the job ends.
    trace: Option<TraceCollector>,
}

impl SchedulerNode {
    fn route(&mut self, out: &mut Outbox) {
        self.scheduler.drain_outbox(&mut self.outputs);
        for output in self.outputs.drain(..) {
            match output {
                Output::Worker(rank, message) => out.push(rank, &message),
                Output::Client(message) => out.push(Rank::CLIENT, &message),
                Output::Info(mut info) => {
                    info.cpu_seconds = process_cpu_seconds();
                    info.peak_rss_bytes = process_peak_rss_bytes();
                    out.push(Rank::CLIENT, &ToClient::Info(info));
                }
                Output::Abort { code, message } => {
                    self.abort.get_or_insert((code, message));
                }
            }
        }
    }
}

impl Node for SchedulerNode {
    type Message = ToScheduler;
    type Event = ();

    fn on_message(&mut self, from: Rank, message: ToScheduler, _out: &mut Outbox, now: Instant) {
        let message = match &mut self.trace {
            // A trace message is a sign of life too.
            Some(trace) => trace
                .observe(from, message)
                .unwrap_or(ToScheduler::Heartbeat),
            None => message,
        };
        self.scheduler.handle(from, message, now);
    }

    fn on_abort(&mut self, code: i32) {
        if let Some(trace) = &mut self.trace {
            trace.finish(code);
        }
    }

    fn on_batch_end(&mut self, out: &mut Outbox, _now: Instant) {
        self.route(out);
    }

    fn on_event(&mut self, _event: (), _out: &mut Outbox, _now: Instant) {}

    fn on_tick(&mut self, out: &mut Outbox, now: Instant) {
        self.scheduler.tick(now);
        self.route(out);
        if now.duration_since(self.last_heartbeat) >= driver::HEARTBEAT {
            self.last_heartbeat = now;
            for &rank in &self.others {
                if rank == Rank::CLIENT {
                    out.push(rank, &ToClient::Heartbeat);
                } else {
                    out.push(rank, &ToWorker::Heartbeat);
                }
            }
        }
    }

    fn on_signal(&mut self, signal: i32, _out: &mut Outbox) {
        self.scheduler.handle(
            Rank::SCHEDULER,
            ToScheduler::Signal { signal },
            Instant::now(),
        );
    }

    fn status(&self) -> NodeStatus {
        if let Some((code, message)) = &self.abort {
            return NodeStatus::Abort(*code, message.clone());
        }
        match self.scheduler.exit_code() {
            Some(code) => NodeStatus::Exit(code),
            None => NodeStatus::Running,
        }
    }
}

/// Peak resident memory of this process (VmHWM), bytes; 0 where unknown.
pub fn process_peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Finalises MPI if it is initialised and exits the process with `code`, without waiting
/// for other threads.
fn exit_now(code: i32) -> ! {
    crate::private_dir::remove_all();
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        // SAFETY: called on the thread that initialised MPI (the communication thread), after
        // the shutdown handshake completed, so no MPI call is in progress.
        unsafe {
            mpi::ffi::MPI_Finalize();
        }
    }
    std::process::exit(code)
}

/// CPU time (user + system) this process has used, seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn scheduler_main(transport: &mut dyn Transport, args: &RuntimeArgs, workers: Vec<Rank>) -> i32 {
    logging::set_thread_role(0, "scheduler");
    let mut others = workers.clone();
    others.push(Rank::CLIENT);
    let config = SchedulerConfig {
        workers,
        worker_timeout: args.worker_timeout(),
        shutdown_timeout: args.shutdown_timeout(),
        stall_warning: args.stall_warning(),
    };
    let mut node = SchedulerNode {
        scheduler: Scheduler::new(config, Instant::now()),
        outputs: Vec::new(),
        abort: None,
        others,
        last_heartbeat: Instant::now(),
        trace: args
            .tracing()
            .then(|| TraceCollector::new(args.trace.clone(), args.report.clone())),
    };
    let code = drive(
        &mut node,
        transport,
        &crossbeam_channel::never(),
        DriveSettings {
            scheduler_timeout: None,
            ..settings(args, Rank::SCHEDULER)
        },
    );
    if let Some(trace) = &mut node.trace {
        trace.finish(code);
    }
    info!("job ends with exit code {code}");
    code
}

/// A worker rank. `sharing`: workers that share this rank's cores (in this process in local
/// mode, on this node's cores under MPI); `ranks_on_node`: ranks sharing the node's memory.
fn worker_main(
    transport: &mut dyn Transport,
    args: &RuntimeArgs,
    host: String,
    sharing: usize,
    ranks_on_node: usize,
    workers: Vec<Rank>,
) -> i32 {
    let rank = transport.rank();
    logging::set_thread_role(rank.0, "worker");
    let nthreads = args.worker_threads(sharing);
    let (outcomes, events) = driver::event_channel();
    let executor = Executor::new(
        rank,
        nthreads,
        args.resources.0.clone(),
        outcomes,
        move || logging::set_thread_role(rank.0, "worker"),
    );
    let executor = match executor {
        Ok(executor) => executor,
        Err(e) => {
            error!("cannot start {nthreads} worker threads: {e}");
            transport.abort(ExitCode::Startup.code());
        }
    };
    let (memory_limit, memory_limit_source) = crate::memory::worker_limit(
        args.memory_limit,
        ranks_on_node,
        &crate::memory::node_memory(),
    );
    let hello = WorkerHello {
        nthreads: nthreads as u32,
        resources: args.resources.0.clone(),
        host,
        pid: std::process::id(),
        memory_limit,
        memory_limit_source,
    };
    let spill = SpillPolicy {
        threshold: memory_limit.map(|limit| (limit as f64 * args.memory_spill) as u64),
        local_directory: args.local_directory(),
        rank: rank.0,
    };
    let pause = memory_limit.map(|limit| (limit as f64 * args.memory_pause) as u64);
    let mut node = WorkerNode::new(rank, hello, executor)
        .with_memory_policy(spill, pause)
        .with_workers(workers);
    if args.tracing() {
        node = node.with_trace();
    }
    drive(&mut node, transport, &events, settings(args, rank))
}

/// Rank 1: runs `program` on its own thread while this thread runs the communication loop.
/// `exit_code` turns the program's result into the job's exit code (it runs on the program
/// thread, before the shutdown starts). Returns the code and what `exit_code` made of the
/// result.
fn client_main<R, T, F>(
    transport: &mut dyn Transport,
    args: &RuntimeArgs,
    workers: Vec<Rank>,
    program: F,
    exit_code: impl FnOnce(std::thread::Result<R>, &[String]) -> (i32, T) + Send,
) -> (i32, T)
where
    F: FnOnce(&Client) -> R + Send,
    T: Send,
{
    logging::set_thread_role(1, "client");
    let (commands, events) = driver::event_channel();
    let shared = Shared::new(commands.clone(), workers, args.progress_interval());
    let mut node = ClientNode::new(shared.clone(), args.shutdown_timeout());
    if args.tracing() {
        node = node.with_trace();
    }
    let program_returned = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let program_returned = &program_returned;
        let program_thread = std::thread::Builder::new()
            .name("client".into())
            .spawn_scoped(scope, move || {
                logging::set_thread_role(1, "client");
                IS_CLIENT_PROGRAM.with(|f| f.set(true));
                let client = Client::new(shared.clone());
                let result = catch_unwind(AssertUnwindSafe(|| program(&client)));
                drop(client);
                let failures = shared.task_failures_returned();
                let (code, value) = exit_code(result, &failures);
                program_returned.store(true, std::sync::atomic::Ordering::SeqCst);
                commands.send(Command::Done(code));
                value
            });
        let program_thread = match program_thread {
            Ok(handle) => handle,
            Err(e) => {
                error!("cannot start the client program thread: {e}");
                transport.abort(ExitCode::Startup.code());
            }
        };
        let code = drive(&mut node, transport, &events, settings(args, Rank::CLIENT));
        if !program_returned.load(std::sync::atomic::Ordering::SeqCst) {
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

/// Local mode: every role on threads of this process, over the local transport.
fn local_job<R, T, F>(
    args: &RuntimeArgs,
    program: F,
    exit_code: impl FnOnce(std::thread::Result<R>, &[String]) -> (i32, T) + Send,
) -> (i32, T)
where
    F: FnOnce(&Client) -> R + Send,
    T: Send,
{
    let nworkers = args.local_workers as usize;
    let size = 2 + nworkers;
    let mut transports = LocalTransport::mesh(size).into_iter();
    let mut scheduler_transport = transports.next().expect("rank 0");
    let mut client_transport = transports.next().expect("rank 1");
    let workers: Vec<Rank> = (2..size as u32).map(Rank).collect();
    let host = hostname();
    std::thread::scope(|scope| {
        let scheduler = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn_scoped(scope, || {
                scheduler_main(&mut scheduler_transport, args, workers.clone())
            })
            .expect("start the scheduler thread");
        let worker_threads: Vec<_> = transports
            .map(|mut transport| {
                let host = host.clone();
                let workers = workers.clone();
                std::thread::Builder::new()
                    .name(format!("worker-{}", transport.rank().0))
                    .spawn_scoped(scope, move || {
                        worker_main(&mut transport, args, host, nworkers, nworkers, workers)
                    })
                    .expect("start a worker thread")
            })
            .collect();
        let (code, value) = client_main(
            &mut client_transport,
            args,
            workers.clone(),
            program,
            exit_code,
        );
        let scheduler_code = scheduler.join().unwrap_or(ExitCode::Internal.code());
        for worker in worker_threads {
            let _ = worker.join();
        }
        debug_assert_eq!(code, scheduler_code);
        (code, value)
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

thread_local! {
    static IS_CLIENT_PROGRAM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static CLIENT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn take_client_panic() -> Option<String> {
    CLIENT_PANIC.with(|p| p.borrow_mut().take())
}

/// The message of a panic payload (`&str` or `String`).
pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}

/// Routes panics: a task's panic becomes its error message (sent to the client), the client
/// program's panic is logged once by the runtime, anything else goes to the default hook.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown location".into());
            let report = format!("panicked at {location}: {}", payload_text(info.payload()));
            if executor::on_executor_thread() {
                executor::record_task_panic(report);
            } else if IS_CLIENT_PROGRAM.with(|f| f.get()) {
                let backtrace = std::backtrace::Backtrace::capture();
                let report = match backtrace.status() {
                    std::backtrace::BacktraceStatus::Captured => format!("{report}\n{backtrace}"),
                    _ => report,
                };
                CLIENT_PANIC.with(|p| *p.borrow_mut() = Some(report));
            } else {
                default_hook(info);
            }
        }));
    });
}
