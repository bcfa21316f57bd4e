//! Chunked n-dimensional arrays, like `dask.array`: NumPy-style expressions over arrays
//! cut into `ndarray` chunks that live on the workers.
//!
//! Building an expression does no work; it records a graph and checks shapes (a shape
//! error is kept in the result and reported by [`Array::check`] or when the array is
//! computed). [`Array::compute`] turns the graph into tasks: chains of elementwise
//! operations, random generation and the first stage of a reduction become *one* task per
//! chunk, which the worker compiles into loops over L1-sized tiles (`fused`) or, for what
//! those do not know, interprets over cache-sized blocks; reductions across chunks finish
//! as trees of small combine tasks.
//!
//! ```
//! use mpidask::array::{self, random};
//! let pi = mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let n = 200_000;
//!     let xy = random::uniform(0.0, 1.0, &[n, 2], &[50_000, 2], 42);
//!     let inside = xy.powi(2).sum_axis(-1).lt(1.0);
//!     let pi = inside.mean() * 4.0;
//!     pi.compute_scalar::<f64>(client)
//! });
//! assert!((pi.unwrap() - std::f64::consts::PI).abs() < 0.02);
//! ```

// Public (hidden) with the `internals` feature; see `crate::internals`.
mod attrs;
mod blas;
pub(crate) use blas::one_thread as blas_one_thread;
mod blocks;
#[cfg(feature = "hdf5")]
mod contiguous;
mod derived;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod dtype;
#[cfg(not(feature = "internals"))]
mod dtype;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fused;
#[cfg(not(feature = "internals"))]
mod fused;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod grid;
#[cfg(not(feature = "internals"))]
mod grid;
#[cfg(feature = "hdf5")]
mod hdf5_io;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod kernel;
#[cfg(not(feature = "internals"))]
mod kernel;
pub mod linalg;
mod lower;
mod mask;
#[cfg(feature = "netcdf")]
mod netcdf_io;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod npy;
#[cfg(not(feature = "internals"))]
mod npy;
mod npy_stack;
mod output;
mod overlap;
mod products;
mod rows_call;
pub(crate) use rows_call::{delayed_on_rows, delayed_on_rows2};
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod program;
#[cfg(not(feature = "internals"))]
mod program;
pub mod random;
mod source;
mod stats;
mod structure;
mod tasks;
mod ufunc;
#[cfg(feature = "zarr")]
mod zarr;

#[cfg(any(feature = "zarr", feature = "netcdf"))]
pub(crate) use attrs::Labelled;
pub use attrs::{Attr, Attrs};
pub use blocks::{BlockInfo, blockwise};
pub use derived::eye;
pub use dtype::{DType, Element, Scalar};
#[cfg(feature = "hdf5")]
pub use hdf5_io::{from_hdf5, from_hdf5_chunked, store_hdf5};
pub use mask::Selection;
#[cfg(feature = "netcdf")]
pub(crate) use netcdf_io::write_netcdf;
#[cfg(feature = "netcdf")]
pub use netcdf_io::{NetcdfVariable, from_netcdf, from_netcdf_chunked, store_netcdf};
pub use npy::from_npy_dir;
pub use npy_stack::from_npy_stack;
pub use overlap::Boundary;
pub use products::{einsum, matmul, tensordot};
pub use program::{BinaryOp, Distribution, ReduceOp, UnaryOp};
pub(crate) use structure::resolve as resolve_span;
pub use structure::{AUTO_CHUNK_BYTES, Span, concatenate, stack};
#[cfg(feature = "zarr")]
pub use zarr::{
    BloscCompressor, Compression, ZarrFormat, ZarrOptions, from_zarr, from_zarr_chunked, store_zarr,
};
#[cfg(feature = "zarr")]
pub(crate) use zarr::{read_whole as read_zarr_whole, write_zarr};

use crate::client::{Client, Future};
use crate::error::{Error, Result};
use grid::Chunks;
pub(crate) use kernel::Block;
use ndarray::ArrayD;
use std::sync::Arc;

/// A lazily evaluated, chunked n-dimensional array.
///
/// Cheap to clone (the graph is shared).
#[derive(Clone)]
pub struct Array {
    node: Arc<ArrayNode>,
}

pub(crate) struct ArrayNode {
    pub(crate) shape: Vec<usize>,
    pub(crate) chunks: Chunks,
    pub(crate) dtype: DType,
    pub(crate) expr: Expr,
}

/// How an array is defined.
pub(crate) enum Expr {
    /// A shape or type error found while building the graph.
    Invalid(String),
    /// Random values from a counter-based generator.
    Random {
        dist: Distribution,
        seed: u64,
    },
    /// One value everywhere.
    Fill(Scalar),
    /// `start + i * step` (1-D).
    Arange {
        start: f64,
        step: f64,
    },
    /// Chunks given by the program (`from_array`), embedded in the tasks that read them.
    Literal(Arc<Block>),
    /// Chunks held by workers (`persist`, `from_futures`), one future per chunk, C order.
    Stored(Vec<Future<()>>),
    Unary(UnaryOp, Array),
    Binary(BinaryOp, Array, Array),
    Where(Array, Array, Array),
    Cast(DType, Array),
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdims: bool,
        x: Array,
    },
    Transpose(Vec<usize>, Array),
    /// A cumulative operation along an axis, within each chunk.
    Scan(program::ScanOp, usize, Array),
    /// Per axis, per output chunk: the source chunk and the part of it taken.
    Slice(Vec<structure::AxisPlan>, Array),
    Reshape(Array),
    Rechunk(Array),
    /// Chunks that are windows of `x`, which may overlap (`overlap`): per axis, per output
    /// chunk, the `(start, len)` of `x` it covers.
    Windows(Vec<Vec<(usize, usize)>>, Array),
    Concatenate(usize, Vec<Array>),
    Stack(usize, Vec<Array>),
    Dot(Array, Array),
    /// Chunks read by the workers from files or a store.
    Read(Arc<dyn source::ChunkSource>),
    /// Chunks computed by delayed calls, C order.
    FromDelayed(Vec<Arc<crate::collections::delayed::Node>>),
    /// A user function per chunk: of one chunk, or (`list`) of the chunks of all `x`.
    MapBlocks {
        trampoline: crate::task::Trampoline,
        /// The same function, returning its block to a program that reads it in place.
        block_fn: tasks::BlockFn,
        name: String,
        x: Vec<Array>,
        list: bool,
        /// For each axis of the (single) input, the result's axis whose chunk index is
        /// its chunk index, or `None` for an axis dropped (in one chunk); `None` for all:
        /// the same axes.
        index_map: Option<Vec<Option<usize>>>,
    },
}

/// A value an operator can take on either side: an array or a scalar.
pub enum Operand {
    /// An array.
    Array(Array),
    /// A single value, broadcast.
    Scalar(Scalar),
}

impl From<&Array> for Operand {
    fn from(a: &Array) -> Self {
        Operand::Array(a.clone())
    }
}
impl From<Array> for Operand {
    fn from(a: Array) -> Self {
        Operand::Array(a)
    }
}
macro_rules! scalar_operand {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand {
            fn from(v: $t) -> Self {
                Operand::Scalar(Scalar::from(v))
            }
        }
    )*};
}
scalar_operand!(f64, f32, i64, i32, u8, bool);
impl From<Scalar> for Operand {
    fn from(v: Scalar) -> Self {
        Operand::Scalar(v)
    }
}

impl Operand {
    fn into_array(self) -> Array {
        match self {
            Operand::Array(a) => a,
            Operand::Scalar(s) => Array::scalar(s),
        }
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Array<{}>{:?} in {} chunks",
            self.dtype(),
            self.shape(),
            grid::count(&self.node.chunks)
        )
    }
}

impl Array {
    pub(crate) fn new(shape: Vec<usize>, chunks: Chunks, dtype: DType, expr: Expr) -> Array {
        Array {
            node: Arc::new(ArrayNode {
                shape,
                chunks,
                dtype,
                expr,
            }),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Array {
        Array::new(vec![], vec![], DType::F64, Expr::Invalid(message.into()))
    }

    pub(crate) fn node(&self) -> &ArrayNode {
        &self.node
    }

    /// A stable identity of this graph node (for memoisation while lowering).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.node) as usize
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.node.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.node.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.node.shape.iter().product()
    }

    /// `true` if it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.node.dtype
    }

    /// Chunk sizes along every axis.
    pub fn chunks(&self) -> &Chunks {
        &self.node.chunks
    }

    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        grid::count(&self.node.chunks)
    }

    /// `Err` if building this array (or one it derives from) hit a shape or type error.
    pub fn check(&self) -> Result<()> {
        match &self.node.expr {
            Expr::Invalid(message) => Err(Error::Config(message.clone())),
            _ => Ok(()),
        }
    }

    fn error(&self) -> Option<&str> {
        match &self.node.expr {
            Expr::Invalid(message) => Some(message),
            _ => None,
        }
    }

    /// A 0-d array holding `value`.
    pub fn scalar(value: impl Into<Scalar>) -> Array {
        let value = value.into();
        Array::new(vec![], vec![], value.dtype(), Expr::Fill(value))
    }

    // ----- elementwise ----------------------------------------------------------------

    fn unary(&self, op: UnaryOp) -> Array {
        if self.error().is_some() {
            return self.clone();
        }
        let dtype = op.result_dtype(self.dtype());
        Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            dtype,
            Expr::Unary(op, self.clone()),
        )
    }

    /// Elementwise `op` with NumPy broadcasting; chunks of `other` are aligned with ours.
    ///
    /// A scalar `other` of arithmetic is "weak", as NumPy 2 takes a Python number: it takes
    /// this array's type when it is of the same kind (`u8` array `+ 1` stays `u8`, `f32`
    /// array `* 0.5` stays `f32`), and is an error when that type cannot hold it.
    pub fn binary(&self, op: BinaryOp, other: impl Into<Operand>) -> Array {
        let other = match other.into() {
            Operand::Scalar(s) => match self.weak_scalar(op, s) {
                Ok(s) => Array::scalar(s),
                Err(invalid) => return invalid,
            },
            Operand::Array(a) => a,
        };
        self.binary_arrays(op, other)
    }

    /// `scalar op self`, the scalar weak as in [`Array::binary`].
    pub(crate) fn scalar_binary(scalar: Scalar, op: BinaryOp, x: &Array) -> Array {
        match x.weak_scalar(op, scalar) {
            Ok(s) => Array::scalar(s).binary_arrays(op, x.clone()),
            Err(invalid) => invalid,
        }
    }

    /// `scalar` as it meets this array in arithmetic `op`: in the type [`DType::with_scalar`]
    /// gives, or an invalid array saying it does not fit. Comparisons and logic take it as
    /// it is (their result is exact either way).
    fn weak_scalar(&self, op: BinaryOp, scalar: Scalar) -> std::result::Result<Scalar, Array> {
        if op.is_comparison() || matches!(op, BinaryOp::And | BinaryOp::Or) {
            return Ok(scalar);
        }
        let target = self.dtype().with_scalar(scalar.dtype());
        scalar.fit(target).ok_or_else(|| {
            Array::invalid(format!(
                "{scalar:?} does not fit in the {} elements of an array it meets in \
                 {op:?}: convert the array first, e.g. .astype(DType::I64)",
                self.dtype()
            ))
        })
    }

    fn binary_arrays(&self, op: BinaryOp, other: Array) -> Array {
        for a in [self, &other] {
            if a.error().is_some() {
                return a.clone();
            }
        }
        let Some(shape) = grid::broadcast(self.shape(), other.shape()) else {
            return Array::invalid(format!(
                "operands of {op:?} have shapes {:?} and {:?}, which do not broadcast",
                self.shape(),
                other.shape()
            ));
        };
        let (a, b, chunks) = unify_chunks(self, &other, &shape);
        let dtype = op.result_dtype(a.dtype(), b.dtype());
        Array::new(shape, chunks, dtype, Expr::Binary(op, a, b))
    }

    /// `self < other`, elementwise.
    pub fn lt(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Lt, other)
    }
    /// `self <= other`, elementwise.
    pub fn le(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Le, other)
    }
    /// `self > other`, elementwise.
    pub fn gt(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Gt, other)
    }
    /// `self >= other`, elementwise.
    pub fn ge(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Ge, other)
    }
    /// `self == other`, elementwise.
    pub fn eq(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Eq, other)
    }
    /// `self != other`, elementwise.
    pub fn ne(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Ne, other)
    }
    /// Logical and of booleans.
    pub fn and(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::And, other)
    }
    /// Logical or of booleans.
    pub fn or(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Or, other)
    }
    /// Logical not.
    pub fn not(&self) -> Array {
        self.unary(UnaryOp::Not)
    }
    /// `x^n`.
    pub fn powi(&self, n: i32) -> Array {
        self.unary(UnaryOp::Powi(n))
    }
    /// `x^p`.
    pub fn powf(&self, p: f64) -> Array {
        self.unary(UnaryOp::Powf(p))
    }
    /// Square root.
    pub fn sqrt(&self) -> Array {
        self.unary(UnaryOp::Sqrt)
    }
    /// `e^x`.
    pub fn exp(&self) -> Array {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn ln(&self) -> Array {
        self.unary(UnaryOp::Ln)
    }
    /// Natural logarithm, under NumPy's name (the same as [`ln`](Self::ln)).
    pub fn log(&self) -> Array {
        self.ln()
    }
    /// Absolute value.
    pub fn abs(&self) -> Array {
        self.unary(UnaryOp::Abs)
    }
    /// Sine.
    pub fn sin(&self) -> Array {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine.
    pub fn cos(&self) -> Array {
        self.unary(UnaryOp::Cos)
    }

    /// Converted to `dtype` (floats to integers truncate toward zero, non-zero is true).
    pub fn astype(&self, dtype: DType) -> Array {
        if self.error().is_some() || self.dtype() == dtype {
            return self.clone();
        }
        Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            dtype,
            Expr::Cast(dtype, self.clone()),
        )
    }

    // ----- reductions -----------------------------------------------------------------

    /// Reduces over `axes` (`None`: all axes; negative axes count from the end), keeping
    /// the reduced axes with length 1 if `keepdims`.
    pub fn reduce(&self, op: ReduceOp, axes: Option<&[isize]>, keepdims: bool) -> Array {
        if self.error().is_some() {
            return self.clone();
        }
        let ndim = self.ndim();
        let mut axes: Vec<usize> = match axes {
            None => (0..ndim).collect(),
            Some(list) => match list.iter().map(|&a| grid::axis(a, ndim)).collect() {
                Ok(axes) => axes,
                Err(message) => return Array::invalid(format!("{}: {message}", op.name())),
            },
        };
        axes.sort_unstable();
        axes.dedup();
        if matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) && axes.len() > 1 && axes.len() < ndim
        {
            return Array::invalid(format!(
                "{} takes one axis or all of them, not {axes:?}",
                op.name()
            ));
        }
        if op.needs_elements() && axes.iter().any(|&a| self.shape()[a] == 0) {
            return Array::invalid(format!(
                "{} over an empty axis of an array of shape {:?} has no value",
                op.name(),
                self.shape()
            ));
        }
        // A reduction of a transpose is the transpose of a reduction: the chunks are read
        // where they lie, never transposed (all-axes arg-reductions excepted, whose flat
        // index depends on the order).
        if let Expr::Transpose(perm, x) = &self.node().expr
            && !(matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) && axes.len() != 1)
        {
            let x_axes: Vec<isize> = axes.iter().map(|&a| perm[a] as isize).collect();
            let reduced = x.reduce(op, Some(&x_axes), keepdims);
            if keepdims {
                return reduced.transpose(perm);
            }
            // The kept axes, in this array's order, as axes of `x`; the reduction of `x`
            // keeps them in increasing order.
            let kept: Vec<usize> = (0..ndim)
                .filter(|a| !axes.contains(a))
                .map(|a| perm[a])
                .collect();
            let mut sorted = kept.clone();
            sorted.sort_unstable();
            let order: Vec<usize> = kept
                .iter()
                .map(|k| sorted.iter().position(|s| s == k).expect("a kept axis"))
                .collect();
            return if order.iter().enumerate().all(|(i, &o)| i == o) {
                reduced
            } else {
                reduced.transpose(&order)
            };
        }
        let mut shape = Vec::new();
        let mut chunks = Vec::new();
        for (axis, (&n, sizes)) in self.shape().iter().zip(self.chunks()).enumerate() {
            if axes.contains(&axis) {
                if keepdims {
                    shape.push(1);
                    chunks.push(vec![1]);
                }
            } else {
                shape.push(n);
                chunks.push(sizes.clone());
            }
        }
        Array::new(
            shape,
            chunks,
            op.result_dtype(self.dtype()),
            Expr::Reduce {
                op,
                axes,
                keepdims,
                x: self.clone(),
            },
        )
    }
}

macro_rules! reductions {
    ($($op:expr => $all:ident, $along:ident, $doc:literal;)*) => {
        impl Array {
            $(
                #[doc = concat!($doc, " over all elements (a 0-d array).")]
                pub fn $all(&self) -> Array {
                    self.reduce($op, None, false)
                }
                #[doc = concat!($doc, " along `axis` (negative counts from the end).")]
                pub fn $along(&self, axis: isize) -> Array {
                    self.reduce($op, Some(&[axis]), false)
                }
            )*
        }
    };
}

reductions! {
    ReduceOp::Sum => sum, sum_axis, "Sum";
    ReduceOp::Prod => prod, prod_axis, "Product (integers and booleans in `i64`, wrapping as NumPy's)";
    ReduceOp::Mean => mean, mean_axis, "Mean";
    ReduceOp::Min => min, min_axis, "Minimum";
    ReduceOp::Max => max, max_axis, "Maximum";
    ReduceOp::Var(0) => var, var_axis, "Variance (ddof 0)";
    ReduceOp::Std(0) => std, std_axis, "Standard deviation (ddof 0)";
    ReduceOp::Any => any, any_axis, "Whether any element is true";
    ReduceOp::All => all, all_axis, "Whether all elements are true";
    ReduceOp::ArgMin => argmin, argmin_axis, "Index of the first minimum";
    ReduceOp::ArgMax => argmax, argmax_axis, "Index of the first maximum";
    ReduceOp::CountNonzero => count_nonzero, count_nonzero_axis, "Number of non-zero elements";
    ReduceOp::NanSum => nansum, nansum_axis, "Sum of the elements that are not NaN (NumPy's `nansum`)";
    ReduceOp::NanMean => nanmean, nanmean_axis, "Mean of the elements that are not NaN (`nanmean`)";
    ReduceOp::NanMin => nanmin, nanmin_axis, "Minimum of the elements that are not NaN (`nanmin`)";
    ReduceOp::NanMax => nanmax, nanmax_axis, "Maximum of the elements that are not NaN (`nanmax`)";
    ReduceOp::NanVar(0) => nanvar, nanvar_axis, "Variance (ddof 0) of the elements that are not NaN";
    ReduceOp::NanStd(0) => nanstd, nanstd_axis, "Standard deviation (ddof 0) of the elements that are not NaN";
}

/// Aligns the chunks of `a` and `b` for an elementwise operation with output `shape`:
/// along an axis both have at full length, `b` is rechunked to `a`'s chunks if they differ.
fn unify_chunks(a: &Array, b: &Array, shape: &[usize]) -> (Array, Array, Chunks) {
    let n = shape.len();
    fn chunks_of<'x>(x: &'x Array, axis: usize, shape: &[usize]) -> Option<&'x Vec<usize>> {
        let skip = shape.len() - x.ndim();
        (axis >= skip && x.shape()[axis - skip] == shape[axis] && shape[axis] != 1)
            .then(|| &x.chunks()[axis - skip])
    }
    let mut out = Vec::with_capacity(n);
    let mut b_chunks = b.chunks().clone();
    let mut rechunk_b = false;
    for axis in 0..n {
        match (chunks_of(a, axis, shape), chunks_of(b, axis, shape)) {
            (Some(ca), Some(cb)) => {
                if ca != cb {
                    b_chunks[axis - (n - b.ndim())] = ca.clone();
                    rechunk_b = true;
                }
                out.push(ca.clone());
            }
            (Some(c), None) | (None, Some(c)) => out.push(c.clone()),
            (None, None) => out.push(vec![shape[axis]]),
        }
    }
    let b = if rechunk_b {
        b.rechunk_to(b_chunks)
    } else {
        b.clone()
    };
    (a.clone(), b, out)
}

/// `cond ? a : b`, elementwise with broadcasting.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let x = array::arange(-2.0, 3.0, 1.0, 2); // [-2, -1, 0, 1, 2]
///     let relu = array::where_(&x.gt(0.0), &x, 0.0);
///     assert_eq!(relu.compute::<f64>(client).unwrap().as_slice().unwrap(), &[0.0, 0.0, 0.0, 1.0, 2.0]);
/// });
/// ```
pub fn where_(cond: &Array, a: impl Into<Operand>, b: impl Into<Operand>) -> Array {
    let a = a.into().into_array();
    let b = b.into().into_array();
    for x in [cond, &a, &b] {
        if x.error().is_some() {
            return x.clone();
        }
    }
    let Some(shape) =
        grid::broadcast(cond.shape(), a.shape()).and_then(|s| grid::broadcast(&s, b.shape()))
    else {
        return Array::invalid(format!(
            "where: shapes {:?}, {:?} and {:?} do not broadcast",
            cond.shape(),
            a.shape(),
            b.shape()
        ));
    };
    // Align every operand's chunks with the condition's (or the first with the full shape).
    let template = [cond, &a, &b]
        .into_iter()
        .find(|x| x.shape() == shape.as_slice())
        .cloned()
        .unwrap_or_else(|| cond.clone());
    let (_, cond, _) = unify_chunks(&template, cond, &shape);
    let (_, a, _) = unify_chunks(&template, &a, &shape);
    let (_, b, chunks) = unify_chunks(&template, &b, &shape);
    let dtype = a.dtype().promote(b.dtype());
    Array::new(shape, chunks, dtype, Expr::Where(cond, a, b))
}

// ----- constructors ----------------------------------------------------------------------

fn constructor(shape: &[usize], chunks: &[usize], dtype: DType, expr: Expr) -> Array {
    match grid::regular(shape, chunks) {
        Ok(chunks) => Array::new(shape.to_vec(), chunks, dtype, expr),
        Err(message) => Array::invalid(message),
    }
}

/// An array of `shape` cut into chunks of `chunks`, every element `value`.
pub fn full(shape: &[usize], chunks: &[usize], value: impl Into<Scalar>) -> Array {
    let value = value.into();
    constructor(shape, chunks, value.dtype(), Expr::Fill(value))
}

/// Zeros (`f64`).
pub fn zeros(shape: &[usize], chunks: &[usize]) -> Array {
    full(shape, chunks, 0.0)
}

/// Ones (`f64`).
pub fn ones(shape: &[usize], chunks: &[usize]) -> Array {
    full(shape, chunks, 1.0)
}

/// `start, start + step, ...` below `stop` (`f64`, 1-D), like `numpy.arange`.
pub fn arange(start: f64, stop: f64, step: f64, chunk: usize) -> Array {
    if step == 0.0 || !step.is_finite() {
        return Array::invalid(format!("arange: step {step} must be finite and non-zero"));
    }
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    constructor(&[n], &[chunk], DType::F64, Expr::Arange { start, step })
}

/// `num` values evenly spaced from `start` to `stop` inclusive (`f64`, 1-D).
pub fn linspace(start: f64, stop: f64, num: usize, chunk: usize) -> Array {
    let step = if num > 1 {
        (stop - start) / (num - 1) as f64
    } else {
        0.0
    };
    constructor(&[num], &[chunk], DType::F64, Expr::Arange { start, step })
}

/// An array from an `ndarray` array on the client, cut into chunks of `chunks`. The data
/// travels inside the tasks that read it.
///
/// ```
/// use mpidask::array;
/// let a = ndarray::Array2::from_shape_fn((4, 6), |(i, j)| (10 * i + j) as f64).into_dyn();
/// let x = array::from_array(&a, &[3, 4]); // 2 x 2 chunks, the last ones smaller
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let column_sums = x.sum_axis(0).compute::<f64>(client).unwrap();
///     assert_eq!(column_sums.as_slice().unwrap(), &[60.0, 64.0, 68.0, 72.0, 76.0, 80.0]);
/// });
/// ```
pub fn from_array<T: Element>(array: &ArrayD<T>, chunks: &[usize]) -> Array {
    let block = block_of(array.clone());
    constructor(
        array.shape(),
        chunks,
        T::DTYPE,
        Expr::Literal(Arc::new(block)),
    )
}

pub(crate) fn block_of<T: Element>(array: ArrayD<T>) -> Block {
    let any: Box<dyn std::any::Any> = Box::new(array);
    match T::DTYPE {
        DType::Bool => Block::Bool(*any.downcast().expect("bool")),
        DType::U8 => Block::U8(*any.downcast().expect("u8")),
        DType::I32 => Block::I32(*any.downcast().expect("i32")),
        DType::I64 => Block::I64(*any.downcast().expect("i64")),
        DType::F32 => Block::F32(*any.downcast().expect("f32")),
        DType::F64 => Block::F64(*any.downcast().expect("f64")),
    }
}

// ----- results ---------------------------------------------------------------------------

impl Array {
    /// Computes the array and returns it as an `ndarray` array on the client. `T` must be
    /// the array's element type (use [`Array::astype`] first otherwise).
    ///
    /// ```
    /// use mpidask::array;
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 6.0, 1.0, 4); // [0, 1, 2, 3, 4, 5] in chunks of 4
    ///     let y = (&x * 2.0 + 1.0).compute::<f64>(client).unwrap();
    ///     assert_eq!(y.as_slice().unwrap(), &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0]);
    /// });
    /// ```
    pub fn compute<T: Element>(&self, client: &Client) -> Result<ArrayD<T>> {
        self.check()?;
        if T::DTYPE != self.dtype() {
            return Err(Error::Config(format!(
                "compute::<{}>() of an array of {}: convert with .astype(DType::{:?}) first",
                T::DTYPE,
                self.dtype(),
                T::DTYPE
            )));
        }
        let futures = lower::materialize(client, self)?;
        let chunks: Vec<ArrayD<T>> = client.gather(&typed(&futures))?;
        lower::assemble(self.shape(), self.chunks(), chunks)
    }

    /// [`compute`](Self::compute) showing the progress of the whole task graph (see
    /// [`Client::with_progress`]).
    pub fn compute_with_progress<T: Element>(&self, client: &Client) -> Result<ArrayD<T>> {
        client.with_progress(|| self.compute(client))
    }

    /// Computes a 0-d (or one-element) array and returns its value.
    pub fn compute_scalar<T: Element>(&self, client: &Client) -> Result<T> {
        let value = self.compute::<T>(client)?;
        value.iter().next().copied().ok_or_else(|| {
            Error::Config(format!(
                "compute_scalar of an array of shape {:?}, which has no single value",
                self.shape()
            ))
        })
    }

    /// Computes the chunks and keeps them on the workers; the result reads them from there.
    ///
    /// ```
    /// use mpidask::array::random;
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = random::uniform(0.0, 1.0, &[1000, 1000], &[250, 250], 7)
    ///         .persist(client) // generated once, kept on the workers
    ///         .unwrap();
    ///     let (mean, max) = (x.mean(), x.max()); // both read the kept chunks
    ///     assert!((mean.compute_scalar::<f64>(client).unwrap() - 0.5).abs() < 0.01);
    ///     assert!(max.compute_scalar::<f64>(client).unwrap() < 1.0);
    /// });
    /// ```
    pub fn persist(&self, client: &Client) -> Result<Array> {
        self.check()?;
        let futures = lower::materialize(client, self)?;
        Ok(Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            self.dtype(),
            Expr::Stored(futures),
        ))
    }

    /// The futures of the chunks (C order over the chunk grid), computing them.
    pub fn to_futures<T: Element>(&self, client: &Client) -> Result<Vec<Future<ArrayD<T>>>> {
        self.check()?;
        if T::DTYPE != self.dtype() {
            return Err(Error::Config(format!(
                "to_futures::<{}>() of an array of {}",
                T::DTYPE,
                self.dtype()
            )));
        }
        Ok(lower::materialize(client, self)?
            .into_iter()
            .map(Future::retype)
            .collect())
    }

    /// The program each chunk's task runs for `self.reduce(op, None, _)`: the chunk's fused
    /// computation ending in the first stage of the reduction. For benchmarks that run the
    /// same kernel outside the runtime; only for arrays without input chunks.
    pub fn partial_program(&self, op: ReduceOp, index: &[usize]) -> Result<program::Program> {
        self.check()?;
        self.check_chunk_index(index)?;
        lower::partial_program(self, op, index)
    }

    fn check_chunk_index(&self, index: &[usize]) -> Result<()> {
        let grid = grid::grid(self.chunks());
        if index.len() != grid.len() || index.iter().zip(&grid).any(|(i, n)| i >= n) {
            return Err(Error::Config(format!(
                "chunk index {index:?} is outside the chunk grid {grid:?} of this array"
            )));
        }
        Ok(())
    }

    /// The task graph the array would run: how many tasks of each kind, the bytes they
    /// read from other tasks, and what one fused task of each kind does.
    pub fn explain(&self) -> String {
        match self.check() {
            Err(e) => format!("invalid array: {e}"),
            Ok(()) => lower::explain(self),
        }
    }

    /// The numbers of [`Array::explain`]: tasks, and the bytes they read from other tasks.
    pub fn graph_summary(&self) -> Result<GraphSummary> {
        self.check()?;
        lower::summary(self)
    }
}

/// How many tasks an array's graph runs and what they read ([`Array::graph_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphSummary {
    /// Tasks.
    pub tasks: usize,
    /// Bytes the tasks read from other tasks (chunks, reduction states).
    pub read_bytes: u64,
    /// Of those, the bytes that cross between workers when every task runs where its
    /// largest input lies (the scheduler's rule): an upper bound.
    pub moved_bytes: u64,
}

/// An array made of chunk futures (C order over `chunks`), e.g. from delayed tasks.
pub fn from_futures<T: Element>(
    futures: Vec<Future<ArrayD<T>>>,
    shape: &[usize],
    chunks: &[usize],
) -> Array {
    let grid = match grid::regular(shape, chunks) {
        Ok(grid) => grid,
        Err(message) => return Array::invalid(message),
    };
    if futures.len() != grid::count(&grid) {
        return Array::invalid(format!(
            "{} futures for {} chunks of shape {shape:?} in chunks of {chunks:?}",
            futures.len(),
            grid::count(&grid)
        ));
    }
    Array::new(
        shape.to_vec(),
        grid,
        T::DTYPE,
        Expr::Stored(futures.into_iter().map(Future::erase).collect()),
    )
}

/// A 1-D or n-D array made of chunk futures with the given (possibly uneven) chunk sizes
/// per axis, C order over the grid: how a bag becomes an array.
pub(crate) fn from_chunk_futures<T: Element>(
    futures: Vec<Future<ArrayD<T>>>,
    chunks: Chunks,
) -> Array {
    debug_assert_eq!(futures.len(), grid::count(&chunks));
    let shape = chunks.iter().map(|sizes| sizes.iter().sum()).collect();
    Array::new(
        shape,
        chunks,
        T::DTYPE,
        Expr::Stored(futures.into_iter().map(Future::erase).collect()),
    )
}

/// An array made of chunks computed by delayed calls (C order over `chunks`).
pub fn from_delayed<T: Element>(
    parts: Vec<crate::collections::delayed::Delayed<ArrayD<T>>>,
    shape: &[usize],
    chunks: &[usize],
) -> Array {
    let grid = match grid::regular(shape, chunks) {
        Ok(grid) => grid,
        Err(message) => return Array::invalid(message),
    };
    if parts.len() != grid::count(&grid) {
        return Array::invalid(format!(
            "{} delayed chunks for {} chunks of shape {shape:?} in chunks of {chunks:?}",
            parts.len(),
            grid::count(&grid)
        ));
    }
    let nodes = parts.iter().map(|d| d.node().clone()).collect();
    Array::new(shape.to_vec(), grid, T::DTYPE, Expr::FromDelayed(nodes))
}

/// An array made of chunks computed by delayed calls, C order over `chunks` (possibly
/// uneven sizes per axis; none for a 0-d array).
pub(crate) fn from_delayed_chunks<T: Element>(
    parts: &[crate::collections::delayed::Delayed<ArrayD<T>>],
    chunks: Chunks,
) -> Array {
    debug_assert_eq!(parts.len(), grid::count(&chunks));
    let shape = chunks.iter().map(|sizes| sizes.iter().sum()).collect();
    let nodes = parts.iter().map(|d| d.node().clone()).collect();
    Array::new(shape, chunks, T::DTYPE, Expr::FromDelayed(nodes))
}

/// One chunk of an array as a delayed value's source: computed when a session needs it.
struct ChunkOf {
    array: Array,
    index: Vec<usize>,
}

impl crate::collections::delayed::Source for ChunkOf {
    fn submit(&self, session: &mut crate::collections::delayed::Session<'_>) -> Result<Future<()>> {
        self.array.check()?;
        self.array.check_chunk_index(&self.index)?;
        lower::materialize_chunk_in(session, &self.array, &self.index)
    }

    fn describe(&self) -> String {
        format!("array chunk {:?}", self.index)
    }
}

impl Array {
    /// The chunks as delayed values (C order over the chunk grid), to pass to delayed calls.
    pub fn to_delayed<T: Element>(&self) -> Vec<crate::collections::delayed::Delayed<ArrayD<T>>> {
        grid::indices(self.chunks())
            .map(|index| {
                crate::collections::delayed::Delayed::from_source(ChunkOf {
                    array: self.clone(),
                    index,
                })
            })
            .collect()
    }
}

fn typed<T>(futures: &[Future<()>]) -> Vec<Future<T>> {
    futures.iter().cloned().map(Future::retype).collect()
}

// ----- operators -------------------------------------------------------------------------

macro_rules! operators {
    ($($trait:ident, $method:ident, $op:expr;)*) => {$(
        impl<T: Into<Operand>> std::ops::$trait<T> for &Array {
            type Output = Array;
            fn $method(self, rhs: T) -> Array {
                self.binary($op, rhs)
            }
        }
        impl<T: Into<Operand>> std::ops::$trait<T> for Array {
            type Output = Array;
            fn $method(self, rhs: T) -> Array {
                self.binary($op, rhs)
            }
        }
        impl std::ops::$trait<&Array> for f64 {
            type Output = Array;
            fn $method(self, rhs: &Array) -> Array {
                Array::scalar_binary(self.into(), $op, rhs)
            }
        }
        impl std::ops::$trait<Array> for f64 {
            type Output = Array;
            fn $method(self, rhs: Array) -> Array {
                Array::scalar_binary(self.into(), $op, &rhs)
            }
        }
    )*};
}

operators! {
    Add, add, BinaryOp::Add;
    Sub, sub, BinaryOp::Sub;
    Mul, mul, BinaryOp::Mul;
    Div, div, BinaryOp::Div;
    Rem, rem, BinaryOp::Rem;
}

impl std::ops::Neg for &Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnaryOp::Neg)
    }
}

impl std::ops::Neg for Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnaryOp::Neg)
    }
}
