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

/// The encoding of `vec![frame]` where `frame` is the frames of `parts` one under the
/// other, each part the encoding of a vector of one frame (as [`append_frame`] writes it),
/// made from their bytes without decoding them: the first part's schema message, then every
/// part's record batches in order, then the end-of-stream marker. Decoded, its columns have
/// a chunk per record batch.
///
/// `None` when the parts cannot be joined as bytes: there are none, one is not the IPC
/// stream of one frame (checked message by message), their schema messages differ (column
/// names, types, or Polars' statistics flags, which a part's rows alone may satisfy), or one
/// has dictionary batches. The caller then decodes and stacks them.
pub(crate) fn join_frames(parts: &[&[u8]]) -> Option<Bytes> {
    let streams = parts
        .iter()
        .map(|part| Stream::of(part))
        .collect::<Option<Vec<Stream<'_>>>>()?;
    let schema = streams.first()?.schema;
    if streams.iter().any(|s| s.schema != schema) {
        return None;
    }
    let ipc_len = schema.len() + streams.iter().map(|s| s.batches.len()).sum::<usize>() + 8;
    let mut buf = frame_buffer(GAP + ipc_len);
    codec().serialize_into(&mut buf, &1u64).ok()?;
    codec().serialize_into(&mut buf, &(ipc_len as u64)).ok()?;
    buf.extend_from_slice(schema);
    for stream in &streams {
        buf.extend_from_slice(stream.batches);
    }
    buf.extend_from_slice(&END_OF_STREAM);
    Some(Bytes::from(buf))
}

/// An encapsulated IPC message's continuation marker.
const CONTINUATION: [u8; 4] = [0xff; 4];

/// The end of an IPC stream: the continuation marker and a metadata length of 0.
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// The parts of the encoding of a vector of one frame.
struct Stream<'a> {
    /// The schema message, whole.
    schema: &'a [u8],
    /// The record batch messages, whole, one after the other.
    batches: &'a [u8],
}

impl<'a> Stream<'a> {
    /// `bytes` read as bincode's encoding of a vector of one frame whose IPC stream is a
    /// schema, record batches and (optionally) the end-of-stream marker, each message a
    /// multiple of 8 bytes long (so joined messages stay aligned); `None` otherwise.
    fn of(bytes: &'a [u8]) -> Option<Stream<'a>> {
        use polars_arrow_format::ipc::{MessageHeaderRef, MessageRef, planus::ReadAsRoot};
        let mut rest = bytes;
        let count: u64 = codec().deserialize_from(&mut rest).ok()?;
        let len: u64 = codec().deserialize_from(&mut rest).ok()?;
        if count != 1 || usize::try_from(len).ok()? != rest.len() {
            return None;
        }
        let ipc = rest;
        let (mut at, mut schema_end) = (0usize, None);
        while at < ipc.len() {
            let prefix = ipc.get(at..at.checked_add(8)?)?;
            if prefix[..4] != CONTINUATION {
                return None;
            }
            let meta_len =
                usize::try_from(i32::from_le_bytes(prefix[4..].try_into().ok()?)).ok()?;
            if meta_len == 0 {
                // The end-of-stream marker ends the bytes too.
                if at + 8 != ipc.len() {
                    return None;
                }
                break;
            }
            let meta = ipc.get(at + 8..(at + 8).checked_add(meta_len)?)?;
            let message = MessageRef::read_as_root(meta).ok()?;
            let body = usize::try_from(message.body_length().ok()?).ok()?;
            let end = (at + 8 + meta_len).checked_add(body)?;
            if end > ipc.len() || meta_len % 8 != 0 || body % 8 != 0 {
                return None;
            }
            match (message.header().ok()??, schema_end) {
                (MessageHeaderRef::Schema(_), None) => schema_end = Some(end),
                (MessageHeaderRef::RecordBatch(_), Some(_)) => {}
                _ => return None,
            }
            at = end;
        }
        let schema_end = schema_end?;
        Some(Stream {
            schema: &ipc[..schema_end],
            batches: &ipc[schema_end..at],
        })
    }
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

    #[test]
    fn frames_joined_as_bytes_decode_as_the_frames_stacked() {
        let parts = [
            df!("k" => [Some(1i64), None, Some(3)], "s" => ["a", "bb", "a much longer string"],
                "x" => [0.5f64, f64::NAN, -1.0], "b" => [true, false, true])
            .unwrap(),
            df!("k" => Vec::<Option<i64>>::new(), "s" => Vec::<&str>::new(),
                "x" => Vec::<f64>::new(), "b" => Vec::<bool>::new())
            .unwrap(),
            df!("k" => (0..300_000).map(Some).collect::<Vec<Option<i64>>>(),
                "s" => (0..300_000).map(|i| format!("row {i}")).collect::<Vec<_>>(),
                "x" => (0..300_000).map(|i| i as f64).collect::<Vec<_>>(),
                "b" => (0..300_000).map(|i| i % 3 == 0).collect::<Vec<_>>())
            .unwrap(),
        ];
        let encoded: Vec<Bytes> = parts
            .iter()
            .map(|f| encode_frames(&vec![f.clone()]).unwrap().unwrap())
            .collect();
        let slices: Vec<&[u8]> = encoded.iter().map(|b| b.as_slice()).collect();
        let mut stacked = parts[0].clone();
        for part in &parts[1..] {
            stacked.vstack_mut(part).unwrap();
        }
        let joined = join_frames(&slices).expect("joined");
        let back: Vec<DataFrame> = super::super::decode_value(&joined).unwrap();
        assert_eq!(back.len(), 1);
        assert!(
            back[0].equals_missing(&stacked),
            "{} against {stacked}",
            back[0]
        );
        // One part, and only empty parts, join too.
        let one: Vec<DataFrame> =
            super::super::decode_value(&join_frames(&slices[..1]).unwrap()).unwrap();
        assert!(one[0].equals_missing(&parts[0]));
        let empty: Vec<DataFrame> =
            super::super::decode_value(&join_frames(&slices[1..2]).unwrap()).unwrap();
        assert_eq!((empty[0].height(), empty[0].width()), (0, 4));

        // What cannot be joined as bytes: nothing, another schema, a part cut short or
        // holding two frames, bytes that are not a frame.
        assert!(join_frames(&[]).is_none());
        let other = encode_frames(&vec![df!("k" => [1i32]).unwrap()])
            .unwrap()
            .unwrap();
        assert!(join_frames(&[slices[0], other.as_slice()]).is_none());
        assert!(join_frames(&[&slices[0][..slices[0].len() - 9]]).is_none());
        let two = super::super::encode_value(&vec![parts[0].clone(), parts[0].clone()]).unwrap();
        assert!(join_frames(&[&two]).is_none());
        assert!(join_frames(&[&[1, 2, 3, 4, 5]]).is_none());
    }
}
