//! The `leasehold` command-line tool, run as a real process against a real
//! `leasehold-engine`: deploy, list plugins, invoke with JSON (and exactly-once retries
//! under `--request-id`), read a key, status; and its error paths, where what matters to
//! a script is the exit code (1 error, 2 usage, 3 aborted transaction) and to a person
//! the one line on stderr.

use leasehold_integration::{binary, plugin_library, EngineProcess};
use std::net::SocketAddr;
use std::process::Command;

/// What one run of the CLI left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `leasehold --address <address> <arguments>` to completion.
fn leasehold(address: SocketAddr, arguments: &[&str]) -> Run {
    let output = Command::new(binary("leasehold"))
        .arg("--address")
        .arg(address.to_string())
        .args(arguments)
        // The address must come from the flag alone, and the logs must not mix in.
        .env_remove("LEASEHOLD_ADDRESS")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the leasehold CLI");
    Run {
        // A CLI killed by a signal has no code; -1 fails every assertion below.
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Runs the CLI and requires exit code 0.
fn succeeds(address: SocketAddr, arguments: &[&str]) -> Run {
    let run = leasehold(address, arguments);
    assert_eq!(run.code, 0, "leasehold {arguments:?} must succeed: {run:?}");
    run
}

/// Runs the CLI and requires exit `code` and a stderr that contains every one of
/// `needles`. Errors that are not usage errors must be one `leasehold: ...` line.
fn fails(address: SocketAddr, arguments: &[&str], code: i32, needles: &[&str]) -> Run {
    let run = leasehold(address, arguments);
    assert_eq!(run.code, code, "leasehold {arguments:?}: {run:?}");
    if code != 2 {
        assert!(run.stderr.starts_with("leasehold: ") && run.stderr.lines().count() == 1, "one line: {run:?}");
    }
    for needle in needles {
        assert!(run.stderr.contains(needle), "leasehold {arguments:?}: stderr lacks {needle:?}: {run:?}");
    }
    run
}

/// An engine on its own temporary data directory with banking deployed through the CLI.
struct Node {
    engine: EngineProcess,
    _directory: tempfile::TempDir,
}

fn node_with_banking() -> Node {
    let directory = tempfile::tempdir().expect("temporary directory for the engine");
    let engine = EngineProcess::start(&directory.path().join("node"), &[]);
    let library = plugin_library("banking");
    let run = succeeds(engine.address, &["deploy", library.to_str().expect("UTF-8 path")]);
    assert!(run.stdout.starts_with("deployed banking "), "{run:?}");
    assert!(run.stdout.contains("workflows: transfer, deposit, balance, open, total"), "{run:?}");
    succeeds(engine.address, &["invoke", "banking", "open", r#"{"first":0,"count":10,"balance":100}"#]);
    Node { engine, _directory: directory }
}

/// An address nothing listens on: a port the system just handed out and took back.
fn unused_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("the listener's address")
}

#[test]
fn deploy_plugins_invoke_read_and_status_print_what_the_node_did() {
    let node = node_with_banking();
    let address = node.engine.address;

    let run = succeeds(address, &["plugins"]);
    assert!(run.stdout.starts_with("banking 0.1.0 ["), "{run:?}");
    assert!(run.stdout.contains("workflows: transfer, deposit, balance, open, total"), "{run:?}");
    assert!(run.stdout.contains("  table accounts (values up to 8 bytes)"), "{run:?}");

    let transfer = ["invoke", "banking", "transfer", r#"{"from":1,"to":2,"amount":30}"#, "--request-id", "x"];
    let first = succeeds(address, &transfer);
    assert!(first.stdout.starts_with("committed at "), "{first:?}");
    assert!(first.stdout.trim_end().ends_with(r#": {"from_balance":70,"to_balance":130}"#), "{first:?}");
    // The same request id again: the first result, timestamp included, and no second run.
    let again = succeeds(address, &transfer);
    assert_eq!(again.stdout, first.stdout);

    let run = succeeds(address, &["read", "banking", "accounts", "u64:1"]);
    assert!(run.stdout.starts_with("70 (hex "), "{run:?}");
    // The same key spelt in hex.
    let run = succeeds(address, &["read", "banking", "accounts", "hex:0000000000000001"]);
    assert!(run.stdout.starts_with("70 (hex "), "{run:?}");
    let run = succeeds(address, &["read", "banking", "accounts", "u64:2"]);
    assert!(run.stdout.starts_with("130 (hex "), "{run:?}");
    let run = succeeds(address, &["read", "banking", "accounts", "u64:99"]);
    assert_eq!(run.stdout, "absent\n");

    let run = succeeds(address, &["status"]);
    assert!(
        run.stdout.starts_with("node 0 (leasehold 0.1.0), concurrency control lease, fsync every-epoch"),
        "{run:?}"
    );
    assert!(run.stdout.contains(" 0 aborted, "), "{run:?}");
    assert!(run.stdout.contains("  plugins: banking\n"), "{run:?}");
    let committed: u64 = run
        .stdout
        .split(" committed")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("status shows a committed count: {run:?}"));
    assert!(committed >= 2, "open and transfer committed: {run:?}");
}

#[test]
fn refused_and_aborted_invocations_exit_with_their_codes() {
    let node = node_with_banking();
    let address = node.engine.address;

    fails(address, &["invoke", "banking", "transfer", "{from:1}"], 1, &["arguments are not valid JSON"]);
    let run = fails(
        address,
        &["invoke", "banking", "transfer", r#"{"from":1,"to":2,"amount":1000}"#],
        3,
        &["aborted at ", "(logic): insufficient funds in account 1"],
    );
    assert!(run.stdout.is_empty(), "{run:?}");
    fails(
        address,
        &["invoke", "banking", "embezzle", "{}"],
        1,
        &[r#"rejected (unknown-workflow): plugin "banking" has no workflow "embezzle""#],
    );
    fails(address, &["invoke", "nope", "transfer", "{}"], 1, &[r#"rejected (unknown-plugin): unknown plugin "nope""#]);
    fails(
        address,
        &["invoke", "banking", "transfer", r#"{"from":1}"#],
        1,
        &["rejected (bad-arguments): ", "missing field `to`"],
    );
    fails(
        address,
        &["read", "banking", "vaults", "u64:1"],
        1,
        &[r#"rejected (unknown-table): plugin "banking" has no table "vaults""#],
    );
    fails(address, &["read", "banking", "accounts", "u64:one"], 1, &[r#""one" is not an unsigned 64-bit number"#]);
    // A multi-byte character among the digits once made the key parser panic (exit 101).
    fails(address, &["read", "banking", "accounts", "hex:aé1"], 1, &[r#""aé1" is not hexadecimal"#]);
    fails(address, &["read", "banking", "accounts", "hex:+1"], 1, &[r#""+1" is not hexadecimal"#]);
    fails(address, &["read", "banking", "accounts", "hex:012"], 1, &["odd number of digits"]);

    let directory = tempfile::tempdir().expect("temporary directory");
    let text = directory.path().join("not-a-plugin.so");
    std::fs::write(&text, "just text\n").expect("write a text file");
    fails(
        address,
        &["deploy", text.to_str().expect("UTF-8 path")],
        1,
        &["plugin refused", "not a loadable shared library"],
    );
    let missing = directory.path().join("missing.so");
    fails(address, &["deploy", missing.to_str().expect("UTF-8 path")], 1, &["cannot read", "missing.so"]);

    // None of it moved money or added a plugin.
    let run = succeeds(address, &["read", "banking", "accounts", "u64:1"]);
    assert!(run.stdout.starts_with("100 (hex "), "{run:?}");
    let run = succeeds(address, &["plugins"]);
    assert_eq!(run.stdout.lines().filter(|line| !line.starts_with(' ')).count(), 1, "{run:?}");
}

#[test]
fn an_unreachable_node_exits_1_naming_the_address() {
    let address = unused_address();
    for arguments in [&["status"][..], &["plugins"], &["invoke", "banking", "open", "{}"], &["read", "b", "t", "k"]] {
        let run = fails(address, arguments, 1, &[&format!("cannot connect to {address}"), "is a node running"]);
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let address = unused_address();
    // Missing arguments, an unknown subcommand, an unknown flag: caught before connecting.
    fails(address, &["invoke", "banking", "transfer"], 2, &["Usage"]);
    fails(address, &["transfers"], 2, &["unrecognized subcommand"]);
    fails(address, &["status", "--verbose"], 2, &["unexpected argument"]);
    let run = leasehold(address, &[]);
    assert_eq!(run.code, 2, "no subcommand: {run:?}");
    let output = Command::new(binary("leasehold"))
        .args(["--address", "not-an-address", "status"])
        .env_remove("LEASEHOLD_ADDRESS")
        .output()
        .expect("run the leasehold CLI");
    assert_eq!(output.status.code(), Some(2), "an invalid address is a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-an-address"));
}

/// A base port whose client ports (base..base+2) and fabric ports (base+100..) are free.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let candidate = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        if candidate > 60000 {
            continue;
        }
        let all_free = (0..3)
            .flat_map(|node| [candidate + node, candidate + 100 + node])
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return candidate;
        }
    }
    panic!("no free port range for a local cluster");
}

#[test]
fn cluster_start_status_invoke_and_stop_a_local_cluster() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cluster = directory.path().join("cluster");
    let cluster_directory = cluster.display().to_string();
    let base_port = free_base_port();
    let base = base_port.to_string();
    let anywhere = unused_address();
    let started = succeeds(
        anywhere,
        &[
            "cluster",
            "start",
            "--directory",
            &cluster_directory,
            "--nodes",
            "3",
            "--fabric",
            "tcp",
            "--base-port",
            &base,
        ],
    );
    assert!(started.stdout.contains("cluster of 3 nodes over tcp is up"), "{started:?}");
    let again = fails(anywhere, &["cluster", "start", "--directory", &cluster_directory], 1, &["already running"]);
    drop(again);
    // Deploy through node 0, invoke through node 2: the plugin reached every node.
    let node = |id: u16| -> SocketAddr { format!("127.0.0.1:{}", base_port + id).parse().expect("address") };
    succeeds(node(0), &["deploy", plugin_library("banking").to_str().expect("utf-8 path")]);
    succeeds(node(2), &["invoke", "banking", "open", r#"{"first":0,"count":30,"balance":100}"#]);
    let transfer = succeeds(node(1), &["invoke", "banking", "transfer", r#"{"from":1,"to":2,"amount":40}"#]);
    assert!(transfer.stdout.contains("committed"), "{transfer:?}");
    let status = succeeds(anywhere, &["cluster", "status", "--directory", &cluster_directory]);
    assert_eq!(status.stdout.matches("in the view").count(), 3, "{status:?}");
    let node_status = succeeds(node(1), &["status"]);
    assert!(node_status.stdout.contains("cluster of 3 nodes over tcp"), "{node_status:?}");
    let stopped = succeeds(anywhere, &["cluster", "stop", "--directory", &cluster_directory]);
    assert_eq!(stopped.stdout.matches("stopped").count(), 3, "{stopped:?}");
    for id in 0..3 {
        assert!(!cluster.join(format!("node-{id}.pid")).exists(), "pid file of node {id} removed");
    }
}
