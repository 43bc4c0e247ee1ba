//! Property test: the engine is serializable in timestamp order, under every concurrency
//! control (`lease`, `2pl`, `occ`).
//!
//! Random three-step scripted transactions (the `testkit` plugin) over a few keys are
//! submitted concurrently to a real in-process node (RocksDB in a temporary directory,
//! the plugin loaded from its built library). Then the same scripts are run one by one,
//! in the engine's timestamp order, by a simple reference model. Every outcome and the
//! final value of every key must be equal.
//!
//! The same property holds on three engine processes (shm fabric), with the scripts
//! sent to all three nodes at once and the keys spread over them: under leases the
//! serial order is the timestamp order (epoch, node, sequence); under the baselines of a
//! cluster it is (epoch, commit number), see `model::Timestamp`.

use leasehold_engine::config::{ConcurrencyControl, Config};
use leasehold_engine::model::{AbortKind, Arguments, Invocation, Outcome, RequestId};
use leasehold_engine::node::Node;
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::plugin_bytes;
use leasehold_plugin_api::testkit::{Op, Program};
use proptest::prelude::*;
use std::collections::HashMap;

const CELLS: u8 = 5;

/// What the reference model expects a transaction to return.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Committed(Vec<i64>),
    Aborted(AbortKind),
}

/// Serial execution of one program against `state`.
fn run_serially(program: &Program, state: &mut HashMap<u8, i64>) -> Expected {
    let mut writes: HashMap<u8, i64> = HashMap::new();
    let mut reads = Vec::new();
    for step in &program.steps {
        for op in step {
            let value = |cell: u8, writes: &HashMap<u8, i64>| *writes.get(&cell).or(state.get(&cell)).unwrap_or(&0);
            match *op {
                Op::Read(cell) => reads.push(value(cell, &writes)),
                Op::Add(cell, delta) => {
                    let new = value(cell, &writes).wrapping_add(delta);
                    writes.insert(cell, new);
                }
                Op::Set(cell, new) => {
                    writes.insert(cell, new);
                }
                Op::AbortIfNegative(cell) => {
                    if value(cell, &writes) < 0 {
                        return Expected::Aborted(AbortKind::Logic);
                    }
                }
                Op::Panic => return Expected::Aborted(AbortKind::PluginPanic),
                Op::Undeclared(_) => return Expected::Aborted(AbortKind::UndeclaredAccess),
            }
        }
    }
    state.extend(writes);
    Expected::Committed(reads)
}

fn op() -> impl Strategy<Value = Op> {
    let cell = 0..CELLS;
    prop_oneof![
        20 => cell.clone().prop_map(Op::Read),
        20 => (cell.clone(), -20i64..20).prop_map(|(c, d)| Op::Add(c, d)),
        5 => (cell.clone(), -50i64..50).prop_map(|(c, v)| Op::Set(c, v)),
        10 => cell.clone().prop_map(Op::AbortIfNegative),
        // Rare: a panic and an undeclared access, which must abort cleanly.
        1 => Just(Op::Panic),
        1 => cell.prop_map(Op::Undeclared),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    let step = || proptest::collection::vec(op(), 0..4);
    (step(), step(), step()).prop_map(|(a, b, c)| Program { steps: [a, b, c] })
}

fn encode(program: &Program) -> Vec<u8> {
    leasehold_sdk::encode(program).expect("encode program")
}

fn check(cc: ConcurrencyControl, batches: Vec<Vec<Program>>) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = Config { data_dir: directory.path().to_path_buf(), executor_threads: 2, cc, ..Config::default() };
    let node = Node::start(config).expect("start node");
    let handle = node.handle();
    handle.deploy_plugin(&plugin_bytes("testkit")).expect("deploy testkit");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut results: Vec<(Program, Outcome)> = Vec::new();
    let mut request = 0u64;
    for batch in batches {
        // Everything in a batch is submitted before any reply is awaited, so batches
        // become epochs with many concurrent, conflicting transactions (2pl and occ run
        // them at the same time on both executors).
        let pendings: Vec<_> = batch
            .into_iter()
            .map(|program| {
                request += 1;
                let invocation = Invocation {
                    plugin: "testkit".into(),
                    workflow: "program".into(),
                    arguments: Arguments::Encoded(encode(&program)),
                    request_id: RequestId::Id(request.to_be_bytes().to_vec().into()),
                };
                (program, handle.submit(invocation).expect("testkit programs are always planned"))
            })
            .collect();
        for (program, pending) in pendings {
            let completed = runtime.block_on(pending.wait()).expect("transaction completes");
            results.push((program, completed.outcome));
        }
    }
    results.sort_by_key(|(_, outcome)| outcome.timestamp());
    let timestamps: Vec<_> = results.iter().map(|(_, o)| o.timestamp()).collect();
    let mut unique = timestamps.clone();
    unique.dedup();
    assert_eq!(unique.len(), timestamps.len(), "timestamps must be unique");

    let mut state = HashMap::new();
    for (program, outcome) in &results {
        let expected = run_serially(program, &mut state);
        let actual = match outcome {
            Outcome::Committed { output, .. } => {
                Expected::Committed(leasehold_sdk::decode(output).expect("testkit output decodes"))
            }
            Outcome::Aborted { kind, .. } => Expected::Aborted(*kind),
        };
        assert_eq!(actual, expected, "transaction at {} with {program:?}", outcome.timestamp());
    }
    for cell in 0..CELLS {
        let pending = handle.read_key("testkit", "cells", &[cell]).expect("read key");
        let value = runtime.block_on(pending.wait()).expect("read completes");
        let value = value.map(|bytes| i64::from_le_bytes(bytes.try_into().expect("8-byte value")));
        assert_eq!(value.unwrap_or(0), *state.get(&cell).unwrap_or(&0), "final value of cell {cell}");
    }
    assert_eq!(handle.status().cc, cc.as_str(), "the node runs the requested concurrency control");
    node.shutdown().expect("clean shutdown");
}

/// The reference model's view of a client's result.
fn expected_of(result: &leasehold_client::InvokeResult) -> Expected {
    use leasehold_client::{AbortKind as Kind, InvokeResult};
    match result {
        InvokeResult::Committed { output, .. } => {
            Expected::Committed(leasehold_sdk::decode(output).expect("testkit output decodes"))
        }
        InvokeResult::Aborted { kind, .. } => Expected::Aborted(match kind {
            Kind::Logic => AbortKind::Logic,
            Kind::UndeclaredAccess => AbortKind::UndeclaredAccess,
            Kind::PluginPanic => AbortKind::PluginPanic,
            other => panic!("no testkit program aborts with {other:?}"),
        }),
        InvokeResult::Rejected { kind, message } => {
            panic!("a request was refused in a healthy cluster: {kind:?} {message}")
        }
    }
}

/// Every cell's value, read through `client`.
fn cells_through(client: &leasehold_client::BlockingClient) -> HashMap<u8, i64> {
    (0..CELLS)
        .map(|cell| {
            let value = client.read_key("testkit", "cells", &[cell]).expect("read a cell");
            (cell, value.map_or(0, |bytes| i64::from_le_bytes(bytes.try_into().expect("8-byte value"))))
        })
        .collect()
}

/// Runs proptest `cases` of concurrent batches on a three-node cluster under `cc`, each
/// case starting from the cells the previous one left.
fn check_cluster(cc: &str, cases: u32) {
    use leasehold_client::Invocation as ClientInvocation;
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = LocalCluster::start(directory.path(), 3, "shm", &["--cc", cc]);
    cluster.wait_until_synced(std::time::Duration::from_secs(60));
    let reader = cluster.connect(0).expect("connect");
    reader.deploy_plugin(&plugin_bytes("testkit")).expect("deploy testkit");
    let next_request = std::sync::atomic::AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
    let outcome = runner.run(&batches(), |batches| {
        let mut state = cells_through(&reader);
        let mut results = Vec::new();
        for batch in batches {
            // Each node gets a share of the batch, all in one message, all nodes at once.
            let shares: Vec<Vec<(Program, Vec<u8>)>> = (0..3)
                .map(|node| {
                    batch
                        .iter()
                        .skip(node)
                        .step_by(3)
                        .map(|program| {
                            let request = next_request.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            (program.clone(), format!("serial-{request}").into_bytes())
                        })
                        .collect()
                })
                .collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = shares
                    .into_iter()
                    .enumerate()
                    .map(|(node, share)| {
                        let cluster = &cluster;
                        scope.spawn(move || {
                            let client = cluster.connect(node).expect("connect");
                            let invocations = share
                                .iter()
                                .map(|(program, id)| {
                                    ClientInvocation::encoded("testkit", "program", encode(program))
                                        .with_request_id(id.clone())
                                })
                                .collect();
                            let answers = client.invoke_many(invocations).expect("invoke");
                            share.into_iter().map(|(program, _)| program).zip(answers).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for handle in handles {
                    results.extend(handle.join().expect("client thread"));
                }
            });
        }
        let order = |result: &leasehold_client::InvokeResult| {
            let timestamp = result.timestamp().expect("every request ran");
            let node = if cc == "lease" { timestamp.node } else { 0 };
            (timestamp.epoch, node, timestamp.sequence)
        };
        results.sort_by_key(|(_, result)| order(result));
        let positions: Vec<_> = results.iter().map(|(_, result)| order(result)).collect();
        let mut unique = positions.clone();
        unique.dedup();
        prop_assert_eq!(unique.len(), positions.len(), "positions in the serial order are unique");
        for (program, result) in &results {
            let expected = run_serially(program, &mut state);
            prop_assert_eq!(expected_of(result), expected, "transaction at {:?} with {:?}", order(result), program);
        }
        prop_assert_eq!(cells_through(&reader), state, "final values of the cells");
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{cc} on three nodes: {failure}");
    }
}

#[test]
fn three_nodes_under_leases_equal_serial_execution() {
    check_cluster("lease", 8);
}

#[test]
fn three_nodes_under_two_phase_locking_equal_serial_execution() {
    check_cluster("2pl", 8);
}

#[test]
fn three_nodes_under_optimistic_concurrency_equal_serial_execution() {
    check_cluster("occ", 8);
}

fn batches() -> impl Strategy<Value = Vec<Vec<Program>>> {
    proptest::collection::vec(proptest::collection::vec(program(), 1..60), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn concurrent_epochs_equal_serial_execution_in_timestamp_order(batches in batches()) {
        check(ConcurrencyControl::Lease, batches);
    }

    #[test]
    fn two_phase_locking_equals_serial_execution_in_timestamp_order(batches in batches()) {
        check(ConcurrencyControl::TwoPhaseLocking, batches);
    }

    #[test]
    fn optimistic_concurrency_equals_serial_execution_in_timestamp_order(batches in batches()) {
        check(ConcurrencyControl::Optimistic, batches);
    }
}

#[test]
fn final_state_survives_a_restart() {
    for cc in [ConcurrencyControl::Lease, ConcurrencyControl::TwoPhaseLocking, ConcurrencyControl::Optimistic] {
        final_state_survives_a_restart_under(cc);
    }
}

fn final_state_survives_a_restart_under(cc: ConcurrencyControl) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = Config { data_dir: directory.path().to_path_buf(), cc, ..Config::default() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let program = Program { steps: [vec![Op::Add(1, 5)], vec![Op::Add(2, -3)], vec![Op::Read(1), Op::Read(2)]] };
    {
        let node = Node::start(config.clone()).expect("start node");
        node.handle().deploy_plugin(&plugin_bytes("testkit")).expect("deploy");
        for request in 0..10u8 {
            let invocation = Invocation {
                plugin: "testkit".into(),
                workflow: "program".into(),
                arguments: Arguments::Encoded(encode(&program)),
                request_id: RequestId::Id(vec![request].into()),
            };
            let pending = node.handle().submit(invocation).expect("planned");
            runtime.block_on(pending.wait()).expect("completes");
        }
        node.shutdown().expect("shutdown");
    }
    let node = Node::start(config).expect("restart node");
    assert_eq!(node.handle().plugins().len(), 1, "the deployed plugin is loaded again after a restart");
    let read = |cell: u8| {
        let pending = node.handle().read_key("testkit", "cells", &[cell]).expect("read");
        runtime
            .block_on(pending.wait())
            .expect("read completes")
            .map(|b| i64::from_le_bytes(b.try_into().expect("i64")))
    };
    assert_eq!(read(1), Some(50), "{cc:?}");
    assert_eq!(read(2), Some(-30), "{cc:?}");
    // A retried id returns the first outcome and does not run again.
    let invocation = Invocation {
        plugin: "testkit".into(),
        workflow: "program".into(),
        arguments: Arguments::Encoded(encode(&program)),
        request_id: RequestId::Id(vec![0].into()),
    };
    let completed = runtime.block_on(node.handle().submit(invocation).expect("planned").wait()).expect("completes");
    assert_eq!(
        leasehold_sdk::decode::<Vec<i64>>(match &completed.outcome {
            Outcome::Committed { output, .. } => output,
            other => panic!("expected the first outcome, got {other:?}"),
        })
        .expect("decodes"),
        vec![5, -3]
    );
    assert_eq!(read(1), Some(50), "the retry must not run again ({cc:?})");
}
