//! Waits with limits and errors without values, as in Dask's futures API: `wait` with a
//! timeout and a first-completed mode, a future's result within a time limit, its error
//! without its value, a gather that skips failed futures, and `fire_and_forget`.

use super::{Client, Future, Shared, Sleeper, State, Status};
use crate::error::{Error, Result};
use crate::protocol::Key;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// When [`Client::wait_with`] returns (Dask's `return_when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// Once every future has finished (Dask's `ALL_COMPLETED`).
    #[default]
    AllCompleted,
    /// Once any future has finished (Dask's `FIRST_COMPLETED`).
    FirstCompleted,
}

/// The futures of a [`Client::wait_with`], split (Dask's `DoneAndNotDoneFutures`), each
/// part in the order given.
#[derive(Debug)]
pub struct DoneAndNotDone<T> {
    /// The futures that finished: with a value, an error or a cancellation.
    pub done: Vec<Future<T>>,
    /// The others.
    pub not_done: Vec<Future<T>>,
}

/// What a future's task has come to (Dask's `Future.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutureStatus {
    /// Not finished yet.
    Pending,
    /// Finished with a value.
    Finished,
    /// Failed: it (or a task it depends on) panicked or returned `Err`.
    Error,
    /// Cancelled (or a task it depends on was).
    Cancelled,
}

/// The deadline of a wait of `timeout` from now; `None` waits without limit. A timeout of
/// zero is an error: it could only ever time out.
pub(super) fn deadline(timeout: Option<Duration>) -> Result<Option<Instant>> {
    match timeout {
        Some(t) if t.is_zero() => Err(Error::Config(
            "a timeout of 0 s can only time out: give a positive duration, or None to wait \
             without a limit"
                .into(),
        )),
        Some(t) => Ok(Some(Instant::now() + t)),
        None => Ok(None),
    }
}

/// The error of a wait of `timeout` that ran out.
pub(super) fn timed_out(timeout: Option<Duration>, what: String) -> Error {
    Error::Timeout {
        seconds: timeout.map_or(0.0, |t| t.as_secs_f64()),
        what,
    }
}

/// What a wait on one key at a time ([`Shared::wait_on_key_until`]) still waits for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Awaiting {
    /// The key's outcome: a value computed, a failure or a cancellation.
    Outcome(Key),
    /// The key's value itself (or its failure): its outcome alone does not wake the wait.
    Value(Key),
}

/// `true` once `key` has finished (or is no longer known to the client, as a released key).
fn finished(state: &State, key: Key) -> bool {
    state.keys.get(&key).is_none_or(|e| e.status.is_final())
}

impl Shared {
    /// Waits until `ready` returns `Some` (or the runtime stops) until `deadline`: `Ok(None)`
    /// once it passes. In a task (a task client's wait) the task's thread is given back to
    /// its worker meanwhile, so the tasks waited for can run there.
    pub(super) fn wait_for_until<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut state = self.lock();
        if let Some(value) = ready(&mut state) {
            return Ok(Some(value));
        }
        drop(state);
        crate::worker::executor::seceded(|| {
            let mut state = self.lock();
            loop {
                if let Some(value) = ready(&mut state) {
                    return Ok(Some(value));
                }
                if state.stopped {
                    return Err(Error::ShuttingDown);
                }
                state = match deadline {
                    None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok(None);
                        }
                        self.changed
                            .wait_timeout(state, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        })
    }

    /// [`Shared::wait_for_until`] for a condition that waits on one key at a time: `ready`
    /// returns the value, or what it waits for. In a task, the thread sleeps until a
    /// message about that key arrives (not on every change of the table, which would wake
    /// every waiting task each round), and a wait for a value until the value arrives (its
    /// `KeyDone` would wake it for nothing: the value is only asked for then); elsewhere
    /// it waits as `wait_for_until` does.
    pub(super) fn wait_on_key_until<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut State) -> std::result::Result<T, Awaiting>,
    ) -> Result<Option<T>> {
        if crate::worker::executor::current_priority().is_none() {
            return self.wait_for_until(deadline, |state| ready(state).ok());
        }
        let awaited = match ready(&mut self.lock()) {
            Ok(value) => return Ok(Some(value)),
            Err(Awaiting::Outcome(key) | Awaiting::Value(key)) => key,
        };
        let me = std::thread::current();
        crate::worker::executor::seceded_awaiting(Some(awaited), deadline, || {
            loop {
                let mut state = self.lock();
                let (key, for_value) = match ready(&mut state) {
                    Ok(value) => return Ok(Some(value)),
                    Err(Awaiting::Outcome(key)) => (key, false),
                    Err(Awaiting::Value(key)) => (key, true),
                };
                if state.stopped {
                    return Err(Error::ShuttingDown);
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Ok(None);
                }
                state.sleepers.entry(key).or_default().push(Sleeper {
                    thread: me.clone(),
                    for_value,
                });
                drop(state);
                // The task of `key` may come to this very worker: this thread runs it then.
                let value = crate::worker::executor::wait_for_task(key, deadline);
                let mut state = self.lock();
                if let Some(sleepers) = state.sleepers.get_mut(&key) {
                    sleepers.retain(|s| s.thread.id() != me.id());
                    if sleepers.is_empty() {
                        state.sleepers.remove(&key);
                    }
                }
                if let (Some(value), Some(rank)) = (value, self.hosted) {
                    // Its value is here now, before the scheduler says it is done (which
                    // then asks for nothing).
                    if let Some(entry) = state.keys.get_mut(&key)
                        && entry.data.is_none()
                        && matches!(entry.status, Status::Pending | Status::Done(_))
                    {
                        entry.data = Some(value);
                        state.set_status(key, Status::Done(rank));
                    }
                }
            }
        })
    }

    /// Waits until no task given to [`Client::fire_and_forget`] is running (or the job
    /// stops).
    pub(crate) fn wait_forgotten(&self) {
        let _ = self.wait_for(|state| (state.forgotten_running == 0).then_some(()));
    }
}

impl Client {
    /// Waits for `futures` as Dask's `wait(futures, timeout, return_when)`: until all of them
    /// (or, with [`ReturnWhen::FirstCompleted`], any of them) have finished, and splits
    /// them into those done and those not. Past `timeout` (`None`: no limit) it gives
    /// [`Error::Timeout`]; a timeout of zero is an error.
    ///
    /// ```
    /// use mpidask::{ReturnWhen, Error};
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.map(nap, [1u64, 3_000]);
    ///     let first = client.wait_with(&futures, None, ReturnWhen::FirstCompleted).unwrap();
    ///     assert_eq!(first.done[0].key(), futures[0].key());
    ///     let late = client.wait_with(&futures, Some(Duration::from_millis(50)), ReturnWhen::AllCompleted);
    ///     assert!(matches!(late, Err(Error::Timeout { .. })));
    /// # client.cancel(&futures);
    /// });
    /// ```
    pub fn wait_with<T>(
        &self,
        futures: &[Future<T>],
        timeout: Option<Duration>,
        return_when: ReturnWhen,
    ) -> Result<DoneAndNotDone<T>> {
        let until = deadline(timeout)?;
        let enough = |state: &mut State| {
            let done = futures.iter().filter(|f| finished(state, f.key())).count();
            let enough = match return_when {
                ReturnWhen::AllCompleted => done == futures.len(),
                ReturnWhen::FirstCompleted => done > 0 || futures.is_empty(),
            };
            enough.then(|| {
                let (done, not_done): (Vec<_>, Vec<_>) = futures
                    .iter()
                    .cloned()
                    .partition(|f| finished(state, f.key()));
                DoneAndNotDone { done, not_done }
            })
        };
        self.shared.wait_for_until(until, enough)?.ok_or_else(|| {
            let what = match return_when {
                ReturnWhen::AllCompleted => format!("all of {} futures", futures.len()),
                ReturnWhen::FirstCompleted => format!("any of {} futures", futures.len()),
            };
            timed_out(timeout, what)
        })
    }

    /// The values of the futures that finished with one, in order, skipping those that
    /// failed or were cancelled (Dask's `gather(futures, errors="skip")`).
    ///
    /// ```
    /// fn half(x: u32) -> Result<u32, String> {
    ///     if x.is_multiple_of(2) { Ok(x / 2) } else { Err(format!("{x} is odd")) }
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.try_map(half, 0..5u32);
    ///     assert_eq!(client.gather_skipping_errors(&futures).unwrap(), vec![0, 1, 2]);
    /// });
    /// ```
    pub fn gather_skipping_errors<T: DeserializeOwned + 'static>(
        &self,
        futures: &[Future<T>],
    ) -> Result<Vec<T>> {
        let keys: Vec<Key> = futures.iter().map(Future::key).collect();
        let payloads = self.fetch(&keys, None, true)?;
        keys.iter()
            .zip(payloads)
            .filter_map(|(key, bytes)| bytes.map(|bytes| (key, bytes)))
            .map(|(key, bytes)| self.decode_value(*key, &bytes))
            .collect()
    }

    /// Lets the tasks of `futures` run to the end even when every handle on them has been
    /// dropped (Dask's `fire_and_forget`): their values are released once they finish, and
    /// a program that returns normally waits for them before the job ends.
    ///
    /// ```
    /// fn touch(path: String) { std::fs::write(path, "done").unwrap(); }
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("touched").display().to_string();
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     client.fire_and_forget(&[client.submit(touch, path.clone())]);
    /// });
    /// assert_eq!(std::fs::read_to_string(&path).unwrap(), "done");
    /// ```
    pub fn fire_and_forget<T>(&self, futures: &[Future<T>]) {
        let mut state = self.shared.lock();
        for future in futures {
            if let Some(entry) = state.keys.get_mut(&future.key())
                && !entry.forgotten
                && !entry.status.is_final()
            {
                entry.forgotten = true;
                state.forgotten_running += 1;
            }
        }
    }
}

impl<T> Future<T> {
    /// What the task has come to so far, without waiting (Dask's `Future.status`).
    pub fn status(&self) -> FutureStatus {
        match self
            .shared()
            .lock()
            .keys
            .get(&self.key())
            .map(|e| &e.status)
        {
            Some(Status::Pending) => FutureStatus::Pending,
            Some(Status::Done(_)) | None => FutureStatus::Finished,
            Some(Status::Failed(_)) => FutureStatus::Error,
            Some(Status::Cancelled(_)) => FutureStatus::Cancelled,
        }
    }

    /// Waits for the task and returns its error, or `None` if it finished with a value
    /// (Dask's `Future.exception`); the value is not fetched, and the future can still give
    /// it.
    ///
    /// ```
    /// fn check(x: i32) -> Result<i32, String> {
    ///     if x >= 0 { Ok(x) } else { Err(format!("{x} is negative")) }
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let bad = client.try_submit(check, -1);
    ///     let error = bad.exception().unwrap().expect("an error");
    ///     assert!(matches!(error, mpidask::Error::Task(e) if e.message == "-1 is negative"));
    ///     assert!(client.try_submit(check, 1).exception().unwrap().is_none());
    /// });
    /// ```
    pub fn exception(&self) -> Result<Option<Error>> {
        let key = self.key();
        self.shared().wait_for(|state| match state.keys.get(&key) {
            None => Some(Some(Error::UnknownKey(key))),
            Some(entry) => match &entry.status {
                Status::Pending => None,
                Status::Done(_) => Some(None),
                Status::Failed(error) => Some(Some(Error::Task(error.clone()))),
                Status::Cancelled(cause) => Some(Some(Error::Cancelled { key: cause.clone() })),
            },
        })
    }
}

impl<T: DeserializeOwned + 'static> Future<T> {
    /// [`result`](Self::result) within `timeout`: [`Error::Timeout`] if the value is not
    /// here by then (the task goes on); a timeout of zero is an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let slow = client.submit(nap, 3_000);
    ///     let error = slow.result_timeout(Duration::from_millis(50)).unwrap_err();
    ///     assert!(matches!(error, mpidask::Error::Timeout { .. }));
    ///     assert_eq!(client.submit(nap, 1).result_timeout(Duration::from_secs(60)).unwrap(), 1);
    /// # slow.cancel();
    /// });
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<T> {
        let client = Client::new(self.shared().clone());
        let key = self.key();
        let bytes = client
            .fetch(&[key], Some(timeout), false)?
            .pop()
            .flatten()
            .expect("a value, since failures are not skipped");
        client.decode_value(key, &bytes)
    }
}
