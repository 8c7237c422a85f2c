//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped
//! (as a sidecar beside dockerd, or on its own).

use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tracing::info;

use super::flags::{self, SettingFlags};
use crate::config::Settings;
use crate::docker;
use crate::enforce::{self, Setup};
use crate::error::Error;
use crate::metrics;
use crate::process;

/// How long an existing socket gets to answer as Docker before it is
/// refused as bad input.
const DOCKER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Watch>,
}

pub fn run(settings: Settings) -> Result<(), Error> {
    let listener = settings.metrics_addr.map(metrics::bind).transpose()?;
    // The same owner of child exits as under supervise; as PID 1 of a
    // sidecar container it also collects whatever is re-parented to it.
    process::start_reaper(false)
        .map_err(|e| Error::Startup(format!("cannot start the child reaper: {e}")))?;
    super::runtime()?.block_on(async {
        let docker_socket = settings.docker_host.clone();
        if let Some(socket) = &docker_socket {
            check_docker_socket(socket).await?;
        }
        let one = super::OneEnforcer::new(listener);
        let setup = Setup {
            docker_socket,
            metrics: one.metrics.clone(),
            ready: one.ready.clone(),
            dockerd: None,
        };
        let prepared = enforce::prepare(settings, setup).await?;
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
        let handle = signals.handle();
        let shutdown = async move {
            if let Some(sig) = signals.next().await {
                info!(signal = sig, "received signal");
            }
        };
        prepared.run(shutdown).await;
        handle.close();
        Ok(())
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
