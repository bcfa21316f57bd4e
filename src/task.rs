//! Tasks are plain Rust functions: how a function becomes a [`FnRef`] any rank can call, and
//! how its arguments (values or futures) are encoded and decoded.
//!
//! # Function identity
//!
//! Every rank runs the same executable (checked at start-up by hashing it), so a function has
//! the same offset from any fixed function of the binary on every rank, whatever address
//! space layout randomisation does. For a task function `F` the client takes the address of
//! the monomorphised [`trampoline`] for `F` relative to [`anchor`]; a worker adds the offset
//! to its own `anchor` and calls the trampoline, which decodes the arguments, conjures the
//! zero-sized `F` and calls it.
//!
//! Only zero-sized `Copy` functions can be conjured: `fn` items and closures that capture
//! nothing. A capturing closure or a function-pointer value is rejected at compile time:
//!
//! ```compile_fail
//! mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let k = 3;
//!     let _ = client.submit(move |x: i64| x + k, 1); // captures `k`: compile error
//! });
//! ```
//!
//! ```compile_fail
//! fn inc(x: i64) -> i64 { x + 1 }
//! mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let pointer: fn(i64) -> i64 = inc;
//!     let _ = client.submit(pointer, 1); // a function pointer has a size: compile error
//! });
//! ```
//!
//! (The check runs when the code is compiled to a binary, so `cargo build` reports it;
//! `cargo check` alone does not.)

use crate::client::Future;
use crate::protocol::{ArgSlot, FnRef, Payload, codec, encode_value};
use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;

/// What a worker hands a trampoline: the task's argument slots and, in the order their keys
/// appear in the slots, the values of its dependencies.
pub struct TaskInput<'a> {
    /// The argument slots as submitted.
    pub args: &'a [ArgSlot],
    /// One value per dependency occurrence, in slot order.
    pub deps: &'a [Payload],
}

/// The type-erased entry point of a task function.
pub type Trampoline = fn(&TaskInput<'_>) -> Result<Vec<u8>, String>;

/// The fixed function every [`FnRef`] offset is measured from.
#[inline(never)]
pub fn anchor(input: &TaskInput<'_>) -> Result<Vec<u8>, String> {
    Err(format!(
        "the anchor function was called with {} arguments: the function table is corrupted",
        input.args.len()
    ))
}

fn address_of(trampoline: Trampoline) -> i64 {
    trampoline as usize as i64
}

/// Offset of `trampoline` from [`anchor`].
pub fn offset_of(trampoline: Trampoline) -> i64 {
    code_offset(trampoline as *const ())
}

/// Offset from [`anchor`] of any function of this executable: how a task names the other
/// functions it calls (the steps of a bag's pipeline).
pub(crate) fn code_offset(function: *const ()) -> i64 {
    (function as usize as i64).wrapping_sub(address_of(anchor))
}

/// The address at `offset` from [`anchor`]. Turning it into a function pointer is sound only
/// for an offset [`code_offset`] took of a function of that exact type in this executable.
pub(crate) fn code_at(offset: i64) -> *const () {
    address_of(anchor).wrapping_add(offset) as usize as *const ()
}

/// The trampoline at `offset` from [`anchor`].
///
/// # Safety
/// `offset` must come from [`offset_of`] in the same executable. Offsets travel only between
/// ranks of one job, which all run the identical executable (verified at start-up).
pub unsafe fn trampoline_at(offset: i64) -> Trampoline {
    let address = address_of(anchor).wrapping_add(offset) as usize;
    // SAFETY: by the contract above `address` is the address of a function with the
    // `Trampoline` signature in this executable.
    unsafe { std::mem::transmute::<*const (), Trampoline>(address as *const ()) }
}

/// A readable name for function type `F`: `count_hits`, or `main.closure` for a closure.
pub fn function_name<F>() -> String {
    let full = std::any::type_name::<F>();
    let generic_free = full.split('<').next().unwrap_or(full);
    let segments: Vec<&str> = generic_free.split("::").collect();
    match segments.iter().rposition(|s| *s != "{{closure}}") {
        Some(i) if i + 1 < segments.len() => format!("{}.closure", segments[i]),
        Some(i) => segments[i].to_string(),
        None => "closure".to_string(),
    }
}

/// Produces a value of a zero-sized `Copy` type: how a worker gets hold of a task function.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a task function must be a fn item or a closure that captures nothing \
             (no function pointers, no captured variables): pass values as arguments instead"
        )
    };
    // SAFETY: `F` has size zero, so there are no bytes to initialise; it is `Copy`, so it has
    // no drop glue or ownership invariant a conjured value could break (fn items and
    // non-capturing closures are exactly such types).
    unsafe { std::mem::zeroed() }
}

/// A function that can run as a task with the argument tuple `Args`.
///
/// Implemented for every zero-sized `Fn` of 0 to 6 arguments; see the [module docs](self).
pub trait TaskFn<Args>: Copy + Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Calls the function with its arguments.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_task_fn {
    ($($arg:ident),*) => {
        impl<Func, Ret, $($arg),*> TaskFn<($($arg,)*)> for Func
        where
            Func: Fn($($arg),*) -> Ret + Copy + Send + Sync + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(self, ($($arg,)*): ($($arg,)*)) -> Ret {
                self($($arg),*)
            }
        }
    };
}

impl_task_fn!();
impl_task_fn!(A);
impl_task_fn!(A, B);
impl_task_fn!(A, B, C);
impl_task_fn!(A, B, C, D);
impl_task_fn!(A, B, C, D, E);
impl_task_fn!(A, B, C, D, E, G);

/// Decodes the arguments of a task: the slots' encodings concatenated form the encoding of
/// the argument tuple (bincode encodes a tuple as its fields in order, a `Vec` as its length
/// followed by its elements).
pub fn decode_args<Args: DeserializeOwned>(input: &TaskInput<'_>) -> bincode::Result<Args> {
    let mut deps = input.deps.iter();
    let mut next_dep = || {
        deps.next().map(|p| p.as_slice()).ok_or_else(|| {
            Box::new(bincode::ErrorKind::Custom(
                "fewer dependency values than the arguments name".into(),
            ))
        })
    };
    // The common case, one argument holding one value: decode in place.
    if let [slot] = input.args {
        match slot {
            ArgSlot::Value(bytes) => return codec().deserialize(bytes),
            ArgSlot::Future(_) => return codec().deserialize(next_dep()?),
            ArgSlot::Futures(_) => {}
        }
    }
    let mut joined = Vec::new();
    for slot in input.args {
        match slot {
            ArgSlot::Value(bytes) => joined.extend_from_slice(bytes),
            ArgSlot::Future(_) => joined.extend_from_slice(next_dep()?),
            ArgSlot::Futures(keys) => {
                codec().serialize_into(&mut joined, &(keys.len() as u64))?;
                for _ in keys {
                    joined.extend_from_slice(next_dep()?);
                }
            }
        }
    }
    codec().deserialize(&joined)
}

fn describe_decode_error<F>(error: bincode::Error) -> String {
    format!(
        "could not decode the arguments of {}: {error}",
        function_name::<F>()
    )
}

/// The trampoline of a function whose result is the task's value.
pub fn trampoline<F, Args>(input: &TaskInput<'_>) -> Result<Vec<u8>, String>
where
    F: TaskFn<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    let output = conjure::<F>().call(args);
    encode_value(&output).map_err(|e| format!("could not encode the result: {e}"))
}

/// The trampoline of a function returning `Result<T, E>`: `Err` fails the task.
pub fn fallible_trampoline<F, Args, T, E>(input: &TaskInput<'_>) -> Result<Vec<u8>, String>
where
    F: TaskFn<Args, Output = Result<T, E>>,
    Args: DeserializeOwned,
    T: Serialize,
    E: Display,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    let value = conjure::<F>().call(args).map_err(|e| e.to_string())?;
    encode_value(&value).map_err(|e| format!("could not encode the result: {e}"))
}

/// Keeps futures used as arguments alive until their dependent task has been queued for
/// sending, so the release of a dropped future never overtakes the task that needs it.
pub type KeepAlive = Vec<Future<()>>;

/// One argument of type `T`: either a value of type `T` or a future of one.
pub trait Arg<T> {
    /// Encodes the argument.
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot>;
}

impl<T: Serialize> Arg<T> for T {
    fn into_slot(self, _keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        Ok(ArgSlot::Value(encode_value(&self)?))
    }
}

impl<T: Serialize> Arg<T> for &T {
    fn into_slot(self, _keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        Ok(ArgSlot::Value(encode_value(self)?))
    }
}

impl<T> Arg<T> for Future<T> {
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        let slot = ArgSlot::Future(self.key());
        keep.push(self.erase());
        Ok(slot)
    }
}

impl<T> Arg<T> for &Future<T> {
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        self.clone().into_slot(keep)
    }
}

impl<T> Arg<Vec<T>> for Vec<Future<T>> {
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        self.as_slice().into_slot(keep)
    }
}

impl<T> Arg<Vec<T>> for &Vec<Future<T>> {
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        self.as_slice().into_slot(keep)
    }
}

impl<T> Arg<Vec<T>> for &[Future<T>] {
    fn into_slot(self, keep: &mut KeepAlive) -> bincode::Result<ArgSlot> {
        let keys = self.iter().map(Future::key).collect();
        keep.extend(self.iter().map(|f| f.clone().erase()));
        Ok(ArgSlot::Futures(keys))
    }
}

/// The arguments of a call: a single argument for a one-argument function, a tuple for more,
/// `()` for none.
pub trait IntoArgs<Args> {
    /// Encodes the arguments, one slot each.
    fn into_slots(self, keep: &mut KeepAlive) -> bincode::Result<Vec<ArgSlot>>;
}

impl IntoArgs<()> for () {
    fn into_slots(self, _keep: &mut KeepAlive) -> bincode::Result<Vec<ArgSlot>> {
        Ok(Vec::new())
    }
}

impl<X: Arg<A>, A> IntoArgs<(A,)> for X {
    fn into_slots(self, keep: &mut KeepAlive) -> bincode::Result<Vec<ArgSlot>> {
        Ok(vec![self.into_slot(keep)?])
    }
}

macro_rules! impl_into_args {
    ($(($x:ident, $a:ident)),+) => {
        impl<$($x: Arg<$a>, $a),+> IntoArgs<($($a,)+)> for ($($x,)+) {
            #[allow(non_snake_case)]
            fn into_slots(self, keep: &mut KeepAlive) -> bincode::Result<Vec<ArgSlot>> {
                let ($($x,)+) = self;
                Ok(vec![$($x.into_slot(keep)?),+])
            }
        }
    };
}

impl_into_args!((X1, A1), (X2, A2));
impl_into_args!((X1, A1), (X2, A2), (X3, A3));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5));
impl_into_args!((X1, A1), (X2, A2), (X3, A3), (X4, A4), (X5, A5), (X6, A6));

/// Builds the [`FnRef`] offset for a task function and its argument tuple.
pub fn plain_offset<F, Args>() -> i64
where
    F: TaskFn<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    offset_of(trampoline::<F, Args>)
}

/// Builds the [`FnRef`] offset for a fallible task function.
pub fn fallible_offset<F, Args, T, E>() -> i64
where
    F: TaskFn<Args, Output = Result<T, E>>,
    Args: DeserializeOwned,
    T: Serialize,
    E: Display,
{
    offset_of(fallible_trampoline::<F, Args, T, E>)
}

/// Runs the function `func` names on `input` (the worker side of a task).
///
/// # Safety
/// `func.offset` must come from [`plain_offset`] or [`fallible_offset`] in this executable.
pub unsafe fn call(func: FnRef, input: &TaskInput<'_>) -> Result<Vec<u8>, String> {
    // SAFETY: forwarded from the caller's contract.
    let trampoline = unsafe { trampoline_at(func.offset) };
    trampoline(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_value;
    use std::sync::Arc;

    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    fn total(values: Vec<u32>) -> u64 {
        values.into_iter().map(u64::from).sum()
    }

    fn checked_div(a: i64, b: i64) -> Result<i64, String> {
        if b == 0 {
            Err(format!("division of {a} by zero"))
        } else {
            Ok(a / b)
        }
    }

    fn run(offset: i64, args: &[ArgSlot], deps: &[Payload]) -> Result<Vec<u8>, String> {
        let func = FnRef { offset, name: 0 };
        unsafe { call(func, &TaskInput { args, deps }) }
    }

    fn value<T: Serialize>(v: T) -> ArgSlot {
        ArgSlot::Value(encode_value(&v).unwrap())
    }

    #[test]
    fn trampolines_round_trip_through_offsets() {
        let out = run(
            plain_offset::<_, (i64, i64)>(add),
            &[value(2i64), value(40i64)],
            &[],
        );
        assert_eq!(decode_value::<i64>(&out.unwrap()).unwrap(), 42);
    }

    // `plain_offset` takes the function as a type; these helpers infer it from a value.
    fn plain_offset<F: TaskFn<Args>, Args: DeserializeOwned>(_f: F) -> i64
    where
        F::Output: Serialize,
    {
        super::plain_offset::<F, Args>()
    }

    fn fallible_offset<F, Args, T, E>(_f: F) -> i64
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned,
        T: Serialize,
        E: Display,
    {
        super::fallible_offset::<F, Args, T, E>()
    }

    #[test]
    fn dependencies_fill_future_slots_in_order() {
        let deps: Vec<Payload> = vec![
            Arc::new(encode_value(&5i64).unwrap()),
            Arc::new(encode_value(&7i64).unwrap()),
        ];
        let args = [
            ArgSlot::Future(crate::protocol::Key(1)),
            ArgSlot::Future(crate::protocol::Key(2)),
        ];
        let out = run(plain_offset(add), &args, &deps).unwrap();
        assert_eq!(decode_value::<i64>(&out).unwrap(), 12);
    }

    #[test]
    fn a_list_of_futures_decodes_as_a_vec() {
        let deps: Vec<Payload> = (1u32..=4)
            .map(|v| Arc::new(encode_value(&v).unwrap()))
            .collect();
        let keys = (1..=4).map(crate::protocol::Key).collect();
        let out = run(plain_offset(total), &[ArgSlot::Futures(keys)], &deps).unwrap();
        assert_eq!(decode_value::<u64>(&out).unwrap(), 10);
    }

    #[test]
    fn closures_without_captures_are_tasks() {
        let square = |x: f64| x * x;
        let out = run(plain_offset(square), &[value(3.0f64)], &[]).unwrap();
        assert_eq!(decode_value::<f64>(&out).unwrap(), 9.0);
    }

    #[test]
    fn fallible_functions_fail_with_their_error() {
        let offset = fallible_offset(checked_div);
        let ok = run(offset, &[value(9i64), value(3i64)], &[]).unwrap();
        assert_eq!(decode_value::<i64>(&ok).unwrap(), 3);
        let err = run(offset, &[value(9i64), value(0i64)], &[]).unwrap_err();
        assert_eq!(err, "division of 9 by zero");
    }

    #[test]
    fn wrong_argument_bytes_are_an_error() {
        let err = run(plain_offset(add), &[ArgSlot::Value(vec![0xff])], &[]).unwrap_err();
        assert!(
            err.contains("could not decode the arguments of add"),
            "{err}"
        );
    }

    #[test]
    fn names_are_readable() {
        assert_eq!(function_name_of(add), "add");
        let closure = |x: i32| x;
        assert_eq!(function_name_of(closure), "names_are_readable.closure");
    }

    fn function_name_of<F>(_f: F) -> String {
        function_name::<F>()
    }
}
