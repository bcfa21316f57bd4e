//! A new user's first job, as the README's "Your own program" tells it: `mpidask new`,
//! `cargo build --release` (offline, against this checkout), the program alone, under
//! `mpirun -np 4`, and submitted with `mpidask submit` to the local Slurm (`make slurm`;
//! without it this test fails, it does not skip). Refusals of `mpidask new` are checked too.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{mpi_environment, mpirun, require_slurm, run_with_deadline, target_dir};

fn mpidask() -> &'static str {
    env!("CARGO_BIN_EXE_mpidask")
}

/// `mpidask new <args>` in `dir`.
fn new(dir: &Path, args: &[&str]) -> support::Run {
    let mut command = Command::new(mpidask());
    command
        .arg("new")
        .args(args)
        .current_dir(dir)
        .env_remove("MPIDASK_SOURCE");
    run_with_deadline(command, Duration::from_secs(30))
}

/// A fresh directory under the target directory (on the disk the build uses).
fn workdir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("new-project-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Gives the project's `target/release` the checkout's compiled dependencies, so that its
/// build compiles only mpidask and the project, not every crate again. (`cargo test`
/// holds the checkout's target directory while tests run: the project cannot build in it.)
fn seed_target(project: &Path) {
    let target = project.join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(target_dir())
        .arg(&target)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "copying {} failed",
        target_dir().display()
    );
}

/// The checkout's release profile settings for its dependencies' opt-level (Polars at 1,
/// for the tests: Cargo.toml), as `--config` values: the project's build is given them so
/// that it reuses the seeded builds of those crates instead of compiling them again.
fn dependency_opt_levels() -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the checkout's Cargo.toml");
    let mut package = None;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            package = line
                .strip_prefix("[profile.release.package.")
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|name| *name != "mpidask");
        } else if let (Some(name), Some(level)) = (package, line.strip_prefix("opt-level = ")) {
            settings.push(format!("profile.release.package.{name}.opt-level={level}"));
        }
    }
    assert!(
        settings.iter().any(|s| s.contains("polars-core")),
        "no release opt-level for Polars in {}: {settings:?}",
        manifest.display()
    );
    settings
}

/// The program's mean line is there and near 1/2 (the program checks it more tightly).
fn assert_mean(output: &str) {
    let mean: f64 = output
        .lines()
        .find_map(|line| line.strip_prefix("mean of 600 x 600 uniform values: "))
        .unwrap_or_else(|| panic!("no mean line in:\n{output}"))
        .trim()
        .parse()
        .expect("a number");
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
}

#[test]
fn a_new_project_builds_runs_alone_and_under_mpirun_and_is_submitted() {
    require_slurm();
    let root = workdir("flow");
    let name = "first-job";
    new(&root, &[name])
        .expect_code(0)
        .expect_stdout("created first-job/")
        .expect_stdout("mpirun -np 4 target/release/first-job");
    let project = root.join(name);
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
    let checkout = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("checkout");
    assert!(
        manifest.contains(&format!(
            "mpidask = {{ path = \"{}\" }}",
            checkout.display()
        )),
        "the project depends on this checkout:\n{manifest}"
    );
    let readme = std::fs::read_to_string(project.join("README.md")).expect("README.md");
    assert_eq!(
        readme.lines().count(),
        6,
        "a title and five lines:\n{readme}"
    );
    let script = std::fs::read_to_string(project.join("jobscript.sbatch")).expect("script");
    assert!(
        script.contains("srun --mpi=pmix ./target/release/first-job &"),
        "{script}"
    );

    // cargo build --release
    seed_target(&project);
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // mpidask itself unoptimized, in 16 codegen units: the checkout's compiled mpidask
    // cannot be reused (it is another package of another workspace to Cargo), and compiling
    // it as the project's profile asks (optimized, in one unit) takes minutes of CI. What
    // the test checks (the project builds, runs, and is submitted) does not depend on how
    // well mpidask is optimized; its dependencies keep their seeded, optimized builds
    // (Polars at the opt-level the checkout's tests build it with: `dependency_opt_levels`).
    build
        .args(["build", "--release", "--offline"])
        .args([
            "--config",
            "profile.release.package.mpidask.opt-level=0",
            "--config",
            "profile.release.package.mpidask.codegen-units=16",
        ])
        .args(
            dependency_opt_levels()
                .iter()
                .flat_map(|setting| ["--config", setting.as_str()]),
        )
        .current_dir(&project);
    // As from the user's shell: without the variables `cargo test` gives this test. (With
    // CARGO_MANIFEST_DIR set, `ring`'s build script counts as changed, and the whole
    // dependency tree above it was compiled again: 8 of CI's minutes.)
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|key| {
            (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH"
        }) {
            build.env_remove(key);
        }
    }
    run_with_deadline(build, Duration::from_secs(900)).expect_code(0);
    let program = project.join("target/release").join(name);
    assert!(program.is_file(), "{} was built", program.display());

    let args = ["--tasks", "200", "--side", "600", "--chunk", "256"];
    let expect_answers = |run: &support::Run| {
        run.expect_code(0)
            .expect_stdout("sum of squares below 200: 2646700");
        assert_mean(&run.stdout);
        assert!(
            !run.stderr.contains("ERROR") && !run.stderr.contains("WARN"),
            "a clean run is quiet\n{}",
            run.dump()
        );
    };
    // target/release/first-job (local mode)
    let mut alone = Command::new(&program);
    alone.args(args).current_dir(&project);
    expect_answers(&run_with_deadline(alone, Duration::from_secs(120)));
    // mpirun -np 4 target/release/first-job
    let mut under_mpi = mpirun(4, &program, &args);
    under_mpi.current_dir(&project);
    expect_answers(&run_with_deadline(under_mpi, Duration::from_secs(120)));
    // --help shows the program's options and the runtime's.
    let mut help = Command::new(&program);
    help.arg("--help");
    run_with_deadline(help, Duration::from_secs(30))
        .expect_code(0)
        .expect_stdout("--tasks")
        .expect_stdout("--memory-limit");

    // mpidask submit -- ./target/release/first-job (on the local Slurm)
    let log = project.join("first-job.out");
    let mut submit = Command::new(mpidask());
    submit
        .args(["submit", "--wait", "--walltime", "00:05:00", "--output"])
        .arg(&log)
        .arg("--")
        .arg(format!("./target/release/{name}"))
        .args(args)
        .current_dir(&project);
    mpi_environment(&mut submit);
    let run = run_with_deadline(submit, Duration::from_secs(300));
    let job_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        run.code,
        Some(0),
        "the submitted job failed (is the local Slurm up? make slurm)\n{}\n--- job log ---\n{job_log}",
        run.dump()
    );
    assert!(
        job_log.contains("sum of squares below 200: 2646700"),
        "the job printed its answers:\n{job_log}"
    );
    assert_mean(&job_log);
    assert!(
        project.join("first-job.sbatch").is_file(),
        "submit keeps its script"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn new_refuses_bad_names_taken_directories_and_sources_that_are_not_mpidask() {
    let root = workdir("refusals");
    std::fs::create_dir_all(root.join("taken")).expect("dir");
    new(&root, &["taken"])
        .expect_code(2)
        .expect_stderr("taken already exists");
    new(&root, &["2d heat"])
        .expect_code(2)
        .expect_stderr("cannot name a Cargo package")
        .expect_stderr("starting with a letter");
    new(&root, &["fresh", "--path", "/"])
        .expect_code(2)
        .expect_stderr("is not mpidask's source");
    new(&root, &["fresh", "--rev", "v1"]).expect_code(2);
    assert!(!root.join("fresh").exists(), "nothing was made");
    // --git needs no source on disk: the manifest names the repository.
    new(
        &root,
        &[
            "from-git",
            "--git",
            "https://example.org/mpidask.git",
            "--rev",
            "v0.1.0",
        ],
    )
    .expect_code(0);
    let manifest = std::fs::read_to_string(root.join("from-git/Cargo.toml")).expect("manifest");
    assert!(
        manifest
            .contains(r#"mpidask = { git = "https://example.org/mpidask.git", rev = "v0.1.0" }"#),
        "{manifest}"
    );
    assert!(!root.join("from-git/Cargo.lock").exists());
    let _ = std::fs::remove_dir_all(&root);
}
