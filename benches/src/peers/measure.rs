//! The client driver both peers use, shaped like [`crate::run`]'s: one thread per client
//! with a current-thread tokio runtime and one connection, `in_flight` round trips
//! outstanding on it, each carrying `batch` transfers. Closed loop (no `rate`): a round
//! trip leaves as soon as one returns. Open loop (`rate` transfers per second over all
//! clients): each of a connection's round-trip slots leaves on a fixed schedule, and
//! latency counts from the intended send time, exactly as Leasehold's runner does, so that
//! `leasehold compare --rate` offers every system the same load. Latency is measured per
//! round trip and recorded for every transfer in it, as Leasehold's runner records an
//! `invokeMany` message for each invocation in it.
//!
//! A peer plugs in through [`TransferDriver`]: how to connect, and how to run a batch of
//! transfers on a connection.

use super::{PeerError, Transfer, TransferGenerator};
use crate::run::{BenchConfig, SendSchedule};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// Round trips in flight per connection and transfers per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientShape {
    pub in_flight: usize,
    pub batch: usize,
}

/// Outcomes of a batch of transfers (or of a whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub committed: u64,
    pub aborted: u64,
    /// Attempts repeated after a serialization failure.
    pub retries: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.committed += other.committed;
        self.aborted += other.aborted;
        self.retries += other.retries;
    }
}

/// A peer's client side.
// Not public: `async fn` in a trait cannot promise `Send` futures, which is fine here
// because every client runs on its own current-thread runtime.
pub(crate) trait TransferDriver: Sync {
    type Connection;

    fn shape(&self) -> ClientShape;

    async fn connect(&self) -> Result<Self::Connection, PeerError>;

    /// Runs the transfers, each as its own transaction, and counts how they ended.
    async fn execute(&self, connection: &Self::Connection, transfers: &[Transfer]) -> Result<Tally, PeerError>;
}

/// When a measurement ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After the config's warm-up and duration; only round trips sent after the warm-up
    /// count, as in Leasehold's runner.
    Timed,
    /// After each client ran this many transfers, all of them counted (tests).
    Count { transfers_per_client: u64 },
}

/// What the clients measured.
pub struct Measurement {
    pub tally: Tally,
    pub latency: Histogram<u64>,
    pub measured_seconds: f64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid histogram precision")
}

/// When the clients start, start counting and stop sending.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    stop_at: Option<Instant>,
}

/// Runs `config.clients` clients against the peer and merges what they measured.
pub(crate) fn measure<D: TransferDriver>(
    driver: &D,
    config: &BenchConfig,
    stop: Stop,
) -> Result<Measurement, PeerError> {
    // The same start delay as Leasehold's runner: every client connects before the clock starts.
    let start = Instant::now() + Duration::from_millis(100);
    let schedule = match stop {
        Stop::Timed => {
            let measure_from = start + config.warmup;
            Schedule { start, measure_from, stop_at: Some(measure_from + config.duration) }
        }
        Stop::Count { .. } => Schedule { start, measure_from: start, stop_at: None },
    };
    let limit = match stop {
        Stop::Timed => None,
        Stop::Count { transfers_per_client } => Some(transfers_per_client),
    };
    let results: Vec<Result<(Tally, Histogram<u64>), PeerError>> = std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(config.clients);
        for client in 0..config.clients {
            let spawned = std::thread::Builder::new()
                .name(format!("peer-client-{client}"))
                .spawn_scoped(scope, move || run_client(driver, config, client as u32, schedule, limit));
            match spawned {
                Ok(thread) => threads.push(thread),
                // The scope still joins the clients already started.
                Err(error) => return vec![Err(PeerError::Io(error))],
            }
        }
        threads.into_iter().map(|thread| thread.join().unwrap_or(Err(PeerError::ClientPanicked))).collect()
    });
    let finished = Instant::now();
    let mut tally = Tally::default();
    let mut latency = new_histogram();
    for result in results {
        let (client_tally, client_latency) = result?;
        tally.add(client_tally);
        latency.add(&client_latency).expect("histograms of the same precision merge");
    }
    let measured_seconds = match stop {
        Stop::Timed => config.duration.as_secs_f64(),
        Stop::Count { .. } => finished.saturating_duration_since(start).as_secs_f64(),
    };
    Ok(Measurement { tally, latency, measured_seconds })
}

fn run_client<D: TransferDriver>(
    driver: &D,
    config: &BenchConfig,
    client: u32,
    schedule: Schedule,
    limit: Option<u64>,
) -> Result<(Tally, Histogram<u64>), PeerError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let connection = driver.connect().await?;
        let shape = driver.shape();
        let generator =
            RefCell::new(TransferGenerator::new(config.workload, config.keys, config.theta, config.seed, client));
        let tally = RefCell::new(Tally::default());
        let latency = RefCell::new(new_histogram());
        let issued = Cell::new(0u64);
        // The slots share these through references, so each `async move` copies only the references.
        let (connection, generator, tally, latency, issued) = (&connection, &generator, &tally, &latency, &issued);
        let slots = shape.in_flight.max(1);
        let slot = |slot: usize| async move {
            tokio::time::sleep_until(schedule.start.into()).await;
            let mut sends = SendSchedule::new(schedule.start, config.rate, config.clients, slots, shape.batch, slot);
            loop {
                let sent = sends.next().await;
                // An open loop that falls behind its schedule also stops on time: what it did
                // not send by then is missing from the latencies, and the throughput below
                // the rate shows it.
                if schedule.stop_at.is_some_and(|stop_at| sent >= stop_at || Instant::now() >= stop_at) {
                    return Ok::<(), PeerError>(());
                }
                let batch = match limit {
                    None => shape.batch as u64,
                    Some(limit) => (limit - issued.get()).min(shape.batch as u64),
                };
                if batch == 0 {
                    return Ok(());
                }
                issued.set(issued.get() + batch);
                let transfers: Vec<Transfer> = {
                    let mut generator = generator.borrow_mut();
                    (0..batch).map(|_| generator.next_transfer()).collect()
                };
                let outcome = driver.execute(connection, &transfers).await?;
                let micros = Instant::now().duration_since(sent).as_micros() as u64;
                if sent >= schedule.measure_from {
                    tally.borrow_mut().add(outcome);
                    latency
                        .borrow_mut()
                        .record_n(micros.max(1), batch)
                        .expect("auto-resizing histograms take any value");
                }
            }
        };
        futures::future::try_join_all((0..slots).map(slot)).await?;
        Ok((tally.take(), latency.replace(new_histogram())))
    })
}
