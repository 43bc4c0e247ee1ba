//! The Redis peer: a `redis-server` started on a free loopback port in a temporary
//! directory (AOF on, `appendfsync always` or `everysec`, no RDB snapshots), the transfer
//! of `benches/peers/transfer.lua` loaded as a Redis Function, and clients that keep many
//! pipelined `FCALL transfer` round trips in flight per connection.
//!
//! Redis answers a pipeline of commands in one event-loop pass and, with `appendfsync
//! always`, fsyncs the AOF once per pass before replying: the same group commit Leasehold
//! does per epoch, which is why the durability modes match.

use super::measure::{self, ClientShape, Stop, Tally, TransferDriver};
use super::system::{self, find_program};
use super::{Durability, PeerError, PeerReport, Transfer, TransferOutcome};
use crate::run::BenchConfig;
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Redis Function library (`FUNCTION LOAD`ed as is).
pub const TRANSFER_LIBRARY: &str = include_str!("../../peers/transfer.lua");

/// Balances live under `account:<id>`, as decimal integers.
const KEY_PREFIX: &str = "account:";
/// Keys per MSET/MGET when loading and summing.
const KEYS_PER_COMMAND: u64 = 10_000;
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Long enough for any reply under load; short enough that a hung server ends the run.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

fn key(id: u64) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// `redis-server` on this machine, if any.
pub fn find_server() -> Option<PathBuf> {
    find_program("redis-server")
}

/// A running `redis-server`, killed when dropped (its data is a benchmark's, so it is not
/// worth a clean shutdown) together with its temporary directory.
pub struct RedisServer {
    child: Child,
    port: u16,
    // Dropped after the server is killed (fields drop in order after `drop` ran).
    directory: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `program` and waits until it answers PING.
    pub fn start(program: &Path, durability: Durability) -> Result<RedisServer, PeerError> {
        let directory = tempfile::Builder::new().prefix("leasehold-redis-").tempdir()?;
        let port = system::free_loopback_port()?;
        let appendfsync = match durability {
            Durability::Fsync => "always",
            Durability::Async => "everysec",
        };
        let log = directory.path().join("redis.log");
        let child = Command::new(program)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", appendfsync])
            .arg("--dir")
            .arg(directory.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| PeerError::Spawn { program: program.display().to_string(), source })?;
        let mut server = RedisServer { child, port, directory };
        server.wait_until_ready(&log)?;
        Ok(server)
    }

    fn wait_until_ready(&mut self, log: &Path) -> Result<(), PeerError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(PeerError::ExitedWhileStarting {
                    server: "redis-server".into(),
                    status,
                    log_tail: system::log_tail(log),
                });
            }
            let client = self.client()?;
            let ping: Result<String, PeerError> = runtime.block_on(async {
                let mut connection = connect(&client).await?;
                Ok(::redis::cmd("PING").query_async(&mut connection).await?)
            });
            if ping.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PeerError::StartTimeout {
                    server: "redis-server".into(),
                    seconds: START_TIMEOUT.as_secs(),
                    log_tail: system::log_tail(log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    pub fn client(&self) -> Result<Client, PeerError> {
        Ok(Client::open(format!("redis://127.0.0.1:{}/", self.port))?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Already exited is fine; anything else would leave a server running, so say so.
        if let Err(error) = self.child.kill() {
            if self.child.try_wait().ok().flatten().is_none() {
                eprintln!("warning: cannot stop redis-server (pid {}): {error}", self.child.id());
            }
        }
        let _ = self.child.wait();
    }
}

async fn connect(client: &Client) -> Result<MultiplexedConnection, PeerError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(RESPONSE_TIMEOUT);
    Ok(client.get_multiplexed_async_connection_with_config(&config).await?)
}

fn unexpected(detail: String) -> PeerError {
    PeerError::UnexpectedReply { server: "redis", detail }
}

/// What FCALL transfer answered: 1 committed, 0 aborted.
fn transfer_outcome(flag: i64) -> Result<TransferOutcome, PeerError> {
    match flag {
        1 => Ok(TransferOutcome::Committed),
        0 => Ok(TransferOutcome::Aborted),
        other => Err(unexpected(format!("FCALL transfer answered {other}, expected 1 or 0"))),
    }
}

fn fcall_transfer(pipeline: &mut ::redis::Pipeline, transfer: &Transfer) {
    pipeline.cmd("FCALL").arg("transfer").arg(2).arg(key(transfer.from)).arg(key(transfer.to)).arg(transfer.amount);
}

/// An administrative connection to a running server: loads the function and the data,
/// checks balances, and measures with [`RedisDriver`] clients.
pub struct RedisPeer {
    runtime: tokio::runtime::Runtime,
    client: Client,
    connection: MultiplexedConnection,
    /// `redis <version>`.
    pub system: String,
    /// `appendonly .., appendfsync ..` as the server reports them.
    pub settings: String,
}

impl RedisPeer {
    /// Connects, checks the server is Redis 7 or newer (Functions came in 7.0) and reads
    /// back its persistence settings.
    pub fn connect(server: &RedisServer) -> Result<RedisPeer, PeerError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = server.client()?;
        let mut connection = runtime.block_on(connect(&client))?;
        let info: String = runtime.block_on(::redis::cmd("INFO").arg("server").query_async(&mut connection))?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|version| version.trim().to_string())
            .ok_or_else(|| unexpected("INFO server has no redis_version".into()))?;
        let major: u32 = version.split('.').next().and_then(|major| major.parse().ok()).unwrap_or(0);
        if major < 7 {
            return Err(PeerError::UnsupportedVersion {
                server: "redis",
                version,
                needed: "Redis Functions need Redis 7 or newer",
            });
        }
        let mut settings = Vec::new();
        for parameter in ["appendonly", "appendfsync", "save"] {
            let pair: Vec<String> =
                runtime.block_on(::redis::cmd("CONFIG").arg("GET").arg(parameter).query_async(&mut connection))?;
            let value = pair.get(1).ok_or_else(|| unexpected(format!("CONFIG GET {parameter} answered {pair:?}")))?;
            settings.push(format!("{parameter} {value:?}"));
        }
        Ok(RedisPeer { runtime, client, connection, system: format!("redis {version}"), settings: settings.join(", ") })
    }

    /// Loads (or replaces) the transfer function library.
    pub fn load_function(&self) -> Result<(), PeerError> {
        let mut connection = self.connection.clone();
        let library: String = self.runtime.block_on(
            ::redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(TRANSFER_LIBRARY).query_async(&mut connection),
        )?;
        if library != "leasehold_bench" {
            return Err(unexpected(format!("FUNCTION LOAD named the library {library:?}")));
        }
        Ok(())
    }

    /// Sets accounts `0..keys` to `value` with MSET, many keys per command.
    pub fn load(&self, keys: u64, value: i64) -> Result<(), PeerError> {
        let mut connection = self.connection.clone();
        self.runtime.block_on(async {
            for first in (0..keys).step_by(KEYS_PER_COMMAND as usize) {
                let mut mset = ::redis::cmd("MSET");
                for id in first..keys.min(first + KEYS_PER_COMMAND) {
                    mset.arg(key(id)).arg(value);
                }
                mset.query_async::<()>(&mut connection).await?;
            }
            Ok(())
        })
    }

    pub fn set_balance(&self, id: u64, value: i64) -> Result<(), PeerError> {
        let mut connection = self.connection.clone();
        Ok(self.runtime.block_on(::redis::cmd("SET").arg(key(id)).arg(value).query_async::<()>(&mut connection))?)
    }

    /// Every balance of accounts `0..keys`; a missing or non-integer one is an error.
    pub fn balances(&self, keys: u64) -> Result<Vec<i64>, PeerError> {
        let mut connection = self.connection.clone();
        self.runtime.block_on(async {
            let mut balances = Vec::with_capacity(keys as usize);
            for first in (0..keys).step_by(KEYS_PER_COMMAND as usize) {
                let mut mget = ::redis::cmd("MGET");
                for id in first..keys.min(first + KEYS_PER_COMMAND) {
                    mget.arg(key(id));
                }
                let values: Vec<Option<String>> = mget.query_async(&mut connection).await?;
                for (offset, value) in values.into_iter().enumerate() {
                    let id = first + offset as u64;
                    let value = value.ok_or_else(|| unexpected(format!("account {id} is missing")))?;
                    balances.push(
                        value
                            .parse()
                            .map_err(|_| unexpected(format!("account {id} holds {value:?}, not an integer")))?,
                    );
                }
            }
            Ok(balances)
        })
    }

    /// The sum of the balances of accounts `0..keys`.
    pub fn total(&self, keys: u64) -> Result<i64, PeerError> {
        Ok(self.balances(keys)?.iter().sum())
    }

    /// Runs one transfer.
    pub fn transfer(&self, transfer: Transfer) -> Result<TransferOutcome, PeerError> {
        let mut connection = self.connection.clone();
        let mut pipeline = ::redis::pipe();
        fcall_transfer(&mut pipeline, &transfer);
        let flags: Vec<i64> = self.runtime.block_on(pipeline.query_async(&mut connection))?;
        match flags.as_slice() {
            [flag] => transfer_outcome(*flag),
            other => Err(unexpected(format!("one FCALL answered {other:?}"))),
        }
    }

    /// Runs the workload's transfers with closed-loop clients.
    pub fn measure(&self, config: &BenchConfig, stop: Stop) -> Result<(ClientShape, measure::Measurement), PeerError> {
        let driver = RedisDriver {
            client: self.client.clone(),
            shape: ClientShape { in_flight: config.pipeline.max(1), batch: config.batch.max(1) },
        };
        Ok((driver.shape, measure::measure(&driver, config, stop)?))
    }
}

/// Clients: one multiplexed connection each, `in_flight` pipelines of `batch` FCALLs
/// outstanding on it (Leasehold's `pipeline` and `batch`).
struct RedisDriver {
    client: Client,
    shape: ClientShape,
}

impl TransferDriver for RedisDriver {
    type Connection = MultiplexedConnection;

    fn shape(&self) -> ClientShape {
        self.shape
    }

    async fn connect(&self) -> Result<MultiplexedConnection, PeerError> {
        connect(&self.client).await
    }

    async fn execute(&self, connection: &MultiplexedConnection, transfers: &[Transfer]) -> Result<Tally, PeerError> {
        let mut pipeline = ::redis::pipe();
        for transfer in transfers {
            fcall_transfer(&mut pipeline, transfer);
        }
        // A clone shares the socket; it is how several requests are in flight on it.
        let flags: Vec<i64> = pipeline.query_async(&mut connection.clone()).await?;
        if flags.len() != transfers.len() {
            return Err(unexpected(format!("{} FCALLs answered {} replies", transfers.len(), flags.len())));
        }
        let mut tally = Tally::default();
        for flag in flags {
            match transfer_outcome(flag)? {
                TransferOutcome::Committed => tally.committed += 1,
                TransferOutcome::Aborted => tally.aborted += 1,
            }
        }
        Ok(tally)
    }
}

/// The whole Redis side of `leasehold compare`: installs Redis if missing, starts it with
/// the matched durability, loads the keys, runs the workload, checks the sum of balances
/// and stops the server.
pub fn run(config: &BenchConfig, durability: Durability, progress: &dyn Fn(&str)) -> Result<PeerReport, PeerError> {
    let program = system::ensure_installed("redis-server", "redis-server", find_server, progress)?;
    let server = RedisServer::start(&program, durability)?;
    let peer = RedisPeer::connect(&server)?;
    progress(&format!(
        "{} on 127.0.0.1:{} ({}), data in {}",
        peer.system,
        server.port(),
        peer.settings,
        server.directory().display()
    ));
    peer.load_function()?;
    progress(&format!("loading {} keys", config.keys));
    peer.load(config.keys, config.initial_value)?;
    let sum_expected = super::expected_sum(config)?;
    progress(&format!(
        "running {} clients x {} pipelines x {} FCALLs for {:?} (+{:?} warm-up)",
        config.clients, config.pipeline, config.batch, config.duration, config.warmup
    ));
    let (shape, measurement) = peer.measure(config, Stop::Timed)?;
    let sum_found = peer.total(config.keys)?;
    Ok(PeerReport::new(
        peer.system.clone(),
        durability,
        peer.settings.clone(),
        shape,
        config,
        &measurement,
        Some(sum_expected),
        Some(sum_found),
    ))
}
