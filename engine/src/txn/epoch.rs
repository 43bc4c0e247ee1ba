//! The epoch driver: gathers submitted transactions into epochs and runs each epoch
//! through sequencing, key loading, graph building and execution, then hands it to the
//! commit thread.
//!
//! Epoch length adapts to load without a timer: an epoch takes everything that arrived
//! while the previous one was executing (up to `epoch_transactions_max`). An idle node
//! therefore runs a lone request at once (latency), and a busy node runs large epochs
//! (throughput). `epoch_linger_us` optionally waits a little for more requests.

use super::commit::{hand_over_epoch, CommitMessage, EpochCommit};
use super::executor::Executor;
use super::ledger::{Admission, Ledger};
use super::tpg::GraphBuilder;
use super::{BatchKeys, PreparedTransaction, Submission, TransactionStats};
use crate::model::{NodeId, Rejection, Timestamp};
use crate::storage::slots::SlotPointer;
use crate::storage::{EpochRecord, Slot, SlotStore, Storage};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the driver receives.
pub enum DriverMessage {
    Submit(Submission),
    /// The requests of one client message that run here, taken into one epoch together
    /// (a message split over two epochs would wait for both).
    SubmitMany(Vec<Submission>),
    /// A frame from a peer (cluster only).
    Peer {
        from: NodeId,
        frame: crate::cluster::wire::Frame,
    },
    /// An executor finished a transaction of `epoch` (cluster only).
    Executed {
        epoch: u64,
        transaction: u32,
        outcome: crate::model::Outcome,
    },
    /// An executor ran a transaction of `epoch` under a baseline protocol on record
    /// slots (cluster with `cc = "2pl" | "occ"` only).
    RanOverFabric {
        epoch: u64,
        run: Box<crate::cluster::driver::baseline::BaselineRun>,
    },
    /// Finish what was submitted before, then stop.
    Stop,
}

pub struct EpochDriver {
    pub node: NodeId,
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub executor: Executor,
    pub inbox: Receiver<DriverMessage>,
    pub commits: Sender<CommitMessage>,
    pub epoch_transactions_max: usize,
    pub epoch_linger: Duration,
    /// The last epoch number used (the durable epoch at start).
    pub epoch: u64,
    pub slots: SlotStore,
    pub graph_builder: GraphBuilder,
}

fn reject(submission: Submission, rejection: Rejection) {
    submission.reply.send(Err(rejection));
}

impl EpochDriver {
    /// Runs until told to stop; every submission received before the stop is finished.
    pub fn run(mut self) {
        let mut stopping = false;
        let mut batch: Vec<Submission> = Vec::new();
        while !stopping {
            match self.inbox.recv() {
                Ok(DriverMessage::Submit(submission)) => batch.push(submission),
                Ok(DriverMessage::SubmitMany(submissions)) => batch.extend(submissions),
                Ok(DriverMessage::Stop) | Err(_) => stopping = true,
                Ok(
                    DriverMessage::Peer { .. } | DriverMessage::Executed { .. } | DriverMessage::RanOverFabric { .. },
                ) => {
                    unreachable!("a single node gets no cluster messages")
                }
            }
            let linger_until = Instant::now() + self.epoch_linger;
            while batch.len() < self.epoch_transactions_max {
                let message = match self.inbox.try_recv() {
                    Ok(message) => message,
                    Err(_) if stopping || self.epoch_linger.is_zero() => break,
                    Err(_) => match self.inbox.recv_deadline(linger_until) {
                        Ok(message) => message,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                match message {
                    DriverMessage::Submit(submission) => batch.push(submission),
                    DriverMessage::SubmitMany(submissions) => batch.extend(submissions),
                    DriverMessage::Stop => stopping = true,
                    DriverMessage::Peer { .. }
                    | DriverMessage::Executed { .. }
                    | DriverMessage::RanOverFabric { .. } => {
                        unreachable!("a single node gets no cluster messages")
                    }
                }
            }
            if !batch.is_empty() {
                self.run_epoch(std::mem::take(&mut batch));
            }
            if stopping {
                // Requests that raced with the stop are finished too, in further epochs.
                while let Ok(message) = self.inbox.try_recv() {
                    match message {
                        DriverMessage::Submit(submission) => batch.push(submission),
                        DriverMessage::SubmitMany(submissions) => batch.extend(submissions),
                        _ => continue,
                    }
                    if batch.len() >= self.epoch_transactions_max {
                        self.run_epoch(std::mem::take(&mut batch));
                    }
                }
                if !batch.is_empty() {
                    self.run_epoch(std::mem::take(&mut batch));
                }
            }
        }
    }

    fn admit(&self, batch: Vec<Submission>) -> Vec<Submission> {
        admit(&self.ledger, &self.storage, batch)
    }

    fn run_epoch(&mut self, batch: Vec<Submission>) {
        let closed_at = Instant::now();
        if self.stats.failed.load(Ordering::Acquire) {
            for submission in batch {
                reject(submission, Rejection::Storage("the node stopped after a storage failure".into()));
            }
            return;
        }
        let runnable = self.admit(batch);
        if runnable.is_empty() {
            return;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        // A span per epoch (not per transaction): cheap when debug logging is off.
        let _span = tracing::debug_span!("epoch", epoch, transactions = runnable.len()).entered();
        let prepared = match self.prepare(epoch, runnable) {
            Ok(prepared) => prepared,
            Err((rejection, submissions)) => {
                let mut ledger = self.ledger.lock();
                for submission in submissions {
                    for waiter in ledger.abandon(&submission.transaction.request_id) {
                        waiter.send(Err(rejection.clone()));
                    }
                    reject(submission, rejection.clone());
                }
                return;
            }
        };
        let (transactions, replies): (Vec<PreparedTransaction>, Vec<_>) = prepared.into_iter().unzip();
        let graph = self.graph_builder.build(transactions.len(), |t| {
            transactions[t].planned.accesses.entries().iter().zip(&transactions[t].slots).map(|(e, s)| (s.0, e.mode))
        });
        let (executed, outcomes) = self.executor.run(transactions, graph);

        let mut dirty: Vec<&Slot> = Vec::new();
        for (transaction, outcome) in executed.transactions().iter().zip(&outcomes) {
            if outcome.is_committed() {
                for (entry, (_, slot)) in transaction.planned.accesses.entries().iter().zip(&transaction.slots) {
                    if entry.mode == super::access::AccessMode::Write {
                        // SAFETY: execution has finished; the driver is the only user.
                        let slot = unsafe { slot.get() };
                        if slot.mark_dirty(epoch) {
                            dirty.push(slot);
                        }
                    }
                }
            }
        }
        let to_release: Vec<_> = executed
            .into_request_ids()
            .into_iter()
            .zip(outcomes)
            .zip(replies)
            .map(|((id, outcome), reply)| (id, outcome, reply))
            .collect();
        let mut record = EpochRecord::new(epoch);
        for slot in dirty {
            // SAFETY: execution has finished; the driver is the only user.
            record.stage_value(slot.storage_key(), unsafe { slot.value() });
        }
        let mut scratch = Vec::new();
        for (id, outcome, _) in &to_release {
            if id.is_tracked() {
                record.stage_result(id, outcome, &mut scratch);
            }
        }
        self.stats.resident_keys.store(self.slots.len() as u64, Ordering::Relaxed);
        hand_over_epoch(&self.stats, &self.commits, EpochCommit { record, replies: to_release, closed_at });
    }

    /// Gives each transaction its timestamp and makes its keys resident, loading the
    /// missing ones from RocksDB in one batched read.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &mut self,
        epoch: u64,
        runnable: Vec<Submission>,
    ) -> Result<Vec<(PreparedTransaction, super::Reply)>, (Rejection, Vec<Submission>)> {
        // The storage keys of every access, resolved in one batched lookup; the misses are
        // loaded in one batched read.
        let keys = BatchKeys::of(&runnable);
        let mut found = Vec::with_capacity(keys.len());
        self.slots.lookup_many(keys.iter(), &mut found);
        let store = &mut self.slots;
        let slots: Vec<(u32, SlotPointer)> =
            match self.storage.load_missing(keys.iter(), found, |key, value| store.insert(key, value)) {
                Ok(slots) => slots,
                Err(error) => return Err((Rejection::Storage(error.to_string()), runnable)),
            };
        // SAFETY: between epochs; the executors get these slots only below.
        unsafe { SlotStore::prefetch_values(slots.iter().map(|&(_, pointer)| pointer)) };
        let mut slots = slots.into_iter();
        let mut prepared = Vec::with_capacity(runnable.len());
        for (sequence, submission) in runnable.into_iter().enumerate() {
            let Submission { transaction, reply } = submission;
            let slots = slots.by_ref().take(transaction.accesses.entries().len()).collect();
            let timestamp = Timestamp { epoch, node: self.node, sequence: sequence as u32 };
            prepared.push((PreparedTransaction { planned: transaction, timestamp, slots }, reply));
        }
        Ok(prepared)
    }
}

/// Answers retries of completed requests (from the ledger, its sessions or the `results`
/// column family), joins duplicates of running ones, and returns the submissions that
/// must run.
/// A new id is started in the ledger as it is admitted (so that a duplicate in the same
/// batch joins it); one found in storage after all is answered from there.
pub(crate) fn admit(ledger_cell: &Mutex<Ledger>, storage: &Storage, batch: Vec<Submission>) -> Vec<Submission> {
    let mut runnable = Vec::with_capacity(batch.len());
    // Tracked ids new to the ledger: they run unless storage knows their outcome.
    let mut started: Vec<Submission> = Vec::new();
    {
        let now_unix_seconds = crate::storage::unix_seconds_now();
        let mut ledger = ledger_cell.lock();
        for submission in batch {
            if !submission.transaction.request_id.is_tracked() {
                runnable.push(submission);
                continue;
            }
            let Submission { transaction, reply } = submission;
            match ledger.admit(&transaction.request_id, reply, now_unix_seconds) {
                // A retry of a completed request gets its durable outcome.
                Admission::Done(outcome, reply) => reply.send(Ok(outcome)),
                Admission::Joined => {}
                Admission::Started(reply) => started.push(Submission { transaction, reply }),
                // A session holds every outcome its client may ask for: nothing to look up.
                Admission::New(reply) => runnable.push(Submission { transaction, reply }),
                Admission::Refused(rejection, reply) => {
                    reject(Submission { transaction, reply }, rejection);
                }
            }
        }
    }
    if started.is_empty() {
        return runnable;
    }
    let ids: Vec<_> = started.iter().map(|submission| &submission.transaction.request_id).collect();
    let stored = storage.read_results(&ids);
    let mut ledger = ledger_cell.lock();
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            let rejection = Rejection::Storage(error.to_string());
            for submission in started {
                for waiter in ledger.abandon(&submission.transaction.request_id) {
                    waiter.send(Err(rejection.clone()));
                }
                reject(submission, rejection.clone());
            }
            return runnable;
        }
    };
    for (submission, stored) in started.into_iter().zip(stored) {
        match stored {
            // A retry of a request the ledger had forgotten: answered from storage, not run.
            Some(outcome) => {
                for waiter in ledger.found_in_storage(&submission.transaction.request_id, outcome.clone()) {
                    waiter.send(Ok(outcome.clone()));
                }
                submission.reply.send(Ok(outcome));
            }
            None => runnable.push(submission),
        }
    }
    runnable
}
