//! Node configuration: a TOML file, overridden by command-line flags and `LEASEHOLD_*`
//! environment variables (flags win over the environment, both over the file).

use crate::model::NodeId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// When the commit of an epoch is forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// fsync the write-ahead log once per epoch (group commit) before any reply of it is
    /// released: an acknowledged transaction survives a machine crash.
    EveryEpoch,
    /// Write the epoch to the write-ahead log without fsync before replying: an
    /// acknowledged transaction survives a process crash, but a machine crash may lose the
    /// last moments.
    Asynchronous,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::EveryEpoch => "every-epoch",
            FsyncPolicy::Asynchronous => "asynchronous",
        }
    }
}

/// Which concurrency control runs transactions (DESIGN §5): the lease protocol, or one of
/// the baselines it is compared with over the same plugins and storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum ConcurrencyControl {
    /// Epochs, a task precedence graph and per-key leases.
    #[default]
    #[serde(rename = "lease")]
    #[value(name = "lease")]
    Lease,
    /// Beldi-style two-phase locking with wait-die.
    #[serde(rename = "2pl")]
    #[value(name = "2pl")]
    TwoPhaseLocking,
    /// Boki/FaRM-style optimistic concurrency control.
    #[serde(rename = "occ")]
    #[value(name = "occ")]
    Optimistic,
}

impl ConcurrencyControl {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyControl::Lease => "lease",
            ConcurrencyControl::TwoPhaseLocking => "2pl",
            ConcurrencyControl::Optimistic => "occ",
        }
    }
}

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node_id: NodeId,
    /// RocksDB and deployed plugins live here.
    pub data_dir: PathBuf,
    /// Cap'n Proto client API.
    pub client_address: SocketAddr,
    /// Prometheus metrics endpoint; none when absent.
    pub metrics_address: Option<SocketAddr>,
    pub fsync: FsyncPolicy,
    /// Threads that execute transactions.
    pub executor_threads: usize,
    /// Threads that serve RPC connections.
    pub rpc_threads: usize,
    /// An epoch closes when it holds this many transactions, even if more are waiting.
    /// The requests of one `invokeMany` message that run here are never split between
    /// epochs, so an epoch may exceed this by less than one message.
    pub epoch_transactions_max: usize,
    /// Once a request is waiting, an epoch closes after at most this long. Under load an
    /// epoch is closed as soon as the previous one has executed, so this only bounds how
    /// long an idle node lingers to gather a batch (0: never linger).
    pub epoch_linger_us: u64,
    /// How often logged epochs are folded into the tables. Longer intervals write hot
    /// keys less often but make the log (and a restart's replay) longer.
    pub checkpoint_interval_ms: u64,
    /// Largest Cap'n Proto message a client may send.
    pub message_bytes_max: usize,
    /// Most invocations in one `invokeMany` call.
    pub invocations_per_message_max: usize,
    /// Most keys in one transaction's access set.
    pub access_set_keys_max: usize,
    /// Longest key.
    pub key_bytes_max: usize,
    /// Completed request ids kept in memory for fast retries: between half of this and
    /// this many, the most recent (older ones are read from RocksDB). The ledger keeps
    /// three hash tables sized for 5/8 of this many ids each, whatever the load: the
    /// current and previous generations and an emptied spare (see `txn::ledger`).
    pub recent_results_max: usize,
    /// How long a request id's outcome is kept for retries (a retry after that may run
    /// the request again); also how long an idle client session stays open.
    pub request_id_retention_hours: u64,
    /// Client sessions a single node keeps open at most (`openSession` is refused beyond,
    /// once idle ones expired).
    pub sessions_max: usize,
    /// Unacknowledged outcomes one session may hold: a client's requests in flight plus
    /// answers it has not acknowledged yet. Beyond, its new requests are refused until it
    /// acknowledges.
    pub session_outcomes_max: usize,
    /// Unacknowledged outcomes all sessions together may hold: with `sessions_max` and
    /// `session_outcomes_max`, what bounds the memory sessions take whatever clients do
    /// (an outcome is its output plus about 100 bytes).
    pub session_outcomes_total_max: usize,
    /// A file holding the shared token clients must present (its contents, trimmed of
    /// surrounding whitespace). A file rather than a value keeps the secret out of `ps`,
    /// the environment and config files that get shared. None: any client is accepted.
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain of the client API: with it (and `tls_key_file`) the node
    /// speaks TLS only on its client address. None: plain TCP.
    pub tls_certificate_file: Option<PathBuf>,
    /// PEM private key of `tls_certificate_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s) for mutual TLS: clients must present a certificate signed by
    /// one of them. Needs `tls_certificate_file`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// The cluster file (see `cluster::ClusterSpec`). With one, the node runs as node
    /// `node_id` of that cluster and takes its client address, data directory and metrics
    /// address from its entry there. Without one, it runs alone.
    pub cluster_file: Option<PathBuf>,
    /// In a cluster: move a key's lease to the node whose transactions use it most
    /// (affinity placement). Off: every key stays on its home node (hash placement).
    pub placement: bool,
    /// A node takes a key's lease only when its (decayed) access count exceeds the
    /// holder's by this fraction (hysteresis), ...
    pub placement_margin: f64,
    /// ... and reaches at least this count.
    pub placement_count_min: f64,
    /// Access counts halve every this many epochs, so placement follows a changing
    /// workload.
    pub placement_half_life_epochs: f64,
    /// In a cluster: a node that receives a request whose keys are mostly held elsewhere
    /// runs it on the best node instead (request routing; only requests with an id).
    pub forwarding: bool,
    /// Weight of the share of a request's keys a node holds, in the routing score ...
    pub routing_affinity_weight: f64,
    /// ... and of the node's spare load (1 - its decayed transactions / the busiest's).
    pub routing_load_weight: f64,
    /// The concurrency control (`lease`, `2pl` or `occ`), for a single node or for every
    /// node of a cluster (all nodes must run the same). In a cluster the baselines keep
    /// every key on its home node and run a request with an id at the id's holder.
    pub cc: ConcurrencyControl,
    /// A plugin function call running longer than this is reported (log, metric, status).
    pub plugin_call_warn_ms: u64,
    /// A plugin function call running longer than this is abandoned: its transaction
    /// aborts (`plugin-timed-out`), its epoch and the other plugins go on, and its plugin
    /// is quarantined until a new version is deployed. 0: never (calls are only
    /// reported). The lease mode abandons calls, on a single node and in a cluster, and
    /// so do the single-node baselines; the baselines of a cluster only report them.
    pub plugin_call_abandon_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_id: 0,
            data_dir: PathBuf::from("leasehold-data"),
            client_address: "127.0.0.1:7420".parse().expect("valid literal address"),
            metrics_address: None,
            fsync: FsyncPolicy::EveryEpoch,
            executor_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            rpc_threads: 1,
            epoch_transactions_max: 20_000,
            epoch_linger_us: 0,
            checkpoint_interval_ms: 1000,
            message_bytes_max: 64 << 20,
            invocations_per_message_max: 10_000,
            access_set_keys_max: 200_000,
            key_bytes_max: 1024,
            recent_results_max: 1_000_000,
            request_id_retention_hours: 7 * 24,
            sessions_max: 10_000,
            session_outcomes_max: 65_536,
            session_outcomes_total_max: 4_000_000,
            auth_token_file: None,
            tls_certificate_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            cluster_file: None,
            placement: true,
            placement_margin: 0.5,
            placement_count_min: 4.0,
            placement_half_life_epochs: 50.0,
            forwarding: true,
            routing_affinity_weight: 0.5,
            routing_load_weight: 0.5,
            cc: ConcurrencyControl::Lease,
            plugin_call_warn_ms: 10_000,
            plugin_call_abandon_ms: 30_000,
        }
    }
}

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read auth_token_file {path}: {source}")]
    TokenRead { path: PathBuf, source: std::io::Error },
    #[error("auth_token_file {path} is empty (or only whitespace); put the shared token in it")]
    TokenEmpty { path: PathBuf },
    #[error(transparent)]
    Cluster(#[from] Box<crate::cluster::ClusterError>),
}

/// The shared token clients must present. Its `Debug` does not show it, so that it never
/// ends up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Vec<u8>);

impl AuthToken {
    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(token: &[u8]) -> AuthToken {
        AuthToken(token.to_vec())
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthToken({} bytes)", self.0.len())
    }
}

/// Reads a token file: its contents without surrounding whitespace (editors and `echo`
/// add a final newline that is not part of the secret). An empty token is refused rather
/// than silently turning authentication off.
pub fn read_token_file(path: &Path) -> Result<AuthToken, ConfigError> {
    let contents = std::fs::read(path).map_err(|source| ConfigError::TokenRead { path: path.into(), source })?;
    let token = contents.trim_ascii();
    if token.is_empty() {
        return Err(ConfigError::TokenEmpty { path: path.into() });
    }
    Ok(AuthToken(token.to_vec()))
}

impl Config {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are refused.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
    }

    /// Checks values that would make the node misbehave rather than fail clearly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("executor_threads", self.executor_threads),
            ("rpc_threads", self.rpc_threads),
            ("epoch_transactions_max", self.epoch_transactions_max),
            ("message_bytes_max", self.message_bytes_max),
            ("invocations_per_message_max", self.invocations_per_message_max),
            ("access_set_keys_max", self.access_set_keys_max),
            ("key_bytes_max", self.key_bytes_max),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms as usize),
            ("request_id_retention_hours", self.request_id_retention_hours as usize),
            ("sessions_max", self.sessions_max),
            ("session_outcomes_max", self.session_outcomes_max),
            ("session_outcomes_total_max", self.session_outcomes_total_max),
            ("plugin_call_warn_ms", self.plugin_call_warn_ms as usize),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.tls_certificate_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "tls_certificate_file and tls_key_file go together: set both for TLS, or neither".into(),
            ));
        }
        if self.tls_client_ca_file.is_some() && self.tls_certificate_file.is_none() {
            return Err(ConfigError::Invalid(
                "tls_client_ca_file (mutual TLS) needs tls_certificate_file and tls_key_file".into(),
            ));
        }
        let placement_valid = self.placement_margin >= 0.0
            && self.placement_count_min >= 1.0
            && self.placement_half_life_epochs > 0.0
            && [self.placement_margin, self.placement_count_min, self.placement_half_life_epochs]
                .iter()
                .all(|value| value.is_finite());
        if !placement_valid {
            return Err(ConfigError::Invalid(
                "placement_margin must be >= 0, placement_count_min >= 1 and placement_half_life_epochs > 0".into(),
            ));
        }
        let weights = [self.routing_affinity_weight, self.routing_load_weight];
        if !weights.iter().all(|weight| weight.is_finite() && *weight >= 0.0) || weights.iter().sum::<f64>() <= 0.0 {
            return Err(ConfigError::Invalid(
                "routing_affinity_weight and routing_load_weight must be >= 0 and not both 0".into(),
            ));
        }
        // Read here too, so that a bad token file stops the node before it opens its
        // database rather than after.
        self.auth_token()?;
        Ok(())
    }

    /// The routing score's weights.
    pub fn routing_config(&self) -> crate::cluster::routing::RoutingConfig {
        crate::cluster::routing::RoutingConfig {
            affinity_weight: self.routing_affinity_weight,
            load_weight: self.routing_load_weight,
        }
    }

    /// How long a plugin call may run before it is abandoned, or `None` for never.
    pub fn plugin_call_abandon_after(&self) -> Option<std::time::Duration> {
        (self.plugin_call_abandon_ms > 0).then(|| std::time::Duration::from_millis(self.plugin_call_abandon_ms))
    }

    /// The placement settings, or `None` when placement is off.
    pub fn placement_config(&self) -> Option<crate::cluster::placement::PlacementConfig> {
        // Affinity placement belongs to the lease protocol; the baselines keep every key
        // on its home node.
        (self.placement && self.cc == ConcurrencyControl::Lease).then(|| crate::cluster::placement::PlacementConfig {
            margin: self.placement_margin,
            count_min: self.placement_count_min,
            half_life_epochs: self.placement_half_life_epochs,
            ..Default::default()
        })
    }

    /// Takes this node's addresses and data directory from the cluster file, if any.
    pub fn apply_cluster_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.cluster_file else { return Ok(()) };
        let spec = crate::cluster::ClusterSpec::from_file(path).map_err(Box::new)?;
        let entry = spec.node(self.node_id).ok_or_else(|| {
            Box::new(crate::cluster::ClusterError::UnknownNode { node: self.node_id, path: path.clone() })
        })?;
        self.client_address = entry.client_address;
        if let Some(directory) = &entry.data_dir {
            self.data_dir = directory.clone();
        }
        if entry.metrics_address.is_some() {
            self.metrics_address = entry.metrics_address;
        }
        Ok(())
    }

    /// The configured client token, read from `auth_token_file`; `None` when no file is
    /// configured (the node then accepts every client).
    pub fn auth_token(&self) -> Result<Option<AuthToken>, ConfigError> {
        self.auth_token_file.as_deref().map(read_token_file).transpose()
    }
}

/// Command-line flags (each also readable from a `LEASEHOLD_*` environment variable)
/// that override the configuration file. Shared by `leasehold-engine` and the
/// `leasehold` CLI's embedded node.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigOverrides {
    /// TOML configuration file; flags and environment override it.
    #[arg(long, env = "LEASEHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "LEASEHOLD_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// Directory for RocksDB and deployed plugins.
    #[arg(long, env = "LEASEHOLD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Cap'n Proto client API (port 0 picks a free port).
    #[arg(long, env = "LEASEHOLD_CLIENT_ADDRESS")]
    pub client_address: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "LEASEHOLD_METRICS_ADDRESS")]
    pub metrics_address: Option<SocketAddr>,
    /// When epochs are forced to disk.
    #[arg(long, env = "LEASEHOLD_FSYNC", value_enum)]
    pub fsync: Option<FsyncPolicy>,
    #[arg(long, env = "LEASEHOLD_EXECUTOR_THREADS")]
    pub executor_threads: Option<usize>,
    #[arg(long, env = "LEASEHOLD_RPC_THREADS")]
    pub rpc_threads: Option<usize>,
    #[arg(long, env = "LEASEHOLD_EPOCH_TRANSACTIONS_MAX")]
    pub epoch_transactions_max: Option<usize>,
    #[arg(long, env = "LEASEHOLD_EPOCH_LINGER_US")]
    pub epoch_linger_us: Option<u64>,
    /// File holding the shared token clients must present (trimmed); without one any
    /// client is accepted.
    #[arg(long, env = "LEASEHOLD_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain: the client API then speaks TLS only (with --tls-key-file).
    #[arg(long, env = "LEASEHOLD_TLS_CERTIFICATE_FILE")]
    pub tls_certificate_file: Option<PathBuf>,
    /// PEM private key of --tls-certificate-file.
    #[arg(long, env = "LEASEHOLD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "LEASEHOLD_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Affinity placement in a cluster (`--placement false`: static hash placement).
    #[arg(long, env = "LEASEHOLD_PLACEMENT")]
    pub placement: Option<bool>,
    /// Request forwarding in a cluster (`--forwarding false`: every request runs where it
    /// arrived).
    #[arg(long, env = "LEASEHOLD_FORWARDING")]
    pub forwarding: Option<bool>,
    /// Cluster file: run as node `--node-id` of that cluster (addresses and data
    /// directory come from its entry).
    #[arg(long, env = "LEASEHOLD_CLUSTER_FILE")]
    pub cluster_file: Option<PathBuf>,
    /// Concurrency control: the lease protocol, or a baseline for comparison.
    #[arg(long, env = "LEASEHOLD_CC", value_enum)]
    pub cc: Option<ConcurrencyControl>,
    /// Report a plugin function call that runs longer than this (milliseconds).
    #[arg(long, env = "LEASEHOLD_PLUGIN_CALL_WARN_MS")]
    pub plugin_call_warn_ms: Option<u64>,
    /// Abandon a plugin function call that runs longer than this (milliseconds; 0: never)
    /// and quarantine its plugin.
    #[arg(long, env = "LEASEHOLD_PLUGIN_CALL_ABANDON_MS")]
    pub plugin_call_abandon_ms: Option<u64>,
}

impl ConfigOverrides {
    /// The file's configuration (or the defaults) with these overrides applied, checked.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(value) = self.node_id {
            config.node_id = value;
        }
        if let Some(value) = &self.data_dir {
            config.data_dir = value.clone();
        }
        if let Some(value) = self.client_address {
            config.client_address = value;
        }
        if let Some(value) = self.metrics_address {
            config.metrics_address = Some(value);
        }
        if let Some(value) = self.fsync {
            config.fsync = value;
        }
        if let Some(value) = self.executor_threads {
            config.executor_threads = value;
        }
        if let Some(value) = self.rpc_threads {
            config.rpc_threads = value;
        }
        if let Some(value) = self.epoch_transactions_max {
            config.epoch_transactions_max = value;
        }
        if let Some(value) = self.epoch_linger_us {
            config.epoch_linger_us = value;
        }
        if let Some(value) = &self.auth_token_file {
            config.auth_token_file = Some(value.clone());
        }
        for (value, field) in [
            (&self.tls_certificate_file, &mut config.tls_certificate_file),
            (&self.tls_key_file, &mut config.tls_key_file),
            (&self.tls_client_ca_file, &mut config.tls_client_ca_file),
        ] {
            if let Some(value) = value {
                *field = Some(value.clone());
            }
        }
        if let Some(value) = &self.cluster_file {
            config.cluster_file = Some(value.clone());
        }
        if let Some(value) = self.placement {
            config.placement = value;
        }
        if let Some(value) = self.forwarding {
            config.forwarding = value;
        }
        if let Some(value) = self.cc {
            config.cc = value;
        }
        if let Some(value) = self.plugin_call_warn_ms {
            config.plugin_call_warn_ms = value;
        }
        if let Some(value) = self.plugin_call_abandon_ms {
            config.plugin_call_abandon_ms = value;
        }
        config.apply_cluster_file()?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_are_read_and_flags_override_them() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("node.toml");
        std::fs::write(&path, "node_id = 3\nfsync = \"asynchronous\"\nexecutor_threads = 4\n").expect("write config");
        let overrides = ConfigOverrides { config: Some(path.clone()), executor_threads: Some(1), ..Default::default() };
        let config = overrides.resolve().expect("valid config");
        assert_eq!(config.node_id, 3);
        assert_eq!(config.fsync, FsyncPolicy::Asynchronous);
        assert_eq!(config.executor_threads, 1);
        assert_eq!(config.epoch_transactions_max, Config::default().epoch_transactions_max);
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("node.toml");
        std::fs::write(&path, "executor_thread = 4\n").expect("write config");
        let error = Config::from_file(&path).expect_err("misspelt key must be refused");
        assert!(error.to_string().contains("executor_thread"), "{error}");
        let overrides = ConfigOverrides { executor_threads: Some(0), ..Default::default() };
        assert!(matches!(overrides.resolve(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn the_concurrency_control_comes_from_the_file_or_the_flag_and_defaults_to_leases() {
        assert_eq!(Config::default().cc, ConcurrencyControl::Lease);
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("node.toml");
        std::fs::write(&path, "cc = \"occ\"\n").expect("write config");
        let from_file = ConfigOverrides { config: Some(path.clone()), ..Default::default() };
        assert_eq!(from_file.resolve().expect("valid config").cc, ConcurrencyControl::Optimistic);
        let flag = ConfigOverrides { cc: Some(ConcurrencyControl::TwoPhaseLocking), ..from_file };
        assert_eq!(flag.resolve().expect("valid config").cc, ConcurrencyControl::TwoPhaseLocking);
        std::fs::write(&path, "cc = \"2PL\"\n").expect("write config");
        let error = Config::from_file(&path).expect_err("an unknown protocol must be refused");
        assert!(error.to_string().contains("2PL"), "{error}");
        let names: Vec<&str> =
            [ConcurrencyControl::Lease, ConcurrencyControl::TwoPhaseLocking, ConcurrencyControl::Optimistic]
                .iter()
                .map(|cc| cc.as_str())
                .collect();
        assert_eq!(names, ["lease", "2pl", "occ"]);
    }

    #[test]
    fn every_concurrency_control_runs_in_a_cluster() {
        let cluster = Config { cluster_file: Some(PathBuf::from("cluster.toml")), ..Config::default() };
        for cc in [ConcurrencyControl::Lease, ConcurrencyControl::TwoPhaseLocking, ConcurrencyControl::Optimistic] {
            Config { cc, ..cluster.clone() }.validate().expect("valid in a cluster");
        }
    }

    #[test]
    fn the_token_file_is_trimmed_and_must_hold_a_token() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("token");
        std::fs::write(&path, "  s3cret\n").expect("write token");
        let overrides = ConfigOverrides { auth_token_file: Some(path.clone()), ..Default::default() };
        let config = overrides.resolve().expect("valid config");
        let token = config.auth_token().expect("readable").expect("configured");
        assert_eq!(token.as_bytes(), b"s3cret");
        assert!(!format!("{token:?}").contains("s3cret"), "Debug must not show the token");
        assert!(Config::default().auth_token().expect("nothing to read").is_none());

        std::fs::write(&path, " \n").expect("write token");
        let error = overrides.resolve().expect_err("an empty token file must be refused");
        assert!(matches!(error, ConfigError::TokenEmpty { .. }), "{error}");
        let missing = ConfigOverrides { auth_token_file: Some(directory.path().join("absent")), ..Default::default() };
        let error = missing.resolve().expect_err("a missing token file must be refused");
        assert!(matches!(error, ConfigError::TokenRead { .. }) && error.to_string().contains("absent"), "{error}");
    }

    #[test]
    fn tls_files_are_checked_together() {
        let certificate = Some(PathBuf::from("node.pem"));
        let key = Some(PathBuf::from("node.key"));
        let both = Config { tls_certificate_file: certificate.clone(), tls_key_file: key.clone(), ..Config::default() };
        both.validate().expect("a certificate with its key");
        Config { tls_client_ca_file: Some(PathBuf::from("ca.pem")), ..both.clone() }.validate().expect("mutual TLS");
        for lonely in [
            Config { tls_key_file: None, ..both.clone() },
            Config { tls_certificate_file: None, ..both.clone() },
            Config { tls_client_ca_file: Some(PathBuf::from("ca.pem")), ..Config::default() },
        ] {
            let error = lonely.validate().expect_err("an incomplete TLS setup is refused");
            assert!(matches!(error, ConfigError::Invalid(_)) && error.to_string().contains("tls_"), "{error}");
        }
    }
}
