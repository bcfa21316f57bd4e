//! [`Future`]: a handle on the result of a task, and [`AsCompleted`].

use super::Shared;
use crate::error::Result;
use crate::protocol::Key;
use crossbeam_channel::{Receiver, Sender, unbounded};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

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

/// A future's key held without keeping it alive: [`WeakKey::upgrade`] gives a future again
/// while a clone of the future lives (the table of pure tasks).
pub(super) struct WeakKey(Weak<Handle>);

impl WeakKey {
    /// A future of the key, if a clone of its future still lives.
    pub(super) fn upgrade<T>(&self) -> Option<Future<T>> {
        self.0.upgrade().map(|handle| Future {
            handle,
            _value: PhantomData,
        })
    }

    /// Whether a clone of the future still lives.
    pub(super) fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl<T> Future<T> {
    pub(crate) fn new(key: Key, shared: Arc<Shared>) -> Self {
        Future {
            handle: Arc::new(Handle { key, shared }),
            _value: PhantomData,
        }
    }

    /// This future's key, not kept alive.
    pub(super) fn weak(&self) -> WeakKey {
        WeakKey(Arc::downgrade(&self.handle))
    }

    /// The client's table this future's key is in.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
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

/// Futures in the order they finish; see [`crate::Client::as_completed`]. More can be
/// added while iterating ([`add`](Self::add)); [`next_batch`](Self::next_batch) takes all
/// those finished at once, and [`with_results`](Self::with_results) yields each with its
/// result.
pub struct AsCompleted<T> {
    shared: Arc<Shared>,
    finished: Receiver<Key>,
    sender: Sender<Key>,
    waiting: FxHashMap<Key, Vec<Future<T>>>,
    remaining: usize,
}

impl<T> AsCompleted<T> {
    pub(crate) fn new(shared: &Arc<Shared>, futures: &[Future<T>]) -> Self {
        let (sender, finished) = unbounded();
        let mut this = AsCompleted {
            shared: shared.clone(),
            finished,
            sender,
            waiting: FxHashMap::default(),
            remaining: 0,
        };
        for future in futures {
            this.add(future.clone());
        }
        this
    }

    /// Adds `future` to those waited for, also while iterating (Dask's
    /// `as_completed.add`).
    ///
    /// ```
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let mut seq = client.as_completed(&[client.submit(inc, 0)]);
    ///     let mut seen = vec![];
    ///     while let Some(future) = seq.next() {
    ///         let x = future.result().unwrap();
    ///         seen.push(x);
    ///         if x < 3 {
    ///             seq.add(client.submit(inc, x)); // more work found while iterating
    ///         }
    ///     }
    ///     assert_eq!(seen, vec![1, 2, 3]);
    /// });
    /// ```
    pub fn add(&mut self, future: Future<T>) {
        let key = future.key();
        self.remaining += 1;
        let listed = self.waiting.entry(key).or_default();
        listed.push(future);
        if listed.len() > 1 {
            return;
        }
        match self.shared.lock().keys.get_mut(&key) {
            Some(entry) if !entry.status.is_final() => entry.watchers.push(self.sender.clone()),
            _ => {
                let _ = self.sender.send(key);
            }
        }
    }

    /// How many futures have not come out yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next finished futures: waits for one, then takes every other one finished by
    /// then (Dask's `as_completed(...).batches()`); `None` once all have come out.
    ///
    /// ```
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.map(inc, 0..10u64);
    ///     let mut seq = client.as_completed(&futures);
    ///     let mut total = 0;
    ///     while let Some(batch) = seq.next_batch() {
    ///         total += client.gather(&batch).unwrap().iter().sum::<u64>();
    ///     }
    ///     assert_eq!(total, 55);
    /// });
    /// ```
    pub fn next_batch(&mut self) -> Option<Vec<Future<T>>> {
        let mut batch = vec![self.next()?];
        while self.remaining > 0 {
            match self.finished.try_recv() {
                Ok(key) => batch.extend(self.take(key)),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Each future with its result as it finishes (Dask's
    /// `as_completed(..., with_results=True)`).
    ///
    /// ```
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.map(inc, 0..4u64);
    ///     let total: u64 = client
    ///         .as_completed(&futures)
    ///         .with_results()
    ///         .map(|(_future, result)| result.unwrap())
    ///         .sum();
    ///     assert_eq!(total, 10);
    /// });
    /// ```
    pub fn with_results(self) -> WithResults<T> {
        WithResults(self)
    }

    /// The future listed for `key`, which has come out.
    fn take(&mut self, key: Key) -> Option<Future<T>> {
        let listed = self.waiting.get_mut(&key)?;
        let future = listed.pop()?;
        if listed.is_empty() {
            self.waiting.remove(&key);
        } else {
            // The same future was listed again: it comes out again right away.
            let _ = self.sender.send(key);
        }
        self.remaining -= 1;
        Some(future)
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Future<T>;

    fn next(&mut self) -> Option<Future<T>> {
        while self.remaining > 0 {
            let key = crate::worker::executor::seceded(|| self.finished.recv()).ok()?;
            if let Some(future) = self.take(key) {
                return Some(future);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Futures with their results in the order they finish; see
/// [`AsCompleted::with_results`].
pub struct WithResults<T>(AsCompleted<T>);

impl<T> WithResults<T> {
    /// Adds `future` to those waited for, also while iterating.
    pub fn add(&mut self, future: Future<T>) {
        self.0.add(future);
    }
}

impl<T: DeserializeOwned + 'static> Iterator for WithResults<T> {
    type Item = (Future<T>, Result<T>);

    fn next(&mut self) -> Option<Self::Item> {
        let future = self.0.next()?;
        let result = future.result();
        Some((future, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}
