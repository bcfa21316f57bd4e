//! Scenario tests of the scheduler through a fake transport that round-trips every message
//! through the wire encoding, with an invariant check after every step.

use super::state::TaskState;
use super::{Output, Scheduler, SchedulerConfig};
use crate::exit::ExitCode;
use crate::protocol::frame::{decode_frame, encode_frame};
use crate::protocol::{
    ArgSlot, Attempt, ComputeMsg, FnId, Key, Rank, Resource, TaskOptions, TaskRun, TaskSpec,
    ToClient, ToScheduler, ToWorker, WorkerHello,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A scheduler plus everything it sent, with helpers to play the workers and the client.
struct TestEnv {
    scheduler: Scheduler,
    now: Instant,
    to_workers: Vec<(Rank, ToWorker)>,
    to_client: Vec<ToClient>,
    attempts: HashMap<Key, Attempt>,
    aborted: Option<(i32, String)>,
}

fn round_trip<M: serde::Serialize + serde::de::DeserializeOwned>(message: M) -> M {
    let frame = encode_frame(std::slice::from_ref(&message)).expect("encodes");
    decode_frame::<M>(&frame)
        .expect("decodes")
        .pop()
        .expect("one message")
}

/// The job key of every test scheduler.
const JOB_KEY: u64 = 0x5eed;

/// The test task function: never called (the scheduler only checks its registration).
fn test_function(
    _: &crate::task::TaskInput<'_>,
) -> Result<crate::protocol::Bytes, crate::task::CallError> {
    Ok(Vec::new().into())
}

/// The client's registration of the test function as `FnId(0)`.
fn registration() -> crate::protocol::FunctionMsg {
    let mut registry = crate::task::Registry::new(JOB_KEY);
    let trampoline: crate::task::Trampoline = test_function;
    let (_, registration) = registry.id_of(trampoline, || "f".into());
    registration.expect("a new function")
}

impl TestEnv {
    /// Workers `(rank, nthreads)`, all joined.
    fn new(workers: &[(u32, u32)]) -> Self {
        let workers: Vec<_> = workers.iter().map(|&(r, t)| (r, t, vec![])).collect();
        Self::with_resources(&workers)
    }

    fn unjoined(ranks: &[u32]) -> Self {
        let now = Instant::now();
        let config = SchedulerConfig {
            workers: ranks.iter().map(|r| Rank(*r)).collect(),
            worker_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            stall_warning: Duration::from_secs(60),
            job_key: JOB_KEY,
            work_stealing: true,
        };
        let mut env = TestEnv {
            scheduler: Scheduler::new(config, now),
            now,
            to_workers: Vec::new(),
            to_client: Vec::new(),
            attempts: HashMap::new(),
            aborted: None,
        };
        env.send(Rank::CLIENT, ToScheduler::RegisterFunction(registration()));
        // Forwarded to every worker before any task.
        let forwarded = env.take_worker_messages();
        assert_eq!(forwarded.len(), ranks.len());
        assert!(
            forwarded
                .iter()
                .all(|(_, m)| matches!(m, ToWorker::RegisterFunction(r) if r.id == FnId(0)))
        );
        env
    }

    fn with_resources(workers: &[(u32, u32, Vec<Resource>)]) -> Self {
        let ranks: Vec<u32> = workers.iter().map(|w| w.0).collect();
        let mut env = Self::unjoined(&ranks);
        for (rank, nthreads, resources) in workers {
            env.hello(*rank, *nthreads, resources.clone());
        }
        env
    }

    fn hello(&mut self, rank: u32, nthreads: u32, resources: Vec<Resource>) {
        self.hello_on(rank, nthreads, resources, "node1");
    }

    fn hello_on(&mut self, rank: u32, nthreads: u32, resources: Vec<Resource>, host: &str) {
        self.send(
            Rank(rank),
            ToScheduler::WorkerHello(WorkerHello {
                nthreads,
                resources,
                host: host.into(),
                pid: 100 + rank,
                memory_limit: None,
                memory_limit_source: String::new(),
                mpi_group: true,
            }),
        );
    }

    fn send(&mut self, from: Rank, message: ToScheduler) {
        self.scheduler.handle(from, round_trip(message), self.now);
        self.collect();
    }

    fn collect(&mut self) {
        let mut out = Vec::new();
        self.scheduler.drain_outbox(&mut out);
        for output in out {
            match output {
                Output::Worker(rank, message) => {
                    let message = round_trip(message);
                    if let ToWorker::Compute(c) = &message {
                        self.attempts.insert(c.key, c.attempt);
                    }
                    self.to_workers.push((rank, message));
                }
                Output::Client(m) => self.to_client.push(round_trip(m)),
                Output::Info(info) => self.to_client.push(round_trip(ToClient::Info(info))),
                Output::Abort { code, message } => self.aborted = Some((code, message)),
            }
        }
        self.scheduler.check_invariants();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.scheduler.tick(self.now);
        self.collect();
    }

    fn submit(&mut self, specs: Vec<TaskSpec>) {
        self.send(Rank::CLIENT, ToScheduler::Submit(specs));
    }

    fn client(&mut self, message: ToScheduler) {
        self.send(Rank::CLIENT, message);
    }

    /// Compute messages sent so far, removed from the record.
    fn take_computes(&mut self) -> Vec<(Rank, ComputeMsg)> {
        let mut computes = Vec::new();
        self.to_workers.retain(|(rank, m)| match m {
            ToWorker::Compute(c) => {
                computes.push((*rank, c.clone()));
                false
            }
            _ => true,
        });
        computes
    }

    fn placements(&mut self) -> Vec<(u64, u32)> {
        self.take_computes()
            .into_iter()
            .map(|(rank, c)| (c.key.0, rank.0))
            .collect()
    }

    fn take_worker_messages(&mut self) -> Vec<(Rank, ToWorker)> {
        std::mem::take(&mut self.to_workers)
    }

    fn take_client_messages(&mut self) -> Vec<ToClient> {
        std::mem::take(&mut self.to_client)
    }

    fn processing(&self, key: u64) -> (Rank, Attempt) {
        match self.scheduler.task_state(Key(key)) {
            Some(TaskState::Processing { worker, .. }) => (*worker, self.attempts[&Key(key)]),
            other => panic!("task {key} is not processing: {other:?}"),
        }
    }

    fn finish(&mut self, key: u64, nbytes: u64) {
        let (worker, attempt) = self.processing(key);
        self.finish_as(worker, key, attempt, nbytes);
    }

    fn finish_as(&mut self, worker: Rank, key: u64, attempt: Attempt, nbytes: u64) {
        self.finish_taking(worker, key, attempt, nbytes, 100_000);
    }

    /// Reports `key` finished after running `duration_us`.
    fn finish_taking(
        &mut self,
        worker: Rank,
        key: u64,
        attempt: Attempt,
        nbytes: u64,
        duration_us: u64,
    ) {
        self.send(
            worker,
            ToScheduler::TaskFinished {
                key: Key(key),
                attempt,
                nbytes,
                run: Some(TaskRun {
                    start_us: 1_000_000 + key,
                    duration_us,
                    thread: 0,
                }),
            },
        );
    }

    fn fail(&mut self, key: u64, message: &str) {
        let (worker, attempt) = self.processing(key);
        self.send(
            worker,
            ToScheduler::TaskFailed {
                key: Key(key),
                attempt,
                message: message.into(),
                run: TaskRun::default(),
            },
        );
    }

    fn state(&self, key: u64) -> Option<TaskState> {
        self.scheduler.task_state(Key(key)).cloned()
    }

    fn release(&mut self, keys: &[u64]) {
        self.client(ToScheduler::ReleaseKeys(
            keys.iter().map(|k| Key(*k)).collect(),
        ));
    }
}

/// The key an answer to the client is about (done, erred or cancelled), if it is one.
fn answered(message: &ToClient) -> Option<u64> {
    match message {
        ToClient::KeyDone { key, .. }
        | ToClient::KeyErred { key, .. }
        | ToClient::KeyCancelled { key, .. } => Some(key.0),
        _ => None,
    }
}

/// Keys done among the client messages sent so far (removed from the record).
fn done_count(env: &mut TestEnv) -> usize {
    env.take_client_messages()
        .iter()
        .filter(|m| matches!(m, ToClient::KeyDone { .. }))
        .count()
}

/// Dependencies of random task `i` (keys from 1): the earlier tasks `picks` point at, sorted
/// and without repeats; none for the first task.
fn earlier_deps(i: usize, picks: &[proptest::sample::Index]) -> Vec<u64> {
    if i == 0 {
        return vec![];
    }
    let mut deps: Vec<u64> = picks.iter().map(|d| 1 + d.index(i) as u64).collect();
    deps.sort();
    deps.dedup();
    deps
}

fn task(key: u64, deps: &[u64]) -> TaskSpec {
    task_with(key, deps, TaskOptions::default())
}

fn task_with(key: u64, deps: &[u64], options: TaskOptions) -> TaskSpec {
    let mut args: Vec<ArgSlot> = deps.iter().map(|d| ArgSlot::Future(Key(*d))).collect();
    args.push(ArgSlot::Value(vec![key as u8]));
    TaskSpec {
        key: Key(key),
        func: FnId(0),
        uses: vec![],
        args,
        options,
        checkpoint: None,
    }
}

fn gpu(amount: f64) -> Vec<Resource> {
    vec![Resource {
        name: "gpu".into(),
        amount,
    }]
}

fn released(messages: &[(Rank, ToWorker)]) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = messages
        .iter()
        .filter_map(|(rank, m)| match m {
            ToWorker::ReleaseKeys(keys) => {
                Some(keys.iter().map(|k| (rank.0, k.0)).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    out.sort();
    out
}

#[test]
fn independent_tasks_go_to_the_least_loaded_workers() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[]), task(3, &[]), task(4, &[])]);
    let mut per_worker = HashMap::new();
    for (_, rank) in env.placements() {
        *per_worker.entry(rank).or_insert(0) += 1;
    }
    assert_eq!(per_worker.get(&2), Some(&2));
    assert_eq!(per_worker.get(&3), Some(&2));
}

#[test]
fn nothing_is_placed_before_all_workers_joined() {
    let mut env = TestEnv::unjoined(&[2, 3]);
    env.submit(vec![task(1, &[])]);
    env.hello(2, 1, vec![]);
    assert!(env.placements().is_empty());
    env.hello(3, 1, vec![]);
    assert_eq!(env.placements().len(), 1);
}

#[test]
fn a_task_waits_for_its_dependencies_and_learns_where_they_are() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[])]);
    let placed = env.placements();
    assert_eq!(placed.len(), 2);
    env.submit(vec![task(3, &[1, 2])]);
    assert!(env.placements().is_empty(), "inputs are on two workers");
    assert_eq!(env.state(3), Some(TaskState::Waiting));
    env.finish(1, 10);
    // Now only task 2 is missing: task 3 goes where task 2 runs.
    let computes = env.take_computes();
    assert_eq!(computes.len(), 1);
    let (rank, c) = &computes[0];
    let where_2 = placed.iter().find(|(k, _)| *k == 2).unwrap().1;
    let where_1 = placed.iter().find(|(k, _)| *k == 1).unwrap().1;
    assert_eq!(rank.0, where_2);
    let mut deps = c.deps.clone();
    deps.sort();
    assert_eq!(deps, vec![(Key(1), Rank(where_1)), (Key(2), Rank(where_2))]);
}

#[test]
fn a_chain_is_placed_on_one_worker_at_once() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[1]), task(3, &[2])]);
    let placed = env.placements();
    assert_eq!(placed.len(), 3, "the whole chain is placed: {placed:?}");
    assert!(placed.iter().all(|(_, rank)| *rank == placed[0].1));
    env.finish(1, 8);
    env.finish(2, 8);
    env.finish(3, 8);
    assert_eq!(env.take_client_messages().len(), 3);
}

#[test]
fn placement_prefers_the_worker_holding_the_input_bytes() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[])]);
    let (_, first) = env.placements()[0];
    let other = if first == 2 { 3 } else { 2 };
    env.finish(1, 500_000_000);
    // Load the holder a little: one unrelated task.
    env.submit(vec![task_with(
        2,
        &[],
        TaskOptions {
            workers: vec![Rank(first)],
            ..Default::default()
        },
    )]);
    env.take_computes();
    env.submit(vec![task(3, &[1])]);
    assert_eq!(env.placements(), vec![(3, first)], "not moved to {other}");
}

#[test]
fn small_inputs_do_not_outweigh_load() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[])]);
    let (_, first) = env.placements()[0];
    env.finish(1, 8);
    let pinned = TaskOptions {
        workers: vec![Rank(first)],
        ..Default::default()
    };
    env.submit(vec![
        task_with(2, &[], pinned.clone()),
        task_with(3, &[], pinned),
    ]);
    env.take_computes();
    env.submit(vec![task(4, &[1])]);
    let other = if first == 2 { 3 } else { 2 };
    assert_eq!(env.placements(), vec![(4, other)]);
}

#[test]
fn results_nobody_needs_are_released() {
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[1])]);
    env.release(&[1]);
    assert!(env.state(1).is_some(), "task 2 still needs it");
    env.finish(1, 8);
    env.finish(2, 8);
    assert_eq!(released(&env.take_worker_messages()), vec![(2, 1)]);
    assert!(env.state(1).is_none());
    env.release(&[2]);
    assert_eq!(released(&env.take_worker_messages()), vec![(2, 2)]);
    assert_eq!(env.scheduler.task_count(), 0);
}

#[test]
fn releasing_an_unfinished_task_cancels_it() {
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit(vec![task(1, &[])]);
    let (rank, attempt) = env.processing(1);
    env.release(&[1]);
    let messages = env.take_worker_messages();
    assert!(messages.contains(&(
        rank,
        ToWorker::CancelTask {
            key: Key(1),
            attempt
        }
    )));
    assert_eq!(env.scheduler.task_count(), 0);
    // Its late result is released, not kept.
    env.finish_as(rank, 1, attempt, 8);
    assert_eq!(released(&env.take_worker_messages()), vec![(2, 1)]);
}

#[test]
fn a_failure_reaches_every_dependent_with_the_same_cause() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![
        task(1, &[]),
        task(2, &[1]),
        task(3, &[2]),
        task(4, &[]),
    ]);
    env.take_computes();
    env.fail(1, "boom");
    let erred: Vec<(u64, String, String)> = env
        .take_client_messages()
        .into_iter()
        .filter_map(|m| match m {
            ToClient::KeyErred {
                key,
                cause,
                message,
            } => Some((key.0, cause, message)),
            _ => None,
        })
        .collect();
    let mut keys: Vec<u64> = erred.iter().map(|e| e.0).collect();
    keys.sort();
    assert_eq!(keys, vec![1, 2, 3]);
    assert!(
        erred
            .iter()
            .all(|(_, cause, msg)| cause == "f-1" && msg == "boom")
    );
    // Dependents placed ahead on the worker are cancelled there.
    let cancels = env
        .take_worker_messages()
        .into_iter()
        .filter(|(_, m)| matches!(m, ToWorker::CancelTask { .. }))
        .count();
    assert_eq!(cancels, 2);
    assert!(matches!(env.state(4), Some(TaskState::Processing { .. })));
    // A task submitted later on top of the failed one fails at once.
    env.submit(vec![task(5, &[1])]);
    assert!(matches!(
        env.take_client_messages().as_slice(),
        [ToClient::KeyErred { key: Key(5), .. }]
    ));
}

#[test]
fn a_failed_task_with_retries_runs_again() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let options = TaskOptions {
        retries: 1,
        ..Default::default()
    };
    env.submit(vec![task_with(1, &[], options), task(2, &[1])]);
    let first = env.processing(1);
    env.take_computes();
    env.fail(1, "flaky");
    let (_, attempt) = env.processing(1);
    assert!(attempt > first.1, "a new attempt");
    assert!(
        env.take_client_messages().is_empty(),
        "no error reaches the client"
    );
    assert!(matches!(
        env.state(2),
        Some(TaskState::Waiting | TaskState::Processing { .. })
    ));
    // A late reply about the first attempt is ignored.
    env.finish_as(first.0, 1, first.1, 8);
    assert!(matches!(env.state(1), Some(TaskState::Processing { .. })));
    env.finish(1, 8);
    env.finish(2, 8);
    assert_eq!(done_count(&mut env), 2);
}

/// A chain placed whole on one worker (each link waiting there for the one before) is taken
/// back whole when its first link fails and will run again: the later links waited for
/// values that worker would never compute (found by `tests/simulation.rs`: the job hung).
#[test]
fn a_retried_task_takes_back_the_whole_chain_placed_after_it() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let options = TaskOptions {
        retries: 1,
        ..Default::default()
    };
    env.submit(vec![
        task_with(1, &[], options),
        task(2, &[1]),
        task(3, &[2]),
    ]);
    let (worker, _) = env.processing(1);
    assert_eq!(env.processing(2).0, worker, "the chain is placed whole");
    assert_eq!(env.processing(3).0, worker);
    env.take_worker_messages();
    env.fail(1, "flaky");
    let mut cancelled: Vec<u64> = env
        .take_worker_messages()
        .into_iter()
        .filter_map(|(_, m)| match m {
            ToWorker::CancelTask { key, .. } => Some(key.0),
            _ => None,
        })
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, vec![2, 3], "both links taken back from {worker}");
    env.finish(1, 8);
    env.finish(2, 8);
    env.finish(3, 8);
    assert_eq!(done_count(&mut env), 3);
}

#[test]
fn retries_run_out() {
    let mut env = TestEnv::new(&[(2, 1)]);
    let options = TaskOptions {
        retries: 2,
        ..Default::default()
    };
    env.submit(vec![task_with(1, &[], options)]);
    env.fail(1, "one");
    env.fail(1, "two");
    assert!(env.take_client_messages().is_empty());
    env.fail(1, "three");
    assert!(matches!(
        env.take_client_messages().as_slice(),
        [ToClient::KeyErred { message, .. }] if message == "three"
    ));
}

/// Ten tasks spread five and five while durations are unknown; worker 3 then finishes
/// its five (learning that tasks are long) and idles while worker 2 still has a queue.
fn env_with_idle_worker_3() -> TestEnv {
    env_with_idle_worker_3_stealing(true)
}

fn env_with_idle_worker_3_stealing(work_stealing: bool) -> TestEnv {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.scheduler.config_mut().work_stealing = work_stealing;
    let pinned = TaskOptions {
        workers: vec![Rank(2)],
        ..Default::default()
    };
    let mut specs = vec![task_with(1, &[], pinned)];
    specs.extend((2..=10).map(|k| task(k, &[])));
    env.submit(specs);
    let placed = env.placements();
    let on_3: Vec<u64> = placed.iter().filter(|p| p.1 == 3).map(|p| p.0).collect();
    assert_eq!(on_3.len(), 5, "{placed:?}");
    for key in on_3 {
        env.finish(key, 8);
    }
    env
}

fn steal_requests(env: &mut TestEnv) -> Vec<(Key, Attempt)> {
    env.take_worker_messages()
        .into_iter()
        .filter_map(|(rank, m)| match m {
            ToWorker::Steal { key, attempt } => {
                assert_eq!(rank, Rank(2));
                Some((key, attempt))
            }
            _ => None,
        })
        .collect()
}

/// Worker 2 gives up every task in `steals`.
fn give_up(env: &mut TestEnv, steals: &[(Key, Attempt)]) {
    for &(key, attempt) in steals {
        env.send(
            Rank(2),
            ToScheduler::StealReply {
                key,
                attempt,
                stolen: true,
            },
        );
    }
}

#[test]
fn an_idle_worker_steals_queued_tasks() {
    let mut env = env_with_idle_worker_3();
    let steals = steal_requests(&mut env);
    assert!(!steals.is_empty(), "a steal request was sent");
    assert!(
        steals.iter().all(|(k, _)| k.0 != 1),
        "the pinned task stays"
    );
    give_up(&mut env, &steals);
    let moved = env.placements();
    assert_eq!(moved.len(), steals.len());
    assert!(moved.iter().all(|(_, rank)| *rank == 3), "{moved:?}");
}

#[test]
fn no_steals_without_work_stealing() {
    let mut env = env_with_idle_worker_3_stealing(false);
    assert!(steal_requests(&mut env).is_empty());
    env.advance(Duration::from_secs(1));
    assert!(steal_requests(&mut env).is_empty());
}

#[test]
fn tasks_wait_for_the_holder_of_large_inputs() {
    // Worker 2 holds a 1 GB value (0.5 s to move at the nominal bandwidth); tasks reading
    // it wait for a slot there rather than move it to the idle worker 3, and are not
    // stolen by it.
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let pinned = TaskOptions {
        workers: vec![Rank(2)],
        ..Default::default()
    };
    env.submit(vec![task_with(1, &[], pinned)]);
    env.placements();
    env.finish(1, 1_000_000_000);
    env.submit((2..=6).map(|k| task(k, &[1])).collect());
    let mut placed = env.placements();
    assert!(placed.len() < 5, "some wait for a slot: {placed:?}");
    assert!(steal_requests(&mut env).is_empty());
    for key in 2..=6 {
        if placed.iter().any(|p| p.0 == key) {
            env.finish(key, 8);
            placed.extend(env.placements());
        }
    }
    assert_eq!(placed.len(), 5, "{placed:?}");
    assert!(placed.iter().all(|p| p.1 == 2), "{placed:?}");
}

#[test]
fn a_free_slot_goes_to_a_task_whose_inputs_are_there_before_one_whose_are_not() {
    // Eight 100 MB values, the odd ones on worker 2 and the even ones on worker 3; a task
    // reads each, and all take 0.45 s. When worker 2 has room while 3 is full, the next
    // task in order (reading a value of 3) would start sooner on 2 after a 0.2 s fetch; but
    // the one after it reads a value of 2, and takes that room, so nothing moves.
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(
        (1..=8)
            .map(|k| {
                let on = TaskOptions {
                    workers: vec![Rank(if k % 2 == 1 { 2 } else { 3 })],
                    ..Default::default()
                };
                task_with(k, &[], on)
            })
            .collect(),
    );
    let mut made = env.placements();
    while !made.is_empty() {
        for (key, rank) in made {
            let attempt = env.processing(key).1;
            env.finish_taking(Rank(rank), key, attempt, 100_000_000, 450_000);
        }
        made = env.placements();
    }
    env.submit((11..=18).map(|k| task(k, &[k - 10])).collect());
    let first = env.placements();
    assert_eq!(
        first,
        vec![(11, 2), (12, 3), (13, 2), (14, 3)],
        "beside their inputs, two per worker"
    );
    for key in [11, 13] {
        let attempt = env.processing(key).1;
        env.finish_taking(Rank(2), key, attempt, 8, 450_000);
    }
    let next = env.placements();
    assert_eq!(next, vec![(15, 2), (17, 2)], "none of 3's inputs moves");
    for key in [12, 14] {
        let attempt = env.processing(key).1;
        env.finish_taking(Rank(3), key, attempt, 8, 450_000);
    }
    assert_eq!(env.placements(), vec![(16, 3), (18, 3)]);
}

#[test]
fn long_tasks_queued_behind_others_move_to_an_idle_worker_with_their_inputs() {
    // Worker 2 holds three 60 MB blocks; six products of all three (180 MB, 0.72 s to move
    // with the margin) queue there while their duration is unknown. Once one has run for
    // 0.5 s, worker 3 idles while 2 still has four queued (2 s): moving one pays, although
    // its own run is shorter than the move's margin.
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let pinned = TaskOptions {
        workers: vec![Rank(2)],
        ..Default::default()
    };
    env.submit((1..=3).map(|k| task_with(k, &[], pinned.clone())).collect());
    env.placements();
    for key in 1..=3 {
        let (worker, attempt) = env.processing(key);
        env.finish_taking(worker, key, attempt, 60_000_000, 1_000);
    }
    env.submit((4..=9).map(|k| task(k, &[1, 2, 3])).collect());
    let placed = env.placements();
    assert_eq!(placed.len(), 6, "{placed:?}");
    assert!(
        placed.iter().all(|p| p.1 == 2),
        "beside their inputs: {placed:?}"
    );
    assert!(steal_requests(&mut env).is_empty());
    let (worker, attempt) = env.processing(4);
    env.finish_taking(worker, 4, attempt, 8, 500_000);
    let steals = steal_requests(&mut env);
    assert!(!steals.is_empty(), "worker 3 takes a queued product");
    give_up(&mut env, &steals);
    let moved = env.placements();
    assert!(
        !moved.is_empty() && moved.iter().all(|(_, rank)| *rank == 3),
        "{moved:?}"
    );
}

#[test]
fn allow_other_workers_runs_a_task_pinned_to_no_worker_anywhere() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let loose = |workers: Vec<Rank>| TaskOptions {
        workers,
        allow_other_workers: true,
        ..Default::default()
    };
    // Pinned to ranks that are no workers: anywhere, as Dask does.
    env.submit(vec![task_with(1, &[], loose(vec![Rank(9)]))]);
    assert_eq!(env.placements().len(), 1);
    // Pinned to a worker that exists: there, busy or not.
    env.submit(vec![
        task_with(2, &[], loose(vec![Rank(3)])),
        task_with(3, &[], loose(vec![Rank(3)])),
    ]);
    let placed = env.placements();
    assert!(placed.iter().all(|p| p.1 == 3), "{placed:?}");
    // Without it, a task pinned to no worker fails, naming the pin.
    let strict = TaskOptions {
        workers: vec![Rank(9)],
        ..Default::default()
    };
    env.submit(vec![task_with(4, &[], strict)]);
    assert!(matches!(env.state(4), Some(TaskState::Failed(_))));
}

#[test]
fn a_refused_steal_leaves_the_task_in_place() {
    let mut env = env_with_idle_worker_3();
    let (key, attempt) = steal_requests(&mut env)[0];
    env.send(
        Rank(2),
        ToScheduler::StealReply {
            key,
            attempt,
            stolen: false,
        },
    );
    assert_eq!(
        env.state(key.0),
        Some(TaskState::Processing {
            worker: Rank(2),
            stealing: false
        })
    );
}

#[test]
fn cancel_reaches_dependents_and_the_worker() {
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[1])]);
    env.take_computes();
    env.client(ToScheduler::CancelKeys(vec![Key(1)]));
    let client = env.take_client_messages();
    assert_eq!(client.len(), 2);
    assert!(
        client
            .iter()
            .all(|m| matches!(m, ToClient::KeyCancelled { cause, .. } if cause == "f-1"))
    );
    let cancels = env
        .take_worker_messages()
        .into_iter()
        .filter(|(_, m)| matches!(m, ToWorker::CancelTask { .. }))
        .count();
    assert_eq!(cancels, 2);
}

#[test]
fn restrictions_pick_matching_workers_or_fail_clearly() {
    let mut env = TestEnv::with_resources(&[(2, 1, vec![]), (3, 1, gpu(1.0))]);
    let needs_gpu = TaskOptions {
        resources: gpu(1.0),
        ..Default::default()
    };
    let pinned = TaskOptions {
        workers: vec![Rank(2)],
        ..Default::default()
    };
    env.submit(vec![
        task_with(1, &[], needs_gpu),
        task_with(2, &[], pinned),
        task_with(
            3,
            &[],
            TaskOptions {
                resources: gpu(2.0),
                ..Default::default()
            },
        ),
        task_with(
            4,
            &[],
            TaskOptions {
                workers: vec![Rank(9)],
                ..Default::default()
            },
        ),
    ]);
    let mut placed = env.placements();
    placed.sort();
    assert_eq!(placed, vec![(1, 3), (2, 2)]);
    let errors: Vec<(u64, String)> = env
        .take_client_messages()
        .into_iter()
        .filter_map(|m| match m {
            ToClient::KeyErred { key, message, .. } => Some((key.0, message)),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2);
    let gpu_error = &errors.iter().find(|e| e.0 == 3).unwrap().1;
    assert!(gpu_error.contains("it needs gpu=2"), "{gpu_error}");
    assert!(gpu_error.contains("gpu=1 on rank 3"), "{gpu_error}");
    let pin_error = &errors.iter().find(|e| e.0 == 4).unwrap().1;
    assert!(
        pin_error.contains("pinned to worker rank(s) 9"),
        "{pin_error}"
    );
}

#[test]
fn higher_priority_runs_first_when_slots_are_scarce() {
    let mut env = TestEnv::new(&[(2, 1)]);
    // Teach the scheduler that tasks are long, so the worker queues only one extra task.
    env.submit(vec![task(100, &[])]);
    env.finish(100, 8);
    let low: Vec<TaskSpec> = (1..=4).map(|k| task(k, &[])).collect();
    env.submit(low);
    env.take_computes();
    let high = TaskOptions {
        priority: 10,
        ..Default::default()
    };
    env.submit(vec![task_with(9, &[], high)]);
    assert!(env.placements().is_empty(), "worker is full");
    let first = env.scheduler.processing_on(Rank(2))[0];
    env.finish(first.0, 8);
    assert_eq!(env.placements(), vec![(9, 2)]);
}

#[test]
fn scattered_values_become_dependencies() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.client(ToScheduler::Scatter {
        key: Key(1),
        worker: Rank(3),
        nbytes: 100,
    });
    env.submit(vec![task(2, &[1])]);
    assert_eq!(env.placements(), vec![(2, 3)], "placed beside the value");
    env.finish_as(Rank(3), 1, 0, 100);
    assert!(matches!(
        env.take_client_messages().as_slice(),
        [ToClient::KeyDone {
            key: Key(1),
            worker: Rank(3)
        }]
    ));
}

#[test]
fn a_scatter_report_that_overtakes_the_announcement_is_kept() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    // The worker's report (and the broadcast's replicas) arrive before the client's Scatter.
    env.finish_as(Rank(2), 1, 0, 100);
    env.send(
        Rank(2),
        ToScheduler::Replicated {
            key: Key(1),
            workers: vec![Rank(3)],
        },
    );
    assert!(
        released(&env.take_worker_messages()).is_empty(),
        "nothing released"
    );
    env.client(ToScheduler::Scatter {
        key: Key(1),
        worker: Rank(2),
        nbytes: 100,
    });
    assert!(matches!(
        env.state(1),
        Some(TaskState::Memory { who_has }) if who_has.as_slice() == [Rank(2), Rank(3)]
    ));
    env.submit(vec![task(2, &[1])]);
    assert_eq!(env.placements().len(), 1);
    assert!(released(&env.take_worker_messages()).is_empty());
}

#[test]
fn replicas_are_tracked_and_released() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[])]);
    let (_, holder) = env.placements()[0];
    env.finish(1, 8);
    let other = if holder == 2 { 3 } else { 2 };
    env.send(Rank(other), ToScheduler::AddReplicas(vec![Key(1)]));
    assert!(matches!(
        env.state(1),
        Some(TaskState::Memory { who_has }) if who_has.len() == 2
    ));
    env.release(&[1]);
    let mut expected = vec![(2, 1), (3, 1)];
    expected.sort();
    assert_eq!(released(&env.take_worker_messages()), expected);
}

#[test]
fn copies_fetched_for_tasks_now_finished_are_freed_the_first_and_broadcasts_stay() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    // Value 1 lives on worker 2; tasks 2 and 3, pinned to worker 3, read it there.
    env.submit(vec![task_with(
        1,
        &[],
        TaskOptions {
            workers: vec![Rank(2)],
            ..Default::default()
        },
    )]);
    assert_eq!(env.placements(), vec![(1, 2)]);
    env.finish(1, 1000);
    let on_3 = || TaskOptions {
        workers: vec![Rank(3)],
        ..Default::default()
    };
    env.submit(vec![task_with(2, &[1], on_3()), task_with(3, &[1], on_3())]);
    assert_eq!(env.placements().len(), 2);
    env.send(Rank(3), ToScheduler::AddReplicas(vec![Key(1)]));
    env.finish(2, 8);
    assert!(
        released(&env.take_worker_messages()).is_empty(),
        "task 3 still reads the copy on worker 3"
    );
    env.finish(3, 8);
    assert_eq!(released(&env.take_worker_messages()), vec![(3, 1)]);
    assert!(matches!(
        env.state(1),
        Some(TaskState::Memory { who_has }) if who_has.as_slice() == [Rank(2)]
    ));
    // A broadcast value keeps every copy after its readers finish.
    env.client(ToScheduler::Scatter {
        key: Key(4),
        worker: Rank(2),
        nbytes: 1000,
    });
    env.finish_as(Rank(2), 4, 0, 1000);
    env.send(
        Rank(2),
        ToScheduler::Replicated {
            key: Key(4),
            workers: vec![Rank(3)],
        },
    );
    env.submit(vec![task_with(5, &[4], on_3())]);
    assert_eq!(env.placements().len(), 1);
    env.finish(5, 8);
    assert!(released(&env.take_worker_messages()).is_empty());
    assert!(matches!(
        env.state(4),
        Some(TaskState::Memory { who_has }) if who_has.len() == 2
    ));
}

#[test]
fn shutdown_is_a_two_phase_handshake() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.client(ToScheduler::ClientDone { code: 3 });
    let stops = env
        .take_worker_messages()
        .into_iter()
        .filter(|(_, m)| *m == ToWorker::Stop)
        .count();
    assert_eq!(stops, 2);
    assert_eq!(env.take_client_messages(), vec![ToClient::Stop]);
    env.send(Rank(2), ToScheduler::Quiesced);
    env.send(Rank::CLIENT, ToScheduler::Quiesced);
    assert_eq!(env.scheduler.exit_code(), None);
    env.send(Rank(3), ToScheduler::Quiesced);
    assert_eq!(env.scheduler.exit_code(), Some(3));
    let exits = env
        .take_worker_messages()
        .into_iter()
        .filter(|(_, m)| *m == ToWorker::Exit { code: 3 })
        .count();
    assert_eq!(exits, 2);
    assert_eq!(env.take_client_messages(), vec![ToClient::Exit { code: 3 }]);
}

#[test]
fn a_shutdown_past_its_deadline_aborts() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.client(ToScheduler::ClientDone { code: 0 });
    env.send(Rank(2), ToScheduler::Quiesced);
    env.send(Rank::CLIENT, ToScheduler::Quiesced);
    env.advance(Duration::from_secs(6));
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::ShutdownTimeout.code());
    assert!(message.contains("rank(s) 3 did not finish"), "{message}");
}

#[test]
fn a_silent_worker_is_declared_lost() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    for _ in 0..35 {
        env.send(Rank(2), ToScheduler::Heartbeat);
        env.advance(Duration::from_secs(1));
    }
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::WorkerLost.code());
    assert!(message.contains("worker rank 3"), "{message}");
}

#[test]
fn a_node_whose_workers_all_went_silent_is_named() {
    let mut env = TestEnv::unjoined(&[2, 3, 4, 5]);
    for (rank, host) in [(2, "node1"), (3, "node1"), (4, "node2"), (5, "node2")] {
        env.hello_on(rank, 1, vec![], host);
    }
    for _ in 0..35 {
        env.send(Rank(2), ToScheduler::Heartbeat);
        env.send(Rank(3), ToScheduler::Heartbeat);
        env.advance(Duration::from_secs(1));
    }
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::WorkerLost.code());
    assert!(
        message.starts_with("workers rank 4, rank 5 sent nothing for 3")
            && message.ends_with(
                "presumed lost; every worker on node2 is silent: that node or its network is \
                 presumed down"
            ),
        "{message}"
    );
}

#[test]
fn workers_of_one_node_silent_a_heartbeat_apart_are_named_together() {
    let mut env = TestEnv::unjoined(&[2, 3, 4, 5]);
    for (rank, host) in [(2, "node1"), (3, "node2"), (4, "node2"), (5, "node2")] {
        env.hello_on(rank, 1, vec![], host);
    }
    // node2 is lost: rank 3 last heard from at 0 s, rank 4 at 0.5 s, rank 5 at 1.5 s.
    let step = Duration::from_millis(100);
    for tenth in 0..400 {
        env.send(Rank(2), ToScheduler::Heartbeat);
        if tenth < 5 {
            env.send(Rank(4), ToScheduler::Heartbeat);
        }
        if tenth < 15 {
            env.send(Rank(5), ToScheduler::Heartbeat);
        }
        env.advance(step);
        if env.aborted.is_some() {
            break;
        }
    }
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::WorkerLost.code());
    assert!(
        message.starts_with("workers rank 3, rank 4, rank 5 sent nothing for")
            && message.ends_with(
                "every worker on node2 is silent: that node or its network is presumed down"
            ),
        "{message}"
    );
}

#[test]
fn a_worker_heard_from_again_releases_the_verdict() {
    let mut env = TestEnv::unjoined(&[2, 3, 4]);
    for (rank, host) in [(2, "node1"), (3, "node2"), (4, "node2")] {
        env.hello_on(rank, 1, vec![], host);
    }
    // Rank 3 is silent from the start; rank 4 last spoke at 0.5 s, nearly timed out when
    // rank 3 times out, and speaks again at 30.3 s: rank 3 alone is lost, at once.
    let step = Duration::from_millis(100);
    let mut tenth = 0;
    while env.aborted.is_none() && tenth < 400 {
        env.send(Rank(2), ToScheduler::Heartbeat);
        if tenth == 5 || tenth == 303 {
            env.send(Rank(4), ToScheduler::Heartbeat);
        }
        env.advance(step);
        tenth += 1;
    }
    let (_, message) = env.aborted.clone().expect("aborted");
    assert!(
        message.starts_with("worker rank 3 sent nothing for 30 s")
            && message.ends_with("(on node2)"),
        "{message}"
    );
    assert!(
        (301..=305).contains(&tenth),
        "verdict after {tenth} tenths of a second"
    );
}

#[test]
fn a_scheduler_that_did_not_run_does_not_blame_the_workers() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    // The scheduler process was stopped for longer than the worker timeout.
    env.advance(Duration::from_secs(100));
    assert!(env.aborted.is_none(), "{:?}", env.aborted);
    env.send(Rank(2), ToScheduler::Heartbeat);
    for _ in 0..35 {
        env.send(Rank(2), ToScheduler::Heartbeat);
        env.advance(Duration::from_secs(1));
    }
    let (_, message) = env
        .aborted
        .clone()
        .expect("rank 3 stayed silent after the gap");
    assert!(message.contains("worker rank 3"), "{message}");
}

#[test]
fn info_waits_for_all_workers() {
    let mut env = TestEnv::unjoined(&[2, 3]);
    env.client(ToScheduler::InfoRequest);
    env.hello(2, 4, vec![]);
    assert!(env.take_client_messages().is_empty());
    env.hello(3, 2, gpu(1.0));
    match env.take_client_messages().as_slice() {
        [ToClient::Info(info)] => {
            assert_eq!(info.workers.len(), 2);
            assert_eq!(info.workers[1].hello.resources, gpu(1.0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_tasks_flow_through_deep_queues() {
    let mut env = TestEnv::new(&[(2, 2), (3, 2)]);
    env.submit((0..2000).map(|k| task(k, &[])).collect());
    let mut done = 0;
    loop {
        let computes = env.take_computes();
        if computes.is_empty() {
            break;
        }
        for (rank, c) in computes {
            env.send(
                rank,
                ToScheduler::TaskFinished {
                    key: c.key,
                    attempt: c.attempt,
                    nbytes: 8,
                    run: None,
                },
            );
            done += 1;
        }
    }
    assert_eq!(done, 2000);
    env.release(&(0..2000).collect::<Vec<_>>());
    assert_eq!(env.scheduler.task_count(), 0);
}

#[test]
fn a_chain_longer_than_the_slots_keeps_running_on_one_worker() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    // Long tasks: one queued task per thread, so two slots per worker.
    env.submit(vec![task(1000, &[])]);
    env.finish(1000, 8);
    env.take_computes();
    let chain: Vec<TaskSpec> = (1..=10u64)
        .map(|k| {
            let deps: Vec<u64> = if k == 1 { vec![] } else { vec![k - 1] };
            task(k, &deps)
        })
        .collect();
    env.submit(chain);
    let mut placed = env.placements();
    assert_eq!(placed.len(), 2, "as many links as slots: {placed:?}");
    let worker = placed[0].1;
    for k in 1..=10u64 {
        env.finish(k, 8);
        placed.extend(env.placements());
    }
    assert_eq!(placed.len(), 10);
    assert!(placed.iter().all(|(_, rank)| *rank == worker), "{placed:?}");
}

#[test]
fn a_task_calling_an_unregistered_function_ends_the_job_with_exit_8() {
    let mut env = TestEnv::new(&[(2, 1)]);
    let mut forged = task(1, &[]);
    forged.uses = vec![FnId(0), FnId(999)];
    env.submit(vec![forged]);
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::Internal.code());
    assert_eq!(
        message,
        "rank 0 received from rank 1 task #1 calling function id 999, which was never \
         registered; aborting the job"
    );
    assert!(env.take_computes().is_empty(), "nothing was placed");
}

#[test]
fn registrations_that_fail_their_check_end_the_job_with_exit_8() {
    let mut env = TestEnv::new(&[(2, 1)]);
    let mut forged = registration();
    forged.id = FnId(1);
    forged.offset += 64;
    env.client(ToScheduler::RegisterFunction(forged));
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::Internal.code());
    assert!(
        message.starts_with("rank 0 received from rank 1 a registration of function id 1"),
        "{message}"
    );
    assert!(message.contains("check word"), "{message}");
    assert!(env.take_worker_messages().is_empty(), "not forwarded");
}

#[test]
fn messages_from_ranks_that_may_not_send_them_end_the_job_with_exit_8() {
    // A worker submitting tasks under the client's keys, the client reporting a result.
    let mut env = TestEnv::new(&[(2, 1)]);
    env.send(Rank(2), ToScheduler::Submit(vec![task(1, &[])]));
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::Internal.code());
    assert!(
        message.starts_with("rank 0 received from rank 2 a request about #1, which it did not"),
        "{message}"
    );
    let mut env = TestEnv::new(&[(2, 1)]);
    env.client(ToScheduler::TaskFinished {
        key: Key(1),
        attempt: 1,
        nbytes: 1,
        run: None,
    });
    assert_eq!(
        env.aborted.clone().expect("aborted").0,
        ExitCode::Internal.code()
    );
}

#[test]
fn task_clients_submit_under_their_own_keys_and_hear_back_on_their_worker() {
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit(vec![task(1, &[])]);
    assert_eq!(env.placements(), vec![(1, 2)]);
    let (_, attempt) = env.processing(1);
    // The task on rank 2 submits eight tasks through its task client.
    let base = Key::task_client_base(Rank(2)).expect("a small rank");
    let children: Vec<u64> = (1..=8).map(|i| base + i).collect();
    env.send(
        Rank(2),
        ToScheduler::Submit(children.iter().map(|k| task(*k, &[])).collect()),
    );
    let before = env.placements().len();
    assert!(
        before < 8,
        "the worker's one thread is busy: {before} placed"
    );
    // It waits for them, giving its thread back: the worker has room for more.
    env.send(
        Rank(2),
        ToScheduler::Seceded {
            key: Key(1),
            attempt,
            waiting: true,
        },
    );
    let after = env.placements().len();
    assert!(after > 0, "a seceded task's thread takes another task");
    // Their outcomes go to the task client's worker, not to the client.
    let first = children[0];
    env.finish(first, 8);
    assert!(env.take_client_messages().is_empty());
    let to_worker = env.take_worker_messages();
    assert!(
        to_worker.iter().any(|(rank, m)| *rank == Rank(2)
            && matches!(m, ToWorker::ForClient(ToClient::KeyDone { key, worker })
                if key.0 == first && *worker == Rank(2))),
        "{to_worker:?}"
    );
    // The task client releases its own keys; another rank's are refused.
    env.send(Rank(2), ToScheduler::ReleaseKeys(vec![Key(first)]));
    assert!(env.aborted.is_none());
    env.send(Rank(2), ToScheduler::CancelKeys(vec![Key(1)]));
    let (code, message) = env.aborted.clone().expect("aborted");
    assert_eq!(code, ExitCode::Internal.code());
    assert!(
        message.contains("about #1, which it did not make"),
        "{message}"
    );
    // Functions: a worker registers only in its own range.
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    let mut registry =
        crate::task::Registry::with_base(JOB_KEY, FnId::task_client_base(Rank(3)).unwrap());
    let trampoline: crate::task::Trampoline = test_function;
    let (_, registration) = registry.id_of(trampoline, || "g".into());
    env.send(
        Rank(2),
        ToScheduler::RegisterFunction(registration.unwrap()),
    );
    let (_, message) = env.aborted.clone().expect("aborted");
    assert!(message.contains("which it did not make"), "{message}");
}

#[test]
fn a_task_s_own_calls_go_to_its_worker_unless_that_one_is_busier_by_more_than_their_way_back() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[])]);
    assert_eq!(env.placements(), vec![(1, 2)]);
    let (_, attempt) = env.processing(1);
    env.send(
        Rank(2),
        ToScheduler::Seceded {
            key: Key(1),
            attempt,
            waiting: true,
        },
    );
    let base = Key::task_client_base(Rank(2)).expect("a small rank");
    // Rank 3 holds nothing and rank 2 a task that waits: both would start a task as soon
    // (the waiting task holds no thread), and the call goes where it is awaited.
    env.send(Rank(2), ToScheduler::Submit(vec![task(base + 1, &[])]));
    assert_eq!(env.placements(), vec![(base + 1, 2)]);
    // Now rank 2 has a task queued that rank 3 has not: the next call goes there.
    env.send(Rank(2), ToScheduler::Submit(vec![task(base + 2, &[])]));
    assert_eq!(env.placements(), vec![(base + 2, 3)]);
    // A call from the program's client has no such worker: the least loaded.
    env.submit(vec![task(2, &[])]);
    assert_eq!(env.placements().len(), 1);
}

mod mpi_tasks;
mod replicas;
mod simulation;
mod task_stream;

/// Random graphs, worker counts, completion orders, failures, retries and steal answers:
/// every wanted key ends with exactly one answer to the client, no key is accepted twice,
/// and the graph always finishes (with the invariant check after every step).
mod random_graphs {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};

    #[derive(Debug, Clone)]
    struct Plan {
        workers: Vec<u32>,
        /// Per task: dependencies (earlier tasks), retries, failures before success, pin.
        tasks: Vec<(Vec<u64>, u32, u32, Option<u32>)>,
        batches: Vec<usize>,
        choices: Vec<u32>,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (1usize..4, 1usize..40)
            .prop_flat_map(|(nworkers, ntasks)| {
                let workers = prop::collection::vec(1u32..3, nworkers);
                let tasks = prop::collection::vec(
                    (
                        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                        0u32..3,
                        0u32..3,
                        prop::option::weighted(0.1, 0u32..4),
                    ),
                    ntasks,
                );
                let batches = prop::collection::vec(1usize..10, 1..6);
                let choices = prop::collection::vec(any::<u32>(), 400);
                (workers, tasks, batches, choices)
            })
            .prop_map(|(workers, raw, batches, choices)| {
                let nworkers = workers.len() as u32;
                let tasks = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (deps, retries, failures, pin))| {
                        let deps = earlier_deps(i, &deps);
                        (deps, retries, failures, pin.map(|p| 2 + p % nworkers))
                    })
                    .collect();
                Plan {
                    workers,
                    tasks,
                    batches,
                    choices,
                }
            })
    }

    fn run(plan: Plan) {
        let workers: Vec<(u32, u32)> = plan
            .workers
            .iter()
            .enumerate()
            .map(|(i, &t)| (2 + i as u32, t))
            .collect();
        let mut env = TestEnv::new(&workers);
        let n = plan.tasks.len() as u64;
        let mut failures_left: BTreeMap<u64, u32> = BTreeMap::new();
        let mut specs = Vec::new();
        for (i, (deps, retries, failures, pin)) in plan.tasks.iter().enumerate() {
            let key = 1 + i as u64;
            failures_left.insert(key, *failures);
            let options = TaskOptions {
                retries: *retries,
                workers: pin.map(|p| vec![Rank(p)]).unwrap_or_default(),
                ..Default::default()
            };
            specs.push(task_with(key, deps, options));
        }
        // Submit in batches.
        let mut rest = specs;
        let mut sizes = plan.batches.iter().cycle();
        while !rest.is_empty() {
            let take = (*sizes.next().unwrap()).min(rest.len());
            env.submit(rest.drain(..take).collect());
        }
        // Worker view: what each worker was told to run (key -> attempt).
        let mut assigned: BTreeMap<u64, (Rank, Attempt)> = BTreeMap::new();
        let mut done_keys: HashSet<u64> = HashSet::new();
        let mut answers: BTreeMap<u64, usize> = BTreeMap::new();
        let mut choices = plan.choices.iter().cycle();
        for _step in 0..10_000 {
            let messages = env.take_worker_messages();
            let quiet = messages.is_empty();
            for (rank, message) in messages {
                match message {
                    ToWorker::Compute(c) => {
                        assigned.insert(c.key.0, (rank, c.attempt));
                    }
                    ToWorker::CancelTask { key, attempt }
                        if assigned.get(&key.0) == Some(&(rank, attempt)) =>
                    {
                        assigned.remove(&key.0);
                    }
                    ToWorker::Steal { key, attempt } => {
                        let stolen = assigned.get(&key.0) == Some(&(rank, attempt))
                            && choices.next().unwrap().is_multiple_of(2);
                        if stolen {
                            assigned.remove(&key.0);
                        }
                        env.send(
                            rank,
                            ToScheduler::StealReply {
                                key,
                                attempt,
                                stolen,
                            },
                        );
                    }
                    _ => {}
                }
            }
            for key in env.take_client_messages().iter().filter_map(answered) {
                *answers.entry(key).or_insert(0) += 1;
            }
            // Runnable: assigned tasks whose dependencies all have values.
            let runnable: Vec<u64> = assigned
                .keys()
                .copied()
                .filter(|k| {
                    plan.tasks[(*k - 1) as usize]
                        .0
                        .iter()
                        .all(|d| done_keys.contains(d))
                })
                .collect();
            if runnable.is_empty() {
                // Replies sent above (a steal) may have produced placements: stop only
                // when nothing is runnable and the scheduler said nothing.
                if quiet {
                    break;
                }
                continue;
            }
            let key = runnable[*choices.next().unwrap() as usize % runnable.len()];
            let (rank, attempt) = assigned.remove(&key).unwrap();
            let left = failures_left.get_mut(&key).unwrap();
            if *left > 0 {
                *left -= 1;
                env.send(
                    rank,
                    ToScheduler::TaskFailed {
                        key: Key(key),
                        attempt,
                        message: "planned".into(),
                        run: TaskRun::default(),
                    },
                );
            } else {
                assert!(done_keys.insert(key), "key {key} computed twice");
                env.send(
                    rank,
                    ToScheduler::TaskFinished {
                        key: Key(key),
                        attempt,
                        nbytes: 8,
                        run: None,
                    },
                );
            }
        }
        for key in env.take_client_messages().iter().filter_map(answered) {
            *answers.entry(key).or_insert(0) += 1;
        }
        assert!(assigned.is_empty(), "tasks left hanging: {assigned:?}");
        for key in 1..=n {
            assert_eq!(
                answers.get(&key),
                Some(&1),
                "key {key} answered {:?} times",
                answers.get(&key)
            );
            let state = env.state(key).expect("wanted keys are kept");
            assert!(state.is_final(), "key {key} ended {state:?}");
        }
        // Releasing everything empties the scheduler.
        env.release(&(1..=n).collect::<Vec<_>>());
        assert_eq!(env.scheduler.task_count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn graphs_always_finish_with_each_key_answered_once(plan in plan()) {
            run(plan);
        }
    }
}

#[test]
fn a_stall_is_reported_naming_what_the_tasks_wait_for() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[]), task(3, &[1, 2])]);
    let pass = |env: &mut TestEnv, seconds: u64| {
        // Workers stay alive (heartbeats) but task 1 never finishes.
        for _ in 0..seconds / 10 {
            env.send(Rank(2), ToScheduler::Heartbeat);
            env.send(Rank(3), ToScheduler::Heartbeat);
            env.now += Duration::from_secs(10);
        }
        env.scheduler.check_stall(env.now)
    };
    assert_eq!(pass(&mut env, 50), None, "not yet: 50 s < 60 s");
    let warning = pass(&mut env, 20).expect("a warning after 70 s");
    let where_1 = env.processing(1).0;
    assert!(
        warning.contains("no task finished in the last 70 s")
            && warning.contains("3 tasks are pending")
            && warning.contains(&format!("{where_1}: f-1"))
            && warning.contains("1 waiting for inputs (e.g. f-3 waits for f-1, f-2)"),
        "{warning}"
    );
    assert_eq!(pass(&mut env, 10), None, "repeated only every 60 s");
    assert!(pass(&mut env, 50).is_some(), "repeated after 60 s");
    env.finish(1, 8);
    env.finish(2, 8);
    env.finish(3, 8);
    assert_eq!(pass(&mut env, 200), None, "nothing pending, nothing to say");
    assert!(env.aborted.is_none());
}

#[test]
fn a_task_takes_an_input_only_it_will_ever_read() {
    // Whether task `reader` was told it may take `input`: placed with it in `consume`, or
    // told after (`LastRead`).
    fn may_take(messages: &[(Rank, ToWorker)], reader: u64, input: u64) -> bool {
        messages.iter().any(|(_, m)| match m {
            ToWorker::Compute(c) => c.key == Key(reader) && c.consume.contains(&Key(input)),
            ToWorker::LastRead { key, input: i, .. } => *key == Key(reader) && *i == Key(input),
            _ => false,
        })
    }
    let mut env = TestEnv::new(&[(2, 1)]);
    // 2 reads 1, which the client lets go of once 2 is submitted (as `map` over futures
    // does): 2 may take it, whether placed before 1 finished or after.
    env.submit(vec![task(1, &[])]);
    env.submit(vec![task(2, &[1])]);
    env.release(&[1]);
    env.finish(1, 100);
    let messages = env.take_worker_messages();
    assert!(may_take(&messages, 2, 1), "{messages:?}");
    // 3 and 4 both read 2: neither takes it until the other is done.
    env.submit(vec![task(3, &[2]), task(4, &[2])]);
    env.release(&[2]);
    env.finish(2, 100);
    let messages = env.take_worker_messages();
    assert!(
        !may_take(&messages, 3, 2) && !may_take(&messages, 4, 2),
        "{messages:?}"
    );
    let (first, second) = match env.state(3) {
        Some(TaskState::Processing { .. }) => (3, 4),
        _ => (4, 3),
    };
    env.finish(first, 100);
    let messages = env.take_worker_messages();
    assert!(may_take(&messages, second, 2), "{messages:?}");
    env.finish(second, 100);
    // A reader that may be retried leaves its input where it is.
    let retried = TaskOptions {
        retries: 1,
        ..Default::default()
    };
    env.submit(vec![task(5, &[]), task_with(6, &[5], retried)]);
    env.release(&[5]);
    env.finish(5, 100);
    let messages = env.take_worker_messages();
    assert!(!may_take(&messages, 6, 5), "{messages:?}");
    // Nor does one whose input the client still holds.
    env.finish(6, 100);
    env.submit(vec![task(7, &[]), task(8, &[7])]);
    env.finish(7, 100);
    let messages = env.take_worker_messages();
    assert!(!may_take(&messages, 8, 7), "{messages:?}");
}

#[test]
fn the_first_reader_of_a_computed_value_runs_before_tasks_submitted_before_it() {
    // `map(g, map(f, items))` where the first `f`s end before the `g`s are submitted:
    // their `g`s still run before the `f`s still to come, and free their values.
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit((1..=12).map(|k| task(k, &[])).collect());
    let mut order = Vec::new();
    for (key, _) in env.placements() {
        order.push(key);
        env.finish(key, 8);
    }
    assert_eq!(order, vec![1, 2, 3, 4, 5]);
    // 21 and 22 are the first readers of values done; 23 reads a value 22 reads too.
    env.submit(vec![task(21, &[1]), task(22, &[2]), task(23, &[2])]);
    let mut placed = env.placements();
    while !placed.is_empty() {
        for (key, _) in placed {
            order.push(key);
            env.finish(key, 8);
        }
        placed = env.placements();
    }
    let at = |key: u64| order.iter().position(|k| *k == key).expect("placed");
    for first in [21, 22] {
        assert!(at(first) < at(11), "{first} before 11: {order:?}");
    }
    assert!(at(12) < at(23), "{order:?}");
    assert_eq!(order.len(), 15);
}

#[test]
fn the_next_link_of_a_chain_runs_before_tasks_submitted_after_its_first() {
    // `map(g, map(f, items))` on one worker of one thread: each `g` runs as soon as its
    // `f` is done (and frees its value), not after every `f`.
    let mut env = TestEnv::new(&[(2, 1)]);
    env.submit((1..=6).map(|k| task(k, &[])).collect());
    env.submit((11..=16).map(|k| task(k, &[k - 10])).collect());
    // A task reading a value already computed keeps its own place: after the others.
    let mut order = Vec::new();
    let mut placed = env.placements();
    while !placed.is_empty() {
        for (key, _) in placed {
            order.push(key);
            env.finish(key, 8);
            if key == 1 {
                env.submit(vec![task(21, &[1])]);
            }
        }
        placed = env.placements();
    }
    // The worker takes five tasks at a time (f1 to f5); then the `g`s of those, ready as
    // each `f` ends, go before f6, which was ready all along; the task reading f1's value
    // after it was done goes after f6.
    let at = |key: u64| order.iter().position(|k| *k == key).expect("placed");
    assert_eq!(&order[..5], &[1, 2, 3, 4, 5], "{order:?}");
    for k in 11..=15 {
        assert!(at(k) < at(6), "{k} before 6: {order:?}");
    }
    assert!(at(6) < at(21), "{order:?}");
    assert_eq!(order.len(), 13);
}
