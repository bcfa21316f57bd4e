//! Where the job's ranks run ([`Placement`]), and the transport of a worker hosted in
//! another rank's process (`--worker-on-client`, `--worker-on-scheduler`): its node runs on
//! a thread of its own and its frames go through the host's communication thread, the only
//! thread of the process that calls MPI.

use super::{Incoming, Malformed, Transport};
use crate::protocol::{Frame, Rank};
use crossbeam_channel::{Receiver, Sender, TryRecvError, unbounded};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// Where each rank of a job runs. Process `p` of the launch runs rank `p`; a hosted worker
/// runs in the process of its host and has a rank past the processes' (the first hosted
/// worker is rank `processes`, the next `processes + 1`). A process hosts one worker at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    processes: usize,
    hosts: Vec<Rank>,
}

/// A rank's place: its process and its slot there (0: the process's own rank, 1: the
/// worker it hosts).
pub(crate) type Slot = (usize, usize);

impl Placement {
    /// A job of `processes` processes, whose processes `hosts` (in this order) each host one
    /// worker; `Err` names a host outside the job or given twice.
    pub fn new(processes: usize, hosts: Vec<Rank>) -> Result<Self, String> {
        for (i, host) in hosts.iter().enumerate() {
            if host.index() >= processes {
                return Err(format!(
                    "{host} cannot host a worker in a job of {processes}"
                ));
            }
            if hosts[..i].contains(host) {
                return Err(format!("{host} is asked to host two workers"));
            }
        }
        Ok(Placement { processes, hosts })
    }

    /// The processes of the launch.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The workers hosted in other ranks' processes, in rank order.
    pub fn hosted_workers(&self) -> Vec<Rank> {
        (0..self.hosts.len())
            .map(|i| self.rank_of_hosted(i))
            .collect()
    }

    fn rank_of_hosted(&self, i: usize) -> Rank {
        Rank(u32::try_from(self.processes + i).expect("ranks fit in u32"))
    }

    /// The worker hosted by process `host`, if any.
    pub fn hosted_by(&self, host: Rank) -> Option<Rank> {
        let i = self.hosts.iter().position(|h| *h == host)?;
        Some(self.rank_of_hosted(i))
    }

    /// Where `rank` runs, if it is a rank of the job.
    pub(crate) fn slot(&self, rank: Rank) -> Option<Slot> {
        let index = rank.index();
        if index < self.processes {
            return Some((index, 0));
        }
        let host = self.hosts.get(index - self.processes)?;
        Some((host.index(), 1))
    }

    /// The rank at `slot`, if one runs there.
    pub(crate) fn rank_at(&self, (process, slot): Slot) -> Option<Rank> {
        match slot {
            0 if process < self.processes => Some(Rank(u32::try_from(process).ok()?)),
            1 => self
                .hosted_by(Rank(u32::try_from(process).ok()?))
                .filter(|_| process < self.processes),
            _ => None,
        }
    }
}

/// What a hosted worker hands to its host's communication thread.
pub(crate) enum Outgoing {
    /// Send this frame to this rank.
    Frame(Rank, Frame),
    /// End the job with this exit code.
    Abort(i32),
}

/// The threads that poll each end: the host's communication thread, the hosted worker's.
type EndThreads = Arc<[OnceLock<Thread>; 2]>;

fn wake(threads: &EndThreads, end: usize) {
    if let Some(thread) = threads[end].get() {
        thread.unpark();
    }
}

/// The host's end of the link to the worker it hosts.
pub(crate) struct Link {
    /// The hosted worker's rank.
    pub(crate) rank: Rank,
    inbox: Sender<Incoming>,
    outgoing: Receiver<Outgoing>,
    threads: EndThreads,
}

impl Link {
    /// Hands a frame to the hosted worker (dropped if its node has ended: nothing it would
    /// do with it matters any more).
    pub(crate) fn deliver(&self, incoming: Incoming) {
        let _ = self.inbox.send(incoming);
        wake(&self.threads, 1);
    }

    /// The next thing the hosted worker handed over; `Err(Disconnected)` once its node
    /// has ended and everything it sent was taken.
    pub(crate) fn next(&self) -> Result<Outgoing, TryRecvError> {
        self.outgoing.try_recv()
    }

    /// Declares the calling thread as the host's communication thread, which the hosted
    /// worker wakes when it hands over a frame.
    pub(crate) fn attach_host_thread(&self) {
        let _ = self.threads[0].set(std::thread::current());
    }
}

/// The transport of a worker hosted in another rank's process: frames go to and come from
/// the host's communication thread over channels.
pub struct HostedTransport {
    rank: Rank,
    inbox: Receiver<Incoming>,
    outgoing: Sender<Outgoing>,
    threads: EndThreads,
}

/// A link between a host and the worker `rank` it hosts.
pub(crate) fn link(rank: Rank) -> (Link, HostedTransport) {
    let (inbox_sender, inbox) = unbounded();
    let (outgoing, outgoing_receiver) = unbounded();
    let threads: EndThreads = Arc::new([OnceLock::new(), OnceLock::new()]);
    (
        Link {
            rank,
            inbox: inbox_sender,
            outgoing: outgoing_receiver,
            threads: threads.clone(),
        },
        HostedTransport {
            rank,
            inbox,
            outgoing,
            threads,
        },
    )
}

/// How long a hosted worker that asked its host to end the job waits for it before it
/// ends its own process.
const ABORT_WAIT: Duration = Duration::from_secs(30);

impl Transport for HostedTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn send(&mut self, to: Rank, frame: Frame) {
        // A host whose loop has ended drops the link; nothing sent then matters any more.
        let _ = self.outgoing.send(Outgoing::Frame(to, frame));
        wake(&self.threads, 0);
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) -> Result<(), Malformed> {
        out.extend(self.inbox.try_iter());
        Ok(())
    }

    fn progress(&mut self) -> usize {
        // The host sends what was handed over, in order, after what came before it.
        0
    }

    fn attach_current_thread(&mut self) {
        let _ = self.threads[1].set(std::thread::current());
    }

    fn wakes_receiver(&self) -> bool {
        true
    }

    fn abort(&mut self, code: i32) -> ! {
        // Only the host's communication thread may call MPI: it ends the job.
        let _ = self.outgoing.send(Outgoing::Abort(code));
        wake(&self.threads, 0);
        std::thread::sleep(ABORT_WAIT);
        log::error!("the host of {} did not end the job; exiting", self.rank);
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_workers_come_after_the_processes() {
        let placement = Placement::new(3, vec![Rank::CLIENT, Rank::SCHEDULER]).unwrap();
        assert_eq!(placement.hosted_workers(), vec![Rank(3), Rank(4)]);
        assert_eq!(placement.hosted_by(Rank::CLIENT), Some(Rank(3)));
        assert_eq!(placement.hosted_by(Rank(2)), None);
        assert_eq!(placement.slot(Rank(2)), Some((2, 0)));
        assert_eq!(placement.slot(Rank(3)), Some((1, 1)));
        assert_eq!(placement.slot(Rank(4)), Some((0, 1)));
        assert_eq!(placement.slot(Rank(5)), None);
        for rank in 0..5 {
            let slot = placement.slot(Rank(rank)).unwrap();
            assert_eq!(placement.rank_at(slot), Some(Rank(rank)));
        }
        assert_eq!(placement.rank_at((2, 1)), None);
        assert_eq!(placement.rank_at((3, 0)), None);
        assert_eq!(placement.rank_at((0, 2)), None);
        assert!(Placement::new(2, vec![Rank(2)]).is_err());
        assert!(Placement::new(2, vec![Rank(1), Rank(1)]).is_err());
    }

    #[test]
    fn frames_cross_the_link_both_ways() {
        let (link, mut hosted) = link(Rank(3));
        link.deliver(Incoming {
            from: Rank(0),
            frame: vec![1],
            attachments: Vec::new(),
        });
        let mut got = Vec::new();
        hosted.receive(&mut got).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, Rank(0));
        hosted.send(
            Rank(2),
            Frame {
                bytes: vec![2],
                attachments: Vec::new(),
            },
        );
        match link.next() {
            Ok(Outgoing::Frame(to, frame)) => {
                assert_eq!(to, Rank(2));
                assert_eq!(frame.bytes, vec![2]);
            }
            _ => panic!("expected the frame"),
        }
        assert!(matches!(link.next(), Err(TryRecvError::Empty)));
        drop(hosted);
        assert!(matches!(link.next(), Err(TryRecvError::Disconnected)));
    }
}
