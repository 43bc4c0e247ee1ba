//! TLS on the client API against real `leasehold-engine` processes, with certificates a
//! test CA (rcgen) issues at the start of each test: a client that trusts the CA works,
//! also through the CLI; a plaintext client, a client that trusts another CA and a client
//! that expects another server name are refused before any Cap'n Proto message, and run
//! nothing. With mutual TLS (`--tls-client-ca-file`), a client without a certificate or
//! with one from another CA is refused, and the right certificate works. The token still
//! applies inside TLS. Bad TLS files stop the engine at start with a message naming them.
//!
//! Between nodes (`peer_tls_*` in the cluster file, tcp fabric): a three-node cluster
//! whose nodes hold certificates of the cluster's CA joins and runs transfers; one whose
//! nodes trust another CA than the one that issued their certificates never joins; and a
//! cluster file naming only some of the three files is refused at start.

use leasehold_client::{BlockingClient, ClientError, Invocation, TlsSettings};
use leasehold_integration::cluster::LocalCluster;
use leasehold_integration::{banking_balances, binary, plugin_bytes, EngineProcess};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority of a test, able to issue server and client certificates.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
    certificate_pem: String,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate_pem = params.self_signed(&key).expect("self-signed CA").pem();
        Authority { params, key, certificate_pem }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, as PEM files in
    /// `directory` named `<stem>.pem` and `<stem>.key`.
    fn issue(&self, directory: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, stem);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).expect("sign");
        let certificate_path = directory.join(format!("{stem}.pem"));
        let key_path = directory.join(format!("{stem}.key"));
        std::fs::write(&certificate_path, certificate.pem()).expect("write certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (certificate_path, key_path)
    }

    fn write(&self, directory: &Path, stem: &str) -> PathBuf {
        let path = directory.join(format!("{stem}.pem"));
        std::fs::write(&path, &self.certificate_pem).expect("write CA certificate");
        path
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The files of one test: the CA, another CA nobody trusts, the node's certificate for
/// 127.0.0.1, and client certificates from both CAs.
struct Files {
    directory: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    node: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

impl Files {
    fn new() -> Files {
        let directory = tempfile::tempdir().expect("temporary directory");
        let authority = Authority::new("Leasehold test CA");
        let other = Authority::new("Some other CA");
        let path = directory.path();
        Files {
            ca: authority.write(path, "ca"),
            other_ca: other.write(path, "other-ca"),
            node: authority.issue(path, "node", &["127.0.0.1", "localhost"]),
            client: authority.issue(path, "client", &["client.leasehold.test"]),
            stranger: other.issue(path, "stranger", &["stranger.leasehold.test"]),
            directory,
        }
    }

    /// Starts an engine speaking TLS with the node's certificate; `mutual` demands client
    /// certificates from the test CA.
    fn engine(&self, mutual: bool, extra: &[&str]) -> EngineProcess {
        let mut arguments = vec!["--tls-certificate-file", text(&self.node.0), "--tls-key-file", text(&self.node.1)];
        if mutual {
            arguments.extend(["--tls-client-ca-file", text(&self.ca)]);
        }
        arguments.extend_from_slice(extra);
        EngineProcess::start(&self.directory.path().join(if mutual { "mutual" } else { "node" }), &arguments)
    }
}

fn committed(client: &BlockingClient) -> u64 {
    client.status().expect("status").committed_total
}

#[test]
fn a_tls_node_serves_clients_that_trust_its_ca_and_refuses_the_others() {
    let files = Files::new();
    let token_file = files.directory.path().join("token");
    std::fs::write(&token_file, "tls and a token\n").expect("write token");
    let engine = files.engine(false, &["--auth-token-file", text(&token_file)]);
    let address = engine.address;
    let trusted = TlsSettings::from_pem_files(&files.ca, None).expect("settings");

    let client = BlockingClient::connect_tls(address, b"tls and a token", &trusted).expect("TLS client connects");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy over TLS");
    let open = client.invoke(Invocation::json("banking", "open", r#"{"first":0,"count":4,"balance":100}"#));
    assert!(open.expect("open").is_committed());
    let before = committed(&client);

    // The token still applies inside TLS.
    match BlockingClient::connect_tls(address, b"wrong token", &trusted) {
        Err(ClientError::AuthenticationFailed) => {}
        other => panic!("a wrong token over TLS must be refused, got {:?}", other.map(|_| ())),
    }
    // A plaintext client never gets past the handshake: the node closes the connection.
    let plain = BlockingClient::connect_with_token(address, b"tls and a token");
    assert!(plain.is_err(), "a plaintext client must be refused by a TLS node");
    // A client that trusts another CA refuses the node's certificate.
    let untrusting = TlsSettings::from_pem_files(&files.other_ca, None).expect("settings");
    match BlockingClient::connect_tls(address, b"tls and a token", &untrusting) {
        Err(ClientError::Tls(message)) => assert!(message.contains("handshake"), "{message}"),
        other => panic!("an untrusted node certificate must fail the handshake, got {:?}", other.map(|_| ())),
    }
    // The certificate names 127.0.0.1 and localhost, not this name.
    let misnamed = trusted.clone().with_server_name("db.example");
    assert!(matches!(BlockingClient::connect_tls(address, b"tls and a token", &misnamed), Err(ClientError::Tls(_))));
    // None of the refused connections ran anything.
    assert_eq!(committed(&client), before, "refused clients ran nothing");

    // The CLI speaks TLS with --tls-ca-file, and without it gets a hint.
    let cli = |arguments: &[&str]| {
        Command::new(binary("leasehold"))
            .args(["--address", &address.to_string(), "--token-file", text(&token_file)])
            .args(arguments)
            .env_remove("LEASEHOLD_ADDRESS")
            .env_remove("LEASEHOLD_TOKEN_FILE")
            .env_remove("LEASEHOLD_TLS_CA_FILE")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the leasehold CLI")
    };
    let status = cli(&["--tls-ca-file", text(&files.ca), "status"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("plugins: banking"), "{status:?}");
    let plaintext = cli(&["status"]);
    assert_eq!(plaintext.status.code(), Some(1), "{plaintext:?}");
    assert!(String::from_utf8_lossy(&plaintext.stderr).contains("--tls-ca-file"), "{plaintext:?}");
}

#[test]
fn mutual_tls_demands_a_client_certificate_from_the_configured_ca() {
    let files = Files::new();
    let engine = files.engine(true, &[]);
    let address = engine.address;

    let with_identity = TlsSettings::from_pem_files(&files.ca, Some((&files.client.0, &files.client.1)))
        .expect("settings with a client certificate");
    let client = BlockingClient::connect_tls(address, b"", &with_identity).expect("a certified client connects");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let before = committed(&client);

    // rustls sends the refusal as an alert after the client's last handshake message, so
    // a refused client may see it on the handshake or on its first call; either way it
    // reaches no capability and runs nothing.
    let refused = |settings: &TlsSettings| match BlockingClient::connect_tls(address, b"", settings) {
        Err(_) => true,
        Ok(client) => client.status().is_err(),
    };
    let anonymous = TlsSettings::from_pem_files(&files.ca, None).expect("settings");
    assert!(refused(&anonymous), "a client without a certificate must be refused");
    let stranger = TlsSettings::from_pem_files(&files.ca, Some((&files.stranger.0, &files.stranger.1)))
        .expect("settings with another CA's certificate");
    assert!(refused(&stranger), "a client certificate from another CA must be refused");
    assert_eq!(committed(&client), before, "refused clients ran nothing");

    let cli = Command::new(binary("leasehold"))
        .args(["--address", &address.to_string(), "--tls-ca-file", text(&files.ca)])
        .args(["--client-certificate-file", text(&files.client.0), "--client-key-file", text(&files.client.1)])
        .arg("plugins")
        .env_remove("LEASEHOLD_ADDRESS")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the leasehold CLI");
    assert_eq!(cli.status.code(), Some(0), "{cli:?}");
    assert!(String::from_utf8_lossy(&cli.stdout).contains("banking"), "{cli:?}");
}

#[test]
fn bad_tls_files_stop_the_engine_at_start() {
    let files = Files::new();
    let directory = files.directory.path();
    let garbage = directory.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    // An engine that wrongly accepts the files would run until killed, so each start gets
    // a deadline instead of waiting for an exit that never comes.
    let start = |arguments: &[&str]| {
        let mut child = Command::new(binary("leasehold-engine"))
            .args(["--data-dir", text(&directory.join("refused")), "--client-address", "127.0.0.1:0"])
            .args(arguments)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run leasehold-engine");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().expect("wait for the engine").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the engine kept running with {arguments:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().expect("engine output")
    };
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-certificate-file", text(&garbage), "--tls-key-file", text(&files.node.1)], "garbage.pem"),
        (&["--tls-certificate-file", text(&files.node.0), "--tls-key-file", text(&garbage)], "garbage.pem"),
        // The key of another certificate does not match.
        (&["--tls-certificate-file", text(&files.node.0), "--tls-key-file", text(&files.client.1)], "node.pem"),
        (&["--tls-certificate-file", text(&files.node.0)], "tls_key_file"),
    ];
    for (arguments, named) in cases {
        let output = start(arguments);
        assert!(!output.status.success(), "the engine must refuse {arguments:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "the error must name {named}: {stderr}");
    }
}

/// The test files, and a directory for a cluster file beside them. Keep the `Files`
/// alive for the whole test: dropping it deletes the directory.
fn cluster_files() -> (Files, PathBuf) {
    let files = Files::new();
    let directory = files.directory.path().join("cluster");
    std::fs::create_dir_all(&directory).expect("cluster directory");
    (files, directory)
}

/// The cluster-file lines of TLS between nodes with these files (relative to the cluster
/// file's directory).
fn peer_tls_lines(certificate: &str, key: &str, ca: &str) -> String {
    format!(
        "peer_tls_certificate_file = \"{certificate}\"\npeer_tls_key_file = \"{key}\"\npeer_tls_ca_file = \"{ca}\"\n"
    )
}

#[test]
fn a_cluster_talks_tls_between_nodes() {
    let (_files, directory) = cluster_files();
    let lines = peer_tls_lines("../node.pem", "../node.key", "../ca.pem");
    let cluster = LocalCluster::start_configured(&directory, 3, "tcp", &lines, &[]);
    transfers_cross_every_node(&cluster);
}

#[test]
fn each_node_can_present_a_certificate_of_its_own() {
    let (files, directory) = cluster_files();
    let authority = Authority::new("Leasehold per-node CA");
    let authority_file = authority.write(&directory, "per-node-ca");
    // The cluster-wide certificate is one the CA did not issue: a node that presented it
    // instead of its own would never be let in, so the cluster joins only if every node
    // presents its own.
    let (wide_certificate, wide_key) = Authority::new("A retired CA").issue(&directory, "wide", &["127.0.0.1"]);
    let own: Vec<(PathBuf, PathBuf)> =
        (0..3).map(|node| authority.issue(&directory, &format!("node-{node}"), &["127.0.0.1"])).collect();
    let lines = peer_tls_lines(text(&wide_certificate), text(&wide_key), text(&authority_file));
    let node_lines = |node: u16| {
        let (certificate, key) = &own[usize::from(node)];
        format!("peer_tls_certificate_file = \"{}\"\npeer_tls_key_file = \"{}\"\n", text(certificate), text(key))
    };
    let cluster = LocalCluster::start_configured_per_node(&directory, 3, "tcp", &lines, &node_lines, &[]);
    transfers_cross_every_node(&cluster);
    drop(files);
}

/// Waits for `cluster` to agree, then sends transfers through every node and checks the
/// balances: accounts live on all three nodes, so every epoch crosses the connections
/// between them.
fn transfers_cross_every_node(cluster: &LocalCluster) {
    cluster.wait_until_synced(std::time::Duration::from_secs(60));
    let client = cluster.connect(0).expect("connect to node 0");
    client.deploy_plugin(&plugin_bytes("banking")).expect("deploy");
    let open = client.invoke(Invocation::json("banking", "open", r#"{"first":0,"count":30,"balance":100}"#));
    assert!(open.expect("open").is_committed());
    // Transfers through every node: accounts live on all three, so every epoch crosses
    // the TLS connections between them.
    for round in 0..10u64 {
        for node in 0..3 {
            let through = cluster.connect(node).expect("connect");
            let (from, to) = ((round * 3 + node as u64) % 30, (round * 7 + node as u64 + 1) % 30);
            let arguments = format!(r#"{{"from":{from},"to":{to},"amount":1}}"#);
            let transfer = through.invoke(Invocation::json("banking", "transfer", arguments)).expect("transfer");
            assert!(transfer.is_committed(), "{transfer:?}");
        }
    }
    let balances = banking_balances(&client, 30);
    assert_eq!(balances.iter().sum::<i64>(), 3000, "{balances:?}");
    assert!(balances.iter().any(|&balance| balance != 100), "the transfers moved money");
}

#[test]
fn nodes_that_trust_another_authority_never_join() {
    let (_files, directory) = cluster_files();
    // Each node presents a certificate of the test CA but trusts only the other CA, so
    // every handshake between nodes fails.
    let lines = peer_tls_lines("../node.pem", "../node.key", "../other-ca.pem");
    let cluster = LocalCluster::start_configured(&directory, 3, "tcp", &lines, &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    for node in 0..3 {
        let status = cluster.connect(node).expect("the client API still answers").status().expect("status");
        assert!(!status.cluster_synced, "node {node} joined a cluster whose peers it cannot verify");
    }
    let logs: Vec<String> = (0..3).flat_map(|node| cluster.nodes[node].log_lines()).collect();
    assert!(
        logs.iter().any(|line| line.to_lowercase().contains("certificate")),
        "no node says why it cannot reach its peers: {logs:?}"
    );
}

#[test]
fn a_cluster_file_with_part_of_the_peer_tls_files_is_refused() {
    let (_files, directory) = cluster_files();
    let (cluster_file, _, _) = leasehold_integration::cluster::write_cluster_file(
        &directory,
        3,
        "tcp",
        "peer_tls_certificate_file = \"../node.pem\"\npeer_tls_key_file = \"../node.key\"\n",
    );
    let output = Command::new(binary("leasehold-engine"))
        .args(["--cluster-file", text(&cluster_file), "--node-id", "0"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run leasehold-engine");
    assert!(!output.status.success(), "the engine must refuse a partial TLS configuration");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("peer_tls_ca_file"), "the error must name the missing key: {stderr}");
}
