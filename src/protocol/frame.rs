//! The frame codec: what one MPI message carries. A *frame* is a magic byte, a message
//! count and that many bincode-encoded messages for one receiver, so small messages to the
//! same destination travel together; large payloads follow the frame as *attachments*.
//! Nothing here does I/O, and no input, however malformed, makes it panic.

use super::Payload;
use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Payloads at least this large travel as *attachments*: separate MPI messages sent straight
/// from the payload's buffer and received straight into the receiver's, never copied into
/// or out of a frame. Smaller ones are inlined in the frame.
pub const ATTACH_BYTES: usize = 64 * 1024;

thread_local! {
    /// While a frame is encoded on this thread: the payloads it attaches.
    static ATTACHING: std::cell::RefCell<Option<Vec<Payload>>> = const { std::cell::RefCell::new(None) };
    /// While a frame is decoded on this thread: the attachments that came with it.
    static ATTACHED: std::cell::RefCell<Vec<Option<Payload>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serde adapter for a [`Payload`]: inline bytes, or (inside a frame, for large payloads)
/// the index of an attachment of that frame.
pub(super) mod payload_bytes {
    use super::{ATTACH_BYTES, ATTACHED, ATTACHING, Payload};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    #[derive(Serialize)]
    enum WireRef<'a> {
        Inline(#[serde(with = "serde_bytes")] &'a [u8]),
        Attached(u32),
    }

    #[derive(Deserialize)]
    enum Wire {
        Inline(serde_bytes::ByteBuf),
        Attached(u32),
    }

    pub fn serialize<S: Serializer>(payload: &Payload, serializer: S) -> Result<S::Ok, S::Error> {
        let attached = if payload.len() >= ATTACH_BYTES {
            ATTACHING.with(|sink| {
                sink.borrow_mut().as_mut().map(|sink| {
                    sink.push(payload.clone());
                    (sink.len() - 1) as u32
                })
            })
        } else {
            None
        };
        match attached {
            Some(index) => WireRef::Attached(index).serialize(serializer),
            None => WireRef::Inline(payload).serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        match Wire::deserialize(deserializer)? {
            Wire::Inline(bytes) => Ok(Arc::new(bytes.into_vec().into())),
            Wire::Attached(index) => ATTACHED
                .with(|source| {
                    source
                        .borrow_mut()
                        .get_mut(index as usize)
                        .and_then(Option::take)
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "the frame refers to attachment {index}, which did not come with it"
                    ))
                }),
        }
    }
}

/// First byte of every frame without attachments; a frame starting with anything else
/// than this or [`FRAME_MAGIC_ATTACHED`] is rejected.
pub const FRAME_MAGIC: u8 = 0xD5;

/// First byte of a frame followed by attachments; its last 4 bytes count them and the
/// [`ANNOUNCEMENT_LEN`] x count bytes before announce each (length and placement).
pub const FRAME_MAGIC_ATTACHED: u8 = 0xD7;

/// Bytes announcing one attachment at the end of its frame: its length (u64, little
/// endian) and its sender's [`Bytes::placement`](super::Bytes::placement), which the
/// receiver's copy takes too.
pub const ANNOUNCEMENT_LEN: usize = 9;

/// What a frame says of one of its attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// Its length in bytes.
    pub len: u64,
    /// Its address mod 64 at the sender (any byte: the receiver reduces it).
    pub placement: u8,
}

/// The bincode configuration used for messages and values: variable-length integers,
/// little endian, trailing bytes rejected.
pub fn codec() -> impl Options + Copy {
    bincode::DefaultOptions::new()
}

/// Encodes a task argument or result.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> bincode::Result<Vec<u8>> {
    codec().serialize(value)
}

/// Decodes a task argument or result.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> bincode::Result<T> {
    codec().deserialize(bytes)
}

/// [`encode_value`] for a sized `'static` type: vectors and arrays of plain numbers by one
/// copy of their elements (`plain`), anything else element by element; the same bytes
/// either way.
pub fn encode_owned<T: Serialize + std::any::Any>(value: &T) -> bincode::Result<Vec<u8>> {
    match super::plain::parts(value) {
        Some(parts) => {
            let parts = parts?;
            let mut out = Vec::with_capacity(parts.head.len() + parts.elements.len());
            out.extend_from_slice(&parts.head);
            out.extend_from_slice(&parts.elements);
            Ok(out)
        }
        None => encode_value(value),
    }
}

/// [`encode_owned`] of a value given away: a plain vector, or an array whose elements are
/// contiguous, of [`ATTACH_BYTES`] or more keeps its elements where they lie (a
/// [`split`](super::Bytes::split) value, sent from there as an attachment); anything else
/// is encoded.
pub fn encode_given<T: Serialize + std::any::Any>(value: T) -> bincode::Result<super::Bytes> {
    match split_large(value) {
        Ok(bytes) => Ok(bytes),
        Err(value) => encode_owned(&value).map(super::Bytes::from),
    }
}

/// `value` as a [`split`](super::Bytes::split) value if it is a plain vector, or an array
/// whose elements are contiguous, of [`ATTACH_BYTES`] or more; `value` back otherwise.
pub fn split_large<T: std::any::Any>(value: T) -> Result<super::Bytes, T> {
    super::plain::into_split(value, ATTACH_BYTES)
}

/// [`decode_owned`] of a value's bytes: a split value's pieces are read where they lie,
/// never joined, when `T` is a plain value.
pub fn decode_bytes<T: DeserializeOwned + std::any::Any>(
    bytes: &super::Bytes,
) -> bincode::Result<T> {
    match bytes.pieces() {
        Some((head, body)) => super::plain::decode_pieces(head, body)
            .unwrap_or_else(|| decode_value(bytes.as_slice())),
        None => decode_owned(bytes),
    }
}

/// [`decode_bytes`] of a value this is the only holder of: a split value whose body is a
/// plain value of `T`'s type (a task's result kept as it was made, or elements received
/// straight into 8-byte memory) is given away whole, with no copy; any other value is
/// decoded from its bytes. The value has no body after.
pub fn decode_payload<T: DeserializeOwned + std::any::Any>(
    value: &super::Payload,
) -> bincode::Result<T> {
    if std::sync::Arc::strong_count(value) == 1 && std::sync::Arc::weak_count(value) == 0 {
        // After the last other holder's drop (on another thread, maybe): everything it did
        // with the value happened before what follows.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: `value` is its only reference, borrowed here alone (no other thread has
        // it, and no slice of it is alive in this call); its holder reads no body after.
        if let Some(taken) = unsafe { super::plain::take_whole::<T>(value) } {
            return Ok(taken);
        }
    }
    decode_bytes(value)
}

/// [`encode_owned`] into a value buffer whose plain elements start on a cache line (where
/// the array kernels read them in place).
pub fn encode_owned_aligned<T: Serialize + std::any::Any>(
    value: &T,
) -> bincode::Result<super::Bytes> {
    #[cfg(feature = "dataframe")]
    if let Some(encoded) = super::polars_ipc::encode_frames(value) {
        return encoded;
    }
    match super::plain::parts(value) {
        Some(parts) => {
            let parts = parts?;
            let len = parts.head.len() + parts.elements.len();
            let mut out = super::Bytes::aligned_after(parts.head.len(), len);
            out.extend_from_slice(&parts.head);
            out.extend_from_slice(&parts.elements);
            Ok(out)
        }
        None => encode_value(value).map(super::Bytes::from),
    }
}

/// Done with a task's result, already encoded: a plain one leaves its memory to the next
/// plain value this thread decodes.
pub fn recycle_owned<T: std::any::Any>(value: T) {
    super::plain::recycle(value);
}

/// [`decode_value`] for a `'static` type: vectors and arrays of plain numbers by one copy.
pub fn decode_owned<T: DeserializeOwned + std::any::Any>(bytes: &[u8]) -> bincode::Result<T> {
    super::plain::decode(bytes).unwrap_or_else(|| decode_value(bytes))
}

/// A frame ready to send: its bytes and the payloads attached to it.
#[derive(Debug, Default)]
pub struct Frame {
    /// Header, messages and (if there are attachments) their lengths.
    pub bytes: Vec<u8>,
    /// Large payloads the messages refer to, sent after the bytes.
    pub attachments: Vec<Payload>,
}

/// Builds one frame: messages for one destination, appended as they are produced.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    count: u32,
    attachments: Vec<Payload>,
    attached_bytes: usize,
}

const FRAME_HEADER_LEN: usize = 5;

impl Default for FrameWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWriter {
    /// An empty frame.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.push(FRAME_MAGIC);
        buf.extend_from_slice(&0u32.to_le_bytes());
        FrameWriter {
            buf,
            count: 0,
            attachments: Vec::new(),
            attached_bytes: 0,
        }
    }

    /// Appends one message; its large payloads become attachments.
    pub fn push<M: Serialize>(&mut self, message: &M) -> bincode::Result<()> {
        ATTACHING.with(|sink| *sink.borrow_mut() = Some(std::mem::take(&mut self.attachments)));
        let result = codec().serialize_into(&mut self.buf, message);
        self.attachments = ATTACHING.with(|sink| sink.borrow_mut().take().unwrap_or_default());
        self.attached_bytes = self.attachments.iter().map(|a| a.len()).sum();
        result?;
        self.count += 1;
        Ok(())
    }

    #[cfg(test)]
    /// Messages appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    #[cfg(test)]
    /// `true` if no message was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the frame and its attachments have so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len() + self.attached_bytes
    }

    /// The finished frame.
    pub fn finish(mut self) -> Frame {
        self.buf[1..FRAME_HEADER_LEN].copy_from_slice(&self.count.to_le_bytes());
        if !self.attachments.is_empty() {
            self.buf[0] = FRAME_MAGIC_ATTACHED;
            for attachment in &self.attachments {
                self.buf
                    .extend_from_slice(&(attachment.len() as u64).to_le_bytes());
                self.buf.push(attachment.placement());
            }
            self.buf
                .extend_from_slice(&(self.attachments.len() as u32).to_le_bytes());
        }
        Frame {
            bytes: self.buf,
            attachments: self.attachments,
        }
    }
}

/// The attachments that follow `frame` (none for a frame without any); `None` if the frame
/// is malformed.
pub fn attachments_announced(frame: &[u8]) -> Option<Vec<Announced>> {
    match frame.first() {
        Some(&FRAME_MAGIC) => Some(Vec::new()),
        Some(&FRAME_MAGIC_ATTACHED) => {
            let (_, table) = attachment_table(frame)?;
            Some(
                table
                    .chunks_exact(ANNOUNCEMENT_LEN)
                    .map(|entry| Announced {
                        len: u64::from_le_bytes(entry[..8].try_into().expect("8 bytes")),
                        placement: entry[8],
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The count and the length table at the end of an attached frame.
fn attachment_table(frame: &[u8]) -> Option<(usize, &[u8])> {
    let count_at = frame.len().checked_sub(4)?;
    let count = u32::from_le_bytes(frame[count_at..].try_into().ok()?) as usize;
    let table_at = count_at.checked_sub(count.checked_mul(ANNOUNCEMENT_LEN)?)?;
    if table_at < FRAME_HEADER_LEN {
        return None;
    }
    Some((count, &frame[table_at..count_at]))
}

#[cfg(any(test, feature = "internals"))]
/// Encodes `messages` as one frame (payloads inline: no attachments).
pub fn encode_frame<M: Serialize>(messages: &[M]) -> bincode::Result<Vec<u8>> {
    let mut buf = vec![FRAME_MAGIC];
    buf.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for message in messages {
        codec().serialize_into(&mut buf, message)?;
    }
    Ok(buf)
}

#[cfg(any(test, feature = "internals"))]
/// Decodes a frame without attachments; a malformed or truncated frame is an error, never
/// a panic.
pub fn decode_frame<M: DeserializeOwned>(frame: &[u8]) -> bincode::Result<Vec<M>> {
    decode_frame_with(frame, Vec::new())
}

/// Decodes a frame and the attachments that came with it.
pub fn decode_frame_with<M: DeserializeOwned>(
    frame: &[u8],
    attachments: Vec<Payload>,
) -> bincode::Result<Vec<M>> {
    let malformed = |what: String| Err(Box::new(bincode::ErrorKind::Custom(what)));
    let body_end = match frame.first() {
        _ if frame.len() < FRAME_HEADER_LEN => frame.len(),
        Some(&FRAME_MAGIC) => frame.len(),
        Some(&FRAME_MAGIC_ATTACHED) => match attachment_table(frame) {
            Some((count, table)) if count == attachments.len() => frame.len() - 4 - table.len(),
            _ => {
                return malformed(format!(
                    "a frame of {} bytes does not match its {} attachments",
                    frame.len(),
                    attachments.len()
                ));
            }
        },
        _ => frame.len(),
    };
    if frame.len() < FRAME_HEADER_LEN || !matches!(frame[0], FRAME_MAGIC | FRAME_MAGIC_ATTACHED) {
        return malformed(format!(
            "not an mpidask frame ({} bytes, first byte {:?})",
            frame.len(),
            frame.first()
        ));
    }
    let count = u32::from_le_bytes(frame[1..FRAME_HEADER_LEN].try_into().expect("4 bytes"));
    let body = &frame[FRAME_HEADER_LEN..body_end];
    // Every message takes at least one byte, which bounds the allocation below.
    if count as usize > body.len() {
        return malformed(format!(
            "frame claims {count} messages in {} bytes",
            body.len()
        ));
    }
    ATTACHED.with(|source| *source.borrow_mut() = attachments.into_iter().map(Some).collect());
    let options = codec().with_limit(body.len() as u64);
    let mut deserializer = bincode::Deserializer::from_slice(body, options);
    let mut messages = Vec::with_capacity(count as usize);
    let mut result = Ok(());
    for _ in 0..count {
        match M::deserialize(&mut deserializer) {
            Ok(message) => messages.push(message),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    ATTACHED.with(|source| source.borrow_mut().clear());
    result.map(|()| messages)
}
