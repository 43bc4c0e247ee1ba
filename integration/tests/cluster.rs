//! Three engine processes as one cluster (shm, and again over tcp), under leases and
//! under the baselines (`--cc 2pl`, `--cc occ`): banking transfers
//! from clients connected to different nodes, with accounts spread over all nodes by
//! their home placement, one node SIGKILLed and restarted (or SIGSTOPped and resumed) in
//! the middle of the load.
//!
//! Afterwards every request that was not acknowledged (lost with the connection, or
//! refused with `retry` because its epoch was rolled back) is sent again under its id,
//! through another node. Then: every account's balance equals its initial balance plus
//! each committed transfer exactly once (nothing acknowledged lost, nothing applied
//! twice), the sum is unchanged, reads of every account agree whichever node serves them,
//! and every node reports the same lease table with no key left lent out.

use leasehold_client::{BlockingClient, Invocation, InvokeResult, RejectionKind};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, plugin_bytes};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NODES: u16 = 3;
const ACCOUNTS: u64 = 300;
const INITIAL: i64 = 1_000_000;
const CLIENTS: u64 = 3;
const BATCH: u64 = 20;

#[derive(Clone, Debug)]
struct Sent {
    transfer: Transfer,
    outcome: Option<InvokeResult>,
}

fn transfer_invocation(id: &[u8], transfer: &Transfer) -> Invocation {
    Invocation::encoded("banking", "transfer", leasehold_sdk::encode(transfer).expect("encode transfer"))
        .with_request_id(id.to_vec())
}

/// A final outcome: committed or aborted. Rejections (`retry` after a rollback,
/// `shutting-down`) leave the request unacknowledged.
fn is_final(result: &InvokeResult) -> bool {
    !matches!(result, InvokeResult::Rejected { .. })
}

fn run_client(address: SocketAddr, client: u64, stop: Arc<AtomicBool>) -> Vec<(Vec<u8>, Sent)> {
    let connection = BlockingClient::connect(address).expect("connect before the crash");
    let mut sent = Vec::new();
    let mut next = leasehold_integration::seeded_numbers(client * 7919 + 1);
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let requests: Vec<(Vec<u8>, Transfer)> = (0..BATCH)
            .map(|i| {
                let from = next(ACCOUNTS);
                let to = (from + 1 + next(ACCOUNTS - 1)) % ACCOUNTS;
                let id = format!("c{client}-b{batch}-r{i}").into_bytes();
                (id, Transfer { from, to, amount: 1 + next(100) as i64 })
            })
            .collect();
        let invocations = requests.iter().map(|(id, t)| transfer_invocation(id, t)).collect();
        match connection.invoke_many(invocations) {
            Ok(results) => {
                assert_eq!(results.len(), requests.len());
                for ((id, transfer), result) in requests.into_iter().zip(results) {
                    let outcome = Some(result).filter(is_final);
                    sent.push((id, Sent { transfer, outcome }));
                }
            }
            Err(_) => {
                // The node died with these in flight: not acknowledged.
                for (id, transfer) in requests {
                    sent.push((id, Sent { transfer, outcome: None }));
                }
                break;
            }
        }
    }
    sent
}

fn balances_through(address: SocketAddr) -> Vec<i64> {
    banking_balances(&BlockingClient::connect(address).expect("connect"), ACCOUNTS)
}

/// What happens to node 2 in the middle of the load.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, then a restart on the same data directory.
    KillAndRestart,
    /// SIGSTOP for two seconds, then SIGCONT: the others wait for it (it still holds its
    /// leases; nobody else may write its keys), and the cluster continues.
    Pause,
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name} {pid}");
}

fn fault_mid_load(fabric: &str, fault: Fault, cc: &str) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut cluster = LocalCluster::start(directory.path(), NODES, fabric, &["--cc", cc]);
    cluster.wait_until_synced(Duration::from_secs(60));

    // A plugin deployed on one node reaches every node.
    let setup = BlockingClient::connect(cluster.addresses[0]).expect("connect");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking on node 0");
    for address in &cluster.addresses[1..] {
        let plugins = BlockingClient::connect(*address).expect("connect").list_plugins().expect("list plugins");
        assert!(plugins.iter().any(|p| p.name == "banking"), "node at {address} has the plugin: {plugins:?}");
    }
    // Accounts are opened through node 1: one transaction writing keys of every node.
    let open = Open { first: 0, count: ACCOUNTS, balance: INITIAL };
    let opened = BlockingClient::connect(cluster.addresses[1])
        .expect("connect")
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (address, stop) = (cluster.addresses[(c % u64::from(NODES)) as usize], stop.clone());
            std::thread::spawn(move || run_client(address, c, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let victim = 2;
    match fault {
        Fault::KillAndRestart => {
            cluster.nodes[victim].kill();
            std::thread::sleep(Duration::from_millis(300));
            cluster.nodes[victim].restart();
        }
        Fault::Pause => {
            let pid = cluster.nodes[victim].pid();
            signal(pid, "STOP");
            std::thread::sleep(Duration::from_millis(2000));
            signal(pid, "CONT");
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let mut all: HashMap<Vec<u8>, Sent> = HashMap::new();
    for client in clients {
        all.extend(client.join().expect("client thread"));
    }
    cluster.wait_until_synced(Duration::from_secs(60));

    let acknowledged = all.values().filter(|s| s.outcome.is_some()).count();
    let unacknowledged = all.len() - acknowledged;
    assert!(acknowledged > 100, "the load ran ({acknowledged} acknowledged)");
    if let Fault::KillAndRestart = fault {
        assert!(unacknowledged > 0, "the crash hit requests in flight");
    }

    // Retry through node 0 every unacknowledged request and a sample of acknowledged ones.
    let retrier = BlockingClient::connect(cluster.addresses[0]).expect("connect after the restart");
    let mut retried = 0;
    for (id, sent) in all.iter_mut() {
        let check_acknowledged = sent.outcome.is_some() && id.ends_with(b"-r0");
        if sent.outcome.is_some() && !check_acknowledged {
            continue;
        }
        let result = loop {
            let result = retrier.invoke(transfer_invocation(id, &sent.transfer)).expect("retry");
            match &result {
                InvokeResult::Rejected { kind: RejectionKind::Retry, .. } => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break result,
            }
        };
        match &sent.outcome {
            Some(first) => assert_eq!(&result, first, "a retried id returns its first outcome"),
            None => sent.outcome = Some(result),
        }
        retried += 1;
    }
    assert!(retried >= unacknowledged);

    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    for sent in all.values() {
        match sent.outcome.as_ref().expect("every request has an outcome now") {
            InvokeResult::Committed { .. } => {
                expected[sent.transfer.from as usize] -= sent.transfer.amount;
                expected[sent.transfer.to as usize] += sent.transfer.amount;
            }
            other => panic!("transfers of small amounts must commit: {other:?}"),
        }
    }
    for (node, address) in cluster.addresses.iter().enumerate() {
        let balances = balances_through(*address);
        for (account, balance) in balances.iter().enumerate() {
            assert_eq!(*balance, expected[account], "balance of account {account} read through node {node}");
        }
        assert_eq!(balances.iter().sum::<i64>(), ACCOUNTS as i64 * INITIAL, "transfers keep the sum");
    }
    // One holder per key: every node runs with the same lease table, in the same view,
    // with nothing lent out, and every node held some of the accounts.
    let statuses: Vec<_> = cluster
        .addresses
        .iter()
        .map(|address| BlockingClient::connect(*address).expect("connect").status().expect("status"))
        .collect();
    for status in &statuses {
        assert_eq!(status.cc, cc, "every node runs the requested concurrency control");
        assert!(status.cluster_synced, "{status:?}");
        assert_eq!(status.cluster_nodes, NODES);
        assert_eq!(status.fabric, fabric);
        assert_eq!(status.lease_table_digest, statuses[0].lease_table_digest, "nodes agree on every key's holder");
        assert_eq!(status.cluster_generation, statuses[0].cluster_generation, "nodes agree on the view");
        assert_eq!(status.leases_lent, 0, "no key stays lent out: {status:?}");
        assert_eq!(status.fenced_total, 0);
        assert!(status.resident_keys > 0, "node {} holds keys", status.node);
    }
    let remote: u64 = statuses.iter().map(|s| s.remote_accesses).sum();
    assert!(remote > 0, "transactions borrowed keys from other nodes");
    println!(
        "{fabric}, {fault:?}, {cc}: {} transfers, {acknowledged} acknowledged before the end of the load, {unacknowledged} retried",
        all.len()
    );
}

#[test]
fn three_nodes_over_shm_survive_a_sigkill_mid_load() {
    fault_mid_load("shm", Fault::KillAndRestart, "lease");
}

#[test]
fn three_nodes_over_tcp_survive_a_sigkill_mid_load() {
    fault_mid_load("tcp", Fault::KillAndRestart, "lease");
}

#[test]
fn three_nodes_over_shm_continue_after_a_node_is_paused() {
    fault_mid_load("shm", Fault::Pause, "lease");
}

#[test]
fn three_nodes_under_two_phase_locking_over_shm_survive_a_sigkill_mid_load() {
    fault_mid_load("shm", Fault::KillAndRestart, "2pl");
}

#[test]
fn three_nodes_under_optimistic_concurrency_over_shm_survive_a_sigkill_mid_load() {
    fault_mid_load("shm", Fault::KillAndRestart, "occ");
}

#[test]
fn three_nodes_under_two_phase_locking_over_tcp_survive_a_sigkill_mid_load() {
    fault_mid_load("tcp", Fault::KillAndRestart, "2pl");
}

#[test]
fn three_nodes_under_optimistic_concurrency_over_shm_continue_after_a_node_is_paused() {
    fault_mid_load("shm", Fault::Pause, "occ");
}
