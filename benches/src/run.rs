//! Drives a node with clients over Cap'n Proto and measures what it does.
//!
//! Each client is one connection on its own thread (a current-thread runtime with a
//! `LocalSet`, as capnp-rpc needs). A client keeps `pipeline` messages in flight, each an
//! `invokeMany` of `batch` requests: many requests per message and several messages in
//! flight is how one connection reaches high throughput.
//!
//! After a run that loaded its keys, the workload's invariant is checked: the sum the
//! workload's `total` reads must equal the loaded sum plus the deltas every committed
//! request reported (see `workload.rs`), and travel's audit must find nothing wrong.
//!
//! Closed loop (no `rate`): a message is sent as soon as one returns. Open loop (`rate`
//! requests per second over all clients): messages leave on a fixed schedule and latency
//! is measured from the intended send time, so queueing in the client is not hidden.

use crate::workload::{self, Generator, WorkloadKind};
use hdrhistogram::Histogram;
use leasehold_client::{Client, InvokeResult};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Parameters of one run, reported with its results.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchConfig {
    pub workload: WorkloadKind,
    pub keys: u64,
    pub initial_value: i64,
    pub theta: f64,
    pub clients: usize,
    /// Invocations per `invokeMany` message.
    pub batch: usize,
    /// Messages in flight per client.
    pub pipeline: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second over all clients (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    pub seed: u64,
    /// Load the keys before running (skip when the node already holds them).
    pub load: bool,
}

/// What a run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub committed: u64,
    pub aborted: u64,
    pub rejected: u64,
    pub measured_seconds: f64,
    pub throughput_per_second: f64,
    #[serde(flatten)]
    pub latency: Latency,
    /// The workload's checked sum after the run, expected and found: the loaded sum plus
    /// the deltas committed requests reported (transfers keep it; SmallBank's deposits
    /// and withdrawals move it; for travel it counts reservations).
    pub sum_expected: Option<i64>,
    pub sum_found: Option<i64>,
    /// A violation of the workload's invariant beyond the sum (travel: over capacity or a
    /// reservation without both parts).
    pub invariant_violation: Option<String>,
}

/// Failures of a run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("client error: {0}")]
    Client(#[from] leasehold_client::ClientError),
    #[error("loading the workload failed: {0}")]
    Load(String),
    #[error("cannot start a client thread: {0}")]
    Thread(std::io::Error),
    #[error("a client thread panicked")]
    ClientPanicked,
}

#[derive(Default)]
struct Tally {
    committed: u64,
    aborted: u64,
    rejected: u64,
}

/// The effect of every request a client committed, inside the measured window or not:
/// what the invariant check expects the sum to have moved by.
#[derive(Default)]
struct Effects {
    delta: i64,
    undecodable: u64,
}

struct ClientResult {
    tally: Tally,
    effects: Effects,
    latency: Histogram<u64>,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Loads the workload's keys (one `open`/`load` transaction per 10,000 keys).
pub fn load(address: SocketAddr, config: &BenchConfig) -> Result<(), BenchError> {
    let client = leasehold_client::BlockingClient::connect(address)?;
    for invocation in workload::load_invocations(config.workload, config.keys, config.initial_value) {
        match client.invoke(invocation)? {
            InvokeResult::Committed { .. } => {}
            other => return Err(BenchError::Load(format!("{other:?}"))),
        }
    }
    Ok(())
}

/// Sums every value (in transactions of 10,000 keys; travel: counts reservations).
pub fn total(address: SocketAddr, config: &BenchConfig) -> Result<i64, BenchError> {
    total_and_audit(address, config).map(|(sum, _)| sum)
}

/// The sum of [`total`] and the first violation the workload's audit found, if any.
fn total_and_audit(address: SocketAddr, config: &BenchConfig) -> Result<(i64, Option<String>), BenchError> {
    let client = leasehold_client::BlockingClient::connect(address)?;
    let mut sum = 0i64;
    let mut violation = None;
    for invocation in workload::total_invocations(config.workload, config.keys) {
        match client.invoke(invocation)? {
            InvokeResult::Committed { output, .. } => {
                sum += workload::decode_total(config.workload, &output)
                    .ok_or_else(|| BenchError::Load("undecodable total".into()))?;
                violation = violation.or_else(|| workload::audit_violation(config.workload, &output));
            }
            other => return Err(BenchError::Load(format!("{other:?}"))),
        }
    }
    Ok((sum, violation))
}

/// Runs the benchmark against the node at `address`.
pub fn run(address: SocketAddr, config: &BenchConfig, progress: impl Fn(&str)) -> Result<BenchReport, BenchError> {
    if config.load {
        progress(&format!("loading {} keys", config.keys));
        load(address, config)?;
    }
    progress(&format!(
        "running {} clients x {} messages x {} requests for {:?} (+{:?} warm-up)",
        config.clients, config.pipeline, config.batch, config.duration, config.warmup
    ));
    // Distinct request ids per run, so a rerun against the same node is not answered
    // from the previous run's results.
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + config.warmup;
    let stop_at = measure_from + config.duration;
    let threads: Vec<_> = (0..config.clients)
        .map(|client| {
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("bench-client-{client}"))
                .spawn(move || run_client(address, &config, client as u32, run_id, start, measure_from, stop_at))
                .map_err(BenchError::Thread)
        })
        .collect::<Result<_, _>>()?;
    let mut tally = Tally::default();
    let mut latency = Histogram::<u64>::new(3).expect("valid histogram precision");
    let mut effects = Effects::default();
    for thread in threads {
        let result = thread.join().map_err(|_| BenchError::ClientPanicked)??;
        effects.delta += result.effects.delta;
        effects.undecodable += result.effects.undecodable;
        tally.committed += result.tally.committed;
        tally.aborted += result.tally.aborted;
        tally.rejected += result.tally.rejected;
        latency.add(&result.latency).expect("histograms have the same precision");
    }
    let measured_seconds = config.duration.as_secs_f64();
    // Only a run that loaded knows the starting sum.
    let sum_expected =
        config.load.then(|| workload::initial_sum(config.workload, config.keys, config.initial_value) + effects.delta);
    let (sum_found, mut invariant_violation) = if sum_expected.is_some() {
        total_and_audit(address, config).map(|(sum, v)| (Some(sum), v))?
    } else {
        (None, None)
    };
    if effects.undecodable > 0 {
        // Their deltas are unknown, so the sum check cannot be trusted.
        invariant_violation.get_or_insert(format!("{} committed outputs did not decode", effects.undecodable));
    }
    Ok(BenchReport {
        config: config.clone(),
        committed: tally.committed,
        aborted: tally.aborted,
        rejected: tally.rejected,
        measured_seconds,
        throughput_per_second: (tally.committed + tally.aborted) as f64 / measured_seconds,
        latency: Latency::of(&latency),
        sum_expected,
        sum_found,
        invariant_violation,
    })
}

fn run_client(
    address: SocketAddr,
    config: &BenchConfig,
    client: u32,
    run_id: u64,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
) -> Result<ClientResult, BenchError> {
    let runtime = runtime().map_err(BenchError::Thread)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let connection = Rc::new(Client::connect(address).await?);
        let generator = Rc::new(RefCell::new(Generator::new(
            config.workload,
            config.keys,
            config.theta,
            config.seed,
            client,
            run_id,
        )));
        let latency = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("valid histogram precision")));
        let tally = Rc::new(RefCell::new(Tally::default()));
        let effects = Rc::new(RefCell::new(Effects::default()));
        // Open loop: each of this client's pipeline slots sends one message per interval.
        let interval = config.rate.map(|rate| {
            let messages_per_second = rate / config.batch as f64 / config.clients as f64 / config.pipeline as f64;
            Duration::from_secs_f64(1.0 / messages_per_second.max(1e-9))
        });
        let mut slots = Vec::new();
        for slot in 0..config.pipeline {
            let (connection, generator, latency, tally, effects) =
                (connection.clone(), generator.clone(), latency.clone(), tally.clone(), effects.clone());
            slots.push(async move {
                tokio::time::sleep_until(start.into()).await;
                // Spread the open-loop slots over one interval so messages do not leave in bursts.
                let mut next_send =
                    start + interval.map_or(Duration::ZERO, |i| i.mul_f64(slot as f64 / config.pipeline as f64));
                loop {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next_send.into()).await;
                        next_send += interval;
                    }
                    let intended =
                        if interval.is_some() { next_send - interval.unwrap_or_default() } else { Instant::now() };
                    if intended >= stop_at {
                        return Ok::<(), BenchError>(());
                    }
                    let invocations: Vec<_> = {
                        let mut generator = generator.borrow_mut();
                        (0..config.batch).map(|_| generator.next()).collect()
                    };
                    let workflows: Vec<String> = invocations.iter().map(|i| i.workflow.clone()).collect();
                    let results = connection.invoke_many(invocations).await?;
                    let done = Instant::now();
                    {
                        let mut effects = effects.borrow_mut();
                        for (workflow, result) in workflows.iter().zip(&results) {
                            if let InvokeResult::Committed { output, .. } = result {
                                match workload::committed_delta(config.workload, workflow, output) {
                                    Some(delta) => effects.delta += delta,
                                    None => effects.undecodable += 1,
                                }
                            }
                        }
                    }
                    if intended >= measure_from && done <= stop_at + Duration::from_secs(60) {
                        let micros = done.duration_since(intended).as_micros() as u64;
                        let mut latency = latency.borrow_mut();
                        let mut tally = tally.borrow_mut();
                        for result in &results {
                            latency.record(micros.max(1)).expect("latency within histogram range");
                            match result {
                                InvokeResult::Committed { .. } => tally.committed += 1,
                                InvokeResult::Aborted { .. } => tally.aborted += 1,
                                InvokeResult::Rejected { .. } => tally.rejected += 1,
                            }
                        }
                    }
                }
            });
        }
        for result in futures::future::join_all(slots).await {
            result?;
        }
        let latency = latency.borrow().clone();
        let tally = std::mem::take(&mut *tally.borrow_mut());
        let effects = std::mem::take(&mut *effects.borrow_mut());
        Ok(ClientResult { tally, effects, latency })
    })
}

/// Latency percentiles of a run, in microseconds (serialised under the `latency_*_us`
/// names the reports have always used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    #[serde(rename = "latency_p50_us")]
    pub p50_us: u64,
    #[serde(rename = "latency_p90_us")]
    pub p90_us: u64,
    #[serde(rename = "latency_p99_us")]
    pub p99_us: u64,
    #[serde(rename = "latency_p999_us")]
    pub p999_us: u64,
    #[serde(rename = "latency_max_us")]
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    /// The latency line of a summary.
    pub fn line(&self) -> String {
        let [p50, p90, p99, p999, max] =
            [self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us].map(|us| us as f64 / 1000.0);
        format!("  latency p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms\n")
    }
}

impl BenchReport {
    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut text = format!(
            "workload {:?}: {} keys, theta {}, {} clients x {} in flight x {} per message, {} loop{}\n",
            c.workload,
            c.keys,
            c.theta,
            c.clients,
            c.pipeline,
            c.batch,
            if c.rate.is_some() { "open" } else { "closed" },
            c.rate.map(|r| format!(" at {r:.0}/s")).unwrap_or_default(),
        );
        text += &format!(
            "  {} committed, {} aborted, {} rejected in {:.1} s: {:.0} transactions/s\n",
            self.committed, self.aborted, self.rejected, self.measured_seconds, self.throughput_per_second
        );
        text += &self.latency.line();
        if let (Some(expected), Some(found)) = (self.sum_expected, self.sum_found) {
            let verdict = if expected == found { "holds" } else { "VIOLATED" };
            let what = match c.workload {
                WorkloadKind::Travel => "reservations held = committed reserves",
                WorkloadKind::Smallbank => "sum of balances = loaded + committed deltas",
                WorkloadKind::Banking | WorkloadKind::YcsbT => "sum of all values",
            };
            text += &format!("  invariant ({what} {expected}): found {found}, {verdict}\n");
        }
        if let Some(violation) = &self.invariant_violation {
            text += &format!("  invariant VIOLATED: {violation}\n");
        }
        text
    }

    /// Why the run broke its workload's invariant, if it did.
    pub fn invariant_error(&self) -> Option<String> {
        match (self.sum_expected, self.sum_found, &self.invariant_violation) {
            (_, _, Some(violation)) => Some(violation.clone()),
            (Some(expected), Some(found), None) if expected != found => {
                Some(format!("sum {found}, expected {expected}"))
            }
            _ => None,
        }
    }
}
