//! A transaction's declared access set: which keys of which tables it reads or writes.
//!
//! Planned by the plugin from the arguments before the transaction is sequenced. Entries
//! are sorted by (table, key) and unique, so lookups during execution are a binary search
//! and a key declared both for reading and writing counts as written.

use std::cmp::Ordering;

/// How a transaction uses a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessMode {
    Read,
    /// A write may also read.
    Write,
}

/// One declared key. The key bytes live in the owning [`AccessSet`]'s buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    /// Index of the table among the plugin's declared tables.
    pub table: u32,
    key_start: u32,
    key_len: u32,
    pub mode: AccessMode,
}

/// The declared keys of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessSet {
    keys: Vec<u8>,
    entries: Vec<AccessEntry>,
}

impl AccessSet {
    pub fn new() -> AccessSet {
        AccessSet::default()
    }

    /// Adds a declaration; call [`AccessSet::finish`] after the last one.
    pub fn push(&mut self, table: u32, key: &[u8], mode: AccessMode) {
        let key_start = u32::try_from(self.keys.len()).expect("access set keys fit in 4 GiB");
        let key_len = u32::try_from(key.len()).expect("a key fits in 4 GiB");
        self.keys.extend_from_slice(key);
        self.entries.push(AccessEntry { table, key_start, key_len, mode });
    }

    /// Sorts the entries and merges duplicates (a write wins over a read).
    pub fn finish(&mut self) {
        let keys = &self.keys;
        let key_of = |entry: &AccessEntry| &keys[entry.key_start as usize..(entry.key_start + entry.key_len) as usize];
        self.entries.sort_by(|a, b| a.table.cmp(&b.table).then_with(|| key_of(a).cmp(key_of(b))));
        let mut merged: Vec<AccessEntry> = Vec::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            match merged.last_mut() {
                Some(last) if last.table == entry.table && key_of(last) == key_of(&entry) => {
                    last.mode = last.mode.max(entry.mode);
                }
                _ => merged.push(entry),
            }
        }
        self.entries = merged;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[AccessEntry] {
        &self.entries
    }

    /// The key bytes of an entry.
    pub fn key(&self, entry: &AccessEntry) -> &[u8] {
        &self.keys[entry.key_start as usize..(entry.key_start + entry.key_len) as usize]
    }

    /// The index of the entry for (`table`, `key`), if declared.
    pub fn find(&self, table: u32, key: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|entry| match entry.table.cmp(&table) {
                Ordering::Equal => self.key(entry).cmp(key),
                other => other,
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_merge_and_writes_win() {
        let mut set = AccessSet::new();
        set.push(1, b"b", AccessMode::Read);
        set.push(0, b"z", AccessMode::Read);
        set.push(1, b"a", AccessMode::Read);
        set.push(1, b"b", AccessMode::Write);
        set.push(1, b"a", AccessMode::Read);
        set.finish();
        let listed: Vec<(u32, Vec<u8>, AccessMode)> =
            set.entries().iter().map(|e| (e.table, set.key(e).to_vec(), e.mode)).collect();
        assert_eq!(
            listed,
            vec![
                (0, b"z".to_vec(), AccessMode::Read),
                (1, b"a".to_vec(), AccessMode::Read),
                (1, b"b".to_vec(), AccessMode::Write)
            ]
        );
        assert_eq!(set.find(1, b"b"), Some(2));
        assert_eq!(set.find(0, b"z"), Some(0));
        assert_eq!(set.find(0, b"b"), None);
        assert_eq!(set.find(2, b"a"), None);
    }
}
