//! How Zarr stores are written: format, compression, the store's chunk shape, and the
//! metadata (`zarr.json` or `.zarray`) they make.

use crate::collections::array::dtype::DType;
use serde_json::{Value, json};

/// The Zarr format a store is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZarrFormat {
    /// Zarr 2 (`.zarray`, `.zgroup`), what Zarr-Python 2 and most stores made before 2025
    /// use.
    V2,
    /// Zarr 3 (`zarr.json`), Zarr-Python 3's default.
    #[default]
    V3,
}

/// The compressor of Blosc's codecs that a [`Compression::Blosc`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BloscCompressor {
    /// `blosclz`.
    BloscLz,
    /// `lz4`, Zarr-Python 2's default.
    Lz4,
    /// `lz4hc`.
    Lz4Hc,
    /// `zlib`.
    Zlib,
    /// `zstd`.
    Zstd,
}

impl BloscCompressor {
    fn name(self) -> &'static str {
        match self {
            BloscCompressor::BloscLz => "blosclz",
            BloscCompressor::Lz4 => "lz4",
            BloscCompressor::Lz4Hc => "lz4hc",
            BloscCompressor::Zlib => "zlib",
            BloscCompressor::Zstd => "zstd",
        }
    }
}

/// How chunks are compressed in a written store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are.
    None,
    /// Zstandard at `level` (1 to 22; 3 is zstd's default).
    Zstd {
        /// Compression level.
        level: i32,
    },
    /// Blosc with byte shuffling and `compressor` at `level` (0 to 9).
    Blosc {
        /// Blosc's inner compressor.
        compressor: BloscCompressor,
        /// Compression level.
        level: u8,
    },
    /// Gzip at `level` (0 to 9).
    Gzip {
        /// Compression level.
        level: u32,
    },
}

impl Default for Compression {
    /// Zstandard at level 3, as Zarr-Python 3 writes.
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

/// How [`Array::to_zarr_with`](crate::array::Array::to_zarr_with) and
/// [`store_zarr`](crate::array::store_zarr) write: format, compression, the store's
/// chunk shape and whether an existing array is replaced.
///
/// ```
/// use mpidask::array::{Compression, ZarrFormat, ZarrOptions};
/// let options = ZarrOptions::default()
///     .format(ZarrFormat::V2)
///     .compression(Compression::Gzip { level: 5 })
///     .chunks(&[1000, 1000])
///     .overwrite(true);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZarrOptions {
    pub(super) format: ZarrFormat,
    pub(super) compression: Compression,
    pub(super) chunks: Option<Vec<usize>>,
    pub(crate) overwrite: bool,
}

impl ZarrOptions {
    /// The Zarr format (default 3).
    pub fn format(mut self, format: ZarrFormat) -> Self {
        self.format = format;
        self
    }

    /// The compression of every chunk (default Zstandard, level 3).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The store's chunk shape (default: the array's first chunk along each axis). An array
    /// whose chunks are not made of whole store chunks is rechunked to the store's chunks
    /// before it is written, so that no two workers write into one store chunk.
    pub fn chunks(mut self, chunks: &[usize]) -> Self {
        self.chunks = Some(chunks.to_vec());
        self
    }

    /// Whether an array already at the path is replaced (default: it is an error, as with
    /// Dask's `to_zarr(overwrite=False)`).
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
}

/// The name of `dtype` in a format 3 `zarr.json` and in a format 2 `.zarray`, and its fill
/// value in each. Format 2 fill values are NaN for reals and none for the others: xarray
/// takes a format 2 array's fill value as its missing value, which a fill value of 0 would
/// make of every zero.
fn zarr_type(dtype: DType) -> (&'static str, &'static str, Value, Value) {
    match dtype {
        DType::F64 => ("float64", "<f8", json!(0.0), json!("NaN")),
        DType::F32 => ("float32", "<f4", json!(0.0), json!("NaN")),
        DType::I64 => ("int64", "<i8", json!(0), Value::Null),
        DType::I32 => ("int32", "<i4", json!(0), Value::Null),
        DType::U8 => ("uint8", "|u1", json!(0), Value::Null),
        DType::Bool => ("bool", "|b1", json!(false), Value::Null),
    }
}

/// The metadata of an array of `shape` and `dtype` in store chunks of `chunks`, as the
/// options say.
pub(super) fn metadata(
    shape: &[usize],
    chunks: &[usize],
    dtype: DType,
    options: &ZarrOptions,
) -> Value {
    let (v3_name, v2_name, fill, v2_fill) = zarr_type(dtype);
    let typesize = dtype.size();
    match options.format {
        ZarrFormat::V2 => {
            let compressor = match options.compression {
                Compression::None => Value::Null,
                Compression::Zstd { level } => json!({"id": "zstd", "level": level}),
                Compression::Blosc { compressor, level } => json!({
                    "id": "blosc", "cname": compressor.name(), "clevel": level,
                    "shuffle": 1, "blocksize": 0
                }),
                Compression::Gzip { level } => json!({"id": "gzip", "level": level}),
            };
            json!({
                "zarr_format": 2,
                "shape": shape,
                "chunks": chunks,
                "dtype": v2_name,
                "compressor": compressor,
                "fill_value": v2_fill,
                "order": "C",
                "filters": null,
                "dimension_separator": ".",
            })
        }
        ZarrFormat::V3 => {
            let mut codecs = vec![json!({"name": "bytes", "configuration": {"endian": "little"}})];
            match options.compression {
                Compression::None => {}
                Compression::Zstd { level } => codecs.push(json!({
                    "name": "zstd", "configuration": {"level": level, "checksum": false}
                })),
                Compression::Blosc { compressor, level } => codecs.push(json!({
                    "name": "blosc",
                    "configuration": {
                        "cname": compressor.name(), "clevel": level,
                        "shuffle": if typesize > 1 { "shuffle" } else { "noshuffle" },
                        "typesize": typesize, "blocksize": 0
                    }
                })),
                Compression::Gzip { level } => codecs.push(json!({
                    "name": "gzip", "configuration": {"level": level}
                })),
            }
            json!({
                "zarr_format": 3,
                "node_type": "array",
                "shape": shape,
                "data_type": v3_name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": fill,
                "codecs": codecs,
                "attributes": {},
            })
        }
    }
}
