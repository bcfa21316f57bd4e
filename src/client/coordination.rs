//! Dask's coordination primitives, held by the scheduler and named, usable from the program
//! and from tasks (through their task client) alike: [`Queue`], [`Variable`], [`Lock`],
//! [`Semaphore`] and [`Event`]. Waits take an optional time limit; in a task they give the
//! task's thread back to its worker meanwhile.

use super::waits::timed_out;
use super::{Client, Shared};
use crate::error::{Error, Result};
use crate::protocol::{CoordOp, CoordReply, decode_owned, encode_owned};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Shared {
    /// Sends `op` to the scheduler and waits for the answer.
    fn coordinate(&self, op: CoordOp) -> Result<CoordReply> {
        self.ask(|id| crate::protocol::ToScheduler::Coordinate { id, op })
    }

    /// Sends the request `message(id)` to the scheduler, with a new `id`, and waits for its
    /// answer (`Coordinated` with that `id`).
    pub(super) fn ask(
        &self,
        message: impl FnOnce(u64) -> crate::protocol::ToScheduler,
    ) -> Result<CoordReply> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        self.send(super::Command::Scheduler(message(id)));
        self.wait_for(|state| state.coordinated.remove(&id))
    }

    /// Sends `op` (`what`, for an unexpected answer) and expects `Done`.
    fn coordinate_done(&self, op: CoordOp, what: &str) -> Result<()> {
        match self.coordinate(op)? {
            CoordReply::Done => Ok(()),
            other => Err(refused(other, what)),
        }
    }

    /// A new id for a lease.
    fn new_lease(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }
}

/// A time limit in milliseconds on the wire (at least 1 for a limit under a millisecond
/// that is not zero).
fn millis(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 && !t.is_zero() { 1 } else { ms }
    })
}

fn refused(reply: CoordReply, what: &str) -> Error {
    match reply {
        CoordReply::Refused(why) => Error::Config(why),
        other => Error::Config(format!("the scheduler answered {other:?} to {what}")),
    }
}

fn encode<T: Serialize + 'static>(value: &T, what: &str) -> Result<Vec<u8>> {
    encode_owned(value).map_err(|e| Error::encode(what, e))
}

fn decode<T: DeserializeOwned + 'static>(bytes: &[u8], what: &str) -> Result<T> {
    decode_owned(bytes).map_err(|e| Error::decode(what, e))
}

/// A named queue of values held by the scheduler (Dask's `Queue`): any client puts, any
/// client gets, each value once, oldest first.
///
/// ```
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let queue = client.queue::<u64>("work");
///     queue.put(&7).unwrap();
///     assert_eq!(queue.qsize().unwrap(), 1);
///     assert_eq!(queue.get(None).unwrap(), 7);
///     let empty = queue.get(Some(std::time::Duration::from_millis(10)));
///     assert!(matches!(empty, Err(mpidask::Error::Timeout { .. })));
/// });
/// ```
pub struct Queue<T> {
    client: Client,
    name: String,
    _values: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// Appends `value`.
    pub fn put(&self, value: &T) -> Result<()> {
        let value = encode(value, "a value put in a queue")?;
        let name = self.name.clone();
        self.client
            .shared
            .coordinate_done(CoordOp::QueuePut { name, value }, "a put")
    }

    /// Takes the oldest value, waiting for one at most `timeout` (`None`: without a limit);
    /// `Error::Timeout` past it.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        let op = CoordOp::QueueGet {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        match self.client.shared.coordinate(op)? {
            CoordReply::Value(bytes) => decode(&bytes, "a value from a queue"),
            CoordReply::TimedOut => Err(timed_out(
                timeout,
                format!("a value in queue {:?}", self.name),
            )),
            other => Err(refused(other, "a get")),
        }
    }

    /// The number of values in it.
    pub fn qsize(&self) -> Result<u64> {
        let name = self.name.clone();
        match self.client.shared.coordinate(CoordOp::QueueSize { name })? {
            CoordReply::Count(n) => Ok(n),
            other => Err(refused(other, "a size")),
        }
    }
}

/// A named value held by the scheduler (Dask's `Variable`): set by any client, read by any,
/// the last set wins.
pub struct Variable<T> {
    client: Client,
    name: String,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + 'static> Variable<T> {
    /// Sets it (waking those waiting in `get`).
    pub fn set(&self, value: &T) -> Result<()> {
        let value = encode(value, "a variable's value")?;
        let name = self.name.clone();
        self.client
            .shared
            .coordinate_done(CoordOp::VariableSet { name, value }, "a set")
    }

    /// Its value, waiting until it is set at most `timeout` (`None`: without a limit);
    /// `Error::Timeout` past it.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        let op = CoordOp::VariableGet {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        match self.client.shared.coordinate(op)? {
            CoordReply::Value(bytes) => decode(&bytes, "a variable's value"),
            CoordReply::TimedOut => Err(timed_out(
                timeout,
                format!("variable {:?} to be set", self.name),
            )),
            other => Err(refused(other, "a get")),
        }
    }

    /// Unsets it.
    pub fn delete(&self) -> Result<()> {
        let name = self.name.clone();
        self.client
            .shared
            .coordinate_done(CoordOp::VariableDelete { name }, "a delete")
    }
}

/// A named semaphore held by the scheduler (Dask's `Semaphore`): at most `max_leases`
/// holders at a time. Each handle tracks the leases it took; release gives one back.
pub struct Semaphore {
    client: Client,
    name: String,
    wire_name: String,
    max_leases: u32,
    held: Mutex<Vec<u64>>,
}

impl Semaphore {
    /// Takes a lease, waiting at most `timeout` (`None`: without a limit; zero: only if one
    /// is free now): `Ok(false)` if none came in time, as Dask's `acquire(timeout)`.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool> {
        let lease = self.client.shared.new_lease();
        let op = CoordOp::Acquire {
            name: self.wire_name.clone(),
            max_leases: self.max_leases,
            lease,
            timeout_ms: millis(timeout),
        };
        match self.client.shared.coordinate(op)? {
            CoordReply::Done => {
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(lease);
                Ok(true)
            }
            CoordReply::TimedOut => Ok(false),
            other => Err(refused(other, "an acquire")),
        }
    }

    /// Gives back the oldest lease this handle holds; an error if it holds none.
    pub fn release(&self) -> Result<()> {
        let lease = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.is_empty() {
                return Err(Error::Config(format!(
                    "{:?} was released more times than it was acquired by this handle",
                    self.name
                )));
            }
            held.remove(0)
        };
        let name = self.wire_name.clone();
        self.client
            .shared
            .coordinate_done(CoordOp::Release { name, lease }, "a release")
    }
}

/// A named lock held by the scheduler (Dask's `Lock`): one holder at a time, across the
/// program and every task.
///
/// ```
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let (a, b) = (client.lock("file"), client.lock("file"));
///     assert!(a.acquire(None).unwrap());
///     assert!(!b.acquire(Some(std::time::Duration::ZERO)).unwrap(), "held by a");
///     a.release().unwrap();
///     assert!(b.acquire(Some(std::time::Duration::ZERO)).unwrap());
///     b.release().unwrap();
/// });
/// ```
pub struct Lock(Semaphore);

impl Lock {
    /// Takes the lock, waiting at most `timeout` (`None`: without a limit; zero: only if it
    /// is free now): `Ok(false)` if it did not come in time.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool> {
        self.0.acquire(timeout)
    }

    /// Gives it back; an error if this handle does not hold it.
    pub fn release(&self) -> Result<()> {
        self.0.release()
    }
}

/// A named event held by the scheduler (Dask's `Event`): tasks and the program wait until
/// one of them sets it.
pub struct Event {
    client: Client,
    name: String,
}

impl Event {
    /// Sets it: every wait ends, and later ones return at once until it is cleared.
    pub fn set(&self) -> Result<()> {
        self.set_to(true)
    }

    /// Clears it.
    pub fn clear(&self) -> Result<()> {
        self.set_to(false)
    }

    fn set_to(&self, set: bool) -> Result<()> {
        let name = self.name.clone();
        self.client
            .shared
            .coordinate_done(CoordOp::EventSet { name, set }, "a set")
    }

    /// Waits until it is set, at most `timeout` (`None`: without a limit): `Ok(false)` if
    /// it was not set in time, as Dask's `Event.wait(timeout)`.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let op = CoordOp::EventWait {
            name: self.name.clone(),
            timeout_ms: millis(timeout),
        };
        match self.client.shared.coordinate(op)? {
            CoordReply::Done => Ok(true),
            CoordReply::TimedOut => Ok(false),
            other => Err(refused(other, "a wait")),
        }
    }

    /// `true` if it is set now.
    pub fn is_set(&self) -> Result<bool> {
        self.wait(Some(Duration::ZERO))
    }
}

impl Client {
    /// The queue named `name` (made on first use), of values of type `T`.
    pub fn queue<T>(&self, name: &str) -> Queue<T> {
        Queue {
            client: self.clone(),
            name: name.to_string(),
            _values: PhantomData,
        }
    }

    /// The variable named `name`, of type `T`.
    pub fn variable<T>(&self, name: &str) -> Variable<T> {
        Variable {
            client: self.clone(),
            name: name.to_string(),
            _value: PhantomData,
        }
    }

    /// The lock named `name`. Each handle is a holder of its own: a handle must release
    /// what it acquired.
    pub fn lock(&self, name: &str) -> Lock {
        Lock(self.semaphore_named(name, format!("lock:{name}"), 1))
    }

    /// The semaphore named `name` with `max_leases` leases (every handle on it must give
    /// the same number).
    pub fn semaphore(&self, name: &str, max_leases: u32) -> Semaphore {
        self.semaphore_named(name, format!("semaphore:{name}"), max_leases)
    }

    fn semaphore_named(&self, name: &str, wire_name: String, max_leases: u32) -> Semaphore {
        Semaphore {
            client: self.clone(),
            name: name.to_string(),
            wire_name,
            max_leases,
            held: Mutex::new(Vec::new()),
        }
    }

    /// The event named `name`.
    pub fn event(&self, name: &str) -> Event {
        Event {
            client: self.clone(),
            name: name.to_string(),
        }
    }
}
