//! The task stream the scheduler keeps for `get_task_stream` and `performance_report`: the
//! latest [`TASK_STREAM_KEEP`] task runs, numbered in the order their reports arrived.

use crate::protocol::{FnId, Key, Rank, StreamEntry, TASK_STREAM_KEEP, TaskRun};
use std::collections::VecDeque;

/// Characters of a failure's message kept in its entry.
const MAX_ERROR: usize = 500;

/// The latest task runs, oldest first.
#[derive(Debug)]
pub struct TaskStreamLog {
    entries: VecDeque<StreamEntry>,
    /// The number the next run gets: runs recorded since the job started.
    next: u64,
    /// Runs kept at most.
    keep: usize,
}

impl Default for TaskStreamLog {
    fn default() -> Self {
        Self::keeping(TASK_STREAM_KEEP)
    }
}

impl TaskStreamLog {
    /// A stream that keeps the latest `keep` runs.
    pub fn keeping(keep: usize) -> Self {
        TaskStreamLog {
            entries: VecDeque::new(),
            next: 0,
            keep: keep.max(1),
        }
    }

    /// Records a run of `key`'s function on `worker`: its result's size, or why it failed.
    pub fn record(
        &mut self,
        key: Key,
        func: Option<FnId>,
        worker: Rank,
        run: TaskRun,
        nbytes: u64,
        error: Option<&str>,
    ) {
        if self.entries.len() == self.keep {
            self.entries.pop_front();
        }
        self.entries.push_back(StreamEntry {
            seq: self.next,
            key,
            func,
            worker,
            run,
            nbytes,
            error: error.map(|e| e.chars().take(MAX_ERROR).collect()),
        });
        self.next += 1;
    }

    /// The runs kept from number `since` on (all kept ones if older were dropped), and the
    /// number the next run will get.
    pub fn since(&self, since: u64) -> (Vec<StreamEntry>, u64) {
        let first = self.entries.front().map_or(self.next, |e| e.seq);
        let skip = usize::try_from(since.saturating_sub(first)).unwrap_or(usize::MAX);
        let entries = self.entries.iter().skip(skip).cloned().collect();
        (entries, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start_us: u64) -> TaskRun {
        TaskRun {
            start_us,
            duration_us: 5,
            thread: 0,
        }
    }

    #[test]
    fn keeps_the_latest_runs_numbered_and_answers_from_any_point() {
        let mut log = TaskStreamLog::keeping(3);
        assert_eq!(log.since(0), (vec![], 0));
        for i in 0..5u64 {
            let error = (i == 4).then_some("boom");
            log.record(Key(i), Some(FnId(1)), Rank(2), run(i), 8, error);
        }
        let (all, next) = log.since(0);
        assert_eq!(next, 5);
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4], "the two oldest were dropped");
        assert_eq!(all[2].error.as_deref(), Some("boom"));
        assert_eq!(log.since(4).0.len(), 1);
        assert!(log.since(5).0.is_empty());
        assert!(log.since(u64::MAX).0.is_empty());
    }

    #[test]
    fn long_errors_are_cut() {
        let mut log = TaskStreamLog::keeping(1);
        let long = "x".repeat(10_000);
        log.record(Key(1), None, Rank(2), run(0), 0, Some(&long));
        assert_eq!(log.since(0).0[0].error.as_ref().unwrap().len(), MAX_ERROR);
    }
}
