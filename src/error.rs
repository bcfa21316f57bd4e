//! The library's error type: every way an mpidask call can fail, as structured variants.

use crate::protocol::Key;
use bytemuck::TransparentWrapper;

/// A task that failed: the key of the task whose function panicked or returned `Err`, and
/// what it said. Tasks that depend on a failed task fail with the *same* `TaskError`, so
/// the key always names the task where the failure started.
///
/// It displays as `task <key> failed`; what the task said is its
/// [`source`](std::error::Error::source), a [`TaskFailure`], so error reporters that walk
/// the chain (anyhow's `{:#}` and `{:?}`, the runtime's own log line) print
/// `task <key> failed: <message>`.
///
/// ```
/// use mpidask::{TaskError, TaskFailure};
/// use std::error::Error;
/// let e = TaskError::new("inc-3".into(), "boom".into());
/// assert_eq!(e.to_string(), "task inc-3 failed");
/// assert_eq!(e.source().unwrap().to_string(), "boom");
/// assert!(e.source().unwrap().is::<TaskFailure>());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// Readable key of the task that failed first, e.g. `count_hits-17`.
    pub key: String,
    /// The panic message or the `Display` of the returned error.
    pub message: String,
}

impl TaskError {
    /// The failure of the task `key` with `message`.
    pub fn new(key: String, message: String) -> Self {
        TaskError { key, message }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} failed", self.key)
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(TaskFailure::wrap_ref(&self.message))
    }
}

/// What a failed task said (its panic message or the `Display` of its `Err`): the
/// [`source`](std::error::Error::source) of every [`TaskError`]. The runtime finds it by
/// type in the chain of an error the client program returns, however wrapped, and ends
/// the job with [`ExitCode::TaskFailed`](crate::ExitCode::TaskFailed).
#[derive(Debug, PartialEq, Eq, bytemuck::TransparentWrapper)]
#[repr(transparent)]
pub struct TaskFailure(String);

impl TaskFailure {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TaskFailure {}

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task (or a task it depends on) panicked or returned `Err`.
    #[error(transparent)]
    Task(#[from] TaskError),

    /// The task was cancelled by [`crate::Client::cancel`] (or a dependency was).
    #[error("task {key} was cancelled")]
    Cancelled {
        /// Readable key of the cancelled task.
        key: String,
    },

    /// A value could not be encoded or decoded (a type mismatch between the task's result
    /// and the future's type parameter, or a corrupted message).
    #[error("could not {action} {what}: {source}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being (de)serialised.
        what: String,
        /// The bincode error.
        #[source]
        source: bincode::Error,
    },

    /// A request the runtime cannot honour as given (e.g. scattering to a rank that is not a
    /// worker).
    #[error("invalid request: {0}")]
    Config(String),

    /// The runtime is shutting down and cannot take this request.
    #[error("the runtime is shutting down")]
    ShuttingDown,

    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// The future's key is not known to the client (released or never submitted).
    #[error("unknown key {0}")]
    UnknownKey(Key),

    /// A wait with a time limit ran out (the tasks go on).
    #[error("timed out after {seconds} s waiting for {what}; wait longer, or without a limit")]
    Timeout {
        /// The limit, in seconds.
        seconds: f64,
        /// What was waited for.
        what: String,
    },
}

/// Shorthand for `std::result::Result<T, mpidask::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn decode(what: impl Into<String>, source: bincode::Error) -> Self {
        Error::Codec {
            action: "decode",
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn encode(what: impl Into<String>, source: bincode::Error) -> Self {
        Error::Codec {
            action: "encode",
            what: what.into(),
            source,
        }
    }
}
