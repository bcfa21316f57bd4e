//! What the user's program returned, as the job's exit code: decided by the types in the
//! error's chain (a [`TaskFailure`] marks an unhandled task failure), never by its text.

use super::panics;
use crate::error::TaskFailure;
use crate::exit::ExitCode;
use log::error;

/// What the user's program returns: `()` or `Result<(), E>`. Decides the job's exit code.
pub trait ClientOutcome {
    /// The exit code and, for a failure, the message to log.
    fn exit_status(self) -> (ExitCode, Option<String>);
}

impl ClientOutcome for () {
    fn exit_status(self) -> (ExitCode, Option<String>) {
        (ExitCode::Success, None)
    }
}

impl<E> ClientOutcome for Result<(), E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn exit_status(self) -> (ExitCode, Option<String>) {
        let Err(error) = self else {
            return (ExitCode::Success, None);
        };
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        let mut task_failure = false;
        let mut parts: Vec<String> = Vec::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = current {
            // Every task error has a `TaskFailure` as its source: found by type however the
            // program wrapped it (anyhow hides the type of the error it wraps, not of its
            // sources).
            task_failure |= e.is::<TaskFailure>();
            let text = e.to_string();
            if parts.last() != Some(&text) {
                parts.push(text);
            }
            current = e.source();
        }
        let chain = parts.join(": ");
        if task_failure {
            (
                ExitCode::TaskFailed,
                Some(format!(
                    "the client program returned a task failure: {chain}"
                )),
            )
        } else {
            (
                ExitCode::ClientError,
                Some(format!("the client program returned an error: {chain}")),
            )
        }
    }
}

/// The exit code of the user's program, logging its failure once. `stopping`: the job was
/// already being stopped (a signal, an abort) when the program ended, so whatever it
/// returned is only the echo of that stop, which the scheduler has reported.
pub(super) fn exit_code_with_message<R: ClientOutcome>(
    result: std::thread::Result<R>,
    stopping: bool,
) -> (i32, ()) {
    let (code, message) = match result {
        Ok(outcome) => outcome.exit_status(),
        Err(payload) => (
            ExitCode::ClientPanic,
            Some(format!(
                "the client program {}",
                panics::take_client_panic().unwrap_or_else(|| format!(
                    "panicked: {}",
                    crate::task::payload_text(&*payload)
                ))
            )),
        ),
    };
    if stopping && code != ExitCode::ClientPanic {
        if let Some(message) = message {
            log::debug!("while the job stopped: {message}");
        }
        return (ExitCode::Signal.code(), ());
    }
    if let Some(message) = message {
        error!("{message}");
    }
    (code.code(), ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, TaskError};

    #[derive(Debug, thiserror::Error)]
    #[error("while summing")]
    struct Wrapper(#[source] Error);

    fn task_error() -> Error {
        Error::Task(TaskError::new("inc-3".into(), "boom".into()))
    }

    #[test]
    fn task_failures_are_found_by_type_through_wrappers() {
        let direct: Result<(), Error> = Err(task_error());
        let (code, message) = direct.exit_status();
        assert_eq!(code, ExitCode::TaskFailed);
        assert_eq!(
            message.unwrap(),
            "the client program returned a task failure: task inc-3 failed: boom"
        );
        let wrapped: Result<(), Wrapper> = Err(Wrapper(task_error()));
        let (code, message) = wrapped.exit_status();
        assert_eq!(code, ExitCode::TaskFailed);
        assert!(
            message
                .unwrap()
                .ends_with("while summing: task inc-3 failed: boom")
        );
        // A boxed trait object hides the type of the error itself, not of its sources.
        let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> =
            Err(Box::new(Wrapper(task_error())));
        assert_eq!(boxed.exit_status().0, ExitCode::TaskFailed);
    }

    #[test]
    fn the_same_text_without_the_type_is_a_client_error() {
        let text = task_error().to_string();
        let imitation: Result<(), String> = Err(text);
        assert_eq!(imitation.exit_status().0, ExitCode::ClientError);
        assert_eq!(().exit_status(), (ExitCode::Success, None));
    }

    #[test]
    fn an_error_while_stopping_is_the_stop() {
        let result: std::thread::Result<Result<(), Error>> = Ok(Err(Error::ShuttingDown));
        assert_eq!(
            exit_code_with_message(result, true).0,
            ExitCode::Signal.code()
        );
        let result: std::thread::Result<Result<(), Error>> = Ok(Err(Error::ShuttingDown));
        assert_eq!(
            exit_code_with_message(result, false).0,
            ExitCode::ClientError.code()
        );
    }
}
