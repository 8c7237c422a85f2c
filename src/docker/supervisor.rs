//! Runs dockerd (or a wrapper such as `dockerd-entrypoint.sh`) as a child:
//! passes its output through, forwards signals, restarts it with backoff when
//! it dies, and stops it within the stop timeout when asked.
//!
//! Orphans of dockerd (containerd, shims) come to mtuvisor rather than to
//! whatever init the container has, because `supervise` makes itself a
//! child subreaper (`process::start_reaper(true)`), and are reaped at once:
//! a containerd left a zombie after dockerd was killed makes the next
//! dockerd believe it still runs, and wait ~15 s for its socket before
//! giving up. The reaper in `process.rs` owns every `waitpid`; dockerd's
//! own exit status comes from it through [`Spawned::exited`].

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use std::sync::Arc;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::process::{self, Spawned};
use futures::{Stream, StreamExt};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use tokio::time::{sleep_until, Instant};
use tracing::{error, info, warn};

/// Restarts: 1 s doubling to 30 s; a run this long starts over.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
const STABLE_RUN: Duration = Duration::from_secs(60);
/// Stands for "no deadline" in the select below.
const NEVER: Duration = Duration::from_secs(86400 * 365);

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Program and arguments, `--mtu` already added.
    pub command: Vec<String>,
    pub stop_timeout: Duration,
    /// `None`: restart for ever.
    pub max_restarts: Option<u32>,
    /// Another command than dockerd (`docker run IMAGE sh`): it gets the
    /// terminal's stdin, runs once, and its exit code is mtuvisor's.
    pub once: bool,
}

struct Running {
    pid: Pid,
    started: Instant,
}

type Exit = Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>>>>;

/// The exit code a shell would report for `status`.
fn exit_code(status: &std::io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(s) => s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(1),
        Err(_) => 1,
    }
}

fn spawn(command: &[String], once: bool) -> std::io::Result<(Running, Exit)> {
    let stdin = if once {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let child: Spawned = process::spawn(
        Command::new(&command[0])
            .args(&command[1..])
            .stdin(stdin)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    )?;
    let pid = Pid::from_raw(child.id() as i32);
    let what = if once {
        "started the command"
    } else {
        "started dockerd"
    };
    info!(pid = pid.as_raw(), command = %command.join(" "), "{what}");
    let running = Running {
        pid,
        started: Instant::now(),
    };
    Ok((running, Box::pin(child.exited())))
}

/// Supervises dockerd until it stops for good; returns mtuvisor's exit code.
/// `gate` completes when enforcement is watching, so that the links dockerd
/// creates first are already seen. `signals` must include SIGTERM, SIGINT
/// and SIGQUIT, registered before this is called; the reaper
/// (`process::start_reaper`) must run. The supervisor is the one writer of
/// `metrics`' restart count (what a restart means for the rules, the loop
/// learns from the Docker API's reconnect).
pub async fn supervise(
    config: SupervisorConfig,
    mut signals: impl Stream<Item = i32> + Unpin,
    gate: impl Future<Output = ()>,
    metrics: Arc<Metrics>,
) -> i32 {
    gate.await;
    let mut backoff = Backoff::new(RESTART_FIRST, RESTART_MAX, STABLE_RUN);
    let mut restarts = 0u32;
    let (mut child, mut exit) = match spawn(&config.command, config.once) {
        Ok((c, exit)) => (Some(c), Some(exit)),
        Err(e) => {
            error!(command = %config.command[0], error = %e, "cannot start dockerd");
            return 127;
        }
    };
    let mut restart_at: Option<Instant> = None;
    let mut stop_deadline: Option<Instant> = None;
    let mut killed = false;
    let far = Instant::now() + NEVER;

    loop {
        let kill_at = match (stop_deadline, &child, killed) {
            (Some(d), Some(_), false) => d,
            _ => far,
        };
        tokio::select! {
            status = async { exit.as_mut().expect("guarded").await }, if exit.is_some() => {
                exit = None;
                let ran = child.take().map(|c| c.started.elapsed()).unwrap_or_default();
                let code = exit_code(&status);
                if stop_deadline.is_some() {
                    info!(?status, "dockerd stopped");
                    return if killed && code == 0 { 1 } else { code };
                }
                if config.once {
                    info!(?status, "the command exited");
                    return code;
                }
                if config.max_restarts.is_some_and(|max| restarts >= max) {
                    error!(?status, restarts, "dockerd exited; giving up after the configured restarts");
                    return code;
                }
                let delay = backoff.after_run(ran);
                restarts += 1;
                warn!(?status, restart_in_ms = delay.as_millis() as u64, restarts, "dockerd exited unexpectedly; restarting");
                restart_at = Some(Instant::now() + delay);
            }
            signal = signals.next() => {
                let Some(signal) = signal else { return 1 };
                match signal {
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
                match spawn(&config.command, config.once) {
                    Ok((c, e)) => {
                        metrics.dockerd_restarted();
                        child = Some(c);
                        exit = Some(e);
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

/// The signals `supervise` forwards, registered now (before dockerd exists,
/// so that none is missed).
pub fn signals() -> std::io::Result<signal_hook_tokio::Signals> {
    signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGQUIT])
}
