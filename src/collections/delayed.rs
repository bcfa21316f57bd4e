//! Lazy calls of plain functions, like `dask.delayed`: `delayed(f, args)` records a call
//! without running it; arguments may be values, futures or other delayed calls. Submitting
//! (or computing) several results in one [`Session`] runs every shared call once.
//!
//! ```
//! use mpidask::delayed::{Session, delayed};
//! fn inc(x: i64) -> i64 { x + 1 }
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! let (x, y) = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let one = delayed(inc, 0);               // shared by both results
//!     let x = delayed(add, (&one, 10));
//!     let y = delayed(add, (&one, 20));
//!     let mut session = Session::new(client);
//!     let (fx, fy) = (session.submit(&x), session.submit(&y));
//!     (fx.result().unwrap(), fy.result().unwrap())
//! });
//! assert_eq!((x, y), (11, 21));
//! ```
//!
//! Other collections make delayed values of their parts (an array's chunks,
//! [`crate::array::Array::to_delayed`]) through [`Source`], and take delayed values as
//! parts ([`crate::array::from_delayed`], [`crate::bag::Bag::from_delayed`]).

use crate::client::{CallArg, Client, Future};
use crate::error::Result;
use crate::task::{self, Arg, IntoArgs, TaskFn, Trampoline, ValueSlot};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// A call that has not run yet, whose result has type `T`.
pub struct Delayed<T> {
    node: Arc<Node>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Delayed<T> {
    fn clone(&self) -> Self {
        Delayed {
            node: self.node.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Delayed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node.kind {
            Kind::Call { name, .. } => write!(f, "Delayed({name})"),
            Kind::Future(future) => write!(f, "Delayed({future:?})"),
            Kind::Source(source) => write!(f, "Delayed({})", source.describe()),
        }
    }
}

/// A value another collection computes when a session needs it (an array's chunk).
pub trait Source: Send + Sync {
    /// Submits the tasks that make the value into `session` (whose delayed calls and
    /// state it may share); returns its future.
    fn submit(&self, session: &mut Session<'_>) -> Result<Future<()>>;
    /// What the value is, for `Debug`.
    fn describe(&self) -> String;
}

/// A node of a delayed graph (opaque).
pub struct Node {
    kind: Kind,
}

enum Kind {
    Call {
        trampoline: Trampoline,
        name: String,
        args: Vec<Slot>,
    },
    Future(Future<()>),
    Source(Box<dyn Source>),
}

/// One argument of a delayed call.
pub enum Slot {
    /// An encoded value.
    Value(Vec<u8>),
    /// The result of another delayed call.
    Delayed(Arc<Node>),
    /// Results of several delayed calls, as one `Vec`.
    List(Vec<Arc<Node>>),
}

impl ValueSlot for Slot {
    fn value(bytes: Vec<u8>) -> Self {
        Slot::Value(bytes)
    }
}

impl<T> Arg<T, Slot> for Delayed<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Delayed(self.node))
    }
}

impl<T> Arg<T, Slot> for &Delayed<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Delayed(self.node.clone()))
    }
}

impl<T> Arg<T, Slot> for Future<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Delayed(Delayed::from_future(self).node))
    }
}

impl<T> Arg<T, Slot> for &Future<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        self.clone().into_slot()
    }
}

impl<T> Arg<Vec<T>, Slot> for Vec<Delayed<T>> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::List(self.into_iter().map(|d| d.node).collect()))
    }
}

impl<T> Arg<Vec<T>, Slot> for &[Delayed<T>] {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::List(self.iter().map(|d| d.node.clone()).collect()))
    }
}

/// Records the call `f(args)` without running it.
///
/// ```
/// use mpidask::delayed::delayed;
/// fn inc(x: i64) -> i64 { x + 1 }
/// fn add(a: i64, b: i64) -> i64 { a + b }
/// let a = delayed(inc, 1);
/// let b = delayed(inc, 2);
/// let total = delayed(add, (&a, &b)); // nothing has run yet
/// let value = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     total.compute(client).unwrap()
/// });
/// assert_eq!(value, 5);
/// ```
///
/// # Panics
/// If a value argument cannot be encoded (a type that `serde` cannot serialise with
/// bincode, such as a sequence of unknown length).
pub fn delayed<F, Args, X>(f: F, args: X) -> Delayed<F::Output>
where
    F: TaskFn<Args>,
    Args: DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
    X: IntoArgs<Args, Slot>,
{
    let _ = f;
    let args = args.into_slots().unwrap_or_else(|e| {
        panic!(
            "an argument of {} cannot be encoded: {e}",
            task::function_name::<F>()
        )
    });
    Delayed::of(Kind::Call {
        trampoline: task::trampoline_of::<F, Args>(),
        name: task::function_name::<F>(),
        args,
    })
}

/// Records the call `f(args)` of a function returning `Result<T, E>`: `Err` fails the task
/// with `E`'s `Display` as the message (as [`Client::try_submit`]).
///
/// ```
/// use mpidask::delayed::try_delayed;
/// fn parse(s: String) -> Result<i64, std::num::ParseIntError> { s.parse() }
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     assert_eq!(try_delayed(parse, "42".to_string()).compute(client).unwrap(), 42);
///     assert!(try_delayed(parse, "x".to_string()).compute(client).is_err());
/// });
/// ```
///
/// # Panics
/// As [`delayed`].
pub fn try_delayed<F, Args, X, T, E>(f: F, args: X) -> Delayed<T>
where
    F: TaskFn<Args, Output = std::result::Result<T, E>>,
    Args: DeserializeOwned + 'static,
    T: Serialize + 'static,
    E: std::fmt::Display,
    X: IntoArgs<Args, Slot>,
{
    let _ = f;
    let args = args.into_slots().unwrap_or_else(|e| {
        panic!(
            "an argument of {} cannot be encoded: {e}",
            task::function_name::<F>()
        )
    });
    Delayed::of(Kind::Call {
        trampoline: task::fallible_trampoline_of::<F, Args, T, E>(),
        name: task::function_name::<F>(),
        args,
    })
}

/// Records a call through a trampoline of the crate's own (one that reads its arguments in
/// another way than [`task::decode_args`]), on arguments already made into slots.
pub(crate) fn call_through<T>(trampoline: Trampoline, name: String, args: Vec<Slot>) -> Delayed<T> {
    Delayed::of(Kind::Call {
        trampoline,
        name,
        args,
    })
}

impl<T> Delayed<T> {
    fn of(kind: Kind) -> Delayed<T> {
        Delayed {
            node: Arc::new(Node { kind }),
            _value: PhantomData,
        }
    }

    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// A delayed value standing for an existing future.
    pub fn from_future(future: Future<T>) -> Delayed<T> {
        Delayed::of(Kind::Future(future.erase()))
    }

    /// A delayed value that `source` makes when a session needs it.
    pub fn from_source(source: impl Source + 'static) -> Delayed<T> {
        Delayed::of(Kind::Source(Box::new(source)))
    }

    /// Runs the call (and what it needs) and returns its value.
    pub fn compute(&self, client: &Client) -> Result<T>
    where
        T: DeserializeOwned + 'static,
    {
        let mut session = Session::new(client);
        let future = session.submit(self);
        session.release_states();
        future.result()
    }

    /// [`compute`](Self::compute) showing the progress of every call it runs (see
    /// [`Client::with_progress`]).
    pub fn compute_with_progress(&self, client: &Client) -> Result<T>
    where
        T: DeserializeOwned + 'static,
    {
        client.with_progress(|| self.compute(client))
    }
}

/// Submits delayed calls, each node once however many results share it.
///
/// ```
/// use mpidask::delayed::{Session, delayed};
/// fn inc(x: i64) -> i64 { x + 1 }
/// fn double(x: i64) -> i64 { 2 * x }
/// let shared = delayed(inc, 1);
/// let (a, b) = (delayed(double, &shared), delayed(inc, &shared));
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let mut session = Session::new(client);
///     // `shared` runs once for both results.
///     assert_eq!(session.compute_all(&[a, b]).unwrap(), vec![4, 3]);
/// });
/// ```
pub struct Session<'c> {
    client: &'c Client,
    /// Every node submitted so far, by address, with the node itself: holding it keeps the
    /// address from being reused by a new node while the session lives.
    submitted: FxHashMap<usize, (Arc<Node>, Future<()>)>,
    /// What sources keep between their values in this session, by a key of theirs (an
    /// array's lowered graph, by the array).
    states: FxHashMap<usize, Box<dyn std::any::Any>>,
}

fn address(node: &Arc<Node>) -> usize {
    Arc::as_ptr(node) as usize
}

impl<'c> Session<'c> {
    /// A session submitting to `client`.
    pub fn new(client: &'c Client) -> Self {
        Session {
            client,
            submitted: FxHashMap::default(),
            states: FxHashMap::default(),
        }
    }

    /// The client this session submits to.
    pub(crate) fn client(&self) -> &'c Client {
        self.client
    }

    /// Takes the state a source kept under `key` (`None` if none, or of another type).
    pub(crate) fn take_state<S: 'static>(&mut self, key: usize) -> Option<S> {
        let state = self.states.remove(&key)?;
        state.downcast::<S>().ok().map(|s| *s)
    }

    /// Drops what sources kept (an array's lowered chunks hold the futures of every chunk
    /// upstream of those asked for): once the values wanted are submitted, the chunks they
    /// need need not be held by the client too, and workers free them when they are used.
    fn release_states(&mut self) {
        self.states.clear();
    }

    /// Keeps `state` under `key` for the rest of the session.
    pub(crate) fn put_state<S: 'static>(&mut self, key: usize, state: S) {
        self.states.insert(key, Box::new(state));
    }

    /// Submits `value` (and every call it depends on that this session has not submitted
    /// yet); returns the future of its result.
    pub fn submit<T>(&mut self, value: &Delayed<T>) -> Future<T> {
        self.node(&value.node).retype()
    }

    /// Submits several values of one type and waits for all of them.
    pub fn compute_all<T: DeserializeOwned + 'static>(
        &mut self,
        values: &[Delayed<T>],
    ) -> Result<Vec<T>> {
        let futures: Vec<Future<T>> = values.iter().map(|v| self.submit(v)).collect();
        self.release_states();
        self.client.gather(&futures)
    }

    fn future_of(&self, node: &Arc<Node>) -> Future<()> {
        self.submitted[&address(node)].1.clone()
    }

    pub(crate) fn node(&mut self, node: &Arc<Node>) -> Future<()> {
        if let Some((_, future)) = self.submitted.get(&address(node)) {
            return future.clone();
        }
        // Depth-first without recursion, so long chains do not exhaust the stack.
        let mut stack: Vec<(Arc<Node>, bool)> = vec![(node.clone(), false)];
        while let Some((current, ready)) = stack.pop() {
            if self.submitted.contains_key(&address(&current)) {
                continue;
            }
            let missing: Vec<Arc<Node>> = match &current.kind {
                Kind::Call { args, .. } => args
                    .iter()
                    .flat_map(|slot| match slot {
                        Slot::Value(_) => Vec::new(),
                        Slot::Delayed(n) => vec![n.clone()],
                        Slot::List(ns) => ns.clone(),
                    })
                    .filter(|d| !self.submitted.contains_key(&address(d)))
                    .collect(),
                _ => Vec::new(),
            };
            if !ready && !missing.is_empty() {
                stack.push((current, true));
                stack.extend(missing.into_iter().map(|d| (d, false)));
                continue;
            }
            let future = match &current.kind {
                Kind::Future(future) => future.clone(),
                Kind::Source(source) => match source.submit(self) {
                    Ok(future) => future,
                    Err(e) => self.client.failed_future(&e.to_string()),
                },
                Kind::Call {
                    trampoline,
                    name,
                    args,
                } => {
                    let args = args
                        .iter()
                        .map(|slot| match slot {
                            Slot::Value(bytes) => CallArg::Value(bytes.clone()),
                            Slot::Delayed(n) => CallArg::Future(self.future_of(n)),
                            Slot::List(ns) => {
                                CallArg::Futures(ns.iter().map(|n| self.future_of(n)).collect())
                            }
                        })
                        .collect();
                    self.client.submit_raw(*trampoline, name, &[], args)
                }
            };
            self.submitted
                .insert(address(&current), (current.clone(), future));
        }
        self.future_of(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeArgs;

    fn inc(x: u64) -> u64 {
        x + 1
    }

    /// Nodes made and dropped one after another often reuse the same address: each must
    /// still run as itself (a session that forgot a node but kept its address gave the
    /// old node's future to the new one).
    #[test]
    fn a_new_node_at_a_freed_address_runs_as_itself() {
        crate::run_local(RuntimeArgs::default(), |client| {
            let mut session = Session::new(client);
            let mut addresses = std::collections::HashSet::new();
            let mut reused = false;
            for i in 0..200u64 {
                let call = delayed(inc, i);
                reused |= !addresses.insert(address(call.node()));
                assert_eq!(session.submit(&call).result().unwrap(), i + 1, "call {i}");
            }
            // The session holds every node it submitted, so no address came back.
            assert!(!reused, "the session kept its nodes alive");
            // Without a session holding them, the allocator does reuse addresses: the case
            // above is the one that used to go wrong.
            let mut seen = std::collections::HashSet::new();
            let reused_without_session =
                (0..200u64).any(|i| !seen.insert(address(delayed(inc, i).node())));
            assert!(
                reused_without_session,
                "addresses of dropped nodes are reused"
            );
        });
    }

    #[test]
    fn futures_and_lists_are_arguments_too() {
        fn total(xs: Vec<u64>) -> u64 {
            xs.into_iter().sum()
        }
        crate::run_local(RuntimeArgs::default(), |client| {
            let five = client.submit(inc, 4u64);
            let parts: Vec<Delayed<u64>> = (0..3u64).map(|i| delayed(inc, i)).collect();
            let sum = delayed(total, parts);
            let plus = delayed(|a: u64, b: u64| a + b, (&sum, &five));
            assert_eq!(plus.compute(client).unwrap(), 6 + 5);
        });
    }
}
