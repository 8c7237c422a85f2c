//! Finding the pod network namespaces of a node, by the runtime's own
//! record, never by what a process inside a pod can arrange.
//!
//! - **Files** in `netns_dirs` (containerd and CRI-O bind-mount
//!   `cni-<uuid>` in `/run/netns` for each sandbox), followed with inotify
//!   so that a new pod is seen within milliseconds. Only the node's runtime
//!   (root on the node) writes there.
//! - **`/proc`** (`proc_scan`, off by default), for runtimes that make no
//!   file: a namespace counts only when a process holding it is the first
//!   process (pid 1) of a PID namespace one level below ours: a container's
//!   init or a sandbox's pause process, as the runtime starts them. The
//!   containers a pod's own dockerd starts are one level deeper, and a
//!   process inside a pod cannot make a PID namespace at our level: nested
//!   namespaces are never enforced in (their host ends are, by the
//!   enforcer of the pod that holds them).
//!
//! Namespaces are told apart by identity (device and inode of the nsfs
//! file), never by name; the node's own is left out unless asked for.
//! Nothing a pod wrote is read: a file is opened `O_PATH|O_NOFOLLOW` and
//! proved nsfs first (a FIFO, a device or a symlink in `netns_dirs` is
//! skipped, never opened), and a namespace found through `/proc` is named
//! `netns-<inode>`. `netns_include` applies to both names. This runs on a
//! thread of its own at ordinary priority, off the clamping path.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use super::tracker::{Change, Tracker};
use crate::config::glob_match;
use crate::netlink::{open_ns_file, open_proc_ns, unpinned, NsId};

/// What discovery tells the node loop.
#[derive(Debug)]
pub enum Found {
    /// A namespace to enforce in: open (through a file no mount holds),
    /// named, and when it was first seen.
    Appeared {
        id: NsId,
        file: File,
        name: String,
        seen: Instant,
    },
    /// Its file is gone and no process qualifies any more.
    Gone { id: NsId },
}

/// A file just created in a netns directory is bind-mounted a moment
/// later; until then it is an empty regular file. It is looked at again
/// this often, for this long.
const BIND_POLL: Duration = Duration::from_millis(2);
const BIND_WAIT: Duration = Duration::from_secs(2);
/// The directories are read again this often (missed events, a directory
/// created after start), whatever the `/proc` scan does.
const DIR_RESCAN: Duration = Duration::from_secs(5);
/// Files being waited for at once (created, not yet a namespace): each is
/// looked at every 2 ms, so a directory flooded with plain files costs a
/// bounded amount.
const MAX_PENDING: usize = 256;
/// How much of `/proc/<pid>/status` is read: NSpid comes early.
const STATUS_BYTES: usize = 4096;

pub struct Config {
    pub dirs: Vec<PathBuf>,
    pub include: Vec<String>,
    pub proc_scan: Option<Duration>,
    pub include_host: bool,
}

/// The node's own namespace (ours).
pub fn own_netns() -> std::io::Result<NsId> {
    let file = File::open("/proc/self/ns/net")?;
    NsId::of(&file)
}

/// The name a namespace found only through `/proc` goes by (for
/// `netns_include`, logs and metrics).
pub fn proc_name(id: NsId) -> String {
    format!("netns-{}", id.ino)
}

/// Whether the process `pid` is what a runtime starts for a container or a
/// pod sandbox: pid 1 of a PID namespace one level below that of our
/// `/proc`. From `NSpid` in its status (its pid at each level, ours first).
pub fn is_runtime_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|pids| {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            pids.len() == 2 && pids[1] == "1"
        })
}

/// The inotify instance, as tokio's reactor needs it.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

struct Discovery {
    config: Config,
    inotify: AsyncFd<InotifyFd>,
    watches: HashMap<WatchDescriptor, PathBuf>,
    tracker: Tracker,
    /// Files created but not (yet) namespaces, with the time to give up.
    pending: Vec<(PathBuf, Instant)>,
    /// `/proc` verdicts by (pid, namespace): a process is looked at once
    /// while it stays in the same namespace.
    verdicts: HashMap<(u32, NsId), bool>,
    tx: mpsc::Sender<Found>,
}

/// Runs discovery until the receiver is dropped.
pub async fn run(config: Config, tx: mpsc::Sender<Found>) -> std::io::Result<()> {
    let own = own_netns()?;
    let inotify = InotifyFd(Inotify::init(
        InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC,
    )?);
    // SAFETY: the descriptor is the Inotify's own, which the AsyncFd owns
    // and so keeps open, unchanged, for as long as it is registered.
    let inotify = unsafe { AsyncFd::register(inotify) }.map_err(|e| e.into_parts().1)?;
    let mut d = Discovery {
        tracker: Tracker::new(own, config.include_host),
        config,
        inotify,
        watches: HashMap::new(),
        pending: Vec::new(),
        verdicts: HashMap::new(),
        tx,
    };
    d.rescan_dirs().await;
    if d.config.proc_scan.is_some() {
        d.scan_proc().await;
    }
    let now = Instant::now();
    let mut next_dirs = now + DIR_RESCAN;
    let mut next_proc = d.config.proc_scan.map(|p| now + p);
    loop {
        if d.tx.is_closed() {
            crate::health::DISCOVERY.idle();
            return Ok(());
        }
        let next_pending = (!d.pending.is_empty()).then(|| Instant::now() + BIND_POLL);
        let wake = [Some(next_dirs), next_proc, next_pending]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_dirs);
        // Due to act again by its next wake-up: a discovery thread that
        // stops is overdue from then on (`/livez`).
        crate::health::DISCOVERY.due_at(wake.into_std());
        tokio::select! {
            guard = d.inotify.readable() => {
                let mut guard = guard?;
                match guard.get_inner().0.read_events() {
                    Ok(events) => {
                        for e in events {
                            d.on_event(e).await;
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => return Err(e.into()),
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                d.check_pending(now).await;
                if now >= next_dirs {
                    d.rescan_dirs().await;
                    next_dirs = now + DIR_RESCAN;
                }
                if let (Some(at), Some(period)) = (next_proc, d.config.proc_scan) {
                    if now >= at {
                        d.scan_proc().await;
                        next_proc = Some(Instant::now() + period);
                    }
                }
            }
        }
    }
}

impl Discovery {
    fn included(&self, name: &str) -> bool {
        self.config.include.iter().any(|g| glob_match(g, name))
    }

    async fn on_event(&mut self, e: nix::sys::inotify::InotifyEvent) {
        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            debug!("netns directory events were lost (inotify overflow); reading them again");
            self.rescan_dirs().await;
            return;
        }
        if e.mask.contains(AddWatchFlags::IN_IGNORED) {
            self.watches.remove(&e.wd);
            return;
        }
        let (Some(dir), Some(name)) = (self.watches.get(&e.wd), e.name) else {
            return;
        };
        let path = dir.join(&name);
        if !self.included(&name.to_string_lossy()) {
            return;
        }
        if e.mask
            .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        {
            if !self.try_file(&path).await {
                self.wait_for(path);
            }
        } else if e
            .mask
            .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
        {
            self.pending.retain(|(p, _)| *p != path);
            let changes = self.tracker.file_gone(&path);
            self.report(changes, None).await;
        }
    }

    fn wait_for(&mut self, path: PathBuf) {
        if self.pending.len() < MAX_PENDING && !self.pending.iter().any(|(p, _)| *p == path) {
            self.pending.push((path, Instant::now() + BIND_WAIT));
        }
    }

    /// A file that is (now) a namespace: tracked, and reported when new.
    async fn try_file(&mut self, path: &Path) -> bool {
        let Some((file, id)) = open_ns_file(path) else {
            return false;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| proc_name(id));
        let changes = self.tracker.file_is(path, id);
        self.report(changes, Some((file, name))).await;
        true
    }

    /// Tells the node loop; an appearance carries the file and name it was
    /// found by.
    async fn report(&mut self, changes: Vec<Change>, mut found: Option<(File, String)>) {
        for change in changes {
            let message = match change {
                Change::Gone(id) => Found::Gone { id },
                Change::Appeared(id) => {
                    let Some((file, name)) = found.take() else {
                        continue;
                    };
                    debug!(%name, ino = id.ino, "network namespace found");
                    let seen = Instant::now();
                    Found::Appeared {
                        id,
                        file: keep_open(file, &name).await,
                        name,
                        seen,
                    }
                }
            };
            let _ = self.tx.send(message).await;
        }
    }

    async fn check_pending(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.pending);
        for (path, give_up) in pending {
            // symlink_metadata: whether the name is still there, without
            // following or opening anything.
            if !self.try_file(&path).await && now < give_up && path.symlink_metadata().is_ok() {
                self.pending.push((path, give_up));
            }
        }
    }

    /// Watches every directory that exists, and reconciles the files in
    /// them with what is known.
    async fn rescan_dirs(&mut self) {
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        let mut present = HashSet::new();
        let dirs = self.config.dirs.clone();
        for dir in &dirs {
            if !self.watches.values().any(|d| d == dir) {
                match self.inotify.get_ref().0.add_watch(dir, flags) {
                    Ok(wd) => {
                        self.watches.insert(wd, dir.clone());
                    }
                    Err(nix::errno::Errno::ENOENT) => continue,
                    Err(e) => {
                        warn!(dir = %dir.display(), error = %e, "cannot watch this netns directory; it is read every 5 s instead");
                    }
                }
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !self.included(&name.to_string_lossy()) {
                    continue;
                }
                let path = entry.path();
                present.insert(path.clone());
                if !self.tracker.knows(&path) && !self.try_file(&path).await {
                    self.wait_for(path);
                }
            }
        }
        let changes = self.tracker.files_present(&present);
        self.report(changes, None).await;
    }

    /// Every runtime-started process's namespace: new ones appear, ones
    /// no file and no such process holds any more are gone.
    async fn scan_proc(&mut self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut holders: HashMap<NsId, u32> = HashMap::new();
        let mut verdicts = HashMap::with_capacity(self.verdicts.len());
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            let id = NsId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            let qualifies = match self.verdicts.get(&(pid, id)) {
                Some(v) => *v,
                None => read_status(pid).is_some_and(|s| is_runtime_init(&s)),
            };
            verdicts.insert((pid, id), qualifies);
            if qualifies {
                holders.entry(id).or_insert(pid);
            }
        }
        self.verdicts = verdicts;
        let held: HashSet<NsId> = holders.keys().copied().collect();
        let (candidates, gone) = self.tracker.proc_snapshot(&held);
        self.report(gone, None).await;
        for id in candidates {
            let name = proc_name(id);
            if !self.included(&name) {
                continue;
            }
            let Some((file, opened)) = open_proc_ns(holders[&id]) else {
                continue;
            };
            if opened != id {
                continue; // the process exited and its pid was reused
            }
            let changes = self.tracker.adopt(id).into_iter().collect();
            self.report(changes, Some((file, name))).await;
        }
    }
}

/// The namespace kept open through its own nsfs file, not the runtime's
/// bind mount: the runtime's unmount never finds it busy. Should the
/// namespace not be entered (it is going, or the agent lacks SYS_ADMIN),
/// the file found is kept, and the enforcer says what failed when it tries
/// to enter in turn.
async fn keep_open(file: File, name: &str) -> File {
    let Ok(spare) = file.try_clone() else {
        return file;
    };
    match unpinned(spare, name.to_string()).await {
        Ok(f) => f,
        Err(e) => {
            debug!(%name, error = %e, "cannot reopen it from inside; keeping the file found");
            file
        }
    }
}

/// The start of `/proc/<pid>/status`, bounded (`readfile`).
fn read_status(pid: u32) -> Option<String> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/status"));
    crate::readfile::read_text(&path, STATUS_BYTES)
        .ok()
        .map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_process_of_a_pid_namespace_one_level_down_counts() {
        let status = |nspid: &str| format!("Name:\tx\nTgid:\t5\nNSpid:\t{nspid}\nPPid:\t1\n");
        // A container's init or a pod's pause process.
        assert!(is_runtime_init(&status("4242\t1")));
        // Any other process of a container.
        assert!(!is_runtime_init(&status("4243\t7")));
        // A process of the node itself (or of a hostPID pod).
        assert!(!is_runtime_init(&status("4244")));
        // A container a pod's own dockerd started (or any PID namespace a
        // pod made): one level deeper.
        assert!(!is_runtime_init(&status("4245\t30\t1")));
        assert!(!is_runtime_init("Name:\tx\n"));
    }

    #[test]
    fn our_own_process_is_not_a_runtime_init() {
        let status = read_status(std::process::id()).expect("our status");
        assert!(status.contains("NSpid:"));
        // The test runs as a process of its PID namespace, not its pid 1
        // one level below (or it is pid 1 at the top level).
        assert!(!is_runtime_init(&status));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Whatever a process's status says (its name is the pod's
            /// choice), only an `NSpid` of exactly two fields, the second
            /// 1, is a runtime's init.
            #[test]
            fn any_status_text_is_judged_without_panic(text in any::<String>(), name in "[^\n]{0,64}") {
                let status = format!("Name:\t{name}\n{text}");
                let verdict = is_runtime_init(&status);
                let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
                prop_assert_eq!(
                    verdict,
                    nspid.is_some_and(|p| {
                        let f: Vec<&str> = p.split_whitespace().collect();
                        f.len() == 2 && f[1] == "1"
                    })
                );
            }
        }
    }
}
