//! The commit thread: makes epochs durable in order and then releases their replies.
//!
//! Epochs arrive from the driver as finished write batches. Whatever has queued up while
//! the previous fsync ran is written together and fsynced once (group commit): every
//! batch but the last is written without sync, and the synced write of the last one
//! makes all of them durable. Only then are the replies of those epochs sent and their
//! request ids marked done in the ledger. If storage fails, the node stops taking work:
//! its memory would otherwise run ahead of its disk.

use super::ledger::Ledger;
use super::{Reply, TransactionStats};
use crate::config::FsyncPolicy;
use crate::model::{Outcome, Rejection, RequestId};
use crate::storage::{EpochBatch, Storage};
use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// One epoch, executed, waiting to become durable.
pub struct EpochCommit {
    pub batch: EpochBatch,
    /// Outcomes to release, with their request ids (empty ids are untracked).
    pub replies: Vec<(RequestId, Outcome, Reply)>,
    /// When the epoch closed, for the epoch latency metric.
    pub closed_at: Instant,
}

/// Most epochs made durable by one fsync.
const GROUP_EPOCHS_MAX: usize = 256;

pub struct Committer {
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub fsync: FsyncPolicy,
    pub epochs: Receiver<EpochCommit>,
}

impl Committer {
    /// Runs until the driver hangs up, then returns after the last epoch is durable.
    pub fn run(self) {
        let mut group: Vec<EpochCommit> = Vec::new();
        while let Ok(first) = self.epochs.recv() {
            group.push(first);
            while group.len() < GROUP_EPOCHS_MAX {
                match self.epochs.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&self, group: &mut Vec<EpochCommit>) {
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
            newest_epoch = epoch.batch.epoch;
            let sync = self.fsync == FsyncPolicy::EveryEpoch && index == epochs - 1;
            if let Err(error) = self.storage.write_epoch(epoch.batch, sync) {
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
                            for waiter in ledger.complete(&id, &outcome) {
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
