//! Submitting calls with options: [`Submitter`], behind `Client::submit`, `map` and their
//! `try_` and MPI forms.

use super::{CallArg, Client, Future, MAP_BATCH, has_large_value, pure};
use crate::protocol::{FnId, TaskOptions};
use crate::task::{self, FnPointer, IntoArgs, TaskFn};
use crate::worker::MpiTaskFn;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;

/// Submits tasks with options; see [`Client::with_options`].
pub struct Submitter<'a> {
    pub(super) client: &'a Client,
    pub(super) options: TaskOptions,
}

impl Submitter<'_> {
    /// [`Client::submit`] with these options.
    pub fn submit<F, Args, X>(&self, f: F, args: X) -> Future<F::Output>
    where
        F: TaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        X: IntoArgs<Args, CallArg>,
    {
        let _ = f;
        let trampoline = task::trampoline_of::<F, Args>();
        self.submit_each(trampoline, task::function_name::<F>, std::iter::once(args))
            .pop()
            .expect("one call")
    }

    /// [`Client::submit_mpi`] with these options (priority, pinning and resources apply
    /// to every worker of the task; retries are refused).
    pub fn submit_mpi<F, Args, X>(&self, f: F, args: X, n_workers: usize) -> Future<F::Output>
    where
        F: MpiTaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        X: IntoArgs<Args, CallArg>,
    {
        let _ = f;
        let mut options = self.options.clone();
        options.mpi_workers = Some(u32::try_from(n_workers).unwrap_or(u32::MAX));
        let submitter = Submitter {
            client: self.client,
            options,
        };
        let trampoline = crate::worker::mpi_trampoline_of::<F, Args>();
        submitter
            .submit_each(trampoline, task::function_name::<F>, std::iter::once(args))
            .pop()
            .expect("one call")
    }

    /// [`Client::try_submit`] with these options.
    pub fn try_submit<F, Args, X, T, E>(&self, f: F, args: X) -> Future<T>
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned + 'static,
        T: Serialize + 'static,
        E: Display,
        X: IntoArgs<Args, CallArg>,
    {
        let _ = f;
        let trampoline = task::fallible_trampoline_of::<F, Args, T, E>();
        self.submit_each(trampoline, task::function_name::<F>, std::iter::once(args))
            .pop()
            .expect("one call")
    }

    /// [`Client::map`] with these options.
    pub fn map<F, Args, I>(&self, f: F, items: I) -> Vec<Future<F::Output>>
    where
        F: TaskFn<Args>,
        Args: DeserializeOwned + 'static,
        F::Output: Serialize + 'static,
        I: IntoIterator,
        I::Item: IntoArgs<Args, CallArg>,
    {
        let _ = f;
        let trampoline = task::trampoline_of::<F, Args>();
        self.submit_each(trampoline, task::function_name::<F>, items)
    }

    /// [`Client::try_map`] with these options.
    pub fn try_map<F, Args, I, T, E>(&self, f: F, items: I) -> Vec<Future<T>>
    where
        F: TaskFn<Args, Output = Result<T, E>>,
        Args: DeserializeOwned + 'static,
        T: Serialize + 'static,
        E: Display,
        I: IntoIterator,
        I::Item: IntoArgs<Args, CallArg>,
    {
        let _ = f;
        let trampoline = task::fallible_trampoline_of::<F, Args, T, E>();
        self.submit_each(trampoline, task::function_name::<F>, items)
    }

    fn submit_each<T, Args, X: IntoArgs<Args, CallArg>>(
        &self,
        trampoline: impl FnPointer,
        name: fn() -> String,
        calls: impl IntoIterator<Item = X>,
    ) -> Vec<Future<T>> {
        let client = self.client;
        let func = client.register(trampoline, name);
        let pure = !self.options.impure;
        // With --checkpoint, the program's pure calls (not MPI tasks) get names that hold
        // across runs of this executable.
        let stable_func = (pure
            && client.shared.checkpoint
            && client.shared.hosted.is_none()
            && self.options.mpi_workers.is_none())
        .then(|| client.shared.lock().functions.stable_name(func))
        .flatten();
        // The calls' futures in order; a new call's place is filled once it is submitted.
        let mut futures: Vec<Option<Future<T>>> = Vec::new();
        let mut pending = PendingCalls::default();
        // The pure calls of this map so far, by name: the place of the first.
        let mut seen: FxHashMap<pure::Content, usize> = FxHashMap::default();
        // Places of repeated calls, and the place of the call they repeat.
        let mut repeats = Vec::new();
        for call in calls {
            let place = futures.len();
            let encoded = call.into_slots();
            let name = match &encoded {
                Ok(args) if pure => Some(pure::content(func, &[], &self.options, args)),
                _ => None,
            };
            if let Some(name) = name {
                if let Some(&first) = seen.get(&name) {
                    repeats.push((place, first));
                    futures.push(None);
                    continue;
                }
                seen.insert(name, place);
                if let Some(live) = client.shared.pure_future(name) {
                    futures.push(Some(live));
                    continue;
                }
            }
            futures.push(None);
            let checkpoint = match (&encoded, stable_func) {
                (Ok(args), Some(stable_func)) => {
                    let state = client.shared.lock();
                    pure::stable_content(stable_func, &self.options, args, |key| {
                        state.keys.get(&key).and_then(|entry| entry.stable)
                    })
                }
                _ => None,
            };
            let sent_ahead = encoded.as_ref().is_ok_and(|args| has_large_value(args));
            pending
                .calls
                .push(encoded.map(|args| client.send_large_args_direct(args, &self.options)));
            pending.places.push(place);
            pending.names.push(name);
            pending.checkpoints.push(checkpoint);
            // A call whose large arguments left for a worker is submitted at once, so that
            // worker starts on it while the next call is encoded.
            if sent_ahead || pending.calls.len() == MAP_BATCH {
                pending.submit(client, func, &self.options, &mut futures);
            }
        }
        pending.submit(client, func, &self.options, &mut futures);
        for (place, first) in repeats {
            futures[place] = futures[first].clone();
        }
        futures
            .into_iter()
            .map(|future| future.expect("every call has its future"))
            .collect()
    }
}

/// Calls of one `submit_each` encoded and not submitted yet.
#[derive(Default)]
struct PendingCalls {
    /// Their arguments.
    calls: Vec<bincode::Result<Vec<CallArg>>>,
    /// Their places among the calls' futures.
    places: Vec<usize>,
    /// Their names as pure calls.
    names: Vec<Option<pure::Content>>,
    /// Their names across runs (`--checkpoint`).
    checkpoints: Vec<Option<pure::Content>>,
}

impl PendingCalls {
    /// Submits the calls, puts their futures in their places, and leaves `self` empty.
    fn submit<T>(
        &mut self,
        client: &Client,
        func: FnId,
        options: &TaskOptions,
        futures: &mut [Option<Future<T>>],
    ) {
        if self.calls.is_empty() {
            return;
        }
        let submitted = client.submit_calls(
            func,
            &[],
            std::mem::take(&mut self.calls),
            &self.checkpoints,
            options,
        );
        client.shared.remember_pure(&self.names, &submitted);
        self.names.clear();
        self.checkpoints.clear();
        for (place, future) in self.places.drain(..).zip(submitted) {
            futures[place] = Some(future);
        }
    }
}
