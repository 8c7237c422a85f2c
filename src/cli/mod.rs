//! Command-line parsing and dispatch: one file per subcommand.

mod detect;
mod doctor;
mod flags;
mod node;
mod supervise;
mod watch;

use std::path::PathBuf;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::watch::{self as signal, Receiver, Sender};

use crate::config::{Flags, Settings};
use crate::enforce::{PathProber, Setup};
use crate::error::{Error, EXIT_BAD_INPUT};
use crate::metrics::{self, Metrics, Registry};
use crate::netlink::Quarantine;

#[derive(Debug, Parser)]
#[command(
    name = "mtuvisor",
    version,
    about = "Keeps Docker-in-Docker bridges and veths at or below the pod's outer MTU"
)]
pub struct Cli {
    /// TOML configuration file (default: /etc/mtuvisor/config.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    global: flags::SettingFlags<flags::Global>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the outer MTU of this network namespace and where it comes from.
    Detect(detect::DetectArgs),
    /// Say what is wrong with MTU here (the whole chain, a path probe) and what to do.
    Doctor(doctor::DoctorArgs),
    /// Keep Docker's bridges, veths and containers' eth0 at or below the outer MTU.
    Watch(watch::WatchArgs),
    /// Run dockerd with the right MTU, keep it running, and enforce the MTU.
    Supervise(supervise::SuperviseArgs),
    /// Enforce in every pod network namespace of this node (a DaemonSet).
    Node(node::NodeArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return report_usage_error(e),
    };
    let mut flags = Flags {
        config: cli.config,
        values: cli.global.values,
    };
    let result = match cli.command {
        // The settings are loaded all the same: a bad configuration is
        // refused by every command, and they set up logging.
        Command::Detect(args) => load(&flags)
            .and_then(|s| detect::run(&s, &args))
            .map(|()| 0),
        Command::Doctor(args) => load(&flags).and_then(|s| doctor::run(&s, args)),
        Command::Watch(args) => {
            flags.values.extend(args.settings.values);
            load(&flags).and_then(watch::run).map(|()| 0)
        }
        Command::Node(args) => {
            flags.values.extend(args.settings.values);
            load(&flags).and_then(node::run).map(|()| 0)
        }
        Command::Supervise(args) => {
            flags.values.extend(args.settings.values.clone());
            load(&flags).and_then(|s| supervise::run(s, args))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever a server or the kernel put in the message.
            let message = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("mtuvisor: {message}");
            e.exit_code()
        }
    }
}

fn load(flags: &Flags) -> Result<Settings, Error> {
    let settings = Settings::load(flags)?;
    crate::logging::init(settings.log_format);
    Ok(settings)
}

/// clap's errors span several lines (usage, tips); bad input gets one line.
fn report_usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                EXIT_BAD_INPUT
            } else {
                0
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("mtuvisor: {first} (see mtuvisor --help)");
            EXIT_BAD_INPUT
        }
    }
}

/// A process with one enforcer (`watch`, `supervise`): its series, its
/// readiness channel, and the server for them when a listener was bound.
struct OneEnforcer {
    _server: Option<metrics::Server>,
    _heartbeat: crate::health::Heartbeat,
    metrics: Arc<Metrics>,
    prober: Option<Arc<PathProber>>,
    ready: Sender<bool>,
    ready_rx: Receiver<bool>,
    quarantine: Quarantine,
}

impl OneEnforcer {
    /// The enforcer's wiring: this namespace, its series and readiness,
    /// the Docker API at `docker_socket` if any.
    fn setup(&self, docker_socket: Option<PathBuf>) -> Setup {
        Setup {
            docker_socket,
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            netns: None,
            mss_when_docker: false,
            fence: Default::default(),
            quarantine: self.quarantine.clone(),
            prober: self.prober.clone(),
            probe_ceiling: None,
        }
    }

    /// The server, when there is a listener, runs on a thread of its own;
    /// the loop's heartbeat on this runtime.
    fn new(listeners: metrics::Listeners, settings: &Settings) -> Result<OneEnforcer, Error> {
        let registry = Arc::new(Registry::default());
        registry.set_liveness_timeout(settings.liveness_timeout);
        let grants = &crate::caps::POD_GRANTS;
        registry.set_grants(grants, &crate::caps::check(grants));
        let (ready, ready_rx) = signal::channel(false);
        let quarantine = Quarantine::new("self");
        let metrics = registry.add(&[], ready_rx.clone(), quarantine.clone());
        let prober = PathProber::new(
            settings.path_probe.clone(),
            settings.path_probe_interval,
            registry.path(),
        );
        let _server = metrics::spawn_server(listeners, registry).map_err(Error::Metrics)?;
        Ok(OneEnforcer {
            _server,
            _heartbeat: crate::health::Heartbeat::start(),
            metrics,
            prober,
            ready,
            ready_rx,
            quarantine,
        })
    }
}

/// Completes on SIGTERM or SIGINT (registered now); close the handle
/// when done. Call inside the runtime.
fn shutdown_on_signal() -> Result<
    (
        impl std::future::Future<Output = ()>,
        signal_hook_tokio::Handle,
    ),
    Error,
> {
    use futures::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    let shutdown = async move {
        if let Some(sig) = signals.next().await {
            tracing::info!(signal = sig, "received signal");
        }
    };
    Ok((shutdown, handle))
}

/// What every enforcing command does first, in this order: the metrics
/// address bound (a port in use is bad input, before anything is started),
/// then the reaper (before anything is spawned), a child subreaper when
/// `subreaper`.
fn listen_then_reap(settings: &Settings, subreaper: bool) -> Result<metrics::Listeners, Error> {
    let bind = |key, addr: Option<std::net::SocketAddr>| {
        addr.map(|a| metrics::bind(key, a))
            .transpose()
            .map_err(Error::Metrics)
    };
    let listeners = metrics::Listeners {
        metrics: bind("metrics_addr", settings.metrics_addr)?,
        health: bind("health_addr", settings.health_addr)?,
    };
    raise_open_files();
    crate::process::start_reaper(subreaper)
        .map_err(|e| Error::Startup(format!("cannot start the child reaper: {e}")))?;
    Ok(listeners)
}

/// The soft limit on open files raised to the hard one: a node agent
/// holds a few descriptors per pod, and the runtime's default soft limit
/// (1,024) is below what a full node's pods need.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::debug!(error = %e, soft, hard, "cannot raise the open-file limit"),
        },
        _ => {}
    }
}

/// Threads for blocking work (iptables, nft): enough for one enforcer's
/// ensure and stop at once, and a bound for `node`'s many.
const BLOCKING_THREADS: usize = 4;

/// The most threads an enforcing command (`watch`, `supervise`, `node`)
/// runs, however many links, rules and namespaces the pods make: the
/// runtime's own, the reaper, discovery and the metrics server (4); the
/// blocking threads, each with at most one helper inside the pod whose
/// tool it runs (a tool's pipes are served by the thread that runs it);
/// the threads inside namespaces; one listing of the node's namespaces;
/// the MTU setter's workers. Beyond these, a thread past its deadline
/// inside a pod's namespace gives its permit back (one pod's stuck thread
/// never slows another's work) and is the one that pod may hold until it
/// ends: at most one more per pod enforced in (`netlink::Quarantine`).
pub const MAX_THREADS: usize =
    4 + BLOCKING_THREADS * 2 + crate::netlink::NETNS_THREADS + 1 + crate::netlink::SETTER_THREADS;

/// The runtime of an enforcing command (`watch`, `supervise`, `node`): it
/// runs on the calling thread, which first takes the real-time priority the
/// settings ask for (see `sched.rs`). Without the permission, enforcement
/// goes on at ordinary priority, with one warning.
fn enforcing_runtime(settings: &Settings) -> Result<tokio::runtime::Runtime, Error> {
    let priority = settings.realtime_priority.unwrap_or_default();
    match crate::sched::enter(settings.realtime_priority) {
        Ok(()) => {}
        // Nothing the pod's owner can grant: said once, not as a warning.
        Err(why @ crate::sched::Refused::NoBudget) => tracing::info!(
            priority,
            reason = %why,
            "the clamping threads run at ordinary priority: real-time priority \
             (SCHED_FIFO) was refused; reconciles and MSS clamping cover a \
             container that starts before its veth is clamped"
        ),
        Err(why) => tracing::warn!(
            priority,
            error = %why,
            "cannot run the clamping threads at real-time priority (SCHED_FIFO); \
             on a busy node a container may start before its veth is clamped: \
             see the error for what to grant, or set realtime_priority = off to silence this"
        ),
    }
    runtime()
}

/// A runtime for one command. Enforcement runs on a single thread: every
/// event goes through one loop anyway, and staying on one thread avoids a
/// cross-thread wake-up on the path from notification to clamp.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The firewall tools run on these; `node` starts one per pod that
        // gets Docker, and must not start a thread per pod.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|e| Error::Startup(format!("cannot start the async runtime: {e}")))
}
