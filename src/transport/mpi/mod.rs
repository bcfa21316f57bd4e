//! The MPI transport: the only code in mpidask that calls rsmpi.
//!
//! Frames go out as non-blocking standard sends (`MPI_Isend`), so two ranks sending large
//! frames to each other cannot deadlock, and come in through matched probes
//! (`MPI_Improbe` + `MPI_Mrecv`), which size the receive buffer exactly. A frame larger than
//! the part size (8 MiB by default, see [`crate::config::DEFAULT_PART_BYTES`]) is sent as a small header message
//! followed by its parts on the same tag; MPI keeps messages between two ranks on one tag in
//! order, so the receiver reassembles them into one buffer without extra copies
//! ([`reassembly`]). A message of [`ASYNC_RECEIVE_BYTES`] or more is received without
//! blocking (`MPI_Imrecv`), at most one per sender at a time: the loop keeps handling other
//! ranks' messages (the scheduler's heartbeats) while it arrives, which over TCP, with the
//! sender and the page cache competing for the cores, can take a good part of a second.
//! The sender's next messages, once matched, wait in a queue of their own until it has
//! arrived, and one call matches at most [`MAX_MATCHED_PER_CALL`] messages: the loop never
//! waits for a receive, so a worker receiving a stream of large values still sends its own,
//! starts its tasks and reports their results in between.
//!
//! A frame's attachments (large payloads, see [`crate::protocol::frame::ATTACH_BYTES`]) follow it
//! on the same tag, each as one message (or as parts, above the part size) sent straight
//! from the payload's buffer; the receiver learns their lengths from the end of the frame
//! and receives each into a buffer of its own, which becomes the payload: no copy on either
//! side beyond what MPI itself does.
//!
//! A process may also host a worker (`--worker-on-client`, `--worker-on-scheduler`; see
//! [`super::hosted`]): its frames go through this transport, on the process's one MPI
//! thread. The tag says which end of the sending and the receiving process a message is
//! from and for ([`LANES`]), so messages between two ranks stay in order on one tag
//! whichever processes they run in.

pub mod bootstrap;
mod broadcast;
mod buffers;
// Public (hidden) with the `internals` feature; see `crate::internals`.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod reassembly;
#[cfg(not(feature = "internals"))]
mod reassembly;
pub mod task_comm;

pub use broadcast::MpiCollectives;

use super::hosted::{self, HostedTransport, Link, Outgoing, Placement};
use super::{Incoming, Malformed, Transport};
use crate::protocol::{Frame, Rank};
use buffers::{SendBuffer, UninitByte};
use crossbeam_channel::TryRecvError;
use mpi::datatype::Equivalence;
use mpi::point_to_point::Message;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use reassembly::{PARTS_HEADER_LEN, Reassembler, parts_header};
use std::collections::VecDeque;
use std::rc::Rc;

/// The communicator an MPI task's function receives (rsmpi's): exactly the workers that run
/// the task, in the order the scheduler chose them; rank 0's result is the task's value.
pub type MpiComm = SimpleCommunicator;

/// The tag of every mpidask message between the processes' own ranks; messages from or to a
/// hosted worker use the next three tags ([`LANES`]).
pub const TAG_FRAME: i32 = 0x6d64;

/// Tags in use, one per (sender's slot, receiver's slot) in their processes: tag
/// `TAG_FRAME + 2 * sending slot + receiving slot`, slot 0 being the process's own rank and
/// slot 1 the worker it hosts.
pub const LANES: usize = 4;

/// The lane of a message from `from_slot` to `to_slot`.
fn lane(from_slot: usize, to_slot: usize) -> usize {
    2 * from_slot + to_slot
}

// SAFETY: same layout as `u8` (repr(transparent) over MaybeUninit<u8>), described by
// `u8`'s datatype.
unsafe impl Equivalence for UninitByte {
    type Out = <u8 as Equivalence>::Out;
    fn equivalent_datatype() -> Self::Out {
        u8::equivalent_datatype()
    }
}

/// Messages at least this large are received without blocking.
pub const ASYNC_RECEIVE_BYTES: usize = 1 << 20;

/// Messages matched by one call of [`Transport::receive`] at most, so a stream of them
/// cannot keep the loop from its other work.
pub const MAX_MATCHED_PER_CALL: usize = 64;

/// A message matched but not yet received (its sender's previous one is still arriving).
/// Senders here are lanes of processes: `process * LANES + lane`.
struct Matched {
    message: Message,
    count: usize,
}

/// A large message being received from `source` into the reassembler's buffer for it.
struct PendingReceive {
    source: usize,
    count: usize,
    request: Request<'static, [UninitByte], StaticScope>,
}

/// A send in flight and the buffer it reads, kept alive until it completes.
struct PendingSend {
    request: Request<'static, [u8], StaticScope>,
    _buffer: Rc<SendBuffer>,
}

/// `MPI_COMM_WORLD` as a [`Transport`].
pub struct MpiTransport {
    world: SimpleCommunicator,
    rank: Rank,
    placement: Placement,
    /// The worker this process hosts, once its transport was made.
    link: Option<Link>,
    /// The hosted worker's node has ended and everything it sent was taken.
    link_closed: bool,
    /// Frames were relayed for the hosted worker since [`Transport::relayed`] was last called.
    relayed: bool,
    /// Frames completed in this call of [`Transport::receive`], before they are routed.
    arrived: Vec<Incoming>,
    part_bytes: usize,
    pending: Vec<PendingSend>,
    /// Large messages being received, at most one per sender.
    receiving: Vec<PendingReceive>,
    /// Per sender, the messages matched while one of theirs was still being received, in
    /// the order they were sent.
    matched: Vec<VecDeque<Matched>>,
    reassembler: Reassembler,
}

impl MpiTransport {
    /// The transport over `world`, whose processes run the ranks as `placement` says,
    /// splitting messages above `part_bytes`.
    fn new(world: SimpleCommunicator, part_bytes: usize, placement: Placement) -> Self {
        let rank = Rank(u32::try_from(world.rank()).expect("MPI ranks are not negative"));
        let size = usize::try_from(world.size()).expect("MPI sizes are not negative");
        assert_eq!(
            placement.processes(),
            size,
            "the placement is of this world"
        );
        // MPI counts are `int`.
        let part_bytes = part_bytes.clamp(1, i32::MAX.unsigned_abs() as usize);
        let senders = size * LANES;
        MpiTransport {
            world,
            rank,
            placement,
            link: None,
            link_closed: false,
            relayed: false,
            arrived: Vec::new(),
            part_bytes,
            pending: Vec::new(),
            receiving: Vec::new(),
            matched: (0..senders).map(|_| VecDeque::new()).collect(),
            // Nothing larger than the machine's memory can be received.
            reassembler: Reassembler::new(
                senders,
                part_bytes,
                crate::memory::mem_total()
                    .and_then(|bytes| usize::try_from(bytes).ok())
                    .unwrap_or(isize::MAX as usize),
            ),
        }
    }

    /// Hands the large messages that have arrived to the reassembler, and starts receiving
    /// the next matched message of each sender whose receive completed.
    fn complete_receives(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        if self.receiving.is_empty() {
            return Ok(());
        }
        let mut still = Vec::with_capacity(self.receiving.len());
        let mut done = Vec::new();
        let mut receives = std::mem::take(&mut self.receiving).into_iter();
        while let Some(receive) = receives.next() {
            let PendingReceive {
                source,
                count,
                request,
            } = receive;
            if let Err(request) = request.test() {
                still.push(PendingReceive {
                    source,
                    count,
                    request,
                });
                continue;
            }
            match self.reassembler.received(source, count) {
                Ok(Some(incoming)) => out.push(incoming),
                Ok(None) => {}
                Err(malformed) => {
                    // The job ends now: receives still in flight are forgotten (rsmpi
                    // panics when an incomplete request is dropped).
                    receives.chain(still).for_each(std::mem::forget);
                    return Err(malformed);
                }
            }
            done.push(source);
        }
        self.receiving = still;
        for source in done {
            self.start_matched(source, out)?;
        }
        Ok(())
    }

    /// Receives the messages that have arrived; the frames completed go to `out`, their
    /// `from` the sender (`process * LANES + lane`).
    fn receive_messages(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        self.complete_receives(out)?;
        for _ in 0..MAX_MATCHED_PER_CALL {
            let Some((message, status)) = self.world.any_process().immediate_matched_probe() else {
                break;
            };
            let process = usize::try_from(status.source_rank()).unwrap_or(usize::MAX);
            let lane = usize::try_from(status.tag() - TAG_FRAME)
                .ok()
                .filter(|lane| *lane < LANES);
            let count = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
            let Some((source, queue)) = lane
                .and_then(|lane| process.checked_mul(LANES).map(|first| first + lane))
                .and_then(|source| Some((source, self.matched.get_mut(source)?)))
            else {
                std::mem::forget(message);
                return Err(Malformed {
                    // The process's own rank, once `name_sender` has named it.
                    from: Rank(u32::try_from(process.saturating_mul(LANES)).unwrap_or(u32::MAX)),
                    reason: format!(
                        "a message from process {process} with tag {}, which is not mpidask's \
                         or from outside the job",
                        status.tag()
                    ),
                });
            };
            // Messages from one sender go through the reassembler in order: behind the one
            // still arriving from this sender, this one waits its turn.
            if !queue.is_empty() || self.receiving.iter().any(|r| r.source == source) {
                queue.push_back(Matched { message, count });
                continue;
            }
            self.start_receive(source, message, count, out)?;
        }
        Ok(())
    }

    /// Messages being received or matched and waiting their turn.
    fn receives_in_flight(&self) -> usize {
        self.receiving.len() + self.matched.iter().map(VecDeque::len).sum::<usize>()
    }

    /// Receives the matched messages queued for `source`, in order, until one has to be
    /// received without blocking (or none is left).
    fn start_matched(&mut self, source: usize, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        while !self.receiving.iter().any(|r| r.source == source) {
            let Some(Matched { message, count }) = self.matched[source].pop_front() else {
                return Ok(());
            };
            self.start_receive(source, message, count, out)?;
        }
        Ok(())
    }

    /// Receives `message` (`count` bytes from `source`, every earlier message of whose has
    /// been received) into the place the reassembler gives it: at once if it is small, else
    /// without blocking.
    fn start_receive(
        &mut self,
        source: usize,
        message: Message,
        count: usize,
        out: &mut Vec<Incoming>,
    ) -> Result<(), Malformed> {
        let slot = match self.reassembler.accept(source, count) {
            Ok(slot) => slot,
            Err(malformed) => {
                // The job ends now (the caller aborts it): the matched message is never
                // received, and rsmpi panics when an unreceived one is dropped.
                std::mem::forget(message);
                return Err(malformed);
            }
        };
        if count >= ASYNC_RECEIVE_BYTES {
            // SAFETY: the slot is part of the buffer the reassembler keeps for `source`
            // (a heap allocation that does not move) and does not touch until
            // `received(source, ..)`, which comes only after this request completed (or
            // never, when the job ends and the request is forgotten).
            let slot: &'static mut [UninitByte] =
                unsafe { std::slice::from_raw_parts_mut(slot.as_mut_ptr(), slot.len()) };
            let request = message.immediate_matched_receive_into(StaticScope, slot);
            self.receiving.push(PendingReceive {
                source,
                count,
                request,
            });
            return Ok(());
        }
        message.matched_receive_into(slot);
        if let Some(incoming) = self.reassembler.received(source, count)? {
            out.push(incoming);
        }
        Ok(())
    }

    /// The transport of the worker this process hosts (`None` if it hosts none, or after
    /// the first call). Its frames go through this transport's [`Transport::receive`].
    pub fn host_worker(&mut self) -> Option<HostedTransport> {
        if self.link.is_some() {
            return None;
        }
        let rank = self.placement.hosted_by(self.rank)?;
        let (link, transport) = hosted::link(rank);
        self.link = Some(link);
        Some(transport)
    }

    /// After this rank's own loop ended: relays for the hosted worker until its node has
    /// ended and its last frames are sent, or `timeout` passed (`false`).
    pub fn finish_hosted(&mut self, timeout: std::time::Duration) -> bool {
        if self.link.is_none() {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut discarded = Vec::new();
        loop {
            // Frames for this rank's own node are not read any more.
            if let Err(e) = self.receive(&mut discarded) {
                log::debug!("after the loop ended: {e}");
            }
            discarded.clear();
            if self.link_closed && self.progress() == 0 {
                self.link = None;
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::park_timeout(std::time::Duration::from_micros(200));
        }
    }

    /// Sends `frame` from this process's slot `from_slot` to `to`.
    fn send_from(&mut self, from_slot: usize, to: Rank, frame: Frame) {
        let Some((process, to_slot)) = self.placement.slot(to) else {
            log::error!(
                "{} was asked to send to {to}, which is not in the job",
                self.rank
            );
            return;
        };
        let tag = TAG_FRAME + i32::try_from(lane(from_slot, to_slot)).expect("four lanes");
        let process = Rank(u32::try_from(process).expect("ranks fit in u32"));
        let len = frame.bytes.len();
        if len > self.part_bytes {
            let header = Rc::new(SendBuffer::Owned(parts_header(len)));
            self.start_send(process, tag, header, 0..PARTS_HEADER_LEN);
        }
        self.send_in_parts(process, tag, Rc::new(SendBuffer::Owned(frame.bytes)));
        for attachment in frame.attachments {
            // A split value: its head, then its body from where it lies.
            if let Some((head, _)) = attachment.pieces()
                && !head.is_empty()
            {
                let head = Rc::new(SendBuffer::Owned(head.to_vec()));
                let len = head.as_slice().len();
                self.start_send(process, tag, head, 0..len);
            }
            self.send_in_parts(process, tag, Rc::new(SendBuffer::Shared(attachment)));
        }
    }

    /// The rank that sent on sender `source` (`process * LANES + lane`), and whether the
    /// message is for the hosted worker.
    fn sender_of(&self, source: usize) -> (Option<Rank>, bool) {
        let (process, lane) = (source / LANES, source % LANES);
        (self.placement.rank_at((process, lane / 2)), lane % 2 == 1)
    }

    /// Gives a malformed message the rank of its sender.
    fn name_sender(&self, mut malformed: Malformed) -> Malformed {
        let (from, _) = self.sender_of(malformed.from.index());
        malformed.from = from.unwrap_or(Rank(u32::MAX));
        malformed
    }

    /// Hands each arrived frame (its `from` a sender, see [`Self::sender_of`]) to this
    /// rank's node (`out`) or to the hosted worker.
    fn route(
        &mut self,
        arrived: &mut Vec<Incoming>,
        out: &mut Vec<Incoming>,
    ) -> Result<(), Malformed> {
        for mut incoming in arrived.drain(..) {
            let source = incoming.from.index();
            let (from, for_hosted) = self.sender_of(source);
            let Some(from) = from else {
                return Err(Malformed {
                    from: Rank(u32::try_from(source / LANES).unwrap_or(u32::MAX)),
                    reason: "a message from a worker that process does not host".into(),
                });
            };
            incoming.from = from;
            if !for_hosted {
                out.push(incoming);
                continue;
            }
            let Some(link) = &self.link else {
                return Err(Malformed {
                    from,
                    reason: format!("a message for a worker {} does not host", self.rank),
                });
            };
            link.deliver(incoming);
            self.relayed = true;
        }
        Ok(())
    }

    /// Sends what the hosted worker handed over (to this rank's node: into `out`).
    fn relay_outgoing(&mut self, out: &mut Vec<Incoming>) {
        loop {
            let Some(link) = &self.link else {
                return;
            };
            let hosted = link.rank;
            match link.next() {
                Ok(Outgoing::Frame(to, frame)) => {
                    self.relayed = true;
                    if to == self.rank {
                        out.push(Incoming {
                            from: hosted,
                            frame: frame.bytes,
                            attachments: frame.attachments,
                        });
                    } else {
                        self.send_from(1, to, frame);
                    }
                }
                Ok(Outgoing::Abort(code)) => self.abort(code),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.link_closed = true;
                    return;
                }
            }
        }
    }

    /// Sends `buffer` to process `to` on `tag` as one message, or in parts above the part
    /// size.
    fn send_in_parts(&mut self, to: Rank, tag: i32, buffer: Rc<SendBuffer>) {
        let len = buffer.as_slice().len();
        let mut start = 0;
        loop {
            let end = (start + self.part_bytes).min(len);
            self.start_send(to, tag, buffer.clone(), start..end);
            start = end;
            if start >= len {
                break;
            }
        }
    }

    fn start_send(
        &mut self,
        to: Rank,
        tag: i32,
        buffer: Rc<SendBuffer>,
        range: std::ops::Range<usize>,
    ) {
        // SAFETY: the `Rc` kept with the request below holds the buffer until the request
        // completed (or, at exit, is forgotten with it).
        let bytes = unsafe { &buffer.as_static()[range] };
        let to = i32::try_from(to.0).expect("ranks fit in an MPI int");
        let request =
            self.world
                .process_at_rank(to)
                .immediate_send_with_tag(StaticScope, bytes, tag);
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

    fn send(&mut self, to: Rank, frame: Frame) {
        if let Some(link) = &self.link
            && to == link.rank
        {
            link.deliver(Incoming {
                from: self.rank,
                frame: frame.bytes,
                attachments: frame.attachments,
            });
            self.relayed = true;
            return;
        }
        self.send_from(0, to, frame);
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        let mut arrived = std::mem::take(&mut self.arrived);
        let received = self
            .receive_messages(&mut arrived)
            .map_err(|malformed| self.name_sender(malformed))
            .and_then(|()| self.route(&mut arrived, out));
        self.arrived = arrived;
        received?;
        self.relay_outgoing(out);
        Ok(())
    }

    fn progress(&mut self) -> usize {
        if self.pending.is_empty() {
            return self.receives_in_flight();
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
        self.pending.len() + self.receives_in_flight()
    }

    fn wakes_receiver(&self) -> bool {
        false
    }

    fn attach_current_thread(&mut self) {
        if let Some(link) = &self.link {
            link.attach_host_thread();
        }
    }

    fn relayed(&mut self) -> bool {
        std::mem::take(&mut self.relayed)
    }

    fn abort(&mut self, code: i32) -> ! {
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
        for receive in self.receiving.drain(..) {
            std::mem::forget(receive);
        }
        for queue in &mut self.matched {
            queue.drain(..).for_each(std::mem::forget);
        }
    }
}
