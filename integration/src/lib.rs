//! Support for Leasehold's integration tests: finding the binaries and plugin libraries
//! the workspace built, starting engine processes, and starting in-process nodes.
//!
//! The tests run against real components only: the `leasehold-engine` binary, RocksDB on
//! disk in a temporary directory, plugins loaded from their built shared libraries, and
//! Cap'n Proto over loopback sockets (or, for tests that cut links, over a private
//! network of namespaces: [`netns`]).

pub mod history;

pub mod cluster;

pub mod netns;

pub mod simulation;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The directory of the running test's profile (`target/<profile>`), where cargo puts
/// the workspace's binaries and plugin libraries.
pub fn profile_directory() -> PathBuf {
    let executable = std::env::current_exe().expect("the test knows its own path");
    // Test executables live in target/<profile>/deps/.
    let deps = executable.parent().expect("test executable has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// The path of a workspace binary, failing with a hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_directory().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// The shared library of a workspace plugin crate, e.g. `plugin_library("banking")`.
pub fn plugin_library(plugin: &str) -> PathBuf {
    let file = format!("libleasehold_plugin_{}.so", plugin.replace('-', "_"));
    let directory = profile_directory();
    for candidate in [directory.join(&file), directory.join("deps").join(&file)] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{file} is missing in {}: build the workspace first (cargo build --release --workspace)",
        directory.display()
    );
}

/// The bytes of a workspace plugin's library, as a client deploys them.
pub fn plugin_bytes(plugin: &str) -> Vec<u8> {
    std::fs::read(plugin_library(plugin)).expect("read plugin library")
}

/// A `leasehold-engine` process on loopback with its own data directory.
pub struct EngineProcess {
    child: Child,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    extra_arguments: Vec<String>,
    /// How it was launched, kept for restarts.
    launch: Launch,
}

/// How [`EngineProcess::start_with`] runs an engine, beyond its arguments.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Words run in front of the engine binary: a command that ends by exec'ing its
    /// arguments, so that the pid is still the engine's (such as
    /// [`netns::NetworkLab::command_prefix`]). Empty: the binary itself.
    pub command_prefix: Vec<String>,
    /// When set, the engine's stderr goes through the test: every line is written to the
    /// test's stderr behind this label (several engines' logs stay apart) and kept for
    /// [`EngineProcess::log_lines`]. When not set, the engine inherits stderr.
    pub log_label: Option<String>,
    /// The lines kept so far (shared by every incarnation of a restarted engine).
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl EngineProcess {
    /// Starts an engine with a data directory under `data_dir` on a free port.
    pub fn start(data_dir: &Path, extra_arguments: &[&str]) -> EngineProcess {
        Self::start_with(data_dir, Launch::default(), extra_arguments)
    }

    /// Like [`EngineProcess::start`], launched as `launch` says.
    pub fn start_with(data_dir: &Path, mut launch: Launch, extra_arguments: &[&str]) -> EngineProcess {
        if launch.log_label.is_some() {
            launch.log.get_or_insert_with(Default::default);
        }
        let extra_arguments: Vec<String> = extra_arguments.iter().map(|s| s.to_string()).collect();
        Self::spawn(data_dir.to_path_buf(), "127.0.0.1:0".parse().expect("literal address"), extra_arguments, launch)
    }

    fn spawn(data_dir: PathBuf, address: SocketAddr, extra_arguments: Vec<String>, launch: Launch) -> EngineProcess {
        let mut command = match launch.command_prefix.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(binary("leasehold-engine"));
                command
            }
            None => Command::new(binary("leasehold-engine")),
        };
        let stderr = if launch.log.is_some() { Stdio::piped() } else { Stdio::inherit() };
        if launch.log.is_some() {
            // Plain lines: they are kept and printed behind a label, not shown on a terminal.
            command.env("NO_COLOR", "1");
        }
        let mut child = command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--client-address")
            .arg(address.to_string())
            .args(&extra_arguments)
            .env("RUST_LOG", std::env::var("LEASEHOLD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start leasehold-engine");
        if let (Some(stderr), Some(log), Some(label)) = (child.stderr.take(), &launch.log, &launch.log_label) {
            let (log, label) = (log.clone(), label.clone());
            // Written past the test harness's capture, as an inherited stderr would be.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(std::io::stderr().lock(), "[{label}] {line}");
                    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            assert!(Instant::now() < deadline, "engine did not report its address in time");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) =
                        line.rsplit("listening on ").next().filter(|_| line.contains("listening on "))
                    {
                        break address.trim().parse().expect("engine printed a socket address");
                    }
                }
                Some(Err(error)) => panic!("reading engine output: {error}"),
                None => panic!("engine exited before listening: {:?}", child.wait()),
            }
        };
        // Keep draining stdout so the engine never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        EngineProcess { child, address, data_dir, extra_arguments, launch }
    }

    /// What the engine wrote to stderr so far, when launched with a
    /// [`Launch::log_label`] (empty otherwise).
    pub fn log_lines(&self) -> Vec<String> {
        self.launch
            .log
            .as_ref()
            .map(|log| log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The engine's process id (for signals a test sends itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the engine: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        self.child.wait().expect("wait for engine")
    }

    /// Starts the engine again on the same data directory and the same port.
    pub fn restart(&mut self) {
        self.kill();
        let restarted =
            Self::spawn(self.data_dir.clone(), self.address, self.extra_arguments.clone(), self.launch.clone());
        *self = restarted;
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The balances of banking accounts `0..count`, read through `client` in one message;
/// every account must exist and every read commit.
pub fn banking_balances(client: &leasehold_client::BlockingClient, count: u64) -> Vec<i64> {
    use leasehold_client::{Invocation, InvokeResult};
    let reads = (0..count)
        .map(|account| {
            let arguments = leasehold_sdk::encode(&leasehold_plugin_api::banking::Account { account });
            Invocation::encoded("banking", "balance", arguments.expect("encode"))
        })
        .collect();
    client
        .invoke_many(reads)
        .expect("read balances")
        .into_iter()
        .map(|result| {
            let InvokeResult::Committed { output, .. } = result else { panic!("balance read failed: {result:?}") };
            leasehold_sdk::decode::<Option<i64>>(&output).expect("decode balance").expect("an opened account")
        })
        .collect()
}

/// A small seeded number source for test clients: each call returns a number below
/// `modulus` (a 64-bit linear congruential generator, high bits). Deterministic per seed,
/// so a failing run's requests can be reproduced; not for anything but test load.
pub fn seeded_numbers(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |modulus: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % modulus
    }
}

/// The share of local accesses of a cluster between two status snapshots of every node
/// (`before` and `after`, by node id).
pub fn local_share(before: &[leasehold_client::NodeStatus], after: &[leasehold_client::NodeStatus]) -> f64 {
    let local: u64 = after.iter().zip(before).map(|(a, b)| a.local_accesses - b.local_accesses).sum();
    let remote: u64 = after.iter().zip(before).map(|(a, b)| a.remote_accesses - b.remote_accesses).sum();
    local as f64 / (local + remote).max(1) as f64
}
