//! `path_probe`: a bottleneck beyond the pod's first hop (the pod's `eth0`
//! says 1500, a link two routers away carries 1400), silent or honest, is
//! measured and followed under `watch`, `supervise` and `node`; an inner
//! container's 8 MB download that stalls without it completes with it;
//! the bottleneck moved at run time is followed; IPv6 is measured alike.

use testkit as common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::blackhole::{BlackHole, SERVER, SERVER6};
use common::dockerd::{require_docker, IMAGE};
use common::{eventually, ip, mtu, run_mtuvisor};

/// Long enough for 8 MB on this lab many times over; a stall never ends.
const LIMIT: Duration = Duration::from_secs(15);
/// The probe's interval in these tests.
const INTERVAL: &str = "1s";
/// A first probe through the black hole: a few sizes wait for silence.
const FIRST_PROBE: Duration = Duration::from_secs(30);
/// Where mtuvisor serves metrics, in the namespace it runs in.
const METRICS: &str = "127.0.0.1:9464";

#[derive(Clone, Copy, Debug)]
enum Mode {
    Watch,
    Supervise,
    Node,
}

/// The log of the agent (`node`) or of the pod's mtuvisor and dockerd.
fn log_of(b: &BlackHole, mode: Mode) -> PathBuf {
    match mode {
        Mode::Node => b.d.dir.join("agent.log"),
        _ => b.d.log.clone(),
    }
}

fn log_text(b: &BlackHole, mode: Mode) -> String {
    let text = std::fs::read_to_string(log_of(b, mode)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Starts dockerd and mtuvisor in `mode` with `flags`, then a user
/// network `ci`.
fn start(b: &mut BlackHole, mode: Mode, flags: &[&str]) {
    match mode {
        Mode::Watch => {
            b.d.start_plain();
            b.d.start_sidecar_with(flags, &[]);
        }
        Mode::Supervise => {
            b.d.start_supervised_env(flags, &[]);
        }
        Mode::Node => {
            // The agent runs where a node's would: at the far end of the
            // pod's eth0 (the first router), probing from there.
            let mut cmd = common::mtuvisor_in(&b.d.router);
            cmd.args(["node", "--proc-scan", "off", "--netns-include", &b.d.pod])
                .args(flags)
                .env("MTUVISOR_NETNS_DIRS", "/run/netns")
                .env("MTUVISOR_LOG", "debug")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(log_of(b, mode)).unwrap());
            b.d.lab.spawn(cmd);
            b.d.start_plain();
        }
    }
    b.d.ready();
    b.d.import_busybox();
    b.d.docker_ok(&["network", "create", "ci"]);
}

/// The bridge of Docker network `name`.
fn bridge_of(b: &BlackHole, name: &str) -> String {
    let id =
        b.d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", name]);
    format!("br-{}", &id[..12])
}

fn container_mtu(b: &BlackHole, id: &str) -> Option<u32> {
    let out = b.d.docker(&["exec", id, "cat", "/sys/class/net/eth0/mtu"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The whole story in one mode: the first probe lowers the target to the
/// path, new containers start at it, the download completes, and a
/// bottleneck moved to 1380 is followed by every managed link, running
/// containers' included.
fn follows_the_path(tag: &str, mode: Mode, silent: bool) {
    let mut b = BlackHole::beyond(tag, 1400, silent);
    let started = Instant::now();
    start(
        &mut b,
        mode,
        &[
            "--path-probe",
            SERVER,
            "--path-probe-interval",
            INTERVAL,
            "--metrics-addr",
            METRICS,
        ],
    );
    let pod = b.d.pod.clone();
    let served_in = match mode {
        Mode::Node => b.d.router.clone(),
        _ => pod.clone(),
    };
    let ci = bridge_of(&b, "ci");
    let first = eventually(FIRST_PROBE, || {
        mtu(&pod, "docker0") == 1400 && mtu(&pod, &ci) == 1400
    });
    assert!(
        first,
        "{mode:?}: the first probe lowers Docker's bridges to the path's 1400; log:\n{}",
        log_text(&b, mode)
    );
    eprintln!(
        "{mode:?} (silent: {silent}): bridges at the probed 1400 {:?} after mtuvisor's start",
        started.elapsed()
    );
    assert_eq!(
        mtu(&pod, "eth0"),
        1500,
        "the pod's own eth0 is never managed"
    );
    assert_eq!(
        common::http_get(&served_in, METRICS, "/livez"),
        (200, "ok\n".to_string()),
        "{mode:?}: alive"
    );
    let metrics = common::http_get(&served_in, METRICS, "/metrics").1;
    assert!(
        metrics.contains(&format!(
            "mtuvisor_path_mtu{{path_target=\"{SERVER}\",ceiling=\"1500\"}} 1400\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "mtuvisor_path_probe_failures_total{{path_target=\"{SERVER}\"}} 0\n"
        )),
        "{metrics}"
    );
    let source = metrics
        .lines()
        .find(|l| l.starts_with("mtuvisor_target_source{") && l.ends_with(" 1"))
        .unwrap_or_default();
    assert!(source.contains("source=\"probe\""), "{metrics}");
    assert_eq!(
        b.d.first_instruction_mtu(Some("ci")),
        "1400",
        "{mode:?}: user network"
    );
    assert_eq!(
        b.d.first_instruction_mtu(None),
        "1400",
        "{mode:?}: default bridge"
    );
    let took = b.fetch("ci", &b.http_big(), LIMIT);
    assert!(
        took.is_some(),
        "{mode:?}: with path_probe the 8 MB download completes; log:\n{}",
        log_text(&b, mode)
    );
    eprintln!("{mode:?} (silent: {silent}): 8 MB through the path in {took:?}");

    // The bottleneck moves while a container runs.
    let id =
        b.d.docker_ok(&["run", "-d", "--network", "ci", IMAGE, "sleep", "600"]);
    assert_eq!(container_mtu(&b, &id), Some(1400));
    b.set_bottleneck(1380);
    let moved = Instant::now();
    let followed = eventually(Duration::from_secs(30), || {
        mtu(&pod, "docker0") == 1380
            && mtu(&pod, &ci) == 1380
            && container_mtu(&b, &id) == Some(1380)
    });
    assert!(
        followed,
        "{mode:?}: every managed link follows the bottleneck to 1380; log:\n{}",
        log_text(&b, mode)
    );
    let took = moved.elapsed();
    eprintln!("{mode:?} (silent: {silent}): bottleneck moved to 1380, links followed in {took:?} (interval {INTERVAL})");
    assert_eq!(b.d.first_instruction_mtu(Some("ci")), "1380");
    let took = b.fetch("ci", &b.http_big(), LIMIT);
    assert!(
        took.is_some(),
        "{mode:?}: the download completes at 1380 too"
    );
    // And back: the path widens to 1450; links mtuvisor lowered rise
    // with it, never above the outer MTU.
    b.set_bottleneck(1450);
    let widened = eventually(Duration::from_secs(30), || {
        mtu(&pod, "docker0") == 1450 && container_mtu(&b, &id) == Some(1450)
    });
    assert!(
        widened,
        "{mode:?}: the links rise with the path; log:\n{}",
        log_text(&b, mode)
    );
    let _ = b.d.docker(&["rm", "-f", &id]);
}

#[test]
fn without_path_probe_the_bottleneck_beyond_eth0_is_a_black_hole() {
    if !require_docker("without_path_probe_the_bottleneck_beyond_eth0_is_a_black_hole") {
        return;
    }
    let mut b = BlackHole::beyond("ppnone", 1400, true);
    start(&mut b, Mode::Watch, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        mtu(&b.d.pod, "docker0"),
        1500,
        "eth0 says 1500: nothing to lower"
    );
    assert_eq!(
        b.fetch("ci", &b.http_big(), LIMIT),
        None,
        "the 8 MB download must stall, MSS clamping to the route's 1500 included"
    );
}

#[test]
fn watch_follows_a_silent_bottleneck() {
    if !require_docker("watch_follows_a_silent_bottleneck") {
        return;
    }
    follows_the_path("ppwatch", Mode::Watch, true);
}

#[test]
fn supervise_follows_a_silent_bottleneck() {
    if !require_docker("supervise_follows_a_silent_bottleneck") {
        return;
    }
    follows_the_path("ppsup", Mode::Supervise, true);
}

#[test]
fn node_follows_a_silent_bottleneck() {
    if !require_docker("node_follows_a_silent_bottleneck") {
        return;
    }
    follows_the_path("ppnode", Mode::Node, true);
}

#[test]
fn watch_follows_an_honest_bottleneck() {
    if !require_docker("watch_follows_an_honest_bottleneck") {
        return;
    }
    follows_the_path("pphon", Mode::Watch, false);
}

#[test]
fn a_target_that_never_answers_leaves_the_outer_mtu_with_one_warning() {
    if !require_docker("a_target_that_never_answers_leaves_the_outer_mtu_with_one_warning") {
        return;
    }
    let mut b = BlackHole::beyond("ppdead", 1400, true);
    // Nobody has this address: every probe goes unanswered.
    start(
        &mut b,
        Mode::Watch,
        &[
            "--path-probe",
            "198.51.100.99",
            "--path-probe-interval",
            INTERVAL,
        ],
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(mtu(&b.d.pod, "docker0"), 1500, "the outer MTU stands");
    let log = b.d.tail_all();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no path_probe target answered"))
        .count();
    assert_eq!(warned, 1, "one warning, then quiet retries:\n{log}");
    assert!(
        log.contains("(still failing)"),
        "retried (DEBUG while it repeats):\n{log}"
    );
}

/// The doctor's JSON report of `--probe` targets, in `netns`.
fn doctor_probe(netns: &str, targets: &[&str]) -> serde_json::Value {
    let mut args = vec!["doctor", "--json", "--probe-timeout-ms", "500"];
    for t in targets {
        args.extend(["--probe", t]);
    }
    let out = run_mtuvisor(netns, &args, &[]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// IPv6: the same bottleneck, silent and honest, found to the byte by
/// `doctor --probe` and followed by `path_probe` (a bridge named like
/// Docker's in the pod; no dockerd needed).
#[test]
fn an_ipv6_bottleneck_is_found_exactly() {
    if !require_docker("an_ipv6_bottleneck_is_found_exactly") {
        return;
    }
    for silent in [true, false] {
        let tag = if silent { "pp6s" } else { "pp6h" };
        let mut b = BlackHole::beyond(tag, 1400, silent);
        let pod = b.d.pod.clone();
        let v6 = format!("[{SERVER6}]:443");
        let report = doctor_probe(&pod, &[SERVER6, &v6, SERVER]);
        let probes = report["probes"].as_array().expect("probes");
        for p in probes {
            assert_eq!(p["path_mtu"], 1400, "silent {silent}: {p}");
            assert_eq!(p["black_hole"], silent, "silent {silent}: {p}");
            if !silent {
                assert_eq!(p["reported_mtu"], 1400, "the router's figure: {p}");
            }
        }
        let udp = report["problems"][0]["what"].as_str().unwrap_or_default();
        assert!(udp.contains("UDP"), "what MSS cannot cover: {report}");
        assert!(
            report["problems"][0]["fix"][0]
                .as_str()
                .unwrap_or_default()
                .starts_with("path_probe = "),
            "{report}"
        );
        eprintln!(
            "IPv6 (silent: {silent}): {} sizes in {} ms",
            probes[0]["sizes_tried"], probes[0]["took_ms"]
        );

        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        ip(&pod, &["link", "set", "docker0", "up"]);
        let log = b.d.dir.join("watch.log");
        let mut cmd = common::mtuvisor_in(&pod);
        cmd.args([
            "watch",
            "--path-probe",
            SERVER6,
            "--path-probe-interval",
            INTERVAL,
        ])
        .env("MTUVISOR_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        b.d.lab.spawn(cmd);
        let probed = eventually(FIRST_PROBE, || mtu(&pod, "docker0") == 1400);
        assert!(
            probed,
            "path_probe over IPv6 lowers docker0 to 1400: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        b.set_bottleneck(1380);
        let followed = eventually(Duration::from_secs(30), || mtu(&pod, "docker0") == 1380);
        assert!(followed, "and follows it to 1380");
    }
}
