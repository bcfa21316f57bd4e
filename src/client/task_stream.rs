//! The task stream from the client, as Dask's `get_task_stream` and `performance_report`:
//! the task runs the scheduler kept, as records, and an HTML report of one part of the
//! program.

use super::Client;
use crate::error::{Error, Result};
use crate::protocol::{CoordReply, FnId, Key, Rank, StreamEntry, ToScheduler};
use crate::trace::{TraceCollector, now_us};
use log::{info, warn};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One run of a task's function on a worker (a record of Dask's task stream). A task that
/// failed and was retried has one record per run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task's key.
    pub key: Key,
    /// Its readable name, e.g. `count_hits-17` (as [`Future::name`](super::Future::name)).
    pub name: String,
    /// The name of its function.
    pub function: String,
    /// The worker that ran it.
    pub worker: Rank,
    /// The worker thread that ran it.
    pub thread: u32,
    /// When the function started (the worker's clock).
    pub start: SystemTime,
    /// When it returned.
    pub stop: SystemTime,
    /// Size of the encoded result (0 if it failed).
    pub nbytes: u64,
    /// Why it failed (the first 500 characters), if it did.
    pub error: Option<String>,
}

impl TaskRecord {
    /// `true` if the run gave a value (Dask's `status == "OK"`).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// How long the function ran.
    pub fn duration(&self) -> Duration {
        self.stop.duration_since(self.start).unwrap_or_default()
    }

    fn from_entry(entry: &StreamEntry, names: &[(FnId, String)]) -> Self {
        let function = entry
            .func
            .and_then(|f| names.iter().find(|(id, _)| *id == f))
            .map_or("task", |(_, name)| name.as_str())
            .to_string();
        let start = UNIX_EPOCH
            .checked_add(Duration::from_micros(entry.run.start_us))
            .unwrap_or(UNIX_EPOCH);
        let stop = start
            .checked_add(Duration::from_micros(entry.run.duration_us))
            .unwrap_or(start);
        TaskRecord {
            key: entry.key,
            name: format!("{function}-{}", entry.key.0),
            function,
            worker: entry.worker,
            thread: entry.run.thread,
            start,
            stop,
            nbytes: entry.nbytes,
            error: entry.error.clone(),
        }
    }
}

/// What the scheduler answered to a task-stream request.
struct StreamPart {
    entries: Vec<StreamEntry>,
    names: Vec<(FnId, String)>,
    next: u64,
}

impl StreamPart {
    fn records(&self) -> Vec<TaskRecord> {
        self.entries
            .iter()
            .map(|e| TaskRecord::from_entry(e, &self.names))
            .collect()
    }
}

impl Client {
    /// The task runs the scheduler kept, oldest first: the latest 100,000 of the job, as
    /// Dask's `client.get_task_stream()`. Runs are recorded whether or not `--trace` or
    /// `--report` is given; [`task_stream`](Self::task_stream) gives those of one part of
    /// the program.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.map(square, 0..4u64);
    ///     client.wait(&futures).unwrap();
    ///     let stream = client.get_task_stream().unwrap();
    ///     assert_eq!(stream.len(), 4);
    ///     assert!(stream.iter().all(|r| r.function == "square" && r.ok()));
    /// });
    /// ```
    pub fn get_task_stream(&self) -> Result<Vec<TaskRecord>> {
        Ok(self.stream_since(0)?.records())
    }

    /// Starts recording the task stream from now, as Dask's `with get_task_stream() as
    /// ts:`: [`TaskStream::data`] gives the runs reported since.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     client.gather(&client.map(square, 0..3u64)).unwrap();
    ///     let ts = client.task_stream().unwrap();
    ///     client.gather(&client.map(square, 10..12u64)).unwrap();
    ///     assert_eq!(ts.data().unwrap().len(), 2, "only the runs since");
    /// });
    /// ```
    pub fn task_stream(&self) -> Result<TaskStream<'_>> {
        let since = self.stream_since(u64::MAX)?.next;
        Ok(TaskStream {
            client: self,
            since,
        })
    }

    /// Starts a performance report of the part of the program from now until
    /// [`PerformanceReport::finish`] (or the report being dropped), as Dask's `with
    /// performance_report(filename=...)`: an HTML page of the task runs of that part
    /// (timeline per worker thread, runs per function, busy time, failures) written to
    /// `path`. Unlike `--report`, it has no transfers or memory: those are recorded only
    /// for the whole job. Only the program's client makes reports.
    pub fn performance_report(&self, path: impl AsRef<Path>) -> Result<PerformanceReport<'_>> {
        self.shared.program_only("performance_report")?;
        let path = path.as_ref().to_path_buf();
        let writable = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.is_dir(),
            _ => true,
        };
        if !writable {
            return Err(Error::Config(format!(
                "performance_report: the directory of {} does not exist; create it or \
                 name a file in an existing directory",
                path.display()
            )));
        }
        Ok(PerformanceReport {
            start_us: now_us(),
            stream: self.task_stream()?,
            path,
            done: false,
        })
    }

    /// Asks the scheduler for its task stream from entry `since` on.
    fn stream_since(&self, since: u64) -> Result<StreamPart> {
        match self
            .shared
            .ask(|id| ToScheduler::TaskStream { id, since })?
        {
            CoordReply::TaskStream {
                entries,
                names,
                next,
            } => Ok(StreamPart {
                entries,
                names,
                next,
            }),
            other => Err(Error::Config(format!(
                "the scheduler answered {other:?} to a task-stream request"
            ))),
        }
    }
}

/// The task stream from a point of the program on ([`Client::task_stream`]).
pub struct TaskStream<'a> {
    client: &'a Client,
    since: u64,
}

impl TaskStream<'_> {
    /// The runs reported since the recording started, oldest first (the first ones are
    /// missing if more than 100,000 ran since).
    pub fn data(&self) -> Result<Vec<TaskRecord>> {
        Ok(self.client.stream_since(self.since)?.records())
    }
}

/// A performance report being recorded ([`Client::performance_report`]); written by
/// [`finish`](Self::finish), or when dropped.
pub struct PerformanceReport<'a> {
    stream: TaskStream<'a>,
    start_us: u64,
    path: PathBuf,
    done: bool,
}

impl PerformanceReport<'_> {
    /// Writes the report of the task runs since it started and returns its path. The file
    /// is private (0600) and appears whole or not at all.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.done = true;
        self.write()?;
        Ok(self.path.clone())
    }

    fn write(&self) -> Result<()> {
        let client = self.stream.client;
        let part = client.stream_since(self.stream.since)?;
        let workers = client.scheduler_info()?.workers;
        let runs = part.next.saturating_sub(self.stream.since);
        let dropped = runs.saturating_sub(part.entries.len() as u64);
        let mut scope = format!("Performance report of part of the program: {runs} task runs");
        if dropped > 0 {
            scope.push_str(&format!(
                " (the first {dropped} are not shown: the scheduler keeps the latest {})",
                crate::protocol::TASK_STREAM_KEEP
            ));
        }
        scope.push_str(
            ". Task runs only: transfers, spills and memory are in the whole job's report \
             (--report).",
        );
        let collector =
            TraceCollector::of_scope(self.start_us, &workers, part.names, &part.entries, scope);
        collector
            .write_scope_report(&self.path)
            .map_err(Error::io(&self.path))?;
        info!("performance report written to {}", self.path.display());
        Ok(())
    }
}

impl Drop for PerformanceReport<'_> {
    fn drop(&mut self) {
        if !std::mem::replace(&mut self.done, true)
            && let Err(e) = self.write()
        {
            warn!("performance report not written: {e}");
        }
    }
}
