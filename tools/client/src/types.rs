//! The client's own plain Rust types for requests and replies. They mirror the structs of
//! `leasehold.capnp` but carry no Cap'n Proto machinery, so callers never handle
//! generated readers and builders, and the client needs nothing from the engine.

use std::fmt;

/// A transaction's position in the global serial order. The derived order is the serial
/// order: epoch first, then the sequencing node, then the sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// The epoch (batch committed together) the transaction belongs to.
    pub epoch: u64,
    /// The node that sequenced it.
    pub node: u16,
    /// Its position among that node's transactions of the epoch.
    pub sequence: u32,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.epoch, self.node, self.sequence)
    }
}

/// A workflow's arguments, in one of the two forms a node accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arguments {
    /// In the plugin's own binary encoding.
    Encoded(Vec<u8>),
    /// As a JSON document, which the plugin converts; the committed output then also
    /// comes back as JSON.
    Json(String),
}

/// One request: run `workflow` of `plugin` with `arguments` as one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub plugin: String,
    pub workflow: String,
    /// Makes retries safe: a request sent again under the same id gets the original
    /// result and never runs twice. At most 64 bytes; empty means untracked.
    pub request_id: Vec<u8>,
    pub arguments: Arguments,
    /// Instead of `request_id`: the request's place in a client session, which makes
    /// retries safe more cheaply (see [`crate::SessionNumbers`]).
    pub session: Option<SessionPosition>,
}

/// A request's place in a client session (see `openSession` in `leasehold.capnp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionPosition {
    /// The session, as [`crate::Client::open_session`] returned it.
    pub session: u64,
    /// The request's number in the session, from 1; a retry sends the same number.
    pub sequence: u64,
    /// The lowest number of the session whose answer the client does not have yet.
    pub first_unanswered: u64,
}

impl Invocation {
    /// An untracked invocation with JSON arguments.
    pub fn json(plugin: impl Into<String>, workflow: impl Into<String>, arguments: impl Into<String>) -> Invocation {
        Invocation {
            plugin: plugin.into(),
            workflow: workflow.into(),
            request_id: Vec::new(),
            arguments: Arguments::Json(arguments.into()),
            session: None,
        }
    }

    /// An untracked invocation with arguments in the plugin's binary encoding.
    pub fn encoded(plugin: impl Into<String>, workflow: impl Into<String>, arguments: Vec<u8>) -> Invocation {
        Invocation {
            plugin: plugin.into(),
            workflow: workflow.into(),
            request_id: Vec::new(),
            arguments: Arguments::Encoded(arguments),
            session: None,
        }
    }

    /// The same invocation, tracked under `request_id` for exactly-once retries.
    pub fn with_request_id(mut self, request_id: impl Into<Vec<u8>>) -> Invocation {
        self.request_id = request_id.into();
        self
    }
}

/// Why a transaction that ran was aborted.
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
    /// A function ran so long that the node abandoned it (and quarantined its plugin).
    PluginTimedOut,
    /// A kind added to the schema after this client was built (its ordinal).
    Unrecognized(u16),
}

impl fmt::Display for AbortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortKind::Logic => f.write_str("logic"),
            AbortKind::UndeclaredAccess => f.write_str("undeclared-access"),
            AbortKind::PluginPanic => f.write_str("plugin-panic"),
            AbortKind::ValueTooLarge => f.write_str("value-too-large"),
            AbortKind::PluginTimedOut => f.write_str("plugin-timed-out"),
            AbortKind::Unrecognized(ordinal) => write!(f, "abort-kind-{ordinal}"),
        }
    }
}

/// Why a request was refused before it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    UnknownPlugin,
    UnknownWorkflow,
    UnknownTable,
    BadArguments,
    PlanFailed,
    RequestIdTooLong,
    AccessSetTooLarge,
    KeyTooLong,
    ShuttingDown,
    Storage,
    MalformedRequest,
    TooManyInvocations,
    /// The cluster rolled the request's epoch back; nothing took effect: retry it with the
    /// same request id.
    Retry,
    /// The plugin is quarantined after a call of it was abandoned; it takes no calls until
    /// a new version is deployed.
    PluginQuarantined,
    /// The session is not open on the node (never opened there, or expired).
    UnknownSession,
    /// The request's number is below what the client acknowledged in its session.
    SequenceAcknowledged,
    /// The session holds as many unacknowledged outcomes as the node allows.
    SessionFull,
    /// `openSession`: the node has as many sessions open as it allows.
    TooManySessions,
    /// A kind added to the schema after this client was built (its ordinal).
    Unrecognized(u16),
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RejectionKind::UnknownPlugin => "unknown-plugin",
            RejectionKind::UnknownWorkflow => "unknown-workflow",
            RejectionKind::UnknownTable => "unknown-table",
            RejectionKind::BadArguments => "bad-arguments",
            RejectionKind::PlanFailed => "plan-failed",
            RejectionKind::RequestIdTooLong => "request-id-too-long",
            RejectionKind::AccessSetTooLarge => "access-set-too-large",
            RejectionKind::KeyTooLong => "key-too-long",
            RejectionKind::ShuttingDown => "shutting-down",
            RejectionKind::Storage => "storage",
            RejectionKind::MalformedRequest => "malformed-request",
            RejectionKind::TooManyInvocations => "too-many-invocations",
            RejectionKind::Retry => "retry",
            RejectionKind::PluginQuarantined => "plugin-quarantined",
            RejectionKind::UnknownSession => "unknown-session",
            RejectionKind::SequenceAcknowledged => "sequence-acknowledged",
            RejectionKind::SessionFull => "session-full",
            RejectionKind::TooManySessions => "too-many-sessions",
            RejectionKind::Unrecognized(ordinal) => return write!(f, "rejection-kind-{ordinal}"),
        };
        f.write_str(name)
    }
}

/// The outcome of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeResult {
    /// The transaction ran and all of its writes are durable.
    Committed {
        timestamp: Timestamp,
        /// The output in the plugin's binary encoding.
        output: Vec<u8>,
        /// The output as JSON, when the request sent JSON arguments.
        output_json: Option<String>,
    },
    /// The transaction ran and was aborted; none of its writes happened. Final: a retry
    /// under the same request id returns this again.
    Aborted { timestamp: Timestamp, kind: AbortKind, message: String },
    /// The request was refused before it ran; nothing was executed or recorded.
    Rejected { kind: RejectionKind, message: String },
}

impl InvokeResult {
    pub fn is_committed(&self) -> bool {
        matches!(self, InvokeResult::Committed { .. })
    }

    /// Where the transaction sits in the serial order; `None` when it never ran.
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self {
            InvokeResult::Committed { timestamp, .. } | InvokeResult::Aborted { timestamp, .. } => Some(*timestamp),
            InvokeResult::Rejected { .. } => None,
        }
    }
}

/// What a deployed plugin declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub build_info: String,
    /// Content hash of the library (hex), which tells two builds apart.
    pub digest: String,
    pub tables: Vec<TableInfo>,
    pub workflows: Vec<String>,
}

/// One table of a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    /// The largest value the table stores.
    pub value_bytes_max: u32,
    /// The table's number in storage keys (see [`LeaseTable`]), the same on every node.
    pub table_id: u32,
}

/// Where every key of a cluster is held, as a node reported it: the keys whose lease
/// moved away from their home node, and the home rule for all others
/// (`leasehold-keyspace`, the rule the nodes use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    /// Nodes of the cluster (1 for a single node).
    pub node_count: u16,
    /// Equal for tables that place every key alike; redirects carry the node's.
    pub digest: u64,
    /// Client addresses by node id.
    pub client_addresses: Vec<String>,
    /// Storage keys held away from their home node, with their holders.
    pub moved: std::collections::HashMap<Vec<u8>, u16>,
}

impl LeaseTable {
    /// The node that holds the key with this storage key
    /// ([`leasehold_keyspace::storage_key`]).
    pub fn holder(&self, storage_key: &[u8]) -> u16 {
        match self.moved.get(storage_key) {
            Some(&holder) => holder,
            None => leasehold_keyspace::home_node(storage_key, self.node_count.max(1)),
        }
    }
}

/// A key a request will use, named as the plugin names it: what a routing client
/// ([`crate::ClusterClient`]) looks up in its lease table to pick the node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutingKey {
    /// A table of the invocation's plugin.
    pub table: String,
    /// The key's bytes, exactly as the plugin's planner declares them.
    pub key: Vec<u8>,
}

impl RoutingKey {
    pub fn new(table: impl Into<String>, key: impl Into<Vec<u8>>) -> RoutingKey {
        RoutingKey { table: table.into(), key: key.into() }
    }
}

/// A node's view of itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStatus {
    pub node: u16,
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
    /// The concurrency control protocol the node runs.
    pub cc: String,
    /// When epochs are forced to disk.
    pub fsync: String,
    /// Nodes in the node's cluster (1 for a single node).
    pub cluster_nodes: u16,
    /// The generation of the cluster view the node runs in (the sum of every node's incarnation); it grows whenever a node restarts. 0 for a single node.
    pub cluster_generation: u64,
    /// Whether the node agreed on the current view with every peer and runs epochs (a node waiting for a restarted peer shows false). Always true for a single node.
    pub cluster_synced: bool,
    /// A digest of the node's lease table: nodes that agree on every key's holder show the same digest.
    pub lease_table_digest: u64,
    /// Keys of this node lent to another node for a running transaction (0 when idle).
    pub leases_lent: u64,
    /// Key accesses of this node's transactions to keys it holds, since it started.
    pub local_accesses: u64,
    /// Key accesses of this node's transactions to keys other nodes hold, since it started.
    pub remote_accesses: u64,
    /// Write-backs this node refused because they carried a stale lease (fencing).
    pub fenced_total: u64,
    /// The fabric backend between the nodes ("shm", "tcp", "rdma"), or "none" for a single node.
    pub fabric: String,
    /// Leases this node gave up to another node by affinity placement, since it started.
    pub lease_moves_total: u64,
    /// Value bytes this node sent along with the leases it gave up, since it started.
    pub bytes_migrated_total: u64,
    /// Transactions the concurrency control aborted and ran again (2pl: died under wait-die; occ: a write lock or the read validation failed). Always 0 under leases.
    pub concurrency_retries_total: u64,
    /// Requests this node forwarded to the node holding most of their keys, since it started.
    pub forwarded_total: u64,
    /// Requests other nodes forwarded to this node, since it started.
    pub forwards_received_total: u64,
    /// This node's decayed count of transactions run (the load routing weighs).
    pub transactions_decayed: f64,
    /// Requests from routing clients this node answered with a redirect because their lease table was stale, since it started.
    pub redirected_total: u64,
    /// Plugin calls running longer than the node's `plugin_call_warn_ms`, one line each.
    pub overdue_plugin_calls: Vec<String>,
    /// Plugin calls the node abandoned (their plugins quarantined), since it started.
    pub abandoned_plugin_calls: u64,
}
