//! An in-memory stand-in for rtnetlink, for unit tests of everything above
//! the [`NetOps`] seam: links in "our" namespace plus far ends elsewhere,
//! every MTU set recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use super::{
    DefaultRoute, Family, Link, LinkKind, Listed, NetOps, NetlinkError, Netns, PeerChange, PeerRef,
    PeerState, RouteTable, SetTiming, Undecodable, MAIN_TABLE,
};

/// Links in "our" namespace plus far ends elsewhere, keyed by the
/// ifindex of their end here. Records every MTU set.
#[derive(Default)]
pub(crate) struct FakeNet {
    pub(crate) links: Mutex<BTreeMap<u32, Link>>,
    pub(crate) remote: Mutex<HashMap<u32, u32>>,
    pub(crate) sets: Mutex<Vec<(String, u32)>>,
    /// Calls of `adjust_peer`: each is a read before any set.
    pub(crate) peer_lookups: Mutex<usize>,
    /// Sandbox namespace files and the nsid ours has for each.
    pub(crate) sandboxes: Mutex<HashMap<PathBuf, i32>>,
    /// What `outer_mtu` answers: (interface, ifindex, MTU); `None`: no
    /// default route.
    pub(crate) outer: Mutex<Option<(String, u32, u32)>>,
    /// Host ends whose far end is in a fenced namespace (the node's or
    /// another pod's).
    pub(crate) fenced: Mutex<HashSet<u32>>,
    /// Host ends whose far end's namespace cannot be found.
    pub(crate) unresolved: Mutex<HashSet<u32>>,
    /// Host ends whose far end's namespace the last search came too early
    /// for: the next lookup finds it.
    pub(crate) unsearched: Mutex<HashSet<u32>>,
    /// What a dump returns besides the links: messages it cannot decode.
    pub(crate) undecodable: Mutex<Vec<Undecodable>>,
}

impl FakeNet {
    pub(crate) fn add(&self, link: Link) {
        self.links.lock().unwrap().insert(link.index, link);
    }
    pub(crate) fn mtu(&self, index: u32) -> u32 {
        self.links.lock().unwrap()[&index].mtu
    }
    pub(crate) fn remote_mtu(&self, host: u32) -> u32 {
        self.remote.lock().unwrap()[&host]
    }
    pub(crate) fn sets(&self) -> Vec<(String, u32)> {
        std::mem::take(&mut *self.sets.lock().unwrap())
    }
}

/// The default route is `outer`'s: through its interface, with its MTU as
/// the route's `mtu` (an interface not among the links is made up at that
/// MTU).
impl RouteTable for FakeNet {
    async fn default_routes(&self, family: Family) -> Result<Vec<DefaultRoute>, NetlinkError> {
        let outer = self.outer.lock().unwrap().clone();
        Ok(match (family, outer) {
            (Family::Ipv4, Some((_, ifindex, mtu))) => vec![DefaultRoute {
                table: MAIN_TABLE,
                unicast: true,
                priority: 0,
                oifs: vec![ifindex],
                mtu: Some(mtu),
            }],
            _ => Vec::new(),
        })
    }

    async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        if let Some(link) = self.links.lock().unwrap().get(&ifindex) {
            return Ok(Some(link.clone()));
        }
        let outer = self.outer.lock().unwrap().clone();
        Ok(outer
            .filter(|(_, i, _)| *i == ifindex)
            .map(|(name, i, mtu)| link(i, &name, LinkKind::Other("veth".into()), mtu)))
    }
}

impl NetOps for FakeNet {
    async fn links(&self, max: usize) -> Result<Listed, NetlinkError> {
        let all: Vec<Link> = self.links.lock().unwrap().values().cloned().collect();
        let left_out = all.len().saturating_sub(max);
        Ok(Listed {
            links: all.into_iter().take(max).collect(),
            left_out,
            undecodable: self.undecodable.lock().unwrap().clone(),
        })
    }
    fn set_mtu(
        &self,
        link: &Link,
        mtu: u32,
    ) -> impl std::future::Future<Output = Result<SetTiming, NetlinkError>> + Send + 'static {
        // Made at once, as the real client queues at once.
        let result = {
            let mut links = self.links.lock().unwrap();
            match links.get_mut(&link.index) {
                None => Err(NetlinkError::NoSuchLink {
                    name: link.name.to_string(),
                    ifindex: link.index,
                }),
                Some(l) => {
                    l.mtu = mtu;
                    self.sets.lock().unwrap().push((link.name.to_string(), mtu));
                    Ok(SetTiming::at(std::time::Instant::now()))
                }
            }
        };
        std::future::ready(result)
    }
    async fn far_end_here(&self, host: &Link, peer_ifindex: u32) -> Result<Link, NetlinkError> {
        *self.peer_lookups.lock().unwrap() += 1;
        self.links
            .lock()
            .unwrap()
            .get(&peer_ifindex)
            .cloned()
            .ok_or_else(|| NetlinkError::NoSuchLink {
                name: format!("peer of {}", host.name),
                ifindex: peer_ifindex,
            })
    }

    async fn adjust_far_end_in<F>(
        &self,
        nsid: i32,
        host: &Link,
        _peer_ifindex: u32,
        desired: F,
    ) -> Result<PeerChange, NetlinkError>
    where
        F: Fn(u32) -> Option<u32> + Copy + Send + Sync + 'static,
    {
        *self.peer_lookups.lock().unwrap() += 1;
        if self.fenced.lock().unwrap().contains(&host.index) {
            return Err(NetlinkError::Fenced {
                path: "/proc/1/ns/net".into(),
            });
        }
        if self.unsearched.lock().unwrap().remove(&host.index) {
            return Err(NetlinkError::NsidNotSearchedYet {
                nsid,
                retry_in: std::time::Duration::from_millis(50),
            });
        }
        if self.unresolved.lock().unwrap().contains(&host.index) {
            return Err(NetlinkError::NsidNotFound {
                nsid,
                searched: "/run/netns".into(),
                hint: String::new(),
            });
        }
        let mut remote = self.remote.lock().unwrap();
        let mtu = remote.get_mut(&host.index).expect("remote peer");
        let before = *mtu;
        let set_to = desired(before);
        if let Some(m) = set_to {
            *mtu = m;
            self.sets
                .lock()
                .unwrap()
                .push((format!("eth0@{}", host.name), m));
        }
        Ok(PeerChange {
            peer: PeerState {
                name: "eth0".into(),
                ifindex: 2,
                mtu: before,
                netns: Netns::Path("/run/netns/c".into()),
            },
            set_to,
        })
    }

    async fn learn_netns(&self, path: &std::path::Path) -> Result<Option<i32>, NetlinkError> {
        Ok(self.sandboxes.lock().unwrap().get(path).copied())
    }
}

pub(crate) fn link(index: u32, name: &str, kind: LinkKind, mtu: u32) -> Link {
    Link {
        index,
        name: name.into(),
        kind,
        mtu,
        master: None,
        peer: None,
    }
}

pub(crate) fn veth(
    index: u32,
    name: &str,
    mtu: u32,
    master: Option<u32>,
    peer: u32,
    netnsid: Option<i32>,
) -> Link {
    Link {
        master,
        peer: Some(PeerRef {
            ifindex: peer,
            netnsid,
        }),
        ..link(index, name, LinkKind::Veth, mtu)
    }
}
