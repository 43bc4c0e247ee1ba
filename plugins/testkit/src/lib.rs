//! A plugin for the engine's own tests (not a workload).
//!
//! Its `program` workflow runs a script given in the arguments: three chained steps,
//! each with a list of [`Op`]s over a small key space. The same script can be run by a
//! serial reference model in a test, so the engine's results and final state can be
//! compared with serial execution in timestamp order. It can also panic or touch a key
//! it did not declare, which the engine must turn into an aborted transaction.

pub use leasehold_plugin_api::testkit::*;
use leasehold_sdk::prelude::*;

pub const CELLS: Table = Table(0);

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
        .function("first", |ctx| run_step(ctx, 0))
        .function("second", |ctx| run_step(ctx, 1))
        .function("third", |ctx| run_step(ctx, 2))
        .function("panic_in_plan", |_| Ok(Vec::new()))
        .workflow::<Program, Vec<i64>>("program", plan_program)
        .step("first", &[])
        .step("second", &["first"])
        .step("third", &["second"])
        .done()
        .workflow::<Nothing, ()>("panic_in_plan", |_, _| panic!("testkit planner was asked to panic"))
        .step("panic_in_plan", &[])
        .done()
});
