//! Starting and ending MPI: initialisation with the thread level mpidask needs, the
//! collectives every rank takes part in at start-up (the agreement on arguments, the
//! executable check, the node topology, the workers' communicator), and finalisation.
//!
//! Every function here is collective where it says so: all ranks of the job call it, in
//! the same order.

use super::{MpiCollectives, MpiTransport};
use crate::protocol::Rank;
use mpi::Threading;
use mpi::environment::Universe;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use std::cell::RefCell;

thread_local! {
    /// MPI initialised early (to agree on arguments), handed over by [`MpiJob::init`].
    static EARLY: RefCell<Option<(Universe, Threading)>> = const { RefCell::new(None) };
}

/// Why MPI could not be started the way mpidask needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// Someone initialised MPI before mpidask.
    AlreadyInitialized,
    /// The library gives less than `MPI_THREAD_FUNNELED`.
    ThreadLevel(String),
}

fn initialize() -> Option<(Universe, Threading)> {
    EARLY
        .with(|early| early.borrow_mut().take())
        .or_else(|| mpi::initialize_with_threading(Threading::Funneled))
}

/// MPI, initialised on this thread for the whole job: ends with `MPI_Finalize` when
/// dropped (after the transport made from it).
pub struct MpiJob {
    universe: Universe,
    world: SimpleCommunicator,
    threading: Threading,
}

impl MpiJob {
    /// Initialises MPI with `MPI_THREAD_FUNNELED` (or takes the initialisation
    /// [`early_all_gather`] made).
    pub fn init() -> Result<MpiJob, InitError> {
        let (universe, threading) = initialize().ok_or(InitError::AlreadyInitialized)?;
        if threading < Threading::Funneled {
            return Err(InitError::ThreadLevel(format!("{threading:?}")));
        }
        let world = universe.world();
        Ok(MpiJob {
            universe,
            world,
            threading,
        })
    }

    /// This process's rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> Rank {
        Rank(u32::try_from(self.world.rank()).expect("MPI ranks are not negative"))
    }

    /// Ranks in `MPI_COMM_WORLD`.
    pub fn size(&self) -> usize {
        usize::try_from(self.world.size()).expect("MPI sizes are not negative")
    }

    /// The thread level MPI provides.
    pub fn thread_level(&self) -> String {
        format!("{:?}", self.threading)
    }

    /// `MPI_Get_library_version`.
    pub fn library_version(&self) -> String {
        mpi::environment::library_version()
            // Open MPI's string ends in a NUL.
            .map(|v| {
                v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string()
            })
            .unwrap_or_else(|_| "unknown".into())
    }

    /// `MPI_Get_processor_name`: the node this rank runs on.
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "unknown".into())
    }

    /// Collective: every rank's `mine` (all of one length), in rank order.
    pub fn all_gather_u64(&self, mine: &[u64]) -> Vec<u64> {
        let mut all = vec![0u64; mine.len() * self.size()];
        self.world.all_gather_into(mine, &mut all[..]);
        all
    }

    /// Collective: every rank's `mine` (all of one length), in rank order.
    pub fn all_gather_bytes(&self, mine: &[u8]) -> Vec<u8> {
        let mut all = vec![0u8; mine.len() * self.size()];
        self.world.all_gather_into(mine, &mut all[..]);
        all
    }

    /// Collective: rank 0's `value`, on every rank.
    pub fn broadcast_from_first(&self, value: u64) -> u64 {
        let mut value = value;
        self.world.process_at_rank(0).broadcast_into(&mut value);
        value
    }

    /// Collective: the ranks that share this rank's node memory (`MPI_Comm_split_type`
    /// with `MPI_COMM_TYPE_SHARED`) and their `mine`, in their order. The node
    /// communicator is freed before this returns.
    pub fn node_all_gather_u64(&self, mine: &[u64]) -> Vec<u64> {
        let node = self.world.split_shared(self.world.rank());
        let size = usize::try_from(node.size()).expect("MPI sizes are not negative");
        let mut all = vec![0u64; mine.len() * size];
        node.all_gather_into(mine, &mut all[..]);
        all
    }

    /// Collective: the point-to-point transport over `MPI_COMM_WORLD` (its processes running
    /// the ranks as `placement` says) and, on the ranks in `workers` (processes' own ranks),
    /// the collectives over the workers' communicator (made here).
    pub fn endpoints(
        &self,
        part_bytes: usize,
        workers: &[Rank],
        placement: crate::transport::Placement,
    ) -> (MpiTransport, Option<MpiCollectives>) {
        let me = self.rank();
        let color = if workers.contains(&me) {
            Color::with_value(0)
        } else {
            Color::undefined()
        };
        // Ordered by world rank, as `workers` is.
        let group = self.world.split_by_color(color);
        let transport = MpiTransport::new(self.universe.world(), part_bytes, placement);
        let collectives =
            group.map(|group| MpiCollectives::new(group, workers.to_vec(), part_bytes));
        (transport, collectives)
    }
}

/// Collective over every process the launcher started: initialises MPI (kept for
/// [`MpiJob::init`]) and gathers every rank's `mine`. Returns this rank and every value in
/// rank order; `None` if MPI was initialised by someone else.
pub fn early_all_gather(mine: i32) -> Option<(usize, Vec<i32>)> {
    let (universe, threading) = initialize()?;
    let world = universe.world();
    let mut everyone = vec![0i32; usize::try_from(world.size()).ok()?];
    world.all_gather_into(&mine, &mut everyone[..]);
    let rank = usize::try_from(world.rank()).ok()?;
    EARLY.with(|early| *early.borrow_mut() = Some((universe, threading)));
    Some((rank, everyone))
}

/// Ends the MPI that [`early_all_gather`] started (the job stops before it runs).
pub fn finalize_early() {
    EARLY.with(|early| drop(early.borrow_mut().take()));
}

/// Finalises MPI now if it is initialised and not finalised yet, on the calling thread
/// (the one that initialised it), when the process must exit without unwinding to the
/// owner of the [`MpiJob`].
pub fn finalize_now() {
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        // SAFETY: called on the thread that initialised MPI (the communication thread),
        // after the shutdown handshake completed, so no MPI call is in progress; the
        // process exits right after, so no rsmpi object is used again.
        unsafe {
            mpi::ffi::MPI_Finalize();
        }
    }
}
