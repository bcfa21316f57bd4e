//! `who_has` and `replicate` in the scheduler: copies ordered from a holder onto the
//! workers holding least, the client answered once every copy is made or could not be,
//! the copies kept after the tasks reading them finish, and a key without a value refused.

use super::*;
use crate::protocol::CoordReply;

/// The `CopyFrom` orders sent, by worker: `(worker, [(key, source)])`.
fn copy_orders(env: &mut TestEnv) -> Vec<(u32, Vec<(u64, u32)>)> {
    let mut orders: Vec<(u32, Vec<(u64, u32)>)> = env
        .take_worker_messages()
        .into_iter()
        .filter_map(|(rank, m)| match m {
            ToWorker::CopyFrom(copies) => Some((
                rank.0,
                copies.iter().map(|(k, from)| (k.0, from.0)).collect(),
            )),
            _ => None,
        })
        .collect();
    orders.sort();
    orders
}

/// The answers to coordination requests the client received: `(id, reply)`.
fn answers(env: &mut TestEnv) -> Vec<(u64, CoordReply)> {
    env.take_client_messages()
        .into_iter()
        .filter_map(|m| match m {
            ToClient::Coordinated { id, reply } => Some((id, reply)),
            _ => None,
        })
        .collect()
}

fn holders(env: &mut TestEnv, keys: &[u64]) -> Vec<Vec<u32>> {
    env.client(ToScheduler::WhoHas {
        id: 99,
        keys: keys.iter().map(|&k| Key(k)).collect(),
    });
    match answers(env).pop() {
        Some((99, CoordReply::Holders(h))) => h
            .into_iter()
            .map(|ranks| ranks.into_iter().map(|r| r.0).collect())
            .collect(),
        other => panic!("who_has answered {other:?}"),
    }
}

#[test]
fn replicate_copies_onto_every_worker_and_answers_once_all_arrived() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1), (4, 1)]);
    env.client(ToScheduler::Scatter {
        key: Key(1),
        worker: Rank(3),
        nbytes: 1000,
    });
    env.finish_as(Rank(3), 1, 0, 1000);
    assert_eq!(holders(&mut env, &[1, 7]), vec![vec![3], vec![]]);
    env.client(ToScheduler::Replicate {
        id: 5,
        keys: vec![Key(1)],
        n: None,
    });
    assert_eq!(
        copy_orders(&mut env),
        vec![(2, vec![(1, 3)]), (4, vec![(1, 3)])]
    );
    env.send(Rank(4), ToScheduler::AddReplicas(vec![Key(1)]));
    assert!(answers(&mut env).is_empty(), "one copy is still on its way");
    env.send(Rank(2), ToScheduler::AddReplicas(vec![Key(1)]));
    assert_eq!(answers(&mut env), vec![(5, CoordReply::Done)]);
    assert_eq!(holders(&mut env, &[1]), vec![vec![3, 4, 2]]);
    // A task reading the value finishes: the copies stay (as a broadcast value's).
    env.submit(vec![task(2, &[1])]);
    assert_eq!(env.placements().len(), 1);
    env.finish(2, 8);
    assert!(released(&env.take_worker_messages()).is_empty());
    // Already everywhere: answered at once, nothing ordered.
    env.client(ToScheduler::Replicate {
        id: 6,
        keys: vec![Key(1)],
        n: Some(2),
    });
    assert!(copy_orders(&mut env).is_empty());
    assert_eq!(answers(&mut env), vec![(6, CoordReply::Done)]);
    // Released by the client: every copy is freed.
    env.release(&[1]);
    assert_eq!(
        released(&env.take_worker_messages()),
        vec![(2, 1), (3, 1), (4, 1)]
    );
}

#[test]
fn replicate_to_n_goes_to_the_workers_holding_least_and_a_failed_copy_settles() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1), (4, 1)]);
    // Worker 4 holds a large value, worker 3 a small one, worker 2 the values to copy.
    for (key, worker, nbytes) in [(1, 2, 10), (2, 2, 10), (3, 4, 5000), (4, 3, 100)] {
        env.client(ToScheduler::Scatter {
            key: Key(key),
            worker: Rank(worker),
            nbytes,
        });
        env.finish_as(Rank(worker), key, 0, nbytes);
    }
    env.client(ToScheduler::Replicate {
        id: 1,
        keys: vec![Key(1), Key(2)],
        n: Some(2),
    });
    assert_eq!(copy_orders(&mut env), vec![(3, vec![(1, 2), (2, 2)])]);
    // The holder lost one value before it was fetched: the copy failed, the answer comes.
    env.send(Rank(3), ToScheduler::AddReplicas(vec![Key(1)]));
    assert!(answers(&mut env).is_empty());
    env.send(Rank(3), ToScheduler::CopyFailed(vec![Key(2)]));
    assert_eq!(answers(&mut env), vec![(1, CoordReply::Done)]);
    assert_eq!(holders(&mut env, &[1, 2]), vec![vec![2, 3], vec![2]]);
}

#[test]
fn replicate_refuses_keys_without_a_value_and_n_zero() {
    let mut env = TestEnv::new(&[(2, 1), (3, 1)]);
    env.submit(vec![task(1, &[]), task(2, &[])]);
    assert_eq!(env.placements().len(), 2);
    env.finish(1, 8);
    env.client(ToScheduler::Replicate {
        id: 1,
        keys: vec![Key(1), Key(2)],
        n: None,
    });
    match answers(&mut env).as_slice() {
        [(1, CoordReply::Refused(why))] => {
            assert!(why.contains("-2 is not finished"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(copy_orders(&mut env).is_empty(), "nothing copied");
    env.client(ToScheduler::Replicate {
        id: 2,
        keys: vec![Key(1)],
        n: Some(0),
    });
    match answers(&mut env).as_slice() {
        [(2, CoordReply::Refused(why))] => assert!(why.contains("at least 1"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A worker's task client may ask only about its own keys.
    env.send(
        Rank(2),
        ToScheduler::WhoHas {
            id: 3,
            keys: vec![Key(1)],
        },
    );
    let (_, message) = env.aborted.clone().expect("aborted");
    assert!(message.contains("which it did not make"), "{message}");
}
