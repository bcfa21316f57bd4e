//! Arrays on disk: a directory with one NumPy `.npy` file per chunk and a `meta.json`
//! giving the shape, the chunks and the element type. Workers write and read the chunk
//! files themselves, so the directory must be on storage every rank can reach.
//!
//! In Python: `meta = json.load(open(d + "/meta.json"))`, then `numpy.load` each file named
//! in `meta["files"]` (C order over the chunk grid).

use super::dtype::DType;
use super::grid::{self, Chunks};
use super::kernel::Block;
use super::source::ChunkSource;
use super::{Array, Expr};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::protocol::{ArgSlot, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use ndarray::{ArrayD, ArrayViewD};
use ndarray_npy::{ViewElement, ViewNpyError, ViewNpyExt, WriteNpyExt};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `meta.json` of an array directory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Meta {
    /// Shape of the whole array.
    pub shape: Vec<usize>,
    /// Chunk sizes per axis.
    pub chunks: Chunks,
    /// NumPy type string, e.g. `<f8`.
    pub dtype: String,
    /// Chunk file names, C order over the chunk grid.
    pub files: Vec<String>,
}

pub(crate) fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

pub(crate) fn dtype_of(descr: &str) -> Option<DType> {
    match descr {
        "|b1" | "<b1" | "b1" => Some(DType::Bool),
        "|u1" | "<u1" | "u1" => Some(DType::U8),
        "<i4" | "i4" => Some(DType::I32),
        "<i8" | "i8" => Some(DType::I64),
        "<f4" | "f4" => Some(DType::F32),
        "<f8" | "f8" => Some(DType::F64),
        _ => None,
    }
}

/// The bytes of a `.npy` file holding `block` (written by `ndarray-npy`: format 1.0,
/// little endian, C order unless the chunk is laid out in Fortran order).
pub fn encode(block: &Block) -> Vec<u8> {
    let mut bytes = Vec::new();
    let written = match block {
        Block::Bool(a) => a.write_npy(&mut bytes),
        Block::U8(a) => a.write_npy(&mut bytes),
        Block::I32(a) => a.write_npy(&mut bytes),
        Block::I64(a) => a.write_npy(&mut bytes),
        Block::F32(a) => a.write_npy(&mut bytes),
        Block::F64(a) => a.write_npy(&mut bytes),
    };
    written.expect("writing a .npy file into memory cannot fail");
    bytes
}

/// Reads a `.npy` file (format 1.0 to 3.0, C or Fortran order, this machine's byte order)
/// whose elements are `dtype`; an error says why it cannot. The header is checked against
/// the bytes before anything is allocated, so a corrupt header cannot ask for more memory
/// than the file holds.
pub fn decode(bytes: &[u8], dtype: DType) -> std::result::Result<Block, String> {
    let block = match dtype {
        DType::Bool => decode_as::<bool>(bytes).map(Block::Bool),
        DType::U8 => decode_as::<u8>(bytes).map(Block::U8),
        DType::I32 => decode_as::<i32>(bytes).map(Block::I32),
        DType::I64 => decode_as::<i64>(bytes).map(Block::I64),
        DType::F32 => decode_as::<f32>(bytes).map(Block::F32),
        DType::F64 => decode_as::<f64>(bytes).map(Block::F64),
    };
    block.map_err(|e| format!("not a .npy file of {dtype}: {e}"))
}

/// A `.npy` file viewed in place (which validates it against its bytes) and copied out; from
/// an 8-byte-aligned copy of the bytes if the data does not start aligned for `T`.
fn decode_as<T: ViewElement + Clone>(bytes: &[u8]) -> std::result::Result<ArrayD<T>, String> {
    match ArrayViewD::<T>::view_npy(bytes) {
        Ok(view) => Ok(view.to_owned()),
        Err(ViewNpyError::MisalignedData) => {
            let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
            let copy = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..bytes.len()];
            copy.copy_from_slice(bytes);
            ArrayViewD::<T>::view_npy(copy)
                .map(|view| view.to_owned())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn chunk_file(index: &[usize]) -> String {
    let parts: Vec<String> = index.iter().map(usize::to_string).collect();
    if parts.is_empty() {
        "chunk.npy".into()
    } else {
        format!("chunk_{}.npy", parts.join("_"))
    }
}

/// Writes a chunk to a `.npy` file (worker side); returns the bytes written.
fn write_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head), ArgSlot::Future(_)] = input.args else {
        return Err("a write task takes a path and a chunk".into());
    };
    let (path, dtype): (PathBuf, DType) = decode_value(head).map_err(|e| e.to_string())?;
    let chunk = input.deps.first().ok_or("a write task without its chunk")?;
    let block = Block::decode(chunk, dtype).map_err(|e| e.to_string())?;
    let bytes = encode(&block);
    std::fs::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(encode_value(&(bytes.len() as u64))
        .map_err(|e| e.to_string())?
        .into())
}

/// Reads a chunk from a `.npy` file (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("a read task takes a path".into());
    };
    let (path, dtype, shape): (PathBuf, DType, Vec<usize>) =
        decode_value(head).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let block = decode(&bytes, dtype).map_err(|e| {
        format!(
            "{}: {e} (the array's metadata says {dtype} {shape:?})",
            path.display()
        )
    })?;
    if block.shape() != shape.as_slice() {
        return Err(format!(
            "{} holds {dtype} {:?}, the array's metadata says {dtype} {shape:?}",
            path.display(),
            block.shape()
        )
        .into());
    }
    Ok(block.encode().map_err(|e| e.to_string())?)
}

impl Array {
    /// Computes the array and stores it in `dir` (created if missing): one `.npy` file per
    /// chunk, written by the worker holding it, and `meta.json`.
    pub fn to_npy_dir(&self, client: &Client, dir: impl AsRef<Path>) -> Result<()> {
        self.check()?;
        let dir = dir.as_ref();
        let dir = super::output::writable_dir(dir)?;
        let meta_path = dir.join("meta.json");
        // A directory left with chunks but no meta.json is not taken for a whole array.
        remove_if_present(&meta_path)?;
        let indices: Vec<Vec<usize>> = if self.ndim() == 0 {
            vec![vec![]]
        } else {
            grid::indices(self.chunks()).collect()
        };
        let files: Vec<String> = indices.iter().map(|i| chunk_file(i)).collect();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        write_chunks(client, self, &paths)?;
        let meta = Meta {
            shape: self.shape().to_vec(),
            chunks: self.chunks().clone(),
            dtype: descr(self.dtype()).to_string(),
            files,
        };
        let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(&meta_path, text).map_err(Error::io(&meta_path))?;
        Ok(())
    }
}

/// Removes `path` if it exists.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

/// Computes `array` and has each chunk written, by the worker holding it, to its path
/// (`paths` in C order over the chunk grid).
pub(crate) fn write_chunks(client: &Client, array: &Array, paths: &[PathBuf]) -> Result<()> {
    let chunks = super::lower::materialize(client, array)?;
    let writes: Vec<Future<u64>> = paths
        .iter()
        .zip(chunks)
        .map(|(path, chunk)| {
            let head = encode_value(&(path, array.dtype())).expect("paths encode");
            client
                .submit_raw(
                    write_task,
                    "to_npy",
                    &[],
                    vec![CallArg::Value(head), CallArg::Future(chunk)],
                )
                .retype()
        })
        .collect();
    client.gather(&writes)?;
    Ok(())
}

/// The element type a `.npy` file's header names (its `descr`), read from the start of
/// the file; an error says what is wrong with it.
pub(crate) fn file_dtype(path: &Path) -> Result<DType> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(65_536).read_to_end(&mut head))
        .map_err(Error::io(path))?;
    let bad = |why: &str| Error::Config(format!("{}: not a .npy file ({why})", path.display()));
    if head.len() < 10 || &head[..6] != b"\x93NUMPY" {
        return Err(bad("no .npy magic string"));
    }
    let (len, start): (usize, usize) = match head[6] {
        1 => (usize::from(u16::from_le_bytes([head[8], head[9]])), 10),
        2 | 3 if head.len() >= 12 => (
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown format version")),
    };
    let header = head
        .get(start..start.saturating_add(len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|rest| rest.split('\'').nth(1))
        .ok_or_else(|| bad("no descr in its header"))?;
    dtype_of(descr).ok_or_else(|| {
        Error::Config(format!(
            "{}: unsupported element type {descr} (mpidask arrays hold bool, int64, float32 \
             or float64)",
            path.display()
        ))
    })
}

/// An array stored by [`Array::to_npy_dir`] (or laid out the same way by other tools).
/// The chunk files are read by the workers when the array is computed.
pub fn from_npy_dir(dir: impl AsRef<Path>) -> Result<Array> {
    let dir = dir.as_ref();
    let dir = dir.canonicalize().map_err(Error::io(dir))?;
    let meta_path = dir.join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(Error::io(&meta_path))?;
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", meta_path.display())))?;
    let dtype = dtype_of(&meta.dtype).ok_or_else(|| {
        Error::Config(format!(
            "{}: unsupported dtype {}",
            meta_path.display(),
            meta.dtype
        ))
    })?;
    let consistent = meta.chunks.len() == meta.shape.len()
        && meta
            .chunks
            .iter()
            .zip(&meta.shape)
            .all(|(c, &n)| c.iter().sum::<usize>() == n)
        && meta.files.len() == grid::count(&meta.chunks).max(1);
    if !consistent {
        return Err(Error::Config(format!(
            "{}: shape {:?}, chunks {:?} and {} files do not agree",
            meta_path.display(),
            meta.shape,
            meta.chunks,
            meta.files.len()
        )));
    }
    let files = meta.files.iter().map(|f| dir.join(f)).collect();
    Ok(Array::new(
        meta.shape,
        meta.chunks,
        dtype,
        Expr::Read(Arc::new(NpyFiles(files))),
    ))
}

/// Chunks stored one per `.npy` file, the files in C order over the chunk grid.
pub(crate) struct NpyFiles(pub(crate) Vec<PathBuf>);

impl ChunkSource for NpyFiles {
    fn describe(&self) -> &'static str {
        "read a .npy chunk file"
    }

    fn read(&self, client: &Client, chunks: &Chunks, index: &[usize], dtype: DType) -> Future<()> {
        let path = &self.0[grid::ravel(index, &grid::grid(chunks))];
        let shape = grid::chunk_shape(chunks, index);
        let head = encode_value(&(path, dtype, shape)).expect("paths encode");
        client.submit_raw(read_task, "from_npy", &[], vec![CallArg::Value(head)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_wrong_files_are_errors() {
        let blocks = [
            Block::F64(
                ndarray::Array::from_shape_fn((3, 4), |(i, j)| i as f64 - j as f64 * 0.5)
                    .into_dyn(),
            ),
            Block::I64(ndarray::arr1(&[1i64, -2, 3]).into_dyn()),
            Block::Bool(ndarray::arr2(&[[true, false]]).into_dyn()),
            Block::F32(ndarray::arr0(2.5f32).into_dyn()),
            // A transposed (Fortran-order) chunk.
            Block::F64(
                ndarray::Array::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f64)
                    .reversed_axes()
                    .into_dyn(),
            ),
        ];
        for block in blocks {
            let bytes = encode(&block);
            assert_eq!(&bytes[..6], b"\x93NUMPY");
            assert_eq!(decode(&bytes, block.dtype()).unwrap(), block);
        }
        let header =
            std::str::from_utf8(&encode(&Block::I64(ndarray::arr1(&[7i64]).into_dyn()))[10..])
                .unwrap()
                .to_string();
        assert!(header.contains("'descr': '<i8'"), "{header}");
        assert!(
            decode(b"not numpy", DType::F64)
                .unwrap_err()
                .contains("not a .npy file of f64")
        );
        let floats = encode(&Block::F64(ndarray::arr1(&[1.0, 2.0]).into_dyn()));
        assert!(decode(&floats, DType::I64).is_err(), "another element type");
        let mut truncated = floats.clone();
        truncated.pop();
        assert!(decode(&truncated, DType::F64).is_err());
        // A header claiming far more elements than the file holds allocates nothing.
        let header_len = usize::from(u16::from_le_bytes([floats[8], floats[9]]));
        let header = std::str::from_utf8(&floats[10..10 + header_len]).unwrap();
        let claimed =
            header
                .replacen("(2,)", "(9999999999999,)", 1)
                .replacen(&" ".repeat(12), "", 1);
        assert_eq!(claimed.len(), header.len());
        let mut lying = floats[..10].to_vec();
        lying.extend_from_slice(claimed.as_bytes());
        lying.extend_from_slice(&floats[10 + header_len..]);
        let error = decode(&lying, DType::F64).unwrap_err();
        assert!(
            error.contains("9999999999999") || error.contains("missing"),
            "{error}"
        );
        // Data that does not start 8-byte aligned in memory is copied first.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&floats);
        assert_eq!(
            decode(&shifted[1..], DType::F64).unwrap(),
            Block::F64(ndarray::arr1(&[1.0, 2.0]).into_dyn())
        );
    }
}
