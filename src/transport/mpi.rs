//! The MPI transport: the only code in mpidask that calls rsmpi after start-up.
//!
//! Frames go out as non-blocking standard sends (`MPI_Isend`), so two ranks sending large
//! frames to each other cannot deadlock, and come in through matched probes
//! (`MPI_Improbe` + `MPI_Mrecv`), which size the receive buffer exactly. A frame larger than
//! the part size (1 GiB by default; MPI counts are 32-bit) is sent as a small header message
//! followed by its parts on the same tag; MPI keeps messages between two ranks on one tag in
//! order, so the receiver reassembles them into one buffer without extra copies.
//!
//! A frame's attachments (large payloads, see [`crate::protocol::ATTACH_BYTES`]) follow it
//! on the same tag, each as one message (or as parts, above the part size) sent straight
//! from the payload's buffer; the receiver learns their lengths from the end of the frame
//! and receives each into a buffer of its own, which becomes the payload: no copy on either
//! side beyond what MPI itself does.

use super::{Incoming, Transport};
use crate::protocol::{Frame, Key, Payload, Rank, attachment_lengths};
use mpi::datatype::Equivalence;
use mpi::point_to_point::Message;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::Arc;

/// The tag of every mpidask message.
pub const TAG_FRAME: i32 = 0x6d64;

/// First byte of the header message announcing a frame sent in parts.
const PARTS_MAGIC: u8 = 0xD6;
const PARTS_HEADER_LEN: usize = 1 + 8;

/// Default size of the parts of a large frame.
pub const DEFAULT_PART_BYTES: usize = 1 << 30;

/// A send buffer handed to MPI, alive until the last send reading it completed: a frame
/// the transport owns, or a payload shared with the rank's store.
enum SendBuffer {
    Owned(Vec<u8>),
    Shared(Payload),
}

impl SendBuffer {
    fn bytes(&self) -> &'static [u8] {
        let bytes: &[u8] = match self {
            SendBuffer::Owned(bytes) => bytes,
            SendBuffer::Shared(payload) => payload,
        };
        // SAFETY: the bytes are never modified or freed while this buffer exists (a frame is
        // owned here; a shared payload is immutable behind its `Arc`), and every request
        // reading them holds an `Rc` to this buffer, so it outlives them.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) }
    }
}

struct PendingSend {
    request: Request<'static, [u8], StaticScope>,
    _buffer: Rc<SendBuffer>,
}

/// A byte MPI may write without it being initialised first.
#[repr(transparent)]
struct UninitByte(MaybeUninit<u8>);

// SAFETY: same layout as `u8` (repr(transparent) over MaybeUninit<u8>), described by
// `u8`'s datatype.
unsafe impl Equivalence for UninitByte {
    type Out = <u8 as Equivalence>::Out;
    fn equivalent_datatype() -> Self::Out {
        u8::equivalent_datatype()
    }
}

/// A receive buffer of `len` bytes that MPI fills: allocated without zeroing it first (a
/// pass over the memory that would cost as much as a shared-memory transfer).
struct ReceiveBuffer {
    bytes: Vec<UninitByte>,
    filled: usize,
}

impl ReceiveBuffer {
    fn new(len: usize) -> Self {
        if let Some(recycled) = super::buffer_pool::take(len) {
            let mut recycled = std::mem::ManuallyDrop::new(recycled);
            // SAFETY: `UninitByte` has the layout of `u8`; same pointer, length, capacity.
            let bytes = unsafe {
                Vec::from_raw_parts(
                    recycled.as_mut_ptr().cast::<UninitByte>(),
                    recycled.len(),
                    recycled.capacity(),
                )
            };
            return ReceiveBuffer { bytes, filled: 0 };
        }
        let mut bytes: Vec<UninitByte> = Vec::with_capacity(len);
        // SAFETY: `UninitByte` may hold any bit pattern, including none.
        unsafe { bytes.set_len(len) };
        if len >= HUGE_PAGE_THRESHOLD {
            advise_huge_pages(bytes.as_mut_ptr().cast(), len);
        }
        ReceiveBuffer { bytes, filled: 0 }
    }

    /// Receives `message` of `count` bytes into the next part of the buffer.
    fn receive(&mut self, message: Message, count: usize) {
        let end = (self.filled + count).min(self.bytes.len());
        message.matched_receive_into(&mut self.bytes[self.filled..end]);
        self.filled = end;
    }

    fn is_full(&self) -> bool {
        self.filled == self.bytes.len()
    }

    fn into_vec(self) -> Vec<u8> {
        assert!(self.is_full(), "every byte was received");
        let mut bytes = std::mem::ManuallyDrop::new(self.bytes);
        // SAFETY: every byte was written by MPI (checked above); `UninitByte` has the layout
        // of `u8`, so the allocation is a valid `Vec<u8>` of the same length and capacity.
        unsafe {
            Vec::from_raw_parts(
                bytes.as_mut_ptr().cast::<u8>(),
                bytes.len(),
                bytes.capacity(),
            )
        }
    }
}

/// Receive buffers at least this large ask for transparent huge pages: the kernel then
/// faults in (and zeroes) 2 MiB at a time instead of 4 KiB, which otherwise costs as much
/// as the copy itself for a 200 MB value.
const HUGE_PAGE_THRESHOLD: usize = 4 << 20;

/// Asks the kernel to back `[ptr, ptr + len)` with huge pages (a hint; errors are ignored).
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

/// What the transport is receiving from one source.
#[derive(Default)]
enum SourceState {
    /// The next message starts a frame.
    #[default]
    Idle,
    /// The parts of a large frame.
    FrameParts(ReceiveBuffer),
    /// The attachments of `frame`: `received` so far, then those of `lengths` still due.
    Attachments {
        frame: Vec<u8>,
        lengths: Vec<u64>,
        received: Vec<Payload>,
        current: Option<ReceiveBuffer>,
    },
}

/// A broadcast in flight on this rank: its buffer (the root's copy of the value, or the
/// receiver's buffer being filled) and one `MPI_Ibcast` per part.
struct PendingBroadcast {
    key: Key,
    buffer: *mut [UninitByte],
    requests: Vec<Request<'static, [UninitByte], StaticScope>>,
    receiving: bool,
}

impl PendingBroadcast {
    /// Takes the buffer back (every request completed or was forgotten).
    fn into_vec(self) -> Vec<u8> {
        // SAFETY: created by `Box::into_raw` of a boxed slice of `UninitByte` in
        // `post_broadcast`; no request reads or writes it any more. `UninitByte` has the
        // layout of `u8`, and every byte was written (by the root's copy or by MPI).
        unsafe {
            let boxed = Box::from_raw(self.buffer);
            let len = boxed.len();
            let raw = Box::into_raw(boxed).cast::<u8>();
            Vec::from_raw_parts(raw, len, len)
        }
    }
}

/// `MPI_COMM_WORLD` as a [`Transport`].
pub struct MpiTransport {
    world: SimpleCommunicator,
    rank: Rank,
    size: usize,
    part_bytes: usize,
    pending: Vec<PendingSend>,
    sources: Vec<SourceState>,
    /// The workers' communicator (ranks 2 and up), for broadcasts; `None` elsewhere.
    workers: Option<SimpleCommunicator>,
    broadcasts: Vec<PendingBroadcast>,
    received: Vec<(Key, Payload)>,
}

impl MpiTransport {
    /// The transport over `world`, splitting messages above `part_bytes`; `workers` is the
    /// workers' communicator on worker ranks.
    pub fn new(
        world: SimpleCommunicator,
        part_bytes: usize,
        workers: Option<SimpleCommunicator>,
    ) -> Self {
        let rank = Rank(world.rank() as u32);
        let size = world.size() as usize;
        MpiTransport {
            world,
            rank,
            size,
            part_bytes: part_bytes.clamp(1, i32::MAX as usize),
            pending: Vec::new(),
            sources: (0..size).map(|_| SourceState::Idle).collect(),
            workers,
            broadcasts: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Posts the `MPI_Ibcast`s (one per part) of a broadcast from worker `root` over
    /// `buffer`, which this rank gives up until they complete.
    fn post_broadcast(&mut self, root: Rank, key: Key, buffer: Box<[UninitByte]>, receiving: bool) {
        let workers = self
            .workers
            .as_ref()
            .expect("only workers take part in broadcasts");
        let root = workers.process_at_rank((root.0 - Rank::FIRST_WORKER.0) as i32);
        let len = buffer.len();
        let buffer = Box::into_raw(buffer);
        let mut requests = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + self.part_bytes).min(len);
            // SAFETY: the parts are disjoint, and the buffer stays allocated (owned by the
            // pending broadcast) until every request on it completed.
            let part: &'static mut [UninitByte] = unsafe { &mut (&mut *buffer)[start..end] };
            requests.push(root.immediate_broadcast_into(StaticScope, part));
            start = end;
            if start >= len {
                break;
            }
        }
        self.broadcasts.push(PendingBroadcast {
            key,
            buffer,
            requests,
            receiving,
        });
    }

    /// Sends `buffer` to `to` as one message, or in parts above the part size.
    fn send_in_parts(&mut self, to: Rank, buffer: Rc<SendBuffer>) {
        let len = buffer.bytes().len();
        let mut start = 0;
        loop {
            let end = (start + self.part_bytes).min(len);
            self.start_send(to, buffer.clone(), start..end);
            start = end;
            if start >= len {
                break;
            }
        }
    }

    /// A frame has arrived whole from `source`: deliver it, or wait for its attachments.
    fn frame_arrived(&mut self, source: usize, frame: Vec<u8>, out: &mut Vec<Incoming>) {
        let from = Rank(source as u32);
        match attachment_lengths(&frame) {
            Some(lengths) if !lengths.is_empty() => {
                self.sources[source] = SourceState::Attachments {
                    frame,
                    received: Vec::with_capacity(lengths.len()),
                    lengths,
                    current: None,
                };
            }
            // A frame without attachments, or a malformed one (the decoder reports it).
            _ => out.push(Incoming {
                from,
                frame,
                attachments: Vec::new(),
            }),
        }
    }

    /// The next message from `source` is an attachment (or part of one).
    fn attachment_arrived(
        &mut self,
        source: usize,
        message: Message,
        count: usize,
        out: &mut Vec<Incoming>,
    ) {
        let SourceState::Attachments {
            lengths,
            received,
            current,
            ..
        } = &mut self.sources[source]
        else {
            unreachable!("called in the attachments state");
        };
        let buffer =
            current.get_or_insert_with(|| ReceiveBuffer::new(lengths[received.len()] as usize));
        buffer.receive(message, count);
        if buffer.is_full() {
            received.push(Arc::new(current.take().expect("present").into_vec()));
        }
        if received.len() == lengths.len() {
            let SourceState::Attachments {
                frame, received, ..
            } = std::mem::take(&mut self.sources[source])
            else {
                unreachable!("checked above");
            };
            out.push(Incoming {
                from: Rank(source as u32),
                frame,
                attachments: received,
            });
        }
    }

    fn start_send(&mut self, to: Rank, buffer: Rc<SendBuffer>, range: std::ops::Range<usize>) {
        let bytes = &buffer.bytes()[range];
        let request = self
            .world
            .process_at_rank(to.0 as i32)
            .immediate_send_with_tag(StaticScope, bytes, TAG_FRAME);
        self.pending.push(PendingSend {
            request,
            _buffer: buffer,
        });
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, to: Rank, frame: Frame) {
        let len = frame.bytes.len();
        if len > self.part_bytes {
            let mut header = Vec::with_capacity(PARTS_HEADER_LEN);
            header.push(PARTS_MAGIC);
            header.extend_from_slice(&(len as u64).to_le_bytes());
            self.start_send(to, Rc::new(SendBuffer::Owned(header)), 0..PARTS_HEADER_LEN);
        }
        self.send_in_parts(to, Rc::new(SendBuffer::Owned(frame.bytes)));
        for attachment in frame.attachments {
            self.send_in_parts(to, Rc::new(SendBuffer::Shared(attachment)));
        }
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) {
        while let Some((message, status)) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG_FRAME)
        {
            let source = status.source_rank() as usize;
            let count = status.count(u8::equivalent_datatype()) as usize;
            match &mut self.sources[source] {
                SourceState::Attachments { .. } => {
                    self.attachment_arrived(source, message, count, out);
                }
                SourceState::FrameParts(buffer) => {
                    buffer.receive(message, count);
                    if buffer.is_full() {
                        let SourceState::FrameParts(buffer) =
                            std::mem::take(&mut self.sources[source])
                        else {
                            unreachable!("matched above");
                        };
                        self.frame_arrived(source, buffer.into_vec(), out);
                    }
                }
                SourceState::Idle => {
                    let mut buffer = ReceiveBuffer::new(count);
                    buffer.receive(message, count);
                    let bytes = buffer.into_vec();
                    if bytes.len() == PARTS_HEADER_LEN && bytes[0] == PARTS_MAGIC {
                        let total =
                            u64::from_le_bytes(bytes[1..].try_into().expect("8 bytes")) as usize;
                        self.sources[source] = SourceState::FrameParts(ReceiveBuffer::new(total));
                    } else {
                        self.frame_arrived(source, bytes, out);
                    }
                }
            }
        }
    }

    fn broadcast_send(&mut self, key: Key, value: Payload) {
        // MPI_Ibcast takes a writable buffer at the root too: the root sends from a copy.
        let copy: Box<[UninitByte]> = value
            .iter()
            .map(|b| UninitByte(MaybeUninit::new(*b)))
            .collect();
        self.post_broadcast(self.rank, key, copy, false);
    }

    fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize) {
        let buffer = ReceiveBuffer::new(len).bytes.into_boxed_slice();
        self.post_broadcast(root, key, buffer, true);
    }

    fn received_broadcasts(&mut self, out: &mut Vec<(Key, Payload)>) {
        out.append(&mut self.received);
    }

    fn progress(&mut self) -> usize {
        if !self.broadcasts.is_empty() {
            for mut broadcast in std::mem::take(&mut self.broadcasts) {
                let mut still = Vec::new();
                for request in broadcast.requests.drain(..) {
                    if let Err(request) = request.test() {
                        still.push(request);
                    }
                }
                broadcast.requests = still;
                if !broadcast.requests.is_empty() {
                    self.broadcasts.push(broadcast);
                } else if broadcast.receiving {
                    let key = broadcast.key;
                    self.received.push((key, Arc::new(broadcast.into_vec())));
                } else {
                    drop(broadcast.into_vec());
                }
            }
        }
        if self.pending.is_empty() {
            return self.broadcasts.len();
        }
        let mut still = Vec::with_capacity(self.pending.len());
        for send in self.pending.drain(..) {
            match send.request.test() {
                Ok(_) => {}
                Err(request) => still.push(PendingSend {
                    request,
                    _buffer: send._buffer,
                }),
            }
        }
        self.pending = still;
        self.pending.len() + self.broadcasts.len()
    }

    fn wakes_receiver(&self) -> bool {
        false
    }

    fn abort(&mut self, code: i32) -> ! {
        crate::private_dir::remove_all();
        // Give the launcher a moment to forward this rank's last lines (the reason for the
        // abort) before it tears the job down; MPICH's Hydra may drop them otherwise.
        use std::io::Write;
        let _ = std::io::stderr().flush();
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.world.abort(code)
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        // Sends still pending here belong to a job that is ending anyway; completing them
        // could block forever, and rsmpi panics on dropping an incomplete request.
        for send in self.pending.drain(..) {
            std::mem::forget(send);
        }
        for broadcast in self.broadcasts.drain(..) {
            std::mem::forget(broadcast.requests);
        }
    }
}
