//! The baselines of a cluster (`cc = "2pl" | "occ"` with a cluster file): the cluster
//! driver's epoch when transactions run at once under 2PL or OCC on record slots in the
//! holders' fabric memory (`cc::over_fabric`, `cluster::records`), instead of under
//! leases.
//!
//! One epoch, at every node:
//! 1. **Close** the local batch. A tracked request's id is a key of this node (requests
//!    are forwarded to their id's holder, see `NodeHandle::route`): a retry whose id has
//!    an outcome gets it, a second request with an id already in the batch waits for the
//!    next epoch, so that one id runs at most once.
//! 2. **Resolve** the record slot of every declared key: this node's own keys in its
//!    region (loaded from storage on first use), other nodes' keys from the slot numbers
//!    they gave out earlier in the view, or by asking them now (`Resolve`/`Resolved`, one
//!    round trip per holder and epoch, only for keys never used here in this view).
//! 3. **Run** every transaction at once on the executor threads, under the protocol, on
//!    the slots directly: locks by fabric CAS and fetch-add, values by READ and WRITE.
//! 4. **Finish**: send every peer `EpochDone` with the values this node's transactions
//!    installed in its slots, and wait for every peer's. A node starts epoch `e+1` only
//!    after every node finished `e`, so everything a transaction of `e` saw was written
//!    in `e` or before: a cut at an epoch boundary is a consistent state.
//! 5. **Commit**: the holder logs, for each of its keys written in the epoch, the value
//!    with the highest write version (the last install), with the outcomes of its
//!    requests; the commit thread releases the replies once every node made the epoch
//!    durable, as under leases. A crash rolls every node back to the epoch durable
//!    everywhere, and every view gets fresh regions (see `cluster::records`).
//!
//! Within an epoch the protocol orders transactions; each takes a commit number from a
//! counter in node 0's region while it still holds what orders it (as the single-node
//! baselines reserve their sequence number), and clients see (epoch, commit number) as
//! its timestamp: the serial order of the cluster.
//!
//! A fabric failure while a transaction runs (a peer that does not answer over tcp)
//! refuses it with `Retry`. A failure in the middle of its installs can leave part of
//! them in the slots without reporting them to their holders; the holders' logs stay
//! consistent (only reported installs are logged), and the slots are replaced at the next
//! view change, which a peer that stopped answering brings about when it restarts.

use super::{frame_epoch, reject_all, ClusterDriver, Interrupted};
use crate::cc::fabric_records::RecordSlot;
use crate::cc::over_fabric::{self, CallWatch, CommitCounter, Protocol, Ran};
use crate::cc::twopl::{FIRST_TIMESTAMP, TIMESTAMP_MAX};
use crate::cc::ConcurrencyStats;
use crate::cluster::records::{PeerRecords, RecordRegion, NO_SLOT};
use crate::cluster::wire::{Frame, SlotWrite};
use crate::model::{NodeId, Outcome, Rejection, Timestamp};
use crate::storage::slots::{Slot, SlotPointer};
use crate::storage::{data_key_into, EpochRecord, REQUEST_ID_TABLE};
use crate::txn::access::AccessMode;
use crate::txn::commit::{hand_over_epoch, EpochCommit};
use crate::txn::epoch::DriverMessage;
use crate::txn::executor::{now_us, report_abandoned, Claim};
use crate::txn::{BatchKeys, PreparedTransaction, Reply, Submission, TransactionStats};
use leasehold_fabric::{Fabric, RemoteRegion};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The driver's state under a baseline protocol.
pub struct BaselineState {
    pub(super) protocol: Protocol,
    pub(super) fabric: Arc<dyn Fabric>,
    pub(super) concurrency: Arc<ConcurrencyStats>,
    /// This node's record region in the agreed view (none before the first agreement).
    pub(super) region: Option<RecordRegion>,
    /// What this node knows of each peer's region in the agreed view, by node id.
    pub(super) peers: Vec<Option<PeerRecords>>,
    /// `Resolve` requests of a view this node has not agreed on yet.
    pub(super) early_resolves: Vec<(NodeId, u64, Vec<Vec<u8>>)>,
    /// The next wait-die counter; a transaction's timestamp interleaves it with the node
    /// id, so that timestamps are unique in the cluster.
    pub(super) next_counter: u64,
}

impl BaselineState {
    pub fn new(
        protocol: Protocol,
        fabric: Arc<dyn Fabric>,
        concurrency: Arc<ConcurrencyStats>,
        node_count: u16,
    ) -> BaselineState {
        BaselineState {
            protocol,
            fabric,
            concurrency,
            region: None,
            peers: (0..node_count).map(|_| None).collect(),
            early_resolves: Vec::new(),
            next_counter: 0,
        }
    }
}

/// Where one declared key of a transaction lives: its holder and slot there.
#[derive(Clone, Copy)]
struct Placed {
    holder: NodeId,
    slot: u64,
}

/// What an executor reports for one transaction: how it ran (or why it could not).
/// `Ok(None)`: the driver abandoned its plugin call and answered for it already.
pub struct BaselineRun {
    pub transaction: u32,
    pub result: Result<Option<Ran>, String>,
}

/// The plugin calls of one epoch, as the executors and the driver share them.
struct EpochCalls {
    claims: Vec<Claim>,
    started_us: Vec<AtomicU64>,
}

/// What the driver needs to abandon a transaction's call: its plugin (to quarantine),
/// and under 2PL its locks (slot and mode of every declared key) and wait-die timestamp.
struct Watched {
    plugin: Arc<crate::plugin::LoadedPlugin>,
    locks: Vec<(Arc<dyn RemoteRegion>, u64, AccessMode)>,
    timestamp: u64,
}

impl ClusterDriver {
    /// Sets up this node's record region for the view just agreed, forgets the slot
    /// numbers of the old view, and answers the requests of peers that agreed first.
    pub(super) fn baseline_view_agreed(&mut self, generation: u64) {
        let Some(baseline) = self.state.baseline.as_mut() else { return };
        match RecordRegion::register(baseline.fabric.as_ref(), generation, baseline.region.take()) {
            Ok(region) => baseline.region = Some(region),
            Err(error) => {
                tracing::error!(%error, "cannot register the record region; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
            }
        }
        for peer in baseline.peers.iter_mut() {
            *peer = None;
        }
        let early = std::mem::take(&mut baseline.early_resolves);
        for (from, frame_generation, keys) in early {
            self.answer_resolve(from, frame_generation, keys);
        }
    }

    /// Gives a peer the record slots of keys held here (see `Frame::Resolve`).
    pub(super) fn answer_resolve(&mut self, from: NodeId, generation: u64, keys: Vec<Vec<u8>>) {
        let current = self.state.generation;
        let synced = self.state.synced;
        let Some(baseline) = self.state.baseline.as_mut() else {
            tracing::warn!(peer = from, "a peer asked for record slots of a node that runs leases");
            return;
        };
        if !synced || generation > current || baseline.region.is_none() {
            baseline.early_resolves.push((from, generation, keys));
            return;
        }
        if generation < current {
            return; // Of an abandoned view: its sender abandons it too.
        }
        let region = baseline.region.as_mut().expect("checked above");
        let slots = match region.resolve(keys.iter().map(Vec::as_slice), &self.storage) {
            Ok(slots) => slots,
            Err(error) => {
                // The peer's transactions on these keys are refused; a storage failure
                // also stops this node from taking work.
                tracing::error!(%error, peer = from, "cannot give out record slots");
                vec![NO_SLOT; keys.len()]
            }
        };
        self.stats.resident_keys.store(region.resident_keys() as u64, Ordering::Relaxed);
        self.transport.send(from, &Frame::Resolved { generation, slots });
    }

    pub(super) fn run_baseline_epoch(&mut self) -> Result<(), Interrupted> {
        let closed_at = Instant::now();
        let me = self.node;
        let node_count = usize::from(self.node_count);
        let take = self.state.pending.len().min(self.epoch_transactions_max);
        let mut batch: Vec<Submission> = self.state.pending.drain(..take).collect();
        if self.stats.failed.load(Ordering::Acquire) {
            let rejection = Rejection::Storage("the node stopped after a storage failure".into());
            reject_all(batch.drain(..).map(|s| s.reply), &rejection);
        }
        self.state.epoch += 1;
        let epoch = self.state.epoch;
        let generation = self.state.generation;
        let _span = tracing::debug_span!("baseline_epoch", epoch, transactions = batch.len()).entered();
        self.forget_checkpointed_request_ids();

        // 1. Request ids: held here (forwarded otherwise); one run per id.
        let mut id_keys: Vec<Option<Vec<u8>>> = Vec::with_capacity(batch.len());
        let mut seen_ids: FxHashSet<Vec<u8>> = FxHashSet::default();
        let mut deferred: Vec<Submission> = Vec::new();
        let mut runnable: Vec<Submission> = Vec::with_capacity(batch.len());
        let table = self.leases.current();
        for submission in batch {
            let request_id = &submission.transaction.request_id;
            if !request_id.is_tracked() {
                id_keys.push(None);
                runnable.push(submission);
                continue;
            }
            let mut key = Vec::new();
            data_key_into(&mut key, REQUEST_ID_TABLE, request_id.id_bytes());
            let holder = table.holder(&key);
            if holder != me {
                let message = format!("request id held by node {holder}: send the request there (it forwards)");
                submission.reply.send(Err(Rejection::Retry(message)));
                continue;
            }
            if !seen_ids.insert(key.clone()) {
                deferred.push(submission);
                continue;
            }
            id_keys.push(Some(key));
            runnable.push(submission);
        }
        // Retries of an id already in this epoch run in the next one, first.
        for submission in deferred.into_iter().rev() {
            self.state.pending.push_front(submission);
        }
        let id_slots: Vec<Option<SlotPointer>> = {
            let lookup: Vec<&[u8]> = id_keys.iter().flatten().map(Vec::as_slice).collect();
            let mut found = Vec::with_capacity(lookup.len());
            self.state.slots.lookup_many(lookup.iter().copied(), &mut found);
            let store = &mut self.state.slots;
            match self.storage.load_missing(lookup.iter().copied(), found, |key, value| store.insert(key, value)) {
                Ok(resolved) => {
                    let mut resolved = resolved.into_iter();
                    id_keys
                        .iter()
                        .map(|key| key.as_ref().map(|_| resolved.next().expect("one slot per id").1))
                        .collect()
                }
                Err(error) => {
                    tracing::error!(%error, "cannot load request ids; the node stops taking work");
                    self.stats.failed.store(true, Ordering::Release);
                    return Err(self.abandon(runnable, Interrupted::Stopping));
                }
            }
        };

        // 2. Record slots of every declared key (the batch's keys in order: each
        // transaction's accesses, one transaction after another).
        let batch_keys = BatchKeys::of(&runnable);
        let holders: Vec<NodeId> = batch_keys.iter().map(|key| table.holder(key)).collect();
        let local_accesses = holders.iter().filter(|&&holder| holder == me).count() as u64;
        let remote_accesses = holders.len() as u64 - local_accesses;
        TransactionStats::count(&self.cluster_stats.local_accesses, local_accesses);
        TransactionStats::count(&self.cluster_stats.remote_accesses, remote_accesses);
        metrics::counter!(crate::metrics::LOCAL_ACCESSES_TOTAL).increment(local_accesses);
        metrics::counter!(crate::metrics::REMOTE_ACCESSES_TOTAL).increment(remote_accesses);
        let placed = match self.resolve_slots(&batch_keys, &holders, generation) {
            Ok(placed) => placed,
            Err(interrupted) => return Err(self.abandon(runnable, interrupted)),
        };

        // 3. Run: every transaction at once. An id that already has an outcome is
        // answered with it, with this epoch's replies.
        let baseline = self.state.baseline.as_mut().expect("a baseline epoch runs under a baseline");
        let regions: Vec<Option<Arc<dyn RemoteRegion>>> = (0..node_count)
            .map(|node| match node == usize::from(me) {
                true => baseline.region.as_ref().map(RecordRegion::handle),
                false => baseline.peers[node].as_ref().map(|peer| peer.region.clone()),
            })
            .collect();
        let cancelled = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(EpochCalls {
            claims: (0..runnable.len()).map(|_| Claim::new()).collect(),
            started_us: (0..runnable.len()).map(|_| AtomicU64::new(0)).collect(),
        });
        let abandonable = self.abandon_after.is_some();
        let mut watched: Vec<Option<Watched>> = (0..runnable.len()).map(|_| None).collect();
        let mut outcomes: Vec<Option<Result<Outcome, Rejection>>> = (0..runnable.len()).map(|_| None).collect();
        let mut installs: Vec<Vec<(NodeId, SlotWrite)>> = (0..runnable.len()).map(|_| Vec::new()).collect();
        let mut request_ids = Vec::with_capacity(runnable.len());
        let mut replies: Vec<Reply> = Vec::with_capacity(runnable.len());
        let mut in_flight = 0usize;
        // Per transaction: where its accesses start among the batch's keys.
        let mut first_access: Vec<usize> = Vec::with_capacity(runnable.len());
        let mut next_access = 0usize;
        for (sequence, submission) in runnable.into_iter().enumerate() {
            let Submission { transaction, reply } = submission;
            let accesses = next_access..next_access + transaction.accesses.len();
            next_access = accesses.end;
            first_access.push(accesses.start);
            request_ids.push(transaction.request_id.clone());
            replies.push(reply);
            if let Some(pointer) = id_slots[sequence] {
                // SAFETY: id slots are the driver's alone between executions.
                if let Some(stored) = unsafe { pointer.get().value() } {
                    match crate::storage::codec::decode_stored_result(stored) {
                        Some(outcome) => {
                            outcomes[sequence] = Some(Ok(outcome));
                            continue;
                        }
                        None => tracing::error!("unreadable stored outcome of a request id; running the request"),
                    }
                }
            }
            let keys = &placed[accesses.clone()];
            if let Some(unplaced) = keys.iter().position(|placed| placed.slot == NO_SLOT) {
                let message = format!(
                    "key {} of the request cannot be held in a record slot under cc = 2pl/occ \
                     (values are limited to {} bytes, and a node holds at most {} keys per view)",
                    unplaced,
                    crate::cc::fabric_records::VALUE_BYTES_MAX,
                    crate::cluster::records::RECORD_SLOTS
                );
                outcomes[sequence] = Some(Err(Rejection::Storage(message)));
                continue;
            }
            let slot_regions: Vec<(Arc<dyn RemoteRegion>, u64)> = keys
                .iter()
                .map(|placed| {
                    let region = regions[usize::from(placed.holder)].clone().expect("resolved slots have a region");
                    (region, placed.slot)
                })
                .collect();
            let counter = baseline.next_counter;
            baseline.next_counter += 1;
            let timestamp = FIRST_TIMESTAMP + counter * node_count as u64 + u64::from(me);
            assert!(timestamp <= TIMESTAMP_MAX, "wait-die timestamps ran out");
            if abandonable {
                let locks = slot_regions
                    .iter()
                    .zip(transaction.accesses.entries())
                    .map(|((region, index), entry)| (region.clone(), *index, entry.mode))
                    .collect();
                watched[sequence] = Some(Watched { plugin: transaction.plugin.clone(), locks, timestamp });
            }
            let copies: Vec<Slot> = accesses.map(|access| Slot::detached(batch_keys.key(access), None)).collect();
            let prepared = PreparedTransaction {
                slots: copies.iter().map(|copy| (u32::MAX, SlotPointer::to(copy))).collect(),
                planned: transaction,
                timestamp: Timestamp { epoch, node: me, sequence: sequence as u32 },
            };
            let counter_region = regions[0].clone().expect("node 0's region is open");
            let (protocol, cancelled, done) = (baseline.protocol, cancelled.clone(), self.loopback.clone());
            let calls = calls.clone();
            in_flight += 1;
            self.pool.spawn(move || {
                let slots: Result<Vec<RecordSlot<'_>>, _> =
                    slot_regions.iter().map(|(region, index)| RecordSlot::at(region.as_ref(), *index)).collect();
                let counter = CommitCounter { region: counter_region.as_ref(), epoch };
                let call = CallWatch {
                    claim: abandonable.then(|| &calls.claims[sequence]),
                    started_us: &calls.started_us[sequence],
                };
                let result = slots
                    .and_then(|slots| {
                        over_fabric::run(protocol, &prepared, &copies, &slots, timestamp, &counter, &call, &cancelled)
                    })
                    .map_err(|error| error.to_string());
                // The copies outlive the run: `prepared` points into them.
                drop(prepared);
                drop(copies);
                let _ = done.send(DriverMessage::RanOverFabric {
                    epoch,
                    run: Box::new(BaselineRun { transaction: sequence as u32, result }),
                });
            });
        }

        // Wait for the runs; answer peers meanwhile.
        let mut peers_done: Vec<Option<Vec<SlotWrite>>> = (0..node_count).map(|_| None).collect();
        for (from, frame) in self.state.early.remove(&epoch).unwrap_or_default() {
            if let Frame::EpochDone { writes, .. } = frame {
                peers_done[usize::from(from)] = Some(writes);
            }
        }
        let mut retries = 0u64;
        while in_flight > 0 {
            if abandonable {
                self.abandon_overdue_runs(epoch, &calls, &watched, &mut outcomes, &mut in_flight);
                if in_flight == 0 {
                    break;
                }
            }
            let message = match self.next_message_watching(in_flight) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(interrupted) => {
                    cancelled.store(true, Ordering::Release);
                    self.wait_for_runs(epoch, &calls, &watched, &mut outcomes, in_flight);
                    return Err(self.abandon_prepared(replies, interrupted));
                }
            };
            match message {
                DriverMessage::RanOverFabric { epoch: ran_epoch, run } if ran_epoch == epoch => {
                    let BaselineRun { transaction, result } = *run;
                    if let Ok(None) = result {
                        continue; // Abandoned: counted when the driver abandoned it.
                    }
                    in_flight -= 1;
                    let index = transaction as usize;
                    outcomes[index] = Some(match result {
                        Ok(None) => unreachable!("handled above"),
                        Ok(Some(ran)) => {
                            retries += ran.retries;
                            installs[index] = ran
                                .installed
                                .into_iter()
                                .map(|installed| {
                                    let Placed { holder, slot } = placed[first_access[index] + installed.access];
                                    (holder, SlotWrite { slot, version: installed.version, value: installed.value })
                                })
                                .collect();
                            // Clients see the serial order: (epoch, commit number).
                            let stamp = Timestamp { epoch, node: me, sequence: ran.commit_number };
                            Ok(crate::cc::stamped(ran.outcome, stamp))
                        }
                        Err(error) => {
                            tracing::warn!(%error, "a transaction could not run on the record slots");
                            Err(Rejection::Retry(format!("the transaction could not reach its keys: {error}")))
                        }
                    });
                }
                DriverMessage::Peer { from, frame } if frame_epoch(&frame) == Some((generation, epoch)) => {
                    if let Frame::EpochDone { writes, .. } = frame {
                        peers_done[usize::from(from)] = Some(writes);
                    }
                }
                other => self.absorb(other),
            }
            if !self.state.synced {
                cancelled.store(true, Ordering::Release);
                self.wait_for_runs(epoch, &calls, &watched, &mut outcomes, in_flight);
                return Err(self.abandon_prepared(replies, Interrupted::ViewChanged));
            }
        }
        if let Some(baseline) = self.state.baseline.as_ref() {
            TransactionStats::count(&baseline.concurrency.retries, retries);
        }

        // 4. Finish: what this node installed in each peer's slots goes to the peer.
        let mut outgoing: Vec<Vec<SlotWrite>> = (0..node_count).map(|_| Vec::new()).collect();
        for transaction_installs in &mut installs {
            for (holder, write) in transaction_installs.drain(..) {
                outgoing[usize::from(holder)].push(write);
            }
        }
        let own_writes = std::mem::take(&mut outgoing[usize::from(me)]);
        for peer in self.transport.peers() {
            let writes = std::mem::take(&mut outgoing[usize::from(peer)]);
            self.transport.send(peer, &Frame::EpochDone { generation, epoch, writes });
        }
        while self.transport.peers().any(|peer| peers_done[usize::from(peer)].is_none()) {
            let message = match self.next_message() {
                Ok(message) => message,
                Err(interrupted) => return Err(self.abandon_prepared(replies, interrupted)),
            };
            match message {
                DriverMessage::Peer { from, frame } if frame_epoch(&frame) == Some((generation, epoch)) => {
                    if let Frame::EpochDone { writes, .. } = frame {
                        peers_done[usize::from(from)] = Some(writes);
                    }
                }
                other => self.absorb(other),
            }
            if !self.state.synced {
                return Err(self.abandon_prepared(replies, Interrupted::ViewChanged));
            }
        }

        // 5. Commit: the newest install of each key held here, and the outcomes.
        let mut newest: FxHashMap<u64, (u64, Option<Vec<u8>>)> = FxHashMap::default();
        let all_writes = own_writes.into_iter().chain(peers_done.into_iter().flatten().flatten());
        for SlotWrite { slot, version, value } in all_writes {
            match newest.get(&slot) {
                Some((known, _)) if *known >= version => {}
                _ => {
                    newest.insert(slot, (version, value));
                }
            }
        }
        let mut record = EpochRecord::new(epoch);
        let region = self.state.baseline.as_ref().and_then(|baseline| baseline.region.as_ref());
        for (slot, (_, value)) in &newest {
            match region.and_then(|region| region.key_of(*slot)) {
                Some(key) => record.stage_value(key, value.as_deref()),
                None => tracing::error!(slot, "a peer reported a write to a record slot never given out"),
            }
        }
        let mut to_release = Vec::with_capacity(replies.len());
        let mut encoded = Vec::new();
        for (((request_id, outcome), reply), id_slot) in
            request_ids.into_iter().zip(outcomes).zip(replies).zip(id_slots)
        {
            let outcome = match outcome.expect("every transaction has a result") {
                Ok(outcome) => outcome,
                Err(rejection) => {
                    reply.send(Err(rejection));
                    continue;
                }
            };
            if let Some(pointer) = id_slot {
                // SAFETY: id slots are the driver's alone between executions.
                let slot = unsafe { pointer.get() };
                // SAFETY: as above.
                if unsafe { slot.value() }.is_none() {
                    encoded.clear();
                    crate::storage::codec::encode_stored_result_into(
                        &mut encoded,
                        &outcome,
                        crate::storage::unix_seconds_now(),
                    );
                    // SAFETY: as above.
                    unsafe { slot.set(Some(&encoded)) };
                    record.stage_value(slot.storage_key(), Some(&encoded));
                    self.state.request_ids.push_back((epoch, slot.storage_key().to_vec()));
                }
            }
            to_release.push((request_id, outcome, reply));
        }
        hand_over_epoch(&self.stats, &self.commits, EpochCommit { record, replies: to_release, closed_at });
        Ok(())
    }

    /// The holder and slot of every key of the batch (`holders`: each key's holder),
    /// asking holders for slots not known here yet (one `Resolve` per holder, answered in
    /// order).
    fn resolve_slots(
        &mut self,
        batch_keys: &BatchKeys,
        holders: &[NodeId],
        generation: u64,
    ) -> Result<Vec<Placed>, Interrupted> {
        let me = self.node;
        let node_count = usize::from(self.node_count);
        let baseline = self.state.baseline.as_mut().expect("a baseline epoch runs under a baseline");
        let Some(region) = baseline.region.as_mut() else {
            return Err(Interrupted::ViewChanged);
        };
        let local = batch_keys.iter().zip(holders).filter(|(_, &holder)| holder == me).map(|(key, _)| key);
        let local_slots = match region.resolve(local, &self.storage) {
            Ok(slots) => slots,
            Err(error) => {
                tracing::error!(%error, "cannot load keys into record slots; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
                return Err(Interrupted::Stopping);
            }
        };
        self.stats.resident_keys.store(region.resident_keys() as u64, Ordering::Relaxed);
        let mut asked: Vec<Vec<Vec<u8>>> = (0..node_count).map(|_| Vec::new()).collect();
        for (key, &holder) in batch_keys.iter().zip(holders) {
            if holder == me {
                continue;
            }
            let known = baseline.peers[usize::from(holder)].as_ref().is_some_and(|peer| peer.slots.contains_key(key));
            if !known {
                asked[usize::from(holder)].push(key.to_vec());
            }
        }
        // Each key once (the answer is matched to the keys by position).
        for keys in &mut asked {
            keys.sort_unstable();
            keys.dedup();
        }
        let mut waiting: Vec<bool> = asked.iter().map(|keys| !keys.is_empty()).collect();
        // Node 0's region holds the commit counter: every node opens it, and its answer
        // (possibly to no keys at all) tells that it is registered.
        if me != 0 && baseline.peers[0].is_none() {
            waiting[0] = true;
        }
        for (holder, keys) in asked.iter().enumerate() {
            if waiting[holder] {
                self.transport.send(holder as NodeId, &Frame::Resolve { generation, keys: keys.clone() });
            }
        }
        while waiting.iter().any(|&waiting| waiting) {
            let message = self.next_message()?;
            match message {
                DriverMessage::Peer { from, frame: Frame::Resolved { generation: answered, slots } }
                    if answered == generation && waiting.get(usize::from(from)).copied().unwrap_or(false) =>
                {
                    let holder = usize::from(from);
                    let keys = std::mem::take(&mut asked[holder]);
                    if slots.len() != keys.len() {
                        tracing::error!(peer = from, "a peer answered a different number of record slots");
                        self.state.synced = false;
                        return Err(Interrupted::ViewChanged);
                    }
                    let baseline = self.state.baseline.as_mut().expect("as above");
                    if baseline.peers[holder].is_none() {
                        match PeerRecords::open(baseline.fabric.as_ref(), from, generation) {
                            Ok(peer) => baseline.peers[holder] = Some(peer),
                            Err(error) => {
                                tracing::error!(%error, peer = from, "cannot open a peer's record region");
                                return Err(Interrupted::ViewChanged);
                            }
                        }
                    }
                    let peer = baseline.peers[holder].as_mut().expect("opened above");
                    for (key, slot) in keys.into_iter().zip(slots) {
                        // A slot the peer could not give is not cached: asked again.
                        if slot != NO_SLOT {
                            peer.slots.insert(key, slot);
                        }
                    }
                    waiting[holder] = false;
                }
                // A peer that needed no slots may have finished the epoch already.
                DriverMessage::Peer { from, frame } if frame_epoch(&frame) == Some((generation, self.state.epoch)) => {
                    self.state.early.entry(self.state.epoch).or_default().push((from, frame));
                }
                other => self.absorb(other),
            }
            if !self.state.synced {
                return Err(Interrupted::ViewChanged);
            }
        }
        let baseline = self.state.baseline.as_ref().expect("as above");
        let mut local_slots = local_slots.into_iter();
        Ok(batch_keys
            .iter()
            .zip(holders)
            .map(|(key, &holder)| {
                let slot = if holder == me {
                    local_slots.next().expect("one slot per local key")
                } else {
                    baseline.peers[usize::from(holder)]
                        .as_ref()
                        .and_then(|peer| peer.slots.get(key).copied())
                        .unwrap_or(NO_SLOT)
                };
                Placed { holder, slot }
            })
            .collect())
    }

    /// Waits until the executors finished what they were given (they give up soon once
    /// the epoch is cancelled; a plugin call that does not return is abandoned).
    fn wait_for_runs(
        &mut self,
        epoch: u64,
        calls: &EpochCalls,
        watched: &[Option<Watched>],
        outcomes: &mut [Option<Result<Outcome, Rejection>>],
        mut in_flight: usize,
    ) {
        while in_flight > 0 {
            self.abandon_overdue_runs(epoch, calls, watched, outcomes, &mut in_flight);
            if in_flight == 0 {
                return;
            }
            let message = match self.receive_while_draining() {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(super::Closed) => return,
            };
            match message {
                DriverMessage::RanOverFabric { epoch: ran_epoch, run } if ran_epoch == epoch => {
                    if !matches!(run.result, Ok(None)) {
                        in_flight -= 1;
                    }
                }
                other => self.absorb(other),
            }
        }
    }

    /// Abandons the transactions whose plugin call has run longer than
    /// `plugin_call_abandon_ms` (at most once per check period): the driver wins the
    /// call's claim, releases the transaction's locks (2PL; under OCC a call holds none),
    /// answers `plugin-timed-out` (quarantining the plugin) and replaces the executor
    /// thread, which it never joins. The transaction installed nothing.
    fn abandon_overdue_runs(
        &mut self,
        epoch: u64,
        calls: &EpochCalls,
        watched: &[Option<Watched>],
        outcomes: &mut [Option<Result<Outcome, Rejection>>],
        in_flight: &mut usize,
    ) {
        let Some(limit) = self.abandon_after else { return };
        if self.state.abandon_checked_at.elapsed() < super::abandon_check_period(limit) {
            return;
        }
        self.state.abandon_checked_at = Instant::now();
        let (now, limit_us) = (now_us(), limit.as_micros() as u64);
        let two_phase = self.state.baseline.as_ref().is_some_and(|b| b.protocol == Protocol::TwoPhaseLocking);
        for (index, started) in calls.started_us.iter().enumerate() {
            let started = started.load(Ordering::Acquire);
            if started == 0 || now.saturating_sub(started) <= limit_us || !calls.claims[index].abandon() {
                continue;
            }
            let Some(watch) = &watched[index] else { continue };
            if two_phase {
                for (region, slot, mode) in &watch.locks {
                    let released = RecordSlot::at(region.as_ref(), *slot)
                        .and_then(|slot| Ok(crate::cc::twopl::release_held(&slot, *mode, watch.timestamp)?));
                    if let Err(error) = released {
                        tracing::error!(%error, "cannot release a lock of an abandoned transaction");
                    }
                }
            }
            let stamp = Timestamp { epoch, node: self.node, sequence: 0 };
            outcomes[index] = Some(Ok(report_abandoned(&watch.plugin, stamp, (now - started) / 1000)));
            *in_flight -= 1;
            self.state.threads_written_off += 1;
            if let Err(error) = self.pool.write_off(1) {
                tracing::error!(%error, "cannot start an executor thread to replace one lost to an abandoned call");
            }
        }
    }
}
