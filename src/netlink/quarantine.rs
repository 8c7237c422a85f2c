//! One namespace's work, and what happens when it does not end in time.
//!
//! Every request into a pod's namespace has a deadline (`socket.rs`, and
//! the threads that enter it: `netns.rs`). A namespace whose work ran past
//! its deadline is quarantined: nothing more is started there for a
//! while (1 s, doubling to a minute while it keeps timing out), and never
//! while a thread that outlived its deadline still works there, so that
//! one pod can hold at most one thread beyond the shared ones, and no
//! permit, socket or thread another pod needs. Entering quarantine is one
//! WARN naming the namespace; the enforcer there is not ready meanwhile
//! (`mtuvisor_ready{netns}` 0, `/healthz` 503 naming it), and
//! `mtuvisor_netns_timeouts_total{netns}` counts. The first request that
//! ends in time afterwards lifts it, with one INFO line.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::NetlinkError;
use crate::backoff::Backoff;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);

/// A namespace's quarantine; clones share it.
#[derive(Clone)]
pub struct Quarantine(Arc<State>);

struct State {
    /// The namespace, for logs and errors.
    label: String,
    /// Threads that outlived their deadline and still run there.
    stuck: AtomicUsize,
    /// Until when nothing is started there; `None`: not quarantined.
    until: Mutex<Option<Instant>>,
    backoff: Mutex<Backoff>,
    timeouts: AtomicU64,
    /// Quarantined now (what readiness and the gauge read).
    active: AtomicBool,
}

/// Held by a thread working in the namespace; once that thread outlives
/// its deadline, dropping this (when it ends at last) lets new work in.
pub struct Working {
    state: Arc<State>,
    counted: AtomicBool,
}

impl Working {
    /// The thread outlived its deadline: counted as stuck until dropped.
    pub fn outlived(&self) {
        if !self.counted.swap(true, Ordering::AcqRel) {
            self.state.stuck.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        if self.counted.load(Ordering::Acquire) {
            self.state.stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Quarantine {
    pub fn new(label: &str) -> Quarantine {
        Quarantine(Arc::new(State {
            label: label.to_string(),
            stuck: AtomicUsize::new(0),
            until: Mutex::new(None),
            backoff: Mutex::new(Backoff::new(FIRST, MAX, MAX)),
            timeouts: AtomicU64::new(0),
            active: AtomicBool::new(false),
        }))
    }

    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// Whether work may start there now; the error names the namespace
    /// and when it will be tried again.
    pub fn admit(&self) -> Result<(), NetlinkError> {
        if !self.0.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let until = *lock(&self.0.until);
        let left = until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        if left.is_zero() && self.0.stuck.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        Err(NetlinkError::Quarantined {
            netns: self.0.label.clone(),
            retry_in: left.max(FIRST),
        })
    }

    /// A thread about to work there; see [`Working`].
    pub fn working(&self) -> Working {
        Working {
            state: self.0.clone(),
            counted: AtomicBool::new(false),
        }
    }

    /// What one piece of work there ended with: a timeout quarantines the
    /// namespace (again, for longer); work that ended in time lifts it.
    pub fn record<T>(&self, result: &Result<T, NetlinkError>) {
        match result {
            Err(NetlinkError::TimedOut { op, .. }) => self.timed_out(op),
            // Refused at the door, or failed for another reason: neither
            // says the namespace answers in time again.
            Err(NetlinkError::Quarantined { .. }) => {}
            Err(_) | Ok(_) => self.answered(),
        }
    }

    fn timed_out(&self, op: &str) {
        self.0.timeouts.fetch_add(1, Ordering::Relaxed);
        let delay = lock(&self.0.backoff).next_delay();
        *lock(&self.0.until) = Some(Instant::now() + delay);
        if !self.0.active.swap(true, Ordering::AcqRel) {
            warn!(
                netns = %self.0.label,
                what = %op,
                retry_in_ms = delay.as_millis() as u64,
                "work in this network namespace did not end in time; it is left alone \
                 (and not ready) until its requests are answered in time again"
            );
        }
    }

    fn answered(&self) {
        if !self.0.active.load(Ordering::Acquire) {
            return;
        }
        lock(&self.0.backoff).reset();
        *lock(&self.0.until) = None;
        if self.0.active.swap(false, Ordering::AcqRel) {
            info!(netns = %self.0.label, "requests in this network namespace are answered in time again");
        }
    }

    /// Quarantined now.
    pub fn is_active(&self) -> bool {
        self.0.active.load(Ordering::Acquire)
    }

    /// Work there that ran past its deadline, since start.
    pub fn timeouts(&self) -> u64 {
        self.0.timeouts.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> Result<(), NetlinkError> {
        Err(NetlinkError::TimedOut {
            op: "listing links".into(),
            after: Duration::from_secs(5),
        })
    }

    #[test]
    fn a_timeout_closes_the_door_until_its_delay_passes_and_success_opens_it() {
        let q = Quarantine::new("cni-1");
        assert!(q.admit().is_ok());
        q.record(&timeout());
        assert!(q.is_active());
        let refused = q.admit().unwrap_err();
        assert!(refused.to_string().contains("cni-1"), "{refused}");
        assert_eq!(q.timeouts(), 1);
        // Past the first delay (1 s), work may start again...
        *lock(&q.0.until) = Some(Instant::now());
        assert!(q.admit().is_ok());
        // ...and still counts as quarantined until it is answered in time.
        assert!(q.is_active());
        q.record(&Ok::<(), NetlinkError>(()));
        assert!(!q.is_active());
    }

    #[test]
    fn a_thread_that_outlived_its_deadline_keeps_the_door_closed_until_it_ends() {
        let q = Quarantine::new("cni-2");
        let w = q.working();
        w.outlived();
        q.record(&timeout());
        *lock(&q.0.until) = Some(Instant::now());
        assert!(q.admit().is_err(), "its stuck thread still runs");
        drop(w);
        assert!(q.admit().is_ok());
    }

    #[test]
    fn repeated_timeouts_wait_longer() {
        let q = Quarantine::new("cni-3");
        q.record(&timeout());
        let first = lock(&q.0.until).unwrap();
        q.record(&timeout());
        let second = lock(&q.0.until).unwrap();
        assert!(second > first + Duration::from_millis(500));
    }
}
