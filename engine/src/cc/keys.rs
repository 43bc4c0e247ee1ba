//! The resident keys of a node that runs a baseline concurrency control: each key's
//! current value next to its lock word, at an address that never changes.
//!
//! The lease protocol keeps values in `storage::slots`, where the task precedence graph
//! makes lock-free access sound. The baselines let transactions run at the same time on
//! any key, so their records differ in two ways: the lock word (and, for 2PL, the oldest
//! reader word) is what orders them, and the value can be read while another thread
//! installs a new one (OCC reads without locks), so it is a shared pointer behind a
//! latch instead of a plain buffer. Executors never run plugins on these values directly:
//! they copy them into private slots first (see `cc::Attempt`).
//!
//! The latch is held only to clone or replace the pointer (a few nanoseconds, never
//! while waiting for anything); it stands for the atomicity of a one-sided READ or
//! WRITE of a slot, while the lock word carries the protocol. (`arc-swap` would avoid
//! the latch; open reports of its guards observing freed memory under load, arc-swap
//! issue #210, made a plain latch the safer choice for values that change on every
//! transaction.)
//!
//! Only the dispatcher inserts keys (one thread, no index lock); executors and the
//! sequencer reach records through [`RecordPointer`]s resolved by the dispatcher, and
//! keep the [`RecordArena`] alive by holding an `Arc` of it.

use crate::storage::key_index::{Indexed, KeyIndex};
use parking_lot::Mutex;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Records per arena chunk; a chunk is allocated at its full capacity and never grows,
/// so records never move.
const RECORDS_PER_CHUNK: usize = 4096;

/// One resident key.
pub(crate) struct KeyRecord {
    storage_key: Box<[u8]>,
    value: Mutex<Option<Arc<Vec<u8>>>>,
    /// 2PL: the lock word (`twopl::LockState`). OCC: the lock bit and the version.
    pub(crate) lock_word: AtomicU64,
    /// 2PL: a lower bound of the timestamps of the transactions that hold the key shared
    /// (`u64::MAX` when none did since the bound was last reset). Unused by OCC.
    pub(crate) oldest_reader: AtomicU64,
}

impl KeyRecord {
    fn new(storage_key: &[u8], value: Option<Vec<u8>>) -> KeyRecord {
        KeyRecord {
            storage_key: storage_key.into(),
            value: Mutex::new(value.map(Arc::new)),
            lock_word: AtomicU64::new(0),
            oldest_reader: AtomicU64::new(u64::MAX),
        }
    }

    /// The RocksDB key (table id and key) of this record.
    pub(crate) fn storage_key(&self) -> &[u8] {
        &self.storage_key
    }

    /// The current value. Always a whole value (never torn); whether it is the one a
    /// transaction may use is for the protocol to decide (a lock held, or the version
    /// checked around the load).
    pub(crate) fn load_value(&self) -> Option<Arc<Vec<u8>>> {
        self.value.lock().clone()
    }

    /// Installs a new value (`None` deletes the key). The protocol must hold the key
    /// exclusively.
    pub(crate) fn store_value(&self, value: Option<&[u8]>) {
        let new = value.map(|bytes| Arc::new(bytes.to_vec()));
        // The old value is dropped after the latch is released.
        let _old = std::mem::replace(&mut *self.value.lock(), new);
    }
}

/// Where records live: chunks that are allocated whole and never grow.
#[derive(Default)]
pub(crate) struct RecordArena {
    chunks: Mutex<Vec<Vec<KeyRecord>>>,
}

impl RecordArena {
    fn allocate(&self, storage_key: &[u8], value: Option<Vec<u8>>) -> RecordPointer {
        // Only the dispatcher allocates, so this lock is never contended.
        let mut chunks = self.chunks.lock();
        if chunks.last().is_none_or(|chunk| chunk.len() == RECORDS_PER_CHUNK) {
            chunks.push(Vec::with_capacity(RECORDS_PER_CHUNK));
        }
        let chunk = chunks.last_mut().expect("a chunk was just ensured");
        chunk.push(KeyRecord::new(storage_key, value));
        // The chunk never grows past its capacity, so this address is stable.
        RecordPointer(NonNull::from(chunk.last().expect("just pushed")))
    }
}

/// A pointer to a record that stays valid as long as its [`RecordArena`] lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RecordPointer(NonNull<KeyRecord>);

// SAFETY: records are `Sync` (atomics and an atomically swapped value) and never move or
// die while their arena lives.
unsafe impl Send for RecordPointer {}
unsafe impl Sync for RecordPointer {}

impl RecordPointer {
    /// # Safety
    /// The arena that allocated the record must still be alive (the caller holds an
    /// `Arc` of it).
    pub(crate) unsafe fn get<'a>(self) -> &'a KeyRecord {
        self.0.as_ref()
    }
}

impl Indexed for RecordPointer {
    unsafe fn storage_key<'a>(self) -> &'a [u8] {
        // SAFETY: as the trait requires, the record is alive (its arena outlives the
        // index that holds this pointer); a record's key never changes.
        unsafe { self.get().storage_key() }
    }
}

/// The dispatcher's index of resident keys (the lease protocol's index, so that the
/// protocols' comparisons measure the protocols).
pub(crate) struct ResidentKeys {
    arena: Arc<RecordArena>,
    index: KeyIndex<RecordPointer>,
}

impl ResidentKeys {
    pub(crate) fn new() -> ResidentKeys {
        ResidentKeys { arena: Arc::default(), index: KeyIndex::default() }
    }

    /// The arena, for the threads that use the records.
    pub(crate) fn arena(&self) -> Arc<RecordArena> {
        self.arena.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn lookup(&self, storage_key: &[u8]) -> Option<RecordPointer> {
        self.index.get(storage_key)
    }

    /// Looks up many keys at once (appended to `found`, in order); see `KeyIndex`.
    pub(crate) fn lookup_many<'k>(
        &self,
        storage_keys: impl ExactSizeIterator<Item = &'k [u8]> + Clone,
        found: &mut Vec<Option<RecordPointer>>,
    ) {
        self.index.lookup_many(storage_keys, found)
    }

    /// Makes a key resident with its value loaded from storage.
    pub(crate) fn insert(&mut self, storage_key: &[u8], value: Option<Vec<u8>>) -> RecordPointer {
        assert!(self.lookup(storage_key).is_none(), "key inserted twice into the resident keys");
        let pointer = self.arena.allocate(storage_key, value);
        self.index.insert(storage_key, pointer);
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_address_and_value_across_growth() {
        let mut keys = ResidentKeys::new();
        let first = keys.insert(b"k0", Some(b"v0".to_vec()));
        for i in 1..2 * RECORDS_PER_CHUNK + 1 {
            keys.insert(format!("k{i}").as_bytes(), None);
        }
        assert_eq!(keys.lookup(b"k0"), Some(first));
        assert_eq!(keys.len(), 2 * RECORDS_PER_CHUNK + 1);
        // SAFETY: `keys` (and so the arena) is alive.
        let record = unsafe { first.get() };
        assert_eq!(record.storage_key(), b"k0");
        assert_eq!(record.load_value().as_deref().map(Vec::as_slice), Some(&b"v0"[..]));
        record.store_value(None);
        assert_eq!(record.load_value(), None);
    }
}
