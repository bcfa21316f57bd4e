//! The worker's disk: spills and read-backs on an I/O thread of their own, so the
//! communication thread (the one that calls MPI) never waits for the disk. Requests come
//! through two channels, read-backs first (a task waits for each, while a spill only frees
//! memory) and writes and deletes in order. Read-backs waiting together are served by
//! [`Urgency`]: the value whose task runs first is read first. Each result comes back as a
//! [`DiskDone`]
//! through the worker's event channel. The thread owns the private spill directory (made at
//! the first write, removed when the thread ends).

use crate::private_dir::PrivateDir;
use crate::protocol::{Bytes, Key, Payload};
use crate::trace::now_us;
use crossbeam_channel::{Receiver, Sender};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A spill or a read back, for the task stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SpillRecord {
    /// The value.
    pub key: Key,
    /// Its size.
    pub nbytes: u64,
    /// When the disk operation started (microseconds since the Unix epoch).
    pub start_us: u64,
    /// How long it took.
    pub duration_us: u64,
    /// `true` for a write (spill), `false` for a read back.
    pub write: bool,
}

/// What the store asks of the disk. `file` numbers a file uniquely for the store's life, so
/// a value stored again under the same key never meets an old file.
#[derive(Debug)]
pub enum DiskRequest {
    /// Write `value` to file `file`.
    Write {
        /// The value's key.
        key: Key,
        /// The file.
        file: u64,
        /// The bytes.
        value: Payload,
    },
    /// Read file `file` (`len` bytes) and delete it.
    Read {
        /// How soon the value is needed.
        urgency: Urgency,
        /// The value's key.
        key: Key,
        /// The file.
        file: u64,
        /// Its expected length.
        len: u64,
        /// Where the value was in memory (its [`Bytes::placement`]), for its copy.
        placement: u8,
    },
    /// Delete file `file`.
    Delete {
        /// The file.
        file: u64,
    },
}

/// How soon a value being read back is needed: read-backs waiting together are served
/// by the highest `priority` (the priority of the task waiting for the value, or
/// [`Urgency::PEER`] for another worker) and then the lowest `order` (when it was asked for),
/// as the worker's executor runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Urgency {
    /// Higher first.
    pub priority: i32,
    /// Among equal priorities, lower first.
    pub order: u64,
}

impl Urgency {
    /// The priority of a read-back another worker waits for: before any local task's.
    pub const PEER: i32 = i32::MAX;
}

impl Ord for Urgency {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.order.cmp(&self.order))
    }
}

impl PartialOrd for Urgency {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Read-backs received and not yet served, most urgent on top.
#[derive(Default)]
struct WaitingReads(std::collections::BinaryHeap<WaitingRead>);

/// A read-back request ordered by its urgency alone.
struct WaitingRead(Urgency, DiskRequest);

impl PartialEq for WaitingRead {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for WaitingRead {}
impl PartialOrd for WaitingRead {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WaitingRead {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl WaitingReads {
    fn push(&mut self, request: DiskRequest) {
        let urgency = match &request {
            DiskRequest::Read { urgency, .. } => *urgency,
            // Only read-backs come through the read channel; anything else goes last.
            _ => Urgency {
                priority: i32::MIN,
                order: u64::MAX,
            },
        };
        self.0.push(WaitingRead(urgency, request));
    }

    fn pop(&mut self) -> Option<DiskRequest> {
        self.0.pop().map(|w| w.1)
    }
}

/// A disk operation that finished.
#[derive(Debug)]
pub enum DiskDone {
    /// A write finished (or failed).
    Written {
        /// The value's key.
        key: Key,
        /// The file.
        file: u64,
        /// The operation, or why it failed.
        result: Result<SpillRecord, String>,
    },
    /// A read back finished (or failed).
    Read {
        /// The value's key.
        key: Key,
        /// The file.
        file: u64,
        /// The value and the operation, or why it could not be read.
        result: Result<(Payload, SpillRecord), String>,
    },
}

/// Where spill files go.
#[derive(Debug, Clone)]
pub struct SpillPlace {
    /// Parent of the private spill directory (`--local-directory`).
    pub parent: PathBuf,
    /// The worker's rank, in the directory's name.
    pub rank: u32,
}

/// The I/O thread of one worker.
pub struct Disk {
    /// Read-backs, served first.
    reads: Option<Sender<DiskRequest>>,
    /// Writes and deletes.
    requests: Option<Sender<DiskRequest>>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Disk {
    /// Starts the I/O thread, which hands every result to `report`.
    pub fn start(
        place: SpillPlace,
        report: impl Fn(DiskDone) + Send + 'static,
    ) -> std::io::Result<Disk> {
        let (reads, incoming_reads) = crossbeam_channel::unbounded();
        let (requests, incoming) = crossbeam_channel::unbounded();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mpidask-r{}-disk", place.rank))
            .spawn(move || {
                crate::process::lower_current_thread_priority();
                serve(place, &incoming_reads, &incoming, &stop, report)
            })?;
        Ok(Disk {
            reads: Some(reads),
            requests: Some(requests),
            stopping,
            thread: Some(thread),
        })
    }

    /// Queues `request`.
    pub fn send(&self, request: DiskRequest) {
        let channel = match request {
            DiskRequest::Read { .. } => &self.reads,
            DiskRequest::Write { .. } | DiskRequest::Delete { .. } => &self.requests,
        };
        if let Some(requests) = channel {
            // The thread outlives the sender except when it panicked; then the request is
            // lost like the store's other disk results, and the worker carries on in memory.
            let _ = requests.send(request);
        }
    }
}

impl Drop for Disk {
    /// Ends the thread: requests still queued are dropped, a write in progress completes,
    /// and the spill directory is removed.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        drop(self.reads.take());
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn file_name(file: u64) -> String {
    format!("{file}.value")
}

/// The next request: the most urgent read-back if one waits (of those waiting and those
/// received meanwhile), else whatever comes first; `None` once the store dropped its
/// senders.
fn next_request(
    reads: &Receiver<DiskRequest>,
    requests: &Receiver<DiskRequest>,
    waiting: &mut WaitingReads,
) -> Option<DiskRequest> {
    while let Ok(read) = reads.try_recv() {
        waiting.push(read);
    }
    if let Some(read) = waiting.pop() {
        return Some(read);
    }
    crossbeam_channel::select! {
        recv(reads) -> read => read.ok().or_else(|| requests.recv().ok()),
        recv(requests) -> request => request.ok().or_else(|| reads.recv().ok()),
    }
}

/// The I/O thread: serves requests until the store drops its senders or stops it.
fn serve(
    place: SpillPlace,
    reads: &Receiver<DiskRequest>,
    requests: &Receiver<DiskRequest>,
    stopping: &AtomicBool,
    report: impl Fn(DiskDone),
) {
    let mut dir: Option<PrivateDir> = None;
    let mut waiting = WaitingReads::default();
    while let Some(request) = next_request(reads, requests, &mut waiting) {
        if stopping.load(Ordering::Relaxed) {
            break;
        }
        match request {
            DiskRequest::Write { key, file, value } => {
                let result = write(&mut dir, &place, key, file, &value);
                report(DiskDone::Written { key, file, result });
            }
            DiskRequest::Read {
                key,
                file,
                len,
                placement,
                ..
            } => {
                let result = match &dir {
                    Some(dir) => read(dir, key, file, len, placement),
                    None => Err("its spill directory was never made".to_string()),
                };
                report(DiskDone::Read { key, file, result });
            }
            DiskRequest::Delete { file } => {
                if let Some(dir) = &dir {
                    let _ = std::fs::remove_file(dir.path().join(file_name(file)));
                }
            }
        }
    }
    drop(dir);
}

fn write(
    dir: &mut Option<PrivateDir>,
    place: &SpillPlace,
    key: Key,
    file: u64,
    value: &Bytes,
) -> Result<SpillRecord, String> {
    if dir.is_none() {
        *dir = Some(PrivateDir::create(&place.parent, place.rank).map_err(|e| e.to_string())?);
    }
    let dir = dir.as_ref().expect("made above");
    let start_us = now_us();
    let name = file_name(file);
    let mut out = dir.create_file(&name).map_err(|e| e.to_string())?;
    // A split value's pieces in turn (never joined in memory to be written).
    let (head, body) = value.as_pieces();
    let written = out
        .write_all(head)
        .and_then(|()| out.write_all(body))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        let _ = std::fs::remove_file(dir.path().join(&name));
        return Err(e.to_string());
    }
    Ok(SpillRecord {
        key,
        nbytes: value.len() as u64,
        start_us,
        duration_us: now_us().saturating_sub(start_us),
        write: true,
    })
}

fn read(
    dir: &PrivateDir,
    key: Key,
    file: u64,
    len: u64,
    placement: u8,
) -> Result<(Payload, SpillRecord), String> {
    let path = dir.path().join(file_name(file));
    let start_us = now_us();
    let mut bytes =
        Bytes::try_with_placement(placement, usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|e| format!("cannot allocate {len} bytes to read it back: {e}"))?;
    // The file stays: the store deletes it when the value is released.
    let read = std::fs::File::open(&path).and_then(|f| bytes.read_from(f));
    match read {
        Ok(n) if n as u64 == len => {}
        Ok(n) => {
            return Err(format!(
                "its spilled file {} held {n} of {len} bytes",
                path.display()
            ));
        }
        Err(e) => return Err(format!("its spilled file {}: {e}", path.display())),
    }
    let record = SpillRecord {
        key,
        nbytes: len,
        start_us,
        duration_us: now_us().saturating_sub(start_us),
        write: false,
    };
    Ok((Arc::new(bytes), record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waiting_read_backs_are_served_most_urgent_first() {
        // Five read-backs wait when the thread looks: another worker's first, then by the
        // waiting task's priority, then in the order asked.
        let (reads_in, reads) = crossbeam_channel::unbounded();
        let (requests_in, requests) = crossbeam_channel::unbounded();
        let asked = [
            (1, 0, 1),
            (2, 5, 2),
            (3, 0, 3),
            (4, Urgency::PEER, 4),
            (5, 5, 0),
        ];
        for (key, priority, order) in asked {
            reads_in
                .send(DiskRequest::Read {
                    urgency: Urgency { priority, order },
                    key: Key(key),
                    file: key,
                    len: 8,
                    placement: 0,
                })
                .unwrap();
        }
        drop((reads_in, requests_in));
        let served = std::sync::Mutex::new(Vec::new());
        serve(
            SpillPlace {
                parent: std::env::temp_dir(),
                rank: 2,
            },
            &reads,
            &requests,
            &AtomicBool::new(false),
            |done| match done {
                // No file was ever written: each read-back fails, in the order served.
                DiskDone::Read { key, result, .. } => {
                    assert!(result.is_err());
                    served.lock().unwrap().push(key.0);
                }
                other => panic!("{other:?}"),
            },
        );
        assert_eq!(served.into_inner().unwrap(), vec![4, 5, 2, 1, 3]);
    }

    #[test]
    fn writes_and_reads_come_back_and_the_directory_goes_with_the_thread() {
        let parent = std::env::temp_dir().join(format!("mpidask-disk-{}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        let (done, results) = crossbeam_channel::unbounded();
        let disk = Disk::start(
            SpillPlace {
                parent: parent.clone(),
                rank: 2,
            },
            move |d| done.send(d).unwrap(),
        )
        .unwrap();
        let mut value = Bytes::aligned_after(13, 1000);
        value.extend_from_slice(&[3u8; 1000]);
        let value: Payload = Arc::new(value);
        disk.send(DiskRequest::Write {
            key: Key(1),
            file: 7,
            value: value.clone(),
        });
        let next = || results.recv_timeout(Duration::from_secs(10)).unwrap();
        match next() {
            DiskDone::Written { key, file, result } => {
                assert_eq!((key, file), (Key(1), 7));
                assert!(result.unwrap().write);
            }
            other => panic!("{other:?}"),
        }
        // (The store asks to read a file back only once its write was reported.)
        disk.send(DiskRequest::Read {
            urgency: Urgency {
                priority: 0,
                order: 1,
            },
            key: Key(1),
            file: 7,
            len: 1000,
            placement: value.placement(),
        });
        disk.send(DiskRequest::Read {
            urgency: Urgency {
                priority: 0,
                order: 2,
            },
            key: Key(2),
            file: 8,
            len: 10,
            placement: 0,
        });
        match next() {
            DiskDone::Read { result, .. } => assert_eq!(result.unwrap().0, value),
            other => panic!("{other:?}"),
        }
        match next() {
            DiskDone::Read { key, result, .. } => {
                assert_eq!(key, Key(2));
                assert!(result.unwrap_err().contains("8.value"));
            }
            other => panic!("{other:?}"),
        }
        let dirs = || std::fs::read_dir(&parent).unwrap().count();
        assert_eq!(dirs(), 1, "one private directory while the thread lives");
        drop(disk);
        assert_eq!(dirs(), 0, "removed with the thread");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
