//! The ziggurat with AVX-512, eight lanes a register. The first pass takes each value
//! through a quicker first test (one table lookup, [`PACKED`], instead of two) and lists
//! the positions it leaves (1.7 % of them) as it goes; eight registers then take the
//! listed values through the exact steps of [`slow`](super::slow), a lane that settles its
//! value taking the next listed one, so the registers stay full (their chains of
//! dependent steps interleaved) until the list runs out. Only the tail, one value in
//! 4000, is finished one at a time.

use super::SPLITMIX_GAMMA;
use super::tables::{PACKED, THRESHOLD_BITS};
use super::{
    ATANH, F, MANTISSA, ONE, PIECE, R, RETRY_STEP, TWO, X, signed_unit, tail, turn_scalar,
};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Registers the values the first test left are finished in at once.
const REGISTERS: usize = 8;

/// [`turn_scalar`](super::turn_scalar) eight values at a time (the same bits).
#[target_feature(enable = "avx512f,avx512dq,popcnt")]
pub(super) unsafe fn turn(values: &mut [u64], salted: u64, first: u64, mean: f64, std: f64) {
    // The list below has room for a piece.
    assert!(values.len() <= PIECE);
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let whole = values.len() - values.len() % 8;
    let (body, rest) = values.split_at_mut(whole);
    // The positions the first test left, packed as they are found (each register's are
    // stored whole at the end of the list, hence the slack).
    let mut list = [MaybeUninit::<u64>::uninit(); PIECE + 8];
    let mut n = 0;
    let mut at = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    let eight = _mm512_set1_epi64(8);
    for group in body.chunks_exact_mut(8) {
        // SAFETY: `group` holds exactly eight u64 (unaligned load, masked store); `n` is at
        // most the number of values before this group, so `list` has room for eight more.
        unsafe {
            let p = group.as_mut_ptr();
            let b = _mm512_loadu_si512(p.cast());
            let (x, inside) = fast_test(b);
            let value = _mm512_fmadd_pd(stds, x, means);
            // Lanes left keep their raw value.
            _mm512_mask_storeu_pd(p.cast(), inside, value);
            let left = !inside;
            _mm512_storeu_si512(
                list.as_mut_ptr().add(n).cast(),
                _mm512_maskz_compress_epi64(left, at),
            );
            n += left.count_ones() as usize;
        }
        at = _mm512_add_epi64(at, eight);
    }
    // SAFETY: the first `n` entries were written; they are positions below `whole`.
    unsafe {
        let list = std::slice::from_raw_parts(list.as_ptr().cast::<u64>(), n);
        finish(body, list, salted, first, mean, std);
    }
    turn_scalar(rest, salted, first + whole as u64, mean, std);
}

/// The quicker first test on eight raw values, one lookup of [`PACKED`]: `(x = u X[i],
/// whether |u| < floor(256 R[i]) / 256)`. It leaves 1.74 % of values: the 1.49 % the
/// exact test ([`first_test`]) leaves, and 0.25 % that test settles in [`finish`].
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn fast_test(b: __m512i) -> (__m512d, __mmask8) {
    let i = _mm512_and_si512(_mm512_srli_epi64::<4>(b), _mm512_set1_epi64(0xff));
    let u = _mm512_sub_pd(
        _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_srli_epi64::<12>(b),
            _mm512_set1_epi64(TWO as i64),
        )),
        _mm512_set1_pd(3.0),
    );
    // SAFETY: the indices are below 256, the table's length.
    let packed = unsafe { _mm512_i64gather_epi64::<8>(i, PACKED.as_ptr().cast()) };
    let low = _mm512_set1_epi64((1 << THRESHOLD_BITS) - 1);
    // Both conversions are exact (at most 53 significant bits), as is the scaling.
    let width = _mm512_mul_pd(
        _mm512_cvtepu64_pd(_mm512_andnot_si512(low, packed)),
        _mm512_set1_pd(1.0 / (1u64 << 62) as f64),
    );
    let threshold = _mm512_cvtepu64_pd(_mm512_and_si512(packed, low));
    let inside = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(
        _mm512_mul_pd(
            _mm512_abs_pd(u),
            _mm512_set1_pd((1u64 << THRESHOLD_BITS) as f64),
        ),
        threshold,
    );
    (_mm512_mul_pd(u, width), inside)
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

/// [`slow`](super::slow) on the values at the positions in `list` of `values` (raw in,
/// normal with `mean` and `std` out), eight lanes in each of [`REGISTERS`] registers; a
/// lane that settles its value takes the next position of the list, so the registers stay
/// full until the list runs out. Only the tail is finished one value at a time.
///
/// # Safety
/// The CPU has AVX-512F and DQ; the positions are below `values.len()`, each once.
#[target_feature(enable = "avx512f,avx512dq,popcnt")]
unsafe fn finish(values: &mut [u64], list: &[u64], salted: u64, first: u64, mean: f64, std: f64) {
    let gamma = _mm512_set1_epi64(SPLITMIX_GAMMA as i64);
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let zero = _mm512_setzero_si512();
    let mut pos = [zero; REGISTERS];
    let mut b = [zero; REGISTERS];
    let mut state = [zero; REGISTERS];
    let mut active = [0u8; REGISTERS];
    let mut next = 0;
    // Every read and write below goes through this pointer.
    let base_ptr = values.as_mut_ptr();
    loop {
        let mut busy = false;
        for r in 0..REGISTERS {
            let free = !active[r];
            if free != 0 && next < list.len() {
                let mut take = free;
                let left = list.len() - next;
                if (take.count_ones() as usize) > left {
                    // The lowest `left` free lanes.
                    let mut rest = free;
                    take = 0;
                    for _ in 0..left {
                        let low = rest & rest.wrapping_neg();
                        take |= low;
                        rest ^= low;
                    }
                }
                // SAFETY: `take` has at most `list.len() - next` lanes; the positions are
                // below `values.len()`.
                unsafe {
                    pos[r] =
                        _mm512_mask_expandloadu_epi64(pos[r], take, list.as_ptr().add(next).cast());
                    b[r] = _mm512_mask_i64gather_epi64::<8>(
                        b[r],
                        take,
                        pos[r],
                        base_ptr.cast_const().cast(),
                    );
                }
                next += take.count_ones() as usize;
                // The retry streams (`retry_seed` of each lane's position).
                let j = _mm512_add_epi64(pos[r], _mm512_set1_epi64(first as i64));
                state[r] = _mm512_mask_mov_epi64(
                    state[r],
                    take,
                    _mm512_xor_si512(
                        _mm512_set1_epi64(salted as i64),
                        _mm512_mullo_epi64(j, _mm512_set1_epi64(RETRY_STEP as i64)),
                    ),
                );
                active[r] |= take;
            }
            let pending = active[r];
            if pending == 0 {
                continue;
            }
            busy = true;
            let (u, width, inside) = first_test(b[r]);
            let x = _mm512_mul_pd(u, width);
            let mut done = pending & inside;
            let mut still = pending & !done;
            let i = _mm512_and_si512(_mm512_srli_epi64::<4>(b[r]), _mm512_set1_epi64(0xff));
            let base = still & _mm512_cmpeq_epi64_mask(i, zero);
            if base != 0 {
                still &= !base;
                let mut at = [0u64; 8];
                let mut states = [0u64; 8];
                let mut last = [0u64; 8];
                // SAFETY: each holds exactly eight u64.
                unsafe {
                    _mm512_storeu_si512(at.as_mut_ptr().cast(), pos[r]);
                    _mm512_storeu_si512(states.as_mut_ptr().cast(), state[r]);
                    _mm512_storeu_si512(last.as_mut_ptr().cast(), b[r]);
                }
                for k in 0..8 {
                    if base & (1 << k) != 0 {
                        let value = std.mul_add(tail(states[k], signed_unit(last[k])), mean);
                        // SAFETY: the positions are below `values.len()`.
                        unsafe { *base_ptr.add(at[k] as usize) = value.to_bits() };
                    }
                }
            }
            if still != 0 {
                // The wedge: a height `y` in the layer, under the curve when ln(y) < -x²/2.
                state[r] = _mm512_mask_add_epi64(state[r], still, state[r], gamma);
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
                let under = still & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(ln(y), limit);
                done |= under;
                still &= !under;
                // A new point for the rest.
                state[r] = _mm512_mask_add_epi64(state[r], still, state[r], gamma);
                b[r] = _mm512_mask_mov_epi64(b[r], still, mix(state[r]));
            }
            if done != 0 {
                // SAFETY: the positions are below `values.len()`.
                unsafe {
                    _mm512_mask_i64scatter_pd::<8>(
                        base_ptr.cast(),
                        done,
                        pos[r],
                        _mm512_fmadd_pd(stds, x, means),
                    )
                };
            }
            active[r] = still;
        }
        if !busy {
            return;
        }
    }
}
