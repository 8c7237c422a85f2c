//! `mtuvisor node` on a real node (containerd's CRI plugin and the CNI
//! `bridge` plugin at MTU 1450, testkit/src/realnode), run as the
//! DaemonSet example writes it, as figures.
//!
//!     cargo bench --bench real_node [-- enforce|footprint|two_pods]
//!
//! `enforce`: for 50 pods made one after another, the time from
//! `RunPodSandbox` returning to the agent enforcing in the new pod: a
//! Docker bridge (`docker0`, 1500) is made in the pod's namespace at once,
//! as a dockerd starting there would, and the time is taken when it reads
//! the pod's 1450 (p50/p99; the part from the bridge's creation alone
//! beside it). `footprint`: the agent's resident set, threads and fds at
//! 1, 10, 50 and 110 pods (Kubernetes' default limit per node), each with
//! such a bridge, and its CPU while idle at 110 pods (reconciles only).
//! `two_pods`: two DinD pods (eth0 at 1450, and lowered to 1400) with 50
//! inner containers started at once in each: how many read their pod's
//! MTU at their first instruction, and each veth's clamp against dockerd's
//! own next request (testkit/src/series.rs, as `cargo bench --bench node`
//! measures it on the simulated node).

use testkit as common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::realnode::dind::{self, daemonset, dind_pod, docker_ready, METRICS};
use common::realnode::{require_real_node, Pod, RealNode, POD_MTU};
use common::{eventually, ip, ms, percentile};

/// Pods timed from `RunPodSandbox` to the agent enforcing.
const TIMED: usize = 50;
/// Kubernetes' default pod limit per node.
const FULL: usize = 110;
/// Inner containers started at once in each of two DinD pods.
const AT_ONCE: usize = 50;
/// Bursts of [`AT_ONCE`] per pod, one after the other.
const RUNS: usize = 5;
/// Bursts with the agent's cgroup given more CPU weight.
const WEIGHTED_RUNS: usize = 2;

fn main() {
    // `cargo bench --bench real_node -- two_pods` runs one part.
    let chosen: Vec<&str> = ["enforce", "footprint", "two_pods"]
        .into_iter()
        .filter(|part| common::bench_selected(&format!("real_node {part}")))
        .collect();
    if chosen.is_empty() || !require_real_node("bench real_node") {
        return;
    }
    let mut node = RealNode::start("bench");
    let agent = node.run_pod(daemonset(&node));
    let ready = eventually(Duration::from_secs(30), || {
        common::try_http_get(&node.netns, METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "the agent is ready; containerd:\n{}", node.log());
    let pid = node.pid_of(&agent, "mtuvisor");
    let priority = common::http_get(&node.netns, METRICS, "/metrics")
        .1
        .lines()
        .find_map(|l| l.strip_prefix("mtuvisor_realtime_priority "))
        .unwrap_or("?")
        .to_string();
    println!(
        "real node: containerd (CRI), CNI bridge at {POD_MTU}, the DaemonSet as written; \
         the agent's real-time priority here: {priority} (0: refused, see the README)"
    );
    if chosen.contains(&"enforce") || chosen.contains(&"footprint") {
        let pods = enforce_and_footprint(&mut node, pid, &chosen);
        for pod in &pods {
            node.remove_pod(pod);
        }
    }
    if chosen.contains(&"two_pods") {
        two_pods(&mut node, pid);
    }
}

/// Makes a bridge named `docker0` in the namespace at `netns` (a fresh
/// pod's) and waits until it reads `want` or less. Returns (made, lowered)
/// instants; `None` for lowered after `within`.
fn bridge_lowered(netns: &Path, want: u32, within: Duration) -> (Instant, Option<Instant>) {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // Made here (a child inherits this thread's namespace), up, as
        // dockerd makes docker0.
        let made = Instant::now();
        common::sh(&["ip", "link", "add", "docker0", "type", "bridge"]);
        common::sh(&["ip", "link", "set", "docker0", "up"]);
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let deadline = made + within;
        while Instant::now() < deadline {
            if link_mtu(&socket, "docker0").is_some_and(|m| m <= want) {
                return (made, Some(Instant::now()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (made, None)
    })
    .join()
    .unwrap()
}

/// SIOCGIFMTU on `name` in the socket's namespace.
fn link_mtu(socket: &std::net::UdpSocket, name: &str) -> Option<u32> {
    use nix::libc;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a valid socket and a valid, initialised ifreq it may write.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    // SAFETY: the union is zeroed or, after SIOCGIFMTU, holds the mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    (rc == 0).then_some(mtu)
}

/// User plus system CPU time of `pid` so far.
fn cpu(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15, 11 and 12 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn footprint_line(pid: i32, pods: usize) {
    println!(
        "  footprint at {pods} pods: {} (target < 30 MB RSS at 110)",
        common::footprint(pid)
    );
}

/// Pods made one after another, each with a Docker bridge at once: the
/// first [`TIMED`] timed, footprints at 1, 10, 50 and 110. Returns them.
fn enforce_and_footprint(node: &mut RealNode, pid: i32, chosen: &[&str]) -> Vec<Pod> {
    let full = if chosen.contains(&"footprint") {
        FULL
    } else {
        TIMED
    };
    let (mut from_sandbox, mut from_bridge, mut missed) = (Vec::new(), Vec::new(), 0);
    let mut pods = Vec::new();
    let cpu_before = cpu(pid);
    let began = Instant::now();
    for i in 0..full {
        let pod = node.run_pod(Pod {
            name: format!("pod-{i}"),
            ..Pod::default()
        });
        let returned = Instant::now();
        let netns: PathBuf = node.netns_of(&pod);
        let (made, lowered) = bridge_lowered(&netns, POD_MTU, Duration::from_secs(10));
        match lowered {
            Some(at) if i < TIMED => {
                from_sandbox.push(at - returned);
                from_bridge.push(at - made);
            }
            Some(_) => {}
            None => missed += 1,
        }
        pods.push(pod);
        if chosen.contains(&"footprint") && [1, 10, 50, FULL].contains(&(i + 1)) {
            // Settled: MSS rules ensured, buffers at their size.
            std::thread::sleep(Duration::from_secs(3));
            footprint_line(pid, i + 1);
        }
    }
    let ramp = began.elapsed();
    let ramp_cpu = cpu(pid).saturating_sub(cpu_before);
    if chosen.contains(&"enforce") {
        from_sandbox.sort();
        from_bridge.sort();
        let line = |what: &str, v: &[Duration]| {
            println!(
                "  {what}: n={} p50 {}  p99 {}  max {}",
                v.len(),
                ms(percentile(v, 50.0)),
                ms(percentile(v, 99.0)),
                ms(*v.last().unwrap())
            );
        };
        println!("RunPodSandbox returned -> the agent enforcing in the new pod ({TIMED} pods):");
        line(
            "RunPodSandbox returned -> docker0 at the pod's MTU",
            &from_sandbox,
        );
        line("docker0 made -> docker0 at the pod's MTU", &from_bridge);
        println!("  bridges not lowered within 10 s: {missed}");
    }
    if chosen.contains(&"footprint") {
        println!(
            "  CPU while {full} pods were made ({:.1} s): {} ms ({:.1} % of one core)",
            ramp.as_secs_f64(),
            ramp_cpu.as_millis(),
            100.0 * ramp_cpu.as_secs_f64() / ramp.as_secs_f64()
        );
        let idle = Duration::from_secs(20);
        let before = cpu(pid);
        std::thread::sleep(idle);
        let used = cpu(pid).saturating_sub(before);
        println!(
            "  CPU idle at {full} pods over {} s (reconciles only): {} ms ({:.2} % of one core)",
            idle.as_secs(),
            used.as_millis(),
            100.0 * used.as_secs_f64() / idle.as_secs_f64()
        );
    }
    pods
}

fn two_pods(node: &mut RealNode, pid: i32) {
    let a = node.run_pod(dind_pod(node, "bench-a"));
    let b = node.run_pod(dind_pod(node, "bench-b"));
    let names: Vec<String> = [&a, &b]
        .iter()
        .map(|p| {
            node.netns_of(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    ip(&names[1], &["link", "set", "eth0", "mtu", "1400"]);
    let wants = [POD_MTU, 1400];
    let mut bridges = Vec::new();
    for (pod, netns) in [(&a, &names[0]), (&b, &names[1])] {
        docker_ready(node, pod);
        let (code, id, err) = node.exec(
            pod,
            "dind",
            &["docker", "network", "create", "bench"],
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "docker network create: {err}");
        bridges.push(common::ifindex(netns, &format!("br-{}", &id[..12])));
    }
    let pods = [&a, &b];
    let node = &*node;
    let metrics = || common::http_get(&node.netns, METRICS, "/metrics").1;
    let burst = |label: String| {
        let cpu_before = cpu(pid);
        let began = Instant::now();
        let run = common::series::race_at_once(
            &label,
            &names,
            &bridges,
            &wants,
            AT_ONCE,
            |i| {
                node.exec(
                    pods[i],
                    "dind",
                    &[
                        "docker",
                        "run",
                        "--rm",
                        "--network",
                        "bench",
                        dind::INNER,
                        "cat",
                        "/sys/class/net/eth0/mtu",
                    ],
                    Duration::from_secs(120),
                )
                .1
            },
            Some(&metrics),
        );
        let (used, over) = (cpu(pid).saturating_sub(cpu_before), began.elapsed());
        println!(
            "  the agent's CPU over the burst: {} ms in {:.1} s ({:.2} % of one core; {:.2} ms per container)",
            used.as_millis(),
            over.as_secs_f64(),
            100.0 * used.as_secs_f64() / over.as_secs_f64(),
            used.as_secs_f64() * 1000.0 / run.started.max(1) as f64
        );
        run
    };
    let idle = Duration::from_secs(10);
    let before = cpu(pid);
    std::thread::sleep(idle);
    println!(
        "  the agent's CPU idle with these 2 pods over {} s: {} ms",
        idle.as_secs(),
        cpu(pid).saturating_sub(before).as_millis()
    );
    let runs: Vec<_> = (1..=RUNS)
        .map(|run| burst(format!("the DaemonSet on a real node, run {run}/{RUNS}")))
        .collect();
    common::series::RaceRun::print_all("the DaemonSet on a real node", &runs);

    // The same with the agent's CPU cgroup weighted 10x (cgroup v1
    // cpu.shares): whether the time above is the agent waiting for a CPU.
    let shares = cpu_shares_file(pid);
    let was = std::fs::read_to_string(&shares).unwrap();
    let weighted = was.trim().parse::<u64>().unwrap() * 10;
    std::fs::write(&shares, weighted.to_string()).unwrap();
    let heavier: Vec<_> = (1..=WEIGHTED_RUNS)
        .map(|run| {
            burst(format!(
                "the same, the agent's cgroup at cpu.shares {weighted} (was {}), run {run}/{WEIGHTED_RUNS}",
                was.trim()
            ))
        })
        .collect();
    std::fs::write(&shares, was.trim()).unwrap();
    common::series::RaceRun::print_all(
        &format!("the agent's cgroup at cpu.shares {weighted}"),
        &heavier,
    );
}

/// The cgroup v1 `cpu.shares` file of `pid`'s CPU cgroup.
fn cpu_shares_file(pid: i32) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == "cpu").then_some(path)
        })
        .expect("a cgroup v1 cpu controller");
    let mount = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
        .into_iter()
        .find(|m| Path::new(m).join("cpu.shares").exists())
        .expect("the cpu controller mounted");
    Path::new(mount)
        .join(path.trim_start_matches('/'))
        .join("cpu.shares")
}
