//! Labelled datasets, xarray's model for the part batch jobs use: named variables as
//! [`Array`]s with dimension names, coordinates (the labels along a dimension, held by
//! the client) and attributes; selection by position ([`Dataset::isel`]) and by label
//! ([`Dataset::sel`]), reductions by dimension name ([`Dataset::mean`]) and by group
//! ([`DataArray::groupby`], e.g. a monthly climatology), arithmetic
//! between [`DataArray`]s matched by dimension name, and netCDF and Zarr files read and
//! written with their names, coordinates and attributes (the data by the workers).
//!
//! What is decoded on opening, as xarray does: values equal to `_FillValue` or
//! `missing_value` become NaN and packed values are unpacked (`scale_factor`,
//! `add_offset`); integers so decoded become `float64`. Times stay numbers with their
//! `units` attribute (xarray's `decode_times=False`). Coordinates are the 1-D variables
//! named like their dimension; other variables, including xarray's non-index
//! coordinates, are data variables.
//!
//! ```
//! use mpidask::array;
//! use mpidask::dataset::{DataArray, Dataset, Label};
//! mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
//!     let t = array::random::uniform(250.0, 300.0, &[24, 4, 8], &[6, 4, 8], 1);
//!     let t = DataArray::new("t", t, &["time", "lat", "lon"])
//!         .unwrap()
//!         .with_coord("lat", vec![60.0, 30.0, 0.0, -30.0])
//!         .unwrap()
//!         .with_attr("units", "K");
//!     let ds = Dataset::new().with(t).unwrap().with_attr("title", "demo");
//!     let tropics = ds.sel("lat", Label::Between(30.0, -30.0)).unwrap();
//!     let climate = tropics.mean("time").unwrap().with_attr("title", "tropical mean");
//!     let path = std::env::temp_dir().join(format!("doc-ds-{}.nc", std::process::id()));
//!     climate.to_netcdf(client, &path).unwrap();
//!     let back = Dataset::open_netcdf(&path).unwrap();
//!     assert_eq!(back.get("t").unwrap().dims(), ["lat", "lon"]);
//!     assert_eq!(back.attrs()["title"].as_str(), Some("tropical mean"));
//!     let lat = &back.coord("lat").unwrap().values;
//!     assert_eq!(lat.to_f64(), [30.0, 0.0, -30.0]);
//!     std::fs::remove_file(&path).unwrap();
//! });
//! ```

// Without the file formats, what reads and writes them is unused.
#![cfg_attr(not(any(feature = "zarr", feature = "netcdf")), allow(dead_code))]

mod coord;
mod data_array;
mod groupby;
#[cfg(feature = "netcdf")]
mod netcdf;
#[cfg(feature = "zarr")]
mod zarr;

pub use crate::array::{Attr, Attrs};
pub use coord::{Coord, Isel, Label, Values};
pub use data_array::DataArray;
pub use groupby::{GroupBy, concat};

use crate::array::{self, Array, DType, ReduceOp, Scalar};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// `span` resolved on dimension `dim` of length `n` for `isel`: first index, step, length.
/// A negative step is refused: a dataset's coordinates stay in their order.
fn resolve_upwards(span: array::Span, n: usize, dim: &str) -> Result<(usize, usize, usize)> {
    let (start, step, len, reverse) = array::resolve_span(span, n)
        .map_err(|why| Error::Config(format!("isel `{dim}`: {why}")))?;
    if reverse {
        return Err(Error::Config(format!(
            "isel `{dim}`: step {} is negative; datasets select upwards only (a reversed \
             array: `.data().slice(..)` with the negative step)",
            span.step
        )));
    }
    Ok((start, step, len))
}

/// Named variables sharing dimensions and coordinates, with attributes (xarray's
/// `Dataset`).
#[derive(Clone, Default)]
pub struct Dataset {
    /// The data variables, without coordinates (the dataset holds those).
    vars: BTreeMap<String, DataArray>,
    coords: BTreeMap<String, Coord>,
    attrs: Attrs,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// xarray's summary: dimensions, coordinates, data variables, attributes.
impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims()
            .iter()
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        writeln!(f, "Dataset\nDimensions: ({})", dims.join(", "))?;
        writeln!(f, "Coordinates:")?;
        for (dim, c) in &self.coords {
            let v = c.values.to_f64();
            let (first, last) = (v.first().copied(), v.last().copied());
            writeln!(
                f,
                "  * {dim} ({dim}) {} {:?} .. {:?}",
                c.values.dtype(),
                first.unwrap_or(f64::NAN),
                last.unwrap_or(f64::NAN)
            )?;
        }
        writeln!(f, "Data variables:")?;
        for (name, v) in &self.vars {
            writeln!(
                f,
                "    {name} ({}) {} chunks {:?}",
                v.dims.join(", "),
                v.dtype(),
                v.data
                    .chunks()
                    .iter()
                    .map(|c| c.first().copied().unwrap_or(0))
                    .collect::<Vec<_>>()
            )?;
        }
        if !self.attrs.is_empty() {
            writeln!(f, "Attributes:")?;
            for (k, v) in &self.attrs {
                writeln!(f, "    {k}: {}", v.to_json())?;
            }
        }
        Ok(())
    }
}

impl Dataset {
    /// An empty dataset.
    pub fn new() -> Dataset {
        Dataset::default()
    }

    /// With `var` added ([`insert`](Self::insert)).
    pub fn with(mut self, var: DataArray) -> Result<Dataset> {
        self.insert(var)?;
        Ok(self)
    }

    /// With attribute `key` set to `value`.
    pub fn with_attr(mut self, key: &str, value: impl Into<Attr>) -> Dataset {
        self.attrs.insert(key.to_string(), value.into());
        self
    }

    /// With coordinate `coord` along `dim` (its length must match the dimension's, if
    /// variables have it).
    pub fn with_coord(mut self, dim: &str, coord: Coord) -> Result<Dataset> {
        if let Some(&n) = self.dims().get(dim)
            && n != coord.values.len()
        {
            return Err(Error::Config(format!(
                "{} labels for dimension `{dim}` of length {n}",
                coord.values.len()
            )));
        }
        if self.vars.contains_key(dim) {
            return Err(Error::Config(format!(
                "`{dim}` names a data variable; a coordinate takes its dimension's name"
            )));
        }
        self.coords.insert(dim.to_string(), coord);
        Ok(self)
    }

    /// Adds (or replaces) data variable `var` under its name. Its dimensions must have the
    /// lengths they have in the dataset, and its coordinates the dataset's labels (a new
    /// one is added to the dataset).
    pub fn insert(&mut self, var: DataArray) -> Result<()> {
        let name = var.name.clone();
        if name.is_empty() || name.contains('/') {
            return Err(Error::Config(format!(
                "`{name}` cannot name a variable (a name like `temperature`); rename it"
            )));
        }
        let dims = self.dims_without(&name);
        if dims.contains_key(&name) || var.dims.contains(&name) {
            return Err(Error::Config(format!(
                "`{name}` names a dimension; a data variable needs another name (rename it)"
            )));
        }
        for (dim, &n) in var.dims.iter().zip(var.shape()) {
            if let Some(&m) = dims.get(dim)
                && m != n
            {
                return Err(Error::Config(format!(
                    "`{name}` has dimension `{dim}` of length {n} where the dataset's is {m}; \
                     select the same positions with isel or sel first"
                )));
            }
        }
        for (dim, c) in &var.coords {
            if let Some(mine) = self.coords.get(dim)
                && mine.values.to_f64() != c.values.to_f64()
            {
                return Err(Error::Config(format!(
                    "`{name}` has other labels along `{dim}` than the dataset; select the \
                     dataset's labels with sel first"
                )));
            }
        }
        for (dim, c) in &var.coords {
            self.coords.entry(dim.clone()).or_insert_with(|| c.clone());
        }
        let mut bare = var;
        bare.coords.clear();
        self.vars.insert(name, bare);
        Ok(())
    }

    /// Data variable `name` with the coordinates along its dimensions.
    pub fn get(&self, name: &str) -> Result<DataArray> {
        let var = self.vars.get(name).ok_or_else(|| {
            Error::Config(format!(
                "no data variable `{name}`; the dataset holds {}",
                if self.vars.is_empty() {
                    "none".to_string()
                } else {
                    self.names().join(", ")
                }
            ))
        })?;
        let mut var = var.clone();
        var.coords = self
            .coords
            .iter()
            .filter(|(d, _)| var.dims.contains(d))
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect();
        Ok(var)
    }

    /// The names of the data variables, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.vars.keys().map(String::as_str).collect()
    }

    /// Every dimension's length.
    pub fn dims(&self) -> BTreeMap<String, usize> {
        self.dims_without("")
    }

    fn dims_without(&self, skip: &str) -> BTreeMap<String, usize> {
        let mut dims: BTreeMap<String, usize> = self
            .coords
            .iter()
            .map(|(d, c)| (d.clone(), c.values.len()))
            .collect();
        for (name, v) in &self.vars {
            if name != skip {
                for (d, &n) in v.dims.iter().zip(v.shape()) {
                    dims.insert(d.clone(), n);
                }
            }
        }
        dims
    }

    /// The coordinate along `dim`, if there is one.
    pub fn coord(&self, dim: &str) -> Option<&Coord> {
        self.coords.get(dim)
    }

    /// The coordinates, by dimension.
    pub fn coords(&self) -> &BTreeMap<String, Coord> {
        &self.coords
    }

    /// The dataset's own attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// Every data variable replaced by `f(variable)` (with its coordinates); the
    /// attributes are kept.
    pub fn map(&self, f: impl Fn(&DataArray) -> Result<DataArray>) -> Result<Dataset> {
        let mut out = Dataset {
            vars: BTreeMap::new(),
            coords: BTreeMap::new(),
            attrs: self.attrs.clone(),
        };
        for name in self.vars.keys() {
            out.insert(f(&self.get(name)?)?)?;
        }
        Ok(out)
    }

    fn check_dim(&self, dim: &str) -> Result<()> {
        if self.dims().contains_key(dim) {
            return Ok(());
        }
        let dims: Vec<String> = self.dims().into_keys().collect();
        Err(Error::Config(format!(
            "the dataset has no dimension `{dim}`; its dimensions are {}",
            if dims.is_empty() {
                "none".to_string()
            } else {
                dims.join(", ")
            }
        )))
    }

    /// Positions `sel` along `dim` in every variable and coordinate that has it (xarray's
    /// `isel`).
    pub fn isel(&self, dim: &str, sel: impl Into<Isel>) -> Result<Dataset> {
        self.check_dim(dim)?;
        let sel = sel.into();
        let n = self.dims()[dim];
        let mut coords = BTreeMap::new();
        for (d, c) in &self.coords {
            let c = if d != dim {
                c.clone()
            } else {
                match sel {
                    Isel::At(_) => continue,
                    Isel::Span(span) => {
                        let (start, step, len) = resolve_upwards(span, n, dim)?;
                        Coord {
                            values: c.values.select(start, step, len),
                            attrs: c.attrs.clone(),
                        }
                    }
                }
            };
            coords.insert(d.clone(), c);
        }
        let mut out = Dataset {
            vars: BTreeMap::new(),
            coords,
            attrs: self.attrs.clone(),
        };
        for (name, v) in &self.vars {
            let v = if v.dims.iter().any(|d| d == dim) {
                v.isel(dim, sel)?
            } else {
                v.clone()
            };
            out.vars.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// Labels `label` along `dim`, on its coordinate (xarray's `sel`).
    pub fn sel(&self, dim: &str, label: impl Into<Label>) -> Result<Dataset> {
        self.check_dim(dim)?;
        let coord = self.coords.get(dim).ok_or_else(|| {
            Error::Config(format!(
                "sel: the dataset has no coordinate along `{dim}`; select positions with isel"
            ))
        })?;
        let positions = coord::locate(dim, &coord.values, label.into())
            .map_err(|why| Error::Config(format!("sel: {why}")))?;
        self.isel(dim, positions)
    }

    /// `op` over `dims` (every dimension if empty) in each data variable, over those of
    /// them it has ([`DataArray::reduce`]: NaN skipped); a variable with none of them is
    /// kept as it is. Coordinates along reduced dimensions are dropped; the dataset's
    /// attributes are dropped, as xarray does.
    pub fn reduce(&self, op: ReduceOp, dims: &[&str]) -> Result<Dataset> {
        for d in dims {
            self.check_dim(d)?;
        }
        let all: Vec<String> = self.dims().into_keys().collect();
        let reduced: Vec<&str> = if dims.is_empty() {
            all.iter().map(String::as_str).collect()
        } else {
            dims.to_vec()
        };
        let mut out = Dataset {
            vars: BTreeMap::new(),
            coords: self
                .coords
                .iter()
                .filter(|(d, _)| !reduced.contains(&d.as_str()))
                .map(|(d, c)| (d.clone(), c.clone()))
                .collect(),
            attrs: Attrs::new(),
        };
        for (name, v) in &self.vars {
            let mine: Vec<&str> = reduced
                .iter()
                .copied()
                .filter(|d| v.dims.iter().any(|e| e == d))
                .collect();
            let v = if mine.is_empty() {
                v.clone()
            } else {
                v.reduce(op, &mine)?
            };
            out.vars.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// Mean along `dim` of each data variable, NaN skipped.
    pub fn mean(&self, dim: &str) -> Result<Dataset> {
        self.reduce(ReduceOp::Mean, &[dim])
    }
    /// Sum along `dim`, NaN skipped.
    pub fn sum(&self, dim: &str) -> Result<Dataset> {
        self.reduce(ReduceOp::Sum, &[dim])
    }
    /// Minimum along `dim`, NaN skipped.
    pub fn min(&self, dim: &str) -> Result<Dataset> {
        self.reduce(ReduceOp::Min, &[dim])
    }
    /// Maximum along `dim`, NaN skipped.
    pub fn max(&self, dim: &str) -> Result<Dataset> {
        self.reduce(ReduceOp::Max, &[dim])
    }
    /// Standard deviation along `dim` (`ddof` 0), NaN skipped.
    pub fn std(&self, dim: &str) -> Result<Dataset> {
        self.reduce(ReduceOp::Std(0), &[dim])
    }

    /// The coordinates and data variables, as the writers take them: coordinates first.
    fn labelled(&self) -> Vec<(String, Array, Vec<String>, Attrs)> {
        let mut out: Vec<(String, Array, Vec<String>, Attrs)> = self
            .coords
            .iter()
            .map(|(d, c)| {
                (
                    d.clone(),
                    c.values.to_array(),
                    vec![d.clone()],
                    c.attrs.clone(),
                )
            })
            .collect();
        out.extend(self.vars.iter().map(|(name, v)| {
            (
                name.clone(),
                v.data.clone(),
                v.dims.clone(),
                v.attrs.clone(),
            )
        }));
        out
    }
}

impl DataArray {
    /// A dataset of this one variable and its coordinates.
    pub fn into_dataset(self) -> Result<Dataset> {
        Dataset::new().with(self)
    }
}

/// Decodes what CF conventions encode in a variable, as xarray does on opening: values
/// equal to `fill` (else `_FillValue`, else `missing_value`) become NaN, then packed values
/// are unpacked (`x * scale_factor + add_offset`); integers so decoded become `float64`.
/// The attributes applied are removed (xarray moves them to `encoding`).
pub(crate) fn decode(data: Array, attrs: &mut Attrs, fill: Option<f64>) -> Array {
    let fill_attr = attrs.remove("_FillValue").and_then(|a| a.as_f64());
    let missing = attrs.remove("missing_value").and_then(|a| a.as_f64());
    let fill = fill.or(fill_attr).or(missing);
    let scale = attrs.remove("scale_factor").and_then(|a| a.as_f64());
    let offset = attrs.remove("add_offset").and_then(|a| a.as_f64());
    let dtype = data.dtype();
    if dtype == DType::Bool || (fill.is_none() && scale.is_none() && offset.is_none()) {
        return data;
    }
    let real = dtype.float();
    let scalar = |v: f64| match real {
        DType::F32 => Scalar::F32(v as f32),
        _ => Scalar::F64(v),
    };
    let mut out = data.astype(real);
    if let Some(f) = fill.filter(|f| !f.is_nan()) {
        let raw = match dtype {
            DType::F32 => Scalar::F32(f as f32),
            DType::F64 => Scalar::F64(f),
            _ => Scalar::I64(f as i64),
        };
        out = array::where_(&data.eq(raw), scalar(f64::NAN), &out);
    }
    if let Some(s) = scale {
        out = &out * scalar(s);
    }
    if let Some(o) = offset {
        out = &out + scalar(o);
    }
    out
}

/// Takes the CF attributes `decode` applies from `attrs` and decodes coordinate labels
/// with them.
pub(crate) fn decode_values(values: Values, attrs: &mut Attrs, fill: Option<f64>) -> Values {
    let fill_attr = attrs.remove("_FillValue").and_then(|a| a.as_f64());
    let missing = attrs.remove("missing_value").and_then(|a| a.as_f64());
    let scale = attrs.remove("scale_factor").and_then(|a| a.as_f64());
    let offset = attrs.remove("add_offset").and_then(|a| a.as_f64());
    values.decode(fill.or(fill_attr).or(missing), scale, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn var(name: &str, dims: &[&str], shape: (usize, usize)) -> DataArray {
        let data = Array2::<f64>::zeros(shape).into_dyn();
        DataArray::new(name, array::from_array(&data, &[2, 2]), dims).unwrap()
    }

    #[test]
    fn variables_share_dimensions_and_labels() {
        let a = var("a", &["time", "x"], (4, 3))
            .with_coord("x", vec![1.0, 2.0, 3.0])
            .unwrap();
        let b = var("b", &["x", "y"], (3, 2));
        let ds = Dataset::new().with(a).unwrap().with(b).unwrap();
        assert_eq!(ds.dims()["x"], 3);
        assert_eq!(ds.get("b").unwrap().coord("x").unwrap().values.len(), 3);
        let longer = var("c", &["time", "y"], (5, 2));
        let err = ds.clone().with(longer).unwrap_err().to_string();
        assert!(err.contains("`time` of length 5"), "{err}");
        let relabelled = var("d", &["time", "x"], (4, 3))
            .with_coord("x", vec![1.0, 2.0, 4.0])
            .unwrap();
        assert!(ds.clone().with(relabelled).is_err());
        let named_like_dim = var("x", &["time", "y"], (4, 2));
        assert!(ds.clone().with(named_like_dim).is_err());
        assert!(ds.get("zz").unwrap_err().to_string().contains("holds a, b"));
    }

    #[test]
    fn dataset_selection_and_reduction_follow_each_variable() {
        let a = var("a", &["time", "x"], (4, 3))
            .with_coord("x", vec![1.0, 2.0, 3.0])
            .unwrap();
        let b = var("b", &["x", "y"], (3, 2));
        let ds = Dataset::new().with(a).unwrap().with(b).unwrap();
        let some = ds.sel("x", Label::Between(2.0, 3.0)).unwrap();
        assert_eq!(some.dims()["x"], 2);
        assert_eq!(some.get("b").unwrap().shape(), &[2, 2]);
        let one = ds.isel("x", 0).unwrap();
        assert!(one.coord("x").is_none());
        assert_eq!(one.get("a").unwrap().dims(), ["time"]);
        let m = ds.mean("time").unwrap();
        assert_eq!(m.get("a").unwrap().dims(), ["x"]);
        assert_eq!(m.get("b").unwrap().dims(), ["x", "y"]);
        assert!(ds.mean("depth").is_err());
    }
}
