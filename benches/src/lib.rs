//! `leasehold-bench`: the workload benchmark harness behind `leasehold bench`.
//!
//! [`workload`] generates seeded, reproducible requests; [`run`] drives a node with
//! closed-loop clients over Cap'n Proto and measures throughput and latency.

pub mod peers;
pub mod run;
pub mod workload;
