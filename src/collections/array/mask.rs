//! Boolean-mask selection, `x.select(&mask)` (NumPy's and Dask's `x[mask]`): the elements
//! where the mask is true, in C order, as a 1-D array whose chunk sizes are known only once
//! the mask has been computed (Dask's unknown chunks, resolved by `compute_chunk_sizes`).

use super::dtype::{DType, Element};
use super::{Array, from_delayed_chunks};
use crate::client::Client;
use crate::delayed::{Delayed, Session, delayed, try_delayed};
use crate::error::{Error, Result};
use ndarray::{Array1, ArrayD, Ix1};

/// The elements of an array where a mask is true, not computed yet: their number per
/// chunk is unknown until the mask is. [`to_array`](Self::to_array) resolves it (Dask's
/// `compute_chunk_sizes`); [`compute`](Self::compute) brings the values to the client.
#[derive(Clone)]
pub struct Selection {
    /// Both flattened (1-D, in C order) and chunked alike; an invalid `values` holds the
    /// error found when the selection was built.
    values: Array,
    mask: Array,
}

impl Array {
    /// The elements where `mask` (a boolean array of this array's shape) is true, in C
    /// order (`x[mask]`). Arrays of more than one dimension are flattened first (rechunked
    /// as [`reshape`](Self::reshape) does), as Dask does.
    ///
    /// ```
    /// use mpidask::array;
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let x = array::arange(0.0, 12.0, 1.0, 5).reshape(&[3, 4]);
    ///     let big = x.select(&x.gt(8.5)).compute::<f64>(client).unwrap();
    ///     assert_eq!(big.as_slice().unwrap(), &[9.0, 10.0, 11.0]);
    /// });
    /// ```
    pub fn select(&self, mask: &Array) -> Selection {
        let invalid = |values: Array| Selection {
            mask: values.clone(),
            values,
        };
        for a in [self, mask] {
            if a.check().is_err() {
                return invalid(a.clone());
            }
        }
        if mask.dtype() != DType::Bool {
            return invalid(Array::invalid(format!(
                "select: the mask is an array of {}; give a boolean one (a comparison such \
                 as `x.gt(0.5)`, or `m.astype(DType::Bool)`)",
                mask.dtype()
            )));
        }
        if mask.shape() != self.shape() {
            return invalid(Array::invalid(format!(
                "select: the mask has shape {:?} and the array {:?}; they must be the same \
                 (broadcast the mask first, e.g. with `where`)",
                mask.shape(),
                self.shape()
            )));
        }
        let flat = |a: &Array| {
            if a.ndim() == 1 {
                a.clone()
            } else {
                a.reshape(&[-1])
            }
        };
        let values = flat(self);
        let mask = flat(mask).rechunk_to(values.chunks().clone());
        Selection { values, mask }
    }
}

/// The elements of `block` where `mask` is true.
fn pick<T: Element>(
    block: ArrayD<T>,
    mask: ArrayD<bool>,
) -> std::result::Result<ArrayD<T>, String> {
    if block.shape() != mask.shape() {
        return Err(format!(
            "a block of shape {:?} with a mask block of shape {:?}",
            block.shape(),
            mask.shape()
        ));
    }
    let picked: Vec<T> = block
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| **m)
        .map(|(v, _)| *v)
        .collect();
    Ok(Array1::from(picked).into_dyn())
}

/// The length of a picked block.
fn length<T: Element>(block: ArrayD<T>) -> u64 {
    block.len() as u64
}

impl Selection {
    /// The error found when the selection was built, if any.
    pub fn check(&self) -> Result<()> {
        self.values.check()
    }

    /// The selected elements as a 1-D array with known chunks (one per chunk of the
    /// flattened array, of the sizes found; Dask's `compute_chunk_sizes`). The mask and the
    /// selected values are computed once, here, and stay on the workers.
    pub fn to_array(&self, client: &Client) -> Result<Array> {
        self.check()?;
        match self.values.dtype() {
            DType::Bool => self.to_array_of::<bool>(client),
            DType::U8 => self.to_array_of::<u8>(client),
            DType::I32 => self.to_array_of::<i32>(client),
            DType::I64 => self.to_array_of::<i64>(client),
            DType::F32 => self.to_array_of::<f32>(client),
            DType::F64 => self.to_array_of::<f64>(client),
        }
    }

    fn to_array_of<T: Element>(&self, client: &Client) -> Result<Array> {
        let values = self.values.to_delayed::<T>();
        let masks = self.mask.to_delayed::<bool>();
        let picks: Vec<Delayed<ArrayD<T>>> = values
            .iter()
            .zip(&masks)
            .map(|(v, m)| try_delayed(pick::<T>, (v, m)))
            .collect();
        let mut session = Session::new(client);
        let kept: Vec<Delayed<ArrayD<T>>> = picks
            .iter()
            .map(|p| Delayed::from_future(session.submit(p)))
            .collect();
        let lengths: Vec<Delayed<u64>> = kept.iter().map(|p| delayed(length::<T>, p)).collect();
        let sizes = session.compute_all(&lengths)?;
        let sizes: Vec<usize> = sizes.into_iter().map(|n| n as usize).collect();
        Ok(from_delayed_chunks(&kept, vec![sizes]))
    }

    /// The selected elements at the client, in C order.
    pub fn compute<T: Element>(&self, client: &Client) -> Result<Array1<T>> {
        self.check()?;
        if T::DTYPE != self.values.dtype() {
            return Err(Error::Config(format!(
                "select(...).compute::<{}>() of an array of {}",
                T::DTYPE,
                self.values.dtype()
            )));
        }
        let values = self.to_array(client)?.compute::<T>(client)?;
        values
            .into_dimensionality::<Ix1>()
            .map_err(|e| Error::Config(format!("a selection that is not 1-D: {e}")))
    }

    /// The number of selected elements (the mask's true values), computed.
    pub fn len(&self, client: &Client) -> Result<usize> {
        self.check()?;
        let count = self
            .mask
            .astype(DType::I64)
            .sum()
            .compute_scalar::<i64>(client)?;
        Ok(count as usize)
    }
}
