//! Local mode: every role on threads of this process over the local transport, for a world
//! of one rank (no launcher), tests, examples and notebook-style use.

use super::roles::{WorkerPlace, client_main, scheduler_main, worker_main};
use crate::client::Client;
use crate::config::RuntimeArgs;
use crate::exit::ExitCode;
use crate::protocol::Rank;
use crate::transport::Transport;
use crate::transport::local::LocalTransport;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// Runs `program` with a scheduler and `--local-workers` workers on threads; returns the
/// job's exit code and what `exit_code` made of the program's result.
pub(super) fn local_job<R, T, F>(
    args: &RuntimeArgs,
    stop_signal: &Arc<AtomicUsize>,
    program: F,
    exit_code: impl FnOnce(std::thread::Result<R>, bool) -> (i32, T) + Send,
) -> (i32, T)
where
    F: FnOnce(&Client) -> R + Send,
    T: Send,
{
    let nworkers = args.local_workers as usize;
    let size = 2 + nworkers;
    let workers: Vec<Rank> = (Rank::FIRST_WORKER.0..).take(nworkers).map(Rank).collect();
    let mut transports = LocalTransport::mesh(size);
    let groups = transports[0].group(&workers);
    let mut transports = transports.drain(..);
    let mut scheduler_transport = transports.next().expect("rank 0");
    let mut client_transport = transports.next().expect("rank 1");
    let host = crate::process::hostname();
    let job_key = crate::task::new_job_key();
    std::thread::scope(|scope| {
        let scheduler = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn_scoped(scope, || {
                scheduler_main(
                    &mut scheduler_transport,
                    args,
                    stop_signal,
                    job_key,
                    workers.clone(),
                )
            })
            .expect("start the scheduler thread");
        let worker_threads: Vec<_> = transports
            .zip(groups)
            .map(|(mut transport, mut group)| {
                let host = host.clone();
                let workers = workers.clone();
                std::thread::Builder::new()
                    .name(format!("worker-{}", transport.rank().0))
                    .spawn_scoped(scope, move || {
                        worker_main(
                            &mut transport,
                            Some(&mut group),
                            args,
                            stop_signal,
                            job_key,
                            WorkerPlace {
                                host,
                                sharing: nworkers,
                                ranks_on_node: nworkers,
                                group: workers.clone(),
                                workers,
                            },
                        )
                    })
                    .expect("start a worker thread")
            })
            .collect();
        let (code, value) = client_main(
            &mut client_transport,
            args,
            stop_signal,
            job_key,
            workers.clone(),
            program,
            exit_code,
        );
        let scheduler_code = scheduler.join().unwrap_or(ExitCode::Internal.code());
        for worker in worker_threads {
            let _ = worker.join();
        }
        debug_assert_eq!(code, scheduler_code);
        (code, value)
    })
}
