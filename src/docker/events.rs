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
use crate::backoff::Backoff;

/// How often a socket that does not exist yet is looked for.
const SOCKET_POLL: Duration = Duration::from_millis(100);
/// Reconnects to the API: 200 ms doubling to 10 s, with jitter; a
/// connection that lasted a minute starts the backoff over.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
const STABLE_CONNECTION: Duration = Duration::from_secs(60);

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
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX, STABLE_CONNECTION).with_jitter();
    let mut waiting_logged = false;
    loop {
        if !socket.exists() {
            if !waiting_logged {
                info!(socket = %socket.display(), "waiting for the Docker API socket");
                waiting_logged = true;
            }
            tokio::time::sleep(SOCKET_POLL).await;
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
        tokio::time::sleep(backoff.after_run(connected_at.elapsed())).await;
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
