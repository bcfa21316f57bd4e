//! Datasets in netCDF files: opened with their dimension names, coordinates and
//! attributes (the data variables read by the workers when computed), and written as one
//! netCDF-4 file keeping them (the data written by the workers holding it).

use super::{DataArray, Dataset, Values, decode, decode_values};
use crate::array::{self, Attr, Attrs, DType, Labelled};
use crate::client::Client;
use crate::error::{Error, Result};
use std::path::Path;

/// The attributes of a variable or file; an attribute whose value libnetcdf cannot read
/// is an error naming it.
fn attributes<'a>(list: impl Iterator<Item = netcdf::Attribute<'a>>, whose: &str) -> Result<Attrs> {
    list.map(|a| {
        let value = a.value().map_err(|e| {
            Error::Config(format!(
                "{whose}: attribute `{}` cannot be read: {e}",
                a.name()
            ))
        })?;
        Ok((a.name().to_string(), Attr::from_netcdf(value)))
    })
    .collect()
}

impl Dataset {
    /// The netCDF file at `path` (classic or netCDF-4) as a dataset: each 1-D variable
    /// named like its dimension is a coordinate, read here; every other variable is a data
    /// variable read by the workers when computed, in the chunks
    /// [`from_netcdf`](crate::array::from_netcdf) chooses. Fill values and packing are
    /// decoded (see the [module](crate::dataset)). A variable whose element type arrays cannot hold
    /// (strings, characters, compound types) is left out with a warning naming it.
    pub fn open_netcdf(path: impl AsRef<Path>) -> Result<Dataset> {
        hdf5_metno::silence_errors(true);
        let path = path.as_ref();
        let path = path.canonicalize().map_err(Error::io(path))?;
        let shown = path.display().to_string();
        let file = netcdf::open(&path).map_err(|e| {
            Error::Config(format!(
                "{shown}: not a netCDF file ({e}); written by netCDF4, xarray or \
                 Dataset::to_netcdf?"
            ))
        })?;
        let mut ds = Dataset::new();
        ds.attrs = attributes(file.attributes(), &shown)?;
        let mut vars = Vec::new();
        let mut skipped = Vec::new();
        for variable in file.variables() {
            let name = variable.name();
            let whose = format!("{shown} {name}");
            let dims: Vec<String> = variable.dimensions().iter().map(|d| d.name()).collect();
            let mut attrs = attributes(variable.attributes(), &whose)?;
            let data = match array::from_netcdf(&path, &name) {
                Ok(data) => data,
                Err(e) => {
                    skipped.push(format!("{name} ({e})"));
                    continue;
                }
            };
            if data.dtype() == DType::Bool {
                // xarray's mark of a boolean variable, applied.
                attrs.remove("dtype");
            }
            if dims.len() == 1 && dims[0] == name && data.dtype() != DType::Bool {
                let failed = |e: netcdf::Error| Error::Config(format!("{whose}: cannot read: {e}"));
                let values = match data.dtype() {
                    DType::F64 => Values::F64(variable.get_values::<f64, _>(..).map_err(failed)?),
                    DType::F32 => Values::F32(variable.get_values::<f32, _>(..).map_err(failed)?),
                    _ => Values::I64(variable.get_values::<i64, _>(..).map_err(failed)?),
                };
                let values = decode_values(values, &mut attrs, None);
                ds.coords.insert(name, super::Coord { values, attrs });
            } else {
                let data = decode(data, &mut attrs, None);
                let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
                let mut var = DataArray::new(&name, data, &dims)?;
                var.attrs = attrs;
                vars.push(var);
            }
        }
        for var in vars {
            ds.insert(var)?;
        }
        if !skipped.is_empty() {
            log::warn!("{shown}: left out of the dataset: {}", skipped.join("; "));
        }
        Ok(ds)
    }

    /// Computes every data variable in one graph and writes the dataset to a new
    /// netCDF-4 file at `path` (replacing one there once the new one is complete): the
    /// coordinates and data variables with their dimension names and attributes, and the
    /// dataset's attributes ([`store_netcdf`](crate::array::store_netcdf) for how).
    pub fn to_netcdf(&self, client: &Client, path: impl AsRef<Path>) -> Result<()> {
        let all = self.labelled();
        let stored: Vec<Labelled<'_>> = all
            .iter()
            .map(|(name, array, dims, attrs)| Labelled {
                name: name.clone(),
                array,
                dims: dims.clone(),
                attrs: attrs.clone(),
            })
            .collect();
        array::write_netcdf(client, path.as_ref(), &stored, &self.attrs)
    }
}

impl DataArray {
    /// Writes this variable and its coordinates to a new netCDF-4 file
    /// ([`Dataset::to_netcdf`]).
    pub fn to_netcdf(&self, client: &Client, path: impl AsRef<Path>) -> Result<()> {
        self.clone().into_dataset()?.to_netcdf(client, path)
    }
}
