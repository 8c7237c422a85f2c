//! Runs dockerd (or a wrapper such as `dockerd-entrypoint.sh`) as a child:
//! passes its output through, forwards signals, restarts it with backoff when
//! it dies, reaps orphans when mtuvisor is PID 1, and stops it within the
//! stop timeout when asked.

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::metrics::METRICS;
use futures::{Stream, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGQUIT, SIGTERM};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

use super::Backoff;

/// A run this long resets the restart backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Program and arguments, `--mtu` already added.
    pub command: Vec<String>,
    pub stop_timeout: Duration,
    /// `None`: restart for ever.
    pub max_restarts: Option<u32>,
}

struct Running {
    pid: Pid,
    started: Instant,
}

/// The exit code a shell would report for `status`.
fn exit_code(status: &WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => *code,
        WaitStatus::Signaled(_, sig, _) => 128 + *sig as i32,
        _ => 1,
    }
}

fn spawn(command: &[String]) -> std::io::Result<Running> {
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    // The Child handle is dropped without waiting: exits are collected by
    // `reap`, which owns every waitpid in this process.
    let pid = Pid::from_raw(child.id() as i32);
    info!(pid = pid.as_raw(), command = %command.join(" "), "started dockerd");
    Ok(Running {
        pid,
        started: Instant::now(),
    })
}

/// Collects every child that has exited. As PID 1 that includes orphans
/// re-parented to us (containerd shims); only dockerd's status is returned.
fn reap(dockerd: Option<Pid>) -> Option<WaitStatus> {
    let mut ours = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return ours,
            Ok(status) => {
                if status.pid() == dockerd {
                    ours = Some(status);
                } else {
                    debug!(pid = ?status.pid(), ?status, "reaped an orphaned process");
                }
            }
        }
    }
}

/// Supervises dockerd until it stops for good; returns mtuvisor's exit code.
/// `gate` completes when enforcement is watching, so that the links dockerd
/// creates first are already seen. `signals` must include SIGCHLD, SIGTERM,
/// SIGINT and SIGQUIT, registered before this is called.
pub async fn supervise(
    config: SupervisorConfig,
    mut signals: impl Stream<Item = i32> + Unpin,
    gate: impl Future<Output = ()>,
) -> i32 {
    gate.await;
    // Orphans of dockerd (containerd, shims) come to us rather than to
    // whatever init the container has, and are reaped at once. A containerd
    // left a zombie after dockerd was killed makes the next dockerd believe
    // it still runs, and wait ~15 s for its socket before giving up.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        warn!(error = %e, "cannot become a child subreaper; orphans go to init");
    }
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut restarts = 0u32;
    let mut child = match spawn(&config.command) {
        Ok(c) => Some(c),
        Err(e) => {
            error!(command = %config.command[0], error = %e, "cannot start dockerd");
            return 127;
        }
    };
    let mut restart_at: Option<Instant> = None;
    let mut stop_deadline: Option<Instant> = None;
    let mut killed = false;
    let far = Instant::now() + Duration::from_secs(86400 * 365);

    loop {
        let kill_at = match (stop_deadline, &child, killed) {
            (Some(d), Some(_), false) => d,
            _ => far,
        };
        tokio::select! {
            signal = signals.next() => {
                let Some(signal) = signal else { return 1 };
                match signal {
                    SIGCHLD => {
                        let Some(status) = reap(child.as_ref().map(|c| c.pid)) else { continue };
                        let ran = child.take().map(|c| c.started.elapsed()).unwrap_or_default();
                        let code = exit_code(&status);
                        if stop_deadline.is_some() {
                            info!(?status, "dockerd stopped");
                            return if killed && code == 0 { 1 } else { code };
                        }
                        if config.max_restarts.is_some_and(|max| restarts >= max) {
                            error!(?status, restarts, "dockerd exited; giving up after the configured restarts");
                            return code;
                        }
                        if ran >= STABLE_RUN {
                            backoff.reset();
                        }
                        let delay = backoff.next_delay();
                        restarts += 1;
                        warn!(?status, restart_in_ms = delay.as_millis() as u64, restarts, "dockerd exited unexpectedly; restarting");
                        restart_at = Some(Instant::now() + delay);
                    }
                    SIGTERM | SIGINT | SIGQUIT => {
                        let Ok(sig) = Signal::try_from(signal) else { continue };
                        match &child {
                            Some(c) => {
                                info!(signal = %sig, pid = c.pid.as_raw(), "forwarding signal to dockerd");
                                let _ = kill(c.pid, sig);
                            }
                            None => {
                                info!(signal = %sig, "stopping; dockerd was not running");
                                return 0;
                            }
                        }
                        if stop_deadline.is_none() {
                            stop_deadline = Some(Instant::now() + config.stop_timeout);
                        }
                    }
                    _ => {}
                }
            }
            () = sleep_until(restart_at.unwrap_or(far)), if restart_at.is_some() && stop_deadline.is_none() => {
                restart_at = None;
                match spawn(&config.command) {
                    Ok(c) => {
                        METRICS.dockerd_restarted();
                        child = Some(c);
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        restarts += 1;
                        error!(error = %e, restart_in_ms = delay.as_millis() as u64, "cannot restart dockerd");
                        if config.max_restarts.is_some_and(|max| restarts > max) {
                            return 127;
                        }
                        restart_at = Some(Instant::now() + delay);
                    }
                }
            }
            () = sleep_until(kill_at), if kill_at != far => {
                if let Some(c) = &child {
                    warn!(pid = c.pid.as_raw(), timeout_s = config.stop_timeout.as_secs_f64(), "dockerd did not stop in time; killing it");
                    let _ = kill(c.pid, Signal::SIGKILL);
                    killed = true;
                }
            }
        }
    }
}

/// The signals `supervise` needs, registered now (before dockerd exists, so
/// that no SIGCHLD is missed).
pub fn signals() -> std::io::Result<signal_hook_tokio::Signals> {
    signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGCHLD])
}
