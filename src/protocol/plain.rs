//! Values of plain numbers encoded and decoded by one copy of their elements instead of
//! one element at a time: `Vec<E>` and `ndarray` arrays (`Array1`, `Array2`, `Array3`,
//! `ArrayD`) of `f64` or `f32`, and `Vec<u8>`, alone or as a one-field tuple (a task's
//! argument tuple). The bytes are exactly bincode's (for a vector its length, for an array
//! `ndarray`'s version byte, shape and element count, then the elements, little endian), so
//! a value written by either path is read by either.
//!
//! A task's plain result, once encoded (or a split value's elements, once it is dropped),
//! leaves its memory to the next plain value the process decodes ([`recycle`]): memory the
//! process already touched, where fresh memory costs a page fault and the zeroing of every
//! page (on some virtual machines most of a `map_blocks` task's time).

use super::bytes::{Body, Bytes, MAX_HEAD_BYTES};
use super::frame::codec;
use bincode::Options;
use ndarray::{Array, Dimension, Ix1, Ix2, Ix3, IxDyn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId};
use std::borrow::Cow;

/// The version byte `ndarray` writes first when it serialises an array.
const NDARRAY_FORMAT_VERSION: u8 = 1;

/// A number whose bincode encoding (under [`codec`]) is its little-endian bytes: floats and
/// bytes. Wider integers are variable-length in bincode and are not plain.
trait Plain: bytemuck::Pod + Send + Sync {}
impl Plain for f64 {}
impl Plain for f32 {}
impl Plain for u8 {}

/// A plain value's encoding in two parts: what comes before the elements, and the
/// elements' bytes (borrowed from the value when they lie in order in memory).
pub(super) struct Parts<'a> {
    /// Length or array header.
    pub head: Vec<u8>,
    /// The elements, little endian.
    pub elements: Cow<'a, [u8]>,
}

/// `$vec::<E>(args)` for each plain element type `E`, then `$array::<E, D>(args)` for each
/// plain element type and dimension `D`: the first answer (`Some`), in that order. The one
/// list of the plain types, for encoding, splitting and decoding alike.
macro_rules! each_plain {
    ($vec:ident, $array:ident, $($arg:expr),+) => {
        $vec::<f64>($($arg),+)
            .or_else(|| $vec::<f32>($($arg),+))
            .or_else(|| $vec::<u8>($($arg),+))
            .or_else(|| $array::<f64, IxDyn>($($arg),+))
            .or_else(|| $array::<f64, Ix1>($($arg),+))
            .or_else(|| $array::<f64, Ix2>($($arg),+))
            .or_else(|| $array::<f64, Ix3>($($arg),+))
            .or_else(|| $array::<f32, IxDyn>($($arg),+))
            .or_else(|| $array::<f32, Ix1>($($arg),+))
            .or_else(|| $array::<f32, Ix2>($($arg),+))
            .or_else(|| $array::<f32, Ix3>($($arg),+))
    };
}

/// `value`'s encoding in parts, if it is a plain value.
pub(super) fn parts<T: Any>(value: &T) -> Option<bincode::Result<Parts<'_>>> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let any = value as &dyn Any;
    each_plain!(vec_parts, array_parts, any)
}

/// The value `any` refers to as a `V`, alone or as the field of a one-field tuple.
fn alone_or_in_tuple<V: Any>(any: &dyn Any) -> Option<&V> {
    any.downcast_ref::<V>()
        .or_else(|| any.downcast_ref::<(V,)>().map(|t| &t.0))
}

fn vec_parts<E: Plain>(any: &dyn Any) -> Option<bincode::Result<Parts<'_>>> {
    let values = alone_or_in_tuple::<Vec<E>>(any)?;
    Some(head(&(values.len() as u64)).map(|head| Parts {
        head,
        elements: Cow::Borrowed(bytemuck::cast_slice(values)),
    }))
}

fn array_parts<E: Plain, D: Dimension + Serialize + 'static>(
    any: &dyn Any,
) -> Option<bincode::Result<Parts<'_>>> {
    let array = alone_or_in_tuple::<Array<E, D>>(any)?;
    let head = head(&(NDARRAY_FORMAT_VERSION, array.raw_dim(), array.len() as u64));
    let elements = match array.as_slice() {
        Some(values) => Cow::Borrowed(bytemuck::cast_slice(values)),
        None => {
            Cow::Owned(bytemuck::cast_slice(&array.iter().copied().collect::<Vec<E>>()).to_vec())
        }
    };
    Some(head.map(|head| Parts { head, elements }))
}

fn head<H: Serialize + ?Sized>(value: &H) -> bincode::Result<Vec<u8>> {
    codec().serialize(value)
}

/// `value`, given away, as a split value ([`Bytes::split`]) that keeps its elements where
/// they lie: for a plain vector or an array whose elements are contiguous; `value` back
/// otherwise.
/// (Only a value of at least `min_bytes` of elements is split.)
pub(super) fn into_split<T: Any>(value: T, min_bytes: usize) -> Result<Bytes, T> {
    if !cfg!(target_endian = "little") {
        return Err(value);
    }
    let mut slot = Some(value);
    let any = &mut slot as &mut dyn Any;
    let split = each_plain!(split_vec, split_array, any, min_bytes);
    match split {
        Some(bytes) => Ok(bytes),
        None => Err(slot.expect("taken only when split")),
    }
}

/// A plain value kept whole as the body of its split encoding; once the split value is
/// dropped, its memory goes to the next plain value decoded here ([`recycle`]). The task
/// that is its last reader takes it instead ([`take_whole`]).
struct Whole<V: Any>(std::cell::UnsafeCell<Option<V>>);

// SAFETY: the value is read through `&self` (`bytes`, from any thread: `V` is `Sync`) and
// written only by `take`, whose caller guarantees that nothing else uses it meanwhile.
unsafe impl<V: Any + Send + Sync> Sync for Whole<V> {}

impl<V: Any> Whole<V> {
    fn new(value: V) -> Self {
        Whole(std::cell::UnsafeCell::new(Some(value)))
    }

    /// The value, or `None` once taken.
    fn value(&self) -> Option<&V> {
        // SAFETY: only `take` writes, and never while this reference lives (its contract).
        unsafe { &*self.0.get() }.as_ref()
    }

    /// # Safety
    /// As [`Body::take`].
    unsafe fn take_value(&self) -> Option<Box<dyn Any>> {
        // SAFETY: nothing else reads or writes the value meanwhile (the caller's contract).
        let value = unsafe { &mut *self.0.get() }.take()?;
        Some(Box::new(value))
    }
}

impl<V: Any> Drop for Whole<V> {
    fn drop(&mut self) {
        if let Some(value) = self.0.get_mut().take() {
            recycle(value);
        }
    }
}

impl<E: Plain + Send + Sync> Body for Whole<Vec<E>> {
    fn bytes(&self) -> &[u8] {
        self.value().map_or(&[], |v| bytemuck::cast_slice(v))
    }

    fn value_type(&self) -> Option<TypeId> {
        Some(TypeId::of::<Vec<E>>())
    }

    unsafe fn take(&self) -> Option<Box<dyn Any>> {
        // SAFETY: the caller's contract is this one's.
        unsafe { self.take_value() }
    }
}

impl<E: Plain + Send + Sync, D: Dimension + 'static> Body for Whole<Array<E, D>> {
    fn bytes(&self) -> &[u8] {
        self.value().map_or(&[], |v| {
            bytemuck::cast_slice(v.as_slice().expect("split only when contiguous"))
        })
    }

    fn value_type(&self) -> Option<TypeId> {
        Some(TypeId::of::<Array<E, D>>())
    }

    unsafe fn take(&self) -> Option<Box<dyn Any>> {
        // SAFETY: the caller's contract is this one's.
        unsafe { self.take_value() }
    }
}

fn split_vec<E: Plain + Send + Sync>(slot: &mut dyn Any, min_bytes: usize) -> Option<Bytes> {
    let slot = slot.downcast_mut::<Option<Vec<E>>>()?;
    if std::mem::size_of_val(slot.as_ref()?.as_slice()) < min_bytes {
        return None;
    }
    let values = slot.take()?;
    let head = head(&(values.len() as u64)).expect("a length encodes");
    Some(Bytes::split(head, Box::new(Whole::new(values))))
}

/// A head short enough for a split value's.
fn short(head: bincode::Result<Vec<u8>>) -> Option<Vec<u8>> {
    head.ok().filter(|head| head.len() <= MAX_HEAD_BYTES)
}

fn split_array<E: Plain + Send + Sync, D: Dimension + Serialize + 'static>(
    slot: &mut dyn Any,
    min_bytes: usize,
) -> Option<Bytes> {
    let slot = slot.downcast_mut::<Option<Array<E, D>>>()?;
    let array = slot.as_ref()?;
    if std::mem::size_of_val(array.as_slice()?) < min_bytes {
        return None;
    }
    let head = short(head(&(
        NDARRAY_FORMAT_VERSION,
        array.raw_dim(),
        array.len() as u64,
    )))?;
    let array = slot.take()?;
    Some(Bytes::split(head, Box::new(Whole::new(array))))
}

/// `bytes` decoded as `T`, if `T` is a plain value.
pub(super) fn decode<T: Any>(bytes: &[u8]) -> Option<bincode::Result<T>> {
    decode_pieces(bytes, &[])
}

/// The value whose encoding is `head` and then `body` (the two pieces of a split value, or
/// a whole encoding and nothing) decoded as `T`, if `T` is a plain value: the elements are
/// copied once, from where they lie.
pub(super) fn decode_pieces<T: Any>(head: &[u8], body: &[u8]) -> Option<bincode::Result<T>> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let bytes = (head, body);
    let mut out: Option<T> = None;
    let slot = &mut out as &mut dyn Any;
    let found = each_plain!(decode_vec_into, decode_array_into, bytes, slot)?;
    Some(found.map(|()| out.expect("the decoded value was stored")))
}

/// The value `bytes` holds, given away as a `T` when it is a split value whose body is a
/// plain value `T` can be made of without a copy (alone or as a one-field tuple: the same
/// type, or an array of a vector's elements) and `bytes` its only holder. `None` (and
/// `bytes` unchanged) otherwise. The head is checked against the body first, as
/// [`decode_pieces`] checks it.
///
/// # Safety
/// Nothing else uses `bytes` while this runs, and nothing reads its body after: no other
/// thread, and no slice of its bytes is alive.
pub(super) unsafe fn take_whole<T: Any>(bytes: &Bytes) -> Option<T> {
    let held = bytes.body_type()?;
    let (head, body) = bytes.pieces()?;
    let found = Found {
        held,
        head: head.to_vec(),
        body_bytes: body.len(),
    };
    let mut out: Option<T> = None;
    let slot = &mut out as &mut dyn Any;
    let taken = || {
        // SAFETY: the caller's contract is this one's (the slices above are gone).
        unsafe { bytes.take_body() }
    };
    each_plain!(take_vec_into, take_array_into, &found, slot, &taken)?;
    out
}

/// What [`take_whole`] found in a split value before taking its body.
struct Found {
    /// The type of the body's value.
    held: TypeId,
    head: Vec<u8>,
    body_bytes: usize,
}

/// Takes the body into `slot` if `slot` wants a `Vec<E>` and the body is one, of the
/// length its head says.
fn take_vec_into<E: Plain>(
    found: &Found,
    slot: &mut dyn Any,
    taken: &dyn Fn() -> Option<Box<dyn Any>>,
) -> Option<()> {
    if found.held != TypeId::of::<Vec<E>>() || !wants::<Vec<E>>(slot) {
        return None;
    }
    let mut rest = found.head.as_slice();
    let len: u64 = codec().deserialize_from(&mut rest).ok()?;
    let fits = rest.is_empty()
        && len.checked_mul(std::mem::size_of::<E>() as u64) == Some(found.body_bytes as u64);
    if !fits {
        return None;
    }
    let values = *taken()?.downcast::<Vec<E>>().ok()?;
    store::<Vec<E>>(slot, || Ok(values)).map(|_| ())
}

/// Takes the body into `slot` if `slot` wants an `Array<E, D>` and the body is one, or is
/// a `Vec<E>` of as many elements as the shape its head says.
fn take_array_into<E: Plain, D: Dimension + DeserializeOwned + 'static>(
    found: &Found,
    slot: &mut dyn Any,
    taken: &dyn Fn() -> Option<Box<dyn Any>>,
) -> Option<()> {
    if !wants::<Array<E, D>>(slot) {
        return None;
    }
    if found.held == TypeId::of::<Array<E, D>>() {
        // Made here from this very array: its head is the array's.
        let array = *taken()?.downcast::<Array<E, D>>().ok()?;
        return store::<Array<E, D>>(slot, || Ok(array)).map(|_| ());
    }
    if found.held != TypeId::of::<Vec<E>>() {
        return None;
    }
    let mut rest = found.head.as_slice();
    let (version, dim, count): (u8, D, u64) = codec().deserialize_from(&mut rest).ok()?;
    let fits = rest.is_empty()
        && version == NDARRAY_FORMAT_VERSION
        && dim.size_checked() == Some(count as usize)
        && count.checked_mul(std::mem::size_of::<E>() as u64) == Some(found.body_bytes as u64);
    if !fits {
        return None;
    }
    let values = *taken()?.downcast::<Vec<E>>().ok()?;
    let array = Array::from_shape_vec(dim, values).ok()?;
    store::<Array<E, D>>(slot, || Ok(array)).map(|_| ())
}

/// Whether `slot` is an `Option<V>` or an `Option<(V,)>`.
fn wants<V: Any>(slot: &dyn Any) -> bool {
    slot.is::<Option<V>>() || slot.is::<Option<(V,)>>()
}

/// A value received from another rank as a split value's head and its elements, received
/// straight into `values` (8-byte elements, whatever their type): read as the value
/// whose encoding is the head and then the elements' bytes, and taken whole by its last
/// reader when it is a vector or array of `f64` ([`take_whole`]).
pub fn received_split(head: Vec<u8>, values: Vec<f64>) -> Bytes {
    Bytes::split(head, Box::new(Whole::new(values)))
}

/// An empty vector with room for `len` elements of 8 bytes to receive into: a kept one
/// ([`recycle`]) or a new one.
pub fn receive_elements(len: usize) -> Result<Vec<f64>, std::collections::TryReserveError> {
    match take_spare::<f64>(len) {
        Some(values) => Ok(values),
        None => {
            let mut values = Vec::new();
            values.try_reserve_exact(len)?;
            Ok(values)
        }
    }
}

/// What follows a header read from the first piece: the rest of it, or (when the header
/// took all of it) the second piece.
fn after_header<'a>(first: &'a [u8], second: &'a [u8]) -> bincode::Result<&'a [u8]> {
    match (first.is_empty(), second.is_empty()) {
        (true, _) => Ok(second),
        (false, true) => Ok(first),
        (false, false) => Err(malformed(format!(
            "{} bytes between a value's head and its elements",
            first.len()
        ))),
    }
}

/// Stores `decode()` in `slot` if `slot` is an `Option<V>` or an `Option<(V,)>`.
fn store<V: Any>(
    slot: &mut dyn Any,
    decode: impl FnOnce() -> bincode::Result<V>,
) -> Option<bincode::Result<()>> {
    if slot.is::<Option<V>>() {
        let value = decode();
        return Some(value.map(|v| *slot.downcast_mut::<Option<V>>().expect("checked") = Some(v)));
    }
    if slot.is::<Option<(V,)>>() {
        let value = decode();
        return Some(
            value.map(|v| *slot.downcast_mut::<Option<(V,)>>().expect("checked") = Some((v,))),
        );
    }
    None
}

fn decode_vec_into<E: Plain>(
    (head, body): (&[u8], &[u8]),
    slot: &mut dyn Any,
) -> Option<bincode::Result<()>> {
    store::<Vec<E>>(slot, || {
        let mut rest = head;
        let len: u64 = codec().deserialize_from(&mut rest)?;
        elements(len, after_header(rest, body)?)
    })
}

fn decode_array_into<E: Plain, D: Dimension + DeserializeOwned + 'static>(
    (head, body): (&[u8], &[u8]),
    slot: &mut dyn Any,
) -> Option<bincode::Result<()>> {
    store::<Array<E, D>>(slot, || {
        let mut rest = head;
        let (version, dim, count): (u8, D, u64) = codec().deserialize_from(&mut rest)?;
        let rest = after_header(rest, body)?;
        if version != NDARRAY_FORMAT_VERSION {
            return Err(malformed(format!(
                "unknown ndarray format version {version}"
            )));
        }
        if dim.size_checked() != Some(count as usize) {
            return Err(malformed(format!(
                "an array of shape {:?} cannot hold {count} elements",
                dim.slice()
            )));
        }
        let values = elements::<E>(count, rest)?;
        Array::from_shape_vec(dim, values).map_err(|e| malformed(e.to_string()))
    })
}

/// Spare vectors are kept from this size on (smaller ones cost little to allocate).
const SPARE_MIN_BYTES: usize = 1 << 20;
/// At most this many spare vectors, of at most [`SPARE_MAX_BYTES`] in all.
const SPARE_MAX: usize = 4;
const SPARE_MAX_BYTES: usize = 512 << 20;

/// Allocations of encoded results and of dropped split values (each an empty `Vec<E>`,
/// with its size in bytes), for the next plain values this process decodes.
static SPARE: std::sync::Mutex<Vec<(usize, Box<dyn Any + Send>)>> =
    std::sync::Mutex::new(Vec::new());

fn spare() -> std::sync::MutexGuard<'static, Vec<(usize, Box<dyn Any + Send>)>> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the allocation of `value` (a task's result, already encoded) if it is a plain
/// vector or array of floats large enough to be worth keeping; drops it otherwise.
pub fn recycle<T: Any>(value: T) {
    let mut slot = Some(value);
    let any = &mut slot as &mut dyn Any;
    if let Some(values) = elements_of::<f64>(any) {
        keep(values);
    } else if let Some(values) = elements_of::<f32>(any) {
        keep(values);
    }
}

/// The elements' vector of the `Vec<E>` or `ArrayD<E>` in `slot` (an `Option` of it),
/// taken out.
fn elements_of<E: Plain>(slot: &mut dyn Any) -> Option<Vec<E>> {
    if let Some(values) = slot.downcast_mut::<Option<Vec<E>>>() {
        return values.take();
    }
    slot.downcast_mut::<Option<ndarray::ArrayD<E>>>()?
        .take()
        .map(|array| array.into_raw_vec_and_offset().0)
}

fn keep<E: Plain>(mut values: Vec<E>) {
    let bytes = values.capacity() * std::mem::size_of::<E>();
    if !(SPARE_MIN_BYTES..=SPARE_MAX_BYTES).contains(&bytes) {
        return;
    }
    values.clear();
    let mut kept = spare();
    if kept.len() == SPARE_MAX {
        kept.remove(0);
    }
    let total: usize = kept.iter().map(|(bytes, _)| bytes).sum();
    if total + bytes <= SPARE_MAX_BYTES {
        kept.push((bytes, Box::new(values)));
    }
}

/// A kept allocation for `len` elements of `E` (at most twice that), empty.
fn take_spare<E: Plain>(len: usize) -> Option<Vec<E>> {
    if len * std::mem::size_of::<E>() < SPARE_MIN_BYTES {
        return None;
    }
    let mut kept = spare();
    let fits = |v: &Vec<E>| v.capacity() >= len && v.capacity() <= 2 * len;
    let index = kept
        .iter()
        .position(|(_, spare)| spare.downcast_ref::<Vec<E>>().is_some_and(fits))?;
    kept.remove(index).1.downcast::<Vec<E>>().ok().map(|v| *v)
}

/// `len` elements read from `rest`, which must hold exactly that many.
fn elements<E: Plain>(len: u64, rest: &[u8]) -> bincode::Result<Vec<E>> {
    let size = std::mem::size_of::<E>() as u64;
    if len.checked_mul(size) != Some(rest.len() as u64) {
        return Err(malformed(format!(
            "{len} elements of {size} bytes cannot be read from the {} bytes that follow",
            rest.len()
        )));
    }
    let mut values: Vec<E> =
        take_spare(len as usize).unwrap_or_else(|| Vec::with_capacity(len as usize));
    let spare = &mut values.spare_capacity_mut()[..len as usize];
    // SAFETY: `spare` is `len` uninitialised elements of a plain type, `len * size` bytes,
    // exactly `rest.len()`; every bit pattern is a valid `E` (`Pod`), and the copy is bytewise
    // (`rest` need not be aligned).
    unsafe {
        std::ptr::copy_nonoverlapping(rest.as_ptr(), spare.as_mut_ptr().cast::<u8>(), rest.len());
        values.set_len(len as usize);
    }
    Ok(values)
}

fn malformed(what: String) -> bincode::Error {
    Box::new(bincode::ErrorKind::Custom(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, ArrayD, ShapeBuilder};

    fn joined(parts: Parts<'_>) -> Vec<u8> {
        let mut out = parts.head;
        out.extend_from_slice(&parts.elements);
        out
    }

    fn same_as_bincode<T: Serialize + DeserializeOwned + Any + PartialEq + std::fmt::Debug>(
        value: T,
    ) {
        let slow = codec().serialize(&value).unwrap();
        let fast = joined(parts(&value).expect("a plain value").unwrap());
        assert_eq!(fast, slow, "the same bytes as bincode");
        let back: T = decode(&slow).expect("a plain value").unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn plain_values_encode_as_bincode_does() {
        same_as_bincode(vec![1.5f64, -2.0, f64::MAX, 0.1]);
        same_as_bincode((vec![3.25f64; 300],));
        same_as_bincode(vec![1.5f32; 1000]);
        same_as_bincode((0..=255u8).collect::<Vec<u8>>());
        same_as_bincode(Vec::<f64>::new());
        same_as_bincode(Array1::from_vec(vec![1.0f64, 2.0, 3.0]));
        same_as_bincode(Array2::from_shape_fn((300, 7), |(i, j)| (i * 7 + j) as f32));
        same_as_bincode((ArrayD::from_shape_fn(vec![4, 3, 2], |i| i[0] as f64 - 0.5),));
        same_as_bincode(ArrayD::<f64>::zeros(vec![0, 3]));
    }

    #[test]
    fn arrays_out_of_order_in_memory_encode_in_logical_order() {
        let a = Array2::from_shape_vec((3, 2).f(), vec![1.0f64, 2., 3., 4., 5., 6.]).unwrap();
        let t = a.t().to_owned();
        for value in [a, t] {
            let slow = codec().serialize(&value).unwrap();
            assert_eq!(joined(parts(&value).unwrap().unwrap()), slow);
        }
    }

    /// `value` given away: split (its elements not copied) if `split`, with bincode's
    /// encoding.
    fn given<T: Serialize + Any>(value: T, split: bool) {
        let want = codec().serialize(&value).unwrap();
        match into_split(value, 0) {
            Ok(bytes) => {
                assert!(split, "{} bytes split", want.len());
                assert!(bytes.pieces().is_some());
                assert_eq!(bytes.len(), want.len());
                assert_eq!(bytes.as_slice(), &want[..]);
            }
            Err(_) => assert!(!split, "{} bytes not split", want.len()),
        }
    }

    #[test]
    fn values_given_away_keep_their_elements_where_they_lie() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let at = values.as_ptr();
        let Ok(bytes) = into_split(values, 0) else {
            panic!("a vector of floats is split")
        };
        let (head, body) = bytes.pieces().unwrap();
        assert_eq!((head.len(), body.len()), (3, 8000));
        assert_eq!(body.as_ptr(), at.cast(), "not copied");
        given(vec![1.5f32, 2.5], true);
        given(vec![7u8; 300], true);
        given(Array1::from(vec![1.0f64, 2.0, 3.0]), true);
        given(Array2::from_elem((3, 4), 2.0f32), true);
        given(ArrayD::from_elem(vec![2, 3, 4], 0.5f64), true);
        // Out of order in memory: encoded, in logical order.
        let a = Array2::from_shape_vec((3, 2).f(), vec![1.0f64, 2., 3., 4., 5., 6.]).unwrap();
        given(a, false);
        given(vec![1i64, 2], false);
        given((vec![1.0f64],), false);
        // An array of many axes has a head too long to split.
        given(ArrayD::from_elem(vec![1; 300], 1.0f64), false);
        // Values that travel inside a frame are joined at once.
        let small = super::super::encode_given(vec![1.0f64; 100]).unwrap();
        assert!(small.pieces().is_none());
        assert_eq!(
            small.as_slice(),
            &codec().serialize(&vec![1.0f64; 100]).unwrap()[..]
        );
        let large = super::super::encode_given(vec![1.0f64; 10_000]).unwrap();
        assert!(large.pieces().is_some());
    }

    #[test]
    fn other_types_take_the_general_path() {
        assert!(parts(&vec![1i64, 2]).is_none());
        assert!(parts(&(vec![1.0f64], 2u8)).is_none());
        assert!(parts(&ArrayD::<i64>::zeros(vec![2])).is_none());
        assert!(decode::<Vec<u64>>(&[0]).is_none());
        assert!(decode::<String>(&[0]).is_none());
    }

    #[test]
    fn a_recycled_result_receives_the_next_decoded_value() {
        let len = 300_000;
        let result = ArrayD::from_elem(vec![len], 1.0f64);
        let address = result.as_ptr() as usize;
        recycle(result);
        let bytes = codec().serialize(&vec![2.5f64; len]).unwrap();
        let decoded: Vec<f64> = decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded.as_ptr() as usize, address, "the kept allocation");
        assert!(decoded.iter().all(|&v| v == 2.5));
        // Small values and other types are not kept.
        recycle(vec![1.0f64; 10]);
        recycle(vec![1i64; len]);
        let again: Vec<f64> = decode(&bytes).unwrap().unwrap();
        assert_ne!(again.as_ptr() as usize, address);
    }

    #[test]
    fn the_only_holder_of_a_split_value_takes_its_elements() {
        use super::super::frame::{decode_bytes, decode_payload};
        use std::sync::Arc;
        // Small values: no kept allocation is taken from other tests.
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let split = |v: Vec<f64>| Arc::new(into_split(v, 0).unwrap_or_else(|_| panic!("split")));
        let mine = values.clone();
        let at = mine.as_ptr();
        let (taken,): (Vec<f64>,) = decode_payload(&split(mine)).unwrap();
        assert_eq!(
            (taken.as_slice(), taken.as_ptr()),
            (&values[..], at),
            "not copied"
        );
        // Shared, it is copied: the other holder still reads it.
        let shared = split(values.clone());
        let other = Arc::clone(&shared);
        let copy: Vec<f64> = decode_payload(&shared).unwrap();
        let (_, body) = other.pieces().unwrap();
        assert_ne!(copy.as_ptr().cast::<u8>(), body.as_ptr());
        assert_eq!(decode_bytes::<Vec<f64>>(&other).unwrap(), values);
        // Elements received from another rank become the array its head describes.
        let shape = Array2::<f64>::zeros((40, 25)).raw_dim();
        let head = codec()
            .serialize(&(NDARRAY_FORMAT_VERSION, shape, 1000u64))
            .unwrap();
        let mine = values.clone();
        let at = mine.as_ptr();
        let array: Array2<f64> = decode_payload(&Arc::new(received_split(head, mine))).unwrap();
        assert_eq!((array.dim(), array.as_ptr()), ((40, 25), at));
        assert_eq!(array.as_slice().unwrap(), &values[..]);
        // A head that does not fit the elements is decoded, and refused, as bytes are.
        let wrong = Arc::new(received_split(
            codec().serialize(&999u64).unwrap(),
            values.clone(),
        ));
        assert!(decode_payload::<Vec<f64>>(&wrong).is_err());
        assert!(
            wrong.pieces().is_some_and(|(_, body)| body.len() == 8000),
            "kept"
        );
        // Another element type is decoded from the bytes.
        let halves = Arc::new(received_split(
            codec().serialize(&2000u64).unwrap(),
            values.clone(),
        ));
        let floats: Vec<f32> = decode_payload(&halves).unwrap();
        assert_eq!(floats.len(), 2000);
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        let mut bytes = codec().serialize(&vec![1.0f64, 2.0]).unwrap();
        bytes.pop();
        assert!(decode::<Vec<f64>>(&bytes).unwrap().is_err());
        bytes.extend_from_slice(&[0, 0]);
        assert!(
            decode::<Vec<f64>>(&bytes).unwrap().is_err(),
            "trailing bytes"
        );
        let huge = codec().serialize(&u64::MAX).unwrap();
        assert!(decode::<Vec<f64>>(&huge).unwrap().is_err());
        assert!(decode::<Vec<u8>>(&[]).unwrap().is_err());
        let wrong_shape = codec().serialize(&(1u8, vec![2usize, 3], 5u64)).unwrap();
        assert!(decode::<ArrayD<f64>>(&wrong_shape).unwrap().is_err());
        let overflow = codec()
            .serialize(&(1u8, vec![usize::MAX, 3], 0u64))
            .unwrap();
        assert!(decode::<ArrayD<f64>>(&overflow).unwrap().is_err());
        let version = codec()
            .serialize(&(2u8, vec![1usize], 1u64, 0.5f64))
            .unwrap();
        assert!(decode::<ArrayD<f64>>(&version).unwrap().is_err());
    }
}
