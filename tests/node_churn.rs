//! `mtuvisor node` under churn: 200 pods created, enforced in and deleted,
//! three times, on a simulated node (testkit/src/node.rs). A test binary of
//! its own: it measures the agent's memory and threads, which tests beside
//! it would disturb (cargo runs test binaries one after another).

use testkit as common;

use std::time::{Duration, Instant};

use common::hostile::{held, namespaces_of_threads, Held};
use common::node::NodeLab;
use common::{eventually, mtu, privileged};

/// 200 pods (a Docker-named bridge and three veths each, no dockerd)
/// created, enforced in, and deleted, three times: fds and threads back
/// where they were each time, no thread left in a pod's namespace, and
/// memory that does not grow from round to round (the first round sets
/// the allocator's high-water mark).
#[test]
fn deleted_pods_leave_nothing_behind() {
    if !privileged("deleted_pods_leave_nothing_behind") {
        return;
    }
    const PODS: usize = 200;
    const MAX_THREADS: usize = 20;
    const ROUNDS: usize = 4;
    let mut n = NodeLab::new("nchurn");
    let agent = n.agent(&[]);
    let pid = n.lab.pid(agent);
    let watched = "mtuvisor_node_namespaces{state=\"watched\"}";
    let start = held(pid);
    let mut afters: Vec<Held> = Vec::new();
    // Per round: what its pods held at their peak, above where it ended.
    let mut peaks: Vec<u64> = Vec::new();
    for round in 1..=ROUNDS {
        let before = held(pid);
        let mut pods = Vec::new();
        for i in 0..PODS {
            let (p, bridge) = n.docker_pod(&format!("{round}x{i}"), i);
            pods.push((p, bridge));
        }
        assert!(
            eventually(Duration::from_secs(30), || n.sample(watched)
                == Some(PODS as f64)),
            "all {PODS} pods watched; log:\n{}",
            n.tail()
        );
        assert!(
            eventually(Duration::from_secs(30), || pods
                .iter()
                .all(|(p, br)| mtu(p, br) == 1450)),
            "every pod's bridge clamped"
        );
        let full = held(pid);
        for (p, _) in &pods {
            n.lab.delete_netns(p);
        }
        let t = Instant::now();
        assert!(
            eventually(Duration::from_secs(10), || n.sample(watched) == Some(0.0)),
            "every deleted pod dropped; log:\n{}",
            n.tail()
        );
        let dropped = t.elapsed();
        // Free heap pages go back a second after the last deletion.
        std::thread::sleep(Duration::from_secs(2));
        let after = held(pid);
        eprintln!(
            "round {round}: before {before}; at {PODS} pods {full}; \
             after deleting them (all dropped {dropped:?} after the last deletion) {after}"
        );
        // The main thread, the reaper, 4 MTU-setter workers, discovery,
        // the metrics server, at most 4 for the firewall tools and at most
        // 8 short-lived ones entering pods: 20 whatever the pod count.
        assert!(
            full.threads <= MAX_THREADS,
            "threads do not grow with pods: {before} before, {full} at {PODS}"
        );
        assert!(
            after.fds <= before.fds + before.fds / 10,
            "fds back within 10 %: {before} before, {after} after"
        );
        peaks.push(full.anon_kb.saturating_sub(after.anon_kb));
        afters.push(after);
    }
    eprintln!("from the start ({start}) to the end: {}", held(pid));
    // 600 pods deleted (each route gone a moment before its file): not a
    // word above INFO.
    let warned = common::hostile::warnings_since(&n.log, 0);
    assert!(warned.is_empty(), "pods deleted quietly: {warned:#?}");
    // Round 1 warms up (a thread of the blocking pool, allocator caches):
    // its end is no baseline. After it, a leak adds a share of what each
    // round's pods held at their peak, every round; the heap's
    // fragmentation creeps by far less (measured over 9 rounds: 60 to
    // 450 kB a round, against about 5,700 kB that 200 pods hold). So from
    // round 2 to the last, memory may grow by at most a tenth of a
    // round's peak per round.
    let peak = peaks.iter().sum::<u64>() / peaks.len() as u64;
    let per_round =
        afters[ROUNDS - 1].anon_kb.saturating_sub(afters[1].anon_kb) / (ROUNDS as u64 - 2);
    assert!(
        per_round <= peak / 10,
        "anonymous memory grows round after round: {per_round} kB a round after round 2, \
         against {peak} kB held by {PODS} pods; after each round: {:?} kB",
        afters.iter().map(|h| h.anon_kb).collect::<Vec<_>>()
    );
    // What keeps a namespace alive from a process is an open file or
    // socket (the fds above) or a thread inside it. (The kernel's own
    // count, the net_namespace slab, is not exact under SLUB.)
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        namespaces_of_threads(pid),
        std::collections::BTreeSet::from([own]),
        "every thread of the agent in the node's namespace"
    );
}
