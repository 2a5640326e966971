//! The HPACK indexing tables (RFC 7541 §2.3): the static table, and a dynamic table that knows
//! which of its entries it has actually seen.
//!
//! A dynamic table index counts back from the newest insertion (§2.3.3): index 1 is the entry
//! inserted last, index k the k-th last. That holds whatever came before, so an observer that
//! missed part of the history (it joined mid-connection, or a header block was not captured)
//! still knows exactly the entries inserted since: they are the first `entries.len()` indices.
//! Only an index beyond them is unknown, and it stays unknown; the table never guesses.
//! `complete` records whether entries beyond the known ones can exist at all: true from the
//! start of a connection, false after a loss until a Dynamic Table Size Update proves the older
//! entries gone (a size too small to hold them next to the known ones, e.g. 0).

use std::collections::VecDeque;

/// Entries of the static table (RFC 7541 Appendix A), index 1 first.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// SETTINGS_HEADER_TABLE_SIZE when not announced, and the table's initial size (RFC 9113 §6.5.2).
pub const DEFAULT_SIZE: usize = 4096;
/// The most a dynamic table may hold here, whatever the peers announced: beyond, the oldest
/// entries are dropped (references to them become unknown).
pub const MAX_SIZE: usize = 64 * 1024;
/// What an entry costs on top of its name and value (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// One dynamic table entry: name then value in one allocation.
#[derive(Debug)]
struct Entry {
    bytes: Box<[u8]>,
    /// Length of the name; `None` when the name is unknown (it came from an unknown entry).
    name_len: Option<usize>,
}

impl Entry {
    /// The RFC size, or a lower bound of it when the name is unknown.
    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// What an index refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// `name` is `None` when the entry's name is unknown.
    Entry {
        name: Option<&'a [u8]>,
        value: &'a [u8],
    },
    /// An entry inserted before what the table has seen.
    Unknown,
    /// No entry can have this index: the block is malformed (or the observer lost track).
    Invalid,
}

#[derive(Debug)]
pub struct DynamicTable {
    /// Known entries, newest first.
    entries: VecDeque<Entry>,
    /// Sum of the known entries' sizes (a lower bound when some names are unknown).
    size: usize,
    /// The table's maximum size as the encoder uses it (assumed when `max_known` is false).
    max: usize,
    /// The bound the decoding peer announced (SETTINGS_HEADER_TABLE_SIZE), at most `MAX_SIZE`.
    limit: usize,
    /// `max` is the encoder's, so evictions here are the encoder's.
    max_known: bool,
    /// No entry exists beyond the known ones.
    complete: bool,
}

impl Default for DynamicTable {
    fn default() -> Self {
        Self::new()
    }
}

impl DynamicTable {
    /// A table seen from the start of its connection.
    pub fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: DEFAULT_SIZE,
            limit: DEFAULT_SIZE,
            max_known: true,
            complete: true,
        }
    }

    /// A table whose history was not seen.
    pub fn without_history() -> Self {
        Self {
            max_known: false,
            complete: false,
            limit: MAX_SIZE,
            ..Self::new()
        }
    }

    /// Entries beyond the known ones may exist.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Some insertions were not seen: no known entry keeps a known index.
    pub fn lose_history(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.complete = false;
        // A size update may have been among what was missed: assume the encoder uses at least
        // the default size (a guess too large only keeps entries it will not refer to).
        self.max_known = false;
        self.max = self.max.max(DEFAULT_SIZE).min(self.limit);
    }

    /// The decoding peer announced SETTINGS_HEADER_TABLE_SIZE = `announced`.
    pub fn set_limit(&mut self, announced: u32) {
        self.limit = (announced as usize).min(MAX_SIZE);
        if self.max > self.limit {
            // The encoder must shrink too; it says so with a size update.
            self.max = self.limit;
            self.evict();
        }
    }

    /// A Dynamic Table Size Update (RFC 7541 §6.3). Returns false when it exceeds the limit
    /// (a protocol error; the table then keeps at most the limit).
    pub fn size_update(&mut self, size: u64) -> bool {
        let within = size <= self.limit as u64;
        self.max = (size as usize).min(self.limit);
        self.max_known = within;
        let before = self.entries.len();
        self.evict();
        // Older entries are evicted before any known one, and each costs at least the overhead:
        // if a known one went, or one more entry would not fit, no older entry is left.
        if within && (self.entries.len() < before || self.size + ENTRY_OVERHEAD > self.max) {
            self.complete = true;
        }
        within
    }

    /// Looks up dynamic index `index` (1 = newest).
    pub fn get(&self, index: usize) -> Lookup<'_> {
        match index.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(entry) => Lookup::Entry {
                name: entry.name_len.map(|n| &entry.bytes[..n]),
                value: &entry.bytes[entry.name_len.unwrap_or(0)..],
            },
            None if self.complete => Lookup::Invalid,
            None => Lookup::Unknown,
        }
    }

    /// Inserts a field (RFC 7541 §4.4); `name` is `None` when it is unknown.
    pub fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let name_len = name.map(<[u8]>::len);
        let mut bytes = Vec::with_capacity(name_len.unwrap_or(0) + value.len());
        bytes.extend_from_slice(name.unwrap_or_default());
        bytes.extend_from_slice(value);
        let entry = Entry {
            bytes: bytes.into_boxed_slice(),
            name_len,
        };
        let size = entry.size();
        if size > self.max {
            // Larger than the table: the table empties (an unknown name only makes it larger).
            self.entries.clear();
            self.size = 0;
            // Truly empty only if the maximum is the encoder's.
            self.complete = self.max_known;
            return;
        }
        self.entries.push_front(entry);
        self.size += size;
        self.evict();
    }

    /// Drops the oldest entries until the table fits its maximum size.
    fn evict(&mut self) {
        while self.size > self.max {
            let Some(old) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= old.size();
            if !self.max_known {
                // Our maximum is a guess: the encoder may still hold this one.
                self.complete = false;
            }
        }
    }
}

/// Looks up index `index` (1-based) in the static table, then the dynamic one.
pub fn lookup(dynamic: &DynamicTable, index: usize) -> Lookup<'_> {
    match index {
        0 => Lookup::Invalid,
        1..=61 => {
            let (name, value) = STATIC[index - 1];
            Lookup::Entry {
                name: Some(name.as_bytes()),
                value: value.as_bytes(),
            }
        }
        _ => dynamic.get(index - STATIC.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(name: &'a str, value: &'a str) -> Lookup<'a> {
        Lookup::Entry {
            name: Some(name.as_bytes()),
            value: value.as_bytes(),
        }
    }

    #[test]
    fn static_entries() {
        let t = DynamicTable::new();
        assert_eq!(lookup(&t, 2), entry(":method", "GET"));
        assert_eq!(lookup(&t, 31), entry("content-type", ""));
        assert_eq!(lookup(&t, 61), entry("www-authenticate", ""));
        assert_eq!(lookup(&t, 0), Lookup::Invalid);
        assert_eq!(lookup(&t, 62), Lookup::Invalid, "empty and complete");
        let t = DynamicTable::without_history();
        assert_eq!(lookup(&t, 62), Lookup::Unknown);
    }

    #[test]
    fn newest_entry_is_index_62_and_eviction_drops_the_oldest() {
        let mut t = DynamicTable::new();
        t.size_update(100);
        t.insert(Some(b"a"), b"1"); // 34
        t.insert(Some(b"b"), b"2"); // 34
        assert_eq!(lookup(&t, 62), entry("b", "2"));
        assert_eq!(lookup(&t, 63), entry("a", "1"));
        t.insert(Some(b"c"), b"3"); // 102 > 100: "a" goes
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(lookup(&t, 63), entry("b", "2"));
        assert_eq!(lookup(&t, 64), Lookup::Invalid);
        // Larger than the whole table: empties it.
        t.insert(Some(&[b'x'; 80]), b"");
        assert_eq!((t.len(), t.size()), (0, 0));
        assert!(t.is_complete());
    }

    #[test]
    fn entries_seen_after_a_loss_keep_their_indices() {
        let mut t = DynamicTable::new();
        t.insert(Some(b"old"), b"x");
        t.lose_history();
        assert_eq!(lookup(&t, 62), Lookup::Unknown);
        t.insert(Some(b"new"), b"y");
        assert_eq!(lookup(&t, 62), entry("new", "y"));
        assert_eq!(lookup(&t, 63), Lookup::Unknown);
        // An entry whose name is unknown still takes an index.
        t.insert(None, b"z");
        assert_eq!(
            lookup(&t, 62),
            Lookup::Entry {
                name: None,
                value: b"z"
            }
        );
        assert_eq!(lookup(&t, 63), entry("new", "y"));
    }

    #[test]
    fn a_size_update_that_leaves_no_room_completes_the_table() {
        let mut t = DynamicTable::without_history();
        t.insert(Some(b"k"), b"v"); // 34
        // Room for another entry: older entries may remain.
        assert!(t.size_update(200));
        assert!(!t.is_complete());
        assert_eq!(lookup(&t, 63), Lookup::Unknown);
        // 34 + 32 > 60: nothing older fits beside the known entry.
        assert!(t.size_update(60));
        assert!(t.is_complete());
        assert_eq!(lookup(&t, 62), entry("k", "v"));
        assert_eq!(lookup(&t, 63), Lookup::Invalid);
        // Size 0: empty and complete.
        let mut t = DynamicTable::without_history();
        assert!(t.size_update(0));
        assert!(t.is_complete() && t.is_empty());
    }

    #[test]
    fn evictions_under_an_assumed_size_make_the_table_incomplete() {
        let mut t = DynamicTable::new();
        t.size_update(0);
        t.insert(Some(b"a"), b"1");
        t.lose_history();
        assert_eq!(
            t.max_size(),
            DEFAULT_SIZE,
            "a missed size update may have grown it"
        );
        t.set_limit(100);
        t.size_update(100);
        t.insert(Some(b"b"), b"2");
        t.insert(Some(b"c"), b"3");
        t.lose_history();
        t.insert(Some(b"d"), b"4");
        t.insert(Some(b"e"), b"5");
        // Evicting under a guessed maximum: the encoder may still hold "d".
        t.set_limit(40);
        assert_eq!(lookup(&t, 62), entry("e", "5"));
        assert_eq!(lookup(&t, 63), Lookup::Unknown);
    }

    #[test]
    fn sizes_are_bounded_by_the_limit_and_the_cap() {
        let mut t = DynamicTable::new();
        assert!(
            !t.size_update(DEFAULT_SIZE as u64 + 1),
            "above the announced limit"
        );
        assert_eq!(t.max_size(), DEFAULT_SIZE);
        t.set_limit(u32::MAX);
        assert!(t.size_update(MAX_SIZE as u64));
        assert!(!t.size_update(u64::from(u32::MAX)));
        assert_eq!(t.max_size(), MAX_SIZE);
        let mut t = DynamicTable::new();
        t.set_limit(100);
        assert_eq!(t.max_size(), 100);
    }
}
