//! The `Gate` capability: the bootstrap of every client connection and the only thing an
//! unauthenticated client can reach. `authenticate` checks the shared token and hands
//! out the thread's `Leasehold` capability; wrong tokens are counted per connection, and
//! the connection is closed after [`FAILURES_PER_CONNECTION_MAX`] of them so that one
//! connection cannot try tokens without end.

use crate::config::AuthToken;
use crate::metrics::AUTHENTICATION_FAILURES_TOTAL;
use leasehold_schema::leasehold_capnp::{gate, leasehold};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::rc::Rc;
use tokio::sync::Notify;

/// Wrong tokens one connection may present; the last of them also closes it.
pub(super) const FAILURES_PER_CONNECTION_MAX: u32 = 3;

/// The text of the exception a refused token gets. Clients recognise a refusal by it, so
/// it is part of the wire contract (see `schema/leasehold.capnp`).
pub(super) const AUTHENTICATION_FAILED: &str = "authentication failed";

/// What a node checks presented tokens against, in the form the check needs.
#[derive(Clone)]
pub(super) enum Expected {
    /// No token configured: every token, including an empty one, is accepted.
    Anything,
    /// The SHA-256 digest of the configured token.
    Digest([u8; 32]),
}

impl Expected {
    pub(super) fn new(token: Option<&AuthToken>) -> Expected {
        match token {
            Some(token) => Expected::Digest(Sha256::digest(token.as_bytes()).into()),
            None => Expected::Anything,
        }
    }

    /// Whether `presented` is the configured token. Both sides are hashed first, so the
    /// comparison runs over 32 bytes whatever the presented length (a length check would
    /// reveal the token's length), and the fold over every byte has no early exit, so its
    /// time does not depend on where a guess goes wrong.
    fn accepts(&self, presented: &[u8]) -> bool {
        match self {
            Expected::Anything => true,
            Expected::Digest(expected) => {
                let presented: [u8; 32] = Sha256::digest(presented).into();
                let difference = expected.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                // Keeps the optimiser from turning the fold into an early-exit comparison.
                std::hint::black_box(difference) == 0
            }
        }
    }
}

/// The state of one connection's gate, shared with the task serving the connection.
pub(super) struct Connection {
    failures: Cell<u32>,
    /// Signalled once the connection has used up its attempts; the connection task then
    /// closes it.
    close: Notify,
}

impl Connection {
    pub(super) fn new() -> Rc<Connection> {
        Rc::new(Connection { failures: Cell::new(0), close: Notify::new() })
    }

    /// Resolves once the connection must be closed.
    pub(super) async fn closing(&self) {
        self.close.notified().await
    }
}

/// One connection's `Gate`. A new one is made per connection (unlike the `Leasehold`
/// service, which a thread's connections share) because the failure count is per
/// connection.
pub(super) struct GateService {
    expected: Rc<Expected>,
    leasehold: leasehold::Client,
    connection: Rc<Connection>,
    peer: String,
}

impl GateService {
    pub(super) fn new(
        expected: Rc<Expected>,
        leasehold: leasehold::Client,
        connection: Rc<Connection>,
        peer: String,
    ) -> GateService {
        GateService { expected, leasehold, connection, peer }
    }
}

impl gate::Server for GateService {
    async fn authenticate(
        self: Rc<Self>,
        params: gate::AuthenticateParams,
        mut results: gate::AuthenticateResults,
    ) -> Result<(), capnp::Error> {
        let token = params.get()?.get_token()?;
        if self.expected.accepts(token) {
            tracing::debug!(peer = %self.peer, "client authenticated");
            results.get().set_leasehold(self.leasehold.clone());
            return Ok(());
        }
        metrics::counter!(AUTHENTICATION_FAILURES_TOTAL).increment(1);
        let failures = self.connection.failures.get() + 1;
        self.connection.failures.set(failures);
        tracing::warn!(peer = %self.peer, failures, "client authentication failed");
        if failures >= FAILURES_PER_CONNECTION_MAX {
            tracing::warn!(peer = %self.peer, "closing a connection after {failures} failed authentications");
            // notify_one keeps the signal even if the connection task is not waiting yet.
            self.connection.close.notify_one();
        }
        Err(capnp::Error::failed(AUTHENTICATION_FAILED.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_is_accepted() {
        let token = AuthToken::for_tests(b"s3cret");
        let expected = Expected::new(Some(&token));
        assert!(expected.accepts(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3cretx"] {
            assert!(!expected.accepts(wrong), "{wrong:?} must be refused");
        }
        let open = Expected::new(None);
        assert!(open.accepts(b"") && open.accepts(b"anything"));
    }
}
