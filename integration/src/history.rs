//! History checking: finds isolation anomalies in a recorded history of transactions over
//! read-write registers and append-only lists, the way Elle does (Kingsbury and Alvaro,
//! "Elle: Inferring Isolation Anomalies from Experimental Observations", VLDB 2020), with
//! Adya's dependency graphs and anomaly classes.
//!
//! A history is what the clients saw. For every transaction: its client and request id,
//! when it was invoked and when its outcome came back, the outcome (committed, aborted,
//! or unknown when no reply ever came), what its reads returned and what it wrote. Every
//! written value is unique per key, so a read names the transaction whose write it saw.
//! A list read returns the whole list, which also shows the order in which the appends
//! were applied (the version order), so list histories need no assumption to be checked.
//!
//! From the history the checker infers the dependencies between transactions:
//! * write-write (`ww`): T1 installed a version of a key and T2 installed the next one;
//! * write-read (`wr`): T2 read the version T1 installed;
//! * read-write (`rw`, an anti-dependency): T1 read a version and T2 installed the next.
//!
//! and searches the graph for cycles, each reported with its edges:
//! * **G0** (write cycle): only `ww` edges;
//! * **G1c** (circular information flow): `ww` and `wr` edges, at least one `wr`;
//! * **G2** (anti-dependency cycle): at least one `rw` edge (G-single when exactly one).
//!
//! Besides cycles it reports, per read: **G1a** (aborted read: a committed transaction saw
//! a value of an aborted one), **G1b** (intermediate read: it saw a value its writer later
//! overwrote), reads of values nobody wrote, duplicated list elements (one write applied
//! twice), list reads that fit no single version order, and internal inconsistency (a
//! transaction not seeing its own earlier writes). With real time, for lists: an
//! acknowledged append that a transaction invoked after the acknowledgement did not see
//! is a **stale read**, and a **lost write** when no such transaction ever saw it.
//!
//! What the checker assumes:
//! * Reads of transactions that did not commit are ignored: nobody saw their results.
//!   Writes of unknown transactions count once they are observed (they may have committed).
//! * Register version orders are inferred, since a register read shows one version only:
//!   the initial (absent) version comes first, and a committed transaction that read
//!   version `v` of a key and then wrote `w` installed `w` right after `v` ("writes follow
//!   reads", Elle's `wfr-keys`). Workloads that read a register before writing it give
//!   the checker the whole version order; blind writes give it less to find.
//! * Real-time checks (stale reads, lost writes) compare invocation and completion times
//!   of one clock; they check what "a reply means the write is durable" promises.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

/// A key of the checked key space. Register keys and list keys must be distinct.
pub type Key = u64;

/// A written value; unique per key across the whole history.
pub type Value = u64;

/// The position of a transaction in the history handed to [`check`].
pub type TransactionIndex = usize;

/// How a transaction ended, as its client knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Committed,
    Aborted,
    /// No reply came (the connection broke and no retry answered): it may or may not have
    /// committed.
    Unknown,
}

/// One micro-operation of a transaction, in the order the transaction performed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A register read; `None` when the key had no value.
    Read { key: Key, value: Option<Value> },
    /// A register write.
    Write { key: Key, value: Value },
    /// A list read: the whole list, oldest element first.
    ReadList { key: Key, values: Vec<Value> },
    /// An append to a list.
    Append { key: Key, value: Value },
}

impl Operation {
    fn key(&self) -> Key {
        match self {
            Operation::Read { key, .. }
            | Operation::Write { key, .. }
            | Operation::ReadList { key, .. }
            | Operation::Append { key, .. } => *key,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, Operation::ReadList { .. } | Operation::Append { .. })
    }
}

/// One transaction as its client recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub client: u64,
    pub request_id: String,
    /// When the client first sent it, in nanoseconds of the history's clock.
    pub invoked_at: u64,
    /// When its outcome came back (possibly to a retry); `None` when it never did.
    pub completed_at: Option<u64>,
    pub outcome: Outcome,
    pub operations: Vec<Operation>,
}

impl Transaction {
    /// A transaction without times (for histories where real time does not matter).
    pub fn new(client: u64, request_id: impl Into<String>, outcome: Outcome, operations: Vec<Operation>) -> Self {
        Transaction { client, request_id: request_id.into(), invoked_at: 0, completed_at: None, outcome, operations }
    }

    /// The same transaction, invoked at `invoked_at` and answered at `completed_at`.
    pub fn at(mut self, invoked_at: u64, completed_at: u64) -> Self {
        self.invoked_at = invoked_at;
        self.completed_at = Some(completed_at);
        self
    }

    fn label(&self) -> String {
        format!("client {} request {}", self.client, self.request_id)
    }
}

/// A history the checker cannot judge, because it breaks the checker's premises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// Written values must be unique per key, or a read could not name its writer.
    DuplicateWrite { key: Key, value: Value, first: TransactionIndex, second: TransactionIndex },
    /// A key is either a register or a list.
    MixedKey { key: Key },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::DuplicateWrite { key, value, first, second } => {
                write!(f, "value {value} is written to key {key} twice (transactions {first} and {second})")
            }
            HistoryError::MixedKey { key } => write!(f, "key {key} is used both as a register and as a list"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// The kinds of dependency between two transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// `ww`: the second installed the version after the first's.
    WriteWrite,
    /// `wr`: the second read the first's version.
    WriteRead,
    /// `rw`: the second installed the version after the one the first read.
    ReadWrite,
}

impl Dependency {
    const ALL: [Dependency; 3] = [Dependency::WriteWrite, Dependency::WriteRead, Dependency::ReadWrite];

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::WriteWrite => "ww",
            Dependency::WriteRead => "wr",
            Dependency::ReadWrite => "rw",
        })
    }
}

/// One edge of a reported cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub from: TransactionIndex,
    pub to: TransactionIndex,
    pub dependency: Dependency,
    /// A key that gives rise to the dependency.
    pub key: Key,
}

/// A cycle in the dependency graph: each step's `to` is the next step's `from`, and the
/// last step returns to the first step's `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    pub steps: Vec<Step>,
}

impl Cycle {
    /// How many of the cycle's edges are of `dependency`.
    pub fn count(&self, dependency: Dependency) -> usize {
        self.steps.iter().filter(|step| step.dependency == dependency).count()
    }

    /// The transactions on the cycle, in order.
    pub fn transactions(&self) -> Vec<TransactionIndex> {
        self.steps.iter().map(|step| step.from).collect()
    }
}

/// The classes of anomaly the checker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    G0,
    G1a,
    G1b,
    G1c,
    G2,
    Internal,
    GarbageRead,
    DuplicateElements,
    IncompatibleOrder,
    StaleRead,
    LostWrite,
}

/// One anomaly with the evidence for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A cycle of write-write dependencies.
    G0(Cycle),
    /// A committed transaction read a value written by an aborted one.
    G1a { reader: TransactionIndex, writer: TransactionIndex, key: Key, value: Value },
    /// A committed transaction read a value its writer overwrote later in the same
    /// transaction.
    G1b { reader: TransactionIndex, writer: TransactionIndex, key: Key, value: Value },
    /// A cycle of write-write and write-read dependencies with at least one write-read.
    G1c(Cycle),
    /// A cycle with at least one read-write anti-dependency.
    G2(Cycle),
    /// A transaction's read does not show its own earlier writes (or shows writes it has
    /// not made yet).
    Internal { transaction: TransactionIndex, key: Key, detail: String },
    /// A read returned a value that no transaction wrote.
    GarbageRead { reader: TransactionIndex, key: Key, value: Value },
    /// A list holds one appended value more than once: the append was applied twice.
    DuplicateElements { reader: TransactionIndex, key: Key, value: Value, count: usize },
    /// Two reads of a list that are not prefixes of one another: no single order of
    /// appends explains both.
    IncompatibleOrder { key: Key, first: TransactionIndex, second: TransactionIndex },
    /// `reader` was invoked after `writer`'s append was acknowledged but did not see it,
    /// though another transaction invoked after the acknowledgement did.
    StaleRead { writer: TransactionIndex, reader: TransactionIndex, key: Key, value: Value },
    /// `writer`'s append was acknowledged, and no transaction invoked after that saw it:
    /// `reader` is the first that should have.
    LostWrite { writer: TransactionIndex, reader: TransactionIndex, key: Key, value: Value },
}

impl Anomaly {
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::G0(_) => AnomalyKind::G0,
            Anomaly::G1a { .. } => AnomalyKind::G1a,
            Anomaly::G1b { .. } => AnomalyKind::G1b,
            Anomaly::G1c(_) => AnomalyKind::G1c,
            Anomaly::G2(_) => AnomalyKind::G2,
            Anomaly::Internal { .. } => AnomalyKind::Internal,
            Anomaly::GarbageRead { .. } => AnomalyKind::GarbageRead,
            Anomaly::DuplicateElements { .. } => AnomalyKind::DuplicateElements,
            Anomaly::IncompatibleOrder { .. } => AnomalyKind::IncompatibleOrder,
            Anomaly::StaleRead { .. } => AnomalyKind::StaleRead,
            Anomaly::LostWrite { .. } => AnomalyKind::LostWrite,
        }
    }

    /// The transactions the anomaly names.
    pub fn transactions(&self) -> Vec<TransactionIndex> {
        match self {
            Anomaly::G0(cycle) | Anomaly::G1c(cycle) | Anomaly::G2(cycle) => cycle.transactions(),
            Anomaly::G1a { reader, writer, .. }
            | Anomaly::G1b { reader, writer, .. }
            | Anomaly::StaleRead { reader, writer, .. }
            | Anomaly::LostWrite { reader, writer, .. } => vec![*writer, *reader],
            Anomaly::Internal { transaction, .. } => vec![*transaction],
            Anomaly::GarbageRead { reader, .. } | Anomaly::DuplicateElements { reader, .. } => vec![*reader],
            Anomaly::IncompatibleOrder { first, second, .. } => vec![*first, *second],
        }
    }
}

/// How many distinct dependencies of each kind the checker inferred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DependencyCounts {
    pub write_write: usize,
    pub write_read: usize,
    pub read_write: usize,
}

/// What the checker found.
#[derive(Clone, Debug)]
pub struct Report {
    pub transactions: usize,
    pub committed: usize,
    pub aborted: usize,
    pub unknown: usize,
    /// Reads of committed transactions that were checked.
    pub reads: usize,
    pub dependencies: DependencyCounts,
    pub anomalies: Vec<Anomaly>,
    labels: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The kinds of the anomalies found.
    pub fn kinds(&self) -> BTreeSet<AnomalyKind> {
        self.anomalies.iter().map(Anomaly::kind).collect()
    }

    /// The anomalies of one kind.
    pub fn of_kind(&self, kind: AnomalyKind) -> Vec<&Anomaly> {
        self.anomalies.iter().filter(|anomaly| anomaly.kind() == kind).collect()
    }

    /// One anomaly in words, naming transactions by client and request id.
    pub fn explain(&self, anomaly: &Anomaly) -> String {
        let name = |index: &TransactionIndex| {
            self.labels.get(*index).cloned().unwrap_or_else(|| format!("transaction {index}"))
        };
        let cycle = |cycle: &Cycle| {
            let mut text = String::new();
            for step in &cycle.steps {
                text.push_str(&format!("{} -{}({})-> ", name(&step.from), step.dependency, step.key));
            }
            if let Some(first) = cycle.steps.first() {
                text.push_str(&name(&first.from));
            }
            text
        };
        match anomaly {
            Anomaly::G0(steps) => format!("G0 (write cycle): {}", cycle(steps)),
            Anomaly::G1c(steps) => format!("G1c (circular information flow): {}", cycle(steps)),
            Anomaly::G2(steps) => {
                let class = if steps.count(Dependency::ReadWrite) == 1 { "G-single" } else { "G2-item" };
                format!("G2 ({class}, anti-dependency cycle): {}", cycle(steps))
            }
            Anomaly::G1a { reader, writer, key, value } => format!(
                "G1a (aborted read): {} read {value} of key {key}, written by aborted {}",
                name(reader),
                name(writer)
            ),
            Anomaly::G1b { reader, writer, key, value } => format!(
                "G1b (intermediate read): {} read {value} of key {key}, which {} overwrote later",
                name(reader),
                name(writer)
            ),
            Anomaly::Internal { transaction, key, detail } => {
                format!("internal inconsistency in {} on key {key}: {detail}", name(transaction))
            }
            Anomaly::GarbageRead { reader, key, value } => {
                format!("garbage read: {} read {value} of key {key}, which nobody wrote", name(reader))
            }
            Anomaly::DuplicateElements { reader, key, value, count } => {
                format!("duplicate elements: {} read {value} {count} times in key {key}", name(reader))
            }
            Anomaly::IncompatibleOrder { key, first, second } => format!(
                "incompatible order: the reads of key {key} by {} and {} are not prefixes of one another",
                name(first),
                name(second)
            ),
            Anomaly::StaleRead { writer, reader, key, value } => format!(
                "stale read: {} was invoked after {} appended {value} to key {key} and was answered, \
                 but did not see it",
                name(reader),
                name(writer)
            ),
            Anomaly::LostWrite { writer, reader, key, value } => format!(
                "lost write: {} appended {value} to key {key} and was answered; no later transaction saw it, \
                 first {}",
                name(writer),
                name(reader)
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} transactions ({} committed, {} aborted, {} unknown), {} reads, dependencies ww {} wr {} rw {}, \
             {} anomalies",
            self.transactions,
            self.committed,
            self.aborted,
            self.unknown,
            self.reads,
            self.dependencies.write_write,
            self.dependencies.write_read,
            self.dependencies.read_write,
            self.anomalies.len()
        )?;
        // A broken engine can produce thousands; the first of each kind say enough.
        let mut shown: HashMap<AnomalyKind, usize> = HashMap::new();
        for anomaly in &self.anomalies {
            let count = shown.entry(anomaly.kind()).or_default();
            *count += 1;
            if *count <= 5 {
                writeln!(f, "  {}", self.explain(anomaly))?;
            }
        }
        for (kind, count) in shown.iter().filter(|(_, count)| **count > 5) {
            writeln!(f, "  ... {} more of {kind:?}", count - 5)?;
        }
        Ok(())
    }
}

/// Who wrote a value, whether it was the writer's last write to that key, and whether
/// the key is a register (or a list).
#[derive(Clone, Copy, Debug)]
struct Written {
    writer: TransactionIndex,
    final_write: bool,
    register: bool,
}

/// A committed transaction's read, split into what came from others and what from itself.
#[derive(Clone, Debug)]
struct ExternalRead {
    reader: TransactionIndex,
    key: Key,
    /// Registers: the value read, when it was not the reader's own write.
    register: Option<Option<Value>>,
    /// Lists: the whole list as read, and how many leading elements came from others.
    list: Option<(Vec<Value>, usize)>,
}

/// The dependency graph: per transaction, its successors and for each kind of edge the
/// first key that gave rise to it.
struct Graph {
    edges: Vec<BTreeMap<TransactionIndex, [Option<Key>; 3]>>,
}

impl Graph {
    fn new(size: usize) -> Graph {
        Graph { edges: vec![BTreeMap::new(); size] }
    }

    fn add(&mut self, from: TransactionIndex, to: TransactionIndex, dependency: Dependency, key: Key) {
        // A transaction depending on itself is no anomaly; only edges between two count.
        if from != to {
            let kinds = self.edges[from].entry(to).or_default();
            kinds[dependency.index()].get_or_insert(key);
        }
    }

    fn counts(&self) -> DependencyCounts {
        let mut counts = [0usize; 3];
        for kinds in self.edges.iter().flat_map(|successors| successors.values()) {
            for (count, key) in counts.iter_mut().zip(kinds) {
                *count += usize::from(key.is_some());
            }
        }
        DependencyCounts { write_write: counts[0], write_read: counts[1], read_write: counts[2] }
    }

    /// The successors of `from` along edges of the allowed kinds, with the kind and key of
    /// one such edge (the first allowed kind in `allowed` order).
    fn successors<'a>(
        &'a self,
        from: TransactionIndex,
        allowed: &'a [Dependency],
    ) -> impl Iterator<Item = (TransactionIndex, Dependency, Key)> + 'a {
        self.edges[from].iter().filter_map(move |(to, kinds)| {
            allowed.iter().find_map(|dependency| kinds[dependency.index()].map(|key| (*to, *dependency, key)))
        })
    }

    /// Strongly connected components over edges of the allowed kinds (Tarjan's algorithm,
    /// iterative so that long histories cannot overflow the stack). Only components of
    /// more than one transaction are returned: they are where cycles are.
    fn components(&self, allowed: &[Dependency]) -> Vec<Vec<TransactionIndex>> {
        const UNVISITED: usize = usize::MAX;
        let size = self.edges.len();
        let mut order = vec![UNVISITED; size];
        let mut low = vec![0usize; size];
        let mut on_stack = vec![false; size];
        let mut stack: Vec<TransactionIndex> = Vec::new();
        let mut next_order = 0;
        let mut components = Vec::new();
        let successors_of = |node| self.successors(node, allowed).map(|(to, _, _)| to).collect::<Vec<_>>();
        for root in 0..size {
            if order[root] != UNVISITED {
                continue;
            }
            // Each frame: a node and its successors not yet looked at from it.
            let mut frames = vec![(root, successors_of(root))];
            (order[root], low[root], on_stack[root]) = (next_order, next_order, true);
            next_order += 1;
            stack.push(root);
            while let Some((node, successors)) = frames.last_mut() {
                let node = *node;
                if let Some(next) = successors.pop() {
                    if order[next] == UNVISITED {
                        (order[next], low[next], on_stack[next]) = (next_order, next_order, true);
                        next_order += 1;
                        stack.push(next);
                        frames.push((next, successors_of(next)));
                    } else if on_stack[next] {
                        low[node] = low[node].min(order[next]);
                    }
                    continue;
                }
                frames.pop();
                if let Some((parent, _)) = frames.last() {
                    low[*parent] = low[*parent].min(low[node]);
                }
                if low[node] == order[node] {
                    let mut component = Vec::new();
                    while let Some(member) = stack.pop() {
                        on_stack[member] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        components.push(component);
                    }
                }
            }
        }
        components
    }

    /// The shortest path from `from` to `to` inside `members` along allowed edges.
    fn path(
        &self,
        from: TransactionIndex,
        to: TransactionIndex,
        members: &HashSet<TransactionIndex>,
        allowed: &[Dependency],
    ) -> Option<Vec<Step>> {
        let mut previous: HashMap<TransactionIndex, Step> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = HashSet::from([from]);
        while let Some(node) = queue.pop_front() {
            if node == to {
                let mut steps = Vec::new();
                let mut at = to;
                while at != from {
                    let step = previous.remove(&at)?;
                    at = step.from;
                    steps.push(step);
                }
                steps.reverse();
                return Some(steps);
            }
            for (next, dependency, key) in self.successors(node, allowed) {
                if members.contains(&next) && seen.insert(next) {
                    previous.insert(next, Step { from: node, to: next, dependency, key });
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// One cycle per strongly connected component (over `allowed` edges) that contains an
    /// edge of kind `required`: the shortest found from the first few such edges.
    fn cycles(&self, allowed: &[Dependency], required: Dependency) -> Vec<Cycle> {
        // Trying every required edge of a large component costs a search each; a few
        // candidates find a short cycle, which is all a report needs.
        const CANDIDATES: usize = 32;
        let mut cycles = Vec::new();
        for component in self.components(allowed) {
            let members: HashSet<TransactionIndex> = component.iter().copied().collect();
            let mut best: Option<Cycle> = None;
            let candidates = component.iter().flat_map(|&from| {
                self.edges[from].iter().filter_map(move |(to, kinds)| {
                    kinds[required.index()].map(|key| Step { from, to: *to, dependency: required, key })
                })
            });
            for first in candidates.filter(|step| members.contains(&step.to)).take(CANDIDATES) {
                let Some(rest) = self.path(first.to, first.from, &members, allowed) else { continue };
                let mut steps = vec![first];
                steps.extend(rest);
                if best.as_ref().is_none_or(|best| steps.len() < best.steps.len()) {
                    best = Some(Cycle { steps });
                }
            }
            cycles.extend(best);
        }
        cycles
    }
}

/// Checks a history and reports every anomaly found; fails only when the history breaks
/// the checker's premises (a value written twice to one key, a key used both ways).
pub fn check(history: &[Transaction]) -> Result<Report, HistoryError> {
    let written = index_writes(history)?;
    let mut anomalies = Vec::new();

    let reads = external_reads(history, &mut anomalies);
    check_reads(history, &written, &reads, &mut anomalies);

    let is_node = |index: TransactionIndex| history[index].outcome != Outcome::Aborted;
    let mut graph = Graph::new(history.len());
    let list_orders = list_version_orders(&reads, &mut anomalies);
    add_list_dependencies(&written, &reads, &list_orders, &is_node, &mut graph);
    add_register_dependencies(history, &written, &reads, &is_node, &mut graph);

    let write_write = [Dependency::WriteWrite];
    let information_flow = [Dependency::WriteWrite, Dependency::WriteRead];
    anomalies.extend(graph.cycles(&write_write, Dependency::WriteWrite).into_iter().map(Anomaly::G0));
    anomalies.extend(graph.cycles(&information_flow, Dependency::WriteRead).into_iter().map(Anomaly::G1c));
    anomalies.extend(graph.cycles(&Dependency::ALL, Dependency::ReadWrite).into_iter().map(Anomaly::G2));

    check_real_time(history, &reads, &list_orders, &mut anomalies);

    let count = |outcome: Outcome| history.iter().filter(|transaction| transaction.outcome == outcome).count();
    Ok(Report {
        transactions: history.len(),
        committed: count(Outcome::Committed),
        aborted: count(Outcome::Aborted),
        unknown: count(Outcome::Unknown),
        reads: reads.len(),
        dependencies: graph.counts(),
        anomalies,
        labels: history.iter().map(Transaction::label).collect(),
    })
}

/// Maps every written (key, value) to its writer, and checks that values are unique per
/// key and that no key is used both as a register and as a list.
fn index_writes(history: &[Transaction]) -> Result<HashMap<(Key, Value), Written>, HistoryError> {
    let mut key_is_list: HashMap<Key, bool> = HashMap::new();
    let mut written: HashMap<(Key, Value), Written> = HashMap::new();
    for (index, transaction) in history.iter().enumerate() {
        let mut last_write: HashMap<Key, Value> = HashMap::new();
        for operation in &transaction.operations {
            if *key_is_list.entry(operation.key()).or_insert(operation.is_list()) != operation.is_list() {
                return Err(HistoryError::MixedKey { key: operation.key() });
            }
            let (key, value) = match operation {
                Operation::Write { key, value } | Operation::Append { key, value } => (*key, *value),
                Operation::Read { .. } | Operation::ReadList { .. } => continue,
            };
            if let Some(first) = written.get(&(key, value)) {
                return Err(HistoryError::DuplicateWrite { key, value, first: first.writer, second: index });
            }
            let register = !operation.is_list();
            written.insert((key, value), Written { writer: index, final_write: false, register });
            last_write.insert(key, value);
        }
        for (key, value) in last_write {
            if let Some(entry) = written.get_mut(&(key, value)) {
                entry.final_write = true;
            }
        }
    }
    Ok(written)
}

/// The reads of committed transactions, with their own earlier writes told apart from
/// what they saw of others; reports reads that contradict the transaction's own writes.
fn external_reads(history: &[Transaction], anomalies: &mut Vec<Anomaly>) -> Vec<ExternalRead> {
    let mut reads = Vec::new();
    for (index, transaction) in history.iter().enumerate() {
        if transaction.outcome != Outcome::Committed {
            continue;
        }
        let mut own_register: HashMap<Key, Value> = HashMap::new();
        let mut own_appends: HashMap<Key, Vec<Value>> = HashMap::new();
        let own_values: HashSet<(Key, Value)> = transaction
            .operations
            .iter()
            .filter_map(|operation| match operation {
                Operation::Append { key, value } | Operation::Write { key, value } => Some((*key, *value)),
                _ => None,
            })
            .collect();
        for operation in &transaction.operations {
            match operation {
                Operation::Write { key, value } => {
                    own_register.insert(*key, *value);
                }
                Operation::Append { key, value } => own_appends.entry(*key).or_default().push(*value),
                Operation::Read { key, value } => match own_register.get(key) {
                    Some(own) if *value != Some(*own) => anomalies.push(Anomaly::Internal {
                        transaction: index,
                        key: *key,
                        detail: format!("read {value:?} after writing {own}"),
                    }),
                    Some(_) => {}
                    None => {
                        if let Some(value) = value.filter(|value| own_values.contains(&(*key, *value))) {
                            anomalies.push(Anomaly::Internal {
                                transaction: index,
                                key: *key,
                                detail: format!("read {value} before writing it"),
                            });
                            continue;
                        }
                        reads.push(ExternalRead { reader: index, key: *key, register: Some(*value), list: None });
                    }
                },
                Operation::ReadList { key, values } => {
                    let own = own_appends.get(key).map(Vec::as_slice).unwrap_or(&[]);
                    let external = values.len().saturating_sub(own.len());
                    if !values.ends_with(own) {
                        anomalies.push(Anomaly::Internal {
                            transaction: index,
                            key: *key,
                            detail: format!("read {values:?}, which does not end with its own appends {own:?}"),
                        });
                        continue;
                    }
                    if let Some(value) = values[..external].iter().find(|value| own_values.contains(&(*key, **value))) {
                        anomalies.push(Anomaly::Internal {
                            transaction: index,
                            key: *key,
                            detail: format!("read {value} before appending it"),
                        });
                        continue;
                    }
                    reads.push(ExternalRead {
                        reader: index,
                        key: *key,
                        register: None,
                        list: Some((values.clone(), external)),
                    });
                }
            }
        }
    }
    reads
}

/// Per read: aborted reads (G1a), intermediate reads (G1b), garbage, duplicates.
fn check_reads(
    history: &[Transaction],
    written: &HashMap<(Key, Value), Written>,
    reads: &[ExternalRead],
    anomalies: &mut Vec<Anomaly>,
) {
    let mut reported_duplicates: HashSet<(Key, Value)> = HashSet::new();
    for read in reads {
        let (seen, last): (Vec<Value>, Option<Value>) = match (&read.register, &read.list) {
            (Some(value), _) => (value.iter().copied().collect(), *value),
            (None, Some((values, external))) => {
                let mut counts: HashMap<Value, usize> = HashMap::new();
                for value in values {
                    *counts.entry(*value).or_default() += 1;
                }
                let mut duplicated: Vec<(Value, usize)> = counts.into_iter().filter(|(_, count)| *count > 1).collect();
                duplicated.sort_unstable();
                for (value, count) in duplicated {
                    // One report per duplicated value: every later read repeats it.
                    if reported_duplicates.insert((read.key, value)) {
                        anomalies.push(Anomaly::DuplicateElements { reader: read.reader, key: read.key, value, count });
                    }
                }
                let external = &values[..*external];
                (external.to_vec(), external.last().copied())
            }
            (None, None) => continue,
        };
        for value in seen {
            match written.get(&(read.key, value)) {
                None => anomalies.push(Anomaly::GarbageRead { reader: read.reader, key: read.key, value }),
                Some(write) if history[write.writer].outcome == Outcome::Aborted => {
                    anomalies.push(Anomaly::G1a { reader: read.reader, writer: write.writer, key: read.key, value })
                }
                Some(_) => {}
            }
        }
        if let Some(value) = last {
            if let Some(write) = written.get(&(read.key, value)) {
                if !write.final_write && history[write.writer].outcome != Outcome::Aborted {
                    anomalies.push(Anomaly::G1b { reader: read.reader, writer: write.writer, key: read.key, value });
                }
            }
        }
    }
}

/// The version order of every list key: its longest read, when every other read of the
/// key is a prefix of it. Keys with incompatible reads are reported and still ordered by
/// their longest read, so that their other dependencies are not lost.
fn list_version_orders(reads: &[ExternalRead], anomalies: &mut Vec<Anomaly>) -> HashMap<Key, Vec<Value>> {
    let mut by_key: BTreeMap<Key, Vec<(TransactionIndex, &Vec<Value>)>> = BTreeMap::new();
    for read in reads {
        if let Some((values, _)) = &read.list {
            by_key.entry(read.key).or_default().push((read.reader, values));
        }
    }
    let mut orders = HashMap::new();
    for (key, mut lists) in by_key {
        lists.sort_by_key(|(reader, values)| (std::cmp::Reverse(values.len()), *reader));
        let (longest_reader, longest) = lists[0];
        // One report per key: the first read that does not fit.
        if let Some((reader, _)) = lists.iter().find(|(_, values)| !longest.starts_with(values)) {
            anomalies.push(Anomaly::IncompatibleOrder { key, first: longest_reader, second: *reader });
        }
        orders.insert(key, longest.clone());
    }
    orders
}

fn add_list_dependencies(
    written: &HashMap<(Key, Value), Written>,
    reads: &[ExternalRead],
    orders: &HashMap<Key, Vec<Value>>,
    is_node: &dyn Fn(TransactionIndex) -> bool,
    graph: &mut Graph,
) {
    let writer = |key: Key, value: Value| written.get(&(key, value)).map(|write| write.writer).filter(|w| is_node(*w));
    for (key, order) in orders {
        for pair in order.windows(2) {
            if let (Some(first), Some(second)) = (writer(*key, pair[0]), writer(*key, pair[1])) {
                graph.add(first, second, Dependency::WriteWrite, *key);
            }
        }
    }
    for read in reads {
        let Some((values, external)) = &read.list else { continue };
        let seen = &values[..*external];
        if let Some(last) = seen.last() {
            if let Some(writer) = writer(read.key, *last) {
                graph.add(writer, read.reader, Dependency::WriteRead, read.key);
            }
        }
        // The append right after what the reader saw was installed after its read.
        let Some(order) = orders.get(&read.key) else { continue };
        if order.starts_with(seen) {
            if let Some(next) = order.get(seen.len()).and_then(|next| writer(read.key, *next)) {
                graph.add(read.reader, next, Dependency::ReadWrite, read.key);
            }
        }
    }
}

fn add_register_dependencies(
    history: &[Transaction],
    written: &HashMap<(Key, Value), Written>,
    reads: &[ExternalRead],
    is_node: &dyn Fn(TransactionIndex) -> bool,
    graph: &mut Graph,
) {
    // Installed versions: the final writes of transactions that may have committed.
    let mut installed: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
    for ((key, value), write) in written {
        if write.register && write.final_write && is_node(write.writer) {
            installed.entry(*key).or_default().push(*value);
        }
    }
    // Successors in the inferred version order; the initial version precedes all.
    let mut next_versions: HashMap<(Key, Option<Value>), BTreeSet<Value>> = HashMap::new();
    for (key, values) in &installed {
        next_versions.entry((*key, None)).or_default().extend(values.iter().copied());
    }
    for (index, transaction) in history.iter().enumerate() {
        if transaction.outcome != Outcome::Committed {
            continue;
        }
        // Writes follow reads: the first read of a key, before any own write of it,
        // precedes the transaction's final write of that key.
        let mut first_read: HashMap<Key, Option<Value>> = HashMap::new();
        let mut final_write: HashMap<Key, Value> = HashMap::new();
        for operation in &transaction.operations {
            match operation {
                Operation::Read { key, value } if !final_write.contains_key(key) => {
                    first_read.entry(*key).or_insert(*value);
                }
                Operation::Write { key, value } => {
                    final_write.insert(*key, *value);
                }
                _ => {}
            }
        }
        for (key, value) in final_write {
            if let Some(Some(read)) = first_read.get(&key) {
                let read_is_installed = written.get(&(key, *read)).is_some_and(|w| w.final_write && w.writer != index);
                if read_is_installed {
                    next_versions.entry((key, Some(*read))).or_default().insert(value);
                }
            }
        }
    }
    let writer = |key: Key, value: Value| written.get(&(key, value)).map(|write| write.writer).filter(|w| is_node(*w));
    for ((key, version), successors) in &next_versions {
        let Some(version) = version else { continue };
        let Some(first) = writer(*key, *version) else { continue };
        for successor in successors {
            if let Some(second) = writer(*key, *successor) {
                graph.add(first, second, Dependency::WriteWrite, *key);
            }
        }
    }
    for read in reads {
        let Some(value) = read.register else { continue };
        if let Some(writer) = value.and_then(|value| writer(read.key, value)) {
            graph.add(writer, read.reader, Dependency::WriteRead, read.key);
        }
        for successor in next_versions.get(&(read.key, value)).into_iter().flatten() {
            if let Some(next) = writer(read.key, *successor) {
                graph.add(read.reader, next, Dependency::ReadWrite, read.key);
            }
        }
    }
}

/// What a list read holds: a prefix of its key's version order (most reads), told by
/// its length, or an arbitrary list.
enum Contents {
    Prefix(usize),
    Values(HashSet<Value>),
}

/// Acknowledged appends must be seen by every transaction invoked after the reply.
fn check_real_time(
    history: &[Transaction],
    reads: &[ExternalRead],
    orders: &HashMap<Key, Vec<Value>>,
    anomalies: &mut Vec<Anomaly>,
) {
    // Where each value stands in its key's version order.
    let positions: HashMap<Key, HashMap<Value, usize>> = orders
        .iter()
        .map(|(key, order)| {
            let mut positions = HashMap::new();
            for (position, value) in order.iter().enumerate() {
                positions.entry(*value).or_insert(position);
            }
            (*key, positions)
        })
        .collect();
    // Per key: the committed list reads, by invocation time.
    let mut readers: HashMap<Key, Vec<(u64, TransactionIndex, Contents)>> = HashMap::new();
    for read in reads {
        let Some((values, _)) = &read.list else { continue };
        let is_prefix = orders.get(&read.key).is_some_and(|order| order.starts_with(values));
        let contents =
            if is_prefix { Contents::Prefix(values.len()) } else { Contents::Values(values.iter().copied().collect()) };
        readers.entry(read.key).or_default().push((history[read.reader].invoked_at, read.reader, contents));
    }
    for list in readers.values_mut() {
        list.sort_by_key(|(invoked_at, reader, _)| (*invoked_at, *reader));
    }
    for (index, transaction) in history.iter().enumerate() {
        let (Outcome::Committed, Some(completed_at)) = (transaction.outcome, transaction.completed_at) else {
            continue;
        };
        for operation in &transaction.operations {
            let Operation::Append { key, value } = operation else { continue };
            let Some(list) = readers.get(key) else { continue };
            let position = positions.get(key).and_then(|positions| positions.get(value));
            let holds = |contents: &Contents| match contents {
                Contents::Prefix(length) => position.is_some_and(|position| position < length),
                Contents::Values(values) => values.contains(value),
            };
            let later = &list[list.partition_point(|(invoked_at, _, _)| *invoked_at <= completed_at)..];
            let Some((_, first_missing, _)) = later.iter().find(|(_, _, contents)| !holds(contents)) else {
                continue;
            };
            let seen_later = later.iter().any(|(_, _, contents)| holds(contents));
            let (writer, reader, key, value) = (index, *first_missing, *key, *value);
            anomalies.push(if seen_later {
                Anomaly::StaleRead { writer, reader, key, value }
            } else {
                Anomaly::LostWrite { writer, reader, key, value }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(id: &str, operations: Vec<Operation>) -> Transaction {
        Transaction::new(0, id, Outcome::Committed, operations)
    }

    fn aborted(id: &str, operations: Vec<Operation>) -> Transaction {
        Transaction::new(0, id, Outcome::Aborted, operations)
    }

    fn append(key: Key, value: Value) -> Operation {
        Operation::Append { key, value }
    }

    fn read_list(key: Key, values: &[Value]) -> Operation {
        Operation::ReadList { key, values: values.to_vec() }
    }

    fn write(key: Key, value: Value) -> Operation {
        Operation::Write { key, value }
    }

    fn read(key: Key, value: Option<Value>) -> Operation {
        Operation::Read { key, value }
    }

    fn kinds(history: &[Transaction]) -> Vec<AnomalyKind> {
        check(history).expect("a well-formed history").kinds().into_iter().collect()
    }

    /// The one cycle of `kind` in the report of `history`.
    fn only_cycle(history: &[Transaction], kind: AnomalyKind) -> Cycle {
        let report = check(history).expect("a well-formed history");
        let found = report.of_kind(kind);
        assert_eq!(found.len(), 1, "{report}");
        match found[0] {
            Anomaly::G0(cycle) | Anomaly::G1c(cycle) | Anomaly::G2(cycle) => cycle.clone(),
            other => panic!("not a cycle: {other:?}"),
        }
    }

    #[test]
    fn a_serial_list_history_is_clean() {
        let history = vec![
            committed("t0", vec![read_list(1, &[]), append(1, 10)]),
            committed("t1", vec![read_list(1, &[10]), append(2, 20), read_list(2, &[20])]),
            committed("t2", vec![append(1, 11), append(1, 12), read_list(1, &[10, 11, 12])]),
            committed("t3", vec![read_list(1, &[10, 11, 12]), read_list(2, &[20])]),
            aborted("t4", vec![append(2, 21)]),
            // Its reply never came, but it committed: a later read saw its append.
            Transaction::new(1, "t5", Outcome::Unknown, vec![append(2, 22)]),
            committed("t6", vec![read_list(2, &[20, 22])]),
        ];
        let report = check(&history).expect("a well-formed history");
        assert!(report.is_clean(), "{report}");
        assert_eq!((report.committed, report.aborted, report.unknown), (5, 1, 1));
        assert_eq!(report.reads, 7);
        // ww: t0 -> t2 on key 1, t1 -> t5 on key 2. wr: t0 -> t1, t0 -> t2, t2 -> t3,
        // t1 -> t3, t5 -> t6. rw: t1 -> t2 (t1 saw [10], t2 appended 11), t3 -> t5.
        assert_eq!(report.dependencies, DependencyCounts { write_write: 2, write_read: 5, read_write: 2 });
    }

    #[test]
    fn a_serial_register_history_is_clean() {
        let history = vec![
            committed("t0", vec![read(1, None), write(1, 10)]),
            committed("t1", vec![read(1, Some(10)), write(1, 11), read(1, Some(11)), write(2, 20)]),
            committed("t2", vec![read(1, Some(11)), read(2, Some(20))]),
            aborted("t3", vec![write(1, 12)]),
        ];
        let report = check(&history).expect("a well-formed history");
        assert!(report.is_clean(), "{report}");
        assert!(report.dependencies.write_write >= 1 && report.dependencies.write_read >= 2, "{report}");
    }

    #[test]
    fn a_write_cycle_is_g0() {
        // t1 and t2 both append to keys 1 and 2, in opposite orders.
        let history = vec![
            committed("t1", vec![append(1, 11), append(2, 21)]),
            committed("t2", vec![append(1, 12), append(2, 22)]),
            committed("reader", vec![read_list(1, &[11, 12]), read_list(2, &[22, 21])]),
        ];
        let cycle = only_cycle(&history, AnomalyKind::G0);
        assert_eq!(cycle.steps.len(), 2);
        assert_eq!(cycle.count(Dependency::WriteWrite), 2);
        let mut members = cycle.transactions();
        members.sort_unstable();
        assert_eq!(members, vec![0, 1]);
        let report = check(&history).expect("well-formed");
        let text = report.explain(report.of_kind(AnomalyKind::G0)[0]);
        assert!(text.contains("request t1") && text.contains("request t2") && text.contains("-ww("), "{text}");
    }

    #[test]
    fn reading_an_aborted_write_is_g1a() {
        let history = vec![
            aborted("writer", vec![append(1, 10)]),
            committed("reader", vec![read_list(1, &[10])]),
            aborted("register writer", vec![write(2, 20)]),
            committed("register reader", vec![read(2, Some(20))]),
        ];
        let report = check(&history).expect("well-formed");
        assert_eq!(report.kinds().into_iter().collect::<Vec<_>>(), vec![AnomalyKind::G1a], "{report}");
        assert_eq!(
            report.anomalies,
            vec![
                Anomaly::G1a { reader: 1, writer: 0, key: 1, value: 10 },
                Anomaly::G1a { reader: 3, writer: 2, key: 2, value: 20 },
            ]
        );
    }

    #[test]
    fn reading_an_overwritten_value_is_g1b() {
        let history = vec![
            committed("writer", vec![append(1, 10), append(1, 11)]),
            committed("reader", vec![read_list(1, &[10])]),
            committed("register writer", vec![write(2, 20), write(2, 21)]),
            committed("register reader", vec![read(2, Some(20))]),
        ];
        let report = check(&history).expect("well-formed");
        assert_eq!(report.of_kind(AnomalyKind::G1b).len(), 2, "{report}");
        assert!(report.anomalies.contains(&Anomaly::G1b { reader: 1, writer: 0, key: 1, value: 10 }));
        assert!(report.anomalies.contains(&Anomaly::G1b { reader: 3, writer: 2, key: 2, value: 20 }));
    }

    #[test]
    fn circular_information_flow_is_g1c() {
        // Each read the other's append: both saw the other's effects.
        let history = vec![
            committed("t1", vec![append(1, 10), read_list(2, &[20])]),
            committed("t2", vec![append(2, 20), read_list(1, &[10])]),
        ];
        assert_eq!(kinds(&history), vec![AnomalyKind::G1c]);
        let cycle = only_cycle(&history, AnomalyKind::G1c);
        assert_eq!(cycle.count(Dependency::WriteRead), 2);
        assert_eq!(cycle.count(Dependency::ReadWrite), 0);
    }

    #[test]
    fn write_skew_is_g2() {
        // Each read the key the other appended to, before the append: neither saw the
        // other, yet each would have to come first.
        let history = vec![
            committed("t1", vec![read_list(1, &[]), append(2, 20)]),
            committed("t2", vec![read_list(2, &[]), append(1, 10)]),
            committed("later", vec![read_list(1, &[10]), read_list(2, &[20])]),
        ];
        assert_eq!(kinds(&history), vec![AnomalyKind::G2]);
        let cycle = only_cycle(&history, AnomalyKind::G2);
        assert_eq!(cycle.count(Dependency::ReadWrite), 2);
        let report = check(&history).expect("well-formed");
        assert!(report.explain(report.of_kind(AnomalyKind::G2)[0]).contains("G2-item"));
    }

    #[test]
    fn read_skew_is_g_single() {
        // t2 saw t1's append to key 2 but not its append to key 1.
        let history = vec![
            committed("t1", vec![append(1, 10), append(2, 20)]),
            committed("t2", vec![read_list(2, &[20]), read_list(1, &[])]),
            committed("later", vec![read_list(1, &[10])]),
        ];
        assert_eq!(kinds(&history), vec![AnomalyKind::G2]);
        let cycle = only_cycle(&history, AnomalyKind::G2);
        assert_eq!((cycle.count(Dependency::ReadWrite), cycle.count(Dependency::WriteRead)), (1, 1));
        let report = check(&history).expect("well-formed");
        assert!(report.explain(report.of_kind(AnomalyKind::G2)[0]).contains("G-single"));
    }

    #[test]
    fn a_lost_register_update_is_g2() {
        // Both read 10 and wrote a successor: one of the two updates was lost.
        let history = vec![
            committed("t0", vec![write(1, 10)]),
            committed("t1", vec![read(1, Some(10)), write(1, 11)]),
            committed("t2", vec![read(1, Some(10)), write(1, 12)]),
        ];
        assert_eq!(kinds(&history), vec![AnomalyKind::G2]);
        let cycle = only_cycle(&history, AnomalyKind::G2);
        let mut members = cycle.transactions();
        members.sort_unstable();
        assert_eq!(members, vec![1, 2]);
    }

    #[test]
    fn reads_that_fit_no_order_duplicates_and_garbage_are_reported() {
        let history = vec![
            committed("t1", vec![append(1, 10)]),
            committed("t2", vec![append(1, 11)]),
            committed("r1", vec![read_list(1, &[10, 11])]),
            committed("r2", vec![read_list(1, &[11])]),
            committed("t3", vec![append(2, 20)]),
            committed("r3", vec![read_list(2, &[20, 20])]),
            committed("r4", vec![read_list(3, &[99]), read(4, Some(7))]),
        ];
        let report = check(&history).expect("well-formed");
        assert!(report.anomalies.contains(&Anomaly::IncompatibleOrder { key: 1, first: 2, second: 3 }), "{report}");
        assert!(report.anomalies.contains(&Anomaly::DuplicateElements { reader: 5, key: 2, value: 20, count: 2 }));
        assert!(report.anomalies.contains(&Anomaly::GarbageRead { reader: 6, key: 3, value: 99 }));
        assert!(report.anomalies.contains(&Anomaly::GarbageRead { reader: 6, key: 4, value: 7 }));
    }

    #[test]
    fn not_seeing_its_own_writes_is_internal() {
        let history = vec![
            committed("list", vec![append(1, 10), read_list(1, &[])]),
            committed("register", vec![write(2, 20), read(2, None)]),
            committed("future", vec![read_list(3, &[30]), append(3, 30)]),
        ];
        let report = check(&history).expect("well-formed");
        let internal: Vec<TransactionIndex> =
            report.of_kind(AnomalyKind::Internal).iter().flat_map(|anomaly| anomaly.transactions()).collect();
        assert_eq!(internal, vec![0, 1, 2], "{report}");
    }

    #[test]
    fn an_acknowledged_append_missing_later_is_lost_or_stale() {
        let history = vec![
            committed("writer", vec![append(1, 10)]).at(0, 10),
            // Concurrent with the writer: not seeing it is fine.
            committed("concurrent", vec![read_list(1, &[])]).at(5, 15),
            committed("after", vec![read_list(1, &[])]).at(20, 30),
            committed("writer 2", vec![append(2, 20)]).at(0, 10),
            committed("stale", vec![read_list(2, &[])]).at(20, 30),
            committed("fresh", vec![read_list(2, &[20])]).at(40, 50),
        ];
        let report = check(&history).expect("well-formed");
        assert!(report.anomalies.contains(&Anomaly::LostWrite { writer: 0, reader: 2, key: 1, value: 10 }), "{report}");
        assert!(report.anomalies.contains(&Anomaly::StaleRead { writer: 3, reader: 4, key: 2, value: 20 }), "{report}");
        assert_eq!(report.of_kind(AnomalyKind::LostWrite).len() + report.of_kind(AnomalyKind::StaleRead).len(), 2);
    }

    #[test]
    fn histories_that_break_the_premises_are_refused() {
        let twice = vec![committed("t1", vec![append(1, 10)]), committed("t2", vec![append(1, 10)])];
        assert_eq!(check(&twice).err(), Some(HistoryError::DuplicateWrite { key: 1, value: 10, first: 0, second: 1 }));
        let mixed = vec![committed("t1", vec![append(1, 10), read(1, None)])];
        assert_eq!(check(&mixed).err(), Some(HistoryError::MixedKey { key: 1 }));
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        // A serial chain of appends to one key, then a write skew at its end.
        let mut history: Vec<Transaction> =
            (0..20_000).map(|value| committed("chain", vec![append(1, value)])).collect();
        let order: Vec<Value> = (0..20_000).collect();
        history.push(committed("reader", vec![read_list(1, &order)]));
        assert!(check(&history).expect("well-formed").is_clean());
        history.push(committed("t1", vec![read_list(2, &[]), append(3, 30)]));
        history.push(committed("t2", vec![read_list(3, &[]), append(2, 20)]));
        history.push(committed("t3", vec![read_list(2, &[20]), read_list(3, &[30])]));
        assert_eq!(kinds(&history), vec![AnomalyKind::G2]);
    }
}
