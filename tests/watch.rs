//! `mtuvisor watch` against real bridges and veths.

use testkit as common;

use std::time::{Duration, Instant};

use common::{docker_style_veth, eventually, ip, mtu, privileged, Lab};

#[test]
fn clamps_existing_bridge_ports_and_peers_within_a_second() {
    if !privileged("clamps_existing_bridge_ports_and_peers_within_a_second") {
        return;
    }
    let mut lab = Lab::new("w1");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "mtu", "1500", "up"]);
    let containers: Vec<String> = (0..3).map(|i| lab.netns(&format!("c{i}"))).collect();
    for (i, c) in containers.iter().enumerate() {
        docker_style_veth(&pod, "docker0", &format!("veth{i}"), c);
    }
    // An unmanaged bridge with a port, which must stay as it is.
    ip(&pod, &["link", "add", "lxcbr0", "type", "bridge"]);
    ip(
        &pod,
        &[
            "link", "add", "lxcport", "type", "veth", "peer", "name", "lxcpeer",
        ],
    );
    ip(&pod, &["link", "set", "lxcport", "master", "lxcbr0"]);
    for l in ["docker0", "veth0", "veth1", "veth2", "lxcbr0", "lxcport"] {
        assert_eq!(mtu(&pod, l), 1500, "{l} starts at 1500");
    }
    for c in &containers {
        assert_eq!(mtu(c, "eth0"), 1500);
    }

    let start = Instant::now();
    lab.watch(&pod, &[], &[]);
    let all_clamped = eventually(Duration::from_secs(1), || {
        ["docker0", "veth0", "veth1", "veth2"]
            .iter()
            .all(|l| mtu(&pod, l) == 1450)
            && containers.iter().all(|c| mtu(c, "eth0") == 1450)
    });
    let took = start.elapsed();
    assert!(all_clamped, "all seven links at 1450 within 1 s of start");
    eprintln!("seven links clamped {took:?} after start (process spawn included)");

    // Give a wrong implementation time to touch what it must not.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mtu(&pod, "eth0"), 1450);
    assert_eq!(mtu(&pod, "lo"), 65536);
    assert_eq!(mtu(&pod, "lxcbr0"), 1500);
    assert_eq!(mtu(&pod, "lxcport"), 1500);
    assert_eq!(mtu(&pod, "lxcpeer"), 1500);
}

#[test]
fn clamps_a_new_veth_both_ends_in_dockerd_order() {
    if !privileged("clamps_a_new_veth_both_ends_in_dockerd_order") {
        return;
    }
    let mut lab = Lab::new("w2");
    let (pod, _) = lab.pod(1450);
    let c = lab.netns("c");
    ip(&pod, &["link", "add", "br-0123456789ab", "type", "bridge"]);
    ip(&pod, &["link", "set", "br-0123456789ab", "up"]);
    lab.watch(&pod, &[], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(
        &pod,
        "br-0123456789ab"
    ) == 1450));

    docker_style_veth(&pod, "br-0123456789ab", "veth9f2", &c);
    assert!(eventually(Duration::from_secs(1), || mtu(&pod, "veth9f2")
        == 1450
        && mtu(&c, "eth0") == 1450));
}

#[test]
fn clamps_a_peer_already_in_another_namespace_when_its_host_end_joins() {
    if !privileged("clamps_a_peer_already_in_another_namespace_when_its_host_end_joins") {
        return;
    }
    // The reverse order: the far end sits in the container before the host
    // end is enslaved, so it can only be reached through its nsid.
    let mut lab = Lab::new("w3");
    let (pod, _) = lab.pod(1450);
    let c = lab.netns("c");
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    lab.watch(&pod, &[], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(&pod, "docker0") == 1450));
    ip(
        &pod,
        &[
            "link", "add", "vethlate", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        mtu(&c, "eth0"),
        1500,
        "not managed before it joins a managed bridge"
    );
    ip(&pod, &["link", "set", "vethlate", "master", "docker0"]);
    assert!(eventually(Duration::from_secs(1), || mtu(&pod, "vethlate")
        == 1450
        && mtu(&c, "eth0") == 1450));
    let took = common::far_ends_a_moment_apart(&mut lab, &pod, "docker0", 1450);
    eprintln!("a far end found by the next search, {took:?} after it joined");
}

#[test]
fn extra_bridge_patterns_from_config_are_managed() {
    if !privileged("extra_bridge_patterns_from_config_are_managed") {
        return;
    }
    let mut lab = Lab::new("w4");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "cni0", "type", "bridge"]);
    ip(&pod, &["link", "add", "other0", "type", "bridge"]);
    let cfg = lab.temp_file(
        "config.toml",
        "bridge_patterns = [\"cni*\"]\nreconcile_interval = \"1s\"\n",
    );
    lab.watch(&pod, &["--config", cfg.to_str().unwrap()], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(&pod, "cni0") == 1450));
    assert_eq!(mtu(&pod, "other0"), 1500);
}

#[test]
fn periodic_reconcile_restores_a_link_raised_behind_its_back() {
    if !privileged("periodic_reconcile_restores_a_link_raised_behind_its_back") {
        return;
    }
    let mut lab = Lab::new("w5");
    let (pod, _) = lab.pod(1450);
    let c = lab.netns("c");
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    docker_style_veth(&pod, "docker0", "vethr", &c);
    lab.watch(&pod, &["--reconcile-interval", "500ms"], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(&c, "eth0") == 1450));
    // Inside the container nobody notifies our namespace: only a sweep sees it.
    ip(&c, &["link", "set", "eth0", "mtu", "1500"]);
    assert!(eventually(Duration::from_secs(3), || mtu(&c, "eth0") == 1450));
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    if !privileged("sigterm_and_sigint_exit_zero") {
        return;
    }
    let mut lab = Lab::new("w6");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let w = lab.watch(&pod, &[], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(&pod, "docker0") == 1450));
    let status = lab.stop(w, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));

    let w = lab.watch(&pod, &[], &[]);
    std::thread::sleep(Duration::from_millis(300));
    lab.signal(w, nix::sys::signal::Signal::SIGINT);
    let status = lab.wait(w, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn lost_notifications_trigger_a_full_sweep() {
    if !privileged("lost_notifications_trigger_a_full_sweep") {
        return;
    }
    use nix::sys::signal::Signal;
    let mut lab = Lab::new("w7");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(
        &pod,
        &[
            "link", "add", "vethl", "type", "veth", "peer", "name", "vethm",
        ],
    );
    ip(&pod, &["link", "set", "vethl", "master", "docker0"]);
    ip(
        &pod,
        &[
            "link", "add", "noise0", "type", "veth", "peer", "name", "noise1",
        ],
    );
    let log = lab.temp_file("log", "");
    let mut cmd = common::mtuvisor_in(&pod);
    cmd.args(["watch", "--reconcile-interval", "1h"])
        .env("MTUVISOR_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let w = lab.spawn(cmd);
    assert!(eventually(Duration::from_secs(2), || mtu(&pod, "vethl")
        == 1450
        && mtu(&pod, "vethm") == 1450));

    // While mtuvisor is stopped, fill its socket's receive buffer with
    // notifications about a link nobody manages; then raise the managed
    // port, whose notification the kernel must drop (ENOBUFS).
    lab.signal(w, Signal::SIGSTOP);
    let batch: String = (0..30_000)
        .map(|i| format!("link set noise0 mtu {}\n", 1300 + i % 2))
        .collect();
    let script = lab.temp_file("batch", &batch);
    ip(&pod, &["-batch", script.to_str().unwrap()]);
    ip(&pod, &["link", "set", "vethl", "mtu", "1500"]);
    lab.signal(w, Signal::SIGCONT);

    // The periodic sweep is an hour away: only the overrun sweep fixes it.
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, "vethl") == 1450),
        "the raised port is lowered again after the overrun"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("link notifications were lost (netlink overrun); sweeping"),
        "the overrun is logged: {}",
        text.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        mtu(&pod, "noise0"),
        1301,
        "the unmanaged link is left alone"
    );
}

/// A pod with a Docker bridge and a container's veth at 1500, watched by
/// `cmd`'s mtuvisor until both ends read 1450; returns the watcher's pid.
fn watched_until_clamped(lab: &mut Lab, cmd: impl FnOnce(&str) -> std::process::Command) -> i32 {
    let (pod, _) = lab.pod(1450);
    let c = lab.netns("c");
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "up"]);
    docker_style_veth(&pod, "docker0", "veth0", &c);
    let w = lab.spawn(cmd(&pod));
    assert!(
        eventually(Duration::from_secs(3), || mtu(&pod, "veth0") == 1450
            && mtu(&c, "eth0") == 1450),
        "both ends clamped"
    );
    lab.pid(w)
}

#[test]
fn clamping_threads_run_at_the_realtime_priority_asked_for() {
    if !privileged("clamping_threads_run_at_the_realtime_priority_asked_for") {
        return;
    }
    for (tag, args, want) in [
        ("w9a", vec![], Some(1)),
        ("w9b", vec!["--realtime-priority", "7"], Some(7)),
        ("w9c", vec!["--realtime-priority", "off"], None),
    ] {
        let mut lab = Lab::new(tag);
        let pid = watched_until_clamped(&mut lab, |pod| {
            let mut cmd = common::mtuvisor_in(pod);
            cmd.arg("watch").args(&args);
            cmd
        });
        common::assert_clamping_threads(pid, want);
    }
}

/// Real-time priority refused: without CAP_SYS_NICE one warning (a grant
/// fixes it); with it, in a cgroup without a real-time budget (what every
/// container gets on a kernel with real-time group scheduling), one info
/// line (nobody can grant that budget). Either way watch clamps.
#[test]
fn refused_realtime_priority_is_said_once_and_it_clamps_at_ordinary_priority() {
    if !privileged("refused_realtime_priority_is_said_once_and_it_clamps_at_ordinary_priority") {
        return;
    }
    let no_budget = common::NoRtBudget::new("w10b");
    let tags = ["w10", "w10b"];
    for (tag, refusal) in tags.into_iter().zip(common::realtime_refusals(&no_budget)) {
        let mut lab = Lab::new(tag);
        let log = lab.temp_file("watch.log", "");
        let pid = watched_until_clamped(&mut lab, |pod| {
            let mut cmd = refusal.mtuvisor_in(pod);
            cmd.args(["watch", "--reconcile-interval", "200ms"])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            cmd
        });
        common::assert_clamping_threads(pid, None);
        // Several reconciles later: still one line about it.
        std::thread::sleep(Duration::from_millis(600));
        (refusal.said)(&std::fs::read_to_string(&log).unwrap());
    }
}
