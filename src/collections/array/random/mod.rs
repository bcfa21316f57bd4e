//! Counter-based random numbers: element `i` of chunk `c` of a random array with seed `s` is
//! a pure function of `(s, c, i)`, so an array is the same whatever the number of ranks and
//! any part of it can be generated on its own.
//!
//! The counter is the *block*: the values of a chunk come in blocks of [`BLOCK`] values, and
//! block `b` of key `k` is the output of eight xoshiro256+ generators seeded with SplitMix64
//! from `(k, b)`, interleaved (value `j` of the block is output `j / 8` of generator
//! `j % 8`). Eight independent generators make the hot loop eight lanes wide: with AVX-512
//! one instruction steps all eight (about 0.2 ns per value), with AVX2 two do. Without
//! either the same values come from a scalar loop. A double is the top 52 bits of a value
//! (xoshiro256+'s strong bits) as the mantissa of a number in `[1, 2)`, minus 1.

use std::mem::MaybeUninit;

mod normal;
mod sampled;

pub use sampled::{
    beta, binomial, choice, gamma, permutation, permutation_of, poisson, standard_t,
};

/// Values per independently seeded block.
pub const BLOCK: usize = 4096;

/// Generators per block: the width of the hot loop.
pub const LANES: usize = 8;

/// The mantissa bits of a double, and the bits of 1.0.
const MANTISSA: u64 = 0x000F_FFFF_FFFF_FFFF;
const ONE: u64 = 0x3FF0_0000_0000_0000;

/// SplitMix64's increment.
const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser (used to derive keys and seeds).
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

/// A double in `[0, 1)` from the top 52 bits: they become the mantissa of a number in
/// `[1, 2)`, from which 1 is subtracted (no integer-to-float conversion, which x86-64 has
/// no vector instruction for before AVX-512).
#[inline(always)]
pub fn unit(bits: u64) -> f64 {
    f64::from_bits((bits >> 12) | ONE) - 1.0
}

/// Eight xoshiro256+ generators: `s[word][lane]`.
#[derive(Clone, Copy)]
struct Lanes {
    s: [[u64; LANES]; 4],
}

impl Lanes {
    /// The generators of block `block` of key `key`, seeded with SplitMix64 (never all
    /// zero: SplitMix64's outputs of consecutive states are distinct).
    fn seeded(key: u64, block: u64) -> Lanes {
        let mut state = mix(key ^ block.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        let mut s = [[0u64; LANES]; 4];
        for lane in 0..LANES {
            for word in s.iter_mut() {
                state = state.wrapping_add(SPLITMIX_GAMMA);
                word[lane] = mix(state);
            }
        }
        Lanes { s }
    }

    /// The next eight outputs (one per lane), scalar.
    #[inline(always)]
    fn step(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u64; LANES];
        for l in 0..LANES {
            out[l] = s0[l].wrapping_add(s3[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
        out
    }

    /// Fills `out` (a multiple of [`LANES`] words) with the generators' outputs (`RAW`) or
    /// with the bits of `low + scale * unit(output)`.
    fn fill<const RAW: bool>(&mut self, out: &mut [MaybeUninit<u64>], low: f64, scale: f64) {
        debug_assert!(out.len().is_multiple_of(LANES));
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { self.fill_avx512::<RAW>(out, low, scale) };
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { self.fill_avx2::<RAW>(out, low, scale) };
                return;
            }
        }
        let plain = low == 0.0 && scale == 1.0;
        for group in out.chunks_exact_mut(LANES) {
            let values = self.step();
            for (o, v) in group.iter_mut().zip(values) {
                o.write(if RAW {
                    v
                } else if plain {
                    unit(v).to_bits()
                } else {
                    (low + scale * unit(v)).to_bits()
                });
            }
        }
    }

    /// [`Lanes::fill`] with AVX-512: the eight generators are the eight lanes of a register.
    /// `low + scale * u` is skipped when it is `u` (`low` 0, `scale` 1), which gives the same
    /// bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_avx512<const RAW: bool>(
        &mut self,
        out: &mut [MaybeUninit<u64>],
        low: f64,
        scale: f64,
    ) {
        use std::arch::x86_64::*;
        let mut s = load_avx512(&self.s);
        let exponent = _mm512_set1_epi64(ONE as i64);
        let one = _mm512_set1_pd(1.0);
        let lows = _mm512_set1_pd(low);
        let scales = _mm512_set1_pd(scale);
        let plain = low == 0.0 && scale == 1.0;
        for group in out.chunks_exact_mut(LANES) {
            let r = step_avx512(&mut s);
            let bits = _mm512_or_si512(_mm512_srli_epi64::<12>(r), exponent);
            let unit = _mm512_sub_pd(_mm512_castsi512_pd(bits), one);
            let value = if plain {
                unit
            } else {
                _mm512_add_pd(lows, _mm512_mul_pd(scales, unit))
            };
            let word = if RAW { r } else { _mm512_castpd_si512(value) };
            // SAFETY: `group` holds exactly eight u64 slots.
            unsafe { _mm512_storeu_si512(group.as_mut_ptr().cast(), word) };
        }
        store_avx512(s, &mut self.s);
    }

    /// [`Lanes::fill`] with AVX2: lanes 0-3 in one register, 4-7 in another.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2<const RAW: bool>(
        &mut self,
        out: &mut [MaybeUninit<u64>],
        low: f64,
        scale: f64,
    ) {
        use std::arch::x86_64::*;
        let mut s = load_avx2(&self.s);
        let exponent = _mm256_set1_epi64x(ONE as i64);
        let one = _mm256_set1_pd(1.0);
        let lows = _mm256_set1_pd(low);
        let scales = _mm256_set1_pd(scale);
        let plain = low == 0.0 && scale == 1.0;
        for group in out.chunks_exact_mut(LANES) {
            for h in 0..2 {
                let r = step_avx2(&mut s, h);
                let bits = _mm256_or_si256(_mm256_srli_epi64::<12>(r), exponent);
                let unit = _mm256_sub_pd(_mm256_castsi256_pd(bits), one);
                let value = if plain {
                    unit
                } else {
                    _mm256_add_pd(lows, _mm256_mul_pd(scales, unit))
                };
                let word = if RAW { r } else { _mm256_castpd_si256(value) };
                // SAFETY: `group` holds eight u64 slots; this half writes four of them.
                unsafe { _mm256_storeu_si256(group.as_mut_ptr().add(4 * h).cast(), word) };
            }
        }
        store_avx2(s, &mut self.s);
    }
}

/// The eight generators' words in eight registers: `[word][half]`, lanes 0-3 in half 0,
/// 4-7 in half 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn load_avx2(s: &[[u64; LANES]; 4]) -> [[std::arch::x86_64::__m256i; 2]; 4] {
    use std::arch::x86_64::*;
    // SAFETY: each half of a word holds exactly four u64 (unaligned loads).
    s.map(|w| unsafe {
        [
            _mm256_loadu_si256(w.as_ptr().cast()),
            _mm256_loadu_si256(w[4..].as_ptr().cast()),
        ]
    })
}

/// Writes back what [`load_avx2`] loaded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn store_avx2(v: [[std::arch::x86_64::__m256i; 2]; 4], s: &mut [[u64; LANES]; 4]) {
    use std::arch::x86_64::*;
    for (w, [low, high]) in s.iter_mut().zip(v) {
        // SAFETY: each half of `w` holds exactly four u64 (unaligned stores).
        unsafe {
            _mm256_storeu_si256(w.as_mut_ptr().cast(), low);
            _mm256_storeu_si256(w[4..].as_mut_ptr().cast(), high);
        }
    }
}

/// One step of half `h` (lanes `4 h .. 4 h + 4`) of the generators of [`load_avx2`]
/// (xoshiro256+): their outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn step_avx2(s: &mut [[std::arch::x86_64::__m256i; 2]; 4], h: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let [s0, s1, s2, s3] = s;
    let r = _mm256_add_epi64(s0[h], s3[h]);
    let t = _mm256_slli_epi64::<17>(s1[h]);
    s2[h] = _mm256_xor_si256(s2[h], s0[h]);
    s3[h] = _mm256_xor_si256(s3[h], s1[h]);
    s1[h] = _mm256_xor_si256(s1[h], s2[h]);
    s0[h] = _mm256_xor_si256(s0[h], s3[h]);
    s2[h] = _mm256_xor_si256(s2[h], t);
    s3[h] = _mm256_or_si256(
        _mm256_slli_epi64::<45>(s3[h]),
        _mm256_srli_epi64::<19>(s3[h]),
    );
    r
}

/// The eight generators' words in four registers (word `w`, lane `l` in lane `l` of
/// register `w`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn load_avx512(s: &[[u64; LANES]; 4]) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    // SAFETY: each word holds exactly eight u64 (unaligned loads).
    s.map(|w| unsafe { _mm512_loadu_si512(w.as_ptr().cast()) })
}

/// Writes back what [`load_avx512`] loaded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn store_avx512(v: [std::arch::x86_64::__m512i; 4], s: &mut [[u64; LANES]; 4]) {
    use std::arch::x86_64::*;
    for (w, v) in s.iter_mut().zip(v) {
        // SAFETY: `w` holds exactly eight u64 (unaligned store).
        unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), v) };
    }
}

/// One step of the eight generators of [`load_avx512`] (xoshiro256+): their outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn step_avx512(s: &mut [std::arch::x86_64::__m512i; 4]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let [s0, s1, s2, s3] = s;
    let r = _mm512_add_epi64(*s0, *s3);
    let t = _mm512_slli_epi64::<17>(*s1);
    *s2 = _mm512_xor_si512(*s2, *s0);
    *s3 = _mm512_xor_si512(*s3, *s1);
    *s1 = _mm512_xor_si512(*s1, *s2);
    *s0 = _mm512_xor_si512(*s0, *s3);
    *s2 = _mm512_xor_si512(*s2, t);
    *s3 = _mm512_rol_epi64::<45>(*s3);
    r
}

/// A reader of one key's values that keeps its generators between calls: consecutive
/// ranges (as a fused program reads them, tile after tile) cost no reseeding.
pub struct Stream {
    key: u64,
    lanes: Lanes,
    /// Block the generators belong to (`u64::MAX` before the first read).
    block: u64,
    /// Position (in the key's values) of the generators' next output group.
    at: u64,
}

impl Stream {
    /// A reader of key `key`.
    pub fn new(key: u64) -> Stream {
        Stream {
            key,
            lanes: Lanes { s: [[0; LANES]; 4] },
            block: u64::MAX,
            at: 0,
        }
    }

    /// Values `first .. first + out.len()`, uniform on `[low, low + scale)`, written into
    /// possibly uninitialised slots (every slot is written).
    pub fn fill(&mut self, out: &mut [MaybeUninit<f64>], first: u64, low: f64, scale: f64) {
        // SAFETY: `MaybeUninit<f64>` and `MaybeUninit<u64>` have the same layout; the bits of
        // doubles are written.
        let words = unsafe { &mut *(out as *mut [MaybeUninit<f64>] as *mut [MaybeUninit<u64>]) };
        self.fill_words::<false>(words, first, low, scale);
    }

    /// The generators' raw outputs `first .. first + out.len()` (value `j` is the raw
    /// output whose top 52 bits make uniform value `j`), written into possibly
    /// uninitialised slots (every slot is written).
    pub fn fill_bits(&mut self, out: &mut [MaybeUninit<u64>], first: u64) {
        self.fill_words::<true>(out, first, 0.0, 1.0);
    }

    /// Puts the generators at value `pos` (a multiple of [`LANES`]): reseeded when they
    /// belong to another block or are past it, then stepped. Returns where `pos`'s block
    /// starts.
    fn seek(&mut self, pos: u64) -> u64 {
        let block = pos / BLOCK as u64;
        let block_start = block * BLOCK as u64;
        if self.block != block || self.at > pos {
            self.lanes = Lanes::seeded(self.key, block);
            self.block = block;
            self.at = block_start;
        }
        while self.at < pos {
            self.lanes.step();
            self.at += LANES as u64;
        }
        block_start
    }

    /// For a consumer that takes the raw values straight from the generators (the normal
    /// values' first pass): calls `run(generators, part, offset)` on each stretch of whole
    /// groups of `out` (values `first ..`, `first` a multiple of [`LANES`]) that lies in one
    /// block, the generators at the stretch's first value; `run` steps them once for each
    /// group of `part` (`out[offset..]`). Returns how many values the stretches cover: all
    /// but the last `out.len() % LANES`.
    #[cfg(target_arch = "x86_64")]
    fn run_groups(
        &mut self,
        out: &mut [MaybeUninit<u64>],
        first: u64,
        mut run: impl FnMut(&mut [[u64; LANES]; 4], &mut [MaybeUninit<u64>], usize),
    ) -> usize {
        assert!(first.is_multiple_of(LANES as u64));
        let whole = out.len() - out.len() % LANES;
        let mut pos = first;
        let mut done = 0;
        while done < whole {
            let block_start = self.seek(pos);
            // Block boundaries are multiples of `LANES`, so this is too.
            let take = (whole - done).min((block_start + BLOCK as u64 - pos) as usize);
            run(&mut self.lanes.s, &mut out[done..done + take], done);
            self.at += take as u64;
            done += take;
            pos += take as u64;
        }
        done
    }

    /// [`Stream::fill`] (`RAW` false) or [`Stream::fill_bits`] (`RAW` true).
    fn fill_words<const RAW: bool>(
        &mut self,
        out: &mut [MaybeUninit<u64>],
        first: u64,
        low: f64,
        scale: f64,
    ) {
        let mut pos = first;
        let mut done = 0;
        while done < out.len() {
            let block_start = self.seek(pos - pos % LANES as u64);
            let take = (out.len() - done).min((block_start + BLOCK as u64 - pos) as usize);
            let target = &mut out[done..done + take];
            let whole = take - take % LANES;
            let used = if pos == self.at && whole > 0 {
                self.lanes.fill::<RAW>(&mut target[..whole], low, scale);
                self.at += whole as u64;
                whole
            } else {
                let mut group = [MaybeUninit::<u64>::uninit(); LANES];
                self.lanes.fill::<RAW>(&mut group, low, scale);
                let skip = (pos - self.at) as usize;
                self.at += LANES as u64;
                let n = (LANES - skip).min(take);
                target[..n].copy_from_slice(&group[skip..skip + n]);
                n
            };
            done += used;
            pos += used as u64;
        }
    }
}

/// Values `first .. first + out.len()` of key `key`, uniform on `[low, high)`, written
/// into possibly uninitialised slots (every slot is written).
pub fn fill_uniform_uninit(
    out: &mut [MaybeUninit<f64>],
    key: u64,
    first: u64,
    low: f64,
    high: f64,
) {
    Stream::new(key).fill(out, first, low, high - low);
}

/// Values `first .. first + out.len()` of key `key`, uniform on `[low, high)`.
pub fn fill_uniform(out: &mut [f64], key: u64, first: u64, low: f64, high: f64) {
    // SAFETY: `MaybeUninit<f64>` has the layout of `f64`; only valid f64 are written.
    let slots = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
    fill_uniform_uninit(slots, key, first, low, high);
}

/// `count` values `first, first + 1, ...` of key `key`, uniform on `[low, high)`.
pub fn uniform_values(count: usize, key: u64, first: u64, low: f64, high: f64) -> Vec<f64> {
    let mut values: Vec<f64> = Vec::with_capacity(count);
    fill_uniform_uninit(
        &mut values.spare_capacity_mut()[..count],
        key,
        first,
        low,
        high,
    );
    // SAFETY: `fill_uniform_uninit` wrote all `count` elements.
    unsafe { values.set_len(count) };
    values
}

/// Normal values `first .. first + out.len()` of `stream` with `mean` and `std`, written
/// into possibly uninitialised slots (every slot is written): value `j` comes from the
/// stream's raw value `j` by the ziggurat method ([`normal`]), and in the rare cases that
/// value does not settle, from a retry stream of `(key, j)`; so it depends on `(key, j)`
/// alone, like a uniform value.
pub fn fill_normal_uninit(
    stream: &mut Stream,
    out: &mut [MaybeUninit<f64>],
    first: u64,
    mean: f64,
    std: f64,
) {
    normal::fill(stream, out, first, mean, std);
}

/// Normal values `first .. first + out.len()` of key `key` with `mean` and `std`.
pub fn fill_normal(out: &mut [f64], key: u64, first: u64, mean: f64, std: f64) {
    // SAFETY: `MaybeUninit<f64>` has the layout of `f64`; only valid f64 are written.
    let slots = unsafe { &mut *(out as *mut [f64] as *mut [MaybeUninit<f64>]) };
    fill_normal_uninit(&mut Stream::new(key), slots, first, mean, std);
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

/// Random integers uniform on `[low, high)` (`i64`, as `numpy.random.Generator.integers`):
/// `low + floor(u * (high - low))` of the uniform values `u` of [`uniform`] with this seed,
/// so the same at any rank count. For ranges wider than 2^40 the 52 random bits of `u`
/// leave gaps between the values drawn.
pub fn integers(low: i64, high: i64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    if high <= low {
        return Array::invalid(format!(
            "random::integers: high {high} must be above low {low} (the range is [low, high))"
        ));
    }
    let width = high.wrapping_sub(low) as u64 as f64;
    (uniform(0.0, 1.0, shape, chunks, seed) * width)
        .floor()
        .minimum(width - 1.0)
        .astype(DType::I64)
        + low
}

/// Random values from an exponential distribution with mean `scale`:
/// `-scale * ln(1 - u)` of the uniform values `u` of [`uniform`] with this seed, so the same
/// at any rank count.
pub fn exponential(scale: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    if !(scale.is_finite() && scale > 0.0) {
        return Array::invalid(format!(
            "random::exponential: scale {scale} must be finite and above 0"
        ));
    }
    (-uniform(0.0, 1.0, shape, chunks, seed)).log1p() * -scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_and_scalar_paths_agree() {
        let mut b = Lanes::seeded(5, 9);
        let mut raw = vec![0u64; 64];
        for group in raw.chunks_exact_mut(LANES) {
            group.copy_from_slice(&b.step());
        }
        let scalar: Vec<u64> = raw
            .iter()
            .map(|&v| (1.0 + 2.0 * unit(v)).to_bits())
            .collect();
        let words = |fill: &dyn Fn(&mut Lanes, &mut [MaybeUninit<u64>])| {
            let mut lanes = Lanes::seeded(5, 9);
            let mut out = vec![MaybeUninit::uninit(); 64];
            fill(&mut lanes, &mut out);
            assert_eq!(lanes.s, b.s);
            // SAFETY: every fill writes every slot.
            out.into_iter()
                .map(|v| unsafe { v.assume_init() })
                .collect::<Vec<u64>>()
        };
        assert_eq!(scalar, words(&|l, o| l.fill::<false>(o, 1.0, 2.0)));
        assert_eq!(raw, words(&|l, o| l.fill::<true>(o, 0.0, 1.0)));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            let avx2 = |l: &mut Lanes, o: &mut [MaybeUninit<u64>]| unsafe {
                l.fill_avx2::<false>(o, 1.0, 2.0)
            };
            assert_eq!(scalar, words(&avx2));
            // SAFETY: the CPU has AVX2.
            let avx2 = |l: &mut Lanes, o: &mut [MaybeUninit<u64>]| unsafe {
                l.fill_avx2::<true>(o, 0.0, 1.0)
            };
            assert_eq!(raw, words(&avx2));
        }
    }

    #[test]
    fn a_stream_read_in_pieces_matches_the_whole() {
        let key = chunk_key(7, 1);
        let mut whole = vec![0.0; 3 * BLOCK + 13];
        fill_uniform(&mut whole, key, 0, 0.0, 1.0);
        let mut stream = Stream::new(key);
        let mut at = 0;
        for len in [3, 5, 8, 1000, 3083, 1, 7, 4096, 2 * BLOCK] {
            let len = len.min(whole.len() - at);
            let mut part = vec![MaybeUninit::uninit(); len];
            stream.fill(&mut part, at as u64, 0.0, 1.0);
            // SAFETY: `fill` wrote every slot.
            let part: Vec<f64> = part
                .into_iter()
                .map(|v| unsafe { v.assume_init() })
                .collect();
            assert_eq!(&whole[at..at + len], &part[..], "{at} {len}");
            at += len;
        }
        // Backwards and into another block.
        let mut part = vec![MaybeUninit::uninit(); 20];
        stream.fill(&mut part, 10, 0.0, 1.0);
        // SAFETY: `fill` wrote every slot.
        let part: Vec<f64> = part
            .into_iter()
            .map(|v| unsafe { v.assume_init() })
            .collect();
        assert_eq!(&whole[10..30], &part[..]);
    }

    #[test]
    fn blocks_match_the_whole() {
        let key = chunk_key(42, 3);
        let mut whole = vec![0.0; 3 * BLOCK + 7];
        fill_uniform(&mut whole, key, 0, -1.0, 1.0);
        for (start, len) in [
            (500, 300),
            (BLOCK - 3, 10),
            (BLOCK, BLOCK),
            (1, 2 * BLOCK + 5),
        ] {
            let mut part = vec![0.0; len];
            fill_uniform(&mut part, key, start as u64, -1.0, 1.0);
            assert_eq!(&whole[start..start + len], &part[..], "{start} {len}");
        }
        assert!(whole.iter().all(|v| (-1.0..1.0).contains(v)));
        let mut first = vec![0.0; 40];
        fill_normal(&mut first, key, 0, 0.0, 1.0);
        // Odd and even starts and ends, in one call or several on one stream.
        for (start, len) in [(5, 10), (5, 1), (6, 1), (0, 1), (7, 33), (1, 2)] {
            let mut normal = vec![0.0; len];
            fill_normal(&mut normal, key, start as u64, 0.0, 1.0);
            assert_eq!(&first[start..start + len], &normal[..], "{start} {len}");
        }
        let mut stream = Stream::new(key);
        let mut pieces = vec![MaybeUninit::<f64>::uninit(); 40];
        for (start, end) in [(0, 3), (3, 4), (4, 11), (11, 40)] {
            fill_normal_uninit(&mut stream, &mut pieces[start..end], start as u64, 0.0, 1.0);
        }
        let pieces: Vec<f64> = pieces.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(pieces, first);
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
