//! The task stream the scheduler keeps (`get_task_stream`): one entry per run of a current
//! attempt, failed runs with their error, stale reports and scattered values left out, and
//! answers from any point of the stream with the functions' names.

use super::*;
use crate::protocol::CoordReply;

/// Asks for the stream from `since` on: `(entries as (key, worker, ok), names, next)`.
fn stream(env: &mut TestEnv, since: u64) -> (Vec<(u64, u32, bool)>, Vec<String>, u64) {
    env.client(ToScheduler::TaskStream { id: 7, since });
    let replies: Vec<CoordReply> = env
        .take_client_messages()
        .into_iter()
        .filter_map(|m| match m {
            ToClient::Coordinated { id: 7, reply } => Some(reply),
            _ => None,
        })
        .collect();
    match replies.as_slice() {
        [
            CoordReply::TaskStream {
                entries,
                names,
                next,
            },
        ] => (
            entries
                .iter()
                .map(|e| (e.key.0, e.worker.0, e.error.is_none()))
                .collect(),
            names.iter().map(|(_, n)| n.clone()).collect(),
            *next,
        ),
        other => panic!("task stream answered {other:?}"),
    }
}

#[test]
fn every_run_is_recorded_once_with_failures_and_retries() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    assert_eq!(stream(&mut env, 0), (vec![], vec![], 0));
    env.client(ToScheduler::Scatter {
        key: Key(50),
        worker: Rank(2),
        nbytes: 8,
    });
    env.send(
        Rank(2),
        ToScheduler::TaskFinished {
            key: Key(50),
            attempt: 0,
            nbytes: 8,
            run: None,
        },
    );
    assert_eq!(stream(&mut env, 0).2, 0, "a scattered value ran nothing");
    let options = TaskOptions {
        retries: 1,
        ..Default::default()
    };
    env.submit(vec![task_with(1, &[], options), task(2, &[])]);
    let first = env.processing(1);
    env.fail(1, "flaky");
    // A late report of the first attempt is stale: not a run of the task.
    env.finish_as(first.0, 1, first.1, 8);
    let (worker_1, _) = env.processing(1);
    env.finish(1, 8);
    let (worker_2, _) = env.processing(2);
    env.finish(2, 8);
    let (entries, names, next) = stream(&mut env, 0);
    assert_eq!(
        entries,
        vec![
            (1, first.0.0, false),
            (1, worker_1.0, true),
            (2, worker_2.0, true)
        ]
    );
    assert_eq!(names, vec!["f"]);
    assert_eq!(next, 3);
    assert_eq!(stream(&mut env, 2).0, vec![(2, worker_2.0, true)]);
    assert_eq!(stream(&mut env, u64::MAX), (vec![], vec![], 3));
}
