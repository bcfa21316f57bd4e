//! Launching real jobs for tests and benchmarks: `mpirun` (or a plain process) in its own
//! session, under a deadline, with everything it started killed when the deadline passes.

#![allow(dead_code)]

pub mod array_suite;
pub mod node_failure;
pub mod python;
pub mod recursion;
pub mod stored;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or killed) job left.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `None` if the job was killed by the deadline or a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// `true` if the deadline passed and the job was killed.
    pub timed_out: bool,
    /// Wall time.
    pub wall: Duration,
    /// The MPI ranks of the job's processes still alive when the launcher had exited,
    /// before they were killed (launched by the launcher, not by Slurm's daemons).
    pub leftover_ranks: Vec<u32>,
}

impl Run {
    /// Panics with the job's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert!(
            !self.timed_out,
            "{} timed out (a hang)\n{}",
            self.command,
            self.dump()
        );
        assert_eq!(
            self.code,
            Some(code),
            "{} exited with {:?}, expected {code}\n{}",
            self.command,
            self.code,
            self.dump()
        );
        self
    }

    /// Panics unless stdout contains `text`.
    pub fn expect_stdout(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout of {} lacks {text:?}\n{}",
            self.command,
            self.dump()
        );
        self
    }

    /// Panics unless stderr contains `text`.
    pub fn expect_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr of {} lacks {text:?}\n{}",
            self.command,
            self.dump()
        );
        self
    }

    /// Panics if stderr has an ERROR or WARN line of mpidask.
    pub fn expect_quiet(&self) -> &Self {
        let noisy: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.contains("] ERROR:") || l.contains("] WARN:") || l.contains("panicked"))
            .collect();
        assert!(
            noisy.is_empty(),
            "{} printed errors or warnings: {noisy:#?}\n{}",
            self.command,
            self.dump()
        );
        self
    }

    /// Lines of stderr from mpidask's logger at `level`.
    pub fn log_lines(&self, level: &str) -> Vec<&str> {
        let tag = format!("] {level}:");
        self.stderr.lines().filter(|l| l.contains(&tag)).collect()
    }

    /// The value of `name=` on the first stdout line starting with `prefix`.
    pub fn field(&self, prefix: &str, name: &str) -> Option<String> {
        let line = self.stdout.lines().find(|l| l.starts_with(prefix))?;
        let tag = format!("{name}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(tag.as_str()))
            .map(str::to_string)
    }

    /// Every value a benchmark role printed as `MEASURE name=<number>`, in order.
    pub fn measures(&self, name: &str) -> Vec<f64> {
        let tag = format!("MEASURE {name}=");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(tag.as_str()))
            .map(|v| v.trim().parse().expect("a number"))
            .collect()
    }

    /// The one value a benchmark role printed as `MEASURE name=<number>`.
    #[allow(dead_code)] // used by the benchmarks, not by every test binary
    pub fn measure(&self, name: &str) -> f64 {
        match self.measures(name)[..] {
            [value] => value,
            ref values => panic!(
                "{} MEASURE {name} lines where one was expected\n{}",
                values.len(),
                self.dump()
            ),
        }
    }

    /// Output for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ({:.2} s) ---",
            self.stdout,
            self.stderr,
            self.wall.as_secs_f64()
        )
    }
}

/// `client` submitting calls that are not pure: a call alike to one whose future lives is
/// a task of its own (for tests that count or time each task).
pub fn impure(client: &mpidask::Client) -> mpidask::Submitter<'_> {
    client.with_options(mpidask::TaskOptions::default().pure(false))
}

/// `target/<profile>` of the running test or bench binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<binary>")
        .to_path_buf()
}

/// Path of a built example.
pub fn example(name: &str) -> PathBuf {
    let path = target_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo build --release --examples`; cargo test builds them too)",
        path.display()
    );
    path
}

/// Which MPI launches the test jobs: Open MPI's `mpirun` by default, MPICH's Hydra
/// (`mpiexec.mpich`) when `MPIDASK_TEST_MPI=mpich` (with the binaries built against MPICH:
/// `make test-mpich`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Open MPI's `mpirun`.
    OpenMpi,
    /// MPICH's `mpiexec.mpich` (Hydra).
    Mpich,
}

/// The launcher chosen by `MPIDASK_TEST_MPI`.
pub fn launcher() -> Launcher {
    match std::env::var("MPIDASK_TEST_MPI").as_deref() {
        Ok("mpich") => Launcher::Mpich,
        Ok("openmpi") | Err(_) => Launcher::OpenMpi,
        Ok(other) => panic!("MPIDASK_TEST_MPI={other:?}: use openmpi or mpich"),
    }
}

/// The launcher's executable on the PATH; fails clearly when MPI is not installed.
pub fn mpirun_path() -> PathBuf {
    let (name, package) = match launcher() {
        Launcher::OpenMpi => (
            "mpirun",
            "install Open MPI (make deps, or apt-get install openmpi-bin libopenmpi-dev)",
        ),
        Launcher::Mpich => (
            "mpiexec.mpich",
            "install MPICH (make deps-mpich, or apt-get install mpich libmpich-dev)",
        ),
    };
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("{name} not found on PATH: {package}"))
}

/// Fails clearly unless a Slurm cluster answers `sinfo` (the local one `make slurm`
/// starts; tests that need it fail without it, they do not skip).
pub fn require_slurm() {
    let output = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    match output {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {}
        other => panic!(
            "no Slurm cluster answers `sinfo` ({other:?}): start the local one with `make slurm` \
             (scripts/start-local-slurm.sh, as root)"
        ),
    }
}

/// A fresh empty directory for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpidask-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The Chromium (or Chrome) on the PATH; fails clearly when there is none.
fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!("no Chromium found to render the report: install it (make test-deps, or apt-get install chromium)")
        })
}

/// The DOM of an HTML page after its scripts ran in headless Chromium.
pub fn render_in_chromium(page: &Path) -> String {
    let mut command = Command::new(chromium());
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()));
    let run = run_with_deadline(command, Duration::from_secs(60));
    run.expect_code(0);
    run.stdout
}

/// A PNG screenshot of an HTML page (its scripts run) by headless Chromium, `width` x
/// `height` pixels, written to `png`.
pub fn screenshot_in_chromium(page: &Path, png: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(png);
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()));
    run_with_deadline(command, Duration::from_secs(60)).expect_code(0);
    let written = std::fs::read(png).unwrap_or_default();
    assert!(
        written.starts_with(b"\x89PNG") && written.len() > 10_000,
        "Chromium wrote no screenshot of {} to {}",
        page.display(),
        png.display()
    );
}

/// Builds an `mpirun -np N` command for `program` with the variables Open MPI needs on a
/// small machine run as root (oversubscription, root permission).
pub fn mpirun(np: usize, program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(mpirun_path());
    if launcher() == Launcher::OpenMpi {
        command.arg("--oversubscribe");
    }
    command
        .arg("-np")
        .arg(np.to_string())
        .arg(program)
        .args(args);
    mpi_environment(&mut command);
    command
}

/// Sets the environment Open MPI needs here.
pub fn mpi_environment(command: &mut Command) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    command.env("OMPI_MCA_rmaps_base_oversubscribe", "1");
}

/// The MPI rank of process `pid`, from the variables the launcher gave it.
pub fn rank_of_process(pid: i32) -> Option<u32> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        ["OMPI_COMM_WORLD_RANK=", "PMI_RANK="]
            .iter()
            .find_map(|prefix| entry.strip_prefix(prefix)?.parse().ok())
    })
}

/// Runs `command` in a new session with a deadline; on the deadline every process of the
/// session (mpirun and all its ranks) is killed.
pub fn run_with_deadline(command: Command, deadline: Duration) -> Run {
    run_with_trigger(command, deadline, None)
}

/// What to do to a running job once its stdout shows a marker: called with the session id
/// (the pid of the launched process, e.g. mpirun).
pub type Trigger<'a> = (&'a str, Box<dyn FnOnce(i32) + 'a>);

/// [`run_with_deadline`], calling `trigger`'s action once stdout contains its marker (to
/// send a signal mid-run, say). A marker that never shows fails the run as a timeout.
pub fn run_with_trigger(mut command: Command, deadline: Duration, trigger: Option<Trigger>) -> Run {
    let description = format!("{command:?}");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and only affects the child.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let session = child.id() as i32;
    let stdout = collect(child.stdout.take().expect("piped"));
    let stderr = collect(child.stderr.take().expect("piped"));
    let mut trigger = trigger;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if trigger
            .as_ref()
            .is_some_and(|(marker, _)| stdout.0.lock().unwrap().contains(marker))
        {
            let (_, action) = trigger.take().expect("checked");
            action(session);
        }
        if started.elapsed() > deadline {
            timed_out = true;
            kill_session(session);
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    let mut leftover_ranks: Vec<u32> = session_members(session)
        .into_iter()
        .filter(|pid| !is_zombie(*pid))
        .filter_map(rank_of_process)
        .collect();
    leftover_ranks.sort_unstable();
    // Leftover processes of the session (there should be none) must not outlive the test.
    kill_session(session);
    let (stdout, stderr) = (stdout.finish(), stderr.finish());
    Run {
        command: description,
        code: status.code(),
        stdout,
        stderr,
        timed_out: timed_out || trigger.is_some(),
        wall,
        leftover_ranks,
    }
}

/// `true` if `pid` has exited and waits for its parent to reap it.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// A pipe read into a shared string by a thread.
struct Collected(
    std::sync::Arc<std::sync::Mutex<String>>,
    std::thread::JoinHandle<()>,
);

impl Collected {
    fn finish(self) -> String {
        let _ = self.1.join();
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> Collected {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    Collected(text, reader)
}

/// Sends `signal` to every MPI rank of `session` (not to the launcher and its helpers), as
/// Slurm signals every task of a step at walltime.
pub fn signal_members(session: i32, signal: i32) {
    for pid in session_members(session) {
        if rank_of_process(pid).is_some() {
            // SAFETY: sending a signal has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// The processes of a job started as `session` (the launcher's pid): the members of its
/// session and every descendant of the launcher (MPICH's Hydra puts each rank in a session
/// of its own).
pub fn session_members(session: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent pid, session id) of every process.
    let processes: Vec<(i32, i32, i32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            Some((pid, rest.get(1)?.parse().ok()?, rest.get(3)?.parse().ok()?))
        })
        .collect();
    let mut members: Vec<i32> = processes
        .iter()
        .filter(|(_, _, sid)| *sid == session)
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut frontier = vec![session];
    while let Some(parent) = frontier.pop() {
        for (pid, ppid, _) in &processes {
            if *ppid == parent && !members.contains(pid) {
                members.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    members
}

/// Kills every process of a session.
pub fn kill_session(session: i32) {
    for pid in session_members(session) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// A Python with NumPy: `MPIDASK_TEST_PYTHON` (`make test` creates `target/pyenv`), else
/// `target/pyenv/bin/python`; panics with what to run when it cannot import numpy.
pub fn numpy_python() -> PathBuf {
    let python = std::env::var_os("MPIDASK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import numpy: run `make pyenv` (make test does), or set MPIDASK_TEST_PYTHON to a Python with numpy",
        python.display()
    );
    python
}

/// The imitated nodes' subnet (`scripts/start-nodes.sh`).
pub const NODES_SUBNET: &str = "10.251.0.0/24";

/// This (the root) namespace's address on the nodes' bridge.
pub const BRIDGE_ADDRESS: &str = "10.251.0.1";

/// How many imitated nodes are up (`count` in `scripts/start-nodes.sh`'s state directory,
/// `MPIDASK_NODES_DIR` or `/run/mpidask-nodes`); 0 when none were started.
pub fn nodes_up() -> usize {
    let dir = std::env::var_os("MPIDASK_NODES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mpidask-nodes"));
    std::fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

/// Node `k`'s address on the bridge (`scripts/start-nodes.sh`: 10.251.0.(10 + k)).
pub fn node_address(k: usize) -> String {
    format!("10.251.0.{}", 10 + k)
}

/// Fails clearly unless at least `nodes` imitated nodes are up.
pub fn require_nodes(nodes: usize) {
    let count = nodes_up();
    assert!(
        count >= nodes,
        "{count} imitated node(s) are up, {nodes} are needed: start them with `make nodes` \
         (scripts/start-nodes.sh, as root)"
    );
}

/// The launcher's `-np NP program args` over the imitated nodes, `slots[k]` ranks on node
/// `k + 1` in rank order (`[3, 3, 3]`: ranks 0-2 on node1, 3-5 on node2, ...), the daemons
/// started on them by `scripts/node-rsh`: Open MPI's `mpirun` with TCP only on the nodes'
/// bridge, or MPICH's `mpiexec` with `MPIDASK_TEST_MPI=mpich`.
pub fn mpirun_on_nodes(slots: &[usize], np: usize, program: &Path, args: &[&str]) -> Command {
    require_nodes(slots.len());
    let rsh = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/node-rsh");
    let tag: Vec<String> = slots.iter().map(usize::to_string).collect();
    let hostfile = std::env::temp_dir().join(format!(
        "mpidask-hostfile-{}-{}",
        std::process::id(),
        tag.join("-")
    ));
    let lines: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(k, n)| match launcher() {
            Launcher::OpenMpi => format!("node{} slots={n}\n", k + 1),
            Launcher::Mpich => format!("node{}:{n}\n", k + 1),
        })
        .collect();
    std::fs::write(&hostfile, lines.concat()).expect("a hostfile in the temporary directory");
    let mut command = Command::new(mpirun_path());
    match launcher() {
        Launcher::OpenMpi => {
            command
                .arg("--hostfile")
                .arg(&hostfile)
                .args(["--mca", "plm_rsh_agent"])
                .arg(&rsh)
                .args(["--mca", "oob_tcp_if_include", NODES_SUBNET])
                .args(["--mca", "btl_tcp_if_include", NODES_SUBNET]);
        }
        Launcher::Mpich => {
            // Hydra's proxies call back to mpiexec: at the bridge address, the only one of
            // this namespace the nodes reach.
            command
                .args(["-launcher", "ssh", "-launcher-exec"])
                .arg(&rsh)
                .arg("-f")
                .arg(&hostfile)
                .args(["-localhost", BRIDGE_ADDRESS]);
        }
    }
    command
        .arg("-np")
        .arg(np.to_string())
        .arg(program)
        .args(args);
    mpi_environment(&mut command);
    command
}

/// `command` run on node `name` (`scripts/on-node`), with its arguments, environment and
/// directory: where a batch job's `mpirun` runs, on the first node of its allocation.
/// For MPICH's `mpiexec`, the address its proxies call back to becomes the node's.
pub fn on_node(node: usize, command: &Command) -> Command {
    let mut wrapped = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/on-node"));
    let address = node_address(node);
    wrapped
        .arg(format!("node{node}"))
        .arg(command.get_program())
        .args(command.get_args().map(|a| {
            if a == BRIDGE_ADDRESS {
                address.as_ref()
            } else {
                a
            }
        }));
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// The example `name` run with `args`: under `mpirun -np np`, or locally (no launcher)
/// when `np` is 0; killed at `deadline`.
pub fn run_example(name: &str, np: usize, args: &[&str], deadline: Duration) -> Run {
    let exe = example(name);
    let command = if np == 0 {
        let mut command = local_command(&exe);
        command.args(args);
        command
    } else {
        mpirun(np, &exe, args)
    };
    run_with_deadline(command, deadline)
}

/// This test binary started as the program of scenario `name` (it reads
/// `MPIDASK_SCENARIO`): under `mpirun -np np`, or locally with 2 workers when `np` is 0.
pub fn scenario_command(np: usize, name: &str) -> Command {
    let binary = std::env::current_exe().expect("the test binary's path");
    let mut command = match np {
        0 => {
            let mut command = local_command(&binary);
            command.env("MPIDASK_LOCAL_WORKERS", "2");
            command
        }
        np => mpirun(np, &binary, &[]),
    };
    command.env("MPIDASK_SCENARIO", name);
    command
}

/// `program` in local mode (no launcher in the environment).
pub fn local_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for variable in [
        "SLURM_NTASKS",
        "SLURM_STEP_NUM_TASKS",
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
    ] {
        command.env_remove(variable);
    }
    command
}

/// The value after `label` on the line of `text` starting with it.
pub fn line_after<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no line {label:?} in\n{text}"))
}

/// Runs a test's body, turning its panic (a failed assertion) into the test's failure.
pub fn check(f: impl FnOnce() + std::panic::UnwindSafe) -> Result<(), libtest_mimic::Failed> {
    std::panic::catch_unwind(f).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "test panicked".into())
            .into()
    })
}
