//! Arrays on disk: a directory with one NumPy `.npy` file per chunk and a `meta.json`
//! giving the shape, the chunks and the element type. Workers write and read the chunk
//! files themselves, so the directory must be on storage every rank can reach.
//!
//! In Python: `meta = json.load(open(d + "/meta.json"))`, then `numpy.load` each file named
//! in `meta["files"]` (C order over the chunk grid).

use super::dtype::DType;
use super::grid::{self, Chunks};
use super::kernel::Block;
use super::{Array, Expr};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::{ArgSlot, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8] = b"\x93NUMPY";

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

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "|b1",
        DType::I64 => "<i8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

fn dtype_of(descr: &str) -> Option<DType> {
    match descr {
        "|b1" | "<b1" | "b1" => Some(DType::Bool),
        "<i8" | "i8" => Some(DType::I64),
        "<f4" | "f4" => Some(DType::F32),
        "<f8" | "f8" => Some(DType::F64),
        _ => None,
    }
}

/// The bytes of a `.npy` file (format 1.0, C order, little endian) holding `block`.
pub fn encode(block: &Block) -> Vec<u8> {
    let shape = block.shape();
    let shape_text = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_text}, }}",
        descr(block.dtype())
    );
    // Magic (6) + version (2) + length (2) + header + newline, a multiple of 64 bytes.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes =
        Vec::with_capacity(header.len() + 10 + block.shape().iter().product::<usize>() * 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    match block {
        Block::Bool(a) => bytes.extend(a.as_standard_layout().iter().map(|&b| u8::from(b))),
        Block::I64(a) => a
            .as_standard_layout()
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
        Block::F32(a) => a
            .as_standard_layout()
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
        Block::F64(a) => a
            .as_standard_layout()
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
    }
    bytes
}

fn field<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{name}'"))? + name.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// Reads a `.npy` file written by [`encode`] or by NumPy (format 1.0/2.0, C order, little
/// endian, bool/i8/f4/f8).
pub fn decode(bytes: &[u8]) -> std::result::Result<Block, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, body) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(body..body + header_len)
            .ok_or("truncated .npy header")?,
    )
    .map_err(|_| "the .npy header is not text")?;
    let descr_text = field(header, "descr").ok_or("the .npy header has no descr")?;
    let descr = descr_text
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    let dtype = dtype_of(descr).ok_or_else(|| format!("unsupported .npy type {descr}"))?;
    if field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-ordered .npy files are not supported".into());
    }
    let shape_text = field(header, "shape").ok_or("the .npy header has no shape")?;
    let inner = shape_text.trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or("malformed .npy shape")?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("malformed .npy shape entry {s}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let data = &bytes[body + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * dtype.size() {
        return Err(format!(
            "the .npy data has {} bytes, {count} elements of {dtype} need {}",
            data.len(),
            count * dtype.size()
        ));
    }
    fn build<T>(shape: &[usize], values: Vec<T>) -> std::result::Result<ArrayD<T>, String> {
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| e.to_string())
    }
    Ok(match dtype {
        DType::Bool => Block::Bool(build(&shape, data.iter().map(|&b| b != 0).collect())?),
        DType::I64 => Block::I64(build(
            &shape,
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                .collect(),
        )?),
        DType::F32 => Block::F32(build(
            &shape,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect(),
        )?),
        DType::F64 => Block::F64(build(
            &shape,
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
                .collect(),
        )?),
    })
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
fn write_task(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, CallError> {
    let [ArgSlot::Value(head), ArgSlot::Future(_)] = input.args else {
        return Err("a write task takes a path and a chunk".into());
    };
    let (path, dtype): (PathBuf, DType) = decode_value(head).map_err(|e| e.to_string())?;
    let chunk = input.deps.first().ok_or("a write task without its chunk")?;
    let block = Block::decode(chunk, dtype).map_err(|e| e.to_string())?;
    let bytes = encode(&block);
    std::fs::write(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(encode_value(&(bytes.len() as u64)).map_err(|e| e.to_string())?)
}

/// Reads a chunk from a `.npy` file (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Vec<u8>, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("a read task takes a path".into());
    };
    let (path, dtype, shape): (PathBuf, DType, Vec<usize>) =
        decode_value(head).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let block = decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if block.dtype() != dtype || block.shape() != shape.as_slice() {
        return Err(format!(
            "{} holds {} {:?}, meta.json says {dtype} {shape:?}",
            path.display(),
            block.dtype(),
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
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let dir = dir.canonicalize().map_err(Error::io(dir))?;
        let chunks = super::lower::materialize(client, self)?;
        let indices: Vec<Vec<usize>> = if self.ndim() == 0 {
            vec![vec![]]
        } else {
            grid::indices(self.chunks()).collect()
        };
        let files: Vec<String> = indices.iter().map(|i| chunk_file(i)).collect();
        let writes: Vec<Future<u64>> = files
            .iter()
            .zip(chunks)
            .map(|(file, chunk)| {
                let head = encode_value(&(dir.join(file), self.dtype())).expect("paths encode");
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
        let meta = Meta {
            shape: self.shape().to_vec(),
            chunks: self.chunks().clone(),
            dtype: descr(self.dtype()).to_string(),
            files,
        };
        let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Config(e.to_string()))?;
        let meta_path = dir.join("meta.json");
        std::fs::write(&meta_path, text).map_err(Error::io(&meta_path))?;
        Ok(())
    }
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
        Expr::NpyFiles(Arc::new(files)),
    ))
}

/// Submits the read of one chunk file.
pub(crate) fn read_chunk(
    client: &Client,
    path: &Path,
    dtype: DType,
    shape: &[usize],
) -> Future<()> {
    let head = encode_value(&(path, dtype, shape)).expect("paths encode");
    client.submit_raw(read_task, "from_npy", &[], vec![CallArg::Value(head)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_headers_are_numpy_shaped() {
        let blocks = [
            Block::F64(
                ndarray::Array::from_shape_fn((3, 4), |(i, j)| i as f64 - j as f64 * 0.5)
                    .into_dyn(),
            ),
            Block::I64(ndarray::arr1(&[1i64, -2, 3]).into_dyn()),
            Block::Bool(ndarray::arr2(&[[true, false]]).into_dyn()),
            Block::F32(ndarray::arr0(2.5f32).into_dyn()),
        ];
        for block in blocks {
            let bytes = encode(&block);
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0, "header aligned to 64 bytes");
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            assert_eq!(decode(&bytes).unwrap(), block);
        }
        let header =
            std::str::from_utf8(&encode(&Block::I64(ndarray::arr1(&[7i64]).into_dyn()))[10..])
                .unwrap()
                .to_string();
        assert!(
            header.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }"),
            "{header}"
        );
        assert!(decode(b"not numpy").unwrap_err().contains("magic"));
        let mut truncated = encode(&Block::F64(ndarray::arr1(&[1.0, 2.0]).into_dyn()));
        truncated.pop();
        assert!(decode(&truncated).unwrap_err().contains("bytes"));
    }
}
