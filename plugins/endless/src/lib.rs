//! `leasehold-plugin-endless`: a hostile plugin for the engine's tests only. Its `spin`
//! workflow runs a function that never returns (a busy loop that touches no key), the
//! case the plugin call watchdog reports (`engine/src/plugin/watchdog.rs`). It is a crate
//! of its own, not a testkit operation, so that no fuzzer can reach it with random input.

use leasehold_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Nothing {}

fn spin(_ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    loop {
        std::hint::spin_loop();
        // Sleeps a little between spins so that a test run does not keep a core busy.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

export_plugin!(|| {
    Plugin::new("endless", env!("CARGO_PKG_VERSION"))
        .function("spin", spin)
        .workflow::<Nothing, ()>("spin", |_, _| Ok(()))
        .step("spin", &[])
        .done()
});
