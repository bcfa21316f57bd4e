//! Jobs across the imitated nodes under the local Slurm (`make nodes slurm`: a `slurmd` in
//! each node's namespaces, partition `nodes`): `srun` places ranks on every node, and a
//! script from `mpidask jobscript --nodes 3` runs under `sbatch --wait` with each node's
//! memory divided among that node's ranks; a node lost mid-job (every process on it killed,
//! Slurm's daemon too) or cut off (its link down) is named by rank 0, which ends the job
//! with exit code 5. Open MPI only
//! (Slurm launches through PMIx); MPICH's launcher across the nodes is in
//! `tests/multinode.rs`. Like `tests/mpi.rs`, the test binary is also the program under
//! test (`MPIDASK_SCENARIO=long_job`).

mod support;

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::node_failure::{self, FailureJob};
use support::{
    Run, check, example, line_after, local_command, mpi_environment, require_nodes,
    run_with_deadline,
};

/// Deadline of every job a test starts.
const DEADLINE: Duration = Duration::from_secs(90);

/// Nodes the tests expect.
const NODES: usize = 3;

/// Held by each test while its job runs: one job at a time on the nodes. Two jobs sharing
/// a node let the end of one disturb the other's start: a rank of the second died in
/// Open MPI's shared-memory set-up (`open(2)` of a peer's segment: no such file) as the
/// first job's step ended on that node.
static NODES_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn launch(command: Command) -> Run {
    run_with_deadline(command, DEADLINE)
}

/// Fails clearly unless the local Slurm has the imitated nodes (partition `nodes`, made by
/// `make slurm` while the nodes are up).
fn require_slurm_nodes() {
    require_nodes(NODES);
    // A node whose link a test of tests/multinode.rs took down for longer than Slurm's
    // SlurmdTimeout is marked down: resumed here, once its slurmd answers again.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let output = Command::new("sinfo")
            .args(["-h", "-N", "-p", "nodes", "-o", "%N %t"])
            .output();
        let states: Vec<(String, String)> = match &output {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(n, t)| (n.to_string(), t.trim().to_string()))
                .collect(),
            _ => Vec::new(),
        };
        let usable = |state: &str| ["idle", "mix", "alloc"].contains(&state);
        if states.len() == NODES && states.iter().all(|(_, t)| usable(t)) {
            return;
        }
        assert!(
            !states.is_empty(),
            "the local Slurm has no partition `nodes` ({output:?}): start the nodes, then Slurm \
             (`make nodes slurm`)"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the local Slurm's nodes are not all usable after 90 s: {states:?} (see \
             /var/tmp/local-slurm/log)"
        );
        for (node, state) in &states {
            if state.starts_with("down") || state.starts_with("drain") {
                let _ = Command::new("scontrol")
                    .args(["update", &format!("NodeName={node}"), "State=RESUME"])
                    .output();
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn mpidask_command() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mpidask"))
}

fn test_srun_across_nodes() -> Result<(), Failed> {
    check(|| {
        let _alone = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        require_slurm_nodes();
        let mut command = Command::new("srun");
        command
            // A time limit, so that Slurm ends the job even if the deadline kills srun.
            .args(["--mpi=pmix", "-p", "nodes", "-N", "3", "-n", "9"])
            .args(["--ntasks-per-node=3", "--time=2"])
            .arg(mpidask_command())
            .arg("info");
        mpi_environment(&mut command);
        let run = launch(command);
        run.expect_code(0).expect_quiet();
        let out = &run.stdout;
        assert_eq!(line_after(out, "nodes:"), "3", "{}", run.dump());
        assert_eq!(
            line_after(out, "ranks per node:"),
            "node1: 3, node2: 3, node3: 3"
        );
        assert_eq!(
            line_after(out, "workers per node:"),
            "node1: 1, node2: 3, node3: 3"
        );
    })
}

/// `mpidask jobscript --partition nodes --nodes 3 --ntasks-per-node 3 OPTIONS -- PROGRAM`
/// submitted with `sbatch --wait` from `dir`, checked to succeed quietly; the job's log.
fn sbatch_on_nodes(dir: &Path, name: &str, options: &[&str], program: &[&str]) -> String {
    let log = dir.join(format!("{name}.out"));
    let script = Command::new(mpidask_command())
        .args(["jobscript", "--job-name", name, "--partition", "nodes"])
        .args([
            "--nodes",
            "3",
            "--ntasks-per-node",
            "3",
            "--walltime",
            "00:05:00",
        ])
        .arg("--output")
        .arg(&log)
        .args(options)
        .arg("--")
        .args(program)
        .output()
        .unwrap();
    assert!(script.status.success(), "{script:?}");
    let path = dir.join(format!("{name}.sbatch"));
    std::fs::write(&path, &script.stdout).unwrap();
    let mut sbatch = Command::new("sbatch");
    sbatch.arg("--wait").arg(&path).current_dir(dir);
    mpi_environment(&mut sbatch);
    let run = launch(sbatch);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(run.code, Some(0), "{}\n--- job log ---\n{log}", run.dump());
    assert!(
        !log.contains("] ERROR:") && !log.contains("] WARN:"),
        "{log}"
    );
    log
}

fn test_jobscript_on_three_nodes() -> Result<(), Failed> {
    check(|| {
        let _alone = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        require_slurm_nodes();
        let dir =
            std::env::temp_dir().join(format!("mpidask-multinode-job-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The seed's Pi with futures: the same estimate as alone.
        let pi = example("pi_futures").display().to_string();
        let pi_args = ["--samples", "4000000", "--tasks", "24", "--seed", "7"];
        let mut program = vec![pi.as_str()];
        program.extend(pi_args);
        let log = sbatch_on_nodes(&dir, "pi3", &[], &program);
        let mut local = local_command(Path::new(&pi));
        local.args(pi_args);
        let alone = launch(local);
        alone.expect_code(0);
        let result = |name: &str| {
            log.lines().find(|l| l.starts_with("RESULT")).and_then(|l| {
                let tag = format!("{name}=");
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(tag.as_str()).map(str::to_string))
            })
        };
        assert_eq!(result("workers").as_deref(), Some("7"), "{log}");
        assert_eq!(result("pi"), alone.field("RESULT", "pi"), "{log}");
        // Each node's memory as Slurm gives it (--mem: SLURM_MEM_PER_NODE), divided among
        // that node's ranks only.
        let mpidask = mpidask_command().display().to_string();
        let log = sbatch_on_nodes(&dir, "info3", &["--mem", "900M"], &[&mpidask, "info"]);
        assert_eq!(
            line_after(&log, "ranks per node:"),
            "node1: 3, node2: 3, node3: 3",
            "{log}"
        );
        for (rank, node) in [(2, "node1"), (4, "node2"), (8, "node3")] {
            let line = log
                .lines()
                .find(|l| {
                    l.trim_start()
                        .starts_with(&format!("rank {rank} on {node}: "))
                })
                .unwrap_or_else(|| panic!("no line for worker {rank} on {node}\n{log}"));
            assert!(
                line.contains(
                    "memory limit 300.00 MiB = 900.00 MiB (SLURM_MEM_PER_NODE) / 3 ranks"
                ),
                "{line}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// Every process of node3 killed mid-job, its `slurmd` too: rank 0 names the node and its
/// ranks after `--worker-timeout`, writes the trace and the report, and ends the job with
/// exit code 5, which `srun` returns; no rank is left on node1 or node2. node3's `slurmd`
/// is started again afterwards.
fn test_lost_node_under_srun() -> Result<(), Failed> {
    check(|| node_fails_under_srun(Failure::Lost))
}

/// node3's link taken down mid-job (up again once the job ended): the same as a lost node.
fn test_partitioned_node_under_srun() -> Result<(), Failed> {
    check(|| node_fails_under_srun(Failure::Partitioned))
}

/// What happens to node3 in a failure test.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// Every process of node3 killed, its `slurmd` too.
    Lost,
    /// node3's link down.
    Partitioned,
}

fn node_fails_under_srun(failure: Failure) {
    let _alone = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    require_slurm_nodes();
    // The job needs all three nodes: wait (up to 60 s) until no earlier job holds one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !all_nodes_idle() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let job = FailureJob::new(&format!("srun-{failure:?}"));
    let mut command = Command::new("srun");
    command
        .args(["--mpi=pmix", "-p", "nodes", "-N", "3", "-n", "9"])
        .args(["--ntasks-per-node=3", "--time=2"])
        .arg(std::env::current_exe().unwrap());
    job.configure(&mut command);
    mpi_environment(&mut command);
    let (trigger, failed) = node_failure::at_start(move |_| match failure {
        Failure::Lost => node_failure::kill_node(3, true),
        Failure::Partitioned => node_failure::set_link(3, false),
    });
    let run = support::run_with_trigger(command, Duration::from_secs(60), Some(trigger));
    if let Failure::Partitioned = failure {
        node_failure::set_link(3, true);
    }
    // Ranks of node1 and node2 left (they are Slurm's children, not the test's).
    let mut left = Vec::new();
    for _ in 0..50 {
        left = ranks_on_nodes(&[1, 2]);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Failure::Lost = failure {
        restart_slurmd(3);
    }
    let ended_after = failed.expect(&run).elapsed();
    assert!(
        left.is_empty(),
        "ranks left on node1 or node2: {left:?}\n{}",
        run.dump()
    );
    run.expect_code(5).expect_stderr(node_failure::NODE3_SILENT);
    assert!(
        ended_after < Duration::from_secs(30),
        "ended {ended_after:?} after node3 failed ({failure:?})\n{}",
        run.dump()
    );
    job.expect_files(&run);
    require_slurm_nodes();
}

/// `true` if every node of partition `nodes` is idle.
fn all_nodes_idle() -> bool {
    Command::new("sinfo")
        .args(["-h", "-N", "-p", "nodes", "-o", "%t"])
        .output()
        .is_ok_and(|out| {
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().count() == NODES && text.lines().all(|l| l.trim() == "idle")
        })
}

/// Pids of processes of this test binary (the job's ranks) on the given nodes.
fn ranks_on_nodes(nodes: &[usize]) -> Vec<i32> {
    let me = std::fs::read_link("/proc/self/exe").ok();
    let mut ranks = Vec::new();
    for node in nodes {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &format!("node{node}")])
            .output()
        else {
            continue;
        };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let Ok(pid) = pid.parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/exe")).ok() == me {
                ranks.push(pid);
            }
        }
    }
    ranks
}

/// Starts node `node`'s `slurmd` again (after a test killed it).
fn restart_slurmd(node: usize) {
    let on_node = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/on-node");
    let name = format!("node{node}");
    let status = Command::new(on_node)
        .args([&name, "slurmd", "-N", &name])
        .status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "slurmd -N {name} did not start again: {status:?}"
    );
}

fn main() {
    if std::env::var("MPIDASK_SCENARIO").as_deref() == Ok("long_job") {
        mpidask::run(node_failure::long_job);
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("srun_places_ranks_on_3_nodes", test_srun_across_nodes),
        Trial::test(
            "jobscript_with_3_nodes_runs_under_sbatch",
            test_jobscript_on_three_nodes,
        ),
        Trial::test(
            "lost_node_named_under_srun_exit_5",
            test_lost_node_under_srun,
        ),
        Trial::test(
            "partitioned_node_named_under_srun_exit_5",
            test_partitioned_node_under_srun,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
