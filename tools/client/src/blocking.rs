//! [`BlockingClient`]: the async [`Client`] behind plain blocking calls, for the CLI and
//! tests. It owns a single-threaded tokio runtime and the `LocalSet` that Cap'n Proto
//! RPC needs, and drives the connection only while a call is running.

use crate::error::ClientError;
use crate::types::{Invocation, InvokeResult, NodeStatus, PluginInfo};
use crate::{Client, TlsSettings};
use std::fmt;
use std::future::Future;

/// A blocking connection to one engine node. Not `Send`: use it from the thread that
/// created it. Calling it from inside an async runtime panics, as any blocking call there
/// would; use [`Client`] there instead.
pub struct BlockingClient {
    // Fields drop in order: the connection first, then the tasks, then the runtime.
    client: Client,
    local: tokio::task::LocalSet,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    /// Connects to a node's client address (`"host:port"`, a `SocketAddr`, ...) without a
    /// token; see [`Client::connect`].
    pub fn connect<A>(address: A) -> Result<BlockingClient, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        BlockingClient::connect_with_token(address, &[])
    }

    /// Connects and authenticates with the node's shared `token`; see
    /// [`Client::connect_with_token`].
    pub fn connect_with_token<A>(address: A, token: &[u8]) -> Result<BlockingClient, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        BlockingClient::connect_by(Client::connect_with_token(address, token))
    }

    /// Connects over TLS and authenticates with `token`; see [`Client::connect_tls`].
    pub fn connect_tls<A>(address: A, token: &[u8], tls: &TlsSettings) -> Result<BlockingClient, ClientError>
    where
        A: tokio::net::ToSocketAddrs + fmt::Display,
    {
        BlockingClient::connect_by(Client::connect_tls(address, token, tls))
    }

    /// Runs `connecting` in a new runtime and keeps the runtime for the connection.
    fn connect_by(
        connecting: impl Future<Output = Result<Client, ClientError>>,
    ) -> Result<BlockingClient, ClientError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ClientError::Runtime)?;
        let local = tokio::task::LocalSet::new();
        let client = local.block_on(&runtime, connecting)?;
        Ok(BlockingClient { client, local, runtime })
    }

    fn run<F: Future>(&self, call: F) -> F::Output {
        self.local.block_on(&self.runtime, call)
    }

    /// See [`Client::deploy_plugin`].
    pub fn deploy_plugin(&self, library: &[u8]) -> Result<PluginInfo, ClientError> {
        self.run(self.client.deploy_plugin(library))
    }

    /// See [`Client::list_plugins`].
    pub fn list_plugins(&self) -> Result<Vec<PluginInfo>, ClientError> {
        self.run(self.client.list_plugins())
    }

    /// See [`Client::invoke`].
    pub fn invoke(&self, invocation: Invocation) -> Result<InvokeResult, ClientError> {
        self.run(self.client.invoke(invocation))
    }

    /// See [`Client::invoke_many`].
    pub fn invoke_many(&self, invocations: Vec<Invocation>) -> Result<Vec<InvokeResult>, ClientError> {
        self.run(self.client.invoke_many(invocations))
    }

    /// See [`Client::open_session`].
    pub fn open_session(&self) -> Result<u64, ClientError> {
        self.run(self.client.open_session())
    }

    /// See [`Client::read_key`].
    pub fn read_key(&self, plugin: &str, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.run(self.client.read_key(plugin, table, key))
    }

    /// See [`Client::status`].
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.run(self.client.status())
    }

    /// See [`Client::disconnect`].
    pub fn disconnect(self) -> Result<(), ClientError> {
        let BlockingClient { client, local, runtime } = self;
        local.block_on(&runtime, client.disconnect())
    }
}
