//! `enforce_mtu = false`: TCP MSS clamping only, under `watch`,
//! `supervise` and `node`. The MSS rules go in where Docker runs, no MTU
//! is ever changed, and link notifications, which are still followed (a
//! Docker bridge appearing is what brings the rules under `node`), do not
//! pile up in memory over a long run of link churn.

use testkit as common;

use std::time::Duration;

use common::hostile::held;
use common::node::{mangle_rules, NodeLab};
use common::{eventually, ip, mtu, privileged};

fn has_rules(netns: &str) -> bool {
    mangle_rules(netns).contains("-A MTUVISOR-MSS")
}

/// `rounds` times: 300 veth pairs on `bridge` in `pod`, then deleted.
fn churn(pod: &str, bridge: &str, rounds: usize) {
    let batch = std::env::temp_dir().join(format!("mtuvisor-churn-{pod}"));
    for _ in 0..rounds {
        let mut add = String::new();
        let mut del = String::new();
        for i in 0..300 {
            add.push_str(&format!(
                "link add ch{i} type veth peer name cp{i}\nlink set ch{i} master {bridge}\n"
            ));
            del.push_str(&format!("link del ch{i}\n"));
        }
        for text in [add, del] {
            std::fs::write(&batch, text).unwrap();
            ip(pod, &["-batch", batch.to_str().unwrap()]);
        }
    }
    let _ = std::fs::remove_file(&batch);
}

/// Churn in `pod` while `pid` runs: its anonymous memory after 6 rounds is
/// within 1 MB of where it was after the first (a queue that grew with
/// unread notifications would add megabytes per round).
fn flat_under_churn(pid: i32, pod: &str, bridge: &str) {
    churn(pod, bridge, 1);
    std::thread::sleep(Duration::from_millis(500));
    let first = held(pid);
    churn(pod, bridge, 5);
    std::thread::sleep(Duration::from_millis(500));
    let last = held(pid);
    eprintln!("after one round of 300 veths: {first}; after five more: {last}");
    assert!(
        last.anon_kb <= first.anon_kb + 1024,
        "memory grows with link churn: {first} -> {last}"
    );
}

#[test]
fn watch_installs_the_rules_and_changes_no_mtu() {
    if !privileged("watch_installs_the_rules_and_changes_no_mtu") {
        return;
    }
    let mut lab = common::Lab::new("msswatch");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "up"]);
    let c = lab.netns("c");
    common::docker_style_veth(&pod, "docker0", "veth0", &c);
    let w = lab.watch(&pod, &[], &[("MTUVISOR_ENFORCE_MTU", "false")]);
    assert!(
        eventually(Duration::from_secs(10), || has_rules(&pod)),
        "MSS rules in the pod"
    );
    flat_under_churn(lab.pid(w), &pod, "docker0");
    assert_eq!(
        (mtu(&pod, "docker0"), mtu(&pod, "veth0"), mtu(&c, "eth0")),
        (1500, 1500, 1500),
        "no MTU changed"
    );
    assert!(lab.exited(w).is_none(), "watch runs");
}

#[test]
fn supervise_installs_the_rules_and_changes_no_mtu() {
    if !common::dockerd::require_docker("supervise_installs_the_rules_and_changes_no_mtu") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("msssuper");
    d.start_supervised_env(&[], &[("MTUVISOR_ENFORCE_MTU", "false")]);
    d.ready();
    let pod = d.pod.clone();
    assert!(
        eventually(Duration::from_secs(10), || has_rules(&pod)),
        "MSS rules in the pod; {}",
        d.tail()
    );
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    assert_eq!(
        d.first_instruction_mtu(Some("ci")),
        "1500",
        "no MTU changed"
    );
    ip(&pod, &["link", "add", "br-00000000c0de", "type", "bridge"]);
    flat_under_churn(d.lab.pid(d.main.unwrap()), &pod, "br-00000000c0de");
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(!has_rules(&pod), "removed on a clean stop");
}

#[test]
fn node_installs_the_rules_once_a_pod_has_docker_and_changes_no_mtu() {
    if !privileged("node_installs_the_rules_once_a_pod_has_docker_and_changes_no_mtu") {
        return;
    }
    let mut n = NodeLab::new("mssnode");
    let include = n.include();
    let agent = n.agent_with(
        &include,
        &["--reconcile-interval", "1s"],
        &[("MTUVISOR_ENFORCE_MTU", "false")],
    );
    let agent_pid = n.lab.pid(agent);
    let a = n.pod("a", 1450);
    let plain = n.pod("plain", 1450);
    let watched = r#"mtuvisor_node_namespaces{state="watched"}"#;
    assert!(eventually(Duration::from_secs(10), || n.sample(watched) == Some(2.0)));
    // dockerd starts in pod a: its first bridge.
    ip(&a, &["link", "add", "docker0", "type", "bridge"]);
    ip(&a, &["link", "set", "docker0", "up"]);
    assert!(
        eventually(Duration::from_secs(10), || has_rules(&a)),
        "MSS rules once Docker is there; log:\n{}",
        n.tail()
    );
    flat_under_churn(agent_pid, &a, "docker0");
    assert_eq!(mtu(&a, "docker0"), 1500, "no MTU changed");
    assert!(!has_rules(&plain), "none in the pod without Docker");
}
