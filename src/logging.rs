//! Logging: `env_logger` set up once per process, every line prefixed with the time since
//! start, the rank and its role (`RUST_LOG` filters; the default level is `info`).

use std::cell::Cell;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static PROCESS_RANK: AtomicU32 = AtomicU32::new(u32::MAX);
static PROCESS_ROLE: OnceLock<&'static str> = OnceLock::new();

thread_local! {
    static THREAD_ROLE: Cell<Option<(u32, &'static str)>> = const { Cell::new(None) };
}

/// Sets up the logger (once; later calls do nothing).
pub fn init() {
    START.get_or_init(Instant::now);
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let elapsed = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
            let (rank, role) = current_role();
            let rank = if rank == u32::MAX {
                "?".to_string()
            } else {
                rank.to_string()
            };
            writeln!(
                buf,
                "[{elapsed:9.3}s rank {rank} {role}] {}: {}",
                record.level(),
                record.args()
            )
        })
        .try_init();
}

/// Names the rank and role of the whole process (MPI mode).
pub fn set_process_role(rank: u32, role: &'static str) {
    PROCESS_RANK.store(rank, Ordering::Relaxed);
    let _ = PROCESS_ROLE.set(role);
}

/// Names the rank and role of the current thread (local mode runs all roles as threads).
pub fn set_thread_role(rank: u32, role: &'static str) {
    THREAD_ROLE.with(|r| r.set(Some((rank, role))));
}

fn current_role() -> (u32, &'static str) {
    THREAD_ROLE.with(Cell::get).unwrap_or_else(|| {
        (
            PROCESS_RANK.load(Ordering::Relaxed),
            PROCESS_ROLE.get().copied().unwrap_or("starting"),
        )
    })
}

/// The role name of `rank` in a job of `size` ranks.
pub fn role_of(rank: u32, size: usize) -> &'static str {
    match (rank, size) {
        (_, 1) => "local",
        (0, _) => "scheduler",
        (1, _) => "client",
        _ => "worker",
    }
}
