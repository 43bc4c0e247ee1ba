//! The baseline concurrency controls (`--cc 2pl`, `--cc occ`) on a single node, end to
//! end, with the guarantees the lease protocol gives:
//! * banking on hot keys (Zipfian theta 0.99) from concurrent clients keeps the sum of
//!   balances, and the protocol really had to resolve conflicts (retries counted);
//! * the same request ids sent by several clients at once run exactly once, and every
//!   client gets the same outcome;
//! * a SIGKILL of a `leasehold-engine` process in the middle of a load loses no
//!   acknowledged transfer and applies none twice.
//!
//! Serializability itself (results and final state equal to serial execution in timestamp
//! order) is the serial-reference property test's, run for every mode in
//! `serial_reference.rs`.

use leasehold_bench::run::{self, BenchConfig};
use leasehold_bench::workload::WorkloadKind;
use leasehold_client::{BlockingClient, Invocation, InvokeResult};
use leasehold_engine::config::{ConcurrencyControl, Config};
use leasehold_engine::node::Node;
use leasehold_engine::rpc::RpcServer;
use leasehold_integration::{plugin_bytes, EngineProcess};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An in-process node running `cc` with banking deployed, serving clients on loopback.
struct TestNode {
    node: Node,
    server: RpcServer,
    _directory: tempfile::TempDir,
}

impl TestNode {
    fn start(cc: ConcurrencyControl) -> TestNode {
        let directory = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            data_dir: directory.path().to_path_buf(),
            client_address: "127.0.0.1:0".parse().expect("literal address"),
            // More executors than cores: transactions on hot keys really overlap.
            executor_threads: 4,
            cc,
            ..Config::default()
        };
        let node = Node::start(config.clone()).expect("start node");
        let server = RpcServer::start(&config, node.handle()).expect("start RPC server");
        node.handle().deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
        TestNode { node, server, _directory: directory }
    }

    fn stop(self) {
        self.server.stop();
        self.node.shutdown().expect("clean shutdown");
    }
}

fn hot_banking_keeps_the_sum(cc: ConcurrencyControl) {
    let node = TestNode::start(cc);
    let accounts = 1_000;
    let config = BenchConfig {
        workload: WorkloadKind::Banking,
        keys: accounts,
        initial_value: 1_000_000,
        theta: 0.99,
        clients: 4,
        batch: 50,
        pipeline: 2,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        rate: None,
        seed: 11,
        load: true,
        key_groups: 1,
        route_by_lease_table: false,
        request_ids_at_node: false,
        tracking: leasehold_bench::run::Tracking::Sessions,
    };
    let report = run::run(node.server.local_address(), &config, |_| {}).expect("benchmark run");
    let status = node.node.handle().status();
    node.stop();
    assert!(report.committed > 200, "too few commits to mean anything: {}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    assert_eq!(report.sum_found, Some(accounts as i64 * 1_000_000), "{}", report.summary());
    assert_eq!(report.sum_expected, report.sum_found, "{}", report.summary());
    assert_eq!(status.cc, cc.as_str());
    assert!(status.committed_total >= report.committed, "{status:?}");
    // Four executors on a handful of hot accounts cannot all avoid each other.
    assert!(status.concurrency_retries_total > 0, "no conflict was resolved: {status:?}");
}

#[test]
fn banking_on_hot_keys_keeps_the_sum_under_two_phase_locking() {
    hot_banking_keeps_the_sum(ConcurrencyControl::TwoPhaseLocking);
}

#[test]
fn banking_on_hot_keys_keeps_the_sum_under_optimistic_concurrency() {
    hot_banking_keeps_the_sum(ConcurrencyControl::Optimistic);
}

fn transfer_invocation(id: &[u8], transfer: &Transfer) -> Invocation {
    Invocation::encoded("banking", "transfer", leasehold_sdk::encode(transfer).expect("encode transfer"))
        .with_request_id(id.to_vec())
}

fn open_accounts(client: &BlockingClient, count: u64, balance: i64) {
    let open = Open { first: 0, count, balance };
    let opened = client
        .invoke(Invocation::encoded("banking", "open", leasehold_sdk::encode(&open).expect("encode")))
        .expect("open accounts");
    assert!(opened.is_committed(), "{opened:?}");
}

fn balances(client: &BlockingClient, count: u64) -> Vec<i64> {
    leasehold_integration::banking_balances(client, count)
}

/// A deterministic stream of transfers between `accounts` accounts.
fn transfers(count: usize, accounts: u64, seed: u64) -> Vec<(Vec<u8>, Transfer)> {
    let mut next = leasehold_integration::seeded_numbers(seed);
    (0..count)
        .map(|i| {
            let from = next(accounts);
            let to = (from + 1 + next(accounts - 1)) % accounts;
            (format!("t{seed}-{i}").into_bytes(), Transfer { from, to, amount: 1 + next(5) as i64 })
        })
        .collect()
}

fn concurrent_retries_run_once(cc: ConcurrencyControl) {
    const ACCOUNTS: u64 = 10;
    const INITIAL: i64 = 10_000;
    const CLIENTS: usize = 4;
    let node = TestNode::start(cc);
    let address = node.server.local_address();
    let setup = BlockingClient::connect(address).expect("connect");
    open_accounts(&setup, ACCOUNTS, INITIAL);
    let all = transfers(300, ACCOUNTS, 5);
    // Every client sends every request, starting at a different place, so copies of one
    // id are in flight together and arrive before, during and after its first run.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let mut mine = all.clone();
            mine.rotate_left(client * all.len() / CLIENTS);
            std::thread::spawn(move || {
                let connection = BlockingClient::connect(address).expect("connect");
                let mut outcomes = HashMap::new();
                for chunk in mine.chunks(30) {
                    let invocations = chunk.iter().map(|(id, transfer)| transfer_invocation(id, transfer)).collect();
                    let results = connection.invoke_many(invocations).expect("invoke");
                    for ((id, _), result) in chunk.iter().zip(results) {
                        outcomes.insert(id.clone(), result);
                    }
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<HashMap<Vec<u8>, InvokeResult>> =
        clients.into_iter().map(|client| client.join().expect("client thread")).collect();
    let status = node.node.handle().status();
    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    for (id, transfer) in &all {
        let first = &outcomes[0][id];
        for other in &outcomes[1..] {
            assert_eq!(&other[id], first, "every copy of {} gets the same outcome", String::from_utf8_lossy(id));
        }
        assert!(first.is_committed(), "small transfers between rich accounts commit: {first:?}");
        expected[transfer.from as usize] -= transfer.amount;
        expected[transfer.to as usize] += transfer.amount;
    }
    // The accounts' opening and each transfer once: no copy ran a second time.
    assert_eq!(status.committed_total, 1 + all.len() as u64, "{status:?}");
    assert_eq!(balances(&setup, ACCOUNTS), expected);
    drop(setup);
    node.stop();
}

#[test]
fn concurrent_retries_of_one_request_id_run_once_under_two_phase_locking() {
    concurrent_retries_run_once(ConcurrencyControl::TwoPhaseLocking);
}

#[test]
fn concurrent_retries_of_one_request_id_run_once_under_optimistic_concurrency() {
    concurrent_retries_run_once(ConcurrencyControl::Optimistic);
}

/// One crash client: sends batches of transfers until the engine goes away or `stop` is
/// set; returns every request it sent, with the reply if one came.
fn crash_client(
    address: std::net::SocketAddr,
    client: u64,
    accounts: u64,
    stop: Arc<AtomicBool>,
) -> Vec<(Vec<u8>, Transfer, Option<InvokeResult>)> {
    let connection = BlockingClient::connect(address).expect("connect before the crash");
    let mut sent = Vec::new();
    for batch in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let requests = transfers(25, accounts, client * 1_000_003 + batch);
        let invocations = requests.iter().map(|(id, transfer)| transfer_invocation(id, transfer)).collect();
        match connection.invoke_many(invocations) {
            Ok(results) => {
                assert_eq!(results.len(), requests.len());
                sent.extend(requests.into_iter().zip(results).map(|((id, t), r)| (id, t, Some(r))));
            }
            Err(_) => {
                // The engine died with these in flight: not acknowledged.
                sent.extend(requests.into_iter().map(|(id, t)| (id, t, None)));
                break;
            }
        }
    }
    sent
}

fn sigkill_loses_nothing_acknowledged(cc: ConcurrencyControl) {
    const ACCOUNTS: u64 = 200;
    const INITIAL: i64 = 1_000_000;
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut engine = EngineProcess::start(directory.path(), &["--cc", cc.as_str(), "--executor-threads", "4"]);
    let setup = BlockingClient::connect(engine.address).expect("connect");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    assert_eq!(setup.status().expect("status").cc, cc.as_str());
    open_accounts(&setup, ACCOUNTS, INITIAL);
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            let (address, stop) = (engine.address, stop.clone());
            std::thread::spawn(move || crash_client(address, client, ACCOUNTS, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    engine.kill();
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<(Vec<u8>, Transfer, Option<InvokeResult>)> = Vec::new();
    for client in clients {
        all.extend(client.join().expect("client thread"));
    }
    engine.restart();

    let acknowledged = all.iter().filter(|(_, _, result)| result.is_some()).count();
    let unacknowledged = all.len() - acknowledged;
    assert!(acknowledged > 50, "the load ran before the crash ({acknowledged} acknowledged)");
    assert!(unacknowledged > 0, "the crash hit requests in flight");
    let client = BlockingClient::connect(engine.address).expect("connect after restart");
    assert_eq!(client.status().expect("status").cc, cc.as_str(), "the restarted engine runs the same protocol");
    // Retry every unacknowledged request, and every tenth acknowledged one.
    for (index, (id, transfer, result)) in all.iter_mut().enumerate() {
        match result {
            Some(first) if index % 10 == 0 => {
                let again = client.invoke(transfer_invocation(id, transfer)).expect("retry after restart");
                assert_eq!(&again, first, "a retried id returns its first outcome");
            }
            Some(_) => {}
            None => *result = Some(client.invoke(transfer_invocation(id, transfer)).expect("retry after restart")),
        }
    }
    let mut expected = vec![INITIAL; ACCOUNTS as usize];
    for (_, transfer, result) in &all {
        match result.as_ref().expect("every request has an outcome now") {
            InvokeResult::Committed { .. } => {
                expected[transfer.from as usize] -= transfer.amount;
                expected[transfer.to as usize] += transfer.amount;
            }
            other => panic!("transfers of small amounts must commit: {other:?}"),
        }
    }
    assert_eq!(balances(&client, ACCOUNTS), expected, "each transfer applied exactly once");
    eprintln!("{cc:?}: {} transfers, {acknowledged} acknowledged before the crash", all.len());
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_transfer_under_two_phase_locking() {
    sigkill_loses_nothing_acknowledged(ConcurrencyControl::TwoPhaseLocking);
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_transfer_under_optimistic_concurrency() {
    sigkill_loses_nothing_acknowledged(ConcurrencyControl::Optimistic);
}
