//! Each mode without each capability it uses: what stops working, the one
//! line that names the grant, `mtuvisor_missing_capability`, and
//! `/healthz` not ready when the grant is required (while `/livez`, which
//! a restart could not fix, stays alive). The same lab with every grant
//! enforces, so each test fails for its reason. `node`: the DaemonSet's
//! grants; `watch` and `supervise`: what their pod needs; `doctor`:
//! `tests/doctor.rs`.

use testkit as common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::node::{NodeLab, METRICS};
use common::{eventually, ip, mtu, privileged, Lab};

/// `mtuvisor node` for this lab's pods, without `caps` (setpriv's names).
fn agent_without(n: &mut NodeLab, caps: &[&str]) -> usize {
    let cmd = common::mtuvisor_in_without(&n.node, caps);
    let include = n.include();
    n.spawn_agent(cmd, &include, &["--reconcile-interval", "200ms"], &[])
}

/// Where a running mtuvisor answers and logs.
struct Seen<'a> {
    netns: &'a str,
    addr: &'a str,
    log: &'a Path,
}

impl Seen<'_> {
    fn node(n: &NodeLab) -> Seen<'_> {
        Seen {
            netns: &n.node,
            addr: METRICS,
            log: &n.log,
        }
    }

    fn sample(&self, series: &str) -> Option<f64> {
        let (_, text) = common::http_get(self.netns, self.addr, "/metrics");
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log).unwrap_or_default()
    }
}

/// The log has one WARN line naming `cap`, the metric says it is missing,
/// and, when `required`, `/healthz` says not ready and names it (else
/// ready). `/livez` answers either way.
fn assert_said_missing(seen: &Seen, cap: &str, required: bool) {
    let (status, body) = common::http_get(seen.netns, seen.addr, "/healthz");
    if required {
        assert_eq!(status, 503, "not ready without {cap}: {body}");
        assert!(
            body.contains(&format!("missing CAP_{cap}")) && body.contains("capabilities.add"),
            "names the grant and where it goes: {body}"
        );
    } else {
        assert_eq!(status, 200, "ready without {cap}: {body}");
    }
    assert_eq!(common::http_get(seen.netns, seen.addr, "/livez").0, 200);
    let log = seen.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("missing CAP_{cap}")))
        .collect();
    assert_eq!(lines.len(), 1, "one line about {cap}:\n{log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert_eq!(
        seen.sample(&format!(
            "mtuvisor_missing_capability{{capability=\"{cap}\",required=\"{required}\"}}"
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

/// The node agent without `cap`, a required grant, beside one Docker pod:
/// nothing in the pod changes, the agent says which grant in one line and
/// a metric (the other required grant reads held), it is not ready, and
/// it enforces once granted everything.
fn without_a_required_grant(tag: &str, cap: &str, pod_index: usize) {
    let mut n = NodeLab::new(tag);
    let (pod, bridge) = n.docker_pod("x", pod_index);
    let agent = agent_without(&mut n, &[&cap.to_lowercase()]);
    unchanged_for_a_while(&pod, &[&bridge, "veth0", "veth0p"]);
    assert_said_missing(&Seen::node(&n), cap, true);
    for held in ["NET_ADMIN", "SYS_ADMIN"].into_iter().filter(|c| *c != cap) {
        assert_eq!(
            n.sample(&format!(
                "mtuvisor_missing_capability{{capability=\"{held}\",required=\"true\"}}"
            )),
            Some(0.0),
            "{held} is held"
        );
    }
    with_every_grant(&mut n, agent, || {
        mtu(&pod, &bridge) == 1450 && mtu(&pod, "veth0p") == 1450
    });
}

#[test]
fn without_sys_admin_no_pod_is_entered_and_the_agent_is_not_ready() {
    if !privileged("without_sys_admin_no_pod_is_entered_and_the_agent_is_not_ready") {
        return;
    }
    without_a_required_grant("gadm", "SYS_ADMIN", 0x5a1);
}

#[test]
fn without_net_admin_no_link_is_changed_and_the_agent_is_not_ready() {
    if !privileged("without_net_admin_no_link_is_changed_and_the_agent_is_not_ready") {
        return;
    }
    without_a_required_grant("gnet", "NET_ADMIN", 0x5a2);
}

/// A container in `pod`: a root process with every capability in a
/// network namespace no directory names, reachable only through its
/// /proc/<pid>/ns/net, its eth0 (eth0c, 1500) the far end of `vethc` on
/// `bridge`. Returns what reads that eth0's MTU.
fn container_behind_proc(lab: &mut Lab, pod: &str, bridge: &str) -> impl Fn() -> u32 {
    let mut holder = std::process::Command::new("nsenter");
    holder
        .arg(format!("--net=/run/netns/{pod}"))
        .args(["unshare", "-n", "sleep", "600"]);
    let holder = lab.spawn(holder);
    let pid = lab.pid(holder).to_string();
    let own_ns = eventually(Duration::from_secs(5), || {
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
        ns(&pid).is_some() && ns(&pid) != ns("self")
    });
    assert!(own_ns, "the container's namespace");
    ip(
        pod,
        &[
            "link", "add", "vethc", "type", "veth", "peer", "name", "eth0c",
        ],
    );
    ip(pod, &["link", "set", "vethc", "master", bridge, "up"]);
    ip(pod, &["link", "set", "eth0c", "netns", &pid]);
    move || {
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
    }
}

/// A pod whose container is reachable only through /proc, and an agent
/// that `start` starts and that cannot reach it: the agent enforces on
/// the pod's bridge while the container's eth0, and so its host end,
/// stay at 1500. Returns the lab, what `start` returned and the reader of
/// the container's eth0.
fn out_of_reach<T>(
    tag: &str,
    index: usize,
    start: impl FnOnce(&mut NodeLab) -> T,
) -> (NodeLab, T, impl Fn() -> u32) {
    let mut n = NodeLab::new(tag);
    let (pod, bridge) = n.docker_pod("x", index);
    let far_end = container_behind_proc(&mut n.lab, &pod, &bridge);
    assert_eq!(far_end(), 1500);
    let agent = start(&mut n);
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, &bridge) == 1450),
        "the agent enforces in the pod; log:\n{}",
        n.tail()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(far_end(), 1500, "the container's eth0 is out of reach");
    assert_eq!(
        mtu(&pod, "vethc"),
        1500,
        "its host end waits for it: the pair stays matched"
    );
    (n, agent, far_end)
}

/// Without hostPID (the agent in a PID namespace of its own, whose /proc
/// shows only its own processes), a container reachable only through its
/// process's namespace keeps 1500 at both ends of its veth, and what the
/// agent says about the far end names hostPID (not SYS_PTRACE, which it
/// holds, nor only `netns_dirs`).
#[test]
fn without_host_pid_a_container_behind_proc_is_out_of_reach_and_the_hint_says_hostpid() {
    if !privileged(
        "without_host_pid_a_container_behind_proc_is_out_of_reach_and_the_hint_says_hostpid",
    ) {
        return;
    }
    let (n, _agent, _) = out_of_reach("gpid", 0x5a5, |n| {
        common::hostile::start_agent(
            n,
            &[],
            &[],
            &["--proc-scan", "off", "--reconcile-interval", "200ms"],
        )
    });
    let log = std::fs::read_to_string(&n.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("vethc") && l.contains("hostPID: true")),
        "the far end's line names hostPID:\n{log}"
    );
}

/// The sidecar's case (`watch` beside dockerd in a pod without
/// shareProcessNamespace, so its /proc shows only its own processes): a
/// container reachable only through its process's namespace keeps 1500
/// at both ends, and what watch says about the far end names
/// shareProcessNamespace.
#[test]
fn watch_without_the_pods_pid_namespace_says_share_process_namespace() {
    if !privileged("watch_without_the_pods_pid_namespace_says_share_process_namespace") {
        return;
    }
    let mut lab = Lab::new("gwpid");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "up"]);
    let far_end = container_behind_proc(&mut lab, &pod, "docker0");
    let log: PathBuf = lab.temp_file("watch.log", "");
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{pod}"))
        .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["--propagation", "slave"])
        .arg(common::bin())
        .env_remove("MTUVISOR_MTU");
    one_enforcer(&mut lab, "watch", cmd, &log);
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, "docker0") == 1450),
        "watch enforces in its pod: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(far_end(), 1500, "the container's eth0 is out of reach");
    assert_eq!(mtu(&pod, "vethc"), 1500, "its host end waits for it");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("vethc") && l.contains("shareProcessNamespace: true")),
        "the far end's line names shareProcessNamespace:\n{text}"
    );
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
    let (mut n, agent, far_end) =
        out_of_reach("gptr", 0x5a3, |n| agent_without(n, &["sys_ptrace"]));
    assert_said_missing(&Seen::node(&n), "SYS_PTRACE", true);
    with_every_grant(&mut n, agent, || far_end() == 1450);
}

/// Leaves in `pod` what a dockerd on iptables-legacy leaves (its DOCKER
/// chain), so that MSS rules go to the legacy tables there.
fn uses_iptables_legacy(pod: &str) {
    let legacy = |args: &[&str]| {
        let mut full = vec!["nsenter".to_string(), format!("--net=/run/netns/{pod}")];
        full.push("iptables-legacy".into());
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        common::sh(&refs);
    };
    legacy(&["-w", "5", "-t", "filter", "-N", "DOCKER"]);
    legacy(&["-w", "5", "-t", "filter", "-A", "FORWARD", "-j", "DOCKER"]);
}

/// Whether mtuvisor's MSS rules are in `pod`'s tables of `save`
/// (`iptables-legacy-save`, `iptables-nft-save`).
fn mss_in(pod: &str, save: &str) -> bool {
    common::sh(&[
        "nsenter",
        &format!("--net=/run/netns/{pod}"),
        save,
        "-t",
        "mangle",
    ])
    .contains("-A MTUVISOR-MSS")
}

fn legacy_mss(pod: &str) -> bool {
    mss_in(pod, "iptables-legacy-save")
}

/// Without NET_RAW, in a pod whose Docker uses iptables-legacy (which
/// reads its tables over a raw socket), the MSS rules go to nf_tables,
/// which the kernel applies as well (a SYN through such a pod is clamped
/// all the same): nothing stops working, so the agent asks for no NET_RAW,
/// says nothing about it and stays ready. With NET_RAW they go beside
/// Docker's.
fn assert_mss_in_nf_tables_and_nothing_said(pod: &str, seen: &Seen) {
    assert!(
        eventually(Duration::from_secs(5), || mss_in(pod, "iptables-nft-save")),
        "MSS rules in nf_tables:\n{}",
        seen.log()
    );
    assert!(!legacy_mss(pod), "none in the legacy tables");
    assert!(
        !seen.log().contains("NET_RAW"),
        "nothing said about NET_RAW:\n{}",
        seen.log()
    );
    assert_eq!(common::http_get(seen.netns, seen.addr, "/healthz").0, 200);
}

#[test]
fn without_net_raw_mss_rules_go_to_nf_tables_and_nothing_is_said() {
    if !privileged("without_net_raw_mss_rules_go_to_nf_tables_and_nothing_is_said") {
        return;
    }
    let mut n = NodeLab::new("graw");
    let (pod, bridge) = n.docker_pod("x", 0x5a4);
    uses_iptables_legacy(&pod);
    let agent = agent_without(&mut n, &["net_raw"]);
    assert!(
        eventually(Duration::from_secs(5), || mtu(&pod, &bridge) == 1450
            && mtu(&pod, "veth0p") == 1450),
        "MTUs enforced without NET_RAW; log:\n{}",
        n.tail()
    );
    assert_mss_in_nf_tables_and_nothing_said(&pod, &Seen::node(&n));
    with_every_grant(&mut n, agent, || legacy_mss(&pod));
}

/// The MSS a server beyond `pod` (in `router`, its link at 9000) sees
/// from a container (`c`, behind the pod's docker0) whose SYN advertises
/// 1460 whatever its MTU: 1460 unless the pod clamps it (to 1410 on the
/// pod's 1450 eth0), less the 12 bytes of timestamps, as TCP_MAXSEG on
/// the accepted connection reports it.
fn syn_mss_beyond(pod: &str, router: &str, c: &str) -> u32 {
    ip(pod, &["addr", "add", "172.30.0.1/16", "dev", "docker0"]);
    ip(c, &["addr", "add", "172.30.0.2/16", "dev", "eth0"]);
    ip(
        c,
        &[
            "route",
            "add",
            "default",
            "via",
            "172.30.0.1",
            "advmss",
            "1460",
        ],
    );
    ip(router, &["link", "set", "down0", "mtu", "9000"]);
    ip(
        router,
        &["route", "add", "172.30.0.0/16", "via", "192.0.2.2"],
    );
    common::in_netns(pod, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("forwarding on")
    });
    let listener = common::in_netns(router, || {
        std::net::TcpListener::bind("192.0.2.1:8080").expect("listen beyond the pod")
    });
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("the container connects");
        let mut mss: nix::libc::c_int = 0;
        let mut len = std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t;
        // SAFETY: a connected socket, and an int with its length to fill.
        let rc = unsafe {
            nix::libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&conn),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_MAXSEG,
                (&mut mss as *mut nix::libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "TCP_MAXSEG");
        mss as u32
    });
    common::in_netns(c, || {
        std::net::TcpStream::connect_timeout(
            &"192.0.2.1:8080".parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect through the pod")
    });
    server.join().unwrap()
}

/// Where `watch` and `supervise` serve metrics in their pod (its eth0).
const POD_METRICS: &str = "192.0.2.2:9464";

/// `mode` (`watch`, or `supervise` running a command that is not dockerd:
/// the enforcement is the same) in a pod with a Docker-style bridge and
/// container, started by `cmd`, no Docker API. Returns the process.
fn one_enforcer(lab: &mut Lab, mode: &str, mut cmd: std::process::Command, log: &Path) -> usize {
    let socket = format!("unix:///tmp/{}-none.sock", lab.prefix());
    cmd.arg(mode)
        .args([
            "--reconcile-interval",
            "200ms",
            "--metrics-addr",
            POD_METRICS,
        ])
        .env("DOCKER_HOST", &socket)
        .env("MTUVISOR_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if mode == "supervise" {
        cmd.args(["--", "sleep", "600"]);
    }
    lab.spawn(cmd)
}

/// `watch` and `supervise` without NET_ADMIN change no link and are not
/// ready; without SYS_ADMIN they reach no container that was there first;
/// without NET_RAW (iptables-legacy only) they enforce. Each time one line
/// (not one per link and sweep) names the grant. Each run is
/// followed by one with every grant, which enforces.
#[test]
fn watch_and_supervise_without_each_grant_say_so_once() {
    if !privileged("watch_and_supervise_without_each_grant_say_so_once") {
        return;
    }
    // Without NET_ADMIN nothing changes. Without SYS_ADMIN the container
    // that was there first cannot be entered: the bridge is lowered, the
    // veth's host end waits for its far end (a pair lowered at one end
    // would drop the container's larger frames); ready all the same, since
    // containers started later are clamped before dockerd moves their end.
    for (tag, mode, cap, name, required, unchanged) in [
        (
            "gwna",
            "watch",
            "net_admin",
            "NET_ADMIN",
            true,
            &["docker0", "veth0"][..],
        ),
        (
            "gsna",
            "supervise",
            "net_admin",
            "NET_ADMIN",
            true,
            &["docker0", "veth0"],
        ),
        ("gwsa", "watch", "sys_admin", "SYS_ADMIN", false, &["veth0"]),
        (
            "gssa",
            "supervise",
            "sys_admin",
            "SYS_ADMIN",
            false,
            &["veth0"],
        ),
        ("gwnr", "watch", "net_raw", "NET_RAW", false, &[]),
        ("gsnr", "supervise", "net_raw", "NET_RAW", false, &[]),
    ] {
        let mut lab = Lab::new(tag);
        let (pod, router) = lab.pod(1450);
        let c = lab.netns("c");
        ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
        ip(&pod, &["link", "set", "docker0", "up"]);
        common::docker_style_veth(&pod, "docker0", "veth0", &c);
        let enforced = || {
            mtu(&pod, "docker0") == 1450 && mtu(&pod, "veth0") == 1450 && mtu(&c, "eth0") == 1450
        };
        if cap == "net_raw" {
            uses_iptables_legacy(&pod);
        }
        let log: PathBuf = lab.temp_file("without.log", "");
        let seen = Seen {
            netns: &pod,
            addr: POD_METRICS,
            log: &log,
        };
        let without = common::mtuvisor_in_without(&pod, &[cap]);
        let p = one_enforcer(&mut lab, mode, without, &log);
        assert!(
            eventually(Duration::from_secs(5), || {
                common::try_http_get(&pod, POD_METRICS, "/livez").is_ok_and(|(s, _)| s == 200)
            }),
            "{mode} answers /livez without {name}: {}",
            seen.log()
        );
        if !unchanged.is_empty() {
            unchanged_for_a_while(&pod, unchanged);
            assert_eq!(mtu(&c, "eth0"), 1500, "the container's eth0 left alone");
            let log = seen.log();
            assert!(
                !log.lines()
                    .any(|l| l.contains("WARN") && l.contains("cannot enforce MTU")),
                "no warning per link and sweep:\n{log}"
            );
        } else {
            assert!(
                eventually(Duration::from_secs(5), enforced),
                "{mode} enforces without {name}: {}",
                seen.log()
            );
        }
        if cap == "net_raw" {
            assert_mss_in_nf_tables_and_nothing_said(&pod, &seen);
            // And they work beside Docker's legacy tables: the container's
            // SYN, advertising 1460, leaves the pod clamped to its path.
            assert_eq!(
                syn_mss_beyond(&pod, &router, &c),
                1410 - 12,
                "{mode}: the SYN was clamped (1460 - 12 unclamped)"
            );
        } else {
            assert_said_missing(&seen, name, required);
        }
        lab.stop(p, Duration::from_secs(10));

        let log: PathBuf = lab.temp_file("with.log", "");
        let with = common::mtuvisor_in(&pod);
        one_enforcer(&mut lab, mode, with, &log);
        assert!(
            eventually(Duration::from_secs(5), enforced),
            "{mode} enforces with every grant: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if cap == "net_raw" {
            assert!(
                eventually(Duration::from_secs(5), || legacy_mss(&pod)),
                "{mode}: MSS rules in the legacy tables with every grant"
            );
        }
        assert!(
            eventually(Duration::from_secs(5), || {
                common::try_http_get(&pod, POD_METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
            }),
            "{mode} ready with every grant"
        );
    }
}
