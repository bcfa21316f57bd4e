//! `mpidask jobscript` and `mpidask submit` for every batch system, from the command line:
//! fake submit commands put first on the PATH record their arguments and standard input and
//! exit with a chosen code, which `mpidask submit` must return; the system is found from
//! `--system`, `MPIDASK_BATCH_SYSTEM` or the commands on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mpidask() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mpidask"));
    command.env_remove("MPIDASK_BATCH_SYSTEM");
    command
}

/// A fresh directory for one test.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpidask-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).expect("work dir");
    dir
}

/// `dir/bin/<name>` (a `sh` script that needs only `/bin/cat`, as the PATH holds nothing
/// else): records its arguments (one a line) in `dir/<name>.args` and its
/// standard input in `dir/<name>.stdin`, prints `say`, runs `then`, exits with `code`.
fn fake(dir: &Path, name: &str, say: &str, then: &str, code: i32) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("bin").join(name);
    let record = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{r}.args'\n/bin/cat > '{r}.stdin'\n\
             printf '%s' '{say}'\n{then}\nexit {code}\n",
            r = record.display()
        ),
    )
    .expect("fake written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// `mpidask <args>` with only `dir/bin` on the PATH.
fn run(dir: &Path, args: &[&str]) -> Output {
    mpidask()
        .args(args)
        .env("PATH", dir.join("bin"))
        .current_dir(dir)
        .output()
        .expect("mpidask runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const PROGRAM: [&str; 3] = ["--", "./pi", "--sizes-gb"];

/// `mpidask submit --system <system> --wait --script <dir>/<file> -- ./pi --sizes-gb`
/// calls `command` with `args` (and the script on stdin for LSF) and returns its code.
#[test]
fn submit_calls_each_systems_command_and_returns_its_exit_code() {
    for (system, file, command, args, code) in [
        ("pbs", "job.pbs", "qsub", "-W\nblock=true\njob.pbs\n", 3),
        ("lsf", "job.lsf", "bsub", "-K\n", 4),
        ("sge", "job.sge", "qsub", "-sync\ny\njob.sge\n", 5),
    ] {
        let dir = workdir(system);
        fake(&dir, command, "", "", code);
        let output = run(
            &dir,
            &[
                &["submit", "--system", system, "--wait", "--script", file][..],
                &PROGRAM,
            ]
            .concat(),
        );
        assert_eq!(
            output.status.code(),
            Some(code),
            "{system}: {}",
            stderr(&output)
        );
        assert_eq!(read(dir.join(format!("{command}.args"))), args, "{system}");
        let script = read(dir.join(file));
        let stdin = read(dir.join(format!("{command}.stdin")));
        if system == "lsf" {
            assert_eq!(stdin, script, "bsub reads the script on its standard input");
            assert!(script.contains("#BSUB -n 4\n"));
        } else {
            assert_eq!(stdin, "", "{system}: the script is an argument");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn submit_without_wait_passes_only_the_script() {
    let dir = workdir("nowait");
    fake(&dir, "qsub", "", "", 0);
    let output = run(
        &dir,
        &[&["submit", "--system", "pbs"][..], &PROGRAM].concat(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(read(dir.join("qsub.args")), "pi.pbs\n");
    assert!(read(dir.join("pi.pbs")).contains("#PBS -N pi\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTCondor: the description and its executable wrapper are written side by side,
/// `condor_submit` runs in their directory, `condor_wait` waits on the log for the
/// cluster it printed, and the job's return value in the log is the exit code.
#[test]
fn htcondor_submit_waits_on_the_log_and_returns_the_jobs_code() {
    for (event, code) in [
        ("(1) Normal termination (return value 7)", 7),
        ("(0) Abnormal termination (signal 9)", 137),
    ] {
        htcondor_submit(event, code);
    }
}

fn htcondor_submit(event: &str, code: i32) {
    let dir = workdir("htcondor");
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    fake(
        &dir,
        "condor_submit",
        "Submitting job(s).\n1 job(s) submitted to cluster 42.\n",
        "",
        0,
    );
    fake(
        &dir,
        "condor_wait",
        "",
        &format!(
            "printf '005 (042.000.000) 2026-12-02 05:00:00 Job terminated.\\n\\t{event}\\n' >> \"$1\""
        ),
        0,
    );
    let output = run(
        &dir,
        &[
            &[
                "submit",
                "--system",
                "htcondor",
                "--wait",
                "--script",
                "jobs/pi.sub",
            ][..],
            &PROGRAM,
        ]
        .concat(),
    );
    assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
    assert_eq!(read(dir.join("condor_submit.args")), "pi.sub\n");
    assert_eq!(read(dir.join("condor_wait.args")), "pi.log\n42\n");
    assert!(read(dir.join("jobs/pi.log")).contains(event));
    let description = read(dir.join("jobs/pi.sub"));
    assert!(description.contains("universe = parallel\nexecutable = pi.condor.sh\n"));
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("jobs/pi.condor.sh");
    assert_eq!(
        std::fs::metadata(&wrapper).unwrap().permissions().mode() & 0o111,
        0o111
    );
    assert!(read(&wrapper).contains("./openmpiscript ./pi --sizes-gb &\n"));
    // The wrapper `jobscript --wrapper` prints is the one submit wrote.
    let printed = run(
        &dir,
        &[
            &["jobscript", "--system", "htcondor", "--wrapper"][..],
            &PROGRAM,
        ]
        .concat(),
    );
    assert_eq!(String::from_utf8_lossy(&printed.stdout), read(&wrapper));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A missing submit command names the command and the system; exit code 6 as before.
#[test]
fn a_missing_submit_command_is_named() {
    let dir = workdir("missing");
    for (system, command, name) in [
        ("pbs", "qsub", "PBS"),
        ("lsf", "bsub", "LSF"),
        ("sge", "qsub", "Grid Engine (SGE)"),
        ("htcondor", "condor_submit", "HTCondor"),
        ("slurm", "sbatch", "Slurm"),
    ] {
        let output = run(
            &dir,
            &[&["submit", "--system", system][..], &PROGRAM].concat(),
        );
        assert_eq!(output.status.code(), Some(6), "{system}");
        let error = stderr(&output);
        assert!(
            error.starts_with(&format!("error: running {command} "))
                && error.contains(&format!("(is {name} installed and {command} on the PATH?)")),
            "{system}: {error}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--system`, else `MPIDASK_BATCH_SYSTEM`, else the submit commands on the PATH, else Slurm.
#[test]
fn the_system_comes_from_the_flag_the_variable_or_the_path() {
    let first_directive = |dir: &Path, variable: Option<&str>, args: &[&str]| {
        let mut command = mpidask();
        command
            .arg("jobscript")
            .args(args)
            .args(PROGRAM)
            .env("PATH", dir.join("bin"));
        if let Some(value) = variable {
            command.env("MPIDASK_BATCH_SYSTEM", value);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines()
            .find(|l| {
                l.starts_with("#SBATCH")
                    || l.starts_with("#PBS")
                    || l.starts_with("#BSUB")
                    || l.starts_with("#$")
                    || l.starts_with("universe")
            })
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let dir = workdir("detect");
    assert_eq!(
        first_directive(&dir, None, &[]),
        "#SBATCH",
        "nothing on the PATH"
    );
    fake(&dir, "qsub", "", "", 0);
    assert_eq!(first_directive(&dir, None, &[]), "#PBS");
    fake(&dir, "qconf", "", "", 0);
    assert_eq!(first_directive(&dir, None, &[]), "#$");
    assert_eq!(first_directive(&dir, Some("lsf"), &[]), "#BSUB");
    assert_eq!(
        first_directive(&dir, Some("lsf"), &["--system", "htcondor"]),
        "universe"
    );
    fake(&dir, "sbatch", "", "", 0);
    assert_eq!(first_directive(&dir, None, &[]), "#SBATCH");
    let _ = std::fs::remove_dir_all(&dir);
    let dir = workdir("detect-lsf");
    fake(&dir, "bsub", "", "", 0);
    assert_eq!(first_directive(&dir, None, &[]), "#BSUB");
    let _ = std::fs::remove_dir_all(&dir);
    let dir = workdir("detect-condor");
    fake(&dir, "condor_submit", "", "", 0);
    assert_eq!(first_directive(&dir, None, &[]), "universe");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad input is a usage error (exit 2) naming the input and the fix; nothing is submitted.
#[test]
fn bad_input_is_named_and_nothing_is_submitted() {
    let dir = workdir("bad");
    fake(&dir, "qsub", "", "", 0);
    for (args, expected) in [
        (
            &["jobscript", "--system", "moab"][..],
            "[possible values: slurm, pbs, lsf, sge, htcondor]",
        ),
        (
            &["submit", "--system", "pbs", "--walltime", "90:00"],
            "--walltime \"90:00\" is not a walltime: use HH:MM:SS or D-HH:MM:SS",
        ),
        (
            &["submit", "--system", "pbs", "--mem", "64GB"],
            "--mem \"64GB\" is not a size",
        ),
        (
            &["submit", "--system", "lsf", "--gres", "gpu:2"],
            "--gres gpu:2 cannot be expressed for LSF",
        ),
        (
            &[
                "submit",
                "--system",
                "pbs",
                "--pbs-flavour",
                "torque",
                "--wait",
            ],
            "Torque's qsub cannot wait",
        ),
        (
            &["jobscript", "--system", "sge", "--launcher", "srun"],
            "srun is Slurm's launcher",
        ),
        (
            &["jobscript", "--system", "pbs", "--wrapper"],
            "--wrapper prints the wrapper of an HTCondor job; PBS jobs have none",
        ),
    ] {
        let output = run(&dir, &[args, &PROGRAM].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!dir.join("qsub.args").exists(), "qsub was never called");
    let output = mpidask()
        .args(["jobscript"])
        .args(PROGRAM)
        .env("MPIDASK_BATCH_SYSTEM", "moab")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("environment variable MPIDASK_BATCH_SYSTEM=\"moab\" is not valid")
            && stderr(&output).contains("one of: slurm, pbs, lsf, sge, htcondor"),
        "{}",
        stderr(&output)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--help` states the detection rule and the options of the other systems.
#[test]
fn help_states_the_detection_rule() {
    let output = mpidask().args(["jobscript", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "--system <SYSTEM>",
        "MPIDASK_BATCH_SYSTEM if set, else found from the submit commands on the PATH: sbatch -> slurm, qsub with qconf -> sge, other qsub -> pbs, bsub -> lsf, condor_submit -> htcondor; else slurm",
        "Possible values: - slurm: Slurm: an `#SBATCH` script for `sbatch` - pbs:",
        "- lsf:",
        "- sge:",
        "- htcondor: HTCondor: a parallel-universe submit description",
        "[env: MPIDASK_BATCH_SYSTEM=]",
        "--pbs-flavour <FLAVOUR>",
        "--sge-pe <NAME>",
        "--condor-mpi-script <PATH>",
        "--wrapper",
    ] {
        assert!(help.contains(text), "--help lacks {text:?}:\n{help}");
    }
}

/// The README documents every batch-system flag, the variable, the detection rule and
/// what was run for real.
#[test]
fn the_readme_documents_the_batch_systems() {
    let readme = read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "`--system slurm|pbs|lsf|sge|htcondor`",
        "`--pbs-flavour pro|torque`",
        "`--sge-pe NAME`",
        "`--condor-mpi-script PATH`",
        "`--wrapper`",
        "`MPIDASK_BATCH_SYSTEM` is used if set",
        "`sbatch` -> `slurm`, else `qsub` with `qconf` -> `sge`, else `qsub`",
        "else `bsub` -> `lsf`, else `condor_submit` -> `htcondor`; with none of them, `slurm`",
        "HTCondor MPI jobs need the pool's parallel universe set up",
        "Only Slurm was run on a real system here",
    ] {
        assert!(readme.contains(text), "README.md lacks {text:?}");
    }
}
