//! `mtuvisor supervise [-- COMMAND ARGS...]`: the in-pod entrypoint. Detects
//! the outer MTU, starts dockerd with it, keeps dockerd running, and
//! enforces the MTU on everything it creates.

use std::path::PathBuf;

use clap::Args;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use super::flags::{self, SettingFlags};
use crate::config::{MtuSetting, Settings};
use crate::detect::detect_outer_mtu;
use crate::docker::args::{docker_socket, dockerd_args, exec_root, user_mtu};
use crate::docker::probe_dockerd_version;
use crate::docker::supervisor::{self, SupervisorConfig};
use crate::enforce::{self, Options};
use crate::error::Error;
use crate::metrics;
use crate::netlink::Rtnl;
use crate::process::{self, find_program};
use crate::AbortOnDrop;

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Supervise>,

    /// The command to run (default: dockerd), e.g. `-- dockerd-entrypoint.sh`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(mut settings: Settings, args: SuperviseArgs) -> Result<i32, Error> {
    let command = if args.command.is_empty() {
        vec!["dockerd".to_string()]
    } else {
        args.command
    };
    let program = find_program(&command[0]).ok_or_else(|| {
        Error::BadInput(format!(
            "command not found: {} (give the path of dockerd or of its wrapper after --)",
            command[0]
        ))
    })?;
    let metrics = settings.metrics_addr.map(metrics::bind).transpose()?;
    // Before anything is spawned (the version probe, iptables, dockerd):
    // from here on the reaper owns every exit status, orphans' included.
    process::start_reaper(true)
        .map_err(|e| Error::Startup(format!("cannot start the child reaper: {e}")))?;
    let rt = super::runtime()?;
    let mtu = rt.block_on(async {
        let rtnl = Rtnl::connect()?;
        let outer = detect_outer_mtu(&rtnl).await;
        settings.check_mtu_for_ipv6(matches!(&outer, Ok(o) if o.ipv6.is_some()))?;
        let mtu = match settings.mtu {
            MtuSetting::Fixed(n) => n,
            MtuSetting::Auto => outer?.mtu,
        };
        Ok::<u32, Error>(mtu)
    })?;
    if let Some(given) = user_mtu(&command) {
        if given.parse::<u32>().is_ok_and(|n| n > mtu) {
            warn!(given_mtu = %given, target_mtu = mtu, "the command sets --mtu above the target; containers on the default bridge will be clamped anyway");
        }
    }
    let version = probe_dockerd_version(&program, &command[0]);
    // With MTU enforcement off (MSS clamping only), dockerd's MTU is left
    // as the user gave it.
    let full = if settings.enforce_mtu {
        dockerd_args(&command, mtu, version)
    } else {
        command.clone()
    };
    let socket = docker_socket(&full);
    // Sandboxes of this dockerd live under its exec-root.
    settings
        .netns_dirs
        .insert(0, exec_root(&full).join("netns"));
    let supervisor_config = SupervisorConfig {
        command: full,
        stop_timeout: settings.stop_timeout,
        max_restarts: settings.max_restarts,
    };
    // Registered before dockerd exists: no SIGCHLD or SIGTERM is missed.
    let _context = rt.enter();
    let signals = supervisor::signals()
        .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
    let code = rt.block_on(async move {
        let _metrics = metrics.map(|l| AbortOnDrop(tokio::spawn(metrics::serve(l))));
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let shown = socket.display().to_string();
        let enforcement = enforce_until_stopped(settings, socket, ready_tx, stop_rx);
        // Said once everything was checked and enforcement runs.
        let gate = async {
            let _ = ready_rx.await;
            info!(target_mtu = mtu, socket = %shown, "supervising dockerd");
        };
        let supervision = supervisor::supervise(supervisor_config, signals, gate);
        tokio::pin!(enforcement);
        let code = tokio::select! {
            code = supervision => code,
            // Only a failure before enforcement was ever ready ends it here
            // (bad input found on the system): dockerd was never started.
            result = &mut enforcement => return result.map(|()| 0),
        };
        // dockerd is gone: let enforcement clean up (MSS rules) and end.
        let _ = stop_tx.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(10), enforcement)
            .await
            .is_err()
        {
            warn!("enforcement did not stop within 10s");
        }
        Ok(code)
    })?;
    Ok(code)
}

/// Runs enforcement until told to stop. A failure before it was first ready
/// is returned (nothing has been started yet); after that, a failure is
/// logged and enforcement restarted, since dockerd keeps running either way
/// and the next start's sweep catches what happened meanwhile.
async fn enforce_until_stopped(
    settings: Settings,
    socket: PathBuf,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut ready = Some(ready);
    loop {
        let (tx, rx) = oneshot::channel();
        let options = Options {
            docker_socket: Some(socket.clone()),
            ready: Some(tx),
        };
        let mut stop_here = stop.clone();
        let shutdown = async move {
            let _ = stop_here.wait_for(|stopped| *stopped).await;
        };
        let run = enforce::run(settings.clone(), options, shutdown);
        tokio::pin!(run);
        let early = tokio::select! {
            result = &mut run => Some(result),
            Ok(()) = rx => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                None
            }
        };
        let result = match early {
            Some(result) => result,
            None => run.await,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if ready.is_some() => return Err(e),
            Err(e) => error!(error = %e, "enforcement stopped; restarting it in 1s"),
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
}
