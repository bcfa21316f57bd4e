//! Runs ready tasks on a rayon pool, each under `catch_unwind`, and reports every outcome
//! to the worker's communication thread.
//!
//! Ready tasks wait in a priority queue shared with the pool. At most `nthreads` drain
//! loops run on the pool at once; each pops the best task whose resources are free, runs it,
//! and pops again, so a busy worker starts its next task without a round trip through the
//! communication thread. Tasks still in the queue have not started and can be stolen.
//!
//! A task that waits for other tasks (through its task client) gives its thread back while
//! it waits, as Dask's `secede`/`rejoin` do ([`seceded`]): one more drain loop may run, on a
//! thread started for it, so a recursion deeper than the thread count cannot deadlock. When
//! the wait ends the task goes on at once, and the first loop to finish a task while more
//! loops run than threads were given ends, so the excess lasts one task at most. The task
//! it waits for, when it comes to this worker (or is queued here), runs on the waiting
//! task's own thread ([`wait_for_task`]): it is handed over, not queued, and its value
//! goes straight to the waiting task.

use crate::protocol::Bytes;
use crate::protocol::{Attempt, Key, Payload, Rank, Resource, TaskCode};
use crate::task::{self, CallError, FunctionTable, TaskInput};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

mod secede;

use secede::Spares;
pub use secede::seceded;
pub(crate) use secede::{seceded_awaiting, wait_for_task};

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

/// A queued task's place in the queue: the task itself is in [`Queue::tasks`] (an entry
/// whose task was taken or removed is skipped when it comes up).
#[derive(PartialEq, Eq)]
struct Order {
    priority: i32,
    seq: u64,
    key: Key,
    attempt: Attempt,
}

impl PartialOrd for Order {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Order {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.seq.cmp(&self.seq))
            .then(self.key.0.cmp(&other.key.0))
            .then(self.attempt.cmp(&other.attempt))
    }
}

/// What happened to a task.
pub struct TaskOutcome {
    /// Task key.
    pub key: Key,
    /// Placement number it ran under.
    pub attempt: Attempt,
    /// The encoded value, or what went wrong.
    pub result: Result<Payload, CallError>,
    /// Time the function ran.
    pub duration: Duration,
    /// When it started, microseconds since the Unix epoch (for the task stream).
    pub started_us: u64,
    /// Index of the executor thread that ran it.
    pub thread: u32,
    /// Bytes of its inputs (arguments sent with it and dependency values).
    pub bytes_in: u64,
    /// The result was loaded from the checkpoint directory: the function did not run.
    pub restored: bool,
}

struct Queue {
    /// The order of the queued tasks.
    ready: BinaryHeap<Order>,
    /// The queued tasks.
    tasks: FxHashMap<Key, ReadyTask>,
    active_loops: usize,
    /// Loops whose task waits for other tasks, having given its thread back.
    seceded: usize,
    free: Vec<Resource>,
    /// Keys a waiting task of this worker waits for, with its thread: when such a task
    /// comes, that thread runs it ([`wait_for_task`]).
    awaited: FxHashMap<Key, std::thread::Thread>,
    /// Tasks handed to the thread that waits for them, not taken yet.
    handed: FxHashMap<Key, ReadyTask>,
}

impl Queue {
    /// Loops that run tasks now.
    fn running_loops(&self) -> usize {
        self.active_loops.saturating_sub(self.seceded)
    }

    /// Queues `task`.
    fn insert(&mut self, task: ReadyTask) {
        self.ready.push(Order {
            priority: task.priority,
            seq: task.seq,
            key: task.key,
            attempt: task.attempt,
        });
        // A newer placement of a key replaces the one queued (whose outcome would be stale).
        self.tasks.insert(task.key, task);
    }

    /// Takes the queued task `key` out of the queue (its entry in the order is skipped).
    fn take(&mut self, key: Key) -> Option<ReadyTask> {
        let task = self.tasks.remove(&key);
        if self.tasks.is_empty() {
            // Only skipped entries are left.
            self.ready.clear();
        }
        task
    }

    /// Whether a task waits in the queue (its order may still hold skipped entries).
    fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }
}

/// Where outcomes go: the worker's event channel.
type Report = Box<dyn Fn(TaskOutcome) + Send + Sync>;

struct Shared {
    queue: Mutex<Queue>,
    max_loops: usize,
    report: Report,
    rank: Rank,
    /// Runs first on every thread that runs tasks.
    on_thread_start: Arc<dyn Fn() + Send + Sync>,
    /// Told when a task starts waiting for others (`true`) and when it goes on.
    secede_report: std::sync::OnceLock<SecedeReport>,
    /// Extra threads waiting for a loop to run.
    spares: Spares,
    /// `--checkpoint`.
    checkpoint: std::sync::OnceLock<CheckpointDir>,
}

/// Where [`seceded`] reports a task's wait: the worker's event channel.
type SecedeReport = Box<dyn Fn(Key, Attempt, bool) + Send + Sync>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock means a drain loop panicked outside a task, which is a bug; the
        // queue itself is still consistent (every mutation is a single call).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task runner of one worker.
pub struct Executor {
    pool: Arc<rayon::ThreadPool>,
    shared: Arc<Shared>,
}

thread_local! {
    static WORKER_RANK: std::cell::Cell<Option<Rank>> = const { std::cell::Cell::new(None) };
    /// The task running on this thread.
    static CURRENT: std::cell::Cell<Option<(Key, Attempt, i32)>> =
        const { std::cell::Cell::new(None) };
    /// Tasks this thread runs inside the waits of others ([`wait_for_task`]).
    static INLINE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The executor whose tasks this thread runs (weak: the pool's own threads must not
    /// keep it alive).
    static EXECUTOR: std::cell::RefCell<Option<(Arc<Shared>, Weak<rayon::ThreadPool>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The stack of a thread that runs tasks: four times Rust's default for a thread, as the
/// tasks a waiting task runs itself ([`MAX_INLINE_DEPTH`]) share it (address space only:
/// pages are used as the stack grows).
const TASK_STACK_BYTES: usize = 8 << 20;

/// The priority of the task running on this thread (`None` outside tasks).
pub fn current_priority() -> Option<i32> {
    CURRENT.with(|c| c.get()).map(|(_, _, priority)| priority)
}

/// Counts one more drain loop if fewer than `max_loops` run tasks and a task waits.
fn claim_loop(queue: &mut Queue, max_loops: usize) -> bool {
    let start = queue.running_loops() < max_loops && queue.has_tasks();
    if start {
        queue.active_loops += 1;
    }
    start
}

/// Starts a drain loop: on the pool, or on a thread of its own while some of the pool's
/// threads wait in seceded tasks (the pool might have no free thread for it).
fn start_drain(shared: &Arc<Shared>, pool: &Arc<rayon::ThreadPool>, own_thread: bool) {
    let (shared, pool) = (shared.clone(), pool.clone());
    if !own_thread {
        let inner = pool.clone();
        pool.spawn(move || drain(&shared, &inner));
        return;
    }
    // An idle extra thread takes the loop if there is one.
    let idle = &shared.spares.idle;
    if idle
        .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
            n.checked_sub(1)
        })
        .is_ok()
    {
        let _ = shared.spares.wake.send(());
        return;
    }
    let name = format!("mpidask-r{}-s", shared.rank.0);
    let weak_pool = Arc::downgrade(&pool);
    let spawned = std::thread::Builder::new()
        .name(name)
        .stack_size(TASK_STACK_BYTES)
        .spawn({
            let shared = shared.clone();
            move || {
                enter_thread(&shared, &pool);
                drop(pool);
                loop {
                    let Some(pool) = weak_pool.upgrade() else {
                        return;
                    };
                    drain(&shared, &pool);
                    drop(pool);
                    if !shared.spares.wait_for_loop() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without a new thread the queued tasks wait for a running one to finish.
        log::warn!("cannot start a thread for the tasks of a seceded one: {e}");
        shared.lock().active_loops -= 1;
    }
}

/// Makes the calling thread one of the executor's task threads.
fn enter_thread(shared: &Arc<Shared>, pool: &Arc<rayon::ThreadPool>) {
    crate::process::lower_current_thread_priority();
    WORKER_RANK.with(|r| r.set(Some(shared.rank)));
    EXECUTOR.with(|e| *e.borrow_mut() = Some((shared.clone(), Arc::downgrade(pool))));
    (shared.on_thread_start)();
}

/// `true` on threads that run tasks (their panics are reported to the client, not printed).
pub fn on_executor_thread() -> bool {
    WORKER_RANK.with(|r| r.get()).is_some()
}

/// The rank of the worker whose task is running on this thread; `None` outside tasks.
pub fn worker_rank() -> Option<Rank> {
    WORKER_RANK.with(|r| r.get())
}

/// Runs `f` on this thread as a task of worker `rank` (its panic is recorded for the
/// task's error, not printed): for an MPI task, which the communication thread runs.
pub(crate) fn as_task_of<R>(rank: Rank, f: impl FnOnce() -> R) -> R {
    let before = WORKER_RANK.with(|r| r.replace(Some(rank)));
    let result = f();
    WORKER_RANK.with(|r| r.set(before));
    result
}

/// Runs one task now, on this thread, turning a panic into an error.
pub fn run_task(task: &ReadyTask) -> TaskOutcome {
    let input = TaskInput::of(&task.code, &task.deps, &task.functions);
    let bytes_in = input.bytes_read();
    let started_us = crate::trace::now_us();
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| task::call(task.code.func, &input)))
        .unwrap_or_else(|payload| Err(CallError::Failed(crate::task::panic_message(&*payload))));
    TaskOutcome {
        key: task.key,
        attempt: task.attempt,
        result: result.map(Arc::new),
        duration: started.elapsed(),
        started_us,
        thread: rayon::current_thread_index().unwrap_or(0) as u32,
        bytes_in,
        restored: false,
    }
}

/// The checkpoint directory results are loaded from and written to (`--checkpoint`).
struct CheckpointDir {
    path: std::path::PathBuf,
    /// A failed write was warned about (once per worker).
    warned: std::sync::atomic::AtomicBool,
}

/// Runs `task`, or loads its result from the checkpoint directory when an earlier run of
/// the job left it there; a result computed here is written there (on this task thread,
/// so the communication thread never waits for the disk).
fn run_or_restore(shared: &Shared, task: &ReadyTask) -> TaskOutcome {
    let (Some(dir), Some(name)) = (shared.checkpoint.get(), task.code.checkpoint.as_deref()) else {
        return run_task(task);
    };
    let started_us = crate::trace::now_us();
    let started = Instant::now();
    match crate::checkpoint::read_result(&dir.path, *name) {
        Ok(value) => {
            return TaskOutcome {
                key: task.key,
                attempt: task.attempt,
                result: Ok(Arc::new(Bytes::from(value))),
                duration: started.elapsed(),
                started_us,
                thread: rayon::current_thread_index().unwrap_or(0) as u32,
                bytes_in: 0,
                restored: true,
            };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "checkpoint: cannot load {e}; task {} is computed again and its file replaced",
            task.key
        ),
    }
    let outcome = run_task(task);
    if let Ok(value) = &outcome.result
        && let Err(e) = crate::checkpoint::write_result(&dir.path, *name, value.as_pieces())
        && !dir.warned.swap(true, AtomicOrdering::Relaxed)
    {
        log::warn!(
            "worker {}: cannot write a result into the checkpoint directory {}: {e}; its \
             results are not kept for the next run (said once)",
            shared.rank,
            dir.path.display()
        );
    }
    outcome
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ready: BinaryHeap::new(),
                tasks: FxHashMap::default(),
                active_loops: 0,
                seceded: 0,
                free: resources,
                awaited: FxHashMap::default(),
                handed: FxHashMap::default(),
            }),
            max_loops: nthreads,
            report: Box::new(report),
            rank,
            on_thread_start: Arc::new(on_thread_start),
            secede_report: std::sync::OnceLock::new(),
            spares: Spares::new(),
            checkpoint: std::sync::OnceLock::new(),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(nthreads)
            .thread_name(move |i| format!("mpidask-r{}-t{i}", rank.0))
            .stack_size(TASK_STACK_BYTES)
            .start_handler({
                let shared = shared.clone();
                move |_| {
                    crate::process::lower_current_thread_priority();
                    WORKER_RANK.with(|r| r.set(Some(rank)));
                    (shared.on_thread_start)();
                }
            })
            .build()
            .map_err(std::io::Error::other)?;
        // The pool's threads learn their executor in `drain`, once the pool exists.
        Ok(Executor {
            pool: Arc::new(pool),
            shared,
        })
    }

    /// Tells `report` when a task starts waiting for others, having given its thread back
    /// (`true`), and when it goes on (`false`). Call it before any task is queued.
    pub fn with_secede_report(
        self,
        report: impl Fn(Key, Attempt, bool) + Send + Sync + 'static,
    ) -> Self {
        let _ = self.shared.secede_report.set(Box::new(report));
        self
    }

    /// Loads results of tasks named for checkpoints from `dir` (`--checkpoint`, if given)
    /// when they are there, and writes those it computes there. Call it before any task is
    /// queued.
    pub fn with_checkpoint_dir(self, dir: Option<std::path::PathBuf>) -> Self {
        if let Some(path) = dir {
            let _ = self.shared.checkpoint.set(CheckpointDir {
                path,
                warned: std::sync::atomic::AtomicBool::new(false),
            });
        }
        self
    }

    /// Queues a ready task, or hands it to the waiting task that waits for it.
    pub fn push(&self, task: ReadyTask) {
        let (start_loop, own_thread) = {
            let mut queue = self.shared.lock();
            if task.resources.is_empty()
                && let Some(thread) = queue.awaited.remove(&task.key)
            {
                queue.handed.insert(task.key, task);
                drop(queue);
                thread.unpark();
                return;
            }
            queue.insert(task);
            (
                claim_loop(&mut queue, self.shared.max_loops),
                queue.seceded > 0,
            )
        };
        if start_loop {
            start_drain(&self.shared, &self.pool, own_thread);
        }
    }

    /// Removes a queued (not started) task, handing it back (`None` if it was not queued).
    pub fn remove(&self, key: Key, attempt: Attempt) -> Option<ReadyTask> {
        let mut queue = self.shared.lock();
        let queue = &mut *queue;
        for tasks in [&mut queue.tasks, &mut queue.handed] {
            if tasks.get(&key).is_some_and(|t| t.attempt == attempt) {
                return tasks.remove(&key);
            }
        }
        None
    }

    /// Drops every queued task (at shutdown).
    pub fn clear(&self) {
        let mut queue = self.shared.lock();
        queue.ready.clear();
        queue.tasks.clear();
        queue.handed.clear();
    }

    /// Tasks queued and not started.
    pub fn queued(&self) -> usize {
        let queue = self.shared.lock();
        queue.tasks.len() + queue.handed.len()
    }

    /// Whether the threads have work ahead of them: a task runs (not waiting for others)
    /// and at least as many tasks as there are threads (two at the least) wait for one.
    /// Each running task ends by itself, so a backlog always drains.
    pub fn backlogged(&self) -> bool {
        let queue = self.shared.lock();
        queue.running_loops() > 0
            && queue.tasks.len() + queue.handed.len() >= self.shared.max_loops.max(2)
    }
}

/// Pops the best task whose resources are free, reserving them.
fn pop_runnable(queue: &mut Queue) -> Option<ReadyTask> {
    let mut blocked = Vec::new();
    let mut found = None;
    while let Some(order) = queue.ready.pop() {
        let Some(task) = queue
            .tasks
            .get(&order.key)
            .filter(|t| t.attempt == order.attempt)
        else {
            continue; // taken or removed
        };
        if task.resources.is_empty() || take_resources(&mut queue.free, &task.resources) {
            found = queue.tasks.remove(&order.key);
            break;
        }
        blocked.push(order);
    }
    queue.ready.extend(blocked);
    if queue.tasks.is_empty() {
        // Only entries of tasks taken or removed are left.
        queue.ready.clear();
    }
    found
}

fn drain(shared: &Arc<Shared>, pool: &Arc<rayon::ThreadPool>) {
    EXECUTOR.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some((shared.clone(), Arc::downgrade(pool)));
        }
    });
    loop {
        let task = {
            let mut queue = shared.lock();
            // A seceded task has rejoined while its replacement ran: one loop too many.
            let excess = queue.running_loops() > shared.max_loops;
            match if excess {
                None
            } else {
                pop_runnable(&mut queue)
            } {
                Some(task) => task,
                None => {
                    queue.active_loops -= 1;
                    return;
                }
            }
        };
        CURRENT.with(|c| c.set(Some((task.key, task.attempt, task.priority))));
        let outcome = run_or_restore(shared, &task);
        CURRENT.with(|c| c.set(None));
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
    fn higher_priority_pops_first_then_fifo_skipping_tasks_taken_or_placed_again() {
        let task = |key: u64, priority: i32, seq: u64| ReadyTask {
            key: Key(key),
            attempt: 1,
            code: Arc::new(TaskCode {
                func: crate::protocol::FnId(0),
                uses: vec![].into(),
                args: vec![].into(),
                checkpoint: None,
            }),
            functions: Arc::new(FunctionTable::new(0)),
            deps: vec![],
            priority,
            resources: vec![],
            seq,
        };
        let mut queue = Queue {
            ready: BinaryHeap::new(),
            tasks: FxHashMap::default(),
            active_loops: 0,
            seceded: 0,
            free: vec![],
            awaited: FxHashMap::default(),
            handed: FxHashMap::default(),
        };
        for t in [task(1, 0, 0), task(2, 5, 1), task(3, 0, 2), task(4, 9, 3)] {
            queue.insert(t);
        }
        // One taken by a task waiting for it, one placed again (a later attempt).
        assert_eq!(queue.take(Key(4)).map(|t| t.key), Some(Key(4)));
        let mut again = task(3, 0, 4);
        again.attempt = 2;
        queue.insert(again);
        let order: Vec<(u64, Attempt)> = std::iter::from_fn(|| pop_runnable(&mut queue))
            .map(|t| (t.key.0, t.attempt))
            .collect();
        assert_eq!(order, vec![(2, 1), (1, 1), (3, 2)]);
        assert!(queue.ready.is_empty() && queue.tasks.is_empty());
    }
}
