//! The `mpidask` command: new projects, facts about a launch, batch scripts for programs
//! (Slurm, PBS, LSF, Grid Engine, HTCondor), and the exit codes of mpidask jobs.

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
    /// Make a new Cargo project NAME (in ./NAME) for an mpidask program: Cargo.toml,
    /// src/main.rs (futures and a chunked array, answers checked), jobscript.sbatch, README
    New(NewArgs),
    /// Print the MPI library, thread level, ranks and workers of a launch (run it the way a
    /// job runs: `mpirun -np 4 mpidask info`)
    Info {
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Print the exit codes every rank of an mpidask job ends with
    ExitCodes,
    /// Print a batch script (Slurm, PBS, LSF, Grid Engine; an HTCondor submit description)
    /// that runs a program: `mpidask jobscript [options] -- <program> <args>`
    Jobscript {
        #[command(flatten)]
        job: JobArgs,
        /// HTCondor only: print the wrapper script the submit description runs on every
        /// node (save it as <job-name>.condor.sh beside the description)
        #[arg(long)]
        wrapper: bool,
    },
    /// Write the batch script to a file and submit it (sbatch, qsub, bsub < script,
    /// condor_submit)
    Submit {
        #[command(flatten)]
        job: JobArgs,
        /// Where to write the script [default: <job-name>.sbatch, .pbs, .lsf, .sge, or .sub
        /// (HTCondor, with <job-name>.condor.sh beside it)]
        #[arg(long, value_name = "FILE")]
        script: Option<std::path::PathBuf>,
        /// Wait for the job to end and exit with its exit code (sbatch --wait, PBS Pro
        /// qsub -W block=true, bsub -K, Grid Engine qsub -sync y, condor_submit then
        /// condor_wait; Torque cannot wait)
        #[arg(long)]
        wait: bool,
    },
}

/// Where `mpidask new` makes the project and where it takes mpidask from.
#[derive(clap::Args, Debug)]
struct NewArgs {
    /// The package and program name (ASCII letters, digits, - and _, starting with a letter)
    name: String,
    /// Depend on the mpidask source in DIR [default: $MPIDASK_SOURCE, else the source `make
    /// install` put beside this command (PREFIX/share/mpidask/source), else the checkout it
    /// was built from]
    #[arg(long, value_name = "DIR", conflicts_with = "git")]
    path: Option<std::path::PathBuf>,
    /// Depend on mpidask from a git repository instead of a directory
    #[arg(long, value_name = "URL")]
    git: Option<String>,
    /// With --git: the branch, tag or commit
    #[arg(long, value_name = "REV", requires = "git")]
    rev: Option<String>,
}

/// The source directories `mpidask new` tries when not given one, in order, each with how
/// it was found.
fn source_candidates() -> Vec<(std::path::PathBuf, &'static str)> {
    let mut found = Vec::new();
    if let Some(dir) = std::env::var_os("MPIDASK_SOURCE") {
        found.push((dir.into(), "MPIDASK_SOURCE"));
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.to_path_buf()))
    {
        found.push((
            bin.join("../share/mpidask/source"),
            "beside the mpidask command",
        ));
    }
    found.push((
        env!("CARGO_MANIFEST_DIR").into(),
        "the checkout this command was built from",
    ));
    found
}

/// Makes the project; the message for the user, or what went wrong.
fn new_project(args: &NewArgs) -> anyhow::Result<String> {
    use mpidask::project::{Dependency, NewProject, check_source, validate_name};
    validate_name(&args.name)?;
    let (dependency, lockfile) = match (&args.git, &args.path) {
        (Some(url), _) => (
            Dependency::Git {
                url: url.clone(),
                rev: args.rev.clone(),
            },
            None,
        ),
        (None, given) => {
            let source = match given {
                Some(dir) => {
                    check_source(dir)?;
                    dir.clone()
                }
                None => {
                    let candidates = source_candidates();
                    match candidates.iter().find(|(dir, _)| check_source(dir).is_ok()) {
                        Some((dir, _)) => dir.clone(),
                        None => {
                            let tried: Vec<String> = candidates
                                .iter()
                                .map(|(dir, how)| format!("{} ({how})", dir.display()))
                                .collect();
                            anyhow::bail!(
                                "mpidask's source is not in any of {}: give --path DIR (a copy of \
                                 mpidask's source) or --git URL",
                                tried.join(", ")
                            )
                        }
                    }
                }
            };
            let source = std::fs::canonicalize(&source)
                .with_context(|| format!("resolving {}", source.display()))?;
            let lockfile = std::fs::read_to_string(source.join("Cargo.lock")).ok();
            (Dependency::Path(source), lockfile)
        }
    };
    let jobscript = mpidask::jobscript::JobSpec {
        job_name: Some(args.name.clone()),
        command: vec![format!("./target/release/{}", args.name)],
        ..Default::default()
    }
    .render()?;
    let project = NewProject {
        name: args.name.clone(),
        dependency,
        jobscript,
        lockfile,
    };
    let dir = std::path::PathBuf::from(&args.name);
    project.create(&dir)?;
    let from = match &project.dependency {
        Dependency::Path(path) => format!("mpidask from {}", path.display()),
        Dependency::Git { url, .. } => format!("mpidask from {url}"),
    };
    Ok(format!(
        "created {name}/ ({from})\n\n  cd {name}\n  cargo build --release\n  \
         target/release/{name}                    # local mode\n  \
         mpirun -np 4 target/release/{name}       # scheduler, client, 2 workers\n  \
         mpidask submit -- ./target/release/{name}  # a Slurm job (jobscript.sbatch is one)",
        name = args.name
    ))
}

/// A batch job for one mpidask program (see `mpidask jobscript --help`).
#[derive(clap::Args, Debug)]
struct JobArgs {
    /// Batch system to write for [default: MPIDASK_BATCH_SYSTEM if set, else found from the
    /// submit commands on the PATH: sbatch -> slurm, qsub with qconf -> sge, other qsub ->
    /// pbs, bsub -> lsf, condor_submit -> htcondor; else slurm]
    #[arg(long, value_enum, env = "MPIDASK_BATCH_SYSTEM", value_name = "SYSTEM")]
    system: Option<mpidask::jobscript::BatchSystem>,
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
    /// Generic resources, e.g. gpu:2 (Slurm only)
    #[arg(long, value_name = "SPEC")]
    gres: Option<String>,
    /// Resources every worker advertises to tasks, e.g. gpu=1 (MPIDASK_RESOURCES)
    #[arg(long, value_name = "NAME=AMOUNT,...")]
    resources: Option<String>,
    /// Job name [default: the program's file name]
    #[arg(long, value_name = "NAME")]
    job_name: Option<String>,
    /// Batch log file [default: <job-name>-%j.out (Slurm), PBS's <job-name>.o<id>,
    /// <job-name>-%J.out (LSF), <job-name>-$JOB_ID.out (SGE),
    /// <job-name>-$(Cluster).$(Node).out and .err (HTCondor)]
    #[arg(long, value_name = "PATH")]
    output: Option<String>,
    /// An extra directive line without its prefix, e.g. --directive=--constraint=a100 for
    /// #SBATCH, "-m abe" for #PBS, "-x" for #BSUB, "-V" for #$, a "key = value" line for
    /// HTCondor (repeatable)
    #[arg(long, value_name = "LINE", allow_hyphen_values = true)]
    directive: Vec<String>,
    /// A shell line before the launch, e.g. "module load openmpi" (repeatable)
    #[arg(long, value_name = "LINE")]
    prologue: Vec<String>,
    /// How ranks are started [default: srun under Slurm, mpirun elsewhere]
    #[arg(long, value_enum)]
    launcher: Option<mpidask::jobscript::Launcher>,
    /// Seconds before the time limit at which the job is told to stop in order (SIGUSR1;
    /// Slurm --signal, LSF -wa/-wt in minutes, Grid Engine s_rt, HTCondor periodic_remove
    /// with job_max_vacate_time, PBS a timer in the script)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    signal: u32,
    /// PBS resource syntax: pro (select=N:ncpus=..:mpiprocs=..) or torque (nodes=N:ppn=M)
    #[arg(long, value_enum, default_value = "pro", value_name = "FLAVOUR")]
    pbs_flavour: mpidask::jobscript::PbsFlavour,
    /// Grid Engine parallel environment to ask slots from (-pe NAME SLOTS)
    #[arg(long, default_value = "mpi", value_name = "NAME")]
    sge_pe: String,
    /// HTCondor: the pool's MPI start script (HTCondor's openmpiscript), transferred to
    /// every node
    #[arg(long, default_value = "openmpiscript", value_name = "PATH")]
    condor_mpi_script: String,
    /// Keep results of pure tasks in DIR as they finish (MPIDASK_CHECKPOINT); a job started
    /// again with the same DIR loads them instead of computing them
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<String>,
    /// Slurm: when the walltime signal stops the job, requeue it (scontrol requeue) to
    /// resume from --checkpoint, at most TIMES times
    #[arg(long, value_name = "TIMES", num_args = 0..=1, default_missing_value = "10",
          value_parser = clap::value_parser!(u32).range(1..))]
    requeue: Option<u32>,
    /// The program and its arguments, after `--`
    #[arg(last = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

impl JobArgs {
    fn spec(&self) -> mpidask::jobscript::JobSpec {
        use mpidask::jobscript::{BatchSystem, JobSpec, Memory};
        let system = self.system.unwrap_or_else(|| BatchSystem::detect(on_path));
        let memory = self
            .mem
            .clone()
            .map(Memory::PerNode)
            .or_else(|| self.mem_per_cpu.clone().map(Memory::PerCpu))
            .or_else(|| self.mem_per_gpu.clone().map(Memory::PerGpu));
        JobSpec {
            system,
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
            launcher: self.launcher.unwrap_or(system.default_launcher()),
            signal_lead_seconds: self.signal,
            pbs_flavour: self.pbs_flavour,
            sge_pe: self.sge_pe.clone(),
            condor_mpi_script: self.condor_mpi_script.clone(),
            checkpoint: self.checkpoint.clone(),
            requeue: self.requeue,
            command: self.command.clone(),
        }
    }
}

/// Is `command` an executable file in a directory of the PATH?
fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(command))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The value, or the usage error (exit 2) naming what is wrong.
fn or_usage_error<T>(result: Result<T, mpidask::jobscript::JobscriptError>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(ExitCode::Usage.code())
    })
}

/// What `mpidask jobscript` prints: the script, or with `--wrapper` the HTCondor wrapper.
fn jobscript(job: &JobArgs, wrapper: bool) -> String {
    let spec = job.spec();
    if !wrapper {
        return or_usage_error(spec.render());
    }
    or_usage_error(spec.wrapper()).unwrap_or_else(|| {
        eprintln!(
            "error: --wrapper prints the wrapper of an HTCondor job; {} jobs have none (give --system htcondor)",
            spec.system
        );
        std::process::exit(ExitCode::Usage.code())
    })
}

/// Writes and submits the script (HTCondor: the description and its wrapper); returns the
/// exit code to end with.
fn submit(
    job: &JobArgs,
    script_path: Option<std::path::PathBuf>,
    wait: bool,
) -> anyhow::Result<i32> {
    use std::path::Path;
    let spec = job.spec();
    let script = or_usage_error(spec.render());
    let path = script_path
        .unwrap_or_else(|| format!("{}.{}", spec.name(), spec.system.script_extension()).into());
    // HTCondor resolves the description's relative names (wrapper, logs) from where
    // condor_submit runs: the description's directory.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let in_dir = spec.system == mpidask::jobscript::BatchSystem::Htcondor;
    let named = if in_dir {
        Path::new(path.file_name().context("the script path names no file")?)
    } else {
        path.as_path()
    };
    let call = or_usage_error(spec.submit_call(&named.to_string_lossy(), wait));
    std::fs::write(&path, &script).with_context(|| format!("writing {}", path.display()))?;
    if let Some(wrapper) = or_usage_error(spec.wrapper()) {
        use std::os::unix::fs::PermissionsExt;
        let wrapper_path = dir.join(spec.wrapper_name());
        std::fs::write(&wrapper_path, wrapper)
            .and_then(|()| {
                std::fs::set_permissions(&wrapper_path, std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("writing {}", wrapper_path.display()))?;
    }
    let mut command = std::process::Command::new(call.program);
    command.args(&call.args);
    if in_dir {
        command.current_dir(&dir);
    }
    if call.script_on_stdin {
        let file =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        command.stdin(file);
    }
    let shown = if call.script_on_stdin {
        format!(
            "{} {} < {}",
            call.program,
            call.args.join(" "),
            path.display()
        )
    } else {
        format!("{} {}", call.program, call.args.join(" "))
    };
    let missing = || {
        format!(
            "running {shown} (is {} installed and {} on the PATH?)",
            spec.system, call.program
        )
    };
    let Some(log) = call.wait_on_log else {
        let status = command.status().with_context(missing)?;
        return Ok(status.code().unwrap_or(1));
    };
    // HTCondor: submit, then wait on the user log for the cluster, then read its exit code.
    let output = command.output().with_context(missing)?;
    let said = String::from_utf8_lossy(&output.stdout);
    print!("{said}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Ok(output.status.code().unwrap_or(1));
    }
    let cluster = mpidask::jobscript::condor_cluster(&said);
    let mut condor_wait = std::process::Command::new("condor_wait");
    condor_wait.current_dir(&dir).arg(&log).args(cluster);
    let status = condor_wait.status().with_context(|| {
        format!(
            "running condor_wait {log} (is {} installed and condor_wait on the PATH?)",
            spec.system
        )
    })?;
    if !status.success() {
        return Ok(status.code().unwrap_or(1));
    }
    let events = std::fs::read_to_string(dir.join(&log))
        .with_context(|| format!("reading the job's log {log}"))?;
    Ok(mpidask::jobscript::condor_exit_code(&events).unwrap_or(1))
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
        Commands::New(args) => match new_project(&args) {
            Ok(message) => println!("{message}"),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(ExitCode::Usage.code())
            }
        },
        Commands::Jobscript { job, wrapper } => print!("{}", jobscript(&job, wrapper)),
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
