//! Wire types: every message that crosses ranks (one enum per receiver) and the frame codec.
//!
//! Nothing here does I/O. A *frame* is what one MPI message carries: a magic byte, a message
//! count and that many bincode-encoded messages for one receiver, so small messages to the
//! same destination travel together. Values (task arguments and results) are opaque byte
//! strings encoded with [`encode_value`]; only the task's trampoline knows their type.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An encoded value (task argument or result) held by a worker or the client. Shared, so a
/// value is encoded into a message frame without first being copied.
pub type Payload = Arc<Vec<u8>>;

/// Payloads at least this large travel as *attachments*: separate MPI messages sent straight
/// from the payload's buffer and received straight into the receiver's, never copied into
/// or out of a frame. Smaller ones are inlined in the frame.
pub const ATTACH_BYTES: usize = 64 * 1024;

thread_local! {
    /// While a frame is encoded on this thread: the payloads it attaches.
    static ATTACHING: std::cell::RefCell<Option<Vec<Payload>>> = const { std::cell::RefCell::new(None) };
    /// While a frame is decoded on this thread: the attachments that came with it.
    static ATTACHED: std::cell::RefCell<Vec<Option<Payload>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serde adapter for a [`Payload`]: inline bytes, or (inside a frame, for large payloads)
/// the index of an attachment of that frame.
mod payload_bytes {
    use super::{ATTACH_BYTES, ATTACHED, ATTACHING, Payload};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    #[derive(Serialize)]
    enum WireRef<'a> {
        Inline(#[serde(with = "serde_bytes")] &'a [u8]),
        Attached(u32),
    }

    #[derive(Deserialize)]
    enum Wire {
        Inline(serde_bytes::ByteBuf),
        Attached(u32),
    }

    pub fn serialize<S: Serializer>(payload: &Payload, serializer: S) -> Result<S::Ok, S::Error> {
        let attached = if payload.len() >= ATTACH_BYTES {
            ATTACHING.with(|sink| {
                sink.borrow_mut().as_mut().map(|sink| {
                    sink.push(payload.clone());
                    (sink.len() - 1) as u32
                })
            })
        } else {
            None
        };
        match attached {
            Some(index) => WireRef::Attached(index).serialize(serializer),
            None => WireRef::Inline(payload).serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        match Wire::deserialize(deserializer)? {
            Wire::Inline(bytes) => Ok(Arc::new(bytes.into_vec())),
            Wire::Attached(index) => ATTACHED
                .with(|source| {
                    source
                        .borrow_mut()
                        .get_mut(index as usize)
                        .and_then(Option::take)
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "the frame refers to attachment {index}, which did not come with it"
                    ))
                }),
        }
    }
}

/// Version of the message set below. Every rank checks at start-up that all ranks agree.
pub const PROTOCOL_VERSION: u32 = 6;

/// First byte of every frame without attachments; a frame starting with anything else
/// than this or [`FRAME_MAGIC_ATTACHED`] is rejected.
pub const FRAME_MAGIC: u8 = 0xD5;

/// First byte of a frame followed by attachments; its last 4 bytes count them and the 8 x
/// count bytes before hold their lengths.
pub const FRAME_MAGIC_ATTACHED: u8 = 0xD7;

/// Identity of a task or of a scattered value, unique within one job.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u64);

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

/// A task function: the offset of its monomorphised trampoline from a fixed symbol of the
/// executable (identical on every rank) and an index into the client's function-name table.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FnRef {
    /// `trampoline address - anchor address`.
    pub offset: i64,
    /// Index of the function's readable name (registered with `RegisterFunction`).
    pub name: u32,
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
    /// Resources a worker must advertise, held while the task runs.
    pub resources: Vec<Resource>,
}

/// A task as the client submits it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task's key.
    pub key: Key,
    /// The function to run.
    pub func: FnRef,
    /// Its arguments, in order.
    pub args: Vec<ArgSlot>,
    /// Retries, priority, placement restrictions.
    pub options: TaskOptions,
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
}

/// What a worker needs to run a task: the function and its arguments. The scheduler keeps
/// it shared, so placing a task (again) does not copy the arguments.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskCode {
    /// Function to run.
    pub func: FnRef,
    /// Arguments.
    pub args: Vec<ArgSlot>,
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
    /// Priority among this worker's ready tasks.
    pub priority: i32,
    /// Resources held while the task runs.
    pub resources: Vec<Resource>,
}

/// One entry of the task stream (`--trace`, `--report`), recorded by the rank where it
/// happened. Times are microseconds since the Unix epoch on that rank's clock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TraceEvent {
    /// A task ran on a worker thread.
    Task {
        /// Task key.
        key: Key,
        /// Function name id (see `RegisterFunction`): the task's kind.
        func: u32,
        /// Index of the worker thread that ran it.
        thread: u32,
        /// When the function started.
        start_us: u64,
        /// How long it ran.
        duration_us: u64,
        /// `false` if it panicked or returned `Err`.
        ok: bool,
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

/// Messages the scheduler (rank 0) receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToScheduler {
    /// A worker joins (first message of every worker).
    WorkerHello(WorkerHello),
    /// The client names a function index used by later tasks.
    RegisterFunction {
        /// Index used in `FnRef::name`.
        id: u32,
        /// Readable name.
        name: String,
    },
    /// New tasks from the client.
    Submit(Vec<TaskSpec>),
    /// The client sent a value straight to `worker`; treat `key` as computing there.
    Scatter {
        /// Key of the value.
        key: Key,
        /// Worker that receives it.
        worker: Rank,
    },
    /// The client dropped its last future for these keys.
    ReleaseKeys(Vec<Key>),
    /// The client cancels these keys.
    CancelKeys(Vec<Key>),
    /// The client asks for a [`SchedulerInfo`] (answered once all workers joined).
    InfoRequest,
    /// The client asks for the job's [`JobProgress`] (answered at once).
    ProgressRequest,
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
        /// How long the function ran.
        duration_us: u64,
    },
    /// A worker's task panicked, returned `Err`, or could not decode its inputs.
    TaskFailed {
        /// Task key.
        key: Key,
        /// Attempt that failed.
        attempt: Attempt,
        /// What went wrong.
        message: String,
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
    /// Run a task (from the scheduler).
    Compute(ComputeMsg),
    /// Forget a queued or running task; a running task's result is dropped.
    CancelTask {
        /// Task key.
        key: Key,
        /// Attempt to cancel.
        attempt: Attempt,
    },
    /// Free these values (from the scheduler).
    ReleaseKeys(Vec<Key>),
    /// Give up this task if it has not started (from the scheduler); answer `StealReply`.
    Steal {
        /// Task key.
        key: Key,
        /// Attempt to steal.
        attempt: Attempt,
    },
    /// Send these values to the sender (from another worker or the client).
    GetData(Vec<Key>),
    /// A value this worker asked for (from another worker).
    Data {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "payload_bytes")]
        bytes: Payload,
    },
    /// A value this worker asked for is not held by the sender.
    DataMissing(Key),
    /// A value the client scatters to this worker.
    ScatterData {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "payload_bytes")]
        bytes: Payload,
    },
    /// A value the client scatters to every worker (to the first worker, which broadcasts
    /// it with `MPI_Ibcast` on the workers' communicator).
    BroadcastScatter {
        /// Key of the value.
        key: Key,
        /// Encoded value.
        #[serde(with = "payload_bytes")]
        bytes: Payload,
    },
    /// The sender starts broadcasting `key` (`len` bytes): post the matching receive.
    BroadcastStart {
        /// Key of the value.
        key: Key,
        /// Its size.
        len: u64,
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
        #[serde(with = "payload_bytes")]
        bytes: Payload,
    },
    /// A value the client asked for is not on that worker.
    DataMissing(Key),
    /// Answer to `InfoRequest`.
    Info(SchedulerInfo),
    /// Answer to `ProgressRequest`.
    Progress(JobProgress),
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

/// The bincode configuration used for messages and values: variable-length integers,
/// little endian, trailing bytes rejected.
pub fn codec() -> impl Options + Copy {
    bincode::DefaultOptions::new()
}

/// Encodes a task argument or result.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> bincode::Result<Vec<u8>> {
    codec().serialize(value)
}

/// Decodes a task argument or result.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
    codec().deserialize(bytes)
}

/// A frame ready to send: its bytes and the payloads attached to it.
#[derive(Debug, Default)]
pub struct Frame {
    /// Header, messages and (if there are attachments) their lengths.
    pub bytes: Vec<u8>,
    /// Large payloads the messages refer to, sent after the bytes.
    pub attachments: Vec<Payload>,
}

/// Builds one frame: messages for one destination, appended as they are produced.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    count: u32,
    attachments: Vec<Payload>,
    attached_bytes: usize,
}

const FRAME_HEADER_LEN: usize = 5;

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    /// An empty frame.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.push(FRAME_MAGIC);
        buf.extend_from_slice(&0u32.to_le_bytes());
        FrameWriter {
            buf,
            count: 0,
            attachments: Vec::new(),
            attached_bytes: 0,
        }
    }

    /// Appends one message; its large payloads become attachments.
    pub fn push<M: Serialize>(&mut self, message: &M) -> bincode::Result<()> {
        ATTACHING.with(|sink| *sink.borrow_mut() = Some(std::mem::take(&mut self.attachments)));
        let result = codec().serialize_into(&mut self.buf, message);
        self.attachments = ATTACHING.with(|sink| sink.borrow_mut().take().unwrap_or_default());
        self.attached_bytes = self.attachments.iter().map(|a| a.len()).sum();
        result?;
        self.count += 1;
        Ok(())
    }

    /// Messages appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// `true` if no message was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the frame and its attachments have so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len() + self.attached_bytes
    }

    /// The finished frame.
    pub fn finish(mut self) -> Frame {
        self.buf[1..FRAME_HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
        if !self.attachments.is_empty() {
            self.buf[0] = FRAME_MAGIC_ATTACHED;
            for attachment in &self.attachments {
                self.buf
                    .extend_from_slice(&(attachment.len() as u64).to_le_bytes());
            }
            self.buf
                .extend_from_slice(&(self.attachments.len() as u32).to_le_bytes());
        }
        Frame {
            bytes: self.buf,
            attachments: self.attachments,
        }
    }
}

/// The lengths of the attachments that follow `frame` (empty for a frame without any);
/// `None` if the frame is malformed.
pub fn attachment_lengths(frame: &[u8]) -> Option<Vec<u64>> {
    match frame.first() {
        Some(&FRAME_MAGIC) => Some(Vec::new()),
        Some(&FRAME_MAGIC_ATTACHED) => {
            let (count, table) = attachment_table(frame)?;
            Some(
                (0..count)
                    .map(|i| {
                        u64::from_le_bytes(table[8 * i..8 * i + 8].try_into().expect("8 bytes"))
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The count and the length table at the end of an attached frame.
fn attachment_table(frame: &[u8]) -> Option<(usize, &[u8])> {
    let count_at = frame.len().checked_sub(4)?;
    let count = u32::from_le_bytes(frame[count_at..].try_into().ok()?) as usize;
    let table_at = count_at.checked_sub(count.checked_mul(8)?)?;
    if table_at < FRAME_HEADER_LEN {
        return None;
    }
    Some((count, &frame[table_at..count_at]))
}

/// Encodes `messages` as one frame (payloads inline: no attachments).
pub fn encode_frame<M: Serialize>(messages: &[M]) -> bincode::Result<Vec<u8>> {
    let mut buf = vec![FRAME_MAGIC];
    buf.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for message in messages {
        codec().serialize_into(&mut buf, message)?;
    }
    Ok(buf)
}

/// Decodes a frame without attachments; a malformed or truncated frame is an error, never
/// a panic.
pub fn decode_frame<M: DeserializeOwned>(frame: &[u8]) -> bincode::Result<Vec<M>> {
    decode_frame_with(frame, Vec::new())
}

/// Decodes a frame and the attachments that came with it.
pub fn decode_frame_with<M: DeserializeOwned>(
    frame: &[u8],
    attachments: Vec<Payload>,
) -> bincode::Result<Vec<M>> {
    let malformed = |what: String| Err(Box::new(bincode::ErrorKind::Custom(what)));
    let body_end = match frame.first() {
        _ if frame.len() < FRAME_HEADER_LEN => frame.len(),
        Some(&FRAME_MAGIC) => frame.len(),
        Some(&FRAME_MAGIC_ATTACHED) => match attachment_table(frame) {
            Some((count, table)) if count == attachments.len() => frame.len() - 4 - table.len(),
            _ => {
                return malformed(format!(
                    "a frame of {} bytes does not match its {} attachments",
                    frame.len(),
                    attachments.len()
                ));
            }
        },
        _ => frame.len(),
    };
    if frame.len() < FRAME_HEADER_LEN || !matches!(frame[0], FRAME_MAGIC | FRAME_MAGIC_ATTACHED) {
        return malformed(format!(
            "not an mpidask frame ({} bytes, first byte {:?})",
            frame.len(),
            frame.first()
        ));
    }
    let count = u32::from_le_bytes(frame[1..FRAME_HEADER_LEN].try_into().expect("4 bytes"));
    let body = &frame[FRAME_HEADER_LEN..body_end];
    // Every message takes at least one byte, which bounds the allocation below.
    if count as usize > body.len() {
        return malformed(format!(
            "frame claims {count} messages in {} bytes",
            body.len()
        ));
    }
    ATTACHED.with(|source| *source.borrow_mut() = attachments.into_iter().map(Some).collect());
    let options = codec().with_limit(body.len() as u64);
    let mut deserializer = bincode::Deserializer::from_slice(body, options);
    let mut messages = Vec::with_capacity(count as usize);
    let mut result = Ok(());
    for _ in 0..count {
        match M::deserialize(&mut deserializer) {
            Ok(message) => messages.push(message),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    ATTACHED.with(|source| source.borrow_mut().clear());
    result.map(|()| messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_messages() -> Vec<ToScheduler> {
        vec![
            ToScheduler::Submit(vec![TaskSpec {
                key: Key(7),
                func: FnRef {
                    offset: -1234,
                    name: 3,
                },
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
                },
            }]),
            ToScheduler::Heartbeat,
            ToScheduler::TaskFinished {
                key: Key(u64::MAX),
                attempt: 9,
                nbytes: 1 << 40,
                duration_us: 17,
            },
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
        let big: Payload = Arc::new(vec![7u8; ATTACH_BYTES + 1]);
        let small: Payload = Arc::new(vec![1, 2, 3]);
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
            attachment_lengths(&frame.bytes),
            Some(vec![big.len() as u64; 2])
        );
        let decoded: Vec<ToWorker> =
            decode_frame_with(&frame.bytes, frame.attachments.clone()).unwrap();
        assert_eq!(decoded, messages);
        // Without its attachments the frame is an error, not a panic.
        assert!(decode_frame::<ToWorker>(&frame.bytes).is_err());
        for cut in 0..frame.bytes.len() {
            let _ = decode_frame_with::<ToWorker>(&frame.bytes[..cut], frame.attachments.clone());
            let _ = attachment_lengths(&frame.bytes[..cut]);
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
    fn values_round_trip() {
        let value = (1u64, vec![0.5f64, -2.0], String::from("x"));
        let bytes = encode_value(&value).unwrap();
        assert_eq!(
            decode_value::<(u64, Vec<f64>, String)>(&bytes).unwrap(),
            value
        );
    }
}
