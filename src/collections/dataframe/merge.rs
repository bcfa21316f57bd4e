//! `merge`, Dask's database-style join of two dataframes on key columns, by Polars' join:
//! a **broadcast join** when one side is small (at most
//! [`MergeOptions::broadcast_partitions`] partitions, 1 unless set: joined whole with each
//! partition of the other side where it lies), otherwise a **hash join**: both sides shuffled on
//! their keys into the same number of partitions (`shuffle`), partition `j` of the left
//! joined with partition `j` of the right. A broadcast keeps the unmatched rows of the
//! partitioned side only, so a left join broadcasts only its right side, a right join only
//! its left side, and an outer join always shuffles. The broadcast side is computed on the
//! client first. Up to [`BROADCAST_INLINE_BYTES`] in memory (a lookup table) it travels
//! inside each join step, which is then fused with the steps around it like any step;
//! a larger one is stored once on a worker and fetched by each worker joining with it.

use super::shuffle::{Route, buckets, column_of, stack_frames};
use super::{DataFrame, describe, polars_message, value_arg};
use crate::client::{CallArg, Future};
use crate::collections::bag::Bag;
use crate::error::{Error, Result};
use crate::protocol::Bytes;
use crate::task::{CallError, TaskInput, decode_args, encode_result};
use polars::prelude::{
    DataFrame as Frame, Expr, IntoLazy, JoinArgs, JoinCoalesce, JoinType, PolarsResult, col,
};
use serde::{Deserialize, Serialize};

/// Which rows a merge keeps (Dask's and pandas' `how`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum How {
    /// Rows whose keys are on both sides.
    Inner,
    /// Every left row, with nulls where no right row matches.
    Left,
    /// Every right row, with nulls where no left row matches.
    Right,
    /// Every row of both sides.
    Outer,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Inner => "inner",
            How::Left => "left",
            How::Right => "right",
            How::Outer => "outer",
        }
    }
}

/// The default of [`MergeOptions::broadcast_inline_bytes`]: a broadcast side of at most
/// this many bytes in memory (Polars' estimate) travels inline in every join step, fused
/// with the steps before and after it; a larger one is stored once on a worker and
/// fetched by each worker that joins with it.
pub const BROADCAST_INLINE_BYTES: usize = 256 * 1024;

/// How [`DataFrame::merge_with`] joins.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Added to a right column whose name the left side has too (Polars' default
    /// `_right`; key columns of one name are one column).
    pub suffix: String,
    /// A side of at most this many partitions is broadcast instead of shuffled, when the
    /// join allows (default 1).
    pub broadcast_partitions: usize,
    /// `Some(true)` broadcasts a side whatever its size (the right when the join allows,
    /// else the left), `Some(false)` always shuffles; `None` decides by
    /// `broadcast_partitions`.
    pub broadcast: Option<bool>,
    /// Partitions of a hash join's result (default: the larger side's number).
    pub npartitions: Option<usize>,
    /// A broadcast side of at most this many bytes in memory (Polars' estimate) travels
    /// inline in each join step (default [`BROADCAST_INLINE_BYTES`]); a larger one is
    /// stored once.
    pub broadcast_inline_bytes: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            suffix: "_right".into(),
            broadcast_partitions: 1,
            broadcast: None,
            npartitions: None,
            broadcast_inline_bytes: BROADCAST_INLINE_BYTES,
        }
    }
}

/// The join each task runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Spec {
    left_on: Vec<String>,
    right_on: Vec<String>,
    how: How,
    suffix: String,
}

impl Spec {
    fn join(&self, left: Frame, right: Frame) -> PolarsResult<Frame> {
        let how = match self.how {
            How::Inner => JoinType::Inner,
            How::Left => JoinType::Left,
            How::Right => JoinType::Right,
            How::Outer => JoinType::Full,
        };
        let on = |names: &[String]| names.iter().map(|n| col(n.as_str())).collect::<Vec<Expr>>();
        left.lazy()
            .join(
                right.lazy(),
                on(&self.left_on),
                on(&self.right_on),
                JoinArgs::new(how)
                    .with_coalesce(JoinCoalesce::CoalesceColumns)
                    .with_suffix(Some(self.suffix.as_str().into())),
            )
            .collect()
    }

    fn failed(&self, e: polars::prelude::PolarsError) -> CallError {
        CallError::Failed(self.message(e))
    }

    fn message(&self, e: polars::prelude::PolarsError) -> String {
        format!(
            "merge(how={}, on {:?} and {:?}): {}",
            self.how.name(),
            self.left_on,
            self.right_on,
            polars_message(&e)
        )
    }
}

/// A partition of one side joined with the whole broadcast other side.
fn broadcast_sink(
    frames: Vec<Frame>,
    (small, spec, small_is_right): (Vec<Frame>, Spec, bool),
) -> std::result::Result<Bytes, CallError> {
    let joined = stack_frames(frames, None).and_then(|part| {
        let small = stack_frames(small, None)?;
        if small_is_right {
            spec.join(part, small)
        } else {
            spec.join(small, part)
        }
    });
    encode_result(&vec![joined.map_err(|e| spec.failed(e))?])
}

/// A partition joined with the small side inline in the step's parameter: the join runs
/// inside whatever task reads the partition next (a group-by's partial step, say), so the
/// joined rows are never stored or sent.
fn broadcast_step(part: Frame, (small, spec, small_is_right): &(Frame, Spec, bool)) -> Frame {
    let joined = if *small_is_right {
        spec.join(part, small.clone())
    } else {
        spec.join(small.clone(), part)
    };
    match joined {
        Ok(frame) => frame,
        Err(e) => panic!("{}", spec.message(e)),
    }
}

/// Partition `j` of each side (their buckets stacked), joined.
fn hash_join_task(input: &TaskInput<'_>) -> std::result::Result<Bytes, CallError> {
    type Args = (Vec<Vec<Frame>>, Vec<Vec<Frame>>, Frame, Frame, Spec);
    let (left, right, left_empty, right_empty, spec): Args = decode_args(input)
        .map_err(|e| CallError::Failed(format!("merge: could not decode a bucket: {e}")))?;
    let joined = stack_frames(left.into_iter().flatten().collect(), Some(&left_empty))
        .and_then(|l| {
            let r = stack_frames(right.into_iter().flatten().collect(), Some(&right_empty))?;
            spec.join(l, r)
        })
        .map_err(|e| spec.failed(e))?;
    encode_result(&vec![joined])
}

impl DataFrame {
    /// This dataframe joined with `other` on the columns `on` (on both sides), keeping the
    /// rows `how` says: Dask's `merge(other, on=.., how=..)` with Polars' join (a right
    /// column whose name the left has gets the suffix `_right`). Broadcast or hash join as
    /// the module's documentation says; rows come in no particular order.
    pub fn merge(&self, other: &DataFrame, on: &[&str], how: How) -> Result<DataFrame> {
        self.merge_with(other, on, on, how, &MergeOptions::default())
    }

    /// [`merge`](Self::merge) on differently named keys (`left_on[i]` matches
    /// `right_on[i]`; their types must be equal) with options.
    pub fn merge_with(
        &self,
        other: &DataFrame,
        left_on: &[&str],
        right_on: &[&str],
        how: How,
        options: &MergeOptions,
    ) -> Result<DataFrame> {
        let left_on = self.key_columns("merge (left side)", left_on)?;
        let right_on = other.key_columns("merge (right side)", right_on)?;
        if left_on.len() != right_on.len() {
            return Err(Error::Config(format!(
                "merge: {} left keys {left_on:?} but {} right keys {right_on:?}; give one \
                 right key per left key",
                left_on.len(),
                right_on.len()
            )));
        }
        for (l, r) in left_on.iter().zip(&right_on) {
            let (lt, rt) = (&self.schema.get(l.as_str()), &other.schema.get(r.as_str()));
            let (Some(lt), Some(rt)) = (lt, rt) else {
                unreachable!("the keys were checked to be columns")
            };
            if lt != rt {
                return Err(Error::Config(format!(
                    "merge: key '{l}' is {lt} on the left but '{r}' is {rt} on the right; \
                     give them one type first (astype)"
                )));
            }
        }
        let spec = Spec {
            left_on,
            right_on,
            how,
            suffix: options.suffix.clone(),
        };
        let meta = spec
            .join(
                Frame::empty_with_arc_schema(self.schema.clone()),
                Frame::empty_with_arc_schema(other.schema.clone()),
            )
            .map_err(|e| {
                Error::Config(format!(
                    "merge(how={}): {} (the left columns are {}; the right {})",
                    how.name(),
                    polars_message(&e),
                    describe(&self.schema),
                    describe(&other.schema)
                ))
            })?;
        let schema = meta.schema().clone();

        let right_ok = matches!(how, How::Inner | How::Left);
        let left_ok = matches!(how, How::Inner | How::Right);
        let small = |side: &DataFrame| side.npartitions() <= options.broadcast_partitions;
        let broadcast_right = match options.broadcast {
            Some(false) => None,
            Some(true) if right_ok => Some(true),
            Some(true) if left_ok => Some(false),
            Some(true) => {
                return Err(Error::Config(
                    "merge(how=outer) with broadcast: an outer join keeps the unmatched rows \
                     of both sides, which a broadcast cannot; leave `broadcast` unset"
                        .into(),
                ));
            }
            None if right_ok && small(other) => Some(true),
            None if left_ok && small(self) => Some(false),
            None => None,
        };
        let client = self.parts.client().clone();
        let parts = match broadcast_right {
            Some(small_is_right) => {
                let (big, small) = if small_is_right {
                    (self, other)
                } else {
                    (other, self)
                };
                // The small side comes to the client once: inline in every join step
                // when it is a few rows, otherwise one stored value the workers fetch.
                let small_frame = small.compute()?;
                if small_frame.estimated_size() <= options.broadcast_inline_bytes {
                    let parameter = (small_frame, spec, small_is_right);
                    return Ok(DataFrame {
                        parts: big.parts.map_with_named(
                            broadcast_step,
                            &parameter,
                            "merge".into(),
                        )?,
                        schema,
                        divisions: None,
                    });
                }
                let stacked: Future<()> = client.scatter(vec![small_frame])?.erase();
                let spec = value_arg("a merge", &spec)?;
                let side = value_arg("a merge", &small_is_right)?;
                big.parts.run_raw(broadcast_sink, "merge", |_| {
                    vec![CallArg::Future(stacked.clone()), spec.clone(), side.clone()]
                })
            }
            None => {
                let n = options
                    .npartitions
                    .unwrap_or(self.npartitions().max(other.npartitions()))
                    .max(1) as u64;
                let left = buckets(
                    self,
                    &Route::Hash {
                        on: spec.left_on.clone(),
                        n,
                    },
                    "merge-left",
                )?;
                let right = buckets(
                    other,
                    &Route::Hash {
                        on: spec.right_on.clone(),
                        n,
                    },
                    "merge-right",
                )?;
                let left_empty = self.empty_arg()?;
                let right_empty = other.empty_arg()?;
                let spec = value_arg("a merge", &spec)?;
                (0..n as usize)
                    .map(|j| {
                        client
                            .submit_raw(
                                hash_join_task,
                                "merge",
                                &[],
                                vec![
                                    CallArg::Futures(column_of(&left, j)),
                                    CallArg::Futures(column_of(&right, j)),
                                    left_empty.clone(),
                                    right_empty.clone(),
                                    spec.clone(),
                                ],
                            )
                            .retype()
                    })
                    .collect()
            }
        };
        Ok(DataFrame {
            parts: Bag::from_futures(&client, parts),
            schema,
            divisions: None,
        })
    }
}
