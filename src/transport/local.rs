//! The local transport: ranks are threads of one process and frames travel over channels.

use super::{Incoming, Transport};
use crate::protocol::Rank;
use crossbeam_channel::{Receiver, Sender, unbounded};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// One rank's end of an in-process mesh.
pub struct LocalTransport {
    rank: Rank,
    peers: Vec<Sender<Incoming>>,
    inbox: Receiver<Incoming>,
    /// The receiving thread of every rank, woken when a frame is sent to it.
    threads: Arc<Vec<OnceLock<Thread>>>,
}

impl LocalTransport {
    /// A fully connected mesh of `size` ranks; element `i` is rank `i`'s end.
    pub fn mesh(size: usize) -> Vec<LocalTransport> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..size).map(|_| unbounded()).unzip();
        let threads: Arc<Vec<OnceLock<Thread>>> =
            Arc::new((0..size).map(|_| OnceLock::new()).collect());
        receivers
            .into_iter()
            .enumerate()
            .map(|(rank, inbox)| LocalTransport {
                rank: Rank(rank as u32),
                peers: senders.clone(),
                inbox,
                threads: threads.clone(),
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

    fn send(&mut self, to: Rank, frame: Vec<u8>) {
        // A peer thread that already ended drops its inbox; its frames are not needed.
        let _ = self.peers[to.index()].send((self.rank, frame));
        if let Some(thread) = self.threads[to.index()].get() {
            thread.unpark();
        }
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) {
        out.extend(self.inbox.try_iter());
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
        crate::private_dir::remove_all();
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_their_rank_with_the_sender() {
        let mut mesh = LocalTransport::mesh(3);
        mesh[2].send(Rank(0), vec![1, 2]);
        mesh[1].send(Rank(0), vec![3]);
        let mut got = Vec::new();
        mesh[0].receive(&mut got);
        assert_eq!(got, vec![(Rank(2), vec![1, 2]), (Rank(1), vec![3])]);
        assert_eq!(mesh[0].progress(), 0);
    }
}
