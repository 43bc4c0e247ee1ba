//! The commit thread: makes epochs durable in order, releases their replies, and
//! checkpoints.
//!
//! Epochs arrive from the driver as finished epoch records. Whatever has queued up while
//! the previous fsync ran is written together and fsynced once (group commit): every
//! record but the last is written without sync, and the synced write of the last one
//! makes all of them durable. Only then are the replies of those epochs sent and their
//! request ids marked done in the ledger. If storage fails, the node stops taking work:
//! its memory would otherwise run ahead of its disk.
//!
//! Durable records are handed to the checkpoint thread every `checkpoint_interval` (or
//! sooner when they grow large, and at shutdown), which folds them into the tables off
//! the commit path. The ledger may forget a request id only once its outcome is
//! checkpointed, because only then can a retry find it in the `results` column family.

use super::ledger::Ledger;
use super::{Reply, TransactionStats};
use crate::config::FsyncPolicy;
use crate::model::{Outcome, Rejection, RequestId};
use crate::storage::{EpochRecord, Storage};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One epoch, executed, waiting to become durable.
pub struct EpochCommit {
    pub record: EpochRecord,
    /// Outcomes to release, with their request ids (empty ids are untracked).
    pub replies: Vec<(RequestId, Outcome, Reply)>,
    /// When the epoch closed, for the epoch latency metric.
    pub closed_at: Instant,
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
    pub epochs: Receiver<EpochCommit>,
    pub checkpoint_interval: Duration,
    pub checkpoints: Sender<Vec<EpochRecord>>,
}

/// The checkpoint thread: folds durable epoch records into the tables.
pub struct Checkpointer {
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub records: Receiver<Vec<EpochRecord>>,
}

impl Checkpointer {
    /// Runs until the commit thread hangs up, after checkpointing everything it sent.
    pub fn run(self) {
        while let Ok(records) = self.records.recv() {
            let Some(newest) = records.last().map(|r| r.epoch) else { continue };
            if self.stats.failed.load(Ordering::Acquire) {
                continue;
            }
            let started = Instant::now();
            let _span = tracing::debug_span!("checkpoint", epoch = newest, records = records.len()).entered();
            // Not synced: the records are durable in the log, and the next synced write (or
            // the log itself after a crash) makes the checkpoint durable too.
            match self.storage.checkpoint(&records, false) {
                Ok(()) => {
                    self.ledger.lock().checkpointed(newest);
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

impl Committer {
    /// Runs until the driver hangs up, then returns after the last epoch is durable and
    /// checkpointed.
    pub fn run(self) {
        let mut group: Vec<EpochCommit> = Vec::new();
        let mut uncheckpointed: Vec<EpochRecord> = Vec::new();
        let mut last_checkpoint = Instant::now();
        loop {
            let first = match self.epochs.recv_timeout(self.checkpoint_interval) {
                Ok(first) => first,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.checkpoint(&mut uncheckpointed, &mut last_checkpoint);
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            group.push(first);
            while group.len() < GROUP_EPOCHS_MAX {
                match self.epochs.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group, &mut uncheckpointed);
            let pending_bytes: usize = uncheckpointed.iter().map(EpochRecord::len).sum();
            if last_checkpoint.elapsed() >= self.checkpoint_interval || pending_bytes >= CHECKPOINT_BYTES_MAX {
                self.checkpoint(&mut uncheckpointed, &mut last_checkpoint);
            }
        }
        self.checkpoint(&mut uncheckpointed, &mut last_checkpoint);
    }

    fn checkpoint(&self, records: &mut Vec<EpochRecord>, last_checkpoint: &mut Instant) {
        *last_checkpoint = Instant::now();
        if records.is_empty() {
            return;
        }
        // The checkpoint thread ends only after this thread, so a send cannot fail.
        if self.checkpoints.send(std::mem::take(records)).is_err() {
            panic!("checkpoint thread ended before the commit thread");
        }
    }

    fn commit_group(&self, group: &mut Vec<EpochCommit>, uncheckpointed: &mut Vec<EpochRecord>) {
        let started = Instant::now();
        let epochs = group.len();
        let mut failure = None;
        let mut newest_epoch = 0;
        if self.stats.failed.load(Ordering::Acquire) {
            failure = Some("an earlier epoch could not be written".to_string());
        }
        let mut releases = Vec::with_capacity(epochs);
        for (index, epoch) in group.drain(..).enumerate() {
            releases.push((epoch.replies, epoch.closed_at));
            if failure.is_some() {
                continue;
            }
            newest_epoch = epoch.record.epoch;
            let sync = self.fsync == FsyncPolicy::EveryEpoch && index == epochs - 1;
            let written = self.storage.write_epoch(&epoch.record, sync);
            uncheckpointed.push(epoch.record);
            if let Err(error) = written {
                tracing::error!(%error, epoch = newest_epoch, "cannot make epoch durable; the node stops taking work");
                self.stats.failed.store(true, Ordering::Release);
                failure = Some(error.to_string());
            }
        }
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::GROUP_COMMIT_EPOCHS).record(epochs as f64);
        if failure.is_none() {
            self.stats.durable_epoch.store(newest_epoch, Ordering::Release);
        }
        let mut ledger = self.ledger.lock();
        for (replies, closed_at) in releases {
            metrics::histogram!(crate::metrics::EPOCH_LATENCY_SECONDS).record(closed_at.elapsed().as_secs_f64());
            for (id, outcome, reply) in replies {
                match &failure {
                    None => {
                        if id.is_tracked() {
                            for waiter in ledger.complete(&id, &outcome, epoch_of(&outcome)) {
                                let _ = waiter.send(Ok(outcome.clone()));
                            }
                        }
                        // A closed reply only means the client went away; its outcome
                        // is durable and a retry will get it.
                        let _ = reply.send(Ok(outcome));
                    }
                    Some(message) => {
                        let rejection = Rejection::Storage(message.clone());
                        for waiter in ledger.abandon(&id) {
                            let _ = waiter.send(Err(rejection.clone()));
                        }
                        let _ = reply.send(Err(rejection));
                    }
                }
            }
        }
    }
}
