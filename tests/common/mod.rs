//! The namespace lab shared by the integration tests and the benchmark.
//!
//! Every lab gets namespace names of its own (tag + pid + counter), so tests
//! run in parallel; everything is torn down on drop, also when a test fails.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mtuvisor::netlink::Link;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sched::{setns, CloneFlags};

pub mod blackhole;
pub mod dockerd;

pub const BIN: &str = env!("CARGO_BIN_EXE_mtuvisor");

/// Returns false (and says so) when the test must be skipped; panics with
/// a clear message when root is missing and skipping was not asked for.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && which("ip") {
        return true;
    }
    if std::env::var("MTUVISOR_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root and iproute2 (MTUVISOR_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2 to build network namespaces; \
         run the suite as root (scripts/test.sh), or set MTUVISOR_SKIP_PRIVILEGED=1 to skip it"
    );
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A set of network namespaces owned by one test.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    files: Vec<PathBuf>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab {
            prefix: format!("mv-{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Creates namespace `<prefix>-<name>` with `lo` up; returns its name.
    pub fn netns(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        sh(&["ip", "netns", "add", &full]);
        self.namespaces.push(full.clone());
        ip(&full, &["link", "set", "lo", "up"]);
        full
    }

    /// A pod namespace whose `eth0` (MTU `mtu`) leads to a router namespace
    /// and carries the IPv4 default route. Returns (pod, router).
    pub fn pod(&mut self, mtu: u32) -> (String, String) {
        let pod = self.netns("pod");
        let router = self.netns("rt");
        ip(
            &pod,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "down0", "netns", &router,
            ],
        );
        let mtu = mtu.to_string();
        ip(&pod, &["link", "set", "eth0", "mtu", &mtu, "up"]);
        ip(&router, &["link", "set", "down0", "mtu", &mtu, "up"]);
        ip(&pod, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        ip(&router, &["addr", "add", "192.0.2.1/24", "dev", "down0"]);
        ip(&pod, &["route", "add", "default", "via", "192.0.2.1"]);
        (pod, router)
    }

    /// Starts `mtuvisor watch` (plus `args`) inside `netns`.
    pub fn watch(&mut self, netns: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let mut cmd = mtuvisor_in(netns);
        cmd.arg("watch").args(args).env("MTUVISOR_LOG", "debug");
        cmd.envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.spawn(cmd)
    }

    /// Starts a process that the lab stops (SIGKILL) when dropped.
    pub fn spawn(&mut self, mut cmd: Command) -> usize {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn pid(&self, child: usize) -> i32 {
        self.children[child].id() as i32
    }

    /// Whether the child has exited (collecting it if so).
    pub fn exited(&mut self, child: usize) -> Option<std::process::ExitStatus> {
        self.children[child].try_wait().expect("try_wait")
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sends SIGTERM to a watcher and waits for it to exit.
    pub fn stop(&mut self, watcher: usize, within: Duration) -> std::process::ExitStatus {
        self.signal(watcher, nix::sys::signal::Signal::SIGTERM);
        self.wait(watcher, within)
    }

    pub fn signal(&mut self, watcher: usize, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.children[watcher].id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal watcher");
    }

    /// Waits for a watcher to exit; panics after `within`.
    pub fn wait(&mut self, watcher: usize, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.children[watcher];
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mtuvisor did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn temp_file(&mut self, name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("{}-{name}", self.prefix));
        File::create(&path)
            .unwrap()
            .write_all(contents.as_bytes())
            .unwrap();
        self.files.push(path.clone());
        path
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Moves the calling thread into network namespace `netns` for good: call
/// it on a thread of its own.
pub fn enter_netns(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("enter {path}: {e}"));
}

/// Runs `f` on a thread inside `netns` (sockets it opens and tools it forks
/// belong there) and returns what it returns.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        enter_netns(&netns);
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// `nsenter --net=/run/netns/NS mtuvisor` (not `ip netns exec`, which
/// remounts /sys).
pub fn mtuvisor_in(netns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).arg(BIN);
    cmd.env_remove("MTUVISOR_MTU")
        .env_remove("MTUVISOR_LOG_FORMAT");
    cmd
}

pub fn run_mtuvisor(netns: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    mtuvisor_in(netns)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mtuvisor")
}

pub fn ip(netns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "-n", netns];
    full.extend_from_slice(args);
    sh(&full)
}

/// Gives `dev` in `netns` the address `<prefix>::2/64` and an IPv6 default
/// route via `<prefix>::1` (no DAD wait: the route must exist at once).
pub fn ipv6_default_route(netns: &str, dev: &str, prefix: &str) {
    ip(
        netns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{prefix}::2/64"),
            "dev",
            dev,
            "nodad",
        ],
    );
    ip(
        netns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("{prefix}::1"),
            "dev",
            dev,
        ],
    );
}

/// The MTU of `link` in `netns`, read over netlink (`ip -j`), never /sys.
pub fn mtu(netns: &str, link: &str) -> u32 {
    let out = ip(netns, &["-j", "link", "show", "dev", link]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["mtu"].as_u64().expect("mtu field") as u32
}

/// Bad input: exit 2 and exactly one line on stderr, naming `mentions`.
pub fn assert_rejected(out: &Output, mentions: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit 2, got {:?}: {err}",
        out.status
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "exactly one line: {err:?}"
    );
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

/// Polls until `check` holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The clamp-latency set-up: a pod (eth0 1450) with `br-0123456789ab` up,
/// four container namespaces, and `mtuvisor watch` running with the bridge
/// already clamped. Returns the lab (keep it alive), the pod and the
/// containers.
pub fn latency_lab(tag: &str) -> (Lab, String, Vec<String>) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    let containers: Vec<String> = (0..4).map(|i| lab.netns(&format!("c{i}"))).collect();
    ip(&pod, &["link", "add", "br-0123456789ab", "type", "bridge"]);
    ip(&pod, &["link", "set", "br-0123456789ab", "up"]);
    lab.watch(&pod, &[], &[("MTUVISOR_LOG", "warn")]);
    assert!(eventually(Duration::from_secs(2), || mtu(
        &pod,
        "br-0123456789ab"
    ) == 1450));
    (lab, pod, containers)
}

/// Adds a veth `host` enslaved to `bridge` in `pod` with its peer moved into
/// `container` and renamed `eth0`, as dockerd does (with `ip`, for set-up
/// rather than timing).
pub fn docker_style_veth(pod: &str, bridge: &str, host: &str, container: &str) {
    let tmp = format!("{host}p");
    ip(
        pod,
        &["link", "add", host, "type", "veth", "peer", "name", &tmp],
    );
    ip(pod, &["link", "set", host, "master", bridge, "up"]);
    ip(pod, &["link", "set", &tmp, "netns", container]);
    ip(container, &["link", "set", &tmp, "name", "eth0", "up"]);
}

// --- Timed veth series: dockerd's sequence at netlink speed -------------

/// A link notification, stamped when the kernel handed it to our reader.
pub struct Seen {
    pub at: Instant,
    pub netns: usize,
    pub link: Link,
    /// IFF_UP.
    pub up: bool,
    /// The hardware address.
    pub address: Vec<u8>,
}

/// Blocking readers of RTNLGRP_LINK in several namespaces, one thread each,
/// so that every notification is stamped on arrival.
pub struct Notifications {
    pub rx: mpsc::Receiver<Seen>,
}

impl Notifications {
    pub fn listen(namespaces: &[String]) -> Notifications {
        let (tx, rx) = mpsc::channel();
        for (i, ns) in namespaces.iter().enumerate() {
            let tx = tx.clone();
            let (ready_tx, ready_rx) = mpsc::channel();
            let ns = ns.clone();
            std::thread::spawn(move || {
                enter_netns(&ns);
                let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
                socket.set_rx_buf_sz(8 << 20).ok();
                socket
                    .bind(&SocketAddr::new(0, 1 /* RTMGRP_LINK */))
                    .expect("bind");
                ready_tx.send(()).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let Ok(n) = socket.recv(&mut &mut buf[..], 0) else {
                        return;
                    };
                    let at = Instant::now();
                    let mut offset = 0;
                    while offset < n {
                        let Ok(msg) =
                            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                        else {
                            break;
                        };
                        let len = msg.header.length as usize;
                        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) =
                            msg.payload
                        {
                            if let Some(link) = Link::from_message(&m) {
                                let up = m.header.flags.contains(LinkFlags::Up);
                                let address = m
                                    .attributes
                                    .iter()
                                    .find_map(|a| match a {
                                        LinkAttribute::Address(a) => Some(a.clone()),
                                        _ => None,
                                    })
                                    .unwrap_or_default();
                                let seen = Seen {
                                    at,
                                    netns: i,
                                    link,
                                    up,
                                    address,
                                };
                                if tx.send(seen).is_err() {
                                    return;
                                }
                            }
                        }
                        if len == 0 {
                            break;
                        }
                        offset += (len + 3) & !3;
                    }
                }
            });
            ready_rx.recv().expect("reader ready");
        }
        Notifications { rx }
    }
}

/// How closely the series follows dockerd between attaching the host end
/// and moving the far end into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As libnetwork does: after `addToBridge` and bringing the host end up,
    /// and before Join moves the far end, it commits three bolt
    /// transactions to its local store (the bridge driver's endpoint, the
    /// endpoint, the network's endpoint count), each a page write plus two
    /// fdatasyncs (data, then meta page).
    Dockerd,
    /// No gap at all: the move follows the attach as fast as netlink
    /// answers. Harsher than any dockerd; the worst case.
    BackToBack,
}

/// One veth of a series.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From just before the create request to both ends seen at the target.
    pub from_creation: Option<Duration>,
    /// From the kernel's notification that the host end joined the bridge
    /// (what makes it a managed link) to both ends seen at the target.
    pub from_notification: Option<Duration>,
}

/// Creates `count` veths in `pod` the way dockerd does — create the pair,
/// enslave the host end to `bridge`, move the other end into one of
/// `containers` and rename it `eth0` — each at netlink speed, and times how
/// long until both ends are seen at or below `target`. Each veth is deleted
/// once measured.
pub fn timed_veth_series(
    pod: &str,
    containers: &[String],
    bridge: &str,
    count: usize,
    target: u32,
    pace: Pace,
) -> Vec<Sample> {
    let mut all = vec![pod.to_string()];
    all.extend(containers.iter().cloned());
    let notes = Notifications::listen(&all);
    let pod = pod.to_string();
    let containers = containers.to_vec();
    let bridge = bridge.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(drive_series(
            &pod,
            &containers,
            &bridge,
            count,
            target,
            pace,
            notes,
        ))
    })
    .join()
    .expect("series thread")
}

async fn drive_series(
    pod: &str,
    containers: &[String],
    bridge: &str,
    count: usize,
    target: u32,
    pace: Pace,
    notes: Notifications,
) -> Vec<Sample> {
    use futures::TryStreamExt;
    use rtnetlink::{LinkUnspec, LinkVeth};

    // One socket per namespace, each opened while this thread is inside it.
    let mut in_container = Vec::new();
    let mut container_fds = Vec::new();
    for c in containers {
        enter_netns(c);
        in_container.push(mtuvisor::netlink::Rtnl::connect().unwrap());
        container_fds.push(File::open(format!("/run/netns/{c}")).unwrap());
    }
    enter_netns(pod);
    let here = mtuvisor::netlink::Rtnl::connect().unwrap();
    let h = here.handle().clone();
    let by_name = |handle: rtnetlink::Handle, name: String| async move {
        handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .header
            .index
    };
    let bridge_index = by_name(h.clone(), bridge.to_string()).await;
    let store = std::env::temp_dir().join(format!("mtuvisor-endpoint-store-{pod}"));
    let mut store_file = File::create(&store).unwrap();

    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let c = i % containers.len();
        let host = format!("vtest{i}");
        let tmp = format!("vtmp{i}");
        while notes.rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        h.link()
            .add(LinkVeth::new(&host, &tmp).build())
            .execute()
            .await
            .unwrap();
        let host_index = by_name(h.clone(), host.clone()).await;
        let tmp_index = by_name(h.clone(), tmp.clone()).await;
        h.link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        // libnetwork brings the host end up only after attaching it.
        h.link()
            .set(LinkUnspec::new_with_index(host_index).up().build())
            .execute()
            .await
            .unwrap();
        if pace == Pace::Dockerd {
            for _transaction in 0..3 {
                for _page in 0..2 {
                    store_file.write_all(&[0u8; 4096]).unwrap();
                    store_file.sync_data().unwrap();
                }
            }
        }
        h.link()
            .set(
                LinkUnspec::new_with_index(tmp_index)
                    .setns_by_fd(container_fds[c].as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        let ch = in_container[c].handle().clone();
        let moved = by_name(ch.clone(), tmp.clone()).await;
        ch.link()
            .set(LinkUnspec::new_with_index(moved).name("eth0").up().build())
            .execute()
            .await
            .unwrap();

        let mut enslaved_at = None;
        let mut host_done = None;
        let mut peer_done = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while host_done.is_none() || peer_done.is_none() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Ok(seen) = notes.rx.recv_timeout(left) else {
                break;
            };
            let l = &seen.link;
            let is_host = seen.netns == 0 && l.index == host_index;
            let is_peer = (seen.netns == 0 && l.index == tmp_index)
                || (seen.netns == c + 1 && l.peer.is_some_and(|p| p.ifindex == host_index));
            if is_host && l.master == Some(bridge_index) && enslaved_at.is_none() {
                enslaved_at = Some(seen.at);
            }
            if is_host && l.mtu <= target && host_done.is_none() {
                host_done = Some(seen.at);
            }
            if is_peer && l.mtu <= target && peer_done.is_none() {
                peer_done = Some(seen.at);
            }
        }
        let done = host_done.zip(peer_done).map(|(a, b)| a.max(b));
        samples.push(Sample {
            from_creation: done.map(|d| d - t0),
            from_notification: done
                .zip(enslaved_at)
                .map(|(d, e)| d.saturating_duration_since(e)),
        });
        h.link().del(host_index).execute().await.unwrap();
    }
    drop(store_file);
    let _ = std::fs::remove_file(&store);
    samples
}

/// p-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

pub fn path_exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// How long any RTNL request from a namespace waits while something else
/// runs: a thread in `netns` sets the MTU of a veth pair of its own (on no
/// bridge, so nothing manages it) every `every`, and times each request
/// from send to acknowledgement. This is the floor for any netlink client
/// there, mtuvisor included.
pub struct RtnlProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(Instant, Duration)>>>,
}

impl RtnlProbe {
    pub fn start(netns: &str, name: &str, every: Duration) -> RtnlProbe {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let (a, b) = (format!("{name}a"), format!("{name}b"));
        ip(
            netns,
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let netns = netns.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                enter_netns(&netns);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let rtnl = mtuvisor::netlink::Rtnl::connect().unwrap();
                    let link = rtnl
                        .links()
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|l| l.name == a)
                        .expect("probe link");
                    let mut samples = Vec::new();
                    let mut tick = tokio::time::interval(every);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let mtu = 1400 + (samples.len() as u32 % 2);
                        let t = Instant::now();
                        rtnl.set_mtu(&link, mtu).await.expect("probe set MTU");
                        samples.push((t, t.elapsed()));
                    }
                    samples
                })
            }
        });
        RtnlProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the probe; every request as (sent at, round trip).
    pub fn finish(mut self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("probe thread")
    }
}

/// `GET path` from inside `netns` to `addr` (such as the loopback address
/// mtuvisor serves metrics on there); (status code, body).
pub fn http_get(netns: &str, addr: &str, path: &str) -> (u16, String) {
    try_http_get(netns, addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// `http_get` that reports a refused connection instead of panicking.
pub fn try_http_get(netns: &str, addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::Read;
    let (addr, path, shown) = (addr.to_string(), path.to_string(), netns.to_string());
    in_netns(netns, move || {
        let mut stream =
            std::net::TcpStream::connect(&addr).map_err(|e| format!("connect in {shown}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}

/// The value of an unlabelled sample in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}
