//! The `tcp-tls` backend's files, shared by the conformance suite (which issues them) and
//! `fabric_peer` (which loads them): in one directory, the cluster CA's certificate
//! `ca.der` and, per node, its own certificate `node-<N>.der` and key `node-<N>.key`
//! (PKCS#8), all DER. Every node has a certificate of its own, as in a deployment.

use leasehold_fabric::tcp::PeerTls;
use leasehold_fabric::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// The peer token the `tcp-tls` backend also requires inside TLS.
pub const PEER_TOKEN: &[u8] = b"fabric conformance token";

pub fn ca_path(directory: &Path) -> PathBuf {
    directory.join("ca.der")
}

pub fn certificate_path(directory: &Path, node: NodeId) -> PathBuf {
    directory.join(format!("node-{node}.der"))
}

pub fn key_path(directory: &Path, node: NodeId) -> PathBuf {
    directory.join(format!("node-{node}.key"))
}

/// Node `node`'s TLS configuration from `directory`.
pub fn load_peer_tls(directory: &Path, node: NodeId) -> Result<PeerTls, String> {
    let read = |path: PathBuf| std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()));
    let certificate = CertificateDer::from(read(certificate_path(directory, node))?);
    let key = PrivateKeyDer::Pkcs8(read(key_path(directory, node))?.into());
    let authority = CertificateDer::from(read(ca_path(directory))?);
    PeerTls::new(vec![certificate], key, vec![authority])
}
