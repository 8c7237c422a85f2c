//! The binary under test and how tests run it: privileges, the binary's
//! path, starting it in a namespace, checking a refusal.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `mtuvisor` binary cargo built for these tests, benches and the demo
/// (in the same profile's directory).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
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
