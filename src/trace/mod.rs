//! Task stream: what every rank records when `--trace` or `--report` is given (task runs,
//! transfers), and what the scheduler rank makes of it when the job ends, after success or
//! failure: a Chrome-trace JSON file (opens in Perfetto or `chrome://tracing`), a summary
//! in the log, and a self-contained HTML report.
//!
//! Workers and the client buffer their entries and send them to rank 0 once a second and
//! when the job stops, so a job that is aborted still leaves what rank 0 received so far.

mod chrome;
mod html;

use crate::memory::human_bytes;
use crate::private_dir::PrivateDir;
use crate::protocol::{FnId, Key, Rank, StreamEntry, ToScheduler, TraceEvent, WorkerInfo};
use log::{info, warn};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Microseconds since the Unix epoch: the clock of every trace entry.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Entries a worker or the client recorded and has not sent yet.
#[derive(Debug, Default)]
pub struct TraceBuffer {
    events: Vec<TraceEvent>,
    /// When each value this rank asked for was requested.
    requested: FxHashMap<Key, u64>,
}

impl TraceBuffer {
    /// Records an entry.
    pub fn record(&mut self, event: TraceEvent) {
        self.events.push(event);
    }

    /// Notes that `key` was requested now.
    pub fn requested(&mut self, key: Key) {
        self.requested.insert(key, now_us());
    }

    /// Records the arrival of `key` from `peer`, timed from its request.
    pub fn arrived(&mut self, key: Key, peer: Rank, nbytes: u64) {
        self.arrived_by(key, peer, nbytes, false);
    }

    /// Records the arrival of `key` from `peer` by point to point or by a collective.
    pub fn arrived_by(&mut self, key: Key, peer: Rank, nbytes: u64, collective: bool) {
        let end = now_us();
        let start = self.requested.remove(&key).unwrap_or(end);
        self.events.push(TraceEvent::Transfer {
            key,
            peer,
            nbytes,
            start_us: start,
            duration_us: end.saturating_sub(start),
            incoming: true,
            collective,
        });
    }

    /// Records a value sent to `peer` without being asked (a scatter).
    pub fn sent(&mut self, key: Key, peer: Rank, nbytes: u64) {
        self.events.push(TraceEvent::Transfer {
            key,
            peer,
            nbytes,
            start_us: now_us(),
            duration_us: 0,
            incoming: false,
            collective: false,
        });
    }

    /// The message carrying the entries recorded since the last call, if any.
    pub fn take_message(&mut self) -> Option<ToScheduler> {
        if self.events.is_empty() {
            None
        } else {
            Some(ToScheduler::Trace(std::mem::take(&mut self.events)))
        }
    }
}

/// What a rank is, for the labels of the trace.
#[derive(Debug, Clone)]
struct RankInfo {
    host: String,
    nthreads: u32,
    memory_limit: Option<u64>,
}

/// How the report is kept up to date and what it draws as memory thresholds.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// Time between two rewrites of the report while the job runs.
    pub interval: std::time::Duration,
    /// `--memory-spill`: the fraction of a worker's limit where it starts spilling.
    pub memory_spill: f64,
    /// `--memory-pause`: the fraction where it starts no new task.
    pub memory_pause: f64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            interval: std::time::Duration::from_secs(30),
            memory_spill: 0.6,
            memory_pause: 0.8,
        }
    }
}

/// A failed task run, as the worker reported it.
#[derive(Debug, Clone)]
struct Failure {
    worker: Rank,
    key: Key,
    at_us: u64,
    message: String,
}

/// A rewrite of the report while the job runs waits at least this many times as long as the
/// last one took.
pub const REWRITE_SHARE: u32 = 20;

/// Failures listed in the report at most (the first ones).
const MAX_FAILURES: usize = 1000;
/// Characters of a failure's message kept.
const MAX_MESSAGE: usize = 2000;

/// The task stream of the whole job, gathered on rank 0.
#[derive(Debug)]
pub struct TraceCollector {
    trace_path: Option<PathBuf>,
    report_path: Option<PathBuf>,
    settings: ReportSettings,
    start_us: u64,
    names: FxHashMap<FnId, String>,
    workers: BTreeMap<Rank, RankInfo>,
    events: Vec<(Rank, TraceEvent)>,
    failures: Vec<Failure>,
    /// Failures past [`MAX_FAILURES`], counted only.
    more_failures: u64,
    /// When the report may next be written while the job runs.
    next_report: std::time::Instant,
    written: bool,
    /// For the report of a part of the program (`performance_report`): what it covers,
    /// said instead of the job's status.
    scope: Option<String>,
}

/// Busy time of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerBusy {
    /// The worker's rank.
    pub rank: u32,
    /// Its host.
    pub host: String,
    /// Its task threads.
    pub threads: u32,
    /// Tasks it ran.
    pub tasks: u64,
    /// Seconds its threads spent in tasks.
    pub busy_seconds: f64,
    /// `busy_seconds` over `threads` x the job's wall time, in percent.
    pub busy_percent: f64,
}

/// Tasks of one kind (one function).
#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    /// Function name.
    pub name: String,
    /// Tasks that ran.
    pub tasks: u64,
    /// Of which failed.
    pub failed: u64,
    /// Seconds they ran in total.
    pub seconds: f64,
}

/// The end-of-job summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The job's exit code (`None` while it runs).
    pub exit_code: Option<i32>,
    /// Seconds from the scheduler's start to the summary.
    pub wall_seconds: f64,
    /// Task runs recorded (a retried task counts once per run).
    pub tasks: u64,
    /// Of which failed (panicked or returned `Err`).
    pub failures: u64,
    /// Per function.
    pub kinds: Vec<KindSummary>,
    /// Values moved between ranks.
    pub transfers: u64,
    /// Their bytes.
    pub bytes_moved: u64,
    /// Values written to disk to free memory.
    pub spills: u64,
    /// Their bytes.
    pub spilled_bytes: u64,
    /// Spilled values read back from disk.
    pub read_backs: u64,
    /// Per worker.
    pub workers: Vec<WorkerBusy>,
}

impl Summary {
    /// The summary as log lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "summary: {} tasks ({} failed) in {:.2} s, exit code {}; {} transfers moved {}; \
             {} spills wrote {}, {} read back",
            self.tasks,
            self.failures,
            self.wall_seconds,
            self.exit_code
                .map_or_else(|| "(running)".to_string(), |c| c.to_string()),
            self.transfers,
            human_bytes(self.bytes_moved),
            self.spills,
            human_bytes(self.spilled_bytes),
            self.read_backs
        )];
        for kind in &self.kinds {
            lines.push(format!(
                "summary: {} x {} ({} failed), {:.3} s in total",
                kind.tasks, kind.name, kind.failed, kind.seconds
            ));
        }
        let busy: Vec<String> = self
            .workers
            .iter()
            .map(|w| format!("rank {} {:.0}%", w.rank, w.busy_percent))
            .collect();
        if !busy.is_empty() {
            lines.push(format!("summary: workers busy: {}", busy.join(", ")));
        }
        lines
    }
}

impl TraceCollector {
    /// A collector writing Chrome-trace JSON to `trace_path` and an HTML report to
    /// `report_path` (either may be absent) when the job ends.
    pub fn new(
        trace_path: Option<PathBuf>,
        report_path: Option<PathBuf>,
        settings: ReportSettings,
    ) -> Self {
        let interval = settings.interval;
        TraceCollector {
            trace_path,
            report_path,
            settings,
            start_us: now_us(),
            names: FxHashMap::default(),
            workers: BTreeMap::new(),
            events: Vec::new(),
            failures: Vec::new(),
            more_failures: 0,
            next_report: std::time::Instant::now() + interval,
            written: false,
            scope: None,
        }
    }

    /// Lists the failure of `key` on `worker` at `at_us` (its message cut to
    /// [`MAX_MESSAGE`] characters), or only counts it past [`MAX_FAILURES`].
    fn push_failure(&mut self, worker: Rank, key: Key, at_us: u64, message: &str) {
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(Failure {
                worker,
                key,
                at_us,
                message: message.chars().take(MAX_MESSAGE).collect(),
            });
        } else {
            self.more_failures += 1;
        }
    }

    /// The report of a part of the program (`performance_report`), from `start_us` to now:
    /// the task runs in `entries` (from the scheduler's task stream), on `workers`, with
    /// their functions' `names`; `scope` says what the page covers.
    pub fn of_scope(
        start_us: u64,
        workers: &[WorkerInfo],
        names: Vec<(FnId, String)>,
        entries: &[StreamEntry],
        scope: String,
    ) -> Self {
        let mut collector = Self::new(None, None, ReportSettings::default());
        collector.start_us = start_us;
        collector.scope = Some(scope);
        collector.names.extend(names);
        for worker in workers {
            collector.workers.insert(
                worker.rank,
                RankInfo {
                    host: worker.hello.host.clone(),
                    nthreads: worker.hello.nthreads,
                    memory_limit: worker.hello.memory_limit,
                },
            );
        }
        for entry in entries {
            let event = TraceEvent::Task {
                key: entry.key,
                // No function: reads as "task".
                func: entry.func.unwrap_or(FnId(u32::MAX)),
                thread: entry.run.thread,
                start_us: entry.run.start_us,
                duration_us: entry.run.duration_us,
                ok: entry.error.is_none(),
                bytes_in: 0,
                bytes_out: entry.nbytes,
            };
            collector.events.push((entry.worker, event));
            if let Some(message) = &entry.error {
                collector.push_failure(
                    entry.worker,
                    entry.key,
                    entry.run.start_us.saturating_add(entry.run.duration_us),
                    message,
                );
            }
        }
        collector
    }

    /// Writes the report of a part of the program ([`of_scope`](Self::of_scope)) to
    /// `path`: a private file, complete or absent.
    pub fn write_scope_report(&self, path: &Path) -> std::io::Result<()> {
        let summary = self.summary(None);
        write_private(path, |out| html::write(self, &summary, out))
    }

    /// Rewrites the report if `--report-interval` has passed since the last time (while
    /// the job runs; [`finish`](Self::finish) writes the last one). The scheduler's thread
    /// writes it, so the next rewrite waits at least [`REWRITE_SHARE`] times as long as
    /// this one took: rewriting never takes more than 1/`REWRITE_SHARE` of its time, however
    /// long the task stream.
    pub fn tick(&mut self, now: std::time::Instant) {
        if self.written || now < self.next_report || self.report_path.is_none() {
            return;
        }
        let started = std::time::Instant::now();
        if let Some(path) = self.report_path.clone() {
            let summary = self.summary(None);
            if let Err(e) = write_private(&path, |out| html::write(self, &summary, out)) {
                warn!("could not update the report {}: {e}", path.display());
            }
        }
        let took = started.elapsed();
        self.next_report = now + self.settings.interval.max(took * REWRITE_SHARE);
    }

    /// Looks at a message the scheduler is about to handle (function names and worker
    /// descriptions label the trace); takes the entries out of a `Trace` message and
    /// returns `None` for it.
    pub fn observe(&mut self, from: Rank, message: ToScheduler) -> Option<ToScheduler> {
        match message {
            ToScheduler::Trace(events) => {
                self.events.extend(events.into_iter().map(|e| (from, e)));
                None
            }
            ToScheduler::RegisterFunction(ref registration) => {
                self.names
                    .insert(registration.id, registration.name.clone());
                Some(message)
            }
            ToScheduler::WorkerHello(ref hello) => {
                self.workers.insert(
                    from,
                    RankInfo {
                        host: hello.host.clone(),
                        nthreads: hello.nthreads,
                        memory_limit: hello.memory_limit,
                    },
                );
                Some(message)
            }
            ToScheduler::TaskFailed {
                key,
                message: ref text,
                ..
            } => {
                self.push_failure(from, key, now_us(), text);
                Some(message)
            }
            other => Some(other),
        }
    }

    fn kind_name(&self, func: FnId) -> &str {
        self.names.get(&func).map_or("task", String::as_str)
    }

    /// The summary of what was received so far (`exit_code` once the job ended).
    pub fn summary(&self, exit_code: Option<i32>) -> Summary {
        let end_us = now_us().max(self.start_us + 1);
        let wall_seconds = (end_us - self.start_us) as f64 * 1e-6;
        let mut kinds: BTreeMap<&str, KindSummary> = BTreeMap::new();
        let mut busy: BTreeMap<Rank, (u64, u64)> = BTreeMap::new();
        let (mut tasks, mut failures, mut transfers, mut bytes_moved) = (0, 0, 0, 0);
        let (mut spills, mut spilled_bytes, mut read_backs) = (0, 0, 0);
        for (rank, event) in &self.events {
            match event {
                TraceEvent::Task {
                    func,
                    duration_us,
                    ok,
                    ..
                } => {
                    tasks += 1;
                    failures += u64::from(!ok);
                    let name = self.kind_name(*func);
                    let kind = kinds.entry(name).or_insert_with(|| KindSummary {
                        name: name.to_string(),
                        tasks: 0,
                        failed: 0,
                        seconds: 0.0,
                    });
                    kind.tasks += 1;
                    kind.failed += u64::from(!ok);
                    kind.seconds += *duration_us as f64 * 1e-6;
                    let entry = busy.entry(*rank).or_default();
                    entry.0 += 1;
                    entry.1 += duration_us;
                }
                TraceEvent::Transfer { nbytes, .. } => {
                    transfers += 1;
                    bytes_moved += nbytes;
                }
                TraceEvent::Spill {
                    nbytes,
                    write: true,
                    ..
                } => {
                    spills += 1;
                    spilled_bytes += nbytes;
                }
                TraceEvent::Spill { write: false, .. } => read_backs += 1,
                TraceEvent::Heartbeat { .. } | TraceEvent::Memory { .. } => {}
            }
        }
        let workers = self
            .workers
            .iter()
            .map(|(rank, info)| {
                let (count, busy_us) = busy.get(rank).copied().unwrap_or_default();
                let busy_seconds = busy_us as f64 * 1e-6;
                WorkerBusy {
                    rank: rank.0,
                    host: info.host.clone(),
                    threads: info.nthreads,
                    tasks: count,
                    busy_seconds,
                    busy_percent: 100.0 * busy_seconds
                        / (wall_seconds * f64::from(info.nthreads.max(1))),
                }
            })
            .collect();
        Summary {
            exit_code,
            wall_seconds,
            tasks,
            failures,
            kinds: kinds.into_values().collect(),
            transfers,
            bytes_moved,
            spills,
            spilled_bytes,
            read_backs,
            workers,
        }
    }

    /// Writes the trace and the report as they stand (the job goes on): when a stop signal
    /// arrives, so that both exist even if the launcher kills this rank before the job's
    /// orderly end (Open MPI kills every rank a second after it lost a node).
    pub fn snapshot(&mut self) {
        if self.written {
            return;
        }
        let summary = self.summary(None);
        if let Some(path) = self.trace_path.clone()
            && let Err(e) = write_private(&path, |out| chrome::write(self, &summary, out))
        {
            warn!("could not write the trace {}: {e}", path.display());
        }
        if let Some(path) = self.report_path.clone()
            && let Err(e) = write_private(&path, |out| html::write(self, &summary, out))
        {
            warn!("could not update the report {}: {e}", path.display());
        }
    }

    /// Logs the summary and writes the trace and the report (once; later calls do
    /// nothing). Called when the job ends, whatever the exit code.
    pub fn finish(&mut self, exit_code: i32) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let summary = self.summary(Some(exit_code));
        for line in summary.lines() {
            info!("{line}");
        }
        if let Some(path) = self.trace_path.clone() {
            match write_private(&path, |out| chrome::write(self, &summary, out)) {
                Ok(()) => info!(
                    "task stream written to {} (open it in https://ui.perfetto.dev)",
                    path.display()
                ),
                Err(e) => warn!("could not write the trace {}: {e}", path.display()),
            }
        }
        if let Some(path) = self.report_path.clone() {
            match write_private(&path, |out| html::write(self, &summary, out)) {
                Ok(()) => info!("report written to {}", path.display()),
                Err(e) => warn!("could not write the report {}: {e}", path.display()),
            }
        }
    }
}

/// Writes a file readable by its owner only: created (0600) in a private directory next to
/// `path`, then renamed into place, so a reader never sees half a file and the private
/// directory is gone at exit even if writing fails.
fn write_private(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = PrivateDir::create(&parent, 0).map_err(std::io::Error::other)?;
    let file = dir.create_file("output").map_err(std::io::Error::other)?;
    let mut writer = std::io::BufWriter::new(file);
    fill(&mut writer)?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(dir.path().join("output"), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::WorkerHello;

    fn collector_with_two_tasks() -> TraceCollector {
        let mut collector = TraceCollector::new(None, None, ReportSettings::default());
        collector.observe(
            Rank(2),
            ToScheduler::WorkerHello(WorkerHello {
                nthreads: 2,
                resources: vec![],
                host: "node1".into(),
                pid: 1,
                memory_limit: Some(1 << 30),
                memory_limit_source: String::new(),
                mpi_group: false,
            }),
        );
        collector.observe(
            Rank(1),
            ToScheduler::RegisterFunction(crate::protocol::FunctionMsg {
                id: FnId(0),
                offset: 0,
                signature: 0,
                name: "square".into(),
                check: 0,
            }),
        );
        let start = collector.start_us;
        let passed = collector.observe(
            Rank(2),
            ToScheduler::Trace(vec![
                TraceEvent::Task {
                    key: Key(1),
                    func: FnId(0),
                    thread: 0,
                    start_us: start + 10,
                    duration_us: 1000,
                    ok: true,
                    bytes_in: 16,
                    bytes_out: 8,
                },
                TraceEvent::Task {
                    key: Key(2),
                    func: FnId(0),
                    thread: 1,
                    start_us: start + 20,
                    duration_us: 500,
                    ok: false,
                    bytes_in: 8,
                    bytes_out: 0,
                },
                TraceEvent::Transfer {
                    key: Key(1),
                    peer: Rank(3),
                    nbytes: 4096,
                    start_us: start + 30,
                    duration_us: 7,
                    incoming: true,
                    collective: false,
                },
                TraceEvent::Spill {
                    key: Key(1),
                    nbytes: 300,
                    start_us: start + 40,
                    duration_us: 3,
                    write: true,
                },
            ]),
        );
        assert!(passed.is_none(), "trace messages stop at the collector");
        collector
    }

    #[test]
    fn summary_counts_tasks_failures_bytes_and_busy_time() {
        let summary = collector_with_two_tasks().summary(Some(4));
        assert_eq!((summary.tasks, summary.failures), (2, 1));
        assert_eq!((summary.transfers, summary.bytes_moved), (1, 4096));
        assert_eq!(summary.kinds.len(), 1);
        assert_eq!(summary.kinds[0].name, "square");
        assert_eq!(summary.workers.len(), 1);
        assert_eq!(summary.workers[0].tasks, 2);
        assert!((summary.workers[0].busy_seconds - 0.0015).abs() < 1e-9);
        assert!(summary.lines()[0].contains("2 tasks (1 failed)"));
        assert!(summary.lines()[0].contains("4.00 KiB"));
        assert!(summary.lines()[0].contains("1 spills wrote 300 B, 0 read back"));
    }

    #[test]
    fn files_are_private_and_complete() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mpidask-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut collector = collector_with_two_tasks();
        collector.trace_path = Some(dir.join("trace.json"));
        collector.report_path = Some(dir.join("report.html"));
        collector.finish(0);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
        let events = json["traceEvents"].as_array().unwrap();
        let tasks = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "task")
            .count();
        assert_eq!(tasks, 2);
        assert_eq!(json["otherData"]["summary"]["tasks"], 2);
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("square"));
        for name in ["trace.json", "report.html"] {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        // Only the two outputs remain: the private directories are gone.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_report_is_rewritten_at_most_every_interval_and_says_it_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        let mut collector = collector_with_two_tasks();
        collector.report_path = Some(path.clone());
        collector.settings.interval = std::time::Duration::from_secs(3600);
        let start = std::time::Instant::now();
        collector.next_report = start;
        collector.tick(start);
        let page = std::fs::read_to_string(&path).expect("written at the first tick");
        assert!(page.contains("The job is running") && page.trim_end().ends_with("</html>"));
        assert!(collector.next_report >= start + collector.settings.interval);
        std::fs::remove_file(&path).unwrap();
        collector.tick(start + std::time::Duration::from_secs(1));
        assert!(!path.exists(), "not again before the interval");
        collector.finish(0);
        let page = std::fs::read_to_string(&path).expect("written at the end");
        assert!(page.contains("The job ended with exit code 0."));
        collector.tick(start + std::time::Duration::from_secs(7200));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("exit code 0"),
            "never rewritten as running once the job ended"
        );
    }

    #[test]
    fn bytes_read_humanly() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(4 << 30), "4.00 GiB");
    }
}
