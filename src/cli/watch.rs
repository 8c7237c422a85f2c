//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped
//! (as a sidecar beside dockerd, or on its own).

use clap::Args;

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
    super::enforcing_runtime(&settings)?.block_on(async {
        let docker_socket = settings.docker_host.clone();
        if let Some(socket) = &docker_socket {
            docker::check_socket(socket).await?;
        }
        let one = super::OneEnforcer::new(listener)?;
        let setup = Setup {
            docker_socket,
            metrics: one.metrics.clone(),
            ready: one.ready.clone(),
            dockerd: None,
            netns: None,
            mss_when_docker: false,
            fence: Default::default(),
        };
        let prepared = enforce::prepare(settings, setup).await?;
        let (shutdown, handle) = super::shutdown_on_signal()?;
        prepared.run(shutdown).await;
        handle.close();
        Ok(())
    })
}
