//! Key records in registered fabric memory: the layout of a record slot, and the 2PL and
//! OCC operations on one, performed with one-sided fabric operations (DESIGN §5: the
//! baselines take lock words in the key's slot with CAS and fetch-add, and read and
//! write remote values one-sidedly).
//!
//! Every operation goes through a [`RemoteRegion`]: another node's region over the
//! fabric, or the owner's own [`leasehold_fabric::LocalRegion`] (which implements the
//! same trait on its atomics). So the owner and every other node run the same code on
//! the same bytes, and the lock word means the same to all of them. The 2PL protocol
//! itself is `twopl`'s, written once against [`LockWords`]; this module gives it the
//! words of a slot. OCC's validation rule is `occ::validate`, used as it is.
//!
//! This is the building block of the baselines across nodes; the single-node baselines
//! keep their records in `cc::keys`, where a lock operation is a CPU atomic.
//!
//! # A record slot
//!
//! [`RECORD_BYTES`] bytes at `index * RECORD_BYTES` of the region, 8-byte aligned:
//!
//! | offset | word                                                             |
//! |--------|------------------------------------------------------------------|
//! | 0      | lock word (2PL: `twopl::LockState`; OCC: lock bit and version)   |
//! | 8      | 2PL's oldest-reader bound (`u64::MAX`: none)                     |
//! | 16     | 2PL's write version: how many installs the key has had          |
//! | 24     | value length in bytes, or [`ABSENT`] when the key has no value    |
//! | 32     | value bytes, at most [`VALUE_BYTES_MAX`]                          |
//!
//! The write version orders the installs of one key: a cluster's holder learns the
//! writes other nodes made to its keys from their end-of-epoch frames, in any order,
//! and logs the one with the highest version (OCC's versions are its lock word's).
//!
//! Words are in the owner's byte order, as its atomics see them (READ and WRITE move
//! memory as it is); all nodes of a cluster share one architecture.
//!
//! # Consistency of a value read without a lock (OCC)
//!
//! A writer locks the word (CAS), WRITEs the value, then WRITEs the next version
//! without the lock bit; the fabric's memory model makes the value WRITE visible no
//! later than the version WRITE. A reader runs one ordered batch: READ the word, READ
//! the value, READ the word again. If both words are equal and unlocked, no install
//! overlapped the value READ (FaRM's consistent object read); otherwise it reads again.

use super::twopl::LockWords;
use super::Backoff;
use leasehold_fabric::{FabricError, Operation, RemoteRegion};
use std::sync::atomic::{AtomicBool, Ordering};

/// The size of one record slot.
pub(crate) const RECORD_BYTES: u64 = 256;
/// Where the value bytes start in a slot.
const VALUE_OFFSET: u64 = 32;
/// The largest value a slot holds.
pub(crate) const VALUE_BYTES_MAX: usize = (RECORD_BYTES - VALUE_OFFSET) as usize;
/// The length word of a key that has no value.
pub(crate) const ABSENT: u64 = u64::MAX;

const LOCK_WORD_OFFSET: u64 = 0;
const OLDEST_READER_OFFSET: u64 = 8;
const WRITE_VERSION_OFFSET: u64 = 16;
const LENGTH_OFFSET: u64 = 24;

/// Why an operation on a record slot failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Fabric(#[from] FabricError),
    #[error("a value of {length} bytes does not fit a record slot (at most {VALUE_BYTES_MAX})")]
    ValueTooLarge { length: usize },
    #[error("record slot {index} does not exist: the region has {slots}")]
    NoSuchSlot { index: u64, slots: u64 },
    #[error("record slot at offset {offset} holds a value length of {length}, more than a slot holds")]
    Corrupt { offset: u64, length: u64 },
    #[error("the operation was given up: the cluster view changed")]
    Cancelled,
}

/// The first slot index that holds a key: slot 0 of a region holds no key; its first word
/// is the cluster's commit counter in node 0's region (see [`take_commit_number`]).
pub(crate) const FIRST_KEY_SLOT: u64 = 1;

/// Takes the next commit number of `epoch` from the commit counter (the first word of
/// `region`, node 0's record region): the word holds the epoch in its high half and the
/// numbers taken in that epoch in its low half, so the first transaction of an epoch
/// starts it again at 1. A transaction takes its number while its protocol still orders
/// it against every conflicting one, so (epoch, number) is a serial order of the cluster.
pub(crate) fn take_commit_number(region: &dyn RemoteRegion, epoch: u64) -> Result<u32, RecordError> {
    let epoch_field = epoch & 0xffff_ffff;
    let mut seen = {
        let mut word = [0u8; 8];
        region.read(0, &mut word)?;
        u64::from_ne_bytes(word)
    };
    loop {
        let next = if seen >> 32 == epoch_field { seen + 1 } else { (epoch_field << 32) | 1 };
        assert_ne!(next & 0xffff_ffff, 0, "more than 2^32 commits in one epoch");
        match region.compare_and_swap(0, seen, next)? {
            previous if previous == seen => return Ok((next & 0xffff_ffff) as u32),
            previous => seen = previous,
        }
    }
}

/// One record slot of a region, addressed through a [`RemoteRegion`].
#[derive(Clone, Copy)]
pub(crate) struct RecordSlot<'a> {
    region: &'a dyn RemoteRegion,
    offset: u64,
}

impl<'a> RecordSlot<'a> {
    /// The slot number `index` of `region`. Indices come from other nodes, so one past
    /// the region's last slot is refused here, before any offset arithmetic.
    pub(crate) fn at(region: &'a dyn RemoteRegion, index: u64) -> Result<RecordSlot<'a>, RecordError> {
        let slots = region.size_bytes() / RECORD_BYTES;
        if index >= slots {
            return Err(RecordError::NoSuchSlot { index, slots });
        }
        Ok(RecordSlot { region, offset: index * RECORD_BYTES })
    }

    /// Makes the slot a free record of a key with `value` (the owner does this before the
    /// slot's index is given to anyone).
    pub(crate) fn initialize(&self, value: Option<&[u8]>) -> Result<(), RecordError> {
        let mut header = [0u8; 24];
        header[8..16].copy_from_slice(&u64::MAX.to_ne_bytes());
        self.region.write(self.offset + LOCK_WORD_OFFSET, &header)?;
        self.write_value(value)
    }

    fn read_word(&self, offset: u64) -> Result<u64, FabricError> {
        let mut word = [0u8; 8];
        self.region.read(self.offset + offset, &mut word)?;
        Ok(u64::from_ne_bytes(word))
    }

    /// The value. Under 2PL the caller holds the key (shared or exclusive); OCC reads
    /// with [`RecordSlot::read_consistent`] instead.
    #[cfg(test)]
    pub(crate) fn read_value(&self) -> Result<Option<Vec<u8>>, RecordError> {
        let mut bytes = [0u8; 8 + VALUE_BYTES_MAX];
        self.region.read(self.offset + LENGTH_OFFSET, &mut bytes)?;
        self.decode_value(&bytes)
    }

    /// 2PL: the value and the key's write version, in one READ. The caller holds the key.
    pub(crate) fn read_locked(&self) -> Result<(Option<Vec<u8>>, u64), RecordError> {
        let mut bytes = [0u8; 16 + VALUE_BYTES_MAX];
        self.region.read(self.offset + WRITE_VERSION_OFFSET, &mut bytes)?;
        let (version, rest) = bytes.split_at(8);
        let version = u64::from_ne_bytes(version.try_into().expect("an 8-byte prefix"));
        let value: &[u8; 8 + VALUE_BYTES_MAX] = rest.try_into().expect("the length word and the value");
        Ok((self.decode_value(value)?, version))
    }

    /// 2PL: installs `value` as the key's write `version` (the one read plus one), in one
    /// ordered batch: the value, then the version. The caller holds the key exclusively.
    pub(crate) fn install_locked(&self, version: u64, value: Option<&[u8]>) -> Result<(), RecordError> {
        let mut bytes = [0u8; 8 + VALUE_BYTES_MAX];
        let length = Self::encode_value(value, &mut bytes)?;
        let version = version.to_ne_bytes();
        self.region.execute(&mut [
            Operation::Write { offset: self.offset + LENGTH_OFFSET, bytes: &bytes[..8 + length] },
            Operation::Write { offset: self.offset + WRITE_VERSION_OFFSET, bytes: &version },
        ])?;
        Ok(())
    }

    fn decode_value(&self, bytes: &[u8; 8 + VALUE_BYTES_MAX]) -> Result<Option<Vec<u8>>, RecordError> {
        let (length, value) = bytes.split_at(8);
        let length = u64::from_ne_bytes(length.try_into().expect("an 8-byte prefix"));
        if length == ABSENT {
            return Ok(None);
        }
        match usize::try_from(length) {
            Ok(length) if length <= VALUE_BYTES_MAX => Ok(Some(value[..length].to_vec())),
            _ => Err(RecordError::Corrupt { offset: self.offset, length }),
        }
    }

    /// Installs `value` (`None`: the key has none). The caller holds the key exclusively
    /// (2PL) or has it locked for its commit (OCC).
    pub(crate) fn write_value(&self, value: Option<&[u8]>) -> Result<(), RecordError> {
        let mut bytes = [0u8; 8 + VALUE_BYTES_MAX];
        let length = Self::encode_value(value, &mut bytes)?;
        self.region.write(self.offset + LENGTH_OFFSET, &bytes[..8 + length])?;
        Ok(())
    }

    /// Fills `bytes` with the length word and `value`; returns the value's length.
    fn encode_value(value: Option<&[u8]>, bytes: &mut [u8; 8 + VALUE_BYTES_MAX]) -> Result<usize, RecordError> {
        let (length_word, length) = match value {
            None => (ABSENT, 0),
            Some(value) if value.len() > VALUE_BYTES_MAX => {
                return Err(RecordError::ValueTooLarge { length: value.len() })
            }
            Some(value) => {
                bytes[8..8 + value.len()].copy_from_slice(value);
                (value.len() as u64, value.len())
            }
        };
        bytes[..8].copy_from_slice(&length_word.to_ne_bytes());
        Ok(length)
    }

    /// OCC: the value and the version word it belongs to, read without a lock (see the
    /// module doc). Waits while a writer holds the key, until `cancelled` is set (the
    /// writer may be on a node that died).
    pub(crate) fn read_consistent(&self, cancelled: &AtomicBool) -> Result<(Option<Vec<u8>>, u64), RecordError> {
        let mut backoff = Backoff::new();
        let mut value = [0u8; 8 + VALUE_BYTES_MAX];
        loop {
            if cancelled.load(Ordering::Acquire) {
                return Err(RecordError::Cancelled);
            }
            let (mut before, mut after) = ([0u8; 8], [0u8; 8]);
            self.region.execute(&mut [
                Operation::Read { offset: self.offset + LOCK_WORD_OFFSET, buffer: &mut before },
                Operation::Read { offset: self.offset + LENGTH_OFFSET, buffer: &mut value },
                Operation::Read { offset: self.offset + LOCK_WORD_OFFSET, buffer: &mut after },
            ])?;
            let (before, after) = (u64::from_ne_bytes(before), u64::from_ne_bytes(after));
            if before & super::occ::LOCKED == 0 && before == after {
                return Ok((self.decode_value(&value)?, before));
            }
            backoff.snooze();
        }
    }

    /// OCC: the version word now (for validation).
    pub(crate) fn version_word(&self) -> Result<u64, RecordError> {
        Ok(self.read_word(LOCK_WORD_OFFSET)?)
    }

    /// OCC: locks the key for a commit if its word is still the unlocked `version` that
    /// was read; `false` when another transaction holds or changed it.
    pub(crate) fn lock_version(&self, version: u64) -> Result<bool, RecordError> {
        debug_assert_eq!(version & super::occ::LOCKED, 0, "a version read is never locked");
        let previous =
            self.region.compare_and_swap(self.offset + LOCK_WORD_OFFSET, version, version | super::occ::LOCKED)?;
        Ok(previous == version)
    }

    /// OCC: gives back a lock taken by [`RecordSlot::lock_version`] without a change.
    pub(crate) fn unlock_version(&self, version: u64) -> Result<(), RecordError> {
        self.region.write(self.offset + LOCK_WORD_OFFSET, &version.to_ne_bytes())?;
        Ok(())
    }

    /// OCC: installs `value` under a lock taken from `version` and releases the key with
    /// the next version, in one ordered batch (the value is visible before the version).
    pub(crate) fn install(&self, version: u64, value: Option<&[u8]>) -> Result<(), RecordError> {
        let next = version + 1;
        assert_eq!(next & super::occ::LOCKED, 0, "a version word overflowed into its lock bit");
        let mut bytes = [0u8; 8 + VALUE_BYTES_MAX];
        let length = Self::encode_value(value, &mut bytes)?;
        let next = next.to_ne_bytes();
        self.region.execute(&mut [
            Operation::Write { offset: self.offset + LENGTH_OFFSET, bytes: &bytes[..8 + length] },
            Operation::Write { offset: self.offset + LOCK_WORD_OFFSET, bytes: &next },
        ])?;
        Ok(())
    }
}

impl LockWords for RecordSlot<'_> {
    type Error = FabricError;

    fn compare_exchange(&self, current: u64, new: u64) -> Result<Result<u64, u64>, FabricError> {
        let previous = self.region.compare_and_swap(self.offset + LOCK_WORD_OFFSET, current, new)?;
        Ok(if previous == current { Ok(previous) } else { Err(previous) })
    }

    fn fetch_add(&self, delta: u64) -> Result<u64, FabricError> {
        self.region.fetch_add(self.offset + LOCK_WORD_OFFSET, delta)
    }

    fn load(&self) -> Result<u64, FabricError> {
        self.read_word(LOCK_WORD_OFFSET)
    }

    fn oldest_reader(&self) -> Result<u64, FabricError> {
        self.read_word(OLDEST_READER_OFFSET)
    }

    /// A fabric has no fetch-min: a CAS loop from the bound last seen.
    fn lower_oldest_reader(&self, timestamp: u64) -> Result<(), FabricError> {
        let offset = self.offset + OLDEST_READER_OFFSET;
        let mut seen = self.read_word(OLDEST_READER_OFFSET)?;
        while timestamp < seen {
            match self.region.compare_and_swap(offset, seen, timestamp)? {
                previous if previous == seen => break,
                previous => seen = previous,
            }
        }
        Ok(())
    }

    fn clear_oldest_reader(&self) -> Result<(), FabricError> {
        self.region.write(self.offset + OLDEST_READER_OFFSET, &u64::MAX.to_ne_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::super::occ;
    use super::super::twopl::{lock_exclusive, lock_shared, unlock_exclusive, unlock_shared, LockState, NotTaken};
    use super::*;
    use leasehold_fabric::shm::ShmFabric;
    use leasehold_fabric::tcp::TcpFabric;
    use leasehold_fabric::{Fabric, RegionId};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    static NEVER: AtomicBool = AtomicBool::new(false);

    const REGION: RegionId = RegionId(7);
    const TOTAL: i64 = 1_000;

    /// Two nodes of one backend: node 0 owns a region of `slots` record slots; returns
    /// its local view and node 1's remote view of it, both as `RemoteRegion`s (the nodes
    /// must outlive them: a tcp node's responder ends with it).
    fn two_views(fabrics: &[Arc<dyn Fabric>; 2], slots: u64) -> [Arc<dyn RemoteRegion>; 2] {
        let owner = fabrics[0].register_region(REGION, slots * RECORD_BYTES).expect("register the record region");
        let remote = fabrics[1].open_remote(0, REGION).expect("open the record region from node 1");
        [owner, remote]
    }

    fn shm_nodes(directory: &std::path::Path) -> [Arc<dyn Fabric>; 2] {
        [0, 1].map(|node| ShmFabric::open(directory, node).expect("open shm node") as Arc<dyn Fabric>)
    }

    fn tcp_nodes() -> [Arc<dyn Fabric>; 2] {
        let loopback = "127.0.0.1:0".parse().expect("literal address");
        let [a, b] = [0, 1].map(|node| TcpFabric::start(node, loopback).expect("start tcp node"));
        a.add_peer(1, b.local_address());
        b.add_peer(0, a.local_address());
        [a as Arc<dyn Fabric>, b as Arc<dyn Fabric>]
    }

    fn slot(region: &dyn RemoteRegion, index: u64) -> RecordSlot<'_> {
        RecordSlot::at(region, index).expect("a slot of the region")
    }

    fn balance(value: Option<Vec<u8>>) -> i64 {
        i64::from_le_bytes(value.expect("a balance").as_slice().try_into().expect("8 bytes"))
    }

    /// Values round-trip through both views, absent values stay absent, and a value too
    /// large for a slot is refused with nothing written.
    fn values_round_trip(views: &[Arc<dyn RemoteRegion>; 2]) {
        let [owner, remote] = views;
        let (mine, theirs) = (slot(owner.as_ref(), 1), slot(remote.as_ref(), 1));
        mine.initialize(Some(b"first")).expect("initialize");
        assert_eq!(theirs.read_value().expect("read").as_deref(), Some(&b"first"[..]));
        theirs.write_value(None).expect("write");
        assert_eq!(mine.read_value().expect("read"), None);
        let largest = vec![7u8; VALUE_BYTES_MAX];
        theirs.write_value(Some(&largest)).expect("write the largest value");
        assert_eq!(mine.read_value().expect("read"), Some(largest.clone()));
        // 2PL's versioned read and install: the version travels with the value.
        assert_eq!(mine.read_locked().expect("read").1, 0, "a fresh slot has had no install");
        theirs.install_locked(1, Some(b"second")).expect("install");
        assert_eq!(mine.read_locked().expect("read"), (Some(b"second".to_vec()), 1));
        theirs.install_locked(2, Some(&largest)).expect("install");
        let too_large = vec![1u8; VALUE_BYTES_MAX + 1];
        assert!(matches!(theirs.install_locked(3, Some(&too_large)), Err(RecordError::ValueTooLarge { .. })));
        assert_eq!(mine.read_locked().expect("read").1, 2, "a refused install changes nothing");
        assert!(matches!(theirs.write_value(Some(&too_large)), Err(RecordError::ValueTooLarge { .. })));
        assert_eq!(mine.read_value().expect("read").map(|v| v.len()), Some(VALUE_BYTES_MAX), "nothing written");
        // An index past the region, as a peer might send it, is refused before any access.
        for index in [8, u64::MAX] {
            assert!(matches!(RecordSlot::at(remote.as_ref(), index), Err(RecordError::NoSuchSlot { slots: 8, .. })));
        }
        // A length no slot can hold is reported, not trusted.
        owner.write(RECORD_BYTES + LENGTH_OFFSET, &(VALUE_BYTES_MAX as u64 + 1).to_ne_bytes()).expect("write");
        assert!(matches!(theirs.read_value(), Err(RecordError::Corrupt { .. })));
    }

    /// Wait-die over a slot's words, from the remote side, seen from the owner's side.
    fn lock_words_follow_wait_die(views: &[Arc<dyn RemoteRegion>; 2]) {
        let [owner, remote] = views;
        let (mine, theirs) = (slot(owner.as_ref(), 2), slot(remote.as_ref(), 2));
        mine.initialize(None).expect("initialize");
        lock_shared(&theirs, 8).expect("first reader");
        lock_shared(&mine, 5).expect("second reader");
        assert_eq!(LockState::of(mine.load().expect("load")), LockState::Shared { readers: 2 });
        assert_eq!(theirs.oldest_reader().expect("load"), 5);
        assert!(matches!(lock_exclusive(&theirs, 9), Err(NotTaken::Died)), "younger than the oldest reader");
        unlock_shared(&theirs).expect("release");
        unlock_shared(&mine).expect("release");
        assert_eq!(theirs.load().expect("load"), 0, "the last reader leaves the word free");
        assert_eq!(theirs.oldest_reader().expect("load"), u64::MAX, "and resets the bound");
        lock_exclusive(&theirs, 9).expect("free: taken");
        assert_eq!(LockState::of(mine.load().expect("load")), LockState::Exclusive { holder: 9 });
        assert!(matches!(lock_shared(&mine, 12), Err(NotTaken::Died)));
        assert!(matches!(lock_exclusive(&mine, 10), Err(NotTaken::Died)));
        assert_eq!(
            mine.load().expect("load"),
            9 << super::super::twopl::READER_BITS,
            "a dying reader took its count back"
        );
        unlock_exclusive(&mine, 9).expect("release");
        assert_eq!(theirs.load().expect("load"), 0);
    }

    /// Four threads, two on each node, move units between two records of the region,
    /// holding both (2PL, or OCC's commit), while every third transaction only reads
    /// both and checks the total. A lost or doubled unit, a torn read, or a lock left
    /// behind fails the test. Not timed.
    fn concurrent_transfers(views: &[Arc<dyn RemoteRegion>; 2], occ_mode: bool, operations: u64) {
        let [a, b] = [3u64, 4u64];
        slot(views[0].as_ref(), a).initialize(Some(&TOTAL.to_le_bytes())).expect("initialize");
        slot(views[0].as_ref(), b).initialize(Some(&0i64.to_le_bytes())).expect("initialize");
        let clock = AtomicU64::new(super::super::twopl::FIRST_TIMESTAMP);
        let moved = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let (clock, moved) = (&clock, &moved);
                let view = views[(thread % 2) as usize].as_ref();
                scope.spawn(move || {
                    let slots = [slot(view, a), slot(view, b)];
                    for operation in 0..operations {
                        let write = (operation + thread) % 3 != 0;
                        let done = if occ_mode {
                            occ_transfer(&slots, write)
                        } else {
                            two_phase_transfer(&slots, write, clock.fetch_add(1, Ordering::Relaxed))
                        };
                        moved.fetch_add(u64::from(done), Ordering::Relaxed);
                    }
                });
            }
        });
        let slots = [a, b].map(|index| slot(views[1].as_ref(), index));
        let [in_a, in_b] = slots.map(|slot| balance(slot.read_value().expect("read")));
        assert_eq!(in_a + in_b, TOTAL);
        let writes: u64 =
            (0..4u64).map(|thread| (0..operations).filter(|o| (o + thread) % 3 != 0).count() as u64).sum();
        assert_eq!(moved.load(Ordering::Relaxed), writes, "every write ran exactly once");
        for slot in slots {
            let word = slot.load().expect("load");
            if occ_mode {
                assert_eq!(word & occ::LOCKED, 0, "every commit lock was released");
            } else {
                assert_eq!(word, 0, "every lock was released");
            }
        }
    }

    /// One 2PL transaction over both slots, retried (keeping its timestamp) until done;
    /// `true` when it moved a unit.
    fn two_phase_transfer(slots: &[RecordSlot<'_>; 2], write: bool, timestamp: u64) -> bool {
        let lock = |slot: &RecordSlot<'_>| match write {
            true => lock_exclusive(slot, timestamp),
            false => lock_shared(slot, timestamp),
        };
        let unlock = |slot: &RecordSlot<'_>| match write {
            true => unlock_exclusive(slot, timestamp).expect("release"),
            false => unlock_shared(slot).expect("release"),
        };
        loop {
            match lock(&slots[0]) {
                Ok(()) => {}
                Err(NotTaken::Died) => {
                    std::thread::yield_now();
                    continue;
                }
                Err(NotTaken::Failed(error)) => panic!("fabric failed: {error}"),
            }
            match lock(&slots[1]) {
                Ok(()) => {}
                Err(NotTaken::Died) => {
                    unlock(&slots[0]);
                    std::thread::yield_now();
                    continue;
                }
                Err(NotTaken::Failed(error)) => panic!("fabric failed: {error}"),
            }
            let [in_a, in_b] = slots.map(|slot| balance(slot.read_value().expect("read")));
            assert_eq!(in_a + in_b, TOTAL, "a transaction saw another one half done");
            if write {
                let unit = if in_a > 0 { 1 } else { -1 };
                slots[0].write_value(Some(&(in_a - unit).to_le_bytes())).expect("write");
                slots[1].write_value(Some(&(in_b + unit).to_le_bytes())).expect("write");
            }
            unlock(&slots[1]);
            unlock(&slots[0]);
            return write;
        }
    }

    /// One OCC transaction over both slots, run again until it commits; `true` when it
    /// moved a unit. A read-only one validates both versions.
    fn occ_transfer(slots: &[RecordSlot<'_>; 2], write: bool) -> bool {
        loop {
            let [(a, version_a), (b, version_b)] = slots.map(|slot| slot.read_consistent(&NEVER).expect("read"));
            let (in_a, in_b) = (balance(a), balance(b));
            if !write {
                let now = slots.map(|slot| slot.version_word().expect("load"));
                if occ::validate([(version_a, now[0]), (version_b, now[1])]).is_ok() {
                    assert_eq!(in_a + in_b, TOTAL, "a validated read saw a transfer half done");
                    return false;
                }
                continue;
            }
            if !slots[0].lock_version(version_a).expect("cas") {
                continue;
            }
            if !slots[1].lock_version(version_b).expect("cas") {
                slots[0].unlock_version(version_a).expect("unlock");
                continue;
            }
            assert_eq!(in_a + in_b, TOTAL, "both keys locked at the versions read: a consistent pair");
            let unit = if in_a > 0 { 1 } else { -1 };
            slots[0].install(version_a, Some(&(in_a - unit).to_le_bytes())).expect("install");
            slots[1].install(version_b, Some(&(in_b + unit).to_le_bytes())).expect("install");
            return true;
        }
    }

    fn conformance(fabrics: [Arc<dyn Fabric>; 2], operations: u64) {
        let views = two_views(&fabrics, 8);
        values_round_trip(&views);
        lock_words_follow_wait_die(&views);
        concurrent_transfers(&views, false, operations);
        concurrent_transfers(&views, true, operations);
        commit_numbers(&views);
    }

    /// Commit numbers of one epoch are unique and dense across both nodes' threads, and
    /// start at 1 again in the next epoch.
    fn commit_numbers(views: &[Arc<dyn RemoteRegion>; 2]) {
        let per_thread = 500u32;
        let taken: Vec<u32> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|thread| {
                    let view = views[thread % 2].as_ref();
                    scope.spawn(move || {
                        (0..per_thread).map(|_| take_commit_number(view, 7).expect("take")).collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().flat_map(|thread| thread.join().expect("thread")).collect()
        });
        let mut sorted = taken.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=4 * per_thread).collect::<Vec<_>>(), "unique and dense");
        assert_eq!(take_commit_number(views[1].as_ref(), 8).expect("take"), 1, "a new epoch starts at 1");
        assert_eq!(take_commit_number(views[0].as_ref(), 8).expect("take"), 2);
    }

    #[test]
    fn record_slots_over_shared_memory() {
        let directory = tempfile::tempdir().expect("temporary directory");
        conformance(shm_nodes(directory.path()), 3_000);
    }

    #[test]
    fn record_slots_over_tcp() {
        conformance(tcp_nodes(), 300);
    }

    /// Runs where an RDMA device exists; elsewhere says why it was skipped (these
    /// machines have none: the probe fails before any node starts).
    #[test]
    fn record_slots_over_rdma() {
        use leasehold_fabric::rdma::{RdmaConfig, RdmaFabric};
        let loopback = "127.0.0.1:0".parse().expect("literal address");
        if let Err(reason) = RdmaFabric::open(u16::MAX, &RdmaConfig::new(loopback)) {
            eprintln!("skipped record_slots_over_rdma: {reason}");
            return;
        }
        let [a, b] = [0, 1].map(|node| RdmaFabric::open(node, &RdmaConfig::new(loopback)).expect("open rdma node"));
        a.add_peer(1, b.bootstrap_address());
        b.add_peer(0, a.bootstrap_address());
        conformance([a as Arc<dyn Fabric>, b as Arc<dyn Fabric>], 300);
    }
}
