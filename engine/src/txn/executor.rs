//! Executes one epoch's transactions over its task precedence graph on a pool of
//! executor threads.
//!
//! A transaction runs once all its predecessors have finished. Its workflow's steps run
//! in their declared order on one thread; every write goes to a private buffer first and
//! reaches the slots only when all steps succeeded, so an abort (logic, undeclared access,
//! value too large, panic) leaves nothing behind. When a finished transaction makes
//! successors ready, the executor continues with one of them itself and hands the others
//! to the pool, which keeps chains of conflicting transactions on one warm thread.

use super::tpg::TaskGraph;
use super::{PreparedTransaction, TransactionBody};
use crate::model::{AbortKind, Outcome};
use crate::plugin::LoadedPlugin;
use crate::plugin::LoadedTable;
use leasehold_sdk::abi::{self, FunctionCall, RawBytes};
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};

/// Largest output a step may produce; a larger one aborts the transaction.
pub const OUTPUT_BYTES_MAX: usize = 16 << 20;

/// Outcomes written by executor threads, one cell per transaction.
struct OutcomeCells(Vec<UnsafeCell<Option<Outcome>>>);

// SAFETY: each cell is written by exactly one thread (the one that ran its transaction)
// and read only after the pool has joined.
unsafe impl Sync for OutcomeCells {}

/// The thread pool that runs transactions.
pub struct Executor {
    pool: rayon::ThreadPool,
}

impl Executor {
    pub fn new(threads: usize) -> Result<Executor, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("leasehold-executor-{i}"))
            .build()?;
        Ok(Executor { pool })
    }

    /// Runs every transaction of the epoch and returns their outcomes in order.
    /// Committed transactions have already applied their writes to their slots.
    pub fn run(&self, transactions: &[PreparedTransaction], graph: &TaskGraph) -> Vec<Outcome> {
        assert_eq!(transactions.len(), graph.len(), "one graph vertex per transaction");
        let outcomes = OutcomeCells((0..transactions.len()).map(|_| UnsafeCell::new(None)).collect());
        let remaining: Vec<AtomicU32> = graph.indegree.iter().map(|&d| AtomicU32::new(d)).collect();
        let shared = Shared { transactions, graph, outcomes: &outcomes, remaining: &remaining };
        if transactions.len() == 1 {
            // A lone transaction (the idle case) needs no hand-off to the pool.
            shared.run_chain(0, None);
        } else {
            self.pool.scope(|scope| {
                for root in graph.roots() {
                    let shared = &shared;
                    scope.spawn(move |scope| shared.run_chain(root, Some(scope)));
                }
            });
        }
        outcomes
            .0
            .into_iter()
            .map(|cell| {
                cell.into_inner().expect("every transaction ran: the graph is acyclic and all roots were started")
            })
            .collect()
    }
}

struct Shared<'a> {
    transactions: &'a [PreparedTransaction],
    graph: &'a TaskGraph,
    outcomes: &'a OutcomeCells,
    remaining: &'a [AtomicU32],
}

impl<'a> Shared<'a> {
    fn run_chain<'scope>(&'scope self, mut transaction: usize, scope: Option<&rayon::Scope<'scope>>) {
        loop {
            let outcome = execute(&self.transactions[transaction]);
            // SAFETY: only this thread runs `transaction`, once.
            unsafe { *self.outcomes.0[transaction].get() = Some(outcome) };
            let mut next = None;
            for &successor in self.graph.successors(transaction) {
                // AcqRel: the successor's thread must see this transaction's slot writes.
                if self.remaining[successor as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
                    match (next, scope) {
                        (None, _) => next = Some(successor as usize),
                        (Some(_), Some(scope)) => {
                            scope.spawn(move |scope| self.run_chain(successor as usize, Some(scope)))
                        }
                        (Some(_), None) => unreachable!("a lone transaction has no successors"),
                    }
                }
            }
            match next {
                Some(successor) => transaction = successor,
                None => return,
            }
        }
    }
}

/// A buffered write: `Some(value)` or `None` for a deletion.
type BufferedWrite = Option<Vec<u8>>;

/// The host side of one transaction's function calls.
struct CallContext<'a> {
    transaction: &'a PreparedTransaction,
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
    let value = match &context.writes[index] {
        Some(buffered) => buffered.as_deref(),
        // SAFETY: the graph gives this transaction the key; the slice lives until the
        // transaction applies its writes, after every call has returned.
        None => unsafe { context.transaction.slots[index].1.get().value() },
    };
    match value {
        Some(value) => {
            // SAFETY: the plugin passes a valid out pointer.
            unsafe { *out = RawBytes::from_slice(value) };
            abi::READ_FOUND
        }
        None => abi::READ_ABSENT,
    }
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

/// Runs one transaction to its outcome, applying its writes when it commits.
pub(crate) fn execute(transaction: &PreparedTransaction) -> Outcome {
    let timestamp = transaction.timestamp;
    let plugin: &LoadedPlugin = &transaction.planned.plugin;
    let (workflow, arguments) = match &transaction.planned.body {
        TransactionBody::ReadKey => {
            // SAFETY: the graph gives this transaction the key.
            let value = unsafe { transaction.slots[0].1.get().value() };
            let mut output = Vec::with_capacity(1 + value.map_or(0, <[u8]>::len));
            output.push(u8::from(value.is_some()));
            output.extend_from_slice(value.unwrap_or_default());
            return Outcome::Committed { timestamp, output };
        }
        TransactionBody::Workflow { workflow, arguments } => (&plugin.workflows[*workflow as usize], arguments),
    };
    let mut context = CallContext {
        transaction,
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
            return Outcome::Aborted { timestamp, kind, message };
        }
    }
    for (index, write) in context.writes.iter().enumerate() {
        if let Some(value) = write {
            // SAFETY: the graph gives this transaction the key, and no read reference is
            // alive: every function call has returned.
            unsafe { transaction.slots[index].1.get().set(value.as_deref()) };
        }
    }
    Outcome::Committed { timestamp, output: outputs.pop().unwrap_or_default() }
}
