//! Copies of values on a client's request (Dask's `who_has` and `replicate`): which workers
//! hold a key, and copying a value onto more workers, each fetching it from a holder, the
//! client answered once every copy is made.

use super::{Output, Scheduler};
use crate::protocol::{CoordReply, Key, Rank, ToClient, ToWorker};
use crate::scheduler::state::{Task, TaskState};
use rustc_hash::{FxHashMap, FxHashSet};

/// A `replicate` request waiting for its copies.
pub(crate) struct Replication {
    /// The client that asked (the program's, or a worker's task client).
    requester: Rank,
    /// Its request id.
    id: u64,
    /// Copies not made yet: the key, and the worker making it.
    awaiting: FxHashSet<(Key, Rank)>,
}

impl Scheduler {
    /// Answers which workers hold each of `keys` (none for a key without a value).
    pub(super) fn on_who_has(&mut self, from: Rank, id: u64, keys: &[Key]) {
        let holders = keys
            .iter()
            .map(|key| match self.tasks.get(key) {
                Some(Task {
                    state: TaskState::Memory { who_has },
                    ..
                }) => who_has.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let reply = CoordReply::Holders(holders);
        self.send_to_client_of(from, ToClient::Coordinated { id, reply });
    }

    /// Makes each of `keys` held by `n` workers (`None`: all), or by every worker if there
    /// are fewer: the workers holding least get the copies, each fetching from a holder
    /// (holders taken in turn), and the copies stay while the value lives. Workers reserved
    /// for an MPI task are left out: they call MPI from within the task and could not fetch
    /// until it ends. A key without a value refuses the whole request, naming it; nothing
    /// is copied then.
    pub(super) fn on_replicate(&mut self, from: Rank, id: u64, keys: &[Key], n: Option<u32>) {
        let refuse = |this: &mut Self, why: String| {
            let reply = CoordReply::Refused(why);
            this.send_to_client_of(from, ToClient::Coordinated { id, reply });
        };
        if n == Some(0) {
            return refuse(
                self,
                "replicate: n must be at least 1 (None: every worker)".into(),
            );
        }
        let mut candidates: Vec<(u64, Rank)> = self
            .workers
            .iter()
            .filter(|w| w.hello.is_some() && w.mpi.is_none())
            .map(|w| (w.nbytes, w.rank))
            .collect();
        candidates.sort_unstable();
        let mut orders: FxHashMap<Rank, Vec<(Key, Rank)>> = FxHashMap::default();
        let mut awaiting = FxHashSet::default();
        for key in keys {
            let Some(Task {
                state: TaskState::Memory { who_has },
                ..
            }) = self.tasks.get(key).filter(
                |t| matches!(&t.state, TaskState::Memory { who_has } if !who_has.is_empty()),
            )
            else {
                let why = match self.tasks.get(key).map(|t| &t.state) {
                    Some(TaskState::Failed(_)) => "failed or was cancelled",
                    Some(_) => "is not finished",
                    None => "was released",
                };
                let name = self.key_name(*key);
                return refuse(
                    self,
                    format!("replicate: {name} {why}: it has no value to copy"),
                );
            };
            let wanted = n.map_or(usize::MAX, |n| n as usize);
            let mut missing = wanted.saturating_sub(who_has.len());
            let mut source = 0;
            for &(_, worker) in &candidates {
                if missing == 0 {
                    break;
                }
                if who_has.contains(&worker) || awaiting.contains(&(*key, worker)) {
                    continue;
                }
                orders
                    .entry(worker)
                    .or_default()
                    .push((*key, who_has[source % who_has.len()]));
                awaiting.insert((*key, worker));
                source += 1;
                missing -= 1;
            }
        }
        // The copies stay while the value lives, as a broadcast value's do (not freed once
        // the tasks reading them finish).
        for key in keys {
            if let Some(task) = self.tasks.get_mut(key) {
                task.broadcast = true;
            }
        }
        let mut workers: Vec<Rank> = orders.keys().copied().collect();
        workers.sort_unstable();
        for worker in workers {
            let copies = orders.remove(&worker).unwrap_or_default();
            self.outbox
                .push(Output::Worker(worker, ToWorker::CopyFrom(copies)));
        }
        if awaiting.is_empty() {
            let reply = CoordReply::Done;
            self.send_to_client_of(from, ToClient::Coordinated { id, reply });
        } else {
            self.replications.push(Replication {
                requester: from,
                id,
                awaiting,
            });
        }
    }

    /// Worker `from` made (or could not make) its copies of `keys`: answers the requests
    /// that waited only for them.
    pub(super) fn copies_settled(&mut self, from: Rank, keys: &[Key]) {
        if self.replications.is_empty() {
            return;
        }
        let mut finished = Vec::new();
        self.replications.retain_mut(|r| {
            for key in keys {
                r.awaiting.remove(&(*key, from));
            }
            if r.awaiting.is_empty() {
                finished.push((r.requester, r.id));
                false
            } else {
                true
            }
        });
        for (requester, id) in finished {
            let reply = CoordReply::Done;
            self.send_to_client_of(requester, ToClient::Coordinated { id, reply });
        }
    }
}
