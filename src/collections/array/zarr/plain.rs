//! Chunks of Zarr arrays stored uncompressed (no codec but `bytes` in little-endian order,
//! no filter): a whole chunk is its file's bytes, so a worker writes and reads it with one
//! copy, where the codec chain of `zarrs` makes two.

use super::Region;
use crate::protocol::Bytes;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use zarrs::array::Array as ZarrArray;
use zarrs::filesystem::FilesystemStore;

/// `true` if the array the metadata describes stores its chunks as their plain
/// little-endian elements in C order.
fn stores_plain(metadata: &Value) -> bool {
    match metadata["zarr_format"].as_u64() {
        Some(2) => {
            metadata["compressor"].is_null()
                && (metadata["filters"].is_null()
                    || metadata["filters"].as_array().is_some_and(Vec::is_empty))
                && metadata["order"] == "C"
                && metadata["dtype"]
                    .as_str()
                    .is_some_and(|d| d.starts_with('<') || d.starts_with('|'))
        }
        Some(3) => {
            metadata["chunk_grid"]["name"] == "regular"
                && metadata["codecs"].as_array().is_some_and(|codecs| {
                    let [only] = codecs.as_slice() else {
                        return false;
                    };
                    only["name"] == "bytes"
                        && only["configuration"]["endian"]
                            .as_str()
                            .is_none_or(|e| e == "little")
                })
        }
        _ => false,
    }
}

/// The shape of the array's chunks, from its metadata.
fn chunk_shape(metadata: &Value) -> Option<Vec<usize>> {
    let shape = match metadata["zarr_format"].as_u64()? {
        2 => &metadata["chunks"],
        _ => &metadata["chunk_grid"]["configuration"]["chunk_shape"],
    };
    shape
        .as_array()?
        .iter()
        .map(|n| n.as_u64().map(|n| n as usize))
        .collect()
}

/// The file of the chunk that `region` is exactly, when the array stores chunks plain;
/// `None` otherwise (a region that is part of a chunk, or several; a codec to apply).
pub(super) fn chunk_file(
    store: &Path,
    array: &ZarrArray<FilesystemStore>,
    metadata: &str,
    region: &Region,
) -> Option<PathBuf> {
    let metadata: Value = serde_json::from_str(metadata).ok()?;
    if !stores_plain(&metadata) {
        return None;
    }
    let chunk = chunk_shape(&metadata)?;
    let whole = chunk.len() == region.shape.len()
        && !chunk.is_empty()
        && chunk
            .iter()
            .zip(&region.start)
            .zip(&region.shape)
            .all(|((&c, &s), &n)| c > 0 && n == c && s % c == 0);
    if !whole {
        return None;
    }
    let indices: Vec<u64> = region
        .start
        .iter()
        .zip(&chunk)
        .map(|(&s, &c)| (s / c) as u64)
        .collect();
    Some(store.join(array.chunk_key(&indices).as_str()))
}

/// Writes a chunk's elements (`raw`, native order on a little-endian machine) as its file.
pub(super) fn write(file: &Path, raw: &[u8]) -> Result<(), String> {
    const {
        assert!(
            cfg!(target_endian = "little"),
            "plain chunks are little-endian"
        )
    };
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(file, raw).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Reads a chunk's file of `len` bytes after `header` into one value; `None` if the chunk
/// was never written (it reads as the fill value); an error if the file is not `len` long.
pub(super) fn read(file: &Path, header: &[u8], len: usize) -> Result<Option<Bytes>, String> {
    let opened = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let mut bytes = Bytes::aligned_after(header.len(), header.len() + len);
    bytes.extend_from_slice(header);
    let got = bytes
        .read_from(opened.take(len as u64 + 1))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if got != len {
        return Err(format!(
            "{}: {got} bytes where an uncompressed chunk has {len}: the chunk is truncated or \
             was written by something else; write the array again",
            file.display()
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_codec_free_little_endian_chunks_are_plain() {
        let v3 = |codecs: Value| json!({"zarr_format": 3, "chunk_grid": {"name": "regular"}, "codecs": codecs});
        assert!(stores_plain(&v3(
            json!([{"name": "bytes", "configuration": {"endian": "little"}}])
        )));
        assert!(stores_plain(&v3(json!([{"name": "bytes"}]))));
        assert!(!stores_plain(&v3(
            json!([{"name": "bytes", "configuration": {"endian": "big"}}])
        )));
        assert!(!stores_plain(&v3(
            json!([{"name": "bytes"}, {"name": "zstd"}])
        )));
        assert!(!stores_plain(&v3(json!([{"name": "sharding_indexed"}]))));
        let v2 = |compressor: Value, dtype: &str| json!({"zarr_format": 2, "compressor": compressor, "filters": null, "order": "C", "dtype": dtype});
        assert!(stores_plain(&v2(Value::Null, "<f8")));
        assert!(stores_plain(&v2(Value::Null, "|u1")));
        assert!(!stores_plain(&v2(Value::Null, ">f8")));
        assert!(!stores_plain(&v2(json!({"id": "zstd"}), "<f8")));
        assert_eq!(
            chunk_shape(&json!({"zarr_format": 2, "chunks": [4, 5]})),
            Some(vec![4, 5])
        );
    }
}
