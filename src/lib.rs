//! # mpidask: Dask's programming model over MPI
//!
//! One executable, started by `mpirun` or `srun`. Every rank calls [`run`] first thing in
//! `main`; then
//!
//! * **rank 0** runs the scheduler, a pure state machine that decides which
//!   worker runs which task;
//! * **rank 1** runs the user's program with a [`Client`]: it submits tasks and gets
//!   [`Future`]s back;
//! * **ranks 2, 3, ...** are workers: they run tasks on a thread pool, keep their results,
//!   and send them straight to the worker or client that needs them.
//!
//! Started without a launcher (a world of one rank) the same program runs in *local mode*:
//! scheduler and workers become threads of one process. Every byte between ranks travels
//! as an MPI message; mpidask opens no socket of its own.
//!
//! ```text
//!   client (1) --Submit--> scheduler (0) --Compute--> worker (2) --GetData--> worker (3)
//!        ^                    |   ^                      |  ^                    |
//!        |<----KeyDone--------+   +---TaskFinished-------+  +-------Data---------+
//!        +------------------------------ GetData / Data ------------------------>|
//! ```
//!
//! ## Words
//!
//! * **task**: one call of a plain Rust function (an `fn` item or a closure that captures
//!   nothing) on a worker;
//! * **key**: the identity of a task and of its result;
//! * **graph**: tasks linked by futures passed as arguments;
//! * **rank**: an MPI process (or, in local mode, a thread standing for one).
//!
//! ## Example
//!
//! ```
//! fn inc(x: i64) -> i64 { x + 1 }
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! let sum = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let a = client.submit(inc, 1);
//!     let b = client.submit(inc, &a);          // depends on `a`
//!     let c = client.submit(add, (a, b));      // two arguments: a tuple
//!     c.result()
//! });
//! assert_eq!(sum.unwrap(), 5);
//! ```
//!
//! A real program calls [`run`] (or [`run_with`]) instead of [`run_local`]; see
//! `examples/pi_futures.rs`.

#![warn(missing_docs)]

#[cfg(feature = "huge-page-allocator")]
mod allocator;
#[cfg(feature = "huge-page-allocator")]
#[global_allocator]
static ALLOCATOR: allocator::HugePageAllocator = allocator::HugePageAllocator;
mod checkpoint;
mod client;
mod collections;
mod config;
mod error;
mod exit;
pub mod jobscript;
mod keymap;
mod logging;
mod memory;
pub mod ml;
mod node;
mod private_dir;
pub mod project;
mod startup;
mod trace;
mod worker;

// Public (hidden from the docs) with the `internals` feature, for the project's benchmarks,
// fuzz target and fault-injection tests (see `internals`); private otherwise.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod process;
#[cfg(not(feature = "internals"))]
mod process;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod protocol;
#[cfg(not(feature = "internals"))]
mod protocol;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod scheduler;
#[cfg(not(feature = "internals"))]
mod scheduler;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod task;
#[cfg(not(feature = "internals"))]
mod task;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod transport;
#[cfg(not(feature = "internals"))]
mod transport;

#[cfg(feature = "internals")]
pub mod internals;

/// rsmpi, the MPI bindings an MPI task's function uses on its communicator
/// ([`Client::submit_mpi`]): `use mpidask::mpi::traits::*;`.
pub use ::mpi;
pub use client::{
    AsCompleted, CallArg, Client, DoneAndNotDone, Event, Future, FutureStatus, Lock,
    PerformanceReport, Queue, ReturnWhen, Semaphore, Submitter, TaskRecord, TaskStream, Variable,
    WithResults, task_client,
};
#[cfg(feature = "dataframe")]
pub use collections::dataframe;
pub use collections::{array, bag, dataset, delayed};
pub use config::{ResourceList, RuntimeArgs};
pub use error::{Error, Result, TaskError, TaskFailure};
pub use exit::ExitCode;
pub use memory::{MemoryLimitSpec, human_bytes};
pub use protocol::{
    JobProgress, Key, Rank, Resource, SchedulerInfo, TaskOptions, WorkerHello, WorkerInfo,
};
pub use startup::{
    ClientOutcome, MpiSetup, mpi_setup, parse_args, ranks_per_node, run, run_local, run_with,
};
pub use task::{Arg, IntoArgs, TaskFn, ValueSlot};
pub use transport::MpiComm;
pub use worker::MpiTaskFn;
pub use worker::executor::worker_rank;
