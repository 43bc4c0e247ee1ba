//! `leasehold-bench`: the workload benchmark harness behind `leasehold bench`.
//!
//! [`workload`] generates seeded, reproducible requests (with [`movie`] and [`social`]
//! for the workloads whose invariant is a structure rather than a sum); [`run`] drives a
//! node with closed-loop clients over Cap'n Proto and measures throughput and latency;
//! [`progress`] shows a run on a terminal; [`record`] writes a run as a JSON document or a
//! CSV row, and [`plot`] draws a table of CSV rows as SVG charts; [`peers`] runs the same
//! transfers against Redis and PostgreSQL. Plugin argument and output types come from
//! `leasehold-plugin-api`.

pub mod movie;
pub mod peers;
pub mod plot;
pub mod progress;
pub mod record;
pub mod run;
pub mod social;
pub mod workload;
