//! The state and the decisions: which managed link gets which MTU.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::policy::{BridgeMatcher, MtuRule};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::netlink::{
    Link, NetOps, NetlinkError, Netns, PeerChange, PeerRef, SetTiming, Undecodable,
};

/// How many requests a sweep keeps in flight: MTU sets in our namespace,
/// or checks of far ends in other namespaces.
const IN_FLIGHT: usize = 8;

/// Clamps of ports sent and not answered yet, in one namespace: past this,
/// the loop reads no more notifications until some are answered (they
/// wait in the kernel's socket buffer, which overruns into a sweep), so
/// that a pod making veths by the thousand holds a bounded number of
/// requests in the agent.
pub const MAX_CLAMPS_IN_FLIGHT: usize = 64;

/// Links known in one namespace, of every kind. A Linux bridge takes at
/// most 1,024 ports, and a CI pod a few dozen containers; a namespace with
/// more links than this is someone's experiment or an attack on a node
/// agent, and what it holds past this is left alone (one warning, and a
/// gauge), so that one pod cannot make the agent hold or sweep without
/// bound.
pub const MAX_LINKS: usize = 4096;

/// A far end that cannot be found (no namespace has its nsid) is normal for
/// a moment: a container's namespace goes before its host veth does. Only
/// one still missing this long after the first try is worth a warning.
const UNRESOLVED_QUIET: Duration = Duration::from_secs(30);

/// A port whose far end is out of reach: since when, and whether that was
/// warned about.
#[derive(Debug, Clone, Copy)]
struct OutOfReach {
    since: Instant,
    warned: bool,
}

/// What mtuvisor lowered, so that it can raise it back (and only that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owned {
    /// A link in our namespace, by ifindex.
    Link(u32),
    /// The far end of the veth with this ifindex in our namespace, wherever
    /// that end lives now: keyed by our end because the far end's ifindex
    /// and name change when dockerd moves it into a container.
    PeerOf(u32),
}

/// What one call did: the engine's outcome, which the loop alone turns
/// into metrics (one writer per fact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Links looked at (for a sweep: every managed link).
    pub managed: usize,
    /// MTUs set, far ends included.
    pub changed: usize,
    pub failed: usize,
}

/// One clamp of a port (its host end, and its far end while that is still
/// in our namespace), stage by stage: the notification read from the
/// socket, the decision, the requests queued, sent to the kernel and
/// acknowledged (those of the end answered last), and the loop taking the
/// answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClampStages {
    /// The port's (host end's) ifindex.
    pub ifindex: u32,
    pub read: Instant,
    pub decided: Instant,
    pub last: SetTiming,
    pub done: Instant,
}

impl ClampStages {
    /// The stages in order, as (name, duration).
    pub fn split(&self) -> [(&'static str, Duration); 5] {
        [
            ("loop", self.decided.saturating_duration_since(self.read)),
            (
                "decide",
                self.last.queued.saturating_duration_since(self.decided),
            ),
            (
                "queue",
                self.last.sent.saturating_duration_since(self.last.queued),
            ),
            (
                "kernel",
                self.last.acked.saturating_duration_since(self.last.sent),
            ),
            ("wake", self.done.saturating_duration_since(self.last.acked)),
        ]
    }

    /// From the notification read to both ends clamped.
    pub fn total(&self) -> Duration {
        self.done.saturating_duration_since(self.read)
    }
}

/// A clamp's requests, answered: what [`Engine::on_landed`] finishes.
pub struct Landed {
    /// The port as decided on.
    port: Link,
    /// Its far end, here, as decided on, when it was set too.
    far: Option<Link>,
    /// The MTU asked for each end and the kernel's answer.
    host_set: Option<(u32, Result<SetTiming, NetlinkError>)>,
    far_set: Option<(u32, Result<SetTiming, NetlinkError>)>,
    read: Instant,
    decided: Instant,
}

impl PassReport {
    fn merge(&mut self, other: PassReport) {
        self.managed += other.managed;
        self.changed += other.changed;
        self.failed += other.failed;
    }

    fn add(&mut self, outcome: Outcome) {
        self.managed += 1;
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Changed => self.changed += 1,
            Outcome::Failed => self.failed += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Changed,
    Failed,
}

pub struct Engine<N> {
    net: N,
    bridges: BridgeMatcher,
    target: u32,
    /// Every link in our namespace, from the last dump plus notifications.
    links: HashMap<u32, Link>,
    /// MTU before mtuvisor lowered it.
    original: HashMap<Owned, u32>,
    /// The peer each managed veth had when its far end was last checked;
    /// a far end in another namespace sends us no notifications, so it is
    /// checked when this changes, and on every sweep.
    peer_checked: HashMap<u32, PeerRef>,
    /// MTUs we set whose own notification has not come back yet. A
    /// notification queued before our change still shows the old MTU;
    /// acting on it would set the MTU again and take the RTNL lock for
    /// nothing, while dockerd is racing to move the peer.
    pending: HashMap<u32, u32>,
    /// The managed bridges among `links`, kept as links come and go (the
    /// loop asks after every notification whether there is one).
    managed_bridges: HashSet<u32>,
    /// The interfaces the namespace's default routes leave by (the pod's
    /// uplink): never managed, whatever they are named or enslaved to.
    uplinks: HashSet<u32>,
    /// Links past [`MAX_LINKS`] at the last count, not tracked.
    left_out: usize,
    /// Ports whose far end is in a namespace that must never be changed
    /// (see `netlink::Fence`), with the peer that was refused: not tried
    /// again until the peer changes.
    fenced: HashMap<u32, PeerRef>,
    /// Ports whose far end, in another namespace, is out of reach (not
    /// found, or may not be entered), since when: their host end is held
    /// at its MTU. Lowered alone it would drop every frame the container's
    /// end, still at Docker's 1500, sends above the target, where a
    /// matched pair leaves the oversize packets to the bridge's forwarding
    /// path, which answers with "fragmentation needed" inside the pod.
    out_of_reach: HashMap<u32, OutOfReach>,
    /// When a far end that was not looked for yet may be (the earliest
    /// such), until the enforcer takes it.
    retry_at: Option<Instant>,
    /// Uplinks already warned about.
    warned_uplinks: HashSet<u32>,
    /// Links whose last message could not be decoded: left alone (not
    /// among `links`), each reported once.
    undecodable: HashSet<u32>,
    /// Undecodable messages not yet reported, until the enforcer takes
    /// them.
    fresh_undecodable: Vec<Undecodable>,
    /// Clamps answered since the enforcer last took them, each with where
    /// its time went: every one a settle lands, not only the first.
    timed: Vec<ClampStages>,
    /// Clamps of ports sent and not answered yet (at most
    /// [`MAX_CLAMPS_IN_FLIGHT`]): the loop goes on reading notifications
    /// while the kernel answers.
    /// (In a mutex only to keep the engine `Sync`: every use has `&mut`,
    /// so it is never locked but by [`Engine::has_room`].)
    in_flight: std::sync::Mutex<FuturesUnordered<BoxFuture<'static, Landed>>>,
}

impl<N: NetOps> Engine<N> {
    pub fn new(net: N, bridges: BridgeMatcher, target: u32) -> Engine<N> {
        Engine {
            net,
            bridges,
            target,
            links: HashMap::new(),
            original: HashMap::new(),
            peer_checked: HashMap::new(),
            pending: HashMap::new(),
            managed_bridges: HashSet::new(),
            uplinks: HashSet::new(),
            left_out: 0,
            fenced: HashMap::new(),
            out_of_reach: HashMap::new(),
            retry_at: None,
            warned_uplinks: HashSet::new(),
            undecodable: HashSet::new(),
            fresh_undecodable: Vec::new(),
            timed: Vec::new(),
            in_flight: std::sync::Mutex::new(FuturesUnordered::new()),
        }
    }

    fn flights(&mut self) -> &mut FuturesUnordered<BoxFuture<'static, Landed>> {
        self.in_flight.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another clamp may be sent before one is answered.
    pub fn has_room(&self) -> bool {
        let flights = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        flights.len() < MAX_CLAMPS_IN_FLIGHT
    }

    /// The next clamp answered; never, while none is in flight.
    pub async fn next_landed(&mut self) -> Landed {
        match self.flights().next().await {
            Some(landed) => landed,
            None => std::future::pending().await,
        }
    }

    /// Waits for every clamp in flight and finishes it.
    pub async fn settle(&mut self) -> PassReport {
        let mut report = PassReport::default();
        while let Some(landed) = self.flights().next().await {
            report.merge(self.on_landed(landed).await);
        }
        report
    }

    /// Links past [`MAX_LINKS`] at the last count (not managed).
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    /// The interfaces the default routes leave by: never managed. Links
    /// that become managed by the change are brought to the target.
    pub async fn set_uplinks(&mut self, uplinks: impl IntoIterator<Item = u32>) -> PassReport {
        let uplinks: HashSet<u32> = uplinks.into_iter().collect();
        if uplinks == self.uplinks {
            return PassReport::default();
        }
        self.uplinks = uplinks;
        self.recount_managed_bridges();
        self.note_uplink_bridges();
        self.enforce_all().await
    }

    /// One warning per uplink that is a bridge named like Docker's (a pod
    /// that routes through its own eth0 enslaved to a "docker0").
    fn note_uplink_bridges(&mut self) {
        for index in &self.uplinks {
            let Some(l) = self.links.get(index) else {
                continue;
            };
            if l.is_bridge() && self.bridges.matches(&l.name) && self.warned_uplinks.insert(*index)
            {
                warn!(link = %l.name, ifindex = l.index, "this namespace's default route leaves by a bridge named like Docker's; it and its ports are left alone");
            }
        }
    }

    pub fn target(&self) -> u32 {
        self.target
    }

    pub(crate) fn net(&self) -> &N {
        &self.net
    }

    /// Whether a managed bridge (Docker's, or one of `bridge_patterns`)
    /// exists here.
    pub fn has_managed_bridge(&self) -> bool {
        !self.managed_bridges.is_empty()
    }

    /// Records `link` as it now is; returns what was known before. A new
    /// link past [`MAX_LINKS`] is only counted (`None` and not kept: the
    /// caller must not act on it).
    fn remember(&mut self, link: Link) -> Result<Option<Link>, ()> {
        if self.links.len() >= MAX_LINKS && !self.links.contains_key(&link.index) {
            self.left_out += 1;
            return Err(());
        }
        if self.is_managed_bridge(&link) {
            self.managed_bridges.insert(link.index);
        } else {
            self.managed_bridges.remove(&link.index);
        }
        Ok(self.links.insert(link.index, link))
    }

    /// Records a link notification without acting on it (MTU enforcement
    /// off: the links are still followed, to know when Docker is here).
    pub fn observe(&mut self, link: Link) {
        let _ = self.remember(link);
    }

    /// Re-reads every link without acting on any.
    pub async fn refresh(&mut self) -> Result<(), NetlinkError> {
        let listed = self.net.links(MAX_LINKS).await?;
        self.left_out = listed.left_out;
        self.links = listed.links.into_iter().map(|l| (l.index, l)).collect();
        let before = std::mem::take(&mut self.undecodable);
        for u in listed.undecodable {
            match u.ifindex {
                Some(i) => {
                    self.undecodable.insert(i);
                    if !before.contains(&i) {
                        self.fresh_undecodable.push(u);
                    }
                }
                None => self.fresh_undecodable.push(u),
            }
        }
        self.recount_managed_bridges();
        self.note_uplink_bridges();
        Ok(())
    }

    /// Which links are managed bridges, from scratch (after a dump, or
    /// when the names Docker uses changed).
    fn recount_managed_bridges(&mut self) {
        self.managed_bridges = self
            .links
            .values()
            .filter(|l| self.is_managed_bridge(l))
            .map(|l| l.index)
            .collect();
    }

    /// Re-reads every link and brings every managed one to the target.
    pub async fn sweep(&mut self) -> Result<PassReport, NetlinkError> {
        // What is in flight lands first: the re-read then sees it.
        let settled = self.settle().await;
        self.refresh().await?;
        let links = &self.links;
        self.original.retain(|owned, _| match owned {
            Owned::Link(i) | Owned::PeerOf(i) => links.contains_key(i),
        });
        self.peer_checked.retain(|i, _| links.contains_key(i));
        self.fenced.retain(|i, _| links.contains_key(i));
        self.out_of_reach.retain(|i, _| links.contains_key(i));
        self.pending.clear();
        let mut report = self.enforce_all().await;
        report.merge(settled);
        if report.changed > 0 || report.failed > 0 {
            info!(
                managed = report.managed,
                changed = report.changed,
                failed = report.failed,
                "sweep done"
            );
        } else {
            debug!(managed = report.managed, "sweep done, nothing to change");
        }
        Ok(report)
    }

    /// Moves the target and brings the managed links along: down always, up
    /// only where mtuvisor lowered them.
    pub async fn set_target(&mut self, target: u32) -> PassReport {
        if target == self.target {
            return PassReport::default();
        }
        // The caller says why the target moved (the outer MTU changed).
        self.target = target;
        self.enforce_all().await
    }

    /// Takes the bridge names of Docker's networks; manages any new ones.
    pub async fn set_docker_bridges(&mut self, names: HashSet<String>) -> PassReport {
        if !self.bridges.set_docker_bridges(names) {
            return PassReport::default();
        }
        self.recount_managed_bridges();
        self.enforce_all().await
    }

    /// A notification that could not be decoded: the link it is about is
    /// left alone (forgotten until it is read whole again), and reported
    /// once.
    pub fn on_undecodable(&mut self, u: Undecodable) {
        let Some(index) = u.ifindex else {
            self.fresh_undecodable.push(u);
            return;
        };
        let known = self.undecodable.contains(&index);
        self.on_link_removed(index);
        self.undecodable.insert(index);
        if !known {
            self.fresh_undecodable.push(u);
        }
    }

    /// Undecodable messages met since the last call, each once.
    pub fn take_undecodable(&mut self) -> Vec<Undecodable> {
        std::mem::take(&mut self.fresh_undecodable)
    }

    /// Reacts to RTM_NEWLINK, read now.
    pub async fn on_link_changed(&mut self, link: Link) -> PassReport {
        self.on_link_changed_at(link, Instant::now()).await
    }

    /// Reacts to RTM_NEWLINK, read from the socket at `read`. A port's
    /// clamp is sent and left in flight ([`Engine::next_landed`] brings
    /// its answers back): the loop goes on reading while the kernel
    /// answers, so that a burst of new veths is served as fast as the
    /// kernel takes the requests, not one port after the other.
    pub async fn on_link_changed_at(&mut self, mut link: Link, read: Instant) -> PassReport {
        self.undecodable.remove(&link.index);
        if let Some(&set) = self.pending.get(&link.index) {
            if link.mtu == set {
                self.pending.remove(&link.index);
            } else {
                link.mtu = set;
            }
        }
        let Ok(previous) = self.remember(link.clone()) else {
            return PassReport::default();
        };
        if self.uplinks.contains(&link.index) {
            self.note_uplink_bridges();
        }
        let mut report = PassReport::default();
        if self.is_managed_bridge(&link) {
            report.add(self.enforce_link(&link).await);
            let newly_managed = previous.is_none_or(|p| !self.is_managed_bridge(&p));
            if newly_managed {
                for port in self.ports_of(link.index) {
                    report.merge(self.enforce_port(&port, true).await);
                }
            }
        } else if self.is_managed_port(&link) {
            report = self.start_port(&link, read).await;
        } else if let Some(host) = self.managed_port_whose_peer_is(&link) {
            // The far end of a managed veth, still in our namespace, as the
            // kernel says it is now: only a change it needs is sent.
            if self
                .rule(Owned::PeerOf(host.index))
                .desired(link.mtu)
                .is_some()
            {
                self.launch(host, Some(link), read);
            }
        }
        report
    }

    /// A port's notification: its clamp sent (both ends while the far end
    /// is here), or, for a far end already elsewhere, done now.
    async fn start_port(&mut self, port: &Link, read: Instant) -> PassReport {
        let checked = self.peer_checked.get(&port.index).copied();
        match port.peer {
            // Not a veth, or its far end checked where it is now: our end.
            None => self.launch(port.clone(), None, read),
            Some(peer) if checked == Some(peer) => self.launch(port.clone(), None, read),
            // dockerd just moved a far end we checked here into the
            // container. A move keeps the MTU, so it is not looked at again
            // now: entering the container's namespace waits behind
            // dockerd's own RTNL work (tens of ms per container under load).
            // The periodic sweep still checks it there.
            Some(peer)
                if checked.is_some_and(|c| c.netnsid.is_none()) && peer.netnsid.is_some() =>
            {
                self.peer_checked.insert(port.index, peer);
                self.launch(port.clone(), None, read);
            }
            Some(peer) => match self.local_peer(port) {
                // Both ends here: dockerd is about to move the far end into
                // the container, which holds the RTNL lock for tens of
                // milliseconds. Both requests go out at once so that they
                // reach the kernel before the move does.
                Some(far) => {
                    self.peer_checked.insert(port.index, peer);
                    self.launch(port.clone(), Some(far), read);
                }
                // The far end is elsewhere already: it first, and the host
                // end only once it is reached (see `out_of_reach`).
                None => return self.enforce_port(port, false).await,
            },
        }
        PassReport::default()
    }

    /// Sends what `port` (and `far`, its far end here) need and leaves the
    /// answers in flight. The MTUs asked for count as the links' own until
    /// their notifications come back (`pending`): a notification queued
    /// before the change, or a second one of the same port, sends nothing
    /// again.
    fn launch(&mut self, port: Link, far: Option<Link>, read: Instant) {
        let decided = Instant::now();
        let host_mtu = self.rule(Owned::Link(port.index)).desired(port.mtu);
        let far_mtu = far
            .as_ref()
            .and_then(|f| self.rule(Owned::PeerOf(port.index)).desired(f.mtu));
        if host_mtu.is_none() && far_mtu.is_none() {
            return;
        }
        let net = &self.net;
        let host_set = host_mtu.map(|mtu| (mtu, net.set_mtu(&port, mtu)));
        let far_set = far
            .as_ref()
            .zip(far_mtu)
            .map(|(f, mtu)| (mtu, net.set_mtu(f, mtu)));
        if let Some(mtu) = host_mtu {
            self.pending.insert(port.index, mtu);
        }
        if let Some((f, mtu)) = far.as_ref().zip(far_mtu) {
            self.pending.insert(f.index, mtu);
        }
        self.flights().push(Box::pin(async move {
            let (host_set, far_set) = futures::join!(
                async move {
                    match host_set {
                        Some((mtu, answer)) => Some((mtu, answer.await)),
                        None => None,
                    }
                },
                async move {
                    match far_set {
                        Some((mtu, answer)) => Some((mtu, answer.await)),
                        None => None,
                    }
                }
            );
            Landed {
                far: far.filter(|_| far_set.is_some()),
                port,
                host_set,
                far_set,
                read,
                decided,
            }
        }));
    }

    /// A clamp answered: what it changed is remembered (and logged), what
    /// failed is no longer taken as set.
    pub async fn on_landed(&mut self, landed: Landed) -> PassReport {
        let done = Instant::now();
        let Landed {
            port,
            far,
            host_set,
            far_set,
            read,
            decided,
        } = landed;
        let mut report = PassReport::default();
        let mut last: Option<SetTiming> = None;
        let mut later = |t: &SetTiming| {
            if last.is_none_or(|l| t.acked > l.acked) {
                last = Some(*t);
            }
        };
        if let Some((mtu, result)) = host_set {
            if let Ok(t) = &result {
                later(t);
            }
            report.add(self.finish_sent(&port, mtu, result.map(|_| ())));
        }
        if let (Some(far), Some((mtu, result))) = (far, far_set) {
            if let Ok(t) = &result {
                later(t);
            }
            if result.as_ref().is_err_and(NetlinkError::is_gone) {
                // Moved into the container before the request got there:
                // look for it where our end says it is now.
                self.pending.remove(&far.index);
                let host = self.links.get(&port.index).cloned();
                if let Some(host) = host {
                    report.add(self.enforce_peer(&host).await);
                }
            } else if !self.links.contains_key(&port.index) {
                // The veth was deleted while the answer was on its way (its
                // removal already forgot it): nothing to remember of it, or
                // a link the pod makes next with the same index would be
                // taken as clamped.
                self.pending.remove(&far.index);
            } else {
                if result.is_err() {
                    self.pending.remove(&far.index);
                    self.peer_checked.remove(&port.index);
                }
                let far_index = far.index;
                let change = result.map(|_| PeerChange::new(far, Netns::Own, Some(mtu)));
                report.add(self.finish_adjust_peer(&port, change));
                if !self.links.contains_key(&far_index) {
                    // Moved into the container (or deleted) meanwhile: its
                    // notification here will not come back.
                    self.pending.remove(&far_index);
                }
            }
        }
        if let Some(last) = last.filter(|_| report.changed > 0) {
            self.timed.push(ClampStages {
                ifindex: port.index,
                read,
                decided,
                last,
                done,
            });
        }
        report
    }

    /// The clamps answered since the last call, each with its stages.
    pub fn take_timed(&mut self) -> Vec<ClampStages> {
        std::mem::take(&mut self.timed)
    }

    /// Finishes a change of a link here sent earlier: remembered when it
    /// was made, forgotten as set when it failed.
    fn finish_sent(&mut self, link: &Link, mtu: u32, result: Result<(), NetlinkError>) -> Outcome {
        if result.is_err() && self.pending.get(&link.index) == Some(&mtu) {
            self.pending.remove(&link.index);
            if let Some(cached) = self.links.get_mut(&link.index) {
                cached.mtu = link.mtu;
            }
        }
        if result.is_ok() && !self.links.contains_key(&link.index) {
            // Gone since: nothing to remember.
            return Outcome::Unchanged;
        }
        self.finish_link(link, result.map(|()| Some(mtu)))
    }

    /// When a sweep should run again because a far end could not be looked
    /// for yet, once: the caller schedules it.
    pub fn take_retry_at(&mut self) -> Option<Instant> {
        self.retry_at.take()
    }

    /// Reacts to RTM_DELLINK.
    pub fn on_link_removed(&mut self, ifindex: u32) {
        self.links.remove(&ifindex);
        self.managed_bridges.remove(&ifindex);
        self.original.remove(&Owned::Link(ifindex));
        self.original.remove(&Owned::PeerOf(ifindex));
        self.peer_checked.remove(&ifindex);
        self.pending.remove(&ifindex);
        self.fenced.remove(&ifindex);
        self.out_of_reach.remove(&ifindex);
        self.warned_uplinks.remove(&ifindex);
        self.undecodable.remove(&ifindex);
    }

    async fn enforce_all(&mut self) -> PassReport {
        // A whole pass starts with nothing in flight: a clamp sent for the
        // old target or bridges must not land after this pass's own.
        let mut report = self.settle().await;
        // Bridges first: lowering a port auto-adjusts a bridge whose MTU was
        // never set explicitly, and then we would not know its original.
        let mut bridges: Vec<Link> = self
            .links
            .values()
            .filter(|l| self.is_managed_bridge(l))
            .cloned()
            .collect();
        bridges.sort_by_key(|l| l.index);
        for bridge in &bridges {
            report.add(self.enforce_link(bridge).await);
        }
        let mut ports: Vec<Link> = self
            .links
            .values()
            .filter(|l| self.is_managed_port(l))
            .cloned()
            .collect();
        ports.sort_by_key(|l| l.index);
        // Far ends first: a host end waits for its far end (see `out_of_reach`).
        // A far end in another namespace costs a thread; check several at
        // once rather than one after another.
        let jobs: Vec<(Link, MtuRule)> = ports
            .iter()
            .filter(|p| p.peer.is_some() && !self.is_fenced(p))
            .map(|p| (p.clone(), self.rule(Owned::PeerOf(p.index))))
            .collect();
        let net = &self.net;
        let results = in_flight(jobs, |port, rule| async move {
            net.adjust_peer(&port, move |mtu| rule.desired(mtu)).await
        })
        .await;
        for (port, result) in results {
            report.add(self.finish_adjust_peer(&port, result));
        }
        // Each request waits for the kernel's RTNL lock on a setter thread:
        // keep several in flight rather than one after another.
        let jobs: Vec<(Link, MtuRule)> = ports
            .iter()
            .filter(|p| !self.out_of_reach.contains_key(&p.index))
            .map(|p| (p.clone(), self.rule(Owned::Link(p.index))))
            .collect();
        let this = &*self;
        let results = in_flight(jobs, |port, rule| async move {
            this.set_if_needed(&port, rule).await
        })
        .await;
        for (port, result) in results {
            report.add(self.finish_link(&port, result));
        }
        report
    }

    /// Enforces a port and, when it may have changed, its far end.
    async fn enforce_port(&mut self, port: &Link, force_peer: bool) -> PassReport {
        let report_of = |outcomes: &[Outcome]| {
            let mut report = PassReport::default();
            for o in outcomes {
                report.add(*o);
            }
            report
        };
        let Some(peer) = port.peer else {
            return report_of(&[self.enforce_link(port).await]);
        };
        let checked = self.peer_checked.get(&port.index).copied();
        if !force_peer && checked == Some(peer) {
            return report_of(&[self.enforce_link(port).await]);
        }
        // dockerd just moved a far end we checked here into the container.
        // A move keeps the MTU, so it is not looked at again now: entering
        // the container's namespace waits behind dockerd's own RTNL work
        // (tens of ms per container under load) and would hold up the next
        // veths' clamps. The periodic sweep still checks it there.
        if !force_peer && checked.is_some_and(|c| c.netnsid.is_none()) && peer.netnsid.is_some() {
            self.peer_checked.insert(port.index, peer);
            return report_of(&[self.enforce_link(port).await]);
        }
        match self.local_peer(port) {
            // Both ends here: dockerd is about to move the far end into the
            // container, which holds the RTNL lock for tens of milliseconds.
            // Both requests go out at once so that they reach the kernel
            // before the move does.
            Some(far) => {
                let (host_rule, far_rule) = (
                    self.rule(Owned::Link(port.index)),
                    self.rule(Owned::PeerOf(port.index)),
                );
                let (host_res, far_res) = tokio::join!(
                    self.set_if_needed(port, host_rule),
                    self.set_if_needed(&far, far_rule)
                );
                let host = self.finish_link(port, host_res);
                let far = if far_res.as_ref().is_err_and(NetlinkError::is_gone) {
                    self.enforce_peer(port).await
                } else {
                    self.peer_checked.insert(port.index, peer);
                    let change = far_res.map(|set_to| PeerChange::new(far, Netns::Own, set_to));
                    self.finish_adjust_peer(port, change)
                };
                report_of(&[host, far])
            }
            // The far end is elsewhere already: it first, and the host end
            // only once it is reached (see `out_of_reach`).
            None => {
                let far = self.enforce_peer(port).await;
                let host = self.enforce_host_end(port).await;
                report_of(&[host, far])
            }
        }
    }

    fn rule(&self, owned: Owned) -> MtuRule {
        MtuRule {
            target: self.target,
            original: self.original.get(&owned).copied(),
        }
    }

    /// Sets `link`'s MTU if `rule` wants a change; returns the MTU set.
    async fn set_if_needed(&self, link: &Link, rule: MtuRule) -> Result<Option<u32>, NetlinkError> {
        let Some(mtu) = rule.desired(link.mtu) else {
            return Ok(None);
        };
        self.net.set_mtu(link, mtu).await.map(|_| Some(mtu))
    }

    fn finish_link(&mut self, link: &Link, result: Result<Option<u32>, NetlinkError>) -> Outcome {
        match result {
            Ok(None) => Outcome::Unchanged,
            Ok(Some(mtu)) => {
                info!(link = %link.name, ifindex = link.index, netns = %"self", from_mtu = link.mtu, to_mtu = mtu, "set MTU");
                self.note_set(Owned::Link(link.index), link.index, link.mtu, mtu);
                Outcome::Changed
            }
            Err(e) => report_failure(&e, &link.name.to_string(), link.index),
        }
    }

    /// Remembers a change made in our namespace.
    fn note_set(&mut self, owned: Owned, ifindex: u32, from: u32, to: u32) {
        self.record(owned, from, to);
        self.pending.insert(ifindex, to);
        if let Some(cached) = self.links.get_mut(&ifindex) {
            cached.mtu = to;
        }
    }

    /// A port's own MTU, unless its far end is out of reach.
    async fn enforce_host_end(&mut self, port: &Link) -> Outcome {
        if self.out_of_reach.contains_key(&port.index) {
            Outcome::Unchanged
        } else {
            self.enforce_link(port).await
        }
    }

    async fn enforce_link(&mut self, link: &Link) -> Outcome {
        let result = self
            .set_if_needed(link, self.rule(Owned::Link(link.index)))
            .await;
        self.finish_link(link, result)
    }

    fn record(&mut self, owned: Owned, from: u32, to: u32) {
        if to < from {
            self.original.entry(owned).or_insert(from);
        } else if self.original.get(&owned) == Some(&to) {
            self.original.remove(&owned);
        }
    }

    fn is_managed_bridge(&self, link: &Link) -> bool {
        link.is_bridge() && self.bridges.matches(&link.name) && !self.uplinks.contains(&link.index)
    }

    fn is_managed_port(&self, link: &Link) -> bool {
        !self.uplinks.contains(&link.index)
            && link
                .master
                .and_then(|m| self.links.get(&m))
                .is_some_and(|bridge| self.is_managed_bridge(bridge))
    }

    fn ports_of(&self, bridge: u32) -> Vec<Link> {
        self.links
            .values()
            .filter(|l| l.master == Some(bridge))
            .cloned()
            .collect()
    }
}

/// Runs `op` for every job, `IN_FLIGHT` at a time; results in the order
/// they complete.
async fn in_flight<R, Fut>(
    jobs: Vec<(Link, MtuRule)>,
    op: impl Fn(Link, MtuRule) -> Fut,
) -> Vec<(Link, R)>
where
    Fut: std::future::Future<Output = R>,
{
    futures::stream::iter(jobs)
        .map(|(link, rule)| {
            let done = op(link.clone(), rule);
            async move { (link, done.await) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

fn report_failure(e: &NetlinkError, what: &str, ifindex: u32) -> Outcome {
    if e.is_gone() {
        // Deleted between the notification and our request: normal churn.
        debug!(link = %what, ifindex, "link vanished before its MTU could be checked");
        Outcome::Unchanged
    } else if e.is_timeout() {
        // Said once, naming the namespace, by its quarantine; it is not
        // ready meanwhile.
        debug!(link = %what, ifindex, error = %e, "not in time; left alone for a while");
        Outcome::Failed
    } else if e
        .wanted_capability()
        .is_some_and(|cap| crate::caps::has(cap) == Some(false))
    {
        // Said once at start, with the grant to add (`caps::check`), and
        // `/healthz` is not ready: not again for each link and sweep.
        debug!(link = %what, ifindex, error = %e, "cannot enforce MTU without a capability");
        Outcome::Failed
    } else {
        warn!(link = %what, ifindex, error = %e, "cannot enforce MTU; will retry on the next sweep");
        Outcome::Failed
    }
}

mod peers;
#[cfg(test)]
mod tests;
