//! The index from storage keys to resident slots, built for the epoch driver's batched
//! lookups.
//!
//! Why not a `HashMap<Box<[u8]>, _>`: the driver looks up every key of an epoch one after
//! another, and each lookup of such a map is a chain of dependent cache misses (the
//! control bytes, the bucket, then the boxed key to compare). With a hundred thousand keys
//! those misses go to memory, and they were a third of the driver's time. Here a key's
//! entry holds its full hash and the key's first bytes inline, so one cache line answers a
//! lookup of a short key, and [`KeyIndex::lookup_many`] prefetches the lines of the keys
//! ahead while it probes the current one, so the misses of many lookups overlap instead of
//! following each other.
//!
//! Layout: open addressing with linear probing over a power-of-two table kept at most half
//! full; removal shifts the entries behind back (no tombstones). A key longer than the
//! inline bytes is compared against the copy of the key its target keeps ([`Indexed`]).
//!
//! Two stores use it: the lease protocol's slots (`storage::slots`) and the baselines'
//! key records (`cc::keys`), so that comparisons between the protocols do not measure
//! two different indexes.

use std::hash::Hasher;

/// What an index entry leads to: copied out by every lookup, and holding the whole key it
/// was inserted under, for keys longer than the inline bytes.
pub(crate) trait Indexed: Copy {
    /// The storage key this target was inserted under.
    ///
    /// # Safety
    /// Called only while the index is borrowed; the caller promises the target is alive
    /// then (a store owns both its index and its targets, and replaces a target's key only
    /// while borrowed mutably).
    unsafe fn storage_key<'a>(self) -> &'a [u8];
}

/// Key bytes kept in the entry itself; storage keys are a 4-byte table id and the key, so
/// this covers keys of up to 20 bytes.
const INLINE_KEY_BYTES: usize = 24;

/// How many keys ahead [`KeyIndex::lookup_many`] prefetches.
const PREFETCH_DISTANCE: usize = 16;

#[derive(Clone, Copy)]
struct Entry<V> {
    /// The key's hash with the lowest bit set; 0 marks an empty entry.
    hash: u64,
    key_length: u32,
    target: Option<V>,
    /// The key's first bytes (all of it when it is short enough), zero-padded.
    inline: [u8; INLINE_KEY_BYTES],
}

impl<V: Indexed> Entry<V> {
    const EMPTY: Entry<V> = Entry { hash: 0, key_length: 0, target: None, inline: [0; INLINE_KEY_BYTES] };

    fn target(&self) -> V {
        self.target.expect("a full entry has a target")
    }

    fn matches(&self, hash: u64, key: &[u8]) -> bool {
        if self.hash != hash || self.key_length as usize != key.len() {
            return false;
        }
        if key.len() <= INLINE_KEY_BYTES {
            return self.inline[..key.len()] == *key;
        }
        // SAFETY: lookups borrow the index, during which its targets live (see `Indexed`).
        self.inline[..] == key[..INLINE_KEY_BYTES] && unsafe { self.target().storage_key() } == key
    }
}

pub(crate) struct KeyIndex<V> {
    entries: Box<[Entry<V>]>,
    len: usize,
    /// 64 minus the base-2 logarithm of the table's length: a hash's home is its top bits.
    shift: u32,
}

impl<V: Indexed> Default for KeyIndex<V> {
    fn default() -> KeyIndex<V> {
        KeyIndex::with_table_length(16)
    }
}

/// The hash of a storage key, never 0.
fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(key);
    // FxHash's high bits are weak for short inputs; a multiply by the golden ratio spreads
    // every input bit into them (Fibonacci hashing).
    hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Asks the CPU to bring the cache line at `data` in; a hint, never a fault.
#[inline(always)]
pub(crate) fn prefetch<T>(data: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address; SSE is part of
    // the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(data.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

impl<V: Indexed> KeyIndex<V> {
    fn with_table_length(length: usize) -> KeyIndex<V> {
        assert!(length.is_power_of_two() && length >= 2);
        KeyIndex { entries: vec![Entry::EMPTY; length].into_boxed_slice(), len: 0, shift: 64 - length.trailing_zeros() }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mut at = self.home(hash);
        loop {
            let entry = &self.entries[at];
            if entry.hash == 0 {
                return Err(at);
            }
            if entry.matches(hash, key) {
                return Ok(at);
            }
            at = (at + 1) & self.mask();
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<V> {
        Some(self.entries[self.find(hash_key(key), key).ok()?].target())
    }

    /// Looks up every key of `keys` (in order) into `found`, with the misses of many
    /// lookups in flight at once.
    pub fn lookup_many<'k>(&self, keys: impl ExactSizeIterator<Item = &'k [u8]> + Clone, found: &mut Vec<Option<V>>) {
        let hashes: Vec<u64> = keys.clone().map(hash_key).collect();
        for &hash in hashes.iter().take(PREFETCH_DISTANCE) {
            prefetch(&self.entries[self.home(hash)]);
        }
        found.reserve(hashes.len());
        for (position, key) in keys.enumerate() {
            if let Some(&ahead) = hashes.get(position + PREFETCH_DISTANCE) {
                prefetch(&self.entries[self.home(ahead)]);
            }
            found.push(self.find(hashes[position], key).ok().map(|at| self.entries[at].target()));
        }
    }

    /// Adds a key that is not in the index.
    pub fn insert(&mut self, key: &[u8], target: V) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        let hash = hash_key(key);
        let at = match self.find(hash, key) {
            Ok(_) => panic!("a key inserted twice into the key index"),
            Err(at) => at,
        };
        let mut inline = [0; INLINE_KEY_BYTES];
        let prefix = key.len().min(INLINE_KEY_BYTES);
        inline[..prefix].copy_from_slice(&key[..prefix]);
        let key_length = u32::try_from(key.len()).expect("a storage key shorter than 4 GiB");
        self.entries[at] = Entry { hash, key_length, target: Some(target), inline };
        self.len += 1;
    }

    /// Removes a key; returns what it pointed to.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let mut hole = self.find(hash_key(key), key).ok()?;
        let removed = self.entries[hole];
        // Backward shift: every entry after the hole, up to the next empty one, moves into
        // the hole if the hole lies between its home and where it sits now, so that every
        // probe sequence stays unbroken.
        let mut at = (hole + 1) & self.mask();
        while self.entries[at].hash != 0 {
            let home = self.home(self.entries[at].hash);
            let distance_from_home = at.wrapping_sub(home) & self.mask();
            let distance_to_hole = at.wrapping_sub(hole) & self.mask();
            if distance_from_home >= distance_to_hole {
                self.entries[hole] = self.entries[at];
                hole = at;
            }
            at = (at + 1) & self.mask();
        }
        self.entries[hole] = Entry::EMPTY;
        self.len -= 1;
        Some(removed.target())
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, KeyIndex::with_table_length(self.entries.len() * 2));
        for entry in old.entries.iter().filter(|entry| entry.hash != 0) {
            let at = self.find_empty(entry.hash);
            self.entries[at] = *entry;
            self.len += 1;
        }
    }

    /// Where an entry of `hash` that is known to be absent goes.
    fn find_empty(&self, hash: u64) -> usize {
        let mut at = self.home(hash);
        while self.entries[at].hash != 0 {
            at = (at + 1) & self.mask();
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::slots::{Slot, SlotPointer};
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Operation {
        Insert(Vec<u8>),
        Remove(Vec<u8>),
        Lookup(Vec<Vec<u8>>),
    }

    /// Keys from a small alphabet and of lengths around the inline limit, so that
    /// collisions of home positions, long keys and shared prefixes all occur.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(0u8..4, 0..4),
            proptest::collection::vec(0u8..2, INLINE_KEY_BYTES - 1..INLINE_KEY_BYTES + 3),
        ]
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            3 => key().prop_map(Operation::Insert),
            2 => key().prop_map(Operation::Remove),
            1 => proptest::collection::vec(key(), 0..40).prop_map(Operation::Lookup),
        ]
    }

    proptest! {
        /// The index answers as a `HashMap` does, through growth and backward shifts.
        #[test]
        fn answers_as_a_hash_map(operations in proptest::collection::vec(operation(), 1..300)) {
            // Slots that own the keys, for the comparison of long keys (boxed: they
            // must not move).
            let mut slots: Vec<Box<Slot>> = Vec::new();
            let mut index: KeyIndex<(u32, SlotPointer)> = KeyIndex::default();
            let mut reference: HashMap<Vec<u8>, (u32, SlotPointer)> = HashMap::new();
            for (number, operation) in operations.into_iter().enumerate() {
                match operation {
                    Operation::Insert(key) => {
                        if reference.contains_key(&key) {
                            continue;
                        }
                        slots.push(Box::new(Slot::detached(&key, None)));
                        let pointer = SlotPointer::to(slots.last().expect("just pushed"));
                        index.insert(&key, (number as u32, pointer));
                        reference.insert(key, (number as u32, pointer));
                    }
                    Operation::Remove(key) => {
                        prop_assert_eq!(index.remove(&key), reference.remove(&key));
                    }
                    Operation::Lookup(keys) => {
                        let mut found = Vec::new();
                        index.lookup_many(keys.iter().map(Vec::as_slice), &mut found);
                        let expected: Vec<_> = keys.iter().map(|key| reference.get(key).copied()).collect();
                        prop_assert_eq!(found, expected);
                    }
                }
                prop_assert_eq!(index.len(), reference.len());
                for (key, value) in &reference {
                    prop_assert_eq!(index.get(key), Some(*value));
                }
            }
        }
    }
}
