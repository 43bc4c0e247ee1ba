//! Leases: which node holds each key, and the lease word that fences stale holders.
//!
//! Every key starts on its home node, chosen by a hash of its storage key that every node
//! computes alike. The [`LeaseTable`] answers "who holds this key" and is published to
//! all threads as an immutable snapshot ([`LeaseTables`], an `ArcSwap`): readers never
//! lock, and a new placement is one pointer swap. Keys whose lease moved away from home
//! are listed explicitly (placement, issue 4, fills that list; static placement leaves it
//! empty).
//!
//! The lease word lives in each resident slot: the node currently entitled to the key's
//! value and the lease epoch under which it got it. The holder lends a key to the node
//! that executes a transaction on it ([`LeaseWord::lend`]) and accepts the value back only
//! from that node under the same lease epoch ([`LeaseWord::take_back`]); anything else is
//! refused as [`LeaseError::Fenced`]. Lease epochs grow with every cluster reconfiguration
//! (a node restart), so a node that lost its lease cannot write. These are pure functions
//! on words, tested on their own.

use crate::model::NodeId;
use arc_swap::ArcSwap;
use leasehold_keyspace::{fnv1a, FNV_OFFSET_BASIS};
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Lease epochs use the low 48 bits of a lease word; the owner the high 16.
const LEASE_EPOCH_BITS: u32 = 48;
const LEASE_EPOCH_MASK: u64 = (1 << LEASE_EPOCH_BITS) - 1;

/// Who may use a key's value now, and under which lease epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseWord(pub u64);

/// A lease transition that the protocol forbids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("node {by} may not lend a key whose lease word names node {owner} (lease epoch {lease_epoch})")]
    NotHeld { by: NodeId, owner: NodeId, lease_epoch: u64 },
    #[error(
        "refused access by node {from} under lease epoch {offered}: the lease word names node {owner} under lease \
         epoch {lease_epoch}"
    )]
    Fenced { from: NodeId, offered: u64, owner: NodeId, lease_epoch: u64 },
}

impl LeaseWord {
    /// The word of a key that `owner` holds under `lease_epoch`.
    pub fn held(owner: NodeId, lease_epoch: u64) -> LeaseWord {
        assert!(lease_epoch <= LEASE_EPOCH_MASK, "lease epochs fit in 48 bits");
        LeaseWord((u64::from(owner) << LEASE_EPOCH_BITS) | lease_epoch)
    }

    pub fn owner(self) -> NodeId {
        (self.0 >> LEASE_EPOCH_BITS) as NodeId
    }

    pub fn lease_epoch(self) -> u64 {
        self.0 & LEASE_EPOCH_MASK
    }

    /// The holder `by` lends the key to `to` for one transaction: the word must name `by`
    /// under `lease_epoch`; the result names `to` under the same epoch.
    pub fn lend(self, by: NodeId, to: NodeId, lease_epoch: u64) -> Result<LeaseWord, LeaseError> {
        if self != LeaseWord::held(by, lease_epoch) {
            return Err(LeaseError::NotHeld { by, owner: self.owner(), lease_epoch: self.lease_epoch() });
        }
        Ok(LeaseWord::held(to, lease_epoch))
    }

    /// The holder `holder` takes the key back from `from`, which offers `offered` as its
    /// lease epoch: only the node the key was lent to, under the epoch it was lent in.
    pub fn take_back(self, holder: NodeId, from: NodeId, offered: u64) -> Result<LeaseWord, LeaseError> {
        if self != LeaseWord::held(from, offered) {
            return Err(LeaseError::Fenced { from, offered, owner: self.owner(), lease_epoch: self.lease_epoch() });
        }
        Ok(LeaseWord::held(holder, offered))
    }
}

/// The home node of a storage key among `node_count` nodes (`leasehold-keyspace`'s rule,
/// which routing clients share).
pub fn home_node(storage_key: &[u8], node_count: u16) -> NodeId {
    leasehold_keyspace::home_node(storage_key, node_count)
}

/// Which node holds each key: home placement plus the keys whose lease moved.
#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    node_count: u16,
    /// Bumped whenever a lease moves; clients and peers compare versions.
    version: u64,
    moved: FxHashMap<Box<[u8]>, NodeId>,
}

impl LeaseTable {
    /// Every key on its home node.
    pub fn home(node_count: u16) -> LeaseTable {
        assert!(node_count > 0, "a cluster has at least one node");
        LeaseTable { node_count, version: 0, moved: FxHashMap::default() }
    }

    pub fn node_count(&self) -> u16 {
        self.node_count
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The node that holds `storage_key`.
    pub fn holder(&self, storage_key: &[u8]) -> NodeId {
        if self.moved.is_empty() {
            return home_node(storage_key, self.node_count);
        }
        self.moved.get(storage_key).copied().unwrap_or_else(|| home_node(storage_key, self.node_count))
    }

    /// This table with the leases of `moves` (key, new holder) moved, as the next version.
    pub fn with_moves(&self, moves: impl IntoIterator<Item = (Box<[u8]>, NodeId)>) -> LeaseTable {
        let mut table = self.clone();
        for (key, holder) in moves {
            assert!(holder < self.node_count, "a lease moves to a node of the cluster");
            if holder == home_node(&key, self.node_count) {
                table.moved.remove(&key);
            } else {
                table.moved.insert(key, holder);
            }
        }
        table.version += 1;
        table
    }

    /// The keys whose holder is not their home node, with their holders, in no order.
    pub fn moved(&self) -> impl Iterator<Item = (&[u8], NodeId)> {
        self.moved.iter().map(|(key, &holder)| (&**key, holder))
    }

    /// Keys whose holder is not their home node.
    pub fn moved_count(&self) -> usize {
        self.moved.len()
    }

    /// A digest of the placement (node count, version and moved keys), equal on nodes
    /// that agree on every key's holder.
    pub fn digest(&self) -> u64 {
        let mut moved: Vec<(&[u8], NodeId)> = self.moved.iter().map(|(key, &node)| (&**key, node)).collect();
        moved.sort_unstable();
        // The version is left out: nodes that reloaded the table from storage after a
        // restart agree on every holder but count versions from there.
        let mut hash = fnv1a(FNV_OFFSET_BASIS, &self.node_count.to_le_bytes());
        for (key, node) in moved {
            hash = fnv1a(hash, &(key.len() as u64).to_le_bytes());
            hash = fnv1a(hash, key);
            hash = fnv1a(hash, &node.to_le_bytes());
        }
        hash
    }
}

/// The current lease table, shared by all threads of a node as an immutable snapshot.
pub struct LeaseTables(ArcSwap<LeaseTable>);

impl LeaseTables {
    pub fn new(table: LeaseTable) -> LeaseTables {
        LeaseTables(ArcSwap::from_pointee(table))
    }

    /// The snapshot in force now; holding it never blocks a publisher.
    pub fn current(&self) -> Arc<LeaseTable> {
        self.0.load_full()
    }

    /// Publishes a new table.
    pub fn publish(&self, table: LeaseTable) {
        self.0.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_key_comes_back_only_from_its_borrower_under_the_same_epoch() {
        let held = LeaseWord::held(0, 7);
        assert_eq!((held.owner(), held.lease_epoch()), (0, 7));
        let lent = held.lend(0, 2, 7).expect("the holder lends");
        assert_eq!(lent, LeaseWord::held(2, 7));
        // Another node, or the borrower under an older epoch, is fenced off.
        assert!(matches!(lent.take_back(0, 1, 7), Err(LeaseError::Fenced { from: 1, owner: 2, .. })));
        assert!(matches!(lent.take_back(0, 2, 6), Err(LeaseError::Fenced { offered: 6, lease_epoch: 7, .. })));
        assert_eq!(lent.take_back(0, 2, 7), Ok(held));
    }

    #[test]
    fn only_the_holder_lends_and_only_under_its_epoch() {
        let held = LeaseWord::held(1, 3);
        assert!(matches!(held.lend(0, 2, 3), Err(LeaseError::NotHeld { by: 0, owner: 1, .. })));
        assert!(held.lend(1, 2, 4).is_err(), "a newer epoch than the word's is not the holder's");
        let lent = held.lend(1, 2, 3).expect("lend");
        assert!(lent.lend(1, 0, 3).is_err(), "a lent key cannot be lent again");
    }

    #[test]
    fn home_placement_is_stable_and_spreads_keys() {
        let mut counts = [0u32; 3];
        for index in 0..3000u32 {
            let key = index.to_be_bytes();
            let node = home_node(&key, 3);
            assert_eq!(node, home_node(&key, 3));
            counts[node as usize] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "uneven spread {counts:?}");
        }
        // Fixed values: every node and every build must agree.
        assert_eq!(home_node(b"", 3), (0xcbf2_9ce4_8422_2325u64 % 3) as NodeId);
        let table = LeaseTable::home(3);
        assert_eq!(table.holder(b"account-1"), home_node(b"account-1", 3));
        assert_eq!(table.digest(), LeaseTable::home(3).digest());
        assert_ne!(table.digest(), LeaseTable::home(2).digest());
    }

    #[test]
    fn moved_leases_override_home_and_moving_home_forgets_them() {
        let table = LeaseTable::home(3);
        let key: &[u8] = b"account-1";
        let home = home_node(key, 3);
        let elsewhere = (home + 1) % 3;
        let moved = table.with_moves([(Box::from(key), elsewhere)]);
        assert_eq!(moved.holder(key), elsewhere);
        assert_eq!((moved.version(), moved.moved_count()), (1, 1));
        assert_ne!(moved.digest(), table.digest());
        let back = moved.with_moves([(Box::from(key), home)]);
        assert_eq!(back.holder(key), home);
        assert_eq!(back.moved_count(), 0);
        assert_eq!(back.digest(), table.digest(), "the same holders give the same digest");
    }
}
