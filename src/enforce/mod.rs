//! The enforcement loop: one task owns the state; the netlink monitor and
//! the timers only tell it when to look.

mod engine;
mod policy;

use std::future::Future;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tracing::{debug, info, trace, warn};

pub use engine::{Engine, PassReport};
pub use policy::{glob_match, is_docker_bridge_name, BridgeMatcher};

use crate::config::{MtuSetting, Settings};
use crate::detect::{detect_outer_mtu, DetectError, OuterMtu};
use crate::docker::{self, DockerUpdate};
use crate::error::Error;
use crate::firewall::{EnsureReport, MssClamp};
use crate::logging::RepeatedFailure;
use crate::metrics::METRICS;
use crate::netlink::{NetEvent, NetMonitor, NetnsResolver, Rtnl, RtnlClient};
use crate::AbortOnDrop;

/// Where the target MTU comes from.
enum TargetSource {
    Fixed(u32),
    /// Follows the outer MTU; remembers the interfaces it was read from so
    /// that their link notifications trigger a re-read.
    Outer {
        last: OuterMtu,
    },
}

impl TargetSource {
    fn target(&self) -> u32 {
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

/// What enforcement runs against besides netlink.
#[derive(Debug, Default)]
pub struct Options {
    /// The Docker API socket to follow, if any.
    pub docker_socket: Option<PathBuf>,
    /// Completed once the first sweep is done and notifications flow.
    pub ready: Option<oneshot::Sender<()>>,
}

/// Runs enforcement in the calling thread's network namespace until
/// `shutdown` completes.
pub async fn run(
    settings: Settings,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let rtnl = Rtnl::connect()?;
    // Subscribe before the first dump so that nothing created in between is
    // missed.
    let mut monitor = NetMonitor::subscribe()?;
    let mut source = match settings.mtu {
        MtuSetting::Fixed(n) => {
            settings.check_mtu_for_ipv6(has_ipv6_default_route(&rtnl).await)?;
            TargetSource::Fixed(n)
        }
        MtuSetting::Auto => TargetSource::Outer {
            last: detect_outer_mtu(&rtnl).await?,
        },
    };
    // Everything checked before anything is said or touched.
    settings.check_mss_for_mtu(source.target())?;
    let (mss_tx, mut mss_rx) = mpsc::unbounded_channel();
    let mss = MssClamp::prepare(
        settings.mss,
        settings.mss_backend,
        settings.mss_keep_on_exit,
        mss_tx,
    )
    .map_err(|e| Error::BadInput(e.to_string()))?;
    let mut mss_log = RepeatedFailure::default();
    let mut sweep_log = RepeatedFailure::default();
    match &source {
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
    let client = RtnlClient::new(
        rtnl.clone(),
        NetnsResolver::new(settings.netns_dirs.clone()),
    )?;
    let mut engine = Engine::new(
        client,
        BridgeMatcher::new(settings.bridge_patterns.clone()),
        source.target(),
    );
    let enforce_mtu = settings.enforce_mtu;
    if enforce_mtu {
        engine.sweep().await?;
    } else {
        info!("MTU enforcement disabled by configuration; MSS clamping only");
    }
    if let Some(mss) = &mss {
        METRICS.set_mss_families(&mss.families());
        mss.ensure();
    }
    METRICS.set_ready(true);
    // However this returns: a stop, or an error that supervise restarts from.
    let _not_ready_after = NotReadyOnDrop;
    if let Some(ready) = options.ready {
        let _ = ready.send(());
    }
    let (docker_tx, mut docker_rx) = mpsc::unbounded_channel();
    let _docker = options
        .docker_socket
        .map(|socket| AbortOnDrop(docker::follow(socket, docker_tx)));

    let period = settings.reconcile_interval;
    let mut reconcile = interval_at(Instant::now() + period, period);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("stopping");
                if let Some(mss) = &mss {
                    finish_mss(mss).await;
                }
                return Ok(());
            }
            event = monitor.next(), if enforce_mtu => {
                let Some(event) = event else {
                    return Err(Error::MonitorClosed);
                };
                trace!(?event, "netlink event");
                match event {
                    NetEvent::LinkChanged(link) => {
                        let outer_changed = source.depends_on(link.index);
                        engine.on_link_changed(link).await;
                        if outer_changed {
                            follow_outer(&mut source, &mut engine, &rtnl).await;
                        }
                    }
                    NetEvent::LinkRemoved(ifindex) => {
                        engine.on_link_removed(ifindex);
                        if source.depends_on(ifindex) {
                            follow_outer(&mut source, &mut engine, &rtnl).await;
                        }
                    }
                    NetEvent::DefaultRouteChanged => follow_outer(&mut source, &mut engine, &rtnl).await,
                    NetEvent::Overrun => {
                        warn!("link notifications were lost (netlink overrun); sweeping");
                        METRICS.netlink_overrun();
                        follow_outer(&mut source, &mut engine, &rtnl).await;
                        sweep_logged(&mut engine, &mut sweep_log).await;
                    }
                }
            }
            Some(report) = mss_rx.recv() => {
                on_mss_report(report, mss.as_ref(), &mut mss_log);
            }
            Some(update) = docker_rx.recv() => match update {
                DockerUpdate::Bridges(_) | DockerUpdate::Sandbox { .. } if !enforce_mtu => {}
                DockerUpdate::Bridges(names) => {
                    engine.set_docker_bridges(names).await;
                }
                DockerUpdate::Sandbox { container, netns } => {
                    engine.on_sandbox(&container, &netns).await;
                }
                DockerUpdate::Resynced => {
                    METRICS.docker_resynced();
                    if enforce_mtu {
                        sweep_logged(&mut engine, &mut sweep_log).await;
                    }
                    // dockerd (re)started: it may have rebuilt its tables,
                    // or (first start under supervise) just chosen its
                    // iptables family.
                    if let Some(mss) = &mss {
                        mss.ensure_after_dockerd_start();
                    }
                }
            },
            _ = reconcile.tick() => {
                if enforce_mtu {
                    follow_outer(&mut source, &mut engine, &rtnl).await;
                    sweep_logged(&mut engine, &mut sweep_log).await;
                }
                if let Some(mss) = &mss {
                    mss.ensure();
                }
            }
        }
    }
}

async fn sweep_logged(engine: &mut Engine<RtnlClient>, log: &mut RepeatedFailure) {
    match engine.sweep().await {
        Ok(_) => {
            log.succeeded("sweeps succeed again");
        }
        Err(e) => log.failed("sweep failed", &e),
    }
}

/// An `ensure` finished: one line when something changed or a failure
/// started, changed or ended; the metrics from its families.
fn on_mss_report(report: EnsureReport, mss: Option<&MssClamp>, log: &mut RepeatedFailure) {
    if let Some((from, to)) = &report.switched {
        info!(%from, %to, "dockerd uses another iptables family; MSS clamping rules moved");
    }
    let families: Vec<_> = report.families.iter().map(|(f, _)| *f).collect();
    METRICS.set_mss_families(&families);
    for (family, result) in &report.families {
        METRICS.set_mss_installed(*family, result.is_ok());
    }
    match report.error() {
        Some(e) => {
            METRICS.mss_ensure_failed();
            log.failed("cannot install MSS clamping rules", e);
        }
        None => {
            let backend = mss.map(MssClamp::describe).unwrap_or_default();
            let mode = mss.map(MssClamp::mode);
            if log.succeeded("MSS clamping rules in place again") {
                debug!(%backend, ?mode, "MSS clamping rules installed after failures");
            } else if report.changed() {
                info!(%backend, ?mode, "MSS clamping rules installed");
            } else {
                debug!("MSS clamping rules in place");
            }
        }
    }
}

/// On a clean stop: the rules go (unless kept), and the gauges with them.
async fn finish_mss(mss: &MssClamp) {
    match mss.finish().await {
        None => info!("leaving MSS clamping rules in place (keep_on_exit)"),
        Some(Ok(())) => {
            for family in mss.families() {
                METRICS.set_mss_installed(family, false);
            }
            info!("MSS clamping rules removed");
        }
        Some(Err(e)) => warn!(error = %e, "cannot remove MSS clamping rules"),
    }
}

/// Re-reads the outer MTU and moves the target with it.
async fn follow_outer(source: &mut TargetSource, engine: &mut Engine<RtnlClient>, rtnl: &Rtnl) {
    let TargetSource::Outer { last } = source else {
        return;
    };
    match detect_outer_mtu(rtnl).await {
        Ok(outer) => {
            let mtu = outer.mtu;
            if mtu != last.mtu {
                info!(interface = %outer.interface, source = %outer.source, from_mtu = last.mtu, to_mtu = mtu, "outer MTU changed");
            }
            *last = outer;
            engine.set_target(mtu).await;
        }
        Err(DetectError::NoDefaultRoute) => {
            warn!(
                target_mtu = engine.target(),
                "default route gone; keeping the last target MTU"
            );
        }
        Err(e) => warn!(error = %e, "cannot re-read the outer MTU; keeping the last target"),
    }
}

async fn has_ipv6_default_route(rtnl: &Rtnl) -> bool {
    matches!(detect_outer_mtu(rtnl).await, Ok(o) if o.ipv6.is_some())
}

/// Clears the readiness gauge (and `/healthz`) when enforcement ends.
struct NotReadyOnDrop;

impl Drop for NotReadyOnDrop {
    fn drop(&mut self) {
        METRICS.set_ready(false);
    }
}
