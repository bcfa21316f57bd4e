//! The client's argument slots: a call's argument is an encoded value, a [`Future`] (the
//! task then waits for that result and reads it on the worker), or a list of futures (read
//! as one `Vec`). The tuple machinery is [`crate::task::IntoArgs`], shared with `delayed`.

use super::{DIRECT_ARG_BYTES, Future};
use crate::protocol::{ArgSlot, Key, Payload, encode_given};
use crate::task::{Arg, ValueSlot};
use serde::Serialize;
use std::sync::Arc;

/// One argument of a task as the client submits it.
#[derive(Debug, Clone)]
pub enum CallArg {
    /// An encoded value.
    Value(Vec<u8>),
    /// An encoded value of 64 KiB or more (`DIRECT_ARG_BYTES`), given away by the caller:
    /// a plain vector or contiguous array keeps its elements where they lie until they are
    /// sent (a split value: `protocol::Bytes::split`).
    Large(Payload),
    /// The result of another task.
    Future(Future<()>),
    /// The results of several tasks, read as one `Vec`.
    Futures(Vec<Future<()>>),
}

impl ValueSlot for CallArg {
    fn value(bytes: Vec<u8>) -> Self {
        CallArg::Value(bytes)
    }

    fn owned<T: Serialize + 'static>(value: T) -> bincode::Result<Self> {
        let bytes = encode_given(value)?;
        Ok(if bytes.len() >= DIRECT_ARG_BYTES {
            CallArg::Large(Arc::new(bytes))
        } else {
            CallArg::Value(bytes.into_vec())
        })
    }
}

impl CallArg {
    /// The slot as it travels, and the futures to keep alive until the task is sent (so
    /// the release of a dropped future never overtakes the task that needs it).
    pub(crate) fn into_wire(self, keep: &mut Vec<Future<()>>) -> ArgSlot {
        match self {
            CallArg::Value(bytes) => ArgSlot::Value(bytes),
            CallArg::Large(bytes) => {
                ArgSlot::Value(Arc::try_unwrap(bytes).map_or_else(|b| b.to_vec(), |b| b.into_vec()))
            }
            CallArg::Future(future) => {
                let slot = ArgSlot::Future(future.key());
                keep.push(future);
                slot
            }
            CallArg::Futures(futures) => {
                let keys: Vec<Key> = futures.iter().map(Future::key).collect();
                keep.extend(futures);
                ArgSlot::Futures(keys)
            }
        }
    }
}

impl<T> Arg<T, CallArg> for Future<T> {
    fn into_slot(self) -> bincode::Result<CallArg> {
        Ok(CallArg::Future(self.erase()))
    }
}

impl<T> Arg<T, CallArg> for &Future<T> {
    fn into_slot(self) -> bincode::Result<CallArg> {
        Ok(CallArg::Future(self.clone().erase()))
    }
}

impl<T> Arg<Vec<T>, CallArg> for Vec<Future<T>> {
    fn into_slot(self) -> bincode::Result<CallArg> {
        Ok(CallArg::Futures(
            self.into_iter().map(Future::erase).collect(),
        ))
    }
}

impl<T> Arg<Vec<T>, CallArg> for &Vec<Future<T>> {
    fn into_slot(self) -> bincode::Result<CallArg> {
        self.as_slice().into_slot()
    }
}

impl<T> Arg<Vec<T>, CallArg> for &[Future<T>] {
    fn into_slot(self) -> bincode::Result<CallArg> {
        Ok(CallArg::Futures(
            self.iter().map(|f| f.clone().erase()).collect(),
        ))
    }
}
