//! The Docker side of enforcement: an event reader that only forwards, and
//! a worker that asks the API what the events mean.
//!
//! dockerd drops events for a subscriber that does not read within 100 ms,
//! so the reader never waits on anything but the next event. Watch streams
//! are lossy: after every (re)connect everything is listed again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::api::{bridge_names, connect, DockerError};

/// What the engine learns from Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerUpdate {
    /// (Re)connected and listed: time for a full sweep.
    Resynced,
    /// The Linux bridge of every Docker bridge network.
    Bridges(HashSet<String>),
    /// A started or connected container's network namespace.
    Sandbox { container: String, netns: PathBuf },
}

/// What the reader hands the worker.
enum Work {
    Resync(Docker),
    Networks,
    Container(String),
}

/// Follows the Docker API at `socket` for as long as the returned task
/// lives, sending what it learns to `updates`. A socket that does not exist
/// yet is waited for; a dockerd that restarts is reconnected to.
pub fn follow(
    socket: PathBuf,
    updates: mpsc::UnboundedSender<DockerUpdate>,
) -> tokio::task::JoinHandle<()> {
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    tokio::spawn(worker(work_rx, updates));
    tokio::spawn(read_events(socket, work_tx))
}

async fn read_events(socket: PathBuf, work: mpsc::UnboundedSender<Work>) {
    let mut backoff = Backoff::with_jitter(Duration::from_millis(200), Duration::from_secs(10));
    let mut waiting_logged = false;
    loop {
        if !socket.exists() {
            if !waiting_logged {
                info!(socket = %socket.display(), "waiting for the Docker API socket");
                waiting_logged = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let docker = match connect(&socket).await {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "Docker API not answering yet");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let mut filters = HashMap::new();
        filters.insert("type", vec!["network", "container"]);
        filters.insert("event", vec!["create", "destroy", "connect", "start"]);
        // Subscribe first, then list: nothing that happens in between is lost.
        let mut events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
        info!(socket = %socket.display(), "connected to the Docker API");
        waiting_logged = false;
        if work.send(Work::Resync(docker.clone())).is_err() {
            return;
        }
        let connected_at = tokio::time::Instant::now();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "Docker event stream failed");
                    break;
                }
            };
            let action = event.action.as_deref().unwrap_or("");
            let actor = event.actor.as_ref();
            let forwarded = match (event.typ.map(|t| t.to_string()).as_deref(), action) {
                (Some("network"), "create" | "destroy") => work.send(Work::Networks),
                (Some("network"), "connect") => {
                    let container = actor
                        .and_then(|a| a.attributes.as_ref())
                        .and_then(|attrs| attrs.get("container"))
                        .cloned();
                    match container {
                        Some(id) => work.send(Work::Container(id)),
                        None => Ok(()),
                    }
                }
                (Some("container"), "start") => match actor.and_then(|a| a.id.clone()) {
                    Some(id) => work.send(Work::Container(id)),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if forwarded.is_err() {
                return;
            }
        }
        info!("Docker event stream ended (dockerd restarted?); reconnecting");
        if connected_at.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn worker(
    mut work: mpsc::UnboundedReceiver<Work>,
    updates: mpsc::UnboundedSender<DockerUpdate>,
) {
    let mut docker: Option<Docker> = None;
    while let Some(item) = work.recv().await {
        let result = match item {
            Work::Resync(d) => {
                docker = Some(d.clone());
                resync(&d, &updates).await
            }
            Work::Networks => match &docker {
                Some(d) => list_bridges(d, &updates).await,
                None => Ok(()),
            },
            Work::Container(id) => match &docker {
                Some(d) => sandbox(d, &id, &updates).await,
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {}
            Err(DockerError::Closed) => return,
            Err(e) => {
                warn!(error = %e, "Docker API request failed; the next event or sweep will retry")
            }
        }
    }
}

async fn resync(
    docker: &Docker,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
) -> Result<(), DockerError> {
    list_bridges(docker, updates).await?;
    let running = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
        .await
        .map_err(|e| DockerError::api("listing containers", e))?;
    for c in running {
        if let Some(id) = c.id {
            sandbox(docker, &id, updates).await?;
        }
    }
    updates
        .send(DockerUpdate::Resynced)
        .map_err(|_| DockerError::Closed)
}

async fn list_bridges(
    docker: &Docker,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
) -> Result<(), DockerError> {
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| DockerError::api("listing networks", e))?;
    updates
        .send(DockerUpdate::Bridges(bridge_names(&networks)))
        .map_err(|_| DockerError::Closed)
}

async fn sandbox(
    docker: &Docker,
    id: &str,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
) -> Result<(), DockerError> {
    let info = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info,
        // Gone already (a --rm container that exited): nothing to check.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(()),
        Err(e) => return Err(DockerError::api(&format!("inspecting container {id}"), e)),
    };
    let key = info
        .network_settings
        .as_ref()
        .and_then(|n| n.sandbox_key.clone())
        .filter(|k| !k.is_empty() && Path::new(k).exists());
    let pid = info.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0);
    let netns = match (key, pid) {
        (Some(key), _) => PathBuf::from(key),
        (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        (None, None) => return Ok(()),
    };
    updates
        .send(DockerUpdate::Sandbox {
            container: id.chars().take(12).collect(),
            netns,
        })
        .map_err(|_| DockerError::Closed)
}

/// Exponential backoff, optionally with jitter (±25 %) so that many
/// sidecars do not reconnect to a restarted dockerd in lockstep.
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
            jitter: false,
        }
    }

    pub fn with_jitter(first: Duration, max: Duration) -> Backoff {
        Backoff {
            jitter: true,
            ..Backoff::new(first, max)
        }
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return base;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = (nanos % 500) as f64 / 1000.0 - 0.25;
        base.mul_f64(1.0 + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut b = Backoff::with_jitter(Duration::from_secs(4), Duration::from_secs(4));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}
