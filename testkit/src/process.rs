//! The binary under test and how tests run it: privileges, the binary's
//! path, starting it in a namespace, checking a refusal.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `mtuvisor` binary cargo built for these tests, benches and the demo
/// (in the same profile's directory); `MTUVISOR_BIN` names another build
/// (to run a test against an earlier commit's binary).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(other) = std::env::var_os("MTUVISOR_BIN").filter(|b| !b.is_empty()) {
            return other.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test's own path");
        // A test or bench lives in target/<profile>/deps, the demo in
        // target/<profile> itself.
        let beside = exe.parent().expect("a binary lives in a directory");
        let bin = [beside, beside.parent().unwrap_or(beside)]
            .iter()
            .map(|dir| dir.join("mtuvisor"))
            .find(|bin| bin.is_file())
            .unwrap_or_else(|| beside.join("mtuvisor"));
        assert!(
            bin.exists(),
            "{} does not exist: run the tests with cargo, which builds it first",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

/// Returns false (and says so) when the test must be skipped; panics with
/// a clear message when root is missing and skipping was not asked for.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && on_path("ip") {
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

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

/// `nsenter --net=/run/netns/NS mtuvisor` (not `ip netns exec`, which
/// remounts /sys).
pub fn mtuvisor_in(netns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).arg(bin());
    cmd.env_remove("MTUVISOR_MTU")
        .env_remove("MTUVISOR_LOG_FORMAT");
    cmd
}

/// [`mtuvisor_in`] without CAP_SYS_NICE.
pub fn mtuvisor_in_without_sys_nice(netns: &str) -> Command {
    mtuvisor_in_without(netns, &["sys_nice"])
}

/// [`mtuvisor_in`] without the capabilities `caps` (`setpriv`'s names:
/// `sys_admin`): root keeps only those of its bounding set across exec,
/// and `setpriv` drops them after `nsenter` has used its own.
pub fn mtuvisor_in_without(netns: &str, caps: &[&str]) -> Command {
    let drop: Vec<String> = caps.iter().map(|c| format!("-{c}")).collect();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .arg("setpriv")
        .arg(format!("--bounding-set={}", drop.join(",")))
        .arg(bin());
    cmd.env_remove("MTUVISOR_MTU")
        .env_remove("MTUVISOR_LOG_FORMAT");
    cmd
}

/// A cpu cgroup (v1) with no real-time budget (`cpu.rt_runtime_us` 0), as
/// containerd and kubelet make one for every container on a kernel with
/// real-time group scheduling. Removed on drop (after the processes in it,
/// which the test stops first).
pub struct NoRtBudget {
    dir: std::path::PathBuf,
}

impl NoRtBudget {
    /// Panics, saying why, on a kernel without real-time group scheduling
    /// (no `cpu.rt_runtime_us`) or without the cgroup v1 cpu hierarchy.
    pub fn new(tag: &str) -> NoRtBudget {
        let root = std::path::Path::new("/sys/fs/cgroup/cpu");
        assert!(
            root.join("cpu.rt_runtime_us").exists(),
            "{tag}: this test needs the cgroup v1 cpu hierarchy at {} with real-time group \
             scheduling (CONFIG_RT_GROUP_SCHED: cpu.rt_runtime_us)",
            root.display()
        );
        let dir = root.join(format!("mtuvisor-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot make the cgroup {}: {e}", dir.display()));
        let budget = std::fs::read_to_string(dir.join("cpu.rt_runtime_us")).unwrap_or_default();
        assert_eq!(budget.trim(), "0", "a new cgroup has no real-time budget");
        NoRtBudget { dir }
    }

    /// [`mtuvisor_in`], its process placed in this cgroup before it starts.
    pub fn mtuvisor_in(&self, netns: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.dir.join("cgroup.procs"))
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(bin());
        cmd.env_remove("MTUVISOR_MTU")
            .env_remove("MTUVISOR_LOG_FORMAT");
        cmd
    }
}

impl Drop for NoRtBudget {
    fn drop(&mut self) {
        // A process just killed may take a moment to leave its cgroup.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

/// One way the kernel refuses real-time priority, as the tests run
/// mtuvisor into it, and what its log must then say.
pub struct Refusal<'a> {
    command: Box<dyn Fn(&str) -> Command + 'a>,
    /// Asserts on the log.
    pub said: fn(&str),
}

impl Refusal<'_> {
    /// [`mtuvisor_in`] under this refusal.
    pub fn mtuvisor_in(&self, netns: &str) -> Command {
        (self.command)(netns)
    }
}

/// Both refusals: without CAP_SYS_NICE (one warning: a grant fixes it),
/// and with it in `no_budget` (one info line: nobody can grant a budget).
pub fn realtime_refusals(no_budget: &NoRtBudget) -> [Refusal<'_>; 2] {
    [
        Refusal {
            command: Box::new(mtuvisor_in_without_sys_nice),
            said: assert_one_realtime_warning,
        },
        Refusal {
            command: Box::new(|netns| no_budget.mtuvisor_in(netns)),
            said: assert_one_realtime_info,
        },
    ]
}

/// A log of mtuvisor in a cgroup without a real-time budget has exactly
/// one line about real-time priority: an info line that says why, and no
/// warning (nobody can grant a budget through Kubernetes).
pub fn assert_one_realtime_info(log: &str) {
    let said: Vec<&str> = log.lines().filter(|l| l.contains("real-time")).collect();
    assert_eq!(said.len(), 1, "one line about it: {log}");
    assert!(
        said[0].contains("INFO") && said[0].contains("no real-time budget"),
        "an info line that says why: {}",
        said[0]
    );
}

/// A log of mtuvisor without CAP_SYS_NICE has exactly one line about
/// real-time priority: a warning that says what to grant.
pub fn assert_one_realtime_warning(log: &str) {
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("real-time priority"))
        .collect();
    assert_eq!(warned.len(), 1, "one line about it: {log}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("no CAP_SYS_NICE: grant it"),
        "a warning that says what to do: {}",
        warned[0]
    );
}

pub fn run_mtuvisor(netns: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    mtuvisor_in(netns)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mtuvisor")
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

/// A thread of a process as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSched {
    pub tid: i32,
    pub name: String,
    /// `SCHED_OTHER` 0, `SCHED_FIFO` 1, ...
    pub policy: u32,
    pub rt_priority: u32,
}

pub const SCHED_OTHER: u32 = 0;
pub const SCHED_FIFO: u32 = 1;

/// Every thread of `pid`, from `/proc/<pid>/task/*/stat`.
pub fn threads_of(pid: i32) -> Vec<ThreadSched> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // exited meanwhile
        };
        // After the name in parentheses, fields start at 3 (state); the
        // real-time priority is field 40 and the policy field 41.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok());
        if let (Some(rt_priority), Some(policy)) = (field(40), field(41)) {
            out.push(ThreadSched {
                tid: task.file_name().to_string_lossy().parse().unwrap_or(0),
                name: stat[open + 1..close].to_string(),
                policy,
                rt_priority,
            });
        }
    }
    out
}

/// mtuvisor's clamping threads (its main thread, which runs enforcement,
/// and the `mtu-set-*` workers, at least one of which must exist by now)
/// run under `SCHED_FIFO` at `priority`, and every other thread is
/// ordinary; `None`: every thread is ordinary.
pub fn assert_clamping_threads(pid: i32, priority: Option<u32>) {
    let threads = threads_of(pid);
    let clamping = |t: &ThreadSched| t.tid == pid || t.name.starts_with("mtu-set-");
    assert!(
        threads.iter().any(|t| t.name.starts_with("mtu-set-")),
        "mtuvisor {pid} has MTU workers by now: {threads:?}"
    );
    for t in &threads {
        let want = match priority {
            Some(p) if clamping(t) => (SCHED_FIFO, p),
            _ => (SCHED_OTHER, 0),
        };
        assert_eq!(
            (t.policy, t.rt_priority),
            want,
            "thread {} ({}) of mtuvisor {pid}: {threads:?}",
            t.tid,
            t.name
        );
    }
}

/// Every thread of `pid` and of its descendants is ordinary: nothing
/// mtuvisor starts inherits its real-time priority.
pub fn assert_ordinary_tree(pid: i32) {
    let mut pending = vec![pid];
    let mut seen = 0;
    while let Some(p) = pending.pop() {
        seen += 1;
        for t in threads_of(p) {
            assert_eq!(
                (t.policy, t.rt_priority),
                (SCHED_OTHER, 0),
                "thread {} ({}) of process {p}, below {pid}, is ordinary",
                t.tid,
                t.name
            );
            if let Ok(children) =
                std::fs::read_to_string(format!("/proc/{p}/task/{}/children", t.tid))
            {
                pending.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
    }
    assert!(seen >= 1);
}

/// Where each thread of `pid` is in the kernel (its wait channel and
/// kernel stack), for a failure message about a process that stopped
/// making progress.
pub fn kernel_stacks(pid: i32) -> String {
    let mut out = String::new();
    for t in threads_of(pid) {
        let task = format!("/proc/{pid}/task/{}", t.tid);
        let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
        let stack = std::fs::read_to_string(format!("{task}/stack")).unwrap_or_default();
        out.push_str(&format!(
            "thread {} ({}, policy {} priority {}): wchan {wchan}\n{stack}",
            t.tid, t.name, t.policy, t.rt_priority
        ));
    }
    out
}

/// A field of /proc/<pid>/status (kB, or a count).
pub fn proc_status(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} of process {pid}"))
}

/// What a process holds, for a benchmark's line: resident set (and its
/// anonymous part), threads, open fds.
pub fn footprint(pid: i32) -> String {
    format!(
        "{} kB RSS ({} kB anonymous), {} threads, {} fds",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "RssAnon:"),
        proc_status(pid, "Threads:"),
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    )
}
