//! Stencils, as Dask's `dask.array.overlap`: every chunk with a halo of its neighbours'
//! cells (`overlap`), a function run on the padded chunks and the halo cut off again
//! (`map_overlap`), and a stencil repeated on chunks kept on the workers
//! (`iterate_overlap`, under MPI by one MPI task whose members exchange only halos:
//! [`resident`]).
//!
//! Only halos travel: a halo is cut from the neighbouring chunk by a task where that chunk
//! lies, and the padded chunk is assembled where the chunk itself lies. The array's own
//! edges get cells by the [`Boundary`] rule first (the array is padded along each axis in
//! turn, as `numpy.pad` does).

use super::dtype::{DType, Element, Scalar};
use super::grid::{self, Chunks};
use super::program::AxisSlice;
use super::structure::Span;
use super::{Array, Expr, concatenate, where_};
use crate::client::Client;
use crate::error::Result;
use crate::task::TaskFn;
use ndarray::ArrayD;

mod resident;

/// The cells beyond the array's edges that a halo takes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Boundary {
    /// The array mirrored at its edge, the edge cell included (Dask's `reflect`, NumPy's
    /// `pad` mode `symmetric`).
    Reflect,
    /// The cells from the other end (Dask's `periodic`, NumPy's `wrap`).
    Periodic,
    /// The edge cell repeated (Dask's `nearest`, NumPy's `edge`).
    Nearest,
    /// This value, converted to the array's element type (Dask's constant boundary).
    Constant(f64),
    /// No cells: chunks at the array's edge get no halo on that side (Dask's `none`).
    None,
}

impl Boundary {
    fn name(self) -> &'static str {
        match self {
            Boundary::Reflect => "reflect",
            Boundary::Periodic => "periodic",
            Boundary::Nearest => "nearest",
            Boundary::Constant(_) => "constant",
            Boundary::None => "none",
        }
    }
}

/// The halo along one axis: per chunk, the window of the padded array its padded chunk
/// covers, and where the chunk's own cells start inside that window.
struct AxisHalo {
    windows: Vec<(usize, usize)>,
    inner: Vec<usize>,
}

/// Per axis, the halo of chunks `sizes` with `depth` cells on each side.
fn axis_halo(sizes: &[usize], n: usize, depth: usize, boundary: Boundary) -> AxisHalo {
    let bounds = grid::boundaries(sizes);
    let mut windows = Vec::with_capacity(sizes.len());
    let mut inner = Vec::with_capacity(sizes.len());
    for (k, &size) in sizes.iter().enumerate() {
        let start = bounds[k];
        if boundary == Boundary::None {
            // The array is not padded: the window stops at its edges.
            let lo = start.saturating_sub(depth);
            let hi = (start + size + depth).min(n);
            windows.push((lo, hi - lo));
            inner.push(start - lo);
        } else {
            // The padded array has `depth` more cells before: chunk `k` starts at
            // `start + depth`, its window at `start`.
            windows.push((start, size + 2 * depth));
            inner.push(depth);
        }
    }
    AxisHalo { windows, inner }
}

/// `x` along `axis`, the part `span` (the other axes whole).
fn along(x: &Array, axis: usize, span: Span) -> Array {
    let mut spans = vec![Span::all(); x.ndim()];
    spans[axis] = span;
    x.slice(&spans)
}

/// `x` with `depth` cells added before and after it along `axis` by `boundary`; the other
/// axes keep their chunks.
fn pad_axis(x: &Array, axis: usize, depth: usize, boundary: Boundary) -> Array {
    let n = x.shape()[axis] as isize;
    let d = depth as isize;
    let mut shape = x.shape().to_vec();
    shape[axis] = depth;
    let mut chunks: Chunks = x.chunks().clone();
    chunks[axis] = vec![depth];
    let filled = |value: Scalar| {
        Array::new(
            shape.clone(),
            chunks.clone(),
            value.dtype(),
            Expr::Fill(value),
        )
    };
    let reversed = |a: Array| along(&a, axis, Span::new(None, None, -1));
    let (before, after) = match boundary {
        Boundary::Periodic => (
            along(x, axis, (n - d..n).into()),
            along(x, axis, (0..d).into()),
        ),
        Boundary::Reflect => (
            reversed(along(x, axis, (0..d).into())),
            reversed(along(x, axis, (n - d..n).into())),
        ),
        Boundary::Nearest => {
            // The edge slice broadcast along the axis.
            let everywhere = filled(Scalar::Bool(true));
            let first = along(x, axis, (0..1).into());
            let last = along(x, axis, (n - 1..n).into());
            (
                where_(&everywhere, &first, &first),
                where_(&everywhere, &last, &last),
            )
        }
        Boundary::Constant(value) => {
            let fill = filled(Scalar::F64(value).cast(x.dtype()));
            (fill.clone(), fill)
        }
        Boundary::None => return x.clone(),
    };
    concatenate(&[before, x.clone(), after], axis as isize)
}

impl Array {
    /// Per axis, the halo of `depth` cells (one depth per axis) by `boundary`, or why not.
    fn halos(
        &self,
        depth: &[usize],
        boundary: Boundary,
        name: &str,
    ) -> Result<Vec<AxisHalo>, String> {
        if depth.len() != self.ndim() {
            return Err(format!(
                "{name}: depth {depth:?} gives {} axes for an array of shape {:?}: give one \
                 depth per axis (0 for no halo)",
                depth.len(),
                self.shape()
            ));
        }
        if let Boundary::Constant(value) = boundary
            && self.dtype() != DType::F64
            && self.dtype() != DType::F32
            && value.fract() != 0.0
        {
            return Err(format!(
                "{name}: the constant boundary {value} is not a value of the array's element \
                 type {}",
                self.dtype()
            ));
        }
        let mut halos = Vec::with_capacity(self.ndim());
        for (axis, (&d, &n)) in depth.iter().zip(self.shape()).enumerate() {
            let from_itself = matches!(
                boundary,
                Boundary::Reflect | Boundary::Periodic | Boundary::Nearest
            );
            if d > 0 && from_itself && (d > n || n == 0) {
                return Err(format!(
                    "{name}: depth {d} along axis {axis} is more than the axis length {n}; \
                     a {} boundary takes its cells from the array itself: use a depth of at \
                     most {n}, or Boundary::Constant or Boundary::None",
                    boundary.name()
                ));
            }
            let axis_boundary = if d == 0 { Boundary::None } else { boundary };
            halos.push(axis_halo(&self.chunks()[axis], n, d, axis_boundary));
        }
        Ok(halos)
    }

    /// Every chunk with `depth[axis]` more cells on each side along each axis: its
    /// neighbours' cells, or at the array's edges cells made by `boundary` (Dask's
    /// `overlap`). The chunks of the result are the padded chunks (so its shape is larger
    /// than this array's); a depth may be larger than a chunk (the halo then comes from
    /// several neighbours).
    ///
    /// ```
    /// use mpidask::array::{self, Boundary};
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 6.0, 1.0, 3); // [0 1 2 | 3 4 5]
    ///     let padded = x.overlap(&[1], Boundary::Periodic).compute::<f64>(client).unwrap();
    ///     assert_eq!(padded.as_slice().unwrap(), &[5.0, 0., 1., 2., 3., 2., 3., 4., 5., 0.]);
    /// });
    /// ```
    pub fn overlap(&self, depth: &[usize], boundary: Boundary) -> Array {
        if self.check().is_err() {
            return self.clone();
        }
        match self.halos(depth, boundary, "overlap") {
            Ok(halos) => self.windows(&halos, depth, boundary),
            Err(message) => Array::invalid(message),
        }
    }

    fn windows(&self, halos: &[AxisHalo], depth: &[usize], boundary: Boundary) -> Array {
        let mut padded = self.clone();
        for (axis, &d) in depth.iter().enumerate() {
            if d > 0 {
                padded = pad_axis(&padded, axis, d, boundary);
            }
        }
        if let Err(e) = padded.check() {
            return Array::invalid(e.to_string());
        }
        let windows: Vec<Vec<(usize, usize)>> = halos.iter().map(|h| h.windows.clone()).collect();
        let chunks: Chunks = windows
            .iter()
            .map(|w| w.iter().map(|&(_, len)| len).collect())
            .collect();
        let shape = chunks.iter().map(|c| c.iter().sum()).collect();
        Array::new(shape, chunks, self.dtype(), Expr::Windows(windows, padded))
    }

    /// `f` applied to every chunk padded with a halo of `depth[axis]` cells along each axis
    /// (see [`overlap`](Self::overlap)), the halo then cut off (Dask's `map_overlap`). `f`
    /// must return a block of the padded chunk's shape; only its inner part is kept.
    ///
    /// ```
    /// use mpidask::array::{self, Boundary};
    /// use ndarray::{ArrayD, s};
    /// /// The mean of each cell and its two neighbours (the halo cells are left as they are).
    /// fn smooth(block: ArrayD<f64>) -> ArrayD<f64> {
    ///     let b = block.into_dimensionality::<ndarray::Ix1>().unwrap();
    ///     let mut out = b.clone();
    ///     let n = b.len();
    ///     let mean = (&b.slice(s![..n - 2]) + &b.slice(s![1..n - 1]) + &b.slice(s![2..])) / 3.0;
    ///     out.slice_mut(s![1..n - 1]).assign(&mean);
    ///     out.into_dyn()
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 6.0, 1.0, 4); // chunks [0 1 2 3 | 4 5]
    ///     let y = x.map_overlap(smooth, &[1], Boundary::Nearest).compute::<f64>(client).unwrap();
    ///     let expected = [1.0 / 3.0, 1.0, 2.0, 3.0, 4.0, 14.0 / 3.0];
    ///     assert!(y.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12));
    /// });
    /// ```
    pub fn map_overlap<F, T, U>(&self, f: F, depth: &[usize], boundary: Boundary) -> Array
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<U>>,
        T: Element,
        U: Element,
    {
        if self.check().is_err() {
            return self.clone();
        }
        let halos = match self.halos(depth, boundary, "map_overlap") {
            Ok(halos) => halos,
            Err(message) => return Array::invalid(message),
        };
        let mapped = self.windows(&halos, depth, boundary).map_blocks(f);
        if mapped.check().is_err() {
            return mapped;
        }
        // Chunk `k` of the result: the inner cells of padded chunk `k`.
        let plans = halos
            .iter()
            .zip(self.chunks())
            .map(|(halo, sizes)| {
                sizes
                    .iter()
                    .zip(&halo.inner)
                    .enumerate()
                    .map(|(k, (&len, &start))| {
                        let part = AxisSlice {
                            start,
                            step: 1,
                            len,
                            reverse: false,
                        };
                        (k, part)
                    })
                    .collect()
            })
            .collect();
        Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            mapped.dtype(),
            Expr::Slice(plans, mapped),
        )
    }

    /// [`map_overlap`](Self::map_overlap) `steps` times, the chunks kept on the workers
    /// where they are: only halos move between workers. Returns the array of the last
    /// step, kept on the workers.
    ///
    /// Under MPI, one MPI task on every worker runs all the steps on the chunks in the
    /// workers' memory, sending each step's halos worker to worker; nothing is trimmed,
    /// stored or scheduled between steps, and this call returns when the steps are done
    /// (an error if the function panicked or changed a block's shape). That needs every
    /// chunk along an axis with a halo to be at least as long as the halo, and workers
    /// that are MPI processes. Otherwise (local mode, a task client, deeper halos) each
    /// step is a `map_overlap` kept on the workers, submitted without waiting, and
    /// computing the result waits for them. The values are the same either way.
    pub fn iterate_overlap<F, T>(
        &self,
        client: &Client,
        f: F,
        depth: &[usize],
        boundary: Boundary,
        steps: usize,
    ) -> Result<Array>
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<T>>,
        T: Element,
    {
        let mut x = self.persist(client)?;
        if let Some(done) = resident::iterate::<F, T>(&x, client, depth, boundary, steps)? {
            return Ok(done);
        }
        for _ in 0..steps {
            x = x.map_overlap(f, depth, boundary).persist(client)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::{arange, zeros};

    #[test]
    fn windows_cover_the_halo_or_stop_at_the_edges() {
        let padded = axis_halo(&[5, 5, 3], 13, 2, Boundary::Periodic);
        assert_eq!(padded.windows, vec![(0, 9), (5, 9), (10, 7)]);
        assert_eq!(padded.inner, vec![2, 2, 2]);
        let unpadded = axis_halo(&[5, 5, 3], 13, 2, Boundary::None);
        assert_eq!(unpadded.windows, vec![(0, 7), (3, 9), (8, 5)]);
        assert_eq!(unpadded.inner, vec![0, 2, 2]);
    }

    #[test]
    fn padded_shape_and_chunks() {
        let x = zeros(&[13, 11], &[5, 4]).overlap(&[1, 0], Boundary::Reflect);
        assert_eq!(x.shape(), &[19, 11]);
        assert_eq!(x.chunks(), &vec![vec![7, 7, 5], vec![4, 4, 3]]);
        // Deeper than a chunk, and a halo on one side only at the edges.
        let y = arange(0.0, 17.0, 1.0, 5).overlap(&[7], Boundary::None);
        assert_eq!(y.chunks(), &vec![vec![12, 17, 14, 9]]);
    }

    #[test]
    fn bad_depths_are_named() {
        let x = zeros(&[4, 3], &[2, 2]);
        let error = |a: Array| a.check().unwrap_err().to_string();
        assert!(error(x.overlap(&[1], Boundary::Periodic)).contains("give one depth per axis"));
        assert!(
            error(x.overlap(&[1, 4], Boundary::Nearest))
                .contains("depth 4 along axis 1 is more than the axis length 3")
        );
        // A constant boundary may be as deep as it likes.
        assert_eq!(
            x.overlap(&[1, 4], Boundary::Constant(2.0)).shape(),
            &[8, 19]
        );
    }
}
