//! The in-memory slots of the keys a node holds.
//!
//! Every key a transaction touches is made resident before its epoch executes: the epoch
//! driver looks it up here and loads misses from RocksDB. A slot's address never changes
//! once created (slots live in fixed-capacity chunks that are never reallocated), so the
//! executors can work through plain pointers resolved during planning, without touching
//! the index or taking locks.
//!
//! Keys stay resident until the node stops; eviction of cold keys is future work (the
//! workloads' key spaces fit in memory by far).

use super::key_index::{Indexed, KeyIndex};
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SLOTS_PER_CHUNK: usize = 4096;

/// One key's current value.
///
/// Concurrency: the value is read and written by executor threads without locks. This is
/// sound because the task precedence graph orders every pair of transactions that
/// conflict on a key, and the executor only starts a transaction after all its
/// predecessors finished (the happens-before edge is the atomic in-degree decrement). Only
/// the epoch driver touches slots outside execution.
pub struct Slot {
    /// Replaced only when the store reuses the slot for another key (between epochs).
    storage_key: UnsafeCell<Box<[u8]>>,
    value: UnsafeCell<Option<Vec<u8>>>,
    dirty_epoch: AtomicU64,
    /// In a cluster: the lease word (`cluster::lease::LeaseWord`) of the key; unused by a
    /// single node.
    lease_word: AtomicU64,
    /// Set when an abandoned plugin call may still hold a slice of the value: the next
    /// `set` then leaks the buffer instead of reusing or freeing it (see
    /// [`Slot::pin_value_buffer`]).
    value_pinned: AtomicBool,
}

// SAFETY: see the concurrency note on `Slot`.
unsafe impl Sync for Slot {}

impl Slot {
    /// A slot outside any store: a node's private copy of a key it borrowed from its
    /// holder for one transaction.
    pub fn detached(storage_key: &[u8], value: Option<Vec<u8>>) -> Slot {
        Slot {
            storage_key: UnsafeCell::new(storage_key.into()),
            value: UnsafeCell::new(value),
            dirty_epoch: AtomicU64::new(0),
            lease_word: AtomicU64::new(0),
            value_pinned: AtomicBool::new(false),
        }
    }

    /// The key's lease word.
    pub fn lease_word(&self) -> &AtomicU64 {
        &self.lease_word
    }

    /// The RocksDB key (table id and key) of this slot.
    pub fn storage_key(&self) -> &[u8] {
        // SAFETY: the key changes only in `SlotStore::insert` reusing a removed slot, which
        // takes the store mutably between epochs, when no reference into a slot is alive.
        unsafe { &*self.storage_key.get() }
    }

    /// The current value.
    ///
    /// # Safety
    /// The caller must hold the key in the task precedence graph sense (no conflicting
    /// transaction runs concurrently), and the returned slice must not outlive the next
    /// `set` of this slot.
    pub unsafe fn value(&self) -> Option<&[u8]> {
        (*self.value.get()).as_deref()
    }

    /// Replaces the value (`None` deletes the key), reusing the old buffer when possible.
    ///
    /// # Safety
    /// As for [`Slot::value`], and no reference returned by `value` may be alive.
    pub unsafe fn set(&self, value: Option<&[u8]>) {
        let current = &mut *self.value.get();
        if self.value_pinned.load(Ordering::Relaxed) {
            self.value_pinned.store(false, Ordering::Relaxed);
            // An abandoned call may still read the old buffer: it must stay allocated and
            // unchanged forever. A few bytes per abandoned call are leaked, by design.
            if let Some(buffer) = current.take() {
                std::mem::forget(buffer);
            }
        }
        match (current.as_mut(), value) {
            (Some(buffer), Some(value)) => {
                buffer.clear();
                buffer.extend_from_slice(value);
            }
            (None, Some(value)) => *current = Some(value.to_vec()),
            (_, None) => *current = None,
        }
    }

    /// Keeps the current value's buffer alive and unchanged for good: the next `set` leaks
    /// it instead of reusing or freeing it. Called for every key of a transaction whose
    /// plugin call was abandoned while it may still hold slices of their values.
    ///
    /// # Safety
    /// As for [`Slot::set`]: the caller holds the key (the transaction it abandons does,
    /// and its successors wait for the abandonment). Concurrent readers of the key are
    /// fine: the flag is only read by `set`, which no reader runs.
    pub unsafe fn pin_value_buffer(&self) {
        self.value_pinned.store(true, Ordering::Relaxed);
    }

    /// Asks the CPU to bring the value's buffer into cache (the slot itself must be read
    /// for that, so prefetch the slots first: see [`SlotStore::prefetch_values`]).
    ///
    /// # Safety
    /// As for [`Slot::value`]: no `set` of this slot runs meanwhile.
    unsafe fn prefetch_value(&self) {
        if let Some(value) = &*self.value.get() {
            super::key_index::prefetch(value.as_ptr());
        }
    }

    /// Marks the slot as changed in `epoch`; true the first time per epoch, so the commit
    /// stages each changed key once.
    pub fn mark_dirty(&self, epoch: u64) -> bool {
        self.dirty_epoch.swap(epoch, Ordering::Relaxed) != epoch
    }
}

/// A pointer to a slot that stays valid as long as its [`SlotStore`] lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPointer(NonNull<Slot>);

// SAFETY: slots are `Sync` and never move or die while the store lives.
unsafe impl Send for SlotPointer {}
unsafe impl Sync for SlotPointer {}

impl SlotPointer {
    /// A pointer to a slot the caller keeps alive (and in place) for as long as the
    /// pointer is used.
    pub fn to(slot: &Slot) -> SlotPointer {
        SlotPointer(NonNull::from(slot))
    }

    /// # Safety
    /// The store that created the slot must still be alive.
    pub unsafe fn get<'a>(self) -> &'a Slot {
        self.0.as_ref()
    }
}

impl Indexed for (u32, SlotPointer) {
    unsafe fn storage_key<'a>(self) -> &'a [u8] {
        // SAFETY: as the trait requires, the slot is alive; its key changes only while the
        // store is borrowed mutably.
        unsafe { self.1.get().storage_key() }
    }
}

/// Resident keys: storage key to slot.
#[derive(Default)]
pub struct SlotStore {
    index: KeyIndex<(u32, SlotPointer)>,
    chunks: Vec<Vec<Slot>>,
    /// Slots of removed keys, reused by the next inserts.
    free: Vec<(u32, SlotPointer)>,
}

impl SlotStore {
    pub fn new() -> SlotStore {
        SlotStore::default()
    }

    /// Number of resident keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// The dense number and pointer of a resident key.
    pub fn lookup(&self, storage_key: &[u8]) -> Option<(u32, SlotPointer)> {
        self.index.get(storage_key)
    }

    /// Looks up many keys at once (appended to `found`, in order), faster than one by one:
    /// see [`KeyIndex`].
    pub fn lookup_many<'k>(
        &self,
        storage_keys: impl ExactSizeIterator<Item = &'k [u8]> + Clone,
        found: &mut Vec<Option<(u32, SlotPointer)>>,
    ) {
        self.index.lookup_many(storage_keys, found)
    }

    /// Brings the slots and then their values' buffers into cache ahead of execution, the
    /// misses of all of them overlapping; without it each executor's first read of a value
    /// waited for memory twice, one transaction after the other.
    ///
    /// # Safety
    /// Between epochs (the driver, before it hands the slots to the executors): no `set`
    /// of these slots runs meanwhile.
    pub unsafe fn prefetch_values(pointers: impl Iterator<Item = SlotPointer> + Clone) {
        for pointer in pointers.clone() {
            super::key_index::prefetch(pointer.0.as_ptr());
        }
        for pointer in pointers {
            pointer.get().prefetch_value();
        }
    }

    /// Makes a key resident with its value loaded from storage.
    pub fn insert(&mut self, storage_key: &[u8], value: Option<Vec<u8>>) -> (u32, SlotPointer) {
        assert!(self.lookup(storage_key).is_none(), "key inserted twice into the slot store");
        if let Some((number, pointer)) = self.free.pop() {
            // SAFETY: a removed slot is referenced by nobody (pointers are resolved per
            // epoch, and the store is borrowed mutably here, between epochs).
            let slot = unsafe { pointer.get() };
            unsafe {
                *slot.storage_key.get() = storage_key.into();
                *slot.value.get() = value;
            }
            slot.dirty_epoch.store(0, Ordering::Relaxed);
            slot.lease_word.store(0, Ordering::Relaxed);
            self.index.insert(storage_key, (number, pointer));
            return (number, pointer);
        }
        if self.chunks.last().is_none_or(|chunk| chunk.len() == SLOTS_PER_CHUNK) {
            self.chunks.push(Vec::with_capacity(SLOTS_PER_CHUNK));
        }
        let chunk = self.chunks.last_mut().expect("a chunk was just ensured");
        chunk.push(Slot::detached(storage_key, value));
        // The chunk never grows past its capacity, so this address is stable.
        let pointer = SlotPointer(NonNull::from(chunk.last().expect("just pushed")));
        let number = u32::try_from(self.index.len() + self.free.len()).expect("fewer than 2^32 resident keys");
        self.index.insert(storage_key, (number, pointer));
        (number, pointer)
    }
}

impl SlotStore {
    /// Makes a key non-resident; its slot is reused by a later insert. Only between
    /// epochs: no pointer to the slot may be in use, and the key's newest value must be
    /// in the tables already (a later load reads it from there).
    pub fn remove(&mut self, storage_key: &[u8]) -> bool {
        let Some((number, pointer)) = self.index.remove(storage_key) else { return false };
        // SAFETY: as the method says, nobody uses the slot.
        unsafe { pointer.get().set(None) };
        self.free.push((number, pointer));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_address_and_value_across_growth() {
        let mut store = SlotStore::new();
        let (first_number, first) = store.insert(b"k0", Some(b"v0".to_vec()));
        for i in 1..3 * SLOTS_PER_CHUNK {
            store.insert(format!("k{i}").as_bytes(), None);
        }
        assert_eq!(store.lookup(b"k0"), Some((first_number, first)));
        // SAFETY: single-threaded test, store alive.
        unsafe {
            assert_eq!(first.get().value(), Some(&b"v0"[..]));
            first.get().set(Some(b"new"));
            assert_eq!(
                store.lookup(b"k0").map(|(_, p)| p.get().value().map(<[u8]>::to_vec)),
                Some(Some(b"new".to_vec()))
            );
            first.get().set(None);
            assert_eq!(first.get().value(), None);
        }
        assert_eq!(store.len(), 3 * SLOTS_PER_CHUNK);
    }

    #[test]
    fn a_removed_slot_is_reused_for_another_key() {
        let mut store = SlotStore::new();
        let (number, pointer) = store.insert(b"request-1", Some(b"outcome".to_vec()));
        store.insert(b"account", Some(b"10".to_vec()));
        assert!(store.remove(b"request-1"));
        assert!(!store.remove(b"request-1"), "already gone");
        assert_eq!(store.lookup(b"request-1"), None);
        assert_eq!(store.len(), 1);
        let (reused_number, reused) = store.insert(b"request-2", None);
        assert_eq!((reused_number, reused), (number, pointer), "the freed slot is reused");
        // SAFETY: single-threaded test, store alive.
        unsafe {
            assert_eq!(reused.get().storage_key(), b"request-2");
            assert_eq!(reused.get().value(), None);
        }
        let (fresh_number, _) = store.insert(b"request-3", None);
        assert_eq!(fresh_number, 2, "numbers stay unique");
    }

    #[test]
    fn a_slot_is_dirty_once_per_epoch() {
        let mut store = SlotStore::new();
        let (_, slot) = store.insert(b"k", None);
        let slot = unsafe { slot.get() };
        assert!(slot.mark_dirty(5));
        assert!(!slot.mark_dirty(5));
        assert!(slot.mark_dirty(6));
    }
}
