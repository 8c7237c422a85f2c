//! tracing-subscriber set-up: text or JSON on stderr, filtered by
//! `MTUVISOR_LOG` (or `RUST_LOG`), `info` by default.

use std::fmt::Display;
use std::io::IsTerminal;

use tracing::{debug, info, warn};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = std::env::var("MTUVISOR_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A failure that may come back on every cycle (a reconcile, a retry):
/// WARN the first time and whenever its message changes, DEBUG while it
/// repeats, and one INFO line when it ends. A log that says the same
/// thing every 30 s hides what changed.
#[derive(Debug, Default)]
pub struct RepeatedFailure {
    last: Option<String>,
    failures: u64,
}

impl RepeatedFailure {
    /// Logs a failure of `what` (e.g. "cannot install MSS clamping rules").
    pub fn failed(&mut self, what: &str, error: &dyn Display) {
        self.failed_then(what, error, "retrying at the next reconcile");
    }

    /// As [`RepeatedFailure::failed`], saying what happens next (`then`).
    pub fn failed_then(&mut self, what: &str, error: &dyn Display, then: &str) {
        let message = error.to_string();
        self.failures += 1;
        if self.last.as_deref() == Some(message.as_str()) {
            debug!(error = %message, failures = self.failures, "{what} (still failing)");
        } else {
            warn!(error = %message, "{what}; {then}");
            self.last = Some(message);
        }
    }

    /// Records a success; after failures, says so once as `recovered`.
    /// Returns whether it ended a run of failures.
    pub fn succeeded(&mut self, recovered: &str) -> bool {
        if self.last.take().is_none() {
            return false;
        }
        info!(failures = self.failures, "{recovered}");
        self.failures = 0;
        true
    }
}
