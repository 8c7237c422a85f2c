//! Finding the pod network namespaces of a node: the files in `netns_dirs`
//! (containerd and CRI-O bind-mount `cni-<uuid>` there), followed with
//! inotify so that a new pod is seen within milliseconds, and a periodic
//! scan of `/proc/*/ns/net` for runtimes that make no file. Namespaces are
//! told apart by identity (device and inode of the nsfs file), never by
//! name; the node's own is left out unless asked for.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use crate::enforce::glob_match;

/// A network namespace's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    fn of(file: &File) -> Option<NsId> {
        let meta = file.metadata().ok()?;
        Some(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What discovery tells the node loop.
#[derive(Debug)]
pub enum Found {
    /// A namespace to enforce in: open, named, and when it was first seen.
    Appeared {
        id: NsId,
        file: File,
        label: String,
        seen: Instant,
    },
    /// Its file is gone and no process is in it any more.
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

pub struct Config {
    pub dirs: Vec<PathBuf>,
    pub include: Vec<String>,
    pub proc_scan: Option<Duration>,
    pub include_host: bool,
}

/// Opens `path` and returns it with its identity when it is a network
/// namespace (nsfs) file.
fn open_netns(path: &Path) -> Option<(File, NsId)> {
    let file = File::open(path).ok()?;
    let is_ns = fstatfs(file.as_fd()).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC);
    if !is_ns {
        return None;
    }
    let id = NsId::of(&file)?;
    Some((file, id))
}

/// The node's own namespace (ours).
pub fn own_netns() -> std::io::Result<NsId> {
    let file = File::open("/proc/self/ns/net")?;
    NsId::of(&file).ok_or_else(|| std::io::Error::other("cannot stat /proc/self/ns/net"))
}

/// The hostname a process sees (a pod's name, under Kubernetes).
fn hostname_of(pid: &str) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/root/etc/hostname")).ok()?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= 64).then(|| name.to_string())
}

/// The inotify instance, as tokio's reactor needs it.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Where a namespace was seen.
#[derive(Default)]
struct Entry {
    files: HashSet<PathBuf>,
    in_proc: bool,
}

struct Discovery {
    config: Config,
    own: NsId,
    inotify: AsyncFd<InotifyFd>,
    watches: HashMap<WatchDescriptor, PathBuf>,
    entries: HashMap<NsId, Entry>,
    /// Which namespace each known file is (the files of `entries`).
    by_path: HashMap<PathBuf, NsId>,
    /// Files created but not (yet) namespaces, with the time to give up.
    pending: Vec<(PathBuf, Instant)>,
    tx: mpsc::UnboundedSender<Found>,
}

/// Runs discovery until the receiver is dropped.
pub async fn run(config: Config, tx: mpsc::UnboundedSender<Found>) -> std::io::Result<()> {
    let own = own_netns()?;
    let inotify = InotifyFd(Inotify::init(
        InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC,
    )?);
    // SAFETY: the descriptor is the Inotify's own, which the AsyncFd owns
    // and so keeps open, unchanged, for as long as it is registered.
    let inotify = unsafe { AsyncFd::register(inotify) }.map_err(|e| e.into_parts().1)?;
    let mut d = Discovery {
        config,
        own,
        inotify,
        watches: HashMap::new(),
        entries: HashMap::new(),
        by_path: HashMap::new(),
        pending: Vec::new(),
        tx,
    };
    d.rescan_dirs();
    if d.config.proc_scan.is_some() {
        d.scan_proc();
    }
    let now = Instant::now();
    let mut next_dirs = now + DIR_RESCAN;
    let mut next_proc = d.config.proc_scan.map(|p| now + p);
    loop {
        if d.tx.is_closed() {
            return Ok(());
        }
        let next_pending = (!d.pending.is_empty()).then(|| Instant::now() + BIND_POLL);
        let wake = [Some(next_dirs), next_proc, next_pending]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_dirs);
        tokio::select! {
            guard = d.inotify.readable() => {
                let mut guard = guard?;
                match guard.get_inner().0.read_events() {
                    Ok(events) => {
                        for e in events {
                            d.on_event(e);
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => return Err(e.into()),
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                d.check_pending(now);
                if now >= next_dirs {
                    d.rescan_dirs();
                    next_dirs = now + DIR_RESCAN;
                }
                if let (Some(at), Some(period)) = (next_proc, d.config.proc_scan) {
                    if now >= at {
                        d.scan_proc();
                        next_proc = Some(now + period);
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

    fn on_event(&mut self, e: nix::sys::inotify::InotifyEvent) {
        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            warn!("netns directory events were lost (inotify overflow); reading them again");
            self.rescan_dirs();
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
            if !self.try_file(&path) {
                self.pending.push((path, Instant::now() + BIND_WAIT));
            }
        } else if e
            .mask
            .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
        {
            self.pending.retain(|(p, _)| *p != path);
            self.file_gone(&path);
        }
    }

    /// A file that is (now) a namespace: recorded, and reported when new.
    fn try_file(&mut self, path: &Path) -> bool {
        let Some((file, id)) = open_netns(path) else {
            return false;
        };
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("netns-{}", id.ino));
        if !self.seen(id, file, label, |e| {
            e.files.insert(path.to_path_buf());
        }) {
            return true; // the node's own, left out
        }
        if let Some(old) = self.by_path.insert(path.to_path_buf(), id) {
            if old != id {
                // The name now holds another namespace (a pod deleted and
                // one created under its name between two looks).
                self.drop_file(old, path);
            }
        }
        true
    }

    /// Records where `id` was seen and reports it when new; false for the
    /// node's own namespace when it is left out.
    fn seen(&mut self, id: NsId, file: File, label: String, mark: impl FnOnce(&mut Entry)) -> bool {
        if id == self.own && !self.config.include_host {
            return false;
        }
        let new = !self.entries.contains_key(&id);
        mark(self.entries.entry(id).or_default());
        if new {
            debug!(%label, ino = id.ino, "network namespace found");
            let _ = self.tx.send(Found::Appeared {
                id,
                file,
                label,
                seen: Instant::now(),
            });
        }
        true
    }

    fn file_gone(&mut self, path: &Path) {
        if let Some(id) = self.by_path.remove(path) {
            self.drop_file(id, path);
        }
    }

    /// `path` no longer names `id`: gone when nothing else holds it.
    fn drop_file(&mut self, id: NsId, path: &Path) {
        let gone = self
            .entries
            .get_mut(&id)
            .is_some_and(|e| e.files.remove(path) && e.files.is_empty() && !e.in_proc);
        if gone {
            self.forget(vec![id]);
        }
    }

    fn forget(&mut self, gone: Vec<NsId>) {
        for id in gone {
            self.entries.remove(&id);
            let _ = self.tx.send(Found::Gone { id });
        }
    }

    fn check_pending(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.pending);
        for (path, give_up) in pending {
            if !self.try_file(&path) && now < give_up && path.exists() {
                self.pending.push((path, give_up));
            }
        }
    }

    /// Watches every directory that exists, and reconciles the files in
    /// them with what is known.
    fn rescan_dirs(&mut self) {
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        let mut present = HashSet::new();
        let dirs = std::mem::take(&mut self.config.dirs);
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
                let known = self.by_path.contains_key(&path);
                if !known && !self.try_file(&path) && !self.pending.iter().any(|(p, _)| *p == path)
                {
                    self.pending.push((path, Instant::now() + BIND_WAIT));
                }
            }
        }
        self.config.dirs = dirs;
        let vanished: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in vanished {
            self.file_gone(&path);
        }
    }

    /// Every process's namespace: new ones appear, ones no process and no
    /// file holds any more are gone.
    fn scan_proc(&mut self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut found: HashMap<NsId, String> = HashMap::new();
        for p in procs.flatten() {
            let pid = p.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let path = format!("/proc/{pid}/ns/net");
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = NsId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            found.entry(id).or_insert_with(|| pid.to_string());
        }
        for (id, pid) in &found {
            if self.entries.get(id).is_some_and(|e| e.in_proc) {
                continue;
            }
            if let Some(e) = self.entries.get_mut(id) {
                e.in_proc = true;
                continue;
            }
            if *id == self.own && !self.config.include_host {
                continue;
            }
            let Some((file, opened)) = open_netns(Path::new(&format!("/proc/{pid}/ns/net"))) else {
                continue;
            };
            if opened != *id {
                continue; // the process exited and its pid was reused
            }
            let label = hostname_of(pid).unwrap_or_else(|| format!("netns-{}", id.ino));
            self.seen(*id, file, label, |e| e.in_proc = true);
        }
        let mut gone = Vec::new();
        for (id, e) in &mut self.entries {
            if e.in_proc && !found.contains_key(id) {
                e.in_proc = false;
                if e.files.is_empty() {
                    gone.push(*id);
                }
            }
        }
        self.forget(gone);
    }
}
