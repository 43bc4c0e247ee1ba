//! Observability: metric names, the Prometheus endpoint, and log setup. Metrics are
//! recorded per epoch, not per transaction, to keep the hot path free of them.

use std::net::SocketAddr;

pub const COMMITTED_TOTAL: &str = "leasehold_transactions_committed_total";
pub const ABORTED_TOTAL: &str = "leasehold_transactions_aborted_total";
pub const REJECTED_TOTAL: &str = "leasehold_requests_rejected_total";
pub const EPOCH_TRANSACTIONS: &str = "leasehold_epoch_transactions";
pub const EPOCH_EXECUTION_SECONDS: &str = "leasehold_epoch_execution_seconds";
pub const EPOCH_LATENCY_SECONDS: &str = "leasehold_epoch_latency_seconds";
pub const COMMIT_SECONDS: &str = "leasehold_commit_seconds";
pub const GROUP_COMMIT_EPOCHS: &str = "leasehold_group_commit_epochs";
pub const CHECKPOINT_SECONDS: &str = "leasehold_checkpoint_seconds";
pub const PLUGIN_DEPLOYS_TOTAL: &str = "leasehold_plugin_deploys_total";
pub const AUTHENTICATION_FAILURES_TOTAL: &str = "leasehold_authentication_failures_total";
pub const LOCAL_ACCESSES_TOTAL: &str = "leasehold_local_accesses_total";
pub const REMOTE_ACCESSES_TOTAL: &str = "leasehold_remote_accesses_total";
pub const EPOCH_BARRIER_SECONDS: &str = "leasehold_epoch_barrier_seconds";
pub const FENCED_TOTAL: &str = "leasehold_fenced_write_backs_total";
pub const LEASE_MOVES_TOTAL: &str = "leasehold_lease_moves_total";
pub const BYTES_MIGRATED_TOTAL: &str = "leasehold_bytes_migrated_total";
pub const CONCURRENCY_RETRIES_TOTAL: &str = "leasehold_concurrency_retries_total";
pub const FORWARDED_TOTAL: &str = "leasehold_requests_forwarded_total";
pub const REDIRECTED_TOTAL: &str = "leasehold_requests_redirected_total";
pub const PLUGIN_CALLS_OVERDUE: &str = "leasehold_plugin_calls_overdue";
pub const PLUGIN_CALLS_ABANDONED_TOTAL: &str = "leasehold_plugin_calls_abandoned_total";

/// Errors starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the metrics endpoint on {address}: {message}")]
pub struct MetricsError {
    address: SocketAddr,
    message: String,
}

/// Starts the Prometheus endpoint on `address` and describes the metrics.
pub fn install_prometheus(address: SocketAddr) -> Result<(), MetricsError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .install()
        .map_err(|error| MetricsError { address, message: error.to_string() })?;
    describe();
    Ok(())
}

fn describe() {
    metrics::describe_counter!(COMMITTED_TOTAL, "Transactions that committed.");
    metrics::describe_counter!(
        ABORTED_TOTAL,
        "Transactions that aborted (logic, undeclared access, panic, oversized value)."
    );
    metrics::describe_counter!(
        REJECTED_TOTAL,
        "Requests refused before running (unknown workflow, bad arguments, ...)."
    );
    metrics::describe_histogram!(EPOCH_TRANSACTIONS, "Transactions per epoch.");
    metrics::describe_histogram!(
        EPOCH_EXECUTION_SECONDS,
        "Time from closing an epoch to handing it to the commit thread."
    );
    metrics::describe_histogram!(EPOCH_LATENCY_SECONDS, "Time from closing an epoch to releasing its replies.");
    metrics::describe_histogram!(COMMIT_SECONDS, "Time to write (and fsync) one group of epochs.");
    metrics::describe_histogram!(GROUP_COMMIT_EPOCHS, "Epochs made durable by one group commit.");
    metrics::describe_histogram!(CHECKPOINT_SECONDS, "Time to fold logged epochs into the tables.");
    metrics::describe_counter!(PLUGIN_DEPLOYS_TOTAL, "Plugin deploys that succeeded.");
    metrics::describe_counter!(AUTHENTICATION_FAILURES_TOTAL, "Client authentications refused for a wrong token.");
    metrics::describe_counter!(LOCAL_ACCESSES_TOTAL, "Key accesses of this node's transactions to keys it holds.");
    metrics::describe_counter!(
        REMOTE_ACCESSES_TOTAL,
        "Key accesses of this node's transactions to keys held elsewhere."
    );
    metrics::describe_histogram!(EPOCH_BARRIER_SECONDS, "Time from sending an epoch's batches to having every peer's.");
    metrics::describe_counter!(FORWARDED_TOTAL, "Requests this node sent to the node holding most of their keys.");
    metrics::describe_counter!(
        REDIRECTED_TOTAL,
        "Requests from routing clients answered with a redirect because their lease table was stale."
    );
    metrics::describe_gauge!(
        PLUGIN_CALLS_OVERDUE,
        "Plugin function calls running longer than plugin_call_warn_ms (an endless loop holds its executor)."
    );
    metrics::describe_counter!(
        PLUGIN_CALLS_ABANDONED_TOTAL,
        "Plugin function calls abandoned after plugin_call_abandon_ms (their plugins are quarantined)."
    );
    metrics::describe_counter!(LEASE_MOVES_TOTAL, "Leases this node gave up to the node that uses their keys most.");
    metrics::describe_counter!(BYTES_MIGRATED_TOTAL, "Value bytes this node sent along with leases it gave up.");
    metrics::describe_counter!(FENCED_TOTAL, "Write-backs refused for a stale lease word or lease epoch (fencing).");
    metrics::describe_counter!(
        CONCURRENCY_RETRIES_TOTAL,
        "Transactions a baseline concurrency control (2pl: wait-die, occ: validation) aborted and ran again."
    );
}

/// Sends `tracing` logs to stderr, filtered by `RUST_LOG` or else by `default_filter`
/// (for example `"info"`). For the engine's binaries; a library user sets up their own.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
