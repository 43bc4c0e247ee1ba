//! `leasehold-plugin-endless`: a hostile plugin for the engine's tests only. Its functions
//! never return, the case the plugin call watchdog reports
//! (`engine/src/plugin/watchdog.rs`) and the executor abandons after
//! `plugin_call_abandon_ms` (`engine/src/txn/executor.rs`):
//! * `spin`: a busy loop that touches no key;
//! * `spin_holding`: reads its key and then loops forever re-reading the value slice the
//!   engine handed it, and asking the engine for the key again, which is what an
//!   abandoned call must not be able to turn into reading memory a successor changes;
//! * `put` (a function that does return) writes a key, so that tests can put a
//!   transaction behind `spin_holding` on the same key.
//!
//! It is a crate of its own, not a testkit operation, so that no fuzzer can reach it with
//! random input.

use leasehold_sdk::prelude::*;

pub const CELLS: Table = Table(0);

#[derive(Serialize, Deserialize)]
struct Nothing {}

#[derive(Serialize, Deserialize)]
struct Cell {
    key: u64,
}

#[derive(Serialize, Deserialize)]
struct Put {
    key: u64,
    value: i64,
}

fn pause() {
    std::hint::spin_loop();
    // Sleeps a little between spins so that a test run does not keep a core busy.
    std::thread::sleep(std::time::Duration::from_millis(1));
}

fn spin(_ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    loop {
        pause();
    }
}

fn spin_holding(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Cell = ctx.arguments()?;
    let key = key_u64(args.key);
    let first = ctx.read(CELLS, &key)?.map(<[u8]>::to_vec);
    let held = ctx.read(CELLS, &key)?;
    loop {
        // The slice the engine handed over must stay readable and unchanged for good.
        if held.map(<[u8]>::to_vec) != first {
            return Err(Abort::new("the value under a held slice changed"));
        }
        // A later read is refused once the call is abandoned; this loops on regardless.
        let _ = ctx.read_i64(CELLS, &key);
        pause();
    }
}

fn put(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Put = ctx.arguments()?;
    ctx.write_i64(CELLS, &key_u64(args.key), args.value)?;
    encode(&args.value)
}

export_plugin!(|| {
    Plugin::new("endless", env!("CARGO_PKG_VERSION"))
        .table(CELLS, "cells", 8)
        .function("spin", spin)
        .function("spin_holding", spin_holding)
        .function("put", put)
        .workflow::<Nothing, ()>("spin", |_, _| Ok(()))
        .step("spin", &[])
        .done()
        .workflow::<Cell, ()>("spin_holding", |args, plan| {
            plan.write(CELLS, &key_u64(args.key));
            Ok(())
        })
        .step("spin_holding", &[])
        .done()
        .workflow::<Put, i64>("put", |args, plan| {
            plan.write(CELLS, &key_u64(args.key));
            Ok(())
        })
        .step("put", &[])
        .done()
});
