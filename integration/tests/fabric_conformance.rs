//! The fabric conformance suite (DESIGN.md §4): one set of tests, written once against
//! the `Fabric` traits and run over every backend that can run here. shm and tcp always
//! run, and tcp-tls (the tcp backend with mutual TLS, a certificate per node and the peer
//! token) too; rdma runs where a device exists and otherwise each of its tests says it was
//! skipped and why.
//!
//! What must hold for every backend: operation semantics (READ/WRITE round trips, bounds
//! and alignment errors before any effect, CAS and fetch-add returning the previous
//! value), exactly one winner among concurrent CAS from several processes, rings that
//! lose, reorder and duplicate nothing between processes, and a value WRITE that is
//! visible before the flag WRITE announcing it. The multi-process tests start
//! `fabric_peer` (this crate's helper binary) as the other nodes; node 0, the owner of
//! every region, is the test process itself.

#[path = "../src/bin/fabric_peer/layout.rs"]
mod layout;
#[path = "../src/bin/fabric_peer/tls.rs"]
mod tls;

use layout::{
    check_flag_rule, parse_ranges, ring_message, COUNTER_OFFSET, GO_OFFSET, LOCKED_COUNTER_OFFSET, LOCK_OFFSET,
    RACE_WORDS_OFFSET, READY_OFFSET, RING_MESSAGE_HEADER_BYTES, VALUE_OFFSET,
};
use leasehold_fabric::rdma::{RdmaConfig, RdmaFabric};
use leasehold_fabric::shm::ShmFabric;
use leasehold_fabric::tcp::TcpFabric;
use leasehold_fabric::{
    Fabric, FabricError, NodeId, Operation, PushOutcome, RegionId, RemoteRegion, RingGeometry, RingReceiver,
    RingSender, MAX_BATCH_OPERATIONS, MAX_TRANSFER_BYTES,
};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A backend as the suite drives it: start nodes of one test's cluster in this process,
/// and tell a `fabric_peer` process how to join that cluster and reach node 0.
trait Backend {
    fn name(&self) -> &'static str;
    fn start_node(&self, node: NodeId) -> Arc<dyn Fabric>;
    fn peer_arguments(&self) -> Vec<String>;
    /// How much work the multi-process tests do: a tcp round trip costs about a thousand
    /// times a shared-memory access, and the whole suite has a time budget.
    fn scale(&self) -> Scale;
}

#[derive(Clone, Copy)]
struct Scale {
    race_words: u64,
    race_adds: u64,
    lock_every: u64,
    ring_messages: u64,
    flag_rounds: u64,
    thread_adds: u64,
}

const SHARED_MEMORY_SCALE: Scale = Scale {
    race_words: 200_000,
    race_adds: 100_000,
    lock_every: 4,
    ring_messages: 5_000,
    flag_rounds: 50_000,
    thread_adds: 20_000,
};
const NETWORK_SCALE: Scale =
    Scale { race_words: 300, race_adds: 150, lock_every: 2, ring_messages: 600, flag_rounds: 1_000, thread_adds: 500 };

struct ShmBackend {
    directory: tempfile::TempDir,
}

impl ShmBackend {
    fn new() -> ShmBackend {
        // /dev/shm is memory, as in a real single-host cluster.
        let builder = tempfile::Builder::new().prefix("leasehold-fabric-conformance-").tempdir_in("/dev/shm");
        let directory = builder.or_else(|_| tempfile::tempdir()).expect("a directory for region files");
        ShmBackend { directory }
    }
}

impl Backend for ShmBackend {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn start_node(&self, node: NodeId) -> Arc<dyn Fabric> {
        ShmFabric::open(self.directory.path(), node).expect("open shm node")
    }

    fn peer_arguments(&self) -> Vec<String> {
        let directory = self.directory.path().to_str().expect("utf-8 temporary path").to_string();
        vec!["--backend".into(), "shm".into(), "--shm-directory".into(), directory]
    }

    fn scale(&self) -> Scale {
        SHARED_MEMORY_SCALE
    }
}

/// tcp nodes of one test, each told the others' responder addresses; with `tls`, every
/// connection is mutual TLS with a certificate per node, and the peer token applies.
struct TcpBackend {
    nodes: Mutex<Vec<(NodeId, Arc<TcpFabric>)>>,
    tls: Option<tempfile::TempDir>,
}

/// Nodes the `tcp-tls` backend issues certificates for (the tests use fewer).
const TLS_NODES: NodeId = 16;

impl TcpBackend {
    fn new() -> TcpBackend {
        TcpBackend { nodes: Mutex::new(Vec::new()), tls: None }
    }

    /// The tcp backend over mutual TLS: a test CA issues each node its own certificate
    /// (for 127.0.0.1), written where `fabric_peer` loads it (see `tls.rs`).
    fn with_tls() -> TcpBackend {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let directory = tempfile::tempdir().expect("a directory for certificates");
        let authority_key = KeyPair::generate().expect("CA key");
        let mut authority = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        authority.distinguished_name.push(DnType::CommonName, "fabric conformance CA");
        let authority_certificate = authority.self_signed(&authority_key).expect("self-signed CA");
        std::fs::write(tls::ca_path(directory.path()), authority_certificate.der()).expect("write CA");
        let issuer = Issuer::from_params(&authority, &authority_key);
        for node in 0..TLS_NODES {
            let key = KeyPair::generate().expect("node key");
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("node parameters");
            params.distinguished_name.push(DnType::CommonName, format!("node {node}"));
            let certificate = params.signed_by(&key, &issuer).expect("sign");
            std::fs::write(tls::certificate_path(directory.path(), node), certificate.der()).expect("write");
            std::fs::write(tls::key_path(directory.path(), node), key.serialize_der()).expect("write key");
        }
        TcpBackend { nodes: Mutex::new(Vec::new()), tls: Some(directory) }
    }
}

impl Backend for TcpBackend {
    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "tcp-tls"
        } else {
            "tcp"
        }
    }

    fn start_node(&self, node: NodeId) -> Arc<dyn Fabric> {
        let loopback = "127.0.0.1:0".parse().expect("literal address");
        let fabric = match &self.tls {
            None => TcpFabric::start(node, loopback),
            Some(directory) => {
                let peer_tls = tls::load_peer_tls(directory.path(), node).expect("load the node's certificate");
                TcpFabric::start_secured(node, loopback, Some(tls::PEER_TOKEN), Some(peer_tls))
            }
        };
        let fabric = fabric.expect("start tcp node");
        let mut nodes = self.nodes.lock().expect("nodes lock");
        for (other, other_fabric) in nodes.iter() {
            other_fabric.add_peer(node, fabric.local_address());
            fabric.add_peer(*other, other_fabric.local_address());
        }
        nodes.push((node, Arc::clone(&fabric)));
        fabric
    }

    fn peer_arguments(&self) -> Vec<String> {
        let nodes = self.nodes.lock().expect("nodes lock");
        let (_, owner) = nodes.iter().find(|(node, _)| *node == 0).expect("node 0 started first");
        let mut arguments = vec!["--backend".into(), self.name().into()];
        if let Some(directory) = &self.tls {
            arguments.push("--tls-directory".into());
            arguments.push(directory.path().to_str().expect("utf-8 temporary path").into());
        }
        arguments.extend(["--peer".into(), format!("0={}", owner.local_address())]);
        arguments
    }

    fn scale(&self) -> Scale {
        NETWORK_SCALE
    }
}

/// rdma nodes of one test, connected through their bootstrap listeners.
struct RdmaBackend {
    nodes: Mutex<Vec<(NodeId, Arc<RdmaFabric>)>>,
}

impl RdmaBackend {
    /// The backend if this machine can run it; otherwise why not.
    fn new() -> Result<RdmaBackend, FabricError> {
        RdmaFabric::open(u16::MAX, &RdmaConfig::new(loopback()))?;
        Ok(RdmaBackend { nodes: Mutex::new(Vec::new()) })
    }
}

impl Backend for RdmaBackend {
    fn name(&self) -> &'static str {
        "rdma"
    }

    fn start_node(&self, node: NodeId) -> Arc<dyn Fabric> {
        let fabric = RdmaFabric::open(node, &RdmaConfig::new(loopback())).expect("open rdma node");
        let mut nodes = self.nodes.lock().expect("nodes lock");
        for (other, other_fabric) in nodes.iter() {
            other_fabric.add_peer(node, fabric.bootstrap_address());
            fabric.add_peer(*other, other_fabric.bootstrap_address());
        }
        nodes.push((node, Arc::clone(&fabric)));
        fabric
    }

    fn peer_arguments(&self) -> Vec<String> {
        let nodes = self.nodes.lock().expect("nodes lock");
        let (_, owner) = nodes.iter().find(|(node, _)| *node == 0).expect("node 0 started first");
        vec!["--backend".into(), "rdma".into(), "--peer".into(), format!("0={}", owner.bootstrap_address())]
    }

    fn scale(&self) -> Scale {
        NETWORK_SCALE
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

/// Instantiates every conformance test once per backend.
macro_rules! conformance_suite {
    ($($test:ident),* $(,)?) => {
        mod shm {
            $( #[test] fn $test() { super::$test(&super::ShmBackend::new()) } )*
        }
        mod tcp {
            $( #[test] fn $test() { super::$test(&super::TcpBackend::new()) } )*
        }
        mod tcp_tls {
            $( #[test] fn $test() { super::$test(&super::TcpBackend::with_tls()) } )*
        }
        mod rdma {
            $(
                #[test]
                fn $test() {
                    match super::RdmaBackend::new() {
                        Ok(backend) => super::$test(&backend),
                        Err(reason) => eprintln!("skipped rdma::{}: {reason}", stringify!($test)),
                    }
                }
            )*
        }
    };
}

conformance_suite!(
    reads_return_what_writes_stored,
    addressing_errors_are_refused_before_any_effect,
    atomics_return_the_previous_value,
    fetch_add_from_many_threads_loses_no_update,
    exactly_one_process_wins_each_compare_and_swap,
    rings_lose_reorder_and_duplicate_nothing_between_processes,
    ring_back_pressure_limits_and_reopening,
    a_reader_that_sees_the_flag_sees_the_value,
);

// ---------------------------------------------------------------------------------------
// Operation semantics

fn reads_return_what_writes_stored(backend: &dyn Backend) {
    let owner = backend.start_node(0);
    let peer = backend.start_node(1);
    let local = owner.register_region(RegionId(1), 4096).expect("register");
    let remote = peer.open_remote(0, RegionId(1)).expect("open remote region");
    assert_eq!((remote.node(), remote.region(), remote.size_bytes()), (0, RegionId(1), 4096));

    let mut whole = vec![0xffu8; 4096];
    remote.read(0, &mut whole).expect("read");
    assert!(whole.iter().all(|byte| *byte == 0), "{}: a registered region starts zeroed", backend.name());

    for (offset, length) in [(0u64, 8usize), (8, 1), (13, 27), (64, 4096 - 64), (4095, 1), (100, 0)] {
        let bytes: Vec<u8> = (0..length).map(|index| (index as u8).wrapping_mul(31) ^ offset as u8 ^ 0x5a).collect();
        remote.write(offset, &bytes).expect("write");
        let mut back = vec![0u8; length];
        remote.read(offset, &mut back).expect("read");
        assert_eq!(back, bytes, "{}: remote read after remote write at {offset}+{length}", backend.name());
        local.read(offset, &mut back).expect("local read");
        assert_eq!(back, bytes, "{}: the owner sees the peer's write at {offset}+{length}", backend.name());
    }

    local.write(200, b"written by the owner").expect("local write");
    let mut back = [0u8; 20];
    remote.read(200, &mut back).expect("read");
    assert_eq!(&back, b"written by the owner", "{}: the peer sees the owner's write", backend.name());

    let own = owner.open_remote(0, RegionId(1)).expect("the owner opens its own region");
    own.read(200, &mut back).expect("read own region");
    assert_eq!(&back, b"written by the owner");
}

fn addressing_errors_are_refused_before_any_effect(backend: &dyn Backend) {
    let owner = backend.start_node(0);
    let peer = backend.start_node(1);
    let local = owner.register_region(RegionId(1), 64).expect("register");
    let remote = peer.open_remote(0, RegionId(1)).expect("open");
    let name = backend.name();

    let error = remote.read(60, &mut [0u8; 8]).expect_err("read past the end");
    assert!(
        matches!(
            error,
            FabricError::OutOfBounds { node: 0, region: RegionId(1), offset: 60, length: 8, size_bytes: 64 }
        ),
        "{name}: {error}"
    );
    let error = remote.write(u64::MAX, &[1]).expect_err("offset overflow");
    assert!(matches!(error, FabricError::OutOfBounds { offset: u64::MAX, .. }), "{name}: {error}");
    let error = remote.compare_and_swap(4, 0, 1).expect_err("misaligned CAS");
    assert!(matches!(error, FabricError::Misaligned { node: 0, region: RegionId(1), offset: 4 }), "{name}: {error}");
    let error = remote.fetch_add(12, 1).expect_err("misaligned fetch-add");
    assert!(matches!(error, FabricError::Misaligned { offset: 12, .. }), "{name}: {error}");
    let error = remote.fetch_add(64, 1).expect_err("fetch-add past the end");
    assert!(matches!(error, FabricError::OutOfBounds { offset: 64, length: 8, .. }), "{name}: {error}");
    assert_eq!(remote.compare_and_swap(56, 0, 9).expect("the last word is in bounds"), 0);

    let mut too_large = vec![0u8; MAX_TRANSFER_BYTES as usize + 8];
    let error = remote.read(0, &mut too_large).expect_err("above the transfer limit");
    assert!(matches!(error, FabricError::TransferTooLarge { .. }), "{name}: {error}");
    let mut too_many: Vec<Operation<'_>> =
        (0..=MAX_BATCH_OPERATIONS).map(|_| Operation::FetchAdd { offset: 0, delta: 1, previous: 0 }).collect();
    let error = remote.execute(&mut too_many).expect_err("above the batch limit");
    assert!(matches!(error, FabricError::BatchTooLarge { .. }), "{name}: {error}");

    // A batch stops at its first failure: the fetch-add after the bad write never runs.
    let mut batch = [
        Operation::FetchAdd { offset: 0, delta: 1, previous: 0 },
        Operation::Write { offset: 60, bytes: &[7; 8] },
        Operation::FetchAdd { offset: 0, delta: 1, previous: 0 },
    ];
    let error = remote.execute(&mut batch).expect_err("the write is out of bounds");
    assert!(matches!(error, FabricError::OutOfBounds { offset: 60, .. }), "{name}: {error}");
    assert_eq!(local.load_word(0).expect("word"), 1, "{name}: only the first operation took effect");
    let mut tail = [0u8; 8];
    local.read(56, &mut tail).expect("read");
    assert_eq!(u64::from_ne_bytes(tail), 9, "{name}: the failed write left no trace");

    let error = peer.open_remote(0, RegionId(99)).err().expect("unknown region");
    assert!(matches!(error, FabricError::UnknownRegion { node: 0, region: RegionId(99) }), "{name}: {error}");
    let error = peer.open_remote(7, RegionId(1)).err().expect("unknown peer");
    assert!(matches!(error, FabricError::UnknownPeer { node: 7 }), "{name}: {error}");
    let error = owner.register_region(RegionId(1), 64).expect_err("registered twice");
    assert!(matches!(error, FabricError::RegionExists { region: RegionId(1) }), "{name}: {error}");
    let error = owner.register_region(RegionId(2), 12).expect_err("not whole words");
    assert!(matches!(error, FabricError::InvalidRegionSize { size_bytes: 12 }), "{name}: {error}");

    owner.deregister_region(RegionId(1)).expect("deregister");
    let error = peer.open_remote(0, RegionId(1)).err().expect("deregistered");
    assert!(matches!(error, FabricError::UnknownRegion { .. }), "{name}: {error}");
}

fn atomics_return_the_previous_value(backend: &dyn Backend) {
    let owner = backend.start_node(0);
    let peer = backend.start_node(1);
    let local = owner.register_region(RegionId(1), 64).expect("register");
    let remote = peer.open_remote(0, RegionId(1)).expect("open");
    let name = backend.name();

    assert_eq!(remote.compare_and_swap(0, 0, 5).expect("cas"), 0, "{name}: a successful CAS returns `expected`");
    assert_eq!(local.load_word(0).expect("word"), 5);
    assert_eq!(remote.compare_and_swap(0, 0, 6).expect("cas"), 5, "{name}: a failed CAS returns the current value");
    assert_eq!(local.load_word(0).expect("word"), 5, "{name}: a failed CAS changes nothing");
    assert_eq!(remote.compare_and_swap(0, 5, u64::MAX).expect("cas"), 5);
    assert_eq!(local.load_word(0).expect("word"), u64::MAX, "{name}: all 64 bits are swapped");

    assert_eq!(remote.fetch_add(8, 3).expect("fetch_add"), 0);
    assert_eq!(remote.fetch_add(8, u64::MAX).expect("fetch_add"), 3, "{name}: fetch-add returns the previous value");
    assert_eq!(local.load_word(8).expect("word"), 2, "{name}: fetch-add wraps");

    // The owner's CPU atomics and the peer's one-sided atomics work on the same word.
    local.word(16).expect("word").fetch_add(10, std::sync::atomic::Ordering::AcqRel);
    assert_eq!(remote.fetch_add(16, 1).expect("fetch_add"), 10);
    let mut batch = [
        Operation::CompareAndSwap { offset: 16, expected: 11, new: 20, previous: 0 },
        Operation::FetchAdd { offset: 16, delta: 2, previous: 0 },
    ];
    remote.execute(&mut batch).expect("batch");
    assert!(matches!(
        batch,
        [Operation::CompareAndSwap { previous: 11, .. }, Operation::FetchAdd { previous: 20, .. }]
    ));
    assert_eq!(local.load_word(16).expect("word"), 22);
}

fn fetch_add_from_many_threads_loses_no_update(backend: &dyn Backend) {
    const THREADS: u64 = 4;
    let owner = backend.start_node(0);
    let peer = backend.start_node(1);
    let local = owner.register_region(RegionId(1), 64).expect("register");
    let remote = peer.open_remote(0, RegionId(1)).expect("open");
    let adds = backend.scale().thread_adds;
    let mut previous_values: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let remote = Arc::clone(&remote);
                scope.spawn(move || (0..adds).map(|_| remote.fetch_add(0, 1).expect("fetch_add")).collect::<Vec<u64>>())
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("worker")).collect()
    });
    previous_values.sort_unstable();
    assert_eq!(local.load_word(0).expect("word"), THREADS * adds, "{}: no update lost", backend.name());
    assert!(
        previous_values.iter().copied().eq(0..THREADS * adds),
        "{}: every fetch-add saw a distinct previous value",
        backend.name()
    );
}

// ---------------------------------------------------------------------------------------
// Several processes

/// Taken by every test that starts processes: they take turns, so that the processes of
/// one test share the machine's cores only with each other and really run at once.
static PROCESS_TESTS: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    PROCESS_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a `fabric_peer` process as `node` in `role`.
fn spawn_peer(backend: &dyn Backend, role: &str, node: NodeId, extra_arguments: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fabric_peer"))
        .arg(role)
        .args(backend.peer_arguments())
        .args(["--node".to_string(), node.to_string()])
        .args(extra_arguments)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fabric_peer")
}

/// Waits for a peer process and returns its stdout, failing the test with its stderr if
/// it did not succeed.
fn finish_peer(child: Child) -> String {
    let output = child.wait_with_output().expect("wait for fabric_peer");
    assert!(
        output.status.success(),
        "fabric_peer failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The value after `label ` on the line of `output` that starts with it.
fn reported<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no `{label}` line in {output:?}"))
}

fn wait_for_word(region: &dyn RemoteRegion, offset: u64, wanted: u64) {
    let deadline = Instant::now() + layout::PATIENCE;
    let mut word = [0u8; 8];
    loop {
        region.read(offset, &mut word).expect("read");
        if u64::from_ne_bytes(word) >= wanted {
            return;
        }
        assert!(Instant::now() < deadline, "word {offset} never reached {wanted}");
        std::thread::yield_now();
    }
}

fn exactly_one_process_wins_each_compare_and_swap(backend: &dyn Backend) {
    let _turn = take_turn();
    const PROCESSES: u16 = 4;
    let scale = backend.scale();
    let owner = backend.start_node(0);
    let region_bytes = RACE_WORDS_OFFSET + scale.race_words * 8;
    let local = owner.register_region(RegionId(1), region_bytes).expect("register");
    let arguments: Vec<String> = [
        ("--region", 1),
        ("--words", scale.race_words),
        ("--adds", scale.race_adds),
        ("--lock-every", scale.lock_every),
    ]
    .iter()
    .flat_map(|(name, value)| [name.to_string(), value.to_string()])
    .collect();
    let started = Instant::now();
    let peers: Vec<(NodeId, Child)> =
        (1..=PROCESSES).map(|node| (node, spawn_peer(backend, "race", node, &arguments))).collect();
    // Every process waits for the go word, so that all of them race at once.
    wait_for_word(local.as_ref(), READY_OFFSET, u64::from(PROCESSES));
    local.store_word(GO_OFFSET, 1).expect("go");
    let outputs: Vec<(NodeId, String)> = peers.into_iter().map(|(node, child)| (node, finish_peer(child))).collect();

    let lock_rounds = scale.race_words.div_ceil(scale.lock_every);
    let mut winners = vec![Vec::new(); scale.race_words as usize];
    let mut wins_per_process = Vec::new();
    let mut previous_sum = 0u64;
    let mut contended_lock_attempts = 0u64;
    for (node, output) in &outputs {
        let won = parse_ranges(reported(output, "won"));
        wins_per_process.push((*node, won.len()));
        for word in won {
            winners[word as usize].push(*node);
        }
        previous_sum += reported(output, "adds").parse::<u64>().expect("a sum");
        let locked: Vec<u64> =
            reported(output, "locked").split(' ').map(|field| field.parse().expect("a count")).collect();
        assert_eq!(locked[0], lock_rounds);
        contended_lock_attempts += locked[1];
    }
    for (word, word_winners) in winners.iter().enumerate() {
        assert_eq!(word_winners.len(), 1, "{}: word {word} was won by {word_winners:?}", backend.name());
        let stored = local.load_word(RACE_WORDS_OFFSET + word as u64 * 8).expect("word");
        assert_eq!(stored, u64::from(word_winners[0]), "{}: word {word} holds its winner", backend.name());
    }
    let total_adds = u64::from(PROCESSES) * scale.race_adds;
    assert_eq!(local.load_word(COUNTER_OFFSET).expect("counter"), total_adds, "{}: no fetch-add lost", backend.name());
    assert_eq!(previous_sum, total_adds * (total_adds - 1) / 2, "{}: fetch-adds saw distinct values", backend.name());
    assert_eq!(
        local.load_word(LOCKED_COUNTER_OFFSET).expect("counter"),
        u64::from(PROCESSES) * lock_rounds,
        "{}: two processes held the CAS lock at once",
        backend.name()
    );
    assert_eq!(local.load_word(LOCK_OFFSET).expect("lock"), 0, "{}: the lock is free at the end", backend.name());
    eprintln!(
        "{}: {PROCESSES} processes raced for {} words (wins per node {wins_per_process:?}), took the CAS lock {} times \
         ({contended_lock_attempts} attempts found it held) in {:?}",
        backend.name(),
        scale.race_words,
        u64::from(PROCESSES) * lock_rounds,
        started.elapsed()
    );
}

fn rings_lose_reorder_and_duplicate_nothing_between_processes(backend: &dyn Backend) {
    let _turn = take_turn();
    const SENDERS: u16 = 3;
    const MAX_MESSAGE_BYTES: u32 = 64;
    let scale = backend.scale();
    let owner = backend.start_node(0);
    // Few slots, so that senders run into a full ring and wrap around many times.
    let geometry = RingGeometry::new(16, MAX_MESSAGE_BYTES);
    let mut receivers: Vec<(NodeId, RingReceiver)> = (1..=SENDERS)
        .map(|node| (node, RingReceiver::create(owner.as_ref(), RegionId::inbound_ring(node), geometry).expect("ring")))
        .collect();
    let arguments = vec!["--count".to_string(), scale.ring_messages.to_string()];
    let started = Instant::now();
    let senders: Vec<Child> = (1..=SENDERS).map(|node| spawn_peer(backend, "ring-send", node, &arguments)).collect();

    let mut next_sequence = vec![0u64; usize::from(SENDERS) + 1];
    let mut message = Vec::new();
    let deadline = Instant::now() + layout::PATIENCE;
    while next_sequence[1..].iter().any(|next| *next < scale.ring_messages) {
        let mut received_any = false;
        for (node, receiver) in receivers.iter_mut() {
            while receiver.try_receive(&mut message).expect("receive") {
                received_any = true;
                assert!(
                    message.len() >= RING_MESSAGE_HEADER_BYTES,
                    "{}: a message shorter than its header",
                    backend.name()
                );
                let sender = u16::from_le_bytes([message[0], message[1]]);
                let sequence = u64::from_le_bytes(message[2..10].try_into().expect("eight bytes"));
                assert_eq!(sender, *node, "{}: a message in the wrong ring", backend.name());
                let expected = next_sequence[usize::from(*node)];
                assert_eq!(sequence, expected, "{}: node {node} sent {expected} next, got {sequence}", backend.name());
                assert_eq!(message, ring_message(*node, sequence, MAX_MESSAGE_BYTES), "{}: payload", backend.name());
                next_sequence[usize::from(*node)] += 1;
            }
        }
        if !received_any {
            assert!(Instant::now() < deadline, "{}: received only {next_sequence:?}", backend.name());
            std::thread::yield_now();
        }
    }
    let mut full_retries = 0u64;
    for sender in senders {
        let output = finish_peer(sender);
        let mut fields = reported(&output, "sent").split(' ');
        assert_eq!(fields.next(), Some(scale.ring_messages.to_string().as_str()));
        full_retries += fields.next().expect("full retries").parse::<u64>().expect("a count");
    }
    for (node, receiver) in receivers.iter_mut() {
        assert!(!receiver.try_receive(&mut message).expect("receive"), "{}: node {node} sent extra", backend.name());
    }
    eprintln!(
        "{}: {SENDERS} processes sent {} messages each through 16-slot rings in {:?} ({full_retries} pushes found the ring full)",
        backend.name(),
        scale.ring_messages,
        started.elapsed()
    );
}

fn ring_back_pressure_limits_and_reopening(backend: &dyn Backend) {
    let owner = backend.start_node(0);
    let peer = backend.start_node(1);
    let ring = RegionId::inbound_ring(1);
    let mut receiver = RingReceiver::create(owner.as_ref(), ring, RingGeometry::new(4, 32)).expect("ring");
    let mut sender = RingSender::open(peer.as_ref(), 0, ring).expect("open ring");
    assert_eq!(sender.geometry(), RingGeometry::new(4, 32), "{}: the sender reads the geometry", backend.name());

    for index in 0..4u8 {
        assert_eq!(sender.try_push(&[index; 32]).expect("push"), PushOutcome::Pushed);
    }
    assert_eq!(sender.try_push(&[4]).expect("push"), PushOutcome::Full, "{}: four slots hold four", backend.name());
    let error = sender.push(&[4]).expect_err("full");
    assert!(matches!(error, FabricError::RingFull { node: 0, slot_count: 4, .. }), "{}: {error}", backend.name());
    let error = sender.push(&[0; 33]).expect_err("too large");
    assert!(matches!(error, FabricError::MessageTooLarge { length: 33, max_message_bytes: 32 }), "{error}");

    let mut message = Vec::new();
    assert!(receiver.try_receive(&mut message).expect("receive"));
    assert_eq!(message, vec![0u8; 32]);
    sender.push(&[4]).expect("a slot is free again");
    sender.push(&[]).expect_err("still full: three unread and one new");

    // A sender that opens the ring again (a restarted node) continues after the last
    // published message: nothing is lost or delivered twice.
    drop(sender);
    let mut reopened = RingSender::open(peer.as_ref(), 0, ring).expect("reopen");
    assert_eq!(reopened.sent_count(), 5, "{}: the reopened sender found five published", backend.name());
    let mut received = Vec::new();
    while receiver.try_receive(&mut message).expect("receive") {
        received.push(message[0]);
    }
    reopened.push(&[5]).expect("push");
    assert!(receiver.try_receive(&mut message).expect("receive"));
    received.push(message[0]);
    assert_eq!(received, vec![1, 2, 3, 4, 5], "{}", backend.name());

    owner.register_region(RegionId(7), 4096).expect("register");
    let error = RingSender::open(peer.as_ref(), 0, RegionId(7)).err().expect("not a ring");
    assert!(matches!(error, FabricError::BadRing { .. }), "{}: {error}", backend.name());
}

// ---------------------------------------------------------------------------------------
// Visibility

fn a_reader_that_sees_the_flag_sees_the_value(backend: &dyn Backend) {
    let _turn = take_turn();
    const VALUE_BYTES: usize = 4096;
    let rounds = backend.scale().flag_rounds;
    let owner = backend.start_node(0);
    let local = owner.register_region(RegionId(1), VALUE_OFFSET + VALUE_BYTES as u64).expect("register");
    let value_arguments = vec![
        "--region".to_string(),
        "1".to_string(),
        "--value-bytes".to_string(),
        VALUE_BYTES.to_string(),
        "--rounds".to_string(),
        rounds.to_string(),
    ];
    let started = Instant::now();
    // Two readers: another process (one-sided READs) and the owner itself (local loads).
    // The writer waits until both started, so that they watch it write.
    let reader = spawn_peer(backend, "flag-read", 2, &value_arguments);
    let mut writer_arguments = value_arguments.clone();
    writer_arguments.extend(["--readers".to_string(), "2".to_string()]);
    let writer = spawn_peer(backend, "flag-write", 1, &writer_arguments);
    let local_seen = check_flag_rule(local.as_ref(), VALUE_BYTES, rounds).expect("local reader");
    finish_peer(writer);
    let reader_output = finish_peer(reader);
    let fields: Vec<u64> =
        reported(&reader_output, "observed").split(' ').map(|field| field.parse().expect("a count")).collect();
    let (observations, distinct_flags, violations) = (fields[0], fields[1], fields[2]);

    assert_eq!(local_seen.violations, 0, "{}: the owner saw a flag before its value", backend.name());
    assert_eq!(violations, 0, "{}: a peer saw a flag before its value", backend.name());
    assert!(
        distinct_flags > 1 && local_seen.distinct_flags > 1,
        "{}: the readers never caught the writer mid-run ({distinct_flags}, {})",
        backend.name(),
        local_seen.distinct_flags
    );
    let mut final_value = vec![0u8; VALUE_BYTES];
    local.read(VALUE_OFFSET, &mut final_value).expect("read");
    assert_eq!(final_value, layout::value_of_round(rounds, VALUE_BYTES));
    eprintln!(
        "{}: {rounds} rounds of a {VALUE_BYTES}-byte value and its flag in {:?}; the peer checked {observations} \
         observations of {distinct_flags} flags, the owner {} of {}",
        backend.name(),
        started.elapsed(),
        local_seen.observations,
        local_seen.distinct_flags
    );
}
