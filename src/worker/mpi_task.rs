//! MPI tasks on a worker: the functions they call ([`MpiTaskFn`], through an
//! [`MpiTrampoline`]) receive the communicator of the task's workers, and the worker's
//! communication thread runs them, since it is the one thread of the rank that calls MPI
//! (the scheduler sends a worker no other task while it is in one).

use super::executor::{TaskOutcome, as_task_of};
use super::{Phase, WorkerNode};
use crate::protocol::{Attempt, Bytes, Key, Payload, Rank, TaskCode, ToScheduler};
use crate::task::{
    CallError, FunctionTable, TaskInput, decode_args, describe_decode_error, encode_result,
};
use crate::transport::{CommunicatorTask, MpiComm, Outbox};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

/// The type-erased entry point of an MPI task's function.
pub type MpiTrampoline = fn(&MpiComm, &TaskInput<'_>) -> Result<Bytes, CallError>;

crate::task::fn_pointer!(MpiTrampoline);

/// A function that can run as an MPI task: its first parameter is the communicator of the
/// task's workers (`&MpiComm`), then the arguments `Args` (0 to 4).
///
/// Implemented for every zero-sized `Fn`: `fn` items and closures that capture nothing.
pub trait MpiTaskFn<Args>: Copy + Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Calls the function with the communicator and its arguments.
    fn call(self, comm: &MpiComm, args: Args) -> Self::Output;
}

macro_rules! impl_mpi_task_fn {
    ($($arg:ident),*) => {
        impl<Func, Ret, $($arg),*> MpiTaskFn<($($arg,)*)> for Func
        where
            Func: Fn(&MpiComm, $($arg),*) -> Ret + Copy + Send + Sync + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(self, comm: &MpiComm, ($($arg,)*): ($($arg,)*)) -> Ret {
                self(comm, $($arg),*)
            }
        }
    };
}

impl_mpi_task_fn!();
impl_mpi_task_fn!(A);
impl_mpi_task_fn!(A, B);
impl_mpi_task_fn!(A, B, C);
impl_mpi_task_fn!(A, B, C, D);

/// The trampoline of the MPI task function `F` with argument tuple `Args`.
pub fn mpi_trampoline_of<F, Args>() -> MpiTrampoline
where
    F: MpiTaskFn<Args>,
    Args: DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
{
    mpi_trampoline::<F, Args>
}

fn mpi_trampoline<F, Args>(comm: &MpiComm, input: &TaskInput<'_>) -> Result<Bytes, CallError>
where
    F: MpiTaskFn<Args>,
    Args: DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
{
    let args: Args = decode_args(input).map_err(describe_decode_error::<F>)?;
    let output = crate::task::conjure::<F>().call(comm, args);
    encode_result(&output)
}

/// An MPI task whose inputs are all here, for the communication thread to run.
pub(super) struct MpiJob {
    pub(super) rank: Rank,
    pub(super) key: Key,
    pub(super) attempt: Attempt,
    pub(super) code: Arc<TaskCode>,
    pub(super) functions: Arc<FunctionTable>,
    pub(super) deps: Vec<Payload>,
    /// Where the outcome goes: the worker's event channel.
    pub(super) report: Arc<dyn Fn(TaskOutcome) + Send + Sync>,
}

impl MpiJob {
    /// The job as work for the communication thread, which reports its outcome.
    pub(super) fn into_task(self) -> CommunicatorTask {
        Box::new(move |comm| {
            let outcome = self.run(comm);
            (self.report)(outcome);
        })
    }

    fn run(&self, comm: &MpiComm) -> TaskOutcome {
        let input = TaskInput::of(&self.code, &self.deps, &self.functions);
        let bytes_in = input.bytes_read();
        let started_us = crate::trace::now_us();
        let started = Instant::now();
        let result = as_task_of(self.rank, || {
            catch_unwind(AssertUnwindSafe(|| {
                let trampoline: MpiTrampoline = self
                    .functions
                    .resolve(self.code.func)
                    .map_err(CallError::Corrupt)?;
                trampoline(comm, &input)
            }))
            .unwrap_or_else(|payload| Err(CallError::Failed(crate::task::panic_message(&*payload))))
        });
        TaskOutcome {
            key: self.key,
            attempt: self.attempt,
            result: result.map(std::sync::Arc::new),
            duration: started.elapsed(),
            started_us,
            thread: 0,
            bytes_in,
            restored: false,
        }
    }
}

impl WorkerNode {
    /// The MPI task `key` holds every input (`deps`): it waits for `MpiGo`, which the
    /// scheduler sends once every member said `MpiReady`.
    pub(super) fn prepare_mpi(&mut self, key: Key, deps: Vec<Payload>, out: &mut Outbox) {
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        task.phase = Phase::Prepared;
        let attempt = task.attempt;
        let job = MpiJob {
            rank: self.rank,
            key,
            attempt,
            code: task.code.clone(),
            functions: self.functions.clone(),
            deps,
            report: self
                .mpi_report
                .clone()
                .expect("checked when the task arrived"),
        };
        self.mpi_prepared.insert(key, job);
        out.push(Rank::SCHEDULER, &ToScheduler::MpiReady { key, attempt });
    }

    /// Every member of the MPI task `key` holds its inputs: enter it, on this thread.
    pub(super) fn on_mpi_go(&mut self, key: Key, attempt: Attempt, out: &mut Outbox) {
        let Some(task) = self
            .tasks
            .get_mut(&key)
            .filter(|t| t.attempt == attempt && t.phase == Phase::Prepared)
        else {
            return;
        };
        let Some(job) = self.mpi_prepared.remove(&key) else {
            self.protocol_error(
                Rank::SCHEDULER,
                format!("MpiGo for task {key}, whose inputs are not all here"),
            );
            return;
        };
        task.phase = Phase::Queued;
        out.run_with_communicator(task.group.clone(), job.into_task());
    }

    /// Ends this member's part of the MPI task `key` if it has not entered MPI (called off
    /// by the scheduler, or an input was lost: `failure`). The first member reports a
    /// failure as the task's; every other end is reported as the member's part. Once in
    /// MPI the task runs to its end: the other members may be waiting for this one there.
    pub(super) fn call_off_mpi(
        &mut self,
        key: Key,
        attempt: Attempt,
        failure: Option<String>,
        out: &mut Outbox,
    ) {
        if self
            .tasks
            .get(&key)
            .is_none_or(|t| t.phase == Phase::Queued)
        {
            return;
        }
        let task = self.tasks.remove(&key).expect("checked above");
        self.reading.remove(&key);
        self.mpi_prepared.remove(&key);
        match failure {
            Some(message) if task.group.first() == Some(&self.rank) => out.push(
                Rank::SCHEDULER,
                &ToScheduler::TaskFailed {
                    key,
                    attempt,
                    message,
                    run: super::not_run(),
                },
            ),
            failure => out.push(
                Rank::SCHEDULER,
                &ToScheduler::MpiPartDone {
                    key,
                    attempt,
                    failure,
                },
            ),
        }
    }
}
