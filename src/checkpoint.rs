//! Checkpoints (`--checkpoint DIR`): the results of pure tasks kept on disk under their
//! content names, so that a job started again with the same directory and the same
//! executable loads them instead of computing them again (after the walltime cut the last
//! one off, say).
//!
//! The directory holds a manifest (which executable wrote it, with which program
//! arguments) and one file per result,
//! `<content name in 32 hex digits>.bin`: a header (magic, length, checksum) and the
//! encoded value. Each file is written under a temporary name (`.tmp-<host>-<pid>-<n>`,
//! 0600) and renamed into place, so a result file is whole or absent, however the job
//! ended (a file cut short by a crash fails its checksum and is computed again). Only rank 0
//! reads the directory listing and the manifest, before any task runs; the workers write
//! and read result files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// The name of a result: a hash of what defines its task across runs.
pub type ContentName = u128;

/// The manifest's file name.
const MANIFEST: &str = "mpidask-checkpoint.json";
/// The layout of the directory this code reads and writes.
const FORMAT: u32 = 1;
/// First bytes of every result file.
const MAGIC: &[u8; 8] = b"MPDCKPT1";
/// Prefix of a result file being written.
const TEMPORARY: &str = ".tmp-";
/// Prefix of the directory a manifest that does not match is moved into, with its results.
const STALE: &str = "stale-";

/// Why a checkpoint directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// It cannot be created, listed or written.
    #[error(
        "--checkpoint {path}: {source}; name a directory you can write (it is created if \
         missing)"
    )]
    Unusable {
        /// The directory.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// It holds files mpidask did not write.
    #[error(
        "--checkpoint {path} holds {example}, which mpidask did not write; name an empty or \
         new directory (a checkpoint directory holds only mpidask's results)"
    )]
    Foreign {
        /// The directory.
        path: String,
        /// The first such file.
        example: String,
    },
}

/// What wrote a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The directory's layout ([`FORMAT`]).
    pub format: u32,
    /// A hash of the executable's bytes: results of another build are not reused.
    pub executable: String,
    /// The program's command-line arguments (without mpidask's own flags): results of a
    /// run with other arguments are not reused.
    pub arguments: Vec<String>,
}

impl Manifest {
    /// The manifest of the running executable started with the program `arguments`.
    pub fn of_this_run(arguments: Vec<String>) -> Result<Self, String> {
        Ok(Manifest {
            format: FORMAT,
            executable: format!("{:032x}", crate::process::executable_hash()?),
            arguments,
        })
    }
}

/// A checkpoint directory, opened by rank 0 at the start of a job.
#[derive(Debug)]
pub struct Opened {
    /// The results it holds, by content name (none if it was new or stale).
    pub results: BTreeSet<ContentName>,
    /// Why results there were not reused, if they were not: the log line says it.
    pub stale: Option<String>,
}

/// Opens `dir` for a job run by the executable `manifest` describes: creates it (0700) if
/// missing; refuses one holding files mpidask did not write; moves the results of another
/// executable aside (`stale-<seconds>/`, said in [`Opened::stale`]); lists the results a
/// job of the same executable left.
pub fn open(dir: &Path, manifest: &Manifest) -> Result<Opened, CheckpointError> {
    let unusable = |source| CheckpointError::Unusable {
        path: dir.display().to_string(),
        source,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(unusable)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(unusable)?;
    }
    let mut results = BTreeSet::new();
    let mut has_manifest = false;
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unusable)? {
        let entry = entry.map_err(unusable)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == MANIFEST {
            has_manifest = true;
        } else if let Some(content) = parse_file_name(&name) {
            results.insert(content);
        } else if name.starts_with(TEMPORARY) {
            leftovers.push(entry.path());
        } else if !name.starts_with(STALE) {
            return Err(CheckpointError::Foreign {
                path: dir.display().to_string(),
                example: name.into_owned(),
            });
        }
    }
    // A file a killed job was writing: never renamed into place, never read.
    for path in leftovers {
        let _ = std::fs::remove_file(path);
    }
    let written = if has_manifest {
        let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(unusable)?;
        match serde_json::from_str::<Manifest>(&text) {
            Ok(found) => Some(found),
            Err(_) => {
                return Err(CheckpointError::Foreign {
                    path: dir.display().to_string(),
                    example: format!("{MANIFEST} (not a manifest mpidask can read)"),
                });
            }
        }
    } else if let Some(first) = results.first() {
        return Err(CheckpointError::Foreign {
            path: dir.display().to_string(),
            example: format!("{} without {MANIFEST}", file_name(*first)),
        });
    } else {
        None
    };
    let stale = match &written {
        Some(found) if found == manifest => None,
        Some(found) => {
            let why = if found.format != manifest.format {
                format!(
                    "it has layout {} (this mpidask reads {})",
                    found.format, FORMAT
                )
            } else if found.executable != manifest.executable {
                "it was written by a different executable (the program was rebuilt)".to_string()
            } else {
                format!(
                    "it was written by a run with other arguments ({:?}, now {:?})",
                    found.arguments, manifest.arguments
                )
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = dir.join(format!("{STALE}{now}"));
            std::fs::create_dir_all(&aside).map_err(unusable)?;
            for content in std::mem::take(&mut results) {
                let name = file_name(content);
                std::fs::rename(dir.join(&name), aside.join(&name)).map_err(unusable)?;
            }
            std::fs::rename(dir.join(MANIFEST), aside.join(MANIFEST)).map_err(unusable)?;
            Some(format!(
                "{why}: its results are not reused (moved to {})",
                aside.display()
            ))
        }
        None => None,
    };
    // Written every time, also when it is unchanged: that proves the directory writable
    // before any task runs.
    let text = serde_json::to_string_pretty(manifest).expect("a manifest encodes");
    write_atomically(dir, MANIFEST, text.as_bytes()).map_err(unusable)?;
    Ok(Opened { results, stale })
}

/// `argv` (without the program's name) less mpidask's own flags and their values: what a
/// manifest records, so that a run with another `--nthreads` or `--trace` still reuses its
/// results while one with other program arguments does not.
pub fn program_arguments(argv: impl IntoIterator<Item = String>) -> Vec<String> {
    use clap::Args;
    let command = crate::config::RuntimeArgs::augment_args(clap::Command::new("mpidask"));
    let runtime: rustc_hash::FxHashMap<String, bool> = command
        .get_arguments()
        .filter_map(|a| {
            a.get_long()
                .map(|long| (long.to_string(), a.get_action().takes_values()))
        })
        .collect();
    let mut kept = Vec::new();
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        if arg == "--" {
            kept.push(arg);
            kept.extend(argv.by_ref());
            break;
        }
        let flag = arg.strip_prefix("--").map(|flag| {
            flag.split_once('=')
                .map_or((flag, false), |(f, _)| (f, true))
        });
        match flag.and_then(|(name, inline)| runtime.get(name).map(|takes| (*takes, inline))) {
            Some((takes_value, inline)) => {
                if takes_value && !inline {
                    argv.next();
                }
            }
            None => kept.push(arg),
        }
    }
    kept
}

/// Opens the job's checkpoint directory `dir` on rank 0 before any task runs, logging what
/// it holds; the error is the job's start-up error.
pub fn open_for_job(dir: &Path) -> Result<Opened, String> {
    let arguments = program_arguments(std::env::args().skip(1));
    let manifest = Manifest::of_this_run(arguments).map_err(|e| {
        format!(
            "--checkpoint {}: cannot read this program's executable to name its results ({e})",
            dir.display()
        )
    })?;
    let opened = open(dir, &manifest).map_err(|e| e.to_string())?;
    if let Some(why) = &opened.stale {
        log::warn!(
            "checkpoint {}: {why}; every task is computed again",
            dir.display()
        );
    } else if !opened.results.is_empty() {
        log::info!(
            "checkpoint {}: {} result(s) of an earlier run are loaded instead of computed",
            dir.display(),
            opened.results.len()
        );
    }
    Ok(opened)
}

/// The file name of the result named `content`.
pub fn file_name(content: ContentName) -> String {
    format!("{content:032x}.bin")
}

fn parse_file_name(name: &str) -> Option<ContentName> {
    let hex = name.strip_suffix(".bin")?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| ContentName::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Writes the result whose bytes are `head` and then `body` (a value in two pieces, or in
/// one and nothing) named `content` into `dir`: whole or not at all. The file is the same
/// however the bytes are cut.
pub fn write_result(
    dir: &Path,
    content: ContentName,
    (head, body): (&[u8], &[u8]),
) -> std::io::Result<()> {
    let len = head.len() + body.len();
    let mut sum = Xxh3Default::new();
    sum.update(head);
    sum.update(body);
    let mut bytes = Vec::with_capacity(len + 24);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(len as u64).to_le_bytes());
    bytes.extend_from_slice(&sum.digest().to_le_bytes());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(body);
    write_atomically(dir, &file_name(content), &bytes)
}

/// Reads the result named `content` from `dir`, checking its header and checksum.
pub fn read_result(dir: &Path, content: ContentName) -> std::io::Result<Vec<u8>> {
    let path = dir.join(file_name(content));
    let mut file = std::fs::File::open(&path)?;
    let mut header = [0u8; 24];
    file.read_exact(&mut header)?;
    let corrupt = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    if &header[..8] != MAGIC {
        return Err(corrupt("not a result file"));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let expected = file.metadata()?.len().saturating_sub(24);
    if len != expected {
        return Err(corrupt("its length does not match its header"));
    }
    let mut value = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut value)?;
    if xxh3_64(&value) != sum {
        return Err(corrupt("its checksum does not match"));
    }
    Ok(value)
}

/// Writes `bytes` to `dir/name` through a temporary file (0600) renamed into place.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temporary: PathBuf = dir.join(format!(
        "{TEMPORARY}{}-{}-{}",
        crate::process::hostname(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        // No fsync: a file a crash cut short fails its length or checksum check and its
        // task runs again, which costs less than a flush per result.
        file.write_all(bytes)?;
        std::fs::rename(&temporary, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(executable: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            executable: executable.into(),
            arguments: vec!["--n".into(), "200".into()],
        }
    }

    #[test]
    fn results_round_trip_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), &manifest("a")).unwrap();
        assert!(opened.results.is_empty() && opened.stale.is_none());
        write_result(dir.path(), 0xabc, (b"value", &[])).unwrap();
        assert_eq!(read_result(dir.path(), 0xabc).unwrap(), b"value");
        let path = dir.path().join(file_name(0xabc));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = open(dir.path(), &manifest("a")).unwrap();
        assert_eq!(reopened.results, BTreeSet::from([0xabc]));
        assert!(reopened.stale.is_none());
        // A value in two pieces (a split value's head and elements) writes the file it
        // does in one.
        let whole: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        write_result(dir.path(), 0xdef, (&whole[..3], &whole[3..])).unwrap();
        write_result(dir.path(), 0x123, (&whole, &[])).unwrap();
        let files = [0xdef, 0x123].map(|c| std::fs::read(dir.path().join(file_name(c))).unwrap());
        assert_eq!(files[0], files[1]);
        assert_eq!(read_result(dir.path(), 0xdef).unwrap(), whole);
    }

    #[test]
    fn a_damaged_result_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), &manifest("a")).unwrap();
        write_result(dir.path(), 7, (b"twelve bytes", &[])).unwrap();
        let path = dir.path().join(file_name(7));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = read_result(dir.path(), 7).unwrap_err().to_string();
        assert!(
            error.contains("checksum") && error.contains(&file_name(7)),
            "{error}"
        );
        bytes.truncate(30);
        std::fs::write(&path, &bytes).unwrap();
        let error = read_result(dir.path(), 7).unwrap_err().to_string();
        assert!(error.contains("length"), "{error}");
    }

    #[test]
    fn another_executables_results_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), &manifest("a")).unwrap();
        write_result(dir.path(), 1, (b"x", &[])).unwrap();
        let opened = open(dir.path(), &manifest("b")).unwrap();
        assert!(opened.results.is_empty());
        let why = opened.stale.expect("said");
        assert!(why.contains("different executable"), "{why}");
        assert!(!dir.path().join(file_name(1)).exists());
        // The new manifest is in place: a third start reuses (nothing yet), silently.
        let again = open(dir.path(), &manifest("b")).unwrap();
        assert!(again.stale.is_none());
        write_result(dir.path(), 2, (b"y", &[])).unwrap();
        let other_arguments = Manifest {
            arguments: vec!["--n".into(), "300".into()],
            ..manifest("b")
        };
        let opened = open(dir.path(), &other_arguments).unwrap();
        let why = opened.stale.expect("said");
        assert!(
            why.contains("other arguments") && why.contains("300"),
            "{why}"
        );
        assert!(opened.results.is_empty());
    }

    #[test]
    fn this_run_has_a_manifest() {
        let manifest = Manifest::of_this_run(vec![]).unwrap();
        assert_eq!(manifest.executable.len(), 32);
        assert_eq!(manifest, Manifest::of_this_run(vec![]).unwrap());
    }

    #[test]
    fn foreign_files_and_unusable_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = open(dir.path(), &manifest("a")).unwrap_err().to_string();
        assert!(
            error.contains("notes.txt") && error.contains("empty or new"),
            "{error}"
        );
        let results_only = tempfile::tempdir().unwrap();
        std::fs::write(results_only.path().join(file_name(3)), "x").unwrap();
        let error = open(results_only.path(), &manifest("a"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("without"), "{error}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = open(&file.path().join("sub"), &manifest("a"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--checkpoint") && error.contains("write"),
            "{error}"
        );
    }

    #[test]
    fn a_new_directory_is_private_and_leftover_temporaries_go() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("ckpt");
        open(&dir, &manifest("a")).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(dir.join(".tmp-host-1-0"), "half").unwrap();
        open(&dir, &manifest("a")).unwrap();
        assert!(!dir.join(".tmp-host-1-0").exists());
    }

    #[test]
    fn runtime_flags_are_not_program_arguments() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            program_arguments(argv(
                "--n 200 --nthreads 2 --trace=t.json --no-work-stealing --checkpoint d --x"
            )),
            argv("--n 200 --x")
        );
        assert_eq!(
            program_arguments(argv("a -- --nthreads 2")),
            argv("a -- --nthreads 2")
        );
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_file_name(&file_name(u128::MAX)), Some(u128::MAX));
        assert_eq!(parse_file_name(&file_name(5)), Some(5));
        assert_eq!(parse_file_name("5.bin"), None);
        assert_eq!(parse_file_name(&"g".repeat(32)), None);
    }
}
