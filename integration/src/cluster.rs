//! Local clusters for tests: a cluster file with free loopback ports and one real
//! `leasehold-engine` process per node.

use crate::EngineProcess;
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
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Writes `<directory>/cluster.toml` for `node_count` nodes over `fabric` and returns
/// its path, the client addresses and the shm directory it names.
pub fn write_cluster_file(directory: &Path, node_count: u16, fabric: &str) -> (PathBuf, Vec<SocketAddr>, PathBuf) {
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
    let mut addresses = Vec::new();
    for id in 0..node_count {
        let client: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        let peer: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        text.push_str(&format!(
            "\n[[nodes]]\nid = {id}\nclient_address = \"{client}\"\npeer_address = \"{peer}\"\ndata_dir = \"node-{id}\"\n"
        ));
        addresses.push(client);
    }
    let path = directory.join("cluster.toml");
    std::fs::write(&path, text).expect("write cluster file");
    (path, addresses, shm_directory)
}

impl LocalCluster {
    /// Starts `node_count` nodes over `fabric` ("shm" or "tcp") under `directory`.
    pub fn start(directory: &Path, node_count: u16, fabric: &str, extra_arguments: &[&str]) -> LocalCluster {
        let (cluster_file, addresses, shm_directory) = write_cluster_file(directory, node_count, fabric);
        let file = cluster_file.display().to_string();
        let nodes = (0..node_count)
            .map(|id| {
                let id = id.to_string();
                let mut arguments = vec!["--cluster-file", file.as_str(), "--node-id", id.as_str()];
                arguments.extend_from_slice(extra_arguments);
                EngineProcess::start(&directory.join(format!("node-{id}")), &arguments)
            })
            .collect();
        LocalCluster { cluster_file, nodes, addresses, shm_directory }
    }

    /// Waits until every node reports that it agreed on the view with all peers.
    pub fn wait_until_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (id, address) in self.addresses.iter().enumerate() {
            loop {
                let synced = leasehold_client::BlockingClient::connect(*address)
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
