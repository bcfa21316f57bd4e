//! Benchmarks of arrays in files under `mpirun -np 4` (2 workers), against baselines
//! measured in the same run, interleaved round by round. Prints `BENCH name=<id>
//! value=<median> unit=<unit> median= min= max= n=` lines (see `benches/common`).
//!
//! ```text
//! cargo bench --bench stores                 # 10 GB of Zarr, a 4 GB netCDF file
//! MPIDASK_BENCH_STORE_GB=2 MPIDASK_BENCH_DATASET_GB=0.5 cargo bench --bench stores
//! ```
//!
//! * `zarr_write_gb_per_s`, `zarr_read_gb_per_s`: a persisted array of uniform `f64`
//!   (10 GB in 200 MB chunks of 5000 x 5000) written uncompressed to a Zarr store by the
//!   workers holding its chunks (`to_zarr_with`, compression none), then read back and
//!   summed (`from_zarr(..).sum()`), the sum checked against the persisted array's. The
//!   baseline (`files_*`) is a hand-written rsmpi program of 4 ranks whose 2 writer ranks
//!   (as many as mpidask's workers) write the same number of 200 MB chunks as plain files
//!   with `std::fs::write`, then read them back with `std::fs::read` and sum them; it
//!   shares no code with mpidask. Both write into the page cache of one local disk and
//!   read from it. Target: `zarr_*_vs_files` >= 0.7.
//! * `netcdf_read_gb_per_s`: a netCDF-4 file of 4 GB of `f64` (written once by
//!   `to_netcdf`, untimed) read and summed by the 2 workers (`from_netcdf(..).sum()`,
//!   each chunk a hyperslab read by a worker), against one process of the C library
//!   reading it in 200 MB slabs and summing (`benches/netcdf_read.c`, built with
//!   `cc -O3 -march=native -lnetcdf`). From the page cache. Target: `netcdf_read_vs_c` >= 1.5.
//!
//! * `dataset_mean_gb_per_s`: a dataset of one (time, lat, lon) `f64` variable, 2 GB in
//!   a Zarr store (format 3, zstd, chunks of 24 x 721 x 1440, about 200 MB; written once,
//!   untimed), opened, averaged over time and written to another store:
//!   `Dataset::open_zarr(..).mean("time").to_zarr(..)`, against the same with xarray on a
//!   dask-mpi cluster of the same shape (`benches/xarray_mean.py`, the peers' venv), the
//!   written means' sums compared. Goal: `dataset_mean_vs_xarray` >= 10.
//!
//! The binary is also the jobs it measures: started with `MPIDASK_BENCH_ROLE=zarr`,
//! `netcdf_make`, `netcdf`, `dataset_make`, `dataset_mean` (mpidask) or `files` (the
//! baseline) under `mpirun`.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use anyhow::ensure;
use common::{figure, ratio, rounds, size};
use mpidask::array::{self, Compression, ZarrOptions, random};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{mpirun, run_with_deadline};

const NP: usize = 4;
const DEADLINE: Duration = Duration::from_secs(1800);
/// Columns of the arrays: a 200 MB chunk is 5000 rows.
const COLS: usize = 5000;
/// The dataset's grid: a quarter degree.
const LAT: usize = 721;
const LON: usize = 1440;

fn env_usize(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not set to a number"))
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set")))
}

/// The mpidask job: write a persisted array to Zarr (timed), read it back and sum it
/// (timed), check the sum.
fn role_zarr(client: &mpidask::Client) -> anyhow::Result<()> {
    let (dir, rows, chunk_rows) = (
        env_path("BENCH_DIR"),
        env_usize("BENCH_ROWS"),
        env_usize("BENCH_CHUNK_ROWS"),
    );
    let x = random::uniform(0.0, 1.0, &[rows, COLS], &[chunk_rows, COLS], 7).persist(client)?;
    let expected = x.sum().compute_scalar::<f64>(client)?;
    let options = ZarrOptions::default()
        .compression(Compression::None)
        .overwrite(true);
    let started = Instant::now();
    x.to_zarr_with(client, &dir, "x", &options)?;
    println!("MEASURE write_seconds={}", started.elapsed().as_secs_f64());
    drop(x);
    let started = Instant::now();
    let sum = array::from_zarr(&dir, "x")?
        .sum()
        .compute_scalar::<f64>(client)?;
    println!("MEASURE read_seconds={}", started.elapsed().as_secs_f64());
    ensure!(
        (sum - expected).abs() <= 1e-9 * expected.abs(),
        "read back {sum}, wrote {expected}"
    );
    println!("MEASURE checked=1");
    Ok(())
}

/// The mpidask job that writes the netCDF file (untimed) and prints its sum.
fn role_netcdf_make(client: &mpidask::Client) -> anyhow::Result<()> {
    let (path, rows, chunk_rows) = (
        env_path("BENCH_FILE"),
        env_usize("BENCH_ROWS"),
        env_usize("BENCH_CHUNK_ROWS"),
    );
    let x = random::uniform(0.0, 1.0, &[rows, COLS], &[chunk_rows, COLS], 8);
    x.to_netcdf(client, &path, "x", &["row", "col"])?;
    let sum = array::from_netcdf(&path, "x")?
        .sum()
        .compute_scalar::<f64>(client)?;
    println!("MEASURE sum={sum:.17e}");
    Ok(())
}

/// The mpidask job: read the netCDF file and sum it (timed).
fn role_netcdf(client: &mpidask::Client) -> anyhow::Result<()> {
    let path = env_path("BENCH_FILE");
    let started = Instant::now();
    let sum = array::from_netcdf(&path, "x")?
        .sum()
        .compute_scalar::<f64>(client)?;
    println!("MEASURE seconds={}", started.elapsed().as_secs_f64());
    println!("MEASURE sum={sum:.17e}");
    Ok(())
}

/// The mpidask job that writes the dataset's source store (untimed).
fn role_dataset_make(client: &mpidask::Client) -> anyhow::Result<()> {
    use mpidask::dataset::DataArray;
    let (dir, steps, chunk_steps) = (
        env_path("BENCH_DIR"),
        env_usize("BENCH_ROWS"),
        env_usize("BENCH_CHUNK_ROWS"),
    );
    let (ny, nx) = (LAT, LON);
    let t = random::uniform(250.0, 300.0, &[steps, ny, nx], &[chunk_steps, ny, nx], 9);
    let lat: Vec<f64> = (0..ny).map(|j| 90.0 - 0.25 * j as f64).collect();
    let lon: Vec<f64> = (0..nx).map(|i| 0.25 * i as f64).collect();
    let time: Vec<i64> = (0..steps as i64).collect();
    DataArray::new("t", t, &["time", "lat", "lon"])?
        .with_coord("time", time)?
        .with_coord("lat", lat)?
        .with_coord("lon", lon)?
        .with_attr("units", "K")
        .into_dataset()?
        .to_zarr(client, dir.join("src.zarr"))?;
    Ok(())
}

/// The mpidask job: the mean over time of the source store, written to another (timed).
fn role_dataset_mean(client: &mpidask::Client) -> anyhow::Result<()> {
    use mpidask::dataset::Dataset;
    let dir = env_path("BENCH_DIR");
    let options = ZarrOptions::default().overwrite(true);
    let started = Instant::now();
    Dataset::open_zarr(dir.join("src.zarr"))?
        .mean("time")?
        .to_zarr_with(client, dir.join("ours.zarr"), &options)?;
    println!("MEASURE seconds={}", started.elapsed().as_secs_f64());
    let sum = Dataset::open_zarr(dir.join("ours.zarr"))?
        .get("t")?
        .data()
        .sum()
        .compute_scalar::<f64>(client)?;
    println!("MEASURE sum={sum:.17e}");
    Ok(())
}

/// The baseline: ranks 2.. write their share of the chunks as plain files, read them
/// back and sum them; rank 0 times both between barriers. MPI and std only.
fn role_files() {
    use mpi::collective::SystemOperation;
    use mpi::traits::*;
    let universe = mpi::initialize().expect("MPI initializes");
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let (dir, chunks, chunk_rows) = (
        env_path("BENCH_DIR"),
        env_usize("BENCH_CHUNKS"),
        env_usize("BENCH_CHUNK_ROWS"),
    );
    let writers = size.saturating_sub(2).max(1);
    let mine: Vec<usize> = if rank >= 2 {
        (rank - 2..chunks).step_by(writers).collect()
    } else {
        Vec::new()
    };
    let n = chunk_rows * COLS;
    // The values, made before anything is timed.
    let data: Vec<Vec<u8>> = mine
        .iter()
        .map(|&k| {
            (0..n)
                .flat_map(|i| (((k * n + i) % 1000) as f64 * 1e-3).to_le_bytes())
                .collect()
        })
        .collect();
    let expected: f64 = data
        .iter()
        .flat_map(|b| b.chunks_exact(8))
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .sum();
    world.barrier();
    let started = Instant::now();
    for (k, bytes) in mine.iter().zip(&data) {
        let path = dir.join(k.to_string());
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    world.barrier();
    let write_seconds = started.elapsed().as_secs_f64();
    drop(data);
    world.barrier();
    let started = Instant::now();
    let mut sum = 0.0f64;
    for k in &mine {
        let path = dir.join(k.to_string());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sum += bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .sum::<f64>();
    }
    world.barrier();
    let read_seconds = started.elapsed().as_secs_f64();
    assert!(
        (sum - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "rank {rank} read back {sum}, wrote {expected}"
    );
    let mut checked = 0u64;
    world.all_reduce_into(&1u64, &mut checked, SystemOperation::sum());
    if rank == 0 {
        println!("MEASURE write_seconds={write_seconds}");
        println!("MEASURE read_seconds={read_seconds}");
        println!("MEASURE checked={}", u64::from(checked == size as u64));
    }
}

/// Builds the C baseline into `target/bench/`.
fn build_c_reader() -> PathBuf {
    common::build_c(
        ("CC", "cc"),
        "netcdf_read.c",
        &["-lnetcdf"],
        "make deps installs gcc and libnetcdf-dev",
    )
}

fn sync() {
    let synced = Command::new("sync").status().expect("sync runs");
    assert!(synced.success(), "sync failed");
}

fn bench_zarr(exe: &Path, gb: f64, chunk_rows: usize) {
    let rows = ((gb * 1e9 / (COLS * 8) as f64) as usize / chunk_rows).max(1) * chunk_rows;
    let chunks = rows / chunk_rows;
    let bytes = (rows * COLS * 8) as f64;
    let dir = std::env::temp_dir().join(format!("mpidask-bench-stores-{}", std::process::id()));
    let (mut ours_w, mut ours_r, mut base_w, mut base_r) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        sync();
        let mut command = mpirun(NP, exe, &[]);
        command
            .env("MPIDASK_BENCH_ROLE", "zarr")
            .env("MPIDASK_MEMORY_LIMIT", "10GB")
            .env("BENCH_DIR", dir.join("x.zarr"))
            .env("BENCH_ROWS", rows.to_string())
            .env("BENCH_CHUNK_ROWS", chunk_rows.to_string());
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        assert_eq!(run.measures("checked"), vec![1.0], "{}", run.dump());
        ours_w.push(bytes / 1e9 / run.measures("write_seconds")[0]);
        ours_r.push(bytes / 1e9 / run.measures("read_seconds")[0]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        sync();
        let mut command = mpirun(NP, exe, &[]);
        command
            .env("MPIDASK_BENCH_ROLE", "files")
            .env("BENCH_DIR", &dir)
            .env("BENCH_CHUNKS", chunks.to_string())
            .env("BENCH_CHUNK_ROWS", chunk_rows.to_string());
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        assert_eq!(run.measures("checked"), vec![1.0], "{}", run.dump());
        base_w.push(bytes / 1e9 / run.measures("write_seconds")[0]);
        base_r.push(bytes / 1e9 / run.measures("read_seconds")[0]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    figure("zarr_write_gb_per_s", "GB/s", &ours_w, None);
    figure("files_write_gb_per_s", "GB/s", &base_w, None);
    ratio(
        "zarr_write_vs_files",
        &ours_w,
        &base_w,
        false,
        "files_write_gb_per_s",
    );
    figure("zarr_read_gb_per_s", "GB/s", &ours_r, None);
    figure("files_read_gb_per_s", "GB/s", &base_r, None);
    ratio(
        "zarr_read_vs_files",
        &ours_r,
        &base_r,
        false,
        "files_read_gb_per_s",
    );
    println!(
        "# zarr: {:.2} GB in {chunks} chunks of {chunk_rows} x {COLS} f64",
        bytes / 1e9
    );
}

fn bench_netcdf(exe: &Path, gb: f64, chunk_rows: usize) {
    let reader = build_c_reader();
    let rows = ((gb * 1e9 / (COLS * 8) as f64) as usize).max(1);
    let bytes = (rows * COLS * 8) as f64;
    let dir = std::env::temp_dir().join(format!("mpidask-bench-netcdf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("x.nc");
    let mut command = mpirun(NP, exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", "netcdf_make")
        .env("BENCH_FILE", &file)
        .env("BENCH_ROWS", rows.to_string())
        .env("BENCH_CHUNK_ROWS", chunk_rows.to_string());
    let run = run_with_deadline(command, DEADLINE);
    run.expect_code(0);
    let expected = run.measures("sum")[0];
    sync();
    let close = |sum: f64, who: &str| {
        assert!(
            (sum - expected).abs() <= 1e-9 * expected.abs(),
            "{who} summed {sum}, the file holds {expected}"
        );
    };
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..rounds() {
        let mut command = mpirun(NP, exe, &[]);
        command
            .env("MPIDASK_BENCH_ROLE", "netcdf")
            .env("BENCH_FILE", &file);
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        close(run.measures("sum")[0], "mpidask");
        ours.push(bytes / 1e9 / run.measures("seconds")[0]);
        let mut command = Command::new(&reader);
        command.arg(&file).arg("x");
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        close(run.measures("sum")[0], "the C library");
        theirs.push(bytes / 1e9 / run.measures("seconds")[0]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    figure("netcdf_read_gb_per_s", "GB/s", &ours, None);
    figure("netcdf_c_read_gb_per_s", "GB/s", &theirs, None);
    ratio(
        "netcdf_read_vs_c",
        &ours,
        &theirs,
        false,
        "netcdf_c_read_gb_per_s",
    );
    println!(
        "# netcdf: {:.2} GB, {rows} x {COLS} f64, contiguous",
        bytes / 1e9
    );
}

fn bench_dataset(exe: &Path, gb: f64) {
    let step = (LAT * LON * 8) as f64;
    let chunk_steps = size(24, 2);
    let steps = ((gb * 1e9 / step) as usize / chunk_steps).max(1) * chunk_steps;
    let bytes = steps as f64 * step;
    let python = (!common::smoke()).then(|| common::peer_python("dask_mpi"));
    let dir = std::env::temp_dir().join(format!("mpidask-bench-dataset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let mut command = mpirun(NP, exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", "dataset_make")
        .env("BENCH_DIR", &dir)
        .env("BENCH_ROWS", steps.to_string())
        .env("BENCH_CHUNK_ROWS", chunk_steps.to_string());
    run_with_deadline(command, DEADLINE).expect_code(0);
    sync();
    let (mut ours, mut theirs) = (vec![], vec![]);
    for _ in 0..rounds() {
        let mut command = mpirun(NP, exe, &[]);
        command
            .env("MPIDASK_BENCH_ROLE", "dataset_mean")
            .env("BENCH_DIR", &dir);
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        let sum = run.measures("sum")[0];
        ours.push(bytes / 1e9 / run.measures("seconds")[0]);
        if let Some(python) = &python {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/xarray_mean.py");
            let mut command = mpirun(NP, python, &[]);
            command
                .arg(script)
                .arg(dir.join("src.zarr"))
                .arg(dir.join("xarray.zarr"));
            let run = run_with_deadline(command, DEADLINE);
            run.expect_code(0);
            let theirs_sum = run.measures("sum")[0];
            assert!(
                (sum - theirs_sum).abs() <= 1e-9 * theirs_sum.abs(),
                "the written means differ: mpidask's sum {sum}, xarray's {theirs_sum}"
            );
            theirs.push(bytes / 1e9 / run.measures("seconds")[0]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    figure("dataset_mean_gb_per_s", "GB/s", &ours, None);
    if python.is_some() {
        figure("xarray_daskmpi_mean_gb_per_s", "GB/s", &theirs, None);
        ratio(
            "dataset_mean_vs_xarray",
            &ours,
            &theirs,
            false,
            "xarray_daskmpi_mean_gb_per_s",
        );
    }
    println!(
        "# dataset: {:.2} GB, {steps} x {LAT} x {LON} f64 in chunks of {chunk_steps} steps, zstd",
        bytes / 1e9
    );
}

fn main() {
    match std::env::var("MPIDASK_BENCH_ROLE").as_deref() {
        Ok("zarr") => mpidask::run(role_zarr),
        Ok("dataset_make") => mpidask::run(role_dataset_make),
        Ok("dataset_mean") => mpidask::run(role_dataset_mean),
        Ok("netcdf_make") => mpidask::run(role_netcdf_make),
        Ok("netcdf") => mpidask::run(role_netcdf),
        Ok("files") => {
            role_files();
            return;
        }
        _ => {}
    }
    let exe = std::env::current_exe().expect("current exe");
    let gb: f64 = std::env::var("MPIDASK_BENCH_STORE_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(size(10.0, 0.02));
    let chunk_rows = size(5000, 100);
    let wanted = common::wanted_by_args();
    if ["zarr_write_gb_per_s", "zarr_read_gb_per_s"]
        .iter()
        .any(|n| wanted(n))
    {
        bench_zarr(&exe, gb, chunk_rows);
    }
    if wanted("netcdf_read_gb_per_s") {
        bench_netcdf(&exe, size(4.0, 0.02), chunk_rows);
    }
    if wanted("dataset_mean_gb_per_s") {
        let gb: f64 = std::env::var("MPIDASK_BENCH_DATASET_GB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(size(2.0, 0.01));
        bench_dataset(&exe, gb);
    }
}
