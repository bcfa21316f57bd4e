//! Lazy calls of plain functions, like `dask.delayed`: `delayed(f, args)` records a call
//! without running it; arguments may be values or other delayed calls. Submitting (or
//! computing) several results in one [`Session`] runs every shared call once.
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
//! Delayed values can read array chunks ([`crate::collections::array::Array::to_delayed`]) and produce
//! them ([`crate::collections::array::from_delayed`]).

use crate::client::{Client, Future};
use crate::collections::array::{Array, Element};
use crate::error::Result;
use crate::protocol::{ArgSlot, encode_value};
use crate::task::{self, KeepAlive, TaskFn};
use ndarray::ArrayD;
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
            Kind::ArrayChunk { index, .. } => write!(f, "Delayed(array chunk {index:?})"),
        }
    }
}

/// A node of a delayed graph (opaque).
pub struct Node {
    kind: Kind,
}

enum Kind {
    Call {
        offset: i64,
        name: String,
        args: Vec<Slot>,
    },
    Future(Future<()>),
    ArrayChunk {
        array: Array,
        index: Vec<usize>,
    },
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

/// One argument of type `T` for [`delayed`]: a value or a delayed result.
pub trait DelayedArg<T> {
    /// The argument as a slot.
    fn into_slot(self) -> bincode::Result<Slot>;
}

impl<T: Serialize> DelayedArg<T> for T {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Value(encode_value(&self)?))
    }
}

impl<T> DelayedArg<T> for Delayed<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Delayed(self.node))
    }
}

impl<T> DelayedArg<T> for &Delayed<T> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::Delayed(self.node.clone()))
    }
}

impl<T> DelayedArg<Vec<T>> for Vec<Delayed<T>> {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::List(self.into_iter().map(|d| d.node).collect()))
    }
}

impl<T> DelayedArg<Vec<T>> for &[Delayed<T>] {
    fn into_slot(self) -> bincode::Result<Slot> {
        Ok(Slot::List(self.iter().map(|d| d.node.clone()).collect()))
    }
}

/// The arguments of a delayed call: one argument, a tuple, or `()`.
pub trait DelayedArgs<Args> {
    /// The arguments as slots.
    fn into_slots(self) -> bincode::Result<Vec<Slot>>;
}

impl DelayedArgs<()> for () {
    fn into_slots(self) -> bincode::Result<Vec<Slot>> {
        Ok(Vec::new())
    }
}

impl<X: DelayedArg<A>, A> DelayedArgs<(A,)> for X {
    fn into_slots(self) -> bincode::Result<Vec<Slot>> {
        Ok(vec![self.into_slot()?])
    }
}

macro_rules! delayed_tuples {
    ($(($x:ident, $a:ident)),+) => {
        impl<$($x: DelayedArg<$a>, $a),+> DelayedArgs<($($a,)+)> for ($($x,)+) {
            #[allow(non_snake_case)]
            fn into_slots(self) -> bincode::Result<Vec<Slot>> {
                let ($($x,)+) = self;
                Ok(vec![$($x.into_slot()?),+])
            }
        }
    };
}

delayed_tuples!((X1, A1), (X2, A2));
delayed_tuples!((X1, A1), (X2, A2), (X3, A3));
delayed_tuples!((X1, A1), (X2, A2), (X3, A3), (X4, A4));
delayed_tuples!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5));
delayed_tuples!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5), (X6, A6));

/// Records the call `f(args)` without running it.
///
/// # Panics
/// If a value argument cannot be encoded (a type that `serde` cannot serialise with
/// bincode, such as a sequence of unknown length).
pub fn delayed<F, Args, X>(f: F, args: X) -> Delayed<F::Output>
where
    F: TaskFn<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
    X: DelayedArgs<Args>,
{
    let _ = f;
    let args = args.into_slots().unwrap_or_else(|e| {
        panic!(
            "an argument of {} cannot be encoded: {e}",
            task::function_name::<F>()
        )
    });
    Delayed {
        node: Arc::new(Node {
            kind: Kind::Call {
                offset: task::plain_offset::<F, Args>(),
                name: task::function_name::<F>(),
                args,
            },
        }),
        _value: PhantomData,
    }
}

impl<T> Delayed<T> {
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// A delayed value standing for an existing future.
    pub fn from_future(future: Future<T>) -> Delayed<T> {
        Delayed {
            node: Arc::new(Node {
                kind: Kind::Future(future.erase()),
            }),
            _value: PhantomData,
        }
    }

    pub(crate) fn array_chunk(array: Array, index: Vec<usize>) -> Delayed<T> {
        Delayed {
            node: Arc::new(Node {
                kind: Kind::ArrayChunk { array, index },
            }),
            _value: PhantomData,
        }
    }

    /// Runs the call (and what it needs) and returns its value.
    pub fn compute(&self, client: &Client) -> Result<T>
    where
        T: DeserializeOwned,
    {
        Session::new(client).submit(self).result()
    }

    /// [`compute`](Self::compute) showing the progress of every call it runs (see
    /// [`Client::with_progress`]).
    pub fn compute_with_progress(&self, client: &Client) -> Result<T>
    where
        T: DeserializeOwned,
    {
        client.with_progress(|| self.compute(client))
    }
}

/// Submits delayed calls, each node once however many results share it.
pub struct Session<'c> {
    client: &'c Client,
    submitted: FxHashMap<usize, Future<()>>,
}

impl<'c> Session<'c> {
    /// A session submitting to `client`.
    pub fn new(client: &'c Client) -> Self {
        Session {
            client,
            submitted: FxHashMap::default(),
        }
    }

    /// Submits `value` (and every call it depends on that this session has not submitted
    /// yet); returns the future of its result.
    pub fn submit<T>(&mut self, value: &Delayed<T>) -> Future<T> {
        self.node(&value.node).retype()
    }

    /// Submits several values of one type and waits for all of them.
    pub fn compute_all<T: DeserializeOwned>(&mut self, values: &[Delayed<T>]) -> Result<Vec<T>> {
        let futures: Vec<Future<T>> = values.iter().map(|v| self.submit(v)).collect();
        self.client.gather(&futures)
    }

    pub(crate) fn node(&mut self, node: &Arc<Node>) -> Future<()> {
        let id = Arc::as_ptr(node) as usize;
        if let Some(future) = self.submitted.get(&id) {
            return future.clone();
        }
        // Depth-first without recursion, so long chains do not exhaust the stack.
        let mut stack: Vec<(Arc<Node>, bool)> = vec![(node.clone(), false)];
        while let Some((current, ready)) = stack.pop() {
            let current_id = Arc::as_ptr(&current) as usize;
            if self.submitted.contains_key(&current_id) {
                continue;
            }
            let deps: Vec<Arc<Node>> = match &current.kind {
                Kind::Call { args, .. } => args
                    .iter()
                    .flat_map(|slot| match slot {
                        Slot::Value(_) => Vec::new(),
                        Slot::Delayed(n) => vec![n.clone()],
                        Slot::List(ns) => ns.clone(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let missing: Vec<Arc<Node>> = deps
                .into_iter()
                .filter(|d| !self.submitted.contains_key(&(Arc::as_ptr(d) as usize)))
                .collect();
            if !ready && !missing.is_empty() {
                stack.push((current, true));
                stack.extend(missing.into_iter().map(|d| (d, false)));
                continue;
            }
            let future = match &current.kind {
                Kind::Future(future) => future.clone(),
                Kind::ArrayChunk { array, index } => {
                    match crate::collections::array::chunk_future(self.client, array, index) {
                        Ok(future) => future,
                        Err(e) => self.client.failed_future(&e.to_string()),
                    }
                }
                Kind::Call { offset, name, args } => {
                    let mut keep = KeepAlive::new();
                    let mut slots = Vec::with_capacity(args.len());
                    for slot in args {
                        slots.push(match slot {
                            Slot::Value(bytes) => ArgSlot::Value(bytes.clone()),
                            Slot::Delayed(n) => {
                                let f = self.submitted[&(Arc::as_ptr(n) as usize)].clone();
                                let s = ArgSlot::Future(f.key());
                                keep.push(f);
                                s
                            }
                            Slot::List(ns) => {
                                let fs: Vec<Future<()>> = ns
                                    .iter()
                                    .map(|n| self.submitted[&(Arc::as_ptr(n) as usize)].clone())
                                    .collect();
                                let s = ArgSlot::Futures(fs.iter().map(Future::key).collect());
                                keep.extend(fs);
                                s
                            }
                        });
                    }
                    self.client.submit_raw(*offset, name, slots, keep)
                }
            };
            self.submitted.insert(current_id, future);
        }
        self.submitted[&id].clone()
    }
}

impl Array {
    /// The chunks as delayed values (C order over the chunk grid), to pass to delayed calls.
    pub fn to_delayed<T: Element>(&self) -> Vec<Delayed<ArrayD<T>>> {
        crate::collections::array::grid::indices(self.chunks())
            .map(|index| Delayed::array_chunk(self.clone(), index))
            .collect()
    }
}
