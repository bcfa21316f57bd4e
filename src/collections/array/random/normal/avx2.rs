//! Normal values with AVX2 and FMA: four lanes a register, the same steps as the scalar
//! formulas of the parent module (AVX2 has no compress: the tails' list is built by a
//! permutation that each register's mask picks from a table).

use super::{A, ATANH, B, C, D, E, F, HALF_LESS, MANTISSA, ONE, SPLIT, SPLIT_SQUARED};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// [`from_uniform`](super::from_uniform) four values at a time: the same operations on each
/// lane, so the same bits as [`from_uniform_scalar`](super::from_uniform_scalar). Every
/// lane goes through the central ratio; the lanes in the tails are listed (position and
/// `q`), and the tail formula then goes through the list, a block of values at a time.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn from_uniform(values: &mut [f64], mean: f64, std: f64) {
    /// Values per block: the most lanes one block can leave for the tail formula.
    const BLOCK: usize = 1024;
    let split = _mm256_set1_pd(SPLIT);
    let means = _mm256_set1_pd(mean);
    let stds = _mm256_set1_pd(std);
    // The list of the tails' positions and `q`, 16 more than a block for the last four
    // registers read; not zeroed, written before it is read.
    let mut tail_at = [MaybeUninit::<usize>::uninit(); BLOCK + 16];
    let mut tail_q = [MaybeUninit::<f64>::uninit(); BLOCK + 16];
    let whole = values.len() - values.len() % 4;
    let (body, rest) = values.split_at_mut(whole);
    for block in body.chunks_mut(BLOCK) {
        let mut tails = 0;
        // Appends the lanes of `q` in the tails (and their positions) to the list without a
        // branch: the register's lanes, moved by the permutation its mask selects, are all
        // stored, and the list grows by the number that belong to it (which of 4 lanes are
        // in the tails is too random for a branch to predict).
        let mut list = |q: __m256d, at: usize| {
            let far = _mm256_cmp_pd::<_CMP_GT_OQ>(abs(q), split);
            let bits = _mm256_movemask_pd(far) as usize & 0xf;
            // SAFETY: `COMPRESS[bits]` holds eight i32 (unaligned load); `tails + 4 <=
            // BLOCK + 4` entries fit in both lists (at most BLOCK values are listed before
            // the last store of a block), and every entry is a plain 64-bit value.
            unsafe {
                let order = _mm256_loadu_si256(COMPRESS[bits].as_ptr().cast());
                let lanes = _mm256_permutevar8x32_ps(_mm256_castpd_ps(q), order);
                let positions =
                    _mm256_add_epi64(_mm256_set1_epi64x(at as i64), _mm256_set_epi64x(3, 2, 1, 0));
                let positions = _mm256_permutevar8x32_epi32(positions, order);
                _mm256_storeu_pd(
                    tail_q.as_mut_ptr().add(tails).cast(),
                    _mm256_castps_pd(lanes),
                );
                _mm256_storeu_si256(tail_at.as_mut_ptr().add(tails).cast(), positions);
            }
            tails += bits.count_ones() as usize;
        };
        let mut quads = block.chunks_exact_mut(16);
        let mut at = 0;
        for quad in &mut quads {
            // SAFETY: `quad` holds exactly 16 f64 (unaligned loads and stores).
            unsafe {
                let p = quad.as_mut_ptr();
                let (q, z) = central([
                    _mm256_loadu_pd(p),
                    _mm256_loadu_pd(p.add(4)),
                    _mm256_loadu_pd(p.add(8)),
                    _mm256_loadu_pd(p.add(12)),
                ]);
                for k in 0..4 {
                    _mm256_storeu_pd(p.add(4 * k), _mm256_fmadd_pd(stds, z[k], means));
                    list(q[k], at + 4 * k);
                }
            }
            at += 16;
        }
        for group in quads.into_remainder().chunks_exact_mut(4) {
            // SAFETY: `group` holds exactly four f64 (unaligned load and store).
            unsafe {
                let ([q], [z]) = central([_mm256_loadu_pd(group.as_ptr())]);
                _mm256_storeu_pd(group.as_mut_ptr(), _mm256_fmadd_pd(stds, z, means));
                list(q, at);
            }
            at += 4;
        }
        // Lanes past the last tail, up to a multiple of 16, are read (not stored): zero.
        for i in tails..tails.next_multiple_of(16) {
            tail_q[i].write(0.0);
            tail_at[i].write(0);
        }
        for start in (0..tails).step_by(16) {
            // SAFETY: `start + 16 <= tails.next_multiple_of(16) <= BLOCK + 16`, and every
            // entry below that has been written.
            let z = unsafe {
                let p = tail_q.as_ptr().add(start).cast::<f64>();
                tail([
                    _mm256_loadu_pd(p),
                    _mm256_loadu_pd(p.add(4)),
                    _mm256_loadu_pd(p.add(8)),
                    _mm256_loadu_pd(p.add(12)),
                ])
            };
            let mut out = [0.0; 16];
            for (k, z) in z.into_iter().enumerate() {
                // SAFETY: `out` holds 16 f64, `4 * k + 4 <= 16`.
                unsafe {
                    _mm256_storeu_pd(out.as_mut_ptr().add(4 * k), _mm256_fmadd_pd(stds, z, means))
                };
            }
            let n = (tails - start).min(16);
            for (at, &value) in tail_at[start..start + n].iter().zip(&out) {
                // SAFETY: entries below `tails` have been written.
                block[unsafe { at.assume_init() }] = value;
            }
        }
    }
    super::from_uniform_scalar(rest, mean, std);
}

/// For each 4-bit mask of lanes, the 32-bit moves (`_mm256_permutevar8x32_*`) that bring
/// those 64-bit lanes, in order, to the front of a register.
const COMPRESS: [[i32; 8]; 16] = {
    let mut table = [[0; 8]; 16];
    let mut mask = 0;
    while mask < 16 {
        let mut next = 0;
        let mut lane: usize = 0;
        while lane < 4 {
            if mask & (1 << lane) != 0 {
                table[mask][2 * next] = (2 * lane) as i32;
                table[mask][2 * next + 1] = (2 * lane + 1) as i32;
                next += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    table
};

/// `|x|`.
#[target_feature(enable = "avx2")]
#[inline]
fn abs(x: __m256d) -> __m256d {
    _mm256_andnot_pd(_mm256_set1_pd(-0.0), x)
}

/// The central ratio `q A(r) / B(r)` of `N` registers of uniform values (as
/// [`central`](super::central) of `v - HALF_LESS`), the chains interleaved; `(q, ratio)`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn central<const N: usize>(v: [__m256d; N]) -> ([__m256d; N], [__m256d; N]) {
    let mut q = v;
    let mut r = v;
    for i in 0..N {
        q[i] = _mm256_sub_pd(v[i], _mm256_set1_pd(HALF_LESS));
        r[i] = _mm256_fnmadd_pd(q[i], q[i], _mm256_set1_pd(SPLIT_SQUARED));
    }
    let (mut num, den) = polynomials(&A, &B, r);
    for i in 0..N {
        num[i] = _mm256_div_pd(_mm256_mul_pd(q[i], num[i]), den[i]);
    }
    (q, num)
}

/// [`tail`](super::tail) on `N` registers of `q` (any `q`: lanes of `|q| <= 0.425` give
/// finite values, unused), the chains interleaved.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tail<const N: usize>(q: [__m256d; N]) -> [__m256d; N] {
    let one = _mm256_set1_pd(1.0);
    // ln(1/2 - |q|) as ln_unit_interval takes it. `r` holds the exponent until the series
    // is done; `2^52 + e` as a double, minus `2^52`, is `e` (exactly, as a conversion).
    let two_52 = f64::from_bits(0x4330_0000_0000_0000);
    let mut r = [one; N];
    let mut s = [one; N];
    let mut z = [one; N];
    for i in 0..N {
        let y = _mm256_sub_pd(_mm256_set1_pd(0.5), abs(q[i]));
        let bits = _mm256_castpd_si256(y);
        let biased = _mm256_or_si256(
            _mm256_srli_epi64::<52>(bits),
            _mm256_set1_epi64x(two_52.to_bits() as i64),
        );
        let exponent = _mm256_sub_pd(_mm256_castsi256_pd(biased), _mm256_set1_pd(two_52 + 1023.0));
        let m = _mm256_castsi256_pd(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi64x(MANTISSA as i64)),
            _mm256_set1_epi64x(ONE as i64),
        ));
        let big = _mm256_cmp_pd::<_CMP_GT_OQ>(m, _mm256_set1_pd(std::f64::consts::SQRT_2));
        let m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
        r[i] = _mm256_blendv_pd(exponent, _mm256_add_pd(exponent, one), big);
        s[i] = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
        z[i] = _mm256_mul_pd(s[i], s[i]);
    }
    let mut series = [_mm256_set1_pd(ATANH[0]); N];
    for c in &ATANH[1..] {
        for i in 0..N {
            series[i] = _mm256_fmadd_pd(series[i], z[i], _mm256_set1_pd(*c));
        }
    }
    let mut t = r;
    for i in 0..N {
        let ln = _mm256_fmadd_pd(
            r[i],
            _mm256_set1_pd(std::f64::consts::LN_2),
            _mm256_mul_pd(_mm256_add_pd(s[i], s[i]), series[i]),
        );
        r[i] = _mm256_sqrt_pd(_mm256_sub_pd(_mm256_setzero_pd(), ln));
        t[i] = _mm256_sub_pd(r[i], _mm256_set1_pd(1.6));
    }
    let near = ratio(&C, &D, t);
    let mut out = near;
    for i in 0..N {
        let far = _mm256_cmp_pd::<_CMP_GT_OQ>(r[i], _mm256_set1_pd(5.0));
        if _mm256_movemask_pd(far) != 0 {
            let [beyond] = ratio(&E, &F, [_mm256_sub_pd(r[i], _mm256_set1_pd(5.0))]);
            out[i] = _mm256_blendv_pd(near[i], beyond, far);
        }
        // The sign of q (the ratio is positive).
        let sign = _mm256_and_pd(q[i], _mm256_set1_pd(-0.0));
        out[i] = _mm256_or_pd(out[i], sign);
    }
    out
}

/// `c(x) / d(x)` on `N` registers.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn ratio<const N: usize>(c: &[f64; 8], d: &[f64; 8], x: [__m256d; N]) -> [__m256d; N] {
    let (mut num, den) = polynomials(c, d, x);
    for i in 0..N {
        num[i] = _mm256_div_pd(num[i], den[i]);
    }
    num
}

/// `(c(x), d(x))` on `N` registers by Horner's rule, the `2N` chains interleaved.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn polynomials<const N: usize>(
    c: &[f64; 8],
    d: &[f64; 8],
    x: [__m256d; N],
) -> ([__m256d; N], [__m256d; N]) {
    let mut num = [_mm256_set1_pd(c[7]); N];
    let mut den = [_mm256_set1_pd(d[7]); N];
    for k in (0..7).rev() {
        for i in 0..N {
            num[i] = _mm256_fmadd_pd(num[i], x[i], _mm256_set1_pd(c[k]));
            den[i] = _mm256_fmadd_pd(den[i], x[i], _mm256_set1_pd(d[k]));
        }
    }
    (num, den)
}
