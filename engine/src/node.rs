//! Node wiring: opens storage and the plugin registry, starts the epoch driver, executor
//! pool and commit thread (with `cc = "2pl"|"occ"`, the baseline driver of `cc` instead
//! of the epoch driver), and offers [`NodeHandle`], the in-process API that the RPC
//! server (and embedding programs) call.

use crate::cc::over_fabric::Protocol;
use crate::cc::{BaselineDriver, BaselineParts, ConcurrencyStats};
use crate::cluster::driver::baseline::BaselineState;
use crate::cluster::driver::{ClusterDriver, ClusterStats, DriverState};
use crate::cluster::forward::{ForwardServer, ForwardedRequest, Forwards};
use crate::cluster::lease::{LeaseTable, LeaseTables};
use crate::cluster::routing::{self, Route};
use crate::cluster::transport::{Deliver, Transport};
use crate::cluster::wire::Frame;
use crate::cluster::{ClusterError, ClusterSpec};
use crate::config::{ConcurrencyControl, Config, ConfigError};
use crate::model::{
    Arguments, Invocation, LeaseTableSnapshot, NodeId, NodeStatus, Outcome, PluginInfo, Redirect, Rejection, RequestId,
    REQUEST_ID_BYTES_MAX,
};
use crate::plugin::{AccessLimits, LoadedPlugin, PluginError, PluginRegistry};
use crate::storage::{data_key_into, SlotStore, Storage, StorageError, StorageOptions};
use crate::txn::access::{AccessMode, AccessSet};
use crate::txn::commit::{Checkpointer, CommitCluster, Committer};
use crate::txn::epoch::{DriverMessage, EpochDriver};
use crate::txn::executor::Executor;
use crate::txn::ledger::Ledger;
use crate::txn::sessions::SessionLimits;
use crate::txn::tpg::GraphBuilder;
use crate::txn::{PlannedTransaction, Reply, ReplyBatch, Submission, TransactionBody, TransactionStats};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors starting or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot create data directory {path}: {source}")]
    DataDirectory { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot start threads: {0}")]
    Threads(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Waiters for the acknowledgements of a plugin deploy sent to the peers, by deploy id.
type DeployWaiters = Mutex<rustc_hash::FxHashMap<u64, Sender<(NodeId, Option<String>)>>>;

/// How long a deploy waits for every peer to load the plugin.
const DEPLOY_PATIENCE: Duration = Duration::from_secs(30);

/// What a cluster node keeps beyond a single node's state.
struct ClusterShared {
    spec: ClusterSpec,
    incarnation: u32,
    transport: Arc<Transport>,
    stats: Arc<ClusterStats>,
    leases: Arc<LeaseTables>,
    deploys: Arc<DeployWaiters>,
    next_deploy: std::sync::atomic::AtomicU64,
    /// Requests this node forwarded and waits for.
    forwards: Arc<Forwards>,
    /// Keeps the thread that runs requests forwarded to this node alive.
    _forward_server: Arc<ForwardServer>,
}

struct Shared {
    config: Config,
    registry: Arc<PluginRegistry>,
    cluster: Option<ClusterShared>,
    inbox: Sender<DriverMessage>,
    accepting: AtomicBool,
    stats: Arc<TransactionStats>,
    /// Counters of the 2pl/occ baselines (zero under leases).
    concurrency: Arc<ConcurrencyStats>,
    started: Instant,
    limits: AccessLimits,
    /// For opening client sessions.
    storage: Arc<Storage>,
    ledger: Arc<Mutex<Ledger>>,
}

/// A running engine node. Stop it with [`Node::shutdown`] (dropping it does the same).
pub struct Node {
    handle: NodeHandle,
    driver: Option<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    storage: Arc<Storage>,
}

/// The pieces `Node::start` wires differently for a cluster.
struct ClusterParts {
    shared: ClusterShared,
    commit: CommitCluster,
}

/// A cheap, thread-safe handle to a running node. The node's RocksDB closes once the
/// node has stopped and the last handle is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

/// The result of a workflow invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    pub outcome: Outcome,
    /// The output as JSON, when the request came with JSON arguments and committed.
    pub output_json: Option<String>,
}

/// What became of a request submitted with [`NodeHandle::submit_or_redirect`].
pub enum Submitted {
    /// It runs (here, or forwarded); its outcome arrives through the pending result.
    Running(Pending<Completed>),
    /// Nothing ran: its keys are mostly held by another node, where the client should
    /// send it.
    Redirected(Redirect),
}

/// What became of one request of a message submitted with
/// [`NodeHandle::submit_all_into`].
pub enum SubmittedInto {
    /// It runs here; its outcome arrives with the message's batch.
    Batch(BatchPlace),
    /// It was forwarded or redirected, and answers on its own.
    Alone(Submitted),
}

/// Where a planned request runs (see `NodeHandle::plan_and_route`).
enum Routed {
    Here(PlannedTransaction, Option<(Arc<LoadedPlugin>, u32)>),
    Elsewhere(Submitted),
}

/// A request's place in a [`ReplyBatch`], and how to present its outcome.
pub struct BatchPlace {
    place: u32,
    json: Option<(Arc<LoadedPlugin>, u32)>,
}

impl BatchPlace {
    /// The request's outcome among the results of its sealed batch.
    pub fn completed(self, results: &mut [Option<crate::txn::ReplyResult>]) -> Result<Completed, Rejection> {
        // A place is answered before the batch's results are sent; a missing one would
        // mean the node stopped.
        let result = results.get_mut(self.place as usize).and_then(Option::take);
        completed(result.unwrap_or(Err(Rejection::ShuttingDown)), self.json)
    }
}

/// An outcome as the caller sees it: with the output as JSON when the request came in
/// JSON (`json`: the plugin and workflow that convert it).
fn completed(
    outcome: Result<Outcome, Rejection>,
    json: Option<(Arc<LoadedPlugin>, u32)>,
) -> Result<Completed, Rejection> {
    let outcome = outcome?;
    let output_json = match (&outcome, json) {
        (Outcome::Committed { output, .. }, Some((plugin, workflow))) => {
            Some(plugin.output_to_json(workflow, output).unwrap_or_else(|error| {
                format!("{{\"error\":{:?}}}", format!("cannot convert output to JSON: {error}"))
            }))
        }
        _ => None,
    };
    Ok(Completed { outcome, output_json })
}

/// A submitted request; [`Pending::wait`] resolves once its epoch is durable.
pub struct Pending<T> {
    receiver: tokio::sync::oneshot::Receiver<Result<Outcome, Rejection>>,
    json: Option<(Arc<LoadedPlugin>, u32)>,
    _result: PhantomData<fn() -> T>,
}

impl<T> Pending<T> {
    async fn outcome(self) -> (Result<Outcome, Rejection>, Option<(Arc<LoadedPlugin>, u32)>) {
        // The driver drops the reply only when the node stopped before the request ran.
        let outcome = self.receiver.await.unwrap_or(Err(Rejection::ShuttingDown));
        (outcome, self.json)
    }
}

impl Pending<Completed> {
    pub async fn wait(self) -> Result<Completed, Rejection> {
        let (outcome, json) = self.outcome().await;
        completed(outcome, json)
    }
}

impl Pending<Option<Vec<u8>>> {
    pub async fn wait(self) -> Result<Option<Vec<u8>>, Rejection> {
        match self.outcome().await.0? {
            Outcome::Committed { output, .. } => match output.split_first() {
                Some((1, value)) => Ok(Some(value.to_vec())),
                _ => Ok(None),
            },
            Outcome::Aborted { message, .. } => Err(Rejection::Storage(format!("read failed: {message}"))),
        }
    }
}

impl Node {
    /// Opens the data directory and starts the node's threads.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| NodeError::DataDirectory { path: config.data_dir.clone(), source })?;
        let spec = config.cluster_file.as_deref().map(ClusterSpec::from_file).transpose()?;
        let storage_options = StorageOptions {
            result_retention: Duration::from_secs(config.request_id_retention_hours.saturating_mul(3600)),
            // A cluster node folds its log only once the cluster agreed what is durable
            // everywhere (the first view agreement does it).
            fold_log_on_open: spec.is_none(),
        };
        let storage = Arc::new(Storage::open_with(&config.data_dir.join("rocksdb"), storage_options)?);
        let registry = Arc::new(PluginRegistry::open(config.data_dir.join("plugins"), storage.clone())?);
        let durable_epoch = storage.durable_epoch()?;
        let stats = Arc::new(TransactionStats::default());
        stats.durable_epoch.store(durable_epoch, Ordering::Relaxed);
        let session_limits = SessionLimits {
            sessions_max: config.sessions_max,
            outcomes_per_session_max: config.session_outcomes_max,
            outcomes_total_max: config.session_outcomes_total_max,
            idle_expiry_seconds: config.request_id_retention_hours.saturating_mul(3600),
        };
        let mut ledger = Ledger::new(config.recent_results_max, session_limits);
        // A single node's sessions come back from storage (the log is folded by now); a
        // cluster node keeps session outcomes under ids instead (see `plan_and_route`).
        if spec.is_none() {
            for stored in storage.stored_sessions()? {
                ledger.sessions.restore(stored);
            }
        }
        let ledger = Arc::new(Mutex::new(ledger));
        let (inbox, inbox_receiver) = crossbeam_channel::unbounded();
        // A few epochs may wait for the disk; beyond that the driver waits too, which
        // bounds memory when the disk is slower than execution.
        let (commits, commit_receiver) = crossbeam_channel::bounded(1024);
        let executor_threads = config.executor_threads;
        let thread_error = |error: rayon::ThreadPoolBuildError| NodeError::Threads(error.to_string());

        let mut cluster_parts = None;
        let concurrency = Arc::new(ConcurrencyStats::default());
        let driver: Box<dyn FnOnce() + Send> = match &spec {
            // 2pl/occ on a single node (in a cluster, the cluster driver runs them).
            None if config.cc != ConcurrencyControl::Lease => {
                let driver = BaselineDriver::start(BaselineParts {
                    node: config.node_id,
                    protocol: config.cc,
                    storage: storage.clone(),
                    ledger: ledger.clone(),
                    stats: stats.clone(),
                    concurrency: concurrency.clone(),
                    inbox: inbox_receiver,
                    commits,
                    executor_threads,
                    transactions_max: config.epoch_transactions_max,
                    durable_epoch,
                    abandon_after: config.plugin_call_abandon_after(),
                })
                .map_err(NodeError::Threads)?;
                Box::new(move || driver.run())
            }
            None => {
                let driver = EpochDriver {
                    node: config.node_id,
                    storage: storage.clone(),
                    ledger: ledger.clone(),
                    stats: stats.clone(),
                    executor: Executor::new(executor_threads, config.plugin_call_abandon_after())
                        .map_err(thread_error)?,
                    inbox: inbox_receiver,
                    commits,
                    epoch_transactions_max: config.epoch_transactions_max,
                    epoch_linger: Duration::from_micros(config.epoch_linger_us),
                    epoch: durable_epoch,
                    slots: SlotStore::new(),
                    graph_builder: GraphBuilder::new(),
                };
                Box::new(move || driver.run())
            }
            Some(spec) => {
                let me = config.node_id;
                let incarnation = storage.next_incarnation()?;
                let fabric = spec.open_fabric(me)?;
                let (notice_sender, notices) = crossbeam_channel::unbounded();
                let deploys: Arc<DeployWaiters> = Arc::default();
                let transport_cell: Arc<std::sync::OnceLock<Arc<Transport>>> = Arc::default();
                let cluster_stats = Arc::new(ClusterStats::default());
                let forwards: Arc<Forwards> = Arc::default();
                let planner_registry = registry.clone();
                let planner_limits =
                    AccessLimits { keys_max: config.access_set_keys_max, key_bytes_max: config.key_bytes_max };
                let forward_server = Arc::new(
                    ForwardServer::start(
                        Box::new(move |invocation| {
                            plan_invocation(&planner_registry, planner_limits, invocation).map(|(planned, _)| planned)
                        }),
                        inbox.clone(),
                        cluster_stats.clone(),
                        transport_cell.clone(),
                    )
                    .map_err(|error| NodeError::Threads(error.to_string()))?,
                );
                let deliver = peer_delivery(PeerDelivery {
                    inbox: inbox.clone(),
                    notices: notice_sender,
                    deploys: deploys.clone(),
                    registry: registry.clone(),
                    transport: transport_cell.clone(),
                    forwards: forwards.clone(),
                    forward_server: forward_server.clone(),
                });
                let baseline = match config.cc {
                    ConcurrencyControl::Lease => None,
                    ConcurrencyControl::TwoPhaseLocking | ConcurrencyControl::Optimistic => {
                        let protocol = match config.cc {
                            ConcurrencyControl::TwoPhaseLocking => Protocol::TwoPhaseLocking,
                            _ => Protocol::Optimistic,
                        };
                        Some(BaselineState::new(protocol, fabric.clone(), concurrency.clone(), spec.node_count()))
                    }
                };
                let transport = Transport::start(fabric, me, spec.node_count(), incarnation, deliver)
                    .map_err(|source| ClusterError::Fabric { backend: spec.fabric.as_str(), source })?;
                let _ = transport_cell.set(transport.clone());
                let table = LeaseTable::home(spec.node_count());
                cluster_stats.node_count.store(u64::from(spec.node_count()), Ordering::Relaxed);
                cluster_stats.lease_table_digest.store(table.digest(), Ordering::Relaxed);
                let leases = Arc::new(LeaseTables::new(table));
                let pool = crate::cluster::workers::Workers::start(executor_threads)
                    .map_err(|error| NodeError::Threads(error.to_string()))?;
                let driver = ClusterDriver {
                    node: me,
                    node_count: spec.node_count(),
                    incarnation,
                    storage: storage.clone(),

                    stats: stats.clone(),
                    cluster_stats: cluster_stats.clone(),
                    pool,
                    inbox: inbox_receiver,
                    loopback: inbox.clone(),
                    commits,
                    transport: transport.clone(),
                    leases: leases.clone(),
                    epoch_transactions_max: config.epoch_transactions_max,
                    forwards: forwards.clone(),
                    abandon_after: config.plugin_call_abandon_after(),
                    state: DriverState::new(
                        spec.node_count(),
                        me,
                        incarnation,
                        durable_epoch,
                        config.placement_config(),
                        baseline,
                    ),
                };
                tracing::info!(
                    node = me,
                    incarnation,
                    nodes = spec.node_count(),
                    fabric = spec.fabric.as_str(),
                    "joining the cluster"
                );
                cluster_parts = Some(ClusterParts {
                    shared: ClusterShared {
                        spec: spec.clone(),
                        incarnation,
                        transport: transport.clone(),
                        stats: cluster_stats,
                        leases,
                        deploys,
                        next_deploy: std::sync::atomic::AtomicU64::new(0),
                        forwards,
                        _forward_server: forward_server,
                    },
                    commit: CommitCluster { transport, notices },
                });
                Box::new(move || driver.run())
            }
        };
        let (cluster_shared, commit_cluster) = match cluster_parts {
            Some(parts) => (Some(parts.shared), Some(parts.commit)),
            None => (None, None),
        };
        // Few checkpoints queue up: each carries up to a checkpoint interval of epochs.
        let (checkpoints, checkpoint_receiver) = crossbeam_channel::bounded(2);
        let checkpointer = Checkpointer {
            storage: storage.clone(),
            ledger: ledger.clone(),
            stats: stats.clone(),
            records: checkpoint_receiver,
        };
        let committer = Committer {
            checkpoints,
            storage: storage.clone(),
            ledger: ledger.clone(),
            stats: stats.clone(),
            fsync: config.fsync,
            epochs: commit_receiver,
            checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
            cluster: commit_cluster,
        };
        let checkpointer = std::thread::Builder::new()
            .name("leasehold-checkpoint".into())
            .spawn(move || checkpointer.run())
            .map_err(|error| NodeError::Threads(error.to_string()))?;
        let committer = std::thread::Builder::new()
            .name("leasehold-commit".into())
            .spawn(move || committer.run())
            .map_err(|error| NodeError::Threads(error.to_string()))?;
        let driver = std::thread::Builder::new()
            .name("leasehold-epoch".into())
            .spawn(driver)
            .map_err(|error| NodeError::Threads(error.to_string()))?;
        let limits = AccessLimits { keys_max: config.access_set_keys_max, key_bytes_max: config.key_bytes_max };
        tracing::info!(node = config.node_id, data_dir = %config.data_dir.display(), durable_epoch, "node started");
        let shared = Shared {
            config,
            registry,
            cluster: cluster_shared,
            inbox,
            accepting: AtomicBool::new(true),
            stats,
            concurrency,
            started: Instant::now(),
            limits,
            storage: storage.clone(),
            ledger: ledger.clone(),
        };
        let shared = Arc::new(shared);
        watch_plugin_calls(Arc::downgrade(&shared));
        Ok(Node {
            handle: NodeHandle { shared },
            driver: Some(driver),
            committer: Some(committer),
            checkpointer: Some(checkpointer),
            storage,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops taking requests, finishes and commits every request already submitted,
    /// and flushes storage.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), NodeError> {
        let Some(driver) = self.driver.take() else { return Ok(()) };
        self.handle.shared.accepting.store(false, Ordering::Release);
        let _ = self.handle.shared.inbox.send(DriverMessage::Stop);
        // The driver drops its side of the commit channel when it returns, which lets the
        // commit thread finish the last epochs and return too.
        let _ = driver.join();
        // Likewise the commit thread's end lets the checkpoint thread finish.
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
        if let Some(cluster) = &self.handle.shared.cluster {
            cluster.transport.stop();
        }
        self.storage.flush()?;
        tracing::info!(node = self.handle.shared.config.node_id, "node stopped");
        Ok(())
    }
}

/// Starts the thread that reports plugin calls running longer than
/// `plugin_call_warn_ms`: an error line per call (naming the plugin and the function)
/// and the `leasehold_plugin_calls_overdue` gauge. Native code cannot be stopped; past
/// `plugin_call_abandon_ms` the epoch driver abandons the call (`txn::executor`), which
/// frees its epoch but not its thread. The thread ends once the node is gone.
fn watch_plugin_calls(shared: std::sync::Weak<Shared>) {
    let Some(threshold) = shared.upgrade().map(|shared| Duration::from_millis(shared.config.plugin_call_warn_ms))
    else {
        return;
    };
    let period = (threshold / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let spawned = std::thread::Builder::new().name("leasehold-plugin-watch".into()).spawn(move || {
        let mut reported = std::collections::HashSet::new();
        loop {
            std::thread::sleep(period);
            if shared.strong_count() == 0 {
                return;
            }
            let calls = crate::plugin::watchdog::overdue(threshold);
            metrics::gauge!(crate::metrics::PLUGIN_CALLS_OVERDUE).set(calls.len() as f64);
            reported.retain(|started| calls.iter().any(|call| call.started_us == *started));
            for call in &calls {
                if reported.insert(call.started_us) {
                    tracing::error!(
                        plugin = %call.plugin,
                        function = %call.function,
                        running_s = call.running.as_secs_f64(),
                        "a plugin call has not returned: it holds its executor thread (and its epoch, \
                         until plugin_call_abandon_ms); deploy a fixed version of the plugin"
                    );
                }
            }
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the plugin call watchdog; overdue calls show in status only");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "error while stopping the node");
        }
    }
}

impl NodeHandle {
    /// Deploys (or upgrades) a plugin from its library bytes. Blocking: it writes the
    /// library and loads it.
    pub fn deploy_plugin(&self, library: &[u8]) -> Result<PluginInfo, PluginError> {
        let info = self.shared.registry.deploy(library)?;
        metrics::counter!(crate::metrics::PLUGIN_DEPLOYS_TOTAL).increment(1);
        if let Some(cluster) = &self.shared.cluster {
            deploy_to_peers(cluster, library)?;
        }
        Ok(info)
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.shared.registry.list()
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn rejected<T>(&self, rejection: Rejection) -> Result<T, Rejection> {
        self.count_rejections(1);
        Err(rejection)
    }

    /// Counts requests refused before they reached the node (for example malformed ones
    /// the RPC edge turned away), in the status counter and the metric.
    pub fn count_rejections(&self, count: u64) {
        TransactionStats::count(&self.shared.stats.rejected, count);
        metrics::counter!(crate::metrics::REJECTED_TOTAL).increment(count);
    }

    fn enqueue(
        &self,
        transaction: PlannedTransaction,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Outcome, Rejection>>, Rejection> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return self.rejected(Rejection::ShuttingDown);
        }
        let (reply, receiver) = Reply::one();
        match self.shared.inbox.send(DriverMessage::Submit(Submission { transaction, reply })) {
            Ok(()) => Ok(receiver),
            Err(_) => self.rejected(Rejection::ShuttingDown),
        }
    }

    /// Opens a client session (see `openSession` in `leasehold.capnp`): durable once this
    /// returns. A single node keeps the session's outcomes in its ledger; a cluster keeps
    /// them under ids (`RequestId::with_session_as_id`) and only hands out the number.
    pub fn open_session(&self) -> Result<u64, Rejection> {
        if !self.shared.accepting.load(Ordering::Acquire) {
            return Err(Rejection::ShuttingDown);
        }
        let now_unix_seconds = crate::storage::unix_seconds_now();
        let node_count = self.shared.cluster.as_ref().map_or(1, |cluster| cluster.spec.node_count());
        let open = |storage: &Storage| {
            storage
                .open_session(self.shared.config.node_id, node_count, now_unix_seconds)
                .map_err(|error| Rejection::Storage(error.to_string()))
        };
        if self.shared.cluster.is_some() {
            return open(&self.shared.storage);
        }
        // The synced write happens outside the ledger's lock, which admission takes for
        // every batch. Sessions opened at the same moment may each find the last place
        // free, so `sessions_max` can be passed by the number of RPC threads.
        self.shared.ledger.lock().sessions.has_room(now_unix_seconds)?;
        let session = open(&self.shared.storage)?;
        self.shared.ledger.lock().sessions.open(session, now_unix_seconds);
        Ok(session)
    }

    /// Plans a workflow invocation and submits it to the next epoch (in a cluster,
    /// forwarding it when its keys are mostly held elsewhere). Refusals (unknown plugin
    /// or workflow, bad arguments, planner failure) come back at once.
    pub fn submit(&self, invocation: Invocation) -> Result<Pending<Completed>, Rejection> {
        match self.submit_or_redirect(invocation, false)? {
            Submitted::Running(pending) => Ok(pending),
            Submitted::Redirected(_) => unreachable!("only a request that asks for redirects is redirected"),
        }
    }

    /// Like [`NodeHandle::submit`], but with `redirect_if_elsewhere` a request whose keys
    /// are mostly held elsewhere is not forwarded: the answer names the node to send it
    /// to (the client routes by a lease table that was stale). Nothing of a redirected
    /// request ran or was recorded, so it may be sent again under the same id.
    pub fn submit_or_redirect(
        &self,
        invocation: Invocation,
        redirect_if_elsewhere: bool,
    ) -> Result<Submitted, Rejection> {
        match self.plan_and_route(invocation, redirect_if_elsewhere)? {
            Routed::Here(transaction, json) => {
                Ok(Submitted::Running(Pending { receiver: self.enqueue(transaction)?, json, _result: PhantomData }))
            }
            Routed::Elsewhere(submitted) => Ok(submitted),
        }
    }

    /// Submits the requests of one client message (each with its redirect flag). Those
    /// that run here go to the driver in one message, so that they land in the same epoch
    /// (a message split over two epochs waits for both), and answer through `batch` (so
    /// that the caller waits once); forwarded and redirected ones answer as usual. One
    /// result per request, in order.
    pub fn submit_all_into(
        &self,
        invocations: Vec<(Invocation, bool)>,
        batch: &Arc<ReplyBatch>,
    ) -> Vec<Result<SubmittedInto, Rejection>> {
        let mut submissions = Vec::with_capacity(invocations.len());
        let results: Vec<Result<SubmittedInto, Rejection>> = invocations
            .into_iter()
            .map(|(invocation, redirect_if_elsewhere)| {
                match self.plan_and_route(invocation, redirect_if_elsewhere)? {
                    Routed::Here(transaction, json) => {
                        let (reply, place) = batch.reply();
                        submissions.push(Submission { transaction, reply });
                        Ok(SubmittedInto::Batch(BatchPlace { place, json }))
                    }
                    Routed::Elsewhere(submitted) => Ok(SubmittedInto::Alone(submitted)),
                }
            })
            .collect();
        if submissions.is_empty() {
            return results;
        }
        let count = submissions.len() as u64;
        // Refused, the submissions are dropped with their replies, which answers each of
        // their places `ShuttingDown`.
        if !self.shared.accepting.load(Ordering::Acquire)
            || self.shared.inbox.send(DriverMessage::SubmitMany(submissions)).is_err()
        {
            self.count_rejections(count);
        }
        results
    }

    /// Plans a request and decides where it runs: here (returned planned, for the caller
    /// to submit), or forwarded to another node, or redirected to it.
    fn plan_and_route(&self, mut invocation: Invocation, redirect_if_elsewhere: bool) -> Result<Routed, Rejection> {
        if matches!(&invocation.request_id, RequestId::Id(bytes) if bytes.len() > REQUEST_ID_BYTES_MAX) {
            return self.rejected(Rejection::RequestIdTooLong);
        }
        if self.shared.cluster.is_some() {
            // A cluster keeps every outcome under an id at the id's holder, where a retry
            // through any node finds it.
            invocation.request_id = invocation.request_id.with_session_as_id();
        }
        let (transaction, json) = match plan_invocation(&self.shared.registry, self.shared.limits, invocation) {
            Ok(planned) => planned,
            Err(rejection) => return self.rejected(rejection),
        };
        if let Some(cluster) = self.routing(redirect_if_elsewhere) {
            if let Route::Forward(to) = self.route(cluster, &transaction) {
                if redirect_if_elsewhere {
                    return Ok(Routed::Elsewhere(Submitted::Redirected(self.redirect(cluster, to))));
                }
                let receiver = self.forward(cluster, to, transaction);
                return Ok(Routed::Elsewhere(Submitted::Running(Pending { receiver, json, _result: PhantomData })));
            }
        }
        Ok(Routed::Here(transaction, json))
    }

    /// The cluster, when this node moves requests at all: under leases, to the leases
    /// (forwarding them when configured, or redirecting clients that ask for it); under
    /// the baselines always, to the holder of the request's id, the one place its outcome
    /// is kept.
    fn routing(&self, redirect_if_elsewhere: bool) -> Option<&ClusterShared> {
        let config = &self.shared.config;
        let moves = config.forwarding || redirect_if_elsewhere || config.cc != ConcurrencyControl::Lease;
        self.shared.cluster.as_ref().filter(|_| moves)
    }

    /// The answer to a request that asked for a redirect and is to run on node `to`.
    fn redirect(&self, cluster: &ClusterShared, to: NodeId) -> Redirect {
        TransactionStats::count(&cluster.stats.redirected_total, 1);
        metrics::counter!(crate::metrics::REDIRECTED_TOTAL).increment(1);
        Redirect {
            node: to,
            client_address: cluster.spec.nodes[usize::from(to)].client_address.to_string(),
            lease_table_digest: cluster.leases.current().digest(),
        }
    }

    /// Where every key is held now and how to reach each node, for clients that route
    /// requests themselves. A single node answers a table of one node.
    pub fn lease_table(&self) -> LeaseTableSnapshot {
        let Some(cluster) = self.shared.cluster.as_ref() else {
            let table = LeaseTable::home(1);
            return LeaseTableSnapshot {
                node_count: 1,
                digest: table.digest(),
                client_addresses: vec![self.shared.config.client_address.to_string()],
                moved: Vec::new(),
            };
        };
        let table = cluster.leases.current();
        LeaseTableSnapshot {
            node_count: table.node_count(),
            digest: table.digest(),
            client_addresses: cluster.spec.nodes.iter().map(|node| node.client_address.to_string()).collect(),
            moved: table.moved().map(|(key, holder)| (key.to_vec(), holder)).collect(),
        }
    }

    /// Where a planned request should run. Only requests with an id move (see
    /// `cluster::forward`), and only while the node runs in an agreed view.
    fn route(&self, cluster: &ClusterShared, transaction: &PlannedTransaction) -> Route {
        if !transaction.request_id.is_tracked() || !cluster.stats.synced.load(Ordering::Acquire) {
            return Route::Here;
        }
        let table = cluster.leases.current();
        let mut storage_key = Vec::new();
        if self.shared.config.cc != ConcurrencyControl::Lease {
            // The baselines run a request where its exactly-once record is: at its id's
            // holder (the benchmark's clients salt ids to the node they send to).
            data_key_into(&mut storage_key, crate::storage::REQUEST_ID_TABLE, transaction.request_id.id_bytes());
            let holder = table.holder(&storage_key);
            return if holder == self.shared.config.node_id { Route::Here } else { Route::Forward(holder) };
        }
        let holders: Vec<NodeId> = transaction
            .accesses
            .entries()
            .iter()
            .map(|entry| {
                storage_key.clear();
                let table_id = transaction.plugin.tables[entry.table as usize].table_id;
                data_key_into(&mut storage_key, table_id, transaction.accesses.key(entry));
                table.holder(&storage_key)
            })
            .collect();
        let published = cluster.stats.spare_loads.load();
        let node_count = usize::from(cluster.spec.node_count());
        // Before the first epoch no loads are published: every node counts as idle.
        let idle;
        let spare_loads: &[f64] = if published.len() == node_count {
            &published
        } else {
            idle = vec![1.0; node_count];
            &idle
        };
        routing::route(self.shared.config.node_id, &holders, spare_loads, &self.shared.config.routing_config())
    }

    /// Sends a planned request to node `to` and returns where its answer arrives.
    fn forward(
        &self,
        cluster: &ClusterShared,
        to: NodeId,
        transaction: PlannedTransaction,
    ) -> tokio::sync::oneshot::Receiver<Result<Outcome, Rejection>> {
        let (reply, receiver) = Reply::one();
        let TransactionBody::Workflow { workflow, arguments } = transaction.body else {
            unreachable!("only workflow invocations are routed")
        };
        let forward_id = cluster.forwards.register(reply);
        // The names come from the plugin the request was planned with, so requests that
        // stay (the common case) never copy them.
        let frame = Frame::Forward {
            forward_id,
            generation: cluster.stats.generation.load(Ordering::Acquire),
            plugin: transaction.plugin.name().to_string(),
            workflow: transaction.plugin.workflows[workflow as usize].name.clone(),
            request_id: transaction.request_id.id_bytes().to_vec(),
            arguments,
        };
        cluster.transport.send(to, &frame);
        TransactionStats::count(&cluster.stats.forwarded_total, 1);
        metrics::counter!(crate::metrics::FORWARDED_TOTAL).increment(1);
        receiver
    }

    /// Reads one key, ordered after every transaction submitted before it.
    pub fn read_key(&self, plugin_name: &str, table: &str, key: &[u8]) -> Result<Pending<Option<Vec<u8>>>, Rejection> {
        let Some(plugin) = self.shared.registry.get(plugin_name) else {
            return self.rejected(Rejection::UnknownPlugin(plugin_name.into()));
        };
        let Some(table_number) = plugin.table_named(table) else {
            return self.rejected(Rejection::UnknownTable { plugin: plugin_name.into(), table: table.into() });
        };
        if key.len() > self.shared.limits.key_bytes_max {
            return self.rejected(Rejection::KeyTooLong { max: self.shared.limits.key_bytes_max });
        }
        let mut accesses = AccessSet::new();
        accesses.push(table_number, key, AccessMode::Read);
        accesses.finish();
        let transaction =
            PlannedTransaction { plugin, body: TransactionBody::ReadKey, accesses, request_id: RequestId::Untracked };
        Ok(Pending { receiver: self.enqueue(transaction)?, json: None, _result: PhantomData })
    }

    pub fn status(&self) -> NodeStatus {
        let stats = &self.shared.stats;
        let config = &self.shared.config;
        let cluster = self.shared.cluster.as_ref();
        NodeStatus {
            node: config.node_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            durable_epoch: stats.durable_epoch.load(Ordering::Acquire),
            committed_total: stats.committed.load(Ordering::Relaxed),
            aborted_total: stats.aborted.load(Ordering::Relaxed),
            rejected_total: stats.rejected.load(Ordering::Relaxed),
            epochs_total: stats.epochs.load(Ordering::Relaxed),
            resident_keys: stats.resident_keys.load(Ordering::Relaxed),
            plugins: self.shared.registry.list().into_iter().map(|p| p.name).collect(),
            uptime_ms: self.shared.started.elapsed().as_millis() as u64,
            cc: config.cc.as_str().to_string(),
            fsync: config.fsync.as_str().to_string(),
            cluster_nodes: cluster.map_or(1, |c| c.spec.node_count()),
            cluster_generation: cluster.map_or(0, |c| c.stats.generation.load(Ordering::Acquire)),
            cluster_synced: cluster.is_none_or(|c| c.stats.synced.load(Ordering::Acquire)),
            lease_table_digest: cluster.map_or(0, |c| c.leases.current().digest()),
            leases_lent: cluster.map_or(0, |c| c.stats.leases_lent.load(Ordering::Acquire)),
            local_accesses: cluster.map_or(0, |c| c.stats.local_accesses.load(Ordering::Relaxed)),
            remote_accesses: cluster.map_or(0, |c| c.stats.remote_accesses.load(Ordering::Relaxed)),
            fenced_total: cluster.map_or(0, |c| c.stats.fenced_total.load(Ordering::Relaxed)),
            fabric: cluster.map_or("none", |c| c.spec.fabric.as_str()).to_string(),
            lease_moves_total: cluster.map_or(0, |c| c.stats.lease_moves_total.load(Ordering::Relaxed)),
            bytes_migrated_total: cluster.map_or(0, |c| c.stats.bytes_migrated_total.load(Ordering::Relaxed)),
            concurrency_retries_total: self.shared.concurrency.retries.load(Ordering::Relaxed),
            forwarded_total: cluster.map_or(0, |c| c.stats.forwarded_total.load(Ordering::Relaxed)),
            forwards_received_total: cluster.map_or(0, |c| c.stats.forwards_received_total.load(Ordering::Relaxed)),
            redirected_total: cluster.map_or(0, |c| c.stats.redirected_total.load(Ordering::Relaxed)),
            overdue_plugin_calls: crate::plugin::watchdog::overdue(Duration::from_millis(config.plugin_call_warn_ms))
                .into_iter()
                .map(|call| {
                    format!("{}: {} running for {:.1} s", call.plugin, call.function, call.running.as_secs_f64())
                })
                .collect(),
            abandoned_plugin_calls: crate::plugin::watchdog::abandoned_total(),
            transactions_decayed: cluster
                .and_then(|c| c.stats.loads.load().get(usize::from(config.node_id)).copied())
                .unwrap_or(0.0),
        }
    }
}

/// Plans a workflow invocation: checks its names, converts JSON arguments and lets the
/// plugin compute the access set. Returns the plugin and workflow number too
/// when the output is to be converted to JSON.
#[allow(clippy::type_complexity)]
fn plan_invocation(
    registry: &PluginRegistry,
    limits: AccessLimits,
    invocation: Invocation,
) -> Result<(PlannedTransaction, Option<(Arc<LoadedPlugin>, u32)>), Rejection> {
    let plugin = registry.get(&invocation.plugin).ok_or_else(|| Rejection::UnknownPlugin(invocation.plugin.clone()))?;
    if let Some(rejection) = plugin.quarantined() {
        return Err(rejection);
    }
    let workflow = plugin.workflow_named(&invocation.workflow).ok_or_else(|| Rejection::UnknownWorkflow {
        plugin: invocation.plugin.clone(),
        workflow: invocation.workflow.clone(),
    })?;
    let (arguments, json) = match invocation.arguments {
        Arguments::Encoded(bytes) => (bytes, None),
        Arguments::Json(text) => (plugin.arguments_from_json(workflow, &text)?, Some((plugin.clone(), workflow))),
    };
    let accesses = plugin.plan(workflow, &arguments, limits)?;
    let transaction = PlannedTransaction {
        plugin,
        body: TransactionBody::Workflow { workflow, arguments },
        accesses,
        request_id: invocation.request_id,
    };
    Ok((transaction, json))
}

/// What the transport's receiver hands frames to.
struct PeerDelivery {
    inbox: Sender<DriverMessage>,
    notices: Sender<crate::txn::commit::DurableNotice>,
    deploys: Arc<DeployWaiters>,
    registry: Arc<PluginRegistry>,
    transport: Arc<std::sync::OnceLock<Arc<Transport>>>,
    forwards: Arc<Forwards>,
    forward_server: Arc<ForwardServer>,
}

/// Routes frames from peers: durability notices to the commit thread, plugin deploys to
/// a loading thread and their acknowledgements to the waiting deploy, forwarded requests
/// to the forward server and their answers to the waiting callers, everything else to
/// the epoch driver.
fn peer_delivery(parts: PeerDelivery) -> Deliver {
    let PeerDelivery { inbox, notices, deploys, registry, transport, forwards, forward_server } = parts;
    Box::new(move |from, frame| match frame {
        frame @ Frame::Forward { .. } => {
            if let Ok(request) = ForwardedRequest::from_frame(from, frame) {
                forward_server.submit(request);
            }
        }
        Frame::ForwardReply { forward_id, result } => forwards.complete(forward_id, result),
        Frame::Durable { generation, epoch } => {
            let _ = notices.send((from, generation, epoch));
        }
        Frame::Deploy { deploy_id, library } => {
            let (registry, transport) = (registry.clone(), transport.clone());
            // Loading takes milliseconds; the receiver thread must not wait for it.
            let spawned = std::thread::Builder::new().name("leasehold-peer-deploy".into()).spawn(move || {
                let error = match registry.deploy(&library) {
                    Ok(info) => {
                        tracing::info!(plugin = %info.name, version = %info.version, peer = from, "plugin deployed by a peer");
                        None
                    }
                    Err(error) => Some(error.to_string()),
                };
                if let Some(transport) = transport.get() {
                    transport.send(from, &Frame::DeployAck { deploy_id, error });
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a thread to load a peer's plugin");
            }
        }
        Frame::DeployAck { deploy_id, error } => {
            if let Some(waiter) = deploys.lock().get(&deploy_id) {
                let _ = waiter.send((from, error));
            }
        }
        frame => {
            let _ = inbox.send(DriverMessage::Peer { from, frame });
        }
    })
}

/// Sends a deployed library to every peer and waits until each loaded it.
fn deploy_to_peers(cluster: &ClusterShared, library: &[u8]) -> Result<(), PluginError> {
    let sequence = cluster.next_deploy.fetch_add(1, Ordering::Relaxed);
    let deploy_id = (u64::from(cluster.incarnation) << 32) | (sequence & 0xffff_ffff);
    let (waiter, acknowledgements) = crossbeam_channel::unbounded();
    cluster.deploys.lock().insert(deploy_id, waiter);
    cluster.transport.broadcast(&Frame::Deploy { deploy_id, library: library.to_vec() });
    let deadline = Instant::now() + DEPLOY_PATIENCE;
    let mut answered = vec![false; usize::from(cluster.spec.node_count())];
    let mut failures = Vec::new();
    while cluster.transport.peers().any(|peer| !answered[usize::from(peer)]) {
        match acknowledgements.recv_deadline(deadline) {
            Ok((peer, error)) => {
                answered[usize::from(peer)] = true;
                if let Some(error) = error {
                    failures.push(format!("node {peer} refused it: {error}"));
                }
            }
            Err(_) => break,
        }
    }
    cluster.deploys.lock().remove(&deploy_id);
    for peer in cluster.transport.peers().filter(|&peer| !answered[usize::from(peer)]) {
        failures.push(format!("node {peer} did not answer within {} s", DEPLOY_PATIENCE.as_secs()));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(PluginError::NotEverywhere(failures.join("; ")))
    }
}
