//! rtnetlink requests: the real implementation of [`NetOps`].

use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{LinkAttribute, LinkExtentMask, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
    route::RouteMessage,
    RouteNetlinkMessage,
};
use rtnetlink::{Handle, LinkUnspec};
use tokio::sync::Mutex;

use super::dump::Dumper;
use super::{
    in_netns, DefaultRoute, Family, Link, LinkKind, Listed, MtuSetter, NetOps, NetlinkError, Netns,
    NetnsResolver, PeerChange, RouteTable,
};
use futures::StreamExt;

/// A request socket in the namespace where it was opened. The socket
/// closes when the last clone is dropped (an open socket would keep a
/// deleted namespace alive).
#[derive(Clone)]
pub struct Rtnl {
    handle: Handle,
    _conn: std::sync::Arc<crate::AbortOnDrop>,
    dumper: std::sync::Arc<Mutex<Dumper>>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace and drives it
    /// on the current tokio runtime (entered, when the thread is not one of
    /// its own).
    pub fn connect() -> Result<Rtnl, NetlinkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Socket {
                context: String::new(),
                source,
            })?;
        let conn = std::sync::Arc::new(crate::AbortOnDrop(tokio::spawn(conn)));
        Ok(Rtnl {
            handle,
            _conn: conn,
            dumper: std::sync::Arc::new(Mutex::new(Dumper::open()?)),
        })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        Ok(self.links_at_most(usize::MAX).await?.links)
    }

    /// Every link, read as the dump streams in, keeping the first `max`:
    /// a namespace with links by the thousand costs their count, not their
    /// messages.
    pub async fn links_at_most(&self, max: usize) -> Result<Listed, NetlinkError> {
        let mut listed = Listed::default();
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.dumper
            .lock()
            .await
            .dump(
                RouteNetlinkMessage::GetLink(request),
                "listing links",
                |m| {
                    let RouteNetlinkMessage::NewLink(msg) = m else {
                        return;
                    };
                    match Link::from_message(&msg) {
                        Some(link) if listed.links.len() < max => listed.links.push(link),
                        Some(_) => listed.left_out += 1,
                        None => {}
                    }
                },
            )
            .await?;
        Ok(listed)
    }

    /// One link by index; `None` when it does not exist.
    pub async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        let mut stream = self.handle.link().get().match_index(ifindex).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().and_then(Link::from_message)),
            Err(rtnetlink::Error::NetlinkError(e)) if super::is_enodev(&e) => Ok(None),
            Err(source) => Err(NetlinkError::Request {
                op: format!("reading link ifindex {ifindex}"),
                source,
            }),
        }
    }

    // RTM_SETLINK by ifindex only. IFLA_TARGET_NETNSID is deliberately never
    // used: current kernels treat it as "move the link there", not "address
    // the link there".
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| super::set_mtu_failed(&link.name, link.index, mtu, source))
    }

    /// The default routes (prefix length 0) of one family in every table,
    /// read as the dump streams in: a namespace with routes by the
    /// thousand costs their count, not their messages.
    pub async fn default_routes(&self, family: Family) -> Result<Vec<DefaultRoute>, NetlinkError> {
        let mut query = RouteMessage::default();
        query.header.address_family = family.address_family();
        let mut defaults = Vec::new();
        self.dumper
            .lock()
            .await
            .dump(
                RouteNetlinkMessage::GetRoute(query),
                &format!("listing {family} routes"),
                |m| {
                    if let RouteNetlinkMessage::NewRoute(route) = m {
                        defaults.extend(DefaultRoute::from_message(&route));
                    }
                },
            )
            .await?;
        Ok(defaults)
    }

    /// The nsid this namespace knows the namespace `fd` by (RTM_GETNSID with
    /// NETNSA_FD, as `ip link` does to print `link-netns NAME`).
    pub async fn nsid_of(&self, fd: BorrowedFd<'_>) -> Result<Option<i32>, NetlinkError> {
        let mut msg = NsidMessage::default();
        msg.attributes = vec![NsidAttribute::Fd(fd.as_raw_fd() as u32)];
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let op = || "querying a namespace's nsid (RTM_GETNSID)".to_string();
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|source| NetlinkError::Request { op: op(), source })?;
        let mut nsid = None;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    for attr in m.attributes {
                        if let NsidAttribute::Id(id) = attr {
                            nsid = (id >= 0).then_some(id);
                        }
                    }
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NetlinkError::Request {
                        op: op(),
                        source: rtnetlink::Error::NetlinkError(e),
                    })
                }
                _ => {}
            }
        }
        Ok(nsid)
    }

    /// Reads veth `peer_index` in the namespace this socket belongs to and
    /// checks that it is the far end of `host`.
    pub async fn far_end_here(
        &self,
        host: &Link,
        peer_index: u32,
        netns: &str,
    ) -> Result<Link, NetlinkError> {
        let peer = self
            .link(peer_index)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink {
                name: format!("peer of {}", host.name),
                ifindex: peer_index,
            })?;
        let mismatch = |why: String| NetlinkError::PeerMismatch {
            host: host.name.clone(),
            ifindex: host.index,
            why,
        };
        if peer.kind != LinkKind::Veth {
            return Err(mismatch(format!(
                "{} in {netns} is a {:?}",
                peer.name, peer.kind
            )));
        }
        if peer.peer.map(|p| p.ifindex) != Some(host.index) {
            return Err(mismatch(format!(
                "{} in {netns} points elsewhere",
                peer.name
            )));
        }
        Ok(peer)
    }
}

/// The client the engine uses: a request socket in our namespace, plus the
/// resolver that finds the namespaces veth peers were moved into.
pub struct RtnlClient {
    rtnl: Rtnl,
    setter: MtuSetter,
    resolver: Mutex<NetnsResolver>,
}

impl RtnlClient {
    /// `rtnl` and `setter` must have been opened in the same namespace.
    pub fn new(rtnl: Rtnl, setter: MtuSetter, resolver: NetnsResolver) -> RtnlClient {
        RtnlClient {
            rtnl,
            setter,
            resolver: Mutex::new(resolver),
        }
    }
}

impl RouteTable for Rtnl {
    async fn default_routes(&self, family: Family) -> Result<Vec<DefaultRoute>, NetlinkError> {
        Rtnl::default_routes(self, family).await
    }

    async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        Rtnl::link(self, ifindex).await
    }
}

impl RouteTable for RtnlClient {
    async fn default_routes(&self, family: Family) -> Result<Vec<DefaultRoute>, NetlinkError> {
        self.rtnl.default_routes(family).await
    }

    async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        self.rtnl.link(ifindex).await
    }
}

impl NetOps for RtnlClient {
    async fn links(&self, max: usize) -> Result<Listed, NetlinkError> {
        self.rtnl.links_at_most(max).await
    }

    async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        self.setter.set(link.index, &link.name, mtu).await
    }

    async fn far_end_here(&self, host: &Link, peer_ifindex: u32) -> Result<Link, NetlinkError> {
        self.rtnl.far_end_here(host, peer_ifindex, "self").await
    }

    async fn adjust_far_end_in<F>(
        &self,
        nsid: i32,
        host: &Link,
        peer_ifindex: u32,
        desired: F,
    ) -> Result<PeerChange, NetlinkError>
    where
        F: Fn(u32) -> Option<u32> + Copy + Send + Sync + 'static,
    {
        let (file, path) = self.resolver.lock().await.open(nsid, &self.rtnl).await?;
        let host = host.clone();
        let label = path.display().to_string();
        in_netns(file, label.clone(), move |rtnl| async move {
            let far = rtnl.far_end_here(&host, peer_ifindex, &label).await?;
            let set_to = desired(far.mtu);
            if let Some(mtu) = set_to {
                rtnl.set_mtu(&far, mtu).await?;
            }
            Ok(PeerChange::new(far, Netns::Path(label), set_to))
        })
        .await
    }

    async fn learn_netns(&self, path: &std::path::Path) -> Result<Option<i32>, NetlinkError> {
        let (file, _) = super::open_ns_file(path).ok_or_else(|| NetlinkError::Netns {
            path: path.display().to_string(),
            message: "cannot open it as a network namespace file".into(),
        })?;
        let nsid = self.rtnl.nsid_of(std::os::fd::AsFd::as_fd(&file)).await?;
        if let Some(id) = nsid {
            self.resolver.lock().await.remember(id, path.to_path_buf());
        }
        Ok(nsid)
    }
}
