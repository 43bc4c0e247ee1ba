//! Shows a run on the terminal: its phase lines on stderr and, while the clients run, a
//! progress bar with the elapsed and planned time and the requests finished so far.
//!
//! The bar is drawn only when stderr is a terminal: a run whose stderr goes to a file or a
//! pipe (CI, scripts) gets the plain phase lines and nothing that redraws itself.

use crate::run::Observer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::Duration;

/// An [`Observer`] for a terminal (or not): phase lines prefixed with `prefix`, and a bar.
pub struct ProgressDisplay {
    prefix: &'static str,
    /// No output at all (the caller prints JSON on stdout and wants stderr quiet too).
    quiet: bool,
    /// Whether a bar may be drawn: stderr is a terminal and the display is not quiet.
    bar_allowed: bool,
    bar: RefCell<Option<ProgressBar>>,
}

impl ProgressDisplay {
    pub fn new(prefix: &'static str, quiet: bool) -> ProgressDisplay {
        let bar_allowed = !quiet && std::io::stderr().is_terminal();
        ProgressDisplay { prefix, quiet, bar_allowed, bar: RefCell::new(None) }
    }

    fn new_bar() -> ProgressBar {
        // Milliseconds as units, so the bar moves smoothly over a run of a few seconds.
        let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:40.cyan/blue} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    }
}

impl Observer for ProgressDisplay {
    fn message(&self, text: &str) {
        if self.quiet {
            return;
        }
        let line = format!("{}: {text}", self.prefix);
        match &*self.bar.borrow() {
            // Above the bar, which redraws below it.
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn tick(&self, elapsed: Duration, planned: Duration, finished: u64) {
        if !self.bar_allowed {
            return;
        }
        let mut slot = self.bar.borrow_mut();
        let bar = slot.get_or_insert_with(ProgressDisplay::new_bar);
        let planned_ms = planned.as_millis().max(1) as u64;
        bar.set_length(planned_ms);
        bar.set_position((elapsed.as_millis() as u64).min(planned_ms));
        let rate = finished as f64 / elapsed.as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{:.1} of {:.1} s, {finished} requests ({rate:.0}/s)",
            elapsed.as_secs_f64().min(planned.as_secs_f64()),
            planned.as_secs_f64()
        ));
    }

    fn clients_done(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_display_never_draws_a_bar() {
        let display = ProgressDisplay::new("bench", true);
        display.tick(Duration::from_secs(1), Duration::from_secs(2), 10);
        assert!(display.bar.borrow().is_none());
        display.clients_done();
    }

    #[test]
    fn no_bar_when_stderr_is_not_a_terminal() {
        // Under `cargo test`, stderr is captured or piped unless run by hand in a terminal.
        let display = ProgressDisplay::new("bench", false);
        display.tick(Duration::from_secs(1), Duration::from_secs(2), 10);
        assert_eq!(display.bar.borrow().is_some(), std::io::stderr().is_terminal());
        display.clients_done();
        assert!(display.bar.borrow().is_none(), "the bar is cleared when the clients stop");
    }
}
