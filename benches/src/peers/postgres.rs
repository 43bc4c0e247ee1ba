//! The PostgreSQL peer: a throw-away cluster (`initdb` in a temporary directory, started
//! with `pg_ctl` on a free loopback port, `fsync = on`, `synchronous_commit` on or off,
//! every transaction SERIALIZABLE), the schema and transfer function of
//! `benches/peers/transfer.sql`, and clients that each run one transaction at a time on
//! their own connection, retrying serialization failures and counting the retries.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
//! user the Debian package creates, and its commands run through `runuser`.

use super::measure::{self, ClientShape, Stop, Tally, TransferDriver};
use super::system::{self, find_program, is_executable, run_command};
use super::{account_id, Durability, PeerError, PeerReport, Transfer, TransferOutcome};
use crate::run::BenchConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

/// The schema and the transfer function (run as one batch on the fresh cluster).
pub const SCHEMA_AND_TRANSFER: &str = include_str!("../../peers/transfer.sql");

const TRANSFER_CALL: &str = "SELECT transfer($1, $2, $3)";
/// The system user that owns the cluster when the harness runs as root.
const SERVER_USER: &str = "postgres";
/// More retries than this for one transfer means something else is wrong.
const RETRIES_PER_TRANSFER_MAX: u64 = 10_000;

/// The PostgreSQL programs the peer needs.
#[derive(Clone, Debug)]
pub struct PostgresBinaries {
    pub directory: PathBuf,
}

impl PostgresBinaries {
    fn program(&self, name: &str) -> PathBuf {
        self.directory.join(name)
    }

    fn complete(directory: PathBuf) -> Option<PostgresBinaries> {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|name| is_executable(&directory.join(name)))
            .then_some(PostgresBinaries { directory })
    }
}

/// The server programs on this machine: where `pg_config --bindir` says, else the newest
/// version under Debian's `/usr/lib/postgresql/<version>/bin` (Debian keeps `initdb` and
/// `pg_ctl` off `PATH`), else `PATH`.
pub fn find_binaries() -> Option<PostgresBinaries> {
    let from_pg_config = find_program("pg_config")
        .and_then(|pg_config| Command::new(pg_config).arg("--bindir").output().ok())
        .filter(|output| output.status.success())
        .and_then(|output| PostgresBinaries::complete(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())));
    from_pg_config.or_else(debian_binaries).or_else(|| {
        let initdb = find_program("initdb")?;
        PostgresBinaries::complete(std::fs::canonicalize(initdb).ok()?.parent()?.to_path_buf())
    })
}

fn debian_binaries() -> Option<PostgresBinaries> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.into_iter().rev().find_map(|(_, directory)| PostgresBinaries::complete(directory))
}

/// A running throw-away cluster, stopped (`pg_ctl stop -m fast`) when dropped, also after
/// an error, and then deleted with its temporary directory.
pub struct PostgresServer {
    binaries: PostgresBinaries,
    data: PathBuf,
    port: u16,
    as_server_user: bool,
    running: bool,
    // Dropped after `drop` stopped the server.
    directory: tempfile::TempDir,
}

impl PostgresServer {
    /// Creates and starts a cluster that accepts `max_connections` clients.
    pub fn start(
        binaries: &PostgresBinaries,
        durability: Durability,
        max_connections: usize,
    ) -> Result<PostgresServer, PeerError> {
        let directory = tempfile::Builder::new().prefix("leasehold-postgres-").tempdir()?;
        let as_server_user = system::running_as_root();
        if as_server_user {
            run_command(Command::new("chown").arg(format!("{SERVER_USER}:")).arg(directory.path()))?;
        }
        let data = directory.path().join("data");
        let port = system::free_loopback_port()?;
        let mut server =
            PostgresServer { binaries: binaries.clone(), data, port, as_server_user, running: false, directory };
        // --no-sync: the cluster is thrown away after the run; what the run commits is
        // fsynced by the server's own settings below.
        run_command(server.command("initdb").arg("--pgdata").arg(&server.data).args([
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        ]))?;
        let synchronous_commit = match durability {
            Durability::Fsync => "on",
            Durability::Async => "off",
        };
        let settings = format!(
            "\n# leasehold-bench peer settings\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = {connections}\n\
             fsync = on\n\
             synchronous_commit = {synchronous_commit}\n\
             default_transaction_isolation = 'serializable'\n",
            socket = server.directory.path().display(),
            connections = max_connections.max(10) + 10,
        );
        // Appending keeps the file's owner (the server user).
        std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.conf"))?
            .write_all(settings.as_bytes())?;
        let log = server.log_path();
        let started =
            run_command(server.command("pg_ctl").arg("--pgdata").arg(&server.data).arg("--log").arg(&log).args([
                "--wait",
                "--timeout",
                "60",
                "start",
            ]));
        // From here on the server may be up even if pg_ctl failed (it gave up waiting).
        server.running = true;
        if let Err(error) = started {
            return Err(match error {
                PeerError::CommandFailed { command, status, output } => PeerError::CommandFailed {
                    command,
                    status,
                    output: format!("{output}\nserver log:\n{}", system::log_tail(&log)),
                },
                other => other,
            });
        }
        Ok(server)
    }

    /// A command running one of the server programs as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let program = self.binaries.program(program);
        let mut command = if self.as_server_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // The caller's working directory (e.g. /root) may be closed to the server user.
        command.current_dir(self.directory.path());
        command
    }

    fn log_path(&self) -> PathBuf {
        self.directory.path().join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// The libpq connection string of a client.
    pub fn connection_string(&self) -> String {
        format!("host=127.0.0.1 port={} user={SERVER_USER} dbname=postgres application_name=leasehold-bench", self.port)
    }

    /// Stops the server (fast shutdown: open transactions roll back).
    pub fn stop(&mut self) -> Result<(), PeerError> {
        if !self.running {
            return Ok(());
        }
        let stopped = run_command(self.command("pg_ctl").arg("--pgdata").arg(&self.data).args([
            "--mode",
            "fast",
            "--wait",
            "--timeout",
            "60",
            "stop",
        ]));
        if stopped.is_err() {
            // An immediate shutdown still ends every server process.
            let _ = run_command(self.command("pg_ctl").arg("--pgdata").arg(&self.data).args([
                "--mode",
                "immediate",
                "--wait",
                "stop",
            ]));
        }
        self.running = false;
        stopped.map(|_| ())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("warning: stopping the PostgreSQL peer in {} failed: {error}", self.directory.path().display());
        }
    }
}

fn unexpected(detail: String) -> PeerError {
    PeerError::UnexpectedReply { server: "postgresql", detail }
}

async fn connect(connection_string: &str) -> Result<Client, PeerError> {
    let (client, connection) = tokio_postgres::connect(connection_string, NoTls).await?;
    // The connection task does the socket I/O; it ends when the client is dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("warning: postgresql connection ended: {error}");
        }
    });
    Ok(client)
}

/// Whether a failed transaction may simply be run again.
fn is_retryable(error: &tokio_postgres::Error) -> bool {
    matches!(error.code(), Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Runs one transfer as its own transaction, again after each serialization failure.
async fn transfer_with_retries(
    client: &Client,
    statement: &Statement,
    transfer: &Transfer,
) -> Result<(TransferOutcome, u64), PeerError> {
    let (from, to) = (account_id(transfer.from)?, account_id(transfer.to)?);
    let mut retries = 0;
    loop {
        match client.query_one(statement, &[&from, &to, &transfer.amount]).await {
            Ok(row) => {
                let committed: bool = row.try_get(0)?;
                let outcome = if committed { TransferOutcome::Committed } else { TransferOutcome::Aborted };
                return Ok((outcome, retries));
            }
            Err(error) if is_retryable(&error) => {
                retries += 1;
                if retries > RETRIES_PER_TRANSFER_MAX {
                    return Err(PeerError::RetriesExhausted { retries, last_error: error.to_string() });
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// An administrative connection to a running cluster: creates the schema, loads the
/// data, checks balances, and measures with [`PostgresDriver`] clients.
pub struct PostgresPeer {
    runtime: tokio::runtime::Runtime,
    client: Client,
    connection_string: String,
    /// `postgresql <version>`.
    pub system: String,
    /// Durability and isolation settings as the server reports them.
    pub settings: String,
}

impl PostgresPeer {
    pub fn connect(server: &PostgresServer) -> Result<PostgresPeer, PeerError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let connection_string = server.connection_string();
        let client = runtime.block_on(connect(&connection_string))?;
        let show = |parameter: &str| -> Result<String, PeerError> {
            let row = runtime.block_on(client.query_one(&format!("SHOW {parameter}"), &[]))?;
            Ok(row.try_get::<_, String>(0)?)
        };
        // Debian's reads "15.18 (Debian 15.18-0+deb12u1)"; the number is what a table needs.
        let version = show("server_version")?;
        let version = version.split_whitespace().next().unwrap_or_default().to_string();
        let settings = ["fsync", "synchronous_commit", "default_transaction_isolation"]
            .iter()
            .map(|parameter| Ok(format!("{parameter} {}", show(parameter)?)))
            .collect::<Result<Vec<_>, PeerError>>()?
            .join(", ");
        Ok(PostgresPeer { runtime, client, connection_string, system: format!("postgresql {version}"), settings })
    }

    /// Creates the accounts table and the transfer function.
    pub fn create_schema(&self) -> Result<(), PeerError> {
        Ok(self.runtime.block_on(self.client.batch_execute(SCHEMA_AND_TRANSFER))?)
    }

    /// Inserts accounts `0..keys` with `value` each in one statement, then vacuums so the
    /// run does not pay for the load's hint bits and statistics.
    pub fn load(&self, keys: u64, value: i64) -> Result<(), PeerError> {
        let keys = account_id(keys)?;
        self.runtime.block_on(async {
            self.client
                .execute(
                    "INSERT INTO accounts (id, balance) SELECT g, $2::bigint FROM generate_series(0, $1::bigint - 1) AS g",
                    &[&keys, &value],
                )
                .await?;
            self.client.batch_execute("VACUUM ANALYZE accounts").await?;
            Ok(())
        })
    }

    pub fn set_balance(&self, id: u64, value: i64) -> Result<(), PeerError> {
        let id = account_id(id)?;
        let updated = self
            .runtime
            .block_on(self.client.execute("UPDATE accounts SET balance = $2 WHERE id = $1", &[&id, &value]))?;
        if updated != 1 {
            return Err(unexpected(format!("setting account {id} updated {updated} rows")));
        }
        Ok(())
    }

    /// Every balance of accounts `0..keys` in id order; a missing account is an error.
    pub fn balances(&self, keys: u64) -> Result<Vec<i64>, PeerError> {
        let rows = self.runtime.block_on(
            self.client.query("SELECT id, balance FROM accounts WHERE id < $1 ORDER BY id", &[&account_id(keys)?]),
        )?;
        let mut balances = Vec::with_capacity(rows.len());
        for (expected_id, row) in rows.iter().enumerate() {
            let id: i64 = row.try_get(0)?;
            if id != expected_id as i64 {
                return Err(unexpected(format!("account {expected_id} is missing (next is {id})")));
            }
            balances.push(row.try_get(1)?);
        }
        if balances.len() as u64 != keys {
            return Err(unexpected(format!("{} of {keys} accounts exist", balances.len())));
        }
        Ok(balances)
    }

    /// The sum of the balances of accounts `0..keys`, and a check that they all exist.
    pub fn total(&self, keys: u64) -> Result<i64, PeerError> {
        let row = self.runtime.block_on(self.client.query_one(
            "SELECT coalesce(sum(balance), 0)::bigint, count(*) FROM accounts WHERE id < $1",
            &[&account_id(keys)?],
        ))?;
        let (sum, count): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if count as u64 != keys {
            return Err(unexpected(format!("{count} of {keys} accounts exist")));
        }
        Ok(sum)
    }

    /// Runs one transfer (retrying serialization failures).
    pub fn transfer(&self, transfer: Transfer) -> Result<TransferOutcome, PeerError> {
        self.runtime.block_on(async {
            let statement = self.client.prepare(TRANSFER_CALL).await?;
            Ok(transfer_with_retries(&self.client, &statement, &transfer).await?.0)
        })
    }

    /// Runs the workload's transfers with closed-loop clients: `config.clients`
    /// connections, one transaction at a time on each.
    pub fn measure(&self, config: &BenchConfig, stop: Stop) -> Result<(ClientShape, measure::Measurement), PeerError> {
        let driver = PostgresDriver {
            connection_string: self.connection_string.clone(),
            shape: ClientShape { in_flight: 1, batch: 1 },
        };
        Ok((driver.shape, measure::measure(&driver, config, stop)?))
    }
}

/// Clients: one connection each with the transfer call prepared, one transaction at a
/// time (a PostgreSQL session runs one transaction at a time anyway).
struct PostgresDriver {
    connection_string: String,
    shape: ClientShape,
}

struct PostgresConnection {
    client: Client,
    transfer: Statement,
}

impl TransferDriver for PostgresDriver {
    type Connection = PostgresConnection;

    fn shape(&self) -> ClientShape {
        self.shape
    }

    async fn connect(&self) -> Result<PostgresConnection, PeerError> {
        let client = connect(&self.connection_string).await?;
        // The comparison is only fair at SERIALIZABLE; the server config sets it, this
        // makes sure nothing (say a changed template) undid that.
        let isolation: String = client.query_one("SHOW transaction_isolation", &[]).await?.try_get(0)?;
        if isolation != "serializable" {
            return Err(unexpected(format!("sessions run at {isolation}, not serializable")));
        }
        let transfer = client.prepare(TRANSFER_CALL).await?;
        Ok(PostgresConnection { client, transfer })
    }

    async fn execute(&self, connection: &PostgresConnection, transfers: &[Transfer]) -> Result<Tally, PeerError> {
        let mut tally = Tally::default();
        for transfer in transfers {
            let (outcome, retries) = transfer_with_retries(&connection.client, &connection.transfer, transfer).await?;
            tally.retries += retries;
            match outcome {
                TransferOutcome::Committed => tally.committed += 1,
                TransferOutcome::Aborted => tally.aborted += 1,
            }
        }
        Ok(tally)
    }
}

/// The whole PostgreSQL side of `leasehold compare`: installs PostgreSQL if missing,
/// starts a cluster with the matched durability, loads the keys, runs the workload,
/// checks the sum of balances and stops the cluster.
pub fn run(config: &BenchConfig, durability: Durability, progress: &dyn Fn(&str)) -> Result<PeerReport, PeerError> {
    let binaries = system::ensure_installed("initdb and pg_ctl", "postgresql", find_binaries, progress)?;
    let server = PostgresServer::start(&binaries, durability, config.clients)?;
    let peer = PostgresPeer::connect(&server)?;
    progress(&format!(
        "{} on 127.0.0.1:{} ({}), data in {}",
        peer.system,
        server.port(),
        peer.settings,
        server.directory().display()
    ));
    peer.create_schema()?;
    progress(&format!("loading {} keys", config.keys));
    peer.load(config.keys, config.initial_value)?;
    let sum_expected = super::expected_sum(config)?;
    progress(&format!(
        "running {} connections, one transaction at a time each, for {:?} (+{:?} warm-up)",
        config.clients, config.duration, config.warmup
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
