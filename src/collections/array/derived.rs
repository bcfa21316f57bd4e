//! NumPy functions made of other array expressions, with no kernel of their own: `eye`,
//! `tril` and `triu` (index grids compared, then `where`), the `*_like` constructors,
//! `diff` (two slices subtracted), `cumsum`/`cumprod` (running values within chunks,
//! then each chunk joined to the running value through the chunks before it, as Dask's
//! `cumreduction` does), and `take` (one slice per run of evenly spaced indices, joined).

use super::dtype::{DType, Scalar};
use super::grid;
use super::program::ScanOp;
use super::structure::Span;
use super::{Array, Expr, arange, concatenate, where_};

/// The row and column indices of an `n` x `m` matrix as `f64` grids of shapes `(n, 1)` and
/// `(1, m)`, in chunks of `rows` and `cols` (they broadcast against each other).
fn index_grids(n: usize, m: usize, rows: usize, cols: usize) -> (Array, Array) {
    let i = arange(0.0, n as f64, 1.0, rows.max(1)).reshape(&[n as isize, 1]);
    let j = arange(0.0, m as f64, 1.0, cols.max(1)).reshape(&[1, m as isize]);
    (i, j)
}

/// The `n` x `m` (`m`: `n` when `None`) `f64` matrix with ones on diagonal `k` (0: the
/// main one, positive above it, negative below) and zeros elsewhere, in square chunks of
/// `chunk` (`numpy.eye`, `dask.array.eye`).
pub fn eye(n: usize, m: Option<usize>, k: isize, chunk: usize) -> Array {
    let m = m.unwrap_or(n);
    if n == 0 || m == 0 {
        return super::zeros(&[n, m], &[chunk.max(1), chunk.max(1)]);
    }
    let (i, j) = index_grids(n, m, chunk, chunk);
    where_(&(&i + k as f64).eq(&j), 1.0, 0.0)
}

/// The first chunk size along `axis` (the grids' chunking).
fn first_chunk(x: &Array, axis: usize) -> usize {
    x.chunks()[axis].first().copied().unwrap_or(1)
}

impl Array {
    /// Zeros above diagonal `k` of the last two axes (0: the main diagonal, positive above
    /// it, negative below), as `numpy.tril`.
    pub fn tril(&self, k: isize) -> Array {
        self.triangle(k, "tril")
    }

    /// Zeros below diagonal `k` of the last two axes, as `numpy.triu`.
    pub fn triu(&self, k: isize) -> Array {
        self.triangle(k, "triu")
    }

    fn triangle(&self, k: isize, name: &str) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let nd = self.ndim();
        if nd < 2 {
            return Array::invalid(format!(
                "{name} needs an array of at least 2 dimensions, got shape {:?}",
                self.shape()
            ));
        }
        let (n, m) = (self.shape()[nd - 2], self.shape()[nd - 1]);
        if n == 0 || m == 0 {
            return self.clone();
        }
        let (i, j) = index_grids(n, m, first_chunk(self, nd - 2), first_chunk(self, nd - 1));
        // Column minus row against k: kept where j - i <= k (tril) or >= k (triu).
        let offset = &j - &i;
        let keep = if name == "tril" {
            offset.le(k as f64)
        } else {
            offset.ge(k as f64)
        };
        where_(&keep, self, Scalar::from(0i64).cast(self.dtype()))
    }

    /// `n`-th differences along `axis` (negative counts from the end): `x[1:] - x[:-1]`,
    /// `n` times, as `numpy.diff` (booleans: `x[1:] != x[:-1]`).
    pub fn diff(&self, axis: isize, n: usize) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let axis = match grid::axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(message) => return Array::invalid(format!("diff: {message}")),
        };
        let mut x = self.clone();
        for _ in 0..n {
            if x.shape()[axis] == 0 {
                break;
            }
            let mut later = vec![Span::all(); x.ndim()];
            let mut earlier = later.clone();
            later[axis] = Span::new(Some(1), None, 1);
            earlier[axis] = Span::new(None, Some(-1), 1);
            let (a, b) = (x.slice(&later), x.slice(&earlier));
            x = if x.dtype() == DType::Bool {
                a.ne(&b)
            } else {
                &a - &b
            };
        }
        x
    }

    /// Running sums along `axis` (negative counts from the end), as `numpy.cumsum`
    /// (integers and booleans in `i64`).
    pub fn cumsum(&self, axis: isize) -> Array {
        self.cumulative(ScanOp::CumSum, axis)
    }

    /// Running products along `axis`, as `numpy.cumprod` (integers and booleans in `i64`).
    pub fn cumprod(&self, axis: isize) -> Array {
        self.cumulative(ScanOp::CumProd, axis)
    }

    fn cumulative(&self, op: ScanOp, axis: isize) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let axis = match grid::axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(message) => return Array::invalid(format!("{op:?}: {message}").to_lowercase()),
        };
        let dtype = op.result_dtype(self.dtype());
        let scan = |x: &Array| {
            Array::new(
                x.shape().to_vec(),
                x.chunks().clone(),
                dtype,
                Expr::Scan(op, axis, x.clone()),
            )
        };
        let local = scan(self);
        // The chunks along the axis, as index ranges (empty ones carry nothing).
        let mut ranges = Vec::new();
        let mut start = 0;
        for &size in &self.chunks()[axis] {
            if size > 0 {
                ranges.push((start, start + size));
            }
            start += size;
        }
        if ranges.len() <= 1 {
            return local;
        }
        let along = |x: &Array, (a, b): (usize, usize)| {
            let mut spans = vec![Span::all(); x.ndim()];
            spans[axis] = Span::new(Some(a as isize), Some(b as isize), 1);
            x.slice(&spans)
        };
        // Each chunk's last running value, then their own running values in one chunk:
        // the value through the end of each chunk.
        let lasts: Vec<Array> = ranges
            .iter()
            .map(|&(_, end)| along(&local, (end - 1, end)))
            .collect();
        let joined = concatenate(&lasts, axis as isize);
        let sizes: Vec<isize> = (0..self.ndim())
            .map(|d| match joined.chunks()[d].first() {
                Some(&size) if d != axis => size as isize,
                _ => -1,
            })
            .collect();
        let through = scan(&joined.rechunk(&sizes));
        let pieces: Vec<Array> = ranges
            .iter()
            .enumerate()
            .map(|(k, &range)| {
                let piece = along(&local, range);
                if k == 0 {
                    piece
                } else {
                    piece.binary(op.combine(), along(&through, (k - 1, k)))
                }
            })
            .collect();
        concatenate(&pieces, axis as isize)
    }

    /// The elements at `indices` along `axis` (negative indices count from the end;
    /// repeats and any order allowed), as `numpy.take`; the result is cut along `axis` as
    /// this array is. An index out of range gives an array whose error names it.
    pub fn take(&self, indices: &[isize], axis: isize) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let axis = match grid::axis(axis, self.ndim()) {
            Ok(a) => a,
            Err(message) => return Array::invalid(format!("take: {message}")),
        };
        let n = self.shape()[axis] as isize;
        let mut at = Vec::with_capacity(indices.len());
        for &i in indices {
            let j = if i < 0 { i + n } else { i };
            if !(0..n).contains(&j) {
                return Array::invalid(format!(
                    "take: index {i} is out of range for axis {axis} of length {n}"
                ));
            }
            at.push(j);
        }
        if at.is_empty() {
            let mut spans = vec![Span::all(); self.ndim()];
            spans[axis] = Span::new(Some(0), Some(0), 1);
            return self.slice(&spans);
        }
        // Runs of indices a constant, non-zero step apart: one slice each.
        let mut pieces = Vec::new();
        let mut k = 0;
        while k < at.len() {
            let step = at.get(k + 1).map_or(1, |&next| next - at[k]);
            let step = if step == 0 { 1 } else { step };
            let mut end = k + 1;
            while end < at.len() && at[end] - at[end - 1] == step {
                end += 1;
            }
            let (first, last) = (at[k], at[end - 1]);
            let stop = last + step.signum();
            let mut spans = vec![Span::all(); self.ndim()];
            spans[axis] = Span::new(Some(first), (stop >= 0).then_some(stop), step);
            pieces.push(self.slice(&spans));
            k = end;
        }
        let taken = concatenate(&pieces, axis as isize);
        let sizes: Vec<isize> = (0..self.ndim())
            .map(|d| self.chunks()[d].first().map_or(-1, |&s| s as isize))
            .collect();
        taken.rechunk(&sizes)
    }

    /// Zeros of this array's shape, chunks and type (`numpy.zeros_like`).
    pub fn zeros_like(&self) -> Array {
        self.full_like(0i64)
    }

    /// Ones of this array's shape, chunks and type (`numpy.ones_like`).
    pub fn ones_like(&self) -> Array {
        self.full_like(1i64)
    }

    /// `value` (converted to this array's type, as NumPy's `full_like` does) in this
    /// array's shape and chunks.
    pub fn full_like(&self, value: impl Into<Scalar>) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        let value = value.into().cast(self.dtype());
        Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            self.dtype(),
            Expr::Fill(value),
        )
    }

    /// Zeros of this array's shape, chunks and type: Dask's `empty_like` gives memory
    /// without values, which a task graph cannot; zeros cost no more here.
    pub fn empty_like(&self) -> Array {
        self.zeros_like()
    }
}
