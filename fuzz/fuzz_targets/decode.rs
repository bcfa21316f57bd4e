//! Feeds arbitrary bytes to every decoder that reads bytes from another rank or from disk:
//! message frames for the three receivers, array task descriptions and chunks, reduction
//! states and `.npy` files. None of them may panic, whatever the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mpidask::array::dtype::DType;
use mpidask::array::kernel::{Block, Partial};
use mpidask::array::npy;
use mpidask::array::program::Program;
use mpidask::protocol::{ToClient, ToScheduler, ToWorker, decode_frame, decode_value};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<ToScheduler>(data);
    let _ = decode_frame::<ToWorker>(data);
    let _ = decode_frame::<ToClient>(data);
    let _ = decode_value::<Program>(data);
    let _ = decode_value::<Partial>(data);
    for dtype in [DType::Bool, DType::I64, DType::F32, DType::F64] {
        let _ = Block::decode(data, dtype);
    }
    let _ = npy::decode(data);
});
