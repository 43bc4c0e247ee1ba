//! Fuzz target: hostile arguments (JSON or the plugin's own encoding) to every workflow
//! of the travel plugin, driven through its C ABI by `leasehold_fuzz::drive_plugin`, which
//! states the promises checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    leasehold_fuzz::drive_plugin(leasehold_plugin_travel::leasehold_plugin_entry_v1(), data);
});
