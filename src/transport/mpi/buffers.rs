//! The memory MPI reads from and writes into: send buffers kept alive until their sends
//! complete, and receive buffers that are not zeroed first, made in spare allocations of
//! released values when there are some (`protocol::take_spare`).

use crate::protocol::{ALIGN, Bytes, Payload, skip_to};
use std::mem::MaybeUninit;

/// A byte MPI may write without it being initialised first.
#[repr(transparent)]
pub(crate) struct UninitByte(pub(crate) MaybeUninit<u8>);

/// A receive buffer of `len` bytes that MPI fills: allocated without zeroing it first (a
/// pass over the memory that would cost as much as a shared-memory transfer), and for a
/// value at the address mod 64 its sender had (see [`Bytes`]).
pub(crate) struct ReceiveBuffer {
    /// The allocation, up to the end of the bytes received into it.
    bytes: Vec<UninitByte>,
    /// Where the received bytes start (skipped to place them).
    start: usize,
    filled: usize,
    /// For a split value's elements, received once `bytes` (its head) is full.
    elements: Option<Elements>,
}

/// The elements of a split value, received into memory of 8-byte elements: the value a
/// task takes as its argument when it is a vector or array of `f64`.
struct Elements {
    values: Vec<f64>,
    /// Bytes to receive.
    len: usize,
    filled: usize,
}

impl Elements {
    /// The allocation's bytes, for MPI to write into.
    fn room(&mut self) -> &mut [UninitByte] {
        let spare = self.values.spare_capacity_mut();
        let len = std::mem::size_of_val(spare);
        // SAFETY: the spare capacity is `len` bytes of memory this vector owns, borrowed
        // mutably here; `UninitByte` has the layout of `u8` and may hold any bit pattern,
        // including none.
        unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<UninitByte>(), len) }
    }
}

impl ReceiveBuffer {
    /// A buffer of `len` bytes: a spare allocation of about that size (see
    /// [`crate::protocol::take_spare`]), or a new one; an error if `len` bytes cannot be
    /// allocated.
    pub(crate) fn new(len: usize) -> Result<Self, String> {
        Self::allocate(len, len, |_| 0)
    }

    /// A buffer for a value of `len` bytes whose sender's copy has `placement` (its address
    /// mod 64): `ALIGN - 1` bytes more than `len`, kept or new, the received bytes starting
    /// where their address mod 64 is the same.
    pub(crate) fn placed(len: usize, placement: u8) -> Result<Self, String> {
        let capacity = len
            .checked_add(ALIGN - 1)
            .ok_or_else(|| format!("cannot allocate {len} bytes to receive into"))?;
        Self::allocate(len, capacity, |address| {
            skip_to(address, usize::from(placement))
        })
    }

    /// A buffer for a split value sent as its head of `head` bytes and then `body` bytes
    /// of elements (a multiple of 8), received into memory of 8-byte elements: a task
    /// reading the value as a `Vec<f64>` or an array of `f64` may then take that memory as
    /// it is (see `protocol::received_split`).
    pub(crate) fn split(head: usize, body: usize) -> Result<Self, String> {
        debug_assert_eq!(body % 8, 0, "whole elements of 8 bytes");
        let mut buffer = Self::new(head)?;
        let values = crate::protocol::receive_elements(body / 8)
            .map_err(|e| format!("cannot allocate {body} bytes to receive into: {e}"))?;
        buffer.elements = Some(Elements {
            values,
            len: body,
            filled: 0,
        });
        Ok(buffer)
    }

    /// An allocation of `capacity` bytes (a spare one, or new), the `len` received bytes
    /// starting `start(its address)` bytes in.
    fn allocate(
        len: usize,
        capacity: usize,
        start: impl Fn(usize) -> usize,
    ) -> Result<Self, String> {
        let mut bytes = match crate::protocol::take_spare(capacity).map(into_uninit) {
            Some(recycled) => recycled,
            None => {
                let mut bytes: Vec<UninitByte> = Vec::new();
                bytes
                    .try_reserve_exact(capacity)
                    .map_err(|e| format!("cannot allocate {len} bytes to receive into: {e}"))?;
                bytes
            }
        };
        let start = start(bytes.as_ptr() as usize);
        debug_assert!(start + len <= bytes.capacity());
        // SAFETY: the capacity is at least `start + len` (at least `capacity` bytes were
        // reserved, and `start` is below the `capacity - len` extra bytes asked for), and
        // `UninitByte` may hold any bit pattern, including none.
        unsafe { bytes.set_len(start + len) };
        // The skipped bytes end up in a `Vec<u8>`: they are written, like every other.
        for skipped in &mut bytes[..start] {
            skipped.0 = MaybeUninit::new(0);
        }
        Ok(ReceiveBuffer {
            bytes,
            start,
            filled: 0,
            elements: None,
        })
    }

    /// Bytes still to be received.
    pub(crate) fn remaining(&self) -> usize {
        self.head_remaining() + self.elements.as_ref().map_or(0, |e| e.len - e.filled)
    }

    /// Bytes still to be received into `bytes`.
    fn head_remaining(&self) -> usize {
        self.bytes.len() - self.start - self.filled
    }

    /// The next `count` unfilled bytes (at most what remains), for MPI to write into.
    pub(crate) fn next_part(&mut self, count: usize) -> &mut [UninitByte] {
        if self.head_remaining() == 0
            && let Some(elements) = &mut self.elements
        {
            let (from, len) = (elements.filled, elements.len);
            let end = from.saturating_add(count).min(len);
            return &mut elements.room()[from..end];
        }
        let from = self.start + self.filled;
        let end = from.saturating_add(count).min(self.bytes.len());
        &mut self.bytes[from..end]
    }

    /// Records that MPI wrote the `count` bytes [`next_part`](Self::next_part) gave.
    pub(crate) fn filled(&mut self, count: usize) {
        if self.head_remaining() == 0
            && let Some(elements) = &mut self.elements
        {
            elements.filled = (elements.filled + count).min(elements.len);
            return;
        }
        self.filled = (self.filled + count).min(self.bytes.len() - self.start);
    }

    /// `true` once every byte was received.
    pub(crate) fn is_full(&self) -> bool {
        self.remaining() == 0
    }

    /// The allocation as a `Vec<u8>` of every byte up to the last received one.
    ///
    /// # Panics
    /// If some bytes were never written (the caller checks [`is_full`](Self::is_full)).
    fn into_written(self) -> Vec<u8> {
        assert!(self.is_full(), "every byte was received");
        let mut bytes = std::mem::ManuallyDrop::new(self.bytes);
        // SAFETY: every byte up to the length was written (the skipped ones when the
        // buffer was made, the others by MPI: checked above); `UninitByte` has the layout of
        // `u8`, so the allocation is a valid `Vec<u8>` of the same length and capacity.
        unsafe {
            Vec::from_raw_parts(
                bytes.as_mut_ptr().cast::<u8>(),
                bytes.len(),
                bytes.capacity(),
            )
        }
    }

    /// The received bytes.
    ///
    /// # Panics
    /// If some bytes were never written (the caller checks [`is_full`](Self::is_full)).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        if self.elements.is_some() {
            return self.into_bytes().into_vec();
        }
        let start = self.start;
        let mut bytes = self.into_written();
        if start > 0 {
            bytes.drain(..start);
        }
        bytes
    }

    /// The received value, where its sender placed it.
    ///
    /// # Panics
    /// If some bytes were never written (the caller checks [`is_full`](Self::is_full)).
    pub(crate) fn into_bytes(mut self) -> Bytes {
        if let Some(mut elements) = self.elements.take() {
            assert!(
                self.is_full() && elements.filled == elements.len,
                "every byte was received"
            );
            // SAFETY: MPI wrote all `len` bytes of the spare capacity (checked above), which
            // make `len / 8` whole elements; any bit pattern is an `f64`.
            unsafe { elements.values.set_len(elements.len / 8) };
            return crate::protocol::received_split(self.into_vec(), elements.values);
        }
        let start = self.start;
        Bytes::from_parts(self.into_written(), start)
    }

    /// The whole buffer, given up to a collective that writes every byte.
    pub(crate) fn into_boxed_slice(self) -> Box<[UninitByte]> {
        debug_assert_eq!(self.start, 0, "a broadcast buffer skips no byte");
        self.bytes.into_boxed_slice()
    }

    /// A buffer whose bytes are already written (the root's copy of a broadcast value).
    pub(crate) fn copy_of(bytes: &[u8]) -> Box<[UninitByte]> {
        bytes
            .iter()
            .map(|b| UninitByte(MaybeUninit::new(*b)))
            .collect()
    }

    /// A buffer filled by test code instead of MPI.
    #[cfg(test)]
    pub(crate) fn write_for_test(&mut self, data: &[u8]) {
        let part = self.next_part(data.len());
        assert_eq!(part.len(), data.len(), "the test writes what was asked for");
        for (slot, byte) in part.iter_mut().zip(data) {
            slot.0 = MaybeUninit::new(*byte);
        }
        self.filled(data.len());
    }
}

/// A buffer MPI sends from, alive until the last send reading it completed: a frame the
/// transport owns, or a payload shared with the rank's store.
pub(crate) enum SendBuffer {
    Owned(Vec<u8>),
    Shared(Payload),
}

impl SendBuffer {
    /// The bytes to send.
    /// (For a split value, its body: the head is sent first, on its own.)
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SendBuffer::Owned(bytes) => bytes,
            SendBuffer::Shared(payload) => match payload.pieces() {
                Some((_, body)) => body,
                None => payload,
            },
        }
    }

    /// The bytes with a lifetime MPI's non-blocking sends accept.
    ///
    /// # Safety
    /// The caller must keep `self` alive (and unmoved: the bytes live on the heap, so moving
    /// the `SendBuffer` itself is fine) until every request reading the slice completed. The
    /// bytes are never modified while the buffer exists: a frame is owned here, and a shared
    /// payload is immutable behind its `Arc`.
    pub(crate) unsafe fn as_static(&self) -> &'static [u8] {
        let bytes = self.as_slice();
        // SAFETY: by the caller's contract the heap bytes outlive every use of the slice.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) }
    }
}

/// The whole allocation of `buffer` (past its length too) as bytes MPI may write.
fn into_uninit(buffer: Vec<u8>) -> Vec<UninitByte> {
    let mut buffer = std::mem::ManuallyDrop::new(buffer);
    // SAFETY: `UninitByte` has the layout of `u8` and may hold any bit pattern, so the
    // whole allocation (its bytes past the length too) is a valid `Vec<UninitByte>`.
    unsafe {
        Vec::from_raw_parts(
            buffer.as_mut_ptr().cast::<UninitByte>(),
            buffer.capacity(),
            buffer.capacity(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{give_spare, take_spare};

    // Each test uses sizes of its own: the spares are the process's, shared by the tests
    // running at the same time.

    #[test]
    fn placed_buffers_receive_values_where_their_senders_held_them() {
        let len = (3 << 20) + 7;
        for placement in [0u8, 1, 28, 63, 64, 255] {
            let mut buffer = ReceiveBuffer::placed(len, placement).unwrap();
            assert_eq!(buffer.remaining(), len);
            buffer.write_for_test(&vec![placement; len - 1]);
            assert!(!buffer.is_full());
            buffer.write_for_test(&[9]);
            let value = buffer.into_bytes();
            assert_eq!(
                usize::from(value.placement()),
                usize::from(placement) % ALIGN
            );
            assert_eq!(value.len(), len);
            assert!(value[..len - 1].iter().all(|&b| b == placement));
            assert_eq!(value[len - 1], 9);
            // Its allocation serves the next value of its size.
            give_spare(value.into_allocation());
        }
        let kept = ReceiveBuffer::placed(len, 5).unwrap();
        assert!(
            take_spare(len + ALIGN - 1).is_none(),
            "the spare allocation was taken"
        );
        drop(kept);
        assert!(ReceiveBuffer::placed(usize::MAX - 10, 0).is_err());
    }

    #[test]
    fn receive_buffers_reuse_spare_memory_and_refuse_impossible_sizes() {
        let len = (5 << 20) + 3;
        let spare = vec![5u8; len];
        let address = spare.as_ptr() as usize;
        give_spare(spare);
        let mut buffer = ReceiveBuffer::new(len).unwrap();
        assert!(take_spare(len).is_none(), "the spare was taken");
        buffer.write_for_test(&vec![6u8; len]);
        let received = buffer.into_vec();
        assert_eq!(received.as_ptr() as usize, address);
        assert_eq!(received, vec![6u8; len]);
        assert!(ReceiveBuffer::new(usize::MAX / 2).is_err());
    }
}
