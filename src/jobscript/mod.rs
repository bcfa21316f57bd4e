//! Batch scripts for mpidask programs (`mpidask jobscript` / `mpidask submit`) for Slurm,
//! PBS Pro and Torque, LSF, Grid Engine and HTCondor: the directives, the environment the
//! runtime reads, the launch line, and forwarding of the walltime signal so the job stops
//! in order (exit code 9) before it is killed.
//!
//! Every system gets the same [`JobSpec`], validated once; options a system cannot express
//! are errors ([`JobscriptError::Unsupported`]), never dropped. Only the Slurm script has
//! run on a real system here; the others follow each system's documented syntax.

mod convert;
mod error;
mod htcondor;
mod lsf;
mod pbs;
mod sge;
mod slurm;
#[cfg(test)]
mod tests;

pub use convert::{
    hours_minutes_seconds, lsf_hours_minutes, mib_rounded_up, pbs_size, sge_size, size_kib,
    walltime_seconds,
};
pub use error::JobscriptError;
pub use htcondor::{condor_cluster, condor_exit_code};

/// A batch system `mpidask jobscript` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchSystem {
    /// Slurm: an `#SBATCH` script for `sbatch`.
    Slurm,
    /// PBS Pro or Torque: a `#PBS` script for `qsub` (`--pbs-flavour`).
    Pbs,
    /// IBM Spectrum LSF: a `#BSUB` script for `bsub < script`.
    Lsf,
    /// (Son of / Univa / Altair) Grid Engine: a `#$` script for `qsub`.
    Sge,
    /// HTCondor: a parallel-universe submit description for `condor_submit`, plus the
    /// wrapper script it runs on every node.
    Htcondor,
}

impl std::fmt::Display for BatchSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BatchSystem::Slurm => "Slurm",
            BatchSystem::Pbs => "PBS",
            BatchSystem::Lsf => "LSF",
            BatchSystem::Sge => "Grid Engine (SGE)",
            BatchSystem::Htcondor => "HTCondor",
        })
    }
}

impl BatchSystem {
    /// Every system, in the order detection tries their submit commands.
    pub const ALL: [BatchSystem; 5] = [
        BatchSystem::Slurm,
        BatchSystem::Pbs,
        BatchSystem::Sge,
        BatchSystem::Lsf,
        BatchSystem::Htcondor,
    ];

    /// The system whose commands are installed, given a test of whether a command is on
    /// the PATH: `sbatch` -> Slurm; `qsub` with `qconf` -> Grid Engine; `qsub` otherwise
    /// (with `pbsnodes`, or alone) -> PBS; `bsub` -> LSF; `condor_submit` -> HTCondor;
    /// none -> Slurm. (`MPIDASK_BATCH_SYSTEM`, read by the command line, comes first.)
    pub fn detect(on_path: impl Fn(&str) -> bool) -> BatchSystem {
        if on_path("sbatch") {
            BatchSystem::Slurm
        } else if on_path("qsub") {
            if on_path("qconf") {
                BatchSystem::Sge
            } else {
                BatchSystem::Pbs
            }
        } else if on_path("bsub") {
            BatchSystem::Lsf
        } else if on_path("condor_submit") {
            BatchSystem::Htcondor
        } else {
            BatchSystem::Slurm
        }
    }

    /// The command that submits a job.
    pub fn submit_command(self) -> &'static str {
        match self {
            BatchSystem::Slurm => "sbatch",
            BatchSystem::Pbs | BatchSystem::Sge => "qsub",
            BatchSystem::Lsf => "bsub",
            BatchSystem::Htcondor => "condor_submit",
        }
    }

    /// How ranks are started when `--launcher` is not given: `srun` under Slurm, `mpirun`
    /// elsewhere.
    pub fn default_launcher(self) -> Launcher {
        match self {
            BatchSystem::Slurm => Launcher::Srun,
            _ => Launcher::Mpirun,
        }
    }

    /// The extension of the script `mpidask submit` writes.
    pub fn script_extension(self) -> &'static str {
        match self {
            BatchSystem::Slurm => "sbatch",
            BatchSystem::Pbs => "pbs",
            BatchSystem::Lsf => "lsf",
            BatchSystem::Sge => "sge",
            BatchSystem::Htcondor => "sub",
        }
    }
}

/// Which PBS: their resource requests differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PbsFlavour {
    /// PBS Pro / OpenPBS: `-l select=N:ncpus=..:mpiprocs=..:mem=..`.
    #[default]
    Pro,
    /// Torque: `-l nodes=N:ppn=M`, memory as `-l mem` for the whole job.
    Torque,
}

/// How the ranks are started inside the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// `srun --mpi=pmix`: Slurm starts every rank (and signals them at walltime).
    Srun,
    /// `mpirun` of the MPI library the program was built with, reading the allocation.
    Mpirun,
    /// `mpiexec -n <ranks>` (PBS Pro's, MPICH's or Intel MPI's, reading the allocation).
    Mpiexec,
}

/// Memory request: exactly one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// `--mem`: per node.
    PerNode(String),
    /// `--mem-per-cpu`.
    PerCpu(String),
    /// `--mem-per-gpu`.
    PerGpu(String),
}

/// A batch job running one mpidask program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The batch system to write for.
    pub system: BatchSystem,
    /// `--job-name` (default: the program's file name).
    pub job_name: Option<String>,
    /// `--partition` (the queue elsewhere).
    pub partition: Option<String>,
    /// `--account` (the project elsewhere).
    pub account: Option<String>,
    /// `--nodes`.
    pub nodes: u32,
    /// `--ntasks-per-node`: ranks per node (rank 0 scheduler, rank 1 client, the rest workers).
    pub ntasks_per_node: u32,
    /// `--cpus-per-task`: threads of each worker.
    pub cpus_per_task: u32,
    /// Memory request.
    pub memory: Option<Memory>,
    /// `--time`.
    pub walltime: Option<String>,
    /// `--gpus-per-node`.
    pub gpus_per_node: Option<u32>,
    /// `--gres` (Slurm only).
    pub gres: Option<String>,
    /// Worker resources (`MPIDASK_RESOURCES`).
    pub resources: Option<String>,
    /// `--output` (default `<job-name>-%j.out` under Slurm; each system's own otherwise).
    pub output: Option<String>,
    /// Extra directive lines, without the prefix (`#SBATCH`, `#PBS`, `#BSUB`, `#$`; a
    /// whole `key = value` line for HTCondor).
    pub directives: Vec<String>,
    /// Shell lines before the launch (e.g. `module load openmpi`).
    pub prologue: Vec<String>,
    /// How ranks are started.
    pub launcher: Launcher,
    /// Seconds before the walltime at which the job is told to stop (SIGUSR1).
    pub signal_lead_seconds: u32,
    /// PBS Pro or Torque resource syntax.
    pub pbs_flavour: PbsFlavour,
    /// The Grid Engine parallel environment (`-pe <name> <slots>`).
    pub sge_pe: String,
    /// HTCondor: the pool's MPI start script (HTCondor's `openmpiscript`), transferred to
    /// every node and run there by the wrapper.
    pub condor_mpi_script: String,
    /// `--checkpoint DIR` of the runtime (`MPIDASK_CHECKPOINT`): results of pure tasks are
    /// kept there, and a job started again loads them.
    pub checkpoint: Option<String>,
    /// Slurm: requeue the job (at most this many times) when the walltime signal stopped it,
    /// so that it resumes from the checkpoint (needs [`JobSpec::checkpoint`]).
    pub requeue: Option<u32>,
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            system: BatchSystem::Slurm,
            job_name: None,
            partition: None,
            account: None,
            nodes: 1,
            ntasks_per_node: 4,
            cpus_per_task: 1,
            memory: None,
            walltime: None,
            gpus_per_node: None,
            gres: None,
            resources: None,
            output: None,
            directives: Vec::new(),
            prologue: Vec::new(),
            launcher: Launcher::Srun,
            signal_lead_seconds: 60,
            pbs_flavour: PbsFlavour::Pro,
            sge_pe: "mpi".into(),
            condor_mpi_script: "openmpiscript".into(),
            checkpoint: None,
            requeue: None,
            command: Vec::new(),
        }
    }
}

/// `8G`, `512M`, `100`: what Slurm accepts for memory sizes.
pub fn validate_size(flag: &'static str, value: &str) -> Result<(), JobscriptError> {
    size_kib(flag, value).map(drop)
}

/// `HH:MM:SS` or `D-HH:MM:SS`, minutes and seconds below 60.
pub fn validate_walltime(value: &str) -> Result<(), JobscriptError> {
    walltime_seconds(value).map(drop)
}

/// Quotes a word for the shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The end of every shell script: the launch in the background, the signal forwarding and
/// the wait. `extra_traps` are more `trap` lines; `before_exit` runs just before `exit`.
fn launch_block(launch: &str, extra_traps: &[&str], before_exit: &str) -> String {
    let mut s = format!(
        "\n# Run in the background so that the shell can pass on the walltime signal; every\n\
         # rank then stops in order and the job exits with code 9.\n\
         {launch} &\n\
         launched=$!\n\
         trap 'kill -USR1 $launched' USR1\n\
         trap 'kill -TERM $launched' TERM\n"
    );
    for trap in extra_traps {
        s.push_str(trap);
        s.push('\n');
    }
    s.push_str(
        "wait $launched\n\
         status=$?\n\
         # A trapped signal ends the first wait early: wait for the launcher to finish.\n\
         while kill -0 $launched 2>/dev/null; do wait $launched; status=$?; done\n",
    );
    s.push_str(before_exit);
    s.push_str("exit $status\n");
    s
}

/// The lines every shell script runs before the launch: the prologue and the runtime's
/// environment (`threads` is the shell expression for the worker threads).
fn environment(spec: &JobSpec, threads: &str) -> String {
    let mut s = String::new();
    for line in &spec.prologue {
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(&format!("export MPIDASK_NTHREADS={threads}\n"));
    if let Some(r) = &spec.resources {
        s.push_str(&format!("export MPIDASK_RESOURCES={}\n", shell_quote(r)));
    }
    if let Some(dir) = &spec.checkpoint {
        s.push_str(&format!("export MPIDASK_CHECKPOINT={}\n", shell_quote(dir)));
    }
    s
}

/// The program and its arguments, quoted for the shell.
fn program(spec: &JobSpec) -> String {
    let words: Vec<String> = spec.command.iter().map(|w| shell_quote(w)).collect();
    words.join(" ")
}

/// Does a job name suit the systems other than Slurm (`#PBS -N`, `#$ -N`, `#BSUB -J`,
/// `batch_name`)?
fn portable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl JobSpec {
    /// A job for `system` with its default launcher; the rest as [`JobSpec::default`].
    pub fn for_system(system: BatchSystem) -> JobSpec {
        JobSpec {
            system,
            launcher: system.default_launcher(),
            ..JobSpec::default()
        }
    }

    /// Total ranks: nodes x ranks per node.
    pub fn ranks(&self) -> u32 {
        self.nodes.saturating_mul(self.ntasks_per_node)
    }

    /// Checks the description; the first problem found.
    pub fn validate(&self) -> Result<(), JobscriptError> {
        if self.command.is_empty() {
            return Err(JobscriptError::NoProgram);
        }
        let total = self.ranks();
        if total < 3 {
            return Err(JobscriptError::TooFewRanks {
                nodes: self.nodes,
                per_node: self.ntasks_per_node,
                total,
            });
        }
        match &self.memory {
            Some(Memory::PerNode(v)) => validate_size("mem", v)?,
            Some(Memory::PerCpu(v)) => validate_size("mem-per-cpu", v)?,
            Some(Memory::PerGpu(v)) => validate_size("mem-per-gpu", v)?,
            None => {}
        }
        if let Some(walltime) = &self.walltime {
            validate_walltime(walltime)?;
        }
        if let Some(resources) = &self.resources {
            let valid = resources.split(',').all(|item| {
                item.split_once('=').is_some_and(|(name, amount)| {
                    !name.trim().is_empty() && amount.trim().parse::<f64>().is_ok_and(|a| a >= 0.0)
                })
            });
            if !valid {
                return Err(JobscriptError::BadResources(resources.clone()));
            }
        }
        if self.requeue.is_some() && self.checkpoint.is_none() {
            return Err(JobscriptError::RequeueWithoutCheckpoint);
        }
        let checkpoint: Vec<String> = self.checkpoint.iter().cloned().collect();
        for (flag, lines) in [
            ("directive", &self.directives),
            ("prologue", &self.prologue),
            ("checkpoint", &checkpoint),
        ] {
            if let Some(line) = lines.iter().find(|l| l.contains('\n')) {
                return Err(JobscriptError::Multiline {
                    flag,
                    value: line.clone(),
                });
            }
        }
        if self.system != BatchSystem::Slurm {
            self.validate_portable()?;
        }
        Ok(())
    }

    /// What every system but Slurm needs on top of [`JobSpec::validate`]'s common checks.
    fn validate_portable(&self) -> Result<(), JobscriptError> {
        let system = self.system;
        let unsupported = |option: String, fix: &'static str| {
            Err(JobscriptError::Unsupported {
                system,
                option,
                fix,
            })
        };
        if let Some(times) = self.requeue {
            return unsupported(
                format!("--requeue {times}"),
                "requeueing is written for Slurm only: submit the same script again when the job stops at its walltime (exit code 9); with --checkpoint it resumes where it stopped",
            );
        }
        if self.launcher == Launcher::Srun {
            return unsupported(
                "--launcher srun".into(),
                "srun is Slurm's launcher: use --launcher mpirun (the default here) or mpiexec",
            );
        }
        if system == BatchSystem::Htcondor && self.launcher != Launcher::Mpirun {
            return unsupported(
                format!("--launcher {:?}", self.launcher).to_lowercase(),
                "the pool's openmpiscript starts the ranks with mpirun: leave --launcher unset",
            );
        }
        if let Some(gres) = &self.gres {
            return unsupported(
                format!("--gres {gres}"),
                "--gres is Slurm's syntax: use --gpus-per-node N, or --directive with the system's own resource request",
            );
        }
        if matches!(self.memory, Some(Memory::PerGpu(_))) && self.gpus_per_node.is_none() {
            return unsupported(
                "--mem-per-gpu without --gpus-per-node".into(),
                "give --gpus-per-node so the memory per node can be worked out, or use --mem",
            );
        }
        if let Some(gpus) = self.gpus_per_node
            && system == BatchSystem::Sge
        {
            return unsupported(
                format!("--gpus-per-node {gpus}"),
                "Grid Engine has no standard GPU request: use --directive '-l gpu=N' with your site's resource name",
            );
        }
        if let Some(queue) = &self.partition
            && system == BatchSystem::Htcondor
        {
            return unsupported(
                format!("--partition {queue}"),
                "HTCondor has no queues: choose machines with --directive 'requirements = ...'",
            );
        }
        let name = self.name();
        if !portable_name(&name) {
            return Err(JobscriptError::BadJobName { system, name });
        }
        let one_word = |flag: &'static str, value: &Option<String>| match value {
            Some(v)
                if v.is_empty() || v.contains(|c: char| c.is_whitespace() || "'\"".contains(c)) =>
            {
                Err(JobscriptError::BadValue {
                    system,
                    flag,
                    value: v.clone(),
                    fix: "give one word, without spaces or quotes",
                })
            }
            _ => Ok(()),
        };
        one_word("partition", &self.partition)?;
        one_word("account", &self.account)?;
        one_word("output", &self.output)?;
        one_word("sge-pe", &Some(self.sge_pe.clone()))?;
        one_word("condor-mpi-script", &Some(self.condor_mpi_script.clone()))?;
        if let Some(output) = &self.output {
            self.check_output_patterns(output)?;
        }
        if let Some(walltime) = &self.walltime
            && walltime_seconds(walltime)? <= u64::from(self.signal_lead_seconds)
        {
            return Err(JobscriptError::LeadTooLong {
                lead: self.signal_lead_seconds,
                walltime: walltime.clone(),
            });
        }
        Ok(())
    }

    /// `%` patterns in `--output` the target system does not expand are errors.
    fn check_output_patterns(&self, output: &str) -> Result<(), JobscriptError> {
        let (allowed, fix): (&str, &'static str) = match self.system {
            BatchSystem::Slurm => return Ok(()),
            BatchSystem::Lsf => ("JI", "LSF expands %J (job id) and %I (array index)"),
            BatchSystem::Pbs => (
                "",
                "PBS expands no patterns in -o: give a plain path, or leave --output unset for PBS's <job-name>.o<job id>",
            ),
            BatchSystem::Sge => (
                "",
                "Grid Engine expands $JOB_ID, $JOB_NAME, $HOSTNAME and $USER instead",
            ),
            BatchSystem::Htcondor => (
                "",
                "HTCondor expands $(Cluster), $(Process) and $(Node) instead",
            ),
        };
        let mut chars = output.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                let next = chars.next();
                if !next.is_some_and(|n| allowed.contains(n)) {
                    return Err(JobscriptError::OutputPattern {
                        system: self.system,
                        output: output.into(),
                        pattern: format!("%{}", next.map(String::from).unwrap_or_default()),
                        fix,
                    });
                }
            }
        }
        Ok(())
    }

    /// The job name: given, or the program's file name.
    pub fn name(&self) -> String {
        self.job_name.clone().unwrap_or_else(|| {
            self.command
                .first()
                .and_then(|p| std::path::Path::new(p).file_name())
                .map_or_else(|| "mpidask".into(), |n| n.to_string_lossy().to_string())
        })
    }

    /// KiB of memory per node, if memory was asked for (after [`JobSpec::validate`]).
    fn node_kib(&self) -> Result<Option<u64>, JobscriptError> {
        let per_node_cpus = u64::from(self.ntasks_per_node) * u64::from(self.cpus_per_task);
        Ok(match &self.memory {
            None => None,
            Some(Memory::PerNode(v)) => Some(size_kib("mem", v)?),
            Some(Memory::PerCpu(v)) => Some(size_kib("mem-per-cpu", v)? * per_node_cpus),
            Some(Memory::PerGpu(v)) => {
                Some(size_kib("mem-per-gpu", v)? * u64::from(self.gpus_per_node.unwrap_or(0)))
            }
        })
    }

    /// The walltime in seconds, if given (after [`JobSpec::validate`]).
    fn walltime_secs(&self) -> Result<Option<u64>, JobscriptError> {
        self.walltime.as_deref().map(walltime_seconds).transpose()
    }

    /// The batch script (HTCondor: the submit description), after [`JobSpec::validate`].
    pub fn render(&self) -> Result<String, JobscriptError> {
        self.validate()?;
        match self.system {
            BatchSystem::Slurm => Ok(slurm::render(self)),
            BatchSystem::Pbs => pbs::render(self),
            BatchSystem::Lsf => lsf::render(self),
            BatchSystem::Sge => sge::render(self),
            BatchSystem::Htcondor => htcondor::render(self),
        }
    }

    /// HTCondor only: the wrapper script the submit description runs on every node,
    /// to be written as [`JobSpec::wrapper_name`] beside it; `None` for the other systems.
    pub fn wrapper(&self) -> Result<Option<String>, JobscriptError> {
        self.validate()?;
        Ok(match self.system {
            BatchSystem::Htcondor => Some(htcondor::wrapper(self)),
            _ => None,
        })
    }

    /// The file name of the HTCondor wrapper: `<job-name>.condor.sh`.
    pub fn wrapper_name(&self) -> String {
        format!("{}.condor.sh", self.name())
    }
}

/// How `mpidask submit` hands a script to the batch system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitCall {
    /// The command (`sbatch`, `qsub`, `bsub`, `condor_submit`).
    pub program: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
    /// Whether the script goes to the command's standard input (`bsub < script`) rather
    /// than as its last argument.
    pub script_on_stdin: bool,
    /// HTCondor with `--wait`: after submitting, wait with `condor_wait <log> <cluster>`
    /// on this user log, then read the job's exit code from it.
    pub wait_on_log: Option<String>,
}

impl JobSpec {
    /// The call that submits `script`; with `wait`, one that waits for the job and returns
    /// its exit code: `sbatch --wait`, PBS Pro `qsub -W block=true`, `bsub -K`, Grid Engine
    /// `qsub -sync y`, HTCondor `condor_submit` then `condor_wait`. Torque's `qsub` cannot
    /// wait: an error.
    pub fn submit_call(&self, script: &str, wait: bool) -> Result<SubmitCall, JobscriptError> {
        let mut args: Vec<String> = Vec::new();
        let mut wait_on_log = None;
        if wait {
            match self.system {
                BatchSystem::Slurm => args.push("--wait".into()),
                BatchSystem::Pbs if self.pbs_flavour == PbsFlavour::Torque => {
                    return Err(JobscriptError::Unsupported {
                        system: self.system,
                        option: "--wait with --pbs-flavour torque".into(),
                        fix: "Torque's qsub cannot wait for a job: submit without --wait and watch it with qstat",
                    });
                }
                BatchSystem::Pbs => args.extend(["-W".into(), "block=true".into()]),
                BatchSystem::Lsf => args.push("-K".into()),
                BatchSystem::Sge => args.extend(["-sync".into(), "y".into()]),
                BatchSystem::Htcondor => wait_on_log = Some(htcondor::log_name(self)),
            }
        }
        let script_on_stdin = self.system == BatchSystem::Lsf;
        if !script_on_stdin {
            args.push(script.into());
        }
        Ok(SubmitCall {
            program: self.system.submit_command(),
            args,
            script_on_stdin,
            wait_on_log,
        })
    }
}
