//! Criterion micro benchmarks of the engine's hot paths, without the network:
//! resolving an epoch's keys to resident slots, building the task precedence graph,
//! planning through a real plugin, making an epoch durable and checkpointing it, and
//! whole transactions through an in-process node.
//!
//! Run with `cargo bench -p leasehold-bench --bench engine` (after building the
//! workspace, which builds the banking plugin's library).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use leasehold_engine::config::Config;
use leasehold_engine::model::{Arguments, Invocation, Outcome, RequestId, Timestamp};
use leasehold_engine::node::Node;
use leasehold_engine::storage::slots::SlotStore;
use leasehold_engine::storage::{data_key_into, EpochRecord, Storage};
use leasehold_engine::txn::access::AccessMode;
use leasehold_engine::txn::tpg::GraphBuilder;
use leasehold_plugin_api::banking::{Open, Transfer};
use std::path::PathBuf;

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

criterion_group!(benches, resident_keys, task_precedence_graph, epoch_commit, in_process_transactions);
criterion_main!(benches);
