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
