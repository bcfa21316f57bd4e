//! The ziggurat's first test with AVX-512, eight lanes a register, with one table lookup
//! ([`PACKED`]: the layer's width and a threshold in one word): [`first_pass`] takes the
//! raw values straight from the generators' registers (a read that starts at a multiple
//! of 8, as the fused programs' are), [`turn`] from memory (any other). Each notes, per
//! register, the lanes it leaves (0.26 % of values), which are then finished one at a time
//! ([`finish`](super::finish)).

use super::super::{load_avx512, step_avx512, store_avx512};
use super::{EIGHT, LAYER_SHIFT, LAYERS, MANTISSA, ONE, PACKED, Params, SIGN, turn_groups};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// [`turn_scalar`](super::turn_scalar) eight values at a time (the same bits).
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) unsafe fn turn(values: &mut [u64], p: Params, first: u64) {
    let scale = Scale::new(p);
    turn_groups(values, p, first, |group| {
        // SAFETY: `group` holds exactly eight u64 (unaligned load and store).
        unsafe {
            let (word, inside) = scale.settle(_mm512_loadu_si512(group.as_ptr().cast()));
            _mm512_storeu_si512(group.as_mut_ptr().cast(), word);
            inside
        }
    });
}

/// The first test straight from the generators (`generators`, at `out`'s first value;
/// stepped once for each group of eight values of `out`): each value the first test
/// settles is written with `p`'s mean and std, the others raw; bit `k` of `settled[g]` says
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
    p: Params,
) {
    debug_assert!(out.len().is_multiple_of(8) && settled.len() >= out.len() / 8);
    let scale = Scale::new(p);
    let mut s = load_avx512(generators);
    for (values, mask) in out.chunks_exact_mut(8).zip(settled.iter_mut()) {
        let (word, inside) = scale.settle(step_avx512(&mut s));
        // SAFETY: `values` holds exactly eight u64 slots (unaligned store).
        unsafe { _mm512_storeu_si512(values.as_mut_ptr().cast(), word) };
        *mask = inside;
    }
    store_avx512(s, generators);
}

/// The mean and standard deviation of the values, in registers.
#[derive(Clone, Copy)]
struct Scale {
    plain: bool,
    means: __m512d,
    stds: __m512d,
}

impl Scale {
    #[target_feature(enable = "avx512f")]
    fn new(p: Params) -> Scale {
        Scale {
            plain: p.plain,
            means: _mm512_set1_pd(p.mean),
            stds: _mm512_set1_pd(p.std),
        }
    }

    /// The first test on eight raw values, one lookup of [`PACKED`]: the words to write
    /// (the value with mean and std where the test settled it, the raw value where it did
    /// not) and the settled lanes. A value passes when a word with the top 12 bits of its
    /// point `u` on top is below the layer's; its standard value is `8u (X[i] + 8) / 8 -
    /// 8u` in one rounding, which is `u X[i]` rounded.
    #[target_feature(enable = "avx512f,avx512dq")]
    #[inline]
    fn settle(self, b: __m512i) -> (__m512i, __mmask8) {
        let mantissa = _mm512_set1_epi64(MANTISSA as i64);
        // Rotated by 12, a raw value has the top 12 bits of `u` (bits 40 to 51) on top and
        // its layer (bits 52 to 62) at the bottom.
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
        let z = _mm512_castsi512_pd(_mm512_ternarylogic_epi64::<0x78>(
            _mm512_castpd_si512(x),
            b,
            _mm512_set1_epi64(SIGN as i64),
        ));
        let value = if self.plain {
            z
        } else {
            _mm512_fmadd_pd(self.stds, z, self.means)
        };
        // Lanes left keep their raw value.
        let word = _mm512_mask_blend_epi64(inside, b, _mm512_castpd_si512(value));
        (word, inside)
    }
}
