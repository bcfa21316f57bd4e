//! Zarr stores against Python's `zarr` (the pinned version in `target/pyenv`): stores it
//! writes, format 2 and 3 with its compressors, open in mpidask with its values, in the
//! store's chunks and in others; stores mpidask writes open in `zarr` with the same
//! values, chunks and codecs; bad stores and names are errors that say what to do. Local
//! mode; `tests/mpi.rs` writes and reads a store under mpirun.

#![cfg(feature = "zarr")]

mod support;

use mpidask::array::{self, BloscCompressor, Compression, DType, ZarrFormat, ZarrOptions};
use ndarray::ArrayD;
use support::python::run_python;
use support::stored::{local, npy, refuse_high_corner, values, workdir};

/// What `zarr` writes for the reading test: format 3 with zstd, blosc and no compressor,
/// a nested group, a sparse array (unwritten chunks) and a complex one; format 2 with
/// blosc, gzip and zstd; NumPy's copy of each in `NAME.npy`.
const WRITE_STORES: &str = "\
import sys, numpy as np, zarr, numcodecs
from zarr.codecs import ZstdCodec, BloscCodec
d = sys.argv[1]
rng = np.random.default_rng(5)
temp = rng.standard_normal((20, 13))
g3 = zarr.open_group(d + '/v3.zarr', mode='w', zarr_format=3)
g3.create_array('temp', shape=temp.shape, chunks=(6, 5), dtype='f8', compressors=ZstdCodec(level=3))[:] = temp
cube = rng.standard_normal((5, 4, 7)).astype('f4')
g3.create_array('deep/cube', shape=cube.shape, chunks=(2, 4, 3), dtype='f4', compressors=BloscCodec(cname='lz4', clevel=5))[:] = cube
mask = temp > 0.3
g3.create_array('mask', shape=mask.shape, chunks=(7, 7), dtype='bool', compressors=None)[:] = mask
sparse = g3.create_array('sparse', shape=(9, 8), chunks=(3, 4), dtype='f8', fill_value=7.5)
sparse[3:6, 4:8] = np.arange(12.0).reshape(3, 4)
g3.create_array('waves', shape=(3,), dtype='c16')[:] = 1j
g2 = zarr.open_group(d + '/v2.zarr', mode='w', zarr_format=2)
counts = rng.integers(-1000, 1000, size=(17, 9)).astype('i4')
g2.create_array('counts', shape=counts.shape, chunks=(4, 4), dtype='i4', compressors=numcodecs.Blosc(cname='lz4', clevel=5, shuffle=1))[:] = counts
g2.create_array('temp', shape=temp.shape, chunks=(6, 5), dtype='f8', compressors=numcodecs.GZip(level=5))[:] = temp
small = rng.integers(0, 255, size=(11,)).astype('u1')
g2.create_array('small', shape=small.shape, chunks=(4,), dtype='u1', compressors=numcodecs.Zstd(level=1))[:] = small
plain = np.full((20, 13), 2.5)
plain[:15] = temp[:15]
g3.create_array('plain', shape=plain.shape, chunks=(5, 13), dtype='f8', fill_value=2.5, compressors=None)[:15] = temp[:15]
g2.create_array('plain', shape=small.shape, chunks=(4,), dtype='u1', compressors=None)[:] = small
shorts = rng.integers(-30000, 30000, size=(6, 5)).astype('i2')
g3.create_array('shorts', shape=shorts.shape, chunks=(4, 5), dtype='i2')[:] = shorts
for name, v in [('temp', temp), ('cube', cube), ('mask', mask), ('sparse', sparse[:]), ('counts', counts), ('small', small), ('shorts', shorts.astype('i4')), ('plain', plain)]:
    np.save(d + '/' + name + '.npy', v)
print('written')
";

#[test]
fn stores_written_by_python_zarr_open_with_its_values() {
    let dir = workdir("zarr-read");
    assert_eq!(run_python(WRITE_STORES, &[&dir]).trim(), "written");
    let (v3, v2) = (dir.join("v3.zarr"), dir.join("v2.zarr"));
    let temp: ArrayD<f64> = npy(&dir.join("temp.npy"));
    let cube: ArrayD<f32> = npy(&dir.join("cube.npy"));
    let mask: ArrayD<bool> = npy(&dir.join("mask.npy"));
    let sparse: ArrayD<f64> = npy(&dir.join("sparse.npy"));
    let counts: ArrayD<i32> = npy(&dir.join("counts.npy"));
    let small: ArrayD<u8> = npy(&dir.join("small.npy"));
    let shorts: ArrayD<i32> = npy(&dir.join("shorts.npy"));
    let plain: ArrayD<f64> = npy(&dir.join("plain.npy"));
    local(|client| {
        // Format 3, zstd, in the store's chunks.
        let x = array::from_zarr(&v3, "temp").unwrap();
        assert_eq!(x.dtype(), DType::F64);
        assert_eq!(x.chunks(), &vec![vec![6, 6, 6, 2], vec![5, 5, 3]]);
        assert_eq!(x.compute::<f64>(client).unwrap(), temp);
        // The same values in chunks that are multiples of the store's, divide them, or
        // neither.
        for sizes in [[12, 10], [3, 5], [7, 4], [20, 13]] {
            let y = array::from_zarr_chunked(&v3, "temp", &sizes).unwrap();
            assert_eq!(y.chunks()[0][0], sizes[0]);
            assert_eq!(y.compute::<f64>(client).unwrap(), temp, "chunks {sizes:?}");
        }
        // Format 2, gzip: the same array.
        let x2 = array::from_zarr(&v2, "temp").unwrap();
        assert_eq!(x2.compute::<f64>(client).unwrap(), temp);
        // A nested group, blosc, float32.
        let c = array::from_zarr(&v3, "/deep/cube").unwrap();
        assert_eq!(c.dtype(), DType::F32);
        assert_eq!(c.chunks(), &vec![vec![2, 2, 1], vec![4], vec![3, 3, 1]]);
        assert_eq!(c.compute::<f32>(client).unwrap(), cube);
        // bool, no compression; computed with: the count of true values.
        let m = array::from_zarr(&v3, "mask").unwrap();
        assert_eq!(m.dtype(), DType::Bool);
        assert_eq!(m.compute::<bool>(client).unwrap(), mask);
        let trues = mask.iter().filter(|v| **v).count() as i64;
        assert_eq!(
            m.astype(DType::I64)
                .sum()
                .compute_scalar::<i64>(client)
                .unwrap(),
            trues
        );
        // Unwritten chunks read as the fill value.
        let s = array::from_zarr(&v3, "sparse").unwrap();
        assert_eq!(s.compute::<f64>(client).unwrap(), sparse);
        // int32 (blosc) and uint8 (zstd) come in their own types; int16 as int32.
        let n = array::from_zarr(&v2, "counts").unwrap();
        assert_eq!(n.dtype(), DType::I32);
        assert_eq!(n.compute::<i32>(client).unwrap(), counts);
        let u = array::from_zarr(&v2, "small").unwrap();
        assert_eq!(u.dtype(), DType::U8);
        assert_eq!(u.compute::<u8>(client).unwrap(), small);
        // Uncompressed chunks, one never written (the fill value), in the store's chunks
        // (read as plain files) and in others (through zarrs).
        for sizes in [[5, 13], [7, 13], [5, 4]] {
            let p = array::from_zarr_chunked(&v3, "plain", &sizes).unwrap();
            assert_eq!(p.compute::<f64>(client).unwrap(), plain, "{sizes:?}");
        }
        let p2 = array::from_zarr(&v2, "plain").unwrap();
        assert_eq!(p2.compute::<u8>(client).unwrap(), small);
        let h = array::from_zarr(&v3, "shorts").unwrap();
        assert_eq!(h.dtype(), DType::I32);
        assert_eq!(h.compute::<i32>(client).unwrap(), shorts);
        // A type mpidask arrays do not hold, and names that are not arrays.
        let error = array::from_zarr(&v3, "waves").unwrap_err().to_string();
        assert!(
            error.contains("complex128") || error.contains("data type"),
            "{error}"
        );
        let error = array::from_zarr(&v3, "pressure").unwrap_err().to_string();
        assert!(
            error.contains("pressure")
                && error.contains("deep, mask, plain, shorts, sparse, temp, waves"),
            "{error}"
        );
        let error = array::from_zarr(&v3, "deep").unwrap_err().to_string();
        assert!(error.contains("group holding cube"), "{error}");
        let error = array::from_zarr(dir.join("nowhere"), "temp")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no such directory"), "{error}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks, in Python's `zarr`, each `name` of the store at `argv[1]`: values equal to
/// `argv[2]/NAME.npy`, chunks, format and first codec as listed in `argv[3]`
/// (`name:format:chunks:codec` per line).
const CHECK_STORES: &str = "\
import sys, numpy as np, zarr
store, refs, spec = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().split()
for line in spec:
    name, fmt, chunks, codec = line.split(':')
    a = zarr.open_array(store, path=name, mode='r')
    want = np.load(refs + '/' + name.replace('/', '_') + '.npy')
    assert a.metadata.zarr_format == int(fmt), (name, a.metadata.zarr_format)
    assert a.chunks == tuple(int(c) for c in chunks.split(',')), (name, a.chunks)
    assert a.dtype == want.dtype, (name, a.dtype, want.dtype)
    assert np.array_equal(a[:], want), name
    if fmt == '2':
        got = a.metadata.compressor.codec_id if a.metadata.compressor is not None else 'none'
    else:
        got = a.compressors[0].to_dict()['name'] if a.compressors else 'none'
    assert got == codec, (name, got, codec)
g = zarr.open_group(store, mode='r')
print('zarr read', len(spec))
";

#[test]
fn stores_written_by_mpidask_open_in_python_zarr() {
    let dir = workdir("zarr-write");
    let refs = dir.join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    let (v3, v2) = (dir.join("v3.zarr"), dir.join("v2.zarr"));
    let a = values(&[23, 10], 1);
    let cube = values(&[6, 5, 4], 2);
    local(|client| {
        let x = array::from_array(&a, &[5, 4]);
        let mean = x.mean_axis(0);
        let anomaly = &x - &mean;
        // Several arrays in one graph: x, its anomaly (sharing x's chunks), a bool mask
        // and an int64 array, format 3 (zstd by default).
        array::store_zarr(
            client,
            &v3,
            &[
                ("x", &x),
                ("anomaly", &anomaly),
                ("warm", &x.gt(0.0)),
                ("steps", &(&x * 10.0).astype(DType::I64)),
                ("codes", &(&x * 100.0).astype(DType::I32)),
                ("levels", &(&x + 60.0).astype(DType::U8)),
            ],
            &ZarrOptions::default(),
        )
        .unwrap();
        // Blosc, in store chunks that the array's chunks do not line up with (rechunked
        // before writing), format 3; gzip and zstd in format 2; float32 in a subgroup.
        x.to_zarr_with(
            client,
            &v3,
            "blosc",
            &ZarrOptions::default()
                .compression(Compression::Blosc {
                    compressor: BloscCompressor::Zstd,
                    level: 5,
                })
                .chunks(&[8, 3]),
        )
        .unwrap();
        // Uncompressed, with edge chunks shorter than the store's (written through zarrs,
        // the whole ones as plain files), format 3 and 2.
        let plain = ZarrOptions::default()
            .compression(Compression::None)
            .chunks(&[5, 4]);
        x.to_zarr_with(client, &v3, "plain", &plain).unwrap();
        let levels = (&x + 60.0).astype(DType::U8);
        levels
            .to_zarr_with(client, &v2, "levels", &plain.clone().format(ZarrFormat::V2))
            .unwrap();
        assert_eq!(
            array::from_zarr(&v3, "plain")
                .unwrap()
                .compute::<f64>(client)
                .unwrap(),
            a
        );
        let v2_options = ZarrOptions::default().format(ZarrFormat::V2);
        x.to_zarr_with(
            client,
            &v2,
            "x",
            &v2_options
                .clone()
                .compression(Compression::Gzip { level: 5 })
                .chunks(&[10, 10]),
        )
        .unwrap();
        array::from_array(&cube, &[3, 5, 2])
            .astype(DType::F32)
            .to_zarr_with(client, &v2, "g/cube", &v2_options)
            .unwrap();
        // What mpidask writes it reads back.
        let back = array::from_zarr(&v3, "anomaly").unwrap();
        assert_eq!(back.chunks(), anomaly.chunks());
        let want = anomaly.compute::<f64>(client).unwrap();
        assert_eq!(back.compute::<f64>(client).unwrap(), want);
        ndarray_npy::write_npy(refs.join("anomaly.npy"), &want).unwrap();
        // An array already there is kept unless overwrite says otherwise.
        let error = x.to_zarr(client, &v3, "x").unwrap_err().to_string();
        assert!(error.contains("already holds `x`") && error.contains("overwrite(true)"));
        (&x * 2.0)
            .to_zarr_with(client, &v3, "x", &ZarrOptions::default().overwrite(true))
            .unwrap();
        let doubled = array::from_zarr(&v3, "x").unwrap();
        assert_eq!(doubled.compute::<f64>(client).unwrap(), &a * 2.0);
        // A directory of the store that is not an array is left alone.
        std::fs::create_dir_all(v3.join("notes")).unwrap();
        std::fs::write(v3.join("notes/todo.txt"), "keep").unwrap();
        let options = ZarrOptions::default().overwrite(true);
        let error = x
            .to_zarr_with(client, &v3, "notes", &options)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not a Zarr array"), "{error}");
        assert!(v3.join("notes/todo.txt").is_file());
        std::fs::remove_dir_all(v3.join("notes")).unwrap();
        // Bad names and chunks.
        for (name, chunks, why) in [
            ("../x", vec![5, 4], "cannot name"),
            ("y", vec![5], "1 chunk sizes"),
            ("y", vec![0, 4], "at least 1"),
        ] {
            let error = x
                .to_zarr_with(client, &v3, name, &ZarrOptions::default().chunks(&chunks))
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{name} {chunks:?}: {error}");
        }
    });
    let write = |name: &str, v: &ArrayD<f64>| {
        ndarray_npy::write_npy(refs.join(format!("{name}.npy")), v).unwrap()
    };
    write("x", &(&a * 2.0));
    write("blosc", &a);
    write("plain", &a);
    ndarray_npy::write_npy(refs.join("warm.npy"), &a.mapv(|v| v > 0.0)).unwrap();
    ndarray_npy::write_npy(refs.join("steps.npy"), &a.mapv(|v| (v * 10.0) as i64)).unwrap();
    ndarray_npy::write_npy(refs.join("codes.npy"), &a.mapv(|v| (v * 100.0) as i32)).unwrap();
    ndarray_npy::write_npy(refs.join("levels.npy"), &a.mapv(|v| (v + 60.0) as u8)).unwrap();
    let spec3 = dir.join("spec3");
    std::fs::write(
        &spec3,
        "x:3:5,4:zstd anomaly:3:5,4:zstd warm:3:5,4:zstd steps:3:5,4:zstd codes:3:5,4:zstd \
         levels:3:5,4:zstd blosc:3:8,3:blosc plain:3:5,4:none",
    )
    .unwrap();
    let text = run_python(CHECK_STORES, &[&v3, &refs, &spec3]);
    assert_eq!(text.trim(), "zarr read 8");
    write("x", &a);
    ndarray_npy::write_npy(refs.join("g_cube.npy"), &cube.mapv(|v| v as f32)).unwrap();
    let spec2 = dir.join("spec2");
    std::fs::write(
        &spec2,
        "x:2:10,10:gzip g/cube:2:3,5,2:zstd levels:2:5,4:none",
    )
    .unwrap();
    let text = run_python(CHECK_STORES, &[&v2, &refs, &spec2]);
    assert_eq!(text.trim(), "zarr read 3");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write that fails part way leaves no metadata, so the array does not open as a whole
/// one; writing it again replaces what was left.
#[test]
fn a_failed_write_leaves_no_array() {
    let dir = workdir("zarr-failed");
    let store = dir.join("s.zarr");
    local(|client| {
        let x = array::from_array(&values(&[12, 4], 3), &[3, 4]);
        let broken = x.map_blocks(refuse_high_corner);
        let error = broken.to_zarr(client, &store, "x").unwrap_err();
        let error = format!("{:#}", anyhow::Error::new(error));
        assert!(error.contains("chunk refused"), "{error}");
        assert!(!store.join("x/zarr.json").exists());
        let error = array::from_zarr(&store, "x").unwrap_err().to_string();
        assert!(error.contains("not a Zarr array"), "{error}");
        x.to_zarr(client, &store, "x").unwrap();
        let back = array::from_zarr(&store, "x").unwrap();
        assert_eq!(
            back.compute::<f64>(client).unwrap(),
            x.compute::<f64>(client).unwrap()
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A chunk file cut short or overwritten is an error naming it and saying what to do, for
/// a zstd chunk and an uncompressed one; never zeros or the fill value.
#[test]
fn a_corrupt_chunk_is_an_error_naming_it() {
    let dir = workdir("zarr-corrupt");
    let store = dir.join("s.zarr");
    local(|client| {
        let x = array::from_array(&values(&[12, 4], 3), &[3, 4]);
        x.to_zarr(client, &store, "z").unwrap();
        let plain = ZarrOptions::default().compression(Compression::None);
        x.to_zarr_with(client, &store, "p", &plain).unwrap();
        for (name, chunk) in [("z", "z/c/1/0"), ("p", "p/c/2/0")] {
            let file = store.join(chunk);
            let bytes = std::fs::read(&file).unwrap();
            std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
            let error = array::from_zarr(&store, name)
                .unwrap()
                .sum()
                .compute_scalar::<f64>(client)
                .unwrap_err();
            let error = format!("{:#}", anyhow::Error::new(error));
            assert!(
                error.contains(chunk) && error.contains("write the array again"),
                "{name}: {error}"
            );
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read-only bind mount of a new directory, unmounted when dropped. Root (which `make
/// test` runs as in CI) ignores permission bits, so only a read-only mount refuses it.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn new(dir: &std::path::Path) -> ReadOnly {
        std::fs::create_dir_all(dir).unwrap();
        for args in [
            vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
            vec!["-o", "remount,ro,bind", dir.to_str().unwrap()],
        ] {
            let status = std::process::Command::new("mount").args(&args).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "mount {args:?} failed: this test makes a read-only directory with a bind \
                 mount, which needs root (as `make test` runs in CI)"
            );
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Writing into a read-only directory is an error that names the path, for every format,
/// and leaves nothing behind.
#[test]
fn writes_into_a_read_only_directory_are_errors_naming_it() {
    let dir = workdir("zarr-readonly");
    let ro = dir.join("ro");
    let guard = ReadOnly::new(&ro);
    local(|client| {
        let x = array::from_array(&values(&[12, 4], 3), &[3, 4]);
        let errors = [
            (
                "to_zarr",
                x.to_zarr(client, ro.join("s.zarr"), "x").unwrap_err(),
            ),
            (
                "to_hdf5",
                x.to_hdf5(client, ro.join("f.h5"), "x").unwrap_err(),
            ),
            (
                "to_netcdf",
                x.to_netcdf(client, ro.join("f.nc"), "x", &["r", "c"])
                    .unwrap_err(),
            ),
            (
                "to_npy_stack",
                x.to_npy_stack(client, ro.join("stack"), 0).unwrap_err(),
            ),
        ];
        for (what, error) in errors {
            let error = format!("{:#}", anyhow::Error::new(error));
            assert!(
                error.contains(ro.to_str().unwrap())
                    && error.contains("Read-only file system")
                    && error.contains("writable file system"),
                "{what}: {error}"
            );
        }
    });
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "nothing written"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
