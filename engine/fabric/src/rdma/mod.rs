//! The rdma fabric: RC queue pairs through libibverbs, one-sided READ, WRITE, CAS and
//! FETCH_ADD verbs on registered memory regions. It needs the cargo feature `rdma` (which
//! links libibverbs through `rdma-sys`) and, at run time, an RDMA device; without either,
//! [`RdmaFabric::open`] refuses with [`FabricError::Unavailable`] and says why.
//!
//! Queue pairs and region keys are exchanged out of band over a small tcp bootstrap
//! listener per node ([`RdmaConfig::bootstrap_listen`]), as perftest does.
//!
//! Tested here: that it compiles, and that opening without a device is refused. Not
//! tested (no device on the development machines or CI): queue pair setup, the verbs
//! themselves, completion handling, RoCE addressing, and the byte order of atomic results
//! on real devices. The conformance suite runs over this backend wherever a device exists.

#[cfg(feature = "rdma")]
mod verbs;

use super::NodeId;
use super::{Fabric, FabricError, LocalRegion, RegionId, RemoteRegion};
use std::net::SocketAddr;
use std::sync::Arc;

/// How a node uses its RDMA device.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// The device to use (e.g. `mlx5_0`); the first one listed when `None`.
    pub device_name: Option<String>,
    /// The device port, counted from 1 as `ibv_devinfo` shows it.
    pub port_number: u8,
    /// The GID table index, used on RoCE (where addressing is by GID, not LID).
    pub gid_index: u8,
    /// Where the node listens for its peers' queue pair and region requests.
    pub bootstrap_listen: SocketAddr,
}

impl RdmaConfig {
    /// Port 1, GID index 0, the first device, and a bootstrap listener on `listen`.
    pub fn new(bootstrap_listen: SocketAddr) -> RdmaConfig {
        RdmaConfig { device_name: None, port_number: 1, gid_index: 0, bootstrap_listen }
    }
}

/// The rdma backend of one node.
pub struct RdmaFabric {
    #[cfg(feature = "rdma")]
    inner: verbs::VerbsFabric,
    #[cfg(not(feature = "rdma"))]
    _unconstructible: std::convert::Infallible,
}

impl RdmaFabric {
    /// Opens the RDMA device for node `node` and starts its bootstrap listener.
    pub fn open(node: NodeId, config: &RdmaConfig) -> Result<Arc<RdmaFabric>, FabricError> {
        #[cfg(feature = "rdma")]
        {
            Ok(Arc::new(RdmaFabric { inner: verbs::VerbsFabric::open(node, config)? }))
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = (node, config);
            Err(FabricError::Unavailable {
                backend: "rdma",
                reason: "this build has no RDMA support: build leasehold-engine with `--features rdma`".to_string(),
            })
        }
    }

    /// The address of this node's bootstrap listener.
    pub fn bootstrap_address(&self) -> SocketAddr {
        #[cfg(feature = "rdma")]
        {
            self.inner.bootstrap_address()
        }
        #[cfg(not(feature = "rdma"))]
        {
            match self._unconstructible {}
        }
    }

    /// Makes `node` reachable through its bootstrap listener at `bootstrap_address`.
    pub fn add_peer(&self, node: NodeId, bootstrap_address: SocketAddr) {
        #[cfg(feature = "rdma")]
        {
            self.inner.add_peer(node, bootstrap_address)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = (node, bootstrap_address);
            match self._unconstructible {}
        }
    }
}

impl Fabric for RdmaFabric {
    fn node_id(&self) -> NodeId {
        #[cfg(feature = "rdma")]
        {
            self.inner.node_id()
        }
        #[cfg(not(feature = "rdma"))]
        {
            match self._unconstructible {}
        }
    }

    fn backend_name(&self) -> &'static str {
        "rdma"
    }

    fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError> {
        #[cfg(feature = "rdma")]
        {
            self.inner.register_region(region, size_bytes)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = (region, size_bytes);
            match self._unconstructible {}
        }
    }

    fn deregister_region(&self, region: RegionId) -> Result<(), FabricError> {
        #[cfg(feature = "rdma")]
        {
            self.inner.deregister_region(region)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = region;
            match self._unconstructible {}
        }
    }

    fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError> {
        #[cfg(feature = "rdma")]
        {
            self.inner.open_remote(node, region)
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = (node, region);
            match self._unconstructible {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_without_a_device_or_the_feature_is_refused_with_a_reason() {
        if std::path::Path::new("/dev/infiniband").exists() {
            eprintln!("an RDMA device exists here; the conformance suite covers this backend");
            return;
        }
        let config = RdmaConfig::new("127.0.0.1:0".parse().expect("literal address"));
        match RdmaFabric::open(0, &config) {
            Err(FabricError::Unavailable { backend: "rdma", reason }) => assert!(!reason.is_empty()),
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("opened an RDMA fabric without a device"),
        }
    }
}
