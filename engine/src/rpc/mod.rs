//! The Cap'n Proto server of the client API (`schema/leasehold.capnp`): listens on the
//! client address, runs connections on a small pool of RPC threads, and stops gracefully.
//!
//! capnp-rpc objects are `!Send`, so each RPC thread owns a current-thread tokio runtime
//! with a `LocalSet` and serves its connections entirely by itself. Thread 0 also accepts
//! connections and deals them out round-robin, which spreads a benchmark's few long-lived
//! connections evenly over the threads. Generated Cap'n Proto types never leave this
//! module: [`convert`] translates them to and from [`crate::model`].
//!
//! Every connection bootstraps its own [`gate::GateService`]; only a client that presents
//! the node's token gets the thread's `Leasehold` capability from it, so an
//! unauthenticated connection can reach nothing but the gate. With a TLS certificate
//! configured ([`tls`]), every connection is a TLS connection first; the gate runs inside.

mod convert;
mod gate;
mod service;
pub mod tls;

use crate::config::{Config, ConfigError};
use crate::node::NodeHandle;
use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use gate::{Expected, GateService};
use leasehold_schema::leasehold_capnp::{gate as gate_capnp, leasehold};
use service::{CallTracker, LeaseholdService};
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// How long stopping waits for calls in flight to be answered before closing connections
/// anyway. Transactions finish within a few epochs, so this is only reached when the node
/// itself is stuck.
const CALLS_GRACE: Duration = Duration::from_secs(5);

/// How long stopping waits, once the last call has finished, for capnp-rpc to queue its
/// reply: a reply is queued a few task polls after the call's future completes, and a
/// connection that is closed before that loses it.
const REPLY_SETTLE: Duration = Duration::from_millis(20);

/// How long a connection may take to close cleanly (flush its replies and tell the client)
/// before it is dropped.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// Deepest nesting of structs and lists accepted in a message. The deepest legitimate
/// message (RPC envelope, `invokeMany` parameters, an invocation and its arguments) is
/// under ten levels; the bound keeps a hostile message from exhausting the stack.
const NESTING_LIMIT: i32 = 32;

/// How long a client may take to complete the TLS handshake; a connection that stalls
/// there is closed, so that idle sockets cannot pile up before authentication.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept, so that a persistent failure (no file descriptors left)
/// does not become a busy loop.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Errors starting the RPC server.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on client address {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("cannot prepare the client listener: {0}")]
    Listener(std::io::Error),
    #[error("cannot create the runtime of an RPC thread: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start an RPC thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Token(ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The running RPC server. [`RpcServer::stop`] stops it; dropping it does the same.
pub struct RpcServer {
    local_address: SocketAddr,
    stop_signal: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// What every RPC thread needs to serve connections.
#[derive(Clone)]
struct ThreadSettings {
    reader_options: ReaderOptions,
    invocations_per_message_max: usize,
    /// What `Gate.authenticate` checks tokens against.
    expected_token: Expected,
    /// Set when the node speaks TLS on its client address.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts client connections (on thread 0) and hands each to one RPC thread in turn.
struct Acceptor {
    listener: tokio::net::TcpListener,
    threads: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
}

/// Everything one RPC thread owns.
struct RpcThread {
    runtime: tokio::runtime::Runtime,
    incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    acceptor: Option<Acceptor>,
    node: NodeHandle,
    settings: ThreadSettings,
    stop_signal: watch::Receiver<bool>,
}

impl RpcServer {
    /// Binds `config.client_address` (port 0 picks a free port, see
    /// [`RpcServer::local_address`]) and starts `config.rpc_threads` RPC threads.
    pub fn start(config: &Config, node: NodeHandle) -> Result<RpcServer, RpcError> {
        let address = config.client_address;
        let listener = std::net::TcpListener::bind(address).map_err(|source| RpcError::Bind { address, source })?;
        listener.set_nonblocking(true).map_err(RpcError::Listener)?;
        let local_address = listener.local_addr().map_err(RpcError::Listener)?;
        let token = config.auth_token().map_err(RpcError::Token)?;
        if token.is_none() {
            tracing::warn!(
                address = %local_address,
                "no auth_token_file configured: this node is unauthenticated and serves every client that connects"
            );
        }
        let tls = match (&config.tls_certificate_file, &config.tls_key_file) {
            (Some(certificate), Some(key)) => {
                let server = tls::server_config(certificate, key, config.tls_client_ca_file.as_deref())?;
                tracing::info!(mutual = config.tls_client_ca_file.is_some(), "the client API speaks TLS only");
                Some(tokio_rustls::TlsAcceptor::from(server))
            }
            // `Config::validate` refuses one without the other.
            _ => None,
        };
        let settings = ThreadSettings {
            reader_options: reader_options(config.message_bytes_max),
            invocations_per_message_max: config.invocations_per_message_max,
            expected_token: Expected::new(token.as_ref()),
            tls,
        };
        let thread_count = config.rpc_threads.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..thread_count).map(|_| mpsc::unbounded_channel()).unzip();
        let (stop_sender, stop_signal) = watch::channel(false);
        // Built before any thread starts, so that a failure below drops (and so stops and
        // joins) the threads already running.
        let mut server =
            RpcServer { local_address, stop_signal: stop_sender, threads: Vec::with_capacity(thread_count) };
        let mut acceptor = Some((listener, senders));
        for (index, incoming) in receivers.into_iter().enumerate() {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RpcError::Runtime)?;
            let acceptor = match acceptor.take() {
                Some((listener, threads)) => {
                    // The listener must be registered with the runtime that will poll it.
                    let _context = runtime.enter();
                    let listener = tokio::net::TcpListener::from_std(listener).map_err(RpcError::Listener)?;
                    Some(Acceptor { listener, threads })
                }
                None => None,
            };
            let thread = RpcThread {
                runtime,
                incoming,
                acceptor,
                node: node.clone(),
                settings: settings.clone(),
                stop_signal: stop_signal.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("leasehold-rpc-{index}"))
                .spawn(move || thread.run())
                .map_err(RpcError::Thread)?;
            server.threads.push(handle);
        }
        tracing::info!(address = %local_address, threads = thread_count, "RPC server listening");
        Ok(server)
    }

    /// The address the server listens on, with the actual port when the configuration
    /// asked for port 0.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Stops accepting connections and calls, lets the calls in flight finish (for at
    /// most a few seconds), closes every connection and joins the RPC threads. The node
    /// must still be running for the calls in flight to finish, so stop the server first.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop_signal.send_replace(true);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an RPC thread panicked");
            }
        }
        tracing::info!(address = %self.local_address, "RPC server stopped");
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Reader options for client messages: the traversal limit doubles as the message size
/// limit (capnp refuses a message with more words than it may traverse), and a nesting
/// limit guards the stack.
fn reader_options(message_bytes_max: usize) -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some((message_bytes_max / 8).max(1))).nesting_limit(NESTING_LIMIT);
    options
}

/// The decoding an `invokeMany` call's parameters go through, from the bytes of one
/// serialized message: Cap'n Proto framing under the reader limits of client connections
/// (`message_bytes_max`), then the edge checks of [`convert::read_invocation`] for each
/// request. The service gets its messages framed by capnp-rpc; this entry point exists so
/// that the `request_decoding` fuzz target (`fuzz/`) drives the same limits and checks
/// with hostile bytes. A request that fails decoding gives its refusal's message.
pub fn decode_invocation_batch(
    message: &[u8],
    message_bytes_max: usize,
) -> Result<Vec<Result<crate::model::Invocation, String>>, capnp::Error> {
    let mut input = message;
    let message = capnp::serialize::read_message(&mut input, reader_options(message_bytes_max))?;
    let parameters = message.get_root::<leasehold::invoke_many_params::Reader<'_>>()?;
    let requests = parameters.get_requests()?;
    Ok(requests
        .iter()
        .map(|request| convert::read_invocation(request).map_err(|refusal| refusal.to_string()))
        .collect())
}

impl RpcThread {
    fn run(self) {
        let RpcThread { runtime, incoming, acceptor, node, settings, stop_signal } = self;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, serve(incoming, acceptor, node, settings, stop_signal));
    }
}

/// Runs one RPC thread: serves the connections handed to it until the server stops,
/// then winds them down.
async fn serve(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    acceptor: Option<Acceptor>,
    node: NodeHandle,
    settings: ThreadSettings,
    mut stop_signal: watch::Receiver<bool>,
) {
    let accepting =
        acceptor.map(|acceptor| tokio::task::spawn_local(accept_connections(acceptor, stop_signal.clone())));
    let calls = CallTracker::new();
    // One service object serves all of this thread's authenticated connections.
    let leasehold: leasehold::Client =
        capnp_rpc::new_client(LeaseholdService::new(node, settings.invocations_per_message_max, calls.clone()));
    let expected_token = Rc::new(settings.expected_token.clone());
    let (disconnect, disconnect_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    // Stays true unless the acceptor is gone (which only an unexpected failure causes);
    // the connections already open are served on regardless.
    let mut acceptor_alive = true;
    loop {
        tokio::select! {
            // A dropped sender also means stop: the server is gone.
            _ = stop_signal.wait_for(|stop| *stop) => break,
            stream = incoming.recv(), if acceptor_alive => match stream {
                Some(stream) => {
                    connections.spawn_local(serve_connection(
                        stream,
                        settings.tls.clone(),
                        leasehold.clone(),
                        expected_token.clone(),
                        settings.reader_options,
                        disconnect_signal.clone(),
                    ));
                }
                None => acceptor_alive = false,
            },
            Some(finished) = connections.join_next() => {
                if let Err(error) = finished {
                    tracing::error!(%error, "an RPC connection task failed");
                }
            }
        }
    }
    if let Some(accepting) = accepting {
        // The acceptor saw the same stop signal; waiting closes the listening socket now.
        if let Err(error) = accepting.await {
            tracing::error!(%error, "the RPC acceptor failed");
        }
    }
    calls.stop_taking_calls();
    if tokio::time::timeout(CALLS_GRACE, calls.wait_idle()).await.is_err() {
        tracing::warn!("RPC calls still in flight after {CALLS_GRACE:?}; closing their connections anyway");
    }
    if !connections.is_empty() {
        tokio::time::sleep(REPLY_SETTLE).await;
    }
    disconnect.send_replace(true);
    let closing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DISCONNECT_GRACE, closing).await.is_err() {
        tracing::warn!("RPC connections did not close within {DISCONNECT_GRACE:?}; dropping them");
    }
    // Dropping the set aborts whatever connection is still open.
}

/// Accepts connections until the server stops, dealing them out round-robin.
async fn accept_connections(acceptor: Acceptor, mut stop_signal: watch::Receiver<bool>) {
    let Acceptor { listener, threads } = acceptor;
    let mut next_thread = threads.iter().cycle();
    loop {
        let accepted = tokio::select! {
            _ = stop_signal.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted.and_then(|(stream, _peer)| stream.into_std()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a client connection failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        // A thread whose channel is closed has died; the connection goes to the next one
        // rather than being lost.
        let mut stream = stream;
        let mut delivered = false;
        for thread in next_thread.by_ref().take(threads.len()) {
            match thread.send(stream) {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(mpsc::error::SendError(returned)) => stream = returned,
            }
        }
        if !delivered {
            tracing::error!("every RPC thread has stopped; no longer accepting connections");
            return;
        }
    }
}

/// Serves one client connection until the client leaves, fails authentication too often
/// or the server stops.
async fn serve_connection(
    stream: std::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    leasehold: leasehold::Client,
    expected_token: Rc<Expected>,
    reader_options: ReaderOptions,
    mut disconnect: watch::Receiver<bool>,
) {
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot serve a client connection");
            return;
        }
    };
    let peer = stream.peer_addr().map(|address| address.to_string()).unwrap_or_else(|_| "unknown".into());
    // Replies are small and latency matters more than packet count: send them at once.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
    }
    tracing::debug!(%peer, "client connected");
    let network: Box<dyn capnp_rpc::VatNetwork<twoparty::VatId>> = match tls {
        None => {
            let (reader, writer) = stream.into_split();
            vat_network(reader, writer, reader_options)
        }
        Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let (reader, writer) = tokio::io::split(stream);
                vat_network(reader, writer, reader_options)
            }
            Ok(Err(error)) => {
                // A plaintext client, an untrusted or missing client certificate: the
                // client learns from the TLS alert, the operator from this line.
                tracing::info!(%peer, %error, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake not completed within {TLS_HANDSHAKE_TIMEOUT:?}");
                return;
            }
        },
    };
    let connection = gate::Connection::new();
    let bootstrap: gate_capnp::Client =
        capnp_rpc::new_client(GateService::new(expected_token, leasehold, connection.clone(), peer.clone()));
    let mut rpc_system = RpcSystem::new(network, Some(bootstrap.client));
    let disconnector = rpc_system.get_disconnector();
    let close_reason = tokio::select! {
        result = &mut rpc_system => {
            match result {
                Ok(()) => tracing::debug!(%peer, "client disconnected"),
                Err(error) => tracing::debug!(%peer, %error, "client connection failed"),
            }
            return;
        },
        _ = disconnect.wait_for(|now| *now) => "the server is stopping",
        _ = connection.closing() => {
            // Lets the refusal of the last attempt reach the client before the close, so
            // that it learns why.
            if tokio::time::timeout(REPLY_SETTLE, &mut rpc_system).await.is_ok() {
                tracing::debug!(%peer, "client disconnected after failing authentication");
                return;
            }
            "too many failed authentications"
        }
    };
    // The connection must keep running while it closes, to write the last replies and
    // the closing message.
    let closing = futures::future::select(disconnector, &mut rpc_system);
    if tokio::time::timeout(DISCONNECT_GRACE, closing).await.is_err() {
        tracing::debug!(%peer, close_reason, "client connection did not close in time");
    }
}

/// The Cap'n Proto side of a connection over any byte stream (plain TCP or TLS).
fn vat_network<R, W>(
    reader: R,
    writer: W,
    reader_options: ReaderOptions,
) -> Box<dyn capnp_rpc::VatNetwork<twoparty::VatId>>
where
    R: tokio::io::AsyncRead + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    Box::new(twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        Side::Server,
        reader_options,
    ))
}
