//! The task stream as Chrome-trace JSON ("Trace Event Format"), which Perfetto and
//! `chrome://tracing` open: a process per rank, a thread per worker thread plus one for
//! transfers, a complete ("X") event per task run and per transfer.

use super::{Summary, TraceCollector};
use crate::protocol::{Rank, TraceEvent};
use serde::Serialize;
use serde_json::json;
use std::io::Write;

/// The thread id transfers are drawn on, below a rank's task threads.
pub(super) const TRANSFER_THREAD: u32 = 100_000;
/// The thread id spills are drawn on.
pub(super) const DISK_THREAD: u32 = 100_001;
/// The thread id the communication thread's heartbeats are drawn on.
pub(super) const COMM_THREAD: u32 = 100_002;

#[derive(Serialize)]
struct Complete<'a> {
    name: &'a str,
    cat: &'static str,
    ph: &'static str,
    ts: f64,
    dur: f64,
    pid: u32,
    tid: u32,
    args: serde_json::Value,
}

/// The label of a rank's row group.
pub(super) fn rank_label(collector: &TraceCollector, rank: Rank) -> String {
    match collector.workers.get(&rank) {
        Some(info) => format!("rank {} worker ({})", rank.0, info.host),
        None if rank == Rank::CLIENT => "rank 1 client".to_string(),
        None => format!("rank {}", rank.0),
    }
}

/// Writes the whole trace to `out`.
pub(super) fn write(
    collector: &TraceCollector,
    summary: &Summary,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let origin = collector.start_us;
    let relative = |us: u64| us as f64 - origin as f64;
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
    let mut first = true;
    let mut emit = |out: &mut dyn Write, value: &dyn erased::Json| -> std::io::Result<()> {
        if !std::mem::take(&mut first) {
            out.write_all(b",\n")?;
        }
        value.write_json(out)
    };
    let mut ranks: Vec<Rank> = collector.events.iter().map(|(r, _)| *r).collect();
    ranks.extend(collector.workers.keys().copied());
    ranks.sort_unstable();
    ranks.dedup();
    for rank in &ranks {
        let label = rank_label(collector, *rank);
        emit(
            out,
            &json!({"name": "process_name", "ph": "M", "pid": rank.0, "args": {"name": label}}),
        )?;
        emit(
            out,
            &json!({"name": "process_sort_index", "ph": "M", "pid": rank.0, "args": {"sort_index": rank.0}}),
        )?;
        let threads = collector.workers.get(rank).map_or(0, |w| w.nthreads);
        for thread in 0..threads {
            emit(
                out,
                &json!({"name": "thread_name", "ph": "M", "pid": rank.0, "tid": thread,
                        "args": {"name": format!("thread {thread}")}}),
            )?;
        }
        emit(
            out,
            &json!({"name": "thread_name", "ph": "M", "pid": rank.0, "tid": TRANSFER_THREAD,
                    "args": {"name": "transfers"}}),
        )?;
        emit(
            out,
            &json!({"name": "thread_name", "ph": "M", "pid": rank.0, "tid": DISK_THREAD,
                    "args": {"name": "disk (spill)"}}),
        )?;
        emit(
            out,
            &json!({"name": "thread_name", "ph": "M", "pid": rank.0, "tid": COMM_THREAD,
                    "args": {"name": "communication"}}),
        )?;
    }
    for (rank, event) in &collector.events {
        let complete = match event {
            TraceEvent::Heartbeat { at_us } => {
                emit(
                    out,
                    &json!({"name": "heartbeat", "cat": "heartbeat", "ph": "i", "s": "t",
                            "ts": relative(*at_us), "pid": rank.0, "tid": COMM_THREAD}),
                )?;
                continue;
            }
            TraceEvent::Memory {
                at_us,
                stored_bytes,
                spilled_bytes,
                rss_bytes,
            } => {
                // A counter track per worker (Perfetto draws it as a graph).
                emit(
                    out,
                    &json!({"name": "memory", "cat": "memory", "ph": "C",
                            "ts": relative(*at_us), "pid": rank.0,
                            "args": {"stored": stored_bytes, "spilled": spilled_bytes,
                                     "rss": rss_bytes}}),
                )?;
                continue;
            }
            TraceEvent::Task {
                key,
                func,
                thread,
                start_us,
                duration_us,
                ok,
                bytes_in,
                bytes_out,
            } => {
                let kind = collector.kind_name(*func);
                Complete {
                    name: kind,
                    cat: "task",
                    ph: "X",
                    ts: relative(*start_us),
                    dur: *duration_us as f64,
                    pid: rank.0,
                    tid: *thread,
                    args: json!({"key": format!("{kind}-{}", key.0), "ok": ok,
                                 "bytes_in": bytes_in, "bytes_out": bytes_out}),
                }
            }
            TraceEvent::Transfer {
                key,
                peer,
                nbytes,
                start_us,
                duration_us,
                incoming,
                collective,
            } => Complete {
                name: match (*incoming, *collective) {
                    (true, true) => "broadcast",
                    (true, false) => "receive",
                    (false, _) => "send",
                },
                cat: "transfer",
                ph: "X",
                ts: relative(*start_us),
                dur: *duration_us as f64,
                pid: rank.0,
                tid: TRANSFER_THREAD,
                args: json!({"key": key.0, "peer": peer.0, "bytes": nbytes}),
            },
            TraceEvent::Spill {
                key,
                nbytes,
                start_us,
                duration_us,
                write,
            } => Complete {
                name: if *write { "spill" } else { "read back" },
                cat: "spill",
                ph: "X",
                ts: relative(*start_us),
                dur: *duration_us as f64,
                pid: rank.0,
                tid: DISK_THREAD,
                args: json!({"key": key.0, "bytes": nbytes}),
            },
        };
        emit(out, &complete)?;
    }
    out.write_all(b"\n],\"otherData\":")?;
    serde_json::to_writer(&mut *out, &json!({"summary": summary}))
        .map_err(std::io::Error::other)?;
    out.write_all(b"}\n")
}

/// Writing differently typed values through one closure.
mod erased {
    use serde::Serialize;
    use std::io::Write;

    pub trait Json {
        fn write_json(&self, out: &mut dyn Write) -> std::io::Result<()>;
    }

    impl<T: Serialize> Json for T {
        fn write_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer(out, self).map_err(std::io::Error::other)
        }
    }
}
