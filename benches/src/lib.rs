//! `leasehold-bench`: the workload benchmark harness behind `leasehold bench`.
//!
//! [`workload`] generates seeded, reproducible requests; [`run`] drives a node with
//! closed-loop clients over Cap'n Proto and measures throughput and latency; [`peers`]
//! runs the same transfers against Redis and PostgreSQL. Plugin argument and output types
//! come from `leasehold-plugin-api`.

pub mod peers;
pub mod run;
pub mod workload;
