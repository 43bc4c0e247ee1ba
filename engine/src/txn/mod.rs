//! Transactions: epochs, the task precedence graph, execution and commit.
//!
//! The path of a request: an RPC thread plans it (the plugin computes its access set)
//! and hands it to the [`epoch`] driver. The driver gathers requests into an epoch,
//! answers retries from the [`ledger`] (and its client [`sessions`]), gives each new transaction its timestamp, makes
//! its keys resident, builds the [`tpg`] and lets the [`executor`] run it. The epoch's
//! changes go to the [`commit`] thread as one RocksDB write batch; replies are released
//! only once that batch is durable.

pub mod access;
pub(crate) mod commit;
pub(crate) mod epoch;
pub mod executor;
pub(crate) mod ledger;
pub mod sessions;
pub mod tpg;

use crate::model::{Outcome, Rejection, RequestId, Timestamp};
use crate::plugin::LoadedPlugin;
use crate::storage::slots::SlotPointer;
use access::AccessSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What a waiting call receives for one transaction.
pub type ReplyResult = Result<Outcome, Rejection>;

/// Where a transaction's outcome goes: a call waiting for it alone, or its place in a
/// [`ReplyBatch`] (the requests of one `invokeMany` message). Dropped unanswered, it
/// answers `ShuttingDown` (the node stopped before the transaction ran).
pub struct Reply(Option<ReplyTo>);

enum ReplyTo {
    One(tokio::sync::oneshot::Sender<ReplyResult>),
    InBatch { batch: Arc<ReplyBatch>, place: u32 },
}

impl Reply {
    /// A reply to a call that waits on the receiver.
    pub fn one() -> (Reply, tokio::sync::oneshot::Receiver<ReplyResult>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (Reply(Some(ReplyTo::One(sender))), receiver)
    }

    /// Answers the waiting call. A call that went away is no error: the outcome is
    /// durable (or nothing ran) and a retry under the same id gets it.
    pub fn send(mut self, result: ReplyResult) {
        match self.0.take() {
            Some(ReplyTo::One(sender)) => {
                let _ = sender.send(result);
            }
            Some(ReplyTo::InBatch { batch, place }) => batch.answer(place, result),
            None => unreachable!("a reply is answered once: send takes it"),
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A lone reply's receiver sees the closed channel instead.
        if let Some(ReplyTo::InBatch { batch, place }) = self.0.take() {
            batch.answer(place, Err(Rejection::ShuttingDown));
        }
    }
}

/// The replies of many requests that one call waits for together: one wake-up and one
/// message for the whole batch instead of one per request (the RPC thread spent a fifth
/// of its time polling a future per request of an `invokeMany` message).
///
/// Places are taken with [`ReplyBatch::reply`]; [`ReplyBatch::seal`] says no more will
/// be, and its receiver gets every place's result once all are answered.
pub struct ReplyBatch {
    results: parking_lot::Mutex<Vec<Option<ReplyResult>>>,
    /// Places not answered yet, plus one until the batch is sealed.
    unanswered: std::sync::atomic::AtomicUsize,
    done: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<Vec<Option<ReplyResult>>>>>,
}

impl ReplyBatch {
    /// An empty batch and where its results will arrive.
    pub fn new() -> (Arc<ReplyBatch>, tokio::sync::oneshot::Receiver<Vec<Option<ReplyResult>>>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let batch = ReplyBatch {
            results: parking_lot::Mutex::new(Vec::new()),
            unanswered: std::sync::atomic::AtomicUsize::new(1),
            done: parking_lot::Mutex::new(Some(sender)),
        };
        (Arc::new(batch), receiver)
    }

    /// A reply for the next place of the batch, and that place's number.
    pub fn reply(self: &Arc<Self>) -> (Reply, u32) {
        let place = {
            let mut results = self.results.lock();
            results.push(None);
            u32::try_from(results.len() - 1).expect("fewer than 2^32 requests in one message")
        };
        self.unanswered.fetch_add(1, Ordering::AcqRel);
        (Reply(Some(ReplyTo::InBatch { batch: Arc::clone(self), place })), place)
    }

    /// No more places will be taken; the results are sent once every place is answered
    /// (at once if none was taken or all already are).
    pub fn seal(&self) {
        self.settle_one();
    }

    fn answer(&self, place: u32, result: ReplyResult) {
        self.results.lock()[place as usize] = Some(result);
        self.settle_one();
    }

    fn settle_one(&self) {
        if self.unanswered.fetch_sub(1, Ordering::AcqRel) == 1 {
            let results = std::mem::take(&mut *self.results.lock());
            if let Some(done) = self.done.lock().take() {
                let _ = done.send(results);
            }
        }
    }
}

/// What a transaction does.
pub enum TransactionBody {
    /// Runs workflow number `workflow` of the plugin.
    Workflow { workflow: u32, arguments: Vec<u8> },
    /// Reads the single key of the access set (the `readKey` call), ordered like any
    /// transaction so that it sees a consistent, committed value.
    ReadKey,
}

/// A request whose access set is known, ready to be sequenced.
pub struct PlannedTransaction {
    pub plugin: Arc<LoadedPlugin>,
    pub body: TransactionBody,
    pub accesses: AccessSet,
    pub request_id: RequestId,
}

/// A sequenced transaction with its keys resident.
pub struct PreparedTransaction {
    pub planned: PlannedTransaction,
    pub timestamp: Timestamp,
    /// Slot number and pointer of each access-set entry, in the same order.
    pub slots: Vec<(u32, SlotPointer)>,
}

/// The storage keys of every access of a batch of submissions, in order, in one buffer:
/// what the drivers resolve to slots or records with one batched lookup.
pub(crate) struct BatchKeys {
    bytes: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
}

impl BatchKeys {
    pub(crate) fn of(submissions: &[Submission]) -> BatchKeys {
        let mut keys = BatchKeys { bytes: Vec::new(), ranges: Vec::new() };
        for submission in submissions {
            let transaction = &submission.transaction;
            for entry in transaction.accesses.entries() {
                let table_id = transaction.plugin.tables[entry.table as usize].table_id;
                let start = keys.bytes.len();
                crate::storage::data_key_append(&mut keys.bytes, table_id, transaction.accesses.key(entry));
                keys.ranges.push(start..keys.bytes.len());
            }
        }
        keys
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone {
        self.ranges.iter().map(|range| &self.bytes[range.clone()])
    }

    /// The storage key of access number `index` of the batch (all transactions' accesses
    /// in order).
    pub(crate) fn key(&self, index: usize) -> &[u8] {
        &self.bytes[self.ranges[index].clone()]
    }
}

/// A planned transaction on its way to the epoch driver.
pub struct Submission {
    pub transaction: PlannedTransaction,
    pub reply: Reply,
}

/// Counters shared by the driver, the committer and status queries.
#[derive(Default)]
pub struct TransactionStats {
    pub committed: AtomicU64,
    pub aborted: AtomicU64,
    pub rejected: AtomicU64,
    pub epochs: AtomicU64,
    pub durable_epoch: AtomicU64,
    /// The newest epoch folded into the tables.
    pub checkpointed_epoch: AtomicU64,
    pub resident_keys: AtomicU64,
    /// Set when storage failed; the node then refuses work instead of diverging from disk.
    pub failed: AtomicBool,
}

impl TransactionStats {
    pub fn count(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(sequence: u32) -> ReplyResult {
        Ok(Outcome::Committed { timestamp: Timestamp { epoch: 1, node: 0, sequence }, output: Vec::new() })
    }

    #[tokio::test]
    async fn a_batch_delivers_every_place_once_all_are_answered() {
        let (batch, results) = ReplyBatch::new();
        let replies: Vec<(Reply, u32)> = (0..3).map(|_| batch.reply()).collect();
        assert_eq!(replies.iter().map(|(_, place)| *place).collect::<Vec<_>>(), vec![0, 1, 2]);
        batch.seal();
        drop(batch);
        let mut replies = replies.into_iter();
        let (first, _) = replies.next().expect("three places");
        let (second, _) = replies.next().expect("three places");
        let (third, _) = replies.next().expect("three places");
        // Answered out of order; one dropped unanswered (the node stopped).
        third.send(committed(3));
        first.send(committed(1));
        let mut results = results;
        assert!(results.try_recv().is_err(), "a place is still open");
        drop(second);
        let results = results.await.expect("the batch answers");
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], Some(committed(1)));
        assert_eq!(results[1], Some(Err(Rejection::ShuttingDown)));
        assert_eq!(results[2], Some(committed(3)));
    }

    #[tokio::test]
    async fn a_batch_waits_for_its_seal_and_an_empty_one_answers_at_once() {
        let (batch, results) = ReplyBatch::new();
        let (reply, _) = batch.reply();
        reply.send(committed(7));
        let mut results = results;
        assert!(results.try_recv().is_err(), "more places may still be taken before the seal");
        let (late, _) = batch.reply();
        batch.seal();
        late.send(committed(8));
        assert_eq!(results.await.expect("answered"), vec![Some(committed(7)), Some(committed(8))]);

        let (empty, results) = ReplyBatch::new();
        empty.seal();
        assert_eq!(results.await.expect("answered"), Vec::new());
    }

    #[tokio::test]
    async fn a_lone_reply_dropped_unanswered_closes_its_channel() {
        let (reply, receiver) = Reply::one();
        drop(reply);
        assert!(receiver.await.is_err());
        let (reply, receiver) = Reply::one();
        reply.send(committed(2));
        assert_eq!(receiver.await.expect("answered"), committed(2));
    }
}
