//! The client: the handle the user's program gets ([`Client`]), the futures it returns, and
//! the client rank's communication node.
//!
//! The user's code runs on its own thread and never calls MPI: `Client` methods encode
//! tasks, register them in a shared table and pass messages to the communication thread
//! ([`ClientNode`]), which sends them and records answers in the table. Blocking calls wait
//! on a condition variable for the table to change.

mod args;
mod coordination;
mod everywhere;
mod flow;
mod future;
mod hosted;
mod node;
mod progress;
mod pure;
mod submitter;
mod task_stream;
mod waits;

pub use args::CallArg;
pub use coordination::{Event, Lock, Queue, Semaphore, Variable};
pub use future::{AsCompleted, Future, WithResults};
pub use hosted::task_client;
pub(crate) use hosted::{enter_task_thread, host_task_client};
pub(crate) use node::{ClientNode, Command};
pub use submitter::Submitter;
pub use task_stream::{PerformanceReport, TaskRecord, TaskStream};
use waits::Awaiting;
pub use waits::{DoneAndNotDone, FutureStatus, ReturnWhen};

use crate::error::{Error, Result, TaskError};
use crate::keymap::KeyMap;
use crate::node::EventSender;
use crate::protocol::{
    FnId, FunctionMsg, JobProgress, Key, Payload, Rank, SchedulerInfo, TaskOptions, TaskSpec,
    ToScheduler, ToWorker, decode_bytes, encode_given,
};
use crate::task::{FnPointer, IntoArgs, Registry, TaskFn, Trampoline};
use crate::worker::MpiTaskFn;
use crossbeam_channel::Sender;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Tasks sent to the scheduler in one message by [`Client::map`].
const MAP_BATCH: usize = 4096;

/// An encoded argument at least this large is not sent inline with its task (which would
/// carry it through the scheduler rank): the client sends it straight to a worker, as a
/// value scattered there, and the task reads it as a dependency. The scheduler sees only
/// its key and size. It is the size from which a payload travels as an attachment of its
/// own (`ATTACH_BYTES`): smaller values cost less inline than the extra message.
pub(crate) const DIRECT_ARG_BYTES: usize = crate::protocol::ATTACH_BYTES;

/// What the client knows about a key.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    Pending,
    Done(Rank),
    Failed(TaskError),
    Cancelled(String),
}

impl Status {
    fn is_final(&self) -> bool {
        !matches!(self, Status::Pending)
    }
}

pub(crate) struct Entry {
    /// The task's function (`None` for a scattered value).
    func: Option<FnId>,
    status: Status,
    data: Option<Payload>,
    /// The program waits for the value: fetch it as soon as it is done.
    wanted: bool,
    /// A `GetData` for it was sent.
    requested: bool,
    watchers: Vec<Sender<Key>>,
    /// Given to [`Client::fire_and_forget`]: it runs to the end even once released.
    forgotten: bool,
    /// Released by the program while it ran: released once it finishes.
    released: bool,
    /// Its name in every run of this executable, with `--checkpoint` (a pure call whose
    /// futures all have one, or a scattered value).
    stable: Option<pure::Content>,
}

impl Entry {
    fn new(func: Option<FnId>, status: Status, data: Option<Payload>) -> Self {
        Entry {
            func,
            status,
            data,
            wanted: false,
            requested: false,
            watchers: Vec::new(),
            forgotten: false,
            released: false,
            stable: None,
        }
    }
}

pub(crate) struct State {
    keys: KeyMap<Entry>,
    /// The functions registered with the scheduler, by address.
    functions: Registry,
    info: Option<SchedulerInfo>,
    /// The last answer to a progress request, and how many answers came.
    progress: Option<JobProgress>,
    progress_generation: u64,
    stopped: bool,
    /// Keys of forgotten tasks that finished after the program released them: the
    /// communication thread releases them.
    pub(crate) finished_releases: Vec<Key>,
    /// Tasks given to `fire_and_forget` that have not finished.
    forgotten_running: usize,
    /// Answers to coordination requests, by request id, not yet taken.
    coordinated: FxHashMap<u64, crate::protocol::CoordReply>,
    /// Tasks sleeping until a message about a key arrives (`Shared::wait_on_key_until`).
    pub(crate) sleepers: FxHashMap<Key, Vec<Sleeper>>,
    /// The live futures of pure calls.
    pure: pure::PureTable,
}

/// A task asleep in [`Shared::wait_on_key_until`] until a message about a key arrives.
pub(crate) struct Sleeper {
    pub(crate) thread: std::thread::Thread,
    /// It waits for the key's value, not only for its outcome: the key's `KeyDone` (on
    /// which the client asks for the value) does not wake it; the value, or a failure, does.
    pub(crate) for_value: bool,
}

impl State {
    fn new(functions: Registry) -> Self {
        State {
            keys: KeyMap::new(),
            functions,
            info: None,
            progress: None,
            progress_generation: 0,
            stopped: false,
            finished_releases: Vec::new(),
            forgotten_running: 0,
            coordinated: FxHashMap::default(),
            sleepers: FxHashMap::default(),
            pure: pure::PureTable::default(),
        }
    }

    fn key_name(&self, key: Key) -> String {
        let name = match self.keys.get(&key).map(|e| e.func) {
            Some(None) => "scatter",
            Some(Some(id)) => self.functions.name(id),
            None => "task",
        };
        format!("{name}-{}", key.0)
    }

    /// Records a key's new status and wakes its `as_completed` watchers.
    pub(crate) fn set_status(&mut self, key: Key, status: Status) {
        if let Some(entry) = self.keys.get_mut(&key) {
            if entry.status.is_final() && !matches!(status, Status::Failed(_)) {
                return;
            }
            entry.status = status;
            for watcher in entry.watchers.drain(..) {
                let _ = watcher.send(key);
            }
            if entry.forgotten && entry.status.is_final() {
                entry.forgotten = false;
                self.forgotten_running -= 1;
                if entry.released {
                    self.keys.remove(&key);
                    self.finished_releases.push(key);
                }
            }
        }
    }
}

/// Shared between the user's threads and the communication thread.
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    commands: Box<dyn Fn(Command) + Send + Sync>,
    /// The worker whose tasks use this client (`None` for the program's client).
    hosted: Option<Rank>,
    next_key: AtomicU64,
    /// Ids of coordination requests and of lock leases.
    next_request: AtomicU64,
    workers: Vec<Rank>,
    next_worker: AtomicUsize,
    /// `--progress-interval`.
    progress_interval: std::time::Duration,
    /// `--checkpoint` is given: pure calls get names that hold across runs.
    checkpoint: bool,
}

impl Shared {
    /// The live future of the pure call named `name`, if any.
    fn pure_future<T>(&self, name: pure::Content) -> Option<Future<T>> {
        let state = self.lock();
        let found = state.pure.get(name);
        // The lock goes before the future can: dropping a future takes it.
        drop(state);
        found
    }

    /// Records `futures` as the pure calls `names` (`None`: not a pure call).
    fn remember_pure<T>(&self, names: &[Option<pure::Content>], futures: &[Future<T>]) {
        let mut state = self.lock();
        for (name, future) in names.iter().zip(futures) {
            if let Some(name) = name {
                state.pure.insert(*name, future);
            }
        }
    }

    pub(crate) fn new(
        commands: EventSender<Command>,
        workers: Vec<Rank>,
        progress_interval: std::time::Duration,
        job_key: u64,
        checkpoint: bool,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::new(Registry::new(job_key))),
            changed: Condvar::new(),
            commands: Box::new(move |command| commands.send(command)),
            hosted: None,
            next_key: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            workers,
            next_worker: AtomicUsize::new(0),
            progress_interval,
            checkpoint,
        })
    }

    /// The table of the task client of worker `rank`, whose commands go to `commands`
    /// (`None` if `rank` is too large for the task clients' ranges of keys and ids).
    pub(crate) fn hosted(
        rank: Rank,
        commands: impl Fn(Command) + Send + Sync + 'static,
        workers: Vec<Rank>,
        job_key: u64,
    ) -> Option<Arc<Shared>> {
        let keys = Key::task_client_base(rank)?;
        let functions = FnId::task_client_base(rank)?;
        Some(Arc::new(Shared {
            state: Mutex::new(State::new(Registry::with_base(job_key, functions))),
            changed: Condvar::new(),
            commands: Box::new(commands),
            hosted: Some(rank),
            next_key: AtomicU64::new(keys + 1),
            next_request: AtomicU64::new(1),
            workers,
            next_worker: AtomicUsize::new(0),
            progress_interval: std::time::Duration::ZERO,
            checkpoint: false,
        }))
    }

    /// An error if this is a task client: `what` is for the program's client only.
    fn program_only(&self, what: &str) -> Result<()> {
        match self.hosted {
            None => Ok(()),
            Some(rank) => Err(Error::Config(format!(
                "{what} is not available to a task client (in a task on {rank}): call it from \
                 the program's own client"
            ))),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    fn send(&self, command: Command) {
        // The communication thread outlives every client call; if it is gone the job is
        // ending and the command does not matter.
        (self.commands)(command);
    }

    /// Waits until `ready` returns `Some`, or the runtime stops.
    fn wait_for<T>(&self, ready: impl FnMut(&mut State) -> Option<T>) -> Result<T> {
        self.wait_for_until(None, ready)
            .map(|value| value.expect("no deadline to pass"))
    }

    /// Waits until the table changes or `timeout` passes; an error once the runtime stops.
    fn wait_changed(&self, timeout: std::time::Duration) -> Result<()> {
        let state = self.lock();
        if state.stopped {
            return Err(Error::ShuttingDown);
        }
        let (state, _) = self
            .changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(|e| e.into_inner());
        if state.stopped {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// `true` once the job is stopping (the scheduler said so): the program's requests can
    /// no longer be served.
    pub(crate) fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Called when the last handle of a future is dropped.
    pub(crate) fn release(&self, key: Key) {
        {
            let mut state = self.lock();
            if let Some(entry) = state.keys.get_mut(&key)
                && entry.forgotten
                && !entry.status.is_final()
            {
                entry.released = true;
                return;
            }
            state.keys.remove(&key);
        }
        self.send(Command::Release(key));
    }
}

/// Options for the tasks of one `submit` or `map` call; see [`Client::with_options`].
impl TaskOptions {
    /// Runs a failed task up to `n` more times before its failure is final.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Runs before ready tasks of lower priority (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs only on these worker ranks.
    pub fn workers(mut self, ranks: impl IntoIterator<Item = u32>) -> Self {
        self.workers = ranks.into_iter().map(Rank).collect();
        self
    }

    /// With [`workers`](Self::workers): if none of those ranks is a worker of the job, the
    /// task runs on any worker instead of failing (Dask's `allow_other_workers=True`, which
    /// likewise applies only when no named worker exists, not when they are busy).
    pub fn allow_other_workers(mut self, allow: bool) -> Self {
        self.allow_other_workers = allow;
        self
    }

    /// Whether a call of the same function with the same arguments as a call whose future
    /// still lives gives that future (`true`, the default, as Dask's `pure=True`) or is a
    /// new task (`false`: for a function with side effects or random draws). Arguments
    /// are compared as encoded, futures by key, and the options too except the priority
    /// (Dask compares no option: there a call pinned to another worker is the same call).
    ///
    /// ```
    /// use mpidask::TaskOptions;
    /// fn square(x: u64) -> u64 { x * x }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let a = client.submit(square, 7);
    ///     let b = client.submit(square, 7); // the same future: one task
    ///     assert_eq!(a.key(), b.key());
    ///     let c = client.with_options(TaskOptions::default().pure(false)).submit(square, 7);
    ///     assert_ne!(a.key(), c.key());
    ///     assert_eq!(client.gather(&[a, b, c]).unwrap(), vec![49, 49, 49]);
    /// });
    /// ```
    pub fn pure(mut self, pure: bool) -> Self {
        self.impure = !pure;
        self
    }

    /// Runs only on a worker that advertises `amount` of `name` (`--resources name=amount`),
    /// holding it while the task runs.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.push(crate::protocol::Resource {
            name: name.into(),
            amount,
        });
        self
    }
}

/// The user's handle on the runtime: submits tasks, returns futures, gathers results.
///
/// Cheap to clone and usable from several threads.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Client { shared }
    }

    /// Hands `command` to the communication thread.
    #[cfg(feature = "internals")]
    pub(crate) fn send_command(&self, command: Command) {
        self.shared.send(command);
    }

    /// The worker ranks.
    pub fn workers(&self) -> &[Rank] {
        &self.shared.workers
    }

    /// Submits tasks with `options` (retries, priority, worker pinning, resources):
    ///
    /// ```
    /// # use mpidask::{Client, TaskOptions};
    /// # fn flaky(x: u32) -> u32 { x }
    /// # fn demo(client: &Client) {
    /// let future = client
    ///     .with_options(TaskOptions::default().retries(2).priority(5))
    ///     .submit(flaky, 7);
    /// # }
    /// ```
    pub fn with_options(&self, options: TaskOptions) -> Submitter<'_> {
        Submitter {
            client: self,
            options,
        }
    }

    /// Runs `f(args)` on a worker. `args` is the single argument of a one-argument function,
    /// a tuple for more, `()` for none; any argument may be a [`Future`] (or `&Future`, or a
    /// `Vec` of futures for a `Vec` parameter), which makes the task wait for that result
    /// and read it on the worker, never through the client. A panic in `f` fails the task.
    ///
    /// ```
    /// fn inc(x: i64) -> i64 { x + 1 }
    /// fn add(a: i64, b: i64) -> i64 { a + b }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let a = client.submit(inc, 1);
    ///     let b = client.submit(add, (&a, 10)); // a future as an argument: b waits for a
    ///     assert_eq!(b.result().unwrap(), 12);
    /// });
    /// ```
    pub fn submit<F, Args, X>(&self, f: F, args: X) -> Future<F::Output>
    where
        F: TaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        X: IntoArgs<Args, CallArg>,
    {
        self.with_options(TaskOptions::default()).submit(f, args)
    }

    /// Like [`submit`](Self::submit) for a function returning `Result<T, E>`: `Err` fails
    /// the task with `E`'s `Display` as the message.
    ///
    /// ```
    /// fn parse(text: String) -> Result<i64, std::num::ParseIntError> { text.parse() }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     assert_eq!(client.try_submit(parse, "42".to_string()).result().unwrap(), 42);
    ///     let failed = client.try_submit(parse, "forty-two".to_string()).result();
    ///     assert!(failed.unwrap_err().to_string().contains("failed"));
    /// });
    /// ```
    pub fn try_submit<F, Args, X, T, E>(&self, f: F, args: X) -> Future<T>
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned + 'static,
        T: Serialize + 'static,
        E: Display,
        X: IntoArgs<Args, CallArg>,
    {
        self.with_options(TaskOptions::default())
            .try_submit(f, args)
    }

    /// Submits an MPI task: `f(comm, args)` runs on `n_workers` workers at once, and `comm`
    /// (rsmpi's communicator, [`MpiComm`](crate::MpiComm)) connects exactly those workers,
    /// so an MPI routine (a collective, a solver) can be one step of a task graph. The
    /// value of rank 0 of `comm` is the task's value. Arguments may be futures, as in
    /// [`submit`](Self::submit).
    ///
    /// The scheduler reserves the workers (they take no other task from then on) and sends
    /// the task when all of them are free; each runs it on its communication thread, the
    /// rank's one MPI thread. The workers are those of the job's MPI processes (not local
    /// mode's threads, nor a worker hosted by the client or scheduler): a task asking for
    /// more fails with an error naming both numbers. An MPI task is not retried, and once
    /// sent it runs to its end even if cancelled. A function that panics on one member
    /// fails the task; if the other members then wait for it in MPI, the job ends 30 s
    /// later with exit code 4.
    ///
    /// ```no_run
    /// use mpidask::mpi::collective::SystemOperation;
    /// use mpidask::mpi::traits::*;
    ///
    /// fn total(comm: &mpidask::MpiComm, n: u64) -> u64 {
    ///     let mine = n * (comm.rank() as u64 + 1);
    ///     let mut sum = 0;
    ///     comm.all_reduce_into(&mine, &mut sum, SystemOperation::sum());
    ///     sum
    /// }
    /// # fn demo(client: &mpidask::Client) {
    /// assert_eq!(client.submit_mpi(total, 10, 2).result().unwrap(), 30);
    /// # }
    /// ```
    pub fn submit_mpi<F, Args, X>(&self, f: F, args: X, n_workers: usize) -> Future<F::Output>
    where
        F: MpiTaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        X: IntoArgs<Args, CallArg>,
    {
        self.with_options(TaskOptions::default())
            .submit_mpi(f, args, n_workers)
    }

    /// Submits one task per item: `f(item)` (items are tuples for functions of several
    /// arguments).
    ///
    /// ```
    /// fn area((width, height): (u32, u32)) -> u32 { width * height }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let areas = client.map(area, [(2, 3), (4, 5)]);
    ///     assert_eq!(client.gather(&areas).unwrap(), vec![6, 20]);
    /// });
    /// ```
    pub fn map<F, Args, I>(&self, f: F, items: I) -> Vec<Future<F::Output>>
    where
        F: TaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        I: IntoIterator,
        I::Item: IntoArgs<Args, CallArg>,
    {
        self.with_options(TaskOptions::default()).map(f, items)
    }

    /// [`map`](Self::map) for a function returning `Result<T, E>`.
    pub fn try_map<F, Args, I, T, E>(&self, f: F, items: I) -> Vec<Future<T>>
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned + 'static,
        T: Serialize + 'static,
        E: Display,
        I: IntoIterator,
        I::Item: IntoArgs<Args, CallArg>,
    {
        self.with_options(TaskOptions::default()).try_map(f, items)
    }

    /// Sends `value` to a worker (round robin) and returns a future for it, to pass to
    /// many tasks without sending it with each.
    ///
    /// ```
    /// fn count_above(values: Vec<f64>, limit: f64) -> usize {
    ///     values.iter().filter(|&&v| v > limit).count()
    /// }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let values = client.scatter((0..1000).map(f64::from).collect::<Vec<_>>()).unwrap();
    ///     let counts = client.map(count_above, [500.0, 900.0].map(|limit| (&values, limit)));
    ///     assert_eq!(client.gather(&counts).unwrap(), vec![499, 99]);
    /// });
    /// ```
    pub fn scatter<T: Serialize + 'static>(&self, value: T) -> Result<Future<T>> {
        let workers = &self.shared.workers;
        let index = self.shared.next_worker.fetch_add(1, Ordering::Relaxed) % workers.len();
        self.scatter_to(value, workers[index])
    }

    /// Sends `value` to every worker (Dask's `scatter(value, broadcast=True)`): the client
    /// sends it once, to the first worker, which broadcasts it with `MPI_Ibcast` on the
    /// workers' communicator. Tasks reading it on any worker then read their own copy.
    pub fn scatter_broadcast<T: Serialize + 'static>(&self, value: T) -> Result<Future<T>> {
        // One worker's collectives at a time: broadcasts start from the program only.
        self.shared.program_only("scatter_broadcast")?;
        let root = self.shared.workers[0];
        self.send_scattered(value, root, |key, bytes| ToWorker::BroadcastScatter {
            key,
            bytes,
        })
    }

    /// Encodes `value` under a new key, tells the scheduler it is on `worker`, and sends it
    /// there in the message `carry` makes (a plain vector or array from where it lies).
    fn send_scattered<T: Serialize + 'static>(
        &self,
        value: T,
        worker: Rank,
        carry: impl FnOnce(Key, Payload) -> ToWorker,
    ) -> Result<Future<T>> {
        let bytes: Payload =
            Arc::new(encode_given(value).map_err(|e| Error::encode("a scattered value", e))?);
        let key = self.send_bytes(bytes, worker, false, carry);
        Ok(Future::new(key, self.shared.clone()))
    }

    /// Sends encoded `bytes` to `worker` under a new key (in the message `carry` makes;
    /// paced if the value is a task's argument sent `ahead`, see `flow`) and tells the
    /// scheduler the key is there and how large it is; returns the key.
    fn send_bytes(
        &self,
        bytes: Payload,
        worker: Rank,
        ahead: bool,
        carry: impl FnOnce(Key, Payload) -> ToWorker,
    ) -> Key {
        let key = self.next_key();
        let nbytes = bytes.len() as u64;
        let mut entry = Entry::new(None, Status::Pending, Some(bytes.clone()));
        if self.shared.checkpoint {
            entry.stable = Some(pure::scattered_content(&bytes));
        }
        self.shared.lock().keys.insert(key, entry);
        self.shared.send(Command::Scheduler(ToScheduler::Scatter {
            key,
            worker,
            nbytes,
        }));
        let message = carry(key, bytes);
        self.shared.send(if ahead {
            Command::Ahead(worker, message)
        } else {
            Command::Worker(worker, message)
        });
        key
    }

    /// Sends `value` to worker rank `worker` and returns a future for it.
    pub fn scatter_to<T: Serialize + 'static>(&self, value: T, worker: Rank) -> Result<Future<T>> {
        if !self.shared.workers.contains(&worker) {
            return Err(Error::Config(format!(
                "cannot scatter to {worker}: the worker ranks are {}",
                describe_ranks(&self.shared.workers)
            )));
        }
        self.send_scattered(value, worker, |key, bytes| ToWorker::ScatterData {
            key,
            bytes,
        })
    }

    /// The results of `futures`, in order. Values are fetched directly from the workers
    /// holding them, all at once. The first failed future's error is returned.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let squares = client.map(square, 1..=3u64);
    ///     assert_eq!(client.gather(&squares).unwrap(), vec![1, 4, 9]);
    /// });
    /// ```
    pub fn gather<T: DeserializeOwned + 'static>(&self, futures: &[Future<T>]) -> Result<Vec<T>> {
        let keys: Vec<Key> = futures.iter().map(Future::key).collect();
        let payloads = self.fetch(&keys, None, false)?;
        keys.iter()
            .zip(payloads)
            .map(|(key, bytes)| self.decode_value(*key, &bytes.expect("failures not skipped")))
            .collect()
    }

    /// The value of `key` from its encoding.
    fn decode_value<T: DeserializeOwned + 'static>(&self, key: Key, bytes: &Payload) -> Result<T> {
        decode_bytes(bytes).map_err(|e| Error::decode(self.shared.lock().key_name(key), e))
    }

    /// Waits until every future has finished (with a value, an error or a cancellation),
    /// without fetching values.
    pub fn wait<T>(&self, futures: &[Future<T>]) -> Result<()> {
        let mut cursor = 0;
        self.shared
            .wait_on_key_until(None, |state| {
                while let Some(future) = futures.get(cursor) {
                    match state.keys.get(&future.key()) {
                        Some(entry) if !entry.status.is_final() => {
                            return Err(Awaiting::Outcome(future.key()));
                        }
                        _ => cursor += 1,
                    }
                }
                Ok(())
            })
            .map(|done| done.expect("no deadline to pass"))
    }

    /// An iterator over `futures` in the order they finish.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let futures = client.map(square, 1..=4u64);
    ///     let mut total = 0;
    ///     for future in client.as_completed(&futures) {
    ///         total += future.result().unwrap(); // each as soon as it is done
    ///     }
    ///     assert_eq!(total, 30);
    /// });
    /// ```
    pub fn as_completed<T>(&self, futures: &[Future<T>]) -> AsCompleted<T> {
        AsCompleted::new(&self.shared, futures)
    }

    /// Cancels the tasks of `futures` (and the tasks that depend on them). Their results
    /// become [`Error::Cancelled`]; finished futures keep their value.
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let slow = client.map(nap, [5_000u64, 5_000]);
    ///     client.cancel(&slow);
    ///     assert!(matches!(slow[1].result(), Err(mpidask::Error::Cancelled { .. })));
    /// });
    /// ```
    pub fn cancel<T>(&self, futures: &[Future<T>]) {
        let keys = futures.iter().map(Future::key).collect();
        self.shared
            .send(Command::Scheduler(ToScheduler::CancelKeys(keys)));
    }

    /// The workers (ranks, hosts, threads, resources) and the scheduler's CPU time.
    pub fn scheduler_info(&self) -> Result<SchedulerInfo> {
        self.shared.program_only("scheduler_info")?;
        self.shared.lock().info = None;
        self.shared
            .send(Command::Scheduler(ToScheduler::InfoRequest));
        self.shared.wait_for(|state| state.info.take())
    }

    fn next_key(&self) -> Key {
        Key(self.shared.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// The id of the function `f` (of any [`FnPointer`] type), registering it with the
    /// scheduler on first use.
    pub(crate) fn register<F: FnPointer>(&self, f: F, name: impl FnOnce() -> String) -> FnId {
        self.registered(|functions| functions.id_of(f, name))
    }

    /// [`register`](Self::register) of `f` under `name`: one id per (function, name), so a
    /// function that runs tasks of several kinds names each kind's tasks.
    fn register_named<F: FnPointer>(&self, f: F, name: &str) -> FnId {
        self.registered(|functions| functions.id_named(f, name))
    }

    /// The id `lookup` gives in the registry, its registration (if new) sent to the
    /// scheduler under the lock, so that it arrives before any task using it.
    fn registered(
        &self,
        lookup: impl FnOnce(&mut Registry) -> (FnId, Option<FunctionMsg>),
    ) -> FnId {
        let mut state = self.shared.lock();
        let (id, registration) = lookup(&mut state.functions);
        if let Some(registration) = registration {
            self.shared
                .send(Command::Scheduler(ToScheduler::RegisterFunction(
                    registration,
                )));
        }
        id
    }

    /// Registers and sends tasks of `func` (which also calls `uses`) whose arguments were
    /// encoded (or failed to encode), large ones already sent ahead
    /// ([`send_large_args_direct`](Self::send_large_args_direct)); `checkpoints` names
    /// each call for `--checkpoint` (missing past its end: not kept).
    fn submit_calls<T>(
        &self,
        func: FnId,
        uses: &[FnId],
        calls: Vec<bincode::Result<Vec<CallArg>>>,
        checkpoints: &[Option<pure::Content>],
        options: &TaskOptions,
    ) -> Vec<Future<T>> {
        // A task client's tasks run before those of its own task's priority: the tree of
        // tasks submitting tasks grows depth first, so few tasks wait at once.
        let inherited;
        let options = match self.shared.hosted {
            None => options,
            Some(_) => {
                let parent = crate::worker::executor::current_priority().unwrap_or(0);
                inherited = TaskOptions {
                    priority: options.priority.saturating_add(parent).saturating_add(1),
                    ..options.clone()
                };
                &inherited
            }
        };
        let mut futures = Vec::with_capacity(calls.len());
        let mut batch = Vec::with_capacity(calls.len().min(MAP_BATCH));
        // The futures used as arguments, alive until their dependent tasks are sent.
        let mut keep = Vec::new();
        {
            let mut state = self.shared.lock();
            for (i, args) in calls.into_iter().enumerate() {
                let key = self.next_key();
                let checkpoint = checkpoints.get(i).copied().flatten();
                let status = match &args {
                    Ok(_) => Status::Pending,
                    Err(e) => Status::Failed(TaskError::new(
                        format!("{}-{}", state.functions.name(func), key.0),
                        format!("could not encode its arguments: {e}"),
                    )),
                };
                let mut entry = Entry::new(Some(func), status, None);
                entry.stable = checkpoint;
                state.keys.insert(key, entry);
                if let Ok(args) = args {
                    batch.push(TaskSpec {
                        key,
                        func,
                        uses: uses.to_vec(),
                        args: args.into_iter().map(|a| a.into_wire(&mut keep)).collect(),
                        options: options.clone(),
                        checkpoint,
                    });
                    if batch.len() == MAP_BATCH {
                        self.shared
                            .send(Command::Scheduler(ToScheduler::Submit(std::mem::take(
                                &mut batch,
                            ))));
                    }
                }
                futures.push(Future::new(key, self.shared.clone()));
            }
        }
        if !batch.is_empty() {
            self.shared
                .send(Command::Scheduler(ToScheduler::Submit(batch)));
        }
        // Only now may the futures used as arguments be released.
        drop(keep);
        futures
    }

    /// `args` with every value of [`DIRECT_ARG_BYTES`] or more sent ahead to one worker
    /// (round robin over the workers the task may run on) and replaced by its future, so
    /// the value never crosses the scheduler rank and the task is placed where it lies.
    fn send_large_args_direct(&self, args: Vec<CallArg>, options: &TaskOptions) -> Vec<CallArg> {
        if !has_large_value(&args) {
            return args;
        }
        let allowed: Vec<Rank> = options
            .workers
            .iter()
            .copied()
            .filter(|w| self.shared.workers.contains(w))
            .collect();
        let pool = if allowed.is_empty() {
            &self.shared.workers
        } else {
            &allowed
        };
        let turn = self.shared.next_worker.fetch_add(1, Ordering::Relaxed);
        let worker = pool[turn % pool.len()];
        args.into_iter()
            .map(|arg| match arg {
                CallArg::Value(bytes) if bytes.len() >= DIRECT_ARG_BYTES => {
                    let key =
                        self.send_bytes(Arc::new(bytes.into()), worker, true, |key, bytes| {
                            ToWorker::ScatterData { key, bytes }
                        });
                    CallArg::Future(Future::new(key, self.shared.clone()))
                }
                CallArg::Large(bytes) => {
                    let key = self.send_bytes(bytes, worker, true, |key, bytes| {
                        ToWorker::ScatterData { key, bytes }
                    });
                    CallArg::Future(Future::new(key, self.shared.clone()))
                }
                other => other,
            })
            .collect()
    }

    /// A future that has already failed with `message` (for work that could not even be
    /// described, such as an invalid array graph reached through a delayed call).
    pub(crate) fn failed_future(&self, message: &str) -> Future<()> {
        let key = self.next_key();
        let error = TaskError::new(format!("invalid-{}", key.0), message.to_string());
        self.shared
            .lock()
            .keys
            .insert(key, Entry::new(None, Status::Failed(error), None));
        Future::new(key, self.shared.clone())
    }

    /// Submits one task of the collections' own: `trampoline` (registered as `name`),
    /// which calls the functions `uses` by position, with `args`.
    pub(crate) fn submit_raw(
        &self,
        trampoline: Trampoline,
        name: &str,
        uses: &[FnId],
        args: Vec<CallArg>,
    ) -> Future<()> {
        self.submit_raw_prioritized(trampoline, name, uses, args, 0)
    }

    /// [`submit_raw`](Self::submit_raw) of a task that runs before ready tasks of lower
    /// `priority`.
    pub(crate) fn submit_raw_prioritized(
        &self,
        trampoline: Trampoline,
        name: &str,
        uses: &[FnId],
        args: Vec<CallArg>,
        priority: i32,
    ) -> Future<()> {
        let func = self.register_named(trampoline, name);
        let options = TaskOptions::default().priority(priority);
        let args = self.send_large_args_direct(args, &options);
        self.submit_calls(func, uses, vec![Ok(args)], &[], &options)
            .pop()
            .expect("one task")
    }

    /// Waits for `keys` and fetches their values from the workers: values already computed
    /// are requested at once (one message per worker), the others as soon as they finish.
    /// The first failed or cancelled key's error is returned, or with `skip_failed` its
    /// value is `None`. Past `timeout` (`None`: no limit), [`Error::Timeout`].
    fn fetch(
        &self,
        keys: &[Key],
        timeout: Option<std::time::Duration>,
        skip_failed: bool,
    ) -> Result<Vec<Option<Payload>>> {
        let until = waits::deadline(timeout)?;
        {
            let mut state = self.shared.lock();
            let mut requests: FxHashMap<Rank, Vec<Key>> = FxHashMap::default();
            for key in keys {
                let Some(entry) = state.keys.get_mut(key) else {
                    continue;
                };
                entry.wanted = true;
                if let Status::Done(worker) = entry.status
                    && entry.data.is_none()
                    && !entry.requested
                {
                    entry.requested = true;
                    requests.entry(worker).or_default().push(*key);
                }
            }
            for (worker, keys) in requests {
                self.shared
                    .send(Command::Worker(worker, ToWorker::GetData(keys)));
            }
        }
        // Checked in order; a key is looked at again only while it is the first missing one.
        let mut values = Vec::with_capacity(keys.len());
        let fetched = self.shared.wait_on_key_until(until, |state| {
            while let Some(key) = keys.get(values.len()) {
                let Some(entry) = state.keys.get(key) else {
                    return Ok(Err(Error::UnknownKey(*key)));
                };
                match (&entry.status, &entry.data) {
                    (Status::Failed(_) | Status::Cancelled(_), _) if skip_failed => {
                        values.push(None)
                    }
                    (Status::Failed(error), _) => {
                        return Ok(Err(Error::Task(error.clone())));
                    }
                    (Status::Cancelled(cause), _) => {
                        return Ok(Err(Error::Cancelled { key: cause.clone() }));
                    }
                    (_, Some(data)) => values.push(Some(data.clone())),
                    _ => return Err(Awaiting::Value(*key)),
                }
            }
            Ok(Ok(()))
        })?;
        match fetched {
            Some(result) => result.map(|()| values),
            None => Err(waits::timed_out(
                timeout,
                match keys {
                    [key] => format!("the value of {}", self.shared.lock().key_name(*key)),
                    _ => format!("the values of {} futures", keys.len()),
                },
            )),
        }
    }
}

/// Whether a value among `args` is large enough to be sent ahead to a worker.
fn has_large_value(args: &[CallArg]) -> bool {
    args.iter().any(|a| match a {
        CallArg::Value(bytes) => bytes.len() >= DIRECT_ARG_BYTES,
        CallArg::Large(_) => true,
        CallArg::Future(_) | CallArg::Futures(_) => false,
    })
}

fn describe_ranks(ranks: &[Rank]) -> String {
    let list: Vec<String> = ranks.iter().map(|r| r.0.to_string()).collect();
    list.join(", ")
}
