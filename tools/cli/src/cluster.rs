//! `leasehold cluster start|stop|status`: a local cluster of engine processes on this
//! host, for development and tests.
//!
//! `start` writes `<directory>/cluster.toml` (unless it exists: then that file is used
//! as it is), starts one `leasehold-engine` per node in the background with its log in
//! `<directory>/node-<id>.log` and its pid in `<directory>/node-<id>.pid`, and waits until
//! every node agreed on the cluster view. `stop` sends SIGTERM to every node at once (a
//! node finishes the epochs it took part in, which needs its peers) and waits for them.

use super::Failure;
use leasehold_client::BlockingClient;
use leasehold_engine::cluster::{ClusterSpec, FabricBackend};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Writes a cluster file (unless the directory has one) and starts every node.
    Start {
        /// Where the cluster file, data directories, logs and pid files live.
        #[arg(long, default_value = "leasehold-cluster")]
        directory: PathBuf,
        /// Nodes in a new cluster file.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// The fabric between the nodes, for a new cluster file.
        #[arg(long, value_enum, default_value = "shm")]
        fabric: FabricBackend,
        /// Node i's client API listens on base_port + i, its fabric on base_port + 100 + i.
        #[arg(long, default_value_t = 7420)]
        base_port: u16,
        /// More flags for every engine, after `--` (e.g. `-- --fsync asynchronous`).
        #[arg(last = true)]
        engine_arguments: Vec<String>,
    },
    /// Stops every node of the cluster in the directory.
    Stop {
        #[arg(long, default_value = "leasehold-cluster")]
        directory: PathBuf,
    },
    /// Shows every node's status.
    Status {
        #[arg(long, default_value = "leasehold-cluster")]
        directory: PathBuf,
    },
}

pub fn run(command: ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Start { directory, nodes, fabric, base_port, engine_arguments } => {
            start(&directory, nodes, fabric, base_port, &engine_arguments)
        }
        ClusterCommand::Stop { directory } => stop(&directory),
        ClusterCommand::Status { directory } => status(&directory),
    }
}

fn cluster_file(directory: &Path) -> PathBuf {
    directory.join("cluster.toml")
}

fn pid_file(directory: &Path, node: u16) -> PathBuf {
    directory.join(format!("node-{node}.pid"))
}

fn write_cluster_file(path: &Path, nodes: u16, fabric: FabricBackend, base_port: u16) -> Result<(), Failure> {
    if nodes == 0 || u32::from(base_port) + 100 + u32::from(nodes) > 65535 {
        return Err(format!("cannot place {nodes} nodes from port {base_port}").into());
    }
    let mut text = format!(
        "# A local Leasehold cluster, written by `leasehold cluster start`.\nfabric = \"{}\"\n",
        fabric.as_str()
    );
    for node in 0..nodes {
        text.push_str(&format!(
            "\n[[nodes]]\nid = {node}\nclient_address = \"127.0.0.1:{}\"\npeer_address = \"127.0.0.1:{}\"\n\
             data_dir = \"node-{node}\"\n",
            base_port + node,
            base_port + 100 + node
        ));
    }
    std::fs::write(path, text).map_err(|error| format!("cannot write {}: {error}", path.display()).into())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn start(
    directory: &Path,
    nodes: u16,
    fabric: FabricBackend,
    base_port: u16,
    engine_arguments: &[String],
) -> Result<(), Failure> {
    std::fs::create_dir_all(directory).map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let file = cluster_file(directory);
    if !file.exists() {
        write_cluster_file(&file, nodes, fabric, base_port)?;
    }
    let spec = ClusterSpec::from_file(&file)?;
    let engine = std::env::current_exe()?.parent().unwrap_or(Path::new(".")).join("leasehold-engine");
    if !engine.exists() {
        return Err(format!("{} not found; build the workspace first", engine.display()).into());
    }
    for node in &spec.nodes {
        if let Some(pid) = read_pid(&pid_file(directory, node.id)).filter(|&pid| process_alive(pid)) {
            return Err(format!("node {} is already running (pid {pid}); stop the cluster first", node.id).into());
        }
    }
    for node in &spec.nodes {
        let log_path = directory.join(format!("node-{}.log", node.id));
        let log = std::fs::File::create(&log_path)
            .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
        let child = Command::new(&engine)
            .arg("--cluster-file")
            .arg(&file)
            .arg("--node-id")
            .arg(node.id.to_string())
            .args(engine_arguments)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", engine.display()))?;
        std::fs::write(pid_file(directory, node.id), child.id().to_string())?;
    }
    // A node is up once it agreed on the view with every peer.
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &spec.nodes {
        loop {
            let synced = BlockingClient::connect(node.client_address)
                .and_then(|client| client.status())
                .map(|status| status.cluster_synced)
                .unwrap_or(false);
            if synced {
                break;
            }
            let pid = read_pid(&pid_file(directory, node.id)).unwrap_or(0);
            if !process_alive(pid) {
                return Err(format!(
                    "node {} exited; see {}",
                    node.id,
                    directory.join(format!("node-{}.log", node.id)).display()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!("node {} did not join the cluster within 60 s", node.id).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("cluster of {} nodes over {} is up ({})", spec.node_count(), spec.fabric.as_str(), file.display());
    for node in &spec.nodes {
        println!("  node {}: client {}, peer {}", node.id, node.client_address, node.peer_address);
    }
    Ok(())
}

fn stop(directory: &Path) -> Result<(), Failure> {
    let spec = ClusterSpec::from_file(&cluster_file(directory))?;
    let mut running = Vec::new();
    for node in &spec.nodes {
        if let Some(pid) = read_pid(&pid_file(directory, node.id)).filter(|&pid| process_alive(pid)) {
            Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
            running.push((node.id, pid));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, pid) in running {
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(pid) {
            eprintln!("node {node} (pid {pid}) did not stop within 30 s; killing it");
            Command::new("kill").arg("-KILL").arg(pid.to_string()).status()?;
        }
        let _ = std::fs::remove_file(pid_file(directory, node));
        println!("node {node} stopped");
    }
    Ok(())
}

fn status(directory: &Path) -> Result<(), Failure> {
    let spec = ClusterSpec::from_file(&cluster_file(directory))?;
    println!("{} nodes over {}", spec.node_count(), spec.fabric.as_str());
    for node in &spec.nodes {
        match BlockingClient::connect(node.client_address).and_then(|client| client.status()) {
            Ok(status) => println!(
                "  node {}: {}, generation {}, durable epoch {}, {} committed, {} keys, accesses {} local / {} remote, \
                 {} lent, {} leases moved away, lease table {:016x}",
                status.node,
                if status.cluster_synced { "in the view" } else { "agreeing on the view" },
                status.cluster_generation,
                status.durable_epoch,
                status.committed_total,
                status.resident_keys,
                status.local_accesses,
                status.remote_accesses,
                status.leases_lent,
                status.lease_moves_total,
                status.lease_table_digest
            ),
            Err(error) => println!("  node {}: unreachable at {} ({error})", node.id, node.client_address),
        }
    }
    Ok(())
}
