//! Monte-Carlo estimate of pi with futures: `client.map` over K tasks, each drawing its
//! points from a counter-based random generator keyed by (seed, task index), so the same
//! seed gives the same estimate whatever the number of ranks.
//!
//! ```text
//! mpirun -np 4 target/release/examples/pi_futures --samples 200000000 --tasks 64
//! ```
//!
//! With `--checkpoint DIR` each task's count is kept in DIR as it finishes: the same job
//! stopped (walltime, scancel) and started again computes only the tasks it had not
//! finished, and gives the same estimate (`tests/slurm.rs` runs that cycle with
//! `mpidask jobscript --checkpoint DIR --requeue`).
//!
//! Prints the estimate, its error, the workers and the time, then a machine-readable line
//! `RESULT samples=<n> pi=<value> err=<value> workers=<n> seconds=<value>`. Exits non-zero
//! if the estimate is further from pi than six standard deviations.

use anyhow::{Context, ensure};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Monte-Carlo estimate of pi with mpidask futures.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Random points in all
    #[arg(long, default_value_t = 200_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,

    /// Tasks the points are split into
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    tasks: u64,

    /// Seed of the random points
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Show the progress of the tasks (a bar on a terminal, a line every
    /// --progress-interval seconds in a batch log)
    #[arg(long)]
    progress: bool,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// A uniform double in [0, 1) from the top 53 bits of `bits`.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Counts the points of task `index` that fall inside the unit quarter circle. ChaCha is a
/// counter-based generator: stream `index` of key `seed` is the same on every rank.
fn count_hits((seed, index, points): (u64, u64, u64)) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let mut hits = 0;
    for _ in 0..points {
        let x = unit(rng.next_u64());
        let y = unit(rng.next_u64());
        hits += u64::from(x * x + y * y < 1.0);
    }
    hits
}

/// Points of task `index` when `samples` are split over `tasks` as evenly as possible.
fn points_of(index: u64, samples: u64, tasks: u64) -> u64 {
    samples / tasks + u64::from(index < samples % tasks)
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let workers = client
            .scheduler_info()
            .context("asking the scheduler for the workers")?
            .workers
            .len();
        let started = Instant::now();
        let calls = (0..cli.tasks).map(|i| (cli.seed, i, points_of(i, cli.samples, cli.tasks)));
        let futures = client.map(count_hits, calls);
        if cli.progress {
            client.progress(&futures)?;
        }
        let hits: u64 = client.gather(&futures)?.into_iter().sum();
        let seconds = started.elapsed().as_secs_f64();

        let pi = 4.0 * hits as f64 / cli.samples as f64;
        let err = (pi - std::f64::consts::PI).abs();
        println!("Samples:   {}", cli.samples);
        println!("Tasks:     {}", cli.tasks);
        println!("MC pi:     {pi:.10}");
        println!("Err:       {err:.3e}");
        println!("Workers:   {workers}");
        println!("Time:      {seconds:.3} s");
        println!(
            "RESULT samples={} pi={pi:.12} err={err:.6e} workers={workers} seconds={seconds:.6}",
            cli.samples
        );

        // A hit has probability p = pi/4; the estimate's standard deviation is
        // 4 sqrt(p (1 - p) / n).
        let p = std::f64::consts::PI / 4.0;
        let sigma = 4.0 * (p * (1.0 - p) / cli.samples as f64).sqrt();
        ensure!(
            err <= 6.0 * sigma,
            "the estimate {pi} is {err:.3e} from pi, more than 6 standard deviations \
             ({:.3e}): the random points or the sum are wrong",
            6.0 * sigma
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_add_up() {
        for (samples, tasks) in [(10, 3), (7, 7), (100, 1), (5, 8)] {
            let total: u64 = (0..tasks).map(|i| points_of(i, samples, tasks)).sum();
            assert_eq!(total, samples);
        }
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        assert_eq!(count_hits((1, 0, 1000)), count_hits((1, 0, 1000)));
        assert_ne!(count_hits((1, 0, 10_000)), count_hits((1, 1, 10_000)));
    }
}
