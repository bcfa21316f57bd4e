//! Normal values by Marsaglia and Tsang's ziggurat (256 layers), one uniform value per
//! normal value in all but about 1.5 % of cases, so that value `j` of a key depends on
//! `(key, j)` alone, like a uniform value.
//!
//! Value `j` starts from uniform value `j` of the key's stream: of its 52 bits, the low 8
//! pick the layer, the next the sign, the top 43 the position `u` in `[0, 1)` along the
//! layer. `x = u * X[layer]` is taken when it lies under the next layer's edge
//! (`x < X[layer + 1]`): one multiplication and one comparison, eight values at a time with
//! AVX-512. The rare rest (the wedges beside the curve and the tail
//! beyond `R`) goes to the exact scalar test, which draws what further uniform values it
//! needs from a SplitMix64 stream seeded with `(key, j)`.
//!
//! The tables are computed once, by the recurrence of the paper, with the polynomial
//! logarithm and exponential below (additions, multiplications, one division, square
//! roots: no library call), so the same bits come out on every machine, on every path.

use super::{MANTISSA, ONE, SPLITMIX_GAMMA, mix};
use std::sync::OnceLock;

/// Layers of the ziggurat.
const LAYERS: usize = 256;
/// Where the tail starts: the base layer's edge.
const R: f64 = 3.654_152_885_361_009;
/// The area of each layer (Marsaglia and Tsang's `v` for 256 layers and this `R`).
const V: f64 = 4.928_673_233_99e-3;

const SIGN: u64 = 0x8000_0000_0000_0000;

/// The layers' edges `X[0] > X[1] = R > ... > X[256] = 0` and the density at each.
struct Tables {
    x: [f64; LAYERS + 1],
    f: [f64; LAYERS + 1],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut x = [0.0; LAYERS + 1];
        x[0] = V / density(R);
        x[1] = R;
        for i in 1..LAYERS - 1 {
            x[i + 1] = (-2.0 * super::ln_unit_interval(V / x[i] + density(x[i]))).sqrt();
        }
        x[LAYERS] = 0.0;
        let f = x.map(density);
        Tables { x, f }
    })
}

/// `exp(-x^2 / 2)`.
#[inline(always)]
fn density(x: f64) -> f64 {
    exp_non_positive(-0.5 * (x * x))
}

/// `exp(a)` for `a` in `[-700, 0]`: `a = n ln 2 + r` with `|r| <= ln 2 / 2` (`ln 2` in two
/// parts, so `r` is exact), `exp(r)` by its Taylor series to the term below the rounding
/// (degree 13, Horner), times `2^n`. Relative error within a few units in the last place.
#[inline(always)]
fn exp_non_positive(a: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1 / k! for k = 13 down to 0.
    const TAYLOR: [f64; 14] = {
        let mut c = [1.0; 14];
        let mut k = 1;
        while k < 14 {
            c[13 - k] = c[14 - k] / k as f64;
            k += 1;
        }
        c
    };
    // Nearest integer to a / ln 2 (a <= 0), by truncation of its negation.
    let n = -((0.5 - a * std::f64::consts::LOG2_E) as i64) as f64;
    let r = (a - n * LN2_HI) - n * LN2_LO;
    let mut series = TAYLOR[0];
    for c in &TAYLOR[1..] {
        series = series * r + c;
    }
    series * f64::from_bits(((n as i64 + 1023) as u64) << 52)
}

/// The layer, the sign and the position along the layer that a uniform value's bits pick.
#[inline(always)]
fn pick(mantissa: u64) -> (usize, bool, f64) {
    let layer = (mantissa & 0xFF) as usize;
    let negative = mantissa & 0x100 != 0;
    let u = f64::from_bits(((mantissa >> 9) << 9) | ONE) - 1.0;
    (layer, negative, u)
}

#[inline(always)]
fn signed(x: f64, negative: bool) -> f64 {
    f64::from_bits(x.to_bits() ^ if negative { SIGN } else { 0 })
}

/// A double in `(0, 1)`, never 0 (for logarithms).
#[inline(always)]
fn open_unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// SplitMix64 from a seed: the further uniform values of one normal value.
struct SplitMix(u64);

impl SplitMix {
    fn new(key: u64, position: u64) -> SplitMix {
        SplitMix(mix(key ^ position.wrapping_mul(0xA076_1D64_78BD_642F)) ^ 0x5A17_C0DE)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(SPLITMIX_GAMMA);
        mix(self.0)
    }
}

/// The exact ziggurat from a first try that missed the fast test: the wedge test, the tail,
/// and further tries from the value's own SplitMix64 stream.
#[cold]
fn slow(key: u64, position: u64, first: (usize, bool, f64)) -> f64 {
    let t = tables();
    let mut rng = SplitMix::new(key, position);
    let (mut layer, mut negative, mut u) = first;
    loop {
        let x = u * t.x[layer];
        if x < t.x[layer + 1] {
            return signed(x, negative);
        }
        if layer == 0 {
            // The tail beyond R (Marsaglia's method).
            loop {
                let a = super::ln_unit_interval(open_unit(rng.next())) / R;
                let b = super::ln_unit_interval(open_unit(rng.next()));
                if -2.0 * b >= a * a {
                    return signed(R - a, negative);
                }
            }
        }
        let height = t.f[layer + 1] + (t.f[layer] - t.f[layer + 1]) * super::unit(rng.next());
        if height < density(x) {
            return signed(x, negative);
        }
        (layer, negative, u) = pick(rng.next() >> 12);
    }
}

/// Turns `values`, uniform values `first ..` of `key` on `[0, 1)` (as the key's stream
/// gives them), into normal values with `mean` and `std`, in place.
pub(super) fn from_uniform(values: &mut [f64], key: u64, first: u64, mean: f64, std: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has AVX-512F and DQ (checked just above).
            unsafe { from_uniform_avx512(values, key, first, mean, std) };
            return;
        }
    }
    from_uniform_scalar(values, key, first, mean, std);
}

/// [`from_uniform`] one value at a time.
fn from_uniform_scalar(values: &mut [f64], key: u64, first: u64, mean: f64, std: f64) {
    let t = tables();
    for (j, value) in values.iter_mut().enumerate() {
        let mantissa = (*value + 1.0).to_bits() & MANTISSA;
        let (layer, negative, u) = pick(mantissa);
        let x = u * t.x[layer];
        let z = if x < t.x[layer + 1] {
            signed(x, negative)
        } else {
            slow(key, first + j as u64, (layer, negative, u))
        };
        *value = mean + std * z;
    }
}

/// [`from_uniform`] eight values at a time: the same operations on each lane, so the same
/// bits as [`from_uniform_scalar`]. The loop has no branch that depends on the values: the
/// lanes that miss the fast test are packed into a list (position and bits), which the exact
/// test then goes through, a block of values at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn from_uniform_avx512(values: &mut [f64], key: u64, first: u64, mean: f64, std: f64) {
    use std::arch::x86_64::*;
    /// Values per block: the most lanes one block can leave for the exact test.
    const BLOCK: usize = 1024;
    let t = tables();
    let one = _mm512_set1_pd(1.0);
    let mantissa_mask = _mm512_set1_epi64(MANTISSA as i64);
    let exponent = _mm512_set1_epi64(ONE as i64);
    let layer_mask = _mm512_set1_epi64(0xFF);
    let sign_bit = _mm512_set1_epi64(0x100);
    let sign = _mm512_set1_epi64(SIGN as i64);
    let means = _mm512_set1_pd(mean);
    let stds = _mm512_set1_pd(std);
    let evens = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    let odds = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    let lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    // Eight more than a block, for the last full-width store.
    let mut missed_at = [0u64; BLOCK + 8];
    let mut missed_bits = [0u64; BLOCK + 8];
    let whole = values.len() - values.len() % 8;
    let (body, rest) = values.split_at_mut(whole);
    for (b, block) in body.chunks_mut(BLOCK).enumerate() {
        let mut missed = 0;
        for (g, group) in block.chunks_exact_mut(8).enumerate() {
            // SAFETY: `group` holds exactly eight f64 (unaligned load and store); every
            // layer is below 256 and the table holds 257 values, so each 16-byte load of
            // `X[layer], X[layer + 1]` lies inside it; `missed + 8 <= BLOCK + 8`.
            unsafe {
                let v = _mm512_loadu_pd(group.as_ptr());
                let mantissa =
                    _mm512_and_si512(_mm512_castpd_si512(_mm512_add_pd(v, one)), mantissa_mask);
                let layer = _mm512_and_si512(mantissa, layer_mask);
                let negative = _mm512_test_epi64_mask(mantissa, sign_bit);
                let ubits = _mm512_or_si512(
                    _mm512_slli_epi64::<9>(_mm512_srli_epi64::<9>(mantissa)),
                    exponent,
                );
                let u = _mm512_sub_pd(_mm512_castsi512_pd(ubits), one);
                // Each lane's two edges in one 16-byte load (table gathers are slow on some
                // CPUs), the layers taken from registers (a vector stored and read back as
                // integers stalls), the eight pairs then sorted into two registers.
                let quarters = [
                    _mm512_castsi512_si128(layer),
                    _mm512_extracti64x2_epi64::<1>(layer),
                    _mm512_extracti64x2_epi64::<2>(layer),
                    _mm512_extracti64x2_epi64::<3>(layer),
                ];
                let pair = |l: usize| {
                    let q = quarters[l / 2];
                    let index = if l.is_multiple_of(2) {
                        _mm_cvtsi128_si64(q)
                    } else {
                        _mm_extract_epi64::<1>(q)
                    };
                    _mm_loadu_pd(t.x.as_ptr().add(index as usize))
                };
                let low = _mm512_insertf64x2::<3>(
                    _mm512_insertf64x2::<2>(
                        _mm512_insertf64x2::<1>(_mm512_castpd128_pd512(pair(0)), pair(1)),
                        pair(2),
                    ),
                    pair(3),
                );
                let high = _mm512_insertf64x2::<3>(
                    _mm512_insertf64x2::<2>(
                        _mm512_insertf64x2::<1>(_mm512_castpd128_pd512(pair(4)), pair(5)),
                        pair(6),
                    ),
                    pair(7),
                );
                let edge = _mm512_permutex2var_pd(low, evens, high);
                let next = _mm512_permutex2var_pd(low, odds, high);
                let x = _mm512_mul_pd(u, edge);
                let taken = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, next);
                let flip = _mm512_maskz_mov_epi64(negative, sign);
                let z = _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(x), flip));
                _mm512_storeu_pd(
                    group.as_mut_ptr(),
                    _mm512_add_pd(means, _mm512_mul_pd(stds, z)),
                );
                let miss = !taken;
                let at = _mm512_add_epi64(lanes, _mm512_set1_epi64((g * 8) as i64));
                _mm512_storeu_si512(
                    missed_at.as_mut_ptr().add(missed).cast(),
                    _mm512_maskz_compress_epi64(miss, at),
                );
                _mm512_storeu_si512(
                    missed_bits.as_mut_ptr().add(missed).cast(),
                    _mm512_maskz_compress_epi64(miss, mantissa),
                );
                missed += miss.count_ones() as usize;
            }
        }
        let start = first + (b * BLOCK) as u64;
        for (&j, &bits) in missed_at[..missed].iter().zip(&missed_bits[..missed]) {
            let z = slow(key, start + j, pick(bits));
            block[j as usize] = mean + std * z;
        }
    }
    from_uniform_scalar(rest, key, first + whole as u64, mean, std);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_marsaglia_and_tsangs() {
        let t = tables();
        // Edges as published with the algorithm (and in rand_distr's tables).
        assert!((t.x[0] - 3.910_757_959_537_09).abs() < 1e-12, "{}", t.x[0]);
        assert_eq!(t.x[1], R);
        assert!((t.x[2] - 3.449_278_298_560_964).abs() < 1e-12, "{}", t.x[2]);
        assert!(
            (t.x[255] - 0.215_241_895_884_990).abs() < 1e-9,
            "{}",
            t.x[255]
        );
        assert!(t.x.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(t.f[LAYERS], 1.0);
        // Every layer has the area V: the base (with the tail) and each box above.
        for i in 1..LAYERS {
            let area = t.x[i] * (t.f[i + 1] - t.f[i]);
            assert!((area - V).abs() < 1e-9 * V, "layer {i}: {area}");
        }
    }

    #[test]
    fn exp_matches_the_library() {
        let mut worst: f64 = 0.0;
        for i in 0..100_000 {
            let a = -(i as f64) * 1e-4 * 7.7;
            worst = worst.max((exp_non_positive(a) - a.exp()).abs() / a.exp());
        }
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert!(worst < 1e-15, "relative error {worst:e}");
    }

    #[test]
    fn both_paths_give_the_same_bits() {
        let n = 100_003;
        let mut uniform = vec![0.0; n];
        super::super::fill_uniform(&mut uniform, 99, 5, 0.0, 1.0);
        let mut plain = uniform.clone();
        from_uniform_scalar(&mut plain, 99, 5, 1.5, 2.0);
        let mut fast = uniform;
        from_uniform(&mut fast, 99, 5, 1.5, 2.0);
        assert_eq!(
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    /// The standard normal distribution function.
    fn phi(z: f64) -> f64 {
        // Abramowitz and Stegun 7.1.26 through erf: within 1.5e-7.
        let x = z.abs() / std::f64::consts::SQRT_2;
        let t = 1.0 / (1.0 + 0.327_591_1 * x);
        let poly = t
            * (0.254_829_592
                + t * (-0.284_496_736
                    + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        let erf = 1.0 - poly * (-x * x).exp();
        0.5 * (1.0 + if z < 0.0 { -erf } else { erf })
    }

    #[test]
    fn the_values_follow_the_normal_distribution() {
        let n = 2_000_000;
        let mut z = vec![0.0; n];
        super::super::fill_normal(&mut z, super::super::chunk_key(3, 7), 0, 0.0, 1.0);
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let skew = z.iter().map(|v| (v - mean).powi(3)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.004, "mean {mean}");
        assert!((var - 1.0).abs() < 0.005, "variance {var}");
        assert!(skew.abs() < 0.01, "skewness {skew}");
        assert!((kurt - 3.0).abs() < 0.03, "kurtosis {kurt}");
        // Kolmogorov-Smirnov against the distribution function: the critical value at
        // 0.1 % is 1.95 / sqrt(n).
        let mut sorted = z.clone();
        sorted.sort_by(f64::total_cmp);
        let d = sorted
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let p = phi(v);
                (p - i as f64 / n as f64)
                    .abs()
                    .max((p - (i + 1) as f64 / n as f64).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / (n as f64).sqrt(), "KS distance {d}");
        // The tail beyond R is drawn: about 2.6e-4 of the values.
        let tail = z.iter().filter(|v| v.abs() > R).count() as f64 / n as f64;
        assert!((tail - 2.58e-4).abs() < 0.5e-4, "tail {tail}");
    }
}
