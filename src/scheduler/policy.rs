//! Placement policy: how many tasks a worker may queue and which worker a ready task goes to.

use super::state::{Task, TaskState, Worker};
use crate::keymap::KeyMap;
use crate::protocol::Rank;
use smallvec::SmallVec;

/// Bandwidth assumed for moving a task's inputs between workers, bytes per second: what a
/// move of a fresh 32 MB chunk between two busy workers took on the 2-core test machine
/// (80 to 270 ms), not the 5 GB/s of an idle one. Underestimating it sends tasks away from
/// their data to save a few milliseconds of queueing.
pub const NOMINAL_BANDWIDTH: f64 = 5.0e8;

/// Bandwidth assumed for inputs that come from another node, bytes per second: a quarter of
/// [`NOMINAL_BANDWIDTH`]. A node's network link is shared by all of its workers (a 100 Gb/s
/// link among 32 workers gives each about 400 MB/s, less than a copy through shared memory
/// gives), and every byte crosses the kernel's or the adapter's queues twice; so a task goes
/// to another node for its inputs only when its run is long enough to pay for that.
pub const INTERNODE_BANDWIDTH: f64 = NOMINAL_BANDWIDTH / 4.0;

/// The longest fetch of computed inputs, seconds, for which a task is placed beside the
/// worker still computing its other inputs (saving the round trip to the scheduler once
/// they are done): about such a round trip, 50 KB from the same node.
pub const BESIDE_RUNNING_MAX_FETCH: f64 = 1e-4;

/// Queued work the scheduler aims to keep on each worker thread, seconds. Enough to hide the
/// round trip to the scheduler, small enough that stealing rarely has to move work.
pub const TARGET_QUEUE_SECONDS: f64 = 0.02;

/// Most tasks queued per worker thread beyond the running one.
pub const MAX_QUEUE_DEPTH: usize = 1000;

/// Task duration assumed before any task has finished, seconds.
pub const DEFAULT_TASK_SECONDS: f64 = 0.005;

/// What running a task's own call (submitted from a task) on another worker than that
/// task's costs more, in seconds: its value goes back to the waiting task, one message
/// round trip more, and the waiting task cannot run it itself.
pub const RESULT_RETURN_SECONDS: f64 = 1e-4;

/// Tasks a worker thread may have queued beyond the one it runs, for tasks that take
/// `mean_task_seconds` on average.
pub fn queue_depth(mean_task_seconds: Option<f64>) -> usize {
    let mean = mean_task_seconds.unwrap_or(DEFAULT_TASK_SECONDS).max(1e-7);
    ((TARGET_QUEUE_SECONDS / mean) as usize).clamp(1, MAX_QUEUE_DEPTH)
}

/// A worker's load as an integer for ordering: tasks held per thread, in 1/2^20 units.
pub fn load_key(worker: &Worker) -> u64 {
    if worker.mpi.is_some() {
        // Reserved for an MPI task: last in line for anything else.
        return u64::MAX >> 1;
    }
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

/// The inputs of a task that a worker does not hold yet: bytes some worker of its own node
/// holds, and bytes held only on other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missing {
    /// Bytes to fetch from a worker on the same node.
    pub on_node: u64,
    /// Bytes to fetch from another node.
    pub off_node: u64,
}

impl Missing {
    /// Seconds the fetch is assumed to take ([`NOMINAL_BANDWIDTH`] on the node,
    /// [`INTERNODE_BANDWIDTH`] between nodes).
    pub fn seconds(self) -> f64 {
        self.on_node as f64 / NOMINAL_BANDWIDTH + self.off_node as f64 / INTERNODE_BANDWIDTH
    }
}

/// What of `task`'s inputs `worker` does not hold yet; `node_of` gives a holder's node.
pub fn missing(
    task: &Task,
    worker: &Worker,
    tasks: &KeyMap<Task>,
    node_of: &dyn Fn(Rank) -> Option<u32>,
) -> Missing {
    let mut missing = Missing::default();
    for dep in task.deps.iter().filter_map(|dep| tasks.get(dep)) {
        if let TaskState::Memory { who_has } = &dep.state
            && !who_has.contains(&worker.rank)
        {
            if who_has.iter().any(|&r| node_of(r) == Some(worker.node)) {
                missing.on_node += dep.nbytes;
            } else {
                missing.off_node += dep.nbytes;
            }
        }
    }
    missing
}

/// The most a task's inputs may take to fetch, in multiples of its own run, for the task to
/// go (or be stolen) elsewhere than where they are. Dask never steals a task whose
/// transfer takes more than about 100 times its run, estimated at 100 MB/s: 20 times at our
/// [`NOMINAL_BANDWIDTH`].
pub const MAX_TRANSFER_PER_RUN: f64 = 20.0;

/// `true` if a queued task is worth moving to an idle worker whose fetch of the inputs it
/// lacks takes `transfer` seconds ([`Missing::seconds`]): fetching them takes at most half
/// as long as running the task (Dask's rule for stealing, transfer cost against compute
/// time, with a margin: the transfer also costs the sender's and the receiver's CPU, and
/// task times are means), or at most half as long
/// as the task would still wait where it is (`victim_wait`: the work queued ahead of it,
/// per thread) and at most [`MAX_TRANSFER_PER_RUN`] times its run. A 200 MB chunk summed
/// in 50 ms stays where it is; so does a 32 MB chunk reduced in 100 ms, and a slice of a
/// 32 MB chunk that takes 0.1 ms however long the queue ahead of it; a product of 190 MB of
/// blocks that runs 0.6 s moves when two more like it are queued before it.
pub fn worth_moving(transfer: f64, task_seconds: Option<f64>, victim_wait: f64) -> bool {
    let run = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    2.0 * transfer <= run
        || (2.0 * transfer <= victim_wait && transfer <= MAX_TRANSFER_PER_RUN * run)
}

/// Seconds of work a worker with `nthreads` threads has queued per thread, `queued` tasks
/// beyond its running ones, if each takes `task_seconds`.
pub fn queued_seconds(queued: usize, nthreads: usize, task_seconds: Option<f64>) -> f64 {
    queued as f64 * task_seconds.unwrap_or(DEFAULT_TASK_SECONDS) / nthreads.max(1) as f64
}

/// Estimated time until `task` could start on `worker`, whose fetch of the inputs it lacks
/// takes `transfer` seconds: its queue drained over its threads plus that fetch. Lower is
/// better.
pub fn start_time_estimate(worker: &Worker, transfer: f64, task_seconds: Option<f64>) -> f64 {
    let mean = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    let queue = (worker.processing.len() + 1) as f64 / worker.nthreads().max(1) as f64 * mean;
    queue + transfer
}

/// The worker for a ready task: among the `candidates` that may run it and have a free
/// slot, the one with the earliest estimated start (least loaded, preferring the holder of
/// most input bytes); ties go to the lower rank. `None` when no candidate has a free slot,
/// or when a full one would still start it sooner (its inputs are large, and moving them
/// costs more than waiting for their holder): the task then waits. A candidate whose inputs
/// to fetch (beyond the fastest fetch any candidate has) take more than
/// [`MAX_TRANSFER_PER_RUN`] times the task's run is not considered, however long the queues
/// elsewhere: a slice of a 32 MB chunk runs where the chunk is, and a 1 MB chunk summed in
/// half a millisecond stays on its node. `node_of` gives a worker's node (inputs from
/// another node cost [`INTERNODE_BANDWIDTH`]). The scheduler passes the workers holding
/// the task's inputs plus the least loaded worker, so a choice does not scan every worker.
/// `mean_task_seconds` (of all tasks) sets the queue depth; `task_seconds` (of the task's
/// group) the estimates.
pub fn choose_worker<'w>(
    task: &Task,
    candidates: impl Iterator<Item = &'w Worker>,
    tasks: &KeyMap<Task>,
    node_of: &dyn Fn(Rank) -> Option<u32>,
    mean_task_seconds: Option<f64>,
    task_seconds: Option<f64>,
) -> Option<&'w Worker> {
    let depth = queue_depth(mean_task_seconds);
    // The holders of the task's inputs and the least loaded worker: a few, on the stack.
    let eligible: SmallVec<[(&Worker, f64); 4]> = candidates
        // A worker reserved for an MPI task takes nothing else until it ends.
        .filter(|w| is_eligible(task, w) && w.mpi.is_none())
        .map(|w| (w, missing(task, w, tasks, node_of).seconds()))
        .collect();
    let fastest = eligible
        .iter()
        .map(|&(_, t)| t)
        .min_by(f64::total_cmp)
        .unwrap_or(0.0);
    let run = task_seconds.unwrap_or(DEFAULT_TASK_SECONDS);
    let mut best_free: Option<(f64, &Worker)> = None;
    let mut best_any = f64::INFINITY;
    for (w, transfer) in eligible {
        if transfer - fastest > MAX_TRANSFER_PER_RUN * run {
            continue;
        }
        let estimate = start_time_estimate(w, transfer, task_seconds);
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
            mpi_group: false,
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
            checkpoint: None,
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
                &|_| Some(0),
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
    fn inputs_from_another_node_cost_more_than_on_the_node() {
        // A 1.28 MB chunk summed in 0.4 ms, its holder (rank 2, node 0) with 20 tasks
        // queued (8 ms): a free worker on its node takes the sum (2.6 ms to fetch), one on
        // another node does not (10 ms, over 20 times the sum's run): the holder keeps it.
        let (tasks, sum) = chunk_and_reader(1_280_000);
        let holder = worker(2, 20);
        let mut other = worker(3, 0);
        let choose = |other: &Worker, nodes: [u32; 2]| {
            let node_of = move |r: Rank| Some(nodes[r.0 as usize - 2]);
            choose_worker(
                &sum,
                [&holder, other].into_iter(),
                &tasks,
                &node_of,
                Some(4e-4),
                Some(4e-4),
            )
            .map(|w| w.rank)
        };
        assert_eq!(choose(&other, [0, 0]), Some(Rank(3)));
        other.node = 1;
        assert_eq!(choose(&other, [0, 1]), Some(Rank(2)));
        let on_node = missing(&sum, &other, &tasks, &|_| Some(1));
        let off_node = missing(&sum, &other, &tasks, &|_| Some(0));
        assert_eq!((on_node.on_node, off_node.off_node), (1_280_000, 1_280_000));
        assert!(off_node.seconds() >= 4.0 * on_node.seconds());
    }

    #[test]
    fn queue_depth_follows_task_duration() {
        assert_eq!(queue_depth(Some(1.0)), 1);
        assert_eq!(queue_depth(Some(0.002)), 10);
        assert_eq!(queue_depth(Some(1e-9)), MAX_QUEUE_DEPTH);
        assert_eq!(queue_depth(None), 4);
    }

    /// Seconds to fetch `bytes` from a worker on the same node.
    fn secs(bytes: u64) -> f64 {
        bytes as f64 / NOMINAL_BANDWIDTH
    }

    #[test]
    fn moving_pays_when_the_transfer_is_shorter_than_the_task() {
        assert!(worth_moving(secs(0), None, 0.0));
        assert!(!worth_moving(secs(200_000_000), Some(0.05), 0.0));
        assert!(worth_moving(secs(200_000_000), Some(1.0), 0.0));
        assert!(worth_moving(secs(1_000_000), None, 0.0));
        assert!(!worth_moving(secs(100_000_000), None, 0.0));
        // A long task queued behind others moves although its own run is shorter than the
        // transfer's margin.
        assert!(!worth_moving(secs(190_000_000), Some(0.6), 0.6));
        assert!(worth_moving(secs(190_000_000), Some(0.6), 1.2));
        // A slice of a 32 MB chunk does not, however long the queue it waits in: the
        // transfer would cost hundreds of times the work it takes off the victim.
        assert!(!worth_moving(secs(32_000_000), Some(0.000_1), 10.0));
        assert!(worth_moving(secs(32_000_000), Some(0.01), 10.0));
    }
}
