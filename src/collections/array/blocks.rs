//! User functions applied to every block: `map_blocks` (same chunks), `map_blocks_to`
//! (blocks of other sizes), `map_blocks_axes` (axes dropped or added), `map_blocks_with_info`
//! (the function told where its block lies, Dask's `block_info`) and `blockwise` (the
//! matching blocks of several arrays).

use super::grid;
use super::{Array, Element, Expr, from_delayed_chunks};
use crate::delayed::{delayed, try_delayed};
use crate::task::{self, TaskFn};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// Where a block lies, given to the function of [`Array::map_blocks_with_info`] (Dask's
/// `block_info[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The block's index in the grid of chunks, per axis.
    pub chunk_location: Vec<usize>,
    /// The block's first and end (excluded) index in the array, per axis.
    pub array_location: Vec<(usize, usize)>,
    /// The whole array's shape.
    pub shape: Vec<usize>,
    /// The number of chunks per axis.
    pub num_chunks: Vec<usize>,
}

impl Array {
    /// `f` applied to every chunk, as a task per chunk. `f` must keep each chunk's shape
    /// ([`map_blocks_to`](Self::map_blocks_to) for one that changes it).
    ///
    /// ```
    /// use mpidask::array;
    /// use ndarray::ArrayD;
    /// fn clipped(block: ArrayD<f64>) -> ArrayD<f64> { block.mapv(|v| v.clamp(1.0, 3.0)) }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 5.0, 1.0, 2);
    ///     let y = x.map_blocks(clipped).compute::<f64>(client).unwrap();
    ///     assert_eq!(y.as_slice().unwrap(), &[1.0, 1.0, 2.0, 3.0, 3.0]);
    /// });
    /// ```
    pub fn map_blocks<F, T, U>(&self, f: F) -> Array
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<U>>,
        T: Element,
        U: Element,
    {
        let _ = f;
        if self.check().is_err() {
            return self.clone();
        }
        if self.dtype() != T::DTYPE {
            return Array::invalid(format!(
                "map_blocks with a function taking {} blocks on an array of {}",
                T::DTYPE,
                self.dtype()
            ));
        }
        Array::new(
            self.shape().to_vec(),
            self.chunks().clone(),
            U::DTYPE,
            Expr::MapBlocks {
                trampoline: task::trampoline_of::<F, (ArrayD<T>,)>(),
                block_fn: super::tasks::block_fn_of::<F, (ArrayD<T>,), U>(),
                name: task::function_name::<F>(),
                x: vec![self.clone()],
                list: false,
                index_map: None,
            },
        )
    }

    /// `f` applied to every chunk, making blocks of other sizes (Dask's
    /// `map_blocks(f, chunks=...)`): `chunks` gives, per axis, the size of each output chunk,
    /// as many per axis as this array has. A block of another shape fails the computation
    /// with an error naming the chunk.
    ///
    /// ```
    /// use mpidask::array;
    /// use ndarray::{ArrayD, Axis};
    /// /// The first row of a block.
    /// fn first_row(block: ArrayD<f64>) -> ArrayD<f64> {
    ///     block.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned()
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 12.0, 1.0, 12).reshape(&[6, 2]).rechunk(&[3, 2]);
    ///     let y = x.map_blocks_to(first_row, vec![vec![1, 1], vec![2]]);
    ///     let y = y.compute::<f64>(client).unwrap();
    ///     assert_eq!(y.as_slice().unwrap(), &[0.0, 1.0, 6.0, 7.0]);
    /// });
    /// ```
    pub fn map_blocks_to<F, T, U>(&self, f: F, chunks: Vec<Vec<usize>>) -> Array
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<U>>,
        T: Element,
        U: Element,
    {
        let mapped = self.map_blocks(f);
        if mapped.check().is_err() {
            return mapped;
        }
        let counts: Vec<usize> = self.chunks().iter().map(Vec::len).collect();
        let given: Vec<usize> = chunks.iter().map(Vec::len).collect();
        if counts != given {
            return Array::invalid(format!(
                "map_blocks_to: chunks {chunks:?} give {given:?} chunks per axis; the array has \
                 {counts:?} (chunks {:?}): give one size per chunk of each axis",
                self.chunks()
            ));
        }
        let shape = chunks.iter().map(|c| c.iter().sum()).collect();
        let Expr::MapBlocks {
            trampoline,
            block_fn,
            name,
            x,
            list,
            ..
        } = &mapped.node().expr
        else {
            unreachable!("map_blocks makes a MapBlocks array");
        };
        Array::new(
            shape,
            chunks,
            mapped.dtype(),
            Expr::MapBlocks {
                trampoline: *trampoline,
                block_fn: *block_fn,
                name: name.clone(),
                x: x.clone(),
                list: *list,
                index_map: None,
            },
        )
    }

    /// `f` applied to every chunk, dropping axes `drop_axis` and adding axes `new_axis`
    /// (Dask's `map_blocks(f, drop_axis=..., new_axis=...)`): each dropped axis is first
    /// rechunked into one chunk, so `f` sees it whole; each `(position, length)` in
    /// `new_axis` is an axis of the result, at that position, of one chunk of that length.
    /// The other axes keep their chunks, and `f` must keep their sizes.
    ///
    /// ```
    /// use mpidask::array;
    /// use ndarray::{ArrayD, Axis};
    /// /// Each row's largest value.
    /// fn row_max(block: ArrayD<f64>) -> ArrayD<f64> {
    ///     block.map_axis(Axis(1), |r| r.fold(f64::MIN, |a, &b| a.max(b)))
    /// }
    /// /// Each value and its square, along a new last axis.
    /// fn with_square(block: ArrayD<f64>) -> ArrayD<f64> {
    ///     ndarray::stack(Axis(1), &[block.view(), block.mapv(|v| v * v).view()]).unwrap()
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 12.0, 1.0, 12).reshape(&[4, 3]).rechunk(&[2, 2]);
    ///     let m = x.map_blocks_axes(row_max, &[1], &[]);
    ///     assert_eq!(m.compute::<f64>(client).unwrap().as_slice().unwrap(), &[2.0, 5.0, 8.0, 11.0]);
    ///     let v = array::arange(0.0, 3.0, 1.0, 2).map_blocks_axes(with_square, &[], &[(1, 2)]);
    ///     assert_eq!(v.shape(), &[3, 2]);
    ///     assert_eq!(v.compute::<f64>(client).unwrap().as_slice().unwrap(), &[0.0, 0.0, 1.0, 1.0, 2.0, 4.0]);
    /// });
    /// ```
    pub fn map_blocks_axes<F, T, U>(
        &self,
        f: F,
        drop_axis: &[isize],
        new_axis: &[(usize, usize)],
    ) -> Array
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<U>>,
        T: Element,
        U: Element,
    {
        if self.check().is_err() {
            return self.clone();
        }
        let fail = |why: String| {
            Array::invalid(format!(
                "map_blocks_axes of an array of shape {:?}, dropping axes {drop_axis:?} and \
                 adding {new_axis:?}: {why}",
                self.shape()
            ))
        };
        let mut dropped = Vec::new();
        for &a in drop_axis {
            match grid::axis(a, self.ndim()) {
                Ok(a) if dropped.contains(&a) => return fail(format!("axis {a} is dropped twice")),
                Ok(a) => dropped.push(a),
                Err(message) => return fail(message),
            }
        }
        let out_ndim = self.ndim() - dropped.len() + new_axis.len();
        let mut added = vec![None; out_ndim];
        for &(at, len) in new_axis {
            if at >= out_ndim {
                return fail(format!(
                    "a new axis at {at}, but the result has {out_ndim} axes"
                ));
            }
            if added[at].is_some() {
                return fail(format!("two new axes at {at}"));
            }
            added[at] = Some(len);
        }
        // Dropped axes are whole in each block.
        let mut whole = self.chunks().clone();
        for &a in &dropped {
            whole[a] = vec![self.shape()[a]];
        }
        let input = self.rechunk_to(whole);
        let mapped = input.map_blocks(f);
        if mapped.check().is_err() {
            return mapped;
        }
        let kept: Vec<usize> = (0..self.ndim()).filter(|a| !dropped.contains(a)).collect();
        let (mut shape, mut chunks) = (Vec::new(), Vec::new());
        let mut index_map = vec![None; self.ndim()];
        let mut next = kept.iter();
        for (at, new) in added.iter().enumerate() {
            match new {
                Some(len) => {
                    shape.push(*len);
                    chunks.push(vec![*len]);
                }
                None => {
                    let &axis = next.next().expect("as many kept axes as places left");
                    shape.push(self.shape()[axis]);
                    chunks.push(self.chunks()[axis].clone());
                    index_map[axis] = Some(at);
                }
            }
        }
        let Expr::MapBlocks {
            trampoline,
            block_fn,
            name,
            x,
            list,
            ..
        } = &mapped.node().expr
        else {
            unreachable!("map_blocks makes a MapBlocks array");
        };
        Array::new(
            shape,
            chunks,
            mapped.dtype(),
            Expr::MapBlocks {
                trampoline: *trampoline,
                block_fn: *block_fn,
                name: name.clone(),
                x: x.clone(),
                list: *list,
                index_map: Some(index_map),
            },
        )
    }

    /// `f` applied to every chunk with a [`BlockInfo`] telling where the chunk lies (Dask's
    /// `map_blocks` with `block_info`). `f` must keep the chunk's shape; a block of
    /// another shape fails the computation with an error naming the chunk. Each call is a
    /// task of its own (never fused into what reads it).
    ///
    /// ```
    /// use mpidask::array::{self, BlockInfo};
    /// use ndarray::ArrayD;
    /// /// Each element replaced by its row index in the whole array.
    /// fn row_index(block: ArrayD<f64>, info: BlockInfo) -> ArrayD<f64> {
    ///     let first = info.array_location[0].0;
    ///     ArrayD::from_shape_fn(block.raw_dim(), |i| (first + i[0]) as f64)
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::zeros(&[5], &[2]);
    ///     let y = x.map_blocks_with_info(row_index).compute::<f64>(client).unwrap();
    ///     assert_eq!(y.as_slice().unwrap(), &[0.0, 1.0, 2.0, 3.0, 4.0]);
    /// });
    /// ```
    pub fn map_blocks_with_info<F, T, U>(&self, f: F) -> Array
    where
        F: TaskFn<(ArrayD<T>, BlockInfo), Output = ArrayD<U>>,
        T: Element,
        U: Element,
    {
        let _ = f;
        if self.check().is_err() {
            return self.clone();
        }
        if self.dtype() != T::DTYPE {
            return Array::invalid(format!(
                "map_blocks_with_info with a function taking {} blocks on an array of {}",
                T::DTYPE,
                self.dtype()
            ));
        }
        let num_chunks: Vec<usize> = self.chunks().iter().map(Vec::len).collect();
        let starts: Vec<Vec<usize>> = self
            .chunks()
            .iter()
            .map(|sizes| {
                sizes
                    .iter()
                    .scan(0, |at, &n| {
                        let start = *at;
                        *at += n;
                        Some(start)
                    })
                    .collect()
            })
            .collect();
        let parts: Vec<_> = grid::indices(self.chunks())
            .zip(self.to_delayed::<T>())
            .map(|(index, block)| {
                let array_location: Vec<(usize, usize)> = index
                    .iter()
                    .enumerate()
                    .map(|(a, &i)| (starts[a][i], starts[a][i] + self.chunks()[a][i]))
                    .collect();
                let expected: Vec<usize> = array_location.iter().map(|(s, e)| e - s).collect();
                let info = BlockInfo {
                    chunk_location: index,
                    array_location,
                    shape: self.shape().to_vec(),
                    num_chunks: num_chunks.clone(),
                };
                let made = delayed(f, (&block, info.clone()));
                try_delayed(keeps_shape::<U>, (&made, expected, info.chunk_location))
            })
            .collect();
        from_delayed_chunks(&parts, self.chunks().clone())
    }
}

/// `f` applied to the matching chunks of `arrays` (all of one shape and element type), as
/// a task per chunk that receives them as a `Vec`. `f` must keep the chunk shape.
pub fn blockwise<F, T, U>(f: F, arrays: &[Array]) -> Array
where
    F: TaskFn<(Vec<ArrayD<T>>,), Output = ArrayD<U>>,
    T: Element,
    U: Element,
{
    let _ = f;
    let Some(first) = arrays.first() else {
        return Array::invalid("blockwise needs at least one array");
    };
    for a in arrays {
        if a.check().is_err() {
            return a.clone();
        }
        if a.shape() != first.shape() || a.dtype() != T::DTYPE {
            return Array::invalid(format!(
                "blockwise needs arrays of one shape and of {}, got {:?} of {} and {:?} of {}",
                T::DTYPE,
                first.shape(),
                first.dtype(),
                a.shape(),
                a.dtype()
            ));
        }
    }
    let x: Vec<Array> = arrays
        .iter()
        .map(|a| a.rechunk_to(first.chunks().clone()))
        .collect();
    Array::new(
        first.shape().to_vec(),
        first.chunks().clone(),
        U::DTYPE,
        Expr::MapBlocks {
            trampoline: task::trampoline_of::<F, (Vec<ArrayD<T>>,)>(),
            block_fn: super::tasks::block_fn_of::<F, (Vec<ArrayD<T>>,), U>(),
            name: task::function_name::<F>(),
            x,
            list: true,
            index_map: None,
        },
    )
}

/// `block` if it has the `expected` shape, else an error naming the chunk.
fn keeps_shape<U: Element>(
    block: ArrayD<U>,
    expected: Vec<usize>,
    chunk: Vec<usize>,
) -> Result<ArrayD<U>, String> {
    if block.shape() == expected.as_slice() {
        Ok(block)
    } else {
        Err(format!(
            "map_blocks_with_info: the function returned a block of shape {:?} for chunk \
             {chunk:?}, of shape {expected:?}: it must keep the chunk's shape",
            block.shape()
        ))
    }
}
