//! Element types of arrays, scalars, and NumPy's promotion rules between them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of an [`super::Array`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// `bool`.
    Bool,
    /// `u8`.
    U8,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl DType {
    /// Every element type, narrowest first.
    pub const ALL: [DType; 6] = [
        DType::Bool,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
    ];

    /// The type both operands of an arithmetic operation are converted to (NumPy's rule for
    /// these types: bool < u8 < i32 < i64 < f32 < f64, except that i32 or i64 with f32
    /// gives f64, which holds every value of both).
    pub fn promote(self, other: DType) -> DType {
        match (self, other) {
            (DType::I32 | DType::I64, DType::F32) | (DType::F32, DType::I32 | DType::I64) => {
                DType::F64
            }
            (a, b) => a.max(b),
        }
    }

    /// The type of `array op scalar` for an array of this type and a scalar of type
    /// `scalar`, where the scalar is "weak" as NumPy 2 takes a Python number: it adopts the
    /// array's type when it is of the same kind or narrower (an integer with an integer
    /// array, any number with a float array, a bool with anything). Otherwise the usual
    /// promotion holds, with an integer scalar meeting a bool array taken as `i64` (NumPy's
    /// default integer).
    pub fn with_scalar(self, scalar: DType) -> DType {
        match (self, scalar) {
            (a, DType::Bool) => a,
            (DType::Bool, s) if s.is_integer() => DType::I64,
            (a, s) if a.is_float() || (a.is_integer() && s.is_integer()) => a,
            (a, s) => a.promote(s),
        }
    }

    /// `true` for the integer types (not `bool`).
    pub fn is_integer(self) -> bool {
        matches!(self, DType::U8 | DType::I32 | DType::I64)
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
            DType::Bool | DType::U8 => 1,
            DType::I32 | DType::F32 => 4,
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
            DType::U8 => "u8",
            DType::I32 => "i32",
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
    /// A `u8`.
    U8(u8),
    /// An `i32`.
    I32(i32),
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
            Scalar::U8(_) => DType::U8,
            Scalar::I32(_) => DType::I32,
            Scalar::I64(_) => DType::I64,
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
        }
    }

    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => f64::from(u8::from(b)),
            Scalar::U8(v) => f64::from(v),
            Scalar::I32(v) => f64::from(v),
            Scalar::I64(v) => v as f64,
            Scalar::F32(v) => f64::from(v),
            Scalar::F64(v) => v,
        }
    }

    /// The value as `i64` (floats truncate toward zero, as NumPy's `astype`).
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::Bool(b) => i64::from(b),
            Scalar::U8(v) => v.into(),
            Scalar::I32(v) => v.into(),
            Scalar::I64(v) => v,
            Scalar::F32(v) => v as i64,
            Scalar::F64(v) => v as i64,
        }
    }

    /// The value as `bool` (non-zero is true).
    pub fn as_bool(self) -> bool {
        match self {
            Scalar::Bool(b) => b,
            Scalar::U8(v) => v != 0,
            Scalar::I32(v) => v != 0,
            Scalar::I64(v) => v != 0,
            Scalar::F32(v) => v != 0.0,
            Scalar::F64(v) => v != 0.0,
        }
    }

    /// The value converted to `dtype` as `astype` converts (integers wrap, floats
    /// truncate toward zero and saturate).
    pub fn cast(self, dtype: DType) -> Scalar {
        let integer = |s: Scalar| match s {
            Scalar::F32(v) => v as i64,
            Scalar::F64(v) => v as i64,
            s => s.as_i64(),
        };
        match dtype {
            DType::Bool => Scalar::Bool(self.as_bool()),
            DType::U8 => Scalar::U8(match self {
                Scalar::F32(v) => v as u8,
                Scalar::F64(v) => v as u8,
                s => integer(s) as u8,
            }),
            DType::I32 => Scalar::I32(match self {
                Scalar::F32(v) => v as i32,
                Scalar::F64(v) => v as i32,
                s => integer(s) as i32,
            }),
            DType::I64 => Scalar::I64(integer(self)),
            DType::F32 => Scalar::F32(self.as_f64() as f32),
            DType::F64 => Scalar::F64(self.as_f64()),
        }
    }

    /// The value converted to `dtype` when `dtype` holds it exactly (a weak scalar meeting
    /// an array: `u8` array + 300 is an error, as in NumPy 2); `None` otherwise. A float
    /// target holds any number (rounded to its precision).
    pub fn fit(self, dtype: DType) -> Option<Scalar> {
        let cast = self.cast(dtype);
        let exact = match (self, cast) {
            (_, Scalar::F32(_) | Scalar::F64(_)) => true,
            (Scalar::F32(_) | Scalar::F64(_), _) => cast.as_f64() == self.as_f64(),
            (_, Scalar::Bool(_)) => self.as_i64() == cast.as_i64(),
            _ => cast.as_i64() == self.as_i64(),
        };
        exact.then_some(cast)
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
        Scalar::I32(v)
    }
}
impl From<u8> for Scalar {
    fn from(v: u8) -> Self {
        Scalar::U8(v)
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
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
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
        assert_eq!(DType::U8.promote(DType::I32), DType::I32);
        assert_eq!(DType::U8.promote(DType::F32), DType::F32);
        assert_eq!(DType::I32.promote(DType::F32), DType::F64);
        assert_eq!(DType::U8.promote(DType::I64), DType::I64);
        assert_eq!(DType::Bool.promote(DType::U8), DType::U8);
    }

    #[test]
    fn scalars_are_weak_as_in_numpy_2() {
        assert_eq!(DType::U8.with_scalar(DType::I64), DType::U8);
        assert_eq!(DType::F32.with_scalar(DType::F64), DType::F32);
        assert_eq!(DType::I32.with_scalar(DType::F64), DType::F64);
        assert_eq!(DType::Bool.with_scalar(DType::I32), DType::I64);
        assert_eq!(DType::U8.with_scalar(DType::F32), DType::F32);
        assert_eq!(DType::I64.with_scalar(DType::Bool), DType::I64);
        assert_eq!(Scalar::I64(300).fit(DType::U8), None);
        assert_eq!(Scalar::I64(-1).fit(DType::U8), None);
        assert_eq!(Scalar::I64(255).fit(DType::U8), Some(Scalar::U8(255)));
        assert_eq!(Scalar::F64(0.5).fit(DType::F32), Some(Scalar::F32(0.5)));
        assert_eq!(Scalar::I64(1 << 40).fit(DType::I32), None);
    }

    #[test]
    fn casts_truncate_like_numpy() {
        assert_eq!(Scalar::F64(-2.7).cast(DType::I64), Scalar::I64(-2));
        assert_eq!(Scalar::F64(0.0).cast(DType::Bool), Scalar::Bool(false));
        assert_eq!(Scalar::Bool(true).cast(DType::F32), Scalar::F32(1.0));
        assert_eq!(Scalar::I64(300).cast(DType::U8), Scalar::U8(44));
        assert_eq!(Scalar::F64(-3.9).cast(DType::I32), Scalar::I32(-3));
        assert_eq!(Scalar::I32(-1).cast(DType::I64), Scalar::I64(-1));
    }
}
