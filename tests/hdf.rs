//! HDF5 and netCDF files against Python's `h5py` and `netCDF4` (the pinned versions in
//! `target/pyenv`): files they write (chunked and compressed or contiguous, netCDF classic
//! and netCDF-4) open in mpidask with their values, in several chunkings; files mpidask
//! writes open in them with the same values, types, dimensions and attributes; a write that
//! fails leaves the file that was there. Local mode; `tests/mpi.rs` writes and reads both
//! under mpirun.

#![cfg(all(feature = "hdf5", feature = "netcdf"))]

mod support;

use mpidask::array::{self, DType};
use ndarray::ArrayD;
use support::python::run_python;
use support::stored::{local, npy, refuse_high_corner, values, workdir};

/// What h5py and netCDF4 write for the reading test, with NumPy's copy of each array.
const WRITE_FILES: &str = "\
import sys, numpy as np, h5py, netCDF4
d = sys.argv[1]
rng = np.random.default_rng(7)
temp = rng.standard_normal((20, 13))
cube = rng.standard_normal((5, 4, 7)).astype('f4')
counts = rng.integers(-1000, 1000, size=(17, 9)).astype('i4')
small = rng.integers(0, 255, size=(11,)).astype('u1')
mask = temp > 0.3
with h5py.File(d + '/h.h5', 'w') as f:
    f.create_dataset('temp', data=temp, chunks=(6, 5), compression='gzip')
    f.create_dataset('g/h/cube', data=cube)
    f.create_dataset('counts', data=counts, chunks=(4, 9), shuffle=True, compression='gzip')
    f.create_dataset('small', data=small)
    f.create_dataset('mask', data=mask)
    f.create_dataset('waves', data=np.ones(3, dtype='c16'))
    f.create_dataset('lzf', data=temp, chunks=(6, 5), compression='lzf')
with netCDF4.Dataset(d + '/classic.nc', 'w', format='NETCDF3_CLASSIC') as f:
    f.createDimension('time', 20); f.createDimension('x', 13)
    f.createVariable('temp', 'f8', ('time', 'x'))[:] = temp
with netCDF4.Dataset(d + '/four.nc', 'w', format='NETCDF4') as f:
    f.createDimension('a', 5); f.createDimension('b', 4); f.createDimension('c', 7)
    f.createDimension('time', 20); f.createDimension('x', 13)
    f.createVariable('cube', 'f4', ('a', 'b', 'c'), zlib=True, chunksizes=(2, 4, 3))[:] = cube
    f.createVariable('level', 'i2', ('time', 'x'))[:] = (temp * 100).astype('i2')
    m = f.createVariable('mask', 'i1', ('time', 'x')); m.setncattr('dtype', 'bool'); m[:] = mask
    f.createVariable('counts', 'i4', ('time', 'x'))[:] = (temp * 1e6).astype('i4')
    f.createVariable('bytes', 'u1', ('time', 'x'))[:] = (np.abs(temp) * 50).astype('u1')
for name, v in [('temp', temp), ('cube', cube), ('counts', counts), ('small', small), ('mask', mask), ('level', (temp * 100).astype('i2').astype('i4')), ('nc_counts', (temp * 1e6).astype('i4')), ('nc_bytes', (np.abs(temp) * 50).astype('u1'))]:
    np.save(d + '/' + name + '.npy', v)
print('written')
";

#[test]
fn files_written_by_h5py_and_netcdf4_open_with_their_values() {
    let dir = workdir("hdf-read");
    assert_eq!(run_python(WRITE_FILES, &[&dir]).trim(), "written");
    let h5 = dir.join("h.h5");
    let temp: ArrayD<f64> = npy(&dir.join("temp.npy"));
    let cube: ArrayD<f32> = npy(&dir.join("cube.npy"));
    let counts: ArrayD<i32> = npy(&dir.join("counts.npy"));
    let small: ArrayD<u8> = npy(&dir.join("small.npy"));
    let mask: ArrayD<bool> = npy(&dir.join("mask.npy"));
    let level: ArrayD<i32> = npy(&dir.join("level.npy"));
    let nc_counts: ArrayD<i32> = npy(&dir.join("nc_counts.npy"));
    let nc_bytes: ArrayD<u8> = npy(&dir.join("nc_bytes.npy"));
    local(|client| {
        // HDF5, chunked and gzip-compressed: in the file's chunks grown along the first
        // axis (a small dataset is one chunk), and in chunks of every other kind.
        let x = array::from_hdf5(&h5, "temp").unwrap();
        assert_eq!(x.dtype(), DType::F64);
        assert_eq!(x.chunks(), &vec![vec![20], vec![5, 5, 3]]);
        assert_eq!(x.compute::<f64>(client).unwrap(), temp);
        for sizes in [[12, 10], [3, 5], [7, 4]] {
            let y = array::from_hdf5_chunked(&h5, "temp", &sizes).unwrap();
            assert_eq!(y.chunks()[0][0], sizes[0]);
            assert_eq!(y.compute::<f64>(client).unwrap(), temp, "chunks {sizes:?}");
        }
        // Contiguous float32 in nested groups; int32 (gzip, shuffled) and uint8 in their
        // own types; h5py's booleans.
        let c = array::from_hdf5_chunked(&h5, "g/h/cube", &[2, 3, 4]).unwrap();
        assert_eq!(c.dtype(), DType::F32);
        assert_eq!(c.compute::<f32>(client).unwrap(), cube);
        let n = array::from_hdf5_chunked(&h5, "counts", &[5, 2]).unwrap();
        assert_eq!(n.dtype(), DType::I32);
        assert_eq!(n.compute::<i32>(client).unwrap(), counts);
        let u = array::from_hdf5(&h5, "small").unwrap();
        assert_eq!(u.dtype(), DType::U8);
        assert_eq!(u.compute::<u8>(client).unwrap(), small);
        let m = array::from_hdf5_chunked(&h5, "mask", &[6, 6]).unwrap();
        assert_eq!(m.dtype(), DType::Bool);
        assert_eq!(m.compute::<bool>(client).unwrap(), mask);
        // netCDF classic and netCDF-4 (zlib, chunked; int16 as int32; int and ubyte in
        // their own types; xarray's booleans).
        let t = array::from_netcdf_chunked(dir.join("classic.nc"), "temp", &[6, 13]).unwrap();
        assert_eq!(t.compute::<f64>(client).unwrap(), temp);
        let four = dir.join("four.nc");
        let c4 = array::from_netcdf(&four, "cube").unwrap();
        assert_eq!(c4.dtype(), DType::F32);
        assert_eq!(c4.compute::<f32>(client).unwrap(), cube);
        let l = array::from_netcdf_chunked(&four, "level", &[7, 5]).unwrap();
        assert_eq!(l.dtype(), DType::I32);
        assert_eq!(l.compute::<i32>(client).unwrap(), level);
        let n4 = array::from_netcdf_chunked(&four, "counts", &[7, 5]).unwrap();
        assert_eq!(n4.dtype(), DType::I32);
        assert_eq!(n4.compute::<i32>(client).unwrap(), nc_counts);
        let b4 = array::from_netcdf(&four, "bytes").unwrap();
        assert_eq!(b4.dtype(), DType::U8);
        assert_eq!(b4.compute::<u8>(client).unwrap(), nc_bytes);
        let m4 = array::from_netcdf_chunked(&four, "mask", &[7, 5]).unwrap();
        assert_eq!(m4.dtype(), DType::Bool);
        assert_eq!(m4.compute::<bool>(client).unwrap(), mask);
        // What is not there, or not an array of ours, says so.
        let error = array::from_hdf5(&h5, "pressure").unwrap_err().to_string();
        assert!(
            error.contains("no dataset `pressure`") && error.contains("g/h/cube"),
            "{error}"
        );
        let error = array::from_hdf5(&h5, "waves").unwrap_err().to_string();
        assert!(error.contains("not one mpidask arrays hold"), "{error}");
        // h5py's LZF filter is not in libhdf5: said when the dataset is opened.
        let error = array::from_hdf5(&h5, "lzf").unwrap_err().to_string();
        assert!(
            error.contains("filter 32000 (LZF") && error.contains("h5repack"),
            "{error}"
        );
        let error = array::from_netcdf(&four, "temp").unwrap_err().to_string();
        assert!(
            error.contains("no variable `temp`") && error.contains("cube"),
            "{error}"
        );
        let error = array::from_hdf5(dir.join("temp.npy"), "x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an HDF5 file"), "{error}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks the files mpidask wrote in h5py and netCDF4: values equal to the `.npy` files,
/// types, the netCDF dimensions and the boolean mark.
const CHECK_FILES: &str = "\
import sys, numpy as np, h5py, netCDF4
d = sys.argv[1]
ref = lambda name: np.load(d + '/' + name + '.npy')
with h5py.File(d + '/out.h5', 'r') as f:
    for name, key in [('x', 'x'), ('cube', 'g/cube'), ('steps', 'steps'), ('warm', 'warm'), ('codes', 'codes'), ('levels', 'levels')]:
        a = f[key]
        assert a.dtype == ref(name).dtype, (key, a.dtype)
        assert a.chunks is None, (key, a.chunks)
        assert np.array_equal(a[()], ref(name)), key
with netCDF4.Dataset(d + '/out.nc', 'r') as f:
    assert f.data_model == 'NETCDF4', f.data_model
    assert f.variables['x'].dimensions == ('time', 'x'), f.variables['x'].dimensions
    assert f.variables['mean'].dimensions == ('x',)
    assert f.dimensions['time'].size == 23 and f.dimensions['x'].size == 10
    assert np.array_equal(f.variables['x'][:].data, ref('x'))
    assert np.allclose(f.variables['mean'][:].data, ref('x').mean(axis=0), rtol=0, atol=1e-12)
    w = f.variables['warm']
    assert w.dtype == np.int8 and w.getncattr('dtype') == 'bool'
    assert np.array_equal(w[:].data.astype(bool), ref('warm'))
    for name in ['codes', 'levels']:
        v = f.variables[name]
        assert v.dtype == ref(name).dtype, (name, v.dtype)
        assert np.array_equal(v[:].data, ref(name)), name
print('read')
";

#[test]
fn files_written_by_mpidask_open_in_h5py_and_netcdf4() {
    let dir = workdir("hdf-write");
    let a = values(&[23, 10], 1);
    let cube = values(&[6, 5, 4], 2);
    let (h5, nc) = (dir.join("out.h5"), dir.join("out.nc"));
    local(|client| {
        // Chunks of every shape: rows, blocks, columns.
        let x = array::from_array(&a, &[5, 4]);
        let cube_f32 = array::from_array(&cube, &[3, 5, 1]).astype(DType::F32);
        let codes = (&x * 100.0).astype(DType::I32);
        let levels = (&x + 60.0).astype(DType::U8);
        array::store_hdf5(
            client,
            &h5,
            &[
                ("x", &x),
                ("g/cube", &cube_f32),
                ("steps", &(&x * 10.0).astype(DType::I64)),
                ("warm", &x.gt(0.0).rechunk(&[23, 3])),
                ("codes", &codes),
                ("levels", &levels),
            ],
        )
        .unwrap();
        let mean = x.mean_axis(0);
        array::store_netcdf(
            client,
            &nc,
            &[
                ("x", &x, &["time", "x"]),
                ("mean", &mean, &["x"]),
                ("warm", &x.gt(0.0), &["time", "x"]),
                ("codes", &codes, &["time", "x"]),
                ("levels", &levels, &["time", "x"]),
            ],
        )
        .unwrap();
        // And back in mpidask.
        let back = array::from_hdf5_chunked(&h5, "x", &[4, 10]).unwrap();
        assert_eq!(back.compute::<f64>(client).unwrap(), a);
        let back = array::from_netcdf(&nc, "warm").unwrap();
        assert_eq!(back.dtype(), DType::Bool);
        assert_eq!(back.compute::<bool>(client).unwrap(), a.mapv(|v| v > 0.0));
        // Dimensions that disagree, and too few names.
        let error = array::store_netcdf(
            client,
            dir.join("bad.nc"),
            &[
                ("x", &x, &["time", "x"]),
                ("c", &cube_f32, &["time", "x", "z"]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("dimension `time` is 23 long"), "{error}");
        let error = x
            .to_netcdf(client, dir.join("bad.nc"), "x", &["time"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("2 dimensions but 1 names"), "{error}");
        assert!(!dir.join("bad.nc").exists());
    });
    ndarray_npy::write_npy(dir.join("x.npy"), &a).unwrap();
    ndarray_npy::write_npy(dir.join("cube.npy"), &cube.mapv(|v| v as f32)).unwrap();
    ndarray_npy::write_npy(dir.join("steps.npy"), &a.mapv(|v| (v * 10.0) as i64)).unwrap();
    ndarray_npy::write_npy(dir.join("warm.npy"), &a.mapv(|v| v > 0.0)).unwrap();
    ndarray_npy::write_npy(dir.join("codes.npy"), &a.mapv(|v| (v * 100.0) as i32)).unwrap();
    ndarray_npy::write_npy(dir.join("levels.npy"), &a.mapv(|v| (v + 60.0) as u8)).unwrap();
    assert_eq!(run_python(CHECK_FILES, &[&dir]).trim(), "read");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write that fails part way leaves the file that was at the path as it was, and no
/// temporary file; the next write that succeeds replaces it.
#[test]
fn a_failed_write_keeps_the_old_file() {
    let dir = workdir("hdf-failed");
    let (h5, nc) = (dir.join("f.h5"), dir.join("f.nc"));
    local(|client| {
        let x = array::from_array(&values(&[12, 4], 3), &[3, 4]);
        x.to_hdf5(client, &h5, "x").unwrap();
        x.to_netcdf(client, &nc, "x", &["y", "x"]).unwrap();
        let broken = x.map_blocks(refuse_high_corner) * 2.0;
        for error in [
            broken.to_hdf5(client, &h5, "x").unwrap_err(),
            broken.to_netcdf(client, &nc, "x", &["y", "x"]).unwrap_err(),
        ] {
            let error = format!("{:#}", anyhow::Error::new(error));
            assert!(error.contains("chunk refused"), "{error}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        let want = x.compute::<f64>(client).unwrap();
        assert_eq!(
            array::from_hdf5(&h5, "x")
                .unwrap()
                .compute::<f64>(client)
                .unwrap(),
            want
        );
        assert_eq!(
            array::from_netcdf(&nc, "x")
                .unwrap()
                .compute::<f64>(client)
                .unwrap(),
            want
        );
        (&x * 3.0).to_hdf5(client, &h5, "x").unwrap();
        assert_eq!(
            array::from_hdf5(&h5, "x")
                .unwrap()
                .compute::<f64>(client)
                .unwrap(),
            &want * 3.0
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Contiguous uncompressed datasets are read by the workers straight from the file's bytes:
/// the same values as the library gives in any chunking, and a file cut short is an error
/// that names it (not zeros, not a hang).
#[test]
fn contiguous_datasets_read_from_their_bytes_and_a_truncated_file_is_an_error() {
    let dir = workdir("hdf-raw");
    let (h5, nc) = (dir.join("r.h5"), dir.join("r.nc"));
    let a = values(&[37, 11], 4);
    local(|client| {
        let x = array::from_array(&a, &[9, 11]);
        let levels = (&x + 60.0).astype(DType::U8);
        let single = x.astype(DType::F32);
        array::store_hdf5(
            client,
            &h5,
            &[("x", &x), ("levels", &levels), ("single", &single)],
        )
        .unwrap();
        array::store_netcdf(
            client,
            &nc,
            &[("x", &x, &["r", "c"]), ("levels", &levels, &["r", "c"])],
        )
        .unwrap();
        let want = x.compute::<f64>(client).unwrap();
        let want_levels = levels.compute::<u8>(client).unwrap();
        for sizes in [[37, 11], [5, 11], [4, 3], [37, 1], [1, 1]] {
            let from_h5 = array::from_hdf5_chunked(&h5, "x", &sizes).unwrap();
            assert_eq!(from_h5.compute::<f64>(client).unwrap(), want, "{sizes:?}");
            let from_nc = array::from_netcdf_chunked(&nc, "x", &sizes).unwrap();
            assert_eq!(from_nc.compute::<f64>(client).unwrap(), want, "{sizes:?}");
            let l = array::from_netcdf_chunked(&nc, "levels", &sizes).unwrap();
            assert_eq!(l.compute::<u8>(client).unwrap(), want_levels, "{sizes:?}");
            let s = array::from_hdf5_chunked(&h5, "single", &sizes).unwrap();
            assert_eq!(
                s.compute::<f32>(client).unwrap(),
                single.compute::<f32>(client).unwrap()
            );
        }
        // Cut off within the last dataset's bytes, after the arrays are opened.
        let opened = array::from_hdf5(&h5, "single").unwrap();
        let len = std::fs::metadata(&h5).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&h5)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let error = opened.sum().compute_scalar::<f32>(client).unwrap_err();
        let error = format!("{:#}", anyhow::Error::new(error));
        assert!(
            error.contains("r.h5") && error.contains("truncated"),
            "{error}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
