//! The enforcement loop's state and its handlers, one per kind of event:
//! a link notification, a Docker update, a dockerd (re)start, a reconcile
//! tick, an MSS report. The loop in `mod.rs` only waits and dispatches;
//! everything it does is here, generic over [`NetOps`] so that the loop's
//! behaviour is unit-tested against the fake.
//!
//! This is the one writer of the enforcer's metrics: the engine and the
//! firewall return outcomes, and the handlers turn them into counters.

use std::sync::Arc;

use tracing::{info, trace, warn};

use super::engine::{Engine, PassReport};
use super::policy::BridgeMatcher;
use crate::config::Settings;
use crate::detect::{DetectError, OuterMtu};
use crate::docker::supervisor::DockerdEvent;
use crate::docker::DockerUpdate;
use crate::firewall::{EnsureReport, MssClamp};
use crate::logging::RepeatedFailure;
use crate::metrics::Metrics;
use crate::netlink::{NetEvent, NetOps, NetlinkError};

/// Where the target MTU comes from.
pub(crate) enum TargetSource {
    Fixed(u32),
    /// Follows the outer MTU; remembers the interfaces it was read from so
    /// that their link notifications trigger a re-read.
    Outer {
        last: OuterMtu,
    },
}

impl TargetSource {
    pub(crate) fn target(&self) -> u32 {
        match self {
            TargetSource::Fixed(n) => *n,
            TargetSource::Outer { last } => last.mtu,
        }
    }

    fn depends_on(&self, ifindex: u32) -> bool {
        match self {
            TargetSource::Fixed(_) => false,
            TargetSource::Outer { last } => last.ifindexes().contains(&ifindex),
        }
    }
}

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
        let target = source.target();
        metrics.set_target_mtu(target);
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
        }
    }

    pub(crate) fn enforces_mtu(&self) -> bool {
        self.enforce_mtu
    }

    /// The first sweep and MSS ensure; after it, enforcement is ready.
    pub(crate) async fn start(&mut self) -> Result<(), NetlinkError> {
        match &self.source {
            TargetSource::Fixed(n) => info!(
                target_mtu = n,
                "watching; target MTU fixed by configuration"
            ),
            TargetSource::Outer { last } => info!(
                target_mtu = last.mtu,
                interface = %last.interface,
                source = %last.source,
                "watching; target MTU follows the outer MTU"
            ),
        }
        if self.enforce_mtu {
            let report = self.engine.sweep().await?;
            self.record_sweep(report);
        } else {
            info!("MTU enforcement disabled by configuration; MSS clamping only");
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

    /// A link or route notification.
    pub(crate) async fn on_net_event(&mut self, event: NetEvent) {
        trace!(?event, "netlink event");
        match event {
            NetEvent::LinkChanged(link) => {
                let outer_changed = self.source.depends_on(link.index);
                let report = self.engine.on_link_changed(link).await;
                self.record(report);
                self.metrics
                    .set_bridges_present(self.engine.has_managed_bridge());
                if !self.mss_started && self.mss_when_docker {
                    // The first Docker bridge of a pod: dockerd started.
                    self.ensure_mss(true);
                }
                if outer_changed {
                    self.follow_outer().await;
                }
            }
            NetEvent::LinkRemoved(ifindex) => {
                self.engine.on_link_removed(ifindex);
                self.metrics
                    .set_bridges_present(self.engine.has_managed_bridge());
                if self.source.depends_on(ifindex) {
                    self.follow_outer().await;
                }
            }
            NetEvent::DefaultRouteChanged => self.follow_outer().await,
            NetEvent::Overrun => {
                warn!("link notifications were lost (netlink overrun); sweeping");
                self.metrics.netlink_overrun();
                self.follow_outer().await;
                self.sweep().await;
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

    /// The supervisor started dockerd.
    pub(crate) fn on_dockerd(&mut self, event: DockerdEvent) {
        match event {
            DockerdEvent::Started { restart: true, .. } => self.metrics.dockerd_restarted(),
            DockerdEvent::Started { restart: false, .. } => {}
        }
    }

    /// The reconcile timer.
    pub(crate) async fn on_tick(&mut self) {
        // The MSS ensure runs on its own task and needs no RTNL: started
        // first, it is not held up by a sweep waiting for the lock (which
        // a node tearing down namespaces can hold for seconds).
        self.ensure_mss(false);
        if self.enforce_mtu {
            self.follow_outer().await;
            self.sweep().await;
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
            Err(e) => self.sweep_log.failed("sweep failed", &e),
        }
    }

    /// Re-reads the outer MTU and moves the target with it: one line per
    /// change.
    async fn follow_outer(&mut self) {
        let TargetSource::Outer { last } = &mut self.source else {
            return;
        };
        match self.engine.net().outer_mtu().await {
            Ok(outer) => {
                let mtu = outer.mtu;
                if mtu != last.mtu {
                    info!(interface = %outer.interface, source = %outer.source, from_mtu = last.mtu, to_mtu = mtu, "outer MTU changed");
                }
                *last = outer;
                self.metrics.set_target_mtu(mtu);
                let report = self.engine.set_target(mtu).await;
                self.record(report);
            }
            Err(DetectError::NoDefaultRoute) => {
                warn!(
                    target_mtu = self.engine.target(),
                    "default route gone; keeping the last target MTU"
                );
            }
            Err(e) => warn!(error = %e, "cannot re-read the outer MTU; keeping the last target"),
        }
    }

    fn record(&self, report: PassReport) {
        self.metrics.add_changes(report.changed, report.failed);
        if let Some(took) = report.clamped {
            self.metrics.observe_clamp(took);
        }
    }

    fn record_sweep(&self, report: PassReport) {
        self.record(report);
        self.metrics.swept(report.managed);
        self.metrics
            .set_bridges_present(self.engine.has_managed_bridge());
    }
}

#[cfg(test)]
mod tests {
    //! The loop's handlers against the fake: what each kind of event does
    //! to the links and to the enforcer's metrics.

    use std::collections::HashSet;
    use std::path::PathBuf;

    use tokio::sync::watch;

    use super::*;
    use crate::metrics::Registry;
    use crate::netlink::fake::{link, veth, FakeNet};
    use crate::netlink::LinkKind;

    /// eth0 (outer, 1450) and docker0 at 1500 with one port whose far end
    /// is in a container (nsid 1).
    fn pod() -> FakeNet {
        let net = FakeNet::default();
        net.add(veth(2, "eth0", 1450, None, 9, Some(0)));
        net.add(link(3, "docker0", LinkKind::Bridge, 1500));
        net.add(veth(4, "vethA", 1500, Some(3), 2, Some(1)));
        net.remote.lock().unwrap().insert(4, 1500);
        *net.outer.lock().unwrap() = Some(("eth0".into(), 2, 1450));
        net
    }

    struct Loop {
        enforcer: Enforcer<FakeNet>,
        registry: Registry,
        _ready: watch::Sender<bool>,
    }

    impl Loop {
        async fn start(net: FakeNet) -> Loop {
            let registry = Registry::default();
            let (ready, rx) = watch::channel(true);
            let metrics = registry.add(&[], rx);
            let last = net.outer_mtu().await.unwrap();
            let mut enforcer = Enforcer::new(
                net,
                &Settings::default(),
                TargetSource::Outer { last },
                None,
                metrics,
                false,
            );
            enforcer.start().await.unwrap();
            Loop {
                enforcer,
                registry,
                _ready: ready,
            }
        }

        fn net(&self) -> &FakeNet {
            self.enforcer.engine.net()
        }

        fn metric(&self, name: &str) -> f64 {
            let text = self.registry.render();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        }
    }

    #[tokio::test]
    async fn start_sweeps_and_says_so_in_the_metrics() {
        let l = Loop::start(pod()).await;
        assert_eq!(l.net().mtu(3), 1450);
        assert_eq!(l.net().remote_mtu(4), 1450);
        assert_eq!(l.metric("mtuvisor_target_mtu"), 1450.0);
        assert_eq!(l.metric("mtuvisor_sweeps_total"), 1.0);
        // docker0, vethA and vethA's far end.
        assert_eq!(l.metric("mtuvisor_managed_links"), 3.0);
        // docker0, vethA and its far end.
        assert_eq!(l.metric("mtuvisor_mtu_changes_total"), 3.0);
    }

    #[tokio::test]
    async fn a_notification_of_a_new_port_clamps_both_ends_and_is_timed() {
        let mut l = Loop::start(pod()).await;
        l.net().sets();
        // dockerd's order: the pair is created here, one end attached.
        let far = veth(11, "vethB-far", 1500, None, 10, None);
        let host = veth(10, "vethB", 1500, Some(3), 11, None);
        l.net().add(far.clone());
        l.net().add(host.clone());
        l.enforcer.on_net_event(NetEvent::LinkChanged(far)).await;
        l.enforcer.on_net_event(NetEvent::LinkChanged(host)).await;
        assert_eq!((l.net().mtu(10), l.net().mtu(11)), (1450, 1450));
        assert_eq!(l.metric("mtuvisor_mtu_changes_total"), 5.0);
        assert_eq!(l.metric("mtuvisor_clamp_seconds_count"), 1.0);
    }

    #[tokio::test]
    async fn a_docker_update_names_a_bridge_to_manage_and_a_sandbox_to_check() {
        let net = pod();
        // A Docker network whose bridge has a name of the user's choosing.
        net.add(link(20, "ci-net", LinkKind::Bridge, 1500));
        let mut l = Loop::start(net).await;
        assert_eq!(l.net().mtu(20), 1500, "not Docker's name: not managed yet");
        let names: HashSet<String> = ["ci-net".to_string()].into();
        l.enforcer
            .on_docker_update(DockerUpdate::Bridges(names))
            .await;
        assert_eq!(l.net().mtu(20), 1450);

        // A container started: Docker names its sandbox. Its far end was
        // checked there already (by the sweep), so the sandbox is only
        // learnt, not entered again: entering waits behind dockerd's own
        // RTNL work.
        let sandbox = PathBuf::from("/run/docker/netns/abc");
        l.net().sandboxes.lock().unwrap().insert(sandbox.clone(), 1);
        let lookups = *l.net().peer_lookups.lock().unwrap();
        l.enforcer
            .on_docker_update(DockerUpdate::Sandbox {
                container: "c1".into(),
                netns: sandbox,
            })
            .await;
        assert_eq!(*l.net().peer_lookups.lock().unwrap(), lookups);
        assert_eq!(l.net().remote_mtu(4), 1450);
        l.enforcer.on_docker_update(DockerUpdate::Resynced).await;
        assert_eq!(l.metric("mtuvisor_docker_resyncs_total"), 1.0);
    }

    #[tokio::test]
    async fn a_tick_sweeps_what_changed_unseen() {
        let mut l = Loop::start(pod()).await;
        // Raised by someone else, and the notification lost.
        l.net().links.lock().unwrap().get_mut(&3).unwrap().mtu = 1500;
        l.enforcer.on_tick().await;
        assert_eq!(l.net().mtu(3), 1450);
        assert_eq!(l.metric("mtuvisor_sweeps_total"), 2.0);
        l.enforcer.on_net_event(NetEvent::Overrun).await;
        assert_eq!(l.metric("mtuvisor_netlink_overruns_total"), 1.0);
        assert_eq!(l.metric("mtuvisor_sweeps_total"), 3.0);
    }

    #[tokio::test]
    async fn a_lower_outer_mtu_moves_the_target_and_the_links() {
        let mut l = Loop::start(pod()).await;
        *l.net().outer.lock().unwrap() = Some(("eth0".into(), 2, 1400));
        l.enforcer.on_net_event(NetEvent::DefaultRouteChanged).await;
        assert_eq!(l.metric("mtuvisor_target_mtu"), 1400.0);
        assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1400, 1400));
        assert_eq!(l.net().remote_mtu(4), 1400);
        // And back up: only to where they were before mtuvisor, which is
        // above 1450 here; never above the target.
        *l.net().outer.lock().unwrap() = Some(("eth0".into(), 2, 1450));
        let mut eth0 = l.net().links.lock().unwrap()[&2].clone();
        eth0.mtu = 1450;
        l.enforcer.on_net_event(NetEvent::LinkChanged(eth0)).await;
        assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1450, 1450));
        assert_eq!(l.metric("mtuvisor_target_mtu"), 1450.0);
    }

    #[tokio::test]
    async fn dockerd_restarts_are_counted_by_the_loop() {
        let mut l = Loop::start(pod()).await;
        l.enforcer.on_dockerd(DockerdEvent::Started {
            pid: 10,
            restart: false,
        });
        l.enforcer.on_dockerd(DockerdEvent::Started {
            pid: 11,
            restart: true,
        });
        assert_eq!(l.metric("mtuvisor_dockerd_restarts_total"), 1.0);
    }
}
