//! TCP MSS clamping, the safety net for traffic that MTU clamping cannot
//! reach. A narrow backend trait, chosen at start (and, with `auto`, again
//! whenever dockerd (re)starts: under `supervise` the first choice is made
//! before dockerd has written any rule); one file per backend, each knowing
//! nothing of the others.

mod iptables;
mod nftables;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::netlink::NsFile;

pub use iptables::Iptables;
pub use nftables::Nftables;

/// How long one ensure (or removal) may take in all, every tool it runs
/// included: a pod whose tables make each listing slow cannot hold one of
/// the runtime's blocking threads for longer than this.
const ENSURE_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);
/// After an ensure that took long, a pod's next one waits this many times
/// as long: a pod whose tables cost seconds per ensure gets a bounded
/// share of the blocking threads every pod's ensures share.
const ENSURE_SPACING: u32 = 20;
/// Ensures quicker than this are never spaced.
const ENSURE_SLOW: std::time::Duration = std::time::Duration::from_millis(200);

thread_local! {
    /// When the ensure running on this thread must be done by.
    static BUDGET: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (one ensure or removal, on this thread) within
/// [`ENSURE_BUDGET`]: each tool it runs gets what is left at most, and none
/// starts once it is spent.
fn within_budget<T>(f: impl FnOnce() -> T) -> T {
    BUDGET.set(Some(std::time::Instant::now() + ENSURE_BUDGET));
    let result = f();
    BUDGET.set(None);
    result
}

/// On a clean stop, how long an `ensure` under way gets to finish (so it
/// cannot put rules back after they were removed), looked at this often.
const ENSURE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
const ENSURE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The chain (iptables) and table (nft) that belong to mtuvisor.
pub const CHAIN: &str = "MTUVISOR-MSS";
pub const NFT_TABLE: &str = "mtuvisor";

/// What SYN packets forwarded through the pod get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MssMode {
    /// Clamp to the route MTU (`--clamp-mss-to-pmtu`, `rt mtu`).
    Pmtu,
    /// A fixed MSS, for a bottleneck beyond the pod's eth0.
    Fixed(u16),
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    IptablesNft,
    IptablesLegacy,
    Nftables,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FirewallError {
    #[error("{tool} is not installed (needed by the {backend} MSS backend): install it, or set mss.backend to auto (the family dockerd uses) or another backend; mtuvisor's image, like docker:dind, has iptables and iptables-legacy but no nft")]
    Missing { tool: String, backend: &'static str },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("`{command}` printed more than {max} bytes; its output was not read")]
    TooLarge { command: String, max: usize },
    #[error(
        "`{command}` was not run: this ensure already took {}s, its bound \
         (the namespace's tables make each tool slow)",
        ENSURE_BUDGET.as_secs()
    )]
    OverBudget { command: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: Arc<std::io::Error>,
    },
}

/// Whether `ensure` had to change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Unchanged,
    Installed,
}

/// An address family the rules cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// What one `ensure` did, family by family: one family can be complete
/// while the other failed.
#[derive(Debug)]
pub struct EnsureReport {
    pub families: Vec<(Family, Result<Ensured, FirewallError>)>,
    /// With `auto`: the backend was changed to follow dockerd's (from, to),
    /// and the old one's rules removed.
    pub switched: Option<(String, String)>,
}

/// One way of installing the MSS rules.
pub trait MssBackend: Send + Sync {
    /// Brings the rules for `mode` to exactly one complete copy, from
    /// whatever is there (nothing, a chain without its jump, one family
    /// done, an older version's rules): reads the state, then adds only
    /// what is missing and removes only what is extra.
    fn ensure(&self, mode: MssMode) -> EnsureReport;
    /// Whether exactly one complete copy for `mode` is in place; reads
    /// only.
    fn complete(&self, mode: MssMode) -> Result<bool, FirewallError>;
    /// Removes every trace of mtuvisor's rules.
    fn remove(&self) -> Result<(), FirewallError>;
    /// The families the rules cover.
    fn families(&self) -> Vec<Family>;
    /// For logs: the backend and the families it covers.
    fn describe(&self) -> String;
    /// Which backend this is.
    fn kind(&self) -> BackendChoice;
}

/// Picks the backend once: the configured one, or with `Auto` the family
/// dockerd itself uses in this namespace, so that rules never end up split
/// across two: legacy when the legacy tables hold rules or the legacy
/// module has tables here (as the docker:dind entrypoint decides), else the
/// nf_tables flavour of iptables, else nft.
pub fn select_backend(choice: BackendChoice) -> Result<Box<dyn MssBackend>, FirewallError> {
    match choice {
        BackendChoice::IptablesNft => Ok(Box::new(Iptables::nft()?)),
        BackendChoice::IptablesLegacy => Ok(Box::new(Iptables::legacy()?)),
        BackendChoice::Nftables => Ok(Box::new(Nftables::new()?)),
        BackendChoice::Auto => {
            if legacy_in_use() {
                if let Ok(b) = Iptables::legacy() {
                    return Ok(Box::new(b));
                }
            }
            if let Ok(b) = Iptables::nft() {
                return Ok(Box::new(b));
            }
            Ok(Box::new(Nftables::new()?))
        }
    }
}

/// Whether dockerd (or anything) uses the legacy iptables in this namespace:
/// legacy rules exist. Without legacy tables here (the kernel lists none),
/// nothing uses it and no tool is run: listing legacy rules creates the
/// tables, and a check that looked only at the tables would then answer
/// "legacy" to the next asker (another mtuvisor in the same pod, or this
/// one after a dockerd restart) although no rule is there.
pub fn legacy_in_use() -> bool {
    // thread-self: the namespace of the thread asking (a node agent's
    // helper thread inside a pod), not the process's.
    let has_tables = ["ip_tables_names", "ip6_tables_names"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
            .is_ok_and(|t| !t.trim().is_empty())
    });
    has_tables
        && ["iptables-legacy-save", "ip6tables-legacy-save"]
            .iter()
            .any(|tool| {
                run(tool, &[])
                    .map(|out| out.lines().any(|l| l.starts_with("-A ")))
                    .unwrap_or(false)
            })
}

/// Runs a tool; its stdout on success, its stderr in the error otherwise.
pub(crate) fn run(tool: &str, args: &[&str]) -> Result<String, FirewallError> {
    run_with_input(tool, args, "")
}

/// Runs a tool with `input` on stdin, through the process module (which
/// owns every child's exit status; see `process.rs`).
pub(crate) fn run_with_input(
    tool: &str,
    args: &[&str],
    input: &str,
) -> Result<String, FirewallError> {
    run_bounded(tool, args, input, crate::process::Limits::TOOL)
}

/// Runs a tool whose output is read only up to `max` bytes (a listing of
/// what should be small): more is [`FirewallError::TooLarge`].
pub(crate) fn run_within(tool: &str, args: &[&str], max: usize) -> Result<String, FirewallError> {
    let limits = crate::process::Limits {
        max_output: max,
        ..crate::process::Limits::TOOL
    };
    run_bounded(tool, args, "", limits)
}

/// How much of a tool's error output reaches an error message (and so a
/// log line): enough for its message, not a pod's ruleset.
const STDERR_SHOWN: usize = 512;

/// Every tool runs here: with only the capabilities its job needs
/// (`caps::TOOL_CAPS`, no_new_privs), within `limits`, its input our own
/// fixed text; what it printed reaches an error bounded and with every
/// control character and byte outside ASCII escaped.
fn run_bounded(
    tool: &str,
    args: &[&str],
    input: &str,
    limits: crate::process::Limits,
) -> Result<String, FirewallError> {
    let command = || format!("{tool} {}", args.join(" "));
    let limits = match BUDGET.get() {
        None => limits,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(FirewallError::OverBudget { command: command() });
            }
            crate::process::Limits {
                timeout: limits.timeout.min(left),
                ..limits
            }
        }
    };
    let mut cmd = Command::new(tool);
    cmd.args(args);
    crate::caps::restrict_child(&mut cmd, &crate::caps::TOOL_CAPS);
    let out = match crate::process::output_within(&mut cmd, input.as_bytes(), limits) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(FirewallError::TooLarge {
                command: command(),
                max: limits.max_output,
            })
        }
        Err(source) => {
            return Err(FirewallError::Spawn {
                tool: tool.to_string(),
                source: Arc::new(source),
            })
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let shown = &out.stderr[..out.stderr.len().min(STDERR_SHOWN)];
        let mut stderr = crate::netlink::printable(shown.trim_ascii());
        if out.stderr.len() > STDERR_SHOWN {
            stderr.push_str(" …");
        }
        Err(FirewallError::Command {
            command: command(),
            stderr,
        })
    }
}

/// Whether this namespace has IPv6 at all.
pub(crate) fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/thread-self/net/if_inet6").exists()
}

/// The MSS rules as the enforcement loop drives them: `ensure` at start,
/// on every reconcile and after every dockerd (re)start; `finish` on a
/// clean stop. The tools fork and wait for tens of milliseconds, so they
/// run on a task of their own: link notifications keep being handled
/// meanwhile (a veth that waits is a veth dockerd may move unclamped).
/// Each outcome goes back to the loop as an [`EnsureReport`]: the loop
/// alone logs it and updates the metrics.
pub struct MssClamp {
    /// Replaced only by an `auto` re-selection, inside the ensure task;
    /// `None` until the first ensure selects one (`node`: a pod's backend
    /// is chosen once it has Docker, not when it is found).
    backend: Arc<std::sync::Mutex<Option<Arc<dyn MssBackend>>>>,
    choice: BackendChoice,
    mode: MssMode,
    keep_on_exit: bool,
    /// An `ensure` is under way; a second one is not started beside it.
    busy: Arc<AtomicBool>,
    /// No ensure starts before this (after a slow one: [`ENSURE_SPACING`]).
    not_before: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    reports: mpsc::UnboundedSender<EnsureReport>,
    /// The namespace the rules belong in, when it is not ours (`node`):
    /// every tool runs from a thread inside it.
    netns: Option<Arc<NsFile>>,
}

/// Runs `f` inside `netns` (on a short-lived thread there), or here. For
/// the blocking pool only.
fn within<T: Send>(
    netns: &Option<Arc<NsFile>>,
    f: impl FnOnce() -> Result<T, FirewallError> + Send,
) -> Result<T, FirewallError> {
    match netns {
        None => f(),
        Some(ns) => ns.run_blocking(f).map_err(|e| FirewallError::Spawn {
            tool: "a thread in the pod's network namespace".into(),
            source: Arc::new(std::io::Error::other(e.to_string())),
        })?,
    }
}

impl MssClamp {
    /// Chooses the backend in the calling thread's namespace; a missing
    /// tool is bad input, found before anything is touched. With `mode`
    /// off, a backend is still looked for (to remove what an earlier run
    /// left), but its absence is fine.
    pub fn prepare(
        mode: MssMode,
        choice: BackendChoice,
        keep_on_exit: bool,
        reports: mpsc::UnboundedSender<EnsureReport>,
    ) -> Result<Option<MssClamp>, FirewallError> {
        let backend = match select_backend(choice) {
            Ok(b) => b,
            Err(_) if mode == MssMode::Off => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(MssClamp::with(
            Some(Arc::from(backend)),
            mode,
            choice,
            keep_on_exit,
            reports,
            None,
        )))
    }

    /// For a pod's namespace (`node`): nothing is run until the first
    /// ensure, which chooses the backend there (the tools were checked
    /// once, in the node's namespace, at the agent's start). `None` with
    /// the mode off: a pod is never cleaned of rules it was not given.
    pub fn in_pod(
        mode: MssMode,
        choice: BackendChoice,
        keep_on_exit: bool,
        reports: mpsc::UnboundedSender<EnsureReport>,
        netns: Arc<NsFile>,
    ) -> Option<MssClamp> {
        (mode != MssMode::Off)
            .then(|| MssClamp::with(None, mode, choice, keep_on_exit, reports, Some(netns)))
    }

    fn with(
        backend: Option<Arc<dyn MssBackend>>,
        mode: MssMode,
        choice: BackendChoice,
        keep_on_exit: bool,
        reports: mpsc::UnboundedSender<EnsureReport>,
        netns: Option<Arc<NsFile>>,
    ) -> MssClamp {
        MssClamp {
            backend: Arc::new(std::sync::Mutex::new(backend)),
            choice,
            mode,
            keep_on_exit,
            busy: Arc::new(AtomicBool::new(false)),
            not_before: Arc::new(std::sync::Mutex::new(None)),
            reports,
            netns,
        }
    }

    fn current(&self) -> Option<Arc<dyn MssBackend>> {
        current(&self.backend)
    }

    pub fn describe(&self) -> String {
        self.current()
            .map_or_else(|| "not chosen yet".into(), |b| b.describe())
    }

    pub fn mode(&self) -> MssMode {
        self.mode
    }

    /// The families the rules cover (none with the mode off, or before a
    /// backend is chosen).
    pub fn families(&self) -> Vec<Family> {
        match self.current() {
            Some(b) if self.mode != MssMode::Off => b.families(),
            _ => Vec::new(),
        }
    }

    /// Starts an `ensure` in the background unless one is under way; its
    /// report follows on the channel.
    pub fn ensure(&self) {
        self.start_ensure(false);
    }

    /// After dockerd (re)started: with `auto`, looks again at which
    /// iptables family dockerd uses and moves the rules there, then
    /// ensures.
    pub fn ensure_after_dockerd_start(&self) {
        self.start_ensure(self.choice == BackendChoice::Auto);
    }

    fn start_ensure(&self, reselect: bool) {
        let spaced = lock_slot(&self.not_before).is_some_and(|t| std::time::Instant::now() < t);
        if spaced || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (slot, mode, busy) = (self.backend.clone(), self.mode, self.busy.clone());
        let not_before = self.not_before.clone();
        let (reports, netns, choice) = (self.reports.clone(), self.netns.clone(), self.choice);
        tokio::task::spawn_blocking(move || {
            let began = std::time::Instant::now();
            let ensure = || {
                let switched = match current(&slot) {
                    None => {
                        let chosen: Arc<dyn MssBackend> = Arc::from(select_backend(choice)?);
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(chosen);
                        None
                    }
                    Some(_) if reselect => follow_dockerd(&slot),
                    Some(_) => None,
                };
                let backend = current(&slot).expect("chosen above");
                let mut report = within_budget(|| backend.ensure(mode));
                report.switched = switched;
                Ok(report)
            };
            let report = within(&netns, ensure).unwrap_or_else(|e| {
                let families = current(&slot).map_or_else(|| vec![Family::Ipv4], |b| b.families());
                EnsureReport {
                    families: families.into_iter().map(|f| (f, Err(e.clone()))).collect(),
                    switched: None,
                }
            });
            *lock_slot(&not_before) = spaced_after(began.elapsed());
            busy.store(false, Ordering::Release);
            let _ = reports.send(report);
        });
    }

    /// On a clean stop: waits for an `ensure` under way (so that it cannot
    /// put rules back), then removes the rules unless told to keep them
    /// (`None`).
    pub async fn finish(&self) -> Option<Result<(), FirewallError>> {
        let deadline = tokio::time::Instant::now() + ENSURE_DRAIN;
        while self.busy.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ENSURE_POLL).await;
        }
        if self.keep_on_exit {
            return None;
        }
        // Never chosen: nothing was ever installed.
        let backend = self.current()?;
        let netns = self.netns.clone();
        Some(
            match tokio::task::spawn_blocking(move || {
                within(&netns, || within_budget(|| backend.remove()))
            })
            .await
            {
                Ok(r) => r,
                Err(e) => Err(FirewallError::Spawn {
                    tool: "the MSS clamping task".into(),
                    source: Arc::new(std::io::Error::other(e.to_string())),
                }),
            },
        )
    }
}

type Slot = std::sync::Mutex<Option<Arc<dyn MssBackend>>>;

/// When the next ensure may start after one that took `took`.
fn spaced_after(took: std::time::Duration) -> Option<std::time::Instant> {
    (took > ENSURE_SLOW).then(|| std::time::Instant::now() + took * ENSURE_SPACING)
}

fn lock_slot<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn current(slot: &Slot) -> Option<Arc<dyn MssBackend>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `auto` again: when dockerd now uses another family than the backend in
/// use, the rules move (the old ones removed) so they are never split
/// across two. Returns (from, to) when it moved.
fn follow_dockerd(slot: &Slot) -> Option<(String, String)> {
    let now = current(slot)?;
    let chosen = select_backend(BackendChoice::Auto).ok()?;
    if chosen.kind() == now.kind() {
        return None;
    }
    // Best effort: should the old copy not go, it clamps the same SYNs to
    // the same value beside the new one; the new backend is what counts.
    let _ = now.remove();
    let moved = (now.describe(), chosen.describe());
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(chosen));
    Some(moved)
}

impl EnsureReport {
    /// For the log: the first error, if any.
    pub fn error(&self) -> Option<&FirewallError> {
        self.families.iter().find_map(|(_, r)| r.as_ref().err())
    }

    pub fn changed(&self) -> bool {
        self.families
            .iter()
            .any(|(_, r)| matches!(r, Ok(Ensured::Installed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn an_ensure_past_its_budget_runs_no_more_tools_and_cuts_the_one_running() {
        BUDGET.set(Some(Instant::now() + Duration::from_millis(300)));
        let began = Instant::now();
        let slow = run_bounded("sh", &["-c", "sleep 5"], "", crate::process::Limits::TOOL);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert!(matches!(slow, Err(FirewallError::Spawn { .. })), "{slow:?}");
        let next = run_bounded("true", &[], "", crate::process::Limits::TOOL);
        assert!(
            matches!(next, Err(FirewallError::OverBudget { .. })),
            "{next:?}"
        );
        BUDGET.set(None);
        assert!(run_bounded("true", &[], "", crate::process::Limits::TOOL).is_ok());
    }

    #[test]
    fn a_slow_ensure_spaces_the_next_by_twenty_times_its_cost() {
        assert_eq!(spaced_after(Duration::from_millis(50)), None);
        let at = spaced_after(Duration::from_secs(3)).unwrap();
        let wait = at.saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }
}
