//! Writing a dataframe, Dask's `to_parquet` and `to_csv`: each partition is written by
//! the worker that computes it, to `part.<i>.parquet` (or `.csv`) in one directory, first
//! under a hidden temporary name; once every partition is written the client renames them
//! all. A failed partition leaves no file of the write behind (the others' temporary files
//! are removed), and a directory that already holds parts is refused before anything is
//! written, so a directory never mixes two writes. The directory must be one the client
//! and the workers share (a cluster's shared file system; any directory in local mode).

use super::DataFrame;
use super::shuffle::stack_frames;
use crate::client::{CallArg, Future};
use crate::error::{Error, Result};
use crate::protocol::{Bytes, encode_value};
use crate::task::{CallError, encode_result};
use polars::prelude::{CsvWriter, DataFrame as Frame, ParquetWriter, SerWriter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Format {
    Parquet,
    Csv,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Format::Parquet => "to_parquet",
            Format::Csv => "to_csv",
        }
    }
}

/// Writes one partition's frames to `temporary`; returns the number of rows. A failed
/// write removes its file.
fn write_sink(
    frames: Vec<Frame>,
    (temporary, format): (String, Format),
) -> std::result::Result<Bytes, CallError> {
    let write = || -> std::result::Result<u64, String> {
        let mut frame = stack_frames(frames, None).map_err(|e| e.to_string())?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(|e| format!("could not create {temporary}: {e}"))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        match format {
            Format::Parquet => ParquetWriter::new(&mut out)
                .finish(&mut frame)
                .map(|_| ())
                .map_err(|e| e.to_string())?,
            Format::Csv => CsvWriter::new(&mut out)
                .include_header(true)
                .finish(&mut frame)
                .map_err(|e| e.to_string())?,
        }
        let file = out
            .into_inner()
            .map_err(|e| format!("writing {temporary}: {e}"))?;
        file.sync_all()
            .map_err(|e| format!("writing {temporary}: {e}"))?;
        Ok(frame.height() as u64)
    };
    match write() {
        Ok(rows) => encode_result(&rows),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(CallError::Failed(format!("{}: {e}", format.method())))
        }
    }
}

impl DataFrame {
    /// Writes partition `i` to `dir/part.<i>.parquet` (the directory is made if missing),
    /// each on the worker that computes it, and returns the files' paths once all are
    /// written (Dask's `to_parquet`; read back with
    /// [`read_parquet`](Self::read_parquet)`("dir/*.parquet")`, which orders `part.2`
    /// before `part.10`). A directory that already holds `part.*.parquet` files is an error
    /// before anything is written.
    pub fn to_parquet(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write(dir.as_ref(), Format::Parquet)
    }

    /// Writes partition `i` to `dir/part.<i>.csv` with a header line, as
    /// [`to_parquet`](Self::to_parquet) does (Dask's `to_csv` with `name_function`
    /// numbering the parts).
    pub fn to_csv(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write(dir.as_ref(), Format::Csv)
    }

    fn write(&self, dir: &Path, format: Format) -> Result<Vec<PathBuf>> {
        let (method, extension) = (format.method(), format.extension());
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "{method}: could not make the directory {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir.canonicalize().map_err(Error::io(dir))?;
        let existing = std::fs::read_dir(&dir)
            .map_err(Error::io(&dir))?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .find(|name| name.starts_with("part.") && name.ends_with(&format!(".{extension}")));
        if let Some(name) = existing {
            return Err(Error::Config(format!(
                "{method}: {} already holds {name} from another write; remove the old parts \
                 or write to another directory (nothing was written)",
                dir.display()
            )));
        }
        let tag = format!("{}-{}", std::process::id(), unique());
        let paths: Vec<(PathBuf, PathBuf)> = (0..self.npartitions())
            .map(|i| {
                (
                    dir.join(format!("part.{i}.{extension}")),
                    dir.join(format!(".part.{i}.{extension}.{tag}.tmp")),
                )
            })
            .collect();
        let written: Vec<Future<u64>> = self.parts.run_raw(write_sink, method, |i| {
            let temporary = paths[i].1.display().to_string();
            vec![CallArg::Value(
                encode_value(&(temporary, format)).expect("a path encodes"),
            )]
        });
        // Every task is waited for, so no write is still going when files are removed.
        let results: Vec<Result<u64>> = written.iter().map(|f| f.result()).collect();
        if let Some(error) = results.into_iter().find_map(|r| r.err()) {
            for (_, temporary) in &paths {
                let _ = std::fs::remove_file(temporary);
            }
            return Err(error);
        }
        for (path, temporary) in &paths {
            std::fs::rename(temporary, path).map_err(Error::io(path))?;
        }
        Ok(paths.into_iter().map(|(path, _)| path).collect())
    }
}

/// A number unique within this process, for temporary names.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
