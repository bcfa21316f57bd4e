//! The commonest sums with AVX-512 instructions: the same additions in the same order as
//! [`super::lanes_sum_map`] (accumulator `8 r + j` is lane `j` of register `r`).

use super::{ACCUMULATORS, Arg, BinaryOp, Root, Src, combine, truth};
use std::arch::x86_64::*;

/// The sum of `root`'s tile when it is a value, a square, or a comparison with a
/// constant; `None` for the other roots.
#[inline(always)]
pub(super) fn sum_root<'a>(root: Root, src: impl Fn(Arg) -> Src<'a>) -> Option<f64> {
    // SAFETY (all calls below): only reached from code compiled for AVX-512 and run
    // after the CPU was checked for it.
    unsafe {
        match root {
            Root::Value(a) => match src(a) {
                Src::Slice(a) => Some(sum_map(a, |x| x, |x| x)),
                Src::Const(_) => None,
            },
            Root::Square(a) => match src(a) {
                Src::Slice(a) => Some(sum_map(a, |x| _mm512_mul_pd(x, x), |x| x * x)),
                Src::Const(_) => None,
            },
            Root::SquareOf(op, a, b) => {
                macro_rules! square_of {
                    ($vector:ident, |$x:ident, $y:ident| $scalar:expr) => {{
                        let f = |$x: f64, $y: f64| {
                            let d = $scalar;
                            d * d
                        };
                        let v = |x: __m512d, y: __m512d| {
                            let d = $vector(x, y);
                            _mm512_mul_pd(d, d)
                        };
                        match (src(a), src(b)) {
                            (Src::Slice(a), Src::Slice(b)) => Some(sum_map2(a, b, v, f)),
                            (Src::Slice(a), Src::Const(c)) => {
                                let cs = _mm512_set1_pd(c);
                                Some(sum_map(a, |x| v(x, cs), |x| f(x, c)))
                            }
                            (Src::Const(c), Src::Slice(b)) => {
                                let cs = _mm512_set1_pd(c);
                                Some(sum_map(b, |y| v(cs, y), |y| f(c, y)))
                            }
                            (Src::Const(_), Src::Const(_)) => None,
                        }
                    }};
                }
                match op {
                    BinaryOp::Add => square_of!(_mm512_add_pd, |x, y| x + y),
                    BinaryOp::Sub => square_of!(_mm512_sub_pd, |x, y| x - y),
                    BinaryOp::Mul => square_of!(_mm512_mul_pd, |x, y| x * y),
                    BinaryOp::Div => square_of!(_mm512_div_pd, |x, y| x / y),
                    _ => None,
                }
            }
            Root::Binary(op, a, b) => {
                let (Src::Slice(a), Src::Const(c)) = (src(a), src(b)) else {
                    return None;
                };
                let one = _mm512_set1_pd(1.0);
                let cs = _mm512_set1_pd(c);
                macro_rules! compare {
                    ($imm:ident, |$x:ident| $scalar:expr) => {
                        Some(sum_map(
                            a,
                            |v| _mm512_maskz_mov_pd(_mm512_cmp_pd_mask::<$imm>(v, cs), one),
                            |$x| truth($scalar),
                        ))
                    };
                }
                match op {
                    BinaryOp::Lt => compare!(_CMP_LT_OQ, |x| x < c),
                    BinaryOp::Le => compare!(_CMP_LE_OQ, |x| x <= c),
                    BinaryOp::Gt => compare!(_CMP_GT_OQ, |x| x > c),
                    BinaryOp::Ge => compare!(_CMP_GE_OQ, |x| x >= c),
                    BinaryOp::Eq => compare!(_CMP_EQ_OQ, |x| x == c),
                    BinaryOp::Ne => compare!(_CMP_NEQ_UQ, |x| x != c),
                    _ => None,
                }
            }
        }
    }
}

/// [`super::lanes_sum_map`] with `f` on registers of eight (and `g`, the same function on
/// one value, for the last partial group).
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_map(a: &[f64], f: impl Fn(__m512d) -> __m512d, g: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [_mm512_setzero_pd(); 4];
    let mut groups = a.chunks_exact(ACCUMULATORS);
    for group in &mut groups {
        for (r, part) in acc.iter_mut().zip(group.chunks_exact(8)) {
            // SAFETY: `part` holds exactly eight f64.
            let x = unsafe { _mm512_loadu_pd(part.as_ptr()) };
            *r = _mm512_add_pd(*r, f(x));
        }
    }
    let mut lanes = [[0.0f64; 8]; 4];
    for (lane, r) in lanes.iter_mut().zip(acc) {
        // SAFETY: `lane` holds exactly eight f64.
        unsafe { _mm512_storeu_pd(lane.as_mut_ptr(), r) };
    }
    let rest = groups.remainder().iter().fold(0.0, |s, &x| s + g(x));
    combine(lanes) + rest
}

/// [`sum_map`] over two tiles, element by element.
#[inline]
#[target_feature(enable = "avx512f")]
fn sum_map2(
    a: &[f64],
    b: &[f64],
    f: impl Fn(__m512d, __m512d) -> __m512d,
    g: impl Fn(f64, f64) -> f64,
) -> f64 {
    let mut acc = [_mm512_setzero_pd(); 4];
    let mut ga = a.chunks_exact(ACCUMULATORS);
    let mut gb = b.chunks_exact(ACCUMULATORS);
    for (x, y) in (&mut ga).zip(&mut gb) {
        for ((r, px), py) in acc.iter_mut().zip(x.chunks_exact(8)).zip(y.chunks_exact(8)) {
            // SAFETY: `px` and `py` hold exactly eight f64.
            let (vx, vy) = unsafe { (_mm512_loadu_pd(px.as_ptr()), _mm512_loadu_pd(py.as_ptr())) };
            *r = _mm512_add_pd(*r, f(vx, vy));
        }
    }
    let mut lanes = [[0.0f64; 8]; 4];
    for (lane, r) in lanes.iter_mut().zip(acc) {
        // SAFETY: `lane` holds exactly eight f64.
        unsafe { _mm512_storeu_pd(lane.as_mut_ptr(), r) };
    }
    let rest = ga
        .remainder()
        .iter()
        .zip(gb.remainder())
        .fold(0.0, |s, (&x, &y)| s + g(x, y));
    combine(lanes) + rest
}
