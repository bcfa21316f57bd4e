//! Chunks read by the workers from storage: what `.npy` files, a stack of them or a Zarr
//! array give a graph, one read task per chunk.

use super::dtype::DType;
use super::grid::Chunks;
use crate::client::{Client, Future};

/// Where an array's chunks are read from.
pub(crate) trait ChunkSource: Send + Sync {
    /// What `explain()` calls a read task of this source.
    fn describe(&self) -> &'static str;

    /// Submits the task reading chunk `index` of an array cut into `chunks` of `dtype`.
    fn read(&self, client: &Client, chunks: &Chunks, index: &[usize], dtype: DType) -> Future<()>;
}
