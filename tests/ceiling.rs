//! `mtu_ceiling`: on a jumbo-frame pod (`eth0` 9001, as EKS gives) Docker
//! behaves as plain dockerd does (1500) unless the ceiling is raised;
//! `watch` raises nothing; `node` holds each pod to the ceiling; `detect`
//! says when the ceiling applies.

use testkit as common;

use std::time::Duration;

use common::dockerd::{require_docker, DockerLab};
use common::node::NodeLab;
use common::{eventually, ip, mtu, privileged, run_mtuvisor};

const JUMBO: &str = "9001";

/// A DinD pod whose eth0 (and its far end) carry 9001.
fn jumbo_pod(tag: &str) -> DockerLab {
    let d = DockerLab::new(tag);
    ip(&d.pod, &["link", "set", "eth0", "mtu", JUMBO]);
    ip(&d.router, &["link", "set", "down0", "mtu", JUMBO]);
    d
}

/// dockerd's `--mtu` as its command line has it.
fn dockerd_mtu_flag(d: &DockerLab) -> String {
    let pid = d.dockerd_pid().expect("dockerd's pidfile");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find(|a| a.starts_with("--mtu="))
        .unwrap_or("(none)")
        .to_string()
}

/// A user network that asks for 9001, and one that asks for nothing.
fn networks(d: &DockerLab) {
    d.docker_ok(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.driver.mtu={JUMBO}"),
        "jumbo",
    ]);
    d.docker_ok(&["network", "create", "plain"]);
}

#[test]
fn supervise_gives_dockerd_1500_on_a_jumbo_pod() {
    if !require_docker("supervise_gives_dockerd_1500_on_a_jumbo_pod") {
        return;
    }
    let mut d = jumbo_pod("ceil");
    d.start_supervised(&[]);
    d.ready();
    d.import_busybox();
    networks(&d);
    assert_eq!(dockerd_mtu_flag(&d), "--mtu=1500");
    assert_eq!(d.first_instruction_mtu(None), "1500", "default bridge");
    assert_eq!(
        d.first_instruction_mtu(Some("jumbo")),
        "1500",
        "a network asking for 9001 is held to the ceiling"
    );
    assert_eq!(d.first_instruction_mtu(Some("plain")), "1500");
    assert_eq!(mtu(&d.pod, "eth0"), 9001, "the pod's eth0 is never managed");
    assert!(
        d.tail_all().contains("target MTU held at mtu_ceiling"),
        "the log says why: {}",
        d.tail()
    );
}

#[test]
fn supervise_with_a_raised_ceiling_gives_dockerd_9001() {
    if !require_docker("supervise_with_a_raised_ceiling_gives_dockerd_9001") {
        return;
    }
    let mut d = jumbo_pod("ceilr");
    d.start_supervised(&["--mtu-ceiling", JUMBO]);
    d.ready();
    d.import_busybox();
    networks(&d);
    assert_eq!(dockerd_mtu_flag(&d), "--mtu=9001");
    assert_eq!(d.first_instruction_mtu(None), "9001", "default bridge");
    assert_eq!(d.first_instruction_mtu(Some("jumbo")), "9001");
    // Engine 20.10 gives a user network without the option 1500 whatever
    // dockerd's --mtu (Engine 24+: default-network-opts); mtuvisor only
    // ever lowers.
    assert_eq!(d.first_instruction_mtu(Some("plain")), "1500");
}

#[test]
fn watch_raises_nothing_on_a_jumbo_pod() {
    if !require_docker("watch_raises_nothing_on_a_jumbo_pod") {
        return;
    }
    let mut d = jumbo_pod("ceilw");
    d.start_plain();
    d.start_sidecar_with(&["--mtu-ceiling", JUMBO], &[]);
    d.ready();
    d.import_busybox();
    networks(&d);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(mtu(&d.pod, "docker0"), 1500, "docker0 as dockerd made it");
    assert_eq!(d.first_instruction_mtu(None), "1500");
    assert_eq!(d.first_instruction_mtu(Some("plain")), "1500");
    assert_eq!(d.first_instruction_mtu(Some("jumbo")), "9001");
}

#[test]
fn watch_holds_a_jumbo_network_to_the_ceiling() {
    if !require_docker("watch_holds_a_jumbo_network_to_the_ceiling") {
        return;
    }
    let mut d = jumbo_pod("ceilwd");
    d.start_plain();
    d.start_sidecar();
    d.ready();
    d.import_busybox();
    networks(&d);
    assert_eq!(d.first_instruction_mtu(Some("jumbo")), "1500");
    assert_eq!(mtu(&d.pod, "docker0"), 1500);
}

/// Under the agent: a jumbo pod's bridge at 9001 is held to 1500, and a
/// pod at 1450 beside it is held to 1450; with the ceiling raised, the
/// jumbo pod keeps 9001.
#[test]
fn node_holds_each_jumbo_pod_to_the_ceiling() {
    if !privileged("node_holds_each_jumbo_pod_to_the_ceiling") {
        return;
    }
    for (ceiling, want) in [(None, 1500), (Some(JUMBO), 9001)] {
        let mut n = NodeLab::new(if ceiling.is_some() { "ceiln9" } else { "ceiln" });
        let (jumbo, bridge) = n.docker_pod("a", 1);
        ip(&jumbo, &["link", "set", "eth0", "mtu", JUMBO]);
        ip(&jumbo, &["link", "set", &bridge, "mtu", JUMBO]);
        let (small, small_bridge) = n.docker_pod("b", 2);
        let extra: Vec<&str> = match ceiling {
            Some(c) => vec!["--mtu-ceiling", c],
            None => vec![],
        };
        n.agent(&extra);
        let held = eventually(Duration::from_secs(10), || {
            mtu(&jumbo, &bridge) == want && mtu(&small, &small_bridge) == 1450
        });
        assert!(
            held,
            "ceiling {ceiling:?}: jumbo bridge {} (want {want}), other {}; log:\n{}",
            mtu(&jumbo, &bridge),
            mtu(&small, &small_bridge),
            n.tail()
        );
    }
}

#[test]
fn detect_says_when_the_ceiling_applies() {
    if !privileged("detect_says_when_the_ceiling_applies") {
        return;
    }
    let mut lab = common::Lab::new("ceild");
    let (pod, _) = lab.pod(9001);
    let out = run_mtuvisor(&pod, &["detect"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("outer MTU: 9001"), "{text}");
    assert!(
        text.contains("target MTU: 1500 (target MTU held at mtu_ceiling"),
        "{text}"
    );
    let out = run_mtuvisor(&pod, &["detect", "--json", "--mtu-ceiling", JUMBO], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mtu"], 9001);
    assert_eq!(v["target_mtu"], 9001);
    assert_eq!(v["target_source"], "link");
    let out = run_mtuvisor(&pod, &["detect", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["target_mtu"].clone(), v["target_source"].clone()),
        (1500.into(), "ceiling".into())
    );
    let out = run_mtuvisor(&pod, &["doctor"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("target: 1500 (mtu_ceiling 1500"), "{text}");
}
