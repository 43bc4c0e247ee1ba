//! The Leasehold engine: one node that keeps application state in memory and RocksDB,
//! runs plugin functions next to it, and runs workflows as serializable transactions in
//! epochs. See ARCHITECTURE.md for the map.
//!
//! Entry points: [`node::Node::start`] starts a node from a [`config::Config`];
//! [`node::NodeHandle`] is the in-process API; [`rpc::RpcServer`] serves it over Cap'n
//! Proto.

pub mod cc;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod model;
pub mod node;
pub mod plugin;
pub mod rpc;
pub mod storage;
pub mod txn;

pub use config::Config;
pub use node::{Completed, Node, NodeHandle, Pending};
