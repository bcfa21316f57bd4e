//! Which of the program's large scattered values a worker has read, for the client's
//! pacing of large arguments (`client::flow`).
//!
//! A value is *read* when a task takes it up, another rank fetches it, or it is released;
//! one unread for [`UNREAD_GRACE`] counts as read too. The worker tells the client of the
//! values read ([`ClientReads::due`]), and the client sends its next ones.

use crate::protocol::Key;
use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

/// How long a large value the program scattered here may wait for a task to read it
/// before the client is told it arrived anyway: a task placed here may wait on work that
/// the client's pacing would hold back behind the value, or no task may read it.
pub(super) const UNREAD_GRACE: Duration = Duration::from_millis(20);

/// The program's large scattered values on this worker not yet told to the client.
#[derive(Default)]
pub(super) struct ClientReads {
    /// Arrived and not read yet, with when each arrived.
    unread: FxHashMap<Key, Instant>,
    /// Read (or gone) and not told yet.
    read: Vec<Key>,
}

impl ClientReads {
    /// Value `key` arrived at `now`.
    pub(super) fn arrived(&mut self, key: Key, now: Instant) {
        self.unread.insert(key, now);
    }

    /// Value `key` was read or is gone (nothing if it is not an unread value).
    pub(super) fn read(&mut self, key: &Key) {
        if self.unread.remove(key).is_some() {
            self.read.push(*key);
        }
    }

    /// `true` if no value waits to be read or told.
    pub(super) fn is_empty(&self) -> bool {
        self.unread.is_empty() && self.read.is_empty()
    }

    /// The values to tell the client of at `now`, if the worker may (`may_tell`, asked
    /// only when there are any): those read, and those unread for [`UNREAD_GRACE`].
    pub(super) fn due(&mut self, now: Instant, may_tell: impl FnOnce() -> bool) -> Vec<Key> {
        let read = &mut self.read;
        self.unread.retain(|key, arrived| {
            let waiting = now.saturating_duration_since(*arrived) < UNREAD_GRACE;
            if !waiting {
                read.push(*key);
            }
            waiting
        });
        if self.read.is_empty() || !may_tell() {
            return Vec::new();
        }
        std::mem::take(&mut self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_due_once_read_or_unread_for_the_grace_period() {
        let start = Instant::now();
        let mut reads = ClientReads::default();
        assert!(reads.is_empty());
        reads.arrived(Key(1), start);
        reads.arrived(Key(2), start);
        reads.read(&Key(9));
        assert!(reads.due(start, || true).is_empty());
        reads.read(&Key(1));
        // Not while the worker may not tell; still due after.
        assert!(reads.due(start, || false).is_empty());
        assert_eq!(reads.due(start, || true), vec![Key(1)]);
        assert!(!reads.is_empty());
        let asked = std::cell::Cell::new(false);
        assert!(
            reads
                .due(start, || {
                    asked.set(true);
                    true
                })
                .is_empty()
        );
        assert!(!asked.get(), "nothing due: the worker is not asked");
        assert_eq!(reads.due(start + UNREAD_GRACE, || true), vec![Key(2)]);
        assert!(reads.is_empty());
    }
}
