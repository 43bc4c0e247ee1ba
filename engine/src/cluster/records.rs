//! Where keys live under the baselines of a cluster (`cc = "2pl" | "occ"`): each node
//! holds its keys as record slots (`cc::fabric_records`) in one registered fabric region,
//! and the other nodes reach them there one-sidedly.
//!
//! * [`RecordRegion`] is this node's region for one view: the slot of each resident key
//!   (assigned on first use, loaded from storage, never moved or reused within the view)
//!   and the key of each slot, so that the writes peers report by slot number map back to
//!   storage keys.
//! * [`PeerRecords`] is what this node knows of one peer's region in the view: a handle
//!   on it and the slot numbers the peer gave out (`Frame::Resolve`/`Resolved`).
//!
//! Every view gets a fresh region under a region id derived from its generation, and the
//! old one is withdrawn: an execution of an abandoned view that still runs somewhere
//! writes into memory nobody reads any more, and every lock it held is gone with it.

use crate::cc::fabric_records::{RecordError, RecordSlot, FIRST_KEY_SLOT, RECORD_BYTES, VALUE_BYTES_MAX};
use crate::model::NodeId;
use crate::storage::{Storage, StorageError};
use leasehold_fabric::{Fabric, FabricError, LocalRegion, RegionId, RemoteRegion};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// The number of record slots of a node's region: keys of one view held at one node.
/// Pages are touched only as slots are used.
pub const RECORD_SLOTS: u64 = 1 << 20;

/// The slot number a holder answers for a key it cannot hold in a record slot.
pub const NO_SLOT: u64 = u64::MAX;

/// Why keys could not be given record slots.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Fabric(#[from] FabricError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The region id of the record region of the view with `generation` (never an inbound
/// ring's id, whose top bit is set).
pub fn region_id(generation: u64) -> RegionId {
    RegionId(1 + (generation % (1 << 30)) as u32)
}

/// This node's record region in one view.
pub struct RecordRegion {
    id: RegionId,
    local: Arc<LocalRegion>,
    slots: FxHashMap<Vec<u8>, u64>,
    keys: Vec<Vec<u8>>,
}

impl RecordRegion {
    /// Registers the region of the view with `generation`, withdrawing `previous`.
    pub fn register(
        fabric: &dyn Fabric,
        generation: u64,
        previous: Option<RecordRegion>,
    ) -> Result<RecordRegion, RecordsError> {
        let id = region_id(generation);
        if let Some(previous) = previous {
            fabric.deregister_region(previous.id)?;
        }
        let local = fabric.register_region(id, RECORD_SLOTS * RECORD_BYTES)?;
        Ok(RecordRegion { id, local, slots: FxHashMap::default(), keys: Vec::new() })
    }

    /// The region as the protocols address it.
    pub fn view(&self) -> &dyn RemoteRegion {
        self.local.as_ref()
    }

    /// A handle the executors share.
    pub fn handle(&self) -> Arc<dyn RemoteRegion> {
        self.local.clone()
    }

    /// The storage key of slot `index`, if it was given out in this view.
    pub fn key_of(&self, index: u64) -> Option<&[u8]> {
        let position = index.checked_sub(FIRST_KEY_SLOT)?;
        self.keys.get(usize::try_from(position).ok()?).map(Vec::as_slice)
    }

    pub fn resident_keys(&self) -> usize {
        self.keys.len()
    }

    /// The slot of each key, loading the keys not resident yet from storage in one
    /// batched read. A key whose value does not fit a slot, or that finds the region
    /// full, gets [`NO_SLOT`]; its transactions are refused.
    pub fn resolve<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
        storage: &Storage,
    ) -> Result<Vec<u64>, RecordsError> {
        let mut missing: Vec<&[u8]> = keys.clone().filter(|key| !self.slots.contains_key(*key)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let values = storage.read_values(&missing)?;
            for (key, value) in missing.into_iter().zip(values) {
                let fits = value.as_ref().is_none_or(|value| value.len() <= VALUE_BYTES_MAX);
                let index = FIRST_KEY_SLOT + self.keys.len() as u64;
                if !fits || index >= RECORD_SLOTS {
                    continue;
                }
                RecordSlot::at(self.local.as_ref(), index)?.initialize(value.as_deref())?;
                self.keys.push(key.to_vec());
                self.slots.insert(key.to_vec(), index);
            }
        }
        Ok(keys.map(|key| self.slots.get(key).copied().unwrap_or(NO_SLOT)).collect())
    }
}

/// What this node knows of one peer's record region in the current view.
pub struct PeerRecords {
    pub region: Arc<dyn RemoteRegion>,
    pub slots: FxHashMap<Vec<u8>, u64>,
}

impl PeerRecords {
    /// Opens `peer`'s region of the view with `generation` (the peer registered it
    /// before it answered any `Resolve` of that view).
    pub fn open(fabric: &dyn Fabric, peer: NodeId, generation: u64) -> Result<PeerRecords, FabricError> {
        Ok(PeerRecords { region: fabric.open_remote(peer, region_id(generation))?, slots: FxHashMap::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EpochRecord;
    use leasehold_fabric::shm::ShmFabric;

    /// Slots are given out once per key, from 1 (slot 0 holds no key), loaded with the
    /// stored value; a value no slot can hold gets no slot; a slot number maps back to
    /// its key; a new view's region starts empty.
    #[test]
    fn keys_get_slots_once_loaded_from_storage_and_map_back() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let storage = Storage::open(&directory.path().join("db")).expect("open storage");
        let mut record = EpochRecord::new(1);
        record.stage_value(b"small", Some(b"value"));
        record.stage_value(b"large", Some(&[7u8; VALUE_BYTES_MAX + 1]));
        storage.checkpoint(&[record]).expect("store the keys");
        let fabric = ShmFabric::open(directory.path().join("shm"), 0).expect("open shm");

        let mut region = RecordRegion::register(fabric.as_ref(), 4, None).expect("register");
        let keys: [&[u8]; 4] = [b"small", b"large", b"absent", b"small"];
        let slots = region.resolve(keys.iter().copied(), &storage).expect("resolve");
        assert_eq!(slots[1], NO_SLOT, "a value larger than a slot gets none");
        let mut given = [slots[0], slots[2]];
        given.sort_unstable();
        assert_eq!(given, [FIRST_KEY_SLOT, FIRST_KEY_SLOT + 1], "slots are given out from 1, densely");
        assert_eq!(slots[3], slots[0], "a key has one slot");
        assert_eq!(region.resident_keys(), 2);
        assert_eq!(region.key_of(0), None, "slot 0 holds no key");
        assert_eq!(region.key_of(slots[0]), Some(&b"small"[..]));
        assert_eq!(region.key_of(slots[2]), Some(&b"absent"[..]));
        assert_eq!(region.key_of(FIRST_KEY_SLOT + 2), None);
        let read = |index| RecordSlot::at(region.view(), index).and_then(|slot| slot.read_locked()).expect("read");
        assert_eq!(read(slots[0]), (Some(b"value".to_vec()), 0));
        assert_eq!(read(slots[2]), (None, 0));
        // Resolving again reads nothing new and gives the same slots.
        assert_eq!(region.resolve(keys.iter().copied(), &storage).expect("resolve"), slots);

        let region = RecordRegion::register(fabric.as_ref(), 5, Some(region)).expect("the next view's region");
        assert_eq!(region.resident_keys(), 0);
        assert!(fabric.open_remote(0, region_id(4)).is_err(), "the old view's region is withdrawn");
    }
}
