//! The scheduler: a pure state machine that decides which worker runs which task.
//!
//! The state machine ([`Scheduler`]) never calls MPI, never spawns threads and never reads
//! the clock: its [`SchedulerNode`] feeds it decoded messages and the current time, and
//! sends what it leaves in its outbox; [`last_words`] writes the trace and the report when a
//! stop signal finds that loop held inside MPI. See `README.md` in this directory for the
//! task states and the shutdown protocol.

mod coordination;
pub mod last_words;
mod node;
pub mod policy;
mod reactor;
pub mod state;
pub mod task_stream;
#[cfg(test)]
mod tests;

pub use node::SchedulerNode;
pub use reactor::{Output, Scheduler, SchedulerConfig};
