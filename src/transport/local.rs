//! The local transport: ranks are threads of one process, frames travel over channels, and
//! a broadcast is one shared value that every member of the group takes a handle of.

use super::{Collectives, Incoming, Malformed, Transport};
use crate::protocol::{Frame, Key, Payload, Rank};
use crossbeam_channel::{Receiver, Sender, unbounded};
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

/// The receiving thread of every rank of a mesh, woken when something arrives for it.
type Threads = Arc<Vec<OnceLock<Thread>>>;

fn wake(threads: &Threads, rank: Rank) {
    if let Some(thread) = threads.get(rank.index()).and_then(OnceLock::get) {
        thread.unpark();
    }
}

/// One rank's end of an in-process mesh.
pub struct LocalTransport {
    rank: Rank,
    peers: Vec<Sender<Incoming>>,
    inbox: Receiver<Incoming>,
    threads: Threads,
}

impl LocalTransport {
    /// A fully connected mesh of `size` ranks; element `i` is rank `i`'s end.
    pub fn mesh(size: usize) -> Vec<LocalTransport> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..size).map(|_| unbounded()).unzip();
        let threads: Threads = Arc::new((0..size).map(|_| OnceLock::new()).collect());
        receivers
            .into_iter()
            .zip(0u32..)
            .map(|(inbox, rank)| LocalTransport {
                rank: Rank(rank),
                peers: senders.clone(),
                inbox,
                threads: threads.clone(),
            })
            .collect()
    }

    /// The collectives of a group of ranks of this mesh: one object per member, in the
    /// order of `members`.
    pub fn group(&self, members: &[Rank]) -> Vec<LocalCollectives> {
        let board = Arc::new(Mutex::new(FxHashMap::default()));
        members
            .iter()
            .map(|&rank| LocalCollectives {
                rank,
                members: members.to_vec(),
                threads: self.threads.clone(),
                board: board.clone(),
                awaited: Vec::new(),
            })
            .collect()
    }
}

impl Transport for LocalTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn send(&mut self, to: Rank, frame: Frame) {
        // A peer thread that already ended drops its inbox; its frames are not needed.
        if let Some(peer) = self.peers.get(to.index()) {
            let _ = peer.send(Incoming {
                from: self.rank,
                frame: frame.bytes,
                attachments: frame.attachments,
            });
        }
        wake(&self.threads, to);
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        out.extend(self.inbox.try_iter());
        Ok(())
    }

    fn progress(&mut self) -> usize {
        0
    }

    fn attach_current_thread(&mut self) {
        let _ = self.threads[self.rank.index()].set(std::thread::current());
    }

    fn wakes_receiver(&self) -> bool {
        true
    }

    fn abort(&mut self, code: i32) -> ! {
        log::error!("aborting the job with exit code {code}");
        std::process::exit(code)
    }
}

/// Broadcast values of one group, with the receives still due for each.
type Board = Arc<Mutex<FxHashMap<Key, (Payload, usize)>>>;

/// One member's collectives over a group of ranks of a local mesh.
pub struct LocalCollectives {
    rank: Rank,
    members: Vec<Rank>,
    threads: Threads,
    board: Board,
    /// Broadcasts this member posted and has not received yet.
    awaited: Vec<Key>,
}

impl Collectives for LocalCollectives {
    fn broadcast_send(&mut self, key: Key, value: Payload) {
        let receivers = self.members.len().saturating_sub(1);
        if receivers > 0 {
            let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            board.insert(key, (value, receivers));
        }
        for &member in self.members.iter().filter(|m| **m != self.rank) {
            wake(&self.threads, member);
        }
    }

    fn broadcast_receive(&mut self, root: Rank, key: Key, _len: usize) -> Result<(), String> {
        if !self.members.contains(&root) {
            return Err(format!(
                "a broadcast from {root}, which is not in the group of {}",
                self.rank
            ));
        }
        self.awaited.push(key);
        Ok(())
    }

    fn lends_communicators(&self) -> bool {
        false
    }

    fn run_with_communicator(
        &mut self,
        _members: &[Rank],
        _task: Box<dyn FnOnce(&super::MpiComm) + Send + '_>,
    ) -> Result<(), String> {
        Err(
            "MPI tasks need workers that are MPI processes (a job started by mpirun or srun); \
             the workers of local mode are threads"
                .to_string(),
        )
    }

    fn progress(&mut self) -> usize {
        self.awaited.len()
    }

    fn received(&mut self, out: &mut Vec<(Key, Payload)>) {
        if self.awaited.is_empty() {
            return;
        }
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        self.awaited.retain(|key| {
            let Some((value, remaining)) = board.get_mut(key) else {
                return true;
            };
            out.push((*key, value.clone()));
            *remaining -= 1;
            if *remaining == 0 {
                board.remove(key);
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_their_rank_with_the_sender() {
        let frame = |bytes: Vec<u8>| Frame {
            bytes,
            attachments: vec![Arc::new(vec![9; 3].into())],
        };
        let mut mesh = LocalTransport::mesh(3);
        mesh[2].send(Rank(0), frame(vec![1, 2]));
        mesh[1].send(Rank(0), frame(vec![3]));
        let mut got = Vec::new();
        mesh[0].receive(&mut got).unwrap();
        let summary: Vec<(Rank, Vec<u8>, usize)> = got
            .into_iter()
            .map(|i| (i.from, i.frame, i.attachments.len()))
            .collect();
        assert_eq!(
            summary,
            vec![(Rank(2), vec![1, 2], 1), (Rank(1), vec![3], 1)]
        );
        assert_eq!(mesh[0].progress(), 0);
    }

    #[test]
    fn a_broadcast_reaches_every_other_member_of_the_group() {
        let mesh = LocalTransport::mesh(5);
        let members = [Rank(2), Rank(3), Rank(4)];
        let mut group = mesh[0].group(&members);
        let value: Payload = Arc::new(vec![7; 10].into());
        for member in &mut group[1..] {
            member.broadcast_receive(Rank(2), Key(1), 10).unwrap();
        }
        assert!(group[1].broadcast_receive(Rank(1), Key(2), 10).is_err());
        group[0].broadcast_send(Key(1), value.clone());
        for member in &mut group[1..] {
            let mut got = Vec::new();
            member.received(&mut got);
            assert_eq!(got, vec![(Key(1), value.clone())]);
            assert_eq!(member.progress(), 0);
        }
    }
}
