//! A worker rank: holds task results, fetches inputs from other workers, runs tasks on its
//! [`executor::Executor`] and reports to the scheduler.
//!
//! The [`WorkerNode`] runs on the rank's communication thread (the only one that calls MPI);
//! tasks run on the executor's threads and come back as [`executor::TaskOutcome`] events.

mod client_reads;
pub mod disk;
pub mod executor;
mod inputs;
mod mpi_task;
pub mod store;
mod task_client;
#[cfg(test)]
mod tests;

use crate::exit::ExitCode;
use crate::keymap::KeyMap;
use crate::memory::human_bytes;
use crate::node::{Node, NodeStatus};
use crate::protocol::{
    Attempt, FunctionMsg, Key, Payload, Rank, Resource, TaskCode, TaskRun, ToClient, ToScheduler,
    ToWorker, TraceEvent, WorkerHello,
};
use crate::task::{CallError, FunctionTable};
use crate::trace::TraceBuffer;
use crate::transport::Outbox;
use executor::{Executor, TaskOutcome};
use log::debug;
pub use mpi_task::{MpiTaskFn, mpi_trampoline_of};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Instant;
use store::{SpillPolicy, ValueStore};
pub use task_client::TaskClientNode;

/// The run reported for a task given up before its function started (an input that could
/// not be read, an MPI task called off): now, for no time.
fn not_run() -> TaskRun {
    TaskRun {
        start_us: crate::trace::now_us(),
        duration_us: 0,
        thread: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Some inputs are not here yet.
    Waiting,
    /// Every input is here; some are being read back from disk.
    Reading,
    /// Handed to the executor: queued, or already running (only the executor knows); for
    /// an MPI task, handed to the communication thread (`MpiGo` came).
    Queued,
    /// An MPI task holding every input, waiting for `MpiGo`.
    Prepared,
}

struct WorkerTask {
    attempt: Attempt,
    code: Arc<TaskCode>,
    priority: i32,
    resources: Vec<Resource>,
    /// Distinct inputs not here yet (phase `Waiting`).
    missing: usize,
    phase: Phase,
    /// An MPI task's workers, in the order of their communicator (empty for a plain task).
    group: Vec<Rank>,
    /// Inputs this task is the last reader of (`ComputeMsg::consume`): taken out of the
    /// store when it is queued, given back if it is taken away before it starts.
    consume: Vec<Key>,
}

impl WorkerTask {
    fn is_mpi(&self) -> bool {
        !self.group.is_empty()
    }
}

/// What other threads of a worker rank tell its communication thread.
pub enum WorkerEvent {
    /// A task ran (or failed).
    Task(TaskOutcome),
    /// A disk operation of the I/O thread finished.
    Disk(disk::DiskDone),
    /// The task client has commands to send.
    Client,
    /// A task waits for other tasks, having given its thread back (`waiting`), or goes on.
    Seceded {
        /// The task.
        key: Key,
        /// Its placement.
        attempt: Attempt,
        /// `true` when it starts waiting.
        waiting: bool,
    },
}

/// The worker's communication-thread state.
pub struct WorkerNode {
    rank: Rank,
    executor: Executor,
    store: ValueStore,
    tasks: KeyMap<WorkerTask>,
    /// Tasks waiting for a value, by the key of that value, each with the attempt that
    /// waits: a task taken back (stolen, cancelled) and placed here again waits under its
    /// new attempt, and the entry of the old one must not count for it.
    waiters: FxHashMap<Key, Vec<(Key, Attempt)>>,
    /// Tasks and ranks waiting for a value being read back from disk.
    disk_waiters: FxHashMap<Key, inputs::DiskWaiters>,
    /// The inputs gathered so far by each task in phase `Reading` (kept apart from the
    /// tasks, which most of the time need no such thing).
    reading: FxHashMap<Key, inputs::Gathered>,
    /// Values requested from other workers and not yet received.
    fetching: FxHashSet<Key>,
    /// Of those, the copies the scheduler asked for (`CopyFrom`), to report if they fail.
    copying: FxHashSet<Key>,
    next_seq: u64,
    hello: Option<WorkerHello>,
    last_heartbeat: Instant,
    status: NodeStatus,
    /// The task stream this worker recorded and has not sent yet (`--trace`/`--report`).
    trace: Option<TraceBuffer>,
    /// `--memory-limit` in bytes: a larger task result fails its task.
    memory_limit: Option<u64>,
    /// Above this many bytes of values in memory the worker starts no new task.
    pause_threshold: Option<u64>,
    /// Starting no new task until memory frees (values released or spilled).
    paused: bool,
    /// The pause was warned about (spilling could not help).
    pause_warned: bool,
    /// Tasks whose inputs are all here, held while paused.
    held: Vec<Key>,
    /// Every worker rank (broadcasts go to all of them).
    workers: Vec<Rank>,
    /// The workers that take part in this worker's collectives (itself included; empty if
    /// it takes part in none): a broadcast reaches the other workers point to point.
    group: Vec<Rank>,
    /// Broadcasts on their way to this worker, with their root.
    broadcasting: FxHashMap<Key, Rank>,
    /// The functions registered so far (a new table on every registration, so tasks keep
    /// the one they started with).
    functions: Arc<FunctionTable>,
    /// The client of the tasks this worker runs.
    task_client: Option<Box<dyn TaskClientNode>>,
    /// Answers to the task client's requests of this worker, delivered without a send.
    own_client_mail: Vec<crate::protocol::ToClient>,
    /// Where the outcome of an MPI task run by the communication thread goes (the event
    /// channel); `None`: this worker runs no MPI task.
    mpi_report: Option<Arc<dyn Fn(TaskOutcome) + Send + Sync>>,
    /// MPI tasks holding their inputs, waiting for `MpiGo`.
    mpi_prepared: FxHashMap<Key, mpi_task::MpiJob>,
    /// Tasks that went on after waiting for others, not told to the scheduler yet: told at
    /// the next tick if they still run (most finish first, and their result says it).
    rejoined: FxHashSet<(Key, Attempt)>,
    /// The program's large scattered values that arrived here, until the client is told
    /// they were read ([`Self::tell_received`]), which paces the client's large arguments to
    /// what this worker gets through.
    client_reads: client_reads::ClientReads,
}

impl WorkerNode {
    /// Sends what the task client was asked since the last call.
    fn take_client_commands(&mut self, out: &mut Outbox, now: Instant) {
        if let Some(client) = &mut self.task_client {
            client.on_commands(out, now);
        }
    }

    /// Tells the scheduler which tasks went on after waiting for others and still run: a
    /// tick after it, since most such tasks finish first (the scheduler then learns it
    /// from their result, with one message fewer each); meanwhile it counts one thread
    /// more here than there is.
    fn tell_rejoined(&mut self, out: &mut Outbox) {
        for (key, attempt) in std::mem::take(&mut self.rejoined) {
            if self.tasks.get(&key).is_some_and(|t| t.attempt == attempt) {
                out.push(
                    Rank::SCHEDULER,
                    &ToScheduler::Seceded {
                        key,
                        attempt,
                        waiting: false,
                    },
                );
            }
        }
    }

    /// Tells the client which of the large values it scattered here were read (or gone,
    /// or unread for `UNREAD_GRACE`), unless the threads have a backlog: the client sends
    /// its next large arguments when told (see `client::flow`), so values come as fast as
    /// the tasks here take them, and none waits long in memory new to this process. A
    /// backlog always drains, so the client is told in the end.
    fn tell_received(&mut self, out: &mut Outbox, now: Instant) {
        if self.client_reads.is_empty() {
            return;
        }
        let executor = &self.executor;
        let keys = self.client_reads.due(now, || !executor.backlogged());
        if !keys.is_empty() {
            out.push(Rank::CLIENT, &ToClient::Received(keys));
        }
    }

    /// A worker that introduces itself to the scheduler with `hello` when it starts, in the
    /// job with `job_key`.
    pub fn new(rank: Rank, hello: WorkerHello, executor: Executor, job_key: u64) -> Self {
        let memory_limit = hello.memory_limit;
        #[cfg(feature = "huge-page-allocator")]
        if let Some(limit) = memory_limit {
            crate::allocator::limit_cache(limit);
        }
        WorkerNode {
            rank,
            executor,
            store: ValueStore::new(
                SpillPolicy {
                    threshold: None,
                    local_directory: std::env::temp_dir(),
                    rank: rank.0,
                },
                None,
            ),
            tasks: KeyMap::new(),
            waiters: FxHashMap::default(),
            disk_waiters: FxHashMap::default(),
            reading: FxHashMap::default(),
            fetching: FxHashSet::default(),
            copying: FxHashSet::default(),
            next_seq: 0,
            hello: Some(hello),
            last_heartbeat: Instant::now(),
            status: NodeStatus::Running,
            trace: None,
            memory_limit,
            pause_threshold: None,
            paused: false,
            pause_warned: false,
            held: Vec::new(),
            workers: Vec::new(),
            group: Vec::new(),
            broadcasting: FxHashMap::default(),
            functions: Arc::new(FunctionTable::new(job_key)),
            task_client: None,
            own_client_mail: Vec::new(),
            rejoined: FxHashSet::default(),
            client_reads: Default::default(),
            mpi_report: None,
            mpi_prepared: FxHashMap::default(),
        }
    }

    /// Runs MPI tasks (as a member of the workers' communicator), reporting their outcomes
    /// to `report`.
    pub fn with_mpi_report(mut self, report: impl Fn(TaskOutcome) + Send + Sync + 'static) -> Self {
        self.mpi_report = Some(Arc::new(report));
        self
    }

    /// A message that breaks the protocol: the job ends with exit code 8 and one line
    /// naming this rank, the sender and what was wrong.
    fn protocol_error(&mut self, from: Rank, what: impl std::fmt::Display) {
        if !matches!(self.status, NodeStatus::Abort(..)) {
            self.status = NodeStatus::Abort(
                ExitCode::Internal.code(),
                format!(
                    "{} received from {from} {what}; aborting the job",
                    self.rank
                ),
            );
        }
    }

    /// Which ranks may send `message`: the scheduler, another worker, the client.
    fn sender_allowed(&self, from: Rank, message: &ToWorker) -> bool {
        // The workers are listed in rank order.
        let worker = from != self.rank && self.workers.binary_search(&from).is_ok();
        match message {
            ToWorker::RegisterFunction(_)
            | ToWorker::Compute(_)
            | ToWorker::MpiGo { .. }
            | ToWorker::CancelTask { .. }
            | ToWorker::ReleaseKeys(_)
            | ToWorker::LastRead { .. }
            | ToWorker::Steal { .. }
            | ToWorker::CopyFrom(_)
            | ToWorker::Stop
            | ToWorker::Exit { .. }
            | ToWorker::Heartbeat => from == Rank::SCHEDULER,
            ToWorker::GetData(_) => from == Rank::CLIENT || worker,
            ToWorker::Data { .. }
            | ToWorker::DataMissing(_)
            | ToWorker::GetClientData(_)
            | ToWorker::BroadcastStart { .. }
            | ToWorker::BroadcastValue { .. } => worker,
            // Task clients scatter too (their large task arguments).
            ToWorker::ScatterData { .. } => from == Rank::CLIENT || worker,
            ToWorker::BroadcastScatter { .. } => from == Rank::CLIENT,
            ToWorker::ForClient(message) => match message {
                ToClient::KeyDone { .. }
                | ToClient::KeyErred { .. }
                | ToClient::KeyCancelled { .. }
                | ToClient::Coordinated { .. } => from == Rank::SCHEDULER,
                ToClient::Data { .. } | ToClient::DataMissing(_) => worker,
                _ => false,
            },
        }
    }

    /// A function the client registered, forwarded by the scheduler.
    fn on_register_function(&mut self, from: Rank, registration: FunctionMsg) {
        if let Err(problem) = Arc::make_mut(&mut self.functions).register(registration) {
            self.protocol_error(from, problem);
        }
    }

    /// Spills values to disk by `policy` on an I/O thread whose results go to `report`
    /// (the worker's event channel), and pauses above `pause_threshold` bytes of values in
    /// memory (which spilling normally prevents; it protects the worker when spilling cannot
    /// keep up or fails).
    pub fn with_memory_policy(
        mut self,
        policy: SpillPolicy,
        pause_threshold: Option<u64>,
        report: Option<store::DiskReport>,
    ) -> Self {
        self.store = ValueStore::new(policy, report);
        self.pause_threshold = pause_threshold;
        self
    }

    /// Knows every worker rank (for broadcasts, and to tell which messages come from one)
    /// and those of its collectives' `group` (empty if it takes part in none).
    pub fn with_workers(mut self, mut workers: Vec<Rank>, mut group: Vec<Rank>) -> Self {
        workers.sort_unstable();
        group.sort_unstable();
        self.workers = workers;
        self.group = group;
        self
    }

    /// Stores a value the client scattered here, and tells the scheduler.
    fn on_scatter_data(&mut self, key: Key, bytes: Payload, out: &mut Outbox) {
        let nbytes = bytes.len() as u64;
        self.store_value(key, bytes, out);
        out.push(
            Rank::SCHEDULER,
            &ToScheduler::TaskFinished {
                key,
                attempt: 0,
                nbytes,
                run: None,
            },
        );
    }

    /// The client scatters `key` to every worker through this one: store it and broadcast it.
    fn on_broadcast_scatter(&mut self, key: Key, bytes: Payload, out: &mut Outbox) {
        let len = bytes.len() as u64;
        self.on_scatter_data(key, bytes.clone(), out);
        let others: Vec<Rank> = self
            .workers
            .iter()
            .copied()
            .filter(|w| *w != self.rank)
            .collect();
        if others.is_empty() {
            return;
        }
        let in_group = |w: &Rank| self.group.binary_search(w).is_ok();
        let collective = self.group.contains(&self.rank) && others.iter().any(in_group);
        for &worker in &others {
            if collective && in_group(&worker) {
                out.push(worker, &ToWorker::BroadcastStart { key, len });
            } else {
                out.push(
                    worker,
                    &ToWorker::BroadcastValue {
                        key,
                        bytes: bytes.clone(),
                    },
                );
            }
        }
        // Every other worker receives the value (the members of the collective take part
        // in it), so every worker will hold it: said by this rank, after its
        // `TaskFinished`, so the scheduler hears it in order.
        out.push(
            Rank::SCHEDULER,
            &ToScheduler::Replicated {
                key,
                workers: others,
            },
        );
        if collective {
            out.broadcast_send(key, bytes);
        }
    }

    /// Another worker broadcasts `key`: post this worker's part of the collective.
    fn on_broadcast_start(&mut self, root: Rank, key: Key, len: u64, out: &mut Outbox) {
        self.broadcasting.insert(key, root);
        if let Some(trace) = &mut self.trace {
            trace.requested(key);
        }
        out.broadcast_receive(root, key, len as usize);
    }

    /// A broadcast value from `root` has arrived (by the collective or point to point).
    fn on_broadcast_value(&mut self, root: Rank, key: Key, value: Payload, out: &mut Outbox) {
        if let Some(trace) = &mut self.trace {
            trace.arrived_by(key, root, value.len() as u64, true);
        }
        // A fetch of the same value may have been sent before the broadcast was announced;
        // the root has told the scheduler this worker holds it.
        self.fetching.remove(&key);
        self.store_value(key, value, out);
    }

    /// Pauses above the pause threshold; below it, resumes and starts the held tasks. While
    /// spilling works the pause is ordinary back-pressure (values are being written, or are
    /// still held by running tasks and sends, and go to disk once let go) and is logged at
    /// debug level; a pause that spilling cannot end (it is off, or failed) is a warning.
    fn update_pause(&mut self, out: &mut Outbox) {
        let Some(threshold) = self.pause_threshold else {
            return;
        };
        let in_memory = self.store.memory_bytes();
        if in_memory > threshold && !self.paused {
            self.paused = true;
            self.pause_warned = !self.store.can_spill();
            if self.pause_warned {
                log::warn!(
                    "{} paused: its values take {} of memory, above the pause threshold of \
                     {} (--memory-pause of --memory-limit); it starts no new task until memory \
                     frees (spilling to --local-directory failed or is off)",
                    self.rank,
                    human_bytes(in_memory),
                    human_bytes(threshold)
                );
            } else {
                debug!(
                    "{} paused at {} of values while {} are written to disk",
                    self.rank,
                    human_bytes(in_memory),
                    human_bytes(self.store.writing_bytes())
                );
            }
        } else if in_memory <= threshold && self.paused {
            self.paused = false;
            if std::mem::take(&mut self.pause_warned) {
                log::info!(
                    "{} resumes: its values take {}",
                    self.rank,
                    human_bytes(in_memory)
                );
            }
            for key in std::mem::take(&mut self.held) {
                // Tasks stolen or cancelled meanwhile are gone.
                if self
                    .tasks
                    .get(&key)
                    .is_some_and(|t| t.phase == Phase::Waiting && t.missing == 0)
                {
                    self.gather(key, out);
                }
            }
        }
    }

    /// Moves the store's spill records into the task stream (or drops them).
    fn collect_spill_records(&mut self) {
        let records = self.store.take_records();
        if let Some(trace) = &mut self.trace {
            for r in records {
                trace.record(TraceEvent::Spill {
                    key: r.key,
                    nbytes: r.nbytes,
                    start_us: r.start_us,
                    duration_us: r.duration_us,
                    write: r.write,
                });
            }
        }
    }

    /// Records the task stream and sends it to the scheduler rank (`--trace`/`--report`).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(TraceBuffer::default());
        self
    }

    fn send_trace(&mut self, out: &mut Outbox) {
        self.collect_spill_records();
        if let Some(trace) = &mut self.trace {
            trace.record(TraceEvent::Memory {
                at_us: crate::trace::now_us(),
                stored_bytes: self.store.memory_bytes(),
                spilled_bytes: self.store.disk_bytes(),
                rss_bytes: crate::process::rss_bytes(),
            });
        }
        if let Some(message) = self.trace.as_mut().and_then(TraceBuffer::take_message) {
            out.push(Rank::SCHEDULER, &message);
        }
    }

    fn on_cancel(&mut self, key: Key, attempt: Attempt, out: &mut Outbox) {
        let Some(task) = self.tasks.get(&key) else {
            return;
        };
        if task.attempt != attempt {
            return;
        }
        if task.is_mpi() {
            self.call_off_mpi(key, attempt, None, out);
            return;
        }
        if task.phase == Phase::Queued {
            // If it already runs, its outcome finds no task below and is dropped.
            if let Some(queued) = self.executor.remove(key, attempt) {
                self.give_back_consumed(queued);
            }
        }
        self.tasks.remove(&key);
        self.reading.remove(&key);
    }

    fn on_steal(&mut self, key: Key, attempt: Attempt, out: &mut Outbox) {
        let stolen = match self.tasks.get(&key) {
            Some(task) if task.attempt == attempt && !task.is_mpi() => match task.phase {
                Phase::Waiting | Phase::Reading => true,
                Phase::Prepared => false,
                // Only a task that has not started can be taken back.
                Phase::Queued => match self.executor.remove(key, attempt) {
                    Some(queued) => {
                        self.give_back_consumed(queued);
                        true
                    }
                    None => false,
                },
            },
            _ => false,
        };
        if stolen {
            self.tasks.remove(&key);
            self.reading.remove(&key);
        }
        out.push(
            Rank::SCHEDULER,
            &ToScheduler::StealReply {
                key,
                attempt,
                stolen,
            },
        );
    }

    fn on_outcome(&mut self, outcome: TaskOutcome, out: &mut Outbox) {
        let current = self
            .tasks
            .get(&outcome.key)
            .is_some_and(|t| t.attempt == outcome.attempt);
        if !current || self.status != NodeStatus::Running {
            return;
        }
        let task = self
            .tasks
            .remove(&outcome.key)
            .expect("current task exists");
        let result = match outcome.result {
            Ok(bytes) => Ok(bytes),
            Err(CallError::Failed(message)) => Err(message),
            Err(CallError::Corrupt(problem)) => {
                self.protocol_error(
                    Rank::SCHEDULER,
                    format!("task {} that is malformed: {problem}", outcome.key),
                );
                return;
            }
        };
        let result = result.and_then(|bytes| match self.memory_limit {
            Some(limit) if bytes.len() as u64 > limit => Err(format!(
                "its result is {}, more than the {} memory limit of worker {}: split the \
                 work into smaller tasks (smaller chunks) or raise --memory-limit",
                human_bytes(bytes.len() as u64),
                human_bytes(limit),
                self.rank
            )),
            _ => Ok(bytes),
        });
        // A result loaded from the checkpoint is no run of the function: no task stream
        // entry, and `run: None` tells the scheduler.
        if let Some(trace) = self.trace.as_mut().filter(|_| !outcome.restored) {
            trace.record(TraceEvent::Task {
                key: outcome.key,
                func: task.code.func,
                thread: outcome.thread,
                start_us: outcome.started_us,
                duration_us: outcome.duration.as_micros() as u64,
                ok: result.is_ok(),
                bytes_in: outcome.bytes_in,
                bytes_out: result.as_ref().map_or(0, |bytes| bytes.len() as u64),
            });
        }
        if task.group.first().is_some_and(|first| *first != self.rank) {
            // Another member's result is the task's value.
            out.push(
                Rank::SCHEDULER,
                &ToScheduler::MpiPartDone {
                    key: outcome.key,
                    attempt: outcome.attempt,
                    failure: result.err(),
                },
            );
            return;
        }
        let run = TaskRun {
            start_us: outcome.started_us,
            duration_us: outcome.duration.as_micros() as u64,
            thread: outcome.thread,
        };
        match result {
            Ok(bytes) => {
                let nbytes = bytes.len() as u64;
                self.store_value(outcome.key, bytes, out);
                out.push(
                    Rank::SCHEDULER,
                    &ToScheduler::TaskFinished {
                        key: outcome.key,
                        attempt: outcome.attempt,
                        nbytes,
                        run: (!outcome.restored).then_some(run),
                    },
                );
            }
            Err(message) => {
                debug!("task {} failed: {message}", outcome.key);
                out.push(
                    Rank::SCHEDULER,
                    &ToScheduler::TaskFailed {
                        key: outcome.key,
                        attempt: outcome.attempt,
                        message,
                        run,
                    },
                );
            }
        }
    }
}

impl Node for WorkerNode {
    type Message = ToWorker;
    type Event = WorkerEvent;

    fn on_start(&mut self, out: &mut Outbox) {
        if let Some(hello) = self.hello.take() {
            out.push(Rank::SCHEDULER, &ToScheduler::WorkerHello(hello));
        }
    }

    fn on_message(&mut self, from: Rank, message: ToWorker, out: &mut Outbox, now: Instant) {
        if !self.sender_allowed(from, &message) {
            let what = format!("{message:?}");
            let what: String = what.chars().take(120).collect();
            self.protocol_error(from, format_args!("a message it may not send: {what}"));
            return;
        }
        if self.status != NodeStatus::Running {
            match message {
                ToWorker::Exit { code } => self.status = NodeStatus::Exit(code),
                // A collective the other workers take part in: this one must too, even
                // while stopping, or theirs would never complete.
                ToWorker::BroadcastStart { key, len } => {
                    self.on_broadcast_start(from, key, len, out)
                }
                _ => {}
            }
            return;
        }
        match message {
            ToWorker::RegisterFunction(registration) => {
                self.on_register_function(from, registration)
            }
            ToWorker::Compute(msg) => self.on_compute(from, msg, out),
            ToWorker::MpiGo { key, attempt } => self.on_mpi_go(key, attempt, out),
            ToWorker::CancelTask { key, attempt } => self.on_cancel(key, attempt, out),
            ToWorker::ReleaseKeys(keys) => {
                for key in keys {
                    self.store.remove(&key);
                    self.client_reads.read(&key);
                }
            }
            ToWorker::LastRead {
                key,
                attempt,
                input,
            } => self.on_last_read(key, attempt, input),
            ToWorker::Steal { key, attempt } => self.on_steal(key, attempt, out),
            ToWorker::GetData(keys) => self.on_get_data(from, keys, false, out),
            ToWorker::CopyFrom(copies) => self.on_copy_from(from, copies, out),
            ToWorker::GetClientData(keys) => self.on_get_data(from, keys, true, out),
            ToWorker::ForClient(message) => self.on_for_client(from, message, out),
            ToWorker::Data { key, bytes } => self.on_data(from, key, bytes, out),
            ToWorker::DataMissing(key) => self.on_data_missing(from, key, out),
            ToWorker::ScatterData { key, bytes } => {
                if from == Rank::CLIENT && bytes.len() >= crate::protocol::ATTACH_BYTES {
                    self.client_reads.arrived(key, now);
                }
                self.on_scatter_data(key, bytes, out);
            }
            ToWorker::BroadcastScatter { key, bytes } => self.on_broadcast_scatter(key, bytes, out),
            ToWorker::BroadcastStart { key, len } => self.on_broadcast_start(from, key, len, out),
            ToWorker::BroadcastValue { key, bytes } => {
                self.on_broadcast_value(from, key, bytes, out)
            }
            ToWorker::Stop => {
                debug!(
                    "stopping with {} values and {} queued tasks",
                    self.store.len(),
                    self.executor.queued()
                );
                self.executor.clear();
                if let Some(client) = &mut self.task_client {
                    client.stop();
                }
                // The last entries go before `Quiesced`, which the loop sends next.
                self.send_trace(out);
                self.status = NodeStatus::Quiescing;
            }
            ToWorker::Exit { code } => self.status = NodeStatus::Exit(code),
            ToWorker::Heartbeat => {
                // When the scheduler's heartbeats arrive shows how responsive this rank's
                // communication thread is (nothing here may wait for the disk).
                if let Some(trace) = &mut self.trace {
                    trace.record(TraceEvent::Heartbeat {
                        at_us: crate::trace::now_us(),
                    });
                }
            }
        }
    }

    fn on_event(&mut self, event: WorkerEvent, out: &mut Outbox, now: Instant) {
        // Once stopping, nothing new is sent: its receiver may already have exited, and a
        // send that is never received would hold this rank past its shutdown deadline.
        if self.status != NodeStatus::Running {
            return;
        }
        if matches!(event, WorkerEvent::Task(_) | WorkerEvent::Seceded { .. }) {
            // What a task asked of its task client before it waited or ended goes first
            // (from a task's own thread, asking does not wake this thread: see
            // `crate::client::host_task_client`).
            self.take_client_commands(out, now);
        }
        match event {
            WorkerEvent::Task(outcome) => self.on_outcome(outcome, out),
            WorkerEvent::Disk(done) => self.on_disk_done(done, out),
            WorkerEvent::Seceded {
                key,
                attempt,
                waiting,
            } => {
                if self.tasks.get(&key).is_none_or(|t| t.attempt != attempt) {
                    return;
                }
                if !waiting {
                    self.rejoined.insert((key, attempt));
                    return;
                }
                // Waiting again before its going on was told: the scheduler still counts
                // it as waiting.
                if !self.rejoined.remove(&(key, attempt)) {
                    out.push(
                        Rank::SCHEDULER,
                        &ToScheduler::Seceded {
                            key,
                            attempt,
                            waiting,
                        },
                    );
                }
            }
            WorkerEvent::Client => self.take_client_commands(out, now),
        }
    }

    fn on_batch_end(&mut self, out: &mut Outbox, now: Instant) {
        if self.status == NodeStatus::Running {
            self.pump_task_client(out, now);
            self.tell_received(out, now);
        }
        self.store.hand_back_buffers();
    }

    fn on_broadcast(&mut self, key: Key, value: Payload, out: &mut Outbox) {
        let root = self.broadcasting.remove(&key).unwrap_or(Rank::FIRST_WORKER);
        if self.status != NodeStatus::Running {
            return;
        }
        self.on_broadcast_value(root, key, value, out);
    }

    fn on_tick(&mut self, out: &mut Outbox, now: Instant) {
        if self.trace.is_none() {
            self.collect_spill_records();
        }
        if self.status == NodeStatus::Running {
            self.take_client_commands(out, now);
            self.tell_rejoined(out);
            self.tell_received(out, now);
            self.store.rebalance();
            self.update_pause(out);
            if let Some(client) = &mut self.task_client {
                client.on_tick(out, now);
            }
        }
        if self.status == NodeStatus::Running
            && now.duration_since(self.last_heartbeat) >= crate::node::HEARTBEAT
        {
            out.push(Rank::SCHEDULER, &ToScheduler::Heartbeat);
            self.send_trace(out);
            self.last_heartbeat = now;
        }
    }

    fn status(&self) -> NodeStatus {
        self.status.clone()
    }
}
