//! Node wiring: opens storage and the plugin registry, starts the epoch driver, executor
//! pool and commit thread, and offers [`NodeHandle`], the in-process API that the RPC
//! server (and embedding programs) call.

use crate::config::{Config, ConfigError};
use crate::model::{
    Arguments, Invocation, NodeStatus, Outcome, PluginInfo, Rejection, RequestId, REQUEST_ID_BYTES_MAX,
};
use crate::plugin::{AccessLimits, LoadedPlugin, PluginError, PluginRegistry};
use crate::storage::{SlotStore, Storage, StorageError, StorageOptions};
use crate::txn::access::{AccessMode, AccessSet};
use crate::txn::commit::{Checkpointer, Committer};
use crate::txn::epoch::{DriverMessage, EpochDriver};
use crate::txn::executor::Executor;
use crate::txn::ledger::Ledger;
use crate::txn::tpg::GraphBuilder;
use crate::txn::{PlannedTransaction, Submission, TransactionBody, TransactionStats};
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
}

struct Shared {
    config: Config,
    registry: PluginRegistry,
    inbox: Sender<DriverMessage>,
    accepting: AtomicBool,
    stats: Arc<TransactionStats>,
    started: Instant,
    limits: AccessLimits,
}

/// A running engine node. Stop it with [`Node::shutdown`] (dropping it does the same).
pub struct Node {
    handle: NodeHandle,
    driver: Option<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    storage: Arc<Storage>,
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
        let storage_options = StorageOptions {
            result_retention: Duration::from_secs(config.request_id_retention_hours.saturating_mul(3600)),
        };
        let storage = Arc::new(Storage::open_with(&config.data_dir.join("rocksdb"), storage_options)?);
        let registry = PluginRegistry::open(config.data_dir.join("plugins"), storage.clone())?;
        let durable_epoch = storage.durable_epoch()?;
        let stats = Arc::new(TransactionStats::default());
        stats.durable_epoch.store(durable_epoch, Ordering::Relaxed);
        let ledger = Arc::new(Mutex::new(Ledger::new(config.recent_results_max)));
        let (inbox, inbox_receiver) = crossbeam_channel::unbounded();
        // A few epochs may wait for the disk; beyond that the driver waits too, which
        // bounds memory when the disk is slower than execution.
        let (commits, commit_receiver) = crossbeam_channel::bounded(1024);
        let executor = Executor::new(config.executor_threads).map_err(|error| NodeError::Threads(error.to_string()))?;

        let driver = EpochDriver {
            node: config.node_id,
            storage: storage.clone(),
            ledger: ledger.clone(),
            stats: stats.clone(),
            executor,
            inbox: inbox_receiver,
            commits,
            epoch_transactions_max: config.epoch_transactions_max,
            epoch_linger: Duration::from_micros(config.epoch_linger_us),
            epoch: durable_epoch,
            slots: SlotStore::new(),
            graph_builder: GraphBuilder::new(),
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
            ledger,
            stats: stats.clone(),
            fsync: config.fsync,
            epochs: commit_receiver,
            checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
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
            .spawn(move || driver.run())
            .map_err(|error| NodeError::Threads(error.to_string()))?;
        let limits = AccessLimits { keys_max: config.access_set_keys_max, key_bytes_max: config.key_bytes_max };
        tracing::info!(node = config.node_id, data_dir = %config.data_dir.display(), durable_epoch, "node started");
        let shared = Shared {
            config,
            registry,
            inbox,
            accepting: AtomicBool::new(true),
            stats,
            started: Instant::now(),
            limits,
        };
        Ok(Node {
            handle: NodeHandle { shared: Arc::new(shared) },
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
        self.storage.flush()?;
        tracing::info!(node = self.handle.shared.config.node_id, "node stopped");
        Ok(())
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
        let (reply, receiver) = tokio::sync::oneshot::channel();
        match self.shared.inbox.send(DriverMessage::Submit(Submission { transaction, reply })) {
            Ok(()) => Ok(receiver),
            Err(_) => self.rejected(Rejection::ShuttingDown),
        }
    }

    /// Plans a workflow invocation and submits it to the next epoch. Refusals (unknown
    /// plugin or workflow, bad arguments, planner failure) come back at once.
    pub fn submit(&self, invocation: Invocation) -> Result<Pending<Completed>, Rejection> {
        match self.plan(invocation) {
            Ok((transaction, json)) => Ok(Pending { receiver: self.enqueue(transaction)?, json, _result: PhantomData }),
            Err(rejection) => self.rejected(rejection),
        }
    }

    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        invocation: Invocation,
    ) -> Result<(PlannedTransaction, Option<(Arc<LoadedPlugin>, u32)>), Rejection> {
        if invocation.request_id.0.len() > REQUEST_ID_BYTES_MAX {
            return Err(Rejection::RequestIdTooLong);
        }
        let plugin = self
            .shared
            .registry
            .get(&invocation.plugin)
            .ok_or_else(|| Rejection::UnknownPlugin(invocation.plugin.clone()))?;
        let workflow = plugin.workflow_named(&invocation.workflow).ok_or_else(|| Rejection::UnknownWorkflow {
            plugin: invocation.plugin.clone(),
            workflow: invocation.workflow.clone(),
        })?;
        let (arguments, json) = match invocation.arguments {
            Arguments::Encoded(bytes) => (bytes, None),
            Arguments::Json(text) => (plugin.arguments_from_json(workflow, &text)?, Some((plugin.clone(), workflow))),
        };
        let accesses = plugin.plan(workflow, &arguments, self.shared.limits)?;
        let transaction = PlannedTransaction {
            plugin,
            body: TransactionBody::Workflow { workflow, arguments },
            accesses,
            request_id: invocation.request_id,
        };
        Ok((transaction, json))
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
        let transaction = PlannedTransaction {
            plugin,
            body: TransactionBody::ReadKey,
            accesses,
            request_id: RequestId(Box::default()),
        };
        Ok(Pending { receiver: self.enqueue(transaction)?, json: None, _result: PhantomData })
    }

    pub fn status(&self) -> NodeStatus {
        let stats = &self.shared.stats;
        let config = &self.shared.config;
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
            cc: "lease".to_string(),
            fsync: config.fsync.as_str().to_string(),
        }
    }
}
