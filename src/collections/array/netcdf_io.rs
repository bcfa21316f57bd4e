//! netCDF files (through the `netcdf` crate on the system's libnetcdf): a variable read by
//! the workers, each its own region (classic and netCDF-4 files), and arrays written as
//! contiguous variables of a new netCDF-4 file whose bytes each worker writes for its own
//! chunks (`contiguous`; a netCDF-4 variable is an HDF5 dataset, which says where its bytes
//! are). The file must be on storage every rank reaches.

use super::attrs::{Attrs, Labelled};
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
use ndarray::{ArrayD, IxDyn};
use netcdf::types::{FloatType, IntType, NcVariableType};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The attribute by which xarray marks a byte variable that holds booleans.
const BOOL_MARK: (&str, &str) = ("dtype", "bool");

/// The mpidask element type of a variable: ubyte, int, int64, float and double as they
/// are (`u8`, `i32`, `i64`, `f32`, `f64`); byte, short and ushort as `i32` and uint as `i64`
/// (the narrowest type that holds every value); bytes marked `dtype = "bool"` (as xarray
/// writes booleans) as bool.
fn dtype_of(variable: &netcdf::Variable<'_>) -> Option<DType> {
    let marked_bool = variable.attribute(BOOL_MARK.0).is_some_and(
        |a| matches!(a.value(), Ok(netcdf::AttributeValue::Str(s)) if s == BOOL_MARK.1),
    );
    match variable.vartype() {
        NcVariableType::Float(FloatType::F64) => Some(DType::F64),
        NcVariableType::Float(FloatType::F32) => Some(DType::F32),
        NcVariableType::Int(IntType::I8 | IntType::U8) if marked_bool => Some(DType::Bool),
        NcVariableType::Int(IntType::U8) => Some(DType::U8),
        NcVariableType::Int(IntType::I8 | IntType::I16 | IntType::I32 | IntType::U16) => {
            Some(DType::I32)
        }
        NcVariableType::Int(IntType::I64 | IntType::U32) => Some(DType::I64),
        _ => None,
    }
}

/// Turns off libhdf5's printing of its error stacks in this thread (a setting of each
/// thread): libnetcdf probes for attributes that may be missing, each probe an HDF5 error it
/// handles.
fn quiet_hdf5() {
    hdf5_metno::silence_errors(true);
}

/// A variable of a netCDF file.
struct NetcdfSource {
    path: PathBuf,
    variable: String,
    /// Where its bytes are, when workers can read them without the library (a contiguous,
    /// uncompressed netCDF-4 variable).
    raw: Option<Placement>,
}

/// Where the bytes of variable `name` of the netCDF-4 file at `path` lie, for workers to
/// read them themselves; `None` for a classic file and for what the library must decode.
fn raw_placement(path: &Path, name: &str, dtype: DType) -> Option<Placement> {
    if !contiguous::reads_raw(dtype) {
        return None;
    }
    let file = hdf5_metno::File::open(path).ok()?;
    // A variable named like a dimension it is not the coordinate of is stored under
    // another name.
    let dataset = file
        .dataset(&format!("_nc4_non_coord_{name}"))
        .or_else(|_| file.dataset(name))
        .ok()?;
    super::hdf5_io::raw_placement(&dataset, dtype)
}

impl ChunkSource for NetcdfSource {
    fn describe(&self) -> &'static str {
        "read a region of a netCDF variable"
    }

    fn read(&self, client: &Client, chunks: &Chunks, index: &[usize], dtype: DType) -> Future<()> {
        if let Some(placement) = &self.raw {
            let name = "from_netcdf";
            return contiguous::submit_read(
                client, &self.path, placement, chunks, index, dtype, name,
            );
        }
        let start = grid::chunk_offset(chunks, index);
        let shape = grid::chunk_shape(chunks, index);
        let head = encode_value(&(&self.path, &self.variable, start, shape, dtype))
            .expect("a region encodes");
        client.submit_raw(read_task, "from_netcdf", &[], vec![CallArg::Value(head)])
    }
}

/// Reads a region of a variable (worker side).
fn read_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    let [ArgSlot::Value(head)] = input.args else {
        return Err("a netCDF read task takes its region".into());
    };
    let (path, name, start, shape, dtype): (PathBuf, String, Vec<usize>, Vec<usize>, DType) =
        decode_value(head).map_err(|e| e.to_string())?;
    quiet_hdf5();
    let file = netcdf::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let variable = file
        .variable(&name)
        .ok_or_else(|| format!("{}: no variable {name}", path.display()))?;
    let extents: Vec<Range<usize>> = start.iter().zip(&shape).map(|(&s, &n)| s..s + n).collect();
    let failed =
        |e: netcdf::Error| format!("{} {name}: cannot read {extents:?}: {e}", path.display());
    let dims = IxDyn(&shape);
    let shaped = |e: ndarray::ShapeError| e.to_string();
    macro_rules! read {
        ($variant:ident, $t:ty) => {
            Block::$variant(
                ArrayD::from_shape_vec(
                    dims,
                    variable
                        .get_values::<$t, _>(extents.clone())
                        .map_err(failed)?,
                )
                .map_err(shaped)?,
            )
        };
    }
    let block = match dtype {
        DType::F64 => read!(F64, f64),
        DType::F32 => read!(F32, f32),
        DType::I64 => read!(I64, i64),
        DType::I32 => read!(I32, i32),
        DType::U8 => read!(U8, u8),
        DType::Bool => {
            let bytes = variable
                .get_values::<i8, _>(extents.clone())
                .map_err(failed)?;
            Block::Bool(
                ArrayD::from_shape_vec(dims, bytes.into_iter().map(|b| b != 0).collect())
                    .map_err(shaped)?,
            )
        }
    };
    Ok(block.encode().map_err(|e| e.to_string())?)
}

/// Variable `variable` of the netCDF file at `path` (classic or netCDF-4), in chunks of the
/// file's own chunks grown along the first axis up to 64 MiB (rows of 64 MiB for a
/// contiguous variable). Each chunk is a region read by a worker when the array is
/// computed.
///
/// Elements are `ubyte`, `int`, `int64`, `float` and `double` as stored (`u8`, `i32`,
/// `i64`, `f32`, `f64`); `byte`, `short` and `ushort` become `i32` and `uint` becomes
/// `i64` (the narrowest type mpidask arrays have that holds every value); bytes marked
/// `dtype = "bool"` (xarray's booleans) become `bool`.
pub fn from_netcdf(path: impl AsRef<Path>, variable: &str) -> Result<Array> {
    open(path.as_ref(), variable, None)
}

/// [`from_netcdf`] in chunks of `chunks` (one size per axis).
pub fn from_netcdf_chunked(
    path: impl AsRef<Path>,
    variable: &str,
    chunks: &[usize],
) -> Result<Array> {
    open(path.as_ref(), variable, Some(chunks))
}

fn open(path: &Path, name: &str, chunks: Option<&[usize]>) -> Result<Array> {
    quiet_hdf5();
    let path = path.canonicalize().map_err(Error::io(path))?;
    let file = netcdf::open(&path).map_err(|e| {
        Error::Config(format!(
            "{}: not a netCDF file ({e}); written by netCDF4, xarray or Array::to_netcdf?",
            path.display()
        ))
    })?;
    let variable = file.variable(name).ok_or_else(|| {
        let names: Vec<String> = file.variables().map(|v| v.name()).collect();
        Error::Config(format!(
            "{}: no variable `{name}`; the file holds {}",
            path.display(),
            if names.is_empty() {
                "no variable".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    let where_ = format!("{} {name}", path.display());
    let dtype = dtype_of(&variable).ok_or_else(|| {
        Error::Config(format!(
            "{where_}: element type {:?} is not one mpidask arrays hold (byte, ubyte, short, \
             ushort, int, uint, int64, float, double, bytes marked dtype = \"bool\"); \
             convert it with nccopy or xarray first",
            variable.vartype()
        ))
    })?;
    let shape: Vec<usize> = variable.dimensions().iter().map(|d| d.len()).collect();
    let sizes = match chunks {
        Some(c) => c.to_vec(),
        None => {
            let stored = variable.chunking().ok().flatten();
            auto_chunks(&shape, dtype.size(), stored.as_deref())
        }
    };
    let chunks = grid::regular(&shape, &sizes)
        .map_err(|why| Error::Config(format!("from_netcdf {where_}: {why}")))?;
    drop(file);
    Ok(Array::new(
        shape,
        chunks,
        dtype,
        Expr::Read(Arc::new(NetcdfSource {
            raw: raw_placement(&path, name, dtype),
            path,
            variable: name.to_string(),
        })),
    ))
}

/// One array of [`store_netcdf`]: its variable's name, the array and its dimensions' names
/// (one per axis; a name used by several variables has one length).
pub type NetcdfVariable<'a> = (&'a str, &'a Array, &'a [&'a str]);

/// Defines a contiguous, never filled variable and has its storage allocated (by writing
/// its last element).
fn define(file: &mut netcdf::FileMut, stored: &Labelled<'_>) -> netcdf::Result<()> {
    let Labelled {
        name, array, dims, ..
    } = stored;
    let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
    let last: Vec<usize> = array.shape().iter().map(|&n| n - 1).collect();
    macro_rules! define {
        ($t:ty, $zero:expr) => {{
            let mut variable = file.add_variable::<$t>(name, &dims)?;
            // SAFETY: every element is written by the workers before the file is read.
            unsafe { variable.set_nofill()? };
            if array.dtype() == DType::Bool {
                variable.put_attribute(BOOL_MARK.0, BOOL_MARK.1)?;
            }
            for (key, value) in &stored.attrs {
                variable.put_attribute(key, value.to_netcdf())?;
            }
            if !array.shape().contains(&0) {
                variable.put_value::<$t, _>($zero, last.as_slice())?;
            }
        }};
    }
    match array.dtype() {
        DType::F64 => define!(f64, 0.0),
        DType::F32 => define!(f32, 0.0),
        DType::I64 => define!(i64, 0),
        DType::I32 => define!(i32, 0),
        DType::U8 => define!(u8, 0),
        DType::Bool => define!(i8, 0),
    }
    Ok(())
}

/// Computes the arrays in one graph and writes them to a new netCDF-4 file at `path`
/// (replacing one there once the new one is complete), each as a contiguous variable with
/// the dimensions named: the client lays the file out, the workers holding the chunks write
/// their bytes. Booleans are stored as bytes marked `dtype = "bool"`, as xarray does.
/// Written uncompressed (`nccopy -d` compresses a copy); the file opens in netCDF4,
/// xarray and anything on libnetcdf.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let path = std::env::temp_dir().join(format!("doc-nc-{}.nc", std::process::id()));
///     let t = array::from_array(&ndarray::Array2::<f64>::ones((4, 3)).into_dyn(), &[2, 3]);
///     let mean = t.mean_axis(0);
///     array::store_netcdf(
///         client,
///         &path,
///         &[("t", &t, &["time", "x"]), ("mean", &mean, &["x"])],
///     )
///     .unwrap();
///     let back = array::from_netcdf(&path, "mean").unwrap();
///     assert_eq!(back.sum().compute_scalar::<f64>(client).unwrap(), 3.0);
///     std::fs::remove_file(&path).unwrap();
/// });
/// ```
pub fn store_netcdf(
    client: &Client,
    path: impl AsRef<Path>,
    variables: &[NetcdfVariable<'_>],
) -> Result<()> {
    let labelled: Vec<Labelled<'_>> = variables
        .iter()
        .map(|(name, array, dims)| Labelled {
            name: name.to_string(),
            array,
            dims: dims.iter().map(|d| d.to_string()).collect(),
            attrs: Attrs::new(),
        })
        .collect();
    write_netcdf(client, path.as_ref(), &labelled, &Attrs::new())
}

/// [`store_netcdf`] with each variable's attributes and the file's (`global`).
pub(crate) fn write_netcdf(
    client: &Client,
    path: &Path,
    variables: &[Labelled<'_>],
    global: &Attrs,
) -> Result<()> {
    quiet_hdf5();
    let shown = path.display().to_string();
    let partial = Partial::new(path)?;
    let temporary = partial.temporary.clone();
    let mut lengths: Vec<(&str, usize)> = Vec::new();
    for Labelled {
        name, array, dims, ..
    } in variables
    {
        array.check()?;
        if name.is_empty() || name.contains('/') {
            return Err(Error::Config(format!(
                "to_netcdf {shown}: `{name}` cannot name a variable (a name like `temperature`)"
            )));
        }
        if dims.len() != array.ndim() {
            return Err(Error::Config(format!(
                "to_netcdf {shown}: {name} has {} dimensions but {} names were given ({dims:?})",
                array.ndim(),
                dims.len()
            )));
        }
        for (dim, &len) in dims.iter().map(String::as_str).zip(array.shape()) {
            match lengths.iter().find(|(d, _)| *d == dim) {
                Some((_, other)) if *other != len => {
                    return Err(Error::Config(format!(
                        "to_netcdf {shown}: dimension `{dim}` is {other} long for one variable \
                         and {len} for {name}; name them differently"
                    )));
                }
                Some(_) => {}
                None => lengths.push((dim, len)),
            }
        }
    }
    let failed = |e: netcdf::Error| Error::Config(format!("to_netcdf {shown}: {e}"));
    {
        let mut file = netcdf::create(&temporary).map_err(failed)?;
        for (dim, len) in &lengths {
            file.add_dimension(dim, *len).map_err(failed)?;
        }
        for (key, value) in global {
            file.add_attribute(key, value.to_netcdf()).map_err(failed)?;
        }
        for stored in variables {
            define(&mut file, stored).map_err(failed)?;
        }
        file.close().map_err(failed)?;
    }
    // Where each variable's bytes are: a netCDF-4 variable is an HDF5 dataset.
    let mut placed = Vec::with_capacity(variables.len());
    {
        let file = hdf5_metno::File::open(&temporary)
            .map_err(|e| Error::Config(format!("{}: {e}", temporary.display())))?;
        for Labelled { name, array, .. } in variables {
            // A variable named like a dimension it is not the coordinate of is stored under
            // another name (the dimension's scale takes its own).
            let dataset = file
                .dataset(&format!("_nc4_non_coord_{name}"))
                .or_else(|_| file.dataset(name))
                .map_err(|e| Error::Config(format!("to_netcdf {shown}: {name}: {e}")))?;
            let offset = if array.shape().contains(&0) {
                0
            } else {
                dataset.offset().ok_or_else(|| {
                    Error::Config(format!(
                        "to_netcdf {shown}: {name} is not stored contiguously"
                    ))
                })?
            };
            placed.push((
                *array,
                Placement {
                    offset,
                    shape: array.shape().to_vec(),
                },
            ));
        }
    }
    write_arrays(client, &temporary, &placed, "to_netcdf")?;
    partial.finish()
}

impl Array {
    /// Computes the array and writes it to a new netCDF-4 file at `path` as variable
    /// `variable` with dimensions `dims` (one name per axis): [`store_netcdf`] of one
    /// array.
    pub fn to_netcdf(
        &self,
        client: &Client,
        path: impl AsRef<Path>,
        variable: &str,
        dims: &[&str],
    ) -> Result<()> {
        store_netcdf(client, path, &[(variable, self, dims)])
    }
}
