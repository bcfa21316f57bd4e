//! A labelled array (xarray's `DataArray`): an [`Array`] with a name, one dimension name
//! per axis, coordinates along its dimensions and attributes; selected by position or
//! label, reduced by dimension name, and combined with other labelled arrays by dimension
//! name.

use super::coord::{Coord, Isel, Label, Values, locate};
use super::resolve_upwards;
use crate::array::{Array, Attr, Attrs, BinaryOp, DType, Element, ReduceOp, Scalar, Span};
use crate::client::Client;
use crate::error::{Error, Result};
use ndarray::ArrayD;
use std::collections::BTreeMap;

/// An array with named dimensions, coordinates and attributes.
///
/// ```
/// use mpidask::array;
/// use mpidask::dataset::{DataArray, Label};
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let data = array::arange(0.0, 12.0, 1.0, 6).reshape(&[4, 3]);
///     let t = DataArray::new("t", data, &["time", "x"])
///         .unwrap()
///         .with_coord("x", vec![10.0, 20.0, 30.0])
///         .unwrap();
///     let mean = t.mean("time").unwrap(); // dims ["x"]
///     let row = t.sel("x", Label::Between(15.0, 30.0)).unwrap(); // x = 20, 30
///     let anomaly = (&t - &mean).unwrap(); // aligned by the name "x"
///     assert_eq!(mean.compute::<f64>(client).unwrap().as_slice().unwrap(), &[4.5, 5.5, 6.5]);
///     assert_eq!(row.dims(), ["time", "x"]);
///     assert_eq!(anomaly.sum("time").unwrap().compute::<f64>(client).unwrap().sum(), 0.0);
/// });
/// ```
#[derive(Clone)]
pub struct DataArray {
    pub(crate) name: String,
    pub(crate) dims: Vec<String>,
    pub(crate) data: Array,
    pub(crate) coords: BTreeMap<String, Coord>,
    pub(crate) attrs: Attrs,
}

impl std::fmt::Debug for DataArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataArray {} ({}) {} {:?}",
            self.name,
            self.dims.join(", "),
            self.data.dtype(),
            self.data.shape()
        )
    }
}

/// Checks that `dims` names the axes of `data`, each once.
fn check_dims(name: &str, data: &Array, dims: &[String]) -> Result<()> {
    data.check()?;
    if dims.len() != data.ndim() {
        return Err(Error::Config(format!(
            "`{name}`: {} dimension names ({dims:?}) for an array of {} dimensions (shape {:?})",
            dims.len(),
            data.ndim(),
            data.shape()
        )));
    }
    for (i, d) in dims.iter().enumerate() {
        if d.is_empty() || dims[..i].contains(d) {
            return Err(Error::Config(format!(
                "`{name}`: dimension names {dims:?} must be distinct and not empty"
            )));
        }
    }
    Ok(())
}

impl DataArray {
    /// `data` named `name` with dimension `dims[i]` along axis `i`.
    pub fn new(name: &str, data: Array, dims: &[&str]) -> Result<DataArray> {
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        check_dims(name, &data, &dims)?;
        Ok(DataArray {
            name: name.to_string(),
            dims,
            data,
            coords: BTreeMap::new(),
            attrs: Attrs::new(),
        })
    }

    /// With labels `values` along dimension `dim`.
    pub fn with_coord(self, dim: &str, values: impl Into<Values>) -> Result<DataArray> {
        self.with_coord_attrs(dim, Coord::new(values))
    }

    /// With coordinate `coord` (labels and attributes) along dimension `dim`.
    pub fn with_coord_attrs(mut self, dim: &str, coord: Coord) -> Result<DataArray> {
        let axis = self.axis(dim)?;
        let n = self.data.shape()[axis];
        if coord.values.len() != n {
            return Err(Error::Config(format!(
                "`{}`: {} labels for dimension `{dim}` of length {n}",
                self.name,
                coord.values.len()
            )));
        }
        self.coords.insert(dim.to_string(), coord);
        Ok(self)
    }

    /// With attribute `key` set to `value`.
    pub fn with_attr(mut self, key: &str, value: impl Into<Attr>) -> DataArray {
        self.attrs.insert(key.to_string(), value.into());
        self
    }

    /// Renamed.
    pub fn rename(mut self, name: &str) -> DataArray {
        self.name = name.to_string();
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dimension names, one per axis.
    pub fn dims(&self) -> &[String] {
        &self.dims
    }

    /// The array.
    pub fn data(&self) -> &Array {
        &self.data
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The coordinate along `dim`, if it has one.
    pub fn coord(&self, dim: &str) -> Option<&Coord> {
        self.coords.get(dim)
    }

    /// The coordinates, by dimension.
    pub fn coords(&self) -> &BTreeMap<String, Coord> {
        &self.coords
    }

    /// The attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// The axis of dimension `dim`.
    pub fn axis(&self, dim: &str) -> Result<usize> {
        self.dims.iter().position(|d| d == dim).ok_or_else(|| {
            Error::Config(format!(
                "`{}` has no dimension `{dim}`; its dimensions are {}",
                self.name,
                if self.dims.is_empty() {
                    "none (a scalar)".to_string()
                } else {
                    self.dims.join(", ")
                }
            ))
        })
    }

    /// The data replaced by `f(data)`, which must keep the shape (elementwise functions:
    /// `da.map(|x| x.sqrt())`); names, coordinates and attributes are kept.
    pub fn map(&self, f: impl FnOnce(&Array) -> Array) -> Result<DataArray> {
        let data = f(&self.data);
        data.check()?;
        if data.shape() != self.data.shape() {
            return Err(Error::Config(format!(
                "`{}`: map changed the shape from {:?} to {:?}; it must keep it",
                self.name,
                self.data.shape(),
                data.shape()
            )));
        }
        Ok(DataArray {
            data,
            ..self.clone()
        })
    }

    /// Positions `sel` along `dim` (xarray's `isel`): one position drops the dimension
    /// (and its coordinate), a span keeps it.
    pub fn isel(&self, dim: &str, sel: impl Into<Isel>) -> Result<DataArray> {
        let axis = self.axis(dim)?;
        let n = self.data.shape()[axis];
        let (start, step, len, drop) = match sel.into() {
            Isel::At(i) if i < n => (i, 1, 1, true),
            Isel::At(i) => {
                return Err(Error::Config(format!(
                    "isel: position {i} of `{dim}`, which is {n} long"
                )));
            }
            Isel::Span(span) => {
                let (start, step, len) = resolve_upwards(span, n, dim)?;
                (start, step, len, false)
            }
        };
        let mut spans = vec![Span::all(); self.data.ndim()];
        spans[axis] = Span::new(
            Some(start as isize),
            Some((start + step * len.saturating_sub(1) + 1).min(n) as isize),
            step as isize,
        );
        if len == 0 {
            spans[axis] = Span::new(Some(start as isize), Some(start as isize), 1);
        }
        let mut data = self.data.slice(&spans);
        let mut dims = self.dims.clone();
        let mut coords = self.coords.clone();
        if drop {
            let shape: Vec<isize> = data
                .shape()
                .iter()
                .enumerate()
                .filter(|&(a, _)| a != axis)
                .map(|(_, &s)| s as isize)
                .collect();
            data = data.reshape(&shape);
            dims.remove(axis);
            coords.remove(dim);
        } else if let Some(c) = coords.get_mut(dim) {
            c.values = c.values.select(start, step, len);
        }
        data.check()?;
        Ok(DataArray {
            name: self.name.clone(),
            dims,
            data,
            coords,
            attrs: self.attrs.clone(),
        })
    }

    /// Labels `label` along `dim` (xarray's `sel`), on the coordinate of `dim`.
    pub fn sel(&self, dim: &str, label: impl Into<Label>) -> Result<DataArray> {
        self.axis(dim)?;
        let coord = self.coords.get(dim).ok_or_else(|| {
            Error::Config(format!(
                "sel: `{}` has no coordinate along `{dim}`; select positions with isel",
                self.name
            ))
        })?;
        let positions = locate(dim, &coord.values, label.into())
            .map_err(|why| Error::Config(format!("sel: {why}")))?;
        self.isel(dim, positions)
    }

    /// `op` over dimensions `dims` (all of them if empty), which are dropped with their
    /// coordinates. Missing values (NaN) of real arrays are skipped, as xarray does by
    /// default (`skipna=True`): the sum of none is 0, their mean, minimum, maximum,
    /// variance and standard deviation NaN. Attributes are dropped, as xarray does.
    pub fn reduce(&self, op: ReduceOp, dims: &[&str]) -> Result<DataArray> {
        let axes: Vec<usize> = if dims.is_empty() {
            (0..self.dims.len()).collect()
        } else {
            dims.iter().map(|d| self.axis(d)).collect::<Result<_>>()?
        };
        let list: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let data = if matches!(self.dtype(), DType::F64 | DType::F32) {
            nan_reduce(&self.data, op, &list)
        } else {
            self.data.reduce(op, Some(&list), false)
        };
        data.check()?;
        let kept = |d: &String| !axes.iter().any(|&a| &self.dims[a] == d);
        Ok(DataArray {
            name: self.name.clone(),
            dims: self.dims.iter().filter(|d| kept(d)).cloned().collect(),
            data,
            coords: self
                .coords
                .iter()
                .filter(|(d, _)| kept(d))
                .map(|(d, c)| (d.clone(), c.clone()))
                .collect(),
            attrs: Attrs::new(),
        })
    }

    /// Mean along `dim`, skipping NaN ([`reduce`](Self::reduce)).
    pub fn mean(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Mean, &[dim])
    }
    /// Sum along `dim`, skipping NaN.
    pub fn sum(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Sum, &[dim])
    }
    /// Minimum along `dim`, skipping NaN.
    pub fn min(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Min, &[dim])
    }
    /// Maximum along `dim`, skipping NaN.
    pub fn max(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Max, &[dim])
    }
    /// Standard deviation along `dim` (`ddof` 0, as xarray's default), skipping NaN.
    pub fn std(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Std(0), &[dim])
    }
    /// Variance along `dim` (`ddof` 0), skipping NaN.
    pub fn var(&self, dim: &str) -> Result<DataArray> {
        self.reduce(ReduceOp::Var(0), &[dim])
    }

    /// Dimensions in the order `dims` (every dimension, once).
    pub fn transpose(&self, dims: &[&str]) -> Result<DataArray> {
        let perm: Vec<usize> = dims.iter().map(|d| self.axis(d)).collect::<Result<_>>()?;
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..self.dims.len()).collect::<Vec<_>>() {
            return Err(Error::Config(format!(
                "transpose `{}`: {dims:?} must name each of {:?} once",
                self.name, self.dims
            )));
        }
        Ok(DataArray {
            dims: perm.iter().map(|&a| self.dims[a].clone()).collect(),
            data: self.data.transpose(&perm),
            ..self.clone()
        })
    }

    /// `self op other` with the axes matched by dimension name (xarray's broadcasting):
    /// the result has this array's dimensions, then the other's that this one lacks. Along
    /// a shared dimension the two coordinates must be equal, or their common labels a run
    /// of positions in both (inner join); the result takes the common labels. Attributes
    /// are dropped; the name is kept when both have it.
    pub fn binary(&self, op: BinaryOp, other: &DataArray) -> Result<DataArray> {
        let mut a = self.clone();
        let mut b = other.clone();
        for dim in self.dims.iter().filter(|d| other.dims.contains(d)) {
            align(&mut a, &mut b, dim)?;
        }
        let mut dims = a.dims.clone();
        dims.extend(b.dims.iter().filter(|d| !a.dims.contains(d)).cloned());
        let a_data = expand(&a, &dims);
        let b_data = expand(&b, &dims);
        let data = a_data.binary(op, &b_data);
        data.check()?;
        let mut coords = b.coords.clone();
        coords.extend(a.coords.clone());
        Ok(DataArray {
            name: if self.name == other.name {
                self.name.clone()
            } else {
                String::new()
            },
            dims,
            data,
            coords,
            attrs: Attrs::new(),
        })
    }

    /// `self op value` elementwise; a real array keeps its element type (the value is
    /// taken in it, as NumPy does with Python numbers).
    pub fn binary_scalar(&self, op: BinaryOp, value: f64) -> DataArray {
        let data = self.data.binary(op, same_type(&self.data, value));
        DataArray {
            data,
            attrs: Attrs::new(),
            ..self.clone()
        }
    }

    /// Computes the data into one `ndarray` on the client.
    pub fn compute<T: Element>(&self, client: &Client) -> Result<ArrayD<T>> {
        self.data.compute(client)
    }

    /// Computes the data and keeps it on the workers.
    pub fn persist(&self, client: &Client) -> Result<DataArray> {
        Ok(DataArray {
            data: self.data.persist(client)?,
            ..self.clone()
        })
    }
}

/// `value` as a scalar of the array's element type when that is real (so `f32` data stays
/// `f32`), else as `f64`.
fn same_type(data: &Array, value: f64) -> Scalar {
    match data.dtype() {
        DType::F32 => Scalar::F32(value as f32),
        _ => Scalar::F64(value),
    }
}

/// Makes `a` and `b` agree along `dim`: equal coordinates are kept, different ones cut to
/// their common labels.
fn align(a: &mut DataArray, b: &mut DataArray, dim: &str) -> Result<()> {
    let (na, nb) = (a.shape()[a.axis(dim)?], b.shape()[b.axis(dim)?]);
    match (a.coords.get(dim), b.coords.get(dim)) {
        (Some(ca), Some(cb)) if ca.values.to_f64() != cb.values.to_f64() => {
            let (la, lb) = (ca.values.to_f64(), cb.values.to_f64());
            let common: Vec<f64> = la.iter().copied().filter(|x| lb.contains(x)).collect();
            let run = |labels: &[f64]| -> Option<usize> {
                let first = labels.iter().position(|x| Some(x) == common.first())?;
                (labels.get(first..first + common.len())? == common.as_slice()).then_some(first)
            };
            let (Some(sa), Some(sb)) = (run(&la), run(&lb)) else {
                return Err(Error::Config(format!(
                    "`{}` and `{}` have different labels along `{dim}` whose common ones are \
                     not a run of positions in both; select matching labels with sel first",
                    a.name, b.name
                )));
            };
            let k = common.len();
            *a = a.isel(dim, sa..sa + k)?;
            *b = b.isel(dim, sb..sb + k)?;
            Ok(())
        }
        _ if na != nb => Err(Error::Config(format!(
            "`{}` and `{}` have dimension `{dim}` of lengths {na} and {nb} and no labels to \
             align them by; select equal lengths with isel first",
            a.name, b.name
        ))),
        _ => Ok(()),
    }
}

/// The data of `x` with its axes in the order of `dims` (a superset of its dimensions) and
/// length-1 axes where it lacks one, ready to broadcast.
fn expand(x: &DataArray, dims: &[String]) -> Array {
    let mine: Vec<&String> = dims.iter().filter(|d| x.dims.contains(d)).collect();
    let perm: Vec<usize> = mine
        .iter()
        .map(|d| {
            x.dims
                .iter()
                .position(|e| e == *d)
                .expect("a dimension of x")
        })
        .collect();
    let data = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        x.data.clone()
    } else {
        x.data.transpose(&perm)
    };
    if mine.len() == dims.len() {
        return data;
    }
    let shape: Vec<isize> = dims
        .iter()
        .map(|d| match x.dims.iter().position(|e| e == d) {
            Some(a) => x.data.shape()[a] as isize,
            None => 1,
        })
        .collect();
    data.reshape(&shape)
}

/// `op` as xarray computes it by default (`skipna=True`): NaN skipped, in one pass.
fn nan_reduce(x: &Array, op: ReduceOp, axes: &[isize]) -> Array {
    let op = match op {
        ReduceOp::Sum => ReduceOp::NanSum,
        ReduceOp::Mean => ReduceOp::NanMean,
        ReduceOp::Min => ReduceOp::NanMin,
        ReduceOp::Max => ReduceOp::NanMax,
        ReduceOp::Var(d) => ReduceOp::NanVar(d),
        ReduceOp::Std(d) => ReduceOp::NanStd(d),
        op => op,
    };
    x.reduce(op, Some(axes), false)
}

macro_rules! operators {
    ($($trait:ident, $method:ident, $op:expr;)*) => {$(
        impl std::ops::$trait<&DataArray> for &DataArray {
            type Output = Result<DataArray>;
            fn $method(self, other: &DataArray) -> Result<DataArray> {
                self.binary($op, other)
            }
        }
        impl std::ops::$trait<f64> for &DataArray {
            type Output = DataArray;
            fn $method(self, value: f64) -> DataArray {
                self.binary_scalar($op, value)
            }
        }
    )*};
}

operators! {
    Add, add, BinaryOp::Add;
    Sub, sub, BinaryOp::Sub;
    Mul, mul, BinaryOp::Mul;
    Div, div, BinaryOp::Div;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array;
    use ndarray::{Array2, arr1};

    fn t() -> DataArray {
        let data = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f64).into_dyn();
        DataArray::new("t", array::from_array(&data, &[2, 2]), &["time", "x"])
            .unwrap()
            .with_coord("time", vec![0i64, 1, 2, 3])
            .unwrap()
            .with_coord("x", vec![30.0, 20.0, 10.0])
            .unwrap()
            .with_attr("units", "K")
    }

    #[test]
    fn selection_keeps_labels_in_step() {
        let x = t().sel("x", Label::Between(25.0, 10.0)).unwrap();
        assert_eq!(x.shape(), &[4, 2]);
        assert_eq!(x.coord("x").unwrap().values, Values::F64(vec![20.0, 10.0]));
        let one = t().isel("time", 2).unwrap();
        assert_eq!(one.dims(), ["x"]);
        assert!(one.coord("time").is_none());
        assert_eq!(one.attrs()["units"], Attr::from("K"));
        let every = t()
            .isel("time", Isel::Span(Span::new(None, None, 2)))
            .unwrap();
        assert_eq!(every.coord("time").unwrap().values, Values::I64(vec![0, 2]));
        let err = t().isel("depth", 0).unwrap_err().to_string();
        assert!(err.contains("no dimension `depth`"), "{err}");
    }

    #[test]
    fn arithmetic_matches_by_name_and_label() {
        let row = DataArray::new(
            "r",
            array::from_array(&arr1(&[1.0, 2.0]).into_dyn(), &[2]),
            &["x"],
        )
        .unwrap()
        .with_coord("x", vec![20.0, 10.0])
        .unwrap();
        let sum = (&t() + &row).unwrap();
        assert_eq!(sum.dims(), ["time", "x"]);
        assert_eq!(sum.shape(), &[4, 2]);
        let flipped = (&row + &t()).unwrap();
        assert_eq!(flipped.dims(), ["x", "time"]);
        let one = row.clone().with_coord("x", vec![5.0, 20.0]).unwrap();
        assert_eq!((&t() + &one).unwrap().shape(), &[4, 1]);
        let apart = row.clone().with_coord("x", vec![10.0, 30.0]).unwrap();
        assert!((&t() + &apart).is_err());
    }

    #[test]
    fn reductions_drop_their_dimensions() {
        let m = t().mean("time").unwrap();
        assert_eq!(m.dims(), ["x"]);
        assert!(m.coord("time").is_none() && m.coord("x").is_some());
        assert!(m.attrs().is_empty());
        assert!(t().mean("depth").is_err());
    }
}
