//! The client rank's communication node: forwards the user's commands and records the
//! answers of the scheduler and the workers in the shared table.

use super::flow::Flow;
use super::{Shared, State, Status};
use crate::error::TaskError;
use crate::exit::ExitCode;
use crate::node::{Node, NodeStatus};
use crate::protocol::{Key, Rank, ToClient, ToScheduler, ToWorker};
use crate::trace::TraceBuffer;
use crate::transport::Outbox;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Releases sent to the scheduler in one message at most.
const RELEASE_BATCH: usize = 4096;

/// What the user's threads ask the communication thread to do.
pub enum Command {
    /// Send to the scheduler.
    Scheduler(ToScheduler),
    /// Send to a worker.
    Worker(Rank, ToWorker),
    /// Send to a worker a task's large argument, ahead of the task: paced ([`Flow`]).
    Ahead(Rank, ToWorker),
    /// The last future of a key was dropped.
    Release(Key),
    /// The user's program ended with this exit code.
    Done(i32),
    /// Send these bytes as they are (fault-injection tests).
    #[cfg(feature = "internals")]
    Raw(Rank, crate::protocol::Frame),
}

/// The client rank's communication-thread state.
pub struct ClientNode {
    shared: Arc<Shared>,
    releases: Vec<Key>,
    /// Values to request from each worker at the end of the round.
    fetches: FxHashMap<Rank, Vec<Key>>,
    /// The shared table changed this round.
    changed: bool,
    done_at: Option<Instant>,
    shutdown_timeout: Duration,
    status: NodeStatus,
    /// The transfers this rank recorded and has not sent yet (`--trace`/`--report`).
    trace: Option<TraceBuffer>,
    last_trace_sent: Instant,
    /// The worker hosting this node, for a task client.
    hosted: Option<Rank>,
    /// A task client's messages to its own worker, which serves them without a send.
    pub(super) local: Vec<ToWorker>,
    /// Tasks to wake at the end of the round: a message about their key came.
    to_unpark: Vec<std::thread::Thread>,
    /// The program's large scatters held back until their workers are ready for them.
    flow: Flow,
}

impl ClientNode {
    /// A node serving the client table `shared`.
    pub fn new(shared: Arc<Shared>, shutdown_timeout: Duration) -> Self {
        ClientNode {
            shared,
            releases: Vec::new(),
            fetches: FxHashMap::default(),
            changed: false,
            done_at: None,
            shutdown_timeout,
            status: NodeStatus::Running,
            trace: None,
            last_trace_sent: Instant::now(),
            hosted: None,
            local: Vec::new(),
            to_unpark: Vec::new(),
            flow: Flow::default(),
        }
    }

    /// The node of the task client of worker `rank`, on that worker's communication thread.
    pub(super) fn hosted(shared: Arc<Shared>, rank: Rank) -> Self {
        ClientNode {
            hosted: Some(rank),
            ..Self::new(shared, Duration::MAX)
        }
    }

    /// Sends `message` to `worker`. The program's large arguments sent ahead of their
    /// tasks (`ahead`) go when the worker is ready for them ([`Flow`]). A task client asks
    /// for values for itself (not for its worker's tasks), and its messages to its own
    /// worker stay local.
    fn send_to_worker(&mut self, worker: Rank, message: ToWorker, ahead: bool, out: &mut Outbox) {
        let Some(rank) = self.hosted else {
            let message = if ahead {
                self.flow.offer(worker, message)
            } else {
                Some(message)
            };
            if let Some(message) = message {
                self.trace_outgoing(worker, &message);
                out.push(worker, &message);
            }
            return;
        };
        self.trace_outgoing(worker, &message);
        let message = match message {
            ToWorker::GetData(keys) => ToWorker::GetClientData(keys),
            other => other,
        };
        if worker == rank {
            self.local.push(message);
        } else {
            out.push(worker, &message);
        }
    }

    /// The job stops: the waits of the program (or of the tasks) end.
    pub(super) fn stop(&mut self) {
        let sleepers: Vec<_> = {
            let mut state = self.shared.lock();
            state.stopped = true;
            state
                .sleepers
                .drain()
                .flat_map(|(_, s)| s)
                .map(|s| s.thread)
                .collect()
        };
        self.status = NodeStatus::Quiescing;
        self.shared.notify();
        sleepers.into_iter().for_each(|t| t.unpark());
    }

    /// Records transfers and sends them to the scheduler rank (`--trace`/`--report`).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(TraceBuffer::default());
        self
    }

    fn send_trace(&mut self, out: &mut Outbox) {
        if let Some(message) = self.trace.as_mut().and_then(TraceBuffer::take_message) {
            out.push(Rank::SCHEDULER, &message);
        }
    }

    /// Records what a message to a worker moves.
    fn trace_outgoing(&mut self, worker: Rank, message: &ToWorker) {
        let Some(trace) = &mut self.trace else {
            return;
        };
        match message {
            ToWorker::GetData(keys) => keys.iter().for_each(|key| trace.requested(*key)),
            ToWorker::ScatterData { key, bytes } | ToWorker::BroadcastScatter { key, bytes } => {
                trace.sent(*key, worker, bytes.len() as u64)
            }
            _ => {}
        }
    }

    fn flush_releases(&mut self, out: &mut Outbox) {
        if !self.releases.is_empty() {
            let keys = std::mem::take(&mut self.releases);
            out.push(Rank::SCHEDULER, &ToScheduler::ReleaseKeys(keys));
        }
    }
}

/// Moves to `to_unpark` (woken at the end of the round) the tasks asleep until a message
/// about `key`; with `value_coming` (its value is on its way) not those that wait for the
/// value.
fn wake_sleepers(
    state: &mut State,
    to_unpark: &mut Vec<std::thread::Thread>,
    key: Key,
    value_coming: bool,
) {
    if !value_coming {
        if let Some(sleepers) = state.sleepers.remove(&key) {
            to_unpark.extend(sleepers.into_iter().map(|s| s.thread));
        }
        return;
    }
    let Some(sleepers) = state.sleepers.get_mut(&key) else {
        return;
    };
    sleepers.retain(|s| {
        if !s.for_value {
            to_unpark.push(s.thread.clone());
        }
        s.for_value
    });
    if sleepers.is_empty() {
        state.sleepers.remove(&key);
    }
}

impl Node for ClientNode {
    type Message = ToClient;
    type Event = Command;

    fn on_message(&mut self, from: Rank, message: ToClient, out: &mut Outbox, _now: Instant) {
        if let ToClient::Received(keys) = &message {
            let go = self.flow.received(from, keys);
            for message in go {
                if self.status == NodeStatus::Running {
                    self.trace_outgoing(from, &message);
                    out.push(from, &message);
                }
            }
            return;
        }
        let mut state = self.shared.lock();
        // The key the message is about, whose sleepers wake; whether its value is coming.
        let mut about = None;
        let mut value_coming = false;
        match message {
            ToClient::KeyDone { key, worker } => {
                about = Some(key);
                state.set_status(key, Status::Done(worker));
                if let Some(entry) = state.keys.get_mut(&key)
                    && entry.wanted
                    && entry.data.is_none()
                {
                    if !entry.requested {
                        entry.requested = true;
                        self.fetches.entry(worker).or_default().push(key);
                    }
                    value_coming = true;
                }
            }
            ToClient::KeyErred {
                key,
                cause,
                message,
            } => {
                about = Some(key);
                state.set_status(
                    key,
                    Status::Failed(TaskError {
                        key: cause,
                        message,
                    }),
                );
            }
            ToClient::KeyCancelled { key, cause } => {
                about = Some(key);
                state.set_status(key, Status::Cancelled(cause));
            }
            ToClient::Data { key, bytes } => {
                about = Some(key);
                if let Some(trace) = &mut self.trace {
                    trace.arrived(key, from, bytes.len() as u64);
                }
                if let Some(entry) = state.keys.get_mut(&key) {
                    entry.data = Some(bytes);
                }
            }
            ToClient::DataMissing(key) => {
                about = Some(key);
                let name = state.key_name(key);
                state.set_status(
                    key,
                    Status::Failed(TaskError {
                        key: name,
                        message: format!("its value was not found on {from}"),
                    }),
                );
            }
            ToClient::Info(info) => state.info = Some(info),
            ToClient::Progress(progress) => {
                state.progress = Some(progress);
                state.progress_generation += 1;
            }
            ToClient::Stop => {
                state.stopped = true;
                self.to_unpark.extend(
                    state
                        .sleepers
                        .drain()
                        .flat_map(|(_, s)| s)
                        .map(|s| s.thread),
                );
                self.status = NodeStatus::Quiescing;
                // The last entries go before `Quiesced`, which the loop sends next.
                drop(state);
                self.send_trace(out);
                self.changed = true;
                return;
            }
            ToClient::Exit { code } => self.status = NodeStatus::Exit(code),
            ToClient::Coordinated { id, reply } => {
                state.coordinated.insert(id, reply);
            }
            ToClient::Heartbeat | ToClient::Received(_) => {}
        }
        if let Some(key) = about {
            wake_sleepers(&mut state, &mut self.to_unpark, key, value_coming);
        }
        self.releases.append(&mut state.finished_releases);
        drop(state);
        self.changed = true;
    }

    fn on_event(&mut self, command: Command, out: &mut Outbox, now: Instant) {
        if self.status != NodeStatus::Running {
            // The job is stopping (a signal): the program's requests are not sent, since
            // their receivers may have exited; its waits end with "shutting down".
            return;
        }
        match command {
            Command::Release(key) => {
                self.releases.push(key);
                if self.releases.len() >= RELEASE_BATCH {
                    self.flush_releases(out);
                }
            }
            Command::Scheduler(message) => {
                self.flush_releases(out);
                out.push(Rank::SCHEDULER, &message);
            }
            Command::Worker(rank, message) => self.send_to_worker(rank, message, false, out),
            Command::Ahead(rank, message) => self.send_to_worker(rank, message, true, out),
            #[cfg(feature = "internals")]
            Command::Raw(to, frame) => out.push_frame(to, frame),
            Command::Done(code) => {
                self.flush_releases(out);
                out.push(Rank::SCHEDULER, &ToScheduler::ClientDone { code });
                self.done_at = Some(now);
            }
        }
    }

    fn on_batch_end(&mut self, out: &mut Outbox, _now: Instant) {
        // Waiters are woken once per round, not once per message.
        if std::mem::take(&mut self.changed) {
            self.shared.notify();
        }
        for thread in self.to_unpark.drain(..) {
            thread.unpark();
        }
        if self.status != NodeStatus::Running {
            self.fetches.clear();
            return;
        }
        for (worker, keys) in std::mem::take(&mut self.fetches) {
            self.send_to_worker(worker, ToWorker::GetData(keys), false, out);
        }
    }

    fn on_tick(&mut self, out: &mut Outbox, now: Instant) {
        if self.status == NodeStatus::Running {
            self.flush_releases(out);
            if now.duration_since(self.last_trace_sent) >= crate::node::HEARTBEAT {
                self.last_trace_sent = now;
                self.send_trace(out);
            }
        }
        if let Some(done_at) = self.done_at
            && self.status == NodeStatus::Running
            && now.duration_since(done_at) > self.shutdown_timeout
        {
            self.status = NodeStatus::Abort(
                ExitCode::ShutdownTimeout.code(),
                format!(
                    "the scheduler did not start the shutdown within {:.1} s of the end of \
                     the client program (--shutdown-timeout); aborting",
                    self.shutdown_timeout.as_secs_f64()
                ),
            );
        }
    }

    fn status(&self) -> NodeStatus {
        self.status.clone()
    }
}
