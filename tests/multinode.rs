//! Jobs across several nodes: the nodes `scripts/start-nodes.sh` imitates on this machine
//! (network and UTS namespaces, each with its own host name and address on a private
//! bridge), with `mpirun` starting its daemons on them through `scripts/node-rsh`. What
//! only several nodes show: ranks, workers, memory and threads per node, values crossing
//! between nodes, broadcasts reaching every node, and the examples' answers unchanged.
//!
//! The nodes must be up (`make nodes`, which `make test` runs); without them every test
//! fails, saying how to start them. Like `tests/mpi.rs`, the test binary is also the
//! program under test (`MPIDASK_SCENARIO=<name>`).

mod support;

use anyhow::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use mpidask::{Client, TaskOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Launcher, Run, example, launcher, mpi_environment, mpirun_path, run_with_deadline};

/// Deadline of every job a test starts.
const DEADLINE: Duration = Duration::from_secs(90);

/// The imitated nodes' subnet (`scripts/start-nodes.sh`).
const SUBNET: &str = "10.251.0.0/24";

/// This (the root) namespace's address on the nodes' bridge.
const BRIDGE_ADDRESS: &str = "10.251.0.1";

/// Nodes the tests expect.
const NODES: usize = 3;

// ----- task functions ------------------------------------------------------------------

fn node_name(_: ()) -> String {
    mpidask::internals::process::hostname()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn checksum(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|b| u64::from(*b)).sum()
}

// ----- scenarios (run on the nodes) ----------------------------------------------------

/// Every worker, pinned, says its node; a value broadcast from the client reaches every
/// worker; values made on one node are read on every other (small ones inside frames,
/// 24 MB ones as attachments in parts).
fn scenario_across(client: &Client) -> anyhow::Result<()> {
    let workers: Vec<u32> = client.workers().iter().map(|r| r.0).collect();
    let pinned = |rank: u32| client.with_options(TaskOptions::default().workers([rank]));
    let nodes: Vec<String> = workers
        .iter()
        .map(|&rank| pinned(rank).submit(node_name, ()).result())
        .collect::<Result<_, _>>()?;
    for (rank, node) in workers.iter().zip(&nodes) {
        println!("WORKER rank={rank} node={node}");
    }
    let shared = client.scatter_broadcast(pattern(3_000_000))?;
    for &rank in &workers {
        let read = pinned(rank).submit(checksum, &shared).result()?;
        ensure!(read == checksum(pattern(3_000_000)), "broadcast on {rank}");
    }
    println!("BROADCAST ok workers={}", workers.len());
    let mut crossings = 0;
    for (i, &from) in workers.iter().enumerate() {
        for (j, &to) in workers.iter().enumerate() {
            if nodes[i] == nodes[j] {
                continue;
            }
            for len in [1000usize, 24_000_000] {
                let made = pinned(from).submit(pattern, len);
                let read = pinned(to).submit(checksum, &made).result()?;
                ensure!(read == checksum(pattern(len)), "{len} bytes {from} -> {to}");
                crossings += 1;
            }
        }
    }
    println!("CROSSINGS ok count={crossings}");
    Ok(())
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn run_scenario(name: &str) -> ! {
    match name {
        "across" => mpidask::run(scenario_across),
        "long_job" => mpidask::run(|client| -> anyhow::Result<()> {
            let workers = client.workers().len();
            client.gather(&client.map(sleep_ms, vec![10u64; workers * 4]))?;
            let sleepers = client.map(sleep_ms, vec![60_000u64; workers]);
            println!("SCENARIO long_job started");
            client.gather(&sleepers)?;
            Ok(())
        }),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(99)
        }
    }
}

// ----- launching on the nodes ------------------------------------------------------------

/// Where `scripts/start-nodes.sh` keeps its state.
fn nodes_dir() -> PathBuf {
    std::env::var_os("MPIDASK_NODES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mpidask-nodes"))
}

/// Fails clearly unless the nodes are up.
fn require_nodes() -> PathBuf {
    let dir = nodes_dir();
    let count: usize = std::fs::read_to_string(dir.join("count"))
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        count >= NODES,
        "{count} imitated node(s) are up, these tests need {NODES}: start them with \
         `make nodes` (scripts/start-nodes.sh {NODES}, as root)"
    );
    dir.join("hostfile")
}

fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `mpirun -np NP program args` over the nodes (3 slots each: ranks 0-2 on node1, 3-5 on
/// node2, 6-8 on node3), its daemons started on them by `scripts/node-rsh`, TCP only on
/// the nodes' bridge; MPICH's `mpiexec` the same way with `MPIDASK_TEST_MPI=mpich`.
fn mpirun_on_nodes(np: usize, program: &Path, args: &[&str]) -> Command {
    let hostfile = require_nodes();
    let rsh = repo_dir().join("scripts/node-rsh");
    let mut command = Command::new(mpirun_path());
    match launcher() {
        Launcher::OpenMpi => {
            command
                .arg("--hostfile")
                .arg(&hostfile)
                .args(["--mca", "plm_rsh_agent"])
                .arg(&rsh)
                .args(["--mca", "oob_tcp_if_include", SUBNET])
                .args(["--mca", "btl_tcp_if_include", SUBNET])
                .args(["-x", "MPIDASK_SCENARIO", "-x", "MPIDASK_LOG"]);
        }
        Launcher::Mpich => {
            // Hydra's proxies call back to mpiexec: at the bridge address, the only one of
            // this namespace the nodes reach.
            command
                .args(["-launcher", "ssh", "-launcher-exec"])
                .arg(&rsh)
                .arg("-f")
                .arg(hostfile.with_extension("hydra"))
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

/// `program` in local mode (no launcher in the environment).
fn local_command(program: &Path) -> Command {
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

fn launch(command: Command) -> Run {
    run_with_deadline(command, DEADLINE)
}

fn check(f: impl FnOnce() + std::panic::UnwindSafe) -> Result<(), Failed> {
    std::panic::catch_unwind(f).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "test panicked".into())
            .into()
    })
}

/// The value after `label` on the line of `text` starting with it.
fn line_after<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no line {label:?} in\n{text}"))
}

// ----- tests -----------------------------------------------------------------------------

fn test_info_per_node() -> Result<(), Failed> {
    check(|| {
        let mpidask = support::target_dir().join("mpidask");
        let run = launch(mpirun_on_nodes(8, &mpidask, &["info"]));
        run.expect_code(0).expect_quiet();
        let out = &run.stdout;
        assert_eq!(line_after(out, "nodes:"), "3", "{}", run.dump());
        assert_eq!(
            line_after(out, "ranks per node:"),
            "node1: 3, node2: 3, node3: 2"
        );
        assert_eq!(line_after(out, "worker nodes:"), "3");
        assert_eq!(
            line_after(out, "workers per node:"),
            "node1: 1, node2: 3, node3: 2"
        );
        // Each worker: its node, its threads (the cores divided among the workers of its
        // node) and its memory (the node's memory divided among that node's ranks only).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (ranks, node, workers_here, ranks_here) in [
            (2..3, "node1", 1, 3),
            (3..6, "node2", 3, 3),
            (6..8, "node3", 2, 2),
        ] {
            for rank in ranks {
                let line = out
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("rank {rank} on ")))
                    .unwrap_or_else(|| panic!("no line for worker {rank}\n{out}"));
                let threads = (cores / workers_here).max(1);
                assert!(
                    line.contains(&format!("rank {rank} on {node}: {threads} threads")),
                    "{line}"
                );
                assert!(
                    line.contains(&format!("/ {ranks_here} ranks on the node")),
                    "{line}"
                );
            }
        }
    })
}

fn test_values_cross_nodes() -> Result<(), Failed> {
    check(|| {
        let mut command = mpirun_on_nodes(9, &std::env::current_exe().unwrap(), &[]);
        command.env("MPIDASK_SCENARIO", "across");
        let run = launch(command);
        run.expect_code(0).expect_quiet();
        for rank in 2..9 {
            let node = format!("node{}", rank / 3 + 1);
            assert!(
                run.stdout
                    .contains(&format!("WORKER rank={rank} node={node}")),
                "worker {rank} not on {node}\n{}",
                run.dump()
            );
        }
        run.expect_stdout("BROADCAST ok workers=7");
        // Worker 2 (node1) with the 6 on other nodes, each of those with the 4 (or 5)
        // on nodes not theirs: 2 * (6 + 3 * 4 + 3 * 4) ordered pairs, two sizes each.
        run.expect_stdout("CROSSINGS ok count=60");
    })
}

fn test_examples_same_as_on_one_node() -> Result<(), Failed> {
    check(|| {
        let pi = example("pi_futures");
        let args = ["--samples", "4000000", "--tasks", "24", "--seed", "7"];
        let across = launch(mpirun_on_nodes(8, &pi, &args));
        across.expect_code(0).expect_quiet();
        assert_eq!(across.field("RESULT", "workers").as_deref(), Some("6"));
        let mut local = local_command(&pi);
        local.args(args);
        let alone = launch(local);
        alone.expect_code(0).expect_quiet();
        assert_eq!(
            across.field("RESULT", "pi"),
            alone.field("RESULT", "pi"),
            "{}\n{}",
            across.dump(),
            alone.dump()
        );

        let dir = std::env::temp_dir().join(format!("mpidask-multinode-{}", std::process::id()));
        let corpus = dir.join("corpus").display().to_string();
        let wordcount = example("wordcount");
        let args = [
            "--generate-mb",
            "3",
            "--corpus-dir",
            &corpus,
            "--blocksize",
            "100000",
            "--check",
        ];
        let across = launch(mpirun_on_nodes(8, &wordcount, &args));
        across
            .expect_code(0)
            .expect_quiet()
            .expect_stdout("CHECK ok: the same counts as a sequential count");
        let mut local = local_command(&wordcount);
        local.args(args);
        let alone = launch(local);
        alone.expect_code(0).expect_quiet();
        for field in ["words", "distinct"] {
            assert_eq!(
                across.field("RESULT", field),
                alone.field("RESULT", field),
                "{field}\n{}\n{}",
                across.dump(),
                alone.dump()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
}

/// Fails clearly unless the local Slurm has the imitated nodes (partition `nodes`, made by
/// `make slurm` while the nodes are up).
fn require_slurm_nodes() {
    require_nodes();
    let output = Command::new("sinfo")
        .args(["-h", "-p", "nodes", "-o", "%D %t"])
        .output();
    match output {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .trim()
                .starts_with(&format!("{NODES} ")) => {}
        other => panic!(
            "the local Slurm has no partition `nodes` of {NODES} nodes ({other:?}): start the \
             nodes, then Slurm (`make nodes slurm`)"
        ),
    }
}

fn mpidask_command() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mpidask"))
}

fn test_srun_across_nodes() -> Result<(), Failed> {
    check(|| {
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

fn main() {
    if let Ok(name) = std::env::var("MPIDASK_SCENARIO") {
        run_scenario(&name);
    }
    let args = Arguments::from_args();
    let tests = vec![
        Trial::test("info_per_node_on_3_nodes", test_info_per_node),
        Trial::test(
            "values_and_broadcasts_cross_3_nodes",
            test_values_cross_nodes,
        ),
        Trial::test(
            "pi_and_wordcount_same_as_on_one_node",
            test_examples_same_as_on_one_node,
        ),
        Trial::test("srun_places_ranks_on_3_nodes", test_srun_across_nodes),
        Trial::test(
            "jobscript_with_3_nodes_runs_under_sbatch",
            test_jobscript_on_three_nodes,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
