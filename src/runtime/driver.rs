//! The communication loop every rank runs on its one MPI thread: receive frames, hand the
//! decoded messages and local events to the rank's [`Node`], send what it produced, and
//! sleep with an exponential back-off when there is nothing to do.

use crate::exit::ExitCode;
use crate::protocol::{Rank, ToScheduler, decode_frame_with};
use crate::transport::{Outbox, Transport};
use crossbeam_channel::{Receiver, Sender};
use log::{debug, error};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// Working.
    Running,
    /// Told to stop: the driver finishes the rank's sends, then reports `Quiesced`.
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
    fn on_broadcast(
        &mut self,
        _key: crate::protocol::Key,
        _value: crate::protocol::Payload,
        _out: &mut Outbox,
    ) {
    }
    /// Called every [`TICK`] or so, for timers.
    fn on_tick(&mut self, out: &mut Outbox, now: Instant);
    /// The node's status after the last call.
    fn status(&self) -> NodeStatus;
}

/// The last stop signal received and not yet handled (0: none). Set by the signal handler
/// `run` installs; read by the communication loop.
pub static PENDING_SIGNAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How often [`Node::on_tick`] runs.
pub const TICK: Duration = Duration::from_millis(10);

/// How long an idle loop keeps polling (yielding the core between polls) after its last
/// activity before it starts sleeping: messages in a busy exchange arrive well within it.
const SPIN: Duration = Duration::from_micros(300);

/// First sleep of the back-off.
const FIRST_SLEEP: Duration = Duration::from_micros(10);

/// Events handled per round, so a flood of events cannot starve incoming frames.
const MAX_EVENTS_PER_ROUND: usize = 4096;

/// Settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct DriveSettings {
    /// Longest sleep of an idle rank between two polls.
    pub poll_max: Duration,
    /// Deadline for this rank's part of the shutdown handshake.
    pub shutdown_timeout: Duration,
    /// A scheduler silent this long (it sends a heartbeat every [`HEARTBEAT`]) is presumed
    /// lost and the job aborted with exit code 5; `None` on the scheduler itself.
    pub scheduler_timeout: Option<Duration>,
}

/// How often a rank that has nothing else to say tells the other side it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The sending end of a rank's local events (client commands, task outcomes): sending
/// also wakes the rank's communication thread if it sleeps.
pub struct EventSender<E> {
    channel: Sender<E>,
    comm_thread: std::thread::Thread,
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        EventSender {
            channel: self.channel.clone(),
            comm_thread: self.comm_thread.clone(),
        }
    }
}

impl<E> EventSender<E> {
    /// Sends `event` and wakes the communication thread. An event sent after that thread
    /// ended is dropped (the rank is exiting).
    pub fn send(&self, event: E) {
        let _ = self.channel.send(event);
        self.comm_thread.unpark();
    }
}

/// A channel of local events for the calling thread, which must be the one that will run
/// [`drive`] with the receiver.
pub fn event_channel<E>() -> (EventSender<E>, Receiver<E>) {
    let (channel, receiver) = crossbeam_channel::unbounded();
    let sender = EventSender {
        channel,
        comm_thread: std::thread::current(),
    };
    (sender, receiver)
}

/// Back-off of an idle loop: keep polling (yielding the core between polls) for [`SPIN`]
/// after the last activity, then sleep 10 us, 20 us, 40 us, ... up to `max`. Local events
/// (and frames of the local transport) wake the thread early.
struct Backoff {
    last_activity: Instant,
    sleeps: u32,
    max: Duration,
}

impl Backoff {
    fn reset(&mut self, now: Instant) {
        self.last_activity = now;
        self.sleeps = 0;
    }

    fn wait(&mut self, transport_wakes_us: bool) {
        let timeout = if transport_wakes_us {
            // Frames wake the thread too: sleep until something happens or the next tick.
            TICK
        } else if self.last_activity.elapsed() < SPIN {
            std::thread::yield_now();
            return;
        } else {
            self.sleeps = self.sleeps.saturating_add(1).min(20);
            FIRST_SLEEP
                .saturating_mul(1 << (self.sleeps - 1))
                .min(self.max)
        };
        std::thread::park_timeout(timeout);
    }
}

/// Makes this thread's sleeps precise (1 us timer slack instead of Linux's 50 us default),
/// so short back-off sleeps do not add latency.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// Runs `node` until it exits; returns the exit code. Aborts the job through the transport
/// when the node asks for it, when a frame cannot be decoded, or when the shutdown
/// handshake misses its deadline.
pub fn drive<N: Node>(
    node: &mut N,
    transport: &mut dyn Transport,
    events: &Receiver<N::Event>,
    settings: DriveSettings,
) -> i32 {
    tighten_timer_slack();
    let mut outbox = Outbox::new();
    let mut frames = Vec::new();
    let mut broadcasts = Vec::new();
    let mut backoff = Backoff {
        last_activity: Instant::now(),
        sleeps: 0,
        max: settings.poll_max,
    };
    let mut last_tick = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    let mut quiesced = false;
    let mut heard_from_scheduler = Instant::now();
    transport.attach_current_thread();
    node.on_start(&mut outbox);
    loop {
        let mut busy = false;
        transport.receive(&mut frames);
        let now = Instant::now();
        for incoming in frames.drain(..) {
            busy = true;
            let (from, frame) = (incoming.from, incoming.frame);
            if from == Rank::SCHEDULER {
                heard_from_scheduler = now;
            }
            match decode_frame_with::<N::Message>(&frame, incoming.attachments) {
                Ok(messages) => {
                    for message in messages {
                        node.on_message(from, message, &mut outbox, now);
                    }
                }
                Err(e) => {
                    error!(
                        "malformed frame of {} bytes from {from}: {e}; aborting the job",
                        frame.len()
                    );
                    node.on_abort(ExitCode::Internal.code());
                    transport.abort(ExitCode::Internal.code());
                }
            }
        }
        for event in events.try_iter().take(MAX_EVENTS_PER_ROUND) {
            busy = true;
            node.on_event(event, &mut outbox, now);
        }
        let signal = PENDING_SIGNAL.swap(0, std::sync::atomic::Ordering::Relaxed);
        if signal != 0 {
            node.on_signal(signal as i32, &mut outbox);
            busy = true;
        }
        if busy {
            node.on_batch_end(&mut outbox, now);
        }
        if now.duration_since(last_tick) >= TICK {
            node.on_tick(&mut outbox, now);
            last_tick = now;
            if let Some(timeout) = settings.scheduler_timeout
                && now.duration_since(heard_from_scheduler) > timeout
            {
                error!(
                    "the scheduler (rank 0) sent nothing for {:.0} s (--worker-timeout): \
                     presumed lost; aborting the job",
                    now.duration_since(heard_from_scheduler).as_secs_f64()
                );
                node.on_abort(ExitCode::WorkerLost.code());
                transport.abort(ExitCode::WorkerLost.code());
            }
        }
        outbox.flush(transport);
        let pending = transport.progress();
        transport.received_broadcasts(&mut broadcasts);
        for (key, value) in broadcasts.drain(..) {
            node.on_broadcast(key, value, &mut outbox);
            busy = true;
        }
        match node.status() {
            NodeStatus::Running => {}
            NodeStatus::Quiescing => {
                let since = *stopping_since.get_or_insert(now);
                if !quiesced && pending == 0 {
                    outbox.push(Rank::SCHEDULER, &ToScheduler::Quiesced);
                    outbox.flush(transport);
                    quiesced = true;
                    busy = true;
                }
                if now.duration_since(since) > settings.shutdown_timeout + Duration::from_secs(2) {
                    error!(
                        "shutdown did not complete within {:.1} s (--shutdown-timeout); aborting",
                        settings.shutdown_timeout.as_secs_f64()
                    );
                    node.on_abort(ExitCode::ShutdownTimeout.code());
                    transport.abort(ExitCode::ShutdownTimeout.code());
                }
            }
            NodeStatus::Exit(code) => {
                finish_sends(transport, settings.shutdown_timeout);
                return code;
            }
            NodeStatus::Abort(code, message) => {
                error!("{message}");
                node.on_abort(code);
                transport.abort(code);
            }
        }
        if busy {
            backoff.reset(now);
        } else if pending > 0 {
            // Sends in flight (a large value, in fragments) move only while MPI is called:
            // keep calling it, yielding the core in between, until they complete.
            std::thread::yield_now();
        } else if events.is_empty() {
            backoff.wait(transport.wakes_receiver());
        }
    }
}

/// Completes the rank's last sends (the scheduler's `Exit` messages), discarding anything
/// that still arrives; aborts if they do not complete in time.
fn finish_sends(transport: &mut dyn Transport, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut discarded = Vec::new();
    while transport.progress() > 0 {
        transport.receive(&mut discarded);
        discarded.clear();
        if Instant::now() > deadline {
            error!("the last messages of this rank were not received in time; aborting");
            transport.abort(ExitCode::ShutdownTimeout.code());
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    debug!("all sends complete");
}
