//! `leasehold-sdk`: what a plugin author links against.
//!
//! A plugin is a `cdylib` that declares tables, functions and workflows and exports them
//! with [`export_plugin!`]. The engine loads it at run time through the C ABI in [`abi`];
//! this crate hides that ABI behind a small safe Rust layer:
//!
//! ```no_run
//! use leasehold_sdk::prelude::*;
//!
//! const ACCOUNTS: Table = Table(0);
//!
//! #[derive(Serialize, Deserialize)]
//! struct Deposit { account: u64, amount: i64 }
//!
//! fn deposit(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
//!     let args: Deposit = ctx.arguments()?;
//!     let key = key_u64(args.account);
//!     let balance = ctx.read_i64(ACCOUNTS, &key)?.unwrap_or(0);
//!     ctx.write_i64(ACCOUNTS, &key, balance + args.amount)?;
//!     encode(&(balance + args.amount))
//! }
//!
//! export_plugin!(|| {
//!     Plugin::new("bank", env!("CARGO_PKG_VERSION"))
//!         .table(ACCOUNTS, "accounts", 8)
//!         .function("deposit", deposit)
//!         .workflow::<Deposit, i64>("deposit", |a, plan| { plan.write(ACCOUNTS, &key_u64(a.account)); Ok(()) })
//!         .step("deposit", &[])
//!         .done()
//! });
//! ```
//!
//! Arguments and outputs are encoded with `postcard` (compact, fast); every workflow
//! also converts its arguments from JSON and its output to JSON, so that any client can
//! call it without knowing the encoding. This crate deliberately depends on nothing of
//! the engine (no RocksDB, no RPC): plugins stay small and build in seconds.

pub mod abi;
mod context;
mod export;
mod plugin;

pub use context::{Context, Plan};
#[doc(hidden)]
pub use export::{entry, Registered};
pub use plugin::{Plugin, Table, WorkflowBuilder};
pub use serde;

/// Why a function or planner refused to go on. The transaction aborts and nothing it
/// wrote is kept; the message reaches the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    message: String,
    /// Set when the host refused an access; the host already recorded its own reason.
    pub(crate) host_refused: bool,
}

impl Abort {
    pub fn new(message: impl Into<String>) -> Abort {
        Abort { message: message.into(), host_refused: false }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Encodes a value in the SDK's argument/output encoding (postcard).
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Abort> {
    postcard::to_allocvec(value).map_err(|error| Abort::new(format!("cannot encode value: {error}")))
}

/// Decodes a value from the SDK's argument/output encoding (postcard).
pub fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Abort> {
    postcard::from_bytes(bytes).map_err(|error| Abort::new(format!("cannot decode value: {error}")))
}

/// The conventional key of a numeric id: big-endian, so that keys sort by id.
pub fn key_u64(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{decode, encode, export_plugin, key_u64, Abort, Context, Plan, Plugin, Table};
    pub use serde::{Deserialize, Serialize};
}

/// Exports a plugin: `export_plugin!(|| Plugin::new(...)...)`. The closure runs once,
/// when the engine first asks for the descriptor.
#[macro_export]
macro_rules! export_plugin {
    ($build:expr) => {
        #[no_mangle]
        pub extern "C" fn leasehold_plugin_entry_v1() -> *const $crate::abi::PluginDescriptor {
            $crate::entry($build)
        }
    };
}
