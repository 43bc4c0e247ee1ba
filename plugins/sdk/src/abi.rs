//! The versioned C ABI between the engine (host) and a plugin (a shared library).
//!
//! Everything here is `#[repr(C)]` and carries only plain pointers, integers and
//! `extern "C"` function pointers, so that a plugin built with another compiler version
//! (or another language) can implement it. Two rules keep the boundary sound:
//!
//! * **Nobody frees across the boundary.** Memory handed to the other side is borrowed
//!   for the duration of one call. Data that must outlive a call is copied by the
//!   receiver (the host copies written values, outputs and error messages through the
//!   callbacks below).
//! * **No panic crosses the boundary.** Every `extern "C"` entry point of a plugin
//!   catches panics and reports them as [`STATUS_PANIC`]; the host turns that into an
//!   aborted transaction.
//!
//! A plugin exports one symbol, [`ENTRY_SYMBOL`], a function returning a pointer to a
//! static [`PluginDescriptor`]. The host checks [`PluginDescriptor::abi_version`] before
//! touching anything else in it.

use std::ffi::c_void;

/// The ABI version this SDK implements. The host refuses a descriptor with another value.
pub const ABI_VERSION: u32 = 1;

/// The symbol every plugin exports (`extern "C" fn() -> *const PluginDescriptor`).
pub const ENTRY_SYMBOL: &[u8] = b"leasehold_plugin_entry_v1\0";

/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The function (or planner) refused: a logic abort with a message set through the
/// error callback. The transaction aborts; nothing it wrote is kept.
pub const STATUS_ABORT: i32 = 1;
/// A panic was caught inside the plugin; its message was set through the error callback.
pub const STATUS_PANIC: i32 = 2;
/// The arguments could not be decoded; the message says why.
pub const STATUS_BAD_ARGUMENTS: i32 = 3;
/// A host callback refused an operation (for example an access outside the declared
/// access set); the host already knows why, the plugin only passes the refusal on.
pub const STATUS_HOST_REFUSED: i32 = 4;

/// Host callback status: the key exists and `out` points at its value.
pub const READ_FOUND: i32 = 0;
/// Host callback status: the key has no value.
pub const READ_ABSENT: i32 = 1;
/// Host callback status: the access is outside the declared access set (or otherwise
/// refused); the transaction is aborted by the host.
pub const ACCESS_REFUSED: i32 = -1;

/// Access mode of a planned key access.
pub const MODE_READ: u8 = 0;
/// Access mode of a planned key access (a write may also read).
pub const MODE_WRITE: u8 = 1;

/// A borrowed byte slice. Valid only for the duration of the call that hands it over.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl RawBytes {
    pub const EMPTY: RawBytes = RawBytes { ptr: std::ptr::null(), len: 0 };

    pub fn from_slice(bytes: &[u8]) -> RawBytes {
        RawBytes { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// # Safety
    /// `ptr` must point at `len` readable bytes that live for `'a` (or `len` must be 0).
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// A table the plugin declares: a named key space whose values never exceed
/// `value_bytes_max` (fixed-size slots make one-sided remote access possible).
#[repr(C)]
pub struct TableDecl {
    pub name: RawBytes,
    pub value_bytes_max: u32,
}

/// A function the plugin declares.
#[repr(C)]
pub struct FunctionDecl {
    pub name: RawBytes,
}

/// One step of a workflow: a function and the earlier steps whose outputs it receives.
#[repr(C)]
pub struct StepDecl {
    pub function: u32,
    /// Indices of earlier steps of the same workflow (each smaller than this step's).
    pub parents: *const u32,
    pub parent_count: usize,
}

/// A workflow: a DAG of steps listed in a topological order. The workflow's output is
/// the output of its last step.
#[repr(C)]
pub struct WorkflowDecl {
    pub name: RawBytes,
    pub steps: *const StepDecl,
    pub step_count: usize,
}

/// Callbacks through which a plugin hands bytes (an error message, converted arguments)
/// back to the host; the host copies them before returning.
#[repr(C)]
pub struct ByteSink {
    pub context: *mut c_void,
    pub put: extern "C" fn(context: *mut c_void, bytes: RawBytes),
}

/// Callbacks through which the planner reports a workflow instance's access set.
#[repr(C)]
pub struct PlanSink {
    pub context: *mut c_void,
    /// Declares an access of `mode` ([`MODE_READ`] or [`MODE_WRITE`]) to `key` in table
    /// number `table` (an index into the plugin's declared tables).
    pub add_access: extern "C" fn(context: *mut c_void, table: u32, key: RawBytes, mode: u8) -> i32,
    /// Receives the error message when planning fails.
    pub error: ByteSink,
}

/// What the host gives a function for one call.
#[repr(C)]
pub struct FunctionCall {
    pub context: *mut c_void,
    /// The workflow's arguments (the plugin's own encoding).
    pub arguments: RawBytes,
    /// Outputs of this step's parents, in the order the step declared them.
    pub parent_outputs: *const RawBytes,
    pub parent_count: usize,
    /// Reads `key` of table `table`; on [`READ_FOUND`] `out` points at the value, valid
    /// until the next `write` of the same key or the end of the call.
    pub read: extern "C" fn(context: *mut c_void, table: u32, key: RawBytes, out: *mut RawBytes) -> i32,
    /// Writes (copies) `value` as the new value of `key`; returns 0 or [`ACCESS_REFUSED`].
    pub write: extern "C" fn(context: *mut c_void, table: u32, key: RawBytes, value: RawBytes) -> i32,
    /// Deletes `key`; returns 0 or [`ACCESS_REFUSED`].
    pub delete: extern "C" fn(context: *mut c_void, table: u32, key: RawBytes) -> i32,
    /// Receives (copies) the step's output on success.
    pub output: ByteSink,
    /// Receives (copies) the abort or panic message on failure.
    pub error: ByteSink,
}

/// The static description a plugin exports through [`ENTRY_SYMBOL`].
#[repr(C)]
pub struct PluginDescriptor {
    /// Must equal [`ABI_VERSION`]; checked first.
    pub abi_version: u32,
    pub name: RawBytes,
    pub version: RawBytes,
    /// Build information (SDK version and compiler), shown by the engine and checked for
    /// presence.
    pub build_info: RawBytes,
    pub tables: *const TableDecl,
    pub table_count: usize,
    pub functions: *const FunctionDecl,
    pub function_count: usize,
    pub workflows: *const WorkflowDecl,
    pub workflow_count: usize,
    /// Computes the access set of workflow number `workflow` from its arguments.
    pub plan: extern "C" fn(workflow: u32, arguments: RawBytes, sink: *const PlanSink) -> i32,
    /// Runs function number `function`.
    pub run: extern "C" fn(function: u32, call: *const FunctionCall) -> i32,
    /// Converts JSON arguments of workflow `workflow` into the plugin's argument encoding
    /// (written to `out`), so that any client can call with JSON.
    pub arguments_from_json:
        extern "C" fn(workflow: u32, json: RawBytes, out: *const ByteSink, error: *const ByteSink) -> i32,
    /// Converts an output of workflow `workflow` into JSON (written to `out`).
    pub output_to_json:
        extern "C" fn(workflow: u32, output: RawBytes, out: *const ByteSink, error: *const ByteSink) -> i32,
}

// The descriptor is immutable static data describing code; sharing it is sound.
unsafe impl Sync for PluginDescriptor {}
unsafe impl Send for PluginDescriptor {}

/// Type of the exported entry point.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;
