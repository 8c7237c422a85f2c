//! The enforcement loop: one task owns the state; the netlink monitor and
//! the timers only tell it when to look.

mod engine;
mod policy;

use std::future::Future;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tracing::{info, trace, warn};

pub use engine::{Engine, PassReport};
pub use policy::{glob_match, is_docker_bridge_name, BridgeMatcher};

use crate::config::{MtuSetting, Settings};
use crate::detect::{detect_outer_mtu, DetectError, OuterMtu};
use crate::error::Error;
use crate::netlink::{NetEvent, NetMonitor, NetnsResolver, Rtnl, RtnlClient};

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

/// Runs `watch` in the calling thread's network namespace until `shutdown`
/// completes.
pub async fn run_watch(
    settings: Settings,
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
    );
    let mut engine = Engine::new(
        client,
        BridgeMatcher::new(settings.bridge_patterns.clone()),
        source.target(),
    );
    engine.sweep().await?;

    let period = settings.reconcile_interval;
    let mut reconcile = interval_at(Instant::now() + period, period);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("stopping");
                return Ok(());
            }
            event = monitor.next() => {
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
                        follow_outer(&mut source, &mut engine, &rtnl).await;
                        sweep_logged(&mut engine).await;
                    }
                }
            }
            _ = reconcile.tick() => {
                follow_outer(&mut source, &mut engine, &rtnl).await;
                sweep_logged(&mut engine).await;
            }
        }
    }
}

async fn sweep_logged(engine: &mut Engine<RtnlClient>) {
    if let Err(e) = engine.sweep().await {
        warn!(error = %e, "sweep failed; retrying at the next reconcile");
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
