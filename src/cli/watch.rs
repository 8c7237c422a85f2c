//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped
//! (as a sidecar beside dockerd, or on its own).

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
            docker::check_socket(socket).await?;
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
