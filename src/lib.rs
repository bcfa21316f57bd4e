//! # mpidask: Dask's programming model over MPI
//!
//! One executable, started by `mpirun` or `srun`. Every rank calls [`run`] first thing in
//! `main`; then
//!
//! * **rank 0** runs the scheduler, a pure state machine ([`scheduler`]) that decides which
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

pub mod client;
pub mod collections;
pub mod config;
pub mod error;
pub mod exit;
pub mod jobscript;
pub mod keymap;
pub mod logging;
pub mod memory;
pub mod node;
pub mod private_dir;
pub mod process;
pub mod protocol;
pub mod scheduler;
pub mod startup;
pub mod task;
pub mod trace;
pub mod transport;
pub mod worker;

pub use collections::{array, bag, delayed};

pub use client::{AsCompleted, Client, Future, Submitter};
pub use config::RuntimeArgs;
pub use error::{Error, Result, TaskError, TaskFailure};
pub use exit::ExitCode;
pub use protocol::{Rank, SchedulerInfo, TaskOptions};
pub use startup::{ClientOutcome, parse_args, run, run_local, run_with};
pub use worker::executor::worker_rank;
