//! `mtuvisor node` on a simulated Kubernetes node (testkit/src/node.rs):
//! pod namespaces made as a CNI plugin makes them, the agent in the node's
//! namespace, discovery by the pods' files in /run/netns (inotify), and
//! real links, veths and firewall rules in each pod.

use testkit as common;

use std::time::{Duration, Instant};

use common::hostile::{children_of, namespaces_of_threads};
use common::node::{mangle_rules, snapshot, NodeLab};
use common::{docker_style_veth, eventually, ip, mtu, privileged};

/// What Docker makes in a pod: a bridge with `containers` veths whose far
/// ends are the `eth0` of container namespaces (`<prefix>-c<pod><n>`).
fn docker_in(
    lab: &mut NodeLab,
    pod: &str,
    bridge: &str,
    tag: &str,
    containers: usize,
) -> Vec<String> {
    ip(pod, &["link", "add", bridge, "type", "bridge"]);
    ip(pod, &["link", "set", bridge, "up"]);
    (0..containers)
        .map(|i| {
            let c = lab.lab.netns(&format!("c{tag}{i}"));
            docker_style_veth(pod, bridge, &format!("veth{tag}{i}"), &c);
            c
        })
        .collect()
}

/// Every Docker link of a pod and its containers' `eth0` at `want`.
fn all_at(pod: &str, bridge: &str, tag: &str, containers: &[String], want: u32) -> bool {
    mtu(pod, bridge) == want
        && containers
            .iter()
            .enumerate()
            .all(|(i, c)| mtu(pod, &format!("veth{tag}{i}")) == want && mtu(c, "eth0") == want)
}

#[test]
fn agent_first_then_pods_each_at_its_own_mtu() {
    if !privileged("agent_first_then_pods_each_at_its_own_mtu") {
        return;
    }
    let mut n = NodeLab::new("nfirst");
    let node_before = snapshot(&n.node);
    let agent = n.agent(&[]);

    let a = n.pod("a", 1450);
    let b = n.pod("b", 1400);
    // A pod without Docker: bridges of other names, and a macvlan.
    let plain = n.pod("plain", 1450);
    for br in ["cni0", "lxcbr0"] {
        ip(&plain, &["link", "add", br, "type", "bridge"]);
        ip(&plain, &["link", "set", br, "up"]);
    }
    ip(
        &plain,
        &[
            "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
    );
    let plain_before = snapshot(&plain);

    let ca = docker_in(&mut n, &a, "docker0", "a", 3);
    let cb = docker_in(&mut n, &b, "br-0123456789ab", "b", 3);
    let t = Instant::now();
    let settled = eventually(Duration::from_secs(10), || {
        all_at(&a, "docker0", "a", &ca, 1450) && all_at(&b, "br-0123456789ab", "b", &cb, 1400)
    });
    assert!(
        settled,
        "each pod at its own eth0's MTU; log:\n{}",
        n.tail()
    );
    eprintln!(
        "pods created after the agent: at target {:?} after the last veth",
        t.elapsed()
    );

    // MSS rules where Docker is, nowhere else.
    let has_rules = |ns: &str| mangle_rules(ns).contains("MTUVISOR-MSS");
    assert!(
        eventually(Duration::from_secs(10), || has_rules(&a) && has_rules(&b)),
        "MSS rules in both DinD pods; log:\n{}",
        n.tail()
    );
    assert!(!has_rules(&plain), "no MSS rules in the pod without Docker");
    assert!(!has_rules(&n.node), "no MSS rules in the node's namespace");
    // One set of clamping threads at real-time priority (the default) for
    // all pods; every other thread (those that entered pods, the blocking
    // pool running iptables) is ordinary.
    common::assert_clamping_threads(n.lab.pid(agent), Some(1));

    // Lowering one pod's eth0 moves that pod only.
    ip(&b, &["link", "set", "eth0", "mtu", "1380"]);
    assert!(
        eventually(Duration::from_secs(10), || all_at(
            &b,
            "br-0123456789ab",
            "b",
            &cb,
            1380
        )),
        "pod b follows its eth0 to 1380; log:\n{}",
        n.tail()
    );
    assert!(all_at(&a, "docker0", "a", &ca, 1450), "pod a stays at 1450");
    common::far_ends_a_moment_apart(&mut n.lab, &a, "docker0", 1450);
    // One more container of pod a, made as dockerd makes one: clamped from
    // its notification, timed, and split into stages, as under `watch`
    // (tests/metrics.rs) and `supervise`.
    let late = n.lab.netns("alate");
    docker_style_veth(&a, "docker0", "vethlate", &late);
    assert!(eventually(Duration::from_secs(2), || mtu(&late, "eth0") == 1450));
    let mut split = Err(String::new());
    assert!(
        eventually(Duration::from_secs(5), || {
            split = common::clamps_split_into_stages(&n.metrics());
            split.as_ref().is_ok_and(|clamps| *clamps >= 1.0)
        }),
        "every clamp timed is split into its stages, across the node's pods: {split:?}"
    );

    let m = n.metrics();
    for (series, want) in [
        ("mtuvisor_node_namespaces{state=\"watched\"}", 3.0),
        ("mtuvisor_node_namespaces{state=\"enforcing\"}", 2.0),
    ] {
        assert_eq!(n.sample(series), Some(want), "{series} in:\n{m}");
    }
    assert!(
        m.contains(&format!("mtuvisor_target_mtu{{netns=\"{b}\"}} 1380")),
        "{m}"
    );
    assert!(
        m.contains(&format!("mtuvisor_target_mtu{{netns=\"{a}\"}} 1450")),
        "{m}"
    );

    // Nothing of the plain pod or of the node was changed, link by link.
    assert_eq!(snapshot(&plain), plain_before, "the pod without Docker");
    let node_after: Vec<_> = snapshot(&n.node)
        .into_iter()
        .filter(|(name, _)| !name.starts_with("vp"))
        .collect();
    assert_eq!(node_after, node_before, "the node's own links");

    // A clean stop removes the MSS rules from every pod.
    let status = n.lab.stop(agent, Duration::from_secs(15));
    assert!(status.success(), "agent exit status {status:?}");
    assert!(
        !has_rules(&a) && !has_rules(&b),
        "rules removed on a clean stop"
    );
}

#[test]
fn agent_after_pods_with_running_containers() {
    if !privileged("agent_after_pods_with_running_containers") {
        return;
    }
    let mut n = NodeLab::new("nafter");
    let a = n.pod("a", 1450);
    let b = n.pod("b", 1420);
    let ca = docker_in(&mut n, &a, "docker0", "a", 4);
    let cb = docker_in(&mut n, &b, "br-00000000beef", "b", 4);
    assert!(all_at(&a, "docker0", "a", &ca, 1500), "set-up at 1500");

    let t = Instant::now();
    n.agent(&[]);
    let settled = eventually(Duration::from_secs(10), || {
        all_at(&a, "docker0", "a", &ca, 1450) && all_at(&b, "br-00000000beef", "b", &cb, 1420)
    });
    let took = t.elapsed();
    assert!(settled, "existing links at target; log:\n{}", n.tail());
    eprintln!("agent started after the pods: every link at target {took:?} after its start");
}

/// `mtuvisor node` in `node` (the namespace at the far end of the pod's
/// eth0), for the one pod namespace `pod`, logging to `log`.
fn agent_for(lab: &mut common::Lab, node: &str, pod: &str, log: &std::path::Path) -> usize {
    agent_for_with(lab, node, pod, log, &[])
}

fn agent_for_with(
    lab: &mut common::Lab,
    node: &str,
    pod: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> usize {
    let mut cmd = common::mtuvisor_in(node);
    cmd.args(["node", "--proc-scan", "off", "--netns-include", pod])
        .args(extra)
        .env("MTUVISOR_NETNS_DIRS", "/run/netns")
        .env("MTUVISOR_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    lab.spawn(cmd)
}

/// A real dockerd in a pod, started after the agent, with no change to
/// it: 50 containers started at once on a user-defined network, the
/// default bridge and a `docker build` RUN step all read the pod's MTU at
/// their first instruction.
#[test]
fn a_dockerd_in_a_pod_under_the_agent() {
    if !common::dockerd::require_docker("a_dockerd_in_a_pod_under_the_agent") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("ndind");
    let log = d.dir.join("agent.log");
    let (router, pod) = (d.router.clone(), d.pod.clone());
    agent_for(&mut d.lab, &router, &pod, &log);
    let enforcing = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("enforcing in a pod network namespace")
    });
    assert!(
        enforcing,
        "the agent found the pod: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    d.start_plain();
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    common::dockerd::fifty_in_parallel(&d, "ci");
    assert_eq!(d.first_instruction_mtu(None), "1450", "default bridge");
    assert_eq!(build_step_mtu(&d), "1450", "a docker build RUN step");
    assert!(
        common::node::mangle_rules(&pod).contains("MTUVISOR-MSS"),
        "MSS rules in the DinD pod"
    );
    // Normal churn says nothing: 60 `docker run --rm`, six at a time (an
    // exited container's namespace goes a moment before its host veth).
    let from = common::hostile::log_len(&log);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..10 {
                    d.docker_ok(&[
                        "run",
                        "--rm",
                        "--network",
                        "ci",
                        common::dockerd::IMAGE,
                        "true",
                    ]);
                }
            });
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let warned = common::hostile::warnings_since(&log, from);
    assert!(
        warned.is_empty(),
        "60 containers came and went without a warning: {warned:#?}"
    );
}

/// Through the black-hole lab: from a pod under the agent, an inner
/// container downloads 8 MB; without the agent the same download stalls
/// (tests/pmtu_blackhole.rs shows the stall on the same lab).
#[test]
fn the_black_hole_is_closed_by_the_agent() {
    if !common::dockerd::require_docker("the_black_hole_is_closed_by_the_agent") {
        return;
    }
    let mut b = common::blackhole::BlackHole::new("nbh", 1450);
    b.d.start_plain();
    b.d.ready();
    b.d.import_busybox();
    let limit = Duration::from_secs(15);
    assert_eq!(
        b.fetch("bridge", &b.http_big(), limit),
        None,
        "without the agent, the download stalls"
    );
    let log = b.d.dir.join("agent.log");
    let (router, pod) = (b.d.router.clone(), b.d.pod.clone());
    agent_for(&mut b.d.lab, &router, &pod, &log);
    assert!(
        eventually(Duration::from_secs(10), || mtu(&pod, "docker0") == 1450),
        "docker0 clamped: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let took = b.fetch("bridge", &b.http_big(), limit);
    assert!(
        took.is_some(),
        "with the agent, the 8 MB download completes: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!("8 MB through the black hole under the agent: {took:?}");
}

/// Bad values for the agent: one line, exit 2, and no pod touched.
#[test]
fn bad_node_settings_are_refused_before_anything_is_touched() {
    if !privileged("bad_node_settings_are_refused_before_anything_is_touched") {
        return;
    }
    let mut n = NodeLab::new("nbad");
    let a = n.pod("a", 1450);
    ip(&a, &["link", "add", "docker0", "type", "bridge"]);
    for (args, env, mentions) in [
        (
            vec!["--proc-scan", "5ms"],
            vec![],
            vec!["proc_scan", "\"5ms\"", "100ms"],
        ),
        (
            vec!["--include-host", "maybe"],
            vec![],
            vec!["include_host", "\"maybe\""],
        ),
        (
            vec![],
            vec![("MTUVISOR_NETNS_INCLUDE", ",")],
            vec!["netns_include", "MTUVISOR_NETNS_INCLUDE"],
        ),
        (vec!["--mtu", "20"], vec![], vec!["mtu", "\"20\""]),
        (
            vec!["--realtime-priority=-1"],
            vec![],
            vec!["realtime_priority", "\"-1\"", "1–99"],
        ),
    ] {
        let include = n.include();
        let mut all = vec!["node", "--netns-include", &include];
        all.extend(args.iter().copied());
        let out = common::run_mtuvisor(&n.node, &all, &env);
        common::assert_rejected(&out, &mentions);
    }
    assert_eq!(mtu(&a, "docker0"), 1500, "no pod touched");
    assert!(!mangle_rules(&a).contains("MTUVISOR"), "no rules written");
}

/// MSS rule copies in `netns` in every backend, IPv4 and IPv6 summed:
/// (rules in mtuvisor's chain, jumps to it), iptables' nf_tables and
/// legacy flavours together, and an nft table counted as one of each. Two
/// agents that chose different backends would show as two copies.
fn mss_copies(netns: &str) -> (usize, usize) {
    let mut counts = (0, 0);
    let nft = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["nft", "list", "tables"])
        .output()
        .expect("nft");
    if String::from_utf8_lossy(&nft.stdout).contains("mtuvisor") {
        counts = (1, 1);
    }
    for tool in [
        "iptables-save",
        "ip6tables-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args([tool, "-t", "mangle"])
            .output()
            .expect(tool);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("-A MTUVISOR-MSS ") {
                counts.0 += 1;
            } else if line.starts_with("-A ") && line.ends_with("-j MTUVISOR-MSS") {
                counts.1 += 1;
            }
        }
    }
    counts
}

/// A pod that runs `mtuvisor supervise` itself, under the agent too: one
/// copy of the MSS rules and no MTU flapping while both run; when either
/// stops and removes the rules, the other puts them back within its
/// reconcile interval (1 s here).
#[test]
fn the_agent_and_supervise_in_one_pod() {
    if !common::dockerd::require_docker("the_agent_and_supervise_in_one_pod") {
        return;
    }
    const ONE_COPY: (usize, usize) = (2, 2);
    let mut d = common::dockerd::DockerLab::new("ncoex");
    d.start_supervised(&["--reconcile-interval", "1s"]);
    d.ready();
    let log = d.dir.join("agent.log");
    let (router, pod) = (d.router.clone(), d.pod.clone());
    let agent = agent_for_with(
        &mut d.lab,
        &router,
        &pod,
        &log,
        &["--reconcile-interval", "1s"],
    );
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || agent_log()
            .contains("enforcing in a pod network namespace")),
        "the agent found the pod: {}",
        agent_log()
    );
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    assert_eq!(d.first_instruction_mtu(Some("ci")), "1450");
    assert!(
        eventually(Duration::from_secs(5), || mss_copies(&pod) == ONE_COPY),
        "one copy: {:?}",
        mss_copies(&pod)
    );
    // Both at work for 3 s (three reconciles each): never two copies,
    // never a link moved.
    let sets = |text: &str| text.lines().filter(|l| l.contains("set MTU")).count();
    let (agent_sets, supervise_sets) = (sets(&agent_log()), sets(&d.tail_all()));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            mss_copies(&pod),
            ONE_COPY,
            "exactly one copy while both run"
        );
        assert_eq!(mtu(&pod, "docker0"), 1450, "no flapping");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sets(&agent_log()),
        agent_sets,
        "the agent changed nothing more"
    );
    assert_eq!(
        sets(&d.tail_all()),
        supervise_sets,
        "supervise changed nothing more"
    );

    // supervise stops (and removes the rules): the agent has them back.
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    let t = Instant::now();
    let restored = eventually(Duration::from_secs(3), || mss_copies(&pod) == ONE_COPY);
    assert!(
        restored,
        "the agent restores the rules: {:?}; agent's threads:\n{}\n{}",
        mss_copies(&pod),
        common::kernel_stacks(d.lab.pid(agent)),
        agent_log()
    );
    eprintln!(
        "after supervise stopped: rules back {:?} later",
        t.elapsed()
    );

    // The agent stops (and removes them): supervise has them back.
    d.start_supervised(&["--reconcile-interval", "1s"]);
    d.ready();
    assert!(eventually(Duration::from_secs(5), || mss_copies(&pod) == ONE_COPY));
    let status = d.lab.stop(agent, Duration::from_secs(15));
    assert!(status.success(), "agent exit {status:?}");
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || mss_copies(&pod) == ONE_COPY),
        "supervise restores the rules: {:?}",
        mss_copies(&pod)
    );
    eprintln!(
        "after the agent stopped: rules back {:?} later",
        t.elapsed()
    );
}

/// The agent started after a real dockerd already has networks and
/// running containers at 1500: all of them, the containers' `eth0`
/// included, end at the pod's MTU.
#[test]
fn the_agent_after_a_running_dockerd() {
    if !common::dockerd::require_docker("the_agent_after_a_running_dockerd") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("nlate");
    d.start_plain();
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    let image = common::dockerd::IMAGE;
    let mut running = Vec::new();
    for (i, network) in ["bridge", "ci", "ci"].iter().enumerate() {
        let name = format!("late{i}");
        d.docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            image,
            "sleep",
            "600",
        ]);
        running.push(name);
    }
    let eth0 = |d: &common::dockerd::DockerLab, name: &str| {
        d.docker_ok(&["exec", name, "cat", "/sys/class/net/eth0/mtu"])
    };
    assert!(
        running.iter().all(|c| eth0(&d, c) == "1500"),
        "set-up at 1500"
    );

    let log = d.dir.join("agent.log");
    let (router, pod) = (d.router.clone(), d.pod.clone());
    let t = Instant::now();
    agent_for(&mut d.lab, &router, &pod, &log);
    let settled = eventually(Duration::from_secs(10), || {
        mtu(&pod, "docker0") == 1450 && running.iter().all(|c| eth0(&d, c) == "1450")
    });
    let took = t.elapsed();
    assert!(
        settled,
        "bridges and running containers at 1450: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!("agent after a running dockerd: everything at 1450 {took:?} after its start");
}

/// Two pods on one node, each running its own dockerd, under one agent
/// started first: pod a's eth0 at 1450, pod b's at 1400. 30 containers in
/// each start at the same time on a user-defined network, and every one
/// reads its own pod's MTU at its first instruction; so do the default
/// bridge and a `docker build` RUN step in each.
#[test]
fn two_dind_pods_each_at_its_own_mtu() {
    if !common::dockerd::require_docker("two_dind_pods_each_at_its_own_mtu") {
        return;
    }
    const EACH: usize = 30;
    let mut a = common::dockerd::DockerLab::new("ntwoa");
    let mut b = common::dockerd::DockerLab::beside("ntwob", &a);
    ip(&b.pod, &["link", "set", "eth0", "mtu", "1400"]);
    ip(&b.router, &["link", "set", "down0", "mtu", "1400"]);
    let log = a.dir.join("agent.log");
    let include = format!("{},{}", a.pod, b.pod);
    let router = a.router.clone();
    agent_for(&mut a.lab, &router, &include, &log);
    let found = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("enforcing in a pod network namespace")
            .count()
            == 2
    });
    assert!(
        found,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for (d, want) in [(&mut a, "1450"), (&mut b, "1400")] {
        d.start_plain();
        d.ready();
        d.import_busybox();
        d.docker_ok(&["network", "create", "ci"]);
        assert_eq!(d.first_instruction_mtu(None), want, "default bridge");
        assert_eq!(build_step_mtu(d), want, "a docker build RUN step");
    }
    let (a, b) = (&a, &b);
    let read: Vec<(String, &str)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..EACH)
            .flat_map(|_| [(a, "1450"), (b, "1400")])
            .map(|(d, want)| s.spawn(move || (d.first_instruction_mtu(Some("ci")), want)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let right = read.iter().filter(|(got, want)| got == want).count();
    assert_eq!(
        right,
        2 * EACH,
        "{right} of {} read their pod's MTU first: {read:?}",
        2 * EACH
    );
}

/// What a `docker build` RUN step read as its MTU.
fn build_step_mtu(d: &common::dockerd::DockerLab) -> String {
    let ctx = d.dir.join("build");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\nRUN cat /sys/class/net/eth0/mtu > /mtu\n",
            common::dockerd::IMAGE
        ),
    )
    .unwrap();
    d.docker_ok(&["build", "-t", "nodeprobe:build", ctx.to_str().unwrap()]);
    d.docker_ok(&["run", "--rm", "nodeprobe:build", "cat", "/mtu"])
}

/// Discovery through `/proc` alone, for runtimes that make no namespace
/// file. The agent runs in a PID namespace of its own, so its `/proc`
/// shows only this test's processes (and never another test's
/// namespaces): itself, in the node's namespace, and a pod's "pause
/// process": the first process of a PID namespace one level below the
/// agent's, in the pod's network namespace, as a runtime starts it. Its
/// `netns_dirs` do not exist, so the scan is the only way to the pod. The
/// pod is enforced in, named `netns-<inode>` (nothing a pod wrote is
/// read), and dropped within a scan period once that process is gone.
#[test]
fn the_proc_scan_finds_a_pod_no_file_names_and_lets_it_go_with_its_process() {
    if !privileged("the_proc_scan_finds_a_pod_no_file_names_and_lets_it_go_with_its_process") {
        return;
    }
    let mut n = NodeLab::new("nproc");
    let (pod, bridge) = n.docker_pod("x", 0x5ca);
    let script = format!(
        "unshare --pid --fork --kill-child nsenter --net=/run/netns/{pod} sleep 600 & \
         exec nsenter --net=/run/netns/{node} {bin} node --proc-scan 200ms \
         --metrics-addr {metrics}",
        node = n.node,
        bin = common::bin(),
        metrics = common::node::METRICS,
    );
    let mut cmd = std::process::Command::new("unshare");
    // --kill-child: when the lab kills unshare, the agent (the PID
    // namespace's init) dies, and the pod's process with it.
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
    ])
    .arg(&script)
    .env(
        "MTUVISOR_NETNS_DIRS",
        format!("/nonexistent/{}", n.lab.prefix()),
    )
    .env("MTUVISOR_LOG", "debug")
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&n.log).unwrap());
    let unshare = n.lab.spawn(cmd);
    let unshare = n.lab.pid(unshare);
    let mut agent = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            agent = children_of(unshare).first().copied();
            agent.is_some_and(|a| children_of(a).len() == 1)
        }),
        "the agent and the pod's process run"
    );
    let agent = agent.unwrap();
    let mut holder = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            holder = children_of(agent)
                .first()
                .and_then(|unshare| children_of(*unshare).first().copied());
            holder.is_some()
        }),
        "the pod's pause process runs"
    );
    let holder = holder.unwrap();

    let links = ["veth0", "veth0p", "veth1", "veth1p", "veth2", "veth2p"];
    let at_target = || mtu(&pod, &bridge) == 1450 && links.iter().all(|l| mtu(&pod, l) == 1450);
    assert!(
        eventually(Duration::from_secs(5), at_target),
        "found through /proc and enforced in; log:\n{}",
        n.tail()
    );
    let ino = std::fs::metadata(format!("/run/netns/{pod}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let label = format!("netns-{ino}");
    let enforcing = r#"mtuvisor_node_namespaces{state="enforcing"}"#;
    assert_eq!(n.sample(enforcing), Some(1.0), "{}", n.metrics());
    assert_eq!(
        n.sample(&format!("mtuvisor_target_mtu{{netns=\"{label}\"}}")),
        Some(1450.0),
        "labelled by its inode: {}",
        n.metrics()
    );
    let holds = |what: &str| {
        std::fs::read_dir(format!("/proc/{agent}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|f| std::fs::read_link(f.path()).ok())
            .any(|l| l.display().to_string() == what)
    };
    let pod_ns = format!("net:[{ino}]");
    assert!(holds(&pod_ns), "the agent holds the pod's namespace open");

    // The pod's last process exits (its file is not in netns_dirs).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = Instant::now();
    let watched = r#"mtuvisor_node_namespaces{state="watched"}"#;
    assert!(
        eventually(Duration::from_secs(2), || n.sample(watched) == Some(0.0)
            && !holds(&pod_ns)),
        "the pod is let go; log:\n{}",
        n.tail()
    );
    eprintln!(
        "a pod found through /proc let go {:?} after its last process exited",
        t.elapsed()
    );
    assert!(
        !namespaces_of_threads(agent).contains(&pod_ns),
        "no thread of the agent in it"
    );
}

/// Real-time priority refused: without CAP_SYS_NICE one warning; with it,
/// in a cgroup without a real-time budget (every pod's, on a kernel with
/// real-time group scheduling), one info line. Either way the agent
/// enforces in its pods at ordinary priority and says 0 in
/// `mtuvisor_realtime_priority`.
#[test]
fn refused_realtime_priority_is_said_once_and_the_agent_clamps() {
    if !privileged("refused_realtime_priority_is_said_once_and_the_agent_clamps") {
        return;
    }
    let no_budget = common::NoRtBudget::new("nnice2");
    let tags = ["nnice", "nnice2"];
    for (tag, refusal) in tags.into_iter().zip(common::realtime_refusals(&no_budget)) {
        let mut n = NodeLab::new(tag);
        let (pod, bridge) = n.docker_pod("x", 0x9ce);
        let include = n.include();
        let agent = n.spawn_agent(
            refusal.mtuvisor_in(&n.node),
            &include,
            &["--reconcile-interval", "200ms"],
            &[],
        );
        let links = ["veth0", "veth0p", "veth1", "veth1p", "veth2", "veth2p"];
        assert!(
            eventually(Duration::from_secs(5), || mtu(&pod, &bridge) == 1450
                && links.iter().all(|l| mtu(&pod, l) == 1450)),
            "enforced in the pod; log:\n{}",
            n.tail()
        );
        common::assert_clamping_threads(n.lab.pid(agent), None);
        assert_eq!(n.sample("mtuvisor_realtime_priority"), Some(0.0));
        // Several reconciles later: still one line about it.
        std::thread::sleep(Duration::from_millis(600));
        (refusal.said)(&std::fs::read_to_string(&n.log).unwrap());
    }
}

/// The agent holds a pod's namespace open through a file of its own, not
/// through the runtime's bind mount: an unmount without `MNT_DETACH` (as a
/// runtime may do it) succeeds while the agent enforces there, and the
/// pod is then let go.
#[test]
fn a_pods_namespace_file_is_never_kept_busy() {
    if !privileged("a_pods_namespace_file_is_never_kept_busy") {
        return;
    }
    let mut n = NodeLab::new("npin");
    n.agent(&[]);
    let (pod, bridge) = n.docker_pod("x", 0x919);
    assert!(
        eventually(Duration::from_secs(10), || mtu(&pod, &bridge) == 1450),
        "enforced in; log:\n{}",
        n.tail()
    );
    let file = format!("/run/netns/{pod}");
    let out = std::process::Command::new("umount")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umount without MNT_DETACH: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file).unwrap();
    let watched = r#"mtuvisor_node_namespaces{state="watched"}"#;
    assert!(
        eventually(Duration::from_secs(5), || n.sample(watched) == Some(0.0)),
        "let go; log:\n{}",
        n.tail()
    );
}
