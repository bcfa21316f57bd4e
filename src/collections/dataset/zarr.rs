//! Datasets in Zarr stores (format 2 and 3) as xarray lays them out: one array per
//! variable at the store's root, dimension names in `dimension_names` (format 3) or the
//! `_ARRAY_DIMENSIONS` attribute (format 2), the dataset's attributes on the root group,
//! and the metadata consolidated in the root (what `xarray.open_zarr` reads first).

use super::{Coord, DataArray, Dataset, Values, decode, decode_values};
use crate::array::{self, Attr, Attrs, Labelled, ZarrOptions};
use crate::client::Client;
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;
use std::path::Path;

/// A JSON file, or `None` if there is none.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Config(format!("{}: not valid JSON ({e})", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// A fill value as Zarr and xarray write it: a number, `"NaN"`, `"Infinity"`,
/// `"-Infinity"`, or (xarray's `_FillValue` of a format 3 real array) the base64 of its
/// little-endian bytes.
fn fill_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            encoded => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()?;
                match bytes.len() {
                    8 => Some(f64::from_le_bytes(bytes.try_into().ok()?)),
                    4 => Some(f32::from_le_bytes(bytes.try_into().ok()?).into()),
                    _ => None,
                }
            }
        },
        _ => None,
    }
}

/// What the store says about one array: its dimension names, attributes and the fill
/// value xarray masks with.
struct Described {
    dims: Vec<String>,
    attrs: Attrs,
    fill: Option<f64>,
}

fn describe(store: &Path, name: &str) -> Result<Option<Described>> {
    let dir = store.join(name);
    let whose = format!("{}", dir.display());
    if let Some(meta) = read_json(&dir.join("zarr.json"))? {
        if meta["node_type"] != "array" {
            return Ok(None);
        }
        let mut attrs: Attrs = meta["attributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Attr::from_json(v)))
                    .collect()
            })
            .unwrap_or_default();
        // xarray masks a format 3 array with its `_FillValue` attribute, not the array's
        // fill value.
        let fill = meta["attributes"].get("_FillValue").and_then(fill_number);
        attrs.remove("_FillValue");
        let dims = match meta["dimension_names"].as_array() {
            Some(names) if names.iter().all(Value::is_string) => names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
            _ => {
                return Err(Error::Config(format!(
                    "{whose}: the array has no dimension names (written by zarr without \
                     xarray?); open it with array::from_zarr, or name its dimensions in \
                     `dimension_names`"
                )));
            }
        };
        return Ok(Some(Described { dims, attrs, fill }));
    }
    let Some(meta) = read_json(&dir.join(".zarray"))? else {
        return Ok(None);
    };
    let zattrs = read_json(&dir.join(".zattrs"))?.unwrap_or(Value::Null);
    let dims = match zattrs.get("_ARRAY_DIMENSIONS").and_then(Value::as_array) {
        Some(names) if names.iter().all(Value::is_string) => names
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        _ => {
            return Err(Error::Config(format!(
                "{whose}: the array has no `_ARRAY_DIMENSIONS` attribute (written by zarr \
                 without xarray?); open it with array::from_zarr"
            )));
        }
    };
    let attrs: Attrs = zattrs
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "_ARRAY_DIMENSIONS")
                .map(|(k, v)| (k.clone(), Attr::from_json(v)))
                .collect()
        })
        .unwrap_or_default();
    // xarray masks a format 2 array with its fill value.
    let fill = fill_number(&meta["fill_value"]);
    Ok(Some(Described { dims, attrs, fill }))
}

impl Dataset {
    /// The Zarr store at `path` (format 2 or 3, as xarray's `to_zarr` writes it) as a
    /// dataset: each array at the store's root is a variable with the dimension names the
    /// store gives; a 1-D one named like its dimension is a coordinate, read here; the
    /// others are read by the workers when computed, in the store's chunks. Fill values
    /// and packing are decoded as xarray does (see the [module](crate::dataset)). An array
    /// whose element type arrays cannot hold (strings, complex numbers) and groups below
    /// the root are left out with a warning naming them.
    pub fn open_zarr(path: impl AsRef<Path>) -> Result<Dataset> {
        let path = path.as_ref();
        if !path.is_dir() {
            return Err(Error::Config(format!(
                "{}: no such directory; a Zarr store is a directory (written by xarray's \
                 to_zarr or Dataset::to_zarr)",
                path.display()
            )));
        }
        let path = path.canonicalize().map_err(Error::io(path))?;
        let root = match read_json(&path.join("zarr.json"))? {
            Some(meta) => meta["attributes"].clone(),
            None => read_json(&path.join(".zattrs"))?.unwrap_or(Value::Null),
        };
        let mut ds = Dataset::new();
        if let Some(m) = root.as_object() {
            ds.attrs = m
                .iter()
                .map(|(k, v)| (k.clone(), Attr::from_json(v)))
                .collect();
        }
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .map_err(Error::io(&path))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut vars = Vec::new();
        let mut groups = Vec::new();
        let mut skipped = Vec::new();
        for name in names {
            let Some(Described {
                dims,
                mut attrs,
                fill,
            }) = describe(&path, &name)?
            else {
                if ["zarr.json", ".zgroup"]
                    .iter()
                    .any(|f| path.join(&name).join(f).is_file())
                {
                    groups.push(name);
                }
                continue;
            };
            let data = match array::from_zarr(&path, &name) {
                Ok(data) => data,
                Err(e) => {
                    skipped.push(format!("{name} ({e})"));
                    continue;
                }
            };
            if dims.len() != data.ndim() {
                return Err(Error::Config(format!(
                    "{}: {} dimension names ({dims:?}) for an array of {} dimensions",
                    path.join(&name).display(),
                    dims.len(),
                    data.ndim()
                )));
            }
            if dims.len() == 1 && dims[0] == name && data.dtype() != array::DType::Bool {
                let (block, _) = array::read_zarr_whole(&path, &name)?;
                let values = match block {
                    array::Block::F64(a) => Values::F64(a.iter().copied().collect()),
                    array::Block::F32(a) => Values::F32(a.iter().copied().collect()),
                    array::Block::I64(a) => Values::I64(a.iter().copied().collect()),
                    array::Block::I32(a) => Values::I64(a.iter().map(|&v| v.into()).collect()),
                    array::Block::U8(a) => Values::I64(a.iter().map(|&v| v.into()).collect()),
                    array::Block::Bool(_) => unreachable!("booleans are not coordinates"),
                };
                let values = decode_values(values, &mut attrs, fill);
                ds.coords.insert(name, Coord { values, attrs });
            } else {
                let data = decode(data, &mut attrs, fill);
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
            log::warn!(
                "{}: left out of the dataset: {}",
                path.display(),
                skipped.join("; ")
            );
        }
        if !groups.is_empty() {
            log::warn!(
                "{}: groups left out of the dataset (open each with Dataset::open_zarr on \
                 its directory): {}",
                path.display(),
                groups.join(", ")
            );
        }
        Ok(ds)
    }

    /// Computes every data variable in one graph and writes the dataset to a new Zarr
    /// store at `path` in format 3 with Zstandard compression
    /// ([`to_zarr_with`](Self::to_zarr_with) for other options).
    pub fn to_zarr(&self, client: &Client, path: impl AsRef<Path>) -> Result<()> {
        self.to_zarr_with(client, path, &ZarrOptions::default())
    }

    /// Computes every data variable in one graph and writes the dataset to a new Zarr
    /// store at `path` as xarray does: each variable an array at the root with its
    /// dimension names and attributes (chunks written by the workers holding them), then
    /// the root group with the dataset's attributes and the consolidated metadata, last,
    /// so a store whose writing stopped does not open as a complete one. An existing
    /// store is an error unless `options.overwrite`, which replaces it (a directory that
    /// is not a Zarr store is never removed).
    pub fn to_zarr_with(
        &self,
        client: &Client,
        path: impl AsRef<Path>,
        options: &ZarrOptions,
    ) -> Result<()> {
        let path = path.as_ref();
        if path.exists() {
            let is_store = ["zarr.json", ".zgroup", ".zmetadata"]
                .iter()
                .any(|f| path.join(f).is_file());
            let empty = path
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty && !is_store {
                return Err(Error::Config(format!(
                    "{}: exists and is not a Zarr store; choose another path, or remove it",
                    path.display()
                )));
            }
            if is_store && !options.overwrite {
                return Err(Error::Config(format!(
                    "{}: a Zarr store is already there; write with \
                     ZarrOptions::default().overwrite(true) to replace it, or choose \
                     another path",
                    path.display()
                )));
            }
            if is_store {
                std::fs::remove_dir_all(path).map_err(Error::io(path))?;
            }
        }
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
        array::write_zarr(client, path, &stored, Some(&self.attrs), options)
    }
}

impl DataArray {
    /// Writes this variable and its coordinates to a new Zarr store
    /// ([`Dataset::to_zarr`]).
    pub fn to_zarr(&self, client: &Client, path: impl AsRef<Path>) -> Result<()> {
        self.clone().into_dataset()?.to_zarr(client, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_values_in_every_spelling() {
        assert!(fill_number(&Value::from("NaN")).unwrap().is_nan());
        assert!(fill_number(&Value::from("AAAAAAAA+H8=")).unwrap().is_nan());
        assert_eq!(fill_number(&Value::from(-9999)), Some(-9999.0));
        assert_eq!(
            fill_number(&Value::from("-Infinity")),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(fill_number(&Value::Null), None);
    }
}
