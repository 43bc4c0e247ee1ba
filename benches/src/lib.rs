//! `leasehold-bench`: the workload benchmark harness behind `leasehold bench`.
//!
//! [`workload`] generates seeded, reproducible requests; [`run`] drives a node with
//! closed-loop clients over Cap'n Proto and measures throughput and latency; [`wire`]
//! mirrors the SmallBank and travel plugins' argument and output encodings.

pub mod peers;
pub mod run;
pub mod wire;
pub mod workload;
