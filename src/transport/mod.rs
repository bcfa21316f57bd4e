//! Moving frames between ranks: the [`Transport`] interface, its MPI and local (threads)
//! implementations, and the per-destination [`Outbox`] that batches small messages.

pub mod local;
pub mod mpi;

use crate::protocol::{Frame, FrameWriter, Key, Payload, Rank};
use serde::Serialize;

/// A frame received from another rank, with its attachments.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    /// The sender.
    pub from: Rank,
    /// The frame's bytes.
    pub frame: Vec<u8>,
    /// The large payloads that came with it, in order.
    pub attachments: Vec<Payload>,
}

/// Sends and receives whole frames between the ranks of one job. Nothing here blocks: the
/// rank's single communication thread polls it.
pub trait Transport {
    /// This rank.
    fn rank(&self) -> Rank;
    /// Number of ranks in the job.
    fn size(&self) -> usize;
    /// Starts sending `frame` (and its attachments, straight from their buffers) to `to`;
    /// the transport holds the buffers until the sends complete.
    fn send(&mut self, to: Rank, frame: Frame);
    /// Appends every frame that has fully arrived to `out`.
    fn receive(&mut self, out: &mut Vec<Incoming>);
    /// Advances sends in flight; returns how many are still pending.
    fn progress(&mut self) -> usize;
    /// Declares the calling thread as the one that receives (call it from the thread that
    /// will poll), so a transport that can wake it does.
    fn attach_current_thread(&mut self) {}
    /// `true` if an arriving frame wakes the attached thread (threads); `false` if the
    /// receiver must poll (MPI).
    fn wakes_receiver(&self) -> bool;
    /// Ends the whole job now with `code`.
    fn abort(&mut self, code: i32) -> !;
    /// Starts broadcasting `value` (known as `key`) from this worker to every worker: a
    /// collective (`MPI_Ibcast`) on the workers' communicator, so every worker must post
    /// its receive with [`Transport::broadcast_receive`], in the same order.
    fn broadcast_send(&mut self, key: Key, value: Payload);
    /// Posts this worker's part of the broadcast of `key` (`len` bytes) from worker `root`.
    fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize);
    /// Appends the broadcasts this worker has received whole since the last call.
    fn received_broadcasts(&mut self, out: &mut Vec<(Key, Payload)>);
}

/// A broadcast a node asks for, carried out in order when the outbox is flushed.
enum BroadcastOrder {
    Send(Key, Payload),
    Receive(Rank, Key, usize),
}

/// Buffers of released values, kept for receiving values of the same size again: memory
/// already faulted in, where a new allocation would have the kernel fault in and zero every
/// page (for a 200 MB chunk that costs as much as the transfer). Chunked workloads move
/// values of the same few sizes over and over.
pub mod buffer_pool {
    use std::sync::Mutex;

    /// Only buffers at least this large are kept.
    pub const MIN_BYTES: usize = 1 << 20;
    /// At most this many bytes are kept in all.
    pub const MAX_TOTAL_BYTES: usize = 1 << 30;
    /// At most this many buffers are kept.
    pub const MAX_BUFFERS: usize = 8;

    static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    /// Offers the buffer of a released value to the pool.
    pub fn give(buffer: Vec<u8>) {
        if buffer.len() < MIN_BYTES || buffer.capacity() != buffer.len() {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = pool.iter().map(Vec::len).sum();
        if pool.len() >= MAX_BUFFERS || total + buffer.len() > MAX_TOTAL_BYTES {
            // Make room by dropping the oldest.
            if !pool.is_empty() {
                pool.remove(0);
            }
            let total: usize = pool.iter().map(Vec::len).sum();
            if total + buffer.len() > MAX_TOTAL_BYTES {
                return;
            }
        }
        pool.push(buffer);
    }

    /// A kept buffer of exactly `len` bytes (its old contents), if there is one.
    pub fn take(len: usize) -> Option<Vec<u8>> {
        if len < MIN_BYTES {
            return None;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let index = pool.iter().rposition(|b| b.len() == len)?;
        Some(pool.swap_remove(index))
    }

    /// Drops every kept buffer (memory is needed elsewhere).
    pub fn clear() {
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn same_sized_buffers_come_back() {
            give(vec![1u8; MIN_BYTES + 1]);
            give(vec![2u8; 10]); // too small to keep
            assert!(take(10).is_none());
            let buffer = take(MIN_BYTES + 1).expect("kept");
            assert_eq!(buffer[0], 1);
            assert!(take(MIN_BYTES + 1).is_none());
        }
    }
}

/// Frames above this size are sent as soon as they reach it, so a long batch is pipelined.
pub const FRAME_FLUSH_BYTES: usize = 1 << 20;

/// Messages waiting to be sent, one growing frame per destination.
#[derive(Default)]
pub struct Outbox {
    frames: Vec<Option<FrameWriter>>,
    full: Vec<(Rank, Frame)>,
    broadcasts: Vec<BroadcastOrder>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `message` to the frame for `to`.
    pub fn push<M: Serialize>(&mut self, to: Rank, message: &M) {
        let index = to.index();
        if self.frames.len() <= index {
            self.frames.resize_with(index + 1, || None);
        }
        let writer = self.frames[index].get_or_insert_with(FrameWriter::new);
        // Encoding our own message types into a Vec cannot fail short of running out of
        // memory; a failure here is a bug, not bad input.
        writer
            .push(message)
            .expect("encoding an mpidask message failed");
        if writer.byte_len() >= FRAME_FLUSH_BYTES {
            let frame = self.frames[index].take().expect("just used").finish();
            self.full.push((to, frame));
        }
    }

    /// Starts broadcasting `value` to every worker once the frames pushed so far are sent.
    pub fn broadcast_send(&mut self, key: Key, value: Payload) {
        self.broadcasts.push(BroadcastOrder::Send(key, value));
    }

    /// Posts this worker's receive of the broadcast of `key` from `root`.
    pub fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize) {
        self.broadcasts
            .push(BroadcastOrder::Receive(root, key, len));
    }

    /// `true` if nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
            && self.frames.iter().all(Option::is_none)
            && self.broadcasts.is_empty()
    }

    /// Hands every pending frame to `transport`.
    pub fn flush(&mut self, transport: &mut dyn Transport) {
        for (to, frame) in self.full.drain(..) {
            transport.send(to, frame);
        }
        for (index, slot) in self.frames.iter_mut().enumerate() {
            if let Some(writer) = slot.take() {
                transport.send(Rank(index as u32), writer.finish());
            }
        }
        for order in self.broadcasts.drain(..) {
            match order {
                BroadcastOrder::Send(key, value) => transport.broadcast_send(key, value),
                BroadcastOrder::Receive(root, key, len) => {
                    transport.broadcast_receive(root, key, len)
                }
            }
        }
    }
}
