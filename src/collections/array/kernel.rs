//! The worker side of arrays: typed chunk values ([`Block`]), elementwise operations with
//! broadcasting, reduction states ([`Partial`]) and the evaluation of fused programs.

use super::dtype::{DType, Scalar};
use super::program::{
    AxisSlice, BinaryOp, Distribution, Op, Output, Program, ReduceOp, ScanOp, UnaryOp,
};
use super::random;
use super::ufunc::FloorInt;
use crate::protocol::{Bytes, decode_value, encode_value};
use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Elements per block when a program streams: a handful of blocks of this size stay in
/// the L2 cache.
pub const BLOCK_ELEMENTS: usize = 16384;

/// A typed chunk (or block of rows of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Block {
    /// Booleans.
    Bool(ArrayD<bool>),
    /// Bytes (unsigned 8-bit integers).
    U8(ArrayD<u8>),
    /// 32-bit integers.
    I32(ArrayD<i32>),
    /// 64-bit integers.
    I64(ArrayD<i64>),
    /// 32-bit floats.
    F32(ArrayD<f32>),
    /// 64-bit floats.
    F64(ArrayD<f64>),
}

macro_rules! each {
    ($block:expr, $a:ident => $body:expr) => {
        match $block {
            Block::Bool($a) => Block::Bool($body),
            Block::U8($a) => Block::U8($body),
            Block::I32($a) => Block::I32($body),
            Block::I64($a) => Block::I64($body),
            Block::F32($a) => Block::F32($body),
            Block::F64($a) => Block::F64($body),
        }
    };
}

macro_rules! each_ref {
    ($block:expr, $a:ident => $body:expr) => {
        match $block {
            Block::Bool($a) => $body,
            Block::U8($a) => $body,
            Block::I32($a) => $body,
            Block::I64($a) => $body,
            Block::F32($a) => $body,
            Block::F64($a) => $body,
        }
    };
}

/// `$body` over two blocks of the same element type (`$x`, `$y` their arrays), wrapped
/// back into that type by `$wrap` (`same`: the type itself; `keep`: `$body` as it is);
/// `$other` when the types differ.
macro_rules! each_pair {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr, else $other:expr) => {
        match ($a, $b) {
            (Block::Bool($x), Block::Bool($y)) => Block::Bool($body),
            (Block::U8($x), Block::U8($y)) => Block::U8($body),
            (Block::I32($x), Block::I32($y)) => Block::I32($body),
            (Block::I64($x), Block::I64($y)) => Block::I64($body),
            (Block::F32($x), Block::F32($y)) => Block::F32($body),
            (Block::F64($x), Block::F64($y)) => Block::F64($body),
            _ => $other,
        }
    };
    (keep $a:expr, $b:expr, $x:ident, $y:ident => $body:expr, else $other:expr) => {
        match ($a, $b) {
            (Block::Bool($x), Block::Bool($y)) => $body,
            (Block::U8($x), Block::U8($y)) => $body,
            (Block::I32($x), Block::I32($y)) => $body,
            (Block::I64($x), Block::I64($y)) => $body,
            (Block::F32($x), Block::F32($y)) => $body,
            (Block::F64($x), Block::F64($y)) => $body,
            _ => $other,
        }
    };
}

/// Conversions between element types as NumPy's `astype` makes them: integers wrap,
/// floats truncate toward zero (saturating), non-zero is true.
trait Convert: Copy {
    const FLOAT: bool;
    fn to_i64(self) -> i64;
    fn to_f64(self) -> f64;
    fn from_i64(v: i64) -> Self;
    fn from_f64(v: f64) -> Self;
    /// `self` converted to `U`.
    fn convert<U: Convert>(self) -> U {
        if Self::FLOAT {
            U::from_f64(self.to_f64())
        } else {
            U::from_i64(self.to_i64())
        }
    }
}

macro_rules! convert_number {
    ($($t:ty: $float:expr),*) => {$(
        impl Convert for $t {
            const FLOAT: bool = $float;
            fn to_i64(self) -> i64 { self as i64 }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_i64(v: i64) -> Self { v as $t }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}
convert_number!(u8: false, i32: false, i64: false, f32: true, f64: true);

impl Convert for bool {
    const FLOAT: bool = false;
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

/// `a`'s elements converted to `U` (to `bool`: non-zero is true, a float's fraction
/// counting, since a float converts through `f64`).
fn convert_all<T: Convert, U: Convert>(a: &ArrayD<T>) -> ArrayD<U> {
    a.mapv(Convert::convert)
}

/// The version byte `ndarray` writes first when it serialises an array.
const NDARRAY_FORMAT_VERSION: u8 = 1;

/// What the codec makes of an `ArrayD<T>` through serde (version, shape, element count,
/// then the elements, a float being its little-endian bytes), produced with the elements
/// copied as one block instead of one at a time.
fn encode_raw<T: bytemuck::Pod + Serialize>(array: &ArrayD<T>) -> bincode::Result<Bytes> {
    const {
        assert!(
            cfg!(target_endian = "little"),
            "the raw path writes native floats"
        )
    };
    let array = array.as_standard_layout();
    let elements: &[T] = array.as_slice().expect("standard layout is contiguous");
    let head = raw_header(array.shape(), elements.len());
    let raw: &[u8] = bytemuck::cast_slice(elements);
    // The elements start on a cache line, where the tile loops read them in place.
    let mut bytes = Bytes::aligned_after(head.len(), head.len() + raw.len());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(raw);
    Ok(bytes)
}

/// What [`encode_raw`] writes before the elements of an array of `shape` with `count`
/// elements.
pub(super) fn raw_header(shape: &[usize], count: usize) -> Vec<u8> {
    bincode::Options::serialize(
        crate::protocol::codec(),
        &(NDARRAY_FORMAT_VERSION, shape, count as u64),
    )
    .expect("a header of integers serialises")
}

/// The shape and the elements' bytes of an encoded `f64` array, read in place.
pub fn raw_f64(bytes: &[u8]) -> bincode::Result<(Vec<usize>, &[u8])> {
    raw_parts::<f64>(bytes)
}

/// The shape and the elements' bytes of what [`encode_raw`] (or serde) wrote for an array
/// of `T`, checked: the format version, and a shape that matches the elements.
fn raw_parts<T: bytemuck::Pod>(bytes: &[u8]) -> bincode::Result<(Vec<usize>, &[u8])> {
    let mut reader = bytes;
    let (version, shape, count): (u8, Vec<usize>, u64) =
        bincode::Options::deserialize_from(crate::protocol::codec(), &mut reader)?;
    if version != NDARRAY_FORMAT_VERSION {
        return Err(malformed("unknown format version"));
    }
    let expected = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if expected != Some(count as usize)
        || (count as usize).checked_mul(std::mem::size_of::<T>()) != Some(reader.len())
    {
        return Err(malformed("the shape does not match the elements"));
    }
    Ok((shape, reader))
}

/// The encoding [`Block::encode`] gives an `f32`, `f64` or `u8` block of `shape` whose
/// elements (native order, `size` bytes each) are `raw`: one copy, no array made.
#[cfg(feature = "zarr")]
pub(crate) fn encode_raw_bytes(shape: &[usize], size: usize, raw: &[u8]) -> Bytes {
    let count: usize = shape.iter().product();
    debug_assert_eq!(raw.len(), count * size);
    let head = raw_header(shape, count);
    let mut bytes = Bytes::aligned_after(head.len(), head.len() + raw.len());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(raw);
    bytes
}

/// The shape and the element bytes (native order) of an encoded `f32`, `f64` or `u8`
/// block, read in place without decoding it; `None` for the other element types.
#[cfg(feature = "zarr")]
pub(crate) fn raw_elements(
    bytes: &[u8],
    dtype: DType,
) -> Option<bincode::Result<(Vec<usize>, &[u8])>> {
    match dtype {
        DType::F64 => Some(raw_parts::<f64>(bytes)),
        DType::F32 => Some(raw_parts::<f32>(bytes)),
        DType::U8 => Some(raw_parts::<u8>(bytes)),
        DType::I32 | DType::I64 | DType::Bool => None,
    }
}

fn malformed(what: &str) -> Box<bincode::ErrorKind> {
    Box::new(bincode::ErrorKind::Custom(format!(
        "malformed array: {what}"
    )))
}

/// Reads what [`encode_raw`] (or serde) wrote, copying the elements as one block.
fn decode_raw<T: bytemuck::Pod>(bytes: &[u8]) -> bincode::Result<ArrayD<T>> {
    let (shape, reader) = raw_parts::<T>(bytes)?;
    let elements: Vec<T> = bytemuck::pod_collect_to_vec(reader);
    ArrayD::from_shape_vec(IxDyn(&shape), elements).map_err(|e| malformed(&e.to_string()))
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    super::grid::broadcast(a, b).ok_or_else(|| format!("shapes {a:?} and {b:?} do not broadcast"))
}

/// `f` over `a` and `b` broadcast to a common shape.
fn zip_map<A: Copy, B: Copy, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> C,
) -> Result<ArrayD<C>, String> {
    // With one operand a single value, a plain map over the other (contiguous) is much
    // faster than a broadcasting zip.
    if b.len() == 1 && b.ndim() <= a.ndim() {
        let y = *b.iter().next().expect("one element");
        return Ok(a.mapv(|x| f(x, y)));
    }
    if a.len() == 1 && a.ndim() <= b.ndim() {
        let x = *a.iter().next().expect("one element");
        return Ok(b.mapv(|y| f(x, y)));
    }
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = a.broadcast(IxDyn(&shape)).expect("broadcastable");
    let bv = b.broadcast(IxDyn(&shape)).expect("broadcastable");
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

/// Float operations used by unary ops.
pub(super) trait Float: Copy + PartialOrd {
    /// `op` applied to one value; call through [`map_float`], which picks the operation
    /// outside the loop.
    fn map(self, op: UnaryOp) -> Self;
}

impl Float for f64 {
    fn map(self, op: UnaryOp) -> f64 {
        super::ufunc::unary_f64(op, self)
    }
}

impl Float for f32 {
    fn map(self, op: UnaryOp) -> f32 {
        super::ufunc::unary_f32(op, self)
    }
}

/// A float operation over an array, with the operation chosen once, outside the loop.
fn map_float<T: Float>(a: &ArrayD<T>, op: UnaryOp) -> ArrayD<T> {
    match op {
        UnaryOp::Powi(2) => a.mapv(|v| v.map(UnaryOp::Powi(2))),
        UnaryOp::Neg => a.mapv(|v| v.map(UnaryOp::Neg)),
        UnaryOp::Abs => a.mapv(|v| v.map(UnaryOp::Abs)),
        UnaryOp::Sqrt => a.mapv(|v| v.map(UnaryOp::Sqrt)),
        UnaryOp::Exp => a.mapv(|v| v.map(UnaryOp::Exp)),
        UnaryOp::Ln => a.mapv(|v| v.map(UnaryOp::Ln)),
        UnaryOp::Sin => a.mapv(|v| v.map(UnaryOp::Sin)),
        UnaryOp::Cos => a.mapv(|v| v.map(UnaryOp::Cos)),
        op => a.mapv(|v| v.map(op)),
    }
}

/// A comparison over two arrays, with the operator chosen once, outside the loop.
fn compare<T: PartialOrd + Copy>(
    op: BinaryOp,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
) -> Result<ArrayD<bool>, String> {
    match op {
        BinaryOp::Lt => zip_map(x, y, |p, q| p < q),
        BinaryOp::Le => zip_map(x, y, |p, q| p <= q),
        BinaryOp::Gt => zip_map(x, y, |p, q| p > q),
        BinaryOp::Ge => zip_map(x, y, |p, q| p >= q),
        BinaryOp::Eq => zip_map(x, y, |p, q| p == q),
        _ => zip_map(x, y, |p, q| p != q),
    }
}

impl Block {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Block::Bool(_) => DType::Bool,
            Block::U8(_) => DType::U8,
            Block::I32(_) => DType::I32,
            Block::I64(_) => DType::I64,
            Block::F32(_) => DType::F32,
            Block::F64(_) => DType::F64,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        each_ref!(self, a => a.shape())
    }

    /// A block of `shape` with every element `value`.
    pub fn full(value: Scalar, shape: &[usize]) -> Block {
        let shape = IxDyn(shape);
        match value {
            Scalar::Bool(v) => Block::Bool(ArrayD::from_elem(shape, v)),
            Scalar::U8(v) => Block::U8(ArrayD::from_elem(shape, v)),
            Scalar::I32(v) => Block::I32(ArrayD::from_elem(shape, v)),
            Scalar::I64(v) => Block::I64(ArrayD::from_elem(shape, v)),
            Scalar::F32(v) => Block::F32(ArrayD::from_elem(shape, v)),
            Scalar::F64(v) => Block::F64(ArrayD::from_elem(shape, v)),
        }
    }

    /// The encoding of the inner `ndarray` array (what tasks taking `ArrayD<T>` decode).
    /// Float and byte elements are copied as one block of raw bytes, placed on a cache
    /// line (bincode writes those as they lie in memory; other integers are varints).
    pub fn encode(&self) -> bincode::Result<Bytes> {
        match self {
            Block::F64(a) => encode_raw(a),
            Block::F32(a) => encode_raw(a),
            Block::U8(a) => encode_raw(a),
            Block::I32(a) => encode_value(&a.as_standard_layout()).map(Bytes::from),
            Block::Bool(a) => encode_value(&a.as_standard_layout()).map(Bytes::from),
            Block::I64(a) => encode_value(&a.as_standard_layout()).map(Bytes::from),
        }
    }

    /// Decodes an encoded `ArrayD` of element type `dtype`.
    pub fn decode(bytes: &[u8], dtype: DType) -> bincode::Result<Block> {
        Ok(match dtype {
            DType::Bool => Block::Bool(decode_value(bytes)?),
            DType::U8 => Block::U8(decode_raw(bytes)?),
            DType::I32 => Block::I32(decode_value(bytes)?),
            DType::I64 => Block::I64(decode_value(bytes)?),
            DType::F32 => Block::F32(decode_raw(bytes)?),
            DType::F64 => Block::F64(decode_raw(bytes)?),
        })
    }

    /// Converted to `dtype` (floats to integers truncate, non-zero is true).
    pub fn cast(self, dtype: DType) -> Block {
        if self.dtype() == dtype {
            return self;
        }
        each_ref!(&self, a => match dtype {
            DType::Bool => Block::Bool(convert_all(a)),
            DType::U8 => Block::U8(convert_all(a)),
            DType::I32 => Block::I32(convert_all(a)),
            DType::I64 => Block::I64(convert_all(a)),
            DType::F32 => Block::F32(convert_all(a)),
            DType::F64 => Block::F64(convert_all(a)),
        })
    }

    /// Rows `start..end` along axis 0 (a copy).
    pub fn rows(&self, start: usize, end: usize) -> Block {
        each!(self, a => a.slice_axis(Axis(0), Slice::from(start..end)).to_owned())
    }

    /// Converted to `dtype`, borrowing when it already has that type.
    pub fn cast_ref(&self, dtype: DType) -> Cow<'_, Block> {
        if self.dtype() == dtype {
            Cow::Borrowed(self)
        } else {
            Cow::Owned(self.clone().cast(dtype))
        }
    }

    /// An elementwise operation of one operand.
    pub fn unary(&self, op: UnaryOp) -> Block {
        if matches!(op, UnaryOp::Not) {
            return Block::Bool(self.cast_ref(DType::Bool).as_bool().mapv(|v| !v));
        }
        if op.is_predicate() {
            return Block::Bool(match self {
                Block::F32(a) => a.mapv(|v| v.map(op) != 0.0),
                Block::F64(a) => a.mapv(|v| v.map(op) != 0.0),
                // Integers are finite numbers.
                other => ArrayD::from_elem(IxDyn(other.shape()), op == UnaryOp::IsFinite),
            });
        }
        let target = op.result_dtype(self.dtype());
        macro_rules! integer {
            ($a:expr, $abs:expr, $t:ty) => {
                match op {
                    UnaryOp::Neg => $a.mapv(|v| v.wrapping_neg()),
                    UnaryOp::Abs => $a.mapv($abs),
                    UnaryOp::Powi(n) => $a.mapv(|v| v.wrapping_pow(n.max(0) as u32)),
                    UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Trunc => $a.clone(),
                    UnaryOp::Round(d) if d >= 0 => $a.clone(),
                    // The rounded value fits: it is nearer zero than the type's limit, or
                    // wraps as NumPy's does.
                    UnaryOp::Round(d) => {
                        $a.mapv(|v| super::ufunc::round_int(i64::from(v), d) as $t)
                    }
                    UnaryOp::Sign => $a.mapv(FloorInt::sign),
                    _ => unreachable!("integer results only from operations that keep them"),
                }
            };
        }
        match self.cast_ref(target).as_ref() {
            Block::U8(a) => Block::U8(integer!(a, |v| v, u8)),
            Block::I32(a) => Block::I32(integer!(a, i32::wrapping_abs, i32)),
            Block::I64(a) => Block::I64(integer!(a, i64::wrapping_abs, i64)),
            Block::F32(a) => Block::F32(map_float(a, op)),
            Block::F64(a) => Block::F64(map_float(a, op)),
            Block::Bool(_) => unreachable!("boolean results only from not"),
        }
    }

    fn as_bool(&self) -> &ArrayD<bool> {
        match self {
            Block::Bool(a) => a,
            _ => panic!("not a boolean block"),
        }
    }

    /// An elementwise operation of two operands, with NumPy broadcasting.
    pub fn binary(op: BinaryOp, a: &Block, b: &Block) -> Result<Block, String> {
        let common = a.dtype().promote(b.dtype());
        if op.is_comparison() {
            let (a, b) = (a.cast_ref(common), b.cast_ref(common));
            return Ok(Block::Bool(each_pair!(keep a.as_ref(), b.as_ref(), x, y =>
                compare(op, x, y)?, else unreachable!("cast to a common type"))));
        }
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let (x, y) = (a.cast_ref(DType::Bool), b.cast_ref(DType::Bool));
            let (x, y) = (x.as_bool(), y.as_bool());
            return Ok(Block::Bool(if op == BinaryOp::And {
                zip_map(x, y, |p, q| p && q)?
            } else {
                zip_map(x, y, |p, q| p || q)?
            }));
        }
        let target = op.result_dtype(a.dtype(), b.dtype());
        let (a, b) = (a.cast_ref(target), b.cast_ref(target));
        macro_rules! integer {
            ($x:expr, $y:expr) => {
                match op {
                    BinaryOp::Add => zip_map($x, $y, |p, q| p.wrapping_add(q))?,
                    BinaryOp::Sub => zip_map($x, $y, |p, q| p.wrapping_sub(q))?,
                    BinaryOp::Mul => zip_map($x, $y, |p, q| p.wrapping_mul(q))?,
                    BinaryOp::Maximum => zip_map($x, $y, |p, q| p.max(q))?,
                    BinaryOp::Minimum => zip_map($x, $y, |p, q| p.min(q))?,
                    BinaryOp::Rem => zip_map($x, $y, |p, q| p.py_rem(q))?,
                    BinaryOp::FloorDiv => zip_map($x, $y, |p, q| p.py_div(q))?,
                    _ => unreachable!("integer results only from operations that keep them"),
                }
            };
        }
        // Floats: the operation chosen once for the common four, per element otherwise.
        macro_rules! float {
            ($x:expr, $y:expr, $apply:path) => {
                match op {
                    BinaryOp::Add => zip_map($x, $y, |p, q| p + q)?,
                    BinaryOp::Sub => zip_map($x, $y, |p, q| p - q)?,
                    BinaryOp::Mul => zip_map($x, $y, |p, q| p * q)?,
                    BinaryOp::Div => zip_map($x, $y, |p, q| p / q)?,
                    op => zip_map($x, $y, |p, q| $apply(op, p, q))?,
                }
            };
        }
        Ok(match (a.as_ref(), b.as_ref()) {
            (Block::Bool(x), Block::Bool(y)) => Block::Bool(match op {
                BinaryOp::Maximum => zip_map(x, y, |p, q| p | q)?,
                BinaryOp::Minimum => zip_map(x, y, |p, q| p & q)?,
                _ => unreachable!("booleans result only from maximum and minimum"),
            }),
            (Block::U8(x), Block::U8(y)) => Block::U8(integer!(x, y)),
            (Block::I32(x), Block::I32(y)) => Block::I32(integer!(x, y)),
            (Block::I64(x), Block::I64(y)) => Block::I64(integer!(x, y)),
            (Block::F32(x), Block::F32(y)) => Block::F32(float!(x, y, super::ufunc::binary_f32)),
            (Block::F64(x), Block::F64(y)) => Block::F64(float!(x, y, super::ufunc::binary_f64)),
            _ => unreachable!("arithmetic on a common numeric type"),
        })
    }

    /// `cond ? a : b` with broadcasting of all three.
    pub fn select(cond: &Block, a: &Block, b: &Block) -> Result<Block, String> {
        let cond = cond.cast_ref(DType::Bool);
        let cond = cond.as_bool();
        let common = a.dtype().promote(b.dtype());
        let shape = broadcast_shape(&broadcast_shape(cond.shape(), a.shape())?, b.shape())?;
        let c = cond.broadcast(IxDyn(&shape)).expect("broadcastable");
        macro_rules! pick {
            ($x:expr, $y:expr) => {{
                let xv = $x.broadcast(IxDyn(&shape)).expect("broadcastable");
                let yv = $y.broadcast(IxDyn(&shape)).expect("broadcastable");
                Zip::from(&c)
                    .and(&xv)
                    .and(&yv)
                    .map_collect(|&k, &p, &q| if k { p } else { q })
            }};
        }
        let (a, b) = (a.cast_ref(common), b.cast_ref(common));
        Ok(each_pair!(a.as_ref(), b.as_ref(), x, y => pick!(x, y),
            else unreachable!("cast to a common type")))
    }

    /// Running sums or products along `axis` (integers and booleans in `i64`, wrapping).
    pub fn scan(&self, op: ScanOp, axis: usize) -> Block {
        let mut out = self.cast_ref(op.result_dtype(self.dtype())).into_owned();
        macro_rules! run {
            ($a:expr, $add:expr, $mul:expr) => {
                match op {
                    ScanOp::CumSum => {
                        $a.accumulate_axis_inplace(Axis(axis), |&p, c| *c = $add(*c, p))
                    }
                    ScanOp::CumProd => {
                        $a.accumulate_axis_inplace(Axis(axis), |&p, c| *c = $mul(*c, p))
                    }
                }
            };
        }
        match &mut out {
            Block::I64(a) => run!(a, i64::wrapping_add, i64::wrapping_mul),
            Block::F32(a) => run!(a, |x: f32, y: f32| x + y, |x: f32, y: f32| x * y),
            Block::F64(a) => run!(a, |x: f64, y: f64| x + y, |x: f64, y: f64| x * y),
            _ => unreachable!("scans give i64 or floats"),
        }
        out
    }

    /// Axes permuted.
    pub fn transpose(&self, perm: &[usize]) -> Block {
        each!(self, a => a.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned())
    }

    /// The block with its axes permuted, its elements left where they are (a strided
    /// layout, for the matrix product, which reads transposed blocks as they lie).
    pub fn into_permuted(self, perm: &[usize]) -> Block {
        each!(self, a => a.permuted_axes(IxDyn(perm)))
    }

    /// Ranges with steps along every axis.
    pub fn slice(&self, slices: &[AxisSlice]) -> Block {
        each!(self, a => {
            let mut view = a.view();
            for (axis, s) in slices.iter().enumerate() {
                let end = if s.len == 0 { s.start } else { s.start + (s.len - 1) * s.step + 1 };
                // A negative step walks the same range from its last element down.
                let step = if s.reverse { -(s.step as isize) } else { s.step as isize };
                view.slice_axis_inplace(
                    Axis(axis),
                    Slice::new(s.start as isize, Some(end as isize), step),
                );
            }
            view.to_owned()
        })
    }

    /// Same elements in C order, another shape.
    pub fn reshape(&self, shape: &[usize]) -> Result<Block, String> {
        Ok(each!(self, a => {
            let a = a.as_standard_layout().into_owned();
            a.into_shape_with_order(IxDyn(shape)).map_err(|e| e.to_string())?
        }))
    }

    /// Removes the (length 1) `axes`.
    pub fn squeeze(self, axes: &[usize]) -> Block {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        each!(self, a => {
            let mut a = a;
            for &axis in &sorted {
                a = a.index_axis_move(Axis(axis), 0);
            }
            a
        })
    }
}

// ----- reductions ------------------------------------------------------------------------

/// The state of a reduction over part of the data; states over neighbouring parts combine.
/// Arrays keep the reduced axes with length 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Partial {
    /// Sums (integers for integer and boolean input).
    Sum(Block),
    /// Products (integers for integer and boolean input).
    Prod(Block),
    /// Minima.
    Min(Block),
    /// Maxima.
    Max(Block),
    /// Any true.
    Any(ArrayD<bool>),
    /// All true.
    All(ArrayD<bool>),
    /// Non-zero counts.
    Count(ArrayD<i64>),
    /// Sums and counts, for means.
    SumCount {
        /// Sums.
        sum: ArrayD<f64>,
        /// Element counts.
        count: ArrayD<f64>,
    },
    /// Counts, means and sums of squared deviations (Chan et al.), for variances.
    Moments {
        /// Element counts.
        count: ArrayD<f64>,
        /// Means.
        mean: ArrayD<f64>,
        /// Sums of squared deviations from the mean.
        m2: ArrayD<f64>,
    },
    /// Best values and their global indices, for argmin/argmax.
    Arg {
        /// Values.
        value: ArrayD<f64>,
        /// Indices.
        index: ArrayD<i64>,
    },
}

/// Shape of `shape` with `axes` set to 1.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &n)| if axes.contains(&i) { 1 } else { n })
        .collect()
}

/// The lanes of `a` along `axes`: one row per position of the other axes (C order), the
/// reduced elements of that position in each row. Borrowed when `axes` are the trailing
/// axes of a standard-layout array (the common case); copied otherwise.
fn lanes<'a, T: Clone>(a: &'a ArrayD<T>, axes: &[usize]) -> (Cow<'a, [T]>, usize, usize) {
    let kept: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
    let rows: usize = kept.iter().map(|&i| a.shape()[i]).product();
    let width: usize = axes.iter().map(|&i| a.shape()[i]).product();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let trailing = sorted
        .iter()
        .enumerate()
        .all(|(k, &axis)| axis == a.ndim() - sorted.len() + k);
    if trailing && let Some(slice) = a.as_slice() {
        return (Cow::Borrowed(slice), rows, width);
    }
    // Neighbouring axes of a standard-layout array: each `reduced` x `inner` block
    // transposed, a cache-sized tile at a time.
    if sorted == axes
        && let (Some(&first), Some(&last)) = (sorted.first(), sorted.last())
        && last - first + 1 == sorted.len()
        && let Some(slice) = a.as_slice()
    {
        let outer: usize = a.shape()[..first].iter().product();
        let inner: usize = a.shape()[last + 1..].iter().product();
        let mut out = Vec::with_capacity(slice.len());
        for o in 0..outer {
            let block = &slice[o * width * inner..(o + 1) * width * inner];
            transpose_into(block, width, inner, &mut out);
        }
        return (Cow::Owned(out), rows, width);
    }
    let order: Vec<usize> = kept.iter().chain(axes.iter()).copied().collect();
    let permuted = a.view().permuted_axes(IxDyn(&order));
    (Cow::Owned(permuted.iter().cloned().collect()), rows, width)
}

/// Appends the transpose of `block` (`rows` x `cols`, row-major) to `out`, in tiles of
/// 32 x 32 so that reads and writes stay in the cache.
fn transpose_into<T: Clone>(block: &[T], rows: usize, cols: usize, out: &mut Vec<T>) {
    const TILE: usize = 32;
    let start = out.len();
    if rows * cols == 0 {
        return;
    }
    out.extend(std::iter::repeat_n(block[0].clone(), rows * cols));
    let target = &mut out[start..];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    target[c * rows + r] = block[r * cols + c].clone();
                }
            }
        }
    }
}

/// `true` if `v` replaces `best` in an argmin (`min`) or argmax: a NaN wins and stays, and
/// ties keep the first.
#[inline(always)]
pub(super) fn arg_better(min: bool, v: f64, best: f64) -> bool {
    if best.is_nan() {
        false
    } else if v.is_nan() {
        true
    } else if min {
        v < best
    } else {
        v > best
    }
}

pub(super) fn nan_min(x: f64, y: f64) -> f64 {
    if x.is_nan() || x <= y { x } else { y }
}

pub(super) fn nan_max(x: f64, y: f64) -> f64 {
    if x.is_nan() || x >= y { x } else { y }
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// `f` folded along `axes` of `block` taken as `f32` (sums and products of `f32`).
fn fold_f32(
    block: &Block,
    axes: &[usize],
    shape: &[usize],
    init: f32,
    f: fn(f32, f32) -> f32,
) -> Block {
    let a = block.cast_ref(DType::F32);
    let Block::F32(a) = a.as_ref() else {
        unreachable!("a block cast to f32")
    };
    let (data, rows, width) = lanes(a, axes);
    Block::F32(shaped(shape, row_fold(&data, rows, width, init, f)))
}

/// `f` folded along `axes` of `block` taken as `i64` (sums and products of integers).
fn fold_i64(
    block: &Block,
    axes: &[usize],
    shape: &[usize],
    init: i64,
    f: fn(i64, i64) -> i64,
) -> Block {
    let a = block.cast_ref(DType::I64);
    let Block::I64(a) = a.as_ref() else {
        unreachable!("a block cast to i64")
    };
    let (data, rows, width) = lanes(a, axes);
    Block::I64(shaped(shape, row_fold(&data, rows, width, init, f)))
}

impl Partial {
    /// The state of reducing `block` over `axes`. `offset` is the global position of the
    /// block's element 0 and `global_shape` the whole array's (for argmin/argmax indices).
    pub fn of(
        op: ReduceOp,
        block: &Block,
        axes: &[usize],
        offset: &[usize],
        global_shape: &[usize],
    ) -> Partial {
        let shape = kept_shape(block.shape(), axes);
        let out = IxDyn(&shape);
        let op = op.for_type(block.dtype());
        if op.skips_nan() {
            return Partial::skipping_nan(op, block, axes, &shape);
        }
        match op {
            ReduceOp::Sum => Partial::Sum(match block.dtype() {
                DType::F32 => fold_f32(block, axes, &shape, 0.0, |s, v| s + v),
                DType::F64 => {
                    let Block::F64(a) = block else { unreachable!() };
                    Block::F64(shaped(&shape, axis_sums(a, axes).0))
                }
                DType::Bool => {
                    let (data, rows, width) = lanes(block.as_bool(), axes);
                    Block::I64(shaped(&shape, count_true(&data, rows, width)))
                }
                DType::U8 | DType::I32 | DType::I64 => {
                    // Summed in i64, as NumPy sums the narrower integers in its default
                    // integer.
                    fold_i64(block, axes, &shape, 0, i64::wrapping_add)
                }
            }),
            ReduceOp::Prod => Partial::Prod(match block.dtype() {
                DType::F32 => fold_f32(block, axes, &shape, 1.0, |s, v| s * v),
                DType::F64 => {
                    let Block::F64(a) = block else { unreachable!() };
                    let (data, rows, width) = lanes(a, axes);
                    Block::F64(shaped(
                        &shape,
                        row_fold(&data, rows, width, 1.0, |s, v| s * v),
                    ))
                }
                // In i64, wrapping, as for sums.
                _ => fold_i64(block, axes, &shape, 1, i64::wrapping_mul),
            }),
            ReduceOp::Min | ReduceOp::Max => {
                let is_min = op == ReduceOp::Min;
                macro_rules! integer {
                    ($a:expr, $t:ty) => {{
                        let (data, rows, width) = lanes($a, axes);
                        let init = if is_min { <$t>::MAX } else { <$t>::MIN };
                        let f = if is_min { <$t>::min } else { <$t>::max };
                        shaped(&shape, row_fold(&data, rows, width, init, f))
                    }};
                }
                let result = match block {
                    Block::U8(a) => Block::U8(integer!(a, u8)),
                    Block::I32(a) => Block::I32(integer!(a, i32)),
                    Block::I64(a) => Block::I64(integer!(a, i64)),
                    Block::Bool(a) => {
                        let (data, rows, width) = lanes(a, axes);
                        let f: fn(bool, bool) -> bool =
                            if is_min { |x, y| x & y } else { |x, y| x | y };
                        Block::Bool(shaped(&shape, row_fold(&data, rows, width, is_min, f)))
                    }
                    Block::F32(_) | Block::F64(_) => {
                        let a = block.cast_ref(DType::F64);
                        let Block::F64(a) = a.as_ref() else {
                            unreachable!()
                        };
                        let (data, rows, width) = lanes(a, axes);
                        let (init, f): (f64, fn(f64, f64) -> f64) = if is_min {
                            (f64::INFINITY, nan_min)
                        } else {
                            (f64::NEG_INFINITY, nan_max)
                        };
                        Block::F64(shaped(&shape, row_fold(&data, rows, width, init, f)))
                            .cast(block.dtype())
                    }
                };
                if is_min {
                    Partial::Min(result)
                } else {
                    Partial::Max(result)
                }
            }
            ReduceOp::Any | ReduceOp::All | ReduceOp::CountNonzero => {
                let a = block.cast_ref(DType::Bool);
                let (data, rows, width) = lanes(a.as_bool(), axes);
                match op {
                    ReduceOp::Any => Partial::Any(shaped(
                        &shape,
                        row_fold(&data, rows, width, false, |s, v| s | v),
                    )),
                    ReduceOp::All => Partial::All(shaped(
                        &shape,
                        row_fold(&data, rows, width, true, |s, v| s & v),
                    )),
                    _ => Partial::Count(shaped(&shape, count_true(&data, rows, width))),
                }
            }
            ReduceOp::Mean => {
                let (sum, width) = if let Block::Bool(a) = block {
                    let (data, rows, width) = lanes(a, axes);
                    (
                        count_true(&data, rows, width)
                            .into_iter()
                            .map(|c| c as f64)
                            .collect(),
                        width,
                    )
                } else {
                    let a = block.cast_ref(DType::F64);
                    let Block::F64(a) = a.as_ref() else {
                        unreachable!()
                    };
                    axis_sums(a, axes)
                };
                Partial::SumCount {
                    sum: shaped(&shape, sum),
                    count: ArrayD::from_elem(out.clone(), width as f64),
                }
            }
            ReduceOp::Var(_) | ReduceOp::Std(_) => {
                let a = block.cast_ref(DType::F64);
                let Block::F64(a) = a.as_ref() else {
                    unreachable!()
                };
                let (data, rows, width) = lanes(a, axes);
                let mut mean = Vec::with_capacity(rows);
                let mut m2 = Vec::with_capacity(rows);
                for lane in data.chunks_exact(width.max(1)).take(rows) {
                    let m = if width == 0 {
                        0.0
                    } else {
                        lane.iter().sum::<f64>() / width as f64
                    };
                    mean.push(m);
                    m2.push(lane.iter().map(|v| (v - m) * (v - m)).sum::<f64>());
                }
                mean.resize(rows, 0.0);
                m2.resize(rows, 0.0);
                Partial::Moments {
                    count: ArrayD::from_elem(out.clone(), width as f64),
                    mean: shaped(&shape, mean),
                    m2: shaped(&shape, m2),
                }
            }
            ReduceOp::NanSum
            | ReduceOp::NanMean
            | ReduceOp::NanMin
            | ReduceOp::NanMax
            | ReduceOp::NanVar(_)
            | ReduceOp::NanStd(_) => unreachable!("NaN-skipping reductions are done above"),
            ReduceOp::ArgMin | ReduceOp::ArgMax => {
                let is_min = op == ReduceOp::ArgMin;
                let block_shape = block.shape().to_vec();
                let a = block.cast_ref(DType::F64);
                let Block::F64(a) = a.as_ref() else {
                    unreachable!()
                };
                let kept: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
                let (data, rows, width) = lanes(a, axes);
                let kept_dims: Vec<usize> = kept.iter().map(|&i| block_shape[i]).collect();
                let red_dims: Vec<usize> = axes.iter().map(|&i| block_shape[i]).collect();
                let global_strides = strides(global_shape);
                let mut values = Vec::with_capacity(rows);
                let mut indices = Vec::with_capacity(rows);
                for r in 0..rows {
                    let lane = &data[r * width..(r + 1) * width];
                    let mut best = 0;
                    for (j, &v) in lane.iter().enumerate().skip(1) {
                        if arg_better(is_min, v, lane[best]) {
                            best = j;
                        }
                    }
                    // Global position of the chosen element, then its index: along the one
                    // reduced axis, or flat over the whole array.
                    let mut position = vec![0usize; block_shape.len()];
                    let mut rest = r;
                    for (k, &axis) in kept.iter().enumerate().rev() {
                        position[axis] = rest % kept_dims[k];
                        rest /= kept_dims[k];
                    }
                    let mut rest = best;
                    for (k, &axis) in axes.iter().enumerate().rev() {
                        position[axis] = rest % red_dims[k];
                        rest /= red_dims[k];
                    }
                    let index = if axes.len() == 1 && global_shape.len() > 1 {
                        offset[axes[0]] + position[axes[0]]
                    } else {
                        position
                            .iter()
                            .zip(offset)
                            .zip(&global_strides)
                            .map(|((p, o), s)| (p + o) * s)
                            .sum()
                    };
                    values.push(lane.get(best).copied().unwrap_or(f64::NAN));
                    indices.push(index as i64);
                }
                Partial::Arg {
                    value: shaped(&shape, values),
                    index: ArrayD::from_shape_vec(out, indices).expect("kept shape"),
                }
            }
        }
    }

    /// The state of a reduction that skips NaN (`block` of floats, computed in `f64`): the
    /// states of the plain reductions with only the elements that are not NaN counted.
    fn skipping_nan(op: ReduceOp, block: &Block, axes: &[usize], shape: &[usize]) -> Partial {
        let a = block.cast_ref(DType::F64);
        let Block::F64(a) = a.as_ref() else {
            unreachable!("cast to f64")
        };
        let array = |v: Vec<f64>| shaped(shape, v);
        match op {
            ReduceOp::NanSum => {
                Partial::Sum(Block::F64(array(nan_fold(a, axes, 0.0, |s, v, _| *s += v))))
            }
            ReduceOp::NanMin | ReduceOp::NanMax => {
                let pick = if op == ReduceOp::NanMin {
                    skip_nan_min
                } else {
                    skip_nan_max
                };
                let best = nan_fold(a, axes, f64::NAN, |s, v, _| *s = pick(*s, v));
                if op == ReduceOp::NanMin {
                    Partial::Min(Block::F64(array(best)))
                } else {
                    Partial::Max(Block::F64(array(best)))
                }
            }
            _ => {
                let (sums, counts) = nan_sums_counts(a, axes);
                if op == ReduceOp::NanMean {
                    return Partial::SumCount {
                        sum: array(sums),
                        count: array(counts),
                    };
                }
                let mean: Vec<f64> = sums
                    .iter()
                    .zip(&counts)
                    .map(|(&s, &n)| if n > 0.0 { s / n } else { 0.0 })
                    .collect();
                let m2 = nan_fold(a, axes, 0.0, |q, v, k| *q += (v - mean[k]) * (v - mean[k]));
                Partial::Moments {
                    count: array(counts),
                    mean: array(mean),
                    m2: array(m2),
                }
            }
        }
    }

    /// Combines two states over neighbouring parts (`self` first) of the same shape.
    pub fn merge(self, other: Partial, op: ReduceOp) -> Result<Partial, String> {
        Ok(match (self, other) {
            (Partial::Sum(a), Partial::Sum(b)) => {
                Partial::Sum(Block::binary(BinaryOp::Add, &a, &b)?)
            }
            (Partial::Prod(a), Partial::Prod(b)) => {
                Partial::Prod(Block::binary(BinaryOp::Mul, &a, &b)?)
            }
            (Partial::Min(a), Partial::Min(b)) | (Partial::Max(a), Partial::Max(b)) => {
                let is_min = matches!(op, ReduceOp::Min | ReduceOp::NanMin);
                let merged = match (a, b) {
                    (Block::F64(x), Block::F64(y)) if op.skips_nan() => Block::F64(zip_map(
                        &x,
                        &y,
                        if is_min { skip_nan_min } else { skip_nan_max },
                    )?),
                    (Block::F64(x), Block::F64(y)) => {
                        Block::F64(zip_map(&x, &y, if is_min { nan_min } else { nan_max })?)
                    }
                    (Block::F32(x), Block::F32(y)) => {
                        Block::F32(zip_map(&x, &y, |p: f32, q: f32| {
                            (if is_min { nan_min } else { nan_max })(f64::from(p), f64::from(q))
                                as f32
                        })?)
                    }
                    (Block::U8(x), Block::U8(y)) => {
                        Block::U8(zip_map(&x, &y, if is_min { u8::min } else { u8::max })?)
                    }
                    (Block::I32(x), Block::I32(y)) => {
                        Block::I32(zip_map(&x, &y, if is_min { i32::min } else { i32::max })?)
                    }
                    (Block::I64(x), Block::I64(y)) => {
                        Block::I64(zip_map(&x, &y, if is_min { i64::min } else { i64::max })?)
                    }
                    (Block::Bool(x), Block::Bool(y)) => {
                        Block::Bool(zip_map(&x, &y, |p, q| if is_min { p & q } else { p | q })?)
                    }
                    _ => return Err("min/max states of different types".into()),
                };
                if is_min {
                    Partial::Min(merged)
                } else {
                    Partial::Max(merged)
                }
            }
            (Partial::Any(a), Partial::Any(b)) => Partial::Any(zip_map(&a, &b, |p, q| p | q)?),
            (Partial::All(a), Partial::All(b)) => Partial::All(zip_map(&a, &b, |p, q| p & q)?),
            (Partial::Count(a), Partial::Count(b)) => {
                Partial::Count(zip_map(&a, &b, |p, q| p + q)?)
            }
            (
                Partial::SumCount { sum: s1, count: c1 },
                Partial::SumCount { sum: s2, count: c2 },
            ) => Partial::SumCount {
                sum: zip_map(&s1, &s2, |p, q| p + q)?,
                count: zip_map(&c1, &c2, |p, q| p + q)?,
            },
            (
                Partial::Moments {
                    count: n1,
                    mean: m1,
                    m2: q1,
                },
                Partial::Moments {
                    count: n2,
                    mean: m2,
                    m2: q2,
                },
            ) => {
                let n = zip_map(&n1, &n2, |a, b| a + b)?;
                let delta = zip_map(&m2, &m1, |a, b| a - b)?;
                let mut mean = m1.clone();
                let mut m2_out = q1.clone();
                Zip::from(&mut mean)
                    .and(&n1)
                    .and(&n2)
                    .and(&delta)
                    .and(&n)
                    .for_each(|m, _, &b, &d, &t| {
                        if t > 0.0 {
                            *m += d * b / t
                        }
                    });
                Zip::from(&mut m2_out)
                    .and(&q2)
                    .and(&n1)
                    .and(&n2)
                    .and(&delta)
                    .and(&n)
                    .for_each(|q, &r, &a, &b, &d, &t| {
                        if t > 0.0 {
                            *q += r + d * d * a * b / t
                        }
                    });
                Partial::Moments {
                    count: n,
                    mean,
                    m2: m2_out,
                }
            }
            (
                Partial::Arg {
                    value: v1,
                    index: i1,
                },
                Partial::Arg {
                    value: v2,
                    index: i2,
                },
            ) => {
                let is_min = op == ReduceOp::ArgMin;
                let mut value = v1.clone();
                let mut index = i1.clone();
                Zip::from(&mut value)
                    .and(&mut index)
                    .and(&v1)
                    .and(&i1)
                    .and(&v2)
                    .and(&i2)
                    .for_each(|v, i, &a, &ia, &b, &ib| {
                        let take_b = if a.is_nan() && b.is_nan() {
                            ib < ia
                        } else if a.is_nan() {
                            false
                        } else if b.is_nan() {
                            true
                        } else if a == b {
                            ib < ia
                        } else if is_min {
                            b < a
                        } else {
                            b > a
                        };
                        if take_b {
                            *v = b;
                            *i = ib;
                        }
                    });
                Partial::Arg { value, index }
            }
            _ => return Err("cannot merge reduction states of different kinds".into()),
        })
    }

    /// States of consecutive row ranges, stacked along axis 0.
    pub fn stack_rows(parts: Vec<Partial>) -> Result<Partial, String> {
        fn cat<T: Clone>(arrays: Vec<ArrayD<T>>) -> Result<ArrayD<T>, String> {
            let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
            ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())
        }
        fn cat_blocks(blocks: Vec<Block>) -> Result<Block, String> {
            let dtype = blocks.first().ok_or("no states to stack")?.dtype();
            macro_rules! cat_as {
                ($variant:ident) => {
                    Block::$variant(cat(blocks
                        .into_iter()
                        .map(|b| match b.cast(dtype) {
                            Block::$variant(a) => a,
                            _ => unreachable!("cast to the first state's type"),
                        })
                        .collect())?)
                };
            }
            Ok(match dtype {
                DType::Bool => cat_as!(Bool),
                DType::U8 => cat_as!(U8),
                DType::I32 => cat_as!(I32),
                DType::I64 => cat_as!(I64),
                DType::F32 => cat_as!(F32),
                DType::F64 => cat_as!(F64),
            })
        }
        macro_rules! fields {
            ($variant:ident, $($f:ident => $all:ident),+) => {{
                $(let mut $all = Vec::new();)+
                for p in parts {
                    let Partial::$variant { $($f),+ } = p else { return Err("states of different kinds".into()) };
                    $($all.push($f);)+
                }
                Partial::$variant { $($f: cat($all)?),+ }
            }};
        }
        let kind = std::mem::discriminant(parts.first().ok_or("no states to stack")?);
        if parts.iter().any(|p| std::mem::discriminant(p) != kind) {
            return Err("states of different kinds".into());
        }
        macro_rules! single {
            ($variant:ident, $cat:ident) => {
                Partial::$variant($cat(
                    parts
                        .into_iter()
                        .map(|p| match p {
                            Partial::$variant(x) => x,
                            _ => unreachable!("checked to be of one kind"),
                        })
                        .collect(),
                )?)
            };
        }
        Ok(match parts[0] {
            Partial::Sum(_) => single!(Sum, cat_blocks),
            Partial::Prod(_) => single!(Prod, cat_blocks),
            Partial::Min(_) => single!(Min, cat_blocks),
            Partial::Max(_) => single!(Max, cat_blocks),
            Partial::Any(_) => single!(Any, cat),
            Partial::All(_) => single!(All, cat),
            Partial::Count(_) => single!(Count, cat),
            Partial::SumCount { .. } => fields!(SumCount, sum => sums, count => counts),
            Partial::Moments { .. } => fields!(Moments, count => counts, mean => means, m2 => m2s),
            Partial::Arg { .. } => fields!(Arg, value => values, index => indices),
        })
    }

    /// The reduction's value (reduced axes still of length 1) with element type `dtype`.
    pub fn finish(self, op: ReduceOp, dtype: DType) -> Block {
        match self {
            Partial::Sum(b) | Partial::Prod(b) | Partial::Min(b) | Partial::Max(b) => b.cast(dtype),
            Partial::Any(a) | Partial::All(a) => Block::Bool(a),
            Partial::Count(a) => Block::I64(a),
            Partial::SumCount { sum, count } => {
                Block::F64(zip_map(&sum, &count, |s, n| s / n).expect("same shape")).cast(dtype)
            }
            Partial::Moments { count, m2, .. } => {
                let ddof = match op {
                    ReduceOp::Var(d)
                    | ReduceOp::Std(d)
                    | ReduceOp::NanVar(d)
                    | ReduceOp::NanStd(d) => f64::from(d),
                    _ => 0.0,
                };
                let skips = op.skips_nan();
                let var = zip_map(&m2, &count, |q, n| {
                    if skips && n - ddof <= 0.0 {
                        f64::NAN
                    } else {
                        q / (n - ddof)
                    }
                })
                .expect("same shape");
                let value = if matches!(op, ReduceOp::Std(_) | ReduceOp::NanStd(_)) {
                    var.mapv(f64::sqrt)
                } else {
                    var
                };
                Block::F64(value).cast(dtype)
            }
            Partial::Arg { index, .. } => Block::I64(index),
        }
    }
}

/// An array of `shape` from C-ordered data of the right length.
fn shaped<T>(shape: &[usize], data: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("data matches the shape")
}

/// Number of `true` in each of `rows` rows of `width` booleans.
fn count_true(data: &[bool], rows: usize, width: usize) -> Vec<i64> {
    if width == 0 {
        return vec![0; rows];
    }
    data.chunks_exact(width)
        .take(rows)
        .map(|lane| lane.iter().filter(|&&v| v).count() as i64)
        .collect()
}

/// Sum of a lane of floats, with eight accumulators: independent additions the processor
/// overlaps (and vectorises), and a smaller rounding error than one running sum.
pub(super) fn lane_sum(lane: &[f64]) -> f64 {
    let (mut a0, mut a1, mut a2, mut a3) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut a4, mut a5, mut a6, mut a7) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut blocks = lane.chunks_exact(8);
    for b in &mut blocks {
        a0 += b[0];
        a1 += b[1];
        a2 += b[2];
        a3 += b[3];
        a4 += b[4];
        a5 += b[5];
        a6 += b[6];
        a7 += b[7];
    }
    let tail: f64 = blocks.remainder().iter().sum();
    ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)) + tail
}

/// The sums of `a` over `axes` in row-major order of the kept axes, and how many values
/// each adds up. Over neighbouring axes that are not the last of a standard-layout array
/// (`x.sum(0)` of a tall chunk, the middle axis of a 3-D one) the rows are added in place
/// ([`column_sums`]), with the same additions in the same order as [`lane_sum`] over each
/// transposed lane: the same bits, without copying the chunk transposed into new memory
/// first (for a 20000 x 200 chunk, most of its time). (Lanes of one or two values keep the
/// general path, whose short sums differ from `lane_sum` in the sign of a zero.)
/// `a`'s elements in place and the sizes `(outer, width, inner)` it has as an
/// `outer x width x inner` array whose middle axis is `axes`, when `axes` are consecutive,
/// in order and not the last, and `a` is in standard layout; `None` otherwise.
fn consecutive_axes<'a>(
    a: &'a ArrayD<f64>,
    axes: &[usize],
) -> Option<(&'a [f64], usize, usize, usize)> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let (&first, &last) = (sorted.first()?, sorted.last()?);
    if sorted != axes || last - first + 1 != sorted.len() || last + 1 >= a.ndim() {
        return None;
    }
    let size = |dims: &[usize]| dims.iter().product::<usize>();
    Some((
        a.as_slice()?,
        size(&a.shape()[..first]),
        size(&a.shape()[first..=last]),
        size(&a.shape()[last + 1..]),
    ))
}

fn axis_sums(a: &ArrayD<f64>, axes: &[usize]) -> (Vec<f64>, usize) {
    if let Some((slice, outer, width, inner)) = consecutive_axes(a, axes)
        && width > 2
    {
        let mut out = Vec::with_capacity(outer * inner);
        if width * inner > 0 {
            for block in slice.chunks_exact(width * inner) {
                column_sums(block, width, inner, &mut out);
            }
        } else {
            out.resize(outer * inner, 0.0);
        }
        return (out, width);
    }
    let (data, rows, width) = lanes(a, axes);
    (row_sums(&data, rows, width), width)
}

/// Appends to `out` the sum of each of the `cols` columns of `block` (`rows` x `cols`,
/// row-major), each exactly as [`lane_sum`] adds up the column read as a lane: eight
/// accumulators taking rows `8b + l`, the rows left over summed in order, then combined in
/// its order. The rows are read in place, in the cache a few at a time.
fn column_sums(block: &[f64], rows: usize, cols: usize, out: &mut Vec<f64>) {
    /// Columns summed together: the eight accumulator rows stay in L1.
    const STRIP: usize = 256;
    let full = rows - rows % 8;
    let mut acc = [[0.0f64; STRIP]; 8];
    for start in (0..cols).step_by(STRIP) {
        let n = STRIP.min(cols - start);
        for a in &mut acc {
            a[..n].fill(0.0);
        }
        for base in (0..full).step_by(8) {
            for (l, a) in acc.iter_mut().enumerate() {
                let row = &block[(base + l) * cols + start..][..n];
                for (s, v) in a[..n].iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
        for j in 0..n {
            let tail: f64 = (full..rows).map(|i| block[i * cols + start + j]).sum();
            let a = |l: usize| acc[l][j];
            out.push(((a(0) + a(4)) + (a(1) + a(5))) + ((a(2) + a(6)) + (a(3) + a(7))) + tail);
        }
    }
}

/// The smaller of two values, a NaN only if both are.
fn skip_nan_min(x: f64, y: f64) -> f64 {
    if x.is_nan() || y < x { y } else { x }
}

/// The larger of two values, a NaN only if both are.
fn skip_nan_max(x: f64, y: f64) -> f64 {
    if x.is_nan() || y > x { y } else { x }
}

/// For each position of the axes `a` keeps (C order), `f(state, v, position)` over the
/// elements `v` along `axes` that are not NaN, from `init`. Axes that are consecutive and
/// not the last are read in place, a strip of positions at a time; others as lanes.
fn nan_fold<S: Copy>(
    a: &ArrayD<f64>,
    axes: &[usize],
    init: S,
    f: impl Fn(&mut S, f64, usize),
) -> Vec<S> {
    if let Some((slice, outer, width, inner)) = consecutive_axes(a, axes) {
        // Positions taken a strip at a time, their states staying in L1 while every row
        // of the strip is read.
        const STRIP: usize = 512;
        let mut states = vec![init; outer * inner];
        if width * inner > 0 {
            for (o, block) in slice.chunks_exact(width * inner).enumerate() {
                for start in (0..inner).step_by(STRIP) {
                    let n = STRIP.min(inner - start);
                    let first = o * inner + start;
                    let states = &mut states[first..first + n];
                    for row in block.chunks_exact(inner) {
                        for (j, (s, &v)) in
                            states.iter_mut().zip(&row[start..start + n]).enumerate()
                        {
                            if !v.is_nan() {
                                f(s, v, first + j);
                            }
                        }
                    }
                }
            }
        }
        return states;
    }
    let (data, rows, width) = lanes(a, axes);
    (0..rows)
        .map(|r| {
            let mut s = init;
            for &v in &data[r * width..(r + 1) * width] {
                if !v.is_nan() {
                    f(&mut s, v, r);
                }
            }
            s
        })
        .collect()
}

/// For each position of the axes `a` keeps (C order), the sum and the number of the
/// elements along `axes` that are not NaN: as [`nan_fold`] does, with the strips of leading
/// axes summed without a branch (NaN as 0, counted as 0), which the compiler vectorises.
fn nan_sums_counts(a: &ArrayD<f64>, axes: &[usize]) -> (Vec<f64>, Vec<f64>) {
    if let Some((slice, outer, width, inner)) = consecutive_axes(a, axes) {
        const STRIP: usize = 512;
        let (mut sums, mut counts) = (vec![0.0; outer * inner], vec![0.0; outer * inner]);
        if width * inner > 0 {
            for (o, block) in slice.chunks_exact(width * inner).enumerate() {
                for start in (0..inner).step_by(STRIP) {
                    let n = STRIP.min(inner - start);
                    let first = o * inner + start;
                    let (s, c) = (&mut sums[first..first + n], &mut counts[first..first + n]);
                    for row in block.chunks_exact(inner) {
                        let row = &row[start..start + n];
                        for ((s, c), &v) in s.iter_mut().zip(c.iter_mut()).zip(row) {
                            #[allow(clippy::eq_op)]
                            let valid = v == v;
                            *s += if valid { v } else { 0.0 };
                            *c += f64::from(u8::from(valid));
                        }
                    }
                }
            }
        }
        return (sums, counts);
    }
    let both = nan_fold(a, axes, (0.0, 0.0), |s, v, _| {
        s.0 += v;
        s.1 += 1.0;
    });
    both.into_iter().unzip()
}

/// Sums of each of `rows` rows of `width` floats.
fn row_sums(data: &[f64], rows: usize, width: usize) -> Vec<f64> {
    match width {
        0 | 1 => row_fold(data, rows, width, 0.0, |s, v| s + v),
        2 => {
            let mut out = vec![0.0; rows];
            for (o, pair) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = pair[0] + pair[1];
            }
            out
        }
        _ => data[..rows * width]
            .chunks_exact(width)
            .map(lane_sum)
            .collect(),
    }
}

/// Folds each of `rows` rows of `width` elements.
fn row_fold<T: Copy>(
    data: &[T],
    rows: usize,
    width: usize,
    init: T,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let data = &data[..rows * width];
    match width {
        0 => vec![init; rows],
        1 => data.iter().map(|&v| f(init, v)).collect(),
        2 => {
            let mut out = Vec::with_capacity(rows);
            for r in 0..rows {
                out.push(f(f(init, data[2 * r]), data[2 * r + 1]));
            }
            out
        }
        _ if rows == 1 => vec![data.iter().fold(init, |s, &v| f(s, v))],
        _ => data
            .chunks_exact(width)
            .map(|lane| lane.iter().fold(init, |s, &v| f(s, v)))
            .collect(),
    }
}

// ----- programs --------------------------------------------------------------------------

/// What a program produced.
pub enum Outcome {
    /// A chunk of the result.
    Chunk(Block),
    /// A chunk of `f64` already in its encoded form ([`Block::encode`]'s bytes).
    Encoded(Bytes),
    /// A reduction state.
    Partial(Box<Partial>),
}

/// Evaluates node `index` for rows `rows` (or whole when `None`), reading operands from
/// `values` (this block's streaming nodes) and `fixed` (nodes evaluated once).
fn eval_node(
    program: &Program,
    index: usize,
    rows: Option<(usize, usize)>,
    inputs: &[Block],
    values: &[Option<Block>],
    fixed: &[Option<Block>],
) -> Result<Block, String> {
    let node = &program.nodes[index];
    let get = |i: usize| -> &Block {
        values[i]
            .as_ref()
            .or(fixed[i].as_ref())
            .expect("operands are evaluated before their users")
    };
    let (row_start, row_count) = match rows {
        Some((start, end)) if node.streams => (start, end - start),
        _ => (0, node.shape.first().copied().unwrap_or(1)),
    };
    let mut shape = node.shape.clone();
    if let Some(first) = shape.first_mut() {
        *first = row_count;
    }
    let row_len: usize = node.shape.iter().skip(1).product();
    Ok(match &node.op {
        Op::Input(i) => match rows {
            Some((start, end)) if node.streams => inputs[*i].rows(start, end),
            _ => inputs[*i].clone(),
        },
        Op::Random { dist, key } => {
            let count: usize = shape.iter().product();
            let first = (row_start * row_len) as u64;
            let data = match dist {
                Distribution::Uniform { low, high } => {
                    random::uniform_values(count, *key, first, *low, *high)
                }
                Distribution::Normal { mean, std } => {
                    let mut data = vec![0.0; count];
                    random::fill_normal(&mut data, *key, first, *mean, *std);
                    data
                }
            };
            Block::F64(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape")).cast(node.dtype)
        }
        Op::Fill(value) => Block::full(*value, &shape),
        Op::Arange { start, step, first } => {
            let data: Vec<f64> = (0..row_count)
                .map(|i| start + (first + (row_start + i) as u64) as f64 * step)
                .collect();
            Block::F64(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape")).cast(node.dtype)
        }
        Op::Scalar(value) => Block::full(*value, &[]),
        Op::Unary(op, a) => get(*a).unary(*op),
        Op::Binary(op, a, b) => Block::binary(*op, get(*a), get(*b))?,
        Op::Where(c, a, b) => Block::select(get(*c), get(*a), get(*b))?,
        Op::Cast(dtype, a) => get(*a).cast_ref(*dtype).into_owned(),
        Op::Reduce {
            op,
            axes,
            keepdims,
            arg,
        } => {
            let operand = get(*arg);
            let in_dtype = operand.dtype();
            let offset = vec![0; operand.shape().len()];
            let global: Vec<usize> = operand.shape().to_vec();
            let value = Partial::of(*op, operand, axes, &offset, &global)
                .finish(*op, op.result_dtype(in_dtype));
            if *keepdims {
                value
            } else {
                value.squeeze(axes)
            }
        }
        Op::Transpose(perm, a) => get(*a).transpose(perm),
        Op::Scan(op, axis, a) => get(*a).scan(*op, *axis),
        Op::Slice(slices, a) => get(*a).slice(slices),
        Op::Reshape(shape, a) => get(*a).reshape(shape)?,
    })
}

/// Runs a program on its input chunks: compiled to tile loops when it can be
/// ([`super::fused`]), else interpreted.
pub fn run(program: &Program, inputs: &[Block]) -> Result<Outcome, String> {
    check_inputs(program, inputs)?;
    let raw: Vec<Option<super::fused::Raw<'_>>> =
        inputs.iter().map(super::fused::Raw::of).collect();
    if let Some(plan) = super::fused::Plan::compile(program, &raw) {
        return Ok(plan.run(&raw));
    }
    interpret(program, inputs)
}

fn check_inputs(program: &Program, inputs: &[Block]) -> Result<(), String> {
    if inputs.len() != program.inputs.len() {
        return Err(format!(
            "the program has {} inputs but {} were given",
            program.inputs.len(),
            inputs.len()
        ));
    }
    for (i, (block, dtype)) in inputs.iter().zip(&program.inputs).enumerate() {
        if block.dtype() != *dtype {
            return Err(format!(
                "input {i} is {} but the program expects {dtype}",
                block.dtype()
            ));
        }
    }
    Ok(())
}

/// Runs a program on its input chunks with the interpreter: one operation at a time over
/// blocks of rows.
pub fn interpret(program: &Program, inputs: &[Block]) -> Result<Outcome, String> {
    check_inputs(program, inputs)?;
    let n = program.nodes.len();
    let root = n - 1;
    if !program.streams() {
        let mut values: Vec<Option<Block>> = vec![None; n];
        let fixed: Vec<Option<Block>> = vec![None; n];
        for i in 0..n {
            values[i] = Some(eval_node(program, i, None, inputs, &values, &fixed)?);
        }
        let value = values[root].take().expect("root evaluated");
        return finish_whole(program, value);
    }
    // Nodes that do not stream are evaluated once; the others block by block.
    let mut fixed: Vec<Option<Block>> = vec![None; n];
    let none: Vec<Option<Block>> = vec![None; n];
    for i in 0..n {
        if !program.nodes[i].streams {
            fixed[i] = Some(eval_node(program, i, None, inputs, &none, &fixed)?);
        }
    }
    let uses = use_counts(program);
    let total_rows = program.root().shape[0];
    let widest = program
        .nodes
        .iter()
        .filter(|node| node.streams)
        .map(|node| node.shape.iter().skip(1).product::<usize>().max(1))
        .max()
        .unwrap_or(1);
    let block_rows = (BLOCK_ELEMENTS / widest).max(1);
    let mut stored: Option<Block> = matches!(program.output, Output::Store)
        .then(|| empty_like(program.root().dtype, &program.root().shape));
    let mut partial: Option<Partial> = None;
    let mut row_parts: Vec<Partial> = Vec::new();
    let mut start = 0;
    while start < total_rows {
        let end = (start + block_rows).min(total_rows);
        let mut values: Vec<Option<Block>> = vec![None; n];
        for i in 0..n {
            if program.nodes[i].streams {
                values[i] = Some(match in_place(program, i, &mut values, &fixed, &uses) {
                    Some(value) => value,
                    None => eval_node(program, i, Some((start, end)), inputs, &values, &fixed)?,
                });
            }
        }
        let value = values[root].take().expect("root streams");
        match &program.output {
            Output::Store => {
                let target = stored.as_mut().expect("allocated for Store");
                write_rows(target, start, &value);
            }
            Output::Partial {
                op,
                axes,
                offset,
                global_shape,
            } => {
                let mut block_offset = offset.clone();
                if let Some(first) = block_offset.first_mut() {
                    *first += start;
                }
                let state = Partial::of(*op, &value, axes, &block_offset, global_shape);
                if axes.contains(&0) {
                    partial = Some(match partial.take() {
                        None => state,
                        Some(before) => before.merge(state, *op)?,
                    });
                } else {
                    row_parts.push(state);
                }
            }
        }
        start = end;
    }
    match &program.output {
        Output::Store => Ok(Outcome::Chunk(stored.expect("allocated for Store"))),
        Output::Partial { .. } => Ok(Outcome::Partial(Box::new(match partial {
            Some(p) => p,
            None => Partial::stack_rows(row_parts)?,
        }))),
    }
}

/// How many later nodes read each node.
fn use_counts(program: &Program) -> Vec<usize> {
    let mut uses = vec![0; program.nodes.len()];
    for node in &program.nodes {
        for a in node.op.operands() {
            uses[a] += 1;
        }
    }
    uses
}

fn apply_in_place(block: &mut Block, f: impl Fn(f64) -> f64) -> bool {
    match block {
        Block::F64(a) => {
            a.mapv_inplace(f);
            true
        }
        _ => false,
    }
}

/// Evaluates node `i` by updating its only operand in place, when it is a float operation
/// of one block (and perhaps a single value) that keeps the element type: no allocation,
/// one pass over cache-resident data.
fn in_place(
    program: &Program,
    i: usize,
    values: &mut [Option<Block>],
    fixed: &[Option<Block>],
    uses: &[usize],
) -> Option<Block> {
    let node = &program.nodes[i];
    if node.dtype != DType::F64 {
        return None;
    }
    let owned = |a: usize, values: &[Option<Block>]| {
        uses[a] == 1
            && matches!(values[a], Some(Block::F64(_)))
            && program.nodes[a].shape == node.shape
    };
    let single = |b: usize, values: &[Option<Block>]| -> Option<f64> {
        match values[b].as_ref().or(fixed[b].as_ref())? {
            Block::F64(v) if v.len() == 1 => v.iter().next().copied(),
            Block::I64(v) if v.len() == 1 => v.iter().next().map(|&x| x as f64),
            _ => None,
        }
    };
    match node.op {
        Op::Unary(op, a) if owned(a, values) => {
            let mut block = values[a].take()?;
            let done = match op {
                UnaryOp::Powi(2) => apply_in_place(&mut block, |v| v * v),
                UnaryOp::Sqrt => apply_in_place(&mut block, f64::sqrt),
                UnaryOp::Abs => apply_in_place(&mut block, f64::abs),
                UnaryOp::Not => false,
                op => apply_in_place(&mut block, |v| v.map(op)),
            };
            if done {
                Some(block)
            } else {
                values[a] = Some(block);
                None
            }
        }
        Op::Binary(op, a, b)
            if !op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or) =>
        {
            let (target, scalar, scalar_first) = if owned(a, values) {
                (a, single(b, values)?, false)
            } else if owned(b, values) {
                (b, single(a, values)?, true)
            } else {
                return None;
            };
            let mut block = values[target].take()?;
            let s = scalar;
            match (op, scalar_first) {
                (BinaryOp::Add, _) => apply_in_place(&mut block, |v| v + s),
                (BinaryOp::Mul, _) => apply_in_place(&mut block, |v| v * s),
                (BinaryOp::Sub, false) => apply_in_place(&mut block, |v| v - s),
                (BinaryOp::Sub, true) => apply_in_place(&mut block, |v| s - v),
                (BinaryOp::Div, false) => apply_in_place(&mut block, |v| v / s),
                (BinaryOp::Div, true) => apply_in_place(&mut block, |v| s / v),
                (op, false) => apply_in_place(&mut block, |v| super::ufunc::binary_f64(op, v, s)),
                (op, true) => apply_in_place(&mut block, |v| super::ufunc::binary_f64(op, s, v)),
            };
            Some(block)
        }
        _ => None,
    }
}

fn finish_whole(program: &Program, value: Block) -> Result<Outcome, String> {
    Ok(match &program.output {
        Output::Store => Outcome::Chunk(value),
        Output::Partial {
            op,
            axes,
            offset,
            global_shape,
        } => Outcome::Partial(Box::new(Partial::of(
            *op,
            &value,
            axes,
            offset,
            global_shape,
        ))),
    })
}

fn empty_like(dtype: DType, shape: &[usize]) -> Block {
    Block::full(Scalar::Bool(false), shape).cast(dtype)
}

/// Copies `value` into `target` at `offset` (a region of the same element type).
pub fn write_region(target: &mut Block, offset: &[usize], value: &Block) {
    macro_rules! write {
        ($t:expr, $v:expr) => {{
            let mut view = $t.view_mut();
            for (axis, (&o, &n)) in offset.iter().zip($v.shape()).enumerate() {
                view.slice_axis_inplace(Axis(axis), Slice::from(o..o + n));
            }
            view.assign($v);
        }};
    }
    each_pair!(keep target, value, t, v => write!(t, v),
        else unreachable!("regions are written into chunks of their own type"))
}

/// The matrix product of two 2-D blocks, computed in `dtype`.
pub fn matmul(a: &Block, b: &Block, dtype: DType) -> Result<Block, String> {
    fn two_d<T: Clone>(a: &ArrayD<T>) -> Result<ndarray::ArrayView2<'_, T>, String> {
        a.view()
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| format!("dot of a block that is not 2-D: {e}"))
    }
    super::blas::one_thread();
    let (a, b) = (a.cast_ref(dtype), b.cast_ref(dtype));
    Ok(match (a.as_ref(), b.as_ref()) {
        (Block::F64(x), Block::F64(y)) => Block::F64(two_d(x)?.dot(&two_d(y)?).into_dyn()),
        (Block::F32(x), Block::F32(y)) => Block::F32(two_d(x)?.dot(&two_d(y)?).into_dyn()),
        (Block::I64(x), Block::I64(y)) => Block::I64(two_d(x)?.dot(&two_d(y)?).into_dyn()),
        (Block::I32(x), Block::I32(y)) => Block::I32(two_d(x)?.dot(&two_d(y)?).into_dyn()),
        (Block::U8(x), Block::U8(y)) => Block::U8(two_d(x)?.dot(&two_d(y)?).into_dyn()),
        _ => return Err(format!("dot of {dtype} blocks is not supported")),
    })
}

/// `sum += a . b` for float blocks of the sum's type; `false` (nothing done) for others.
pub fn matmul_add(sum: &mut Block, a: &Block, b: &Block) -> Result<bool, String> {
    fn two_d<T>(a: &ArrayD<T>) -> Result<ndarray::ArrayView2<'_, T>, String> {
        a.view()
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|e| format!("dot of a block that is not 2-D: {e}"))
    }
    match (sum, a, b) {
        (Block::F64(s), Block::F64(x), Block::F64(y)) => {
            let mut s = s
                .view_mut()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|e| format!("a dot sum that is not 2-D: {e}"))?;
            let (x, y) = (two_d(x)?, two_d(y)?);
            if x.ncols() != y.nrows() || s.dim() != (x.nrows(), y.ncols()) {
                return Err("dot blocks of mismatched shapes".into());
            }
            super::blas::one_thread();
            ndarray::linalg::general_mat_mul(1.0, &x, &y, 1.0, &mut s);
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn write_rows(target: &mut Block, start: usize, value: &Block) {
    let rows = value.shape()[0];
    macro_rules! write {
        ($t:expr, $v:expr) => {
            $t.slice_axis_mut(Axis(0), Slice::from(start..start + rows))
                .assign($v)
        };
    }
    each_pair!(keep target, value, t, v => write!(t, v),
        else unreachable!("stored blocks share the root's type"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::array::program::Node;
    use ndarray::array;

    /// The NaN-skipping fold gives, for every kept position, the sum and count of the
    /// values that are not NaN, whichever axes are reduced and however wide the strips.
    #[test]
    fn nan_fold_skips_nan_along_any_axes() {
        let shape = [4, 3, 700];
        let a = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
            let k = (i[0] * 31 + i[1] * 7 + i[2]) % 11;
            if k == 3 { f64::NAN } else { k as f64 - 4.5 }
        });
        for axes in [
            vec![0],
            vec![0, 1],
            vec![1],
            vec![2],
            vec![1, 2],
            vec![0, 2],
        ] {
            let got = nan_fold(&a, &axes, (0.0, 0.0), |s, v, _| {
                s.0 += v;
                s.1 += 1.0;
            });
            let kept: Vec<usize> = (0..3).filter(|x| !axes.contains(x)).collect();
            let mut want = vec![(0.0, 0.0); got.len()];
            for (i, &v) in a.indexed_iter() {
                let mut k = 0;
                for &axis in &kept {
                    k = k * shape[axis] + i[axis];
                }
                if !v.is_nan() {
                    want[k].0 += v;
                    want[k].1 += 1.0;
                }
            }
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.0 - w.0).abs() < 1e-9 && g.1 == w.1,
                    "{axes:?}: {g:?} {w:?}"
                );
            }
            let (sums, counts) = nan_sums_counts(&a, &axes);
            for ((s, c), w) in sums.iter().zip(&counts).zip(&want) {
                assert!(
                    (s - w.0).abs() < 1e-9 && *c == w.1,
                    "{axes:?}: {s} {c} {w:?}"
                );
            }
        }
    }

    #[test]
    fn sums_over_leading_and_middle_axes_are_the_transposed_lanes_bits() {
        // Values of mixed sign and size (rounding differs with the order of additions),
        // row counts with and without a remainder of eight, strips of columns beyond 256.
        let cases: [(&[usize], &[usize]); 8] = [
            (&[37, 300], &[0]),
            (&[16, 5], &[0]),
            (&[3, 600], &[0]),
            (&[4, 17, 5], &[1]),
            (&[4, 17, 5], &[0, 1]),
            (&[9, 2, 3, 40], &[1, 2]),
            (&[2, 3, 1], &[1]),
            (&[0, 7], &[0]),
        ];
        for (shape, axes) in cases {
            let n: usize = shape.iter().product();
            let a = ArrayD::from_shape_vec(
                IxDyn(shape),
                (0..n)
                    .map(|i| ((i * 7919) % 1013) as f64 * 1.37e-3 - (i % 5) as f64 * 1e10)
                    .collect(),
            )
            .unwrap();
            let (data, rows, width) = lanes(&a, axes);
            let want = row_sums(&data, rows, width);
            let (got, got_width) = axis_sums(&a, axes);
            assert_eq!(got_width, width, "{shape:?} over {axes:?}");
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{shape:?} over {axes:?}");
        }
    }

    #[test]
    fn raw_float_encoding_is_exactly_what_serde_writes() {
        for shape in [vec![], vec![0], vec![5], vec![3, 4], vec![2, 1, 130]] {
            let n: usize = shape.iter().product();
            let f64s = ArrayD::from_shape_vec(
                IxDyn(&shape),
                (0..n).map(|i| i as f64 * 0.37 - 3.0).collect(),
            )
            .unwrap();
            let f32s = f64s.mapv(|v| v as f32);
            let raw = Block::F64(f64s.clone()).encode().unwrap();
            assert_eq!(raw.as_slice(), encode_value(&f64s).unwrap(), "{shape:?}");
            assert_eq!(
                (raw.as_ptr() as usize + raw.len() - 8 * f64s.len()) % crate::protocol::ALIGN,
                0,
                "the elements start on a cache line"
            );
            assert_eq!(decode_raw::<f64>(&raw).unwrap(), f64s);
            let raw = Block::F32(f32s.clone()).encode().unwrap();
            assert_eq!(raw.as_slice(), encode_value(&f32s).unwrap(), "{shape:?}");
            assert_eq!(decode_value::<ArrayD<f32>>(&raw).unwrap(), f32s);
            for cut in 0..raw.len() {
                assert!(decode_raw::<f32>(&raw[..cut]).is_err());
            }
        }
        // A transposed (not standard layout) array encodes in logical order.
        let t = array![[1.0, 2.0], [3.0, 4.0]].into_dyn().reversed_axes();
        assert_eq!(
            Block::F64(t.clone()).encode().unwrap().as_slice(),
            encode_value(&t).unwrap()
        );
    }

    fn f64s(a: ArrayD<f64>) -> Block {
        Block::F64(a)
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let a = f64s(array![[1.0, 2.0], [3.0, 4.0]].into_dyn());
        let b = f64s(array![10.0, 20.0].into_dyn());
        let sum = Block::binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(sum, f64s(array![[11.0, 22.0], [13.0, 24.0]].into_dyn()));
        let bad = f64s(array![1.0, 2.0, 3.0].into_dyn());
        assert!(
            Block::binary(BinaryOp::Add, &a, &bad)
                .unwrap_err()
                .contains("do not broadcast")
        );
    }

    #[test]
    fn integer_division_is_true_division() {
        let a = Block::I64(array![1, 2, 3].into_dyn());
        let b = Block::I64(array![2, 2, 2].into_dyn());
        assert_eq!(
            Block::binary(BinaryOp::Div, &a, &b).unwrap(),
            f64s(array![0.5, 1.0, 1.5].into_dyn())
        );
    }

    #[test]
    fn partials_merge_like_one_pass() {
        let data = array![[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]].into_dyn();
        for op in [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Min,
            ReduceOp::Max,
            ReduceOp::Var(0),
            ReduceOp::Std(1),
            ReduceOp::ArgMin,
            ReduceOp::ArgMax,
        ] {
            let whole = Partial::of(op, &f64s(data.clone()), &[0, 1], &[0, 0], &[2, 3])
                .finish(op, op.result_dtype(DType::F64));
            let top = Partial::of(
                op,
                &f64s(data.slice(ndarray::s![0..1, ..]).to_owned().into_dyn()),
                &[0, 1],
                &[0, 0],
                &[2, 3],
            );
            let bottom = Partial::of(
                op,
                &f64s(data.slice(ndarray::s![1..2, ..]).to_owned().into_dyn()),
                &[0, 1],
                &[1, 0],
                &[2, 3],
            );
            let merged = top
                .merge(bottom, op)
                .unwrap()
                .finish(op, op.result_dtype(DType::F64));
            match (&whole, &merged) {
                (Block::F64(a), Block::F64(b)) => {
                    assert!((a[[0, 0]] - b[[0, 0]]).abs() < 1e-12, "{op:?}")
                }
                _ => assert_eq!(whole, merged, "{op:?}"),
            }
        }
    }

    #[test]
    fn streaming_and_whole_evaluation_agree() {
        // sum over axis 1 of uniform(0,1)^2, compared with 1, mean over everything
        let rows = 10_000;
        let node = |op, shape: Vec<usize>, dtype, streams| Node {
            op,
            shape,
            dtype,
            streams,
        };
        let nodes = vec![
            node(
                Op::Random {
                    dist: Distribution::Uniform {
                        low: 0.0,
                        high: 1.0,
                    },
                    key: 9,
                },
                vec![rows, 2],
                DType::F64,
                true,
            ),
            node(
                Op::Unary(UnaryOp::Powi(2), 0),
                vec![rows, 2],
                DType::F64,
                true,
            ),
            node(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: vec![1],
                    keepdims: false,
                    arg: 1,
                },
                vec![rows],
                DType::F64,
                true,
            ),
            node(Op::Scalar(Scalar::F64(1.0)), vec![], DType::F64, false),
            node(
                Op::Binary(BinaryOp::Lt, 2, 3),
                vec![rows],
                DType::Bool,
                true,
            ),
        ];
        let output = Output::Partial {
            op: ReduceOp::Mean,
            axes: vec![0],
            offset: vec![0],
            global_shape: vec![rows],
        };
        let streamed = Program {
            inputs: vec![],
            nodes: nodes.clone(),
            output: output.clone(),
        };
        let whole_nodes: Vec<Node> = nodes
            .into_iter()
            .map(|mut n| {
                n.streams = false;
                n
            })
            .collect();
        let whole = Program {
            inputs: vec![],
            nodes: whole_nodes,
            output,
        };
        let value = |p: &Program| match run(p, &[]).unwrap() {
            Outcome::Partial(state) => state.finish(ReduceOp::Mean, DType::F64),
            _ => panic!("a partial"),
        };
        let a = value(&streamed);
        assert_eq!(a, value(&whole));
        let Block::F64(pi4) = a else { panic!() };
        assert!((pi4[[0]] * 4.0 - std::f64::consts::PI).abs() < 0.05);
    }
}
