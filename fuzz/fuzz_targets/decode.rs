//! Feeds arbitrary bytes to everything that reads bytes from another rank or from disk:
//! message frames for the three receivers, with and without attachments; the transport's
//! reassembly of frames from messages of any sizes; function registrations and the ids
//! tasks name; array task descriptions and chunks, reduction states and `.npy` files. None
//! of them may panic, whatever the input, and no forged registration may be accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mpidask::internals::dtype::DType;
use mpidask::internals::kernel::{Block, Partial};
use mpidask::internals::npy;
use mpidask::internals::program::Program;
use mpidask::internals::protocol::frame::decode_frame;
use mpidask::internals::protocol::{
    FnId, FunctionMsg, Payload, ToClient, ToScheduler, ToWorker, decode_frame_with, decode_value,
};
use mpidask::internals::task::FunctionTable;
use mpidask::internals::transport::mpi::reassembly::reassemble;
use std::sync::Arc;

/// Every receiver's decoder on one frame and its attachments.
fn decode_all(frame: &[u8], attachments: &[Payload]) {
    let _ = decode_frame_with::<ToScheduler>(frame, attachments.to_vec());
    let _ = decode_frame_with::<ToWorker>(frame, attachments.to_vec());
    let _ = decode_frame_with::<ToClient>(frame, attachments.to_vec());
}

/// `[count][lengths (u16 each)...][frame]`: a frame with attachments of those lengths.
fn frame_with_attachments(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8);
    if rest.len() < 2 * count {
        return;
    }
    let (lengths, frame) = rest.split_at(2 * count);
    let attachments: Vec<Payload> = lengths
        .chunks(2)
        .enumerate()
        .map(|(i, l)| {
            Arc::new(vec![i as u8; usize::from(u16::from_le_bytes([l[0], l[1]]))].into())
        })
        .collect();
    decode_all(frame, &attachments);
}

/// `[part size][(source, length u16, bytes)...]`: messages from four senders, reassembled
/// into frames as the MPI transport does, then decoded.
fn messages(data: &[u8]) {
    let Some((&part, mut rest)) = data.split_first() else {
        return;
    };
    let mut messages = Vec::new();
    while rest.len() >= 3 {
        let source = usize::from(rest[0] % 4);
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        messages.push((source, rest[3..3 + len].to_vec()));
        rest = &rest[3 + len..];
    }
    if let Ok(frames) = reassemble(4, usize::from(part).max(1), 1 << 24, &messages) {
        for incoming in frames {
            decode_all(&incoming.frame, &incoming.attachments);
        }
    }
}

/// A registration made up from the bytes: the check word must refuse it.
fn registration(data: &[u8]) {
    let mut table = FunctionTable::new(0x6a6f_625f_6b65_79);
    if let Ok(msg) = decode_value::<FunctionMsg>(data) {
        assert!(
            table.register(msg).is_err(),
            "a registration made without the job's key was accepted"
        );
    }
    let _ = table.first_unknown(data.iter().map(|b| FnId(u32::from(*b))));
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<ToScheduler>(data);
    let _ = decode_frame::<ToWorker>(data);
    let _ = decode_frame::<ToClient>(data);
    frame_with_attachments(data);
    messages(data);
    registration(data);
    let _ = decode_value::<Program>(data);
    let _ = decode_value::<Partial>(data);
    for dtype in [DType::Bool, DType::I64, DType::F32, DType::F64] {
        let _ = Block::decode(data, dtype);
        let _ = npy::decode(data, dtype);
    }
});
