//! Vectors of plain numbers (`Vec<f64>`, `Vec<f32>`, `Vec<u8>`, alone or as a one-field
//! tuple) encoded and decoded by one copy instead of element by element. The bytes are
//! exactly bincode's (the length as a variable-length integer, then the elements, little
//! endian), so a value written by either path is read by either.

use super::frame::codec;
use bincode::Options;
use std::any::Any;

/// A number whose bincode encoding (under [`codec`]) is its little-endian bytes: floats and
/// bytes. Wider integers are variable-length in bincode and are not plain.
trait Plain: bytemuck::Pod {}
impl Plain for f64 {}
impl Plain for f32 {}
impl Plain for u8 {}

/// `value`'s encoding if it is a plain vector (or a one-field tuple of one).
pub(super) fn encode<T: Any>(value: &T) -> Option<bincode::Result<Vec<u8>>> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let any = value as &dyn Any;
    encode_as::<f64>(any)
        .or_else(|| encode_as::<f32>(any))
        .or_else(|| encode_as::<u8>(any))
}

fn encode_as<E: Plain>(any: &dyn Any) -> Option<bincode::Result<Vec<u8>>> {
    let values: &[E] = if let Some(v) = any.downcast_ref::<Vec<E>>() {
        v
    } else {
        &any.downcast_ref::<(Vec<E>,)>()?.0
    };
    let bytes: &[u8] = bytemuck::cast_slice(values);
    let mut out = Vec::with_capacity(bytes.len() + 9);
    Some(
        codec()
            .serialize_into(&mut out, &(values.len() as u64))
            .map(|()| {
                out.extend_from_slice(bytes);
                out
            }),
    )
}

/// `bytes` decoded as `T`, if `T` is a plain vector (or a one-field tuple of one).
pub(super) fn decode<T: Any>(bytes: &[u8]) -> Option<bincode::Result<T>> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let mut out: Option<T> = None;
    let slot = &mut out as &mut dyn Any;
    let found = decode_as::<f64>(bytes, slot)
        .or_else(|| decode_as::<f32>(bytes, slot))
        .or_else(|| decode_as::<u8>(bytes, slot))?;
    Some(found.map(|()| out.expect("the decoded value was stored")))
}

/// Decodes into `slot` if it is an `Option<Vec<E>>` or an `Option<(Vec<E>,)>`.
fn decode_as<E: Plain>(bytes: &[u8], slot: &mut dyn Any) -> Option<bincode::Result<()>> {
    let is_vec = slot.is::<Option<Vec<E>>>();
    if !is_vec && !slot.is::<Option<(Vec<E>,)>>() {
        return None;
    }
    let values = match decode_vec::<E>(bytes) {
        Ok(values) => values,
        Err(e) => return Some(Err(e)),
    };
    if is_vec {
        *slot.downcast_mut::<Option<Vec<E>>>()? = Some(values);
    } else {
        *slot.downcast_mut::<Option<(Vec<E>,)>>()? = Some((values,));
    }
    Some(Ok(()))
}

fn decode_vec<E: Plain>(bytes: &[u8]) -> bincode::Result<Vec<E>> {
    let mut rest = bytes;
    let len: u64 = codec().deserialize_from(&mut rest)?;
    let size = std::mem::size_of::<E>() as u64;
    if len.checked_mul(size) != Some(rest.len() as u64) {
        return Err(Box::new(bincode::ErrorKind::Custom(format!(
            "a vector of {len} elements of {size} bytes cannot be read from the {} bytes \
             that follow its length",
            rest.len()
        ))));
    }
    let mut values: Vec<E> = Vec::with_capacity(len as usize);
    // The elements, unaligned in `rest`, copied as bytes into the vector's spare capacity.
    let spare = &mut values.spare_capacity_mut()[..len as usize];
    // SAFETY: `spare` is `len` uninitialised elements of a plain type, `len * size` bytes,
    // exactly `rest.len()`; every bit pattern is a valid `E` (`Pod`).
    unsafe {
        std::ptr::copy_nonoverlapping(rest.as_ptr(), spare.as_mut_ptr().cast::<u8>(), rest.len());
        values.set_len(len as usize);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    fn same_as_bincode<T: Serialize + DeserializeOwned + Any + PartialEq + std::fmt::Debug>(
        value: T,
    ) {
        let slow = codec().serialize(&value).unwrap();
        let fast = encode(&value).expect("a plain vector").unwrap();
        assert_eq!(fast, slow, "the same bytes as bincode");
        let back: T = decode(&slow).expect("a plain vector").unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn plain_vectors_encode_as_bincode_does() {
        same_as_bincode(vec![1.5f64, -2.0, f64::MAX, 0.1]);
        same_as_bincode((vec![3.25f64; 300],));
        same_as_bincode(vec![1.5f32; 1000]);
        same_as_bincode((0..=255u8).collect::<Vec<u8>>());
        same_as_bincode(Vec::<f64>::new());
    }

    #[test]
    fn other_types_take_the_general_path() {
        assert!(encode(&vec![1i64, 2]).is_none());
        assert!(encode(&(vec![1.0f64], 2u8)).is_none());
        assert!(decode::<Vec<u64>>(&[0]).is_none());
        assert!(decode::<String>(&[0]).is_none());
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
    }
}
