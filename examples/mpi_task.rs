//! A distributed dot product as one MPI task: `n_workers` workers run it together, each
//! computes the products of its share of the indices, and `MPI_Allreduce` sums them over
//! the task's communicator. The task's length comes from a future and its result feeds a
//! plain task, so the MPI step sits inside a task graph. No Dask runtime has MPI tasks; the
//! nearest is a separate `mpi4py` job.
//!
//! ```text
//! mpirun -np 5 target/release/examples/mpi_task --n 10000000
//! ```
//!
//! The workers of the task are those of the job's MPI processes (by default all of them,
//! `--workers` to ask for fewer); local mode has none, so the example needs a launcher. It
//! prints `RESULT n=<n> workers=<k> dot=<value> seconds=<value>` and exits non-zero if the
//! value differs from a serial loop's by more than 1e-12 relative, or if the communicator
//! was not of the workers asked for.

use anyhow::ensure;
use clap::Parser;
use mpidask::MpiComm;
use mpidask::mpi::collective::SystemOperation;
use mpidask::mpi::traits::*;
use std::time::Instant;

/// A dot product computed by one MPI task over several workers.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Length of the vectors
    #[arg(long, default_value_t = 10_000_000)]
    n: u64,

    /// Workers that run the task (default: every worker of the job)
    #[arg(long)]
    workers: Option<usize>,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// The vectors' elements, made where they are used.
fn x(i: u64) -> f64 {
    (i as f64 * 1e-3).sin()
}

fn y(i: u64) -> f64 {
    1.0 / (1.0 + i as f64)
}

/// The length, as a task (the MPI task depends on its future).
fn length(n: u64) -> u64 {
    n
}

/// The MPI task: this member's share of `x . y`, summed over the communicator; with the
/// communicator's size, to check that every member took part.
fn dot(comm: &MpiComm, n: u64) -> (f64, i32) {
    let (rank, size) = (comm.rank() as u64, comm.size() as u64);
    let (start, end) = (n * rank / size, n * (rank + 1) / size);
    let mine: f64 = (start..end).map(|i| x(i) * y(i)).sum();
    let mut total = 0.0;
    comm.all_reduce_into(&mine, &mut total, SystemOperation::sum());
    (total, comm.size())
}

/// A plain task after the MPI task.
fn checked((value, size): (f64, i32)) -> (f64, i32) {
    (value, size)
}

fn main() {
    let cli = Cli::parse();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let workers = cli.workers.unwrap_or(client.workers().len());
        let start = Instant::now();
        let n = client.submit(length, cli.n);
        let product = client.submit_mpi(dot, &n, workers);
        let (value, size) = client.submit(checked, &product).result()?;
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "RESULT n={} workers={size} dot={value:.15e} seconds={seconds:.3}",
            cli.n
        );
        ensure!(
            usize::try_from(size) == Ok(workers),
            "the task's communicator had {size} ranks, not the {workers} workers asked for"
        );
        let serial: f64 = (0..cli.n).map(|i| x(i) * y(i)).sum();
        let error = (value - serial).abs() / serial.abs().max(f64::MIN_POSITIVE);
        ensure!(
            error <= 1e-12,
            "the MPI task gives {value:.15e}, the serial loop {serial:.15e} (relative \
             difference {error:.1e})"
        );
        println!("CHECK ok: dot = {serial:.15e} on {workers} workers");
        Ok(())
    })
}
