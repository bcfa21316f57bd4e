//! The bytes of a value, placed in memory on purpose: a buffer that may skip a few leading
//! bytes, so that the elements of an encoded array start on a cache line whatever the
//! length of the header before them.
//!
//! An encoded `f64` array is a header of 12 or 13 bytes and then its elements. In a plain
//! `Vec<u8>` (which the allocator places 16 bytes past a 64-byte boundary for a large
//! value) the elements then start at 28 or 29 mod 64: not even 8-aligned, so every read of
//! them has to be copied first. A [`Bytes`] built with [`Bytes::aligned_after`] starts
//! where the elements land on a 64-byte boundary, and a copy of it (received from another
//! rank, or read back from disk) keeps that placement through [`Bytes::placement`].

use std::collections::TryReserveError;
use std::fmt;
use std::io::Read;
use std::ops::Deref;

/// The boundary values' elements are placed on: one cache line, one AVX-512 register.
pub const ALIGN: usize = 64;

/// The bytes (fewer than [`ALIGN`]) to skip from `address` to reach an address that is
/// `placement` mod [`ALIGN`] (a `placement` of [`ALIGN`] or more is taken mod [`ALIGN`]).
pub fn skip_to(address: usize, placement: usize) -> usize {
    (placement % ALIGN + ALIGN - address % ALIGN) % ALIGN
}

/// Allocations of released values, for the next values made in this process (encoded
/// task results, chunks read back from disk): memory already faulted in, where a new
/// allocation has the kernel fault in and zero every page.
static SPARES: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Only allocations at least this large are kept ...
const SPARE_MIN_BYTES: usize = 1 << 20;
/// ... at most this many ...
const SPARE_MAX: usize = 8;
/// ... of at most this many bytes in all.
const SPARE_MAX_BYTES: usize = 1 << 30;

fn spares() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the allocation of a released value for a later one of about its size.
pub fn give_spare(mut buf: Vec<u8>) {
    if buf.capacity() < SPARE_MIN_BYTES || buf.capacity() > SPARE_MAX_BYTES {
        return;
    }
    buf.clear();
    let mut kept = spares();
    if kept.len() == SPARE_MAX {
        kept.remove(0);
    }
    while !kept.is_empty()
        && kept.iter().map(Vec::capacity).sum::<usize>() + buf.capacity() > SPARE_MAX_BYTES
    {
        kept.remove(0);
    }
    kept.push(buf);
}

/// A kept allocation of at least `capacity` bytes (and not much more), emptied.
pub fn take_spare(capacity: usize) -> Option<Vec<u8>> {
    if capacity < SPARE_MIN_BYTES {
        return None;
    }
    let mut kept = spares();
    let fits = |b: &Vec<u8>| b.capacity() >= capacity && b.capacity() - capacity <= capacity / 16;
    let index = kept.iter().rposition(fits)?;
    Some(kept.swap_remove(index))
}

/// An empty buffer with room for `capacity` bytes: a kept allocation of about that size
/// when there is one, else a new one (which the process's allocator backs with huge pages
/// when large: see `src/allocator.rs`).
pub fn spare_or_new(capacity: usize) -> Result<Vec<u8>, TryReserveError> {
    match take_spare(capacity) {
        Some(spare) => Ok(spare),
        None => {
            let mut buf = Vec::new();
            buf.try_reserve_exact(capacity)?;
            Ok(buf)
        }
    }
}

/// Drops every kept allocation (memory is needed elsewhere).
pub fn clear_spares() {
    spares().clear();
}

/// A value's bytes: `buf[start..]`, where the first `start` (< [`ALIGN`]) bytes only place
/// the rest in memory; or, for a [`view`](Bytes::view), a range of another value's bytes,
/// shared with it; or, for a [`split`](Bytes::split) value, a head and a body in two places
/// (the body still in the caller's value, which the split value owns).
#[derive(Clone, Default)]
pub struct Bytes {
    buf: Vec<u8>,
    start: usize,
    /// The value this one is a range of (then `buf` is empty).
    of: Option<(std::sync::Arc<Bytes>, std::ops::Range<usize>)>,
    /// The head and body of a split value (then `buf` is empty).
    split: Option<std::sync::Arc<Split>>,
}

/// A split value's head is at most this long (the length or shape before an array's
/// elements); a receiver takes no longer first message of an attachment for one.
pub const MAX_HEAD_BYTES: usize = 256;

/// Memory holding a split value's body: the value it was encoded from, kept whole.
pub trait Body: Send + Sync {
    /// The body's bytes (none once [`take`](Self::take)n).
    fn bytes(&self) -> &[u8];

    /// The type of the value the body is, if it can be [`take`](Self::take)n.
    fn value_type(&self) -> Option<std::any::TypeId> {
        None
    }

    /// The value the body is, given away (`None` if it cannot be, or was already); the
    /// body has no bytes from then on.
    ///
    /// # Safety
    /// Nothing else uses the body while this runs: no other thread, and no slice of its
    /// [`bytes`](Self::bytes) is alive.
    unsafe fn take(&self) -> Option<Box<dyn std::any::Any>> {
        None
    }
}

/// A value encoded in two pieces: the few bytes before its elements, and the elements where
/// they already lie. Joined into one buffer only when something reads the value whole.
struct Split {
    head: Vec<u8>,
    body: Box<dyn Body>,
    joined: std::sync::OnceLock<Bytes>,
}

impl Split {
    /// The value in one buffer, its body on a cache line (made on the first call).
    fn joined(&self) -> &Bytes {
        self.joined.get_or_init(|| self.join())
    }

    /// A new buffer holding the value, its body on a cache line.
    fn join(&self) -> Bytes {
        let body = self.body.bytes();
        let mut whole = Bytes::aligned_after(self.head.len(), self.head.len() + body.len());
        whole.buf.extend_from_slice(&self.head);
        whole.buf.extend_from_slice(body);
        whole
    }

    /// The value in one buffer of its own, with one copy at most: the joined buffer itself
    /// when this was its last holder, else a copy of it, else a new join.
    fn into_owned(split: std::sync::Arc<Split>) -> Bytes {
        match std::sync::Arc::try_unwrap(split) {
            Ok(mut split) => match split.joined.take() {
                Some(joined) => joined,
                None => split.join(),
            },
            Err(shared) => match shared.joined.get() {
                Some(joined) => joined.clone(),
                None => shared.join(),
            },
        }
    }
}

impl Bytes {
    /// An empty value with room for `capacity` bytes, placed so that its byte `lead` (the
    /// first after a header of `lead` bytes) is at a multiple of [`ALIGN`].
    ///
    /// # Panics
    /// If the memory cannot be allocated (in a task, that fails the task).
    pub fn aligned_after(lead: usize, capacity: usize) -> Bytes {
        Self::placed_at((ALIGN - lead % ALIGN) % ALIGN, capacity)
            .unwrap_or_else(|e| panic!("cannot allocate {capacity} bytes for a value: {e}"))
    }

    /// An empty value with room for `capacity` bytes whose first byte has `placement` (its
    /// address mod [`ALIGN`]), as [`placement`](Self::placement) read it from another copy;
    /// an error if the memory cannot be allocated.
    /// A placement of [`ALIGN`] or more is taken mod [`ALIGN`].
    pub fn try_with_placement(placement: u8, capacity: usize) -> Result<Bytes, TryReserveError> {
        Self::placed_at(usize::from(placement), capacity)
    }

    /// A buffer of `capacity` bytes and up to `ALIGN - 1` more, skipping as many as it takes
    /// for the value to start at `placement` mod [`ALIGN`].
    fn placed_at(placement: usize, capacity: usize) -> Result<Bytes, TryReserveError> {
        let wanted = capacity.saturating_add(ALIGN - 1);
        let mut buf = spare_or_new(wanted)?;
        let start = skip_to(buf.as_ptr() as usize, placement);
        buf.resize(start, 0);
        Ok(Bytes {
            buf,
            start,
            of: None,
            split: None,
        })
    }

    /// The value whose bytes are `head` and then `body`'s, without copying the body: it
    /// stays where it is, owned by the value. (Sent to another rank, the two pieces travel
    /// from where they are; read whole here, they are joined into one buffer once.)
    ///
    /// # Panics
    /// If `head` is longer than [`MAX_HEAD_BYTES`].
    pub fn split(head: Vec<u8>, body: Box<dyn Body>) -> Bytes {
        assert!(
            head.len() <= MAX_HEAD_BYTES,
            "a split value's head is short"
        );
        Bytes {
            buf: Vec::new(),
            start: 0,
            of: None,
            split: Some(std::sync::Arc::new(Split {
                head,
                body,
                joined: std::sync::OnceLock::new(),
            })),
        }
    }

    /// A split value's head and body (see [`split`](Self::split)); `None` for any other.
    pub fn pieces(&self) -> Option<(&[u8], &[u8])> {
        self.split
            .as_deref()
            .map(|split| (split.head.as_slice(), split.body.bytes()))
    }

    /// The type of the value a split value's body is, when it can be taken
    /// ([`take_body`](Self::take_body)).
    pub(super) fn body_type(&self) -> Option<std::any::TypeId> {
        match (&self.of, &self.split) {
            (None, Some(split)) => split.body.value_type(),
            _ => None,
        }
    }

    /// The value a split value's body is, given away when this is its only holder (the
    /// value has no body from then on: only its head).
    ///
    /// # Safety
    /// Nothing else uses this value while this runs, and nothing reads its body after: no
    /// other thread, and no slice of its bytes is alive.
    pub(super) unsafe fn take_body(&self) -> Option<Box<dyn std::any::Any>> {
        let split = self.split.as_ref().filter(|_| self.of.is_none())?;
        if std::sync::Arc::strong_count(split) != 1 || std::sync::Arc::weak_count(split) != 0 {
            return None;
        }
        // After the last other holder's drop: what it did with the body happened before.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: this value holds the only reference to its split, and the caller
        // guarantees nothing else uses this value.
        unsafe { split.body.take() }
    }

    /// The value's bytes in two pieces read in turn, without joining a split value: its
    /// head and body, or all of any other value and nothing.
    pub fn as_pieces(&self) -> (&[u8], &[u8]) {
        self.pieces().unwrap_or((self.as_slice(), &[]))
    }

    /// The value's length in bytes (without joining a split value).
    pub fn len(&self) -> usize {
        match self.pieces() {
            Some((head, body)) => head.len() + body.len(),
            None => self.as_slice().len(),
        }
    }

    /// Whether the value has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes `range` of `whole`, sharing its memory (`None` if `range` is not inside
    /// it). The memory stays allocated while any view of it lives; writing to a view
    /// copies it first. (Only a shuffle's buckets are views.)
    #[cfg_attr(not(feature = "dataframe"), allow(dead_code))]
    pub fn view(whole: &std::sync::Arc<Bytes>, range: std::ops::Range<usize>) -> Option<Bytes> {
        (range.start <= range.end && range.end <= whole.len()).then(|| Bytes {
            buf: Vec::new(),
            start: 0,
            of: Some((std::sync::Arc::clone(whole), range)),
            split: None,
        })
    }

    /// A view or a split value made a value of its own (a copy, placed as the view was, or
    /// as a split value is joined); nothing for other values.
    fn own(&mut self) {
        if let Some(split) = self.split.take() {
            *self = Split::into_owned(split);
        } else if self.of.is_some() {
            let mut owned = Self::placed_at(usize::from(self.placement()), self.len())
                .unwrap_or_else(|e| {
                    panic!("cannot allocate {} bytes for a value: {e}", self.len())
                });
            owned.buf.extend_from_slice(self.as_slice());
            *self = owned;
        }
    }

    /// The value's address mod [`ALIGN`]: what a copy of it made elsewhere should have.
    /// (For a split value, the address that puts its body on a cache line.)
    pub fn placement(&self) -> u8 {
        let address = match self.pieces() {
            Some((head, _)) => ALIGN - head.len() % ALIGN,
            None => self.as_ptr() as usize,
        };
        // The remainder is below 64.
        (address % ALIGN) as u8
    }

    /// Appends `bytes` to the value.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.own();
        self.buf.extend_from_slice(bytes);
    }

    /// Appends everything `reader` yields; the number of bytes read.
    pub fn read_from(&mut self, mut reader: impl Read) -> std::io::Result<usize> {
        self.own();
        reader.read_to_end(&mut self.buf)
    }

    /// The value's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match (&self.of, &self.split) {
            (Some((whole, range)), _) => &whole.as_slice()[range.clone()],
            (None, Some(split)) => split.joined().as_slice(),
            (None, None) => &self.buf[self.start..],
        }
    }

    /// The value's bytes, to write in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.own();
        &mut self.buf[self.start..]
    }

    /// Appends what `fill` writes after the value's last byte: `fill` is given the whole
    /// allocation (skipped bytes and the value so far included) and may only append to it,
    /// e.g. by decompressing into its spare room.
    ///
    /// # Panics
    /// If `fill` shortened the allocation's contents.
    #[cfg(feature = "zarr")]
    pub fn append_with<R>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.own();
        let before = self.buf.len();
        let result = fill(&mut self.buf);
        assert!(self.buf.len() >= before, "append_with may only append");
        result
    }

    /// Appends `n` zero bytes (in the allocation's spare room when it has it).
    pub fn extend_zeroed(&mut self, n: usize) {
        self.own();
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// The value's bytes as a `Vec` of their own (moved when the value skips no byte,
    /// copied otherwise).
    pub fn into_vec(self) -> Vec<u8> {
        if let Some((head, body)) = self.pieces() {
            let mut whole = Vec::with_capacity(head.len() + body.len());
            whole.extend_from_slice(head);
            whole.extend_from_slice(body);
            return whole;
        }
        if self.start == 0 && self.of.is_none() {
            self.buf
        } else {
            self.as_slice().to_vec()
        }
    }

    /// The whole allocation holding the value, skipped bytes included: memory to reuse. For
    /// a view, the allocation of the value it is a range of when it was the last view of it
    /// (and that value is gone), else nothing; nothing for a split value.
    pub fn into_allocation(self) -> Vec<u8> {
        match self.of {
            Some((whole, _)) => std::sync::Arc::try_unwrap(whole)
                .map(Bytes::into_allocation)
                .unwrap_or_default(),
            None => self.buf,
        }
    }

    /// A value received into `buf`, whose first `start` bytes only place the rest.
    ///
    /// # Panics
    /// If `start` is past the end of `buf` or not below [`ALIGN`].
    pub fn from_parts(buf: Vec<u8>, start: usize) -> Bytes {
        assert!(
            start < ALIGN && start <= buf.len(),
            "a value skips fewer bytes than it has and than ALIGN"
        );
        Bytes {
            buf,
            start,
            of: None,
            split: None,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(buf: Vec<u8>) -> Bytes {
        Bytes {
            buf,
            start: 0,
            of: None,
            split: None,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Values are equal when their bytes are, wherever they are placed.
impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bytes({} bytes at {} mod {ALIGN})",
            self.len(),
            self.placement()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_values_put_the_byte_after_their_header_on_a_cache_line() {
        for lead in [0, 1, 12, 13, 63, 64, 100] {
            let mut value = Bytes::aligned_after(lead, 1000);
            assert!(value.is_empty());
            value.extend_from_slice(&vec![7u8; 1000]);
            assert_eq!(value.len(), 1000);
            assert_eq!((value.as_ptr() as usize + lead) % ALIGN, 0, "lead {lead}");
            assert!(value.iter().all(|&b| b == 7));
        }
    }

    #[test]
    fn copies_keep_the_placement_and_the_bytes() {
        let mut value = Bytes::aligned_after(13, 5);
        value.extend_from_slice(b"hello");
        let mut copy = Bytes::try_with_placement(value.placement(), value.len()).unwrap();
        copy.read_from(&value[..]).unwrap();
        assert_eq!(copy.placement(), value.placement());
        assert_eq!(copy, value.clone());
        assert_eq!(copy.as_slice(), b"hello");
        assert_eq!(copy.clone().into_vec(), b"hello".to_vec());
        assert!(copy.into_allocation().len() >= 5);
        // Out-of-range placements (from a corrupt message) are reduced, never trusted.
        assert_eq!(
            Bytes::try_with_placement(200, 1).unwrap().placement(),
            200 % ALIGN as u8
        );
    }

    #[test]
    fn spare_allocations_come_back_for_values_of_about_their_size() {
        // Sizes of this test's own: the spares are shared by the tests running meanwhile.
        let size = (7 << 20) + 5;
        give_spare(vec![1u8; size]);
        give_spare(vec![2u8; 10]); // too small to keep
        assert!(take_spare(10).is_none());
        assert!(take_spare(size + size / 8).is_none(), "too small for it");
        let spare = take_spare(size - 100).expect("kept");
        assert!(spare.is_empty() && spare.capacity() >= size);
        assert!(take_spare(size).is_none(), "taken once");
        // Allocations are kept whole, past their values' lengths too.
        let mut value = Vec::with_capacity(size + 1000);
        value.extend_from_slice(&[3u8; 10]);
        give_spare(value);
        let placed = Bytes::aligned_after(13, size + 900);
        assert!(placed.buf.capacity() >= size + 1000, "made in the spare");
        give_spare(vec![1u8; size]);
        clear_spares();
        assert!(take_spare(size).is_none());
    }

    #[test]
    fn views_share_their_value_until_written_and_give_its_memory_back_last() {
        let mut whole = Bytes::aligned_after(0, 3 << 20);
        whole.extend_from_slice(&vec![5u8; 3 << 20]);
        whole.as_mut_slice()[10] = 9;
        let whole = std::sync::Arc::new(whole);
        assert!(Bytes::view(&whole, 0..(3 << 20) + 1).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 5..4;
        assert!(Bytes::view(&whole, backwards).is_none());
        let a = Bytes::view(&whole, 8..16).unwrap();
        assert_eq!(a.as_slice(), &[5, 5, 9, 5, 5, 5, 5, 5]);
        assert_eq!(a.as_ptr(), whole[8..].as_ptr(), "shared, not copied");
        assert_eq!(
            a.placement(),
            whole[8..].as_ptr() as usize as u8 % ALIGN as u8
        );
        let mut b = a.clone();
        b.as_mut_slice()[0] = 1;
        assert_eq!((a[0], b[0], whole[8]), (5, 1, 5), "written after a copy");
        assert_eq!(b.placement(), a.placement());
        assert_eq!(a.clone().into_vec(), a.as_slice().to_vec());
        let c = Bytes::view(&whole, 0..1).unwrap();
        drop(whole);
        assert!(
            a.into_allocation().is_empty(),
            "another view still holds it"
        );
        assert!(
            c.into_allocation().capacity() >= 3 << 20,
            "the last one gives it back"
        );
    }

    struct Floats(Vec<f64>);

    impl Body for Floats {
        fn bytes(&self) -> &[u8] {
            bytemuck::cast_slice(&self.0)
        }
    }

    #[test]
    fn split_values_read_as_their_head_and_body_joined() {
        let floats = vec![1.5f64, -2.0, 3.25];
        let mut whole = vec![3u8, 9];
        whole.extend_from_slice(bytemuck::cast_slice(&floats));
        let body_at = floats.as_ptr();
        let value = Bytes::split(vec![3, 9], Box::new(Floats(floats)));
        let (head, body) = value.pieces().expect("split");
        assert_eq!((head, body.len()), (&[3u8, 9][..], 24));
        assert_eq!(value.as_pieces(), (head, body));
        assert_eq!(
            Bytes::from(vec![1, 2]).as_pieces(),
            (&[1u8, 2][..], &[][..])
        );
        assert_eq!(body.as_ptr(), body_at.cast(), "the body is not copied");
        assert_eq!((value.len(), value.is_empty()), (26, false));
        // A copy received elsewhere puts the body on a cache line.
        assert_eq!(usize::from(value.placement()), ALIGN - 2);
        let copy = value.clone();
        assert_eq!(value.as_slice(), &whole[..]);
        assert_eq!(
            (value.as_ptr() as usize + 2) % ALIGN,
            0,
            "joined on a cache line"
        );
        assert_eq!(copy.as_ptr(), value.as_ptr(), "joined once for every clone");
        assert_eq!(copy.clone().into_vec(), whole);
        let mut written = copy;
        written.as_mut_slice()[0] = 4;
        assert!(written.pieces().is_none(), "written values own their bytes");
        assert_eq!((written[0], value[0]), (4, 3));
        // Its last holder takes the joined buffer to write it, without a copy.
        let joined_at = value.as_ptr();
        let mut last = value;
        last.as_mut_slice()[1] = 7;
        assert_eq!((last.as_ptr(), &last[..2]), (joined_at, &[3u8, 7][..]));
        // A split value never read whole is joined straight into the buffer it writes.
        let mut fresh = Bytes::split(vec![3, 9], Box::new(Floats(vec![1.5, -2.0, 3.25])));
        fresh.extend_from_slice(&[1]);
        assert_eq!(fresh.as_slice()[..26], whole[..]);
        assert_eq!((fresh.len(), fresh[26]), (27, 1));
    }

    #[test]
    fn skips_reach_the_placement() {
        assert_eq!(skip_to(100, 36), 0);
        assert_eq!(skip_to(101, 36), 63);
        assert_eq!(skip_to(64, 0), 0);
        assert_eq!(skip_to(65, 64 + 2), 1);
    }

    #[test]
    fn plain_vectors_move_in_and_out() {
        let value = Bytes::from(vec![1, 2, 3]);
        assert_eq!(&value[..], &[1, 2, 3]);
        assert_eq!(value.into_vec(), vec![1, 2, 3]);
        let received = Bytes::from_parts(vec![0, 0, 9], 2);
        assert_eq!(received.as_slice(), &[9]);
    }
}
