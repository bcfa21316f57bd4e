//! The communication loop every rank runs on its one MPI thread: receive frames, hand the
//! decoded messages and local events to the rank's [`Node`], send what it produced, and
//! sleep in proportion to the time idle when there is nothing to do.

use super::{Node, NodeStatus, TICK, abort_job};
use crate::exit::ExitCode;
use crate::protocol::{Rank, ToScheduler, decode_frame_with};
use crate::transport::{Collectives, Outbox, Transport};
use crossbeam_channel::Receiver;
use log::{debug, error};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long an idle loop keeps polling (yielding the core between polls) after its last
/// activity before it starts sleeping: messages in a busy exchange arrive well within it.
const SPIN: Duration = Duration::from_micros(300);

/// Shortest sleep of the back-off.
const FIRST_SLEEP: Duration = Duration::from_micros(10);

/// An idle loop sleeps this share of the time it has been idle (see [`Backoff`]).
const IDLE_SHARE: u32 = 16;

/// Events handled per round, so a flood of events cannot starve incoming frames.
const MAX_EVENTS_PER_ROUND: usize = 4096;

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct DriveSettings {
    /// Longest sleep of an idle rank between two polls.
    pub poll_max: Duration,
    /// Deadline for this rank's part of the shutdown handshake.
    pub shutdown_timeout: Duration,
    /// A scheduler silent this long is presumed
    /// lost and the job aborted with exit code 5; `None` on the scheduler itself. (It sends
    /// a heartbeat every [`HEARTBEAT`](super::HEARTBEAT).)
    pub scheduler_timeout: Option<Duration>,
    /// The last stop signal this process received and no loop handled yet (0: none), set
    /// by the signal handlers start-up installs.
    pub stop_signal: Arc<AtomicUsize>,
}

/// Back-off of an idle loop: keep polling (yielding the core between polls) for [`SPIN`]
/// after the last activity, then sleep a [`IDLE_SHARE`]th of the time idle so far (at
/// least [`FIRST_SLEEP`] unless `max` is less, at most `max`). Local events (and frames of the local transport)
/// wake the thread early.
///
/// A sleep in proportion to the idle time bounds what it adds to a message's latency to
/// a share of how long the rank had nothing to do: a rank idle for 2 ms answers within
/// 0.13 ms more. A doubling back-off (tried first) reaches `max` after a few sleeps, so
/// when tasks went one at a time every rank was at `max` whenever a message reached it,
/// and each of the six hops of a task waited about `max`: 9 ms a task at the default.
/// Idle for long, a rank still wakes `1 / max` times a second.
struct Backoff {
    last_activity: Instant,
    max: Duration,
}

impl Backoff {
    fn reset(&mut self, now: Instant) {
        self.last_activity = now;
    }

    fn wait(&mut self, transport_wakes_us: bool) {
        let timeout = if transport_wakes_us {
            // Frames wake the thread too: sleep until something happens or the next tick.
            TICK
        } else {
            let idle = self.last_activity.elapsed();
            if idle < SPIN {
                std::thread::yield_now();
                return;
            }
            // A `--poll-max-us` below FIRST_SLEEP wins.
            (idle / IDLE_SHARE).max(FIRST_SLEEP).min(self.max)
        };
        std::thread::park_timeout(timeout);
    }
}

/// Ends the job with `code` after telling `node` and logging `message` (one line naming
/// this rank).
fn abort_with<N: Node>(
    node: &mut N,
    transport: &mut dyn Transport,
    code: ExitCode,
    message: String,
) -> ! {
    error!("{message}");
    node.on_abort(code.code());
    abort_job(transport, code.code())
}

/// Runs `node` until it exits; returns the exit code. Aborts the job when the node asks
/// for it, when bytes from another rank cannot be decoded, when the shutdown handshake
/// misses its deadline, and with exit code 8 when the node panics (a bug of the runtime:
/// without this, a rank whose loop died would leave the others waiting for it).
/// `collectives` is this rank's group (the workers), if it has one.
pub fn drive<N: Node>(
    node: &mut N,
    transport: &mut dyn Transport,
    collectives: Option<&mut dyn Collectives>,
    events: &Receiver<N::Event>,
    settings: DriveSettings,
) -> i32 {
    let me = transport.rank();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drive_loop(node, transport, collectives, events, settings)
    }));
    match run {
        Ok(code) => code,
        Err(panic) => {
            // The node's state is not to be trusted: abort without asking it for anything.
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(
                "{me}: internal error, the runtime's loop panicked: {text}; aborting the job \
                 (exit code {}). This is a bug in mpidask: please report it with this log",
                ExitCode::Internal.code()
            );
            abort_job(transport, ExitCode::Internal.code())
        }
    }
}

fn drive_loop<N: Node>(
    node: &mut N,
    transport: &mut dyn Transport,
    mut collectives: Option<&mut dyn Collectives>,
    events: &Receiver<N::Event>,
    settings: DriveSettings,
) -> i32 {
    crate::process::tighten_timer_slack();
    let me = transport.rank();
    let mut outbox = Outbox::new();
    let mut frames = Vec::new();
    let mut broadcasts = Vec::new();
    let mut backoff = Backoff {
        last_activity: Instant::now(),
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
        if let Err(malformed) = transport.receive(&mut frames) {
            abort_with(
                node,
                transport,
                ExitCode::Internal,
                format!("{me} received {malformed}; aborting the job"),
            );
        }
        let now = Instant::now();
        busy |= transport.relayed();
        for incoming in frames.drain(..) {
            busy = true;
            let (from, frame) = (incoming.from, incoming.frame);
            if from == Rank::SCHEDULER {
                heard_from_scheduler = now;
            }
            let attached: usize = incoming.attachments.iter().map(|a| a.len()).sum();
            node.on_frame(from, (frame.len() + attached) as u64);
            match decode_frame_with::<N::Message>(&frame, incoming.attachments) {
                Ok(messages) => {
                    for message in messages {
                        node.on_message(from, message, &mut outbox, now);
                    }
                }
                Err(e) => abort_with(
                    node,
                    transport,
                    ExitCode::Internal,
                    format!(
                        "{me} received a malformed frame of {} bytes from {from}: {e}; \
                         aborting the job",
                        frame.len()
                    ),
                ),
            }
        }
        for event in events.try_iter().take(MAX_EVENTS_PER_ROUND) {
            busy = true;
            node.on_event(event, &mut outbox, now);
        }
        let signal = settings.stop_signal.swap(0, Ordering::Relaxed);
        if signal != 0 {
            node.on_signal(i32::try_from(signal).unwrap_or(0), &mut outbox);
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
                abort_with(
                    node,
                    transport,
                    ExitCode::WorkerLost,
                    format!(
                        "the scheduler (rank 0) sent nothing for {:.0} s (--worker-timeout): \
                         presumed lost; aborting the job",
                        now.duration_since(heard_from_scheduler).as_secs_f64()
                    ),
                );
            }
        }
        let flushing = Instant::now();
        if let Err(message) = outbox.flush(transport, collectives.as_deref_mut()) {
            abort_with(node, transport, ExitCode::Internal, message);
        }
        if flushing.elapsed() > TICK {
            // An MPI task held this thread: what the scheduler sent meanwhile is still to be
            // received, so its silence is not counted against it.
            heard_from_scheduler = Instant::now();
        }
        let mut pending = transport.progress();
        if let Some(group) = collectives.as_deref_mut() {
            pending += group.progress();
            group.received(&mut broadcasts);
        }
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
                    // Only a frame: no collective can be pending once quiescing.
                    let _ = outbox.flush(transport, None);
                    quiesced = true;
                    busy = true;
                }
                if now.duration_since(since) > settings.shutdown_timeout + Duration::from_secs(2) {
                    abort_with(
                        node,
                        transport,
                        ExitCode::ShutdownTimeout,
                        format!(
                            "shutdown did not complete within {:.1} s (--shutdown-timeout); \
                             aborting",
                            settings.shutdown_timeout.as_secs_f64()
                        ),
                    );
                }
            }
            NodeStatus::Exit(code) => {
                finish_sends(transport, settings.shutdown_timeout);
                return code;
            }
            NodeStatus::Abort(code, message) => {
                error!("{message}");
                node.on_abort(code);
                abort_job(transport, code);
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
        // What still arrives is not read, so a malformed frame cannot matter any more.
        let _ = transport.receive(&mut discarded);
        discarded.clear();
        if Instant::now() > deadline {
            error!("the last messages of this rank were not received in time; aborting");
            abort_job(transport, ExitCode::ShutdownTimeout.code());
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    debug!("all sends complete");
}
