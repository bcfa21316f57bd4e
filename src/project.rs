//! New mpidask programs (`mpidask new NAME`): a Cargo project that depends on mpidask, with
//! a program that runs futures and a chunked array and checks both answers, a Slurm batch
//! script, and a five-line README.
//!
//! ```
//! use mpidask::project::{Dependency, NewProject};
//!
//! let project = NewProject {
//!     name: "heat".into(),
//!     dependency: Dependency::Git { url: "https://example.org/mpidask.git".into(), rev: None },
//!     jobscript: "#!/bin/bash\n".into(),
//!     lockfile: None,
//! };
//! let files = project.files().unwrap();
//! assert!(files.iter().any(|(path, text)| path == "Cargo.toml" && text.contains("name = \"heat\"")));
//! ```

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a project was not made.
#[derive(Debug, Error)]
pub enum NewProjectError {
    /// The name cannot name a crate.
    #[error(
        "{name:?} cannot name a Cargo package: {reason}; use ASCII letters, digits, `-` and `_`, starting with a letter (e.g. heat-2d)"
    )]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something already exists where the project would go.
    #[error(
        "{0} already exists: mpidask new makes a new directory; choose another name or remove it"
    )]
    Exists(PathBuf),
    /// The path given as mpidask's source is not a copy of mpidask.
    #[error(
        "{path} is not mpidask's source ({reason}): give --path the directory holding mpidask's Cargo.toml, or use --git URL"
    )]
    NotSource {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Writing the files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the new project takes mpidask from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    /// A directory holding mpidask's source (a checkout, or the copy `make install` puts in
    /// `PREFIX/share/mpidask/source`).
    Path(PathBuf),
    /// A git repository, at a revision (branch, tag or commit) or its default branch.
    Git {
        /// The repository's URL.
        url: String,
        /// `rev = ...` in the dependency.
        rev: Option<String>,
    },
}

/// A project to make.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// The package (and program) name.
    pub name: String,
    /// Where mpidask comes from.
    pub dependency: Dependency,
    /// The batch script (`jobscript.sbatch`), as `mpidask jobscript` renders it.
    pub jobscript: String,
    /// mpidask's `Cargo.lock`, if known: the project starts from the versions mpidask was
    /// tested with (and builds offline where mpidask has been built).
    pub lockfile: Option<String>,
}

/// Rust's keywords and the names Cargo refuses for packages.
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "test",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "proc-macro",
    "build",
    "deps",
    "examples",
    "incremental",
    "mpidask",
];

/// Checks that `name` can name the package and its program.
pub fn validate_name(name: &str) -> Result<(), NewProjectError> {
    let bad = |reason: String| NewProjectError::BadName {
        name: name.to_string(),
        reason,
    };
    let Some(first) = name.chars().next() else {
        return Err(bad("it is empty".into()));
    };
    if !first.is_ascii_alphabetic() {
        return Err(bad(format!("it starts with {first:?}, not a letter")));
    }
    let wrong: String = name
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        .collect();
    if !wrong.is_empty() {
        return Err(bad(format!("it contains {wrong:?}")));
    }
    if name.len() > 64 {
        return Err(bad(format!(
            "it has {} characters, more than 64",
            name.len()
        )));
    }
    if RESERVED.contains(&name) {
        return Err(bad(
            "it is a Rust keyword or a name Cargo (or this project's dependency) takes".into(),
        ));
    }
    Ok(())
}

/// Checks that `dir` holds mpidask's source: a `Cargo.toml` whose package is `mpidask`.
pub fn check_source(dir: &Path) -> Result<(), NewProjectError> {
    let not_source = |reason: &str| NewProjectError::NotSource {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| not_source(&format!("no readable Cargo.toml: {e}")))?;
    let names_mpidask = manifest
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with('[') || *line == "[package]")
        .any(|line| line.replace(' ', "") == "name=\"mpidask\"");
    if !names_mpidask {
        return Err(not_source("its Cargo.toml is not the package mpidask"));
    }
    if !dir.join("src/lib.rs").is_file() {
        return Err(not_source("no src/lib.rs"));
    }
    Ok(())
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl NewProject {
    /// The dependency line of `Cargo.toml`, with a comment saying where it points.
    fn dependency_line(&self) -> String {
        match &self.dependency {
            Dependency::Path(path) => format!(
                "# mpidask's source on this machine (`mpidask new --git URL` depends on a repository)\n\
                 mpidask = {{ path = {} }}",
                toml_string(&path.to_string_lossy())
            ),
            Dependency::Git { url, rev } => {
                let rev = rev
                    .as_ref()
                    .map(|r| format!(", rev = {}", toml_string(r)))
                    .unwrap_or_default();
                format!(
                    "# mpidask from its repository (`mpidask new --path DIR` uses a copy on disk)\n\
                     mpidask = {{ git = {}{rev} }}",
                    toml_string(url)
                )
            }
        }
    }

    /// Every file of the project: its path relative to the project's directory and its text.
    pub fn files(&self) -> Result<Vec<(String, String)>, NewProjectError> {
        validate_name(&self.name)?;
        let fill = |template: &str| {
            template
                .replace("{{name}}", &self.name)
                .replace("{{dependency}}", &self.dependency_line())
        };
        let mut files = vec![
            ("Cargo.toml".to_string(), fill(CARGO_TOML)),
            ("src/main.rs".to_string(), fill(MAIN_RS)),
            ("README.md".to_string(), fill(README)),
            ("jobscript.sbatch".to_string(), self.jobscript.clone()),
            (".gitignore".to_string(), "/target\n".to_string()),
        ];
        if let Some(lock) = &self.lockfile {
            files.push(("Cargo.lock".to_string(), lock.clone()));
        }
        Ok(files)
    }

    /// Makes the project in `dir`, which must not exist. The files are written into a
    /// hidden directory beside it that is then renamed, so a failure leaves no
    /// half-written project behind.
    pub fn create(&self, dir: &Path) -> Result<(), NewProjectError> {
        let files = self.files()?;
        if dir.symlink_metadata().is_ok() {
            return Err(NewProjectError::Exists(dir.to_path_buf()));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NewProjectError::Io { path, source }
        };
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = parent.join(format!(".{}.mpidask-new-{}", self.name, std::process::id()));
        let written = (|| {
            for (relative, text) in &files {
                let path = staging.join(relative);
                if let Some(folder) = path.parent() {
                    std::fs::create_dir_all(folder).map_err(io(folder))?;
                }
                std::fs::write(&path, text).map_err(io(&path))?;
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let script = staging.join("jobscript.sbatch");
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(&script))?;
            }
            // A directory made meanwhile is not replaced: rename refuses a non-empty one,
            // and an empty one is checked for first.
            if dir.symlink_metadata().is_ok() {
                return Err(NewProjectError::Exists(dir.to_path_buf()));
            }
            std::fs::rename(&staging, dir).map_err(io(dir))
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        written
    }
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"

[dependencies]
{{dependency}}
anyhow = "1"
clap = { version = "4", features = ["derive"] }

# mpidask's hot paths cross its modules: one codegen unit lets them inline, as in its own
# build.
[profile.release.package.mpidask]
codegen-units = 1
"#;

const MAIN_RS: &str = r#"//! {{name}}: an mpidask program. Under `mpirun` or `srun`, rank 0 schedules, rank 1 runs
//! the closure given to `run_with` (the client), and ranks 2, 3, ... are workers that run
//! the tasks; started alone it runs the same way on threads of one process (local mode).
//!
//! ```text
//! cargo build --release
//! target/release/{{name}}                   # local mode
//! mpirun -np 4 target/release/{{name}}      # scheduler, client, 2 workers
//! sbatch jobscript.sbatch                   # on a Slurm cluster
//! ```

use anyhow::ensure;
use clap::Parser;
use mpidask::array::random;

/// {{name}}: futures and a chunked array with mpidask, each answer checked.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Tasks of the futures example
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    tasks: u64,

    /// Side of the square array of random numbers
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    side: u64,

    /// Side of the array's square chunks
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    chunk: u64,

    /// The runtime's settings: --nthreads, --memory-limit, --report, ... (MPIDASK_* variables)
    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// A task: a plain function, run on a worker.
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        // Futures: one task per number; the results come back to this rank.
        let squares = client.map(square, 0..cli.tasks);
        let total: u64 = client.gather(&squares)?.into_iter().sum();
        let n = cli.tasks;
        ensure!(total == (n - 1) * n * (2 * n - 1) / 6, "the sum of squares {total} is wrong");

        // A chunked array: the workers make its chunks and reduce them where they are.
        let (side, chunk) = (cli.side as usize, cli.chunk as usize);
        let x = random::uniform(0.0, 1.0, &[side, side], &[chunk, chunk], 42);
        let mean = x.mean().compute_scalar::<f64>(client)?;
        // The standard error of the mean of side^2 uniform values is 1 / (sqrt(12) side).
        let error = 1.0 / (12f64.sqrt() * side as f64);
        ensure!((mean - 0.5).abs() < 6.0 * error, "the mean {mean} is not 0.5");

        println!("sum of squares below {n}: {total}");
        println!("mean of {side} x {side} uniform values: {mean:.6}");
        Ok(())
    })
}
"#;

const README: &str = "# {{name}}

An [mpidask](https://docs.rs/mpidask) program: `src/main.rs` maps a function over futures and reduces a chunked random array, and checks both answers.
Build it with `cargo build --release`; run it alone with `target/release/{{name}}` (local mode, on threads) or under MPI with `mpirun -np 4 target/release/{{name}}` (rank 0 schedules, rank 1 runs the program, the others are workers).
On a Slurm cluster submit `jobscript.sbatch` with `sbatch jobscript.sbatch`, or write and submit another shape with `mpidask submit --nodes 2 -- ./target/release/{{name}}` (`mpidask jobscript --help` lists the options).
The program's options: `target/release/{{name}} --help`; what its exit code means: `mpidask exit-codes`.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn project(name: &str) -> NewProject {
        NewProject {
            name: name.into(),
            dependency: Dependency::Path("/opt/mpi dask/\"src\"".into()),
            jobscript: "#!/bin/bash\necho job\n".into(),
            lockfile: Some("# lock\n".into()),
        }
    }

    #[test]
    fn names_cargo_refuses_are_refused_with_the_reason() {
        for good in ["heat", "heat-2d", "my_job", "A1"] {
            validate_name(good).unwrap();
        }
        for (bad, says) in [
            ("", "empty"),
            ("2d-heat", "starts with '2'"),
            ("heat 2d", "contains \" \""),
            ("héat", "contains \"é\""),
            ("a.b/c", "contains \"./\""),
            ("fn", "keyword"),
            ("mpidask", "keyword"),
        ] {
            let message = validate_name(bad).unwrap_err().to_string();
            assert!(message.contains(says), "{bad:?}: {message}");
            assert!(message.contains("ASCII letters, digits"), "{message}");
        }
        let long = "a".repeat(65);
        assert!(validate_name(&long).is_err());
    }

    #[test]
    fn the_files_name_the_project_and_its_dependency() {
        let files = project("heat").files().unwrap();
        let text = |name: &str| {
            &files
                .iter()
                .find(|(path, _)| path == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .1
        };
        let manifest = text("Cargo.toml");
        assert!(manifest.contains("name = \"heat\""), "{manifest}");
        assert!(
            manifest.contains(r#"mpidask = { path = "/opt/mpi dask/\"src\"" }"#),
            "{manifest}"
        );
        assert!(text("src/main.rs").contains("//! heat: an mpidask program"));
        assert!(text("src/main.rs").contains("mpidask::run_with(cli.runtime.clone()"));
        assert_eq!(
            text("README.md").lines().count(),
            6,
            "a title and five lines"
        );
        assert_eq!(text("jobscript.sbatch"), "#!/bin/bash\necho job\n");
        assert_eq!(text("Cargo.lock"), "# lock\n");
        assert!(
            !files.iter().any(|(_, t)| t.contains("{{")),
            "every field filled"
        );

        let mut git = project("heat");
        git.dependency = Dependency::Git {
            url: "https://example.org/m.git".into(),
            rev: Some("v0.1".into()),
        };
        git.lockfile = None;
        let files = git.files().unwrap();
        assert!(
            files[0]
                .1
                .contains(r#"mpidask = { git = "https://example.org/m.git", rev = "v0.1" }"#)
        );
        assert!(!files.iter().any(|(path, _)| path == "Cargo.lock"));
    }

    #[test]
    fn a_project_is_made_whole_and_never_over_something() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("heat");
        project("heat").create(&dir).unwrap();
        for file in [
            "Cargo.toml",
            "src/main.rs",
            "README.md",
            "jobscript.sbatch",
            ".gitignore",
        ] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        let listed: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(listed.len(), 1, "no staging directory is left");
        let again = project("heat").create(&dir).unwrap_err();
        assert!(matches!(again, NewProjectError::Exists(_)), "{again}");
        assert!(again.to_string().contains("already exists"));
        // An empty directory, or a file, is in the way too.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            project("empty").create(&empty),
            Err(NewProjectError::Exists(_))
        ));
    }

    #[test]
    fn a_source_directory_must_hold_mpidask() {
        check_source(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let root = tempfile::tempdir().unwrap();
        let message = check_source(root.path()).unwrap_err().to_string();
        assert!(message.contains("no readable Cargo.toml"), "{message}");
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[package]\nname = \"other\"\n",
        )
        .unwrap();
        let message = check_source(root.path()).unwrap_err().to_string();
        assert!(message.contains("not the package mpidask"), "{message}");
        assert!(message.contains("--git URL"), "{message}");
    }
}
