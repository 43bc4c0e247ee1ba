//! History checking against real `leasehold-engine` processes under faults: one engine
//! SIGKILLed and restarted in the middle, a three-node cluster with one node SIGKILLed
//! and restarted, SIGSTOPped and resumed, or cut off the network (its own network
//! namespace, its link to the others down, while its engine and clients keep running);
//! and a self-test that shows the checker catches the bugs it is there for.
//!
//! Several clients run transactions of testkit's `list_append` workflow (Elle's
//! list-append workload: read keys, append unique values) and of its `program` workflow
//! used as read-write registers (read a cell, then set it to a unique value). Every
//! transaction is tracked under a request id. Half-way an engine is faulted: SIGKILLed
//! and restarted on the same data directory, or (in a cluster) paused with SIGSTOP and
//! resumed with SIGCONT. Clients retry whatever was lost with a connection or refused with
//! `retry` (a cluster rolled the epoch back) under the same ids, through whichever node
//! answers, and re-send an acknowledged request to see it answered with its first outcome.
//! In a cluster, client `i` talks to node `i % 3` whenever it can, so every node sequences
//! transactions and most touch keys held by other nodes. Everything the clients saw is
//! recorded as a history (`leasehold_integration::history`), which must show no anomaly:
//! no dependency cycle (G0, G1c, G2), no aborted or intermediate read, no acknowledged
//! append missing later. A final read of every key (through every node of a cluster,
//! which must agree) must hold every committed append exactly once and no aborted one.
//!
//! Then the single-node history is mutated the way real bugs would change it (a reply
//! sent before durability, a retried id applied twice, a task precedence graph that
//! misses a conflict, writes of an aborted or half-run transaction becoming visible), and
//! the checker must report each.
//!
//! Knobs for long runs: `LEASEHOLD_HISTORY_PHASE_MS` (load before, between and after the
//! faults), `LEASEHOLD_HISTORY_CRASHES` (faults per run; in a cluster they rotate over the
//! nodes), `LEASEHOLD_HISTORY_PAUSE_MS` (how long a paused node stays stopped) and
//! `LEASEHOLD_HISTORY_SEED` (the workload's random sequence and the first faulted node).
//! The partition test needs root and `ip netns` (see `leasehold_integration::netns`);
//! elsewhere it prints "skipped: <reason>".

use leasehold_client::{BlockingClient, Invocation, InvokeResult, NodeStatus, RejectionKind, SessionPosition};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::history::{
    check, Anomaly, AnomalyKind, Key, Operation, Outcome, Report, Transaction, Value,
};
use leasehold_integration::netns::{enter_namespace, NetworkLab};
use leasehold_integration::{plugin_bytes, EngineProcess};
use leasehold_plugin_api::testkit::{ListOp, ListTransaction, Op, Program, LIST_OPS_MAX};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// List keys in use at a time: a window of `LIST_KEYS` keys that moves on by one key every
/// `KEY_LIFETIME` transactions (as Elle rotates keys), so that lists stay short and reads
/// cheap however long the run. The first two keys of the window are also a hot pair (see
/// [`Generator`]).
const LIST_KEYS: u64 = 8;
const KEY_LIFETIME: u64 = 400;
/// Register cells `0..CELLS` of testkit's `cells` table.
const CELLS: u8 = 4;
/// A cell set to -1 before the run, so that a register transaction can abort (testkit's
/// `AbortIfNegative`) after its write.
const NEGATIVE_CELL: u8 = CELLS;
/// Cell `c` is key `REGISTER_KEY_BASE + c` in the history, apart from the list keys.
const REGISTER_KEY_BASE: Key = 1_000;
/// Clients against one engine.
const CLIENTS: u64 = 4;
/// Nodes of the cluster, and clients against it: two per node.
const NODES: u16 = 3;
const CLUSTER_CLIENTS: u64 = 6;
/// How long the clients run before the first fault, between faults and after the last,
/// unless `LEASEHOLD_HISTORY_PHASE_MS` says otherwise; `LEASEHOLD_HISTORY_CRASHES` sets
/// how many faults a run has (for long runs).
const PHASE_MS: u64 = 1200;
/// How long a paused node stays stopped, unless `LEASEHOLD_HISTORY_PAUSE_MS` says
/// otherwise: long enough that every other node waits for it in the middle of an epoch.
const PAUSE_MS: u64 = 1500;
/// How long a client keeps retrying one request while the engines are away. A cluster
/// that stays stuck longer than this leaves the request unknown, which fails the test.
const RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a cluster may take to agree on a view again after a fault.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client sends, and how its reply becomes history operations.
#[derive(Clone, Debug)]
enum Request {
    List(ListTransaction),
    /// Reads `cell` and `other`, then sets `cell` to `value`; with `abort`, then aborts.
    Register {
        cell: u8,
        other: u8,
        value: i64,
        abort: bool,
    },
}

impl Request {
    /// The request's invocation, tracked under `request_id`, or at `session`'s place for
    /// the history's `sequence`-th request of the client when the client has a session.
    fn invocation(&self, request_id: &str, session: Option<u64>, sequence: u64) -> Invocation {
        let invocation = match self {
            Request::List(transaction) => Invocation::encoded(
                "testkit",
                "list_append",
                leasehold_sdk::encode(transaction).expect("encode a list transaction"),
            ),
            Request::Register { cell, other, value, abort } => {
                let last = if *abort { vec![Op::AbortIfNegative(NEGATIVE_CELL)] } else { vec![] };
                let program =
                    Program { steps: [vec![Op::Read(*cell), Op::Read(*other)], vec![Op::Set(*cell, *value)], last] };
                Invocation::encoded("testkit", "program", leasehold_sdk::encode(&program).expect("encode a program"))
            }
        };
        match session {
            // The client never acknowledges: it re-sends acknowledged requests and expects
            // their first outcome, so the node must keep every outcome of the session.
            Some(session) => Invocation {
                session: Some(SessionPosition { session, sequence: sequence + 1, first_unanswered: 1 }),
                ..invocation
            },
            None => invocation.with_request_id(request_id.as_bytes().to_vec()),
        }
    }

    /// The operations of the request: its writes always, its reads when `output` (the
    /// committed output) tells what they returned.
    fn operations(&self, output: Option<&[u8]>) -> Vec<Operation> {
        match self {
            Request::List(transaction) => {
                let lists: Option<Vec<Vec<u64>>> =
                    output.map(|output| leasehold_sdk::decode(output).expect("list_append outputs its reads"));
                let mut lists = lists.map(Vec::into_iter);
                let mut operations = Vec::new();
                for op in &transaction.ops {
                    match *op {
                        ListOp::Append(key, value) => operations.push(Operation::Append { key, value }),
                        ListOp::Abort => {}
                        ListOp::Read(key) => {
                            if let Some(lists) = lists.as_mut() {
                                let values = lists.next().expect("one list per read");
                                operations.push(Operation::ReadList { key, values });
                            }
                        }
                    }
                }
                operations
            }
            Request::Register { cell, other, value, .. } => {
                let register = |cell: u8| REGISTER_KEY_BASE + Key::from(cell);
                let write = Operation::Write { key: register(*cell), value: *value as Value };
                let Some(output) = output else { return vec![write] };
                let reads: Vec<i64> = leasehold_sdk::decode(output).expect("program outputs its reads");
                assert_eq!(reads.len(), 2, "two reads were asked for");
                // Cells never written read as 0; every written value is positive.
                let read = |cell: u8, value: i64| Operation::Read {
                    key: register(cell),
                    value: (value != 0).then_some(value as Value),
                };
                vec![read(*cell, reads[0]), read(*other, reads[1]), write]
            }
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, Request::List(_))
    }
}

/// A seeded generator of requests with values unique across clients.
struct Generator {
    client: u64,
    state: u64,
    next_value: u64,
    /// Transactions generated by all clients, which moves the window of list keys.
    transactions: Arc<AtomicU64>,
}

impl Generator {
    /// Seed 0 gives the sequence the single-node figures in RELIABILITY.md were measured with.
    fn new(client: u64, seed: u64, transactions: Arc<AtomicU64>) -> Generator {
        let state = (client ^ seed.wrapping_mul(0xd1b5_4a32_d192_ed03)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        Generator { client, state, next_value: 1, transactions }
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.state = self.state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.state >> 33) % bound
    }

    /// A value no other client and no other request of this client writes.
    fn value(&mut self) -> u64 {
        self.next_value += 1;
        ((self.client + 1) << 40) | self.next_value
    }

    fn next(&mut self) -> Request {
        let window = self.transactions.fetch_add(1, Ordering::Relaxed) / KEY_LIFETIME;
        let roll = self.below(100);
        if roll < 25 {
            let (cell, other) = (self.below(CELLS.into()) as u8, self.below(CELLS.into()) as u8);
            let abort = self.below(20) == 0;
            return Request::Register { cell, other, value: self.value() as i64, abort };
        }
        let mut ops = Vec::new();
        if roll < 40 {
            // The hot pair: read one of keys 0 and 1 and append to the other. Pairs of
            // these are what a missed conflict turns into write skew.
            let (read, append) = if self.below(2) == 0 { (window, window + 1) } else { (window + 1, window) };
            ops.push(ListOp::Read(read));
            ops.push(ListOp::Append(append, self.value()));
        } else {
            let mut key = || window + self.below(LIST_KEYS);
            let (first, second, target) = (key(), key(), key());
            ops.push(ListOp::Read(first));
            ops.push(ListOp::Read(second));
            ops.push(ListOp::Append(target, self.value()));
            match roll {
                // Two appends to one key: a reader between them would be an intermediate read.
                40..=54 => ops.push(ListOp::Append(target, self.value())),
                55..=64 => ops.push(ListOp::Append(window + self.below(LIST_KEYS), self.value())),
                _ => {}
            }
            if roll.is_multiple_of(3) {
                // Reads its own append.
                ops.push(ListOp::Read(target));
            }
            if self.below(20) == 0 {
                // Its appends must leave no trace.
                ops.push(ListOp::Abort);
            }
        }
        Request::List(ListTransaction { ops })
    }
}

/// What is done to an engine process in the middle of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then a restart on the same data directory and port.
    Kill,
    /// SIGSTOP, then SIGCONT: in a cluster the other nodes wait for the paused one (it
    /// still holds its keys; nobody else may write them) and every node continues.
    Pause,
    /// The node's network link goes down for the pause's length, then up again: its
    /// engine and its clients keep running, cut off from the other nodes (and their
    /// clients from it). Nodes in network namespaces only.
    Partition,
}

/// How a run is shaped: defaults sized for CI, environment knobs for long runs.
#[derive(Clone, Copy, Debug)]
struct Plan {
    fault: Fault,
    faults: u64,
    phase: Duration,
    pause: Duration,
    clients: u64,
    seed: u64,
    /// Track requests by client session (one per client) instead of request ids.
    sessions: bool,
}

impl Plan {
    fn from_environment(fault: Fault, clients: u64) -> Plan {
        Plan {
            fault,
            faults: environment("LEASEHOLD_HISTORY_CRASHES").unwrap_or(1).max(1),
            phase: Duration::from_millis(environment("LEASEHOLD_HISTORY_PHASE_MS").unwrap_or(PHASE_MS)),
            pause: Duration::from_millis(environment("LEASEHOLD_HISTORY_PAUSE_MS").unwrap_or(PAUSE_MS)),
            clients,
            seed: environment("LEASEHOLD_HISTORY_SEED").unwrap_or(0),
            sessions: false,
        }
    }

    /// The node each fault hits: they rotate over the nodes, and the seed picks the first.
    fn victims(&self, nodes: usize) -> Vec<usize> {
        (0..self.faults).map(|fault| ((self.seed + 1 + fault) % nodes as u64) as usize).collect()
    }
}

/// The engine processes the clients talk to.
enum Engines {
    Single(EngineProcess),
    Cluster(LocalCluster),
    /// A cluster whose nodes run in the namespaces of `lab` (dropped after the cluster,
    /// so the engines stop before their namespaces go).
    InLab {
        cluster: LocalCluster,
        lab: NetworkLab,
    },
}

impl Engines {
    /// Client addresses by node id.
    fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            Engines::Single(engine) => vec![engine.address],
            Engines::Cluster(cluster) | Engines::InLab { cluster, .. } => cluster.addresses.clone(),
        }
    }

    fn node(&mut self, node: usize) -> &mut EngineProcess {
        match self {
            Engines::Single(engine) => engine,
            Engines::Cluster(cluster) | Engines::InLab { cluster, .. } => &mut cluster.nodes[node],
        }
    }

    fn wait_until_synced(&self) {
        if let Engines::Cluster(cluster) | Engines::InLab { cluster, .. } = self {
            cluster.wait_until_synced(SYNC_TIMEOUT);
        }
    }

    /// The network namespace a client of node `node` runs in (none: the test's own).
    fn namespace_of(&self, node: usize) -> Option<String> {
        match self {
            Engines::InLab { lab, .. } => Some(lab.namespace(node)),
            _ => None,
        }
    }

    fn lab(&self) -> &NetworkLab {
        match self {
            Engines::InLab { lab, .. } => lab,
            _ => panic!("only nodes in a network lab can be partitioned"),
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(status.map(|status| status.success()).unwrap_or(false), "kill -{name} {pid}");
}

/// One transaction as a client saw it.
struct Recorded {
    transaction: Transaction,
    /// As sent (re-sends send it again unchanged).
    invocation: Invocation,
    result: Option<InvokeResult>,
    /// Sent more than once: a connection broke under it, or it was refused with `retry`.
    retried: bool,
}

/// What one client did.
struct ClientRun {
    recorded: Vec<Recorded>,
    /// Acknowledged requests sent again after a retry, each answered with its first
    /// outcome.
    resent_acknowledged: usize,
    /// Answers `retry` (an epoch rolled back), and invocations lost with a connection.
    retry_rejections: usize,
    broken_connections: usize,
}

fn environment(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|text| text.parse().ok())
}

fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A client's way to the engines: a connection to its home node while that node takes
/// connections, to the next node otherwise (in a cluster any node serves any request,
/// and a request id meets its first outcome through any node).
struct Link {
    addresses: Vec<SocketAddr>,
    home: usize,
    /// The node the connection goes to, or goes to next.
    node: usize,
    connection: Option<BlockingClient>,
    retry_rejections: usize,
    broken_connections: usize,
}

impl Link {
    fn new(addresses: Vec<SocketAddr>, home: usize) -> Link {
        Link { addresses, home, node: home, connection: None, retry_rejections: 0, broken_connections: 0 }
    }

    /// Moves back to the home node once it takes connections again, so that a restarted
    /// node gets its share of the load.
    fn go_home(&mut self) {
        if self.node != self.home {
            if let Ok(connection) = BlockingClient::connect(self.addresses[self.home]) {
                (self.node, self.connection) = (self.home, Some(connection));
            }
        }
    }

    fn next_node(&mut self) {
        self.node = (self.node + 1) % self.addresses.len();
    }

    /// Sends `invocation` until a final reply comes, reconnecting (to the next node when
    /// one is gone) as needed; `None` when no node answered before the deadline. The flag
    /// says whether it was sent more than once (a connection broke, or the engine asked
    /// for a retry after rolling an epoch back).
    fn invoke_until_answered(&mut self, invocation: &Invocation) -> (Option<InvokeResult>, bool) {
        let deadline = Instant::now() + RETRY_DEADLINE;
        let mut again = false;
        loop {
            if self.connection.is_none() {
                match BlockingClient::connect(self.addresses[self.node]) {
                    Ok(connection) => self.connection = Some(connection),
                    Err(_) => self.next_node(),
                }
            }
            if let Some(connection) = self.connection.as_ref() {
                match connection.invoke(invocation.clone()) {
                    // The epoch was rolled back and nothing happened: the same id is sent
                    // again (the node takes it once its cluster agreed on a view).
                    Ok(InvokeResult::Rejected { kind: RejectionKind::Retry, .. }) => {
                        self.retry_rejections += 1;
                        again = true;
                    }
                    Ok(result) => return (Some(result), again),
                    // The request may or may not have run; only its id makes sending it again safe.
                    Err(_) => {
                        self.connection = None;
                        self.broken_connections += 1;
                        self.next_node();
                        again = true;
                    }
                }
            }
            if Instant::now() > deadline {
                return (None, again);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run_client(
    addresses: Vec<SocketAddr>,
    client: u64,
    plan: Plan,
    start: Instant,
    stop: Arc<AtomicBool>,
    transactions: Arc<AtomicU64>,
    namespace: Option<String>,
) -> ClientRun {
    if let Some(namespace) = namespace {
        // Beside its home node, as that node's application would run.
        enter_namespace(&namespace).expect("enter the home node's namespace");
    }
    let home = (client % addresses.len() as u64) as usize;
    let session = plan.sessions.then(|| {
        let node = BlockingClient::connect(addresses[home]).expect("connect to open a session");
        node.open_session().expect("open a session")
    });
    let mut link = Link::new(addresses, home);
    let mut generator = Generator::new(client, plan.seed, transactions);
    let mut recorded: Vec<Recorded> = Vec::new();
    let mut resent_acknowledged = 0;
    let mut last_acknowledged_list: Option<usize> = None;
    for sequence in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        link.go_home();
        let request = generator.next();
        let request_id = format!("h{client}-{sequence}");
        let invocation = request.invocation(&request_id, session, sequence);
        let invoked_at = nanos_since(start);
        let (result, retried) = link.invoke_until_answered(&invocation);
        let completed_at = result.as_ref().map(|_| nanos_since(start));
        let (outcome, output) = match &result {
            Some(InvokeResult::Committed { output, .. }) => (Outcome::Committed, Some(output.as_slice())),
            Some(InvokeResult::Aborted { .. }) => (Outcome::Aborted, None),
            Some(rejected @ InvokeResult::Rejected { .. }) => panic!("{request_id} was refused: {rejected:?}"),
            None => (Outcome::Unknown, None),
        };
        let transaction = Transaction {
            client,
            request_id: request_id.clone(),
            invoked_at,
            completed_at,
            outcome,
            operations: request.operations(output),
        };
        if retried {
            // After a retry, the last acknowledged list request must still be answered
            // with its first outcome (through whichever node the client reached), and
            // not run again.
            if let Some(index) = last_acknowledged_list {
                let earlier: &Recorded = &recorded[index];
                let (again, _) = link.invoke_until_answered(&earlier.invocation);
                assert_eq!(
                    again, earlier.result,
                    "{} answered again with its first outcome",
                    earlier.transaction.request_id
                );
                resent_acknowledged += 1;
            }
        }
        if result.is_some() && request.is_list() {
            last_acknowledged_list = Some(recorded.len());
        }
        recorded.push(Recorded { transaction, invocation, result, retried });
    }
    ClientRun {
        recorded,
        resent_acknowledged,
        retry_rejections: link.retry_rejections,
        broken_connections: link.broken_connections,
    }
}

/// What the run produced: the history and where the faults fell in it.
struct Run {
    history: Vec<Transaction>,
    /// Indices of transactions whose request id was sent more than once (retried after a
    /// broken connection or a `retry`, or re-sent after its acknowledgement): where a
    /// broken ledger would apply a request twice.
    resent: Vec<usize>,
    /// When the first fault began (SIGKILL or SIGSTOP) and ended (restarted or SIGCONT).
    fault_at: u64,
    recovered_at: u64,
    /// Acknowledged requests sent again by the clients after a retry during the load.
    resent_in_load: usize,
    /// Acknowledged requests sent again (during the load, and after it through another
    /// node), each answered with its first outcome.
    resent_acknowledged: usize,
    /// Requests sent more than once because a connection broke under them or they were
    /// refused with `retry`.
    retried: usize,
    retry_rejections: usize,
    broken_connections: usize,
}

/// Sets up testkit, runs the workload with the plan's faults in the middle, re-sends a
/// sample of acknowledged requests, and ends with a final read of every key through every
/// node.
fn record_history(engines: &mut Engines, plan: &Plan, context: &str) -> Run {
    let addresses = engines.addresses();
    let nodes = addresses.len();
    // A plugin deployed on one node reaches every node of a cluster.
    let setup = BlockingClient::connect(addresses[0]).expect("connect");
    setup.deploy_plugin(&plugin_bytes("testkit")).expect("deploy testkit");
    let negative = Program { steps: [vec![Op::Set(NEGATIVE_CELL, -1)], vec![], vec![]] };
    let result = setup
        .invoke(Invocation::encoded("testkit", "program", leasehold_sdk::encode(&negative).expect("encode")))
        .expect("set the negative cell");
    assert!(result.is_committed(), "{result:?}");
    drop(setup);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let transactions = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..plan.clients)
        .map(|client| {
            let (addresses, plan, stop, transactions) = (addresses.clone(), *plan, stop.clone(), transactions.clone());
            let namespace = engines.namespace_of((client % nodes as u64) as usize);
            std::thread::spawn(move || run_client(addresses, client, plan, start, stop, transactions, namespace))
        })
        .collect();
    // The planted bugs are placed around the first fault.
    let (mut fault_at, mut recovered_at) = (None, None);
    for victim in plan.victims(nodes) {
        std::thread::sleep(plan.phase);
        let process = engines.node(victim);
        match plan.fault {
            Fault::Kill => {
                fault_at.get_or_insert(nanos_since(start));
                process.kill();
                // Clients find the engine gone and keep retrying for a while.
                std::thread::sleep(Duration::from_millis(200));
                process.restart();
            }
            Fault::Pause => {
                let pid = process.pid();
                signal(pid, "STOP");
                // Taken once the node is stopped: starting `kill` takes long enough on a
                // busy machine for every client to finish the request it had out before.
                fault_at.get_or_insert(nanos_since(start));
                std::thread::sleep(plan.pause);
                // Taken before the node resumes, so that the fault's span is the time it
                // was stopped.
                recovered_at.get_or_insert(nanos_since(start));
                signal(pid, "CONT");
            }
            Fault::Partition => {
                let lab = engines.lab();
                lab.partition(victim).expect("cut the node's link");
                fault_at.get_or_insert(nanos_since(start));
                std::thread::sleep(plan.pause);
                recovered_at.get_or_insert(nanos_since(start));
                lab.heal(victim).expect("restore the node's link");
            }
        }
        recovered_at.get_or_insert(nanos_since(start));
    }
    let (fault_at, recovered_at) = (fault_at.unwrap_or_default(), recovered_at.unwrap_or_default());
    std::thread::sleep(plan.phase);
    stop.store(true, Ordering::Relaxed);

    let mut recorded: Vec<Recorded> = Vec::new();
    let (mut resent_in_load, mut retry_rejections, mut broken_connections) = (0, 0, 0);
    for client in clients {
        let run = client.join().expect("client thread");
        resent_in_load += run.resent_acknowledged;
        retry_rejections += run.retry_rejections;
        broken_connections += run.broken_connections;
        recorded.extend(run.recorded);
    }
    engines.wait_until_synced();

    // Every request retried during the load, and every 20th other one, is sent once more,
    // through another node than its client's: each must come back with its first outcome
    // and run no second time. Unknown ones are left to the test to report.
    let mut links: Vec<Link> = (0..nodes).map(|node| Link::new(addresses.clone(), node)).collect();
    let retried = recorded.iter().filter(|entry| entry.retried).count();
    let mut resent = Vec::new();
    let mut resent_acknowledged = resent_in_load;
    for (index, entry) in recorded.iter().enumerate() {
        if entry.result.is_some() && (entry.retried || index % 20 == 0) {
            let node = (entry.transaction.client as usize + 1) % nodes;
            let (again, _) = links[node].invoke_until_answered(&entry.invocation);
            assert_eq!(
                again, entry.result,
                "{context}: {} answered again through node {node}",
                entry.transaction.request_id
            );
            resent_acknowledged += 1;
            resent.push(index);
        }
    }
    let mut history: Vec<Transaction> = recorded.into_iter().map(|entry| entry.transaction).collect();

    // The final read through every node: every list key ever used (in transactions of at
    // most LIST_OPS_MAX reads), then every cell. Nodes must agree.
    let keys_used = transactions.load(Ordering::Relaxed) / KEY_LIFETIME + LIST_KEYS;
    let keys: Vec<u64> = (0..keys_used).collect();
    let mut seen_through: Vec<Vec<Operation>> = Vec::new();
    for (node, link) in links.iter_mut().enumerate() {
        let mut operations = Vec::new();
        for (chunk, keys) in keys.chunks(LIST_OPS_MAX).enumerate() {
            let request_id = format!("final-lists-{node}-{chunk}");
            let final_lists =
                Request::List(ListTransaction { ops: keys.iter().map(|key| ListOp::Read(*key)).collect() });
            let invoked_at = nanos_since(start);
            let (lists, _) = link.invoke_until_answered(&final_lists.invocation(&request_id, None, 0));
            let Some(InvokeResult::Committed { output, .. }) = &lists else {
                panic!("{context}: the final read through node {node} must commit: {lists:?}")
            };
            let read = final_lists.operations(Some(output));
            operations.extend(read.iter().cloned());
            history.push(Transaction {
                client: plan.clients,
                request_id,
                invoked_at,
                completed_at: Some(nanos_since(start)),
                outcome: Outcome::Committed,
                operations: read,
            });
        }
        let final_cells = Program { steps: [(0..CELLS).map(Op::Read).collect(), vec![], vec![]] };
        let invoked_at = nanos_since(start);
        let request_id = format!("final-cells-{node}");
        let invocation =
            Invocation::encoded("testkit", "program", leasehold_sdk::encode(&final_cells).expect("encode"))
                .with_request_id(request_id.as_bytes().to_vec());
        let (cells, _) = link.invoke_until_answered(&invocation);
        let Some(InvokeResult::Committed { output, .. }) = &cells else {
            panic!("{context}: the final read through node {node} must commit: {cells:?}")
        };
        let values: Vec<i64> = leasehold_sdk::decode(output).expect("program outputs its reads");
        let read: Vec<Operation> = (0..CELLS)
            .zip(values)
            .map(|(cell, value)| Operation::Read {
                key: REGISTER_KEY_BASE + Key::from(cell),
                value: (value != 0).then_some(value as Value),
            })
            .collect();
        operations.extend(read.iter().cloned());
        history.push(Transaction {
            client: plan.clients,
            request_id,
            invoked_at,
            completed_at: Some(nanos_since(start)),
            outcome: Outcome::Committed,
            operations: read,
        });
        seen_through.push(operations);
    }
    for (node, operations) in seen_through.iter().enumerate() {
        let differing = operations.iter().zip(&seen_through[0]).find(|(here, there)| here != there);
        assert!(
            differing.is_none() && operations.len() == seen_through[0].len(),
            "{context}: the final reads through node {node} and node 0 disagree: {differing:?}"
        );
    }
    Run {
        history,
        resent,
        fault_at,
        recovered_at,
        resent_in_load,
        resent_acknowledged,
        retried,
        retry_rejections,
        broken_connections,
    }
}

/// What [`verify`] measured of a clean run.
struct Verified {
    report: Report,
    checked_in: Duration,
    committed_appends: usize,
    /// Requests invoked before the first fault and answered after it ended.
    in_flight: usize,
    /// Requests answered while the first fault lasted (while a node was down or stopped),
    /// and how long after it began the last of them was answered.
    answered_during: usize,
    last_answer_into_fault: Duration,
}

/// Why a run says little about its fault: no request was in flight across it, or (for a
/// crash) none was retried and re-sent. Whether the fault lands on requests in flight is
/// a matter of timing on a loaded machine, so such a run is recorded again (see
/// [`record_meeting_the_fault`]) rather than failed; `verify` still insists.
fn missed_the_fault(run: &Run, plan: &Plan) -> Option<&'static str> {
    let in_flight = run.history.iter().any(|transaction| {
        transaction.invoked_at < run.fault_at && transaction.completed_at.is_some_and(|at| at > run.recovered_at)
    });
    if !in_flight {
        return Some("no request was in flight across the fault");
    }
    if plan.fault == Fault::Kill && (run.retried == 0 || run.resent_in_load == 0) {
        return Some("no request was retried and re-sent after the crash");
    }
    None
}

/// How many times a run that missed its fault is recorded before `verify` fails it.
const ATTEMPTS_TO_MEET_THE_FAULT: usize = 3;

/// Starts engines with `start` and records a history, again with fresh engines (up to
/// [`ATTEMPTS_TO_MEET_THE_FAULT`] runs) while the fault misses the requests in flight.
fn record_meeting_the_fault(
    mut start: impl FnMut() -> (tempfile::TempDir, Engines),
    plan: &Plan,
    context: &str,
) -> (tempfile::TempDir, Engines, Run) {
    let mut attempt = 1;
    loop {
        let (directory, mut engines) = start();
        let run = record_history(&mut engines, plan, context);
        match missed_the_fault(&run, plan) {
            Some(why) if attempt < ATTEMPTS_TO_MEET_THE_FAULT => {
                println!("{context}: run {attempt} missed the fault ({why}); recording again with fresh engines");
                attempt += 1;
            }
            _ => return (directory, engines, run),
        }
    }
}

/// The checks every run must pass: every request answered, no anomaly, and the final
/// lists hold every committed append exactly once and nothing else. `context` names the
/// run in failure messages (fabric, fault, seed, faulted nodes).
fn verify(run: &Run, plan: &Plan, context: &str) -> Verified {
    let history = &run.history;
    let unknown: Vec<&str> = history
        .iter()
        .filter(|transaction| transaction.outcome == Outcome::Unknown)
        .map(|transaction| transaction.request_id.as_str())
        .collect();
    assert!(unknown.is_empty(), "{context}: requests never answered within {RETRY_DEADLINE:?}: {unknown:?}");
    let distinct: HashSet<&str> = history.iter().map(|transaction| transaction.request_id.as_str()).collect();
    assert_eq!(distinct.len(), history.len(), "request ids are unique");

    let checked = Instant::now();
    let report = check(history).expect("the recorded history is well-formed");
    let checked_in = checked.elapsed();
    assert!(report.is_clean(), "{context}: the history has anomalies:\n{report}");
    // A clean history means something only if the workload ran and met the fault.
    assert!(report.committed > 300 && report.aborted > 10, "{context}: the workload ran: {report}");
    assert!(report.dependencies.read_write > 0 && report.dependencies.write_read > 0, "{context}: {report}");
    let in_flight = history
        .iter()
        .filter(|transaction| {
            transaction.invoked_at < run.fault_at && transaction.completed_at.is_some_and(|at| at > run.recovered_at)
        })
        .count();
    assert!(in_flight > 0, "{context}: the fault hit requests in flight, which were answered after it");
    if plan.fault == Fault::Kill {
        assert!(run.retried > 0, "{context}: requests were retried under their ids after the crash");
        assert!(run.resent_in_load > 0, "{context}: clients re-sent acknowledged requests after a retry");
    }
    let answered_during: Vec<u64> = history
        .iter()
        .filter_map(|transaction| transaction.completed_at)
        .filter(|at| (run.fault_at..run.recovered_at).contains(at))
        .collect();
    let last_answer_into_fault = Duration::from_nanos(answered_during.iter().max().map_or(0, |at| at - run.fault_at));
    let answered_during = answered_during.len();

    // No acknowledged append lost, none applied twice, no aborted one applied: the final
    // lists hold every committed append exactly once and nothing else.
    let lists = final_lists(history);
    let mut occurrences: HashMap<(Key, Value), usize> = HashMap::new();
    for (key, values) in &lists {
        for value in values {
            *occurrences.entry((*key, *value)).or_default() += 1;
        }
    }
    let mut committed_appends = 0;
    for transaction in history {
        for append in appends(transaction) {
            let expected = usize::from(committed(transaction));
            assert_eq!(
                occurrences.remove(&append).unwrap_or(0),
                expected,
                "{context}: {append:?} of {} ({:?}) in the final lists",
                transaction.request_id,
                transaction.outcome
            );
            committed_appends += expected;
        }
    }
    assert!(occurrences.is_empty(), "{context}: the lists hold values nobody appended: {occurrences:?}");
    Verified { report, checked_in, committed_appends, in_flight, answered_during, last_answer_into_fault }
}

/// The appends of a transaction.
fn appends(transaction: &Transaction) -> impl Iterator<Item = (Key, Value)> + '_ {
    transaction.operations.iter().filter_map(|operation| match operation {
        Operation::Append { key, value } => Some((*key, *value)),
        _ => None,
    })
}

/// The final list of every key, from the final reads.
fn final_lists(history: &[Transaction]) -> HashMap<Key, Vec<Value>> {
    history
        .iter()
        .filter(|transaction| transaction.request_id.starts_with("final-lists"))
        .flat_map(|transaction| &transaction.operations)
        .filter_map(|operation| match operation {
            Operation::ReadList { key, values } => Some((*key, values.clone())),
            _ => None,
        })
        .collect()
}

/// Which transaction appended each list value.
fn appenders(history: &[Transaction]) -> HashMap<(Key, Value), usize> {
    history
        .iter()
        .enumerate()
        .flat_map(|(index, transaction)| appends(transaction).map(move |kv| (kv, index)))
        .collect()
}

/// The list reads of a transaction, by position among its operations.
fn list_reads(transaction: &Transaction) -> impl Iterator<Item = (usize, Key, &Vec<Value>)> + '_ {
    transaction.operations.iter().enumerate().filter_map(|(position, operation)| match operation {
        Operation::ReadList { key, values } => Some((position, *key, values)),
        _ => None,
    })
}

/// The list read of `key` at `position` of transaction `index`, to change it.
fn read_mut(history: &mut [Transaction], index: usize, position: usize) -> &mut Vec<Value> {
    match &mut history[index].operations[position] {
        Operation::ReadList { values, .. } => values,
        other => panic!("not a list read: {other:?}"),
    }
}

/// Whether `transaction` appended to `key` before operation `position`.
fn appended_before(transaction: &Transaction, key: Key, position: usize) -> bool {
    transaction.operations[..position]
        .iter()
        .any(|operation| matches!(operation, Operation::Append { key: appended, .. } if *appended == key))
}

fn committed(transaction: &Transaction) -> bool {
    transaction.outcome == Outcome::Committed
}

/// A planted bug: a name, how it changes the history, and the anomaly that shows it.
struct Planted {
    bug: &'static str,
    history: Vec<Transaction>,
    /// What the checker must report, in words.
    expected: &'static str,
    caught_by: Box<dyn Fn(&Anomaly) -> bool>,
}

/// An anomaly of one of `kinds` that names transaction `index`.
fn naming(kinds: &'static [AnomalyKind], index: usize) -> Box<dyn Fn(&Anomaly) -> bool> {
    Box::new(move |anomaly| kinds.contains(&anomaly.kind()) && anomaly.transactions().contains(&index))
}

/// A reply sent before the epoch was durable: the last append acknowledged before the
/// crash is gone after the restart, from every read invoked after it.
fn plant_lost_acknowledged_write(run: &Run) -> Planted {
    let history = &run.history;
    let (writer, key, value) = history
        .iter()
        .enumerate()
        .filter(|(_, transaction)| {
            committed(transaction) && transaction.completed_at.is_some_and(|at| at < run.fault_at)
        })
        .flat_map(|(index, transaction)| appends(transaction).map(move |(key, value)| (index, key, value)))
        .max_by_key(|(index, _, _)| history[*index].completed_at)
        .expect("appends were acknowledged before the crash");
    let mut mutated = history.clone();
    for transaction in mutated.iter_mut().filter(|transaction| transaction.invoked_at > run.recovered_at) {
        for operation in &mut transaction.operations {
            if let Operation::ReadList { key: read_key, values } = operation {
                if *read_key == key {
                    values.retain(|element| *element != value);
                }
            }
        }
    }
    Planted {
        bug: "reply before durability: an acknowledged append lost in the crash",
        history: mutated,
        expected: "a lost write (or stale read) of the writer's append",
        caught_by: naming(&[AnomalyKind::LostWrite, AnomalyKind::StaleRead], writer),
    }
}

/// A retried request id applied twice: its append shows up again at the position the
/// list had reached by the restart, in every read that reaches past that position.
fn plant_retry_applied_twice(run: &Run) -> Planted {
    let history = &run.history;
    let lists = final_lists(history);
    let (key, value, first) = run
        .resent
        .iter()
        .filter(|index| committed(&history[**index]))
        .flat_map(|index| appends(&history[*index]))
        .filter_map(|(key, value)| {
            let order = &lists[&key];
            let first = order.iter().position(|element| *element == value)?;
            // The final read must reach past the second copy.
            (first + 1 < order.len()).then_some((key, value, first))
        })
        .next()
        .expect("a re-sent request appended something that others appended after");
    // Where the list stood at the restart: the longest read of it invoked before then.
    let at_restart = history
        .iter()
        .filter(|transaction| committed(transaction) && transaction.invoked_at < run.recovered_at)
        .flat_map(|transaction| {
            list_reads(transaction).filter(|(_, read, _)| *read == key).map(|(_, _, values)| values.len())
        })
        .max()
        .unwrap_or(0);
    let position = at_restart.clamp(first + 1, lists[&key].len() - 1);
    let mut mutated = history.clone();
    for transaction in &mut mutated {
        for operation in &mut transaction.operations {
            if let Operation::ReadList { key: read_key, values } = operation {
                // Shorter reads stay prefixes of the longer ones.
                if *read_key == key && values.len() > position {
                    values.insert(position, value);
                }
            }
        }
    }
    Planted {
        bug: "a retried request id applied a second time",
        history: mutated,
        expected: "duplicate elements: the re-sent append twice in a list",
        caught_by: Box::new(move |anomaly| match anomaly {
            Anomaly::DuplicateElements { key: found, value: twice, count, .. } => {
                (*found, *twice, *count) == (key, value, 2)
            }
            _ => false,
        }),
    }
}

/// Two committed transactions whose accesses cross: `second` read key k (at
/// `position_k`) ending with an append of `first`, and `first` read key j (at
/// `position_j`) without `value_j`, an append of `second` to j that lies `gap` elements
/// after what `first` read.
struct CrossedPair {
    first: usize,
    second: usize,
    position_k: usize,
    position_j: usize,
    value_j: Value,
    gap: usize,
}

fn crossed_pairs(history: &[Transaction]) -> Vec<CrossedPair> {
    let appenders = appenders(history);
    let lists = final_lists(history);
    let mut pairs = Vec::new();
    for (second, later) in history.iter().enumerate().filter(|(_, transaction)| committed(transaction)) {
        for (position_k, key_k, values_k) in list_reads(later) {
            let Some(last) = values_k.last() else { continue };
            let Some(&first) = appenders.get(&(key_k, *last)) else { continue };
            let earlier = &history[first];
            if first == second || !committed(earlier) || appended_before(later, key_k, position_k) {
                continue;
            }
            for (position_j, key_j, values_j) in list_reads(earlier) {
                let order = &lists[&key_j];
                if appended_before(earlier, key_j, position_j) || !order.starts_with(values_j) {
                    continue;
                }
                for (_, value_j) in appends(later).filter(|(key, _)| *key == key_j) {
                    let Some(at) = order.iter().position(|element| *element == value_j) else { continue };
                    if at >= values_j.len() {
                        let gap = at - values_j.len();
                        pairs.push(CrossedPair { first, second, position_k, position_j, value_j, gap });
                    }
                }
            }
        }
    }
    pairs
}

/// A task precedence graph that misses the conflict on key k between an earlier and a
/// later transaction: the later one runs on the list as it was before the earlier one's
/// append, although the earlier one is serialized first (it read key j before the later
/// one appended to it). The two now form write skew: G2.
fn plant_stale_read_write_skew(run: &Run) -> Planted {
    let pairs = crossed_pairs(&run.history);
    let pair = pairs.first().expect("the recorded history has crossed pairs");
    let mut mutated = run.history.clone();
    read_mut(&mut mutated, pair.second, pair.position_k).pop();
    Planted {
        bug: "a TPG that misses a write: a stale read makes write skew",
        history: mutated,
        expected: "G2 through the stale reader",
        caught_by: naming(&[AnomalyKind::G2], pair.second),
    }
}

/// A task precedence graph that runs the later transaction's append to key j before the
/// earlier one reads j, though the later one read the earlier one's append to key k: each
/// saw the other, which is circular information flow.
fn plant_circular_information_flow(run: &Run) -> Planted {
    let pairs = crossed_pairs(&run.history);
    let pair = pairs.iter().find(|pair| pair.gap == 0).expect("the recorded history has adjacent crossed pairs");
    let mut mutated = run.history.clone();
    read_mut(&mut mutated, pair.first, pair.position_j).push(pair.value_j);
    Planted {
        bug: "a TPG that lets a later write reach an earlier reader: circular information flow",
        history: mutated,
        expected: "G1c through the early reader",
        caught_by: naming(&[AnomalyKind::G1c], pair.first),
    }
}

/// A task precedence graph that lets two appenders of one key run on the same version:
/// the second overwrites the list without the first's append (a lost update).
fn plant_lost_update(run: &Run) -> Planted {
    let history = &run.history;
    let appenders = appenders(history);
    let lists = final_lists(history);
    let (key, lost, overwriter) = lists
        .iter()
        .flat_map(|(key, order)| order.windows(2).map(move |pair| (*key, pair[0], pair[1])))
        .filter(|(key, first, second)| appenders[&(*key, *first)] != appenders[&(*key, *second)])
        .min()
        .expect("two transactions appended to one key");
    let writer = appenders[&(key, lost)];
    let mut mutated = history.clone();
    for transaction in &mut mutated {
        for operation in &mut transaction.operations {
            if let Operation::ReadList { key: read_key, values } = operation {
                if *read_key == key && values.contains(&overwriter) {
                    values.retain(|element| *element != lost);
                }
            }
        }
    }
    Planted {
        bug: "a TPG that misses a write-write conflict: a lost update",
        history: mutated,
        expected: "a lost write (or stale read) of the overwritten append",
        caught_by: naming(&[AnomalyKind::LostWrite, AnomalyKind::StaleRead], writer),
    }
}

/// An abort that leaves a trace: a transaction whose append others read is reported
/// aborted (its buffered writes reached the slots anyway).
fn plant_aborted_write_visible(run: &Run) -> Planted {
    let history = &run.history;
    let appenders = appenders(history);
    let writer = history
        .iter()
        .enumerate()
        .filter(|(_, transaction)| committed(transaction))
        .flat_map(|(reader, transaction)| {
            list_reads(transaction)
                .flat_map(move |(_, key, values)| values.iter().map(move |value| (reader, key, *value)))
        })
        .filter_map(|(reader, key, value)| appenders.get(&(key, value)).filter(|writer| **writer != reader))
        .copied()
        .next()
        .expect("some transaction read another's append");
    let mut mutated = history.clone();
    mutated[writer].outcome = Outcome::Aborted;
    Planted {
        bug: "an aborted transaction's writes became visible",
        history: mutated,
        expected: "G1a naming the aborted writer",
        caught_by: naming(&[AnomalyKind::G1a], writer),
    }
}

/// Writes of a half-run transaction visible: a reader sees the first of two appends a
/// transaction made to one key.
fn plant_intermediate_read(run: &Run) -> Planted {
    let history = &run.history;
    let appenders = appenders(history);
    let (reader, position) = history
        .iter()
        .enumerate()
        .filter(|(_, transaction)| committed(transaction))
        .flat_map(|(index, transaction)| {
            list_reads(transaction).map(move |(position, key, values)| (index, position, key, values))
        })
        .find(|(reader, position, key, values)| {
            let [.., before, last] = values.as_slice() else { return false };
            let writer = appenders.get(&(*key, *last));
            writer.is_some_and(|writer| {
                writer != reader
                    && appenders.get(&(*key, *before)) == Some(writer)
                    && !appended_before(&history[*reader], *key, *position)
            })
        })
        .map(|(reader, position, _, _)| (reader, position))
        .expect("a reader saw a transaction's second append to one key");
    let mut mutated = history.clone();
    read_mut(&mut mutated, reader, position).pop();
    Planted {
        bug: "a half-run transaction's first write became visible",
        history: mutated,
        expected: "G1b naming the reader",
        caught_by: naming(&[AnomalyKind::G1b], reader),
    }
}

/// The same single-engine history with each client's requests tracked by a client
/// session instead of request ids: retries after the crashes, and the re-sends of
/// acknowledged requests, must get their first outcomes from the sessions the engine
/// restored.
#[test]
fn a_crashed_and_restarted_engine_keeps_a_clean_history_with_client_sessions() {
    let plan = Plan { sessions: true, ..Plan::from_environment(Fault::Kill, CLIENTS) };
    let context = format!("one engine, client sessions, SIGKILL x{}, seed {}", plan.faults, plan.seed);
    let start = || {
        let directory = tempfile::tempdir().expect("temporary directory");
        let engines = Engines::Single(EngineProcess::start(&directory.path().join("node"), &[]));
        (directory, engines)
    };
    let (_directory, _engines, run) = record_meeting_the_fault(start, &plan, &context);
    let Verified { report, committed_appends, in_flight, .. } = verify(&run, &plan, &context);
    println!(
        "history ({context}): {report}{committed_appends} committed appends each exactly once in the final lists; \
         {in_flight} requests in flight at the first crash and {} in all retried in their sessions; {} acknowledged \
         requests re-sent and answered with their first outcome",
        run.retried, run.resent_acknowledged
    );
}

#[test]
fn a_crashed_and_restarted_engine_keeps_a_clean_history_and_the_checker_catches_planted_bugs() {
    let plan = Plan::from_environment(Fault::Kill, CLIENTS);
    let context = format!("one engine, SIGKILL x{}, seed {}", plan.faults, plan.seed);
    let started = Instant::now();
    let start = || {
        let directory = tempfile::tempdir().expect("temporary directory");
        let engines = Engines::Single(EngineProcess::start(&directory.path().join("node"), &[]));
        (directory, engines)
    };
    let (_directory, _engines, run) = record_meeting_the_fault(start, &plan, &context);
    let recorded_in = started.elapsed();
    let Verified { report, checked_in, committed_appends, in_flight, .. } = verify(&run, &plan, &context);

    let planted = [
        plant_lost_acknowledged_write(&run),
        plant_retry_applied_twice(&run),
        plant_stale_read_write_skew(&run),
        plant_circular_information_flow(&run),
        plant_lost_update(&run),
        plant_aborted_write_visible(&run),
        plant_intermediate_read(&run),
    ];
    for plant in &planted {
        let report = check(&plant.history).expect("a planted history is well-formed");
        let Some(evidence) = report.anomalies.iter().find(|anomaly| (plant.caught_by)(anomaly)) else {
            panic!("{}: the checker did not report {}:\n{report}", plant.bug, plant.expected)
        };
        println!("planted: {} -> {:?}; e.g. {}", plant.bug, report.kinds(), report.explain(evidence));
    }

    println!(
        "history ({context}): {report}recorded in {recorded_in:?}, checked in {checked_in:?}; {committed_appends} \
         committed appends each exactly once in the final lists; {in_flight} requests in flight at the first crash \
         and {} in all retried under their ids; {} acknowledged requests re-sent and answered with their first \
         outcome; {} of {} planted bugs caught",
        run.retried,
        run.resent_acknowledged,
        planted.len(),
        planted.len()
    );
}

/// Records and checks a history of a three-node cluster over `fabric` with `fault` hitting
/// one node (rotating over the nodes when a long run asks for several faults), then checks
/// that the nodes agree on every key's holder and that nothing stayed lent or was fenced.
fn cluster_history(fabric: &str, fault: Fault) {
    let plan = Plan::from_environment(fault, CLUSTER_CLIENTS);
    let what = match fault {
        Fault::Kill => "SIGKILL and restart".to_string(),
        Fault::Pause => format!("SIGSTOP for {:?}", plan.pause),
        Fault::Partition => format!("network cut for {:?}", plan.pause),
    };
    let context = format!(
        "{NODES} nodes over {fabric}, {what} x{} of nodes {:?}, seed {}",
        plan.faults,
        plan.victims(NODES.into()),
        plan.seed
    );
    let started = Instant::now();
    let start = || {
        let directory = tempfile::tempdir().expect("temporary directory");
        let engines = if fault == Fault::Partition {
            let lab = NetworkLab::create(NODES.into()).expect("the caller checked that a lab can be built");
            // This thread talks to the nodes too (waits for the view, re-sends, final
            // reads, status): from node 0's namespace, which reaches every node but while
            // a cut lasts (when this thread only waits).
            enter_namespace(&lab.namespace(0)).expect("enter node 0's namespace");
            let cluster = LocalCluster::start_in_lab(directory.path(), &lab, fabric, &[]);
            Engines::InLab { cluster, lab }
        } else {
            Engines::Cluster(LocalCluster::start(directory.path(), NODES, fabric, &[]))
        };
        engines.wait_until_synced();
        (directory, engines)
    };
    let (_directory, engines, run) = record_meeting_the_fault(start, &plan, &context);
    let recorded_in = started.elapsed();
    let Verified { report, checked_in, committed_appends, in_flight, answered_during, last_answer_into_fault } =
        verify(&run, &plan, &context);

    // One holder per key after the faults: every node runs with the same lease table in
    // the same view, with nothing lent out and no write-back refused.
    let statuses: Vec<NodeStatus> = engines
        .addresses()
        .iter()
        .map(|address| BlockingClient::connect(*address).and_then(|client| client.status()).expect("status"))
        .collect();
    for status in &statuses {
        assert!(status.cluster_synced, "{context}: {status:?}");
        assert_eq!(status.cluster_nodes, NODES);
        assert_eq!(status.fabric, fabric);
        assert_eq!(status.lease_table_digest, statuses[0].lease_table_digest, "{context}: nodes agree on holders");
        assert_eq!(status.cluster_generation, statuses[0].cluster_generation, "{context}: nodes agree on the view");
        assert_eq!(status.leases_lent, 0, "{context}: no key stays lent out: {status:?}");
        assert_eq!(status.fenced_total, 0, "{context}: {status:?}");
    }
    let remote: u64 = statuses.iter().map(|status| status.remote_accesses).sum();
    assert!(remote > 0, "{context}: transactions used keys held by other nodes");
    let committed_by_node: Vec<u64> = statuses.iter().map(|status| status.committed_total).collect();
    let lease_moves: u64 = statuses.iter().map(|status| status.lease_moves_total).sum();

    println!(
        "history ({context}): {report}recorded in {recorded_in:?}, checked in {checked_in:?}; {committed_appends} \
         committed appends each exactly once in the final lists, read alike through every node; {in_flight} \
         requests in flight across the first fault and {answered_during} answered during it (the last \
         {last_answer_into_fault:?} into it); {} requests retried under their ids ({} `retry` answers, {} broken \
         connections); {} acknowledged requests re-sent ({} during the load) and answered with their first outcome; \
         commits by node since its last start {committed_by_node:?}, {remote} remote key accesses, {lease_moves} \
         leases moved by placement since the nodes' last start",
        run.retried, run.retry_rejections, run.broken_connections, run.resent_acknowledged, run.resent_in_load,
    );
}

#[test]
fn a_cluster_over_shm_keeps_a_clean_history_when_a_node_is_killed_and_restarted() {
    cluster_history("shm", Fault::Kill);
}

#[test]
fn a_cluster_over_tcp_keeps_a_clean_history_when_a_node_is_killed_and_restarted() {
    cluster_history("tcp", Fault::Kill);
}

#[test]
fn a_cluster_over_shm_keeps_a_clean_history_when_a_node_is_paused() {
    cluster_history("shm", Fault::Pause);
}

#[test]
fn a_cluster_over_tcp_keeps_a_clean_history_when_a_node_is_paused() {
    cluster_history("tcp", Fault::Pause);
}

/// A node's link is cut while its engine and clients keep running: the others wait for
/// it (no epoch runs without its batch), its own clients reach no one else, and after the
/// heal every request is answered, with the history as clean as under the other faults.
#[test]
fn a_cluster_over_tcp_keeps_a_clean_history_when_a_node_is_cut_off() {
    if let Err(reason) = NetworkLab::create(1) {
        println!("skipped: {reason}");
        return;
    }
    cluster_history("tcp", Fault::Partition);
}
