//! Normal values by the ziggurat method (Marsaglia and Tsang, 2000), counter-based: value
//! `j` of a key is drawn from the key's raw 64-bit value `j` and, in the few cases that
//! one value does not settle, from further values of a SplitMix64 stream seeded by
//! `(key, j)` alone. So a value depends on `(key, j)` only, as a uniform value does, and
//! an array is the same at any rank count and chunk order.
//!
//! The standard normal density (unscaled, `f(x) = exp(-x²/2)`) is covered by 256 layers
//! of equal area: layer `i >= 1` is the rectangle `[0, X[i]] x [f(X[i]), f(X[i+1])]`,
//! layer 0 the base rectangle `[0, r] x [0, f(r)]` with the tail beyond `r` (its width
//! `X[0]` is the layer's area over `f(r)`). A value's bits 4 to 11 choose the layer `i`,
//! its top 52 bits a point `u` of `[-1, 1)`; `x = u X[i]` is the value when
//! `|u| < X[i+1] / X[i]` (the part of the layer under the curve whatever the height),
//! which holds for 98.5 % of values. Otherwise ([`slow`]) the layer's wedge is tried with
//! a height drawn from the retry stream, the base layer goes to Marsaglia's tail method,
//! and a rejected point draws a new value from the retry stream.
//!
//! The tables ([`tables`]) are constants, so every machine uses the same ones. Every path
//! does the same exact steps in the same order (the logarithm is [`ln_unit_interval`],
//! not the platform's): the scalar loop, AVX2 (four lanes, the rare cases scalar) and
//! AVX-512 (eight lanes, a quicker first test backed by the exact one, the rare cases in
//! eight registers at once) give the same bits.
//!
//! (Until December 2026 normal values came from inverting the distribution function,
//! Wichura's AS241: two polynomials of degree 7 and a division for every value, which
//! cost five times the uniform value itself.)

use super::{MANTISSA, ONE, SPLITMIX_GAMMA, Stream, mix, unit};
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod tables;

use tables::{F, R, TAIL_START, X};

/// Values turned at a time: the raw values are written into the output, then turned into
/// normal values there while they are in the first-level cache (32 KiB).
const PIECE: usize = 4096;

/// The exponent bits of 2.0: `(bits >> 12) | TWO` is a double in `[2, 4)`.
const TWO: u64 = 0x4000_0000_0000_0000;

/// Mixed into the key to seed the retry streams.
const RETRY_SALT: u64 = 0x7A69_6767_7572_6174;
/// Multiplies the value's position into its retry stream's seed.
const RETRY_STEP: u64 = 0x9E6C_63D0_676A_9A99;

/// The layer chosen by a raw value (bits 4 to 11; the lowest bits of xoshiro256+ are its
/// weakest).
#[inline(always)]
fn layer(bits: u64) -> usize {
    ((bits >> 4) & 0xff) as usize
}

/// The point in `[-1, 1)` chosen by a raw value's top 52 bits: a double in `[2, 4)` minus
/// 3, exact.
#[inline(always)]
fn signed_unit(bits: u64) -> f64 {
    f64::from_bits((bits >> 12) | TWO) - 3.0
}

/// The seed of value `j`'s retry stream, given `mix(key ^ RETRY_SALT)`.
#[inline(always)]
fn retry_seed(salted: u64, j: u64) -> u64 {
    salted ^ j.wrapping_mul(RETRY_STEP)
}

/// The next value of a retry stream (SplitMix64).
#[inline(always)]
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(SPLITMIX_GAMMA);
    mix(*state)
}

/// The standard normal value `j` of a key whose `mix(key ^ RETRY_SALT)` is `salted`, whose
/// raw value `j` is `bits`.
#[inline(always)]
fn standard(salted: u64, j: u64, bits: u64) -> f64 {
    let i = layer(bits);
    let u = signed_unit(bits);
    if u.abs() < R[i] {
        u * X[i]
    } else {
        slow(retry_seed(salted, j), bits)
    }
}

/// The cases the first test does not settle, from raw value `bits` and the retry stream
/// `state` (value `j`'s, not yet read).
#[inline(always)]
fn slow(mut state: u64, mut bits: u64) -> f64 {
    loop {
        let i = layer(bits);
        let u = signed_unit(bits);
        if u.abs() < R[i] {
            return u * X[i];
        }
        if i == 0 {
            return tail(state, u);
        }
        let x = u * X[i];
        // A height in the layer: under the curve when `ln(y) < -x²/2`.
        let y = (F[i + 1] - F[i]).mul_add(unit(next(&mut state)), F[i]);
        if ln_unit_interval(y) < (-0.5 * x) * x {
            return x;
        }
        bits = next(&mut state);
    }
}

/// A value beyond `r` with the sign of `u` (Marsaglia 1964), from the retry stream `state`.
#[inline(always)]
fn tail(mut state: u64, u: f64) -> f64 {
    loop {
        let a = -ln_unit_interval(1.0 - unit(next(&mut state))) / TAIL_START;
        let b = -ln_unit_interval(1.0 - unit(next(&mut state)));
        if b + b > a * a {
            return (TAIL_START + a).copysign(u);
        }
    }
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

/// Normal values `first .. first + out.len()` of `stream` with `mean` and `std`, written
/// into possibly uninitialised slots (every slot is written).
pub(super) fn fill(
    stream: &mut Stream,
    out: &mut [MaybeUninit<f64>],
    first: u64,
    mean: f64,
    std: f64,
) {
    fill_with(stream, out, first, mean, std, Path::detect());
}

/// The instruction sets a fill can use.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Path {
    /// The widest this CPU has.
    fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                return Path::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Path::Avx2;
            }
        }
        Path::Scalar
    }
}

/// [`fill`] on a given path (which the CPU must have).
fn fill_with(
    stream: &mut Stream,
    out: &mut [MaybeUninit<f64>],
    first: u64,
    mean: f64,
    std: f64,
    path: Path,
) {
    let salted = mix(stream.key ^ RETRY_SALT);
    let mut at = first;
    for piece in out.chunks_mut(PIECE) {
        // SAFETY: `MaybeUninit<f64>` and `MaybeUninit<u64>` have the same layout.
        let slots = unsafe { &mut *(piece as *mut [MaybeUninit<f64>] as *mut [MaybeUninit<u64>]) };
        stream.fill_bits(slots, at);
        // SAFETY: `fill_bits` wrote every slot.
        let bits = unsafe { &mut *(slots as *mut [MaybeUninit<u64>] as *mut [u64]) };
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that the CPU has AVX-512F and DQ.
            Path::Avx512 => unsafe { avx512::turn(bits, salted, at, mean, std) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that the CPU has AVX2 and FMA.
            Path::Avx2 => unsafe { avx2::turn(bits, salted, at, mean, std) },
            Path::Scalar => turn_scalar(bits, salted, at, mean, std),
        }
        at += piece.len() as u64;
    }
}

/// Turns raw values `first ..` (in place) into normal values with `mean` and `std`.
#[inline(always)]
fn turn_scalar(values: &mut [u64], salted: u64, first: u64, mean: f64, std: f64) {
    for (k, v) in values.iter_mut().enumerate() {
        *v = std
            .mul_add(standard(salted, first + k as u64, *v), mean)
            .to_bits();
    }
}

#[cfg(test)]
mod tests {
    use super::tables::AREA;
    use super::*;

    /// Values `first ..` (`count` of them) of `key` with `mean` and `std` on `path`.
    fn values(key: u64, first: u64, count: usize, mean: f64, std: f64, path: Path) -> Vec<f64> {
        let mut out = vec![MaybeUninit::<f64>::uninit(); count];
        fill_with(&mut Stream::new(key), &mut out, first, mean, std, path);
        // SAFETY: `fill_with` wrote every slot.
        out.into_iter()
            .map(|v| unsafe { v.assume_init() })
            .collect()
    }

    #[test]
    fn the_packed_table_holds_each_width_and_a_lower_threshold() {
        use super::tables::{PACKED, THRESHOLD_BITS};
        let scale = (1u64 << THRESHOLD_BITS) as f64;
        let mut left = 0.0;
        for i in 0..256 {
            let low = (1 << THRESHOLD_BITS) - 1;
            // The two conversions the AVX-512 path makes, exact.
            assert_eq!((PACKED[i] & !low) as f64 / (1u64 << 62) as f64, X[i], "{i}");
            let threshold = (PACKED[i] & low) as f64 / scale;
            assert!(threshold <= R[i] && R[i] - threshold < 1.0 / scale, "{i}");
            left += R[i] - threshold;
        }
        // The share of points the quick test leaves that the exact one settles.
        assert!(left / 256.0 < 0.003, "{}", left / 256.0);
    }

    #[test]
    fn the_layers_have_equal_areas() {
        assert_eq!(X[1], TAIL_START);
        assert_eq!(X[256], 0.0);
        assert!((X[0] * (-0.5 * TAIL_START * TAIL_START).exp() - AREA).abs() < 1e-15 * AREA);
        for i in 1..256 {
            assert!(X[i + 1] < X[i], "{i}");
            // `-x²/2` is rounded before `exp`: a relative error of `x²/2` units.
            assert!(
                (F[i] - (-0.5 * X[i] * X[i]).exp()).abs() <= 1e-14 * F[i],
                "{i}"
            );
            let area = X[i] * (F[i + 1] - F[i]);
            assert!(
                (area - AREA).abs() < 1e-12 * AREA,
                "layer {i}: {area} against {AREA}"
            );
        }
        for i in 0..256 {
            let ratio = X[i + 1] / X[i];
            assert!((R[i] - ratio).abs() <= 2.0 * f64::EPSILON * ratio, "{i}");
        }
    }

    #[test]
    fn the_logarithm_matches_the_library() {
        let mut worst: f64 = 0.0;
        for i in 0..200_000u64 {
            let y = 1.0 - unit(mix(i));
            worst = worst.max((ln_unit_interval(y) - y.ln()).abs() / y.ln().abs().max(1e-300));
        }
        assert_eq!(ln_unit_interval(1.0), 0.0);
        let tiny = f64::EPSILON;
        assert!((ln_unit_interval(tiny) - tiny.ln()).abs() < 1e-14);
        assert!(worst < 1e-15, "ln: relative error {worst:e}");
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        // 300,007 values from an odd start: about 4,500 go past the first test and 75 to
        // the tail; the length is no multiple of a register or of a piece.
        let key = super::super::chunk_key(99, 5);
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        let plain = bits(values(key, 13, 300_007, 1.5, 2.0, Path::Scalar));
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                assert!(plain == bits(values(key, 13, 300_007, 1.5, 2.0, Path::Avx2)));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                assert!(plain == bits(values(key, 13, 300_007, 1.5, 2.0, Path::Avx512)));
            }
        }
        assert!(plain == bits(values(key, 13, 300_007, 1.5, 2.0, Path::detect())));
        // Short reads and reads across blocks and pieces, on every path the CPU has.
        for key in 0..8 {
            for (first, count) in [
                (0, 1),
                (5, 7),
                (8, 9),
                (4090, 63),
                (4095, 4098),
                (1 << 40, 9000),
            ] {
                let plain = bits(values(key, first, count, -1.0, 0.5, Path::Scalar));
                assert!(plain == bits(values(key, first, count, -1.0, 0.5, Path::detect())));
            }
        }
        // A value is the same whatever range it is read in.
        let part = bits(values(key, 5_000, 777, 1.5, 2.0, Path::detect()));
        assert!(part[..] == plain[5_000 - 13..5_000 - 13 + 777]);
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
        // Symmetric: as many positive as negative (within 3.5 standard errors).
        let positive = z.iter().filter(|v| **v > 0.0).count() as f64;
        assert!((positive / n as f64 - 0.5).abs() < 3.5 * 0.5 / (n as f64).sqrt());
    }

    #[test]
    fn the_tail_follows_the_normal_tail() {
        // 200,000 values beyond r: their mean and how many pass r + d, against mpmath's
        // integrals of the density past r (`E[Z | Z > r]` and `P(Z > r + d | Z > r)`).
        let n = 200_000;
        let beyond: Vec<f64> = (0..n).map(|j| tail(retry_seed(mix(17), j), 1.0)).collect();
        assert!(beyond.iter().all(|&v| v > TAIL_START));
        assert!(tail(retry_seed(mix(17), 3), -0.5) < -TAIL_START);
        let mean = beyond.iter().sum::<f64>() / n as f64;
        // The conditional standard deviation is 0.2453; 4 standard errors.
        assert!((mean - 3.897_039_071_648_473).abs() < 4.0 * 0.2453 / (n as f64).sqrt());
        for (d, p) in [
            (0.1, 0.674_057_314_791_755_8),
            (0.25, 0.366_449_964_259_147),
            (0.5, 0.126_532_451_202_125_6),
            (1.0, 0.012_607_535_094_288_356),
        ] {
            let seen = beyond.iter().filter(|&&v| v > TAIL_START + d).count() as f64 / n as f64;
            let error = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (seen - p).abs() < 4.0 * error,
                "past r + {d}: {seen} against {p}"
            );
        }
    }
}
