//! The HPC centre's Dask example, Monte-Carlo Pi over a chunked random array, written the
//! way dask.array writes it:
//!
//! ```python
//! xy = da.random.uniform(0, 1, size=(n / 2, 2), chunks=(c / 2, 2))
//! pi = 4 * ((xy ** 2).sum(axis=-1) < 1).mean()
//! ```
//!
//! for arrays of 1, 10 and 100 GB of doubles (n = bytes / 8) in 200 MB chunks:
//!
//! ```text
//! mpirun -np 4 target/release/examples/pi --sizes-gb 1,10,100 --chunk-mb 200
//! ```
//!
//! For each size it prints the size, the estimate, its error, the workers and the time,
//! then `RESULT bytes=<n> pi=<value> err=<value> workers=<n> seconds=<value>`. It exits
//! non-zero if an estimate is further from pi than six standard deviations.

use anyhow::{Context, ensure};
use clap::Parser;
use mpidask::array::random;
use std::time::Instant;

/// Monte-Carlo Pi over a chunked random array (the seed's dask.array workload).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Array sizes in GB (10^9 bytes) of doubles, comma separated
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    sizes_gb: Vec<f64>,

    /// Chunk size in MB (10^6 bytes)
    #[arg(long, default_value_t = 200.0)]
    chunk_mb: f64,

    /// Seed of the random array
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Print the task graph of each computation before running it
    #[arg(long)]
    explain: bool,

    /// Show the progress of each computation (a bar on a terminal, a line every
    /// --progress-interval seconds in a batch log)
    #[arg(long)]
    progress: bool,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        ensure!(
            cli.chunk_mb > 0.0,
            "--chunk-mb must be positive, got {}",
            cli.chunk_mb
        );
        let workers = client
            .scheduler_info()
            .context("asking the scheduler for the workers")?
            .workers
            .len();
        for &gb in &cli.sizes_gb {
            ensure!(gb > 0.0, "--sizes-gb values must be positive, got {gb}");
            let bytes = (gb * 1e9) as u64;
            let n = (bytes / 8) as usize; // doubles
            let c = ((cli.chunk_mb * 1e6) as usize / 8).max(2); // doubles per chunk
            let xy = random::uniform(0.0, 1.0, &[n / 2, 2], &[c / 2, 2], cli.seed);
            let pi =
                (xy.powi(2).sum_axis(-1).lt(1.0).mean() * 4.0).astype(mpidask::array::DType::F64);
            if cli.explain {
                println!("{}", pi.explain());
            }
            let started = Instant::now();
            let estimate = if cli.progress {
                client.with_progress(|| pi.compute_scalar::<f64>(client))?
            } else {
                pi.compute_scalar::<f64>(client)?
            };
            let seconds = started.elapsed().as_secs_f64();
            let err = (estimate - std::f64::consts::PI).abs();
            println!("Size:    {gb} GB");
            println!("MC pi:   {estimate:.10}");
            println!("Err:     {err:.3e}");
            println!("Workers: {workers}");
            println!("Time:    {seconds:.3} s");
            println!(
                "RESULT bytes={bytes} pi={estimate:.12} err={err:.6e} workers={workers} seconds={seconds:.6}"
            );
            // Each of the n/2 points is inside with probability p = pi/4.
            let points = (n / 2) as f64;
            let p = std::f64::consts::PI / 4.0;
            let sigma = 4.0 * (p * (1.0 - p) / points).sqrt();
            ensure!(
                err <= 6.0 * sigma,
                "the estimate {estimate} is {err:.3e} from pi, more than 6 standard deviations \
                 ({:.3e}): the random array or the reduction is wrong",
                6.0 * sigma
            );
        }
        Ok(())
    })
}
