//! The worker's side of a task: the [`TaskInput`] a trampoline receives, the trampolines
//! that decode a task's arguments and call its function, and how a call fails.

use super::TaskFn;
use super::functions::{FnPointer, FunctionTable};
use crate::protocol::{
    ArgSlot, Bytes, FnId, Payload, TaskCode, codec, decode_owned, decode_payload,
    encode_owned_aligned, recycle_owned, split_large,
};
use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;

/// How a task's call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The function panicked or returned `Err`, or its arguments did not decode as its
    /// parameters: the task fails with this message (and may be retried).
    Failed(String),
    /// The task itself is malformed (it names a function as the wrong kind): a protocol
    /// error, which ends the job with exit code 8.
    Corrupt(String),
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        CallError::Failed(message)
    }
}

impl From<&str> for CallError {
    fn from(message: &str) -> Self {
        CallError::Failed(message.to_string())
    }
}

/// What a worker hands a trampoline.
pub struct TaskInput<'a> {
    /// The argument slots as submitted.
    pub args: &'a [ArgSlot],
    /// One value per dependency occurrence, in slot order.
    pub deps: &'a [Payload],
    /// The further functions the task names, by position.
    pub uses: &'a [FnId],
    /// The worker's registered functions.
    pub functions: &'a FunctionTable,
}

impl<'a> TaskInput<'a> {
    /// The input of a task with this code and these inputs' values.
    pub fn of(code: &'a TaskCode, deps: &'a [Payload], functions: &'a FunctionTable) -> Self {
        TaskInput {
            args: &code.args,
            deps,
            uses: &code.uses,
            functions,
        }
    }

    /// The bytes the task reads: its arguments sent with it and its inputs' values. Asked
    /// before the call, which may take a value the task holds alone (its memory becomes the
    /// function's argument, and the value has no bytes after).
    pub fn bytes_read(&self) -> u64 {
        let inline: usize = self
            .args
            .iter()
            .map(|slot| match slot {
                ArgSlot::Value(bytes) => bytes.len(),
                _ => 0,
            })
            .sum();
        let deps: usize = self.deps.iter().map(|value| value.len()).sum();
        (inline + deps) as u64
    }

    /// The `index`-th function the task uses, as the function-pointer type `F`; a
    /// malformed task if there is none or it was registered as another type.
    pub fn used<F: FnPointer>(&self, index: usize) -> Result<F, CallError> {
        let id = self.uses.get(index).ok_or_else(|| {
            CallError::Corrupt(format!(
                "the task uses {} functions, not {}",
                self.uses.len(),
                index + 1
            ))
        })?;
        self.functions.resolve(*id).map_err(CallError::Corrupt)
    }

    /// The same task seen with only the argument slots `slots` and the dependency values
    /// `deps` (which must be theirs).
    pub fn part(&self, slots: std::ops::Range<usize>, deps: &'a [Payload]) -> TaskInput<'a> {
        TaskInput {
            args: &self.args[slots],
            deps,
            uses: self.uses,
            functions: self.functions,
        }
    }
}

/// The type-erased entry point of a task function.
pub type Trampoline = fn(&TaskInput<'_>) -> Result<Bytes, CallError>;

super::functions::fn_pointer!(Trampoline);

/// Decodes the arguments of a task: the slots' encodings concatenated form the encoding of
/// the argument tuple (bincode encodes a tuple as its fields in order, a `Vec` as its length
/// followed by its elements).
pub fn decode_args<Args: DeserializeOwned + 'static>(
    input: &TaskInput<'_>,
) -> bincode::Result<Args> {
    let mut deps = input.deps.iter();
    let mut next_dep = || {
        deps.next().ok_or_else(|| {
            Box::new(bincode::ErrorKind::Custom(
                "fewer dependency values than the arguments name".into(),
            ))
        })
    };
    // The common case, one argument holding one value: decode in place, or take the value
    // whole when this task is its only holder (its last reader).
    if let [slot] = input.args {
        match slot {
            ArgSlot::Value(bytes) => return decode_owned(bytes),
            ArgSlot::Future(_) => return decode_payload(next_dep()?),
            ArgSlot::Futures(_) => {}
        }
    }
    // A split value's pieces in turn (see `Bytes::split`), never joined on their own.
    let append = |joined: &mut Vec<u8>, value: &Bytes| match value.pieces() {
        Some((head, body)) => {
            joined.extend_from_slice(head);
            joined.extend_from_slice(body);
        }
        None => joined.extend_from_slice(value),
    };
    let mut joined = Vec::new();
    for slot in input.args {
        match slot {
            ArgSlot::Value(bytes) => joined.extend_from_slice(bytes),
            ArgSlot::Future(_) => append(&mut joined, next_dep()?),
            ArgSlot::Futures(keys) => {
                codec().serialize_into(&mut joined, &(keys.len() as u64))?;
                for _ in keys {
                    append(&mut joined, next_dep()?);
                }
            }
        }
    }
    codec().deserialize(&joined)
}

/// The failure of a task whose arguments did not decode as the parameters of `F`.
pub(crate) fn describe_decode_error<F>(error: bincode::Error) -> CallError {
    CallError::Failed(format!(
        "could not decode the arguments of {}: {error}",
        super::function_name::<F>()
    ))
}

/// Encodes a task's result.
pub fn encode_result<T: Serialize + 'static>(value: &T) -> Result<Bytes, CallError> {
    encode_owned_aligned(value)
        .map_err(|e| CallError::Failed(format!("could not encode the result: {e}")))
}

/// Encodes the result of a task of the program's: a large plain vector or array stays where
/// it is, as a split value (`Bytes::split`), read from there by the tasks and ranks that
/// need it; anything else is encoded and its memory recycled.
fn encode_given_result<T: Serialize + 'static>(value: T) -> Result<Bytes, CallError> {
    split_large(value).or_else(|value| {
        let encoded = encode_result(&value);
        recycle_owned(value);
        encoded
    })
}

/// The trampoline of a function whose result is the task's value.
pub fn trampoline<F, Args>(input: &TaskInput<'_>) -> Result<Bytes, CallError>
where
    F: TaskFn<Args>,
    Args: DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    encode_given_result(super::conjure::<F>().call(args))
}

/// The trampoline of a function returning `Result<T, E>`: `Err` fails the task.
pub fn fallible_trampoline<F, Args, T, E>(input: &TaskInput<'_>) -> Result<Bytes, CallError>
where
    F: TaskFn<Args, Output = Result<T, E>>,
    Args: DeserializeOwned + 'static,
    T: Serialize + 'static,
    E: Display,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    let value = super::conjure::<F>()
        .call(args)
        .map_err(|e| CallError::Failed(e.to_string()))?;
    encode_given_result(value)
}

/// The trampoline of `F` with argument tuple `Args`.
pub fn trampoline_of<F, Args>() -> Trampoline
where
    F: TaskFn<Args>,
    Args: DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
{
    trampoline::<F, Args>
}

/// The trampoline of the fallible `F` with argument tuple `Args`.
pub fn fallible_trampoline_of<F, Args, T, E>() -> Trampoline
where
    F: TaskFn<Args, Output = Result<T, E>>,
    Args: DeserializeOwned + 'static,
    T: Serialize + 'static,
    E: Display,
{
    fallible_trampoline::<F, Args, T, E>
}

/// Runs the task whose function is `func` on `input` (the worker side of a task).
pub fn call(func: FnId, input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let trampoline: Trampoline = input.functions.resolve(func).map_err(CallError::Corrupt)?;
    trampoline(input)
}
