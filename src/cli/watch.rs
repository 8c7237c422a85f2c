//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped
//! (as a sidecar beside dockerd, or on its own).

use clap::Args;

use super::flags::{self, SettingFlags};
use crate::config::Settings;
use crate::docker;
use crate::enforce::{self, Retry};
use crate::error::Error;

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Watch>,
}

pub fn run(settings: Settings) -> Result<(), Error> {
    // The same owner of child exits as under supervise; as PID 1 of a
    // sidecar container it also collects whatever is re-parented to it.
    let listeners = super::listen_then_reap(&settings, false)?;
    super::enforcing_runtime(&settings)?.block_on(async {
        let docker_socket = settings.docker_host.clone();
        if let Some(socket) = &docker_socket {
            docker::check_socket(socket).await.map_err(Error::Docker)?;
        }
        let one = super::OneEnforcer::new(listeners, &settings)?;
        let setup = one.setup(docker_socket);
        let prepared = enforce::prepare(settings, setup, Retry::Never).await?;
        let (shutdown, handle) = super::shutdown_on_signal()?;
        prepared.run(shutdown).await;
        handle.close();
        Ok(())
    })
}
