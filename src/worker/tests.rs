//! Tests of the worker node with a real executor: messages in, and everything it sends
//! round-tripped through the local transport and the wire encoding.

use super::client_reads::UNREAD_GRACE;
use super::executor::{Executor, TaskOutcome};
use super::{WorkerEvent, WorkerNode};
use crate::node::{Node, NodeStatus, event_channel};
use crate::protocol::{
    ArgSlot, Attempt, Bytes, ComputeMsg, FnId, Key, Payload, Rank, TaskCode, ToClient, ToScheduler,
    ToWorker, WorkerHello, decode_frame_with, decode_value, encode_value,
};
use crate::task::{self, CallError, FnPointer, Registry, TaskFn, TaskInput, Trampoline};
use crate::transport::local::LocalTransport;
use crate::transport::{Outbox, Transport};
use crossbeam_channel::Receiver;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ME: Rank = Rank(2);
const PEER: Rank = Rank(3);

fn double(x: u64) -> u64 {
    2 * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn refuse(x: u64) -> u64 {
    panic!("no {x}");
}

const JOB_KEY: u64 = 0xfeed;

/// The task functions of these tests, registered in this order (ids 0, 1, ...) by every
/// test worker.
fn functions() -> Vec<Trampoline> {
    vec![
        of(double),
        of(add),
        of(nap),
        of(refuse),
        calls_its_use,
        of(total),
        of(total_of_two),
    ]
}

fn total(xs: Vec<u64>) -> u64 {
    xs.into_iter().sum()
}

fn total_of_two(a: Vec<u64>, b: Vec<u64>) -> u64 {
    a.into_iter().chain(b).sum()
}

type Small = fn(u32) -> u32;
crate::task::fn_pointer!(Small);

/// A task that calls the first function it uses as a `fn(u32) -> u32`.
fn calls_its_use(input: &TaskInput<'_>) -> Result<Bytes, CallError> {
    let f: Small = input.used(0)?;
    task::encode_result(&f(1))
}

fn of<F: TaskFn<Args>, Args: DeserializeOwned + 'static>(_f: F) -> Trampoline
where
    F::Output: Serialize + 'static,
{
    task::trampoline_of::<F, Args>()
}

fn func_of<F: TaskFn<Args>, Args: DeserializeOwned + 'static>(f: F) -> FnId
where
    F::Output: Serialize + 'static,
{
    let trampoline = of(f);
    let index = functions()
        .iter()
        .position(|t| t.address() == trampoline.address())
        .expect("a function of these tests");
    FnId(index as u32)
}

fn value<T: Serialize>(v: T) -> ArgSlot {
    ArgSlot::Value(encode_value(&v).unwrap())
}

fn compute(key: u64, func: FnId, args: Vec<ArgSlot>, deps: Vec<(Key, Rank)>) -> ToWorker {
    placement(key, 1, func, args, deps)
}

/// [`compute`] for placement number `attempt`.
fn placement(
    key: u64,
    attempt: Attempt,
    func: FnId,
    args: Vec<ArgSlot>,
    deps: Vec<(Key, Rank)>,
) -> ToWorker {
    ToWorker::Compute(ComputeMsg {
        key: Key(key),
        attempt,
        code: Arc::new(TaskCode {
            func,
            uses: Box::new([]),
            args: args.into(),
            checkpoint: None,
        }),
        deps,
        consume: Vec::new(),
        priority: 0,
        resources: vec![],
        group: vec![],
    })
}

struct WorkerEnv {
    node: WorkerNode,
    outcomes: Receiver<TaskOutcome>,
    mesh: Vec<LocalTransport>,
    out: Outbox,
}

impl WorkerEnv {
    fn new(nthreads: usize) -> Self {
        let (sender, outcomes) = event_channel();
        let executor = Executor::new(ME, nthreads, vec![], move |o| sender.send(o), || {}).unwrap();
        let hello = WorkerHello {
            nthreads: nthreads as u32,
            resources: vec![],
            host: "test".into(),
            pid: 1,
            memory_limit: None,
            memory_limit_source: String::new(),
            mpi_group: false,
        };
        let mut env = WorkerEnv {
            node: WorkerNode::new(ME, hello, executor, JOB_KEY)
                .with_workers(vec![ME, PEER], vec![ME, PEER]),
            outcomes,
            mesh: LocalTransport::mesh(4),
            out: Outbox::new(),
        };
        env.node.on_start(&mut env.out);
        assert!(matches!(
            env.sent_to_scheduler().as_slice(),
            [ToScheduler::WorkerHello(_)]
        ));
        let mut registry = Registry::new(JOB_KEY);
        for (i, trampoline) in functions().into_iter().enumerate() {
            let (id, registration) = registry.id_of(trampoline, || format!("f{i}"));
            assert_eq!(id, FnId(i as u32));
            env.send(
                Rank::SCHEDULER,
                ToWorker::RegisterFunction(registration.expect("new")),
            );
        }
        assert_eq!(env.node.status(), NodeStatus::Running);
        env
    }

    fn send(&mut self, from: Rank, message: ToWorker) {
        self.node
            .on_message(from, message, &mut self.out, Instant::now());
    }

    /// Handles the next task outcome.
    fn next_outcome(&mut self) {
        let outcome = self
            .outcomes
            .recv_timeout(Duration::from_secs(10))
            .expect("a task outcome");
        self.node
            .on_event(WorkerEvent::Task(outcome), &mut self.out, Instant::now());
    }

    fn received<M: DeserializeOwned>(&mut self, rank: Rank) -> Vec<M> {
        self.out.flush(&mut self.mesh[ME.index()], None).unwrap();
        let mut frames = Vec::new();
        self.mesh[rank.index()].receive(&mut frames).unwrap();
        frames
            .iter()
            .flat_map(|incoming| {
                assert_eq!(incoming.from, ME);
                decode_frame_with::<M>(&incoming.frame, incoming.attachments.clone()).unwrap()
            })
            .collect()
    }

    fn sent_to_scheduler(&mut self) -> Vec<ToScheduler> {
        self.received(Rank::SCHEDULER)
    }

    fn finished(&mut self) -> Vec<u64> {
        self.sent_to_scheduler()
            .into_iter()
            .filter_map(|m| match m {
                ToScheduler::TaskFinished { key, .. } => Some(key.0),
                _ => None,
            })
            .collect()
    }

    /// Asserts that the scheduler was told task `key` finished under `attempt`.
    fn assert_finished_as(&mut self, key: u64, attempt: Attempt) {
        let messages = self.sent_to_scheduler();
        assert!(
            messages.iter().any(|m| matches!(
                m,
                ToScheduler::TaskFinished { key: k, attempt: a, .. } if k.0 == key && *a == attempt
            )),
            "no TaskFinished for {key} attempt {attempt}: {messages:?}"
        );
    }

    fn value_of<T: DeserializeOwned>(&mut self, key: u64) -> T {
        self.send(Rank::CLIENT, ToWorker::GetData(vec![Key(key)]));
        match self.received::<ToClient>(Rank::CLIENT).as_slice() {
            [ToClient::Data { key: k, bytes }] if k.0 == key => decode_value(bytes).unwrap(),
            other => panic!("expected the value of {key}, got {other:?}"),
        }
    }
}

#[test]
fn a_worker_over_its_pause_threshold_holds_tasks_until_memory_frees() {
    let mut env = WorkerEnv::new(1);
    let policy = super::store::SpillPolicy {
        threshold: None, // spilling off: only releases free memory
        local_directory: std::env::temp_dir(),
        rank: ME.0,
    };
    let node = std::mem::replace(&mut env.node, WorkerEnv::new(1).node);
    env.node = node.with_memory_policy(policy, Some(1000), None);
    // A 2 kB scattered value puts the worker over 1 kB: it pauses.
    env.send(
        Rank::CLIENT,
        ToWorker::ScatterData {
            key: Key(1),
            bytes: Arc::new(vec![0; 2000].into()),
        },
    );
    env.send(
        Rank::SCHEDULER,
        compute(2, func_of(double), vec![value(21u64)], vec![]),
    );
    assert!(
        env.outcomes
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "no task starts while paused"
    );
    // Releasing the value resumes the worker and the held task runs.
    env.send(Rank::SCHEDULER, ToWorker::ReleaseKeys(vec![Key(1)]));
    env.node.on_tick(&mut env.out, Instant::now());
    env.next_outcome();
    assert_eq!(env.finished(), vec![1, 2]);
}

#[test]
fn the_client_is_told_its_large_values_arrived_once_read_or_unread_for_a_while() {
    let mut env = WorkerEnv::new(1);
    // 10 000 values of 9 bytes each, encoded: above `ATTACH_BYTES`.
    let large = || Arc::new(encode_value(&vec![1u64 << 40; 10_000]).unwrap().into());
    let scatter = |key: u64| ToWorker::ScatterData {
        key: Key(key),
        bytes: large(),
    };
    env.send(Rank::CLIENT, scatter(1));
    env.send(Rank::CLIENT, scatter(2));
    // A small value is not paced, and one from another worker (a task client's) is not
    // the program's to pace.
    env.send(
        Rank::CLIENT,
        ToWorker::ScatterData {
            key: Key(3),
            bytes: Arc::new(vec![7; 100].into()),
        },
    );
    env.send(PEER, scatter(4));
    // Unread and just arrived: not told.
    env.node.on_batch_end(&mut env.out, Instant::now());
    assert!(env.received::<ToClient>(Rank::CLIENT).is_empty());
    // A task reads one: told at the end of the round.
    env.send(
        Rank::SCHEDULER,
        compute(10, func_of(total), vec![ArgSlot::Future(Key(1))], vec![]),
    );
    env.node.on_batch_end(&mut env.out, Instant::now());
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::Received(vec![Key(1)])]
    );
    env.next_outcome();
    assert_eq!(env.value_of::<u64>(10), 10_000 << 40);
    // The other, unread for the grace period: told too.
    let later = Instant::now() + UNREAD_GRACE;
    env.node.on_tick(&mut env.out, later);
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::Received(vec![Key(2)])]
    );
    // One task runs and two wait for the thread: a backlog, so the client is not told,
    // however long the value waits.
    for key in 11..14 {
        env.send(
            Rank::SCHEDULER,
            compute(key, func_of(nap), vec![value(200u64)], vec![]),
        );
    }
    env.send(Rank::CLIENT, scatter(5));
    env.node.on_batch_end(&mut env.out, Instant::now());
    env.node
        .on_tick(&mut env.out, Instant::now() + UNREAD_GRACE);
    assert!(env.received::<ToClient>(Rank::CLIENT).is_empty());
    // The first task ends: one waits, no backlog any more (once its thread has taken the
    // next, which it does after reporting the first).
    env.next_outcome();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.node.executor.queued() > 1 {
        assert!(Instant::now() < deadline, "the thread takes the next task");
        std::thread::sleep(Duration::from_millis(1));
    }
    env.node
        .on_tick(&mut env.out, Instant::now() + UNREAD_GRACE);
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::Received(vec![Key(5)])]
    );
    // A value released unread is gone: told at once.
    env.send(Rank::CLIENT, scatter(6));
    env.send(Rank::SCHEDULER, ToWorker::ReleaseKeys(vec![Key(6)]));
    env.node.on_batch_end(&mut env.out, Instant::now());
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::Received(vec![Key(6)])]
    );
    env.next_outcome();
    env.next_outcome();
}

#[test]
fn a_task_runs_and_its_value_is_served() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(double), vec![value(21u64)], vec![]),
    );
    env.next_outcome();
    assert_eq!(env.finished(), vec![1]);
    assert_eq!(env.value_of::<u64>(1), 42);
    env.send(Rank::CLIENT, ToWorker::GetData(vec![Key(9)]));
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::DataMissing(Key(9))]
    );
}

#[test]
fn missing_inputs_are_fetched_from_their_holder() {
    let mut env = WorkerEnv::new(1);
    let args = vec![ArgSlot::Future(Key(5)), value(1u64)];
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(add), args, vec![(Key(5), PEER)]),
    );
    assert_eq!(
        env.received::<ToWorker>(PEER),
        vec![ToWorker::GetData(vec![Key(5)])]
    );
    let bytes = Arc::new(encode_value(&41u64).unwrap().into());
    env.send(PEER, ToWorker::Data { key: Key(5), bytes });
    env.next_outcome();
    let messages = env.sent_to_scheduler();
    assert!(messages.contains(&ToScheduler::AddReplicas(vec![Key(5)])));
    assert!(matches!(
        messages.last(),
        Some(ToScheduler::TaskFinished { key: Key(1), .. })
    ));
    assert_eq!(env.value_of::<u64>(1), 42);
}

/// The sequence that once ended a benchmark with "an input of task #6001 was released": a
/// task stolen while it fetches its inputs and placed here again must wait for all of them
/// under its new attempt, not count an arrival twice (once for the attempt taken back).
#[test]
fn a_task_stolen_while_fetching_and_placed_back_waits_for_every_input() {
    let mut env = WorkerEnv::new(1);
    let args = vec![ArgSlot::Future(Key(5)), ArgSlot::Future(Key(6))];
    let deps = vec![(Key(5), PEER), (Key(6), PEER)];
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(add), args.clone(), deps.clone()),
    );
    assert_eq!(
        env.received::<ToWorker>(PEER).len(),
        2,
        "both inputs asked for"
    );
    env.send(
        Rank::SCHEDULER,
        ToWorker::Steal {
            key: Key(1),
            attempt: 1,
        },
    );
    env.send(Rank::SCHEDULER, placement(1, 2, func_of(add), args, deps));
    assert!(
        env.received::<ToWorker>(PEER).is_empty(),
        "the requests in flight serve the new attempt"
    );
    let five = Arc::new(encode_value(&40u64).unwrap().into());
    env.send(
        PEER,
        ToWorker::Data {
            key: Key(5),
            bytes: five,
        },
    );
    // Only one of its two inputs is here: the task must not start (it used to, and failed).
    assert!(
        !env.sent_to_scheduler()
            .iter()
            .any(|m| matches!(m, ToScheduler::TaskFailed { .. })),
        "the task started with an input missing"
    );
    let six = Arc::new(encode_value(&2u64).unwrap().into());
    env.send(
        PEER,
        ToWorker::Data {
            key: Key(6),
            bytes: six,
        },
    );
    env.next_outcome();
    env.assert_finished_as(1, 2);
    assert_eq!(env.value_of::<u64>(1), 42);
}

#[test]
fn a_task_waits_for_an_input_computed_here() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(double), vec![value(5u64)], vec![]),
    );
    let args = vec![ArgSlot::Future(Key(1))];
    env.send(
        Rank::SCHEDULER,
        compute(2, func_of(double), args, vec![(Key(1), ME)]),
    );
    assert!(
        env.received::<ToWorker>(PEER).is_empty(),
        "nothing to fetch"
    );
    env.next_outcome();
    env.next_outcome();
    assert_eq!(env.finished(), vec![1, 2]);
    assert_eq!(env.value_of::<u64>(2), 20);
}

#[test]
fn only_queued_tasks_can_be_stolen() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(nap), vec![value(300u64)], vec![]),
    );
    env.send(
        Rank::SCHEDULER,
        compute(2, func_of(nap), vec![value(1u64)], vec![]),
    );
    // Task 1 occupies the only thread by now; task 2 waits in the queue.
    std::thread::sleep(Duration::from_millis(50));
    env.send(
        Rank::SCHEDULER,
        ToWorker::Steal {
            key: Key(2),
            attempt: 1,
        },
    );
    env.send(
        Rank::SCHEDULER,
        ToWorker::Steal {
            key: Key(1),
            attempt: 1,
        },
    );
    let replies = env.sent_to_scheduler();
    assert_eq!(
        replies,
        vec![
            ToScheduler::StealReply {
                key: Key(2),
                attempt: 1,
                stolen: true
            },
            ToScheduler::StealReply {
                key: Key(1),
                attempt: 1,
                stolen: false
            },
        ]
    );
    env.next_outcome();
    assert_eq!(env.finished(), vec![1]);
}

#[test]
fn a_task_going_on_after_a_wait_is_told_at_the_next_tick_unless_it_finished() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(nap), vec![value(200u64)], vec![]),
    );
    env.send(
        Rank::SCHEDULER,
        compute(2, func_of(nap), vec![value(200u64)], vec![]),
    );
    let mut seceded = |key: u64, waiting: bool| {
        let event = WorkerEvent::Seceded {
            key: Key(key),
            attempt: 1,
            waiting,
        };
        env.node.on_event(event, &mut env.out, Instant::now());
    };
    let told = |key: u64, waiting: bool| ToScheduler::Seceded {
        key: Key(key),
        attempt: 1,
        waiting,
    };
    // Waiting is told at once, going on is not; waiting again before the tick is not told
    // either (the scheduler still counts the task as waiting).
    seceded(1, true);
    seceded(2, true);
    seceded(1, false);
    seceded(2, false);
    seceded(2, true);
    seceded(2, false);
    assert_eq!(env.sent_to_scheduler(), vec![told(1, true), told(2, true)]);
    // Task 1 finishes before the tick: its result says it all. Task 2 still runs (or
    // waits for the thread): told at the tick.
    env.next_outcome();
    env.node.on_tick(&mut env.out, Instant::now());
    let sent: Vec<ToScheduler> = env
        .sent_to_scheduler()
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                ToScheduler::Seceded { .. } | ToScheduler::TaskFinished { .. }
            )
        })
        .collect();
    assert!(
        matches!(
            sent.as_slice(),
            [ToScheduler::TaskFinished { key: Key(1), .. }, last] if *last == told(2, false)
        ),
        "{sent:?}"
    );
    env.next_outcome();
    env.node.on_tick(&mut env.out, Instant::now());
    assert_eq!(env.finished(), vec![2]);
}

#[test]
fn a_cancelled_running_task_reports_nothing() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(nap), vec![value(100u64)], vec![]),
    );
    std::thread::sleep(Duration::from_millis(20));
    env.send(
        Rank::SCHEDULER,
        ToWorker::CancelTask {
            key: Key(1),
            attempt: 1,
        },
    );
    env.next_outcome();
    assert!(env.sent_to_scheduler().is_empty());
    env.send(Rank::CLIENT, ToWorker::GetData(vec![Key(1)]));
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::DataMissing(Key(1))]
    );
}

#[test]
fn a_panic_is_reported_and_the_worker_goes_on() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(refuse), vec![value(7u64)], vec![]),
    );
    env.next_outcome();
    match env.sent_to_scheduler().as_slice() {
        [
            ToScheduler::TaskFailed {
                key: Key(1),
                message,
                ..
            },
        ] => {
            assert!(message.contains("no 7"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    env.send(
        Rank::SCHEDULER,
        compute(2, func_of(double), vec![value(1u64)], vec![]),
    );
    env.next_outcome();
    assert_eq!(env.finished(), vec![2]);
}

#[test]
fn released_values_are_dropped_and_stop_then_exit_end_the_node() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(double), vec![value(1u64)], vec![]),
    );
    env.next_outcome();
    env.send(Rank::SCHEDULER, ToWorker::ReleaseKeys(vec![Key(1)]));
    env.send(Rank::CLIENT, ToWorker::GetData(vec![Key(1)]));
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::DataMissing(Key(1))]
    );
    env.send(Rank::SCHEDULER, ToWorker::Stop);
    assert_eq!(env.node.status(), NodeStatus::Quiescing);
    env.send(Rank::SCHEDULER, ToWorker::Exit { code: 3 });
    assert_eq!(env.node.status(), NodeStatus::Exit(3));
}

#[test]
fn a_task_calling_an_unregistered_function_ends_the_job_with_exit_8() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        compute(1, FnId(999), vec![value(1u64)], vec![]),
    );
    assert_eq!(
        env.node.status(),
        NodeStatus::Abort(
            8,
            "rank 2 received from rank 0 task #1 calling function id 999, which was never \
             registered; aborting the job"
                .into()
        )
    );
    assert!(
        env.outcomes
            .recv_timeout(Duration::from_millis(100))
            .is_err(),
        "nothing ran"
    );
}

#[test]
fn a_function_resolved_as_another_kind_ends_the_job_with_exit_8() {
    // Function 0 was registered as a task trampoline; a task that calls it as a plain
    // `fn(u32) -> u32` is malformed.
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::SCHEDULER,
        ToWorker::Compute(ComputeMsg {
            key: Key(1),
            attempt: 1,
            code: Arc::new(TaskCode {
                func: FnId(4),
                uses: vec![FnId(0)].into(),
                args: vec![].into(),
                checkpoint: None,
            }),
            deps: vec![],
            consume: Vec::new(),
            priority: 0,
            resources: vec![],
            group: vec![],
        }),
    );
    env.next_outcome();
    match env.node.status() {
        NodeStatus::Abort(8, message) => assert!(
            message.starts_with(
                "rank 2 received from rank 0 task #1 that is malformed: function id 0 (f0) \
                 was registered as another kind of function"
            ),
            "{message}"
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
    assert!(env.finished().is_empty(), "no result was reported");
}

#[test]
fn a_registration_whose_check_fails_ends_the_job_with_exit_8() {
    let mut env = WorkerEnv::new(1);
    let mut forged = Registry::new(JOB_KEY ^ 1);
    let (_, registration) = forged.id_of(functions()[0], || "forged".into());
    let mut registration = registration.unwrap();
    registration.id = FnId(5);
    env.send(Rank::SCHEDULER, ToWorker::RegisterFunction(registration));
    match env.node.status() {
        NodeStatus::Abort(8, message) => assert!(
            message.starts_with("rank 2 received from rank 0 a registration of function id 5"),
            "{message}"
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[test]
fn messages_from_ranks_that_may_not_send_them_end_the_job_with_exit_8() {
    let mut env = WorkerEnv::new(1);
    env.send(
        Rank::CLIENT,
        compute(1, func_of(double), vec![value(1u64)], vec![]),
    );
    match env.node.status() {
        NodeStatus::Abort(8, message) => assert!(
            message.starts_with("rank 2 received from rank 1 a message it may not send"),
            "{message}"
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
}

/// A worker spilling everything above `threshold` bytes, with its disk results on a channel.
fn spilling_worker(
    threshold: u64,
    parent: &std::path::Path,
) -> (
    WorkerEnv,
    crossbeam_channel::Receiver<super::disk::DiskDone>,
) {
    let mut env = WorkerEnv::new(1);
    let (done, results) = crossbeam_channel::unbounded();
    let report: super::store::DiskReport = Arc::new(move |d| {
        let _ = done.send(d);
    });
    let policy = super::store::SpillPolicy {
        threshold: Some(threshold),
        local_directory: parent.to_path_buf(),
        rank: ME.0,
    };
    let node = std::mem::replace(&mut env.node, WorkerEnv::new(1).node);
    env.node = node.with_memory_policy(policy, None, Some(report));
    (env, results)
}

impl WorkerEnv {
    /// Hands the next disk result to the node.
    fn next_disk(&mut self, results: &crossbeam_channel::Receiver<super::disk::DiskDone>) {
        let done = results
            .recv_timeout(Duration::from_secs(10))
            .expect("a disk result");
        self.node
            .on_event(WorkerEvent::Disk(done), &mut self.out, Instant::now());
    }
}

#[test]
fn spilled_inputs_and_served_values_wait_for_the_disk_thread() {
    let parent = std::env::temp_dir().join(format!("mpidask-worker-spill-{}", std::process::id()));
    std::fs::create_dir_all(&parent).unwrap();
    let (mut env, disk) = spilling_worker(100, &parent);
    // The test keeps its own copy: a value someone else still holds is not spilled.
    let bytes = encode_value(&vec![3u64; 200]).unwrap();
    env.send(
        Rank::CLIENT,
        ToWorker::ScatterData {
            key: Key(1),
            bytes: Arc::new(bytes.clone().into()),
        },
    );
    env.next_disk(&disk); // written: the value left memory
    assert_eq!(env.finished(), vec![1]);
    // A task reading it waits for the read back; the communication thread never does.
    env.send(
        Rank::SCHEDULER,
        compute(
            2,
            func_of(total),
            vec![ArgSlot::Future(Key(1))],
            vec![(Key(1), ME)],
        ),
    );
    assert!(
        env.outcomes
            .recv_timeout(Duration::from_millis(100))
            .is_err(),
        "nothing runs before the input is back in memory"
    );
    // The client asks for the value too: it is served once read back.
    env.send(Rank::CLIENT, ToWorker::GetData(vec![Key(1)]));
    assert!(env.received::<ToClient>(Rank::CLIENT).is_empty());
    env.next_disk(&disk); // read back
    assert_eq!(
        env.received::<ToClient>(Rank::CLIENT),
        vec![ToClient::Data {
            key: Key(1),
            bytes: Arc::new(bytes.into())
        }]
    );
    env.next_outcome();
    assert_eq!(env.finished(), vec![2]);
    assert_eq!(env.value_of::<u64>(2), 600);
    drop(env);
    std::fs::remove_dir_all(&parent).unwrap();
}

/// A task stolen while its inputs are read back from disk and placed back on the same worker
/// runs once both are back, not when the first read back completes twice (once for the
/// attempt taken back); before, the second count dispatched it with an input missing.
#[test]
fn a_task_placed_back_while_its_inputs_are_read_back_waits_for_all_of_them() {
    let parent =
        std::env::temp_dir().join(format!("mpidask-worker-readback-{}", std::process::id()));
    std::fs::create_dir_all(&parent).unwrap();
    let (mut env, disk) = spilling_worker(100, &parent);
    for (key, v) in [(1u64, 3u64), (3, 4)] {
        let bytes = encode_value(&vec![v; 200]).unwrap();
        env.send(
            Rank::CLIENT,
            ToWorker::ScatterData {
                key: Key(key),
                bytes: Arc::new(bytes.into()),
            },
        );
        env.next_disk(&disk); // written: the value left memory
    }
    assert_eq!(env.finished(), vec![1, 3]);
    let args = vec![ArgSlot::Future(Key(1)), ArgSlot::Future(Key(3))];
    let deps = vec![(Key(1), ME), (Key(3), ME)];
    let placed = |attempt| {
        placement(
            2,
            attempt,
            func_of(total_of_two),
            args.clone(),
            deps.clone(),
        )
    };
    env.send(Rank::SCHEDULER, placed(1));
    env.send(
        Rank::SCHEDULER,
        ToWorker::Steal {
            key: Key(2),
            attempt: 1,
        },
    );
    env.send(Rank::SCHEDULER, placed(2));
    env.next_disk(&disk); // the first input is back
    assert!(
        env.outcomes
            .recv_timeout(Duration::from_millis(100))
            .is_err(),
        "nothing runs before both inputs are back in memory"
    );
    env.next_disk(&disk); // the second
    env.next_outcome();
    env.assert_finished_as(2, 2);
    assert_eq!(env.value_of::<u64>(2), 3 * 200 + 4 * 200);
    drop(env);
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn a_broadcast_reaches_workers_outside_the_collective_point_to_point() {
    // This worker's collective has no other member (the peer is hosted in another rank's
    // process): the value goes to the peer in a message, and no collective starts (the
    // flush without collectives would fail if one did).
    let mut env = WorkerEnv::new(1);
    let node = std::mem::replace(&mut env.node, WorkerEnv::new(1).node);
    env.node = node.with_workers(vec![ME, PEER], vec![ME]);
    let bytes: Payload = Arc::new(encode_value(&vec![7u32; 50]).unwrap().into());
    env.send(
        Rank::CLIENT,
        ToWorker::BroadcastScatter {
            key: Key(9),
            bytes: bytes.clone(),
        },
    );
    let to_peer: Vec<ToWorker> = env.received(PEER);
    assert_eq!(
        to_peer,
        vec![ToWorker::BroadcastValue { key: Key(9), bytes }]
    );
    let told = env.sent_to_scheduler();
    assert!(
        told.iter()
            .any(|m| matches!(m, ToScheduler::Replicated { key: Key(9), workers } if workers == &vec![PEER])),
        "{told:?}"
    );
    // The receiving side: a broadcast value from another worker is stored and served.
    let other: Payload = Arc::new(encode_value(&vec![3u32; 4]).unwrap().into());
    env.send(
        PEER,
        ToWorker::BroadcastValue {
            key: Key(10),
            bytes: other,
        },
    );
    assert_eq!(env.value_of::<Vec<u32>>(10), vec![3u32; 4]);
    // Only a worker may send one.
    env.send(
        Rank::CLIENT,
        ToWorker::BroadcastValue {
            key: Key(11),
            bytes: Arc::new(vec![1u8].into()),
        },
    );
    assert!(matches!(env.node.status(), NodeStatus::Abort(..)));
}

#[test]
fn an_mpi_task_this_worker_cannot_take_part_in_ends_the_job_with_exit_8() {
    // This worker is in no MPI communicator (as in local mode): a task naming a group is
    // a scheduler that broke the protocol.
    let mut env = WorkerEnv::new(1);
    let ToWorker::Compute(mut msg) = compute(1, FnId(0), vec![], vec![]) else {
        unreachable!("a compute message")
    };
    msg.group = vec![Rank(2), Rank(3)];
    env.send(Rank::SCHEDULER, ToWorker::Compute(msg));
    match env.node.status() {
        NodeStatus::Abort(8, message) => assert!(
            message.contains("MPI task #1 sent to rank 2, which runs no MPI task"),
            "{message}"
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[test]
fn an_mpi_task_says_when_it_holds_its_inputs_and_answers_a_call_off_before_going() {
    let mut env = WorkerEnv::new(1);
    env.node = env.node.with_mpi_report(|_| {});
    for (key, group) in [(1, vec![ME, PEER]), (2, vec![PEER, ME])] {
        let ToWorker::Compute(mut msg) = compute(key, FnId(0), vec![], vec![]) else {
            unreachable!("a compute message")
        };
        msg.group = group;
        env.send(Rank::SCHEDULER, ToWorker::Compute(msg));
        assert_eq!(
            env.sent_to_scheduler(),
            vec![ToScheduler::MpiReady {
                key: Key(key),
                attempt: 1
            }],
            "it waits for MpiGo"
        );
        // Called off before MpiGo: the part ends, first member or not, and nothing runs.
        env.send(
            Rank::SCHEDULER,
            ToWorker::CancelTask {
                key: Key(key),
                attempt: 1,
            },
        );
        assert_eq!(
            env.sent_to_scheduler(),
            vec![ToScheduler::MpiPartDone {
                key: Key(key),
                attempt: 1,
                failure: None
            }]
        );
    }
    assert!(env.outcomes.try_recv().is_err(), "nothing ran");
}

#[test]
fn copies_for_replicate_are_fetched_reported_and_their_failures_too() {
    let mut env = WorkerEnv::new(1);
    // Key 1 is here already (a task's value), keys 5 and 6 are on the peer.
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(double), vec![value(21u64)], vec![]),
    );
    env.next_outcome();
    env.sent_to_scheduler();
    env.send(
        Rank::SCHEDULER,
        ToWorker::CopyFrom(vec![(Key(1), PEER), (Key(5), PEER), (Key(6), PEER)]),
    );
    assert_eq!(
        env.sent_to_scheduler(),
        vec![ToScheduler::AddReplicas(vec![Key(1)])]
    );
    assert_eq!(
        env.received::<ToWorker>(PEER),
        vec![
            ToWorker::GetData(vec![Key(5)]),
            ToWorker::GetData(vec![Key(6)])
        ]
    );
    let bytes = Arc::new(encode_value(&7u64).unwrap().into());
    env.send(PEER, ToWorker::Data { key: Key(5), bytes });
    assert_eq!(env.value_of::<u64>(5), 7);
    env.send(PEER, ToWorker::DataMissing(Key(6)));
    assert_eq!(
        env.sent_to_scheduler(),
        vec![
            ToScheduler::AddReplicas(vec![Key(5)]),
            ToScheduler::CopyFailed(vec![Key(6)])
        ]
    );
    // A copy from this worker itself (or from no worker) is a broken protocol.
    env.send(Rank::SCHEDULER, ToWorker::CopyFrom(vec![(Key(7), ME)]));
    assert!(matches!(env.node.status(), NodeStatus::Abort(..)));
}

#[test]
fn a_last_reader_takes_its_input_out_of_the_store_and_gives_it_back_if_stolen() {
    let mut env = WorkerEnv::new(1);
    let held = |env: &WorkerEnv| env.node.store.contains_key(&Key(10));
    env.send(
        Rank::CLIENT,
        ToWorker::ScatterData {
            key: Key(10),
            bytes: Arc::new(encode_value(&vec![1u64, 2, 3]).unwrap().into()),
        },
    );
    env.send(
        Rank::SCHEDULER,
        compute(1, func_of(nap), vec![value(300u64)], vec![]),
    );
    std::thread::sleep(Duration::from_millis(50));
    // Task 1 holds the only thread; 2, the last reader of 10, is queued holding 10.
    let last_reader = |key: u64, consume: Vec<Key>| match compute(
        key,
        func_of(total),
        vec![ArgSlot::Future(Key(10))],
        vec![(Key(10), ME)],
    ) {
        ToWorker::Compute(msg) => ToWorker::Compute(ComputeMsg { consume, ..msg }),
        _ => unreachable!("a placement"),
    };
    env.send(Rank::SCHEDULER, last_reader(2, vec![Key(10)]));
    assert!(!held(&env), "taken out of the store by its last reader");
    let steal = ToWorker::Steal {
        key: Key(2),
        attempt: 1,
    };
    env.send(Rank::SCHEDULER, steal);
    assert!(held(&env), "given back when the task was taken away");
    // Told once queued: the store lets go of it at once.
    env.send(Rank::SCHEDULER, last_reader(3, vec![]));
    assert!(held(&env));
    env.send(
        Rank::SCHEDULER,
        ToWorker::LastRead {
            key: Key(3),
            attempt: 1,
            input: Key(10),
        },
    );
    assert!(!held(&env));
    env.next_outcome();
    env.next_outcome();
    // (10 was reported stored when it came.)
    assert_eq!(env.finished(), vec![10, 1, 3]);
    assert_eq!(env.value_of::<u64>(3), 6);
    // An input the task does not read is not taken.
    env.send(
        Rank::SCHEDULER,
        ToWorker::LastRead {
            key: Key(3),
            attempt: 1,
            input: Key(99),
        },
    );
    // Naming one it does not read in a placement ends the job.
    env.send(Rank::SCHEDULER, last_reader(4, vec![Key(98)]));
    match env.node.status() {
        NodeStatus::Abort(8, message) => assert!(message.contains("98"), "{message}"),
        other => panic!("expected exit 8, got {other:?}"),
    }
}
