//! The ziggurat's first test with AVX-512, eight lanes a register, with one table lookup
//! ([`PACKED`]: the layer's width and a threshold in one word): [`first_pass`] takes the
//! raw values straight from the generators' registers (a read that starts at a multiple
//! of 8, as the fused programs' are), [`turn`] from memory (any other). Each notes, per
//! register, the lanes it leaves (0.26 % of values), which are then finished one at a time.

use super::super::{load_avx512, step_avx512, store_avx512};
use super::{LAYER_SHIFT, LAYERS, MANTISSA, ONE, PIECE, R, SIGN, X, finish, turn_scalar};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// The bits of 8.0: `(bits & MANTISSA) | EIGHT` is `8 (1 + u)`, a double in `[8, 16)`.
const EIGHT: u64 = 0x4020_0000_0000_0000;

/// Layer `i`'s width and a first-test threshold in one word, for one table lookup (the
/// AVX-512 gathers are dear): the low 52 bits are the mantissa of `(X[i] + 8) / 8` (a
/// double in `[1, 2)`, exact: every width lies on the grid of 2^-49 and below 8), the top
/// 12 bits (where that double's sign and exponent were, the same for every layer) hold
/// `t - 1` with `t = floor(4096 R[i])`. The test compares a whole word whose top 12 bits
/// are those of the value's point `u` with this one: a value passes when they are below
/// `t - 1`, and may when they equal it, so `u < t / 4096 <= R[i]` whenever it passes. The
/// others go through the exact test, which settles 0.03 % of values more. The top layer
/// (`R = 0`, `t = 0`) is the word 0, which nothing passes.
static PACKED: [u64; LAYERS] = {
    let mut packed = [0u64; LAYERS];
    let mut i = 0;
    while i < LAYERS {
        let shifted = (X[i] + 8.0) * 0.125;
        assert!(shifted * 8.0 - 8.0 == X[i] && (shifted.to_bits() & !MANTISSA) == ONE);
        // `4096 R[i]` is exact; the cast rounds it down.
        let threshold = (R[i] * 4096.0) as u64;
        assert!(threshold < 4096);
        packed[i] = if threshold == 0 {
            0
        } else {
            ((threshold - 1) << 52) | (shifted.to_bits() & MANTISSA)
        };
        i += 1;
    }
    packed
};

/// [`turn_scalar`](super::turn_scalar) eight values at a time (the same bits).
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn turn(values: &mut [u64], salted: u64, first: u64, mean: f64, std: f64) {
    // The masks below have room for a piece.
    assert!(values.len() <= PIECE);
    let plain = mean == 0.0 && std == 1.0;
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let whole = values.len() - values.len() % 8;
    let (body, rest) = values.split_at_mut(whole);
    // Bit `k` of `settled[g]`: whether the first test settled value `8 g + k`.
    let mut settled = [0u8; PIECE / 8];
    for (group, mask) in body.chunks_exact_mut(8).zip(settled.iter_mut()) {
        // SAFETY: `group` holds exactly eight u64 (unaligned load, masked store).
        unsafe {
            let p = group.as_mut_ptr();
            let (z, inside) = fast_test(_mm512_loadu_si512(p.cast()));
            let value = if plain {
                z
            } else {
                _mm512_fmadd_pd(stds, z, means)
            };
            // Lanes left keep their raw value.
            _mm512_mask_storeu_pd(p.cast(), inside, value);
            *mask = inside;
        }
    }
    finish(body, &settled[..whole / 8], salted, first, mean, std);
    turn_scalar(rest, salted, first + whole as u64, mean, std);
}

/// The first test straight from the generators (`generators`, at `out`'s first value;
/// stepped once for each group of eight values of `out`): each value the first test
/// settles is written with `mean` and `std`, the others raw; bit `k` of `settled[g]` says
/// whether value `8 g + k` was settled.
///
/// # Safety
/// The CPU has AVX-512F and DQ; `out.len()` is a multiple of 8, `settled` has room for
/// `out.len() / 8` masks.
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn first_pass(
    generators: &mut [[u64; 8]; 4],
    out: &mut [MaybeUninit<u64>],
    settled: &mut [u8],
    mean: f64,
    std: f64,
) {
    debug_assert!(out.len().is_multiple_of(8) && settled.len() >= out.len() / 8);
    let plain = mean == 0.0 && std == 1.0;
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let mut s = load_avx512(generators);
    for (values, mask) in out.chunks_exact_mut(8).zip(settled.iter_mut()) {
        let b = step_avx512(&mut s);
        let (z, inside) = fast_test(b);
        let value = if plain {
            z
        } else {
            _mm512_fmadd_pd(stds, z, means)
        };
        // Lanes left keep their raw value.
        let word = _mm512_mask_blend_epi64(inside, b, _mm512_castpd_si512(value));
        // SAFETY: `values` holds exactly eight u64 slots (unaligned store).
        unsafe { _mm512_storeu_si512(values.as_mut_ptr().cast(), word) };
        *mask = inside;
    }
    store_avx512(s, generators);
}

/// The first test on eight raw values, one lookup of [`PACKED`]: `(the signed standard
/// value u X[i], whether the top 12 bits of u are below floor(4096 R[i]))`. The value
/// is `8u (X[i] + 8) / 8 - 8u` in one rounding, which is `u X[i]` rounded.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn fast_test(b: __m512i) -> (__m512d, __mmask8) {
    let mantissa = _mm512_set1_epi64(MANTISSA as i64);
    // Rotated by 12, a raw value has the top 12 bits of `u` (bits 40 to 51) on top and its
    // layer (bits 52 to 62) at the bottom.
    let rotated = _mm512_rol_epi64::<{ 64 - LAYER_SHIFT }>(b);
    let i = _mm512_and_si512(rotated, _mm512_set1_epi64(LAYERS as i64 - 1));
    // SAFETY: the indices are below `LAYERS`, the table's length.
    let packed = unsafe { _mm512_i64gather_epi64::<8>(i, PACKED.as_ptr().cast()) };
    // The top 12 bits of `u` against the threshold (below them, the words' bits decide
    // nothing that matters: the threshold is one less than it may be).
    let inside = _mm512_cmp_epu64_mask::<_MM_CMPINT_LT>(rotated, packed);
    // (a & b) | c
    let eights = _mm512_castsi512_pd(_mm512_ternarylogic_epi64::<0xEA>(
        b,
        mantissa,
        _mm512_set1_epi64(EIGHT as i64),
    ));
    let u8 = _mm512_sub_pd(eights, _mm512_set1_pd(8.0));
    let width = _mm512_castsi512_pd(_mm512_ternarylogic_epi64::<0xEA>(
        packed,
        mantissa,
        _mm512_set1_epi64(ONE as i64),
    ));
    let x = _mm512_fmsub_pd(u8, width, u8);
    // a ^ (b & c): the sign of the raw value's top bit.
    let z = _mm512_ternarylogic_epi64::<0x78>(
        _mm512_castpd_si512(x),
        b,
        _mm512_set1_epi64(SIGN as i64),
    );
    (_mm512_castsi512_pd(z), inside)
}
