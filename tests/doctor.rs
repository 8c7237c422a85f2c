//! `mtuvisor doctor` in the namespace lab and against a real dockerd: the
//! verdict, the path probe (reported bottleneck, black hole, ICMP echo
//! filtered, unreachable), the JSON document, and what it does without
//! CAP_NET_ADMIN.

use testkit as common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::dockerd::{require_docker, DockerLab};
use common::{in_netns, ip, privileged, run_mtuvisor, sh, Lab};

const SERVER: &str = "203.0.113.10";
const PORT: u16 = 8080;

/// pod (eth0 1500) — router — server, the router's link to the server at
/// `bottleneck`; a TCP listener on the server. Returns (lab, pod, router,
/// server).
fn path_lab(tag: &str, bottleneck: u32) -> (Lab, String, String, String) {
    let mut lab = Lab::new(tag);
    let (pod, router) = lab.pod(1500);
    ip(&router, &["link", "set", "down0", "mtu", "1500"]);
    let server = lab.netns("srv");
    ip(
        &server,
        &[
            "link", "add", "s0", "type", "veth", "peer", "name", "up0", "netns", &router,
        ],
    );
    let b = bottleneck.to_string();
    ip(&server, &["link", "set", "s0", "mtu", &b, "up"]);
    ip(&router, &["link", "set", "up0", "mtu", &b, "up"]);
    ip(
        &server,
        &["addr", "add", &format!("{SERVER}/24"), "dev", "s0"],
    );
    ip(&router, &["addr", "add", "203.0.113.1/24", "dev", "up0"]);
    ip(&server, &["route", "add", "default", "via", "203.0.113.1"]);
    in_netns(&router, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding on")
    });
    // A listener that accepts and reads everything, for the TCP probe.
    let listener = in_netns(&server, || {
        std::net::TcpListener::bind((SERVER, PORT)).unwrap()
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let _ = std::io::copy(&mut s, &mut std::io::sink());
            });
        }
    });
    (lab, pod, router, server)
}

fn nsenter(netns: &str, args: &[&str]) {
    let mut full = vec!["nsenter".to_string(), format!("--net=/run/netns/{netns}")];
    full.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    sh(&refs);
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn doctor(pod: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let mut full = vec!["doctor", "--json", "--probe-timeout-ms", "300"];
    full.extend_from_slice(args);
    let out = run_mtuvisor(pod, &full, &[]);
    let v = json(&out);
    (out, v)
}

/// `doctor --json --probe SERVER` in `pod` as user nobody, with the
/// capabilities `setpriv`'s `caps` arguments leave it.
fn doctor_as_nobody(pod: &str, caps: &[&str]) -> Output {
    std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{pod}"))
        .arg("setpriv")
        .args(caps)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            common::bin(),
            "doctor",
            "--json",
            "--probe-timeout-ms",
            "300",
            "--probe",
            SERVER,
        ])
        .output()
        .unwrap()
}

fn probe0(v: &serde_json::Value) -> &serde_json::Value {
    &v["probes"][0]
}

#[test]
fn a_reported_bottleneck_beyond_eth0_is_measured_and_fixed_with_mss() {
    if !privileged("a_reported_bottleneck_beyond_eth0_is_measured_and_fixed_with_mss") {
        return;
    }
    let (_lab, pod, _router, _server) = path_lab("docr", 1400);
    let (out, v) = doctor(&pod, &["--probe", SERVER]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let p = probe0(&v);
    assert_eq!(p["path_mtu"], 1400, "{p:#}");
    assert_eq!(p["method"], "icmp");
    assert_eq!(p["reported_mtu"], 1400);
    assert_eq!(p["black_hole"], false);
    let fixes = v["problems"][0]["fix"].to_string();
    assert!(fixes.contains("mss = 1360"), "{fixes}");
    assert!(fixes.contains("mtu = 1400"), "{fixes}");
}

#[test]
fn a_black_hole_is_found_from_echo_replies_alone() {
    if !privileged("a_black_hole_is_found_from_echo_replies_alone") {
        return;
    }
    let (_lab, pod, router, _server) = path_lab("docb", 1400);
    common::drop_frag_needed(&router);
    let started = Instant::now();
    let (out, v) = doctor(&pod, &["--probe", SERVER]);
    assert_eq!(out.status.code(), Some(1));
    let p = probe0(&v);
    assert_eq!(p["path_mtu"], 1400, "{p:#}");
    assert_eq!(p["black_hole"], true);
    assert_eq!(p["reported_mtu"], serde_json::Value::Null);
    assert!(v["problems"][0]["what"]
        .as_str()
        .unwrap()
        .contains("black hole"));
    eprintln!(
        "black hole found in {:?}, {} sizes",
        started.elapsed(),
        p["sizes_tried"]
    );
}

#[test]
fn with_icmp_echo_filtered_tcp_gives_the_same_answer() {
    if !privileged("with_icmp_echo_filtered_tcp_gives_the_same_answer") {
        return;
    }
    let (_lab, pod, router, server) = path_lab("doct", 1400);
    nsenter(
        &server,
        &[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-j",
            "DROP",
        ],
    );
    // And a black hole too: only acknowledgements can tell.
    common::drop_frag_needed(&router);
    let (out, v) = doctor(&pod, &["--probe", &format!("{SERVER}:{PORT}")]);
    assert_eq!(out.status.code(), Some(1));
    let p = probe0(&v);
    assert_eq!(p["method"], "tcp", "{p:#}");
    assert_eq!(p["path_mtu"], 1400, "{p:#}");
    assert!(v["problems"][0]["fix"].to_string().contains("mss = 1360"));
}

#[test]
fn an_unreachable_target_is_a_clear_line_within_the_timeout() {
    if !privileged("an_unreachable_target_is_a_clear_line_within_the_timeout") {
        return;
    }
    let (_lab, pod, _router, _server) = path_lab("docu", 1400);
    let started = Instant::now();
    let (out, v) = doctor(&pod, &["--probe", "203.0.113.99:80"]);
    let took = started.elapsed();
    let p = probe0(&v);
    assert_eq!(p["outcome"], "unreachable", "{p:#}");
    assert_eq!(p["path_mtu"], serde_json::Value::Null);
    assert!(p["note"].as_str().unwrap().contains("no answer"), "{p:#}");
    // One ICMP size and one TCP connect, each bounded by 300 ms, plus the
    // rest of the report.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let text = run_mtuvisor(
        &pod,
        &[
            "doctor",
            "--probe",
            "203.0.113.99:80",
            "--probe-timeout-ms",
            "300",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("203.0.113.99:80") && text.contains("unreachable"),
        "{text}"
    );
    // No Docker, no problem with the links: the probe alone decides.
    assert_eq!(out.status.code(), Some(0), "{v:#}");
}

#[test]
fn the_json_document_matches_its_schema() {
    if !privileged("the_json_document_matches_its_schema") {
        return;
    }
    let (_lab, pod, _router, _server) = path_lab("docj", 1500);
    let (_, v) = doctor(&pod, &["--probe", SERVER]);
    // The schema the README documents, version 1.
    assert_eq!(v["schema"], 1);
    assert!(v["healthy"].is_boolean());
    for (key, kind) in [
        ("problems", "array"),
        ("notes", "array"),
        ("links", "array"),
        ("probes", "array"),
        ("outer", "object"),
        ("mss", "object"),
        ("mtuvisor", "object"),
        ("capabilities", "object"),
    ] {
        let ok = match kind {
            "array" => v[key].is_array(),
            _ => v[key].is_object(),
        };
        assert!(ok, "{key} is an {kind}: {v:#}");
    }
    assert_eq!(v["outer"]["mtu"], 1500);
    assert_eq!(v["outer"]["interface"], "eth0");
    for key in ["net_admin", "net_raw", "sys_admin"] {
        assert!(v["capabilities"][key].is_boolean());
    }
    assert!(v["mtuvisor"]["running"].is_boolean());
    let p = probe0(&v);
    for key in [
        "target",
        "outcome",
        "black_hole",
        "sizes_tried",
        "took_ms",
        "note",
    ] {
        assert!(!p[key].is_null(), "probe field {key}: {p:#}");
    }
    assert_eq!(p["outcome"], "clear");
    assert_eq!(p["path_mtu"], 1500);
    assert_eq!(v["healthy"], true);
}

#[test]
fn without_net_admin_it_reads_what_it_can_and_says_what_is_missing() {
    if !privileged("without_net_admin_it_reads_what_it_can_and_says_what_is_missing") {
        return;
    }
    let (_lab, pod, _router, _server) = path_lab("docc", 1400);
    // Every capability dropped but CAP_NET_RAW (the probe's only need).
    let out = doctor_as_nobody(
        &pod,
        &[
            "--inh-caps=-all,+net_raw",
            "--ambient-caps=+net_raw",
            "--bounding-set=-all,+net_raw",
        ],
    );
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "a problem was found: {v:#}");
    assert_eq!(v["capabilities"]["net_admin"], false);
    assert_eq!(v["capabilities"]["net_raw"], true);
    assert_eq!(
        probe0(&v)["path_mtu"],
        1400,
        "the probe needs CAP_NET_RAW only"
    );
    let notes = v["notes"].to_string();
    assert!(notes.contains("CAP_NET_ADMIN"), "{notes}");
    assert!(notes.contains("daemonless builder"), "{notes}");
}

/// `doctor` with no capability at all, as an unprivileged user: the
/// probe uses the kernel's ping sockets where the namespace's
/// `ping_group_range` allows them, and where it does not, says what it
/// lacked (CAP_NET_RAW or ping_group_range) instead of a figure.
#[test]
fn with_no_capability_it_probes_through_ping_sockets_or_says_what_it_lacks() {
    if !privileged("with_no_capability_it_probes_through_ping_sockets_or_says_what_it_lacks") {
        return;
    }
    let (_lab, pod, _router, _server) = path_lab("docn", 1400);
    let nobody = |range: &'static str| {
        in_netns(&pod, move || {
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", range).expect("ping_group_range")
        });
        json(&doctor_as_nobody(
            &pod,
            &["--inh-caps=-all", "--bounding-set=-all"],
        ))
    };
    let v = nobody("0 2147483647");
    assert_eq!(v["capabilities"]["net_raw"], false);
    assert_eq!(probe0(&v)["path_mtu"], 1400, "ping sockets: {v:#}");
    let v = nobody("1 0");
    assert!(probe0(&v)["path_mtu"].is_null(), "no figure: {v:#}");
    let said = v.to_string();
    assert!(
        said.contains("CAP_NET_RAW") && said.contains("ping_group_range"),
        "says what it lacked: {v:#}"
    );
}

#[test]
fn healthy_under_supervise_and_a_user_network_above_target_without_enforcement() {
    if !require_docker(
        "healthy_under_supervise_and_a_user_network_above_target_without_enforcement",
    ) {
        return;
    }
    let mut d = DockerLab::new("docd");
    d.start_supervised(&[]);
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "job",
        "--network",
        "ci",
        common::dockerd::IMAGE,
        "sleep",
        "300",
    ]);
    let host = format!("unix://{}", d.socket.display());
    let healthy = common::eventually(Duration::from_secs(3), || {
        run_mtuvisor(&d.pod, &["doctor", "--docker-host", &host], &[])
            .status
            .code()
            == Some(0)
    });
    let out = run_mtuvisor(&d.pod, &["doctor", "--docker-host", &host], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(healthy, "healthy under supervise:\n{text}");
    assert!(text.starts_with("OK no MTU problem found"), "{text}");
    assert!(
        text.contains("ci") && text.contains("mtuvisor rules: present"),
        "{text}"
    );
    eprintln!("--- doctor, healthy ---\n{text}");
    let _ = d.docker(&["rm", "-f", "job"]);
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );

    // The same dockerd without MTU enforcement: a user network at 1500.
    d.start_supervised_env(&[], &[("MTUVISOR_ENFORCE_MTU", "false")]);
    d.ready();
    d.docker_ok(&["network", "create", "ci2"]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "job2",
        "--network",
        "ci2",
        common::dockerd::IMAGE,
        "sleep",
        "300",
    ]);
    let out = run_mtuvisor(&d.pod, &["doctor", "--docker-host", &host], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("--- doctor, enforcement off ---\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let bridge = format!(
        "br-{}",
        &d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "ci2"])[..12]
    );
    let problem = text
        .lines()
        .find(|l| l.contains("Docker network ci2"))
        .unwrap_or_else(|| panic!("names the network:\n{text}"));
    assert!(
        problem.contains(&bridge) && problem.contains("job2") && problem.contains("1500"),
        "{problem}"
    );
    assert!(
        text.contains("docker network create -o com.docker.network.driver.mtu=1450 ci2"),
        "{text}"
    );
    let _ = d.docker(&["rm", "-f", "job2"]);
}
