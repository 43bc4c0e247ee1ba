//! The SmallBank and travel workloads end to end: the harness (`leasehold-bench`) drives a
//! real in-process node (RocksDB in a temporary directory, the plugin loaded from its
//! built library, Cap'n Proto over loopback) for about two seconds, then checks the
//! workload's invariant. A few scripted SmallBank calls check the transaction semantics
//! (aborts, overdraft penalty, deltas) that the invariant relies on.

use leasehold_bench::run::{self, BenchConfig, BenchReport};
use leasehold_bench::workload::WorkloadKind;
use leasehold_client::{BlockingClient, Invocation, InvokeResult};
use leasehold_engine::config::Config;
use leasehold_engine::node::Node;
use leasehold_engine::rpc::RpcServer;
use leasehold_integration::plugin_bytes;
use std::time::{Duration, Instant};

/// A node with `plugin` deployed, serving clients on a free loopback port.
struct TestNode {
    node: Node,
    server: RpcServer,
    _directory: tempfile::TempDir,
}

impl TestNode {
    fn start(plugin: &str) -> TestNode {
        let directory = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            data_dir: directory.path().to_path_buf(),
            client_address: "127.0.0.1:0".parse().expect("literal address"),
            executor_threads: 2,
            ..Config::default()
        };
        let node = Node::start(config.clone()).expect("start node");
        let server = RpcServer::start(&config, node.handle()).expect("start RPC server");
        node.handle().deploy_plugin(&plugin_bytes(plugin)).expect("deploy plugin");
        TestNode { node, server, _directory: directory }
    }

    fn bench(&self, config: &BenchConfig) -> BenchReport {
        run::run(self.server.local_address(), config, |_| {}).expect("benchmark run")
    }

    fn stop(self) {
        self.server.stop();
        self.node.shutdown().expect("clean shutdown");
    }
}

fn config(workload: WorkloadKind, keys: u64, initial_value: i64) -> BenchConfig {
    BenchConfig {
        workload,
        keys,
        initial_value,
        theta: 0.0,
        clients: 2,
        batch: 50,
        pipeline: 2,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(2),
        rate: None,
        seed: 7,
        load: true,
    }
}

#[test]
fn smallbank_keeps_the_sum_of_balances_plus_committed_deltas() {
    let node = TestNode::start("smallbank");
    // Small balances, so that TransactSavings and SendPayment on hot customers hit
    // insufficient funds and WriteCheck overdraws: the aborts must not move the sum.
    let report = node.bench(&config(WorkloadKind::Smallbank, 10_000, 300));
    node.stop();
    assert!(report.committed > 100, "too few commits to mean anything: {}", report.summary());
    assert!(report.aborted > 0, "small balances should make some transactions abort: {}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let (expected, found) = (report.sum_expected.expect("a loaded run checks"), report.sum_found.expect("summed"));
    assert_eq!(expected, found);
    // Deposits and withdrawals really moved money, so the check is not just "unchanged".
    assert_ne!(found, 2 * 10_000 * 300, "the sum should have moved");
}

#[test]
fn travel_never_overbooks_when_hotels_and_flights_sell_out() {
    let node = TestNode::start("travel");
    // Capacity 20 over 10 hotels and 10 flights sells out early in the run, so many
    // reservations find one part full: those must leave the other part untouched.
    let report = node.bench(&config(WorkloadKind::Travel, 10, 20));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert!(report.aborted > 0, "sold-out hotels and flights should abort reservations: {}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    let held = report.sum_found.expect("a loaded run audits");
    assert!(held > 0 && held <= 10 * 20, "reservations held: {held}");
}

#[test]
fn travel_reservations_hold_both_parts() {
    let node = TestNode::start("travel");
    // Default shape (100 hotels and flights, room to spare): the counters are uneven, so
    // a reservation recorded with the wrong or a missing part shows as a counter that
    // differs from what users hold (a sold-out run would hide that: all counters equal).
    let (hotels, capacity) = WorkloadKind::Travel.defaults();
    let report = node.bench(&config(WorkloadKind::Travel, hotels, capacity));
    node.stop();
    assert!(report.committed > 100, "{}", report.summary());
    assert_eq!(report.invariant_error(), None, "{}", report.summary());
    assert!(report.sum_found > Some(0), "{}", report.summary());
}

fn call(client: &BlockingClient, workflow: &str, arguments: &str) -> Result<serde_json::Value, String> {
    let invocation = Invocation::json("smallbank", workflow, arguments);
    match client.invoke(invocation).expect("invoke") {
        InvokeResult::Committed { output_json, .. } => {
            Ok(serde_json::from_str(&output_json.expect("smallbank outputs convert to JSON")).expect("valid JSON"))
        }
        InvokeResult::Aborted { message, .. } => Err(message),
        InvokeResult::Rejected { message, .. } => panic!("{workflow} rejected: {message}"),
    }
}

#[test]
fn smallbank_transactions_follow_the_specification() {
    let started = Instant::now();
    let node = TestNode::start("smallbank");
    let client = BlockingClient::connect(node.server.local_address()).expect("connect");
    call(&client, "load", r#"{"first":0,"count":3,"balance":100}"#).expect("load");
    let delta = |output: serde_json::Value| output["delta"].as_i64().expect("receipts carry a delta");

    // SendPayment and TransactSavings abort on insufficient funds and change nothing.
    let refused = call(&client, "send_payment", r#"{"from":0,"to":1,"amount":101}"#).expect_err("too much");
    assert!(refused.contains("insufficient funds"), "{refused}");
    assert!(call(&client, "transact_savings", r#"{"customer":0,"amount":101}"#).is_err());
    assert_eq!(delta(call(&client, "send_payment", r#"{"from":0,"to":1,"amount":100}"#).expect("pays")), 0);
    assert_eq!(delta(call(&client, "transact_savings", r#"{"customer":0,"amount":40}"#).expect("withdraws")), -40);
    // Customer 0 now has savings 60, checking 0: a check over 60 costs the penalty of 1.
    let overdraft = call(&client, "write_check", r#"{"customer":0,"amount":70}"#).expect("write check");
    assert_eq!((delta(overdraft.clone()), overdraft["checking"].as_i64()), (-71, Some(-71)));
    assert_eq!(delta(call(&client, "write_check", r#"{"customer":2,"amount":70}"#).expect("covered")), -70);
    assert_eq!(delta(call(&client, "deposit_checking", r#"{"customer":2,"amount":5}"#).expect("deposit")), 5);
    // Amalgamate moves everything of customer 1 (100 + 200) into customer 2's checking.
    let merged = call(&client, "amalgamate", r#"{"from":1,"to":2}"#).expect("amalgamate");
    assert_eq!((delta(merged.clone()), merged["checking"].as_i64()), (0, Some(100 - 70 + 5 + 300)));
    let emptied = call(&client, "balance", r#"{"customer":1}"#).expect("balance");
    assert_eq!((emptied["savings"].as_i64(), emptied["checking"].as_i64()), (Some(0), Some(0)));
    let total = call(&client, "total", r#"{"first":0,"count":3}"#).expect("total");
    assert_eq!(total["sum"].as_i64(), Some(600 - 40 - 71 - 70 + 5));
    drop(client);
    node.stop();
    eprintln!("smallbank semantics checked in {:?}", started.elapsed());
}
