//! What mtuvisor needs to know about one link (decoded in `wire.rs`).

use super::LinkName;

/// The kind of a link, as far as enforcement cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    /// Any other kind, as the kernel names it (escaped).
    Other(String),
}

/// Where the other end of a veth is: its ifindex *in its own namespace* and,
/// when that namespace is not ours, the nsid our namespace knows it by
/// (IFLA_LINK_NETNSID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRef {
    pub ifindex: u32,
    pub netnsid: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// As the kernel holds it: any bytes (a pod names its links).
    pub name: LinkName,
    pub kind: LinkKind,
    pub mtu: u32,
    /// IFLA_MASTER: the bridge this link is enslaved to.
    pub master: Option<u32>,
    /// Only set for veths.
    pub peer: Option<PeerRef>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind == LinkKind::Bridge
    }
}
