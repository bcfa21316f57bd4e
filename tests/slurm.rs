//! Batch jobs on a real Slurm: scripts made by `mpidask jobscript` / `mpidask submit` run the
//! Pi example with srun and with mpirun, a failing program fails its job, the walltime
//! signal stops a job in order, and a job with `--checkpoint DIR --requeue` resumes after
//! its requeue (stopped by `scancel`, and by a real time limit). Needs the local cluster
//! `make slurm` starts (`make test` does); without it these tests fail, they do not skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{Run, example, mpi_environment, require_slurm, run_with_deadline, run_with_trigger};

/// One job at a time: the cluster is two cores.
static CLUSTER: Mutex<()> = Mutex::new(());

const DEADLINE: Duration = Duration::from_secs(120);

fn mpidask() -> &'static str {
    env!("CARGO_BIN_EXE_mpidask")
}

/// A fresh directory for one test's scripts and logs.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpidask-slurm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// `mpidask jobscript <options> -- <program>`, written to `dir/<name>.sbatch`.
fn jobscript(dir: &Path, name: &str, options: &[&str], program: &[&str]) -> PathBuf {
    let output = Command::new(mpidask())
        .arg("jobscript")
        .args(["--job-name", name, "--output"])
        .arg(dir.join(format!("{name}.out")))
        .args(options)
        .arg("--")
        .args(program)
        .output()
        .expect("mpidask jobscript runs");
    assert!(
        output.status.success(),
        "mpidask jobscript failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join(format!("{name}.sbatch"));
    std::fs::write(&path, &output.stdout).expect("script written");
    path
}

/// `sbatch --wait script` from `dir`, with the environment Open MPI needs here.
fn sbatch_wait(dir: &Path, script: &Path) -> Command {
    let mut command = Command::new("sbatch");
    command.arg("--wait").arg(script).current_dir(dir);
    mpi_environment(&mut command);
    command
}

fn job_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default()
}

fn pi_args() -> Vec<String> {
    vec![
        example("pi").display().to_string(),
        "--sizes-gb".into(),
        "0.2".into(),
        "--chunk-mb".into(),
        "16".into(),
    ]
}

fn expect_pi_job(run: &Run, dir: &Path, name: &str) {
    let log = job_log(dir, name);
    assert_eq!(
        run.code,
        Some(0),
        "job {name} failed\n{}\n--- job log ---\n{log}",
        run.dump()
    );
    assert!(
        log.contains("RESULT bytes=200000000"),
        "job {name} printed no result:\n{log}"
    );
    assert!(
        log.contains("workers=2"),
        "job {name}: 2 workers expected:\n{log}"
    );
    assert!(
        !log.contains("] ERROR:") && !log.contains("] WARN:"),
        "job {name} is noisy:\n{log}"
    );
}

#[test]
fn pi_script_runs_with_srun_and_with_mpirun() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("pi");
    let program = pi_args();
    let program: Vec<&str> = program.iter().map(String::as_str).collect();
    for launcher in ["srun", "mpirun"] {
        let name = format!("pi-{launcher}");
        let script = jobscript(
            &dir,
            &name,
            &["--launcher", launcher, "--walltime", "00:05:00"],
            &program,
        );
        let run = run_with_deadline(sbatch_wait(&dir, &script), DEADLINE);
        expect_pi_job(&run, &dir, &name);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submit_waits_and_returns_the_job_exit_code() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("submit");
    let mut command = Command::new(mpidask());
    command
        .current_dir(&dir)
        .args(["submit", "--wait", "--job-name", "pi-submit", "--script"])
        .arg(dir.join("pi-submit.sbatch"))
        .arg("--output")
        .arg(dir.join("pi-submit.out"))
        .arg("--")
        .args(pi_args());
    mpi_environment(&mut command);
    let run = run_with_deadline(command, DEADLINE);
    expect_pi_job(&run, &dir, "pi-submit");
    assert!(dir.join("pi-submit.sbatch").exists(), "the script is kept");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_program_fails_its_job() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("fail");
    let pi = example("pi").display().to_string();
    for launcher in ["srun", "mpirun"] {
        let name = format!("fail-{launcher}");
        let script = jobscript(
            &dir,
            &name,
            &["--launcher", launcher],
            &[&pi, "--chunk-mb", "0"],
        );
        let run = run_with_deadline(sbatch_wait(&dir, &script), DEADLINE);
        let log = job_log(&dir, &name);
        assert_eq!(
            run.code,
            Some(1),
            "job {name} must fail with 1\n{}\n{log}",
            run.dump()
        );
        assert_eq!(
            log.matches("ERROR: the client program returned an error: --chunk-mb must be positive")
                .count(),
            1,
            "one error line in the job log:\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_walltime_signal_stops_the_job_in_order() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("walltime");
    let pi = example("pi").display().to_string();
    for launcher in ["srun", "mpirun"] {
        let name = format!("long-{launcher}");
        // 2 TB of random numbers: minutes, far more than the test waits.
        let script = jobscript(
            &dir,
            &name,
            &["--launcher", launcher],
            &[&pi, "--sizes-gb", "2000"],
        );
        let log_path = dir.join(format!("{name}.out"));
        let job_name = name.clone();
        // What `#SBATCH --signal=B:USR1@60` does at walltime - 60 s, sent once the job runs.
        let run = run_with_trigger(
            sbatch_wait(&dir, &script),
            DEADLINE,
            Some((
                "Submitted batch job",
                Box::new(move |_| {
                    let started = std::time::Instant::now();
                    while !std::fs::read_to_string(&log_path)
                        .is_ok_and(|l| l.contains("workers joined"))
                    {
                        assert!(
                            started.elapsed() < Duration::from_secs(60),
                            "job {job_name} never started"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let status = Command::new("scancel")
                        .args(["--signal=USR1", "--batch", "--name", &job_name])
                        .status()
                        .expect("scancel runs");
                    assert!(status.success(), "scancel failed");
                }),
            )),
        );
        let log = job_log(&dir, &name);
        assert_eq!(
            run.code,
            Some(9),
            "job {name} must stop with 9\n{}\n{log}",
            run.dump()
        );
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("] ERROR:")).collect();
        assert!(
            errors.len() == 1
                && errors[0].contains("received SIGUSR1")
                && errors[0].contains("tasks done"),
            "one error line naming the signal:\n{log}"
        );
        assert!(log.contains("job ends with exit code 9"), "{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `scontrol ARGS`' standard output. A call that fails is tried again every half second for
/// up to 30 s: under load slurmctld sometimes drops a connection ("Zero Bytes were
/// transmitted or received" in its log), and one failed poll must not end a wait.
fn scontrol(args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let output = Command::new("scontrol")
            .args(args)
            .output()
            .expect("scontrol runs");
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`scontrol {}` fails for 30 s: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Fields of one `scontrol show job` (the cluster keeps a finished job for `MinJobAge`,
/// 300 s): one snapshot of the job, so the fields agree with each other.
fn job_fields<const N: usize>(id: &str, fields: [&str; N]) -> [Option<String>; N] {
    let shown = scontrol(&["show", "job", "-o", id]);
    fields.map(|field| {
        shown
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{field}=")).map(String::from))
    })
}

/// Waits (polling) until `ready` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Cancels the job when the test ends, however it ends.
struct CancelOnDrop(String);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.0).status();
    }
}

/// `sbatch --parsable script` from `dir`: the job's id, and a guard that cancels it.
fn submit(dir: &Path, script: &Path) -> (String, CancelOnDrop) {
    let mut submit = Command::new("sbatch");
    submit.arg("--parsable").arg(script).current_dir(dir);
    mpi_environment(&mut submit);
    let output = submit.output().expect("sbatch runs");
    assert!(output.status.success(), "sbatch failed: {output:?}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (id.clone(), CancelOnDrop(id))
}

/// How a followed job ended.
struct Ended {
    state: String,
    restarts: u32,
    /// Each state the job was seen in, with the seconds since the follow began.
    seen: Vec<String>,
}

/// Follows a job until it ends (a state it does not leave), for at most `limit`. Slurm would
/// start a requeued job two minutes later at the earliest; each time the job is back in the
/// queue this has it start 5 s later. (Not in the same second: the node refuses to start a
/// job in the second its last run was killed, "Job credential revoked", and the job ends
/// `FAILED`.)
fn follow_job(id: &str, limit: Duration) -> Ended {
    const ENDED: [&str; 8] = [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    ];
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut restarts_started = 0;
    loop {
        let [state, restarts] = job_fields(id, ["JobState", "Restarts"]);
        let state = state.unwrap_or_default();
        let restarts: u32 = restarts.map_or(0, |r| r.parse().unwrap_or(0));
        let now = format!("{state} (restarts {restarts})");
        if seen.last().is_none_or(|last| !last.ends_with(&now)) {
            seen.push(format!("{:.1}s {now}", started.elapsed().as_secs_f64()));
        }
        if ENDED.contains(&state.as_str()) {
            return Ended {
                state,
                restarts,
                seen,
            };
        }
        if state == "PENDING" && restarts > restarts_started {
            scontrol(&["update", &format!("jobid={id}"), "starttime=now+5"]);
            restarts_started = restarts;
        }
        assert!(
            started.elapsed() < limit,
            "job {id} has not ended after {limit:?}; seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// From the last run's log line "after 200 tasks (L of them loaded from the checkpoint, C
/// computed)": (L, C).
fn checkpoint_counts(log: &str) -> (usize, usize) {
    log.lines()
        .find_map(|l| {
            let counts = l.split("after 200 tasks (").nth(1)?;
            let loaded = counts.split(" of them loaded").next()?.parse().ok()?;
            let computed = counts
                .split("checkpoint, ")
                .nth(1)?
                .split(" computed")
                .next()?
                .parse()
                .ok()?;
            Some((loaded, computed))
        })
        .unwrap_or_else(|| panic!("no count of loaded results:\n{log}"))
}

#[test]
fn a_requeued_job_resumes_from_its_checkpoint() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("requeue");
    let checkpoint = dir.join("checkpoint");
    let pi = example("pi_futures").display().to_string();
    // About 15 s of points on this machine's two workers, so that the signal sent once 40
    // results are kept arrives while the job runs (on a busy machine Slurm can take
    // seconds to deliver it: 4 s of points were once all done before it came).
    let calibration = 1_000_000_000u64;
    let rate = calibration as f64 / pi_futures_seconds(&pi, calibration);
    let samples = ((15.0 * rate) as u64).to_string();
    let program = [pi.as_str(), "--samples", &samples, "--tasks", "200"];
    let script = jobscript(
        &dir,
        "resume",
        &[
            "--walltime",
            "00:05:00",
            "--checkpoint",
            &checkpoint.display().to_string(),
            "--requeue",
            "2",
        ],
        &program,
    );
    let (id, _cancel) = submit(&dir, &script);
    let results = || {
        std::fs::read_dir(&checkpoint).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
                .count()
        })
    };
    // Once some results are kept, the walltime signal (what `--signal=B:USR1@60` sends
    // before the time limit; at a limit of minutes Slurm may send it up to a minute early,
    // so a test cannot time it): the job stops in order and requeues itself.
    wait_until(DEADLINE, "the first results", || results() >= 40);
    let status = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &id])
        .status()
        .expect("scancel runs");
    assert!(status.success(), "scancel failed");
    let ended = follow_job(&id, 2 * DEADLINE);
    let log = job_log(&dir, "resume");
    assert!(
        ended.state == "COMPLETED" && ended.restarts == 1,
        "job {id}: {:?}\n{log}",
        ended.seen
    );
    assert!(
        log.contains("received SIGUSR1") && log.contains("job ends with exit code 9"),
        "the first run stops in order:\n{log}"
    );
    assert!(
        log.contains("requeued (restart 1 of 2) to resume from the checkpoint"),
        "{log}"
    );
    // The second run loads what the first kept and computes only the rest.
    let (loaded, computed) = checkpoint_counts(&log);
    assert!(
        (40..200).contains(&loaded) && loaded + computed == 200,
        "{loaded} loaded, {computed} computed:\n{log}"
    );
    assert!(!log.contains("] WARN:"), "the resumed job warns:\n{log}");
    // The same estimate as a job that was never stopped (the same seed, the same points).
    let resumed = log
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("pi=")))
        .map(String::from)
        .unwrap_or_else(|| panic!("no RESULT:\n{log}"));
    let mut direct = support::local_command(Path::new(&pi));
    direct.args(&program[1..]).env("MPIDASK_LOCAL_WORKERS", "2");
    let run = run_with_deadline(direct, DEADLINE);
    assert!(
        run.code == Some(0) && run.stdout.contains(&resumed),
        "the uninterrupted run differs from {resumed}:\n{}",
        run.dump()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The seconds `pi_futures` reports for `samples` points in local mode with 2 workers.
fn pi_futures_seconds(pi: &str, samples: u64) -> f64 {
    let mut direct = support::local_command(Path::new(pi));
    direct
        .args(["--samples", &samples.to_string(), "--tasks", "20"])
        .env("MPIDASK_LOCAL_WORKERS", "2");
    let run = run_with_deadline(direct, DEADLINE);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run.stdout
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
        })
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in:\n{}", run.dump()))
}

/// The requeue cycle under a real time limit: one minute, the signal 15 s before it
/// (`--signal 15`; Slurm checks limits every 30 s and sends the signal early rather than
/// late, so it comes 15 to 45 s after each start). The job's work is about 70 s: the first
/// run is stopped by the signal, each run loads what the runs before it kept, and the last
/// one completes it.
#[test]
fn a_job_past_its_time_limit_is_requeued_until_its_work_is_done() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm();
    let dir = workdir("time-limit");
    let checkpoint = dir.join("checkpoint");
    let pi = example("pi_futures").display().to_string();
    // About 70 s of points on this machine's two workers.
    let calibration = 1_000_000_000u64;
    let rate = calibration as f64 / pi_futures_seconds(&pi, calibration);
    let samples = ((70.0 * rate) as u64).to_string();
    let program = [pi.as_str(), "--samples", &samples, "--tasks", "200"];
    let script = jobscript(
        &dir,
        "limit",
        &[
            "--walltime",
            "00:01:00",
            "--signal",
            "15",
            "--checkpoint",
            &checkpoint.display().to_string(),
            "--requeue",
            "5",
        ],
        &program,
    );
    let (id, _cancel) = submit(&dir, &script);
    let ended = follow_job(&id, Duration::from_secs(300));
    let log = job_log(&dir, "limit");
    assert!(
        ended.state == "COMPLETED" && ended.restarts >= 1,
        "job {id} did not complete after a requeue: {:?}\n{log}",
        ended.seen
    );
    assert!(
        log.contains("received SIGUSR1")
            && log.contains("requeued (restart 1 of 5) to resume from the checkpoint"),
        "the first run stops at its time limit's signal and is requeued:\n{log}"
    );
    assert!(
        !log.contains("DUE TO TIME LIMIT"),
        "a run was killed at its time limit instead of stopping at the signal:\n{log}"
    );
    // The last run loads what the runs before it kept and computes the rest; the program
    // checks its estimate (COMPLETED above).
    let (loaded, computed) = checkpoint_counts(&log);
    assert!(
        loaded >= 1 && loaded + computed == 200,
        "{loaded} loaded, {computed} computed:\n{log}"
    );
    assert!(log.contains("RESULT samples="), "{log}");
    assert!(!log.contains("] WARN:"), "a run warns:\n{log}");
    let _ = std::fs::remove_dir_all(dir);
}
