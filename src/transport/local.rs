//! The local transport: ranks are threads of one process and frames travel over channels.

use super::{Incoming, Transport};
use crate::protocol::{Frame, Key, Payload, Rank};
use crossbeam_channel::{Receiver, Sender, unbounded};
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

/// One rank's end of an in-process mesh.
pub struct LocalTransport {
    rank: Rank,
    peers: Vec<Sender<Incoming>>,
    inbox: Receiver<Incoming>,
    /// The receiving thread of every rank, woken when a frame is sent to it.
    threads: Arc<Vec<OnceLock<Thread>>>,
    /// Broadcast values, shared by every rank of the mesh, with the receives still due.
    board: Arc<Mutex<FxHashMap<Key, (Payload, usize)>>>,
    /// Broadcasts this rank posted and has not received yet.
    awaited: Vec<Key>,
}

impl LocalTransport {
    /// A fully connected mesh of `size` ranks; element `i` is rank `i`'s end.
    pub fn mesh(size: usize) -> Vec<LocalTransport> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..size).map(|_| unbounded()).unzip();
        let threads: Arc<Vec<OnceLock<Thread>>> =
            Arc::new((0..size).map(|_| OnceLock::new()).collect());
        let board = Arc::new(Mutex::new(FxHashMap::default()));
        receivers
            .into_iter()
            .enumerate()
            .map(|(rank, inbox)| LocalTransport {
                rank: Rank(rank as u32),
                peers: senders.clone(),
                inbox,
                threads: threads.clone(),
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

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, to: Rank, frame: Frame) {
        // A peer thread that already ended drops its inbox; its frames are not needed.
        let _ = self.peers[to.index()].send(Incoming {
            from: self.rank,
            frame: frame.bytes,
            attachments: frame.attachments,
        });
        if let Some(thread) = self.threads[to.index()].get() {
            thread.unpark();
        }
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) {
        out.extend(self.inbox.try_iter());
    }

    fn progress(&mut self) -> usize {
        self.awaited.len()
    }

    fn broadcast_send(&mut self, key: Key, value: Payload) {
        // Workers are ranks 2 and up; all but this one receive.
        let receivers = self.peers.len().saturating_sub(3);
        if receivers > 0 {
            let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            board.insert(key, (value, receivers));
        }
        for rank in 2..self.peers.len() {
            if let Some(thread) = self.threads[rank].get() {
                thread.unpark();
            }
        }
    }

    fn broadcast_receive(&mut self, _root: Rank, key: Key, _len: usize) {
        self.awaited.push(key);
    }

    fn received_broadcasts(&mut self, out: &mut Vec<(Key, Payload)>) {
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

    fn attach_current_thread(&mut self) {
        let _ = self.threads[self.rank.index()].set(std::thread::current());
    }

    fn wakes_receiver(&self) -> bool {
        true
    }

    fn abort(&mut self, code: i32) -> ! {
        log::error!("aborting the job with exit code {code}");
        crate::private_dir::remove_all();
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_their_rank_with_the_sender() {
        let frame = |bytes: Vec<u8>| Frame {
            bytes,
            attachments: vec![std::sync::Arc::new(vec![9; 3])],
        };
        let mut mesh = LocalTransport::mesh(3);
        mesh[2].send(Rank(0), frame(vec![1, 2]));
        mesh[1].send(Rank(0), frame(vec![3]));
        let mut got = Vec::new();
        mesh[0].receive(&mut got);
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
}
