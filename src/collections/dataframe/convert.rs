//! Between dataframes and arrays: [`DataFrame::to_array`] (numeric columns as a 2-D
//! `f64` array, one chunk of rows per partition, Dask's `to_dask_array(lengths=True)`) and
//! [`DataFrame::from_array`] (named columns of a 1-D or 2-D array, one partition per chunk
//! of rows, Dask's `from_dask_array`). The chunks and partitions stay on the workers.
//! And from other collections: [`DataFrame::from_delayed`] (one partition per delayed
//! frame) and [`DataFrame::from_bag`] (a bag of frames).

use super::shuffle::stack_frames;
use super::{DataFrame, describe, polars_message, value_arg};
use crate::client::{Client, Future};
use crate::collections::array::{self, Array, DType};
use crate::collections::bag::Bag;
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::task::{CallError, encode_result};
use ndarray::{ArrayD, IxDyn};
use polars::prelude::{DataFrame as Frame, DataType, IntoColumn, NamedFrom, Series};

/// A partition's columns as a C-order (rows, columns) block of `f64` (nulls as NaN).
fn block_sink(frames: Vec<Frame>, names: Vec<String>) -> std::result::Result<Bytes, CallError> {
    let failed = |e: polars::prelude::PolarsError| {
        CallError::Failed(format!("to_array({names:?}): {}", polars_message(&e)))
    };
    let frame = stack_frames(frames, None).map_err(failed)?;
    let (rows, width) = (frame.height(), names.len());
    let mut data = vec![f64::NAN; rows * width];
    for (c, name) in names.iter().enumerate() {
        let column = frame
            .column(name)
            .and_then(|s| s.cast(&DataType::Float64))
            .map_err(failed)?;
        for (r, v) in column.f64().map_err(failed)?.iter().enumerate() {
            if let Some(v) = v {
                data[r * width + c] = v;
            }
        }
    }
    let block = ArrayD::from_shape_vec(IxDyn(&[rows, width]), data)
        .map_err(|e| CallError::Failed(format!("to_array: {e}")))?;
    encode_result(&block)
}

fn block_rows(block: ArrayD<f64>) -> u64 {
    block.shape().first().copied().unwrap_or(0) as u64
}

/// A chunk of rows of an array as a frame of the named columns.
fn frame_of_block(
    block: ArrayD<f64>,
    names: Vec<String>,
) -> std::result::Result<Vec<Frame>, String> {
    let block = if block.ndim() == 1 {
        let rows = block.len();
        block
            .into_shape_with_order(IxDyn(&[rows, 1]))
            .map_err(|e| e.to_string())?
    } else {
        block
    };
    let columns = names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            Series::new(
                name.as_str().into(),
                block
                    .index_axis(ndarray::Axis(1), c)
                    .iter()
                    .copied()
                    .collect::<Vec<f64>>(),
            )
            .into_column()
        })
        .collect();
    Frame::new_infer_height(columns)
        .map(|f| vec![f])
        .map_err(|e| e.to_string())
}

/// An empty frame with `frame`'s columns.
fn columns_of(frame: Frame) -> Frame {
    frame.clear()
}

/// The step checking that every partition has the columns the first one had.
fn check_columns(frame: Frame, expected: &Frame) -> Frame {
    if frame.schema() != expected.schema() {
        panic!(
            "a partition has the columns {}, the first partition {}; every partition needs the \
             same columns and types",
            describe(frame.schema()),
            describe(expected.schema())
        );
    }
    frame
}

impl DataFrame {
    /// A dataframe of one partition per delayed frame (Dask's `from_delayed`). The first
    /// frame's columns and types are the dataframe's (a small task reads them from the
    /// first partition, which is computed then and kept); a partition with other columns
    /// fails its task with a message naming both.
    pub fn from_delayed(
        client: &Client,
        partitions: &[crate::collections::delayed::Delayed<Frame>],
    ) -> Result<DataFrame> {
        if partitions.is_empty() {
            return Err(Error::Config(
                "DataFrame::from_delayed needs at least one delayed frame".into(),
            ));
        }
        let mut session = crate::collections::delayed::Session::new(client);
        let futures: Vec<Future<Frame>> = partitions.iter().map(|d| session.submit(d)).collect();
        let meta: Frame = client.submit(columns_of, &futures[0]).result()?;
        let parts = Bag::from_element_futures(client, futures);
        Ok(DataFrame {
            parts: parts.map_with_named(check_columns, &meta, "check_columns".into())?,
            schema: meta.schema().clone(),
            divisions: None,
        })
    }

    /// A dataframe of a bag of frames (each partition's frames stacked): for rows a bag
    /// makes, e.g. `bag.map_partitions(to_frame)` with a function building a Polars frame
    /// of a partition's records (Dask's `Bag.to_dataframe`). The first partition is
    /// computed once here to learn the columns; a partition with other columns fails its
    /// task with a message naming both.
    pub fn from_bag(bag: &Bag<Frame>) -> Result<DataFrame> {
        if bag.npartitions() == 0 {
            return Err(Error::Config(
                "DataFrame::from_bag: the bag has no partition".into(),
            ));
        }
        let first = bag
            .partition(0)
            .map_named(columns_of, "columns".into())
            .compute()?;
        let Some(meta) = first.into_iter().next() else {
            return Err(Error::Config(
                "DataFrame::from_bag: the first partition holds no frame, so the columns are \
                 unknown; give every partition a frame (an empty one keeps the columns)"
                    .into(),
            ));
        };
        Ok(DataFrame {
            parts: bag.map_with_named(check_columns, &meta, "check_columns".into())?,
            schema: meta.schema().clone(),
            divisions: None,
        })
    }

    /// The columns `columns` (numbers or booleans) as a 2-D `f64` array of shape (rows,
    /// columns), nulls as NaN: one chunk of rows per non-empty partition, the chunks left
    /// on the workers (Dask's `to_dask_array(lengths=True)`: this runs the dataframe and
    /// waits to learn each partition's length). A column of another type is an error
    /// naming it.
    pub fn to_array(&self, columns: &[&str]) -> Result<Array> {
        let names = self.key_columns("to_array", columns)?;
        for name in &names {
            let dtype = self
                .schema
                .get(name.as_str())
                .expect("checked to be a column");
            if !(dtype.is_primitive_numeric() || dtype == &DataType::Boolean) {
                return Err(Error::Config(format!(
                    "to_array: column '{name}' is {dtype}, not a number (the columns are {}); \
                     select numeric columns or cast it with astype",
                    describe(&self.schema)
                )));
            }
        }
        let client = self.parts.client().clone();
        let parameter = value_arg("column names", &names)?;
        let blocks: Vec<Future<ArrayD<f64>>> = self
            .parts
            .run_raw(block_sink, "to_array", |_| vec![parameter.clone()]);
        let rows: Vec<Future<u64>> = blocks
            .iter()
            .map(|b| client.submit(block_rows, b))
            .collect();
        let rows = client.gather(&rows)?;
        let (mut kept, mut sizes) = (Vec::new(), Vec::new());
        for (block, n) in blocks.into_iter().zip(rows) {
            if n > 0 {
                kept.push(block);
                sizes.push(n as usize);
            }
        }
        if kept.is_empty() {
            let empty = ArrayD::<f64>::zeros(IxDyn(&[0, names.len()]));
            return Ok(array::from_array(&empty, &[1, names.len().max(1)]));
        }
        Ok(array::from_chunk_futures(
            kept,
            vec![sizes, vec![names.len()]],
        ))
    }

    /// A dataframe of the columns `columns` of `array` (1-D: one column; 2-D: one per
    /// column of the array, as many names as columns), one partition per chunk of rows
    /// (Dask's `from_dask_array`). The array is computed into chunks on the workers first
    /// (whole rows per chunk: the columns are rechunked into one when they are split).
    /// Arrays of other element types are cast to `f64`.
    pub fn from_array(client: &Client, array: &Array, columns: &[&str]) -> Result<DataFrame> {
        array.check()?;
        let shape = array.shape().to_vec();
        let width = match shape.len() {
            1 => 1,
            2 => shape[1],
            n => {
                return Err(Error::Config(format!(
                    "DataFrame::from_array: the array has {n} dimensions (shape {shape:?}); give \
                     a 1-D or 2-D array"
                )));
            }
        };
        if columns.len() != width {
            return Err(Error::Config(format!(
                "DataFrame::from_array: {} column names {columns:?} for an array of shape \
                 {shape:?}; give one name per column ({width})",
                columns.len()
            )));
        }
        let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let array = if array.dtype() == DType::F64 {
            array.clone()
        } else {
            array.astype(DType::F64)
        };
        let array = if shape.len() == 2 && array.chunks()[1].len() > 1 {
            array.rechunk_to(vec![array.chunks()[0].clone(), vec![width]])
        } else {
            array
        };
        let chunks = array.to_futures::<f64>(client)?;
        let mut parts: Vec<Future<Vec<Frame>>> = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            parts.push(client.try_submit(frame_of_block, (chunk, &names)));
        }
        let empty = Frame::new_infer_height(
            names
                .iter()
                .map(|n| Series::new_empty(n.as_str().into(), &DataType::Float64).into_column())
                .collect(),
        )
        .map_err(|e| Error::Config(format!("DataFrame::from_array: {e}")))?;
        Ok(DataFrame {
            parts: Bag::from_futures(client, parts),
            schema: empty.schema().clone(),
            divisions: None,
        })
    }
}
