//! The baseline concurrency controls (DESIGN §5): two-phase locking with wait-die
//! ([`twopl`], `--cc 2pl`) and optimistic concurrency control ([`occ`], `--cc occ`), run
//! over the same plugins, storage, commit thread and exactly-once ledger as the lease
//! protocol, so that comparisons measure the protocol and nothing else.
//!
//! This module holds the single-node driver; in a cluster the cluster driver runs the
//! same protocols on record slots in fabric memory ([`fabric_records`], [`over_fabric`],
//! `cluster::driver::baseline`).
//!
//! Threads on a single node, replacing the epoch driver and its executor pool:
//! * the dispatcher ([`BaselineDriver::run`], on the thread `Node::start` spawns for the
//!   driver) takes whatever submissions are waiting, answers retries from the ledger
//!   (`txn::epoch::admit`), makes the keys resident (one batched RocksDB read for the
//!   misses), gives each transaction its wait-die timestamp from a counter, and hands it
//!   to the executors at once: no epochs for execution;
//! * `executor_threads` executors run transactions under the chosen protocol. Plugins
//!   run through `txn::executor::execute_unclaimed` on private copies of the values ([`Attempt`]),
//!   so an abort or a retry leaves nothing behind. A finished transaction reserves the
//!   next commit sequence number while the protocol still orders it against every
//!   conflicting transaction (see each protocol's module doc), and hands its outcome and
//!   writes to the sequencer; a concurrency abort runs the transaction again (counted as
//!   a retry);
//! * the watchdog ([`abandon_overdue`], when `plugin_call_abandon_ms` is set) abandons a
//!   plugin call that does not return, as the lease protocol's driver does: it wins the
//!   call's [`Claim`], releases the locks the transaction holds (2PL; under OCC a running
//!   transaction holds none), logs its outcome (`plugin-timed-out`) through the
//!   sequencer under a fresh commit sequence number, quarantines the plugin and starts an
//!   executor in place of the stuck one. The stuck thread, if its call ever returns,
//!   finds the claim lost and ends without touching a record;
//! * the sequencer ([`Sequencer`]) puts finished transactions back into sequence order
//!   and groups whatever is ready into epoch records (few under light load, many under
//!   heavy load, as the epoch driver's adaptive epochs) for the commit thread, with each
//!   outcome stamped (record, node, position). So the log order, the timestamps clients
//!   see and the serial order agree, and a record is never logged before one it depends
//!   on. Durability, group commit, reply-after-durable and the ledger are the commit
//!   thread's, unchanged.

pub(crate) mod fabric_records;
pub(crate) mod keys;
pub(crate) mod occ;
pub(crate) mod over_fabric;
pub(crate) mod twopl;

use crate::config::ConcurrencyControl;
use crate::model::{NodeId, Outcome, Rejection, Timestamp};
use crate::storage::slots::SlotPointer;
use crate::storage::{EpochRecord, Slot, Storage};
use crate::txn::access::{AccessEntry, AccessMode};
use crate::txn::commit::{CommitMessage, EpochCommit};
use crate::txn::epoch::{admit, DriverMessage};
use crate::txn::executor::Claim;
use crate::txn::ledger::Ledger;
use crate::txn::{BatchKeys, PlannedTransaction, PreparedTransaction, Reply, Submission, TransactionStats};
use crossbeam_channel::{Receiver, Sender};
use keys::{KeyRecord, RecordArena, RecordPointer, ResidentKeys};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters of the baseline protocols, for status and metrics.
#[derive(Default)]
pub struct ConcurrencyStats {
    /// Transactions aborted by the protocol (2PL: died under wait-die; OCC: a write-set
    /// lock or read-set validation failed) and run again. Logic aborts are not counted.
    pub retries: AtomicU64,
}

/// A transaction on its way from the dispatcher to an executor.
pub(crate) struct Job {
    transaction: PlannedTransaction,
    reply: Reply,
    /// The wait-die timestamp: the transaction's age, kept across retries.
    timestamp: u64,
    /// The record of each access-set entry, in the same order.
    records: Vec<RecordPointer>,
}

/// A write a committed transaction made: the key's record and the value (`None`: deleted).
pub(crate) type Write = (RecordPointer, Option<Vec<u8>>);

/// A transaction that ran to its outcome, on its way to the log.
pub(crate) struct Finished {
    request_id: crate::model::RequestId,
    outcome: Outcome,
    reply: Reply,
    writes: Vec<Write>,
    retries: u64,
}

/// What executors (and the watchdog) send the sequencer: every reserved commit sequence
/// number comes back exactly once, with the transaction or empty (void: its OCC
/// validation failed). `Close`, from the dispatcher once every live executor ended, ends
/// the sequencer (a stuck executor may keep its sender forever).
pub(crate) enum LogEntry {
    Numbered { sequence: u64, finished: Option<Finished> },
    Close,
}

/// What executors share; each executor has its own copy with its number.
#[derive(Clone)]
pub(crate) struct WorkerContext {
    node: NodeId,
    /// This executor's number (for the watchdog, which replaces a stuck executor).
    number: usize,
    /// The next commit sequence number.
    sequence: Arc<AtomicU64>,
    log: Sender<LogEntry>,
    arena: Arc<RecordArena>,
    /// The plugin calls running now, when calls that do not return are abandoned.
    calls: Option<Arc<RunningCalls>>,
}

/// How an executor's attempt at a transaction ended.
#[must_use]
pub(crate) enum AttemptEnd {
    /// The transaction's outcome went to the sequencer.
    HandedOver,
    /// The watchdog abandoned its plugin call and answered for it; this executor has been
    /// replaced and ends.
    Abandoned,
}

/// A plugin call an executor is running, as the watchdog sees it.
pub(crate) struct RunningCall {
    claim: Claim,
    started: Instant,
    executor: usize,
    plugin: Arc<crate::plugin::LoadedPlugin>,
    timestamp: Timestamp,
    retries: u64,
    /// 2PL: the locks the transaction holds during the call (every declared key, in
    /// access-set order) and its wait-die timestamp, released by whoever abandons it.
    held_locks: Option<(Vec<(RecordPointer, AccessMode)>, u64)>,
    /// Lent by the attempt for the call, taken back by its winner.
    request_id: Mutex<crate::model::RequestId>,
    reply: Mutex<Option<Reply>>,
}

/// The plugin calls running now (at most one per executor).
#[derive(Default)]
pub(crate) struct RunningCalls(Mutex<Vec<Arc<RunningCall>>>);

impl RunningCalls {
    fn remove(&self, call: &Arc<RunningCall>) {
        self.0.lock().retain(|running| !Arc::ptr_eq(running, call));
    }
}

impl WorkerContext {
    /// Reserves the next commit sequence number. `SeqCst`: OCC relies on this being
    /// ordered with its validation loads (see `occ`).
    pub(crate) fn reserve_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs the attempt's plugin call; `None` when the watchdog abandoned it meanwhile
    /// (it answered for the transaction and released `holds_locks`' locks).
    pub(crate) fn execute_watched(&self, attempt: &mut Attempt, holds_locks: bool) -> Option<Outcome> {
        let Some(calls) = &self.calls else { return Some(attempt.execute()) };
        let held_locks = holds_locks.then(|| {
            let records = attempt.records.iter().copied();
            (records.zip(attempt.entries().iter().map(|entry| entry.mode)).collect(), attempt.timestamp)
        });
        let call = Arc::new(RunningCall {
            claim: Claim::new(),
            started: Instant::now(),
            executor: self.number,
            plugin: attempt.prepared.planned.plugin.clone(),
            timestamp: attempt.prepared.timestamp,
            retries: attempt.retries,
            held_locks,
            request_id: Mutex::new(std::mem::take(&mut attempt.prepared.planned.request_id)),
            reply: Mutex::new(attempt.reply.take()),
        });
        calls.0.lock().push(call.clone());
        let outcome = crate::txn::executor::execute(&attempt.prepared, Some(&call.claim));
        calls.remove(&call);
        let outcome = outcome?;
        attempt.prepared.planned.request_id = std::mem::take(&mut *call.request_id.lock());
        attempt.reply = call.reply.lock().take();
        Some(outcome)
    }

    fn send(&self, entry: LogEntry) {
        // The sequencer ends only after every executor, so this cannot fail.
        if self.log.send(entry).is_err() {
            panic!("the sequencer ended before the executors");
        }
    }

    /// Gives back a reserved number that no transaction uses.
    pub(crate) fn void(&self, sequence: u64) {
        self.send(LogEntry::Numbered { sequence, finished: None });
    }

    pub(crate) fn hand_over(&self, (sequence, finished): (u64, Finished)) {
        self.send(LogEntry::Numbered { sequence, finished: Some(finished) });
    }
}

/// A transaction being run by an executor: its prepared form, whose slots point at
/// private copies of the values, so that the engine's executor runs it unchanged and
/// nothing of an attempt reaches a shared record before the protocol allows it.
pub(crate) struct Attempt {
    prepared: PreparedTransaction,
    /// The private copies `prepared.slots` point into. Built whole before the pointers
    /// were taken and never resized, so the pointers stay valid while `self` lives.
    copies: Vec<Slot>,
    records: Vec<RecordPointer>,
    /// Keeps the records alive for `records`.
    _arena: Arc<RecordArena>,
    /// Lent to the watchdog's view of a running call, and back after it.
    reply: Option<Reply>,
    /// The wait-die timestamp.
    pub(crate) timestamp: u64,
    /// Concurrency aborts so far.
    pub(crate) retries: u64,
}

impl Attempt {
    fn new(job: Job, context: &WorkerContext) -> Attempt {
        let arena = context.arena.clone();
        let copies: Vec<Slot> = job
            .records
            .iter()
            // SAFETY: `arena` keeps the records alive.
            .map(|record| Slot::detached(unsafe { record.get() }.storage_key(), None))
            .collect();
        let slots = copies.iter().map(|copy| (u32::MAX, SlotPointer::to(copy))).collect();
        // The epoch part is the record's, stamped by the sequencer.
        let timestamp = Timestamp { epoch: 0, node: context.node, sequence: 0 };
        Attempt {
            prepared: PreparedTransaction { planned: job.transaction, timestamp, slots },
            copies,
            records: job.records,
            _arena: arena,
            reply: Some(job.reply),
            timestamp: job.timestamp,
            retries: 0,
        }
    }

    pub(crate) fn entries(&self) -> &[AccessEntry] {
        self.prepared.planned.accesses.entries()
    }

    /// The shared record of access-set entry `index`.
    pub(crate) fn record(&self, index: usize) -> &KeyRecord {
        // SAFETY: `self._arena` keeps the record alive.
        unsafe { self.records[index].get() }
    }

    /// Sets the private copy of entry `index` before a run.
    pub(crate) fn fill(&mut self, index: usize, value: Option<&[u8]>) {
        // SAFETY: the copies belong to this attempt alone, and no reference into them is
        // alive between runs.
        unsafe { self.copies[index].set(value) }
    }

    /// Runs the transaction on the private copies; a committed run leaves its writes in
    /// them.
    pub(crate) fn execute(&self) -> Outcome {
        crate::txn::executor::execute_unclaimed(&self.prepared)
    }

    /// Copies the values a committed run wrote into the shared records (the protocol
    /// holds every written key exclusively) and returns them for the log. Every key
    /// declared for writing is installed, written or not, as the epoch driver stages it.
    /// An aborted run installs nothing: its protocol did not lock its write set, and its
    /// copies of those keys hold what it read, which may be stale by now.
    pub(crate) fn install_writes(&self, outcome: &Outcome) -> Vec<Write> {
        let mut writes = Vec::new();
        if !outcome.is_committed() {
            return writes;
        }
        for (index, entry) in self.entries().iter().enumerate() {
            if entry.mode == AccessMode::Write {
                // SAFETY: the run has returned; only this attempt uses its copies.
                let value = unsafe { self.copies[index].value() }.map(<[u8]>::to_vec);
                self.record(index).store_value(value.as_deref());
                writes.push((self.records[index], value));
            }
        }
        writes
    }

    pub(crate) fn finish(self, sequence: u64, outcome: Outcome, writes: Vec<Write>) -> (u64, Finished) {
        let Attempt { prepared, reply, retries, .. } = self;
        let reply = reply.expect("an attempt has its reply unless its call was abandoned");
        (sequence, Finished { request_id: prepared.planned.request_id, outcome, reply, writes, retries })
    }
}

/// Waiting for a lock or a version to change: spin briefly, then give the core away
/// (there may be more executors than cores, and the holder may need this one).
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    const SPIN_STEPS: u32 = 6;

    pub(crate) fn new() -> Backoff {
        Backoff { step: 0 }
    }

    pub(crate) fn snooze(&mut self) {
        if self.step < Self::SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
            self.step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Before running an aborted transaction again: the more often it aborted, the longer it
/// lets the transactions in its way finish (bounded, so a retry never sleeps).
pub(crate) fn pause_before_retry(retries: u64) {
    for _ in 0..retries.min(8) {
        std::thread::yield_now();
    }
}

/// What arrived for one commit sequence number.
enum Arrival<T> {
    Waiting,
    Void,
    Item(T),
}

/// Puts items that arrive in any order back into sequence order (0, 1, 2, ...). A pure
/// reorder buffer: the sequencer's core.
pub(crate) struct Reorder<T> {
    next: u64,
    window: VecDeque<Arrival<T>>,
}

impl<T> Reorder<T> {
    pub(crate) fn new() -> Reorder<T> {
        Reorder { next: 0, window: VecDeque::new() }
    }

    /// Records what came for `sequence`: an item, or `None` for a void number.
    pub(crate) fn insert(&mut self, sequence: u64, item: Option<T>) {
        assert!(sequence >= self.next, "commit sequence number {sequence} arrived twice");
        let offset = usize::try_from(sequence - self.next).expect("the reorder window fits in memory");
        if self.window.len() <= offset {
            self.window.resize_with(offset + 1, || Arrival::Waiting);
        }
        let slot = &mut self.window[offset];
        assert!(matches!(slot, Arrival::Waiting), "commit sequence number {sequence} arrived twice");
        *slot = item.map_or(Arrival::Void, Arrival::Item);
    }

    /// The next item in sequence order, once everything before it arrived (void numbers
    /// are skipped).
    pub(crate) fn pop(&mut self) -> Option<T> {
        loop {
            match self.window.front() {
                None | Some(Arrival::Waiting) => return None,
                Some(Arrival::Void | Arrival::Item(_)) => {}
            }
            self.next += 1;
            if let Some(Arrival::Item(item)) = self.window.pop_front() {
                return Some(item);
            }
        }
    }

    /// True when nothing is held back.
    pub(crate) fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

/// Gives the outcome its final timestamp: (record, node, position in the record).
pub(crate) fn stamped(outcome: Outcome, stamp: Timestamp) -> Outcome {
    match outcome {
        Outcome::Committed { output, .. } => Outcome::Committed { timestamp: stamp, output },
        Outcome::Aborted { kind, message, .. } => Outcome::Aborted { timestamp: stamp, kind, message },
    }
}

/// The sequencer thread: logs finished transactions in commit sequence order, grouped into
/// epoch records.
struct Sequencer {
    node: NodeId,
    /// The last epoch (record) number used.
    epoch: u64,
    log: Receiver<LogEntry>,
    commits: Sender<CommitMessage>,
    stats: Arc<TransactionStats>,
    concurrency: Arc<ConcurrencyStats>,
    record_transactions_max: usize,
    /// Keeps the records of logged writes alive.
    _arena: Arc<RecordArena>,
}

impl Sequencer {
    /// Runs until told to close (or every sender hung up), after logging everything sent
    /// before.
    fn run(mut self) {
        let mut reorder = Reorder::new();
        let mut ready = Vec::new();
        // Whether `Close` arrived; returned by `take`.
        let take = |entry: LogEntry, reorder: &mut Reorder<Finished>| match entry {
            LogEntry::Numbered { sequence, finished } => {
                reorder.insert(sequence, finished);
                false
            }
            LogEntry::Close => true,
        };
        let mut closing = false;
        while !closing {
            let Ok(first) = self.log.recv() else { break };
            closing |= take(first, &mut reorder);
            // Whatever else is waiting joins this record (bounded, so a flood of arrivals
            // does not hold back what is ready).
            for _ in 0..self.record_transactions_max {
                match self.log.try_recv() {
                    Ok(entry) => closing |= take(entry, &mut reorder),
                    Err(_) => break,
                }
            }
            while let Some(finished) = reorder.pop() {
                ready.push(finished);
                if ready.len() == self.record_transactions_max {
                    self.log_record(std::mem::take(&mut ready));
                }
            }
            if !ready.is_empty() {
                self.log_record(std::mem::take(&mut ready));
            }
        }
        assert!(reorder.is_empty(), "a reserved commit sequence number never came back");
    }

    fn log_record(&mut self, transactions: Vec<Finished>) {
        let closed_at = Instant::now();
        self.epoch += 1;
        let epoch = self.epoch;
        let mut record = EpochRecord::new(epoch);
        // Each changed key once, with its newest value (the transactions are in order).
        let mut newest: FxHashMap<RecordPointer, usize> = FxHashMap::default();
        let mut values: Vec<Write> = Vec::new();
        let (mut committed, mut aborted, mut retries) = (0u64, 0u64, 0u64);
        let mut replies = Vec::with_capacity(transactions.len());
        let mut scratch = Vec::new();
        for (position, finished) in transactions.into_iter().enumerate() {
            let Finished { request_id, outcome, reply, writes, retries: attempts_retried } = finished;
            for (pointer, value) in writes {
                match newest.entry(pointer) {
                    std::collections::hash_map::Entry::Occupied(seen) => values[*seen.get()].1 = value,
                    std::collections::hash_map::Entry::Vacant(new) => {
                        new.insert(values.len());
                        values.push((pointer, value));
                    }
                }
            }
            let sequence = u32::try_from(position).expect("a record holds fewer than 2^32 transactions");
            let outcome = stamped(outcome, Timestamp { epoch, node: self.node, sequence });
            if outcome.is_committed() {
                committed += 1;
            } else {
                aborted += 1;
            }
            retries += attempts_retried;
            if request_id.is_tracked() {
                record.stage_result(&request_id, &outcome, &mut scratch);
            }
            replies.push((request_id, outcome, reply));
        }
        for (pointer, value) in &values {
            // SAFETY: `_arena` keeps the record alive.
            record.stage_value(unsafe { pointer.get() }.storage_key(), value.as_deref());
        }
        TransactionStats::count(&self.stats.committed, committed);
        TransactionStats::count(&self.stats.aborted, aborted);
        TransactionStats::count(&self.stats.epochs, 1);
        TransactionStats::count(&self.concurrency.retries, retries);
        metrics::counter!(crate::metrics::COMMITTED_TOTAL).increment(committed);
        metrics::counter!(crate::metrics::ABORTED_TOTAL).increment(aborted);
        metrics::counter!(crate::metrics::CONCURRENCY_RETRIES_TOTAL).increment(retries);
        metrics::histogram!(crate::metrics::EPOCH_TRANSACTIONS).record((committed + aborted) as f64);
        let commit = EpochCommit { record, replies, closed_at };
        if self.commits.send(CommitMessage::Epoch(commit)).is_err() {
            // The commit thread only exits after the sequencer; reaching this is a bug.
            panic!("commit thread ended before the sequencer");
        }
    }
}

/// Everything the baseline driver needs from `Node::start`.
pub(crate) struct BaselineParts {
    pub node: NodeId,
    pub protocol: ConcurrencyControl,
    pub storage: Arc<Storage>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub stats: Arc<TransactionStats>,
    pub concurrency: Arc<ConcurrencyStats>,
    pub inbox: Receiver<DriverMessage>,
    pub commits: Sender<CommitMessage>,
    pub executor_threads: usize,
    /// Most transactions per dispatch batch and per epoch record.
    pub transactions_max: usize,
    /// The durable epoch at start: records continue after it.
    pub durable_epoch: u64,
    /// Abandon a plugin call that runs longer (`None`: never).
    pub abandon_after: Option<Duration>,
}

/// The dispatcher of a node that runs 2PL or OCC, with its executors and sequencer.
pub(crate) struct BaselineDriver {
    storage: Arc<Storage>,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<TransactionStats>,
    inbox: Receiver<DriverMessage>,
    transactions_max: usize,
    keys: ResidentKeys,
    /// The next wait-die timestamp.
    next_timestamp: u64,
    jobs: Option<Sender<Job>>,
    executors: Arc<Executors>,
    watchdog: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// Kept to send the sequencer `Close`.
    log: Sender<LogEntry>,
    sequencer: Option<JoinHandle<()>>,
}

fn thread_failure(error: std::io::Error) -> String {
    error.to_string()
}

/// The executor threads, by number, and what starting another one takes.
struct Executors {
    protocol: ConcurrencyControl,
    /// Every executor's context is a copy of this one with its own number.
    context: WorkerContext,
    jobs: Receiver<Job>,
    next_number: AtomicUsize,
    /// Live executors; a written-off (stuck) one is removed and never joined.
    threads: Mutex<FxHashMap<usize, JoinHandle<()>>>,
}

impl Executors {
    fn start_one(&self) -> std::io::Result<()> {
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let context = WorkerContext { number, ..self.context.clone() };
        let (protocol, jobs) = (self.protocol, self.jobs.clone());
        let thread = std::thread::Builder::new().name(format!("leasehold-executor-{number}")).spawn(move || {
            for job in jobs.iter() {
                let attempt = Attempt::new(job, &context);
                let end = match protocol {
                    ConcurrencyControl::TwoPhaseLocking => twopl::run(attempt, &context),
                    ConcurrencyControl::Optimistic => occ::run(attempt, &context),
                    ConcurrencyControl::Lease => unreachable!("checked when the driver started"),
                };
                if let AttemptEnd::Abandoned = end {
                    // Replaced by the watchdog: this thread's call returned after all.
                    return;
                }
            }
        })?;
        self.threads.lock().insert(number, thread);
        Ok(())
    }
}

/// The watchdog's round: abandons every call running longer than `abandon_after` whose
/// claim it wins (see the module doc), replacing its executor.
fn abandon_overdue(calls: &RunningCalls, executors: &Executors, abandon_after: Duration) {
    let overdue: Vec<Arc<RunningCall>> =
        calls.0.lock().iter().filter(|call| call.started.elapsed() >= abandon_after).cloned().collect();
    for call in overdue {
        if !call.claim.abandon() {
            continue; // It returned first.
        }
        calls.remove(&call);
        if let Some((locks, timestamp)) = &call.held_locks {
            for (record, mode) in locks {
                // SAFETY: the context's arena keeps every record alive.
                twopl::release(unsafe { record.get() }, *mode, *timestamp);
            }
        }
        let running_ms = call.started.elapsed().as_millis() as u64;
        let outcome = crate::txn::executor::report_abandoned(&call.plugin, call.timestamp, running_ms);
        let finished = Finished {
            request_id: std::mem::take(&mut *call.request_id.lock()),
            outcome,
            reply: call.reply.lock().take().expect("a running call holds its attempt's reply"),
            writes: Vec::new(),
            retries: call.retries,
        };
        executors.context.hand_over((executors.context.reserve_sequence(), finished));
        // The stuck thread is written off: never joined, replaced now.
        drop(executors.threads.lock().remove(&call.executor));
        if let Err(error) = executors.start_one() {
            tracing::error!(%error, "cannot start an executor in place of a stuck one");
        }
    }
}

impl BaselineDriver {
    /// Starts the executors and the sequencer; [`BaselineDriver::run`] then dispatches.
    pub(crate) fn start(parts: BaselineParts) -> Result<BaselineDriver, String> {
        let protocol = parts.protocol;
        assert_ne!(protocol, ConcurrencyControl::Lease, "the lease protocol runs the epoch driver");
        let keys = ResidentKeys::new();
        let transactions_max = parts.transactions_max.clamp(1, u32::MAX as usize);
        let (log, log_receiver) = crossbeam_channel::unbounded();
        let sequencer = Sequencer {
            node: parts.node,
            epoch: parts.durable_epoch,
            log: log_receiver,
            commits: parts.commits,
            stats: parts.stats.clone(),
            concurrency: parts.concurrency,
            record_transactions_max: transactions_max,
            _arena: keys.arena(),
        };
        let sequencer = std::thread::Builder::new()
            .name("leasehold-sequencer".into())
            .spawn(move || sequencer.run())
            .map_err(thread_failure)?;
        let (jobs, job_receiver) = crossbeam_channel::unbounded::<Job>();
        let calls = parts.abandon_after.map(|_| Arc::new(RunningCalls::default()));
        let executors = Arc::new(Executors {
            protocol,
            context: WorkerContext {
                node: parts.node,
                number: 0,
                sequence: Arc::new(AtomicU64::new(0)),
                log: log.clone(),
                arena: keys.arena(),
                calls: calls.clone(),
            },
            jobs: job_receiver,
            next_number: AtomicUsize::new(0),
            threads: Mutex::new(FxHashMap::default()),
        });
        for _ in 0..parts.executor_threads.max(1) {
            executors.start_one().map_err(thread_failure)?;
        }
        let watchdog = match (parts.abandon_after, calls) {
            (Some(abandon_after), Some(calls)) => {
                let stop = Arc::new(AtomicBool::new(false));
                let (stopped, executors) = (stop.clone(), executors.clone());
                // Often enough that a call is abandoned within a quarter of the limit.
                let tick = (abandon_after / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
                let thread = std::thread::Builder::new()
                    .name("leasehold-baseline-watchdog".into())
                    .spawn(move || {
                        while !stopped.load(Ordering::Acquire) {
                            std::thread::sleep(tick);
                            abandon_overdue(&calls, &executors, abandon_after);
                        }
                    })
                    .map_err(thread_failure)?;
                Some((stop, thread))
            }
            _ => None,
        };
        Ok(BaselineDriver {
            storage: parts.storage,
            ledger: parts.ledger,
            stats: parts.stats,
            inbox: parts.inbox,
            transactions_max,
            keys,
            next_timestamp: twopl::FIRST_TIMESTAMP,
            jobs: Some(jobs),
            executors,
            watchdog,
            log,
            sequencer: Some(sequencer),
        })
    }

    /// Dispatches until told to stop; every submission received before the stop is
    /// finished and handed to the commit thread before this returns.
    pub(crate) fn run(mut self) {
        let mut stopping = false;
        while !stopping {
            let mut batch = Vec::new();
            match self.inbox.recv() {
                Ok(message) => stopping |= take(message, &mut batch),
                Err(_) => stopping = true,
            }
            while batch.len() < self.transactions_max {
                match self.inbox.try_recv() {
                    Ok(message) => stopping |= take(message, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.dispatch(batch);
            }
        }
        // Requests that raced with the stop are finished too.
        loop {
            let mut batch = Vec::new();
            while batch.len() < self.transactions_max {
                match self.inbox.try_recv() {
                    Ok(message) => {
                        take(message, &mut batch);
                    }
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.dispatch(batch);
        }
        // The executors finish their queue and end (a stuck one is abandoned by the
        // watchdog meanwhile and replaced), then the sequencer logs the rest and ends,
        // which lets the commit thread finish.
        drop(self.jobs.take());
        loop {
            // Joined once finished, never waited on: a stuck executor is written off by
            // the watchdog (its handle removed, a replacement started that ends at once).
            let finished: Vec<JoinHandle<()>> = {
                let mut threads = self.executors.threads.lock();
                let numbers: Vec<usize> =
                    threads.iter().filter(|(_, thread)| thread.is_finished()).map(|(number, _)| *number).collect();
                numbers.iter().filter_map(|number| threads.remove(number)).collect()
            };
            for executor in finished {
                if executor.join().is_err() {
                    tracing::error!("an executor panicked");
                }
            }
            if self.executors.threads.lock().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some((stop, watchdog)) = self.watchdog.take() {
            stop.store(true, Ordering::Release);
            if watchdog.join().is_err() {
                tracing::error!("the baseline watchdog panicked");
            }
        }
        if self.log.send(LogEntry::Close).is_err() {
            tracing::error!("the sequencer ended before it was closed");
        }
        if let Some(sequencer) = self.sequencer.take() {
            if sequencer.join().is_err() {
                tracing::error!("the sequencer panicked");
            }
        }
    }

    fn dispatch(&mut self, batch: Vec<Submission>) {
        if self.stats.failed.load(Ordering::Acquire) {
            let rejection = Rejection::Storage("the node stopped after a storage failure".into());
            for submission in batch {
                submission.reply.send(Err(rejection.clone()));
            }
            return;
        }
        let runnable = admit(&self.ledger, &self.storage, batch);
        if runnable.is_empty() {
            return;
        }
        let records = match self.resolve(&runnable) {
            Ok(records) => records,
            Err(rejection) => {
                let mut ledger = self.ledger.lock();
                for submission in runnable {
                    for waiter in ledger.abandon(&submission.transaction.request_id) {
                        waiter.send(Err(rejection.clone()));
                    }
                    submission.reply.send(Err(rejection.clone()));
                }
                return;
            }
        };
        let jobs = self.jobs.as_ref().expect("jobs are dispatched only while running");
        for (submission, records) in runnable.into_iter().zip(records) {
            let timestamp = self.next_timestamp;
            assert!(timestamp <= twopl::TIMESTAMP_MAX, "wait-die timestamps ran out");
            self.next_timestamp += 1;
            let Submission { transaction, reply } = submission;
            if jobs.send(Job { transaction, reply, timestamp, records }).is_err() {
                panic!("the executors ended before the dispatcher");
            }
        }
        self.stats.resident_keys.store(self.keys.len() as u64, Ordering::Relaxed);
    }

    /// The record of every access of every submission, loading missing keys from RocksDB
    /// in one batched read.
    fn resolve(&mut self, runnable: &[Submission]) -> Result<Vec<Vec<RecordPointer>>, Rejection> {
        let keys = BatchKeys::of(runnable);
        let mut found = Vec::with_capacity(keys.len());
        self.keys.lookup_many(keys.iter(), &mut found);
        let resident = &mut self.keys;
        let mut found = self
            .storage
            .load_missing(keys.iter(), found, |key, value| resident.insert(key, value))
            .map_err(|error| Rejection::Storage(error.to_string()))?
            .into_iter();
        let records = runnable
            .iter()
            .map(|submission| {
                let count = submission.transaction.accesses.entries().len();
                (0..count).map(|_| found.next().expect("one record per access")).collect()
            })
            .collect();
        Ok(records)
    }
}

/// Adds a driver message to the batch; true when it asks to stop.
fn take(message: DriverMessage, batch: &mut Vec<Submission>) -> bool {
    match message {
        DriverMessage::Submit(submission) => {
            batch.push(submission);
            false
        }
        DriverMessage::SubmitMany(submissions) => {
            batch.extend(submissions);
            false
        }
        DriverMessage::Stop => true,
        DriverMessage::Peer { .. } | DriverMessage::Executed { .. } | DriverMessage::RanOverFabric { .. } => {
            unreachable!("a single node gets no cluster messages")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reorder_buffer_releases_in_sequence_order_and_skips_void_numbers() {
        let mut reorder = Reorder::new();
        reorder.insert(2, Some("c"));
        reorder.insert(1, None);
        assert_eq!(reorder.pop(), None, "0 has not arrived: nothing after it may go");
        reorder.insert(0, Some("a"));
        assert_eq!(reorder.pop(), Some("a"));
        assert_eq!(reorder.pop(), Some("c"), "1 was void");
        assert_eq!(reorder.pop(), None);
        assert!(reorder.is_empty());
        reorder.insert(4, Some("e"));
        assert!(!reorder.is_empty(), "4 waits for 3");
        reorder.insert(3, Some("d"));
        assert_eq!((reorder.pop(), reorder.pop(), reorder.pop()), (Some("d"), Some("e"), None));
    }

    #[test]
    #[should_panic(expected = "arrived twice")]
    fn a_sequence_number_cannot_arrive_twice() {
        let mut reorder = Reorder::new();
        reorder.insert(1, Some(1));
        reorder.insert(1, Some(2));
    }

    #[test]
    #[should_panic(expected = "arrived twice")]
    fn a_released_sequence_number_cannot_arrive_again() {
        let mut reorder = Reorder::new();
        reorder.insert(0, Some(1));
        assert_eq!(reorder.pop(), Some(1));
        reorder.insert(0, Some(2));
    }
}
