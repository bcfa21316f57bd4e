//! Tasks are plain Rust functions: how a function becomes something any rank can call
//! ([`functions`]: registered ids, resolved through one checked function), how a call's
//! arguments are encoded ([`args`]) and how a worker decodes them and calls it ([`call`]).
//!
//! For a task function `F` the client registers the monomorphised [`trampoline`] for `F`; a
//! worker resolves the task's function id to its own address of that trampoline and calls
//! it, which decodes the arguments, conjures the zero-sized `F` and calls it.
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

mod args;
mod call;
mod functions;
mod panic;

pub use args::{Arg, IntoArgs, ValueSlot};
pub(crate) use call::describe_decode_error;
pub use call::{
    CallError, TaskInput, Trampoline, call, decode_args, encode_result, fallible_trampoline_of,
    trampoline_of,
};
pub(crate) use functions::fn_pointer;
pub use functions::{FnPointer, FunctionTable, Registry, new_job_key};
pub use panic::record_task_panic;
pub(crate) use panic::{panic_message, payload_text};

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
/// Implemented for every zero-sized `Fn` of 0 to 6 arguments: `fn` items and closures that
/// capture nothing (a capturing closure or a function pointer does not compile).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ArgSlot, Bytes, FnId, Key, Payload, decode_value, encode_value};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::fmt::Display;
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

    /// A worker's view of one registered trampoline.
    fn run(trampoline: Trampoline, args: &[ArgSlot], deps: &[Payload]) -> Result<Bytes, CallError> {
        let key = new_job_key();
        let mut registry = Registry::new(key);
        let (id, msg) = registry.id_of(trampoline, || "t".into());
        let mut functions = FunctionTable::new(key);
        functions.register(msg.unwrap()).unwrap();
        let input = TaskInput {
            args,
            deps,
            uses: &[],
            functions: &functions,
        };
        call(id, &input)
    }

    fn value<T: Serialize>(v: T) -> ArgSlot {
        ArgSlot::Value(encode_value(&v).unwrap())
    }

    // The trampolines take the function as a type; these helpers infer it from a value.
    fn plain<F: TaskFn<Args>, Args: DeserializeOwned + 'static>(_f: F) -> Trampoline
    where
        F::Output: Serialize + 'static,
    {
        trampoline_of::<F, Args>()
    }

    fn fallible<F, Args, T, E>(_f: F) -> Trampoline
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned + 'static,
        T: Serialize + 'static,
        E: Display,
    {
        fallible_trampoline_of::<F, Args, T, E>()
    }

    #[test]
    fn trampolines_round_trip_through_registered_ids() {
        let out = run(
            plain::<_, (i64, i64)>(add),
            &[value(2i64), value(40i64)],
            &[],
        );
        assert_eq!(decode_value::<i64>(&out.unwrap()).unwrap(), 42);
    }

    #[test]
    fn dependencies_fill_future_slots_in_order() {
        let deps: Vec<Payload> = vec![
            Arc::new(encode_value(&5i64).unwrap().into()),
            Arc::new(encode_value(&7i64).unwrap().into()),
        ];
        let args = [ArgSlot::Future(Key(1)), ArgSlot::Future(Key(2))];
        let out = run(plain(add), &args, &deps).unwrap();
        assert_eq!(decode_value::<i64>(&out).unwrap(), 12);
    }

    #[test]
    fn a_list_of_futures_decodes_as_a_vec() {
        let deps: Vec<Payload> = (1u32..=4)
            .map(|v| Arc::new(encode_value(&v).unwrap().into()))
            .collect();
        let keys = (1..=4).map(Key).collect();
        let out = run(plain(total), &[ArgSlot::Futures(keys)], &deps).unwrap();
        assert_eq!(decode_value::<u64>(&out).unwrap(), 10);
    }

    #[test]
    fn closures_without_captures_are_tasks() {
        let square = |x: f64| x * x;
        let out = run(plain(square), &[value(3.0f64)], &[]).unwrap();
        assert_eq!(decode_value::<f64>(&out).unwrap(), 9.0);
    }

    #[test]
    fn fallible_functions_fail_with_their_error() {
        let t = fallible(checked_div);
        let ok = run(t, &[value(9i64), value(3i64)], &[]).unwrap();
        assert_eq!(decode_value::<i64>(&ok).unwrap(), 3);
        let err = run(t, &[value(9i64), value(0i64)], &[]).unwrap_err();
        assert_eq!(err, CallError::Failed("division of 9 by zero".into()));
    }

    #[test]
    fn wrong_argument_bytes_are_an_error() {
        let err = run(plain(add), &[ArgSlot::Value(vec![0xff])], &[]).unwrap_err();
        assert!(
            matches!(&err, CallError::Failed(m) if m.contains("could not decode the arguments of add")),
            "{err:?}"
        );
    }

    #[test]
    fn an_unregistered_function_is_a_corrupt_task() {
        let functions = FunctionTable::new(new_job_key());
        let input = TaskInput {
            args: &[],
            deps: &[],
            uses: &[FnId(3)],
            functions: &functions,
        };
        assert!(matches!(call(FnId(0), &input), Err(CallError::Corrupt(_))));
        assert!(matches!(
            input.used::<Trampoline>(0),
            Err(CallError::Corrupt(_))
        ));
        assert!(matches!(
            input.used::<Trampoline>(1),
            Err(CallError::Corrupt(_))
        ));
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
