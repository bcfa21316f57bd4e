//! Work and values spread over the workers, as Dask's `client.run`, `client.scatter` of a
//! list, `client.replicate` and `client.who_has`: a function run once on each worker, a
//! collection scattered one future per element, values copied onto more workers, and
//! where values are.

use super::{Client, Future};
use crate::error::{Error, Result};
use crate::protocol::{CoordReply, Rank, TaskOptions, ToScheduler};
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
                self.with_options(TaskOptions::default().workers([rank.0]).pure(false))
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

    /// The workers holding each future's value, in the order of `futures` (Dask's
    /// `client.who_has`): one for a value just computed, more once tasks elsewhere read it
    /// or [`replicate`](Self::replicate) copied it; none for a future that has not finished,
    /// failed or was cancelled.
    ///
    /// ```
    /// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
    ///     let data = client.scatter(vec![1.0f64; 1000]).unwrap();
    ///     client.wait(&[data.clone()]).unwrap();
    ///     assert_eq!(client.who_has(&[data.clone()]).unwrap()[0].len(), 1);
    ///     client.replicate(&[data.clone()], None).unwrap();
    ///     assert_eq!(client.who_has(&[data]).unwrap()[0].len(), client.workers().len());
    /// });
    /// ```
    pub fn who_has<T>(&self, futures: &[Future<T>]) -> Result<Vec<Vec<Rank>>> {
        let keys = futures.iter().map(Future::key).collect();
        match self.shared.ask(|id| ToScheduler::WhoHas { id, keys })? {
            CoordReply::Holders(holders) if holders.len() == futures.len() => Ok(holders),
            other => Err(Error::Config(format!(
                "the scheduler answered {other:?} to who_has of {} futures",
                futures.len()
            ))),
        }
    }

    /// Copies the values of `futures` onto `n` workers each (`None`: every worker), as
    /// Dask's `client.replicate`, so tasks that read them on those workers need no
    /// transfer. Waits for the futures to finish, then for the copies. The workers holding
    /// least get the copies, each fetching the value from a worker that holds it; a value
    /// already on `n` workers is left as it is (nothing is removed), and workers reserved
    /// for an MPI task are left out. A future that failed or was cancelled is an error
    /// naming it, and nothing is copied.
    pub fn replicate<T>(&self, futures: &[Future<T>], n: Option<usize>) -> Result<()> {
        self.wait(futures)?;
        let keys = futures.iter().map(Future::key).collect();
        let n = n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        match self
            .shared
            .ask(|id| ToScheduler::Replicate { id, keys, n })?
        {
            CoordReply::Done => Ok(()),
            CoordReply::Refused(why) => Err(Error::Config(why)),
            other => Err(Error::Config(format!(
                "the scheduler answered {other:?} to replicate"
            ))),
        }
    }
}
