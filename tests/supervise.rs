//! `mtuvisor supervise` against a real dockerd in a pod namespace whose
//! eth0 has MTU 1450.

use testkit as common;

use std::time::{Duration, Instant};

use common::dockerd::{compose_reads_1450, fifty_in_parallel, require_docker, DockerLab, IMAGE};
use common::{ip, mtu};

fn supervised(tag: &str) -> DockerLab {
    let mut d = DockerLab::new(tag);
    d.start_supervised(&[]);
    d.ready();
    d.import_busybox();
    d
}

#[test]
fn default_bridge_container_reads_1450() {
    if !require_docker("default_bridge_container_reads_1450") {
        return;
    }
    let d = supervised("sdef");
    assert_eq!(d.first_instruction_mtu(None), "1450");
    assert_eq!(mtu(&d.pod, "docker0"), 1450);
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("--mtu=1450"),
        "dockerd started with --mtu=1450"
    );
}

#[test]
fn user_network_created_after_start_is_clamped_before_the_first_instruction() {
    if !require_docker("user_network_created_after_start_is_clamped_before_the_first_instruction") {
        return;
    }
    let d = supervised("susr");
    let id = d.docker_ok(&["network", "create", "ci"]);
    let bridge = format!("br-{}", &id[..12]);
    for _ in 0..5 {
        assert_eq!(d.first_instruction_mtu(Some("ci")), "1450");
    }
    // The bridge and the host end of a running container.
    let cid = d.docker_ok(&["run", "-d", "--network", "ci", IMAGE, "sleep", "60"]);
    assert_eq!(mtu(&d.pod, &bridge), 1450);
    let ports = ip(&d.pod, &["-o", "link", "show", "master", &bridge]);
    assert!(
        ports.contains("mtu 1450") && !ports.contains("mtu 1500"),
        "ports of {bridge}: {ports}"
    );
    d.docker_ok(&["rm", "-f", &cid]);

    // A network whose bridge has a name of its own, known only from the API.
    d.docker_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=ci-custom0",
        "custom",
    ]);
    assert_eq!(d.first_instruction_mtu(Some("custom")), "1450");
    assert_eq!(mtu(&d.pod, "ci-custom0"), 1450);
}

#[test]
fn network_from_before_mtuvisor_ran_is_clamped() {
    if !require_docker("network_from_before_mtuvisor_ran_is_clamped") {
        return;
    }
    let mut d = DockerLab::new("spre");
    d.start_plain();
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "old"]);
    assert_eq!(
        d.first_instruction_mtu(Some("old")),
        "1500",
        "a plain dockerd leaves it at 1500"
    );
    let status = d
        .stop_main(Duration::from_secs(30))
        .expect("plain dockerd stops");
    assert!(status.success());

    d.start_supervised(&[]);
    d.ready();
    assert_eq!(d.first_instruction_mtu(Some("old")), "1450");
}

#[test]
fn compose_service_reads_1450() {
    if !require_docker("compose_service_reads_1450") {
        return;
    }
    let d = supervised("scmp");
    compose_reads_1450(&d);
}

#[test]
fn build_run_step_on_a_user_network_reads_1450() {
    if !require_docker("build_run_step_on_a_user_network_reads_1450") {
        return;
    }
    let d = supervised("sbld");
    d.docker_ok(&["network", "create", "buildnet"]);
    let ctx = d.dir.join("build");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN cat /sys/class/net/eth0/mtu > /mtu\n"),
    )
    .unwrap();
    d.docker_ok(&[
        "build",
        "--network",
        "buildnet",
        "-t",
        "mtuprobe:build",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        d.docker_ok(&["run", "--rm", "mtuprobe:build", "cat", "/mtu"]),
        "1450"
    );
}

#[test]
fn fifty_containers_in_parallel_all_read_1450() {
    if !require_docker("fifty_containers_in_parallel_all_read_1450") {
        return;
    }
    let d = supervised("spar");
    d.docker_ok(&["network", "create", "par"]);
    fifty_in_parallel(&d, "par");
    // The clamping threads race dockerd at real-time priority (the
    // default); dockerd, containerd, the shims and the containers that
    // mtuvisor's process tree started stay ordinary.
    let mtuvisor = d.lab.pid(d.main.unwrap());
    common::assert_clamping_threads(mtuvisor, Some(1));
    common::assert_ordinary_tree(d.dockerd_pid().expect("dockerd's pid"));
}

#[test]
fn killed_dockerd_is_restarted_within_5s() {
    if !require_docker("killed_dockerd_is_restarted_within_5s") {
        return;
    }
    let mut d = DockerLab::new("skil");
    d.start_supervised(&["--metrics-addr", "127.0.0.1:9464"]);
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "after"]);
    let old = d.dockerd_pid().expect("pidfile");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    // The old daemon's socket file stays behind: wait for a new pid first.
    assert!(common::eventually(Duration::from_secs(5), || d
        .dockerd_pid()
        .is_some_and(|p| p != old)));
    let left = Duration::from_secs(5).saturating_sub(killed.elapsed());
    assert!(
        d.wait_ready(left),
        "a new dockerd answers within 5 s of kill -9; log:\n{}",
        d.tail()
    );
    eprintln!("new dockerd answered {:?} after kill -9", killed.elapsed());
    assert_eq!(d.first_instruction_mtu(Some("after")), "1450");
    assert_eq!(d.first_instruction_mtu(None), "1450");
    let scrape = || common::http_get(&d.pod, "127.0.0.1:9464", "/metrics").1;
    assert_eq!(
        common::metric(&scrape(), "mtuvisor_dockerd_restarts_total"),
        1.0
    );
    // The heap is counted in this mode's process too (node: node_churn).
    assert!(common::metric(&scrape(), "mtuvisor_heap_bytes") > 0.0);
    // dockerd's --mtu covers docker0 only: the container on "after" was
    // clamped from its notification, timed, and split into stages, as
    // under `watch` (tests/metrics.rs) and `node`.
    let mut split = Err(String::new());
    assert!(
        common::eventually(Duration::from_secs(5), || {
            split = common::clamps_split_into_stages(&scrape());
            split.as_ref().is_ok_and(|clamps| *clamps >= 1.0)
        }),
        "every clamp timed is split into its stages: {split:?}"
    );
    assert!(
        common::eventually(Duration::from_secs(10), || common::metric(
            &scrape(),
            "mtuvisor_docker_resyncs_total"
        ) >= 2.0),
        "the API is followed again after the restart"
    );
}

#[test]
fn sigterm_stops_dockerd_and_exits_zero() {
    if !require_docker("sigterm_stops_dockerd_and_exits_zero") {
        return;
    }
    let mut d = supervised("sterm");
    let dockerd = d.dockerd_pid().expect("pidfile");
    let asked = Instant::now();
    let status = d
        .stop_main(Duration::from_secs(25))
        .expect("mtuvisor exits within the stop timeout");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.tail());
    eprintln!("mtuvisor exited {:?} after SIGTERM", asked.elapsed());
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("forwarding signal to dockerd"), "{}", d.tail());
    assert!(
        log.contains("Processing signal 'terminated'"),
        "dockerd got SIGTERM: {}",
        d.tail()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{dockerd}")).exists(),
        "dockerd is gone"
    );
}

#[test]
fn a_lower_outer_mtu_later_is_followed() {
    if !require_docker("a_lower_outer_mtu_later_is_followed") {
        return;
    }
    let mut d = supervised("sfol");
    let id = d.docker_ok(&["network", "create", "ci"]);
    let bridge = format!("br-{}", &id[..12]);
    let cid = d.docker_ok(&["run", "-d", "--network", "ci", IMAGE, "sleep", "60"]);
    // The pod's network is reconfigured under a running dockerd.
    ip(&d.pod, &["link", "set", "eth0", "mtu", "1400"]);
    let lowered = common::eventually(Duration::from_secs(2), || {
        let ports = ip(&d.pod, &["-o", "link", "show", "master", &bridge]);
        mtu(&d.pod, "docker0") == 1400
            && mtu(&d.pod, &bridge) == 1400
            && ports.contains("mtu 1400")
            && !ports.contains("mtu 1450")
    });
    assert!(
        lowered,
        "docker0, {bridge} and its port follow eth0 to 1400"
    );
    let inside = d.docker_ok(&["exec", &cid, "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(inside, "1400", "the running container's eth0");
    // dockerd still says 1450 for the default bridge; what it creates is
    // clamped before the first instruction.
    assert_eq!(d.first_instruction_mtu(None), "1400");
    assert_eq!(d.first_instruction_mtu(Some("ci")), "1400");
    d.docker_ok(&["rm", "-f", &cid]);
    // Namespaces Docker did not report, a moment apart.
    let pod = d.pod.clone();
    common::far_ends_a_moment_apart(&mut d.lab, &pod, "docker0", 1400);
}

/// Real-time priority refused: without CAP_SYS_NICE one warning; with it,
/// in a cgroup without a real-time budget, one info line. Either way
/// supervise enforces at ordinary priority. A command other than dockerd
/// (run once) is enough to see it: the runtime, the enforcement and the
/// line are the same.
#[test]
fn refused_realtime_priority_is_said_once_and_supervise_clamps() {
    if !common::privileged("refused_realtime_priority_is_said_once_and_supervise_clamps") {
        return;
    }
    let no_budget = common::NoRtBudget::new("snice2");
    let tags = ["snice", "snice2"];
    for (tag, refusal) in tags.into_iter().zip(common::realtime_refusals(&no_budget)) {
        let mut lab = common::Lab::new(tag);
        let (pod, _) = lab.pod(1450);
        let c = lab.netns("c");
        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        ip(&pod, &["link", "set", "docker0", "up"]);
        common::docker_style_veth(&pod, "docker0", "veth0", &c);
        let log = lab.temp_file("supervise.log", "");
        // No Docker API here: a socket path nothing listens on.
        let socket = format!("unix:///tmp/{}-none.sock", lab.prefix());
        let mut cmd = refusal.mtuvisor_in(&pod);
        cmd.args([
            "supervise",
            "--reconcile-interval",
            "200ms",
            "--",
            "sleep",
            "2",
        ])
        .env("DOCKER_HOST", &socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        let s = lab.spawn(cmd);
        assert!(
            common::eventually(Duration::from_secs(3), || mtu(&pod, "veth0") == 1450
                && mtu(&c, "eth0") == 1450),
            "both ends clamped: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        common::assert_clamping_threads(lab.pid(s), None);
        let status = lab.wait(s, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "the command's exit code");
        (refusal.said)(&std::fs::read_to_string(&log).unwrap());
    }
}
