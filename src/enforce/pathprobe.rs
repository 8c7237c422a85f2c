//! `path_probe`: the path MTU toward the targets, measured at start and
//! every `path_probe_interval`, so that the target follows a bottleneck
//! beyond the pod (a VPN, a proxy, a cloud edge) as it follows `eth0`.
//!
//! Probes run from this process's network namespace, grouped by the MTU
//! they are bounded by; a group's reading goes to each of its enforcers
//! through a watch channel, and the group ends with its last enforcer.
//! Under `watch` and `supervise` that is the pod's namespace, bounded by
//! its outer MTU. Under `node` it is the node's (the agent runs with the
//! host's network): every pod's traffic beyond its `eth0` takes the
//! node's path, so one probe per interval serves every pod (each bounds
//! the reading by its own outer MTU), and no pod can steer or poison what
//! the others get. Each probe runs on the blocking pool, never on the
//! enforcement thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::logging::RepeatedFailure;
use crate::metrics::PathMetrics;
use crate::pmtu::{probe, ProbeResult, Target};

/// How long each probe size waits for its answer.
const SIZE_TIMEOUT: Duration = Duration::from_secs(1);
/// The smallest size tried: below it (IPv4) a path is broken, not narrow.
const FLOOR_V4: u32 = 576;
/// After a reading where no target answered: again after 1 s, doubling
/// up to the interval.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// One measurement of every target, bounded by `ceiling`.
#[derive(Debug, Clone)]
pub struct PathReading {
    pub ceiling: u32,
    pub results: Vec<ProbeResult>,
}

impl PathReading {
    /// The narrowest path that was measured; `None` when no target
    /// answered.
    pub fn narrowest(&self) -> Option<u32> {
        self.results.iter().filter_map(|r| r.path_mtu).min()
    }

    /// The targets that could not be measured, with why.
    pub fn failures(&self) -> impl Iterator<Item = &ProbeResult> {
        self.results.iter().filter(|r| r.path_mtu.is_none())
    }

    /// The failures in one line: `target: why; ...`.
    fn failures_line(&self) -> String {
        self.failures()
            .map(|r| format!("{}: {}", r.target, r.note))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub type Readings = watch::Receiver<Option<Arc<PathReading>>>;

/// The prober of one process: the targets, the interval, the groups.
pub struct PathProber {
    targets: Vec<Target>,
    interval: Duration,
    groups: Mutex<HashMap<u32, watch::Sender<Option<Arc<PathReading>>>>>,
    metrics: Arc<PathMetrics>,
}

impl PathProber {
    /// `None` when there is nothing to probe.
    pub fn new(
        targets: Vec<Target>,
        interval: Duration,
        metrics: Arc<PathMetrics>,
    ) -> Option<Arc<PathProber>> {
        (!targets.is_empty()).then(|| {
            Arc::new(PathProber {
                targets,
                interval,
                groups: Mutex::new(HashMap::new()),
                metrics,
            })
        })
    }

    /// The readings of the group bounded by `ceiling`. Call within the
    /// runtime.
    pub fn subscribe(self: &Arc<Self>, ceiling: u32) -> Readings {
        let (readings, new) = self.join(ceiling);
        if new {
            let prober = Arc::clone(self);
            tokio::spawn(async move { prober.measure(ceiling).await });
        }
        readings
    }

    /// The bookkeeping of [`PathProber::subscribe`]: whether the group is
    /// new (and needs its loop).
    fn join(&self, ceiling: u32) -> (Readings, bool) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = groups.get(&ceiling) {
            return (group.subscribe(), false);
        }
        let (readings, rx) = watch::channel(None);
        groups.insert(ceiling, readings);
        (rx, true)
    }

    /// The group's loop: measure, tell, wait; ends when nobody listens.
    /// It is the one to say what the path does (one line per change, a
    /// WARN per new failure), once for every namespace it serves.
    async fn measure(self: Arc<Self>, ceiling: u32) {
        let mut backoff = Backoff::new(RETRY_FIRST, self.interval, self.interval);
        let mut silent = RepeatedFailure::default();
        let mut partial = RepeatedFailure::default();
        let mut last: Option<u32> = None;
        // What the enforcers follow now (before any reading: their outer
        // MTU), and a narrower reading waiting for the next to agree.
        let mut told: Option<u32> = None;
        let mut doubted: Option<PathReading> = None;
        loop {
            if !self.listened(ceiling) {
                return;
            }
            let targets = self.targets.clone();
            let results = tokio::task::spawn_blocking(move || {
                targets
                    .iter()
                    .map(|t| probe(t, FLOOR_V4, ceiling, SIZE_TIMEOUT))
                    .collect::<Vec<_>>()
            })
            .await;
            let Ok(results) = results else {
                debug!(ceiling, "a path probe panicked; trying again");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            };
            let reading = PathReading { ceiling, results };
            for r in &reading.results {
                self.metrics.probed(&r.target, ceiling, r.path_mtu);
            }
            // A reading narrower than what the pods follow lowers them
            // only once the next, a second later, is narrower too: one
            // lost echo (or anything a probe can be fooled by) never moves
            // every pod's target. Then the less narrow of the two.
            let lower = reading
                .narrowest()
                .is_some_and(|n| n < told.unwrap_or(ceiling));
            let reading = match doubted.take() {
                None if lower => {
                    debug!(ceiling, path_mtu = ?reading.narrowest(), "a narrower path measured; measuring again before it is followed");
                    doubted = Some(reading);
                    tokio::time::sleep(RETRY_FIRST).await;
                    continue;
                }
                Some(first) if lower => {
                    if first.narrowest() > reading.narrowest() {
                        first
                    } else {
                        reading
                    }
                }
                _ => reading,
            };
            if let Some(n) = reading.narrowest() {
                told = Some(n);
            }
            let narrowest = reading.narrowest();
            let wait = match narrowest {
                Some(path) => {
                    silent.succeeded("path MTU probe answered again");
                    if reading.failures().next().is_some() {
                        partial.failed_then(
                            "cannot measure the path to some path_probe targets; the others decide",
                            &reading.failures_line(),
                            "trying again every path_probe_interval",
                        );
                    } else {
                        partial.succeeded("every path_probe target measured again");
                    }
                    if last != Some(path) {
                        let narrowest_target = reading
                            .results
                            .iter()
                            .find(|r| r.path_mtu == Some(path))
                            .map_or("", |r| r.target.as_str());
                        info!(
                            path_mtu = path,
                            outer_mtu = ceiling,
                            target = narrowest_target,
                            black_hole = reading.results.iter().any(|r| r.black_hole),
                            "path MTU measured{}",
                            if path < ceiling {
                                "; narrower than the outer MTU"
                            } else {
                                "; the outer MTU fits"
                            }
                        );
                        last = Some(path);
                    }
                    backoff.reset();
                    self.interval
                }
                None => {
                    silent.failed_then(
                        "path MTU probe: no path_probe target answered; keeping the last \
                         measurement (before any, the outer MTU); check that the targets answer \
                         ICMP echo, or give each a TCP port",
                        &reading.failures_line(),
                        "trying again in 1 s, then less often",
                    );
                    backoff.next_delay()
                }
            };
            if !self.tell(ceiling, reading) {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether the group still has an enforcer; if not, it ends (and its
    /// series with it).
    fn listened(&self, ceiling: u32) -> bool {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.get(&ceiling).is_some_and(|g| g.receiver_count() > 0) {
            return true;
        }
        groups.remove(&ceiling);
        self.metrics.group_ended(ceiling);
        false
    }

    /// Sends the reading; false (and the group ends) when nobody listens
    /// any more.
    fn tell(&self, ceiling: u32, reading: PathReading) -> bool {
        let sent = {
            let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups
                .get(&ceiling)
                .is_some_and(|g| g.send(Some(Arc::new(reading))).is_ok())
        };
        sent || self.listened(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pmtu::Outcome;

    fn result(target: &str, path: Option<u32>) -> ProbeResult {
        ProbeResult {
            target: target.into(),
            address: None,
            method: None,
            outcome: if path.is_some() {
                Outcome::Bottleneck
            } else {
                Outcome::Unreachable
            },
            path_mtu: path,
            black_hole: false,
            reported_mtu: None,
            sizes_tried: 1,
            took_ms: 1,
            note: String::new(),
        }
    }

    #[test]
    fn the_narrowest_measured_path_wins_and_failures_are_named() {
        let r = PathReading {
            ceiling: 1500,
            results: vec![
                result("a", Some(1400)),
                result("b", None),
                result("c", Some(1380)),
            ],
        };
        assert_eq!(r.narrowest(), Some(1380));
        let failed: Vec<&str> = r.failures().map(|f| f.target.as_str()).collect();
        assert_eq!(failed, vec!["b"]);
        let none = PathReading {
            ceiling: 1500,
            results: vec![result("b", None)],
        };
        assert_eq!(none.narrowest(), None);
    }

    #[test]
    fn one_group_per_ceiling_and_it_ends_with_its_last_listener() {
        // Bookkeeping only: no group's loop is started, nothing is sent.
        let target = Target::parse("192.0.2.1").unwrap();
        let prober =
            PathProber::new(vec![target], Duration::from_secs(3600), Arc::default()).unwrap();
        let (a, new_a) = prober.join(1450);
        let (b, new_b) = prober.join(1450);
        let (c, new_c) = prober.join(1400);
        assert_eq!((new_a, new_b, new_c), (true, false, true));
        assert!(prober.listened(1450));
        drop((a, b));
        assert!(!prober.listened(1450), "no listener: the group ends");
        assert!(prober.listened(1400));
        drop(c);
        assert!(!prober.listened(1400));
        assert!(prober.groups.lock().unwrap().is_empty());
    }
}
