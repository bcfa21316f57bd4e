//! Dask's futures API beyond submit and gather, as Dask documents it, under `mpirun` at
//! -np 3 and 4 and in local mode: `wait` with a timeout and `FIRST_COMPLETED`, a result
//! within a time limit, a future's error without its value, its status, a gather that
//! skips failed futures, `as_completed` with futures added while iterating, in batches and
//! with results, `client.run`, `scatter` of a list, and `fire_and_forget` (the job waits
//! for the forgotten task); tasks that submit tasks through their task client (a recursion
//! deeper than the worker threads, and `examples/fib.rs`); queues, variables, locks,
//! semaphores and events shared by the program and its tasks (a task waiting on an event
//! the program sets); the task stream and a performance report of part of the program.
//!
//! The test binary is also the program under test: started with `MPIDASK_SCENARIO=<name>`
//! it runs that scenario through `mpidask::run`.

mod support;

use anyhow::{anyhow, ensure};
use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::mpi::collective::SystemOperation;
use mpidask::mpi::traits::*;
use mpidask::{Client, Error, FutureStatus, ReturnWhen};
use mpidask::{MpiComm, TaskOptions};
use std::time::Duration;
use support::recursion::fib_tree;
use support::{check, run_with_deadline, scenario_command};

/// Deadline of every job a test starts.
const DEADLINE: Duration = Duration::from_secs(60);

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn half(x: u32) -> Result<u32, String> {
    if x.is_multiple_of(2) {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}

fn inc(x: u64) -> u64 {
    x + 1
}

fn square(x: u64) -> u64 {
    x * x
}

fn total_of(values: Vec<u64>) -> u64 {
    values.into_iter().sum()
}

/// `i * i`, after a line in the file `CHECKPOINT_TALLY` names (one per run of the function)
/// and a nap of `CHECKPOINT_TASK_MS` milliseconds (both read on the worker, so that they are
/// not arguments: the call is the same in every run of the job).
fn tallied_square(i: u64) -> u64 {
    use std::io::Write;
    if let Ok(path) = std::env::var("CHECKPOINT_TALLY") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the tally file");
        writeln!(file, "{i}").expect("a tally line");
    }
    let ms = std::env::var("CHECKPOINT_TASK_MS").map_or(0, |v| v.parse().expect("a number"));
    std::thread::sleep(Duration::from_millis(ms));
    i * i
}

fn my_rank() -> u32 {
    mpidask::worker_rank().expect("runs on a worker").0
}

/// Sleeps, then writes `path` (a task nobody keeps a future of).
fn late_write((ms, path): (u64, String)) {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(path, "written").expect("the test directory is writable");
}

/// Appends `x` to the file at `path` (a record that the task ran) and returns `2 x`.
fn tally((path, x): (String, u64)) -> u64 {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("the tally file opens");
    // One write, so lines from several processes do not interleave.
    file.write_all(format!("{x}\n").as_bytes())
        .expect("the tally is written");
    2 * x
}

/// Pure calls (Dask's `pure=True`, the default): the same function and arguments give the
/// same future and run once, in one `map` too; `pure(false)` runs again; once every future
/// of a call is dropped, the same call is a new task.
fn check_pure_calls(client: &Client, dir: &str) -> anyhow::Result<()> {
    let path = format!("{dir}/tally");
    let a = client.submit(tally, (path.clone(), 21u64));
    let b = client.submit(tally, (path.clone(), 21u64));
    ensure!(a.key() == b.key(), "the same call twice: {a:?} and {b:?}");
    let mapped = client.map(
        tally,
        [(path.clone(), 22), (path.clone(), 21), (path.clone(), 22)],
    );
    ensure!(mapped[1].key() == a.key(), "{mapped:?} against {a:?}");
    ensure!(mapped[0].key() == mapped[2].key() && mapped[0].key() != a.key());
    let fresh = client
        .with_options(TaskOptions::default().pure(false))
        .submit(tally, (path.clone(), 21u64));
    ensure!(fresh.key() != a.key());
    // A future as an argument: compared by key.
    let after = [
        client.submit(inc, &a),
        client.submit(inc, &b),
        client.submit(inc, &fresh),
    ];
    ensure!(after[0].key() == after[1].key() && after[0].key() != after[2].key());
    ensure!(client.gather(&after)? == vec![43, 43, 43]);
    ensure!(client.gather(&mapped)? == vec![44, 42, 44]);
    ensure!(client.gather(&[a.clone(), b, fresh])? == vec![42, 42, 42]);
    let first = a.key();
    drop((a, mapped, after));
    let again = client.submit(tally, (path.clone(), 21u64));
    ensure!(
        again.key() != first,
        "a call whose futures were all dropped runs again"
    );
    ensure!(again.result()? == 42);
    let mut runs: Vec<String> = std::fs::read_to_string(&path)?
        .lines()
        .map(str::to_string)
        .collect();
    runs.sort();
    ensure!(
        runs == ["21", "21", "21", "22"],
        "the tasks that ran: {runs:?}"
    );
    Ok(())
}

/// The task stream (Dask's `get_task_stream`, with and without `with get_task_stream() as
/// ts`) and `performance_report`: one record per run, the failed one with its error, only
/// the runs since the recording started, on the workers, within the time they ran; the
/// report of that part a private HTML page naming its functions and its failure only.
fn check_task_stream(client: &Client, dir: &str) -> anyhow::Result<()> {
    use std::time::{Duration, SystemTime};
    let earlier = client.map(square, 100..103u64);
    client.gather(&earlier)?;
    let ts = client.task_stream()?;
    let report = client.performance_report(format!("{dir}/report.html"))?;
    let before = SystemTime::now() - Duration::from_secs(1);
    let ok = client.map(inc, 1000..1004u64);
    let odd = client.try_submit(half, 7u32);
    ensure!(client.gather(&ok)? == vec![1001, 1002, 1003, 1004]);
    ensure!(odd.result().is_err());
    let after = SystemTime::now() + Duration::from_secs(1);
    let data = ts.data()?;
    ensure!(data.len() == 5, "the runs since the recording: {data:#?}");
    let mut names: Vec<String> = ok.iter().map(|f| f.name()).collect();
    names.push(odd.name());
    names.sort();
    let mut recorded: Vec<String> = data.iter().map(|r| r.name.clone()).collect();
    recorded.sort();
    ensure!(recorded == names, "{recorded:?} against {names:?}");
    for record in &data {
        ensure!(client.workers().contains(&record.worker), "{record:?}");
        ensure!(
            before <= record.start && record.start <= record.stop && record.stop <= after,
            "{record:?}"
        );
        ensure!(record.name.starts_with(&format!("{}-", record.function)));
        if record.key == odd.key() {
            let error = record.error.as_deref().unwrap_or_default();
            ensure!(!record.ok() && error.contains("7 is odd"), "{record:?}");
        } else {
            ensure!(record.ok() && record.nbytes > 0, "{record:?}");
        }
    }
    let path = report.finish()?;
    let page = std::fs::read_to_string(&path)?;
    ensure!(
        page.contains("Performance report of part of the program: 5 task runs"),
        "{}",
        path.display()
    );
    ensure!(page.contains("7 is odd") && page.contains(&odd.name()));
    ensure!(!page.contains("square"), "a run before the report is in it");
    use std::os::unix::fs::PermissionsExt;
    ensure!(std::fs::metadata(&path)?.permissions().mode() & 0o777 == 0o600);
    // Everything kept, the earlier runs too.
    let all = client.get_task_stream()?;
    for future in earlier.iter().chain(&ok) {
        ensure!(
            all.iter().filter(|r| r.key == future.key()).count() == 1,
            "{future:?} in {all:#?}"
        );
    }
    let missing = client.performance_report(format!("{dir}/no/such/dir/report.html"));
    ensure!(
        matches!(&missing, Err(e) if e.to_string().contains("does not exist")),
        "a report into a missing directory: {:?}",
        missing.err()
    );
    Ok(())
}

fn scenario_futures_api(client: &Client) -> anyhow::Result<()> {
    let dir = std::env::var("MPIDASK_TEST_DIR")?;
    check_pure_calls(client, &dir)?;
    check_task_stream(client, &dir)?;

    // wait(..., return_when=FIRST_COMPLETED): back once one is done, the futures split.
    // (The quick one finishes first at any thread count: it is waited for before the slow
    // one is submitted.)
    let quick = client.submit(sleep_ms, 1u64);
    quick.result()?;
    let slow = client.submit(sleep_ms, 2_000u64);
    let naps = [slow.clone(), quick.clone()];
    let first = client.wait_with(&naps, None, ReturnWhen::FirstCompleted)?;
    ensure!(
        first.done.len() == 1 && first.done[0].key() == quick.key(),
        "first completed: {:?}",
        first.done
    );
    ensure!(first.not_done.len() == 1 && first.not_done[0].key() == slow.key());
    ensure!(slow.status() == FutureStatus::Pending);

    // wait(..., timeout=...) gives a timeout error while one is still running.
    match client.wait_with(
        &naps,
        Some(Duration::from_millis(100)),
        ReturnWhen::AllCompleted,
    ) {
        Err(Error::Timeout { what, .. }) => ensure!(what == "all of 2 futures", "{what}"),
        other => return Err(anyhow!("expected a timeout, got {other:?}")),
    }
    // The task went on: FIRST_COMPLETED on it alone waits for it; then all are done.
    let alone = client.wait_with(&naps[..1], None, ReturnWhen::FirstCompleted)?;
    ensure!(alone.done.len() == 1 && alone.not_done.is_empty());
    let all = client.wait_with(
        &naps,
        Some(Duration::from_secs(30)),
        ReturnWhen::AllCompleted,
    )?;
    ensure!(all.done.len() == 2 && all.not_done.is_empty());

    // Future.result(timeout=...): a timeout error naming the task, then the value.
    let slow = client.submit(sleep_ms, 1_500u64);
    match slow.result_timeout(Duration::from_millis(100)) {
        Err(e @ Error::Timeout { .. }) => {
            let text = e.to_string();
            ensure!(text.contains(&slow.name()), "{text}");
            ensure!(text.contains("0.1 s"), "{text}");
        }
        other => return Err(anyhow!("expected a timeout, got {other:?}")),
    }
    ensure!(slow.result_timeout(Duration::from_secs(30))? == 1_500);

    // Future.exception() and Future.status: the error without the value, and no error for
    // a value.
    let odd = client.try_submit(half, 3u32);
    match odd.exception()? {
        Some(Error::Task(e)) => ensure!(e.message == "3 is odd", "{e}"),
        other => return Err(anyhow!("expected the task's error, got {other:?}")),
    }
    ensure!(odd.status() == FutureStatus::Error);
    let even = client.try_submit(half, 4u32);
    ensure!(even.exception()?.is_none());
    ensure!(even.status() == FutureStatus::Finished);
    ensure!(
        even.result()? == 2,
        "the value is still there after exception()"
    );
    let cancelled = client.submit(sleep_ms, 3_000u64);
    cancelled.cancel();
    ensure!(matches!(
        cancelled.exception()?,
        Some(Error::Cancelled { .. })
    ));
    ensure!(cancelled.status() == FutureStatus::Cancelled);

    // gather(..., errors="skip"): the values of those that succeeded, in order.
    let halves = client.try_map(half, 0..9u32);
    ensure!(client.gather_skipping_errors(&halves)? == vec![0, 1, 2, 3, 4]);
    ensure!(matches!(client.gather(&halves), Err(Error::Task(_))));

    // allow_other_workers: a task pinned to a rank that is no worker runs elsewhere;
    // without it, it fails naming the pin.
    let anywhere = client
        .with_options(
            TaskOptions::default()
                .workers([99])
                .allow_other_workers(true),
        )
        .submit(my_rank, ())
        .result()?;
    ensure!(client.workers().iter().any(|r| r.0 == anywhere));
    let pinned = error_text(
        client
            .with_options(TaskOptions::default().workers([99]))
            .submit(my_rank, ())
            .result(),
    );
    ensure!(pinned.contains("pinned to worker rank(s) 99"), "{pinned}");

    // A timeout of zero is an error that says what to give instead.
    match client.wait_with(&halves, Some(Duration::ZERO), ReturnWhen::AllCompleted) {
        Err(Error::Config(message)) => {
            ensure!(message.contains("timeout of 0 s"), "{message}")
        }
        other => return Err(anyhow!("expected a configuration error, got {other:?}")),
    }
    ensure!(matches!(
        halves[0].result_timeout(Duration::ZERO),
        Err(Error::Config(_))
    ));

    // as_completed: futures added while iterating come out too; batches hold every future
    // finished by then; with_results yields each with its value.
    let mut seq = client.as_completed(&[client.submit(inc, 0u64)]);
    let mut seen = vec![];
    while let Some(future) = seq.next() {
        let x = future.result()?;
        seen.push(x);
        if x < 5 {
            seq.add(client.submit(inc, x));
        }
    }
    ensure!(seen == vec![1, 2, 3, 4, 5], "{seen:?}");
    let squares = client.map(square, 0..20u64);
    client.wait(&squares)?;
    let mut seq = client.as_completed(&squares);
    let batch = seq.next_batch().expect("a batch");
    ensure!(
        batch.len() == 20,
        "all finished, so one batch: {}",
        batch.len()
    );
    ensure!(seq.next_batch().is_none() && seq.remaining() == 0);
    let mut total = 0;
    for (future, result) in client.as_completed(&squares).with_results() {
        ensure!(result? == future.result()?);
        total += future.result()?;
    }
    ensure!(total == (0..20u64).map(|x| x * x).sum::<u64>());

    // client.run: once on every worker, each result with its rank.
    let ranks = client.run(my_rank)?;
    ensure!(ranks.len() == client.workers().len());
    for (rank, reported) in &ranks {
        ensure!(
            rank.0 == *reported,
            "the call for {rank} ran on rank {reported}"
        );
    }

    // who_has and replicate: a value on one worker, then on every worker, each reading it
    // there; a failed future is an error naming it.
    let data = client.scatter((0..100_000).map(f64::from).collect::<Vec<_>>())?;
    client.wait(std::slice::from_ref(&data))?;
    ensure!(client.who_has(std::slice::from_ref(&data))?[0].len() == 1);
    client.replicate(std::slice::from_ref(&data), None)?;
    let mut holders = client.who_has(std::slice::from_ref(&data))?.remove(0);
    holders.sort();
    ensure!(holders == client.workers(), "replicated onto {holders:?}");
    for worker in client.workers() {
        let read = client
            .with_options(TaskOptions::default().workers([worker.0]))
            .submit(length_of, &data);
        ensure!(read.result()? == 100_000);
    }
    ensure!(client.who_has(std::slice::from_ref(&data))?[0].len() == client.workers().len());
    let failed = client.try_submit(half, 5u32);
    let refused = client
        .replicate(std::slice::from_ref(&failed), Some(2))
        .expect_err("a failed future has no value to copy")
        .to_string();
    ensure!(
        refused.contains(&failed.name()) && refused.contains("failed or was cancelled"),
        "{refused}"
    );

    // client.scatter of a list: one future per element, in order.
    let parts = client.scatter_each((1..=4u64).map(|n| vec![n; n as usize]))?;
    ensure!(parts.len() == 4);
    ensure!(client.gather(&client.map(total_of, parts.iter()))? == vec![1, 4, 9, 16]);

    // fire_and_forget: the task runs to the end though its future is dropped at once, and
    // the job waits for it (the test reads the file after the job).
    let path = format!("{dir}/forgotten");
    client.fire_and_forget(&[client.submit(late_write, (1_000u64, path))]);
    println!("SCENARIO futures_api OK");
    Ok(())
}

fn fails_on(x: u64) -> u64 {
    assert!(x != 3, "three is not welcome");
    x
}

/// From a task: the sum of `f(x)` over `xs` through futures, with a large value scattered
/// from the task and read by its tasks, and the worker ranks the tasks ran on.
fn spread((xs, big_len): (Vec<u64>, usize)) -> Result<(u64, u64, Vec<u32>), String> {
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    let big = client
        .scatter(vec![1.5f64; big_len])
        .map_err(|e| e.to_string())?;
    let sizes = client.map(length_of, xs.iter().map(|_| &big));
    let squares = client.map(square, xs.iter().copied());
    let ranks = client.map(pinned_rank, xs.iter().copied());
    // A large argument (sent ahead to a worker, not through the scheduler).
    let direct = client.submit(length_of, vec![0.5f64; big_len]);
    let mut total = 0;
    for (future, result) in client.as_completed(&squares).with_results() {
        total += result.map_err(|e| e.to_string())?;
        drop(future);
    }
    let lengths: u64 = client
        .gather(&sizes)
        .map_err(|e| e.to_string())?
        .into_iter()
        .sum::<u64>()
        + direct.result().map_err(|e| e.to_string())?;
    let ranks = client.gather(&ranks).map_err(|e| e.to_string())?;
    Ok((total, lengths, ranks))
}

fn length_of(values: Vec<f64>) -> u64 {
    values.len() as u64
}

fn pinned_rank(_: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(20));
    my_rank()
}

/// What a task client says of a failed task, of `scheduler_info`, and of a timeout.
fn client_errors(_: ()) -> Result<Vec<String>, String> {
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    let failed = client.submit(fails_on, 3u64).result();
    let info = client.scheduler_info().map(|_| ());
    let slow = client.submit(sleep_ms, 2_000u64);
    let late = slow.result_timeout(Duration::from_millis(50)).map(|_| ());
    client.cancel(&[slow]);
    Ok([failed.map(|_| ()), info, late]
        .into_iter()
        .map(|r| {
            r.err()
                .map(|e| match e {
                    Error::Task(task) => format!("{}: {}", task.key, task.message),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        })
        .collect())
}

/// A task client's calls are pure by default too: whether two alike share a key, and one
/// made `pure(false)` does not.
fn pure_in_task(_: ()) -> Result<bool, String> {
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    let a = client.submit(square, 6u64);
    let b = client.submit(square, 6u64);
    let c = client
        .with_options(TaskOptions::default().pure(false))
        .submit(square, 6u64);
    let same = a.key() == b.key() && a.key() != c.key();
    let values = client.gather(&[a, b, c]).map_err(|e| e.to_string())?;
    Ok(same && values == [36, 36, 36])
}

/// Starts a thread that, once this task has ended, submits through the task's client and
/// writes what it got to `path`: as with Dask's worker client, the client is the worker's
/// and outlives the task.
fn submit_after_return(path: String) -> Result<(), String> {
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let got = match client.submit(inc, 41u64).result() {
            Ok(value) => value.to_string(),
            Err(e) => format!("error: {e}"),
        };
        let part = format!("{path}.part");
        std::fs::write(&part, got).expect("the scratch directory is writable");
        std::fs::rename(part, path).expect("the scratch directory is writable");
    });
    Ok(())
}

fn scenario_task_client(client: &Client) -> anyhow::Result<()> {
    // A task client used after its task ended (from a thread the task started) works.
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("late");
    client
        .try_submit(submit_after_return, path.display().to_string())
        .result()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let late = std::fs::read_to_string(&path).unwrap_or_default();
    ensure!(late == "42", "a task client used after its task: {late:?}");
    ensure!(
        client.try_submit(pure_in_task, ()).result()?,
        "a task client's pure calls"
    );
    // Outside a task there is no task client.
    let outside = mpidask::task_client().err().map(|e| e.to_string());
    ensure!(
        outside
            .as_deref()
            .is_some_and(|m| m.contains("outside a task")),
        "{outside:?}"
    );
    // A recursion 10 levels deep (fib(11)) on workers of one thread each: every waiting
    // task gives its thread back, so the tasks below it run.
    let (value, tasks) = client.try_submit(fib_tree, 11u32).result()?;
    ensure!(
        value == 89 && tasks == 287,
        "fib(11) = {value} in {tasks} tasks"
    );

    // Futures, scatter (small and large), map, as_completed and gather from a task.
    let xs: Vec<u64> = (1..=8).collect();
    let big_len = 100_000;
    let (total, lengths, ranks) = client.try_submit(spread, (xs.clone(), big_len)).result()?;
    ensure!(total == xs.iter().map(|x| x * x).sum::<u64>(), "{total}");
    ensure!(
        lengths == (xs.len() as u64 + 1) * big_len as u64,
        "{lengths}"
    );
    let workers: Vec<u32> = client.workers().iter().map(|r| r.0).collect();
    ensure!(ranks.iter().all(|r| workers.contains(r)), "{ranks:?}");
    if workers.len() > 1 {
        ensure!(
            ranks.iter().any(|r| *r != ranks[0]),
            "the task client's tasks all ran on rank {}",
            ranks[0]
        );
    }

    // Errors: a failed task names its cause; program-only calls and timeouts say so.
    let errors = client.try_submit(client_errors, ()).result()?;
    ensure!(
        errors[0].contains("three is not welcome"),
        "a failed task's error: {}",
        errors[0]
    );
    ensure!(
        errors[1].contains("not available to a task client"),
        "{}",
        errors[1]
    );
    ensure!(errors[2].contains("0.05"), "the timeout: {}", errors[2]);
    println!("SCENARIO task_client OK");
    Ok(())
}

/// Any error as a task's message.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Takes `n` values from queue `inbox`, puts their sum in `outbox`.
fn queue_sum(n: u64) -> Result<u64, String> {
    let client = mpidask::task_client().map_err(text)?;
    let inbox = client.queue::<u64>("inbox");
    let mut total = 0;
    for _ in 0..n {
        total += inbox.get(Some(Duration::from_secs(30))).map_err(text)?;
    }
    client.queue::<u64>("outbox").put(&total).map_err(text)?;
    Ok(total)
}

/// Adds 1 to variable `counter` `times` times, each read and write under lock `counter`.
fn locked_increments(times: u64) -> Result<(), String> {
    let client = mpidask::task_client().map_err(text)?;
    let (lock, counter) = (client.lock("counter"), client.variable::<u64>("counter"));
    for _ in 0..times {
        lock.acquire(None).map_err(text)?;
        let value = counter.get(None).map_err(text)?;
        std::thread::sleep(Duration::from_millis(1));
        counter.set(&(value + 1)).map_err(text)?;
        lock.release().map_err(text)?;
    }
    Ok(())
}

/// Holds a lease of semaphore `pool` (of `leases`) for 30 ms, counting the holders in
/// variable `inside` and their most in `peak`.
fn hold_lease(leases: u32) -> Result<(), String> {
    let client = mpidask::task_client().map_err(text)?;
    let (pool, meta) = (client.semaphore("pool", leases), client.lock("meta"));
    let (inside, peak) = (
        client.variable::<u32>("inside"),
        client.variable::<u32>("peak"),
    );
    let count = |delta: i32| -> Result<(), String> {
        meta.acquire(None).map_err(text)?;
        let now = (inside.get(None).map_err(text)? as i32 + delta) as u32;
        inside.set(&now).map_err(text)?;
        let most = peak.get(None).map_err(text)?.max(now);
        peak.set(&most).map_err(text)?;
        meta.release().map_err(text)
    };
    ensure_lease(pool.acquire(Some(Duration::from_secs(30))).map_err(text)?)?;
    count(1)?;
    std::thread::sleep(Duration::from_millis(30));
    count(-1)?;
    pool.release().map_err(text)
}

fn ensure_lease(got: bool) -> Result<(), String> {
    got.then_some(())
        .ok_or_else(|| "no lease within 30 s".to_string())
}

/// Waits for event `go` (30 s at most).
fn wait_for_go(_: ()) -> Result<bool, String> {
    let client = mpidask::task_client().map_err(text)?;
    client
        .event("go")
        .wait(Some(Duration::from_secs(30)))
        .map_err(text)
}

/// Tries lock `busy` without waiting.
fn try_busy_lock(_: ()) -> Result<bool, String> {
    let client = mpidask::task_client().map_err(text)?;
    let lock = client.lock("busy");
    let got = lock.acquire(Some(Duration::ZERO)).map_err(text)?;
    if got {
        lock.release().map_err(text)?;
    }
    Ok(got)
}

fn scenario_coordination(client: &Client) -> anyhow::Result<()> {
    // Queue: the program feeds a task, which answers through another queue.
    let summing = client.try_submit(queue_sum, 5u64);
    let inbox = client.queue::<u64>("inbox");
    for x in 1..=5 {
        inbox.put(&x)?;
    }
    ensure!(summing.result()? == 15);
    ensure!(client.queue::<u64>("outbox").get(None)? == 15);
    ensure!(inbox.qsize()? == 0);
    match inbox.get(Some(Duration::from_millis(50))) {
        Err(Error::Timeout { what, .. }) if what.contains("inbox") => {}
        other => anyhow::bail!("an empty queue's get: {other:?}"),
    }

    // Lock and Variable: increments from tasks on every worker, none lost.
    let counter = client.variable::<u64>("counter");
    counter.set(&0)?;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            client
                .with_options(TaskOptions::default().pure(false))
                .try_submit(locked_increments, 10u64)
        })
        .collect();
    for task in &tasks {
        task.result()?;
    }
    ensure!(counter.get(None)? == 40, "counter {}", counter.get(None)?);
    ensure!(matches!(
        client
            .variable::<u64>("never set")
            .get(Some(Duration::from_millis(20))),
        Err(Error::Timeout { .. })
    ));

    // A lock the program holds is not free for a task.
    let busy = client.lock("busy");
    ensure!(busy.acquire(None)?);
    ensure!(
        !client.try_submit(try_busy_lock, ()).result()?,
        "lock taken twice"
    );
    busy.release()?;
    ensure!(client.try_submit(try_busy_lock, ()).result()?);
    ensure!(busy.release().is_err(), "released twice");

    // Semaphore: never more holders than leases.
    for (name, value) in [("inside", 0u32), ("peak", 0)] {
        client.variable::<u32>(name).set(&value)?;
    }
    let holders: Vec<_> = (0..6)
        .map(|_| {
            client
                .with_options(TaskOptions::default().pure(false))
                .try_submit(hold_lease, 2u32)
        })
        .collect();
    for holder in &holders {
        holder.result()?;
    }
    let peak = client.variable::<u32>("peak").get(None)?;
    ensure!(
        (1..=2).contains(&peak),
        "{peak} holders of a semaphore of 2"
    );

    // Event: a task waits for the program to set it.
    let waiting = client.try_submit(wait_for_go, ());
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        waiting.status() == FutureStatus::Pending,
        "waited for nothing"
    );
    let go = client.event("go");
    ensure!(!go.is_set()?);
    go.set()?;
    ensure!(waiting.result()?, "the task's wait ended without the event");
    ensure!(go.is_set()?);
    ensure!(
        !client
            .event("never")
            .wait(Some(Duration::from_millis(30)))?
    );
    println!("SCENARIO coordination OK");
    Ok(())
}

/// The world ranks of an MPI task's members, in the order of its communicator.
fn members(comm: &MpiComm) -> Vec<u32> {
    let mine = my_rank();
    let mut all = vec![0u32; usize::try_from(comm.size()).expect("a size")];
    comm.all_gather_into(&mine, &mut all[..]);
    all
}

/// `base + rank` summed over the communicator.
fn rank_sum(comm: &MpiComm, base: u64) -> u64 {
    let mine = base + u64::try_from(comm.rank()).expect("a rank");
    let mut total = 0;
    comm.all_reduce_into(&mine, &mut total, SystemOperation::sum());
    total
}

/// Each member sums its share of `values`; the shares summed over the communicator.
fn shared_sum(comm: &MpiComm, values: Vec<f64>) -> f64 {
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let share = &values[values.len() * rank / size..values.len() * (rank + 1) / size];
    let mine: f64 = share.iter().sum();
    let mut total = 0.0;
    comm.all_reduce_into(&mine, &mut total, SystemOperation::sum());
    total
}

fn fails_everywhere(comm: &MpiComm) -> u64 {
    panic!("no solution on rank {} of the task", comm.rank())
}

/// Rank 1 fails while the others wait for it in a collective.
fn fails_on_one(comm: &MpiComm) -> u64 {
    if comm.rank() == 1 {
        panic!("rank 1 of the task gave up");
    }
    let mut total = 0;
    comm.all_reduce_into(&1u64, &mut total, SystemOperation::sum());
    total
}

/// The error of a result expected to fail, with its causes.
fn error_text<T: std::fmt::Debug>(result: mpidask::Result<T>) -> String {
    format!("{:#}", anyhow::Error::from(result.expect_err("an error")))
}

/// From a task: an MPI task on `n` workers, its own worker among them.
fn mpi_task_from_a_task(n: usize) -> Result<u64, String> {
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    client
        .submit_mpi(rank_sum, 10u64, n)
        .result()
        .map_err(|e| e.to_string())
}

fn scenario_mpi_tasks(client: &Client) -> anyhow::Result<()> {
    let workers: Vec<u32> = client.workers().iter().map(|r| r.0).collect();
    let n = workers.len();
    // One task on every worker: a communicator of exactly them, in rank order.
    let all = client.submit_mpi(members, (), n).result()?;
    ensure!(all == workers, "the communicator of all workers: {all:?}");
    // Its input from a future, its value read by a plain task.
    let nine = client.submit(inc, 8u64);
    let summed = client.submit_mpi(rank_sum, &nine, n);
    let squared = client.submit(square, &summed).result()?;
    let expected = (9 * n + n * (n - 1) / 2) as u64;
    ensure!(squared == expected * expected, "{squared} != {expected}^2");
    // A large argument (sent ahead to one worker), fetched by every member before any
    // enters MPI.
    let values: Vec<f64> = (0..1_000_000).map(|i| f64::from(i % 1000)).collect();
    let total = client.submit_mpi(shared_sum, values.clone(), n).result()?;
    ensure!(total == values.iter().sum::<f64>(), "shared sum {total}");
    // Tasks of two workers beside plain tasks, on every worker in turn.
    let pairs: Vec<_> = (0..4u64)
        .map(|base| client.submit_mpi(rank_sum, base, 2))
        .collect();
    let plain = client.map(inc, 0..40u64);
    let singles: Vec<_> = (0..3u64)
        .map(|base| client.submit_mpi(rank_sum, base, 1))
        .collect();
    ensure!(client.gather(&pairs)? == vec![1, 3, 5, 7]);
    ensure!(client.gather(&plain)? == (1..=40).collect::<Vec<u64>>());
    ensure!(client.gather(&singles)? == vec![0, 1, 2]);
    // Submitted from a task, which waits for it on one of its workers.
    let nested = client.try_submit(mpi_task_from_a_task, n).result()?;
    ensure!(
        nested == (10 * n + n * (n - 1) / 2) as u64,
        "nested {nested}"
    );
    // A function that panics on every member fails the task, and the workers go on.
    let error = error_text(client.submit_mpi(fails_everywhere, (), n).result());
    ensure!(error.contains("no solution on rank"), "{error}");
    ensure!(client.submit_mpi(rank_sum, 0u64, n).result()? == (n * (n - 1) / 2) as u64);
    // Bad requests: each a clear error, the job goes on.
    let too_many = error_text(client.submit_mpi(rank_sum, 0u64, n + 1).result());
    ensure!(
        too_many.contains(&format!(
            "asks for {} workers and this job has {n} workers in its MPI communicator",
            n + 1
        )) && too_many.contains(&format!("at least {} ranks", n + 3)),
        "{too_many}"
    );
    let none = error_text(client.submit_mpi(rank_sum, 0u64, 0).result());
    ensure!(none.contains("at least 1 worker"), "{none}");
    let retried = error_text(
        client
            .with_options(TaskOptions::default().retries(1))
            .submit_mpi(rank_sum, 0u64, 1)
            .result(),
    );
    ensure!(retried.contains("not retried"), "{retried}");
    println!("SCENARIO mpi_tasks OK");
    Ok(())
}

/// Local mode: no worker is an MPI process, and the error says to use a launcher.
fn scenario_mpi_tasks_local(client: &Client) -> anyhow::Result<()> {
    let error = error_text(client.submit_mpi(rank_sum, 0u64, 1).result());
    ensure!(
        error.contains("no worker of this job is an MPI process")
            && error.contains("under mpirun or srun"),
        "{error}"
    );
    ensure!(client.submit(inc, 1u64).result()? == 2);
    println!("SCENARIO mpi_tasks_local OK");
    Ok(())
}

/// A member fails while the others wait for it in MPI: the task fails, and the job ends
/// (exit code 4) once they have been stuck for 30 s.
fn scenario_mpi_task_stuck(client: &Client) -> anyhow::Result<()> {
    let error = error_text(client.submit_mpi(fails_on_one, (), 2).result());
    println!("FAILED {error}");
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

/// 200 pure tasks and their sum (a job run with `--checkpoint`): says `HALF-DONE` on
/// stdout once 100 finished, then checks the sum.
fn scenario_checkpoint(client: &Client) -> anyhow::Result<()> {
    use std::io::Write;
    let squares = client.map(tallied_square, 0..200u64);
    for (done, future) in client.as_completed(&squares).enumerate() {
        future.result()?;
        if done + 1 == 100 {
            println!("HALF-DONE");
            std::io::stdout().flush()?;
        }
    }
    let total = client.submit(total_of, &squares).result()?;
    ensure!(total == (0..200u64).map(|i| i * i).sum::<u64>(), "{total}");
    println!("SCENARIO checkpoint OK");
    Ok(())
}

fn run_scenario(name: &str) -> ! {
    match name {
        "futures_api" => mpidask::run(scenario_futures_api),
        "task_client" => mpidask::run(scenario_task_client),
        "coordination" => mpidask::run(scenario_coordination),
        "mpi_tasks" => mpidask::run(scenario_mpi_tasks),
        "mpi_tasks_local" => mpidask::run(scenario_mpi_tasks_local),
        "mpi_task_stuck" => mpidask::run(scenario_mpi_task_stuck),
        "checkpoint" => mpidask::run(scenario_checkpoint),
        other => panic!("unknown scenario {other}"),
    }
}

/// The futures scenario at `np` ranks (0: local mode with 2 workers).
fn test_futures_api(np: usize) -> Result<(), Failed> {
    check(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let mut command = scenario_command(np, "futures_api");
        command.env("MPIDASK_TEST_DIR", dir.path());
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0)
            .expect_stdout("SCENARIO futures_api OK")
            .expect_quiet();
        let written = std::fs::read_to_string(dir.path().join("forgotten"));
        assert_eq!(
            written.ok().as_deref(),
            Some("written"),
            "the forgotten task did not run to the end before the job ended ({})",
            run.command
        );
    })
}

/// The task-client scenario at `np` ranks (0: local mode with 2 workers), one thread per
/// worker.
fn test_task_client(np: usize) -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_command(np, "task_client");
        command.env("MPIDASK_NTHREADS", "1");
        run_with_deadline(command, DEADLINE)
            .expect_code(0)
            .expect_stdout("SCENARIO task_client OK")
            .expect_quiet();
    })
}

/// Queues, variables, locks, semaphores and events between the program and its tasks at
/// `np` ranks (0: local mode with 2 workers), two threads per worker.
fn test_coordination(np: usize) -> Result<(), Failed> {
    check(|| {
        let mut command = scenario_command(np, "coordination");
        command.env("MPIDASK_NTHREADS", "2");
        run_with_deadline(command, DEADLINE)
            .expect_code(0)
            .expect_stdout("SCENARIO coordination OK")
            .expect_quiet();
    })
}

/// `examples/fib.rs`, recursion 12 levels deep on one thread per worker, checks itself.
fn test_fib_example(np: usize) -> Result<(), Failed> {
    check(|| {
        let args = ["--n", "20", "--cutoff", "8", "--nthreads", "1"];
        let run = support::run_example("fib", np, &args, DEADLINE);
        run.expect_code(0)
            .expect_stdout("CHECK ok: fib(20) = 6765")
            .expect_quiet();
        assert_eq!(run.field("RESULT", "tasks").as_deref(), Some("1219"));
    })
}

/// MPI tasks at `np` ranks (0: local mode, where they are refused with a clear error).
fn test_mpi_tasks(np: usize) -> Result<(), Failed> {
    check(|| {
        let name = if np == 0 {
            "mpi_tasks_local"
        } else {
            "mpi_tasks"
        };
        run_with_deadline(scenario_command(np, name), DEADLINE)
            .expect_code(0)
            .expect_stdout(&format!("SCENARIO {name} OK"))
            .expect_quiet();
    })
}

/// A member of an MPI task fails while another waits for it in `MPI_Allreduce`: the task's
/// error reaches the program, and the job ends with exit code 4 rather than hanging.
fn test_mpi_task_stuck() -> Result<(), Failed> {
    check(|| {
        let run = run_with_deadline(scenario_command(4, "mpi_task_stuck"), DEADLINE * 2);
        run.expect_code(4)
            .expect_stdout("rank 1 of the task gave up")
            .expect_stderr("wait in MPI for the failed one");
    })
}

/// `examples/mpi_task.rs`: a dot product with `MPI_Allreduce` inside a task on every
/// worker, checked against a serial loop.
fn test_mpi_task_example(np: usize) -> Result<(), Failed> {
    check(|| {
        let run = support::run_example("mpi_task", np, &["--n", "1000000"], DEADLINE);
        run.expect_code(0)
            .expect_stdout("CHECK ok: dot =")
            .expect_quiet();
        assert_eq!(
            run.field("RESULT", "workers"),
            Some((np - 2).to_string()),
            "{}",
            run.command
        );
    })
}

/// Checkpoint and resume at `np` ranks (0: local mode): a job of 200 tasks with
/// `--checkpoint`, stopped by SIGTERM once half of them finished, started again computes
/// only the tasks whose results are not in the directory (counted by the tasks themselves
/// and in the trace) and gives the same sum; a third start computes nothing; a start with
/// other program arguments, or (locally) of another executable, reuses nothing and says
/// why; a directory holding foreign files is refused with exit code 2.
fn test_checkpoint(np: usize) -> Result<(), Failed> {
    check(|| {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let dir = scratch.path().join("checkpoint");
        let tally = |name: &str| scratch.path().join(name);
        let runs = |name: &str| {
            std::fs::read_to_string(tally(name)).map_or(0, |text| text.lines().count())
        };
        let job = |binary: Option<&std::path::Path>, name: &str, extra: &[&str]| {
            let mut command = match binary {
                Some(binary) => {
                    let mut command = support::local_command(binary);
                    command.env("MPIDASK_LOCAL_WORKERS", "2");
                    command.env("MPIDASK_SCENARIO", "checkpoint");
                    command
                }
                None => scenario_command(np, "checkpoint"),
            };
            command
                .args(extra)
                .env("MPIDASK_CHECKPOINT", &dir)
                .env("MPIDASK_NTHREADS", "1")
                .env("CHECKPOINT_TALLY", tally(name));
            command
        };
        let results = || {
            std::fs::read_dir(&dir)
                .expect("the checkpoint directory")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
                .count()
        };

        // 1: stopped by SIGTERM once 100 of the 200 tasks finished.
        let mut first = job(None, "first", &[]);
        first.env("CHECKPOINT_TASK_MS", "30");
        let stop: Box<dyn FnOnce(i32)> = Box::new(move |session| match np {
            0 => unsafe {
                libc::kill(session, libc::SIGTERM);
            },
            _ => support::signal_members(session, libc::SIGTERM),
        });
        let run = support::run_with_trigger(first, DEADLINE, Some(("HALF-DONE", stop)));
        run.expect_code(mpidask::ExitCode::Signal.code());
        let kept = results();
        assert!(
            (100..200).contains(&kept),
            "{kept} results kept after the stop\n{}",
            run.dump()
        );
        let mode = std::fs::metadata(&dir)
            .expect("the directory")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );

        // 2: started again, it computes only the rest.
        let trace = scratch.path().join("trace.json");
        let mut second = job(None, "second", &[]);
        second.env("MPIDASK_TRACE", &trace);
        let run = run_with_deadline(second, DEADLINE);
        run.expect_code(0)
            .expect_stdout("SCENARIO checkpoint OK")
            .expect_quiet()
            .expect_stderr(&format!(
                "{kept} result(s) of an earlier run are loaded instead of computed"
            ))
            .expect_stderr(&format!(
                "after 201 tasks ({kept} of them loaded from the checkpoint, {} computed)",
                201 - kept
            ));
        assert_eq!(runs("second"), 200 - kept, "{}", run.dump());
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&trace).expect("the trace")).expect("JSON");
        let traced = trace["traceEvents"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                e["cat"] == "task"
                    && e["name"]
                        .as_str()
                        .is_some_and(|n| n.contains("tallied_square"))
            })
            .count();
        assert_eq!(traced, 200 - kept, "task runs in the trace");
        assert_eq!(results(), 201, "every result and the sum are kept");

        // 3: everything is loaded.
        let run = run_with_deadline(job(None, "third", &[]), DEADLINE);
        run.expect_code(0)
            .expect_stdout("SCENARIO checkpoint OK")
            .expect_quiet()
            .expect_stderr("after 201 tasks (201 of them loaded from the checkpoint, 0 computed)");
        assert_eq!(runs("third"), 0, "{}", run.dump());

        // 4: other program arguments: nothing is reused, and the log says why.
        let run = run_with_deadline(job(None, "fourth", &["--input", "other"]), DEADLINE);
        run.expect_code(0)
            .expect_stdout("SCENARIO checkpoint OK")
            .expect_stderr("written by a run with other arguments")
            .expect_stderr("every task is computed again");
        assert_eq!(runs("fourth"), 200, "{}", run.dump());

        if np == 0 {
            // 5: another executable (this one with a byte more): nothing is reused.
            let binary = std::env::current_exe().expect("the test binary");
            let other = scratch.path().join("rebuilt");
            std::fs::copy(&binary, &other).expect("a copy of the test binary");
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&other)
                .expect("the copy");
            std::io::Write::write_all(&mut file, b"\0").expect("a byte more");
            drop(file);
            let run =
                run_with_deadline(job(Some(&other), "fifth", &["--input", "other"]), DEADLINE);
            run.expect_code(0)
                .expect_stderr("written by a different executable");
            assert_eq!(runs("fifth"), 200, "{}", run.dump());

            // A directory of someone else's files is refused, and left as it was.
            let foreign = scratch.path().join("foreign");
            std::fs::create_dir(&foreign).expect("a directory");
            std::fs::write(foreign.join("notes.txt"), "mine").expect("a file");
            let mut command = job(None, "foreign", &[]);
            command.env("MPIDASK_CHECKPOINT", &foreign);
            let run = run_with_deadline(command, DEADLINE);
            run.expect_code(2)
                .expect_stderr("notes.txt, which mpidask did not write");
            assert_eq!(runs("foreign"), 0);
            assert_eq!(std::fs::read_dir(&foreign).expect("listed").count(), 1);
        }
    })
}

fn main() {
    if let Ok(name) = std::env::var("MPIDASK_SCENARIO") {
        run_scenario(&name);
    }
    let mut args = Arguments::from_args();
    // The jobs share two cores; one at a time keeps their timing realistic.
    args.test_threads.get_or_insert(1);
    let tests = vec![
        Trial::test("futures_api_np3", || test_futures_api(3)),
        Trial::test("futures_api_np4", || test_futures_api(4)),
        Trial::test("futures_api_local", || test_futures_api(0)),
        Trial::test("task_client_np3", || test_task_client(3)),
        Trial::test("task_client_np4", || test_task_client(4)),
        Trial::test("task_client_local", || test_task_client(0)),
        Trial::test("coordination_np3", || test_coordination(3)),
        Trial::test("coordination_np4", || test_coordination(4)),
        Trial::test("coordination_local", || test_coordination(0)),
        Trial::test("fib_example_np4", || test_fib_example(4)),
        Trial::test("checkpoint_np3", || test_checkpoint(3)),
        Trial::test("checkpoint_np4", || test_checkpoint(4)),
        Trial::test("checkpoint_local", || test_checkpoint(0)),
        Trial::test("fib_example_local", || test_fib_example(0)),
        Trial::test("mpi_tasks_np4", || test_mpi_tasks(4)),
        Trial::test("mpi_tasks_np5", || test_mpi_tasks(5)),
        Trial::test("mpi_tasks_np6", || test_mpi_tasks(6)),
        Trial::test("mpi_tasks_local", || test_mpi_tasks(0)),
        Trial::test("mpi_task_stuck_np4", test_mpi_task_stuck),
        Trial::test("mpi_task_example_np5", || test_mpi_task_example(5)),
    ];
    libtest_mimic::run(&args, tests).exit();
}
