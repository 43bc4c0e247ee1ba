//! `leasehold-engine`: runs one engine node until SIGINT or SIGTERM.
//!
//! Configuration comes from a TOML file (`--config`), overridden by flags and
//! `LEASEHOLD_*` environment variables. On a signal the node stops accepting requests,
//! finishes and commits the ones it already took, closes RocksDB and exits 0.

use clap::Parser;
use leasehold_engine::config::ConfigOverrides;
use leasehold_engine::node::Node;
use leasehold_engine::rpc::RpcServer;
use std::process::ExitCode;

// Plugins keep their own allocator (they are separate shared libraries), and the engine
// never frees what a plugin allocated, so the engine's allocator is its own choice.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Leasehold engine node.
#[derive(Parser, Debug)]
#[command(name = "leasehold-engine", version, about)]
struct Arguments {
    #[command(flatten)]
    overrides: ConfigOverrides,
}

fn main() -> ExitCode {
    leasehold_engine::metrics::init_logging("info");
    let arguments = Arguments::parse();
    match run(arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("leasehold-engine: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(arguments: Arguments) -> Result<(), String> {
    let config = arguments.overrides.resolve().map_err(|error| error.to_string())?;
    if let Some(address) = config.metrics_address {
        leasehold_engine::metrics::install_prometheus(address).map_err(|error| error.to_string())?;
    }
    let node = Node::start(config.clone()).map_err(|error| error.to_string())?;
    let server = RpcServer::start(&config, node.handle()).map_err(|error| error.to_string())?;
    // Tests and scripts wait for this line to know the node is ready and where.
    println!("leasehold-engine node {} listening on {}", config.node_id, server.local_address());
    wait_for_signal()?;
    tracing::info!("signal received; shutting down");
    server.stop();
    node.shutdown().map_err(|error| error.to_string())?;
    Ok(())
}

fn wait_for_signal() -> Result<(), String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|error| error.to_string())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(|error| error.to_string()),
            _ = terminate.recv() => Ok(()),
        }
    })
}
