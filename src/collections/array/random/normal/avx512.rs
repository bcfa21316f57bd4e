//! The ziggurat with AVX-512: eight lanes a register for the first test; the values it
//! does not settle are listed and taken 64 at a time (eight registers, their chains of
//! dependent steps interleaved) through the same steps as [`slow`](super::slow). Only the
//! tail, one value in 4000, is finished one at a time.

use super::SPLITMIX_GAMMA;
use super::{
    ATANH, F, MANTISSA, ONE, PIECE, R, RETRY_STEP, TWO, X, signed_unit, tail, turn_scalar,
};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Registers of values the rare cases are finished in at once.
const REGISTERS: usize = 8;
/// Values finished at once.
const BATCH: usize = 8 * REGISTERS;

/// [`turn_scalar`](super::turn_scalar) eight values at a time (the same bits).
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn turn(values: &mut [u64], salted: u64, first: u64, mean: f64, std: f64) {
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let whole = values.len() - values.len() % 8;
    let (body, rest) = values.split_at_mut(whole);
    // Which lanes of each register the first test left: bit k of group g.
    let mut left = [0u8; PIECE / 8];
    for (g, group) in body.chunks_exact_mut(8).enumerate() {
        // SAFETY: `group` holds exactly eight u64 (unaligned load, masked store).
        unsafe {
            let p = group.as_mut_ptr();
            let b = _mm512_loadu_si512(p.cast());
            let (u, width, inside) = first_test(b);
            let value = _mm512_fmadd_pd(stds, _mm512_mul_pd(u, width), means);
            // Lanes left keep their raw value.
            _mm512_mask_storeu_pd(p.cast(), inside, value);
            left[g] = !inside;
        }
    }
    // The positions left, then finished `BATCH` at a time.
    let mut list = [MaybeUninit::<u64>::uninit(); PIECE];
    let mut n = 0;
    for (g, &lanes) in left.iter().enumerate().take(whole / 8) {
        let mut lanes = lanes;
        while lanes != 0 {
            list[n].write((8 * g) as u64 + lanes.trailing_zeros() as u64);
            lanes &= lanes - 1;
            n += 1;
        }
    }
    for start in (0..n).step_by(BATCH) {
        let count = (n - start).min(BATCH);
        let mut batch = [0u64; BATCH];
        for (b, at) in batch.iter_mut().zip(&list[start..start + count]) {
            // SAFETY: the first `n` entries were written.
            *b = unsafe { at.assume_init() };
        }
        // SAFETY: the positions are below `whole`.
        unsafe { finish(body, &batch, count, salted, first, mean, std) };
    }
    turn_scalar(rest, salted, first + whole as u64, mean, std);
}

/// The ziggurat's first test on eight raw values: `(u, X[i], whether |u| < R[i])`.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn first_test(b: __m512i) -> (__m512d, __m512d, __mmask8) {
    let i = _mm512_and_si512(_mm512_srli_epi64::<4>(b), _mm512_set1_epi64(0xff));
    let u = _mm512_sub_pd(
        _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_srli_epi64::<12>(b),
            _mm512_set1_epi64(TWO as i64),
        )),
        _mm512_set1_pd(3.0),
    );
    // SAFETY: the indices are below 256; both tables have 257 entries.
    let (width, ratio) = unsafe {
        (
            _mm512_i64gather_pd::<8>(i, X.as_ptr().cast()),
            _mm512_i64gather_pd::<8>(i, R.as_ptr().cast()),
        )
    };
    let inside = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(u), ratio);
    (u, width, inside)
}

/// SplitMix64's finaliser on eight lanes.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn mix(z: __m512i) -> __m512i {
    let z = _mm512_mullo_epi64(
        _mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)),
        _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9_u64 as i64),
    );
    let z = _mm512_mullo_epi64(
        _mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)),
        _mm512_set1_epi64(0x94D0_49BB_1331_11EB_u64 as i64),
    );
    _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z))
}

/// [`ln_unit_interval`](super::ln_unit_interval) on eight lanes, the same steps.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn ln(y: __m512d) -> __m512d {
    let one = _mm512_set1_pd(1.0);
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
    let exponent = _mm512_mask_add_pd(exponent, big, exponent, one);
    let s = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    let z = _mm512_mul_pd(s, s);
    let mut series = _mm512_set1_pd(ATANH[0]);
    for c in &ATANH[1..] {
        series = _mm512_fmadd_pd(series, z, _mm512_set1_pd(*c));
    }
    _mm512_fmadd_pd(
        exponent,
        _mm512_set1_pd(std::f64::consts::LN_2),
        _mm512_mul_pd(_mm512_add_pd(s, s), series),
    )
}

/// [`slow`](super::slow) on the values at the first `n` positions of `list` in `values`
/// (raw in, normal with `mean` and `std` out), [`REGISTERS`] registers at once.
///
/// # Safety
/// The CPU has AVX-512F and DQ; the first `n` positions are below `values.len()`.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn finish(
    values: &mut [u64],
    list: &[u64; BATCH],
    n: usize,
    salted: u64,
    first: u64,
    mean: f64,
    std: f64,
) {
    let gamma = _mm512_set1_epi64(SPLITMIX_GAMMA as i64);
    let mut raw = [0u64; BATCH];
    for k in 0..n {
        raw[k] = values[list[k] as usize];
    }
    let zero = _mm512_setzero_si512();
    let mut b = [zero; REGISTERS];
    let mut state = [zero; REGISTERS];
    let mut pending = [0u8; REGISTERS];
    let mut tails = [0u8; REGISTERS];
    let mut z = [_mm512_setzero_pd(); REGISTERS];
    for r in 0..REGISTERS {
        let lanes = n.saturating_sub(8 * r).min(8);
        pending[r] = ((1u16 << lanes) - 1) as u8;
        // SAFETY: `raw` and `list` hold `8 * REGISTERS` u64.
        let at = unsafe {
            b[r] = _mm512_loadu_si512(raw.as_ptr().add(8 * r).cast());
            _mm512_loadu_si512(list.as_ptr().add(8 * r).cast())
        };
        // The retry streams (`retry_seed` of each lane's position).
        let j = _mm512_add_epi64(at, _mm512_set1_epi64(first as i64));
        state[r] = _mm512_xor_si512(
            _mm512_set1_epi64(salted as i64),
            _mm512_mullo_epi64(j, _mm512_set1_epi64(RETRY_STEP as i64)),
        );
    }
    while pending.iter().any(|&p| p != 0) {
        for r in 0..REGISTERS {
            if pending[r] == 0 {
                continue;
            }
            let (u, width, inside) = first_test(b[r]);
            let x = _mm512_mul_pd(u, width);
            let done = pending[r] & inside;
            z[r] = _mm512_mask_mov_pd(z[r], done, x);
            pending[r] &= !done;
            let i = _mm512_and_si512(_mm512_srli_epi64::<4>(b[r]), _mm512_set1_epi64(0xff));
            let base = pending[r] & _mm512_cmpeq_epi64_mask(i, zero);
            tails[r] |= base;
            pending[r] &= !base;
            if pending[r] == 0 {
                continue;
            }
            // The wedge: a height `y` in the layer, under the curve when ln(y) < -x²/2.
            state[r] = _mm512_mask_add_epi64(state[r], pending[r], state[r], gamma);
            let height = _mm512_sub_pd(
                _mm512_castsi512_pd(_mm512_or_si512(
                    _mm512_srli_epi64::<12>(mix(state[r])),
                    _mm512_set1_epi64(ONE as i64),
                )),
                _mm512_set1_pd(1.0),
            );
            // SAFETY: the indices are below 256 (and their successors below 257): both
            // tables have 257 entries.
            let (bottom, top) = unsafe {
                (
                    _mm512_i64gather_pd::<8>(i, F.as_ptr().cast()),
                    _mm512_i64gather_pd::<8>(
                        _mm512_add_epi64(i, _mm512_set1_epi64(1)),
                        F.as_ptr().cast(),
                    ),
                )
            };
            let y = _mm512_fmadd_pd(_mm512_sub_pd(top, bottom), height, bottom);
            let limit = _mm512_mul_pd(_mm512_mul_pd(_mm512_set1_pd(-0.5), x), x);
            let under = pending[r] & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(ln(y), limit);
            z[r] = _mm512_mask_mov_pd(z[r], under, x);
            pending[r] &= !under;
            // A new point for the rest.
            state[r] = _mm512_mask_add_epi64(state[r], pending[r], state[r], gamma);
            b[r] = _mm512_mask_mov_epi64(b[r], pending[r], mix(state[r]));
        }
    }
    let mut out = [0.0f64; BATCH];
    for r in 0..REGISTERS {
        // SAFETY: `out` holds `8 * REGISTERS` f64.
        unsafe {
            _mm512_storeu_pd(
                out.as_mut_ptr().add(8 * r),
                _mm512_fmadd_pd(_mm512_set1_pd(std), z[r], _mm512_set1_pd(mean)),
            )
        };
        if tails[r] != 0 {
            let mut states = [0u64; 8];
            let mut last = [0u64; 8];
            // SAFETY: both hold exactly eight u64.
            unsafe {
                _mm512_storeu_si512(states.as_mut_ptr().cast(), state[r]);
                _mm512_storeu_si512(last.as_mut_ptr().cast(), b[r]);
            }
            for k in 0..8 {
                if tails[r] & (1 << k) != 0 {
                    out[8 * r + k] = std.mul_add(tail(states[k], signed_unit(last[k])), mean);
                }
            }
        }
    }
    for k in 0..n {
        values[list[k] as usize] = out[k].to_bits();
    }
}
