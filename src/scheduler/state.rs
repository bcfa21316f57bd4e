//! The scheduler's bookkeeping: what it knows about every task and every worker.

use crate::keymap::KeyMap;
use crate::protocol::{Attempt, FnId, Key, Rank, Resource, TaskCode, TaskOptions, WorkerHello};
use rustc_hash::FxHashSet;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

/// Why a task ended without a value: the readable key of the task where it started, and
/// what happened there. Shared by all tasks that failed because of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Readable key of the task that failed or was cancelled first.
    pub cause: String,
    /// The failure message (empty for a cancellation).
    pub message: String,
    /// `true` for a cancellation, `false` for an error.
    pub cancelled: bool,
}

/// The workers holding a value, inline up to two.
pub type Holders = SmallVec<[Rank; 2]>;

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Some dependencies have no value yet.
    Waiting,
    /// All dependencies have values; waiting for a worker with room.
    Ready,
    /// Placed on `worker`, which runs it (or will, once its local dependencies finish).
    Processing {
        /// The worker.
        worker: Rank,
        /// `true` while a steal request for it is in flight.
        stealing: bool,
    },
    /// Finished; its value lives on these workers.
    Memory {
        /// Workers holding the value (the first computed it); rarely more than two.
        who_has: Holders,
    },
    /// Failed or cancelled, for good.
    Failed(Arc<Failure>),
}

impl TaskState {
    /// `true` once the task will not change any more (value, error or cancellation).
    pub fn is_final(&self) -> bool {
        matches!(self, TaskState::Memory { .. } | TaskState::Failed(_))
    }
}

/// One task (or scattered value).
#[derive(Debug)]
pub struct Task {
    /// Function and arguments; `None` for a scattered value, and dropped once computed.
    pub code: Option<Arc<TaskCode>>,
    /// Function name id, for readable keys.
    pub func: Option<FnId>,
    /// Distinct dependencies.
    pub deps: Vec<Key>,
    /// Tasks that read this one's value.
    pub dependents: Vec<Key>,
    /// Dependencies without a value yet.
    pub waiting_on: u32,
    /// Dependents that have not reached a final state.
    pub unfinished_dependents: u32,
    /// The client holds a future for it.
    pub client_wants: bool,
    /// Runs earlier among ready tasks when higher.
    pub priority: i32,
    /// Submission order.
    pub seq: u64,
    /// Place among ready tasks of the same priority (lowest first, then by `seq`): its
    /// `seq`, or for the next link of a chain that of the task it reads.
    pub order: u64,
    /// Runs left after a failure.
    pub retries_left: u32,
    /// Worker ranks allowed (empty: any).
    pub allowed_workers: Vec<Rank>,
    /// Resources a worker must have.
    pub resources: Vec<Resource>,
    /// Workers an MPI task runs on at once (`None`: a plain task).
    pub mpi_workers: Option<u32>,
    /// Placement count; replies about other attempts are stale.
    pub attempt: Attempt,
    /// Encoded size of the value, once known.
    pub nbytes: u64,
    /// A value the client scattered, not a computed task.
    pub scattered: bool,
    /// Broadcast to every worker, or replicated on request: its copies stay while it
    /// lives, for the tasks to come.
    pub broadcast: bool,
    /// Current state.
    pub state: TaskState,
}

impl Task {
    /// A task from the client, before its dependencies are linked.
    pub fn new(code: TaskCode, options: TaskOptions, deps: Vec<Key>, seq: u64) -> Self {
        Task {
            func: Some(code.func),
            code: Some(Arc::new(code)),
            deps,
            dependents: Vec::new(),
            waiting_on: 0,
            unfinished_dependents: 0,
            client_wants: true,
            priority: options.priority,
            seq,
            order: seq,
            retries_left: options.retries,
            allowed_workers: options.workers,
            resources: options.resources,
            mpi_workers: options.mpi_workers,
            attempt: 0,
            nbytes: 0,
            scattered: false,
            broadcast: false,
            state: TaskState::Waiting,
        }
    }

    /// A value the client scattered to `worker`.
    pub fn scattered(worker: Rank, seq: u64, nbytes: u64) -> Self {
        Task {
            code: None,
            func: None,
            deps: Vec::new(),
            dependents: Vec::new(),
            waiting_on: 0,
            unfinished_dependents: 0,
            client_wants: true,
            priority: 0,
            seq,
            order: seq,
            retries_left: 0,
            allowed_workers: Vec::new(),
            resources: Vec::new(),
            mpi_workers: None,
            attempt: 0,
            nbytes,
            scattered: true,
            broadcast: false,
            state: TaskState::Processing {
                worker,
                stealing: false,
            },
        }
    }

    /// `true` for an MPI task (run by several workers at once).
    pub fn is_mpi(&self) -> bool {
        self.mpi_workers.is_some()
    }

    /// `true` if only some workers may run it.
    pub fn is_restricted(&self) -> bool {
        !self.allowed_workers.is_empty() || !self.resources.is_empty()
    }
}

/// One worker rank.
#[derive(Debug)]
pub struct Worker {
    /// Its rank.
    pub rank: Rank,
    /// What it said when it joined (`None` until then).
    pub hello: Option<WorkerHello>,
    /// Tasks placed on it and not yet finished.
    pub processing: FxHashSet<Key>,
    /// Last time it sent anything.
    pub last_seen: Instant,
    /// Bytes of values it holds.
    pub nbytes: u64,
    /// Its node: workers on the same host have the same number (set when it joins).
    pub node: u32,
    /// Tasks of `processing` that wait for other tasks, having given their thread back:
    /// each frees a thread for another task.
    pub seceded: FxHashSet<Key>,
    /// The MPI task it is reserved for or runs: no other task is placed on it meanwhile.
    pub mpi: Option<MpiSeat>,
}

/// A worker's place in an MPI task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpiSeat {
    /// The MPI task.
    pub key: Key,
    /// `false` while the worker finishes its other tasks, `true` once the task was sent to
    /// it (until it reports its part).
    pub running: bool,
}

impl Worker {
    /// A worker that has not said hello yet.
    pub fn new(rank: Rank, now: Instant) -> Self {
        Worker {
            rank,
            hello: None,
            processing: FxHashSet::default(),
            last_seen: now,
            nbytes: 0,
            node: 0,
            seceded: FxHashSet::default(),
            mpi: None,
        }
    }

    /// Threads it runs tasks on (0 before it joined, and while it is reserved for an MPI
    /// task), counting one more for each task that gave its thread back while it waits for
    /// others.
    pub fn nthreads(&self) -> usize {
        if self.mpi.is_some() {
            return 0;
        }
        self.hello
            .as_ref()
            .map_or(0, |h| h.nthreads.max(1) as usize + self.seceded.len())
    }

    /// `true` if it advertises at least these resources.
    pub fn has_resources(&self, wanted: &[Resource]) -> bool {
        let Some(hello) = &self.hello else {
            return false;
        };
        wanted.iter().all(|want| {
            hello
                .resources
                .iter()
                .any(|have| have.name == want.name && have.amount >= want.amount)
        })
    }
}

/// Ready tasks, highest priority first, then by `order`, then in submission order.
///
/// A task that leaves the ready state other than by [`ReadyQueue::pop`] (it failed or was
/// released) is only counted out; its entry is dropped when it surfaces.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    heap: BinaryHeap<(i32, Reverse<u64>, Reverse<u64>, Key)>,
    len: usize,
}

impl ReadyQueue {
    /// Adds a task that just became ready.
    pub fn push(&mut self, task: &Task, key: Key) {
        self.heap
            .push((task.priority, Reverse(task.order), Reverse(task.seq), key));
        self.len += 1;
    }

    /// Counts out a ready task that failed or was released.
    pub fn forget(&mut self) {
        self.len -= 1;
    }

    /// The most urgent ready task.
    pub fn pop(&mut self, tasks: &KeyMap<Task>) -> Option<Key> {
        while let Some((_, _, Reverse(seq), key)) = self.heap.pop() {
            let current = tasks
                .get(&key)
                .is_some_and(|t| matches!(t.state, TaskState::Ready) && t.seq == seq);
            if current {
                self.len -= 1;
                return Some(key);
            }
        }
        None
    }

    #[cfg(test)]
    /// Ready tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// `true` if no task is ready.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    /// `true` if `key` has an entry (for invariant checks; linear time).
    pub fn contains(&self, key: Key) -> bool {
        self.heap.iter().any(|e| e.3 == key)
    }
}

/// Joined workers by load: a tournament tree over worker indices whose root is the least
/// loaded worker (the lowest index among equals). Setting a worker's load costs
/// O(log workers) and never allocates, which keeps placement flat at thousands of workers.
#[derive(Debug)]
pub struct LoadIndex {
    /// Node `i` holds the least `(load, index)` of nodes `2i` and `2i + 1`; the leaves
    /// (worker indices) start at `leaves`.
    nodes: Vec<(u64, u32)>,
    leaves: usize,
}

/// A leaf without a joined worker.
const ABSENT: (u64, u32) = (u64::MAX, u32::MAX);

impl LoadIndex {
    /// An index of `workers` workers, none of them joined.
    pub fn new(workers: usize) -> Self {
        let leaves = workers.next_power_of_two();
        LoadIndex {
            nodes: vec![ABSENT; 2 * leaves],
            leaves,
        }
    }

    /// Sets the load of worker `index` (which counts as joined from then on).
    pub fn set(&mut self, index: usize, load: u64) {
        let mut node = self.leaves + index;
        self.nodes[node] = (load, index as u32);
        while node > 1 {
            node /= 2;
            let least = self.nodes[2 * node].min(self.nodes[2 * node + 1]);
            if self.nodes[node] == least {
                break;
            }
            self.nodes[node] = least;
        }
    }

    /// The least loaded joined worker: `(load, index)`.
    pub fn least(&self) -> Option<(u64, usize)> {
        let (load, index) = self.nodes[1];
        (index != ABSENT.1).then_some((load, index as usize))
    }

    #[cfg(test)]
    /// The load of worker `index`, if it joined.
    pub fn load(&self, index: usize) -> Option<u64> {
        let (load, at) = self.nodes[self.leaves + index];
        (at != ABSENT.1).then_some(load)
    }

    #[cfg(test)]
    /// Checks that every inner node is the least of its children (for invariant checks).
    pub fn is_consistent(&self) -> bool {
        (1..self.leaves).all(|i| self.nodes[i] == self.nodes[2 * i].min(self.nodes[2 * i + 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_index_finds_the_least_loaded_worker() {
        let mut index = LoadIndex::new(5);
        assert_eq!(index.least(), None);
        index.set(3, 7);
        index.set(1, 9);
        assert_eq!(index.least(), Some((7, 3)));
        index.set(4, 7);
        assert_eq!(index.least(), Some((7, 3)), "ties go to the lower index");
        index.set(3, 10);
        assert_eq!(index.least(), Some((7, 4)));
        index.set(1, 0);
        assert_eq!(index.least(), Some((0, 1)));
        assert_eq!(index.load(3), Some(10));
        assert_eq!(index.load(0), None);
        assert!(index.is_consistent());
        let mut one = LoadIndex::new(1);
        one.set(0, 5);
        assert_eq!(one.least(), Some((5, 0)));
    }
}
