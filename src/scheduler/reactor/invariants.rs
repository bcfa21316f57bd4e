//! The scheduler's bookkeeping checked for consistency after every step of the tests.

use super::Scheduler;
use crate::scheduler::policy;
use crate::scheduler::state::TaskState;

impl Scheduler {
    #[cfg(test)]
    /// Checks the bookkeeping for consistency; panics with a description when it is broken.
    /// Tests call it after every step.
    pub fn check_invariants(&self) {
        for (key, task) in self.tasks.iter() {
            let key = &key;
            let waiting = task
                .deps
                .iter()
                .filter(|d| {
                    !matches!(
                        self.tasks.get(d).map(|t| &t.state),
                        Some(TaskState::Memory { .. })
                    )
                })
                .count() as u32;
            if !task.state.is_final() {
                assert_eq!(task.waiting_on, waiting, "waiting_on of {key}");
                for dep in &task.deps {
                    let dep_task = self
                        .tasks
                        .get(dep)
                        .unwrap_or_else(|| panic!("{key} depends on {dep}, which was forgotten"));
                    assert!(dep_task.dependents.contains(key), "{dep} lists {key}");
                }
            }
            let unfinished = task
                .dependents
                .iter()
                .filter(|d| self.tasks.get(d).is_some_and(|t| !t.state.is_final()))
                .count() as u32;
            assert_eq!(
                task.unfinished_dependents, unfinished,
                "unfinished_dependents of {key}"
            );
            assert!(
                task.client_wants || task.unfinished_dependents > 0,
                "{key} should have been forgotten"
            );
            if matches!(task.state, TaskState::Ready) {
                if task.is_mpi() {
                    assert!(
                        self.mpi_ready.contains(key),
                        "MPI task {key} is not in line"
                    );
                } else {
                    assert!(self.ready.contains(*key), "{key} is ready but not queued");
                }
            }
            match &task.state {
                TaskState::Ready => assert_eq!(task.waiting_on, 0, "{key} ready but waiting"),
                TaskState::Processing { worker, .. } => {
                    let w = &self.workers[self.worker_index(*worker).expect("worker")];
                    assert_eq!(
                        w.processing.contains(key),
                        !task.scattered,
                        "{key} processing on {worker}"
                    );
                }
                TaskState::Memory { who_has } => {
                    assert!(!who_has.is_empty(), "{key} has no holder")
                }
                _ => {}
            }
        }
        let ready = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Ready) && !t.is_mpi())
            .count();
        assert_eq!(self.ready.len(), ready, "ready count");
        for (i, w) in self.workers.iter().enumerate() {
            let expected = w.hello.is_some().then(|| policy::load_key(w));
            assert_eq!(self.by_load.load(i), expected, "load index of {}", w.rank);
        }
        assert!(self.by_load.is_consistent(), "load index");
        for worker in &self.workers {
            for key in &worker.processing {
                // The members of a sent MPI task hold it until each reports its part.
                if worker
                    .mpi
                    .is_some_and(|seat| seat.key == *key && seat.running)
                {
                    continue;
                }
                assert!(
                    matches!(
                        self.tasks.get(key).map(|t| &t.state),
                        Some(TaskState::Processing { worker: w, .. }) if *w == worker.rank
                    ),
                    "{} lists {key} as processing",
                    worker.rank
                );
            }
        }
    }
}
