//! The request and response types of the workload plugins, shared by the plugins and by
//! the programs that call them (benchmark harness, tests).
//!
//! Why a crate of its own: a plugin exports the `#[no_mangle]` entry point
//! `leasehold_plugin_entry_v1`. If programs depended on plugin crates for these types,
//! linking two plugins into one program could pull in both entry points and fail with a
//! duplicate symbol. Plugins are therefore `cdylib`s only, and their types live here.
//! Values travel in the SDK's encoding (`leasehold_sdk::encode`/`decode`).

/// The banking workload (RTSFaaS banking service).
pub mod banking {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Transfer {
        pub from: u64,
        pub to: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TransferResult {
        pub from_balance: i64,
        pub to_balance: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Deposit {
        pub account: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Account {
        pub account: u64,
    }

    /// Opens `count` accounts from `first` on, each with `balance`.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Open {
        pub first: u64,
        pub count: u64,
        pub balance: i64,
    }

    /// Sums the balances of `count` accounts from `first` on.
    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    /// Largest range one `open` or `total` transaction may cover.
    pub const RANGE_MAX: u64 = 100_000;
}

/// The YCSB-T workload (Styx's transfer).
pub mod ycsb_t {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Transfer {
        pub a: u64,
        pub b: u64,
        pub amount: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Load {
        pub first: u64,
        pub count: u64,
        pub value: i64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Range {
        pub first: u64,
        pub count: u64,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Key {
        pub key: u64,
    }

    /// Largest range one `load` or `total` transaction may cover.
    pub const RANGE_MAX: u64 = 100_000;
}

/// The engine's own test plugin: scripted read/write programs.
pub mod testkit {
    use serde::{Deserialize, Serialize};

    /// One operation of a scripted step. Keys are single bytes; a missing value reads as 0.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        /// Appends the value of the key to the step's output.
        Read(u8),
        /// Adds to the value of the key.
        Add(u8, i64),
        /// Sets the value of the key.
        Set(u8, i64),
        /// Aborts the transaction (a logic abort) when the value of the key is negative.
        AbortIfNegative(u8),
        /// Panics inside the plugin.
        Panic,
        /// Writes a key that the plan did not declare (the engine must refuse it).
        Undeclared(u8),
    }

    /// The script of one `program` transaction: the ops of each of its three steps.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
    pub struct Program {
        pub steps: [Vec<Op>; 3],
    }

    /// Keys of [`Op::Undeclared`] are moved here, outside what the plan declares.
    pub const UNDECLARED_KEY_BASE: u16 = 1000;

    #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Nothing {}
}
