//! Normal values with AVX-512: eight lanes a register, the same steps as the scalar
//! formulas of the parent module.

use super::{A, ATANH, B, C, D, E, F, HALF_LESS, MANTISSA, ONE, SPLIT, SPLIT_SQUARED};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// [`from_uniform`](super::from_uniform) eight values at a time: the same operations on
/// each lane, so the same bits as [`from_uniform_scalar`](super::from_uniform_scalar).
/// Every lane goes through the central ratio; the lanes in the tails are packed into a list
/// (position and `q`), which the tail formula then goes through 32 at a time, after each
/// block of 1024 values.
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn from_uniform(values: &mut [f64], mean: f64, std: f64) {
    /// Values per block: the most lanes one block can leave for the tail formula.
    const BLOCK: usize = 1024;
    let split = _mm512_set1_pd(SPLIT);
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    // The list of the tails' positions and `q`, 32 more than a block, for the last
    // full-width store and the last four registers read; not zeroed (that would cost more
    // than the values of a small call), written before it is read.
    let mut tail_at = [MaybeUninit::<u64>::uninit(); BLOCK + 32];
    let mut tail_q = [MaybeUninit::<f64>::uninit(); BLOCK + 32];
    let whole = values.len() - values.len() % 8;
    let (body, rest) = values.split_at_mut(whole);
    for block in body.chunks_mut(BLOCK) {
        let mut tails = 0;
        // The central ratio of every lane, four registers at a time (their chains of
        // multiply-adds interleaved, so that one does not wait for the last), and the list
        // of the lanes in the tails.
        let mut list = |q: __m512d, at: usize| {
            let far = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_abs_pd(q), split);
            let at = _mm512_add_epi64(lanes, _mm512_set1_epi64(at as i64));
            // SAFETY: `tails + 8 <= BLOCK + 8`.
            unsafe {
                _mm512_storeu_si512(
                    tail_at.as_mut_ptr().add(tails).cast(),
                    _mm512_maskz_compress_epi64(far, at),
                );
                _mm512_storeu_pd(
                    tail_q.as_mut_ptr().add(tails).cast(),
                    _mm512_maskz_compress_pd(far, q),
                );
            }
            tails += far.count_ones() as usize;
        };
        let mut quads = block.chunks_exact_mut(32);
        let mut at = 0;
        for quad in &mut quads {
            // SAFETY: `quad` holds exactly 32 f64 (unaligned loads and stores).
            unsafe {
                let p = quad.as_mut_ptr();
                let (q, z) = central([
                    _mm512_loadu_pd(p),
                    _mm512_loadu_pd(p.add(8)),
                    _mm512_loadu_pd(p.add(16)),
                    _mm512_loadu_pd(p.add(24)),
                ]);
                for k in 0..4 {
                    _mm512_storeu_pd(p.add(8 * k), _mm512_fmadd_pd(stds, z[k], means));
                    list(q[k], at + 8 * k);
                }
            }
            at += 32;
        }
        for group in quads.into_remainder().chunks_exact_mut(8) {
            // SAFETY: `group` holds exactly eight f64 (unaligned load and store).
            unsafe {
                let ([q], [z]) = central([_mm512_loadu_pd(group.as_ptr())]);
                _mm512_storeu_pd(group.as_mut_ptr(), _mm512_fmadd_pd(stds, z, means));
                list(q, at);
            }
            at += 8;
        }
        // Lanes past the last tail, up to a multiple of 32, are read (not stored): zero.
        for i in tails..tails.next_multiple_of(32) {
            tail_q[i].write(0.0);
            tail_at[i].write(0);
        }
        for start in (0..tails).step_by(32) {
            // SAFETY: `start + 32 <= tails.next_multiple_of(32) <= BLOCK + 32`, and every
            // entry below that has been written.
            let z = unsafe {
                let p = tail_q.as_ptr().add(start).cast::<f64>();
                tail([
                    _mm512_loadu_pd(p),
                    _mm512_loadu_pd(p.add(8)),
                    _mm512_loadu_pd(p.add(16)),
                    _mm512_loadu_pd(p.add(24)),
                ])
            };
            let mut out = [0.0; 32];
            for (k, z) in z.into_iter().enumerate() {
                // SAFETY: `out` holds 32 f64, `8 * k + 8 <= 32`.
                unsafe {
                    _mm512_storeu_pd(out.as_mut_ptr().add(8 * k), _mm512_fmadd_pd(stds, z, means))
                };
            }
            let n = (tails - start).min(32);
            for (at, &value) in tail_at[start..start + n].iter().zip(&out) {
                // SAFETY: entries below `tails` have been written.
                block[unsafe { at.assume_init() } as usize] = value;
            }
        }
    }
    super::from_uniform_scalar(rest, mean, std);
}

/// The central ratio `q A(r) / B(r)` of `N` registers of uniform values (as
/// [`central`](super::central) of `v - HALF_LESS`), the chains of multiply-adds
/// interleaved; `(q, ratio)`.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn central<const N: usize>(v: [__m512d; N]) -> ([__m512d; N], [__m512d; N]) {
    let mut q = v;
    let mut r = v;
    for i in 0..N {
        q[i] = _mm512_sub_pd(v[i], _mm512_set1_pd(HALF_LESS));
        r[i] = _mm512_fnmadd_pd(q[i], q[i], _mm512_set1_pd(SPLIT_SQUARED));
    }
    let (mut num, den) = polynomials(&A, &B, r);
    for i in 0..N {
        num[i] = _mm512_div_pd(_mm512_mul_pd(q[i], num[i]), den[i]);
    }
    (q, num)
}

/// [`tail`](super::tail) on `N` registers of `q` (any `q`: lanes of `|q| <= 0.425` give
/// finite values, unused), the chains interleaved.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn tail<const N: usize>(q: [__m512d; N]) -> [__m512d; N] {
    let one = _mm512_set1_pd(1.0);
    // ln(1/2 - |q|) as ln_unit_interval takes it: 1/2 - |q| is at least 2⁻⁵³ and at most
    // 1/2, a normal double. `r` holds the exponent until the series is done.
    let mut r = [one; N];
    let mut s = [one; N];
    let mut z = [one; N];
    for i in 0..N {
        let y = _mm512_sub_pd(_mm512_set1_pd(0.5), _mm512_abs_pd(q[i]));
        let bits = _mm512_castpd_si512(y);
        let exponent = _mm512_cvtepi64_pd(_mm512_sub_epi64(
            _mm512_srli_epi64::<52>(bits),
            _mm512_set1_epi64(1023),
        ));
        let m = _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi64(MANTISSA as i64)),
            _mm512_set1_epi64(ONE as i64),
        ));
        let big = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(m, _mm512_set1_pd(std::f64::consts::SQRT_2));
        let m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
        r[i] = _mm512_mask_add_pd(exponent, big, exponent, one);
        s[i] = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
        z[i] = _mm512_mul_pd(s[i], s[i]);
    }
    let mut series = [_mm512_set1_pd(ATANH[0]); N];
    for c in &ATANH[1..] {
        for i in 0..N {
            series[i] = _mm512_fmadd_pd(series[i], z[i], _mm512_set1_pd(*c));
        }
    }
    let mut t = r;
    for i in 0..N {
        let ln = _mm512_fmadd_pd(
            r[i],
            _mm512_set1_pd(std::f64::consts::LN_2),
            _mm512_mul_pd(_mm512_add_pd(s[i], s[i]), series[i]),
        );
        r[i] = _mm512_sqrt_pd(_mm512_sub_pd(_mm512_setzero_pd(), ln));
        t[i] = _mm512_sub_pd(r[i], _mm512_set1_pd(1.6));
    }
    let near = ratio(&C, &D, t);
    let mut out = near;
    for i in 0..N {
        let far = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(r[i], _mm512_set1_pd(5.0));
        if far != 0 {
            let [beyond] = ratio(&E, &F, [_mm512_sub_pd(r[i], _mm512_set1_pd(5.0))]);
            out[i] = _mm512_mask_blend_pd(far, near[i], beyond);
        }
        // The sign of q (the ratio is positive).
        let sign = _mm512_and_si512(_mm512_castpd_si512(q[i]), _mm512_set1_epi64(i64::MIN));
        out[i] = _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(out[i]), sign));
    }
    out
}

/// `c(x) / d(x)` on `N` registers.
#[target_feature(enable = "avx512f")]
#[inline]
fn ratio<const N: usize>(c: &[f64; 8], d: &[f64; 8], x: [__m512d; N]) -> [__m512d; N] {
    let (mut num, den) = polynomials(c, d, x);
    for i in 0..N {
        num[i] = _mm512_div_pd(num[i], den[i]);
    }
    num
}

/// `(c(x), d(x))` on `N` registers by Horner's rule, the `2N` chains interleaved.
#[target_feature(enable = "avx512f")]
#[inline]
fn polynomials<const N: usize>(
    c: &[f64; 8],
    d: &[f64; 8],
    x: [__m512d; N],
) -> ([__m512d; N], [__m512d; N]) {
    let mut num = [_mm512_set1_pd(c[7]); N];
    let mut den = [_mm512_set1_pd(d[7]); N];
    for k in (0..7).rev() {
        for i in 0..N {
            num[i] = _mm512_fmadd_pd(num[i], x[i], _mm512_set1_pd(c[k]));
            den[i] = _mm512_fmadd_pd(den[i], x[i], _mm512_set1_pd(d[k]));
        }
    }
    (num, den)
}
