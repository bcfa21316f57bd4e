//! The rank's node: what every role (scheduler, client, worker) implements as a [`Node`],
//! and the communication loop ([`drive`]) that runs it on the rank's one MPI thread,
//! fed by frames from other ranks and by local events ([`EventSender`]).
//!
//! This module knows nothing of the roles: it depends only on the transport and the
//! protocol.

mod event_loop;
mod events;

pub use event_loop::{DriveSettings, drive};
pub use events::{EventSender, event_channel};

use crate::protocol::{Key, Payload, Rank, ToScheduler};
use crate::transport::{Outbox, Transport};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Working.
    Running,
    /// Told to stop: the loop finishes the rank's sends, then reports `Quiesced`.
    Quiescing,
    /// Done: exit with this code.
    Exit(i32),
    /// Something unrecoverable happened: end the whole job with `MPI_Abort(code)`.
    Abort(i32, String),
}

/// The role-specific logic of a rank (scheduler, client or worker).
pub trait Node {
    /// What this rank receives from other ranks.
    type Message: DeserializeOwned;
    /// What other threads of this rank send it (client commands, task outcomes).
    type Event;
    /// Called once before the loop starts (e.g. to introduce the rank to the scheduler).
    fn on_start(&mut self, _out: &mut Outbox) {}
    /// A frame of `bytes` (with its attachments) arrived from `from`, before its messages
    /// are handled: for the scheduler rank's count of what it received.
    fn on_frame(&mut self, _from: Rank, _bytes: u64) {}
    /// Handles a message from another rank.
    fn on_message(&mut self, from: Rank, message: Self::Message, out: &mut Outbox, now: Instant);
    /// Handles a local event.
    fn on_event(&mut self, event: Self::Event, out: &mut Outbox, now: Instant);
    /// Called after a round of messages and events was handled (batch work goes here).
    fn on_batch_end(&mut self, _out: &mut Outbox, _now: Instant) {}
    /// Called when the process received a stop signal (SIGTERM, SIGINT, SIGUSR1). By
    /// default the rank tells the scheduler, which stops the job.
    fn on_signal(&mut self, signal: i32, out: &mut Outbox) {
        out.push(Rank::SCHEDULER, &ToScheduler::Signal { signal });
    }
    /// Called just before the loop aborts the job with `code` (`MPI_Abort`): last words,
    /// such as the scheduler rank writing the task stream.
    fn on_abort(&mut self, _code: i32) {}
    /// A broadcast value this rank posted a receive for has arrived whole.
    fn on_broadcast(&mut self, _key: Key, _value: Payload, _out: &mut Outbox) {}
    /// Called every [`TICK`] or so, for timers.
    fn on_tick(&mut self, out: &mut Outbox, now: Instant);
    /// The node's status after the last call.
    fn status(&self) -> NodeStatus;
}

/// How often [`Node::on_tick`] runs.
pub const TICK: Duration = Duration::from_millis(10);

/// How often a rank that has nothing else to say tells the other side it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Ends the whole job with `code`: runs this process's exit hooks, then aborts through
/// the transport (`MPI_Abort`, or the process's exit in local mode).
pub fn abort_job(transport: &mut dyn Transport, code: i32) -> ! {
    crate::exit::run_exit_hooks();
    transport.abort(code)
}
