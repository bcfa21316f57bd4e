//! What can be wrong with a job description, one variant per mistake, each naming the input and the fix.

use super::BatchSystem;
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
    /// `--requeue` without `--checkpoint`: the requeued job would start from nothing.
    #[error(
        "--requeue needs --checkpoint DIR: without it the requeued job computes everything again (and stops at the walltime again); add --checkpoint on storage every node sees, e.g. --checkpoint $SCRATCH/my_job.checkpoint"
    )]
    RequeueWithoutCheckpoint,
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
    /// An option the target system has no way to express.
    #[error("{option} cannot be expressed for {system}: {fix}")]
    Unsupported {
        /// The target system.
        system: BatchSystem,
        /// The option as given, e.g. `--gres gpu:2`.
        option: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// A job name the target system would reject.
    #[error(
        "--job-name {name:?} is not a valid {system} job name: use letters, digits, '_', '-' and '.', starting with a letter (give --job-name when the program's file name does not fit)"
    )]
    BadJobName {
        /// The target system.
        system: BatchSystem,
        /// The name (given, or the program's file name).
        name: String,
    },
    /// A `%` pattern in `--output` the target system does not expand.
    #[error("--output {output:?} uses {pattern}, which {system} does not expand: {fix}")]
    OutputPattern {
        /// The target system.
        system: BatchSystem,
        /// What was given.
        output: String,
        /// The pattern, e.g. `%j`.
        pattern: String,
        /// The system's own form.
        fix: &'static str,
    },
    /// A stop signal lead as long as the walltime or longer.
    #[error(
        "--signal {lead} is not shorter than --walltime {walltime:?}: the job would be told to stop before it starts; give fewer seconds"
    )]
    LeadTooLong {
        /// Seconds before the walltime.
        lead: u32,
        /// The walltime as given.
        walltime: String,
    },
    /// A value that cannot be written on one directive line.
    #[error("--{flag} {value:?} cannot be written in a {system} directive: {fix}")]
    BadValue {
        /// The target system.
        system: BatchSystem,
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        fix: &'static str,
    },
}
