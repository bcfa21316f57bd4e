//! Last words of the scheduler rank: the trace, the report and one line, even when a stop
//! signal finds the communication thread held inside the MPI library.
//!
//! When a rank or a whole node dies, Open MPI's TCP transport can hold rank 0's only MPI
//! thread inside its error path (it waits to hand a warning to `mpirun`) until the launcher
//! kills the rank: the loop never sees the launcher's SIGTERM. A watcher thread, which never
//! calls MPI, waits for the same signal; if the loop has not handled it within
//! [`GRACE`], the watcher writes the trace and the report as they stood and says when each
//! node was last heard from (the lost one is the one silent the longest).

use crate::protocol::Rank;
use crate::trace::TraceCollector;
use log::error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the communication loop has to handle a stop signal before the watcher speaks
/// for it (Open MPI kills a rank a second after its SIGTERM).
pub const GRACE: Duration = Duration::from_millis(400);

/// What the scheduler rank's loop shares with its watcher.
pub struct LastWords {
    origin: Instant,
    /// The loop handled a stop signal, or the job ended: the watcher has nothing to say.
    quiet: AtomicBool,
    /// When the loop last ran, in milliseconds since `origin`.
    loop_ms: AtomicU64,
    /// When each rank last sent a frame, in milliseconds since `origin` (`u64::MAX`:
    /// never), by rank number.
    heard_ms: Vec<AtomicU64>,
    /// Each worker's host, by rank number, from its hello.
    hosts: Mutex<Vec<Option<String>>>,
    /// The task stream (`--trace`, `--report`).
    trace: Mutex<Option<TraceCollector>>,
}

impl LastWords {
    /// Shared state for a job of `ranks` ranks collecting `trace`.
    pub fn new(ranks: usize, trace: Option<TraceCollector>) -> Self {
        LastWords {
            origin: Instant::now(),
            quiet: AtomicBool::new(false),
            loop_ms: AtomicU64::new(0),
            heard_ms: (0..ranks).map(|_| AtomicU64::new(u64::MAX)).collect(),
            hosts: Mutex::new(vec![None; ranks]),
            trace: Mutex::new(trace),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// The task stream, locked (a panic elsewhere does not lose it).
    pub fn trace(&self) -> MutexGuard<'_, Option<TraceCollector>> {
        self.trace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop ran at `now`.
    pub fn loop_ran(&self, now: Instant) {
        self.loop_ms.store(self.ms(now), Ordering::Relaxed);
    }

    /// A frame from `from` arrived at `now`.
    pub fn heard(&self, from: Rank, now: Instant) {
        if let Some(slot) = self.heard_ms.get(from.0 as usize) {
            slot.store(self.ms(now), Ordering::Relaxed);
        }
    }

    /// Worker `rank` runs on `host`.
    pub fn set_host(&self, rank: Rank, host: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = hosts.get_mut(rank.0 as usize) {
            *slot = Some(host.to_string());
        }
    }

    /// The loop handled the stop signal itself, or the job ended.
    pub fn hush(&self) {
        self.quiet.store(true, Ordering::Relaxed);
    }

    /// Speaks for the loop if it is held: called by the watcher once `signal` arrived.
    fn speak_if_held(&self, signal: &str) {
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if self.quiet.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.quiet.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let held = Duration::from_millis(
            self.ms(now)
                .saturating_sub(self.loop_ms.load(Ordering::Relaxed)),
        );
        let entries: Vec<(String, Rank, Option<Duration>)> = {
            let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts
                .iter()
                .enumerate()
                .filter_map(|(rank, host)| {
                    let host = host.clone()?;
                    let heard = self.heard_ms[rank].load(Ordering::Relaxed);
                    let ago = (heard != u64::MAX)
                        .then(|| Duration::from_millis(self.ms(now).saturating_sub(heard)));
                    Some((host, Rank(rank as u32), ago))
                })
                .collect()
        };
        // The loop may hold the trace only while it is not inside MPI: wait a little.
        let mut written = false;
        for _ in 0..20 {
            if let Ok(mut trace) = self.trace.try_lock() {
                if let Some(trace) = trace.as_mut() {
                    trace.snapshot();
                    written = true;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        error!(
            "stopping: rank 0 received {signal} while the MPI library held its communication \
             thread for {:.1} s (Open MPI does so when a peer's connection breaks: a rank or a \
             node was likely lost; see the launcher's message); last heard from: {}{}",
            held.as_secs_f64(),
            last_heard_line(&entries),
            if written {
                "; trace and report written as they stood"
            } else {
                ""
            }
        );
        self.hush();
    }
}

/// `node1 (rank 2) 0.2 s ago; node3 (rank 6, rank 7) 1.6 s ago`: when anything last came
/// from the workers of each node (`None`: never), nodes in order of first appearance.
pub fn last_heard_line(entries: &[(String, Rank, Option<Duration>)]) -> String {
    let mut nodes: Vec<(&str, Vec<Rank>, Option<Duration>)> = Vec::new();
    for (host, rank, ago) in entries {
        let at = match nodes.iter().position(|(h, _, _)| h == host) {
            Some(at) => at,
            None => {
                nodes.push((host, Vec::new(), None));
                nodes.len() - 1
            }
        };
        let node = &mut nodes[at];
        node.1.push(*rank);
        node.2 = match (node.2, *ago) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let parts: Vec<String> = nodes
        .iter()
        .map(|(host, ranks, ago)| {
            let ranks: Vec<String> = ranks.iter().map(ToString::to_string).collect();
            match ago {
                Some(ago) => format!(
                    "{host} ({}) {:.1} s ago",
                    ranks.join(", "),
                    ago.as_secs_f64()
                ),
                None => format!("{host} ({}) never", ranks.join(", ")),
            }
        })
        .collect();
    if parts.is_empty() {
        "no worker yet".to_string()
    } else {
        parts.join("; ")
    }
}

/// Starts the watcher of `words`: it waits for a stop signal (SIGTERM, SIGINT, SIGUSR1) and
/// speaks if the loop does not handle it within [`GRACE`]. It never calls MPI.
pub fn watch(words: Arc<LastWords>, signals: &[i32]) {
    let mut stops = match signal_hook::iterator::Signals::new(signals) {
        Ok(stops) => stops,
        Err(e) => {
            log::debug!("no watcher of stop signals: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("mpidask-last-words".into())
        .spawn(move || {
            if let Some(signal) = stops.forever().next() {
                words.speak_if_held(&super::reactor::signal_name(signal));
            }
        });
    if let Err(e) = spawned {
        log::debug!("no watcher of stop signals: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_heard_groups_workers_by_node() {
        let s = |ms: u64| Some(Duration::from_millis(ms));
        let entries = vec![
            ("node1".to_string(), Rank(2), s(200)),
            ("node3".to_string(), Rank(6), s(1700)),
            ("node2".to_string(), Rank(3), s(900)),
            ("node3".to_string(), Rank(7), s(1600)),
            ("node2".to_string(), Rank(4), None),
        ];
        assert_eq!(
            last_heard_line(&entries),
            "node1 (rank 2) 0.2 s ago; node3 (rank 6, rank 7) 1.6 s ago; \
             node2 (rank 3, rank 4) 0.9 s ago"
        );
        assert_eq!(last_heard_line(&[]), "no worker yet");
    }

    #[test]
    fn the_watcher_is_quiet_when_the_loop_handled_the_signal() {
        let words = LastWords::new(4, None);
        words.hush();
        let started = Instant::now();
        words.speak_if_held("SIGTERM");
        assert!(started.elapsed() < GRACE);
    }
}
