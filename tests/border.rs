//! The border (issue 27): what one pod writes where the node agent reads,
//! as an attacker with one CI job would, one test per way in. Each holds
//! against `mtuvisor node` on a simulated node (the agent in a PID
//! namespace of its own, `/proc` scanned), with random bytes where a pod
//! chooses bytes: every seed is printed, and `MTUVISOR_SEED` replays one.

use testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chaos::Rng;
use common::hostile::{self, log_len, Scratch};
use common::node::{NodeLab, METRICS};
use common::{eventually, ip, mtu, privileged};

fn seed(test: &str) -> u64 {
    let seed = std::env::var("MTUVISOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    eprintln!("{test}: seed {seed} (MTUVISOR_SEED={seed} replays it)");
    seed
}

/// The log from byte `from` on: valid UTF-8 (no byte a pod chose reaches
/// it raw) and without a line that starts with anything but a timestamp
/// (no newline a pod chose splits a line).
fn assert_log_clean(log: &Path, from: usize) {
    let bytes = std::fs::read(log).unwrap();
    let tail = &bytes[from.min(bytes.len())..];
    let text = std::str::from_utf8(tail).unwrap_or_else(|e| {
        panic!(
            "the log holds bytes that are not UTF-8 at {}: {:?}",
            e.valid_up_to(),
            String::from_utf8_lossy(
                &tail[e.valid_up_to().saturating_sub(80)..]
                    [..160.min(tail.len() - e.valid_up_to().saturating_sub(80))]
            )
        )
    });
    for line in text.lines() {
        assert!(
            line.starts_with("20") || line.trim().is_empty(),
            "a log line that is not one of the agent's: {line:?}"
        );
    }
}

/// Every far end in `holder`'s namespace and every host end `hb*` of
/// `pod` at `target`.
fn pairs_at(pod: &str, holder: i32, count: usize, target: u32) -> bool {
    let far = hostile::veth_mtus_of(holder);
    far.len() == count
        && far.iter().all(|m| *m == target)
        && (0..count).all(|i| mtu(pod, &format!("hb{i}")) == target)
}

/// A pod whose containers' ends carry names (row 1) or aliases (row 2) of
/// random bytes, in a namespace it made: each pair is clamped on both
/// ends, a pod made afterwards is enforced in within 2 s, the agent stays
/// alive, its log stays clean, and it stops in time.
fn names_of_any_bytes(tag: &str, aliases: bool) {
    let seed = seed(tag);
    let mut rng = Rng::new(seed);
    let mut n = NodeLab::new(tag);
    let scratch = Scratch::new(n.lab.prefix());
    let agent = hostile::start_agent(&mut n, &[], &[], &["--reconcile-interval", "2s"]);
    let from = log_len(&n.log);
    let pod = n.pod("evil", 1450);
    let (_holding, holder) = hostile::own_namespace(&agent, &pod, &scratch.0);
    let names: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            if aliases {
                format!("c{i}").into_bytes()
            } else {
                let mut name = rng.link_name();
                // Unique within the namespace.
                name.truncate(13);
                name.extend_from_slice(format!("{i:02}").as_bytes());
                name
            }
        })
        .collect();
    let alias = aliases.then(|| rng.alias());
    hostile::far_ends_named(&pod, "docker0", holder, &names, alias.as_deref());
    let clamped = eventually(Duration::from_secs(10), || pairs_at(&pod, holder, 10, 1450));
    assert!(
        clamped,
        "seed {seed}: every pair at 1450 (far ends {:?}); log:\n{}",
        hostile::veth_mtus_of(holder),
        n.tail()
    );
    // A pod made afterwards is enforced in at once.
    let later = n.pod("later", 1450);
    ip(&later, &["link", "add", "docker0", "type", "bridge"]);
    let began = Instant::now();
    let enforced = eventually(Duration::from_secs(2), || mtu(&later, "docker0") == 1450);
    assert!(
        enforced,
        "seed {seed}: a pod made afterwards is enforced in within 2 s; log:\n{}",
        n.tail()
    );
    eprintln!(
        "{tag}: a pod made afterwards enforced in after {:?}",
        began.elapsed()
    );
    let (status, _) = common::http_get(&n.node, METRICS, "/livez");
    assert_eq!(status, 200);
    assert_log_clean(&n.log, from);
    // A clean stop, in time: nothing is stuck.
    let stopped = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = n.lab.wait(agent.outer, Duration::from_secs(12));
    assert!(status.success(), "seed {seed}: clean stop: {status:?}");
    eprintln!("{tag}: stopped in {:?}", stopped.elapsed());
}

#[test]
fn far_ends_named_with_any_bytes_are_clamped_and_hold_nothing_up() {
    if !privileged("far_ends_named_with_any_bytes_are_clamped_and_hold_nothing_up") {
        return;
    }
    names_of_any_bytes("bnames", false);
}

#[test]
fn far_ends_with_aliases_of_any_bytes_are_clamped_and_hold_nothing_up() {
    if !privileged("far_ends_with_aliases_of_any_bytes_are_clamped_and_hold_nothing_up") {
        return;
    }
    names_of_any_bytes("baliases", true);
}

/// `nft` in a namespace, with `args`; its stdout.
fn nft_in(netns: &str, args: &[&str]) -> String {
    let mut all = vec![
        "nsenter".to_string(),
        format!("--net=/run/netns/{netns}"),
        "nft".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    common::sh(&all)
}

/// Whether the pod's `inet mtuvisor` is exactly the agent's: one chain,
/// `forward` at mangle priority, holding one rule with our comment.
fn nft_table_is_ours(pod: &str) -> bool {
    let Ok(json) =
        std::panic::catch_unwind(|| nft_in(pod, &["-j", "list", "table", "inet", "mtuvisor"]))
    else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let chains: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("chain")).collect();
    let rules: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("rule")).collect();
    chains.len() == 1
        && chains[0]["name"] == "forward"
        && chains[0]["prio"] == -150
        && rules.len() == 1
        && rules[0]["comment"] == "mtuvisor mss pmtu"
}

/// Row 3: a pod that made its own `inet mtuvisor` with chains whose names
/// hold a newline and an `include` of a node file, or a command after a
/// `;`: the agent makes the table again from fixed text; the file is never
/// read into its log, and no command of the pod's is run.
#[test]
fn an_nft_table_a_pod_made_is_made_again_and_no_name_reaches_nft() {
    if !privileged("an_nft_table_a_pod_made_is_made_again_and_no_name_reaches_nft") {
        return;
    }
    let seed = seed("bnft");
    let mut rng = Rng::new(seed);
    let mut n = NodeLab::new("bnft");
    let scratch = Scratch::new(n.lab.prefix());
    let secret = scratch.0.join("node-secret");
    let secret_text = format!("SECRET-{}", n.lab.prefix());
    std::fs::write(&secret, format!("{secret_text}\n{secret_text} line two\n")).unwrap();
    let _agent = hostile::start_agent(
        &mut n,
        &[],
        &[("MTUVISOR_MSS_BACKEND", "nftables")],
        &["--reconcile-interval", "2s"],
    );
    let from = log_len(&n.log);
    let pod = n.pod("nft", 1450);
    // Chain names a pod chooses: nft takes any text in JSON.
    let random: String = rng
        .alias()
        .iter()
        .map(|b| char::from(b'!' + b % 90))
        .take(60)
        .collect();
    let names = [
        format!("x\ninclude \"{}\"\n", secret.display()),
        "forward; add table ip injected #".to_string(),
        random,
    ];
    let mut json =
        String::from(r#"{"nftables":[{"add":{"table":{"family":"inet","name":"mtuvisor"}}}"#);
    for name in &names {
        json.push_str(&format!(
            r#",{{"add":{{"chain":{{"family":"inet","table":"mtuvisor","name":{}}}}}}}"#,
            serde_json::to_string(name).unwrap()
        ));
    }
    json.push_str("]}");
    let file = scratch.0.join("evil.json");
    std::fs::write(&file, json).unwrap();
    nft_in(&pod, &["-j", "-f", file.to_str().unwrap()]);
    // Docker arrives: the agent's MSS rules go in.
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let ours = eventually(Duration::from_secs(15), || nft_table_is_ours(&pod));
    assert!(
        ours,
        "seed {seed}: the table is the agent's; {}\nlog:\n{}",
        nft_in(&pod, &["list", "ruleset"]),
        n.tail()
    );
    let tables = nft_in(&pod, &["list", "tables"]);
    assert!(
        !tables.contains("injected"),
        "no command of the pod's ran: {tables}"
    );
    // The pod fills it again later: made again at the next reconcile.
    nft_in(&pod, &["-j", "-f", file.to_str().unwrap()]);
    assert!(
        eventually(Duration::from_secs(10), || nft_table_is_ours(&pod)),
        "{}",
        n.tail()
    );
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    assert!(
        !log.contains(&secret_text),
        "the node file reached the log:\n{}",
        n.tail()
    );
    assert!(!n.metrics().contains(&secret_text));
    assert_log_clean(&n.log, from);
}

/// Row 4: a pod that put 100,000 rules in the agent's iptables chain: one
/// ensure puts it right in one restore, in seconds, whatever the count.
#[test]
fn a_hundred_thousand_rules_in_our_chain_cost_one_ensure() {
    if !privileged("a_hundred_thousand_rules_in_our_chain_cost_one_ensure") {
        return;
    }
    let mut n = NodeLab::new("b100k");
    let scratch = Scratch::new(n.lab.prefix());
    let agent = hostile::start_agent(&mut n, &[], &[], &["--reconcile-interval", "2s"]);
    let pod = n.pod("rules", 1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let installed = |pod: &str| {
        let rules = common::node::mangle_rules(pod);
        rules
            .lines()
            .filter(|l| l.starts_with("-A MTUVISOR-MSS"))
            .count()
            == 1
            && rules.contains("-A FORWARD -j MTUVISOR-MSS")
    };
    assert!(
        eventually(Duration::from_secs(10), || installed(&pod)),
        "{}",
        n.tail()
    );
    let before = hostile::held(agent.pid);
    // The pod's own 100,000 rules, appended to the agent's chain.
    let mut text = String::from("*mangle\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "-A MTUVISOR-MSS -p tcp --dport {} -j ACCEPT\n",
            1 + i % 65000
        ));
    }
    text.push_str("COMMIT\n");
    let file = scratch.0.join("rules");
    std::fs::write(&file, text).unwrap();
    common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{pod}"),
        "iptables-restore",
        "--noflush",
        file.to_str().unwrap(),
    ]);
    let began = Instant::now();
    let mut peak = before;
    let fixed = eventually(Duration::from_secs(30), || {
        let now = hostile::held(agent.pid);
        if now.rss_kb > peak.rss_kb {
            peak = now;
        }
        installed(&pod)
    });
    assert!(fixed, "one copy again within 30 s; {}", n.tail());
    eprintln!(
        "100,000 rules in the agent's chain: one copy again {:?} after (reconcile every 2 s); agent {before} -> peak {peak}",
        began.elapsed()
    );
    assert!(
        peak.rss_kb < before.rss_kb + 8 * 1024,
        "memory bounded: {before} before, {peak} at the peak"
    );
}

/// List item: the tools run with only NET_ADMIN (and NET_RAW where held)
/// and no_new_privs, never with SYS_ADMIN, SYS_PTRACE or SYS_NICE; under
/// `node` and under `watch`.
#[test]
fn firewall_tools_run_with_net_admin_only_and_no_new_privs() {
    if !privileged("firewall_tools_run_with_net_admin_only_and_no_new_privs") {
        return;
    }
    let allowed = 1u64 << 12 | 1 << 13;
    let check = |mode: &str, log: &Path| {
        let seen = common::firewall::recorded_capabilities(log, "mtuvisor");
        assert!(!seen.is_empty(), "{mode}: the agent ran a tool");
        for (tool, eff, nnp) in &seen {
            assert_eq!(eff & !allowed, 0, "{mode}: {tool} ran with CapEff {eff:x}");
            assert!(nnp, "{mode}: {tool} ran without no_new_privs");
        }
        eprintln!(
            "{mode}: {} tool runs, each with CapEff within {allowed:x} and no_new_privs",
            seen.len()
        );
    };
    // node
    let mut n = NodeLab::new("bcaps");
    let scratch = Scratch::new(n.lab.prefix());
    let (bin, log) = (scratch.0.join("bin"), scratch.0.join("caps.log"));
    common::firewall::capability_recorders(&bin, &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _agent = hostile::start_agent(&mut n, &[], &[("PATH", &path)], &[]);
    let pod = n.pod("caps", 1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    assert!(
        eventually(Duration::from_secs(10), || common::node::mangle_rules(&pod)
            .contains("MTUVISOR-MSS")),
        "{}",
        n.tail()
    );
    check("node", &log);
    // watch
    let mut lab = common::Lab::new("bcapsw");
    let (wpod, _) = lab.pod(1450);
    let wlog = scratch.0.join("caps-watch.log");
    common::firewall::capability_recorders(&scratch.0.join("wbin"), &wlog);
    let wpath = format!(
        "{}:{}",
        scratch.0.join("wbin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    lab.watch(&wpod, &[], &[("PATH", &wpath)]);
    assert!(
        eventually(Duration::from_secs(10), || common::node::mangle_rules(
            &wpod
        )
        .contains("MTUVISOR-MSS")),
        "watch installs its rules"
    );
    check("watch", &wlog);
}

/// The same under `supervise`, whose dockerd runs the same tools with its
/// own capabilities (those are dockerd's business, told apart by parent).
#[test]
fn firewall_tools_run_with_net_admin_only_under_supervise() {
    if !common::dockerd::require_docker("firewall_tools_run_with_net_admin_only_under_supervise") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("bcapss");
    let scratch = Scratch::new(d.lab.prefix());
    let (bin, log) = (scratch.0.join("bin"), scratch.0.join("caps.log"));
    common::firewall::capability_recorders(&bin, &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    d.start_supervised_env(&[], &[("PATH", &path)]);
    d.ready();
    let pod = d.pod.clone();
    assert!(
        eventually(Duration::from_secs(20), || common::node::mangle_rules(&pod)
            .contains("-A MTUVISOR-MSS")),
        "supervise installs its rules; {}",
        d.tail()
    );
    let allowed = 1u64 << 12 | 1 << 13;
    let seen = common::firewall::recorded_capabilities(&log, "mtuvisor");
    assert!(!seen.is_empty(), "supervise ran a tool");
    for (tool, eff, nnp) in &seen {
        assert_eq!(
            eff & !allowed,
            0,
            "supervise: {tool} ran with CapEff {eff:x}"
        );
        assert!(nnp, "supervise: {tool} ran without no_new_privs");
    }
    let dockerd = common::firewall::recorded_capabilities(&log, "dockerd");
    eprintln!(
        "supervise: {} tool runs within {allowed:x} and no_new_privs; dockerd's own: {}",
        seen.len(),
        dockerd.len()
    );
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
}

/// Where the agents of these tests serve health apart from metrics.
const HEALTH: &str = "127.0.0.1:9465";

/// `/livez` at `addr` in `netns`: (status, body); 0 when it does not
/// answer.
fn livez(netns: &str, addr: &str) -> (u16, String) {
    common::try_http_get(netns, addr, "/livez").unwrap_or((0, String::new()))
}

/// Stops `tids` of the agent, waits for `/livez` to fail naming `part`
/// (within the timeout and a margin), lets them go, and waits for it to
/// answer 200 again; returns how long each took.
fn livez_follows_a_stopped_part(
    netns: &str,
    addr: &str,
    tids: Vec<i32>,
    part: &str,
    make_work: impl FnOnce(),
) -> (Duration, Duration) {
    assert_eq!(livez(netns, addr).0, 200, "alive before");
    let held = common::stall::stop(tids);
    make_work();
    let began = Instant::now();
    let mut body = String::new();
    let failed = eventually(Duration::from_secs(10), || {
        let (status, b) = livez(netns, addr);
        body = b;
        status == 503
    });
    let to_fail = began.elapsed();
    assert!(failed, "/livez fails while {part} is stopped: {body}");
    assert!(body.contains(part), "it names {part}: {body}");
    drop(held);
    let began = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || livez(netns, addr).0 == 200),
        "/livez answers 200 again once {part} goes on"
    );
    (to_fail, began.elapsed())
}

/// List item: `/livez` reads progress, not a flag set once. Each part the
/// agent needs (the enforcement loop, the MTU setter's workers, discovery)
/// stopped for real (ptrace) makes `/livez` fail within the timeout, on a
/// listener of its own; going on makes it pass again. Under `node`.
#[test]
fn livez_fails_when_the_loop_the_workers_or_discovery_stop_under_node() {
    if !privileged("livez_fails_when_the_loop_the_workers_or_discovery_stop_under_node") {
        return;
    }
    let mut n = NodeLab::new("blive");
    let agent = hostile::start_agent(
        &mut n,
        &[],
        &[],
        &["--liveness-timeout", "2s", "--health-addr", HEALTH],
    );
    let pod = n.pod("live", 1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    assert!(
        eventually(Duration::from_secs(10), || mtu(&pod, "docker0") == 1450),
        "{}",
        n.tail()
    );
    let from = log_len(&n.log);
    // The enforcement loop: the agent's main thread runs the runtime.
    let (fail, back) = livez_follows_a_stopped_part(
        &n.node,
        HEALTH,
        vec![agent.pid],
        "the enforcement loop",
        || {},
    );
    eprintln!("node, loop stopped: /livez 503 after {fail:?}, 200 again {back:?} after it went on");
    // The workers: stopped, then a new veth asks them for work.
    let workers = common::stall::threads_named(agent.pid, "mtu-set-");
    assert_eq!(workers.len(), 4, "the setter's workers");
    let (fail, back) = livez_follows_a_stopped_part(&n.node, HEALTH, workers, "workers", || {
        ip(
            &pod,
            &["link", "add", "lv0", "type", "veth", "peer", "name", "lv1"],
        );
        ip(&pod, &["link", "set", "lv0", "master", "docker0", "up"]);
    });
    eprintln!("node, workers stopped: /livez 503 after {fail:?}, 200 again {back:?} after");
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, "lv0") == 1450),
        "clamped once they go on"
    );
    // Discovery.
    let discovery = common::stall::threads_named(agent.pid, "discovery");
    let (fail, back) = livez_follows_a_stopped_part(&n.node, HEALTH, discovery, "discovery", || {});
    eprintln!("node, discovery stopped: /livez 503 after {fail:?}, 200 again {back:?} after");
    let warned = hostile::warnings_since(&n.log, from);
    assert_eq!(
        warned.len(),
        3,
        "one WARN per part that stopped: {warned:#?}"
    );
}

/// The same for the enforcement loop under `watch` and `supervise`.
#[test]
fn livez_fails_when_the_loop_stops_under_watch_and_supervise() {
    if !common::dockerd::require_docker("livez_fails_when_the_loop_stops_under_watch_and_supervise")
    {
        return;
    }
    let mut lab = common::Lab::new("blivew");
    let (pod, _) = lab.pod(1450);
    let w = lab.watch(
        &pod,
        &[
            "--liveness-timeout",
            "2s",
            "--metrics-addr",
            "127.0.0.1:9464",
        ],
        &[],
    );
    assert!(eventually(Duration::from_secs(10), || livez(
        &pod,
        "127.0.0.1:9464"
    )
    .0 == 200));
    let (fail, back) = livez_follows_a_stopped_part(
        &pod,
        "127.0.0.1:9464",
        vec![lab.pid(w)],
        "the enforcement loop",
        || {},
    );
    eprintln!("watch, loop stopped: /livez 503 after {fail:?}, 200 again {back:?} after");

    let mut d = common::dockerd::DockerLab::new("blives");
    d.start_supervised_env(
        &[
            "--liveness-timeout",
            "2s",
            "--metrics-addr",
            "127.0.0.1:9464",
        ],
        &[],
    );
    d.ready();
    let pid = d.lab.pid(d.main.unwrap());
    let (fail, back) = livez_follows_a_stopped_part(
        &d.pod,
        "127.0.0.1:9464",
        vec![pid],
        "the enforcement loop",
        || {},
    );
    eprintln!("supervise, loop stopped: /livez 503 after {fail:?}, 200 again {back:?} after");
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
}

/// List item: the probes are served on a listener no pod can fill: with
/// every slot of the metrics port held from 20 pods (4 each, reopened as
/// soon as dropped: most probes there are refused), `/livez` and
/// `/healthz` on `health_addr` answer at once.
#[test]
fn probes_answer_while_pods_fill_the_metrics_port() {
    if !privileged("probes_answer_while_pods_fill_the_metrics_port") {
        return;
    }
    let mut n = NodeLab::new("bfill");
    let _agent = hostile::start_agent(&mut n, &[], &[], &["--health-addr", HEALTH]);
    let gateway = format!("10.244.0.1:{}", hostile::metrics_port());
    let mut attacks = Vec::new();
    for i in 0..20 {
        let pod = n.pod(&format!("f{i}"), 1450);
        attacks.push(hostile::occupy_connections(&pod, &gateway, 4));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The metrics port is full: a probe there is refused.
    let metrics_refused = (0..20)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(100));
            !common::try_http_get(&n.node, METRICS, "/livez").is_ok_and(|(s, _)| s == 200)
        })
        .count();
    for path in ["/livez", "/healthz"] {
        for _ in 0..5 {
            let t = Instant::now();
            let (status, body) = common::try_http_get(&n.node, HEALTH, path)
                .unwrap_or_else(|e| panic!("{path} on the health listener: {e}"));
            assert_eq!(status, 200, "{path}: {body}");
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{path} took {:?}",
                t.elapsed()
            );
        }
    }
    eprintln!("20 pods holding 4 connections each to the metrics port: {metrics_refused}/20 probes there failed; every probe on the health listener answered 200 within 1 s");
    assert!(
        metrics_refused >= 10,
        "the pods fill the metrics port: {metrics_refused}/20 refused"
    );
    // The health listener serves health only.
    let (status, _) = common::http_get(&n.node, HEALTH, "/metrics");
    assert_eq!(status, 404);
}

/// The soft and hard limits on open files of `pid`.
fn open_file_limits(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// List item: the agent raises its soft limit on open files to the hard
/// one, and a far-end search holds a handful of files however many
/// namespaces the node has: with 128 files allowed and 300 namespaces one
/// pod made, a far end behind them is found and clamped.
#[test]
fn a_far_end_search_holds_few_files_whatever_the_namespaces() {
    if !privileged("a_far_end_search_holds_few_files_whatever_the_namespaces") {
        return;
    }
    // Raised to the hard limit.
    let mut n = NodeLab::new("bnofile");
    let agent =
        hostile::start_agent_wrapped(&mut n, &["prlimit", "--nofile=256:4096"], &[], &[], &[]);
    assert_eq!(
        open_file_limits(agent.pid),
        (4096, 4096),
        "soft raised to hard"
    );
    drop(n);
    // Held at 128: the search opens one namespace file at a time.
    let mut n = NodeLab::new("bnsfd");
    let scratch = Scratch::new(n.lab.prefix());
    let agent =
        hostile::start_agent_wrapped(&mut n, &["prlimit", "--nofile=128:128"], &[], &[], &[]);
    let pod = n.pod("many", 1450);
    let crowd = hostile::namespaces(&agent, &pod, 300, false);
    assert!(
        eventually(Duration::from_secs(30), || hostile::namespaces_held_below(
            crowd.root_pid()
        ) > 300),
        "300 namespaces exist"
    );
    let (_holding, holder) = hostile::own_namespace(&agent, &pod, &scratch.0);
    let names: Vec<Vec<u8>> = (0..4).map(|i| format!("c{i}").into_bytes()).collect();
    let mut peak = 0;
    hostile::far_ends_named(&pod, "docker0", holder, &names, None);
    let clamped = eventually(Duration::from_secs(15), || {
        peak = peak.max(hostile::held(agent.pid).fds);
        pairs_at(&pod, holder, 4, 1450)
    });
    assert!(
        clamped,
        "far ends behind 300 namespaces found with 128 files; log:\n{}",
        n.tail()
    );
    eprintln!("a far end found past 300 namespaces: the agent held {peak} fds at most (limit 128)");
    assert!(peak < 100, "{peak} fds");
}

/// The simulated node's uplink: a router and a server beyond it, whose
/// link carries 1400 and whose "fragmentation needed" the router drops (a
/// black hole the probe measures by silence, each silent size waiting a
/// quarter second); the node's default route through it. Returns the
/// server's address.
fn uplink(n: &mut NodeLab) -> &'static str {
    uplink_named(n).0
}

/// [`uplink`], also returning the router's and the server's namespaces.
fn uplink_named(n: &mut NodeLab) -> (&'static str, String, String) {
    let router = n.lab.netns("rt");
    let server = n.lab.netns("srv");
    ip(
        &n.node,
        &[
            "link", "add", "up0", "type", "veth", "peer", "name", "down0", "netns", &router,
        ],
    );
    ip(&n.node, &["addr", "add", "192.0.2.2/24", "dev", "up0"]);
    ip(&n.node, &["link", "set", "up0", "up"]);
    ip(&n.node, &["route", "add", "default", "via", "192.0.2.1"]);
    ip(&router, &["addr", "add", "192.0.2.1/24", "dev", "down0"]);
    ip(&router, &["link", "set", "down0", "up"]);
    ip(
        &router,
        &[
            "link", "add", "r1", "type", "veth", "peer", "name", "s1", "netns", &server,
        ],
    );
    ip(&router, &["addr", "add", "203.0.113.1/24", "dev", "r1"]);
    ip(&router, &["link", "set", "r1", "mtu", "1400", "up"]);
    ip(&server, &["addr", "add", "203.0.113.10/24", "dev", "s1"]);
    ip(&server, &["link", "set", "s1", "mtu", "1400", "up"]);
    common::drop_frag_needed(&router);
    ip(&server, &["route", "add", "default", "via", "203.0.113.1"]);
    common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{router}"),
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    ("203.0.113.10", router, server)
}

/// A TCP listener in `netns` on `port` that reads and discards, until the
/// returned flag is set.
fn tcp_sink(netns: &str, port: u16) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::io::Read;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let netns = netns.to_string();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        common::enter_netns(&netns);
        let listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    std::thread::spawn(move || {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut b = [0u8; 65536];
                        while matches!(c.read(&mut b), Ok(n) if n > 0) {}
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready.recv().unwrap();
    stop
}

/// The Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// From inside `pod` (address `from`), "fragmentation needed, MTU `mtu`"
/// to the node's address `node`, quoting an echo from `probe_src` to
/// `target` with every sequence number in `seqs` (any identifier), over
/// and over until `stop`: what a pod can send to steer a probe it cannot
/// see.
fn forge_frag_needed(
    pod: String,
    from: [u8; 4],
    node: [u8; 4],
    probe_src: [u8; 4],
    target: [u8; 4],
    mtu: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    forge_frag_needed_quoting(pod, from, node, probe_src, target, mtu, 8, stop)
}

/// [`forge_frag_needed`] quoting an ICMP message of type `quoted_type` (8:
/// an echo request; 0: an echo reply, which no socket of the node needs
/// to match for the kernel to lower its cached path MTU toward `target`).
#[allow(clippy::too_many_arguments)]
fn forge_frag_needed_quoting(
    pod: String,
    from: [u8; 4],
    node: [u8; 4],
    probe_src: [u8; 4],
    target: [u8; 4],
    mtu: u16,
    quoted_type: u8,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        common::enter_netns(&pod);
        // SAFETY: a raw socket; the fd is ours.
        let fd = unsafe {
            nix::libc::socket(
                nix::libc::AF_INET,
                nix::libc::SOCK_RAW,
                nix::libc::IPPROTO_RAW,
            )
        };
        assert!(fd >= 0, "raw socket");
        let mut sent = 0u64;
        let mut rng = Rng::new(7);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for seq in 0u16..64 {
                let mut quoted = vec![0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 1, 0, 0];
                quoted.extend_from_slice(&probe_src);
                quoted.extend_from_slice(&target);
                let qsum = checksum(&quoted);
                quoted[10..12].copy_from_slice(&qsum.to_be_bytes());
                let id = rng.next_u64() as u16;
                quoted.extend_from_slice(&[quoted_type, 0, 0, 0]);
                quoted.extend_from_slice(&id.to_be_bytes());
                quoted.extend_from_slice(&seq.to_be_bytes());
                let mut icmp = vec![3, 4, 0, 0, 0, 0];
                icmp.extend_from_slice(&mtu.to_be_bytes());
                icmp.extend_from_slice(&quoted);
                let sum = checksum(&icmp);
                icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
                packet.extend_from_slice(&from);
                packet.extend_from_slice(&node);
                let len = (packet.len() + icmp.len()) as u16;
                packet[2..4].copy_from_slice(&len.to_be_bytes());
                packet.extend_from_slice(&icmp);
                let to = nix::libc::sockaddr_in {
                    sin_family: nix::libc::AF_INET as nix::libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: nix::libc::in_addr {
                        s_addr: u32::from_ne_bytes(node),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: a valid fd, a buffer with its length, a sockaddr_in.
                let n = unsafe {
                    nix::libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&to as *const nix::libc::sockaddr_in).cast(),
                        std::mem::size_of::<nix::libc::sockaddr_in>() as nix::libc::socklen_t,
                    )
                };
                if n > 0 {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: our fd.
        unsafe { nix::libc::close(fd) };
        sent
    })
}

/// List item: `path_probe` cannot be steered from a pod. The path beyond
/// the node carries 1400 (silently); a pod sprays the node's address with
/// "fragmentation needed, MTU 1300" quoting the probe's echo with every
/// early sequence number: the path stays measured at 1400, and the pods'
/// target with it, never 1300.
#[test]
fn a_pod_cannot_lower_the_node_path_probe_with_forged_icmp() {
    if !privileged("a_pod_cannot_lower_the_node_path_probe_with_forged_icmp") {
        return;
    }
    let mut n = NodeLab::new("bpmtu");
    let target = uplink(&mut n);
    let _agent = hostile::start_agent(
        &mut n,
        &[],
        &[],
        &["--path-probe", target, "--path-probe-interval", "1s"],
    );
    // The probe runs for the pods that follow it.
    let pod = n.pod("victim", 1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let series = format!("mtuvisor_path_mtu{{path_target=\"{target}\",ceiling=\"1500\"}}");
    assert!(
        eventually(Duration::from_secs(15), || n.sample(&series)
            == Some(1400.0)),
        "the path measured first: {:?}; {}",
        n.sample(&series),
        n.tail()
    );
    assert!(eventually(Duration::from_secs(5), || mtu(&pod, "docker0") == 1400));
    let forger = n.pod("forger", 1450);
    let addr = ip(&forger, &["-4", "-o", "addr", "show", "dev", "eth0"]);
    let from: std::net::Ipv4Addr = addr
        .split_whitespace()
        .find(|w| w.starts_with("10.244."))
        .and_then(|w| w.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("the forger's address");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spray = forge_frag_needed(
        forger.clone(),
        from.octets(),
        [10, 244, 0, 1],
        [192, 0, 2, 2],
        [203, 0, 113, 10],
        1300,
        stop.clone(),
    );
    // Fifteen seconds of forged messages, a probe every second.
    let mut lowest = 1500.0f64;
    let mut lowest_pod = 1500;
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(15) {
        if let Some(v) = n.sample(&series) {
            lowest = lowest.min(v);
        }
        lowest_pod = lowest_pod.min(mtu(&pod, "docker0"));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = spray.join().unwrap();
    eprintln!("{sent} forged messages over 15 s: path measured at {lowest} at the lowest, the pod's docker0 at {lowest_pod}");
    assert!(sent > 1000, "the forger sent {sent}");
    assert_eq!(
        lowest,
        1400.0,
        "the path measured 1400 throughout; {}",
        n.tail()
    );
    assert_eq!(lowest_pod, 1400, "no pod's target went below the path");
}

/// What one process with NET_ADMIN in `forger` (a pod's namespace) sends
/// as the kernel's link notifications, while a canary gets new veths:
/// 400 links with 64 KiB kinds, 300 datagrams of 1,000 small ones, 300 of
/// 1,000 undecodable ones. Nothing of it is read (the sender is not the
/// kernel): the canary is clamped as usual, the enforcer's memory stays
/// where it was, and it says so once. Returns (canary p95, memory before,
/// memory after, warnings, the counter).
fn forged_notifications(
    mode: &str,
    forger: &str,
    canary: &hostile::Canary,
    pid: i32,
    log: &Path,
    metrics: (&str, &str),
) {
    let before = hostile::held(pid);
    let from = log_len(log);
    let forger = forger.to_string();
    let sending = std::thread::spawn(move || {
        let a = hostile::forge_link_notifications(
            &forger,
            hostile::Forgery::BigKinds { kind_len: 65_000 },
            400,
            1,
            Duration::from_millis(2),
        );
        let b = hostile::forge_link_notifications(
            &forger,
            hostile::Forgery::Flood,
            300,
            1000,
            Duration::from_millis(1),
        );
        let c = hostile::forge_link_notifications(
            &forger,
            hostile::Forgery::Undecodable,
            300,
            1000,
            Duration::from_millis(1),
        );
        a + b + c
    });
    let mut clamps = Vec::new();
    while !sending.is_finished() {
        let series = canary.series(10);
        assert!(
            series.iter().all(Option::is_some),
            "{mode}: every canary veth clamped while forged notifications arrive: {series:?}"
        );
        clamps.extend(series.into_iter().flatten());
    }
    let sent = sending.join().unwrap();
    let after = hostile::held(pid);
    clamps.sort();
    let p95 = common::percentile(&clamps, 95.0);
    let warned = hostile::warnings_since(log, from);
    let text = common::try_http_get(metrics.0, metrics.1, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let dropped: f64 = text
        .lines()
        .filter(|l| l.starts_with("mtuvisor_netlink_not_from_kernel_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "{mode}: {sent} forged datagrams: {dropped} dropped unread; canary {} veths, p95 {}; enforcer {before} -> {after}; {} warning(s)",
        clamps.len(),
        common::ms(p95),
        warned.len()
    );
    assert!(dropped > 0.0, "{mode}: the forgeries are counted");
    assert!(
        after.anon_kb < before.anon_kb + 16 * 1024,
        "{mode}: memory bounded: {before} -> {after}"
    );
    assert!(
        warned.len() <= 1,
        "{mode}: one warning at most:\n{}",
        warned.join("\n")
    );
    assert!(
        p95 < Duration::from_millis(50),
        "{mode}: the canary clamped as usual: p95 {}",
        common::ms(p95)
    );
}

fn canary_in(lab: &mut common::Lab, pod: &str, bridge: &str) -> hostile::Canary {
    if !ip(pod, &["-o", "link", "show"]).contains(&format!(": {bridge}:")) {
        ip(pod, &["link", "add", bridge, "type", "bridge"]);
        ip(pod, &["link", "set", bridge, "up"]);
    }
    let containers = (0..2).map(|i| lab.netns(&format!("cc{i}"))).collect();
    hostile::Canary {
        pod: pod.to_string(),
        bridge: bridge.to_string(),
        containers,
        target: 1450,
    }
}

/// Attack review, finding 1-4: forged link notifications from inside a
/// pod, under `node` (the forger one pod, the canary another).
#[test]
fn forged_link_notifications_are_dropped_unread_under_node() {
    if !privileged("forged_link_notifications_are_dropped_unread_under_node") {
        return;
    }
    let mut n = NodeLab::new("bforge");
    let agent = hostile::start_agent(&mut n, &[], &[], &[]);
    let canary_pod = n.pod("canary", 1450);
    let c = canary_in(&mut n.lab, &canary_pod, "docker0");
    assert!(eventually(Duration::from_secs(10), || mtu(
        &canary_pod,
        "docker0"
    ) == 1450));
    let forger = n.pod("forger", 1450);
    ip(&forger, &["link", "add", "docker0", "type", "bridge"]);
    assert!(eventually(Duration::from_secs(10), || mtu(
        &forger, "docker0"
    ) == 1450));
    let (node, log) = (n.node.clone(), n.log.clone());
    forged_notifications("node", &forger, &c, agent.pid, &log, (&node, METRICS));
    let (status, _) = common::http_get(&node, METRICS, "/livez");
    assert_eq!(status, 200);
}

/// The same inside the pod an enforcer watches from within: `watch`, and
/// `supervise` (whose jobs can `docker run --network host --cap-add
/// NET_ADMIN`).
#[test]
fn forged_link_notifications_are_dropped_unread_under_watch_and_supervise() {
    if !common::dockerd::require_docker(
        "forged_link_notifications_are_dropped_unread_under_watch_and_supervise",
    ) {
        return;
    }
    const ADDR: &str = "127.0.0.1:9464";
    let mut lab = common::Lab::new("bforgew");
    let (pod, _) = lab.pod(1450);
    let scratch = Scratch::new(lab.prefix());
    let log = scratch.0.join("watch.log");
    let mut cmd = common::mtuvisor_in(&pod);
    cmd.args(["watch", "--metrics-addr", ADDR])
        .env("MTUVISOR_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let w = lab.spawn(cmd);
    let c = canary_in(&mut lab, &pod, "docker0");
    assert!(eventually(Duration::from_secs(10), || mtu(&pod, "docker0") == 1450));
    let pid = lab.pid(w);
    forged_notifications("watch", &pod, &c, pid, &log, (&pod, ADDR));

    let mut d = common::dockerd::DockerLab::new("bforges");
    d.start_supervised_env(&["--metrics-addr", ADDR], &[]);
    d.ready();
    let pod = d.pod.clone();
    let c = canary_in(&mut d.lab, &pod, "br-00000000f0f0");
    assert!(eventually(Duration::from_secs(10), || mtu(
        &pod,
        "br-00000000f0f0"
    ) == 1450));
    let (pid, log) = (d.lab.pid(d.main.unwrap()), d.log.clone());
    forged_notifications("supervise", &pod, &c, pid, &log, (&pod, ADDR));
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
}

/// The forger's address (its eth0's) in a node lab.
fn address_of(pod: &str) -> [u8; 4] {
    let addr = ip(pod, &["-4", "-o", "addr", "show", "dev", "eth0"]);
    addr.split_whitespace()
        .find(|w| w.starts_with("10.244."))
        .and_then(|w| w.split('/').next())
        .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .expect("the pod's address")
        .octets()
}

/// Attack review, finding 5: the TCP probe (a `HOST:PORT` target whose
/// ICMP echo is filtered) took its sizes from the kernel's cached path
/// MTU, which one forged "fragmentation needed" quoting an echo reply
/// lowers: every pod's target followed. Now a size the cache is below is
/// "not measured", and the targets stay where the path puts them.
#[test]
fn the_tcp_path_probe_does_not_follow_a_forged_path_mtu() {
    if !privileged("the_tcp_path_probe_does_not_follow_a_forged_path_mtu") {
        return;
    }
    let mut n = NodeLab::new("btcp");
    let (_, _router, server) = uplink_named(&mut n);
    common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{server}"),
        "sysctl",
        "-qw",
        "net.ipv4.icmp_echo_ignore_all=1",
    ]);
    let sink = tcp_sink(&server, 8080);
    let _agent = hostile::start_agent(
        &mut n,
        &[],
        &[],
        &[
            "--path-probe",
            "203.0.113.10:8080",
            "--path-probe-interval",
            "2s",
        ],
    );
    let victim = n.pod("victim", 1450);
    ip(&victim, &["link", "add", "docker0", "type", "bridge"]);
    let series = r#"mtuvisor_path_mtu{path_target="203.0.113.10:8080",ceiling="1500"}"#;
    assert!(
        eventually(Duration::from_secs(30), || n.sample(series) == Some(1400.0)),
        "measured over TCP first: {:?}; {}",
        n.sample(series),
        n.tail()
    );
    assert!(eventually(Duration::from_secs(10), || mtu(
        &victim, "docker0"
    ) == 1400));
    let forger = n.pod("forger", 1450);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spray = forge_frag_needed_quoting(
        forger.clone(),
        address_of(&forger),
        [10, 244, 0, 1],
        [192, 0, 2, 2],
        [203, 0, 113, 10],
        600,
        0,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let node = n.node.clone();
    let cache = common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{node}"),
        "ip",
        "route",
        "get",
        "203.0.113.10",
    ]);
    let began = Instant::now();
    let mut lowest = 1400u32;
    while began.elapsed() < Duration::from_secs(15) {
        lowest = lowest.min(mtu(&victim, "docker0"));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = spray.join().unwrap();
    sink.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{sent} forged messages quoting an echo reply; the node's route: {}; the pod's docker0 at {lowest} at the lowest over 15 s",
        cache.trim().replace('\n', " | ")
    );
    assert!(
        cache.contains("mtu 600"),
        "the forgery lowered the node's cached path MTU: {cache}"
    );
    assert_eq!(lowest, 1400, "no pod followed it; {}", n.tail());
}

/// Attack review, finding 6: one lost echo lowered every pod until the
/// next probe. Every tenth ICMP packet through the router is dropped: the
/// path stays measured at 1400, and the pods' target with it.
#[test]
fn lost_echoes_do_not_narrow_the_path() {
    if !privileged("lost_echoes_do_not_narrow_the_path") {
        return;
    }
    let mut n = NodeLab::new("bloss");
    let (target, router, _) = uplink_named(&mut n);
    common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{router}"),
        "iptables",
        "-I",
        "FORWARD",
        "-p",
        "icmp",
        "-m",
        "statistic",
        "--mode",
        "nth",
        "--every",
        "10",
        "--packet",
        "0",
        "-j",
        "DROP",
    ]);
    let _agent = hostile::start_agent(
        &mut n,
        &[],
        &[],
        &["--path-probe", target, "--path-probe-interval", "1s"],
    );
    let victim = n.pod("victim", 1450);
    ip(&victim, &["link", "add", "docker0", "type", "bridge"]);
    assert!(
        eventually(Duration::from_secs(20), || mtu(&victim, "docker0") == 1400),
        "{}",
        n.tail()
    );
    let began = Instant::now();
    let mut lowest = 1400u32;
    while began.elapsed() < Duration::from_secs(30) {
        lowest = lowest.min(mtu(&victim, "docker0"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
    let readings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("path MTU measured"))
        .collect();
    eprintln!(
        "every tenth ICMP packet lost: the pod's docker0 at {lowest} at the lowest over 30 s; {} changes of the measured path",
        readings.len()
    );
    assert_eq!(lowest, 1400, "{}", readings.join("\n"));
}
