//! New work and where it runs: registered functions, submitted and scattered tasks, the
//! ready queue, placement on the least loaded worker that may run a task (preferring the
//! holder of its inputs), and stealing queued tasks for idle workers.

use super::{Output, Scheduler};
use crate::protocol::{Attempt, ComputeMsg, FunctionMsg, Key, Rank, TaskCode, TaskSpec, ToWorker};
use crate::scheduler::policy;
use crate::scheduler::state::{Failure, Task, TaskState, Worker};
use log::{debug, error};
use std::cmp::Reverse;
use std::sync::Arc;

/// Ready tasks with inputs one scheduling pass passes over (waiting for the holder of their
/// inputs, or a worker with room) before it stops looking further down the queue.
const MAX_SKIPPED: usize = 64;

impl Scheduler {
    /// The client registers a function: checked, then forwarded to every worker before
    /// any task that uses it.
    pub(super) fn on_register_function(&mut self, from: Rank, registration: FunctionMsg) {
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

    pub(super) fn on_submit(&mut self, from: Rank, specs: Vec<TaskSpec>) {
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
    pub(super) fn add_task(&mut self, spec: TaskSpec) -> Option<Key> {
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
        // The next link of a chain (a task reading one value a task is still computing, or
        // computed and read by no other task yet) takes that task's place among the ready
        // tasks, ahead of the tasks submitted after it: `map(g, map(f, items))` runs each
        // `g` as soon as its `f` is done, and frees that value, instead of after every `f`
        // (depth first, as Dask's ordering does within a graph), also for the `f`s done
        // before the `g`s were submitted.
        let order = match deps.as_slice() {
            [dep] => self
                .tasks
                .get(dep)
                .filter(|dep| {
                    !dep.scattered
                        && match dep.state {
                            TaskState::Memory { .. } => dep.dependents.is_empty(),
                            ref state => !state.is_final(),
                        }
                })
                .map_or(seq, |dep| dep.order.min(seq)),
            _ => seq,
        };
        let code = TaskCode {
            func: spec.func,
            uses: spec.uses.into(),
            args: spec.args.into(),
            checkpoint: spec.checkpoint.map(Box::new),
        };
        let loose = spec.options.allow_other_workers;
        let mut task = Task::new(code, spec.options, deps, seq);
        task.order = order;
        if loose
            && !task.allowed_workers.is_empty()
            && task
                .allowed_workers
                .iter()
                .all(|r| self.worker_index(*r).is_none())
        {
            debug!(
                "task {key} is pinned to {:?}, none of them a worker: it may run anywhere",
                task.allowed_workers
            );
            task.allowed_workers.clear();
        }
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
        if task.is_mpi() && task.retries_left > 0 && inherited.is_none() {
            inherited = Some(Arc::new(Failure {
                cause: format!("task-{}", key.0),
                message: "an MPI task is not retried (a member that failed may have left the \
                          others waiting in MPI): submit it without retries"
                    .into(),
                cancelled: false,
            }));
        }
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

    pub(super) fn on_scatter(&mut self, key: Key, worker: Rank, nbytes: u64) {
        if self.tasks.contains_key(&key) || self.worker_index(worker).is_none() {
            error!("invalid scatter of {key} to {worker}; ignored");
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tasks.insert(key, Task::scattered(worker, seq, nbytes));
        // The worker's report may have overtaken the client's announcement (two senders).
        if let Some(early) = self.early_scatters.remove(&key) {
            self.on_task_finished(early.from, key, 0, early.nbytes, None);
            if !early.replicas.is_empty() {
                self.on_replicated(key, early.replicas);
            }
        }
    }

    /// A broadcast reached `workers`: they hold `key` from now on.
    pub(super) fn on_replicated(&mut self, key: Key, workers: Vec<Rank>) {
        if let Some(early) = self.early_scatters.get_mut(&key) {
            early.replicas.extend(workers);
            return;
        }
        if let Some(task) = self.tasks.get_mut(&key) {
            task.broadcast = true;
        }
        for worker in workers {
            self.on_add_replicas(worker, &[key]);
        }
    }

    pub(super) fn make_ready(&mut self, key: Key) {
        let task = self.tasks.get_mut(&key).expect("task exists");
        task.state = TaskState::Ready;
        if task.is_mpi() {
            // MPI tasks wait in a line of their own (see `mpi_tasks`).
            self.mpi_ready.push_back(key);
        } else {
            self.ready.push(task, key);
        }
    }

    /// Places a waiting task right away on the worker that computes all of its missing
    /// dependencies, so chains run there without a round trip to the scheduler per link.
    pub(super) fn try_place_with_running_deps(&mut self, key: Key) {
        if let Some(rank) = self.worker_for_running_deps(key) {
            self.assign(key, rank);
        }
    }

    /// The worker computing every missing input of the waiting task `key`, if there is one
    /// such worker, it may run the task, it has a free slot, and the computed inputs it
    /// lacks take no longer to fetch than [`policy::BESIDE_RUNNING_MAX_FETCH`] (a chunk held
    /// elsewhere is not pulled to where a small reduced row is being made: the task waits
    /// and goes where its inputs weigh most).
    pub(super) fn worker_for_running_deps(&self, key: Key) -> Option<Rank> {
        if !self.all_joined() || !self.is_running() {
            return None;
        }
        let task = &self.tasks[&key];
        if task.is_mpi() {
            return None;
        }
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
            && worker.processing.len() < policy::slots(worker, depth)
            && policy::missing(task, worker, &self.tasks, &|r| self.node_of(r)).seconds()
                <= policy::BESIDE_RUNNING_MAX_FETCH)
            .then_some(rank)
    }

    /// Places ready tasks while workers have free slots. A restricted task no worker can ever
    /// run fails with a message naming what it asked for and what the workers offer.
    pub(super) fn schedule(&mut self) {
        if !self.all_joined() || !self.is_running() {
            return;
        }
        self.schedule_mpi();
        let mut skipped = Vec::new();
        let mut deferred = Vec::new();
        let mut unschedulable = Vec::new();
        while let Some(key) = self.ready.pop(&self.tasks) {
            let task = &self.tasks[&key];
            let choice = self.choice_for(key, task);
            match choice {
                Some(worker)
                    if deferred.len() < MAX_SKIPPED
                        && policy::missing(task, worker, &self.tasks, &|r| self.node_of(r))
                            .seconds()
                            > policy::BESIDE_RUNNING_MAX_FETCH =>
                {
                    // Its inputs would move to a worker with room while their holder is
                    // busy: first let the tasks further down whose inputs are already
                    // there take that room, and place this one after them if room is left
                    // (taking the first free slot, every worker would fetch another's
                    // inputs in turn while its own wait).
                    deferred.push(key);
                }
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
                    // A task with inputs may be waiting for their holder while others can
                    // go elsewhere: look a little further (at most MAX_SKIPPED tasks).
                    skipped.push(key);
                    let look_further = task.is_restricted()
                        || (!task.deps.is_empty() && skipped.len() < MAX_SKIPPED);
                    if !look_further || !self.any_free_slot() {
                        break;
                    }
                }
            }
        }
        for key in deferred {
            let task = &self.tasks[&key];
            let choice = self.choice_for(key, task).map(|w| w.rank);
            match choice {
                Some(rank) => self.assign(key, rank),
                None => skipped.push(key),
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

    /// The worker task `key` should go to now, if one has room: for a task with nothing to
    /// be near, the least loaded, or the worker whose task submitted it (where its value
    /// is awaited) unless that one would start it later by more than the value's way back
    /// ([`policy::RESULT_RETURN_SECONDS`]); else the policy's choice among its candidates.
    fn choice_for(&self, key: Key, task: &Task) -> Option<&Worker> {
        if task.deps.is_empty() && !task.is_restricted() {
            let depth = policy::queue_depth(self.mean_task_seconds);
            let has_room = |w: &&Worker| w.processing.len() < policy::slots(w, depth);
            let least = self
                .by_load
                .least()
                .map(|(_, i)| &self.workers[i])
                .filter(has_room)?;
            let home = Some(key.owner())
                .filter(|rank| *rank != Rank::CLIENT && *rank != least.rank)
                .and_then(|rank| self.worker_index(rank))
                .map(|i| &self.workers[i])
                .filter(|w| policy::is_eligible(task, w) && w.mpi.is_none())
                .filter(has_room);
            let Some(home) = home else {
                return Some(least);
            };
            let seconds = self.task_seconds(task);
            let stay = policy::start_time_estimate(home, 0.0, seconds)
                <= policy::start_time_estimate(least, 0.0, seconds) + policy::RESULT_RETURN_SECONDS;
            Some(if stay { home } else { least })
        } else {
            let candidates = self.candidates(task);
            policy::choose_worker(
                task,
                candidates.iter().map(|&i| &self.workers[i]),
                &self.tasks,
                &|rank| self.node_of(rank),
                self.mean_task_seconds,
                self.task_seconds(task),
            )
        }
    }

    pub(super) fn any_free_slot(&self) -> bool {
        let depth = policy::queue_depth(self.mean_task_seconds);
        // The least loaded worker has a free slot if any has: slots grow with threads.
        self.by_load.least().is_some_and(|(_, i)| {
            let w = &self.workers[i];
            w.processing.len() < policy::slots(w, depth)
        })
    }

    pub(super) fn unschedulable_reason(&self, key: Key) -> String {
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

    pub(super) fn assign(&mut self, key: Key, rank: Rank) {
        self.assign_one(key, rank);
        self.place_waiting_dependents(key);
    }

    /// Places one task on `rank` and sends it there.
    pub(super) fn assign_one(&mut self, key: Key, rank: Rank) {
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
        let last_try = task.retries_left == 0;
        let dep_keys = task.deps.clone();
        let consume = if last_try {
            dep_keys
                .iter()
                .copied()
                .filter(|dep| self.last_read_by_one_task(*dep, rank))
                .collect()
        } else {
            Vec::new()
        };
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
                consume,
                priority,
                resources,
                group: Vec::new(),
            }),
        ));
    }

    /// Whether the one task placed on `rank` that still reads `dep` may take the worker's
    /// copy of it: the client holds no future of it, it is kept for no later task
    /// (broadcast, replicated), and it is or will be in memory there. (The reader must be
    /// on its last try, so no retry reads `dep` again; the worker gives it back if the
    /// reader is taken away before it starts.)
    fn last_read_by_one_task(&self, dep: Key, rank: Rank) -> bool {
        let Some(task) = self.tasks.get(&dep) else {
            return false;
        };
        let here = match &task.state {
            TaskState::Memory { who_has } => who_has.contains(&rank),
            TaskState::Processing { worker, .. } => *worker == rank && !task.is_mpi(),
            _ => false,
        };
        here && !task.client_wants && !task.broadcast && task.unfinished_dependents == 1
    }

    /// Tells the worker of the one unfinished task that reads `dep` that it may take its copy
    /// of it, when that has become true since the task was placed there (the client let go
    /// of `dep`, or its other readers finished).
    pub(super) fn offer_last_read(&mut self, dep: Key) {
        let Some(task) = self.tasks.get(&dep) else {
            return;
        };
        if task.unfinished_dependents != 1 {
            return;
        }
        let reader = task
            .dependents
            .iter()
            .copied()
            .find(|d| self.tasks.get(d).is_some_and(|t| !t.state.is_final()));
        let Some(reader) = reader else {
            return;
        };
        let task = &self.tasks[&reader];
        let TaskState::Processing {
            worker,
            stealing: false,
        } = task.state
        else {
            return;
        };
        if task.is_mpi() || task.retries_left > 0 || !self.last_read_by_one_task(dep, worker) {
            return;
        }
        let attempt = task.attempt;
        self.outbox.push(Output::Worker(
            worker,
            ToWorker::LastRead {
                key: reader,
                attempt,
                input: dep,
            },
        ));
    }

    /// After `key` was placed, its waiting dependents may now have all missing inputs
    /// computing on one worker: place them there too, and so on down a chain.
    pub(super) fn place_waiting_dependents(&mut self, key: Key) {
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
    pub(super) fn source_of(&self, dep: Key, to: Rank) -> Rank {
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

    /// When a worker still has an idle thread after [`Scheduler::schedule`] (no ready task
    /// would go there: those left wait for the holder of their inputs), asks the most
    /// loaded workers to give up queued tasks (not running ones: a worker only gives up a
    /// task it has not started) so they can be placed again.
    pub(super) fn balance(&mut self) {
        if !self.config.work_stealing || !self.all_joined() || !self.is_running() {
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
        // Not a worker of an MPI task: it counts no thread while reserved, so all it holds
        // would look queued, and once the task ran it may still hold the task's key after
        // the client released it (until its part is reported).
        let mut victims: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.mpi.is_none() && w.processing.len() > w.nthreads()
            })
            .collect();
        victims.sort_by_key(|&i| {
            Reverse(self.workers[i].processing.len() - self.workers[i].nthreads())
        });
        for v in victims {
            if free_threads == 0 {
                break;
            }
            let victim = &self.workers[v];
            // Tasks placed to wait there for a value the worker computes cannot run yet:
            // only those with every input at hand count as queued.
            let runnable = victim
                .processing
                .iter()
                .filter(|k| self.tasks.get(k).is_some_and(|t| t.waiting_on == 0))
                .count();
            let queued = runnable.saturating_sub(victim.nthreads());
            let want = free_threads.min(queued.div_ceil(2));
            let candidates: Vec<Key> = victim
                .processing
                .iter()
                .copied()
                .filter(|k| self.is_stealable(*k, &idle, queued))
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

    /// `true` if the idle workers `thieves` should take `key`, processing on a worker with
    /// `queued` runnable tasks beyond its threads.
    pub(super) fn is_stealable(&self, key: Key, thieves: &[usize], queued: usize) -> bool {
        let Some(task) = self.tasks.get(&key) else {
            return false;
        };
        matches!(
            task.state,
            TaskState::Processing {
                stealing: false,
                ..
            }
        ) && task.waiting_on == 0
            && !task.scattered
            && !task.is_mpi()
            && self.worth_stealing(task, thieves, queued)
    }

    /// `true` if some idle worker in `thieves` may run `task` (on a busy worker with `queued`
    /// runnable tasks beyond its threads) and moving its inputs there pays: see
    /// [`policy::worth_moving`]. Moving work that takes less than a couple of round trips to
    /// the scheduler is never worth it.
    fn worth_stealing(&self, task: &Task, thieves: &[usize], queued: usize) -> bool {
        let TaskState::Processing { worker, .. } = task.state else {
            return false;
        };
        let Some(victim) = self.worker_index(worker).map(|v| &self.workers[v]) else {
            return false;
        };
        let seconds = self.task_seconds(task);
        let victim_wait = policy::queued_seconds(queued, victim.nthreads(), seconds);
        victim_wait >= 0.002
            && thieves.iter().any(|&i| {
                let thief = &self.workers[i];
                policy::is_eligible(task, thief)
                    && policy::worth_moving(
                        policy::missing(task, thief, &self.tasks, &|r| self.node_of(r)).seconds(),
                        seconds,
                        victim_wait,
                    )
            })
    }

    pub(super) fn on_steal_reply(&mut self, from: Rank, key: Key, attempt: Attempt, stolen: bool) {
        if !self.is_current(key, from, attempt) {
            return;
        }
        if stolen {
            self.stop_processing(from, key);
            // Dependents placed beside it to wait for its value are taken back and placed
            // again once it is computed where it goes now.
            self.revoke_running_dependents(key);
            debug!("{} stolen from {from}", self.key_name(key));
            self.make_ready(key);
            self.needs_schedule = true;
        } else if let Some(task) = self.tasks.get_mut(&key)
            && let TaskState::Processing { stealing, .. } = &mut task.state
        {
            *stealing = false;
        }
    }
}
