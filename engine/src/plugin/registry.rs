//! The set of deployed plugins, published to every thread as an immutable snapshot.
//!
//! Readers (planning on RPC threads) take the current snapshot without locking
//! (`arc-swap`); a deploy builds a new snapshot and swaps it in. Deploys are serialised
//! by a mutex, so two of them never race on the same name.

use super::{LoadedPlugin, PluginError};
use crate::model::PluginInfo;
use crate::storage::Storage;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest plugin library accepted; as large as the default largest client message, so
/// that a library the registry would take also fits in a `deployPlugin` call.
pub const LIBRARY_BYTES_MAX: usize = 64 << 20;

type Snapshot = FxHashMap<String, Arc<LoadedPlugin>>;

pub struct PluginRegistry {
    current: ArcSwap<Snapshot>,
    deploy_lock: Mutex<()>,
    directory: PathBuf,
    storage: Arc<Storage>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PluginRegistry {
    /// Creates the registry and loads every plugin stored in `storage`. A stored plugin
    /// that no longer loads (for example after an engine upgrade changed the ABI) is
    /// reported and skipped, so the node still starts and the operator can redeploy it.
    pub fn open(directory: PathBuf, storage: Arc<Storage>) -> Result<PluginRegistry, PluginError> {
        std::fs::create_dir_all(&directory).map_err(|source| PluginError::Io { path: directory.clone(), source })?;
        let registry = PluginRegistry {
            current: ArcSwap::from_pointee(Snapshot::default()),
            deploy_lock: Mutex::new(()),
            directory,
            storage,
        };
        let mut snapshot = Snapshot::default();
        for (name, library) in registry.storage.stored_plugins()? {
            match registry.load_bytes(&library) {
                Ok(plugin) if plugin.name() == name => {
                    tracing::info!(plugin = %name, version = %plugin.info.version, "loaded stored plugin");
                    snapshot.insert(name, Arc::new(plugin));
                }
                Ok(plugin) => {
                    tracing::error!(stored = %name, declared = %plugin.name(), "stored plugin declares another name; skipped")
                }
                Err(error) => tracing::error!(plugin = %name, %error, "stored plugin no longer loads; redeploy it"),
            }
        }
        registry.current.store(Arc::new(snapshot));
        Ok(registry)
    }

    /// The plugin deployed under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.current.load().get(name).cloned()
    }

    /// Every deployed plugin, sorted by name.
    pub fn list(&self) -> Vec<PluginInfo> {
        let mut plugins: Vec<PluginInfo> = self.current.load().values().map(|p| p.info.clone()).collect();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        plugins
    }

    fn write_library(&self, library: &[u8], digest: &str) -> Result<PathBuf, PluginError> {
        let path = self.directory.join(format!("{digest}.so"));
        if !path.exists() {
            // Written under a temporary name and renamed, so a crash never leaves a
            // truncated library under the final name.
            let temporary = self.directory.join(format!("{digest}.so.partial"));
            std::fs::write(&temporary, library)
                .map_err(|source| PluginError::Io { path: temporary.clone(), source })?;
            std::fs::rename(&temporary, &path).map_err(|source| PluginError::Io { path: path.clone(), source })?;
        }
        Ok(path)
    }

    fn load_bytes(&self, library: &[u8]) -> Result<LoadedPlugin, PluginError> {
        if library.is_empty() {
            return Err(PluginError::Empty);
        }
        if library.len() > LIBRARY_BYTES_MAX {
            return Err(PluginError::TooLarge { bytes: library.len(), max: LIBRARY_BYTES_MAX });
        }
        let digest = hex(&Sha256::digest(library));
        let path = self.write_library(library, &digest)?;
        let loaded = LoadedPlugin::load(&path, &digest, |plugin, table| Ok(self.storage.table_id(plugin, table)?));
        if loaded.is_err() {
            // Nothing refers to a refused library; keep the directory clean.
            let _ = std::fs::remove_file(&path);
        }
        loaded
    }

    /// Deploys a library: checks and loads it, stores it durably, and makes it the
    /// current version of its plugin. Transactions already planned on an older version
    /// finish on that version.
    pub fn deploy(&self, library: &[u8]) -> Result<PluginInfo, PluginError> {
        let _serialised = self.deploy_lock.lock();
        let _span = tracing::info_span!("deploy", library_bytes = library.len()).entered();
        let plugin = self.load_bytes(library)?;
        self.storage.store_plugin(plugin.name(), library)?;
        let info = plugin.info.clone();
        let mut snapshot: Snapshot = (**self.current.load()).clone();
        snapshot.insert(info.name.clone(), Arc::new(plugin));
        self.current.store(Arc::new(snapshot));
        tracing::info!(plugin = %info.name, version = %info.version, digest = %info.digest, "deployed plugin");
        Ok(info)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }
}
