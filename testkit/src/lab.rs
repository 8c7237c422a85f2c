//! The namespace lab: network namespaces, bridges and veths of a test's
//! own, named so that tests run in parallel, torn down on drop (also when
//! a test fails).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use crate::process::mtuvisor_in;

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

    /// Deletes one of this lab's namespaces now (a pod going away).
    pub fn delete_netns(&mut self, full: &str) {
        sh(&["ip", "netns", "del", full]);
        self.namespaces.retain(|n| n != full);
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

/// Two containers joining `bridge` in `pod` a moment apart, each eth0 made
/// in its own namespace (reachable only through its nsid), the second
/// within a second of the namespace search that found the first (a search
/// runs at most once a second, whatever asks). Both pairs reach `target`,
/// the second within 3 s: the search runs again after its second, not
/// after a remembered miss (10 s) and the next reconcile (30 s by
/// default). Returns how long the second pair took.
pub fn far_ends_a_moment_apart(lab: &mut Lab, pod: &str, bridge: &str, target: u32) -> Duration {
    let join = |lab: &mut Lab, host: &str| {
        let c = lab.netns(host);
        ip(
            pod,
            &[
                "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &c,
            ],
        );
        ip(pod, &["link", "set", host, "master", bridge, "up"]);
        (c, Instant::now())
    };
    let at = |c: &str, host: &str| mtu(pod, host) == target && mtu(c, "eth0") == target;
    let (c1, _) = join(lab, "vethsrch1");
    assert!(
        eventually(Duration::from_secs(3), || at(&c1, "vethsrch1")),
        "the first container's pair at {target}"
    );
    let (c2, joined) = join(lab, "vethsrch2");
    assert!(
        eventually(Duration::from_secs(3), || at(&c2, "vethsrch2")),
        "the second container's pair at {target} within 3 s, though it joined within a \
         second of the search that found the first"
    );
    joined.elapsed()
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

pub fn path_exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// Makes `router` a PMTU black hole: it drops the ICMP "fragmentation
/// needed" it would send for packets too big for its next link.
pub fn drop_frag_needed(router: &str) {
    sh(&[
        "nsenter",
        &format!("--net=/run/netns/{router}"),
        "iptables",
        "-A",
        "OUTPUT",
        "-p",
        "icmp",
        "--icmp-type",
        "fragmentation-needed",
        "-j",
        "DROP",
    ]);
}

/// The ifindex of `link` in the namespace named `netns` (in /run/netns).
pub fn ifindex(netns: &str, link: &str) -> u32 {
    ip(netns, &["-j", "link", "show", "dev", link])
        .split("\"ifindex\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("the ifindex of {link} in {netns}"))
}
