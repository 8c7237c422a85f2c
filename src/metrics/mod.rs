//! Prometheus metrics, served as text at `/metrics` on `metrics_addr`, with
//! `/healthz` for Kubernetes probes.
//!
//! A handful of counters and gauges that answer what an operator asks of
//! mtuvisor: what is the target, is it working, how much does it change,
//! how fast, and is anything failing. Each enforcer has a [`Metrics`]
//! handle that its loop alone writes (labelled, so that several can live in
//! one process); the server reads them all through the [`Registry`].

mod histogram;
mod http;
mod render;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::caps::Grant;
use crate::detect::Origin;
use crate::firewall::Family;
use crate::netlink::Quarantine;
use histogram::{Histogram, CLAMP_BUCKETS_US, DISCOVERY_BUCKETS_US, STAGE_BUCKETS_US};

pub use http::{bind, spawn_server, Listeners, MetricsError, Server};

/// `liveness_timeout`'s default, until the settings say otherwise.
const DEFAULT_LIVENESS: Duration = Duration::from_secs(30);
pub use render::{escape_label_value, label_safe};

/// One enforcer's series. Written only by its enforcement loop (one
/// writer per fact), read by the server; several can live in one process,
/// each with labels of its own.
pub struct Metrics {
    /// Rendered label pairs, e.g. `netns="pod-a"`; empty for none.
    labels: String,
    target_mtu: AtomicU64,
    /// What decided the target: its index in [`Origin::ALL`].
    target_source: AtomicU64,
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
    netlink_undecodable: AtomicU64,
    netlink_not_from_kernel: AtomicU64,
    /// A managed bridge exists in the enforcer's namespace (`node` counts
    /// the namespaces that have one).
    bridges_present: std::sync::atomic::AtomicBool,
    /// The enforcer's readiness, as its loop publishes it.
    ready: watch::Receiver<bool>,
    /// Its namespace's quarantine (written where its work times out):
    /// not ready while it lasts.
    quarantine: Quarantine,
}

fn family_index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

impl Metrics {
    fn new(
        labels: &[(&str, &str)],
        ready: watch::Receiver<bool>,
        quarantine: Quarantine,
    ) -> Metrics {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        Metrics {
            labels,
            target_mtu: AtomicU64::new(0),
            target_source: AtomicU64::new(0),
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
            netlink_undecodable: AtomicU64::new(0),
            netlink_not_from_kernel: AtomicU64::new(0),
            bridges_present: std::sync::atomic::AtomicBool::new(false),
            ready,
            quarantine,
        }
    }

    pub fn set_bridges_present(&self, present: bool) {
        self.bridges_present.store(present, Relaxed);
    }

    /// The target and what decided it.
    pub fn set_target(&self, mtu: u32, origin: Origin) {
        self.target_mtu.store(mtu.into(), Relaxed);
        let index = Origin::ALL.iter().position(|o| *o == origin).unwrap_or(0);
        self.target_source.store(index as u64, Relaxed);
    }

    /// Its first sweep done, notifications flowing, and its namespace not
    /// quarantined.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow() && !self.quarantine.is_active()
    }

    /// Why it is not ready, for a person; `None` when it is.
    fn unready(&self) -> Option<String> {
        if self.quarantine.is_active() {
            return Some(format!(
                "enforcement in network namespace {} is stuck (its requests did not end \
                 in time; see the log)",
                self.quarantine.label()
            ));
        }
        (!*self.ready.borrow()).then(|| "the first sweep has not finished".into())
    }

    /// Messages the kernel sent that could not be decoded (each an error
    /// for the object it was about).
    pub fn netlink_undecodable(&self, n: usize) {
        self.netlink_undecodable.fetch_add(n as u64, Relaxed);
    }

    /// A notification datagram another process sent, dropped unread.
    pub fn netlink_not_from_kernel(&self) {
        self.netlink_not_from_kernel.fetch_add(1, Relaxed);
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
}

/// The stages a clamp's time is split into (`ClampStages::split`), in
/// order: waiting in the loop after the socket read, deciding, waiting
/// for a socket and worker, the kernel (RTNL), the loop taking the answer.
pub const CLAMP_STAGES: [&str; 5] = ["loop", "decide", "queue", "kernel", "wake"];

/// `mtuvisor_clamp_stage_seconds`: the process's, one series per stage
/// (not per pod: a node's pods share the workers and the kernel lock the
/// stages measure).
static STAGES: [Histogram<{ STAGE_BUCKETS_US.len() }>; 5] =
    [const { Histogram::new(&STAGE_BUCKETS_US) }; 5];

fn render_clamp_stages(name: &str, out: &mut String) {
    for (stage, h) in CLAMP_STAGES.iter().zip(&STAGES) {
        h.render(name, &format!("stage=\"{stage}\""), out);
    }
}

/// One clamp's stages, by name (see [`CLAMP_STAGES`]).
pub fn observe_clamp_stages(split: &[(&str, Duration)]) {
    for (name, took) in split {
        if let Some(i) = CLAMP_STAGES.iter().position(|s| s == name) {
            STAGES[i].observe(*took);
        }
    }
}

impl Metrics {
    /// `{labels}` with `extra` appended, or nothing when both are empty.
    fn braces(&self, extra: &str) -> String {
        render::braces(&self.labels, extra)
    }
}

/// The node agent's own series (`node`), written only by its loop.
pub struct NodeMetrics {
    ready: std::sync::atomic::AtomicBool,
    /// Namespace directories mounted without propagation.
    private_mounts: Mutex<Vec<String>>,
    watched: AtomicU64,
    discovery: Histogram<{ DISCOVERY_BUCKETS_US.len() }>,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics {
            ready: std::sync::atomic::AtomicBool::new(false),
            private_mounts: Mutex::new(Vec::new()),
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

    /// Namespace directories mounted without propagation (new pods unseen).
    pub fn set_private_mounts(&self, dirs: Vec<String>) {
        *lock(&self.private_mounts) = dirs;
    }

    /// Why the agent cannot do its job, if it cannot: discovery does not
    /// run, or new pods' namespace files cannot reach it.
    pub fn unready(&self) -> Option<String> {
        if !self.ready.load(Relaxed) {
            return Some("pod discovery is not running".into());
        }
        let why: Vec<String> = lock(&self.private_mounts)
            .iter()
            .map(|dir| {
                format!(
                    "{dir} is mounted without propagation: pods made after the agent started \
                     are not seen; mount it with mountPropagation: HostToContainer"
                )
            })
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }

    pub fn set_watched(&self, n: usize) {
        self.watched.store(n as u64, Relaxed);
    }

    /// From a namespace first seen to its enforcer's sockets open in it.
    pub fn observe_discovery(&self, took: Duration) {
        self.discovery.observe(took);
    }
}

/// The path probe's series (`path_probe`), written only by the prober's
/// group loops: per target and per MTU a group is bounded by, the path
/// measured last; per target, the probes that could not measure it.
#[derive(Default)]
pub struct PathMetrics {
    /// (target, ceiling) -> path MTU, 0 while it cannot be measured.
    path_mtu: Mutex<std::collections::BTreeMap<(String, u32), u64>>,
    /// target -> failed probes.
    failures: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl PathMetrics {
    /// One probe of `target` in the group bounded by `ceiling`.
    pub fn probed(&self, target: &str, ceiling: u32, path_mtu: Option<u32>) {
        lock(&self.path_mtu).insert((target.to_string(), ceiling), path_mtu.unwrap_or(0).into());
        let mut failures = lock(&self.failures);
        let count = failures.entry(target.to_string()).or_default();
        if path_mtu.is_none() {
            *count += 1;
        }
    }

    /// The group bounded by `ceiling` ended (no enforcer left behind it).
    pub fn group_ended(&self, ceiling: u32) {
        lock(&self.path_mtu).retain(|(_, c), _| *c != ceiling);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every enforcer's series in the process: what `/metrics` renders and
/// `/healthz` asks.
pub struct Registry {
    enforcers: Mutex<Vec<Arc<Metrics>>>,
    /// `node`: the agent's own series; its readiness is the process's.
    node: Option<Arc<NodeMetrics>>,
    /// The path probe's series.
    path: Arc<PathMetrics>,
    /// The capabilities the mode checked at start, each with whether it
    /// is missing.
    grants: Mutex<Vec<(&'static Grant, bool)>>,
    /// How long a part may make no progress while work waits before
    /// `/livez` fails (`liveness_timeout`).
    liveness: Mutex<Duration>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            enforcers: Mutex::new(Vec::new()),
            node: None,
            path: Arc::default(),
            grants: Mutex::new(Vec::new()),
            liveness: Mutex::new(DEFAULT_LIVENESS),
        }
    }
}

impl Registry {
    /// The node agent's registry: ready while discovery runs, whatever
    /// its pods' enforcers do.
    pub fn for_node(node: Arc<NodeMetrics>) -> Registry {
        Registry {
            node: Some(node),
            ..Registry::default()
        }
    }

    /// How long a part may make no progress while work waits.
    pub fn set_liveness_timeout(&self, timeout: Duration) {
        *lock(&self.liveness) = timeout;
    }

    fn liveness(&self) -> Duration {
        *lock(&self.liveness)
    }

    /// Where the path prober writes.
    pub fn path(&self) -> Arc<PathMetrics> {
        self.path.clone()
    }

    /// Series for one more enforcer, labelled with `labels`, whose
    /// readiness is `ready`.
    pub fn add(
        &self,
        labels: &[(&str, &str)],
        ready: watch::Receiver<bool>,
        quarantine: Quarantine,
    ) -> Arc<Metrics> {
        let m = Arc::new(Metrics::new(labels, ready, quarantine));
        self.lock().push(m.clone());
        m
    }

    /// Drops an enforcer's series (its namespace is gone).
    pub fn remove(&self, metrics: &Arc<Metrics>) {
        self.lock().retain(|m| !Arc::ptr_eq(m, metrics));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Metrics>>> {
        lock(&self.enforcers)
    }

    /// Ready when every enforcer is (and there is at least one); the node
    /// agent when it can enforce in its pods.
    pub fn is_ready(&self) -> bool {
        self.unready().is_none()
    }

    /// The grants checked at start (`all`), of which `missing` are not
    /// held: a required one missing makes the process not ready.
    pub fn set_grants(&self, all: &'static [Grant], missing: &[&'static Grant]) {
        *lock(&self.grants) = all
            .iter()
            .map(|g| (g, missing.iter().any(|m| std::ptr::eq(*m, g))))
            .collect();
    }

    /// Why `/healthz` is not ready, for a person; `None` when it is: a
    /// required grant is missing, or (node) discovery does not run or
    /// cannot see new pods, or (one enforcer) its first sweep is not done.
    pub fn unready(&self) -> Option<String> {
        let mut why: Vec<String> = Vec::new();
        let missing: Vec<String> = lock(&self.grants)
            .iter()
            .filter(|(g, missing)| *missing && g.required)
            .map(|(g, _)| format!("missing CAP_{}: {}", g.name, g.without))
            .collect();
        if !missing.is_empty() {
            why.push(format!(
                "{}; add it to the container's securityContext.capabilities.add",
                missing.join("; ")
            ));
        }
        let all = self.lock();
        if let Some(node) = &self.node {
            why.extend(node.unready());
            // A pod whose enforcer has not started yet (no default route
            // yet) is normal; one whose work is stuck is not.
            why.extend(
                all.iter()
                    .filter(|m| m.quarantine.is_active())
                    .filter_map(|m| m.unready()),
            );
        } else if all.is_empty() {
            why.push("the first sweep has not finished".into());
        } else {
            why.extend(all.iter().filter_map(|m| m.unready()));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// Alive (`/livez`): the node agent's discovery runs, and the
    /// enforcement loop, the MTU setter's workers and discovery all make
    /// progress while work waits for them, whatever the agent lacks (a
    /// restart would not grant it).
    pub fn is_alive(&self) -> bool {
        self.dead().is_none()
    }

    /// Why `/livez` fails, for a person; `None` while alive.
    pub fn dead(&self) -> Option<String> {
        if self
            .node
            .as_ref()
            .is_some_and(|node| !node.ready.load(Relaxed))
        {
            return Some("pod discovery stopped".into());
        }
        let stuck = crate::health::stuck(self.liveness());
        (!stuck.is_empty()).then(|| {
            stuck
                .iter()
                .map(|(part, late)| {
                    format!(
                        "{part} has made no progress for {}s while work waits",
                        late.as_secs()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        render::registry(self)
    }
}

#[cfg(test)]
mod tests {
    use super::http::route;
    use super::*;

    /// A registry with one unlabelled enforcer (as `watch` and `supervise`
    /// have), its readiness sender, and its handle.
    fn one() -> (Registry, watch::Sender<bool>, Arc<Metrics>) {
        let r = Registry::default();
        let (tx, rx) = watch::channel(false);
        let m = r.add(&[], rx, Quarantine::new("t"));
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
        let pod = r.add(&[("netns", "cni-1")], ready, Quarantine::new("t"));
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
    fn path_series_per_target_and_group_and_gone_with_the_group() {
        let r = Registry::default();
        assert!(
            !r.render().contains("mtuvisor_path_mtu"),
            "no probe, no series"
        );
        let path = r.path();
        path.probed("registry.example:443", 1500, Some(1400));
        path.probed("[2001:db8::1]:443", 1500, None);
        path.probed("[2001:db8::1]:443", 1500, None);
        let text = r.render();
        assert!(text.contains(
            "mtuvisor_path_mtu{path_target=\"registry.example:443\",ceiling=\"1500\"} 1400\n"
        ));
        assert!(text
            .contains("mtuvisor_path_mtu{path_target=\"[2001:db8::1]:443\",ceiling=\"1500\"} 0\n"));
        assert!(text
            .contains("mtuvisor_path_probe_failures_total{path_target=\"[2001:db8::1]:443\"} 2\n"));
        assert!(text.contains(
            "mtuvisor_path_probe_failures_total{path_target=\"registry.example:443\"} 0\n"
        ));
        path.group_ended(1500);
        let text = r.render();
        assert!(!text.contains("mtuvisor_path_mtu{"), "{text}");
        assert!(text
            .contains("mtuvisor_path_probe_failures_total{path_target=\"[2001:db8::1]:443\"} 2\n"));
    }

    #[test]
    fn a_pod_whose_work_timed_out_is_not_ready_and_the_agent_says_which() {
        let node = Arc::new(NodeMetrics::default());
        node.set_ready(true);
        let r = Registry::for_node(node);
        let (_tx, rx) = watch::channel(true);
        let stuck = Quarantine::new("cni-evil");
        let pod = r.add(&[("netns", "cni-evil")], rx.clone(), stuck.clone());
        let _fine = r.add(&[("netns", "cni-fine")], rx, Quarantine::new("cni-fine"));
        assert!(r.is_ready());
        stuck.record(&Err::<(), _>(crate::netlink::NetlinkError::TimedOut {
            op: "listing links".into(),
            after: Duration::from_secs(5),
        }));
        assert!(!pod.is_ready());
        let (status, _, body) = route("GET /healthz HTTP/1.1\r\n", &r);
        assert_eq!(status, "503 Service Unavailable");
        assert!(
            body.contains("cni-evil") && !body.contains("cni-fine"),
            "{body}"
        );
        let text = r.render();
        assert!(
            text.contains("mtuvisor_ready{netns=\"cni-evil\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_ready{netns=\"cni-fine\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_netns_quarantined{netns=\"cni-evil\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mtuvisor_netns_timeouts_total{netns=\"cni-evil\"} 1\n"),
            "{text}"
        );
        // Alive all the same: one pod's stuck work is that pod's.
        assert_eq!(route("GET /livez HTTP/1.1\r\n", &r).0, "200 OK");
        stuck.record(&Ok::<(), crate::netlink::NetlinkError>(()));
        assert!(r.is_ready());
    }

    #[test]
    fn several_enforcers_have_labelled_series_and_one_readiness() {
        let r = Registry::default();
        let (tx_a, rx_a) = watch::channel(false);
        let (tx_b, rx_b) = watch::channel(false);
        let a = r.add(&[("netns", "pod-a")], rx_a, Quarantine::new("t"));
        let b = r.add(&[("netns", "pod-b")], rx_b, Quarantine::new("t"));
        a.set_target(1450, Origin::Link);
        b.set_target(1400, Origin::Probe);
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
        assert!(text.contains("mtuvisor_target_source{netns=\"pod-a\",source=\"link\"} 1\n"));
        assert!(text.contains("mtuvisor_target_source{netns=\"pod-a\",source=\"probe\"} 0\n"));
        assert!(text.contains("mtuvisor_target_source{netns=\"pod-b\",source=\"probe\"} 1\n"));
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
        r.add(
            &[("netns", "evil\"}\nmtuvisor_ready 1\n#")],
            rx,
            Quarantine::new("t"),
        );
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
        assert_eq!(
            route("GET /livez HTTP/1.1\r\n", &r).0,
            "200 OK",
            "alive before its first sweep"
        );
    }

    #[test]
    fn the_agent_is_alive_while_discovery_runs_whatever_it_lacks() {
        let node = Arc::new(NodeMetrics::default());
        let r = Registry::for_node(node.clone());
        assert_eq!(
            route("GET /livez HTTP/1.1\r\n", &r).0,
            "503 Service Unavailable"
        );
        node.set_ready(true);
        node.set_private_mounts(vec!["/run/netns".into()]);
        assert_eq!(route("GET /livez HTTP/1.1\r\n", &r).0, "200 OK");
        let (status, _, body) = route("GET /healthz HTTP/1.1\r\n", &r);
        assert_eq!(status, "503 Service Unavailable");
        assert!(
            body.contains("/run/netns") && body.contains("HostToContainer"),
            "{body}"
        );
    }

    #[test]
    fn a_missing_required_grant_makes_one_enforcer_unready_and_is_a_series() {
        let (r, tx, _m) = one();
        tx.send(true).unwrap();
        let pod = &crate::caps::POD_GRANTS;
        let grant = |name| pod.iter().find(|g| g.name == name).unwrap();
        r.set_grants(pod, &[grant("SYS_PTRACE")]);
        assert_eq!(r.unready(), None, "SYS_PTRACE only degrades");
        let text = r.render();
        assert!(
            text.contains(
                "mtuvisor_missing_capability{capability=\"SYS_PTRACE\",required=\"false\"} 1\n"
            ) && text.contains(
                "mtuvisor_missing_capability{capability=\"NET_ADMIN\",required=\"true\"} 0\n"
            ),
            "{text}"
        );
        r.set_grants(pod, &[grant("NET_ADMIN")]);
        let (status, _, body) = route("GET /healthz HTTP/1.1\r\n", &r);
        assert_eq!(status, "503 Service Unavailable");
        assert!(
            body.contains("missing CAP_NET_ADMIN") && body.contains("capabilities.add"),
            "{body}"
        );
        assert_eq!(route("GET /livez HTTP/1.1\r\n", &r).0, "200 OK");
    }
}
