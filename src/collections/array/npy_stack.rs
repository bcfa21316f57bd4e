//! Dask's stack of `.npy` files (`dask.array.to_npy_stack` / `from_npy_stack`): a directory
//! with one `.npy` file per block along one axis (`0.npy`, `1.npy`, ...), whole along the
//! others, and an `info` file, a Python pickle of `{"chunks": ..., "dtype": ..., "axis":
//! ...}`. Arrays move between Dask and mpidask through it with no conversion.
//!
//! Workers read and write the block files themselves (the directory must be on storage
//! every rank reaches); the client reads and writes `info`, last, so a stack whose blocks
//! are not all written has no `info` and is not taken for a whole one.

use super::dtype::DType;
use super::grid::Chunks;
use super::npy::{NpyFiles, descr, dtype_of, file_dtype, remove_if_present, write_chunks};
use super::{Array, Expr};
use crate::client::Client;
use crate::error::{Error, Result};
use serde_pickle::{DeOptions, HashableValue, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `info` says.
#[derive(Debug, Clone, PartialEq)]
struct Info {
    chunks: Chunks,
    axis: usize,
    /// The element type if `info` gives it as a string (Dask writes a `numpy.dtype`, which
    /// is read from the first block's header instead).
    dtype: Option<String>,
}

fn block_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index}.npy"))
}

/// The meaning of `info`'s pickled bytes; `None` with the reason if it is not what
/// `to_npy_stack` writes.
fn parse_info(bytes: &[u8]) -> std::result::Result<Info, String> {
    // Dask pickles the dtype as a `numpy.dtype` object: read as None, the header tells.
    let value =
        serde_pickle::value_from_slice(bytes, DeOptions::new().replace_unresolved_globals())
            .map_err(|e| format!("not a Python pickle ({e})"))?;
    let Value::Dict(entries) = value else {
        return Err("not a pickled dict".into());
    };
    let get = |key: &str| entries.get(&HashableValue::String(key.to_string()));
    let int = |v: &Value| -> Option<usize> {
        match v {
            Value::I64(n) => usize::try_from(*n).ok(),
            Value::Int(n) => usize::try_from(n.clone()).ok(),
            _ => None,
        }
    };
    let seq = |v: &Value| -> Option<Vec<Value>> {
        match v {
            Value::Tuple(items) | Value::List(items) => Some(items.clone()),
            _ => None,
        }
    };
    let chunks: Chunks = get("chunks")
        .and_then(seq)
        .and_then(|axes| {
            axes.iter()
                .map(|axis| seq(axis)?.iter().map(int).collect::<Option<Vec<usize>>>())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or("no \"chunks\" as a tuple of tuples of sizes")?;
    let axis = get("axis")
        .and_then(int)
        .ok_or("no \"axis\" as a non-negative integer")?;
    let dtype = match get("dtype") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(Info {
        chunks,
        axis,
        dtype,
    })
}

/// The pickle of `info` for a stack along `axis` with `chunks` of `dtype`, as Python's
/// `pickle` reads it: `{"chunks": ((..), ..), "dtype": numpy.dtype(..), "axis": axis}`
/// (protocol 2; the dtype built the way `numpy.dtype.__reduce__` says).
fn pickle_info(chunks: &Chunks, dtype: DType, axis: usize) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(b'X'); // BINUNICODE
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn int(out: &mut Vec<u8>, n: i64) {
        match i32::try_from(n) {
            Ok(n) => {
                out.push(b'J'); // BININT
                out.extend_from_slice(&n.to_le_bytes());
            }
            Err(_) => {
                out.extend_from_slice(&[0x8a, 8]); // LONG1, 8 bytes
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    let descr = descr(dtype);
    let (order, code) = descr.split_at(1);
    let mut out = vec![0x80, 2, b'}', b'(']; // PROTO 2, EMPTY_DICT, MARK
    string(&mut out, "chunks");
    out.push(b'(');
    for sizes in chunks {
        out.push(b'(');
        for &size in sizes {
            int(&mut out, size as i64);
        }
        out.push(b't'); // TUPLE
    }
    out.push(b't');
    string(&mut out, "dtype");
    out.extend_from_slice(b"cnumpy\ndtype\n("); // GLOBAL numpy.dtype, MARK
    string(&mut out, code);
    out.extend_from_slice(&[0x89, 0x88, b't', b'R', b'(']); // False, True, TUPLE, REDUCE
    int(&mut out, 3);
    string(&mut out, order);
    out.extend_from_slice(b"NNN");
    int(&mut out, -1);
    int(&mut out, -1);
    int(&mut out, 0);
    out.extend_from_slice(b"tb"); // TUPLE, BUILD
    string(&mut out, "axis");
    int(&mut out, axis as i64);
    out.extend_from_slice(b"u."); // SETITEMS, STOP
    out
}

/// An array stored as Dask's stack of `.npy` files in `dir` (by `dask.array.to_npy_stack`
/// or [`Array::to_npy_stack`]): one chunk per block file along the stack's axis, read by
/// the workers when the array is computed.
pub fn from_npy_stack(dir: impl AsRef<Path>) -> Result<Array> {
    let dir = dir.as_ref();
    let dir = dir.canonicalize().map_err(Error::io(dir))?;
    let info_path = dir.join("info");
    let bytes = std::fs::read(&info_path).map_err(|e| {
        Error::Config(format!(
            "{}: {e}; a stack of .npy files (dask.array.to_npy_stack) has an `info` file \
             beside 0.npy, 1.npy, ... (a stack whose writing stopped has none: write it again)",
            info_path.display()
        ))
    })?;
    let info = parse_info(&bytes).map_err(|why| {
        Error::Config(format!(
            "{}: {why}; expected what dask.array.to_npy_stack writes",
            info_path.display()
        ))
    })?;
    let ndim = info.chunks.len();
    if info.axis >= ndim {
        return Err(Error::Config(format!(
            "{}: axis {} of an array of {ndim} dimensions",
            info_path.display(),
            info.axis
        )));
    }
    if let Some((other, sizes)) = info
        .chunks
        .iter()
        .enumerate()
        .find(|(k, sizes)| *k != info.axis && sizes.len() != 1)
    {
        return Err(Error::Config(format!(
            "{}: {} chunks along axis {other}, which is not the stack's axis {}: a stack has \
             one block per file, whole along every other axis",
            info_path.display(),
            sizes.len(),
            info.axis
        )));
    }
    let blocks = info.chunks[info.axis].len();
    let files: Vec<PathBuf> = (0..blocks).map(|i| block_file(&dir, i)).collect();
    let first = files.first().ok_or_else(|| {
        Error::Config(format!(
            "{}: no block along axis {}",
            info_path.display(),
            info.axis
        ))
    })?;
    let dtype = file_dtype(first)?;
    if let Some(named) = &info.dtype
        && dtype_of(named) != Some(dtype)
    {
        return Err(Error::Config(format!(
            "{}: dtype {named}, but {} holds {dtype}",
            info_path.display(),
            first.display()
        )));
    }
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(Error::Config(format!(
            "{}: {} blocks along axis {}, but {} is missing",
            info_path.display(),
            blocks,
            info.axis,
            missing.display()
        )));
    }
    let shape: Vec<usize> = info.chunks.iter().map(|c| c.iter().sum()).collect();
    Ok(Array::new(
        shape,
        info.chunks,
        dtype,
        Expr::Read(Arc::new(NpyFiles(files))),
    ))
}

impl Array {
    /// Computes the array and stores it in `dir` (created if missing) as Dask's stack of
    /// `.npy` files along `axis` (negative counts from the end), which
    /// `dask.array.from_npy_stack` opens: the array is rechunked to be whole along every
    /// other axis, each block is written by the worker holding it as `0.npy`, `1.npy`,
    /// ..., then `info`.
    ///
    /// ```
    /// use mpidask::array;
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let dir = std::env::temp_dir().join(format!("doc-npy-stack-{}", std::process::id()));
    ///     let x = array::arange(0.0, 10.0, 1.0, 4);
    ///     x.to_npy_stack(client, &dir, 0).unwrap();
    ///     let back = array::from_npy_stack(&dir).unwrap();
    ///     assert_eq!(back.chunks()[0], vec![4, 4, 2]);
    ///     assert_eq!(back.sum().compute::<f64>(client).unwrap().sum(), 45.0);
    ///     std::fs::remove_dir_all(&dir).unwrap();
    /// });
    /// ```
    pub fn to_npy_stack(&self, client: &Client, dir: impl AsRef<Path>, axis: isize) -> Result<()> {
        self.check()?;
        let ndim = self.ndim();
        let axis = if axis < 0 { axis + ndim as isize } else { axis };
        let axis = usize::try_from(axis)
            .ok()
            .filter(|a| *a < ndim)
            .ok_or_else(|| {
                Error::Config(format!(
                    "to_npy_stack: axis {axis} of an array of {ndim} dimensions (a stack needs \
                     an axis to stack along)"
                ))
            })?;
        let dir = dir.as_ref();
        let dir = super::output::writable_dir(dir)?;
        let info_path = dir.join("info");
        remove_if_present(&info_path)?;
        let mut chunks = self.chunks().clone();
        for (k, sizes) in chunks.iter_mut().enumerate() {
            if k != axis {
                *sizes = vec![self.shape()[k]];
            }
        }
        let stacked = self.rechunk_to(chunks);
        let paths: Vec<PathBuf> = (0..stacked.chunks()[axis].len())
            .map(|i| block_file(&dir, i))
            .collect();
        write_chunks(client, &stacked, &paths)?;
        let info = pickle_info(stacked.chunks(), self.dtype(), axis);
        std::fs::write(&info_path, info).map_err(Error::io(&info_path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `info` as Python 3.11's `pickle.dumps` (protocol 4) writes it for
    /// `da.to_npy_stack(d, x, axis=0)` of a 6 x 10 float64 array in (4, 5) chunks.
    const DASK_INFO: &[u8] = b"\x80\x04\x95a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x06chunks\
        \x94K\x04K\x02\x86\x94K\x0a\x85\x94\x86\x94\x8c\x05dtype\x94\x8c\x05numpy\x94\x8c\x05\
        dtype\x94\x93\x94\x8c\x02f8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\
        \xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x8c\x04axis\x94K\x00u.";

    #[test]
    fn dask_info_is_read() {
        let info = parse_info(DASK_INFO).unwrap();
        assert_eq!(info.chunks, vec![vec![4, 2], vec![10]]);
        assert_eq!(info.axis, 0);
        assert_eq!(info.dtype, None);
    }

    #[test]
    fn written_info_reads_back_and_bad_info_is_an_error() {
        let chunks = vec![vec![3], vec![4, 4, 1], vec![3_000_000_000]];
        for dtype in DType::ALL {
            let info = parse_info(&pickle_info(&chunks, dtype, 1)).unwrap();
            assert_eq!(info.chunks, chunks);
            assert_eq!(info.axis, 1);
        }
        assert!(
            parse_info(b"not a pickle")
                .unwrap_err()
                .contains("not a Python pickle")
        );
        // A pickled list, not a dict.
        assert!(parse_info(b"\x80\x02]q\x00.").unwrap_err().contains("dict"));
    }
}
