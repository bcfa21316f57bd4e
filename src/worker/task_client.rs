//! The client of the tasks a worker runs ([`crate::task_client`]), as the worker's
//! communication thread hosts it: the client module makes it ([`TaskClientNode`]), the
//! worker passes it the messages addressed to it and serves the requests it makes of this
//! very worker without sending them anywhere.

use super::WorkerNode;
use crate::protocol::{Rank, ToClient, ToWorker};
use crate::transport::Outbox;
use std::time::Instant;

/// A task client's communication node, run on its worker's communication thread.
pub trait TaskClientNode: Send {
    /// A message for it: from the scheduler (its keys' outcomes) or a worker (values).
    fn on_message(&mut self, from: Rank, message: ToClient, out: &mut Outbox);
    /// Sends what its tasks asked for since the last call.
    fn on_commands(&mut self, out: &mut Outbox, now: Instant);
    /// End of a round: sends the fetches of the round and wakes the waiting tasks.
    fn on_batch_end(&mut self, out: &mut Outbox, now: Instant);
    /// Once per tick: sends the releases held back.
    fn on_tick(&mut self, out: &mut Outbox, now: Instant);
    /// The messages it addressed to this worker since the last call.
    fn take_local(&mut self) -> Vec<ToWorker>;
    /// The job stops: waiting tasks return "shutting down".
    fn stop(&mut self);
}

impl WorkerNode {
    /// Hosts the client of the tasks this worker runs.
    pub fn with_task_client(mut self, node: Box<dyn TaskClientNode>) -> Self {
        self.task_client = Some(node);
        self
    }

    /// A message for the task client; a protocol error if this worker hosts none.
    pub(super) fn on_for_client(&mut self, from: Rank, message: ToClient, out: &mut Outbox) {
        match &mut self.task_client {
            Some(client) => client.on_message(from, message, out),
            None => self.protocol_error(from, "a message for a task client it does not have"),
        }
    }

    /// Lets the task client send, and serves its requests of this worker (values it holds,
    /// values scattered here) until none is left.
    pub(super) fn pump_task_client(&mut self, out: &mut Outbox, now: Instant) {
        let Some(mut client) = self.task_client.take() else {
            return;
        };
        loop {
            client.on_batch_end(out, now);
            let local = client.take_local();
            if local.is_empty() && self.own_client_mail.is_empty() {
                break;
            }
            for message in local {
                match message {
                    ToWorker::GetClientData(keys) => self.on_get_data(self.rank, keys, true, out),
                    ToWorker::ScatterData { key, bytes } => self.on_scatter_data(key, bytes, out),
                    other => log::debug!(
                        "a task client's message to its own worker is not served: {other:?}"
                    ),
                }
            }
            for message in std::mem::take(&mut self.own_client_mail) {
                client.on_message(self.rank, message, out);
            }
        }
        self.task_client = Some(client);
    }
}
