//! The `mpidask` command: facts about a launch, Slurm batch scripts for programs, and the
//! exit codes of mpidask jobs.

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
    /// Print a Slurm batch script that runs a program: `mpidask jobscript [options] --
    /// <program> <args>`
    Jobscript(JobArgs),
    /// Write the batch script to a file and submit it with sbatch
    Submit {
        #[command(flatten)]
        job: JobArgs,
        /// Where to write the script [default: <job-name>.sbatch]
        #[arg(long, value_name = "FILE")]
        script: Option<std::path::PathBuf>,
        /// Wait for the job to end and exit with its exit code (sbatch --wait)
        #[arg(long)]
        wait: bool,
    },
}

/// A batch job for one mpidask program (see `mpidask jobscript --help`).
#[derive(clap::Args, Debug)]
struct JobArgs {
    /// Partition (queue) to submit to
    #[arg(long, visible_alias = "queue", value_name = "NAME")]
    partition: Option<String>,
    /// Account (project) to charge
    #[arg(long, visible_alias = "project", value_name = "NAME")]
    account: Option<String>,
    /// Nodes
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: u32,
    /// Ranks per node: rank 0 is the scheduler, rank 1 the program, the rest workers
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    ntasks_per_node: u32,
    /// CPUs per rank: the threads of each worker
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    cpus_per_task: u32,
    /// Memory per node, e.g. 64G
    #[arg(long, value_name = "SIZE", group = "memory")]
    mem: Option<String>,
    /// Memory per CPU, e.g. 2G
    #[arg(long, value_name = "SIZE", group = "memory")]
    mem_per_cpu: Option<String>,
    /// Memory per GPU, e.g. 16G
    #[arg(long, value_name = "SIZE", group = "memory")]
    mem_per_gpu: Option<String>,
    /// Time limit, HH:MM:SS or D-HH:MM:SS
    #[arg(long, value_name = "TIME")]
    walltime: Option<String>,
    /// GPUs per node
    #[arg(long, value_name = "N", conflicts_with = "gres")]
    gpus_per_node: Option<u32>,
    /// Generic resources, e.g. gpu:2
    #[arg(long, value_name = "SPEC")]
    gres: Option<String>,
    /// Resources every worker advertises to tasks, e.g. gpu=1 (MPIDASK_RESOURCES)
    #[arg(long, value_name = "NAME=AMOUNT,...")]
    resources: Option<String>,
    /// Job name [default: the program's file name]
    #[arg(long, value_name = "NAME")]
    job_name: Option<String>,
    /// Batch log file [default: <job-name>-%j.out]
    #[arg(long, value_name = "PATH")]
    output: Option<String>,
    /// An extra #SBATCH line, e.g. --directive=--constraint=a100 (repeatable)
    #[arg(long, value_name = "LINE", allow_hyphen_values = true)]
    directive: Vec<String>,
    /// A shell line before the launch, e.g. "module load openmpi" (repeatable)
    #[arg(long, value_name = "LINE")]
    prologue: Vec<String>,
    /// How ranks are started
    #[arg(long, value_enum, default_value = "srun")]
    launcher: mpidask::jobscript::Launcher,
    /// Seconds before the time limit at which the job is told to stop in order (SIGUSR1)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    signal: u32,
    /// The program and its arguments, after `--`
    #[arg(last = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

impl JobArgs {
    fn spec(&self) -> mpidask::jobscript::JobSpec {
        use mpidask::jobscript::{JobSpec, Memory};
        let memory = self
            .mem
            .clone()
            .map(Memory::PerNode)
            .or_else(|| self.mem_per_cpu.clone().map(Memory::PerCpu))
            .or_else(|| self.mem_per_gpu.clone().map(Memory::PerGpu));
        JobSpec {
            job_name: self.job_name.clone(),
            partition: self.partition.clone(),
            account: self.account.clone(),
            nodes: self.nodes,
            ntasks_per_node: self.ntasks_per_node,
            cpus_per_task: self.cpus_per_task,
            memory,
            walltime: self.walltime.clone(),
            gpus_per_node: self.gpus_per_node,
            gres: self.gres.clone(),
            resources: self.resources.clone(),
            output: self.output.clone(),
            directives: self.directive.clone(),
            prologue: self.prologue.clone(),
            launcher: self.launcher,
            signal_lead_seconds: self.signal,
            command: self.command.clone(),
            ..JobSpec::default()
        }
    }

    /// The script, or the usage error (exit 2) naming what is wrong.
    fn script(&self) -> String {
        self.spec().render().unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(ExitCode::Usage.code())
        })
    }
}

/// Writes and submits the script; returns the exit code to end with.
fn submit(
    job: &JobArgs,
    script_path: Option<std::path::PathBuf>,
    wait: bool,
) -> anyhow::Result<i32> {
    let script = job.script();
    let path = script_path.unwrap_or_else(|| format!("{}.sbatch", job.spec().name()).into());
    std::fs::write(&path, &script).with_context(|| format!("writing {}", path.display()))?;
    let mut sbatch = std::process::Command::new("sbatch");
    if wait {
        sbatch.arg("--wait");
    }
    sbatch.arg(&path);
    let status = sbatch.status().with_context(|| {
        format!(
            "running sbatch {} (is Slurm installed and on the PATH?)",
            path.display()
        )
    })?;
    Ok(status.code().unwrap_or(1))
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
        Commands::Jobscript(job) => print!("{}", job.script()),
        Commands::Submit { job, script, wait } => match submit(&job, script, wait) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(ExitCode::Startup.code())
            }
        },
        Commands::Info { runtime } => mpidask::run_with(runtime, |client| -> anyhow::Result<()> {
            let info = client.scheduler_info().context("asking the scheduler")?;
            let setup = mpidask::mpi_setup();
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
            if let Some(nodes) = mpidask::ranks_per_node() {
                let listed: Vec<String> = nodes
                    .iter()
                    .map(|(host, n)| format!("{host}: {n}"))
                    .collect();
                println!("nodes:          {}", nodes.len());
                println!("ranks per node: {}", listed.join(", "));
            }
            let hosts: BTreeSet<&str> =
                info.workers.iter().map(|w| w.hello.host.as_str()).collect();
            println!("worker nodes:   {}", hosts.len());
            let per_node: Vec<String> = hosts
                .iter()
                .map(|host| {
                    let n = info
                        .workers
                        .iter()
                        .filter(|w| w.hello.host == *host)
                        .count();
                    format!("{host}: {n}")
                })
                .collect();
            println!("workers per node: {}", per_node.join(", "));
            println!("workers:        {}", info.workers.len());
            for worker in &info.workers {
                let resources: Vec<String> = worker
                    .hello
                    .resources
                    .iter()
                    .map(|r| format!("{}={}", r.name, r.amount))
                    .collect();
                let memory = match worker.hello.memory_limit {
                    Some(bytes) => format!(
                        "{} = {}",
                        mpidask::human_bytes(bytes),
                        worker.hello.memory_limit_source
                    ),
                    None => "no limit".to_string(),
                };
                println!(
                    "  {} on {}: {} threads, memory limit {memory}, resources: {}",
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
