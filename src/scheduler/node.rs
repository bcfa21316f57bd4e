//! The scheduler rank's [`Node`]: feeds the state machine decoded messages and the time,
//! routes what it leaves in its outbox, heartbeats every other rank, and collects the task
//! stream (`--trace`, `--report`).

use super::last_words::LastWords;
use super::{Output, Scheduler};
use crate::node::{self, Node, NodeStatus};
use crate::protocol::{Rank, ToClient, ToScheduler, ToWorker};
use crate::trace::TraceCollector;
use crate::transport::Outbox;
use std::sync::Arc;
use std::time::Instant;

/// Rank 0: the scheduler state machine behind the communication loop.
pub struct SchedulerNode {
    scheduler: Scheduler,
    outputs: Vec<Output>,
    abort: Option<(i32, String)>,
    /// Every other rank, told every [`node::HEARTBEAT`] that the scheduler is alive.
    others: Vec<Rank>,
    last_heartbeat: Instant,
    /// The job's task stream (`--trace`/`--report`), written when the job ends, and what
    /// the watcher of stop signals needs to write it if this loop cannot.
    words: Arc<LastWords>,
    /// `true` if the task stream is collected (else its lock is never taken per message).
    tracing: bool,
    /// Bytes received from all ranks (frames and attachments).
    received_bytes: u64,
    /// Fault injection for the tests (`internals`): panic at the first submission when
    /// `MPIDASK_INTERNALS_PANIC_ON_SUBMIT` is set, as a bug of the scheduler would.
    #[cfg(feature = "internals")]
    panic_on_submit: bool,
}

impl SchedulerNode {
    /// The node of `scheduler`, heartbeating `others`, collecting `trace` if given.
    pub fn new(scheduler: Scheduler, others: Vec<Rank>, trace: Option<TraceCollector>) -> Self {
        let ranks = others.iter().map(|r| r.0 as usize + 1).max().unwrap_or(1);
        let tracing = trace.is_some();
        SchedulerNode {
            scheduler,
            outputs: Vec::new(),
            abort: None,
            others,
            last_heartbeat: Instant::now(),
            words: Arc::new(LastWords::new(ranks, trace)),
            tracing,
            received_bytes: 0,
            #[cfg(feature = "internals")]
            panic_on_submit: std::env::var_os("MPIDASK_INTERNALS_PANIC_ON_SUBMIT").is_some(),
        }
    }

    /// What a watcher of stop signals shares with this node ([`super::last_words::watch`]).
    pub fn last_words(&self) -> Arc<LastWords> {
        self.words.clone()
    }

    /// The job ended with `code`: writes the task stream (if collected).
    pub fn finish(&mut self, code: i32) {
        self.words.hush();
        if let Some(trace) = self.words.trace().as_mut() {
            trace.finish(code);
        }
    }

    fn route(&mut self, out: &mut Outbox) {
        self.scheduler.drain_outbox(&mut self.outputs);
        for output in self.outputs.drain(..) {
            match output {
                Output::Worker(rank, message) => out.push(rank, &message),
                Output::Client(message) => out.push(Rank::CLIENT, &message),
                Output::Info(mut info) => {
                    info.cpu_seconds = crate::process::cpu_seconds();
                    info.peak_rss_bytes = crate::process::peak_rss_bytes();
                    info.received_bytes = self.received_bytes;
                    out.push(Rank::CLIENT, &ToClient::Info(info));
                }
                Output::Abort { code, message } => {
                    self.abort.get_or_insert((code, message));
                }
            }
        }
    }
}

impl Node for SchedulerNode {
    type Message = ToScheduler;
    type Event = ();

    fn on_frame(&mut self, from: Rank, bytes: u64) {
        self.received_bytes += bytes;
        self.words.heard(from, Instant::now());
    }

    fn on_message(&mut self, from: Rank, message: ToScheduler, _out: &mut Outbox, now: Instant) {
        if let ToScheduler::WorkerHello(hello) = &message {
            self.words.set_host(from, &hello.host);
        }
        #[cfg(feature = "internals")]
        if self.panic_on_submit && matches!(message, ToScheduler::Submit(_)) {
            panic!("injected by MPIDASK_INTERNALS_PANIC_ON_SUBMIT");
        }
        let message = match self.tracing {
            // A trace message is a sign of life too.
            true => match self.words.trace().as_mut() {
                Some(trace) => trace
                    .observe(from, message)
                    .unwrap_or(ToScheduler::Heartbeat),
                None => message,
            },
            false => message,
        };
        self.scheduler.handle(from, message, now);
    }

    fn on_abort(&mut self, code: i32) {
        self.finish(code);
    }

    fn on_batch_end(&mut self, out: &mut Outbox, _now: Instant) {
        self.route(out);
    }

    fn on_event(&mut self, _event: (), _out: &mut Outbox, _now: Instant) {}

    fn on_tick(&mut self, out: &mut Outbox, now: Instant) {
        self.words.loop_ran(now);
        self.scheduler.tick(now);
        self.route(out);
        if let Some(trace) = self.words.trace().as_mut() {
            trace.tick(now);
        }
        if now.duration_since(self.last_heartbeat) >= node::HEARTBEAT {
            self.last_heartbeat = now;
            for &rank in &self.others {
                if rank == Rank::CLIENT {
                    out.push(rank, &ToClient::Heartbeat);
                } else {
                    out.push(rank, &ToWorker::Heartbeat);
                }
            }
        }
    }

    fn on_signal(&mut self, signal: i32, _out: &mut Outbox) {
        self.words.hush();
        if let Some(trace) = self.words.trace().as_mut() {
            trace.snapshot();
        }
        self.scheduler.handle(
            Rank::SCHEDULER,
            ToScheduler::Signal { signal },
            Instant::now(),
        );
    }

    fn status(&self) -> NodeStatus {
        if let Some((code, message)) = &self.abort {
            return NodeStatus::Abort(*code, message.clone());
        }
        match self.scheduler.exit_code() {
            Some(code) => NodeStatus::Exit(code),
            None => NodeStatus::Running,
        }
    }
}
