//! Enforcement in one network namespace: [`prepare`] makes every check
//! that can fail on input or on the system state before anything is
//! touched (bad input is found here, so commands need no "before or after
//! start?" rules); [`Prepared::run`] is the loop. One task owns the state;
//! the netlink monitor, the Docker API reader, the dockerd supervisor, the
//! MSS task and the timers only forward into it. A failure of the running
//! loop is logged and enforcement starts over with backoff (the same rule
//! for `watch` and `supervise`: dockerd keeps running either way, and the
//! next start's sweep catches up).

mod enforcer;
mod engine;
mod pathprobe;
mod policy;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tracing::{error, info};

pub use engine::{Engine, PassReport};
pub use pathprobe::{PathProber, PathReading};
pub use policy::{is_docker_bridge_name, BridgeMatcher, MtuRule};

use crate::backoff::Backoff;
use crate::config::{MtuSetting, Settings};
use crate::detect::{self, DetectError, TargetSource};
use crate::docker::{self, DockerUpdate};
use crate::error::Error;
use crate::firewall::{EnsureReport, MssClamp};
use crate::logging::RepeatedFailure;
use crate::metrics::Metrics;
use crate::netlink::{
    Fence, MtuSetter, NetMonitor, NetlinkError, NetnsResolver, NsFile, Quarantine, Rtnl,
    RtnlClient, Socket, RECV_BUFFER_OWN, RECV_BUFFER_POD,
};
use crate::AbortOnDrop;
use enforcer::Enforcer;
use pathprobe::Readings;

/// Restarts of a failed loop: 1 s doubling to 30 s; a minute of running
/// starts over.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
const STABLE_RUN: Duration = Duration::from_secs(60);

/// What enforcement is wired to besides netlink.
pub struct Setup {
    /// The Docker API socket to follow, if any.
    pub docker_socket: Option<PathBuf>,
    /// This enforcer's series; the loop is their only writer.
    pub metrics: Arc<Metrics>,
    /// Readiness: true once the first sweep is done and notifications
    /// flow, false whenever the loop is not running. `/healthz` and
    /// `supervise` read it.
    pub ready: watch::Sender<bool>,
    /// `node`: the pod namespace to enforce in; `None`: the calling
    /// thread's.
    pub netns: Option<Arc<NsFile>>,
    /// `node`: MSS rules only once a Docker bridge exists here (a pod
    /// without Docker is never touched).
    pub mss_when_docker: bool,
    /// The namespaces no far end may be changed in (`node`: the node's
    /// and every pod's).
    pub fence: Fence,
    /// `path_probe`: the process's prober, probing from its own network
    /// namespace (`node`: the node's, one for every pod).
    pub prober: Option<Arc<PathProber>>,
    /// Whether work in this enforcer's namespace ends in time (shared with
    /// its series: readiness reads it).
    pub quarantine: Quarantine,
    /// The MTU the path probe is bounded by: `None`, the enforcer's own
    /// outer MTU (the probe runs in its namespace); `node`: `mtu_ceiling`,
    /// one probe of the node's path for every pod.
    pub probe_ceiling: Option<u32>,
}

/// Sockets opened and everything checked; nothing touched yet.
struct Opened {
    monitor: NetMonitor,
    client: RtnlClient,
    source: TargetSource,
    mss: Option<MssClamp>,
    mss_reports: mpsc::UnboundedReceiver<EnsureReport>,
}

/// Enforcement ready to run in the calling thread's network namespace.
pub struct Prepared {
    settings: Settings,
    setup: Setup,
    opened: Opened,
}

/// How [`prepare`] meets a failure to open.
pub enum Retry {
    /// Return it: under `watch` and `supervise` a failure at start is bad
    /// input or a broken system, and ends the command.
    Never,
    /// Try again, 10 ms doubling to 2 s, until it works or the receiver
    /// turns true (then [`Error::Stopped`]): under `node` a pod's namespace
    /// is found before its CNI plugin has given it a default route. A
    /// namespace still without one after 10 s says so once (INFO); any
    /// other failure lasting that long is a warning, once per message.
    Until(watch::Receiver<bool>),
}

const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(2);
const RETRY_QUIET: Duration = Duration::from_secs(10);

/// Opens the sockets and makes every check that can fail (the outer MTU,
/// an MTU too small for IPv6, an MSS too large for the MTU, a missing
/// firewall tool) before anything is touched; the one way to an enforcer.
pub async fn prepare(settings: Settings, setup: Setup, retry: Retry) -> Result<Prepared, Error> {
    let mut stop = match retry {
        Retry::Never => {
            let opened = open(&settings, &setup).await?;
            return Ok(Prepared {
                settings,
                setup,
                opened,
            });
        }
        Retry::Until(stop) => stop,
    };
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, RETRY_MAX);
    let mut failing = RepeatedFailure::default();
    let mut said_waiting = false;
    let began = Instant::now();
    loop {
        let e = match open(&settings, &setup).await {
            Ok(opened) => {
                return Ok(Prepared {
                    settings,
                    setup,
                    opened,
                })
            }
            Err(e) => e,
        };
        if matches!(e, Error::Detect(DetectError::NoDefaultRoute)) {
            // Not a fault: a pod whose network is being set up, or a
            // namespace with no network at all.
            if began.elapsed() >= RETRY_QUIET && !said_waiting {
                said_waiting = true;
                info!("no default route in this namespace after 10 s; still waiting for one");
            }
        } else if began.elapsed() >= RETRY_QUIET {
            failing.failed("cannot enforce in this network namespace yet", &e);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.wait_for(|s| *s) => return Err(Error::Stopped),
        }
    }
}

/// The sockets, opened in the calling thread's namespace (requests,
/// notifications, MTU changes); `setters`: how many MTU changes may wait
/// for RTNL at once there, `buffer`: how many bytes of notifications may
/// wait to be read. Nothing here needs a runtime: a pod's are opened on a
/// thread inside it, then handed to the runtime.
fn sockets(setters: usize, buffer: usize) -> Result<(Socket, Socket, MtuSetter), NetlinkError> {
    // Subscribed before the first dump so that nothing created in between
    // is missed.
    let monitor = NetMonitor::socket(buffer)?;
    let requests = Socket::open(0, None).map_err(|source| NetlinkError::Socket {
        context: String::new(),
        source,
    })?;
    Ok((requests, monitor, MtuSetter::new(setters)?))
}

/// MTU changes in flight at once in our own namespace, and in each pod's.
const SETTERS_OWN: usize = 4;
const SETTERS_POD: usize = 2;

async fn open(settings: &Settings, setup: &Setup) -> Result<Opened, Error> {
    let (requests, monitor, setter) = match &setup.netns {
        None => sockets(SETTERS_OWN, RECV_BUFFER_OWN)?,
        // Opened from a short-lived thread inside the pod's namespace
        // (this task waits, the runtime thread does not), then driven by
        // this runtime: no thread per pod.
        Some(ns) => ns.run(|| sockets(SETTERS_POD, RECV_BUFFER_POD)).await??,
    };
    let monitor = NetMonitor::new(monitor)?;
    let client = RtnlClient::new(
        Rtnl::from_socket(requests)?,
        setter,
        NetnsResolver::new(settings.netns_dirs.clone(), setup.fence.clone()),
        setup.quarantine.clone(),
    );
    let source = match settings.mtu {
        MtuSetting::Fixed(mtu) => {
            let outer = detect::outer_mtu(&client).await.ok();
            settings.check_mtu_for_ipv6(outer.as_ref().is_some_and(|o| o.ipv6.is_some()))?;
            TargetSource::fixed(mtu, outer, settings.mtu_ceiling)
        }
        MtuSetting::Auto => {
            TargetSource::follow(detect::outer_mtu(&client).await?, settings.mtu_ceiling)
        }
    };
    settings.check_mss_for_mtu(source.target())?;
    let (reports, mss_reports) = mpsc::unbounded_channel();
    let mss = match &setup.netns {
        None => MssClamp::prepare(
            settings.mss,
            settings.mss_backend,
            settings.mss_keep_on_exit,
            reports,
        )
        .map_err(Error::Firewall)?,
        Some(ns) => MssClamp::in_pod(
            settings.mss,
            settings.mss_backend,
            settings.mss_keep_on_exit,
            reports,
            ns.clone(),
        ),
    };
    Ok(Opened {
        monitor,
        client,
        source,
        mss,
        mss_reports,
    })
}

impl Prepared {
    /// The MTU enforcement starts with (what dockerd gets as `--mtu`):
    /// never above `mtu_ceiling`; a path probe lowers it later.
    pub fn target(&self) -> u32 {
        self.opened.source.target()
    }

    /// Enforces until `shutdown` completes, starting over after a failure.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Prepared {
            settings,
            mut setup,
            opened,
        } = self;
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(RESTART_FIRST, RESTART_MAX, STABLE_RUN);
        let mut opened = Some(opened);
        loop {
            let started = Instant::now();
            if let Some(o) = opened.take() {
                match run_once(&settings, &mut setup, o, shutdown.as_mut()).await {
                    Ok(()) => return,
                    Err(e) => error!(error = %e, "enforcement stopped; starting it over"),
                }
            }
            let delay = backoff.after_run(started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.as_mut() => return,
            }
            match open(&settings, &setup).await {
                Ok(o) => opened = Some(o),
                Err(e) => {
                    error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot start enforcement")
                }
            }
        }
    }
}

/// Clears readiness however the loop ends.
struct NotReadyAfter<'a>(&'a watch::Sender<bool>);

impl Drop for NotReadyAfter<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// One run of the loop: returns on shutdown, or with the error that ended
/// it.
async fn run_once(
    settings: &Settings,
    setup: &mut Setup,
    opened: Opened,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), Error> {
    let Opened {
        mut monitor,
        client,
        source,
        mss,
        mut mss_reports,
    } = opened;
    let mut enforcer = Enforcer::new(
        client,
        settings,
        source,
        mss,
        setup.metrics.clone(),
        setup.mss_when_docker,
    );
    enforcer.start().await?;
    let mut probe = ProbeFeed {
        prober: setup.prober.clone(),
        fixed: setup.probe_ceiling,
        ceiling: 0,
        readings: None,
    };
    let _not_ready_after = NotReadyAfter(&setup.ready);
    setup.ready.send_replace(true);
    let (docker_tx, mut docker_rx) = mpsc::unbounded_channel::<DockerUpdate>();
    let _docker = setup
        .docker_socket
        .clone()
        .map(|socket| AbortOnDrop(docker::follow(socket, docker_tx)));
    let period = settings.reconcile_interval;
    let mut reconcile = interval_at(Instant::now() + period, period);
    reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The probe group follows the MTU it is bounded by; joining one
        // that has measured already takes its reading at once.
        if let Some(reading) = probe.follow(enforcer.probe_ceiling()) {
            enforcer.on_path_reading(&reading).await;
        }
        let due = enforcer.next_due();
        tokio::select! {
            biased;
            () = shutdown.as_mut() => {
                enforcer.stop().await;
                return Ok(());
            }
            // Answers first: they finish what is in flight and make room.
            landed = enforcer.next_landed() => enforcer.on_landed(landed).await,
            // Read even when MTUs are not enforced: the links are still
            // followed (a Docker bridge brings the MSS rules), and an unread
            // socket would only overflow. Not while the clamps in flight
            // are at their bound: notifications wait in the kernel.
            event = monitor.next(), if enforcer.takes_events() => match event {
                Some((event, read)) => enforcer.on_net_event(event, read).await,
                None => return Err(Error::MonitorClosed),
            },
            () = sleep_until_due(due) => enforcer.on_due().await,
            Some(report) = mss_reports.recv() => enforcer.on_mss_report(report),
            Some(update) = docker_rx.recv() => enforcer.on_docker_update(update).await,
            _ = reconcile.tick() => enforcer.on_tick().await,
            reading = probe.changed() => enforcer.on_path_reading(&reading).await,
        }
    }
}

/// One enforcer's subscription to the path prober's readings.
struct ProbeFeed {
    prober: Option<Arc<PathProber>>,
    /// The bound when it is not the enforcer's own.
    fixed: Option<u32>,
    /// The MTU the subscribed group is bounded by.
    ceiling: u32,
    readings: Option<Readings>,
}

impl ProbeFeed {
    /// Joins the group bounded by `ceiling` unless already in it; then
    /// its reading so far, if it has one.
    fn follow(&mut self, ceiling: u32) -> Option<Arc<PathReading>> {
        let prober = self.prober.as_ref()?;
        let ceiling = self.fixed.unwrap_or(ceiling);
        if self.readings.is_some() && self.ceiling == ceiling {
            return None;
        }
        // The old group's receiver goes first: alone in it, this
        // enforcer ends it.
        self.readings = None;
        let mut readings = prober.subscribe(ceiling);
        self.ceiling = ceiling;
        let now = readings.borrow_and_update().clone();
        self.readings = Some(readings);
        now
    }

    /// The group's next reading; never, without a prober.
    async fn changed(&mut self) -> Arc<PathReading> {
        if let Some(readings) = &mut self.readings {
            while readings.changed().await.is_ok() {
                if let Some(reading) = readings.borrow_and_update().clone() {
                    return reading;
                }
            }
        }
        std::future::pending().await
    }
}

/// Completes at `due`; never, without one.
async fn sleep_until_due(due: Option<std::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
