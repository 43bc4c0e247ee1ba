//! The cluster epoch driver: runs every epoch together with the other nodes.
//!
//! One epoch, at every node:
//! 1. **Close** the local batch (what arrived since the last epoch; possibly nothing
//!    when a peer started the epoch), answer retries, give each transaction its timestamp
//!    (epoch, node, sequence).
//! 2. **Exchange**: for every peer, send the transactions that touch keys it holds (its
//!    virtual vertices, possibly none), and wait until every peer's batch has arrived.
//!    Only then is the epoch's order of operations on this node's keys known.
//! 3. **Plan**: build the task precedence graph over the local transactions and the
//!    virtual vertices, in timestamp order, on the keys this node holds.
//! 4. **Execute**: a local transaction runs once its predecessors finished (on its own
//!    keys and on borrowed copies, which this node's transactions share in timestamp
//!    order) and every holder of its remote keys handed them over. All of one peer's
//!    transactions on keys held here are one virtual vertex (they are contiguous in
//!    timestamp order, which orders by node before sequence), over the union of their
//!    keys: once its predecessors finished, the holder lends the keys in one handover,
//!    pushing the values (one ring WRITE instead of READ round trips) and setting the
//!    lease word of each written key to the borrower. The borrower runs its transactions
//!    on the copies and writes them all back after the last one, which returns the lease;
//!    the holder checks the lease word and the lease epoch first (fencing) and refuses
//!    anything else. So a hot key costs two messages per borrowing node and epoch, not
//!    two per transaction that uses it.
//! 5. **Commit**: dirty keys this node holds and the outcomes of the transactions it
//!    sequenced go to the commit thread, which releases replies once every node made the
//!    epoch durable.
//!
//! Views: nodes run epochs only after agreeing on a view (the incarnation of every
//! node). A node that starts, or learns that a peer restarted, abandons the epoch in
//! progress (its transactions get [`Rejection::Retry`]), makes what it committed durable,
//! and announces its view and durable epoch. Once every node announced the same view,
//! each keeps the epochs up to the smallest durable epoch of all (durable everywhere) and
//! undoes the newer ones, drops its in-memory keys (they reload from storage), and
//! continues from there. Frames carry the view's generation, so frames of an abandoned
//! view are ignored.

pub mod baseline;

use super::forward::Forwards;
use super::lease::{LeaseTable, LeaseTables, LeaseWord};
use super::placement::{AccessCounts, LoadCounts, PlacementConfig};
use super::protocol::{leases_as_of, Agreement, StoredMove, ViewAgreement, ViewRefusal};
use super::transport::Transport;
use super::wire::{Frame, KeyValue, KeyWrite, RemoteTransaction};
use crate::model::{NodeId, Outcome, Rejection, Timestamp};
use crate::storage::slots::{Slot, SlotPointer};
pub use crate::storage::REQUEST_ID_TABLE;
use crate::storage::{data_key_into, is_request_id_key, EpochRecord, SlotStore, Storage};
use crate::txn::access::AccessMode;
use crate::txn::commit::{hand_over_epoch, CommitMessage, EpochCommit};
use crate::txn::epoch::DriverMessage;
use crate::txn::executor::{execute, now_us, Claim};
use crate::txn::tpg::GraphBuilder;
use crate::txn::{PreparedTransaction, Reply, Submission, TransactionStats};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The table id of lease-table entries: every lease move, stored by every node in the
/// record of the epoch that announced it, as (old holder, new holder, effective epoch).
/// Plugin table ids have the top bit clear, so no plugin can reach these keys.
pub const LEASE_TABLE: u32 = 0x8000_0001;

/// A lease that passes from `from` to `to` at the start of an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaseMove {
    key: Vec<u8>,
    from: NodeId,
    to: NodeId,
}

/// A lease move as announced with a batch: the key and the node it moves to.
type LeaseMoveAnnouncement = (Vec<u8>, NodeId);

fn lease_entry_key(key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(4 + key.len());
    data_key_into(&mut entry, LEASE_TABLE, key);
    entry
}

fn encode_lease_entry(from: NodeId, to: NodeId, effective_epoch: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(12);
    value.extend_from_slice(&from.to_le_bytes());
    value.extend_from_slice(&to.to_le_bytes());
    value.extend_from_slice(&effective_epoch.to_le_bytes());
    value
}

fn decode_lease_entry(value: &[u8]) -> Option<(NodeId, NodeId, u64)> {
    let from = NodeId::from_le_bytes(value.get(0..2)?.try_into().ok()?);
    let to = NodeId::from_le_bytes(value.get(2..4)?.try_into().ok()?);
    let effective = u64::from_le_bytes(value.get(4..12)?.try_into().ok()?);
    Some((from, to, effective))
}

/// How often the driver looks for plugin calls to abandon, for a limit of `limit`.
fn abandon_check_period(limit: Duration) -> Duration {
    (limit / 4).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// How often a node that waits for a view agreement announces its view again.
const RESYNC_REPEAT: Duration = Duration::from_millis(200);
/// How long a stopping node waits for peers before it gives up on unfinished epochs.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// Cluster figures for status and metrics.
#[derive(Default)]
pub struct ClusterStats {
    pub node_count: AtomicU64,
    pub generation: AtomicU64,
    pub synced: AtomicBool,
    /// Keys of this node currently lent to a borrower (0 between epochs).
    pub leases_lent: AtomicU64,
    pub lease_table_digest: AtomicU64,
    /// Accesses of local transactions to keys held here and elsewhere.
    pub local_accesses: AtomicU64,
    pub remote_accesses: AtomicU64,
    /// Write-backs refused because the lease word or lease epoch did not match.
    pub fenced_total: AtomicU64,
    pub view_changes: AtomicU64,
    /// Leases this node gave up to another node by placement, and the value bytes it sent
    /// with them.
    pub lease_moves_total: AtomicU64,
    pub bytes_migrated_total: AtomicU64,
    /// Requests this node forwarded to the node holding most of their keys, and requests
    /// other nodes forwarded to this one.
    pub forwarded_total: AtomicU64,
    pub forwards_received_total: AtomicU64,
    /// Requests that asked for a redirect and got one (their client's lease table was
    /// stale).
    pub redirected_total: AtomicU64,
    /// Every node's decayed count of transactions run (N_i), by node id, as of the last
    /// epoch, and the spare loads routing derives from them.
    pub loads: arc_swap::ArcSwap<Vec<f64>>,
    pub spare_loads: arc_swap::ArcSwap<Vec<f64>>,
}

/// A vertex of this node's epoch graph.
enum Vertex {
    /// Transaction number `transaction` of this node.
    Local { transaction: u32 },
    /// A transaction of `from` that touches keys held here.
    Virtual { from: NodeId, sequence: u32, keys: Vec<(SlotPointer, AccessMode)> },
}

/// What this node borrows from one holder in an epoch. The holder lends the keys of all
/// of this node's transactions at once (in its timestamp order they are one contiguous
/// run, since timestamps order by node before sequence) and takes them back once they
/// all finished: one handover and one write-back per holder and epoch, however many
/// transactions use a hot key. Both sides list the keys the same way (`merge_key`).
#[derive(Default)]
struct Borrowing {
    /// Every key once, in order of first use; written if any transaction writes it.
    keys: Vec<(Vec<u8>, AccessMode)>,
    positions: FxHashMap<Vec<u8>, u32>,
    /// This node's transactions that borrow from the holder.
    borrowers: Vec<u32>,
    /// How many of them have not finished: the write-back goes when none is left.
    unfinished: usize,
    handed_over: bool,
}

/// Adds `mode` on a key at `position` of a merged key list, or a new key: a key is
/// written if any transaction writes it. Returns the key's position.
fn merge_key<K>(
    keys: &mut Vec<(K, AccessMode)>,
    position: Option<u32>,
    key: impl FnOnce() -> K,
    mode: AccessMode,
) -> u32 {
    match position {
        Some(position) => {
            if mode == AccessMode::Write {
                keys[position as usize].1 = AccessMode::Write;
            }
            position
        }
        None => {
            keys.push((key(), mode));
            (keys.len() - 1) as u32
        }
    }
}

/// The graph's key number of borrowed copy `copy` (slot numbers of resident keys count
/// up from 0, these down from below `u32::MAX`, which marks a borrowed slot).
fn borrowed_key_number(copy: usize) -> u32 {
    u32::MAX - 1 - u32::try_from(copy).expect("fewer borrowed keys than u32::MAX / 2")
}

/// What executor threads share during an epoch: the transactions and the private copies
/// of borrowed keys their remote slots point to. A thread stuck in an abandoned plugin
/// call keeps its share for as long as it runs, so nothing it can reach is freed.
struct EpochWork {
    transactions: Vec<PreparedTransaction>,
    /// The request-id slot of each tracked transaction (local or a borrowed copy).
    id_slots: Vec<Option<SlotPointer>>,
    /// Never resized after the pointers into it were taken.
    borrowed: Vec<Slot>,
    /// Who decides each transaction's outcome when calls may be abandoned: its executor
    /// thread or the driver (`txn::executor::Claim`).
    claims: Vec<Claim>,
    /// When each transaction started running (`txn::executor::now_us`); 0 before, and
    /// always 0 when calls are never abandoned.
    started_us: Vec<AtomicU64>,
}

/// The driver's inbox has no senders left (the node is shutting down).
struct Closed;

/// Why an epoch did not finish.
enum Interrupted {
    /// The view changed (a node restarted).
    ViewChanged,
    /// The node is stopping and its peers did not finish the epoch in time.
    Stopping,
}

pub struct ClusterDriver {
    pub node: NodeId,
    pub node_count: u16,
    pub incarnation: u32,
    pub storage: Arc<Storage>,
    pub stats: Arc<TransactionStats>,
    pub cluster_stats: Arc<ClusterStats>,
    pub pool: super::workers::Workers,
    pub inbox: Receiver<DriverMessage>,
    /// The inbox's sending side, for executor threads to report finished transactions.
    pub loopback: Sender<DriverMessage>,
    pub commits: Sender<CommitMessage>,
    pub transport: Arc<Transport>,
    pub leases: Arc<LeaseTables>,
    pub epoch_transactions_max: usize,
    /// Requests this node forwarded: failed with `Retry` when the view changes.
    pub forwards: Arc<Forwards>,
    /// How long a plugin call may run before it is abandoned (`plugin_call_abandon_ms`;
    /// `None`: never). See `txn::executor` for what abandoning means.
    pub abandon_after: Option<Duration>,
    pub state: DriverState,
}

/// The driver's mutable cluster state.
pub struct DriverState {
    slots: SlotStore,
    graph_builder: GraphBuilder,
    /// The view (incarnation of every node) and what each peer announced for it.
    views: ViewAgreement,
    /// The generation of the agreed view (sum of incarnations); frames carry it.
    generation: u64,
    synced: bool,
    /// The last epoch started.
    epoch: u64,
    pending: VecDeque<Submission>,
    /// Request-id keys held here, with the epoch that last wrote them: they leave memory
    /// once that epoch is checkpointed (an outcome never changes, so a later load finds
    /// it in the tables).
    request_ids: VecDeque<(u64, Vec<u8>)>,
    /// Frames of epochs not started yet, by epoch.
    early: BTreeMap<u64, Vec<(NodeId, Frame)>>,
    stopping: Option<Instant>,
    /// Affinity placement (None: static home placement).
    placement: Option<PlacementConfig>,
    counts: AccessCounts,
    /// Decayed transactions run per node (N_i), learned from every epoch's batches.
    loads: LoadCounts,
    /// Keys this node's transactions or virtual vertices used in the running epoch, each
    /// once (`AccessCounts::record` tells the first access of an epoch).
    touched: Vec<Vec<u8>>,
    /// Leases this node decided to give up, announced with its next batch.
    announce: Vec<(Vec<u8>, NodeId)>,
    /// Keys with a move announced and not yet in effect.
    moving: FxHashSet<Vec<u8>>,
    /// Moves in effect from the start of an epoch, by epoch.
    pending_moves: BTreeMap<u64, Vec<LeaseMove>>,
    /// When the driver last looked for plugin calls to abandon.
    abandon_checked_at: Instant,
    /// Executor threads lost to abandoned plugin calls, since the node started.
    threads_written_off: u64,
    /// Under `cc = "2pl" | "occ"`: the record regions and the protocol (see `baseline`).
    baseline: Option<baseline::BaselineState>,
}

impl DriverState {
    pub fn new(
        node_count: u16,
        me: NodeId,
        incarnation: u32,
        durable_epoch: u64,
        placement: Option<PlacementConfig>,
        baseline: Option<baseline::BaselineState>,
    ) -> DriverState {
        DriverState {
            slots: SlotStore::new(),
            graph_builder: GraphBuilder::new(),
            views: ViewAgreement::new(node_count, me, incarnation),
            generation: 0,
            synced: false,
            epoch: durable_epoch,
            pending: VecDeque::new(),
            request_ids: VecDeque::new(),
            early: BTreeMap::new(),
            stopping: None,
            counts: AccessCounts::new(node_count, placement.unwrap_or_default()),
            loads: LoadCounts::new(node_count, placement.unwrap_or_default().half_life_epochs),
            placement,
            touched: Vec::new(),
            announce: Vec::new(),
            moving: FxHashSet::default(),
            pending_moves: BTreeMap::new(),
            abandon_checked_at: Instant::now(),
            threads_written_off: 0,
            baseline,
        }
    }
}

fn frame_epoch(frame: &Frame) -> Option<(u64, u64)> {
    match frame {
        Frame::Batch { generation, epoch, .. }
        | Frame::Handover { generation, epoch, .. }
        | Frame::WriteBack { generation, epoch, .. }
        | Frame::EpochDone { generation, epoch, .. } => Some((*generation, *epoch)),
        _ => None,
    }
}

/// Refuses requests that did not run. A cluster node keeps no ledger (a request id's
/// outcome is a key), so there are no joined waiters to refuse besides the callers.
fn reject_all(replies: impl IntoIterator<Item = Reply>, rejection: &Rejection) {
    for reply in replies {
        reply.send(Err(rejection.clone()));
    }
}

impl ClusterDriver {
    /// Runs until told to stop.
    pub fn run(mut self) {
        loop {
            if !self.state.synced {
                if !self.agree_on_view() {
                    break;
                }
                continue;
            }
            let peer_waits = self.state.early.get(&(self.state.epoch + 1)).is_some_and(|frames| !frames.is_empty());
            if self.state.pending.is_empty() && !peer_waits {
                if self.state.stopping.is_some() {
                    break;
                }
                match self.inbox.recv() {
                    Ok(message) => self.absorb(message),
                    Err(_) => break,
                }
                continue;
            }
            // Whatever else arrived joins this epoch.
            while let Ok(message) = self.inbox.try_recv() {
                self.absorb(message);
            }
            if !self.state.synced {
                continue;
            }
            match self.run_epoch() {
                Ok(()) => {}
                Err(Interrupted::ViewChanged) => {}
                Err(Interrupted::Stopping) => break,
            }
        }
        reject_all(self.state.pending.drain(..).map(|s| s.reply), &Rejection::ShuttingDown);
        tracing::info!(node = self.node, "cluster driver stopped");
    }

    fn stopping_too_long(&self) -> bool {
        self.state.stopping.is_some_and(|since| since.elapsed() > STOP_PATIENCE)
    }

    /// Takes in a message that is not about the running epoch.
    fn absorb(&mut self, message: DriverMessage) {
        match message {
            DriverMessage::Submit(submission) => self.state.pending.push_back(submission),
            DriverMessage::SubmitMany(submissions) => self.state.pending.extend(submissions),
            DriverMessage::Stop => {
                self.state.stopping.get_or_insert_with(Instant::now);
            }
            DriverMessage::Executed { .. } | DriverMessage::RanOverFabric { .. } => {
                // Only an abandoned epoch's executions arrive outside an epoch; they were
                // waited for, so this is a late duplicate of nothing.
            }
            DriverMessage::Peer { from, frame } => self.absorb_frame(from, frame),
        }
    }

    fn absorb_frame(&mut self, from: NodeId, frame: Frame) {
        let frame = match frame {
            Frame::Resync { view, durable_epoch, answer_wanted } => {
                self.observe_view(from, view, durable_epoch, answer_wanted);
                return;
            }
            Frame::Resolve { generation, keys } => {
                self.answer_resolve(from, generation, keys);
                return;
            }
            // An answer no epoch waits for: of an abandoned epoch.
            Frame::Resolved { .. } => return,
            frame => frame,
        };
        match frame_epoch(&frame) {
            // While the nodes agree on a view, a peer that already agreed may start the
            // next epoch: keep its frames; the agreement drops those of other views.
            Some((_, epoch)) if !self.state.synced => self.state.early.entry(epoch).or_default().push((from, frame)),
            Some((generation, epoch)) if generation == self.state.generation && epoch > self.state.epoch => {
                self.state.early.entry(epoch).or_default().push((from, frame));
            }
            // Frames of older views, or of epochs already over, are ignored.
            Some(_) => {}
            None => tracing::warn!(peer = from, "unexpected frame for the epoch driver"),
        }
    }

    /// Merges a peer's announced view into ours; any news (a node restarted) means the
    /// cluster has to agree again.
    fn observe_view(&mut self, from: NodeId, view: Vec<u32>, durable_epoch: u64, answer_wanted: bool) {
        let observation = match self.state.views.observe(from, &view, durable_epoch, answer_wanted, self.state.synced) {
            Ok(observation) => observation,
            Err(refusal @ ViewRefusal::WrongClusterSize { .. }) => {
                tracing::error!(peer = from, %refusal, "announcement refused");
                return;
            }
            Err(ViewRefusal::StaleIncarnation) => return,
        };
        if observation.claims_newer_self {
            tracing::error!(peer = from, "peer claims a newer incarnation of this node; ignoring it");
        }
        for &node in &observation.restarted {
            // The node restarted: the ring handle to it may address its old memory.
            self.transport.reconnect(node);
        }
        if let Some(announced) = observation.answer {
            self.transport.send(from, &Frame::Resync { view, durable_epoch: announced, answer_wanted: false });
        }
        if !observation.restarted.is_empty() {
            if self.state.synced {
                let view = self.state.views.view();
                tracing::warn!(node = self.node, ?view, "a node restarted; the cluster agrees again");
            }
            self.state.synced = false;
            self.cluster_stats.synced.store(false, Ordering::Release);
        }
    }

    /// Agrees with every peer on the view and rolls back what is not durable everywhere.
    /// Returns false when the node stopped instead.
    fn agree_on_view(&mut self) -> bool {
        // Forwarded requests may never be answered in the old view; their clients retry
        // under the same ids (see `forward`).
        self.forwards.fail_all(&Rejection::Retry("the cluster view changed while the request was forwarded".into()));
        let (flushed, durable) = crossbeam_channel::bounded(1);
        if self.commits.send(CommitMessage::Flush(flushed)).is_err() {
            return false;
        }
        let Ok(durable_epoch) = durable.recv() else { return false };
        let mut announced_view: Option<Vec<u32>> = None;
        let mut announced_at = Instant::now();
        let agreement = loop {
            let view = self.state.views.view();
            if announced_view.as_deref() != Some(view) || announced_at.elapsed() >= RESYNC_REPEAT {
                let frame = Frame::Resync { view: view.to_vec(), durable_epoch, answer_wanted: true };
                self.transport.broadcast(&frame);
                announced_view = Some(view.to_vec());
                announced_at = Instant::now();
            }
            if let Some(agreement) = self.state.views.agreement(durable_epoch) {
                break agreement;
            }
            if self.state.stopping.is_some() {
                return false;
            }
            match self.inbox.recv_timeout(Duration::from_millis(20)) {
                Ok(message) => self.absorb(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        };
        let Agreement { epoch: agreed_epoch, generation } = agreement;
        let (done, finished) = crossbeam_channel::bounded(1);
        let rollback = CommitMessage::Rollback { agreed: agreed_epoch, generation, done };
        if self.commits.send(rollback).is_err() {
            return false;
        }
        match finished.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot roll back to the agreed epoch; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
            }
            Err(_) => return false,
        }
        // Every key reloads from storage, as of the agreed epoch, and so does the lease
        // table.
        let old_slots = std::mem::replace(&mut self.state.slots, SlotStore::new());
        if self.state.threads_written_off > 0 {
            // A plugin call abandoned earlier may still hold slices of pinned values in
            // these slots: they must never be freed.
            std::mem::forget(old_slots);
        }
        self.state.request_ids.clear();
        if let Err(error) = self.reload_leases(agreed_epoch) {
            tracing::error!(%error, "cannot read the lease table; the node stops taking work");
            self.stats.failed.store(true, Ordering::Release);
        }
        self.stats.resident_keys.store(0, Ordering::Relaxed);
        self.state.epoch = agreed_epoch;
        self.state.generation = generation;
        self.state.early.retain(|&epoch, _| epoch > agreed_epoch);
        for frames in self.state.early.values_mut() {
            frames.retain(|(_, frame)| frame_epoch(frame).is_some_and(|(g, _)| g == generation));
        }
        self.state.views.agreed(durable_epoch);
        self.state.synced = true;
        self.cluster_stats.generation.store(generation, Ordering::Release);
        self.cluster_stats.leases_lent.store(0, Ordering::Release);
        self.cluster_stats.synced.store(true, Ordering::Release);
        // Forwards sent while the view was being agreed may have gone to a node that
        // refused or never saw them.
        self.forwards.fail_all(&Rejection::Retry("the cluster view changed while the request was forwarded".into()));
        self.baseline_view_agreed(generation);
        TransactionStats::count(&self.cluster_stats.view_changes, 1);
        tracing::info!(node = self.node, view = ?self.state.views.view(), agreed_epoch, generation, "cluster view agreed");
        true
    }

    /// Rebuilds the lease table from the moves stored up to `agreed_epoch`: moves in
    /// effect by then are applied, later ones wait for their epoch.
    fn reload_leases(&mut self, agreed_epoch: u64) -> Result<(), crate::storage::StorageError> {
        let prefix = LEASE_TABLE.to_be_bytes();
        self.state.pending_moves.clear();
        self.state.announce.clear();
        self.state.moving.clear();
        self.state.counts = AccessCounts::new(self.node_count, self.state.placement.unwrap_or_default());
        let mut stored = Vec::new();
        for (entry_key, value) in self.storage.scan_values(&prefix)? {
            let Some((from, to, effective_epoch)) = decode_lease_entry(&value) else {
                return Err(crate::storage::StorageError::Corrupt { what: "lease table entry" });
            };
            stored.push(StoredMove { key: entry_key[prefix.len()..].to_vec(), from, to, effective_epoch });
        }
        let (applied, next) = leases_as_of(stored, agreed_epoch);
        for StoredMove { key, from, to, effective_epoch } in next {
            self.state.moving.insert(key.clone());
            self.state.pending_moves.entry(effective_epoch).or_default().push(LeaseMove { key, from, to });
        }
        let table = LeaseTable::home(self.node_count).with_moves(applied);
        self.cluster_stats.lease_table_digest.store(table.digest(), Ordering::Release);
        self.leases.publish(table);
        Ok(())
    }

    /// Puts the moves in effect from `epoch` into the lease table. For leases this node
    /// gives up, the value goes to the new holder with this epoch's batch, and the key
    /// leaves this node (memory and, with this epoch's record, storage).
    fn apply_moves(
        &mut self,
        epoch: u64,
        moves: Vec<LeaseMove>,
        transfers: &mut [Vec<KeyValue>],
        record_extra: &mut Vec<KeyValue>,
    ) -> Result<(), crate::storage::StorageError> {
        let me = self.node;
        let leaving: Vec<&LeaseMove> = moves.iter().filter(|m| m.from == me).collect();
        let not_resident: Vec<&[u8]> =
            leaving.iter().filter(|m| self.state.slots.lookup(&m.key).is_none()).map(|m| m.key.as_slice()).collect();
        let mut stored: FxHashMap<&[u8], Option<Vec<u8>>> =
            not_resident.iter().copied().zip(self.storage.read_values(&not_resident)?).collect();
        let (mut moved, mut bytes) = (0u64, 0u64);
        for lease_move in &leaving {
            let value = match self.state.slots.lookup(&lease_move.key) {
                // SAFETY: between epochs only the driver touches slots.
                Some((_, pointer)) => unsafe { pointer.get().value() }.map(<[u8]>::to_vec),
                None => stored.remove(lease_move.key.as_slice()).flatten(),
            };
            self.state.slots.remove(&lease_move.key);
            bytes += value.as_ref().map_or(0, |v| v.len() as u64);
            moved += 1;
            transfers[usize::from(lease_move.to)].push((lease_move.key.clone(), value));
            record_extra.push((lease_move.key.clone(), None));
        }
        for lease_move in &moves {
            self.state.moving.remove(&lease_move.key);
            self.state.counts.forget(&lease_move.key);
        }
        let table = self.leases.current().with_moves(moves.into_iter().map(|m| (m.key.into_boxed_slice(), m.to)));
        self.cluster_stats.lease_table_digest.store(table.digest(), Ordering::Release);
        self.leases.publish(table);
        TransactionStats::count(&self.cluster_stats.lease_moves_total, moved);
        TransactionStats::count(&self.cluster_stats.bytes_migrated_total, bytes);
        metrics::counter!(crate::metrics::LEASE_MOVES_TOTAL).increment(moved);
        metrics::counter!(crate::metrics::BYTES_MIGRATED_TOTAL).increment(bytes);
        tracing::debug!(epoch, moved, bytes, "leases moved");
        Ok(())
    }

    /// The lease epoch of this view: leases granted under an older view are void.
    fn lease_epoch(&self) -> u64 {
        self.state.generation
    }

    /// Waits for the next message while an epoch runs; a stopping node gives up after a
    /// while (its peers may be gone).
    fn next_message(&mut self) -> Result<DriverMessage, Interrupted> {
        loop {
            match self.inbox.recv_timeout(Duration::from_millis(100)) {
                Ok(message) => return Ok(message),
                Err(RecvTimeoutError::Timeout) if self.stopping_too_long() => return Err(Interrupted::Stopping),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(Interrupted::Stopping),
            }
        }
    }

    /// As [`ClusterDriver::next_message`], but while transactions run and calls may be
    /// abandoned it returns at least every check period (`Ok(None)`: nothing arrived), so
    /// that the caller can look for overdue calls.
    fn next_message_watching(&mut self, in_flight: usize) -> Result<Option<DriverMessage>, Interrupted> {
        let Some(limit) = self.abandon_after.filter(|_| in_flight > 0) else { return self.next_message().map(Some) };
        match self.inbox.recv_timeout(abandon_check_period(limit)) {
            Ok(message) => Ok(Some(message)),
            Err(RecvTimeoutError::Timeout) if self.stopping_too_long() => Err(Interrupted::Stopping),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Interrupted::Stopping),
        }
    }

    /// Abandons the local transactions of `epoch` whose plugin call has run longer than
    /// `abandon_after` (at most once per check period): each gets the outcome
    /// `plugin-timed-out`, recorded under its request id as `run_once` would have, and is
    /// reported to the driver's own inbox as executed, so its keys go back to their
    /// holders unchanged and the epoch finishes on every node. Its thread is replaced.
    fn abandon_overdue(&mut self, work: &EpochWork, epoch: u64) {
        let Some(limit) = self.abandon_after else { return };
        if self.state.abandon_checked_at.elapsed() < abandon_check_period(limit) {
            return;
        }
        self.state.abandon_checked_at = Instant::now();
        let now = now_us();
        let limit_us = limit.as_micros() as u64;
        for (index, started) in work.started_us.iter().enumerate() {
            let started = started.load(Ordering::Acquire);
            if started == 0 || now.saturating_sub(started) <= limit_us || !work.claims[index].abandon() {
                continue;
            }
            let outcome = crate::txn::executor::abandoned(&work.transactions[index], (now - started) / 1000);
            if let Some(pointer) = work.id_slots[index] {
                let mut encoded = Vec::new();
                crate::storage::codec::encode_stored_result_into(
                    &mut encoded,
                    &outcome,
                    crate::storage::unix_seconds_now(),
                );
                // SAFETY: the driver won the claim, so the transaction's thread touches no
                // slot any more, and its successors wait for the report below.
                unsafe { pointer.get().set(Some(&encoded)) };
            }
            self.state.threads_written_off += 1;
            if let Err(error) = self.pool.write_off(1) {
                tracing::error!(%error, "cannot start an executor thread to replace one lost to an abandoned call");
            }
            let _ = self.loopback.send(DriverMessage::Executed { epoch, transaction: index as u32, outcome });
        }
    }

    /// Request-id keys leave memory once the epoch that wrote them is checkpointed.
    fn forget_checkpointed_request_ids(&mut self) {
        let checkpointed = self.stats.checkpointed_epoch.load(Ordering::Acquire);
        while self.state.request_ids.front().is_some_and(|(written, _)| *written <= checkpointed) {
            let (_, key) = self.state.request_ids.pop_front().expect("checked above");
            self.state.slots.remove(&key);
        }
    }

    fn run_epoch(&mut self) -> Result<(), Interrupted> {
        if self.state.baseline.is_some() {
            return self.run_baseline_epoch();
        }
        let closed_at = Instant::now();
        let me = self.node;
        let take = self.state.pending.len().min(self.epoch_transactions_max);
        let batch: Vec<Submission> = self.state.pending.drain(..take).collect();
        let runnable = if self.stats.failed.load(Ordering::Acquire) {
            let rejection = Rejection::Storage("the node stopped after a storage failure".into());
            reject_all(batch.into_iter().map(|s| s.reply), &rejection);
            Vec::new()
        } else {
            batch
        };
        self.state.epoch += 1;
        let epoch = self.state.epoch;
        let generation = self.state.generation;
        let _span = tracing::debug_span!("cluster_epoch", epoch, transactions = runnable.len()).entered();

        // Leases that change hands from this epoch on.
        let node_count = usize::from(self.node_count);
        let mut transfers: Vec<Vec<KeyValue>> = (0..node_count).map(|_| Vec::new()).collect();
        let mut record_extra: Vec<KeyValue> = Vec::new();
        if let Some(moves) = self.state.pending_moves.remove(&epoch) {
            if let Err(error) = self.apply_moves(epoch, moves, &mut transfers, &mut record_extra) {
                tracing::error!(%error, "cannot read keys to move; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
                return Err(self.abandon(runnable, Interrupted::Stopping));
            }
        }
        self.state.touched.clear();
        let counting = self.state.placement.is_some();

        self.forget_checkpointed_request_ids();

        // 1. Where each access goes.
        let table = self.leases.current();
        let mut outgoing: Vec<Vec<RemoteTransaction>> = (0..node_count).map(|_| Vec::new()).collect();
        // Per transaction: the holders it borrows from; per holder: what this node borrows.
        let mut groups: Vec<Vec<NodeId>> = Vec::with_capacity(runnable.len());
        let mut borrowing: Vec<Borrowing> = (0..node_count).map(|_| Borrowing::default()).collect();
        // Per transaction, per access: the holder and position of its borrowed key.
        let mut copy_positions: Vec<Vec<Option<(NodeId, u32)>>> = Vec::with_capacity(runnable.len());
        // Per transaction, per access: the storage key, whether it is held here, and the
        // mode. A tracked request has one more access after its declared ones: its
        // request-id key, which holds its outcome once it ran (exactly-once anywhere in the
        // cluster: a retry through any node meets the outcome at the id's holder).
        let mut storage_keys: Vec<Vec<(Vec<u8>, bool, AccessMode)>> = Vec::with_capacity(runnable.len());
        let (mut local_accesses, mut remote_accesses) = (0u64, 0u64);
        for (sequence, submission) in runnable.iter().enumerate() {
            let transaction = &submission.transaction;
            let mut keys = Vec::with_capacity(transaction.accesses.len());
            let mut transaction_groups: Vec<NodeId> = Vec::new();
            let mut positions = Vec::with_capacity(transaction.accesses.len() + 1);
            let declared = transaction.accesses.entries().iter().map(|entry| {
                let mut key = Vec::new();
                let table_id = transaction.plugin.tables[entry.table as usize].table_id;
                data_key_into(&mut key, table_id, transaction.accesses.key(entry));
                (key, entry.mode)
            });
            let request_id = transaction.request_id.is_tracked().then(|| {
                let mut key = Vec::new();
                data_key_into(&mut key, REQUEST_ID_TABLE, transaction.request_id.id_bytes());
                (key, AccessMode::Write)
            });
            let declared_count = transaction.accesses.len();
            for (index, (key, mode)) in declared.chain(request_id).enumerate() {
                let holder = table.holder(&key);
                // The local share counts declared accesses; a request id's key is an
                // exactly-once record at the id's holder, not data the request chose.
                let is_declared = index < declared_count;
                if holder == me {
                    local_accesses += u64::from(is_declared);
                    if counting && is_declared && self.state.counts.record(&key, me, epoch) {
                        self.state.touched.push(key.clone());
                    }
                    positions.push(None);
                } else {
                    remote_accesses += u64::from(is_declared);
                    let batch = &mut outgoing[usize::from(holder)];
                    if batch.last().is_none_or(|last| last.sequence != sequence as u32) {
                        batch.push(RemoteTransaction { sequence: sequence as u32, keys: Vec::new() });
                    }
                    batch.last_mut().expect("pushed above").keys.push((mode, key.clone()));
                    let lender = &mut borrowing[usize::from(holder)];
                    let known = lender.positions.get(&key).copied();
                    let position = merge_key(&mut lender.keys, known, || key.clone(), mode);
                    if known.is_none() {
                        lender.positions.insert(key.clone(), position);
                    }
                    if !transaction_groups.contains(&holder) {
                        transaction_groups.push(holder);
                        lender.borrowers.push(sequence as u32);
                        lender.unfinished += 1;
                    }
                    positions.push(Some((holder, position)));
                }
                keys.push((key, holder == me, mode));
            }
            storage_keys.push(keys);
            groups.push(transaction_groups);
            copy_positions.push(positions);
        }
        // Where each holder's borrowed copies start in the epoch's list of copies.
        let mut copy_base = Vec::with_capacity(node_count);
        let mut copies_total = 0usize;
        for lender in &borrowing {
            copy_base.push(copies_total);
            copies_total += lender.keys.len();
        }
        TransactionStats::count(&self.cluster_stats.local_accesses, local_accesses);
        TransactionStats::count(&self.cluster_stats.remote_accesses, remote_accesses);
        metrics::counter!(crate::metrics::LOCAL_ACCESSES_TOTAL).increment(local_accesses);
        metrics::counter!(crate::metrics::REMOTE_ACCESSES_TOTAL).increment(remote_accesses);

        // 2. Exchange virtual vertices.
        let announced = std::mem::take(&mut self.state.announce);
        for peer in self.transport.peers() {
            let transactions = std::mem::take(&mut outgoing[usize::from(peer)]);
            let moves = announced.clone();
            let transfers = std::mem::take(&mut transfers[usize::from(peer)]);
            let sequenced = runnable.len() as u32;
            self.transport.send(peer, &Frame::Batch { generation, epoch, sequenced, transactions, moves, transfers });
        }
        let mut incoming: Vec<Option<Vec<RemoteTransaction>>> = (0..node_count).map(|_| None).collect();
        // Lease moves announced this epoch (in effect from the next), by announcing node,
        // and the values of keys whose lease passes to this node now.
        let mut announcements: Vec<(NodeId, Vec<LeaseMoveAnnouncement>)> = vec![(me, announced)];
        let mut arriving: Vec<KeyValue> = Vec::new();
        let mut deferred: Vec<(NodeId, Frame)> = Vec::new();
        for (from, frame) in self.state.early.remove(&epoch).unwrap_or_default() {
            match frame {
                Frame::Batch { sequenced, transactions, moves, transfers, .. } => {
                    self.state.loads.record(from, sequenced, epoch);
                    incoming[usize::from(from)] = Some(transactions);
                    announcements.push((from, moves));
                    arriving.extend(transfers);
                }
                other => deferred.push((from, other)),
            }
        }
        let barrier_started = Instant::now();
        while self.transport.peers().any(|peer| incoming[usize::from(peer)].is_none()) {
            let message = match self.next_message() {
                Ok(message) => message,
                Err(interrupted) => return Err(self.abandon(runnable, interrupted)),
            };
            match message {
                DriverMessage::Peer { from, frame } if frame_epoch(&frame) == Some((generation, epoch)) => {
                    match frame {
                        Frame::Batch { sequenced, transactions, moves, transfers, .. } => {
                            self.state.loads.record(from, sequenced, epoch);
                            incoming[usize::from(from)] = Some(transactions);
                            announcements.push((from, moves));
                            arriving.extend(transfers);
                        }
                        other => deferred.push((from, other)),
                    }
                }
                other => self.absorb(other),
            }
            if !self.state.synced {
                return Err(self.abandon(runnable, Interrupted::ViewChanged));
            }
        }
        metrics::histogram!(crate::metrics::EPOCH_BARRIER_SECONDS).record(barrier_started.elapsed().as_secs_f64());
        self.state.loads.record(me, runnable.len() as u32, epoch);
        self.cluster_stats.loads.store(Arc::new(self.state.loads.counts().to_vec()));
        self.cluster_stats.spare_loads.store(Arc::new(self.state.loads.spare_loads()));

        // Every node learned the same announcements with this epoch's batches; each keeps
        // them in its record of this epoch, so that they survive (or are undone) with it.
        let lease_epoch = self.lease_epoch();
        for (from, moves) in announcements {
            for (key, to) in moves {
                if to >= self.node_count || to == from {
                    tracing::error!(peer = from, to, "ignoring an invalid lease move");
                    continue;
                }
                record_extra.push((lease_entry_key(&key), Some(encode_lease_entry(from, to, epoch + 1))));
                if from == me {
                    self.state.moving.insert(key.clone());
                }
                self.state.pending_moves.entry(epoch + 1).or_default().push(LeaseMove { key, from, to });
            }
        }
        let mut dirty: Vec<SlotPointer> = Vec::new();
        for (key, value) in arriving {
            let pointer = match self.state.slots.lookup(&key) {
                Some((_, pointer)) => {
                    // SAFETY: between executions only the driver touches slots.
                    unsafe { pointer.get().set(value.as_deref()) };
                    pointer
                }
                None => self.state.slots.insert(&key, value).1,
            };
            // SAFETY: as above.
            let slot = unsafe { pointer.get() };
            slot.lease_word().store(LeaseWord::held(me, lease_epoch).0, Ordering::Release);
            // The new holder persists the key with this epoch.
            if slot.mark_dirty(epoch) {
                dirty.push(pointer);
            }
        }

        // 3. Resident keys: the local keys of local transactions, then every key of the
        // virtual vertices (in node order), resolved in one batched lookup whose cache
        // misses overlap (`storage::key_index`); the steps below take the slots from
        // `resolved` in the same order instead of looking each key up again.
        let (resolved, local_resolved_count) = {
            let mut lookup_keys: Vec<&[u8]> = Vec::new();
            for keys in &storage_keys {
                lookup_keys.extend(keys.iter().filter(|(_, local, _)| *local).map(|(key, _, _)| key.as_slice()));
            }
            let local_count = lookup_keys.len();
            for transactions in incoming.iter().flatten() {
                for transaction in transactions {
                    lookup_keys.extend(transaction.keys.iter().map(|(_, key)| key.as_slice()));
                }
            }
            let mut found = Vec::with_capacity(lookup_keys.len());
            self.state.slots.lookup_many(lookup_keys.iter().copied(), &mut found);
            let store = &mut self.state.slots;
            let loaded = self.storage.load_missing(lookup_keys.iter().copied(), found, |key, value| {
                let (number, pointer) = store.insert(key, value);
                // SAFETY: the store is alive; nothing else uses a new slot.
                let slot = unsafe { pointer.get() };
                slot.lease_word().store(LeaseWord::held(me, lease_epoch).0, Ordering::Release);
                (number, pointer)
            });
            match loaded {
                Ok(resolved) => (resolved, local_count),
                Err(error) => {
                    // The peers wait for this node's part of the epoch, which it cannot
                    // give: stop taking work (the node must be restarted).
                    tracing::error!(%error, "cannot load keys; the node stops taking work");
                    self.stats.failed.store(true, Ordering::Release);
                    return Err(self.abandon(runnable, Interrupted::Stopping));
                }
            }
        };
        self.stats.resident_keys.store(self.state.slots.len() as u64, Ordering::Relaxed);
        let (local_resolved, virtual_resolved) = resolved.split_at(local_resolved_count);

        // 4. The vertices in timestamp order, and the graph over the keys held here.
        let mut vertices: Vec<Vertex> = Vec::new();
        let mut vertex_keys: Vec<Vec<(u32, AccessMode)>> = Vec::new();
        let mut local_base = 0u32;
        // Per borrowing node: its one virtual vertex here.
        let mut virtual_vertex: Vec<Option<u32>> = vec![None; node_count];
        let mut local_slots = local_resolved.iter();
        let mut virtual_slots = virtual_resolved.iter();
        for node in 0..self.node_count {
            if node == me {
                local_base = vertices.len() as u32;
                for (sequence, transaction_keys) in storage_keys.iter().enumerate() {
                    // Borrowed keys are in the graph too: this node's transactions that
                    // share a borrowed copy run in timestamp order on it.
                    let keys = transaction_keys
                        .iter()
                        .zip(&copy_positions[sequence])
                        .map(|((_, local, mode), position)| match position {
                            None => {
                                debug_assert!(*local);
                                (local_slots.next().expect("one resolved slot per local key").0, *mode)
                            }
                            Some((holder, position)) => {
                                (borrowed_key_number(copy_base[usize::from(*holder)] + *position as usize), *mode)
                            }
                        })
                        .collect();
                    vertices.push(Vertex::Local { transaction: sequence as u32 });
                    vertex_keys.push(keys);
                }
                continue;
            }
            // One vertex for all of the node's transactions on keys held here, over the
            // union of their keys (they are contiguous in timestamp order).
            let transactions = incoming[usize::from(node)].take().unwrap_or_default();
            if transactions.is_empty() {
                continue;
            }
            let mut numbers: Vec<(u32, AccessMode)> = Vec::new();
            let mut keys: Vec<(SlotPointer, AccessMode)> = Vec::new();
            let mut positions: FxHashMap<u32, u32> = FxHashMap::default();
            for transaction in &transactions {
                for (mode, key) in &transaction.keys {
                    let (number, pointer) = *virtual_slots.next().expect("one resolved slot per virtual key");
                    let known = positions.get(&number).copied();
                    let position = merge_key(&mut numbers, known, || number, *mode);
                    merge_key(&mut keys, known, || pointer, *mode);
                    if known.is_none() {
                        positions.insert(number, position);
                    }
                    if counting && !is_request_id_key(key) && self.state.counts.record(key, node, epoch) {
                        self.state.touched.push(key.clone());
                    }
                }
            }
            virtual_vertex[usize::from(node)] = Some(vertices.len() as u32);
            vertices.push(Vertex::Virtual { from: node, sequence: 0, keys });
            vertex_keys.push(numbers);
        }
        let graph = self.state.graph_builder.build(vertices.len(), |v| vertex_keys[v].iter().copied());

        // 5. Prepared transactions: local keys point into the store, borrowed keys to
        // copies shared by this node's transactions (one per borrowed key).
        let borrowed: Vec<Slot> =
            borrowing.iter().flat_map(|lender| lender.keys.iter().map(|(key, _)| Slot::detached(key, None))).collect();
        let mut transactions = Vec::with_capacity(runnable.len());
        let mut replies = Vec::with_capacity(runnable.len());
        let mut id_slots: Vec<Option<SlotPointer>> = Vec::with_capacity(runnable.len());
        let mut local_slots = local_resolved.iter();
        for (sequence, submission) in runnable.into_iter().enumerate() {
            let Submission { transaction, reply } = submission;
            let mut slots: Vec<(u32, SlotPointer)> = copy_positions[sequence]
                .iter()
                .map(|position| match position {
                    None => *local_slots.next().expect("one resolved slot per local key"),
                    Some((holder, position)) => {
                        let copy = &borrowed[copy_base[usize::from(*holder)] + *position as usize];
                        (u32::MAX, SlotPointer::to(copy))
                    }
                })
                .collect();
            // The request-id slot is not one of the declared accesses the plugin may use.
            let id_slot = transaction.request_id.is_tracked().then(|| slots.pop().expect("the id access is last").1);
            id_slots.push(id_slot);
            let timestamp = Timestamp { epoch, node: me, sequence: sequence as u32 };
            transactions.push(PreparedTransaction { planned: transaction, timestamp, slots });
            replies.push(reply);
        }
        let claims = (0..transactions.len()).map(|_| Claim::new()).collect();
        let started_us = (0..transactions.len()).map(|_| AtomicU64::new(0)).collect();
        let work = Arc::new(EpochWork { transactions, id_slots, borrowed, claims, started_us });
        let abandonable = self.abandon_after.is_some();

        // 6. Execute.
        let mut remaining: Vec<u32> = graph.indegree.clone();
        for (vertex, kind) in vertices.iter().enumerate() {
            if let Vertex::Local { transaction } = kind {
                remaining[vertex] += groups[*transaction as usize].len() as u32;
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = (0..work.transactions.len()).map(|_| None).collect();
        let mut ready: Vec<u32> = (0..vertices.len() as u32).filter(|&v| remaining[v as usize] == 0).collect();
        let mut finished = 0usize;
        let mut in_flight = 0usize;
        let mut pending_frames: VecDeque<(NodeId, Frame)> = deferred.into();
        loop {
            while let Some(vertex) = ready.pop() {
                match &vertices[vertex as usize] {
                    Vertex::Local { transaction } => {
                        let transaction = *transaction;
                        self.check_local_leases(&work.transactions[transaction as usize], lease_epoch);
                        in_flight += 1;
                        let work = work.clone();
                        let done = self.loopback.clone();
                        self.pool.spawn(move || {
                            let index = transaction as usize;
                            let claim = abandonable.then(|| {
                                work.started_us[index].store(now_us(), Ordering::Release);
                                &work.claims[index]
                            });
                            // `None`: abandoned meanwhile; the driver reported it.
                            let outcome = run_once(&work.transactions[index], work.id_slots[index], claim);
                            // Released before reporting, so that the driver owns the
                            // epoch's work alone once every transaction reported.
                            drop(work);
                            if let Some(outcome) = outcome {
                                let _ = done.send(DriverMessage::Executed { epoch, transaction, outcome });
                            }
                        });
                    }
                    Vertex::Virtual { from, sequence, keys } => {
                        let mut values = Vec::with_capacity(keys.len());
                        for (pointer, mode) in keys {
                            // SAFETY: the graph orders this vertex after every conflicting
                            // one; concurrent local readers only read.
                            let slot = unsafe { pointer.get() };
                            if *mode == AccessMode::Write {
                                let word = LeaseWord(slot.lease_word().load(Ordering::Acquire));
                                let lent = word.lend(me, *from, lease_epoch).unwrap_or_else(|error| {
                                    panic!("lease invariant broken when lending to node {from}: {error}")
                                });
                                slot.lease_word().store(lent.0, Ordering::Release);
                                TransactionStats::count(&self.cluster_stats.leases_lent, 1);
                            }
                            // SAFETY: as above.
                            values.push(unsafe { slot.value() }.map(<[u8]>::to_vec));
                        }
                        let frame = Frame::Handover { generation, epoch, sequence: *sequence, lease_epoch, values };
                        self.transport.send(*from, &frame);
                    }
                }
            }
            if finished == vertices.len() {
                break;
            }
            if in_flight > 0 {
                self.abandon_overdue(&work, epoch);
            }
            let message = match pending_frames.pop_front() {
                Some((from, frame)) => DriverMessage::Peer { from, frame },
                None => match self.next_message_watching(in_flight) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(interrupted) => {
                        self.wait_for_executions(&work, epoch, in_flight);
                        return Err(self.abandon_prepared(replies, interrupted));
                    }
                },
            };
            match message {
                DriverMessage::Executed { epoch: executed_epoch, transaction, outcome } if executed_epoch == epoch => {
                    in_flight -= 1;
                    let committed = outcome.is_committed();
                    let prepared = &work.transactions[transaction as usize];
                    for &holder in &groups[transaction as usize] {
                        let lender = &mut borrowing[usize::from(holder)];
                        lender.unfinished -= 1;
                        if lender.unfinished > 0 {
                            continue;
                        }
                        // Every transaction that borrowed from the holder finished: the
                        // copies hold what they committed (and their request ids'
                        // outcomes, aborts included); the holder gets them all back.
                        let base = copy_base[usize::from(holder)];
                        let writes = lender
                            .keys
                            .iter()
                            .enumerate()
                            .map(|(offset, (_, mode))| {
                                if *mode == AccessMode::Read {
                                    return KeyWrite::Unchanged;
                                }
                                // SAFETY: every transaction using these copies finished.
                                match unsafe { work.borrowed[base + offset].value() } {
                                    Some(value) => KeyWrite::Set(value.to_vec()),
                                    None => KeyWrite::Delete,
                                }
                            })
                            .collect();
                        let frame = Frame::WriteBack { generation, epoch, sequence: 0, lease_epoch, writes };
                        self.transport.send(holder, &frame);
                    }
                    let keys = &storage_keys[transaction as usize];
                    if committed {
                        for ((_, local, mode), (_, pointer)) in keys.iter().zip(&prepared.slots) {
                            // SAFETY: as above; the slot belongs to this node's store.
                            if *local && *mode == AccessMode::Write && unsafe { pointer.get() }.mark_dirty(epoch) {
                                dirty.push(*pointer);
                            }
                        }
                    }
                    if let (Some(pointer), Some((_, true, _))) = (work.id_slots[transaction as usize], keys.last()) {
                        // SAFETY: as above.
                        if prepared.planned.request_id.is_tracked() && unsafe { pointer.get() }.mark_dirty(epoch) {
                            dirty.push(pointer);
                        }
                    }
                    outcomes[transaction as usize] = Some(outcome);
                    finished += 1;
                    Self::complete(&graph, local_base + transaction, &mut remaining, &mut ready);
                }
                DriverMessage::Peer { from, frame } if frame_epoch(&frame) == Some((generation, epoch)) => {
                    match frame {
                        Frame::Handover { values, .. } => {
                            let Some(lender) = borrowing.get_mut(usize::from(from)) else { continue };
                            if lender.borrowers.is_empty() || lender.handed_over {
                                tracing::error!(peer = from, "handover of keys this node did not ask for (again)");
                                continue;
                            }
                            if values.len() != lender.keys.len() {
                                tracing::error!(peer = from, "handover with the wrong number of values");
                                continue;
                            }
                            lender.handed_over = true;
                            let base = copy_base[usize::from(from)];
                            for (offset, value) in values.into_iter().enumerate() {
                                // SAFETY: no transaction that uses these copies has started:
                                // each waits for this handover.
                                unsafe { work.borrowed[base + offset].set(value.as_deref()) };
                            }
                            for &transaction in &lender.borrowers {
                                let vertex = local_base + transaction;
                                remaining[vertex as usize] -= 1;
                                if remaining[vertex as usize] == 0 {
                                    ready.push(vertex);
                                }
                            }
                        }
                        Frame::WriteBack { lease_epoch: offered, writes, .. } => {
                            let Some(vertex) = virtual_vertex.get_mut(usize::from(from)).and_then(Option::take) else {
                                tracing::error!(peer = from, "write-back from a node that was lent nothing (or again)");
                                continue;
                            };
                            let Vertex::Virtual { keys, .. } = &vertices[vertex as usize] else {
                                unreachable!("the virtual index holds virtual vertices only")
                            };
                            if writes.len() != keys.len() {
                                // The keys stay lent: the peer broke the protocol, and only a
                                // new view (a restart) takes them back.
                                tracing::error!(peer = from, "write-back with the wrong number of keys");
                                continue;
                            }
                            for ((pointer, mode), write) in keys.iter().zip(writes) {
                                if *mode == AccessMode::Read {
                                    continue;
                                }
                                // SAFETY: the key is lent to `from`; no local transaction uses it.
                                let slot = unsafe { pointer.get() };
                                let word = LeaseWord(slot.lease_word().load(Ordering::Acquire));
                                match word.take_back(me, from, offered) {
                                    Ok(returned) => {
                                        match write {
                                            KeyWrite::Unchanged => {}
                                            // SAFETY: as above.
                                            KeyWrite::Set(value) => unsafe { slot.set(Some(&value)) },
                                            KeyWrite::Delete => unsafe { slot.set(None) },
                                        }
                                        if slot.mark_dirty(epoch) {
                                            dirty.push(*pointer);
                                        }
                                        slot.lease_word().store(returned.0, Ordering::Release);
                                        self.cluster_stats.leases_lent.fetch_sub(1, Ordering::AcqRel);
                                    }
                                    Err(error) => {
                                        TransactionStats::count(&self.cluster_stats.fenced_total, 1);
                                        metrics::counter!(crate::metrics::FENCED_TOTAL).increment(1);
                                        tracing::error!(%error, peer = from, "write-back refused");
                                    }
                                }
                            }
                            finished += 1;
                            Self::complete(&graph, vertex, &mut remaining, &mut ready);
                        }
                        _ => {}
                    }
                }
                other => self.absorb(other),
            }
            if !self.state.synced {
                self.wait_for_executions(&work, epoch, in_flight);
                return Err(self.abandon_prepared(replies, Interrupted::ViewChanged));
            }
        }

        // 7. Commit, and decide which leases to give up.
        let mut record = EpochRecord::new(epoch);
        for (key, value) in &record_extra {
            record.stage_value(key, value.as_deref());
        }
        self.decide_moves(epoch);
        for pointer in dirty {
            // SAFETY: execution has finished; the driver is the only user.
            let slot = unsafe { pointer.get() };
            record.stage_value(slot.storage_key(), unsafe { slot.value() });
            if is_request_id_key(slot.storage_key()) {
                self.state.request_ids.push_back((epoch, slot.storage_key().to_vec()));
            }
        }
        let request_ids: Vec<crate::model::RequestId> = match Arc::try_unwrap(work) {
            Ok(work) => work.transactions.into_iter().map(|transaction| transaction.planned.request_id).collect(),
            Err(shared) => {
                // Only a thread stuck in an abandoned call still holds the epoch's work.
                assert!(
                    shared.claims.iter().any(Claim::is_abandoned),
                    "every execution finished, so no task holds the epoch"
                );
                shared.transactions.iter().map(|transaction| transaction.planned.request_id.clone()).collect()
            }
        };
        let mut to_release = Vec::with_capacity(replies.len());
        for ((request_id, outcome), reply) in request_ids.into_iter().zip(outcomes).zip(replies) {
            let outcome = outcome.expect("every local transaction ran");
            // A tracked outcome is already staged: its request-id key is a dirty slot.
            to_release.push((request_id, outcome, reply));
        }
        hand_over_epoch(&self.stats, &self.commits, EpochCommit { record, replies: to_release, closed_at });
        Ok(())
    }

    /// Picks the keys held here that another node's transactions use markedly more; they
    /// are announced with the next batch and change hands one epoch later.
    fn decide_moves(&mut self, epoch: u64) {
        let Some(config) = self.state.placement else { return };
        let table = self.leases.current();
        let touched = std::mem::take(&mut self.state.touched);
        for key in touched {
            if self.state.announce.len() >= config.moves_per_epoch_max {
                break;
            }
            // The counts first: they keep nearly every key where it is, and the checks
            // after them cost two more lookups.
            let Some(to) = self.state.counts.decide(&key, self.node, epoch) else { continue };
            if self.state.moving.contains(&key) || table.holder(&key) != self.node {
                continue;
            }
            self.state.moving.insert(key.clone());
            self.state.announce.push((key, to));
        }
    }

    /// Every key a local transaction uses here must be held by this node under the
    /// current lease epoch when it starts: a node without the lease must not write.
    fn check_local_leases(&self, transaction: &PreparedTransaction, lease_epoch: u64) {
        let held = LeaseWord::held(self.node, lease_epoch);
        for &(number, pointer) in &transaction.slots {
            if number == u32::MAX {
                continue; // A borrowed copy.
            }
            // SAFETY: the store is alive.
            let word = LeaseWord(unsafe { pointer.get() }.lease_word().load(Ordering::Acquire));
            assert_eq!(
                word, held,
                "lease invariant broken: a local transaction starts on a key this node does not hold"
            );
        }
    }

    fn complete(graph: &crate::txn::tpg::TaskGraph, vertex: u32, remaining: &mut [u32], ready: &mut Vec<u32>) {
        for &successor in graph.successors(vertex as usize) {
            remaining[successor as usize] -= 1;
            if remaining[successor as usize] == 0 {
                ready.push(successor);
            }
        }
    }

    /// Waits until the executor threads finished what they were given, so that the
    /// keys can be dropped safely.
    /// (A call that does not return is abandoned meanwhile, as during execution.)
    fn wait_for_executions(&mut self, work: &EpochWork, epoch: u64, mut in_flight: usize) {
        while in_flight > 0 {
            self.abandon_overdue(work, epoch);
            let message = match self.receive_while_draining() {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(Closed) => return,
            };
            match message {
                DriverMessage::Executed { .. } => in_flight -= 1,
                other => self.absorb(other),
            }
        }
    }

    /// The next message while an abandoned epoch's executions drain: at least every
    /// check period when calls may be abandoned (`Ok(None)`: nothing arrived), so that the
    /// caller can abandon overdue calls; a stopping node does not give up here.
    fn receive_while_draining(&self) -> Result<Option<DriverMessage>, Closed> {
        match self.abandon_after {
            Some(limit) => match self.inbox.recv_timeout(abandon_check_period(limit)) {
                Ok(message) => Ok(Some(message)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(Closed),
            },
            None => self.inbox.recv().map(Some).map_err(|_| Closed),
        }
    }

    fn rejection(interrupted: &Interrupted, epoch: u64) -> Rejection {
        match interrupted {
            Interrupted::ViewChanged => Rejection::Retry(format!("a node restarted during epoch {epoch}")),
            Interrupted::Stopping => Rejection::ShuttingDown,
        }
    }

    /// Gives up an epoch before its transactions were prepared.
    fn abandon(&mut self, runnable: Vec<Submission>, interrupted: Interrupted) -> Interrupted {
        let rejection = Self::rejection(&interrupted, self.state.epoch);
        reject_all(runnable.into_iter().map(|s| s.reply), &rejection);
        self.state.synced = false;
        interrupted
    }

    /// Gives up an epoch during execution. Its effects on this node's keys are dropped
    /// with the keys when the cluster agrees again.
    fn abandon_prepared(&mut self, replies: Vec<Reply>, interrupted: Interrupted) -> Interrupted {
        let rejection = Self::rejection(&interrupted, self.state.epoch);
        reject_all(replies, &rejection);
        self.state.synced = false;
        interrupted
    }
}

/// Runs a transaction unless its request id already holds an outcome (a retry, possibly
/// through another node), and records the outcome under the id. With a claim, `None`
/// when the driver abandoned the transaction meanwhile (it then records the outcome).
fn run_once(transaction: &PreparedTransaction, id_slot: Option<SlotPointer>, claim: Option<&Claim>) -> Option<Outcome> {
    let Some(pointer) = id_slot else { return execute(transaction, claim) };
    // SAFETY: the graph (at the id's holder) gives this transaction the id key alone.
    let slot = unsafe { pointer.get() };
    // SAFETY: as above.
    if let Some(stored) = unsafe { slot.value() } {
        match crate::storage::codec::decode_stored_result(stored) {
            Some(outcome) => return claim.is_none_or(Claim::finish).then_some(outcome),
            None => tracing::error!("unreadable stored outcome of a request id; running the request"),
        }
    }
    let outcome = execute(transaction, claim)?;
    let mut encoded = Vec::new();
    crate::storage::codec::encode_stored_result_into(&mut encoded, &outcome, crate::storage::unix_seconds_now());
    // SAFETY: as above; `execute` returned, so this thread won the claim (if any).
    unsafe { slot.set(Some(&encoded)) };
    Some(outcome)
}
