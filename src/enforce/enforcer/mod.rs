//! The enforcement loop's state and its handlers, one per kind of event:
//! a link notification, a Docker update, a dockerd (re)start, a reconcile
//! tick, an MSS report. The loop in `mod.rs` only waits and dispatches;
//! everything it does is here, generic over [`NetOps`] so that the loop's
//! behaviour is unit-tested against the fake.
//!
//! This is the one writer of the enforcer's metrics: the engine and the
//! firewall return outcomes, and the handlers turn them into counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};

/// One line about undecodable messages at most this often.
const UNDECODABLE_QUIET: Duration = Duration::from_secs(600);

use super::engine::{Engine, Landed, PassReport, MAX_LINKS};
use super::pathprobe::PathReading;
use super::policy::BridgeMatcher;
use crate::config::Settings;
use crate::detect::{DetectError, Origin, TargetSource};
use crate::docker::DockerUpdate;
use crate::firewall::{EnsureReport, MssClamp};
use crate::logging::RepeatedFailure;
use crate::metrics::Metrics;
use crate::netlink::{NetEvent, NetOps, NetlinkError};

/// Work that a burst of events asks for many times but that needs doing
/// once (re-reading the routes, a sweep after lost notifications): done at
/// once when it has been quiet, otherwise no sooner than `SPACING` times
/// its last cost after its last run. A namespace whose tables are huge
/// (a pod's doing) thus costs the one runtime thread a bounded share.
#[derive(Debug)]
struct Coalesced {
    due: Option<Instant>,
    earliest: Instant,
}

const SPACING: u32 = 20;

impl Coalesced {
    fn new() -> Coalesced {
        Coalesced {
            due: None,
            earliest: Instant::now(),
        }
    }

    fn ask(&mut self) {
        self.ask_at(Instant::now());
    }

    /// Whether it is due now; if so, it is taken.
    fn take_if_due(&mut self) -> bool {
        match self.due {
            Some(at) if at <= Instant::now() => {
                self.due = None;
                true
            }
            _ => false,
        }
    }

    /// Due at `at` (or sooner, when already asked for), never before its
    /// spacing allows.
    fn ask_at(&mut self, at: Instant) {
        let at = self.earliest.max(at);
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    fn ran(&mut self, started: Instant) {
        let took = started.elapsed();
        self.earliest = Instant::now() + took * SPACING;
    }
}

/// A default route gone for this long is worth a warning; shorter, it is
/// a pod being torn down (its route goes some 30 ms before its namespace
/// file) or a CNI plugin at work.
const ROUTE_GONE_QUIET: Duration = Duration::from_secs(10);

pub(crate) struct Enforcer<N> {
    engine: Engine<N>,
    source: TargetSource,
    enforce_mtu: bool,
    mss: Option<MssClamp>,
    /// MSS rules wait for a Docker bridge (`node`).
    mss_when_docker: bool,
    /// The rules have been ensured at least once (so a stop removes them).
    mss_started: bool,
    metrics: Arc<Metrics>,
    sweep_log: RepeatedFailure,
    mss_log: RepeatedFailure,
    outer_read: Coalesced,
    /// A sweep after lost notifications (now), or for far ends not looked
    /// for yet (once the namespace search, at most once a second, may run):
    /// one sweep serves both.
    soon_sweep: Coalesced,
    /// Since when no default route exists, and whether that was said.
    route_gone: Option<(Instant, bool)>,
    /// The outer MTU below the floor that was last warned about.
    floored: Option<u32>,
    /// What decided the target last.
    origin: Origin,
    /// Links past the cap were warned about.
    left_out_warned: bool,
    /// Said that a process forges notifications here.
    forgery_warned: bool,
    /// When an undecodable message was last said (one line per 10 min).
    undecodable_said: Option<Instant>,
}

impl<N: NetOps> Enforcer<N> {
    pub(crate) fn new(
        net: N,
        settings: &Settings,
        source: TargetSource,
        mss: Option<MssClamp>,
        metrics: Arc<Metrics>,
        mss_when_docker: bool,
    ) -> Enforcer<N> {
        let (target, origin) = source.decide();
        metrics.set_target(target, origin);
        Enforcer {
            engine: Engine::new(
                net,
                BridgeMatcher::new(settings.bridge_patterns.clone()),
                target,
            ),
            source,
            enforce_mtu: settings.enforce_mtu,
            mss,
            mss_when_docker,
            mss_started: false,
            metrics,
            sweep_log: RepeatedFailure::default(),
            mss_log: RepeatedFailure::default(),
            outer_read: Coalesced::new(),
            soon_sweep: Coalesced::new(),
            route_gone: None,
            floored: None,
            origin,
            left_out_warned: false,
            forgery_warned: false,
            undecodable_said: None,
        }
    }

    /// The first sweep and MSS ensure; after it, enforcement is ready.
    pub(crate) async fn start(&mut self) -> Result<(), NetlinkError> {
        let (target, origin) = self.source.decide();
        match self.source.outer() {
            Some(outer) => info!(
                target_mtu = target,
                source = origin.label(),
                interface = %outer.interface,
                outer_mtu = outer.mtu,
                "watching; {}",
                origin.explain()
            ),
            None => info!(
                target_mtu = target,
                source = origin.label(),
                "watching; {}",
                origin.explain()
            ),
        }
        self.note_floor();
        if let Some(outer) = self.source.outer() {
            let uplinks = outer.ifindexes();
            self.engine.set_uplinks(uplinks).await;
        }
        if self.enforce_mtu {
            let report = self.engine.sweep().await?;
            self.record_sweep(report);
        } else {
            info!("MTU enforcement disabled by configuration; MSS clamping only");
            self.engine.refresh().await?;
            self.note_links();
        }
        self.ensure_mss(false);
        Ok(())
    }

    /// Starts an MSS ensure (after a dockerd start: `reselect`ing the
    /// backend) unless the rules wait for a Docker bridge that is not here.
    fn ensure_mss(&mut self, reselect: bool) {
        let Some(mss) = &self.mss else { return };
        if self.mss_when_docker && !self.engine.has_managed_bridge() {
            return;
        }
        if !self.mss_started {
            self.mss_started = true;
            self.metrics.set_mss_families(&mss.families());
        }
        if reselect {
            mss.ensure_after_dockerd_start();
        } else {
            mss.ensure();
        }
    }

    /// When the loop must call [`Enforcer::on_due`]: a coalesced re-read
    /// or sweep that is waiting for its turn.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        [self.outer_read.due, self.soon_sweep.due]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what [`Enforcer::next_due`] said was due.
    pub(crate) async fn on_due(&mut self) {
        if self.outer_read.take_if_due() {
            self.follow_outer().await;
        }
        if self.soon_sweep.take_if_due() {
            let started = Instant::now();
            self.sweep().await;
            self.soon_sweep.ran(started);
        }
    }

    /// Whether the loop may read another notification now: not while the
    /// clamps in flight are at their bound.
    pub(crate) fn takes_events(&self) -> bool {
        self.engine.has_room()
    }

    /// The next clamp answered (never, while none is in flight).
    pub(crate) async fn next_landed(&mut self) -> Landed {
        self.engine.next_landed().await
    }

    /// A clamp answered.
    pub(crate) async fn on_landed(&mut self, landed: Landed) {
        let report = self.engine.on_landed(landed).await;
        self.record(report);
    }

    /// A notification read now, and every clamp it started answered.
    #[cfg(test)]
    pub(crate) async fn on_net_event_settled(&mut self, event: NetEvent) {
        self.on_net_event(event, Instant::now()).await;
        let report = self.engine.settle().await;
        self.record(report);
    }

    /// A link or route notification, read from the socket at `read`.
    pub(crate) async fn on_net_event(&mut self, event: NetEvent, read: Instant) {
        trace!(?event, "netlink event");
        match event {
            NetEvent::LinkChanged(link) => {
                let outer_changed = self.source.depends_on(link.index);
                if self.enforce_mtu {
                    let report = self.engine.on_link_changed_at(link, read).await;
                    self.record(report);
                } else {
                    self.engine.observe(link);
                }
                self.metrics
                    .set_bridges_present(self.engine.has_managed_bridge());
                self.note_links();
                if !self.mss_started && self.mss_when_docker {
                    // The first Docker bridge of a pod: dockerd started.
                    self.ensure_mss(true);
                }
                if outer_changed {
                    self.outer_read.ask();
                }
            }
            NetEvent::LinkRemoved(ifindex) => {
                self.engine.on_link_removed(ifindex);
                self.metrics
                    .set_bridges_present(self.engine.has_managed_bridge());
                if self.source.depends_on(ifindex) {
                    self.outer_read.ask();
                }
            }
            NetEvent::DefaultRouteChanged => self.outer_read.ask(),
            NetEvent::Undecodable(u) => {
                self.engine.on_undecodable(u);
                self.note_undecodable();
            }
            NetEvent::NotFromKernel => {
                self.metrics.netlink_not_from_kernel();
                if !self.forgery_warned {
                    self.forgery_warned = true;
                    warn!(
                        "a process in this network namespace sends netlink messages posing as \
                         the kernel's link notifications; they are dropped unread (counted in \
                         mtuvisor_netlink_not_from_kernel_total)"
                    );
                }
            }
            NetEvent::Overrun => {
                debug!("link notifications were lost (netlink overrun); sweeping");
                self.metrics.netlink_overrun();
                self.outer_read.ask();
                self.soon_sweep.ask();
            }
        }
    }

    /// What the Docker API side learnt.
    pub(crate) async fn on_docker_update(&mut self, update: DockerUpdate) {
        match update {
            DockerUpdate::Bridges(_) | DockerUpdate::Sandbox { .. } if !self.enforce_mtu => {}
            DockerUpdate::Bridges(names) => {
                let report = self.engine.set_docker_bridges(names).await;
                self.record(report);
            }
            DockerUpdate::Sandbox { container, netns } => {
                let report = self.engine.on_sandbox(&container, &netns).await;
                self.record(report);
            }
            DockerUpdate::Resynced => {
                self.metrics.docker_resynced();
                if self.enforce_mtu {
                    self.sweep().await;
                }
                // dockerd (re)started: it may have rebuilt its tables, or
                // (first start under supervise) just chosen its iptables
                // family.
                self.ensure_mss(true);
            }
        }
    }

    /// The reconcile timer.
    pub(crate) async fn on_tick(&mut self) {
        // The MSS ensure runs on its own task and needs no RTNL: started
        // first, it is not held up by a sweep waiting for the lock (which
        // a node tearing down namespaces can hold for seconds). Under
        // `node` no Docker API says when a pod's dockerd has written its
        // first rules, and it writes them after its bridge appears (which
        // is when the backend was first chosen): with `auto`, each
        // reconcile looks again at the family it uses (reading the
        // kernel's table list; a tool only where legacy tables exist).
        self.ensure_mss(self.mss_when_docker);
        self.follow_outer().await;
        self.warn_if_route_gone_long();
        if self.enforce_mtu {
            self.sweep().await;
        } else {
            match self.engine.refresh().await {
                Ok(()) => {
                    self.note_undecodable();
                    self.note_links();
                    self.metrics
                        .set_bridges_present(self.engine.has_managed_bridge());
                    // A Docker bridge found by the re-read, not announced.
                    if !self.mss_started {
                        self.ensure_mss(true);
                    }
                }
                Err(e) => self.sweep_log.failed("reading the links failed", &e),
            }
        }
    }

    /// An MSS ensure finished: one line when something changed or a
    /// failure started, changed or ended; the metrics from its families.
    pub(crate) fn on_mss_report(&mut self, report: EnsureReport) {
        if let Some((from, to)) = &report.switched {
            info!(%from, %to, "dockerd uses another iptables family; MSS clamping rules moved");
        }
        let families: Vec<_> = report.families.iter().map(|(f, _)| *f).collect();
        self.metrics.set_mss_families(&families);
        for (family, result) in &report.families {
            self.metrics.set_mss_installed(*family, result.is_ok());
        }
        match report.error() {
            Some(e) => {
                self.metrics.mss_ensure_failed();
                self.mss_log.failed("cannot install MSS clamping rules", e);
            }
            None => {
                let recovered = self.mss_log.succeeded("MSS clamping rules in place again");
                if let Some(mss) = self.mss.as_ref().filter(|_| report.changed() && !recovered) {
                    info!(backend = %mss.describe(), mode = ?mss.mode(), "MSS clamping rules installed");
                }
            }
        }
    }

    /// A clean stop: the MSS rules go (unless kept), and their gauges.
    pub(crate) async fn stop(&mut self) {
        info!("stopping");
        // Clamps in flight are answered within the request deadline.
        let report = self.engine.settle().await;
        self.record(report);
        let Some(mss) = self.mss.as_ref().filter(|_| self.mss_started) else {
            return;
        };
        match mss.finish().await {
            None => info!("leaving MSS clamping rules in place (keep_on_exit)"),
            Some(Ok(())) => {
                for family in mss.families() {
                    self.metrics.set_mss_installed(family, false);
                }
                info!("MSS clamping rules removed");
            }
            Some(Err(e)) => warn!(error = %e, "cannot remove MSS clamping rules"),
        }
    }

    async fn sweep(&mut self) {
        match self.engine.sweep().await {
            Ok(report) => {
                self.record_sweep(report);
                self.sweep_log.succeeded("sweeps succeed again");
            }
            // Said once, naming the namespace, by its quarantine.
            Err(e) if e.is_timeout() => debug!(error = %e, "sweep not done in time"),
            Err(e) => self.sweep_log.failed("sweep failed", &e),
        }
    }

    /// Re-reads the outer MTU: the uplinks always, and the target with it
    /// when it follows: one line per change.
    async fn follow_outer(&mut self) {
        let started = Instant::now();
        let read = crate::detect::outer_mtu(self.engine.net()).await;
        self.outer_read.ran(started);
        let outer = match read {
            Ok(outer) => outer,
            Err(DetectError::NoDefaultRoute) => {
                if self.route_gone.is_none() {
                    debug!(
                        target_mtu = self.engine.target(),
                        "default route gone; keeping the last target MTU"
                    );
                    self.route_gone = Some((Instant::now(), false));
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot re-read the outer MTU; keeping the last target");
                return;
            }
        };
        if let Some((_, warned)) = self.route_gone.take() {
            if warned {
                info!(interface = %outer.interface, "default route back");
            }
        }
        let report = self.engine.set_uplinks(outer.ifindexes()).await;
        self.record(report);
        let mut said = false;
        if let Some(last) = self.source.outer().filter(|_| self.source.follows_outer()) {
            if outer.mtu != last.mtu {
                said = true;
                info!(interface = %outer.interface, source = %outer.source, from_mtu = last.mtu, to_mtu = outer.mtu, "outer MTU changed");
            }
        }
        self.source.set_outer(outer);
        self.note_floor();
        self.apply_target(said).await;
    }

    /// A path-MTU reading (`path_probe`): a bottleneck below the MTU it
    /// was bounded by lowers the target; a clear path lifts an earlier
    /// one. A reading where nothing answered changes nothing (the prober
    /// says why, once for every namespace it serves): the last
    /// measurement stands, or the outer MTU before any.
    pub(crate) async fn on_path_reading(&mut self, reading: &PathReading) {
        if let Some(narrowest) = reading.narrowest() {
            self.source
                .set_probed(Some(narrowest).filter(|p| *p < reading.ceiling));
            self.apply_target(false).await;
        }
    }

    /// The MTU a path probe for this namespace is bounded by.
    pub(crate) fn probe_ceiling(&self) -> u32 {
        self.source.probe_ceiling()
    }

    /// Moves the managed links to the target the source now decides: one
    /// line when it changes (none when `outer_said` already told of an
    /// outer MTU that the target simply follows).
    async fn apply_target(&mut self, outer_said: bool) {
        let (target, origin) = self.source.decide();
        let from = self.engine.target();
        if target == from && origin == self.origin {
            return;
        }
        let follows = matches!(origin, Origin::Link | Origin::Route);
        if target != from && !(outer_said && follows) {
            info!(
                from_mtu = from,
                to_mtu = target,
                source = origin.label(),
                "target MTU changed; {}",
                origin.explain()
            );
        }
        self.origin = origin;
        self.metrics.set_target(target, origin);
        let report = self.engine.set_target(target).await;
        self.record(report);
    }

    fn warn_if_route_gone_long(&mut self) {
        if let Some((since, warned)) = &mut self.route_gone {
            if !*warned && since.elapsed() >= ROUTE_GONE_QUIET {
                *warned = true;
                warn!(
                    target_mtu = self.engine.target(),
                    "no default route for 10 s; keeping the last target MTU until one is back"
                );
            }
        }
    }

    /// One warning per outer MTU below the floor.
    fn note_floor(&mut self) {
        match self.source.outer_below_floor() {
            None => self.floored = None,
            Some((outer, floor)) if self.floored != Some(outer) => {
                self.floored = Some(outer);
                warn!(
                    outer_mtu = outer,
                    target_mtu = floor,
                    interface = %self.source.outer().map_or("", |o| o.interface.as_str()),
                    "the outer MTU is below what this namespace can be given; enforcing the floor instead \
                     (576, or 1280 where IPv6 is routed)"
                );
            }
            Some(_) => {}
        }
    }

    /// The gauge of links past the cap, and one line when it starts.
    fn note_links(&mut self) {
        let left_out = self.engine.left_out();
        self.metrics.set_links_left_out(left_out);
        if left_out > 0 && !self.left_out_warned {
            self.left_out_warned = true;
            warn!(
                max = MAX_LINKS,
                "this network namespace has more links than mtuvisor follows in one; \
                 those past the limit are not managed"
            );
        } else if left_out == 0 {
            self.left_out_warned = false;
        }
    }

    /// One warning per link whose message could not be decoded: the
    /// kernel sent what this decoder cannot read (a newer kernel's form of
    /// an attribute it uses), and the link is left alone meanwhile.
    fn note_undecodable(&mut self) {
        let fresh = self.engine.take_undecodable();
        self.metrics.netlink_undecodable(fresh.len());
        for u in fresh {
            // At most one line in UNDECODABLE_QUIET, whatever the count.
            let said = self
                .undecodable_said
                .is_some_and(|at| at.elapsed() < UNDECODABLE_QUIET);
            if said {
                debug!(ifindex = ?u.ifindex, message_type = u.kind, why = u.why, "another undecodable link message");
                continue;
            }
            self.undecodable_said = Some(Instant::now());
            warn!(
                ifindex = ?u.ifindex,
                message_type = u.kind,
                why = u.why,
                "a link's netlink message cannot be decoded; that link is left alone \
                 (please report this with the kernel version; further ones in the next \
                 10 minutes are counted in mtuvisor_netlink_undecodable_total)"
            );
        }
    }

    fn record(&mut self, report: PassReport) {
        self.note_undecodable();
        if let Some(at) = self.engine.take_retry_at() {
            self.soon_sweep.ask_at(at);
        }
        self.metrics.add_changes(report.changed, report.failed);
        for stages in self.engine.take_timed() {
            self.metrics.observe_clamp(stages.total());
            crate::metrics::observe_clamp_stages(&stages.split());
            let ns = crate::sched::monotonic_ns;
            debug!(
                target: "mtuvisor::clamp",
                ifindex = stages.ifindex,
                read_ns = ns(stages.read),
                decided_ns = ns(stages.decided),
                queued_ns = ns(stages.last.queued),
                sent_ns = ns(stages.last.sent),
                acked_ns = ns(stages.last.acked),
                done_ns = ns(stages.done),
                "clamp timed"
            );
        }
    }

    fn record_sweep(&mut self, report: PassReport) {
        self.record(report);
        self.metrics.swept(report.managed);
        self.metrics
            .set_bridges_present(self.engine.has_managed_bridge());
        self.note_links();
    }
}

#[cfg(test)]
mod tests;
