//! Putting frames back together from the messages of each sender: a pure state machine
//! (no MPI), told the size of each message before it is received and handing out the
//! buffer to receive it into, so the bytes land in their final place.
//!
//! What one sender sends, in order, on one tag (MPI keeps that order):
//!
//! * a frame of at most `part_bytes` bytes as one message; a larger frame as a header
//!   ([`PARTS_MAGIC`] and its length) followed by its parts, each `part_bytes` long but the
//!   last;
//! * then, if the frame ends with an attachment table, each attachment as one message, or
//!   in parts above `part_bytes`; an attachment's first message may instead be its head
//!   alone (at most `MAX_HEAD_BYTES`: a value sent from two places,
//!   `protocol::Bytes::split`), the rest of it then following in parts.
//!
//! Any message whose size does not fit that order (a part or an attachment of the wrong
//! size, a length that cannot be allocated) is [`Malformed`]: from then on nothing from that
//! sender can be trusted, and the job ends.

use super::buffers::{ReceiveBuffer, UninitByte};
use crate::protocol::{Announced, MAX_HEAD_BYTES, Payload, Rank, attachments_announced};
use crate::transport::{Incoming, Malformed};
use std::sync::Arc;

/// First byte of the header message announcing a frame sent in parts.
pub(crate) const PARTS_MAGIC: u8 = 0xD6;
/// Length of that header: the magic byte and the frame's length (u64, little endian).
pub(crate) const PARTS_HEADER_LEN: usize = 1 + 8;

/// The header announcing a frame of `len` bytes sent in parts.
pub(crate) fn parts_header(len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(PARTS_HEADER_LEN);
    header.push(PARTS_MAGIC);
    header.extend_from_slice(&(len as u64).to_le_bytes());
    header
}

/// What the next message from one sender is.
#[derive(Default)]
enum SourceState {
    /// The next message starts a frame.
    #[default]
    Idle,
    /// A message that starts a frame (a whole frame, or the header of one in parts) is
    /// being received.
    Start(ReceiveBuffer),
    /// The parts of a large frame.
    FrameParts(ReceiveBuffer),
    /// The attachments of `frame`: `received` so far, then those of `announced` still due.
    Attachments {
        frame: Vec<u8>,
        announced: Vec<Announced>,
        received: Vec<Payload>,
        current: Option<ReceiveBuffer>,
    },
}

/// Reassembles the frames of every sender of one job.
pub(crate) struct Reassembler {
    part_bytes: usize,
    /// No frame or attachment can be larger (the machine's memory).
    max_bytes: usize,
    sources: Vec<SourceState>,
}

impl Reassembler {
    /// A reassembler for `size` senders, which split messages above `part_bytes`, refusing
    /// any frame or attachment announced larger than `max_bytes`.
    pub(crate) fn new(size: usize, part_bytes: usize, max_bytes: usize) -> Self {
        Reassembler {
            part_bytes: part_bytes.max(1),
            max_bytes,
            sources: (0..size).map(|_| SourceState::Idle).collect(),
        }
    }

    /// A buffer for `len` announced bytes (placed as its sender's copy was, for a value
    /// with a `placement`), unless that is more than any can be.
    fn buffer(
        &self,
        source: usize,
        what: &str,
        len: u64,
        placement: Option<u8>,
    ) -> Result<ReceiveBuffer, Malformed> {
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.max_bytes)
            .ok_or_else(|| {
                Self::malformed(
                    source,
                    format!(
                        "{what} of {len} bytes, more than this machine's {} bytes of memory",
                        self.max_bytes
                    ),
                )
            })?;
        match placement {
            Some(placement) => ReceiveBuffer::placed(len, placement),
            None => ReceiveBuffer::new(len),
        }
        .map_err(|e| Self::malformed(source, e))
    }

    fn malformed(source: usize, reason: String) -> Malformed {
        Malformed {
            from: Rank(u32::try_from(source).unwrap_or(u32::MAX)),
            reason,
        }
    }

    /// Where to receive the next message from `source`, of `count` bytes: call
    /// [`received`](Self::received) once it is written there.
    pub(crate) fn accept(
        &mut self,
        source: usize,
        count: usize,
    ) -> Result<&mut [UninitByte], Malformed> {
        let part_bytes = self.part_bytes;
        if source >= self.sources.len() {
            return Err(Self::malformed(
                source,
                "a message from a rank outside the job".into(),
            ));
        }
        // Allocated here, before the state is borrowed below.
        let attachment = match &self.sources[source] {
            SourceState::Attachments {
                announced,
                received,
                current: None,
                ..
            } => {
                let Announced { len, placement } = announced[received.len()];
                // A split value's head, alone: its elements follow, received into memory
                // of 8-byte elements when they are whole ones.
                let head = 0 < count && (count as u64) < len && count <= MAX_HEAD_BYTES;
                let body = usize::try_from(len)
                    .ok()
                    .filter(|len| head && *len <= self.max_bytes)
                    .map(|len| len - count)
                    .filter(|body| body % 8 == 0);
                match body {
                    Some(body) => Some(
                        ReceiveBuffer::split(count, body)
                            .map_err(|e| Self::malformed(source, e))?,
                    ),
                    None => Some(self.buffer(source, "an attachment", len, Some(placement))?),
                }
            }
            _ => None,
        };
        let Some(state) = self.sources.get_mut(source) else {
            return Err(Self::malformed(
                source,
                "a message from a rank outside the job".into(),
            ));
        };
        // The first message of an attachment may be its head alone.
        let head_allowed = attachment.is_some();
        let expected = match state {
            SourceState::Idle => {
                if count > part_bytes.max(PARTS_HEADER_LEN) {
                    return Err(Self::malformed(
                        source,
                        format!(
                            "a message of {count} bytes where a frame starts, above the part \
                             size of {part_bytes} bytes"
                        ),
                    ));
                }
                let buffer = ReceiveBuffer::new(count).map_err(|e| Self::malformed(source, e))?;
                *state = SourceState::Start(buffer);
                count
            }
            SourceState::Start(_) => {
                return Err(Self::malformed(
                    source,
                    "a message arrived before the previous one was received".into(),
                ));
            }
            SourceState::FrameParts(buffer) => buffer.remaining().min(part_bytes),
            SourceState::Attachments { current, .. } => {
                if let Some(buffer) = attachment {
                    *current = Some(buffer);
                }
                current
                    .as_ref()
                    .map_or(0, |buffer| buffer.remaining().min(part_bytes))
            }
        };
        let head = head_allowed && 0 < count && count < expected && count <= MAX_HEAD_BYTES;
        if count != expected && !head {
            let what = match &self.sources[source] {
                SourceState::FrameParts(_) => "a part of a large frame",
                _ => "an attachment",
            };
            return Err(Self::malformed(
                source,
                format!("{what} of {count} bytes where {expected} were announced"),
            ));
        }
        let buffer = match &mut self.sources[source] {
            SourceState::Start(buffer) | SourceState::FrameParts(buffer) => buffer,
            SourceState::Attachments { current, .. } => current.as_mut().expect("allocated above"),
            SourceState::Idle => unreachable!("left above"),
        };
        Ok(buffer.next_part(count))
    }

    /// The message [`accept`](Self::accept) placed has been written: a frame that is now
    /// whole (with its attachments) comes out.
    pub(crate) fn received(
        &mut self,
        source: usize,
        count: usize,
    ) -> Result<Option<Incoming>, Malformed> {
        let from = Rank(u32::try_from(source).unwrap_or(u32::MAX));
        match &mut self.sources[source] {
            SourceState::Idle => Err(Self::malformed(
                source,
                "a message that was never accepted".into(),
            )),
            SourceState::Start(buffer) => {
                buffer.filled(count);
                let SourceState::Start(buffer) = std::mem::take(&mut self.sources[source]) else {
                    unreachable!("matched above");
                };
                let bytes = buffer.into_vec();
                if bytes.len() == PARTS_HEADER_LEN && bytes[0] == PARTS_MAGIC {
                    let total = u64::from_le_bytes(bytes[1..].try_into().expect("8 bytes"));
                    if total <= self.part_bytes as u64 {
                        return Err(Self::malformed(
                            source,
                            format!(
                                "a frame of {total} bytes announced in parts of {} bytes",
                                self.part_bytes
                            ),
                        ));
                    }
                    let buffer = self.buffer(source, "a frame", total, None)?;
                    self.sources[source] = SourceState::FrameParts(buffer);
                    Ok(None)
                } else {
                    Ok(self.frame_arrived(source, from, bytes))
                }
            }
            SourceState::FrameParts(buffer) => {
                buffer.filled(count);
                if !buffer.is_full() {
                    return Ok(None);
                }
                let SourceState::FrameParts(buffer) = std::mem::take(&mut self.sources[source])
                else {
                    unreachable!("matched above");
                };
                Ok(self.frame_arrived(source, from, buffer.into_vec()))
            }
            SourceState::Attachments {
                announced,
                received,
                current,
                ..
            } => {
                let Some(buffer) = current else {
                    return Err(Self::malformed(
                        source,
                        "an attachment that was never accepted".into(),
                    ));
                };
                buffer.filled(count);
                if buffer.is_full() {
                    let bytes = current.take().expect("present").into_bytes();
                    received.push(Arc::new(bytes));
                }
                if received.len() < announced.len() {
                    return Ok(None);
                }
                let SourceState::Attachments {
                    frame, received, ..
                } = std::mem::take(&mut self.sources[source])
                else {
                    unreachable!("matched above");
                };
                Ok(Some(Incoming {
                    from,
                    frame,
                    attachments: received,
                }))
            }
        }
    }

    /// A frame has arrived whole: deliver it, or wait for its attachments.
    fn frame_arrived(&mut self, source: usize, from: Rank, frame: Vec<u8>) -> Option<Incoming> {
        match attachments_announced(&frame) {
            Some(announced) if !announced.is_empty() => {
                self.sources[source] = SourceState::Attachments {
                    frame,
                    received: Vec::with_capacity(announced.len()),
                    announced,
                    current: None,
                };
                None
            }
            // A frame without attachments, or a malformed one (the decoder reports it).
            _ => Some(Incoming {
                from,
                frame,
                attachments: Vec::new(),
            }),
        }
    }

    /// `true` if a frame from `source` is partly received.
    #[cfg(test)]
    fn in_progress(&self, source: usize) -> bool {
        !matches!(self.sources[source], SourceState::Idle)
    }
}

/// Feeds `messages` (sender, bytes), in order, through a reassembler for `size` senders as
/// the MPI transport does, copying each message into the buffer it hands out: the frames
/// that came out whole, or the first malformed message. (For tests and fuzzing.)
#[cfg(any(test, feature = "internals"))]
pub fn reassemble(
    size: usize,
    part_bytes: usize,
    max_bytes: usize,
    messages: &[(usize, Vec<u8>)],
) -> Result<Vec<Incoming>, Malformed> {
    let mut reassembler = Reassembler::new(size, part_bytes, max_bytes);
    let mut out = Vec::new();
    for (source, message) in messages {
        let slot = reassembler.accept(*source, message.len())?;
        for (s, b) in slot.iter_mut().zip(message) {
            s.0 = std::mem::MaybeUninit::new(*b);
        }
        out.extend(reassembler.received(*source, message.len())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FrameWriter, Key, ToWorker};

    /// Feeds one message through the reassembler as the MPI transport does.
    fn feed(
        r: &mut Reassembler,
        source: usize,
        message: &[u8],
    ) -> Result<Option<Incoming>, Malformed> {
        let slot = r.accept(source, message.len())?;
        assert_eq!(slot.len(), message.len());
        for (s, b) in slot.iter_mut().zip(message) {
            s.0 = std::mem::MaybeUninit::new(*b);
        }
        r.received(source, message.len())
    }

    /// What a sender sends for `frame`, message by message (as `MpiTransport::send`).
    fn messages_of(frame_bytes: &[u8], attachments: &[Payload], part: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if frame_bytes.len() > part {
            // The header always travels as one message.
            out.push(parts_header(frame_bytes.len()));
        }
        let split = |out: &mut Vec<Vec<u8>>, bytes: &[u8]| {
            if bytes.is_empty() {
                out.push(Vec::new());
            }
            for chunk in bytes.chunks(part) {
                out.push(chunk.to_vec());
            }
        };
        split(&mut out, frame_bytes);
        for attachment in attachments {
            match attachment.pieces() {
                Some((head, body)) => {
                    out.push(head.to_vec());
                    split(&mut out, body);
                }
                None => split(&mut out, attachment),
            }
        }
        out
    }

    #[test]
    fn split_values_arrive_as_their_head_then_their_body_in_parts() {
        let floats: Vec<f64> = (0..20_000).map(f64::from).collect();
        let split: Payload = Arc::new(crate::protocol::encode_given(floats.clone()).unwrap());
        let head_len = split.pieces().expect("a plain vector is split").0.len();
        let mut writer = FrameWriter::new();
        for (key, bytes) in [(1, split), (2, Arc::new(vec![4u8; 70_000].into()))] {
            writer
                .push(&ToWorker::ScatterData {
                    key: Key(key),
                    bytes,
                })
                .unwrap();
        }
        let frame = writer.finish();
        for part in [1000, 1 << 20] {
            let messages = messages_of(&frame.bytes, &frame.attachments, part);
            let mut r = Reassembler::new(3, part, 1 << 30);
            let mut out: Vec<Incoming> = messages
                .iter()
                .filter_map(|m| feed(&mut r, 1, m).unwrap())
                .collect();
            assert_eq!(out.len(), 1, "part size {part}");
            assert_eq!(out[0].attachments, frame.attachments);
            let received = out[0].attachments.remove(0);
            let (head, body) = received.pieces().expect("received as a split value");
            assert_eq!((head.len(), body.len()), (head_len, 8 * floats.len()));
            let body_at = body.as_ptr();
            assert_eq!(
                body_at as usize % 8,
                0,
                "the elements are whole f64s in memory"
            );
            let back: Vec<f64> = crate::protocol::decode_bytes(&received).unwrap();
            assert_eq!(back, floats);
            // Its only holder (a task, its last reader) takes the elements where they are.
            let taken: Vec<f64> = crate::protocol::decode_payload(&received).unwrap();
            assert_eq!(taken, floats);
            assert_eq!(taken.as_ptr().cast::<u8>(), body_at, "not copied");
        }
        // Only an attachment's first message may fall short of a part.
        let part = 1000;
        let whole = frame_with(&[200_000]);
        let messages = messages_of(&whole.bytes, &whole.attachments, part);
        let mut r = Reassembler::new(3, part, 1 << 30);
        assert!(feed(&mut r, 1, &messages[0]).unwrap().is_none());
        assert!(feed(&mut r, 1, &messages[1]).unwrap().is_none());
        let short = feed(&mut r, 1, &[0u8; 10]).expect_err("a short part is malformed");
        assert!(
            short.reason.contains("10 bytes where 1000"),
            "{}",
            short.reason
        );
        let mut r = Reassembler::new(3, part, 1 << 30);
        assert!(feed(&mut r, 1, &messages[0]).unwrap().is_none());
        let long = feed(&mut r, 1, &[0u8; 1001]).expect_err("a long part is malformed");
        assert!(long.reason.contains("1001 bytes"), "{}", long.reason);
    }

    fn frame_with(payloads: &[usize]) -> crate::protocol::Frame {
        let mut writer = FrameWriter::new();
        for (i, len) in payloads.iter().enumerate() {
            writer
                .push(&ToWorker::Data {
                    key: Key(i as u64),
                    bytes: Arc::new(
                        (0..*len)
                            .map(|b| b.to_le_bytes()[0])
                            .collect::<Vec<u8>>()
                            .into(),
                    ),
                })
                .unwrap();
        }
        writer.finish()
    }

    #[test]
    fn frames_in_parts_with_attachments_in_parts_come_back_whole() {
        for part in [16, 1000, 1 << 20] {
            let frame = frame_with(&[10, 200_000, 70_000, 3]);
            assert_eq!(frame.attachments.len(), 2);
            let mut r = Reassembler::new(3, part, 1 << 30);
            let messages = messages_of(&frame.bytes, &frame.attachments, part);
            let mut out = Vec::new();
            for (i, message) in messages.iter().enumerate() {
                if let Some(incoming) = feed(&mut r, 2, message).unwrap() {
                    assert_eq!(i, messages.len() - 1, "only the last message completes it");
                    out.push(incoming);
                }
            }
            assert_eq!(out.len(), 1, "part size {part}");
            assert_eq!(out[0].from, Rank(2));
            assert_eq!(out[0].frame, frame.bytes);
            assert_eq!(out[0].attachments, frame.attachments);
            assert!(!r.in_progress(2));
        }
    }

    #[test]
    fn senders_are_reassembled_independently() {
        let part = 64;
        let a = frame_with(&[100_000]);
        let b = frame_with(&[5]);
        let mut r = Reassembler::new(4, part, 1 << 30);
        let from_a = messages_of(&a.bytes, &a.attachments, part);
        let from_b = messages_of(&b.bytes, &b.attachments, part);
        let mut done = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < from_a.len() || j < from_b.len() {
            if i < from_a.len() {
                done.extend(feed(&mut r, 1, &from_a[i]).unwrap());
                i += 1;
            }
            if j < from_b.len() {
                done.extend(feed(&mut r, 3, &from_b[j]).unwrap());
                j += 1;
            }
        }
        let from: Vec<Rank> = done.iter().map(|d| d.from).collect();
        assert_eq!(from, vec![Rank(3), Rank(1)]);
    }

    #[test]
    fn an_attachment_of_another_size_than_announced_is_malformed() {
        let frame = frame_with(&[100_000]);
        let mut r = Reassembler::new(3, 1 << 20, 1 << 30);
        assert!(feed(&mut r, 1, &frame.bytes).unwrap().is_none());
        let error = feed(&mut r, 1, &[0u8; 70_000]).unwrap_err();
        assert_eq!(error.from, Rank(1));
        assert!(
            error
                .reason
                .contains("an attachment of 70000 bytes where 100000 were announced"),
            "{error}"
        );
    }

    #[test]
    fn parts_of_the_wrong_size_and_impossible_lengths_are_malformed() {
        // A part shorter than the part size before the end.
        let mut r = Reassembler::new(2, 10, 1 << 30);
        assert!(feed(&mut r, 0, &parts_header(25)).unwrap().is_none());
        assert!(feed(&mut r, 0, &[0; 10]).unwrap().is_none());
        assert!(feed(&mut r, 0, &[0; 4]).is_err());
        // A frame announced in parts although it fits in one part.
        let mut r = Reassembler::new(2, 1 << 20, 1 << 30);
        assert!(feed(&mut r, 0, &parts_header(5)).is_err());
        // A length above the machine's memory.
        let mut r = Reassembler::new(2, 10, 1 << 30);
        let error = feed(&mut r, 0, &parts_header(usize::MAX / 2)).unwrap_err();
        assert!(error.reason.contains("more than this machine's"), "{error}");
        // A first message above the part size.
        let mut r = Reassembler::new(2, 10, 1 << 30);
        assert!(feed(&mut r, 1, &[0; 11]).is_err());
        // A sender outside the job.
        assert!(r.accept(7, 1).is_err());
    }

    #[test]
    fn attachment_tables_that_lie_about_their_size_are_left_to_the_decoder() {
        // A table claiming more attachments than the frame has bytes for is not a table:
        // the frame is delivered as it is and its decoder rejects it.
        let mut bytes = frame_with(&[3]).bytes;
        bytes[0] = crate::protocol::frame::FRAME_MAGIC_ATTACHED;
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reassembler::new(2, 1 << 20, 1 << 30);
        let incoming = feed(&mut r, 1, &bytes).unwrap().unwrap();
        assert!(
            crate::protocol::decode_frame_with::<ToWorker>(&incoming.frame, incoming.attachments)
                .is_err()
        );
    }
}
