//! Runs ready tasks on a rayon pool, each under `catch_unwind`, and reports every outcome
//! to the worker's communication thread.
//!
//! Ready tasks wait in a priority queue shared with the pool. At most `nthreads` drain
//! loops run on the pool at once; each pops the best task whose resources are free, runs it,
//! and pops again, so a busy worker starts its next task without a round trip through the
//! communication thread. Tasks still in the queue have not started and can be stolen.

use crate::protocol::Bytes;
use crate::protocol::{Attempt, Key, Payload, Rank, Resource, TaskCode};
use crate::task::{self, CallError, FunctionTable, TaskInput};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A task whose inputs are all present.
pub struct ReadyTask {
    /// Task key.
    pub key: Key,
    /// Placement number.
    pub attempt: Attempt,
    /// Function and argument slots.
    pub code: Arc<TaskCode>,
    /// The functions registered when it became ready (all those it names).
    pub functions: Arc<FunctionTable>,
    /// Dependency values in slot order.
    pub deps: Vec<Payload>,
    /// Higher runs first.
    pub priority: i32,
    /// Held while it runs.
    pub resources: Vec<Resource>,
    /// Arrival order, for FIFO among equal priorities.
    pub seq: u64,
}

impl PartialEq for ReadyTask {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ReadyTask {}
impl PartialOrd for ReadyTask {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ReadyTask {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.seq.cmp(&self.seq))
    }
}

/// What happened to a task.
pub struct TaskOutcome {
    /// Task key.
    pub key: Key,
    /// Placement number it ran under.
    pub attempt: Attempt,
    /// The encoded value, or what went wrong.
    pub result: Result<Bytes, CallError>,
    /// Time the function ran.
    pub duration: Duration,
    /// When it started, microseconds since the Unix epoch (for the task stream).
    pub started_us: u64,
    /// Index of the executor thread that ran it.
    pub thread: u32,
    /// Bytes of its inputs (arguments sent with it and dependency values).
    pub bytes_in: u64,
}

struct Queue {
    ready: BinaryHeap<ReadyTask>,
    active_loops: usize,
    free: Vec<Resource>,
}

/// Where outcomes go: the worker's event channel.
type Report = Box<dyn Fn(TaskOutcome) + Send + Sync>;

struct Shared {
    queue: Mutex<Queue>,
    max_loops: usize,
    report: Report,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock means a drain loop panicked outside a task, which is a bug; the
        // queue itself is still consistent (every mutation is a single call).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task runner of one worker.
pub struct Executor {
    pool: rayon::ThreadPool,
    shared: Arc<Shared>,
}

thread_local! {
    static WORKER_RANK: std::cell::Cell<Option<Rank>> = const { std::cell::Cell::new(None) };
}

/// `true` on threads that run tasks (their panics are reported to the client, not printed).
pub fn on_executor_thread() -> bool {
    WORKER_RANK.with(|r| r.get()).is_some()
}

/// The rank of the worker whose task is running on this thread; `None` outside tasks.
pub fn worker_rank() -> Option<Rank> {
    WORKER_RANK.with(|r| r.get())
}

/// Runs one task now, on this thread, turning a panic into an error.
pub fn run_task(task: &ReadyTask) -> TaskOutcome {
    let started_us = crate::trace::now_us();
    let started = Instant::now();
    let input = TaskInput {
        args: &task.code.args,
        deps: &task.deps,
        uses: &task.code.uses,
        functions: &task.functions,
    };
    let result = catch_unwind(AssertUnwindSafe(|| task::call(task.code.func, &input)))
        .unwrap_or_else(|payload| Err(CallError::Failed(crate::task::panic_message(&*payload))));
    let inline: usize = task
        .code
        .args
        .iter()
        .map(|slot| match slot {
            crate::protocol::ArgSlot::Value(bytes) => bytes.len(),
            _ => 0,
        })
        .sum();
    let read: usize = task.deps.iter().map(|value| value.len()).sum();
    TaskOutcome {
        key: task.key,
        attempt: task.attempt,
        result,
        duration: started.elapsed(),
        started_us,
        thread: rayon::current_thread_index().unwrap_or(0) as u32,
        bytes_in: (inline + read) as u64,
    }
}

fn take_resources(free: &mut [Resource], wanted: &[Resource]) -> bool {
    let available = wanted.iter().all(|want| {
        free.iter()
            .any(|have| have.name == want.name && have.amount >= want.amount)
    });
    if available {
        for want in wanted {
            if let Some(have) = free.iter_mut().find(|h| h.name == want.name) {
                have.amount -= want.amount;
            }
        }
    }
    available
}

fn give_back(free: &mut [Resource], held: &[Resource]) {
    for r in held {
        if let Some(have) = free.iter_mut().find(|h| h.name == r.name) {
            have.amount += r.amount;
        }
    }
}

impl Executor {
    /// The executor of worker `rank`: `nthreads` threads, the given resources, handing
    /// every outcome to `report`; `on_thread_start` runs first on every thread.
    pub fn new(
        rank: Rank,
        nthreads: usize,
        resources: Vec<Resource>,
        report: impl Fn(TaskOutcome) + Send + Sync + 'static,
        on_thread_start: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(nthreads)
            .thread_name(move |i| format!("mpidask-r{}-t{i}", rank.0))
            .start_handler(move |_| {
                crate::process::lower_current_thread_priority();
                WORKER_RANK.with(|r| r.set(Some(rank)));
                on_thread_start();
            })
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Executor {
            pool,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    ready: BinaryHeap::new(),
                    active_loops: 0,
                    free: resources,
                }),
                max_loops: nthreads,
                report: Box::new(report),
            }),
        })
    }

    /// Queues a ready task.
    pub fn push(&self, task: ReadyTask) {
        let start_loop = {
            let mut queue = self.shared.lock();
            queue.ready.push(task);
            let start = queue.active_loops < self.shared.max_loops;
            if start {
                queue.active_loops += 1;
            }
            start
        };
        if start_loop {
            let shared = self.shared.clone();
            self.pool.spawn(move || drain(&shared));
        }
    }

    /// Removes a queued (not started) task; `true` if it was queued.
    pub fn remove(&self, key: Key, attempt: Attempt) -> bool {
        let mut queue = self.shared.lock();
        let before = queue.ready.len();
        queue
            .ready
            .retain(|t| !(t.key == key && t.attempt == attempt));
        queue.ready.len() != before
    }

    /// Drops every queued task (at shutdown).
    pub fn clear(&self) {
        self.shared.lock().ready.clear();
    }

    /// Tasks queued and not started.
    pub fn queued(&self) -> usize {
        self.shared.lock().ready.len()
    }
}

/// Pops the best task whose resources are free, reserving them.
fn pop_runnable(queue: &mut Queue) -> Option<ReadyTask> {
    let mut blocked = Vec::new();
    let mut found = None;
    while let Some(task) = queue.ready.pop() {
        if task.resources.is_empty() || take_resources(&mut queue.free, &task.resources) {
            found = Some(task);
            break;
        }
        blocked.push(task);
    }
    queue.ready.extend(blocked);
    found
}

fn drain(shared: &Shared) {
    loop {
        let task = {
            let mut queue = shared.lock();
            match pop_runnable(&mut queue) {
                Some(task) => task,
                None => {
                    queue.active_loops -= 1;
                    return;
                }
            }
        };
        let outcome = run_task(&task);
        if !task.resources.is_empty() {
            give_back(&mut shared.lock().free, &task.resources);
        }
        // The communication thread outlives the pool except at exit, when results no
        // longer matter.
        (shared.report)(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, amount: f64) -> Resource {
        Resource {
            name: name.into(),
            amount,
        }
    }

    #[test]
    fn resources_are_taken_and_given_back() {
        let mut free = vec![resource("gpu", 1.0)];
        assert!(take_resources(&mut free, &[resource("gpu", 1.0)]));
        assert!(!take_resources(&mut free, &[resource("gpu", 1.0)]));
        give_back(&mut free, &[resource("gpu", 1.0)]);
        assert!(take_resources(&mut free, &[resource("gpu", 0.5)]));
        assert!(!take_resources(&mut free, &[resource("ssd", 1.0)]));
    }

    #[test]
    fn higher_priority_pops_first_then_fifo() {
        let task = |key: u64, priority: i32, seq: u64| ReadyTask {
            key: Key(key),
            attempt: 1,
            code: Arc::new(TaskCode {
                func: crate::protocol::FnId(0),
                uses: vec![].into(),
                args: vec![].into(),
            }),
            functions: Arc::new(FunctionTable::new(0)),
            deps: vec![],
            priority,
            resources: vec![],
            seq,
        };
        let mut queue = Queue {
            ready: BinaryHeap::new(),
            active_loops: 0,
            free: vec![],
        };
        queue
            .ready
            .extend([task(1, 0, 0), task(2, 5, 1), task(3, 0, 2)]);
        let order: Vec<u64> = std::iter::from_fn(|| pop_runnable(&mut queue))
            .map(|t| t.key.0)
            .collect();
        assert_eq!(order, vec![2, 1, 3]);
    }
}
