//! The plugin side of the fuzz targets: a small host that drives one plugin through its C
//! ABI descriptor the way the engine does (convert JSON arguments, plan the access set,
//! run the workflow's steps in order against an in-memory key space), with arguments a
//! fuzzer chose, and fails loudly when the plugin breaks a promise the engine relies on.
//!
//! Why a host of its own rather than the engine's: libFuzzer learns from the coverage of
//! code it links, so the plugin must be linked into the target (as an rlib), not loaded as
//! a separately built shared library; and a workflow's steps need no epochs, storage or
//! threads to show how the plugin treats hostile arguments.
//!
//! The promises checked, for any argument bytes:
//! * no entry point panics (the SDK would turn a panic into `STATUS_PANIC`, which the
//!   engine survives, but a workload plugin that panics on bad input is a bug);
//! * every refusal carries a message (a client is told why);
//! * statuses are the documented ones for each entry point;
//! * steps touch only keys the plan declared, and write only keys declared for writing
//!   (the engine would abort such a transaction; the workload plugins must never try);
//! * arguments converted from JSON are accepted by the plan's own decoding or refused
//!   with a message, never a panic.

use leasehold_sdk::abi::{self, ByteSink, FunctionCall, PlanSink, PluginDescriptor, RawBytes};
use std::collections::HashMap;
use std::ffi::c_void;

/// At most this many keys in one plan; more is refused, as the engine's
/// `access_set_keys_max` does. The engine's default is higher (200,000); this bound keeps
/// each input fast (a fuzzer that spends 50 ms planning one huge access set finds little)
/// and still reaches the plugins' handling of a refused access.
const PLAN_KEYS_MAX: usize = 10_000;

/// The value every key holds when the input asks for a populated key space: a
/// little-endian `i64`, which is how the account workloads store balances. Other
/// workloads find a value they cannot decode, which they must refuse without panicking.
const POPULATED_VALUE: i64 = 1_000_000;

extern "C" fn sink_into_vec(context: *mut c_void, bytes: RawBytes) {
    // SAFETY: every sink built by `vec_sink` passes a live `*mut Vec<u8>`, and the plugin
    // passes bytes valid for the call.
    let buffer = unsafe { &mut *(context as *mut Vec<u8>) };
    buffer.extend_from_slice(unsafe { bytes.as_slice() });
}

fn vec_sink(buffer: &mut Vec<u8>) -> ByteSink {
    ByteSink { context: buffer as *mut Vec<u8> as *mut c_void, put: sink_into_vec }
}

/// One declared access: table, key and whether it may be written.
type Access = (u32, Vec<u8>, bool);

struct PlanState {
    accesses: Vec<Access>,
    /// Position of each (table, key) in `accesses`: plans may declare a key twice.
    positions: HashMap<(u32, Vec<u8>), usize>,
    refused_by_host: bool,
}

extern "C" fn plan_add_access(context: *mut c_void, table: u32, key: RawBytes, mode: u8) -> i32 {
    // SAFETY: `plan` passes a live `*mut PlanState`.
    let state = unsafe { &mut *(context as *mut PlanState) };
    assert!(mode == abi::MODE_READ || mode == abi::MODE_WRITE, "the plan used access mode {mode}");
    if state.accesses.len() >= PLAN_KEYS_MAX {
        state.refused_by_host = true;
        return abi::ACCESS_REFUSED;
    }
    // SAFETY: the plugin passes a key valid for the call.
    let key = unsafe { key.as_slice() }.to_vec();
    let writes = mode == abi::MODE_WRITE;
    match state.positions.get(&(table, key.clone())) {
        Some(&position) => state.accesses[position].2 |= writes,
        None => {
            state.positions.insert((table, key.clone()), state.accesses.len());
            state.accesses.push((table, key, writes));
        }
    }
    0
}

/// The key space the steps of one transaction see, limited to the declared accesses.
struct Store {
    /// Whether each declared (table, key) may be written.
    accesses: HashMap<(u32, Vec<u8>), bool>,
    values: HashMap<(u32, Vec<u8>), Vec<u8>>,
    populated: bool,
    /// Values replaced by a write stay alive until the transaction ends: the SDK may
    /// still hold a slice of the old value (the ABI promises it until the next write of
    /// that key, and keeping it longer is harmless).
    replaced: Vec<Vec<u8>>,
    violation: Option<String>,
}

impl Store {
    fn declared(&self, table: u32, key: &[u8]) -> Option<bool> {
        self.accesses.get(&(table, key.to_vec())).copied()
    }
}

extern "C" fn host_read(context: *mut c_void, table: u32, key: RawBytes, out: *mut RawBytes) -> i32 {
    // SAFETY: `run_steps` passes a live `*mut Store`; the key is valid for the call.
    let (store, key) = unsafe { (&mut *(context as *mut Store), key.as_slice()) };
    if store.declared(table, key).is_none() {
        store.violation.get_or_insert_with(|| format!("read of undeclared key {key:?} of table {table}"));
        return abi::ACCESS_REFUSED;
    }
    let entry = (table, key.to_vec());
    if !store.values.contains_key(&entry) {
        if !store.populated {
            return abi::READ_ABSENT;
        }
        store.values.insert(entry.clone(), POPULATED_VALUE.to_le_bytes().to_vec());
    }
    let value = &store.values[&entry];
    // SAFETY: `out` is the plugin's live output cell; the value lives in the store until
    // the transaction ends (see `replaced`).
    unsafe { *out = RawBytes::from_slice(value) };
    abi::READ_FOUND
}

extern "C" fn host_write(context: *mut c_void, table: u32, key: RawBytes, value: RawBytes) -> i32 {
    // SAFETY: as in `host_read`.
    let (store, key, value) = unsafe { (&mut *(context as *mut Store), key.as_slice(), value.as_slice()) };
    if store.declared(table, key) != Some(true) {
        store
            .violation
            .get_or_insert_with(|| format!("write of key {key:?} of table {table}, not declared for writing"));
        return abi::ACCESS_REFUSED;
    }
    if let Some(old) = store.values.insert((table, key.to_vec()), value.to_vec()) {
        store.replaced.push(old);
    }
    0
}

extern "C" fn host_delete(context: *mut c_void, table: u32, key: RawBytes) -> i32 {
    // SAFETY: as in `host_read`.
    let (store, key) = unsafe { (&mut *(context as *mut Store), key.as_slice()) };
    if store.declared(table, key) != Some(true) {
        store
            .violation
            .get_or_insert_with(|| format!("delete of key {key:?} of table {table}, not declared for writing"));
        return abi::ACCESS_REFUSED;
    }
    if let Some(old) = store.values.remove(&(table, key.to_vec())) {
        store.replaced.push(old);
    }
    0
}

/// What the first two input bytes select; the rest are the arguments.
struct Selection<'a> {
    workflow: u32,
    json: bool,
    populated: bool,
    arguments: &'a [u8],
}

fn select<'a>(descriptor: &PluginDescriptor, data: &'a [u8]) -> Option<Selection<'a>> {
    let [workflow, flags, arguments @ ..] = data else { return None };
    if descriptor.workflow_count == 0 {
        return None;
    }
    Some(Selection {
        workflow: u32::from(*workflow) % descriptor.workflow_count as u32,
        json: flags & 1 != 0,
        populated: flags & 2 != 0,
        arguments,
    })
}

/// Drives the plugin behind `descriptor` with one fuzz input: byte 0 picks the workflow,
/// byte 1 bit 0 says the arguments are JSON (else the plugin's own encoding), bit 1 that
/// every key the steps read holds a value; the rest are the arguments. Panics (which
/// libFuzzer reports as a crash) when the plugin breaks a promise of the module doc.
pub fn drive_plugin(descriptor: *const PluginDescriptor, data: &[u8]) {
    assert!(!descriptor.is_null(), "the plugin failed to build its descriptor");
    // SAFETY: the SDK's descriptor is static and valid for the life of the process.
    let descriptor = unsafe { &*descriptor };
    assert_eq!(descriptor.abi_version, abi::ABI_VERSION);
    let Some(selection) = select(descriptor, data) else { return };
    let arguments = if selection.json {
        let (mut converted, mut error) = (Vec::new(), Vec::new());
        let status = (descriptor.arguments_from_json)(
            selection.workflow,
            RawBytes::from_slice(selection.arguments),
            &vec_sink(&mut converted),
            &vec_sink(&mut error),
        );
        match status {
            abi::STATUS_OK => converted,
            abi::STATUS_BAD_ARGUMENTS => {
                assert!(!error.is_empty(), "JSON arguments refused without a message");
                return;
            }
            other => panic!("arguments_from_json returned status {other}: {}", String::from_utf8_lossy(&error)),
        }
    } else {
        selection.arguments.to_vec()
    };
    let Some(accesses) = plan(descriptor, selection.workflow, &arguments) else { return };
    run_steps(descriptor, selection.workflow, &arguments, accesses, selection.populated);
}

/// Plans the workflow; `None` when the plan refused the arguments (with a message).
fn plan(descriptor: &PluginDescriptor, workflow: u32, arguments: &[u8]) -> Option<Vec<Access>> {
    let mut state = PlanState { accesses: Vec::new(), positions: HashMap::new(), refused_by_host: false };
    let mut error = Vec::new();
    let sink = PlanSink {
        context: &mut state as *mut PlanState as *mut c_void,
        add_access: plan_add_access,
        error: vec_sink(&mut error),
    };
    let status = (descriptor.plan)(workflow, RawBytes::from_slice(arguments), &sink);
    match status {
        abi::STATUS_OK => {
            assert!(!state.refused_by_host, "the plan went on after the host refused an access");
            Some(state.accesses)
        }
        abi::STATUS_BAD_ARGUMENTS => {
            assert!(!error.is_empty(), "arguments refused by the plan without a message");
            None
        }
        abi::STATUS_HOST_REFUSED if state.refused_by_host => None,
        other => panic!("plan returned status {other}: {}", String::from_utf8_lossy(&error)),
    }
}

fn run_steps(descriptor: &PluginDescriptor, workflow: u32, arguments: &[u8], accesses: Vec<Access>, populated: bool) {
    // SAFETY: the descriptor's arrays hold the counts it states (the SDK builds them).
    let workflow = unsafe { &*descriptor.workflows.add(workflow as usize) };
    let steps = unsafe { std::slice::from_raw_parts(workflow.steps, workflow.step_count) };
    let accesses = accesses.into_iter().map(|(table, key, writes)| ((table, key), writes)).collect();
    let mut store = Store { accesses, values: HashMap::new(), populated, replaced: Vec::new(), violation: None };
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(steps.len());
    for step in steps {
        // SAFETY: as above.
        let parent_indexes = unsafe { std::slice::from_raw_parts(step.parents, step.parent_count) };
        let parents: Vec<RawBytes> =
            parent_indexes.iter().map(|&parent| RawBytes::from_slice(&outputs[parent as usize])).collect();
        let (mut output, mut error) = (Vec::new(), Vec::new());
        let call = FunctionCall {
            context: &mut store as *mut Store as *mut c_void,
            arguments: RawBytes::from_slice(arguments),
            parent_outputs: parents.as_ptr(),
            parent_count: parents.len(),
            read: host_read,
            write: host_write,
            delete: host_delete,
            output: vec_sink(&mut output),
            error: vec_sink(&mut error),
        };
        let status = (descriptor.run)(step.function, &call);
        if let Some(violation) = store.violation.take() {
            panic!("step {} broke its plan: {violation}", step.function);
        }
        match status {
            abi::STATUS_OK => outputs.push(output),
            abi::STATUS_ABORT => {
                assert!(!error.is_empty(), "step {} aborted without a message", step.function);
                return;
            }
            other => panic!("step {} returned status {other}: {}", step.function, String::from_utf8_lossy(&error)),
        }
    }
}
