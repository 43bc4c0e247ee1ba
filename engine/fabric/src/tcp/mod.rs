//! The tcp fabric: for hosts without RDMA. Each node runs a small responder that performs
//! operations on its registered regions for its peers; the client side sends each
//! operation batch as one frame and waits for its response ([`wire`] has the format).
//!
//! One connection per ordered pair of nodes, opened on first use and reopened after a
//! failure; threads of a node that address the same peer share it (one batch in flight at
//! a time, a batch pipelines its operations). The responder runs one thread per accepted
//! connection and performs a connection's batches in arrival order with the same memory
//! operations as the owner (`memory.rs`), so the memory model holds: a client's WRITE has
//! taken effect before its next operation is sent.
//!
//! The newest connection from a node supersedes its older ones: a client opens a new
//! connection only after the old one failed, and a request it gave up on may still sit in
//! the old connection's kernel buffers (a partition that heals lets the retransmission
//! through). Performed late, after the newer connection's requests, that request would
//! break the issue order the memory model promises, so the responder closes a superseded
//! connection and performs nothing more from it; and a client resets (SO_LINGER 0) a
//! connection whose round trip failed, so that its kernel drops what it still holds.
//!
//! With [`PeerTls`] every connection is mutual TLS (rustls): the client verifies the
//! responder's certificate for the peer's IP address, the responder demands a client
//! certificate, both against the cluster's CA; the peer-token handshake and every frame
//! then travel inside TLS. Without it the bytes travel in clear.
//!
//! Frames from the network are untrusted: the responder checks sizes before allocating,
//! parses strictly, and closes a connection that sends a malformed frame.

mod wire;

use super::{check_batch_limits, Fabric, FabricError, LocalRegion, NodeId, Operation, RegionId, RemoteRegion};
use crate::memory::{check_range, check_word, RegionMemory};
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::Digest;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wire::BatchFailure;

/// How long a client waits to connect to a peer's responder.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a peer that cannot be connected to is logged.
const CONNECT_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a client waits for one response before it declares the peer unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tcp backend of one node: its responder and its connections to peers.
pub struct TcpFabric {
    node: NodeId,
    /// SHA-256 of the cluster's peer token: the key both sides' handshake proofs are
    /// computed with (zeros: no token).
    token_key: [u8; 32],
    tls: Option<PeerTls>,
    local_address: SocketAddr,
    shared: Arc<ResponderShared>,
    peers: RwLock<FxHashMap<NodeId, Arc<PeerConnection>>>,
    /// Joined on drop, so that the listening port is free once the fabric is gone.
    acceptor: Option<std::thread::JoinHandle<()>>,
}

/// What the responder threads share with the fabric.
struct ResponderShared {
    node: NodeId,
    /// The key (SHA-256 of the peer token) a connecting peer must prove it knows; `None`
    /// accepts every peer. The responder proves the same key (zeros without a token).
    required_key: Option<[u8; 32]>,
    /// Accepted connections speak TLS with this configuration (client certificates
    /// required).
    tls_server: Option<Arc<rustls::ServerConfig>>,
    regions: RwLock<FxHashMap<RegionId, Arc<LocalRegion>>>,
    shutting_down: AtomicBool,
    /// Accepted connections, so that dropping the fabric can close them.
    connections: Mutex<FxHashMap<u64, TcpStream>>,
    next_connection_id: AtomicU64,
    /// Per client node: its newest connection's id, and the lock under which requests
    /// from that node are performed and a newer connection takes over.
    clients: Mutex<FxHashMap<NodeId, ClientConnection>>,
}

/// A client node's newest connection id, and the lock its requests are performed under.
type ClientConnection = (u64, Arc<Mutex<()>>);

impl TcpFabric {
    /// Starts node `node`'s responder on `listen` (port 0 picks a free port; see
    /// [`TcpFabric::local_address`]). Peers are added with [`TcpFabric::add_peer`].
    pub fn start(node: NodeId, listen: SocketAddr) -> Result<Arc<TcpFabric>, FabricError> {
        Self::start_with_token(node, listen, None)
    }

    /// Like [`TcpFabric::start`], with a cluster-wide peer token: the responder serves
    /// only peers that prove they know it, and this node talks only to responders that
    /// prove it too. Neither the token nor anything replayable travels: each side sends an
    /// HMAC of both sides' fresh nonces under the token's SHA-256 (a challenge-response in
    /// both directions). The traffic after the handshake is neither encrypted nor
    /// integrity-protected (there is no TLS between nodes): the token keeps out nodes that
    /// do not know it and eavesdroppers who would replay a handshake, not an attacker who
    /// can take over an established connection.
    pub fn start_with_token(
        node: NodeId,
        listen: SocketAddr,
        token: Option<&[u8]>,
    ) -> Result<Arc<TcpFabric>, FabricError> {
        Self::start_secured(node, listen, token, None)
    }

    /// Like [`TcpFabric::start_with_token`], and with `tls` every connection, in and out,
    /// is mutual TLS (see the module doc).
    pub fn start_secured(
        node: NodeId,
        listen: SocketAddr,
        token: Option<&[u8]>,
        tls: Option<PeerTls>,
    ) -> Result<Arc<TcpFabric>, FabricError> {
        let key = token.map(|token| <[u8; 32]>::from(sha2::Sha256::digest(token)));
        let listener = TcpListener::bind(listen).map_err(|error| FabricError::io(format!("bind {listen}"), error))?;
        let local_address =
            listener.local_addr().map_err(|error| FabricError::io("read the responder's address", error))?;
        let shared = Arc::new(ResponderShared {
            node,
            required_key: key,
            tls_server: tls.as_ref().map(|tls| tls.server.clone()),
            regions: RwLock::new(FxHashMap::default()),
            shutting_down: AtomicBool::new(false),
            connections: Mutex::new(FxHashMap::default()),
            next_connection_id: AtomicU64::new(0),
            clients: Mutex::new(FxHashMap::default()),
        });
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("fabric-tcp-accept-{node}"))
            .spawn(move || accept_connections(listener, acceptor_shared))
            .map_err(|error| FabricError::io("start the fabric responder", error))?;
        Ok(Arc::new(TcpFabric {
            node,
            token_key: key.unwrap_or_default(),
            tls,
            local_address,
            shared,
            peers: RwLock::new(FxHashMap::default()),
            acceptor: Some(acceptor),
        }))
    }

    /// The address the responder listens on.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Makes `node` reachable at `address` (replacing an earlier address; handles opened
    /// before keep the old connection).
    pub fn add_peer(&self, node: NodeId, address: SocketAddr) {
        let connection = Arc::new(PeerConnection {
            from_node: self.node,
            token_key: self.token_key,
            tls_client: self.tls.as_ref().map(|tls| tls.client.clone()),
            node,
            address,
            stream: Mutex::new(None),
            last_warning: Mutex::new(None),
        });
        self.peers.write().insert(node, connection);
    }
}

impl Fabric for TcpFabric {
    fn node_id(&self) -> NodeId {
        self.node
    }

    fn backend_name(&self) -> &'static str {
        "tcp"
    }

    fn register_region(&self, region: RegionId, size_bytes: u64) -> Result<Arc<LocalRegion>, FabricError> {
        let mut regions = self.shared.regions.write();
        if regions.contains_key(&region) {
            return Err(FabricError::RegionExists { region });
        }
        let local = Arc::new(LocalRegion::new(self.node, region, RegionMemory::zeroed_heap(size_bytes)?));
        regions.insert(region, Arc::clone(&local));
        Ok(local)
    }

    fn deregister_region(&self, region: RegionId) -> Result<(), FabricError> {
        match self.shared.regions.write().remove(&region) {
            Some(_) => Ok(()),
            None => Err(FabricError::UnknownRegion { node: self.node, region }),
        }
    }

    fn open_remote(&self, node: NodeId, region: RegionId) -> Result<Arc<dyn RemoteRegion>, FabricError> {
        if node == self.node {
            return match self.shared.regions.read().get(&region) {
                Some(local) => Ok(Arc::clone(local) as Arc<dyn RemoteRegion>),
                None => Err(FabricError::UnknownRegion { node, region }),
            };
        }
        let connection = self.peers.read().get(&node).cloned().ok_or(FabricError::UnknownPeer { node })?;
        let size_bytes = connection.round_trip(
            &mut (),
            |(), frame| wire::encode_describe(frame, region),
            |(), body| wire::decode_describe_response(body),
        )?;
        match size_bytes {
            Some(size_bytes) => Ok(Arc::new(TcpRemoteRegion { region, size_bytes, connection })),
            None => Err(FabricError::UnknownRegion { node, region }),
        }
    }
}

impl Drop for TcpFabric {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // Wake the acceptor, which then sees the flag and stops listening. If the wake-up
        // connection fails, the acceptor is left to its fate rather than waited for.
        let woken = TcpStream::connect_timeout(&self.local_address, CONNECT_TIMEOUT).is_ok();
        if let (true, Some(acceptor)) = (woken, self.acceptor.take()) {
            let _ = acceptor.join();
        }
        for (_, stream) in self.shared.connections.lock().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// TLS between nodes: the configurations of both ends of every connection. Both must
/// verify the other side against the cluster's CA (the server configuration demands a
/// client certificate).
#[derive(Clone)]
pub struct PeerTls {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

impl PeerTls {
    /// Mutual TLS for a node presenting `certificate_chain` (its own certificate first,
    /// naming the node's IP address) with `key`, and trusting peers whose certificates
    /// `authorities` issued. rustls with the ring provider, TLS 1.2 and 1.3.
    pub fn new(
        certificate_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        authorities: Vec<CertificateDer<'static>>,
    ) -> Result<PeerTls, String> {
        // ring, as for the client API (see `leasehold-engine`'s `rpc::tls`); deprecated in
        // rustls only for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for authority in authorities {
            roots.add(authority).map_err(|error| format!("a CA certificate: {error}"))?;
        }
        let roots = Arc::new(roots);
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certificate_chain.clone(), key.clone_key())
            .map_err(|error| format!("the certificate and key: {error}"))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|error| format!("the CA certificates: {error}"))?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificate_chain, key)
            .map_err(|error| format!("the certificate and key: {error}"))?;
        Ok(PeerTls { client: Arc::new(client), server: Arc::new(server) })
    }
}

/// A connection's bytes: the socket in clear, or a TLS stream over it.
trait ByteStream: Read + Write + Send {}

impl<T: Read + Write + Send> ByteStream for T {}

type PeerStream = Box<dyn ByteStream>;

/// A connection from this node to one peer's responder.
struct PeerConnection {
    from_node: NodeId,
    token_key: [u8; 32],
    tls_client: Option<Arc<rustls::ClientConfig>>,
    node: NodeId,
    address: SocketAddr,
    stream: Mutex<Option<ConnectedStream>>,
    /// When a failed connection attempt was last logged (callers retry often).
    last_warning: Mutex<Option<std::time::Instant>>,
}

struct ConnectedStream {
    /// Read through the buffer, written through `get_mut`.
    stream: BufReader<PeerStream>,
    /// The socket itself, to reset it when a round trip failed.
    socket: TcpStream,
    /// Frame buffers kept between requests, so a request allocates nothing.
    request: Vec<u8>,
    response: Vec<u8>,
}

/// Why a round trip failed: the peer went away, or it answered nonsense.
enum RoundTripError {
    Unreachable(String),
    Protocol(String),
}

impl PeerConnection {
    fn unreachable(&self, reason: String) -> FabricError {
        FabricError::PeerUnreachable { node: self.node, reason }
    }

    /// Logs why connecting failed, unless that was logged less than `interval` ago: a
    /// peer that is down, or that fails the handshake (wrong token, a certificate of
    /// another CA), is retried many times a second.
    fn warn_at_most_every(&self, interval: Duration, error: &FabricError) {
        let mut last = self.last_warning.lock();
        if last.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        *last = Some(std::time::Instant::now());
        tracing::warn!(peer = self.node, address = %self.address, %error, "cannot connect to a peer's fabric responder");
    }

    fn connect(&self) -> Result<ConnectedStream, FabricError> {
        let protocol_error =
            |reason: String| FabricError::Protocol { node: self.node, reason: format!("{}: {reason}", self.address) };
        let stream = TcpStream::connect_timeout(&self.address, CONNECT_TIMEOUT)
            .map_err(|error| self.unreachable(format!("connect to {}: {error}", self.address)))?;
        let configure = |stream: &TcpStream| -> std::io::Result<()> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
            stream.set_write_timeout(Some(RESPONSE_TIMEOUT))
        };
        configure(&stream).map_err(|error| self.unreachable(format!("configure the connection: {error}")))?;
        let socket = stream.try_clone().map_err(|error| self.unreachable(format!("clone the socket: {error}")))?;
        let transport: PeerStream = match &self.tls_client {
            None => Box::new(stream),
            Some(config) => {
                // The responder's certificate must name the peer's IP address.
                let name = ServerName::IpAddress(self.address.ip().into());
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|error| protocol_error(format!("start TLS: {error}")))?;
                Box::new(rustls::StreamOwned::new(connection, stream))
            }
        };
        let mut stream = BufReader::new(transport);
        let client_nonce = fresh_nonce().map_err(|error| FabricError::io("draw a handshake nonce", error))?;
        stream
            .get_mut()
            .write_all(&wire::encode_hello(self.from_node, self.node, &client_nonce))
            .map_err(|error| self.unreachable(format!("send hello: {error}")))?;
        let mut challenge = [0u8; wire::CHALLENGE_BYTES];
        stream.read_exact(&mut challenge).map_err(|error| self.unreachable(format!("read challenge: {error}")))?;
        let (responder_nonce, responder_proof) =
            wire::decode_challenge(&challenge, self.node).map_err(protocol_error)?;
        let handshake =
            wire::Handshake { from_node: self.from_node, to_node: self.node, client_nonce, responder_nonce };
        if !wire::proofs_match(&responder_proof, &handshake.responder_proof(&self.token_key)) {
            // Nothing was sent that a false responder could use: the client's proof is
            // bound to this connection's nonces and is not sent at all.
            return Err(protocol_error(
                "the responder does not prove the cluster's peer token (it has none, or another one)".to_string(),
            ));
        }
        stream
            .get_mut()
            .write_all(&handshake.client_proof(&self.token_key))
            .map_err(|error| self.unreachable(format!("send proof: {error}")))?;
        let mut welcome = [0u8; wire::WELCOME_BYTES];
        stream.read_exact(&mut welcome).map_err(|error| self.unreachable(format!("read welcome: {error}")))?;
        wire::decode_welcome(&welcome, self.node).map_err(protocol_error)?;
        Ok(ConnectedStream { stream, socket, request: Vec::new(), response: Vec::new() })
    }

    /// Sends one request frame (built by `encode` from `state`) and decodes its response
    /// (with `decode`, into `state`), connecting first if needed. A failed connection is
    /// dropped, so the next call reconnects.
    fn round_trip<S: ?Sized, T>(
        &self,
        state: &mut S,
        encode: impl FnOnce(&S, &mut Vec<u8>),
        decode: impl FnOnce(&mut S, &[u8]) -> Result<T, String>,
    ) -> Result<T, FabricError> {
        let mut guard = self.stream.lock();
        if guard.is_none() {
            match self.connect() {
                Ok(connected) => *guard = Some(connected),
                Err(error) => {
                    self.warn_at_most_every(CONNECT_WARNING_INTERVAL, &error);
                    return Err(error);
                }
            }
        }
        let connected = guard.as_mut().expect("connected just above");
        let outcome = Self::exchange(connected, |frame| encode(state, frame))
            .and_then(|()| decode(state, &connected.response).map_err(RoundTripError::Protocol));
        match outcome {
            Ok(value) => Ok(value),
            Err(error) => {
                // The stream's state is unknown after a failure: start afresh next time,
                // and reset this one so that its kernel drops the request instead of
                // delivering it late (see the module comment).
                if let Some(failed) = guard.take() {
                    reset_on_close(&failed.socket);
                }
                Err(match error {
                    RoundTripError::Unreachable(reason) => self.unreachable(reason),
                    RoundTripError::Protocol(reason) => FabricError::Protocol { node: self.node, reason },
                })
            }
        }
    }

    fn exchange(connected: &mut ConnectedStream, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), RoundTripError> {
        connected.request.clear();
        encode(&mut connected.request);
        connected
            .stream
            .get_mut()
            .write_all(&connected.request)
            .map_err(|error| RoundTripError::Unreachable(format!("send request: {error}")))?;
        let mut length = [0u8; 4];
        connected
            .stream
            .read_exact(&mut length)
            .map_err(|error| RoundTripError::Unreachable(format!("read response: {error}")))?;
        let length = u32::from_le_bytes(length) as usize;
        if length > wire::RESPONSE_BODY_BYTES_MAX {
            return Err(RoundTripError::Protocol(format!("a response of {length} bytes exceeds the frame limit")));
        }
        connected.response.resize(length, 0);
        connected
            .stream
            .read_exact(&mut connected.response)
            .map_err(|error| RoundTripError::Unreachable(format!("read response: {error}")))
    }
}

/// A peer's region reached through its responder.
struct TcpRemoteRegion {
    region: RegionId,
    size_bytes: u64,
    connection: Arc<PeerConnection>,
}

impl RemoteRegion for TcpRemoteRegion {
    fn node(&self) -> NodeId {
        self.connection.node
    }

    fn region(&self) -> RegionId {
        self.region
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn execute(&self, operations: &mut [Operation<'_>]) -> Result<(), FabricError> {
        check_batch_limits(operations)?;
        if operations.is_empty() {
            return Ok(());
        }
        // Addressing errors are found here without a round trip; the responder checks
        // again. Operations before the first bad one still run, as the batch rule says.
        let first_invalid = operations.iter().position(|operation| self.check(operation).is_err());
        let (sent, invalid) = match first_invalid {
            Some(index) => operations.split_at_mut(index),
            None => (operations, &mut [][..]),
        };
        if !sent.is_empty() {
            // A refused request means the responder closed the connection: reporting it
            // as a protocol error makes the next call reconnect.
            let failure = self.connection.round_trip(
                sent,
                |sent, frame| wire::encode_batch(frame, self.region, sent),
                |sent, body| match wire::decode_batch_response(body, sent)? {
                    Some(BatchFailure::BadRequest) => Err("the responder refused our request as malformed".to_string()),
                    failure => Ok(failure),
                },
            )?;
            match failure {
                // A refusal became a protocol error above.
                None | Some(BatchFailure::BadRequest) => {}
                Some(BatchFailure::UnknownRegion) => {
                    return Err(FabricError::UnknownRegion { node: self.node(), region: self.region })
                }
                Some(BatchFailure::Access(error)) => return Err(error.at(self.node(), self.region)),
            }
        }
        match invalid.first() {
            Some(operation) => Err(self.check(operation).expect_err("found invalid above")),
            None => Ok(()),
        }
    }
}

impl TcpRemoteRegion {
    fn check(&self, operation: &Operation<'_>) -> Result<(), FabricError> {
        let checked = match operation {
            Operation::Read { .. } | Operation::Write { .. } => {
                check_range(operation.offset(), operation.length_bytes(), self.size_bytes)
            }
            Operation::CompareAndSwap { .. } | Operation::FetchAdd { .. } => {
                check_word(operation.offset(), self.size_bytes)
            }
        };
        checked.map_err(|error| error.at(self.node(), self.region))
    }
}

/// Makes closing `stream` reset the connection (SO_LINGER with a zero timeout): unsent
/// bytes are discarded instead of being retransmitted until they arrive.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid `linger` for a
    // socket this stream owns; a failure only leaves the default close behaviour.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot make a failed connection reset on close");
    }
}

/// A nonce for one handshake, from the operating system's random source.
fn fresh_nonce() -> std::io::Result<[u8; wire::NONCE_BYTES]> {
    let mut nonce = [0u8; wire::NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(nonce)
}

fn accept_connections(listener: TcpListener, shared: Arc<ResponderShared>) {
    for stream in listener.incoming() {
        if shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "fabric responder: accept failed");
                continue;
            }
        };
        let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(tracked) = stream.try_clone() {
            shared.connections.lock().insert(connection_id, tracked);
        }
        let connection_shared = Arc::clone(&shared);
        let spawned =
            std::thread::Builder::new().name(format!("fabric-tcp-respond-{}", shared.node)).spawn(move || {
                if let Err(error) = respond(stream, connection_id, &connection_shared) {
                    tracing::debug!(%error, "fabric responder: connection closed");
                }
                connection_shared.connections.lock().remove(&connection_id);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "fabric responder: cannot start a connection thread");
            shared.connections.lock().remove(&connection_id);
        }
    }
}

impl ResponderShared {
    /// Makes `connection` the newest of client `node`'s connections and closes the one it
    /// supersedes; returns the lock requests from `node` are performed under.
    fn take_over(&self, node: NodeId, connection: u64) -> Arc<Mutex<()>> {
        let lock = Arc::clone(&self.clients.lock().entry(node).or_insert_with(|| (connection, Arc::default())).1);
        // Under the node's lock, so that a request of the old connection being performed
        // now finishes before the new connection's first one starts.
        let _performing = lock.lock();
        let previous = self.clients.lock().insert(node, (connection, Arc::clone(&lock))).map(|(id, _)| id);
        if let Some(previous) = previous.filter(|&previous| previous != connection) {
            if let Some(stream) = self.connections.lock().get(&previous) {
                tracing::debug!(node, "fabric responder: a newer connection supersedes an older one");
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        drop(_performing);
        lock
    }

    /// Whether `connection` is still client `node`'s newest.
    fn is_newest(&self, node: NodeId, connection: u64) -> bool {
        self.clients.lock().get(&node).is_some_and(|(newest, _)| *newest == connection)
    }
}

/// Serves one client connection until it closes, misbehaves or is superseded.
fn respond(stream: TcpStream, connection: u64, shared: &ResponderShared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let transport: PeerStream = match &shared.tls_server {
        None => Box::new(stream),
        Some(config) => {
            let connection = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            Box::new(rustls::StreamOwned::new(connection, stream))
        }
    };
    // Read through the buffer, written through `get_mut`.
    let mut reader = BufReader::new(transport);
    let mut hello = [0u8; wire::HELLO_BYTES];
    reader.read_exact(&mut hello)?;
    let Some(hello) = wire::decode_hello(&hello).ok().filter(|hello| hello.to_node == shared.node) else {
        reader.get_mut().write_all(&wire::encode_challenge(
            false,
            shared.node,
            &[0; wire::NONCE_BYTES],
            &[0; wire::PROOF_BYTES],
        ))?;
        return Ok(());
    };
    // A fresh nonce per connection binds the client's proof to this connection: a proof
    // recorded from another handshake does not match.
    let handshake = wire::Handshake {
        from_node: hello.from_node,
        to_node: shared.node,
        client_nonce: hello.client_nonce,
        responder_nonce: fresh_nonce()?,
    };
    let own_key = shared.required_key.unwrap_or_default();
    reader.get_mut().write_all(&wire::encode_challenge(
        true,
        shared.node,
        &handshake.responder_nonce,
        &handshake.responder_proof(&own_key),
    ))?;
    let mut client_proof = [0u8; wire::PROOF_BYTES];
    reader.read_exact(&mut client_proof)?;
    let proven = shared
        .required_key
        .is_none_or(|required| wire::proofs_match(&client_proof, &handshake.client_proof(&required)));
    let client = proven.then_some(hello);
    // Taken over before the welcome, so that once a client is welcomed, nothing more
    // from its older connections is performed.
    let performing = client.as_ref().map(|client| shared.take_over(client.from_node, connection));
    reader.get_mut().write_all(&wire::encode_welcome(client.is_some(), shared.node))?;
    let (Some(client), Some(performing)) = (client, performing) else {
        return Ok(());
    };
    let mut body = Vec::new();
    let mut response = Vec::new();
    loop {
        let mut length = [0u8; 4];
        match reader.read_exact(&mut length) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        let length = u32::from_le_bytes(length) as usize;
        response.clear();
        response.extend_from_slice(&[0u8; 4]);
        let well_formed = length <= wire::REQUEST_BODY_BYTES_MAX && {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
            let _performing = performing.lock();
            if !shared.is_newest(client.from_node, connection) {
                // Superseded: whatever still arrives here was given up by its sender.
                return Ok(());
            }
            perform(shared, &body, &mut response)
        };
        if !well_formed {
            response.truncate(4);
            response.extend_from_slice(&[wire::STATUS_BAD_REQUEST, 0, 0]);
        }
        let body_bytes = (response.len() - 4) as u32;
        response[..4].copy_from_slice(&body_bytes.to_le_bytes());
        reader.get_mut().write_all(&response)?;
        if !well_formed {
            return Ok(());
        }
    }
}

/// Performs one request and appends the response body; false if the request was
/// malformed.
fn perform(shared: &ResponderShared, body: &[u8], response: &mut Vec<u8>) -> bool {
    let request = match wire::parse_request(body) {
        Ok(request) => request,
        Err(reason) => {
            tracing::debug!(%reason, "fabric responder: malformed request");
            return false;
        }
    };
    match request {
        wire::Request::Describe { region } => match shared.regions.read().get(&region) {
            Some(local) => {
                response.push(wire::STATUS_OK);
                response.extend_from_slice(&local.memory().size_bytes().to_le_bytes());
            }
            None => response.push(wire::STATUS_UNKNOWN_REGION),
        },
        wire::Request::Batch { region, operations } => {
            let Some(local) = shared.regions.read().get(&region).cloned() else {
                response.extend_from_slice(&[wire::STATUS_UNKNOWN_REGION, 0, 0]);
                return true;
            };
            let status_index = response.len();
            response.extend_from_slice(&[wire::STATUS_OK, 0, 0]);
            let mut completed: u16 = 0;
            let mut failure = None;
            for operation in operations {
                let memory = local.memory();
                let performed = match operation {
                    wire::WireOperation::Read { offset, length } => {
                        let start = response.len();
                        response.resize(start + length as usize, 0);
                        let read = memory.read(offset, &mut response[start..]);
                        if read.is_err() {
                            response.truncate(start);
                        }
                        read
                    }
                    wire::WireOperation::Write { offset, bytes } => memory.write(offset, bytes),
                    wire::WireOperation::CompareAndSwap { offset, expected, new } => memory
                        .compare_and_swap(offset, expected, new)
                        .map(|previous| response.extend_from_slice(&previous.to_le_bytes())),
                    wire::WireOperation::FetchAdd { offset, delta } => memory
                        .fetch_add(offset, delta)
                        .map(|previous| response.extend_from_slice(&previous.to_le_bytes())),
                };
                match performed {
                    Ok(()) => completed += 1,
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if let Some(error) = failure {
                let status = wire::encode_access_error(response, error);
                response[status_index] = status;
            }
            response[status_index + 1..status_index + 3].copy_from_slice(&completed.to_le_bytes());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length)?;
        let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
        stream.read_exact(&mut body)?;
        Ok(body)
    }

    /// A raw connection to `fabric`'s responder as node 9: the hello sent with
    /// `client_nonce`, the challenge read and checked. Returns the stream and the
    /// handshake (nonces) that the client's proof must be computed over.
    fn raw_hello(fabric: &TcpFabric, client_nonce: [u8; 32]) -> (TcpStream, wire::Handshake) {
        let mut stream = TcpStream::connect(fabric.local_address()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream.write_all(&wire::encode_hello(9, fabric.node_id(), &client_nonce)).expect("hello");
        let mut challenge = [0u8; wire::CHALLENGE_BYTES];
        stream.read_exact(&mut challenge).expect("challenge");
        let (responder_nonce, _) = wire::decode_challenge(&challenge, fabric.node_id()).expect("not refused");
        (stream, wire::Handshake { from_node: 9, to_node: fabric.node_id(), client_nonce, responder_nonce })
    }

    /// Sends `proof` and reads the welcome: whether the responder accepted.
    fn send_proof(stream: &mut TcpStream, proof: [u8; 32], node: NodeId) -> bool {
        stream.write_all(&proof).expect("proof");
        let mut welcome = [0u8; wire::WELCOME_BYTES];
        stream.read_exact(&mut welcome).expect("welcome");
        wire::decode_welcome(&welcome, node).is_ok()
    }

    /// A raw connection to `fabric`'s (tokenless) responder that passed the handshake as
    /// node 9.
    fn raw_client(fabric: &TcpFabric) -> TcpStream {
        let (mut stream, handshake) = raw_hello(fabric, [1; 32]);
        assert!(send_proof(&mut stream, handshake.client_proof(&[0; 32]), fabric.node_id()), "accepted");
        stream
    }

    #[test]
    fn a_malformed_frame_closes_only_its_own_connection() {
        let fabric = TcpFabric::start(0, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        fabric.register_region(RegionId(1), 64).expect("register");

        // A length far above the frame limit: refused before anything is allocated.
        let mut oversized = raw_client(&fabric);
        oversized.write_all(&u32::MAX.to_le_bytes()).expect("send");
        assert_eq!(read_frame(&mut oversized).expect("response"), vec![wire::STATUS_BAD_REQUEST, 0, 0]);
        assert!(read_frame(&mut oversized).is_err(), "the responder closed the connection");

        // A frame of the right size with an unknown request kind.
        let mut garbage = raw_client(&fabric);
        garbage.write_all(&[3, 0, 0, 0, 99, 1, 2]).expect("send");
        assert_eq!(read_frame(&mut garbage).expect("response"), vec![wire::STATUS_BAD_REQUEST, 0, 0]);

        // A client that greets the wrong node is turned away.
        let mut lost = TcpStream::connect(fabric.local_address()).expect("connect");
        lost.write_all(&wire::encode_hello(9, 5, &[0; 32])).expect("hello");
        let mut challenge = [0u8; wire::CHALLENGE_BYTES];
        lost.read_exact(&mut challenge).expect("challenge");
        assert!(wire::decode_challenge(&challenge, 5).is_err());

        // Well-behaved peers are unaffected.
        let peer = TcpFabric::start(1, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        peer.add_peer(0, fabric.local_address());
        let remote = peer.open_remote(0, RegionId(1)).expect("open");
        assert_eq!(remote.fetch_add(0, 1).expect("fetch_add"), 0);
    }

    #[test]
    fn a_peer_that_went_away_is_unreachable_and_reconnected_when_back() {
        let owner = TcpFabric::start(0, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        owner.register_region(RegionId(1), 64).expect("register");
        let address = owner.local_address();
        let peer = TcpFabric::start(1, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        peer.add_peer(0, address);
        let remote = peer.open_remote(0, RegionId(1)).expect("open");
        remote.write(0, &[1; 8]).expect("write");
        drop(owner);
        let error = remote.read(0, &mut [0; 8]).expect_err("the owner is gone");
        assert!(matches!(error, FabricError::PeerUnreachable { node: 0, .. }), "{error}");

        // The owner restarts on the same address with a fresh, zeroed region.
        let restarted = TcpFabric::start(0, address).expect("restart on the same port");
        restarted.register_region(RegionId(1), 64).expect("register");
        let mut word = [9u8; 8];
        remote.read(0, &mut word).expect("the handle reconnects");
        assert_eq!(word, [0; 8]);
    }

    #[test]
    fn a_peer_without_the_cluster_token_is_refused() {
        let owner = TcpFabric::start_with_token(1, "127.0.0.1:0".parse().expect("address"), Some(b"s3cret"))
            .expect("start owner");
        owner.register_region(RegionId(4), 64).expect("region");
        let connect = |token: Option<&[u8]>| {
            let peer = TcpFabric::start_with_token(2, "127.0.0.1:0".parse().expect("address"), token).expect("peer");
            peer.add_peer(1, owner.local_address());
            peer.open_remote(1, RegionId(4)).map(|region| region.size_bytes())
        };
        assert_eq!(connect(Some(b"s3cret")).expect("the right token is served"), 64);
        for wrong in [Some(&b"guess"[..]), None] {
            // The client finds out first: the responder's proof does not match its key.
            let error = connect(wrong).expect_err("a wrong or missing token is refused");
            assert!(error.to_string().contains("does not prove the cluster's peer token"), "{error}");
        }
    }

    /// A client that knows the token but met a responder that does not (an impostor
    /// listening on a peer's address) sends it nothing: the responder must prove the
    /// token first.
    #[test]
    fn a_responder_without_the_cluster_token_is_not_trusted() {
        let impostor = TcpFabric::start(1, "127.0.0.1:0".parse().expect("address")).expect("start impostor");
        impostor.register_region(RegionId(4), 64).expect("region");
        let peer =
            TcpFabric::start_with_token(2, "127.0.0.1:0".parse().expect("address"), Some(b"s3cret")).expect("peer");
        peer.add_peer(1, impostor.local_address());
        let error = peer.open_remote(1, RegionId(4)).map(|_| ()).expect_err("the impostor cannot prove the token");
        assert!(matches!(error, FabricError::Protocol { node: 1, .. }), "{error}");
        assert!(error.to_string().contains("does not prove the cluster's peer token"), "{error}");
    }

    /// An eavesdropper who recorded a whole handshake (both nonces and the client's
    /// proof) cannot replay it: every connection gets a fresh responder nonce, so the
    /// recorded proof is refused, and no data frame is served.
    #[test]
    fn a_recorded_handshake_cannot_be_replayed() {
        let token_key: [u8; 32] = sha2::Sha256::digest(b"s3cret").into();
        let owner = TcpFabric::start_with_token(1, "127.0.0.1:0".parse().expect("address"), Some(b"s3cret"))
            .expect("start owner");
        owner.register_region(RegionId(4), 64).expect("region");

        // The honest handshake the eavesdropper records.
        let (mut honest, recorded) = raw_hello(&owner, [5; 32]);
        let recorded_proof = recorded.client_proof(&token_key);
        assert!(send_proof(&mut honest, recorded_proof, 1), "the honest client is accepted");

        // The replay: the same hello, then the recorded proof.
        let (mut replay, fresh) = raw_hello(&owner, [5; 32]);
        assert_ne!(fresh.responder_nonce, recorded.responder_nonce, "the responder's nonce is fresh");
        assert!(!send_proof(&mut replay, recorded_proof, 1), "the recorded proof is refused");
        let mut frame = Vec::new();
        wire::encode_describe(&mut frame, RegionId(4));
        let _ = replay.write_all(&frame);
        assert!(read_frame(&mut replay).is_err(), "nothing is served on the refused connection");
    }
    /// A test certificate authority (rcgen) and what it issues.
    struct Authority {
        params: rcgen::CertificateParams,
        key: rcgen::KeyPair,
        certificate: CertificateDer<'static>,
    }

    impl Authority {
        fn new() -> Authority {
            let key = rcgen::KeyPair::generate().expect("CA key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let certificate = params.self_signed(&key).expect("self-signed CA").der().clone();
            Authority { params, key, certificate }
        }

        /// Mutual TLS for a node on 127.0.0.1 with a certificate of this authority,
        /// trusting `trusted`'s certificates.
        fn peer_tls(&self, trusted: &Authority) -> PeerTls {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("parameters");
            let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
            let certificate = params.signed_by(&key, &issuer).expect("sign").der().clone();
            let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
            PeerTls::new(vec![certificate], key, vec![trusted.certificate.clone()]).expect("TLS configuration")
        }
    }

    fn start_tls(node: NodeId, tls: Option<PeerTls>) -> Arc<TcpFabric> {
        TcpFabric::start_secured(node, "127.0.0.1:0".parse().expect("address"), Some(b"s3cret"), tls).expect("start")
    }

    #[test]
    fn peers_with_certificates_of_the_cluster_authority_talk_over_tls() {
        let authority = Authority::new();
        let owner = start_tls(1, Some(authority.peer_tls(&authority)));
        let region = owner.register_region(RegionId(4), 64).expect("region");
        let peer = start_tls(2, Some(authority.peer_tls(&authority)));
        peer.add_peer(1, owner.local_address());
        let remote = peer.open_remote(1, RegionId(4)).expect("open over TLS");
        remote.write(8, &7u64.to_le_bytes()).expect("write");
        assert_eq!(remote.fetch_add(8, 1).expect("fetch_add"), 7);
        assert_eq!(region.load_word(8).expect("word"), 8);
    }

    /// A peer whose certificate another authority issued, a peer speaking in clear to a
    /// TLS responder, and a TLS peer meeting a responder in clear are all refused: none
    /// of them performs an operation.
    #[test]
    fn peers_without_a_certificate_of_the_cluster_authority_are_refused() {
        let (authority, stranger) = (Authority::new(), Authority::new());
        let owner = start_tls(1, Some(authority.peer_tls(&authority)));
        let region = owner.register_region(RegionId(4), 64).expect("region");
        let plain_owner = start_tls(3, None);
        plain_owner.register_region(RegionId(4), 64).expect("region");
        let attempts = [
            ("another authority's certificate", Some(stranger.peer_tls(&authority)), 1, owner.local_address()),
            ("no TLS", None, 1, owner.local_address()),
            ("TLS to a responder in clear", Some(authority.peer_tls(&authority)), 3, plain_owner.local_address()),
        ];
        for (case, tls, node, address) in attempts {
            let peer = start_tls(2, tls);
            peer.add_peer(node, address);
            let result = peer.open_remote(node, RegionId(4)).and_then(|remote| remote.fetch_add(0, 1));
            assert!(result.is_err(), "{case}: served");
        }
        assert_eq!(region.load_word(0).expect("word"), 0, "nothing was performed");
    }

    /// A request a client gave up on may arrive on its old connection after it opened a
    /// new one (a partition that heals lets the retransmission through). The newer
    /// connection supersedes the older: nothing from the old one is performed any more.
    #[test]
    fn a_newer_connection_from_a_node_supersedes_its_older_one() {
        let fabric = TcpFabric::start(0, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        let region = fabric.register_region(RegionId(1), 64).expect("register");
        let write = |stream: &mut TcpStream, value: u64| {
            let bytes = value.to_le_bytes();
            let mut frame = Vec::new();
            wire::encode_batch(&mut frame, RegionId(1), &[Operation::Write { offset: 0, bytes: &bytes }]);
            stream.write_all(&frame).and_then(|()| read_frame(stream))
        };
        let mut old = raw_client(&fabric);
        write(&mut old, 1).expect("the only connection is served");
        assert_eq!(region.load_word(0).expect("word"), 1);

        let mut new = raw_client(&fabric);
        assert!(write(&mut old, 2).is_err(), "the superseded connection is closed");
        assert_eq!(region.load_word(0).expect("word"), 1, "nothing from the old connection was performed");
        write(&mut new, 3).expect("the newer connection is served");
        assert_eq!(region.load_word(0).expect("word"), 3);

        // Other nodes' connections are unaffected.
        let peer = TcpFabric::start(1, "127.0.0.1:0".parse().expect("literal address")).expect("start");
        peer.add_peer(0, fabric.local_address());
        let remote = peer.open_remote(0, RegionId(1)).expect("open");
        assert_eq!(remote.fetch_add(0, 1).expect("fetch_add"), 3);
        write(&mut new, 4).expect("node 9's connection still works");
    }
}
