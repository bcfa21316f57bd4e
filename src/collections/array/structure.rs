//! Operations that move elements between positions or chunks: slicing, transposition,
//! reshaping, rechunking, concatenation, stacking and matrix products.

use super::grid::{self, Chunks};
use super::program::AxisSlice;
use super::{Array, DType, Expr};

/// The bytes a chunk of [`Array::rechunk_auto`] holds (Dask's `array.chunk-size`, 128 MiB).
pub const AUTO_CHUNK_BYTES: u64 = 128 << 20;

/// A range with a step along one axis, as in NumPy's `start:stop:step` (negative start and
/// stop count from the end; a negative step takes the elements from the highest down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First index (`None`: 0).
    pub start: Option<isize>,
    /// End, excluded (`None`: the axis length).
    pub stop: Option<isize>,
    /// Step, not 0 (negative: downwards).
    pub step: isize,
}

impl Span {
    /// The whole axis.
    pub fn all() -> Span {
        Span {
            start: None,
            stop: None,
            step: 1,
        }
    }

    /// `start:stop:step`.
    pub fn new(start: Option<isize>, stop: Option<isize>, step: isize) -> Span {
        Span { start, stop, step }
    }
}

impl From<std::ops::Range<isize>> for Span {
    fn from(r: std::ops::Range<isize>) -> Span {
        Span::new(Some(r.start), Some(r.end), 1)
    }
}

impl From<std::ops::RangeFrom<isize>> for Span {
    fn from(r: std::ops::RangeFrom<isize>) -> Span {
        Span::new(Some(r.start), None, 1)
    }
}

impl From<std::ops::RangeTo<isize>> for Span {
    fn from(r: std::ops::RangeTo<isize>) -> Span {
        Span::new(None, Some(r.end), 1)
    }
}

impl From<std::ops::RangeFull> for Span {
    fn from(_: std::ops::RangeFull) -> Span {
        Span::all()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Per output chunk along one axis of a slice: the source chunk and the part of it taken.
pub(crate) type AxisPlan = Vec<(usize, AxisSlice)>;

/// A span resolved on an axis of length `n`: the lowest index it takes, its step (positive),
/// its length, and whether it takes them from the highest down (a negative step, as NumPy's
/// `x[::-2]`: start at the end by default, stop past the beginning).
pub(crate) fn resolve(span: Span, n: usize) -> Result<(usize, usize, usize, bool), String> {
    if span.step == 0 {
        return Err("slice step cannot be zero".into());
    }
    let n = n as isize;
    let step = span.step.abs();
    if span.step > 0 {
        let clamp = |v: isize| {
            let v = if v < 0 { v + n } else { v };
            v.clamp(0, n)
        };
        let start = clamp(span.start.unwrap_or(0));
        let stop = clamp(span.stop.unwrap_or(n));
        let len = if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        };
        return Ok((start as usize, step as usize, len as usize, false));
    }
    // Downwards: indices start, start - step, ... above stop; -1 stands for "past 0".
    let clamp = |v: isize| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(-1, n - 1)
    };
    let start = span.start.map_or(n - 1, clamp);
    let stop = span.stop.map_or(-1, clamp);
    let len = if start > stop {
        (start - stop - 1) / step + 1
    } else {
        0
    };
    let lowest = if len > 0 { start - (len - 1) * step } else { 0 };
    Ok((lowest as usize, step as usize, len as usize, true))
}

fn plan_axis(sizes: &[usize], start: usize, step: usize, len: usize) -> AxisPlan {
    let bounds = grid::boundaries(sizes);
    let mut plan = Vec::new();
    for (c, window) in bounds.windows(2).enumerate() {
        let (b, e) = (window[0], window[1]);
        let first = if b > start {
            (b - start).div_ceil(step)
        } else {
            0
        };
        let end = if e > start {
            (e - start).div_ceil(step).min(len)
        } else {
            0
        };
        if end > first {
            plan.push((
                c,
                AxisSlice {
                    start: start + first * step - b,
                    step,
                    len: end - first,
                    reverse: false,
                },
            ));
        }
    }
    if plan.is_empty() {
        plan.push((
            0,
            AxisSlice {
                start: 0,
                step: 1,
                len: 0,
                reverse: false,
            },
        ));
    }
    plan
}

impl Array {
    /// Elements `spans[i]` along axis `i` (missing spans take whole axes), like NumPy's
    /// `x[a:b:s, ...]`. Output chunks are the parts of the input chunks that are kept.
    pub fn slice(&self, spans: &[Span]) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        if spans.len() > self.ndim() {
            return Array::invalid(format!(
                "{} slices for an array of shape {:?}",
                spans.len(),
                self.shape()
            ));
        }
        let mut plans = Vec::new();
        let mut shape = Vec::new();
        let mut chunks = Chunks::new();
        for (axis, &n) in self.shape().iter().enumerate() {
            let span = spans.get(axis).copied().unwrap_or(Span::all());
            let (start, step, len, reverse) = match resolve(span, n) {
                Ok(r) => r,
                Err(message) => return Array::invalid(message),
            };
            let mut plan = plan_axis(&self.chunks()[axis], start, step, len);
            if reverse {
                // The same parts, from the last chunk to the first, each read backwards.
                plan.reverse();
                for (_, part) in &mut plan {
                    part.reverse = true;
                }
            }
            shape.push(len);
            chunks.push(plan.iter().map(|(_, s)| s.len).collect());
            plans.push(plan);
        }
        Array::new(
            shape,
            chunks,
            self.dtype(),
            Expr::Slice(plans, self.clone()),
        )
    }

    /// Axes in reverse order.
    pub fn t(&self) -> Array {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        self.transpose(&perm)
    }

    /// Axes permuted: axis `i` of the result is axis `perm[i]` of this array.
    pub fn transpose(&self, perm: &[usize]) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.ndim()).collect::<Vec<_>>() {
            return Array::invalid(format!(
                "transpose: {perm:?} is not a permutation of the {} axes of shape {:?}",
                self.ndim(),
                self.shape()
            ));
        }
        let shape = perm.iter().map(|&a| self.shape()[a]).collect();
        let chunks = perm.iter().map(|&a| self.chunks()[a].clone()).collect();
        Array::new(
            shape,
            chunks,
            self.dtype(),
            Expr::Transpose(perm.to_vec(), self.clone()),
        )
    }

    /// The same elements in C order with another shape (one entry may be -1). Works chunk
    /// by chunk: when a chunk boundary does not fall on a row boundary of the new shape, or
    /// an axis other than 0 is cut into several chunks, the array is first rechunked (as
    /// Dask does) into chunks of whole rows of both shapes, cut only along axis 0, about as
    /// large as its first chunk. Shapes that differ only by axes of length 1 (NumPy's
    /// `expand_dims` and `squeeze`) keep any chunking.
    pub fn reshape(&self, shape: &[isize]) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let total = self.len();
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let unknown = shape.iter().filter(|&&d| d < 0).count();
        let new_shape: Vec<usize> = match unknown {
            0 => shape.iter().map(|&d| d as usize).collect(),
            1 if known > 0 && total.is_multiple_of(known) => shape
                .iter()
                .map(|&d| if d < 0 { total / known } else { d as usize })
                .collect(),
            _ => {
                return Array::invalid(format!(
                    "cannot reshape an array of shape {:?} into {shape:?}",
                    self.shape()
                ));
            }
        };
        if new_shape.iter().product::<usize>() != total {
            return Array::invalid(format!(
                "cannot reshape an array of shape {:?} ({total} elements) into {new_shape:?}",
                self.shape()
            ));
        }
        if new_shape == self.shape() {
            return self.clone();
        }
        if only_unit_axes_differ(self.shape(), &new_shape) {
            // Axes of length 1 inserted or removed: chunk for chunk, any chunking.
            let mut kept = self
                .chunks()
                .iter()
                .zip(self.shape())
                .filter(|(_, n)| **n != 1)
                .map(|(c, _)| c.clone());
            let chunks = new_shape
                .iter()
                .map(|&n| {
                    if n == 1 {
                        vec![1]
                    } else {
                        kept.next().expect("an axis of both shapes")
                    }
                })
                .collect();
            return Array::new(new_shape, chunks, self.dtype(), Expr::Reshape(self.clone()));
        }
        let in_row: usize = self.shape().iter().skip(1).product();
        let out_row: usize = new_shape.iter().skip(1).product();
        let single_chunked = self.chunks().iter().skip(1).all(|c| c.len() <= 1);
        let rows: Vec<usize> = self.chunks().first().cloned().unwrap_or_default();
        let aligned = out_row > 0
            && rows.iter().all(|&r| (r * in_row).is_multiple_of(out_row))
            && (single_chunked || self.num_chunks() == 1);
        if !aligned {
            // Rechunk first, as Dask does: only axis 0 cut, into whole rows of both shapes,
            // each chunk about as large as this array's first.
            let first: usize = self
                .chunks()
                .iter()
                .map(|c| c.first().copied().unwrap_or(1))
                .product();
            let unit = if in_row == 0 || out_row == 0 {
                self.shape().first().copied().unwrap_or(1)
            } else {
                out_row / gcd(in_row, out_row)
            };
            let wanted = (first / in_row.max(1)).max(1);
            let rows = (wanted / unit.max(1)).max(1) * unit.max(1);
            let mut sizes = vec![rows as isize];
            sizes.extend(std::iter::repeat_n(-1, self.ndim() - 1));
            let shape: Vec<isize> = new_shape.iter().map(|&n| n as isize).collect();
            return self.rechunk(&sizes).reshape(&shape);
        }
        let mut chunks: Chunks = vec![if self.ndim() == 0 || self.num_chunks() == 1 {
            vec![new_shape.first().copied().unwrap_or(1)]
        } else {
            rows.iter().map(|&r| r * in_row / out_row).collect()
        }];
        chunks.extend(new_shape.iter().skip(1).map(|&n| vec![n]));
        if new_shape.is_empty() {
            chunks.clear();
        }
        Array::new(new_shape, chunks, self.dtype(), Expr::Reshape(self.clone()))
    }

    /// Cut into chunks of `sizes` along each axis: -1 (Dask's) or 0 keeps the whole axis in
    /// one chunk. [`rechunk_auto`](Self::rechunk_auto) is Dask's `"auto"`.
    ///
    /// ```
    /// use mpidask::array::random;
    /// let x = random::uniform(0.0, 1.0, &[1000, 1000], &[100, 1000], 1); // row chunks
    /// let columns = x.rechunk(&[-1, 100]); // whole columns, 100 wide (Dask: rechunk((-1, 100)))
    /// assert_eq!(columns.chunks()[0], vec![1000]);
    /// assert_eq!(columns.chunks()[1].len(), 10);
    /// ```
    pub fn rechunk(&self, sizes: &[isize]) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        if let Some(bad) = sizes.iter().find(|&&s| s < -1) {
            return Array::invalid(format!(
                "rechunk: chunk size {bad} in {sizes:?}: give sizes above 0, or -1 for the \
                 whole axis"
            ));
        }
        let sizes: Vec<usize> = sizes
            .iter()
            .zip(self.shape())
            .map(|(&s, &n)| if s <= 0 { n.max(1) } else { s as usize })
            .collect();
        match grid::regular(self.shape(), &sizes) {
            Ok(chunks) => self.rechunk_to(chunks),
            Err(message) => Array::invalid(message),
        }
    }

    /// Rechunked to chunks of about [`AUTO_CHUNK_BYTES`] each, as square as the axes allow
    /// (Dask's `rechunk("auto")`): every axis shorter than its share is taken whole, the
    /// others share the rest equally.
    pub fn rechunk_auto(&self) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let mut budget = (AUTO_CHUNK_BYTES / self.dtype().size() as u64).max(1) as f64;
        let mut sizes = vec![0usize; self.ndim()];
        let mut open: Vec<usize> = (0..self.ndim()).collect();
        // Axes shorter than an equal share are taken whole, which leaves more for the rest.
        loop {
            let share = budget.powf(1.0 / open.len().max(1) as f64);
            let (whole, rest): (Vec<usize>, Vec<usize>) = open
                .iter()
                .partition(|&&a| (self.shape()[a] as f64) <= share);
            for &a in &whole {
                sizes[a] = self.shape()[a].max(1);
                budget /= sizes[a] as f64;
            }
            if whole.is_empty() || rest.is_empty() {
                for &a in &rest {
                    sizes[a] = (share.floor() as usize).clamp(1, self.shape()[a].max(1));
                }
                break;
            }
            open = rest;
        }
        let sizes: Vec<isize> = sizes.iter().map(|&s| s as isize).collect();
        self.rechunk(&sizes)
    }

    pub(crate) fn rechunk_to(&self, chunks: Chunks) -> Array {
        if &chunks == self.chunks() {
            return self.clone();
        }
        Array::new(
            self.shape().to_vec(),
            chunks,
            self.dtype(),
            Expr::Rechunk(self.clone()),
        )
    }

    /// Matrix product of two 2-D arrays.
    pub fn dot(&self, other: &Array) -> Array {
        for a in [self, other] {
            if a.check().is_err() {
                return a.clone();
            }
        }
        if self.ndim() != 2 || other.ndim() != 2 || self.shape()[1] != other.shape()[0] {
            return Array::invalid(format!(
                "dot needs 2-D arrays with matching inner sizes, got shapes {:?} and {:?}",
                self.shape(),
                other.shape()
            ));
        }
        let other = if other.chunks()[0] == self.chunks()[1] {
            other.clone()
        } else {
            other.rechunk_to(vec![self.chunks()[1].clone(), other.chunks()[1].clone()])
        };
        let dtype = match self.dtype().promote(other.dtype()) {
            DType::Bool => DType::I64,
            d => d,
        };
        Array::new(
            vec![self.shape()[0], other.shape()[1]],
            vec![self.chunks()[0].clone(), other.chunks()[1].clone()],
            dtype,
            Expr::Dot(self.clone(), other),
        )
    }
}

/// Arrays joined along an existing `axis` (other axes must match; chunks follow the first).
pub fn concatenate(arrays: &[Array], axis: isize) -> Array {
    let Some(first) = arrays.first() else {
        return Array::invalid("concatenate needs at least one array");
    };
    for a in arrays {
        if a.check().is_err() {
            return a.clone();
        }
    }
    let axis = match grid::axis(axis, first.ndim()) {
        Ok(a) => a,
        Err(message) => return Array::invalid(format!("concatenate: {message}")),
    };
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    let mut along = Vec::new();
    let mut parts = Vec::new();
    for a in arrays {
        let same_rest = a.ndim() == first.ndim()
            && (0..a.ndim()).all(|d| d == axis || a.shape()[d] == first.shape()[d]);
        if !same_rest {
            return Array::invalid(format!(
                "concatenate along axis {axis}: shapes {:?} and {:?} differ on another axis",
                first.shape(),
                a.shape()
            ));
        }
        let mut chunks = first.chunks().clone();
        chunks[axis] = a.chunks()[axis].clone();
        let a = a
            .rechunk_to(chunks)
            .astype(first.dtype().promote(a.dtype()));
        shape[axis] += a.shape()[axis];
        along.extend(a.chunks()[axis].iter().copied().filter(|&s| s > 0));
        parts.push(a);
    }
    if along.is_empty() {
        along.push(0);
    }
    let dtype = parts
        .iter()
        .fold(first.dtype(), |d, a| d.promote(a.dtype()));
    let parts: Vec<Array> = parts.into_iter().map(|a| a.astype(dtype)).collect();
    let mut chunks = first.chunks().clone();
    chunks[axis] = along;
    Array::new(shape, chunks, dtype, Expr::Concatenate(axis, parts))
}

/// `true` if `a` and `b` differ only by axes of length 1: the same lengths otherwise, in
/// the same order.
pub(crate) fn only_unit_axes_differ(a: &[usize], b: &[usize]) -> bool {
    let other = |s: &[usize]| s.iter().copied().filter(|&n| n != 1).collect::<Vec<_>>();
    other(a) == other(b)
}

/// Arrays of one shape stacked along a new `axis`.
pub fn stack(arrays: &[Array], axis: isize) -> Array {
    let Some(first) = arrays.first() else {
        return Array::invalid("stack needs at least one array");
    };
    for a in arrays {
        if a.check().is_err() {
            return a.clone();
        }
        if a.shape() != first.shape() {
            return Array::invalid(format!(
                "stack needs arrays of one shape, got {:?} and {:?}",
                first.shape(),
                a.shape()
            ));
        }
    }
    let axis = match grid::axis(axis, first.ndim() + 1) {
        Ok(a) => a,
        Err(message) => return Array::invalid(format!("stack: {message}")),
    };
    let dtype = arrays
        .iter()
        .fold(first.dtype(), |d, a| d.promote(a.dtype()));
    let parts: Vec<Array> = arrays
        .iter()
        .map(|a| a.rechunk_to(first.chunks().clone()).astype(dtype))
        .collect();
    let mut shape = first.shape().to_vec();
    shape.insert(axis, arrays.len());
    let mut chunks = first.chunks().clone();
    chunks.insert(axis, vec![1; arrays.len()]);
    Array::new(shape, chunks, dtype, Expr::Stack(axis, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_plans_follow_input_chunks() {
        // axis of 10 in chunks of 4: [0,4) [4,8) [8,10); take 1:9:3 -> 1, 4, 7
        let plan = plan_axis(&[4, 4, 2], 1, 3, 3);
        assert_eq!(
            plan,
            vec![
                (
                    0,
                    AxisSlice {
                        start: 1,
                        step: 3,
                        len: 1,
                        reverse: false
                    }
                ),
                (
                    1,
                    AxisSlice {
                        start: 0,
                        step: 3,
                        len: 2,
                        reverse: false
                    }
                ),
            ]
        );
        assert_eq!(
            resolve(Span::new(Some(-3), None, 1), 10).unwrap(),
            (7, 1, 3, false)
        );
        assert_eq!(
            resolve(Span::new(Some(5), Some(2), 1), 10).unwrap(),
            (5, 1, 0, false)
        );
        // NumPy: x[::-1], x[::-3], x[7:2:-2], x[-2::-4], x[2:7:-1] of 10 elements.
        assert_eq!(
            resolve(Span::new(None, None, -1), 10).unwrap(),
            (0, 1, 10, true)
        );
        assert_eq!(
            resolve(Span::new(None, None, -3), 10).unwrap(),
            (0, 3, 4, true)
        );
        assert_eq!(
            resolve(Span::new(Some(7), Some(2), -2), 10).unwrap(),
            (3, 2, 3, true)
        );
        assert_eq!(
            resolve(Span::new(Some(-2), None, -4), 10).unwrap(),
            (0, 4, 3, true)
        );
        assert_eq!(resolve(Span::new(Some(2), Some(7), -1), 10).unwrap().2, 0);
        assert!(resolve(Span::new(None, None, 0), 10).is_err());
    }
}
