//! Local events for a rank's communication thread (client commands, task outcomes, disk
//! I/O results): a channel whose sender also wakes that thread if it sleeps.

use crossbeam_channel::{Receiver, Sender};

/// The sending end of a rank's local events: sending also wakes the rank's communication
/// thread if it sleeps.
pub struct EventSender<E> {
    channel: Sender<E>,
    comm_thread: std::thread::Thread,
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        EventSender {
            channel: self.channel.clone(),
            comm_thread: self.comm_thread.clone(),
        }
    }
}

impl<E> EventSender<E> {
    /// Sends `event` and wakes the communication thread. An event sent after that thread
    /// ended is dropped (the rank is exiting).
    pub fn send(&self, event: E) {
        let _ = self.channel.send(event);
        self.comm_thread.unpark();
    }
}

/// A channel of local events for the calling thread, which must be the one that will run
/// [`drive`](super::drive) with the receiver.
pub fn event_channel<E>() -> (EventSender<E>, Receiver<E>) {
    let (channel, receiver) = crossbeam_channel::unbounded();
    let sender = EventSender {
        channel,
        comm_thread: std::thread::current(),
    };
    (sender, receiver)
}
