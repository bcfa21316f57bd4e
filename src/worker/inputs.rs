//! How a placed task gets its inputs: values held here are taken as they are, values held
//! by other ranks are fetched (`GetData`), values spilled to disk are read back by the I/O
//! thread; the task goes to the executor once every input is in memory. Values this worker
//! serves to other ranks may need a read back too.

use super::disk::{DiskDone, Urgency};
use super::executor::ReadyTask;
use super::store::{Lookup, ReadBack};
use super::{Phase, WorkerNode, WorkerTask};
use crate::node::NodeStatus;
use crate::protocol::{
    ArgSlot, Attempt, ComputeMsg, Key, Payload, Rank, ToClient, ToScheduler, ToWorker,
};
use crate::transport::Outbox;
use log::debug;

/// The inputs of a task some of whose inputs are being read back from disk.
pub(super) struct Gathered {
    /// One per dependency occurrence, in slot order; `None` while on disk.
    inputs: Vec<Option<Payload>>,
    /// Distinct inputs still being read back.
    reading: usize,
}

/// Who waits for a value being read back from disk.
#[derive(Default)]
pub(super) struct DiskWaiters {
    /// Tasks that need it, with the attempt that does (see `WorkerNode::waiters`).
    tasks: Vec<(Key, Attempt)>,
    /// Ranks that asked for it.
    ranks: Vec<Requester>,
}

/// A rank asking for a value: for its tasks' inputs (a worker), for its program (the
/// client), or for the task client of its tasks (a worker, possibly this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Requester {
    pub rank: Rank,
    pub for_client: bool,
}

impl WorkerNode {
    pub(super) fn on_compute(&mut self, from: Rank, msg: ComputeMsg, out: &mut Outbox) {
        let key = msg.key;
        if let Some(unknown) = self.functions.first_unknown(msg.code.functions()) {
            self.protocol_error(
                from,
                format!("task {key} calling {unknown}, which was never registered"),
            );
            return;
        }
        if let Some(problem) = self.mpi_group_problem(&msg.group) {
            self.protocol_error(from, format!("MPI task {key} {problem}"));
            return;
        }
        if let Some(stranger) = msg
            .consume
            .iter()
            .find(|k| !msg.deps.iter().any(|(d, _)| d == *k))
        {
            self.protocol_error(
                from,
                format!("task {key} would take {stranger}, which is not among its inputs"),
            );
            return;
        }
        let mut missing = 0;
        for (dep, source) in &msg.deps {
            if self.store.contains_key(dep) {
                continue;
            }
            missing += 1;
            self.waiters
                .entry(*dep)
                .or_default()
                .push((key, msg.attempt));
            // A value on its way by broadcast is not also fetched.
            if *source != self.rank && !self.broadcasting.contains_key(dep) {
                self.request_value(*dep, *source, out);
            }
        }
        self.tasks.insert(
            key,
            WorkerTask {
                attempt: msg.attempt,
                code: msg.code,
                priority: msg.priority,
                resources: msg.resources,
                missing,
                phase: Phase::Waiting,
                group: msg.group,
                consume: msg.consume,
            },
        );
        if missing == 0 {
            self.ready(key, out);
        }
    }

    /// What is wrong with an MPI task's `group` for this worker, if anything (an empty
    /// group is a plain task).
    fn mpi_group_problem(&self, group: &[Rank]) -> Option<String> {
        if group.is_empty() {
            return None;
        }
        if self.mpi_report.is_none() {
            return Some(format!("sent to {}, which runs no MPI task", self.rank));
        }
        if !group.contains(&self.rank) {
            return Some(format!("on {group:?}, which {} is not among", self.rank));
        }
        if let Some(stranger) = group.iter().find(|r| !self.group.contains(r)) {
            return Some(format!(
                "on {group:?}, of which {stranger} is not in the workers' communicator"
            ));
        }
        let mut sorted = group.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        (sorted.len() != group.len()).then(|| format!("on {group:?}, which names a worker twice"))
    }

    /// A task whose inputs are all held here: gather them, or hold it while paused (not an
    /// MPI task, whose other members would wait for this one in MPI).
    pub(super) fn ready(&mut self, key: Key, out: &mut Outbox) {
        let mpi = self.tasks.get(&key).is_some_and(WorkerTask::is_mpi);
        if self.paused && !mpi {
            self.held.push(key);
        } else {
            self.gather(key, out);
        }
    }

    /// Takes the inputs of `key` from the store; those on disk are read back first.
    pub(super) fn gather(&mut self, key: Key, out: &mut Outbox) {
        // One lookup of the task on the common path (every input in memory): the task, the
        // store and the executor are separate fields, borrowed side by side.
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        let mut inputs = Vec::with_capacity(task.code.args.len());
        let mut pending: Vec<Key> = Vec::new();
        let mut released = false;
        for &dep in task.code.args.iter().flat_map(ArgSlot::dependencies) {
            self.client_reads.read(&dep);
            match self.store.get(&dep, task.priority) {
                Lookup::Ready(value) => inputs.push(Some(value)),
                Lookup::Pending => {
                    inputs.push(None);
                    if !pending.contains(&dep) {
                        pending.push(dep);
                    }
                }
                Lookup::Missing => {
                    released = true;
                    break;
                }
            }
        }
        if released {
            // Only a scheduler bug releases a value a placed task still reads.
            let message = format!("an input of task {key} was released on {}", self.rank);
            let attempt = task.attempt;
            self.fail(key, attempt, message, out);
            return;
        }
        if pending.is_empty() && task.is_mpi() {
            let deps = inputs.into_iter().flatten().collect();
            self.prepare_mpi(key, deps, out);
            return;
        }
        if pending.is_empty() {
            let deps = inputs.into_iter().flatten().collect();
            // Its last reads: the task holds the only copies (see `WorkerTask::consume`).
            for dep in &task.consume {
                self.store.remove(dep);
            }
            Self::dispatch(
                &self.executor,
                &self.functions,
                &mut self.next_seq,
                key,
                task,
                deps,
            );
            return;
        }
        task.phase = Phase::Reading;
        self.reading.insert(
            key,
            Gathered {
                inputs,
                reading: pending.len(),
            },
        );
        let attempt = task.attempt;
        for dep in pending {
            self.disk_waiters
                .entry(dep)
                .or_default()
                .tasks
                .push((key, attempt));
        }
    }

    /// Task `key` (placed here as `attempt`) is now the last reader of `input`: it takes it
    /// out of the store when it is queued, or now if it is queued already (then the task,
    /// unless it has already read it, holds the only copy). An input the task does not read
    /// is ignored: the scheduler names only inputs.
    pub(super) fn on_last_read(&mut self, key: Key, attempt: Attempt, input: Key) {
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        let mut inputs = task.code.args.iter().flat_map(ArgSlot::dependencies);
        if task.attempt != attempt || !inputs.any(|d| *d == input) || task.consume.contains(&input)
        {
            return;
        }
        match task.phase {
            Phase::Waiting => task.consume.push(input),
            Phase::Queued => {
                task.consume.push(input);
                self.store.remove(&input);
            }
            Phase::Reading | Phase::Prepared => {}
        }
    }

    /// Puts back into the store the inputs a queued task taken back before it started had
    /// taken out of it (`WorkerTask::consume`): another placement may read them here.
    pub(super) fn give_back_consumed(&mut self, queued: ReadyTask) {
        let Some(task) = self.tasks.get(&queued.key) else {
            return;
        };
        if task.consume.is_empty() {
            return;
        }
        let keys = task.code.args.iter().flat_map(ArgSlot::dependencies);
        for (key, value) in keys.zip(queued.deps) {
            if task.consume.contains(key) && !self.store.contains_key(key) {
                self.store.insert(*key, value);
            }
        }
    }

    /// Hands `task`, whose inputs `deps` are all in memory, to the executor.
    fn dispatch(
        executor: &super::executor::Executor,
        functions: &std::sync::Arc<crate::task::FunctionTable>,
        next_seq: &mut u64,
        key: Key,
        task: &mut WorkerTask,
        deps: Vec<Payload>,
    ) {
        task.phase = Phase::Queued;
        *next_seq += 1;
        executor.push(ReadyTask {
            key,
            attempt: task.attempt,
            code: task.code.clone(),
            functions: functions.clone(),
            deps,
            priority: task.priority,
            resources: task.resources.clone(),
            seq: *next_seq,
        });
    }

    /// Fails task `key`, placed here as `attempt`, with `message` (an earlier placement's
    /// is gone already: nothing to do).
    fn fail(&mut self, key: Key, attempt: Attempt, message: String, out: &mut Outbox) {
        let Some(task) = self.tasks.get(&key).filter(|t| t.attempt == attempt) else {
            return;
        };
        if task.is_mpi() {
            self.call_off_mpi(key, attempt, Some(message), out);
            return;
        }
        self.reading.remove(&key);
        if let Some(task) = self.tasks.remove(&key) {
            out.push(
                Rank::SCHEDULER,
                &ToScheduler::TaskFailed {
                    key,
                    attempt: task.attempt,
                    message,
                    run: super::not_run(),
                },
            );
        }
    }

    /// Stores a value and starts the tasks that were waiting only for it.
    pub(super) fn store_value(&mut self, key: Key, value: Payload, out: &mut Outbox) {
        self.store.insert(key, value);
        self.update_pause(out);
        for (waiter, attempt) in self.waiters.remove(&key).unwrap_or_default() {
            let Some(task) = self.tasks.get_mut(&waiter) else {
                continue;
            };
            if task.attempt != attempt || task.phase != Phase::Waiting {
                continue;
            }
            task.missing -= 1;
            if task.missing == 0 {
                self.ready(waiter, out);
            }
        }
    }

    pub(super) fn on_data(&mut self, from: Rank, key: Key, bytes: Payload, out: &mut Outbox) {
        if !self.fetching.remove(&key) {
            debug!("unrequested value {key} from {from}; dropped");
            return;
        }
        if let Some(trace) = &mut self.trace {
            trace.arrived(key, from, bytes.len() as u64);
        }
        self.copying.remove(&key);
        self.store_value(key, bytes, out);
        out.push(Rank::SCHEDULER, &ToScheduler::AddReplicas(vec![key]));
    }

    /// Copies the scheduler asks for (`replicate`): each value fetched from the worker
    /// named beside it, unless it is here or on its way already; a value already here is
    /// reported at once.
    pub(super) fn on_copy_from(&mut self, from: Rank, copies: Vec<(Key, Rank)>, out: &mut Outbox) {
        let mut held = Vec::new();
        for (key, source) in copies {
            if source == self.rank || self.workers.binary_search(&source).is_err() {
                self.protocol_error(
                    from,
                    format!("a copy of {key} to fetch from {source}, which is no other worker"),
                );
                return;
            }
            if self.store.contains_key(&key) {
                held.push(key);
                continue;
            }
            self.copying.insert(key);
            self.request_value(key, source, out);
        }
        if !held.is_empty() {
            out.push(Rank::SCHEDULER, &ToScheduler::AddReplicas(held));
        }
    }

    /// Asks `source` for `key`'s value unless it was asked for already.
    fn request_value(&mut self, key: Key, source: Rank, out: &mut Outbox) {
        if self.fetching.insert(key) {
            if let Some(trace) = &mut self.trace {
                trace.requested(key);
            }
            out.push(source, &ToWorker::GetData(vec![key]));
        }
    }

    pub(super) fn on_data_missing(&mut self, from: Rank, key: Key, out: &mut Outbox) {
        self.fetching.remove(&key);
        if self.copying.remove(&key) {
            out.push(Rank::SCHEDULER, &ToScheduler::CopyFailed(vec![key]));
        }
        for (waiter, attempt) in self.waiters.remove(&key).unwrap_or_default() {
            self.fail(
                waiter,
                attempt,
                format!("its input {key} was not found on {from}"),
                out,
            );
        }
    }

    /// Sends `key` (or that it is missing) to `to`, a worker or the client.
    fn serve(&mut self, to: Requester, key: Key, value: Option<Payload>, out: &mut Outbox) {
        let for_client = || match &value {
            Some(bytes) => ToClient::Data {
                key,
                bytes: bytes.clone(),
            },
            None => ToClient::DataMissing(key),
        };
        if to.for_client && to.rank == self.rank {
            self.own_client_mail.push(for_client());
        } else if to.for_client {
            out.push(to.rank, &ToWorker::ForClient(for_client()));
        } else if to.rank == Rank::CLIENT {
            out.push(to.rank, &for_client());
        } else {
            match value {
                Some(bytes) => out.push(to.rank, &ToWorker::Data { key, bytes }),
                None => out.push(to.rank, &ToWorker::DataMissing(key)),
            }
        }
    }

    /// Values `from` asks for: for its task client if `for_client`.
    pub(super) fn on_get_data(
        &mut self,
        from: Rank,
        keys: Vec<Key>,
        for_client: bool,
        out: &mut Outbox,
    ) {
        let from = Requester {
            rank: from,
            for_client,
        };
        for key in keys {
            self.client_reads.read(&key);
            match self.store.get(&key, Urgency::PEER) {
                Lookup::Ready(value) => self.serve(from, key, Some(value), out),
                Lookup::Pending => self.disk_waiters.entry(key).or_default().ranks.push(from),
                Lookup::Missing => self.serve(from, key, None, out),
            }
        }
    }

    /// A disk operation finished: a spilled value left memory, or one came back from disk
    /// for the tasks and ranks waiting for it.
    pub(super) fn on_disk_done(&mut self, done: DiskDone, out: &mut Outbox) {
        let back = match done {
            DiskDone::Written { key, file, result } => {
                self.store.written(key, file, result);
                self.update_pause(out);
                return;
            }
            DiskDone::Read { key, file, result } => self.store.read(key, file, result),
        };
        match back {
            ReadBack::Nothing => {}
            ReadBack::Ready(key, value) => {
                let waiters = self.disk_waiters.remove(&key).unwrap_or_default();
                for rank in waiters.ranks {
                    self.serve(rank, key, Some(value.clone()), out);
                }
                for (task_key, attempt) in waiters.tasks {
                    self.input_read_back(task_key, attempt, key, &value, out);
                }
                self.update_pause(out);
            }
            ReadBack::Lost(key, message) => {
                let waiters = self.disk_waiters.remove(&key).unwrap_or_default();
                for rank in waiters.ranks {
                    log::warn!("value {key} asked for by {} is lost: {message}", rank.rank);
                    self.serve(rank, key, None, out);
                }
                for (task_key, attempt) in waiters.tasks {
                    self.fail(
                        task_key,
                        attempt,
                        format!("its input {key} was lost on {}: {message}", self.rank),
                        out,
                    );
                }
            }
        }
    }

    /// Input `dep` of task `key` (placed as `attempt`) came back from disk: the task runs
    /// once it has them all.
    fn input_read_back(
        &mut self,
        key: Key,
        attempt: Attempt,
        dep: Key,
        value: &Payload,
        out: &mut Outbox,
    ) {
        let Some(task) = self.tasks.get_mut(&key) else {
            // Cancelled or stolen meanwhile.
            self.reading.remove(&key);
            return;
        };
        if task.attempt != attempt
            || task.phase != Phase::Reading
            || self.status != NodeStatus::Running
        {
            // An earlier placement's read: the current one waits for its own.
            return;
        }
        let Some(gathered) = self.reading.get_mut(&key) else {
            return;
        };
        let occurrences = task.code.args.iter().flat_map(ArgSlot::dependencies);
        for (slot, occurrence) in gathered.inputs.iter_mut().zip(occurrences) {
            if *occurrence == dep && slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        gathered.reading -= 1;
        if gathered.reading == 0 {
            let gathered = self.reading.remove(&key).expect("present");
            let deps = gathered
                .inputs
                .into_iter()
                .map(|input| input.expect("every input is in memory"))
                .collect();
            if task.is_mpi() {
                self.prepare_mpi(key, deps, out);
                return;
            }
            Self::dispatch(
                &self.executor,
                &self.functions,
                &mut self.next_seq,
                key,
                task,
                deps,
            );
        }
    }
}
