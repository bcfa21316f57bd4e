//! Wire types: every message that crosses ranks, one enum per receiver ([`ToScheduler`],
//! [`ToWorker`], [`ToClient`]), the ids they carry, and the [`frame`] codec they travel in.
//!
//! Nothing here does I/O. Values (task arguments and results) are opaque byte strings
//! encoded with [`encode_value`]; only the task's trampoline knows their type. A receiver
//! validates what it takes from a message before using it: ranks against the job's size,
//! keys against its tables, function ids against the registered functions.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

// Public (hidden) with the `internals` feature; see `crate::internals`.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod frame;
#[cfg(not(feature = "internals"))]
mod frame;

mod bytes;
mod plain;
#[cfg(feature = "dataframe")]
mod polars_ipc;
pub use bytes::{ALIGN, Bytes, MAX_HEAD_BYTES, clear_spares, give_spare, skip_to, take_spare};
pub(crate) use plain::{receive_elements, received_split};
#[cfg(feature = "dataframe")]
pub(crate) use polars_ipc::{append_frame, encoded_estimate, frame_buffer, join_frames};

pub use frame::{
    ATTACH_BYTES, Announced, Frame, FrameWriter, attachments_announced, codec, decode_bytes,
    decode_frame_with, decode_owned, decode_payload, decode_value, encode_given, encode_owned,
    encode_owned_aligned, encode_value, recycle_owned, split_large,
};

/// An encoded value (task argument or result) held by a worker or the client. Shared, so a
/// value is encoded into a message frame without first being copied.
pub type Payload = Arc<Bytes>;

/// Version of the message set below. Every rank checks at start-up that all ranks agree.
pub const PROTOCOL_VERSION: u32 = 20;

/// Identity of a task or of a scattered value, unique within one job.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u64);

/// Keys with this bit set belong to a task client ([`crate::task_client`]): the bits
/// below it, from bit [`Key::OWNER_SHIFT`], hold the rank of the worker whose tasks made them.
const TASK_CLIENT_KEY: u64 = 1 << 63;

impl Key {
    /// Where the rank starts in a task client's key.
    pub const OWNER_SHIFT: u32 = 40;

    /// The first key of the task client of worker `rank` (`None` past 2^23 ranks).
    pub fn task_client_base(rank: Rank) -> Option<u64> {
        (rank.0 < 1 << 23).then(|| TASK_CLIENT_KEY | (u64::from(rank.0) << Self::OWNER_SHIFT))
    }

    /// The rank that made this key: the client, or the worker whose task client did.
    pub fn owner(self) -> Rank {
        if self.0 & TASK_CLIENT_KEY == 0 {
            Rank::CLIENT
        } else {
            Rank(((self.0 & !TASK_CLIENT_KEY) >> Self::OWNER_SHIFT) as u32)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An MPI rank in `MPI_COMM_WORLD` (or a thread standing for one in local mode).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rank(pub u32);

impl Rank {
    /// Rank 0 runs the scheduler.
    pub const SCHEDULER: Rank = Rank(0);
    /// Rank 1 runs the user's program.
    pub const CLIENT: Rank = Rank(1);
    /// The first worker rank; workers are ranks 2, 3, ...
    pub const FIRST_WORKER: Rank = Rank(2);

    /// The rank as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {}", self.0)
    }
}

/// Counts placements of a task: a reply about an older attempt is stale and ignored.
pub type Attempt = u32;

/// A function a task calls, by the number the client registered it under
/// ([`FunctionMsg`]). Ids are dense: the n-th function the client registered is `FnId(n)`;
/// a task client's ids are dense from its own base ([`FnId::task_client_base`]).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FnId(pub u32);

/// Function ids with this bit set were registered by a task client: bits 16 to 30 hold the
/// rank of its worker, the low 16 bits count its registrations.
const TASK_CLIENT_FN: u32 = 1 << 31;

impl FnId {
    /// The first function id of the task client of worker `rank` (`None` past 2^15 ranks).
    pub fn task_client_base(rank: Rank) -> Option<u32> {
        if rank.0 < 1 << 15 {
            Some(TASK_CLIENT_FN | (rank.0 << 16))
        } else {
            None
        }
    }

    /// The rank that registered it (the client, or a worker's task client), and its index
    /// among that rank's registrations.
    pub fn owner(self) -> (Rank, usize) {
        if self.0 & TASK_CLIENT_FN == 0 {
            (Rank::CLIENT, self.0 as usize)
        } else {
            (
                Rank((self.0 & !TASK_CLIENT_FN) >> 16),
                (self.0 & 0xffff) as usize,
            )
        }
    }
}

impl fmt::Display for FnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function id {}", self.0)
    }
}

/// The registration of a function before any task uses it: sent by the client to the
/// scheduler, which checks it and forwards it to every worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FunctionMsg {
    /// The id tasks will use.
    pub id: FnId,
    /// The function's address minus a fixed function's address: the same on every rank of
    /// a job, which all run the same executable (checked at start-up).
    pub offset: i64,
    /// A fingerprint of the function's Rust type: an id resolves only as that type.
    pub signature: u64,
    /// Readable name, for task keys and logs.
    pub name: String,
    /// Integrity check of `id`, `offset` and `signature` under the job's key.
    pub check: u64,
}

/// One positional argument of a task.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ArgSlot {
    /// An inline value, already encoded.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The result of another task (a dependency).
    Future(Key),
    /// Results of several tasks, decoded by the task as one `Vec<T>`.
    Futures(Vec<Key>),
}

impl ArgSlot {
    /// Keys this slot depends on.
    pub fn dependencies(&self) -> &[Key] {
        match self {
            ArgSlot::Value(_) => &[],
            ArgSlot::Future(key) => std::slice::from_ref(key),
            ArgSlot::Futures(keys) => keys,
        }
    }
}

/// A named amount of an abstract resource (`gpu = 1`), advertised by workers and required
/// by tasks.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Resource {
    /// Resource name, e.g. `gpu`.
    pub name: String,
    /// Amount, e.g. `1`.
    pub amount: f64,
}

/// Per-task options chosen by the client.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// How many times a failed task is run again before its failure is final.
    pub retries: u32,
    /// Higher runs earlier among ready tasks.
    pub priority: i32,
    /// If not empty, only these worker ranks may run the task.
    pub workers: Vec<Rank>,
    /// With `workers`: if none of them is a worker of the job, any worker may run it.
    pub allow_other_workers: bool,
    /// Resources a worker must advertise, held while the task runs.
    pub resources: Vec<Resource>,
    /// For an MPI task, how many workers run it together (each with a communicator of
    /// them all); `None` for a plain task.
    pub mpi_workers: Option<u32>,
    /// Each call is a new task even when an identical one is live (`pure(false)`); by
    /// default the same function and arguments give the same future. Only the client
    /// reads it: it does not travel.
    #[serde(skip)]
    pub impure: bool,
}

/// A task as the client submits it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task's key.
    pub key: Key,
    /// The function to run.
    pub func: FnId,
    /// Further functions the task calls by position (a bag's pipeline steps).
    pub uses: Vec<FnId>,
    /// Its arguments, in order.
    pub args: Vec<ArgSlot>,
    /// Retries, priority, placement restrictions.
    pub options: TaskOptions,
    /// With `--checkpoint`: the name of its result on disk, the same in every run of the
    /// executable (a pure call of the program's).
    pub checkpoint: Option<u128>,
}

impl TaskSpec {
    /// Keys of all tasks whose results this task reads (may repeat).
    pub fn dependencies(&self) -> impl Iterator<Item = Key> + '_ {
        self.args
            .iter()
            .flat_map(|slot| slot.dependencies().iter().copied())
    }
}

/// What a worker tells the scheduler when it starts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerHello {
    /// Threads that run tasks.
    pub nthreads: u32,
    /// Resources the worker advertises.
    pub resources: Vec<Resource>,
    /// Host name (from MPI's processor name).
    pub host: String,
    /// Process id, for diagnostics.
    pub pid: u32,
    /// Memory the worker may hold, bytes (`None`: no limit).
    pub memory_limit: Option<u64>,
    /// How that limit was reached (`--memory-limit`, or the node's memory / its ranks).
    pub memory_limit_source: String,
    /// `true` if the worker is a member of the workers' MPI communicator, so it can take
    /// part in MPI tasks (`false` in local mode and for a worker hosted by another rank).
    pub mpi_group: bool,
}

/// A worker as the scheduler describes it to the client.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// The worker's rank.
    pub rank: Rank,
    /// What it said at start-up.
    pub hello: WorkerHello,
}

/// The scheduler's answer to `InfoRequest`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SchedulerInfo {
    /// All workers, by rank.
    pub workers: Vec<WorkerInfo>,
    /// CPU time the scheduler process has used so far (user + system), seconds.
    pub cpu_seconds: f64,
    /// Peak resident memory of the scheduler process, bytes.
    pub peak_rss_bytes: u64,
    /// Tasks the scheduler currently tracks.
    pub tasks: u64,
    /// Tasks that completed since start.
    pub tasks_completed: u64,
    /// Bytes the scheduler rank received from all ranks since start (frames and their
    /// attachments): large task arguments go straight to workers, so this stays small.
    pub received_bytes: u64,
}

/// What a worker needs to run a task: the function and its arguments. The scheduler keeps
/// it shared, so placing a task (again) does not copy the arguments.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskCode {
    /// Function to run.
    pub func: FnId,
    /// Further functions it calls by position. (Boxed slices, not `Vec`s: the scheduler
    /// holds one `TaskCode` per task, so every word counts.)
    pub uses: Box<[FnId]>,
    /// Arguments.
    pub args: Box<[ArgSlot]>,
    /// The name of its result in the checkpoint directory ([`TaskSpec::checkpoint`]):
    /// the worker loads the result from there if it is present, else writes it there.
    /// (Boxed: one word when absent.)
    pub checkpoint: Option<Box<u128>>,
}

impl TaskCode {
    /// Every function id the task names: its function, then the ones it uses.
    pub fn functions(&self) -> impl Iterator<Item = FnId> + '_ {
        std::iter::once(self.func).chain(self.uses.iter().copied())
    }
}

/// A task placed on a worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ComputeMsg {
    /// The task's key.
    pub key: Key,
    /// Placement number; echo it in the reply.
    pub attempt: Attempt,
    /// Function and arguments.
    pub code: Arc<TaskCode>,
    /// For every distinct dependency, the rank to fetch it from (this worker's own rank when
    /// it holds the value or is computing it).
    pub deps: Vec<(Key, Rank)>,
    /// The dependencies (among `deps`) this task is the last reader of: no other task, no
    /// client and no retry will read them, so the worker hands its copy to the task (whose
    /// function may then take the value's memory as its argument) instead of keeping it.
    pub consume: Vec<Key>,
    /// Priority among this worker's ready tasks.
    pub priority: i32,
    /// Resources held while the task runs.
    pub resources: Vec<Resource>,
    /// For an MPI task, the workers that run it together, in the order of their
    /// communicator (the first's result is the task's value; the others answer
    /// `MpiPartDone`, as does any member whose part was cancelled before `MpiGo`); empty
    /// for a plain task.
    pub group: Vec<Rank>,
}

/// One entry of the task stream (`--trace`, `--report`), recorded by the rank where it
/// happened. Times are microseconds since the Unix epoch on that rank's clock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TraceEvent {
    /// A task ran on a worker thread.
    Task {
        /// Task key.
        key: Key,
        /// The task's function: its kind.
        func: FnId,
        /// Index of the worker thread that ran it.
        thread: u32,
        /// When the function started.
        start_us: u64,
        /// How long it ran.
        duration_us: u64,
        /// `false` if it panicked or returned `Err`.
        ok: bool,
        /// Bytes of its inputs: arguments sent with it and values it read.
        bytes_in: u64,
        /// Bytes of its encoded result (0 if it failed).
        bytes_out: u64,
    },
    /// A worker's memory, sampled once a second while the task stream is recorded.
    Memory {
        /// When.
        at_us: u64,
        /// Bytes of the values it holds in memory.
        stored_bytes: u64,
        /// Bytes of its values on disk.
        spilled_bytes: u64,
        /// The process's resident memory.
        rss_bytes: u64,
    },
    /// A value moved between this rank and `peer`.
    Transfer {
        /// Key of the value.
        key: Key,
        /// The other rank.
        peer: Rank,
        /// Encoded size.
        nbytes: u64,
        /// When it was requested (incoming) or sent (outgoing).
        start_us: u64,
        /// Until it arrived (incoming); 0 for outgoing.
        duration_us: u64,
        /// `true` if this rank received it.
        incoming: bool,
        /// `true` if it came by a collective (a broadcast) rather than point to point.
        collective: bool,
    },
    /// A value was written to disk to free memory, or read back.
    Spill {
        /// Key of the value.
        key: Key,
        /// Its size.
        nbytes: u64,
        /// When the write or read started.
        start_us: u64,
        /// How long it took.
        duration_us: u64,
        /// `true` for a write (spill), `false` for a read back.
        write: bool,
    },
    /// The scheduler's heartbeat arrived at this worker's communication thread (how
    /// promptly shows that the thread never waits for anything, such as the disk).
    Heartbeat {
        /// When it was handled.
        at_us: u64,
    },
}

/// Job-wide task counts, for progress displays.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Tasks submitted since the job started.
    pub submitted: u64,
    /// Tasks that finished with a value.
    pub completed: u64,
    /// Tasks that failed, were cancelled, or depend on one that did.
    pub failed: u64,
    /// Tasks released by the client before they finished.
    pub dropped: u64,
}

impl JobProgress {
    /// Tasks in a final state.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.dropped
    }
}

/// A request about a coordination primitive held by the scheduler (Dask's `Queue`,
/// `Variable`, `Lock`, `Semaphore`, `Event`), each named by its kind and name. Values are
/// encoded as task values are. `timeout_ms`: how long a request that must wait may wait
/// (`None`: without a limit).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum CoordOp {
    /// Append to a queue.
    QueuePut {
        /// The queue.
        name: String,
        /// The encoded value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Take the oldest value of a queue, waiting for one.
    QueueGet {
        /// The queue.
        name: String,
        /// Waits at most this long.
        timeout_ms: Option<u64>,
    },
    /// The number of values in a queue.
    QueueSize {
        /// The queue.
        name: String,
    },
    /// Set a variable.
    VariableSet {
        /// The variable.
        name: String,
        /// The encoded value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A variable's value, waiting until it is set.
    VariableGet {
        /// The variable.
        name: String,
        /// Waits at most this long.
        timeout_ms: Option<u64>,
    },
    /// Unset a variable.
    VariableDelete {
        /// The variable.
        name: String,
    },
    /// Take a lease of a semaphore of `max_leases` (a lock is a semaphore of one), waiting
    /// for one to be free.
    Acquire {
        /// The lock or semaphore (`lock:` or `semaphore:` and the user's name).
        name: String,
        /// Leases it has (the first request fixes it; later ones must agree).
        max_leases: u32,
        /// The lease's id, chosen by the requester (unique per requester).
        lease: u64,
        /// Waits at most this long.
        timeout_ms: Option<u64>,
    },
    /// Give a lease back.
    Release {
        /// The lock or semaphore.
        name: String,
        /// The lease.
        lease: u64,
    },
    /// Set (`true`) or clear an event.
    EventSet {
        /// The event.
        name: String,
        /// Set or clear.
        set: bool,
    },
    /// Wait until an event is set (at once if it is).
    EventWait {
        /// The event.
        name: String,
        /// Waits at most this long.
        timeout_ms: Option<u64>,
    },
}

/// When and where a worker ran a task's function.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskRun {
    /// When the function started, microseconds since the Unix epoch (the worker's clock).
    pub start_us: u64,
    /// How long it ran.
    pub duration_us: u64,
    /// Index of the worker thread that ran it.
    pub thread: u32,
}

/// Task runs the scheduler keeps for `get_task_stream` (the latest; as Dask's default).
pub const TASK_STREAM_KEEP: usize = 100_000;

/// One task run in the scheduler's task stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// Its place in the stream (0 for the job's first run).
    pub seq: u64,
    /// Task key.
    pub key: Key,
    /// The task's function.
    pub func: Option<FnId>,
    /// The worker that ran it.
    pub worker: Rank,
    /// When, how long, on which thread.
    pub run: TaskRun,
    /// Size of the encoded result (0 if it failed).
    pub nbytes: u64,
    /// Why it failed (the first characters), if it did.
    pub error: Option<String>,
}

/// The answer to a [`CoordOp`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum CoordReply {
    /// Done.
    Done,
    /// A value (from a queue or a variable).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A count (a queue's size).
    Count(u64),
    /// The wait ran out of time.
    TimedOut,
    /// The request is wrong (a lease not held, a semaphore's size changed): why.
    Refused(String),
    /// The workers holding each key asked about (`WhoHas`), in the order asked.
    Holders(Vec<Vec<Rank>>),
    /// The task stream from the entry asked for (`TaskStream`).
    TaskStream {
        /// The entries kept from the one asked for on, oldest first.
        entries: Vec<StreamEntry>,
        /// The names of their functions.
        names: Vec<(FnId, String)>,
        /// The place the next run will take: the stream's length so far.
        next: u64,
    },
}

/// Messages the scheduler (rank 0) receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToScheduler {
    /// A worker joins (first message of every worker).
    WorkerHello(WorkerHello),
    /// The client registers a function that later tasks use.
    RegisterFunction(FunctionMsg),
    /// New tasks from the client.
    Submit(Vec<TaskSpec>),
    /// The client sent a value straight to `worker` (scattered, or a large task argument);
    /// treat `key` as computing there.
    Scatter {
        /// Key of the value.
        key: Key,
        /// Worker that receives it.
        worker: Rank,
        /// Size of the encoded value.
        nbytes: u64,
    },
    /// The client dropped its last future for these keys.
    ReleaseKeys(Vec<Key>),
    /// The client cancels these keys.
    CancelKeys(Vec<Key>),
    /// The client asks for a [`SchedulerInfo`] (answered once all workers joined).
    InfoRequest,
    /// The client asks for the job's [`JobProgress`] (answered at once).
    ProgressRequest,
    /// A client (the program's, or a worker's task client) asks about a coordination
    /// primitive; the answer, `Coordinated` with the same `id`, may wait.
    Coordinate {
        /// The request's id, chosen by the requester.
        id: u64,
        /// What it asks.
        op: CoordOp,
    },
    /// A client asks which workers hold these keys: answered at once with `Coordinated`
    /// (`Holders`, in the order asked) and the same `id`.
    WhoHas {
        /// The request's id, chosen by the requester.
        id: u64,
        /// Its own keys.
        keys: Vec<Key>,
    },
    /// A client asks for copies of these keys' values on `n` workers (`None`: every
    /// worker): answered with `Coordinated` (`Done`, or `Refused` naming a key without a
    /// value) once the copies are made.
    Replicate {
        /// The request's id, chosen by the requester.
        id: u64,
        /// Its own keys, every one finished.
        keys: Vec<Key>,
        /// How many workers should hold each value.
        n: Option<u32>,
    },
    /// A worker could not copy these values (`CopyFrom`): their holder no longer had them.
    CopyFailed(Vec<Key>),
    /// Task-stream entries recorded by the sender since its last `Trace` (only when
    /// tracing is on; collected by the scheduler rank, not its state machine).
    Trace(Vec<TraceEvent>),
    /// A worker finished a task (or stored a scattered value) and holds its result.
    TaskFinished {
        /// Task key.
        key: Key,
        /// Attempt that finished.
        attempt: Attempt,
        /// Size of the encoded result.
        nbytes: u64,
        /// When and where the function ran (`None` for a scattered value, and for a result
        /// loaded from the checkpoint directory instead of computed).
        run: Option<TaskRun>,
    },
    /// A worker's task panicked, returned `Err`, or could not decode its inputs.
    TaskFailed {
        /// Task key.
        key: Key,
        /// Attempt that failed.
        attempt: Attempt,
        /// What went wrong.
        message: String,
        /// When and where it ran (or gave up, with no time spent).
        run: TaskRun,
    },
    /// A client asks for the task stream the scheduler kept (the last
    /// [`TASK_STREAM_KEEP`] task runs) from entry `since` on: answered at once with
    /// `Coordinated` (`TaskStream`) and the same `id`.
    TaskStream {
        /// The request's id, chosen by the requester.
        id: u64,
        /// The first entry wanted (`u64::MAX`: none, only where the stream stands).
        since: u64,
    },
    /// Answer to a `Steal` request.
    StealReply {
        /// Task key.
        key: Key,
        /// Attempt the request named.
        attempt: Attempt,
        /// `true` if the task was still queued and is now removed from the worker.
        stolen: bool,
    },
    /// A task running on the sender waits for other tasks (`waiting`), having given its
    /// thread back to the worker, or goes on (`!waiting`). Going on is told at the
    /// worker's next tick, and not at all if the task finished first (its result says it).
    Seceded {
        /// Task key.
        key: Key,
        /// Attempt that runs.
        attempt: Attempt,
        /// `true` when it starts waiting, `false` when it goes on.
        waiting: bool,
    },
    /// A worker of an MPI task holds all its inputs and waits for `MpiGo` (only then does it
    /// enter MPI, where it could not serve another member's request for an input).
    MpiReady {
        /// Task key.
        key: Key,
        /// Attempt.
        attempt: Attempt,
    },
    /// A member of an MPI task other than its first finished its part (its result is
    /// dropped), or any member ended its part before `MpiGo` (cancelled, or an input was
    /// lost): `failure` says why it failed, if it did.
    MpiPartDone {
        /// Task key.
        key: Key,
        /// Attempt that ran.
        attempt: Attempt,
        /// The part's error, if it failed.
        failure: Option<String>,
    },
    /// A worker now also holds copies of these keys (fetched for its tasks).
    AddReplicas(Vec<Key>),
    /// The root of a broadcast (after its `TaskFinished` for `key`): `workers` receive the
    /// value by the collective and hold it from then on.
    Replicated {
        /// The broadcast value.
        key: Key,
        /// The workers that receive it.
        workers: Vec<Rank>,
    },
    /// Sign of life from an idle worker.
    Heartbeat,
    /// The client's program ended with this exit code: shut the job down.
    ClientDone {
        /// Exit code every rank will exit with.
        code: i32,
    },
    /// During shutdown: this rank has completed all its sends and sends nothing more.
    Quiesced,
    /// A rank received a stop signal (SIGTERM, SIGINT, SIGUSR1): stop the job.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// A rank hit an error it cannot recover from; the job must end with `code`.
    Fatal {
        /// Exit code for the job.
        code: i32,
        /// One-line description.
        message: String,
    },
}

/// Messages a worker (rank >= 2) receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// A function later tasks use (from the scheduler, as the client registered it).
    RegisterFunction(FunctionMsg),
    /// Run a task (from the scheduler).
    Compute(ComputeMsg),
    /// Every worker of this MPI task holds its inputs: enter it (from the scheduler).
    MpiGo {
        /// Task key.
        key: Key,
        /// Attempt to run.
        attempt: Attempt,
    },
    /// Forget a queued or running task; a running task's result is dropped.
    CancelTask {
        /// Task key.
        key: Key,
        /// Attempt to cancel.
        attempt: Attempt,
    },
    /// Free these values (from the scheduler).
    ReleaseKeys(Vec<Key>),
    /// Task `key`, placed here as `attempt`, has become the last reader of its input
    /// `input` (see `ComputeMsg::consume`; from the scheduler, when the client let go of
    /// the input or its other readers finished after the task was placed).
    LastRead {
        /// Task key.
        key: Key,
        /// Its placement.
        attempt: Attempt,
        /// The input it may take.
        input: Key,
    },
    /// Give up this task if it has not started (from the scheduler); answer `StealReply`.
    Steal {
        /// Task key.
        key: Key,
        /// Attempt to steal.
        attempt: Attempt,
    },
    /// Send these values to the sender (from another worker or the client).
    GetData(Vec<Key>),
    /// Fetch each key's value from the worker named beside it and hold a copy (from the
    /// scheduler, for `replicate`): answered with `AddReplicas`, or `CopyFailed` when the
    /// holder has it no more.
    CopyFrom(Vec<(Key, Rank)>),
    /// Send these values to the sender's task client (from another worker): answered with
    /// `ForClient(Data)` or `ForClient(DataMissing)`.
    GetClientData(Vec<Key>),
    /// A message for this worker's task client, the client of the tasks it runs (from the
    /// scheduler: `KeyDone`, `KeyErred`, `KeyCancelled`; from another worker: `Data`,
    /// `DataMissing`).
    ForClient(ToClient),
    /// A value this worker asked for (from another worker).
    Data {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "frame::payload_bytes")]
        bytes: Payload,
    },
    /// A value this worker asked for is not held by the sender.
    DataMissing(Key),
    /// A value the client scatters to this worker.
    ScatterData {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "frame::payload_bytes")]
        bytes: Payload,
    },
    /// A value the client scatters to every worker (to the first worker, which broadcasts
    /// it with `MPI_Ibcast` on the workers' communicator).
    BroadcastScatter {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "frame::payload_bytes")]
        bytes: Payload,
    },
    /// The sender starts broadcasting `key` (`len` bytes): post the matching receive.
    BroadcastStart {
        /// Key of the value.
        key: Key,
        /// Its size.
        len: u64,
    },
    /// A broadcast value, sent point to point by the worker that broadcasts it to a worker
    /// outside its collectives (one hosted in another rank's process): store it.
    BroadcastValue {
        /// Key of the value.
        key: Key,
        /// The encoded value.
        #[serde(with = "frame::payload_bytes")]
        bytes: Payload,
    },
    /// Shutdown, phase 1: stop working, finish sending, answer `Quiesced`.
    Stop,
    /// Shutdown, phase 2: exit with this code.
    Exit {
        /// Exit code.
        code: i32,
    },
    /// The scheduler is alive (sent every second).
    Heartbeat,
}

/// Messages the client (rank 1) receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToClient {
    /// A key's value is ready on `worker` (from the scheduler).
    KeyDone {
        /// The key.
        key: Key,
        /// Worker holding it.
        worker: Rank,
    },
    /// A key failed: `cause` is the readable key of the task that failed first.
    KeyErred {
        /// The key.
        key: Key,
        /// Readable key of the original failure.
        cause: String,
        /// Its message.
        message: String,
    },
    /// A key was cancelled (or something it depends on was).
    KeyCancelled {
        /// The key.
        key: Key,
        /// Readable key of the cancelled task.
        cause: String,
    },
    /// A value the client asked for (from a worker).
    Data {
        /// The key.
        key: Key,
        /// Encoded value.
        #[serde(with = "frame::payload_bytes")]
        bytes: Payload,
    },
    /// A value the client asked for is not on that worker.
    DataMissing(Key),
    /// Large values the client scattered to this worker (`ScatterData`) have arrived and
    /// were read (or waited unread for a while), and the worker is ready for more (from a
    /// worker; see `client::flow`).
    Received(Vec<Key>),
    /// Answer to `InfoRequest`.
    Info(SchedulerInfo),
    /// Answer to `ProgressRequest`.
    Progress(JobProgress),
    /// Answer to `Coordinate`.
    Coordinated {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: CoordReply,
    },
    /// Shutdown, phase 1.
    Stop,
    /// Shutdown, phase 2.
    Exit {
        /// Exit code.
        code: i32,
    },
    /// The scheduler is alive (sent every second).
    Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::frame::{ATTACH_BYTES, decode_frame, encode_frame};
    use super::*;

    fn sample_messages() -> Vec<ToScheduler> {
        vec![
            ToScheduler::Submit(vec![TaskSpec {
                key: Key(7),
                func: FnId(3),
                uses: vec![FnId(1), FnId(0)],
                args: vec![
                    ArgSlot::Value(vec![1, 2, 3]),
                    ArgSlot::Future(Key(5)),
                    ArgSlot::Futures(vec![Key(1), Key(2)]),
                ],
                options: TaskOptions {
                    retries: 2,
                    priority: -4,
                    workers: vec![Rank(3)],
                    resources: vec![Resource {
                        name: "gpu".into(),
                        amount: 1.0,
                    }],
                    mpi_workers: Some(3),
                    allow_other_workers: true,
                    impure: false,
                },
                checkpoint: Some(u128::MAX - 5),
            }]),
            ToScheduler::Heartbeat,
            ToScheduler::Replicate {
                id: 4,
                keys: vec![Key(2), Key(9)],
                n: Some(2),
            },
            ToScheduler::WhoHas {
                id: 5,
                keys: vec![Key(2)],
            },
            ToScheduler::CopyFailed(vec![Key(3)]),
            ToScheduler::TaskFinished {
                key: Key(u64::MAX),
                attempt: 9,
                nbytes: 1 << 40,
                run: Some(TaskRun {
                    start_us: 1,
                    duration_us: 17,
                    thread: 3,
                }),
            },
            ToScheduler::TaskStream { id: 6, since: 0 },
        ]
    }

    #[test]
    fn frames_round_trip() {
        let messages = sample_messages();
        let frame = encode_frame(&messages).unwrap();
        let decoded: Vec<ToScheduler> = decode_frame(&frame).unwrap();
        assert_eq!(decoded, messages);
    }

    #[test]
    fn large_payloads_travel_as_attachments() {
        let big: Payload = Arc::new(vec![7u8; ATTACH_BYTES + 1].into());
        let small: Payload = Arc::new(vec![1, 2, 3].into());
        let messages = vec![
            ToWorker::Data {
                key: Key(1),
                bytes: big.clone(),
            },
            ToWorker::Data {
                key: Key(2),
                bytes: small.clone(),
            },
            ToWorker::ScatterData {
                key: Key(3),
                bytes: big.clone(),
            },
        ];
        let mut writer = FrameWriter::new();
        for message in &messages {
            writer.push(message).unwrap();
        }
        let frame = writer.finish();
        assert_eq!(frame.attachments.len(), 2);
        assert!(
            Arc::ptr_eq(&frame.attachments[0], &big),
            "sent without a copy"
        );
        assert!(frame.bytes.len() < 100, "the frame holds no large payload");
        assert_eq!(
            attachments_announced(&frame.bytes),
            Some(vec![
                Announced {
                    len: big.len() as u64,
                    placement: big.placement(),
                };
                2
            ])
        );
        let decoded: Vec<ToWorker> =
            decode_frame_with(&frame.bytes, frame.attachments.clone()).unwrap();
        assert_eq!(decoded, messages);
        // Without its attachments the frame is an error, not a panic.
        assert!(decode_frame::<ToWorker>(&frame.bytes).is_err());
        for cut in 0..frame.bytes.len() {
            let _ = decode_frame_with::<ToWorker>(&frame.bytes[..cut], frame.attachments.clone());
            let _ = attachments_announced(&frame.bytes[..cut]);
        }
    }

    #[test]
    fn empty_frame_round_trips() {
        let frame = encode_frame::<ToWorker>(&[]).unwrap();
        assert!(decode_frame::<ToWorker>(&frame).unwrap().is_empty());
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let frame = encode_frame(&sample_messages()).unwrap();
        for cut in 0..frame.len() {
            assert!(
                decode_frame::<ToScheduler>(&frame[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn corrupted_frames_never_panic() {
        let frame = encode_frame(&sample_messages()).unwrap();
        for i in 0..frame.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = frame.clone();
                bad[i] ^= flip;
                let _ = decode_frame::<ToScheduler>(&bad);
                let _ = decode_frame::<ToWorker>(&bad);
                let _ = decode_frame::<ToClient>(&bad);
            }
        }
    }

    #[test]
    fn huge_claimed_counts_are_rejected() {
        let mut frame = encode_frame(&[ToWorker::Stop]).unwrap();
        frame[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_frame::<ToWorker>(&frame).is_err());
    }

    #[test]
    fn owners_of_keys_and_function_ids() {
        assert_eq!(Key(7).owner(), Rank::CLIENT);
        let base = Key::task_client_base(Rank(5)).unwrap();
        assert_eq!(Key(base + 1).owner(), Rank(5));
        assert_eq!(Key(base + (1 << 39)).owner(), Rank(5));
        assert!(Key::task_client_base(Rank(1 << 23)).is_none());
        assert_eq!(FnId(3).owner(), (Rank::CLIENT, 3));
        let base = FnId::task_client_base(Rank(9)).unwrap();
        assert_eq!(FnId(base + 2).owner(), (Rank(9), 2));
        assert!(FnId::task_client_base(Rank(1 << 15)).is_none());
    }

    #[test]
    fn values_round_trip() {
        let value = (1u64, vec![0.5f64, -2.0], String::from("x"));
        let bytes = encode_value(&value).unwrap();
        assert_eq!(
            decode_value::<(u64, Vec<f64>, String)>(&bytes).unwrap(),
            value
        );
    }
}
