//! `iterate_overlap` on chunks that stay in their workers' memory: one MPI task over the
//! workers runs every step, and only halos move, worker to worker, each step.
//!
//! The graph way (`map_overlap` and `persist` per step) cuts each chunk's halos by tasks
//! of their own, assembles every padded chunk by a copy, cuts the halo off again by
//! another, and waits for the scheduler between steps. Here, instead:
//!
//! 1. each chunk of the persisted array is copied once, on the worker that holds it, into a
//!    padded block with room for its halo (a *deposit* task pinned to that worker), kept in
//!    this process's table of resident blocks;
//! 2. one MPI task on every worker runs all the steps. Per step and per axis with a halo,
//!    in axis order, each block sends its edge cells (every other axis at its padded
//!    length) to its neighbours' halos, by `MPI_Isend`/`MPI_Recv` between workers or a copy
//!    between blocks of one worker, and fills halos at the array's edges by the boundary
//!    rule; the axis order fills corners as `numpy.pad` along each axis in turn does. Then
//!    the function runs on every padded block, and its output, of the same shape, is the
//!    next step's block: its halo is overwritten by the next exchange, so nothing is
//!    trimmed between steps;
//! 3. a *collect* task pinned to each block's worker takes the last step's block, its halo
//!    cut off, as the chunk of the result.
//!
//! The values are those of the graph way, bit for bit: the same function on the same
//! padded blocks. A function that panics or changes a block's shape on one worker fails
//! the task on all of them (the members agree after every step), and every worker drops
//! its blocks. The blocks in the table are not counted against `--memory-limit`, and never
//! spill.
//!
//! The way is taken when it can be: under MPI with workers that run MPI tasks, every chunk
//! held by one of them, and every chunk along an axis with a halo at least as long as the
//! halo. Otherwise (local mode, a task client, deeper halos) `iterate_overlap` runs its
//! steps as graphs.
//!
//! Here: the table of resident blocks, the tasks around the MPI task and the call that
//! submits them; the chunks' geometry in [`plan`], the MPI task in [`steps`].

use super::super::dtype::{Element, Scalar};
use super::super::{Array, Expr};
use super::Boundary;
use crate::client::{Client, Future};
use crate::error::{Error, Result, TaskError};
use crate::protocol::{Rank, TaskOptions, decode_value, encode_value};
use crate::task::TaskFn;
use ndarray::{ArrayD, IxDyn, Slice};
use plan::Plan;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

mod plan;
mod steps;

/// Which blocks of a run an entry of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Deposited, for the MPI task to take.
    Input,
    /// The last step's, for the collect tasks to take.
    Output,
}

type Held = Box<dyn Any + Send>;

/// This process's resident blocks, by (run, stage, chunk).
static HELD: Mutex<BTreeMap<(u64, Stage, usize), Held>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<(u64, Stage, usize), Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs of this client: one id each.
static RUNS: AtomicU64 = AtomicU64::new(1);

/// `value` as an element of type `T`, if it is one (`value` already cast to `T`'s type).
fn element_of<T: Element>(value: Scalar) -> Option<T> {
    let bytes = match value {
        Scalar::Bool(v) => encode_value(&v),
        Scalar::U8(v) => encode_value(&v),
        Scalar::I32(v) => encode_value(&v),
        Scalar::I64(v) => encode_value(&v),
        Scalar::F32(v) => encode_value(&v),
        Scalar::F64(v) => encode_value(&v),
    }
    .ok()?;
    decode_value(&bytes).ok()
}

/// The task that copies chunk `chunk` of run `run` into a padded block of this worker's
/// table (`pads`: the halo cells before and after it along each axis).
fn deposit<T: Element>(
    run: u64,
    chunk: u64,
    pads: Vec<(usize, usize)>,
    block: ArrayD<T>,
) -> std::result::Result<u8, String> {
    if pads.len() != block.ndim() {
        return Err(format!(
            "{} halo widths for a chunk of shape {:?}",
            pads.len(),
            block.shape()
        ));
    }
    let Some(&first) = block.iter().next() else {
        return Err(format!("an empty chunk, of shape {:?}", block.shape()));
    };
    let shape: Vec<usize> = block
        .shape()
        .iter()
        .zip(&pads)
        .map(|(&n, &(lo, hi))| n + lo + hi)
        .collect();
    // The halo's cells are written by every step's exchange before the function reads them.
    let mut padded = ArrayD::from_elem(IxDyn(&shape), first);
    padded
        .slice_each_axis_mut(|a| {
            let (lo, _) = pads[a.axis.index()];
            Slice::from(lo..lo + block.shape()[a.axis.index()])
        })
        .assign(&block);
    let chunk = usize::try_from(chunk).map_err(|e| e.to_string())?;
    held().insert((run, Stage::Input, chunk), Box::new(padded));
    Ok(1)
}

/// The task that takes the result's chunk `chunk` of run `run` from this worker's table.
fn collect<T: Element>(run: u64, chunk: u64) -> std::result::Result<ArrayD<T>, String> {
    let taken = usize::try_from(chunk)
        .ok()
        .and_then(|chunk| held().remove(&(run, Stage::Output, chunk)));
    let block = taken.ok_or_else(|| {
        format!(
            "chunk {chunk} of the stencil's result is not on this worker (its MPI task failed, \
             or the chunk was taken already)"
        )
    })?;
    block
        .downcast::<ArrayD<T>>()
        .map(|block| *block)
        .map_err(|_| format!("chunk {chunk} of the stencil's result has another element type"))
}

/// The task that drops every block of run `run` from this worker's table.
fn forget(run: u64) -> usize {
    let mut table = held();
    let before = table.len();
    table.retain(|&(r, _, _), _| r != run);
    before - table.len()
}

/// The blocks of `run` at `stage` in this process's table, taken out of it.
fn take_all(run: u64, stage: Stage) -> Vec<(usize, Held)> {
    let mut table = held();
    let keys: Vec<_> = table
        .range((run, stage, 0)..=(run, stage, usize::MAX))
        .map(|(k, _)| *k)
        .collect();
    keys.into_iter()
        .map(|k| (k.2, table.remove(&k).expect("listed")))
        .collect()
}

/// `steps` steps of the stencil `F` on `x` (persisted) with resident chunks, or `None`
/// where that way cannot be taken (see the module's documentation).
pub(super) fn iterate<F, T>(
    x: &Array,
    client: &Client,
    depth: &[usize],
    boundary: Boundary,
    steps: usize,
) -> Result<Option<Array>>
where
    F: TaskFn<(ArrayD<T>,), Output = ArrayD<T>>,
    T: Element,
{
    if steps == 0 || T::DTYPE != x.dtype() || depth.len() != x.ndim() {
        return Ok(None);
    }
    let mut plan = Plan {
        run: 0,
        sizes: x.chunks().clone(),
        depth: depth.to_vec(),
        boundary,
        steps: steps as u64,
    };
    if plan.check().is_err() {
        return Ok(None);
    }
    if let Boundary::Constant(value) = boundary
        && element_of::<T>(Scalar::F64(value).cast(T::DTYPE)).is_none()
    {
        return Ok(None);
    }
    // Task clients cannot ask for the workers; they take the graph way.
    let Ok(info) = client.scheduler_info() else {
        return Ok(None);
    };
    let members: Vec<Rank> = info
        .workers
        .iter()
        .filter(|w| w.hello.mpi_group)
        .map(|w| w.rank)
        .collect();
    if members.is_empty() {
        return Ok(None);
    }
    let chunks = x.to_futures::<T>(client)?;
    client.wait(&chunks)?;
    let mut owners = Vec::with_capacity(chunks.len());
    for holders in client.who_has(&chunks)? {
        match holders.iter().find(|r| members.contains(r)) {
            Some(&rank) => owners.push(rank),
            None => return Ok(None),
        }
    }
    plan.run = RUNS.fetch_add(1, Ordering::Relaxed);
    let pinned =
        |rank: Rank| client.with_options(TaskOptions::default().workers([rank.0]).pure(false));
    let deposits: Vec<Future<u8>> = chunks
        .iter()
        .enumerate()
        .map(|(c, chunk)| {
            pinned(owners[c]).try_submit(deposit::<T>, (plan.run, c as u64, plan.pads_of(c), chunk))
        })
        .collect();
    let run = plan.run;
    let outcome = client
        .submit_mpi(
            steps::resident_loop::<F, T>,
            (plan, deposits),
            members.len(),
        )
        .result();
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(message)) => Some(Error::Task(TaskError::new(
            format!("iterate_overlap-{run}"),
            message,
        ))),
        Err(e) => Some(e),
    };
    if let Some(error) = failure {
        // Blocks deposited for a task that never ran; the members dropped their own.
        let forgotten: Vec<Future<usize>> = members
            .iter()
            .map(|&rank| pinned(rank).submit(forget, run))
            .collect();
        let _ = client.wait(&forgotten);
        return Err(error);
    }
    let parts: Vec<Future<()>> = (0..chunks.len())
        .map(|c| {
            pinned(owners[c])
                .try_submit(collect::<T>, (run, c as u64))
                .erase()
        })
        .collect();
    // Waited for, so that no block is left in a table if the result is dropped unread.
    client.wait(&parts)?;
    Ok(Some(Array::new(
        x.shape().to_vec(),
        x.chunks().clone(),
        x.dtype(),
        Expr::Stored(parts),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_go_in_padded_and_come_out_once() {
        let block =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let run = RUNS.fetch_add(1, Ordering::Relaxed) + 1_000_000;
        assert_eq!(deposit(run, 4, vec![(1, 1), (0, 2)], block.clone()), Ok(1));
        let taken = take_all(run, Stage::Input);
        assert_eq!(taken.len(), 1);
        let padded = taken
            .into_iter()
            .next()
            .unwrap()
            .1
            .downcast::<ArrayD<f64>>()
            .unwrap();
        assert_eq!(padded.shape(), &[4, 5]);
        // The chunk at rows 1..3 and columns 0..3 of its padded block.
        assert_eq!(padded.slice(ndarray::s![1..3, 0..3]).into_dyn(), block);
        held().insert((run, Stage::Output, 4), Box::new(block.clone()));
        assert!(
            collect::<f64>(run, 3)
                .unwrap_err()
                .contains("not on this worker")
        );
        assert!(
            collect::<i64>(run, 4)
                .unwrap_err()
                .contains("another element type")
        );
        held().insert((run, Stage::Output, 4), Box::new(block.clone()));
        assert_eq!(collect::<f64>(run, 4), Ok(block.clone()));
        held().insert((run, Stage::Input, 9), Box::new(block));
        assert_eq!(forget(run), 1);
        assert!(deposit(run, 0, vec![(1, 1)], ArrayD::<f64>::zeros(IxDyn(&[2, 2]))).is_err());
    }

    #[test]
    fn constants_become_elements_of_the_arrays_type() {
        assert_eq!(element_of::<f64>(Scalar::F64(1.5)), Some(1.5));
        assert_eq!(
            element_of::<i64>(Scalar::F64(-7.0).cast(i64::DTYPE)),
            Some(-7)
        );
        assert_eq!(element_of::<u8>(Scalar::F64(3.0).cast(u8::DTYPE)), Some(3));
    }
}
