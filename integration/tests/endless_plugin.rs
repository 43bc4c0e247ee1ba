//! A hostile plugin whose function never returns (`plugins/endless`), against a real
//! engine. Native code cannot be stopped, so:
//! * the call shows in `status` (naming the plugin and the function) and in an error line
//!   of the log once it has run longer than `--plugin-call-warn-ms`, and the node keeps
//!   answering status and plugin listings while the call spins;
//! * past `--plugin-call-abandon-ms` the node abandons the call: its transaction aborts as
//!   `plugin-timed-out`, a transaction queued behind it on the same key commits, other
//!   plugins are served again, the plugin is quarantined (refused with a clear kind)
//!   until it is deployed again, and the abandoned call, still spinning, never sees the
//!   value it holds change under it.
//! * the same holds under the baseline protocols (`--cc 2pl`, `--cc occ`), whose
//!   watchdog abandons the call, releases the locks it holds (2PL) and starts an executor
//!   in place of the stuck one;
//! * in a cluster the same holds, whether the spinning transaction holds a key of its own
//!   node or one borrowed from a peer (which gets it back unchanged), and the epochs of
//!   every node go on; and again under the baselines of a cluster, where the spinning
//!   transaction holds (2PL) a lock in another node's record region.

use leasehold_client::{AbortKind, BlockingClient, Invocation, InvokeResult, RejectionKind};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, plugin_bytes, EngineProcess, Launch};
use std::time::{Duration, Instant};

#[test]
fn an_endless_plugin_call_is_reported_and_the_node_keeps_answering() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut launch = Launch::default();
    launch.log_label = Some("endless".into());
    // Abandoning is off here (0), so that the report of a call that keeps spinning is seen.
    let engine = EngineProcess::start_with(
        &directory.path().join("node"),
        launch,
        &["--plugin-call-warn-ms", "300", "--plugin-call-abandon-ms", "0"],
    );
    let address = engine.address;
    let client = BlockingClient::connect(address).expect("connect");
    let info = client.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin");
    assert_eq!(info.name, "endless");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking too");
    assert!(client.status().expect("status").overdue_plugin_calls.is_empty(), "nothing runs yet");

    // The call never returns, so its client waits on a thread of its own; killing the
    // engine at the end of the test ends that wait.
    std::thread::spawn(move || {
        let spinner = BlockingClient::connect(address).expect("connect");
        let _ = spinner.invoke(Invocation::json("endless", "spin", "{}"));
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    let overdue = loop {
        let status = client.status().expect("the node answers status while the plugin spins");
        if !status.overdue_plugin_calls.is_empty() {
            break status.overdue_plugin_calls;
        }
        assert!(Instant::now() < deadline, "the endless call was never reported");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert!(overdue[0].starts_with("endless ") && overdue[0].contains(": spin running for"), "{overdue:?}");
    let plugins = client.list_plugins().expect("the node lists plugins while the plugin spins");
    assert!(plugins.iter().any(|plugin| plugin.name == "banking"), "{plugins:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine
        .log_lines()
        .iter()
        .any(|line| line.contains("a plugin call has not returned") && line.contains("spin"))
    {
        assert!(Instant::now() < deadline, "no error line names the call: {:?}", engine.log_lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still spinning: the report stays until the call returns.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(client.status().expect("status").overdue_plugin_calls.len(), 1);
}

#[test]
fn an_endless_call_is_abandoned_its_plugin_quarantined_and_other_work_goes_on() {
    abandon_and_go_on("lease");
}

#[test]
fn under_2pl_an_endless_call_is_abandoned_its_locks_released_and_other_work_goes_on() {
    abandon_and_go_on("2pl");
}

#[test]
fn under_occ_an_endless_call_is_abandoned_and_other_work_goes_on() {
    abandon_and_go_on("occ");
}

/// The abandonment scenario on one node running the concurrency control `cc`.
fn abandon_and_go_on(cc: &str) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut launch = Launch::default();
    launch.log_label = Some(format!("endless-abandon-{cc}"));
    let engine = EngineProcess::start_with(
        &directory.path().join("node"),
        launch,
        &["--plugin-call-warn-ms", "200", "--plugin-call-abandon-ms", "1000", "--cc", cc],
    );
    let address = engine.address;
    let client = BlockingClient::connect(address).expect("connect");
    client.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    let open = client.invoke(Invocation::json("banking", "open", r#"{"first":0,"count":4,"balance":100}"#));
    assert!(open.expect("open accounts").is_committed());
    let put = |value: i64| Invocation::json("endless", "put", format!(r#"{{"key":7,"value":{value}}}"#));
    assert!(client.invoke(put(1)).expect("put").is_committed());

    // The spinning call and a write of the same key in one message, so that the write
    // waits behind the spinning call (lease: in the same epoch; 2PL: for its lock; OCC:
    // it need not wait, holding no lock while the call runs).
    let (results_sender, results) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spinner = BlockingClient::connect(address).expect("connect");
        let held = Invocation::json("endless", "spin_holding", r#"{"key":7}"#);
        let _ = results_sender.send(spinner.invoke_many(vec![held, put(2)]));
    });
    let results = results.recv_timeout(Duration::from_secs(30)).expect("the spinning call was never abandoned");
    let results = results.expect("invokeMany answered");
    match &results[0] {
        InvokeResult::Aborted { kind: AbortKind::PluginTimedOut, message, .. } => {
            assert!(message.contains("abandoned"), "{message}")
        }
        other => panic!("the spinning call ended as {other:?}"),
    }
    assert!(results[1].is_committed(), "the write queued behind it: {:?}", results[1]);
    let value = client.read_key("endless", "cells", &7u64.to_be_bytes()).expect("read").expect("the key exists");
    assert_eq!(value, 2i64.to_le_bytes(), "the queued write took effect, the abandoned one did not");

    // Other plugins are served, the abandoned call's plugin is quarantined.
    let transfer = client.invoke(Invocation::json("banking", "transfer", r#"{"from":0,"to":1,"amount":30}"#));
    assert!(transfer.expect("transfer").is_committed(), "banking is served after the abandonment");
    assert_eq!(banking_balances(&client, 4), vec![70, 130, 100, 100]);
    match client.invoke(put(3)).expect("answered") {
        InvokeResult::Rejected { kind: RejectionKind::PluginQuarantined, message } => {
            assert!(message.contains("endless") && message.contains("quarantined"), "{message}")
        }
        other => panic!("a call of the quarantined plugin: {other:?}"),
    }
    let status = client.status().expect("status");
    assert_eq!(status.abandoned_plugin_calls, 1);
    assert_eq!(
        status.overdue_plugin_calls.len(),
        1,
        "the abandoned call still spins: {:?}",
        status.overdue_plugin_calls
    );
    assert!(status.overdue_plugin_calls[0].contains("spin_holding"), "{:?}", status.overdue_plugin_calls);
    assert!(
        engine.log_lines().iter().any(|line| line.contains("abandoned a plugin call") && line.contains("endless")),
        "no error line names the abandoned plugin"
    );

    // A new deployment lifts the quarantine; the node keeps going (lease: with one
    // executor thread lost; 2PL and OCC: with a new executor in place of the stuck one).
    client.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin again");
    assert!(client.invoke(put(4)).expect("put").is_committed(), "the redeployed plugin takes calls");
    let value = client.read_key("endless", "cells", &7u64.to_be_bytes()).expect("read").expect("the key exists");
    assert_eq!(value, 4i64.to_le_bytes());
    for _ in 0..20 {
        let transfer = client.invoke(Invocation::json("banking", "transfer", r#"{"from":1,"to":2,"amount":1}"#));
        assert!(transfer.expect("transfer").is_committed());
    }
    assert_eq!(banking_balances(&client, 4).iter().sum::<i64>(), 400, "the banking invariant holds");
}

#[test]
fn in_a_cluster_an_endless_call_is_abandoned_on_its_node_and_every_node_goes_on() {
    abandon_in_a_cluster("lease");
}

#[test]
fn in_a_cluster_under_2pl_an_endless_call_is_abandoned_its_locks_released_and_every_node_goes_on() {
    abandon_in_a_cluster("2pl");
}

#[test]
fn in_a_cluster_under_occ_an_endless_call_is_abandoned_and_every_node_goes_on() {
    abandon_in_a_cluster("occ");
}

fn abandon_in_a_cluster(cc: &str) {
    const NODES: u16 = 3;
    const ACCOUNTS: u64 = 6;
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = LocalCluster::start(
        directory.path(),
        NODES,
        "shm",
        &["--plugin-call-warn-ms", "200", "--plugin-call-abandon-ms", "1000", "--cc", cc],
    );
    cluster.wait_until_synced(Duration::from_secs(60));
    let setup = cluster.connect(0).expect("connect to node 0");
    setup.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin (reaches every node)");
    setup.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    let open = setup.invoke(Invocation::json("banking", "open", r#"{"first":0,"count":6,"balance":100}"#));
    assert!(open.expect("open accounts").is_committed());
    let put = |value: i64| Invocation::json("endless", "put", format!(r#"{{"key":7,"value":{value}}}"#));
    assert!(setup.invoke(put(0)).expect("put").is_committed());

    // Key 7 has one holder: through each node in turn, the spinning transaction holds it
    // once as a local key and at least once as a key borrowed from a peer.
    for node in 0..usize::from(NODES) {
        let address = cluster.addresses[node];
        let value = node as i64 + 1;
        let (results_sender, results) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let spinner = BlockingClient::connect(address).expect("connect");
            let held = Invocation::json("endless", "spin_holding", r#"{"key":7}"#);
            let _ = results_sender.send(spinner.invoke_many(vec![held, put(value)]));
        });
        let results = results.recv_timeout(Duration::from_secs(30)).expect("the spinning call was never abandoned");
        let results = results.expect("invokeMany answered");
        match &results[0] {
            InvokeResult::Aborted { kind: AbortKind::PluginTimedOut, message, .. } => {
                assert!(message.contains("abandoned"), "{message}")
            }
            other => panic!("through node {node}, the spinning call ended as {other:?}"),
        }
        assert!(results[1].is_committed(), "through node {node}, the write queued behind it: {:?}", results[1]);

        let client = cluster.connect(node).expect("connect");
        let stored = client.read_key("endless", "cells", &7u64.to_be_bytes()).expect("read").expect("the key exists");
        assert_eq!(stored, value.to_le_bytes(), "through node {node}: the queued write took effect");
        match client.invoke(put(-1)).expect("answered") {
            InvokeResult::Rejected { kind: RejectionKind::PluginQuarantined, message } => {
                assert!(message.contains("quarantined"), "{message}")
            }
            other => panic!("node {node} ran a call of the plugin it quarantined: {other:?}"),
        }
        let status = client.status().expect("status");
        assert_eq!(status.abandoned_plugin_calls, 1, "node {node}");
        // Every node still runs epochs: transfers through each of them commit.
        for through in 0..usize::from(NODES) {
            let client = cluster.connect(through).expect("connect");
            let transfer = format!(r#"{{"from":{through},"to":{},"amount":5}}"#, (through + 1) % ACCOUNTS as usize);
            let transfer = client.invoke(Invocation::json("banking", "transfer", transfer)).expect("transfer");
            assert!(transfer.is_committed(), "after the abandonment on node {node}, a transfer through node {through}");
        }
    }
    let balances = banking_balances(&setup, ACCOUNTS);
    assert_eq!(balances.iter().sum::<i64>(), 600, "the banking invariant holds: {balances:?}");

    // Deploying again lifts the quarantine everywhere.
    setup.deploy_plugin(&plugin_bytes("endless")).expect("deploy the endless plugin again");
    for node in 0..usize::from(NODES) {
        let client = cluster.connect(node).expect("connect");
        assert!(client.invoke(put(10 + node as i64)).expect("put").is_committed(), "node {node} takes calls again");
    }
}
