//! Normal values by inversion: value `j` of a key is `Φ⁻¹(p)` of the key's uniform value
//! `j`, so it depends on `(key, j)` alone, like a uniform value, and costs no table and no
//! further random numbers.
//!
//! `p` is the uniform value `v` (52 random bits) plus `2⁻⁵³`: an odd multiple of `2⁻⁵³`,
//! never 0 or 1, the set symmetric about 1/2. `Φ⁻¹` is Wichura's AS241 (`PPND16`,
//! Applied Statistics 37, 1988): with `q = p - 1/2` (exact), a ratio of two polynomials
//! of degree 7 in `0.180625 - q²` where `|q| <= 0.425` (85 % of values), and in the tails
//! a ratio in `sqrt(-ln(1/2 - |q|))`; relative error about `1e-16`, within `1.3e-15` of
//! SciPy's `ndtri`.
//!
//! Every path takes the same steps in the same order, with fused multiply-adds, so the same
//! bits come out of the scalar loop and of the vector ones (AVX-512, eight values a
//! register, or AVX2 and FMA, four; the values in the tails listed and done together after
//! each block of 1024), on any machine.

use super::{MANTISSA, ONE};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// `1/2 - 2⁻⁵³`: `q = v - HALF_LESS` is `p - 1/2` for `p = v + 2⁻⁵³`, in one exact step.
const HALF_LESS: f64 = 0.5 - 1.0 / (1u64 << 53) as f64;
/// Where the tails start: `|q|` above this.
const SPLIT: f64 = 0.425;
/// `0.425²`.
const SPLIT_SQUARED: f64 = 0.180_625;

/// The central ratio `q A(r) / B(r)`, `r = 0.180625 - q²` (coefficients of degree 0 up).
#[allow(clippy::excessive_precision)] // as published
const A: [f64; 8] = [
    3.387_132_872_796_366_608,
    1.331_416_678_917_843_774_5e2,
    1.971_590_950_306_551_442_7e3,
    1.373_169_376_550_946_112_5e4,
    4.592_195_393_154_987_145_7e4,
    6.726_577_092_700_870_085_3e4,
    3.343_057_558_358_812_810_5e4,
    2.509_080_928_730_122_672_7e3,
];
#[allow(clippy::excessive_precision)] // as published
const B: [f64; 8] = [
    1.0,
    4.231_333_070_160_091_125_2e1,
    6.871_870_074_920_579_083e2,
    5.394_196_021_424_751_107_7e3,
    2.121_379_430_158_659_586_7e4,
    3.930_789_580_009_271_061e4,
    2.872_908_573_572_194_267_4e4,
    5.226_495_278_852_854_561e3,
];
/// The tail ratio `C(t) / D(t)`, `t = r - 1.6`, `r = sqrt(-ln(1/2 - |q|)) <= 5`.
#[allow(clippy::excessive_precision)] // as published
const C: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    2.417_807_251_774_506_117_7e-1,
    2.272_384_498_926_918_458_33e-2,
    7.745_450_142_783_414_076_4e-4,
];
#[allow(clippy::excessive_precision)] // as published
const D: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    6.897_673_349_851_000_045_5e-1,
    1.481_039_764_274_800_745_9e-1,
    1.519_866_656_361_645_719_66e-2,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
/// The far tail ratio `E(t) / F(t)`, `t = r - 5`, `r > 5` (`p` below `1.4e-11`).
#[allow(clippy::excessive_precision)] // as published
const E: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    2.965_605_718_285_048_912_3e-1,
    2.653_218_952_657_612_309_3e-2,
    1.242_660_947_388_078_438_6e-3,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
#[allow(clippy::excessive_precision)] // as published
const F: [f64; 8] = [
    1.0,
    5.998_322_065_558_879_376_9e-1,
    1.369_298_809_227_358_053_1e-1,
    1.487_536_129_085_061_485_25e-2,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

/// `c[0] + c[1] x + ... + c[7] x⁷` by Horner's rule with fused multiply-adds.
#[inline(always)]
fn horner(c: &[f64; 8], x: f64) -> f64 {
    let mut y = c[7];
    for k in (0..7).rev() {
        y = y.mul_add(x, c[k]);
    }
    y
}

/// The terms `1 / (2k + 1)`, `k = 10` down to 0, of the series of [`ln_unit_interval`].
const ATANH: [f64; 11] = {
    let mut c = [0.0; 11];
    let mut k = 0;
    while k < 11 {
        c[k] = 1.0 / (2 * (10 - k) + 1) as f64;
        k += 1;
    }
    c
};

/// `ln(y)` for `y` in `(0, 1]` (a normal double): `y = m 2^e` with `m` in `[sqrt(1/2),
/// sqrt(2))`, `ln(m) = 2 atanh(s)` with `s = (m - 1) / (m + 1)`, `|s| < 0.172`, whose
/// series is cut where its terms fall below the rounding of the sum. Relative error within
/// a few units in the last place.
#[inline(always)]
fn ln_unit_interval(y: f64) -> f64 {
    let bits = y.to_bits();
    let exponent = ((bits >> 52) as i64 - 1023) as f64;
    let m = f64::from_bits((bits & MANTISSA) | ONE);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let exponent = if big { exponent + 1.0 } else { exponent };
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let mut series = ATANH[0];
    for c in &ATANH[1..] {
        series = series.mul_add(z, *c);
    }
    exponent.mul_add(std::f64::consts::LN_2, (2.0 * s) * series)
}

/// `Φ⁻¹` where `|q| <= 0.425`.
#[inline(always)]
fn central(q: f64) -> f64 {
    let r = (-q).mul_add(q, SPLIT_SQUARED);
    (q * horner(&A, r)) / horner(&B, r)
}

/// `Φ⁻¹` where `|q| > 0.425`.
#[inline(always)]
fn tail(q: f64) -> f64 {
    let r = (-ln_unit_interval(0.5 - q.abs())).sqrt();
    let z = if r > 5.0 {
        let t = r - 5.0;
        horner(&E, t) / horner(&F, t)
    } else {
        let t = r - 1.6;
        horner(&C, t) / horner(&D, t)
    };
    z.copysign(q)
}

/// The standard normal value of uniform value `v` (in `[0, 1)`, 52 random bits).
#[inline(always)]
fn standard(v: f64) -> f64 {
    let q = v - HALF_LESS;
    if q.abs() <= SPLIT {
        central(q)
    } else {
        tail(q)
    }
}

/// Turns `values`, uniform values on `[0, 1)` (as a key's stream gives them), into normal
/// values with `mean` and `std`, in place.
pub(super) fn from_uniform(values: &mut [f64], mean: f64, std: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has AVX-512F and DQ (checked just above).
            unsafe { avx512::from_uniform(values, mean, std) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::from_uniform(values, mean, std) };
            return;
        }
    }
    from_uniform_scalar(values, mean, std);
}

/// [`from_uniform`] one value at a time.
fn from_uniform_scalar(values: &mut [f64], mean: f64, std: f64) {
    for value in values {
        *value = std.mul_add(standard(*value), mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uniform value whose `p` is `p` (rounded down to a multiple of `2⁻⁵²`).
    fn uniform_at(p: f64) -> f64 {
        (p * (1u64 << 52) as f64).floor() / (1u64 << 52) as f64
    }

    #[test]
    fn the_quantiles_are_scipys() {
        // scipy.special.ndtri at p = v + 2^-53 for these v (SciPy 1.17).
        for (v, expected) in [
            (0.975, 1.959_963_984_540_054),
            (0.5, 2.782_916_424_671_767e-16),
            (0.841_344_746_068_542_9, 1.0),
            (0.025, -1.959_963_984_540_054),
            (0.001, -3.090_232_306_167_813),
            (1e-10, -6.361_341_060_197_081_5),
            (0.0, -8.209_536_151_601_387),
        ] {
            let v = uniform_at(v);
            let z = standard(v);
            assert!(
                (z - expected).abs() <= 2e-15 * expected.abs(),
                "{v}: {z} against {expected}"
            );
        }
    }

    #[test]
    fn values_are_antisymmetric_and_increasing() {
        let step = 1.0 / (1u64 << 52) as f64;
        let mut last = f64::NEG_INFINITY;
        for i in 0..200_000u64 {
            let v = uniform_at(i as f64 / 200_000.0);
            let z = standard(v);
            // p and 1 - p: v and 1 - 2^-52 - v.
            assert_eq!(standard(1.0 - step - v), -z, "{v}");
            assert!(z > last, "{v}");
            last = z;
        }
    }

    #[test]
    fn the_logarithm_matches_the_library() {
        let mut worst: f64 = 0.0;
        for i in 0..200_000u64 {
            let y = 1.0 - super::super::unit(super::super::mix(i));
            worst = worst.max((ln_unit_interval(y) - y.ln()).abs() / y.ln().abs().max(1e-300));
        }
        assert_eq!(ln_unit_interval(1.0), 0.0);
        let tiny = f64::EPSILON;
        assert!((ln_unit_interval(tiny) - tiny.ln()).abs() < 1e-14);
        assert!(worst < 1e-15, "ln: relative error {worst:e}");
    }

    #[test]
    fn both_paths_give_the_same_bits() {
        let n = 100_003;
        let mut uniform = vec![0.0; n];
        super::super::fill_uniform(&mut uniform, 99, 5, 0.0, 1.0);
        // The extremes and the far tail, where r > 5.
        let step = 1.0 / (1u64 << 52) as f64;
        uniform[10] = 0.0;
        uniform[11] = 1.0 - step;
        uniform[12] = 1e-13;
        uniform[13] = uniform_at(0.5 - SPLIT);
        let mut plain = uniform.clone();
        from_uniform_scalar(&mut plain, 1.5, 2.0);
        let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut fast = uniform.clone();
        from_uniform(&mut fast, 1.5, 2.0);
        assert_eq!(bits(&plain), bits(&fast));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let mut four = uniform;
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { avx2::from_uniform(&mut four, 1.5, 2.0) };
            assert_eq!(bits(&plain), bits(&four));
        }
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
        // Beyond 3.5 standard deviations: 4.65e-4 of the values.
        let tail = z.iter().filter(|v| v.abs() > 3.5).count() as f64 / n as f64;
        assert!((tail - 4.65e-4).abs() < 0.6e-4, "tail {tail}");
    }
}
