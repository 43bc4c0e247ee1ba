//! Affinity placement on a real 3-node cluster: each client group works on its own key
//! group, connected to one node, while the keys start spread over all nodes by hash
//! (two thirds of them on a wrong node). Leases must follow the transactions: after a
//! warm-up at least 95% of accesses are local. When the groups swap, placement follows
//! within a bounded time. Throughout the migrations the banking invariant holds and
//! every transfer is applied exactly once.

use leasehold_client::{BlockingClient, Invocation, InvokeResult, NodeStatus};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, local_share, plugin_bytes};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: u64 = 3;
const GROUP_ACCOUNTS: u64 = 100;
const INITIAL: i64 = 1_000_000;

fn statuses(addresses: &[SocketAddr]) -> Vec<NodeStatus> {
    addresses.iter().map(|a| BlockingClient::connect(*a).expect("connect").status().expect("status")).collect()
}

/// Client `group`: transfers inside key group `(group + offset) % 3`, through node
/// `group`; returns every (transfer, outcome).
fn run_client(
    address: SocketAddr,
    group: u64,
    offset: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<(Transfer, InvokeResult)> {
    let connection = BlockingClient::connect(address).expect("connect");
    let mut next = leasehold_integration::seeded_numbers(group * 7919 + 3);
    let mut done = Vec::new();
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key_group = (group + offset.load(Ordering::Relaxed)) % NODES;
        let transfers: Vec<Transfer> = (0..20)
            .map(|_| {
                let from = key_group * GROUP_ACCOUNTS + next(GROUP_ACCOUNTS);
                let to = key_group * GROUP_ACCOUNTS
                    + (from - key_group * GROUP_ACCOUNTS + 1 + next(GROUP_ACCOUNTS - 1)) % GROUP_ACCOUNTS;
                Transfer { from, to, amount: 1 + next(50) as i64 }
            })
            .collect();
        let invocations = transfers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Invocation::encoded("banking", "transfer", leasehold_sdk::encode(t).expect("encode"))
                    .with_request_id(format!("g{group}-b{batch}-{i}").into_bytes())
            })
            .collect();
        let results = connection.invoke_many(invocations).expect("no fault in this test: every call answers");
        done.extend(transfers.into_iter().zip(results));
    }
    done
}

/// Waits until the local share over a 500 ms window reaches 95%; returns the time and the
/// epochs it took, or panics after `limit`.
fn wait_for_locality(addresses: &[SocketAddr], limit: Duration) -> (Duration, u64, f64) {
    let started = Instant::now();
    let first_epoch = statuses(addresses)[0].durable_epoch;
    loop {
        let before = statuses(addresses);
        std::thread::sleep(Duration::from_millis(500));
        let after = statuses(addresses);
        let share = local_share(&before, &after);
        if share >= 0.95 {
            return (started.elapsed(), after[0].durable_epoch - first_epoch, share);
        }
        assert!(started.elapsed() < limit, "placement did not reach 95% local accesses in {limit:?} (last {share:.3})");
    }
}

#[test]
fn leases_follow_the_client_groups_and_keep_every_transfer_exactly_once() {
    let directory = tempfile::tempdir().expect("temporary directory");
    // Without forwarding, so that only the leases can make the accesses local (routing has
    // its own test in routing.rs).
    let cluster = LocalCluster::start(directory.path(), NODES as u16, "shm", &["--forwarding", "false"]);
    cluster.wait_until_synced(Duration::from_secs(60));
    let addresses = cluster.addresses.clone();
    let setup = BlockingClient::connect(addresses[0]).expect("connect");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let open = Open { first: 0, count: NODES * GROUP_ACCOUNTS, balance: INITIAL };
    let opened = setup
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let offset = Arc::new(AtomicU64::new(0));
    let start = statuses(&addresses);
    let clients: Vec<_> = (0..NODES)
        .map(|group| {
            let (address, offset, stop) = (addresses[group as usize], offset.clone(), stop.clone());
            std::thread::spawn(move || run_client(address, group, offset, stop))
        })
        .collect();
    let (warm_up, warm_up_epochs, share) = wait_for_locality(&addresses, Duration::from_secs(20));
    let early = local_share(&start, &statuses(&addresses));
    // Once placed, it stays local.
    let before = statuses(&addresses);
    std::thread::sleep(Duration::from_millis(1000));
    let placed = local_share(&before, &statuses(&addresses));
    assert!(placed >= 0.95, "after the warm-up {placed:.3} of accesses are local");

    // Swap the groups: every client now works on the keys another node holds.
    offset.store(1, Ordering::Relaxed);
    let (swap, swap_epochs, swap_share) = wait_for_locality(&addresses, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let done: Vec<(Transfer, InvokeResult)> =
        clients.into_iter().flat_map(|client| client.join().expect("client thread")).collect();

    // Exactly once and the sum, through every node.
    let mut expected = vec![INITIAL; (NODES * GROUP_ACCOUNTS) as usize];
    for (transfer, result) in &done {
        assert!(result.is_committed(), "small transfers commit: {result:?}");
        expected[transfer.from as usize] -= transfer.amount;
        expected[transfer.to as usize] += transfer.amount;
    }
    for address in &addresses {
        let client = BlockingClient::connect(*address).expect("connect");
        for (account, balance) in banking_balances(&client, NODES * GROUP_ACCOUNTS).into_iter().enumerate() {
            assert_eq!(balance, expected[account], "account {account} through {address}");
        }
    }
    let end = statuses(&addresses);
    let moves: u64 = end.iter().map(|s| s.lease_moves_total).sum();
    let bytes: u64 = end.iter().map(|s| s.bytes_migrated_total).sum();
    assert!(moves >= 2 * GROUP_ACCOUNTS, "leases moved ({moves})");
    for status in &end {
        assert_eq!(status.lease_table_digest, end[0].lease_table_digest, "one holder per key on every node");
        assert_eq!(status.leases_lent, 0);
        assert_eq!(status.fenced_total, 0);
    }
    println!(
        "{} transfers; local share {early:.3} from the start, {share:.3} after {warm_up:?} ({warm_up_epochs} epochs), \
         {placed:.3} placed; after the swap {swap_share:.3} within {swap:?} ({swap_epochs} epochs); {moves} leases \
         moved, {bytes} bytes migrated",
        done.len()
    );
}
