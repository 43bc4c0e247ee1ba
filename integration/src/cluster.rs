//! Local clusters for tests: a cluster file with free loopback ports and one real
//! `leasehold-engine` process per node; or, in a [`NetworkLab`], each node in its own
//! network namespace on the lab's addresses.

use crate::netns::NetworkLab;
use crate::{EngineProcess, Launch};
use leasehold_client::{BlockingClient, ClientError};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A cluster of engine processes on loopback, each with its own data directory.
pub struct LocalCluster {
    pub cluster_file: PathBuf,
    pub nodes: Vec<EngineProcess>,
    /// Client addresses, by node id.
    pub addresses: Vec<SocketAddr>,
    shm_directory: PathBuf,
    /// The network namespace of each node in a lab cluster (empty otherwise): its
    /// addresses are reachable only from there.
    namespaces: Vec<String>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Writes `<directory>/cluster.toml` for `node_count` nodes over `fabric` and returns
/// its path, the client addresses and the shm directory it names.
pub fn write_cluster_file(
    directory: &Path,
    node_count: u16,
    fabric: &str,
    extra_lines: &str,
) -> (PathBuf, Vec<SocketAddr>, PathBuf) {
    write_cluster_file_with(directory, fabric, &loopback_addresses(node_count), extra_lines, &|_| String::new())
}

/// Free (client, peer) addresses on loopback for `node_count` nodes.
fn loopback_addresses(node_count: u16) -> Vec<(SocketAddr, SocketAddr)> {
    (0..node_count)
        .map(|_| {
            let client = format!("127.0.0.1:{}", free_port()).parse().expect("address");
            let peer = format!("127.0.0.1:{}", free_port()).parse().expect("address");
            (client, peer)
        })
        .collect()
}

/// Writes `<directory>/cluster.toml` for nodes with the given (client, peer) addresses,
/// by node id, with `extra_lines` (top-level keys) before the nodes and `node_lines(id)`
/// (keys of node `id`'s entry, each ending in a newline) in every node's entry; returns
/// as [`write_cluster_file`].
pub fn write_cluster_file_with(
    directory: &Path,
    fabric: &str,
    node_addresses: &[(SocketAddr, SocketAddr)],
    extra_lines: &str,
    node_lines: &dyn Fn(u16) -> String,
) -> (PathBuf, Vec<SocketAddr>, PathBuf) {
    static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let shm_directory = PathBuf::from(format!(
        "/dev/shm/leasehold-test-{}-{}",
        std::process::id(),
        CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut text = format!("fabric = \"{fabric}\"\nshm_directory = \"{}\"\n", shm_directory.display());
    if fabric == "tcp" {
        // tcp clusters in tests authenticate their peers, as a production cluster should.
        let token = format!("test-token-{}-{}", std::process::id(), shm_directory.display());
        std::fs::write(directory.join("peer-token"), token).expect("write peer token");
        text.push_str("peer_token_file = \"peer-token\"\n");
    }
    text.push_str(extra_lines);
    let mut addresses = Vec::new();
    for (id, (client, peer)) in node_addresses.iter().enumerate() {
        text.push_str(&format!(
            "\n[[nodes]]\nid = {id}\nclient_address = \"{client}\"\npeer_address = \"{peer}\"\ndata_dir = \"node-{id}\"\n{}",
            node_lines(id as u16)
        ));
        addresses.push(*client);
    }
    let path = directory.join("cluster.toml");
    std::fs::write(&path, text).expect("write cluster file");
    (path, addresses, shm_directory)
}

impl LocalCluster {
    /// Starts `node_count` nodes over `fabric` ("shm" or "tcp") under `directory`.
    pub fn start(directory: &Path, node_count: u16, fabric: &str, extra_arguments: &[&str]) -> LocalCluster {
        Self::start_configured(directory, node_count, fabric, "", extra_arguments)
    }

    /// Like [`LocalCluster::start`], with `extra_lines` (top-level keys, each ending in a
    /// newline) in the cluster file.
    pub fn start_configured(
        directory: &Path,
        node_count: u16,
        fabric: &str,
        extra_lines: &str,
        extra_arguments: &[&str],
    ) -> LocalCluster {
        Self::start_configured_per_node(directory, node_count, fabric, extra_lines, &|_| String::new(), extra_arguments)
    }

    /// Like [`LocalCluster::start_configured`], with `node_lines(id)` (keys of node `id`'s
    /// entry, each ending in a newline) in every node's entry of the cluster file.
    pub fn start_configured_per_node(
        directory: &Path,
        node_count: u16,
        fabric: &str,
        extra_lines: &str,
        node_lines: &dyn Fn(u16) -> String,
        extra_arguments: &[&str],
    ) -> LocalCluster {
        let (cluster_file, addresses, shm_directory) =
            write_cluster_file_with(directory, fabric, &loopback_addresses(node_count), extra_lines, node_lines);
        let file = cluster_file.display().to_string();
        let nodes = (0..node_count)
            .map(|id| {
                let id = id.to_string();
                let mut arguments = vec!["--cluster-file", file.as_str(), "--node-id", id.as_str()];
                arguments.extend_from_slice(extra_arguments);
                // Labelled, so that tests can read what each node logged.
                let launch = Launch { log_label: Some(format!("node {id}")), ..Launch::default() };
                EngineProcess::start_with(&directory.join(format!("node-{id}")), launch, &arguments)
            })
            .collect();
        LocalCluster { cluster_file, nodes, addresses, shm_directory, namespaces: Vec::new() }
    }

    /// Starts one node in each namespace of `lab` over `fabric` ("tcp": shm would not
    /// cross a partition) under `directory`. Every node listens on its lab address with
    /// fixed ports: each namespace is fresh, so nothing else can hold them.
    pub fn start_in_lab(directory: &Path, lab: &NetworkLab, fabric: &str, extra_arguments: &[&str]) -> LocalCluster {
        const CLIENT_PORT: u16 = 7420;
        const PEER_PORT: u16 = 7520;
        let node_addresses: Vec<(SocketAddr, SocketAddr)> = (0..lab.node_count())
            .map(|node| ((lab.address(node), CLIENT_PORT).into(), (lab.address(node), PEER_PORT).into()))
            .collect();
        let (cluster_file, addresses, shm_directory) =
            write_cluster_file_with(directory, fabric, &node_addresses, "", &|_| String::new());
        let file = cluster_file.display().to_string();
        let nodes = (0..lab.node_count())
            .map(|node| {
                let id = node.to_string();
                let mut arguments = vec!["--cluster-file", file.as_str(), "--node-id", id.as_str()];
                arguments.extend_from_slice(extra_arguments);
                let data_dir = directory.join(format!("node-{id}"));
                let launch = Launch {
                    command_prefix: lab.command_prefix(node),
                    log_label: Some(format!("node {id}")),
                    ..Launch::default()
                };
                EngineProcess::start_with(&data_dir, launch, &arguments)
            })
            .collect();
        let namespaces = (0..lab.node_count()).map(|node| lab.namespace(node)).collect();
        LocalCluster { cluster_file, nodes, addresses, shm_directory, namespaces }
    }

    /// A client of node `node`, connected from the node's namespace in a lab cluster
    /// (the calling thread returns to its own namespace; the connection stays usable).
    pub fn connect(&self, node: usize) -> Result<BlockingClient, ClientError> {
        match self.namespaces.get(node) {
            Some(namespace) => crate::netns::connect_in(namespace, self.addresses[node]),
            None => BlockingClient::connect(self.addresses[node]),
        }
    }

    /// Waits until every node reports that it agreed on the view with all peers.
    pub fn wait_until_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for id in 0..self.addresses.len() {
            loop {
                let synced = self
                    .connect(id)
                    .and_then(|client| client.status())
                    .map(|status| status.cluster_synced)
                    .unwrap_or(false);
                if synced {
                    break;
                }
                assert!(Instant::now() < deadline, "node {id} did not join the cluster within {timeout:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.shm_directory);
    }
}
