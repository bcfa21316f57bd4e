//! A job under `mpirun`/`srun`: MPI start-up, the checks every rank takes part in (same
//! program, enough ranks, a launcher that matches the MPI library), the node topology, and
//! each rank's role over the MPI transport.

use super::launch;
use super::outcome::{ClientOutcome, exit_code_with_message};
use super::roles::{WorkerPlace, client_main, scheduler_main, worker_main};
use crate::client::Client;
use crate::config::RuntimeArgs;
use crate::exit::ExitCode;
use crate::logging;
use crate::node::abort_job;
use crate::protocol::{PROTOCOL_VERSION, Rank};
use crate::transport::mpi::bootstrap::{InitError, MpiJob};
use crate::transport::{Placement, Transport};
use log::{debug, error};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

/// How MPI was set up for this process, for diagnostics ([`mpi_setup`]).
#[derive(Debug, Clone)]
pub struct MpiSetup {
    /// `MPI_Get_library_version`.
    pub library_version: String,
    /// The thread level MPI provides (mpidask asks for `Funneled`).
    pub thread_level: String,
    /// Ranks in `MPI_COMM_WORLD`.
    pub world_size: usize,
}

static MPI_SETUP: OnceLock<MpiSetup> = OnceLock::new();

/// How MPI was set up, once [`run`](crate::run) initialised it (`None` in local mode).
pub fn mpi_setup() -> Option<&'static MpiSetup> {
    MPI_SETUP.get()
}

static RANKS_PER_NODE: OnceLock<Vec<(String, usize)>> = OnceLock::new();

/// The job's nodes (MPI processor names) and how many ranks run on each, once
/// [`run`](crate::run) started a job of 3 or more ranks.
pub fn ranks_per_node() -> Option<&'static [(String, usize)]> {
    RANKS_PER_NODE.get().map(Vec::as_slice)
}

/// Longest processor name compared between ranks.
const NAME_BYTES: usize = 256;

/// Counts the ranks on each node with one gather of the processor names (collective).
fn gather_ranks_per_node(job: &MpiJob) -> Vec<(String, usize)> {
    let host = job.processor_name();
    let mut mine = [0u8; NAME_BYTES];
    let len = host.len().min(NAME_BYTES);
    mine[..len].copy_from_slice(&host.as_bytes()[..len]);
    let all = job.all_gather_bytes(&mine);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for name in all.chunks(NAME_BYTES) {
        let end = name.iter().position(|b| *b == 0).unwrap_or(NAME_BYTES);
        *counts
            .entry(String::from_utf8_lossy(&name[..end]).into_owned())
            .or_default() += 1;
    }
    counts.into_iter().collect()
}

/// How many ranks share this node's memory, and how many worker ranks of this node may run
/// on exactly the cores this one may (collective on the node). Unbound ranks all share the
/// whole node, so their default thread counts divide its cores between them.
fn node_sharing(job: &MpiJob, worker: bool) -> (usize, usize) {
    let mine = [crate::process::core_set_fingerprint(), u64::from(worker)];
    let all = job.node_all_gather_u64(&mine);
    let sharing = all
        .chunks(2)
        .filter(|other| other[1] == 1 && other[0] == mine[0])
        .count()
        .max(1);
    (all.len() / 2, sharing)
}

/// What one rank says in the executable check.
const CHECK_WORDS: usize = 3;

/// Judges the gathered `[fingerprint, protocol, readable]` of every rank: every rank must
/// have read its executable, and all must agree with rank 0. `Err` says why start-up stops
/// and whether this rank (`me`) is the one to say it.
fn judge_same_program(all: &[u64], me: usize, path: &str) -> Result<(), (bool, String)> {
    let unreadable: Vec<usize> = all
        .chunks(CHECK_WORDS)
        .enumerate()
        .filter(|(_, words)| words[2] == 0)
        .map(|(rank, _)| rank)
        .collect();
    if let Some(&first) = unreadable.first() {
        // Each unreadable rank says its own reason; the others stop quietly.
        return Err((
            unreadable.contains(&me),
            format!(
                "rank {me} cannot read its executable to check that every rank runs the same \
                 program ({} rank(s) could not, the first is rank {first}); start-up stops. \
                 Make the program readable by the user that runs the job",
                unreadable.len()
            ),
        ));
    }
    let reference = &all[..2];
    let differing: Vec<String> = all
        .chunks(CHECK_WORDS)
        .enumerate()
        .filter(|(_, words)| &words[..2] != reference)
        .map(|(rank, words)| {
            format!(
                "rank {rank} (executable fingerprint {:016x}, protocol {})",
                words[0], words[1]
            )
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err((
        me == 0,
        format!(
            "every rank must run the same program: {} differ(s) from rank 0 (executable \
             fingerprint {:016x}, protocol {}; rank 0 runs {path}). Build once and start the \
             same file on every rank (put it on storage all nodes share).",
            differing.join(", "),
            reference[0],
            reference[1]
        ),
    ))
}

/// Checks with a collective that every rank runs the same executable and protocol version;
/// fails closed: a rank that cannot read its executable stops the job too.
fn check_same_program(job: &MpiJob) -> Result<(), (bool, String)> {
    let path = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let me = job.rank().index();
    let (words, reason) = match crate::process::executable_hash() {
        // The low half of the hash: enough to tell builds apart.
        Ok(hash) => ([hash as u64, u64::from(PROTOCOL_VERSION), 1], None),
        Err(reason) => ([0, u64::from(PROTOCOL_VERSION), 0], Some(reason)),
    };
    let all = job.all_gather_u64(&words);
    judge_same_program(&all, me, &path).map_err(|(speak, message)| match reason {
        Some(reason) => (speak, format!("{message} ({reason})")),
        None => (speak, message),
    })
}

/// Opens `--checkpoint` on rank 0 before any task runs and tells every rank whether that
/// worked (`false`: rank 0 said why, and the job stops with exit code 2).
fn checkpoint_opened(job: &MpiJob, args: &RuntimeArgs) -> bool {
    let mine = if job.rank() != Rank::SCHEDULER {
        1
    } else if let Err(message) = super::open_checkpoint(args) {
        error!("{message}");
        0
    } else {
        1
    };
    job.broadcast_from_first(mine) == 1
}

/// Runs the job this process is a rank of (or local mode in a world of one); returns the
/// exit code.
pub(super) fn start<F, R>(args: &RuntimeArgs, stop_signal: &Arc<AtomicUsize>, program: F) -> i32
where
    F: FnOnce(&Client) -> R + Send,
    R: ClientOutcome,
{
    let job = match MpiJob::init() {
        Ok(job) => job,
        Err(InitError::AlreadyInitialized) => {
            error!("MPI was initialized before mpidask::run; let mpidask initialize it");
            return ExitCode::Startup.code();
        }
        Err(InitError::ThreadLevel(level)) => {
            error!(
                "the MPI library gives thread level {level}; mpidask needs FUNNELED (use an \
                 MPI library built with thread support)"
            );
            return ExitCode::Startup.code();
        }
    };
    let rank = job.rank();
    let size = job.size();
    logging::set_process_role(rank.0, logging::role_of(rank.0, size));
    let _ = MPI_SETUP.set(MpiSetup {
        library_version: job.library_version(),
        thread_level: job.thread_level(),
        world_size: size,
    });
    if let Some(message) = launch::launcher_mismatch(size) {
        // Every process of the launch is a world of its own here: the launcher's rank 0
        // alone reports it.
        if launch::launcher_rank().unwrap_or(0) == 0 {
            error!("{message}");
        }
        return ExitCode::Startup.code();
    }
    let mut hosts = Vec::new();
    if args.worker_on_client {
        hosts.push(Rank::CLIENT);
    }
    if args.worker_on_scheduler {
        hosts.push(Rank::SCHEDULER);
    }
    match size {
        1 => {
            debug!("world of one rank: local mode");
            if let Err(message) = super::open_checkpoint(args) {
                error!("{message}");
                return ExitCode::Usage.code();
            }
            let (code, ()) =
                super::local::local_job(args, stop_signal, program, exit_code_with_message);
            return code;
        }
        2 if hosts.is_empty() => {
            if rank == Rank::SCHEDULER {
                error!(
                    "mpidask needs at least 3 ranks (0: scheduler, 1: your program, 2 and up: \
                     workers) but runs with 2: use mpirun -np 3 (or more), add \
                     --worker-on-client to run a worker in your program's rank, or start the \
                     program without mpirun/srun to run it in local mode"
                );
            }
            return ExitCode::Startup.code();
        }
        _ => {}
    }
    let placement = Placement::new(size, hosts).expect("ranks 0 and 1 are in every job");
    if let Err((speak, message)) = check_same_program(&job) {
        if speak {
            error!("{message}");
        }
        return ExitCode::Startup.code();
    }
    if !checkpoint_opened(&job, args) {
        return ExitCode::Usage.code();
    }
    let hosted = placement.hosted_by(rank);
    let (ranks_on_node, workers_sharing_cores) =
        node_sharing(&job, rank >= Rank::FIRST_WORKER || hosted.is_some());
    let _ = RANKS_PER_NODE.set(gather_ranks_per_node(&job));
    // The key that registrations of functions are checked with: made on rank 0.
    let job_key = job.broadcast_from_first(crate::task::new_job_key());
    // The processes' own workers (the members of the workers' collectives), then those
    // hosted by rank 1 and rank 0.
    let group: Vec<Rank> = (Rank::FIRST_WORKER.0..).take(size - 2).map(Rank).collect();
    let mut workers = group.clone();
    workers.extend(placement.hosted_workers());
    let (mut transport, mut collectives) =
        job.endpoints(args.message_part_bytes, &group, placement);
    let place = |group: Vec<Rank>| WorkerPlace {
        host: job.processor_name(),
        sharing: workers_sharing_cores,
        ranks_on_node,
        workers: workers.clone(),
        group,
    };
    let code = std::thread::scope(|scope| {
        // The worker this rank hosts runs on a thread of its own; its frames go through
        // this thread's transport. Stop signals are this rank's own node's to handle.
        let hosted_thread = transport.host_worker().map(|mut hosted_transport| {
            let place = place(Vec::new());
            let no_signal = Arc::new(AtomicUsize::new(0));
            debug!("{rank} also runs worker {}", hosted_transport.rank().0);
            std::thread::Builder::new()
                .name(format!("worker-{}", hosted_transport.rank().0))
                .spawn_scoped(scope, move || {
                    worker_main(
                        &mut hosted_transport,
                        None,
                        args,
                        &no_signal,
                        job_key,
                        place,
                    )
                })
        });
        let hosted_thread = match hosted_thread.transpose() {
            Ok(thread) => thread,
            Err(e) => {
                error!("cannot start the thread of the worker {rank} hosts: {e}");
                abort_job(&mut transport, ExitCode::Startup.code());
            }
        };
        let code = match rank {
            Rank::SCHEDULER => {
                scheduler_main(&mut transport, args, stop_signal, job_key, workers.clone())
            }
            Rank::CLIENT => {
                client_main(
                    &mut transport,
                    args,
                    stop_signal,
                    job_key,
                    workers.clone(),
                    program,
                    exit_code_with_message,
                )
                .0
            }
            _ => worker_main(
                &mut transport,
                collectives
                    .as_mut()
                    .map(|c| c as &mut dyn crate::transport::Collectives),
                args,
                stop_signal,
                job_key,
                place(group.clone()),
            ),
        };
        if let Some(thread) = hosted_thread {
            if !transport.finish_hosted(args.shutdown_timeout()) {
                error!(
                    "the worker {rank} hosts did not end within {:.1} s (--shutdown-timeout); \
                     aborting",
                    args.shutdown_timeout
                );
                abort_job(&mut transport, ExitCode::ShutdownTimeout.code());
            }
            let _ = thread.join();
        }
        code
    });
    // The transport goes before MPI is finalised (with `job`).
    drop(collectives);
    drop(transport);
    drop(job);
    if rank == Rank::SCHEDULER && code == ExitCode::Signal.code() && launch::under_hydra() {
        // Once MPICH's Hydra has forwarded a signal to the ranks, it records 0 for a rank it
        // reaps after the last rank's output closed, whatever that rank's exit code (its
        // "forced cleanup"). Rank 0 outliving the others by a moment lets Hydra reap them
        // first, with their code (9), so that `mpiexec` returns it.
        std::thread::sleep(HYDRA_EXIT_GRACE);
    }
    code
}

/// How long rank 0 outlives the other ranks under Hydra after a stop by signal (see
/// [`start`]).
const HYDRA_EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_check_fails_closed() {
        let v = u64::from(PROTOCOL_VERSION);
        let same = [7, v, 1, 7, v, 1, 7, v, 1];
        assert_eq!(judge_same_program(&same, 1, "/bin/p"), Ok(()));
        // Rank 2 could not read its executable: everyone stops, rank 2 says why.
        let unreadable = [7, v, 1, 7, v, 1, 0, v, 0];
        let (speaks, message) = judge_same_program(&unreadable, 2, "/bin/p").unwrap_err();
        assert!(speaks);
        assert!(
            message.contains("rank 2 cannot read its executable"),
            "{message}"
        );
        assert!(!judge_same_program(&unreadable, 0, "/bin/p").unwrap_err().0);
        // Another build on rank 1: rank 0 reports it.
        let differing = [7, v, 1, 8, v, 1, 7, v, 1];
        let (speaks, message) = judge_same_program(&differing, 0, "/bin/p").unwrap_err();
        assert!(speaks);
        assert!(
            message.contains("rank 1 (executable fingerprint"),
            "{message}"
        );
        assert!(!judge_same_program(&differing, 1, "/bin/p").unwrap_err().0);
    }
}
