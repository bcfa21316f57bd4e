//! Bags and files: `read_text` (each file cut into blocks that the workers read
//! themselves; a line belongs to the block it starts in), `to_textfiles`, and the path
//! patterns both take.

use super::pipeline::{Origin, Stream, TaskResult, decoded, elements, stream};
use super::{Bag, Item};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::protocol::encode_value;
use crate::task::{CallError, TaskInput, conjure, encode_result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// The files matching `pattern`, sorted with numbers in names compared as numbers
/// (`part.2` before `part.10`, as Dask orders them): a path whose components may hold `*`, `?` and
/// `[...]` (the `glob` crate's patterns); a path without wildcards must name a file.
pub fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>> {
    if !pattern.contains(['*', '?', '[']) {
        let path = PathBuf::from(pattern);
        return if path.is_file() {
            Ok(vec![path])
        } else {
            Err(Error::Config(format!("no file {pattern}")))
        };
    }
    let matches = glob::glob(pattern)
        .map_err(|e| Error::Config(format!("'{pattern}' is not a valid path pattern: {e}")))?;
    let mut files = Vec::new();
    for entry in matches {
        let path = entry.map_err(|e| Error::Io {
            path: e.path().display().to_string(),
            source: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| natural_order(&a.to_string_lossy(), &b.to_string_lossy()));
    if files.is_empty() {
        return Err(Error::Config(format!("no file matches {pattern}")));
    }
    Ok(files)
}

/// `a` against `b` with every run of digits compared by its value.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn pieces(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (pieces(a), pieces(b));
    for ((da, xa), (db, xb)) in pa.iter().zip(pb.iter()) {
        let order = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len()
                .cmp(&tb.len())
                .then(ta.cmp(tb))
                .then(xa.len().cmp(&xb.len()))
        } else {
            xa.cmp(xb)
        };
        if order.is_ne() {
            return order;
        }
    }
    pa.len().cmp(&pb.len()).then(a.cmp(b))
}

/// The blocks of the files matching `pattern` (see [`expand_glob`]): `(path, start, end)`
/// of about `blocksize` bytes each; a `.gz` or empty file is one block.
pub(crate) fn file_blocks(pattern: &str, blocksize: u64) -> Result<Vec<(String, u64, u64)>> {
    let mut blocks = Vec::new();
    for path in expand_glob(pattern)? {
        let len = std::fs::metadata(&path).map_err(Error::io(&path))?.len();
        let name = path.display().to_string();
        if name.ends_with(".gz") || len == 0 {
            blocks.push((name, 0, len.max(1)));
            continue;
        }
        let mut start = 0;
        while start < len {
            let end = (start + blocksize).min(len);
            blocks.push((name.clone(), start, end));
            start = end;
        }
    }
    Ok(blocks)
}

fn text_source(input: &TaskInput<'_>) -> TaskResult<Stream> {
    let block: (String, u64, u64) = decoded(input)?;
    let bytes = read_block(block)?;
    Ok(stream(LinesOf { bytes, at: 0 }))
}

/// The bytes of the lines that start in bytes `start..end` of `path` (a line crossing
/// `start` belongs to the block before, so the block runs on to the end of the line crossing
/// `end`); a `.gz` file is read whole.
pub(crate) fn read_block(
    (path, start, end): (String, u64, u64),
) -> std::result::Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut bytes = Vec::new();
    if path.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {path} (gzip): {e}"))?;
        return Ok(bytes);
    }
    let cannot_read = |e: std::io::Error| format!("cannot read {path}: {e}");
    // From one byte early: whether it is a line end tells if `start` begins a line.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).map_err(cannot_read)?;
    bytes.reserve((end - from) as usize + 4096);
    (&mut file)
        .take(end - from)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    // Finish the line that crosses `end`.
    let mut tail = [0u8; 4096];
    while bytes.last().is_some_and(|b| *b != b'\n') {
        let n = file.read(&mut tail).map_err(cannot_read)?;
        if n == 0 {
            break;
        }
        match tail[..n].iter().position(|b| *b == b'\n') {
            Some(i) => bytes.extend_from_slice(&tail[..=i]),
            None => bytes.extend_from_slice(&tail[..n]),
        }
    }
    if start > 0 {
        // Drop the end of the line that began in the block before.
        let skip = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..skip);
    }
    Ok(bytes)
}

/// The lines of a block, without their line ends (`\n` or `\r\n`), as strings (invalid
/// UTF-8 replaced).
struct LinesOf {
    bytes: Vec<u8>,
    at: usize,
}

impl Iterator for LinesOf {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        self.at += len + 1;
        let line = rest[..len].strip_suffix(b"\r").unwrap_or(&rest[..len]);
        Some(String::from_utf8_lossy(line).into_owned())
    }
}

fn write_lines_sink<T: Item + std::fmt::Display>(
    s: Stream,
    input: &TaskInput<'_>,
) -> TaskResult<Bytes> {
    use std::io::Write;
    let path: String = decoded(input)?;
    let cannot = |e: std::io::Error| CallError::Failed(format!("cannot write {path}: {e}"));
    let file = std::fs::File::create(&path)
        .map_err(|e| CallError::Failed(format!("cannot create {path}: {e}")))?;
    let mut out = std::io::BufWriter::new(file);
    for x in elements::<T>(s)? {
        writeln!(out, "{x}").map_err(cannot)?;
    }
    out.flush().map_err(cannot)?;
    encode_result(&path)
}

impl Bag<String> {
    /// The lines of the files matching `pattern` (see [`expand_glob`]), each file cut into
    /// blocks of about `blocksize` bytes read by the workers themselves (a line belongs to
    /// the block it starts in); `.gz` files are one partition each. Nothing is read until
    /// a result needs the lines.
    pub fn read_text(client: &Client, pattern: &str, blocksize: u64) -> Result<Bag<String>> {
        if blocksize == 0 {
            return Err(Error::Config("read_text: blocksize must be above 0".into()));
        }
        let origins = file_blocks(pattern, blocksize)?
            .iter()
            .map(Origin::value)
            .collect();
        Ok(Bag::with_origins(client, text_source, "read_text", origins))
    }
}

impl<T: Item> Bag<T> {
    /// A bag whose partition `i` is the one element `f(params[i])`, computed on the worker
    /// whose task first needs it (a reader of files: a collection's partitions read where
    /// they are used). An error `f` returns fails that task with its message.
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub(crate) fn from_reads<F, P>(client: &Client, f: F, name: &str, params: &[P]) -> Bag<T>
    where
        F: Fn(P) -> std::result::Result<T, String> + Copy + 'static,
        P: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        let origins = params.iter().map(Origin::value).collect();
        Bag::with_origins(client, read_source::<F, P, T>, name, origins)
    }
}

impl<T: Item> Bag<T> {
    /// One task per partition whose value `f` makes of the partition's elements and the
    /// task's further arguments `extra(i)` (decoded together as `A`), encoding it itself:
    /// for collections built on bags that lay out their own values (a dataframe's shuffle
    /// packs one partition's buckets in one value).
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub(crate) fn run_raw<F, A, R>(
        &self,
        f: F,
        name: &str,
        extra: impl Fn(usize) -> Vec<CallArg>,
    ) -> Vec<Future<R>>
    where
        F: Fn(Vec<T>, A) -> TaskResult<Bytes> + Copy + 'static,
        A: DeserializeOwned + 'static,
    {
        let _ = f;
        self.run(raw_sink::<F, T, A>, name, extra)
    }
}

fn raw_sink<F, T, A>(s: Stream, input: &TaskInput<'_>) -> TaskResult<Bytes>
where
    F: Fn(Vec<T>, A) -> TaskResult<Bytes> + Copy + 'static,
    T: Item,
    A: DeserializeOwned + 'static,
{
    let items: Vec<T> = elements::<T>(s)?.collect();
    let args: A = decoded(input)?;
    conjure::<F>()(items, args)
}

fn read_source<F, P, T>(input: &TaskInput<'_>) -> TaskResult<Stream>
where
    F: Fn(P) -> std::result::Result<T, String> + Copy + 'static,
    P: DeserializeOwned + 'static,
    T: 'static,
{
    let param: P = decoded(input)?;
    let value = conjure::<F>()(param).map_err(CallError::Failed)?;
    Ok(stream(std::iter::once(value)))
}

impl<T: Item + std::fmt::Display> Bag<T> {
    /// Writes partition `i` as lines of text to `pattern` with `*` replaced by `i`, on the
    /// worker that computes it; returns the paths once all are written.
    pub fn to_textfiles(&self, pattern: &str) -> Result<Vec<String>> {
        if !pattern.contains('*') {
            return Err(Error::Config(format!(
                "to_textfiles: the pattern '{pattern}' needs a '*' for the partition number"
            )));
        }
        let written: Vec<Future<String>> = self.run(write_lines_sink::<T>, "to_textfiles", |i| {
            let path = pattern.replace('*', &i.to_string());
            vec![CallArg::Value(encode_value(&path).expect("a path encodes"))]
        });
        self.client.gather(&written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_names_sort_by_value() {
        let mut names = vec!["p10.csv", "p9.csv", "p1.csv", "a", "p01.csv", "p.csv", "q2"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            vec!["a", "p1.csv", "p01.csv", "p9.csv", "p10.csv", "p.csv", "q2"]
        );
    }

    #[test]
    fn patterns_match_files_in_order_and_say_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("mpidask-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        for name in ["part-2.txt", "part-10.txt", "part-1.txt.gz", "other.txt"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(dir.join("a/part-3.txt"), b"x").unwrap();
        let names = |pattern: &str| -> Vec<String> {
            expand_glob(&dir.join(pattern).display().to_string())
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("part-*.txt"), vec!["part-2.txt", "part-10.txt"]);
        assert_eq!(names("part-?.txt*"), vec!["part-1.txt.gz", "part-2.txt"]);
        assert_eq!(names("*/part-*.txt"), vec!["a/part-3.txt"]);
        assert_eq!(names("other.txt"), vec!["other.txt"]);
        let none = expand_glob(&dir.join("none-*.txt").display().to_string()).unwrap_err();
        assert!(none.to_string().contains("no file matches"), "{none}");
        let missing = expand_glob(&dir.join("missing.txt").display().to_string()).unwrap_err();
        assert!(missing.to_string().contains("no file"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
