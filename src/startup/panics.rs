//! Where a panic goes: a task's panic becomes its error message (sent to the client), the
//! client program's panic is logged once by the runtime (with its location), anything else
//! goes to the default hook.

use crate::worker::executor;
use std::cell::{Cell, RefCell};

thread_local! {
    static IS_CLIENT_PROGRAM: Cell<bool> = const { Cell::new(false) };
    static CLIENT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the calling thread as the one running the user's program.
pub(super) fn mark_client_program_thread() {
    IS_CLIENT_PROGRAM.with(|f| f.set(true));
}

/// The report of the client program's panic on this thread, if it panicked.
pub(super) fn take_client_panic() -> Option<String> {
    CLIENT_PANIC.with(|p| p.borrow_mut().take())
}

/// Installs the process's panic hook (once).
pub(super) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown location".into());
            let report = format!(
                "panicked at {location}: {}",
                crate::task::payload_text(info.payload())
            );
            if executor::on_executor_thread() {
                crate::task::record_task_panic(report);
            } else if IS_CLIENT_PROGRAM.with(Cell::get) {
                let backtrace = std::backtrace::Backtrace::capture();
                let report = match backtrace.status() {
                    std::backtrace::BacktraceStatus::Captured => format!("{report}\n{backtrace}"),
                    _ => report,
                };
                CLIENT_PANIC.with(|p| *p.borrow_mut() = Some(report));
            } else {
                default_hook(info);
            }
        }));
    });
}
