//! [`KeyMap`]: a map from [`Key`] to values, built for keys handed out in sequence.
//!
//! The client numbers keys 1, 2, 3, ... and tasks end roughly in that order, so the live keys
//! form a window. The map keeps that window as a ring of slots indexed by `key - base`:
//! a lookup is an index computation instead of a hash probe, and neighbouring keys sit in
//! neighbouring slots. Values are boxed, so a slot costs 8 bytes while its key is dead but
//! older keys are still alive. Keys far outside the window (never produced by the client)
//! go to a hash map instead, so a stray key cannot make the ring huge.

use crate::protocol::Key;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Keys further than this from the window are kept in the overflow hash map.
const MAX_WINDOW: u64 = 1 << 26;

/// A map from [`Key`] to `T`, fast for keys handed out in sequence.
pub struct KeyMap<T> {
    base: u64,
    slots: VecDeque<Option<Box<T>>>,
    overflow: FxHashMap<Key, Box<T>>,
    len: usize,
}

impl<T> Default for KeyMap<T> {
    fn default() -> Self {
        KeyMap {
            base: 0,
            slots: VecDeque::new(),
            overflow: FxHashMap::default(),
            len: 0,
        }
    }
}

impl<T> KeyMap<T> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// `true` if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, key: Key) -> Option<usize> {
        let offset = key.0.checked_sub(self.base)?;
        (offset < self.slots.len() as u64).then_some(offset as usize)
    }

    /// The value of `key`.
    pub fn get(&self, key: &Key) -> Option<&T> {
        match self.slot(*key) {
            Some(i) => self.slots[i].as_deref(),
            None => self.overflow.get(key).map(|b| &**b),
        }
    }

    /// The value of `key`, mutable.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut T> {
        match self.slot(*key) {
            Some(i) => self.slots[i].as_deref_mut(),
            None => self.overflow.get_mut(key).map(|b| &mut **b),
        }
    }

    /// `true` if `key` has a value.
    pub fn contains_key(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    /// Sets the value of `key`, returning the old one.
    pub fn insert(&mut self, key: Key, value: T) -> Option<T> {
        let value = Box::new(value);
        if self.slots.is_empty() && self.overflow.is_empty() {
            self.base = key.0;
        }
        let old = if key.0 >= self.base && key.0 - self.base < MAX_WINDOW {
            let offset = (key.0 - self.base) as usize;
            if offset >= self.slots.len() {
                self.slots.resize_with(offset + 1, || None);
            }
            self.slots[offset].replace(value)
        } else if key.0 < self.base
            && self.base - key.0 <= MAX_WINDOW.saturating_sub(self.slots.len() as u64)
        {
            let grow = (self.base - key.0) as usize;
            for _ in 0..grow {
                self.slots.push_front(None);
            }
            self.base = key.0;
            self.slots[0].replace(value)
        } else {
            self.overflow.insert(key, value)
        };
        match old {
            Some(old) => Some(*old),
            None => {
                self.len += 1;
                None
            }
        }
    }

    /// Removes and returns the value of `key`.
    pub fn remove(&mut self, key: &Key) -> Option<T> {
        let removed = match self.slot(*key) {
            Some(i) => {
                let removed = self.slots[i].take();
                while matches!(self.slots.front(), Some(None)) {
                    self.slots.pop_front();
                    self.base += 1;
                }
                while matches!(self.slots.back(), Some(None)) {
                    self.slots.pop_back();
                }
                removed
            }
            None => self.overflow.remove(key),
        };
        let removed = removed.map(|b| *b);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, slot)| slot.as_deref().map(|v| (Key(base + i as u64), v)))
            .chain(self.overflow.iter().map(|(k, v)| (*k, &**v)))
    }
}

impl<T> std::ops::Index<&Key> for KeyMap<T> {
    type Output = T;

    fn index(&self, key: &Key) -> &T {
        self.get(key)
            .unwrap_or_else(|| panic!("no entry for key {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in prop::collection::vec((0u8..3, 0u64..64, any::<u32>()), 0..400)) {
            let mut map = KeyMap::new();
            let mut model = BTreeMap::new();
            for (op, key, value) in ops {
                // Mostly keys near each other, sometimes far ones (the overflow path).
                let key = if key == 63 { Key(1 << 40 | value as u64) } else { Key(1000 + key) };
                match op {
                    0 => prop_assert_eq!(map.insert(key, value), model.insert(key, value)),
                    1 => prop_assert_eq!(map.remove(&key), model.remove(&key)),
                    _ => prop_assert_eq!(map.get(&key), model.get(&key)),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let mut all: Vec<(Key, u32)> = map.iter().map(|(k, v)| (k, *v)).collect();
            all.sort();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_window_slides() {
        let mut map = KeyMap::new();
        for k in 1..=1000 {
            map.insert(Key(k), k);
        }
        for k in 1..=990 {
            assert_eq!(map.remove(&Key(k)), Some(k));
        }
        assert_eq!(map.slots.len(), 10);
        map.insert(Key(5), 5);
        assert_eq!(map.get(&Key(5)), Some(&5));
        assert_eq!(map.len(), 11);
    }
}
