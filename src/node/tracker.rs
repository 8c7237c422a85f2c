//! Which pod namespaces exist, from what discovery sees: files that are
//! (or stop being) namespaces, and snapshots of the namespaces `/proc`
//! shows held by a runtime's init. The state machine alone, with no kernel:
//! discovery (`discovery.rs`) does the opening and reporting around it.
//!
//! A namespace is known while a file names it or `/proc` shows it; it is
//! new the first time either does, and gone when neither does any more. A
//! file name that comes to hold another namespace is the old one's file no
//! more. The node's own namespace is never reported unless asked for.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::netlink::NsId;

/// What a change to the tracker means for the enforcers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Appeared(NsId),
    Gone(NsId),
}

/// Where a namespace was seen.
#[derive(Debug, Default)]
struct Entry {
    files: HashSet<PathBuf>,
    in_proc: bool,
}

#[derive(Debug)]
pub struct Tracker {
    own: NsId,
    include_host: bool,
    entries: HashMap<NsId, Entry>,
    /// Which namespace each known file is (the files of `entries`).
    by_path: HashMap<PathBuf, NsId>,
}

impl Tracker {
    pub fn new(own: NsId, include_host: bool) -> Tracker {
        Tracker {
            own,
            include_host,
            entries: HashMap::new(),
            by_path: HashMap::new(),
        }
    }

    fn left_out(&self, id: NsId) -> bool {
        id == self.own && !self.include_host
    }

    /// Whether `path` is known as a namespace's file.
    pub fn knows(&self, path: &Path) -> bool {
        self.by_path.contains_key(path)
    }

    /// `path` is (now) namespace `id`.
    pub fn file_is(&mut self, path: &Path, id: NsId) -> Vec<Change> {
        if self.left_out(id) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        match self.by_path.insert(path.to_path_buf(), id) {
            Some(old) if old == id => return changes,
            // The name now holds another namespace (a pod deleted and one
            // created under its name between two looks).
            Some(old) => changes.extend(self.unfile(old, path)),
            None => {}
        }
        let new = !self.entries.contains_key(&id);
        self.entries
            .entry(id)
            .or_default()
            .files
            .insert(path.to_path_buf());
        if new {
            changes.push(Change::Appeared(id));
        }
        changes
    }

    /// `path` is gone (or no longer a namespace).
    pub fn file_gone(&mut self, path: &Path) -> Vec<Change> {
        match self.by_path.remove(path) {
            Some(id) => self.unfile(id, path).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// A full look at the directories: the known files not among
    /// `present` are gone.
    pub fn files_present(&mut self, present: &HashSet<PathBuf>) -> Vec<Change> {
        let vanished: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        vanished.iter().flat_map(|p| self.file_gone(p)).collect()
    }

    /// `/proc` now shows `held` (the namespaces of runtime inits): the
    /// known ones are marked, the ones `/proc` alone kept are gone, and
    /// the returned candidates are new ones to open and then
    /// [`Tracker::adopt`] (or not, when they could not be opened).
    pub fn proc_snapshot(&mut self, held: &HashSet<NsId>) -> (Vec<NsId>, Vec<Change>) {
        let mut candidates = Vec::new();
        for id in held {
            if let Some(e) = self.entries.get_mut(id) {
                e.in_proc = true;
            } else if !self.left_out(*id) {
                candidates.push(*id);
            }
        }
        let mut gone = Vec::new();
        for (id, e) in &mut self.entries {
            if e.in_proc && !held.contains(id) {
                e.in_proc = false;
                if e.files.is_empty() {
                    gone.push(*id);
                }
            }
        }
        candidates.sort();
        gone.sort();
        let changes = gone
            .into_iter()
            .map(|id| {
                self.entries.remove(&id);
                Change::Gone(id)
            })
            .collect();
        (candidates, changes)
    }

    /// A candidate of [`Tracker::proc_snapshot`], opened: it appears.
    pub fn adopt(&mut self, id: NsId) -> Option<Change> {
        if self.left_out(id) || self.entries.contains_key(&id) {
            return None;
        }
        self.entries.insert(
            id,
            Entry {
                files: HashSet::new(),
                in_proc: true,
            },
        );
        Some(Change::Appeared(id))
    }

    /// `path` no longer names `id`: gone when nothing else holds it.
    fn unfile(&mut self, id: NsId, path: &Path) -> Option<Change> {
        let e = self.entries.get_mut(&id)?;
        if e.files.remove(path) && e.files.is_empty() && !e.in_proc {
            self.entries.remove(&id);
            return Some(Change::Gone(id));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(ino: u64) -> NsId {
        NsId { dev: 4, ino }
    }

    const OWN: u64 = 1;

    fn tracker() -> Tracker {
        Tracker::new(ns(OWN), false)
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{name}"))
    }

    #[test]
    fn a_namespace_appears_with_its_first_file_and_goes_with_its_last() {
        let mut t = tracker();
        assert_eq!(t.file_is(&p("a"), ns(10)), vec![Change::Appeared(ns(10))]);
        assert_eq!(t.file_is(&p("a"), ns(10)), vec![], "seen again");
        assert_eq!(t.file_is(&p("a2"), ns(10)), vec![], "a second name");
        assert!(t.knows(&p("a2")));
        assert_eq!(t.file_gone(&p("a")), vec![]);
        assert_eq!(t.file_gone(&p("a2")), vec![Change::Gone(ns(10))]);
        assert_eq!(t.file_gone(&p("a2")), vec![], "gone once");
    }

    #[test]
    fn a_name_that_comes_to_hold_another_namespace() {
        let mut t = tracker();
        t.file_is(&p("cni-1"), ns(10));
        assert_eq!(
            t.file_is(&p("cni-1"), ns(11)),
            vec![Change::Gone(ns(10)), Change::Appeared(ns(11))]
        );
    }

    #[test]
    fn the_nodes_own_namespace_only_when_asked_for() {
        let mut t = tracker();
        assert_eq!(t.file_is(&p("host"), ns(OWN)), vec![]);
        let (candidates, _) = t.proc_snapshot(&HashSet::from([ns(OWN)]));
        assert!(candidates.is_empty());
        let mut t = Tracker::new(ns(OWN), true);
        assert_eq!(
            t.file_is(&p("host"), ns(OWN)),
            vec![Change::Appeared(ns(OWN))]
        );
    }

    #[test]
    fn proc_alone_keeps_a_namespace_for_as_long_as_it_shows_it() {
        let mut t = tracker();
        let (candidates, gone) = t.proc_snapshot(&HashSet::from([ns(20), ns(21)]));
        assert_eq!((candidates, gone), (vec![ns(20), ns(21)], vec![]));
        assert_eq!(t.adopt(ns(20)), Some(Change::Appeared(ns(20))));
        // ns(21) could not be opened: not adopted, a candidate again.
        let (candidates, gone) = t.proc_snapshot(&HashSet::from([ns(20), ns(21)]));
        assert_eq!((candidates, gone), (vec![ns(21)], vec![]));
        let (_, gone) = t.proc_snapshot(&HashSet::new());
        assert_eq!(gone, vec![Change::Gone(ns(20))]);
    }

    #[test]
    fn a_namespace_with_a_file_outlives_its_processes_and_the_reverse() {
        let mut t = tracker();
        t.file_is(&p("cni-2"), ns(30));
        let (candidates, _) = t.proc_snapshot(&HashSet::from([ns(30)]));
        assert!(candidates.is_empty(), "known by its file");
        let (_, gone) = t.proc_snapshot(&HashSet::new());
        assert!(gone.is_empty(), "its file still names it");
        t.proc_snapshot(&HashSet::from([ns(30)]));
        assert_eq!(t.file_gone(&p("cni-2")), vec![], "a process still holds it");
        let (_, gone) = t.proc_snapshot(&HashSet::new());
        assert_eq!(gone, vec![Change::Gone(ns(30))]);
    }

    #[test]
    fn a_rescan_forgets_the_files_no_longer_there() {
        let mut t = tracker();
        t.file_is(&p("a"), ns(40));
        t.file_is(&p("b"), ns(41));
        let present = HashSet::from([p("b")]);
        assert_eq!(t.files_present(&present), vec![Change::Gone(ns(40))]);
        assert!(t.knows(&p("b")) && !t.knows(&p("a")));
    }
}
