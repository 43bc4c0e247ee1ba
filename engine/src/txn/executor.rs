//! Executes one epoch's transactions over its task precedence graph on a pool of
//! executor threads.
//!
//! A transaction runs once all its predecessors have finished. Its workflow's steps run
//! in their declared order on one thread; every write goes to a private buffer first and
//! reaches the slots only when all steps succeeded, so an abort (logic, undeclared access,
//! value too large, panic) leaves nothing behind. When a finished transaction makes
//! successors ready, the executor continues with one of them itself and hands the others
//! to the pool, which keeps chains of conflicting transactions on one warm thread.
//!
//! # Abandoning a call that does not return
//!
//! Native plugin code cannot be preempted, so a plugin function in an endless loop would
//! hold its epoch, and with it every other plugin, forever. With `plugin_call_abandon_ms`
//! set, the thread that waits for the epoch (the epoch driver) watches the transactions
//! that are running; one that has run longer is abandoned:
//! * its [`Claim`] moves from running to abandoned, which the executor thread can no
//!   longer undo: if the call ever returns, the thread drops its result without touching
//!   a slot, an outcome or a successor. The plugin's host calls check the claim too, so an
//!   abandoned call cannot read a slot that a successor is writing;
//! * the buffers of its keys' values are pinned ([`Slot::pin_value_buffer`]), because the
//!   plugin may still hold slices of them;
//! * its outcome is `plugin-timed-out` (nothing of it took effect), its successors are
//!   released, its plugin is quarantined (`LoadedPlugin::quarantine`), and the epoch
//!   finishes as usual;
//! * the stuck thread is written off: after the epoch the pool is replaced by a new one
//!   of the same size. The epoch's data lives in an `Arc` the stuck thread shares, so
//!   nothing it can still reach is freed.
//!
//! [`Slot::pin_value_buffer`]: crate::storage::Slot::pin_value_buffer

use super::tpg::TaskGraph;
use super::{PreparedTransaction, TransactionBody};
use crate::model::{AbortKind, Outcome, Timestamp};
use crate::plugin::LoadedPlugin;
use crate::plugin::LoadedTable;
use leasehold_sdk::abi::{self, FunctionCall, RawBytes};
use parking_lot::{Condvar, Mutex};
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Largest output a step may produce; a larger one aborts the transaction.
pub const OUTPUT_BYTES_MAX: usize = 16 << 20;

/// Outcomes written by executor threads, one cell per transaction.
struct OutcomeCells(Vec<UnsafeCell<Option<Outcome>>>);

// SAFETY: each cell is written once, by whoever won its transaction's claim (the thread
// that ran it, or the driver abandoning it), and read only after the epoch resolved.
unsafe impl Sync for OutcomeCells {}

/// Who decides a transaction's outcome: the executor thread that runs it, or the driver
/// that abandons it. Exactly one of them wins.
pub(crate) struct Claim(AtomicU8);

impl Claim {
    const RUNNING: u8 = 0;
    /// The plugin is inside a host call that reads slots.
    const IN_HOST: u8 = 1;
    const FINISHED: u8 = 2;
    const ABANDONED: u8 = 3;

    pub(crate) fn new() -> Claim {
        Claim(AtomicU8::new(Claim::RUNNING))
    }

    /// Before a host call reads a slot: false when the transaction was abandoned.
    fn enter_host(&self) -> bool {
        self.0.compare_exchange(Claim::RUNNING, Claim::IN_HOST, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    fn leave_host(&self) {
        self.0.store(Claim::RUNNING, Ordering::Release);
    }

    /// The executor thread's claim once every call returned: false when the transaction
    /// was abandoned meanwhile.
    pub(crate) fn finish(&self) -> bool {
        self.0.compare_exchange(Claim::RUNNING, Claim::FINISHED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Makes a claim the executor thread won usable for another run of the same
    /// transaction (an OCC retry); a claim the driver won stays abandoned.
    pub(crate) fn rearm(&self) {
        let _ = self.0.compare_exchange(Claim::FINISHED, Claim::RUNNING, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Whether the driver abandoned the transaction.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == Claim::ABANDONED
    }

    /// The driver's claim: false when the transaction finished first. Waits out a host
    /// call in progress (host calls are short; the plugin's own code is what may not end).
    pub(crate) fn abandon(&self) -> bool {
        loop {
            match self.0.compare_exchange(Claim::RUNNING, Claim::ABANDONED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(Claim::IN_HOST) => std::thread::yield_now(),
                Err(_) => return false,
            }
        }
    }
}

/// The thread pool that runs transactions.
pub struct Executor {
    pool: rayon::ThreadPool,
    threads: usize,
    /// `None`: calls are never abandoned.
    abandon_after: Option<Duration>,
}

fn build_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("leasehold-executor-{i}")).build()
}

/// Microseconds since a process-wide origin, plus one (0 means "not started").
pub(crate) fn now_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

impl Executor {
    /// A pool of `threads` executors; `abandon_after` (if any) is how long a transaction
    /// may run before it is abandoned (see the module doc).
    pub fn new(threads: usize, abandon_after: Option<Duration>) -> Result<Executor, rayon::ThreadPoolBuildError> {
        Ok(Executor { pool: build_pool(threads)?, threads, abandon_after })
    }

    /// Runs every transaction of the epoch and returns them with their outcomes, in order.
    /// Committed transactions have already applied their writes to their slots.
    pub fn run(&mut self, transactions: Vec<PreparedTransaction>, graph: TaskGraph) -> (Executed, Vec<Outcome>) {
        assert_eq!(transactions.len(), graph.len(), "one graph vertex per transaction");
        let count = transactions.len();
        let epoch = Arc::new(EpochWork {
            outcomes: OutcomeCells((0..count).map(|_| UnsafeCell::new(None)).collect()),
            remaining: graph.indegree.iter().map(|&d| AtomicU32::new(d)).collect(),
            claims: (0..count).map(|_| Claim::new()).collect(),
            started_us: (0..count).map(|_| AtomicU64::new(0)).collect(),
            unresolved: AtomicUsize::new(count),
            resolved: (Mutex::new(false), Condvar::new()),
            transactions,
            graph,
        });
        match self.abandon_after {
            // A lone transaction (the idle case) needs no hand-off to the pool, unless the
            // driver must stay free to abandon it.
            None if count == 1 => epoch.run_chain(0, None),
            None => {
                let epoch = &epoch;
                self.pool.scope(|scope| {
                    for root in epoch.graph.roots() {
                        scope.spawn(move |scope| epoch.run_chain(root, Some(scope)));
                    }
                });
            }
            Some(limit) => {
                for root in epoch.graph.roots() {
                    let epoch = epoch.clone();
                    self.pool.spawn(move || epoch.run_chain_detached(root));
                }
                let abandoned = self.wait_abandoning(&epoch, limit);
                if abandoned > 0 {
                    // The stuck threads are lost to the pool; later epochs get a full one.
                    // (Dropping the old pool does not wait for them.)
                    match build_pool(self.threads) {
                        Ok(pool) => self.pool = pool,
                        Err(error) => tracing::error!(%error, "cannot replace the executor pool"),
                    }
                }
            }
        }
        epoch.into_parts()
    }

    /// Waits until every transaction of the epoch has an outcome, abandoning those that
    /// run longer than `limit`. Returns how many it abandoned.
    fn wait_abandoning(&self, epoch: &Arc<EpochWork>, limit: Duration) -> u64 {
        let period = (limit / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let limit_us = limit.as_micros() as u64;
        let mut abandoned = 0;
        loop {
            {
                let (lock, condvar) = &epoch.resolved;
                let mut resolved = lock.lock();
                if !*resolved {
                    condvar.wait_for(&mut resolved, period);
                }
                if *resolved {
                    return abandoned;
                }
            }
            let now = now_us();
            for transaction in 0..epoch.transactions.len() {
                let started = epoch.started_us[transaction].load(Ordering::Acquire);
                if started != 0 && now.saturating_sub(started) > limit_us && epoch.abandon(transaction, &self.pool) {
                    abandoned += 1;
                }
            }
        }
    }
}

/// One epoch's transactions and their execution state, shared by the executor threads
/// and the driver (and kept alive by an abandoned thread for as long as it runs).
pub struct EpochWork {
    transactions: Vec<PreparedTransaction>,
    graph: TaskGraph,
    outcomes: OutcomeCells,
    remaining: Vec<AtomicU32>,
    claims: Vec<Claim>,
    /// When each transaction started running (see [`now_us`]); 0 before.
    started_us: Vec<AtomicU64>,
    unresolved: AtomicUsize,
    resolved: (Mutex<bool>, Condvar),
}

impl EpochWork {
    /// Runs `transaction` and then, on this thread, one successor it made ready after
    /// another; other ready successors go to the scope.
    fn run_chain<'scope>(&'scope self, mut transaction: usize, scope: Option<&rayon::Scope<'scope>>) {
        loop {
            let outcome = execute_unclaimed(&self.transactions[transaction]);
            let Some(next) = self.resolve(transaction, outcome, |successor| match scope {
                Some(scope) => scope.spawn(move |scope| self.run_chain(successor, Some(scope))),
                None => unreachable!("a lone transaction has no successors"),
            }) else {
                return;
            };
            transaction = next;
        }
    }

    /// As [`EpochWork::run_chain`], for epochs whose driver may abandon transactions:
    /// other ready successors go to the pool, and a transaction abandoned meanwhile ends
    /// the chain without a trace.
    fn run_chain_detached(self: Arc<Self>, mut transaction: usize) {
        loop {
            self.started_us[transaction].store(now_us(), Ordering::Release);
            let Some(outcome) = execute(&self.transactions[transaction], Some(&self.claims[transaction])) else {
                return;
            };
            let Some(next) = self.resolve(transaction, outcome, |successor| {
                let epoch = self.clone();
                rayon::spawn(move || epoch.run_chain_detached(successor));
            }) else {
                return;
            };
            transaction = next;
        }
    }

    /// Records the outcome of a transaction whose claim the caller won, releases its
    /// successors (all but one through `spawn`) and returns the one to run next.
    fn resolve(&self, transaction: usize, outcome: Outcome, mut spawn: impl FnMut(usize)) -> Option<usize> {
        // SAFETY: the caller won the transaction's claim, so no one else writes this cell.
        unsafe { *self.outcomes.0[transaction].get() = Some(outcome) };
        let mut next = None;
        for &successor in self.graph.successors(transaction) {
            // AcqRel: the successor's thread must see this transaction's slot writes.
            if self.remaining[successor as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                match next {
                    None => next = Some(successor as usize),
                    Some(_) => spawn(successor as usize),
                }
            }
        }
        if self.unresolved.fetch_sub(1, Ordering::AcqRel) == 1 {
            let (lock, condvar) = &self.resolved;
            *lock.lock() = true;
            condvar.notify_all();
        }
        next
    }

    /// Abandons `transaction` if it is still running (see the module doc); true if it was.
    fn abandon(self: &Arc<Self>, transaction: usize, pool: &rayon::ThreadPool) -> bool {
        if !self.claims[transaction].abandon() {
            return false;
        }
        let running_ms = now_us().saturating_sub(self.started_us[transaction].load(Ordering::Acquire)) / 1000;
        let outcome = abandoned(&self.transactions[transaction], running_ms);
        let next = self.resolve(transaction, outcome, |successor| {
            let epoch = self.clone();
            pool.spawn(move || epoch.run_chain_detached(successor));
        });
        if let Some(successor) = next {
            let epoch = self.clone();
            pool.spawn(move || epoch.run_chain_detached(successor));
        }
        true
    }

    /// The transactions and their outcomes, once every transaction is resolved. Takes the
    /// transactions back unless an abandoned thread still shares them.
    fn into_parts(self: Arc<Self>) -> (Executed, Vec<Outcome>) {
        match Arc::try_unwrap(self) {
            Ok(epoch) => {
                let outcomes = epoch.outcomes.0.into_iter().map(|cell| cell.into_inner().expect(RESOLVED)).collect();
                (Executed::Owned(epoch.transactions), outcomes)
            }
            Err(shared) => {
                // SAFETY: every transaction is resolved, so no cell is written any more.
                let outcomes = shared.outcomes.0.iter().map(|cell| unsafe { (*cell.get()).clone() }.expect(RESOLVED));
                let outcomes = outcomes.collect();
                (Executed::Shared(shared), outcomes)
            }
        }
    }
}

/// An epoch's transactions after execution: owned again, or still shared with a thread
/// whose call was abandoned (rare; then request ids are copied out).
pub enum Executed {
    Owned(Vec<PreparedTransaction>),
    Shared(Arc<EpochWork>),
}

impl Executed {
    pub fn transactions(&self) -> &[PreparedTransaction] {
        match self {
            Executed::Owned(transactions) => transactions,
            Executed::Shared(epoch) => &epoch.transactions,
        }
    }

    /// The request ids of the transactions, in order.
    pub fn into_request_ids(self) -> Vec<crate::model::RequestId> {
        match self {
            Executed::Owned(transactions) => transactions.into_iter().map(|t| t.planned.request_id).collect(),
            Executed::Shared(epoch) => epoch.transactions.iter().map(|t| t.planned.request_id.clone()).collect(),
        }
    }
}

/// What abandoning a transaction means besides resolving it, for a caller that won its
/// claim (see the module doc): pins the buffers of its keys' values, reports the call
/// (log, status, metric), quarantines the plugin, and returns the transaction's outcome.
/// Shared by the single-node executor and the cluster driver.
pub(crate) fn abandoned(prepared: &PreparedTransaction, running_ms: u64) -> Outcome {
    for (_, slot) in &prepared.slots {
        // SAFETY: the abandoned transaction holds its keys until its caller releases its
        // successors.
        unsafe { slot.get().pin_value_buffer() };
    }
    report_abandoned(&prepared.planned.plugin, prepared.timestamp, running_ms)
}

/// Reports an abandoned call (log, status, metric), quarantines its plugin and returns
/// its transaction's outcome. For callers whose transaction's slots need no pinning (the
/// baseline protocols run plugins on private copies that the stuck thread owns).
pub(crate) fn report_abandoned(plugin: &LoadedPlugin, timestamp: Timestamp, running_ms: u64) -> Outcome {
    let reason = format!("a call ran for {running_ms} ms and was abandoned");
    tracing::error!(
        plugin = %plugin.info.name,
        version = %plugin.info.version,
        running_ms,
        "abandoned a plugin call that did not return: its transaction aborts, its executor thread is \
         written off, and the plugin is quarantined until a fixed version is deployed"
    );
    plugin.quarantine(reason.clone());
    crate::plugin::watchdog::count_abandoned(1);
    metrics::counter!(crate::metrics::PLUGIN_CALLS_ABANDONED_TOTAL).increment(1);
    Outcome::Aborted { timestamp, kind: AbortKind::PluginTimedOut, message: reason }
}

const RESOLVED: &str = "every transaction has an outcome: the graph is acyclic, all roots were started";

/// A buffered write: `Some(value)` or `None` for a deletion.
type BufferedWrite = Option<Vec<u8>>;

/// The host side of one transaction's function calls.
struct CallContext<'a> {
    transaction: &'a PreparedTransaction,
    /// The transaction's claim, when its driver may abandon it.
    claim: Option<&'a Claim>,
    tables: &'a [LoadedTable],
    writes: Vec<Option<BufferedWrite>>,
    failure: Option<(AbortKind, String)>,
}

impl CallContext<'_> {
    fn refuse(&mut self, kind: AbortKind, message: String) -> i32 {
        if self.failure.is_none() {
            self.failure = Some((kind, message));
        }
        abi::ACCESS_REFUSED
    }

    fn table_name(&self, table: u32) -> &str {
        self.tables.get(table as usize).map_or("?", |t| t.name.as_str())
    }

    /// The declared entry for a write, or the refusal status.
    fn writable_entry(&mut self, table: u32, key: &[u8]) -> Result<usize, i32> {
        let accesses = &self.transaction.planned.accesses;
        match accesses.find(table, key) {
            Some(index) if accesses.entries()[index].mode == super::access::AccessMode::Write => Ok(index),
            Some(_) => {
                let message =
                    format!("write to key {key:?} of table {}, which was declared read-only", self.table_name(table));
                Err(self.refuse(AbortKind::UndeclaredAccess, message))
            }
            None => {
                let message = format!("write to undeclared key {key:?} of table {}", self.table_name(table));
                Err(self.refuse(AbortKind::UndeclaredAccess, message))
            }
        }
    }
}

fn context<'a>(pointer: *mut c_void) -> &'a mut CallContext<'a> {
    // SAFETY: every FunctionCall built by `execute` passes a live `*mut CallContext`.
    unsafe { &mut *(pointer as *mut CallContext) }
}

extern "C" fn host_read(pointer: *mut c_void, table: u32, key: RawBytes, out: *mut RawBytes) -> i32 {
    let context = context(pointer);
    // SAFETY: the plugin passes key bytes valid for this call.
    let key = unsafe { key.as_slice() };
    let Some(index) = context.transaction.planned.accesses.find(table, key) else {
        let message = format!("read of undeclared key {key:?} of table {}", context.table_name(table));
        return context.refuse(AbortKind::UndeclaredAccess, message);
    };
    if let Some(claim) = context.claim {
        if !claim.enter_host() {
            // Abandoned: the key may belong to a successor by now.
            return abi::ACCESS_REFUSED;
        }
    }
    let value = match &context.writes[index] {
        Some(buffered) => buffered.as_deref(),
        // SAFETY: the graph gives this transaction the key; the slice lives until the
        // transaction applies its writes, after every call has returned (or, when the
        // call is abandoned, for good: the abandonment pins the buffer).
        None => unsafe { context.transaction.slots[index].1.get().value() },
    };
    let status = match value {
        Some(value) => {
            // SAFETY: the plugin passes a valid out pointer.
            unsafe { *out = RawBytes::from_slice(value) };
            abi::READ_FOUND
        }
        None => abi::READ_ABSENT,
    };
    if let Some(claim) = context.claim {
        claim.leave_host();
    }
    status
}

extern "C" fn host_write(pointer: *mut c_void, table: u32, key: RawBytes, value: RawBytes) -> i32 {
    let context = context(pointer);
    // SAFETY: the plugin passes bytes valid for this call.
    let (key, value) = unsafe { (key.as_slice(), value.as_slice()) };
    let index = match context.writable_entry(table, key) {
        Ok(index) => index,
        Err(status) => return status,
    };
    let limit = context.tables[table as usize].value_bytes_max as usize;
    if value.len() > limit {
        let message =
            format!("value of {} bytes for table {}, which allows {limit}", value.len(), context.table_name(table));
        return context.refuse(AbortKind::ValueTooLarge, message);
    }
    match &mut context.writes[index] {
        Some(Some(buffer)) => {
            buffer.clear();
            buffer.extend_from_slice(value);
        }
        slot => *slot = Some(Some(value.to_vec())),
    }
    0
}

extern "C" fn host_delete(pointer: *mut c_void, table: u32, key: RawBytes) -> i32 {
    let context = context(pointer);
    // SAFETY: the plugin passes bytes valid for this call.
    let key = unsafe { key.as_slice() };
    match context.writable_entry(table, key) {
        Ok(index) => {
            context.writes[index] = Some(None);
            0
        }
        Err(status) => status,
    }
}

fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// Runs one transaction that no one can abandon to its outcome, applying its writes when
/// it commits.
pub(crate) fn execute_unclaimed(transaction: &PreparedTransaction) -> Outcome {
    execute(transaction, None).expect("a transaction without a claim always has an outcome")
}

/// Runs one transaction to its outcome, applying its writes when it commits. With a
/// claim, the outcome counts only if the claim is won (`None`: the transaction was
/// abandoned while it ran, and nothing of it was applied).
pub(crate) fn execute(transaction: &PreparedTransaction, claim: Option<&Claim>) -> Option<Outcome> {
    let finished = |outcome: Outcome| match claim {
        Some(claim) if !claim.finish() => None,
        _ => Some(outcome),
    };
    let timestamp = transaction.timestamp;
    let plugin: &LoadedPlugin = &transaction.planned.plugin;
    let (workflow, arguments) = match &transaction.planned.body {
        TransactionBody::ReadKey => {
            if let Some(claim) = claim {
                // Reading the slot needs the key, which only the claim's winner has.
                if !claim.finish() {
                    return None;
                }
            }
            // SAFETY: the graph gives this transaction the key.
            let value = unsafe { transaction.slots[0].1.get().value() };
            let mut output = Vec::with_capacity(1 + value.map_or(0, <[u8]>::len));
            output.push(u8::from(value.is_some()));
            output.extend_from_slice(value.unwrap_or_default());
            return Some(Outcome::Committed { timestamp, output });
        }
        TransactionBody::Workflow { workflow, arguments } => (&plugin.workflows[*workflow as usize], arguments),
    };
    let mut context = CallContext {
        transaction,
        claim,
        tables: &plugin.tables,
        writes: vec![None; transaction.planned.accesses.len()],
        failure: None,
    };
    let mut outputs: Vec<Vec<u8>> = vec![Vec::new(); workflow.steps.len()];
    let mut parents: Vec<RawBytes> = Vec::new();
    for (index, step) in workflow.steps.iter().enumerate() {
        let (earlier, current) = outputs.split_at_mut(index);
        parents.clear();
        parents.extend(step.parents.iter().map(|&p| RawBytes::from_slice(&earlier[p as usize])));
        let mut error = Vec::new();
        let call = FunctionCall {
            context: &mut context as *mut CallContext as *mut c_void,
            arguments: RawBytes::from_slice(arguments),
            parent_outputs: parents.as_ptr(),
            parent_count: parents.len(),
            read: host_read,
            write: host_write,
            delete: host_delete,
            output: crate::plugin::vec_sink(&mut current[0]),
            error: crate::plugin::vec_sink(&mut error),
        };
        let status = plugin.run(step.function, &call);
        // A refusal by the host wins, even when the plugin ignored it and went on.
        let failure = context.failure.take().or(match status {
            abi::STATUS_OK if current[0].len() > OUTPUT_BYTES_MAX => Some((
                AbortKind::ValueTooLarge,
                format!("step output of {} bytes exceeds {OUTPUT_BYTES_MAX}", current[0].len()),
            )),
            abi::STATUS_OK => None,
            abi::STATUS_ABORT | abi::STATUS_BAD_ARGUMENTS => Some((AbortKind::Logic, utf8_lossy(error))),
            abi::STATUS_PANIC => Some((AbortKind::PluginPanic, utf8_lossy(error))),
            abi::STATUS_HOST_REFUSED => Some((AbortKind::UndeclaredAccess, "the engine refused an access".into())),
            other => Some((AbortKind::PluginPanic, format!("the plugin returned unknown status {other}"))),
        });
        if let Some((kind, message)) = failure {
            return finished(Outcome::Aborted { timestamp, kind, message });
        }
    }
    if let Some(claim) = claim {
        if !claim.finish() {
            return None;
        }
    }
    for (index, write) in context.writes.iter().enumerate() {
        if let Some(value) = write {
            // SAFETY: the graph gives this transaction the key, and no read reference is
            // alive: every function call has returned.
            unsafe { transaction.slots[index].1.get().set(value.as_deref()) };
        }
    }
    Some(Outcome::Committed { timestamp, output: outputs.pop().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::Claim;
    use std::sync::Arc;

    #[test]
    fn exactly_one_side_wins_a_claim() {
        let finished_first = Claim::new();
        assert!(finished_first.finish());
        assert!(!finished_first.abandon(), "a finished transaction cannot be abandoned");

        let abandoned_first = Claim::new();
        assert!(abandoned_first.abandon());
        assert!(!abandoned_first.finish(), "an abandoned transaction cannot finish");
        assert!(!abandoned_first.enter_host(), "an abandoned call gets no more host access");
    }

    #[test]
    fn abandoning_waits_out_a_host_call_in_progress() {
        let claim = Arc::new(Claim::new());
        assert!(claim.enter_host());
        let abandoner = {
            let claim = claim.clone();
            std::thread::spawn(move || claim.abandon())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!abandoner.is_finished(), "the abandonment waits while the host call reads slots");
        claim.leave_host();
        assert!(abandoner.join().expect("abandoner"), "then it wins");
        assert!(!claim.finish());
    }
}
