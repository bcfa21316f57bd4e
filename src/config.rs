//! Runtime settings: one set of command-line flags, each with an environment variable as
//! fallback, that a program can flatten into its own `clap` parser.

use crate::memory::MemoryLimitSpec;
use crate::protocol::Resource;
use clap::Parser;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default size of the parts a large message is sent in: 8 MiB. Each part is one MPI
/// message, and Open MPI copies a large message in one progress call (a 32 MiB value took
/// 100-380 ms under a concurrent disk write), during which the rank's loop handles nothing
/// else; 8 MiB parts keep that under a tenth of a heartbeat period at the same transfer
/// speed (3.50 against 3.42 GB/s for a 200 MB value). MPI counts are 32-bit, so parts never
/// exceed 2 GiB.
pub const DEFAULT_PART_BYTES: usize = 8 << 20;

/// Default `--local-workers`.
pub const DEFAULT_LOCAL_WORKERS: u32 = 1;
/// Default `--worker-timeout`, seconds.
pub const DEFAULT_WORKER_TIMEOUT: f64 = 60.0;
/// Default `--shutdown-timeout`, seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 10.0;
/// Default `--stall-warning`, seconds.
pub const DEFAULT_STALL_WARNING: f64 = 60.0;
/// Default `--memory-spill`.
pub const DEFAULT_MEMORY_SPILL: f64 = 0.6;
/// Default `--memory-pause`.
pub const DEFAULT_MEMORY_PAUSE: f64 = 0.8;
/// Default `--progress-interval`, seconds.
pub const DEFAULT_PROGRESS_INTERVAL: f64 = 10.0;
/// Default of `--report-interval`, seconds.
pub const DEFAULT_REPORT_INTERVAL: f64 = 30.0;
/// Default `--poll-max-us`.
pub const DEFAULT_POLL_MAX_US: u64 = 1000;

/// Resources a worker advertises: `gpu=1,ssd=2`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceList(pub Vec<Resource>);

impl FromStr for ResourceList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut resources: Vec<Resource> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, amount) = item.split_once('=').ok_or_else(|| {
                format!("'{item}' is not NAME=AMOUNT (for example gpu=1 or gpu=1,ssd=2)")
            })?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(format!(
                    "resource name '{name}' must be letters, digits, '_', '-' or '.'"
                ));
            }
            let amount: f64 = amount.trim().parse().map_err(|_| {
                format!(
                    "the amount of '{name}' is '{}', not a number",
                    amount.trim()
                )
            })?;
            if !amount.is_finite() || amount < 0.0 {
                return Err(format!("the amount of '{name}' must be a number >= 0"));
            }
            if resources.iter().any(|r| r.name == name) {
                return Err(format!("resource '{name}' is given twice"));
            }
            resources.push(Resource {
                name: name.to_string(),
                amount,
            });
        }
        Ok(ResourceList(resources))
    }
}

impl fmt::Display for ResourceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|r| format!("{}={}", r.name, r.amount))
            .collect();
        f.write_str(&items.join(","))
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds (for example 30 or 2.5)"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1e7 {
        return Err(format!("'{text}' must be a number of seconds above 0"));
    }
    Ok(seconds)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "'{text}' must be a fraction above 0 and at most 1 (for example 0.6)"
        )),
    }
}

fn parse_part_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=i32::MAX as usize).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' must be a byte count from 1 to {}",
            i32::MAX
        )),
    }
}

/// The runtime's settings. Flatten into a program's own parser with
/// `#[command(flatten)] runtime: mpidask::RuntimeArgs`, or read from the environment alone
/// with [`RuntimeArgs::from_env`].
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "mpidask runtime")]
pub struct RuntimeArgs {
    /// Threads per worker that run tasks [default: the cores this rank may use, divided
    /// among the worker ranks of its node that may use the same cores]
    #[arg(long, env = "MPIDASK_NTHREADS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub nthreads: Option<u32>,

    /// Resources every worker advertises to tasks that ask for them, e.g. gpu=1,ssd=2
    #[arg(
        long,
        env = "MPIDASK_RESOURCES",
        value_name = "NAME=AMOUNT,...",
        default_value_t
    )]
    pub resources: ResourceList,

    /// Worker threads (ranks) in local mode, when started without mpirun/srun
    #[arg(long, env = "MPIDASK_LOCAL_WORKERS", value_name = "N",
          default_value_t = DEFAULT_LOCAL_WORKERS,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub local_workers: u32,

    /// Seconds a worker may stay silent before the job is aborted as "worker lost"
    #[arg(long, env = "MPIDASK_WORKER_TIMEOUT", value_name = "SECONDS",
          default_value_t = DEFAULT_WORKER_TIMEOUT, value_parser = parse_seconds)]
    pub worker_timeout: f64,

    /// Seconds the shutdown handshake may take before the job is aborted
    #[arg(long, env = "MPIDASK_SHUTDOWN_TIMEOUT", value_name = "SECONDS",
          default_value_t = DEFAULT_SHUTDOWN_TIMEOUT, value_parser = parse_seconds)]
    pub shutdown_timeout: f64,

    /// Seconds without a finished task, while tasks are pending, before the scheduler warns
    /// and names what they wait for (repeated at this interval)
    #[arg(long, env = "MPIDASK_STALL_WARNING", value_name = "SECONDS",
          default_value_t = DEFAULT_STALL_WARNING, value_parser = parse_seconds)]
    pub stall_warning: f64,

    /// Idle workers do not take queued tasks from busy ones: every task runs where it was
    /// placed, near its inputs (Dask's distributed.scheduler.work-stealing: False)
    #[arg(long, env = "MPIDASK_NO_WORK_STEALING", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_work_stealing: bool,

    /// Memory one worker may hold: a size (8GB, 512MiB), a fraction of the node's memory
    /// (0.5), auto (the node's memory - cgroup limit, Slurm allocation or MemTotal - divided
    /// by the ranks on the node) or none. A task whose result is larger fails.
    #[arg(long, env = "MPIDASK_MEMORY_LIMIT", value_name = "SIZE",
          default_value_t = MemoryLimitSpec::Auto)]
    pub memory_limit: MemoryLimitSpec,

    /// Fraction of --memory-limit above which a worker writes its least recently used
    /// values to disk (read back when needed)
    #[arg(long, env = "MPIDASK_MEMORY_SPILL", value_name = "FRACTION",
          default_value_t = DEFAULT_MEMORY_SPILL, value_parser = parse_fraction)]
    pub memory_spill: f64,

    /// Fraction of --memory-limit of values in memory above which a worker starts no new
    /// task until memory frees (when spilling fails or cannot keep up)
    #[arg(long, env = "MPIDASK_MEMORY_PAUSE", value_name = "FRACTION",
          default_value_t = DEFAULT_MEMORY_PAUSE, value_parser = parse_fraction)]
    pub memory_pause: f64,

    /// Where workers spill values: a private directory (0700, files 0600) is made in it
    /// and removed at exit [default: $TMPDIR, else /tmp]
    #[arg(long, env = "MPIDASK_LOCAL_DIRECTORY", value_name = "DIR")]
    pub local_directory: Option<std::path::PathBuf>,

    /// Keep the results of pure tasks in DIR (a private directory, made if missing) as they
    /// finish; a job started again with the same DIR, executable and program arguments
    /// loads them instead of computing them again. DIR must be on storage every rank sees
    #[arg(long, env = "MPIDASK_CHECKPOINT", value_name = "DIR")]
    pub checkpoint: Option<std::path::PathBuf>,

    /// Write the task stream (task runs and transfers on every rank) as Chrome-trace JSON
    /// to FILE when the job ends, also after a failure; open it in <https://ui.perfetto.dev>
    #[arg(long, env = "MPIDASK_TRACE", value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,

    /// Write a self-contained HTML report (task stream, memory, transfers, progress,
    /// summary, failures) to FILE while the job runs and when it ends, also after a failure
    #[arg(long, env = "MPIDASK_REPORT", value_name = "FILE.html")]
    pub report: Option<std::path::PathBuf>,

    /// Seconds between two rewrites of the --report file while the job runs (each replaces
    /// the file whole, so it can be opened at any time)
    #[arg(long, env = "MPIDASK_REPORT_INTERVAL", value_name = "SECONDS",
          default_value_t = DEFAULT_REPORT_INTERVAL, value_parser = parse_seconds)]
    pub report_interval: f64,

    /// Also write each rank's log lines to DIR/rank-RANK-ROLE.log (made if missing); the
    /// launcher's output is unchanged
    #[arg(long, env = "MPIDASK_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<std::path::PathBuf>,

    /// Seconds between two progress lines when the output is not a terminal (progress
    /// shows as a live bar on a terminal)
    #[arg(long, env = "MPIDASK_PROGRESS_INTERVAL", value_name = "SECONDS",
          default_value_t = DEFAULT_PROGRESS_INTERVAL, value_parser = parse_seconds)]
    pub progress_interval: f64,

    /// Longest sleep, in microseconds, of an idle rank between two polls for messages
    #[arg(long, env = "MPIDASK_POLL_MAX_US", value_name = "MICROSECONDS",
          default_value_t = DEFAULT_POLL_MAX_US,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub poll_max_us: u64,

    /// Also run a worker in rank 1's process, beside your program (dask-mpi's
    /// exclusive_workers=False): a job of 2 ranks works, and a small job wastes no core.
    /// Its rank is the job's size (the first rank past the launched ones). No effect in
    /// local mode
    #[arg(long, env = "MPIDASK_WORKER_ON_CLIENT", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub worker_on_client: bool,

    /// Also run a worker in rank 0's process, beside the scheduler. Its rank comes after
    /// the one --worker-on-client adds. No effect in local mode
    #[arg(long, env = "MPIDASK_WORKER_ON_SCHEDULER", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub worker_on_scheduler: bool,

    /// Largest MPI message; bigger frames are split (for tests of the splitting)
    #[arg(long, env = "MPIDASK_MESSAGE_PART_BYTES", hide = true,
          default_value_t = DEFAULT_PART_BYTES,
          value_parser = parse_part_bytes)]
    pub message_part_bytes: usize,
}

impl Default for RuntimeArgs {
    /// The defaults, ignoring the environment.
    fn default() -> Self {
        RuntimeArgs {
            nthreads: None,
            resources: ResourceList::default(),
            local_workers: DEFAULT_LOCAL_WORKERS,
            worker_timeout: DEFAULT_WORKER_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            stall_warning: DEFAULT_STALL_WARNING,
            memory_limit: MemoryLimitSpec::Auto,
            memory_spill: DEFAULT_MEMORY_SPILL,
            memory_pause: DEFAULT_MEMORY_PAUSE,
            local_directory: None,
            checkpoint: None,
            trace: None,
            report: None,
            report_interval: DEFAULT_REPORT_INTERVAL,
            log_dir: None,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            poll_max_us: DEFAULT_POLL_MAX_US,
            worker_on_client: false,
            no_work_stealing: false,
            worker_on_scheduler: false,
            message_part_bytes: DEFAULT_PART_BYTES,
        }
    }
}

#[derive(Parser)]
#[command(name = "mpidask")]
struct EnvironmentOnly {
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl RuntimeArgs {
    /// The settings from the `MPIDASK_*` environment variables, defaults for the rest.
    pub fn from_env() -> Result<Self, clap::Error> {
        EnvironmentOnly::try_parse_from(["mpidask"]).map(|p| p.runtime)
    }

    /// `--worker-timeout` as a duration.
    pub fn worker_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.worker_timeout)
    }

    /// `--shutdown-timeout` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_timeout)
    }

    /// `--stall-warning` as a duration.
    pub fn stall_warning(&self) -> Duration {
        Duration::from_secs_f64(self.stall_warning)
    }

    /// `--local-directory`, else `$TMPDIR`, else `/tmp`.
    pub fn local_directory(&self) -> std::path::PathBuf {
        self.local_directory
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// `true` if `--trace` or `--report` asks for the task stream.
    pub fn tracing(&self) -> bool {
        self.trace.is_some() || self.report.is_some()
    }

    /// `--report-interval` as a duration.
    pub fn report_interval(&self) -> Duration {
        Duration::from_secs_f64(self.report_interval)
    }

    /// `--progress-interval` as a duration.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_secs_f64(self.progress_interval)
    }

    /// `--poll-max-us` as a duration.
    pub fn poll_max(&self) -> Duration {
        Duration::from_micros(self.poll_max_us)
    }

    /// Worker threads: `--nthreads`, else the cores this rank may use divided among the
    /// `sharing` workers that may use the same cores.
    pub fn worker_threads(&self, sharing: usize) -> usize {
        match self.nthreads {
            Some(n) => n as usize,
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / sharing.max(1)).max(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Program {
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[arg(long, default_value_t = 1)]
        samples: u64,
    }

    #[test]
    fn flags_flatten_into_a_program_parser() {
        let p = Program::try_parse_from([
            "prog",
            "--nthreads",
            "3",
            "--resources",
            "gpu=1, ssd=0.5",
            "--samples",
            "9",
            "--worker-on-client",
        ])
        .unwrap();
        assert_eq!(p.runtime.nthreads, Some(3));
        assert!(p.runtime.worker_on_client && !p.runtime.worker_on_scheduler);
        assert_eq!(p.runtime.resources.to_string(), "gpu=1,ssd=0.5");
        assert_eq!(p.samples, 9);
        assert_eq!(p.runtime.shutdown_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn defaults_match_the_parser() {
        let parsed = Program::try_parse_from(["prog"]).unwrap().runtime;
        // The environment of the test process may set MPIDASK_*; compare only then.
        if std::env::vars().all(|(k, _)| !k.starts_with("MPIDASK_")) {
            assert_eq!(parsed, RuntimeArgs::default());
        }
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        for (args, expected) in [
            (vec!["--nthreads", "0"], "--nthreads"),
            (vec!["--resources", "gpu"], "is not NAME=AMOUNT"),
            (vec!["--resources", "gpu=lots"], "not a number"),
            (vec!["--resources", "gpu=1,gpu=2"], "given twice"),
            (vec!["--worker-timeout=-1"], "above 0"),
            (
                vec!["--shutdown-timeout", "soon"],
                "not a number of seconds",
            ),
            (vec!["--memory-limit", "8XB"], "unknown unit 'XB'"),
            (vec!["--memory-spill", "1.5"], "at most 1"),
        ] {
            let mut argv = vec!["prog"];
            argv.extend(args);
            let error = Program::try_parse_from(&argv)
                .err()
                .expect("an error")
                .to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
    }
}
