//! Work spread over every worker, as Dask's `client.run` and `client.scatter` of a list: a
//! function run once on each worker, and a collection scattered one future per element.

use super::{Client, Future};
use crate::error::Result;
use crate::protocol::{Rank, TaskOptions};
use crate::task::TaskFn;
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Client {
    /// Runs `f()` once on every worker and returns each worker's rank with its result, in
    /// the order of [`workers`](Self::workers) (Dask's `client.run`). Each call is a task
    /// pinned to its worker, so it runs once that worker has a thread free; a failure on
    /// any worker is the error.
    ///
    /// ```
    /// fn answer() -> u32 { 42 }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let answers = client.run(answer).unwrap();
    ///     assert_eq!(answers.len(), client.workers().len());
    ///     assert!(answers.iter().all(|&(_, a)| a == 42));
    /// });
    /// ```
    pub fn run<F, T>(&self, f: F) -> Result<Vec<(Rank, T)>>
    where
        F: TaskFn<(), Output = T>,
        T: Serialize + DeserializeOwned + 'static,
    {
        let workers = self.workers().to_vec();
        let futures: Vec<Future<T>> = workers
            .iter()
            .map(|rank| {
                self.with_options(TaskOptions::default().workers([rank.0]))
                    .submit(f, ())
            })
            .collect();
        Ok(workers.into_iter().zip(self.gather(&futures)?).collect())
    }

    /// Scatters each of `values` on its own, round robin over the workers, and returns one
    /// future per value, in order (Dask's `client.scatter` of a list).
    ///
    /// ```
    /// fn len(v: Vec<u8>) -> usize { v.len() }
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let parts = client.scatter_each([vec![0u8; 3], vec![0u8; 5]]).unwrap();
    ///     let lengths = client.map(len, parts.iter());
    ///     assert_eq!(client.gather(&lengths).unwrap(), vec![3, 5]);
    /// });
    /// ```
    pub fn scatter_each<T: Serialize + 'static>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Future<T>>> {
        values
            .into_iter()
            .map(|value| self.scatter(value))
            .collect()
    }
}
