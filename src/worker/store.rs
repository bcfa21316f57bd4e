//! The values a worker holds, in memory or spilled to disk: above the spill threshold
//! (`--memory-spill` of `--memory-limit`) the least recently used values are written to
//! files in a private directory (0700, files 0600) under `--local-directory`, and read
//! back when a task or another rank needs them. Files go when their value is released,
//! and the directory at exit, also after a failure.
//!
//! The store never touches the disk itself: it asks its [`Disk`] thread and learns the
//! outcome from [`ValueStore::written`] and [`ValueStore::read`], which the worker calls
//! when the results arrive through its event channel. A value being written stays readable
//! from memory; a value on disk is [`Lookup::Pending`] until it is read back. A value read
//! back keeps its file (values never change): spilling it again only drops it from memory.

use super::disk::{Disk, DiskDone, DiskRequest, SpillPlace, SpillRecord, Urgency};
use crate::keymap::KeyMap;
use crate::protocol::{Key, Payload};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a value is.
enum Place {
    Memory(Payload),
    /// Being written to `file`; still in memory until the write completes. `used`: read
    /// meanwhile, so no longer the least recently used value: it stays in memory.
    Writing {
        value: Payload,
        file: u64,
        used: bool,
    },
    /// In `file`; read back to the same address mod 64 (see [`Bytes::placement`]).
    Disk {
        len: u64,
        file: u64,
        placement: u8,
    },
    /// Being read back from `file`.
    Reading {
        file: u64,
    },
}

struct Entry {
    place: Place,
    /// Last use, on the store's clock (orders the in-memory values for spilling).
    used: u64,
    /// The file already holding a copy of a value in memory (read back, or read while it
    /// was written): spilling it again writes nothing.
    copy: Option<u64>,
}

/// When to spill and where.
#[derive(Debug, Clone)]
pub struct SpillPolicy {
    /// Spill while the values in memory take more than this many bytes (`None`: never).
    pub threshold: Option<u64>,
    /// Parent of the private spill directory.
    pub local_directory: PathBuf,
    /// The worker's rank, in the directory's name.
    pub rank: u32,
}

/// What [`ValueStore::get`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The value, in memory.
    Ready(Payload),
    /// On disk: it is being read back; [`ValueStore::read`] will bring it.
    Pending,
    /// Not held.
    Missing,
}

/// What a finished read back means for the worker.
pub enum ReadBack {
    /// `key` is in memory again: serve whatever waited for it.
    Ready(Key, Payload),
    /// `key` could not be read back and is lost.
    Lost(Key, String),
    /// Nothing waits (the value was released meanwhile).
    Nothing,
}

/// Where disk results go (the worker's event channel).
pub type DiskReport = Arc<dyn Fn(DiskDone) + Send + Sync>;

/// The values of one worker.
pub struct ValueStore {
    entries: KeyMap<Entry>,
    /// Values in memory and not being written, by last use, oldest first.
    lru: BTreeMap<u64, Key>,
    clock: u64,
    /// Bytes of the values in memory, including those being written.
    memory_bytes: u64,
    /// Bytes of the values being written.
    writing_bytes: u64,
    policy: SpillPolicy,
    /// The I/O thread, started at the first spill.
    disk: Option<Disk>,
    report: Option<DiskReport>,
    next_file: u64,
    /// Spilling failed once (e.g. a full disk): values stay in memory from then on.
    spill_broken: bool,
    records: Vec<SpillRecord>,
    spilled_total: u64,
    /// Buffers of released values, for the transport to receive into again.
    released: Vec<Vec<u8>>,
    /// Memory ran short since the last hand-back: the transport drops its kept buffers.
    memory_short: bool,
}

impl ValueStore {
    /// An empty store spilling by `policy`, its disk results going to `report` (no
    /// spilling without one).
    pub fn new(policy: SpillPolicy, report: Option<DiskReport>) -> Self {
        ValueStore {
            entries: KeyMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
            memory_bytes: 0,
            writing_bytes: 0,
            policy,
            disk: None,
            report,
            next_file: 0,
            spill_broken: false,
            records: Vec::new(),
            spilled_total: 0,
            released: Vec::new(),
            memory_short: false,
        }
    }

    /// Gives the allocations of released values to the process's spares (for the next
    /// values received, read back or encoded), or drops every spare if memory ran short.
    pub fn hand_back_buffers(&mut self) {
        if std::mem::take(&mut self.memory_short) {
            self.released.clear();
            crate::protocol::clear_spares();
            #[cfg(feature = "huge-page-allocator")]
            crate::allocator::release_cached();
        }
        for buffer in self.released.drain(..) {
            crate::protocol::give_spare(buffer);
        }
    }

    /// `true` if the store holds `key` (in memory or on disk).
    pub fn contains_key(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the values in memory (including those being written to disk).
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// Bytes of the values on disk only (not read back, not being read).
    pub fn disk_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, entry)| match entry.place {
                Place::Disk { len, .. } => len,
                _ => 0,
            })
            .sum()
    }

    /// Bytes of the values being written to disk.
    pub fn writing_bytes(&self) -> u64 {
        self.writing_bytes
    }

    /// Whether spilling can free memory: a spill threshold is set, a report channel
    /// exists, and no write has failed.
    pub fn can_spill(&self) -> bool {
        self.policy.threshold.is_some() && self.report.is_some() && !self.spill_broken
    }

    #[cfg(test)]
    /// Values written to disk since the start.
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn request(&mut self, request: DiskRequest) {
        if let Some(disk) = &self.disk {
            disk.send(request);
        }
    }

    /// Stores `value` (replacing an older one), then spills what the policy asks for.
    pub fn insert(&mut self, key: Key, value: Payload) {
        self.remove(&key);
        let used = self.tick();
        self.memory_bytes += value.len() as u64;
        self.lru.insert(used, key);
        self.entries.insert(
            key,
            Entry {
                place: Place::Memory(value),
                used,
                copy: None,
            },
        );
        self.spill_to_threshold();
    }

    /// The value of `key`: in memory, or being read back from disk (this call starts the
    /// read if it was not started yet, as urgent as `priority`: the priority of the task
    /// that needs it, or [`Urgency::PEER`]), or not held.
    pub fn get(&mut self, key: &Key, priority: i32) -> Lookup {
        let used = self.tick();
        let Some(entry) = self.entries.get_mut(key) else {
            return Lookup::Missing;
        };
        match &mut entry.place {
            Place::Memory(value) => {
                let value = value.clone();
                let previous = std::mem::replace(&mut entry.used, used);
                self.lru.remove(&previous);
                self.lru.insert(used, *key);
                Lookup::Ready(value)
            }
            Place::Writing { value, used, .. } => {
                *used = true;
                Lookup::Ready(value.clone())
            }
            Place::Reading { .. } => Lookup::Pending,
            &mut Place::Disk {
                len,
                file,
                placement,
            } => {
                entry.place = Place::Reading { file };
                self.request(DiskRequest::Read {
                    urgency: Urgency {
                        priority,
                        order: used,
                    },
                    key: *key,
                    file,
                    len,
                    placement,
                });
                Lookup::Pending
            }
        }
    }

    /// Forgets `key`, deleting its file if it was spilled.
    pub fn remove(&mut self, key: &Key) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        if let Some(file) = entry.copy {
            self.request(DiskRequest::Delete { file });
        }
        match entry.place {
            Place::Memory(value) => {
                self.memory_bytes -= value.len() as u64;
                self.lru.remove(&entry.used);
                // Nobody else holds it: its memory can receive the next value of its size.
                if let Ok(buffer) = Arc::try_unwrap(value) {
                    self.released.push(buffer.into_allocation());
                }
            }
            Place::Writing { value, .. } => {
                // The write's result finds no entry and deletes the file.
                self.memory_bytes -= value.len() as u64;
                self.writing_bytes -= value.len() as u64;
            }
            // A read in flight is served first (the disk thread takes reads before
            // anything else); its result finds no entry.
            Place::Disk { file, .. } | Place::Reading { file } => {
                self.request(DiskRequest::Delete { file })
            }
        }
    }

    /// The spills and read-backs since the last call.
    pub fn take_records(&mut self) -> Vec<SpillRecord> {
        std::mem::take(&mut self.records)
    }

    /// Starts writing least recently used values to disk until the values in memory that
    /// are not already being written fit under the threshold. Values that something else
    /// still holds (a queued task's input, a send in flight) are passed over: writing them
    /// would free nothing until they are let go, so [`rebalance`](Self::rebalance) comes
    /// back to them later.
    fn spill_to_threshold(&mut self) {
        let Some(threshold) = self.policy.threshold else {
            return;
        };
        if self.memory_bytes > threshold {
            // Memory is short: kept receive buffers go before any value is spilled.
            self.memory_short = true;
        }
        let resident = self.memory_bytes - self.writing_bytes;
        if resident <= threshold || self.spill_broken {
            return;
        }
        let mut excess = resident - threshold;
        let mut chosen = Vec::new();
        for (&used, &key) in &self.lru {
            if excess == 0 {
                break;
            }
            let Place::Memory(value) = &self.entries.get(&key).expect("listed values exist").place
            else {
                unreachable!("only values in memory are listed");
            };
            if Arc::strong_count(value) > 1 {
                continue;
            }
            excess = excess.saturating_sub(value.len() as u64);
            chosen.push((used, key));
        }
        if chosen.is_empty() || (self.disk.is_none() && !self.start_disk()) {
            return;
        }
        for (used, key) in chosen {
            self.lru.remove(&used);
            let entry = self.entries.get_mut(&key).expect("listed values exist");
            let Place::Memory(value) = &entry.place else {
                unreachable!("only values in memory are listed");
            };
            if let Some(file) = entry.copy.take() {
                // Its file still holds it: it leaves memory without a write.
                let len = value.len() as u64;
                entry.place = Place::Disk {
                    len,
                    file,
                    placement: value.placement(),
                };
                self.memory_bytes -= len;
                continue;
            }
            let value = value.clone();
            let file = self.next_file;
            self.next_file += 1;
            self.writing_bytes += value.len() as u64;
            entry.place = Place::Writing {
                value: value.clone(),
                file,
                used: false,
            };
            self.request(DiskRequest::Write { key, file, value });
        }
    }

    /// Spills what the policy asks for now (values that were still held elsewhere when the
    /// store last tried may be free to go); the worker calls it on every tick.
    pub fn rebalance(&mut self) {
        self.spill_to_threshold();
    }

    /// Starts the I/O thread; `false` (spilling off from now on) if it cannot start.
    fn start_disk(&mut self) -> bool {
        let Some(report) = self.report.clone() else {
            self.spill_broken = true;
            return false;
        };
        let place = SpillPlace {
            parent: self.policy.local_directory.clone(),
            rank: self.policy.rank,
        };
        match Disk::start(place, move |done| report(done)) {
            Ok(disk) => {
                self.disk = Some(disk);
                true
            }
            Err(e) => {
                log::warn!(
                    "cannot start the thread that spills to disk: {e}; values stay in memory"
                );
                self.spill_broken = true;
                false
            }
        }
    }

    /// A write finished: the value leaves memory, or stays there if the write failed (and
    /// spilling stops).
    pub fn written(&mut self, key: Key, file: u64, result: Result<SpillRecord, String>) {
        let current = self
            .entries
            .get(&key)
            .is_some_and(|e| matches!(e.place, Place::Writing { file: f, .. } if f == file));
        match (result, current) {
            (Ok(record), true) => {
                let used_meanwhile = {
                    let entry = self.entries.get(&key).expect("checked above");
                    matches!(entry.place, Place::Writing { used: true, .. })
                };
                let len = record.nbytes;
                self.writing_bytes -= len;
                self.records.push(record);
                if used_meanwhile {
                    // Read while it was being written: recently used after all. It stays
                    // (its file kept as its copy), and the least recently used value goes
                    // in its place.
                    self.keep_in_memory(key);
                    self.entries.get_mut(&key).expect("kept above").copy = Some(file);
                    self.spill_to_threshold();
                } else {
                    let entry = self.entries.get_mut(&key).expect("checked above");
                    let placement = match &entry.place {
                        Place::Writing { value, .. } => value.placement(),
                        _ => 0,
                    };
                    entry.place = Place::Disk {
                        len,
                        file,
                        placement,
                    };
                    self.memory_bytes -= len;
                    self.spilled_total += 1;
                }
            }
            (Ok(record), false) => {
                // Released (or replaced) while being written.
                self.records.push(record);
                self.request(DiskRequest::Delete { file });
            }
            (Err(message), true) => {
                log::warn!(
                    "cannot spill to {}: {message}; values stay in memory from now on \
                     (give a --local-directory with free space)",
                    self.policy.local_directory.display()
                );
                self.spill_broken = true;
                let entry = self.entries.get(&key).expect("checked above");
                if let Place::Writing { value, .. } = &entry.place {
                    self.writing_bytes -= value.len() as u64;
                }
                self.keep_in_memory(key);
            }
            (Err(_), false) => {}
        }
    }

    /// Turns the value of `key`, being written, back into a value in memory, the most
    /// recently used.
    fn keep_in_memory(&mut self, key: Key) {
        let used = self.tick();
        let entry = self.entries.get_mut(&key).expect("the caller checked");
        let Place::Writing { value, .. } = &entry.place else {
            unreachable!("only values being written are kept");
        };
        entry.place = Place::Memory(value.clone());
        entry.used = used;
        self.lru.insert(used, key);
    }

    /// A read back finished: the value is in memory again (and other values may be spilled
    /// to make room), or it is lost.
    pub fn read(
        &mut self,
        key: Key,
        file: u64,
        result: Result<(Payload, SpillRecord), String>,
    ) -> ReadBack {
        let current = self
            .entries
            .get(&key)
            .is_some_and(|e| matches!(e.place, Place::Reading { file: f, .. } if f == file));
        if !current {
            return ReadBack::Nothing;
        }
        match result {
            Ok((value, record)) => {
                self.records.push(record);
                let used = self.tick();
                self.memory_bytes += value.len() as u64;
                self.lru.insert(used, key);
                let entry = self.entries.get_mut(&key).expect("checked above");
                entry.place = Place::Memory(value.clone());
                entry.used = used;
                entry.copy = Some(file);
                self.spill_to_threshold();
                ReadBack::Ready(key, value)
            }
            Err(message) => {
                self.entries.remove(&key);
                self.request(DiskRequest::Delete { file });
                ReadBack::Lost(key, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A store under `dir` with `threshold`, and the channel its disk results come back on.
    fn store_under(
        dir: &std::path::Path,
        threshold: u64,
    ) -> (ValueStore, crossbeam_channel::Receiver<DiskDone>) {
        let (done, results) = crossbeam_channel::unbounded();
        let report: DiskReport = Arc::new(move |d| {
            let _ = done.send(d);
        });
        let store = ValueStore::new(
            SpillPolicy {
                threshold: Some(threshold),
                local_directory: dir.to_path_buf(),
                rank: 2,
            },
            Some(report),
        );
        (store, results)
    }

    /// Hands the next disk result to the store, as the worker does; returns a read back.
    fn next(store: &mut ValueStore, results: &crossbeam_channel::Receiver<DiskDone>) -> ReadBack {
        match results
            .recv_timeout(Duration::from_secs(10))
            .expect("a disk result")
        {
            DiskDone::Written { key, file, result } => {
                store.written(key, file, result);
                ReadBack::Nothing
            }
            DiskDone::Read { key, file, result } => store.read(key, file, result),
        }
    }

    fn value(byte: u8, len: usize) -> Payload {
        Arc::new(vec![byte; len].into())
    }

    fn spill_dir(parent: &std::path::Path) -> PathBuf {
        std::fs::read_dir(parent)
            .unwrap()
            .next()
            .expect("a private directory")
            .unwrap()
            .path()
    }

    /// Whether `file` is gone within 10 s (a delete is queued on the disk thread).
    fn gone(file: &std::path::Path) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        !file.exists()
    }

    #[test]
    fn least_recently_used_values_spill_and_come_back() {
        let parent =
            std::env::temp_dir().join(format!("mpidask-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        let (mut store, results) = store_under(&parent, 250);
        store.insert(Key(1), value(1, 100));
        store.insert(Key(2), value(2, 100));
        assert_eq!(store.get(&Key(1), 0), Lookup::Ready(value(1, 100)));
        store.insert(Key(3), value(3, 100));
        // 300 bytes > 250: the least recently used (2) is being written.
        assert_eq!(store.memory_bytes(), 300);
        next(&mut store, &results);
        assert_eq!(store.memory_bytes(), 200);
        assert_eq!(store.spilled_total(), 1);
        let records = store.take_records();
        assert_eq!(
            (records.len(), records[0].key, records[0].write),
            (1, Key(2), true)
        );
        let dir = spill_dir(&parent);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("0.value"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reading 2 back is pending until the disk answers; then 1 (least recently used in
        // memory) is written out to make room.
        assert_eq!(store.get(&Key(2), 0), Lookup::Pending);
        assert_eq!(store.get(&Key(2), 0), Lookup::Pending, "asked once");
        match next(&mut store, &results) {
            ReadBack::Ready(key, bytes) => assert_eq!((key, bytes), (Key(2), value(2, 100))),
            _ => panic!("expected the value back"),
        }
        assert!(
            dir.join("0.value").exists(),
            "a value read back keeps its file"
        );
        next(&mut store, &results);
        assert!(dir.join("1.value").exists());
        assert_eq!(store.memory_bytes(), 200);
        // 2 least recently used again: it leaves memory at once, without a write.
        assert_eq!(store.get(&Key(3), 0), Lookup::Ready(value(3, 100)));
        store.insert(Key(4), value(4, 100));
        assert_eq!(
            store.memory_bytes(),
            200,
            "2 dropped without waiting for the disk"
        );
        assert!(
            !store
                .take_records()
                .iter()
                .any(|r| r.key == Key(2) && r.write),
            "2 written once only"
        );
        assert_eq!(
            store.get(&Key(2), 0),
            Lookup::Pending,
            "read from its file again"
        );
        match next(&mut store, &results) {
            ReadBack::Ready(key, bytes) => assert_eq!((key, bytes), (Key(2), value(2, 100))),
            _ => panic!("expected the value back"),
        }
        next(&mut store, &results);
        store.remove(&Key(2));
        assert!(gone(&dir.join("0.value")), "a released value's copy goes");
        store.remove(&Key(1));
        // The delete is queued behind nothing else: wait for the disk to do it.
        assert!(gone(&dir.join("1.value")), "a released value's file goes");
        assert_eq!(store.len(), 2);
        drop(store);
        assert!(!dir.exists(), "the private directory goes with the store");
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_value_read_while_it_is_written_stays_in_memory() {
        let parent =
            std::env::temp_dir().join(format!("mpidask-store-used-{}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        let (mut store, results) = store_under(&parent, 150);
        store.insert(Key(1), value(1, 100));
        store.insert(Key(2), value(2, 100));
        // 1 is being written; a task reads it before the write completes.
        assert_eq!(store.get(&Key(1), 0), Lookup::Ready(value(1, 100)));
        next(&mut store, &results);
        // 1 stayed; 2, now the least recently used, is being written instead.
        assert_eq!(store.get(&Key(1), 0), Lookup::Ready(value(1, 100)));
        next(&mut store, &results);
        assert_eq!(store.memory_bytes(), 100);
        assert_eq!(store.get(&Key(2), 0), Lookup::Pending, "2 went to disk");
        drop(store);
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_value_released_while_it_is_written_leaves_no_file() {
        let parent =
            std::env::temp_dir().join(format!("mpidask-store-release-{}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        let (mut store, results) = store_under(&parent, 50);
        store.insert(Key(1), value(1, 100));
        store.remove(&Key(1));
        store.insert(Key(1), value(9, 10));
        assert_eq!(store.memory_bytes(), 10);
        next(&mut store, &results);
        assert_eq!(store.get(&Key(1), 0), Lookup::Ready(value(9, 10)));
        let dir = spill_dir(&parent);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dir.join("0.value").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!dir.join("0.value").exists());
        drop(store);
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn without_a_limit_nothing_spills() {
        let mut store = ValueStore::new(
            SpillPolicy {
                threshold: None,
                local_directory: PathBuf::from("/nonexistent"),
                rank: 2,
            },
            None,
        );
        for i in 0..10 {
            store.insert(Key(i), value(0, 1000));
        }
        assert_eq!((store.memory_bytes(), store.spilled_total()), (10_000, 0));
        assert_eq!(store.get(&Key(99), 0), Lookup::Missing);
    }

    #[test]
    fn an_unwritable_directory_keeps_values_in_memory() {
        let (mut store, results) = store_under(std::path::Path::new("/nonexistent/dir"), 10);
        store.insert(Key(1), value(0, 100));
        next(&mut store, &results);
        store.insert(Key(2), value(0, 100));
        assert_eq!(store.memory_bytes(), 200);
        assert_eq!(store.get(&Key(1), 0), Lookup::Ready(value(0, 100)));
        assert!(
            results.recv_timeout(Duration::from_millis(100)).is_err(),
            "no more writes"
        );
    }
}
