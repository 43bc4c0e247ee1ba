//! Request routing on a real 3-node cluster (shm fabric, engine processes): with static
//! hash placement, one client sends every request to node 0, although two thirds of the
//! keys are held elsewhere. Node 0 must forward each request whose keys are mostly
//! elsewhere to their holder, so that (almost) every access is local, while every deposit
//! is applied exactly once (balances read through every node) and a retried request id
//! sent through another node returns the first outcome. With forwarding off, the same
//! load stays on node 0 and two thirds of its accesses are remote: the comparison shows
//! the assertion can fail.

use leasehold_client::{BlockingClient, Invocation, InvokeResult, NodeStatus};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, plugin_bytes};
use leasehold_plugin_api::banking::{Deposit, Open};
use std::net::SocketAddr;
use std::time::Duration;

const NODES: u16 = 3;
const ACCOUNTS: u64 = 300;
const INITIAL: i64 = 1_000;

fn statuses(addresses: &[SocketAddr]) -> Vec<NodeStatus> {
    addresses.iter().map(|a| BlockingClient::connect(*a).expect("connect").status().expect("status")).collect()
}

fn deposit(account: u64, amount: i64, id: String) -> Invocation {
    let arguments = leasehold_sdk::encode(&Deposit { account, amount }).expect("encode");
    Invocation::encoded("banking", "deposit", arguments).with_request_id(id.into_bytes())
}

struct Run {
    local_share: f64,
    /// Forwarded by node 0 (the client's node), and by every node (the retry went through
    /// node 2).
    forwarded: u64,
    forwarded_everywhere: u64,
    received: u64,
    requests: u64,
}

/// Starts a cluster, sends `rounds` batches of deposits through node 0 only, checks every
/// balance through every node and returns what the nodes counted.
fn run(forwarding: bool, rounds: u64) -> Run {
    let directory = tempfile::tempdir().expect("temporary directory");
    let flag = if forwarding { "true" } else { "false" };
    let cluster = LocalCluster::start(directory.path(), NODES, "shm", &["--placement", "false", "--forwarding", flag]);
    cluster.wait_until_synced(Duration::from_secs(60));
    let addresses = cluster.addresses.clone();
    let client = BlockingClient::connect(addresses[0]).expect("connect");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let open = Open { first: 0, count: ACCOUNTS, balance: INITIAL };
    let opened = client
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");

    let before = statuses(&addresses);
    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    let mut requests = 0;
    for round in 0..rounds {
        let batch: Vec<(u64, i64)> =
            (0..ACCOUNTS).map(|account| (account, 1 + ((account + round) % 7) as i64)).collect();
        let invocations =
            batch.iter().map(|&(account, amount)| deposit(account, amount, format!("r{round}-a{account}"))).collect();
        let results: Vec<InvokeResult> = client.invoke_many(invocations).expect("every call answers");
        for ((account, amount), result) in batch.into_iter().zip(results) {
            assert!(result.is_committed(), "deposit to {account}: {result:?}");
            expected[account as usize] += amount;
            requests += 1;
        }
    }
    // A retry of a forwarded request through another node meets the first outcome and
    // changes nothing.
    let retry = BlockingClient::connect(addresses[2]).expect("connect");
    let again = retry.invoke(deposit(1, 1, "r0-a1".into())).expect("retry answers");
    assert!(again.is_committed(), "{again:?}");
    let after = statuses(&addresses);
    for address in &addresses {
        let reader = BlockingClient::connect(*address).expect("connect");
        assert_eq!(banking_balances(&reader, ACCOUNTS), expected, "balances through {address}: each deposit once");
    }
    let local: u64 = after.iter().zip(&before).map(|(a, b)| a.local_accesses - b.local_accesses).sum();
    let remote: u64 = after.iter().zip(&before).map(|(a, b)| a.remote_accesses - b.remote_accesses).sum();
    for status in &after {
        assert_eq!(status.lease_table_digest, after[0].lease_table_digest);
        assert_eq!(status.fenced_total, 0);
    }
    Run {
        local_share: local as f64 / (local + remote).max(1) as f64,
        forwarded: after[0].forwarded_total - before[0].forwarded_total,
        forwarded_everywhere: after.iter().map(|s| s.forwarded_total).sum::<u64>()
            - before.iter().map(|s| s.forwarded_total).sum::<u64>(),
        received: after.iter().map(|s| s.forwards_received_total).sum::<u64>()
            - before.iter().map(|s| s.forwards_received_total).sum::<u64>(),
        requests,
    }
}

#[test]
fn requests_run_where_their_keys_are_and_exactly_once() {
    let routed = run(true, 20);
    // Deposits touch one key: each one held elsewhere is forwarded to its holder. The
    // hash puts about two thirds of the accounts on nodes 1 and 2.
    assert!(routed.local_share >= 0.99, "with forwarding {:.3} of accesses are local", routed.local_share);
    let share_forwarded = routed.forwarded as f64 / routed.requests as f64;
    assert!((0.5..0.8).contains(&share_forwarded), "node 0 forwarded {share_forwarded:.3} of the requests");
    assert_eq!(routed.received, routed.forwarded_everywhere, "every forwarded request ran on its holder");

    let unrouted = run(false, 5);
    assert_eq!(unrouted.forwarded, 0);
    assert!(unrouted.local_share < 0.5, "without forwarding {:.3} of accesses are local", unrouted.local_share);
    println!(
        "forwarding on: {:.3} local, {} of {} requests forwarded; off: {:.3} local",
        routed.local_share, routed.forwarded, routed.requests, unrouted.local_share
    );
}
