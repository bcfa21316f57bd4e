//! Logging: `env_logger` set up once per process, every line prefixed with the time since
//! start, the rank and its role (`MPIDASK_LOG`, else `RUST_LOG`, filters; the default level
//! is `info`), and with `--log-dir` also appended to one file per rank.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
static PROCESS_RANK: AtomicU32 = AtomicU32::new(u32::MAX);
static PROCESS_ROLE: OnceLock<&'static str> = OnceLock::new();

/// The variable that filters the log first (`RUST_LOG` is read when it is not set).
pub const LOG_VARIABLE: &str = "MPIDASK_LOG";

/// Lines kept from before a rank is known, for the top of the first log file.
const EARLY_LINES: usize = 1000;

/// The key of local mode's process-wide log file.
const LOCAL_FILE: u32 = u32::MAX - 1;

/// The per-rank log files of `--log-dir`.
struct LogFiles {
    dir: Option<PathBuf>,
    /// Open files by rank; `None` once opening one failed (said once, on stderr).
    files: BTreeMap<u32, Option<File>>,
    /// Lines logged before the rank was known.
    early: Vec<String>,
}

static FILES: Mutex<LogFiles> = Mutex::new(LogFiles {
    dir: None,
    files: BTreeMap::new(),
    early: Vec::new(),
});

fn files() -> std::sync::MutexGuard<'static, LogFiles> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The log file of `rank` (with role `role`) in `dir`.
pub fn log_file_path(dir: &Path, rank: u32, role: &str) -> PathBuf {
    dir.join(format!("rank-{rank}-{role}.log"))
}

/// Appends every later log line of this process to `dir/rank-<rank>-<role>.log` as well
/// as to stderr (made if missing). Lines logged before the rank was known go at the top of
/// the first file. A file that cannot be written is said once on stderr; the lines still
/// reach stderr.
pub fn log_to_dir(dir: &Path) {
    files().dir = Some(dir.to_path_buf());
}

/// Writes `line` to the log file of `rank` (when `--log-dir` is set); an empty `line`
/// only makes the file.
fn write_to_file(rank: u32, role: &str, line: &str) {
    let mut state = files();
    let Some(dir) = state.dir.clone() else {
        return;
    };
    if rank == u32::MAX {
        if state.early.len() < EARLY_LINES && !line.is_empty() {
            state.early.push(line.to_string());
        }
        return;
    }
    // Local mode's process-wide lines (its ranks are threads) have a file of their own.
    let (rank, path) = if role == "local" {
        (LOCAL_FILE, dir.join("local.log"))
    } else {
        (rank, log_file_path(&dir, rank, role))
    };
    if !state.files.contains_key(&rank) {
        let opened = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        });
        let file = match opened {
            Ok(mut file) => {
                for early in std::mem::take(&mut state.early) {
                    let _ = file.write_all(early.as_bytes());
                }
                Some(file)
            }
            Err(e) => {
                eprintln!(
                    "mpidask: cannot write the log file {} ({e}): rank {rank} logs to stderr only; \
                     give --log-dir a directory this rank can write",
                    path.display()
                );
                None
            }
        };
        state.files.insert(rank, file);
    }
    if let Some(Some(file)) = state.files.get_mut(&rank) {
        let _ = file.write_all(line.as_bytes());
    }
}

thread_local! {
    static THREAD_ROLE: Cell<Option<(u32, &'static str)>> = const { Cell::new(None) };
}

/// Sets up the logger (once; later calls do nothing).
pub fn init() {
    START.get_or_init(Instant::now);
    let filter = [LOG_VARIABLE, "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "info".to_string());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|buf, record| {
            let elapsed = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
            let (rank, role) = current_role();
            let shown = if rank == u32::MAX {
                "?".to_string()
            } else {
                rank.to_string()
            };
            let line = format!(
                "[{elapsed:9.3}s rank {shown} {role}] {}: {}\n",
                record.level(),
                record.args()
            );
            write_to_file(rank, role, &line);
            buf.write_all(line.as_bytes())
        })
        .try_init();
}

/// Names the rank and role of the whole process (MPI mode).
pub fn set_process_role(rank: u32, role: &'static str) {
    PROCESS_RANK.store(rank, Ordering::Relaxed);
    let _ = PROCESS_ROLE.set(role);
    // Every rank has its file, even one that logs nothing.
    write_to_file(rank, role, "");
}

/// Names the rank and role of the current thread (local mode runs all roles as threads).
pub fn set_thread_role(rank: u32, role: &'static str) {
    THREAD_ROLE.with(|r| r.set(Some((rank, role))));
    write_to_file(rank, role, "");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_gets_its_own_file_with_the_early_lines_first() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        log_to_dir(&logs);
        write_to_file(u32::MAX, "starting", "early line\n");
        write_to_file(1007, "worker", "seven one\n");
        write_to_file(1008, "worker", "eight\n");
        write_to_file(1007, "worker", "seven two\n");
        let read = |rank: u32| std::fs::read_to_string(log_file_path(&logs, rank, "worker"));
        assert_eq!(read(1007).unwrap(), "early line\nseven one\nseven two\n");
        assert_eq!(read(1008).unwrap(), "eight\n");
        // A directory that cannot be made: said once, nothing panics.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        log_to_dir(&blocked.join("sub"));
        write_to_file(1009, "worker", "lost to the file, not to stderr\n");
        assert!(matches!(files().files.get(&1009), Some(None)));
        files().dir = None;
    }
}
