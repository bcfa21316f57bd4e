//! NumPy's everyday elementwise functions: what each computes on one value (the one
//! definition every evaluator uses: the kernel, the fused loops and the in-place updates)
//! and the [`Array`] methods that build them.
//!
//! Floats follow NumPy: `maximum`/`minimum` propagate NaN, `%` takes the sign of the
//! divisor and `//` rounds down (both by NumPy's `divmod` steps), `round` sends halves to
//! the even neighbour. Integers keep their type in `floor`, `ceil`, `trunc`, `sign`,
//! `round`, `maximum`, `minimum`, `%` and `//`, where division by zero gives 0 as in NumPy
//! (which also warns); the other functions give floats.

use super::program::{BinaryOp, UnaryOp};
use super::{Array, Operand};

/// `op` of one float, for the operations whose result is a float (a predicate gives 1 or 0).
macro_rules! unary_float {
    ($name:ident, $t:ty) => {
        /// `op` applied to one value.
        pub fn $name(op: UnaryOp, x: $t) -> $t {
            let truth = |b: bool| if b { 1.0 } else { 0.0 };
            match op {
                UnaryOp::Neg => -x,
                UnaryOp::Abs => x.abs(),
                UnaryOp::Sqrt => x.sqrt(),
                UnaryOp::Exp => x.exp(),
                UnaryOp::Ln => x.ln(),
                UnaryOp::Sin => x.sin(),
                UnaryOp::Cos => x.cos(),
                UnaryOp::Powi(2) => x * x,
                UnaryOp::Powi(n) => x.powi(n),
                UnaryOp::Powf(p) => x.powf(p as $t),
                UnaryOp::Not => truth(x == 0.0),
                UnaryOp::Log10 => x.log10(),
                UnaryOp::Log2 => x.log2(),
                UnaryOp::Log1p => x.ln_1p(),
                UnaryOp::Expm1 => x.exp_m1(),
                UnaryOp::Tan => x.tan(),
                UnaryOp::Arcsin => x.asin(),
                UnaryOp::Arccos => x.acos(),
                UnaryOp::Arctan => x.atan(),
                UnaryOp::Sinh => x.sinh(),
                UnaryOp::Cosh => x.cosh(),
                UnaryOp::Tanh => x.tanh(),
                UnaryOp::Floor => x.floor(),
                UnaryOp::Ceil => x.ceil(),
                UnaryOp::Trunc => x.trunc(),
                UnaryOp::Sign if x > 0.0 => 1.0,
                UnaryOp::Sign if x < 0.0 => -1.0,
                // 0, -0 and NaN stay as they are.
                UnaryOp::Sign => x,
                UnaryOp::Round(decimals) => {
                    // NumPy's steps: scale, round halves to even, scale back.
                    if decimals >= 0 {
                        let f = (10.0 as $t).powi(decimals);
                        (x * f).round_ties_even() / f
                    } else {
                        let f = (10.0 as $t).powi(-decimals);
                        (x / f).round_ties_even() * f
                    }
                }
                UnaryOp::IsNan => truth(x.is_nan()),
                UnaryOp::IsInf => truth(x.is_infinite()),
                UnaryOp::IsFinite => truth(x.is_finite()),
            }
        }
    };
}

unary_float!(unary_f64, f64);
unary_float!(unary_f32, f32);

/// `op` of two floats, for the arithmetic operations (comparisons and logic give 1 or 0).
macro_rules! binary_float {
    ($name:ident, $t:ty) => {
        /// `op` applied to one pair of values.
        pub fn $name(op: BinaryOp, x: $t, y: $t) -> $t {
            let truth = |b: bool| if b { 1.0 } else { 0.0 };
            match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
                BinaryOp::Lt => truth(x < y),
                BinaryOp::Le => truth(x <= y),
                BinaryOp::Gt => truth(x > y),
                BinaryOp::Ge => truth(x >= y),
                BinaryOp::Eq => truth(x == y),
                BinaryOp::Ne => truth(x != y),
                BinaryOp::And => truth(x != 0.0 && y != 0.0),
                BinaryOp::Or => truth(x != 0.0 || y != 0.0),
                BinaryOp::Maximum if x.is_nan() || y.is_nan() => <$t>::NAN,
                BinaryOp::Maximum => x.max(y),
                BinaryOp::Minimum if x.is_nan() || y.is_nan() => <$t>::NAN,
                BinaryOp::Minimum => x.min(y),
                BinaryOp::Arctan2 => x.atan2(y),
                BinaryOp::Hypot => x.hypot(y),
                BinaryOp::Rem => {
                    // NumPy's `npy_divmod`: fmod, then moved to the divisor's sign.
                    let m = x % y;
                    if y == 0.0 {
                        m
                    } else if m != 0.0 {
                        if (y < 0.0) != (m < 0.0) { m + y } else { m }
                    } else {
                        (0.0 as $t).copysign(y)
                    }
                }
                BinaryOp::FloorDiv => {
                    if y == 0.0 {
                        return x / y;
                    }
                    let m = x % y;
                    let mut div = (x - m) / y;
                    if m != 0.0 && (y < 0.0) != (m < 0.0) {
                        div -= 1.0;
                    }
                    if div != 0.0 {
                        let floor = div.floor();
                        if div - floor > 0.5 {
                            floor + 1.0
                        } else {
                            floor
                        }
                    } else {
                        (0.0 as $t).copysign(x / y)
                    }
                }
            }
        }
    };
}

binary_float!(binary_f64, f64);
binary_float!(binary_f32, f32);

/// Python's `%` and `//` on integers of one type (by zero both give 0, as NumPy does), and
/// the sign.
pub(super) trait FloorInt: Copy {
    fn py_rem(self, y: Self) -> Self;
    fn py_div(self, y: Self) -> Self;
    /// -1, 0 or 1 by sign.
    fn sign(self) -> Self;
}

macro_rules! floor_int {
    ($($t:ty),*) => {$(
        impl FloorInt for $t {
            #[allow(unused_comparisons)] // u8 is never below zero
            fn py_rem(self, y: $t) -> $t {
                if y == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(y);
                if r != 0 && (r < 0) != (y < 0) { r.wrapping_add(y) } else { r }
            }
            #[allow(unused_comparisons)]
            fn py_div(self, y: $t) -> $t {
                if y == 0 {
                    return 0;
                }
                let d = self.wrapping_div(y);
                let r = self.wrapping_rem(y);
                if r != 0 && (r < 0) != (y < 0) { d.wrapping_sub(1) } else { d }
            }
            #[allow(unused_comparisons)]
            fn sign(self) -> $t {
                <$t>::from(self > 0) - <$t>::from(self < 0)
            }
        }
    )*};
}

floor_int!(u8, i32, i64);

/// NumPy's `round` of an integer to `decimals` (negative: to tens, hundreds, ...; halves
/// to even), computed exactly.
pub(super) fn round_int(x: i64, decimals: i32) -> i64 {
    if decimals >= 0 {
        return x;
    }
    let Some(f) = 10i64.checked_pow(decimals.unsigned_abs()) else {
        return 0;
    };
    let (q, r) = (x.div_euclid(f), x.rem_euclid(f));
    let up = match (2 * (r as i128)).cmp(&(f as i128)) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => q % 2 != 0,
    };
    (q + i64::from(up)).wrapping_mul(f)
}

/// The elementwise functions of NumPy beyond arithmetic, as methods.
impl Array {
    /// Base-10 logarithm (`np.log10`).
    pub fn log10(&self) -> Array {
        self.unary(UnaryOp::Log10)
    }
    /// Base-2 logarithm (`np.log2`).
    pub fn log2(&self) -> Array {
        self.unary(UnaryOp::Log2)
    }
    /// `ln(1 + x)`, accurate for small `x` (`np.log1p`).
    pub fn log1p(&self) -> Array {
        self.unary(UnaryOp::Log1p)
    }
    /// `e^x - 1`, accurate for small `x` (`np.expm1`).
    pub fn expm1(&self) -> Array {
        self.unary(UnaryOp::Expm1)
    }
    /// Tangent.
    pub fn tan(&self) -> Array {
        self.unary(UnaryOp::Tan)
    }
    /// Inverse sine (`np.arcsin`).
    pub fn arcsin(&self) -> Array {
        self.unary(UnaryOp::Arcsin)
    }
    /// Inverse cosine (`np.arccos`).
    pub fn arccos(&self) -> Array {
        self.unary(UnaryOp::Arccos)
    }
    /// Inverse tangent (`np.arctan`).
    pub fn arctan(&self) -> Array {
        self.unary(UnaryOp::Arctan)
    }
    /// Hyperbolic sine.
    pub fn sinh(&self) -> Array {
        self.unary(UnaryOp::Sinh)
    }
    /// Hyperbolic cosine.
    pub fn cosh(&self) -> Array {
        self.unary(UnaryOp::Cosh)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Array {
        self.unary(UnaryOp::Tanh)
    }
    /// Rounded down (integers keep their type and value).
    pub fn floor(&self) -> Array {
        self.unary(UnaryOp::Floor)
    }
    /// Rounded up (integers keep their type and value).
    pub fn ceil(&self) -> Array {
        self.unary(UnaryOp::Ceil)
    }
    /// Rounded toward zero (integers keep their type and value).
    pub fn trunc(&self) -> Array {
        self.unary(UnaryOp::Trunc)
    }
    /// -1, 0 or 1 by sign, in the array's type (NaN stays NaN; booleans give `i64`).
    pub fn sign(&self) -> Array {
        self.unary(UnaryOp::Sign)
    }
    /// Rounded to `decimals` decimals (negative: to tens, hundreds, ...), halves to even as
    /// NumPy's `round`; integers keep their type.
    pub fn round(&self, decimals: i32) -> Array {
        self.unary(UnaryOp::Round(decimals))
    }
    /// Whether each element is NaN (booleans; integers are never NaN).
    pub fn isnan(&self) -> Array {
        self.unary(UnaryOp::IsNan)
    }
    /// Whether each element is infinite.
    pub fn isinf(&self) -> Array {
        self.unary(UnaryOp::IsInf)
    }
    /// Whether each element is neither NaN nor infinite.
    pub fn isfinite(&self) -> Array {
        self.unary(UnaryOp::IsFinite)
    }
    /// The larger of each pair, NaN where either is NaN (`np.maximum`, with broadcasting).
    pub fn maximum(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Maximum, other)
    }
    /// The smaller of each pair, NaN where either is NaN (`np.minimum`).
    pub fn minimum(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Minimum, other)
    }
    /// `atan(self / other)` in the quadrant of `(other, self)` (`np.arctan2`).
    pub fn arctan2(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Arctan2, other)
    }
    /// `sqrt(self² + other²)` without overflow (`np.hypot`).
    pub fn hypot(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Hypot, other)
    }
    /// The remainder with the sign of `other`, as Python's `%` and `np.remainder` (the `%`
    /// operator too; integer `% 0` gives 0, as in NumPy).
    pub fn remainder(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::Rem, other)
    }
    /// The quotient rounded down, as Python's `//` (integer `// 0` gives 0, as in NumPy).
    pub fn floor_div(&self, other: impl Into<Operand>) -> Array {
        self.binary(BinaryOp::FloorDiv, other)
    }
    /// Limited to `[low, high]` (`np.clip`; NaN stays NaN): `minimum(maximum(x, low), high)`.
    pub fn clip(&self, low: impl Into<Operand>, high: impl Into<Operand>) -> Array {
        self.maximum(low).minimum(high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_divide_and_round_as_numpy() {
        // np.remainder / np.floor_divide / np.round on these values.
        let rem = |x, y| binary_f64(BinaryOp::Rem, x, y);
        let div = |x, y| binary_f64(BinaryOp::FloorDiv, x, y);
        assert_eq!(rem(5.5, 2.0), 1.5);
        assert_eq!(rem(-5.5, 2.0), 0.5);
        assert_eq!(rem(5.5, -2.0), -0.5);
        assert!(rem(1.0, 0.0).is_nan());
        assert!(rem(-4.0, 2.0) == 0.0 && rem(-4.0, 2.0).is_sign_positive());
        assert!(rem(4.0, -2.0) == 0.0 && rem(4.0, -2.0).is_sign_negative());
        assert_eq!(div(5.5, 2.0), 2.0);
        assert_eq!(div(-5.5, 2.0), -3.0);
        assert_eq!(div(5.5, -2.0), -3.0);
        assert_eq!(div(1.0, 0.0), f64::INFINITY);
        let round = |x, d| unary_f64(UnaryOp::Round(d), x);
        assert_eq!(round(2.5, 0), 2.0);
        assert_eq!(round(3.5, 0), 4.0);
        assert_eq!(round(-0.5, 0), -0.0);
        assert_eq!(round(1234.5678, 2), 1234.57);
        assert_eq!(round(1250.0, -2), 1200.0);
        assert_eq!(round(1350.0, -2), 1400.0);
        assert!(binary_f64(BinaryOp::Maximum, f64::NAN, 1.0).is_nan());
        assert!(binary_f64(BinaryOp::Minimum, 1.0, f64::NAN).is_nan());
        assert!(unary_f64(UnaryOp::Sign, f64::NAN).is_nan());
        assert_eq!(unary_f64(UnaryOp::Sign, -3.0), -1.0);
    }

    #[test]
    fn integers_divide_and_round_as_python() {
        assert_eq!(7i64.py_rem(-3), -2);
        assert_eq!((-7i64).py_rem(3), 2);
        assert_eq!((-7i64).py_div(3), -3);
        assert_eq!(7i64.py_div(-3), -3);
        assert_eq!(7i32.py_div(0), 0);
        assert_eq!(7u8.py_rem(0), 0);
        assert_eq!(200u8.py_div(7), 28);
        assert_eq!(i64::MIN.py_div(-1), i64::MIN);
        assert_eq!(round_int(15, -1), 20);
        assert_eq!(round_int(25, -1), 20);
        assert_eq!(round_int(-15, -1), -20);
        assert_eq!(round_int(-14, -1), -10);
        assert_eq!(round_int(1234, 2), 1234);
    }
}
