//! What the launcher says about this process, MPI initialisation, and command-line parsing
//! that reports a bad flag or environment value once per job instead of once per rank.

use crate::transport::mpi::bootstrap;

/// Variables in which launchers give the number of ranks they started: Open MPI's
/// `mpirun`, MPICH/Hydra (PMI), PMIx, and `srun` (the step's task count).
const LAUNCHER_SIZE_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_SIZE",
    "SLURM_STEP_NUM_TASKS",
];

/// The first of `variables` that is set to a number, with that number.
fn first_count(variables: &[&str]) -> Option<(String, usize)> {
    variables.iter().find_map(|name| {
        let count = std::env::var(name).ok()?.trim().parse::<usize>().ok()?;
        Some((name.to_string(), count))
    })
}

/// The number of ranks the launcher started; `None` without a launcher.
pub fn launcher_world_size() -> Option<usize> {
    first_count(&LAUNCHER_SIZE_VARIABLES).map(|(_, size)| size)
}

/// The rank count the environment claims, and the variable that claims it: the launcher's
/// own variables first, then Slurm's task count of the job (`SLURM_NTASKS`, set in a batch
/// script too). `None` outside any launcher and allocation.
pub fn expected_world_size() -> Option<(String, usize)> {
    first_count(&LAUNCHER_SIZE_VARIABLES).or_else(|| first_count(&["SLURM_NTASKS"]))
}

/// Whether MPICH's Hydra (`mpiexec`) started this process: it gives every rank the file
/// descriptor of its proxy's control connection.
pub fn under_hydra() -> bool {
    std::env::var_os("HYDI_CONTROL_FD").is_some()
}

/// This process's rank according to the launcher's variables.
pub fn launcher_rank() -> Option<usize> {
    first_count(&[
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_PROCID",
    ])
    .map(|(_, rank)| rank)
}

/// The launcher self-check: a launcher (or allocation) that says several ranks while MPI
/// sees one means the program's MPI library cannot talk to the launcher.
pub fn launcher_mismatch(world_size: usize) -> Option<String> {
    let (variable, expected) = expected_world_size()?;
    if world_size != 1 || expected <= 1 {
        return None;
    }
    let fix = if variable.starts_with("SLURM") {
        "under Slurm start it with `srun --mpi=pmix ./program` (`srun --mpi=list` shows the \
         plugins your site has) or with the `mpirun` of the MPI library it was built with; \
         to run it in local mode inside an allocation, unset SLURM_NTASKS"
    } else {
        "start it with the `mpirun`/`mpiexec` of the MPI library it was built with \
         (`mpidask info` without a launcher prints that library), or rebuild it against the \
         launcher's MPI"
    };
    Some(format!(
        "{variable}={expected} says this job has {expected} ranks, but MPI sees a world of 1: \
         the program's MPI library does not match the launcher that started it. Fix: {fix}"
    ))
}

/// Parses the program's command line (including the `MPIDASK_*` variables of a flattened
/// [`RuntimeArgs`](crate::RuntimeArgs)) the way every rank of a job agrees on: a bad flag
/// or value is printed once, by the lowest rank that found it, and every rank exits with
/// code 2; `--help` and `--version` print once and exit 0. Call it first thing in `main`,
/// on the thread that then calls [`run_with`](crate::run_with).
///
/// Started without a launcher it behaves like `clap::Parser::parse`.
pub fn parse_args<P: clap::Parser>() -> P {
    agree_on_arguments(P::try_parse().map_err(|e| name_the_variable(e, &P::command())))
}

/// A bad value that came from an environment variable (not the command line) is reported
/// with the variable's name, since the flag clap names may appear nowhere in the job script.
pub(crate) fn name_the_variable(error: clap::Error, command: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = invalid
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let given_on_command_line =
        std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    // The flag may belong to a subcommand (`mpidask jobscript --system`).
    let variable = std::iter::once(command)
        .chain(command.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long().is_some_and(|long| format!("--{long}") == flag))
        .and_then(|a| a.get_env())
        .and_then(|name| Some((name.to_str()?.to_string(), std::env::var(name).ok()?)));
    match variable {
        Some((name, value)) if !given_on_command_line => {
            let rendered = error.render().to_string();
            let first_line = rendered.lines().next().unwrap_or_default();
            let reason = first_line.strip_prefix("error: ").unwrap_or(first_line);
            // An enum's variants, when clap lists them.
            let known = rendered
                .lines()
                .find_map(|l| l.trim().strip_prefix("[possible values: "))
                .and_then(|l| l.strip_suffix(']'))
                .map(|values| format!(" (one of: {values})"))
                .unwrap_or_default();
            clap::Error::raw(
                error.kind(),
                format!(
                    "environment variable {name}={value:?} is not valid ({reason}); fix or \
                     unset it{known}\n"
                ),
            )
        }
        _ => error,
    }
}

/// The runtime settings from the `MPIDASK_*` variables alone, agreed on by every rank.
pub(super) fn runtime_args_from_env() -> crate::RuntimeArgs {
    use clap::Args;
    let command = crate::RuntimeArgs::augment_args(clap::Command::new("mpidask"));
    agree_on_arguments(crate::RuntimeArgs::from_env().map_err(|e| name_the_variable(e, &command)))
}

/// Every rank learns whether any rank failed to parse its arguments; see [`parse_args`].
pub(crate) fn agree_on_arguments<T>(parsed: Result<T, clap::Error>) -> T {
    if launcher_world_size().unwrap_or(1) <= 1 {
        return parsed.unwrap_or_else(|e| e.exit());
    }
    // 0: parsed; 1: help or version (exit 0); 2: an error (exit 2).
    let mine: i32 = match &parsed {
        Ok(_) => 0,
        Err(e) if e.use_stderr() => 2,
        Err(_) => 1,
    };
    let Some((me, everyone)) = bootstrap::early_all_gather(mine) else {
        return parsed.unwrap_or_else(|e| e.exit());
    };
    let worst = everyone.iter().copied().max().unwrap_or(0);
    match parsed {
        Ok(value) if worst == 0 => value,
        outcome => {
            let reporter = everyone.iter().position(|&flag| flag == worst);
            if reporter == Some(me)
                && let Err(e) = &outcome
            {
                let _ = e.print();
            }
            bootstrap::finalize_early();
            std::process::exit(if worst == 2 {
                crate::ExitCode::Usage.code()
            } else {
                0
            })
        }
    }
}
