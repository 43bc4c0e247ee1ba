//! Drives a node with clients over Cap'n Proto and measures what it does.
//!
//! Each client is one connection on its own thread (a current-thread runtime with a
//! `LocalSet`, as capnp-rpc needs). A client keeps `pipeline` messages in flight, each an
//! `invokeMany` of `batch` requests: many requests per message and several messages in
//! flight is how one connection reaches high throughput.
//!
//! After a run that loaded its keys, the workload's invariant is checked: the sum the
//! workload's `total` reads must equal the loaded sum plus the deltas every committed
//! request reported (see `workload.rs`), travel's audit must find nothing wrong, and
//! movie's review lists and social's timelines must hold exactly what the journalled
//! committed requests put there.
//!
//! While the clients run, an [`Observer`] hears what phase the run is in and, a few times
//! a second, how far it got (the CLI draws a progress bar from that).
//!
//! Closed loop (no `rate`): a message is sent as soon as one returns. Open loop (`rate`
//! requests per second over all clients): messages leave on a fixed schedule and latency
//! is measured from the intended send time, so queueing in the client is not hidden.

use crate::workload::{self, Generator, Journal, WorkloadKind};
use hdrhistogram::Histogram;
use leasehold_client::{Client, ClusterClient, Invocation, InvokeResult, RoutedInvocation, SessionNumbers};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// Banking and YCSB-T: split the keys into this many contiguous groups; client `i`
    /// draws both keys of a transfer from group `i % key_groups` (1: no groups). With a
    /// cluster, client `i` talks to node `i % nodes`, so groups = nodes gives every node
    /// its own key group: the workload affinity placement is made for.
    pub key_groups: u64,
    /// With a cluster: every client connects to all nodes and sends each request straight
    /// to the node holding its keys, by a lease table it caches
    /// (`leasehold_client::ClusterClient`), instead of to its one node, which would
    /// forward it. Banking and YCSB-T name their keys; other workloads' requests go to the
    /// nodes in turn.
    pub route_by_lease_table: bool,
    /// With a cluster and requests sent to node `i % nodes` (not routed by lease table):
    /// each request id gets a salt that homes its exactly-once record at that node
    /// (`leasehold_keyspace::home_request_id_at`), so a request that runs where it was
    /// sent writes its record locally instead of borrowing it from the id's hash home.
    pub request_ids_at_node: bool,
    /// How requests are made safe to retry. Sessions need one node reached directly: a
    /// run against a cluster (or routed by lease table) uses request ids whatever this
    /// says, and its report says so.
    pub tracking: Tracking,
}

/// How the benchmark's requests are made safe to retry (exactly once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tracking {
    /// A request id per request (`Invocation.requestId`).
    RequestIds,
    /// One client session per client connection (`openSession`).
    Sessions,
}

impl Tracking {
    pub fn as_str(self) -> &'static str {
        match self {
            Tracking::RequestIds => "request-ids",
            Tracking::Sessions => "sessions",
        }
    }
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
    /// reservation without both parts; movie: a review list or rating that differs from the
    /// committed composes; social: a timeline that differs from the committed posts).
    pub invariant_violation: Option<String>,
}

/// What a run tells its caller while it goes.
pub trait Observer {
    /// A line about what the run is doing (loading, running, checking).
    fn message(&self, text: &str);

    /// Called about ten times a second while the clients run: the time since they started,
    /// the planned time (warm-up and measurement), and the requests finished so far.
    fn tick(&self, _elapsed: Duration, _planned: Duration, _finished: u64) {}

    /// The clients have stopped (no more ticks).
    fn clients_done(&self) {}
}

/// An [`Observer`] that passes the messages to a function and ignores the ticks.
pub struct Messages<F>(pub F);

impl<F: Fn(&str)> Observer for Messages<F> {
    fn message(&self, text: &str) {
        (self.0)(text)
    }
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

/// When one round-trip slot of a client sends. Closed loop (no rate): as soon as its
/// previous round trip returned. Open loop: on a fixed schedule, one round trip per
/// interval, so that `rate` transactions per second leave over all clients' slots; the
/// slots of a client are spread over one interval so that round trips do not leave in
/// bursts. Leasehold's runner and the peers' driver (`peers::measure`) both send so.
pub(crate) struct SendSchedule {
    next_send: Instant,
    interval: Option<Duration>,
}

impl SendSchedule {
    /// Slot `slot` of the `slots` of each of `clients` connections, `batch` transactions
    /// per round trip, sending from `start`.
    pub(crate) fn new(
        start: Instant,
        rate: Option<f64>,
        clients: usize,
        slots: usize,
        batch: usize,
        slot: usize,
    ) -> SendSchedule {
        let interval = rate.map(|rate| {
            let round_trips_per_second = rate / batch as f64 / clients as f64 / slots as f64;
            Duration::from_secs_f64(1.0 / round_trips_per_second.max(1e-9))
        });
        let offset = interval.map_or(Duration::ZERO, |interval| interval.mul_f64(slot as f64 / slots as f64));
        SendSchedule { next_send: start + offset, interval }
    }

    /// Waits until the next round trip may leave; returns the time its latency counts
    /// from: the intended send time in open loop (so a system that falls behind pays for
    /// it), now in closed loop.
    pub(crate) async fn next(&mut self) -> Instant {
        let Some(interval) = self.interval else { return Instant::now() };
        tokio::time::sleep_until(self.next_send.into()).await;
        let intended = self.next_send;
        self.next_send += interval;
        intended
    }
}

#[derive(Default)]
struct Tally {
    committed: u64,
    aborted: u64,
    rejected: u64,
}

/// The effect of every request a client committed, inside the measured window or not:
/// what the invariant check expects the sum to have moved by, and the journal of the
/// workloads that check structure.
#[derive(Default)]
struct Effects {
    delta: i64,
    undecodable: u64,
    journal: Journal,
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

/// Reads what the workload's invariant check needs (sums, audits, or every list and
/// journalled write) and checks it against `journal`.
fn audit(address: SocketAddr, config: &BenchConfig, journal: &Journal) -> Result<workload::Verdict, BenchError> {
    let client = leasehold_client::BlockingClient::connect(address)?;
    let mut outputs = Vec::new();
    for invocation in workload::audit_invocations(config.workload, config.keys, journal) {
        match client.invoke(invocation)? {
            InvokeResult::Committed { output, .. } => outputs.push(output),
            other => return Err(BenchError::Load(format!("{other:?}"))),
        }
    }
    Ok(workload::verdict(config.workload, config.keys, journal, &outputs))
}

/// Runs the benchmark against the node at `address`, telling `progress` what it does.
pub fn run(address: SocketAddr, config: &BenchConfig, progress: impl Fn(&str)) -> Result<BenchReport, BenchError> {
    run_observed(&[address], config, &Messages(progress))
}

/// Runs the benchmark against the nodes at `addresses` (one node, or the nodes of a
/// cluster: client `i` talks to node `i % addresses.len()`; loading and the audit use the
/// first), reporting to `observer`.
pub fn run_observed(
    addresses: &[SocketAddr],
    config: &BenchConfig,
    observer: &dyn Observer,
) -> Result<BenchReport, BenchError> {
    assert!(!addresses.is_empty(), "a benchmark needs at least one node");
    let address = addresses[0];
    let mut config = config.clone();
    if addresses.len() > 1 || config.route_by_lease_table {
        config.tracking = Tracking::RequestIds;
    }
    let config = &config;
    if config.load {
        observer.message(&format!("loading {} keys", config.keys));
        load(address, config)?;
    }
    observer.message(&format!(
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
    let finished = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..config.clients)
        .map(|client| {
            let config = config.clone();
            let window = Window { start, measure_from, stop_at };
            let finished = finished.clone();
            let address = addresses[client % addresses.len()];
            let node_count = u16::try_from(addresses.len()).expect("a cluster has at most 65,535 nodes");
            let home = (config.request_ids_at_node && !config.route_by_lease_table && node_count > 1)
                .then_some(((client % addresses.len()) as u16, node_count));
            std::thread::Builder::new()
                .name(format!("bench-client-{client}"))
                .spawn(move || run_client(address, home, &config, client as u32, run_id, window, &finished))
                .map_err(BenchError::Thread)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let planned = stop_at.saturating_duration_since(start);
    while !threads.iter().all(|thread| thread.is_finished()) {
        let elapsed = Instant::now().saturating_duration_since(start);
        observer.tick(elapsed, planned, finished.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    observer.clients_done();
    let mut tally = Tally::default();
    let mut latency = Histogram::<u64>::new(3).expect("valid histogram precision");
    let mut effects = Effects::default();
    for thread in threads {
        let result = thread.join().map_err(|_| BenchError::ClientPanicked)??;
        effects.delta += result.effects.delta;
        effects.undecodable += result.effects.undecodable;
        effects.journal.append(result.effects.journal);
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
        observer.message("checking the invariant");
        let verdict = audit(address, config, &effects.journal)?;
        (verdict.found, verdict.violation)
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

/// When clients start, when measuring starts, and when they stop sending.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

/// `home`: the node this client sends to and the node count, when its request ids are to
/// be homed there.
fn run_client(
    address: SocketAddr,
    home: Option<(u16, u16)>,
    config: &BenchConfig,
    client: u32,
    run_id: u64,
    window: Window,
    finished: &AtomicU64,
) -> Result<ClientResult, BenchError> {
    let Window { start, measure_from, stop_at } = window;
    let runtime = runtime().map_err(BenchError::Thread)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let connection = Rc::new(if config.route_by_lease_table {
            Connection::Routed(Box::new(ClusterClient::connect(&address.to_string(), &[]).await?))
        } else {
            Connection::Node(Client::connect(address).await?)
        });
        let mut generator = Generator::new(config.workload, config.keys, config.theta, config.seed, client, run_id);
        if config.key_groups > 1 {
            generator = generator.in_group(u64::from(client) % config.key_groups, config.key_groups, config.theta);
        }
        if let Some((node, node_count)) = home {
            generator = generator.request_ids_at(node, node_count);
        }
        let generator = Rc::new(RefCell::new(generator));
        let session = match (&*connection, config.tracking) {
            (Connection::Node(client), Tracking::Sessions) => {
                Some(Rc::new(RefCell::new(SessionNumbers::new(client.open_session().await?))))
            }
            _ => None,
        };
        let latency = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("valid histogram precision")));
        let tally = Rc::new(RefCell::new(Tally::default()));
        let effects = Rc::new(RefCell::new(Effects::default()));
        let mut slots = Vec::new();
        for slot in 0..config.pipeline {
            let (connection, generator, latency, tally, effects, session) = (
                connection.clone(),
                generator.clone(),
                latency.clone(),
                tally.clone(),
                effects.clone(),
                session.clone(),
            );
            slots.push(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut schedule =
                    SendSchedule::new(start, config.rate, config.clients, config.pipeline, config.batch, slot);
                loop {
                    let intended = schedule.next().await;
                    // An open loop that falls behind its schedule also stops on time (see
                    // `peers::measure`).
                    if intended >= stop_at || Instant::now() >= stop_at {
                        return Ok::<(), BenchError>(());
                    }
                    let invocations: Vec<_> = {
                        let mut generator = generator.borrow_mut();
                        let requests = (0..config.batch).map(|_| generator.next_request());
                        match &session {
                            Some(numbers) => {
                                let mut numbers = numbers.borrow_mut();
                                requests.map(|request| numbers.place(request)).collect()
                            }
                            None => requests.collect(),
                        }
                    };
                    let workflows: Vec<String> = invocations.iter().map(|i| i.workflow.clone()).collect();
                    let positions: Vec<_> = invocations.iter().filter_map(|i| i.session).collect();
                    let results = connection.invoke_many(config.workload, invocations).await?;
                    if let Some(numbers) = &session {
                        let mut numbers = numbers.borrow_mut();
                        positions.iter().for_each(|position| numbers.answered(position));
                    }
                    let done = Instant::now();
                    finished.fetch_add(results.len() as u64, Ordering::Relaxed);
                    {
                        let mut effects = effects.borrow_mut();
                        for (workflow, result) in workflows.iter().zip(&results) {
                            if let InvokeResult::Committed { output, timestamp, .. } = result {
                                match workload::committed_delta(config.workload, workflow, output) {
                                    Some(delta) => effects.delta += delta,
                                    None => effects.undecodable += 1,
                                }
                                effects.journal.record(config.workload, workflow, *timestamp, output);
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

/// A benchmark client's connection: to one node, or to every node of a cluster with
/// requests routed by the lease table.
enum Connection {
    Node(Client),
    // Boxed: a routing client holds a connection per node and is much larger.
    Routed(Box<ClusterClient>),
}

impl Connection {
    async fn invoke_many(
        &self,
        workload: WorkloadKind,
        invocations: Vec<Invocation>,
    ) -> Result<Vec<InvokeResult>, leasehold_client::ClientError> {
        match self {
            Connection::Node(client) => client.invoke_many(invocations).await,
            Connection::Routed(client) => {
                let routed = invocations
                    .into_iter()
                    .map(|invocation| {
                        let keys = workload::routing_keys(workload, &invocation);
                        RoutedInvocation::new(invocation, keys)
                    })
                    .collect();
                client.invoke_many(routed).await
            }
        }
    }
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
                WorkloadKind::Movie => "reviews on movie lists = committed composes",
                WorkloadKind::Social => "posts stored = committed posts",
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
