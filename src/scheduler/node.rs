//! The scheduler rank's [`Node`]: feeds the state machine decoded messages and the time,
//! routes what it leaves in its outbox, heartbeats every other rank, and collects the task
//! stream (`--trace`, `--report`).

use super::{Output, Scheduler};
use crate::node::{self, Node, NodeStatus};
use crate::protocol::{Rank, ToClient, ToScheduler, ToWorker};
use crate::trace::TraceCollector;
use crate::transport::Outbox;
use std::time::Instant;

/// Rank 0: the scheduler state machine behind the communication loop.
pub struct SchedulerNode {
    scheduler: Scheduler,
    outputs: Vec<Output>,
    abort: Option<(i32, String)>,
    /// Every other rank, told every [`node::HEARTBEAT`] that the scheduler is alive.
    others: Vec<Rank>,
    last_heartbeat: Instant,
    /// The job's task stream (`--trace`/`--report`), written when the job ends.
    trace: Option<TraceCollector>,
    /// Bytes received from all ranks (frames and attachments).
    received_bytes: u64,
}

impl SchedulerNode {
    /// The node of `scheduler`, heartbeating `others`, collecting `trace` if given.
    pub fn new(scheduler: Scheduler, others: Vec<Rank>, trace: Option<TraceCollector>) -> Self {
        SchedulerNode {
            scheduler,
            outputs: Vec::new(),
            abort: None,
            others,
            last_heartbeat: Instant::now(),
            trace,
            received_bytes: 0,
        }
    }

    /// The job ended with `code`: writes the task stream (if collected).
    pub fn finish(&mut self, code: i32) {
        if let Some(trace) = &mut self.trace {
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

    fn on_frame(&mut self, _from: Rank, bytes: u64) {
        self.received_bytes += bytes;
    }

    fn on_message(&mut self, from: Rank, message: ToScheduler, _out: &mut Outbox, now: Instant) {
        let message = match &mut self.trace {
            // A trace message is a sign of life too.
            Some(trace) => trace
                .observe(from, message)
                .unwrap_or(ToScheduler::Heartbeat),
            None => message,
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
        self.scheduler.tick(now);
        self.route(out);
        if let Some(trace) = &mut self.trace {
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
        if let Some(trace) = &mut self.trace {
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
