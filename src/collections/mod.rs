//! The collections: graph builders over the client's futures, like Dask's. [`array`] for
//! chunked n-dimensional arrays, [`bag`] for partitioned lists of any serde type,
//! `dataframe` for partitioned Polars frames (feature `dataframe`), [`dataset`] for
//! labelled arrays (xarray's model), and [`delayed`] for lazy calls of plain functions. None of them touches the transport: each
//! turns its operations into tasks submitted through a [`Client`](crate::Client).

pub mod array;
pub mod bag;
#[cfg(feature = "dataframe")]
pub mod dataframe;
pub mod dataset;
pub mod delayed;
