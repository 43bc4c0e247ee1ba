//! Request routing on a real 3-node cluster (shm fabric, engine processes): with static
//! hash placement, one client sends every request to node 0, although two thirds of the
//! keys are held elsewhere. Node 0 must forward each request whose keys are mostly
//! elsewhere to their holder, so that (almost) every access is local, while every deposit
//! is applied exactly once (balances read through every node) and a retried request id
//! sent through another node returns the first outcome. With forwarding off, the same
//! load stays on node 0 and two thirds of its accesses are remote: the comparison shows
//! the assertion can fail.

use leasehold_client::{
    BlockingClient, ClusterClient, Invocation, InvokeResult, NodeStatus, RoutedInvocation, RoutingKey,
};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, local_share, plugin_bytes};
use leasehold_plugin_api::banking::{Deposit, Open};
use std::net::SocketAddr;
use std::time::Duration;

const NODES: u16 = 3;
const ACCOUNTS: u64 = 300;
const INITIAL: i64 = 1_000;

fn statuses(addresses: &[SocketAddr]) -> Vec<NodeStatus> {
    addresses.iter().map(|a| BlockingClient::connect(*a).expect("connect").status().expect("status")).collect()
}

/// Starts a 3-node shm cluster with `flags`, deploys banking through node 0 and opens
/// accounts `0..ACCOUNTS` with `INITIAL` each; returns the cluster and node 0's client.
fn banking_cluster(directory: &std::path::Path, flags: &[&str]) -> (LocalCluster, BlockingClient) {
    let cluster = LocalCluster::start(directory, NODES, "shm", flags);
    cluster.wait_until_synced(Duration::from_secs(60));
    let client = BlockingClient::connect(cluster.addresses[0]).expect("connect");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let open = Open { first: 0, count: ACCOUNTS, balance: INITIAL };
    let opened = client
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");
    (cluster, client)
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
    // Routing by key affinity alone: with the default weights a holder that is the
    // busiest node scores the same as an idle receiving node (0.5 + 0 against 0 + 0.5),
    // and ties keep a request where it arrived, so how many deposits are forwarded would
    // depend on the nodes' decayed load counts at that moment. The load term has unit
    // tests of its own (`cluster::routing`).
    let config = directory.path().join("routing.toml");
    std::fs::write(&config, "routing_load_weight = 0.0\n").expect("write the node configuration");
    let config = config.to_str().expect("temporary paths are UTF-8").to_string();
    let flags = ["--placement", "false", "--forwarding", flag, "--config", config.as_str()];
    let (cluster, client) = banking_cluster(directory.path(), &flags);
    let addresses = cluster.addresses.clone();

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
    for status in &after {
        assert_eq!(status.lease_table_digest, after[0].lease_table_digest);
        assert_eq!(status.fenced_total, 0);
    }
    Run {
        local_share: local_share(&before, &after),
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

/// Deposits of `amount` to each account, as routed invocations with unique ids.
fn routed_deposits(accounts: std::ops::Range<u64>, amount: i64, prefix: &str) -> Vec<RoutedInvocation> {
    accounts
        .map(|account| {
            RoutedInvocation::new(
                deposit(account, amount, format!("{prefix}-a{account}")),
                vec![RoutingKey::new("accounts", leasehold_sdk::key_u64(account))],
            )
        })
        .collect()
}

/// A client that routes by a cached lease table: with the table fresh, every request goes
/// straight to its keys' holder (no forwarding, no redirect). Then the leases of a third
/// of the accounts move to node 0 (a plain client hammers them through node 0, forwarding
/// off, so placement moves them), and the routing client, whose table is now stale, is
/// redirected for exactly the moved keys, fetches the table again and is not redirected
/// on the next round. Every deposit is applied once; a retried redirected id meets its
/// first outcome.
#[test]
fn a_routing_client_goes_to_the_holders_and_follows_moved_leases() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (cluster, plain) = banking_cluster(directory.path(), &["--forwarding", "false"]);
    let addresses = cluster.addresses.clone();
    let mut expected = vec![INITIAL; ACCOUNTS as usize];

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let seed = addresses[1].to_string();
    let router = local.block_on(&runtime, ClusterClient::connect(&seed, &[])).expect("connect the router");
    assert_eq!(router.lease_table().node_count, NODES);
    assert_eq!(router.lease_table().client_addresses.len(), usize::from(NODES));

    // Fresh table: straight to the holders.
    let before = statuses(&addresses);
    for round in 0..3 {
        let results =
            local.block_on(&runtime, router.invoke_many(routed_deposits(0..ACCOUNTS, 2, &format!("fresh{round}"))));
        for (account, result) in results.expect("every call answers").iter().enumerate() {
            assert!(result.is_committed(), "deposit to {account}: {result:?}");
            expected[account] += 2;
        }
    }
    let after = statuses(&addresses);
    assert_eq!(router.redirects_total(), 0, "a fresh table needs no redirect");
    let local_share = local_share(&before, &after);
    assert!(local_share >= 0.99, "routed by the table, {local_share:.3} of accesses are local");
    assert!(after.iter().zip(&before).all(|(a, b)| a.forwarded_total == b.forwarded_total));
    let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.committed_total - b.committed_total).collect();
    assert!(served.iter().all(|&count| count >= 150), "every node ran its share of the deposits: {served:?}");

    // Calls in flight together on a new client open their connections concurrently; each
    // must finish (a connection opened twice once closed under a call in flight).
    let concurrent = local.block_on(&runtime, async {
        let fresh = ClusterClient::connect(&seed, &[]).await.expect("connect another router");
        let calls = (0..4).map(|slot| fresh.invoke_many(routed_deposits(0..ACCOUNTS, 1, &format!("together{slot}"))));
        futures::future::join_all(calls).await
    });
    for results in concurrent {
        for (account, result) in results.expect("every call answers").iter().enumerate() {
            assert!(result.is_committed(), "deposit to {account}: {result:?}");
            expected[account] += 1;
        }
    }

    // Move the leases of accounts 0..100 to node 0: deposits through node 0 without
    // forwarding make node 0 their heaviest user.
    let moved = 0..ACCOUNTS / 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let held_by_node_0 = |table: &leasehold_client::LeaseTable| {
        moved.clone().all(|account| {
            let storage_key = storage_key_of(&router, account);
            table.holder(&storage_key) == 0
        })
    };
    let mut rounds = 0;
    loop {
        let invocations =
            moved.clone().map(|account| deposit(account, 1, format!("hammer{rounds}-a{account}"))).collect();
        for (account, result) in moved.clone().zip(plain.invoke_many(invocations).expect("every call answers")) {
            assert!(result.is_committed(), "deposit to {account}: {result:?}");
            expected[account as usize] += 1;
        }
        rounds += 1;
        let current = local.block_on(&runtime, fetch_table(&addresses[2]));
        if held_by_node_0(&current) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "placement did not move accounts 0..100 to node 0 in 60 s");
    }
    assert!(!held_by_node_0(&router.lease_table()), "the router's table is stale now");
    let homed_elsewhere = moved
        .clone()
        .filter(|&account| {
            let storage_key = storage_key_of(&router, account);
            router.lease_table().holder(&storage_key) != 0
        })
        .count() as u64;

    // Stale table: the moved keys are redirected once, then the table is fresh again.
    let before = statuses(&addresses);
    let results = local
        .block_on(&runtime, router.invoke_many(routed_deposits(moved.clone(), 5, "stale")))
        .expect("every call answers");
    for (account, result) in moved.clone().zip(&results) {
        assert!(result.is_committed(), "deposit to {account}: {result:?}");
        expected[account as usize] += 5;
    }
    assert_eq!(router.redirects_total(), homed_elsewhere, "exactly the moved keys were redirected");
    assert!(router.table_fetches_total() >= 2, "a redirect fetches the table again");
    assert!(held_by_node_0(&router.lease_table()), "the fetched table shows the moves");
    let again = local
        .block_on(&runtime, router.invoke_many(routed_deposits(moved.clone(), 5, "fresh-again")))
        .expect("every call answers");
    for (account, result) in moved.clone().zip(&again) {
        assert!(result.is_committed(), "deposit to {account}: {result:?}");
        expected[account as usize] += 5;
    }
    assert_eq!(router.redirects_total(), homed_elsewhere, "a fresh table needs no more redirects");
    let after = statuses(&addresses);
    let redirected_by_nodes: u64 =
        after.iter().zip(&before).map(|(a, b)| a.redirected_total - b.redirected_total).sum();
    assert_eq!(redirected_by_nodes, homed_elsewhere, "the nodes counted the redirects the client saw");

    // A retried id of a redirected request meets its first outcome, through any node.
    let retried = local
        .block_on(&runtime, router.invoke(routed_deposits(moved.start..moved.start + 1, 5, "stale").remove(0)))
        .expect("the retry answers");
    assert_eq!(retried, results[0], "the retry returns the first outcome");
    for address in &addresses {
        let reader = BlockingClient::connect(*address).expect("connect");
        assert_eq!(banking_balances(&reader, ACCOUNTS), expected, "balances through {address}: each deposit once");
    }
    println!(
        "routing client: {local_share:.3} local with a fresh table; {rounds} rounds moved {homed_elsewhere} leases; \
         {homed_elsewhere} redirects, {} table fetches",
        router.table_fetches_total()
    );
}

/// The lease table as node `address` reports it now.
async fn fetch_table(address: &SocketAddr) -> leasehold_client::LeaseTable {
    let client = leasehold_client::Client::connect(*address).await.expect("connect");
    client.lease_table().await.expect("lease table")
}

/// The storage key of a banking account, with the table id the router learned.
fn storage_key_of(router: &ClusterClient, account: u64) -> Vec<u8> {
    router.storage_key("banking", "accounts", &leasehold_sdk::key_u64(account)).expect("the accounts table is known")
}

/// Client sessions in a cluster: the nodes keep a session's outcomes under ids at the
/// ids' holders, so a retry of a session request through another node gets the first
/// outcome, and session numbers from different nodes never collide.
#[test]
fn session_requests_run_once_in_a_cluster_whichever_node_a_retry_goes_through() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (cluster, client) = banking_cluster(directory.path(), &[]);
    let other = cluster.connect(2).expect("connect to node 2");
    let session = client.open_session().expect("open a session on node 0");
    let elsewhere = other.open_session().expect("open a session on node 2");
    assert_ne!(session, elsewhere, "nodes hand out distinct session numbers");
    let mut numbers = leasehold_client::SessionNumbers::new(session);
    let deposits: Vec<Invocation> = (0..30)
        .map(|account| {
            let arguments = leasehold_sdk::encode(&Deposit { account, amount: 5 }).expect("encode");
            numbers.place(Invocation::encoded("banking", "deposit", arguments))
        })
        .collect();
    let first = client.invoke_many(deposits.clone()).expect("deposits through node 0");
    assert!(first.iter().all(InvokeResult::is_committed), "{first:?}");
    let retried = other.invoke_many(deposits).expect("the same requests through node 2");
    assert_eq!(retried, first, "a retry through another node gets the first outcomes");
    let balances = banking_balances(&other, ACCOUNTS);
    for (account, balance) in balances.iter().enumerate() {
        let expected = if account < 30 { INITIAL + 5 } else { INITIAL };
        assert_eq!(*balance, expected, "account {account}: each deposit applied once");
    }
}
