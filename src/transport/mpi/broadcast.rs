//! Collectives over the workers' communicator: `MPI_Ibcast` of a value, in parts of at
//! most the part size (MPI counts are 32-bit), with the buffer given up until every part
//! completed.

use super::buffers::{ReceiveBuffer, UninitByte};
use crate::protocol::{Key, Payload, Rank};
use crate::transport::Collectives;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::sync::Arc;

/// A broadcast in flight on this rank: its buffer (the root's copy of the value, or the
/// receiver's buffer being filled) and one `MPI_Ibcast` per part.
struct PendingBroadcast {
    key: Key,
    buffer: *mut [UninitByte],
    requests: Vec<Request<'static, [UninitByte], StaticScope>>,
    receiving: bool,
}

impl PendingBroadcast {
    /// Takes the buffer back (every request completed or was forgotten).
    fn into_vec(self) -> Vec<u8> {
        // SAFETY: created by `Box::into_raw` of a boxed slice of `UninitByte` in `post`; no
        // request reads or writes it any more. `UninitByte` has the layout of `u8`, and
        // every byte was written (by the root's copy or by MPI).
        unsafe {
            let boxed = Box::from_raw(self.buffer);
            let len = boxed.len();
            let raw = Box::into_raw(boxed).cast::<u8>();
            Vec::from_raw_parts(raw, len, len)
        }
    }
}

/// One member's collectives over a communicator of some of the job's ranks.
pub struct MpiCollectives {
    group: SimpleCommunicator,
    /// The world rank of each member, in the communicator's order.
    members: Vec<Rank>,
    part_bytes: usize,
    broadcasts: Vec<PendingBroadcast>,
    received: Vec<(Key, Payload)>,
}

impl MpiCollectives {
    pub(crate) fn new(group: SimpleCommunicator, members: Vec<Rank>, part_bytes: usize) -> Self {
        MpiCollectives {
            group,
            members,
            part_bytes: part_bytes.clamp(1, i32::MAX as usize),
            broadcasts: Vec::new(),
            received: Vec::new(),
        }
    }

    /// This communicator's rank of the member that is world rank `rank`.
    fn member_index(&self, rank: Rank) -> Option<i32> {
        let index = self.members.iter().position(|m| *m == rank)?;
        i32::try_from(index).ok()
    }

    /// Posts the `MPI_Ibcast`s (one per part) of a broadcast from member `root` over
    /// `buffer`, which this rank gives up until they complete.
    fn post(&mut self, root: i32, key: Key, buffer: Box<[UninitByte]>, receiving: bool) {
        let root = self.group.process_at_rank(root);
        let len = buffer.len();
        let buffer = Box::into_raw(buffer);
        let mut requests = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + self.part_bytes).min(len);
            // SAFETY: the parts are disjoint, and the buffer stays allocated (owned by the
            // pending broadcast) until every request on it completed.
            let part: &'static mut [UninitByte] = unsafe { &mut (&mut *buffer)[start..end] };
            requests.push(root.immediate_broadcast_into(StaticScope, part));
            start = end;
            if start >= len {
                break;
            }
        }
        self.broadcasts.push(PendingBroadcast {
            key,
            buffer,
            requests,
            receiving,
        });
    }
}

impl Collectives for MpiCollectives {
    fn broadcast_send(&mut self, key: Key, value: Payload) {
        // MPI_Ibcast takes a writable buffer at the root too: the root sends from a copy.
        let root = self.group.rank();
        self.post(root, key, ReceiveBuffer::copy_of(&value), false);
    }

    fn broadcast_receive(&mut self, root: Rank, key: Key, len: usize) -> Result<(), String> {
        let Some(root) = self.member_index(root) else {
            return Err(format!(
                "a broadcast from {root}, which is not one of the workers"
            ));
        };
        let buffer = ReceiveBuffer::new(len)?;
        self.post(root, key, buffer.into_boxed_slice(), true);
        Ok(())
    }

    fn progress(&mut self) -> usize {
        for mut broadcast in std::mem::take(&mut self.broadcasts) {
            let mut still = Vec::new();
            for request in broadcast.requests.drain(..) {
                if let Err(request) = request.test() {
                    still.push(request);
                }
            }
            broadcast.requests = still;
            if !broadcast.requests.is_empty() {
                self.broadcasts.push(broadcast);
            } else if broadcast.receiving {
                let key = broadcast.key;
                self.received
                    .push((key, Arc::new(broadcast.into_vec().into())));
            } else {
                drop(broadcast.into_vec());
            }
        }
        self.broadcasts.len()
    }

    fn received(&mut self, out: &mut Vec<(Key, Payload)>) {
        out.append(&mut self.received);
    }

    fn lends_communicators(&self) -> bool {
        true
    }

    fn run_with_communicator(
        &mut self,
        members: &[Rank],
        task: Box<dyn FnOnce(&SimpleCommunicator) + Send + '_>,
    ) -> Result<(), String> {
        let mut indices = Vec::with_capacity(members.len());
        for member in members {
            match self.member_index(*member) {
                Some(index) if !indices.contains(&index) => indices.push(index),
                Some(_) => return Err(format!("{member} is named twice among {members:?}")),
                None => {
                    return Err(format!(
                        "{member} is not one of the workers' communicator ({:?})",
                        self.members
                    ));
                }
            }
        }
        if !indices.contains(&self.group.rank()) {
            return Err(format!(
                "a communicator of {members:?}, which this rank is not among"
            ));
        }
        // MPI_Comm_create_group: only the members take part, so the other workers go on
        // with their own work meanwhile.
        let subgroup = self.group.group().include(&indices);
        let communicator = self
            .group
            .split_by_subgroup_with_tag(&subgroup, TASK_COMMUNICATOR_TAG)
            .ok_or_else(|| format!("MPI gave no communicator for {members:?}"))?;
        task(&communicator);
        Ok(())
    }
}

/// The tag `MPI_Comm_create_group` uses among a task's members on the workers'
/// communicator (whose point-to-point traffic is only this).
const TASK_COMMUNICATOR_TAG: i32 = 17;

impl Drop for MpiCollectives {
    fn drop(&mut self) {
        // Broadcasts still pending belong to a job that is ending anyway; rsmpi panics on
        // dropping an incomplete request, and the buffers must outlive MPI's use of them.
        for broadcast in self.broadcasts.drain(..) {
            std::mem::forget(broadcast.requests);
        }
    }
}
