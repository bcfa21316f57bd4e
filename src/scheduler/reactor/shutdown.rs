//! The end of a job: the client's end or a signal starts the shutdown handshake (stop,
//! quiesce, exit), and the stall watchdog that names what pending tasks wait for.

use super::{Lifecycle, Output, Scheduler, signal_name};
use crate::exit::ExitCode;
use crate::protocol::{Key, Rank, ToClient, ToWorker};
use crate::scheduler::state::TaskState;
use log::{error, info, warn};
use rustc_hash::FxHashSet;
use std::time::Instant;

impl Scheduler {
    pub(super) fn on_client_done(&mut self, code: i32, now: Instant) {
        if !self.is_running() {
            return;
        }
        let loaded = if self.restored > 0 {
            format!(
                " ({} of them loaded from the checkpoint, {} computed)",
                self.restored,
                self.completed - self.restored
            )
        } else {
            String::new()
        };
        info!(
            "client finished (exit code {code}) after {} tasks{loaded}; shutting down",
            self.completed
        );
        self.start_shutdown(code, now);
    }

    /// A stop signal reached a rank: name what was running, then shut the job down.
    pub(super) fn on_signal(&mut self, signal: i32, from: Rank, now: Instant) {
        if !self.is_running() {
            return;
        }
        let running = self.tasks_on_workers();
        let heard: Vec<_> = self
            .workers
            .iter()
            .filter_map(|w| {
                let host = w.hello.as_ref()?.host.clone();
                Some((
                    host,
                    w.rank,
                    Some(now.saturating_duration_since(w.last_seen)),
                ))
            })
            .collect();
        error!(
            "stopping: {from} received {} (walltime, scancel, Ctrl-C, or the launcher ending \
             the job after a rank failed); {} tasks done; {}; last heard from: {}",
            signal_name(signal),
            self.completed,
            if running.is_empty() {
                "no task was running".to_string()
            } else {
                format!("tasks placed on workers: {}", running.join("; "))
            },
            crate::scheduler::last_words::last_heard_line(&heard)
        );
        self.start_shutdown(ExitCode::Signal.code(), now);
    }

    /// `rank 2: a-1, b-2; rank 3: c-3`: the tasks placed on each worker (five at most each).
    pub(super) fn tasks_on_workers(&self) -> Vec<String> {
        let mut listing = Vec::new();
        for worker in &self.workers {
            let mut keys: Vec<Key> = worker.processing.iter().copied().collect();
            keys.sort();
            if !keys.is_empty() {
                listing.push(format!("{}: {}", worker.rank, self.some_names(&keys, 5)));
            }
        }
        listing
    }

    /// The names of the first `limit` keys, then how many more there are.
    pub(super) fn some_names(&self, keys: &[Key], limit: usize) -> String {
        let names: Vec<String> = keys.iter().take(limit).map(|k| self.key_name(*k)).collect();
        match keys.len().saturating_sub(limit) {
            0 => names.join(", "),
            more => format!("{} and {more} more", names.join(", ")),
        }
    }

    /// The stall warning, due (again every `stall_warning`) while tasks are pending but none
    /// finished for `stall_warning`: it names what the pending tasks wait for.
    pub(crate) fn check_stall(&mut self, now: Instant) -> Option<String> {
        let quiet_for = now.saturating_duration_since(self.last_progress);
        if quiet_for < self.config.stall_warning || now < self.next_stall_warning {
            return None;
        }
        self.next_stall_warning = now + self.config.stall_warning;
        let mut waiting: Vec<Key> = Vec::new();
        let mut ready: Vec<Key> = Vec::new();
        let mut placed = 0usize;
        for (key, task) in self.tasks.iter() {
            match task.state {
                TaskState::Waiting => waiting.push(key),
                TaskState::Ready => ready.push(key),
                TaskState::Processing { .. } => placed += 1,
                _ => {}
            }
        }
        if waiting.is_empty() && ready.is_empty() && placed == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if placed > 0 {
            parts.push(format!(
                "{placed} placed on workers (running or queued there): {}",
                self.tasks_on_workers().join("; ")
            ));
        }
        if !ready.is_empty() {
            ready.sort();
            parts.push(format!(
                "{} ready but not placed (no worker has room or the resources they ask for): {}",
                ready.len(),
                self.some_names(&ready, 5)
            ));
        }
        if let Some(&first) = waiting.iter().min() {
            let missing: Vec<Key> = self.tasks.get(&first).map_or_else(Vec::new, |task| {
                task.deps
                    .iter()
                    .copied()
                    .filter(|d| {
                        !matches!(
                            self.tasks.get(d).map(|t| &t.state),
                            Some(TaskState::Memory { .. })
                        )
                    })
                    .collect()
            });
            parts.push(format!(
                "{} waiting for inputs (e.g. {} waits for {})",
                waiting.len(),
                self.key_name(first),
                self.some_names(&missing, 3)
            ));
        }
        Some(format!(
            "no task finished in the last {:.0} s (--stall-warning) while {} tasks are pending: {}",
            quiet_for.as_secs_f64(),
            placed + ready.len() + waiting.len(),
            parts.join("; ")
        ))
    }

    pub(super) fn start_shutdown(&mut self, code: i32, now: Instant) {
        let mut waiting_for: FxHashSet<Rank> = self.workers.iter().map(|w| w.rank).collect();
        waiting_for.insert(Rank::CLIENT);
        for worker in &self.workers {
            self.outbox
                .push(Output::Worker(worker.rank, ToWorker::Stop));
        }
        self.outbox.push(Output::Client(ToClient::Stop));
        self.lifecycle = Lifecycle::Stopping {
            code,
            deadline: now + self.config.shutdown_timeout,
            waiting_for,
        };
    }

    pub(super) fn on_quiesced(&mut self, from: Rank) {
        let Lifecycle::Stopping {
            code, waiting_for, ..
        } = &mut self.lifecycle
        else {
            warn!("{from} quiesced outside shutdown; ignored");
            return;
        };
        waiting_for.remove(&from);
        if waiting_for.is_empty() {
            let code = *code;
            for worker in &self.workers {
                self.outbox
                    .push(Output::Worker(worker.rank, ToWorker::Exit { code }));
            }
            self.outbox.push(Output::Client(ToClient::Exit { code }));
            self.lifecycle = Lifecycle::Exited { code };
        }
    }
}
