//! Element types of arrays, scalars, and NumPy's promotion rules between them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of an [`super::Array`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// `bool`.
    Bool,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl DType {
    /// The type both operands of an arithmetic operation are converted to (NumPy's rule for
    /// these four types: bool < i64 < f32 < f64, and i64 with f32 gives f64).
    pub fn promote(self, other: DType) -> DType {
        match (self, other) {
            (DType::I64, DType::F32) | (DType::F32, DType::I64) => DType::F64,
            (a, b) => a.max(b),
        }
    }

    /// The type of a floating-point result (true division, `sqrt`, `mean`, ...).
    pub fn float(self) -> DType {
        match self {
            DType::F32 => DType::F32,
            _ => DType::F64,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bool => 1,
            DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// `true` for `f32` and `f64`.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Bool => "bool",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// A single value of one of the element types.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    /// A `bool`.
    Bool(bool),
    /// An `i64`.
    I64(i64),
    /// An `f32`.
    F32(f32),
    /// An `f64`.
    F64(f64),
}

impl Scalar {
    /// Its element type.
    pub fn dtype(self) -> DType {
        match self {
            Scalar::Bool(_) => DType::Bool,
            Scalar::I64(_) => DType::I64,
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
        }
    }

    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => f64::from(u8::from(b)),
            Scalar::I64(v) => v as f64,
            Scalar::F32(v) => f64::from(v),
            Scalar::F64(v) => v,
        }
    }

    /// The value as `i64` (floats truncate toward zero, as NumPy's `astype`).
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::Bool(b) => i64::from(b),
            Scalar::I64(v) => v,
            Scalar::F32(v) => v as i64,
            Scalar::F64(v) => v as i64,
        }
    }

    /// The value as `bool` (non-zero is true).
    pub fn as_bool(self) -> bool {
        match self {
            Scalar::Bool(b) => b,
            Scalar::I64(v) => v != 0,
            Scalar::F32(v) => v != 0.0,
            Scalar::F64(v) => v != 0.0,
        }
    }

    /// The value converted to `dtype`.
    pub fn cast(self, dtype: DType) -> Scalar {
        match dtype {
            DType::Bool => Scalar::Bool(self.as_bool()),
            DType::I64 => Scalar::I64(self.as_i64()),
            DType::F32 => Scalar::F32(self.as_f64() as f32),
            DType::F64 => Scalar::F64(self.as_f64()),
        }
    }
}

impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Scalar::F64(v)
    }
}
impl From<f32> for Scalar {
    fn from(v: f32) -> Self {
        Scalar::F32(v)
    }
}
impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Scalar::I64(v)
    }
}
impl From<i32> for Scalar {
    fn from(v: i32) -> Self {
        Scalar::I64(v.into())
    }
}
impl From<bool> for Scalar {
    fn from(v: bool) -> Self {
        Scalar::Bool(v)
    }
}

/// Rust element types that arrays can hold.
pub trait Element:
    Copy + Send + Sync + 'static + Serialize + serde::de::DeserializeOwned + fmt::Debug
{
    /// The matching [`DType`].
    const DTYPE: DType;
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
}
impl Element for i64 {
    const DTYPE: DType = DType::I64;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_numpy() {
        assert_eq!(DType::Bool.promote(DType::I64), DType::I64);
        assert_eq!(DType::I64.promote(DType::F32), DType::F64);
        assert_eq!(DType::F32.promote(DType::F32), DType::F32);
        assert_eq!(DType::Bool.promote(DType::F32), DType::F32);
        assert_eq!(DType::I64.float(), DType::F64);
    }

    #[test]
    fn casts_truncate_like_numpy() {
        assert_eq!(Scalar::F64(-2.7).cast(DType::I64), Scalar::I64(-2));
        assert_eq!(Scalar::F64(0.0).cast(DType::Bool), Scalar::Bool(false));
        assert_eq!(Scalar::Bool(true).cast(DType::F32), Scalar::F32(1.0));
    }
}
