//! Zarr stores, format 2 and 3 (through the `zarrs` crate): an array is read from a store
//! directory and written to one by the workers holding its chunks, never through the
//! client, so the store must be on storage every rank reaches (as a cluster's parallel file
//! system is).
//!
//! A written array's metadata (`zarr.json`, or `.zarray` for format 2) is written last,
//! once every chunk is, so an array whose writing stopped has no metadata and does not open
//! as a whole one.

use super::attrs::{self, Attrs, Labelled};
use super::dtype::DType;
use super::grid::{self, Chunks};
use super::kernel::Block;
use super::source::ChunkSource;
use super::{Array, Expr};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::{ArgSlot, Bytes, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use ndarray::ArrayD;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::{Array as ZarrArray, ArrayBytes, ArrayMetadata, data_type};
use zarrs::filesystem::FilesystemStore;

mod options;
use options::metadata;

mod plain;
pub use options::{BloscCompressor, Compression, ZarrFormat, ZarrOptions};

/// The node of `variable` in the store: `/` for the store's root, `/a/b` for `a/b`.
fn node_path(variable: &str) -> std::result::Result<String, String> {
    let parts: Vec<&str> = variable.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(bad) = parts
        .iter()
        .find(|p| **p == "." || **p == ".." || p.starts_with("__"))
    {
        return Err(format!(
            "`{bad}` cannot name a node of a Zarr store (names like `temperature` or \
             `group/temperature`)"
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Opens the store directory `path` (which must exist).
fn open_store(path: &Path) -> Result<Arc<FilesystemStore>> {
    if !path.is_dir() {
        return Err(Error::Config(format!(
            "{}: no such directory; a Zarr store is a directory (written by zarr, xarray's \
             to_zarr, dask's to_zarr or Array::to_zarr)",
            path.display()
        )));
    }
    FilesystemStore::new(path)
        .map(Arc::new)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// The names of the arrays and groups directly under `node` of the store at `path`, for
/// error messages.
fn children(path: &Path, node: &str) -> Vec<String> {
    let dir = path.join(node.trim_start_matches('/'));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let p = entry.path();
            ["zarr.json", ".zarray", ".zgroup"]
                .iter()
                .any(|m| p.join(m).is_file())
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The mpidask element type of a Zarr data type: bool, uint8, int32, int64, float32 and
/// float64 as they are; int8, int16 and uint16 as int32 and uint32 as int64, the narrowest
/// type that holds all their values.
fn dtype_of(zarr_type: &zarrs::array::DataType) -> Option<DType> {
    use data_type::*;
    if zarr_type.is::<Float64DataType>() {
        Some(DType::F64)
    } else if zarr_type.is::<Float32DataType>() {
        Some(DType::F32)
    } else if zarr_type.is::<BoolDataType>() {
        Some(DType::Bool)
    } else if zarr_type.is::<UInt8DataType>() {
        Some(DType::U8)
    } else if zarr_type.is::<Int32DataType>()
        || zarr_type.is::<Int16DataType>()
        || zarr_type.is::<Int8DataType>()
        || zarr_type.is::<UInt16DataType>()
    {
        Some(DType::I32)
    } else if zarr_type.is::<Int64DataType>() || zarr_type.is::<UInt32DataType>() {
        Some(DType::I64)
    } else {
        None
    }
}

/// An array of a Zarr store: its store directory, node and metadata (given to the read
/// tasks, so that workers do not each read it again).
struct ZarrSource {
    store: PathBuf,
    node: String,
    metadata: String,
}

impl ChunkSource for ZarrSource {
    fn describe(&self) -> &'static str {
        "read a region of a Zarr array"
    }

    fn read(&self, client: &Client, chunks: &Chunks, index: &[usize], dtype: DType) -> Future<()> {
        let region = Region {
            start: grid::chunk_offset(chunks, index),
            shape: grid::chunk_shape(chunks, index),
        };
        let head = encode_value(&(&self.store, &self.node, &self.metadata, region, dtype))
            .expect("a region encodes");
        client.submit_raw(read_task, "from_zarr", &[], vec![CallArg::Value(head)])
    }
}

/// A region of an array: where it starts and its shape.
#[derive(serde::Serialize, serde::Deserialize)]
struct Region {
    start: Vec<usize>,
    shape: Vec<usize>,
}

impl Region {
    fn ranges(&self) -> Vec<Range<u64>> {
        self.start
            .iter()
            .zip(&self.shape)
            .map(|(&s, &n)| s as u64..(s + n) as u64)
            .collect()
    }
}

/// The array at `node` of the store at `store` with `metadata` (worker side).
fn open_with(
    store: &Path,
    node: &str,
    metadata: &str,
) -> std::result::Result<ZarrArray<FilesystemStore>, String> {
    let metadata: ArrayMetadata = serde_json::from_str(metadata)
        .map_err(|e| format!("the metadata of {node} does not parse: {e}"))?;
    let files = FilesystemStore::new(store).map_err(|e| format!("{}: {e}", store.display()))?;
    ZarrArray::new_with_metadata(Arc::new(files), node, metadata)
        .map_err(|e| format!("{}{node}: {e}", store.display()))
}

/// Reads a region of a Zarr array (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("a Zarr read task takes its region".into());
    };
    let (store, node, metadata, region, dtype): (PathBuf, String, String, Region, DType) =
        decode_value(head).map_err(|e| e.to_string())?;
    // Real elements stored as they are: from the decoded bytes straight into the result.
    let array = open_with(&store, &node, &metadata)?;
    let same = match dtype {
        DType::F64 => array.data_type().is::<data_type::Float64DataType>(),
        DType::F32 => array.data_type().is::<data_type::Float32DataType>(),
        DType::U8 => array.data_type().is::<data_type::UInt8DataType>(),
        DType::I32 | DType::I64 | DType::Bool => false,
    };
    if same {
        // A whole uncompressed or zstd chunk, read into the result, unless it was never
        // written.
        if let Some((file, codec)) = plain::chunk_file(&store, &array, &metadata, &region) {
            let count: usize = region.shape.iter().product();
            let header = super::kernel::raw_header(&region.shape, count);
            if let Some(bytes) = plain::read(&file, codec, &header, count * dtype.size())? {
                return Ok(bytes);
            }
        }
        let ranges = region.ranges();
        let bytes: ArrayBytes<'static> = array
            .retrieve_array_subset(&ranges)
            .map_err(|e| format!("{}{node}: cannot read {ranges:?}: {e}", store.display()))?;
        let raw = bytes
            .into_fixed()
            .map_err(|e| format!("{}{node}: {e}", store.display()))?;
        let count: usize = region.shape.iter().product();
        if raw.len() != count * dtype.size() {
            return Err(format!(
                "{}{node}: read {} bytes for {count} elements of {dtype}",
                store.display(),
                raw.len()
            )
            .into());
        }
        return Ok(super::kernel::encode_raw_bytes(
            &region.shape,
            dtype.size(),
            &raw,
        ));
    }
    let block = read_block(&store, &node, &metadata, &region, dtype)?;
    Ok(block.encode().map_err(|e| e.to_string())?)
}

/// Reads `region` of the array at `node` of `store` whose metadata is `metadata`, checked
/// to be `dtype`.
fn read_block(
    store: &Path,
    node: &str,
    metadata: &str,
    region: &Region,
    dtype: DType,
) -> std::result::Result<Block, String> {
    let array = open_with(store, node, metadata)?;
    let ranges = region.ranges();
    let failed = |e: zarrs::array::ArrayError| {
        format!(
            "{}{node}: cannot read {:?}: {e}",
            store.display(),
            region.ranges()
        )
    };
    macro_rules! read {
        ($t:ty) => {
            array
                .retrieve_array_subset::<ArrayD<$t>>(&ranges)
                .map_err(failed)?
        };
    }
    use data_type::*;
    let zarr_type = array.data_type();
    let block = if zarr_type.is::<Float64DataType>() {
        Block::F64(read!(f64))
    } else if zarr_type.is::<Float32DataType>() {
        Block::F32(read!(f32))
    } else if zarr_type.is::<BoolDataType>() {
        Block::Bool(read!(bool))
    } else if zarr_type.is::<Int64DataType>() {
        Block::I64(read!(i64))
    } else if zarr_type.is::<Int32DataType>() {
        Block::I32(read!(i32))
    } else if zarr_type.is::<Int16DataType>() {
        Block::I32(read!(i16).mapv(i32::from))
    } else if zarr_type.is::<Int8DataType>() {
        Block::I32(read!(i8).mapv(i32::from))
    } else if zarr_type.is::<UInt32DataType>() {
        Block::I64(read!(u32).mapv(i64::from))
    } else if zarr_type.is::<UInt16DataType>() {
        Block::I32(read!(u16).mapv(i32::from))
    } else if zarr_type.is::<UInt8DataType>() {
        Block::U8(read!(u8))
    } else {
        return Err(format!("{}{node}: unsupported data type", store.display()));
    };
    if block.dtype() != dtype || block.shape() != region.shape.as_slice() {
        return Err(format!(
            "{}{node}: read {} {:?} where the graph expects {dtype} {:?}",
            store.display(),
            block.dtype(),
            block.shape(),
            region.shape
        ));
    }
    Ok(block)
}

/// The whole of `variable` of the Zarr store at `path`, read here (a dataset's
/// coordinates), with its metadata as JSON.
pub(crate) fn read_whole(path: &Path, variable: &str) -> Result<(Block, Value)> {
    // Checks the array and gives its element type and shape.
    let array = open(path, variable, None)?;
    let node = node_path(variable).map_err(Error::Config)?;
    let store = open_store(path)?;
    let opened = ZarrArray::open(store, &node)
        .map_err(|e| Error::Config(format!("{}{node}: {e}", path.display())))?;
    let metadata = serde_json::to_value(opened.metadata())
        .map_err(|e| Error::Config(format!("{}{node}: {e}", path.display())))?;
    let region = Region {
        start: vec![0; array.ndim()],
        shape: array.shape().to_vec(),
    };
    let block = read_block(path, &node, &metadata.to_string(), &region, array.dtype())
        .map_err(Error::Config)?;
    Ok((block, metadata))
}

/// Writes a chunk into its region of a Zarr array (worker side); returns the elements
/// written.
fn write_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head), ArgSlot::Future(_)] = input.args else {
        return Err("a Zarr write task takes its region and a chunk".into());
    };
    let (store, node, metadata, start, dtype): (PathBuf, String, String, Vec<usize>, DType) =
        decode_value(head).map_err(|e| e.to_string())?;
    let chunk = input
        .deps
        .first()
        .ok_or("a Zarr write task without its chunk")?;
    let array = open_with(&store, &node, &metadata)?;
    // Real elements go to the store from the received bytes, never copied into an array.
    if let Some(parts) = super::kernel::raw_elements(chunk, dtype) {
        let (shape, raw) = parts.map_err(|e| e.to_string())?;
        let region = Region { start, shape };
        let elements: usize = region.shape.iter().product();
        let written = encode_value(&(elements as u64)).map_err(|e| e.to_string())?;
        // A whole uncompressed chunk is its file's bytes.
        if let Some((file, plain::Codec::None)) =
            plain::chunk_file(&store, &array, &metadata, &region)
        {
            plain::write(&file, raw)?;
            return Ok(written.into());
        }
        let ranges = region.ranges();
        array
            .store_array_subset(&ranges, ArrayBytes::new_flen(Cow::Borrowed(raw)))
            .map_err(|e| format!("{}{node}: cannot write {ranges:?}: {e}", store.display()))?;
        return Ok(written.into());
    }
    let block = Block::decode(chunk, dtype).map_err(|e| e.to_string())?;
    let region = Region {
        start,
        shape: block.shape().to_vec(),
    };
    let ranges = region.ranges();
    let written = match block {
        Block::F64(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
        Block::F32(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
        Block::I64(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
        Block::I32(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
        Block::U8(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
        Block::Bool(a) => array.store_array_subset(&ranges, a.as_standard_layout().into_owned()),
    };
    written.map_err(|e| format!("{}{node}: cannot write {ranges:?}: {e}", store.display()))?;
    let elements: usize = region.shape.iter().product();
    Ok(encode_value(&(elements as u64))
        .map_err(|e| e.to_string())?
        .into())
}

/// An array of the Zarr store at `path` (a directory; format 2 or 3), `variable` naming
/// it in the store (`"temperature"`, `"group/temperature"`, or `""` for an array at the
/// store's root), in the store's chunks. Its chunks are read by the workers when the
/// array is computed; missing chunks read as the fill value.
///
/// Elements are `bool`, `uint8`, `int32`, `int64`, `float32` and `float64` as stored;
/// `int8`, `int16` and `uint16` become `i32`, `uint32` becomes `i64` (the narrowest type
/// mpidask arrays have that holds every value).
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let store = std::env::temp_dir().join(format!("doc-zarr-{}", std::process::id()));
///     let x = array::arange(0.0, 10.0, 1.0, 4);
///     x.to_zarr(client, &store, "x").unwrap();
///     let back = array::from_zarr(&store, "x").unwrap();
///     assert_eq!(back.chunks()[0], vec![4, 4, 2]);
///     assert_eq!(back.sum().compute_scalar::<f64>(client).unwrap(), 45.0);
///     std::fs::remove_dir_all(&store).unwrap();
/// });
/// ```
pub fn from_zarr(path: impl AsRef<Path>, variable: &str) -> Result<Array> {
    open(path.as_ref(), variable, None)
}

/// [`from_zarr`] in chunks of `chunks` (one size per axis) instead of the store's: each
/// chunk reads its region of the store. Chunks that are multiples of the store's, or
/// divide them, read each stored chunk once or a few times; others read stored chunks
/// they share more than once.
pub fn from_zarr_chunked(
    path: impl AsRef<Path>,
    variable: &str,
    chunks: &[usize],
) -> Result<Array> {
    open(path.as_ref(), variable, Some(chunks))
}

fn open(path: &Path, variable: &str, chunks: Option<&[usize]>) -> Result<Array> {
    let node = node_path(variable).map_err(|why| Error::Config(format!("from_zarr: {why}")))?;
    let store = open_store(path)?;
    let path = path.canonicalize().map_err(Error::io(path))?;
    let where_ = format!("{}{}", path.display(), node);
    let array = ZarrArray::open(store, &node).map_err(|e| {
        let held = children(&path, &node);
        let parent = node.rsplit_once('/').map_or("/", |(p, _)| p);
        let siblings = children(&path, if parent.is_empty() { "/" } else { parent });
        let hint = if !held.is_empty() {
            format!(
                "it is a group holding {}: name one of them",
                held.join(", ")
            )
        } else if !siblings.is_empty() {
            format!("the store holds {}", siblings.join(", "))
        } else {
            "the store holds no array there".to_string()
        };
        Error::Config(format!("{where_}: not a Zarr array ({e}); {hint}"))
    })?;
    let dtype = dtype_of(array.data_type()).ok_or_else(|| {
        Error::Config(format!(
            "{where_}: data type {} is not one mpidask arrays hold (bool, uint8, int8 to \
             int64, uint16, uint32, float32, float64); convert it with Python zarr first",
            array.data_type()
        ))
    })?;
    let shape: Vec<usize> = array.shape().iter().map(|&n| n as usize).collect();
    let sizes: Vec<usize> = match chunks {
        Some(sizes) => sizes.to_vec(),
        None => {
            let zeros = vec![0u64; shape.len()];
            let first = array
                .chunk_shape(&zeros)
                .map_err(|e| Error::Config(format!("{where_}: {e}")))?;
            let regular = first.iter().enumerate().all(|(axis, size)| {
                let size = size.get() as usize;
                let mut at = vec![0u64; shape.len()];
                at[axis] = 1;
                shape[axis] <= size
                    || array
                        .chunk_shape(&at)
                        .is_ok_and(|s| s[axis].get() as usize == size)
            });
            if !regular {
                return Err(Error::Config(format!(
                    "{where_}: its chunk grid is not regular; open it with \
                     from_zarr_chunked and the chunk sizes to read in"
                )));
            }
            first.iter().map(|s| s.get() as usize).collect()
        }
    };
    let chunks = grid::regular(&shape, &sizes)
        .map_err(|why| Error::Config(format!("from_zarr_chunked {where_}: {why}")))?;
    let metadata = serde_json::to_string(array.metadata())
        .map_err(|e| Error::Config(format!("{where_}: {e}")))?;
    Ok(Array::new(
        shape,
        chunks,
        dtype,
        Expr::Read(Arc::new(ZarrSource {
            store: path,
            node,
            metadata,
        })),
    ))
}

/// The metadata files that make `dir` a Zarr node.
const NODE_FILES: [&str; 3] = ["zarr.json", ".zarray", ".zgroup"];

/// Writes group metadata for the store's root and every group above `node` that has none.
fn make_groups(store: &Path, node: &str, format: ZarrFormat) -> Result<()> {
    let mut dir = store.to_path_buf();
    let parts: Vec<&str> = node.split('/').filter(|p| !p.is_empty()).collect();
    for depth in 0..parts.len() {
        if depth > 0 {
            dir = dir.join(parts[depth - 1]);
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        if NODE_FILES.iter().any(|f| dir.join(f).is_file()) {
            continue;
        }
        let (file, text) = match format {
            ZarrFormat::V2 => (".zgroup", json!({"zarr_format": 2})),
            ZarrFormat::V3 => (
                "zarr.json",
                json!({"zarr_format": 3, "node_type": "group", "attributes": {}}),
            ),
        };
        let path = dir.join(file);
        std::fs::write(&path, text.to_string()).map_err(Error::io(&path))?;
    }
    Ok(())
}

/// `true` if everything under `dir` is named like a chunk (`0.1.2` in format 2, `c/0/1/2`
/// in format 3): what a write that stopped before its metadata leaves.
fn only_chunks(dir: &Path) -> bool {
    fn walk(dir: &Path, top: bool) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().all(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let numeric = !name.is_empty() && name.split('.').all(|p| p.parse::<u64>().is_ok());
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    (numeric || (top && name == "c")) && walk(&entry.path(), false)
                }
                Ok(t) if t.is_file() => numeric,
                _ => false,
            }
        })
    }
    walk(dir, true)
}

/// One array to write: what it is rechunked to, where it goes, its metadata (format 3
/// holds the dimension names and attributes in it) and, for format 2, its `.zattrs`.
struct Planned {
    array: Array,
    node: String,
    metadata: Value,
    zattrs: Option<Value>,
}

impl Planned {
    fn metadata_text(&self) -> String {
        serde_json::to_string_pretty(&self.metadata).expect("JSON values print")
    }
}

/// Checks `variable` and `array` and prepares the store for it: the node is free (or
/// cleared, with `overwrite`), the array rechunked to whole store chunks.
fn plan(
    store: &Path,
    files: &Arc<FilesystemStore>,
    stored: &Labelled<'_>,
    options: &ZarrOptions,
) -> Result<Planned> {
    let (variable, array) = (stored.name.as_str(), stored.array);
    array.check()?;
    if !stored.dims.is_empty() && stored.dims.len() != array.ndim() {
        return Err(Error::Config(format!(
            "to_zarr {variable}: {} dimension names ({:?}) for an array of {} dimensions",
            stored.dims.len(),
            stored.dims,
            array.ndim()
        )));
    }
    let node = node_path(variable).map_err(|why| Error::Config(format!("to_zarr: {why}")))?;
    if node == "/" {
        return Err(Error::Config(
            "to_zarr: name the array (e.g. \"x\"); an array at the store's root leaves no room \
             for others"
                .into(),
        ));
    }
    let shape = array.shape().to_vec();
    let store_chunks: Vec<usize> = match &options.chunks {
        Some(c) if c.len() != shape.len() => {
            return Err(Error::Config(format!(
                "to_zarr {variable}: {} chunk sizes for an array of {} dimensions",
                c.len(),
                shape.len()
            )));
        }
        Some(c) if c.contains(&0) => {
            return Err(Error::Config(format!(
                "to_zarr {variable}: chunk sizes {c:?} include 0; every size must be at least 1"
            )));
        }
        Some(c) => c.clone(),
        None => array
            .chunks()
            .iter()
            .map(|sizes| sizes.first().copied().unwrap_or(1).max(1))
            .collect(),
    };
    // Each chunk of the array must be whole store chunks, or two workers would write
    // into one store chunk.
    let aligned = array.chunks().iter().zip(&store_chunks).all(|(sizes, &c)| {
        let bounds = grid::boundaries(sizes);
        let n = bounds.last().copied().unwrap_or(0);
        bounds.iter().all(|&b| b % c == 0 || b == n)
    });
    let array = if aligned {
        array.clone()
    } else {
        let chunks = grid::regular(&shape, &store_chunks)
            .map_err(|why| Error::Config(format!("to_zarr {variable}: {why}")))?;
        array.rechunk_to(chunks)
    };
    let dir = store.join(node.trim_start_matches('/'));
    if dir.exists() {
        let is_node = NODE_FILES.iter().any(|f| dir.join(f).is_file());
        if is_node && !options.overwrite {
            return Err(Error::Config(format!(
                "{}: the store already holds `{variable}`; write with \
                 ZarrOptions::default().overwrite(true) to replace it, or choose another name",
                dir.display()
            )));
        }
        if !is_node && !only_chunks(&dir) {
            return Err(Error::Config(format!(
                "{}: exists and is not a Zarr array (nor the chunks a stopped write left);                  choose another name, or remove it",
                dir.display()
            )));
        }
        // Replaced, or what a write that stopped left (chunks without metadata).
        std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
    }
    // The metadata, checked as the workers will take it.
    let mut value = metadata(&shape, &store_chunks, array.dtype(), options);
    let mut attributes = attrs::to_json(&stored.attrs);
    let zattrs = match options.format {
        ZarrFormat::V3 => {
            if !stored.dims.is_empty() {
                value["dimension_names"] = json!(stored.dims);
            }
            value["attributes"] = Value::Object(attributes);
            None
        }
        ZarrFormat::V2 => {
            // xarray's names of the dimensions of a format 2 array.
            if !stored.dims.is_empty() {
                attributes.insert("_ARRAY_DIMENSIONS".into(), json!(stored.dims));
            }
            (!attributes.is_empty()).then_some(Value::Object(attributes))
        }
    };
    let parsed: ArrayMetadata = serde_json::from_value(value.clone())
        .map_err(|e| Error::Config(format!("to_zarr {variable}: metadata {value}: {e}")))?;
    ZarrArray::new_with_metadata(files.clone(), &node, parsed)
        .map_err(|e| Error::Config(format!("to_zarr {variable}: {e}")))?;
    Ok(Planned {
        array,
        node,
        metadata: value,
        zattrs,
    })
}

/// Computes `arrays` in one graph (what they share is computed once) and writes each to
/// the Zarr store at `path` (created if missing) under its name, the workers holding the
/// chunks writing them; then each array's metadata, and group metadata where the store has
/// none. Dask's `da.to_zarr` of several arrays, or `da.store`.
///
/// ```
/// use mpidask::array::{self, ZarrOptions};
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let store = std::env::temp_dir().join(format!("doc-zarr-many-{}", std::process::id()));
///     let x = array::arange(0.0, 6.0, 1.0, 2);
///     let y = &x * 2.0;
///     array::store_zarr(client, &store, &[("x", &x), ("y", &y)], &ZarrOptions::default())
///         .unwrap();
///     let y = array::from_zarr(&store, "y").unwrap();
///     assert_eq!(y.sum().compute_scalar::<f64>(client).unwrap(), 30.0);
///     std::fs::remove_dir_all(&store).unwrap();
/// });
/// ```
pub fn store_zarr(
    client: &Client,
    path: impl AsRef<Path>,
    arrays: &[(&str, &Array)],
    options: &ZarrOptions,
) -> Result<()> {
    let labelled: Vec<Labelled<'_>> = arrays
        .iter()
        .map(|(name, array)| Labelled {
            name: name.to_string(),
            array,
            dims: Vec::new(),
            attrs: Attrs::new(),
        })
        .collect();
    write_zarr(client, path.as_ref(), &labelled, None, options)
}

/// [`store_zarr`] with each array's dimension names and attributes; with `group`, the
/// root group's metadata is rewritten with these attributes and the metadata of every
/// array written, consolidated as xarray reads it (`.zmetadata` in format 2, the root
/// `zarr.json`'s `consolidated_metadata` in format 3).
pub(crate) fn write_zarr(
    client: &Client,
    path: &Path,
    arrays: &[Labelled<'_>],
    group: Option<&Attrs>,
    options: &ZarrOptions,
) -> Result<()> {
    let path = super::output::writable_dir(path)?;
    let files = open_store(&path)?;
    let mut names = std::collections::HashSet::new();
    let mut planned = Vec::with_capacity(arrays.len());
    for stored in arrays {
        let one = plan(&path, &files, stored, options)?;
        if !names.insert(one.node.clone()) {
            return Err(Error::Config(format!(
                "store_zarr: `{}` is named twice; each array needs its own name",
                stored.name
            )));
        }
        planned.push(one);
    }
    if group.is_none() {
        for one in &planned {
            make_groups(&path, &one.node, options.format)?;
        }
    }
    let roots: Vec<&Array> = planned.iter().map(|p| &p.array).collect();
    let texts: Vec<String> = planned.iter().map(Planned::metadata_text).collect();
    super::lower::for_each_chunk(client, &roots, write_task, "to_zarr", |k, start| {
        let one = &planned[k];
        encode_value(&(&path, &one.node, &texts[k], start, one.array.dtype()))
            .expect("a region encodes")
    })?;
    let write = |file: PathBuf, value: &Value| {
        let text = serde_json::to_string_pretty(value).expect("JSON values print");
        std::fs::write(&file, text).map_err(Error::io(&file))
    };
    for one in &planned {
        let dir = path.join(one.node.trim_start_matches('/'));
        if let Some(zattrs) = &one.zattrs {
            write(dir.join(".zattrs"), zattrs)?;
        }
        let name = match options.format {
            ZarrFormat::V2 => ".zarray",
            ZarrFormat::V3 => "zarr.json",
        };
        write(dir.join(name), &one.metadata)?;
    }
    if let Some(attributes) = group {
        let attributes = Value::Object(attrs::to_json(attributes));
        match options.format {
            ZarrFormat::V2 => {
                let mut all = serde_json::Map::new();
                all.insert(".zgroup".into(), json!({"zarr_format": 2}));
                all.insert(".zattrs".into(), attributes.clone());
                for one in &planned {
                    let key = one.node.trim_start_matches('/');
                    all.insert(format!("{key}/.zarray"), one.metadata.clone());
                    if let Some(zattrs) = &one.zattrs {
                        all.insert(format!("{key}/.zattrs"), zattrs.clone());
                    }
                }
                write(path.join(".zattrs"), &attributes)?;
                write(path.join(".zgroup"), &json!({"zarr_format": 2}))?;
                write(
                    path.join(".zmetadata"),
                    &json!({"metadata": all, "zarr_consolidated_format": 1}),
                )?;
            }
            ZarrFormat::V3 => {
                let all: serde_json::Map<String, Value> = planned
                    .iter()
                    .map(|one| {
                        let key = one.node.trim_start_matches('/').to_string();
                        (key, one.metadata.clone())
                    })
                    .collect();
                write(
                    path.join("zarr.json"),
                    &json!({
                        "zarr_format": 3,
                        "node_type": "group",
                        "attributes": attributes,
                        "consolidated_metadata": {
                            "kind": "inline", "must_understand": false, "metadata": all
                        }
                    }),
                )?;
            }
        }
    }
    Ok(())
}

impl Array {
    /// Computes the array and writes it to the Zarr store at `path` (created if missing)
    /// as `variable`, in format 3 with Zstandard compression and the array's chunks: each
    /// chunk is written by the worker holding it, the metadata last. See
    /// [`Array::to_zarr_with`] for the format, compression and chunks, and [`from_zarr`]
    /// for an example.
    pub fn to_zarr(&self, client: &Client, path: impl AsRef<Path>, variable: &str) -> Result<()> {
        self.to_zarr_with(client, path, variable, &ZarrOptions::default())
    }

    /// [`Array::to_zarr`] as `options` say.
    pub fn to_zarr_with(
        &self,
        client: &Client,
        path: impl AsRef<Path>,
        variable: &str,
        options: &ZarrOptions,
    ) -> Result<()> {
        store_zarr(client, path, &[(variable, self)], options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths() {
        assert_eq!(node_path("x").unwrap(), "/x");
        assert_eq!(node_path("/g/x/").unwrap(), "/g/x");
        assert_eq!(node_path("").unwrap(), "/");
        assert!(node_path("../x").is_err());
        assert!(node_path("g/__x").is_err());
    }

    #[test]
    fn only_chunk_files_count_as_a_stopped_write() {
        let dir = std::env::temp_dir().join(format!("zarr-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v3/c/0/1")).unwrap();
        std::fs::write(dir.join("v3/c/0/1/2"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("v2")).unwrap();
        std::fs::write(dir.join("v2/0.1"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("other/c")).unwrap();
        std::fs::write(dir.join("other/notes.txt"), b"x").unwrap();
        assert!(only_chunks(&dir.join("v3")));
        assert!(only_chunks(&dir.join("v2")));
        assert!(!only_chunks(&dir.join("other")));
        assert!(!only_chunks(&dir.join("missing")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metadata_parses_for_every_type_format_and_compression() {
        let compressions = [
            Compression::None,
            Compression::default(),
            Compression::Gzip { level: 5 },
            Compression::Blosc {
                compressor: BloscCompressor::Lz4,
                level: 5,
            },
        ];
        for format in [ZarrFormat::V2, ZarrFormat::V3] {
            for compression in compressions {
                for dtype in DType::ALL {
                    let options = ZarrOptions::default()
                        .format(format)
                        .compression(compression);
                    let value = metadata(&[10, 7], &[4, 7], dtype, &options);
                    let parsed: ArrayMetadata = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{value}: {e}"));
                    let store = Arc::new(zarrs::storage::store::MemoryStore::new());
                    let array = ZarrArray::new_with_metadata(store, "/x", parsed)
                        .unwrap_or_else(|e| panic!("{value}: {e}"));
                    assert_eq!(dtype_of(array.data_type()), Some(dtype), "{value}");
                }
            }
        }
    }
}
