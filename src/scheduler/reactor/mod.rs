//! The scheduler's message handlers: each takes the current time, updates the state and
//! writes the messages to send into an outbox. Nothing here blocks or talks to MPI.
//!
//! This file holds the state and the dispatch of messages; the handlers are grouped by
//! what they are about: [`placement`] (new work and where it runs), [`results`] (what comes
//! back), [`shutdown`] (the end of a job and the stall watchdog).

#[cfg(test)]
mod invariants;
mod mpi_tasks;
mod placement;
mod replicas;
mod results;
mod shutdown;
mod stream;

use super::coordination::Coordination;
use super::policy;
use super::state::{LoadIndex, ReadyQueue, Task, TaskState, Worker};
use crate::exit::ExitCode;
use crate::keymap::KeyMap;
use crate::protocol::{
    JobProgress, Key, Rank, SchedulerInfo, ToClient, ToScheduler, ToWorker, WorkerHello, WorkerInfo,
};
use crate::task::FunctionTable;
use log::{debug, info, warn};
use rustc_hash::{FxHashMap, FxHashSet};
use std::time::{Duration, Instant};

/// `SIGTERM` and the like, by number.
pub(super) fn signal_name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGUSR1 => "SIGUSR1".into(),
        other => format!("signal {other}"),
    }
}

/// `Scheduler::rank_index` of a rank that is not a worker.
const NOT_A_WORKER: u32 = u32::MAX;

/// How much longer than `--worker-timeout` the verdict on a silent worker waits for the
/// other workers of its node that are about to time out too: two heartbeats (a worker
/// sends one every second), so that a node lost at once is named with all its workers.
const SAME_NODE_GRACE: Duration = Duration::from_secs(2);

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Ranks of the workers that will join.
    pub workers: Vec<Rank>,
    /// A worker silent this long is presumed lost and the job is aborted.
    pub worker_timeout: Duration,
    /// Deadline for the shutdown handshake.
    pub shutdown_timeout: Duration,
    /// Warn when no task finished for this long while tasks are pending.
    pub stall_warning: Duration,
    /// The job's key, which registrations of functions are checked with.
    pub job_key: u64,
    /// Whether idle workers take queued tasks from busy ones (`--no-work-stealing` turns it
    /// off, as Dask's `distributed.scheduler.work-stealing: False` does).
    pub work_stealing: bool,
}

/// Something the scheduler wants done: a message to send, or the end of the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to a worker.
    Worker(Rank, ToWorker),
    /// Send to the client.
    Client(ToClient),
    /// Send [`ToClient::Info`] once the driver filled in the scheduler's CPU time.
    Info(SchedulerInfo),
    /// End the job at once with `MPI_Abort(code)`.
    Abort {
        /// Exit code.
        code: i32,
        /// Why, in one line.
        message: String,
    },
}

#[derive(Debug)]
enum Lifecycle {
    Running,
    Stopping {
        code: i32,
        deadline: Instant,
        waiting_for: FxHashSet<Rank>,
    },
    Exited {
        code: i32,
    },
    Aborted,
}

/// The scheduler state machine.
/// A worker's report of a scattered value that arrived before the client's `Scatter`.
struct EarlyScatter {
    from: Rank,
    nbytes: u64,
    replicas: Vec<Rank>,
}

pub struct Scheduler {
    config: SchedulerConfig,
    tasks: KeyMap<Task>,
    workers: Vec<Worker>,
    /// The workers' host names, in the order they first said hello: [`Worker::node`]
    /// indexes it.
    hosts: Vec<String>,
    /// Index in `workers` by rank number (`NOT_A_WORKER` for other ranks).
    rank_index: Vec<u32>,
    /// Joined workers by load (tasks held per thread), then index: the least loaded first.
    by_load: LoadIndex,
    ready: ReadyQueue,
    /// The functions the client registered.
    functions: FunctionTable,
    outbox: Vec<Output>,
    /// Keys to release, per worker index, sent by [`Scheduler::drain_outbox`].
    releases: Vec<Vec<Key>>,
    /// Worker indices with keys in `releases`.
    releasing: Vec<usize>,
    next_seq: u64,
    /// Tasks submitted (not scattered values).
    submitted: u64,
    /// Scattered values a worker reported before the client's `Scatter` arrived.
    early_scatters: FxHashMap<Key, EarlyScatter>,
    completed: u64,
    /// Of those, results loaded from the checkpoint directory (the function did not run).
    restored: u64,
    /// Tasks ended by a failure or cancellation (their own or a dependency's).
    failed: u64,
    /// Tasks forgotten before they finished (the client released them).
    dropped: u64,
    mean_task_seconds: Option<f64>,
    /// Mean duration per task group (see [`Scheduler::task_seconds`]).
    group_seconds: FxHashMap<(Option<crate::protocol::FnId>, bool), f64>,
    joined: usize,
    info_requests: u32,
    needs_schedule: bool,
    lifecycle: Lifecycle,
    /// When a task last finished or failed, or work last arrived.
    last_progress: Instant,
    /// Earliest time of the next stall warning.
    next_stall_warning: Instant,
    /// The last [`Scheduler::tick`].
    last_tick: Instant,
    /// Queues, variables, locks, semaphores and events.
    coordination: Coordination,
    /// Ready MPI tasks, in the order they became ready (see [`mpi_tasks`]).
    mpi_ready: std::collections::VecDeque<Key>,
    /// The workers reserved for the first of `mpi_ready`.
    mpi_reserved: Vec<Rank>,
    /// MPI tasks sent to their workers, until every member reported its part.
    mpi_runs: FxHashMap<Key, mpi_tasks::MpiRun>,
    /// `replicate` requests waiting for their copies.
    replications: Vec<replicas::Replication>,
    /// The latest task runs, for `get_task_stream`.
    task_stream: crate::scheduler::task_stream::TaskStreamLog,
}

impl Scheduler {
    /// The expected duration of `task`: the running mean of its group (same function, and
    /// both with or both without inputs, so that a chunk's generation and its reduction,
    /// both array programs, are told apart), `None` before one of the group finished.
    pub(super) fn task_seconds(&self, task: &Task) -> Option<f64> {
        self.group_seconds
            .get(&(task.func, !task.deps.is_empty()))
            .copied()
    }

    /// A scheduler waiting for `config.workers` to join.
    pub fn new(config: SchedulerConfig, now: Instant) -> Self {
        let job_key = config.job_key;
        let workers: Vec<Worker> = config
            .workers
            .iter()
            .map(|&r| Worker::new(r, now))
            .collect();
        let highest = workers.iter().map(|w| w.rank.0 as usize).max().unwrap_or(0);
        let mut rank_index = vec![NOT_A_WORKER; highest + 1];
        for (i, w) in workers.iter().enumerate() {
            rank_index[w.rank.0 as usize] = i as u32;
        }
        let count = workers.len();
        Scheduler {
            last_progress: now,
            last_tick: now,
            next_stall_warning: now + config.stall_warning,
            config,
            tasks: KeyMap::new(),
            workers,
            hosts: Vec::new(),
            rank_index,
            by_load: LoadIndex::new(count),
            ready: ReadyQueue::default(),
            functions: FunctionTable::new(job_key),
            outbox: Vec::new(),
            releases: vec![Vec::new(); count],
            releasing: Vec::new(),
            next_seq: 0,
            submitted: 0,
            early_scatters: FxHashMap::default(),
            completed: 0,
            restored: 0,
            failed: 0,
            dropped: 0,
            mean_task_seconds: None,
            group_seconds: FxHashMap::default(),
            joined: 0,
            info_requests: 0,
            needs_schedule: false,
            lifecycle: Lifecycle::Running,
            coordination: Coordination::default(),
            mpi_ready: std::collections::VecDeque::new(),
            mpi_reserved: Vec::new(),
            mpi_runs: FxHashMap::default(),
            replications: Vec::new(),
            task_stream: Default::default(),
        }
    }

    /// Which ranks may send `message`: the client, the workers, or any rank.
    fn sender_allowed(&self, from: Rank, message: &ToScheduler) -> bool {
        match message {
            // The client's requests, also made by the task clients of the workers (about
            // their own keys and functions only: see `names_only_own`).
            ToScheduler::RegisterFunction(_)
            | ToScheduler::Submit(_)
            | ToScheduler::Scatter { .. }
            | ToScheduler::ReleaseKeys(_)
            | ToScheduler::CancelKeys(_)
            | ToScheduler::Coordinate { .. }
            | ToScheduler::WhoHas { .. }
            | ToScheduler::Replicate { .. }
            | ToScheduler::TaskStream { .. } => {
                from == Rank::CLIENT || self.worker_index(from).is_some()
            }
            ToScheduler::InfoRequest
            | ToScheduler::ProgressRequest
            | ToScheduler::ClientDone { .. } => from == Rank::CLIENT,
            ToScheduler::WorkerHello(_)
            | ToScheduler::TaskFinished { .. }
            | ToScheduler::TaskFailed { .. }
            | ToScheduler::StealReply { .. }
            | ToScheduler::Seceded { .. }
            | ToScheduler::MpiPartDone { .. }
            | ToScheduler::MpiReady { .. }
            | ToScheduler::AddReplicas(_)
            | ToScheduler::CopyFailed(_)
            | ToScheduler::Replicated { .. } => self.worker_index(from).is_some(),
            ToScheduler::Trace(_)
            | ToScheduler::Heartbeat
            | ToScheduler::Quiesced
            | ToScheduler::Signal { .. }
            | ToScheduler::Fatal { .. } => true,
        }
    }

    /// The first key or function id in `message` that another rank made than `from`: a
    /// client (the main one, or a worker's task client) submits, scatters, releases and
    /// cancels only its own keys, and registers only its own functions.
    fn names_only_own(from: Rank, message: &ToScheduler) -> Option<String> {
        let key = |key: &Key| (key.owner() != from).then(|| key.to_string());
        match message {
            ToScheduler::RegisterFunction(registration) => {
                (registration.id.owner().0 != from).then(|| registration.id.to_string())
            }
            ToScheduler::Submit(specs) => specs.iter().find_map(|spec| key(&spec.key)),
            ToScheduler::Scatter { key: k, .. } => key(k),
            ToScheduler::ReleaseKeys(keys)
            | ToScheduler::CancelKeys(keys)
            | ToScheduler::WhoHas { keys, .. }
            | ToScheduler::Replicate { keys, .. } => keys.iter().find_map(key),
            _ => None,
        }
    }

    /// Sends `message` to a client: the program's, or the task client of worker `rank`.
    fn send_to_client_of(&mut self, rank: Rank, message: ToClient) {
        self.outbox.push(if rank == Rank::CLIENT {
            Output::Client(message)
        } else {
            Output::Worker(rank, ToWorker::ForClient(message))
        });
    }

    /// Sends the coordination answers to their requesters.
    fn send_answers(&mut self, answers: Vec<super::coordination::Answer>) {
        for (rank, id, reply) in answers {
            self.send_to_client_of(rank, ToClient::Coordinated { id, reply });
        }
    }

    /// Tells the owner of `key` (the client, or the worker whose task client made it)
    /// about it.
    pub(super) fn notify_owner(&mut self, key: Key, message: ToClient) {
        self.send_to_client_of(key.owner(), message);
    }

    /// A message that breaks the protocol: the job ends with exit code 8 and one line
    /// naming this rank, the sender and what was wrong.
    fn protocol_error(&mut self, from: Rank, what: String) {
        self.abort(
            ExitCode::Internal.code(),
            format!(
                "{} received from {from} {what}; aborting the job",
                Rank::SCHEDULER
            ),
        );
    }

    /// Handles one message from `from`.
    pub fn handle(&mut self, from: Rank, message: ToScheduler, now: Instant) {
        if !self.sender_allowed(from, &message) {
            let what = format!("{message:?}");
            let what: String = what.chars().take(120).collect();
            self.protocol_error(from, format!("a message it may not send: {what}"));
            return;
        }
        if let Some(other) = Self::names_only_own(from, &message) {
            self.protocol_error(
                from,
                format!("a request about {other}, which it did not make"),
            );
            return;
        }
        if let Some(i) = self.worker_index(from) {
            self.workers[i].last_seen = now;
        }
        if matches!(
            message,
            ToScheduler::Submit(_)
                | ToScheduler::TaskFinished { .. }
                | ToScheduler::TaskFailed { .. }
        ) {
            self.last_progress = now;
        }
        match message {
            ToScheduler::WorkerHello(hello) => self.on_worker_hello(from, hello),
            ToScheduler::RegisterFunction(registration) => {
                self.on_register_function(from, registration)
            }
            ToScheduler::Submit(specs) => self.on_submit(from, specs),
            ToScheduler::Scatter {
                key,
                worker,
                nbytes,
            } => self.on_scatter(key, worker, nbytes),
            ToScheduler::ReleaseKeys(keys) => self.on_release(&keys),
            ToScheduler::CancelKeys(keys) => self.on_cancel(&keys),
            ToScheduler::InfoRequest => self.on_info_request(),
            ToScheduler::TaskFinished {
                key,
                attempt,
                nbytes,
                run,
            } => self.on_task_finished(from, key, attempt, nbytes, run),
            ToScheduler::TaskFailed {
                key,
                attempt,
                message,
                run,
            } => self.on_task_failed(from, key, attempt, message, run, now),
            ToScheduler::StealReply {
                key,
                attempt,
                stolen,
            } => self.on_steal_reply(from, key, attempt, stolen),
            ToScheduler::Seceded {
                key,
                attempt,
                waiting,
            } => self.on_seceded(from, key, attempt, waiting),
            ToScheduler::MpiPartDone {
                key,
                attempt,
                failure,
            } => self.on_mpi_part_done(from, key, attempt, failure, now),
            ToScheduler::MpiReady { key, attempt } => self.on_mpi_ready(from, key, attempt),
            ToScheduler::AddReplicas(keys) => {
                self.on_add_replicas(from, &keys);
                self.copies_settled(from, &keys);
            }
            ToScheduler::CopyFailed(keys) => self.copies_settled(from, &keys),
            ToScheduler::WhoHas { id, keys } => self.on_who_has(from, id, &keys),
            ToScheduler::Replicate { id, keys, n } => self.on_replicate(from, id, &keys, n),
            ToScheduler::Replicated { key, workers } => self.on_replicated(key, workers),
            ToScheduler::TaskStream { id, since } => self.on_task_stream(from, id, since),
            ToScheduler::Coordinate { id, op } => {
                let mut answers = Vec::new();
                self.coordination.handle(from, id, op, now, &mut answers);
                self.send_answers(answers);
            }
            ToScheduler::ProgressRequest => self
                .outbox
                .push(Output::Client(ToClient::Progress(self.progress()))),
            // Collected by the scheduler rank's node before it reaches the state machine.
            ToScheduler::Trace(_) | ToScheduler::Heartbeat => {}
            ToScheduler::ClientDone { code } => self.on_client_done(code, now),
            ToScheduler::Signal { signal } => self.on_signal(signal, from, now),
            ToScheduler::Quiesced => self.on_quiesced(from),
            ToScheduler::Fatal { code, message } => self.abort(code, format!("{from}: {message}")),
        }
    }

    /// Says which workers have been silent longer than `--worker-timeout`, if any, with
    /// their nodes: a node all of whose workers are silent is named as presumed down (a
    /// lost node or a network partition), so the line says what to look at.
    ///
    /// Workers of one node lost together fell silent within a heartbeat or two of each
    /// other, so their timeouts pass that far apart: while a worker on the node of a silent
    /// one has been silent for nearly the timeout too (all but [`SAME_NODE_GRACE`]), the
    /// verdict waits for it, [`SAME_NODE_GRACE`] at most, and then names them all.
    fn silent_workers(&self, now: Instant) -> Option<String> {
        let timeout = self.config.worker_timeout;
        let grace = SAME_NODE_GRACE.min(timeout / 2);
        let silent_for = |w: &Worker| now.saturating_duration_since(w.last_seen);
        let silent: Vec<&Worker> = self
            .workers
            .iter()
            .filter(|w| silent_for(w) > timeout)
            .collect();
        let longest = silent.iter().map(|w| silent_for(w)).max()?;
        let host = |w: &Worker| w.hello.as_ref().map(|h| h.host.clone());
        let about_to_be = self.workers.iter().any(|w| {
            let quiet = silent_for(w);
            quiet <= timeout
                && quiet > timeout - grace
                && host(w).is_some()
                && silent.iter().any(|s| host(s) == host(w))
        });
        if about_to_be && longest <= timeout + grace {
            return None;
        }
        let ranks: Vec<String> = silent.iter().map(|w| w.rank.to_string()).collect();
        let who = if silent.len() == 1 {
            format!("worker {}", ranks[0])
        } else {
            format!("workers {}", ranks.join(", "))
        };
        let mut hosts: Vec<String> = silent.iter().filter_map(|w| host(w)).collect();
        hosts.sort();
        hosts.dedup();
        let several_nodes = {
            let mut all: Vec<String> = self.workers.iter().filter_map(host).collect();
            all.sort();
            all.dedup();
            all.len() > 1
        };
        let down: Vec<&String> = hosts
            .iter()
            .filter(|h| {
                self.workers
                    .iter()
                    .filter(|w| host(w).as_ref() == Some(*h))
                    .all(|w| silent_for(w) > timeout)
            })
            .collect();
        let place = if several_nodes && !down.is_empty() {
            let names: Vec<&str> = down.iter().map(|h| h.as_str()).collect();
            format!(
                "; every worker on {} is silent: that node or its network is presumed down",
                names.join(", ")
            )
        } else if hosts.is_empty() {
            String::new()
        } else {
            format!(" (on {})", hosts.join(", "))
        };
        Some(format!(
            "{who} sent nothing for {:.0} s (--worker-timeout): presumed lost{place}",
            longest.as_secs_f64()
        ))
    }

    /// Checks deadlines: workers that went silent, a shutdown that takes too long.
    pub fn tick(&mut self, now: Instant) {
        let since_last_tick =
            now.saturating_duration_since(std::mem::replace(&mut self.last_tick, now));
        if since_last_tick > self.config.worker_timeout / 2 {
            // This process itself was not running (stopped, swapped out): the workers'
            // silence is ours, so give them a fresh window.
            debug!("no tick for {since_last_tick:?}; worker silence timers restart");
            for worker in &mut self.workers {
                worker.last_seen = worker.last_seen.max(now);
            }
        }
        let mut answers = Vec::new();
        self.coordination.tick(now, &mut answers);
        self.send_answers(answers);
        if self.is_running() {
            self.check_mpi_runs(now);
        }
        match &self.lifecycle {
            Lifecycle::Running => {
                if let Some(message) = self.silent_workers(now) {
                    self.abort(ExitCode::WorkerLost.code(), message);
                } else if let Some(warning) = self.check_stall(now) {
                    warn!("{warning}");
                }
            }
            Lifecycle::Stopping {
                deadline,
                waiting_for,
                ..
            } if now > *deadline => {
                let mut ranks: Vec<_> = waiting_for.iter().map(|r| r.0.to_string()).collect();
                ranks.sort();
                let message = format!(
                    "rank(s) {} did not finish shutting down within {:.1} s (--shutdown-timeout)",
                    ranks.join(", "),
                    self.config.shutdown_timeout.as_secs_f64()
                );
                self.abort(ExitCode::ShutdownTimeout.code(), message);
            }
            _ => {}
        }
    }

    /// Finishes the work the handled messages left (placing ready tasks, balancing load,
    /// batching releases) and moves the pending outputs into `out`. Call it after a batch of
    /// messages rather than after each one: placement then runs once per batch.
    pub fn drain_outbox(&mut self, out: &mut Vec<Output>) {
        if std::mem::take(&mut self.needs_schedule) {
            self.schedule();
            self.balance();
        }
        self.flush_releases();
        out.append(&mut self.outbox);
    }

    /// The exit code once the shutdown handshake completed.
    pub fn exit_code(&self) -> Option<i32> {
        match self.lifecycle {
            Lifecycle::Exited { code } => Some(code),
            _ => None,
        }
    }

    #[cfg(any(test, feature = "internals"))]
    /// Tasks the scheduler tracks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    #[cfg(test)]
    /// The state of a task, if it is known.
    pub fn task_state(&self, key: Key) -> Option<&TaskState> {
        self.tasks.get(&key).map(|t| &t.state)
    }

    #[cfg(test)]
    /// Keys placed on `worker` and not finished.
    pub fn processing_on(&self, worker: Rank) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .worker_index(worker)
            .map(|i| self.workers[i].processing.iter().copied().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Readable key, `name-number`.
    pub fn key_name(&self, key: Key) -> String {
        let name = self
            .tasks
            .get(&key)
            .and_then(|t| t.func)
            .map(|f| self.functions.name(f))
            .or_else(|| {
                self.tasks
                    .get(&key)
                    .filter(|t| t.scattered)
                    .map(|_| "scatter")
            })
            .unwrap_or("task");
        format!("{name}-{}", key.0)
    }

    fn worker_index(&self, rank: Rank) -> Option<usize> {
        match self.rank_index.get(rank.0 as usize) {
            Some(&i) if i != NOT_A_WORKER => Some(i as usize),
            _ => None,
        }
    }

    /// Queues the release of `key` on worker `rank` (sent by `drain_outbox`).
    fn release_on(&mut self, rank: Rank, key: Key) {
        let Some(index) = self.worker_index(rank) else {
            return;
        };
        if self.releases[index].is_empty() {
            self.releasing.push(index);
        }
        self.releases[index].push(key);
    }

    fn worker_mut(&mut self, rank: Rank) -> Option<&mut Worker> {
        let index = self.worker_index(rank)?;
        Some(&mut self.workers[index])
    }

    /// Records that worker `index` holds `key`, keeping the load index in order.
    fn start_processing(&mut self, index: usize, key: Key) {
        let worker = &mut self.workers[index];
        if worker.processing.insert(key) && worker.hello.is_some() {
            self.by_load.set(index, policy::load_key(worker));
        }
    }

    /// A task on `from` waits for other tasks, its thread given back (`waiting`), or goes
    /// on: the worker has one thread more, or one less, for the tasks placed there.
    fn on_seceded(
        &mut self,
        from: Rank,
        key: Key,
        attempt: crate::protocol::Attempt,
        waiting: bool,
    ) {
        if !self.is_current(key, from, attempt) {
            return;
        }
        let index = self
            .worker_index(from)
            .expect("a current task runs on a worker");
        let worker = &mut self.workers[index];
        let changed = if waiting {
            worker.seceded.insert(key)
        } else {
            worker.seceded.remove(&key)
        };
        if changed && worker.hello.is_some() {
            self.by_load.set(index, policy::load_key(worker));
            self.needs_schedule = true;
        }
    }

    /// Records that worker `rank` no longer holds `key`; `true` if it did.
    fn stop_processing(&mut self, rank: Rank, key: Key) -> bool {
        let Some(index) = self.worker_index(rank) else {
            return false;
        };
        let worker = &mut self.workers[index];
        worker.seceded.remove(&key);
        let removed = worker.processing.remove(&key);
        if removed && worker.hello.is_some() {
            self.by_load.set(index, policy::load_key(worker));
        }
        removed
    }

    /// Workers worth considering for a ready task: those allowed for a restricted task,
    /// else the holders of its inputs and the least loaded worker.
    fn candidates(&self, task: &Task) -> Vec<usize> {
        if !task.allowed_workers.is_empty() {
            return task
                .allowed_workers
                .iter()
                .filter_map(|r| self.worker_index(*r))
                .collect();
        }
        if !task.resources.is_empty() {
            return (0..self.workers.len()).collect();
        }
        let mut candidates: Vec<usize> = task
            .deps
            .iter()
            .filter_map(|dep| self.tasks.get(dep))
            .flat_map(|dep| match &dep.state {
                TaskState::Memory { who_has } => who_has.as_slice(),
                TaskState::Processing { worker, .. } => std::slice::from_ref(worker),
                _ => &[],
            })
            .filter_map(|r| self.worker_index(*r))
            .collect();
        if let Some((_, least)) = self.by_load.least() {
            candidates.push(least);
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    /// The configuration, for tests that change it after start.
    #[cfg(test)]
    pub(crate) fn config_mut(&mut self) -> &mut SchedulerConfig {
        &mut self.config
    }

    /// The node of worker `rank` (numbered in the order hosts first said hello).
    fn node_of(&self, rank: Rank) -> Option<u32> {
        self.worker_index(rank).map(|i| self.workers[i].node)
    }

    fn all_joined(&self) -> bool {
        self.joined == self.workers.len()
    }

    fn is_running(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Running)
    }

    fn abort(&mut self, code: i32, message: String) {
        if matches!(self.lifecycle, Lifecycle::Aborted) {
            return;
        }
        self.lifecycle = Lifecycle::Aborted;
        self.outbox.push(Output::Abort { code, message });
    }

    // ----- workers joining, info -----------------------------------------------------

    fn on_worker_hello(&mut self, from: Rank, hello: WorkerHello) {
        let Some(worker) = self.worker_mut(from) else {
            warn!("hello from {from}, which is not a worker rank; ignored");
            return;
        };
        if worker.hello.is_some() {
            warn!("second hello from worker {from}; ignored");
            return;
        }
        debug!(
            "worker {from} joined: {} threads on {} (pid {})",
            hello.nthreads, hello.host, hello.pid
        );
        let index = self.worker_index(from).expect("a worker rank");
        let node = match self.hosts.iter().position(|h| *h == hello.host) {
            Some(node) => node,
            None => {
                self.hosts.push(hello.host.clone());
                self.hosts.len() - 1
            }
        };
        let worker = &mut self.workers[index];
        worker.node = u32::try_from(node).unwrap_or(u32::MAX);
        worker.hello = Some(hello);
        self.by_load
            .set(index, policy::load_key(&self.workers[index]));
        self.joined += 1;
        if self.all_joined() {
            let threads: usize = self.workers.iter().map(Worker::nthreads).sum();
            info!(
                "all {} workers joined ({threads} threads)",
                self.workers.len()
            );
            for _ in 0..std::mem::take(&mut self.info_requests) {
                self.outbox.push(Output::Info(self.info()));
            }
            self.schedule();
        }
    }

    fn on_info_request(&mut self) {
        if self.all_joined() {
            self.outbox.push(Output::Info(self.info()));
        } else {
            self.info_requests += 1;
        }
    }

    /// Job-wide task counts.
    pub fn progress(&self) -> JobProgress {
        JobProgress {
            submitted: self.submitted,
            completed: self.completed,
            failed: self.failed,
            dropped: self.dropped,
        }
    }

    fn info(&self) -> SchedulerInfo {
        SchedulerInfo {
            workers: self
                .workers
                .iter()
                .filter_map(|w| {
                    w.hello.clone().map(|hello| WorkerInfo {
                        rank: w.rank,
                        hello,
                    })
                })
                .collect(),
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            tasks: self.tasks.len() as u64,
            tasks_completed: self.completed,
            received_bytes: 0,
        }
    }
}
