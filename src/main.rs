//! The `mpidask` command: facts about a launch, and the exit codes of mpidask jobs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mpidask::{ExitCode, RuntimeArgs};
use std::collections::BTreeSet;

/// mpidask: Dask's programming model over MPI.
#[derive(Parser)]
#[command(name = "mpidask", version, after_help = exit_code_help())]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Print the MPI library, thread level, ranks and workers of a launch (run it the way a
    /// job runs: `mpirun -np 4 mpidask info`)
    Info {
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Print the exit codes every rank of an mpidask job ends with
    ExitCodes,
}

fn exit_code_help() -> String {
    let mut text = String::from("Exit codes of mpidask jobs:\n");
    for code in ExitCode::ALL {
        text.push_str(&format!("  {:>3}  {}\n", code.code(), code.describe()));
    }
    text.push_str(
        "  other  set by the launcher: 128 + the signal for a rank killed by one (137 SIGKILL,\n         \
         134 abort); Open MPI's mpirun returns 1 when it was sent SIGTERM itself",
    );
    text
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    match cli.command {
        Commands::ExitCodes => println!("{}", exit_code_help()),
        Commands::Info { runtime } => mpidask::run_with(runtime, |client| -> anyhow::Result<()> {
            let info = client.scheduler_info().context("asking the scheduler")?;
            let setup = mpidask::runtime::mpi_setup();
            let mode = if setup.is_some_and(|s| s.world_size > 1) {
                "MPI"
            } else {
                "local (no launcher)"
            };
            println!("mode:           {mode}");
            if let Some(setup) = setup {
                println!(
                    "MPI library:    {}",
                    setup.library_version.lines().next().unwrap_or("")
                );
                println!(
                    "thread level:   {} (mpidask needs Funneled)",
                    setup.thread_level
                );
                println!("ranks:          {}", setup.world_size);
            }
            let hosts: BTreeSet<&str> =
                info.workers.iter().map(|w| w.hello.host.as_str()).collect();
            println!("worker nodes:   {}", hosts.len());
            println!("workers:        {}", info.workers.len());
            for worker in &info.workers {
                let resources: Vec<String> = worker
                    .hello
                    .resources
                    .iter()
                    .map(|r| format!("{}={}", r.name, r.amount))
                    .collect();
                println!(
                    "  {} on {}: {} threads, resources: {}",
                    worker.rank,
                    worker.hello.host,
                    worker.hello.nthreads,
                    if resources.is_empty() {
                        "none".to_string()
                    } else {
                        resources.join(",")
                    }
                );
            }
            Ok(())
        }),
    }
}
