//! Counter-based random numbers: element `i` of chunk `c` of a random array with seed `s` is
//! a pure function of `(s, c, i)`, so an array is the same whatever the number of ranks and
//! any block of it can be generated on its own.
//!
//! The generator is SplitMix64's output function applied to a counter: value `i` of key `k`
//! is `mix(k + (i + 1) * gamma)`. SplitMix64 passes BigCrush; keys of different chunks are
//! themselves mixed, so their streams are far apart.

/// SplitMix64's increment.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser.
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator key of chunk number `chunk` (C order over the chunk grid) of an array
/// drawn with `seed`.
pub fn chunk_key(seed: u64, chunk: u64) -> u64 {
    mix(mix(seed ^ 0x6D70_6964_6173_6B21) ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The `i`-th 64-bit value of key `key`.
#[inline(always)]
pub fn bits(key: u64, i: u64) -> u64 {
    mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// A double in `[0, 1)` from the top 53 bits (converted through `i64`, which is one
/// instruction on x86-64 where `u64` is several).
#[inline(always)]
pub fn unit(bits: u64) -> f64 {
    ((bits >> 11) as i64) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fills `out` with values `first, first + 1, ...` of key `key`, uniform on `[low, high)`.
pub fn fill_uniform(out: &mut [f64], key: u64, first: u64, low: f64, high: f64) {
    let scale = high - low;
    let mut state = key.wrapping_add(first.wrapping_add(1).wrapping_mul(GAMMA));
    for value in out.iter_mut() {
        // `black_box` keeps LLVM from vectorising this loop with emulated 64-bit multiplies,
        // which is slower than the scalar loop on x86-64 without AVX-512.
        let s = std::hint::black_box(state);
        *value = low + scale * unit(mix(s));
        state = state.wrapping_add(GAMMA);
    }
}

/// Fills `out` with standard-normal values scaled to `mean`, `std`: element `j` uses draws
/// `2j` and `2j + 1` of its counter (Box-Muller).
pub fn fill_normal(out: &mut [f64], key: u64, first: u64, mean: f64, std: f64) {
    for (j, value) in out.iter_mut().enumerate() {
        let i = first + j as u64;
        // 1 - u lies in (0, 1]: its logarithm is finite.
        let u1 = 1.0 - unit(bits(key, 2 * i));
        let u2 = unit(bits(key, 2 * i + 1));
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        *value = mean + std * z;
    }
}

// ----- constructors ------------------------------------------------------------------------

use super::{Array, DType, Distribution, Expr};

/// Random values uniform on `[low, high)`, of `shape`, in chunks of `chunks`. Chunk `c` is
/// drawn from the generator keyed by `(seed, c)`: the array is the same at any rank count.
pub fn uniform(low: f64, high: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    if !(low.is_finite() && high.is_finite() && low <= high) {
        return Array::invalid(format!(
            "random::uniform: bounds {low} and {high} must be finite with low <= high"
        ));
    }
    super::constructor(
        shape,
        chunks,
        DType::F64,
        Expr::Random {
            dist: Distribution::Uniform { low, high },
            seed,
        },
    )
}

/// Random values from a normal distribution with `mean` and standard deviation `std`.
pub fn normal(mean: f64, std: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
        return Array::invalid(format!(
            "random::normal: mean {mean} and std {std} must be finite with std >= 0"
        ));
    }
    super::constructor(
        shape,
        chunks,
        DType::F64,
        Expr::Random {
            dist: Distribution::Normal { mean, std },
            seed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_the_whole() {
        let key = chunk_key(42, 3);
        let mut whole = vec![0.0; 1000];
        fill_uniform(&mut whole, key, 0, -1.0, 1.0);
        let mut part = vec![0.0; 300];
        fill_uniform(&mut part, key, 500, -1.0, 1.0);
        assert_eq!(&whole[500..800], &part[..]);
        assert!(whole.iter().all(|v| (-1.0..1.0).contains(v)));
        let mut normal = vec![0.0; 10];
        fill_normal(&mut normal, key, 5, 0.0, 1.0);
        let mut first = vec![0.0; 15];
        fill_normal(&mut first, key, 0, 0.0, 1.0);
        assert_eq!(&first[5..], &normal[..]);
    }

    #[test]
    fn moments_look_right() {
        let n = 200_000;
        let mut u = vec![0.0; n];
        fill_uniform(&mut u, chunk_key(1, 0), 0, 0.0, 1.0);
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let mut z = vec![0.0; n];
        fill_normal(&mut z, chunk_key(1, 0), 0, 0.0, 1.0);
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{m} {var}");
    }

    #[test]
    fn chunks_get_different_streams() {
        assert_ne!(chunk_key(1, 0), chunk_key(1, 1));
        assert_ne!(chunk_key(1, 0), chunk_key(2, 0));
    }
}
