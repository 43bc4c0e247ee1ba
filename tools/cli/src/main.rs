//! `leasehold`: the command-line tool.
//!
//! Talks to a node over the Cap'n Proto client API (`--address`, default
//! 127.0.0.1:7420), or runs a node in this process (`node`, and `bench` without
//! `--address`). Every error prints one clear line on stderr and exits non-zero:
//! 1 for errors (connection, refused request, bad input), 2 for usage errors, 3 when a
//! transaction ran and aborted. A node with a token needs `--token-file` (or
//! `LEASEHOLD_TOKEN_FILE`): a file, so that the secret never shows in `ps` or the shell's
//! history.

mod cluster;

use clap::{Parser, Subcommand};
use leasehold_bench::progress::ProgressDisplay;
use leasehold_bench::record::{Machine, NodeParameters, RunRecord};
use leasehold_bench::run::{BenchConfig, BenchReport, Messages, Observer};
use leasehold_bench::workload::WorkloadKind;
use leasehold_client::{BlockingClient, ClientError, Invocation, InvokeResult, TlsSettings};
use leasehold_engine::cluster::ClusterSpec;
use leasehold_engine::config::{read_token_file, ConcurrencyControl, ConfigOverrides, FsyncPolicy};
use leasehold_engine::node::Node;
use leasehold_engine::rpc::RpcServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

// The embedded node runs in this process, so the CLI uses the engine binary's allocator
// (see `leasehold-engine`); plugins keep their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "leasehold", version, about = "Leasehold: a transactional stateful function engine")]
struct Cli {
    #[command(flatten)]
    connection: ConnectionArguments,
    #[command(subcommand)]
    command: Command,
}

/// How the CLI reaches a node: address, token and TLS (global flags).
#[derive(clap::Args)]
struct ConnectionArguments {
    /// Client address of the node to talk to.
    #[arg(long, global = true, env = "LEASEHOLD_ADDRESS", default_value = "127.0.0.1:7420")]
    address: SocketAddr,
    /// File holding the node's shared token (trimmed); needed when the node has one.
    #[arg(long, global = true, env = "LEASEHOLD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Talk TLS to the node, trusting the CA certificate(s) in this PEM file (for a node
    /// with tls_certificate_file).
    #[arg(long, global = true, env = "LEASEHOLD_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// With --tls-ca-file: the client's certificate (PEM), for a node that demands one
    /// (tls_client_ca_file: mutual TLS).
    #[arg(long, global = true, env = "LEASEHOLD_CLIENT_CERTIFICATE_FILE", requires = "client_key_file")]
    client_certificate_file: Option<PathBuf>,
    /// The private key (PEM) of --client-certificate-file.
    #[arg(long, global = true, env = "LEASEHOLD_CLIENT_KEY_FILE", requires = "client_certificate_file")]
    client_key_file: Option<PathBuf>,
    /// With --tls-ca-file: the name the node's certificate must carry (default: the host of
    /// --address).
    #[arg(long, global = true, env = "LEASEHOLD_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs an embedded node in the foreground until Ctrl-C.
    Node {
        #[command(flatten)]
        overrides: ConfigOverrides,
    },
    /// Deploys (or upgrades) a plugin library on the node.
    Deploy {
        /// The plugin's shared library (.so).
        library: PathBuf,
    },
    /// Lists the deployed plugins.
    Plugins,
    /// Runs a workflow with JSON arguments and prints its outcome.
    Invoke {
        plugin: String,
        workflow: String,
        /// The arguments as JSON, e.g. '{"from":1,"to":2,"amount":10}'.
        arguments: String,
        /// Request id for exactly-once retries (any text; empty: untracked).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Reads one key of a plugin's table.
    Read {
        plugin: String,
        table: String,
        /// The key: `u64:N` (8 bytes big-endian, as the SDK's key_u64), `hex:..`, or text.
        key: String,
    },
    /// Shows the node's status.
    Status,
    /// Starts, stops or shows a local cluster of engine processes (development and tests).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Runs a workload benchmark, against an embedded node unless --remote is given.
    Bench(BenchArguments),
    /// Runs the same workload on an embedded node, Redis and PostgreSQL, one after another,
    /// and prints them side by side (installs missing servers with apt-get).
    Compare(CompareArguments),
    /// Draws the runs of a `bench --output-csv` file as two SVG charts, throughput and
    /// latency percentiles against a column, one line per value of another column.
    Plot(PlotArguments),
}

/// What load to generate; shared by `bench` and `compare`.
#[derive(clap::Args)]
struct LoadArguments {
    #[arg(long, value_enum, default_value = "banking")]
    workload: Workload,
    /// Number of keys (accounts; smallbank: customers; travel: hotels and flights each;
    /// movie: movies and users each; social: users); default from WORKLOADS.md.
    #[arg(long)]
    keys: Option<u64>,
    /// Zipfian skew; 0 is uniform.
    #[arg(long, default_value_t = 0.0)]
    theta: f64,
    /// Client connections (PostgreSQL in `compare`: one transaction at a time on each).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests per message (Leasehold invokeMany, Redis pipeline of FCALLs).
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Messages in flight per client.
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    #[arg(long, default_value_t = 10.0)]
    duration_seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Banking/YCSB-T: split the keys into this many groups; client i draws from group
    /// i mod N (with --cluster-file, client i also talks to node i mod N).
    #[arg(long, default_value_t = 1)]
    key_groups: u64,
    /// How requests are made safe to retry: one client session per connection, or a
    /// request id per request. A cluster run uses request ids either way.
    #[arg(long, value_enum, default_value = "sessions")]
    tracking: TrackingFlag,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TrackingFlag {
    Sessions,
    RequestIds,
}

impl LoadArguments {
    fn workload(&self) -> WorkloadKind {
        match self.workload {
            Workload::Banking => WorkloadKind::Banking,
            Workload::YcsbT => WorkloadKind::YcsbT,
            Workload::Smallbank => WorkloadKind::Smallbank,
            Workload::Travel => WorkloadKind::Travel,
            Workload::Movie => WorkloadKind::Movie,
            Workload::Social => WorkloadKind::Social,
        }
    }

    fn bench_config(&self, rate: Option<f64>, load: bool) -> BenchConfig {
        let workload = self.workload();
        let (default_keys, initial_value) = workload.defaults();
        BenchConfig {
            key_groups: self.key_groups.max(1),
            workload,
            keys: self.keys.unwrap_or(default_keys),
            initial_value,
            theta: self.theta,
            clients: self.clients.max(1),
            batch: self.batch.max(1),
            pipeline: self.pipeline.max(1),
            warmup: Duration::from_secs_f64(self.warmup_seconds.max(0.0)),
            duration: Duration::from_secs_f64(self.duration_seconds.max(0.1)),
            rate,
            seed: self.seed,
            load,
            route_by_lease_table: false,
            request_ids_at_node: false,
            tracking: match self.tracking {
                TrackingFlag::Sessions => leasehold_bench::run::Tracking::Sessions,
                TrackingFlag::RequestIds => leasehold_bench::run::Tracking::RequestIds,
            },
        }
    }
}

#[derive(clap::Args)]
struct BenchArguments {
    /// Benchmark the node at --address instead of starting an embedded one.
    #[arg(long)]
    remote: bool,
    /// Benchmark the running cluster of this cluster file: clients spread over its nodes
    /// (client i talks to node i mod N); the plugin is deployed through node 0.
    #[arg(long, conflicts_with = "remote")]
    cluster_file: Option<PathBuf>,
    /// With --cluster-file: every client connects to all nodes and sends each request to
    /// the node holding its keys by a cached lease table (redirected when it is stale),
    /// instead of to node i mod N, which forwards it.
    #[arg(long, requires = "cluster_file")]
    route_by_lease_table: bool,
    /// With --cluster-file: salt each request id so that its exactly-once record lives on
    /// the node the client sends it to (i mod N), which then writes it locally when it
    /// runs the request itself.
    #[arg(long, requires = "cluster_file", conflicts_with = "route_by_lease_table")]
    request_ids_at_node: bool,
    #[command(flatten)]
    load: LoadArguments,
    /// Open loop: requests per second over all clients (latency from intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Skip loading keys (the node already holds them).
    #[arg(long)]
    no_load: bool,
    /// The workload's plugin library; default: next to this executable.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Embedded node: fsync policy.
    #[arg(long, value_enum, default_value = "every-epoch")]
    fsync: FsyncPolicy,
    /// Embedded node: executor threads.
    #[arg(long)]
    executor_threads: Option<usize>,
    /// Embedded node: concurrency control, the lease protocol (default) or a baseline
    /// (2pl, occ) to compare it with.
    #[arg(long, value_enum)]
    cc: Option<ConcurrencyControl>,
    /// Embedded node: data directory (default: a fresh temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Embedded node: a TOML configuration file (the flags above override it).
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the run as one JSON record (parameters, machine, throughput, abort rate,
    /// latency percentiles) to this file, replacing it.
    #[arg(long)]
    output_json: Option<PathBuf>,
    /// Also append the run as one CSV row (the columns of --output-json) to this file,
    /// writing the header when the file is new.
    #[arg(long)]
    output_csv: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CompareArguments {
    #[command(flatten)]
    load: LoadArguments,
    /// fsync: Leasehold every-epoch, Redis appendfsync always, PostgreSQL synchronous_commit
    /// on. async: asynchronous, everysec, off.
    #[arg(long, default_value = "fsync")]
    durability: leasehold_bench::peers::Durability,
    /// Which systems to run, comma-separated: leasehold, redis, postgres.
    #[arg(long, value_delimiter = ',', default_value = "leasehold,redis,postgres")]
    systems: Vec<leasehold_bench::peers::compare::SystemKind>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Open loop: transfers per second over all clients, the same for every system (latency
    /// from the intended send time); without it every system runs closed loop, as fast as
    /// it can.
    #[arg(long)]
    rate: Option<f64>,
    /// Also append one row per system to this CSV file (what `leasehold plot --series
    /// system` draws, e.g. against `--x clients` over runs with different --clients).
    #[arg(long)]
    output_csv: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PlotArguments {
    /// The CSV file that `bench --output-csv` appended runs to.
    #[arg(long)]
    input: PathBuf,
    /// The column on the x axis, e.g. theta, clients, batch, pipeline, executor_threads.
    #[arg(long)]
    x: String,
    /// One line per distinct value of this column, e.g. workload, fsync, node; default:
    /// one line for all runs.
    #[arg(long)]
    series: Option<String>,
    /// Writes PREFIX-throughput.svg and PREFIX-latency.svg (creating PREFIX's directory).
    #[arg(long, value_name = "PREFIX")]
    output_prefix: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Workload {
    Banking,
    YcsbT,
    Smallbank,
    Travel,
    Movie,
    Social,
}

/// A failure with its exit code.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure { code: 1, message: error.to_string() }
    }
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`leasehold cluster status | head`) instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    leasehold_engine::metrics::init_logging("warn");
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("leasehold: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let Cli { connection: cli, command } = cli;
    match command {
        Command::Node { overrides } => run_node(overrides),
        Command::Deploy { library } => {
            let bytes =
                std::fs::read(&library).map_err(|error| format!("cannot read {}: {error}", library.display()))?;
            let info = connect(&cli)?.deploy_plugin(&bytes)?;
            println!("deployed {} {} ({})", info.name, info.version, &info.digest[..info.digest.len().min(16)]);
            println!("  workflows: {}", info.workflows.join(", "));
            Ok(())
        }
        Command::Plugins => {
            for plugin in connect(&cli)?.list_plugins()? {
                println!(
                    "{} {} [{}] workflows: {}",
                    plugin.name,
                    plugin.version,
                    plugin.build_info,
                    plugin.workflows.join(", ")
                );
                for table in plugin.tables {
                    println!("  table {} (values up to {} bytes)", table.name, table.value_bytes_max);
                }
            }
            Ok(())
        }
        Command::Invoke { plugin, workflow, arguments, request_id } => {
            serde_json::from_str::<serde_json::Value>(&arguments)
                .map_err(|error| format!("arguments are not valid JSON: {error}"))?;
            let invocation = Invocation::json(plugin, workflow, arguments).with_request_id(request_id.into_bytes());
            match connect(&cli)?.invoke(invocation)? {
                InvokeResult::Committed { timestamp, output_json, output } => {
                    let shown = output_json.unwrap_or_else(|| format!("{} bytes", output.len()));
                    println!("committed at {}.{}.{}: {shown}", timestamp.epoch, timestamp.node, timestamp.sequence);
                    Ok(())
                }
                InvokeResult::Aborted { timestamp, kind, message } => Err(Failure {
                    code: 3,
                    message: format!(
                        "aborted at {}.{}.{} ({kind}): {message}",
                        timestamp.epoch, timestamp.node, timestamp.sequence
                    ),
                }),
                InvokeResult::Rejected { kind, message } => {
                    Err(Failure { code: 1, message: format!("rejected ({kind}): {message}") })
                }
            }
        }
        Command::Read { plugin, table, key } => {
            let key = parse_key(&key)?;
            match connect(&cli)?.read_key(&plugin, &table, &key)? {
                None => println!("absent"),
                Some(value) => println!("{}", describe_value(&value)),
            }
            Ok(())
        }
        Command::Status => {
            let status = connect(&cli)?.status()?;
            println!(
                "node {} (leasehold {}), concurrency control {}, fsync {}",
                status.node, status.version, status.cc, status.fsync
            );
            println!(
                "  up {:.1} s, durable epoch {}, {} epochs",
                status.uptime_ms as f64 / 1000.0,
                status.durable_epoch,
                status.epochs_total
            );
            println!(
                "  {} committed, {} aborted, {} rejected; {} resident keys",
                status.committed_total, status.aborted_total, status.rejected_total, status.resident_keys
            );
            println!(
                "  plugins: {}",
                if status.plugins.is_empty() { "none".to_string() } else { status.plugins.join(", ") }
            );
            if status.cluster_nodes > 1 {
                println!(
                    "  cluster of {} nodes over {}: {}, generation {}, lease table {:016x}, {} keys lent out",
                    status.cluster_nodes,
                    status.fabric,
                    if status.cluster_synced { "in the view" } else { "agreeing on the view" },
                    status.cluster_generation,
                    status.lease_table_digest,
                    status.leases_lent
                );
                let accesses = (status.local_accesses + status.remote_accesses).max(1);
                println!(
                    "  key accesses: {} local, {} remote ({:.1}% local); {} write-backs refused by fencing",
                    status.local_accesses,
                    status.remote_accesses,
                    100.0 * status.local_accesses as f64 / accesses as f64,
                    status.fenced_total
                );
                let uptime_seconds = (status.uptime_ms as f64 / 1000.0).max(0.001);
                println!(
                    "  placement: {} leases given up ({:.1} per second since start), {} bytes migrated",
                    status.lease_moves_total,
                    status.lease_moves_total as f64 / uptime_seconds,
                    status.bytes_migrated_total
                );
                println!(
                    "  routing: {} requests forwarded to other nodes, {} run for other nodes, {} clients \
                     redirected (stale lease table); load {:.1} (decayed transactions)",
                    status.forwarded_total,
                    status.forwards_received_total,
                    status.redirected_total,
                    status.transactions_decayed
                );
            }
            for call in &status.overdue_plugin_calls {
                println!("  plugin call not returning: {call}");
            }
            if status.abandoned_plugin_calls > 0 {
                println!(
                    "  plugin calls abandoned: {} (their plugins are quarantined until a fixed version is deployed)",
                    status.abandoned_plugin_calls
                );
            }
            Ok(())
        }
        Command::Cluster(command) => cluster::run(command),
        Command::Bench(arguments) => bench(cli.address, cli.token_file.as_deref(), arguments),
        Command::Compare(arguments) => compare(arguments),
        Command::Plot(arguments) => {
            let charts = leasehold_bench::plot::plot_file(
                &arguments.input,
                &arguments.x,
                arguments.series.as_deref(),
                &arguments.output_prefix,
            )?;
            for path in charts {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

/// Connects to the node at `--address` as the global flags say (token, TLS).
fn connect(cli: &ConnectionArguments) -> Result<BlockingClient, Failure> {
    connect_to(cli.address, cli.token_file.as_deref(), tls_settings(cli)?.as_ref())
}

/// The TLS settings of the global flags, when `--tls-ca-file` asks for TLS.
fn tls_settings(cli: &ConnectionArguments) -> Result<Option<TlsSettings>, Failure> {
    let Some(ca_file) = &cli.tls_ca_file else {
        if cli.client_certificate_file.is_some() {
            return Err(
                "--client-certificate-file needs --tls-ca-file (the CA that signed the node's certificate)".into()
            );
        }
        return Ok(None);
    };
    let identity = cli.client_certificate_file.as_deref().zip(cli.client_key_file.as_deref());
    let settings = TlsSettings::from_pem_files(ca_file, identity)?;
    Ok(Some(match &cli.tls_server_name {
        Some(name) => settings.with_server_name(name.clone()),
        None => settings,
    }))
}

fn connect_to(
    address: SocketAddr,
    token_file: Option<&Path>,
    tls: Option<&TlsSettings>,
) -> Result<BlockingClient, Failure> {
    let token = match token_file {
        Some(path) => Some(read_token_file(path).map_err(|error| format!("--token-file: {error}"))?),
        None => None,
    };
    let token = token.as_ref().map(|token| token.as_bytes()).unwrap_or_default();
    let connected = match tls {
        Some(tls) => BlockingClient::connect_tls(address, token, tls),
        None => BlockingClient::connect_with_token(address, token),
    };
    connected.map_err(|error| {
        let hint = match (&error, token_file) {
            (ClientError::AuthenticationFailed, None) => {
                "the node requires a token: pass --token-file or set LEASEHOLD_TOKEN_FILE".to_string()
            }
            (ClientError::AuthenticationFailed, Some(path)) => {
                format!("the token in {} is not the node's", path.display())
            }
            (ClientError::Tls(_), _) => {
                "check --tls-ca-file, --tls-server-name and, for mutual TLS, --client-certificate-file".to_string()
            }
            // A TLS node closes a plaintext connection at once, which looks like an
            // early end of file to capnp.
            _ if tls.is_none() => format!("is a node running at {address}? if it speaks TLS, pass --tls-ca-file"),
            _ => format!("is a node running at {address}?"),
        };
        Failure { code: 1, message: format!("{error} ({hint})") }
    })
}

fn parse_key(key: &str) -> Result<Vec<u8>, Failure> {
    if let Some(number) = key.strip_prefix("u64:") {
        let number: u64 = number.parse().map_err(|_| format!("{number:?} is not an unsigned 64-bit number"))?;
        return Ok(number.to_be_bytes().to_vec());
    }
    if let Some(hex) = key.strip_prefix("hex:") {
        // Checked first: slicing below assumes one byte per digit (a multi-byte character
        // would make it panic), and from_str_radix would accept a sign.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hex:?} is not hexadecimal").into());
        }
        if hex.len() % 2 != 0 {
            return Err(format!("hex key {hex:?} has an odd number of digits").into());
        }
        return (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| Failure::from(format!("{hex:?} is not hexadecimal")))
            })
            .collect();
    }
    Ok(key.as_bytes().to_vec())
}

fn describe_value(value: &[u8]) -> String {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    match <[u8; 8]>::try_from(value) {
        Ok(bytes) => format!("{} (hex {hex})", i64::from_le_bytes(bytes)),
        Err(_) => format!("{} bytes: hex {hex}", value.len()),
    }
}

fn run_node(overrides: ConfigOverrides) -> Result<(), Failure> {
    let config = overrides.resolve()?;
    let node = Node::start(config.clone())?;
    let server = RpcServer::start(&config, node.handle())?;
    println!(
        "leasehold node {} listening on {} (data in {})",
        config.node_id,
        server.local_address(),
        config.data_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    server.stop();
    node.shutdown()?;
    Ok(())
}

fn plugin_next_to_executable(plugin: &str) -> Result<PathBuf, Failure> {
    let executable = std::env::current_exe()?;
    let directory = executable.parent().unwrap_or(Path::new("."));
    let path = directory.join(format!("libleasehold_plugin_{}.so", plugin.replace('-', "_")));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found; build the workspace or pass --plugin", path.display()).into())
    }
}

/// Runs `config` against an embedded node started with `overrides` (data in a fresh
/// temporary directory unless the overrides name one), with `library` deployed; returns
/// the report and how the node ran.
fn run_embedded(
    library: &[u8],
    mut overrides: ConfigOverrides,
    config: &BenchConfig,
    observer: &dyn Observer,
) -> Result<(BenchReport, NodeParameters), Failure> {
    let progress = |message: &str| observer.message(message);
    let temporary = tempfile::tempdir()?;
    overrides.data_dir = Some(overrides.data_dir.take().unwrap_or_else(|| temporary.path().to_path_buf()));
    overrides.client_address = Some("127.0.0.1:0".parse().expect("literal address"));
    let node_config = overrides.resolve()?;
    progress(&format!(
        "embedded node: cc {}, fsync {}, {} executor threads, data in {}",
        node_config.cc.as_str(),
        node_config.fsync.as_str(),
        node_config.executor_threads,
        node_config.data_dir.display()
    ));
    let node = Node::start(node_config.clone())?;
    let server = RpcServer::start(&node_config, node.handle())?;
    let info = node.handle().deploy_plugin(library)?;
    progress(&format!("deployed plugin {} {}", info.name, info.version));
    let report = leasehold_bench::run::run_observed(&[server.local_address()], config, observer);
    let status = node.handle().status();
    server.stop();
    node.shutdown()?;
    progress(&format!(
        "node: {} epochs, {} transactions committed in total, {} concurrency retries",
        status.epochs_total, status.committed_total, status.concurrency_retries_total
    ));
    let parameters = NodeParameters {
        mode: "embedded",
        fsync: Some(node_config.fsync.as_str().to_string()),
        executor_threads: Some(node_config.executor_threads),
        cc: Some(node_config.cc.as_str().to_string()),
        concurrency_retries: Some(status.concurrency_retries_total),
    };
    Ok((report?, parameters))
}

/// The concurrency retries the nodes at `addresses` reported so far, summed.
fn concurrency_retries(addresses: &[SocketAddr]) -> Result<u64, Failure> {
    let mut total = 0;
    for address in addresses {
        total += connect_to(*address, None, None)?.status()?.concurrency_retries_total;
    }
    Ok(total)
}

fn read_library(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()).into())
}

fn bench(address: SocketAddr, token_file: Option<&Path>, arguments: BenchArguments) -> Result<(), Failure> {
    let mut config = arguments.load.bench_config(arguments.rate, !arguments.no_load);
    config.route_by_lease_table = arguments.route_by_lease_table;
    config.request_ids_at_node = arguments.request_ids_at_node;
    // Phase lines on stderr (none with --json), and a progress bar when stderr is a terminal.
    let display = ProgressDisplay::new("bench", arguments.json);
    let library = match &arguments.plugin {
        Some(path) => path.clone(),
        None => plugin_next_to_executable(config.workload.plugin())?,
    };
    let library = read_library(&library)?;
    let (machine, started_at) = (Machine::probe(), leasehold_bench::record::unix_seconds_now());
    let addresses = match &arguments.cluster_file {
        Some(path) => ClusterSpec::from_file(path)?.nodes.iter().map(|node| node.client_address).collect(),
        None => vec![address],
    };
    let (report, node) = if arguments.remote || arguments.cluster_file.is_some() {
        // The benchmark's clients connect without a token; refusing here is clearer than
        // deploying and then failing every client.
        if token_file.is_some() {
            return Err("bench --remote cannot use --token-file yet: benchmark a node without a token".into());
        }
        connect_to(addresses[0], None, None)?.deploy_plugin(&library)?;
        let mode = if arguments.cluster_file.is_some() { "cluster" } else { "remote" };
        let retries_before = concurrency_retries(&addresses)?;
        let report = leasehold_bench::run::run_observed(&addresses, &config, &display)?;
        let node = NodeParameters {
            mode,
            cc: Some(connect_to(addresses[0], None, None)?.status()?.cc),
            concurrency_retries: Some(concurrency_retries(&addresses)?.saturating_sub(retries_before)),
            ..NodeParameters::default()
        };
        (report, node)
    } else {
        let overrides = ConfigOverrides {
            config: arguments.node_config.clone(),
            data_dir: arguments.data_dir.clone(),
            fsync: Some(arguments.fsync),
            executor_threads: arguments.executor_threads,
            cc: arguments.cc,
            ..ConfigOverrides::default()
        };
        run_embedded(&library, overrides, &config, &display)?
    };
    // Written before the verdict decides the exit code: a broken run is worth keeping too.
    let record = RunRecord::new(&report, &node, &machine, Machine::probe().load_average, started_at);
    if let Some(path) = &arguments.output_json {
        record.write_json(path)?;
    }
    if let Some(path) = &arguments.output_csv {
        record.append_csv(path)?;
    }
    print_report(&report, arguments.json)
}

fn print_report(report: &BenchReport, json: bool) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.summary());
    }
    match report.invariant_error() {
        Some(error) => Err(Failure { code: 1, message: format!("invariant violated: {error}") }),
        None => Ok(()),
    }
}

/// `leasehold compare`: Leasehold on an embedded node (as `bench` runs it), then the Redis
/// and PostgreSQL peers, sequentially in this process with the same generator parameters.
fn compare(arguments: CompareArguments) -> Result<(), Failure> {
    use leasehold_bench::peers::compare::{self, Comparison, Outcome, SystemKind};
    use leasehold_bench::peers::{self, Durability};
    let config = arguments.load.bench_config(arguments.rate, true);
    if !config.workload.is_transfer() {
        return Err(format!(
            "compare supports only --workload banking and ycsb-t (the Redis and PostgreSQL peers implement \
             transfers only); run `leasehold bench --workload {}` for Leasehold alone",
            config.workload.plugin()
        )
        .into());
    }
    let progress = |message: &str| {
        if !arguments.json {
            eprintln!("compare: {message}");
        }
    };
    let load_average_before = compare::load_average();
    let selected = |system: SystemKind| arguments.systems.contains(&system);
    let leasehold = selected(SystemKind::Leasehold).then(|| {
        progress("leasehold: embedded node");
        // The embedded-node path of `bench`, with the fsync policy matched to the peers'.
        let fsync = match arguments.durability {
            Durability::Fsync => FsyncPolicy::EveryEpoch,
            Durability::Async => FsyncPolicy::Asynchronous,
        };
        let result = plugin_next_to_executable(config.workload.plugin()).and_then(|path| read_library(&path)).and_then(
            |library| {
                let overrides = ConfigOverrides { fsync: Some(fsync), ..ConfigOverrides::default() };
                run_embedded(&library, overrides, &config, &Messages(progress)).map(|(report, _)| report)
            },
        );
        Outcome::from(result.map_err(|failure| failure.message))
    });
    let redis = selected(SystemKind::Redis).then(|| {
        progress("redis: starting");
        Outcome::from(peers::redis::run(&config, arguments.durability, &progress))
    });
    let postgres = selected(SystemKind::Postgres).then(|| {
        progress("postgresql: starting");
        Outcome::from(peers::postgres::run(&config, arguments.durability, &progress))
    });
    let comparison = Comparison::new(arguments.durability, config, load_average_before, leasehold, redis, postgres);
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.table());
    }
    if let Some(path) = &arguments.output_csv {
        leasehold_bench::record::append_csv_rows(path, &Comparison::CSV_COLUMNS, &comparison.csv_rows())
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if comparison.failed() {
        return Err("a system failed or broke the invariant (see above)".to_string().into());
    }
    Ok(())
}
