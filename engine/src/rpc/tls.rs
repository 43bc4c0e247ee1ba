//! TLS for the client API: the server side of `tls_certificate_file`, `tls_key_file` and
//! `tls_client_ca_file` (mutual TLS).
//!
//! A node with a certificate speaks TLS 1.2/1.3 (rustls with the ring provider) on its
//! client address and nothing else: a plaintext client fails the handshake and never
//! reaches the `Gate`. With a client CA, the handshake also demands a client certificate
//! signed by that CA, so a connection without one is closed before any Cap'n Proto
//! message is read. The shared token (`auth_token_file`) still applies on top: TLS keeps
//! the token and the data away from eavesdroppers, the token (or the client certificate)
//! decides who may call.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors loading the TLS configuration; each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("TLS file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("invalid TLS configuration: {0}")]
    Invalid(String),
}

/// The certificate chain in a PEM file (the node's own certificate first).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |message: String| TlsError::Read { path: path.to_path_buf(), message };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| TlsError::Read { path: path.to_path_buf(), message: error.to_string() })
}

/// The rustls provider every TLS configuration of the engine uses: ring, which builds
/// from crates.io with the C compiler RocksDB needs anyway (aws-lc-rs, rustls's default,
/// wants cmake and NASM). rustls marks it deprecated because ring has no post-quantum key
/// exchange; the classical key exchanges it offers are what TLS 1.3 clients negotiate
/// everywhere today.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration of a node: its certificate chain and key, and, for mutual
/// TLS, the CA whose certificates clients must present.
pub fn server_config(
    certificate_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificates = read_certificates(certificate_file)?;
    let key = read_private_key(key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Invalid(error.to_string()))?;
    let builder = match client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|error| TlsError::Invalid(format!("{}: {error}", path.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::Invalid(format!("{}: {error}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certificates, key).map_err(|error| {
        TlsError::Invalid(format!(
            "{} and {} do not make a usable certificate and key: {error}",
            certificate_file.display(),
            key_file.display()
        ))
    })?;
    Ok(Arc::new(config))
}
