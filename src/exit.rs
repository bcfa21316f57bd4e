//! The exit codes every rank of a job ends with, what each means, and the hooks that run
//! before a rank exits on any path.
//!
//! All ranks exit with the same code after the shutdown handshake. Where a rank cannot take
//! part in the handshake the runtime calls `MPI_Abort` with the code instead, and the
//! launcher returns it.

use std::sync::Mutex;

/// Clean-ups to run before the process exits, in the order they were registered.
static EXIT_HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers `hook` to run before this process exits, on every path (the end of the job,
/// an abort, a signal), where destructors do not run. A function registered twice runs once.
pub fn on_exit(hook: fn()) {
    let mut hooks = EXIT_HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    if !hooks.iter().any(|h| std::ptr::fn_addr_eq(*h, hook)) {
        hooks.push(hook);
    }
}

/// Runs every registered exit hook (each keeps its registration: running one twice is
/// harmless by contract).
pub fn run_exit_hooks() {
    let hooks = EXIT_HOOKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for hook in hooks {
        hook();
    }
}

/// Why a job ended, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// The client's function returned `Ok`.
    Success = 0,
    /// The client's function returned an error that is not a task failure.
    ClientError = 1,
    /// Invalid command-line flags or environment values (the code clap uses).
    Usage = 2,
    /// The client's function panicked.
    ClientPanic = 3,
    /// The client's function returned a task failure it did not handle; or an MPI task
    /// failed on one of its workers while others stayed waiting for it in MPI.
    TaskFailed = 4,
    /// A worker rank, or the scheduler, stopped responding (`--worker-timeout`).
    WorkerLost = 5,
    /// Start-up or configuration error: too few ranks, ranks running different executables
    /// or protocol versions, insufficient MPI thread support.
    Startup = 6,
    /// The shutdown handshake did not finish within the deadline; the job was aborted.
    ShutdownTimeout = 7,
    /// A rank received a message that breaks the protocol (malformed bytes, an unregistered
    /// function id, a forbidden sender), or an internal invariant broke.
    Internal = 8,
    /// Stopped by SIGTERM, SIGINT or SIGUSR1 (walltime, `scancel`, Ctrl-C): the running
    /// tasks were named in the log and every rank exited through the shutdown handshake.
    Signal = 9,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Every code, in numeric order.
    pub const ALL: [ExitCode; 10] = [
        ExitCode::Success,
        ExitCode::ClientError,
        ExitCode::Usage,
        ExitCode::ClientPanic,
        ExitCode::TaskFailed,
        ExitCode::WorkerLost,
        ExitCode::Startup,
        ExitCode::ShutdownTimeout,
        ExitCode::Internal,
        ExitCode::Signal,
    ];

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// One line saying what the code means.
    pub fn describe(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::ClientError => "the client program returned an error",
            ExitCode::Usage => "invalid command-line flags or environment values",
            ExitCode::ClientPanic => "the client program panicked",
            ExitCode::TaskFailed => {
                "a task failed and the client program did not handle it; or an MPI task failed \
                 on one of its workers while others stayed waiting for it in MPI (30 s later)"
            }
            ExitCode::WorkerLost => "a worker rank (or the scheduler) stopped responding",
            ExitCode::Startup => "start-up or configuration error",
            ExitCode::ShutdownTimeout => "shutdown did not finish in time; the job was aborted",
            ExitCode::Internal => "a message broke the protocol, or an internal runtime error",
            ExitCode::Signal => "stopped by SIGTERM, SIGINT or SIGUSR1 (walltime, scancel)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HOOK_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_run() {
        HOOK_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn exit_hooks_run_once_per_function() {
        on_exit(count_run);
        on_exit(count_run);
        let before = HOOK_RUNS.load(std::sync::atomic::Ordering::SeqCst);
        run_exit_hooks();
        assert_eq!(
            HOOK_RUNS.load(std::sync::atomic::Ordering::SeqCst),
            before + 1
        );
    }

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for (i, code) in ExitCode::ALL.into_iter().enumerate() {
            assert_eq!(code.code(), i as i32);
            assert_eq!(ExitCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ExitCode::from_code(137), None);
    }
}
