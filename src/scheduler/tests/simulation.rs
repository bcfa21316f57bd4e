//! The scheduler against simulated workers that keep stores, fetch inputs from each other,
//! give up stolen tasks, fail (and are retried) as planned and report replicas, with every
//! message delayed at random (each sender-receiver channel stays in order, as MPI keeps
//! it), and a client that submits in batches and lets go of keys: no task the scheduler
//! still counts on fails for a missing input (a fetch answered "missing" or an input gone
//! when it is about to run happens only to a task already taken back), every wanted key is
//! answered once, and once the client let go of everything nothing is left in the scheduler
//! or in any store.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// A message between ranks, in flight.
#[derive(Debug)]
enum Message {
    ToScheduler(ToScheduler),
    ToWorker(ToWorker),
    /// Worker to worker (their real messages carry the bytes).
    GetData(Key),
    Data(Key),
    DataMissing(Key),
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Phase {
    Waiting,
    Queued,
    Running,
}

#[derive(Debug)]
struct SimTask {
    attempt: Attempt,
    deps: Vec<Key>,
    missing: usize,
    phase: Phase,
}

/// A worker as `src/worker/` behaves, minus the values.
#[derive(Debug, Default)]
struct SimWorker {
    nthreads: usize,
    store: HashSet<Key>,
    tasks: BTreeMap<Key, SimTask>,
    fetching: HashSet<Key>,
    /// Waiting tasks by input, with the attempt that waits (as `src/worker/` keeps them).
    waiters: HashMap<Key, Vec<(Key, Attempt)>>,
}

#[derive(Debug, Clone)]
struct Plan {
    workers: Vec<u32>,
    /// Per task: dependencies (earlier tasks), whether the client keeps its future, how
    /// often it fails before it succeeds and its retries.
    tasks: Vec<(Vec<u64>, bool, u32, u32)>,
    batches: Vec<usize>,
    choices: Vec<u32>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (1usize..5, 1usize..120)
        .prop_flat_map(|(nworkers, ntasks)| {
            let workers = prop::collection::vec(1u32..3, nworkers);
            let tasks = prop::collection::vec(
                (
                    prop::collection::vec(any::<prop::sample::Index>(), 0..4),
                    prop::bool::weighted(0.2),
                    prop::sample::select(vec![0u32, 0, 0, 0, 0, 0, 1, 2]),
                    0u32..3,
                ),
                ntasks,
            );
            let batches = prop::collection::vec(1usize..12, 1..6);
            let choices = prop::collection::vec(any::<u32>(), 1000);
            (workers, tasks, batches, choices)
        })
        .prop_map(|(workers, raw, batches, choices)| {
            let n = raw.len();
            let tasks = raw
                .into_iter()
                .enumerate()
                .map(|(i, (deps, wanted, failures, retries))| {
                    let deps = earlier_deps(i, &deps);
                    (deps, wanted || i + 1 == n, failures, retries)
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

struct Sim {
    env: TestEnv,
    workers: BTreeMap<u32, SimWorker>,
    /// In flight, per (sender, receiver), in order.
    channels: BTreeMap<(u32, u32), VecDeque<Message>>,
    answers: BTreeMap<u64, usize>,
    /// What went wrong, if anything.
    violations: Vec<String>,
    /// What happened, in order (printed when something went wrong).
    log: Vec<String>,
    /// Batches the client has yet to submit, each with the keys it lets go of at once.
    batches: VecDeque<(Vec<TaskSpec>, Vec<Key>)>,
    /// Keys the client holds a future for and has an answer about.
    held: BTreeSet<u64>,
    /// Planned failures left, per task.
    failures: HashMap<Key, u32>,
}

impl Sim {
    fn post(&mut self, from: u32, to: u32, message: Message) {
        self.channels
            .entry((from, to))
            .or_default()
            .push_back(message);
    }

    /// Moves what the scheduler sent into the channels.
    fn pump(&mut self) {
        for (rank, message) in self.env.take_worker_messages() {
            self.post(0, rank.0, Message::ToWorker(message));
        }
        for key in self.env.take_client_messages().iter().filter_map(answered) {
            *self.answers.entry(key).or_insert(0) += 1;
            self.held.insert(key);
        }
        if let Some((code, message)) = &self.env.aborted {
            self.violations
                .push(format!("scheduler aborted with {code}: {message}"));
        }
    }

    fn deliver(&mut self, from: u32, to: u32, message: Message) {
        if to == 0 {
            let Message::ToScheduler(message) = message else {
                unreachable!()
            };
            if let ToScheduler::TaskFailed {
                key,
                attempt,
                message: why,
                ..
            } = &message
            {
                let current = matches!(
                    self.env.state(key.0),
                    Some(TaskState::Processing { worker, .. }) if worker.0 == from
                ) && self.env.attempts.get(key) == Some(attempt);
                if current && why != PLANNED {
                    self.violations
                        .push(format!("task {key} failed on {from}: {why}"));
                }
            }
            self.env.send(Rank(from), message);
            self.pump();
            return;
        }
        let w = self.workers.get_mut(&to).expect("a worker");
        let mut replies: Vec<(u32, Message)> = Vec::new();
        match message {
            Message::ToWorker(ToWorker::Compute(c)) => {
                let deps: Vec<Key> = c.deps.iter().map(|(k, _)| *k).collect();
                let mut missing = 0;
                for (dep, source) in &c.deps {
                    if w.store.contains(dep) {
                        continue;
                    }
                    missing += 1;
                    w.waiters.entry(*dep).or_default().push((c.key, c.attempt));
                    if source.0 != to && w.fetching.insert(*dep) {
                        replies.push((source.0, Message::GetData(*dep)));
                    }
                }
                w.tasks.insert(
                    c.key,
                    SimTask {
                        attempt: c.attempt,
                        deps,
                        missing,
                        phase: Phase::Waiting,
                    },
                );
                if missing == 0 {
                    Self::gather(w, c.key, &mut replies);
                }
            }
            Message::ToWorker(ToWorker::CancelTask { key, attempt }) => {
                if w.tasks.get(&key).is_some_and(|t| t.attempt == attempt) {
                    w.tasks.remove(&key);
                }
            }
            Message::ToWorker(ToWorker::ReleaseKeys(keys)) => {
                for key in keys {
                    w.store.remove(&key);
                }
            }
            Message::ToWorker(ToWorker::Steal { key, attempt }) => {
                let stolen = w
                    .tasks
                    .get(&key)
                    .is_some_and(|t| t.attempt == attempt && t.phase != Phase::Running);
                if stolen {
                    w.tasks.remove(&key);
                }
                replies.push((
                    0,
                    Message::ToScheduler(ToScheduler::StealReply {
                        key,
                        attempt,
                        stolen,
                    }),
                ));
            }
            Message::ToWorker(_) => {}
            Message::GetData(key) => {
                let reply = if w.store.contains(&key) {
                    Message::Data(key)
                } else {
                    Message::DataMissing(key)
                };
                replies.push((from, reply));
            }
            Message::Data(key) => {
                if w.fetching.remove(&key) {
                    Self::store_value(w, key, &mut replies);
                    replies.push((0, Message::ToScheduler(ToScheduler::AddReplicas(vec![key]))));
                }
            }
            Message::DataMissing(key) => {
                w.fetching.remove(&key);
                for (waiter, attempt) in w.waiters.remove(&key).unwrap_or_default() {
                    if w.tasks.get(&waiter).is_some_and(|t| t.attempt == attempt) {
                        let task = w.tasks.remove(&waiter).expect("present");
                        let message = format!("its input {key} was not found on {from}");
                        replies.push((0, Self::failed(waiter, task.attempt, message)));
                    }
                }
            }
            Message::ToScheduler(_) => unreachable!(),
        }
        for (dest, message) in replies {
            self.post(to, dest, message);
        }
    }

    fn failed(key: Key, attempt: Attempt, message: String) -> Message {
        Message::ToScheduler(ToScheduler::TaskFailed {
            key,
            attempt,
            message,
            run: TaskRun::default(),
        })
    }

    fn store_value(w: &mut SimWorker, key: Key, replies: &mut Vec<(u32, Message)>) {
        w.store.insert(key);
        for (waiter, attempt) in w.waiters.remove(&key).unwrap_or_default() {
            let Some(task) = w.tasks.get_mut(&waiter) else {
                continue;
            };
            if task.attempt != attempt || task.phase != Phase::Waiting {
                continue;
            }
            task.missing -= 1;
            if task.missing == 0 {
                Self::gather(w, waiter, replies);
            }
        }
    }

    /// The worker takes the task's inputs from its store (`gather`).
    fn gather(w: &mut SimWorker, key: Key, replies: &mut Vec<(u32, Message)>) {
        let task = w.tasks.get_mut(&key).expect("present");
        let absent: Vec<Key> = task
            .deps
            .iter()
            .copied()
            .filter(|d| !w.store.contains(d))
            .collect();
        if absent.is_empty() {
            task.phase = Phase::Queued;
        } else {
            let attempt = task.attempt;
            w.tasks.remove(&key);
            let message = format!("its inputs {absent:?} were released");
            replies.push((0, Self::failed(key, attempt, message)));
        }
    }

    /// The things that can happen next.
    fn actions(&self) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .channels
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&(from, to), _)| Action::Deliver(from, to))
            .collect();
        if !self.batches.is_empty() {
            actions.push(Action::Submit);
        } else if let Some(&key) = self.held.first() {
            actions.push(Action::Release(Key(key)));
        }
        for (&rank, w) in &self.workers {
            let running = w
                .tasks
                .values()
                .filter(|t| t.phase == Phase::Running)
                .count();
            for (&key, t) in &w.tasks {
                match t.phase {
                    Phase::Queued if running < w.nthreads => actions.push(Action::Start(rank, key)),
                    Phase::Running => actions.push(Action::Finish(rank, key)),
                    _ => {}
                }
            }
        }
        actions
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Deliver(from, to) => {
                let message = self
                    .channels
                    .get_mut(&(from, to))
                    .and_then(VecDeque::pop_front)
                    .expect("a message");
                let text = format!("{message:?}");
                let text: String = text.chars().take(200).collect();
                self.log.push(format!("{from} -> {to}: {text}"));
                self.deliver(from, to, message);
            }
            Action::Submit => {
                let (batch, unwanted) = self.batches.pop_front().expect("a batch");
                self.post(1, 0, Message::ToScheduler(ToScheduler::Submit(batch)));
                if !unwanted.is_empty() {
                    self.post(
                        1,
                        0,
                        Message::ToScheduler(ToScheduler::ReleaseKeys(unwanted)),
                    );
                }
            }
            Action::Release(key) => {
                self.held.remove(&key.0);
                self.post(
                    1,
                    0,
                    Message::ToScheduler(ToScheduler::ReleaseKeys(vec![key])),
                );
            }
            Action::Start(rank, key) => {
                self.log.push(format!("{rank} starts {key}"));
                let w = self.workers.get_mut(&rank).expect("worker");
                w.tasks.get_mut(&key).expect("task").phase = Phase::Running;
            }
            Action::Finish(rank, key) => {
                self.log.push(format!("{rank} finishes {key}"));
                let w = self.workers.get_mut(&rank).expect("worker");
                let task = w.tasks.remove(&key).expect("task");
                if let Some(left) = self.failures.get_mut(&key).filter(|left| **left > 0) {
                    *left -= 1;
                    let message = Self::failed(key, task.attempt, PLANNED.into());
                    self.post(rank, 0, message);
                    return;
                }
                let mut replies = Vec::new();
                Self::store_value(w, key, &mut replies);
                self.post(
                    rank,
                    0,
                    Message::ToScheduler(ToScheduler::TaskFinished {
                        key,
                        attempt: task.attempt,
                        nbytes: 8,
                        run: Some(TaskRun {
                            start_us: 0,
                            duration_us: 50_000,
                            thread: 0,
                        }),
                    }),
                );
                for (dest, message) in replies {
                    self.post(rank, dest, message);
                }
            }
        }
    }
}

/// The message of a task's planned failure.
const PLANNED: &str = "planned";

#[derive(Debug, Clone, Copy)]
enum Action {
    Deliver(u32, u32),
    /// The client submits its next batch.
    Submit,
    /// The client lets go of a key it was answered about (once everything is submitted).
    Release(Key),
    Start(u32, Key),
    Finish(u32, Key),
}

fn run(plan: Plan) {
    let ranks: Vec<(u32, u32)> = plan
        .workers
        .iter()
        .enumerate()
        .map(|(i, &t)| (2 + i as u32, t))
        .collect();
    let env = TestEnv::new(&ranks);
    let mut sim = Sim {
        env,
        workers: ranks
            .iter()
            .map(|&(r, t)| {
                (
                    r,
                    SimWorker {
                        nthreads: t as usize,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        channels: BTreeMap::new(),
        answers: BTreeMap::new(),
        violations: Vec::new(),
        log: Vec::new(),
        batches: VecDeque::new(),
        held: BTreeSet::new(),
        failures: plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (Key(1 + i as u64), t.2))
            .collect(),
    };
    let n = plan.tasks.len() as u64;
    // The client submits in batches and lets go of the keys it does not keep right after
    // each; a key a later batch reads is kept until everything is submitted.
    let mut batch_of = Vec::new();
    let mut sizes = plan.batches.iter().cycle();
    let mut batch = 0;
    while batch_of.len() < plan.tasks.len() {
        let size = *sizes.next().unwrap();
        batch_of.extend(std::iter::repeat_n(batch, size));
        batch += 1;
    }
    let mut wanted: Vec<bool> = plan.tasks.iter().map(|t| t.1).collect();
    for (i, (deps, ..)) in plan.tasks.iter().enumerate() {
        for d in deps {
            let d = (*d - 1) as usize;
            if batch_of[d] != batch_of[i] {
                wanted[d] = true;
            }
        }
    }
    for (i, (deps, _, _, retries)) in plan.tasks.iter().enumerate() {
        let key = 1 + i as u64;
        if i == 0 || batch_of[i] != batch_of[i - 1] {
            sim.batches.push_back((Vec::new(), Vec::new()));
        }
        let (specs, unwanted) = sim.batches.back_mut().expect("a batch");
        let options = TaskOptions {
            retries: *retries,
            ..Default::default()
        };
        specs.push(task_with(key, deps, options));
        if !wanted[i] {
            unwanted.push(Key(key));
        }
    }
    let mut choices = plan.choices.iter().cycle();
    for _ in 0..100_000 {
        let actions = sim.actions();
        if actions.is_empty() || !sim.violations.is_empty() {
            break;
        }
        let action = actions[*choices.next().unwrap() as usize % actions.len()];
        sim.act(action);
    }
    assert!(
        sim.violations.is_empty(),
        "{:#?}\n{}",
        sim.violations,
        sim.log.join("\n")
    );
    for (key, wanted) in (1..=n).zip(&wanted) {
        if *wanted {
            assert_eq!(
                sim.answers.get(&key),
                Some(&1),
                "key {key} ({:?})\n{}",
                sim.env.state(key),
                sim.log.join("\n")
            );
        }
    }
    // Everything was let go of: nothing is left anywhere.
    assert_eq!(sim.env.scheduler.task_count(), 0);
    for (rank, w) in &sim.workers {
        assert!(w.tasks.is_empty(), "tasks left on {rank}: {:?}", w.tasks);
        assert!(w.store.is_empty(), "values left on {rank}: {:?}", w.store);
    }
}

/// Cases per run: 2000 (about a second), or `MPIDASK_SIM_CASES` for a longer search.
fn cases() -> u32 {
    std::env::var("MPIDASK_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn every_task_finds_its_inputs_and_every_key_is_answered_once(plan in plan()) {
        run(plan);
    }
}
