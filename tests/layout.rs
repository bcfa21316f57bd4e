//! The layout of `src/` is the one `docs/architecture.md` draws: every top-level module is
//! in its table, imports only what its row allows, the rows allow only modules above them
//! (so there is no import cycle), and nothing outside `src/transport/` calls MPI.
//!
//! ```text
//! cargo test --test layout
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("a readable directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root files).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root().join("src")).expect("under src/");
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a file without its comments (line comments and doc comments) and without
/// its unit tests (a `#[cfg(test)] mod tests`, possibly `pub(crate)`, at the end of a file, or a
/// `tests.rs`): tests
/// may use any module.
fn code_of(file: &Path) -> String {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(file).expect("a readable file");
    let mut lines: Vec<&str> = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let module = line.trim_start();
        let module = module
            .strip_prefix("pub(crate) ")
            .or_else(|| module.strip_prefix("pub(super) "))
            .unwrap_or(module);
        if previous.trim() == "#[cfg(test)]" && module.starts_with("mod tests") {
            lines.pop();
            break;
        }
        previous = line;
        lines.push(match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        });
    }
    lines.join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment after every `crate::` in `code`, including each name of a
/// `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| is_ident(c) && c != '$') {
            continue; // `my_crate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the group's first level.
            let mut depth = 1;
            let mut current = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => at_start = true,
                    c if depth == 1 && at_start && is_ident(c) => current.push(c),
                    _ if depth == 1 && at_start && !current.is_empty() => {
                        names.insert(std::mem::take(&mut current));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !current.is_empty() {
                names.insert(current);
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// What the crate root re-exports, by name: `pub use client::{Client, ...}` maps `Client`
/// to `client`.
fn root_reexports() -> BTreeMap<String, String> {
    let code = code_of(&root().join("src/lib.rs"));
    let mut map = BTreeMap::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("pub use ") {
        rest = &rest[at + "pub use ".len()..];
        let end = rest.find(';').expect("a use ends");
        let item = rest[..end].replace(char::is_whitespace, "");
        rest = &rest[end..];
        let module = item.split("::").next().expect("a path").to_string();
        let names = match item.find('{') {
            Some(open) => item[open + 1..item.len() - 1]
                .split(',')
                .map(|n| n.rsplit("::").next().unwrap_or(n).to_string())
                .collect::<Vec<_>>(),
            None => vec![item.rsplit("::").next().unwrap_or(&item).to_string()],
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            map.insert(name, module.clone());
        }
    }
    map
}

/// The table of `docs/architecture.md`: each module's row, in order, with what it may
/// import.
fn documented_layers() -> Vec<(String, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("the doc");
    let section = doc
        .split("## Modules and who may import whom")
        .nth(1)
        .expect("the section of the table");
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let module = cells[1].trim_matches('`').to_string();
            let allowed = cells[3]
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .filter(|m| !m.is_empty())
                .collect();
            (module, allowed)
        })
        .collect()
}

/// Every module of `src/` and what it imports from the crate's other modules.
fn actual_imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = rust_files(&root().join("src"))
        .iter()
        .filter_map(|f| module_of(f))
        .collect();
    let reexports = root_reexports();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&root().join("src")) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let entry = imports.entry(module.clone()).or_default();
        for name in crate_paths(&code_of(&file)) {
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                // A root re-export stands for its module; a root macro for nothing.
                reexports.get(&name).cloned()
            };
            if let Some(target) = target.filter(|t| *t != module) {
                entry.insert(target);
            }
        }
    }
    imports
}

#[test]
fn every_module_is_in_the_table_of_docs_architecture() {
    let documented: BTreeSet<String> = documented_layers().into_iter().map(|(m, _)| m).collect();
    let actual: BTreeSet<String> = actual_imports().into_keys().collect();
    assert_eq!(
        documented, actual,
        "the modules of src/ and the rows of docs/architecture.md differ"
    );
}

#[test]
fn modules_import_only_what_their_row_allows() {
    let allowed: BTreeMap<String, BTreeSet<String>> = documented_layers().into_iter().collect();
    let mut wrong = Vec::new();
    for (module, imports) in actual_imports() {
        let may = allowed.get(&module).cloned().unwrap_or_default();
        for import in imports.difference(&may) {
            wrong.push(format!("{module} imports {import}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports docs/architecture.md does not allow: {wrong:#?}"
    );
}

#[test]
fn rows_allow_only_modules_above_them_so_there_is_no_cycle() {
    let mut above = BTreeSet::new();
    for (module, allowed) in documented_layers() {
        for import in &allowed {
            assert!(
                above.contains(import),
                "{module} may import {import}, which is not above it in the table"
            );
        }
        above.insert(module);
    }
}

/// `mpi::` as the start of a path (the rsmpi crate), not as a segment of another path.
fn names_rsmpi(line: &str) -> bool {
    line.match_indices("mpi::").any(|(at, _)| {
        let before = line[..at].chars().last();
        !before.is_some_and(|c| is_ident(c) || c == ':')
    })
}

#[test]
fn only_the_transport_calls_mpi() {
    let transport = root().join("src/transport");
    let mut outside = Vec::new();
    for file in rust_files(&root().join("src")) {
        if file.starts_with(&transport) {
            continue;
        }
        for (number, line) in code_of(&file).lines().enumerate() {
            if names_rsmpi(line) || line.contains("extern crate mpi") {
                outside.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "MPI called outside src/transport/: {outside:#?}"
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(
        crate_paths("use crate::{a::{b, c}, d};\nlet x = crate::e::f(); my_crate::g;"),
        ["a", "d", "e"].iter().map(|s| s.to_string()).collect()
    );
    assert!(names_rsmpi("use mpi::traits::*;"));
    assert!(names_rsmpi("let w = (mpi::ffi::MPI_Finalize)();"));
    assert!(!names_rsmpi("use crate::transport::mpi::bootstrap;"));
    assert!(!names_rsmpi("let rsmpi::x = 1;"));
    assert_eq!(
        root_reexports().get("Client").map(String::as_str),
        Some("client")
    );
}

/// Every function the walk of one task in `docs/architecture.md` names (`Type::function`,
/// `module::function`, or a bare `function` in backticks followed by `(`-less prose) is a
/// function of `src/`: the walk cannot drift from the code without this test failing.
#[test]
fn the_walk_of_one_task_names_functions_that_exist() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("the doc");
    let walk = doc
        .split("## One task, from `submit` to `result`")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the walk");
    let mut sources = String::new();
    for file in rust_files(&root().join("src")) {
        sources.push_str(&std::fs::read_to_string(&file).expect("a readable file"));
    }
    let mut named = BTreeSet::new();
    for span in walk.split('`').skip(1).step_by(2) {
        // `Client::submit`, `node::drive`, `IntoArgs::into_slots`, `task::trampoline_of::<..>()`
        let path = span.split(['<', '(', ' ']).next().unwrap_or("");
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        if segments.len() < 2 || !segments.iter().all(|s| s.chars().all(is_ident)) {
            continue;
        }
        let last = segments[segments.len() - 1];
        if last.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            named.insert(last.to_string());
        }
    }
    assert!(named.len() >= 20, "the walk names functions: {named:?}");
    let missing: Vec<&String> = named
        .iter()
        .filter(|f| {
            !sources.contains(&format!("fn {f}(")) && !sources.contains(&format!("fn {f}<"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names functions src/ does not have: {missing:?}"
    );
}
