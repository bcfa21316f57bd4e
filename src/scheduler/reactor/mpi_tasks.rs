//! MPI tasks: one task run by several workers at once, each handed a communicator of them
//! all. The first MPI task in line reserves the workers it will run on (no other task goes
//! to them from then on) and is sent to each of them once they have finished their other
//! tasks. Each fetches the inputs and answers `MpiReady`; when all have, each gets `MpiGo`
//! and enters the task (a member inside MPI cannot serve another's request for an input, so
//! none enters before all hold theirs). Each member is free again when it reports its part:
//! the first with `TaskFinished`/`TaskFailed` (its result is the task's value), the others
//! with `MpiPartDone`. Before `MpiGo` a cancelled or failed MPI task is called off on every
//! member; after it, the task runs to its end on each: a member that dropped it would leave
//! the others waiting in MPI.

use super::{Output, Scheduler};
use crate::exit::ExitCode;
use crate::protocol::{Attempt, ComputeMsg, Key, Rank, ToWorker};
use crate::scheduler::policy;
use crate::scheduler::state::{Failure, MpiSeat, TaskState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the other members of an MPI task that failed on one member may take to end
/// their parts before the job ends: they may wait in a collective the failed member never
/// joins, which only the end of the job releases.
pub(super) const STUCK_PARTS_GRACE: Duration = Duration::from_secs(30);

/// An MPI task sent to its workers.
#[derive(Debug)]
pub(super) struct MpiRun {
    /// Its workers, in the order of their communicator.
    members: Vec<Rank>,
    /// Members that have not reported their part yet.
    pending: Vec<Rank>,
    /// Members that hold their inputs (until `MpiGo` is sent).
    ready: Vec<Rank>,
    /// `MpiGo` was sent: the members are in MPI, or will be.
    gone: bool,
    /// The first failure: the task's readable key, the member, its message, and when it
    /// arrived.
    failure: Option<(String, Rank, String, Instant)>,
}

impl Scheduler {
    /// Sends the first MPI task in line to its workers once they are free, having reserved
    /// them first so that a stream of other tasks cannot keep it waiting; then the next.
    pub(super) fn schedule_mpi(&mut self) {
        while let Some(&key) = self.mpi_ready.front() {
            let ready = self
                .tasks
                .get(&key)
                .is_some_and(|t| matches!(t.state, TaskState::Ready));
            if !ready {
                // Released, cancelled or failed while it waited.
                self.mpi_ready.pop_front();
                self.unreserve();
                continue;
            }
            if self.mpi_reserved.is_empty() && !self.reserve_for(key) {
                if self.mpi_ready.front() == Some(&key) {
                    // Waits for workers another MPI task holds.
                    return;
                }
                // It failed: on to the next.
                continue;
            }
            // Idle: nothing runs but tasks waiting for others (as a task that submitted
            // this MPI task from its task client), which the MPI task does not hold up.
            let idle = self.mpi_reserved.iter().all(|rank| {
                self.worker_index(*rank).is_some_and(|i| {
                    let w = &self.workers[i];
                    w.processing.iter().all(|k| w.seceded.contains(k))
                })
            });
            if !idle {
                return;
            }
            self.mpi_ready.pop_front();
            let members = std::mem::take(&mut self.mpi_reserved);
            self.launch_mpi(key, members);
        }
    }

    /// Reserves workers for the MPI task `key`: those of the workers' communicator it may
    /// run on, least busy first, and not in another MPI task. `false` if too few are free
    /// now; a task more workers than the job has can ever give fails.
    fn reserve_for(&mut self, key: Key) -> bool {
        let task = &self.tasks[&key];
        let wanted = task.mpi_workers.unwrap_or(0) as usize;
        let capable: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.hello.as_ref().is_some_and(|h| h.mpi_group) && policy::is_eligible(task, w)
            })
            .collect();
        if wanted == 0 || capable.len() < wanted {
            self.mpi_ready.pop_front();
            let failure = Arc::new(Failure {
                cause: self.key_name(key),
                message: self.mpi_unschedulable_reason(wanted, capable.len()),
                cancelled: false,
            });
            self.fail(key, failure);
            self.needs_schedule = true;
            return false;
        }
        let mut free: Vec<usize> = capable
            .into_iter()
            .filter(|&i| self.workers[i].mpi.is_none())
            .collect();
        if free.len() < wanted {
            return false;
        }
        free.sort_by_key(|&i| (self.workers[i].processing.len(), i));
        free.truncate(wanted);
        free.sort_unstable();
        for &i in &free {
            self.workers[i].mpi = Some(MpiSeat {
                key,
                running: false,
            });
            self.by_load.set(i, policy::load_key(&self.workers[i]));
        }
        self.mpi_reserved = free.iter().map(|&i| self.workers[i].rank).collect();
        true
    }

    /// Frees the workers reserved for an MPI task that will not run after all.
    fn unreserve(&mut self) {
        for rank in std::mem::take(&mut self.mpi_reserved) {
            if let Some(i) = self.worker_index(rank) {
                self.workers[i].mpi = None;
                self.by_load.set(i, policy::load_key(&self.workers[i]));
            }
        }
        self.needs_schedule = true;
    }

    /// Why an MPI task for `wanted` workers cannot run where only `capable` can take part.
    fn mpi_unschedulable_reason(&self, wanted: usize, capable: usize) -> String {
        if wanted == 0 {
            return "an MPI task needs at least 1 worker; it asked for 0".to_string();
        }
        let members = self
            .workers
            .iter()
            .filter(|w| w.hello.as_ref().is_some_and(|h| h.mpi_group))
            .count();
        if members == 0 {
            return format!(
                "it asks for {wanted} worker{}, and no worker of this job is an MPI process \
                 (local mode, or workers hosted by the client or scheduler): run the program \
                 under mpirun or srun with at least {} ranks",
                if wanted == 1 { "" } else { "s" },
                wanted + 2
            );
        }
        let pinned = if capable < members {
            format!(" ({capable} of them allowed by its pinning and resources)")
        } else {
            String::new()
        };
        format!(
            "it asks for {wanted} workers and this job has {members} workers in its MPI \
             communicator{pinned}: start the job with at least {} ranks (2 + {wanted}), or \
             ask for fewer workers",
            wanted + 2
        )
    }

    /// Sends the MPI task `key` to each of `members` (reserved and idle).
    fn launch_mpi(&mut self, key: Key, members: Vec<Rank>) {
        let task = self.tasks.get_mut(&key).expect("a ready task exists");
        task.attempt += 1;
        task.state = TaskState::Processing {
            worker: members[0],
            stealing: false,
        };
        let code = task
            .code
            .clone()
            .expect("an unfinished task keeps its code");
        let (attempt, priority, resources) = (task.attempt, task.priority, task.resources.clone());
        let dep_keys = task.deps.clone();
        log::debug!("{} -> MPI task on {members:?}", self.key_name(key));
        for &rank in &members {
            let index = self.worker_index(rank).expect("a member is a worker");
            if let Some(seat) = &mut self.workers[index].mpi {
                seat.running = true;
            }
            self.start_processing(index, key);
            let deps = dep_keys
                .iter()
                .map(|&dep| (dep, self.source_of(dep, rank)))
                .collect();
            self.outbox.push(Output::Worker(
                rank,
                ToWorker::Compute(ComputeMsg {
                    key,
                    attempt,
                    code: code.clone(),
                    deps,
                    consume: Vec::new(),
                    priority,
                    resources: resources.clone(),
                    group: members.clone(),
                }),
            ));
        }
        self.mpi_runs.insert(
            key,
            MpiRun {
                pending: members.clone(),
                members,
                ready: Vec::new(),
                gone: false,
                failure: None,
            },
        );
    }

    /// Member `from` of the MPI task `key` holds its inputs: once all do, they go.
    pub(super) fn on_mpi_ready(&mut self, from: Rank, key: Key, attempt: Attempt) {
        let current = self.tasks.get(&key).is_some_and(|t| {
            t.attempt == attempt && matches!(t.state, TaskState::Processing { .. })
        });
        let Some(run) = self.mpi_runs.get_mut(&key) else {
            return;
        };
        if !current || run.gone || !run.members.contains(&from) || run.ready.contains(&from) {
            return;
        }
        run.ready.push(from);
        if run.ready.len() == run.members.len() {
            run.gone = true;
            for &rank in &run.members {
                self.outbox
                    .push(Output::Worker(rank, ToWorker::MpiGo { key, attempt }));
            }
        }
    }

    /// Calls off the MPI task `key` on its members if they have not entered it yet (each
    /// answers `MpiPartDone`); once they have, it runs to its end.
    pub(super) fn call_off_mpi(&mut self, key: Key, attempt: Attempt) {
        if let Some(run) = self.mpi_runs.get(&key)
            && !run.gone
        {
            for &rank in &run.pending {
                self.outbox
                    .push(Output::Worker(rank, ToWorker::CancelTask { key, attempt }));
            }
        }
    }

    /// Worker `from` reported its part of the MPI task `key` (whichever attempt): it is
    /// free for other work again.
    pub(super) fn mpi_member_done(&mut self, from: Rank, key: Key) {
        if let Some(index) = self.worker_index(from) {
            let worker = &mut self.workers[index];
            if worker
                .mpi
                .is_some_and(|seat| seat.key == key && seat.running)
            {
                worker.mpi = None;
                worker.processing.remove(&key);
                self.by_load
                    .set(index, policy::load_key(&self.workers[index]));
                self.needs_schedule = true;
            }
        }
        if let Some(run) = self.mpi_runs.get_mut(&key) {
            run.pending.retain(|r| *r != from);
            if run.pending.is_empty() {
                self.mpi_runs.remove(&key);
            }
        }
    }

    /// Notes that the MPI task `key` failed on `from` (for [`Scheduler::check_stuck_mpi`]).
    pub(super) fn mpi_failed(&mut self, from: Rank, key: Key, message: &str, now: Instant) {
        let name = self.key_name(key);
        if let Some(run) = self.mpi_runs.get_mut(&key)
            && run.failure.is_none()
        {
            run.failure = Some((name, from, message.to_string(), now));
        }
    }

    /// A member other than the first ended its part of the MPI task `key`; a failure fails
    /// the task (if it still runs this attempt).
    pub(super) fn on_mpi_part_done(
        &mut self,
        from: Rank,
        key: Key,
        attempt: Attempt,
        failure: Option<String>,
        now: Instant,
    ) {
        let member = self
            .mpi_runs
            .get(&key)
            .is_some_and(|run| run.members.contains(&from));
        let current = member
            && self.tasks.get(&key).is_some_and(|t| {
                t.attempt == attempt && matches!(t.state, TaskState::Processing { .. })
            });
        self.mpi_member_done(from, key);
        let Some(message) = failure else {
            return;
        };
        self.mpi_failed(from, key, &message, now);
        if !current {
            log::debug!("a stale part of MPI task {key} failed on {from}: {message}");
            return;
        }
        let failure = Arc::new(Failure {
            cause: self.key_name(key),
            message: format!("{message} (on worker {from}, one of the workers of this MPI task)"),
            cancelled: false,
        });
        self.fail(key, failure);
        self.needs_schedule = true;
    }

    /// Treats the workers that run an MPI task as heard from (their communication thread
    /// is inside the task, so they send nothing until it ends), and ends the job when some
    /// members of a failed MPI task are still in it [`STUCK_PARTS_GRACE`] after the
    /// failure: they wait in MPI for the member that failed.
    pub(super) fn check_mpi_runs(&mut self, now: Instant) {
        for worker in &mut self.workers {
            if worker.mpi.is_some_and(|seat| seat.running) {
                worker.last_seen = now;
            }
        }
        let stuck = self.mpi_runs.values().find_map(|run| {
            let (name, rank, message, at) = run.failure.as_ref()?;
            (now.saturating_duration_since(*at) > STUCK_PARTS_GRACE)
                .then(|| (name.clone(), *rank, message.clone(), run.pending.clone()))
        });
        if let Some((name, rank, message, pending)) = stuck {
            let ranks: Vec<String> = pending.iter().map(|r| r.0.to_string()).collect();
            let message = format!(
                "MPI task {} failed on worker {rank} ({message}), and worker rank(s) {} have \
                 not ended their part {} s later: they wait in MPI for the failed one, which \
                 only the end of the job releases; ending the job",
                name,
                ranks.join(", "),
                STUCK_PARTS_GRACE.as_secs()
            );
            self.abort(ExitCode::TaskFailed.code(), message);
        }
    }
}
