//! Domain types shared by the transaction core, the plugin host and the RPC edge:
//! what a client asks for ([`Invocation`]) and what it gets back ([`Outcome`],
//! [`Rejection`]). Cap'n Proto types never appear here; `rpc` converts at the edge.

use std::fmt;

/// Identifies a node in a cluster (a single node is node 0).
pub type NodeId = u16;

/// A transaction's position in the global serial order: epochs first, then the node
/// that sequenced it, then its sequence number within that node's epoch. Lexicographic
/// order needs no central sequencer.
///
/// Under the baselines of a cluster (`cc = "2pl" | "occ"`) transactions of one epoch are
/// ordered by their protocol, not by node: `sequence` is then the cluster-wide commit
/// number in the epoch and `node` the node that ran the transaction, and the serial order
/// is (`epoch`, `sequence`). On a single node both orders agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub epoch: u64,
    pub node: NodeId,
    pub sequence: u32,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.epoch, self.node, self.sequence)
    }
}

/// Longest request id a client may choose.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// How a request is made safe to retry (exactly once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// Not tracked: a retry may run the request again.
    #[default]
    Untracked,
    /// A client-chosen id (at most [`REQUEST_ID_BYTES_MAX`] bytes, never empty). Its
    /// outcome is kept for the configured retention, looked up by id.
    Id(Box<[u8]>),
    /// A position in a client session: the node keeps the session's outcomes until the
    /// client acknowledges them, so a new request costs no lookup in storage.
    Session(SessionPosition),
}

impl RequestId {
    /// The id for `bytes`: untracked when empty.
    pub fn from_bytes(bytes: impl Into<Box<[u8]>>) -> RequestId {
        let bytes = bytes.into();
        if bytes.is_empty() {
            RequestId::Untracked
        } else {
            RequestId::Id(bytes)
        }
    }

    pub fn is_tracked(&self) -> bool {
        !matches!(self, RequestId::Untracked)
    }

    /// The id's bytes: empty for an untracked request. A session position has none here:
    /// a cluster turns it into an id first ([`RequestId::with_session_as_id`]).
    pub fn id_bytes(&self) -> &[u8] {
        match self {
            RequestId::Untracked => &[],
            RequestId::Id(bytes) => bytes,
            RequestId::Session(_) => panic!("a session position has no id bytes; a cluster turns it into an id"),
        }
    }

    /// A cluster keeps every outcome under an id, at the id's holder (so that a retry
    /// through any node meets it): a session position becomes an id there. The id is
    /// longer than any id a client may choose, so it never collides with one.
    pub fn with_session_as_id(self) -> RequestId {
        match self {
            RequestId::Session(position) => {
                let mut bytes = Vec::with_capacity(SESSION_ID_BYTES);
                bytes.extend_from_slice(SESSION_ID_MARKER);
                bytes.resize(REQUEST_ID_BYTES_MAX + 1, 0);
                bytes.extend_from_slice(&position.session.to_be_bytes());
                bytes.extend_from_slice(&position.sequence.to_be_bytes());
                RequestId::Id(bytes.into())
            }
            other => other,
        }
    }
}

const SESSION_ID_MARKER: &[u8] = b"leasehold-session";
const SESSION_ID_BYTES: usize = REQUEST_ID_BYTES_MAX + 1 + 16;

/// Where a request sits in its client session (see `openSession` in `leasehold.capnp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionPosition {
    /// The session, as `openSession` returned it.
    pub session: u64,
    /// The request's number in the session, from 1; a retry reuses it.
    pub sequence: u64,
    /// The client has the outcome of every request of the session numbered below this
    /// (its lowest unanswered sequence number): the node may forget those outcomes.
    pub first_unanswered: u64,
}

/// Arguments as the client sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arguments {
    /// Already in the plugin's own encoding.
    Encoded(Vec<u8>),
    /// JSON, converted by the plugin before planning.
    Json(String),
}

/// One request: run `workflow` of `plugin` with `arguments` as one transaction.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub plugin: String,
    pub workflow: String,
    pub arguments: Arguments,
    pub request_id: RequestId,
}

/// Why a transaction aborted. Every abort discards all of the transaction's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortKind {
    /// The plugin refused (for example insufficient funds).
    Logic,
    /// A function touched a key outside the declared access set.
    UndeclaredAccess,
    /// A function panicked.
    PluginPanic,
    /// A function wrote a value larger than its table allows.
    ValueTooLarge,
    /// A function ran longer than `plugin_call_abandon_ms` and was abandoned (its plugin
    /// is quarantined).
    PluginTimedOut,
}

impl AbortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AbortKind::Logic => "logic",
            AbortKind::UndeclaredAccess => "undeclared-access",
            AbortKind::PluginPanic => "plugin-panic",
            AbortKind::ValueTooLarge => "value-too-large",
            AbortKind::PluginTimedOut => "plugin-timed-out",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            AbortKind::Logic => 0,
            AbortKind::UndeclaredAccess => 1,
            AbortKind::PluginPanic => 2,
            AbortKind::ValueTooLarge => 3,
            AbortKind::PluginTimedOut => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<AbortKind> {
        Some(match code {
            0 => AbortKind::Logic,
            1 => AbortKind::UndeclaredAccess,
            2 => AbortKind::PluginPanic,
            3 => AbortKind::ValueTooLarge,
            4 => AbortKind::PluginTimedOut,
            _ => return None,
        })
    }
}

/// The durable result of a transaction that ran. Stored under its request id, so that a
/// retry gets exactly this back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed { timestamp: Timestamp, output: Vec<u8> },
    Aborted { timestamp: Timestamp, kind: AbortKind, message: String },
}

impl Outcome {
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Outcome::Committed { timestamp, .. } | Outcome::Aborted { timestamp, .. } => *timestamp,
        }
    }

    pub fn is_committed(&self) -> bool {
        matches!(self, Outcome::Committed { .. })
    }
}

/// Why a request was refused before it ran. Nothing was executed or recorded, so the
/// client may fix the request and send it again under the same id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    #[error("plugin {plugin:?} has no workflow {workflow:?}")]
    UnknownWorkflow { plugin: String, workflow: String },
    #[error("plugin {plugin:?} has no table {table:?}")]
    UnknownTable { plugin: String, table: String },
    #[error("bad arguments: {0}")]
    BadArguments(String),
    #[error("the plugin's planner failed: {0}")]
    PlanFailed(String),
    #[error("request id is longer than {REQUEST_ID_BYTES_MAX} bytes")]
    RequestIdTooLong,
    #[error("the access set has {count} keys; at most {max} are allowed")]
    AccessSetTooLarge { count: usize, max: usize },
    #[error("key is longer than {max} bytes")]
    KeyTooLong { max: usize },
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("storage failed: {0}")]
    Storage(String),
    /// The session is not open on this node: it was never opened here, or it expired
    /// (idle longer than the retention). Its unanswered requests may or may not have run.
    #[error("session {0} is not open on this node (never opened, or expired); open a new session")]
    UnknownSession(u64),
    /// The request's sequence number is below what the client itself acknowledged, so
    /// its outcome is forgotten: a client bug.
    #[error("session {session}: request {sequence} was acknowledged (first unanswered is {first_unanswered}); its outcome is forgotten")]
    SequenceAcknowledged { session: u64, sequence: u64, first_unanswered: u64 },
    /// The session (or all sessions together) hold too many unacknowledged outcomes: the
    /// client must advance its first unanswered sequence number.
    #[error(
        "session {session} cannot hold more unacknowledged outcomes (it holds {held}; the node limits them per session \
         and over all sessions); acknowledge answered requests"
    )]
    SessionFull { session: u64, held: usize },
    /// Too many sessions are open on this node.
    #[error("{0} sessions are open on this node, the most allowed; close idle clients or retry later")]
    TooManySessions(usize),
    /// The cluster rolled back the request's epoch (a node restarted before the epoch was
    /// durable everywhere); nothing of it took effect and the client should retry.
    #[error("the cluster rolled back this request's epoch ({0}); nothing took effect, retry with the same id")]
    Retry(String),
    /// A call of the plugin ran so long that the node abandoned it; the plugin takes no
    /// calls until a new version is deployed.
    #[error("plugin {plugin:?} is quarantined ({reason}); deploy a fixed version to lift it")]
    PluginQuarantined { plugin: String, reason: String },
}

/// What a deployed plugin declares, as shown to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub build_info: String,
    /// Content hash of the library (hex), which tells deployed versions apart.
    pub digest: String,
    pub tables: Vec<TableInfo>,
    pub workflows: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub value_bytes_max: u32,
    /// The table's number in storage keys, the same on every node.
    pub table_id: u32,
}

/// Where to send a request whose keys the node that received it does not mostly hold:
/// the answer to a request that asked for redirects instead of forwarding (a client that
/// routes by its cached lease table). Nothing of the request ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The node that should run the request.
    pub node: NodeId,
    /// That node's client address, from the cluster file.
    pub client_address: String,
    /// The digest of the lease table the decision used.
    pub lease_table_digest: u64,
}

/// Where every key is held, as a client needs it to route requests (see `LeaseTable` in
/// `leasehold.capnp` for the placement rule).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTableSnapshot {
    pub node_count: u16,
    pub digest: u64,
    /// Client addresses by node id.
    pub client_addresses: Vec<String>,
    /// Storage keys held away from their home node, with their holders.
    pub moved: Vec<(Vec<u8>, NodeId)>,
}

/// A node's view of itself, for `leasehold status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStatus {
    pub node: NodeId,
    pub version: String,
    /// The newest epoch that is durable.
    pub durable_epoch: u64,
    pub committed_total: u64,
    pub aborted_total: u64,
    pub rejected_total: u64,
    pub epochs_total: u64,
    pub resident_keys: u64,
    pub plugins: Vec<String>,
    pub uptime_ms: u64,
    pub cc: String,
    pub fsync: String,
    pub cluster_nodes: u16,
    pub cluster_generation: u64,
    pub cluster_synced: bool,
    pub lease_table_digest: u64,
    pub leases_lent: u64,
    pub local_accesses: u64,
    pub remote_accesses: u64,
    pub fenced_total: u64,
    pub fabric: String,
    pub lease_moves_total: u64,
    pub bytes_migrated_total: u64,
    /// Transactions the concurrency control aborted and ran again (2pl, occ; 0 under leases).
    pub concurrency_retries_total: u64,
    /// Requests this node forwarded to the node holding most of their keys, and requests
    /// it ran for other nodes that forwarded them.
    pub forwarded_total: u64,
    pub forwards_received_total: u64,
    /// This node's decayed count of transactions run (N_i of the routing score).
    pub transactions_decayed: f64,
    /// Requests answered with a redirect (the client's lease table was stale).
    pub redirected_total: u64,
    /// Plugin calls running longer than `plugin_call_warn_ms`, described for people.
    pub overdue_plugin_calls: Vec<String>,
    /// Plugin calls abandoned after `plugin_call_abandon_ms`, since the node started.
    pub abandoned_plugin_calls: u64,
}
