//! Network partitions: three engine processes over the tcp fabric, each in its own
//! network namespace of a [`NetworkLab`], under banking transfer load from clients inside
//! the nodes' namespaces. In the middle of the load node 2's link is cut (its engine and
//! its clients keep running, unlike a SIGSTOP) and healed again: once for 3 s, which TCP
//! rides out by retransmitting, and once for 13 s, longer than the tcp fabric's 10 s
//! response timeout, so that the peers' fabric connections give up on node 2 and have to
//! reconnect (and the ring sessions start afresh). A third test cuts only the link between
//! nodes 0 and 1 for 3 s: each still reaches node 2 (and its clients), but the two cannot
//! exchange their batches, so every node's epochs wait.
//!
//! What the cluster promises (README, "A local cluster"): when a node is gone the others
//! wait for it; nothing acknowledged is lost and nothing runs twice. So after the heal:
//! every request gets a final answer (committed or aborted for insufficient funds) within
//! a bound; every balance, read through every node, equals its initial balance plus each
//! committed transfer exactly once, and the sum is unchanged; a re-sent id returns its
//! first outcome through any node; the nodes agree on the view and the lease table, with
//! nothing lent out and no write-back fenced (no node was ever treated as dead, so no
//! zombie could try to write).
//!
//! The lab needs root and `ip netns`; elsewhere each test prints "skipped: <reason>".

use leasehold_client::{BlockingClient, Invocation, InvokeResult, RejectionKind};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::netns::{enter_namespace, NetworkLab};
use leasehold_integration::{banking_balances, plugin_bytes};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const ACCOUNTS: u64 = 300;
/// Small enough that some transfers abort for insufficient funds: aborted outcomes are
/// final answers too and must not move money.
const INITIAL: i64 = 500;
const CLIENTS_PER_NODE: usize = 2;
const BATCH: u64 = 20;
/// What a test cuts.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// A node's link to the switch: it reaches no one.
    Node(usize),
    /// The path between two nodes only.
    Between(usize, usize),
}

impl Cut {
    fn apply(self, lab: &NetworkLab) -> Result<(), String> {
        match self {
            Cut::Node(node) => lab.partition(node),
            Cut::Between(a, b) => lab.cut_between(a, b),
        }
    }

    fn heal(self, lab: &NetworkLab) -> Result<(), String> {
        match self {
            Cut::Node(node) => lab.heal(node),
            Cut::Between(a, b) => lab.heal_between(a, b),
        }
    }

    /// The node whose log the test prints.
    fn logged_node(self) -> usize {
        match self {
            Cut::Node(node) | Cut::Between(node, _) => node,
        }
    }
}
const LOAD_BEFORE: Duration = Duration::from_secs(2);
const LOAD_AFTER: Duration = Duration::from_secs(3);
/// How long after the heal every request must have its final answer.
const ANSWER_BOUND: Duration = Duration::from_secs(30);
/// Replies of epochs every node had made durable before the cut may still arrive just
/// after it; later ones would mean some node did not wait for node 2.
const CUT_GRACE: Duration = Duration::from_millis(500);

/// One transfer and its final outcome.
struct Request {
    id: Vec<u8>,
    transfer: Transfer,
    outcome: InvokeResult,
    /// Times it was sent (more than once after a `retry` or a lost connection).
    attempts: u32,
}

/// One batch as its client saw it.
struct Batch {
    client: usize,
    sent_at: Instant,
    answered_at: Instant,
}

#[derive(Default)]
struct ClientLog {
    requests: Vec<Request>,
    batches: Vec<Batch>,
    retry_rejections: u64,
    disconnects: u64,
}

fn transfer_invocation(id: &[u8], transfer: &Transfer) -> Invocation {
    Invocation::encoded("banking", "transfer", leasehold_sdk::encode(transfer).expect("encode transfer"))
        .with_request_id(id.to_vec())
}

/// Connects (from the calling thread's namespace), retrying until `give_up` is set.
fn connect_patiently(address: SocketAddr, give_up: &AtomicBool) -> Option<BlockingClient> {
    loop {
        match BlockingClient::connect(address) {
            Ok(client) => return Some(client),
            Err(_) if give_up.load(Ordering::Relaxed) => return None,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A client inside its node's namespace: batches of transfers with unique ids until
/// `stop`; each batch is sent again (same ids, the unanswered part) after `retry`
/// rejections or a lost connection until every transfer in it has a final outcome.
/// `give_up` (set when the test already failed) ends it with what it has.
fn run_client(
    namespace: String,
    address: SocketAddr,
    client: usize,
    case: &'static str,
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
) -> ClientLog {
    enter_namespace(&namespace).expect("enter the node's namespace");
    let mut log = ClientLog::default();
    let Some(mut connection) = connect_patiently(address, &give_up) else { return log };
    let mut next = leasehold_integration::seeded_numbers(client as u64 * 7919 + 17);
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut unanswered: Vec<(Vec<u8>, Transfer, u32)> = (0..BATCH)
            .map(|i| {
                let from = next(ACCOUNTS);
                let to = (from + 1 + next(ACCOUNTS - 1)) % ACCOUNTS;
                let id = format!("{case}-c{client}-b{batch}-r{i}").into_bytes();
                (id, Transfer { from, to, amount: 1 + next(100) as i64 }, 0)
            })
            .collect();
        let sent_at = Instant::now();
        while !unanswered.is_empty() {
            let invocations = unanswered.iter().map(|(id, transfer, _)| transfer_invocation(id, transfer)).collect();
            for (_, _, attempts) in &mut unanswered {
                *attempts += 1;
            }
            match connection.invoke_many(invocations) {
                Ok(results) => {
                    assert_eq!(results.len(), unanswered.len(), "one result per invocation");
                    let mut still = Vec::new();
                    for ((id, transfer, attempts), outcome) in unanswered.drain(..).zip(results) {
                        match outcome {
                            InvokeResult::Rejected { kind: RejectionKind::Retry, .. } => {
                                log.retry_rejections += 1;
                                still.push((id, transfer, attempts));
                            }
                            // Other rejections are final here; the checks refuse them.
                            outcome => log.requests.push(Request { id, transfer, outcome, attempts }),
                        }
                    }
                    unanswered = still;
                    if !unanswered.is_empty() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Err(error) => {
                    assert!(error.is_disconnected(), "client {client}: {error}");
                    log.disconnects += 1;
                    match connect_patiently(address, &give_up) {
                        Some(reconnected) => connection = reconnected,
                        None => return log,
                    }
                }
            }
            if give_up.load(Ordering::Relaxed) {
                return log;
            }
        }
        log.batches.push(Batch { client, sent_at, answered_at: Instant::now() });
    }
    log
}

/// Serializes the two tests: six engines and a dozen clients on a 2-core machine would
/// blur the stall figures each test reports.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn partition_mid_load(case: &'static str, cut: Cut, partition: Duration) {
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Declared before the cluster, so dropped after it: the engines die first, then their
    // namespaces go.
    let lab = match NetworkLab::create(NODES) {
        Ok(lab) => lab,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = LocalCluster::start_in_lab(directory.path(), &lab, "tcp", &[]);
    cluster.wait_until_synced(Duration::from_secs(60));

    let setup = cluster.connect(0).expect("connect to node 0");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking on node 0");
    for node in 1..NODES {
        let plugins = cluster.connect(node).expect("connect").list_plugins().expect("list plugins");
        assert!(plugins.iter().any(|p| p.name == "banking"), "node {node} has the plugin: {plugins:?}");
    }
    let open = Open { first: 0, count: ACCOUNTS, balance: INITIAL };
    let opened = cluster
        .connect(1)
        .expect("connect")
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");
    let generation_before = cluster.connect(0).expect("connect").status().expect("status").cluster_generation;

    let stop = Arc::new(AtomicBool::new(false));
    let give_up = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..NODES * CLIENTS_PER_NODE)
        .map(|client| {
            let node = client % NODES;
            let (namespace, address) = (lab.namespace(node), cluster.addresses[node]);
            let (stop, give_up) = (stop.clone(), give_up.clone());
            std::thread::spawn(move || run_client(namespace, address, client, case, stop, give_up))
        })
        .collect();

    std::thread::sleep(LOAD_BEFORE);
    let cut_at = Instant::now();
    cut.apply(&lab).unwrap_or_else(|error| panic!("{case}: cut {cut:?}: {error}"));
    std::thread::sleep(partition);
    cut.heal(&lab).unwrap_or_else(|error| panic!("{case}: heal {cut:?}: {error}"));
    let healed_at = Instant::now();
    std::thread::sleep(LOAD_AFTER);
    stop.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();

    // Every batch in flight gets its final answers within the bound, or the test fails
    // with what the nodes say about themselves.
    let deadline = healed_at + ANSWER_BOUND;
    while clients.iter().any(|client| !client.is_finished()) {
        if Instant::now() > deadline {
            give_up.store(true, Ordering::Relaxed);
            let statuses: Vec<String> = (0..NODES)
                .map(|node| match cluster.connect(node).and_then(|c| c.status()) {
                    Ok(status) => format!(
                        "node {node}: synced {} generation {} durable epoch {} committed {} lent {} fenced {}",
                        status.cluster_synced,
                        status.cluster_generation,
                        status.durable_epoch,
                        status.committed_total,
                        status.leases_lent,
                        status.fenced_total
                    ),
                    Err(error) => format!("node {node}: no status ({error})"),
                })
                .collect();
            let logs: Vec<String> = (0..NODES)
                .map(|node| format!("node {node} logged:\n{}", cluster.nodes[node].log_lines().join("\n")))
                .collect();
            panic!(
                "{case}: requests still unanswered {ANSWER_BOUND:?} after the heal; the cluster did not recover \
                 from a {partition:?} {cut:?}.\n{}\n{}",
                statuses.join("\n"),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<ClientLog> = clients.into_iter().map(|client| client.join().expect("client thread")).collect();
    let all_answered_at = Instant::now();

    let requests: Vec<&Request> = logs.iter().flat_map(|log| &log.requests).collect();
    let batches: Vec<&Batch> = logs.iter().flat_map(|log| &log.batches).collect();
    let retry_rejections: u64 = logs.iter().map(|log| log.retry_rejections).sum();
    let disconnects: u64 = logs.iter().map(|log| log.disconnects).sum();
    let resent = requests.iter().filter(|r| r.attempts > 1).count();

    // Final outcomes only: committed, or aborted by the plugin (insufficient funds).
    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    let (mut committed, mut aborted) = (0u64, 0u64);
    for request in &requests {
        match &request.outcome {
            InvokeResult::Committed { .. } => {
                committed += 1;
                expected[request.transfer.from as usize] -= request.transfer.amount;
                expected[request.transfer.to as usize] += request.transfer.amount;
            }
            // The only abort a transfer between opened accounts may meet; any other
            // (say "no account", from a value that never arrived) is a wrong answer.
            InvokeResult::Aborted { kind: leasehold_client::AbortKind::Logic, message, .. }
                if message.contains("insufficient funds") =>
            {
                aborted += 1
            }
            other => panic!("{case}: transfer {:?} ended with {other:?}", String::from_utf8_lossy(&request.id)),
        }
    }
    assert!(committed > 1000, "{case}: the load ran ({committed} committed)");

    // Exactly once, seen from the ids: every request sent more than once and every 10th
    // other one, re-sent through another node than its client's, returns its first
    // outcome (and, as the balances below show, runs nothing).
    let mut checked = 0;
    for node in 0..NODES {
        let through = cluster.connect((node + 1) % NODES).expect("connect for re-sends");
        let sample: Vec<&&Request> = requests
            .iter()
            .enumerate()
            .filter(|(index, request)| {
                let client: usize = String::from_utf8_lossy(&request.id)
                    .split("-c")
                    .nth(1)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|c| c.parse().ok())
                    .expect("ids name their client");
                client % NODES == node && (request.attempts > 1 || index % 10 == 0)
            })
            .map(|(_, request)| request)
            .collect();
        for chunk in sample.chunks(200) {
            let invocations = chunk.iter().map(|r| transfer_invocation(&r.id, &r.transfer)).collect();
            let again = through.invoke_many(invocations).expect("re-sends answer");
            for (request, result) in chunk.iter().zip(again) {
                assert_eq!(result, request.outcome, "{case}: re-sent id {:?}", String::from_utf8_lossy(&request.id));
                checked += 1;
            }
        }
    }

    for node in 0..NODES {
        let balances = banking_balances(&cluster.connect(node).expect("connect for reads"), ACCOUNTS);
        for (account, balance) in balances.iter().enumerate() {
            assert_eq!(*balance, expected[account], "{case}: balance of account {account} read through node {node}");
            assert!(*balance >= 0, "{case}: account {account} overdrawn");
        }
        assert_eq!(balances.iter().sum::<i64>(), ACCOUNTS as i64 * INITIAL, "{case}: transfers keep the sum");
    }

    let statuses: Vec<_> =
        (0..NODES).map(|node| cluster.connect(node).expect("connect").status().expect("status")).collect();
    for status in &statuses {
        assert!(status.cluster_synced, "{case}: {status:?}");
        assert_eq!(status.fabric, "tcp");
        assert_eq!(status.lease_table_digest, statuses[0].lease_table_digest, "{case}: nodes agree on every holder");
        assert_eq!(status.cluster_generation, statuses[0].cluster_generation, "{case}: nodes agree on the view");
        assert_eq!(status.leases_lent, 0, "{case}: no key stays lent out: {status:?}");
        assert_eq!(status.fenced_total, 0, "{case}: no write-back was fenced: {status:?}");
    }

    // How the clients saw the partition.
    let during_cut = |b: &&&Batch| b.answered_at > cut_at + CUT_GRACE && b.answered_at < healed_at;
    let answered_while_cut = batches.iter().filter(during_cut).count();
    let longest_wait = batches.iter().map(|b| b.answered_at - b.sent_at).max().unwrap_or_default();
    let mut answers: Vec<Instant> = batches.iter().map(|b| b.answered_at).collect();
    answers.sort();
    let longest_gap = answers.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let first_after_heal = answers.iter().find(|&&t| t >= healed_at).map(|&t| t - healed_at);
    let caught = batches.iter().filter(|b| b.sent_at < healed_at && b.answered_at >= healed_at).count();
    let caught_done = batches
        .iter()
        .filter(|b| b.sent_at < healed_at && b.answered_at >= healed_at)
        .map(|b| b.answered_at - healed_at)
        .max()
        .unwrap_or_default();
    let by_node: Vec<usize> =
        (0..NODES).map(|node| batches.iter().filter(|b| b.client % NODES == node).count()).collect();
    let generation_after = statuses[0].cluster_generation;
    // What the nodes' transports did about pushes that failed across the cut (their
    // warnings; none when TCP rode the cut out).
    let all_log: Vec<String> = (0..NODES).flat_map(|node| cluster.nodes[node].log_lines()).collect();
    let count = |text: &str| all_log.iter().filter(|line| line.contains(text)).count();
    let (gave_up, had_arrived, sent_again) =
        (count("push to peer failed"), count("the failed push had arrived"), count("the failed push had not arrived"));
    let logged_node = cut.logged_node();
    let victim_log = cluster.nodes[logged_node].log_lines();
    println!(
        "{case}: {cut:?} for {partition:?}: {} transfers ({committed} committed, {aborted} aborted), \
         {} batches (by client node {by_node:?}); {retry_rejections} `retry` rejections, {disconnects} lost \
         connections, {resent} transfers sent more than once; longest wait for a batch {longest_wait:?}, longest \
         gap between answers {longest_gap:?}; batches answered while cut off (after {CUT_GRACE:?}): \
         {answered_while_cut}; first answer {first_after_heal:?} after the heal; {caught} batches in flight across \
         the heal, all answered {caught_done:?} after it; the last batch answered {:?} after the load stopped; \
         {checked} ids re-sent through another node, all with their first outcome; view generation \
         {generation_before} before, {generation_after} after; fenced write-backs 0; pushes given up on after the \
         fabric's timeout: {gave_up} ({had_arrived} had arrived all the same, {sent_again} sent again)",
        requests.len(),
        batches.len(),
        all_answered_at - stopped_at,
    );
    println!(
        "{case}: node {logged_node} logged {} lines:\n{}",
        victim_log.len(),
        victim_log.iter().take(30).map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
    );
    // The others waited for the cut node (or pair) rather than running without it.
    let answered: Vec<String> = batches
        .iter()
        .filter(during_cut)
        .map(|b| {
            let (sent, answered) = (b.sent_at.saturating_duration_since(cut_at), b.answered_at - cut_at);
            format!(
                "client {} (node {}): sent {sent:?} and answered {answered:?} after the cut",
                b.client,
                b.client % NODES
            )
        })
        .collect();
    assert_eq!(answered_while_cut, 0, "{case}: batches answered during the {cut:?}: {answered:?}");
    assert!(caught > 0, "{case}: the partition caught requests in flight");
}

/// A cut TCP retransmits across: the fabric's connections survive.
#[test]
fn a_cluster_waits_for_a_node_cut_off_for_3_seconds() {
    partition_mid_load("cut3s", Cut::Node(2), Duration::from_secs(3));
}

/// Nodes 0 and 1 lose each other but both still reach node 2 and their clients: no node
/// may run an epoch without the batches of all, so all wait, and all go on after it.
#[test]
fn a_cluster_waits_while_two_nodes_cannot_reach_each_other() {
    partition_mid_load("cut01", Cut::Between(0, 1), Duration::from_secs(3));
}

/// Longer than the tcp fabric's response timeout (10 s): the peers give up on their
/// connections to node 2 (and node 2 on its own), reopen the rings once it is back, and
/// the epoch in progress must still finish with nothing lost or doubled.
#[test]
fn a_cluster_waits_for_a_node_cut_off_longer_than_the_fabric_timeout() {
    partition_mid_load("cut13s", Cut::Node(2), Duration::from_secs(13));
}

/// Nodes 0 and 1 lose each other for longer than the fabric's response timeout: each
/// gives up pushes to the other and reopens its ring after the heal, while both keep
/// talking to node 2. A push to the unreachable peer must hold back no frame to the
/// reachable one (one sender per peer), so no epoch finishes during the cut.
#[test]
fn two_nodes_that_lose_each_other_longer_than_the_fabric_timeout() {
    partition_mid_load("cut01-13s", Cut::Between(0, 1), Duration::from_secs(13));
}
