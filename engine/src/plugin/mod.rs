//! The plugin host: loads plugin libraries, checks them, calls into them through the C
//! ABI of `leasehold-sdk`, and keeps the set of deployed plugins.
//!
//! Deployed libraries are stored in RocksDB (the source of truth) and written to
//! `<data_dir>/plugins/<sha256>.so` to be loaded, one file per distinct library, so that
//! a new version of a plugin gets its own mapping while transactions planned against the
//! old one finish on it (they hold an `Arc<LoadedPlugin>`).

mod library;
mod registry;
pub mod watchdog;

pub(crate) use library::vec_sink;
pub use library::{AccessLimits, LoadedPlugin, LoadedTable, LoadedWorkflow, StepCall};
pub use registry::PluginRegistry;

use std::path::PathBuf;

/// Why a plugin could not be deployed or loaded. Deploying never changes anything when it
/// fails.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot write or read plugin file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a loadable shared library: {0}")]
    NotALibrary(String),
    #[error("the library does not export `{symbol}`; is it built with leasehold-sdk's export_plugin!?")]
    MissingEntry { symbol: String },
    #[error("the plugin failed while declaring itself (its declaration panicked)")]
    DeclarationFailed,
    #[error("the plugin speaks plugin ABI version {found}; this engine speaks version {expected}")]
    AbiMismatch { found: u32, expected: u32 },
    #[error("invalid plugin declaration: {0}")]
    Invalid(String),
    #[error("the library is empty")]
    Empty,
    #[error("the library is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("deployed on this node, but not on every node of the cluster: {0}")]
    NotEverywhere(String),
}
