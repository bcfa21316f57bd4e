//! The values a worker holds, in memory or spilled to disk: above the spill threshold
//! (`--memory-spill` of `--memory-limit`) the least recently used values are written to
//! files in a private directory (0700, files 0600) under `--local-directory`, and read
//! back when a task or another rank needs them. Files go when their value is released,
//! and the directory at exit, also after a failure.

use crate::keymap::KeyMap;
use crate::private_dir::PrivateDir;
use crate::protocol::{Key, Payload};
use crate::trace::now_us;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a value is.
enum Place {
    Memory(Payload),
    Disk { len: u64 },
}

struct Entry {
    place: Place,
    /// Last use, on the store's clock (orders the in-memory values for spilling).
    used: u64,
}

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

/// The values of one worker.
pub struct ValueStore {
    entries: KeyMap<Entry>,
    /// In-memory values by last use, oldest first.
    lru: BTreeMap<u64, Key>,
    clock: u64,
    memory_bytes: u64,
    policy: SpillPolicy,
    dir: Option<PrivateDir>,
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
    /// An empty store spilling by `policy`.
    pub fn new(policy: SpillPolicy) -> Self {
        ValueStore {
            entries: KeyMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
            memory_bytes: 0,
            policy,
            dir: None,
            spill_broken: false,
            records: Vec::new(),
            spilled_total: 0,
            released: Vec::new(),
            memory_short: false,
        }
    }

    /// Hands the buffers of released values to the transport (through `out`), and tells it
    /// to drop its kept ones if memory ran short.
    pub fn hand_back_buffers(&mut self, out: &mut crate::transport::Outbox) {
        if std::mem::take(&mut self.memory_short) {
            self.released.clear();
            out.drop_kept_buffers();
        }
        for buffer in self.released.drain(..) {
            out.recycle(buffer);
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

    /// Bytes of the values in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
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
            },
        );
        self.spill_to_threshold();
    }

    /// The value of `key`, read back from disk if it was spilled (`Ok(None)`: not held;
    /// `Err`: the spilled file could not be read, and the value is lost).
    pub fn get(&mut self, key: &Key) -> Result<Option<Payload>, String> {
        let used = self.tick();
        let Some(entry) = self.entries.get_mut(key) else {
            return Ok(None);
        };
        let previous = std::mem::replace(&mut entry.used, used);
        if let Place::Memory(value) = &entry.place {
            let value = value.clone();
            self.lru.remove(&previous);
            self.lru.insert(used, *key);
            return Ok(Some(value));
        }
        let Place::Disk { len } = entry.place else {
            unreachable!("matched above");
        };
        let value = match self.read_back(key, len) {
            Ok(value) => value,
            Err(message) => {
                self.entries.remove(key);
                return Err(message);
            }
        };
        let entry = self.entries.get_mut(key).expect("present");
        entry.place = Place::Memory(value.clone());
        self.memory_bytes += len;
        self.lru.insert(used, *key);
        self.spill_to_threshold();
        Ok(Some(value))
    }

    /// Forgets `key`, deleting its file if it was spilled.
    pub fn remove(&mut self, key: &Key) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        match entry.place {
            Place::Memory(value) => {
                self.memory_bytes -= value.len() as u64;
                self.lru.remove(&entry.used);
                // Nobody else holds it: its memory can receive the next value of its size.
                if let Ok(buffer) = Arc::try_unwrap(value) {
                    self.released.push(buffer);
                }
            }
            Place::Disk { .. } => {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_file(dir.path().join(file_name(key)));
                }
            }
        }
    }

    /// The spills and read-backs since the last call.
    pub fn take_records(&mut self) -> Vec<SpillRecord> {
        std::mem::take(&mut self.records)
    }

    /// Writes least recently used values to disk until the values in memory fit under the
    /// threshold.
    fn spill_to_threshold(&mut self) {
        let Some(threshold) = self.policy.threshold else {
            return;
        };
        if self.memory_bytes > threshold {
            // Memory is short: kept receive buffers go before any value is spilled.
            self.memory_short = true;
        }
        while self.memory_bytes > threshold && !self.spill_broken {
            let Some((&used, &key)) = self.lru.iter().next() else {
                return;
            };
            let entry = self.entries.get(&key).expect("listed values exist");
            let Place::Memory(value) = &entry.place else {
                unreachable!("only values in memory are listed");
            };
            let value = value.clone();
            match self.write_out(&key, &value) {
                Ok(()) => {
                    let len = value.len() as u64;
                    self.lru.remove(&used);
                    self.memory_bytes -= len;
                    self.spilled_total += 1;
                    self.entries.get_mut(&key).expect("present").place = Place::Disk { len };
                }
                Err(message) => {
                    log::warn!(
                        "cannot spill to {}: {message}; values stay in memory from now on \
                         (give a --local-directory with free space)",
                        self.policy.local_directory.display()
                    );
                    self.spill_broken = true;
                }
            }
        }
    }

    fn write_out(&mut self, key: &Key, value: &[u8]) -> Result<(), String> {
        if self.dir.is_none() {
            self.dir = Some(
                PrivateDir::create(&self.policy.local_directory, self.policy.rank)
                    .map_err(|e| e.to_string())?,
            );
        }
        let dir = self.dir.as_ref().expect("created above");
        let start_us = now_us();
        let mut file = dir
            .create_file(&file_name(key))
            .map_err(|e| e.to_string())?;
        let written = file.write_all(value).and_then(|()| file.flush());
        if let Err(e) = written {
            let _ = std::fs::remove_file(dir.path().join(file_name(key)));
            return Err(e.to_string());
        }
        self.records.push(SpillRecord {
            key: *key,
            nbytes: value.len() as u64,
            start_us,
            duration_us: now_us().saturating_sub(start_us),
            write: true,
        });
        Ok(())
    }

    fn read_back(&mut self, key: &Key, len: u64) -> Result<Payload, String> {
        let dir = self.dir.as_ref().expect("a spilled value has a directory");
        let path = dir.path().join(file_name(key));
        let start_us = now_us();
        let mut bytes = Vec::with_capacity(len as usize);
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes));
        let _ = std::fs::remove_file(&path);
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
        self.records.push(SpillRecord {
            key: *key,
            nbytes: len,
            start_us,
            duration_us: now_us().saturating_sub(start_us),
            write: false,
        });
        Ok(Arc::new(bytes))
    }
}

fn file_name(key: &Key) -> String {
    format!("{}.value", key.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_under(dir: &std::path::Path, threshold: u64) -> ValueStore {
        ValueStore::new(SpillPolicy {
            threshold: Some(threshold),
            local_directory: dir.to_path_buf(),
            rank: 2,
        })
    }

    fn value(byte: u8, len: usize) -> Payload {
        Arc::new(vec![byte; len])
    }

    #[test]
    fn least_recently_used_values_spill_and_come_back() {
        let parent =
            std::env::temp_dir().join(format!("mpidask-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&parent).unwrap();
        let mut store = store_under(&parent, 250);
        store.insert(Key(1), value(1, 100));
        store.insert(Key(2), value(2, 100));
        assert_eq!(store.get(&Key(1)).unwrap().unwrap()[0], 1); // 1 is now newer than 2
        store.insert(Key(3), value(3, 100));
        // 300 bytes > 250: the least recently used (2) went to disk.
        assert_eq!(store.memory_bytes(), 200);
        assert_eq!(store.spilled_total(), 1);
        let records = store.take_records();
        assert_eq!(
            (records.len(), records[0].key, records[0].write),
            (1, Key(2), true)
        );
        let dir = store.dir.as_ref().unwrap().path().to_path_buf();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("2.value"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Reading 2 back spills the least recently used in memory (1).
        assert_eq!(*store.get(&Key(2)).unwrap().unwrap(), vec![2; 100]);
        assert!(!dir.join("2.value").exists());
        assert!(dir.join("1.value").exists());
        assert_eq!(store.memory_bytes(), 200);
        store.remove(&Key(1));
        assert!(
            !dir.join("1.value").exists(),
            "a released value's file goes"
        );
        assert_eq!(store.len(), 2);
        drop(store);
        assert!(!dir.exists(), "the private directory goes with the store");
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn without_a_limit_nothing_spills() {
        let mut store = ValueStore::new(SpillPolicy {
            threshold: None,
            local_directory: PathBuf::from("/nonexistent"),
            rank: 2,
        });
        for i in 0..10 {
            store.insert(Key(i), value(0, 1000));
        }
        assert_eq!((store.memory_bytes(), store.spilled_total()), (10_000, 0));
        assert!(store.get(&Key(99)).unwrap().is_none());
    }

    #[test]
    fn an_unwritable_directory_keeps_values_in_memory() {
        let mut store = store_under(std::path::Path::new("/nonexistent/dir"), 10);
        store.insert(Key(1), value(0, 100));
        store.insert(Key(2), value(0, 100));
        assert_eq!(store.memory_bytes(), 200);
        assert!(store.get(&Key(1)).unwrap().is_some());
    }
}
