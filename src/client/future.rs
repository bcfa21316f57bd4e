//! [`Future`]: a handle on the result of a task, and [`AsCompleted`].

use super::Shared;
use crate::error::Result;
use crate::protocol::Key;
use crossbeam_channel::{Receiver, Sender, unbounded};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Owns one key on behalf of all clones of a future; dropping the last clone tells the
/// scheduler the client no longer needs the key (an unfinished task nobody needs is
/// cancelled, a value nobody needs is freed).
struct Handle {
    key: Key,
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.release(self.key);
    }
}

/// The eventual result of a task (or of a scattered value) of type `T`.
///
/// Clone it freely; pass it (or `&future`) as an argument of another task to make that task
/// depend on it.
pub struct Future<T> {
    handle: Arc<Handle>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future {
            handle: self.handle.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Future({})", self.handle.key)
    }
}

impl<T> Future<T> {
    pub(crate) fn new(key: Key, shared: Arc<Shared>) -> Self {
        Future {
            handle: Arc::new(Handle { key, shared }),
            _value: PhantomData,
        }
    }

    /// The task's key.
    pub fn key(&self) -> Key {
        self.handle.key
    }

    /// A readable form of the key, e.g. `count_hits-17`.
    pub fn name(&self) -> String {
        self.handle.shared.lock().key_name(self.key())
    }

    /// The same future without its value type (keeps the key alive).
    pub(crate) fn erase(self) -> Future<()> {
        self.retype()
    }

    /// The same future, read as another type (the caller knows the encoding matches).
    pub(crate) fn retype<U>(self) -> Future<U> {
        Future {
            handle: self.handle,
            _value: PhantomData,
        }
    }

    /// `true` once the task finished, failed or was cancelled.
    pub fn done(&self) -> bool {
        self.handle
            .shared
            .lock()
            .keys
            .get(&self.key())
            .is_some_and(|e| e.status.is_final())
    }

    /// Cancels the task and the tasks that depend on it.
    pub fn cancel(&self) {
        self.handle.shared.send(super::Command::Scheduler(
            crate::protocol::ToScheduler::CancelKeys(vec![self.key()]),
        ));
    }
}

impl<T: DeserializeOwned + 'static> Future<T> {
    /// Waits for the task and returns its value, fetched from the worker holding it.
    ///
    /// A task that panicked or returned `Err` (or depends on one that did) gives
    /// [`Error::Task`](crate::Error::Task); a cancelled one gives
    /// [`Error::Cancelled`](crate::Error::Cancelled).
    pub fn result(&self) -> Result<T> {
        crate::Client::new(self.handle.shared.clone())
            .gather(std::slice::from_ref(self))
            .map(|mut values| values.pop().expect("one value"))
    }
}

/// Futures in the order they finish; see [`crate::Client::as_completed`].
pub struct AsCompleted<T> {
    finished: Receiver<Key>,
    requeue: Sender<Key>,
    waiting: FxHashMap<Key, Vec<Future<T>>>,
    remaining: usize,
}

impl<T> AsCompleted<T> {
    pub(crate) fn new(shared: &Arc<Shared>, futures: &[Future<T>]) -> Self {
        let (sender, finished) = unbounded();
        let mut waiting: FxHashMap<Key, Vec<Future<T>>> = FxHashMap::default();
        let mut state = shared.lock();
        for future in futures {
            let key = future.key();
            let listed = waiting.entry(key).or_default();
            listed.push(future.clone());
            if listed.len() > 1 {
                continue;
            }
            match state.keys.get_mut(&key) {
                Some(entry) if !entry.status.is_final() => entry.watchers.push(sender.clone()),
                _ => {
                    let _ = sender.send(key);
                }
            }
        }
        AsCompleted {
            finished,
            requeue: sender,
            waiting,
            remaining: futures.len(),
        }
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        if self.remaining == 0 {
            return None;
        }
        let key = self.finished.recv().ok()?;
        let listed = self.waiting.get_mut(&key)?;
        let future = listed.pop()?;
        if listed.is_empty() {
            self.waiting.remove(&key);
        } else {
            // The same future was listed again: it comes out again right away.
            let _ = self.requeue.send(key);
        }
        self.remaining -= 1;
        Some(future)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
