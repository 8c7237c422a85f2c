//! `mtuvisor node` on a simulated node (testkit/src/node.rs), as figures.
//!
//!     cargo bench --bench node
//!
//! Prints discovery latency: from a pod's namespace file created in
//! /run/netns (as `ip netns add` and containerd make it: an empty file,
//! then a bind mount) to the agent enforcing in it (its sockets open in
//! the namespace and its outer MTU read), p50/p99 over 100 pods (target
//! p99 < 50 ms); and the agent's resident memory and threads at 1, 10 and
//! 110 pod namespaces (Kubernetes' default pod limit per node), each pod
//! with a Docker-named bridge and three veths (target < 30 MB at 110).

use testkit as common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::node::NodeLab;
use common::{eventually, ms, mtu, percentile, privileged, sh};

const DISCOVERIES: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|a| !"node".contains(a.as_str())) {
        return;
    }
    if !privileged("bench node") {
        return;
    }
    discovery();
    footprint();
}

/// Seconds since midnight UTC, as the agent's log stamps them.
fn now_of_day() -> f64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (t.as_secs() % 86400) as f64 + f64::from(t.subsec_nanos()) / 1e9
}

/// `2026-11-25T19:00:14.340475Z ...` -> seconds since midnight.
fn stamp_of_day(line: &str) -> Option<f64> {
    let time = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn discovery() {
    let mut n = NodeLab::new("bnodedisc");
    // The agent looks at `<prefix>-q*`; pods are made ready under their
    // own names first, then shown to it the way `ip netns add` and
    // containerd make a namespace file: an empty file, then a bind mount.
    let prefix = n.lab.prefix().to_string();
    n.agent_including(&format!("{prefix}-q*"), &[]);
    let mut latencies = Vec::new();
    for i in 0..DISCOVERIES {
        let ready = n.pod(&format!("{i}"), 1450);
        let shown = format!("/run/netns/{prefix}-q{i}");
        let t0 = now_of_day();
        sh(&["touch", &shown]);
        sh(&["mount", "--bind", &format!("/run/netns/{ready}"), &shown]);
        let needle = format!("enforcing in a pod network namespace netns={prefix}-q{i} ");
        let mut at = None;
        let seen = eventually(Duration::from_secs(10), || {
            at = std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains(&needle))
                .and_then(stamp_of_day);
            at.is_some()
        });
        sh(&["umount", "-l", &shown]);
        sh(&["rm", "-f", &shown]);
        assert!(seen, "{shown} found; log:\n{}", n.tail());
        latencies.push(Duration::from_secs_f64((at.unwrap() - t0).max(0.0)));
    }
    latencies.sort();
    println!(
        "node discovery (netns file created -> enforcing in it), {DISCOVERIES} pods: \
         p50 {}, p99 {}, max {} (target p99 < 50 ms; the two tools that make the file are counted)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
}

fn footprint() {
    let mut n = NodeLab::new("bnodemem");
    let agent = n.agent(&[]);
    let pid = n.lab.pid(agent);
    let status = |field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let mut made = 0;
    for target in [1usize, 10, 110] {
        while made < target {
            let (p, bridge) = n.docker_pod(&format!("{made}"), made);
            assert!(eventually(Duration::from_secs(30), || mtu(&p, &bridge) == 1450));
            made += 1;
        }
        // Settled: MSS rules ensured, buffers at their size.
        std::thread::sleep(Duration::from_secs(3));
        println!(
            "node footprint at {target} pod namespaces: {} kB RSS ({} kB anonymous), {} threads, {} fds (target < 30 MB RSS at 110)",
            status("VmRSS:"),
            status("RssAnon:"),
            status("Threads:"),
            std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
        );
    }
}
