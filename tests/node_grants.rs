//! `mtuvisor node` without each capability the DaemonSet grants: what
//! stops working, the one line that names the grant, and `/healthz` not
//! ready (while `/livez`, which a restart could not fix, stays alive). The
//! same lab with every grant enforces, so each test fails for its reason.

use testkit as common;

use std::process::Stdio;
use std::time::Duration;

use common::node::{NodeLab, METRICS};
use common::{eventually, ip, mtu, privileged, try_http_get};

/// `mtuvisor node` for this lab's pods, without `caps` (setpriv's names).
fn agent_without(n: &mut NodeLab, caps: &[&str]) -> usize {
    let mut cmd = common::mtuvisor_in_without(&n.node, caps);
    cmd.args([
        "node",
        "--proc-scan",
        "off",
        "--netns-include",
        &n.include(),
    ])
    .args(["--metrics-addr", METRICS, "--reconcile-interval", "200ms"])
    .env("MTUVISOR_NETNS_DIRS", "/run/netns")
    .env("MTUVISOR_LOG", "debug")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&n.log).unwrap());
    let agent = n.lab.spawn(cmd);
    let alive = eventually(Duration::from_secs(10), || {
        try_http_get(&n.node, METRICS, "/livez").is_ok_and(|(s, _)| s == 200)
    });
    assert!(alive, "/livez answers without {caps:?}; log:\n{}", n.tail());
    agent
}

/// `/healthz` says not ready and names `cap`; the log has one WARN line
/// about it; the metric says it is missing.
fn assert_said_missing(n: &NodeLab, cap: &str) {
    let (status, body) = common::http_get(&n.node, METRICS, "/healthz");
    assert_eq!(status, 503, "not ready without {cap}: {body}");
    assert!(
        body.contains(&format!("missing CAP_{cap}")) && body.contains("capabilities.add"),
        "names the grant and where it goes: {body}"
    );
    let log = std::fs::read_to_string(&n.log).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("missing CAP_{cap}")))
        .collect();
    assert_eq!(lines.len(), 1, "one line about {cap}:\n{log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert_eq!(
        n.sample(&format!(
            "mtuvisor_node_missing_capability{{capability=\"{cap}\",required=\"true\"}}"
        )),
        Some(1.0)
    );
}

/// After the agent without a grant: the same lab under an agent with
/// every grant is enforced (the failure above was the grant's).
fn with_every_grant(n: &mut NodeLab, agent: usize, enforced: impl Fn() -> bool) {
    n.lab.stop(agent, Duration::from_secs(10));
    n.agent(&["--reconcile-interval", "200ms"]);
    assert!(
        eventually(Duration::from_secs(10), enforced),
        "enforced with every grant; log:\n{}",
        n.tail()
    );
    assert_eq!(common::http_get(&n.node, METRICS, "/healthz").0, 200);
}

fn unchanged_for_a_while(pod: &str, links: &[&str]) {
    // Ten reconciles.
    std::thread::sleep(Duration::from_secs(2));
    for l in links {
        assert_eq!(mtu(pod, l), 1500, "{l} left at Docker's 1500");
    }
}

#[test]
fn without_sys_admin_no_pod_is_entered_and_the_agent_is_not_ready() {
    if !privileged("without_sys_admin_no_pod_is_entered_and_the_agent_is_not_ready") {
        return;
    }
    let mut n = NodeLab::new("gadm");
    let (pod, bridge) = n.docker_pod("x", 0x5a1);
    let agent = agent_without(&mut n, &["sys_admin"]);
    unchanged_for_a_while(&pod, &[&bridge, "veth0", "veth0p"]);
    assert_said_missing(&n, "SYS_ADMIN");
    assert_eq!(
        n.sample("mtuvisor_node_missing_capability{capability=\"NET_ADMIN\",required=\"true\"}"),
        Some(0.0)
    );
    with_every_grant(&mut n, agent, || {
        mtu(&pod, &bridge) == 1450 && mtu(&pod, "veth0p") == 1450
    });
}

#[test]
fn without_net_admin_no_link_is_changed_and_the_agent_is_not_ready() {
    if !privileged("without_net_admin_no_link_is_changed_and_the_agent_is_not_ready") {
        return;
    }
    let mut n = NodeLab::new("gnet");
    let (pod, bridge) = n.docker_pod("x", 0x5a2);
    let agent = agent_without(&mut n, &["net_admin"]);
    unchanged_for_a_while(&pod, &[&bridge, "veth0", "veth0p"]);
    assert_said_missing(&n, "NET_ADMIN");
    with_every_grant(&mut n, agent, || {
        mtu(&pod, &bridge) == 1450 && mtu(&pod, "veth0p") == 1450
    });
}

/// A container that runs as root in a namespace of its own, reachable only
/// through its process's /proc/<pid>/ns/net: without SYS_PTRACE its `eth0`
/// stays at 1500 while the agent enforces on the pod's bridge.
#[test]
fn without_sys_ptrace_a_containers_eth0_is_out_of_reach_and_the_agent_is_not_ready() {
    if !privileged(
        "without_sys_ptrace_a_containers_eth0_is_out_of_reach_and_the_agent_is_not_ready",
    ) {
        return;
    }
    let mut n = NodeLab::new("gptr");
    let (pod, bridge) = n.docker_pod("x", 0x5a3);
    // The container: a root process with every capability, in a network
    // namespace no directory names.
    let mut holder = std::process::Command::new("nsenter");
    holder
        .arg(format!("--net=/run/netns/{pod}"))
        .args(["unshare", "-n", "sleep", "600"]);
    let holder = n.lab.spawn(holder);
    let pid = n.lab.pid(holder).to_string();
    let own_ns = eventually(Duration::from_secs(5), || {
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
        ns(&pid).is_some() && ns(&pid) != ns("self")
    });
    assert!(own_ns, "the container's namespace");
    ip(
        &pod,
        &[
            "link", "add", "vethc", "type", "veth", "peer", "name", "eth0c",
        ],
    );
    ip(&pod, &["link", "set", "vethc", "master", &bridge, "up"]);
    ip(&pod, &["link", "set", "eth0c", "netns", &pid]);
    let far_end = || {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ip", "-o", "link", "show", "eth0c"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split(" mtu ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert_eq!(far_end(), 1500);

    let agent = agent_without(&mut n, &["sys_ptrace"]);
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, &bridge) == 1450),
        "the agent enforces in the pod; log:\n{}",
        n.tail()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(far_end(), 1500, "the container's eth0 is out of reach");
    assert_said_missing(&n, "SYS_PTRACE");
    with_every_grant(&mut n, agent, || far_end() == 1450);
}
