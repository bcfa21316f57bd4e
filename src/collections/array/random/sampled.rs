//! Random values whose sampling takes a varying number of draws (Poisson, binomial, gamma,
//! beta, Student's t: `rand_distr`'s samplers), and choices and permutations of elements.
//!
//! Each chunk is drawn by a task from xoshiro256++ seeded with the chunk's key
//! ([`super::chunk_key`]), so an array is the same at any rank count. Choices and
//! permutations draw their indices on the client (from the seed alone) and gather them from
//! the array in one chunk, one task per output chunk.

use super::super::dtype::{DType, Element};
use super::super::grid;
use super::super::{Array, from_delayed_chunks};
use super::chunk_key;
use crate::delayed::try_delayed;
use ndarray::{Array1, ArrayD, Axis, IxDyn};
use rand_distr::Distribution as _;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// A distribution sampled with a varying number of draws per value.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
enum Sampler {
    Poisson(f64),
    Binomial(u64, f64),
    Gamma(f64, f64),
    Beta(f64, f64),
    StudentT(f64),
}

impl Sampler {
    fn integral(self) -> bool {
        matches!(self, Sampler::Poisson(_) | Sampler::Binomial(..))
    }

    /// `count` values from `rng`.
    fn draw(self, count: usize, rng: &mut Xoshiro256PlusPlus) -> Result<Vec<f64>, String> {
        let e = |e: &dyn std::fmt::Display| format!("{self:?}: {e}");
        Ok(match self {
            Sampler::Poisson(lambda) => {
                let d = rand_distr::Poisson::new(lambda).map_err(|x| e(&x))?;
                (0..count).map(|_| d.sample(rng)).collect()
            }
            Sampler::Binomial(n, p) => {
                let d = rand_distr::Binomial::new(n, p).map_err(|x| e(&x))?;
                (0..count).map(|_| d.sample(rng) as f64).collect()
            }
            Sampler::Gamma(shape, scale) => {
                let d = rand_distr::Gamma::new(shape, scale).map_err(|x| e(&x))?;
                (0..count).map(|_| d.sample(rng)).collect()
            }
            Sampler::Beta(a, b) => {
                let d = rand_distr::Beta::new(a, b).map_err(|x| e(&x))?;
                (0..count).map(|_| d.sample(rng)).collect()
            }
            Sampler::StudentT(df) => {
                let d = rand_distr::StudentT::new(df).map_err(|x| e(&x))?;
                (0..count).map(|_| d.sample(rng)).collect()
            }
        })
    }
}

fn sample_f64(shape: Vec<usize>, key: u64, sampler: Sampler) -> Result<ArrayD<f64>, String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(key);
    let values = sampler.draw(shape.iter().product(), &mut rng)?;
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| e.to_string())
}

fn sample_i64(shape: Vec<usize>, key: u64, sampler: Sampler) -> Result<ArrayD<i64>, String> {
    Ok(sample_f64(shape, key, sampler)?.mapv(|v| v as i64))
}

/// An array of `shape` in chunks of `chunks` drawn from `sampler` with `seed`.
fn sampled(sampler: Sampler, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    let grid = match grid::regular(shape, chunks) {
        Ok(grid) => grid,
        Err(message) => return Array::invalid(message),
    };
    let blocks = grid::indices(&grid).enumerate().map(|(flat, index)| {
        let shape = grid::chunk_shape(&grid, &index);
        (shape, chunk_key(seed, flat as u64))
    });
    if sampler.integral() {
        let parts: Vec<_> = blocks
            .map(|(shape, key)| try_delayed(sample_i64, (shape, key, sampler)))
            .collect();
        from_delayed_chunks(&parts, grid)
    } else {
        let parts: Vec<_> = blocks
            .map(|(shape, key)| try_delayed(sample_f64, (shape, key, sampler)))
            .collect();
        from_delayed_chunks(&parts, grid)
    }
}

/// `Err(invalid array)` naming `name`'s parameters unless `ok`.
fn check(ok: bool, name: &str, params: String) -> Result<(), Array> {
    if ok {
        Ok(())
    } else {
        Err(Array::invalid(format!("random::{name}: {params}")))
    }
}

/// Poisson counts (`i64`) with mean `lam` (`numpy.random.poisson`).
pub fn poisson(lam: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    check(
        lam.is_finite() && lam > 0.0,
        "poisson",
        format!("lam {lam} must be finite and above 0"),
    )
    .map_or_else(
        |e| e,
        |()| sampled(Sampler::Poisson(lam), shape, chunks, seed),
    )
}

/// Binomial counts (`i64`) of `n` trials of probability `p`.
pub fn binomial(n: u64, p: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    check(
        (0.0..=1.0).contains(&p),
        "binomial",
        format!("p {p} must be between 0 and 1"),
    )
    .map_or_else(
        |e| e,
        |()| sampled(Sampler::Binomial(n, p), shape, chunks, seed),
    )
}

/// Gamma values of `shape_k` and `scale` (`numpy.random.gamma(shape, scale)`).
pub fn gamma(shape_k: f64, scale: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    check(
        shape_k.is_finite() && shape_k > 0.0 && scale.is_finite() && scale > 0.0,
        "gamma",
        format!("shape {shape_k} and scale {scale} must be finite and above 0"),
    )
    .map_or_else(
        |e| e,
        |()| sampled(Sampler::Gamma(shape_k, scale), shape, chunks, seed),
    )
}

/// Beta values of parameters `a` and `b`.
pub fn beta(a: f64, b: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    check(
        a.is_finite() && a > 0.0 && b.is_finite() && b > 0.0,
        "beta",
        format!("a {a} and b {b} must be finite and above 0"),
    )
    .map_or_else(
        |e| e,
        |()| sampled(Sampler::Beta(a, b), shape, chunks, seed),
    )
}

/// Student's t values with `df` degrees of freedom.
pub fn standard_t(df: f64, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
    check(
        df.is_finite() && df > 0.0,
        "standard_t",
        format!("df {df} must be finite and above 0"),
    )
    .map_or_else(
        |e| e,
        |()| sampled(Sampler::StudentT(df), shape, chunks, seed),
    )
}

/// Rows `indices` of `a` (gathered in one task).
fn gather<T: Element>(a: ArrayD<T>, indices: Vec<usize>) -> Result<ArrayD<T>, String> {
    let n = a.shape().first().copied().unwrap_or(0);
    if let Some(bad) = indices.iter().find(|&&i| i >= n) {
        return Err(format!("index {bad} of an axis of length {n}"));
    }
    Ok(a.select(Axis(0), &indices))
}

/// Rows of `a` at `indices`, in output chunks of `chunk` rows (the other axes whole).
fn rows_at(a: &Array, indices: Vec<usize>, chunk: usize) -> Array {
    match a.dtype() {
        DType::Bool => rows_of::<bool>(a, indices, chunk),
        DType::U8 => rows_of::<u8>(a, indices, chunk),
        DType::I32 => rows_of::<i32>(a, indices, chunk),
        DType::I64 => rows_of::<i64>(a, indices, chunk),
        DType::F32 => rows_of::<f32>(a, indices, chunk),
        DType::F64 => rows_of::<f64>(a, indices, chunk),
    }
}

/// [`rows_at`] for an array of `T`: gathered in its own type from the array in one chunk.
fn rows_of<T: Element>(a: &Array, indices: Vec<usize>, chunk: usize) -> Array {
    let whole: Vec<Vec<usize>> = a.shape().iter().map(|&n| vec![n]).collect();
    let one = a.rechunk_to(whole.clone()).to_delayed::<T>().remove(0);
    let mut chunks = whole;
    let parts: Vec<_> = if indices.is_empty() {
        chunks[0] = vec![0];
        vec![try_delayed(gather::<T>, (&one, Vec::<usize>::new()))]
    } else {
        let groups = indices.chunks(chunk.max(1));
        chunks[0] = groups.clone().map(<[usize]>::len).collect();
        groups
            .map(|part| try_delayed(gather::<T>, (&one, part.to_vec())))
            .collect()
    };
    from_delayed_chunks(&parts, chunks)
}

/// `size` elements of the 1-D array `a` drawn at random (`numpy.random.choice`): with
/// `replace`, independently (with probabilities `p` when given, which must sum to 1);
/// without, distinct positions (`size` at most `a`'s length). The indices are drawn on the
/// client from `seed`; the result comes in chunks of `chunk`.
pub fn choice(
    a: &Array,
    size: usize,
    replace: bool,
    p: Option<&[f64]>,
    chunk: usize,
    seed: u64,
) -> Array {
    if a.check().is_err() {
        return a.clone();
    }
    let n = a.len();
    if a.ndim() != 1 || n == 0 {
        return Array::invalid(format!(
            "random::choice needs a non-empty 1-D array, got shape {:?}",
            a.shape()
        ));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(chunk_key(seed, u64::MAX));
    let indices: Vec<usize> = match (replace, p) {
        (true, None) => {
            let d = rand_distr::Uniform::new(0, n).expect("a non-empty range");
            (0..size).map(|_| d.sample(&mut rng)).collect()
        }
        (true, Some(p)) => {
            let total: f64 = p.iter().sum();
            if p.len() != n
                || p.iter().any(|&w| w.is_nan() || w < 0.0)
                || (total - 1.0).abs() > 1e-8
            {
                return Array::invalid(format!(
                    "random::choice: p needs {n} non-negative probabilities summing to 1, got \
                     {} summing to {total}",
                    p.len()
                ));
            }
            let d = rand_distr::weighted::WeightedIndex::new(p).expect("valid weights");
            (0..size).map(|_| d.sample(&mut rng)).collect()
        }
        (false, None) => {
            if size > n {
                return Array::invalid(format!(
                    "random::choice: {size} distinct elements of an array of {n}: take at most \
                     {n} without replacement"
                ));
            }
            rand::seq::index::sample(&mut rng, n, size).into_vec()
        }
        (false, Some(_)) => {
            return Array::invalid(
                "random::choice: probabilities without replacement are not supported; draw \
                 with replace = true",
            );
        }
    };
    rows_at(a, indices, chunk)
}

/// The elements of `a` (along its first axis) in a random order (`numpy.random.permutation`
/// of an array), or of `0..n` for [`permutation_of`].
pub fn permutation(a: &Array, seed: u64) -> Array {
    if a.check().is_err() {
        return a.clone();
    }
    if a.ndim() == 0 {
        return Array::invalid("random::permutation needs an array with an axis, got a 0-d one");
    }
    let n = a.shape()[0];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(chunk_key(seed, u64::MAX));
    let mut indices: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(indices.as_mut_slice(), &mut rng);
    let chunk = a.chunks()[0].first().copied().unwrap_or(1);
    rows_at(a, indices, chunk)
}

/// `0..n` (`i64`) in a random order, in chunks of `chunk`.
pub fn permutation_of(n: usize, chunk: usize, seed: u64) -> Array {
    let values = Array1::from_iter(0..n as i64).into_dyn();
    permutation(&super::super::from_array(&values, &[chunk.max(1)]), seed)
}
