//! The plugin call watchdog: which plugin function each executor thread is running and
//! since when, so that a call that does not return (an endless loop, a deadlock inside a
//! plugin) is reported with the plugin's and the function's names instead of the node
//! silently stopping.
//!
//! Native plugin code cannot be preempted, so the watchdog only reports; abandoning a call
//! that runs too long is the executor's (`txn::executor`, `plugin_call_abandon_ms`), and
//! this module counts those too. An abandoned call keeps its thread, so it stays on the
//! overdue list for as long as it runs. The hot path is
//! two relaxed atomic stores per call into a slot the calling thread owns; a thread's
//! slot is registered under a lock once, on its first call. Names live in an append-only
//! table indexed by a number each loaded plugin gets, so the monitor never follows a
//! pointer into a plugin that might be unloaded meanwhile.

use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One executor thread's current call: 0 when idle, else the call's start in
/// microseconds since the watchdog's origin (plus one, so that 0 stays free), and which
/// function it is (plugin number in the high 32 bits, function number in the low).
#[derive(Default)]
struct CallSlot {
    started_us: AtomicU64,
    function: AtomicU64,
}

/// A plugin's names, as the report needs them.
struct PluginNames {
    plugin: String,
    functions: Vec<String>,
}

struct Watchdog {
    origin: Instant,
    slots: Mutex<Vec<Arc<CallSlot>>>,
    names: RwLock<Vec<PluginNames>>,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| Watchdog {
        origin: Instant::now(),
        slots: Mutex::new(Vec::new()),
        names: RwLock::new(Vec::new()),
    })
}

thread_local! {
    static SLOT: Arc<CallSlot> = {
        let slot = Arc::new(CallSlot::default());
        watchdog().slots.lock().push(Arc::clone(&slot));
        slot
    };
}

/// Registers a loaded plugin's names; the number identifies it in [`enter`]. Called once
/// per load (deploy or restart), so the table grows by one entry per load.
pub fn register(plugin: &str, version: &str, functions: Vec<String>) -> u32 {
    let mut names = watchdog().names.write();
    names.push(PluginNames { plugin: format!("{plugin} {version}"), functions });
    u32::try_from(names.len() - 1).expect("fewer than 2^32 plugin loads")
}

/// Marks the calling thread as running `function` of plugin `plugin` until the returned
/// guard drops.
pub fn enter(plugin: u32, function: u32) -> CallGuard {
    let started_us = watchdog().origin.elapsed().as_micros() as u64 + 1;
    SLOT.with(|slot| {
        slot.function.store(u64::from(plugin) << 32 | u64::from(function), Ordering::Relaxed);
        slot.started_us.store(started_us, Ordering::Release);
    });
    CallGuard(())
}

/// Clears the calling thread's slot when the call returns (or unwinds).
pub struct CallGuard(());

impl Drop for CallGuard {
    fn drop(&mut self) {
        SLOT.with(|slot| slot.started_us.store(0, Ordering::Release));
    }
}

/// Counts calls the executor abandoned (`txn::executor`), for status.
pub fn count_abandoned(calls: u64) {
    ABANDONED_TOTAL.fetch_add(calls, Ordering::Relaxed);
}

/// Calls abandoned since the process started.
pub fn abandoned_total() -> u64 {
    ABANDONED_TOTAL.load(Ordering::Relaxed)
}

static ABANDONED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// A plugin call that has run longer than the threshold asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverdueCall {
    /// Plugin name and version.
    pub plugin: String,
    pub function: String,
    pub running: Duration,
    /// Identifies the call (with its slot), so a monitor can report each one once.
    pub started_us: u64,
}

/// Every call now running for longer than `threshold`, longest first.
pub fn overdue(threshold: Duration) -> Vec<OverdueCall> {
    let watchdog = watchdog();
    let now_us = watchdog.origin.elapsed().as_micros() as u64 + 1;
    let names = watchdog.names.read();
    let mut calls: Vec<OverdueCall> = watchdog
        .slots
        .lock()
        .iter()
        .filter_map(|slot| {
            let started_us = slot.started_us.load(Ordering::Acquire);
            let running = Duration::from_micros(now_us.saturating_sub(started_us));
            if started_us == 0 || running <= threshold {
                return None;
            }
            let function = slot.function.load(Ordering::Relaxed);
            let plugin = names.get((function >> 32) as usize);
            Some(OverdueCall {
                plugin: plugin.map_or_else(|| "?".to_string(), |names| names.plugin.clone()),
                function: plugin
                    .and_then(|names| names.functions.get((function & 0xffff_ffff) as usize))
                    .cloned()
                    .unwrap_or_else(|| "?".to_string()),
                running,
                started_us,
            })
        })
        .collect();
    calls.sort_by_key(|call| std::cmp::Reverse(call.running));
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_overdue_while_it_runs_past_the_threshold_and_gone_when_it_returns() {
        let plugin = register("slowpoke", "1.0.0", vec!["first".into(), "crawl".into()]);
        let mine = |calls: Vec<OverdueCall>| calls.into_iter().filter(|call| call.plugin == "slowpoke 1.0.0").count();
        let (entered, entered_signal) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let _guard = enter(plugin, 1);
            entered.send(()).expect("signal");
            released.recv().expect("release");
        });
        entered_signal.recv().expect("the call started");
        std::thread::sleep(Duration::from_millis(30));
        let calls = overdue(Duration::from_millis(20));
        let call = calls.iter().find(|call| call.plugin == "slowpoke 1.0.0").expect("the running call is overdue");
        assert_eq!(call.function, "crawl");
        assert!(call.running >= Duration::from_millis(30), "{call:?}");
        assert_eq!(mine(overdue(Duration::from_secs(60))), 0, "not past a longer threshold");
        release.send(()).expect("release");
        worker.join().expect("worker");
        assert_eq!(mine(overdue(Duration::ZERO)), 0, "a returned call is not running");
    }
}
