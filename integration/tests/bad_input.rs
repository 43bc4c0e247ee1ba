//! Bad input against a real `leasehold-engine` process: refused plugin libraries, refused
//! invocations and key reads, plugin panics and undeclared accesses, garbage on the raw
//! client socket, a plugin deployed twice, and a clean restart.
//!
//! Every test starts its own engine on a temporary data directory and talks to it over
//! loopback with `leasehold_client::BlockingClient`. Each checks two things: that the bad
//! input gets the precise refusal or abort a client can act on (kind and message), and
//! that it changed nothing: balances, listed plugins and files stay as they were, and the
//! engine keeps serving every plugin.

use leasehold_client::{
    AbortKind, BlockingClient, ClientError, Invocation, InvokeResult, PluginInfo, RejectionKind, Timestamp,
};
use leasehold_integration::{plugin_bytes, EngineProcess};
use leasehold_plugin_api::testkit::{Op, Program, UNDECLARED_KEY_BASE};
use leasehold_sdk::key_u64;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Accounts opened by [`open_accounts`]: numbers `0..ACCOUNTS`, each with
/// [`INITIAL_BALANCE`].
const ACCOUNTS: u64 = 10;
const INITIAL_BALANCE: i64 = 100;

/// An engine on its own temporary data directory. The engine is declared first so that it
/// is stopped before its directory is removed.
struct Node {
    engine: EngineProcess,
    _directory: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let directory = tempfile::tempdir().expect("temporary directory for the engine");
        let engine = EngineProcess::start(&directory.path().join("node"), &[]);
        Node { engine, _directory: directory }
    }

    /// An engine that reads `configuration` (TOML) from a file.
    fn with_configuration(configuration: &str) -> Node {
        let directory = tempfile::tempdir().expect("temporary directory for the engine");
        let path = directory.path().join("node.toml");
        std::fs::write(&path, configuration).expect("write the configuration");
        let engine =
            EngineProcess::start(&directory.path().join("node"), &["--config", path.to_str().expect("UTF-8 path")]);
        Node { engine, _directory: directory }
    }

    fn client(&self) -> BlockingClient {
        BlockingClient::connect(self.engine.address).expect("connect to the engine")
    }
}

fn deploy(client: &BlockingClient, plugin: &str) -> PluginInfo {
    client.deploy_plugin(&plugin_bytes(plugin)).unwrap_or_else(|error| panic!("deploy {plugin}: {error}"))
}

fn committed_json(result: InvokeResult) -> String {
    match result {
        InvokeResult::Committed { output_json: Some(json), .. } => json,
        other => panic!("expected a commit with JSON output, got {other:?}"),
    }
}

fn rejected(result: InvokeResult, expected: RejectionKind) -> String {
    match result {
        InvokeResult::Rejected { kind, message } => {
            assert_eq!(kind, expected, "rejection message: {message}");
            message
        }
        other => panic!("expected a {expected} rejection, got {other:?}"),
    }
}

fn aborted(result: InvokeResult, expected: AbortKind) -> (Timestamp, String) {
    match result {
        InvokeResult::Aborted { timestamp, kind, message } => {
            assert_eq!(kind, expected, "abort message: {message}");
            (timestamp, message)
        }
        other => panic!("expected a {expected} abort, got {other:?}"),
    }
}

/// Opens accounts `0..ACCOUNTS` with [`INITIAL_BALANCE`] each.
fn open_accounts(client: &BlockingClient) {
    let arguments = format!(r#"{{"first":0,"count":{ACCOUNTS},"balance":{INITIAL_BALANCE}}}"#);
    let result = client.invoke(Invocation::json("banking", "open", arguments)).expect("open accounts");
    assert_eq!(committed_json(result), ACCOUNTS.to_string());
}

fn transfer(from: u64, to: u64, amount: i64) -> Invocation {
    Invocation::json("banking", "transfer", format!(r#"{{"from":{from},"to":{to},"amount":{amount}}}"#))
}

/// Every account's committed balance, read key by key.
fn balances(client: &BlockingClient) -> Vec<i64> {
    (0..ACCOUNTS)
        .map(|account| {
            let value = client
                .read_key("banking", "accounts", &key_u64(account))
                .expect("read a balance")
                .unwrap_or_else(|| panic!("account {account} exists"));
            i64::from_le_bytes(value.try_into().expect("balances are 8 bytes"))
        })
        .collect()
}

/// Moves `amount` from account 0 to account 1 and checks that the engine reports and
/// stores exactly that: proof that the banking plugin is still served correctly.
fn assert_banking_serves(client: &BlockingClient, amount: i64) {
    let before = balances(client);
    let output = committed_json(client.invoke(transfer(0, 1, amount)).expect("transfer after bad input"));
    let (from, to) = (before[0] - amount, before[1] + amount);
    assert_eq!(output, format!(r#"{{"from_balance":{from},"to_balance":{to}}}"#));
    let mut expected = before;
    expected[0] = from;
    expected[1] = to;
    assert_eq!(balances(client), expected);
}

fn program(steps: [Vec<Op>; 3]) -> Invocation {
    Invocation::encoded("testkit", "program", leasehold_sdk::encode(&Program { steps }).expect("encode a program"))
}

/// The committed value of a testkit cell (`None` when it was never written).
fn cell(client: &BlockingClient, key: &[u8]) -> Option<i64> {
    client
        .read_key("testkit", "cells", key)
        .expect("read a testkit cell")
        .map(|value| i64::from_le_bytes(value.try_into().expect("cells are 8 bytes")))
}

/// Runs a testkit program that only reads `cell`, proving the testkit plugin is still
/// served, and returns what it read.
fn testkit_reads(client: &BlockingClient, cell: u8) -> i64 {
    let result = client.invoke(program([vec![Op::Read(cell)], vec![], vec![]])).expect("testkit read");
    match result {
        InvokeResult::Committed { output, .. } => {
            let reads: Vec<i64> = leasehold_sdk::decode(&output).expect("a testkit program outputs its reads");
            assert_eq!(reads.len(), 1, "one read was asked for");
            reads[0]
        }
        other => panic!("a testkit read must commit, got {other:?}"),
    }
}

/// The names of the files in the engine's plugin directory, sorted.
fn plugin_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("plugins"))
        .expect("the engine keeps a plugin directory")
        .map(|entry| entry.expect("plugin directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A shared library that is certainly not a plugin: libm, found where Debian puts it or
/// through the loader cache.
fn system_library_without_entry() -> Option<std::path::PathBuf> {
    let usual = Path::new("/lib/x86_64-linux-gnu/libm.so.6");
    if usual.exists() {
        return Some(usual.to_path_buf());
    }
    let cache = std::process::Command::new("ldconfig").arg("-p").output().ok()?;
    String::from_utf8_lossy(&cache.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("libm.so"))
        .filter_map(|line| line.rsplit("=> ").next())
        .map(|path| std::path::PathBuf::from(path.trim()))
        .find(|path| path.exists())
}

fn refused_deploy(client: &BlockingClient, library: &[u8], what: &str) -> String {
    match client.deploy_plugin(library) {
        Err(ClientError::DeployRefused { message }) => message,
        other => panic!("deploying {what} must be refused, got {other:?}"),
    }
}

#[test]
fn refused_deploys_name_the_problem_and_leave_the_deployed_plugins_alone() {
    let mut node = Node::start();
    let client = node.client();
    let banking = deploy(&client, "banking");
    open_accounts(&client);

    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let message = refused_deploy(&client, &garbage, "garbage bytes");
    assert!(message.contains("not a loadable shared library"), "{message}");

    let message = refused_deploy(&client, &[], "an empty file");
    assert!(message.contains("empty"), "{message}");

    let message = refused_deploy(&client, b"#!/bin/sh\necho this is not a plugin\n", "a text file");
    assert!(message.contains("not a loadable shared library"), "{message}");

    match system_library_without_entry() {
        Some(path) => {
            let library = std::fs::read(&path).expect("read a system library");
            let message = refused_deploy(&client, &library, "a shared library without the entry symbol");
            assert!(message.contains("does not export `leasehold_plugin_entry_v1`"), "{message}");
        }
        None => println!("no libm found: skipping the shared-library-without-entry case"),
    }

    let message = refused_deploy(&client, &plugin_bytes("wrong-abi"), "a plugin of another ABI version");
    assert!(message.contains("ABI version 999") && message.contains("version 1"), "{message}");

    // Nothing of the refused libraries stays: not in the list, not on disk.
    assert_eq!(client.list_plugins().expect("list plugins"), vec![banking.clone()]);
    assert_eq!(plugin_files(&node.engine.data_dir), vec![format!("{}.so", banking.digest)]);
    assert_banking_serves(&client, 5);

    // Nor in RocksDB: after a restart the node loads exactly what it listed before.
    drop(client);
    assert!(node.engine.terminate().success(), "the engine exits cleanly on SIGTERM");
    node.engine.restart();
    let client = node.client();
    assert_eq!(client.list_plugins().expect("list plugins after restart"), vec![banking]);
    assert_banking_serves(&client, 5);
}

#[test]
fn refused_invocations_have_their_kind_and_run_nothing() {
    let node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    open_accounts(&client);
    let balances_before = balances(&client);
    // Taken after the reads above, which run as transactions of their own.
    let before = client.status().expect("status");

    let message = rejected(
        client.invoke(Invocation::json("nope", "transfer", "{}")).expect("invoke"),
        RejectionKind::UnknownPlugin,
    );
    assert!(message.contains("\"nope\""), "{message}");

    let result = client.invoke(Invocation::json("banking", "embezzle", "{}")).expect("invoke");
    let message = rejected(result, RejectionKind::UnknownWorkflow);
    assert!(message.contains("\"embezzle\""), "{message}");

    let result =
        client.invoke(Invocation::json("banking", "transfer", r#"{"from":0,"to":1,"amount":"#)).expect("invoke");
    let message = rejected(result, RejectionKind::BadArguments);
    assert!(message.contains("EOF"), "the message says where the JSON broke: {message}");

    let result =
        client.invoke(Invocation::json("banking", "transfer", r#"{"from":"zero","to":1,"amount":5}"#)).expect("invoke");
    let message = rejected(result, RejectionKind::BadArguments);
    assert!(message.contains("invalid type"), "{message}");

    let result = client.invoke(Invocation::json("banking", "transfer", r#"{"from":0,"to":1}"#)).expect("invoke");
    let message = rejected(result, RejectionKind::BadArguments);
    assert!(message.contains("amount"), "the message names the missing field: {message}");

    // A run of 0xff bytes is no valid varint (a u64 takes at most ten bytes), so postcard
    // cannot decode the first field.
    let result = client.invoke(Invocation::encoded("banking", "transfer", vec![0xff; 16])).expect("invoke");
    let message = rejected(result, RejectionKind::BadArguments);
    assert!(message.contains("cannot decode"), "{message}");

    let result = client.invoke(transfer(0, 1, 5).with_request_id(vec![b'x'; 65])).expect("invoke");
    let message = rejected(result, RejectionKind::RequestIdTooLong);
    assert!(message.contains("64 bytes"), "{message}");

    // One invocation over the default limit of 10,000 per invokeMany refuses the call as a
    // whole, before any of it runs.
    let too_many: Vec<Invocation> = (0..10_001).map(|_| transfer(0, 1, 1)).collect();
    match client.invoke_many(too_many) {
        Err(ClientError::Rejected { kind: RejectionKind::TooManyInvocations, message }) => {
            assert!(message.contains("10001") && message.contains("10000"), "{message}");
        }
        other => panic!("10,001 invocations in one call must be refused, got {other:?}"),
    }

    // Nothing ran: no transaction, no epoch, no changed balance.
    let after = client.status().expect("status");
    assert_eq!(
        (after.committed_total, after.aborted_total, after.epochs_total),
        (before.committed_total, before.aborted_total, before.epochs_total)
    );
    // The six refusals the node decided are counted (the id and invokeMany limits are
    // enforced by the RPC edge).
    assert!(after.rejected_total >= before.rejected_total + 6, "refusals are counted: {after:?}");
    assert_eq!(balances(&client), balances_before);

    // A refused request was not recorded under its id: fixed, it runs under the same id,
    // and from then on the id answers with that first result.
    let result = client
        .invoke(Invocation::json("banking", "transfer", "{").with_request_id(b"fixed-later".to_vec()))
        .expect("invoke");
    rejected(result, RejectionKind::BadArguments);
    let first = client.invoke(transfer(2, 3, 7).with_request_id(b"fixed-later".to_vec())).expect("invoke");
    assert!(first.is_committed(), "{first:?}");
    let retried = client.invoke(transfer(2, 3, 7).with_request_id(b"fixed-later".to_vec())).expect("invoke");
    assert_eq!(retried, first, "a retry gets the first result");
    // The longest allowed id is accepted.
    let longest = client.invoke(transfer(2, 3, 1).with_request_id(vec![b'y'; 64])).expect("invoke");
    assert!(longest.is_committed(), "{longest:?}");
    let mut expected = balances_before;
    expected[2] -= 8;
    expected[3] += 8;
    assert_eq!(balances(&client), expected, "the retry did not move money a second time");
}

#[test]
fn invoke_many_over_the_configured_limit_is_refused_whole_and_at_the_limit_runs() {
    let node = Node::with_configuration("invocations_per_message_max = 8\n");
    let client = node.client();
    deploy(&client, "banking");
    open_accounts(&client);

    let transfers = |count: usize| (0..count).map(|_| transfer(4, 5, 1)).collect::<Vec<_>>();
    match client.invoke_many(transfers(9)) {
        Err(ClientError::Rejected { kind: RejectionKind::TooManyInvocations, message }) => {
            assert!(message.contains("9 invocations") && message.contains("at most 8"), "{message}");
        }
        other => panic!("9 invocations over a limit of 8 must be refused, got {other:?}"),
    }
    assert_eq!(balances(&client), vec![INITIAL_BALANCE; ACCOUNTS as usize], "no part of the refused call ran");

    let results = client.invoke_many(transfers(8)).expect("8 invocations are within the limit");
    assert_eq!(results.len(), 8);
    assert!(results.iter().all(InvokeResult::is_committed), "{results:?}");
    let balances = balances(&client);
    assert_eq!((balances[4], balances[5]), (INITIAL_BALANCE - 8, INITIAL_BALANCE + 8));
}

#[test]
fn a_library_over_the_message_limit_is_refused_and_the_engine_keeps_serving() {
    // Plugin libraries of a few MiB fit; 17 MiB does not.
    let node = Node::with_configuration("message_bytes_max = 16777216\n");
    let client = node.client();
    let banking = deploy(&client, "banking");
    open_accounts(&client);

    let oversized = vec![0x5a; 17 << 20];
    match node.client().deploy_plugin(&oversized) {
        Err(error) => assert!(error.to_string().contains("too large"), "the error says why: {error}"),
        Ok(info) => panic!("a library over the message limit was deployed: {info:?}"),
    }
    // Only the offending connection is dropped.
    assert_eq!(client.list_plugins().expect("list plugins"), vec![banking]);
    assert_banking_serves(&client, 2);
}

#[test]
fn key_reads_of_unknown_plugins_tables_and_overlong_keys_are_rejected() {
    let node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    open_accounts(&client);

    match client.read_key("banking", "vaults", &key_u64(1)) {
        Err(ClientError::Rejected { kind: RejectionKind::UnknownTable, message }) => {
            assert!(message.contains("\"vaults\""), "{message}");
        }
        other => panic!("a read of an unknown table must be rejected, got {other:?}"),
    }
    match client.read_key("nope", "accounts", &key_u64(1)) {
        Err(ClientError::Rejected { kind: RejectionKind::UnknownPlugin, message }) => {
            assert!(message.contains("\"nope\""), "{message}");
        }
        other => panic!("a read of an unknown plugin must be rejected, got {other:?}"),
    }
    // The default key limit is 1024 bytes.
    match client.read_key("banking", "accounts", &[7; 1025]) {
        Err(ClientError::Rejected { kind: RejectionKind::KeyTooLong, message }) => {
            assert!(message.contains("1024"), "{message}");
        }
        other => panic!("a read of a 1025-byte key must be rejected, got {other:?}"),
    }
    assert_eq!(client.read_key("banking", "accounts", &[7; 1024]).expect("a key at the limit is read"), None);
    assert_banking_serves(&client, 3);
}

#[test]
fn plugin_panics_and_undeclared_accesses_abort_without_partial_writes() {
    let node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    deploy(&client, "testkit");
    open_accounts(&client);
    let first = client.invoke(program([vec![Op::Set(1, 7)], vec![], vec![]])).expect("set cell 1");
    assert!(first.is_committed(), "{first:?}");

    // Step 1 writes cell 1, step 2 panics: the write must not survive.
    let panicking = program([vec![Op::Set(1, 99)], vec![Op::Panic], vec![]]).with_request_id(b"panics".to_vec());
    let first_abort = client.invoke(panicking.clone()).expect("invoke a panicking program");
    let (_, message) = aborted(first_abort.clone(), AbortKind::PluginPanic);
    assert!(message.contains("testkit was asked to panic"), "{message}");
    assert_eq!(cell(&client, &[1]), Some(7));
    assert_eq!(testkit_reads(&client, 1), 7);
    assert_banking_serves(&client, 1);
    // An abort is a final outcome: the retry gets it back instead of running again.
    let retried = client.invoke(panicking).expect("retry the panicking program");
    assert_eq!(retried, first_abort);

    // A planner that panics never gets to run anything: a rejection, not an abort.
    let result = client.invoke(Invocation::json("testkit", "panic_in_plan", "{}")).expect("invoke panic_in_plan");
    let message = rejected(result, RejectionKind::PlanFailed);
    assert!(message.contains("testkit planner was asked to panic"), "{message}");
    assert_eq!(testkit_reads(&client, 1), 7);
    assert_banking_serves(&client, 1);

    // Step 1 adds to cell 1, step 2 writes a key the plan did not declare.
    let result = client
        .invoke(program([vec![Op::Add(1, 1)], vec![Op::Undeclared(3)], vec![]]))
        .expect("invoke an undeclared write");
    let (_, message) = aborted(result, AbortKind::UndeclaredAccess);
    assert!(message.contains("undeclared key") && message.contains("cells"), "{message}");
    assert_eq!(cell(&client, &[1]), Some(7));
    assert_eq!(cell(&client, &(UNDECLARED_KEY_BASE + 3).to_be_bytes()), None, "the undeclared write did not land");
    assert_eq!(testkit_reads(&client, 1), 7);
    assert_banking_serves(&client, 1);
}

/// Reads from a raw connection until the engine closes it; false when it is still open
/// after a few seconds.
fn engine_hangs_up(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("set a read timeout");
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // The engine may say why (a Cap'n Proto abort message) before closing.
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return true,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("reading from the engine: {error}"),
        }
    }
    false
}

/// Opens a raw connection and writes `bytes`. The engine may close the connection before
/// everything is written; that is a fine answer to garbage.
fn send_raw(node: &Node, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(node.engine.address).expect("raw connection to the engine");
    match stream.write_all(bytes) {
        Ok(()) => {}
        Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        Err(error) => panic!("writing to the engine: {error}"),
    }
    stream
}

/// A Cap'n Proto stream frame header: one segment of `words` eight-byte words.
fn frame_header(words: u32) -> Vec<u8> {
    let mut header = 0u32.to_le_bytes().to_vec();
    header.extend_from_slice(&words.to_le_bytes());
    header
}

#[test]
fn garbage_on_the_client_socket_is_dropped_and_the_engine_keeps_serving() {
    let node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    open_accounts(&client);

    // Random bytes (a fixed xorshift sequence, so every run sends the same).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut stream = send_raw(&node, &random);
    assert!(engine_hangs_up(&mut stream), "random bytes must make the engine close the connection");

    // A header announcing a 2 GiB segment, far over the 64 MiB message limit: refused from
    // the header alone, without waiting for (or allocating) the segment.
    let mut stream = send_raw(&node, &frame_header(0x0fff_ffff));
    assert!(engine_hangs_up(&mut stream), "an oversized frame must make the engine close the connection");

    // A well-framed message whose content is no RPC message at all.
    let mut garbage_frame = frame_header(4);
    garbage_frame.extend_from_slice(&[0xff; 32]);
    let mut stream = send_raw(&node, &garbage_frame);
    assert!(engine_hangs_up(&mut stream), "an undecodable message must make the engine close the connection");

    // A truncated frame: while the engine waits for the rest, other clients are served...
    let mut truncated = frame_header(16);
    truncated.extend_from_slice(&[0; 24]);
    let mut stream = send_raw(&node, &truncated);
    let fresh = node.client();
    assert_banking_serves(&fresh, 2);
    // ...and when the stream ends mid-frame, the engine lets the connection go.
    stream.shutdown(Shutdown::Write).expect("half-close the truncated frame");
    assert!(engine_hangs_up(&mut stream), "a frame cut off by end of stream must close the connection");

    // The connection opened before the garbage is unaffected, and so is a new one.
    assert_banking_serves(&client, 2);
    let status = node.client().status().expect("status on a new connection");
    assert_eq!(status.plugins, vec!["banking".to_string()]);
}

#[test]
fn redeploying_a_plugin_keeps_one_entry_and_its_data() {
    let node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    open_accounts(&client);
    let first = deploy(&client, "testkit");
    let result = client.invoke(program([vec![Op::Set(2, 5)], vec![], vec![]])).expect("set cell 2");
    assert!(result.is_committed(), "{result:?}");

    let second = deploy(&client, "testkit");
    assert_eq!(second, first, "the same library describes itself the same way");
    let plugins = client.list_plugins().expect("list plugins");
    let names: Vec<&str> = plugins.iter().map(|plugin| plugin.name.as_str()).collect();
    assert_eq!(names, ["banking", "testkit"]);
    // The redeployed plugin sees the data written before: its tables keep their ids.
    assert_eq!(cell(&client, &[2]), Some(5));
    assert_eq!(testkit_reads(&client, 2), 5);
    let result = client.invoke(program([vec![Op::Add(2, 1)], vec![Op::Read(2)], vec![]])).expect("add to cell 2");
    assert!(result.is_committed(), "{result:?}");
    assert_eq!(cell(&client, &[2]), Some(6));
    assert_banking_serves(&client, 4);
}

#[test]
fn deployed_plugins_and_data_survive_a_clean_restart() {
    let mut node = Node::start();
    let client = node.client();
    deploy(&client, "banking");
    deploy(&client, "testkit");
    open_accounts(&client);
    let tracked = transfer(6, 7, 25).with_request_id(b"before-restart".to_vec());
    let first = client.invoke(tracked.clone()).expect("transfer before the restart");
    assert!(first.is_committed(), "{first:?}");
    let result = client.invoke(program([vec![Op::Set(4, -3)], vec![], vec![]])).expect("set cell 4");
    assert!(result.is_committed(), "{result:?}");
    let plugins = client.list_plugins().expect("list plugins");
    let balances_before = balances(&client);
    drop(client);

    assert!(node.engine.terminate().success(), "the engine exits cleanly on SIGTERM");
    node.engine.restart();
    let client = node.client();
    assert_eq!(client.list_plugins().expect("list plugins after restart"), plugins);
    assert_eq!(balances(&client), balances_before);
    assert_eq!(cell(&client, &[4]), Some(-3));
    assert_eq!(client.invoke(tracked).expect("retry after the restart"), first, "the retry gets the first result");
    assert_eq!(balances(&client), balances_before, "the retry did not run again");
    assert_eq!(testkit_reads(&client, 4), -3);
    assert_banking_serves(&client, 6);
}
