//! `leasehold-plugin-wrong-abi`: a plugin library built for an ABI the engine does not
//! speak, for the engine's tests only.
//!
//! It exports the real entry symbol, [`leasehold_sdk::abi::ENTRY_SYMBOL`], so the library
//! loads and the engine gets as far as the descriptor; but the descriptor's
//! `abi_version` is [`WRONG_ABI_VERSION`]. The engine must read that first field, refuse
//! the plugin with a message naming both versions, and touch nothing else, because with
//! another ABI the rest of the layout means nothing. The test `bad_input.rs` deploys it.
//!
//! The rest of the descriptor is still made valid and null-safe (real names, empty
//! declarations, entry points that refuse every call without dereferencing anything): an
//! engine that wrongly skipped the version check would then deploy an empty plugin, which
//! the test reports, instead of crashing on garbage.

use leasehold_sdk::abi::{self, ByteSink, FunctionCall, PlanSink, PluginDescriptor, RawBytes};

/// The ABI version this library claims; no engine speaks it.
pub const WRONG_ABI_VERSION: u32 = 999;

// The library is useless as a test if the SDK ever reaches this version.
const _: () = assert!(WRONG_ABI_VERSION != abi::ABI_VERSION);

// If the SDK renamed its entry symbol, this library would test a missing entry point
// instead of a wrong version.
const _: () = assert!(same_bytes(abi::ENTRY_SYMBOL, b"leasehold_plugin_entry_v1\0"));

const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

const NAME: &str = "wrong-abi";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const BUILD_INFO: &str = concat!("leasehold-plugin-wrong-abi ", env!("CARGO_PKG_VERSION"), " abi 999");
const REFUSAL: &str = "the wrong-abi test plugin runs nothing";

const fn bytes(text: &'static str) -> RawBytes {
    RawBytes { ptr: text.as_ptr(), len: text.len() }
}

/// Reports the refusal through `sink` when the caller passed one.
fn refuse(sink: *const ByteSink) {
    if sink.is_null() {
        return;
    }
    // SAFETY: a non-null sink is valid for the duration of the call, as the ABI requires.
    let sink = unsafe { &*sink };
    (sink.put)(sink.context, RawBytes::from_slice(REFUSAL.as_bytes()));
}

extern "C" fn plan(_workflow: u32, _arguments: RawBytes, sink: *const PlanSink) -> i32 {
    if !sink.is_null() {
        // SAFETY: a non-null sink is valid for the duration of the call.
        refuse(unsafe { &(*sink).error });
    }
    abi::STATUS_BAD_ARGUMENTS
}

extern "C" fn run(_function: u32, call: *const FunctionCall) -> i32 {
    if !call.is_null() {
        // SAFETY: a non-null call description is valid for the duration of the call.
        refuse(unsafe { &(*call).error });
    }
    abi::STATUS_ABORT
}

extern "C" fn convert(_workflow: u32, _input: RawBytes, _out: *const ByteSink, error: *const ByteSink) -> i32 {
    refuse(error);
    abi::STATUS_BAD_ARGUMENTS
}

static DESCRIPTOR: PluginDescriptor = PluginDescriptor {
    abi_version: WRONG_ABI_VERSION,
    name: bytes(NAME),
    version: bytes(VERSION),
    build_info: bytes(BUILD_INFO),
    tables: std::ptr::null(),
    table_count: 0,
    functions: std::ptr::null(),
    function_count: 0,
    workflows: std::ptr::null(),
    workflow_count: 0,
    plan,
    run,
    arguments_from_json: convert,
    output_to_json: convert,
};

/// The entry point every plugin exports; see [`leasehold_sdk::abi::EntryFn`].
#[no_mangle]
pub extern "C" fn leasehold_plugin_entry_v1() -> *const PluginDescriptor {
    &DESCRIPTOR
}
