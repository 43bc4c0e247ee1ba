//! A plugin for the engine's own tests (not a workload).
//!
//! Its `program` workflow runs a script given in the arguments: three chained steps,
//! each with a list of [`Op`]s over a small key space. The same script can be run by a
//! serial reference model in a test, so the engine's results and final state can be
//! compared with serial execution in timestamp order. It can also panic or touch a key
//! it did not declare, which the engine must turn into an aborted transaction.
//!
//! Its `list_append` workflow is the list-append workload of Elle for history checking
//! (`leasehold_integration::history`): reads that return whole lists and appends of
//! unique values, in one step, over the `lists` table.

pub use leasehold_plugin_api::testkit::*;
use leasehold_sdk::prelude::*;

pub const CELLS: Table = Table(0);
pub const LISTS: Table = Table(1);

fn key(cell: u8) -> [u8; 1] {
    [cell]
}

fn run_step(ctx: &mut Context, step: usize) -> Result<Vec<u8>, Abort> {
    let program: Program = ctx.arguments()?;
    let mut reads: Vec<i64> = if ctx.parent_count() > 0 { ctx.parent(0)? } else { Vec::new() };
    for op in &program.steps[step] {
        match *op {
            Op::Read(cell) => reads.push(ctx.read_i64(CELLS, &key(cell))?.unwrap_or(0)),
            Op::Add(cell, delta) => {
                let value = ctx.read_i64(CELLS, &key(cell))?.unwrap_or(0);
                ctx.write_i64(CELLS, &key(cell), value.wrapping_add(delta))?;
            }
            Op::Set(cell, value) => ctx.write_i64(CELLS, &key(cell), value)?,
            Op::AbortIfNegative(cell) => {
                if ctx.read_i64(CELLS, &key(cell))?.unwrap_or(0) < 0 {
                    return Err(Abort::new(format!("cell {cell} is negative")));
                }
            }
            Op::Panic => panic!("testkit was asked to panic"),
            Op::Undeclared(cell) => {
                let undeclared = (UNDECLARED_KEY_BASE + cell as u16).to_be_bytes();
                ctx.write_i64(CELLS, &undeclared, 1)?;
            }
        }
    }
    encode(&reads)
}

fn run_list_transaction(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let transaction: ListTransaction = ctx.arguments()?;
    let mut reads: Vec<Vec<u64>> = Vec::new();
    for op in &transaction.ops {
        match *op {
            ListOp::Read(key) => reads.push(ctx.read_value(LISTS, &key_u64(key))?.unwrap_or_default()),
            ListOp::Append(key, value) => {
                let mut list: Vec<u64> = ctx.read_value(LISTS, &key_u64(key))?.unwrap_or_default();
                list.push(value);
                ctx.write_value(LISTS, &key_u64(key), &list)?;
            }
            ListOp::Abort => return Err(Abort::new("the list transaction asked to abort")),
        }
    }
    encode(&reads)
}

fn plan_list_transaction(transaction: &ListTransaction, plan: &mut Plan) -> Result<(), Abort> {
    if transaction.ops.len() > LIST_OPS_MAX {
        return Err(Abort::new(format!(
            "a list transaction carries at most {LIST_OPS_MAX} operations, not {}",
            transaction.ops.len()
        )));
    }
    for op in &transaction.ops {
        match *op {
            ListOp::Read(key) => plan.read(LISTS, &key_u64(key)),
            // An append reads the list before it writes the longer one.
            ListOp::Append(key, _) => plan.write(LISTS, &key_u64(key)),
            ListOp::Abort => {}
        }
    }
    Ok(())
}

fn plan_program(program: &Program, plan: &mut Plan) -> Result<(), Abort> {
    for op in program.steps.iter().flatten() {
        match *op {
            Op::Read(cell) | Op::AbortIfNegative(cell) => plan.read(CELLS, &key(cell)),
            Op::Add(cell, _) | Op::Set(cell, _) => plan.write(CELLS, &key(cell)),
            Op::Panic | Op::Undeclared(_) => {}
        }
    }
    Ok(())
}

export_plugin!(|| {
    Plugin::new("testkit", env!("CARGO_PKG_VERSION"))
        .table(CELLS, "cells", 8)
        .table(LISTS, "lists", LIST_BYTES_MAX)
        .function("first", |ctx| run_step(ctx, 0))
        .function("second", |ctx| run_step(ctx, 1))
        .function("third", |ctx| run_step(ctx, 2))
        .function("panic_in_plan", |_| Ok(Vec::new()))
        .workflow::<Program, Vec<i64>>("program", plan_program)
        .step("first", &[])
        .step("second", &["first"])
        .step("third", &["second"])
        .done()
        .function("list_append", run_list_transaction)
        .workflow::<ListTransaction, Vec<Vec<u64>>>("list_append", plan_list_transaction)
        .step("list_append", &[])
        .done()
        .workflow::<Nothing, ()>("panic_in_plan", |_, _| panic!("testkit planner was asked to panic"))
        .step("panic_in_plan", &[])
        .done()
});
