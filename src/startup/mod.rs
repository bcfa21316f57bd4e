//! Start-up and the end of a job: every rank calls [`run`] (or [`run_with`]); under a
//! launcher each takes its role over MPI ([`mpi_job`]), in a world of one rank every role
//! runs on threads ([`local`]); all end with the same exit code, which the user's program
//! decides ([`outcome`]) unless a signal, a lost rank or a broken message stops the job.

mod launch;
mod local;
mod mpi_job;
mod outcome;
mod panics;
mod roles;
mod signals;

pub use launch::parse_args;
pub use mpi_job::{MpiSetup, mpi_setup, ranks_per_node};
pub use outcome::ClientOutcome;

use crate::client::Client;
use crate::config::RuntimeArgs;
use crate::exit::ExitCode;
use crate::logging;

/// Runs a job: call it first thing in `main`. Reads the runtime settings from `MPIDASK_*`
/// environment variables; use [`run_with`] to take them from the command line.
///
/// Under `mpirun`/`srun`, rank 0 becomes the scheduler, rank 1 runs `program` and ranks 2
/// and up run tasks. Started without a launcher (a world of one rank) the same program runs
/// in local mode, with the scheduler and workers as threads. Never returns: every rank exits
/// with the same code (see [`ExitCode`]).
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
/// fn main() {
///     // `mpirun -np 4 ./program`: rank 1 runs this closure, ranks 2.. run the tasks.
///     mpidask::run(|client| -> anyhow::Result<()> {
///         let squares = client.map(square, 0..100u64);
///         println!("{}", client.gather(&squares)?.iter().sum::<u64>());
///         Ok(())
///     })
/// }
/// ```
pub fn run<F, R>(program: F) -> !
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    logging::init();
    let args = launch::runtime_args_from_env();
    run_with(args, program)
}

/// [`run`] with explicit settings, e.g. flattened into the program's own `clap` parser.
///
/// ```no_run
/// use clap::Parser;
/// /// My program.
/// #[derive(Parser)]
/// struct Cli {
///     /// Numbers to square
///     #[arg(long, default_value_t = 100)]
///     count: u64,
///     /// --nthreads, --memory-limit, --report, ... beside the program's own flags
///     #[command(flatten)]
///     runtime: mpidask::RuntimeArgs,
/// }
/// fn square(x: u64) -> u64 { x * x }
/// fn main() {
///     let cli: Cli = mpidask::parse_args();
///     mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
///         let squares = client.map(square, 0..cli.count);
///         println!("{}", client.gather(&squares)?.iter().sum::<u64>());
///         Ok(())
///     })
/// }
/// ```
pub fn run_with<F, R>(args: RuntimeArgs, program: F) -> !
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    logging::init();
    if let Some(dir) = &args.log_dir {
        logging::log_to_dir(dir);
    }
    panics::install_panic_hook();
    let stop_signal = signals::install_stop_handlers();
    let code = mpi_job::start(&args, &stop_signal, program);
    crate::exit::run_exit_hooks();
    std::process::exit(code)
}

/// Runs `program` against a scheduler and workers on threads of this process and returns
/// its value (for tests, examples and notebooks-style use; no MPI involved).
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let total: u64 = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let squares = client.map(square, 1..=4u64);
///     client.gather(&squares).unwrap().into_iter().sum()
/// });
/// assert_eq!(total, 30);
/// ```
///
/// # Panics
/// If `args.checkpoint` names a directory that cannot be used (the message says why), and
/// with the program's own panic.
pub fn run_local<T: Send>(args: RuntimeArgs, program: impl FnOnce(&Client) -> T + Send) -> T {
    logging::init();
    if let Some(dir) = &args.log_dir {
        logging::log_to_dir(dir);
    }
    panics::install_panic_hook();
    if let Err(message) = open_checkpoint(&args) {
        panic!("{message}");
    }
    let (_, result) = local::local_job(
        &args,
        &signals::no_stop_signals(),
        program,
        |result, _stopping| match &result {
            Ok(_) => (ExitCode::Success.code(), result),
            Err(_) => {
                // The hook kept the report for the runtime; the panic resumed below has
                // no hook of its own to print it.
                if let Some(report) = panics::take_client_panic() {
                    log::error!("the client program {report}");
                }
                (ExitCode::ClientPanic.code(), result)
            }
        },
    );
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Opens `--checkpoint`, if the run has one, before any task runs (on rank 0, or in local
/// mode); the error is the job's start-up error, to be logged.
fn open_checkpoint(args: &RuntimeArgs) -> Result<(), String> {
    match &args.checkpoint {
        Some(dir) => crate::checkpoint::open_for_job(dir).map(drop),
        None => Ok(()),
    }
}
