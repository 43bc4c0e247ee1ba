//! The fabric: one-sided memory operations between engine nodes, and the message rings
//! built on them (DESIGN.md §4).
//!
//! A node registers memory regions ([`Fabric::register_region`]); a peer addresses a
//! region as (node id, region id) and a byte offset inside it, and works on it without
//! the owner's CPU taking part: [`RemoteRegion::read`], [`RemoteRegion::write`],
//! [`RemoteRegion::compare_and_swap`] and [`RemoteRegion::fetch_add`]. Message rings
//! ([`ring`]) are regions too: the sender pushes a message with one WRITE of the payload
//! and one WRITE of the slot's sequence word, the receiver polls its own memory.
//!
//! Backends, all behind the same traits and the same conformance suite
//! (`integration/tests/fabric_conformance.rs`):
//! * [`shm`]: regions are shared-memory files that peers on the same host map; a remote
//!   CAS is a real atomic instruction on the owner's memory;
//! * [`tcp`]: a per-node responder performs the operations on its regions;
//! * [`rdma`]: RC queue pairs through libibverbs, behind the cargo feature `rdma`.
//!
//! # Memory model
//!
//! These rules hold for every backend, and the lease protocol and the rings rely on them:
//! * A region is zeroed when registered, its size is a positive multiple of 8 bytes, and
//!   offsets are byte offsets from its start.
//! * CAS and fetch-add work on 8-byte words at 8-byte aligned offsets, atomically with
//!   respect to every other CAS and fetch-add on the same word, from any node.
//! * An aligned 8-byte WRITE or READ of a word is not torn; longer transfers may be
//!   observed partially by a concurrent reader.
//! * Operations one thread issues to one region take effect in issue order, and a WRITE
//!   is visible to every node no later than any later WRITE of the same thread. A reader
//!   that observes the later WRITE (the "flag") therefore also observes the earlier one
//!   (the value): the rule the rings and the lease handover are built on.
//! * A batch ([`RemoteRegion::execute`]) runs its operations in order and stops at the
//!   first that fails: an operation after a failed one does not take effect.
//!
//! Every operation is synchronous: when it returns `Ok`, it took effect at the owner.
//! When it returns [`FabricError::PeerUnreachable`], it may or may not have.
//!
//! # Owners, peers and restarts
//!
//! The owner reaches its own regions through [`LocalRegion`] (which is a [`RemoteRegion`]
//! too, so code can treat local and remote addresses alike). A region lives until it is
//! deregistered or its fabric is dropped. A node that restarts registers fresh, zeroed
//! regions; a peer's handle opened before the restart may address the old memory (shm)
//! or fail (tcp, rdma), so protocols fence stale peers with their own epochs (the lease
//! word carries a lease epoch) rather than trusting a handle's age.

pub mod memory;
pub mod rdma;
pub mod ring;
pub mod shm;
pub mod tcp;

use std::fmt;
use std::sync::Arc;

/// Identifies a node of the cluster (the engine's `model::NodeId` is the same type).
pub type NodeId = u16;
pub use memory::LocalRegion;
pub use ring::{PushOutcome, RingGeometry, RingReceiver, RingSender};

/// The largest number of bytes one READ or WRITE moves, so that every backend can stage a
/// transfer in a bounded buffer and a peer can size its frames. Slots, lease words and
/// ring messages are far smaller.
pub const MAX_TRANSFER_BYTES: u64 = 1 << 20;

/// The largest number of operations in one [`RemoteRegion::execute`] batch.
pub const MAX_BATCH_OPERATIONS: usize = 64;

/// Names a registered region among the regions of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId(pub u32);

impl RegionId {
    /// Region ids with the top bit set are reserved for inbound message rings.
    const INBOUND_RING_BIT: u32 = 1 << 31;

    /// The conventional id of the ring through which `sender` pushes messages to the
    /// region's owner (one inbound ring per peer).
    pub const fn inbound_ring(sender: NodeId) -> RegionId {
        RegionId(Self::INBOUND_RING_BIT | sender as u32)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a fabric operation failed. Addressing errors (bounds, alignment, unknown region)
/// are reported by every backend before anything is touched.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error("node {node} is not a known peer")]
    UnknownPeer { node: NodeId },
    #[error("node {node} has no region {region}")]
    UnknownRegion { node: NodeId, region: RegionId },
    #[error("region {region} is already registered on this node")]
    RegionExists { region: RegionId },
    #[error("a region of {size_bytes} bytes cannot be registered: the size must be a positive multiple of 8")]
    InvalidRegionSize { size_bytes: u64 },
    #[error(
        "{length} bytes at offset {offset} are out of bounds of region {region} of node {node} ({size_bytes} bytes)"
    )]
    OutOfBounds { node: NodeId, region: RegionId, offset: u64, length: u64, size_bytes: u64 },
    #[error("offset {offset} in region {region} of node {node} is not 8-byte aligned, as atomic operations need")]
    Misaligned { node: NodeId, region: RegionId, offset: u64 },
    #[error("a transfer of {length} bytes exceeds the fabric limit of {limit} bytes")]
    TransferTooLarge { length: u64, limit: u64 },
    #[error("a batch of {count} operations exceeds the fabric limit of {limit}")]
    BatchTooLarge { count: usize, limit: usize },
    #[error("peer node {node} is unreachable: {reason}")]
    PeerUnreachable { node: NodeId, reason: String },
    #[error("peer node {node} broke the fabric protocol: {reason}")]
    Protocol { node: NodeId, reason: String },
    #[error("ring {region} of node {node} is full ({slot_count} slots)")]
    RingFull { node: NodeId, region: RegionId, slot_count: u32 },
    #[error("a message of {length} bytes exceeds the ring's limit of {max_message_bytes} bytes")]
    MessageTooLarge { length: u64, max_message_bytes: u32 },
    #[error("ring {region} of node {node} is unusable: {reason}")]
    BadRing { node: NodeId, region: RegionId, reason: String },
    #[error("the {backend} fabric backend is unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl FabricError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> FabricError {
        FabricError::Io { context: context.into(), source }
    }
}

/// One node's access to the fabric: its own regions and handles on its peers' regions.
///
/// A fabric is shared by all threads of a node (`Arc<dyn Fabric>`); every method takes
/// `&self`.
pub trait Fabric: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// The backend's name, as in configuration: `shm`, `tcp` or `rdma`.
    fn backend_name(&self) -> &'static str;

    /// Registers a zeroed region of `size_bytes` (a positive multiple of 8) under
    /// `region`, which peers may then access.
    fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError>;

    /// Withdraws a region from peers. Memory a peer already mapped (shm) stays valid for
    /// that peer but is no longer this node's region.
    fn deregister_region(&self, region: RegionId) -> Result<(), FabricError>;

    /// A handle on a region of `node` (this node's own id gives the local region). The
    /// handle checks bounds against the region's size, learned here.
    fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError>;
}

/// One-sided operations on one region of one node. See the module's memory model.
pub trait RemoteRegion: Send + Sync {
    /// The node that owns the region.
    fn node(&self) -> NodeId;

    /// The region's id on its node.
    fn region(&self) -> RegionId;

    /// The region's size.
    fn size_bytes(&self) -> u64;

    /// Copies `buffer.len()` bytes at `offset` into `buffer` (a one-sided READ).
    fn read(&self, offset: u64, buffer: &mut [u8]) -> Result<(), FabricError> {
        self.execute(&mut [Operation::Read { offset, buffer }])
    }

    /// Copies `bytes` to `offset` (a one-sided WRITE).
    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), FabricError> {
        self.execute(&mut [Operation::Write { offset, bytes }])
    }

    /// Replaces the word at `offset` with `new` if it equals `expected`; returns the
    /// word's previous value either way (the swap happened iff it equals `expected`).
    fn compare_and_swap(&self, offset: u64, expected: u64, new: u64) -> Result<u64, FabricError> {
        let mut operations = [Operation::CompareAndSwap { offset, expected, new, previous: 0 }];
        self.execute(&mut operations)?;
        match operations {
            [Operation::CompareAndSwap { previous, .. }] => Ok(previous),
            _ => unreachable!("the batch holds the operation it was given"),
        }
    }

    /// Adds `delta` (wrapping) to the word at `offset`; returns its previous value.
    fn fetch_add(&self, offset: u64, delta: u64) -> Result<u64, FabricError> {
        let mut operations = [Operation::FetchAdd { offset, delta, previous: 0 }];
        self.execute(&mut operations)?;
        match operations {
            [Operation::FetchAdd { previous, .. }] => Ok(previous),
            _ => unreachable!("the batch holds the operation it was given"),
        }
    }

    /// Runs up to [`MAX_BATCH_OPERATIONS`] operations in order, in one round trip where
    /// the backend can (tcp pipelines them, rdma posts them as one chain). The batch stops
    /// at the first failing operation; READ buffers and `previous` fields of the
    /// operations before it are filled in.
    fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError>;
}

/// One operation of a batch. `previous` fields are outputs.
#[derive(Debug)]
pub enum Operation<'a> {
    Read { offset: u64, buffer: &'a mut [u8] },
    Write { offset: u64, bytes: &'a [u8] },
    CompareAndSwap { offset: u64, expected: u64, new: u64, previous: u64 },
    FetchAdd { offset: u64, delta: u64, previous: u64 },
}

impl Operation<'_> {
    /// The offset the operation addresses.
    pub fn offset(&self) -> u64 {
        match self {
            Operation::Read { offset, .. }
            | Operation::Write { offset, .. }
            | Operation::CompareAndSwap { offset, .. }
            | Operation::FetchAdd { offset, .. } => *offset,
        }
    }

    /// The number of bytes the operation touches.
    pub fn length_bytes(&self) -> u64 {
        match self {
            Operation::Read { buffer, .. } => buffer.len() as u64,
            Operation::Write { bytes, .. } => bytes.len() as u64,
            Operation::CompareAndSwap { .. } | Operation::FetchAdd { .. } => 8,
        }
    }
}

/// Checks the limits every backend applies to a batch before running any of it: the
/// operation count and the bytes moved in total (the tcp responder stages a whole batch).
pub(crate) fn check_batch_limits(operations: &[Operation<'_>]) -> Result<(), FabricError> {
    if operations.len() > MAX_BATCH_OPERATIONS {
        return Err(FabricError::BatchTooLarge { count: operations.len(), limit: MAX_BATCH_OPERATIONS });
    }
    let total_bytes: u64 = operations.iter().map(Operation::length_bytes).sum();
    if total_bytes > MAX_TRANSFER_BYTES {
        return Err(FabricError::TransferTooLarge { length: total_bytes, limit: MAX_TRANSFER_BYTES });
    }
    Ok(())
}
