//! A node failing mid-job, for the multi-node tests: the `long_job` scenario they run, what
//! they do to a node (killed, or its link cut), and the files and lines they expect.

use super::{Run, Trigger, impure};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Printed by the scenario once a long task runs on every worker.
pub const STARTED: &str = "SCENARIO long_job started";

/// What rank 0 says when every worker of node3 (ranks 6 to 8) has gone silent.
pub const NODE3_SILENT: &str = "workers rank 6, rank 7, rank 8 sent nothing for 5 s \
     (--worker-timeout): presumed lost; every worker on node3 is silent: that node or its \
     network is presumed down";

/// The `long_job` scenario: a few short tasks on every worker, then one sleeping a minute on
/// each, announced by [`STARTED`] on stdout.
pub fn long_job(client: &mpidask::Client) -> anyhow::Result<()> {
    fn sleep_ms(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    let workers = client.workers().len();
    client.gather(&impure(client).map(sleep_ms, vec![10u64; workers * 4]))?;
    let sleepers = impure(client).map(sleep_ms, vec![60_000u64; workers]);
    println!("{STARTED}");
    client.gather(&sleepers)?;
    Ok(())
}

/// A failure test's job: the `long_job` scenario with a 5 s worker timeout, writing its
/// report and trace into a directory of its own (removed when dropped).
pub struct FailureJob {
    dir: PathBuf,
    /// The HTML report the job writes (`MPIDASK_REPORT`).
    pub report: PathBuf,
    /// The trace the job writes (`MPIDASK_TRACE`).
    pub trace: PathBuf,
}

impl FailureJob {
    /// A fresh directory for test `name`'s files.
    pub fn new(name: &str) -> FailureJob {
        let dir = std::env::temp_dir().join(format!(
            "mpidask-node-failure-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory in the temporary directory");
        FailureJob {
            report: dir.join("report.html"),
            trace: dir.join("trace.json"),
            dir,
        }
    }

    /// Sets the scenario, the worker timeout and the files in `command`'s environment (the
    /// program is this test binary).
    pub fn configure(&self, command: &mut Command) {
        command
            .env("MPIDASK_SCENARIO", "long_job")
            .env("MPIDASK_WORKER_TIMEOUT", "5")
            .env("MPIDASK_REPORT", &self.report)
            .env("MPIDASK_TRACE", &self.trace);
    }

    /// Checks that the job wrote its report and its trace.
    pub fn expect_files(&self, run: &Run) {
        for file in [&self.report, &self.trace] {
            assert!(
                file.is_file(),
                "{} was not written\n{}",
                file.display(),
                run.dump()
            );
        }
    }
}

impl Drop for FailureJob {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// When the failure was made: set by the trigger of [`at_start`].
#[derive(Clone, Default)]
pub struct Moment(Arc<Mutex<Option<Instant>>>);

impl Moment {
    /// The instant `action` returned, or a failure saying that the job never started.
    pub fn expect(&self, run: &Run) -> Instant {
        self.0.lock().unwrap().unwrap_or_else(|| {
            panic!(
                "the job never said it started, so no node failed\n{}",
                run.dump()
            )
        })
    }
}

/// A trigger for [`super::run_with_trigger`]: once the job prints [`STARTED`], `action` runs
/// (given the session id) and the moment it returns is recorded.
pub fn at_start<'a>(action: impl FnOnce(i32) + 'a) -> (Trigger<'a>, Moment) {
    let moment = Moment::default();
    let done = moment.clone();
    let trigger: Trigger<'a> = (
        STARTED,
        Box::new(move |session| {
            action(session);
            *done.0.lock().unwrap() = Some(Instant::now());
        }),
    );
    (trigger, moment)
}

/// Kills every process of imitated node `node` (a crash), its Slurm daemon only if
/// `with_slurmd` (the Slurm tests need it and start it again).
pub fn kill_node(node: usize, with_slurmd: bool) {
    let pids = Command::new("ip")
        .args(["netns", "pids", &format!("node{node}")])
        .output()
        .expect("ip runs");
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if with_slurmd || name.trim() != "slurmd" {
            // SAFETY: kill(2) on a pid of the node's namespace; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Takes a node's link (its veth on the bridge) down or up.
pub fn set_link(node: usize, up: bool) {
    let status = Command::new("ip")
        .args(["link", "set", &format!("mdn{node}")])
        .arg(if up { "up" } else { "down" })
        .status()
        .expect("ip runs");
    assert!(status.success(), "ip link set mdn{node} failed");
    if up {
        // While the link was down the other nodes' address lookups for node3 failed, and a
        // failed neighbour entry answers "No route to host" for a while after the link is
        // back: forget them, so that the next job reaches the node at once.
        for k in 1..=super::nodes_up() {
            let _ = Command::new("ip")
                .args(["-n", &format!("node{k}"), "neigh", "flush", "all"])
                .status();
        }
        let _ = Command::new("ip")
            .args(["neigh", "flush", "dev", "mdnodes0"])
            .status();
    }
}
