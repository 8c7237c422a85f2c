//! What mtuvisor needs to know about one link, parsed from an rtnetlink message.

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// The kind of a link, as far as enforcement cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
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
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    /// IFLA_MASTER: the bridge this link is enslaved to.
    pub master: Option<u32>,
    /// Only set for veths.
    pub peer: Option<PeerRef>,
}

impl Link {
    /// Parses an RTM_NEWLINK message. Messages without a name or MTU (which the
    /// kernel never sends for a real link) yield `None`.
    pub fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut name = None;
        let mut mtu = None;
        let mut master = None;
        let mut kind = LinkKind::Other(String::new());
        let mut link = None;
        let mut netnsid = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                LinkAttribute::Controller(m) if *m != 0 => master = Some(*m),
                LinkAttribute::Link(l) => link = Some(*l),
                LinkAttribute::LinkNetNsId(id) if *id >= 0 => netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = match k {
                                InfoKind::Bridge => LinkKind::Bridge,
                                InfoKind::Veth => LinkKind::Veth,
                                other => LinkKind::Other(other.to_string()),
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        let peer = match (&kind, link) {
            (LinkKind::Veth, Some(ifindex)) if ifindex != 0 => Some(PeerRef { ifindex, netnsid }),
            _ => None,
        };
        Some(Link {
            index: msg.header.index,
            name: name?,
            kind,
            mtu: mtu?,
            master,
            peer,
        })
    }

    pub fn is_bridge(&self) -> bool {
        self.kind == LinkKind::Bridge
    }
}
