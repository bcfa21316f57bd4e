//! Labelled datasets against Python's `xarray` (the pinned version in `target/pyenv`): a
//! dataset xarray writes to netCDF-4 and to Zarr format 3 and 2 (a descending coordinate,
//! packed integers with a fill value, NaN, attributes of every kind) opens in mpidask with
//! its names, coordinates and attributes, and selections, reductions by dimension name and
//! arithmetic aligned by name give xarray's values (a variable of strings is left out);
//! what mpidask writes opens in xarray
//! with the same names, coordinates, attributes and values. Local mode; `tests/mpi.rs`
//! writes and reads a dataset under mpirun.

#![cfg(all(feature = "zarr", feature = "netcdf"))]

mod support;

use mpidask::array::{Attr, DType, ZarrFormat, ZarrOptions};
use mpidask::dataset::{DataArray, Dataset, Isel, Label};
use ndarray::ArrayD;
use std::path::Path;
use support::python::run_python;
use support::stored::{local, npy, workdir};

/// What xarray writes, and its own results on the same data (opened with
/// `decode_times=False`, as mpidask keeps times as numbers).
const WRITE_DATASET: &str = "\
import sys, warnings, numpy as np, xarray as xr
warnings.simplefilter('ignore')
d = sys.argv[1]
rng = np.random.default_rng(3)
nt, ny, nx = 24, 10, 16
lat = np.linspace(45, -45, ny)
lon = np.arange(nx) * 22.5
time = np.arange(nt, dtype='i8') * 30
t = 280 + 10 * rng.standard_normal((nt, ny, nx))
t[3, 2, 5] = np.nan
t[:, 7, 1] = np.nan
p = 1000 + 20 * rng.standard_normal((nt, ny, nx))
p[5, 5, 5] = np.nan
elev = (rng.standard_normal((ny, nx)) * 100).astype('f4')
cloud = rng.integers(0, 101, size=(ny, nx)).astype('u1')
ds = xr.Dataset(
    {'t': (('time', 'lat', 'lon'), t, {'units': 'K', 'long_name': 'air temperature'}),
     'p': (('time', 'lat', 'lon'), p, {'units': 'hPa'}),
     'elev': (('lat', 'lon'), elev, {'units': 'm', 'valid_range': [-1000, 9000]}),
     'cloud': (('lat', 'lon'), cloud, {'units': '%'}),
     'label': (('lon',), np.array(['s%d' % i for i in range(nx)]))},
    coords={'time': ('time', time, {'units': 'days since 2000-01-01'}),
            'lat': ('lat', lat, {'units': 'degrees_north'}),
            'lon': ('lon', lon, {'units': 'degrees_east'})},
    attrs={'title': 'synthetic', 'version': 3, 'weights': [0.5, 1.5]})
packed = {'dtype': 'int16', 'scale_factor': 0.01, 'add_offset': 1000.0, '_FillValue': -32767}
ds.to_netcdf(d + '/ds.nc', encoding={'p': packed, 't': {'chunksizes': (6, 5, 8)}})
chunked = ds.chunk({'time': 5, 'lat': 4})
chunked.to_zarr(d + '/v3.zarr', zarr_format=3, encoding={'p': packed})
chunked.to_zarr(d + '/v2.zarr', zarr_format=2, encoding={'p': packed})
x = xr.open_dataset(d + '/ds.nc', decode_times=False)
t = x.t
def save(name, v):
    np.save(d + '/' + name + '.npy', np.asarray(v))
save('lat', x.lat.values)
save('t', t.values)
save('cloud', x.cloud.values)
save('p', x.p.values)
save('tropics_mean', t.sel(lat=slice(30, -30)).mean('time').values)
save('std_lon', t.isel(time=slice(2, 20, 3)).std('lon').values)
save('anom_max', (t - t.mean('time')).max('time').values)
save('elev_plus', (x.elev + t.isel(time=0).transpose('lon', 'lat')).values)
save('p_min', x.p.min('time').values)
save('point', t.sel(lon=90.0).sel(time=150).sel(lat=31, method='nearest').values)
joined = t.isel(lat=slice(0, 6)) + t.isel(lat=slice(3, 10))
save('join', joined.values)
save('join_lat', joined.lat.values)
save('var_time_lon', t.var(['time', 'lon']).values)
save('scaled', ((t - 273.15) * 2.0).mean('lat').values)
seasons = xr.DataArray((np.arange(nt) // 2) % 4, dims='time', name='season')
group_mean = t.groupby(seasons).mean()
save('group_mean', group_mean.values)
save('group_anom', (t.groupby(seasons) - group_mean).transpose('time', 'lat', 'lon').values)
print('written')
";

/// What mpidask wrote, checked by xarray against its own computation on the source file.
const CHECK_WRITTEN: &str = "\
import sys, warnings, numpy as np, xarray as xr
warnings.simplefilter('error')
d = sys.argv[1]
src = xr.open_dataset(d + '/ds.nc', decode_times=False)
sub = src.sel(lat=slice(30, -30))
exp = sub.mean('time')
exp['anom_std'] = (sub.t - sub.t.mean('time')).std('time')
exp['cloud_cover'] = sub.cloud
for path in ['out.nc', 'out3.zarr', 'out2.zarr']:
    got = xr.open_dataset(d + '/' + path) if path.endswith('.nc') else xr.open_zarr(d + '/' + path)
    assert set(got.data_vars) == {'t', 'p', 'elev', 'cloud', 'anom_std', 'cloud_cover'}, (path, got)
    assert set(got.coords) == {'lat', 'lon'}, (path, got.coords)
    for v in ['t', 'p', 'elev', 'cloud', 'anom_std', 'cloud_cover']:
        assert got[v].dims == ('lat', 'lon'), (path, v, got[v].dims)
        tol = 1e-6 if v == 'elev' else 1e-12
        np.testing.assert_allclose(got[v].values, exp[v].values, rtol=tol, equal_nan=True)
    assert got.elev.dtype == np.float32, got.elev.dtype
    # uint8 kept, as by xarray's mean over a dimension the variable lacks.
    assert got.cloud_cover.dtype == np.uint8 and got.cloud.dtype == np.uint8, (path, got)
    np.testing.assert_array_equal(got.lat.values, exp.lat.values)
    np.testing.assert_array_equal(got.lon.values, exp.lon.values)
    assert got.lat.attrs['units'] == 'degrees_north', got.lat.attrs
    assert got.anom_std.attrs == {'units': 'K', 'cell_methods': 'time: standard_deviation'}, got.anom_std.attrs
    assert got.elev.attrs['units'] == 'm', got.elev.attrs
    assert list(got.elev.attrs['valid_range']) == [-1000, 9000], got.elev.attrs
    assert got.attrs['title'] == 'climatology', got.attrs
    assert got.attrs['months'] == 24, got.attrs
    np.testing.assert_array_equal(got.attrs['bounds'], [30.0, -30.0])
print('ok')
";

/// `got` equals `want` within `tol` (relative), NaN where it is NaN.
fn close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol * w.abs().max(1.0);
        assert!(ok, "{what}: element {i}: {g} where xarray has {w}");
    }
}

fn opened(dir: &Path, name: &str) -> Dataset {
    let path = dir.join(name);
    if name.ends_with(".nc") {
        Dataset::open_netcdf(&path)
    } else {
        Dataset::open_zarr(&path)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn datasets_written_by_xarray_open_with_their_labels_and_values() {
    let dir = workdir("dataset-read");
    assert_eq!(run_python(WRITE_DATASET, &[&dir]).trim(), "written");
    let want = |name: &str| npy::<f64>(&dir.join(format!("{name}.npy")));
    local(|client| {
        for store in ["ds.nc", "v3.zarr", "v2.zarr"] {
            let ds = opened(&dir, store);
            let at = |what: &str| format!("{store}: {what}");
            // Names, lengths, coordinates and attributes.
            let dims: Vec<(String, usize)> = ds.dims().into_iter().collect();
            assert_eq!(
                dims,
                [("lat".into(), 10), ("lon".into(), 16), ("time".into(), 24)],
                "{store}"
            );
            assert_eq!(ds.names(), ["cloud", "elev", "p", "t"], "{store}");
            let lat = ds.coord("lat").unwrap();
            assert_eq!(lat.values.to_f64(), want("lat").into_raw_vec_and_offset().0);
            assert_eq!(lat.attrs["units"], Attr::from("degrees_north"), "{store}");
            let time = ds.coord("time").unwrap();
            assert_eq!(time.values.dtype(), DType::I64, "{store}");
            assert_eq!(time.attrs["units"].as_str(), Some("days since 2000-01-01"));
            assert_eq!(ds.attrs()["title"], Attr::from("synthetic"), "{store}");
            assert_eq!(ds.attrs()["version"], Attr::Int(3), "{store}");
            assert_eq!(
                ds.attrs()["weights"],
                Attr::Floats(vec![0.5, 1.5]),
                "{store}"
            );
            let t = ds.get("t").unwrap();
            assert_eq!(t.dims(), ["time", "lat", "lon"]);
            assert_eq!(t.attrs()["long_name"].as_str(), Some("air temperature"));
            assert!(
                !t.attrs().contains_key("_FillValue"),
                "{store}: {:?}",
                t.attrs()
            );
            // Packed int16 with a fill value, decoded to float64 with NaN.
            let p = ds.get("p").unwrap();
            assert_eq!(p.dtype(), DType::F64, "{store}");
            assert_eq!(p.attrs().keys().collect::<Vec<_>>(), ["units"], "{store}");
            close(&p.compute(client).unwrap(), &want("p"), 1e-12, &at("p"));
            let elev = ds.get("elev").unwrap();
            assert_eq!(elev.dtype(), DType::F32, "{store}");
            assert_eq!(elev.attrs()["valid_range"], Attr::Ints(vec![-1000, 9000]));
            // uint8 in its own type.
            let cloud = ds.get("cloud").unwrap();
            assert_eq!(cloud.dtype(), DType::U8, "{store}");
            assert_eq!(
                cloud.data().compute::<u8>(client).unwrap(),
                npy::<u8>(&dir.join("cloud.npy")),
                "{store}"
            );
            close(&t.compute(client).unwrap(), &want("t"), 0.0, &at("t"));

            // Selections, reductions by name and arithmetic aligned by name.
            let tropics = t
                .sel("lat", Label::Between(30.0, -30.0))
                .unwrap()
                .mean("time")
                .unwrap();
            assert_eq!(tropics.dims(), ["lat", "lon"]);
            assert_eq!(tropics.coord("lat").unwrap().values.len(), 6);
            let c = |x: &DataArray| x.compute::<f64>(client).unwrap();
            close(&c(&tropics), &want("tropics_mean"), 1e-12, &at("sel mean"));
            let every = t.isel("time", Isel::Span((2..20).into())).unwrap();
            let every = every.isel("time", Isel::Span(mpidask::array::Span::new(None, None, 3)));
            close(
                &c(&every.unwrap().std("lon").unwrap()),
                &want("std_lon"),
                1e-12,
                &at("isel std"),
            );
            let anomaly = (&t - &t.mean("time").unwrap()).unwrap();
            assert_eq!(anomaly.dims(), ["time", "lat", "lon"]);
            close(
                &c(&anomaly.max("time").unwrap()),
                &want("anom_max"),
                1e-12,
                &at("anomaly"),
            );
            let first = t
                .isel("time", 0)
                .unwrap()
                .transpose(&["lon", "lat"])
                .unwrap();
            let plus = (&elev + &first).unwrap();
            assert_eq!(plus.dims(), ["lat", "lon"]);
            close(&c(&plus), &want("elev_plus"), 1e-12, &at("elev + t"));
            close(
                &c(&p.min("time").unwrap()),
                &want("p_min"),
                1e-12,
                &at("p min"),
            );
            let point = t
                .sel("lon", 90.0)
                .and_then(|x| x.sel("time", 150i64))
                .and_then(|x| x.sel("lat", Label::Nearest(31.0)))
                .unwrap();
            assert!(point.dims().is_empty());
            close(&c(&point), &want("point"), 0.0, &at("point"));
            let joined = (&t.isel("lat", 0..6).unwrap() + &t.isel("lat", 3..10).unwrap()).unwrap();
            assert_eq!(
                joined.coord("lat").unwrap().values.to_f64(),
                want("join_lat").into_raw_vec_and_offset().0
            );
            close(&c(&joined), &want("join"), 1e-12, &at("inner join"));
            let var = t
                .reduce(mpidask::array::ReduceOp::Var(0), &["time", "lon"])
                .unwrap();
            close(&c(&var), &want("var_time_lon"), 1e-12, &at("var"));
            let scaled = (&(&t - 273.15) * 2.0).mean("lat").unwrap();
            close(&c(&scaled), &want("scaled"), 1e-12, &at("scalars"));

            // Groups that are runs of positions (pairs of times), as xarray's groupby.
            let seasons: Vec<i64> = (0..24).map(|i| (i / 2) % 4).collect();
            let by_season = t.groupby("time", "season", &seasons).unwrap();
            let group_mean = by_season.mean().unwrap();
            assert_eq!(group_mean.dims(), ["season", "lat", "lon"]);
            close(
                &c(&group_mean),
                &want("group_mean"),
                1e-12,
                &at("groupby mean"),
            );
            let group_anom = by_season
                .binary(mpidask::array::BinaryOp::Sub, &group_mean)
                .unwrap();
            assert_eq!(group_anom.dims(), ["time", "lat", "lon"]);
            close(
                &c(&group_anom),
                &want("group_anom"),
                1e-12,
                &at("groupby -"),
            );

            // Dataset-wide: a variable without the dimension is kept.
            let means = ds.mean("time").unwrap();
            assert_eq!(means.get("elev").unwrap().dims(), ["lat", "lon"]);
            assert!(means.coord("time").is_none());
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn datasets_written_by_mpidask_open_in_xarray() {
    let dir = workdir("dataset-write");
    assert_eq!(run_python(WRITE_DATASET, &[&dir]).trim(), "written");
    local(|client| {
        let ds = Dataset::open_netcdf(dir.join("ds.nc")).unwrap();
        let sub = ds.sel("lat", Label::Between(30.0, -30.0)).unwrap();
        let t = sub.get("t").unwrap();
        let anomaly = (&t - &t.mean("time").unwrap()).unwrap();
        let spread = anomaly
            .std("time")
            .unwrap()
            .rename("anom_std")
            .with_attr("units", "K")
            .with_attr("cell_methods", "time: standard_deviation");
        let out = sub
            .mean("time")
            .unwrap()
            .with(spread)
            .unwrap()
            .with(sub.get("cloud").unwrap().rename("cloud_cover"))
            .unwrap()
            .with_attr("title", "climatology")
            .with_attr("months", 24i64)
            .with_attr("bounds", vec![30.0, -30.0]);
        out.to_netcdf(client, dir.join("out.nc")).unwrap();
        out.to_zarr(client, dir.join("out3.zarr")).unwrap();
        let v2 = ZarrOptions::default().format(ZarrFormat::V2);
        out.to_zarr_with(client, dir.join("out2.zarr"), &v2)
            .unwrap();
        // And back: names, labels and attributes as written.
        for store in ["out.nc", "out3.zarr", "out2.zarr"] {
            let back = opened(&dir, store);
            assert_eq!(
                back.names(),
                ["anom_std", "cloud", "cloud_cover", "elev", "p", "t"],
                "{store}"
            );
            assert_eq!(back.get("cloud_cover").unwrap().dtype(), DType::U8);
            assert_eq!(back.attrs(), out.attrs(), "{store}");
            assert_eq!(back.coords(), out.coords(), "{store}");
            assert_eq!(
                back.get("anom_std").unwrap().attrs(),
                out.get("anom_std").unwrap().attrs()
            );
        }
    });
    assert_eq!(run_python(CHECK_WRITTEN, &[&dir]).trim(), "ok");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The example's results, checked by xarray's own `groupby("time.month")` on its file.
const CHECK_CLIMATE: &str = "\
import sys, warnings, numpy as np, xarray as xr
warnings.simplefilter('error')
d = sys.argv[1]
t = xr.open_dataset(d + '/t.nc').t
by = t.groupby('time.month')
clim = by.mean()
spread = (by - clim).std(['time', 'lon'])
got = xr.open_zarr(d + '/climate.zarr')
assert got.clim.dims == ('month', 'lat', 'lon'), got.clim.dims
np.testing.assert_array_equal(got.month.values, clim.month.values)
np.testing.assert_allclose(got.clim.values, clim.values, rtol=1e-6)
np.testing.assert_allclose(got.spread.values, spread.values, rtol=1e-5)
print('ok')
";

#[test]
fn climate_example_runs_locally_and_matches_xarray() {
    let dir = workdir("dataset-climate");
    let mut command = support::local_command(&support::example("climate"));
    command
        .current_dir(&dir)
        .env("MPIDASK_LOCAL_WORKERS", "2")
        .args(["--years", "3", "--lat", "19", "--lon", "36", "--check"])
        .args(["--file", "t.nc", "--output", "climate.zarr"]);
    let run = support::run_with_deadline(command, std::time::Duration::from_secs(300));
    run.expect_code(0)
        .expect_quiet()
        .expect_stdout("CHECK ok: the climatology and spread of 3 latitudes");
    assert_eq!(run_python(CHECK_CLIMATE, &[&dir]).trim(), "ok");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_names_what_and_how_to_fix() {
    let dir = workdir("dataset-bad");
    let err = |r: mpidask::Result<Dataset>| r.map(|_| ()).unwrap_err().to_string();
    let missing = err(Dataset::open_netcdf(dir.join("none.nc")));
    assert!(missing.contains("none.nc"), "{missing}");
    let not_store = err(Dataset::open_zarr(dir.join("nowhere")));
    assert!(not_store.contains("nowhere") && not_store.contains("no such directory"));
    local(|client| {
        let data = mpidask::array::arange(0.0, 6.0, 1.0, 3);
        let e = DataArray::new("x", data.clone(), &["lat", "lon"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 dimension names") && e.contains("1 dimensions"),
            "{e}"
        );
        let v = DataArray::new("v", data.clone(), &["lat"])
            .unwrap()
            .with_coord("lat", vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            .unwrap();
        let ds = v.clone().into_dataset().unwrap();
        let e = ds.get("w").unwrap_err().to_string();
        assert!(
            e.contains("no data variable `w`") && e.contains("holds v"),
            "{e}"
        );
        let e = ds.sel("lat", 2.5).unwrap_err().to_string();
        assert!(
            e.contains("no label 2.5 on `lat`") && e.contains("Nearest"),
            "{e}"
        );
        let e = ds.mean("depth").unwrap_err().to_string();
        assert!(
            e.contains("no dimension `depth`") && e.contains("lat"),
            "{e}"
        );
        let shorter = DataArray::new("s", data.slice(&[(0..4).into()]), &["lat"]).unwrap();
        let e = DataArray::new("u", data.clone(), &["lat"])
            .unwrap()
            .binary(mpidask::array::BinaryOp::Add, &shorter)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lengths 6 and 4"), "{e}");
        // A store is not replaced unless asked; a directory that is not one never is.
        let store = dir.join("v.zarr");
        ds.to_zarr(client, &store).unwrap();
        let e = ds.to_zarr(client, &store).unwrap_err().to_string();
        assert!(e.contains("overwrite(true)"), "{e}");
        let again = ZarrOptions::default().overwrite(true);
        ds.to_zarr_with(client, &store, &again).unwrap();
        let other = dir.join("papers");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("draft.txt"), "keep me").unwrap();
        let e = ds
            .to_zarr_with(client, &other, &again)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a Zarr store"), "{e}");
        assert!(other.join("draft.txt").is_file());
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
