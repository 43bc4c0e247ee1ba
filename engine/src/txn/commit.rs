//! The commit thread: makes epochs durable in order, releases their replies, and
//! checkpoints.
//!
//! Epochs arrive from the driver as finished epoch records. Whatever has queued up while
//! the previous fsync ran is written together and fsynced once (group commit): every
//! record but the last is written without sync, and the synced write of the last one
//! makes all of them durable. If storage fails, the node stops taking work: its memory
//! would otherwise run ahead of its disk.
//!
//! Alone, a node releases an epoch's replies (and marks its request ids done in the
//! ledger) as soon as the epoch is durable here. In a cluster, it tells its peers which
//! epoch it made durable and releases an epoch's replies only once every node has made
//! that epoch durable, so nothing acknowledged can be lost when a node dies. When the
//! nodes agree on a new view after a restart, the driver sends [`CommitMessage::Rollback`]:
//! epochs up to the agreed one are released, newer ones are undone here (their replies
//! become [`Rejection::Retry`]) and dropped from the log.
//!
//! Released records are handed to the checkpoint thread every `checkpoint_interval` (or
//! sooner when they grow large, and at shutdown), which folds them into the tables off
//! the commit path. The ledger may forget a request id only once its outcome is
//! checkpointed, because only then can a retry find it in the `results` column family.
//! Only epochs durable everywhere are checkpointed, so a rollback never has to undo a
//! checkpoint: it only deletes log records.

use super::ledger::Ledger;
use super::{Reply, TransactionStats};
use crate::cluster::protocol::DurableEverywhere;
use crate::cluster::transport::Transport;
use crate::cluster::wire::Frame;
use crate::config::FsyncPolicy;
use crate::model::{NodeId, Outcome, Rejection, RequestId};
use crate::storage::{EpochRecord, Storage, StorageError};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts an executed epoch's outcomes (status and metrics) and hands it to the commit
/// thread: the last step of every driver's epoch (single node, cluster, cluster baselines).
pub(crate) fn hand_over_epoch(stats: &TransactionStats, commits: &Sender<CommitMessage>, commit: EpochCommit) {
    let committed = commit.replies.iter().filter(|(_, outcome, _)| outcome.is_committed()).count() as u64;
    let aborted = commit.replies.len() as u64 - committed;
    TransactionStats::count(&stats.committed, committed);
    TransactionStats::count(&stats.aborted, aborted);
    TransactionStats::count(&stats.epochs, 1);
    metrics::counter!(crate::metrics::COMMITTED_TOTAL).increment(committed);
    metrics::counter!(crate::metrics::ABORTED_TOTAL).increment(aborted);
    metrics::histogram!(crate::metrics::EPOCH_TRANSACTIONS).record((committed + aborted) as f64);
    metrics::histogram!(crate::metrics::EPOCH_EXECUTION_SECONDS).record(commit.closed_at.elapsed().as_secs_f64());
    if commits.send(CommitMessage::Epoch(commit)).is_err() {
        // The commit thread only exits after the driver; reaching this is a bug.
        panic!("commit thread ended before the epoch driver");
    }
}

/// One epoch, executed, waiting to become durable.
pub struct EpochCommit {
    pub record: EpochRecord,
    /// Outcomes to release, with their request ids (empty ids are untracked).
    pub replies: Vec<(RequestId, Outcome, Reply)>,
    /// When the epoch closed, for the epoch latency metric.
    pub closed_at: Instant,
}

/// What the driver sends the commit thread.
pub enum CommitMessage {
    Epoch(EpochCommit),
    /// Answers with this node's durable epoch once every epoch sent before is written.
    Flush(Sender<u64>),
    /// The cluster agreed to keep epochs up to `agreed` and undo newer ones; frames of
    /// `generation` follow.
    Rollback {
        agreed: u64,
        generation: u64,
        done: Sender<Result<(), StorageError>>,
    },
}

/// What the commit thread sends the checkpoint thread.
pub enum CheckpointMessage {
    Records(Vec<EpochRecord>),
    /// Answered once everything sent before is checkpointed.
    Barrier(Sender<()>),
}

/// A peer's durability notice: (peer, generation, epoch).
pub type DurableNotice = (NodeId, u64, u64);

/// The commit thread's link to the rest of a cluster.
pub struct CommitCluster {
    pub transport: Arc<Transport>,
    pub notices: Receiver<DurableNotice>,
}

/// Most epochs made durable by one fsync.
const GROUP_EPOCHS_MAX: usize = 256;

/// Checkpoint early when the records waiting for it grow past this size.
const CHECKPOINT_BYTES_MAX: usize = 64 << 20;

fn epoch_of(outcome: &Outcome) -> u64 {
    outcome.timestamp().epoch
}

pub struct Committer {
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub fsync: FsyncPolicy,
    pub epochs: Receiver<CommitMessage>,
    pub checkpoint_interval: Duration,
    pub checkpoints: Sender<CheckpointMessage>,
    pub cluster: Option<CommitCluster>,
}

/// The checkpoint thread: folds durable epoch records into the tables.
pub struct Checkpointer {
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub records: Receiver<CheckpointMessage>,
}

impl Checkpointer {
    /// Runs until the commit thread hangs up, after checkpointing everything it sent.
    pub fn run(self) {
        while let Ok(message) = self.records.recv() {
            let records = match message {
                CheckpointMessage::Records(records) => records,
                CheckpointMessage::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let Some(newest) = records.last().map(|r| r.epoch) else { continue };
            if self.stats.failed.load(Ordering::Acquire) {
                continue;
            }
            let started = Instant::now();
            let _span = tracing::debug_span!("checkpoint", epoch = newest, records = records.len()).entered();
            // Not logged or synced: the records are durable in the log, which is folded
            // again after a crash that loses the checkpoint (see `Storage::checkpoint`).
            match self.storage.checkpoint(&records) {
                Ok(()) => {
                    self.ledger.lock().checkpointed(newest);
                    self.stats.checkpointed_epoch.fetch_max(newest, Ordering::AcqRel);
                    metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
                }
                Err(error) => {
                    // The log still holds these epochs; the next start folds them in.
                    tracing::error!(%error, epoch = newest, "checkpoint failed; the node stops taking work");
                    self.stats.failed.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// The commit thread's bookkeeping.
struct CommitState {
    uncheckpointed: Vec<EpochRecord>,
    last_checkpoint: Instant,
    /// Durable here, waiting for the peers (cluster only), in epoch order.
    awaiting: VecDeque<EpochCommit>,
    /// Which epochs are durable on which node (a single node is a cluster of one).
    durable: DurableEverywhere,
}

impl Committer {
    /// Runs until the driver hangs up, then returns after the last epoch is durable and
    /// checkpointed.
    pub fn run(self) {
        let node_count = self.cluster.as_ref().map_or(1, |cluster| cluster.transport.node_count() as u16);
        let me = self.cluster.as_ref().map_or(0, |cluster| cluster.transport.me());
        let local_durable = self.stats.durable_epoch.load(Ordering::Acquire);
        let mut state = CommitState {
            uncheckpointed: Vec::new(),
            last_checkpoint: Instant::now(),
            awaiting: VecDeque::new(),
            durable: DurableEverywhere::new(node_count, me, local_durable),
        };
        let notices = self.cluster.as_ref().map_or_else(crossbeam_channel::never, |cluster| cluster.notices.clone());
        let mut group: Vec<EpochCommit> = Vec::new();
        loop {
            crossbeam_channel::select! {
                recv(self.epochs) -> message => match message {
                    Ok(CommitMessage::Epoch(first)) => {
                        group.push(first);
                        let mut control = None;
                        while group.len() < GROUP_EPOCHS_MAX {
                            match self.epochs.try_recv() {
                                Ok(CommitMessage::Epoch(next)) => group.push(next),
                                Ok(other) => {
                                    control = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.commit_group(&mut group, &mut state);
                        if let Some(control) = control {
                            self.control(control, &mut state);
                        }
                    }
                    Ok(control) => self.control(control, &mut state),
                    Err(_) => break,
                },
                recv(notices) -> notice => {
                    if let Ok((peer, generation, epoch)) = notice {
                        state.durable.peer_reported(peer, generation, epoch);
                        self.release_durable_everywhere(&mut state);
                    }
                }
                default(self.checkpoint_interval) => {}
            }
            let pending_bytes: usize = state.uncheckpointed.iter().map(EpochRecord::len).sum();
            if state.last_checkpoint.elapsed() >= self.checkpoint_interval || pending_bytes >= CHECKPOINT_BYTES_MAX {
                self.checkpoint(&mut state);
            }
        }
        self.checkpoint(&mut state);
    }

    fn control(&self, message: CommitMessage, state: &mut CommitState) {
        match message {
            CommitMessage::Epoch(_) => unreachable!("epochs are committed by the caller"),
            CommitMessage::Flush(reply) => {
                let _ = reply.send(state.durable.local_durable());
            }
            CommitMessage::Rollback { agreed, generation, done } => {
                let _ = done.send(self.rollback(agreed, generation, state));
            }
        }
    }

    /// Keeps epochs up to `agreed` (durable on every node, as `agreed` is the smallest
    /// durable epoch of all) and undoes the newer ones here.
    fn rollback(&self, agreed: u64, generation: u64, state: &mut CommitState) -> Result<(), StorageError> {
        assert!(self.cluster.is_some(), "only a cluster rolls epochs back");
        let mut ledger = self.ledger.lock();
        while let Some(epoch) = state.awaiting.pop_front() {
            if epoch.record.epoch <= agreed {
                Self::release(self.ledger_for_replies(&mut ledger), epoch.replies, epoch.closed_at, None);
                state.uncheckpointed.push(epoch.record);
            } else {
                let rejection = Rejection::Retry(format!("epoch {} was not durable on every node", epoch.record.epoch));
                Self::release(self.ledger_for_replies(&mut ledger), epoch.replies, epoch.closed_at, Some(&rejection));
            }
        }
        drop(ledger);
        // Whatever is released gets checkpointed first, so that the fold below finds the
        // log in epoch order with nothing else writing the tables.
        self.checkpoint(state);
        let (barrier, passed) = crossbeam_channel::bounded(1);
        if self.checkpoints.send(CheckpointMessage::Barrier(barrier)).is_ok() {
            let _ = passed.recv();
        }
        assert!(
            self.storage.checkpoint_epoch()? <= agreed,
            "a checkpointed epoch must be durable everywhere, so never newer than the agreed one"
        );
        self.storage.rollback_to(agreed)?;
        state.durable.rolled_back(agreed, generation);
        self.stats.durable_epoch.store(agreed, Ordering::Release);
        Ok(())
    }

    /// The ledger, for a single node; a cluster node keeps none.
    fn ledger_for_replies<'a>(&self, ledger: &'a mut Ledger) -> Option<&'a mut Ledger> {
        self.cluster.is_none().then_some(ledger)
    }

    fn checkpoint(&self, state: &mut CommitState) {
        state.last_checkpoint = Instant::now();
        if state.uncheckpointed.is_empty() {
            return;
        }
        // The checkpoint thread ends only after this thread, so a send cannot fail.
        if self.checkpoints.send(CheckpointMessage::Records(std::mem::take(&mut state.uncheckpointed))).is_err() {
            panic!("checkpoint thread ended before the commit thread");
        }
    }

    fn commit_group(&self, group: &mut Vec<EpochCommit>, state: &mut CommitState) {
        let started = Instant::now();
        let epochs = group.len();
        let mut failure = None;
        if self.stats.failed.load(Ordering::Acquire) {
            failure = Some("an earlier epoch could not be written".to_string());
        }
        for (index, epoch) in group.iter().enumerate() {
            if failure.is_some() {
                break;
            }
            let sync = self.fsync == FsyncPolicy::EveryEpoch && index == epochs - 1;
            if let Err(error) = self.storage.write_epoch(&epoch.record, sync) {
                tracing::error!(%error, epoch = epoch.record.epoch, "cannot make epoch durable; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
                failure = Some(error.to_string());
            }
        }
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::GROUP_COMMIT_EPOCHS).record(epochs as f64);
        if let Some(message) = failure {
            let rejection = Rejection::Storage(message);
            let mut ledger = self.ledger.lock();
            for epoch in group.drain(..) {
                Self::release(self.ledger_for_replies(&mut ledger), epoch.replies, epoch.closed_at, Some(&rejection));
            }
            return;
        }
        let newest = group.last().map_or(state.durable.local_durable(), |epoch| epoch.record.epoch);
        state.durable.made_durable(newest);
        self.stats.durable_epoch.store(newest, Ordering::Release);
        match &self.cluster {
            None => {
                let mut ledger = self.ledger.lock();
                for epoch in group.drain(..) {
                    Self::release(self.ledger_for_replies(&mut ledger), epoch.replies, epoch.closed_at, None);
                    state.uncheckpointed.push(epoch.record);
                }
            }
            Some(cluster) => {
                cluster.transport.broadcast(&Frame::Durable { generation: state.durable.generation(), epoch: newest });
                state.awaiting.extend(group.drain(..));
                self.release_durable_everywhere(state);
            }
        }
    }

    /// Releases the awaiting epochs that every node has made durable.
    fn release_durable_everywhere(&self, state: &mut CommitState) {
        if self.cluster.is_none() {
            return;
        }
        let everywhere = state.durable.everywhere();
        if state.awaiting.front().is_none_or(|epoch| epoch.record.epoch > everywhere) {
            return;
        }
        let mut ledger = self.ledger.lock();
        while state.awaiting.front().is_some_and(|epoch| epoch.record.epoch <= everywhere) {
            let epoch = state.awaiting.pop_front().expect("checked above");
            Self::release(self.ledger_for_replies(&mut ledger), epoch.replies, epoch.closed_at, None);
            state.uncheckpointed.push(epoch.record);
        }
    }

    /// Sends an epoch's outcomes (or `failure` instead) to their callers and to the
    /// ledger's waiters.
    ///
    /// A cluster node keeps no ledger (`None`): a request id's outcome is a key at the id's
    /// holder, found by a retry through any node (see `cluster::driver`).
    fn release(
        mut ledger: Option<&mut Ledger>,
        replies: Vec<(RequestId, Outcome, Reply)>,
        closed_at: Instant,
        failure: Option<&Rejection>,
    ) {
        metrics::histogram!(crate::metrics::EPOCH_LATENCY_SECONDS).record(closed_at.elapsed().as_secs_f64());
        for (id, outcome, reply) in replies {
            match failure {
                None => {
                    if let Some(ledger) = ledger.as_deref_mut().filter(|_| id.is_tracked()) {
                        for waiter in ledger.complete(&id, &outcome, epoch_of(&outcome)) {
                            waiter.send(Ok(outcome.clone()));
                        }
                    }
                    // A closed reply only means the client went away; its outcome is
                    // durable and a retry will get it.
                    reply.send(Ok(outcome));
                }
                Some(rejection) => {
                    for waiter in ledger.as_deref_mut().map(|ledger| ledger.abandon(&id)).unwrap_or_default() {
                        waiter.send(Err(rejection.clone()));
                    }
                    reply.send(Err(rejection.clone()));
                }
            }
        }
    }
}
