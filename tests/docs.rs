//! The README stays true to the code: every exit code and every runtime flag is documented.

use clap::{Args, Command};
use mpidask::{ExitCode, RuntimeArgs};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn every_exit_code_is_in_the_readme_table() {
    let readme = readme();
    for code in ExitCode::ALL {
        let row = format!("| {} | {} |", code.code(), code.describe());
        assert!(readme.contains(&row), "README.md lacks the row {row:?}");
    }
}

#[test]
fn every_runtime_flag_and_variable_is_in_the_readme() {
    let readme = readme();
    let command = RuntimeArgs::augment_args(Command::new("program"));
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let long = arg.get_long().expect("runtime flags are long flags");
        assert!(
            readme.contains(&format!("`--{long}")),
            "README.md lacks --{long}"
        );
        let env = arg
            .get_env()
            .expect("every runtime flag has an environment variable");
        let env = env.to_str().expect("ASCII");
        assert!(
            readme.contains(&format!("`{env}`")),
            "README.md lacks {env}"
        );
    }
}

#[test]
fn the_readme_opens_with_the_two_commands() {
    let readme = readme();
    let run = readme.find("make run").expect("make run");
    let test = readme.find("make test").expect("make test");
    let first_section = readme.find("\n## ").expect("a section");
    assert!(run < first_section && test < first_section);
}

/// The templates in `jobscripts/` are exactly what `mpidask jobscript` prints for them.
#[test]
fn job_templates_are_what_mpidask_jobscript_prints() {
    let pi = [
        "--cpus-per-task",
        "2",
        "--walltime",
        "00:30:00",
        "--job-name",
        "pi",
        "--output",
        "pi-%j.out",
    ];
    let program = ["--", "./target/release/examples/pi", "--sizes-gb", "1,10"];
    let templates: Vec<(&str, Vec<&str>)> = vec![
        (
            "pi_srun.sbatch",
            [&["--launcher", "srun"][..], &pi, &program].concat(),
        ),
        (
            "pi_mpirun.sbatch",
            [&["--launcher", "mpirun"][..], &pi, &program].concat(),
        ),
        (
            "gpu.sbatch",
            vec![
                "--launcher",
                "srun",
                "--job-name",
                "gpu-job",
                "--partition",
                "gpu",
                "--ntasks-per-node",
                "6",
                "--cpus-per-task",
                "8",
                "--gpus-per-node",
                "4",
                "--mem-per-gpu",
                "32G",
                "--resources",
                "gpu=1",
                "--walltime",
                "02:00:00",
                "--prologue",
                "module load openmpi cuda",
                "--",
                "./target/release/my_gpu_job",
            ],
        ),
    ];
    for (file, args) in templates {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_mpidask"))
            .arg("jobscript")
            .args(&args)
            .output()
            .expect("mpidask jobscript runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/jobscripts/").to_string() + file;
        let template = std::fs::read_to_string(&path).expect("template");
        assert_eq!(
            template,
            String::from_utf8_lossy(&output.stdout),
            "{file} differs from `mpidask jobscript {}`: regenerate it",
            args.join(" ")
        );
    }
}
