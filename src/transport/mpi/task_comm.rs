//! The calls the runtime's own MPI tasks make on the communicator of their workers (a
//! stencil iterated on chunks that stay where they are, see
//! `collections/array/overlap/resident/`): the member's rank and count, an elementwise
//! maximum over the members, everyone's bytes to everyone, and an exchange of byte
//! messages between pairs. They run on the communication thread, the rank's one MPI thread,
//! like every MPI task.

use super::MpiComm;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::traits::*;

/// This member's rank in `comm`.
pub fn rank(comm: &MpiComm) -> usize {
    usize::try_from(comm.rank()).expect("MPI ranks are not negative")
}

/// The number of members of `comm`.
pub fn size(comm: &MpiComm) -> usize {
    usize::try_from(comm.size()).expect("MPI sizes are not negative")
}

/// Every member's `values` (the same length on all) made, element by element, the largest
/// of them (`MPI_Allreduce` with `MPI_MAX`).
pub fn max_all(comm: &MpiComm, values: &mut [i64]) {
    let mine = values.to_vec();
    comm.all_reduce_into(&mine[..], values, SystemOperation::max());
}

/// Every member's `mine`, in rank order (`MPI_Allgather` of the lengths, then
/// `MPI_Allgatherv`).
pub fn all_gather_bytes(comm: &MpiComm, mine: &[u8]) -> Vec<Vec<u8>> {
    let members = size(comm);
    let mut lengths = vec![0i32; members];
    let length = i32::try_from(mine.len()).expect("a gathered message under 2 GiB");
    comm.all_gather_into(&length, &mut lengths[..]);
    let mut displacements = Vec::with_capacity(members);
    let mut total = 0i32;
    for &n in &lengths {
        displacements.push(total);
        total = total.checked_add(n).expect("gathered messages under 2 GiB");
    }
    let mut all = vec![0u8; usize::try_from(total).expect("a non-negative total")];
    {
        let mut partition = PartitionMut::new(&mut all[..], &lengths[..], &displacements[..]);
        comm.all_gather_varcount_into(mine, &mut partition);
    }
    let mut at = 0;
    lengths
        .iter()
        .map(|&n| {
            let n = usize::try_from(n).expect("non-negative lengths");
            at += n;
            all[at - n..at].to_vec()
        })
        .collect()
}

/// One message of an [`exchange`]: to or from member `peer`, with `tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The other member's rank in the communicator.
    pub peer: usize,
    /// The message's tag; messages between two members on one tag arrive in order.
    pub tag: i32,
}

/// Sends every message of `sends` (without blocking, all posted first) and then receives
/// the messages `receives` names, in that order, each of whatever length it has: their
/// bytes, in the order of `receives`. Every member posts its sends before it waits for any
/// message, so members exchanging with each other cannot deadlock; a member must receive
/// the messages one peer sends it on one tag in the order they were sent.
pub fn exchange(comm: &MpiComm, sends: &[(Route, &[u8])], receives: &[Route]) -> Vec<Vec<u8>> {
    mpi::request::scope(|scope| {
        let pending: Vec<_> = sends
            .iter()
            .map(|(route, bytes)| {
                comm.process_at_rank(peer_rank(route))
                    .immediate_send_with_tag(scope, *bytes, route.tag)
            })
            .collect();
        let received = receives
            .iter()
            .map(|route| {
                comm.process_at_rank(peer_rank(route))
                    .receive_vec_with_tag::<u8>(route.tag)
                    .0
            })
            .collect();
        for request in pending {
            request.wait();
        }
        received
    })
}

fn peer_rank(route: &Route) -> i32 {
    i32::try_from(route.peer).expect("a member's rank fits an MPI rank")
}
