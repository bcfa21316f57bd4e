//! The ziggurat's first test with AVX2, four lanes a register and two registers a group of
//! eight values, with one table lookup ([`PACKED`]): [`first_pass`] takes the raw values
//! straight from the generators' registers (a read that starts at a multiple of 8, as the
//! fused programs' are), [`turn`] from memory (any other). The values it leaves (about
//! 0.3 %) are finished one at a time ([`finish`](super::finish)).

use super::super::{load_avx2, step_avx2, store_avx2};
use super::{EIGHT, LAYER_SHIFT, LAYERS, MANTISSA, ONE, PACKED, Params, SIGN, turn_groups};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// [`turn_scalar`](super::turn_scalar) eight values at a time (the same bits).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn turn(values: &mut [u64], p: Params, first: u64) {
    let scale = Scale::new(p);
    turn_groups(values, p, first, |group| {
        let mut mask = 0;
        for (h, half) in group.as_chunks_mut::<4>().0.iter_mut().enumerate() {
            // SAFETY: `half` holds exactly four u64 (unaligned load and store).
            unsafe {
                let (word, inside) = scale.settle(_mm256_loadu_si256(half.as_ptr().cast()));
                _mm256_storeu_si256(half.as_mut_ptr().cast(), word);
                mask |= inside << (4 * h);
            }
        }
        mask
    });
}

/// The first test straight from the generators (`generators`, at `out`'s first value;
/// stepped once for each group of eight values of `out`): each value the first test
/// settles is written with `p`'s mean and std, the others raw; bit `k` of `settled[g]` says
/// whether value `8 g + k` was settled.
///
/// # Safety
/// The CPU has AVX2 and FMA; `out.len()` is a multiple of 8, `settled` has room for
/// `out.len() / 8` masks.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn first_pass(
    generators: &mut [[u64; 8]; 4],
    out: &mut [MaybeUninit<u64>],
    settled: &mut [u8],
    p: Params,
) {
    debug_assert!(out.len().is_multiple_of(8) && settled.len() >= out.len() / 8);
    let scale = Scale::new(p);
    let mut s = load_avx2(generators);
    for (values, mask) in out.chunks_exact_mut(8).zip(settled.iter_mut()) {
        let (low, low_inside) = scale.settle(step_avx2(&mut s, 0));
        let (high, high_inside) = scale.settle(step_avx2(&mut s, 1));
        // SAFETY: `values` holds exactly eight u64 slots (unaligned stores of four).
        unsafe {
            _mm256_storeu_si256(values.as_mut_ptr().cast(), low);
            _mm256_storeu_si256(values.as_mut_ptr().add(4).cast(), high);
        }
        *mask = low_inside | (high_inside << 4);
    }
    store_avx2(s, generators);
}

/// The mean and standard deviation of the values, in registers.
#[derive(Clone, Copy)]
struct Scale {
    plain: bool,
    means: __m256d,
    stds: __m256d,
}

impl Scale {
    #[target_feature(enable = "avx2,fma")]
    fn new(p: Params) -> Scale {
        Scale {
            plain: p.plain,
            means: _mm256_set1_pd(p.mean),
            stds: _mm256_set1_pd(p.std),
        }
    }

    /// The first test on four raw values, one lookup of [`PACKED`]: the words to write (the
    /// value with mean and std where the test settled it, the raw value where it did not)
    /// and the settled lanes (bit `k` for lane `k`). A value passes when the top 12 bits
    /// of its point `u` are below the layer's threshold; its standard value is `8u (X[i]
    /// + 8) / 8 - 8u` in one rounding, which is `u X[i]` rounded.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn settle(self, b: __m256i) -> (__m256i, u8) {
        let mantissa = _mm256_set1_epi64x(MANTISSA as i64);
        let i = _mm256_and_si256(
            _mm256_srli_epi64::<LAYER_SHIFT>(b),
            _mm256_set1_epi64x(LAYERS as i64 - 1),
        );
        // SAFETY: the indices are below `LAYERS`, the table's length.
        let packed = unsafe { _mm256_i64gather_epi64::<8>(PACKED.as_ptr().cast(), i) };
        // Both below 2^12, so the signed comparison is the unsigned one.
        let top = _mm256_and_si256(_mm256_srli_epi64::<40>(b), _mm256_set1_epi64x(0xFFF));
        let inside = _mm256_cmpgt_epi64(_mm256_srli_epi64::<52>(packed), top);
        let eights = _mm256_or_si256(
            _mm256_and_si256(b, mantissa),
            _mm256_set1_epi64x(EIGHT as i64),
        );
        let u8 = _mm256_sub_pd(_mm256_castsi256_pd(eights), _mm256_set1_pd(8.0));
        let width = _mm256_castsi256_pd(_mm256_or_si256(
            _mm256_and_si256(packed, mantissa),
            _mm256_set1_epi64x(ONE as i64),
        ));
        let x = _mm256_fmsub_pd(u8, width, u8);
        let z = _mm256_xor_pd(
            x,
            _mm256_castsi256_pd(_mm256_and_si256(b, _mm256_set1_epi64x(SIGN as i64))),
        );
        let value = if self.plain {
            z
        } else {
            _mm256_fmadd_pd(self.stds, z, self.means)
        };
        // Lanes left keep their raw value.
        let word = _mm256_blendv_pd(_mm256_castsi256_pd(b), value, _mm256_castsi256_pd(inside));
        let lanes = _mm256_movemask_pd(_mm256_castsi256_pd(inside)) as u8;
        (_mm256_castpd_si256(word), lanes)
    }
}
