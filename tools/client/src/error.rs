//! [`ClientError`]: everything that can go wrong between calling the client and getting a
//! reply. Outcomes of requests that reached the node (committed, aborted, rejected
//! invocations) are not errors; they are [`crate::InvokeResult`]s.

use crate::types::RejectionKind;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection to the node could not be opened.
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    /// The blocking client could not create its runtime.
    #[error("cannot start the client runtime: {0}")]
    Runtime(std::io::Error),
    /// The request cannot be sent at all (for example a list longer than Cap'n Proto
    /// allows).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The connection was lost or closed; the request may or may not have run, so retry
    /// it under the same request id.
    #[error("disconnected from the node: {0}")]
    Disconnected(String),
    /// The call failed with a Cap'n Proto exception (the text is the node's).
    #[error("RPC failed: {0}")]
    Rpc(String),
    /// The node refused the request before running it (a key read, or a whole
    /// `invokeMany` call); `message` explains why.
    #[error("rejected ({kind}): {message}")]
    Rejected { kind: RejectionKind, message: String },
    /// The node refused to deploy the plugin; `message` explains why.
    #[error("plugin refused: {message}")]
    DeployRefused { message: String },
    /// The node refused the token presented when connecting (no token, an empty one or
    /// a wrong one); the connection holds no capability. After three refusals on one
    /// connection the node closes it.
    #[error("authentication failed: the node refused the token")]
    AuthenticationFailed,
    /// TLS could not be set up: unreadable certificate or key files, a server name that
    /// is not one, or a handshake the node or the client refused (an untrusted
    /// certificate, no client certificate where the node demands one, a plaintext node).
    #[error("TLS: {0}")]
    Tls(String),
    /// The reply did not have the shape the schema promises.
    #[error("malformed reply from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when the connection is gone and a new [`crate::Client`] is needed.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, ClientError::Disconnected(_))
    }

    /// A reply that could not be decoded.
    pub(crate) fn protocol(error: capnp::Error) -> ClientError {
        ClientError::Protocol(error.to_string())
    }
}

/// Errors of the call itself (sending it, or an exception in its place).
impl From<capnp::Error> for ClientError {
    fn from(error: capnp::Error) -> ClientError {
        match error.kind {
            capnp::ErrorKind::Disconnected => ClientError::Disconnected(error.to_string()),
            _ => ClientError::Rpc(error.to_string()),
        }
    }
}
