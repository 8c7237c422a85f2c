//! `mtuvisor supervise [-- COMMAND ARGS...]`: the in-pod entrypoint. Detects
//! the outer MTU, starts dockerd with it, keeps dockerd running, and
//! enforces the MTU on everything it creates.

use std::time::Duration;

use clap::Args;
use tokio::sync::watch;
use tracing::{info, warn};

use super::flags::{self, SettingFlags};
use crate::config::Settings;
use crate::docker::supervisor::{self, SupervisorConfig};
use crate::docker::DockerdPlan;
use crate::enforce::{self, Retry};
use crate::error::Error;

/// What enforcement gets to clean up (the MSS rules) once dockerd is gone.
const ENFORCEMENT_STOP: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Supervise>,

    /// The command to run (default: dockerd), e.g. `-- dockerd-entrypoint.sh`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(mut settings: Settings, args: SuperviseArgs) -> Result<i32, Error> {
    // Before anything is spawned (the version probe, iptables, dockerd):
    // from here on the reaper owns every exit status, orphans' included.
    let listeners = super::listen_then_reap(&settings, true)?;
    let plan = DockerdPlan::new(args.command).map_err(Error::Docker)?;
    // Sandboxes of this dockerd live under its exec-root.
    settings.netns_dirs.insert(0, plan.sandbox_dir.clone());
    let rt = super::enforcing_runtime(&settings)?;
    // Registered before dockerd exists: no SIGTERM is missed.
    let _context = rt.enter();
    let signals = supervisor::signals()
        .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
    rt.block_on(async move {
        let one = super::OneEnforcer::new(listeners, &settings)?;
        let (stop_config, enforce_mtu) = (settings.stop_timeout, settings.enforce_mtu);
        let max_restarts = settings.max_restarts;
        let setup = one.setup(Some(plan.socket.clone()));
        // Bad input found here (on the system) ends mtuvisor before dockerd
        // is ever started.
        let prepared = enforce::prepare(settings, setup, Retry::Never).await?;
        let mtu = prepared.target();
        let config = SupervisorConfig {
            command: plan.argv(mtu, enforce_mtu),
            stop_timeout: stop_config,
            max_restarts,
            once: !plan.dockerd,
        };
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let enforcement = prepared.run(async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        });
        let mut ready_rx = one.ready_rx.clone();
        let socket = plan.socket.display().to_string();
        // dockerd starts once enforcement watches, so that the links it
        // creates first are already seen.
        let gate = async move {
            let _ = ready_rx.wait_for(|r| *r).await;
            info!(target_mtu = mtu, %socket, "supervising dockerd");
        };
        let supervision = supervisor::supervise(config, signals, gate, one.metrics.clone());
        tokio::pin!(enforcement);
        let code = tokio::select! {
            code = supervision => code,
            () = &mut enforcement => unreachable!("enforcement runs until told to stop"),
        };
        // dockerd is gone: let enforcement clean up (MSS rules) and end.
        let _ = stop_tx.send(true);
        if tokio::time::timeout(ENFORCEMENT_STOP, enforcement)
            .await
            .is_err()
        {
            warn!(
                "enforcement did not stop within {}s",
                ENFORCEMENT_STOP.as_secs()
            );
        }
        drop(one);
        Ok(code)
    })
}
