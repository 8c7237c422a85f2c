//! Liveness as progress, as the kubelet's own `/healthz` treats its sync
//! loop: each part that must keep going says by when it is due to act
//! next, and `/livez` fails once one of them is overdue by more than
//! `liveness_timeout`. A flag set once at start would stay green while
//! the agent did nothing.
//!
//! - the enforcement loop: a heartbeat task on the runtime thread that
//!   every enforcer shares, due every second (a runtime thread blocked by
//!   anything stops it);
//! - the MTU setter's workers: due as soon as a request waits, and again
//!   after each one they finish while more wait;
//! - discovery (`node`): due at each wake-up it has planned.
//!
//! The check runs on the metrics thread, never on the parts it watches;
//! the first failure says so once (WARN: the kubelet will restart the
//! agent, and someone should look at why).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// One part that must make progress.
pub struct Beat {
    /// What it is, for a person.
    pub name: &'static str,
    /// Its `part` label.
    pub key: &'static str,
    /// Milliseconds since [`EPOCH`] by which it is due to act; 0: nothing
    /// is due (idle, or not used in this process).
    due: AtomicU64,
    /// Said overdue (logged once per episode).
    said: AtomicBool,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn ms(at: Instant) -> u64 {
    // +1: 0 means "nothing due".
    at.saturating_duration_since(*EPOCH).as_millis() as u64 + 1
}

impl Beat {
    const fn new(key: &'static str, name: &'static str) -> Beat {
        Beat {
            name,
            key,
            due: AtomicU64::new(0),
            said: AtomicBool::new(false),
        }
    }

    /// It is due to act by `at` (again).
    pub fn due_at(&self, at: Instant) {
        self.due.store(ms(at), Ordering::Release);
    }

    /// It has work right now.
    pub fn due_now(&self) {
        self.due_at(Instant::now());
    }

    /// Nothing waits for it.
    pub fn idle(&self) {
        self.due.store(0, Ordering::Release);
    }

    /// How long past due it is, beyond `timeout`; `None` when it is not.
    fn overdue(&self, now: Instant, timeout: Duration) -> Option<Duration> {
        let due = self.due.load(Ordering::Acquire);
        if due == 0 {
            return None;
        }
        let late = Duration::from_millis(ms(now).saturating_sub(due));
        (late > timeout).then_some(late)
    }
}

/// The enforcement loop (the runtime thread every enforcer runs on).
pub static LOOP: Beat = Beat::new("loop", "the enforcement loop");
/// The MTU setter's worker threads.
pub static WORKERS: Beat = Beat::new("workers", "the MTU setter's workers");
/// The node agent's discovery of pod namespaces.
pub static DISCOVERY: Beat = Beat::new("discovery", "pod discovery");

const ALL: [&Beat; 3] = [&LOOP, &WORKERS, &DISCOVERY];

/// How often the loop's heartbeat is due.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The loop's heartbeat, on the enforcing runtime for as long as this
/// lives (a stopped agent is not overdue).
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Starts it on the current runtime.
    pub fn start() -> Heartbeat {
        Heartbeat(tokio::spawn(async {
            loop {
                let next = Instant::now() + HEARTBEAT;
                LOOP.due_at(next);
                tokio::time::sleep_until(next.into()).await;
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
        LOOP.idle();
    }
}

/// What has made no progress within `timeout` while work waits, each
/// with how long it is overdue; the first time a part is found so, one
/// WARN.
pub fn stuck(timeout: Duration) -> Vec<(&'static str, Duration)> {
    let now = Instant::now();
    let mut out = Vec::new();
    for beat in ALL {
        match beat.overdue(now, timeout) {
            Some(late) => {
                if !beat.said.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        part = beat.name,
                        overdue_ms = late.as_millis() as u64,
                        "{} has made no progress while work waits; /livez fails so that \
                         the agent is restarted",
                        beat.name
                    );
                }
                out.push((beat.name, late));
            }
            None => beat.said.store(false, Ordering::Release),
        }
    }
    out
}

/// Whether `beat` is overdue now (for the gauge).
pub fn is_stuck(beat: &Beat, timeout: Duration) -> bool {
    beat.overdue(Instant::now(), timeout).is_some()
}

pub fn all() -> [&'static Beat; 3] {
    ALL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_stuck_only_when_due_and_overdue_past_the_timeout() {
        let b = Beat::new("t", "t");
        let now = Instant::now();
        assert_eq!(b.overdue(now, Duration::from_secs(1)), None, "nothing due");
        b.due_at(now);
        assert_eq!(
            b.overdue(now + Duration::from_millis(500), Duration::from_secs(1)),
            None
        );
        assert!(b
            .overdue(now + Duration::from_secs(3), Duration::from_secs(1))
            .is_some());
        b.due_at(now + Duration::from_secs(3));
        assert_eq!(
            b.overdue(now + Duration::from_secs(3), Duration::from_secs(1)),
            None,
            "progress"
        );
        b.idle();
        assert_eq!(
            b.overdue(now + Duration::from_secs(60), Duration::from_secs(1)),
            None
        );
    }
}
