//! The MPI task of a resident stencil: on every member, each step's halo exchange along
//! each axis, the function on every block, and the members' agreement on failures.

use super::plan::{Plan, Side, along, along_mut};
use super::{Stage, element_of, held, take_all};
use crate::collections::array::dtype::{Element, Scalar};
use crate::collections::array::overlap::Boundary;
use crate::protocol::{decode_owned, encode_owned};
use crate::task::TaskFn;
use crate::transport::MpiComm;
use crate::transport::mpi::task_comm::{self, Route};
use ndarray::{ArrayD, Axis, Slice};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// If any member failed (`failure`), every member's error: the first failure's message.
fn agree(comm: &MpiComm, failure: Option<String>) -> std::result::Result<(), String> {
    let mut failed = [i64::from(failure.is_some())];
    task_comm::max_all(comm, &mut failed);
    if failed[0] == 0 {
        return Ok(());
    }
    let mine = failure.unwrap_or_default();
    let messages = task_comm::all_gather_bytes(comm, mine.as_bytes());
    Err(messages
        .iter()
        .find(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "a member of the stencil's MPI task failed".to_string()))
}

/// The MPI task: every step of the stencil `F` on the blocks deposited for `plan.run`,
/// the last step's blocks (their halos cut off) left in the table for the collect tasks.
pub(super) fn resident_loop<F, T>(
    comm: &MpiComm,
    plan: Plan,
    _deposited: Vec<u8>,
) -> std::result::Result<(), String>
where
    F: TaskFn<(ArrayD<T>,), Output = ArrayD<T>>,
    T: Element,
{
    let taken = take_all(plan.run, Stage::Input);
    plan.check()?;
    let me = task_comm::rank(comm);
    let mut blocks = BTreeMap::new();
    let mut failure = None;
    for (chunk, block) in taken {
        match block.downcast::<ArrayD<T>>() {
            Ok(block) if chunk < plan.count() && block.shape() == plan.padded_shape(chunk) => {
                blocks.insert(chunk, *block);
            }
            _ => {
                failure = Some(format!(
                    "member {me} of the stencil's MPI task holds a block that is not chunk {chunk}"
                ))
            }
        }
    }
    let mut owners = vec![-1i64; plan.count()];
    for &chunk in blocks.keys() {
        owners[chunk] = me as i64;
    }
    task_comm::max_all(comm, &mut owners);
    agree(comm, failure)?;
    let owners: Vec<usize> = owners
        .iter()
        .enumerate()
        .map(|(chunk, &owner)| {
            usize::try_from(owner)
                .map_err(|_| format!("chunk {chunk} was deposited on no worker of the MPI task"))
        })
        .collect::<std::result::Result<_, _>>()?;
    // A chunk two members hold is the higher one's: the other's copy would send halos no
    // one receives.
    blocks.retain(|&chunk, _| owners[chunk] == me);
    let constant = match plan.boundary {
        Boundary::Constant(value) => Some(
            element_of::<T>(Scalar::F64(value).cast(T::DTYPE))
                .ok_or_else(|| format!("the constant {value} is not a {}", T::DTYPE))?,
        ),
        _ => None,
    };
    let stepper = Stepper {
        comm,
        plan: &plan,
        owners: &owners,
        me,
        constant,
    };
    for _ in 0..plan.steps {
        // Every member takes part in every exchange of the step whatever happened, so that
        // none waits for a message that never comes; then they agree once.
        let mut failure = None;
        for axis in 0..plan.depth.len() {
            if plan.depth[axis] > 0
                && let Err(e) = stepper.exchange(axis, &mut blocks)
            {
                failure.get_or_insert(e);
            }
        }
        if failure.is_none() {
            failure = stepper.run::<F>(&mut blocks).err();
        }
        agree(comm, failure)?;
    }
    for (chunk, block) in blocks {
        let pads = plan.pads_of(chunk);
        let index = plan.index(chunk);
        let inner = block
            .slice_each_axis(|a| {
                let axis = a.axis.index();
                let lo = pads[axis].0;
                Slice::from(lo..lo + plan.sizes[axis][index[axis]])
            })
            .to_owned();
        // Each block dropped before the next is cut: its memory serves the next one.
        drop(block);
        held().insert((plan.run, Stage::Output, chunk), Box::new(inner));
    }
    Ok(())
}

/// One member's part of the steps.
struct Stepper<'a, T> {
    comm: &'a MpiComm,
    plan: &'a Plan,
    owners: &'a [usize],
    me: usize,
    constant: Option<T>,
}

impl<T: Element> Stepper<'_, T> {
    /// Fills every halo along `axis` of this member's blocks. Its messages are sent and
    /// received whatever fails (an error is returned after the exchange).
    fn exchange(
        &self,
        axis: usize,
        blocks: &mut BTreeMap<usize, ArrayD<T>>,
    ) -> std::result::Result<(), String> {
        let plan = self.plan;
        // What this member's blocks give their neighbours: the cells that fill the
        // neighbour's halo on the other side.
        let mut local = Vec::new();
        let mut sends = Vec::new();
        let mut failure = None;
        for (&chunk, block) in blocks.iter() {
            for (towards, fills) in [(Side::Lo, Side::Hi), (Side::Hi, Side::Lo)] {
                let Some(to) = plan.neighbour_chunk(chunk, axis, towards) else {
                    continue;
                };
                let cells = along(block, axis, plan.ranges(chunk, axis, towards).1).to_owned();
                if self.owners[to] == self.me {
                    local.push((to, fills, cells));
                } else {
                    let bytes = encode_owned(&cells).unwrap_or_else(|e| {
                        failure.get_or_insert(format!("a halo could not be encoded: {e}"));
                        Vec::new()
                    });
                    let route = Route {
                        peer: self.owners[to],
                        tag: fills.tag(),
                    };
                    sends.push(((to, fills), route, bytes));
                }
            }
        }
        // Messages between two members on one tag arrive in order: in the order of the
        // chunks they fill, on both sides.
        sends.sort_by_key(|(order, _, _)| *order);
        let mut receives = Vec::new();
        for &chunk in blocks.keys() {
            for side in [Side::Lo, Side::Hi] {
                if let Some(from) = plan.neighbour_chunk(chunk, axis, side)
                    && self.owners[from] != self.me
                {
                    let route = Route {
                        peer: self.owners[from],
                        tag: side.tag(),
                    };
                    receives.push((chunk, side, route));
                }
            }
        }
        for (chunk, side, cells) in local {
            let block = blocks.get_mut(&chunk).expect("a block of this member");
            let halo = plan.ranges(chunk, axis, side).0;
            along_mut(block, axis, halo).assign(&cells);
        }
        for (&chunk, block) in blocks.iter_mut() {
            for side in [Side::Lo, Side::Hi] {
                if plan.neighbour_chunk(chunk, axis, side).is_none() {
                    self.fill_edge(block, chunk, axis, side);
                }
            }
        }
        let outgoing: Vec<(Route, &[u8])> = sends
            .iter()
            .map(|(_, route, bytes)| (*route, bytes.as_slice()))
            .collect();
        let routes: Vec<Route> = receives.iter().map(|(_, _, route)| *route).collect();
        let received = task_comm::exchange(self.comm, &outgoing, &routes);
        for ((chunk, side, _), bytes) in receives.into_iter().zip(received) {
            let block = blocks.get_mut(&chunk).expect("a block of this member");
            let mut halo = along_mut(block, axis, plan.ranges(chunk, axis, side).0);
            match decode_owned::<ArrayD<T>>(&bytes) {
                Ok(cells) if cells.shape() == halo.shape() => halo.assign(&cells),
                Ok(cells) => {
                    failure.get_or_insert(format!(
                        "a halo of shape {:?} came for one of shape {:?}",
                        cells.shape(),
                        halo.shape()
                    ));
                }
                Err(e) => {
                    failure.get_or_insert(format!("a halo that does not decode: {e}"));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Fills the `side` halo along `axis` of a block at the array's edge by the boundary.
    fn fill_edge(&self, block: &mut ArrayD<T>, chunk: usize, axis: usize, side: Side) {
        let (halo, edge) = self.plan.ranges(chunk, axis, side);
        if halo.is_empty() {
            return;
        }
        let cells = match self.plan.boundary {
            Boundary::Reflect => {
                let mut cells = along(block, axis, edge).to_owned();
                cells.invert_axis(Axis(axis));
                cells
            }
            Boundary::Nearest => {
                let at = match side {
                    Side::Lo => edge.start,
                    Side::Hi => edge.end - 1,
                };
                along(block, axis, at..at + 1).to_owned()
            }
            Boundary::Constant(_) => {
                let value = self.constant.expect("a constant for a constant boundary");
                along_mut(block, axis, halo).fill(value);
                return;
            }
            // A periodic axis has neighbours on both sides; `None` leaves no halo here.
            Boundary::Periodic | Boundary::None => return,
        };
        along_mut(block, axis, halo).assign(&cells);
    }

    /// The function `F` on every block of this member, each output the next block.
    fn run<F>(&self, blocks: &mut BTreeMap<usize, ArrayD<T>>) -> std::result::Result<(), String>
    where
        F: TaskFn<(ArrayD<T>,), Output = ArrayD<T>>,
    {
        let chunks: Vec<usize> = blocks.keys().copied().collect();
        for chunk in chunks {
            let block = blocks.remove(&chunk).expect("listed");
            let shape = block.shape().to_vec();
            let index = self.plan.index(chunk);
            let function = crate::task::function_name::<F>();
            match catch_unwind(AssertUnwindSafe(|| {
                crate::task::conjure::<F>().call((block,))
            })) {
                Ok(out) if out.shape() == shape.as_slice() => {
                    blocks.insert(chunk, out);
                }
                Ok(out) => {
                    return Err(format!(
                        "{function} returned a block of shape {:?} for the padded chunk {index:?} \
                         of shape {shape:?}: a stencil's function must keep its block's shape",
                        out.shape()
                    ));
                }
                Err(payload) => {
                    return Err(format!(
                        "{function} panicked on the padded chunk {index:?}: {}",
                        crate::task::panic_message(&*payload)
                    ));
                }
            }
        }
        Ok(())
    }
}
