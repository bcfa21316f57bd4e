//! Pacing the large arguments the client sends ahead of their tasks to each worker: at
//! most [`WINDOW_BYTES`] of them on their way to (or waiting unread on) one worker at a
//! time.
//!
//! `client.map(f, items)` over large items sends every item ahead to its worker
//! ([`super::Client::send_large_args_direct`]). Sent all at once, they would all wait on
//! the workers in memory new to those processes, each page of it zeroed by the kernel on
//! first touch: on a virtual machine that hands freed memory back to its host, the workers'
//! time went into that more than into the tasks. Paced, a worker gets its next items as its
//! tasks take up the last ones, into the memory they leave (see `crate::allocator`).
//!
//! The worker says which of these values were read ([`ToClient::Received`]): taken up by a
//! task, fetched by another rank, released, or unread for a while (`UNREAD_GRACE`, so a
//! value whose task waits on work held behind it, or that no task reads, never stalls the
//! flow), and not while its threads have a backlog (`WorkerNode::tell_received`); a
//! backlog always drains, so every value is sent in the end. A value alone larger than the
//! window goes when nothing else is on its way to that worker. Other messages, and the
//! values of `client.scatter` (which stay on the worker anyway), are never held.
//!
//! [`ToClient::Received`]: crate::protocol::ToClient::Received

use super::DIRECT_ARG_BYTES;
use crate::protocol::{Key, Rank, ToWorker};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Bytes of large arguments on their way to one worker, or arrived there and not said to
/// be read, at most: the transport's part size ([`crate::config::DEFAULT_PART_BYTES`]),
/// one 8 MB item of the benchmark `futures_large_args` (16 MiB was no faster; see
/// BENCHMARKS.md).
pub(crate) const WINDOW_BYTES: u64 = 8 << 20;

/// Scattered values of this many bytes or more are paced (smaller ones go at once).
pub(crate) const PACED_BYTES: usize = DIRECT_ARG_BYTES;

/// The pacing of the client's scatters, worker by worker.
#[derive(Default)]
pub(crate) struct Flow {
    lanes: FxHashMap<Rank, Lane>,
}

/// What is on its way to one worker, and what waits to go.
#[derive(Default)]
struct Lane {
    /// Values sent and not yet said to have arrived, with their sizes.
    in_flight: FxHashMap<Key, u64>,
    /// Their total.
    bytes: u64,
    /// Messages held, in the order they were offered.
    waiting: VecDeque<ToWorker>,
}

impl Lane {
    /// Whether a value of `bytes` fits in the window (or nothing else is in flight); the
    /// caller checks that nothing waits before it.
    fn fits(&self, bytes: u64) -> bool {
        self.bytes == 0 || self.bytes + bytes <= WINDOW_BYTES
    }

    fn send(&mut self, key: Key, bytes: u64) {
        self.in_flight.insert(key, bytes);
        self.bytes += bytes;
    }
}

/// The key and size of a message that is paced.
fn paced(message: &ToWorker) -> Option<(Key, u64)> {
    match message {
        ToWorker::ScatterData { key, bytes } if bytes.len() >= PACED_BYTES => {
            Some((*key, bytes.len() as u64))
        }
        _ => None,
    }
}

impl Flow {
    /// `message` for `worker` if it may be sent now; else the flow keeps it until
    /// [`received`](Self::received) makes room (`None`).
    pub(crate) fn offer(&mut self, worker: Rank, message: ToWorker) -> Option<ToWorker> {
        let Some((key, bytes)) = paced(&message) else {
            return Some(message);
        };
        let lane = self.lanes.entry(worker).or_default();
        if lane.waiting.is_empty() && lane.fits(bytes) {
            lane.send(key, bytes);
            Some(message)
        } else {
            lane.waiting.push_back(message);
            None
        }
    }

    /// `worker` says the values `keys` arrived: the messages that may now go to it, in
    /// order. Keys the flow did not send there are ignored.
    pub(crate) fn received(&mut self, worker: Rank, keys: &[Key]) -> Vec<ToWorker> {
        let Some(lane) = self.lanes.get_mut(&worker) else {
            return Vec::new();
        };
        for key in keys {
            if let Some(bytes) = lane.in_flight.remove(key) {
                lane.bytes -= bytes;
            }
        }
        let mut go = Vec::new();
        while let Some((key, bytes)) = lane.waiting.front().and_then(paced) {
            if !lane.fits(bytes) {
                break;
            }
            lane.send(key, bytes);
            go.extend(lane.waiting.pop_front());
        }
        go
    }

    /// Messages held for any worker.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lanes.values().map(|l| l.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn scatter(key: u64, bytes: usize) -> ToWorker {
        ToWorker::ScatterData {
            key: Key(key),
            bytes: Arc::new(vec![0u8; bytes].into()),
        }
    }

    fn keys(messages: &[ToWorker]) -> Vec<u64> {
        messages
            .iter()
            .map(|m| paced(m).expect("a paced message").0.0)
            .collect()
    }

    const ITEM: usize = 8 << 20;

    #[test]
    fn a_worker_gets_a_window_of_large_values_and_the_next_as_earlier_ones_arrive() {
        let (w2, w3) = (Rank(2), Rank(3));
        let mut flow = Flow::default();
        let per_window = (WINDOW_BYTES as usize) / ITEM;
        for key in 0..per_window as u64 {
            assert!(flow.offer(w2, scatter(key, ITEM)).is_some(), "{key} goes");
        }
        assert!(
            flow.offer(w2, scatter(100, ITEM)).is_none(),
            "the window is full"
        );
        assert!(flow.offer(w2, scatter(101, ITEM)).is_none());
        // Another worker has a window of its own; small values and other messages go.
        assert!(flow.offer(w3, scatter(200, ITEM)).is_some());
        assert!(flow.offer(w2, scatter(300, PACED_BYTES - 1)).is_some());
        assert!(flow.offer(w2, ToWorker::GetData(vec![Key(0)])).is_some());
        assert_eq!(flow.held(), 2);
        // Keys it did not send there, or sent elsewhere, free nothing.
        assert!(flow.received(w2, &[Key(200), Key(300), Key(77)]).is_empty());
        assert!(flow.received(Rank(9), &[Key(0)]).is_empty());
        // One arrived: one goes, in order.
        assert_eq!(keys(&flow.received(w2, &[Key(0)])), vec![100]);
        // Told twice: nothing more is freed.
        assert!(flow.received(w2, &[Key(0)]).is_empty());
        assert_eq!(keys(&flow.received(w2, &[Key(100)])), vec![101]);
        assert_eq!(flow.held(), 0);
        // Every one arrived: the next goes at once.
        let sent: Vec<Key> = (1..per_window as u64).chain([101]).map(Key).collect();
        assert!(flow.received(w2, &sent).is_empty());
        assert!(flow.offer(w2, scatter(102, ITEM)).is_some());
    }

    #[test]
    fn a_value_larger_than_the_window_goes_when_nothing_else_is_in_flight() {
        let worker = Rank(2);
        let mut flow = Flow::default();
        let huge = WINDOW_BYTES as usize + 1;
        assert!(flow.offer(worker, scatter(1, huge)).is_some());
        assert!(flow.offer(worker, scatter(2, ITEM)).is_none());
        assert!(flow.offer(worker, scatter(3, huge)).is_none());
        assert_eq!(keys(&flow.received(worker, &[Key(1)])), vec![2]);
        // The next waits until the one before it has arrived: it does not fit beside it.
        assert!(flow.offer(worker, scatter(4, ITEM)).is_none(), "behind 3");
        assert_eq!(keys(&flow.received(worker, &[Key(2)])), vec![3]);
        assert_eq!(keys(&flow.received(worker, &[Key(3)])), vec![4]);
    }
}
