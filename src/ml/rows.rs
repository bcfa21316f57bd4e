//! What the estimators share: 2-D inputs cut into row chunks with every column in one
//! chunk, tree reductions of per-chunk results, and the checks of a model's inputs.

use crate::Error;
use crate::array::{Array, DType};
use crate::delayed::{Delayed, delayed};
use crate::error::Result;
use crate::task::TaskFn;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many partial results one combine task merges.
pub(crate) const FAN_IN: usize = 8;

/// An error of a model used wrongly or given bad data.
pub(crate) fn error(message: impl Into<String>) -> Error {
    Error::Config(message.into())
}

/// `x` checked to be a 2-D array (`who` names the caller in the error), with its columns
/// in one chunk (rows chunked as they are).
pub(crate) fn row_chunked(x: &Array, who: &str) -> Result<Array> {
    x.check()?;
    if x.ndim() != 2 {
        return Err(error(format!(
            "{who} needs a 2-D array (samples x features), got shape {:?}",
            x.shape()
        )));
    }
    let columns = x.shape()[1];
    Ok(x.rechunk_to(vec![x.chunks()[0].clone(), vec![columns]]))
}

/// The feature count of `x` checked against the `fitted` one.
pub(crate) fn same_features(x: &Array, fitted: usize, who: &str) -> Result<()> {
    x.check()?;
    if x.ndim() != 2 || x.shape()[1] != fitted {
        return Err(error(format!(
            "{who}: the model was fitted on {fitted} features; this array has shape {:?}",
            x.shape()
        )));
    }
    Ok(())
}

/// Merges `parts` pairwise-by-`FAN_IN` with `merge` until one is left.
pub(crate) fn tree<P, F>(mut parts: Vec<Delayed<P>>, merge: F) -> Option<Delayed<P>>
where
    F: TaskFn<(Vec<P>,), Output = P> + Copy,
    P: Serialize + DeserializeOwned + 'static,
{
    while parts.len() > 1 {
        parts = parts
            .chunks(FAN_IN)
            .map(|group| delayed(merge, group.to_vec()))
            .collect();
    }
    parts.pop()
}

/// `x` as `f64` (a view when it is already).
pub(crate) fn as_f64(x: &Array) -> Array {
    if x.dtype() == DType::F64 {
        x.clone()
    } else {
        x.astype(DType::F64)
    }
}
