//! The started spans, by key: a slab of entries and an index of slot numbers.
//!
//! Why not one `HashMap<SpanKey, Pending>`: a pending span is a few hundred bytes, and at
//! 10k req/s thousands wait out the settle window. In a single hash table each insert writes
//! a random bucket of a table of several megabytes, a cache miss each time (perf put a third
//! of `Stitcher::on_event`'s own samples on that store). Here the hash table holds slot
//! numbers, and a new span takes the slot freed last (the slab reuses the most recently freed
//! first), which the export that freed it has just touched.

use std::collections::hash_map::Entry;

use foldhash::{HashMap, HashMapExt};
use slab::Slab;

use super::SpanKey;

pub struct PendingSpans<T> {
    index: HashMap<SpanKey, usize>,
    slots: Slab<(SpanKey, T)>,
}

impl<T> PendingSpans<T> {
    pub fn new() -> Self {
        Self {
            index: HashMap::new(),
            slots: Slab::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn contains_key(&self, key: &SpanKey) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &SpanKey) -> Option<&T> {
        let slot = *self.index.get(key)?;
        Some(&self.slots[slot].1)
    }

    pub fn get_mut(&mut self, key: &SpanKey) -> Option<&mut T> {
        let slot = *self.index.get(key)?;
        Some(&mut self.slots[slot].1)
    }

    /// Adds `value` under `key`, replacing (and returning) the value there was.
    pub fn insert(&mut self, key: SpanKey, value: T) -> Option<T> {
        match self.index.entry(key) {
            Entry::Occupied(slot) => Some(std::mem::replace(&mut self.slots[*slot.get()].1, value)),
            Entry::Vacant(slot) => {
                slot.insert(self.slots.insert((key, value)));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &SpanKey) -> Option<T> {
        let slot = self.index.remove(key)?;
        Some(self.slots.remove(slot).1)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&SpanKey, &T)> {
        self.slots.iter().map(|(_, (key, value))| (key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::SocketId;

    fn key(fd: i32, stream: u64) -> SpanKey {
        (
            SocketId {
                tgid: 1,
                fd,
                conn_gen: 0,
            },
            stream,
        )
    }

    #[test]
    fn behaves_as_a_map_and_reuses_the_slot_freed_last() {
        let mut spans = PendingSpans::new();
        assert_eq!(spans.insert(key(3, 0), "a"), None);
        assert_eq!(spans.insert(key(3, 1), "b"), None);
        assert_eq!(spans.insert(key(4, 0), "c"), None);
        assert_eq!(spans.insert(key(3, 1), "B"), Some("b"));
        assert_eq!(spans.len(), 3);
        assert_eq!(spans.get(&key(3, 1)), Some(&"B"));
        *spans.get_mut(&key(4, 0)).unwrap() = "C";
        assert_eq!(spans.remove(&key(3, 0)), Some("a"));
        assert_eq!(spans.remove(&key(3, 0)), None);
        assert!(!spans.contains_key(&key(3, 0)) && spans.contains_key(&key(4, 0)));
        let mut all: Vec<_> = spans.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_by_key(|(k, _)| (k.0.fd, k.1));
        assert_eq!(all, vec![(key(3, 1), "B"), (key(4, 0), "C")]);

        // The next span goes where the last one removed was.
        let freed = spans.index[&key(4, 0)];
        spans.remove(&key(4, 0));
        spans.insert(key(5, 0), "d");
        assert_eq!(spans.index[&key(5, 0)], freed);
        assert_eq!(spans.get(&key(5, 0)), Some(&"d"));
        assert_eq!(spans.len(), 2);
    }
}
