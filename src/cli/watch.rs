//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped
//! (as a sidecar beside dockerd, or on its own).

use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tracing::info;

use crate::config::{Flags, Settings};
use crate::docker;
use crate::enforce::{self, Options};
use crate::error::Error;
use crate::metrics;
use crate::process;
use crate::AbortOnDrop;

/// How long an existing socket gets to answer as Docker before it is
/// refused as bad input.
const DOCKER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Target MTU: `auto` (follow the outer MTU) or a number [env: MTUVISOR_MTU].
    #[arg(long, value_name = "auto|N", allow_hyphen_values = true)]
    mtu: Option<String>,

    /// Full reconcile period, e.g. 30s [env: MTUVISOR_RECONCILE_INTERVAL].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    reconcile_interval: Option<String>,

    /// TCP MSS clamping: pmtu (default), off, or a fixed MSS [env: MTUVISOR_MSS].
    #[arg(long, value_name = "pmtu|off|N", allow_hyphen_values = true)]
    mss: Option<String>,

    /// Follow this dockerd's API too, e.g. unix:///var/run/docker.sock
    /// [env: MTUVISOR_DOCKER_HOST]. A socket that does not exist yet is waited for.
    #[arg(long, value_name = "unix:///PATH")]
    docker_host: Option<String>,

    /// Serve Prometheus metrics and /healthz on IP:PORT, e.g. 0.0.0.0:9464
    /// [env: MTUVISOR_METRICS_ADDR].
    #[arg(long, value_name = "IP:PORT")]
    metrics_addr: Option<String>,
}

impl WatchArgs {
    pub fn fill_flags(&self, flags: &mut Flags) {
        flags.mtu = self.mtu.clone();
        flags.reconcile_interval = self.reconcile_interval.clone();
        flags.docker_host = self.docker_host.clone();
        flags.mss = self.mss.clone();
        flags.metrics_addr = self.metrics_addr.clone();
    }
}

pub fn run(settings: Settings) -> Result<(), Error> {
    let metrics = settings.metrics_addr.map(metrics::bind).transpose()?;
    // The same owner of child exits as under supervise; as PID 1 of a
    // sidecar container it also collects whatever is re-parented to it.
    process::start_reaper(false)
        .map_err(|e| Error::Startup(format!("cannot start the child reaper: {e}")))?;
    super::runtime()?.block_on(async {
        let _metrics = metrics.map(|l| AbortOnDrop(tokio::spawn(metrics::serve(l))));
        let docker_socket = settings.docker_host.clone();
        if let Some(socket) = &docker_socket {
            check_docker_socket(socket).await?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
        let handle = signals.handle();
        let shutdown = async move {
            if let Some(sig) = signals.next().await {
                info!(signal = sig, "received signal");
            }
        };
        let options = Options {
            docker_socket,
            ready: None,
        };
        let result = enforce::run(settings, options, shutdown).await;
        handle.close();
        result
    })
}

/// A socket that exists must answer as Docker: a wrong path is bad input,
/// better refused now than waited on for ever. One that does not exist yet
/// is fine (dockerd starting beside us).
async fn check_docker_socket(socket: &std::path::Path) -> Result<(), Error> {
    if !socket.exists() {
        return Ok(());
    }
    match tokio::time::timeout(DOCKER_CHECK_TIMEOUT, docker::connect(socket)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::BadInput(e.to_string())),
        Err(_) => Err(Error::BadInput(format!(
            "{} does not answer as a Docker API within {}s; check --docker-host / MTUVISOR_DOCKER_HOST",
            socket.display(),
            DOCKER_CHECK_TIMEOUT.as_secs()
        ))),
    }
}
