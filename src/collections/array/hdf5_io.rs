//! HDF5 files (through the `hdf5-metno` crate on the system's libhdf5): a dataset read by
//! the workers, each its own hyperslabs, and arrays written as contiguous datasets of a new
//! file whose bytes each worker writes for its own chunks (`contiguous`). The file must be
//! on storage every rank reaches.

use super::contiguous::{self, Partial, Placement, auto_chunks, write_arrays};
use super::dtype::DType;
use super::grid::{self, Chunks};
use super::kernel::Block;
use super::source::ChunkSource;
use super::{Array, Expr};
use crate::client::{CallArg, Client, Future};
use crate::error::{Error, Result};
use crate::protocol::{ArgSlot, Bytes, decode_value, encode_value};
use crate::task::{CallError, TaskInput};
use hdf5::plist::dataset_create::{AllocTime, FillTime};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5_metno as hdf5;
use ndarray::IxDyn;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The mpidask element type of an HDF5 type: booleans (h5py's enum), uint8, int32, int64,
/// float32 and float64 as they are; int8, int16 and uint16 as int32 and uint32 as int64,
/// the narrowest type that holds every value.
fn dtype_of(descriptor: &TypeDescriptor) -> Option<DType> {
    match descriptor {
        TypeDescriptor::Float(FloatSize::U8) => Some(DType::F64),
        TypeDescriptor::Float(FloatSize::U4) => Some(DType::F32),
        TypeDescriptor::Integer(IntSize::U8) => Some(DType::I64),
        TypeDescriptor::Integer(_) => Some(DType::I32),
        TypeDescriptor::Unsigned(IntSize::U1) => Some(DType::U8),
        TypeDescriptor::Unsigned(IntSize::U2) => Some(DType::I32),
        TypeDescriptor::Unsigned(IntSize::U4) => Some(DType::I64),
        TypeDescriptor::Boolean => Some(DType::Bool),
        _ => None,
    }
}

/// The hyperslab of a region.
fn selection(start: &[usize], shape: &[usize]) -> hdf5::Selection {
    let slices: Vec<hdf5::SliceOrIndex> = start
        .iter()
        .zip(shape)
        .map(|(&start, &count)| hdf5::SliceOrIndex::SliceCount {
            start,
            step: 1,
            count,
            block: 1,
        })
        .collect();
    hdf5::Selection::from(hdf5::Hyperslab::from(slices))
}

/// A region of a dataset read as `dtype` (HDF5 converts integers of other widths).
pub(crate) fn read_region(
    dataset: &hdf5::Dataset,
    start: &[usize],
    shape: &[usize],
    dtype: DType,
) -> std::result::Result<Block, String> {
    let failed = |e: hdf5::Error| format!("cannot read {start:?} + {shape:?}: {e}");
    if shape.is_empty() {
        return Ok(match dtype {
            DType::F64 => Block::F64(dataset.read_dyn::<f64>().map_err(failed)?),
            DType::F32 => Block::F32(dataset.read_dyn::<f32>().map_err(failed)?),
            DType::I64 => Block::I64(dataset.read_dyn::<i64>().map_err(failed)?),
            DType::I32 => Block::I32(dataset.read_dyn::<i32>().map_err(failed)?),
            DType::U8 => Block::U8(dataset.read_dyn::<u8>().map_err(failed)?),
            DType::Bool => Block::Bool(dataset.read_dyn::<bool>().map_err(failed)?),
        });
    }
    let s = || selection(start, shape);
    Ok(match dtype {
        DType::F64 => Block::F64(dataset.read_slice::<f64, _, IxDyn>(s()).map_err(failed)?),
        DType::F32 => Block::F32(dataset.read_slice::<f32, _, IxDyn>(s()).map_err(failed)?),
        DType::I64 => Block::I64(dataset.read_slice::<i64, _, IxDyn>(s()).map_err(failed)?),
        DType::I32 => Block::I32(dataset.read_slice::<i32, _, IxDyn>(s()).map_err(failed)?),
        DType::U8 => Block::U8(dataset.read_slice::<u8, _, IxDyn>(s()).map_err(failed)?),
        DType::Bool => Block::Bool(dataset.read_slice::<bool, _, IxDyn>(s()).map_err(failed)?),
    })
}

/// An error naming the first compression filter of `dataset` that this libhdf5 cannot
/// decode, and what to do.
fn check_filters(dataset: &hdf5::Dataset) -> std::result::Result<(), String> {
    for filter in dataset.filters() {
        let hdf5::filters::Filter::User(id, _) = filter else {
            continue;
        };
        let _lock = hdf5_metno_sys::LOCK.lock();
        // SAFETY: H5Zfilter_avail only reads the library's filter table; the lock keeps
        // other HDF5 calls of this process out meanwhile.
        if unsafe { hdf5_metno_sys::h5z::H5Zfilter_avail(id) } > 0 {
            continue;
        }
        let known = match id {
            32000 => " (LZF, h5py's own)",
            32001 => " (Blosc)",
            32004 => " (LZ4)",
            32008 => " (bitshuffle)",
            32015 => " (Zstandard)",
            _ => "",
        };
        return Err(format!(
            "compressed with HDF5 filter {id}{known}, which this libhdf5 cannot decode; point \
             HDF5_PLUGIN_PATH at a directory holding the filter's plugin (e.g. the plugins of \
             Python's hdf5plugin package), or read a copy made with gzip: \
             `h5repack -f GZIP=4 in.h5 out.h5`"
        ));
    }
    Ok(())
}

/// Where the elements of `dataset` lie as plain bytes a worker may read itself: a
/// contiguous, unfiltered, allocated dataset of a little-endian type that is `dtype` as
/// stored (and one [`contiguous::reads_raw`] takes); `None` otherwise, for the library to
/// read.
pub(crate) fn raw_placement(dataset: &hdf5::Dataset, dtype: DType) -> Option<Placement> {
    use hdf5::dataset::Layout;
    use hdf5::datatype::ByteOrder;
    if !contiguous::reads_raw(dtype)
        || dataset.layout() != Layout::Contiguous
        || !dataset.filters().is_empty()
    {
        return None;
    }
    let datatype = dataset.dtype().ok()?;
    let same = matches!(
        (dtype, datatype.to_descriptor().ok()?),
        (DType::F64, TypeDescriptor::Float(FloatSize::U8))
            | (DType::F32, TypeDescriptor::Float(FloatSize::U4))
            | (DType::U8, TypeDescriptor::Unsigned(IntSize::U1))
    );
    let little = match datatype.byte_order() {
        ByteOrder::LittleEndian => true,
        ByteOrder::None => datatype.size() == 1,
        _ => false,
    };
    let shape = dataset.shape();
    if !same || !little || datatype.size() != dtype.size() || shape.contains(&0) {
        return None;
    }
    Some(Placement {
        offset: dataset.offset()?,
        shape,
    })
}

/// A dataset of an HDF5 file.
struct Hdf5Source {
    path: PathBuf,
    dataset: String,
    /// Where its bytes are, when workers can read them without the library.
    raw: Option<Placement>,
}

impl ChunkSource for Hdf5Source {
    fn describe(&self) -> &'static str {
        "read a hyperslab of an HDF5 dataset"
    }

    fn read(&self, client: &Client, chunks: &Chunks, index: &[usize], dtype: DType) -> Future<()> {
        if let Some(placement) = &self.raw {
            let name = "from_hdf5";
            return contiguous::submit_read(
                client, &self.path, placement, chunks, index, dtype, name,
            );
        }
        let start = grid::chunk_offset(chunks, index);
        let shape = grid::chunk_shape(chunks, index);
        let head = encode_value(&(&self.path, &self.dataset, start, shape, dtype))
            .expect("a region encodes");
        client.submit_raw(read_task, "from_hdf5", &[], vec![CallArg::Value(head)])
    }
}

/// Reads a hyperslab of a dataset (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("an HDF5 read task takes its region".into());
    };
    let (path, name, start, shape, dtype): (PathBuf, String, Vec<usize>, Vec<usize>, DType) =
        decode_value(head).map_err(|e| e.to_string())?;
    // libhdf5 prints its error stacks unless told not to, in each thread.
    hdf5::silence_errors(true);
    let file = hdf5::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dataset = file
        .dataset(&name)
        .map_err(|e| format!("{}: {name}: {e}", path.display()))?;
    let block = read_region(&dataset, &start, &shape, dtype)
        .map_err(|e| format!("{} {name}: {e}", path.display()))?;
    Ok(block.encode().map_err(|e| e.to_string())?)
}

/// The names of the datasets in the file, for error messages.
fn dataset_names(file: &hdf5::File) -> Vec<String> {
    fn walk(group: &hdf5::Group, prefix: &str, out: &mut Vec<String>) {
        for name in group.member_names().unwrap_or_default() {
            let path = format!("{prefix}{name}");
            if let Ok(child) = group.group(&name) {
                walk(&child, &format!("{path}/"), out);
            } else if group.dataset(&name).is_ok() {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(file, "", &mut out);
    out
}

/// Dataset `dataset` (`"temperature"`, `"group/temperature"`) of the HDF5 file at `path`,
/// in chunks of the file's own chunks grown along the first axis up to 64 MiB (rows of
/// 64 MiB for a contiguous dataset). Each chunk is a hyperslab read by a worker when the
/// array is computed.
///
/// Elements are booleans (h5py's), `uint8`, `int32`, `int64`, `float32` and `float64` as
/// stored; `int8`, `int16` and `uint16` become `i32`, `uint32` becomes `i64` (the narrowest
/// type mpidask arrays have that holds every value).
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let path = std::env::temp_dir().join(format!("doc-h5-{}.h5", std::process::id()));
///     array::arange(0.0, 10.0, 1.0, 4).to_hdf5(client, &path, "x").unwrap();
///     let back = array::from_hdf5_chunked(&path, "x", &[5]).unwrap();
///     assert_eq!(back.chunks()[0], vec![5, 5]);
///     assert_eq!(back.sum().compute_scalar::<f64>(client).unwrap(), 45.0);
///     std::fs::remove_file(&path).unwrap();
/// });
/// ```
pub fn from_hdf5(path: impl AsRef<Path>, dataset: &str) -> Result<Array> {
    open(path.as_ref(), dataset, None)
}

/// [`from_hdf5`] in chunks of `chunks` (one size per axis).
pub fn from_hdf5_chunked(path: impl AsRef<Path>, dataset: &str, chunks: &[usize]) -> Result<Array> {
    open(path.as_ref(), dataset, Some(chunks))
}

fn open(path: &Path, name: &str, chunks: Option<&[usize]>) -> Result<Array> {
    hdf5::silence_errors(true);
    let path = path.canonicalize().map_err(Error::io(path))?;
    let file = hdf5::File::open(&path).map_err(|e| {
        Error::Config(format!(
            "{}: not an HDF5 file ({e}); written by h5py, netCDF-4 or Array::to_hdf5?",
            path.display()
        ))
    })?;
    let dataset = file.dataset(name).map_err(|_| {
        Error::Config(format!(
            "{}: no dataset `{name}`; the file holds {}",
            path.display(),
            match dataset_names(&file) {
                names if names.is_empty() => "no dataset".to_string(),
                names => names.join(", "),
            }
        ))
    })?;
    let where_ = format!("{} {name}", path.display());
    let descriptor = dataset
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| Error::Config(format!("{where_}: {e}")))?;
    let dtype = dtype_of(&descriptor).ok_or_else(|| {
        Error::Config(format!(
            "{where_}: element type {descriptor} is not one mpidask arrays hold (bool, \
             uint8, int8 to int64, uint16, uint32, float32, float64); convert it with h5py \
             first"
        ))
    })?;
    check_filters(&dataset).map_err(|why| Error::Config(format!("{where_}: {why}")))?;
    let shape = dataset.shape();
    let sizes = match chunks {
        Some(c) => c.to_vec(),
        None => auto_chunks(&shape, dtype.size(), dataset.chunk().as_deref()),
    };
    let chunks = grid::regular(&shape, &sizes)
        .map_err(|why| Error::Config(format!("from_hdf5 {where_}: {why}")))?;
    Ok(Array::new(
        shape,
        chunks,
        dtype,
        Expr::Read(Arc::new(Hdf5Source {
            raw: raw_placement(&dataset, dtype),
            path,
            dataset: name.to_string(),
        })),
    ))
}

/// A contiguous dataset `name` of `shape` and `dtype` in `file`, its space allocated and
/// never filled; where its bytes are.
fn contiguous_dataset(
    file: &hdf5::File,
    name: &str,
    shape: &[usize],
    dtype: DType,
) -> hdf5::Result<u64> {
    macro_rules! create {
        ($t:ty) => {
            file.new_dataset::<$t>()
                .shape(shape)
                .no_chunk()
                .alloc_time(Some(AllocTime::Early))
                .fill_time(FillTime::Never)
                .create_intermediate_group(true)
                .create(name)?
        };
    }
    let dataset = match dtype {
        DType::F64 => create!(f64),
        DType::F32 => create!(f32),
        DType::I64 => create!(i64),
        DType::I32 => create!(i32),
        DType::U8 => create!(u8),
        DType::Bool => create!(bool),
    };
    if shape.contains(&0) {
        // No element, no storage, nothing for a worker to write.
        return Ok(0);
    }
    dataset
        .offset()
        .ok_or_else(|| hdf5::Error::from(format!("dataset {name} has no allocated storage")))
}

/// Checks that `name` can name a dataset.
fn check_name(name: &str, what: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(Error::Config(format!(
            "{what}: `{name}` cannot name a dataset (names like `temperature` or \
             `group/temperature`)"
        )));
    }
    Ok(())
}

/// Computes `arrays` in one graph and writes them to a new HDF5 file at `path` (replacing
/// one there once the new one is complete), each as a contiguous dataset of its name: the
/// client lays the file out, the workers holding the chunks write their bytes. Written
/// uncompressed (`h5repack` compresses a copy); the file opens in h5py and anything on
/// libhdf5.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let path = std::env::temp_dir().join(format!("doc-h5-many-{}.h5", std::process::id()));
///     let x = array::arange(0.0, 6.0, 1.0, 2);
///     array::store_hdf5(client, &path, &[("x", &x), ("g/big", &x.gt(2.0))]).unwrap();
///     let big = array::from_hdf5(&path, "g/big").unwrap();
///     assert_eq!(big.count_nonzero().compute_scalar::<i64>(client).unwrap(), 3);
///     std::fs::remove_file(&path).unwrap();
/// });
/// ```
pub fn store_hdf5(
    client: &Client,
    path: impl AsRef<Path>,
    arrays: &[(&str, &Array)],
) -> Result<()> {
    hdf5::silence_errors(true);
    let partial = Partial::new(path.as_ref())?;
    let temporary = partial.temporary.clone();
    let mut placed = Vec::with_capacity(arrays.len());
    {
        let file = hdf5::File::create(&temporary)
            .map_err(|e| Error::Config(format!("{}: {e}", temporary.display())))?;
        for (name, array) in arrays {
            check_name(name, "to_hdf5")?;
            array.check()?;
            let offset =
                contiguous_dataset(&file, name, array.shape(), array.dtype()).map_err(|e| {
                    Error::Config(format!(
                        "to_hdf5 {}: dataset {name}: {e}",
                        path.as_ref().display()
                    ))
                })?;
            placed.push((
                *array,
                Placement {
                    offset,
                    shape: array.shape().to_vec(),
                },
            ));
        }
        file.close()
            .map_err(|e| Error::Config(format!("{}: {e}", temporary.display())))?;
    }
    write_arrays(client, &temporary, &placed, "to_hdf5")?;
    partial.finish()
}

impl Array {
    /// Computes the array and writes it to a new HDF5 file at `path` as dataset `dataset`:
    /// [`store_hdf5`] of one array.
    pub fn to_hdf5(&self, client: &Client, path: impl AsRef<Path>, dataset: &str) -> Result<()> {
        store_hdf5(client, path, &[(dataset, self)])
    }
}
