//! The peers Leasehold is measured against (issue 6, item 3): Redis with the transfer as a
//! Redis Function and PostgreSQL with the transfer as a SERIALIZABLE stored function, each
//! started by the harness on loopback in a temporary directory and stopped afterwards.
//!
//! This module owns what the peers share: the transfer triples and their generator (the
//! same seeded key streams as [`crate::workload::Generator`]), the durability modes
//! matched to Leasehold's fsync policies, errors, and [`PeerReport`]. [`measure`] is the
//! closed-loop client driver, [`system`] finds, installs and runs server programs,
//! [`redis`] and [`postgres`] are the two peers and [`compare`] is the side-by-side table
//! of `leasehold compare`.

pub mod compare;
pub mod measure;
pub mod postgres;
pub mod redis;
pub mod system;

use crate::run::BenchConfig;
use crate::workload::{KeySampler, WorkloadKind};
use measure::{ClientShape, Measurement};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How durable an acknowledged transaction is, matched across the systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Flushed to disk before the reply: Leasehold `every-epoch`, Redis
    /// `appendfsync always`, PostgreSQL `synchronous_commit = on`.
    Fsync,
    /// Written but not flushed before the reply (a machine crash may lose the last moments):
    /// Leasehold `asynchronous`, Redis `appendfsync everysec`, PostgreSQL
    /// `synchronous_commit = off`.
    Async,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Async => "async",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Durability, String> {
        match text {
            "fsync" => Ok(Durability::Fsync),
            "async" => Ok(Durability::Async),
            other => Err(format!("unknown durability {other:?}: expected fsync or async")),
        }
    }
}

/// One transfer: move `amount` from account `from` to account `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub from: u64,
    pub to: u64,
    pub amount: i64,
}

/// How one transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    Committed,
    /// The source held less than the amount; nothing was written.
    Aborted,
}

/// One client's transfers, the same stream [`crate::workload::Generator`] sends to
/// Leasehold for the same workload, key count, theta, seed and client number (a unit test
/// holds the two together), as plain triples instead of plugin invocations.
pub struct TransferGenerator {
    rng: SmallRng,
    first: KeySampler,
    second: KeySampler,
    keys: u64,
}

impl TransferGenerator {
    pub fn new(kind: WorkloadKind, keys: u64, theta: f64, seed: u64, client: u32) -> TransferGenerator {
        // The seed scheme and the order of draws below are those of workload::Generator.
        let rng = SmallRng::seed_from_u64(seed ^ (u64::from(client) << 32) ^ 0x5EED);
        let (first, second) = match kind {
            WorkloadKind::Banking => (KeySampler::new(keys, theta), KeySampler::new(keys, theta)),
            WorkloadKind::YcsbT => (KeySampler::new(keys, 0.0), KeySampler::new(keys, theta)),
            // `leasehold compare` refuses these before any peer starts (is_transfer).
            WorkloadKind::Smallbank | WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => {
                panic!("the peers implement only transfer workloads")
            }
        };
        TransferGenerator { rng, first, second, keys }
    }

    pub fn next_transfer(&mut self) -> Transfer {
        let from = self.first.sample(&mut self.rng);
        let mut to = self.second.sample(&mut self.rng);
        if to == from {
            to = (to + 1) % self.keys;
        }
        let amount: i64 = self.rng.random_range(1..=10);
        Transfer { from, to, amount }
    }
}

/// Failures of a peer: installing, starting or talking to its server.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{program} is not installed and cannot be installed by this user; install it with: {hint}")]
    NotInstalled { program: String, hint: String },
    #[error("installing {package} did not provide {program}")]
    InstallIncomplete { package: String, program: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{command} failed ({status}): {output}")]
    CommandFailed { command: String, status: std::process::ExitStatus, output: String },
    #[error("{server} did not accept connections within {seconds} s; its log ends with:\n{log_tail}")]
    StartTimeout { server: String, seconds: u64, log_tail: String },
    #[error("{server} exited while starting ({status}); its log ends with:\n{log_tail}")]
    ExitedWhileStarting { server: String, status: std::process::ExitStatus, log_tail: String },
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("postgresql: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("unexpected reply from {server}: {detail}")]
    UnexpectedReply { server: &'static str, detail: String },
    #[error("{server} {version} is too old: {needed}")]
    UnsupportedVersion { server: &'static str, version: String, needed: &'static str },
    #[error("a transfer still failed after {retries} retries on serialization failures: {last_error}")]
    RetriesExhausted { retries: u64, last_error: String },
    #[error("{what} {value} does not fit the server's 64-bit signed integers")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("a client thread panicked")]
    ClientPanicked,
}

/// What a peer run measured, in the shape of [`crate::run::BenchReport`] plus what only
/// the peers have (the server's own settings, serialization retries).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerReport {
    /// The server and its version, e.g. `redis 7.0.15`.
    pub system: String,
    pub durability: Durability,
    /// The durability and isolation settings as the running server reported them.
    pub settings: String,
    pub connections: usize,
    /// Round trips in flight per connection and transfers per round trip.
    pub in_flight_per_connection: usize,
    pub transfers_per_round_trip: usize,
    pub config: BenchConfig,
    pub committed: u64,
    pub aborted: u64,
    /// Attempts repeated after a serialization failure (not counted as transactions).
    pub retries: u64,
    pub measured_seconds: f64,
    /// Committed and aborted transfers per second, as Leasehold's report counts them.
    pub throughput_per_second: f64,
    #[serde(flatten)]
    pub latency: crate::run::Latency,
    /// Sum of all balances before and after the run (transfers must keep it).
    pub sum_expected: Option<i64>,
    pub sum_found: Option<i64>,
}

impl PeerReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        system: String,
        durability: Durability,
        settings: String,
        shape: ClientShape,
        config: &BenchConfig,
        measurement: &Measurement,
        sum_expected: Option<i64>,
        sum_found: Option<i64>,
    ) -> PeerReport {
        let latency = &measurement.latency;
        let transactions = measurement.tally.committed + measurement.tally.aborted;
        PeerReport {
            system,
            durability,
            settings,
            connections: config.clients,
            in_flight_per_connection: shape.in_flight,
            transfers_per_round_trip: shape.batch,
            config: config.clone(),
            committed: measurement.tally.committed,
            aborted: measurement.tally.aborted,
            retries: measurement.tally.retries,
            measured_seconds: measurement.measured_seconds,
            throughput_per_second: transactions as f64 / measurement.measured_seconds.max(1e-9),
            latency: crate::run::Latency::of(latency),
            sum_expected,
            sum_found,
        }
    }

    /// `Some(false)` when the sum of balances changed, `None` when it was not checked.
    pub fn invariant_holds(&self) -> Option<bool> {
        Some(self.sum_expected? == self.sum_found?)
    }

    /// A human-readable summary, like [`crate::run::BenchReport::summary`].
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut text = format!(
            "{} ({}): workload {:?}, {} keys, theta {}, {} connections x {} in flight x {} per round trip\n",
            self.system,
            self.settings,
            c.workload,
            c.keys,
            c.theta,
            self.connections,
            self.in_flight_per_connection,
            self.transfers_per_round_trip,
        );
        text += &format!(
            "  {} committed, {} aborted, {} retries in {:.1} s: {:.0} transactions/s\n",
            self.committed, self.aborted, self.retries, self.measured_seconds, self.throughput_per_second
        );
        text += &self.latency.line();
        if let (Some(expected), Some(found)) = (self.sum_expected, self.sum_found) {
            let verdict = if expected == found { "holds" } else { "VIOLATED" };
            text += &format!("  invariant (sum of all values {expected}): found {found}, {verdict}\n");
        }
        text
    }
}

/// The sum of all balances right after loading.
pub(crate) fn expected_sum(config: &BenchConfig) -> Result<i64, PeerError> {
    account_id(config.keys)?
        .checked_mul(config.initial_value)
        .ok_or(PeerError::OutOfRange { what: "sum of initial balances for key count", value: config.keys })
}

/// An account id as the servers store it (64-bit signed).
pub(crate) fn account_id(id: u64) -> Result<i64, PeerError> {
    i64::try_from(id).map_err(|_| PeerError::OutOfRange { what: "account id", value: id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Generator;
    use leasehold_client::Arguments;

    /// Decodes the transfer a Leasehold invocation carries.
    fn leasehold_transfer(kind: WorkloadKind, arguments: &Arguments) -> Transfer {
        let Arguments::Encoded(bytes) = arguments else { panic!("the generator encodes its arguments") };
        match kind {
            WorkloadKind::Banking => {
                let t: leasehold_plugin_api::banking::Transfer =
                    leasehold_sdk::decode(bytes).expect("banking transfer");
                Transfer { from: t.from, to: t.to, amount: t.amount }
            }
            WorkloadKind::YcsbT => {
                let t: leasehold_plugin_api::ycsb_t::Transfer = leasehold_sdk::decode(bytes).expect("ycsb-t transfer");
                Transfer { from: t.a, to: t.b, amount: t.amount }
            }
            WorkloadKind::Smallbank | WorkloadKind::Travel | WorkloadKind::Movie | WorkloadKind::Social => {
                panic!("{kind:?} has no transfers")
            }
        }
    }

    #[test]
    fn peers_get_the_transfers_leasehold_gets() {
        for kind in [WorkloadKind::Banking, WorkloadKind::YcsbT] {
            for theta in [0.0, 0.99] {
                for client in [0u32, 3] {
                    let mut leasehold = Generator::new(kind, 1000, theta, 42, client, 7);
                    let mut peer = TransferGenerator::new(kind, 1000, theta, 42, client);
                    for _ in 0..2000 {
                        let expected = leasehold_transfer(kind, &leasehold.next_request().arguments);
                        assert_eq!(peer.next_transfer(), expected, "{kind:?} theta {theta} client {client}");
                    }
                }
            }
        }
    }

    #[test]
    fn durability_parses_both_modes_and_refuses_others() {
        assert_eq!("fsync".parse::<Durability>(), Ok(Durability::Fsync));
        assert_eq!("async".parse::<Durability>(), Ok(Durability::Async));
        assert!("always".parse::<Durability>().is_err());
    }
}
