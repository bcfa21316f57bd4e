//! What the tests of arrays in files (`tests/zarr.rs`, `tests/hdf.rs`) share: a local
//! runtime, a scratch directory, NumPy's files, deterministic values and a chunk function
//! that fails; and the tests of numerics against NumPy (`tests/dtypes.rs`,
//! `tests/ufuncs.rs`) save their results as `.npy` files with [`save`].

use mpidask::array::{Array, DType};
use mpidask::{Client, RuntimeArgs};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

/// Runs `f` in local mode with 3 workers of 2 threads.
pub fn local<T: Send>(f: impl FnOnce(&Client) -> T + Send) -> T {
    let args = RuntimeArgs {
        local_workers: 3,
        nthreads: Some(2),
        ..RuntimeArgs::default()
    };
    mpidask::run_local(args, f)
}

/// A fresh directory for test `name`.
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpidask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Computes `x` and saves it in its own element type as `DIR/NAME.npy` (written by
/// `ndarray-npy`, not by mpidask).
pub fn save(client: &Client, dir: &Path, name: &str, x: &Array) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.npy"));
    match x.dtype() {
        DType::Bool => ndarray_npy::write_npy(&path, &x.compute::<bool>(client)?)?,
        DType::U8 => ndarray_npy::write_npy(&path, &x.compute::<u8>(client)?)?,
        DType::I32 => ndarray_npy::write_npy(&path, &x.compute::<i32>(client)?)?,
        DType::I64 => ndarray_npy::write_npy(&path, &x.compute::<i64>(client)?)?,
        DType::F32 => ndarray_npy::write_npy(&path, &x.compute::<f32>(client)?)?,
        DType::F64 => ndarray_npy::write_npy(&path, &x.compute::<f64>(client)?)?,
    }
    Ok(())
}

/// The array of a `.npy` file.
pub fn npy<T: ndarray_npy::ReadableElement>(path: &Path) -> ArrayD<T> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Values between -60 and 83, the same for the same shape and seed.
pub fn values(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| ((i as u64 * 2_654_435_761 + seed) % 1000) as f64 / 7.0 - 60.0)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// A chunk whose first value is above -50 makes its task fail (the first chunk of the
/// tests' 12 x 4 array in 3 x 4 chunks passes, the second does not).
pub fn refuse_high_corner(block: ArrayD<f64>) -> ArrayD<f64> {
    assert!(block[[0, 0]] <= -50.0, "chunk refused");
    block
}
