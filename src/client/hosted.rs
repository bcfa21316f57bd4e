//! Task clients: a client for the code of a task, like Dask's `get_client()` in a task
//! ([`task_client`]). Each worker hosts one, shared by its tasks, on its communication
//! thread; it submits to the scheduler under keys and function ids of its own, and the
//! scheduler tells this worker what becomes of them. A task that waits on its futures gives
//! its thread back to the worker meanwhile (Dask's `secede`/`rejoin`).

use super::node::{ClientNode, Command};
use super::{Client, Shared};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::protocol::{Rank, ToClient, ToWorker};
use crate::transport::Outbox;
use crate::worker::TaskClientNode;
use crossbeam_channel::Receiver;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

thread_local! {
    /// The task client of the worker whose tasks this thread runs.
    static TASK_CLIENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// A client for the task running on this thread, to submit tasks from it and wait for them,
/// as Dask's `get_client()` or `worker_client()` in a task. Waiting on its futures
/// (`result`, `gather`, `wait`, `as_completed`) gives the task's thread back to its worker
/// meanwhile, so recursion deeper than the worker's threads does not deadlock.
///
/// It works as the program's [`Client`] does, with a few things only the program's
/// client does (`scatter_broadcast`, `scheduler_info`, progress bars: an error here). The
/// futures belong to the task: drop them, or return their values, before the task ends.
/// The client itself is the worker's, as Dask's worker client: a thread the task started
/// may go on using it after the task ended (its waits then hold that thread, not one of
/// the worker's task threads).
///
/// An error outside a task.
///
/// ```
/// fn fib(n: u64) -> u64 {
///     if n < 2 {
///         return n;
///     }
///     let client = mpidask::task_client().expect("called in a task");
///     let (a, b) = (client.submit(fib, n - 1), client.submit(fib, n - 2));
///     a.result().unwrap() + b.result().unwrap()
/// }
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     assert_eq!(client.submit(fib, 10).result().unwrap(), 55);
///     assert!(mpidask::task_client().is_err(), "not in a task");
/// });
/// ```
pub fn task_client() -> Result<Client> {
    TASK_CLIENT
        .with(|c| c.borrow().clone())
        .map(Client::new)
        .ok_or_else(|| {
            Error::Config(
                "task_client() was called outside a task: use it in the code of a task; the \
                 program itself has the Client that run gave it"
                    .into(),
            )
        })
}

/// Makes `shared` the task client of the calling thread (a worker's task thread).
pub(crate) fn enter_task_thread(shared: &Arc<Shared>) {
    TASK_CLIENT.with(|c| *c.borrow_mut() = Some(shared.clone()));
}

/// The task client of worker `rank`: its table (for [`enter_task_thread`]) and the node its
/// worker's communication thread runs. `wake` tells that thread a command is waiting.
/// `None` if `rank` is too large for the task clients' ranges of keys.
///
/// A command from a task's own thread does not wake that thread: the worker takes the
/// commands when the task next waits or ends (what it reports then wakes the thread), and
/// at every tick (10 ms). So the calls a task makes before it waits (Dask's `secede`) go
/// to the scheduler in one frame with its wait, as Dask's batched streams send theirs;
/// commands from any other thread wake it at once.
pub(crate) fn host_task_client(
    rank: Rank,
    wake: impl Fn() + Send + Sync + 'static,
    workers: Vec<Rank>,
    job_key: u64,
) -> Option<(Arc<Shared>, Box<dyn TaskClientNode>)> {
    let (sender, commands) = crossbeam_channel::unbounded();
    let shared = Shared::hosted(
        rank,
        move |command| {
            // The worker's loop outlives its tasks but at exit, when nothing matters.
            let _ = sender.send(command);
            if crate::worker::executor::current_priority().is_none() {
                wake();
            }
        },
        workers,
        job_key,
    )?;
    let node = ClientNode::hosted(shared.clone(), rank);
    Some((shared, Box::new(TaskClientHost { node, commands })))
}

/// A task client's node as its worker runs it.
struct TaskClientHost {
    node: ClientNode,
    commands: Receiver<Command>,
}

impl TaskClientNode for TaskClientHost {
    fn on_message(&mut self, from: Rank, message: ToClient, out: &mut Outbox) {
        self.node.on_message(from, message, out, Instant::now());
    }

    fn on_commands(&mut self, out: &mut Outbox, now: Instant) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Done(_) => {}
                command => self.node.on_event(command, out, now),
            }
        }
    }

    fn on_batch_end(&mut self, out: &mut Outbox, now: Instant) {
        self.node.on_batch_end(out, now);
    }

    fn on_tick(&mut self, out: &mut Outbox, now: Instant) {
        self.node.on_tick(out, now);
    }

    fn take_local(&mut self) -> Vec<ToWorker> {
        std::mem::take(&mut self.node.local)
    }

    fn stop(&mut self) {
        self.node.stop();
    }
}

#[cfg(test)]
mod tests {
    /// The thread a task runs on, as text (thread ids do not encode).
    fn thread() -> String {
        format!("{:?}", std::thread::current().id())
    }

    /// Submits `thread` from a task and waits for it: (the task's thread, the call's).
    fn parent() -> (String, String) {
        let client = crate::task_client().expect("in a task");
        let mine = thread();
        let call = client.submit(thread, ()).result().expect("its value");
        (mine, call)
    }

    #[test]
    fn a_task_runs_the_call_it_waits_for_on_its_own_thread() {
        let args = crate::RuntimeArgs {
            local_workers: 1,
            nthreads: Some(1),
            ..crate::RuntimeArgs::default()
        };
        crate::run_local(args, |client| {
            for _ in 0..5 {
                let (mine, call) = client.submit(parent, ()).result().expect("a value");
                // The call came to the worker while the task waited for it: no other
                // thread was woken to run it, and no message told the task it was done.
                assert_eq!(mine, call);
            }
        });
    }
}
