//! Hostile pods (testkit/src/hostile.rs): what one CI job can do to an
//! enforcer beside it, one case at a time, while a canary pod keeps getting
//! new veths on its Docker bridge. For each case: the enforcer stays alive
//! and answers `/healthz`, every canary veth has both ends clamped (within
//! 2 s; `cargo bench --bench node -- hostile` prints how fast, beside the
//! canary alone), nothing outside the pods changes, and the case costs one
//! warning at most. Under `node` (the agent in a PID namespace of its own,
//! `/proc` scanned every 500 ms), then the cases that apply to an enforcer
//! inside the pod itself under `watch` and `supervise`.

use testkit as common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::hostile::{self, held, log_len, warnings_since, Attack, Canary, Held, InPod, Scratch};
use common::node::{snapshot, NodeLab, METRICS};
use common::{eventually, ip, mtu, privileged};

/// Veths per canary series.
const CANARY: usize = 20;

/// What a case must leave as it found: the enforcer alive and ready, the
/// canary clamped, at most one warning.
struct Judge<'a> {
    log: &'a Path,
    /// The node's namespace (`node`), whose links no case may change.
    node: Option<&'a str>,
    /// Where `/healthz` is: (namespace, address).
    health: (&'a str, &'a str),
    pid: i32,
    canary: &'a Canary,
    figures: Vec<String>,
}

impl Judge<'_> {
    fn case(&mut self, name: &str, attack: impl FnOnce() -> Attack, check: impl FnOnce(&Held)) {
        let from = log_len(self.log);
        let before = held(self.pid);
        let node_before = self.node.map(snapshot);
        eprintln!("case: {name}");
        let attack = attack();
        let series = self.canary.series(CANARY);
        let clamped: Vec<Duration> = series.iter().flatten().copied().collect();
        assert_eq!(
            clamped.len(),
            CANARY,
            "{name}: every canary veth clamped on both ends: {series:?}"
        );
        let (status, _) = common::try_http_get(self.health.0, self.health.1, "/healthz")
            .unwrap_or_else(|e| panic!("{name}: /healthz does not answer: {e}"));
        assert_eq!(status, 200, "{name}: ready");
        let during = held(self.pid);
        check(&during);
        if let (Some(node), Some(before)) = (self.node, node_before) {
            let after: Vec<(String, u32)> = snapshot(node)
                .into_iter()
                .filter(|l| before.iter().any(|b| b.0 == l.0))
                .collect();
            let before: Vec<(String, u32)> = before
                .into_iter()
                .filter(|l| after.iter().any(|a| a.0 == l.0))
                .collect();
            assert_eq!(after, before, "{name}: the node's links, MTU by MTU");
        }
        drop(attack);
        let warned = warnings_since(self.log, from);
        assert!(
            warned.len() <= 1,
            "{name}: one warning at most, got {}:\n{}",
            warned.len(),
            warned.join("\n")
        );
        let mut sorted = clamped.clone();
        sorted.sort();
        self.figures.push(format!(
            "{name}: canary p50 {} max {}; agent {} -> {}; {}",
            common::ms(common::percentile(&sorted, 50.0)),
            common::ms(*sorted.last().unwrap()),
            before,
            during,
            match warned.first() {
                Some(w) => format!("said: {}", w.split(" WARN ").nth(1).unwrap_or(w)),
                None => "said nothing".into(),
            }
        ));
    }
}

/// The canary: a pod with `docker0` at 1500 (clamped to 1450 by the
/// enforcer) and two container namespaces its veths' far ends move into.
fn canary(lab: &mut common::Lab, pod: &str, bridge: &str) -> Canary {
    ip(pod, &["link", "add", bridge, "type", "bridge"]);
    ip(pod, &["link", "set", bridge, "up"]);
    let containers = (0..2).map(|i| lab.netns(&format!("cc{i}"))).collect();
    Canary {
        pod: pod.to_string(),
        bridge: bridge.to_string(),
        containers,
        target: 1450,
    }
}

fn watched(n: &NodeLab) -> Option<f64> {
    n.sample(r#"mtuvisor_node_namespaces{state="watched"}"#)
}

#[test]
fn no_pod_stalls_steers_or_slows_the_node_agent() {
    if !privileged("no_pod_stalls_steers_or_slows_the_node_agent") {
        return;
    }
    let mut n = NodeLab::new("hnode");
    let scratch = Scratch::new(n.lab.prefix());
    let extra = scratch.0.join("netns");
    std::fs::create_dir_all(&extra).unwrap();
    let lock = scratch.0.join("xtables.lock");
    std::fs::write(&lock, "").unwrap();
    let secret = scratch.0.join("agent-only-secret");
    let secret_text = format!("SECRET-{}", n.lab.prefix());
    std::fs::write(&secret, &secret_text).unwrap();

    let agent = hostile::start_agent(
        &mut n,
        &[&extra],
        &[("XTABLES_LOCKFILE", lock.to_str().unwrap())],
        &["--reconcile-interval", "2s"],
    );
    let canary_pod = n.pod("canary", 1450);
    let c = canary(&mut n.lab, &canary_pod, "docker0");
    assert!(
        eventually(Duration::from_secs(10), || mtu(&canary_pod, "docker0")
            == 1450),
        "the canary is enforced in; log:\n{}",
        n.tail()
    );
    let base = watched(&n);
    assert_eq!(base, Some(1.0), "the canary alone: {}", n.metrics());
    let node_links = snapshot(&n.node);
    let alone = c.series(CANARY);
    assert!(alone.iter().all(Option::is_some), "alone: {alone:?}");
    let start = held(agent.pid);

    let log = n.log.clone();
    let node = n.node.clone();
    let mut j = Judge {
        log: &log,
        node: Some(&node),
        health: (&node, METRICS),
        pid: agent.pid,
        canary: &c,
        figures: Vec::new(),
    };
    let settle = |n: &NodeLab, want: f64, what: &str| {
        assert!(
            eventually(Duration::from_secs(15), || watched(n) == Some(want)),
            "{what}: {want} namespaces watched, {:?}; log:\n{}",
            watched(n),
            n.tail()
        );
    };

    // Pods found through /proc whose files it could have read.
    for (name, make) in [
        (
            "hostname a FIFO",
            hostile::hostname_fifo as fn(&dyn hostile::Arena, &str, &Path) -> Attack,
        ),
        ("hostname a 4 GiB sparse file", hostile::hostname_huge),
        ("hostname with a newline", hostile::hostname_newline),
    ] {
        let pod = n.pod_as(&format!("x{}", name.len()), 1450);
        j.case(
            name,
            || {
                let a = make(&agent, &pod, &scratch.0);
                settle(&n, 2.0, name);
                a
            },
            |_| {
                let m = n.metrics();
                assert!(!m.contains("evil"), "{name}: {m}");
            },
        );
        n.lab.delete_netns(&pod);
        settle(&n, 1.0, name);
    }
    let pod = n.pod_as("xsym", 1450);
    j.case(
        "hostname an absolute symlink out of the pod's root",
        || {
            let a = hostile::hostname_symlink_out(&agent, &pod, &scratch.0, &secret);
            settle(&n, 2.0, "symlink");
            a
        },
        |_| {
            assert!(!n.metrics().contains(&secret_text), "not in the metrics");
            let text = std::fs::read_to_string(&n.log).unwrap();
            assert!(!text.contains(&secret_text), "not in the log");
        },
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "symlink");

    // A pod that makes namespaces: nested ones (a DinD pod's containers)
    // and ones beside its own.
    for (name, count, nested) in [
        ("30 nested namespaces under one pod", 30, true),
        ("300 namespaces made by one pod", 300, false),
    ] {
        let pod = n.pod_as(&format!("xns{count}"), 1450);
        j.case(
            name,
            || {
                let a = hostile::namespaces(&agent, &pod, count, nested);
                // In place: the pod's pause process and what it started
                // hold count + 1 namespaces.
                let in_place = eventually(Duration::from_secs(20), || {
                    hostile::namespaces_held_below(a.root_pid()) > count
                });
                assert!(in_place, "{name}: the namespaces exist");
                settle(&n, 2.0, name);
                // Several scans later, still only the pod itself.
                std::thread::sleep(Duration::from_millis(1500));
                assert_eq!(watched(&n), Some(2.0), "{name}: only the pod");
                a
            },
            |during| assert!(during.fds < start.fds + 32, "{name}: fds {during}"),
        );
        n.lab.delete_netns(&pod);
        settle(&n, 1.0, name);
    }

    // A pod that routes through its own eth0 enslaved to a bridge it named
    // docker0, with a default route of MTU 600.
    let pod = n.pod("slave", 1450);
    settle(&n, 2.0, "slave");
    j.case(
        "eth0 enslaved to a bridge named docker0, route mtu 600",
        || {
            let addr = ip(&pod, &["-j", "addr", "show", "dev", "eth0"]);
            let addr = addr
                .split("\"local\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(|a| format!("{a}/16"))
                .expect("eth0's address");
            let a = hostile::enslave_eth0(&pod, &addr, "10.244.0.1", 600);
            let said = eventually(Duration::from_secs(10), || {
                std::fs::read_to_string(&n.log)
                    .unwrap_or_default()
                    .contains("default route leaves by a bridge named like Docker's")
            });
            assert!(said, "the agent saw it; log:\n{}", n.tail());
            a
        },
        |_| {
            assert_eq!(mtu(&pod, "eth0"), 1450, "the pod's eth0 untouched");
        },
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "slave");

    // The same, routed through another link: docker0 is Docker's by name
    // and eth0 its port, whose far end is the node's.
    let pod = n.pod("slave2", 1450);
    settle(&n, 2.0, "slave2");
    j.case(
        "eth0 enslaved to a bridge named docker0, routed elsewhere",
        || {
            ip(
                &pod,
                &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
            );
            ip(&pod, &["link", "set", "up0", "mtu", "1400", "up"]);
            ip(&pod, &["addr", "add", "10.99.0.2/24", "dev", "up0"]);
            ip(
                &pod,
                &[
                    "route",
                    "replace",
                    "default",
                    "via",
                    "10.99.0.1",
                    "dev",
                    "up0",
                ],
            );
            ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
            ip(&pod, &["link", "set", "docker0", "up"]);
            ip(&pod, &["link", "set", "eth0", "master", "docker0"]);
            let a = Attack::default();
            let said = eventually(Duration::from_secs(10), || {
                std::fs::read_to_string(&n.log)
                    .unwrap_or_default()
                    .contains("not a Docker veth; left alone")
            });
            assert!(said, "the agent refused the node's end; log:\n{}", n.tail());
            a
        },
        |_| {
            assert!(
                eventually(Duration::from_secs(5), || mtu(&pod, "docker0") == 1400),
                "the pod's own bridge follows its route"
            );
        },
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "slave2");

    // 2,100 veth pairs on a Docker-named bridge: past the per-namespace
    // limit (4,096 links).
    let pod = n.pod("flood", 1450);
    settle(&n, 2.0, "flood");
    j.case(
        "2,100 veth pairs on Docker-named bridges in one pod",
        || {
            let bridges = ["docker0", "br-00000000f101", "br-00000000f102"];
            let a = hostile::veth_flood(&pod, &bridges, 2100, &scratch.0);
            let over = eventually(Duration::from_secs(60), || {
                n.sample(&format!("mtuvisor_links_left_out{{netns=\"{pod}\"}}"))
                    .is_some_and(|v| v > 0.0)
            });
            assert!(over, "the limit is reached; {}", n.tail());
            a
        },
        |during| {
            assert!(
                during.anon_kb < start.anon_kb + 10 * 1024,
                "memory bounded: {start} at start, {during} with 4,200 links in one pod"
            );
        },
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "flood");

    // A pod whose xtables lock is held for ever (iptables-legacy in use
    // there): its MSS rules wait 5 s and fail, once said; no one else waits.
    let pod = n.pod("lock", 1450);
    // Legacy iptables in use there before Docker's bridge appears: the
    // agent picks the backend (legacy) when the bridge does.
    sh_in(&pod, &["iptables-legacy", "-A", "INPUT", "-j", "ACCEPT"]);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let lock_held = hostile::hold_lock(&lock);
    settle(&n, 2.0, "lock");
    j.case(
        "the xtables lock held for ever",
        || {
            let said = eventually(Duration::from_secs(30), || {
                std::fs::read_to_string(&n.log)
                    .unwrap_or_default()
                    .contains("Another app is currently holding the xtables lock")
            });
            assert!(said, "the agent says why; log:\n{}", n.tail());
            Attack::default()
        },
        |_| {},
    );
    drop(lock_held);
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "lock");

    // A pod with a huge nftables ruleset.
    let pod = n.pod("nft", 1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    settle(&n, 2.0, "nft");
    j.case(
        "a huge nftables ruleset",
        || hostile::nft_flood(&pod, 50_000, &scratch.0),
        |_| {},
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "nft");

    // A pod that floods the metrics port (on the node's IP) with
    // connections it never uses.
    let pod = n.pod("conns", 1450);
    settle(&n, 2.0, "conns");
    let gateway = format!("10.244.0.1:{}", hostile::metrics_port());
    j.case(
        "200 idle connections to the metrics port",
        || {
            let a = hostile::hold_connections(&pod, &gateway, 200);
            std::thread::sleep(Duration::from_secs(1));
            a
        },
        |_| {
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let (status, _) = common::http_get(&node, METRICS, "/metrics");
                assert_eq!(status, 200);
                assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            }
        },
    );
    n.lab.delete_netns(&pod);
    settle(&n, 1.0, "conns");

    // A FIFO among the namespace files.
    let fifo_name = format!("{}-pfifo", n.lab.prefix());
    j.case(
        "a FIFO in netns_dirs",
        || {
            let a = hostile::fifo_in(&extra, &fifo_name);
            // Past the 2 s a new file is given to become a namespace.
            std::thread::sleep(Duration::from_millis(2500));
            a
        },
        |_| {
            // Discovery still works.
            let pod = n.pod("after", 1450);
            settle(&n, 2.0, "a pod after the FIFO");
            n.lab.delete_netns(&pod);
            settle(&n, 1.0, "a pod after the FIFO");
        },
    );

    // The node was never touched.
    let after: Vec<(String, u32)> = snapshot(&n.node)
        .into_iter()
        .filter(|l| node_links.iter().any(|b| b.0 == l.0))
        .collect();
    assert_eq!(after, node_links, "the node's links, MTU by MTU");
    assert!(n.lab.exited(agent.outer).is_none(), "the agent runs");
    let mut alone: Vec<Duration> = alone.into_iter().flatten().collect();
    alone.sort();
    eprintln!(
        "canary alone: p50 {} max {}; agent at start: {start}",
        common::ms(common::percentile(&alone, 50.0)),
        common::ms(*alone.last().unwrap())
    );
    for f in &j.figures {
        eprintln!("{f}");
    }
}

fn sh_in(netns: &str, args: &[&str]) {
    let mut all = vec!["nsenter".to_string(), format!("--net=/run/netns/{netns}")];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    common::sh(&all);
}

/// Scratch paths for one in-pod test: a netns directory, a lock file.
struct InPodScratch {
    scratch: Scratch,
    extra: PathBuf,
    lock: PathBuf,
}

impl InPodScratch {
    fn new(prefix: &str) -> InPodScratch {
        let scratch = Scratch::new(prefix);
        let extra = scratch.0.join("netns");
        std::fs::create_dir_all(&extra).unwrap();
        let lock = scratch.0.join("xtables.lock");
        std::fs::write(&lock, "").unwrap();
        InPodScratch {
            scratch,
            extra,
            lock,
        }
    }
}

/// The cases that apply to an enforcer inside the pod: a process with a
/// FIFO as `/etc/hostname`, a FIFO in `netns_dirs`, 2,000 veth pairs on
/// Docker bridges beside the canary's, the xtables lock held for ever.
fn in_pod_cases(mode: &str, pod: &str, mut j: Judge, paths: &InPodScratch) {
    let start = held(j.pid);
    let (log, scratch) = (j.log, &paths.scratch.0);
    j.case(
        "hostname a FIFO",
        || hostile::hostname_fifo(&InPod, pod, scratch),
        |_| {},
    );
    let fifo = format!("{mode}-fifo");
    j.case(
        "a FIFO in netns_dirs",
        || hostile::fifo_in(&paths.extra, &fifo),
        |_| {},
    );
    j.case(
        "2,000 veth pairs on Docker-named bridges",
        || {
            let bridges = ["br-00000000f100", "br-00000000f101"];
            let a = hostile::veth_flood(pod, &bridges, 2000, scratch);
            assert!(
                eventually(Duration::from_secs(60), || mtu(pod, "fh1999") == 1450
                    && mtu(pod, "ff1999") == 1450),
                "every pair clamped; {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            a
        },
        |during| {
            assert!(
                during.anon_kb < start.anon_kb + 10 * 1024,
                "memory bounded: {start} at start, {during} with 4,000 more links"
            );
        },
    );
    j.case(
        "the xtables lock held for ever",
        || {
            let a = hostile::hold_lock(&paths.lock);
            let said = eventually(Duration::from_secs(30), || {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("Another app is currently holding the xtables lock")
            });
            assert!(said, "{mode} says why");
            a
        },
        |_| {},
    );
    for f in &j.figures {
        eprintln!("{mode}: {f}");
    }
}

#[test]
fn no_pod_process_stalls_or_slows_watch() {
    if !privileged("no_pod_process_stalls_or_slows_watch") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9465";
    let mut lab = common::Lab::new("hwatch");
    let (pod, _) = lab.pod(1450);
    let paths = InPodScratch::new(lab.prefix());
    let c = canary(&mut lab, &pod, "docker0");
    let log = paths.scratch.0.join("watch.log");
    let dirs = format!("/run/netns,{}", paths.extra.display());
    let mut cmd = common::mtuvisor_in(&pod);
    cmd.args([
        "watch",
        "--metrics-addr",
        ADDR,
        "--reconcile-interval",
        "2s",
    ])
    .env("MTUVISOR_LOG", "debug")
    .env("MTUVISOR_NETNS_DIRS", &dirs)
    .env("MTUVISOR_MSS_BACKEND", "iptables-legacy")
    .env("XTABLES_LOCKFILE", &paths.lock)
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let w = lab.spawn(cmd);
    assert!(eventually(Duration::from_secs(10), || mtu(&pod, "docker0") == 1450));
    let j = Judge {
        log: &log,
        node: None,
        health: (&pod, ADDR),
        pid: lab.pid(w),
        canary: &c,
        figures: Vec::new(),
    };
    in_pod_cases("watch", &pod, j, &paths);
    assert!(lab.exited(w).is_none(), "watch runs");
}

#[test]
fn no_pod_process_stalls_or_slows_supervise() {
    if !common::dockerd::require_docker("no_pod_process_stalls_or_slows_supervise") {
        return;
    }
    const ADDR: &str = "127.0.0.1:9466";
    let mut d = common::dockerd::DockerLab::new("hsuper");
    let paths = InPodScratch::new(d.lab.prefix());
    let dirs = format!("/run/netns,{}", paths.extra.display());
    d.start_supervised_env(
        &["--metrics-addr", ADDR, "--reconcile-interval", "2s"],
        &[
            ("MTUVISOR_NETNS_DIRS", &dirs),
            ("MTUVISOR_MSS_BACKEND", "iptables-legacy"),
            ("XTABLES_LOCKFILE", paths.lock.to_str().unwrap()),
        ],
    );
    d.ready();
    let pod = d.pod.clone();
    // The canary's bridge is Docker-named but not dockerd's own.
    let c = canary(&mut d.lab, &pod, "br-00000000ca11");
    assert!(eventually(Duration::from_secs(10), || mtu(
        &pod,
        "br-00000000ca11"
    ) == 1450));
    let log = d.log.clone();
    let j = Judge {
        log: &log,
        node: None,
        health: (&pod, ADDR),
        pid: d.lab.pid(d.main.unwrap()),
        canary: &c,
        figures: Vec::new(),
    };
    in_pod_cases("supervise", &pod, j, &paths);
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0),
        "supervise stops cleanly"
    );
}
