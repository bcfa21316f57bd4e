//! Moving frames between ranks: point-to-point messages in [`Transport`], collectives over
//! a group of ranks in [`Collectives`], their MPI and local (threads) implementations, and
//! the per-destination [`Outbox`] that batches small messages.
//!
//! Only [`mpi`] calls MPI; nothing outside this module names an MPI type.
//!
//! Ranks, counts and lengths change type at the MPI boundary (`int` ranks and counts,
//! `usize` lengths, `u32` ranks on the wire): every such conversion here is checked, which
//! the cast lints below enforce.

#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_lossless
)]

mod hosted;
pub mod local;
pub mod mpi;
mod outbox;

pub use hosted::Placement;
pub use mpi::MpiComm;
pub use outbox::{CommunicatorTask, Outbox};

use crate::protocol::{Frame, Key, Payload, Rank};
use std::fmt;

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

/// Bytes from another rank that cannot be part of any frame (a part or an attachment of the
/// wrong size, an impossible length): the job cannot go on, since what follows from that
/// rank cannot be told apart any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The rank that sent the bytes.
    pub from: Rank,
    /// What was wrong with them.
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a malformed message from {}: {}", self.from, self.reason)
    }
}

/// Sends and receives whole frames between the ranks of one job. Nothing here blocks: the
/// rank's single communication thread polls it.
pub trait Transport {
    /// This rank.
    fn rank(&self) -> Rank;
    /// Starts sending `frame` (and its attachments, straight from their buffers) to `to`;
    /// the transport holds the buffers until the sends complete.
    fn send(&mut self, to: Rank, frame: Frame);
    /// Appends every frame that has fully arrived to `out`; an error if a sender's bytes
    /// cannot form a frame.
    fn receive(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed>;
    /// Advances sends in flight; returns how many are still pending.
    fn progress(&mut self) -> usize;
    /// Declares the calling thread as the one that receives (call it from the thread that
    /// will poll), so a transport that can wake it does.
    fn attach_current_thread(&mut self) {}
    /// `true` if an arriving frame wakes the attached thread (threads); `false` if the
    /// receiver must poll (MPI).
    fn wakes_receiver(&self) -> bool;
    /// `true` if frames were relayed to or from a worker this rank's process hosts since the
    /// last call (the loop stays responsive for it as for its own frames).
    fn relayed(&mut self) -> bool {
        false
    }
    /// Ends the whole job now with `code` (exit hooks are the caller's business; see
    /// [`crate::exit::run_exit_hooks`]).
    fn abort(&mut self, code: i32) -> !;
}

/// Collective operations over the group of ranks given when the object was made (the
/// workers): every member takes part in every operation, in the same order.
pub trait Collectives {
    /// Starts broadcasting `value` (known as `key`) from this member to every other member.
    fn broadcast_send(&mut self, key: Key, value: Payload);
    /// Posts this member's part of the broadcast of `key` (`len` bytes) from member `root`;
    /// an error if `root` is not a member.
    fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize) -> Result<(), String>;
    /// Advances operations in flight; returns how many are still pending.
    fn progress(&mut self) -> usize;
    /// Appends the broadcasts this member has received whole since the last call.
    fn received(&mut self, out: &mut Vec<(Key, Payload)>);
    /// `true` if [`run_with_communicator`](Self::run_with_communicator) can lend
    /// communicators (the members are MPI processes).
    fn lends_communicators(&self) -> bool;
    /// Runs `task` on this thread with a communicator of exactly `members` (world ranks, in
    /// this order, this member among them), which only they take part in making; returns
    /// when `task` does. An error if a rank of `members` is not a member of this group, or
    /// if the group has no communicators to lend (threads of one process).
    fn run_with_communicator(
        &mut self,
        members: &[Rank],
        task: Box<dyn FnOnce(&MpiComm) + Send + '_>,
    ) -> Result<(), String>;
}
