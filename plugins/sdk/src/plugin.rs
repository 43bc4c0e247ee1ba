//! The builder through which a plugin declares its tables, functions and workflows.

use crate::{Abort, Context, Plan};
use serde::{de::DeserializeOwned, Serialize};

/// A table handle: the index of the table in the plugin's declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Table(pub u32);

/// The signature of a function: reads and writes through the context, returns its output.
pub type FunctionFn = fn(&mut Context<'_>) -> Result<Vec<u8>, Abort>;

pub(crate) type PlanFn = Box<dyn Fn(&[u8], &mut Plan<'_>) -> Result<(), Abort> + Send + Sync>;
pub(crate) type ConvertFn = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

pub(crate) struct TableDef {
    pub name: String,
    pub value_bytes_max: u32,
}

pub(crate) struct FunctionDef {
    pub name: String,
    pub run: FunctionFn,
}

pub(crate) struct StepDef {
    pub function: u32,
    pub parents: Vec<u32>,
}

pub(crate) struct WorkflowDef {
    pub name: String,
    pub steps: Vec<StepDef>,
    pub plan: PlanFn,
    pub arguments_from_json: ConvertFn,
    pub output_to_json: ConvertFn,
}

/// A plugin under construction. Declaration mistakes (a table declared out of order, a
/// step naming an unknown function) panic while the engine loads the plugin, which the
/// engine reports as a refused plugin.
pub struct Plugin {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) tables: Vec<TableDef>,
    pub(crate) functions: Vec<FunctionDef>,
    pub(crate) workflows: Vec<WorkflowDef>,
}

impl Plugin {
    pub fn new(name: &str, version: &str) -> Plugin {
        Plugin {
            name: name.into(),
            version: version.into(),
            tables: Vec::new(),
            functions: Vec::new(),
            workflows: Vec::new(),
        }
    }

    /// Declares `table` (whose index must be the next free one) with its value size limit.
    pub fn table(mut self, table: Table, name: &str, value_bytes_max: u32) -> Plugin {
        assert_eq!(table.0 as usize, self.tables.len(), "table {name} must be declared in index order");
        self.tables.push(TableDef { name: name.into(), value_bytes_max });
        self
    }

    /// Declares a function under `name`.
    pub fn function(mut self, name: &str, run: FunctionFn) -> Plugin {
        assert!(self.functions.iter().all(|f| f.name != name), "function {name} declared twice");
        self.functions.push(FunctionDef { name: name.into(), run });
        self
    }

    /// Starts a workflow whose arguments are `A` and whose output (the last step's) is `O`.
    /// `plan` declares the access set from the arguments.
    pub fn workflow<A, O>(self, name: &str, plan: fn(&A, &mut Plan<'_>) -> Result<(), Abort>) -> WorkflowBuilder
    where
        A: Serialize + DeserializeOwned + 'static,
        O: Serialize + DeserializeOwned + 'static,
    {
        let plan: PlanFn = Box::new(move |bytes, sink| {
            let arguments: A = crate::decode(bytes)?;
            plan(&arguments, sink)
        });
        let arguments_from_json: ConvertFn = Box::new(|json| {
            let arguments: A = serde_json::from_slice(json).map_err(|error| error.to_string())?;
            postcard::to_allocvec(&arguments).map_err(|error| error.to_string())
        });
        let output_to_json: ConvertFn = Box::new(|bytes| {
            let output: O = postcard::from_bytes(bytes).map_err(|error| error.to_string())?;
            serde_json::to_vec(&output).map_err(|error| error.to_string())
        });
        WorkflowBuilder {
            plugin: self,
            workflow: WorkflowDef { name: name.into(), steps: Vec::new(), plan, arguments_from_json, output_to_json },
            step_names: Vec::new(),
        }
    }
}

/// A workflow under construction: steps in a topological order, each naming its parents.
pub struct WorkflowBuilder {
    plugin: Plugin,
    workflow: WorkflowDef,
    step_names: Vec<String>,
}

impl WorkflowBuilder {
    /// Adds a step running `function` after the steps named in `parents` (earlier steps of
    /// this workflow, named by their function names).
    pub fn step(mut self, function: &str, parents: &[&str]) -> WorkflowBuilder {
        let index = self
            .plugin
            .functions
            .iter()
            .position(|f| f.name == function)
            .unwrap_or_else(|| panic!("workflow {} names unknown function {function}", self.workflow.name));
        let parents = parents
            .iter()
            .map(|parent| {
                self.step_names
                    .iter()
                    .position(|name| name == parent)
                    .unwrap_or_else(|| panic!("step {function} names {parent}, which is not an earlier step"))
                    as u32
            })
            .collect();
        self.workflow.steps.push(StepDef { function: index as u32, parents });
        self.step_names.push(function.into());
        self
    }

    /// Finishes the workflow and returns to the plugin.
    pub fn done(mut self) -> Plugin {
        assert!(!self.workflow.steps.is_empty(), "workflow {} has no steps", self.workflow.name);
        self.plugin.workflows.push(self.workflow);
        self.plugin
    }
}
