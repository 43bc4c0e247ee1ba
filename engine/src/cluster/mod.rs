//! The cluster: several engine nodes, each holding the leases of part of the keys, that
//! run every epoch together (DESIGN.md §3).
//!
//! * [`ClusterSpec`]: the cluster file (nodes, their addresses, the fabric backend);
//! * [`lease`]: the lease table (holder of each key) and the lease word that fences
//!   stale holders;
//! * [`placement`]: decayed access counts and the pure decision to move a lease;
//! * [`protocol`]: the sans-IO decisions (view agreement, durable everywhere, leases as
//!   of an agreed epoch) that the driver, the commit thread and the simulation share;
//! * [`wire`]: the frames nodes exchange;
//! * [`transport`]: frames over the fabric's message rings (one inbound ring per peer);
//! * [`workers`]: the executor threads of a cluster node;
//! * [`driver`]: the cluster epoch driver: exchange of virtual vertices, planning over
//!   local and remote transactions, lease handover during execution, and the view
//!   agreement that rolls back epochs not durable everywhere after a node restarts.
//!
//! A single node without a cluster file uses none of this: its epoch driver
//! (`txn::epoch`) runs alone.

pub mod driver;
pub mod forward;
pub mod lease;
pub mod placement;
pub mod protocol;
pub mod records;
pub mod routing;
pub mod transport;
pub mod wire;
pub mod workers;

use crate::model::NodeId;
use leasehold_fabric::{Fabric, FabricError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most nodes in one cluster (views and peer arrays are sized by it).
pub const NODES_MAX: usize = 64;

/// The fabric backend a cluster runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FabricBackend {
    Shm,
    Tcp,
    Rdma,
}

impl FabricBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            FabricBackend::Shm => "shm",
            FabricBackend::Tcp => "tcp",
            FabricBackend::Rdma => "rdma",
        }
    }
}

/// One node's entry in the cluster file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: NodeId,
    /// Cap'n Proto client API.
    pub client_address: SocketAddr,
    /// Fabric address (tcp responder, rdma bootstrap listener); unused by shm.
    pub peer_address: SocketAddr,
    /// Data directory; relative paths are relative to the cluster file. Defaults to the
    /// node's own configuration.
    pub data_dir: Option<PathBuf>,
    /// Prometheus endpoint of this node.
    pub metrics_address: Option<SocketAddr>,
    /// This node's own certificate chain and key for TLS between nodes (both or neither;
    /// relative to the cluster file), in place of the cluster-wide
    /// `peer_tls_certificate_file` and `peer_tls_key_file`: so that each node can hold a
    /// certificate of its own, naming its own address, and a leaked key exposes one node.
    pub peer_tls_certificate_file: Option<PathBuf>,
    pub peer_tls_key_file: Option<PathBuf>,
}

/// The cluster file: which nodes exist and how they reach each other.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub fabric: FabricBackend,
    /// Where the shm backend keeps region files (default: /dev/shm/leasehold/<cluster
    /// file's directory name>).
    pub shm_directory: Option<PathBuf>,
    /// A file holding the token every node presents to its peers over the tcp fabric
    /// (trimmed; relative to the cluster file). Without one, the tcp fabric serves any
    /// peer that connects. The shm fabric's region files are readable by the nodes' user
    /// only.
    pub peer_token_file: Option<PathBuf>,
    /// TLS between nodes over the tcp fabric (relative to the cluster file): every node
    /// presents a certificate chain (PEM; it must name the node's peer IP address) and
    /// key, and accepts only peers whose certificates the CA in `peer_tls_ca_file`
    /// issued. The chain and key are the node entry's own or, where it has none, these
    /// cluster-wide ones (which must then name every node's address). With the CA file,
    /// every node needs a chain and key; without it, none may have one. The peer token,
    /// if any, still applies inside TLS.
    pub peer_tls_certificate_file: Option<PathBuf>,
    pub peer_tls_key_file: Option<PathBuf>,
    pub peer_tls_ca_file: Option<PathBuf>,
    pub nodes: Vec<NodeSpec>,
}

/// Errors reading a cluster file or joining a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read cluster file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid cluster file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid cluster file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("node {node} is not listed in cluster file {path}")]
    UnknownNode { node: NodeId, path: PathBuf },
    #[error("cannot read peer_token_file {path}: {reason}")]
    PeerToken { path: PathBuf, reason: String },
    #[error("invalid TLS between nodes: {0}")]
    PeerTls(String),
    #[error("cannot open the {backend} fabric: {source}")]
    Fabric { backend: &'static str, source: FabricError },
}

impl ClusterSpec {
    /// Reads and checks a cluster file; relative data directories become relative to it.
    pub fn from_file(path: &Path) -> Result<ClusterSpec, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read { path: path.into(), source })?;
        let mut spec: ClusterSpec =
            toml::from_str(&text).map_err(|source| ClusterError::Parse { path: path.into(), source })?;
        let invalid = |reason: String| ClusterError::Invalid { path: path.into(), reason };
        if spec.nodes.is_empty() || spec.nodes.len() > NODES_MAX {
            return Err(invalid(format!("a cluster has 1 to {NODES_MAX} nodes, not {}", spec.nodes.len())));
        }
        spec.nodes.sort_by_key(|node| node.id);
        for (index, node) in spec.nodes.iter().enumerate() {
            if usize::from(node.id) != index {
                return Err(invalid(format!("node ids must be 0, 1, ... without gaps or repeats; found {}", node.id)));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut spec.peer_token_file,
            &mut spec.peer_tls_certificate_file,
            &mut spec.peer_tls_key_file,
            &mut spec.peer_tls_ca_file,
        ] {
            if let Some(relative) = file.as_ref().filter(|file| file.is_relative()) {
                *file = Some(base.join(relative));
            }
        }
        for node in &mut spec.nodes {
            for file in [&mut node.data_dir, &mut node.peer_tls_certificate_file, &mut node.peer_tls_key_file] {
                if let Some(relative) = file.as_ref().filter(|file| file.is_relative()) {
                    *file = Some(base.join(relative));
                }
            }
        }
        spec.check_peer_tls().map_err(invalid)?;
        if spec.shm_directory.is_none() {
            let name = std::fs::canonicalize(base)
                .ok()
                .and_then(|directory| directory.file_name().map(|name| name.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "cluster".into());
            spec.shm_directory = Some(Path::new(leasehold_fabric::shm::DEFAULT_SHM_DIRECTORY).join(name));
        }
        Ok(spec)
    }

    pub fn node_count(&self) -> u16 {
        self.nodes.len() as u16
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.get(usize::from(id))
    }

    /// The peer token, read from `peer_token_file` (trimmed; an empty one is refused).
    pub fn peer_token(&self) -> Result<Option<Vec<u8>>, ClusterError> {
        let Some(path) = &self.peer_token_file else { return Ok(None) };
        let failure = |reason: String| ClusterError::PeerToken { path: path.clone(), reason };
        let contents = std::fs::read(path).map_err(|error| failure(error.to_string()))?;
        let token = contents.trim_ascii();
        if token.is_empty() {
            return Err(failure("the file is empty; put the shared peer token in it".into()));
        }
        Ok(Some(token.to_vec()))
    }

    /// The rules of the `peer_tls_*` keys (see [`ClusterSpec::peer_tls_ca_file`]).
    fn check_peer_tls(&self) -> Result<(), String> {
        let both_or_neither = |certificate: &Option<PathBuf>, key: &Option<PathBuf>, whose: &str| {
            if certificate.is_some() != key.is_some() {
                return Err(format!(
                    "{whose} peer_tls_certificate_file and peer_tls_key_file go together; one is missing"
                ));
            }
            Ok(())
        };
        both_or_neither(&self.peer_tls_certificate_file, &self.peer_tls_key_file, "the cluster-wide")?;
        for node in &self.nodes {
            both_or_neither(&node.peer_tls_certificate_file, &node.peer_tls_key_file, &format!("node {}'s", node.id))?;
        }
        let nodes_with_a_certificate = self
            .nodes
            .iter()
            .filter(|node| node.peer_tls_certificate_file.is_some() || self.peer_tls_certificate_file.is_some())
            .count();
        match (&self.peer_tls_ca_file, nodes_with_a_certificate) {
            (None, 0) => Ok(()),
            (None, _) => Err("TLS between nodes needs peer_tls_ca_file beside the certificates and keys".into()),
            (Some(_), count) if count < self.nodes.len() => Err(
                "TLS between nodes needs peer_tls_certificate_file and peer_tls_key_file, cluster-wide or for every node"
                    .into(),
            ),
            (Some(_), _) if self.fabric != FabricBackend::Tcp => {
                Err(format!("TLS between nodes is for the tcp fabric, not {}", self.fabric.as_str()))
            }
            (Some(_), _) => Ok(()),
        }
    }

    /// Node `me`'s TLS between nodes: its own certificate and key (or the cluster-wide
    /// ones) and the cluster's CA; `None` without TLS.
    pub fn peer_tls(&self, me: NodeId) -> Result<Option<leasehold_fabric::tcp::PeerTls>, ClusterError> {
        let own = self.node(me).ok_or(ClusterError::UnknownNode { node: me, path: PathBuf::new() })?;
        let certificate_file = own.peer_tls_certificate_file.as_ref().or(self.peer_tls_certificate_file.as_ref());
        let key_file = own.peer_tls_key_file.as_ref().or(self.peer_tls_key_file.as_ref());
        let (Some(certificate_file), Some(key_file), Some(ca_file)) =
            (certificate_file, key_file, &self.peer_tls_ca_file)
        else {
            return Ok(None);
        };
        let failure = |error: crate::rpc::tls::TlsError| ClusterError::PeerTls(error.to_string());
        let chain = crate::rpc::tls::read_certificates(certificate_file).map_err(failure)?;
        let key = crate::rpc::tls::read_private_key(key_file).map_err(failure)?;
        let authorities = crate::rpc::tls::read_certificates(ca_file).map_err(failure)?;
        let tls = leasehold_fabric::tcp::PeerTls::new(chain, key, authorities).map_err(|reason| {
            ClusterError::PeerTls(format!(
                "{}, {}, {}: {reason}",
                certificate_file.display(),
                key_file.display(),
                ca_file.display()
            ))
        })?;
        Ok(Some(tls))
    }

    /// Opens this node's fabric and makes every peer reachable.
    pub fn open_fabric(&self, me: NodeId) -> Result<Arc<dyn Fabric>, ClusterError> {
        let backend = self.fabric.as_str();
        let fail = |source| ClusterError::Fabric { backend, source };
        let own = self.node(me).ok_or(ClusterError::UnknownNode { node: me, path: PathBuf::new() })?;
        match self.fabric {
            FabricBackend::Shm => {
                let directory = self.shm_directory.clone().expect("from_file sets a default");
                Ok(leasehold_fabric::shm::ShmFabric::open(directory, me).map_err(fail)?)
            }
            FabricBackend::Tcp => {
                let token = self.peer_token()?;
                let tls = self.peer_tls(me)?;
                let fabric =
                    leasehold_fabric::tcp::TcpFabric::start_secured(me, own.peer_address, token.as_deref(), tls)
                        .map_err(fail)?;
                for node in &self.nodes {
                    if node.id != me {
                        fabric.add_peer(node.id, node.peer_address);
                    }
                }
                Ok(fabric)
            }
            FabricBackend::Rdma => {
                let config = leasehold_fabric::rdma::RdmaConfig::new(own.peer_address);
                let fabric = leasehold_fabric::rdma::RdmaFabric::open(me, &config).map_err(fail)?;
                for node in &self.nodes {
                    if node.id != me {
                        fabric.add_peer(node.id, node.peer_address);
                    }
                }
                Ok(fabric)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_file_lists_contiguous_nodes() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("cluster.toml");
        let node = |id: u16| {
            format!(
                "[[nodes]]\nid = {id}\nclient_address = \"127.0.0.1:{}\"\npeer_address = \"127.0.0.1:{}\"\n\
                 data_dir = \"node-{id}\"\n",
                7420 + id,
                7520 + id
            )
        };
        std::fs::write(&path, format!("fabric = \"tcp\"\n{}{}", node(1), node(0))).expect("write");
        let spec = ClusterSpec::from_file(&path).expect("valid file");
        assert_eq!(spec.node_count(), 2);
        assert_eq!(spec.nodes[0].id, 0, "sorted by id");
        assert_eq!(spec.node(1).and_then(|n| n.data_dir.clone()), Some(directory.path().join("node-1")));
        assert!(spec.shm_directory.is_some());

        std::fs::write(&path, format!("fabric = \"tcp\"\n{}{}", node(0), node(2))).expect("write");
        let error = ClusterSpec::from_file(&path).expect_err("a gap in node ids is refused");
        assert!(error.to_string().contains("without gaps"), "{error}");
        std::fs::write(&path, format!("fabric = \"carrier-pigeon\"\n{}", node(0))).expect("write");
        assert!(matches!(ClusterSpec::from_file(&path), Err(ClusterError::Parse { .. })));
    }

    #[test]
    fn peer_tls_files_are_the_nodes_own_or_cluster_wide_and_complete() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("cluster.toml");
        let node = |id: u16, own_files: bool| {
            let own = if own_files {
                format!("peer_tls_certificate_file = \"node-{id}.pem\"\npeer_tls_key_file = \"node-{id}.key\"\n")
            } else {
                String::new()
            };
            format!(
                "[[nodes]]\nid = {id}\nclient_address = \"127.0.0.1:{}\"\npeer_address = \"127.0.0.1:{}\"\n{own}",
                7420 + id,
                7520 + id
            )
        };
        let parse = |top: &str, nodes: &[bool]| {
            let entries: String = nodes.iter().enumerate().map(|(id, own)| node(id as u16, *own)).collect();
            std::fs::write(&path, format!("fabric = \"tcp\"\n{top}{entries}")).expect("write");
            ClusterSpec::from_file(&path)
        };
        let ca = "peer_tls_ca_file = \"ca.pem\"\n";
        let wide = "peer_tls_certificate_file = \"all.pem\"\npeer_tls_key_file = \"all.key\"\n";

        // Every node its own files: each resolves its own, relative to the cluster file.
        let spec = parse(ca, &[true, true, true]).expect("per-node certificates");
        assert_eq!(spec.nodes[2].peer_tls_certificate_file, Some(directory.path().join("node-2.pem")));
        // Cluster-wide files, one node overriding them.
        let spec = parse(&format!("{ca}{wide}"), &[false, true, false]).expect("mixed");
        assert_eq!(spec.nodes[1].peer_tls_key_file, Some(directory.path().join("node-1.key")));
        assert!(spec.nodes[0].peer_tls_key_file.is_none(), "node 0 uses the cluster-wide key");
        // No TLS at all.
        assert!(parse("", &[false, false]).is_ok());

        let refused = |top: &str, nodes: &[bool], naming: &str| {
            let error = parse(top, nodes).expect_err("refused").to_string();
            assert!(error.contains(naming), "{error} should name {naming}");
        };
        refused(ca, &[true, false, true], "for every node");
        refused("", &[true, true], "peer_tls_ca_file");
        refused(wide, &[false], "peer_tls_ca_file");
        refused(&format!("{ca}peer_tls_certificate_file = \"all.pem\"\n"), &[false], "go together");
        std::fs::write(&path, format!("fabric = \"tcp\"\n{ca}{}peer_tls_key_file = \"own.key\"\n", node(0, false)))
            .expect("write");
        let error = ClusterSpec::from_file(&path).expect_err("a key without its certificate").to_string();
        assert!(error.contains("node 0's"), "{error}");
        std::fs::write(&path, format!("fabric = \"shm\"\n{ca}{wide}{}", node(0, false))).expect("write");
        let error = ClusterSpec::from_file(&path).expect_err("TLS over shm").to_string();
        assert!(error.contains("tcp fabric"), "{error}");
    }
}
