//! One loaded plugin library: reading and checking its descriptor, and the calls into it
//! (planning, running a function, JSON conversion). All `unsafe` code of the plugin host
//! lives here, next to the ABI rules it relies on (see `leasehold_sdk::abi`).

use super::PluginError;
use crate::model::{PluginInfo, Rejection, TableInfo};
use crate::txn::access::{AccessMode, AccessSet};
use leasehold_sdk::abi::{self, ByteSink, FunctionCall, PlanSink, PluginDescriptor, RawBytes};
use rustc_hash::FxHashMap;
use std::ffi::c_void;
use std::path::Path;

/// Limits on what a plugin may declare, so a broken descriptor cannot make the host
/// allocate without bound.
const TABLES_MAX: usize = 1024;
const FUNCTIONS_MAX: usize = 65_536;
const WORKFLOWS_MAX: usize = 65_536;
const STEPS_MAX: usize = 1024;
const NAME_BYTES_MAX: usize = 256;
/// Largest value a table may declare (values live in fixed-size slots).
pub const VALUE_BYTES_MAX: u32 = 16 << 20;

/// A declared table with the node-wide id its data is stored under.
#[derive(Clone, Debug)]
pub struct LoadedTable {
    pub name: String,
    pub value_bytes_max: u32,
    pub table_id: u32,
}

/// One step of a workflow.
#[derive(Clone, Debug)]
pub struct StepCall {
    pub function: u32,
    pub parents: Vec<u32>,
}

/// A declared workflow: its steps in a topological order.
#[derive(Clone, Debug)]
pub struct LoadedWorkflow {
    pub name: String,
    pub steps: Vec<StepCall>,
}

/// Limits applied while a plugin plans an access set.
#[derive(Clone, Copy, Debug)]
pub struct AccessLimits {
    pub keys_max: usize,
    pub key_bytes_max: usize,
}

/// A plugin library that passed every check, ready to plan and run transactions.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    pub tables: Vec<LoadedTable>,
    pub workflows: Vec<LoadedWorkflow>,
    workflow_index: FxHashMap<String, u32>,
    /// This load's number in the call watchdog, which names overdue calls.
    watch_id: u32,
    /// Why this load takes no more calls: set once, when the node abandoned a call of it
    /// (`txn::executor`). Deploying a new version makes a new, unquarantined load.
    quarantine: std::sync::OnceLock<String>,
    descriptor: *const PluginDescriptor,
    // Declared last so that it is dropped (unmapped) after everything pointing into it.
    _library: libloading::Library,
}

// SAFETY: the descriptor is immutable static data of the library, which stays mapped as
// long as this value lives; the SDK's entry points are thread-safe.
unsafe impl Send for LoadedPlugin {}
unsafe impl Sync for LoadedPlugin {}

fn text(bytes: RawBytes, what: &str) -> Result<String, PluginError> {
    if bytes.len > NAME_BYTES_MAX {
        return Err(PluginError::Invalid(format!("{what} is longer than {NAME_BYTES_MAX} bytes")));
    }
    if bytes.len > 0 && bytes.ptr.is_null() {
        return Err(PluginError::Invalid(format!("{what} is a null pointer")));
    }
    // SAFETY: the descriptor promises `len` readable bytes.
    let slice = unsafe { bytes.as_slice() };
    String::from_utf8(slice.to_vec()).map_err(|_| PluginError::Invalid(format!("{what} is not UTF-8")))
}

fn name(bytes: RawBytes, what: &str) -> Result<String, PluginError> {
    let name = text(bytes, what)?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(PluginError::Invalid(format!(
            "{what} {name:?} must be non-empty ASCII letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(name)
}

/// # Safety
/// `pointer` must point at `count` valid `T`s when `count > 0`.
unsafe fn array<'a, T>(pointer: *const T, count: usize, max: usize, what: &str) -> Result<&'a [T], PluginError> {
    if count > max {
        return Err(PluginError::Invalid(format!("{count} {what} declared; at most {max} are allowed")));
    }
    if count == 0 {
        return Ok(&[]);
    }
    if pointer.is_null() {
        return Err(PluginError::Invalid(format!("{what} is a null pointer")));
    }
    Ok(std::slice::from_raw_parts(pointer, count))
}

extern "C" fn sink_into_vec(context: *mut c_void, bytes: RawBytes) {
    // SAFETY: every ByteSink built here passes a `*mut Vec<u8>` as context and the plugin
    // passes bytes valid for this call.
    let buffer = unsafe { &mut *(context as *mut Vec<u8>) };
    buffer.extend_from_slice(unsafe { bytes.as_slice() });
}

/// A sink that appends to `buffer`.
pub(crate) fn vec_sink(buffer: &mut Vec<u8>) -> ByteSink {
    ByteSink { context: buffer as *mut Vec<u8> as *mut c_void, put: sink_into_vec }
}

struct PlanState<'a> {
    set: AccessSet,
    table_count: u32,
    limits: AccessLimits,
    refusal: Option<Rejection>,
    _tables: &'a [LoadedTable],
}

extern "C" fn plan_add_access(context: *mut c_void, table: u32, key: RawBytes, mode: u8) -> i32 {
    // SAFETY: `plan` passes a `*mut PlanState` as context for the duration of the call.
    let state = unsafe { &mut *(context as *mut PlanState) };
    if state.refusal.is_some() {
        return abi::ACCESS_REFUSED;
    }
    let refusal = if table >= state.table_count {
        Some(Rejection::PlanFailed(format!("the plan names table number {table}, which the plugin does not declare")))
    } else if key.len > state.limits.key_bytes_max {
        Some(Rejection::KeyTooLong { max: state.limits.key_bytes_max })
    } else if state.set.len() >= state.limits.keys_max {
        Some(Rejection::AccessSetTooLarge { count: state.set.len() + 1, max: state.limits.keys_max })
    } else if mode != abi::MODE_READ && mode != abi::MODE_WRITE {
        Some(Rejection::PlanFailed(format!("unknown access mode {mode}")))
    } else {
        None
    };
    if let Some(refusal) = refusal {
        state.refusal = Some(refusal);
        return abi::ACCESS_REFUSED;
    }
    let mode = if mode == abi::MODE_WRITE { AccessMode::Write } else { AccessMode::Read };
    // SAFETY: the plugin passes key bytes valid for this call.
    state.set.push(table, unsafe { key.as_slice() }, mode);
    0
}

fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

impl LoadedPlugin {
    /// Loads and checks the library at `path`. `table_id` assigns the node-wide id of each
    /// declared table (by plugin and table name).
    pub fn load(
        path: &Path,
        digest: &str,
        mut table_id: impl FnMut(&str, &str) -> Result<u32, PluginError>,
    ) -> Result<LoadedPlugin, PluginError> {
        // SAFETY: loading runs the library's initialisers. Plugins are native code the
        // operator chose to deploy; the checks below guard against mistakes, not malice.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|error| PluginError::NotALibrary(error.to_string()))?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: abi::EntryFn = unsafe {
            *library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL).map_err(|_| PluginError::MissingEntry {
                symbol: String::from_utf8_lossy(&abi::ENTRY_SYMBOL[..abi::ENTRY_SYMBOL.len() - 1]).into_owned(),
            })?
        };
        // SAFETY: the entry point takes no arguments and returns a pointer to static data.
        let descriptor = unsafe { entry() };
        if descriptor.is_null() {
            return Err(PluginError::DeclarationFailed);
        }
        // The version is read before anything else: with another ABI the rest of the
        // layout means nothing.
        // SAFETY: every ABI version starts with the `abi_version` field.
        let abi_version = unsafe { std::ptr::read(descriptor as *const u32) };
        if abi_version != abi::ABI_VERSION {
            return Err(PluginError::AbiMismatch { found: abi_version, expected: abi::ABI_VERSION });
        }
        // SAFETY: same ABI version, so the descriptor has this layout.
        let declared = unsafe { &*descriptor };
        let plugin_name = name(declared.name, "plugin name")?;
        let version = text(declared.version, "plugin version")?;
        let build_info = text(declared.build_info, "build info")?;
        if build_info.is_empty() {
            return Err(PluginError::Invalid("the plugin carries no build information".into()));
        }

        let mut tables = Vec::new();
        // SAFETY: the descriptor promises `table_count` entries.
        for table in unsafe { array(declared.tables, declared.table_count, TABLES_MAX, "tables")? } {
            let table_name = name(table.name, "table name")?;
            if tables.iter().any(|t: &LoadedTable| t.name == table_name) {
                return Err(PluginError::Invalid(format!("table {table_name} declared twice")));
            }
            if table.value_bytes_max == 0 || table.value_bytes_max > VALUE_BYTES_MAX {
                return Err(PluginError::Invalid(format!(
                    "table {table_name} declares values of at most {} bytes; it must be 1..={VALUE_BYTES_MAX}",
                    table.value_bytes_max
                )));
            }
            tables.push(LoadedTable { name: table_name, value_bytes_max: table.value_bytes_max, table_id: 0 });
        }
        // SAFETY: the descriptor promises `function_count` entries.
        let functions = unsafe { array(declared.functions, declared.function_count, FUNCTIONS_MAX, "functions")? };
        let mut function_names = Vec::with_capacity(functions.len());
        for function in functions {
            function_names.push(name(function.name, "function name")?);
        }
        let mut workflows = Vec::new();
        let mut workflow_index = FxHashMap::default();
        // SAFETY: the descriptor promises `workflow_count` entries.
        for workflow in unsafe { array(declared.workflows, declared.workflow_count, WORKFLOWS_MAX, "workflows")? } {
            let workflow_name = name(workflow.name, "workflow name")?;
            // SAFETY: the descriptor promises `step_count` steps.
            let steps = unsafe { array(workflow.steps, workflow.step_count, STEPS_MAX, "steps")? };
            if steps.is_empty() {
                return Err(PluginError::Invalid(format!("workflow {workflow_name} has no steps")));
            }
            let mut calls = Vec::with_capacity(steps.len());
            for (index, step) in steps.iter().enumerate() {
                if step.function as usize >= functions.len() {
                    return Err(PluginError::Invalid(format!(
                        "workflow {workflow_name} names function number {}",
                        step.function
                    )));
                }
                // SAFETY: the step promises `parent_count` parents.
                let parents = unsafe { array(step.parents, step.parent_count, STEPS_MAX, "parents")? };
                if parents.iter().any(|&parent| parent as usize >= index) {
                    return Err(PluginError::Invalid(format!(
                        "step {index} of workflow {workflow_name} depends on a step that does not come before it"
                    )));
                }
                calls.push(StepCall { function: step.function, parents: parents.to_vec() });
            }
            let number = u32::try_from(workflows.len()).expect("workflow count is bounded");
            if workflow_index.insert(workflow_name.clone(), number).is_some() {
                return Err(PluginError::Invalid(format!("workflow {workflow_name} declared twice")));
            }
            workflows.push(LoadedWorkflow { name: workflow_name, steps: calls });
        }
        for table in &mut tables {
            table.table_id = table_id(&plugin_name, &table.name)?;
        }
        let watch_id = super::watchdog::register(&plugin_name, &version, function_names);
        let info = PluginInfo {
            name: plugin_name,
            version,
            build_info,
            digest: digest.to_string(),
            tables: tables
                .iter()
                .map(|t| TableInfo { name: t.name.clone(), value_bytes_max: t.value_bytes_max, table_id: t.table_id })
                .collect(),
            workflows: workflows.iter().map(|w| w.name.clone()).collect(),
        };
        Ok(LoadedPlugin {
            info,
            tables,
            workflows,
            workflow_index,
            watch_id,
            quarantine: std::sync::OnceLock::new(),
            descriptor,
            _library: library,
        })
    }

    fn descriptor(&self) -> &PluginDescriptor {
        // SAFETY: checked at load; the library stays mapped while `self` lives.
        unsafe { &*self.descriptor }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The number of a workflow by name.
    /// Stops this load from taking calls, for `reason`; the first reason stays.
    pub fn quarantine(&self, reason: String) {
        let _ = self.quarantine.set(reason);
    }

    /// The refusal for calls of a quarantined load.
    pub fn quarantined(&self) -> Option<Rejection> {
        self.quarantine
            .get()
            .map(|reason| Rejection::PluginQuarantined { plugin: self.info.name.clone(), reason: reason.clone() })
    }

    pub fn workflow_named(&self, workflow: &str) -> Option<u32> {
        self.workflow_index.get(workflow).copied()
    }

    /// The index of a table by name.
    pub fn table_named(&self, table: &str) -> Option<u32> {
        self.tables.iter().position(|t| t.name == table).map(|i| i as u32)
    }

    /// Converts JSON arguments into the plugin's encoding.
    pub fn arguments_from_json(&self, workflow: u32, json: &str) -> Result<Vec<u8>, Rejection> {
        let (mut out, mut error) = (Vec::new(), Vec::new());
        let status = (self.descriptor().arguments_from_json)(
            workflow,
            RawBytes::from_slice(json.as_bytes()),
            &vec_sink(&mut out),
            &vec_sink(&mut error),
        );
        match status {
            abi::STATUS_OK => Ok(out),
            abi::STATUS_PANIC => Err(Rejection::PlanFailed(utf8_lossy(error))),
            _ => Err(Rejection::BadArguments(utf8_lossy(error))),
        }
    }

    /// Converts an output of `workflow` into JSON.
    pub fn output_to_json(&self, workflow: u32, output: &[u8]) -> Result<String, String> {
        let (mut out, mut error) = (Vec::new(), Vec::new());
        let status = (self.descriptor().output_to_json)(
            workflow,
            RawBytes::from_slice(output),
            &vec_sink(&mut out),
            &vec_sink(&mut error),
        );
        match status {
            abi::STATUS_OK => {
                String::from_utf8(out).map_err(|_| "the plugin produced JSON that is not UTF-8".to_string())
            }
            _ => Err(utf8_lossy(error)),
        }
    }

    /// Asks the plugin for the access set of `workflow` with `arguments`.
    pub fn plan(&self, workflow: u32, arguments: &[u8], limits: AccessLimits) -> Result<AccessSet, Rejection> {
        let mut error = Vec::new();
        let mut state = PlanState {
            set: AccessSet::new(),
            table_count: self.tables.len() as u32,
            limits,
            refusal: None,
            _tables: &self.tables,
        };
        let sink = PlanSink {
            context: &mut state as *mut PlanState as *mut c_void,
            add_access: plan_add_access,
            error: vec_sink(&mut error),
        };
        let status = (self.descriptor().plan)(workflow, RawBytes::from_slice(arguments), &sink);
        if let Some(refusal) = state.refusal {
            return Err(refusal);
        }
        match status {
            abi::STATUS_OK => {
                state.set.finish();
                Ok(state.set)
            }
            abi::STATUS_BAD_ARGUMENTS => Err(Rejection::BadArguments(utf8_lossy(error))),
            _ => Err(Rejection::PlanFailed(utf8_lossy(error))),
        }
    }

    /// Runs function number `function` with the host callbacks in `call`; returns the ABI
    /// status.
    pub fn run(&self, function: u32, call: &FunctionCall) -> i32 {
        let _watched = super::watchdog::enter(self.watch_id, function);
        (self.descriptor().run)(function, call)
    }
}
