//! Integration tests that launch real jobs under `mpirun` (3 to 6 ranks) and in local mode,
//! and check their output and exit codes.
//!
//! The test binary is also the program under test: started with `MPIDASK_SCENARIO=<name>`
//! it runs that scenario through `mpidask::run` (this is how each test's job runs under
//! `mpirun`); started normally it runs the tests.

mod support;

use anyhow::{anyhow, ensure};
use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::{Client, Error, ExitCode, TaskError, TaskOptions};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use support::{
    Launcher, Run, check, example, impure, local_command, mpirun, run_with_deadline,
    run_with_trigger, signal_members,
};

/// Deadline of every job a test starts.
const DEADLINE: Duration = Duration::from_secs(60);

// ----- task functions used by the scenarios ----------------------------------------------

fn square(x: u64) -> u64 {
    x * x
}

fn inc(x: i64) -> i64 {
    x + 1
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn total(values: Vec<u64>) -> u64 {
    values.into_iter().sum()
}

fn sum_f64(values: Vec<f64>) -> f64 {
    values.into_iter().sum()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn my_rank() -> u32 {
    mpidask::worker_rank().expect("runs on a worker").0
}

fn refuse_seven(x: u32) -> u32 {
    assert_ne!(x, 7, "seven is not allowed");
    x
}

fn checked_div(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        Err(format!("division of {a} by zero"))
    } else {
        Ok(a / b)
    }
}

/// Fails the first time it runs for `marker` (it creates the file), succeeds afterwards.
fn fails_once(marker: String) -> u32 {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        panic!("first attempt fails on purpose");
    }
    42
}

/// Kills the worker process running it (SIGKILL), as the OOM killer would.
fn kill_own_worker(_: ()) -> u32 {
    // SAFETY: sending a signal to this process has no memory-safety preconditions.
    unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// Aborts the worker process running it.
fn abort_own_worker(_: ()) -> u32 {
    std::process::abort()
}

fn checksum(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|b| *b as u64).sum()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A block of bytes encoded as one byte string (not byte by byte).
#[derive(serde::Serialize, serde::Deserialize)]
struct Blob(serde_bytes::ByteBuf);

/// A blob of `len` bytes, byte i being `i % 251`.
fn make_blob(len: usize) -> Blob {
    let mut bytes = vec![0u8; len];
    for (i, b) in bytes.iter_mut().enumerate().step_by(4096) {
        *b = (i % 251) as u8;
    }
    Blob(serde_bytes::ByteBuf::from(bytes))
}

/// The blob's length, if its sampled bytes are what `make_blob` wrote.
fn check_blob(blob: Blob) -> Option<usize> {
    let bytes = blob.0;
    let intact = bytes
        .iter()
        .enumerate()
        .step_by(4096)
        .all(|(i, b)| *b == (i % 251) as u8);
    intact.then_some(bytes.len())
}

// ----- scenarios (run under mpirun) --------------------------------------------------------

fn scenario_success(client: &Client) -> anyhow::Result<()> {
    // map + gather
    let squares = client.map(square, 0..200u64);
    let values = client.gather(&squares)?;
    ensure!(values == (0..200u64).map(|x| x * x).collect::<Vec<_>>());

    // A chain: each link depends on the previous one.
    let mut x = client.submit(inc, 0i64);
    for _ in 0..99 {
        x = client.submit(inc, &x);
    }
    ensure!(x.result()? == 100);

    // Two futures as two arguments, a list of futures as one Vec argument.
    let a = client.submit(inc, 1i64);
    let b = client.submit(inc, &a);
    ensure!(client.submit(add, (a, b)).result()? == 5);
    let sum = client.submit(total, squares.clone());
    ensure!(sum.result()? == values.iter().sum::<u64>());

    // scatter: one value used by a task on the worker holding it.
    let data = client.scatter(vec![0.5f64; 1000])?;
    ensure!(client.submit(sum_f64, &data).result()? == 500.0);
    ensure!(data.result()?.len() == 1000);

    // A broadcast scatter: every worker holds the value, read by a task pinned to each.
    let shared = client.scatter_broadcast(pattern(300_000))?;
    for rank in client.workers().to_vec() {
        let read = client
            .with_options(TaskOptions::default().workers([rank.0]))
            .submit(checksum, &shared);
        ensure!(read.result()? == checksum(pattern(300_000)), "on {rank}");
    }

    // as_completed yields every future once, the fastest first.
    let sleepers = client.map(sleep_ms, [400u64, 1, 150]);
    let order: Vec<u64> = client
        .as_completed(&sleepers)
        .map(|f| f.result())
        .collect::<Result<_, _>>()?;
    ensure!(
        order.len() == 3 && order[0] == 1,
        "completion order {order:?}"
    );
    client.wait(&sleepers)?;
    ensure!(sleepers.iter().all(|f| f.done()));

    // A value made on one worker and read by a task on another moves worker to worker.
    let (first, last) = (client.workers()[0].0, client.workers().last().unwrap().0);
    let made = client
        .with_options(TaskOptions::default().workers([first]))
        .submit(pattern, 100_000usize);
    let read = client
        .with_options(TaskOptions::default().workers([last]))
        .submit(checksum, &made);
    ensure!(read.result()? == checksum(pattern(100_000)));

    // Pinning: a task pinned to a rank runs there.
    for rank in client.workers().to_vec() {
        let pinned = client
            .with_options(TaskOptions::default().workers([rank.0]))
            .submit(my_rank, ());
        ensure!(pinned.result()? == rank.0, "pinned to {rank}");
    }

    // A panicking task: an error for it and its dependents, and the workers carry on.
    let bad = client.submit(refuse_seven, 7u32);
    let dependent = client.submit(refuse_seven, &bad);
    match bad.result() {
        Err(Error::Task(TaskError { key, message })) => {
            ensure!(key == bad.name(), "key {key} vs {}", bad.name());
            ensure!(key.starts_with("refuse_seven-"), "{key}");
            ensure!(message.contains("seven is not allowed"), "{message}");
            ensure!(message.contains("panicked at"), "{message}");
        }
        other => return Err(anyhow!("expected a task error, got {other:?}")),
    }
    match dependent.result() {
        Err(Error::Task(e)) => ensure!(e.key == bad.name(), "same cause: {e}"),
        other => return Err(anyhow!("expected the same task error, got {other:?}")),
    }
    match client.try_submit(checked_div, (1i64, 0i64)).result() {
        Err(Error::Task(e)) => ensure!(e.message == "division of 1 by zero", "{e}"),
        other => return Err(anyhow!("expected Err from try_submit, got {other:?}")),
    }
    ensure!(client.try_submit(checked_div, (9i64, 3i64)).result()? == 3);

    // Cancel: the task and its dependent report Cancelled.
    let slow = client.submit(sleep_ms, 1500u64);
    let after = client.submit(sleep_ms, &slow);
    client.cancel(std::slice::from_ref(&slow));
    ensure!(matches!(slow.result(), Err(Error::Cancelled { .. })));
    ensure!(matches!(after.result(), Err(Error::Cancelled { .. })));

    let again = client.gather(&client.map(square, 0..10u64))?;
    ensure!(again.iter().sum::<u64>() == 285);
    let info = client.scheduler_info()?;
    ensure!(info.workers.len() == client.workers().len());
    println!("SCENARIO success OK workers={}", info.workers.len());
    Ok(())
}

fn scenario_retry(client: &Client) -> anyhow::Result<()> {
    let dir = std::env::var("MPIDASK_TEST_DIR")?;
    let with_retry = client
        .with_options(TaskOptions::default().retries(1))
        .submit(fails_once, format!("{dir}/with-retry"));
    ensure!(with_retry.result()? == 42);
    let without = client.submit(fails_once, format!("{dir}/without-retry"));
    ensure!(matches!(without.result(), Err(Error::Task(_))));
    println!("SCENARIO retry OK");
    Ok(())
}

fn scenario_resources(client: &Client) -> anyhow::Result<()> {
    // Not pure: four tasks, not one (and the one below is not this one either).
    let on_gpu = client
        .with_options(TaskOptions::default().resource("gpu", 1.0).pure(false))
        .map(my_rank, vec![(); 4]);
    let ranks: BTreeSet<u32> = client.gather(&on_gpu)?.into_iter().collect();
    ensure!(ranks == BTreeSet::from([3]), "gpu tasks ran on {ranks:?}");
    let too_much = client
        .with_options(TaskOptions::default().resource("gpu", 2.0).pure(false))
        .submit(my_rank, ());
    match too_much.result() {
        Err(Error::Task(e)) => {
            ensure!(e.message.contains("it needs gpu=2"), "{e}");
            ensure!(e.message.contains("gpu=1 on rank 3"), "{e}");
        }
        other => return Err(anyhow!("expected unschedulable, got {other:?}")),
    }
    println!("SCENARIO resources OK");
    Ok(())
}

fn scenario_big_messages(client: &Client) -> anyhow::Result<()> {
    // With MPIDASK_MESSAGE_PART_BYTES small, these frames travel in many parts.
    let data = client.scatter(pattern(300_000))?;
    let sum = client.submit(checksum, &data);
    ensure!(sum.result()? == checksum(pattern(300_000)));
    let back = client.submit(pattern, 500_000usize);
    ensure!(back.result()? == pattern(500_000));
    println!("SCENARIO big_messages OK");
    Ok(())
}

/// `len` values from `seed`.
fn ramp(len: usize, seed: f64) -> Vec<f64> {
    (0..len).map(|i| seed + i as f64 * 1e-3).collect()
}

/// A vector of 8 MB.
fn ramp_of(seed: u64) -> Vec<f64> {
    ramp(1_000_000, seed as f64)
}

fn twice(values: Vec<f64>) -> Vec<f64> {
    values.into_iter().map(|v| 2.0 * v).collect()
}

fn sum_grid(grid: ndarray::Array2<f64>) -> f64 {
    grid.sum()
}

fn dot_pair((a, b): (Vec<f64>, Vec<f64>)) -> f64 {
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

/// Large task arguments go from the client straight to a worker: the scheduler rank
/// receives only keys and sizes. Small ones travel inline, through it.
fn scenario_large_args(client: &Client) -> anyhow::Result<()> {
    let received = || -> anyhow::Result<u64> { Ok(client.scheduler_info()?.received_bytes) };
    // 24 arguments of 1 MB, one task each, mapped twice, and 4 tasks of two such arguments.
    let large: Vec<Vec<f64>> = (0..24).map(|i| ramp(131_072, i as f64)).collect();
    let expected: Vec<f64> = large.iter().map(|v| v.iter().sum()).collect();
    let before = received()?;
    let sums = client.map(sum_f64, large.clone());
    let totals = client.gather(&sums)?;
    ensure!(totals == expected, "sums of the large arguments");
    let pairs: Vec<(Vec<f64>, Vec<f64>)> = (0..4)
        .map(|i| (large[i].clone(), large[i + 4].clone()))
        .collect();
    let dots = client.gather(&client.map(dot_pair, pairs.clone()))?;
    ensure!(dots == pairs.into_iter().map(dot_pair).collect::<Vec<_>>());
    let pinned = client
        .with_options(mpidask::TaskOptions::default().workers([2]))
        .submit(sum_f64, large[0].clone());
    ensure!(pinned.result()? == expected[0]);
    // An array of 1 MB, in order in memory (sent from where it lies) and transposed.
    let grid = ndarray::Array2::from_shape_fn((256, 512), |(i, j)| (i * 512 + j) as f64);
    let grid_sums = client.gather(&client.map(sum_grid, [grid.clone(), grid.t().to_owned()]))?;
    ensure!(grid_sums == [grid.sum(), grid.sum()], "sums of the arrays");
    // Large results stay as they were made, read there by the next task, by another
    // worker and by the client.
    let doubled = client.map(twice, large[..4].to_vec());
    let on_two = client.with_options(TaskOptions::default().workers([2]));
    let sums_on_two = client.gather(&on_two.map(sum_f64, &doubled))?;
    let want: Vec<Vec<f64>> = large[..4].iter().cloned().map(twice).collect();
    ensure!(sums_on_two == want.iter().map(|v| v.iter().sum()).collect::<Vec<f64>>());
    ensure!(client.gather(&doubled)? == want, "large results gathered");
    let direct = received()? - before;
    // 64 arguments of 32 KiB: below the threshold, they travel inline through rank 0.
    let small: Vec<Vec<f64>> = (0..64).map(|i| ramp(4096, i as f64)).collect();
    let before = received()?;
    let small_sums = client.gather(&client.map(sum_f64, small.clone()))?;
    ensure!(small_sums == small.iter().map(|v| v.iter().sum()).collect::<Vec<f64>>());
    let inline = received()? - before;
    let large_bytes = 35 * 1_048_576u64;
    ensure!(
        direct < large_bytes / 100,
        "the scheduler received {direct} bytes while {large_bytes} bytes of large arguments \
         were sent: they must go straight to the workers"
    );
    ensure!(
        inline >= 64 * 32_768,
        "the scheduler received only {inline} bytes for 2 MiB of small inline arguments"
    );
    println!("SCENARIO large_args OK direct={direct} inline={inline}");
    Ok(())
}

fn scenario_arrays(client: &Client) -> anyhow::Result<()> {
    use mpidask::array::{self, DType, Span, random};
    let x = random::uniform(-1.0, 1.0, &[1000, 7], &[130, 3], 11);
    let y = random::normal(0.0, 1.0, &[7], &[4], 12);
    let z = (&x * &y + 1.0).powi(2);
    let values = [
        z.sum().compute_scalar::<f64>(client)?,
        z.mean_axis(0).sum().compute_scalar::<f64>(client)?,
        x.std_axis(1).max().compute_scalar::<f64>(client)?,
        x.argmax()
            .astype(DType::F64)
            .compute_scalar::<f64>(client)?,
        x.gt(0.5)
            .count_nonzero()
            .astype(DType::F64)
            .compute_scalar::<f64>(client)?,
        x.slice(&[Span::new(Some(3), None, 7)])
            .t()
            .dot(&x.slice(&[Span::new(Some(3), None, 7)]))
            .sum()
            .compute_scalar::<f64>(client)?,
        array::concatenate(&[x.clone(), x.rechunk(&[77, 7])], 0)
            .var()
            .compute_scalar::<f64>(client)?,
        // Through Dask's stack of .npy files: each block written and read by a worker.
        {
            let dir = std::env::temp_dir().join(format!("mpidask-stack-{}", std::process::id()));
            z.to_npy_stack(client, &dir, 0)?;
            let back = array::from_npy_stack(&dir)?;
            anyhow::ensure!(back.chunks()[0].len() == 8, "{:?}", back.chunks());
            let sum = back.sum().compute_scalar::<f64>(client)?;
            std::fs::remove_dir_all(&dir)?;
            sum
        },
    ];
    // Through a Zarr store, in store chunks that the array's do not line up with (so
    // rechunked before the workers write them), read back in other chunks.
    #[cfg(feature = "zarr")]
    let values = {
        use mpidask::array::ZarrOptions;
        let mut values = values.to_vec();
        let dir = std::env::temp_dir().join(format!("mpidask-zarr-{}", std::process::id()));
        let options = ZarrOptions::default().chunks(&[100, 7]).overwrite(true);
        z.to_zarr_with(client, &dir, "z", &options)?;
        let back = array::from_zarr(&dir, "z")?;
        ensure!(back.chunks()[0].len() == 10, "{:?}", back.chunks());
        let again = array::from_zarr_chunked(&dir, "z", &[300, 2])?;
        values.push(back.sum().compute_scalar::<f64>(client)?);
        values.push(again.max().compute_scalar::<f64>(client)?);
        // int32 kept as int32.
        let codes = (&z * 100.0).astype(DType::I32);
        codes.to_zarr_with(client, &dir, "codes", &options)?;
        let back = array::from_zarr(&dir, "codes")?;
        ensure!(back.dtype() == DType::I32, "{:?}", back.dtype());
        values.push(back.sum().compute_scalar::<i64>(client)? as f64);
        std::fs::remove_dir_all(&dir)?;
        values
    };
    // Through an HDF5 and a netCDF-4 file: each worker writes its chunks' bytes, each reads
    // its hyperslabs.
    #[cfg(all(feature = "hdf5", feature = "netcdf"))]
    let values = {
        let mut values = values.to_vec();
        let dir = std::env::temp_dir().join(format!("mpidask-hdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (h5, nc) = (dir.join("z.h5"), dir.join("z.nc"));
        // uint8 kept as uint8 in both.
        let levels = (&z * 10.0).abs().astype(DType::U8);
        array::store_hdf5(client, &h5, &[("z", &z), ("g/x", &x), ("levels", &levels)])?;
        array::store_netcdf(
            client,
            &nc,
            &[
                ("z", &z, &["row", "col"]),
                ("levels", &levels, &["row", "col"]),
            ],
        )?;
        for back in [
            array::from_hdf5(&h5, "levels")?,
            array::from_netcdf(&nc, "levels")?,
        ] {
            ensure!(back.dtype() == DType::U8, "{:?}", back.dtype());
            values.push(
                back.max()
                    .astype(DType::I64)
                    .compute_scalar::<i64>(client)? as f64,
            );
            values.push(back.sum().compute_scalar::<i64>(client)? as f64);
        }
        let from_h5 = array::from_hdf5_chunked(&h5, "z", &[90, 7])?;
        let from_nc = array::from_netcdf_chunked(&nc, "z", &[250, 4])?;
        values.push(from_h5.sum().compute_scalar::<f64>(client)?);
        values.push(
            (&from_nc - &from_h5)
                .abs()
                .max()
                .compute_scalar::<f64>(client)?,
        );
        values.push(
            array::from_hdf5(&h5, "g/x")?
                .min()
                .compute_scalar::<f64>(client)?,
        );
        std::fs::remove_dir_all(&dir)?;
        values
    };
    // Through a labelled dataset: written to netCDF and Zarr with its coordinate and
    // attributes, opened again, selected by label and reduced by dimension name.
    #[cfg(all(feature = "zarr", feature = "netcdf"))]
    let values = {
        use mpidask::dataset::{DataArray, Dataset, Label};
        let mut values = values.to_vec();
        let dir = std::env::temp_dir().join(format!("mpidask-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let rows: Vec<f64> = (0..z.shape()[0]).map(|i| i as f64 * 0.5).collect();
        let ds = DataArray::new("z", z.clone(), &["row", "col"])?
            .with_coord("row", rows)?
            .with_attr("units", "m")
            .into_dataset()?
            .with_attr("title", "scenario");
        ds.to_netcdf(client, dir.join("z.nc"))?;
        ds.to_zarr(client, dir.join("z.zarr"))?;
        for opened in [
            Dataset::open_netcdf(dir.join("z.nc"))?,
            Dataset::open_zarr(dir.join("z.zarr"))?,
        ] {
            ensure!(opened.attrs()["title"].as_str() == Some("scenario"));
            let z = opened.get("z")?;
            ensure!(z.attrs()["units"].as_str() == Some("m"), "{:?}", z.attrs());
            let window = z.sel("row", Label::Between(10.0, 99.5))?.mean("row")?;
            ensure!(window.dims() == ["col"], "{:?}", window.dims());
            values.push(window.data().sum().compute_scalar::<f64>(client)?);
        }
        std::fs::remove_dir_all(&dir)?;
        values
    };
    let digest: Vec<String> = values
        .iter()
        .map(|v| format!("{:016x}", v.to_bits()))
        .collect();
    println!("DIGEST {}", digest.join(","));
    Ok(())
}

fn word_of(x: u64) -> String {
    ["alpha", "beta", "gamma", "delta", "epsilon"][(x * x % 5) as usize].to_string()
}

// A bag of `String` hands `filter` and `topk` each element as `&String`.
#[allow(clippy::ptr_arg)]
fn is_long(word: &String) -> bool {
    word.len() > 4
}

#[allow(clippy::ptr_arg)]
fn word_len(word: &String) -> usize {
    word.len()
}

/// Most numbers share one key: a skewed shuffle.
fn skewed_key(x: &u64) -> u64 {
    if x.is_multiple_of(10) { x % 7 } else { 99 }
}

fn group_sizes(groups: Vec<(u64, Vec<u64>)>) -> Vec<(u64, usize)> {
    groups.into_iter().map(|(k, xs)| (k, xs.len())).collect()
}

fn add_u64(a: u64, b: u64) -> u64 {
    a + b
}

fn scenario_bags(client: &Client) -> anyhow::Result<()> {
    use mpidask::bag::Bag;
    let numbers = Bag::range(client, 1000, 7);
    let words = numbers.map(word_of);
    // A shuffle between the workers, skewed; every group in one output partition.
    let mut groups = group_sizes(numbers.groupby(skewed_key, 5).compute()?);
    groups.sort_unstable();
    ensure!(
        groups.iter().map(|(_, n)| n).sum::<usize>() == 1000,
        "{groups:?}"
    );
    println!(
        "BAGS2 groups={groups:?} foldby={:?} joined={} repartitioned={}",
        numbers.foldby(skewed_key, add_u64, 0, add_u64).result()?,
        numbers
            .join(vec![(99u64, 'x'), (0, 'y'), (0, 'z')], skewed_key)?
            .count()
            .result()?,
        numbers.repartition(3)?.compute()? == (0..1000).collect::<Vec<u64>>(),
    );
    let report = format!(
        "count={} sum={} min={:?} max={:?} long={} freq={:?} top={:?} distinct={:?} mean={:.6}",
        numbers.count().result()?,
        numbers.map(square).sum().result()?,
        numbers.min().result()?,
        numbers.max().result()?,
        words.filter(is_long).count().result()?,
        words.frequencies().compute()?,
        words.topk(2, word_len).compute()?,
        words.distinct().compute()?,
        Bag::from_sequence(client, (0..100).map(|x| x as f64).collect(), 9)?.mean()?,
    );
    println!("BAGS {report}");
    // Bags and arrays, bags from delayed calls.
    let halves: Vec<mpidask::delayed::Delayed<Vec<u64>>> = [(0u64, 500u64), (500, 1000)]
        .into_iter()
        .map(|bounds| mpidask::delayed::delayed(numbers_between, bounds))
        .collect();
    let array = Bag::from_delayed(client, &halves).map(as_f64).to_array()?;
    println!(
        "BAGS3 array={:?} array_sum={} array_chunks={} multiples_of_7={}",
        array.shape(),
        (&array * 2.0).sum().compute_scalar::<f64>(client)?,
        array.num_chunks(),
        numbers
            .filter_with(is_multiple_of, &7u64)?
            .count()
            .result()?,
    );
    Ok(())
}

fn is_multiple_of(x: &u64, n: &u64) -> bool {
    x.is_multiple_of(*n)
}

fn numbers_between((start, end): (u64, u64)) -> Vec<u64> {
    (start..end).collect()
}

fn as_f64(x: u64) -> f64 {
    x as f64
}

/// Stops (SIGSTOP) the process of the last worker rank, as a hung node would look.
fn freeze_last_worker(client: &Client) -> anyhow::Result<u32> {
    let info = client.scheduler_info()?;
    let worker = info.workers.last().expect("a worker");
    // SAFETY: sending a signal has no memory-safety preconditions.
    let rc = unsafe { libc::kill(worker.hello.pid as i32, libc::SIGSTOP) };
    ensure!(rc == 0, "could not stop pid {}", worker.hello.pid);
    Ok(worker.rank.0)
}

/// The array suite at small sizes (`tests/support/array_suite.rs`): its inputs and every
/// workload's result written as JSON to `MPIDASK_SUITE_OUT`, for NumPy to check.
fn scenario_array_suite(client: &Client) -> anyhow::Result<()> {
    use support::array_suite::{Inputs, Sizes, compute_f64, to_json, workloads};
    let sizes = Sizes::small(2);
    let inputs = Inputs::new(&sizes, 11);
    let mut named = serde_json::Map::new();
    for (name, a) in inputs.named() {
        named.insert(name.into(), to_json(&compute_f64(client, a)?));
    }
    let inputs = inputs.persist(client)?;
    let mut results = serde_json::Map::new();
    for (name, build) in workloads(&sizes) {
        let a = build(&inputs);
        let value = compute_f64(client, &a).map_err(|e| anyhow!("{name}: {e}"))?;
        results.insert(name.into(), to_json(&value));
    }
    let out = std::env::var("MPIDASK_SUITE_OUT")?;
    let suite = serde_json::json!({"sizes": sizes, "inputs": named, "results": results});
    std::fs::write(&out, serde_json::to_vec(&suite)?)?;
    Ok(())
}

fn run_scenario(name: &str) -> ! {
    match name {
        "success" => mpidask::run(scenario_success),
        "retry" => mpidask::run(scenario_retry),
        "resources" => mpidask::run(scenario_resources),
        "big_messages" => mpidask::run(scenario_big_messages),
        "arrays" => mpidask::run(scenario_arrays),
        "large_args" => mpidask::run(scenario_large_args),
        "bags" => mpidask::run(scenario_bags),
        "array_suite" => mpidask::run(scenario_array_suite),
        "worker_killed" => mpidask::run(|client| -> anyhow::Result<()> {
            let _slow = client.map(sleep_ms, [3000u64, 3000]);
            client.submit(kill_own_worker, ()).result()?;
            Ok(())
        }),
        "worker_aborts" => mpidask::run(|client| -> anyhow::Result<()> {
            let _slow = client.map(sleep_ms, [3000u64, 3000]);
            client.submit(abort_own_worker, ()).result()?;
            Ok(())
        }),
        "wide" => mpidask::run(|client| -> anyhow::Result<()> {
            let workers = client.workers().len();
            let values = client.gather(&client.map(square, 0..(workers as u64 * 4)))?;
            ensure!(
                values.iter().sum::<u64>() == (0..workers as u64 * 4).map(|x| x * x).sum::<u64>()
            );
            println!("SCENARIO wide OK workers={workers}");
            Ok(())
        }),
        "bare_mpi" => {
            // A plain rsmpi program: the baseline for what MPI itself opens.
            let universe = mpi::initialize().expect("MPI initialises");
            println!("SCENARIO bare_mpi started");
            std::thread::sleep(Duration::from_secs(3));
            drop(universe);
            std::process::exit(0)
        }
        "slow_tasks" => mpidask::run(|client| -> anyhow::Result<()> {
            client.gather(&impure(client).map(sleep_ms, vec![2500u64; 2]))?;
            println!("SCENARIO slow_tasks OK");
            Ok(())
        }),
        "long_job" => mpidask::run(|client| -> anyhow::Result<()> {
            // Quick tasks first, so a trace of the stopped job has finished tasks in it.
            client.gather(&client.map(square, 0..8u64))?;
            let sleepers = impure(client).map(sleep_ms, vec![30_000u64; 4]);
            // The answer comes after the scheduler placed the tasks (all workers joined).
            client.scheduler_info()?;
            println!("SCENARIO long_job started");
            client.gather(&sleepers)?;
            Ok(())
        }),
        "million" => mpidask::run(|client| -> anyhow::Result<()> {
            let futures = client.map(square, 0..1_000_000u64);
            let values = client.gather(&futures)?;
            ensure!(values.len() == 1_000_000 && values[999] == 998_001);
            let peak = client.scheduler_info()?.peak_rss_bytes;
            println!(
                "SCENARIO million OK scheduler_peak_rss_mb={}",
                peak / 1_000_000
            );
            ensure!(peak <= 500_000_000, "the scheduler peaked at {peak} bytes");
            Ok(())
        }),
        "traced" => mpidask::run(|client| -> anyhow::Result<()> {
            ensure!(client.gather(&client.map(square, 0..30u64))?.len() == 30);
            ensure!(client.submit(refuse_seven, 7u32).result().is_err());
            let (first, last) = (client.workers()[0].0, client.workers().last().unwrap().0);
            let made = client
                .with_options(TaskOptions::default().workers([first]))
                .submit(pattern, 100_000usize);
            let read = client
                .with_options(TaskOptions::default().workers([last]))
                .submit(checksum, &made);
            ensure!(read.result()? == checksum(pattern(100_000)));
            println!("SCENARIO traced OK");
            Ok(())
        }),
        "huge_transfer" => mpidask::run(|client| -> anyhow::Result<()> {
            // Over 2 GiB: more than one MPI message can carry (counts are 32-bit).
            let len = (1usize << 31) + 100_000_000;
            let made = client
                .with_options(TaskOptions::default().workers([2]))
                .submit(make_blob, len);
            let checked = client
                .with_options(TaskOptions::default().workers([3]))
                .submit(check_blob, &made);
            ensure!(checked.result()? == Some(len), "the value arrived whole");
            println!("SCENARIO huge_transfer OK");
            Ok(())
        }),
        "spill" => mpidask::run(|client| -> anyhow::Result<()> {
            // Run with a 40 MB limit on 2 workers: 240 MB of chunks (3x the workers' memory)
            // kept on the workers must spill to finish.
            use mpidask::array::random;
            let x = random::uniform(0.0, 1.0, &[30_000_000], &[1_000_000], 5);
            let kept = x.persist(client)?;
            let from_kept = kept.sum().compute_scalar::<f64>(client)?;
            let recomputed = x.sum().compute_scalar::<f64>(client)?;
            ensure!(
                (from_kept - recomputed).abs() <= 1e-9 * recomputed.abs(),
                "{from_kept} vs {recomputed}"
            );
            let mean = from_kept / 30_000_000.0;
            ensure!((mean - 0.5).abs() < 1e-3, "mean {mean}");
            // Every chunk is read once more: values come back from disk.
            ensure!(kept.max().compute_scalar::<f64>(client)? < 1.0);
            // Vectors of 8 MB made by the program's tasks (kept as they were made, not
            // encoded) spill too and come back whole, to tasks and to the client.
            let made = client.map(ramp_of, 0..12u64);
            let sums = client.gather(&client.map(sum_f64, &made))?;
            let want: Vec<f64> = (0..12).map(|i| ramp_of(i).iter().sum()).collect();
            ensure!(sums == want, "sums of spilled vectors");
            ensure!(client.gather(&made[..2])? == [ramp_of(0), ramp_of(1)]);
            println!("SCENARIO spill OK");
            Ok(())
        }),
        "spill_gib" => mpidask::run(|client| -> anyhow::Result<()> {
            // 2 GiB of chunks (32 MiB each) kept on 2 workers limited to 100 MB each: most of
            // it goes to disk and comes back, while the scheduler's heartbeats keep arriving
            // (long enough for several: the chunks are made at over 1 GB/s).
            use mpidask::array::random;
            let n = 1usize << 28;
            let x = random::uniform(0.0, 1.0, &[n], &[1 << 22], 11);
            let kept = x.persist(client)?;
            let from_kept = kept.sum().compute_scalar::<f64>(client)?;
            let recomputed = x.sum().compute_scalar::<f64>(client)?;
            ensure!(
                (from_kept - recomputed).abs() <= 1e-9 * recomputed.abs(),
                "{from_kept} vs {recomputed}"
            );
            ensure!(kept.max().compute_scalar::<f64>(client)? < 1.0);
            println!("SCENARIO spill_gib OK");
            Ok(())
        }),
        "broadcast" => mpidask::run(|client| -> anyhow::Result<()> {
            let shared = client.scatter_broadcast(pattern(3_000_000))?;
            let reads: Vec<_> = client
                .workers()
                .iter()
                .map(|rank| {
                    client
                        .with_options(TaskOptions::default().workers([rank.0]))
                        .submit(checksum, &shared)
                })
                .collect();
            let sums = client.gather(&reads)?;
            ensure!(
                sums.iter().all(|s| *s == checksum(pattern(3_000_000))),
                "{sums:?}"
            );
            println!("SCENARIO broadcast OK key={}", shared.key().0);
            Ok(())
        }),
        "memory_limit" => mpidask::run(|client| -> anyhow::Result<()> {
            // Run with a 1 MB limit: a 2 MB result fails its task, the worker carries on.
            match client.submit(pattern, 2_000_000usize).result() {
                Err(Error::Task(e)) => ensure!(
                    e.message
                        .contains("its result is 1.91 MiB, more than the 976.56 KiB memory limit")
                        && e.message.contains("raise --memory-limit"),
                    "{e}"
                ),
                other => return Err(anyhow!("expected a task error, got {other:?}")),
            }
            ensure!(client.submit(pattern, 1000usize).result()?.len() == 1000);
            println!("SCENARIO memory_limit OK");
            Ok(())
        }),
        "client_error" => mpidask::run(|_client| -> anyhow::Result<()> {
            Err(anyhow!(
                "the input file /nonexistent/data.csv was not found"
            ))
        }),
        "client_panic" => mpidask::run(|_client| -> anyhow::Result<()> {
            panic!("the client gave up");
        }),
        "stall_shutdown" => mpidask::run(|client| -> anyhow::Result<()> {
            freeze_last_worker(client)?;
            Ok(())
        }),
        "lose_worker" => mpidask::run(|client| -> anyhow::Result<()> {
            let rank = freeze_last_worker(client)?;
            let pinned = client
                .with_options(TaskOptions::default().workers([rank]))
                .submit(my_rank, ());
            pinned.result()?;
            Ok(())
        }),
        "task_failure_unhandled" => mpidask::run(|client| -> anyhow::Result<()> {
            client.submit(refuse_seven, 7u32).result()?;
            Ok(())
        }),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(99)
        }
    }
}

// ----- tests -------------------------------------------------------------------------------

fn this_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("current exe")
}

fn scenario_under_mpirun(np: usize, scenario: &str) -> Command {
    let mut command = mpirun(np, &this_binary(), &[]);
    command.env("MPIDASK_SCENARIO", scenario);
    command
}

fn launch(command: Command) -> Run {
    run_with_deadline(command, DEADLINE)
}

fn test_success(np: usize) -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(np, "success"));
        run.expect_code(0)
            .expect_stdout(&format!("SCENARIO success OK workers={}", np - 2))
            .expect_quiet();
    })
}

fn test_local_mode() -> Result<(), Failed> {
    check(|| {
        let command = local_scenario("success");
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO success OK workers=2")
            .expect_quiet();
    })
}

fn test_client_error() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(4, "client_error"));
        run.expect_code(ExitCode::ClientError.code()).expect_stderr(
            "the client program returned an error: the input file /nonexistent/data.csv was not found",
        );
        assert_eq!(
            run.log_lines("ERROR").len(),
            1,
            "one error line\n{}",
            run.dump()
        );
    })
}

fn test_client_panic() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(4, "client_panic"));
        run.expect_code(ExitCode::ClientPanic.code())
            .expect_stderr("the client program panicked at tests/mpi.rs")
            .expect_stderr("the client gave up");
        assert_eq!(
            run.log_lines("ERROR").len(),
            1,
            "one error line\n{}",
            run.dump()
        );
    })
}

/// A bug of the runtime that panics the scheduler's loop (injected through `internals`)
/// ends the job with exit code 8 and a line saying so, instead of leaving every other rank
/// waiting for rank 0.
fn test_scheduler_panic() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "success");
        command.env("MPIDASK_INTERNALS_PANIC_ON_SUBMIT", "1");
        let run = launch(command);
        run.expect_code(ExitCode::Internal.code())
            .expect_stderr("rank 0: internal error, the runtime's loop panicked: injected")
            .expect_stderr("This is a bug in mpidask");
    })
}

fn test_task_failure_unhandled() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(3, "task_failure_unhandled"));
        run.expect_code(ExitCode::TaskFailed.code())
            .expect_stderr("the client program returned a task failure: task refuse_seven-")
            .expect_stderr("seven is not allowed");
    })
}

fn test_retry() -> Result<(), Failed> {
    check(|| {
        let dir = std::env::temp_dir().join(format!("mpidask-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = scenario_under_mpirun(4, "retry");
        command.env("MPIDASK_TEST_DIR", &dir);
        let run = launch(command);
        let _ = std::fs::remove_dir_all(&dir);
        run.expect_code(0).expect_stdout("SCENARIO retry OK");
        let warnings = run.log_lines("WARN");
        assert!(
            warnings.len() == 1 && warnings[0].contains("retrying (0 retries left)"),
            "one retry warning\n{}",
            run.dump()
        );
    })
}

fn test_world_of_two() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(2, "success"));
        run.expect_code(ExitCode::Startup.code())
            .expect_stderr("mpidask needs at least 3 ranks")
            .expect_stderr("add --worker-on-client");
        assert!(!run.stdout.contains("SCENARIO"), "the program must not run");
    })
}

/// `scenario` under `mpirun -np NP` with workers beside the program (`client`) and the
/// scheduler (`scheduler`), asked for by the environment (`mpidask::run` reads no flags).
/// Two threads per worker: at `-np 2` Open MPI binds each rank to one core, and the
/// scenarios need two tasks running at once.
fn scenario_with_hosted(np: usize, scenario: &str, client: bool, scheduler: bool) -> Command {
    let mut command = scenario_under_mpirun(np, scenario);
    command
        .env("MPIDASK_NTHREADS", "2")
        .env("MPIDASK_WORKER_ON_CLIENT", if client { "1" } else { "0" })
        .env(
            "MPIDASK_WORKER_ON_SCHEDULER",
            if scheduler { "yes" } else { "no" },
        );
    command
}

fn test_workers_beside_client_and_scheduler() -> Result<(), Failed> {
    check(|| {
        // Every feature of the success scenario (transfers between any two workers, a
        // broadcast, pinning, failures, cancelling) with workers in the client's and the
        // scheduler's processes: alone, together, and beside a worker rank (which
        // broadcasts to them point to point).
        for (np, client, scheduler, workers) in [
            (2, true, false, 1),
            (2, false, true, 1),
            (2, true, true, 2),
            (3, true, false, 2),
            (3, true, true, 3),
        ] {
            let run = launch(scenario_with_hosted(np, "success", client, scheduler));
            run.expect_code(0)
                .expect_stdout(&format!("SCENARIO success OK workers={workers}"))
                .expect_quiet();
        }
        // Arrays give the same answers as with a rank per worker.
        let reference = launch(scenario_under_mpirun(4, "arrays"));
        reference.expect_code(0).expect_quiet();
        let hosted = launch(scenario_with_hosted(2, "arrays", true, true));
        hosted.expect_code(0).expect_quiet();
        assert!(
            reference.stdout.starts_with("DIGEST "),
            "{}",
            reference.dump()
        );
        assert_eq!(hosted.stdout, reference.stdout, "arrays differ");
    })
}

fn test_resources() -> Result<(), Failed> {
    check(|| {
        // Ranks 0-2 without resources, rank 3 with one GPU (MPMD launch of the same binary).
        let exe = this_binary();
        let mut command = mpirun(3, &exe, &[]);
        command
            .arg(":")
            .args(["-np", "1", "env", "MPIDASK_RESOURCES=gpu=1"])
            .arg(&exe)
            .env("MPIDASK_SCENARIO", "resources");
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO resources OK")
            .expect_quiet();
    })
}

fn test_big_messages() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "big_messages");
        command.env("MPIDASK_MESSAGE_PART_BYTES", "4096");
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO big_messages OK")
            .expect_quiet();
    })
}

fn test_large_args_skip_the_scheduler() -> Result<(), Failed> {
    check(|| {
        for np in [3, 5] {
            let run = launch(scenario_under_mpirun(np, "large_args"));
            run.expect_code(0)
                .expect_stdout("SCENARIO large_args OK")
                .expect_quiet();
        }
        // Values sent from where they lie in messages of 4 KiB: the head, then the parts.
        let mut command = scenario_under_mpirun(3, "large_args");
        command.env("MPIDASK_MESSAGE_PART_BYTES", "4096");
        launch(command)
            .expect_code(0)
            .expect_stdout("SCENARIO large_args OK")
            .expect_quiet();
        let local = local_scenario("large_args");
        let run = launch(local);
        run.expect_code(0)
            .expect_stdout("SCENARIO large_args OK")
            .expect_quiet();
    })
}

/// `scenario` in local mode, with 2 workers.
fn local_scenario(scenario: &str) -> Command {
    let mut command = local_command(&this_binary());
    command
        .env("MPIDASK_SCENARIO", scenario)
        .env("MPIDASK_LOCAL_WORKERS", "2");
    command
}

/// The stdout of `scenario` at each rank count of `nps` and in local mode (2 workers),
/// each run checked to end quietly with 0.
fn outputs_everywhere(scenario: &str, nps: &[usize]) -> Vec<(String, String)> {
    let mut outputs = Vec::new();
    for &np in nps {
        let run = launch(scenario_under_mpirun(np, scenario));
        run.expect_code(0).expect_quiet();
        outputs.push((format!("-np {np}"), run.stdout.clone()));
    }
    let local = local_scenario(scenario);
    let run = launch(local);
    run.expect_code(0).expect_quiet();
    outputs.push(("local".into(), run.stdout.clone()));
    let first = &outputs[0].1;
    assert!(
        outputs.iter().all(|(_, output)| output == first),
        "results differ: {outputs:#?}"
    );
    outputs
}

/// Every workload of the array suite against NumPy on the same inputs, under mpirun at
/// -np 3 and 5 and in local mode.
fn test_array_suite_matches_numpy() -> Result<(), Failed> {
    check(|| {
        let python = support::numpy_python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/array_suite.py");
        let dir = support::scratch_dir("array-suite");
        let mut commands = vec![];
        for np in [3, 5] {
            commands.push((
                format!("-np {np}"),
                scenario_under_mpirun(np, "array_suite"),
            ));
        }
        let local = local_scenario("array_suite");
        commands.push(("local".into(), local));
        for (label, mut command) in commands {
            let out = dir.join(format!("{}.json", label.replace([' ', '-'], "")));
            command.env("MPIDASK_SUITE_OUT", &out);
            launch(command).expect_code(0).expect_quiet();
            let numpy = Command::new(&python)
                .arg(script)
                .arg("numpy")
                .arg(&out)
                .output()
                .expect("python runs");
            let report = String::from_utf8_lossy(&numpy.stdout);
            assert!(
                numpy.status.success(),
                "{label}: mpidask and NumPy differ:\n{report}{}",
                String::from_utf8_lossy(&numpy.stderr)
            );
            assert_eq!(
                report.lines().filter(|l| l.starts_with("OK ")).count(),
                18,
                "{label}: {report}"
            );
        }
    })
}

fn test_arrays_same_at_every_rank_count() -> Result<(), Failed> {
    check(|| {
        let outputs = outputs_everywhere("arrays", &[3, 4, 5]);
        assert!(outputs[0].1.starts_with("DIGEST "), "{outputs:?}");
    })
}

fn test_bags_same_at_every_rank_count() -> Result<(), Failed> {
    check(|| {
        let outputs = outputs_everywhere("bags", &[3, 4, 6]);
        let first = &outputs[0].1;
        assert!(
            first.contains("BAGS count=1000 sum=332833500 min=Some(0) max=Some(999)")
                && first.contains("(99, 900)] foldby=")
                && first.contains("joined=930 repartitioned=true")
                && first.contains(
                    "BAGS3 array=[1000] array_sum=999000 array_chunks=2 multiples_of_7=143"
                ),
            "{first}"
        );
    })
}

fn test_wordcount_example() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("wordcount");
        let corpus = dir.join("corpus").display().to_string();
        let run = launch(mpirun(
            4,
            &example("wordcount"),
            &[
                "--generate-mb",
                "3",
                "--corpus-dir",
                &corpus,
                "--blocksize",
                "100000",
                "--check",
            ],
        ));
        run.expect_code(0)
            .expect_quiet()
            .expect_stdout("CHECK ok: the same counts as a sequential count");
        assert!(
            run.field("RESULT", "words")
                .is_some_and(|w| w.parse::<u64>().unwrap() > 100_000),
            "{}",
            run.dump()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// The climate example (a netCDF file written, opened as a dataset, grouped by month,
/// written to Zarr) under mpirun, checking itself against plain loops.
#[cfg(all(feature = "zarr", feature = "netcdf"))]
fn test_climate_example() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("climate");
        let file = dir.join("t.nc").display().to_string();
        let output = dir.join("climate.zarr").display().to_string();
        let run = launch(mpirun(
            4,
            &example("climate"),
            &[
                "--years", "3", "--lat", "19", "--lon", "36", "--check", "--file", &file,
                "--output", &output,
            ],
        ));
        run.expect_code(0)
            .expect_quiet()
            .expect_stdout("CHECK ok: the climatology and spread of 3 latitudes");
        assert_eq!(
            run.field("RESULT", "months").as_deref(),
            Some("12"),
            "{}",
            run.dump()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn test_pi_array_example() -> Result<(), Failed> {
    check(|| {
        let run = launch(mpirun(
            4,
            &example("pi"),
            &["--sizes-gb", "0.2,0.05", "--chunk-mb", "16"],
        ));
        run.expect_code(0).expect_quiet();
        assert_eq!(
            run.stdout.matches("RESULT bytes=").count(),
            2,
            "{}",
            run.dump()
        );
        assert_eq!(run.field("RESULT", "workers").as_deref(), Some("2"));
    })
}

fn test_million_tiny_tasks() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(4, "million"));
        run.expect_code(0)
            .expect_stdout("SCENARIO million OK")
            .expect_quiet();
    })
}

fn test_shutdown_deadline() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "stall_shutdown");
        command.env("MPIDASK_SHUTDOWN_TIMEOUT", "2");
        let run = launch(command);
        run.expect_code(ExitCode::ShutdownTimeout.code())
            .expect_stderr("rank(s) 3 did not finish shutting down within 2.0 s");
        assert!(
            run.wall < Duration::from_secs(15),
            "ended in {:?}",
            run.wall
        );
    })
}

fn test_lost_worker() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "lose_worker");
        command.env("MPIDASK_WORKER_TIMEOUT", "2");
        let run = launch(command);
        run.expect_code(ExitCode::WorkerLost.code())
            .expect_stderr("worker rank 3 sent nothing for 2 s");
        assert!(
            run.wall < Duration::from_secs(15),
            "ended in {:?}",
            run.wall
        );
    })
}

fn test_different_executables() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(3, "success");
        command.args([":", "-np", "1"]).arg(example("pi_futures"));
        let run = launch(command);
        run.expect_code(ExitCode::Startup.code())
            .expect_stderr("every rank must run the same program: rank 3 (executable fingerprint");
        assert!(!run.stdout.contains("SCENARIO"), "the program must not run");
    })
}

fn test_pi_same_estimate_everywhere() -> Result<(), Failed> {
    check(|| {
        let pi = example("pi_futures");
        let args = ["--samples", "4000000", "--tasks", "24", "--seed", "7"];
        let mut estimates = Vec::new();
        for np in [3, 4, 6] {
            let run = launch(mpirun(np, &pi, &args));
            run.expect_code(0).expect_quiet();
            assert_eq!(
                run.field("RESULT", "workers").as_deref(),
                Some((np - 2).to_string().as_str())
            );
            estimates.push((format!("-np {np}"), run.field("RESULT", "pi").expect("pi")));
        }
        let mut local = local_command(&pi);
        local.args(args);
        let run = launch(local);
        run.expect_code(0).expect_quiet();
        estimates.push(("local".into(), run.field("RESULT", "pi").expect("pi")));
        let first = &estimates[0].1;
        assert!(
            estimates.iter().all(|(_, e)| e == first),
            "estimates differ: {estimates:?}"
        );
    })
}

/// The rank mpirun names in "process rank N ... exited on signal S".
fn rank_killed_by(run: &Run, signal: &str) -> u32 {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(&format!("exited on signal {signal}")))
        .unwrap_or_else(|| {
            panic!(
                "mpirun names no rank killed by signal {signal}\n{}",
                run.dump()
            )
        });
    line.split("process rank ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no rank in {line:?}"))
}

/// A rank that died by a signal: mpirun returns 128 + the signal and names the rank; the
/// scheduler's one ERROR line names the task that rank was running; all gone in 10 s.
fn expect_rank_died(run: &Run, code: i32, signal: &str, task: &str) {
    run.expect_code(code);
    let rank = rank_killed_by(run, signal);
    // The line of rank 0's watcher, when the MPI library held the loop at the SIGTERM
    // (src/scheduler/last_words.rs): it cannot name tasks.
    let errors: Vec<&str> = run
        .log_lines("ERROR")
        .into_iter()
        .filter(|l| !l.contains("while the MPI library held its communication thread"))
        .collect();
    let over_tcp = std::env::var("OMPI_MCA_btl").is_ok_and(|btl| !btl.contains("vader"));
    if over_tcp && errors.is_empty() {
        // Over TCP the scheduler's MPI library may be stuck on the dead peer's connection
        // when mpirun's SIGTERM arrives, and be killed before it can name the task; mpirun
        // has named the rank and the signal, rank 0's watcher the nodes last heard from.
        assert!(
            run.wall < Duration::from_secs(10),
            "ended in {:?}",
            run.wall
        );
        return;
    }
    assert_eq!(errors.len(), 1, "one error line\n{}", run.dump());
    let on_rank = errors[0]
        .split(&format!("rank {rank}: "))
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| {
            panic!(
                "the error line names no task on rank {rank}\n{}",
                run.dump()
            )
        });
    assert!(
        on_rank.contains(task),
        "rank {rank} ran {on_rank:?}, not {task}\n{}",
        run.dump()
    );
    assert!(
        run.wall < Duration::from_secs(10),
        "ended in {:?}",
        run.wall
    );
}

/// Under MPICH, Hydra reports the dead process (by pid and signal), kills the other ranks
/// with SIGKILL at once (so they cannot say what ran) and returns a code of its own: one
/// of `codes` (which signal it reports first varies).
fn expect_hydra_reports_death(run: &Run, codes: &[i32]) {
    assert!(!run.timed_out, "a hang\n{}", run.dump());
    assert!(
        run.code.is_some_and(|c| codes.contains(&c)),
        "exit code {:?}, expected one of {codes:?}\n{}",
        run.code,
        run.dump()
    );
    // Hydra writes its report to stdout.
    run.expect_stdout("BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES");
    assert!(
        run.wall < Duration::from_secs(10),
        "ended in {:?}",
        run.wall
    );
}

fn test_worker_killed() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(4, "worker_killed"));
        match support::launcher() {
            Launcher::OpenMpi => {
                expect_rank_died(&run, 128 + libc::SIGKILL, "9", "kill_own_worker")
            }
            Launcher::Mpich => {
                expect_hydra_reports_death(&run, &[libc::SIGKILL]);
                run.expect_stdout("Killed (signal 9)");
            }
        }
    })
}

fn test_worker_aborts() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(4, "worker_aborts"));
        match support::launcher() {
            Launcher::OpenMpi => {
                expect_rank_died(&run, 128 + libc::SIGABRT, "6", "abort_own_worker")
            }
            Launcher::Mpich => expect_hydra_reports_death(&run, &[libc::SIGABRT, libc::SIGTERM]),
        }
    })
}

/// Runs the `long_job` scenario and, once it started, lets `signal` do its thing.
fn signalled_long_job(signal: impl FnOnce(i32) + 'static) -> Run {
    signalled(scenario_under_mpirun(4, "long_job"), signal)
}

/// Runs `command` (the `long_job` scenario) and, once its tasks are placed, calls `action`
/// with the job's session.
fn signalled(command: Command, action: impl FnOnce(i32) + 'static) -> Run {
    run_with_trigger(
        command,
        DEADLINE,
        Some(("SCENARIO long_job started", Box::new(action))),
    )
}

/// An orderly stop by signal: one ERROR line naming the signal and the running tasks, no
/// secondary errors, well within 10 s.
fn expect_orderly_stop(run: &Run, code: i32, signal: &str) {
    run.expect_code(code);
    let errors = run.log_lines("ERROR");
    assert_eq!(errors.len(), 1, "one error line\n{}", run.dump());
    assert!(
        errors[0].contains(&format!("received {signal}")) && errors[0].contains("sleep_ms-"),
        "the error line names the signal and the running tasks\n{}",
        run.dump()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.dump());
    assert!(
        run.wall < Duration::from_secs(10),
        "ended in {:?}",
        run.wall
    );
}

fn test_sigterm_to_every_rank() -> Result<(), Failed> {
    check(|| {
        // What Slurm does at walltime or scancel: SIGTERM to every task of the step.
        let run = signalled_long_job(|session| signal_members(session, libc::SIGTERM));
        expect_orderly_stop(&run, ExitCode::Signal.code(), "SIGTERM");
    })
}

fn test_sigusr1_to_mpirun() -> Result<(), Failed> {
    check(|| {
        // `#SBATCH --signal=B:USR1@60` signals the batch shell's mpirun, which forwards it.
        let run = signalled_long_job(|mpirun| unsafe {
            libc::kill(mpirun, libc::SIGUSR1);
        });
        expect_orderly_stop(&run, ExitCode::Signal.code(), "SIGUSR1");
    })
}

fn test_sigterm_to_mpirun() -> Result<(), Failed> {
    check(|| {
        // Open MPI's mpirun terminates the ranks itself and returns its own code, 1; MPICH's
        // mpiexec forwards the signal and returns the ranks' code.
        let run = signalled_long_job(|mpirun| unsafe {
            libc::kill(mpirun, libc::SIGTERM);
        });
        let code = match support::launcher() {
            Launcher::OpenMpi => 1,
            // MPICH's mpiexec forwards the signal and returns the ranks' code, 9 (rank 0
            // outlives the others for Hydra to keep it: `mpi_job::HYDRA_EXIT_GRACE`).
            Launcher::Mpich => ExitCode::Signal.code(),
        };
        expect_orderly_stop(&run, code, "SIGTERM");
    })
}

fn test_stall_warning() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "slow_tasks");
        command.env("MPIDASK_STALL_WARNING", "1");
        let run = launch(command);
        run.expect_code(0).expect_stdout("SCENARIO slow_tasks OK");
        let warnings = run.log_lines("WARN");
        assert!(!warnings.is_empty(), "a stall warning\n{}", run.dump());
        assert!(
            warnings.iter().all(|w| w.contains("rank 0 scheduler")
                && w.contains("no task finished in the last")
                && w.contains("2 tasks are pending")
                && w.contains("sleep_ms-1")),
            "{}",
            run.dump()
        );
        assert!(run.log_lines("ERROR").is_empty(), "{}", run.dump());
    })
}

/// The pid of the process of `session` that is MPI rank `rank`.
fn pid_of_rank(session: i32, rank: u32) -> i32 {
    support::session_members(session)
        .into_iter()
        .find(|pid| support::rank_of_process(*pid) == Some(rank))
        .unwrap_or_else(|| panic!("no rank {rank} in session {session}"))
}

fn test_silent_scheduler() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "long_job");
        command.env("MPIDASK_WORKER_TIMEOUT", "2");
        let run = signalled(command, |session| {
            // SAFETY: sending a signal has no memory-safety preconditions.
            unsafe { libc::kill(pid_of_rank(session, 0), libc::SIGSTOP) };
        });
        run.expect_code(ExitCode::WorkerLost.code());
        // The client reports it; the only other line allowed is the scheduler's list of
        // what was running, printed when mpirun's SIGTERM wakes it.
        let errors = run.log_lines("ERROR");
        assert!(
            !errors.is_empty()
                && errors[0]
                    .contains("rank 1 client] ERROR: the scheduler (rank 0) sent nothing for 2 s")
                && errors[1..]
                    .iter()
                    .all(|e| e.contains("rank 0 scheduler] ERROR: stopping:")),
            "{}",
            run.dump()
        );
        assert!(
            run.wall < Duration::from_secs(10),
            "ended in {:?}",
            run.wall
        );
    })
}

/// Checks that `path` exists and only its owner may read it (0600).
fn expect_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} is private", path.display());
}

/// A Chrome trace file, after checking it is private.
fn read_trace(path: &std::path::Path) -> serde_json::Value {
    expect_private(path);
    serde_json::from_slice(&std::fs::read(path).expect("read the trace")).expect("valid JSON")
}

fn task_events(trace: &serde_json::Value) -> Vec<&serde_json::Value> {
    trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "task")
        .collect()
}

fn test_trace_and_report() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("trace");
        let (trace_path, report_path) = (dir.join("trace.json"), dir.join("report.html"));
        let mut command = scenario_under_mpirun(4, "traced");
        command
            .env("MPIDASK_TRACE", &trace_path)
            .env("MPIDASK_REPORT", &report_path);
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO traced OK")
            .expect_quiet()
            .expect_stderr("summary: 33 tasks (1 failed)")
            .expect_stderr("summary: 30 x square (0 failed)");

        // 30 squares, one failing task, a value made on one worker and read on the other.
        let trace = read_trace(&trace_path);
        let tasks = task_events(&trace);
        assert_eq!(tasks.len(), 33, "{}", run.dump());
        let named = |name: &str| tasks.iter().filter(|t| t["name"] == name).count();
        assert_eq!(
            (
                named("square"),
                named("refuse_seven"),
                named("pattern"),
                named("checksum")
            ),
            (30, 1, 1, 1)
        );
        assert_eq!(tasks.iter().filter(|t| t["args"]["ok"] == false).count(), 1);
        assert!(tasks.iter().all(|t| t["pid"] == 2 || t["pid"] == 3));
        let worker_to_worker = trace["traceEvents"].as_array().unwrap().iter().any(|e| {
            e["cat"] == "transfer"
                && e["pid"] == 3
                && e["args"]["peer"] == 2
                && e["args"]["bytes"].as_u64().is_some_and(|b| b >= 100_000)
        });
        assert!(
            worker_to_worker,
            "the 100 kB value moved from rank 2 to rank 3"
        );
        let summary = &trace["otherData"]["summary"];
        assert_eq!(summary["tasks"], 33);
        assert_eq!(summary["failures"], 1);
        assert_eq!(summary["exit_code"], 0);
        assert_eq!(summary["workers"].as_array().map(Vec::len), Some(2));

        // The report draws one rectangle per task run in a real browser, each with its
        // details (bytes in and out: the 100 kB value made and read), and the panels.
        expect_private(&report_path);
        let dom = support::render_in_chromium(&report_path);
        assert_eq!(dom.matches("class=\"task").count(), 33, "{dom}");
        assert!(dom.contains("data-rendered=\"33\""), "{dom}");
        assert!(dom.contains("refuse_seven") && dom.contains("rank 3 worker"));
        assert!(
            dom.contains("out 97.66 KiB") && dom.contains("in 97.66 KiB"),
            "task details name their bytes: {dom}"
        );
        assert!(dom.contains("The job ended with exit code 0."), "{dom}");
        // Failures with their messages.
        assert!(dom.contains("id=\"failures\" data-count=\"1\""), "{dom}");
        assert!(dom.contains("seven is not allowed"), "{dom}");
        // Four charts: memory for each of the 2 workers (in memory, on disk, resident,
        // with limit, pause and spill lines), transfers, progress of the 4 task kinds.
        assert_eq!(dom.matches("class=\"chart\"").count(), 4, "{dom}");
        assert!(dom.contains("id=\"memory\" data-charts=\"2\""), "{dom}");
        assert!(
            dom.matches("data-series=\"3\"").count() >= 2,
            "memory charts: {dom}"
        );
        assert!(
            dom.contains("data-series=\"4\""),
            "progress of 4 kinds: {dom}"
        );
        assert!(
            dom.matches("class=\"threshold\"").count() >= 6,
            "limit, pause and spill on each memory chart: {dom}"
        );
        assert!(
            dom.contains("2 \u{2192} 3"),
            "a transfer from rank 2 to 3: {dom}"
        );
        support::screenshot_in_chromium(
            &report_path,
            &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png"),
            1300,
            2200,
        );
        // Nothing else is left: the private directories the files were made in are gone.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// `--log-dir`: one file per rank holding that rank's lines (with the per-module filter of
/// `MPIDASK_LOG`), the launcher's output unchanged; in local mode, one file per thread rank.
fn test_log_dir() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("log-dir");
        let logs = dir.join("logs");
        let mut command = scenario_under_mpirun(4, "success");
        command
            .env("MPIDASK_LOG_DIR", &logs)
            .env("MPIDASK_LOG", "info,mpidask::scheduler=debug");
        let run = launch(command);
        // (Not expect_quiet: the scheduler's debug lines quote the scenario's task panics.)
        run.expect_code(0)
            .expect_stdout("SCENARIO success OK workers=2");
        assert!(run.log_lines("ERROR").is_empty() && run.log_lines("WARN").is_empty());
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .expect("the log directory was made")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "rank-0-scheduler.log",
                "rank-1-client.log",
                "rank-2-worker.log",
                "rank-3-worker.log"
            ]
        );
        let scheduler = std::fs::read_to_string(logs.join("rank-0-scheduler.log")).unwrap();
        assert!(
            scheduler.contains("] DEBUG: ") && scheduler.contains("job ends with exit code 0"),
            "the scheduler's debug and info lines:\n{scheduler}"
        );
        for (file, rank) in [
            ("rank-0-scheduler.log", 0),
            ("rank-1-client.log", 1),
            ("rank-2-worker.log", 2),
            ("rank-3-worker.log", 3),
        ] {
            let text = std::fs::read_to_string(logs.join(file)).unwrap();
            // Log lines, not the continuation lines of a message of several lines.
            for line in text.lines().filter(|l| l.starts_with('[')) {
                assert!(
                    line.contains(&format!("s rank {rank} ")),
                    "{file} holds only rank {rank}'s lines: {line}"
                );
                assert!(
                    run.stderr.contains(line),
                    "every line is still on stderr: {line}"
                );
                assert!(
                    !line.contains("DEBUG") || rank == 0,
                    "debug lines only from mpidask::scheduler: {line}"
                );
            }
        }
        // Local mode: the ranks are threads, each with its file.
        let local_logs = dir.join("local-logs");
        let mut local = local_scenario("success");
        local.env("MPIDASK_LOG_DIR", &local_logs);
        launch(local).expect_code(0);
        for file in [
            "rank-0-scheduler.log",
            "rank-1-client.log",
            "rank-2-worker.log",
        ] {
            assert!(local_logs.join(file).is_file(), "local mode: {file}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// While the job runs, the report is rewritten every `--report-interval` seconds, whole
/// each time (a reader never sees half a page): a copy taken mid-job renders, says the job
/// is running and shows the tasks finished so far; the last one has the exit code.
fn test_report_rewritten_while_running() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("report-live");
        let report_path = dir.join("report.html");
        let interim_path = dir.join("interim.html");
        let mut command = scenario_under_mpirun(4, "long_job");
        command
            .env("MPIDASK_REPORT", &report_path)
            .env("MPIDASK_REPORT_INTERVAL", "0.3");
        let (report, interim) = (report_path.clone(), interim_path.clone());
        let run = signalled(command, move |session| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                let text = std::fs::read_to_string(&report).unwrap_or_default();
                if text.contains("The job is running") && text.contains("\"kinds\":[\"square\"") {
                    std::fs::write(&interim, &text).expect("copy the report");
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            signal_members(session, libc::SIGTERM);
        });
        expect_orderly_stop(&run, ExitCode::Signal.code(), "SIGTERM");
        let text = std::fs::read_to_string(&interim_path)
            .expect("a report with the first tasks was written while the job ran");
        assert!(text.trim_end().ends_with("</html>"), "a whole page");
        let dom = support::render_in_chromium(&interim_path);
        assert!(dom.contains("data-running=\"true\""), "{dom}");
        assert!(
            dom.contains("data-rendered=\"8\""),
            "the 8 quick tasks: {dom}"
        );
        let last = support::render_in_chromium(&report_path);
        assert!(
            last.contains("The job ended with exit code 9."),
            "the last report: {last}"
        );
        assert!(last.contains("data-running=\"false\""));
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn test_trace_written_when_stopped_by_signal() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("trace-signal");
        let trace_path = dir.join("trace.json");
        let mut command = scenario_under_mpirun(4, "long_job");
        command.env("MPIDASK_TRACE", &trace_path);
        let run = signalled(command, |session| signal_members(session, libc::SIGTERM));
        expect_orderly_stop(&run, ExitCode::Signal.code(), "SIGTERM");
        run.expect_stderr("summary: 8 tasks (0 failed)");
        let trace = read_trace(&trace_path);
        assert_eq!(
            task_events(&trace).len(),
            8,
            "the quick tasks before the signal"
        );
        assert_eq!(
            trace["otherData"]["summary"]["exit_code"],
            ExitCode::Signal.code()
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn test_progress_lines_in_a_batch_log() -> Result<(), Failed> {
    check(|| {
        let run = launch(mpirun(
            4,
            &example("pi"),
            // Long enough (about 0.8 s) for lines before the last: the display refreshes
            // every 0.2 s at most.
            &[
                "--sizes-gb",
                "48",
                "--chunk-mb",
                "4",
                "--progress",
                "--progress-interval",
                "0.02",
            ],
        ));
        run.expect_code(0).expect_quiet();
        let lines = run.log_lines("INFO");
        let progress: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("rank 1 client] INFO: progress: "))
            .collect();
        assert!(
            progress.len() >= 2,
            "a first and a last line\n{}",
            run.dump()
        );
        let last = progress.last().unwrap();
        let counts = last
            .split("progress: ")
            .nth(1)
            .and_then(|rest| rest.split(" tasks").next())
            .unwrap_or_else(|| panic!("no counts in {last}"));
        let (done, total) = counts.split_once('/').expect("done/total");
        assert_eq!(done, total, "{last}");
        assert!(
            total.parse::<u64>().unwrap() > 50,
            "the whole graph counts: {last}"
        );
        assert!(
            last.contains("(100.0%)") && last.contains("tasks/s, done"),
            "{last}"
        );
    })
}

fn test_progress_bar_on_a_terminal() -> Result<(), Failed> {
    check(|| {
        // `script` runs the program on a pseudo-terminal, as an interactive user would.
        let pi = example("pi_futures");
        let line = format!("{} --samples 20000000 --tasks 24 --progress", pi.display());
        let mut command = Command::new("script");
        command.args(["-qec", &line, "/dev/null"]);
        for variable in [
            "SLURM_NTASKS",
            "SLURM_STEP_NUM_TASKS",
            "OMPI_COMM_WORLD_SIZE",
            "PMI_SIZE",
        ] {
            command.env_remove(variable);
        }
        let run = launch(command);
        run.expect_code(0);
        // The bar (drawn with block characters) and the final line.
        assert!(run.stdout.contains("/24 tasks ("), "{}", run.dump());
        assert!(
            run.stdout.contains('\u{2588}'),
            "a bar is drawn\n{}",
            run.dump()
        );
        assert!(
            run.stdout.contains("progress: 24/24 tasks (100.0%)"),
            "{}",
            run.dump()
        );
    })
}

fn test_spill_to_disk() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("spill");
        let spill_dir = dir.join("local");
        std::fs::create_dir_all(&spill_dir).unwrap();
        let trace_path = dir.join("trace.json");
        let mut command = scenario_under_mpirun(4, "spill");
        command
            .env("MPIDASK_MEMORY_LIMIT", "40MB")
            .env("MPIDASK_LOCAL_DIRECTORY", &spill_dir)
            .env("MPIDASK_TRACE", &trace_path);
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO spill OK")
            .expect_quiet();
        let trace = read_trace(&trace_path);
        let summary = &trace["otherData"]["summary"];
        let spills = summary["spills"].as_u64().unwrap_or(0);
        let read_backs = summary["read_backs"].as_u64().unwrap_or(0);
        assert!(
            spills >= 10 && read_backs >= 10,
            "chunks spilled and came back: {summary}\n{}",
            run.dump()
        );
        assert!(
            summary["spilled_bytes"].as_u64().unwrap_or(0) >= 80_000_000,
            "{summary}"
        );
        let left: Vec<_> = std::fs::read_dir(&spill_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "spill files left behind: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// Spilling 2 GiB under a 100 MB limit per worker happens on the workers' I/O threads: the
/// communication threads keep handling the scheduler's heartbeats (one a second): none is
/// missed.
fn test_spill_keeps_heartbeats_flowing() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("spill-gib");
        let spill_dir = dir.join("local");
        std::fs::create_dir_all(&spill_dir).unwrap();
        let trace_path = dir.join("trace.json");
        let mut command = scenario_under_mpirun(4, "spill_gib");
        command
            .env("MPIDASK_MEMORY_LIMIT", "100MB")
            .env("MPIDASK_LOCAL_DIRECTORY", &spill_dir)
            .env("MPIDASK_TRACE", &trace_path);
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO spill_gib OK")
            .expect_quiet();
        let trace = read_trace(&trace_path);
        let summary = &trace["otherData"]["summary"];
        assert!(
            summary["spilled_bytes"].as_u64().unwrap_or(0) >= 1_600_000_000,
            "most of the 2 GiB went to disk: {summary}"
        );
        assert!(
            summary["read_backs"].as_u64().unwrap_or(0) >= 20,
            "{summary}"
        );
        let events = trace["traceEvents"].as_array().unwrap();
        for worker in [2u64, 3] {
            let mut beats: Vec<f64> = events
                .iter()
                .filter(|e| e["cat"] == "heartbeat" && e["pid"] == worker)
                .filter_map(|e| e["ts"].as_f64())
                .collect();
            beats.sort_by(f64::total_cmp);
            // The beats cover the worker's work: none missing from the start of its first
            // task to the end of its last (however long the run took).
            let spans: Vec<(f64, f64)> = events
                .iter()
                .filter(|e| e["ph"] == "X" && e["pid"] == worker)
                .filter_map(|e| Some((e["ts"].as_f64()?, e["ts"].as_f64()? + e["dur"].as_f64()?)))
                .collect();
            let work_start_us = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
            let work_end_us = spans.iter().map(|s| s.1).fold(0.0, f64::max);
            // Work shorter than the allowed gap may see no beat at all (with mpidask's
            // allocator the spill run can end within a second); then the gap is the work.
            let gap_us = if beats.is_empty() {
                work_end_us - work_start_us
            } else {
                beats
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .chain([
                        beats[0] - work_start_us,
                        work_end_us - beats[beats.len() - 1],
                    ])
                    .fold(0.0, f64::max)
            };
            println!(
                "rank {worker}: {} heartbeats, largest gap {:.3} s",
                beats.len(),
                gap_us * 1e-6
            );
            // No heartbeat missed: at most two periods apart. (Four ranks share this
            // machine's two cores, and MPICH's ranks poll: once in CI a beat came 1.62 s
            // after the last, the scheduler's rank kept from running, not the worker.)
            assert!(
                gap_us <= 2.0e6,
                "rank {worker}: heartbeats 1 s apart arrived {:.3} s apart at worst",
                gap_us * 1e-6
            );
        }
        let left: Vec<_> = std::fs::read_dir(&spill_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "spill files left behind: {left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
}

fn test_broadcast_scatter() -> Result<(), Failed> {
    check(|| {
        let dir = support::scratch_dir("broadcast");
        let trace_path = dir.join("trace.json");
        let mut command = scenario_under_mpirun(5, "broadcast");
        command.env("MPIDASK_TRACE", &trace_path);
        let run = launch(command);
        run.expect_code(0)
            .expect_stdout("SCENARIO broadcast OK")
            .expect_quiet();
        let key: u64 = run
            .field("SCENARIO broadcast OK", "key")
            .and_then(|k| k.parse().ok())
            .expect("the key");
        // Ranks 3 and 4 got the value from rank 2 by MPI_Ibcast.
        let trace = read_trace(&trace_path);
        let mut by_broadcast: Vec<u64> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "broadcast" && e["args"]["key"] == key)
            .map(|e| e["pid"].as_u64().unwrap())
            .collect();
        by_broadcast.sort_unstable();
        assert_eq!(by_broadcast, vec![3, 4], "{}", run.dump());
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// The 2.2 GB transfer touches about 9 GB of fresh memory (the value made, encoded,
/// received, decoded). A virtual machine whose host backs new memory lazily can take 15 s
/// per GB for some of it (measured on the CI machine on 2026-12-01, when this test took
/// over 60 s with a build that had passed here the same morning): a longer deadline,
/// still well short of CI's, so a hang still fails.
const HUGE_TRANSFER_DEADLINE: Duration = Duration::from_secs(240);

fn test_transfer_over_2_gib() -> Result<(), Failed> {
    check(|| {
        run_with_deadline(
            scenario_under_mpirun(4, "huge_transfer"),
            HUGE_TRANSFER_DEADLINE,
        )
        .expect_code(0)
        .expect_stdout("SCENARIO huge_transfer OK")
        .expect_quiet();
    })
}

fn test_result_over_memory_limit() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "memory_limit");
        command.env("MPIDASK_MEMORY_LIMIT", "1MB");
        launch(command)
            .expect_code(0)
            .expect_stdout("SCENARIO memory_limit OK")
            .expect_quiet();
    })
}

fn test_info_under_mpirun() -> Result<(), Failed> {
    check(|| {
        let info = std::path::Path::new(env!("CARGO_BIN_EXE_mpidask"));
        // Slurm's allocation shared by the 4 ranks of the node.
        let mut command = mpirun(4, info, &["info"]);
        command.env("SLURM_MEM_PER_NODE", "4000");
        let run = launch(command);
        run.expect_code(0)
            .expect_quiet()
            .expect_stdout("MPI library:")
            .expect_stdout("thread level:")
            .expect_stdout("ranks:          4")
            .expect_stdout("nodes:          1")
            .expect_stdout("ranks per node: ")
            .expect_stdout("worker nodes:   1")
            .expect_stdout("workers:        2")
            .expect_stdout(
                "memory limit 1000.00 MiB = 3.91 GiB (SLURM_MEM_PER_NODE) / 4 ranks on the node",
            );
        let run = launch(mpirun(
            4,
            info,
            &["info", "--memory-limit", "512MiB", "--resources", "gpu=1"],
        ));
        run.expect_code(0)
            .expect_stdout("memory limit 512.00 MiB = --memory-limit, resources: gpu=1");
    })
}

fn test_startup_with_32_ranks() -> Result<(), Failed> {
    check(|| {
        let run = launch(scenario_under_mpirun(32, "wide"));
        run.expect_code(0)
            .expect_stdout("SCENARIO wide OK workers=30")
            .expect_quiet();
    })
}

/// Listening TCP sockets of each rank of a running job, by rank.
fn listening_sockets_per_rank(session: i32) -> BTreeSet<(u32, usize)> {
    let mut counts = BTreeSet::new();
    for pid in support::session_members(session) {
        let Some(rank) = support::rank_of_process(pid) else {
            continue;
        };
        let socket_inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| {
                entries
                    .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter_map(|target| {
                        let target = target.to_string_lossy().to_string();
                        Some(
                            target
                                .strip_prefix("socket:[")?
                                .strip_suffix(']')?
                                .to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut listening = 0;
        for table in ["tcp", "tcp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // State 0A is LISTEN; field 9 is the inode.
                if fields.get(3) == Some(&"0A")
                    && fields.get(9).is_some_and(|i| socket_inodes.contains(*i))
                {
                    listening += 1;
                }
            }
        }
        counts.insert((rank, listening));
    }
    counts
}

fn test_no_sockets_of_our_own() -> Result<(), Failed> {
    check(|| {
        let observe = |scenario: &str, marker: &'static str| {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
            let sink = seen.clone();
            let run = run_with_trigger(
                scenario_under_mpirun(4, scenario),
                DEADLINE,
                Some((
                    marker,
                    Box::new(move |session| {
                        *sink.lock().unwrap() = listening_sockets_per_rank(session);
                        // The long job need not run to its end.
                        signal_members(session, libc::SIGTERM);
                    }),
                )),
            );
            assert!(!run.timed_out, "{}", run.dump());
            let counts = seen.lock().unwrap().clone();
            assert_eq!(
                counts.len(),
                4,
                "four ranks seen: {counts:?}\n{}",
                run.dump()
            );
            counts
        };
        let bare = observe("bare_mpi", "SCENARIO bare_mpi started");
        let ours = observe("long_job", "SCENARIO long_job started");
        assert_eq!(
            ours, bare,
            "mpidask ranks listen on more TCP sockets than bare MPI ranks (rank, count)"
        );
    })
}

fn test_launcher_mismatch() -> Result<(), Failed> {
    check(|| {
        // A batch script that runs the program without srun/mpirun: Slurm says 4 tasks, MPI
        // sees a world of one.
        let mut command = local_command(&this_binary());
        command
            .env("MPIDASK_SCENARIO", "success")
            .env("SLURM_NTASKS", "4");
        let run = launch(command);
        run.expect_code(ExitCode::Startup.code())
            .expect_stderr("SLURM_NTASKS=4 says this job has 4 ranks, but MPI sees a world of 1")
            .expect_stderr("srun --mpi=pmix");
        assert!(!run.stdout.contains("SCENARIO"), "the program must not run");
    })
}

/// A usage error: exit 2, the message once (not once per rank), the program never runs.
fn expect_usage_error_once(run: &Run, message: &str) {
    run.expect_code(ExitCode::Usage.code())
        .expect_stderr(message);
    assert_eq!(
        run.stderr.matches(message).count(),
        1,
        "reported once\n{}",
        run.dump()
    );
    assert!(
        !run.stdout.contains("SCENARIO") && !run.stdout.contains("RESULT"),
        "{}",
        run.dump()
    );
    assert!(
        run.wall < Duration::from_secs(10),
        "ended in {:?}",
        run.wall
    );
}

fn test_bad_environment_value() -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_under_mpirun(4, "success");
        command.env("MPIDASK_POLL_MAX_US", "soon");
        let run = launch(command);
        expect_usage_error_once(
            &run,
            "environment variable MPIDASK_POLL_MAX_US=\"soon\" is not valid",
        );
    })
}

fn test_bad_environment_value_on_one_rank() -> Result<(), Failed> {
    check(|| {
        let exe = this_binary();
        let mut command = mpirun(3, &exe, &[]);
        command
            .args([":", "-np", "1", "env", "MPIDASK_WORKER_TIMEOUT=-1"])
            .arg(&exe)
            .env("MPIDASK_SCENARIO", "success");
        let run = launch(command);
        expect_usage_error_once(
            &run,
            "environment variable MPIDASK_WORKER_TIMEOUT=\"-1\" is not valid",
        );
    })
}

fn test_unknown_flag() -> Result<(), Failed> {
    check(|| {
        let run = launch(mpirun(
            4,
            &example("pi"),
            &["--sizes-gb", "1", "--chunks-mb", "16"],
        ));
        expect_usage_error_once(&run, "unexpected argument '--chunks-mb'");
    })
}

fn test_malformed_flag() -> Result<(), Failed> {
    check(|| {
        let run = launch(mpirun(4, &example("pi"), &["--worker-timeout", "ten"]));
        expect_usage_error_once(&run, "invalid value 'ten' for '--worker-timeout <SECONDS>'");
        let run = launch(mpirun(4, &example("pi"), &["--report-interval", "0"]));
        expect_usage_error_once(&run, "invalid value '0' for '--report-interval <SECONDS>'");
    })
}

fn main() {
    if let Ok(name) = std::env::var("MPIDASK_SCENARIO") {
        run_scenario(&name);
    }
    let mut args = Arguments::from_args();
    // The jobs share two cores; one at a time keeps their timing realistic.
    args.test_threads.get_or_insert(1);
    #[allow(unused_mut)]
    let mut tests = vec![
        Trial::test("success_np3", || test_success(3)),
        Trial::test("success_np4", || test_success(4)),
        Trial::test("success_np6", || test_success(6)),
        Trial::test("local_mode", test_local_mode),
        Trial::test("client_error_exits_1", test_client_error),
        Trial::test("client_panic_exits_3", test_client_panic),
        Trial::test("scheduler_panic_exits_8", test_scheduler_panic),
        Trial::test(
            "unhandled_task_failure_exits_4",
            test_task_failure_unhandled,
        ),
        Trial::test("failed_task_succeeds_on_retry", test_retry),
        Trial::test("world_of_two_exits_6", test_world_of_two),
        Trial::test(
            "workers_beside_client_and_scheduler_np_2_3",
            test_workers_beside_client_and_scheduler,
        ),
        Trial::test("resources_match_workers", test_resources),
        Trial::test("frames_split_into_parts", test_big_messages),
        Trial::test(
            "large_args_skip_the_scheduler_np_3_5_and_local",
            test_large_args_skip_the_scheduler,
        ),
        Trial::test(
            "pi_same_estimate_at_3_4_6_and_local",
            test_pi_same_estimate_everywhere,
        ),
        Trial::test(
            "arrays_same_at_np_3_4_5_and_local",
            test_arrays_same_at_every_rank_count,
        ),
        Trial::test(
            "array_suite_matches_numpy_at_np_3_5_and_local",
            test_array_suite_matches_numpy,
        ),
        Trial::test("pi_array_example", test_pi_array_example),
        Trial::test(
            "bags_same_at_np_3_4_6_and_local",
            test_bags_same_at_every_rank_count,
        ),
        Trial::test("wordcount_example_checks_itself", test_wordcount_example),
        Trial::test(
            "a_million_tiny_tasks_in_bounded_memory",
            test_million_tiny_tasks,
        ),
        Trial::test("shutdown_past_deadline_aborts_7", test_shutdown_deadline),
        Trial::test("silent_worker_aborts_5", test_lost_worker),
        Trial::test("different_executables_exit_6", test_different_executables),
        Trial::test("stall_warning_names_pending_tasks", test_stall_warning),
        Trial::test("silent_scheduler_aborts_5", test_silent_scheduler),
        Trial::test("startup_with_32_ranks", test_startup_with_32_ranks),
        Trial::test("task_stream_trace_and_html_report", test_trace_and_report),
        Trial::test("log_dir_one_file_per_rank", test_log_dir),
        Trial::test(
            "report_rewritten_while_running",
            test_report_rewritten_while_running,
        ),
        Trial::test(
            "trace_written_when_stopped_by_signal",
            test_trace_written_when_stopped_by_signal,
        ),
        Trial::test(
            "progress_lines_in_a_batch_log",
            test_progress_lines_in_a_batch_log,
        ),
        Trial::test(
            "progress_bar_on_a_terminal",
            test_progress_bar_on_a_terminal,
        ),
        Trial::test(
            "result_over_memory_limit_fails_its_task",
            test_result_over_memory_limit,
        ),
        Trial::test("info_under_mpirun", test_info_under_mpirun),
        Trial::test(
            "transfer_over_2_gib_between_workers",
            test_transfer_over_2_gib,
        ),
        Trial::test("chunks_3x_memory_spill_to_disk", test_spill_to_disk),
        Trial::test(
            "spill_2_gib_keeps_heartbeats_flowing",
            test_spill_keeps_heartbeats_flowing,
        ),
        Trial::test(
            "broadcast_scatter_reaches_every_worker",
            test_broadcast_scatter,
        ),
        Trial::test(
            "no_sockets_beyond_what_mpi_opens",
            test_no_sockets_of_our_own,
        ),
        Trial::test("launcher_mismatch_exits_6", test_launcher_mismatch),
        Trial::test("worker_killed_by_sigkill", test_worker_killed),
        Trial::test("worker_aborts", test_worker_aborts),
        Trial::test("sigterm_to_every_rank_exits_9", test_sigterm_to_every_rank),
        Trial::test("sigusr1_to_mpirun_exits_9", test_sigusr1_to_mpirun),
        Trial::test("sigterm_to_launcher", test_sigterm_to_mpirun),
        Trial::test("bad_environment_value_exits_2", test_bad_environment_value),
        Trial::test(
            "bad_environment_value_on_one_rank_exits_2",
            test_bad_environment_value_on_one_rank,
        ),
        Trial::test("unknown_flag_exits_2", test_unknown_flag),
        Trial::test("malformed_flag_exits_2", test_malformed_flag),
    ];
    #[cfg(all(feature = "zarr", feature = "netcdf"))]
    tests.push(Trial::test(
        "climate_example_checks_itself",
        test_climate_example,
    ));
    libtest_mimic::run(&args, tests).exit();
}
