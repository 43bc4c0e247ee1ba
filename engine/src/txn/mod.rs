//! Transactions: epochs, the task precedence graph, execution and commit.
//!
//! The path of a request: an RPC thread plans it (the plugin computes its access set)
//! and hands it to the [`epoch`] driver. The driver gathers requests into an epoch,
//! answers retries from the [`ledger`], gives each new transaction its timestamp, makes
//! its keys resident, builds the [`tpg`] and lets the [`executor`] run it. The epoch's
//! changes go to the [`commit`] thread as one RocksDB write batch; replies are released
//! only once that batch is durable.

pub mod access;
pub(crate) mod commit;
pub(crate) mod epoch;
pub(crate) mod executor;
pub(crate) mod ledger;
pub mod tpg;

use crate::model::{Outcome, Rejection, RequestId, Timestamp};
use crate::plugin::LoadedPlugin;
use crate::storage::slots::SlotPointer;
use access::AccessSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Where a transaction's outcome goes: the waiting RPC call.
pub type Reply = tokio::sync::oneshot::Sender<Result<Outcome, Rejection>>;

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
