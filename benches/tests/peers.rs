//! The Redis and PostgreSQL peers against real servers: each starts on loopback, loads 100
//! accounts, refuses a transfer from an empty account, and runs 2,000 transfers from 4
//! clients on balances small enough that many abort, after which no balance is negative
//! and their sum is unchanged.
//!
//! A peer whose server is not installed is skipped with a message: installing packages is
//! `leasehold compare`'s job, not the test suite's.

use leasehold_bench::peers::measure::Stop;
use leasehold_bench::peers::postgres::{self, PostgresPeer, PostgresServer};
use leasehold_bench::peers::redis::{self, RedisPeer, RedisServer};
use leasehold_bench::peers::{Durability, Transfer, TransferOutcome};
use leasehold_bench::run::BenchConfig;
use leasehold_bench::workload::WorkloadKind;
use std::time::Duration;

const ACCOUNTS: u64 = 100;
/// Small against transfers of 1..=10, so that concurrent transfers drain accounts and
/// abort, which is the path that must write nothing.
const INITIAL_BALANCE: i64 = 20;
const CLIENTS: usize = 4;
const TRANSFERS_PER_CLIENT: u64 = 500;

fn config(workload: WorkloadKind, theta: f64) -> BenchConfig {
    BenchConfig {
        key_groups: 1,
        route_by_lease_table: false,
        request_ids_at_node: false,
        tracking: leasehold_bench::run::Tracking::Sessions,
        workload,
        keys: ACCOUNTS,
        initial_value: INITIAL_BALANCE,
        theta,
        clients: CLIENTS,
        batch: 10,
        pipeline: 4,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        rate: None,
        seed: 7,
        load: true,
    }
}

/// What both peers offer the checks below.
trait Peer {
    fn set_balance(&self, id: u64, value: i64);
    fn transfer(&self, transfer: Transfer) -> TransferOutcome;
    fn balances(&self) -> Vec<i64>;
    fn run(&self, config: &BenchConfig) -> (u64, u64);
}

impl Peer for RedisPeer {
    fn set_balance(&self, id: u64, value: i64) {
        RedisPeer::set_balance(self, id, value).expect("SET");
    }
    fn transfer(&self, transfer: Transfer) -> TransferOutcome {
        RedisPeer::transfer(self, transfer).expect("FCALL transfer")
    }
    fn balances(&self) -> Vec<i64> {
        RedisPeer::balances(self, ACCOUNTS).expect("MGET")
    }
    fn run(&self, config: &BenchConfig) -> (u64, u64) {
        let (_, measurement) =
            self.measure(config, Stop::Count { transfers_per_client: TRANSFERS_PER_CLIENT }).expect("clients run");
        (measurement.tally.committed, measurement.tally.aborted)
    }
}

impl Peer for PostgresPeer {
    fn set_balance(&self, id: u64, value: i64) {
        PostgresPeer::set_balance(self, id, value).expect("UPDATE");
    }
    fn transfer(&self, transfer: Transfer) -> TransferOutcome {
        PostgresPeer::transfer(self, transfer).expect("SELECT transfer")
    }
    fn balances(&self) -> Vec<i64> {
        PostgresPeer::balances(self, ACCOUNTS).expect("SELECT balances")
    }
    fn run(&self, config: &BenchConfig) -> (u64, u64) {
        let (_, measurement) =
            self.measure(config, Stop::Count { transfers_per_client: TRANSFERS_PER_CLIENT }).expect("clients run");
        (measurement.tally.committed, measurement.tally.aborted)
    }
}

fn check_transfers(name: &str, peer: &impl Peer, config: &BenchConfig) {
    // An empty account cannot pay, and the refused transfer writes nothing.
    peer.set_balance(0, 0);
    assert_eq!(peer.transfer(Transfer { from: 0, to: 1, amount: 5 }), TransferOutcome::Aborted, "{name}");
    let balances = peer.balances();
    assert_eq!((balances[0], balances[1]), (0, INITIAL_BALANCE), "{name}: the aborted transfer wrote");
    assert_eq!(peer.transfer(Transfer { from: 1, to: 0, amount: 5 }), TransferOutcome::Committed, "{name}");
    let balances = peer.balances();
    assert_eq!((balances[0], balances[1]), (5, INITIAL_BALANCE - 5), "{name}");
    let sum_before: i64 = balances.iter().sum();

    let (committed, aborted) = peer.run(config);
    assert_eq!(committed + aborted, CLIENTS as u64 * TRANSFERS_PER_CLIENT, "{name}: every transfer ran once");
    assert!(committed > 0 && aborted > 0, "{name}: {committed} committed, {aborted} aborted; expected both");
    let balances = peer.balances();
    assert_eq!(balances.iter().sum::<i64>(), sum_before, "{name}: transfers changed the sum of balances");
    assert!(balances.iter().all(|&balance| balance >= 0), "{name}: a balance went negative: {balances:?}");
}

/// A Redis server with the transfer function and `ACCOUNTS` accounts of `balance`, or
/// `None` (with a message) where redis-server is not installed.
fn redis_with_accounts(balance: i64) -> Option<(RedisServer, RedisPeer)> {
    let Some(program) = redis::find_server() else {
        eprintln!("skipped: redis-server is not installed (`leasehold compare` installs it)");
        return None;
    };
    let server = RedisServer::start(&program, Durability::Async).expect("redis-server starts");
    let peer = RedisPeer::connect(&server).expect("connects");
    peer.load_function().expect("FUNCTION LOAD");
    peer.load(ACCOUNTS, balance).expect("MSET");
    Some((server, peer))
}

#[test]
fn redis_transfers_keep_the_sum_and_abort_on_empty_accounts() {
    let Some((_server, peer)) = redis_with_accounts(INITIAL_BALANCE) else { return };
    // Skewed, so that clients collide on hot accounts.
    check_transfers("redis", &peer, &config(WorkloadKind::Banking, 0.99));
}

#[test]
fn postgres_transfers_keep_the_sum_and_abort_on_empty_accounts() {
    let Some(binaries) = postgres::find_binaries() else {
        eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed (`leasehold compare` installs it)");
        return;
    };
    let server = PostgresServer::start(&binaries, Durability::Async, CLIENTS).expect("postgres starts");
    let peer = PostgresPeer::connect(&server).expect("connects");
    peer.create_schema().expect("schema");
    peer.load(ACCOUNTS, INITIAL_BALANCE).expect("INSERT");
    // Skewed, so that SERIALIZABLE transactions conflict and the retry path runs.
    check_transfers("postgresql", &peer, &config(WorkloadKind::YcsbT, 0.99));
}

/// Open loop offers the peer the configured rate, not what it could take: a closed loop
/// against the same server moves far more in the same time.
#[test]
fn redis_open_loop_sends_at_the_configured_rate() {
    let Some((_server, peer)) = redis_with_accounts(1_000_000) else { return };
    let rate = 4_000.0;
    let timed =
        BenchConfig { duration: Duration::from_millis(1500), rate: Some(rate), ..config(WorkloadKind::Banking, 0.0) };
    let (_, measurement) = peer.measure(&timed, Stop::Timed).expect("clients run");
    let ran = measurement.tally.committed + measurement.tally.aborted;
    let expected = rate * timed.duration.as_secs_f64();
    assert!(
        (0.9 * expected..=1.05 * expected).contains(&(ran as f64)),
        "{ran} transfers in {:?} at {rate}/s; expected about {expected}",
        timed.duration
    );
    let closed = BenchConfig { rate: None, ..timed };
    let (_, measurement) = peer.measure(&closed, Stop::Timed).expect("clients run");
    let ran_closed = measurement.tally.committed + measurement.tally.aborted;
    assert!(ran_closed as f64 > 2.0 * expected, "closed loop ran {ran_closed}, open loop {ran}");
}
