//! Panics in task functions: the text of a panic's payload, and the report (message and
//! location) that the panic hook records for the task running on this thread, which the
//! task's error then carries to the client.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    /// Where and why the task running on this thread panicked, set by the panic hook.
    static PANIC_REPORT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records a panic raised while a task runs on this thread (the panic hook calls this).
pub fn record_task_panic(report: String) {
    PANIC_REPORT.with(|slot| *slot.borrow_mut() = Some(report));
}

/// The message of a panic payload (`&str` or `String`).
pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}

/// What a caught panic of a task says: the hook's report ("panicked at FILE:LINE:COL:
/// MESSAGE") when it recorded one on this thread, else "panicked: MESSAGE". The report is
/// taken, so it cannot be mistaken for a later panic's.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    PANIC_REPORT
        .with(|slot| slot.borrow_mut().take())
        .unwrap_or_else(|| format!("panicked: {}", payload_text(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_report_is_taken_once() {
        let payload: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&*payload), "panicked: boom");
        record_task_panic("panicked at a.rs:1:2: boom".into());
        assert_eq!(panic_message(&*payload), "panicked at a.rs:1:2: boom");
        assert_eq!(panic_message(&*payload), "panicked: boom");
        let other: Box<dyn Any + Send> = Box::new(7);
        assert_eq!(payload_text(&*other), "a non-string panic payload");
    }
}
