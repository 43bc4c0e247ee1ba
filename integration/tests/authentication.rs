//! Client authentication against a real `leasehold-engine` started with a token file:
//! the right token works; no token, an empty one and a wrong one are each refused and run
//! nothing; a connection is closed after three refusals; the bootstrap capability is not
//! the API, so skipping `authenticate` (or pipelining a call behind a refused one) reaches
//! nothing; a bad token file stops the engine at start; and the CLI authenticates with
//! `--token-file`.
//!
//! "Ran nothing" is checked through an authenticated client: the balance a refused
//! transfer would have changed (read in order after every earlier request) and the node's
//! committed count stay as they were.

use capnp::capability::FromClientHook;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use leasehold_client::{BlockingClient, ClientError, Invocation};
use leasehold_integration::{binary, plugin_bytes, plugin_library, EngineProcess};
use leasehold_schema::leasehold_capnp::{gate, leasehold};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// The token in the engine's token file (written with a trailing newline, as `echo`
/// would, which the engine trims).
const TOKEN: &[u8] = b"correct horse battery staple";

/// An engine started with `--auth-token-file` and a metrics endpoint, with banking
/// deployed and accounts 0..10 opened through an authenticated client. The engine is
/// declared first so that it stops before its directory is removed.
struct Node {
    engine: EngineProcess,
    metrics_address: String,
    token_file: PathBuf,
    directory: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let directory = tempfile::tempdir().expect("temporary directory for the engine");
        let token_file = directory.path().join("token");
        let mut contents = TOKEN.to_vec();
        contents.push(b'\n');
        std::fs::write(&token_file, contents).expect("write the token file");
        let metrics_address = format!("127.0.0.1:{}", free_port());
        let engine = EngineProcess::start(
            &directory.path().join("node"),
            &["--auth-token-file", path_text(&token_file), "--metrics-address", &metrics_address],
        );
        let node = Node { engine, metrics_address, token_file, directory };
        let client = node.client();
        client.deploy_plugin(&plugin_bytes("banking")).expect("deploy banking");
        let open = client.invoke(Invocation::json("banking", "open", r#"{"first":0,"count":10,"balance":100}"#));
        assert!(open.expect("open accounts").is_committed());
        node
    }

    /// An authenticated client.
    fn client(&self) -> BlockingClient {
        BlockingClient::connect_with_token(self.engine.address, TOKEN).expect("connect with the right token")
    }

    /// Checks that exactly `expected` transactions have committed, as an authenticated
    /// client sees them. The status counters are updated just after replies are
    /// released, so this waits for the count to arrive, then a moment longer for any
    /// stray commit to show. A key read runs as a read-only transaction and counts too.
    fn expect_committed(&self, expected: u64) {
        let client = self.client();
        let committed = || client.status().expect("status").committed_total;
        let deadline = Instant::now() + Duration::from_secs(10);
        while committed() < expected {
            assert!(Instant::now() < deadline, "the committed count never reached {expected}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(committed(), expected, "committed transactions");
    }

    /// The balance of account 1, which [`transfer`] debits.
    fn balance(&self) -> i64 {
        let value = self.client().read_key("banking", "accounts", &leasehold_sdk::key_u64(1));
        let bytes = value.expect("read a balance").expect("account 1 exists");
        i64::from_le_bytes(bytes.try_into().expect("balances are 8 bytes"))
    }
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

/// Moves 10 from account 1 (opened with 100) to account 2.
fn transfer() -> Invocation {
    Invocation::json("banking", "transfer", r#"{"from":1,"to":2,"amount":10}"#)
}

/// Waits until the node's Prometheus page shows `expected` authentication failures.
fn wait_for_failure_count(metrics_address: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = std::net::TcpStream::connect(metrics_address).expect("connect to the metrics endpoint");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {metrics_address}\r\nConnection: close\r\n\r\n")
            .expect("send request");
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("read response");
        let count = page
            .lines()
            .find(|line| line.starts_with("leasehold_authentication_failures_total"))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok());
        if count == Some(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "metrics never showed {expected} authentication failures:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `test` against a raw Cap'n Proto connection to `address` (no leasehold-client in
/// between), handing it the connection's bootstrap capability, on a fresh `LocalSet`.
fn with_raw_connection<F, Fut>(address: SocketAddr, test: F)
where
    F: FnOnce(capnp::capability::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (reader, writer) = stream.into_split();
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::new(reader.compat()),
            futures::io::BufWriter::new(writer.compat_write()),
            Side::Client,
            Default::default(),
        );
        let mut rpc_system = RpcSystem::new(Box::new(network), None);
        let bootstrap: capnp::capability::Client = rpc_system.bootstrap(Side::Server);
        let connection = tokio::task::spawn_local(async move {
            let _ = rpc_system.await;
        });
        test(bootstrap).await;
        connection.abort();
    });
}

/// Calls `Gate.authenticate` on a raw connection.
async fn authenticate(gate: &gate::Client, token: &[u8]) -> Result<leasehold::Client, capnp::Error> {
    let mut request = gate.authenticate_request();
    request.get().set_token(token);
    let response = request.send().promise.await?;
    response.get()?.get_leasehold()
}

#[test]
fn only_the_right_token_gets_the_api_and_refused_ones_run_nothing() {
    let node = Node::start();
    // The right token works.
    let client = node.client();
    assert!(client.invoke(transfer()).expect("transfer with the right token").is_committed());
    node.expect_committed(2);
    assert_eq!(node.balance(), 90);

    let refused: [(&str, Option<&[u8]>); 3] =
        [("no token", None), ("an empty token", Some(b"")), ("a wrong token", Some(b"correct horse battery"))];
    for (case, token) in refused {
        let connected = match token {
            None => BlockingClient::connect(node.engine.address),
            Some(token) => BlockingClient::connect_with_token(node.engine.address, token),
        };
        match connected {
            Err(ClientError::AuthenticationFailed) => {}
            Err(other) => panic!("{case}: expected AuthenticationFailed, got {other:?}"),
            Ok(client) => {
                let attempt = client.invoke(transfer());
                panic!("{case}: connected (and the transfer answered {attempt:?})");
            }
        }
    }
    // The token with its trailing newline is not the token: the engine trimmed its file.
    let mut with_newline = TOKEN.to_vec();
    with_newline.push(b'\n');
    assert!(matches!(
        BlockingClient::connect_with_token(node.engine.address, &with_newline),
        Err(ClientError::AuthenticationFailed)
    ));

    // A call pipelined behind a refused authentication must fail with it, not run.
    with_raw_connection(node.engine.address, |bootstrap| async move {
        let gate: gate::Client = bootstrap.cast_to();
        let mut request = gate.authenticate_request();
        request.get().set_token(b"guess");
        let pipelined = request.send().pipeline.get_leasehold();
        let mut invoke = pipelined.invoke_request();
        let mut invocation = invoke.get().init_request();
        invocation.set_plugin("banking");
        invocation.set_workflow("transfer");
        invocation.init_arguments().set_json(r#"{"from":1,"to":2,"amount":10}"#);
        let error = invoke.send().promise.await.map(|_| ()).expect_err("a pipelined call must not run");
        assert!(error.to_string().contains("authentication failed"), "{error}");
    });

    node.expect_committed(3);
    assert_eq!(node.balance(), 90, "a refused client changed a balance");
    // Three refused connections, the newline token and the pipelined attempt.
    wait_for_failure_count(&node.metrics_address, 5.0);
    // The refusals did not disturb authenticated clients.
    assert!(client.invoke(transfer()).expect("transfer after the refusals").is_committed());
    assert_eq!(node.balance(), 80);
}

#[test]
fn a_connection_is_closed_after_three_failed_authentications() {
    let node = Node::start();
    with_raw_connection(node.engine.address, |bootstrap| async move {
        let gate: gate::Client = bootstrap.cast_to();
        for attempt in 1..=3 {
            let error = authenticate(&gate, b"guess").await.map(|_| ()).expect_err("a wrong token is refused");
            assert_eq!(error.kind, capnp::ErrorKind::Failed, "attempt {attempt}: {error}");
            assert!(error.to_string().contains("authentication failed"), "attempt {attempt}: {error}");
        }
        // Even the right token is too late now: the node has closed the connection.
        let error = authenticate(&gate, TOKEN).await.map(|_| ()).expect_err("the connection is closed");
        assert_eq!(error.kind, capnp::ErrorKind::Disconnected, "{error}");
    });
    // Two failures leave the connection open, and the right token then works on it.
    with_raw_connection(node.engine.address, |bootstrap| async move {
        let gate: gate::Client = bootstrap.cast_to();
        for _ in 0..2 {
            authenticate(&gate, b"guess").await.map(|_| ()).expect_err("a wrong token is refused");
        }
        let leasehold = authenticate(&gate, TOKEN).await.expect("the right token on the third attempt");
        let status = leasehold.status_request().send().promise.await.expect("status after authenticating");
        assert!(status.get().and_then(|results| results.get_status()).is_ok());
    });
    // The node serves other connections as before.
    assert!(node.client().invoke(transfer()).expect("transfer").is_committed());
    node.expect_committed(2);
}

#[test]
fn the_bootstrap_capability_is_not_the_api() {
    let node = Node::start();
    with_raw_connection(node.engine.address, |bootstrap| async move {
        // A client that skips authenticate and treats the bootstrap as `Leasehold`.
        let leasehold: leasehold::Client = bootstrap.cast_to();
        let status = leasehold.status_request().send().promise.await;
        let error = status.map(|_| ()).expect_err("status on the bootstrap capability must fail");
        assert_eq!(error.kind, capnp::ErrorKind::Unimplemented, "{error}");
        let mut invoke = leasehold.invoke_request();
        let mut invocation = invoke.get().init_request();
        invocation.set_plugin("banking");
        invocation.set_workflow("transfer");
        invocation.init_arguments().set_json(r#"{"from":1,"to":2,"amount":10}"#);
        invoke.send().promise.await.map(|_| ()).expect_err("invoke on the bootstrap capability must fail");
    });
    node.expect_committed(1);
    assert_eq!(node.balance(), 100, "a call on the bootstrap capability ran a transfer");

    // The same holds on a node without a token: the gate is always the bootstrap, it just
    // accepts every token.
    let open = tempfile::tempdir().expect("temporary directory");
    let engine = EngineProcess::start(open.path(), &[]);
    with_raw_connection(engine.address, |bootstrap| async move {
        let leasehold: leasehold::Client = bootstrap.clone().cast_to();
        let status = leasehold.status_request().send().promise.await;
        assert_eq!(status.map(|_| ()).expect_err("not the API").kind, capnp::ErrorKind::Unimplemented);
        let leasehold = authenticate(&bootstrap.cast_to(), b"").await.expect("any token without a configured one");
        leasehold.status_request().send().promise.await.expect("status after authenticating");
    });
    assert!(BlockingClient::connect(engine.address).expect("no token needed").status().is_ok());
    assert!(BlockingClient::connect_with_token(engine.address, b"anything").expect("any token").status().is_ok());
}

#[test]
fn a_bad_token_file_stops_the_engine_at_start() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let empty = directory.path().join("empty");
    std::fs::write(&empty, " \n").expect("write an empty token file");
    let missing = directory.path().join("missing");
    for (file, needle) in [(&empty, "is empty"), (&missing, "cannot read auth_token_file")] {
        let output = Command::new(binary("leasehold-engine"))
            .arg("--data-dir")
            .arg(directory.path().join("node"))
            .args(["--client-address", "127.0.0.1:0", "--auth-token-file", path_text(file)])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run leasehold-engine");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", file.display());
        assert!(stderr.contains(needle) && stderr.contains(path_text(file)), "{stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "the engine must not serve");
    }
}

#[test]
fn the_cli_authenticates_with_its_token_file() {
    let node = Node::start();
    let leasehold = |arguments: &[&str], token_file: Option<&Path>| {
        let mut command = Command::new(binary("leasehold"));
        command
            .arg("--address")
            .arg(node.engine.address.to_string())
            .args(arguments)
            .env_remove("LEASEHOLD_ADDRESS")
            .env_remove("LEASEHOLD_TOKEN_FILE")
            .env("RUST_LOG", "warn");
        if let Some(path) = token_file {
            command.env("LEASEHOLD_TOKEN_FILE", path);
        }
        command.output().expect("run the leasehold CLI")
    };
    let token_flag = ["--token-file", path_text(&node.token_file)];

    let status = leasehold(&[&token_flag[..], &["status"]].concat(), None);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("plugins: banking"), "{status:?}");
    let invoke =
        leasehold(&["invoke", "banking", "transfer", r#"{"from":1,"to":2,"amount":1}"#], Some(&node.token_file));
    assert_eq!(invoke.status.code(), Some(0), "LEASEHOLD_TOKEN_FILE must work: {invoke:?}");
    node.expect_committed(2);
    assert_eq!(node.balance(), 99);
    let without = leasehold(&["invoke", "banking", "transfer", r#"{"from":1,"to":2,"amount":1}"#], None);
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert_eq!(without.status.code(), Some(1), "{without:?}");
    assert!(stderr.starts_with("leasehold: authentication failed") && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("--token-file"), "the message must say how to fix it: {stderr}");

    let wrong_file = node.directory.path().join("wrong-token");
    std::fs::write(&wrong_file, "not it\n").expect("write a wrong token file");
    let wrong = leasehold(&["--token-file", path_text(&wrong_file), "status"], None);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(stderr.contains("authentication failed") && stderr.contains(path_text(&wrong_file)), "{stderr}");

    let missing = node.directory.path().join("no-such-token");
    let unreadable = leasehold(&["--token-file", path_text(&missing), "status"], None);
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert_eq!(unreadable.status.code(), Some(1), "{unreadable:?}");
    assert!(stderr.contains("--token-file") && stderr.contains("no-such-token"), "{stderr}");

    node.expect_committed(3);
    assert_eq!(node.balance(), 99, "a refused CLI ran a transfer");
    let library = plugin_library("banking");
    let deploy = leasehold(&[&token_flag[..], &["deploy", path_text(&library)]].concat(), None);
    assert_eq!(deploy.status.code(), Some(0), "deploy with --token-file: {deploy:?}");
}
