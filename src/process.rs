//! Facts about this process and its node that the operating system gives: CPU time, peak
//! memory, host name, user, the cores it may run on, and the timer slack of a thread; and
//! the hints it takes (thread priority, huge pages).

use std::hash::{Hash, Hasher};

/// CPU time (user + system, every thread) this process has used so far, seconds.
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Peak resident memory of this process (`VmHWM` of `/proc/self/status`), bytes; 0 where
/// the kernel does not say.
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// Resident memory of this process now (`VmRSS` of `/proc/self/status`), bytes; 0 where
/// the kernel does not say.
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// The size after `field` (in kB) in `/proc/self/status`, bytes; 0 if it is not there.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// This machine's host name (`uname`), or `localhost` if it has none.
pub fn hostname() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy().trim().to_string();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A fingerprint of the cores this process may run on (its affinity mask); 0 if the
/// kernel does not say. Processes with equal fingerprints share exactly the same cores.
pub fn core_set_fingerprint() -> u64 {
    let Ok(set) = rustix::thread::sched_getaffinity(None) else {
        return 0;
    };
    let mut hasher = rustc_hash::FxHasher::default();
    for cpu in (0..rustix::thread::CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)) {
        cpu.hash(&mut hasher);
    }
    hasher.finish()
}

/// A hash (xxh3-128) of the bytes of the executable this process runs, or why they cannot
/// be read. The executable is read once, the first time it is asked for: the check that
/// every rank runs the same program and `--checkpoint`'s manifest share it.
pub fn executable_hash() -> Result<u128, String> {
    static HASH: std::sync::OnceLock<Result<u128, String>> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let bytes = std::fs::read("/proc/self/exe").or_else(|proc_error| {
            let path = std::env::current_exe().map_err(|_| proc_error.to_string())?;
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        })?;
        Ok(xxhash_rust::xxh3::xxh3_128(&bytes))
    })
    .clone()
}

/// Makes the calling thread's sleeps precise: 1 us of timer slack instead of Linux's 50 us
/// default, so short back-off sleeps do not add latency. A refusal is ignored (sleeps are
/// then only less precise).
pub fn tighten_timer_slack() {
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1000));
}

/// How much lower than the communication thread a rank's task and disk threads run
/// (Linux nice levels, per thread).
pub const BACKGROUND_NICE: i32 = 5;

/// Lowers the calling thread's scheduling priority by [`BACKGROUND_NICE`]: task and disk
/// threads yield the cores to the rank's communication thread (and to the scheduler and
/// client ranks on the same node) when there are more runnable threads than cores, so
/// messages and heartbeats are handled on time however busy the tasks keep the node. Only
/// contention changes: a thread alone on a core runs as fast. A refusal is ignored.
pub fn lower_current_thread_priority() {
    let tid = rustix::thread::gettid();
    if let Ok(current) = rustix::process::getpriority_process(Some(tid)) {
        let _ = rustix::process::setpriority_process(Some(tid), current + BACKGROUND_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_has_a_hash() {
        let hash = executable_hash().expect("readable");
        assert_eq!(executable_hash(), Ok(hash));
    }

    #[test]
    fn readings_are_plausible() {
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() >= before);
        assert!(
            peak_rss_bytes() > 1 << 20,
            "a test process holds more than 1 MiB"
        );
        assert!(rss_bytes() > 1 << 20 && rss_bytes() <= peak_rss_bytes());
        assert!(!hostname().is_empty());
        assert_ne!(
            core_set_fingerprint(),
            0,
            "this process may run on some core"
        );
        assert_eq!(
            core_set_fingerprint(),
            core_set_fingerprint(),
            "the same mask"
        );
        tighten_timer_slack();
    }
}
