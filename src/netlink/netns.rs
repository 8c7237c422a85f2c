//! Finding and entering the network namespaces that veth peers live in.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::{NetlinkError, Rtnl};

/// Maps the nsids our namespace knows to namespace files.
///
/// An nsid is only meaningful in the namespace that assigned it, and the
/// kernel offers no reverse lookup, so each candidate file is opened and the
/// kernel asked which nsid it has (RTM_GETNSID with NETNSA_FD). Results are
/// remembered, and a remembered path is re-verified before use because nsids
/// are reused once a namespace dies.
pub struct NetnsResolver {
    dirs: Vec<PathBuf>,
    known: HashMap<i32, PathBuf>,
}

impl NetnsResolver {
    /// `dirs` are searched in order (e.g. `/run/netns`, Docker's
    /// `<exec-root>/netns`); `/proc/<pid>/ns/net` is the last resort.
    pub fn new(dirs: Vec<PathBuf>) -> NetnsResolver {
        NetnsResolver {
            dirs,
            known: HashMap::new(),
        }
    }

    /// Remembers a namespace file whose nsid is already known (a container's
    /// sandbox, reported by Docker).
    pub fn remember(&mut self, nsid: i32, path: PathBuf) {
        self.known.insert(nsid, path);
    }

    /// Opens the namespace our namespace calls `nsid`.
    pub async fn open(&mut self, nsid: i32, rtnl: &Rtnl) -> Result<(File, PathBuf), NetlinkError> {
        if let Some(path) = self.known.get(&nsid).cloned() {
            if let Some(file) = verify(&path, nsid, rtnl).await {
                return Ok((file, path));
            }
        }
        // One pass learns every candidate's nsid, so that a burst of new
        // containers costs one scan rather than one scan each.
        self.known.clear();
        self.learn(self.dir_candidates(), rtnl).await;
        if !self.known.contains_key(&nsid) {
            self.learn(proc_candidates(), rtnl).await;
        }
        if let Some(path) = self.known.get(&nsid).cloned() {
            if let Ok(file) = File::open(&path) {
                return Ok((file, path));
            }
        }
        Err(NetlinkError::NsidNotFound {
            nsid,
            searched: self.describe_search(),
        })
    }

    async fn learn(&mut self, candidates: Vec<PathBuf>, rtnl: &Rtnl) {
        let mut seen = HashSet::new();
        for path in candidates {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            if let Ok(Some(id)) = rtnl.nsid_of(file.as_fd()).await {
                self.known.entry(id).or_insert(path);
            }
        }
    }

    fn dir_candidates(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            out.extend(files);
        }
        out
    }

    fn describe_search(&self) -> String {
        let mut parts: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        parts.push("/proc/*/ns/net".into());
        parts.join(", ")
    }
}

async fn verify(path: &Path, nsid: i32, rtnl: &Rtnl) -> Option<File> {
    let file = File::open(path).ok()?;
    (rtnl.nsid_of(file.as_fd()).await.ok()?? == nsid).then_some(file)
}

fn proc_candidates() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("ns/net"))
        .collect()
}

/// A network namespace other than ours that enforcement works in
/// (`node`): its file, open, and a name for logs and metrics.
pub struct NsFile {
    pub file: File,
    pub label: String,
}

impl NsFile {
    /// Runs `f` on a short-lived thread inside this namespace, and waits
    /// for it. Sockets `f` opens belong to the namespace for good; entered
    /// into a runtime's handle, they are then driven by that runtime's
    /// workers, and the thread is gone.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetlinkError> {
        let err = |message: String| NetlinkError::Netns {
            path: self.label.clone(),
            message,
        };
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("mtuvisor-netns".into())
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("cannot enter it: {e}"))?;
                    Ok(f())
                })
                .map_err(|e| err(format!("cannot spawn a thread to enter it: {e}")))?;
            thread
                .join()
                .map_err(|_| err("the thread working in it panicked".into()))?
                .map_err(err)
        })
    }
}

/// Runs `f` with a netlink socket opened inside the namespace `ns`.
///
/// `setns` changes the calling thread for good, so it happens on a fresh OS
/// thread that exits afterwards — never on a tokio worker, whose next task
/// would otherwise run in the wrong namespace. The socket is opened after
/// `setns` and so belongs to that namespace; `ns` stays open until then.
pub async fn in_netns<T, F, Fut>(ns: File, label: String, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce(Rtnl) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let netns_err = {
        let label = label.clone();
        move |message: String| NetlinkError::Netns {
            path: label.clone(),
            message,
        }
    };
    let thread_err = netns_err.clone();
    std::thread::Builder::new()
        .name("mtuvisor-netns".into())
        .spawn(move || {
            let result = (|| {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(format!("cannot enter it: {e}")))?;
                drop(ns);
                // A far end in a container is clamped from here.
                crate::sched::join();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|e| netns_err(format!("cannot start a runtime in it: {e}")))?;
                rt.block_on(async {
                    let rtnl = Rtnl::connect()?;
                    f(rtnl).await
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| thread_err(format!("cannot spawn a thread to enter it: {e}")))?;
    rx.await.map_err(|_| NetlinkError::Netns {
        path: label,
        message: "the thread working in it died".into(),
    })?
}
