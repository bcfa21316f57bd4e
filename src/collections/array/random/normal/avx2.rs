//! The ziggurat's first test with AVX2: four lanes a register; the values it does not
//! settle are left raw and finished one at a time.

use super::{
    LAYER_SHIFT, LAYERS, MANTISSA, ONE, R, SIGN, X, retry_seed, scaled, slow, turn_scalar,
};
use std::arch::x86_64::*;

/// [`turn_scalar`] four values at a time (the same bits).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn turn(values: &mut [u64], salted: u64, first: u64, mean: f64, std: f64) {
    let plain = mean == 0.0 && std == 1.0;
    let means = _mm256_set1_pd(mean);
    let stds = _mm256_set1_pd(std);
    let layers = _mm256_set1_epi64x(LAYERS as i64 - 1);
    let mantissa = _mm256_set1_epi64x(MANTISSA as i64);
    let one_bits = _mm256_set1_epi64x(ONE as i64);
    let one = _mm256_set1_pd(1.0);
    let sign = _mm256_set1_epi64x(SIGN as i64);
    let whole = values.len() - values.len() % 4;
    let (body, rest) = values.split_at_mut(whole);
    // Which lanes of each register the first test left: bit k of group g.
    let mut left = [0u8; super::PIECE / 4];
    for (g, group) in body.chunks_exact_mut(4).enumerate() {
        // SAFETY: `group` holds exactly four u64 (unaligned load and store); the table
        // indices are below `LAYERS` and both tables have more entries.
        unsafe {
            let p = group.as_mut_ptr();
            let b = _mm256_loadu_si256(p.cast());
            let i = _mm256_and_si256(_mm256_srli_epi64::<LAYER_SHIFT>(b), layers);
            let u = _mm256_sub_pd(
                _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(b, mantissa), one_bits)),
                one,
            );
            let width = _mm256_i64gather_pd::<8>(X.as_ptr(), i);
            let ratio = _mm256_i64gather_pd::<8>(R.as_ptr(), i);
            let inside = _mm256_cmp_pd::<_CMP_LT_OQ>(u, ratio);
            let z = _mm256_xor_pd(
                _mm256_mul_pd(u, width),
                _mm256_castsi256_pd(_mm256_and_si256(b, sign)),
            );
            let value = if plain {
                z
            } else {
                _mm256_fmadd_pd(stds, z, means)
            };
            // Lanes left keep their raw value.
            let kept = _mm256_blendv_pd(_mm256_castsi256_pd(b), value, inside);
            _mm256_storeu_pd(p.cast(), kept);
            left[g] = (!_mm256_movemask_pd(inside) & 0xf) as u8;
        }
    }
    for (g, &lanes) in left.iter().enumerate().take(whole / 4) {
        let mut lanes = lanes;
        while lanes != 0 {
            let at = 4 * g + lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            let z = slow(retry_seed(salted, first + at as u64), body[at]);
            body[at] = scaled(z, mean, std, plain).to_bits();
        }
    }
    turn_scalar(rest, salted, first + whole as u64, mean, std);
}
