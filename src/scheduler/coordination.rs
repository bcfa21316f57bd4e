//! Coordination primitives the scheduler holds for the program and its tasks, as Dask's
//! scheduler does: named queues, variables, locks and semaphores (a lock is a semaphore of
//! one lease), and events. A request that must wait (a `get` of an empty queue, an
//! `acquire` of a taken lock) is answered when it can be, or `TimedOut` at its deadline;
//! waiters are served in arrival order. Pure state: time is passed in.

use crate::protocol::{CoordOp, CoordReply, Rank};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A semaphore's leases.
struct Semaphore {
    max_leases: u32,
    /// Who holds a lease: the requester's rank and its lease id.
    held: Vec<(Rank, u64)>,
}

/// A request that waits.
struct Waiter {
    from: Rank,
    id: u64,
    op: CoordOp,
    deadline: Option<Instant>,
}

/// An answer to send: to `rank`, for its request `id`.
pub type Answer = (Rank, u64, CoordReply);

/// The primitives and the requests waiting on them.
#[derive(Default)]
pub struct Coordination {
    queues: FxHashMap<String, VecDeque<Vec<u8>>>,
    variables: FxHashMap<String, Vec<u8>>,
    semaphores: FxHashMap<String, Semaphore>,
    events: FxHashMap<String, bool>,
    waiting: Vec<Waiter>,
}

impl Coordination {
    /// Handles request `id` of `from`, appending the answers it makes (to it, and to
    /// waiters it lets go on) to `answers`.
    pub fn handle(
        &mut self,
        from: Rank,
        id: u64,
        op: CoordOp,
        now: Instant,
        answers: &mut Vec<Answer>,
    ) {
        let reply = match op {
            CoordOp::QueuePut { name, value } => {
                match self.first_waiter(
                    |op| matches!(op, CoordOp::QueueGet { name: n, .. } if *n == name),
                ) {
                    Some(waiter) => {
                        answers.push((waiter.from, waiter.id, CoordReply::Value(value)))
                    }
                    None => self.queues.entry(name).or_default().push_back(value),
                }
                CoordReply::Done
            }
            CoordOp::QueueGet {
                ref name,
                timeout_ms,
            } => match self.queues.get_mut(name).and_then(VecDeque::pop_front) {
                Some(value) => CoordReply::Value(value),
                None => return self.wait(from, id, op.clone(), timeout_ms, now, answers),
            },
            CoordOp::QueueSize { name } => {
                CoordReply::Count(self.queues.get(&name).map_or(0, |q| q.len() as u64))
            }
            CoordOp::VariableSet { name, value } => {
                while let Some(waiter) = self.first_waiter(
                    |op| matches!(op, CoordOp::VariableGet { name: n, .. } if *n == name),
                ) {
                    answers.push((waiter.from, waiter.id, CoordReply::Value(value.clone())));
                }
                self.variables.insert(name, value);
                CoordReply::Done
            }
            CoordOp::VariableGet {
                ref name,
                timeout_ms,
            } => match self.variables.get(name) {
                Some(value) => CoordReply::Value(value.clone()),
                None => return self.wait(from, id, op.clone(), timeout_ms, now, answers),
            },
            CoordOp::VariableDelete { name } => {
                self.variables.remove(&name);
                CoordReply::Done
            }
            CoordOp::Acquire {
                ref name,
                max_leases,
                lease,
                timeout_ms,
            } => {
                if max_leases == 0 {
                    CoordReply::Refused(format!("{name} must have at least one lease"))
                } else {
                    let semaphore = self.semaphores.entry(name.clone()).or_insert(Semaphore {
                        max_leases,
                        held: Vec::new(),
                    });
                    if semaphore.max_leases != max_leases {
                        CoordReply::Refused(format!(
                            "{name} has {} leases, not {max_leases}: every handle on it must \
                             give the same number",
                            semaphore.max_leases
                        ))
                    } else if semaphore.held.len() < max_leases as usize {
                        semaphore.held.push((from, lease));
                        CoordReply::Done
                    } else {
                        return self.wait(from, id, op.clone(), timeout_ms, now, answers);
                    }
                }
            }
            CoordOp::Release { name, lease } => {
                let held = self
                    .semaphores
                    .get_mut(&name)
                    .and_then(|s| Some((s.held.iter().position(|h| *h == (from, lease))?, s)));
                match held {
                    None => CoordReply::Refused(format!(
                        "{name} is not held by this handle: release only what was acquired"
                    )),
                    Some((position, semaphore)) => {
                        semaphore.held.swap_remove(position);
                        if let Some(waiter) = self.first_waiter(
                            |op| matches!(op, CoordOp::Acquire { name: n, .. } if *n == name),
                        ) && let CoordOp::Acquire { lease, .. } = waiter.op
                        {
                            let semaphore = self.semaphores.get_mut(&name).expect("held above");
                            semaphore.held.push((waiter.from, lease));
                            answers.push((waiter.from, waiter.id, CoordReply::Done));
                        }
                        CoordReply::Done
                    }
                }
            }
            CoordOp::EventSet { name, set } => {
                if set {
                    while let Some(waiter) = self.first_waiter(
                        |op| matches!(op, CoordOp::EventWait { name: n, .. } if *n == name),
                    ) {
                        answers.push((waiter.from, waiter.id, CoordReply::Done));
                    }
                }
                self.events.insert(name, set);
                CoordReply::Done
            }
            CoordOp::EventWait {
                ref name,
                timeout_ms,
            } => {
                if self.events.get(name).copied().unwrap_or(false) {
                    CoordReply::Done
                } else {
                    return self.wait(from, id, op.clone(), timeout_ms, now, answers);
                }
            }
        };
        answers.push((from, id, reply));
    }

    /// Answers `TimedOut` to the waiters whose deadline has passed.
    pub fn tick(&mut self, now: Instant, answers: &mut Vec<Answer>) {
        self.waiting.retain(|w| {
            let late = w.deadline.is_some_and(|d| d <= now);
            if late {
                answers.push((w.from, w.id, CoordReply::TimedOut));
            }
            !late
        });
    }

    /// Requests waiting.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Removes and returns the oldest waiter whose request `matches`.
    fn first_waiter(&mut self, matches: impl Fn(&CoordOp) -> bool) -> Option<Waiter> {
        let position = self.waiting.iter().position(|w| matches(&w.op))?;
        Some(self.waiting.remove(position))
    }

    /// Makes request `id` of `from` wait, at most `timeout_ms` (none left: `TimedOut` now).
    fn wait(
        &mut self,
        from: Rank,
        id: u64,
        op: CoordOp,
        timeout_ms: Option<u64>,
        now: Instant,
        answers: &mut Vec<Answer>,
    ) {
        if timeout_ms == Some(0) {
            answers.push((from, id, CoordReply::TimedOut));
            return;
        }
        let deadline = timeout_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
        self.waiting.push(Waiter {
            from,
            id,
            op,
            deadline,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Coordination, from: u32, id: u64, op: CoordOp, now: Instant) -> Vec<Answer> {
        let mut answers = Vec::new();
        c.handle(Rank(from), id, op, now, &mut answers);
        answers
    }

    #[test]
    fn queues_hand_values_to_waiting_getters_in_order() {
        let (mut c, now) = (Coordination::default(), Instant::now());
        let get = |timeout_ms| CoordOp::QueueGet {
            name: "q".into(),
            timeout_ms,
        };
        assert!(run(&mut c, 1, 1, get(None), now).is_empty(), "waits");
        assert!(run(&mut c, 2, 1, get(None), now).is_empty());
        let put = |v: u8| CoordOp::QueuePut {
            name: "q".into(),
            value: vec![v],
        };
        assert_eq!(
            run(&mut c, 3, 9, put(7), now),
            vec![
                (Rank(1), 1, CoordReply::Value(vec![7])),
                (Rank(3), 9, CoordReply::Done)
            ]
        );
        run(&mut c, 3, 10, put(8), now);
        run(&mut c, 3, 11, put(9), now);
        let size = CoordOp::QueueSize { name: "q".into() };
        assert_eq!(
            run(&mut c, 1, 2, size, now),
            vec![(Rank(1), 2, CoordReply::Count(1))]
        );
        assert_eq!(
            run(&mut c, 1, 3, get(Some(0)), now),
            vec![(Rank(1), 3, CoordReply::Value(vec![9]))]
        );
        // Empty: a zero timeout answers at once, another at its deadline.
        assert_eq!(
            run(&mut c, 1, 4, get(Some(0)), now),
            vec![(Rank(1), 4, CoordReply::TimedOut)]
        );
        run(&mut c, 1, 5, get(Some(100)), now);
        let mut answers = Vec::new();
        c.tick(now + Duration::from_millis(50), &mut answers);
        assert!(answers.is_empty());
        c.tick(now + Duration::from_millis(100), &mut answers);
        assert_eq!(answers, vec![(Rank(1), 5, CoordReply::TimedOut)]);
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn variables_wake_every_waiter_and_stay_set() {
        let (mut c, now) = (Coordination::default(), Instant::now());
        let get = CoordOp::VariableGet {
            name: "v".into(),
            timeout_ms: None,
        };
        run(&mut c, 1, 1, get.clone(), now);
        run(&mut c, 2, 1, get.clone(), now);
        let set = CoordOp::VariableSet {
            name: "v".into(),
            value: vec![4],
        };
        assert_eq!(run(&mut c, 3, 1, set, now).len(), 3);
        assert_eq!(
            run(&mut c, 4, 1, get.clone(), now),
            vec![(Rank(4), 1, CoordReply::Value(vec![4]))]
        );
        run(
            &mut c,
            4,
            2,
            CoordOp::VariableDelete { name: "v".into() },
            now,
        );
        assert!(run(&mut c, 4, 3, get, now).is_empty(), "waits again");
    }

    #[test]
    fn semaphores_grant_leases_up_to_their_size_and_release_only_held_ones() {
        let (mut c, now) = (Coordination::default(), Instant::now());
        let acquire = |lease, max_leases| CoordOp::Acquire {
            name: "s".into(),
            max_leases,
            lease,
            timeout_ms: None,
        };
        let release = |lease| CoordOp::Release {
            name: "s".into(),
            lease,
        };
        assert_eq!(run(&mut c, 1, 1, acquire(1, 2), now)[0].2, CoordReply::Done);
        assert_eq!(run(&mut c, 2, 1, acquire(1, 2), now)[0].2, CoordReply::Done);
        assert!(
            run(&mut c, 3, 1, acquire(1, 2), now).is_empty(),
            "full: waits"
        );
        assert!(matches!(
            run(&mut c, 3, 2, acquire(2, 3), now)[0].2,
            CoordReply::Refused(ref why) if why.contains("has 2 leases")
        ));
        // Rank 3's lease 1 is not held; rank 1's is, and goes to the waiter.
        assert!(matches!(
            run(&mut c, 3, 3, release(1), now)[0].2,
            CoordReply::Refused(_)
        ));
        assert_eq!(
            run(&mut c, 1, 2, release(1), now),
            vec![
                (Rank(3), 1, CoordReply::Done),
                (Rank(1), 2, CoordReply::Done)
            ]
        );
        assert_eq!(run(&mut c, 3, 4, release(1), now)[0].2, CoordReply::Done);
    }

    #[test]
    fn events_release_their_waiters_when_set() {
        let (mut c, now) = (Coordination::default(), Instant::now());
        let wait = CoordOp::EventWait {
            name: "e".into(),
            timeout_ms: Some(1_000),
        };
        run(&mut c, 2, 1, wait.clone(), now);
        let set = |set| CoordOp::EventSet {
            name: "e".into(),
            set,
        };
        assert_eq!(
            run(&mut c, 1, 1, set(true), now),
            vec![
                (Rank(2), 1, CoordReply::Done),
                (Rank(1), 1, CoordReply::Done)
            ]
        );
        assert_eq!(run(&mut c, 2, 2, wait.clone(), now)[0].2, CoordReply::Done);
        run(&mut c, 1, 2, set(false), now);
        assert!(run(&mut c, 2, 3, wait, now).is_empty());
    }
}
