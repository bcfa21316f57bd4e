//! The scheduler's message handlers: each takes the current time, updates the state and
//! writes the messages to send into an outbox. Nothing here blocks or talks to MPI.

use super::policy;
use super::state::{Failure, LoadIndex, ReadyQueue, Task, TaskState, Worker};
use crate::exit::ExitCode;
use crate::keymap::KeyMap;
use crate::protocol::{
    Attempt, ComputeMsg, FunctionMsg, JobProgress, Key, Rank, SchedulerInfo, TaskCode, TaskSpec,
    ToClient, ToScheduler, ToWorker, WorkerHello, WorkerInfo,
};
use crate::task::FunctionTable;
use log::{debug, error, info, warn};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `SIGTERM` and the like, by number.
fn signal_name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGUSR1 => "SIGUSR1".into(),
        other => format!("signal {other}"),
    }
}

/// `Scheduler::rank_index` of a rank that is not a worker.
const NOT_A_WORKER: u32 = u32::MAX;

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
    /// Tasks ended by a failure or cancellation (their own or a dependency's).
    failed: u64,
    /// Tasks forgotten before they finished (the client released them).
    dropped: u64,
    mean_task_seconds: Option<f64>,
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
}

impl Scheduler {
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
            failed: 0,
            dropped: 0,
            mean_task_seconds: None,
            joined: 0,
            info_requests: 0,
            needs_schedule: false,
            lifecycle: Lifecycle::Running,
        }
    }

    /// Which ranks may send `message`: the client, the workers, or any rank.
    fn sender_allowed(&self, from: Rank, message: &ToScheduler) -> bool {
        match message {
            ToScheduler::RegisterFunction(_)
            | ToScheduler::Submit(_)
            | ToScheduler::Scatter { .. }
            | ToScheduler::ReleaseKeys(_)
            | ToScheduler::CancelKeys(_)
            | ToScheduler::InfoRequest
            | ToScheduler::ProgressRequest
            | ToScheduler::ClientDone { .. } => from == Rank::CLIENT,
            ToScheduler::WorkerHello(_)
            | ToScheduler::TaskFinished { .. }
            | ToScheduler::TaskFailed { .. }
            | ToScheduler::StealReply { .. }
            | ToScheduler::AddReplicas(_)
            | ToScheduler::Replicated { .. } => self.worker_index(from).is_some(),
            ToScheduler::Trace(_)
            | ToScheduler::Heartbeat
            | ToScheduler::Quiesced
            | ToScheduler::Signal { .. }
            | ToScheduler::Fatal { .. } => true,
        }
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
            ToScheduler::Scatter { key, worker } => self.on_scatter(key, worker),
            ToScheduler::ReleaseKeys(keys) => self.on_release(&keys),
            ToScheduler::CancelKeys(keys) => self.on_cancel(&keys),
            ToScheduler::InfoRequest => self.on_info_request(),
            ToScheduler::TaskFinished {
                key,
                attempt,
                nbytes,
                duration_us,
            } => self.on_task_finished(from, key, attempt, nbytes, duration_us),
            ToScheduler::TaskFailed {
                key,
                attempt,
                message,
            } => self.on_task_failed(from, key, attempt, message),
            ToScheduler::StealReply {
                key,
                attempt,
                stolen,
            } => self.on_steal_reply(from, key, attempt, stolen),
            ToScheduler::AddReplicas(keys) => self.on_add_replicas(from, &keys),
            ToScheduler::Replicated { key, workers } => self.on_replicated(key, workers),
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
        match &self.lifecycle {
            Lifecycle::Running => {
                let timeout = self.config.worker_timeout;
                let silent = self
                    .workers
                    .iter()
                    .find(|w| now.saturating_duration_since(w.last_seen) > timeout);
                if let Some(worker) = silent {
                    let message = format!(
                        "worker {} sent nothing for {:.0} s (--worker-timeout): presumed lost",
                        worker.rank,
                        now.saturating_duration_since(worker.last_seen)
                            .as_secs_f64()
                    );
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

    /// Records that worker `rank` no longer holds `key`; `true` if it did.
    fn stop_processing(&mut self, rank: Rank, key: Key) -> bool {
        let Some(index) = self.worker_index(rank) else {
            return false;
        };
        let worker = &mut self.workers[index];
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
        worker.hello = Some(hello);
        let index = self.worker_index(from).expect("a worker rank");
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
        }
    }

    // ----- new work ---------------------------------------------------------------------

    /// The client registers a function: checked, then forwarded to every worker before
    /// any task that uses it.
    fn on_register_function(&mut self, from: Rank, registration: FunctionMsg) {
        if let Err(problem) = self.functions.register(registration.clone()) {
            self.protocol_error(from, problem);
            return;
        }
        for rank in self.config.workers.clone() {
            self.outbox.push(Output::Worker(
                rank,
                ToWorker::RegisterFunction(registration.clone()),
            ));
        }
    }

    fn on_submit(&mut self, from: Rank, specs: Vec<TaskSpec>) {
        if !self.is_running() {
            return;
        }
        for spec in &specs {
            let named = std::iter::once(spec.func).chain(spec.uses.iter().copied());
            if let Some(unknown) = self.functions.first_unknown(named) {
                self.protocol_error(
                    from,
                    format!(
                        "task {} calling {unknown}, which was never registered",
                        spec.key
                    ),
                );
                return;
            }
        }
        let mut waiting = Vec::new();
        for spec in specs {
            if let Some(key) = self.add_task(spec) {
                waiting.push(key);
            }
        }
        self.schedule();
        // Tasks whose inputs are all being computed on one worker join them there, so a
        // chain submitted in one batch is placed whole.
        for key in waiting {
            if matches!(
                self.tasks.get(&key).map(|t| &t.state),
                Some(TaskState::Waiting)
            ) {
                self.try_place_with_running_deps(key);
            }
        }
    }

    /// Adds a task; returns its key if it waits for dependencies.
    fn add_task(&mut self, spec: TaskSpec) -> Option<Key> {
        let key = spec.key;
        if self.tasks.contains_key(&key) {
            error!("key {key} submitted twice; the second submission is ignored");
            return None;
        }
        let mut deps: Vec<Key> = spec.dependencies().collect();
        deps.sort_unstable();
        deps.dedup();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.submitted += 1;
        let code = TaskCode {
            func: spec.func,
            uses: spec.uses,
            args: spec.args,
        };
        let mut task = Task::new(code, spec.options, deps, seq);
        let mut inherited: Option<Arc<Failure>> = None;
        for dep in task.deps.clone() {
            match self.tasks.get_mut(&dep) {
                Some(dep_task) => {
                    dep_task.dependents.push(key);
                    dep_task.unfinished_dependents += 1;
                    match &dep_task.state {
                        TaskState::Memory { .. } => {}
                        TaskState::Failed(failure) => inherited = Some(failure.clone()),
                        _ => task.waiting_on += 1,
                    }
                }
                None => {
                    inherited = Some(Arc::new(Failure {
                        cause: format!("task-{}", dep.0),
                        message: "this dependency was released before the task using it \
                                  was submitted (keep its future alive)"
                            .into(),
                        cancelled: false,
                    }));
                }
            }
        }
        // Dependencies that do not exist were not linked; do not count them.
        task.deps.retain(|d| self.tasks.contains_key(d));
        self.tasks.insert(key, task);
        if let Some(failure) = inherited {
            self.fail(key, failure);
            None
        } else if self.tasks[&key].waiting_on == 0 {
            self.make_ready(key);
            None
        } else {
            Some(key)
        }
    }

    fn on_scatter(&mut self, key: Key, worker: Rank) {
        if self.tasks.contains_key(&key) || self.worker_index(worker).is_none() {
            error!("invalid scatter of {key} to {worker}; ignored");
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tasks.insert(key, Task::scattered(worker, seq));
        // The worker's report may have overtaken the client's announcement (two senders).
        if let Some(early) = self.early_scatters.remove(&key) {
            self.on_task_finished(early.from, key, 0, early.nbytes, 0);
            if !early.replicas.is_empty() {
                self.on_replicated(key, early.replicas);
            }
        }
    }

    /// A broadcast reached `workers`: they hold `key` from now on.
    fn on_replicated(&mut self, key: Key, workers: Vec<Rank>) {
        if let Some(early) = self.early_scatters.get_mut(&key) {
            early.replicas.extend(workers);
            return;
        }
        for worker in workers {
            self.on_add_replicas(worker, &[key]);
        }
    }

    fn make_ready(&mut self, key: Key) {
        let task = self.tasks.get_mut(&key).expect("task exists");
        task.state = TaskState::Ready;
        self.ready.push(task, key);
    }

    /// Places a waiting task right away on the worker that computes all of its missing
    /// dependencies, so chains run there without a round trip to the scheduler per link.
    fn try_place_with_running_deps(&mut self, key: Key) {
        if let Some(rank) = self.worker_for_running_deps(key) {
            self.assign(key, rank);
        }
    }

    /// The worker computing every missing input of the waiting task `key`, if there is one
    /// such worker, it may run the task and it has a free slot.
    fn worker_for_running_deps(&self, key: Key) -> Option<Rank> {
        if !self.all_joined() || !self.is_running() {
            return None;
        }
        let task = &self.tasks[&key];
        let mut target: Option<Rank> = None;
        for dep in &task.deps {
            match &self.tasks[dep].state {
                TaskState::Memory { .. } => {}
                TaskState::Processing {
                    worker,
                    stealing: false,
                } if target.is_none_or(|t| t == *worker) => target = Some(*worker),
                _ => return None,
            }
        }
        let rank = target?;
        let worker = &self.workers[self.worker_index(rank)?];
        let depth = policy::queue_depth(self.mean_task_seconds);
        (policy::is_eligible(task, worker)
            && worker.processing.len() < policy::slots(worker, depth))
        .then_some(rank)
    }

    /// Places ready tasks while workers have free slots. A restricted task no worker can ever
    /// run fails with a message naming what it asked for and what the workers offer.
    fn schedule(&mut self) {
        if !self.all_joined() || !self.is_running() {
            return;
        }
        let mut skipped = Vec::new();
        let mut unschedulable = Vec::new();
        while let Some(key) = self.ready.pop(&self.tasks) {
            let task = &self.tasks[&key];
            let choice = if task.deps.is_empty() && !task.is_restricted() {
                // Nothing to be near: the least loaded worker, if it has room.
                self.by_load
                    .least()
                    .map(|(_, i)| &self.workers[i])
                    .filter(|w| {
                        w.processing.len()
                            < policy::slots(w, policy::queue_depth(self.mean_task_seconds))
                    })
            } else {
                let candidates = self.candidates(task);
                policy::choose_worker(
                    task,
                    candidates.iter().map(|&i| &self.workers[i]),
                    &self.tasks,
                    self.mean_task_seconds,
                )
            };
            match choice {
                Some(worker) => {
                    let rank = worker.rank;
                    self.assign(key, rank);
                }
                None if task.is_restricted()
                    && !self.workers.iter().any(|w| policy::is_eligible(task, w)) =>
                {
                    unschedulable.push(key);
                }
                None => {
                    skipped.push(key);
                    if !task.is_restricted() || !self.any_free_slot() {
                        break;
                    }
                }
            }
        }
        for key in skipped {
            self.ready.push(&self.tasks[&key], key);
        }
        for key in unschedulable {
            // Still in the ready state: queue it again so `fail` counts it out.
            self.ready.push(&self.tasks[&key], key);
            let failure = Arc::new(Failure {
                cause: self.key_name(key),
                message: self.unschedulable_reason(key),
                cancelled: false,
            });
            self.fail(key, failure);
        }
    }

    fn any_free_slot(&self) -> bool {
        let depth = policy::queue_depth(self.mean_task_seconds);
        // The least loaded worker has a free slot if any has: slots grow with threads.
        self.by_load.least().is_some_and(|(_, i)| {
            let w = &self.workers[i];
            w.processing.len() < policy::slots(w, depth)
        })
    }

    fn unschedulable_reason(&self, key: Key) -> String {
        let task = &self.tasks[&key];
        let ranks: Vec<String> = self.workers.iter().map(|w| w.rank.0.to_string()).collect();
        let mut parts = Vec::new();
        if !task.allowed_workers.is_empty() {
            let wanted: Vec<String> = task
                .allowed_workers
                .iter()
                .map(|r| r.0.to_string())
                .collect();
            parts.push(format!(
                "it is pinned to worker rank(s) {}",
                wanted.join(", ")
            ));
        }
        for resource in &task.resources {
            parts.push(format!("it needs {}={}", resource.name, resource.amount));
        }
        let advertised: Vec<String> = self
            .workers
            .iter()
            .filter_map(|w| w.hello.as_ref().map(|h| (w.rank, h)))
            .flat_map(|(rank, h)| {
                h.resources
                    .iter()
                    .map(move |r| format!("{}={} on rank {}", r.name, r.amount, rank.0))
            })
            .collect();
        format!(
            "no worker can run it: {}; the workers are ranks {} and advertise {} \
             (start workers with --resources / MPIDASK_RESOURCES, or change the task options)",
            parts.join(" and "),
            ranks.join(", "),
            if advertised.is_empty() {
                "no resources".to_string()
            } else {
                advertised.join(", ")
            }
        )
    }

    fn assign(&mut self, key: Key, rank: Rank) {
        self.assign_one(key, rank);
        self.place_waiting_dependents(key);
    }

    /// Places one task on `rank` and sends it there.
    fn assign_one(&mut self, key: Key, rank: Rank) {
        let index = self.worker_index(rank).expect("worker exists");
        let task = self.tasks.get_mut(&key).expect("task exists");
        task.attempt += 1;
        task.state = TaskState::Processing {
            worker: rank,
            stealing: false,
        };
        let code = task
            .code
            .clone()
            .expect("an unfinished task keeps its code");
        let (attempt, priority, resources) = (task.attempt, task.priority, task.resources.clone());
        let dep_keys = task.deps.clone();
        let deps = dep_keys
            .into_iter()
            .map(|dep| (dep, self.source_of(dep, rank)))
            .collect();
        self.start_processing(index, key);
        debug!("{} -> {rank}", self.key_name(key));
        self.outbox.push(Output::Worker(
            rank,
            ToWorker::Compute(ComputeMsg {
                key,
                attempt,
                code,
                deps,
                priority,
                resources,
            }),
        ));
    }

    /// After `key` was placed, its waiting dependents may now have all missing inputs
    /// computing on one worker: place them there too, and so on down a chain.
    fn place_waiting_dependents(&mut self, key: Key) {
        let mut candidates: Vec<Key> = self.tasks[&key].dependents.clone();
        while let Some(dependent) = candidates.pop() {
            let Some(task) = self.tasks.get(&dependent) else {
                continue;
            };
            if !matches!(task.state, TaskState::Waiting) {
                continue;
            }
            // `assign` would recurse into this function; place without it and continue the
            // walk here instead.
            if let Some(rank) = self.worker_for_running_deps(dependent) {
                self.assign_one(dependent, rank);
                candidates.extend(self.tasks[&dependent].dependents.iter().copied());
            }
        }
    }

    /// Where the worker `to` gets dependency `dep`: itself if it holds or computes it, else
    /// the holder with the least work.
    fn source_of(&self, dep: Key, to: Rank) -> Rank {
        match &self.tasks[&dep].state {
            TaskState::Memory { who_has } if !who_has.contains(&to) => *who_has
                .iter()
                .min_by_key(|r| {
                    self.worker_index(**r)
                        .map_or(usize::MAX, |i| self.workers[i].processing.len())
                })
                .expect("a value in memory has a holder"),
            TaskState::Processing { worker, .. } => *worker,
            _ => to,
        }
    }

    // ----- results ----------------------------------------------------------------------

    /// The task is processing on `from` under `attempt`; a reply that fails this check is
    /// about an older placement and is dropped.
    fn is_current(&self, key: Key, from: Rank, attempt: Attempt) -> bool {
        self.tasks.get(&key).is_some_and(|task| {
            task.attempt == attempt
                && matches!(task.state, TaskState::Processing { worker, .. } if worker == from)
        })
    }

    fn on_task_finished(
        &mut self,
        from: Rank,
        key: Key,
        attempt: Attempt,
        nbytes: u64,
        duration_us: u64,
    ) {
        if attempt == 0 && !self.tasks.contains_key(&key) && self.is_running() {
            // A scattered value stored before the client's `Scatter` arrived here.
            self.early_scatters.insert(
                key,
                EarlyScatter {
                    from,
                    nbytes,
                    replicas: Vec::new(),
                },
            );
            return;
        }
        if !self.is_current(key, from, attempt) {
            let holds = matches!(
                self.tasks.get(&key).map(|t| &t.state),
                Some(TaskState::Memory { who_has }) if who_has.contains(&from)
            );
            if !holds {
                debug!("stale result of {key} from {from} (attempt {attempt}); released");
                self.release_on(from, key);
            }
            return;
        }
        self.stop_processing(from, key);
        if let Some(worker) = self.worker_mut(from) {
            worker.nbytes += nbytes;
        }
        let task = self.tasks.get_mut(&key).expect("current task exists");
        task.state = TaskState::Memory {
            who_has: smallvec::smallvec![from],
        };
        task.nbytes = nbytes;
        task.code = None;
        let scattered = task.scattered;
        let client_wants = task.client_wants;
        let deps = task.deps.clone();
        let dependents = task.dependents.clone();
        if !scattered {
            self.completed += 1;
            let seconds = duration_us as f64 * 1e-6;
            self.mean_task_seconds = Some(match self.mean_task_seconds {
                None => seconds,
                Some(mean) => 0.9 * mean + 0.1 * seconds,
            });
        }
        if client_wants {
            self.outbox
                .push(Output::Client(ToClient::KeyDone { key, worker: from }));
        }
        for dependent in dependents {
            let Some(d) = self.tasks.get_mut(&dependent) else {
                continue;
            };
            if d.state.is_final() {
                continue;
            }
            d.waiting_on -= 1;
            if d.waiting_on == 0 {
                if matches!(d.state, TaskState::Waiting) {
                    self.make_ready(dependent);
                }
            } else if matches!(d.state, TaskState::Waiting) {
                self.try_place_with_running_deps(dependent);
            }
        }
        for dep in deps {
            self.dependent_finished(dep);
        }
        self.maybe_forget(key);
        self.needs_schedule = true;
    }

    fn on_task_failed(&mut self, from: Rank, key: Key, attempt: Attempt, message: String) {
        if !self.is_current(key, from, attempt) {
            debug!("stale failure of {key} from {from} (attempt {attempt}); ignored");
            return;
        }
        self.stop_processing(from, key);
        let name = self.key_name(key);
        let task = self.tasks.get_mut(&key).expect("current task exists");
        if task.retries_left > 0 {
            task.retries_left -= 1;
            warn!(
                "task {name} failed on {from}: {message}; retrying ({} retries left)",
                task.retries_left
            );
            self.revoke_running_dependents(key);
            self.make_ready(key);
        } else {
            debug!("task {name} failed on {from}: {message}");
            let failure = Arc::new(Failure {
                cause: name,
                message,
                cancelled: false,
            });
            self.fail(key, failure);
        }
        self.needs_schedule = true;
    }

    /// Takes back dependents placed on a worker to wait there for `key`, which will now be
    /// computed again (possibly elsewhere).
    fn revoke_running_dependents(&mut self, key: Key) {
        for dependent in self.tasks[&key].dependents.clone() {
            if let Some(TaskState::Processing { worker, .. }) =
                self.tasks.get(&dependent).map(|t| t.state.clone())
            {
                self.unplace(dependent, worker);
                self.tasks.get_mut(&dependent).expect("exists").state = TaskState::Waiting;
            }
        }
    }

    /// Removes a processing task from its worker and tells the worker to drop it (unless the
    /// worker already let go of it, as after a failure).
    fn unplace(&mut self, key: Key, worker: Rank) {
        let attempt = self.tasks[&key].attempt;
        let was_there = self.stop_processing(worker, key);
        if was_there {
            self.outbox.push(Output::Worker(
                worker,
                ToWorker::CancelTask { key, attempt },
            ));
        }
    }

    /// Ends `key` and every task that depends on it, transitively, with `failure`.
    fn fail(&mut self, key: Key, failure: Arc<Failure>) {
        let mut stack = vec![key];
        let mut finished = Vec::new();
        while let Some(k) = stack.pop() {
            let Some(task) = self.tasks.get(&k) else {
                continue;
            };
            match task.state.clone() {
                TaskState::Memory { .. } | TaskState::Failed(_) => continue,
                TaskState::Ready => self.ready.forget(),
                TaskState::Processing { worker, .. } => self.unplace(k, worker),
                TaskState::Waiting => {}
            }
            let task = self.tasks.get_mut(&k).expect("exists");
            if !task.scattered {
                self.failed += 1;
            }
            task.state = TaskState::Failed(failure.clone());
            task.code = None;
            if task.client_wants {
                let message = if failure.cancelled {
                    ToClient::KeyCancelled {
                        key: k,
                        cause: failure.cause.clone(),
                    }
                } else {
                    ToClient::KeyErred {
                        key: k,
                        cause: failure.cause.clone(),
                        message: failure.message.clone(),
                    }
                };
                self.outbox.push(Output::Client(message));
            }
            stack.extend(task.dependents.iter().copied());
            finished.push(k);
        }
        // Collect first: releasing a dependency below may forget tasks listed in `finished`.
        let deps: Vec<Key> = finished
            .iter()
            .flat_map(|k| self.tasks[k].deps.clone())
            .collect();
        for dep in deps {
            self.dependent_finished(dep);
        }
        for k in finished {
            self.maybe_forget(k);
        }
    }

    fn dependent_finished(&mut self, key: Key) {
        if let Some(task) = self.tasks.get_mut(&key) {
            task.unfinished_dependents -= 1;
            self.maybe_forget(key);
        }
    }

    /// Drops a task nobody needs any more: the client released it and no unfinished task
    /// reads it. Its value is freed on the workers; an unfinished task is cancelled.
    fn maybe_forget(&mut self, key: Key) {
        let Some(task) = self.tasks.get(&key) else {
            return;
        };
        if task.client_wants || task.unfinished_dependents > 0 {
            return;
        }
        let task = self.tasks.remove(&key).expect("exists");
        match &task.state {
            TaskState::Memory { who_has } => {
                for rank in who_has {
                    if let Some(w) = self.worker_mut(*rank) {
                        w.nbytes = w.nbytes.saturating_sub(task.nbytes);
                    }
                    self.release_on(*rank, key);
                }
            }
            TaskState::Failed(_) => {}
            TaskState::Ready => self.ready.forget(),
            TaskState::Waiting => {}
            TaskState::Processing { worker, .. } => {
                self.stop_processing(*worker, key);
                let message = if task.scattered {
                    // The value may already be on its way: free it once stored.
                    ToWorker::ReleaseKeys(vec![key])
                } else {
                    ToWorker::CancelTask {
                        key,
                        attempt: task.attempt,
                    }
                };
                self.outbox.push(Output::Worker(*worker, message));
            }
        }
        if !task.state.is_final() {
            debug!("task {key} released before it finished; cancelled");
            if !task.scattered {
                self.dropped += 1;
            }
            for dep in &task.deps {
                self.dependent_finished(*dep);
            }
        }
    }

    fn flush_releases(&mut self) {
        for index in std::mem::take(&mut self.releasing) {
            let keys = std::mem::take(&mut self.releases[index]);
            self.outbox.push(Output::Worker(
                self.workers[index].rank,
                ToWorker::ReleaseKeys(keys),
            ));
        }
    }

    fn on_add_replicas(&mut self, from: Rank, keys: &[Key]) {
        for key in keys {
            let nbytes = match self.tasks.get_mut(key) {
                Some(Task {
                    state: TaskState::Memory { who_has },
                    nbytes,
                    ..
                }) => {
                    if who_has.contains(&from) {
                        continue;
                    }
                    who_has.push(from);
                    *nbytes
                }
                _ => {
                    self.release_on(from, *key);
                    continue;
                }
            };
            if let Some(w) = self.worker_mut(from) {
                w.nbytes += nbytes;
            }
        }
    }

    // ----- client requests --------------------------------------------------------------

    fn on_release(&mut self, keys: &[Key]) {
        for key in keys {
            if let Some(task) = self.tasks.get_mut(key) {
                task.client_wants = false;
                self.maybe_forget(*key);
            }
        }
        self.needs_schedule = true;
    }

    fn on_cancel(&mut self, keys: &[Key]) {
        for key in keys {
            if self.tasks.get(key).is_some_and(|t| !t.state.is_final()) {
                let failure = Arc::new(Failure {
                    cause: self.key_name(*key),
                    message: String::new(),
                    cancelled: true,
                });
                self.fail(*key, failure);
            }
        }
        self.needs_schedule = true;
    }

    // ----- work stealing ----------------------------------------------------------------

    /// When a worker has an idle thread and nothing is waiting for a slot, asks the most
    /// loaded workers to give up queued tasks (not running ones: a worker only gives up a
    /// task it has not started) so they can be placed again.
    fn balance(&mut self) {
        if !self.all_joined() || !self.is_running() || !self.ready.is_empty() {
            return;
        }
        let idle: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].processing.len() < self.workers[i].nthreads())
            .collect();
        if idle.is_empty() {
            return;
        }
        let mut free_threads: usize = idle
            .iter()
            .map(|&i| self.workers[i].nthreads() - self.workers[i].processing.len())
            .sum();
        let mut victims: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].processing.len() > self.workers[i].nthreads())
            .collect();
        victims.sort_by_key(|&i| {
            Reverse(self.workers[i].processing.len() - self.workers[i].nthreads())
        });
        let mean = self
            .mean_task_seconds
            .unwrap_or(policy::DEFAULT_TASK_SECONDS);
        for v in victims {
            if free_threads == 0 {
                break;
            }
            let victim = &self.workers[v];
            let queued = victim.processing.len() - victim.nthreads();
            // Moving work that takes less than a couple of round trips is not worth it.
            if queued as f64 * mean < 0.002 {
                continue;
            }
            let want = free_threads.min(queued.div_ceil(2));
            let candidates: Vec<Key> = victim
                .processing
                .iter()
                .copied()
                .filter(|k| self.is_stealable(*k, &idle))
                .take(want)
                .collect();
            let rank = victim.rank;
            for key in candidates {
                let task = self.tasks.get_mut(&key).expect("processing task exists");
                if let TaskState::Processing { stealing, .. } = &mut task.state {
                    *stealing = true;
                }
                let attempt = task.attempt;
                self.outbox
                    .push(Output::Worker(rank, ToWorker::Steal { key, attempt }));
                free_threads -= 1;
            }
        }
    }

    fn is_stealable(&self, key: Key, thieves: &[usize]) -> bool {
        let task = &self.tasks[&key];
        matches!(
            task.state,
            TaskState::Processing {
                stealing: false,
                ..
            }
        ) && task.waiting_on == 0
            && !task.scattered
            && !task.dependents.iter().any(|d| {
                matches!(
                    self.tasks.get(d).map(|t| &t.state),
                    Some(TaskState::Processing { .. })
                )
            })
            && thieves
                .iter()
                .any(|&i| policy::is_eligible(task, &self.workers[i]))
    }

    fn on_steal_reply(&mut self, from: Rank, key: Key, attempt: Attempt, stolen: bool) {
        if !self.is_current(key, from, attempt) {
            return;
        }
        if stolen {
            self.stop_processing(from, key);
            debug!("{} stolen from {from}", self.key_name(key));
            self.make_ready(key);
            self.needs_schedule = true;
        } else if let Some(task) = self.tasks.get_mut(&key)
            && let TaskState::Processing { stealing, .. } = &mut task.state
        {
            *stealing = false;
        }
    }

    // ----- shutdown ---------------------------------------------------------------------

    fn on_client_done(&mut self, code: i32, now: Instant) {
        if !self.is_running() {
            return;
        }
        info!(
            "client finished (exit code {code}) after {} tasks; shutting down",
            self.completed
        );
        self.start_shutdown(code, now);
    }

    /// A stop signal reached a rank: name what was running, then shut the job down.
    fn on_signal(&mut self, signal: i32, from: Rank, now: Instant) {
        if !self.is_running() {
            return;
        }
        let running = self.tasks_on_workers();
        error!(
            "stopping: {from} received {} (walltime, scancel, Ctrl-C, or the launcher ending \
             the job after a rank failed); {} tasks done; {}",
            signal_name(signal),
            self.completed,
            if running.is_empty() {
                "no task was running".to_string()
            } else {
                format!("tasks placed on workers: {}", running.join("; "))
            }
        );
        self.start_shutdown(ExitCode::Signal.code(), now);
    }

    /// `rank 2: a-1, b-2; rank 3: c-3`: the tasks placed on each worker (five at most each).
    fn tasks_on_workers(&self) -> Vec<String> {
        let mut listing = Vec::new();
        for worker in &self.workers {
            let mut keys: Vec<Key> = worker.processing.iter().copied().collect();
            keys.sort();
            if !keys.is_empty() {
                listing.push(format!("{}: {}", worker.rank, self.some_names(&keys, 5)));
            }
        }
        listing
    }

    /// The names of the first `limit` keys, then how many more there are.
    fn some_names(&self, keys: &[Key], limit: usize) -> String {
        let names: Vec<String> = keys.iter().take(limit).map(|k| self.key_name(*k)).collect();
        match keys.len().saturating_sub(limit) {
            0 => names.join(", "),
            more => format!("{} and {more} more", names.join(", ")),
        }
    }

    /// The stall warning, due (again every `stall_warning`) while tasks are pending but none
    /// finished for `stall_warning`: it names what the pending tasks wait for.
    pub(crate) fn check_stall(&mut self, now: Instant) -> Option<String> {
        let quiet_for = now.saturating_duration_since(self.last_progress);
        if quiet_for < self.config.stall_warning || now < self.next_stall_warning {
            return None;
        }
        self.next_stall_warning = now + self.config.stall_warning;
        let mut waiting: Vec<Key> = Vec::new();
        let mut ready: Vec<Key> = Vec::new();
        let mut placed = 0usize;
        for (key, task) in self.tasks.iter() {
            match task.state {
                TaskState::Waiting => waiting.push(key),
                TaskState::Ready => ready.push(key),
                TaskState::Processing { .. } => placed += 1,
                _ => {}
            }
        }
        if waiting.is_empty() && ready.is_empty() && placed == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if placed > 0 {
            parts.push(format!(
                "{placed} placed on workers (running or queued there): {}",
                self.tasks_on_workers().join("; ")
            ));
        }
        if !ready.is_empty() {
            ready.sort();
            parts.push(format!(
                "{} ready but not placed (no worker has room or the resources they ask for): {}",
                ready.len(),
                self.some_names(&ready, 5)
            ));
        }
        if let Some(&first) = waiting.iter().min() {
            let missing: Vec<Key> = self.tasks.get(&first).map_or_else(Vec::new, |task| {
                task.deps
                    .iter()
                    .copied()
                    .filter(|d| {
                        !matches!(
                            self.tasks.get(d).map(|t| &t.state),
                            Some(TaskState::Memory { .. })
                        )
                    })
                    .collect()
            });
            parts.push(format!(
                "{} waiting for inputs (e.g. {} waits for {})",
                waiting.len(),
                self.key_name(first),
                self.some_names(&missing, 3)
            ));
        }
        Some(format!(
            "no task finished in the last {:.0} s (--stall-warning) while {} tasks are pending: {}",
            quiet_for.as_secs_f64(),
            placed + ready.len() + waiting.len(),
            parts.join("; ")
        ))
    }

    fn start_shutdown(&mut self, code: i32, now: Instant) {
        let mut waiting_for: FxHashSet<Rank> = self.workers.iter().map(|w| w.rank).collect();
        waiting_for.insert(Rank::CLIENT);
        for worker in &self.workers {
            self.outbox
                .push(Output::Worker(worker.rank, ToWorker::Stop));
        }
        self.outbox.push(Output::Client(ToClient::Stop));
        self.lifecycle = Lifecycle::Stopping {
            code,
            deadline: now + self.config.shutdown_timeout,
            waiting_for,
        };
    }

    fn on_quiesced(&mut self, from: Rank) {
        let Lifecycle::Stopping {
            code, waiting_for, ..
        } = &mut self.lifecycle
        else {
            warn!("{from} quiesced outside shutdown; ignored");
            return;
        };
        waiting_for.remove(&from);
        if waiting_for.is_empty() {
            let code = *code;
            for worker in &self.workers {
                self.outbox
                    .push(Output::Worker(worker.rank, ToWorker::Exit { code }));
            }
            self.outbox.push(Output::Client(ToClient::Exit { code }));
            self.lifecycle = Lifecycle::Exited { code };
        }
    }

    // ----- invariants -------------------------------------------------------------------

    #[cfg(test)]
    /// Checks the bookkeeping for consistency; panics with a description when it is broken.
    /// Tests call it after every step.
    pub fn check_invariants(&self) {
        for (key, task) in self.tasks.iter() {
            let key = &key;
            let waiting = task
                .deps
                .iter()
                .filter(|d| {
                    !matches!(
                        self.tasks.get(d).map(|t| &t.state),
                        Some(TaskState::Memory { .. })
                    )
                })
                .count() as u32;
            if !task.state.is_final() {
                assert_eq!(task.waiting_on, waiting, "waiting_on of {key}");
                for dep in &task.deps {
                    let dep_task = self
                        .tasks
                        .get(dep)
                        .unwrap_or_else(|| panic!("{key} depends on {dep}, which was forgotten"));
                    assert!(dep_task.dependents.contains(key), "{dep} lists {key}");
                }
            }
            let unfinished = task
                .dependents
                .iter()
                .filter(|d| self.tasks.get(d).is_some_and(|t| !t.state.is_final()))
                .count() as u32;
            assert_eq!(
                task.unfinished_dependents, unfinished,
                "unfinished_dependents of {key}"
            );
            assert!(
                task.client_wants || task.unfinished_dependents > 0,
                "{key} should have been forgotten"
            );
            if matches!(task.state, TaskState::Ready) {
                assert!(self.ready.contains(*key), "{key} is ready but not queued");
            }
            match &task.state {
                TaskState::Ready => assert_eq!(task.waiting_on, 0, "{key} ready but waiting"),
                TaskState::Processing { worker, .. } => {
                    let w = &self.workers[self.worker_index(*worker).expect("worker")];
                    assert_eq!(
                        w.processing.contains(key),
                        !task.scattered,
                        "{key} processing on {worker}"
                    );
                }
                TaskState::Memory { who_has } => {
                    assert!(!who_has.is_empty(), "{key} has no holder")
                }
                _ => {}
            }
        }
        let ready = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Ready))
            .count();
        assert_eq!(self.ready.len(), ready, "ready count");
        for (i, w) in self.workers.iter().enumerate() {
            let expected = w.hello.is_some().then(|| policy::load_key(w));
            assert_eq!(self.by_load.load(i), expected, "load index of {}", w.rank);
        }
        assert!(self.by_load.is_consistent(), "load index");
        for worker in &self.workers {
            for key in &worker.processing {
                assert!(
                    matches!(
                        self.tasks.get(key).map(|t| &t.state),
                        Some(TaskState::Processing { worker: w, .. }) if *w == worker.rank
                    ),
                    "{} lists {key} as processing",
                    worker.rank
                );
            }
        }
    }
}
