//! Statistics and ordering that need more than a reduction's state: `histogram` and
//! `bincount` (counts per chunk, summed in a tree), `percentile`/`quantile` (Dask's
//! approximate merge of per-chunk percentiles, exact for one chunk), `topk`/`argtopk`
//! (the best `k` of each chunk, then of those), `sort` along an axis (in one chunk) and
//! `unique` with counts. Each is a set of delayed calls on the chunks, lazy as Dask's,
//! except `unique`, whose size is known only once computed.
//!
//! Ordering is NumPy's: NaN after every number (largest for `topk`).

use super::dtype::{DType, Element};
use super::grid::{self, Chunks};
use super::lower::FAN_IN;
use super::{Array, from_array, from_delayed_chunks};
use crate::client::Client;
use crate::delayed::{Delayed, delayed, try_delayed};
use crate::error::Result;
use ndarray::{Array1, ArrayD, Axis, IxDyn};
use std::cmp::Ordering;

/// Calls `$body` with `$t` the Rust type of `$dtype`.
macro_rules! with_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Bool => {
                type $t = bool;
                $body
            }
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::I32 => {
                type $t = i32;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}

/// NumPy's sort order: NaN after every number.
fn order<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    #[allow(clippy::eq_op)]
    let nan = |v: &T| v != v;
    a.partial_cmp(b).unwrap_or_else(|| nan(a).cmp(&nan(b)))
}

// ----- tasks (run on the workers) ---------------------------------------------------------

/// The edges of `bins` equal bins over `[lo, hi]`, as `numpy.linspace` makes them.
fn edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let step = (hi - lo) / bins as f64;
    let mut e: Vec<f64> = (0..=bins).map(|i| i as f64 * step + lo).collect();
    e[bins] = hi;
    e
}

/// Counts of a chunk's values in `bins` equal bins over `[lo, hi]`, as `numpy.histogram`
/// places them (the last bin holds `hi`; values outside and NaN are not counted).
fn histogram_chunk(block: ArrayD<f64>, bins: usize, lo: f64, hi: f64) -> ArrayD<i64> {
    let e = edges(lo, hi, bins);
    let mut counts = vec![0i64; bins];
    for &v in block.iter().filter(|&&v| v >= lo && v <= hi) {
        let mut i = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        if i == bins {
            i -= 1;
        }
        if v < e[i] {
            i -= 1;
        } else if v >= e[i + 1] && i != bins - 1 {
            i += 1;
        }
        counts[i] += 1;
    }
    Array1::from(counts).into_dyn()
}

fn add_counts(parts: Vec<ArrayD<i64>>) -> ArrayD<i64> {
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0])));
    parts.fold(first, |acc, p| acc + p)
}

fn bincount_chunk(block: ArrayD<i64>, minlength: usize) -> Result<ArrayD<i64>, String> {
    let mut counts = vec![0i64; minlength];
    for &v in &block {
        let slot = usize::try_from(v)
            .ok()
            .filter(|&i| i < minlength)
            .ok_or_else(|| {
                if v < 0 {
                    format!("bincount: the array holds {v}; it counts non-negative integers")
                } else {
                    format!(
                        "bincount: the array holds {v}, not below minlength {minlength}: give a \
                     minlength above the largest value"
                    )
                }
            })?;
        counts[slot] += 1;
    }
    Ok(Array1::from(counts).into_dyn())
}

/// NumPy's `percentile` (linear) of sorted finite values at each of `q` (0 to 100).
fn percentiles_of_sorted(sorted: &[f64], q: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    q.iter()
        .map(|&q| {
            let at = q / 100.0 * (n - 1) as f64;
            let i = (at.floor() as usize).min(n - 1);
            let j = (i + 1).min(n - 1);
            let t = at - i as f64;
            // NumPy's `_lerp`: exact at both ends.
            let (a, b) = (sorted[i], sorted[j]);
            let v = a + (b - a) * t;
            if t >= 0.5 { b - (b - a) * (1.0 - t) } else { v }
        })
        .collect()
}

fn percentile_chunk(block: ArrayD<f64>, q: Vec<f64>) -> ArrayD<f64> {
    let mut v: Vec<f64> = block.iter().copied().collect();
    if v.iter().any(|x| x.is_nan()) {
        return Array1::from_elem(q.len(), f64::NAN).into_dyn();
    }
    v.sort_unstable_by(order);
    Array1::from(percentiles_of_sorted(&v, &q)).into_dyn()
}

/// Dask's `merge_percentiles` (linear): each chunk's values at `calc_q` stand for the
/// elements between their percentiles; sorted together, their running counts locate `q`.
/// The sort is stable (Dask's `argsort` is not, so where values tie its result may
/// differ).
fn merge_percentiles(
    vals: Vec<ArrayD<f64>>,
    calc_q: Vec<f64>,
    ns: Vec<usize>,
    q: Vec<f64>,
) -> ArrayD<f64> {
    let mut pairs: Vec<(f64, f64)> = Vec::new();
    for (v, &n) in vals.iter().zip(&ns) {
        for (k, &value) in v.iter().enumerate() {
            let width = if k == 0 {
                calc_q[0]
            } else {
                calc_q[k] - calc_q[k - 1]
            };
            pairs.push((value, width * n as f64));
        }
    }
    if pairs.iter().any(|(v, _)| v.is_nan()) {
        return Array1::from_elem(q.len(), f64::NAN).into_dyn();
    }
    pairs.sort_by(|a, b| order(&a.0, &b.0));
    let mut running = 0.0;
    let xs: Vec<f64> = pairs
        .iter()
        .map(|&(_, c)| {
            running += c;
            running
        })
        .collect();
    let total: usize = ns.iter().sum();
    let out = q
        .iter()
        .map(|&q| interp(q * total as f64, &xs, &pairs))
        .collect::<Vec<_>>();
    Array1::from(out).into_dyn()
}

/// `numpy.interp(x, xs, values)` for increasing `xs`.
fn interp(x: f64, xs: &[f64], pairs: &[(f64, f64)]) -> f64 {
    let last = xs.len() - 1;
    if x < xs[0] {
        return pairs[0].0;
    }
    if x >= xs[last] {
        return pairs[last].0;
    }
    // The last j with xs[j] <= x (so xs[j + 1] > x).
    let j = xs.partition_point(|&v| v <= x) - 1;
    let slope = (pairs[j + 1].0 - pairs[j].0) / (xs[j + 1] - xs[j]);
    slope * (x - xs[j]) + pairs[j].0
}

/// Along the last axis, the `|k|` largest (`k > 0`, descending) or smallest (ascending)
/// values and their indices (plus `offset`).
fn best<T: Element + PartialOrd>(
    block: &ArrayD<T>,
    k: i64,
    offset: usize,
) -> (ArrayD<T>, ArrayD<i64>) {
    let last = block.ndim() - 1;
    let n = block.shape()[last];
    let kk = (k.unsigned_abs() as usize).min(n);
    let mut shape = block.shape().to_vec();
    shape[last] = kk;
    let mut values = Vec::with_capacity(shape.iter().product());
    let mut indices = Vec::with_capacity(values.capacity());
    for lane in block.lanes(Axis(last)) {
        let mut pairs: Vec<(T, usize)> = lane.iter().copied().zip(0..).collect();
        if k > 0 {
            pairs.sort_by(|a, b| order(&b.0, &a.0).then(a.1.cmp(&b.1)));
        } else {
            pairs.sort_by(|a, b| order(&a.0, &b.0).then(a.1.cmp(&b.1)));
        }
        for &(v, i) in &pairs[..kk] {
            values.push(v);
            indices.push((i + offset) as i64);
        }
    }
    (
        ArrayD::from_shape_vec(IxDyn(&shape), values).expect("lane sizes"),
        ArrayD::from_shape_vec(IxDyn(&shape), indices).expect("lane sizes"),
    )
}

fn topk_block<T: Element + PartialOrd>(block: ArrayD<T>, k: i64) -> ArrayD<T> {
    best(&block, k, 0).0
}

fn argtopk_chunk<T: Element + PartialOrd>(
    block: ArrayD<T>,
    k: i64,
    offset: usize,
) -> (ArrayD<T>, ArrayD<i64>) {
    best(&block, k, offset)
}

fn chunk_values<T: Element>(pair: (ArrayD<T>, ArrayD<i64>)) -> ArrayD<T> {
    pair.0
}

fn chunk_indices<T: Element>(pair: (ArrayD<T>, ArrayD<i64>)) -> ArrayD<i64> {
    pair.1
}

/// Of the candidates (values and their indices along the last axis): the indices of the
/// best `k`.
fn argtopk_final<T: Element + PartialOrd>(
    values: ArrayD<T>,
    indices: ArrayD<i64>,
    k: i64,
) -> ArrayD<i64> {
    let (_, picks) = best(&values, k, 0);
    let last = values.ndim() - 1;
    let mut out = picks.clone();
    for ((mut o, p), ix) in out
        .lanes_mut(Axis(last))
        .into_iter()
        .zip(picks.lanes(Axis(last)))
        .zip(indices.lanes(Axis(last)))
    {
        for (slot, &p) in o.iter_mut().zip(p.iter()) {
            *slot = ix[p as usize];
        }
    }
    out
}

fn sort_block<T: Element + PartialOrd>(mut block: ArrayD<T>, axis: usize) -> ArrayD<T> {
    for mut lane in block.lanes_mut(Axis(axis)) {
        let mut v: Vec<T> = lane.iter().copied().collect();
        v.sort_by(order);
        lane.iter_mut().zip(v).for_each(|(slot, x)| *slot = x);
    }
    block
}

/// The distinct values of a block, ascending (one NaN for all), and how often each occurs.
fn unique_chunk<T: Element + PartialOrd>(block: ArrayD<T>) -> (Vec<T>, Vec<i64>) {
    let n = block.len();
    merge_unique(vec![(block.into_iter().collect(), vec![1; n])])
}

/// Distinct values with their counts, merged.
fn merge_unique<T: Element + PartialOrd>(parts: Vec<(Vec<T>, Vec<i64>)>) -> (Vec<T>, Vec<i64>) {
    let mut all: Vec<(T, i64)> = parts
        .into_iter()
        .flat_map(|(v, c)| v.into_iter().zip(c))
        .collect();
    all.sort_by(|a, b| order(&a.0, &b.0));
    let mut values: Vec<T> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for (x, c) in all {
        match values.last() {
            Some(last) if order(last, &x) == Ordering::Equal => {
                *counts.last_mut().expect("a count per value") += c;
            }
            _ => {
                values.push(x);
                counts.push(c);
            }
        }
    }
    (values, counts)
}

// ----- the graph, on the client -----------------------------------------------------------

/// `parts` summed in a tree of at most [`FAN_IN`] per task.
fn sum_tree(mut parts: Vec<Delayed<ArrayD<i64>>>) -> Delayed<ArrayD<i64>> {
    while parts.len() > 1 {
        parts = parts
            .chunks(FAN_IN)
            .map(|group| delayed(add_counts, group.to_vec()))
            .collect();
    }
    parts.pop().expect("at least one part")
}

/// The chunks along the last axis merged into one (other axes keep theirs).
fn whole_last_axis(x: &Array) -> Array {
    let mut chunks = x.chunks().clone();
    if let Some(last) = chunks.last_mut() {
        *last = vec![last.iter().sum()];
    }
    x.rechunk_to(chunks)
}

/// The chunks of `x` with the last axis's sizes replaced by `sizes`.
fn with_last(x: &Array, sizes: Vec<usize>) -> Chunks {
    let mut chunks = x.chunks().clone();
    *chunks.last_mut().expect("an axis") = sizes;
    chunks
}

impl Array {
    /// The counts of the elements in `bins` equal bins over `range` (`lo`, `hi`), and the
    /// `bins + 1` edges (`numpy.histogram(x, bins, range)`; Dask needs the range too). The
    /// last bin includes `hi`; values outside the range and NaN are not counted. The counts
    /// are `i64`, the edges `f64`.
    pub fn histogram(&self, bins: usize, range: (f64, f64)) -> (Array, Array) {
        let invalid = |message: String| {
            let a = Array::invalid(message);
            (a.clone(), a)
        };
        if self.check().is_err() {
            return (self.clone(), self.clone());
        }
        let (mut lo, mut hi) = range;
        if bins == 0 || !(lo.is_finite() && hi.is_finite()) || lo > hi {
            return invalid(format!(
                "histogram: {bins} bins over range ({lo}, {hi}): it needs at least one bin and \
                 a finite range with lo <= hi"
            ));
        }
        if lo == hi {
            // NumPy widens an empty range by a half on each side.
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let parts = self
            .astype(DType::F64)
            .to_delayed::<f64>()
            .iter()
            .map(|block| delayed(histogram_chunk, (block, bins, lo, hi)))
            .collect();
        let counts = from_delayed_chunks(&[sum_tree(parts)], vec![vec![bins]]);
        let e = Array1::from(edges(lo, hi, bins)).into_dyn();
        (counts, from_array(&e, &[bins + 1]))
    }

    /// How many times each integer `0..minlength` occurs (`numpy.bincount`; `i64`). Dask
    /// cannot know the length before computing either; here `minlength` is the length, and
    /// a value at or above it, or a negative one, fails the computation with an error that
    /// says so.
    pub fn bincount(&self, minlength: usize) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        if matches!(self.dtype(), DType::F32 | DType::F64) || self.ndim() != 1 {
            return Array::invalid(format!(
                "bincount needs a 1-D array of integers, got {} of shape {:?}",
                self.dtype(),
                self.shape()
            ));
        }
        let parts = self
            .astype(DType::I64)
            .to_delayed::<i64>()
            .iter()
            .map(|block| try_delayed(bincount_chunk, (block, minlength)))
            .collect();
        from_delayed_chunks(&[sum_tree(parts)], vec![vec![minlength]])
    }

    /// The `q`-th percentiles (0 to 100) of a 1-D array, as `f64`, by Dask's method: each
    /// chunk's percentiles at 0, `q` and 100, merged by the number of elements each stands
    /// for (sorted stably: where a chunk's values tie with another's, Dask's unstable sort
    /// may give another value). Exact (NumPy's linear `percentile`) when the array is one
    /// chunk; an approximation otherwise. NaN anywhere gives NaN.
    pub fn percentile(&self, q: &[f64]) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        if self.ndim() != 1 || self.is_empty() {
            return Array::invalid(format!(
                "percentile needs a non-empty 1-D array, got shape {:?}",
                self.shape()
            ));
        }
        if let Some(bad) = q.iter().find(|q| !(0.0..=100.0).contains(*q)) {
            return Array::invalid(format!("percentile: {bad} is not between 0 and 100"));
        }
        let mut calc_q = vec![0.0];
        calc_q.extend_from_slice(q);
        calc_q.push(100.0);
        let (mut vals, mut ns) = (Vec::new(), Vec::new());
        for (block, &n) in self
            .astype(DType::F64)
            .to_delayed::<f64>()
            .iter()
            .zip(&self.chunks()[0])
        {
            if n > 0 {
                vals.push(delayed(percentile_chunk, (block, calc_q.clone())));
                ns.push(n);
            }
        }
        let merged = delayed(merge_percentiles, (vals, calc_q, ns, q.to_vec()));
        from_delayed_chunks(&[merged], vec![vec![q.len()]])
    }

    /// The `q`-th quantiles (0 to 1): [`percentile`](Self::percentile) of `100 q`.
    pub fn quantile(&self, q: &[f64]) -> Array {
        let q: Vec<f64> = q.iter().map(|q| q * 100.0).collect();
        self.percentile(&q)
    }

    /// Along the last axis, the `k` largest values in descending order (`k > 0`) or the
    /// `-k` smallest in ascending order (`k < 0`), as Dask's `topk`: the best of each chunk,
    /// then the best of those.
    pub fn topk(&self, k: i64) -> Array {
        if let Err(invalid) = self.check_topk(k, "topk") {
            return invalid;
        }
        with_type!(self.dtype(), T => {
            let kk = k.unsigned_abs() as usize;
            let sizes: Vec<usize> = self.chunks().last().expect("an axis").iter().map(|&c| c.min(kk)).collect();
            let parts: Vec<_> = self.to_delayed::<T>().iter().map(|b| delayed(topk_block::<T>, (b, k))).collect();
            let candidates = whole_last_axis(&from_delayed_chunks(&parts, with_last(self, sizes)));
            let best: Vec<_> = candidates.to_delayed::<T>().iter().map(|b| delayed(topk_block::<T>, (b, k))).collect();
            let n = *self.shape().last().expect("an axis");
            from_delayed_chunks(&best, with_last(&candidates, vec![kk.min(n)]))
        })
    }

    /// The indices along the last axis (`i64`) of [`topk`](Self::topk)'s values.
    pub fn argtopk(&self, k: i64) -> Array {
        if let Err(invalid) = self.check_topk(k, "argtopk") {
            return invalid;
        }
        with_type!(self.dtype(), T => {
            let kk = k.unsigned_abs() as usize;
            let last = self.chunks().last().expect("an axis");
            let offsets = grid::boundaries(last);
            let sizes: Vec<usize> = last.iter().map(|&c| c.min(kk)).collect();
            let grid_shape = grid::grid(self.chunks());
            let pairs: Vec<_> = self
                .to_delayed::<T>()
                .iter()
                .enumerate()
                .map(|(flat, b)| {
                    let j = *grid::unravel(flat, &grid_shape).last().expect("an axis");
                    delayed(argtopk_chunk::<T>, (b, k, offsets[j]))
                })
                .collect();
            let chunks = with_last(self, sizes);
            let values: Vec<_> = pairs.iter().map(|p| delayed(chunk_values::<T>, p)).collect();
            let indices: Vec<_> = pairs.iter().map(|p| delayed(chunk_indices::<T>, p)).collect();
            let values = whole_last_axis(&from_delayed_chunks(&values, chunks.clone()));
            let indices = whole_last_axis(&from_delayed_chunks(&indices, chunks));
            let best: Vec<_> = values
                .to_delayed::<T>()
                .iter()
                .zip(indices.to_delayed::<i64>())
                .map(|(v, i)| delayed(argtopk_final::<T>, (v, &i, k)))
                .collect();
            let n = *self.shape().last().expect("an axis");
            from_delayed_chunks(&best, with_last(&values, vec![kk.min(n)]))
        })
    }

    fn check_topk(&self, k: i64, name: &str) -> std::result::Result<(), Array> {
        if self.check().is_err() {
            return Err(self.clone());
        }
        if self.ndim() == 0 || k == 0 {
            return Err(Array::invalid(format!(
                "{name}({k}) of an array of shape {:?}: it needs an axis and k other than 0",
                self.shape()
            )));
        }
        Ok(())
    }

    /// Sorted along `axis` (NaN last, as `numpy.sort`), which is first rechunked to one
    /// chunk (Dask has no distributed sort either).
    pub fn sort(&self, axis: isize) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let Some(axis) = self.axis_index(axis) else {
            return Array::invalid(format!(
                "sort: axis {axis} is out of range for an array of shape {:?}",
                self.shape()
            ));
        };
        let mut chunks = self.chunks().clone();
        chunks[axis] = vec![self.shape()[axis]];
        let whole = self.rechunk_to(chunks.clone());
        with_type!(self.dtype(), T => {
            let parts: Vec<_> = whole.to_delayed::<T>().iter().map(|b| delayed(sort_block::<T>, (b, axis))).collect();
            from_delayed_chunks(&parts, chunks)
        })
    }

    fn axis_index(&self, axis: isize) -> Option<usize> {
        let n = self.ndim() as isize;
        let a = if axis < 0 { axis + n } else { axis };
        (0..n).contains(&a).then_some(a as usize)
    }

    /// The distinct values, ascending (NaN once, last), and how often each occurs
    /// (`numpy.unique(x, return_counts=True)`), computed: their number is known only then.
    /// `T` must be the array's element type.
    pub fn unique<T: Element + PartialOrd>(
        &self,
        client: &Client,
    ) -> Result<(Array1<T>, Array1<i64>)> {
        self.check()?;
        if T::DTYPE != self.dtype() {
            return Err(crate::error::Error::Config(format!(
                "unique::<{}>() of an array of {}",
                T::DTYPE,
                self.dtype()
            )));
        }
        let mut parts: Vec<_> = self
            .to_delayed::<T>()
            .iter()
            .map(|b| delayed(unique_chunk::<T>, b))
            .collect();
        while parts.len() > 1 {
            parts = parts
                .chunks(FAN_IN)
                .map(|group| delayed(merge_unique::<T>, group.to_vec()))
                .collect();
        }
        let (values, counts) = match parts.pop() {
            Some(merged) => merged.compute(client)?,
            None => (Vec::new(), Vec::new()),
        };
        Ok((Array1::from(values), Array1::from(counts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_as_numpy() {
        let x = ArrayD::from_shape_vec(IxDyn(&[7]), vec![0.0, 0.1, 0.5, 0.99, 1.0, -1.0, f64::NAN])
            .unwrap();
        assert_eq!(histogram_chunk(x, 2, 0.0, 1.0).as_slice().unwrap(), &[2, 3]);
    }

    #[test]
    fn percentiles_are_numpy_linear() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(
            percentiles_of_sorted(&v, &[0.0, 50.0, 100.0]),
            vec![1.0, 3.0, 8.0]
        );
    }

    #[test]
    fn order_puts_nan_last() {
        let mut v = [2.0, f64::NAN, -1.0];
        v.sort_by(order);
        assert_eq!(v[..2], [-1.0, 2.0]);
        assert!(v[2].is_nan());
    }
}
