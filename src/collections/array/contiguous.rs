//! Arrays in files that hold each one contiguously, in C order, at a known byte offset (the
//! HDF5 and netCDF-4 files `to_hdf5` and `to_netcdf` make, and uncompressed contiguous
//! datasets of other writers). Writing: the client lays the file out with the format's
//! library and closes it, then each worker writes the bytes of its own chunks at their
//! places with plain positioned writes, so several writers are correct without parallel
//! HDF5 (no library call while they write, no byte written twice); the file is written
//! under a temporary name and renamed once complete. Reading: a worker reads its chunk's
//! bytes straight into the task's result, one copy from the page cache, where the library
//! would copy them twice.

use super::Array;
use super::dtype::DType;
use super::grid::{self, Chunks};
use super::kernel::Block;
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::{ArgSlot, Bytes, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where an array lies in a file: its first byte and its shape.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Placement {
    /// Byte offset of element 0.
    pub offset: u64,
    /// The whole array's shape.
    pub shape: Vec<usize>,
}

/// The runs of consecutive elements that a block of `block` elements at `start` covers in
/// an array of `shape` stored in C order: `(first element's index, length)`, in order.
pub(crate) fn runs(shape: &[usize], start: &[usize], block: &[usize]) -> Vec<(usize, usize)> {
    let ndim = shape.len();
    if ndim == 0 {
        return vec![(0, 1)];
    }
    if block.contains(&0) {
        return Vec::new();
    }
    // Axes after `k` are whole in the block: one run per index of the axes before `k`.
    let mut k = ndim - 1;
    while k > 0 && start[k] == 0 && block[k] == shape[k] {
        k -= 1;
    }
    let inner: usize = shape[k + 1..].iter().product();
    let len = block[k] * inner;
    let mut strides = vec![1usize; ndim];
    for axis in (0..ndim - 1).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    let outer: Vec<usize> = block[..k].to_vec();
    let count: usize = outer.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut index = vec![0usize; k];
    for _ in 0..count {
        let first: usize = (0..k)
            .map(|a| (start[a] + index[a]) * strides[a])
            .sum::<usize>()
            + start[k] * strides[k];
        out.push((first, len));
        for a in (0..k).rev() {
            index[a] += 1;
            if index[a] < outer[a] {
                break;
            }
            index[a] = 0;
        }
    }
    out
}

/// The block's elements in C order as the file holds them: little-endian, `bool` as one
/// byte 0 or 1.
fn block_bytes(block: &Block) -> Vec<u8> {
    fn le<T: Copy, const N: usize>(
        values: impl Iterator<Item = T>,
        f: fn(T) -> [u8; N],
    ) -> Vec<u8> {
        values.flat_map(f).collect()
    }
    match block {
        Block::F64(a) => le(a.iter().copied(), f64::to_le_bytes),
        Block::F32(a) => le(a.iter().copied(), f32::to_le_bytes),
        Block::I64(a) => le(a.iter().copied(), i64::to_le_bytes),
        Block::I32(a) => le(a.iter().copied(), i32::to_le_bytes),
        Block::U8(a) => a.iter().copied().collect(),
        Block::Bool(a) => a.iter().map(|&b| u8::from(b)).collect(),
    }
}

/// Writes a chunk at its place in the file (worker side); returns the bytes written.
fn write_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head), ArgSlot::Future(_)] = input.args else {
        return Err("a write task takes its place and a chunk".into());
    };
    let (path, placement, start, dtype): (PathBuf, Placement, Vec<usize>, DType) =
        decode_value(head).map_err(|e| e.to_string())?;
    let chunk = input.deps.first().ok_or("a write task without its chunk")?;
    let block = Block::decode(chunk, dtype).map_err(|e| e.to_string())?;
    let shape = block.shape().to_vec();
    let fits = start.len() == placement.shape.len()
        && shape.len() == start.len()
        && (0..shape.len()).all(|a| start[a] + shape[a] <= placement.shape[a]);
    if !fits {
        return Err(format!(
            "a chunk of {shape:?} at {start:?} does not fit an array of {:?}",
            placement.shape
        )
        .into());
    }
    let bytes = block_bytes(&block);
    let size = dtype.size();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {} to write: {e}", path.display()))?;
    let mut at = 0;
    for (first, len) in runs(&placement.shape, &start, &shape) {
        let run = &bytes[at..at + len * size];
        file.write_all_at(run, placement.offset + (first * size) as u64)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        at += len * size;
    }
    Ok(encode_value(&(bytes.len() as u64))
        .map_err(|e| e.to_string())?
        .into())
}

/// `true` for the element types whose encoding is a header and then the elements as they
/// lie in a little-endian file (so a chunk can be read straight into it).
pub(crate) fn reads_raw(dtype: DType) -> bool {
    matches!(dtype, DType::F64 | DType::F32 | DType::U8)
}

/// Submits the task that reads chunk `index` of `chunks` of an array at `placement` in the
/// file at `path`, straight from its bytes (`dtype` one [`reads_raw`] accepts); `name` is
/// the task's name.
pub(crate) fn submit_read(
    client: &Client,
    path: &Path,
    placement: &Placement,
    chunks: &Chunks,
    index: &[usize],
    dtype: DType,
    name: &str,
) -> Future<()> {
    let start = grid::chunk_offset(chunks, index);
    let shape = grid::chunk_shape(chunks, index);
    let head = encode_value(&(path, placement, start, shape, dtype)).expect("a region encodes");
    client.submit_raw(read_task, name, &[], vec![CallArg::Value(head)])
}

/// Reads a chunk's runs of bytes into its encoding (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("a contiguous read task takes its place and region".into());
    };
    let (path, placement, start, shape, dtype): (
        PathBuf,
        Placement,
        Vec<usize>,
        Vec<usize>,
        DType,
    ) = decode_value(head).map_err(|e| e.to_string())?;
    let fits = start.len() == placement.shape.len()
        && shape.len() == start.len()
        && (0..shape.len()).all(|a| start[a] + shape[a] <= placement.shape[a]);
    if !fits || !reads_raw(dtype) {
        return Err(format!(
            "a {dtype} region of {shape:?} at {start:?} cannot be read from an array of {:?}",
            placement.shape
        )
        .into());
    }
    let size = dtype.size();
    let count: usize = shape.iter().product();
    let header = super::kernel::raw_header(&shape, count);
    let mut bytes = Bytes::aligned_after(header.len(), header.len() + count * size);
    bytes.extend_from_slice(&header);
    let mut file = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open {} to read: {e}", path.display()))?;
    let failed = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    for (first, len) in runs(&placement.shape, &start, &shape) {
        let want = (len * size) as u64;
        file.seek(SeekFrom::Start(placement.offset + (first * size) as u64))
            .map_err(failed)?;
        let got = bytes.read_from((&mut file).take(want)).map_err(failed)?;
        if got as u64 != want {
            return Err(format!(
                "{}: ends {} bytes into a run of {want} at element {first}: the file is \
                 shorter than its header says (truncated?)",
                path.display(),
                got
            )
            .into());
        }
    }
    Ok(bytes)
}

/// Computes `arrays` in one graph and has each chunk written by the worker holding it at
/// its place in the file at `path`, each array at its [`Placement`].
pub(crate) fn write_arrays(
    client: &Client,
    path: &Path,
    arrays: &[(&Array, Placement)],
    name: &str,
) -> Result<()> {
    let roots: Vec<&Array> = arrays.iter().map(|(a, _)| *a).collect();
    super::lower::for_each_chunk(client, &roots, write_task, name, |k, start| {
        let (array, placement) = &arrays[k];
        encode_value(&(path, placement, start, array.dtype())).expect("a placement encodes")
    })
}

/// A file being written: under a temporary name beside `path` until [`Partial::finish`]
/// renames it; removed if dropped before.
pub(crate) struct Partial {
    /// The temporary file.
    pub temporary: PathBuf,
    path: PathBuf,
    done: bool,
}

impl Partial {
    /// A temporary name in `path`'s directory (created if missing); `path` as given.
    pub fn new(path: &Path) -> Result<Partial> {
        let name = path.file_name().ok_or_else(|| {
            Error::Config(format!("{}: not a file name to write", path.display()))
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = super::output::writable_dir(&dir)?;
        let temporary = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&temporary);
        Ok(Partial {
            temporary,
            path: dir.join(name),
            done: false,
        })
    }

    /// Gives the complete file its name (replacing a file there).
    pub fn finish(mut self) -> Result<()> {
        std::fs::rename(&self.temporary, &self.path).map_err(Error::io(&self.path))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Chunk sizes for an array of `shape` read from a file whose own chunks are `stored`
/// (`None`: contiguous): the stored chunks (or single rows, whole along the other axes)
/// grown along the first axis while a chunk stays within 64 MiB.
pub(crate) fn auto_chunks(
    shape: &[usize],
    itemsize: usize,
    stored: Option<&[usize]>,
) -> Vec<usize> {
    const TARGET: usize = 64 << 20;
    if shape.is_empty() {
        return Vec::new();
    }
    let mut sizes: Vec<usize> = match stored {
        Some(c) if c.len() == shape.len() => c.iter().map(|&n| n.max(1)).collect(),
        _ => {
            let mut s = shape.iter().map(|&n| n.max(1)).collect::<Vec<_>>();
            s[0] = 1;
            s
        }
    };
    let unit = sizes[0];
    let bytes = |sizes: &[usize]| sizes.iter().product::<usize>() * itemsize;
    while sizes[0] < shape[0] && bytes(&sizes) * (sizes[0] + unit) / sizes[0] <= TARGET {
        sizes[0] += unit;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of the block is covered once, at its C-order index, in order.
    #[test]
    fn runs_cover_the_block_in_order() {
        let shape = [5, 4, 6];
        for (start, block) in [
            ([0, 0, 0], [5, 4, 6]),
            ([2, 0, 0], [3, 4, 6]),
            ([1, 1, 0], [2, 3, 6]),
            ([1, 1, 2], [2, 2, 3]),
            ([4, 3, 5], [1, 1, 1]),
        ] {
            let mut want = Vec::new();
            for i in 0..block[0] {
                for j in 0..block[1] {
                    for k in 0..block[2] {
                        want.push(((start[0] + i) * 4 + start[1] + j) * 6 + start[2] + k);
                    }
                }
            }
            let got: Vec<usize> = runs(&shape, &start, &block)
                .into_iter()
                .flat_map(|(first, len)| first..first + len)
                .collect();
            assert_eq!(got, want, "{start:?} {block:?}");
        }
        assert_eq!(runs(&[6, 4], &[2, 0], &[3, 4]), vec![(8, 12)]);
    }

    #[test]
    fn auto_chunks_grow_along_the_first_axis() {
        assert_eq!(auto_chunks(&[10, 3], 8, None), vec![10, 3]);
        assert_eq!(auto_chunks(&[100_000, 1000], 8, None), vec![8388, 1000]);
        assert_eq!(
            auto_chunks(&[100_000, 1000], 8, Some(&[100, 100])),
            vec![83_800, 100]
        );
        assert_eq!(auto_chunks(&[], 8, None), Vec::<usize>::new());
    }
}
