//! The Leasehold wire API: the Rust code generated from `leasehold.capnp` (the client
//! API, and later the peer API). The schema file is the documentation; this crate only
//! compiles it, so that the engine and the Rust client share one generated copy.

/// Types generated from `leasehold.capnp`: one module per struct, enum and interface,
/// named in snake case (`invocation`, `leasehold`, `rejection_kind`, ...).
pub mod leasehold_capnp {
    include!(concat!(env!("OUT_DIR"), "/leasehold_capnp.rs"));
}
