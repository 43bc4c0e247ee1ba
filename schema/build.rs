//! Compiles `leasehold.capnp` into Rust at build time, so the generated code can never
//! drift from the schema file that other Cap'n Proto implementations use.

const SCHEMA: &str = "leasehold.capnp";

fn main() {
    // Only a schema change needs new generated code; without this line Cargo would rerun
    // the schema compiler whenever any file of the crate changes.
    println!("cargo:rerun-if-changed={SCHEMA}");
    // The schema is compiled with the system `capnp` tool; a missing tool or a schema
    // error must stop the build with the compiler's own message.
    if let Err(error) = capnpc::CompilerCommand::new().file(SCHEMA).run() {
        panic!("compiling {SCHEMA} failed: {error}");
    }
}
