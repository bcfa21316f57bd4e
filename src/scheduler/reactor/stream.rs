//! The task stream on a client's request (Dask's `get_task_stream`): the runs the scheduler
//! kept, with their functions' names.

use super::Scheduler;
use crate::protocol::{CoordReply, FnId, Key, Rank, TaskRun, ToClient};

impl Scheduler {
    /// Records a run of the current attempt of `key` on `from` in the task stream.
    pub(super) fn record_run(
        &mut self,
        key: Key,
        from: Rank,
        run: TaskRun,
        nbytes: u64,
        error: Option<&str>,
    ) {
        let func = self.tasks.get(&key).and_then(|t| t.func);
        self.task_stream.record(key, func, from, run, nbytes, error);
    }

    /// Answers a client's `TaskStream` request at once: the runs from `since` on.
    pub(super) fn on_task_stream(&mut self, from: Rank, id: u64, since: u64) {
        let (entries, next) = self.task_stream.since(since);
        let mut funcs: Vec<FnId> = entries.iter().filter_map(|e| e.func).collect();
        funcs.sort_unstable();
        funcs.dedup();
        let names = funcs
            .into_iter()
            .map(|f| (f, self.functions.name(f).to_string()))
            .collect();
        let reply = CoordReply::TaskStream {
            entries,
            names,
            next,
        };
        self.send_to_client_of(from, ToClient::Coordinated { id, reply });
    }
}
