//! Machine-readable records of `leasehold bench` runs (`--output-json`, `--output-csv`):
//! one flat record per run with the run's parameters, the machine it ran on (CPU model,
//! cores, memory, load average, read from /proc) and what it measured.
//!
//! JSON writes one document per run (the file is replaced). CSV appends one row per run,
//! writing the header when the file is new, so that repeated runs build one table; a file
//! whose header differs (written by another version) is refused rather than mixed.

use crate::run::BenchReport;
use std::io::Write;
use std::path::Path;

/// Failures writing a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot encode the record as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path} has other columns than this version writes; write to a new file")]
    OtherColumns { path: String },
}

/// The machine a run ran on, as /proc describes it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Machine {
    pub cpu_model: Option<String>,
    /// Cores this process may use.
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    /// The 1-, 5- and 15-minute load averages.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    /// Reads /proc (missing files leave their fields empty).
    pub fn probe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Machine {
            cpu_model: read("/proc/cpuinfo").as_deref().and_then(cpu_model),
            cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            memory_bytes: read("/proc/meminfo").as_deref().and_then(memory_bytes),
            load_average: read("/proc/loadavg").as_deref().and_then(load_average),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn memory_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let amount: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => amount.checked_mul(1024),
        None => Some(amount),
        Some(_) => None,
    }
}

/// The three load averages of /proc/loadavg.
pub fn load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg.split_whitespace().map(|field| field.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// How the node under test ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeParameters {
    /// `embedded` (started by the harness) or `remote` (`--remote`).
    pub mode: &'static str,
    /// The fsync policy and executor threads of an embedded node; unknown for a remote one.
    pub fsync: Option<String>,
    pub executor_threads: Option<usize>,
    /// The concurrency control (`lease`, `2pl`, `occ`), as the node (node 0 of a
    /// cluster) reports it.
    pub cc: Option<String>,
    /// Transactions the nodes' concurrency control aborted and ran again during the run
    /// (2pl: died under wait-die; occ: a lock or the validation failed), summed over the
    /// nodes; always 0 under leases.
    pub concurrency_retries: Option<u64>,
}

/// One run, flat, as both JSON and CSV carry it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunRecord {
    /// When the run started, UTC (RFC 3339).
    pub started_at: String,
    pub workload: String,
    pub keys: u64,
    pub initial_value: i64,
    pub theta: f64,
    pub clients: usize,
    pub batch: usize,
    pub pipeline: usize,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    /// Open-loop requests per second; `None` for closed loop.
    pub rate: Option<f64>,
    pub seed: u64,
    pub node: String,
    pub fsync: Option<String>,
    pub executor_threads: Option<usize>,
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    /// The 1-minute load average before and after the run (other work on the machine moves
    /// the figures).
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
    pub committed: u64,
    pub aborted: u64,
    pub rejected: u64,
    pub measured_seconds: f64,
    pub throughput_per_second: f64,
    /// Aborted among the transactions that ran (committed + aborted); rejected requests never ran.
    pub abort_rate: f64,
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    /// `holds`, `not checked` (the run did not load its keys), or `violated: <why>`.
    pub invariant: String,
    // Columns added later go last, so that earlier files keep their column order.
    pub cc: Option<String>,
    pub key_groups: u64,
    pub route_by_lease_table: bool,
    pub request_ids_at_node: bool,
    pub concurrency_retries: Option<u64>,
    /// `request-ids` or `sessions` (empty in files from before sessions: request ids).
    pub tracking: String,
}

impl RunRecord {
    pub fn new(
        report: &BenchReport,
        node: &NodeParameters,
        machine_before: &Machine,
        load_average_after: Option<[f64; 3]>,
        started_at_unix_seconds: u64,
    ) -> RunRecord {
        let config = &report.config;
        let ran = report.committed + report.aborted;
        let invariant = match (report.invariant_error(), report.sum_expected) {
            (Some(error), _) => format!("violated: {error}"),
            (None, Some(_)) => "holds".to_string(),
            (None, None) => "not checked".to_string(),
        };
        RunRecord {
            started_at: utc_timestamp(started_at_unix_seconds),
            workload: config.workload.plugin().to_string(),
            keys: config.keys,
            initial_value: config.initial_value,
            theta: config.theta,
            clients: config.clients,
            batch: config.batch,
            pipeline: config.pipeline,
            warmup_seconds: config.warmup.as_secs_f64(),
            duration_seconds: config.duration.as_secs_f64(),
            rate: config.rate,
            seed: config.seed,
            node: node.mode.to_string(),
            fsync: node.fsync.clone(),
            executor_threads: node.executor_threads,
            cpu_model: machine_before.cpu_model.clone(),
            cores: machine_before.cores,
            memory_bytes: machine_before.memory_bytes,
            load_average_before: machine_before.load_average.map(|load| load[0]),
            load_average_after: load_average_after.map(|load| load[0]),
            committed: report.committed,
            aborted: report.aborted,
            rejected: report.rejected,
            measured_seconds: report.measured_seconds,
            throughput_per_second: report.throughput_per_second,
            abort_rate: if ran == 0 { 0.0 } else { report.aborted as f64 / ran as f64 },
            latency_p50_us: report.latency.p50_us,
            latency_p90_us: report.latency.p90_us,
            latency_p99_us: report.latency.p99_us,
            latency_p999_us: report.latency.p999_us,
            latency_max_us: report.latency.max_us,
            invariant,
            cc: node.cc.clone(),
            key_groups: config.key_groups,
            route_by_lease_table: config.route_by_lease_table,
            request_ids_at_node: config.request_ids_at_node,
            concurrency_retries: node.concurrency_retries,
            tracking: config.tracking.as_str().to_string(),
        }
    }

    /// The columns in order, named as the JSON fields, with their CSV text (empty for `None`).
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        fn optional<T: ToString>(value: &Option<T>) -> String {
            value.as_ref().map(ToString::to_string).unwrap_or_default()
        }
        vec![
            ("started_at", self.started_at.clone()),
            ("workload", self.workload.clone()),
            ("keys", self.keys.to_string()),
            ("initial_value", self.initial_value.to_string()),
            ("theta", self.theta.to_string()),
            ("clients", self.clients.to_string()),
            ("batch", self.batch.to_string()),
            ("pipeline", self.pipeline.to_string()),
            ("warmup_seconds", self.warmup_seconds.to_string()),
            ("duration_seconds", self.duration_seconds.to_string()),
            ("rate", optional(&self.rate)),
            ("seed", self.seed.to_string()),
            ("node", self.node.clone()),
            ("fsync", optional(&self.fsync)),
            ("executor_threads", optional(&self.executor_threads)),
            ("cpu_model", optional(&self.cpu_model)),
            ("cores", self.cores.to_string()),
            ("memory_bytes", optional(&self.memory_bytes)),
            ("load_average_before", optional(&self.load_average_before)),
            ("load_average_after", optional(&self.load_average_after)),
            ("committed", self.committed.to_string()),
            ("aborted", self.aborted.to_string()),
            ("rejected", self.rejected.to_string()),
            ("measured_seconds", self.measured_seconds.to_string()),
            ("throughput_per_second", format!("{:.1}", self.throughput_per_second)),
            ("abort_rate", format!("{:.6}", self.abort_rate)),
            ("latency_p50_us", self.latency_p50_us.to_string()),
            ("latency_p90_us", self.latency_p90_us.to_string()),
            ("latency_p99_us", self.latency_p99_us.to_string()),
            ("latency_p999_us", self.latency_p999_us.to_string()),
            ("latency_max_us", self.latency_max_us.to_string()),
            ("invariant", self.invariant.clone()),
            ("cc", optional(&self.cc)),
            ("key_groups", self.key_groups.to_string()),
            ("route_by_lease_table", self.route_by_lease_table.to_string()),
            ("request_ids_at_node", self.request_ids_at_node.to_string()),
            ("concurrency_retries", optional(&self.concurrency_retries)),
            ("tracking", self.tracking.clone()),
        ]
    }

    /// The CSV header line (without the line end).
    pub fn csv_header(&self) -> String {
        self.columns().iter().map(|(name, _)| *name).collect::<Vec<_>>().join(",")
    }

    /// The CSV row (without the line end).
    pub fn csv_row(&self) -> String {
        self.columns().iter().map(|(_, value)| csv_field(value)).collect::<Vec<_>>().join(",")
    }

    /// Writes the record as one JSON document, replacing `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), RecordError> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).map_err(|source| RecordError::Write { path: path.display().to_string(), source })
    }

    /// Appends the record as one CSV row to `path`, with the header first when the file is
    /// new or empty.
    pub fn append_csv(&self, path: &Path) -> Result<(), RecordError> {
        append_csv_rows(path, &self.columns().iter().map(|(name, _)| *name).collect::<Vec<_>>(), &[self.columns()])
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
/// Appends `rows` (each the columns named in `header`, in order) to the CSV file at
/// `path`, writing the header first when the file is new or empty; a file with another
/// header is refused rather than mixed.
pub fn append_csv_rows(path: &Path, header: &[&str], rows: &[Vec<(&str, String)>]) -> Result<(), RecordError> {
    let failed = |source| RecordError::Write { path: path.display().to_string(), source };
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(failed(error)),
    };
    let header = header.join(",");
    let mut text = String::new();
    match existing.lines().next() {
        None => text += &format!("{header}\n"),
        Some(first) if first == header => {}
        Some(_) => return Err(RecordError::OtherColumns { path: path.display().to_string() }),
    }
    if !existing.is_empty() && !existing.ends_with('\n') {
        text.insert(0, '\n');
    }
    for row in rows {
        let fields: Vec<String> = row.iter().map(|(_, value)| csv_field(value)).collect();
        text += &format!("{}\n", fields.join(","));
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)
}

pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// The seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_seconds_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// `seconds` since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn utc_timestamp(seconds: u64) -> String {
    let (days, second_of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Howard Hinnant's days-to-civil: the Gregorian date of a day count, in eras of 400 years.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{BenchConfig, Latency};
    use crate::workload::WorkloadKind;
    use std::time::Duration;

    fn report(aborted: u64, violation: Option<&str>) -> BenchReport {
        BenchReport {
            config: BenchConfig {
                key_groups: 1,
                route_by_lease_table: false,
                request_ids_at_node: false,
                tracking: crate::run::Tracking::Sessions,
                workload: WorkloadKind::Social,
                keys: 10_000,
                initial_value: 0,
                theta: 0.0,
                clients: 4,
                batch: 200,
                pipeline: 4,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(10),
                rate: None,
                seed: 1,
                load: true,
            },
            committed: 300,
            aborted,
            rejected: 0,
            measured_seconds: 10.0,
            throughput_per_second: (300 + aborted) as f64 / 10.0,
            latency: Latency { p50_us: 1_000, p90_us: 2_000, p99_us: 3_000, p999_us: 4_000, max_us: 5_000 },
            sum_expected: Some(15),
            sum_found: Some(15),
            invariant_violation: violation.map(str::to_string),
        }
    }

    fn record(aborted: u64, violation: Option<&str>) -> RunRecord {
        let node = NodeParameters {
            mode: "embedded",
            fsync: Some("every-epoch".into()),
            executor_threads: Some(2),
            cc: Some("lease".into()),
            concurrency_retries: Some(0),
        };
        let machine = Machine {
            cpu_model: Some("Intel Xeon, KVM".into()),
            cores: 2,
            memory_bytes: Some(1 << 30),
            load_average: Some([0.5, 1.0, 1.5]),
        };
        RunRecord::new(&report(aborted, violation), &node, &machine, Some([1.25, 1.0, 1.0]), 1_764_459_000)
    }

    #[test]
    fn proc_files_parse() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(memory_bytes("MemTotal:       24609376 kB\nMemFree: 1 kB\n"), Some(24_609_376 * 1024));
        assert_eq!(memory_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(load_average("0.18 1.10 1.53 1/234 5678\n"), Some([0.18, 1.10, 1.53]));
        assert_eq!(load_average("garbage"), None);
        // This machine has a /proc.
        let machine = Machine::probe();
        assert!(machine.cores >= 1 && machine.memory_bytes.is_some() && machine.load_average.is_some());
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_764_459_000), "2025-11-29T23:30:00Z");
    }

    #[test]
    fn the_record_carries_rates_and_the_verdict() {
        let clean = record(100, None);
        assert_eq!((clean.abort_rate, clean.invariant.as_str()), (0.25, "holds"));
        assert_eq!((clean.load_average_before, clean.load_average_after), (Some(0.5), Some(1.25)));
        let broken = record(0, Some("the timeline of user 3 holds posts [1, 2]"));
        assert_eq!(broken.abort_rate, 0.0);
        assert!(broken.invariant.starts_with("violated: the timeline"));
    }

    #[test]
    fn csv_columns_match_the_json_fields() {
        let record = record(100, None);
        let json = serde_json::to_value(&record).expect("serialise");
        let fields = json.as_object().expect("a flat object");
        let columns = record.columns();
        assert_eq!(columns.len(), fields.len());
        for (name, _) in &columns {
            assert!(fields.contains_key(*name), "column {name} is not a JSON field");
        }
    }

    #[test]
    fn csv_appends_rows_under_one_header_and_quotes_commas() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("runs.csv");
        record(100, None).append_csv(&path).expect("first row");
        record(0, Some("user 3 holds \"x\", not y")).append_csv(&path).expect("second row");
        let text = std::fs::read_to_string(&path).expect("read back");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], record(0, None).csv_header());
        assert!(lines[1].starts_with("2025-11-29T23:30:00Z,social,10000,0,0,4,200,4,2,10,,1,embedded,every-epoch,2,"));
        assert!(lines[1].contains(",\"Intel Xeon, KVM\",2,1073741824,0.5,1.25,300,100,0,10,40.0,0.250000,1000,"));
        assert!(
            lines[2].ends_with(",\"violated: user 3 holds \"\"x\"\", not y\",lease,1,false,false,0,sessions"),
            "{}",
            lines[2]
        );
        std::fs::write(&path, "a,b\n1,2\n").expect("overwrite");
        assert!(matches!(record(0, None).append_csv(&path), Err(RecordError::OtherColumns { .. })));
    }

    #[test]
    fn json_is_one_document_per_run() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("run.json");
        record(1, None).write_json(&path).expect("first");
        record(100, None).write_json(&path).expect("replaced");
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("one JSON document");
        assert_eq!(value["aborted"], 100);
        assert_eq!(value["workload"], "social");
        assert_eq!(value["latency_p99_us"], 3_000);
        assert_eq!(value["cpu_model"], "Intel Xeon, KVM");
    }
}
