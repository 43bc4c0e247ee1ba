//! Criterion micro benchmarks of the fabric's one-sided operations, per backend: READ
//! and WRITE of 64 bytes, compare-and-swap, fetch-add, and a batch of 16 READs in one
//! `execute` (how the drivers post an epoch's reads). Two nodes live in this process;
//! node 1 operates on a region node 0 registered. On shm an operation is a CPU atomic or
//! copy on mapped memory; over tcp it is a loopback round trip. The rdma backend needs a
//! device, which these machines lack.
//!
//! Run with `cargo bench -p leasehold-fabric --bench fabric`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use leasehold_fabric::shm::ShmFabric;
use leasehold_fabric::tcp::TcpFabric;
use leasehold_fabric::{Fabric, Operation, RegionId, RemoteRegion};
use std::sync::Arc;

const REGION_BYTES: u64 = 1 << 20;

/// Node 0's region as node 1 sees it, and whatever must stay alive for it.
struct Pair {
    remote: Arc<dyn RemoteRegion>,
    _fabrics: (Arc<dyn Fabric>, Arc<dyn Fabric>),
    _directory: Option<tempfile::TempDir>,
}

fn pair(owner: Arc<dyn Fabric>, peer: Arc<dyn Fabric>, directory: Option<tempfile::TempDir>) -> Pair {
    owner.register_region(RegionId(1), REGION_BYTES).expect("register the region");
    let remote = peer.open_remote(0, RegionId(1)).expect("open node 0's region");
    Pair { remote, _fabrics: (owner, peer), _directory: directory }
}

fn shm_pair() -> Pair {
    let directory = tempfile::tempdir().expect("temporary directory");
    let owner = ShmFabric::open(directory.path(), 0).expect("open shm node 0");
    let peer = ShmFabric::open(directory.path(), 1).expect("open shm node 1");
    pair(owner, peer, Some(directory))
}

fn tcp_pair() -> Pair {
    let loopback = "127.0.0.1:0".parse().expect("literal address");
    let owner = TcpFabric::start(0, loopback).expect("start tcp node 0");
    let peer = TcpFabric::start(1, loopback).expect("start tcp node 1");
    owner.add_peer(1, peer.local_address());
    peer.add_peer(0, owner.local_address());
    pair(owner, peer, None)
}

fn one_sided(c: &mut Criterion) {
    for (backend, pair) in [("shm", shm_pair()), ("tcp", tcp_pair())] {
        let remote = &pair.remote;
        let mut group = c.benchmark_group(format!("fabric-{backend}"));
        group.throughput(Throughput::Elements(1));
        let mut buffer = [0u8; 64];
        group.bench_function("read-64-bytes", |b| b.iter(|| remote.read(4096, &mut buffer).expect("read")));
        group.bench_function("write-64-bytes", |b| b.iter(|| remote.write(4096, &[7; 64]).expect("write")));
        let mut word = 0u64;
        group.bench_function("compare-and-swap", |b| {
            b.iter(|| {
                let previous = remote.compare_and_swap(0, word, word + 1).expect("compare and swap");
                assert_eq!(previous, word, "only this benchmark changes the word");
                word += 1;
            })
        });
        group.bench_function("fetch-add", |b| b.iter(|| remote.fetch_add(8, 1).expect("fetch add")));
        let mut buffers = [[0u8; 64]; 16];
        group.throughput(Throughput::Elements(16));
        group.bench_function("execute-16-reads-of-64-bytes", |b| {
            b.iter(|| {
                let mut operations: Vec<Operation<'_>> = buffers
                    .iter_mut()
                    .enumerate()
                    .map(|(index, buffer)| Operation::Read { offset: 8192 + 64 * index as u64, buffer })
                    .collect();
                remote.execute(&mut operations).expect("execute")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, one_sided);
criterion_main!(benches);
