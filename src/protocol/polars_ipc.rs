//! Dataframe partitions (`Vec<polars::DataFrame>`, the value of every dataframe task)
//! encoded in one pass. Polars' serde writes a frame's Arrow IPC stream into a buffer of
//! its own and hands it over as bytes; bincode's `serialize` runs a value's serialisation
//! twice (once to size the output) and then copies those bytes again, so a 80 MB partition
//! was written as IPC twice and copied twice. Here the IPC stream is written once, straight
//! into the value's buffer after a gap, and bincode's length prefixes (varints) are placed
//! in the end of the gap: the bytes are exactly bincode's encoding of the vector, so
//! [`decode_value`](super::decode_value) reads them as usual.

use super::{Bytes, codec};
use bincode::Options;
use polars::prelude::DataFrame;

/// Room for the two varint prefixes (the vector's length, the frame's byte count), each at
/// most 9 bytes.
const GAP: usize = 18;

/// `value`'s encoding when it is a vector of one frame (the common partition); `None` for
/// any other value.
pub(super) fn encode_frames(value: &dyn std::any::Any) -> Option<bincode::Result<Bytes>> {
    let frames = value.downcast_ref::<Vec<DataFrame>>()?;
    let [frame] = frames.as_slice() else {
        return None;
    };
    Some(encode_one(frame))
}

fn encode_one(frame: &DataFrame) -> bincode::Result<Bytes> {
    let mut buf = frame_buffer(GAP + encoded_estimate(frame));
    let (start, _) = append_frame(&mut buf, frame)?;
    Ok(Bytes::from_parts(buf, start))
}

/// About the bytes of `frame`'s IPC stream (a little more, so the buffer rarely grows).
pub(crate) fn encoded_estimate(frame: &DataFrame) -> usize {
    frame.estimated_size() + frame.estimated_size() / 8 + 64 * 1024
}

/// An empty buffer for encoded frames with room for `capacity` bytes (a kept allocation
/// when there is one); aborts, like any `Vec`, if the memory cannot be had.
pub(crate) fn frame_buffer(capacity: usize) -> Vec<u8> {
    super::bytes::spare_or_new(capacity)
        .unwrap_or_else(|e| panic!("cannot allocate {capacity} bytes for an encoded frame: {e}"))
}

/// Appends the encoding of `vec![frame]` to `buf` (after up to [`GAP`] bytes of padding),
/// and returns where in `buf` that encoding starts and how long it is.
pub(crate) fn append_frame(
    buf: &mut Vec<u8>,
    frame: &DataFrame,
) -> bincode::Result<(usize, usize)> {
    let gap = buf.len();
    buf.resize(gap + GAP, 0);
    frame
        .clone()
        .serialize_into_writer(&mut *buf)
        .map_err(|e| Box::new(bincode::ErrorKind::Custom(e.to_string())))?;
    let ipc_len = (buf.len() - gap - GAP) as u64;
    let mut head = Vec::with_capacity(GAP);
    codec().serialize_into(&mut head, &1u64)?;
    codec().serialize_into(&mut head, &ipc_len)?;
    let start = gap + GAP - head.len();
    buf[start..gap + GAP].copy_from_slice(&head);
    Ok((start, buf.len() - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::df;

    #[test]
    fn one_pass_encoding_is_bincodes() {
        let frame = df!("a" => [1i64, 2, 3], "s" => ["x", "yy", "zzz"]).unwrap();
        let big = df!("v" => (0..300_000).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
        for f in [frame, big, DataFrame::empty()] {
            let fast = encode_frames(&vec![f.clone()]).unwrap().unwrap();
            assert_eq!(
                fast.as_slice(),
                super::super::encode_value(&vec![f.clone()]).unwrap()
            );
            let back: Vec<DataFrame> = super::super::decode_value(&fast).unwrap();
            assert!(back[0].equals_missing(&f));
        }
        assert!(encode_frames(&vec![1u8]).is_none());
        assert!(encode_frames(&Vec::<DataFrame>::new()).is_none());
    }
}
