//! Chunks of Zarr arrays stored as their plain little-endian elements, uncompressed or in
//! one zstd frame (no other codec, no filter): a whole uncompressed chunk is its file's
//! bytes, which a worker writes and reads with one copy, and a zstd chunk is decoded
//! straight into the task's result, where the codec chain of `zarrs` makes two or three
//! copies, each into new memory.

use super::Region;
use crate::protocol::Bytes;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use zarrs::array::Array as ZarrArray;
use zarrs::filesystem::FilesystemStore;

/// How the chunk files of an array hold its plain little-endian elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// As they are.
    None,
    /// In one zstd frame.
    Zstd,
}

/// How the array the metadata describes stores its chunks, when that is its plain
/// little-endian elements in C order, as they are or in one zstd frame; `None` otherwise.
fn plain_codec(metadata: &Value) -> Option<Codec> {
    match metadata["zarr_format"].as_u64()? {
        2 => {
            let compressor = &metadata["compressor"];
            let codec = if compressor.is_null() {
                Codec::None
            } else if compressor["id"] == "zstd" {
                Codec::Zstd
            } else {
                return None;
            };
            let plain = (metadata["filters"].is_null()
                || metadata["filters"].as_array().is_some_and(Vec::is_empty))
                && metadata["order"] == "C"
                && metadata["dtype"]
                    .as_str()
                    .is_some_and(|d| d.starts_with('<') || d.starts_with('|'));
            plain.then_some(codec)
        }
        3 => {
            if metadata["chunk_grid"]["name"] != "regular" {
                return None;
            }
            let (bytes, codec) = match metadata["codecs"].as_array()?.as_slice() {
                [bytes] => (bytes, Codec::None),
                [bytes, zstd] if zstd["name"] == "zstd" => (bytes, Codec::Zstd),
                _ => return None,
            };
            let little = bytes["name"] == "bytes"
                && bytes["configuration"]["endian"]
                    .as_str()
                    .is_none_or(|e| e == "little");
            little.then_some(codec)
        }
        _ => None,
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

/// The file of the chunk that `region` is exactly and how it holds the elements, when the
/// array stores chunks plain; `None` otherwise (a region that is part of a chunk, or
/// several; another codec).
pub(super) fn chunk_file(
    store: &Path,
    array: &ZarrArray<FilesystemStore>,
    metadata: &str,
    region: &Region,
) -> Option<(PathBuf, Codec)> {
    let metadata: Value = serde_json::from_str(metadata).ok()?;
    let codec = plain_codec(&metadata)?;
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
    Some((store.join(array.chunk_key(&indices).as_str()), codec))
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

/// Reads a chunk's file holding `len` bytes of elements (as `codec` stores them) after
/// `header` into one value; `None` if the chunk was never written (it reads as the fill
/// value); an error if the file does not hold `len` bytes.
pub(super) fn read(
    file: &Path,
    codec: Codec,
    header: &[u8],
    len: usize,
) -> Result<Option<Bytes>, String> {
    let failed = |e: std::io::Error| format!("cannot read {}: {e}", file.display());
    let mut opened = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let mut bytes = Bytes::aligned_after(header.len(), header.len() + len);
    bytes.extend_from_slice(header);
    let got = match codec {
        Codec::None => bytes
            .read_from(opened.take(len as u64 + 1))
            .map_err(failed)?,
        Codec::Zstd => {
            let mut frame = Vec::new();
            opened.read_to_end(&mut frame).map_err(failed)?;
            bytes
                .append_with(|buffer| {
                    let end = buffer.len() as u64;
                    let mut after = std::io::Cursor::new(buffer);
                    after.set_position(end);
                    zstd::bulk::Decompressor::new()?.decompress_to_buffer(&frame, &mut after)
                })
                .map_err(|e| {
                    format!(
                        "{}: not a zstd frame of {len} bytes ({e}): the chunk is corrupt or was \
                         written by something else; write the array again",
                        file.display()
                    )
                })?
        }
    };
    if got != len {
        return Err(format!(
            "{}: {got} bytes where a chunk has {len}: the chunk is truncated or was written \
             by something else; write the array again",
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
    fn only_little_endian_chunks_raw_or_in_zstd_are_plain() {
        let v3 = |codecs: Value| {
            plain_codec(&json!({
                "zarr_format": 3, "chunk_grid": {"name": "regular"}, "codecs": codecs
            }))
        };
        let le = json!({"name": "bytes", "configuration": {"endian": "little"}});
        assert_eq!(v3(json!([le])), Some(Codec::None));
        assert_eq!(v3(json!([{"name": "bytes"}])), Some(Codec::None));
        let big = json!({"name": "bytes", "configuration": {"endian": "big"}});
        assert_eq!(v3(json!([big])), None);
        assert_eq!(v3(json!([le, {"name": "zstd"}])), Some(Codec::Zstd));
        assert_eq!(v3(json!([le, {"name": "blosc"}])), None);
        assert_eq!(v3(json!([le, {"name": "zstd"}, {"name": "crc32c"}])), None);
        assert_eq!(v3(json!([{"name": "sharding_indexed"}])), None);
        let v2 = |compressor: Value, dtype: &str| {
            plain_codec(&json!({
                "zarr_format": 2, "compressor": compressor, "filters": null, "order": "C",
                "dtype": dtype
            }))
        };
        assert_eq!(v2(Value::Null, "<f8"), Some(Codec::None));
        assert_eq!(v2(Value::Null, "|u1"), Some(Codec::None));
        assert_eq!(v2(Value::Null, ">f8"), None);
        assert_eq!(
            v2(json!({"id": "zstd", "level": 1}), "<f8"),
            Some(Codec::Zstd)
        );
        assert_eq!(v2(json!({"id": "blosc"}), "<f8"), None);
        assert_eq!(
            chunk_shape(&json!({"zarr_format": 2, "chunks": [4, 5]})),
            Some(vec![4, 5])
        );
    }
}
