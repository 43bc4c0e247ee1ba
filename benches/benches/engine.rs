//! Criterion micro benchmarks of the engine's hot paths, without the network:
//! resolving an epoch's keys to resident slots, building the task precedence graph,
//! one plugin call through the C ABI, executing an epoch on the executor pool (dispatch
//! by the graph, host callbacks, write buffering), making an epoch durable and
//! checkpointing it, and whole transactions through an in-process node. The fabric's
//! one-sided operations per backend are measured in `engine/fabric/benches`.
//!
//! Run with `cargo bench -p leasehold-bench --bench engine` (after building the
//! workspace, which builds the banking plugin's library).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use leasehold_engine::config::Config;
use leasehold_engine::model::{Arguments, Invocation, Outcome, RequestId, Timestamp};
use leasehold_engine::node::Node;
use leasehold_engine::plugin::{AccessLimits, LoadedPlugin, PluginRegistry};
use leasehold_engine::storage::slots::SlotStore;
use leasehold_engine::storage::{data_key_into, EpochRecord, Storage};
use leasehold_engine::txn::access::AccessMode;
use leasehold_engine::txn::executor::Executor;
use leasehold_engine::txn::tpg::GraphBuilder;
use leasehold_engine::txn::{PlannedTransaction, PreparedTransaction, TransactionBody};
use leasehold_plugin_api::banking::{Open, Transfer};
use std::path::PathBuf;
use std::sync::Arc;

fn banking_library() -> Vec<u8> {
    // Benchmarks run from target/release/deps, next to the workspace's libraries.
    let executable = std::env::current_exe().expect("own path");
    let profile: PathBuf = executable.parent().and_then(|deps| deps.parent()).expect("profile directory").to_path_buf();
    std::fs::read(profile.join("libleasehold_plugin_banking.so"))
        .expect("build the workspace first: the banking plugin library is missing")
}

/// Pseudo-random transfers over `keys` accounts.
fn transfers(count: usize, keys: u64) -> Vec<(u64, u64)> {
    let mut state = 88172645463325252u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let from = next() % keys;
            (from, (from + 1 + next() % (keys - 1)) % keys)
        })
        .collect()
}

/// An epoch's 10,000 key lookups among 100,000 resident keys (banking's storage keys):
/// one by one, batched with prefetching (what the epoch driver does), and in the
/// `HashMap<Box<[u8]>, _>` the slot store used before.
fn resident_keys(c: &mut Criterion) {
    let key = |account: u64| {
        let mut storage_key = Vec::new();
        data_key_into(&mut storage_key, 7, &account.to_le_bytes());
        storage_key
    };
    let mut store = SlotStore::new();
    let mut reference: rustc_hash::FxHashMap<Box<[u8]>, u32> = rustc_hash::FxHashMap::default();
    for account in 0..100_000u64 {
        store.insert(&key(account), Some(1_000_000i64.to_le_bytes().to_vec()));
        reference.insert(key(account).into(), account as u32);
    }
    let epoch: Vec<Vec<u8>> =
        transfers(5_000, 100_000).into_iter().flat_map(|(from, to)| [key(from), key(to)]).collect();
    let mut group = c.benchmark_group("resident-keys");
    group.throughput(Throughput::Elements(epoch.len() as u64));
    group.bench_function("lookup-10000-of-100k-one-by-one", |b| {
        b.iter(|| epoch.iter().filter(|key| store.lookup(key).is_some()).count())
    });
    let mut found = Vec::with_capacity(epoch.len());
    group.bench_function("lookup-10000-of-100k-batched", |b| {
        b.iter(|| {
            found.clear();
            store.lookup_many(epoch.iter().map(Vec::as_slice), &mut found);
            found.len()
        })
    });
    group.bench_function("lookup-10000-of-100k-boxed-key-hash-map", |b| {
        b.iter(|| epoch.iter().filter(|key| reference.contains_key(key.as_slice())).count())
    });
    group.finish();
}

fn task_precedence_graph(c: &mut Criterion) {
    let mut group = c.benchmark_group("tpg");
    for (name, keys) in [("uniform-100k-keys", 100_000u64), ("hot-100-keys", 100)] {
        let epoch = transfers(5_000, keys);
        group.throughput(Throughput::Elements(epoch.len() as u64));
        let mut builder = GraphBuilder::new();
        group.bench_function(format!("build-5000-transfers-{name}"), |b| {
            b.iter(|| {
                builder.build(epoch.len(), |t| {
                    let (from, to) = epoch[t];
                    [(from as u32, AccessMode::Write), (to as u32, AccessMode::Write)]
                })
            })
        });
    }
    group.finish();
}

/// Banking deployed in a registry of its own (no node around it): what the plugin and
/// executor benchmarks call into.
fn banking_plugin(directory: &std::path::Path) -> Arc<LoadedPlugin> {
    let storage = Arc::new(Storage::open(&directory.join("rocksdb")).expect("open storage"));
    let registry = PluginRegistry::open(directory.join("plugins"), storage).expect("open registry");
    registry.deploy(&banking_library()).expect("deploy banking");
    registry.get("banking").expect("banking is deployed")
}

const LIMITS: AccessLimits = AccessLimits { keys_max: 200_000, key_bytes_max: 1024 };

/// One plugin call through the C ABI: banking plans a transfer (decodes its arguments,
/// declares two keys through the host's callback).
fn plugin_call(c: &mut Criterion) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let plugin = banking_plugin(directory.path());
    let workflow = plugin.workflow_named("transfer").expect("banking has transfer");
    let arguments = leasehold_sdk::encode(&Transfer { from: 1, to: 2, amount: 3 }).expect("encode");
    let mut group = c.benchmark_group("plugin");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plan-one-transfer", |b| b.iter(|| plugin.plan(workflow, &arguments, LIMITS).expect("plan")));
    group.finish();
}

/// The execution phase of one epoch: 5,000 planned transfers over 100,000 resident
/// accounts, dispatched by their precedence graph to the executor pool (two threads, as
/// the node's default), each running banking's functions against the slots.
fn executor_dispatch(c: &mut Criterion) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let plugin = banking_plugin(directory.path());
    let transfer = plugin.workflow_named("transfer").expect("banking has transfer");
    let open = plugin.workflow_named("open").expect("banking has open");
    let mut executor = Executor::new(2, None).expect("executor threads");
    let mut slots = SlotStore::new();
    let mut graph_builder = GraphBuilder::new();
    let mut sequence = 0u32;
    // Plans `body` and gives it its slots (new keys start absent) and the next timestamp.
    let mut prepare = |slots: &mut SlotStore, workflow: u32, arguments: Vec<u8>| {
        let accesses = plugin.plan(workflow, &arguments, LIMITS).expect("plan");
        let transaction_slots = accesses
            .entries()
            .iter()
            .map(|entry| {
                let mut storage_key = Vec::new();
                data_key_into(&mut storage_key, plugin.tables[entry.table as usize].table_id, accesses.key(entry));
                slots.lookup(&storage_key).unwrap_or_else(|| slots.insert(&storage_key, None))
            })
            .collect();
        sequence += 1;
        let planned = PlannedTransaction {
            plugin: plugin.clone(),
            body: TransactionBody::Workflow { workflow, arguments },
            accesses,
            request_id: RequestId::Untracked,
        };
        PreparedTransaction { planned, timestamp: Timestamp { epoch: 1, node: 0, sequence }, slots: transaction_slots }
    };
    let mut run = |executor: &mut Executor, transactions: Vec<PreparedTransaction>| {
        let graph = graph_builder.build(transactions.len(), |t| {
            let transaction = &transactions[t];
            transaction.planned.accesses.entries().iter().zip(&transaction.slots).map(|(e, s)| (s.0, e.mode))
        });
        executor.run(transactions, graph).1
    };
    let opening: Vec<_> = (0..10u64)
        .map(|block| {
            let arguments = leasehold_sdk::encode(&Open { first: block * 10_000, count: 10_000, balance: 1_000_000 });
            prepare(&mut slots, open, arguments.expect("encode"))
        })
        .collect();
    assert!(run(&mut executor, opening).iter().all(Outcome::is_committed), "accounts open");
    let epoch = transfers(5_000, 100_000);
    let mut group = c.benchmark_group("executor");
    group.throughput(Throughput::Elements(epoch.len() as u64));
    group.sample_size(30);
    group.bench_function("run-epoch-of-5000-transfers-2-threads", |b| {
        b.iter_batched(
            || {
                epoch
                    .iter()
                    .map(|&(from, to)| {
                        let arguments = leasehold_sdk::encode(&Transfer { from, to, amount: 1 }).expect("encode");
                        prepare(&mut slots, transfer, arguments)
                    })
                    .collect::<Vec<_>>()
            },
            |transactions| {
                let outcomes = run(&mut executor, transactions);
                assert!(outcomes.iter().all(Outcome::is_committed), "transfers commit");
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn epoch_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage");
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = Storage::open(directory.path()).expect("open storage");
    let epoch = transfers(2_000, 100_000);
    group.throughput(Throughput::Elements(epoch.len() as u64));
    let mut number = 0u64;
    let make_record = |number: u64| {
        let mut record = EpochRecord::new(number);
        let mut scratch = Vec::new();
        for (sequence, (from, to)) in epoch.iter().enumerate() {
            for account in [from, to] {
                let mut key = 1u32.to_be_bytes().to_vec();
                key.extend_from_slice(&account.to_be_bytes());
                record.stage_value(&key, Some(&1_000_000i64.to_le_bytes()));
            }
            let id = RequestId::Id(format!("bench-{number}-{sequence}").into_bytes().into());
            let timestamp = Timestamp { epoch: number, node: 0, sequence: sequence as u32 };
            record.stage_result(&id, &Outcome::Committed { timestamp, output: vec![0; 16] }, &mut scratch);
        }
        record
    };
    group.bench_function("write-epoch-of-2000-transfers-no-sync", |b| {
        b.iter_batched(
            || {
                number += 1;
                make_record(number)
            },
            |record| storage.write_epoch(&record, false).expect("write epoch"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("checkpoint-of-2000-transfers", |b| {
        b.iter_batched(
            || {
                number += 1;
                make_record(number)
            },
            |record| storage.checkpoint(std::slice::from_ref(&record)).expect("checkpoint"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn in_process_transactions(c: &mut Criterion) {
    let mut group = c.benchmark_group("node");
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = Config { data_dir: directory.path().to_path_buf(), ..Config::default() };
    let node = Node::start(config).expect("start node");
    let handle = node.handle();
    handle.deploy_plugin(&banking_library()).expect("deploy banking");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let invocation = |workflow: &str, arguments: Vec<u8>, id: Vec<u8>| Invocation {
        plugin: "banking".into(),
        workflow: workflow.into(),
        arguments: Arguments::Encoded(arguments),
        request_id: RequestId::from_bytes(id),
    };
    for first in (0..100_000u64).step_by(10_000) {
        let open = leasehold_sdk::encode(&Open { first, count: 10_000, balance: 1_000_000 }).expect("encode");
        let pending = handle.submit(invocation("open", open, Vec::new())).expect("plan open");
        runtime.block_on(pending.wait()).expect("open accounts");
    }
    let epoch = transfers(5_000, 100_000);
    group.throughput(Throughput::Elements(epoch.len() as u64));
    let mut round = 0u64;
    group.sample_size(20);
    group.bench_function("plan-run-commit-5000-transfers-fsync", |b| {
        b.iter(|| {
            round += 1;
            let pendings: Vec<_> = epoch
                .iter()
                .enumerate()
                .map(|(i, &(from, to))| {
                    let arguments = leasehold_sdk::encode(&Transfer { from, to, amount: 1 }).expect("encode");
                    let id = format!("{round}-{i}").into_bytes();
                    handle.submit(invocation("transfer", arguments, id)).expect("plan transfer")
                })
                .collect();
            for pending in pendings {
                runtime.block_on(pending.wait()).expect("transfer completes");
            }
        })
    });
    group.finish();
    drop(handle);
    node.shutdown().expect("shutdown");
}

criterion_group!(
    benches,
    resident_keys,
    task_precedence_graph,
    plugin_call,
    executor_dispatch,
    epoch_commit,
    in_process_transactions
);
criterion_main!(benches);
