//! Normal values by the ziggurat method (Marsaglia and Tsang, 2000), counter-based: value
//! `j` of a key is drawn from the key's raw 64-bit value `j` and, in the few cases that
//! one value does not settle, from further values of a SplitMix64 stream seeded by
//! `(key, j)` alone. So a value depends on `(key, j)` only, as a uniform value does, and
//! an array is the same at any rank count and chunk order.
//!
//! The standard normal density (unscaled, `f(x) = exp(-x²/2)`) is covered by 2048 layers
//! of equal area: layer `i >= 1` is the rectangle `[0, X[i]] x [f(X[i]), f(X[i+1])]`,
//! layer 0 the base rectangle `[0, r] x [0, f(r)]` with the tail beyond `r` (its width
//! `X[0]` is the layer's area over `f(r)`). A raw value's bits 52 to 62 choose the layer
//! `i`, its low 52 bits a point `u` of `[0, 1)`, its top bit the sign; `x = u X[i]` is the
//! value's size when `u < X[i+1] / X[i]` (the part of the layer under the curve whatever
//! the height), which holds for 99.77 % of values. Otherwise ([`slow`]) the layer's wedge
//! is tried with a height drawn from the retry stream (two comparisons with the wedge's
//! diagonal settle nearly every point, the logarithm the rest), the base layer goes to
//! Marsaglia's tail method, and a rejected point draws a new value from the retry stream.
//!
//! The tables ([`tables`]) are constants, so every machine uses the same ones. Every path
//! does the same exact steps in the same order (the logarithm is [`ln_unit_interval`],
//! not the platform's): the scalar loop, AVX2 (four lanes) and AVX-512 (eight lanes), both
//! straight from the generators' registers with a first test of one table lookup
//! ([`PACKED`]) and the rare cases scalar, give the same bits. Values with mean 0 and
//! standard deviation 1 are the standard values themselves on every path.
//!
//! (Until December 2026 normal values came from inverting the distribution function,
//! Wichura's AS241: two polynomials of degree 7 and a division for every value, which
//! cost five times the uniform value itself; then from a ziggurat of 256 layers, which
//! left 1.5 % of values to the rare cases instead of 0.23 %, and took the logarithm for
//! every wedge point.)

use super::{MANTISSA, ONE, SPLITMIX_GAMMA, Stream, mix, unit};
use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod tables;

use tables::{F, HI, LAYERS, LO, R, TAIL_START, X};

/// Values turned at a time: the raw values are written into the output, then turned into
/// normal values there while they are in the first-level cache (32 KiB).
const PIECE: usize = 4096;

/// The sign bit of a double, and the bit of a raw value that gives a value's sign.
const SIGN: u64 = 1 << 63;

/// Where a raw value's layer bits start.
const LAYER_SHIFT: i32 = 52;

/// `1 / (1 - R[i])`: a wedge's point `u` is `(1 - u) SPAN[i]` of the way in from its
/// outer corner (the top layer's `R` is 0, its span 1).
static SPAN: [f64; LAYERS] = {
    let mut span = [0.0; LAYERS];
    let mut i = 0;
    while i < LAYERS {
        span[i] = 1.0 / (1.0 - R[i]);
        i += 1;
    }
    span
};

/// The bits of 8.0: `(bits & MANTISSA) | EIGHT` is `8 (1 + u)`, a double in `[8, 16)`.
#[cfg(target_arch = "x86_64")]
const EIGHT: u64 = 0x4020_0000_0000_0000;

/// Layer `i`'s width and a first-test threshold in one word, for the vector paths' one
/// table lookup (gathers are dear): the low 52 bits are the mantissa of `(X[i] + 8) / 8` (a
/// double in `[1, 2)`, exact: every width lies on the grid of 2^-49 and below 8), the top
/// 12 bits (where that double's sign and exponent were, the same for every layer) hold
/// `t - 1` with `t = floor(4096 R[i])`. A value passes when the top 12 bits of its point
/// `u` are below `t - 1` (AVX2), or when a whole word with those bits on top is below this
/// one (AVX-512, which passes some that equal `t - 1`): so `u < t / 4096 <= R[i]` whenever
/// it passes. The others go through the exact test ([`slow`]), which settles those the
/// threshold missed (0.03 % of values with AVX-512). The top layer (`R = 0`, `t = 0`) is
/// the word 0, which nothing passes.
#[cfg(target_arch = "x86_64")]
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

/// Mixed into the key to seed the retry streams.
const RETRY_SALT: u64 = 0x7A69_6767_7572_6174;
/// Multiplies the value's position into its retry stream's seed.
const RETRY_STEP: u64 = 0x9E6C_63D0_676A_9A99;

/// The layer chosen by a raw value (bits 52 to 62, below the sign).
#[inline(always)]
fn layer(bits: u64) -> usize {
    ((bits >> LAYER_SHIFT) as usize) & (LAYERS - 1)
}

/// The point in `[0, 1)` chosen by a raw value's low 52 bits: a double in `[1, 2)` minus 1,
/// exact. (xoshiro256+'s weakest bits, the lowest, are the point's least significant.)
#[inline(always)]
fn magnitude(bits: u64) -> f64 {
    f64::from_bits((bits & MANTISSA) | ONE) - 1.0
}

/// `x` with the sign a raw value's top bit gives it.
#[inline(always)]
fn signed(x: f64, bits: u64) -> f64 {
    f64::from_bits(x.to_bits() ^ (bits & SIGN))
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
    let u = magnitude(bits);
    if u < R[i] {
        signed(u * X[i], bits)
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
        let u = magnitude(bits);
        if u < R[i] {
            return signed(u * X[i], bits);
        }
        if i == 0 {
            return tail(state, bits);
        }
        // The wedge's height and, should the point be above the curve, the next point: the
        // retry stream's next two values, made at once.
        let height = unit(mix(state.wrapping_add(SPLITMIX_GAMMA)));
        let again = mix(state.wrapping_add(SPLITMIX_GAMMA.wrapping_mul(2)));
        if under_curve(i, u, height) {
            return signed(u * X[i], bits);
        }
        state = state.wrapping_add(SPLITMIX_GAMMA.wrapping_mul(2));
        bits = again;
    }
}

/// Whether the point `u` of layer `i`'s wedge (`R[i] <= u < 1`, `i >= 1`) at height `h`
/// (`0 <= h < 1`, of the layer's) is under the curve. The curve runs within [`LO`] and
/// [`HI`] of the wedge's diagonal; only a point between the two (0.07 % of them) pays for
/// the exact test, `ln(y) < -x²/2`.
#[inline(always)]
fn under_curve(i: usize, u: f64, h: f64) -> bool {
    let d = h - (1.0 - u) * SPAN[i];
    if d < LO[i] {
        return true;
    }
    if d >= HI[i] {
        return false;
    }
    let x = u * X[i];
    let y = (F[i + 1] - F[i]).mul_add(h, F[i]);
    ln_unit_interval(y) < (-0.5 * x) * x
}

/// A value beyond `r` with the sign of raw value `bits` (Marsaglia 1964), from the retry
/// stream `state`.
#[inline(always)]
fn tail(mut state: u64, bits: u64) -> f64 {
    loop {
        let a = -ln_unit_interval(1.0 - unit(next(&mut state))) / TAIL_START;
        let b = -ln_unit_interval(1.0 - unit(next(&mut state)));
        if b + b > a * a {
            return signed(TAIL_START + a, bits);
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

/// What a fill's values are drawn with: the key's retry salt, the mean and the standard
/// deviation.
#[derive(Clone, Copy)]
struct Params {
    /// The key mixed with [`RETRY_SALT`]: seeds the retry streams ([`retry_seed`]).
    salted: u64,
    mean: f64,
    std: f64,
    /// Mean 0 and std 1: every path skips the scaling alike.
    plain: bool,
}

impl Params {
    fn new(key: u64, mean: f64, std: f64) -> Params {
        Params {
            salted: mix(key ^ RETRY_SALT),
            mean,
            std,
            plain: mean == 0.0 && std == 1.0,
        }
    }

    /// A standard value `z` with the mean and std (`z` itself when plain).
    #[inline(always)]
    fn scaled(self, z: f64) -> f64 {
        if self.plain {
            z
        } else {
            self.std.mul_add(z, self.mean)
        }
    }
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
    let p = Params::new(stream.key, mean, std);
    let mut at = first;
    for piece in out.chunks_mut(PIECE) {
        // SAFETY: `MaybeUninit<f64>` and `MaybeUninit<u64>` have the same layout.
        let slots = unsafe { &mut *(piece as *mut [MaybeUninit<f64>] as *mut [MaybeUninit<u64>]) };
        #[cfg(target_arch = "x86_64")]
        if path != Path::Scalar && at.is_multiple_of(super::LANES as u64) {
            // The first test straight from the generators' registers.
            // Bit `k` of `settled[g]`: whether the first test settled value `8 g + k`.
            let mut settled = [0u8; PIECE / 8];
            let covered = stream.run_groups(slots, at, |generators, part, offset| {
                let settled = &mut settled[offset / 8..];
                // SAFETY: the caller checked that the CPU has the path's features; `part`
                // is whole groups, `offset` a multiple of 8 within the piece.
                unsafe {
                    if path == Path::Avx512 {
                        avx512::first_pass(generators, part, settled, p)
                    } else {
                        avx2::first_pass(generators, part, settled, p)
                    }
                }
            });
            stream.fill_bits(&mut slots[covered..], at + covered as u64);
            // SAFETY: `first_pass` and `fill_bits` wrote every slot.
            let values = unsafe { &mut *(slots as *mut [MaybeUninit<u64>] as *mut [u64]) };
            let (body, rest) = values.split_at_mut(covered);
            finish(body, &settled[..covered / 8], p, at);
            turn_scalar(rest, p, at + covered as u64);
            at += piece.len() as u64;
            continue;
        }
        stream.fill_bits(slots, at);
        // SAFETY: `fill_bits` wrote every slot.
        let bits = unsafe { &mut *(slots as *mut [MaybeUninit<u64>] as *mut [u64]) };
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that the CPU has AVX-512F and DQ.
            Path::Avx512 => unsafe { avx512::turn(bits, p, at) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that the CPU has AVX2 and FMA.
            Path::Avx2 => unsafe { avx2::turn(bits, p, at) },
            Path::Scalar => turn_scalar(bits, p, at),
        }
        at += piece.len() as u64;
    }
}

/// Finishes the values a vector path's first test left: bit `k` clear in `settled[g]`
/// says value `8 g + k` of `values` (value `first + 8 g + k` of its key) is still raw.
#[cfg(target_arch = "x86_64")]
fn finish(values: &mut [u64], settled: &[u8], p: Params, first: u64) {
    // Eight masks a word: nearly every word says all were settled.
    for (word, masks) in settled.chunks(8).enumerate() {
        let mut all = [0xffu8; 8];
        all[..masks.len()].copy_from_slice(masks);
        let mut left = !u64::from_le_bytes(all);
        while left != 0 {
            let at = 64 * word + left.trailing_zeros() as usize;
            left &= left - 1;
            let z = slow(retry_seed(p.salted, first + at as u64), values[at]);
            values[at] = p.scaled(z).to_bits();
        }
    }
}

/// Turns raw values `first ..` (in place) into normal values with `mean` and `std`.
#[inline(always)]
fn turn_scalar(values: &mut [u64], p: Params, first: u64) {
    for (k, v) in values.iter_mut().enumerate() {
        *v = p.scaled(standard(p.salted, first + k as u64, *v)).to_bits();
    }
}

/// A vector path's [`turn_scalar`] (the same bits): `settle` runs the first test on a
/// group of eight raw values in place (settled ones written with the mean and std) and
/// says which it settled (bit `k` for value `k`); [`finish`] does those it left, and
/// [`turn_scalar`] the values after the last whole group. Inlined into each path's
/// `turn`, so `settle` is compiled with the path's instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn turn_groups(
    values: &mut [u64],
    p: Params,
    first: u64,
    mut settle: impl FnMut(&mut [u64; 8]) -> u8,
) {
    // The masks below have room for a piece.
    assert!(values.len() <= PIECE);
    let (groups, rest) = values.as_chunks_mut::<8>();
    // Bit `k` of `settled[g]`: whether the first test settled value `8 g + k`.
    let mut settled = [0u8; PIECE / 8];
    for (group, mask) in groups.iter_mut().zip(settled.iter_mut()) {
        *mask = settle(group);
    }
    let whole = 8 * groups.len();
    finish(groups.as_flattened_mut(), &settled[..whole / 8], p, first);
    turn_scalar(rest, p, first + whole as u64);
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
    fn the_layers_have_equal_areas() {
        assert_eq!(X[1], TAIL_START);
        assert_eq!(X[LAYERS], 0.0);
        // `r` lies on the grid of 2^-49 (within 9e-16), so its density within 4e-15.
        assert!((X[0] * (-0.5 * TAIL_START * TAIL_START).exp() - AREA).abs() < 1e-14 * AREA);
        for (i, &x) in X.iter().enumerate() {
            // On the grid of 2^-49 the AVX-512 path needs: `X[i] + 8` is exact.
            assert!((x + 8.0) - 8.0 == x && x + 8.0 < 16.0, "{i}");
        }
        for i in 1..LAYERS {
            assert!(X[i + 1] < X[i], "{i}");
            // `-x²/2` is rounded before `exp` (a relative error of `x²/2` units), and the
            // heights are the density at the widths before their rounding (within 2^-50).
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
        for i in 0..LAYERS {
            let ratio = X[i + 1] / X[i];
            assert!((R[i] - ratio).abs() <= 2.0 * f64::EPSILON * ratio, "{i}");
        }
    }

    #[test]
    fn the_wedge_bounds_agree_with_the_exact_test() {
        // Points of every layer's wedge: where the bounds decide, the exact test (here
        // with the library's exponential) gives the same answer, and the bounds leave few
        // points to it.
        let mut state = 7u64;
        let (mut decided, mut all) = (0usize, 0usize);
        for i in 1..LAYERS {
            assert!(LO[i] < 0.0 && HI[i] > 0.0, "{i}");
            for _ in 0..2000 {
                let u = R[i] + (1.0 - R[i]) * unit(next(&mut state));
                let h = unit(next(&mut state));
                let x = u * X[i];
                let under = (F[i + 1] - F[i]).mul_add(h, F[i]) < (-0.5 * x * x).exp();
                let d = h - (1.0 - u) * SPAN[i];
                all += 1;
                if d < LO[i] {
                    assert!(under, "layer {i}: u {u}, h {h}");
                    decided += 1;
                } else if d >= HI[i] {
                    assert!(!under, "layer {i}: u {u}, h {h}");
                    decided += 1;
                }
                assert_eq!(under_curve(i, u, h), under, "layer {i}: u {u}, h {h}");
            }
        }
        assert!(decided as f64 > 0.995 * all as f64, "{decided} of {all}");
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
        // 1,000,003 values from an odd start (the vector paths turn raw values in a second
        // pass) and from a multiple of 8 (straight from the generators): about 2,600 go
        // past the first test and 25 to the tail; the length is no multiple of a register
        // or of a piece.
        let key = super::super::chunk_key(99, 5);
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        for (start, mean, std) in [
            (13, 1.5, 2.0),
            (13, 0.0, 1.0),
            (16, 1.5, 2.0),
            (16, 0.0, 1.0),
        ] {
            let plain = bits(values(key, start, 1_000_003, mean, std, Path::Scalar));
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    let avx2 = bits(values(key, start, 1_000_003, mean, std, Path::Avx2));
                    assert!(plain == avx2, "AVX2, from {start}, mean {mean}, std {std}");
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("popcnt")
                {
                    let avx512 = bits(values(key, start, 1_000_003, mean, std, Path::Avx512));
                    assert!(
                        plain == avx512,
                        "AVX-512, from {start}, mean {mean}, std {std}"
                    );
                }
            }
        }
        let plain = bits(values(key, 13, 300_007, 1.5, 2.0, Path::Scalar));
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
        let beyond: Vec<f64> = (0..n).map(|j| tail(retry_seed(mix(17), j), 0)).collect();
        assert!(beyond.iter().all(|&v| v > TAIL_START));
        assert!(tail(retry_seed(mix(17), 3), SIGN) < -TAIL_START);
        let mean = beyond.iter().sum::<f64>() / n as f64;
        // The conditional standard deviation is 0.2074; 4 standard errors.
        assert!((mean - 4.432_281_418_591_564).abs() < 4.0 * 0.2074 / (n as f64).sqrt());
        for (d, p) in [
            (0.1, 0.638_894_681_412_835_6),
            (0.25, 0.320_454_130_456_196),
            (0.5, 0.096_706_482_169_182_97),
            (1.0, 0.007_349_505_633_284_944),
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
