//! MPI tasks in the scheduler: workers reserved until they are free, every member sent the
//! task, `MpiGo` once all hold their inputs, each freed by its own report, a task larger
//! than the job refused, a failure before `MpiGo` calling the others off, and members
//! stuck after a failure ending the job.

use super::*;

fn mpi_task(key: u64, deps: &[u64], workers: u32) -> TaskSpec {
    task_with(
        key,
        deps,
        TaskOptions {
            mpi_workers: Some(workers),
            ..TaskOptions::default()
        },
    )
}

/// The MPI task `key` sent to each of `members`, with the attempt.
fn sent_to(env: &mut TestEnv, key: u64) -> (Vec<u32>, Attempt) {
    let computes: Vec<(Rank, ComputeMsg)> = env
        .take_computes()
        .into_iter()
        .filter(|(_, c)| c.key == Key(key))
        .collect();
    let ranks: Vec<u32> = computes.iter().map(|(r, _)| r.0).collect();
    for (_, compute) in &computes {
        let group: Vec<u32> = compute.group.iter().map(|r| r.0).collect();
        assert_eq!(
            group, ranks,
            "every member learns the whole group, in order"
        );
    }
    (ranks, computes.first().map_or(0, |(_, c)| c.attempt))
}

fn gone(env: &mut TestEnv, key: u64) -> Vec<u32> {
    let mut ranks: Vec<u32> = env
        .take_worker_messages()
        .into_iter()
        .filter_map(|(rank, m)| {
            matches!(m, ToWorker::MpiGo { key: k, .. } if k == Key(key)).then_some(rank.0)
        })
        .collect();
    ranks.sort_unstable();
    ranks
}

fn ready(env: &mut TestEnv, rank: u32, key: u64, attempt: Attempt) {
    env.send(
        Rank(rank),
        ToScheduler::MpiReady {
            key: Key(key),
            attempt,
        },
    );
}

fn part_done(env: &mut TestEnv, rank: u32, key: u64, attempt: Attempt, failure: Option<&str>) {
    env.send(
        Rank(rank),
        ToScheduler::MpiPartDone {
            key: Key(key),
            attempt,
            failure: failure.map(str::to_string),
        },
    );
}

#[test]
fn an_mpi_task_reserves_its_workers_and_goes_when_all_hold_their_inputs() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1), (4, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[])]);
    assert_eq!(env.placements(), vec![(1, 2), (2, 3)]);
    // Two workers for the MPI task: the idle one (4) and the first of the busy ones (2),
    // reserved.
    env.submit(vec![mpi_task(10, &[], 2)]);
    assert!(env.placements().is_empty(), "one of its workers is busy");
    // Nothing else goes to a reserved worker; the other one takes plain tasks.
    env.submit(vec![task(3, &[]), task(4, &[])]);
    let placed = env.placements();
    assert!(placed.iter().all(|(_, rank)| *rank == 3), "{placed:?}");
    env.finish(1, 8);
    let (members, attempt) = sent_to(&mut env, 10);
    assert_eq!(members, vec![2, 4], "sent once both are free");
    // Not before both hold their inputs.
    ready(&mut env, 2, 10, attempt);
    assert!(gone(&mut env, 10).is_empty());
    ready(&mut env, 4, 10, attempt);
    assert_eq!(gone(&mut env, 10), vec![2, 4]);
    // Their communication threads are inside the task: their silence is no loss.
    for _ in 0..8 {
        env.send(Rank(3), ToScheduler::Heartbeat);
        env.advance(Duration::from_secs(5));
    }
    assert!(env.aborted.is_none(), "{:?}", env.aborted);
    // The first member's value is the task's; each member is free once it reports.
    env.finish_as(Rank(2), 10, attempt, 8);
    assert!(matches!(env.state(10), Some(TaskState::Memory { .. })));
    part_done(&mut env, 4, 10, attempt, None);
    assert!(env.aborted.is_none());
}

#[test]
fn an_mpi_task_larger_than_the_job_fails_naming_both_numbers() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![
        mpi_task(10, &[], 3),
        mpi_task(11, &[], 0),
        mpi_task(12, &[], 2),
    ]);
    let errors: Vec<String> = env
        .take_client_messages()
        .into_iter()
        .filter_map(|m| match m {
            ToClient::KeyErred { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("asks for 3 workers and this job has 2 workers")
            && errors[0].contains("at least 5 ranks"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("at least 1 worker"), "{}", errors[1]);
    // The next in line runs.
    assert_eq!(sent_to(&mut env, 12).0, vec![2, 3]);
}

#[test]
fn a_member_that_fails_before_going_calls_the_others_off() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![mpi_task(10, &[], 2)]);
    let (_, attempt) = sent_to(&mut env, 10);
    ready(&mut env, 2, 10, attempt);
    part_done(
        &mut env,
        3,
        10,
        attempt,
        Some("an input of task #10 was released"),
    );
    assert!(matches!(env.state(10), Some(TaskState::Failed(_))));
    let messages = env.take_worker_messages();
    assert!(
        messages.iter().any(|(rank, m)| *rank == Rank(2)
            && matches!(m, ToWorker::CancelTask { key, .. } if *key == Key(10))),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|(_, m)| matches!(m, ToWorker::MpiGo { .. }))
    );
    // Worker 2 answers the call-off and takes other work again.
    part_done(&mut env, 2, 10, attempt, None);
    env.submit(vec![task(1, &[]), task(2, &[])]);
    let mut placed: Vec<u32> = env.placements().iter().map(|p| p.1).collect();
    placed.sort_unstable();
    assert_eq!(placed, vec![2, 3]);
}

#[test]
fn members_left_waiting_in_mpi_after_a_failure_end_the_job() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![mpi_task(10, &[], 2)]);
    let (_, attempt) = sent_to(&mut env, 10);
    ready(&mut env, 2, 10, attempt);
    ready(&mut env, 3, 10, attempt);
    env.send(
        Rank(2),
        ToScheduler::TaskFailed {
            key: Key(10),
            attempt,
            message: "rank 0 gave up".into(),
            run: TaskRun::default(),
        },
    );
    assert!(matches!(env.state(10), Some(TaskState::Failed(_))));
    env.advance(Duration::from_secs(20));
    assert!(env.aborted.is_none(), "the others get time to finish");
    env.advance(Duration::from_secs(11));
    let (code, message) = env.aborted.clone().expect("the job ends");
    assert_eq!(code, ExitCode::TaskFailed.code());
    assert!(
        message.contains("rank 0 gave up") && message.contains("rank(s) 3"),
        "{message}"
    );
}

#[test]
fn a_task_waiting_for_its_mpi_task_does_not_hold_it_up() {
    // Task 1 on worker 2 submits an MPI task on both workers and waits for it, having
    // given its thread back: the MPI task goes at once.
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
    env.submit(vec![mpi_task(10, &[], 2)]);
    assert_eq!(sent_to(&mut env, 10).0, vec![2, 3]);
}

#[test]
fn an_mpi_task_released_before_its_last_member_reported_is_no_stealing_victim() {
    // Found at -np 5: the client released the task once it had its value, while another
    // member's part was still to be reported; work stealing then looked the key up on that
    // member and panicked.
    let mut env = TestEnv::new(&[(2, 1), (3, 1), (4, 1)]);
    env.submit(vec![mpi_task(10, &[], 2)]);
    let (members, attempt) = sent_to(&mut env, 10);
    assert_eq!(members.len(), 2);
    for &rank in &members {
        ready(&mut env, rank, 10, attempt);
    }
    assert_eq!(gone(&mut env, 10), members);
    env.finish_as(Rank(members[0]), 10, attempt, 8);
    env.release(&[10]);
    // Plain tasks queue up on the free workers while the last member is still in MPI.
    env.submit((20..26).map(|k| task(k, &[])).collect());
    assert!(!env.placements().is_empty());
    env.advance(Duration::from_millis(10));
    part_done(&mut env, members[1], 10, attempt, None);
    assert!(env.aborted.is_none(), "{:?}", env.aborted);
}
