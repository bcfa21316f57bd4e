//! Progress of running work, for people watching a terminal or reading a batch log: a live
//! bar (indicatif) when standard error is a terminal, otherwise one plain log line every
//! `--progress-interval` seconds with done/total, rate and time left.

use super::{Client, Future};
use crate::error::Result;
use crate::protocol::{JobProgress, ToScheduler};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the display is refreshed.
const REFRESH: Duration = Duration::from_millis(200);

/// Where progress goes.
enum Sink {
    Bar(ProgressBar),
    Lines {
        interval: Duration,
        last_line: Option<Instant>,
    },
}

/// A progress display over `total` units of work.
pub(crate) struct ProgressDisplay {
    sink: Sink,
    started: Instant,
}

impl ProgressDisplay {
    /// A bar on a terminal, else plain lines every `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        let sink = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {pos}/{len} tasks ({percent}%) ETA {eta}",
                )
                .expect("valid template"),
            );
            Sink::Bar(bar)
        } else {
            Sink::Lines {
                interval,
                last_line: None,
            }
        };
        ProgressDisplay {
            sink,
            started: Instant::now(),
        }
    }

    /// Shows that `done` of `total` units are finished.
    pub(crate) fn update(&mut self, done: u64, total: u64) {
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Sink::Lines {
                interval,
                last_line,
            } => {
                let now = Instant::now();
                if last_line.is_none_or(|t| now.duration_since(t) >= *interval) {
                    *last_line = Some(now);
                    log::info!("{}", progress_line(done, total, self.started.elapsed()));
                }
            }
        }
    }

    /// Shows the final state.
    pub(crate) fn finish(self, done: u64, total: u64) {
        // The bar gives way to one line that stays in the scrollback.
        if let Sink::Bar(bar) = &self.sink {
            bar.finish_and_clear();
        }
        log::info!("{}", progress_line(done, total, self.started.elapsed()));
    }
}

/// `progress: 120/500 tasks (24.0%), 30.0 tasks/s, ETA 13 s`.
pub(crate) fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * done as f64 / total as f64
    };
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let left = if done >= total {
        "done".to_string()
    } else if rate > 0.0 {
        format!("ETA {}", human_duration((total - done) as f64 / rate))
    } else {
        "ETA unknown".to_string()
    };
    format!("progress: {done}/{total} tasks ({percent:.1}%), {rate:.1} tasks/s, {left}")
}

fn human_duration(seconds: f64) -> String {
    let whole = seconds.ceil() as u64;
    match whole {
        0..=99 => format!("{whole} s"),
        100..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, (whole % 3600) / 60),
    }
}

impl Client {
    /// The job's task counts: tasks submitted, completed, failed or cancelled, and
    /// released before they finished (asked of the scheduler).
    pub fn job_progress(&self) -> Result<JobProgress> {
        self.shared.program_only("job_progress")?;
        let generation = self.shared.lock().progress_generation;
        self.shared
            .send(super::Command::Scheduler(ToScheduler::ProgressRequest));
        self.shared.wait_for(|state| {
            (state.progress_generation > generation).then(|| state.progress.unwrap_or_default())
        })
    }

    /// Shows the progress of `futures` (a bar on a terminal, a log line every
    /// `--progress-interval` seconds otherwise) until every one has finished, like Dask's
    /// `progress(futures)`. Returns when all are done; their values stay on the workers.
    pub fn progress<T>(&self, futures: &[Future<T>]) -> Result<()> {
        self.shared.program_only("progress")?;
        let total = futures.len() as u64;
        let mut display = ProgressDisplay::new(self.shared.progress_interval);
        loop {
            let done = futures.iter().filter(|f| f.done()).count() as u64;
            if done == total {
                display.finish(done, total);
                return Ok(());
            }
            display.update(done, total);
            self.shared.wait_changed(REFRESH)?;
        }
    }

    /// Runs `work` (e.g. `|| array.compute::<f64>(&client)`) while showing the progress of
    /// the tasks submitted from its start: the whole graph, not only its final results.
    /// Counts are job-wide, so tasks other threads submit meanwhile count too.
    pub fn with_progress<R>(&self, work: impl FnOnce() -> R) -> R {
        let Ok(base) = self.job_progress() else {
            return work();
        };
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        std::thread::scope(|scope| {
            let watcher = scope.spawn(move || {
                crate::logging::set_thread_role(1, "client");
                let mut display = ProgressDisplay::new(self.shared.progress_interval);
                let since = |now: JobProgress| {
                    (
                        now.finished().saturating_sub(base.finished()),
                        now.submitted.saturating_sub(base.submitted),
                    )
                };
                loop {
                    let finished = stopped.recv_timeout(REFRESH).is_ok();
                    let Ok(now) = self.job_progress() else {
                        return;
                    };
                    let (done, total) = since(now);
                    if finished {
                        display.finish(done, total);
                        return;
                    }
                    display.update(done, total);
                }
            });
            let result = work();
            let _ = stop.send(());
            let _ = watcher.join();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_done_total_rate_and_time_left() {
        assert_eq!(
            progress_line(120, 500, Duration::from_secs(4)),
            "progress: 120/500 tasks (24.0%), 30.0 tasks/s, ETA 13 s"
        );
        assert_eq!(
            progress_line(500, 500, Duration::from_secs(10)),
            "progress: 500/500 tasks (100.0%), 50.0 tasks/s, done"
        );
        assert_eq!(
            progress_line(0, 7, Duration::from_secs(1)),
            "progress: 0/7 tasks (0.0%), 0.0 tasks/s, ETA unknown"
        );
        assert_eq!(human_duration(3725.0), "1 h 02 min");
        assert_eq!(human_duration(150.0), "2 min 30 s");
    }

    #[test]
    fn progress_follows_futures_in_local_mode() {
        fn nap(ms: u64) -> u64 {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        }
        let args = crate::RuntimeArgs {
            progress_interval: 0.05,
            ..crate::RuntimeArgs::default()
        };
        crate::run_local(args, |client| {
            // Not pure: six tasks alike, each its own.
            let each = client.with_options(crate::TaskOptions::default().pure(false));
            let futures = each.map(nap, vec![30u64; 6]);
            client.progress(&futures).unwrap();
            assert!(futures.iter().all(Future::done));
            let counts = client.job_progress().unwrap();
            assert_eq!((counts.submitted, counts.completed), (6, 6));
            let sum: u64 = client.with_progress(|| {
                client
                    .gather(&each.map(nap, vec![10u64; 4]))
                    .unwrap()
                    .into_iter()
                    .sum()
            });
            assert_eq!(sum, 40);
            assert_eq!(client.job_progress().unwrap().completed, 10);
        });
    }
}
