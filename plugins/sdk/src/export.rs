//! The `extern "C"` side of the SDK: builds the static [`PluginDescriptor`] from a
//! [`Plugin`] and dispatches the engine's calls to the plugin's Rust functions, catching
//! every panic so that none crosses the boundary.

use crate::abi::{self, ByteSink, FunctionCall, PlanSink, PluginDescriptor, RawBytes};
use crate::plugin::{Plugin, WorkflowDef};
use crate::{Context, Plan};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// The plugin's declarations together with the C views of them. Built once per loaded
/// library; the C arrays point into the owned strings and vectors, whose heap buffers
/// never move after construction.
pub struct Registered {
    plugin: Plugin,
    descriptor: PluginDescriptor,
    _tables: Vec<abi::TableDecl>,
    _functions: Vec<abi::FunctionDecl>,
    _workflows: Vec<abi::WorkflowDecl>,
    _steps: Vec<Vec<abi::StepDecl>>,
}

// SAFETY: `Registered` is immutable after construction; its raw pointers point into data
// it owns.
unsafe impl Sync for Registered {}
unsafe impl Send for Registered {}

static REGISTERED: OnceLock<Option<Registered>> = OnceLock::new();

const BUILD_INFO: &str = concat!("leasehold-sdk ", env!("CARGO_PKG_VERSION"), " abi 1");

fn register(plugin: Plugin) -> Registered {
    let tables: Vec<abi::TableDecl> = plugin
        .tables
        .iter()
        .map(|t| abi::TableDecl { name: RawBytes::from_slice(t.name.as_bytes()), value_bytes_max: t.value_bytes_max })
        .collect();
    let functions: Vec<abi::FunctionDecl> =
        plugin.functions.iter().map(|f| abi::FunctionDecl { name: RawBytes::from_slice(f.name.as_bytes()) }).collect();
    let steps: Vec<Vec<abi::StepDecl>> = plugin
        .workflows
        .iter()
        .map(|w| {
            w.steps
                .iter()
                .map(|s| abi::StepDecl {
                    function: s.function,
                    parents: s.parents.as_ptr(),
                    parent_count: s.parents.len(),
                })
                .collect()
        })
        .collect();
    let workflows: Vec<abi::WorkflowDecl> = plugin
        .workflows
        .iter()
        .zip(&steps)
        .map(|(w, s)| abi::WorkflowDecl {
            name: RawBytes::from_slice(w.name.as_bytes()),
            steps: s.as_ptr(),
            step_count: s.len(),
        })
        .collect();
    let descriptor = PluginDescriptor {
        abi_version: abi::ABI_VERSION,
        name: RawBytes::from_slice(plugin.name.as_bytes()),
        version: RawBytes::from_slice(plugin.version.as_bytes()),
        build_info: RawBytes::from_slice(BUILD_INFO.as_bytes()),
        tables: tables.as_ptr(),
        table_count: tables.len(),
        functions: functions.as_ptr(),
        function_count: functions.len(),
        workflows: workflows.as_ptr(),
        workflow_count: workflows.len(),
        plan: sdk_plan,
        run: sdk_run,
        arguments_from_json: sdk_arguments_from_json,
        output_to_json: sdk_output_to_json,
    };
    Registered { plugin, descriptor, _tables: tables, _functions: functions, _workflows: workflows, _steps: steps }
}

/// The body of the exported entry point: builds the plugin once and returns its
/// descriptor, or null when building it panicked (the engine then refuses the plugin).
pub fn entry(build: impl FnOnce() -> Plugin) -> *const PluginDescriptor {
    let registered = REGISTERED.get_or_init(|| catch_unwind(AssertUnwindSafe(|| register(build()))).ok());
    match registered {
        Some(registered) => &registered.descriptor,
        None => std::ptr::null(),
    }
}

fn registered() -> &'static Registered {
    // The engine only calls plan/run through a descriptor that `entry` returned, so the
    // plugin is registered by then.
    REGISTERED.get().and_then(Option::as_ref).expect("plugin called before registration")
}

fn workflow(index: u32) -> Option<&'static WorkflowDef> {
    registered().plugin.workflows.get(index as usize)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        format!("plugin panicked: {text}")
    } else if let Some(text) = payload.downcast_ref::<String>() {
        format!("plugin panicked: {text}")
    } else {
        "plugin panicked".to_string()
    }
}

fn put(sink: &ByteSink, bytes: &[u8]) {
    (sink.put)(sink.context, RawBytes::from_slice(bytes));
}

extern "C" fn sdk_plan(workflow_index: u32, arguments: RawBytes, sink: *const PlanSink) -> i32 {
    // SAFETY: the host passes a valid sink and arguments for the duration of the call.
    let sink = unsafe { &*sink };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Some(workflow) = workflow(workflow_index) else {
            return Err((abi::STATUS_BAD_ARGUMENTS, format!("no workflow number {workflow_index}")));
        };
        let mut plan = Plan::new(sink);
        let result = (workflow.plan)(unsafe { arguments.as_slice() }, &mut plan);
        match result {
            Ok(()) if plan.was_refused() => Err((abi::STATUS_HOST_REFUSED, String::new())),
            Ok(()) => Ok(()),
            Err(abort) if abort.host_refused => Err((abi::STATUS_HOST_REFUSED, String::new())),
            Err(abort) => Err((abi::STATUS_BAD_ARGUMENTS, abort.message)),
        }
    }));
    match outcome {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err((status, message))) => {
            put(&sink.error, message.as_bytes());
            status
        }
        Err(payload) => {
            put(&sink.error, panic_message(&*payload).as_bytes());
            abi::STATUS_PANIC
        }
    }
}

extern "C" fn sdk_run(function_index: u32, call: *const FunctionCall) -> i32 {
    // SAFETY: the host passes a valid call description for the duration of the call.
    let call = unsafe { &*call };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Some(function) = registered().plugin.functions.get(function_index as usize) else {
            return Err((abi::STATUS_BAD_ARGUMENTS, format!("no function number {function_index}")));
        };
        let mut context = Context::new(call);
        match (function.run)(&mut context) {
            Ok(output) => {
                put(&call.output, &output);
                Ok(())
            }
            Err(abort) if abort.host_refused => Err((abi::STATUS_HOST_REFUSED, String::new())),
            Err(abort) => Err((abi::STATUS_ABORT, abort.message)),
        }
    }));
    match outcome {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err((status, message))) => {
            put(&call.error, message.as_bytes());
            status
        }
        Err(payload) => {
            put(&call.error, panic_message(&*payload).as_bytes());
            abi::STATUS_PANIC
        }
    }
}

fn convert(
    workflow_index: u32,
    input: RawBytes,
    out: *const ByteSink,
    error: *const ByteSink,
    pick: fn(&WorkflowDef) -> &crate::plugin::ConvertFn,
) -> i32 {
    // SAFETY: the host passes valid sinks and input for the duration of the call.
    let (out, error) = unsafe { (&*out, &*error) };
    let outcome = catch_unwind(AssertUnwindSafe(|| match workflow(workflow_index) {
        None => Err(format!("no workflow number {workflow_index}")),
        Some(workflow) => pick(workflow)(unsafe { input.as_slice() }),
    }));
    match outcome {
        Ok(Ok(bytes)) => {
            put(out, &bytes);
            abi::STATUS_OK
        }
        Ok(Err(message)) => {
            put(error, message.as_bytes());
            abi::STATUS_BAD_ARGUMENTS
        }
        Err(payload) => {
            put(error, panic_message(&*payload).as_bytes());
            abi::STATUS_PANIC
        }
    }
}

extern "C" fn sdk_arguments_from_json(
    workflow: u32,
    json: RawBytes,
    out: *const ByteSink,
    error: *const ByteSink,
) -> i32 {
    convert(workflow, json, out, error, |w| &w.arguments_from_json)
}

extern "C" fn sdk_output_to_json(workflow: u32, output: RawBytes, out: *const ByteSink, error: *const ByteSink) -> i32 {
    convert(workflow, output, out, error, |w| &w.output_to_json)
}
