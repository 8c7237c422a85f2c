//! Hostile pods: what one CI job could do to an agent that enforces beside
//! it, each as an [`Attack`] that undoes itself on drop, and a canary pod
//! that keeps getting new veths on its Docker bridge, timed. Shared by
//! `tests/hostile.rs` (does the agent hold?) and `benches/node.rs` (how
//! much slower is the canary?).
//!
//! Under `node`, the agent runs as init of a PID namespace of its own (its
//! `/proc` scan sees only this lab's processes), in the simulated node's
//! network namespace; a pod found through `/proc` is a process started in
//! that PID namespace as a runtime starts a pause process: first process
//! of a PID namespace one level down, born in the pod's network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::{eventually, ip, sh};
use crate::node::{NodeLab, METRICS};
use crate::process::bin;
use crate::series::{timed_veth_series, Pace, Sample};

/// What a process holds, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub fds: usize,
    /// Anonymous memory (heap, stacks), kB: what a leak grows.
    pub anon_kb: u64,
    pub rss_kb: u64,
    pub threads: usize,
}

pub fn held(pid: i32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    Held {
        fds: count("fd"),
        anon_kb: kb("RssAnon:"),
        rss_kb: kb("VmRSS:"),
        threads: count("task"),
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fds, {} kB anonymous ({} kB RSS), {} threads",
            self.fds, self.anon_kb, self.rss_kb, self.threads
        )
    }
}

/// The network namespaces a process's threads are in.
pub fn namespaces_of_threads(pid: i32) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_link(t.path().join("ns/net")).ok())
        .map(|l| l.display().to_string())
        .collect()
}

/// The children of `pid` (its main thread's).
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// What a hostile pod is doing: its processes (killed on drop, with
/// their process groups) and whatever else it made (undone on drop).
#[derive(Default)]
pub struct Attack {
    children: Vec<Child>,
    undo: Vec<Box<dyn FnOnce()>>,
}

impl Attack {
    pub fn process(&mut self, mut cmd: Command) {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.children.push(child);
    }

    /// The pid of its first process.
    pub fn root_pid(&self) -> i32 {
        self.children[0].id() as i32
    }

    pub fn undo(&mut self, f: impl FnOnce() + 'static) {
        self.undo.push(Box::new(f));
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for child in &mut self.children {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        for f in self.undo.drain(..).rev() {
            f();
        }
    }
}

/// Where the attacks run: the PID namespace a pod's processes must be
/// started in to be seen (`node`'s own), if any.
pub trait Arena {
    /// A command that runs `script` (sh) as the first process of a new PID
    /// namespace, born inside network namespace `pod` (a pause process),
    /// with a private mount namespace when `mounts`.
    fn pause(&self, pod: &str, mounts: bool, script: &str) -> Command;
}

/// `nsenter --net=POD unshare --pid --fork --kill-child [--mount] sh -c S`,
/// inside the PID namespace of `host_pid` when given.
pub fn pause_command(host_pid: Option<i32>, pod: &str, mounts: bool, script: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    if let Some(pid) = host_pid {
        cmd.args(["--target", &pid.to_string(), "--pid", "--", "nsenter"]);
    }
    cmd.arg(format!("--net=/run/netns/{pod}"))
        .args(["unshare", "--pid", "--fork", "--kill-child"]);
    if mounts {
        cmd.args(["--mount", "--propagation", "private"]);
    }
    cmd.args(["sh", "-c", script]);
    cmd
}

/// A pod whose `/etc/hostname`, as its own processes see it, is a FIFO.
pub fn hostname_fifo(arena: &dyn Arena, pod: &str, scratch: &Path) -> Attack {
    hostname_is(arena, pod, scratch, "mkfifo \"$d/h\"")
}

/// ... a 4 GiB sparse file.
pub fn hostname_huge(arena: &dyn Arena, pod: &str, scratch: &Path) -> Attack {
    hostname_is(arena, pod, scratch, "truncate -s 4G \"$d/h\"")
}

/// ... a name with a newline and an exposition line after it.
pub fn hostname_newline(arena: &dyn Arena, pod: &str, scratch: &Path) -> Attack {
    hostname_is(
        arena,
        pod,
        scratch,
        "printf 'evil\\nmtuvisor_ready 1\\n' > \"$d/h\"",
    )
}

fn hostname_is(arena: &dyn Arena, pod: &str, scratch: &Path, make: &str) -> Attack {
    let dir = scratch.join(format!("host-{pod}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "d={d}; {make} && mount --bind \"$d/h\" /etc/hostname && exec sleep 600",
        d = dir.display()
    );
    let mut a = Attack::default();
    a.process(arena.pause(pod, true, &script));
    a.undo(move || {
        let _ = std::fs::remove_dir_all(&dir);
    });
    a
}

/// A pod whose root (a chroot) has `/etc/hostname` as an absolute symlink
/// to `secret`, a file that exists only outside it.
pub fn hostname_symlink_out(arena: &dyn Arena, pod: &str, scratch: &Path, secret: &Path) -> Attack {
    let root = scratch.join(format!("root-{pod}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // Once per pod (a second attack on it finds it there, running).
    if !root.join("bin/busybox").exists() {
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    }
    let _ = std::fs::remove_file(root.join("etc/hostname"));
    std::os::unix::fs::symlink(secret, root.join("etc/hostname")).unwrap();
    let script = format!("exec chroot {} /bin/busybox sleep 600", root.display());
    let mut a = Attack::default();
    a.process(arena.pause(pod, false, &script));
    a.undo(move || {
        let _ = std::fs::remove_dir_all(&root);
    });
    a
}

/// A pod (its pause process) that starts `count` processes, each in a
/// network namespace of its own: in PID namespaces of their own one level
/// further down when `nested` (a DinD pod's containers), else beside it.
pub fn namespaces(arena: &dyn Arena, pod: &str, count: usize, nested: bool) -> Attack {
    let each = if nested {
        "unshare --net --pid --fork --kill-child sleep 600"
    } else {
        "unshare --net sleep 600"
    };
    let script = format!("for i in $(seq {count}); do {each} & done; exec sleep 600");
    let mut a = Attack::default();
    a.process(arena.pause(pod, false, &script));
    a
}

/// How many network namespaces `root` and its descendants hold: to wait
/// for a namespace attack to be in place.
pub fn namespaces_held_below(root: i32) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![root];
    while let Some(p) = pending.pop() {
        if let Ok(l) = std::fs::read_link(format!("/proc/{p}/ns/net")) {
            seen.insert(l);
        }
        pending.extend(children_of(p));
    }
    seen.len()
}

/// `pairs` veth pairs in `pod`, their host ends on `bridges` (made if
/// missing) a thousand to each (a Linux bridge takes 1,024 ports at most),
/// through one `ip -batch`.
pub fn veth_flood(pod: &str, bridges: &[&str], pairs: usize, scratch: &Path) -> Attack {
    const PER_BRIDGE: usize = 1000;
    assert!(pairs <= bridges.len() * PER_BRIDGE, "enough bridges");
    let batch = scratch.join(format!("flood-{pod}"));
    let mut text = String::new();
    for i in 0..pairs {
        text.push_str(&format!(
            "link add fh{i} type veth peer name ff{i}\nlink set fh{i} master {}\n",
            bridges[i / PER_BRIDGE]
        ));
    }
    std::fs::write(&batch, text).unwrap();
    let existing = ip(pod, &["-j", "link", "show"]);
    for bridge in bridges {
        if !existing.contains(&format!("\"{bridge}\"")) {
            ip(pod, &["link", "add", bridge, "type", "bridge"]);
            ip(pod, &["link", "set", bridge, "up"]);
        }
    }
    ip(pod, &["-batch", batch.to_str().unwrap()]);
    let mut a = Attack::default();
    let pod = pod.to_string();
    a.undo(move || {
        let mut text = String::new();
        for i in 0..pairs {
            text.push_str(&format!("link del fh{i}\n"));
        }
        let _ = std::fs::write(&batch, text);
        let _ = Command::new("ip")
            .args(["-n", &pod, "-force", "-batch", batch.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_file(&batch);
    });
    a
}

/// A pod that creates `pairs` veth pairs on `bridge` and deletes them,
/// over and over, for as long as the attack lasts.
pub fn veth_churn(pod: &str, bridge: &str, pairs: usize, scratch: &Path) -> Attack {
    ip(pod, &["link", "add", bridge, "type", "bridge"]);
    ip(pod, &["link", "set", bridge, "up"]);
    let (add, del) = (
        scratch.join(format!("churn-add-{pod}")),
        scratch.join(format!("churn-del-{pod}")),
    );
    let (mut a_text, mut d_text) = (String::new(), String::new());
    for i in 0..pairs {
        a_text.push_str(&format!(
            "link add ch{i} type veth peer name cp{i}\nlink set ch{i} master {bridge}\n"
        ));
        d_text.push_str(&format!("link del ch{i}\n"));
    }
    std::fs::write(&add, a_text).unwrap();
    std::fs::write(&del, d_text).unwrap();
    let script = format!(
        "while true; do ip -n {pod} -force -batch {a}; ip -n {pod} -force -batch {d}; done",
        a = add.display(),
        d = del.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let mut attack = Attack::default();
    attack.process(cmd);
    attack.undo(move || {
        let _ = std::fs::remove_file(&add);
        let _ = std::fs::remove_file(&del);
    });
    attack
}

/// The xtables lock at `lock` held for as long as the attack lasts.
pub fn hold_lock(lock: &Path) -> Attack {
    let mut cmd = Command::new("flock");
    cmd.arg(lock).args(["sleep", "600"]);
    let mut a = Attack::default();
    a.process(cmd);
    let held = eventually(Duration::from_secs(5), || {
        // Taken: a second, non-waiting flock fails.
        !Command::new("flock")
            .args(["-n", lock.to_str().unwrap(), "true"])
            .status()
            .map(|s| s.success())
            .unwrap_or(true)
    });
    assert!(held, "{} is held", lock.display());
    a
}

/// A pod whose nftables ruleset has a table of `rules` rules of its own.
pub fn nft_flood(pod: &str, rules: usize, scratch: &Path) -> Attack {
    let file = scratch.join(format!("nft-{pod}"));
    let mut text = String::from("table inet junk {\n  chain c {\n");
    for i in 0..rules {
        text.push_str(&format!("    tcp dport {} counter accept\n", 1 + i % 65000));
    }
    text.push_str("  }\n}\n");
    std::fs::write(&file, text).unwrap();
    sh(&[
        "nsenter",
        &format!("--net=/run/netns/{pod}"),
        "nft",
        "-f",
        file.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&file);
    Attack::default()
}

/// A pod that keeps `count` connections open to `addr` (the agent's
/// metrics port, on the node's IP), sending nothing, reconnecting as fast
/// as the server closes them.
pub fn hold_connections(pod: &str, addr: &str, count: usize) -> Attack {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let (pod, addr) = (pod.to_string(), addr.to_string());
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        crate::lab::enter_netns(&pod);
        let mut open = std::collections::VecDeque::new();
        while !flag.load(Ordering::Relaxed) {
            if let Ok(s) = std::net::TcpStream::connect(&addr) {
                open.push_back(s);
            }
            if open.len() > count {
                open.pop_front();
            }
        }
    });
    let mut a = Attack::default();
    a.undo(move || {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    });
    a
}

/// A FIFO named `name` in `dir` (a `netns_dirs` entry).
pub fn fifo_in(dir: &Path, name: &str) -> Attack {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut a = Attack::default();
    a.undo(move || {
        let _ = std::fs::remove_file(&path);
    });
    a
}

/// A pod whose `eth0` is enslaved to a bridge it named `docker0`, with its
/// address and a default route of `mtu` moved there.
pub fn enslave_eth0(pod: &str, addr: &str, gateway: &str, mtu: u32) -> Attack {
    ip(pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(pod, &["link", "set", "docker0", "up"]);
    ip(pod, &["addr", "flush", "dev", "eth0"]);
    ip(pod, &["link", "set", "eth0", "master", "docker0"]);
    ip(pod, &["addr", "add", addr, "dev", "docker0"]);
    ip(
        pod,
        &[
            "route",
            "replace",
            "default",
            "via",
            gateway,
            "dev",
            "docker0",
            "mtu",
            &mtu.to_string(),
        ],
    );
    Attack::default()
}

/// A pod that keeps getting new veths on its Docker bridge, as dockerd
/// makes them (far ends moved into container namespaces): a series of
/// `count`, each timed from its host end joining the bridge to both ends
/// at `target`. `None` for a veth not clamped within 2 s.
pub struct Canary {
    pub pod: String,
    pub bridge: String,
    pub containers: Vec<String>,
    pub target: u32,
}

impl Canary {
    pub fn series(&self, count: usize) -> Vec<Option<Duration>> {
        timed_veth_series(
            &self.pod,
            &self.containers,
            &self.bridge,
            count,
            self.target,
            Pace::Dockerd,
        )
        .iter()
        .map(|s: &Sample| s.from_notification)
        .collect()
    }
}

/// `mtuvisor node` as init of a PID namespace of its own, in the
/// simulated node's network namespace.
pub struct Agent {
    /// The lab's index of the `unshare` that started it.
    pub outer: usize,
    /// The agent's pid, as this (the host's) PID namespace sees it.
    pub pid: i32,
}

/// Attacks in a pod that an enforcer in that same pod watches (`watch`,
/// `supervise`): no PID namespace to enter.
pub struct InPod;

impl Arena for InPod {
    fn pause(&self, pod: &str, mounts: bool, script: &str) -> Command {
        pause_command(None, pod, mounts, script)
    }
}

impl Arena for Agent {
    fn pause(&self, pod: &str, mounts: bool, script: &str) -> Command {
        pause_command(Some(self.pid), pod, mounts, script)
    }
}

/// Starts the agent for `n`'s pods: files in /run/netns and `extra_dirs`
/// matching `<prefix>-p*`, and pods found through `/proc` (every half
/// second, unless `args` say otherwise), with `env` added.
pub fn start_agent(
    n: &mut NodeLab,
    extra_dirs: &[&Path],
    env: &[(&str, &str)],
    args: &[&str],
) -> Agent {
    start_agent_wrapped(n, &[], extra_dirs, env, args)
}

/// [`start_agent`] with `wrap` (a command that execs the rest: `prlimit
/// --nofile=…`) run first, in the node's namespace.
pub fn start_agent_wrapped(
    n: &mut NodeLab,
    wrap: &[&str],
    extra_dirs: &[&Path],
    env: &[(&str, &str)],
    args: &[&str],
) -> Agent {
    let mut dirs = vec!["/run/netns".to_string()];
    dirs.extend(extra_dirs.iter().map(|d| d.display().to_string()));
    let mut cmd = Command::new("nsenter");
    // Born in the node's namespace; then a PID namespace whose /proc shows
    // only this lab's processes, and whose mounts follow the host's (pods
    // made later appear in /run/netns).
    cmd.arg(format!("--net=/run/netns/{}", n.node))
        .args(wrap)
        .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["--propagation", "slave"])
        .arg(bin())
        .arg("node")
        .args(if args.contains(&"--proc-scan") {
            &[][..]
        } else {
            &["--proc-scan", "500ms"][..]
        })
        .args(["--netns-include", &format!("{},netns-*", n.include())])
        // On every address of the node, as the DaemonSet serves it: the
        // pods reach it at their gateway.
        .args(["--metrics-addr", &format!("0.0.0.0:{}", metrics_port())])
        .args(args)
        .env("MTUVISOR_NETNS_DIRS", dirs.join(","))
        .env("MTUVISOR_LOG", "debug")
        .env_remove("MTUVISOR_MTU")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&n.log)
                .unwrap(),
        );
    let outer = n.lab.spawn(cmd);
    let unshare = n.lab.pid(outer);
    let mut pid = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            pid = children_of(unshare).first().copied();
            pid.is_some()
        }),
        "the agent runs"
    );
    let up = eventually(Duration::from_secs(10), || {
        crate::http::try_http_get(&n.node, METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(up, "the agent answers /healthz; log:\n{}", n.tail());
    Agent {
        outer,
        pid: pid.unwrap(),
    }
}

/// The port of [`METRICS`].
pub fn metrics_port() -> &'static str {
    METRICS.rsplit(':').next().unwrap()
}

/// Lines at WARN or ERROR in `log` after byte `from`.
pub fn warnings_since(log: &Path, from: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(String::from)
        .collect()
}

pub fn log_len(log: &Path) -> usize {
    std::fs::metadata(log)
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// A scratch directory of the lab's, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = PathBuf::from(format!("/run/{prefix}-scratch"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace a pod made: held by a process of the pod that is
/// not the first of its PID namespace (as a DinD pod's container is, seen
/// from the node). Returns the attack (its processes) and the holder's pid
/// as this PID namespace sees it.
pub fn own_namespace(arena: &dyn Arena, pod: &str, scratch: &Path) -> (Attack, i32) {
    let file = scratch.join(format!("holder-{pod}-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    // `read` is the shell's own: /proc/self/stat is the holder's, and
    // /proc is the host's, so its first field is the pid seen from here.
    let script = format!(
        "unshare --net sh -c 'read pid rest < /proc/self/stat; echo $pid > {f}; exec sleep 600' & \
         exec sleep 600",
        f = file.display()
    );
    let mut a = Attack::default();
    a.process(arena.pause(pod, false, &script));
    let mut holder = None;
    let found = eventually(Duration::from_secs(10), || {
        holder = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        holder.is_some()
    });
    assert!(found, "the pod's namespace is made");
    let _ = std::fs::remove_file(&file);
    (a, holder.unwrap())
}

/// `ip` with arguments that may be any bytes (names, aliases).
pub fn ip_bytes(args: &[&[u8]]) {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new("ip")
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {:?}: {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Veths in `pod` on `bridge` (made if missing) whose far ends are made
/// in the namespace `holder` holds, named `names` there; each far end's
/// alias set to `alias` when given. Host ends `hb0`, `hb1`, ….
pub fn far_ends_named(
    pod: &str,
    bridge: &str,
    holder: i32,
    names: &[Vec<u8>],
    alias: Option<&[u8]>,
) {
    let existing = ip(pod, &["-o", "link", "show"]);
    if !existing.contains(&format!(": {bridge}:")) {
        ip(pod, &["link", "add", bridge, "type", "bridge"]);
        ip(pod, &["link", "set", bridge, "up"]);
    }
    let target = format!("/proc/{holder}/ns/net");
    for (i, name) in names.iter().enumerate() {
        let host = format!("hb{i}");
        ip_bytes(&[
            b"-n",
            pod.as_bytes(),
            b"link",
            b"add",
            host.as_bytes(),
            b"type",
            b"veth",
            b"peer",
            b"name",
            name,
            b"netns",
            holder.to_string().as_bytes(),
        ]);
        if let Some(alias) = alias {
            use std::os::unix::ffi::OsStrExt;
            let net = format!("--net={target}");
            let out = Command::new("nsenter")
                .arg(&net)
                .args(["ip", "link", "set", "dev"])
                .arg(std::ffi::OsStr::from_bytes(name))
                .arg("alias")
                .arg(std::ffi::OsStr::from_bytes(alias))
                .output()
                .expect("nsenter ip");
            assert!(
                out.status.success(),
                "alias: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // All at once, as a burst of containers would: the agent looks for
    // every far end together.
    for i in 0..names.len() {
        ip(
            pod,
            &["link", "set", &format!("hb{i}"), "master", bridge, "up"],
        );
    }
}

/// The MTUs of the veths in the namespace `holder` holds (any names).
pub fn veth_mtus_of(holder: i32) -> Vec<u32> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{holder}/ns/net"))
        .args(["ip", "-o", "link", "show", "type", "veth"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(" mtu ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// A pod that keeps `count` idle connections open to `addr` (the agent's
/// metrics port), each reopened as soon as the server drops it: what it
/// takes to hold a connection slot for good.
pub fn occupy_connections(pod: &str, addr: &str, count: usize) -> Attack {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let (pod, addr) = (pod.to_string(), addr.to_string());
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        crate::lab::enter_netns(&pod);
        let mut open: Vec<Option<std::net::TcpStream>> = (0..count).map(|_| None).collect();
        while !flag.load(Ordering::Relaxed) {
            for slot in open.iter_mut() {
                let alive = match slot.as_mut() {
                    None => false,
                    Some(s) => {
                        let _ = s.set_nonblocking(true);
                        let mut b = [0u8; 1];
                        match s.read(&mut b) {
                            // Closed by the server.
                            Ok(0) => false,
                            Ok(_) => true,
                            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                        }
                    }
                };
                if !alive {
                    *slot = std::net::TcpStream::connect(&addr).ok();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut a = Attack::default();
    a.undo(move || {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    });
    a
}

/// What [`forge_link_notifications`] sends.
#[derive(Debug, Clone, Copy)]
pub enum Forgery {
    /// One link per message, each a new ifindex, its kind `kind_len`
    /// bytes of 0xff (what a decoder that keeps kinds would hold).
    BigKinds { kind_len: usize },
    /// Small link messages, many to a datagram (CPU).
    Flood,
    /// Messages the decoder cannot read (an MTU of 2 bytes), each about a
    /// new ifindex (one warning each, if a warning is per link).
    Undecodable,
}

/// From inside `pod`: `datagrams` netlink datagrams of `per_datagram`
/// forged RTM_NEWLINK messages each, sent to the link notification group,
/// `pace` apart. Any process with NET_ADMIN in its namespace can send
/// them; the kernel hands them to every subscriber there as if they were
/// its own. Returns how many datagrams went out.
pub fn forge_link_notifications(
    pod: &str,
    forgery: Forgery,
    datagrams: usize,
    per_datagram: usize,
    pace: Duration,
) -> usize {
    use nix::libc;
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }
    fn message(index: u32, name: &[u8], mtu_attr: &[u8], kind: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8, 0, 1, 0];
        body.extend_from_slice(&(index as i32).to_ne_bytes());
        body.extend_from_slice(&[0u8; 8]);
        let mut n = name.to_vec();
        n.push(0);
        body.extend(attr(3, &n));
        body.extend(attr(4, mtu_attr));
        body.extend(attr(18, &attr(1, kind)));
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        m.extend_from_slice(&[0u8; 10]);
        m.extend(body);
        m
    }
    let pod = pod.to_string();
    std::thread::spawn(move || {
        crate::lab::enter_netns(&pod);
        // SAFETY: a netlink socket; the fd is ours.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
        assert!(fd >= 0, "netlink socket");
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid fd and an int option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                4,
            );
        }
        // SAFETY: zeroed sockaddr_nl is a valid value to fill.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        to.nl_groups = 1; // RTMGRP_LINK
        let mut sent = 0;
        let mut index = 900_000u32;
        for _ in 0..datagrams {
            let mut d = Vec::new();
            for _ in 0..per_datagram {
                index += 1;
                let name = format!("fk{index}");
                d.extend(match forgery {
                    Forgery::BigKinds { kind_len } => message(
                        index,
                        name.as_bytes(),
                        &1500u32.to_ne_bytes(),
                        &vec![0xff; kind_len],
                    ),
                    Forgery::Flood => {
                        message(index, name.as_bytes(), &1500u32.to_ne_bytes(), b"dummy")
                    }
                    Forgery::Undecodable => message(index, name.as_bytes(), &[1, 2], b"veth"),
                });
            }
            // SAFETY: a valid fd, a buffer with its length, a sockaddr_nl.
            let n = unsafe {
                libc::sendto(
                    fd,
                    d.as_ptr().cast(),
                    d.len(),
                    0,
                    (&to as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n > 0 {
                sent += 1;
            }
            std::thread::sleep(pace);
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        sent
    })
    .join()
    .expect("the forger")
}
