//! `mtuvisor node`: one agent per node (a DaemonSet) that enforces in every
//! pod network namespace it finds, with no change to any pipeline.
//!
//! [`discovery`] (on a thread of its own) reports namespaces as they appear
//! and go. Each gets the same enforcement `watch` runs ([`crate::enforce`]),
//! with that namespace's own outer MTU as target and MSS rules that wait
//! for a Docker bridge: a pod without Docker costs two netlink sockets and
//! is never changed. Sockets are opened from a short-lived thread inside
//! the namespace and served by this process's one runtime thread, so
//! threads do not grow with pods. A namespace that goes away has its task,
//! sockets and file dropped at once (an open socket would keep it alive in
//! the kernel).
//!
//! Every pod is hostile: the node's namespace and every pod's are fenced
//! off from every enforcer's far-end changes (see `netlink::Fence`), names
//! become labels only as Kubernetes names, and whatever one pod makes the
//! agent do is bounded (`enforce`, `netlink`).

pub mod discovery;
pub mod grants;
mod tracker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::enforce::{self, PathProber, Retry, Setup};
use crate::metrics::{Metrics, NodeMetrics, Registry};
use crate::netlink::{Fence, NsFile, NsId, Quarantine};
use discovery::Found;

/// On the agent's clean stop, each enforcer gets this long to remove its
/// MSS rules.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// After pods go, the allocator's free memory is given back this much
/// later (once per burst of deletions).
const TRIM_AFTER: Duration = Duration::from_secs(1);
/// Namespaces discovery may report ahead of the loop.
const FOUND_QUEUE: usize = 64;

/// One pod namespace under enforcement.
struct Pod {
    label: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// Runs the agent until `shutdown` completes: discovery, an enforcer per
/// namespace, and a clean stop of each at the end.
pub async fn run(
    settings: Settings,
    registry: Arc<Registry>,
    node: Arc<NodeMetrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel(FOUND_QUEUE);
    let config = discovery::Config {
        dirs: settings.netns_dirs.clone(),
        include: settings.netns_include.clone(),
        proc_scan: settings.proc_scan,
        include_host: settings.include_host,
    };
    let mut discovering = discover(config, tx)?;
    let fence = Fence::default();
    fence.insert(discovery::own_netns()?);
    // One probe of the node's path for every pod.
    let prober = PathProber::new(
        settings.path_probe.clone(),
        settings.path_probe_interval,
        registry.path(),
    );
    grants::check(&registry, &node, &settings.netns_dirs);
    node.set_ready(true);
    info!(
        dirs = %settings.netns_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","),
        include = %settings.netns_include.join(","),
        proc_scan = ?settings.proc_scan,
        include_host = settings.include_host,
        "looking for pod network namespaces"
    );
    let mut pods: HashMap<NsId, Pod> = HashMap::new();
    let mut trim_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    let result = loop {
        let trim =
            trim_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = shutdown.as_mut() => break Ok(()),
            () = tokio::time::sleep_until(trim), if trim_at.is_some() => {
                trim_at = None;
                give_back_memory();
            }
            ended = &mut discovering => {
                break match ended {
                    Ok(result) => result,
                    Err(_) => Err(std::io::Error::other("the discovery thread died")),
                };
            }
            Some(found) = rx.recv() => match found {
                Found::Appeared { id, file, name, seen } => {
                    let label = unique_label(&name, id, &pods);
                    fence.insert(id);
                    let ns = NsFile { file, id, label };
                    let shared = Shared { settings: &settings, registry: &registry, node: &node, fence: &fence, prober: &prober };
                    let pod = start(shared, ns, seen);
                    pods.insert(id, pod);
                    node.set_watched(pods.len());
                }
                Found::Gone { id } => {
                    fence.remove(id);
                    if let Some(pod) = pods.remove(&id) {
                        // The namespace is gone: nothing to clean up in it,
                        // and everything that refers to it must go now.
                        pod.task.abort();
                        registry.remove(&pod.metrics);
                        info!(netns = %pod.label, "network namespace gone; stopped enforcing there");
                        trim_at.get_or_insert(tokio::time::Instant::now() + TRIM_AFTER);
                    }
                    node.set_watched(pods.len());
                }
            }
        }
    };
    node.set_ready(false);
    drop(rx);
    // A clean stop: each enforcer removes its MSS rules.
    for pod in pods.values() {
        let _ = pod.stop.send(true);
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    for (_, pod) in pods.drain() {
        if tokio::time::timeout_at(deadline, pod.task).await.is_err() {
            warn!(netns = %pod.label, "enforcement did not stop in time");
        }
    }
    result
}

/// Discovery on a thread of its own, at ordinary priority (it reads
/// directories and `/proc`, never on the clamping path); its end, with
/// its error, arrives on the returned channel.
fn discover(
    config: discovery::Config,
    tx: mpsc::Sender<Found>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("discovery".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| rt.block_on(discovery::run(config, tx)));
            let _ = done.send(result);
        })?;
    Ok(ended)
}

/// A name that can be a label value and a log field, and that no other
/// pod's series has: the Kubernetes name characters (a file in a netns
/// directory can be named anything), at most 128 of them, and the inode
/// appended when another namespace already has it.
fn unique_label(name: &str, id: NsId, pods: &HashMap<NsId, Pod>) -> String {
    let clean = crate::metrics::label_safe(name);
    if pods.values().any(|p| p.label == clean) {
        format!("{clean}-{}", id.ino)
    } else {
        clean
    }
}

/// What every pod's enforcer shares.
struct Shared<'a> {
    settings: &'a Settings,
    registry: &'a Arc<Registry>,
    node: &'a Arc<NodeMetrics>,
    fence: &'a Fence,
    prober: &'a Option<Arc<PathProber>>,
}

fn start(shared: Shared<'_>, ns: NsFile, seen: tokio::time::Instant) -> Pod {
    let Shared {
        settings,
        registry,
        node,
        fence,
        prober,
    } = shared;
    let label = ns.label.clone();
    let (ready, ready_rx) = watch::channel(false);
    let quarantine = Quarantine::new(&label);
    let metrics = registry.add(&[("netns", &label)], ready_rx.clone(), quarantine.clone());
    let (stop, mut stop_rx) = watch::channel(false);
    let ns = Arc::new(ns);
    let setup = Setup {
        docker_socket: None,
        metrics: metrics.clone(),
        ready,
        netns: Some(ns),
        mss_when_docker: true,
        fence: fence.clone(),
        quarantine,
        prober: prober.clone(),
        probe_ceiling: Some(settings.mtu_ceiling),
    };
    let (settings, node) = (settings.clone(), node.clone());
    // Every line the pod's enforcer logs ("set MTU", MSS rules, failures)
    // names the pod's namespace.
    let span = info_span!("pod", netns = %label);
    let task = tokio::spawn(
        async move {
            // A namespace is found as soon as its file exists, before the CNI
            // plugin has given it an eth0 and a default route: until then
            // there is no outer MTU, and preparing is tried again.
            let retry = Retry::Until(stop_rx.clone());
            let Ok(prepared) = enforce::prepare(settings, setup, retry).await else {
                return;
            };
            node.observe_discovery(seen.elapsed());
            info!(
                target_mtu = prepared.target(),
                "enforcing in a pod network namespace"
            );
            prepared
                .run(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        }
        .instrument(span),
    );
    Pod {
        label,
        stop,
        task,
        metrics,
    }
}

/// Returns the heap's free pages to the kernel. A node agent lives for
/// months while pods come and go by the thousand; without this, its
/// resident set would stay at its largest.
fn give_back_memory() {
    // SAFETY: malloc_trim only walks and shrinks glibc's own heap.
    #[cfg(target_env = "gnu")]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
