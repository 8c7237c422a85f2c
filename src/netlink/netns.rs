//! Finding, opening and entering network namespaces: a pod's (`node`),
//! and the ones veth peers live in.
//!
//! Under `node` every path and count here is a pod's doing, so each open
//! is one that cannot block or be steered: a namespace file is opened
//! `O_PATH|O_NOFOLLOW` (never a FIFO's or a device's open, never a symlink
//! followed), proved to be nsfs, and only then reopened for reading; the
//! threads that enter namespaces are bounded in number for the whole
//! process; and a far end may only be looked for in a namespace that is
//! neither the node's, ours, nor another pod's (the [`Fence`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use tokio::sync::Semaphore;

use super::{NetlinkError, Quarantine, Rtnl, RtnlSync, DEADLINE};

/// A network namespace's identity: the device and inode of its nsfs file,
/// the same through every path and mount that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    pub fn of(file: &File) -> std::io::Result<NsId> {
        let meta = file.metadata()?;
        Ok(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Opens the network namespace file at `path` without following a symlink
/// in its last component and without an open that can block or act (a
/// FIFO, a device): `O_PATH` first, then a check that it is nsfs, then a
/// read-only reopen of that same file. Anything else is `None`.
pub fn open_ns_file(path: &Path) -> Option<(File, NsId)> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let handle: OwnedFd = open(path, flags, Mode::empty()).ok()?;
    if fstatfs(handle.as_fd()).ok()?.filesystem_type() != NSFS_MAGIC {
        return None;
    }
    reopen(&handle)
}

/// `/proc/<pid>/ns/net`: a magic link the kernel resolves (not the
/// process's doing), so it is followed; still proved nsfs.
pub fn open_proc_ns(pid: u32) -> Option<(File, NsId)> {
    let path = format!("/proc/{pid}/ns/net");
    let handle: OwnedFd = open(
        path.as_str(),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if fstatfs(handle.as_fd()).ok()?.filesystem_type() != NSFS_MAGIC {
        return None;
    }
    reopen(&handle)
}

fn reopen(handle: &OwnedFd) -> Option<(File, NsId)> {
    // setns needs a file opened for reading; an nsfs inode opens without
    // side effects, and through /proc/self/fd it is the very file checked.
    let path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file = File::from(fd);
    let id = NsId::of(&file).ok()?;
    Some((file, id))
}

/// Threads that enter a namespace at once, in the whole process: opening a
/// pod's sockets and checking far ends in containers. Waiting for one is
/// done by the task that asks, never by a thread; tools (`iptables`, `nft`)
/// run on the runtime's bounded blocking pool instead.
pub(crate) const NETNS_THREADS: usize = 8;

static NETNS_PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(NETNS_THREADS));

/// Listings of the node's namespaces running at once, in the whole
/// process: one. Every search lists every pod's, so searches that wait
/// behind a listing share the next one rather than each making its own.
static LISTING: Semaphore = Semaphore::const_new(1);

/// What the last listing found, and when it began.
static LAST_LISTING: std::sync::Mutex<Option<Arc<Listing>>> = std::sync::Mutex::new(None);

/// One listing of the namespace files in `dirs` and of `/proc`.
struct Listing {
    began: Instant,
    dirs: Vec<PathBuf>,
    found: Vec<(PathBuf, NsId)>,
    /// `/proc` shows a process of another network namespace.
    others: bool,
}

/// The node's namespaces as a listing begun at or after `since` (when the
/// search first asked), on a thread of its own (not on the blocking
/// threads every pod's firewall tools share), waited for at most
/// [`DEADLINE`]; `None` past it. Any listing of the same directories
/// begun since then is as good as a new one: searches share it, and a
/// search that gave up on a slow listing takes it when it asks again.
async fn list_namespaces(dirs: &[PathBuf], since: Instant) -> Option<Arc<Listing>> {
    let done = || {
        let last = LAST_LISTING.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|l| l.began >= since && l.dirs == dirs)
            .cloned()
    };
    if let Some(l) = done() {
        return Some(l);
    }
    tokio::time::timeout(DEADLINE, async {
        // Held by the listing's thread until it ends, even past our wait.
        let permit = LISTING.acquire().await.ok()?;
        if let Some(l) = done() {
            return Some(l);
        }
        let dirs = dirs.to_vec();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-search".into())
            .spawn(move || {
                let _permit = permit;
                let began = Instant::now();
                let (found, others) = candidates(&dirs);
                let listing = Arc::new(Listing {
                    began,
                    dirs,
                    found,
                    others,
                });
                *LAST_LISTING.lock().unwrap_or_else(|e| e.into_inner()) = Some(listing.clone());
                let _ = tx.send(listing);
            })
            .ok()?;
        rx.await.ok()
    })
    .await
    .ok()
    .flatten()
}

/// The namespaces a far end must never be changed in: the node's (ours,
/// under `node`) and every pod's. A pod's veth whose far end is in one of
/// them is not Docker's: a pod that enslaved its own `eth0` to a bridge it
/// named like Docker's would otherwise have the node's end lowered.
/// Shared: the node loop adds and removes pods as it finds them; every
/// enforcer's resolver reads it.
#[derive(Clone, Default)]
pub struct Fence(Arc<RwLock<HashSet<NsId>>>);

impl Fence {
    pub fn insert(&self, id: NsId) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(id);
    }

    pub fn remove(&self, id: NsId) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub fn contains(&self, id: NsId) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
}

/// After a namespace with an nsid was looked for and not found, it is not
/// looked for again for this long (a container that exited leaves its host
/// veth a moment longer than its namespace; its far end is gone with it).
const MISS_REMEMBERED: Duration = Duration::from_secs(10);
/// The candidates (every file in `netns_dirs`, every `/proc/*/ns/net`) are
/// read at most this often, whatever asks.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Maps the nsids our namespace knows to namespace files.
///
/// An nsid is only meaningful in the namespace that assigned it, and the
/// kernel offers no reverse lookup, so each candidate file is opened and the
/// kernel asked which nsid it has (RTM_GETNSID with NETNSA_FD). Results are
/// remembered, and a remembered path is re-verified before use because nsids
/// are reused once a namespace dies. Misses are remembered too, and the
/// candidates read at most once a second, off the runtime thread.
pub struct NetnsResolver {
    dirs: Vec<PathBuf>,
    known: HashMap<i32, PathBuf>,
    missed: HashMap<i32, Instant>,
    scanned: Option<Instant>,
    /// Whether the last scan's /proc showed any process in a network
    /// namespace other than ours (none: the node's PID namespace is not
    /// ours, or no pod's process is visible).
    proc_sees_others: Option<bool>,
    /// When a search first asked for a listing it did not get in time: a
    /// listing begun since then answers it (a slow one serves the search
    /// that gave up on it, rather than none ever being waited for).
    unanswered_since: Option<Instant>,
    fence: Fence,
}

impl NetnsResolver {
    /// `dirs` are searched in order (e.g. `/run/netns`, Docker's
    /// `<exec-root>/netns`); `/proc/<pid>/ns/net` is the last resort. A far
    /// end is never looked for in a namespace of `fence`.
    pub fn new(dirs: Vec<PathBuf>, fence: Fence) -> NetnsResolver {
        NetnsResolver {
            dirs,
            known: HashMap::new(),
            missed: HashMap::new(),
            scanned: None,
            proc_sees_others: None,
            unanswered_since: None,
            fence,
        }
    }

    /// Remembers a namespace file whose nsid is already known (a container's
    /// sandbox, reported by Docker).
    pub fn remember(&mut self, nsid: i32, path: PathBuf) {
        self.missed.remove(&nsid);
        self.known.insert(nsid, path);
    }

    /// Opens the namespace our namespace calls `nsid`.
    pub async fn open(&mut self, nsid: i32, rtnl: &Rtnl) -> Result<(File, PathBuf), NetlinkError> {
        if let Some(path) = self.known.get(&nsid).cloned() {
            if let Some((file, id)) = verify(&path, nsid, rtnl).await {
                return self.fenced(file, id, path);
            }
            self.known.remove(&nsid);
        }
        let now = Instant::now();
        let recently_missed = self
            .missed
            .get(&nsid)
            .is_some_and(|at| now.duration_since(*at) < MISS_REMEMBERED);
        let recently_scanned = self
            .scanned
            .is_some_and(|at| now.duration_since(at) < SCAN_EVERY);
        if !recently_missed && !recently_scanned {
            // One pass learns every candidate's nsid, so that a burst of new
            // containers costs one scan rather than one scan each. The
            // candidates are listed without opening them; each is then
            // opened, asked about and closed in turn: a search holds one
            // namespace file at a time, however many the node has.
            self.scanned = Some(now);
            // A listing that did not end in time looked for nothing: not a
            // miss (nor this pod's doing, so no quarantine); asked again
            // after the spacing, with what was known kept.
            let since = *self.unanswered_since.get_or_insert(now);
            let Some(listing) = list_namespaces(&self.dirs, since).await else {
                return Err(NetlinkError::NsidNotSearchedYet {
                    nsid,
                    retry_in: SCAN_EVERY,
                });
            };
            self.unanswered_since = None;
            self.known.clear();
            self.missed
                .retain(|_, at| now.duration_since(*at) < MISS_REMEMBERED);
            self.proc_sees_others = Some(listing.others);
            for (path, id) in &listing.found {
                let Some((file, opened)) = open_any(path) else {
                    continue;
                };
                if opened != *id {
                    continue; // the process exited and its pid was reused
                }
                match rtnl.nsid_of(file.as_fd()).await {
                    Ok(Some(nsid)) => {
                        self.known.entry(nsid).or_insert_with(|| path.clone());
                    }
                    Ok(None) => {}
                    // The pod's own socket stopped answering: the search
                    // ends here, with what it learnt.
                    Err(e) if e.is_timeout() => return Err(e),
                    Err(_) => {}
                }
            }
        }
        if let Some(path) = self.known.get(&nsid).cloned() {
            if let Some((file, id)) = open_any(&path) {
                return self.fenced(file, id, path);
            }
        }
        if recently_scanned && !recently_missed {
            // The last scan may have run before this namespace got its
            // nsid (a container whose end dockerd moved a moment after
            // another's): not a miss until a scan has looked for it.
            let since = self
                .scanned
                .map_or(Duration::ZERO, |at| now.duration_since(at));
            return Err(NetlinkError::NsidNotSearchedYet {
                nsid,
                retry_in: SCAN_EVERY.saturating_sub(since),
            });
        }
        self.missed.insert(nsid, now);
        Err(NetlinkError::NsidNotFound {
            nsid,
            searched: self.describe_search(),
            hint: search_hint(
                crate::caps::has(crate::caps::SYS_PTRACE),
                self.proc_sees_others,
            ),
        })
    }

    fn fenced(&self, file: File, id: NsId, path: PathBuf) -> Result<(File, PathBuf), NetlinkError> {
        if self.fence.contains(id) {
            return Err(NetlinkError::Fenced {
                path: path.display().to_string(),
            });
        }
        Ok((file, path))
    }

    fn describe_search(&self) -> String {
        let mut parts: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        parts.push("/proc/*/ns/net".into());
        parts.join(", ")
    }
}

/// What to do about a far end not found, given whether CAP_SYS_PTRACE is
/// held and whether /proc shows any process of another network namespace
/// (`None`: cannot tell).
fn search_hint(ptrace: Option<bool>, proc_sees_others: Option<bool>) -> String {
    let dirs = "add the directory that holds it to `netns_dirs`";
    match (ptrace, proc_sees_others) {
        (Some(false), _) => format!(
            "grant SYS_PTRACE (without it another process's /proc/<pid>/ns/net \
             cannot be opened when it holds capabilities this one lacks), or {dirs}"
        ),
        (_, Some(false)) => format!(
            "/proc shows no process of another network namespace: share the PID \
             namespace the containers run in (node: hostPID: true; a sidecar: \
             shareProcessNamespace: true), or {dirs}"
        ),
        _ => dirs.to_string(),
    }
}

/// A namespace file in a directory, or a process's.
fn open_any(path: &Path) -> Option<(File, NsId)> {
    match proc_pid(path) {
        Some(pid) => open_proc_ns(pid),
        None => open_ns_file(path),
    }
}

/// The pid of a `/proc/<pid>/ns/net` path.
fn proc_pid(path: &Path) -> Option<u32> {
    path.strip_prefix("/proc")
        .ok()?
        .to_str()?
        .strip_suffix("/ns/net")?
        .parse()
        .ok()
}

async fn verify(path: &Path, nsid: i32, rtnl: &Rtnl) -> Option<(File, NsId)> {
    let (file, id) = open_any(path)?;
    (rtnl.nsid_of(file.as_fd()).await.ok()?? == nsid).then_some((file, id))
}

/// Every namespace in `dirs`, then every process's, each once (by
/// identity), with its identity; none is kept open (blocking file-system
/// work, for the blocking pool). Also whether any process is in another
/// namespace than ours.
fn candidates(dirs: &[PathBuf]) -> (Vec<(PathBuf, NsId)>, bool) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let own = std::fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut others = false;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            // Opened only to prove it nsfs (never followed, never a FIFO's
            // open), and closed at once.
            if let Some((_, id)) = open_ns_file(&path) {
                if seen.insert(id) {
                    out.push((path, id));
                }
            }
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return (out, others);
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Identity from the magic link's stat: no file is opened.
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let id = NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        others |= own != Some((id.dev, id.ino));
        if seen.insert(id) {
            out.push((path, id));
        }
    }
    (out, others)
}

/// A network namespace other than ours that enforcement works in
/// (`node`): its file, open, and a name for logs and metrics.
pub struct NsFile {
    pub file: File,
    pub id: NsId,
    pub label: String,
}

impl NsFile {
    /// Runs `f` on a short-lived thread inside this namespace, and waits
    /// for it, blocking the caller: for threads of the blocking pool (the
    /// firewall tools), never for the runtime's.
    pub fn run_blocking<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetlinkError> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("mtuvisor-netns".into())
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("cannot enter it: {e}"))?;
                    Ok(f())
                })
                .map_err(|e| self.err(format!("cannot spawn a thread to enter it: {e}")))?;
            thread
                .join()
                .map_err(|_| self.err("the thread working in it panicked".into()))?
                .map_err(|m| self.err(m))
        })
    }

    /// Runs `f` on a short-lived thread inside this namespace, one of at
    /// most [`NETNS_THREADS`] in the process; the calling task waits, its
    /// thread does not. Sockets `f` opens belong to the namespace for good;
    /// entered into a runtime's handle, they are then driven by that
    /// runtime, and the thread is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetlinkError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| self.err(format!("cannot duplicate its file: {e}")))?;
        on_thread_in(file, self.label.clone(), None, f).await
    }

    fn err(&self, message: String) -> NetlinkError {
        NetlinkError::Netns {
            path: self.label.clone(),
            message,
        }
    }
}

/// The namespace of `file` as a file that no mount holds: opened inside it
/// (`/proc/thread-self/ns/net`), so that keeping it open does not keep the
/// runtime's bind mount busy (a runtime that unmounts without
/// `MNT_DETACH` would get EBUSY for as long as we enforce there).
pub async fn unpinned(file: File, label: String) -> Result<File, NetlinkError> {
    let label_err = label.clone();
    on_thread_in(file, label, None, || File::open("/proc/thread-self/ns/net"))
        .await?
        .map_err(|e| NetlinkError::Netns {
            path: label_err,
            message: format!("cannot reopen it from inside: {e}"),
        })
}

/// How long a thread inside a namespace may take: its two requests (a
/// far end read and set), each within [`DEADLINE`], and a margin.
const THREAD_DEADLINE: Duration = Duration::from_secs(DEADLINE.as_secs() * 2 + 1);

/// The one way into a namespace for async code: a permit of the process's
/// [`NETNS_PERMITS`], then a fresh thread that enters, runs `f` and exits.
/// `setns` changes the calling thread for good, so never a tokio worker.
///
/// The task waits at most [`THREAD_DEADLINE`]. A thread still running then
/// is left to end on its own. With a `quarantine` (the pod's), its permit
/// is given back at once and the pod admits nothing more until that
/// thread has ended, so no pod ever holds more than one thread beyond the
/// shared ones, nor a permit another pod needs. Without one (the agent's
/// own steps into a namespace, such as opening a pod's sockets), the
/// thread keeps its permit until it ends: no thread past its deadline
/// goes uncounted.
async fn on_thread_in<T: Send + 'static>(
    file: File,
    label: String,
    quarantine: Option<&Quarantine>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetlinkError> {
    on_thread_in_within(file, label, quarantine, THREAD_DEADLINE, f).await
}

async fn on_thread_in_within<T: Send + 'static>(
    file: File,
    label: String,
    quarantine: Option<&Quarantine>,
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetlinkError> {
    let err = {
        let label = label.clone();
        move |message: String| NetlinkError::Netns {
            path: label.clone(),
            message,
        }
    };
    if let Some(q) = quarantine {
        q.admit()?;
    }
    let permit = NETNS_PERMITS
        .acquire()
        .await
        .map_err(|_| err("no more threads may enter namespaces".into()))?;
    // Shared with the thread: given back when both are done with it, or
    // by the task past the deadline when a quarantine bounds the pod.
    let permit = Arc::new(std::sync::Mutex::new(Some(permit)));
    let permit_in_thread = permit.clone();
    let working = Arc::new(quarantine.map(Quarantine::working));
    let in_thread = working.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let enter_err = err.clone();
    let denied_label = label.clone();
    std::thread::Builder::new()
        .name("mtuvisor-netns".into())
        .spawn(move || {
            let _working = in_thread;
            let _permit = permit_in_thread;
            let result = setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| match e {
                    nix::errno::Errno::EPERM => NetlinkError::NetnsDenied {
                        path: denied_label.clone(),
                    },
                    e => enter_err(format!("cannot enter it: {e}")),
                })
                .map(|()| {
                    drop(file);
                    f()
                });
            let _ = tx.send(result);
        })
        .map_err(|e| err(format!("cannot spawn a thread to enter it: {e}")))?;
    let answered = tokio::time::timeout(deadline, rx).await;
    match answered {
        Ok(result) => result.map_err(|_| err("the thread working in it died".into()))?,
        Err(_) => {
            if let Some(w) = working.as_ref() {
                w.outlived();
                drop(permit.lock().unwrap_or_else(|e| e.into_inner()).take());
            }
            Err(NetlinkError::TimedOut {
                op: format!("work in network namespace {label}"),
                after: deadline,
            })
        }
    }
}

/// Runs `f` with a netlink socket opened inside the namespace `ns`, on a
/// thread of its own (a far end in a container is clamped from there, at
/// the clamping threads' priority), within [`on_thread_in`]'s deadline.
pub async fn in_netns<T, F>(
    ns: File,
    label: String,
    quarantine: Option<&Quarantine>,
    f: F,
) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce(&mut RtnlSync) -> Result<T, NetlinkError> + Send + 'static,
{
    on_thread_in(ns, label, quarantine, move || {
        crate::sched::join();
        let mut rtnl = RtnlSync::open()?;
        f(&mut rtnl)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_far_end_not_found_without_sys_ptrace_says_to_grant_it() {
        assert!(search_hint(Some(false), Some(true)).starts_with("grant SYS_PTRACE"));
        assert!(search_hint(Some(false), Some(false)).starts_with("grant SYS_PTRACE"));
        assert!(!search_hint(Some(true), Some(true)).contains("SYS_PTRACE"));
        assert!(search_hint(Some(true), Some(false)).contains("hostPID: true"));
        assert!(search_hint(None, None).contains("netns_dirs"));
    }

    #[test]
    fn neither_a_fifo_nor_a_symlink_nor_a_plain_file_is_a_namespace() {
        let dir = std::env::temp_dir().join(format!("mtuvisor-nsopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "x").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("/proc/self/ns/net", &link).unwrap();
        // A FIFO with no writer: an ordinary open would block here.
        assert!(open_ns_file(&fifo).is_none());
        assert!(open_ns_file(&plain).is_none());
        assert!(open_ns_file(&link).is_none(), "a symlink is not followed");
        let (_, own) = open_proc_ns(std::process::id()).expect("our own namespace");
        let (_, again) = open_any(Path::new(&format!("/proc/{}/ns/net", std::process::id())))
            .expect("by its /proc path");
        assert_eq!(own, again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Root is needed to enter a namespace (even our own).
    fn root(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("MTUVISOR_SKIP_PRIVILEGED").as_deref() == Ok("1") {
            eprintln!("SKIPPED {test}: needs root (MTUVISOR_SKIP_PRIVILEGED=1)");
            return false;
        }
        panic!("{test} needs root (CAP_SYS_ADMIN, to enter a namespace); run the suite as root, or set MTUVISOR_SKIP_PRIVILEGED=1 to skip it");
    }

    #[tokio::test]
    async fn a_thread_past_its_deadline_gives_its_permit_back_and_holds_its_pod_alone() {
        if !root("a_thread_past_its_deadline_gives_its_permit_back_and_holds_its_pod_alone") {
            return;
        }
        let own = || File::open("/proc/self/ns/net").unwrap();
        let deadline = Duration::from_millis(200);
        // Threads that never end on their own (until released): more of
        // them than there are permits, each a pod's.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Arc::new(std::sync::Mutex::new(blocked));
        let pods: Vec<Quarantine> = (0..NETNS_THREADS + 2)
            .map(|i| Quarantine::new(&format!("pod-{i}")))
            .collect();
        let began = Instant::now();
        let results = futures::future::join_all(pods.iter().map(|q| {
            let blocked = blocked.clone();
            async move {
                let r =
                    on_thread_in_within(own(), q.label().into(), Some(q), deadline, move || {
                        let _ = blocked.lock().map(|rx| rx.recv());
                    })
                    .await;
                q.record(&r);
                r
            }
        }))
        .await;
        let took = began.elapsed();
        // Each ended at its deadline, the last two once the first eight
        // gave their permits back: none waited for a thread to end.
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(NetlinkError::TimedOut { .. }))));
        assert!(took < deadline * 4, "{took:?}");
        // A pod with a stuck thread is refused at once, even once its
        // delay has passed, while the thread runs.
        std::thread::sleep(Duration::from_millis(1100));
        let refused =
            on_thread_in_within(own(), "pod-0".into(), Some(&pods[0]), deadline, || ()).await;
        assert!(
            matches!(refused, Err(NetlinkError::Quarantined { .. })),
            "{refused:?}"
        );
        // Another pod's work goes on meanwhile: a permit is free.
        let other = Quarantine::new("pod-other");
        let fine =
            on_thread_in_within(own(), "pod-other".into(), Some(&other), deadline, || 7).await;
        assert_eq!(fine.unwrap(), 7);
        // The threads end: the pods are let in again.
        drop(release);
        let mut admitted = false;
        for _ in 0..100 {
            if pods[0].admit().is_ok() {
                admitted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(admitted, "let in once its thread ended");
        // Without a quarantine to hold its pod at one, a thread past its
        // deadline keeps its permit until it ends: none goes uncounted.
        let free = NETNS_PERMITS.available_permits();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let alone = on_thread_in_within(own(), "agent's own".into(), None, deadline, move || {
            let _ = blocked.recv();
        })
        .await;
        assert!(
            matches!(alone, Err(NetlinkError::TimedOut { .. })),
            "{alone:?}"
        );
        assert_eq!(NETNS_PERMITS.available_permits(), free - 1);
        drop(release);
        let mut back = false;
        for _ in 0..100 {
            if NETNS_PERMITS.available_permits() == free {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(back, "given back once its thread ended");
    }

    #[tokio::test]
    async fn searches_that_wait_behind_a_listing_share_the_next() {
        // A directory of this test's own: no other test's listing is
        // taken for one of these.
        let dir = std::env::temp_dir().join(format!("mtuvisor-listing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dirs = vec![dir.clone()];
        let asked = 12;
        let listings =
            futures::future::join_all((0..asked).map(|_| list_namespaces(&dirs, Instant::now())))
                .await;
        let listings: Vec<Arc<Listing>> =
            listings.into_iter().map(|l| l.expect("listed")).collect();
        let mut distinct: Vec<&Arc<Listing>> = Vec::new();
        for l in &listings {
            if !distinct.iter().any(|d| Arc::ptr_eq(d, l)) {
                distinct.push(l);
            }
        }
        // The first lists; all that asked while it ran share the second.
        assert!(
            distinct.len() <= 2,
            "{} listings for {asked} searches asked at once",
            distinct.len()
        );
        assert!(listings.iter().all(|l| l.dirs == dirs));
        // A search that gave up on a listing and asks again takes any
        // begun since it first asked: a slow listing still serves it.
        let first_asked = Instant::now();
        let slow = list_namespaces(&dirs, first_asked).await.expect("listed");
        let again = list_namespaces(&dirs, first_asked).await.expect("listed");
        assert!(Arc::ptr_eq(&slow, &again), "taken, not listed again");
        // One that asks later needs a listing begun after it asked.
        let later = list_namespaces(&dirs, Instant::now())
            .await
            .expect("listed");
        assert!(!Arc::ptr_eq(&slow, &later));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proc_paths_are_told_from_files() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(proc_pid(Path::new("/run/netns/cni-1")), None);
        assert_eq!(proc_pid(Path::new("/proc/self/ns/net")), None);
    }
}
