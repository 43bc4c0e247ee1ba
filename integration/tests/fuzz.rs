//! Fuzzing of untrusted input against a real `leasehold-engine` process, on stable Rust
//! (cargo-fuzz needs nightly): property-based byte fuzzers built with proptest.
//!
//! * Cap'n Proto on the raw client socket: random bytes, well-framed messages of random
//!   words, and a recorded real client session (bootstrap, authenticate, invoke,
//!   invokeMany, readKey, status, listPlugins) with bits flipped, pointer words
//!   overwritten, frames dropped, repeated, swapped, resized or cut off. Every stream
//!   must end with the engine closing the connection (never a hang), and the engine must
//!   still serve a new client after every case; at the end, the transfers the damaged
//!   sessions may still have run have kept the sum of all balances.
//! * Plugin arguments through the client, to every workflow of the workload plugins and
//!   testkit: JSON documents (valid ones with values replaced by wrong types and edge
//!   values, fields dropped or added, text cut or garbled, and random text) and postcard
//!   bytes (random, and valid encodings of edited values, damaged). Every invocation must
//!   be answered with a refusal that names bad input, an abort of an allowed kind, or a
//!   commit; refused ones must run nothing (the node's commit and abort counters match
//!   the answers).
//! * JSON arguments through `leasehold invoke`: exit code 0, 1 or 3 with one clear line.
//!
//! Every fuzzer is seeded, so a run tries the same cases every time (CI-sized: a few
//! seconds each). `LEASEHOLD_FUZZ_CASES` sets the number of cases of every fuzzer (the
//! CLI fuzzer, a process per case, runs a tenth of it) and `LEASEHOLD_FUZZ_SEED` picks
//! another sequence; a failure prints the smallest failing input proptest found.

use leasehold_client::{AbortKind, Arguments, BlockingClient, Invocation, InvokeResult, NodeStatus, RejectionKind};
use leasehold_integration::{binary, plugin_bytes, EngineProcess};
use leasehold_plugin_api::{banking, smallbank, testkit, travel, ycsb_t};
use leasehold_sdk::key_u64;
use leasehold_sdk::prelude::{Deserialize, Serialize};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the engine may take to close a connection after the stream ended.
const HANG_UP_DEADLINE: Duration = Duration::from_secs(10);
const BANKING_ACCOUNTS: u64 = 20;
const BANKING_BALANCE: i64 = 1_000;

fn environment(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|text| text.parse().ok())
}

/// The number of cases: `LEASEHOLD_FUZZ_CASES` divided by `divisor`, or the default.
fn cases(default: u32, divisor: u64) -> u32 {
    environment("LEASEHOLD_FUZZ_CASES").map_or(default, |cases| (cases / divisor).max(1) as u32)
}

fn runner(cases: u32, salt: u64) -> TestRunner {
    let seed = environment("LEASEHOLD_FUZZ_SEED").unwrap_or(7420) ^ salt;
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // The seed reproduces a failure; no regression files in the source tree.
        failure_persistence: None,
        // Every shrinking step runs against the engine; a few hundred find a small input.
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// An engine on its own temporary data directory, declared first so that it stops before
/// its directory is removed.
struct Node {
    engine: EngineProcess,
    _directory: tempfile::TempDir,
}

impl Node {
    /// An engine that writes its log without fsync: the fuzzers aim at decoding and
    /// execution, and an fsync per epoch would make every case wait for the disk.
    fn start() -> Node {
        let directory = tempfile::tempdir().expect("temporary directory for the engine");
        let engine = EngineProcess::start(&directory.path().join("node"), &["--fsync", "asynchronous"]);
        Node { engine, _directory: directory }
    }

    fn client(&self) -> BlockingClient {
        BlockingClient::connect(self.engine.address).expect("connect to the engine")
    }
}

fn commit(client: &BlockingClient, invocation: Invocation) {
    let result = client.invoke(invocation).expect("invoke");
    assert!(result.is_committed(), "{result:?}");
}

fn open_banking(client: &BlockingClient) {
    let open = format!(r#"{{"first":0,"count":{BANKING_ACCOUNTS},"balance":{BANKING_BALANCE}}}"#);
    commit(client, Invocation::json("banking", "open", open));
}

fn banking_balances(client: &BlockingClient) -> Vec<i64> {
    (0..BANKING_ACCOUNTS)
        .map(|account| {
            let value = client.read_key("banking", "accounts", &key_u64(account)).expect("read a balance");
            let value = value.unwrap_or_else(|| panic!("account {account} exists"));
            i64::from_le_bytes(value.try_into().expect("balances are 8 bytes"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cap'n Proto frames on the raw socket.

/// One message of the Cap'n Proto stream framing: its segments, each whole words.
#[derive(Clone, Debug)]
struct Frame {
    segments: Vec<Vec<u8>>,
}

/// Splits a well-formed recorded stream into its frames.
fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let word = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")) as usize;
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let count = word(bytes, 0) + 1;
        let header = (4 * (count + 1)).next_multiple_of(8);
        let sizes: Vec<usize> = (0..count).map(|segment| 8 * word(bytes, 4 + 4 * segment)).collect();
        let mut at = header;
        let mut segments = Vec::new();
        for size in sizes {
            segments.push(bytes[at..at + size].to_vec());
            at += size;
        }
        frames.push(Frame { segments });
        bytes = &bytes[at..];
    }
    frames
}

/// The stream framing of `frames`; a segment's declared size is its length rounded up to
/// whole words unless `lying_sizes` says otherwise for a frame.
fn write_frames(frames: &[Frame], lying_sizes: &BTreeMap<usize, u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        let count = frame.segments.len().max(1);
        out.extend_from_slice(&(count as u32 - 1).to_le_bytes());
        for segment in 0..count {
            let words = frame.segments.get(segment).map_or(0, |bytes| bytes.len().div_ceil(8) as u32);
            let declared = if segment == 0 { *lying_sizes.get(&index).unwrap_or(&words) } else { words };
            out.extend_from_slice(&declared.to_le_bytes());
        }
        if (count + 1) % 2 == 1 {
            out.extend_from_slice(&[0; 4]);
        }
        for segment in &frame.segments {
            out.extend_from_slice(segment);
            out.resize(out.len().next_multiple_of(8), 0);
        }
    }
    out
}

/// A recorded client session: the client's frames in order, and after each, the
/// answers the client waited for before it sent its next bytes, as cumulative counts of
/// `Return`s per answer id. Replaying needs those waits: a client reuses a question id
/// once its call has returned, and the engine refuses the reuse while it has not.
struct Recording {
    frames: Vec<Frame>,
    waits: Vec<BTreeMap<u32, usize>>,
}

/// The answer ids of the `Return` messages in `bytes` (whole frames), in order.
fn returns_in(bytes: &[u8]) -> Vec<u32> {
    use capnp_rpc::rpc_capnp::message;
    let mut rest = &bytes[..complete_frames(bytes).1];
    let mut answers = Vec::new();
    while let Ok(frame) = capnp::serialize::read_message(&mut rest, capnp::message::ReaderOptions::new()) {
        let root: Result<message::Reader<'_>, _> = frame.get_root();
        if let Ok(Ok(message::Return(Ok(answer)))) = root.map(|root| root.which()) {
            answers.push(answer.get_answer_id());
        }
    }
    answers
}

/// Counts per answer id.
fn tally(answers: &[u32]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(*answer).or_default() += 1;
    }
    counts
}

/// The number of complete frames at the start of `bytes`, and where they end.
fn complete_frames(bytes: &[u8]) -> (usize, usize) {
    let word = |at: usize| bytes.get(at..at + 4).map(|word| u32::from_le_bytes(word.try_into().expect("4 bytes")));
    let (mut count, mut at) = (0, 0);
    loop {
        let Some(segments) = word(at).map(|segments| segments as usize + 1) else { return (count, at) };
        let header = (4 * (segments + 1)).next_multiple_of(8);
        let mut length = header;
        for segment in 0..segments {
            let Some(words) = word(at + 4 + 4 * segment) else { return (count, at) };
            length += 8 * words as usize;
        }
        if at + length > bytes.len() {
            return (count, at);
        }
        count += 1;
        at += length;
    }
}

/// One chunk the recording proxy passed on: whether it came from the client, and its bytes.
type RecordedChunk = (bool, Vec<u8>);

/// A recording proxy: one client connection to `engine` through it. Both directions are
/// logged in the order they happened, which is causal: the client's bytes are logged
/// before they reach the engine, the engine's before they reach the client.
fn record_session(engine: SocketAddr, session: impl FnOnce(SocketAddr)) -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording proxy");
    let address = listener.local_addr().expect("proxy address");
    let log: Arc<Mutex<Vec<RecordedChunk>>> = Arc::default();
    let proxy_log = log.clone();
    let proxy = std::thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("the session connects");
        let mut server = TcpStream::connect(engine).expect("connect the proxy to the engine");
        let (mut server_reader, mut client_writer) =
            (server.try_clone().expect("clone a socket"), client.try_clone().expect("clone a socket"));
        let replies_log = proxy_log.clone();
        let replies = std::thread::spawn(move || {
            let mut buffer = [0u8; 65536];
            while let Ok(read @ 1..) = server_reader.read(&mut buffer) {
                replies_log.lock().expect("log").push((false, buffer[..read].to_vec()));
                if client_writer.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
            let _ = client_writer.shutdown(Shutdown::Write);
        });
        let mut buffer = [0u8; 65536];
        while let Ok(read @ 1..) = client.read(&mut buffer) {
            proxy_log.lock().expect("log").push((true, buffer[..read].to_vec()));
            if server.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(Shutdown::Write);
        let _ = replies.join();
    });
    session(address);
    proxy.join().expect("recording proxy");

    let log = std::mem::take(&mut *log.lock().expect("log"));
    let (mut client_bytes, mut server_bytes) = (Vec::new(), Vec::new());
    let mut waits: Vec<BTreeMap<u32, usize>> = Vec::new();
    let mut returns_at_last_send = 0;
    for (from_client, bytes) in log {
        if from_client {
            // The answers that came since the client's previous bytes, it waited for.
            let returns = returns_in(&server_bytes);
            if let Some(last) = waits.last_mut() {
                let all = tally(&returns);
                for answer in &returns[returns_at_last_send..] {
                    last.insert(*answer, all[answer]);
                }
            }
            returns_at_last_send = returns.len();
            client_bytes.extend_from_slice(&bytes);
            waits.resize(complete_frames(&client_bytes).0, BTreeMap::new());
        } else {
            server_bytes.extend_from_slice(&bytes);
        }
    }
    let frames = parse_frames(&client_bytes);
    assert_eq!(frames.len(), waits.len(), "the client sent whole frames");
    Recording { frames, waits }
}

/// A client session touching every method a client uses (without deploys, so that no
/// damaged copy can deploy anything; and with banking transfers only, which keep the sum).
fn client_session(address: SocketAddr) {
    let client = BlockingClient::connect(address).expect("connect through the proxy");
    client.status().expect("status");
    client.list_plugins().expect("list plugins");
    commit(&client, Invocation::json("banking", "transfer", r#"{"from":1,"to":2,"amount":3}"#));
    let transfers = (0..3u64)
        .map(|account| {
            let transfer = banking::Transfer { from: account, to: account + 5, amount: 2 };
            Invocation::encoded("banking", "transfer", leasehold_sdk::encode(&transfer).expect("encode"))
                .with_request_id(format!("recorded-{account}").into_bytes())
        })
        .collect();
    let results = client.invoke_many(transfers).expect("invoke many");
    assert!(results.iter().all(InvokeResult::is_committed), "{results:?}");
    client.read_key("banking", "accounts", &key_u64(1)).expect("read a key");
    client.disconnect().expect("disconnect");
}

/// A damage to the recorded session. Frame and byte positions are taken modulo what
/// exists, since the strategy does not know the session.
#[derive(Clone, Debug)]
enum SessionDamage {
    Flip {
        frame: usize,
        at: usize,
        bits: u8,
    },
    Word {
        frame: usize,
        at: usize,
        word: u64,
    },
    Drop {
        frame: usize,
    },
    Repeat {
        frame: usize,
    },
    Swap {
        first: usize,
        second: usize,
    },
    /// The segment grows or shrinks by whole words.
    Resize {
        frame: usize,
        words: i8,
    },
    /// The header declares another size than the segment has.
    LyingSize {
        frame: usize,
        words: u32,
    },
}

#[derive(Clone, Debug)]
enum Stream {
    Random(Vec<u8>),
    /// Well-framed messages of random words: one segment each, or several.
    Framed(Vec<Vec<Vec<u64>>>),
    Session {
        damages: Vec<SessionDamage>,
        cut: Option<usize>,
    },
}

/// Words that mean something to a Cap'n Proto decoder: struct, list, far and capability
/// pointers with arbitrary fields, and the extremes.
fn pointer_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0),
        Just(u64::MAX),
        (any::<i32>(), any::<u16>(), any::<u16>())
            .prop_map(|(offset, data, pointers)| ((offset as u32 as u64) << 2 & 0xffff_fffc)
                | u64::from(data) << 32
                | u64::from(pointers) << 48),
        (any::<i32>(), 0u64..8, any::<u32>()).prop_map(|(offset, size, count)| 1
            | ((offset as u32 as u64) << 2 & 0xffff_fffc)
            | size << 32
            | u64::from(count >> 3) << 35),
        (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(double, offset, segment)| 2
            | u64::from(double) << 2
            | (u64::from(offset) << 3 & 0xffff_fff8)
            | u64::from(segment) << 32),
        any::<u32>().prop_map(|index| 3 | u64::from(index) << 32),
    ]
}

fn session_damage() -> impl Strategy<Value = SessionDamage> {
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), 1u8..=255)
            .prop_map(|(frame, at, bits)| SessionDamage::Flip { frame, at, bits }),
        4 => (any::<usize>(), any::<usize>(), pointer_word())
            .prop_map(|(frame, at, word)| SessionDamage::Word { frame, at, word }),
        1 => any::<usize>().prop_map(|frame| SessionDamage::Drop { frame }),
        1 => any::<usize>().prop_map(|frame| SessionDamage::Repeat { frame }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(first, second)| SessionDamage::Swap { first, second }),
        1 => (any::<usize>(), -4i8..=4).prop_map(|(frame, words)| SessionDamage::Resize { frame, words }),
        1 => (any::<usize>(), prop_oneof![0u32..64, Just(u32::MAX), any::<u32>()])
            .prop_map(|(frame, words)| SessionDamage::LyingSize { frame, words }),
    ]
}

fn stream() -> impl Strategy<Value = Stream> {
    let words = proptest::collection::vec(pointer_word(), 0..24);
    let frame = proptest::collection::vec(words, 1..3);
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Stream::Random),
        2 => proptest::collection::vec(frame, 1..4).prop_map(Stream::Framed),
        6 => (proptest::collection::vec(session_damage(), 1..4), proptest::option::weighted(0.2, any::<usize>()))
            .prop_map(|(damages, cut)| Stream::Session { damages, cut }),
    ]
}

/// The pieces to send for a stream: bytes, each followed by the answers to wait for
/// before sending the next.
fn stream_pieces(stream: &Stream, session: &Recording) -> Vec<(Vec<u8>, BTreeMap<u32, usize>)> {
    match stream {
        Stream::Random(bytes) => vec![(bytes.clone(), BTreeMap::new())],
        Stream::Framed(frames) => {
            let frames: Vec<Frame> = frames
                .iter()
                .map(|segments| Frame {
                    segments: segments
                        .iter()
                        .map(|words| words.iter().flat_map(|word| word.to_le_bytes()).collect())
                        .collect(),
                })
                .collect();
            vec![(write_frames(&frames, &BTreeMap::new()), BTreeMap::new())]
        }
        Stream::Session { damages, cut } => {
            // Each frame keeps the wait of the frame it came from.
            let mut frames: Vec<(Frame, BTreeMap<u32, usize>)> =
                session.frames.iter().cloned().zip(session.waits.iter().cloned()).collect();
            let mut lying_sizes: BTreeMap<usize, u32> = BTreeMap::new();
            for damage in damages {
                if frames.is_empty() {
                    break;
                }
                let count = frames.len();
                match *damage {
                    SessionDamage::Flip { frame, at, bits } => {
                        let segment = &mut frames[frame % count].0.segments[0];
                        if !segment.is_empty() {
                            let length = segment.len();
                            segment[at % length] ^= bits;
                        }
                    }
                    SessionDamage::Word { frame, at, word } => {
                        let segment = &mut frames[frame % count].0.segments[0];
                        let words = segment.len() / 8;
                        if words > 0 {
                            let at = 8 * (at % words);
                            segment[at..at + 8].copy_from_slice(&word.to_le_bytes());
                        }
                    }
                    SessionDamage::Drop { frame } => {
                        frames.remove(frame % count);
                    }
                    SessionDamage::Repeat { frame } => {
                        let copy = frames[frame % count].clone();
                        frames.insert(frame % count, copy);
                    }
                    SessionDamage::Swap { first, second } => frames.swap(first % count, second % count),
                    SessionDamage::Resize { frame, words } => {
                        let segment = &mut frames[frame % count].0.segments[0];
                        let length = (segment.len() as i64 + 8 * i64::from(words)).max(0) as usize;
                        segment.resize(length, 0);
                    }
                    SessionDamage::LyingSize { frame, words } => {
                        lying_sizes.insert(frame % count, words);
                    }
                }
            }
            let mut pieces: Vec<(Vec<u8>, BTreeMap<u32, usize>)> = frames
                .iter()
                .enumerate()
                .map(|(index, (frame, wait))| {
                    let lying: BTreeMap<usize, u32> =
                        lying_sizes.get(&index).map(|words| (0, *words)).into_iter().collect();
                    (write_frames(std::slice::from_ref(frame), &lying), wait.clone())
                })
                .collect();
            // From a frame whose header lies about its size on, the engine reads the
            // following frames as that frame's content: no recorded answer will come.
            if let Some(first_lying) = lying_sizes.keys().next() {
                for (_, wait) in &mut pieces[*first_lying..] {
                    wait.clear();
                }
            }
            if let Some(cut) = cut {
                let total: usize = pieces.iter().map(|(bytes, _)| bytes.len()).sum();
                let mut keep = cut % (total + 1);
                pieces.retain_mut(|(bytes, wait)| {
                    let kept = keep > 0;
                    if keep < bytes.len() {
                        // A frame cut short is not answered: the engine waits for the rest.
                        bytes.truncate(keep);
                        wait.clear();
                    }
                    keep -= bytes.len();
                    kept
                });
            }
            pieces
        }
    }
}

/// What the engine sent back on one connection before closing it.
#[derive(Clone, Debug, Default)]
struct Reply {
    /// `Return` messages: calls the engine answered.
    returns: u32,
    /// `Abort` messages: the engine said why it gave up on the connection.
    aborts: u32,
    /// The reason given in the first `Abort`.
    reason: Option<String>,
}

/// Counts the RPC messages in what the engine sent; a reply that does not decode is a
/// finding in itself.
fn decode_reply(bytes: &[u8]) -> Result<Reply, String> {
    use capnp_rpc::rpc_capnp::message;
    let mut reply = Reply::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let frame = capnp::serialize::read_message(&mut rest, capnp::message::ReaderOptions::new())
            .map_err(|error| format!("the engine sent an undecodable frame: {error}"))?;
        let root: message::Reader<'_> = frame.get_root().map_err(|error| format!("reply root: {error}"))?;
        match root.which() {
            Ok(message::Return(_)) => reply.returns += 1,
            Ok(message::Abort(exception)) => {
                reply.aborts += 1;
                let reason = exception.and_then(|exception| exception.get_reason()).ok();
                let reason = reason.and_then(|text| text.to_str().ok().map(str::to_string));
                reply.reason.get_or_insert_with(|| reason.unwrap_or_else(|| "an abort without a reason".into()));
            }
            _ => {}
        }
    }
    Ok(reply)
}

/// Sends the pieces on a new connection (after each, waiting briefly for the answers the
/// recorded client waited for), ends the stream, and waits for the engine to
/// close the connection; returns what the engine sent back.
fn send_stream(address: SocketAddr, pieces: &[(Vec<u8>, BTreeMap<u32, usize>)]) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(address).map_err(|error| format!("connect: {error}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(5))).map_err(|error| error.to_string())?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    // Reads what is there; false once the engine has closed the connection.
    let mut receive = |stream: &mut TcpStream, received: &mut Vec<u8>| -> Result<bool, String> {
        match stream.read(&mut buffer) {
            Ok(0) => Ok(false),
            Ok(read) => {
                received.extend_from_slice(&buffer[..read]);
                Ok(true)
            }
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => Ok(false),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
            Err(error) => Err(format!("reading from the engine: {error}")),
        }
    };
    let (mut open, mut on_script) = (true, true);
    for (bytes, wait) in pieces {
        // The engine may close the connection before it read everything: a fine answer.
        if !open || stream.write_all(bytes).is_err() {
            break;
        }
        // Waits end when the recorded answers came, or as many answers under other ids
        // (a damaged question id), or after a while (an answer that will never come).
        let deadline = Instant::now() + Duration::from_millis(250);
        let returns_at_send = returns_in(&received);
        let at_send = tally(&returns_at_send);
        let missing = wait.iter().filter(|(answer, count)| at_send.get(answer).is_none_or(|have| have < count)).count();
        let answered = |received: &[u8]| {
            let returns = returns_in(received);
            let counts = tally(&returns);
            let expected = wait.iter().all(|(answer, count)| counts.get(answer).is_some_and(|have| have >= count));
            expected || returns.len() >= returns_at_send.len() + missing
        };
        while on_script && open && !answered(&received) {
            if Instant::now() > deadline {
                // Off the recorded script: later answers will not come as recorded either.
                on_script = false;
                break;
            }
            open = receive(&mut stream, &mut received)?;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + HANG_UP_DEADLINE;
    while open {
        open = receive(&mut stream, &mut received)?;
        if open && Instant::now() > deadline {
            return Err(format!("the engine kept the connection open {HANG_UP_DEADLINE:?} after the stream ended"));
        }
    }
    // A reset may cut the last frame short; what arrived whole must decode.
    let whole = complete_frames(&received).1;
    decode_reply(&received[..whole])
}

#[test]
fn damaged_capnp_streams_get_the_connection_closed_and_the_engine_keeps_serving() {
    let node = Node::start();
    let client = node.client();
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
    open_banking(&client);

    let session = record_session(node.engine.address, client_session);
    assert!(session.frames.len() >= 7, "the session has a message per call: {} frames", session.frames.len());
    // The recorded session replays as is: a new connection, a new session, every call
    // answered (bootstrap, authenticate, status, listPlugins, invoke, invokeMany, readKey).
    let undamaged = Stream::Session { damages: Vec::new(), cut: None };
    let replay = send_stream(node.engine.address, &stream_pieces(&undamaged, &session)).expect("replay");
    // The session ends with the client's disconnect, which the engine answers in kind.
    let only_disconnect = replay.reason.as_deref().is_none_or(|reason| reason.contains("client requested disconnect"));
    assert!(replay.returns >= 7 && only_disconnect, "the replay is answered: {replay:?}");

    let cases = cases(250, 1);
    let answered = RefCell::new(0u32);
    let reasons: RefCell<BTreeMap<String, u32>> = RefCell::default();
    let started = Instant::now();
    let result = runner(cases, 1).run(&stream(), |stream| {
        let reply = send_stream(node.engine.address, &stream_pieces(&stream, &session)).map_err(TestCaseError::fail)?;
        *answered.borrow_mut() += u32::from(reply.returns > 0);
        let reason = reply.reason.unwrap_or_else(|| "closed without an abort".into());
        *reasons.borrow_mut().entry(reason).or_default() += 1;
        // The engine still serves a new client after every input.
        let fresh = BlockingClient::connect(node.engine.address)
            .map_err(|error| TestCaseError::fail(format!("the engine stopped serving: {error}")))?;
        fresh.status().map_err(|error| TestCaseError::fail(format!("status after the input: {error}")))?;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }

    // Damaged sessions may still run transfers; none may create or destroy money.
    let balances = banking_balances(&client);
    assert_eq!(balances.iter().sum::<i64>(), BANKING_BALANCE * BANKING_ACCOUNTS as i64, "{balances:?}");
    assert!(balances.iter().all(|balance| *balance >= 0), "{balances:?}");
    commit(&client, Invocation::json("banking", "transfer", r#"{"from":3,"to":4,"amount":1}"#));
    let answered = answered.into_inner();
    assert!(answered > 0, "some damaged sessions get far enough for calls to be answered");
    let mut reasons: Vec<(String, u32)> = reasons.into_inner().into_iter().collect();
    reasons.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    reasons.truncate(6);
    println!(
        "capnp fuzzing: {cases} streams ({} session frames recorded) in {:?}: {answered} had calls answered; \
         every connection closed by the engine, which served a new client after each; most frequent ways it ended: \
         {reasons:?}",
        session.frames.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Plugin arguments.

/// A workflow with a valid JSON argument and the conversion of JSON to its postcard
/// encoding (through the plugin's own argument type).
struct Sample {
    plugin: &'static str,
    workflow: &'static str,
    json: &'static str,
    encode: fn(&str) -> Option<Vec<u8>>,
}

fn postcard<T: for<'de> Deserialize<'de> + Serialize>(json: &str) -> Option<Vec<u8>> {
    let value: T = serde_json::from_str(json).ok()?;
    leasehold_sdk::encode(&value).ok()
}

fn samples() -> Vec<Sample> {
    macro_rules! sample {
        ($plugin:literal, $workflow:literal, $json:literal, $type:ty) => {
            Sample { plugin: $plugin, workflow: $workflow, json: $json, encode: postcard::<$type> }
        };
    }
    vec![
        sample!("banking", "transfer", r#"{"from":1,"to":2,"amount":5}"#, banking::Transfer),
        sample!("banking", "deposit", r#"{"account":3,"amount":7}"#, banking::Deposit),
        sample!("banking", "balance", r#"{"account":1}"#, banking::Account),
        sample!("banking", "open", r#"{"first":100,"count":3,"balance":50}"#, banking::Open),
        sample!("banking", "total", r#"{"first":0,"count":10}"#, banking::Range),
        sample!("ycsb-t", "transfer", r#"{"a":1,"b":2,"amount":3}"#, ycsb_t::Transfer),
        sample!("ycsb-t", "load", r#"{"first":200,"count":3,"value":100}"#, ycsb_t::Load),
        sample!("ycsb-t", "read", r#"{"key":1}"#, ycsb_t::Key),
        sample!("ycsb-t", "total", r#"{"first":0,"count":10}"#, ycsb_t::Range),
        sample!("smallbank", "amalgamate", r#"{"from":1,"to":2}"#, smallbank::Amalgamate),
        sample!("smallbank", "balance", r#"{"customer":1}"#, smallbank::Customer),
        sample!("smallbank", "deposit_checking", r#"{"customer":1,"amount":5}"#, smallbank::CustomerAmount),
        sample!("smallbank", "send_payment", r#"{"from":1,"to":2,"amount":5}"#, smallbank::SendPayment),
        sample!("smallbank", "transact_savings", r#"{"customer":2,"amount":-5}"#, smallbank::CustomerAmount),
        sample!("smallbank", "write_check", r#"{"customer":3,"amount":5}"#, smallbank::CustomerAmount),
        sample!("smallbank", "load", r#"{"first":200,"count":3,"balance":100}"#, smallbank::Load),
        sample!("smallbank", "total", r#"{"first":0,"count":10}"#, smallbank::Range),
        sample!("travel", "reserve", r#"{"user":"Cornell_1","hotel":1,"flight":2}"#, travel::Reserve),
        sample!("travel", "search", r#"{"hotels":[1,2,3],"flights":[4]}"#, travel::Search),
        sample!("travel", "load", r#"{"hotels":10,"flights":10,"capacity":5}"#, travel::Load),
        sample!("travel", "audit", r#"{"hotels":10,"flights":10}"#, travel::Audit),
        sample!("testkit", "program", r#"{"steps":[[{"Read":1}],[{"Add":[1,5]}],[{"Set":[2,-1]}]]}"#, testkit::Program),
        sample!("testkit", "list_append", r#"{"ops":[{"Read":1},{"Append":[1,5]}]}"#, testkit::ListTransaction),
    ]
}

/// Numbers that find off-by-one and overflow handling: limits of the argument types and
/// of the plugins' ranges, just over and under.
fn edge_number() -> impl Strategy<Value = Json> {
    let numbers: Vec<Json> = vec![
        0.into(),
        1.into(),
        2.into(),
        7.into(),
        255.into(),
        256.into(),
        4096.into(),
        10_001.into(),
        50_001.into(),
        100_001.into(),
        u32::MAX.into(),
        (u64::from(u32::MAX) + 1).into(),
        (1u64 << 53).into(),
        i64::MAX.into(),
        u64::MAX.into(),
        (-1).into(),
        i64::MIN.into(),
        serde_json::json!(1.5),
        serde_json::json!(-0.0),
        serde_json::json!(1e300),
    ];
    prop_oneof![4 => proptest::sample::select(numbers), 1 => any::<i64>().prop_map(Json::from)]
}

/// Any JSON value, small, with edge numbers and odd strings.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        4 => edge_number(),
        2 => "\\PC{0,12}".prop_map(Json::String),
        // Longer than any key may be.
        1 => Just(Json::String("x".repeat(2000))),
        1 => Just(Json::String("Cornell_1".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|fields| Json::Object(fields.into_iter().collect())),
        ]
    })
}

/// An edit of a valid JSON argument; positions are taken modulo what exists.
#[derive(Clone, Debug)]
enum JsonEdit {
    Replace { at: usize, with: Json },
    Remove { at: usize },
    Add { at: usize, name: String, with: Json },
    Wrap { at: usize },
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(at, with)| JsonEdit::Replace { at, with }),
        1 => any::<usize>().prop_map(|at| JsonEdit::Remove { at }),
        1 => (any::<usize>(), "[a-z_]{1,8}", json_value())
            .prop_map(|(at, name, with)| JsonEdit::Add { at, name, with }),
        1 => any::<usize>().prop_map(|at| JsonEdit::Wrap { at }),
    ]
}

/// The number of nodes of a JSON tree.
fn json_nodes(value: &Json) -> usize {
    1 + match value {
        Json::Array(items) => items.iter().map(json_nodes).sum(),
        Json::Object(fields) => fields.values().map(json_nodes).sum(),
        _ => 0,
    }
}

/// The node at `at` in depth-first order.
fn json_node(value: &mut Json, at: usize) -> Option<&mut Json> {
    if at == 0 {
        return Some(value);
    }
    let mut at = at - 1;
    let children: Vec<&mut Json> = match value {
        Json::Array(items) => items.iter_mut().collect(),
        Json::Object(fields) => fields.values_mut().collect(),
        _ => return None,
    };
    for child in children {
        let size = json_nodes(child);
        if at < size {
            return json_node(child, at);
        }
        at -= size;
    }
    None
}

fn edit_json(json: &str, edits: &[JsonEdit]) -> Json {
    let mut value: Json = serde_json::from_str(json).expect("samples are valid JSON");
    for edit in edits {
        let nodes = json_nodes(&value);
        match edit {
            JsonEdit::Replace { at, with } => {
                if let Some(node) = json_node(&mut value, at % nodes) {
                    *node = with.clone();
                }
            }
            JsonEdit::Remove { at } => match json_node(&mut value, at % nodes) {
                Some(Json::Object(fields)) if !fields.is_empty() => {
                    let key = fields.keys().nth(at % fields.len()).cloned().unwrap_or_default();
                    fields.remove(&key);
                }
                Some(Json::Array(items)) if !items.is_empty() => {
                    let length = items.len();
                    items.remove(at % length);
                }
                _ => {}
            },
            JsonEdit::Add { at, name, with } => match json_node(&mut value, at % nodes) {
                Some(Json::Object(fields)) => {
                    fields.insert(name.clone(), with.clone());
                }
                Some(Json::Array(items)) => items.push(with.clone()),
                _ => {}
            },
            JsonEdit::Wrap { at } => {
                if let Some(node) = json_node(&mut value, at % nodes) {
                    *node = Json::Array(vec![node.take()]);
                }
            }
        }
    }
    value
}

/// A change to JSON text: cut, a character inserted, or a byte range dropped.
#[derive(Clone, Debug)]
enum TextEdit {
    Cut { at: usize },
    Insert { at: usize, text: String },
    Drop { at: usize, length: usize },
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        any::<usize>().prop_map(|at| TextEdit::Cut { at }),
        (any::<usize>(), prop_oneof!["[{}\\[\\],:\"\\\\0-9eE.+-]", "\\PC{1,3}"])
            .prop_map(|(at, text)| TextEdit::Insert { at, text }),
        (any::<usize>(), 1usize..8).prop_map(|(at, length)| TextEdit::Drop { at, length }),
    ]
}

fn edit_text(text: &str, edits: &[TextEdit]) -> String {
    let mut characters: Vec<char> = text.chars().collect();
    for edit in edits {
        let length = characters.len();
        match edit {
            TextEdit::Cut { at } => characters.truncate(at % (length + 1)),
            TextEdit::Insert { at, text } => {
                let at = at % (length + 1);
                characters.splice(at..at, text.chars());
            }
            TextEdit::Drop { at, length: dropped } => {
                let at = at % (length + 1);
                characters.drain(at..(at + dropped).min(length));
            }
        }
    }
    characters.into_iter().collect()
}

/// A byte-level damage of a postcard encoding.
#[derive(Clone, Debug)]
enum ByteDamage {
    Flip { at: usize, bits: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn byte_damage() -> impl Strategy<Value = ByteDamage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| ByteDamage::Flip { at, bits }),
        any::<usize>().prop_map(|at| ByteDamage::Cut { at }),
        // Runs of 0xff make varints that never end; 0x80.. make long ones.
        (
            any::<usize>(),
            prop_oneof![proptest::collection::vec(any::<u8>(), 1..4), Just(vec![0xff; 11]), Just(vec![0x80; 9])]
        )
            .prop_map(|(at, bytes)| ByteDamage::Insert { at, bytes }),
    ]
}

fn damage_bytes(mut bytes: Vec<u8>, damages: &[ByteDamage]) -> Vec<u8> {
    for damage in damages {
        let length = bytes.len();
        match damage {
            ByteDamage::Flip { at, bits } if length > 0 => bytes[at % length] ^= bits,
            ByteDamage::Cut { at } => bytes.truncate(at % (length + 1)),
            ByteDamage::Insert { at, bytes: inserted } => {
                let at = at % (length + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

#[derive(Clone, Debug)]
enum ArgumentCase {
    /// The sample with values replaced, fields dropped or added, as JSON.
    EditedJson(Vec<JsonEdit>),
    /// The sample's text cut or garbled.
    GarbledJson(Vec<TextEdit>),
    /// Random JSON, or not even that.
    RandomJson(Json),
    RandomText(String),
    /// The postcard encoding of an edited sample (when it still has the argument type),
    /// damaged byte-wise.
    Postcard(Vec<JsonEdit>, Vec<ByteDamage>),
    RandomBytes(Vec<u8>),
}

fn argument_case() -> impl Strategy<Value = ArgumentCase> {
    let edits = || proptest::collection::vec(json_edit(), 0..3);
    prop_oneof![
        4 => edits().prop_map(ArgumentCase::EditedJson),
        2 => proptest::collection::vec(text_edit(), 1..3).prop_map(ArgumentCase::GarbledJson),
        1 => json_value().prop_map(ArgumentCase::RandomJson),
        1 => "\\PC{0,40}".prop_map(ArgumentCase::RandomText),
        4 => (edits(), proptest::collection::vec(byte_damage(), 0..3))
            .prop_map(|(edits, damages)| ArgumentCase::Postcard(edits, damages)),
        1 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(ArgumentCase::RandomBytes),
    ]
}

fn invocation(sample: &Sample, case: &ArgumentCase) -> Invocation {
    let json = |value: Json| Invocation::json(sample.plugin, sample.workflow, value.to_string());
    match case {
        ArgumentCase::EditedJson(edits) => json(edit_json(sample.json, edits)),
        ArgumentCase::GarbledJson(edits) => {
            Invocation::json(sample.plugin, sample.workflow, edit_text(sample.json, edits))
        }
        ArgumentCase::RandomJson(value) => json(value.clone()),
        ArgumentCase::RandomText(text) => Invocation::json(sample.plugin, sample.workflow, text.clone()),
        ArgumentCase::Postcard(edits, damages) => {
            let edited = edit_json(sample.json, edits).to_string();
            // An edit that no longer fits the type starts from the sample itself.
            let encoded = (sample.encode)(&edited).or_else(|| (sample.encode)(sample.json)).expect("samples encode");
            Invocation::encoded(sample.plugin, sample.workflow, damage_bytes(encoded, damages))
        }
        ArgumentCase::RandomBytes(bytes) => Invocation::encoded(sample.plugin, sample.workflow, bytes.clone()),
    }
}

/// Whether an answer is allowed for fuzzed arguments: a refusal that blames the input, an
/// abort of a kind the plugin can cause, or a commit.
fn allowed(plugin: &str, result: &InvokeResult) -> Result<(), String> {
    match result {
        InvokeResult::Committed { .. } => Ok(()),
        InvokeResult::Rejected { kind, message } => {
            let blames_input = matches!(
                kind,
                RejectionKind::BadArguments
                    | RejectionKind::PlanFailed
                    | RejectionKind::AccessSetTooLarge
                    | RejectionKind::KeyTooLong
            );
            if blames_input && !message.is_empty() {
                Ok(())
            } else {
                Err(format!("refused as {kind} with {message:?}"))
            }
        }
        InvokeResult::Aborted { kind, message, .. } => {
            // Only testkit is built to panic or touch undeclared keys on request.
            let plugin_fault = matches!(kind, AbortKind::PluginPanic | AbortKind::UndeclaredAccess);
            if matches!(kind, AbortKind::Logic | AbortKind::ValueTooLarge) || (plugin_fault && plugin == "testkit") {
                Ok(())
            } else {
                Err(format!("aborted as {kind}: {message}"))
            }
        }
    }
}

/// The node's status once its counters stopped moving (they are updated just after
/// replies are released).
fn settled_status(client: &BlockingClient) -> NodeStatus {
    let mut status = client.status().expect("status");
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let again = client.status().expect("status");
        if (again.committed_total, again.aborted_total) == (status.committed_total, status.aborted_total) {
            return again;
        }
        status = again;
    }
}

/// Waits for the node's counters to show `committed` and `aborted` transactions (they
/// are updated just after replies are released), then a moment longer for strays.
fn expect_counters(client: &BlockingClient, committed: u64, aborted: u64) -> NodeStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().expect("status");
        if (status.committed_total, status.aborted_total) >= (committed, aborted) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = client.status().expect("status");
    assert_eq!((status.committed_total, status.aborted_total), (committed, aborted), "{status:?}");
    status
}

#[test]
fn fuzzed_plugin_arguments_are_refused_or_run_and_refusals_run_nothing() {
    let node = Node::start();
    let client = node.client();
    for plugin in ["banking", "ycsb-t", "smallbank", "travel", "testkit"] {
        client.deploy_plugin(&plugin_bytes(plugin)).unwrap_or_else(|error| panic!("deploy {plugin}: {error}"));
    }
    open_banking(&client);
    commit(&client, Invocation::json("ycsb-t", "load", r#"{"first":0,"count":20,"value":1000}"#));
    commit(&client, Invocation::json("smallbank", "load", r#"{"first":0,"count":20,"balance":1000}"#));
    commit(&client, Invocation::json("travel", "load", r#"{"hotels":10,"flights":10,"capacity":5}"#));
    let samples = samples();
    let plugins = client.list_plugins().expect("list plugins");
    for sample in &samples {
        let plugin = plugins.iter().find(|plugin| plugin.name == sample.plugin).expect("deployed");
        assert!(plugin.workflows.iter().any(|workflow| workflow == sample.workflow), "{}", sample.workflow);
        let result = client.invoke(invocation(sample, &ArgumentCase::EditedJson(vec![]))).expect("invoke a sample");
        assert!(
            !matches!(result, InvokeResult::Rejected { .. }),
            "the sample of {} is valid: {result:?}",
            sample.workflow
        );
    }
    let before = settled_status(&client);

    let cases = cases(2000, 1);
    let answers: RefCell<BTreeMap<String, u64>> = RefCell::new(BTreeMap::new());
    let started = Instant::now();
    let strategy = (0..samples.len(), argument_case());
    let result = runner(cases, 2).run(&strategy, |(index, case)| {
        let sample = &samples[index];
        let invocation = invocation(sample, &case);
        let result = client
            .invoke(invocation)
            .map_err(|error| TestCaseError::fail(format!("{}/{}: {error}", sample.plugin, sample.workflow)))?;
        allowed(sample.plugin, &result)
            .map_err(|error| TestCaseError::fail(format!("{}/{}: {error}", sample.plugin, sample.workflow)))?;
        let answer = match &result {
            InvokeResult::Committed { .. } => "committed".to_string(),
            InvokeResult::Aborted { kind, .. } => format!("aborted {kind}"),
            InvokeResult::Rejected { kind, .. } => format!("rejected {kind}"),
        };
        *answers.borrow_mut().entry(answer).or_default() += 1;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let answers = answers.into_inner();
    let count =
        |answer: &str| answers.iter().filter(|(name, _)| name.starts_with(answer)).map(|(_, n)| *n).sum::<u64>();
    // Refused requests ran nothing: the node counted exactly the answered transactions.
    expect_counters(&client, before.committed_total + count("committed"), before.aborted_total + count("aborted"));
    assert!(
        count("rejected") > 0 && count("committed") > 0,
        "the fuzzer reaches both refusal and execution: {answers:?}"
    );
    println!(
        "argument fuzzing: {cases} invocations over {} workflows in {:?}: {answers:?}",
        samples.len(),
        started.elapsed()
    );
}

#[test]
fn fuzzed_json_through_the_cli_gets_a_clear_answer() {
    let node = Node::start();
    let client = node.client();
    for plugin in ["banking", "testkit"] {
        client.deploy_plugin(&plugin_bytes(plugin)).unwrap_or_else(|error| panic!("deploy {plugin}: {error}"));
    }
    open_banking(&client);
    let samples: Vec<Sample> =
        samples().into_iter().filter(|sample| matches!(sample.plugin, "banking" | "testkit")).collect();
    let text_case = prop_oneof![
        3 => proptest::collection::vec(json_edit(), 0..3).prop_map(ArgumentCase::EditedJson),
        2 => proptest::collection::vec(text_edit(), 1..3).prop_map(ArgumentCase::GarbledJson),
        1 => "\\PC{0,40}".prop_map(ArgumentCase::RandomText),
    ];
    let cases = cases(100, 10);
    let codes = RefCell::new(BTreeMap::<i32, u32>::new());
    let started = Instant::now();
    let address = node.engine.address.to_string();
    let result = runner(cases, 3).run(&(0..samples.len(), text_case), |(index, case)| {
        let sample = &samples[index];
        let text = match invocation(sample, &case).arguments {
            Arguments::Json(text) => text,
            Arguments::Encoded(_) => unreachable!("only JSON cases are generated"),
        };
        // Arguments cannot hold NUL bytes; a shell could not pass them either.
        let arguments = text.replace('\0', "");
        let output = std::process::Command::new(binary("leasehold"))
            .args(["--address", &address, "invoke", "--", sample.plugin, sample.workflow, &arguments])
            .env_remove("LEASEHOLD_ADDRESS")
            .env("RUST_LOG", "warn")
            .output()
            .map_err(|error| TestCaseError::fail(format!("run leasehold: {error}")))?;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let clear = match code {
            0 => stdout.starts_with("committed at "),
            1 => {
                stderr.starts_with("leasehold: ")
                    && stderr.lines().count() == 1
                    && (stderr.contains("arguments are not valid JSON")
                        || stderr.contains("rejected (bad-arguments)")
                        || stderr.contains("rejected (plan-failed)")
                        || stderr.contains("rejected (key-too-long)")
                        || stderr.contains("rejected (access-set-too-large)"))
            }
            3 => stderr.starts_with("leasehold: aborted at ") && stderr.lines().count() == 1,
            _ => false,
        };
        if !clear {
            return Err(TestCaseError::fail(format!(
                "{} {} {arguments:?}: exit {code}\nstdout: {stdout}\nstderr: {stderr}",
                sample.plugin, sample.workflow
            )));
        }
        *codes.borrow_mut().entry(code).or_default() += 1;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    // Fuzzed deposits and opens may have run, so balances prove nothing here; the engine
    // still serves.
    commit(&client, Invocation::json("banking", "transfer", r#"{"from":3,"to":4,"amount":1}"#));
    println!("CLI fuzzing: {cases} runs in {:?}, exit codes {:?}", started.elapsed(), codes.into_inner());
}
