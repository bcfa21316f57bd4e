//! What comes back: finished and failed tasks, retries, failures passed on to dependents,
//! values forgotten once nobody needs them, replicas, and the client's releases and
//! cancellations.

use super::{EarlyScatter, Output, Scheduler};
use crate::protocol::{Attempt, Key, Rank, TaskRun, ToClient, ToWorker};
use crate::scheduler::state::{Failure, Task, TaskState};
use log::{debug, warn};
use std::sync::Arc;

impl Scheduler {
    /// The task is processing on `from` under `attempt`; a reply that fails this check is
    /// about an older placement and is dropped.
    pub(super) fn is_current(&self, key: Key, from: Rank, attempt: Attempt) -> bool {
        self.tasks.get(&key).is_some_and(|task| {
            task.attempt == attempt
                && matches!(task.state, TaskState::Processing { worker, .. } if worker == from)
        })
    }

    pub(super) fn on_task_finished(
        &mut self,
        from: Rank,
        key: Key,
        attempt: Attempt,
        nbytes: u64,
        run: Option<TaskRun>,
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
        if !self.mpi_runs.is_empty() {
            self.mpi_member_done(from, key);
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
        if let Some(run) = run {
            self.record_run(key, from, run, nbytes, None);
        }
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
        let group = (task.func, !task.deps.is_empty());
        let client_wants = task.client_wants;
        let deps = task.deps.clone();
        let dependents = task.dependents.clone();
        if !scattered {
            self.completed += 1;
            // A task without a run had its result loaded from the checkpoint: it says
            // nothing of how long such tasks take.
            match run {
                None => self.restored += 1,
                Some(run) => {
                    let seconds = run.duration_us as f64 * 1e-6;
                    self.mean_task_seconds = Some(match self.mean_task_seconds {
                        None => seconds,
                        Some(mean) => 0.9 * mean + 0.1 * seconds,
                    });
                    self.group_seconds
                        .entry(group)
                        .and_modify(|mean| *mean = 0.9 * *mean + 0.1 * seconds)
                        .or_insert(seconds);
                }
            }
        }
        if client_wants {
            self.notify_owner(key, ToClient::KeyDone { key, worker: from });
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

    pub(super) fn on_task_failed(
        &mut self,
        from: Rank,
        key: Key,
        attempt: Attempt,
        message: String,
        run: TaskRun,
        now: std::time::Instant,
    ) {
        if !self.mpi_runs.is_empty() {
            self.mpi_failed(from, key, &message, now);
            self.mpi_member_done(from, key);
        }
        if !self.is_current(key, from, attempt) {
            debug!("stale failure of {key} from {from} (attempt {attempt}); ignored");
            return;
        }
        self.stop_processing(from, key);
        self.record_run(key, from, run, 0, Some(&message));
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
    /// computed again (possibly elsewhere), and, transitively, the tasks placed to wait for
    /// those: each of them waits for a value its worker would never compute.
    pub(super) fn revoke_running_dependents(&mut self, key: Key) {
        let mut stack = self.tasks[&key].dependents.clone();
        while let Some(dependent) = stack.pop() {
            if let Some(TaskState::Processing { worker, .. }) =
                self.tasks.get(&dependent).map(|t| t.state.clone())
            {
                self.unplace(dependent, worker);
                let task = self.tasks.get_mut(&dependent).expect("exists");
                task.state = TaskState::Waiting;
                stack.extend(task.dependents.iter().copied());
            }
        }
    }

    /// Removes a processing task from its worker and tells the worker to drop it (unless the
    /// worker already let go of it, as after a failure).
    pub(super) fn unplace(&mut self, key: Key, worker: Rank) {
        let attempt = self.tasks[&key].attempt;
        let was_there = self.stop_processing(worker, key);
        if self.tasks[&key].is_mpi() {
            self.call_off_mpi(key, attempt);
        } else if was_there {
            self.outbox.push(Output::Worker(
                worker,
                ToWorker::CancelTask { key, attempt },
            ));
        }
    }

    /// Ends `key` and every task that depends on it, transitively, with `failure`.
    pub(super) fn fail(&mut self, key: Key, failure: Arc<Failure>) {
        let mut stack = vec![key];
        let mut finished = Vec::new();
        while let Some(k) = stack.pop() {
            let Some(task) = self.tasks.get(&k) else {
                continue;
            };
            match task.state.clone() {
                TaskState::Memory { .. } | TaskState::Failed(_) => continue,
                TaskState::Ready if !task.is_mpi() => self.ready.forget(),
                TaskState::Ready => {}
                TaskState::Processing { worker, .. } => self.unplace(k, worker),
                TaskState::Waiting => {}
            }
            let task = self.tasks.get_mut(&k).expect("exists");
            if !task.scattered {
                self.failed += 1;
            }
            task.state = TaskState::Failed(failure.clone());
            task.code = None;
            stack.extend(task.dependents.iter().copied());
            finished.push(k);
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
                self.notify_owner(k, message);
            }
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

    pub(super) fn dependent_finished(&mut self, key: Key) {
        if let Some(task) = self.tasks.get_mut(&key) {
            task.unfinished_dependents -= 1;
            self.maybe_forget(key);
            self.reduce_replicas(key);
            self.offer_last_read(key);
        }
    }

    /// Frees the copies of `key` beyond the first once no unfinished task reads it (Dask's
    /// `ReduceReplicas`, done at once): a value the client keeps (a persisted chunk, say)
    /// stays where it was made, and the workers that fetched it for tasks now finished get
    /// their memory back, for the next values they receive. A broadcast value keeps its
    /// copies, for the tasks still to come.
    fn reduce_replicas(&mut self, key: Key) {
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        if task.unfinished_dependents > 0 || task.broadcast {
            return;
        }
        let TaskState::Memory { who_has } = &mut task.state else {
            return;
        };
        if who_has.len() < 2 {
            return;
        }
        let nbytes = task.nbytes;
        let copies: Vec<Rank> = who_has.drain(1..).collect();
        for rank in copies {
            if let Some(w) = self.worker_mut(rank) {
                w.nbytes = w.nbytes.saturating_sub(nbytes);
            }
            // Sent now, not with the round's batched releases: ahead of any task this
            // round may yet place on that worker, which then fetches the value anew.
            self.outbox
                .push(Output::Worker(rank, ToWorker::ReleaseKeys(vec![key])));
        }
    }

    /// Drops a task nobody needs any more: the client released it and no unfinished task
    /// reads it. Its value is freed on the workers; an unfinished task is cancelled.
    pub(super) fn maybe_forget(&mut self, key: Key) {
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
            TaskState::Ready if !task.is_mpi() => self.ready.forget(),
            TaskState::Ready | TaskState::Waiting => {}
            TaskState::Processing { .. } if task.is_mpi() => {
                self.call_off_mpi(key, task.attempt);
            }
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

    pub(super) fn flush_releases(&mut self) {
        for index in std::mem::take(&mut self.releasing) {
            let keys = std::mem::take(&mut self.releases[index]);
            self.outbox.push(Output::Worker(
                self.workers[index].rank,
                ToWorker::ReleaseKeys(keys),
            ));
        }
    }

    pub(super) fn on_add_replicas(&mut self, from: Rank, keys: &[Key]) {
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

    pub(super) fn on_release(&mut self, keys: &[Key]) {
        for key in keys {
            if let Some(task) = self.tasks.get_mut(key) {
                task.client_wants = false;
                self.maybe_forget(*key);
                self.offer_last_read(*key);
            }
        }
        self.needs_schedule = true;
    }

    pub(super) fn on_cancel(&mut self, keys: &[Key]) {
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
}
