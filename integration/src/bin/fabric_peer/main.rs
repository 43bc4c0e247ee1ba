//! `fabric_peer`: a fabric node in a process of its own, for the fabric conformance
//! suite's multi-process tests (`tests/fabric_conformance.rs`), and the fabric's
//! micro-benchmark.
//!
//! Each role joins the cluster of the test process (node 0 by default, which owns the
//! regions), does one job against the owner's memory with one-sided operations only, and
//! prints its findings on stdout for the test to check:
//!
//! ```text
//! fabric_peer race       <backend> --node N --region R --words W --adds K --lock-every L
//! fabric_peer ring-send  <backend> --node N --count M
//! fabric_peer flag-write <backend> --node N --region R --value-bytes B --rounds N --readers K
//! fabric_peer flag-read  <backend> --node N --region R --value-bytes B --rounds N
//! fabric_peer bench      --backend shm|tcp [--milliseconds T]
//! <backend> = --backend shm --shm-directory DIR | --backend tcp|rdma --peer 0=ADDRESS
//!           | --backend tcp-tls --tls-directory DIR --peer 0=ADDRESS
//! ```
//!
//! Layouts shared with the test are in `layout.rs`; the `tcp-tls` backend's files
//! (per-node certificates, the peer token) in `tls.rs`.

use leasehold_fabric::rdma::{RdmaConfig, RdmaFabric};
use leasehold_fabric::shm::ShmFabric;
use leasehold_fabric::tcp::TcpFabric;
use leasehold_fabric::{
    Fabric, LocalRegion, NodeId, Operation, PushOutcome, RegionId, RemoteRegion, RingGeometry, RingReceiver, RingSender,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod layout;
mod tls;
use layout::{
    check_flag_rule, format_ranges, ring_message, value_of_round, COUNTER_OFFSET, FLAG_OFFSET, GO_OFFSET,
    LOCKED_COUNTER_OFFSET, LOCK_OFFSET, PATIENCE, RACE_WORDS_OFFSET, READERS_OFFSET, READY_OFFSET, VALUE_OFFSET,
};

fn main() {
    let mut words = std::env::args().skip(1);
    let role = words.next().unwrap_or_else(|| fail("usage: fabric_peer ROLE --option value ..."));
    let arguments = Arguments::parse(words);
    match role.as_str() {
        "race" => race(&arguments),
        "ring-send" => ring_send(&arguments),
        "flag-write" => flag_write(&arguments),
        "flag-read" => flag_read(&arguments),
        "bench" => bench(&arguments),
        other => fail(&format!("unknown role {other}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("fabric_peer: {message}");
    std::process::exit(2)
}

/// `--name value` options; `--peer` may repeat.
struct Arguments {
    options: HashMap<String, String>,
    peers: Vec<(NodeId, SocketAddr)>,
}

impl Arguments {
    fn parse(mut words: impl Iterator<Item = String>) -> Arguments {
        let mut options = HashMap::new();
        let mut peers = Vec::new();
        while let Some(name) = words.next() {
            let Some(name) = name.strip_prefix("--") else { fail(&format!("expected an option, got {name}")) };
            let value = words.next().unwrap_or_else(|| fail(&format!("--{name} needs a value")));
            if name == "peer" {
                let parsed =
                    value.split_once('=').and_then(|(node, address)| Some((node.parse().ok()?, address.parse().ok()?)));
                peers.push(parsed.unwrap_or_else(|| fail(&format!("--peer {value}: expected NODE=ADDRESS"))));
            } else {
                options.insert(name.to_string(), value);
            }
        }
        Arguments { options, peers }
    }

    fn text(&self, name: &str) -> &str {
        self.options.get(name).map(String::as_str).unwrap_or_else(|| fail(&format!("--{name} is required")))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> T {
        self.text(name).parse().unwrap_or_else(|_| fail(&format!("--{name} must be a number")))
    }

    fn number_or<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        if self.options.contains_key(name) {
            self.number(name)
        } else {
            default
        }
    }

    fn node(&self) -> NodeId {
        self.number("node")
    }

    fn owner(&self) -> NodeId {
        self.number_or("owner", 0)
    }

    fn region(&self) -> RegionId {
        RegionId(self.number("region"))
    }
}

/// Joins the test's cluster as `node` with the backend the arguments name.
fn join(arguments: &Arguments, node: NodeId) -> Arc<dyn Fabric> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let joined: Result<Arc<dyn Fabric>, _> = match arguments.text("backend") {
        "shm" => ShmFabric::open(arguments.text("shm-directory"), node).map(|fabric| fabric as Arc<dyn Fabric>),
        "tcp" => TcpFabric::start(node, loopback).map(|fabric| {
            for (peer, address) in &arguments.peers {
                fabric.add_peer(*peer, *address);
            }
            fabric as Arc<dyn Fabric>
        }),
        "tcp-tls" => {
            let directory = std::path::Path::new(arguments.text("tls-directory"));
            let peer_tls = tls::load_peer_tls(directory, node).unwrap_or_else(|error| fail(&error));
            TcpFabric::start_secured(node, loopback, Some(tls::PEER_TOKEN), Some(peer_tls)).map(|fabric| {
                for (peer, address) in &arguments.peers {
                    fabric.add_peer(*peer, *address);
                }
                fabric as Arc<dyn Fabric>
            })
        }
        "rdma" => RdmaFabric::open(node, &RdmaConfig::new(loopback)).map(|fabric| {
            for (peer, address) in &arguments.peers {
                fabric.add_peer(*peer, *address);
            }
            fabric as Arc<dyn Fabric>
        }),
        other => fail(&format!("unknown backend {other}")),
    };
    joined.unwrap_or_else(|error| fail(&format!("join as node {node}: {error}")))
}

fn open(fabric: &dyn Fabric, node: NodeId, region: RegionId) -> Arc<dyn RemoteRegion> {
    fabric
        .open_remote(node, region)
        .unwrap_or_else(|error| fail(&format!("open region {region} of node {node}: {error}")))
}

fn word_of(bytes: &[u8]) -> u64 {
    u64::from_ne_bytes(bytes.try_into().expect("eight bytes"))
}

/// Counts this peer ready, waits for the test's go, then races the other peers. Step `i`
/// of the race CASes race word `i` from 0 to this node's id, fetch-adds the counter while
/// `i < adds`, and every `lock-every` steps increments the locked counter under the CAS
/// lock; interleaving the three keeps all of them contended while the processes overlap.
/// Prints `won RANGES`, `adds SUM_OF_PREVIOUS_VALUES` and `locked ROUNDS
/// CONTENDED_ATTEMPTS`.
fn race(arguments: &Arguments) {
    let node = arguments.node();
    let fabric = join(arguments, node);
    let remote = open(fabric.as_ref(), arguments.owner(), arguments.region());
    let (word_count, adds, lock_every): (u64, u64, u64) =
        (arguments.number("words"), arguments.number("adds"), arguments.number("lock-every"));
    if adds > word_count || lock_every == 0 {
        fail("--adds may not exceed --words, and --lock-every must be positive");
    }
    remote.fetch_add(READY_OFFSET, 1).unwrap_or_else(|error| fail(&format!("count ready: {error}")));
    let deadline = Instant::now() + PATIENCE;
    let mut go = [0u8; 8];
    loop {
        remote.read(GO_OFFSET, &mut go).unwrap_or_else(|error| fail(&format!("read go: {error}")));
        if word_of(&go) != 0 {
            break;
        }
        if Instant::now() > deadline {
            fail("no go from the test");
        }
        std::thread::yield_now();
    }
    let mut won = Vec::new();
    let mut previous_sum = 0u64;
    let (mut lock_rounds, mut contended_attempts) = (0u64, 0u64);
    for word in 0..word_count {
        let offset = RACE_WORDS_OFFSET + word * 8;
        let previous =
            remote.compare_and_swap(offset, 0, u64::from(node)).unwrap_or_else(|error| fail(&format!("cas: {error}")));
        if previous == 0 {
            won.push(word);
        }
        if word < adds {
            previous_sum +=
                remote.fetch_add(COUNTER_OFFSET, 1).unwrap_or_else(|error| fail(&format!("fetch_add: {error}")));
        }
        if word % lock_every == 0 {
            contended_attempts += increment_under_lock(remote.as_ref(), node, deadline);
            lock_rounds += 1;
        }
    }
    println!("won {}", format_ranges(&won));
    println!("adds {previous_sum}");
    println!("locked {lock_rounds} {contended_attempts}");
}

/// Takes the lock word by CAS (as 2PL takes its locks), increments the counter it
/// protects with a READ and a WRITE (two holders at once would lose increments), and
/// releases the lock. Returns how many attempts found the lock held.
fn increment_under_lock(remote: &dyn RemoteRegion, node: NodeId, deadline: Instant) -> u64 {
    let mut contended_attempts = 0;
    loop {
        let holder = remote
            .compare_and_swap(LOCK_OFFSET, 0, u64::from(node))
            .unwrap_or_else(|error| fail(&format!("lock: {error}")));
        if holder == 0 {
            break;
        }
        contended_attempts += 1;
        if Instant::now() > deadline {
            fail("the lock was never free");
        }
        std::thread::yield_now();
    }
    let mut counter = [0u8; 8];
    remote.read(LOCKED_COUNTER_OFFSET, &mut counter).unwrap_or_else(|error| fail(&format!("read: {error}")));
    let incremented = (word_of(&counter) + 1).to_ne_bytes();
    remote.write(LOCKED_COUNTER_OFFSET, &incremented).unwrap_or_else(|error| fail(&format!("write: {error}")));
    let holder = remote
        .compare_and_swap(LOCK_OFFSET, u64::from(node), 0)
        .unwrap_or_else(|error| fail(&format!("unlock: {error}")));
    if holder != u64::from(node) {
        fail(&format!("node {holder} held the lock while node {node} did"));
    }
    contended_attempts
}

/// Pushes `count` messages into this node's inbound ring at the owner, waiting whenever
/// the ring is full. Prints `sent COUNT FULL_RETRIES`.
fn ring_send(arguments: &Arguments) {
    let node = arguments.node();
    let fabric = join(arguments, node);
    let count: u64 = arguments.number("count");
    let mut sender = RingSender::open(fabric.as_ref(), arguments.owner(), RegionId::inbound_ring(node))
        .unwrap_or_else(|error| fail(&format!("open ring: {error}")));
    let max_message_bytes = sender.geometry().max_message_bytes();
    let deadline = Instant::now() + PATIENCE;
    let mut full_retries = 0u64;
    for sequence in 0..count {
        let message = ring_message(node, sequence, max_message_bytes);
        loop {
            match sender.try_push(&message).unwrap_or_else(|error| fail(&format!("push: {error}"))) {
                PushOutcome::Pushed => break,
                PushOutcome::Full => {
                    full_retries += 1;
                    if Instant::now() > deadline {
                        fail("the ring stayed full");
                    }
                    std::thread::yield_now();
                }
            }
        }
    }
    println!("sent {count} {full_retries}");
}

/// Waits for `--readers` readers to start, then WRITEs the value of each round and then
/// the flag that announces it.
fn flag_write(arguments: &Arguments) {
    let node = arguments.node();
    let fabric = join(arguments, node);
    let remote = open(fabric.as_ref(), arguments.owner(), arguments.region());
    let (value_bytes, rounds): (usize, u64) = (arguments.number("value-bytes"), arguments.number("rounds"));
    let readers: u64 = arguments.number("readers");
    let deadline = Instant::now() + PATIENCE;
    let mut started = [0u8; 8];
    loop {
        remote.read(READERS_OFFSET, &mut started).unwrap_or_else(|error| fail(&format!("read readers: {error}")));
        if word_of(&started) >= readers {
            break;
        }
        if Instant::now() > deadline {
            fail("the readers did not start");
        }
        std::thread::yield_now();
    }
    for round in 1..=rounds {
        remote
            .write(VALUE_OFFSET, &value_of_round(round, value_bytes))
            .unwrap_or_else(|error| fail(&format!("write value: {error}")));
        remote.write(FLAG_OFFSET, &round.to_ne_bytes()).unwrap_or_else(|error| fail(&format!("write flag: {error}")));
    }
    println!("wrote {rounds}");
}

/// READs the flag, then the value, until the last round: every word of the value must be
/// at least the flag it was announced by. Prints `observed OBSERVATIONS DISTINCT_FLAGS
/// VIOLATIONS`.
fn flag_read(arguments: &Arguments) {
    let node = arguments.node();
    let fabric = join(arguments, node);
    let remote = open(fabric.as_ref(), arguments.owner(), arguments.region());
    let (value_bytes, rounds): (usize, u64) = (arguments.number("value-bytes"), arguments.number("rounds"));
    let seen = check_flag_rule(remote.as_ref(), value_bytes, rounds).unwrap_or_else(|reason| fail(&reason));
    println!("observed {} {} {}", seen.observations, seen.distinct_flags, seen.violations);
}

/// Times the operations of one backend between two nodes of this process (node 0 owns
/// the region, node 1 operates on it) and prints a table.
fn bench(arguments: &Arguments) {
    let budget = Duration::from_millis(arguments.number_or("milliseconds", 400));
    let backend = arguments.text("backend");
    // Region files go to /dev/shm (memory) where it exists, as in a real cluster.
    let shm_root = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let shm_directory = shm_root.join(format!("leasehold-fabric-bench-{}", std::process::id()));
    let (owner, client): (Arc<dyn Fabric>, Arc<dyn Fabric>) = match backend {
        "shm" => {
            let owner = ShmFabric::open(&shm_directory, 0).unwrap_or_else(|error| fail(&error.to_string()));
            let client = ShmFabric::open(&shm_directory, 1).unwrap_or_else(|error| fail(&error.to_string()));
            (owner, client)
        }
        "tcp" => {
            let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
            let owner = TcpFabric::start(0, loopback).unwrap_or_else(|error| fail(&error.to_string()));
            let client = TcpFabric::start(1, loopback).unwrap_or_else(|error| fail(&error.to_string()));
            client.add_peer(0, owner.local_address());
            (owner, client)
        }
        other => fail(&format!("no benchmark for backend {other}")),
    };
    let _region: Arc<LocalRegion> =
        owner.register_region(RegionId(1), 1 << 16).unwrap_or_else(|error| fail(&error.to_string()));
    let remote = open(client.as_ref(), 0, RegionId(1));
    println!("fabric micro-benchmark, backend {backend}, one client thread, {budget:?} per row");
    println!("{:<28} {:>12} {:>12}", "operation", "ops/s", "mean µs");
    let remote = remote.as_ref();
    let mut small_buffer = [0u8; 8];
    let mut large_buffer = vec![0u8; 4096];
    let payload = vec![7u8; 4096];
    let payload = payload.as_slice();
    let rows: Vec<(&str, BenchmarkedOperation<'_>)> = vec![
        ("read 8 B", Box::new(move || remote.read(64, &mut small_buffer).expect("read"))),
        ("read 4 KiB", Box::new(move || remote.read(64, &mut large_buffer).expect("read"))),
        ("write 8 B", Box::new(move || remote.write(64, &payload[..8]).expect("write"))),
        ("write 4 KiB", Box::new(move || remote.write(64, payload).expect("write"))),
        (
            "compare_and_swap",
            Box::new(move || {
                remote.compare_and_swap(0, 0, 0).expect("cas");
            }),
        ),
        (
            "fetch_add",
            Box::new(move || {
                remote.fetch_add(8, 1).expect("fetch_add");
            }),
        ),
        (
            "batch of 16 reads of 8 B",
            Box::new(move || {
                let mut words = [[0u8; 8]; 16];
                let mut operations: Vec<Operation<'_>> = words
                    .iter_mut()
                    .enumerate()
                    .map(|(index, buffer)| Operation::Read { offset: index as u64 * 8, buffer })
                    .collect();
                remote.execute(&mut operations).expect("batch");
            }),
        ),
    ];
    for (name, mut operation) in rows {
        let (operations, elapsed) = time(budget, &mut *operation);
        print_row(name, operations, elapsed);
    }
    // Ring throughput: a sender thread on node 1 pushes 64-byte messages into node 0's
    // ring (256 slots) while node 0's receiver drains it.
    let mut receiver = RingReceiver::create(owner.as_ref(), RegionId::inbound_ring(1), RingGeometry::new(256, 64))
        .unwrap_or_else(|error| fail(&error.to_string()));
    let mut sender = RingSender::open(client.as_ref(), 0, RegionId::inbound_ring(1))
        .unwrap_or_else(|error| fail(&error.to_string()));
    let started = Instant::now();
    let sending = std::thread::spawn(move || {
        let message = [1u8; 64];
        let mut sent = 0u64;
        while started.elapsed() < budget {
            if sender.try_push(&message).expect("push") == PushOutcome::Pushed {
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        sent
    });
    let mut message = Vec::new();
    let mut received = 0u64;
    loop {
        if receiver.try_receive(&mut message).expect("receive") {
            received += 1;
        } else if sending.is_finished() {
            // The sender stopped; whatever it published is in the ring now.
            while receiver.try_receive(&mut message).expect("receive") {
                received += 1;
            }
            break;
        } else {
            std::thread::yield_now();
        }
    }
    let sent = sending.join().expect("sender thread");
    assert_eq!(sent, received, "the ring delivered every message");
    print_row("ring push+receive 64 B", received, started.elapsed());
    drop(receiver);
    drop((client, owner));
    let _ = std::fs::remove_dir(&shm_directory);
}

/// One row of the benchmark: an operation to repeat.
type BenchmarkedOperation<'a> = Box<dyn FnMut() + 'a>;

fn time(budget: Duration, operation: &mut dyn FnMut()) -> (u64, Duration) {
    // Warm up connections and caches first.
    for _ in 0..100 {
        operation();
    }
    let started = Instant::now();
    let mut operations = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            operation();
        }
        operations += 64;
    }
    (operations, started.elapsed())
}

fn print_row(name: &str, operations: u64, elapsed: Duration) {
    let per_second = operations as f64 / elapsed.as_secs_f64();
    println!("{name:<28} {per_second:>12.0} {:>12.3}", 1e6 / per_second);
}
