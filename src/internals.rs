//! Internals for the project's own benchmarks, fuzz targets and fault-injection tests,
//! behind the `internals` feature: not part of the public API, and free to change.

pub use crate::collections::array::{dtype, fused, kernel, npy, program};
pub use crate::process;
pub use crate::protocol;
pub use crate::scheduler;
pub use crate::task;
pub use crate::transport;

use crate::client::{Client, Command};
use crate::protocol::{Frame, Rank};

/// Sends `frame` (its bytes and attachments, as they are) from the client rank to `to`,
/// bypassing the client's own encoding: how tests forge or break messages.
pub fn inject_frame(client: &Client, to: Rank, frame: Frame) {
    client.send_command(Command::Raw(to, frame));
}
