//! Where arrays are written: a directory checked to take new files before any task runs,
//! so a read-only or missing place is one clear error, not a failure in every worker.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// `dir`, created if missing and checked to take new files, as an absolute path; else an
/// error naming it and saying where to write instead (before any task runs).
pub(crate) fn writable_dir(dir: &Path) -> Result<PathBuf> {
    let refused = |e: std::io::Error| {
        Error::Config(format!(
            "{}: cannot write there ({e}); write to a directory on a writable file system that \
             every rank reaches (a scratch or project directory)",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(refused)?;
    let probe = dir.join(format!(".mpidask-write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(refused)?;
    let _ = std::fs::remove_file(&probe);
    dir.canonicalize().map_err(Error::io(dir))
}
