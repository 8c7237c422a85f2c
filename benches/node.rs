//! `mtuvisor node` on a simulated node (testkit/src/node.rs), as figures.
//!
//!     cargo bench --bench node [-- discovery|footprint|two_pods]
//!
//! Prints discovery latency: from a pod's namespace file created in
//! /run/netns (as `ip netns add` and containerd make it: an empty file,
//! then a bind mount) to the agent enforcing in it (its sockets open in
//! the namespace and its outer MTU read), p50/p99 over 100 pods (target
//! p99 < 50 ms); and the agent's resident memory and threads at 1, 10 and
//! 110 pod namespaces (Kubernetes' default pod limit per node), each pod
//! with a Docker-named bridge and three veths (target < 30 MB at 110).
//! Then two pods with a dockerd each (eth0 at 1450 and at 1400) under one
//! agent, 50 containers started at once in each: how many read their own
//! pod's MTU at their first instruction, and the time from the kernel's
//! notification that a new host end joined the bridge to both ends
//! clamped, beside dockerd's own next request after that join (sent at the
//! moment the same notification is) and an unrelated RTM_SETLINK every
//! 5 ms: the RTNL floor any client in the pod stands on. That part runs
//! twice: at the default `realtime_priority` (1), and with it `off`, as an
//! agent without CAP_SYS_NICE runs.
//!
//! Then what hostile pods cost (testkit/src/hostile.rs): a canary pod's
//! clamp latency (host end joined its bridge -> both ends clamped),
//! p50/p95/p99 over 3 rounds of 50 veths, alone and beside each hostile
//! case (goal: within 1.5x of alone at p95), how long a pod made beside
//! each takes to be enforced in, and the agent's resident set, threads
//! and fds after each; `-- chaos` the same beside the chaos pod
//! (testkit/src/chaos.rs) stepping between the canary's series for
//! MTUVISOR_CHAOS_SECONDS (default 120), seed printed; the agent's resident set and threads
//! at 110 pods whose dockerd runs 20 containers each, the containers'
//! namespaces held by processes one PID namespace further down, `/proc`
//! scanned (goal: under 30 MB); and the CPU one `/proc` scan takes at
//! 5,000 processes.

use testkit as common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::time::Instant;

use common::dockerd::{require_docker, DockerLab};
use common::hostile::{self, held, Attack, Canary, Scratch};
use common::node::NodeLab;
use common::{eventually, ip, ms, mtu, percentile, privileged, sh, RtnlProbe};

const DISCOVERIES: usize = 100;

fn main() {
    let args = common::bench_filters();
    // `cargo bench --bench node -- two_pods` runs one part; a filter that
    // names none of them (another bench's) runs nothing.
    let parts: [(&str, fn()); 7] = [
        ("discovery", discovery),
        ("footprint", footprint),
        ("dind_footprint", dind_footprint),
        ("proc_scan", proc_scan),
        ("hostile", hostile),
        ("chaos", chaos),
        ("two_pods", two_pods),
    ];
    let chosen: Vec<_> = parts
        .iter()
        .filter(|(name, _)| {
            args.is_empty()
                || args
                    .iter()
                    .any(|a| "node".contains(a.as_str()) || name.contains(a.as_str()))
        })
        .collect();
    if chosen.is_empty() || !privileged("bench node") {
        return;
    }
    for (_, part) in chosen {
        part();
    }
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
        let pod = format!("{{netns={prefix}-q{i}}}");
        let needle = "enforcing in a pod network namespace";
        let mut at = None;
        let seen = eventually(Duration::from_secs(10), || {
            at = std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains(&pod) && l.contains(needle))
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
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap())
    );
}

fn footprint() {
    let mut n = NodeLab::new("bnodemem");
    let agent = n.agent(&[]);
    let pid = n.lab.pid(agent);
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
            "node footprint at {target} pod namespaces: {} (target < 30 MB RSS at 110)",
            common::footprint(pid)
        );
    }
}

const AT_ONCE: usize = 50;

/// The agent at its default real-time priority, then with ordinary
/// scheduling (`realtime_priority = off`, or no CAP_SYS_NICE).
fn two_pods() {
    if !require_docker("bench node") {
        return;
    }
    two_pods_at("1");
    two_pods_at("off");
}

fn two_pods_at(priority: &str) {
    let mut a = DockerLab::new("bnodea");
    let mut b = DockerLab::beside("bnodeb", &a);
    ip(&b.pod, &["link", "set", "eth0", "mtu", "1400"]);
    ip(&b.router, &["link", "set", "down0", "mtu", "1400"]);
    let log = a.dir.join("agent.log");
    let mut agent = common::mtuvisor_in(&a.router);
    agent
        .args(["node", "--realtime-priority", priority])
        .args(["--proc-scan", "off", "--netns-include"])
        .arg(format!("{},{}", a.pod, b.pod))
        .args(["--metrics-addr", AGENT_METRICS])
        .env("MTUVISOR_NETNS_DIRS", "/run/netns")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    a.lab.spawn(agent);
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("enforcing in a pod network namespace")
            .count()
            == 2
    }));
    let mut bridges = Vec::new();
    for d in [&mut a, &mut b] {
        d.start_plain();
        d.ready();
        d.import_busybox();
        let id = d.docker_ok(&["network", "create", "bench"]);
        bridges.push(common::ifindex(&d.pod, &format!("br-{}", &id[..12])));
    }
    let pods = [a.pod.clone(), b.pod.clone()];
    let labs = [&a, &b];
    let router = a.router.clone();
    let metrics = move || common::http_get(&router, AGENT_METRICS, "/metrics").1;
    common::series::race_at_once(
        &format!("node (realtime_priority {priority})"),
        &pods,
        &bridges,
        &[1450, 1400],
        AT_ONCE,
        |i| labs[i].first_instruction_mtu(Some("bench")),
        Some(&metrics),
    );
}

/// Where the two-pod series' agent serves `/metrics`, in the node's
/// namespace (the test's own router).
const AGENT_METRICS: &str = "127.0.0.1:9464";

/// A canary pod under an agent in a PID namespace of its own, and what
/// the cases need beside it.
struct Hostile {
    n: NodeLab,
    agent: hostile::Agent,
    canary: Canary,
    scratch: Scratch,
    lock: std::path::PathBuf,
    extra: std::path::PathBuf,
}

impl Hostile {
    fn new() -> Hostile {
        let mut n = NodeLab::new("bhost");
        let scratch = Scratch::new(n.lab.prefix());
        let extra = scratch.0.join("netns");
        std::fs::create_dir_all(&extra).unwrap();
        let lock = scratch.0.join("xtables.lock");
        std::fs::write(&lock, "").unwrap();
        let agent = hostile::start_agent(
            &mut n,
            &[&extra],
            &[
                ("XTABLES_LOCKFILE", lock.to_str().unwrap()),
                ("MTUVISOR_LOG", "info"),
            ],
            &[],
        );
        let pod = n.pod("canary", 1450);
        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        ip(&pod, &["link", "set", "docker0", "up"]);
        let containers = (0..2).map(|i| n.lab.netns(&format!("cc{i}"))).collect();
        assert!(eventually(Duration::from_secs(10), || mtu(&pod, "docker0") == 1450));
        Hostile {
            n,
            agent,
            canary: Canary {
                pod,
                bridge: "docker0".into(),
                containers,
                target: 1450,
            },
            scratch,
            lock,
            extra,
        }
    }

    /// A pod made now with a Docker bridge: how long until the agent has
    /// it at its target (`None`: not within 5 s).
    fn new_pod(&mut self, round: &str) -> Option<Duration> {
        let pod = self.n.pod(&format!("n{round}"), 1450);
        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        let t = Instant::now();
        let ok = eventually(Duration::from_secs(5), || mtu(&pod, "docker0") == 1450);
        let took = t.elapsed();
        self.n.lab.delete_netns(&pod);
        ok.then_some(took)
    }

    /// 3 rounds of 50 canary veths: every latency, sorted, and how many
    /// were not clamped within 2 s.
    fn canary(&self) -> (Vec<Duration>, usize) {
        let mut all = Vec::new();
        let mut missed = 0;
        for _ in 0..3 {
            for s in self.canary.series(50) {
                match s {
                    Some(d) => all.push(d),
                    None => missed += 1,
                }
            }
        }
        all.sort();
        (all, missed)
    }
}

fn hostile() {
    let mut h = Hostile::new();
    let (alone, missed) = h.canary();
    let p = |v: &[Duration], q: f64| percentile(v, q);
    println!(
        "hostile pods: canary alone (3 x 50): p50 {} p95 {} p99 {}, {missed} not clamped",
        ms(p(&alone, 50.0)),
        ms(p(&alone, 95.0)),
        ms(p(&alone, 99.0))
    );
    let scratch = h.scratch.0.clone();
    type Make = fn(&mut Hostile, &std::path::Path) -> (Attack, Option<String>);
    let cases: Vec<(&str, Make)> = vec![
        ("hostname a FIFO", |h, s| {
            let pod = h.n.pod_as("xfifo", 1450);
            (hostile::hostname_fifo(&h.agent, &pod, s), Some(pod))
        }),
        ("hostname a 4 GiB sparse file", |h, s| {
            let pod = h.n.pod_as("xhuge", 1450);
            (hostile::hostname_huge(&h.agent, &pod, s), Some(pod))
        }),
        ("30 nested namespaces", |h, _| {
            let pod = h.n.pod_as("xnest", 1450);
            (hostile::namespaces(&h.agent, &pod, 30, true), Some(pod))
        }),
        ("300 namespaces", |h, _| {
            let pod = h.n.pod_as("xmany", 1450);
            (hostile::namespaces(&h.agent, &pod, 300, false), Some(pod))
        }),
        ("eth0 enslaved to docker0, route mtu 600", |h, _| {
            let pod = h.n.pod("slave", 1450);
            std::thread::sleep(Duration::from_millis(200));
            let addr = ip(&pod, &["-j", "addr", "show", "dev", "eth0"]);
            let addr = addr
                .split("\"local\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(|a| format!("{a}/16"))
                .unwrap();
            (
                hostile::enslave_eth0(&pod, &addr, "10.244.0.1", 600),
                Some(pod),
            )
        }),
        ("2,100 veth pairs", |h, s| {
            let pod = h.n.pod("flood", 1450);
            let bridges = ["docker0", "br-00000000f101", "br-00000000f102"];
            (hostile::veth_flood(&pod, &bridges, 2100, s), Some(pod))
        }),
        ("the xtables lock held", |h, _| {
            let pod = h.n.pod("lock", 1450);
            sh(&[
                "nsenter",
                &format!("--net=/run/netns/{pod}"),
                "iptables-legacy",
                "-A",
                "INPUT",
                "-j",
                "ACCEPT",
            ]);
            ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
            (hostile::hold_lock(&h.lock), Some(pod))
        }),
        ("a huge nftables ruleset", |h, s| {
            let pod = h.n.pod("nft", 1450);
            ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
            (hostile::nft_flood(&pod, 50_000, s), Some(pod))
        }),
        ("200 idle metrics connections", |h, _| {
            let pod = h.n.pod("conns", 1450);
            let gateway = format!("10.244.0.1:{}", hostile::metrics_port());
            (hostile::hold_connections(&pod, &gateway, 200), Some(pod))
        }),
        (
            "10 far ends named with random bytes in a namespace the pod made",
            |h, s| {
                let pod = h.n.pod("bytes", 1450);
                let (a, holder) = hostile::own_namespace(&h.agent, &pod, s);
                let mut rng = common::chaos::Rng::new(27);
                let names: Vec<Vec<u8>> = (0..10)
                    .map(|i| {
                        let mut n = rng.link_name();
                        n.truncate(13);
                        n.extend_from_slice(format!("{i:02}").as_bytes());
                        n
                    })
                    .collect();
                hostile::far_ends_named(&pod, "docker0", holder, &names, None);
                (a, Some(pod))
            },
        ),
        (
            "10 far ends aliased with random bytes and a newline",
            |h, s| {
                let pod = h.n.pod("alias", 1450);
                let (a, holder) = hostile::own_namespace(&h.agent, &pod, s);
                let names: Vec<Vec<u8>> = (0..10).map(|i| format!("c{i}").into_bytes()).collect();
                let alias = common::chaos::Rng::new(27).alias();
                hostile::far_ends_named(&pod, "docker0", holder, &names, Some(&alias));
                (a, Some(pod))
            },
        ),
        ("100,000 rules in the agent's iptables chain", |h, s| {
            let pod = h.n.pod("rules", 1450);
            ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
            let mut text = String::from("*mangle\n:MTUVISOR-MSS - [0:0]\n");
            for i in 0..100_000 {
                text.push_str(&format!(
                    "-A MTUVISOR-MSS -p tcp --dport {} -j ACCEPT\n",
                    1 + i % 65000
                ));
            }
            text.push_str("COMMIT\n");
            let file = s.join("100k");
            std::fs::write(&file, text).unwrap();
            sh(&[
                "nsenter",
                &format!("--net=/run/netns/{pod}"),
                "iptables-restore",
                "--noflush",
                file.to_str().unwrap(),
            ]);
            (Attack::default(), Some(pod))
        }),
        (
            "20 pods holding 4 connections each to the metrics port",
            |h, _| {
                let gateway = format!("10.244.0.1:{}", hostile::metrics_port());
                let mut a = Attack::default();
                let mut pods = Vec::new();
                for i in 0..20 {
                    let pod = h.n.pod(&format!("fill{i}"), 1450);
                    let held = hostile::occupy_connections(&pod, &gateway, 4);
                    let netns = pod.clone();
                    a.undo(move || {
                        drop(held);
                        let _ = std::process::Command::new("ip")
                            .args(["netns", "del", &netns])
                            .status();
                    });
                    pods.push(pod);
                }
                (a, None)
            },
        ),
        ("a FIFO in netns_dirs", |h, _| {
            let name = format!("{}-pfifo", h.n.lab.prefix());
            (hostile::fifo_in(&h.extra, &name), None)
        }),
        (
            "a pod creating and deleting 1,000 veth pairs over and over",
            |h, s| {
                let pod = h.n.pod("churn", 1450);
                (hostile::veth_churn(&pod, "docker0", 1000, s), Some(pod))
            },
        ),
    ];
    // MTUVISOR_BENCH_CASE=<words> runs only the cases whose name holds them.
    let only = std::env::var("MTUVISOR_BENCH_CASE").ok();
    for (name, make) in cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let before = held(h.agent.pid);
        let (attack, pod) = make(&mut h, &scratch);
        // Discovered, and whatever the case sets going under way.
        std::thread::sleep(Duration::from_secs(2));
        // The floor: what any RTNL request in the canary's pod waits
        // meanwhile (a link of its own on no bridge, every 5 ms).
        let floor = RtnlProbe::start(&h.canary.pod, "mvfloor", Duration::from_millis(5));
        let (beside, missed) = h.canary();
        let mut floor: Vec<Duration> = floor.finish().into_iter().map(|(_, d)| d).collect();
        floor.sort();
        let new_pod = h.new_pod(&name.len().to_string());
        let during = held(h.agent.pid);
        drop(attack);
        if let Some(pod) = pod {
            h.n.lab.delete_netns(&pod);
        }
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "  beside {name}: p50 {} p95 {} p99 {} ({:.2}x / {:.2}x of alone at p95 / p99; goal 1.5x), \
             {missed} not clamped; RTNL floor p95 {} p99 {}; a new pod enforced in after {}; \
             agent {before} -> {during}",
            ms(p(&beside, 50.0)),
            ms(p(&beside, 95.0)),
            ms(p(&beside, 99.0)),
            p(&beside, 95.0).as_secs_f64() / p(&alone, 95.0).as_secs_f64().max(1e-9),
            p(&beside, 99.0).as_secs_f64() / p(&alone, 99.0).as_secs_f64().max(1e-9),
            ms(p(&floor, 95.0)),
            ms(p(&floor, 99.0)),
            new_pod.map_or("(not within 5 s)".to_string(), ms),
        );
    }
    println!("  agent at the end: {}", held(h.agent.pid));
}

/// The canary beside the chaos pod: a step, then 10 canary veths and a
/// pod made, over and over for MTUVISOR_CHAOS_SECONDS (120 by default).
fn chaos() {
    let mut h = Hostile::new();
    let (alone, missed) = h.canary();
    let p = |v: &[Duration], q: f64| percentile(v, q);
    let seed = std::env::var("MTUVISOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(common::chaos::Rng::fresh_seed);
    let seconds = std::env::var("MTUVISOR_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    println!(
        "chaos (seed {seed}, {seconds} s): canary alone (3 x 50): p50 {} p95 {} p99 {}, {missed} not clamped",
        ms(p(&alone, 50.0)),
        ms(p(&alone, 95.0)),
        ms(p(&alone, 99.0))
    );
    let start = held(h.agent.pid);
    let pod = h.n.pod("chaos", 1450);
    let mut pod_chaos =
        common::chaos::ChaosPod::new(&pod, seed, common::chaos::Scope::Node, &h.scratch.0, None);
    let (mut beside, mut not_clamped, mut new_pods, mut slow_pods, mut steps) =
        (Vec::new(), 0, Vec::new(), 0, 0);
    let mut worst = start;
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(seconds) {
        pod_chaos.step(&h.agent);
        steps += 1;
        for s in h.canary.series(10) {
            match s {
                Some(d) => beside.push(d),
                None => not_clamped += 1,
            }
        }
        match h.new_pod(&format!("c{steps}")) {
            Some(d) => new_pods.push(d),
            None => slow_pods += 1,
        }
        let now = held(h.agent.pid);
        if now.rss_kb > worst.rss_kb {
            worst = now;
        }
    }
    beside.sort();
    new_pods.sort();
    println!(
        "  beside the chaos pod ({steps} steps): canary p50 {} p95 {} p99 {} ({:.2}x / {:.2}x of alone at p95 / p99; goal 1.5x), \
         {not_clamped} not clamped; new pods enforced in p50 {} p99 {} ({slow_pods} not within 5 s); \
         agent {start} at the start, {worst} at the worst, {} at the end",
        ms(p(&beside, 50.0)),
        ms(p(&beside, 95.0)),
        ms(p(&beside, 99.0)),
        p(&beside, 95.0).as_secs_f64() / p(&alone, 95.0).as_secs_f64().max(1e-9),
        p(&beside, 99.0).as_secs_f64() / p(&alone, 99.0).as_secs_f64().max(1e-9),
        ms(p(&new_pods, 50.0)),
        ms(p(&new_pods, 99.0)),
        held(h.agent.pid),
    );
}

/// 110 pods, each with a dockerd's bridge and 20 containers whose `eth0`
/// are the far ends of its veths, in namespaces held by processes one PID
/// namespace below the pod's (as a DinD pod's containers are), with the
/// agent scanning `/proc` too.
fn dind_footprint() {
    const PODS: usize = 110;
    const CONTAINERS: usize = 20;
    let mut n = NodeLab::new("bnodedind");
    let agent = hostile::start_agent(&mut n, &[], &[("MTUVISOR_LOG", "info")], &[]);
    let mut attacks = Vec::new();
    for p in 0..PODS {
        let pod = n.pod(&format!("d{p}"), 1450);
        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        ip(&pod, &["link", "set", "docker0", "up"]);
        let a = hostile::namespaces(&agent, &pod, CONTAINERS, true);
        // The containers' init processes: each the first of its own PID
        // namespace, below the pod's pause process.
        let mut inits = Vec::new();
        assert!(eventually(Duration::from_secs(20), || {
            inits = container_inits(a.root_pid());
            inits.len() == CONTAINERS
        }));
        let mut batch = String::new();
        for (c, pid) in inits.iter().enumerate() {
            batch.push_str(&format!(
                "link add v{c} type veth peer name eth0 netns {pid}\nlink set v{c} master docker0\n"
            ));
        }
        let file = std::env::temp_dir().join(format!("{pod}-batch"));
        std::fs::write(&file, batch).unwrap();
        ip(&pod, &["-batch", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        attacks.push(a);
        if p + 1 == 1 || p + 1 == 10 || p + 1 == PODS {
            assert!(eventually(Duration::from_secs(60), || mtu(&pod, "v19") == 1450));
            std::thread::sleep(Duration::from_secs(3));
            let h = held(agent.pid);
            let watched = n.sample(r#"mtuvisor_node_namespaces{state="watched"}"#);
            println!(
                "node footprint at {} DinD pods x {CONTAINERS} containers ({} namespaces, {watched:?} watched): \
                 {} kB RSS ({} kB anonymous), {} threads, {} fds (goal < 30 MB RSS at 110)",
                p + 1,
                (p + 1) * (CONTAINERS + 1),
                h.rss_kb,
                h.anon_kb,
                h.threads,
                h.fds
            );
        }
    }
}

/// The processes below `root` that are the first of their PID namespace
/// and hold a network namespace of their own, host pids.
fn container_inits(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut pending = vec![root];
    while let Some(p) = pending.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let depth = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default();
        // Host, agent's, pod's, container's.
        if depth.len() == 4 && depth[3] == "1" {
            out.push(p);
        }
        pending.extend(hostile::children_of(p));
    }
    out
}

/// The CPU one `/proc` scan costs the agent's discovery thread, with
/// 5,000 processes in its PID namespace: scans every 100 ms for 10 s.
fn proc_scan() {
    const PROCESSES: usize = 5000;
    let mut n = NodeLab::new("bnodescan");
    let agent = hostile::start_agent(
        &mut n,
        &[],
        &[("MTUVISOR_LOG", "info")],
        &["--proc-scan", "100ms"],
    );
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["--target", &agent.pid.to_string(), "--pid", "--"])
        .args(["sh", "-c"])
        .arg(format!(
            "for i in $(seq {PROCESSES}); do sleep 600 & done; wait"
        ));
    let mut a = Attack::default();
    a.process(cmd);
    assert!(eventually(Duration::from_secs(60), || {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c == "sleep\n")
                    })
                    .count()
            })
            .unwrap_or(0)
            >= PROCESSES
    }));
    // utime + stime of the discovery thread, in clock ticks (1/100 s).
    let discovery = || -> u64 {
        let t = common::threads_of(agent.pid)
            .into_iter()
            .find(|t| t.name == "discovery")
            .expect("the discovery thread");
        let stat =
            std::fs::read_to_string(format!("/proc/{}/task/{}/stat", agent.pid, t.tid)).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // Fields 14 and 15 of stat; the list starts at field 3.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    let t0 = discovery();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let t1 = discovery();
    let secs = began.elapsed().as_secs_f64();
    let hz = 100.0;
    let scans = secs / 0.1;
    let cpu = (t1 - t0) as f64 / hz;
    println!(
        "/proc scan at {PROCESSES} processes: {:.1} ms of CPU per scan ({:.1} % of a core at one scan every 100 ms; the default is no scan, and 1 s when asked for is typical)",
        cpu / scans * 1000.0,
        cpu / secs * 100.0
    );
    drop(a);
}
