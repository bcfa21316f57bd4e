//! The library's error type: every way an mpidask call can fail, as structured variants.

use crate::protocol::Key;

/// A task that failed: the key of the task whose function panicked or returned `Err`, and
/// what it said. Tasks that depend on a failed task fail with the *same* `TaskError`, so
/// the key always names the task where the failure started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {key} failed: {message}")]
pub struct TaskError {
    /// Readable key of the task that failed first, e.g. `count_hits-17`.
    pub key: String,
    /// The panic message or the `Display` of the returned error.
    pub message: String,
}

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
