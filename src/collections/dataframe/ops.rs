//! Steps that take Polars expressions or column names (`filter`, `with_columns`,
//! `select_exprs`, `rename`, `drop`, `astype`, `fill_null`, `drop_nulls`): each is an [`Op`]
//! sent encoded with every partition's task and run there on the partition as a Polars
//! lazy query. The client runs the same op on an empty frame with the dataframe's columns
//! first: a missing column or a type error is an error there, before anything runs, and
//! the new columns are known (Dask's `meta`).

use super::{DataFrame, describe, polars_message};
use crate::error::{Error, Result};
use polars::prelude::{
    DataFrame as Frame, DataType, Expr, IntoLazy, PolarsResult, SortMultipleOptions,
    UniqueKeepStrategy, by_name, col,
};
use serde::{Deserialize, Serialize};

/// One step on a partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum Op {
    /// The rows where the expression is true.
    Filter(Expr),
    /// The columns with these added or replaced.
    WithColumns(Vec<Expr>),
    /// Only these expressions' columns.
    Select(Vec<Expr>),
    /// A column cast to a type, strictly (a value that does not convert is an error).
    Cast(String, DataType),
    /// Columns renamed, `existing[i]` to `new[i]`.
    Rename {
        existing: Vec<String>,
        new: Vec<String>,
    },
    /// The columns without these.
    Drop(Vec<String>),
    /// Nulls replaced by the expression's value.
    FillNull(Expr),
    /// The rows without a null in these columns (all when `None`).
    DropNulls(Option<Vec<String>>),
    /// The first row of each distinct value of these columns (all when `None`), in order.
    Unique(Option<Vec<String>>),
    /// The rows sorted by these columns (stable; nulls last).
    Sort { by: Vec<String>, descending: bool },
}

impl Op {
    /// What the op is, for messages and task names.
    fn name(&self) -> &'static str {
        match self {
            Op::Filter(_) => "filter",
            Op::WithColumns(_) => "with_columns",
            Op::Select(_) => "select_exprs",
            Op::Cast(..) => "astype",
            Op::Rename { .. } => "rename",
            Op::Drop(_) => "drop",
            Op::FillNull(_) => "fill_null",
            Op::DropNulls(_) => "drop_nulls",
            Op::Unique(_) => "drop_duplicates",
            Op::Sort { .. } => "sort",
        }
    }

    /// The op on `frame`.
    fn apply(&self, frame: Frame) -> PolarsResult<Frame> {
        let frame = frame.lazy();
        match self.clone() {
            Op::Filter(predicate) => frame.filter(predicate),
            Op::WithColumns(exprs) => frame.with_columns(exprs),
            Op::Select(exprs) => frame.select(exprs),
            Op::Cast(column, dtype) => frame.with_columns([col(column).strict_cast(dtype)]),
            Op::Rename { existing, new } => frame.rename(existing, new, true),
            Op::Drop(columns) => frame.drop(by_name(columns, true, false)),
            Op::FillNull(value) => frame.fill_null(value),
            Op::DropNulls(subset) => frame.drop_nulls(subset.map(|s| by_name(s, true, false))),
            Op::Unique(subset) => frame.unique_stable(
                subset.map(|s| by_name(s, true, false)),
                UniqueKeepStrategy::First,
            ),
            Op::Sort { by, descending } => frame.sort(
                by,
                SortMultipleOptions::default()
                    .with_order_descending(descending)
                    .with_nulls_last(true)
                    .with_maintain_order(true),
            ),
        }
        .collect()
    }
}

/// The step of every op (checked on the client; an error here fails the task with the
/// op's message).
fn op_step(frame: Frame, op: &Op) -> Frame {
    match op.apply(frame) {
        Ok(frame) => frame,
        Err(e) => panic!("{}: {}", op.name(), polars_message(&e)),
    }
}

impl DataFrame {
    /// `op` as the next step: run on an empty frame first (the new columns, and errors
    /// before anything runs), then encoded for the workers.
    pub(super) fn then_op(&self, op: Op) -> Result<DataFrame> {
        let meta = op
            .apply(Frame::empty_with_arc_schema(self.schema.clone()))
            .map_err(|e| {
                Error::Config(format!(
                    "{}: {} (the columns are {})",
                    op.name(),
                    polars_message(&e),
                    describe(&self.schema)
                ))
            })?;
        if let Err(e) = crate::protocol::encode_value(&op) {
            return Err(unencodable(&op, &e.to_string()));
        }
        Ok(DataFrame {
            parts: self.parts.map_with_named(op_step, &op, op.name().into())?,
            schema: meta.schema().clone(),
            // A filter keeps the rows' order and values: each partition's range holds.
            divisions: match op {
                Op::Filter(_) => self.divisions.clone(),
                _ => None,
            },
        })
    }

    /// The rows for which `predicate` (a Polars expression) is true: Dask's
    /// `df[df.x > 0]`, Polars' `filter`.
    pub fn filter(&self, predicate: Expr) -> Result<DataFrame> {
        self.then_op(Op::Filter(predicate))
    }

    /// The columns with those of `exprs` added, or replaced when a name exists: Polars'
    /// `with_columns`, Dask's `assign`.
    pub fn with_columns<E: AsRef<[Expr]>>(&self, exprs: E) -> Result<DataFrame> {
        self.then_op(Op::WithColumns(exprs.as_ref().to_vec()))
    }

    /// Only the columns of `exprs`: Polars' `select` with expressions
    /// ([`select`](DataFrame::select) takes column names).
    pub fn select_exprs<E: AsRef<[Expr]>>(&self, exprs: E) -> Result<DataFrame> {
        self.then_op(Op::Select(exprs.as_ref().to_vec()))
    }

    /// Columns renamed, `(from, to)` pairs; a `from` that is not a column is an error.
    pub fn rename(&self, pairs: &[(&str, &str)]) -> Result<DataFrame> {
        self.then_op(Op::Rename {
            existing: pairs.iter().map(|(a, _)| a.to_string()).collect(),
            new: pairs.iter().map(|(_, b)| b.to_string()).collect(),
        })
    }

    /// The dataframe without the given columns; a name that is not a column is an error.
    pub fn drop(&self, columns: &[&str]) -> Result<DataFrame> {
        self.then_op(Op::Drop(columns.iter().map(|c| c.to_string()).collect()))
    }

    /// Column `column` cast to `dtype` (Dask's `astype({column: dtype})`); a value that does
    /// not convert fails the partition's task naming it (Polars' strict cast).
    pub fn astype(&self, column: &str, dtype: DataType) -> Result<DataFrame> {
        self.then_op(Op::Cast(column.to_string(), dtype))
    }

    /// Nulls replaced by `value` in every column whose type takes it (Dask's `fillna`).
    pub fn fill_null(&self, value: impl Into<Expr>) -> Result<DataFrame> {
        self.then_op(Op::FillNull(value.into()))
    }

    /// The rows without a null in `subset` (every column when `None`): Dask's `dropna`.
    pub fn drop_nulls(&self, subset: Option<&[&str]>) -> Result<DataFrame> {
        self.then_op(Op::DropNulls(
            subset.map(|s| s.iter().map(|c| c.to_string()).collect()),
        ))
    }
}

/// The step of [`DataFrame::drop_duplicates`] after its shuffle.
pub(super) fn unique_rows(frame: Frame, subset: &Option<Vec<String>>) -> PolarsResult<Frame> {
    Op::Unique(subset.clone()).apply(frame)
}

/// The error for an op that cannot travel to the workers.
fn unencodable(op: &Op, why: &str) -> Error {
    Error::Config(format!(
        "{}: the expression cannot be sent to the workers ({why}); expressions calling Rust \
         closures (map, apply) do not encode: use map_partitions with a plain function \
         instead ({op:?})",
        op.name()
    ))
}
