//! The Python of the tests that compare with NumPy, Dask and Zarr: `target/pyenv` (made by
//! `make pyenv`), or `MPIDASK_TEST_PYTHON`.

/// The Python of `make test` (`target/pyenv`, with NumPy, Dask and Zarr), or
/// MPIDASK_TEST_PYTHON.
pub fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
    std::env::var("MPIDASK_TEST_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    })
}

/// Runs `script` with `args` in [`python`]; its standard output, or a panic saying what
/// is missing.
pub fn run_python(script: &str, args: &[&std::path::Path]) -> String {
    let python = python();
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (`make test` creates target/pyenv with numpy, dask and zarr; or set MPIDASK_TEST_PYTHON to a Python with them)"));
    assert!(
        output.status.success(),
        "{python} failed (`make pyenv` installs numpy, dask and zarr into target/pyenv): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
