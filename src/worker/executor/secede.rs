//! Tasks that wait for other tasks: the thread given back while they wait ([`seceded`],
//! Dask's `secede`/`rejoin`), the awaited task run on the waiting task's own thread
//! ([`wait_for_task`]), and the extra threads kept for the drain loops started meanwhile
//! ([`Spares`]).

use super::{
    CURRENT, EXECUTOR, INLINE_DEPTH, ReadyTask, Shared, claim_loop, run_or_restore, start_drain,
};
use crate::protocol::{Key, Payload};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

/// Runs `wait` (a wait for other tasks) with this thread given back to its executor when
/// called from a task: another drain loop may run meanwhile (Dask's `secede`), and the task
/// goes on when `wait` returns (`rejoin`). Elsewhere it just runs `wait`.
pub fn seceded<R>(wait: impl FnOnce() -> R) -> R {
    seceded_awaiting(None, None, wait)
}

/// [`seceded`] for a wait that is for task `awaited` first, until `deadline`: when that
/// task is queued here and this thread will run it ([`wait_for_task`], when
/// [`may_run_inline`]), no other drain loop starts for it.
pub(crate) fn seceded_awaiting<R>(
    awaited: Option<Key>,
    deadline: Option<Instant>,
    wait: impl FnOnce() -> R,
) -> R {
    let Some((shared, pool)) = EXECUTOR
        .with(|e| e.borrow().clone())
        .and_then(|(shared, pool)| Some((shared, pool.upgrade()?)))
    else {
        return wait();
    };
    let task = CURRENT.with(|c| c.get());
    let report = |waiting: bool| {
        if let (Some(report), Some((key, attempt, _))) = (shared.secede_report.get(), task) {
            report(key, attempt, waiting);
        }
    };
    report(true);
    let start_loop = {
        let mut queue = shared.lock();
        queue.seceded += 1;
        let inline = awaited.is_some_and(|key| {
            may_run_inline(deadline)
                && queue
                    .tasks
                    .get(&key)
                    .is_some_and(|task| task.resources.is_empty())
        });
        // The awaited task is this thread's: a loop is for the others, if any.
        (!inline || queue.tasks.len() > 1) && claim_loop(&mut queue, shared.max_loops)
    };
    if start_loop {
        start_drain(&shared, &pool, true);
    }
    struct Rejoin<'a>(&'a Shared);
    impl Drop for Rejoin<'_> {
        fn drop(&mut self) {
            self.0.lock().seceded -= 1;
        }
    }
    let rejoin = Rejoin(&shared);
    let value = wait();
    drop(rejoin);
    report(false);
    value
}

/// Tasks run by a waiting task on its own thread, one inside the other, at most: each
/// holds the stack of the ones below it.
const MAX_INLINE_DEPTH: u32 = 8;

/// Whether a wait of this thread until `deadline` runs the awaited task itself when it is
/// queued here ([`wait_for_task`]): only without a deadline (a task run here could not be
/// stopped at the deadline), and fewer than [`MAX_INLINE_DEPTH`] tasks deep.
fn may_run_inline(deadline: Option<Instant>) -> bool {
    deadline.is_none() && INLINE_DEPTH.with(|d| d.get()) < MAX_INLINE_DEPTH
}

/// Parks the calling task, waiting for task `key` inside [`seceded`], until it is
/// unparked or `deadline` passes. When the task of `key` comes to this worker meanwhile
/// (or is queued here already), this thread runs it, as rayon's `join` runs the half it
/// waits for: no other thread is woken for it and this one does not sleep. Its value is
/// returned when it ran and succeeded (its outcome goes to the worker as any task's does).
///
/// Only the task waited for runs here, never another: a task below another on one stack
/// goes on only when the one above has finished, and the one above is what it waits for.
/// Outside a task's wait, or when not [`may_run_inline`], it only parks.
pub(crate) fn wait_for_task(key: Key, deadline: Option<Instant>) -> Option<Payload> {
    let executor = EXECUTOR
        .with(|e| e.borrow().clone())
        .and_then(|(shared, pool)| Some((shared, pool.upgrade()?)));
    let Some((shared, pool)) = executor.filter(|_| may_run_inline(deadline)) else {
        match deadline {
            Some(deadline) => {
                std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            None => std::thread::park(),
        }
        return None;
    };
    let queued = {
        let mut queue = shared.lock();
        match queue.tasks.get(&key) {
            Some(task) if task.resources.is_empty() => queue.take(key),
            _ => {
                // Another task of this worker that waits for it is its runner.
                queue
                    .awaited
                    .entry(key)
                    .or_insert_with(std::thread::current);
                None
            }
        }
    };
    let task = match queued {
        Some(task) => task,
        None => {
            std::thread::park();
            let mut queue = shared.lock();
            if queue
                .awaited
                .get(&key)
                .is_some_and(|t| t.id() == std::thread::current().id())
            {
                queue.awaited.remove(&key);
            }
            queue.handed.remove(&key)?
        }
    };
    run_inline(&shared, &pool, task)
}

/// Runs `task` on this thread, inside the wait (in [`seceded`]) of the task running here,
/// which counts as running again meanwhile; returns its value if it succeeded.
fn run_inline(
    shared: &Arc<Shared>,
    pool: &Arc<rayon::ThreadPool>,
    task: ReadyTask,
) -> Option<Payload> {
    shared.lock().seceded -= 1;
    let waiting = CURRENT.with(|c| c.replace(Some((task.key, task.attempt, task.priority))));
    INLINE_DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = run_or_restore(shared, &task);
    INLINE_DEPTH.with(|d| d.set(d.get() - 1));
    CURRENT.with(|c| c.set(waiting));
    let start_loop = {
        let mut queue = shared.lock();
        queue.seceded += 1;
        // What came while it ran and found every loop busy.
        claim_loop(&mut queue, shared.max_loops)
    };
    if start_loop {
        start_drain(shared, pool, true);
    }
    let value = outcome.result.as_ref().ok().cloned();
    (shared.report)(outcome);
    value
}

/// Extra threads (started for the tasks of seceded ones) that finished their loop, kept
/// for the next loop a while instead of ending.
pub(super) struct Spares {
    /// Threads waiting for a loop, less the loops sent to them and not taken yet.
    pub(super) idle: AtomicUsize,
    /// One message per loop for an idle thread to run.
    pub(super) wake: crossbeam_channel::Sender<()>,
    waiting: crossbeam_channel::Receiver<()>,
}

/// How long an extra thread waits for another loop before it ends.
const SPARE_IDLE: Duration = Duration::from_secs(5);

impl Spares {
    pub(super) fn new() -> Self {
        let (wake, waiting) = crossbeam_channel::unbounded();
        Spares {
            idle: AtomicUsize::new(0),
            wake,
            waiting,
        }
    }

    /// Waits (as an idle thread) until a loop is handed over: `true`, run it; `false`, end.
    pub(super) fn wait_for_loop(&self) -> bool {
        self.idle.fetch_add(1, AtomicOrdering::AcqRel);
        loop {
            if self.waiting.recv_timeout(SPARE_IDLE).is_ok() {
                return true;
            }
            // Leave, unless a loop was already promised to an idle thread: then take it.
            let left = self
                .idle
                .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                    n.checked_sub(1)
                })
                .is_ok();
            if left {
                return false;
            }
        }
    }
}
