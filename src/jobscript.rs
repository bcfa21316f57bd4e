//! Slurm batch scripts for mpidask programs (`mpidask jobscript` / `mpidask submit`): the
//! `#SBATCH` lines, the environment the runtime reads, the launch line, and forwarding of
//! the walltime signal so the job stops in order (exit code 9) before it is killed.

use thiserror::Error;

/// What is wrong with a job description.
#[derive(Debug, Error, PartialEq)]
pub enum JobscriptError {
    /// A size such as `--mem` that Slurm would not accept.
    #[error(
        "--{flag} {value:?} is not a size: use a whole number with an optional unit K, M, G or T (e.g. 8G, 512M)"
    )]
    BadSize {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// A walltime in neither `HH:MM:SS` nor `D-HH:MM:SS`.
    #[error(
        "--walltime {0:?} is not a walltime: use HH:MM:SS or D-HH:MM:SS, e.g. 01:30:00 or 2-00:00:00"
    )]
    BadWalltime(String),
    /// Fewer than three ranks in total.
    #[error(
        "--nodes {nodes} x --ntasks-per-node {per_node} gives {total} rank(s); mpidask needs at least 3 (scheduler, client, one worker)"
    )]
    TooFewRanks {
        /// Nodes.
        nodes: u32,
        /// Ranks per node.
        per_node: u32,
        /// Their product.
        total: u32,
    },
    /// No program to run.
    #[error(
        "no program given: put it after `--`, e.g. `mpidask jobscript ... -- ./target/release/my_job --input data/`"
    )]
    NoProgram,
    /// A line that would break the script.
    #[error("--{flag} {value:?} contains a newline; give one line per --{flag}")]
    Multiline {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// A resource list that is not `name=amount,...`.
    #[error("--resources {0:?} is not a list of name=amount (e.g. gpu=1,ssd=2)")]
    BadResources(String),
}

/// How the ranks are started inside the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// `srun --mpi=pmix`: Slurm starts every rank (and signals them at walltime).
    Srun,
    /// `mpirun` of the MPI library the program was built with, reading the allocation.
    Mpirun,
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
    /// `--job-name` (default: the program's file name).
    pub job_name: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
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
    /// `--gres`.
    pub gres: Option<String>,
    /// Worker resources (`MPIDASK_RESOURCES`).
    pub resources: Option<String>,
    /// `--output` (default `<job-name>-%j.out`).
    pub output: Option<String>,
    /// Extra `#SBATCH` lines, without the prefix.
    pub directives: Vec<String>,
    /// Shell lines before the launch (e.g. `module load openmpi`).
    pub prologue: Vec<String>,
    /// How ranks are started.
    pub launcher: Launcher,
    /// Seconds before the walltime at which the job is told to stop (SIGUSR1).
    pub signal_lead_seconds: u32,
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
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
            command: Vec::new(),
        }
    }
}

/// `8G`, `512M`, `100`: what Slurm accepts for memory sizes.
pub fn validate_size(flag: &'static str, value: &str) -> Result<(), JobscriptError> {
    let digits = value.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    let unit_len = value.len() - digits.len();
    if digits.is_empty() || unit_len > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(JobscriptError::BadSize {
            flag,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// `HH:MM:SS` or `D-HH:MM:SS`, minutes and seconds below 60.
pub fn validate_walltime(value: &str) -> Result<(), JobscriptError> {
    let bad = || JobscriptError::BadWalltime(value.to_string());
    let (days, clock) = match value.split_once('-') {
        Some((days, clock)) => (Some(days), clock),
        None => (None, value),
    };
    if let Some(days) = days
        && (days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let number = |p: &str| p.parse::<u32>().unwrap_or(u32::MAX);
    if number(parts[1]) >= 60
        || number(parts[2]) >= 60
        || (days.is_some() && number(parts[0]) >= 24)
    {
        return Err(bad());
    }
    Ok(())
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

impl JobSpec {
    /// Checks the description; the first problem found.
    pub fn validate(&self) -> Result<(), JobscriptError> {
        if self.command.is_empty() {
            return Err(JobscriptError::NoProgram);
        }
        let total = self.nodes.saturating_mul(self.ntasks_per_node);
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
        for (flag, lines) in [
            ("directive", &self.directives),
            ("prologue", &self.prologue),
        ] {
            if let Some(line) = lines.iter().find(|l| l.contains('\n')) {
                return Err(JobscriptError::Multiline {
                    flag,
                    value: line.clone(),
                });
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

    /// The batch script, after [`JobSpec::validate`].
    pub fn render(&self) -> Result<String, JobscriptError> {
        self.validate()?;
        let name = self.name();
        let mut s = String::from("#!/bin/bash\n");
        s.push_str(
            "# Generated by `mpidask jobscript`. Rank 0 schedules, rank 1 runs the program,\n",
        );
        s.push_str("# the other ranks are workers with --cpus-per-task threads each.\n");
        let mut directive = |line: String| s.push_str(&format!("#SBATCH {line}\n"));
        directive(format!("--job-name={}", shell_quote(&name)));
        if let Some(p) = &self.partition {
            directive(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            directive(format!("--account={a}"));
        }
        directive(format!("--nodes={}", self.nodes));
        directive(format!("--ntasks-per-node={}", self.ntasks_per_node));
        directive(format!("--cpus-per-task={}", self.cpus_per_task));
        match &self.memory {
            Some(Memory::PerNode(v)) => directive(format!("--mem={v}")),
            Some(Memory::PerCpu(v)) => directive(format!("--mem-per-cpu={v}")),
            Some(Memory::PerGpu(v)) => directive(format!("--mem-per-gpu={v}")),
            None => {}
        }
        if let Some(t) = &self.walltime {
            directive(format!("--time={t}"));
        }
        if let Some(g) = self.gpus_per_node {
            directive(format!("--gpus-per-node={g}"));
        }
        if let Some(g) = &self.gres {
            directive(format!("--gres={g}"));
        }
        directive(format!(
            "--output={}",
            self.output
                .clone()
                .unwrap_or_else(|| format!("{name}-%j.out"))
        ));
        // The batch shell gets SIGUSR1 before the walltime and passes it to the ranks.
        directive(format!("--signal=B:USR1@{}", self.signal_lead_seconds));
        for d in &self.directives {
            directive(d.clone());
        }
        s.push('\n');
        for line in &self.prologue {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("export MPIDASK_NTHREADS=${SLURM_CPUS_PER_TASK:-1}\n");
        if let Some(r) = &self.resources {
            s.push_str(&format!("export MPIDASK_RESOURCES={}\n", shell_quote(r)));
        }
        let program: Vec<String> = self.command.iter().map(|w| shell_quote(w)).collect();
        let launch = match self.launcher {
            Launcher::Srun => format!("srun --mpi=pmix {}", program.join(" ")),
            Launcher::Mpirun => format!("mpirun {}", program.join(" ")),
        };
        s.push_str(&format!(
            "\n# Run in the background so that the shell can pass on the walltime signal; every\n\
             # rank then stops in order and the job exits with code 9.\n\
             {launch} &\n\
             launched=$!\n\
             trap 'kill -USR1 $launched' USR1\n\
             trap 'kill -TERM $launched' TERM\n\
             wait $launched\n\
             status=$?\n\
             # A trapped signal ends the first wait early: wait for the launcher to finish.\n\
             while kill -0 $launched 2>/dev/null; do wait $launched; status=$?; done\n\
             exit $status\n"
        ));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            command: vec![
                "./target/release/examples/pi".into(),
                "--sizes-gb".into(),
                "1".into(),
            ],
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_default_script_runs_the_program_with_srun() {
        let script = spec().render().unwrap();
        assert!(script.starts_with("#!/bin/bash\n"));
        for line in [
            "#SBATCH --job-name=pi\n",
            "#SBATCH --nodes=1\n",
            "#SBATCH --ntasks-per-node=4\n",
            "#SBATCH --cpus-per-task=1\n",
            "#SBATCH --output=pi-%j.out\n",
            "#SBATCH --signal=B:USR1@60\n",
            "export MPIDASK_NTHREADS=${SLURM_CPUS_PER_TASK:-1}\n",
            "srun --mpi=pmix ./target/release/examples/pi --sizes-gb 1 &\n",
            "exit $status\n",
        ] {
            assert!(script.contains(line), "{line:?} missing from\n{script}");
        }
    }

    #[test]
    fn every_option_reaches_the_script() {
        let job = JobSpec {
            job_name: Some("big pi".into()),
            partition: Some("gpu".into()),
            account: Some("proj42".into()),
            nodes: 2,
            ntasks_per_node: 8,
            cpus_per_task: 4,
            memory: Some(Memory::PerCpu("2G".into())),
            walltime: Some("1-02:00:00".into()),
            gpus_per_node: Some(4),
            gres: None,
            resources: Some("gpu=1".into()),
            output: Some("logs/%x-%j.log".into()),
            directives: vec!["--constraint=a100".into()],
            prologue: vec!["module load openmpi".into()],
            launcher: Launcher::Mpirun,
            signal_lead_seconds: 120,
            ..spec()
        };
        let script = job.render().unwrap();
        for line in [
            "#SBATCH --job-name='big pi'\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --account=proj42\n",
            "#SBATCH --nodes=2\n",
            "#SBATCH --ntasks-per-node=8\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --mem-per-cpu=2G\n",
            "#SBATCH --time=1-02:00:00\n",
            "#SBATCH --gpus-per-node=4\n",
            "#SBATCH --output=logs/%x-%j.log\n",
            "#SBATCH --signal=B:USR1@120\n",
            "#SBATCH --constraint=a100\n",
            "module load openmpi\n",
            "export MPIDASK_RESOURCES=gpu=1\n",
            "mpirun ./target/release/examples/pi --sizes-gb 1 &\n",
        ] {
            assert!(script.contains(line), "{line:?} missing from\n{script}");
        }
    }

    #[test]
    fn bad_descriptions_are_named() {
        let cases: Vec<(JobSpec, &str)> = vec![
            (
                JobSpec {
                    command: vec![],
                    ..spec()
                },
                "no program given",
            ),
            (
                JobSpec {
                    ntasks_per_node: 2,
                    ..spec()
                },
                "gives 2 rank(s)",
            ),
            (
                JobSpec {
                    memory: Some(Memory::PerNode("8GB".into())),
                    ..spec()
                },
                "--mem \"8GB\" is not a size",
            ),
            (
                JobSpec {
                    memory: Some(Memory::PerGpu("lots".into())),
                    ..spec()
                },
                "--mem-per-gpu \"lots\"",
            ),
            (
                JobSpec {
                    walltime: Some("90:00".into()),
                    ..spec()
                },
                "--walltime \"90:00\"",
            ),
            (
                JobSpec {
                    walltime: Some("01:75:00".into()),
                    ..spec()
                },
                "is not a walltime",
            ),
            (
                JobSpec {
                    walltime: Some("1-30:00:00".into()),
                    ..spec()
                },
                "is not a walltime",
            ),
            (
                JobSpec {
                    resources: Some("gpu".into()),
                    ..spec()
                },
                "--resources \"gpu\"",
            ),
            (
                JobSpec {
                    prologue: vec!["a\nb".into()],
                    ..spec()
                },
                "--prologue \"a\\nb\" contains a newline",
            ),
        ];
        for (job, expected) in cases {
            let error = job.render().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn sizes_and_walltimes_slurm_accepts() {
        for size in ["100", "8G", "512M", "1T", "64k"] {
            validate_size("mem", size).unwrap();
        }
        for walltime in ["00:10:00", "1:00:00", "2-00:00:00", "10-23:59:59"] {
            validate_walltime(walltime).unwrap();
        }
    }
}
