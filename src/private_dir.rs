//! Private scratch space of a rank (for spilled values and trace files): a directory only
//! its owner can enter (0700), files only its owner can read (0600), removed when the rank
//! exits, also after a failure, and swept at the next start if a killed rank left one.

use crate::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Prefix of every private directory: `mpidask-<pid>-<rank>-<nonce>`.
const PREFIX: &str = "mpidask-";

/// Directories of this process still to remove at exit.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A private directory, removed with its content when dropped and by [`remove_all`].
#[derive(Debug)]
pub struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    /// Creates a new private directory for `rank` under `parent` (e.g. `$TMPDIR` or
    /// `--local-directory`), first removing directories that dead processes left there.
    pub fn create(parent: &Path, rank: u32) -> Result<Self, Error> {
        sweep_stale(parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-{rank}-", std::process::id()))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|source| Error::Io {
                path: parent.display().to_string(),
                source,
            })?;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.path().to_path_buf());
        crate::exit::on_exit(remove_all);
        Ok(PrivateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (exclusively) a file readable and writable by its owner only.
    pub fn create_file(&self, name: &str) -> Result<File, Error> {
        let path = self.path().join(name);
        OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
    }
}

impl Drop for PrivateDir {
    /// The directory itself goes with the `TempDir`; here it leaves the exit list.
    fn drop(&mut self) {
        let path = self.dir.path();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != path);
    }
}

/// Removes every private directory of this process: called on every exit path of a rank
/// (normal exit, `MPI_Abort`, a signal), where destructors do not run.
pub fn remove_all() {
    let paths = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for path in paths {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Removes private directories under `parent` whose process no longer exists (a rank
/// killed by SIGKILL cannot clean up after itself).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owned_by_us = std::fs::metadata(entry.path()).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == crate::process::effective_uid()
        });
        if owned_by_us && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// Held by each test: `remove_all` removes every private directory of the process,
    /// a concurrent test's too.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn parent() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("private-dir-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directory_and_files_are_private_and_removed_on_drop() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let parent = parent().join("drop");
        std::fs::create_dir_all(&parent).unwrap();
        let dir = PrivateDir::create(&parent, 3).unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        let mut file = dir.create_file("spill-1").unwrap();
        file.write_all(b"value").unwrap();
        assert_eq!(mode(&dir.path().join("spill-1")), 0o600);
        assert!(dir.create_file("spill-1").is_err(), "never reuses a file");
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
        std::fs::remove_dir_all(parent).unwrap();
    }

    #[test]
    fn remove_all_removes_what_destructors_would() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let parent = parent().join("exit");
        std::fs::create_dir_all(&parent).unwrap();
        let dir = PrivateDir::create(&parent, 2).unwrap();
        dir.create_file("trace").unwrap();
        let path = dir.path().to_path_buf();
        std::mem::forget(dir); // as on a path that exits without running destructors
        remove_all();
        assert!(!path.exists());
        std::fs::remove_dir_all(parent).unwrap();
    }

    #[test]
    fn directories_of_dead_processes_are_swept() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let parent = parent().join("sweep");
        std::fs::create_dir_all(&parent).unwrap();
        // pid 0x7ffffffe does not exist; our own pid does.
        let stale = parent.join(format!("{PREFIX}{}-2-1", i32::MAX - 1));
        let alive = parent.join(format!("{PREFIX}{}-2-1", std::process::id()));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::create_dir_all(&alive).unwrap();
        let dir = PrivateDir::create(&parent, 2).unwrap();
        assert!(!stale.exists() && alive.exists());
        drop(dir);
        std::fs::remove_dir_all(parent).unwrap();
    }
}
