//! The [`Outbox`]: what a rank's node wants sent, one growing frame per destination, plus
//! the collectives and buffer hand-backs that go to the transport in the same order.

use super::{Collectives, MpiComm, Transport};
use crate::protocol::{Frame, FrameWriter, Key, Payload, Rank};
use serde::Serialize;

/// Frames above this size are sent as soon as they reach it, so a long batch is pipelined.
pub const FRAME_FLUSH_BYTES: usize = 1 << 20;

/// Something for the transport other than a frame, carried out in order at the flush.
enum Order {
    BroadcastSend(Key, Payload),
    BroadcastReceive(Rank, Key, usize),
    RunWithCommunicator(Vec<Rank>, CommunicatorTask),
}

/// Work for the communication thread that needs a communicator of some of the group.
pub type CommunicatorTask = Box<dyn FnOnce(&MpiComm) + Send>;

/// Messages waiting to be sent, one growing frame per destination.
#[derive(Default)]
pub struct Outbox {
    frames: Vec<Option<FrameWriter>>,
    full: Vec<(Rank, Frame)>,
    orders: Vec<Order>,
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

    /// Sends `frame` as it is, after the frames pushed so far to `to`.
    #[cfg(feature = "internals")]
    pub fn push_frame(&mut self, to: Rank, frame: Frame) {
        if let Some(writer) = self.frames.get_mut(to.index()).and_then(Option::take) {
            self.full.push((to, writer.finish()));
        }
        self.full.push((to, frame));
    }

    /// Starts broadcasting `value` to every member of the group once the frames pushed so
    /// far are sent.
    pub fn broadcast_send(&mut self, key: Key, value: Payload) {
        self.orders.push(Order::BroadcastSend(key, value));
    }

    /// Posts this member's receive of the broadcast of `key` from `root`.
    pub fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize) {
        self.orders.push(Order::BroadcastReceive(root, key, len));
    }

    /// Runs `task` on the communication thread, with a communicator of exactly `members`,
    /// once the frames pushed so far are sent (see [`Collectives::run_with_communicator`]).
    pub fn run_with_communicator(&mut self, members: Vec<Rank>, task: CommunicatorTask) {
        self.orders.push(Order::RunWithCommunicator(members, task));
    }

    #[cfg(test)]
    /// `true` if nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.frames.iter().all(Option::is_none) && self.orders.is_empty()
    }

    /// Hands every pending frame to `transport`, then carries out the other orders; a
    /// collective on a rank outside every group, or with a root outside the group, is an
    /// error (the node asked for something impossible).
    pub fn flush(
        &mut self,
        transport: &mut dyn Transport,
        mut collectives: Option<&mut (dyn Collectives + '_)>,
    ) -> Result<(), String> {
        for (to, frame) in self.full.drain(..) {
            transport.send(to, frame);
        }
        for (index, slot) in self.frames.iter_mut().enumerate() {
            if let Some(writer) = slot.take() {
                let to = Rank(u32::try_from(index).expect("ranks fit in u32"));
                transport.send(to, writer.finish());
            }
        }
        let mut result = Ok(());
        for order in self.orders.drain(..) {
            match (order, collectives.as_deref_mut()) {
                (Order::BroadcastSend(key, value), Some(group)) => group.broadcast_send(key, value),
                (Order::BroadcastReceive(root, key, len), Some(group)) => {
                    if let Err(e) = group.broadcast_receive(root, key, len) {
                        result = Err(e);
                    }
                }
                (Order::RunWithCommunicator(members, task), Some(group)) => {
                    if let Err(e) = group.run_with_communicator(&members, task) {
                        result = Err(e);
                    }
                }
                (Order::BroadcastSend(..) | Order::BroadcastReceive(..), None) => {
                    result = Err(format!(
                        "{} takes part in no collective, yet was asked to broadcast",
                        transport.rank()
                    ));
                }
                (Order::RunWithCommunicator(..), None) => {
                    result = Err(format!(
                        "{} takes part in no collective, yet was asked to run an MPI task",
                        transport.rank()
                    ));
                }
            }
        }
        result
    }
}
