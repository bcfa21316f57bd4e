//! Recursive Fibonacci with tasks that submit tasks: above the cut-off each call submits
//! the two below it from inside its task, through its task client, and waits for them. In
//! Dask:
//!
//! ```python
//! def fib(n):
//!     if n < cutoff:
//!         return fib_serial(n)
//!     client = get_client()
//!     a, b = client.submit(fib, n - 1), client.submit(fib, n - 2)
//!     secede()
//!     a, b = client.gather([a, b])
//!     rejoin()
//!     return a + b
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/fib --n 25 --cutoff 15 --nthreads 1
//! ```
//!
//! A task waiting for its two calls gives its thread back to the worker meanwhile, so the
//! recursion goes deeper than the worker threads without a deadlock. It prints
//! `RESULT n=<n> cutoff=<c> fib=<value> tasks=<count> seconds=<value>` and exits non-zero
//! if the value differs from the loop's.

use anyhow::ensure;
use clap::Parser;
use std::time::Instant;

/// Recursive Fibonacci where each call above the cut-off submits two tasks.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Which Fibonacci number
    #[arg(long, default_value_t = 22)]
    n: u32,

    /// Below this, a call computes in its own task
    #[arg(long, default_value_t = 12)]
    cutoff: u32,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// Plain recursion, inside one task.
fn fib_serial(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib_serial(n - 1) + fib_serial(n - 2)
    }
}

/// The task: `(fib(n), tasks it took)`, each call above the cut-off submitting two.
fn fib((n, cutoff): (u32, u32)) -> Result<(u64, u64), String> {
    if n < cutoff.max(2) {
        return Ok((fib_serial(n), 1));
    }
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    // Not pure, so every call is a task of its own and the count below is the tree's:
    // pure (the default), a call made again while its first future lives (fib(n - 2) by
    // this task and by fib(n - 1) on the same worker) would be that one task.
    let each = client.with_options(mpidask::TaskOptions::default().pure(false));
    let a = each.try_submit(fib, (n - 1, cutoff));
    let b = each.try_submit(fib, (n - 2, cutoff));
    let parts = client.gather(&[a, b]).map_err(|e| e.to_string())?;
    Ok(parts
        .into_iter()
        .fold((0, 1), |(value, tasks), (v, t)| (value + v, tasks + t)))
}

/// The n-th Fibonacci number by a loop, to check against.
fn fib_loop(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

fn main() {
    let cli = Cli::parse();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        ensure!(
            cli.n <= 90,
            "--n {} is too large for u64: at most 90",
            cli.n
        );
        let start = Instant::now();
        let (value, tasks) = client.try_submit(fib, (cli.n, cli.cutoff)).result()?;
        let seconds = start.elapsed().as_secs_f64();
        let expected = fib_loop(cli.n);
        println!(
            "RESULT n={} cutoff={} fib={value} tasks={tasks} seconds={seconds:.3}",
            cli.n, cli.cutoff
        );
        ensure!(
            value == expected,
            "fib({}) = {value}, but the loop gives {expected}",
            cli.n
        );
        println!("CHECK ok: fib({}) = {expected}", cli.n);
        Ok(())
    })
}
