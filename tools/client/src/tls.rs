//! [`TlsSettings`]: what a client needs to talk to a node that speaks TLS on its client
//! address (`tls_certificate_file`): the CA that signed the node's certificate, and for
//! mutual TLS (`tls_client_ca_file`) the client's own certificate and key.

use crate::error::ClientError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// TLS settings of a client: trusted CA certificates and, optionally, a client identity.
/// Cheap to clone; one value serves any number of connections.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let unreadable = |error: String| ClientError::Tls(format!("cannot read {}: {error}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| unreadable(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(error.to_string()))?;
    if certificates.is_empty() {
        return Err(ClientError::Tls(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

impl TlsSettings {
    /// Trusts the CA certificate(s) in the PEM file `ca_file`; with `client_identity`
    /// (certificate chain and private key PEM files) the client also proves who it is, as
    /// a node with `tls_client_ca_file` demands.
    pub fn from_pem_files(ca_file: &Path, client_identity: Option<(&Path, &Path)>) -> Result<TlsSettings, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(ca_file)? {
            roots.add(certificate).map_err(|error| ClientError::Tls(format!("{}: {error}", ca_file.display())))?;
        }
        // ring, as on the node (see `engine/src/rpc/tls.rs` for why it is allowed).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| ClientError::Tls(error.to_string()))?
            .with_root_certificates(roots);
        let config = match client_identity {
            Some((certificate_file, key_file)) => {
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|error| ClientError::Tls(format!("cannot read {}: {error}", key_file.display())))?;
                builder.with_client_auth_cert(certificates(certificate_file)?, key).map_err(|error| {
                    ClientError::Tls(format!(
                        "{} and {} do not make a usable client identity: {error}",
                        certificate_file.display(),
                        key_file.display()
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsSettings { config: Arc::new(config), server_name: None })
    }

    /// Checks the node's certificate against `name` instead of the host of the address
    /// connected to (for a node reached by IP whose certificate names a DNS name).
    pub fn with_server_name(mut self, name: impl Into<String>) -> TlsSettings {
        self.server_name = Some(name.into());
        self
    }

    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config)
    }

    /// The name the node's certificate must carry: the configured one, or the host part
    /// of `address` (`host:port`, `[v6]:port`).
    pub(crate) fn server_name_for(&self, address: &str) -> Result<ServerName<'static>, ClientError> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => {
                let host = address.rsplit_once(':').map_or(address, |(host, _port)| host);
                host.trim_start_matches('[').trim_end_matches(']')
            }
        };
        ServerName::try_from(host.to_string())
            .map_err(|error| ClientError::Tls(format!("{host:?} is not a server name: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address_unless_given() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let path = directory.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).expect("write");
        let settings = TlsSettings::from_pem_files(&path, None).expect("settings");
        let name = |address: &str| settings.server_name_for(address).map(|name| name.to_str().into_owned());
        assert_eq!(name("127.0.0.1:7420").expect("an IP"), "127.0.0.1");
        assert_eq!(name("[::1]:7420").expect("an IPv6 address"), "::1");
        assert_eq!(name("node-1.example:7420").expect("a DNS name"), "node-1.example");
        assert!(matches!(name("bad name!:1"), Err(ClientError::Tls(_))));
        let named = settings.clone().with_server_name("leasehold.internal");
        assert_eq!(named.server_name_for("10.0.0.1:7420").expect("given").to_str(), "leasehold.internal");

        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let error = TlsSettings::from_pem_files(&empty, None).expect_err("no CA certificate");
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }
}
