//! The side-by-side result of `leasehold compare`: Leasehold's [`BenchReport`] and the
//! peers' [`PeerReport`]s for one workload and durability mode, the machine's load while
//! they ran (other work on a 2-core machine moves the numbers), the ratios issue 6 sets
//! targets for, and their rendering as a table or JSON.

use super::{Durability, PeerReport};
use crate::run::{BenchConfig, BenchReport};

/// A system `leasehold compare` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    Leasehold,
    Redis,
    Postgres,
}

impl std::str::FromStr for SystemKind {
    type Err = String;

    fn from_str(text: &str) -> Result<SystemKind, String> {
        match text {
            "leasehold" => Ok(SystemKind::Leasehold),
            "redis" => Ok(SystemKind::Redis),
            "postgres" | "postgresql" => Ok(SystemKind::Postgres),
            other => Err(format!("unknown system {other:?}: expected leasehold, redis or postgres")),
        }
    }
}

/// A system's report, or why it has none.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    Report(T),
    Failed(String),
}

impl<T, E: std::fmt::Display> From<Result<T, E>> for Outcome<T> {
    fn from(result: Result<T, E>) -> Outcome<T> {
        match result {
            Ok(report) => Outcome::Report(report),
            Err(error) => Outcome::Failed(error.to_string()),
        }
    }
}

impl<T> Outcome<T> {
    fn report(&self) -> Option<&T> {
        match self {
            Outcome::Report(report) => Some(report),
            Outcome::Failed(_) => None,
        }
    }
}

/// The machine the comparison ran on and how busy it was.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    /// 1-, 5- and 15-minute load averages from /proc/loadavg before and after the runs.
    pub load_average_before: Option<[f64; 3]>,
    pub load_average_after: Option<[f64; 3]>,
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|field| field.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

/// Leasehold over a peer: above 1 means Leasehold moved more transactions per second;
/// the p99 ratio below 1 means Leasehold's tail latency is lower.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ratio {
    pub throughput: f64,
    pub latency_p99: f64,
}

/// The figures a ratio is taken of.
#[derive(Clone, Copy)]
struct Figures {
    throughput_per_second: f64,
    latency_p99_us: u64,
}

impl Figures {
    fn of_leasehold(report: &BenchReport) -> Figures {
        Figures { throughput_per_second: report.throughput_per_second, latency_p99_us: report.latency.p99_us }
    }

    fn of_peer(report: &PeerReport) -> Figures {
        Figures { throughput_per_second: report.throughput_per_second, latency_p99_us: report.latency.p99_us }
    }
}

fn ratio(leasehold: Option<Figures>, peer: Option<Figures>) -> Option<Ratio> {
    let (leasehold, peer) = (leasehold?, peer?);
    Some(Ratio {
        throughput: leasehold.throughput_per_second / peer.throughput_per_second,
        latency_p99: leasehold.latency_p99_us as f64 / peer.latency_p99_us.max(1) as f64,
    })
}

/// Everything `leasehold compare` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub durability: Durability,
    pub config: BenchConfig,
    pub machine: Machine,
    /// `None`: the system was not selected.
    pub leasehold: Option<Outcome<BenchReport>>,
    pub redis: Option<Outcome<PeerReport>>,
    pub postgres: Option<Outcome<PeerReport>>,
    pub leasehold_over_redis: Option<Ratio>,
    pub leasehold_over_postgres: Option<Ratio>,
}

/// One line of the table.
struct Row {
    system: String,
    settings: String,
    shape: String,
    throughput: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    committed: u64,
    aborted: u64,
    retries: Option<u64>,
    invariant: &'static str,
}

fn verdict(expected: Option<i64>, found: Option<i64>) -> &'static str {
    match (expected, found) {
        (Some(expected), Some(found)) if expected == found => "holds",
        (Some(_), Some(_)) => "VIOLATED",
        _ => "unchecked",
    }
}

impl Comparison {
    pub fn new(
        durability: Durability,
        config: BenchConfig,
        load_average_before: Option<[f64; 3]>,
        leasehold: Option<Outcome<BenchReport>>,
        redis: Option<Outcome<PeerReport>>,
        postgres: Option<Outcome<PeerReport>>,
    ) -> Comparison {
        let leasehold_figures = leasehold.as_ref().and_then(Outcome::report).map(Figures::of_leasehold);
        let peer_figures =
            |peer: &Option<Outcome<PeerReport>>| peer.as_ref().and_then(Outcome::report).map(Figures::of_peer);
        let leasehold_over_redis = ratio(leasehold_figures, peer_figures(&redis));
        let leasehold_over_postgres = ratio(leasehold_figures, peer_figures(&postgres));
        Comparison {
            durability,
            config,
            machine: Machine { cores: cores(), load_average_before, load_average_after: load_average() },
            leasehold,
            redis,
            postgres,
            leasehold_over_redis,
            leasehold_over_postgres,
        }
    }

    /// One CSV row per system that produced a report, under [`Comparison::CSV_COLUMNS`]:
    /// what `leasehold plot` draws (`--series system`, x e.g. `clients` or `theta`).
    pub fn csv_rows(&self) -> Vec<Vec<(&'static str, String)>> {
        let c = &self.config;
        let load = self.machine.load_average_before.map(|load| format!("{:.2}", load[0])).unwrap_or_default();
        let row = |system: &str, throughput: f64, latency: &crate::run::Latency, invariant: &str| {
            let values = [
                system.to_string(),
                c.workload.plugin().to_string(),
                self.durability.as_str().to_string(),
                c.theta.to_string(),
                c.clients.to_string(),
                c.batch.to_string(),
                c.pipeline.to_string(),
                c.rate.map(|rate| rate.to_string()).unwrap_or_default(),
                c.duration.as_secs_f64().to_string(),
                format!("{throughput:.1}"),
                latency.p50_us.to_string(),
                latency.p99_us.to_string(),
                latency.p999_us.to_string(),
                invariant.to_string(),
                self.machine.cores.to_string(),
                load.clone(),
                crate::record::utc_timestamp(crate::record::unix_seconds_now()),
            ];
            Self::CSV_COLUMNS.iter().copied().zip(values).collect::<Vec<_>>()
        };
        let mut rows = Vec::new();
        if let Some(Outcome::Report(report)) = &self.leasehold {
            let invariant = verdict(report.sum_expected, report.sum_found);
            rows.push(row("leasehold", report.throughput_per_second, &report.latency, invariant));
        }
        for peer in [&self.redis, &self.postgres] {
            if let Some(Outcome::Report(report)) = peer {
                let invariant = verdict(report.sum_expected, report.sum_found);
                let system = report.system.split_whitespace().next().unwrap_or("peer");
                rows.push(row(system, report.throughput_per_second, &report.latency, invariant));
            }
        }
        rows
    }

    pub const CSV_COLUMNS: [&'static str; 17] = [
        "system",
        "workload",
        "durability",
        "theta",
        "clients",
        "batch",
        "pipeline",
        "rate",
        "duration_seconds",
        crate::plot::THROUGHPUT_COLUMN,
        "latency_p50_us",
        "latency_p99_us",
        "latency_p999_us",
        "invariant",
        "cores",
        "load_average_before",
        "recorded_at",
    ];

    /// Whether a system failed or broke the invariant (the command then exits non-zero).
    pub fn failed(&self) -> bool {
        let leasehold_failed = match &self.leasehold {
            Some(Outcome::Failed(_)) => true,
            Some(Outcome::Report(report)) => verdict(report.sum_expected, report.sum_found) == "VIOLATED",
            None => false,
        };
        let peer_failed = |outcome: &Option<Outcome<PeerReport>>| match outcome {
            Some(Outcome::Failed(_)) => true,
            Some(Outcome::Report(report)) => report.invariant_holds() == Some(false),
            None => false,
        };
        leasehold_failed || peer_failed(&self.redis) || peer_failed(&self.postgres)
    }

    /// The table: one line per system, then failures, ratios and the machine's load.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        if let Some(outcome) = &self.leasehold {
            match outcome {
                Outcome::Report(report) => rows.push(Row {
                    system: "leasehold".into(),
                    settings: match self.durability {
                        Durability::Fsync => "fsync every-epoch".into(),
                        Durability::Async => "fsync asynchronous".into(),
                    },
                    shape: format!("{}x{}x{}", c.clients, c.pipeline, c.batch),
                    throughput: report.throughput_per_second,
                    p50_us: report.latency.p50_us,
                    p99_us: report.latency.p99_us,
                    p999_us: report.latency.p999_us,
                    committed: report.committed,
                    aborted: report.aborted,
                    retries: None,
                    invariant: verdict(report.sum_expected, report.sum_found),
                }),
                Outcome::Failed(error) => failures.push(format!("leasehold failed: {error}")),
            }
        }
        for (name, outcome) in [("redis", &self.redis), ("postgresql", &self.postgres)] {
            match outcome {
                Some(Outcome::Report(report)) => rows.push(Row {
                    system: report.system.clone(),
                    settings: report.settings.clone(),
                    shape: format!(
                        "{}x{}x{}",
                        report.connections, report.in_flight_per_connection, report.transfers_per_round_trip
                    ),
                    throughput: report.throughput_per_second,
                    p50_us: report.latency.p50_us,
                    p99_us: report.latency.p99_us,
                    p999_us: report.latency.p999_us,
                    committed: report.committed,
                    aborted: report.aborted,
                    retries: Some(report.retries),
                    invariant: verdict(report.sum_expected, report.sum_found),
                }),
                Some(Outcome::Failed(error)) => failures.push(format!("{name} failed: {error}")),
                None => {}
            }
        }
        let mut text = format!(
            "workload {:?}: {} keys, theta {}, {} clients, {}, durability {}, {:.0} s measured after {:.0} s warm-up, seed {}\n",
            c.workload,
            c.keys,
            c.theta,
            c.clients,
            c.rate.map_or("closed loop".to_string(), |rate| format!("open loop at {rate:.0} transactions/s")),
            self.durability.as_str(),
            c.duration.as_secs_f64(),
            c.warmup.as_secs_f64(),
            c.seed,
        );
        text += &format!(
            "{:<20} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  {:<9} {}\n",
            "system",
            "tx/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "committed",
            "aborted",
            "retries",
            "in flight",
            "invariant",
            "settings"
        );
        for row in &rows {
            text += &format!(
                "{:<20} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>9} {:>9} {:>9}  {:<9} {}\n",
                row.system,
                row.throughput,
                row.p50_us as f64 / 1000.0,
                row.p99_us as f64 / 1000.0,
                row.p999_us as f64 / 1000.0,
                row.committed,
                row.aborted,
                row.retries.map_or("-".to_string(), |retries| retries.to_string()),
                row.shape,
                row.invariant,
                row.settings,
            );
        }
        for failure in &failures {
            text += &format!("{failure}\n");
        }
        for (peer, ratio) in [("redis", self.leasehold_over_redis), ("postgresql", self.leasehold_over_postgres)] {
            if let Some(ratio) = ratio {
                text += &format!(
                    "leasehold / {peer}: throughput {:.2}x, p99 latency {:.2}x\n",
                    ratio.throughput, ratio.latency_p99
                );
            }
        }
        text += "in flight: connections x round trips in flight per connection x transactions per round trip\n";
        let show = |load: Option<[f64; 3]>| {
            load.map_or("unknown".to_string(), |[one, five, fifteen]| format!("{one:.2} {five:.2} {fifteen:.2}"))
        };
        text += &format!(
            "machine: {} cores, load average before {}, after {}\n",
            self.machine.cores,
            show(self.machine.load_average_before),
            show(self.machine.load_average_after)
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadKind;
    use std::time::Duration;

    fn config() -> BenchConfig {
        BenchConfig {
            key_groups: 1,
            route_by_lease_table: false,
            request_ids_at_node: false,
            tracking: crate::run::Tracking::Sessions,
            workload: WorkloadKind::Banking,
            keys: 100,
            initial_value: 10,
            theta: 0.0,
            clients: 2,
            batch: 3,
            pipeline: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            rate: None,
            seed: 1,
            load: true,
        }
    }

    fn peer(throughput: f64, p99_us: u64, sum_found: i64) -> PeerReport {
        PeerReport {
            system: "redis 7.0.0".into(),
            durability: Durability::Fsync,
            settings: "appendfsync \"always\"".into(),
            connections: 2,
            in_flight_per_connection: 4,
            transfers_per_round_trip: 3,
            config: config(),
            committed: 10,
            aborted: 0,
            retries: 0,
            measured_seconds: 1.0,
            throughput_per_second: throughput,
            latency: crate::run::Latency { p50_us: 1, p90_us: 1, p99_us, p999_us: 1, max_us: 1 },
            sum_expected: Some(1000),
            sum_found: Some(sum_found),
        }
    }

    #[test]
    fn ratios_divide_leasehold_by_the_peer() {
        let leasehold = Figures { throughput_per_second: 300.0, latency_p99_us: 2000 };
        let ratio = ratio(Some(leasehold), Some(Figures::of_peer(&peer(100.0, 4000, 1000)))).expect("both ran");
        assert_eq!((ratio.throughput, ratio.latency_p99), (3.0, 0.5));
    }

    #[test]
    fn a_failed_peer_fails_the_comparison_and_is_shown() {
        let comparison = Comparison::new(
            Durability::Fsync,
            config(),
            None,
            None,
            Some(Outcome::Report(peer(100.0, 4000, 1000))),
            Some(Outcome::Failed("not installed".into())),
        );
        assert!(comparison.leasehold_over_redis.is_none(), "no ratio without leasehold");
        assert!(comparison.failed());
        let table = comparison.table();
        assert!(table.contains("postgresql failed: not installed"), "{table}");
        assert!(table.contains("redis 7.0.0"), "{table}");
    }

    #[test]
    fn csv_rows_are_what_plot_reads_one_per_system_that_ran() {
        let comparison = Comparison::new(
            Durability::Fsync,
            config(),
            Some([1.5, 1.0, 0.5]),
            None,
            Some(Outcome::Report(peer(100.0, 4000, 1000))),
            Some(Outcome::Failed("not installed".into())),
        );
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("compare.csv");
        for _ in 0..2 {
            crate::record::append_csv_rows(&path, &Comparison::CSV_COLUMNS, &comparison.csv_rows()).expect("append");
        }
        let table = crate::plot::parse_csv(&std::fs::read_to_string(&path).expect("read back")).expect("parse");
        assert_eq!(table.rows.len(), 2, "one row per run of the one system that reported");
        let column = |name: &str| table.column(name).expect("a column plot needs");
        let row = &table.rows[0].1;
        assert_eq!(row[column("system")], "redis");
        assert_eq!(row[column(crate::plot::THROUGHPUT_COLUMN)], "100.0");
        assert_eq!(row[column("latency_p99_us")], "4000");
        assert_eq!(row[column("clients")], "2");
        assert_eq!((row[column("durability")].as_str(), row[column("invariant")].as_str()), ("fsync", "holds"));
    }

    #[test]
    fn a_changed_sum_fails_the_comparison() {
        let comparison = Comparison::new(
            Durability::Async,
            config(),
            None,
            None,
            Some(Outcome::Report(peer(100.0, 4000, 999))),
            None,
        );
        assert!(comparison.failed());
        assert!(comparison.table().contains("VIOLATED"));
    }
}
