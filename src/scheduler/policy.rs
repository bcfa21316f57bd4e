//! Placement policy: how many tasks a worker may queue and which worker a ready task goes to.

use super::state::{Task, TaskState, Worker};
use crate::keymap::KeyMap;
use smallvec::SmallVec;

/// Bandwidth assumed for moving a task's inputs between workers, bytes per second: what a
/// move of a fresh 32 MB chunk between two busy workers took on the 2-core test machine
/// (80 to 270 ms), not the 5 GB/s of an idle one. Underestimating it sends tasks away from
/// their data to save a few milliseconds of queueing.
pub const NOMINAL_BANDWIDTH: f64 = 5.0e8;

/// Queued work the scheduler aims to keep on each worker thread, seconds. Enough to hide the
/// round trip to the scheduler, small enough that stealing rarely has to move work.
pub const TARGET_QUEUE_SECONDS: f64 = 0.02;

/// Most tasks queued per worker thread beyond the running one.
pub const MAX_QUEUE_DEPTH: usize = 1000;

/// Task duration assumed before any task has finished, seconds.
pub const DEFAULT_TASK_SECONDS: f64 = 0.005;

/// Tasks a worker thread may have queued beyond the one it runs, for tasks that take
/// `mean_task_seconds` on average.
pub fn queue_depth(mean_task_seconds: Option<f64>) -> usize {
    let mean = mean_task_seconds.unwrap_or(DEFAULT_TASK_SECONDS).max(1e-7);
    ((TARGET_QUEUE_SECONDS / mean) as usize).clamp(1, MAX_QUEUE_DEPTH)
}

/// A worker's load as an integer for ordering: tasks held per thread, in 1/2^20 units.
pub fn load_key(worker: &Worker) -> u64 {
    ((worker.processing.len() as u64) << 20) / worker.nthreads().max(1) as u64
}

/// Tasks `worker` may hold (running plus queued).
pub fn slots(worker: &Worker, depth: usize) -> usize {
    worker.nthreads() * (1 + depth)
}

/// `true` if `worker` may ever run `task` (rank and resource restrictions).
pub fn is_eligible(task: &Task, worker: &Worker) -> bool {
    worker.hello.is_some()
        && (task.allowed_workers.is_empty() || task.allowed_workers.contains(&worker.rank))
        && worker.has_resources(&task.resources)
}

/// Bytes of `task`'s inputs that `worker` does not hold yet.
pub fn missing_bytes(task: &Task, worker: &Worker, tasks: &KeyMap<Task>) -> u64 {
    task.deps
        .iter()
        .filter_map(|dep| tasks.get(dep))
        .filter_map(|dep| match &dep.state {
            TaskState::Memory { who_has } if !who_has.contains(&worker.rank) => Some(dep.nbytes),
            _ => None,
        })
        .sum()
}

/// The most a task's inputs may take to fetch, in multiples of its own run, for the task to
/// go (or be stolen) elsewhere than where they are. Dask never steals a task whose
/// transfer takes more than about 100 times its run, estimated at 100 MB/s: 20 times at our
/// [`NOMINAL_BANDWIDTH`].
pub const MAX_TRANSFER_PER_RUN: f64 = 20.0;

/// `true` if a queued task is worth moving to an idle worker that lacks `missing_bytes` of
/// its inputs: fetching them takes at most half as long as running the task (Dask's rule
/// for stealing, transfer cost against compute time, with a margin: the transfer also costs
/// the sender's and the receiver's CPU, and task times are means), or at most half as long
/// as the task would still wait where it is (`victim_wait`: the work queued ahead of it,
/// per thread) and at most [`MAX_TRANSFER_PER_RUN`] times its run. A 200 MB chunk summed
/// in 50 ms stays where it is; so does a 32 MB chunk reduced in 100 ms, and a slice of a
/// 32 MB chunk that takes 0.1 ms however long the queue ahead of it; a product of 190 MB of
/// blocks that runs 0.6 s moves when two more like it are queued before it.
pub fn worth_moving(missing_bytes: u64, task_seconds: Option<f64>, victim_wait: f64) -> bool {
    let transfer = missing_bytes as f64 / NOMINAL_BANDWIDTH;
    let run = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    2.0 * transfer <= run
        || (2.0 * transfer <= victim_wait && transfer <= MAX_TRANSFER_PER_RUN * run)
}

/// Seconds of work a worker with `nthreads` threads has queued per thread, `queued` tasks
/// beyond its running ones, if each takes `task_seconds`.
pub fn queued_seconds(queued: usize, nthreads: usize, task_seconds: Option<f64>) -> f64 {
    queued as f64 * task_seconds.unwrap_or(DEFAULT_TASK_SECONDS) / nthreads.max(1) as f64
}

/// Estimated time until `task` could start on `worker`, which lacks `missing_bytes` of its
/// inputs: its queue drained over its threads plus their transfer. Lower is better.
pub fn start_time_estimate(worker: &Worker, missing_bytes: u64, task_seconds: Option<f64>) -> f64 {
    let mean = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    let queue = (worker.processing.len() + 1) as f64 / worker.nthreads().max(1) as f64 * mean;
    queue + missing_bytes as f64 / NOMINAL_BANDWIDTH
}

/// The worker for a ready task: among the `candidates` that may run it and have a free
/// slot, the one with the earliest estimated start (least loaded, preferring the holder of
/// most input bytes); ties go to the lower rank. `None` when no candidate has a free slot,
/// or when a full one would still start it sooner (its inputs are large, and moving them
/// costs more than waiting for their holder): the task then waits. A candidate whose inputs
/// to fetch (beyond the fewest any candidate lacks) take more than [`MAX_TRANSFER_PER_RUN`]
/// times the task's run is not considered, however long the queues elsewhere: a slice of a
/// 32 MB chunk runs where the chunk is. The scheduler passes the workers holding the task's
/// inputs plus the least loaded worker, so a choice does not scan every worker.
/// `mean_task_seconds` (of all tasks) sets the queue depth; `task_seconds` (of the task's
/// group) the estimates.
pub fn choose_worker<'w>(
    task: &Task,
    candidates: impl Iterator<Item = &'w Worker>,
    tasks: &KeyMap<Task>,
    mean_task_seconds: Option<f64>,
    task_seconds: Option<f64>,
) -> Option<&'w Worker> {
    let depth = queue_depth(mean_task_seconds);
    // The holders of the task's inputs and the least loaded worker: a few, on the stack.
    let eligible: SmallVec<[(&Worker, u64); 4]> = candidates
        .filter(|w| is_eligible(task, w))
        .map(|w| (w, missing_bytes(task, w, tasks)))
        .collect();
    let fewest = eligible.iter().map(|&(_, m)| m).min().unwrap_or(0);
    let run = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    let mut best_free: Option<(f64, &Worker)> = None;
    let mut best_any = f64::INFINITY;
    for (w, missing) in eligible {
        if (missing - fewest) as f64 / NOMINAL_BANDWIDTH > MAX_TRANSFER_PER_RUN * run {
            continue;
        }
        let estimate = start_time_estimate(w, missing, task_seconds);
        best_any = best_any.min(estimate);
        if w.processing.len() < slots(w, depth)
            && best_free
                .is_none_or(|(e, b)| estimate.total_cmp(&e).then(w.rank.cmp(&b.rank)).is_lt())
        {
            best_free = Some((estimate, w));
        }
    }
    best_free
        .filter(|(estimate, _)| *estimate <= best_any)
        .map(|(_, w)| w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ArgSlot, FnId, Key, Rank, TaskCode, TaskOptions, WorkerHello};
    use std::time::Instant;

    fn worker(rank: u32, queued: u64) -> Worker {
        let mut w = Worker::new(Rank(rank), Instant::now());
        w.hello = Some(WorkerHello {
            nthreads: 1,
            resources: vec![],
            host: "h".into(),
            pid: 1,
            memory_limit: None,
            memory_limit_source: String::new(),
        });
        w.processing = (0..queued)
            .map(|k| Key(1000 * u64::from(rank) + k))
            .collect();
        w
    }

    /// Key 1, `nbytes` long, held by rank 2; key 2 reads it.
    fn chunk_and_reader(nbytes: u64) -> (KeyMap<Task>, Task) {
        let code = |deps: &[u64]| TaskCode {
            func: FnId(0),
            uses: Box::new([]),
            args: deps.iter().map(|&d| ArgSlot::Future(Key(d))).collect(),
        };
        let mut chunk = Task::new(code(&[]), TaskOptions::default(), vec![], 0);
        chunk.nbytes = nbytes;
        chunk.state = TaskState::Memory {
            who_has: vec![Rank(2)].into(),
        };
        let mut tasks = KeyMap::new();
        tasks.insert(Key(1), chunk);
        let reader = Task::new(code(&[1]), TaskOptions::default(), vec![Key(1)], 1);
        (tasks, reader)
    }

    #[test]
    fn short_tasks_stay_with_a_large_input_however_long_its_holders_queue() {
        // A slice of a 32 MB chunk (64 ms to fetch) that runs 0.5 ms: its holder has 131
        // tasks placed (66 ms at 0.5 ms each), the other worker none. Fetching would cost
        // 128 times the slice's run: it waits for the holder.
        let (tasks, slice) = chunk_and_reader(32_000_000);
        let (holder, other) = (worker(2, 131), worker(3, 0));
        let choose = |holder: &Worker, run: f64| {
            choose_worker(
                &slice,
                [holder, &other].into_iter(),
                &tasks,
                Some(run),
                Some(run),
            )
            .map(|w| w.rank)
        };
        assert_eq!(choose(&holder, 5e-4), None);
        // A task that runs 5 ms is worth the fetch (12.8 times its run) when the holder's
        // queue is long enough.
        assert_eq!(choose(&holder, 5e-3), Some(Rank(3)));
        // With nothing queued the holder takes it.
        assert_eq!(choose(&worker(2, 0), 5e-4), Some(Rank(2)));
    }

    #[test]
    fn queue_depth_follows_task_duration() {
        assert_eq!(queue_depth(Some(1.0)), 1);
        assert_eq!(queue_depth(Some(0.002)), 10);
        assert_eq!(queue_depth(Some(1e-9)), MAX_QUEUE_DEPTH);
        assert_eq!(queue_depth(None), 4);
    }

    #[test]
    fn moving_pays_when_the_transfer_is_shorter_than_the_task() {
        assert!(worth_moving(0, None, 0.0));
        assert!(!worth_moving(200_000_000, Some(0.05), 0.0));
        assert!(worth_moving(200_000_000, Some(1.0), 0.0));
        assert!(worth_moving(1_000_000, None, 0.0));
        assert!(!worth_moving(100_000_000, None, 0.0));
        // A long task queued behind others moves although its own run is shorter than the
        // transfer's margin.
        assert!(!worth_moving(190_000_000, Some(0.6), 0.6));
        assert!(worth_moving(190_000_000, Some(0.6), 1.2));
        // A slice of a 32 MB chunk does not, however long the queue it waits in: the
        // transfer would cost hundreds of times the work it takes off the victim.
        assert!(!worth_moving(32_000_000, Some(0.000_1), 10.0));
        assert!(worth_moving(32_000_000, Some(0.01), 10.0));
    }
}
