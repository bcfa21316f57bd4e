//! Grouping along a dimension by a key per position (xarray's `groupby`, e.g. by month for
//! a climatology), and joining labelled arrays end to end along a dimension (xarray's
//! `concat`).

use super::coord::{Coord, Isel, Values};
use super::data_array::DataArray;
use crate::array::{self, Array, Attrs, BinaryOp, DType, ReduceOp, Scalar, Span};
use crate::error::{Error, Result};
use std::ops::Range;

/// `pieces` joined end to end along `dim`, which each has (xarray's `concat`); their
/// other dimensions must agree. The coordinate along `dim` is joined too when every piece
/// has one; the other coordinates and the attributes are the first piece's.
pub fn concat(pieces: &[DataArray], dim: &str) -> Result<DataArray> {
    let first = pieces
        .first()
        .ok_or_else(|| Error::Config(format!("concat along `{dim}` of no array")))?;
    let axis = first.axis(dim)?;
    for p in pieces {
        if p.dims != first.dims {
            return Err(Error::Config(format!(
                "concat along `{dim}`: dimensions {:?} and {:?} differ; transpose first",
                first.dims, p.dims
            )));
        }
    }
    let arrays: Vec<Array> = pieces.iter().map(|p| p.data.clone()).collect();
    let data = array::concatenate(&arrays, axis as isize);
    data.check()?;
    let mut coords = first.coords.clone();
    coords.remove(dim);
    if let Some(c) = pieces
        .iter()
        .map(|p| p.coords.get(dim))
        .collect::<Option<Vec<_>>>()
    {
        let values = match &c[0].values {
            Values::F64(_) => Values::F64(c.iter().flat_map(|c| c.values.to_f64()).collect()),
            Values::F32(_) => Values::F32(
                c.iter()
                    .flat_map(|c| c.values.to_f64())
                    .map(|v| v as f32)
                    .collect(),
            ),
            Values::I64(_) => Values::I64(
                c.iter()
                    .flat_map(|c| c.values.to_f64())
                    .map(|v| v as i64)
                    .collect(),
            ),
        };
        coords.insert(
            dim.to_string(),
            Coord {
                values,
                attrs: c[0].attrs.clone(),
            },
        );
    }
    Ok(DataArray {
        name: first.name.clone(),
        dims: first.dims.clone(),
        data,
        coords,
        attrs: first.attrs.clone(),
    })
}

/// One group: its key and its positions along the grouped dimension, as runs of
/// consecutive positions in order.
struct Group {
    key: i64,
    runs: Vec<Range<usize>>,
}

impl Group {
    /// The positions as one span with a step, if they are evenly spaced.
    fn as_span(&self) -> Option<Span> {
        let positions: Vec<usize> = self.runs.iter().flat_map(|r| r.clone()).collect();
        let (&first, &last) = (positions.first()?, positions.last()?);
        let step = positions.get(1).map_or(1, |&p| p - first);
        positions
            .windows(2)
            .all(|w| w[1] - w[0] == step)
            .then(|| Span::new(Some(first as isize), Some(last as isize + 1), step as isize))
    }
}

/// A labelled array grouped along one dimension ([`DataArray::groupby`]).
pub struct GroupBy {
    x: DataArray,
    dim: String,
    name: String,
    groups: Vec<Group>,
}

impl DataArray {
    /// Groups along `dim` by `keys`, one per position (e.g. the month of each time):
    /// reductions give one entry per distinct key, in increasing order, along a new
    /// dimension `name` in place of `dim` whose coordinate is the keys (xarray's
    /// `groupby("time.month").mean()`, with `name` "month").
    ///
    /// ```
    /// use mpidask::array;
    /// use mpidask::dataset::DataArray;
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     // Two years of monthly values: month m of year y is 100 y + m.
    ///     let v: Vec<f64> = (0..24).map(|i| (100 * (i / 12) + i % 12) as f64).collect();
    ///     let x = array::from_array(&ndarray::arr1(&v).into_dyn(), &[5]);
    ///     let x = DataArray::new("x", x, &["time"]).unwrap();
    ///     let months: Vec<i64> = (0..24).map(|i| i % 12 + 1).collect();
    ///     let by_month = x.groupby("time", "month", &months).unwrap();
    ///     let clim = by_month.mean().unwrap(); // dims ["month"], 12 values
    ///     assert_eq!(clim.compute::<f64>(client).unwrap()[[0]], 50.0);
    ///     let anomaly = by_month.binary(array::BinaryOp::Sub, &clim).unwrap();
    ///     assert_eq!(anomaly.compute::<f64>(client).unwrap()[[13]], 50.0);
    /// });
    /// ```
    pub fn groupby(&self, dim: &str, name: &str, keys: &[i64]) -> Result<GroupBy> {
        let axis = self.axis(dim)?;
        let n = self.shape()[axis];
        if keys.len() != n {
            return Err(Error::Config(format!(
                "groupby `{dim}`: {} keys for a dimension of length {n}; give one per position",
                keys.len()
            )));
        }
        if n == 0 {
            return Err(Error::Config(format!(
                "groupby `{dim}`: the dimension is empty; there is nothing to group"
            )));
        }
        if name != dim && self.dims.iter().any(|d| d == name) {
            return Err(Error::Config(format!(
                "groupby `{dim}`: `{name}` is already a dimension of `{}`; name the groups \
                 otherwise",
                self.name
            )));
        }
        let mut distinct: Vec<i64> = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let groups = distinct
            .into_iter()
            .map(|key| {
                let mut runs: Vec<Range<usize>> = Vec::new();
                for (i, _) in keys.iter().enumerate().filter(|(_, k)| **k == key) {
                    match runs.last_mut() {
                        Some(r) if r.end == i => r.end = i + 1,
                        _ => runs.push(i..i + 1),
                    }
                }
                Group { key, runs }
            })
            .collect();
        Ok(GroupBy {
            x: self.clone(),
            dim: dim.to_string(),
            name: name.to_string(),
            groups,
        })
    }
}

impl GroupBy {
    /// The keys, in increasing order.
    pub fn keys(&self) -> Vec<i64> {
        self.groups.iter().map(|g| g.key).collect()
    }

    /// The members of one group, along the grouped dimension in their order.
    fn members(&self, group: &Group) -> Result<DataArray> {
        match group.as_span() {
            Some(span) => self.x.isel(&self.dim, Isel::Span(span)),
            None => {
                let pieces: Vec<DataArray> = group
                    .runs
                    .iter()
                    .map(|r| self.x.isel(&self.dim, r.clone()))
                    .collect::<Result<_>>()?;
                concat(&pieces, &self.dim)
            }
        }
    }

    /// `op` over each group along the grouped dimension (NaN skipped, as
    /// [`DataArray::reduce`]), the results stacked along the new dimension.
    pub fn reduce(&self, op: ReduceOp) -> Result<DataArray> {
        let axis = self.x.axis(&self.dim)?;
        let reduced: Vec<DataArray> = self
            .groups
            .iter()
            .map(|g| self.members(g)?.reduce(op, &[&self.dim]))
            .collect::<Result<_>>()?;
        let arrays: Vec<Array> = reduced.iter().map(|r| r.data.clone()).collect();
        let data = array::stack(&arrays, axis as isize);
        data.check()?;
        let mut dims = reduced[0].dims.clone();
        dims.insert(axis, self.name.clone());
        let mut coords = reduced[0].coords.clone();
        coords.insert(self.name.clone(), Coord::new(self.keys()));
        Ok(DataArray {
            name: self.x.name.clone(),
            dims,
            data,
            coords,
            attrs: Attrs::new(),
        })
    }

    /// Mean of each group, NaN skipped.
    pub fn mean(&self) -> Result<DataArray> {
        self.reduce(ReduceOp::Mean)
    }
    /// Sum of each group, NaN skipped.
    pub fn sum(&self) -> Result<DataArray> {
        self.reduce(ReduceOp::Sum)
    }
    /// Standard deviation of each group (`ddof` 0), NaN skipped.
    pub fn std(&self) -> Result<DataArray> {
        self.reduce(ReduceOp::Std(0))
    }

    /// `x op other[key]` at every position, `other` taken at the position's key along the
    /// groups' dimension (xarray's `x.groupby("time.month") - climatology`): the result
    /// has the grouped array's dimensions, order and chunks. `other` is laid out along the
    /// grouped dimension first (each run of positions with one key a broadcast of its
    /// entry), so the grouped array is read chunk by chunk, never cut into groups.
    pub fn binary(&self, op: BinaryOp, other: &DataArray) -> Result<DataArray> {
        let at_axis = other.axis(&self.name)?;
        if other
            .dims
            .iter()
            .any(|d| *d == self.dim && self.dim != self.name)
        {
            return Err(Error::Config(format!(
                "`{}` has dimension `{}` besides `{}`; reduce it first",
                other.name, self.dim, self.name
            )));
        }
        let keys = match other.coord(&self.name) {
            Some(c) => c.values.to_f64(),
            None => self.keys().iter().map(|&k| k as f64).collect(),
        };
        let mut runs: Vec<(Range<usize>, usize)> = Vec::new();
        for group in &self.groups {
            let at = keys
                .iter()
                .position(|&v| v == group.key as f64)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "`{}` has no `{}` {} to combine with",
                        other.name, self.name, group.key
                    ))
                })?;
            runs.extend(group.runs.iter().map(|r| (r.clone(), at)));
        }
        runs.sort_by_key(|(r, _)| r.start);
        // `other` without its coordinate along the groups, with that dimension renamed to
        // the grouped one: one entry per run, broadcast along it.
        let mut entries = other.clone();
        entries.coords.remove(&self.name);
        entries.dims[at_axis] = self.dim.clone();
        let ndim = entries.dims.len();
        let pieces: Vec<DataArray> = runs
            .iter()
            .map(|(run, at)| {
                let entry = entries.isel(&self.dim, *at..*at + 1)?;
                let mut shape = vec![1; ndim];
                shape[at_axis] = run.len();
                let zero = match entry.dtype() {
                    DType::Bool => Scalar::I64(0),
                    dtype => Scalar::I64(0).cast(dtype),
                };
                let data = entry
                    .data
                    .binary(BinaryOp::Add, array::full(&shape, &shape, zero));
                Ok(DataArray { data, ..entry })
            })
            .collect::<Result<_>>()?;
        let laid_out = concat(&pieces, &self.dim)?;
        let mut out = self.x.binary(op, &laid_out)?;
        out.name = self.x.name.clone();
        Ok(out)
    }
}
