//! The far ends of managed veths: where they are, whether they may be
//! changed, and bringing them to the rule, in this namespace or another.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::{report_failure, Engine, OutOfReach, Outcome, Owned, PassReport, UNRESOLVED_QUIET};
use crate::netlink::{Link, LinkKind, NetOps, NetlinkError, Netns, PeerChange};

impl<N: NetOps> Engine<N> {
    /// A container started or connected (Docker told us its sandbox): learns
    /// the nsid our namespace has for it and checks the far ends there.
    pub async fn on_sandbox(&mut self, container: &str, netns: &std::path::Path) -> PassReport {
        match self.net.learn_netns(netns).await {
            Ok(Some(nsid)) => self.enforce_peers_in(nsid).await,
            Ok(None) => {
                debug!(%container, netns = %netns.display(), "no veth of ours in this sandbox");
                PassReport::default()
            }
            Err(e) => {
                debug!(%container, error = %e, "cannot look into the sandbox");
                PassReport::default()
            }
        }
    }

    /// Checks the far ends of managed veths that live in the namespace our
    /// namespace calls `nsid` (a container that just started or connected),
    /// unless they were already checked there.
    pub async fn enforce_peers_in(&mut self, nsid: i32) -> PassReport {
        let mut ports: Vec<Link> = self
            .links
            .values()
            .filter(|l| {
                // Already checked where it is now: the netlink path got there first.
                l.peer.is_some_and(|p| {
                    p.netnsid == Some(nsid) && self.peer_checked.get(&l.index) != Some(&p)
                }) && self.is_managed_port(l)
            })
            .cloned()
            .collect();
        ports.sort_by_key(|l| l.index);
        let mut report = PassReport::default();
        for port in &ports {
            report.add(self.enforce_peer(port).await);
            // Held while its far end was out of reach.
            report.add(self.enforce_host_end(port).await);
        }
        report
    }

    /// The far end of veth `host` when it is in our namespace and known.
    ///
    /// The kernel announces the first end of a new pair before the second
    /// exists, so that first notification names no peer (`ip monitor` shows
    /// `@NONE`). dockerd's container end is that first end, and nothing
    /// announces it again before the move: a far end that names no peer is
    /// taken on our end's word.
    pub(super) fn local_peer(&self, host: &Link) -> Option<Link> {
        let peer = host.peer.filter(|p| p.netnsid.is_none())?;
        let far = self.links.get(&peer.ifindex)?;
        let points_back = far.kind == LinkKind::Veth
            && far
                .peer
                .is_none_or(|p| p.ifindex == host.index && p.netnsid.is_none());
        points_back.then(|| far.clone())
    }

    pub(super) async fn enforce_peer(&mut self, host: &Link) -> Outcome {
        let Some(peer_ref) = host.peer else {
            return Outcome::Unchanged;
        };
        if self.is_fenced(host) {
            return Outcome::Unchanged;
        }
        let rule = self.rule(Owned::PeerOf(host.index));
        let desired = move |mtu| rule.desired(mtu);
        let mut result = self.net.adjust_peer(host, desired).await;
        if peer_ref.netnsid.is_none() && result.as_ref().is_err_and(NetlinkError::is_gone) {
            // dockerd moved the far end into the container while we were
            // reaching for it here: look again at where our end says it is.
            if let Ok(Some(fresh)) = self.net.link(host.index).await {
                if fresh.peer.is_some_and(|p| p.netnsid.is_some()) {
                    let _ = self.remember(fresh.clone());
                    result = self.net.adjust_peer(&fresh, desired).await;
                }
            }
        }
        self.finish_adjust_peer(host, result)
    }

    pub(super) fn finish_adjust_peer(
        &mut self,
        host: &Link,
        result: Result<PeerChange, NetlinkError>,
    ) -> Outcome {
        if result.as_ref().is_err_and(NetlinkError::is_out_of_reach) {
            self.out_of_reach.entry(host.index).or_insert(OutOfReach {
                since: Instant::now(),
                warned: false,
            });
        } else {
            self.out_of_reach.remove(&host.index);
        }
        match result {
            Ok(change) => {
                if let Some(peer_ref) = host.peer {
                    self.peer_checked.insert(host.index, peer_ref);
                }
                let Some(mtu) = change.set_to else {
                    return Outcome::Unchanged;
                };
                info!(
                    link = %change.peer.name,
                    ifindex = change.peer.ifindex,
                    netns = %change.peer.netns,
                    peer_of = %host.name,
                    from_mtu = change.peer.mtu,
                    to_mtu = mtu,
                    "set MTU"
                );
                let owned = Owned::PeerOf(host.index);
                if change.peer.netns == Netns::Own {
                    self.note_set(owned, change.peer.ifindex, change.peer.mtu, mtu);
                } else {
                    self.record(owned, change.peer.mtu, mtu);
                }
                Outcome::Changed
            }
            Err(e @ NetlinkError::Fenced { .. }) => {
                if let Some(peer) = host.peer {
                    if self.fenced.insert(host.index, peer).is_none() {
                        warn!(link = %host.name, ifindex = host.index, error = %e, "not a Docker veth; left alone");
                    }
                }
                Outcome::Unchanged
            }
            Err(NetlinkError::NsidNotSearchedYet { nsid, retry_in }) => {
                let at = Instant::now() + retry_in;
                self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
                if self.first_warning(host.index) {
                    // Not looked for in UNRESOLVED_QUIET: the node's
                    // namespaces could not be listed in time, again and
                    // again.
                    warn!(link = %host.name, ifindex = host.index, nsid, listing_deadline = ?crate::netlink::DEADLINE, for_at_least = ?UNRESOLVED_QUIET, "cannot reach the far end of this veth: no listing of the node's network namespaces ended in time (too many processes in /proc?); will retry");
                    Outcome::Failed
                } else {
                    debug!(link = %host.name, ifindex = host.index, nsid, ?retry_in, "far end in a namespace not looked for yet; again after the next search");
                    Outcome::Unchanged
                }
            }
            Err(e @ NetlinkError::NsidNotFound { .. }) => {
                if self.first_warning(host.index) {
                    warn!(link = %host.name, ifindex = host.index, error = %e, "cannot reach the far end of this veth; will retry on the next sweep");
                    Outcome::Failed
                } else {
                    // Its container just exited (its namespace goes before
                    // the host end), or was already reported.
                    debug!(link = %host.name, ifindex = host.index, error = %e, "far end not found");
                    Outcome::Unchanged
                }
            }
            Err(e) => report_failure(&e, &format!("peer of {}", host.name), host.index),
        }
    }

    /// True once, when the far end of `index` has been out of reach for
    /// [`UNRESOLVED_QUIET`]: the moment to say so.
    fn first_warning(&mut self, index: u32) -> bool {
        self.out_of_reach.get_mut(&index).is_some_and(|o| {
            let due = !o.warned && o.since.elapsed() >= UNRESOLVED_QUIET;
            o.warned |= due;
            due
        })
    }

    pub(super) fn is_fenced(&self, host: &Link) -> bool {
        host.peer.is_some() && self.fenced.get(&host.index) == host.peer.as_ref()
    }

    pub(super) fn managed_port_whose_peer_is(&self, link: &Link) -> Option<Link> {
        let host = self
            .links
            .get(&link.peer.filter(|p| p.netnsid.is_none())?.ifindex)?;
        let points_back = self
            .local_peer(host)
            .is_some_and(|far| far.index == link.index);
        (points_back && self.is_managed_port(host)).then(|| host.clone())
    }
}
