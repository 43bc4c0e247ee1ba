//! The Rust client of a Leasehold engine node: deploy plugins, invoke workflows (one at a
//! time or many per message), read keys and ask for the node's status over the Cap'n
//! Proto client API of `schema/leasehold.capnp`.
//!
//! [`Client`] is async. Cap'n Proto RPC objects are not `Send`, so it must be created and
//! used inside a [`tokio::task::LocalSet`] on a runtime with I/O and timers enabled; its
//! futures are not `Send` either. Many calls may be in flight on one client at once (join
//! their futures), which is how one connection reaches high throughput.
//! [`BlockingClient`] wraps a client in its own single-threaded runtime for programs and
//! tests that just want to make one call after another.
//!
//! [`ClusterClient`] talks to every node of a cluster and sends each request straight to
//! the node that holds its keys, by a lease table it caches and refreshes when a node
//! redirects it.
//!
//! Retries are safe (exactly once) for requests with a request id or, more cheaply for a
//! client that sends many, in a client session ([`Client::open_session`],
//! [`SessionNumbers`]).
//!
//! The client has its own plain types ([`Invocation`], [`InvokeResult`], ...) and does
//! not depend on the engine.
//!
//! Connecting authenticates: the client bootstraps the node's `Gate`, presents a token
//! ([`Client::connect_with_token`]; [`Client::connect`] presents an empty one, which only
//! a node without a configured token accepts) and uses the `Leasehold` capability it gets
//! back. A refused token is [`ClientError::AuthenticationFailed`].

mod blocking;
mod convert;
mod error;
mod routing;
mod session;
mod tls;
mod types;

pub use blocking::BlockingClient;
pub use error::ClientError;
pub use routing::{ClusterClient, RoutedInvocation};
pub use session::SessionNumbers;
pub use tls::TlsSettings;
pub use types::{
    AbortKind, Arguments, Invocation, InvokeResult, LeaseTable, NodeStatus, PluginInfo, RejectionKind, RoutingKey,
    SessionPosition, TableInfo, Timestamp,
};

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, Disconnector, RpcSystem};
use leasehold_schema::leasehold_capnp::{
    deploy_result, gate, invoke_many_result, leasehold, open_session_result, read_result,
};
use std::fmt;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// The largest reply the client accepts. Replies to a full `invokeMany` carry one output
/// per request, so this is generous; it only stops a broken node from making the client
/// allocate without bound.
const REPLY_BYTES_MAX: usize = 1 << 30;

/// A connection to one engine node. Dropping it closes the connection (calls still in
/// flight then fail); [`Client::disconnect`] closes it cleanly.
pub struct Client {
    leasehold: leasehold::Client,
    disconnector: Option<Disconnector<twoparty::VatId>>,
    connection: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to a node's client address (`"host:port"`, a `SocketAddr`, ...) without a
    /// token, which works with nodes that have none configured. Must be called inside a
    /// [`tokio::task::LocalSet`], which then drives the connection.
    pub async fn connect<A>(address: A) -> Result<Client, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        Client::connect_with_token(address, &[]).await
    }

    /// Connects and authenticates with the node's shared `token`; a node that refuses it
    /// answers [`ClientError::AuthenticationFailed`]. Must be called inside a
    /// [`tokio::task::LocalSet`], which then drives the connection.
    pub async fn connect_with_token<A>(address: A, token: &[u8]) -> Result<Client, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        let described = address.to_string();
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect { address: described.clone(), source })?;
        // Requests are small and latency matters more than packet count: send them at once.
        stream.set_nodelay(true).map_err(|source| ClientError::Connect { address: described, source })?;
        let (reader, writer) = stream.into_split();
        Client::over(reader, writer, token).await
    }

    /// Connects over TLS (see [`TlsSettings`]) and authenticates with `token` (empty for a
    /// node without one). A node that does not trust the client's certificate, or that
    /// the client does not trust, fails the handshake: [`ClientError::Tls`].
    pub async fn connect_tls<A>(address: A, token: &[u8], tls: &TlsSettings) -> Result<Client, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        let described = address.to_string();
        let server_name = tls.server_name_for(&described)?;
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect { address: described.clone(), source })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Connect { address: described.clone(), source })?;
        let stream = tokio_rustls::TlsConnector::from(tls.config())
            .connect(server_name, stream)
            .await
            .map_err(|error| ClientError::Tls(format!("TLS handshake with {described} failed: {error}")))?;
        let (reader, writer) = tokio::io::split(stream);
        Client::over(reader, writer, token).await
    }

    /// Authenticates over an open connection and speaks the client API on it.
    async fn over<R, W>(reader: R, writer: W, token: &[u8]) -> Result<Client, ClientError>
    where
        R: tokio::io::AsyncRead + Unpin + 'static,
        W: tokio::io::AsyncWrite + Unpin + 'static,
    {
        let mut reader_options = ReaderOptions::new();
        reader_options.traversal_limit_in_words(Some(REPLY_BYTES_MAX / 8));
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::new(reader.compat()),
            futures::io::BufWriter::new(writer.compat_write()),
            Side::Client,
            reader_options,
        );
        let mut rpc_system = RpcSystem::new(Box::new(network), None);
        let gate: gate::Client = rpc_system.bootstrap(Side::Server);
        let disconnector = Some(rpc_system.get_disconnector());
        // A failed connection needs no report here: every call on it then fails with the
        // reason.
        let connection = tokio::task::spawn_local(async move {
            let _ = rpc_system.await;
        });
        match authenticate(&gate, token).await {
            Ok(leasehold) => Ok(Client { leasehold, disconnector, connection }),
            Err(error) => {
                // The connection is of no use without the capability; close it now rather
                // than when the LocalSet ends.
                connection.abort();
                Err(error)
            }
        }
    }

    /// Deploys a plugin from its shared library. A library the node refuses comes back as
    /// [`ClientError::DeployRefused`] with the node's explanation.
    pub async fn deploy_plugin(&self, library: &[u8]) -> Result<PluginInfo, ClientError> {
        let mut request = self.leasehold.deploy_plugin_request();
        request.get().set_library(library);
        let response = request.send().promise.await?;
        let result = response.get().and_then(|results| results.get_result()).map_err(ClientError::protocol)?;
        match result.which() {
            Ok(deploy_result::Info(info)) => convert::read_plugin_info(info.map_err(ClientError::protocol)?),
            Ok(deploy_result::Error(message)) => {
                Err(ClientError::DeployRefused { message: convert::read_text(message)? })
            }
            Err(member) => Err(convert::unknown_member("a deploy result", member)),
        }
    }

    /// The plugins deployed on the node.
    pub async fn list_plugins(&self) -> Result<Vec<PluginInfo>, ClientError> {
        let response = self.leasehold.list_plugins_request().send().promise.await?;
        let plugins = response.get().and_then(|results| results.get_plugins()).map_err(ClientError::protocol)?;
        plugins.iter().map(convert::read_plugin_info).collect()
    }

    /// Runs one workflow invocation as one transaction; resolves once its outcome is
    /// durable.
    pub async fn invoke(&self, invocation: Invocation) -> Result<InvokeResult, ClientError> {
        let mut request = self.leasehold.invoke_request();
        convert::write_invocation(request.get().init_request(), &invocation, false);
        let response = request.send().promise.await?;
        let result = response.get().and_then(|results| results.get_result()).map_err(ClientError::protocol)?;
        convert::read_result(result)
    }

    /// Runs many independent invocations sent in one message, each as its own
    /// transaction; the results come back in request order. A call with more invocations
    /// than the node accepts at once fails as a whole with
    /// [`ClientError::Rejected`] of kind [`RejectionKind::TooManyInvocations`], and none
    /// of them runs.
    pub async fn invoke_many(&self, invocations: Vec<Invocation>) -> Result<Vec<InvokeResult>, ClientError> {
        let call = self.invoke_many_call(&invocations, false)?;
        // The request message holds its own copy now.
        drop(invocations);
        let replies = call.replies().await?;
        replies
            .into_iter()
            .map(|reply| match reply {
                convert::Reply::Result(result) => Ok(result),
                convert::Reply::Redirected { node, .. } => Err(ClientError::Protocol(format!(
                    "the node redirected to node {node} a request that did not ask for it"
                ))),
            })
            .collect()
    }

    /// Builds one `invokeMany` call (with `redirect_if_elsewhere` on every invocation or
    /// none) and returns the future of its replies, in request order. The request is
    /// built before the future is returned, so the invocations may be dropped at once.
    pub(crate) fn invoke_many_call<'a, I>(
        &self,
        invocations: I,
        redirect_if_elsewhere: bool,
    ) -> Result<InvokeManyCall, ClientError>
    where
        I: IntoIterator<Item = &'a Invocation>,
        I::IntoIter: ExactSizeIterator,
    {
        let invocations = invocations.into_iter();
        let sent = convert::list_length(invocations.len())?;
        let mut request = self.leasehold.invoke_many_request();
        let mut list = request.get().init_requests(sent);
        for (index, invocation) in (0..).zip(invocations) {
            convert::write_invocation(list.reborrow().get(index), invocation, redirect_if_elsewhere);
        }
        Ok(InvokeManyCall { promise: request.send().promise, sent })
    }

    /// Reads the committed value of one key; `None` when the key does not exist. A read
    /// the node refuses (unknown plugin or table, key too long) is
    /// [`ClientError::Rejected`].
    pub async fn read_key(&self, plugin: &str, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let mut request = self.leasehold.read_key_request();
        let mut params = request.get();
        params.set_plugin(plugin);
        params.set_table(table);
        params.set_key(key);
        let response = request.send().promise.await?;
        let result = response.get().and_then(|results| results.get_result()).map_err(ClientError::protocol)?;
        match result.which() {
            Ok(read_result::Found(found)) => Ok(Some(found.get_value().map_err(ClientError::protocol)?.to_vec())),
            Ok(read_result::Absent(())) => Ok(None),
            Ok(read_result::Rejected(rejection)) => Err(convert::rejected(rejection)),
            Err(member) => Err(convert::unknown_member("a read result", member)),
        }
    }

    /// Opens a client session on the node: number its requests with a
    /// [`SessionNumbers`] to make their retries safe without request ids. The session is
    /// durable once this returns.
    pub async fn open_session(&self) -> Result<u64, ClientError> {
        let response = self.leasehold.open_session_request().send().promise.await?;
        let result = response.get().and_then(|results| results.get_result()).map_err(ClientError::protocol)?;
        match result.which() {
            Ok(open_session_result::Session(session)) => Ok(session),
            Ok(open_session_result::Rejected(rejection)) => Err(convert::rejected(rejection)),
            Err(member) => Err(convert::unknown_member("a session result", member)),
        }
    }

    /// The node's view of itself.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        let response = self.leasehold.status_request().send().promise.await?;
        let status = response.get().and_then(|results| results.get_status()).map_err(ClientError::protocol)?;
        convert::read_node_status(status)
    }

    /// Where every key of the node's cluster is held and how to reach each node (what
    /// [`ClusterClient`] routes by).
    pub async fn lease_table(&self) -> Result<LeaseTable, ClientError> {
        let response = self.leasehold.lease_table_request().send().promise.await?;
        let table = response.get().and_then(|results| results.get_table()).map_err(ClientError::protocol)?;
        convert::read_lease_table(table)
    }

    /// Closes the connection cleanly: the node learns at once that the client left.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        match self.disconnector.take() {
            Some(disconnector) => disconnector.await.map_err(ClientError::from),
            None => Ok(()),
        }
    }
}

/// Presents `token` to the node's gate and returns the client API it hands out. Waited
/// for here (rather than pipelined into the first call) so that a refused token is
/// reported by connect, where the caller expects it.
async fn authenticate(gate: &gate::Client, token: &[u8]) -> Result<leasehold::Client, ClientError> {
    let mut request = gate.authenticate_request();
    request.get().set_token(token);
    let response = request.send().promise.await.map_err(authentication_error)?;
    response.get().and_then(|results| results.get_leasehold()).map_err(ClientError::protocol)
}

/// The error of a failed `authenticate` call: a refusal is recognised by the exception
/// text the schema promises; anything else (lost connection, a node too old to have a
/// `Gate`) keeps its usual meaning.
fn authentication_error(error: capnp::Error) -> ClientError {
    if error.kind == capnp::ErrorKind::Failed && error.extra.contains(AUTHENTICATION_FAILED) {
        ClientError::AuthenticationFailed
    } else {
        ClientError::from(error)
    }
}

/// The description of the exception with which a node refuses a token.
const AUTHENTICATION_FAILED: &str = "authentication failed";

impl Drop for Client {
    fn drop(&mut self) {
        // The connection task would otherwise keep the socket open for as long as the
        // LocalSet lives.
        self.connection.abort();
    }
}

/// An `invokeMany` call in flight: it owns its promise, not the invocations it was built
/// from, so callers may build several and await them together.
pub(crate) struct InvokeManyCall {
    promise:
        capnp::capability::Promise<capnp::capability::Response<leasehold::invoke_many_results::Owned>, capnp::Error>,
    sent: u32,
}

impl InvokeManyCall {
    /// The replies, in request order.
    pub(crate) async fn replies(self) -> Result<Vec<convert::Reply>, ClientError> {
        let sent = self.sent;
        let response = self.promise.await?;
        let result = response.get().and_then(|results| results.get_result()).map_err(ClientError::protocol)?;
        match result.which() {
            Ok(invoke_many_result::Results(results)) => {
                let results = results.map_err(ClientError::protocol)?;
                // Results are matched to requests by position, so a count mismatch would
                // attribute outcomes to the wrong requests.
                if results.len() != sent {
                    return Err(ClientError::Protocol(format!("{} results for {sent} invocations", results.len())));
                }
                results.iter().map(convert::read_reply).collect()
            }
            Ok(invoke_many_result::Rejected(rejection)) => Err(convert::rejected(rejection)),
            Err(member) => Err(convert::unknown_member("an invokeMany result", member)),
        }
    }
}
