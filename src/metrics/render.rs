//! The text exposition format (version 0.0.4): one typed table of the
//! scalar series, the histograms, the per-family MSS gauges, the node
//! agent's own series, and label values made safe for it.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{family_index, lock, Metrics, NodeMetrics, PathMetrics, Registry, FAMILIES};
use crate::detect::Origin;

/// `{labels}` with `extra` appended, or nothing when both are empty.
pub(super) fn braces(labels: &str, extra: &str) -> String {
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

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One scalar series of every enforcer: its name, kind, help, and where
/// its value is read.
struct Scalar {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&Metrics) -> u64,
}

const SCALARS: &[Scalar] = &[
    Scalar {
        name: "mtuvisor_target_mtu",
        kind: Kind::Gauge,
        help: "MTU that managed links are kept at or below.",
        value: |m| m.target_mtu.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_ready",
        kind: Kind::Gauge,
        help: "1 once the first sweep is done and link notifications flow.",
        value: |m| m.is_ready().into(),
    },
    Scalar {
        name: "mtuvisor_managed_links",
        kind: Kind::Gauge,
        help: "Managed links (bridges and ports) found by the last sweep.",
        value: |m| m.managed_links.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_links_left_out",
        kind: Kind::Gauge,
        help: "Links past the per-namespace limit (4096), neither followed nor managed.",
        value: |m| m.links_left_out.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_mtu_changes_total",
        kind: Kind::Counter,
        help: "MTUs set on managed links, far ends in containers included.",
        value: |m| m.mtu_changes.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_mtu_change_failures_total",
        kind: Kind::Counter,
        help: "MTU checks or changes that failed (retried at the next sweep).",
        value: |m| m.mtu_change_failures.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_sweeps_total",
        kind: Kind::Counter,
        help: "Full passes over every managed link.",
        value: |m| m.sweeps.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_netlink_overruns_total",
        kind: Kind::Counter,
        help: "Times the kernel dropped link notifications (each followed by a sweep).",
        value: |m| m.netlink_overruns.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_docker_resyncs_total",
        kind: Kind::Counter,
        help: "Times the Docker API was (re)connected and its networks listed.",
        value: |m| m.docker_resyncs.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_dockerd_restarts_total",
        kind: Kind::Counter,
        help: "Times supervise restarted a dockerd that exited unexpectedly.",
        value: |m| m.dockerd_restarts.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_netns_timeouts_total",
        kind: Kind::Counter,
        help: "Work in the enforcer's namespace that did not end within its deadline \
               (each quarantines the namespace for a while).",
        value: |m| m.quarantine.timeouts(),
    },
    Scalar {
        name: "mtuvisor_netns_quarantined",
        kind: Kind::Gauge,
        help:
            "1 while the enforcer's namespace is left alone after work there did not end in time.",
        value: |m| m.quarantine.is_active().into(),
    },
    Scalar {
        name: "mtuvisor_netlink_undecodable_total",
        kind: Kind::Counter,
        help: "Kernel messages that could not be decoded, each about one link left alone.",
        value: |m| m.netlink_undecodable.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_netlink_not_from_kernel_total",
        kind: Kind::Counter,
        help: "Netlink datagrams another process sent posing as the kernel's notifications, dropped unread.",
        value: |m| m.netlink_not_from_kernel.load(Relaxed),
    },
    Scalar {
        name: "mtuvisor_mss_ensure_failures_total",
        kind: Kind::Counter,
        help: "Times installing the MSS clamping rules failed (retried at the next reconcile).",
        value: |m| m.mss_ensure_failures.load(Relaxed),
    },
];

/// Every series of `registry`.
pub(super) fn registry(registry: &Registry) -> String {
    let all = registry.lock().clone();
    let mut out = String::new();
    for s in SCALARS {
        let (name, kind) = (s.name, s.kind.name());
        let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {kind}\n", s.help);
        for m in &all {
            let _ = writeln!(out, "{name}{} {}", m.braces(""), (s.value)(m));
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
    let name = "mtuvisor_clamp_stage_seconds";
    let _ = write!(
        out,
        "# HELP {name} Where a clamp's time goes, for every enforcer of the process: \
         loop (its notification read, waiting for the loop), decide, queue (waiting \
         for a socket and a worker), kernel (sent to acknowledged: the RTNL lock), \
         wake (the answer back to the loop).\n# TYPE {name} histogram\n"
    );
    super::render_clamp_stages(name, &mut out);
    target_source(&all, &mut out);
    path(&registry.path, &mut out);
    mss(&all, &mut out);
    if let Some(node) = &registry.node {
        node_series(node, &all, &mut out);
    }
    missing_capability(registry, &mut out);
    let name = "mtuvisor_stalled";
    let _ = writeln!(
        out,
        "# HELP {name} 1 while a part that must make progress has made none within \
         liveness_timeout while work waits (/livez answers 503).\n# TYPE {name} gauge"
    );
    for beat in crate::health::all() {
        let _ = writeln!(
            out,
            "{name}{{part=\"{}\"}} {}",
            beat.key,
            u8::from(crate::health::is_stuck(beat, registry.liveness()))
        );
    }
    let name = "mtuvisor_realtime_priority";
    let _ = write!(
        out,
        "# HELP {name} SCHED_FIFO priority the clamping threads run at; 0: ordinary \
         (realtime_priority off, or refused: the log says why).\n# TYPE {name} gauge\n\
         {name} {}\n",
        crate::sched::priority()
    );
    let name = "mtuvisor_heap_bytes";
    let _ = write!(
        out,
        "# HELP {name} Heap in use, counted at the allocator: a leak grows it; \
         the C allocator's fragmentation grows only the resident set.\n\
         # TYPE {name} gauge\n{name} {}\n",
        crate::heap::in_use()
    );
    let _ = write!(
        out,
        "# HELP mtuvisor_build_info The running version.\n# TYPE mtuvisor_build_info gauge\n\
         mtuvisor_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// `mtuvisor_missing_capability`: per capability the mode checked at
/// start, 1 when it is not held.
fn missing_capability(registry: &Registry, out: &mut String) {
    let name = "mtuvisor_missing_capability";
    let _ = writeln!(
        out,
        "# HELP {name} 1 for a capability this mode uses and does not hold (the log \
         says what stops working without it).\n# TYPE {name} gauge"
    );
    for (grant, missing) in lock(&registry.grants).iter() {
        let _ = writeln!(
            out,
            "{name}{{capability=\"{}\",required=\"{}\"}} {}",
            grant.name, grant.required, *missing as u8
        );
    }
}

/// `mtuvisor_target_source`: one series per origin, 1 for the one that
/// decided each enforcer's target.
fn target_source(all: &[Arc<Metrics>], out: &mut String) {
    let name = "mtuvisor_target_source";
    let _ = write!(
        out,
        "# HELP {name} 1 for what decided the target MTU: fixed (mtu), link (the outer \
         interface), route (the default route's mtu), probe (path_probe), ceiling \
         (mtu_ceiling), floor.\n# TYPE {name} gauge\n"
    );
    for m in all {
        let current = m.target_source.load(Relaxed) as usize;
        for (i, origin) in Origin::ALL.iter().enumerate() {
            let label = format!("source=\"{}\"", origin.label());
            let _ = writeln!(
                out,
                "{name}{} {}",
                m.braces(&label),
                u64::from(i == current)
            );
        }
    }
}

/// The path probe's series, when it runs.
fn path(path: &PathMetrics, out: &mut String) {
    let measured = lock(&path.path_mtu);
    if !measured.is_empty() {
        let name = "mtuvisor_path_mtu";
        let _ = write!(
            out,
            "# HELP {name} The path MTU path_probe measured last toward each target, bounded by \
             ceiling (the outer MTU, at most mtu_ceiling); 0 while it cannot be measured.\n\
             # TYPE {name} gauge\n"
        );
        for ((target, ceiling), mtu) in measured.iter() {
            let _ = writeln!(
                out,
                "{name}{{path_target=\"{}\",ceiling=\"{ceiling}\"}} {mtu}",
                escape_label_value(target)
            );
        }
    }
    drop(measured);
    let failures = lock(&path.failures);
    if !failures.is_empty() {
        let name = "mtuvisor_path_probe_failures_total";
        let _ = write!(
            out,
            "# HELP {name} Probes of a path_probe target that measured nothing (retried).\n\
             # TYPE {name} counter\n"
        );
        for (target, n) in failures.iter() {
            let _ = writeln!(
                out,
                "{name}{{path_target=\"{}\"}} {n}",
                escape_label_value(target)
            );
        }
    }
}

/// `mtuvisor_mss_rules_installed`, for the families each enforcer's rules
/// cover (none: no series).
fn mss(all: &[Arc<Metrics>], out: &mut String) {
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
}

/// The node agent's own series.
fn node_series(node: &NodeMetrics, enforcers: &[Arc<Metrics>], out: &mut String) {
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
        node.watched.load(Relaxed)
    );
    let name = "mtuvisor_node_discovery_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a network namespace first seen to its enforcer subscribed \
         in it.\n# TYPE {name} histogram"
    );
    node.discovery.render(name, "", out);
}
