//! The MPI transport: the only code in mpidask that calls rsmpi after start-up.
//!
//! Frames go out as non-blocking standard sends (`MPI_Isend`), so two ranks sending large
//! frames to each other cannot deadlock, and come in through matched probes
//! (`MPI_Improbe` + `MPI_Mrecv`), which size the receive buffer exactly. A frame larger than
//! the part size (1 GiB by default; MPI counts are 32-bit) is sent as a small header message
//! followed by its parts on the same tag; MPI keeps messages between two ranks on one tag in
//! order, so the receiver reassembles them into one buffer without extra copies.

use super::{Incoming, Transport};
use crate::protocol::Rank;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::rc::Rc;

/// The tag of every mpidask message.
pub const TAG_FRAME: i32 = 0x6d64;

/// First byte of the header message announcing a frame sent in parts.
const PARTS_MAGIC: u8 = 0xD6;
const PARTS_HEADER_LEN: usize = 1 + 8;

/// Default size of the parts of a large frame.
pub const DEFAULT_PART_BYTES: usize = 1 << 30;

/// A send buffer handed to MPI: leaked for the duration of the sends that read it, freed
/// when the last of them completed.
struct SendBuffer(*mut [u8]);

impl SendBuffer {
    fn new(bytes: Vec<u8>) -> Self {
        SendBuffer(Box::into_raw(bytes.into_boxed_slice()))
    }

    fn bytes(&self) -> &'static [u8] {
        // SAFETY: the allocation lives until `drop`, which runs only after every request
        // reading it completed (each pending send holds an `Rc` to this buffer).
        unsafe { &*self.0 }
    }
}

impl Drop for SendBuffer {
    fn drop(&mut self) {
        // SAFETY: created by `Box::into_raw` in `new`; no request reads it any more.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

struct PendingSend {
    request: Request<'static, [u8], StaticScope>,
    _buffer: Rc<SendBuffer>,
}

struct Reassembly {
    buffer: Vec<u8>,
    filled: usize,
}

/// `MPI_COMM_WORLD` as a [`Transport`].
pub struct MpiTransport {
    world: SimpleCommunicator,
    rank: Rank,
    size: usize,
    part_bytes: usize,
    pending: Vec<PendingSend>,
    reassembly: Vec<Option<Reassembly>>,
}

impl MpiTransport {
    /// The transport over `world`, splitting frames above `part_bytes`.
    pub fn new(world: SimpleCommunicator, part_bytes: usize) -> Self {
        let rank = Rank(world.rank() as u32);
        let size = world.size() as usize;
        MpiTransport {
            world,
            rank,
            size,
            part_bytes: part_bytes.clamp(1, i32::MAX as usize),
            pending: Vec::new(),
            reassembly: (0..size).map(|_| None).collect(),
        }
    }

    fn start_send(&mut self, to: Rank, buffer: Rc<SendBuffer>, range: std::ops::Range<usize>) {
        let bytes = &buffer.bytes()[range];
        let request = self
            .world
            .process_at_rank(to.0 as i32)
            .immediate_send_with_tag(StaticScope, bytes, TAG_FRAME);
        self.pending.push(PendingSend {
            request,
            _buffer: buffer,
        });
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, to: Rank, frame: Vec<u8>) {
        let len = frame.len();
        if len <= self.part_bytes {
            self.start_send(to, Rc::new(SendBuffer::new(frame)), 0..len);
            return;
        }
        let mut header = Vec::with_capacity(PARTS_HEADER_LEN);
        header.push(PARTS_MAGIC);
        header.extend_from_slice(&(len as u64).to_le_bytes());
        self.start_send(to, Rc::new(SendBuffer::new(header)), 0..PARTS_HEADER_LEN);
        let buffer = Rc::new(SendBuffer::new(frame));
        let mut start = 0;
        while start < len {
            let end = (start + self.part_bytes).min(len);
            self.start_send(to, buffer.clone(), start..end);
            start = end;
        }
    }

    fn receive(&mut self, out: &mut Vec<Incoming>) {
        while let Some((message, status)) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG_FRAME)
        {
            let source = status.source_rank() as usize;
            let count = status.count(u8::equivalent_datatype()) as usize;
            if let Some(assembly) = self.reassembly[source].as_mut() {
                let end = (assembly.filled + count).min(assembly.buffer.len());
                message.matched_receive_into(&mut assembly.buffer[assembly.filled..end]);
                assembly.filled = end;
                if assembly.filled == assembly.buffer.len() {
                    let done = self.reassembly[source].take().expect("present");
                    out.push((Rank(source as u32), done.buffer));
                }
                continue;
            }
            let (bytes, _) = (message, status).matched_receive_vec::<u8>();
            if bytes.len() == PARTS_HEADER_LEN && bytes[0] == PARTS_MAGIC {
                let total = u64::from_le_bytes(bytes[1..].try_into().expect("8 bytes")) as usize;
                self.reassembly[source] = Some(Reassembly {
                    buffer: vec![0; total],
                    filled: 0,
                });
            } else {
                out.push((Rank(source as u32), bytes));
            }
        }
    }

    fn progress(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        let mut still = Vec::with_capacity(self.pending.len());
        for send in self.pending.drain(..) {
            match send.request.test() {
                Ok(_) => {}
                Err(request) => still.push(PendingSend {
                    request,
                    _buffer: send._buffer,
                }),
            }
        }
        self.pending = still;
        self.pending.len()
    }

    fn wakes_receiver(&self) -> bool {
        false
    }

    fn abort(&mut self, code: i32) -> ! {
        crate::private_dir::remove_all();
        // Give the launcher a moment to forward this rank's last lines (the reason for the
        // abort) before it tears the job down; MPICH's Hydra may drop them otherwise.
        use std::io::Write;
        let _ = std::io::stderr().flush();
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.world.abort(code)
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        // Sends still pending here belong to a job that is ending anyway; completing them
        // could block forever, and rsmpi panics on dropping an incomplete request.
        for send in self.pending.drain(..) {
            std::mem::forget(send);
        }
    }
}
