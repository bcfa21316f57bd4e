//! Stop signals: SIGTERM, SIGINT and SIGUSR1 (walltime, `scancel`, Ctrl-C) set a flag that
//! the rank's communication loop turns into an orderly stop of the whole job (exit 9).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Set once [`install_stop_handlers`] ran: this process handles stop signals.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// `true` if this process handles stop signals (not in a program's own [`run_local`]
/// (crate::run_local)).
pub(super) fn handlers_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The signals that stop a job in order.
pub(crate) const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGUSR1,
];

/// Installs the stop-signal handlers: each stores its signal's number in the returned
/// flag (signal-hook's flag API: an atomic store, nothing else runs in the handler).
pub(super) fn install_stop_handlers() -> Arc<AtomicUsize> {
    let flag = Arc::new(AtomicUsize::new(0));
    INSTALLED.store(true, Ordering::Relaxed);
    for signal in STOP_SIGNALS {
        let value = usize::try_from(signal).expect("signal numbers are positive");
        if let Err(e) = signal_hook::flag::register_usize(signal, flag.clone(), value) {
            log::warn!("cannot handle signal {signal}: {e}; it will end this rank abruptly");
        }
    }
    flag
}

/// A flag no handler sets (local mode run by [`run_local`](crate::run_local), which leaves
/// signals to the program).
pub(super) fn no_stop_signals() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}
