//! Prometheus metrics, served as text at `/metrics` on `metrics_addr`, with
//! `/healthz` for Kubernetes probes.
//!
//! A handful of counters and gauges that answer what an operator asks of
//! mtuvisor: what is the target, is it working, how much does it change,
//! how fast, and is anything failing. Each enforcer has a [`Metrics`]
//! handle that its loop alone writes (labelled, so that several can live in
//! one process); the server reads them all through the [`Registry`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::error::Error;
use crate::firewall::Family;

/// Upper bounds of the clamp-latency buckets, in microseconds.
const CLAMP_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// A histogram of durations as Prometheus shows one: cumulative buckets
/// (upper bounds in microseconds), a count and a sum. Written by one loop,
/// read by the server.
struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static [u64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if us <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name`, each with the
    /// rendered label pairs `labels` (may be empty).
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let le = format!("le=\"{}\"", *bound as f64 / 1e6);
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                braces(labels, &le),
                bucket.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "{name}_bucket{} {count}\n{name}_sum{} {sum}\n{name}_count{} {count}\n",
            braces(labels, "le=\"+Inf\""),
            braces(labels, ""),
            braces(labels, "")
        );
    }
}

/// `{labels}` with `extra` appended, or nothing when both are empty.
fn braces(labels: &str, extra: &str) -> String {
    match (labels.is_empty(), extra.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("{{{extra}}}"),
        (false, true) => format!("{{{labels}}}"),
        (false, false) => format!("{{{labels},{extra}}}"),
    }
}

/// A label value as the text exposition format requires it: backslash,
/// double quote and line feed escaped. Anything else may stay.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Longest name kept by [`label_safe`].
const MAX_LABEL_CHARS: usize = 128;

/// `name` as a Kubernetes name could be (letters, digits, `-`, `.`, `_`;
/// anything else `_`), at most 128 characters: what a pod's namespace is
/// called in labels and log fields, whatever its file was named.
pub fn label_safe(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "_".into()
    } else {
        clean
    }
}

/// A request must arrive whole within this, and the answer leave within
/// it, or the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, and from one address; more are closed at
/// once. Under `node` the port is on the node's IP, reachable by every
/// pod: one pod holding connections open must not keep the kubelet's
/// probes or Prometheus out.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_PEER: usize = 4;
const MAX_REQUEST_BYTES: usize = 8192;
/// After a failed accept (out of file descriptors): wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One enforcer's series. Written only by its enforcement loop (one
/// writer per fact), read by the server; several can live in one process,
/// each with labels of its own.
pub struct Metrics {
    /// Rendered label pairs, e.g. `netns="pod-a"`; empty for none.
    labels: String,
    target_mtu: AtomicU64,
    managed_links: AtomicU64,
    links_left_out: AtomicU64,
    mtu_changes: AtomicU64,
    mtu_change_failures: AtomicU64,
    sweeps: AtomicU64,
    netlink_overruns: AtomicU64,
    docker_resyncs: AtomicU64,
    dockerd_restarts: AtomicU64,
    clamp: Histogram<{ CLAMP_BUCKETS_US.len() }>,
    /// Bit per family the MSS rules cover (IPv4 1, IPv6 2).
    mss_families: AtomicU64,
    /// Per family: 1 while the rules are in place.
    mss_installed: [AtomicU64; 2],
    mss_ensure_failures: AtomicU64,
    /// A managed bridge exists in the enforcer's namespace (`node` counts
    /// the namespaces that have one).
    bridges_present: std::sync::atomic::AtomicBool,
    /// The enforcer's readiness, as its loop publishes it.
    ready: watch::Receiver<bool>,
}

fn family_index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

impl Metrics {
    fn new(labels: &[(&str, &str)], ready: watch::Receiver<bool>) -> Metrics {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        Metrics {
            labels,
            target_mtu: AtomicU64::new(0),
            managed_links: AtomicU64::new(0),
            links_left_out: AtomicU64::new(0),
            mtu_changes: AtomicU64::new(0),
            mtu_change_failures: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            netlink_overruns: AtomicU64::new(0),
            docker_resyncs: AtomicU64::new(0),
            dockerd_restarts: AtomicU64::new(0),
            clamp: Histogram::new(&CLAMP_BUCKETS_US),
            mss_families: AtomicU64::new(0),
            mss_installed: [const { AtomicU64::new(0) }; 2],
            mss_ensure_failures: AtomicU64::new(0),
            bridges_present: std::sync::atomic::AtomicBool::new(false),
            ready,
        }
    }

    pub fn set_bridges_present(&self, present: bool) {
        self.bridges_present.store(present, Relaxed);
    }

    pub fn set_target_mtu(&self, mtu: u32) {
        self.target_mtu.store(mtu.into(), Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// MTUs set and checks that failed, from one pass of the engine.
    pub fn add_changes(&self, changed: usize, failed: usize) {
        self.mtu_changes.fetch_add(changed as u64, Relaxed);
        self.mtu_change_failures.fetch_add(failed as u64, Relaxed);
    }

    pub fn swept(&self, managed: usize) {
        self.sweeps.fetch_add(1, Relaxed);
        self.managed_links.store(managed as u64, Relaxed);
    }

    /// Links past the per-namespace cap, not managed.
    pub fn set_links_left_out(&self, n: usize) {
        self.links_left_out.store(n as u64, Relaxed);
    }

    pub fn netlink_overrun(&self) {
        self.netlink_overruns.fetch_add(1, Relaxed);
    }

    pub fn docker_resynced(&self) {
        self.docker_resyncs.fetch_add(1, Relaxed);
    }

    pub fn dockerd_restarted(&self) {
        self.dockerd_restarts.fetch_add(1, Relaxed);
    }

    /// The families the MSS rules cover; the others get no series.
    pub fn set_mss_families(&self, families: &[Family]) {
        let mask = families.iter().fold(0, |m, f| m | (1 << family_index(*f)));
        self.mss_families.store(mask, Relaxed);
    }

    pub fn set_mss_installed(&self, family: Family, installed: bool) {
        self.mss_installed[family_index(family)].store(installed.into(), Relaxed);
    }

    pub fn mss_ensure_failed(&self) {
        self.mss_ensure_failures.fetch_add(1, Relaxed);
    }

    /// A new port clamped: from its notification to the last end set.
    pub fn observe_clamp(&self, took: Duration) {
        self.clamp.observe(took);
    }

    /// `{labels}` with `extra` appended, or nothing when both are empty.
    fn braces(&self, extra: &str) -> String {
        braces(&self.labels, extra)
    }
}

/// Every scalar series, one per line: name, type, help. Values come from
/// [`Metrics::scalar`].
const SCALARS: &str = "\
mtuvisor_target_mtu gauge MTU that managed links are kept at or below.
mtuvisor_ready gauge 1 once the first sweep is done and link notifications flow.
mtuvisor_managed_links gauge Managed links (bridges and ports) found by the last sweep.
mtuvisor_links_left_out gauge Links past the per-namespace limit (4096), neither followed nor managed.
mtuvisor_mtu_changes_total counter MTUs set on managed links, far ends in containers included.
mtuvisor_mtu_change_failures_total counter MTU checks or changes that failed (retried at the next sweep).
mtuvisor_sweeps_total counter Full passes over every managed link.
mtuvisor_netlink_overruns_total counter Times the kernel dropped link notifications (each followed by a sweep).
mtuvisor_docker_resyncs_total counter Times the Docker API was (re)connected and its networks listed.
mtuvisor_dockerd_restarts_total counter Times supervise restarted a dockerd that exited unexpectedly.
mtuvisor_mss_ensure_failures_total counter Times installing the MSS clamping rules failed (retried at the next reconcile).";

impl Metrics {
    /// The value of the scalar series `name` (a line of [`SCALARS`]).
    fn scalar(&self, name: &str) -> u64 {
        let counter = match name {
            "mtuvisor_ready" => return self.is_ready().into(),
            "mtuvisor_target_mtu" => &self.target_mtu,
            "mtuvisor_managed_links" => &self.managed_links,
            "mtuvisor_links_left_out" => &self.links_left_out,
            "mtuvisor_mtu_changes_total" => &self.mtu_changes,
            "mtuvisor_mtu_change_failures_total" => &self.mtu_change_failures,
            "mtuvisor_sweeps_total" => &self.sweeps,
            "mtuvisor_netlink_overruns_total" => &self.netlink_overruns,
            "mtuvisor_docker_resyncs_total" => &self.docker_resyncs,
            "mtuvisor_dockerd_restarts_total" => &self.dockerd_restarts,
            "mtuvisor_mss_ensure_failures_total" => &self.mss_ensure_failures,
            other => unreachable!("{other} is not in SCALARS"),
        };
        counter.load(Relaxed)
    }
}

/// Upper bounds of the discovery-latency buckets, in microseconds.
const DISCOVERY_BUCKETS_US: [u64; 9] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// The node agent's own series (`node`), written only by its loop.
pub struct NodeMetrics {
    ready: std::sync::atomic::AtomicBool,
    watched: AtomicU64,
    discovery: Histogram<{ DISCOVERY_BUCKETS_US.len() }>,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics {
            ready: std::sync::atomic::AtomicBool::new(false),
            watched: AtomicU64::new(0),
            discovery: Histogram::new(&DISCOVERY_BUCKETS_US),
        }
    }
}

impl NodeMetrics {
    /// Discovery runs (the agent is ready even with no pod yet).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn set_watched(&self, n: usize) {
        self.watched.store(n as u64, Relaxed);
    }

    /// From a namespace first seen to its enforcer's sockets open in it.
    pub fn observe_discovery(&self, took: Duration) {
        self.discovery.observe(took);
    }

    fn render(&self, enforcers: &[Arc<Metrics>], out: &mut String) {
        let enforcing = enforcers
            .iter()
            .filter(|m| m.bridges_present.load(Relaxed))
            .count();
        let name = "mtuvisor_node_namespaces";
        let _ = writeln!(
            out,
            "# HELP {name} Pod network namespaces the node agent watches, and those of them \
             with Docker bridges to enforce on.\n# TYPE {name} gauge\n\
             {name}{{state=\"watched\"}} {}\n{name}{{state=\"enforcing\"}} {enforcing}",
            self.watched.load(Relaxed)
        );
        let name = "mtuvisor_node_discovery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a network namespace first seen to its enforcer subscribed \
             in it.\n# TYPE {name} histogram"
        );
        self.discovery.render(name, "", out);
    }
}

/// Every enforcer's series in the process: what `/metrics` renders and
/// `/healthz` asks.
#[derive(Default)]
pub struct Registry {
    enforcers: Mutex<Vec<Arc<Metrics>>>,
    /// `node`: the agent's own series; its readiness is the process's.
    node: Option<Arc<NodeMetrics>>,
}

impl Registry {
    /// The node agent's registry: ready while discovery runs, whatever
    /// its pods' enforcers do.
    pub fn for_node(node: Arc<NodeMetrics>) -> Registry {
        Registry {
            enforcers: Mutex::new(Vec::new()),
            node: Some(node),
        }
    }

    /// Series for one more enforcer, labelled with `labels`, whose
    /// readiness is `ready`.
    pub fn add(&self, labels: &[(&str, &str)], ready: watch::Receiver<bool>) -> Arc<Metrics> {
        let m = Arc::new(Metrics::new(labels, ready));
        self.lock().push(m.clone());
        m
    }

    /// Drops an enforcer's series (its namespace is gone).
    pub fn remove(&self, metrics: &Arc<Metrics>) {
        self.lock().retain(|m| !Arc::ptr_eq(m, metrics));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Metrics>>> {
        self.enforcers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready when every enforcer is (and there is at least one).
    pub fn is_ready(&self) -> bool {
        if let Some(node) = &self.node {
            return node.ready.load(Relaxed);
        }
        let all = self.lock();
        !all.is_empty() && all.iter().all(|m| m.is_ready())
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let all = self.lock().clone();
        let mut out = String::new();
        for line in SCALARS.lines() {
            let mut parts = line.splitn(3, ' ');
            let (name, kind, help) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for m in &all {
                let _ = writeln!(out, "{name}{} {}", m.braces(""), m.scalar(name));
            }
        }
        let name = "mtuvisor_clamp_seconds";
        let _ = write!(
            out,
            "# HELP {name} From the notification of a new port on a managed bridge \
             to both of its ends clamped.\n# TYPE {name} histogram\n"
        );
        for m in &all {
            m.clamp.render(name, &m.labels, &mut out);
        }
        let name = "mtuvisor_mss_rules_installed";
        let covered: Vec<&Arc<Metrics>> = all
            .iter()
            .filter(|m| m.mss_families.load(Relaxed) != 0)
            .collect();
        if !covered.is_empty() {
            let _ = write!(
                out,
                "# HELP {name} 1 while the TCP MSS clamping rules are in place, per address family.\n\
                 # TYPE {name} gauge\n"
            );
        }
        for m in covered {
            let mask = m.mss_families.load(Relaxed);
            for family in FAMILIES {
                let i = family_index(family);
                if mask & (1 << i) != 0 {
                    let label = format!("family=\"{}\"", family.label());
                    let _ = writeln!(
                        out,
                        "{name}{} {}",
                        m.braces(&label),
                        m.mss_installed[i].load(Relaxed)
                    );
                }
            }
        }
        if let Some(node) = &self.node {
            node.render(&all, &mut out);
        }
        let _ = write!(
            out,
            "# HELP mtuvisor_build_info The running version.\n# TYPE mtuvisor_build_info gauge\n\
             mtuvisor_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Binds the metrics address before anything else is started, so that a
/// port in use is bad input that changes nothing.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            Error::BadInput(format!(
                "cannot listen on {addr} for metrics: {e}; \
                 pick a free port in metrics_addr / --metrics-addr, or set it to off"
            ))
        })?;
    Ok(listener)
}

/// The metrics server's thread: stops when dropped.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `/metrics` and `/healthz` from a thread of its own, with a
/// runtime of its own at ordinary priority: a scrape, a slow client or a
/// flood of connections never takes the enforcement thread's time.
pub fn spawn_server(
    listener: std::net::TcpListener,
    registry: Arc<Registry>,
) -> Result<Server, Error> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let startup = |e: std::io::Error| Error::Startup(format!("cannot serve metrics: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(startup)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    () = serve(listener, registry) => {}
                    _ = stopped => {}
                }
            })
        })
        .map_err(startup)?;
    Ok(Server { stop: Some(stop) })
}

async fn serve(listener: std::net::TcpListener, registry: Arc<Registry>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics at /metrics and health at /healthz");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Mutex::new(std::collections::HashMap::new()));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = PeerSlot::take(&peers, peer.ip()) else {
                    debug!(%peer, "too many metrics connections from this address; closed this one");
                    continue;
                };
                let Ok(total) = slots.clone().try_acquire_owned() else {
                    debug!(%peer, "too many metrics connections; closed this one");
                    continue;
                };
                let slot = (slot, total);
                let registry = registry.clone();
                tokio::spawn(async move {
                    let answered =
                        tokio::time::timeout(REQUEST_TIMEOUT * 2, answer(stream, &registry)).await;
                    match answered {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => debug!(%peer, error = %e, "metrics request failed"),
                        Err(_) => debug!(%peer, "metrics request too slow; dropped"),
                    }
                    drop(slot);
                });
            }
            // Out of file descriptors and the like: back off a little.
            Err(e) => {
                debug!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One connection's place among those of its address; given back on drop.
struct PeerSlot {
    peers: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(
        peers: &Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<PeerSlot> {
        let mut all = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = all.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut all = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                all.remove(&self.ip);
            }
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"))??;
    let (status, content_type, body) = route(&head, registry);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let send = async {
        stream.write_all(response.as_bytes()).await?;
        if !head.starts_with("HEAD ") {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, send)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not read"))?
}

/// The request line and headers, up to the blank line.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// (status, content type, body) for a request head.
fn route(head: &str, registry: &Registry) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        ),
        "/healthz" if registry.is_ready() => ("200 OK", TEXT, "ok\n".into()),
        "/healthz" => (
            "503 Service Unavailable",
            TEXT,
            "not ready: the first sweep has not finished\n".into(),
        ),
        _ => ("404 Not Found", TEXT, "try /metrics or /healthz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with one unlabelled enforcer (as `watch` and `supervise`
    /// have), its readiness sender, and its handle.
    fn one() -> (Registry, watch::Sender<bool>, Arc<Metrics>) {
        let r = Registry::default();
        let (tx, rx) = watch::channel(false);
        let m = r.add(&[], rx);
        (r, tx, m)
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let (r, _tx, m) = one();
        m.observe_clamp(Duration::from_micros(300));
        m.observe_clamp(Duration::from_millis(30));
        m.observe_clamp(Duration::from_secs(2));
        let text = r.render();
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_count 3\n"));
        assert!(text.contains("mtuvisor_clamp_seconds_sum 2.0303\n"));
    }

    #[test]
    fn the_node_agents_histogram_renders_like_the_clamp_one() {
        let node = Arc::new(NodeMetrics::default());
        let r = Registry::for_node(node.clone());
        let (_tx, ready) = watch::channel(true);
        let pod = r.add(&[("netns", "cni-1")], ready);
        node.observe_discovery(Duration::from_millis(3));
        node.observe_discovery(Duration::from_millis(40));
        pod.observe_clamp(Duration::from_micros(300));
        let text = r.render();
        let name = "mtuvisor_node_discovery_seconds";
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.0025\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"0.05\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_sum 0.043\n{name}_count 2\n")),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_clamp_seconds_bucket{netns=\"cni-1\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_clamp_seconds_count{netns=\"cni-1\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_sample_has_help_and_type() {
        let (r, _tx, _m) = one();
        let text = r.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE line"
            );
        }
    }

    #[test]
    fn mss_series_per_covered_family() {
        let (r, _tx, m) = one();
        assert!(!r.render().contains("mtuvisor_mss_rules_installed"));
        assert!(r
            .render()
            .contains("mtuvisor_mss_ensure_failures_total 0\n"));
        m.set_mss_families(&[Family::Ipv4]);
        m.set_mss_installed(Family::Ipv4, true);
        m.mss_ensure_failed();
        let text = r.render();
        assert!(text.contains("mtuvisor_mss_rules_installed{family=\"ipv4\"} 1\n"));
        assert!(!text.contains("family=\"ipv6\""));
        assert!(text.contains("mtuvisor_mss_ensure_failures_total 1\n"));
    }

    #[test]
    fn several_enforcers_have_labelled_series_and_one_readiness() {
        let r = Registry::default();
        let (tx_a, rx_a) = watch::channel(false);
        let (tx_b, rx_b) = watch::channel(false);
        let a = r.add(&[("netns", "pod-a")], rx_a);
        let b = r.add(&[("netns", "pod-b")], rx_b);
        a.set_target_mtu(1450);
        b.set_target_mtu(1400);
        b.set_mss_families(&[Family::Ipv4]);
        let text = r.render();
        assert!(
            text.contains("mtuvisor_target_mtu{netns=\"pod-a\"} 1450\n"),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_target_mtu{netns=\"pod-b\"} 1400\n"),
            "{text}"
        );
        assert!(text.contains("mtuvisor_clamp_seconds_bucket{netns=\"pod-a\",le=\"+Inf\"} 0\n"));
        assert!(text.contains("mtuvisor_mss_rules_installed{netns=\"pod-b\",family=\"ipv4\"} 0\n"));
        assert_eq!(text.matches("# TYPE mtuvisor_target_mtu ").count(), 1);
        assert!(!r.is_ready());
        tx_a.send_replace(true);
        assert!(!r.is_ready(), "every enforcer must be ready");
        tx_b.send_replace(true);
        assert!(r.is_ready());
        assert_eq!(route("GET /healthz HTTP/1.1\r\n", &r).0, "200 OK");
        r.remove(&b);
        assert!(!r.render().contains("pod-b"));
    }

    #[test]
    fn a_name_cannot_break_the_exposition_format() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(label_safe("cni-0f3e.a_b"), "cni-0f3e.a_b");
        assert_eq!(label_safe("pod\nmtuvisor_ready 1"), "pod_mtuvisor_ready_1");
        assert_eq!(label_safe(""), "_");
        assert_eq!(label_safe(&"x".repeat(300)).len(), 128);
        let r = Registry::default();
        let (_tx, rx) = watch::channel(true);
        r.add(&[("netns", "evil\"}\nmtuvisor_ready 1\n#")], rx);
        let text = r.render();
        let ready: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mtuvisor_ready"))
            .collect();
        assert_eq!(ready.len(), 1, "no line injected: {text}");
        assert!(ready[0].starts_with("mtuvisor_ready{netns="), "{text}");
        assert!(
            text.contains(r#"netns="evil\"}\nmtuvisor_ready 1\n#""#),
            "{text}"
        );
    }

    #[test]
    fn routes() {
        let (r, _tx, _m) = one();
        assert_eq!(route("GET /metrics HTTP/1.1\r\n", &r).0, "200 OK");
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n", &r).0, "200 OK");
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n", &r).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route("GET / HTTP/1.1\r\n", &r).0, "404 Not Found");
        assert_eq!(route("", &r).0, "405 Method Not Allowed");
        assert_eq!(
            route("GET /healthz HTTP/1.1\r\n", &r).0,
            "503 Service Unavailable"
        );
    }
}
