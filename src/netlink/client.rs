//! rtnetlink requests over the border's one socket (`socket.rs`), each
//! with a deadline: [`Rtnl`] from the runtime thread, [`RtnlSync`] from a
//! thread inside another namespace, and [`RtnlClient`], the real
//! implementation of [`NetOps`].

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;

use super::socket::AsyncSocket;
use super::wire::{Item, Request, Undecodable};
use super::{
    in_netns, DefaultRoute, Family, Link, LinkKind, Listed, MtuSetter, NetOps, NetlinkError, Netns,
    NetnsResolver, PeerChange, Quarantine, RouteTable, SetTiming, Socket, DEADLINE,
};

/// A request socket in the namespace where it was opened, driven by the
/// runtime; one request at a time. The socket closes when the last clone
/// is dropped (an open socket would keep a deleted namespace alive).
#[derive(Clone)]
pub struct Rtnl {
    socket: Arc<Mutex<AsyncSocket>>,
}

/// A socket for requests, opened in the calling thread's namespace.
fn request_socket() -> Result<Socket, NetlinkError> {
    Socket::open(0, None).map_err(|source| NetlinkError::Socket {
        context: String::new(),
        source,
    })
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace, driven by
    /// the current tokio runtime.
    pub fn connect() -> Result<Rtnl, NetlinkError> {
        Rtnl::from_socket(request_socket()?)
    }

    /// A socket opened elsewhere (a thread inside a pod's namespace),
    /// driven by the current tokio runtime from now on.
    pub fn from_socket(socket: Socket) -> Result<Rtnl, NetlinkError> {
        let socket = AsyncSocket::new(socket).map_err(|source| NetlinkError::Socket {
            context: " (registering it with the runtime)".into(),
            source,
        })?;
        Ok(Rtnl {
            socket: Arc::new(Mutex::new(socket)),
        })
    }

    async fn exchange(
        &self,
        mut request: Request,
        op: &(dyn Fn() -> String + Sync),
        each: &mut (dyn FnMut(Result<Item, Undecodable>) + Send),
    ) -> Result<(), NetlinkError> {
        let mut socket = self.socket.lock().await;
        let deadline = Instant::now() + DEADLINE;
        socket.exchange(&mut request, op, deadline, each).await
    }

    /// Every link, read as the dump streams in, keeping the first `max`:
    /// a namespace with links by the thousand costs their count, not their
    /// messages. A link whose message cannot be decoded is listed as such.
    pub async fn links_at_most(&self, max: usize) -> Result<Listed, NetlinkError> {
        let mut listed = Listed::default();
        self.exchange(
            Request::dump_links(),
            &|| "listing links".into(),
            &mut |item| keep_link(&mut listed, max, item),
        )
        .await?;
        Ok(listed)
    }

    /// One link by index; `None` when it does not exist.
    pub async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        let op = move || format!("reading link ifindex {ifindex}");
        let mut items = Vec::new();
        let result = self
            .exchange(Request::get_link(ifindex), &op, &mut |i| items.push(i))
            .await;
        one_link(result, items, &op)
    }

    /// Sets a link's MTU from the runtime thread (the enforcer's own go
    /// through [`MtuSetter`]).
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        let (name, index) = (link.name, link.index);
        let op = move || super::set_mtu_op(&name, index, mtu);
        self.exchange(Request::set_mtu(index, mtu), &op, &mut |_| {})
            .await
            .map_err(|e| super::set_mtu_failed(&name, index, e))
    }

    /// The default routes (prefix length 0) of one family in every table,
    /// read as the dump streams in.
    pub async fn default_routes(&self, family: Family) -> Result<Vec<DefaultRoute>, NetlinkError> {
        let mut defaults = Vec::new();
        let mut undecodable = None;
        self.exchange(
            Request::dump_routes(family),
            &|| format!("listing {family} routes"),
            &mut |item| match item {
                Ok(Item::DefaultRoute(r)) => defaults.push(r),
                Ok(_) => {}
                Err(u) => undecodable = Some(u),
            },
        )
        .await?;
        // A default route that cannot be read could be the one the kernel
        // uses: no answer is better than a wrong one.
        match undecodable {
            Some(u) => Err(NetlinkError::Undecodable {
                op: format!("listing {family} routes"),
                why: u.to_string(),
            }),
            None => Ok(defaults),
        }
    }

    /// The nsid this namespace knows the namespace `fd` by (RTM_GETNSID
    /// with NETNSA_FD, as `ip link` does to print `link-netns NAME`).
    pub async fn nsid_of(&self, fd: BorrowedFd<'_>) -> Result<Option<i32>, NetlinkError> {
        let op = || "querying a namespace's nsid (RTM_GETNSID)".to_string();
        let mut nsid = Ok(None);
        self.exchange(
            Request::get_nsid(fd.as_raw_fd()),
            &op,
            &mut |item| match item {
                Ok(Item::Nsid(id)) => nsid = Ok(id),
                Ok(_) => {}
                Err(u) => nsid = Err(u),
            },
        )
        .await?;
        nsid.map_err(|u| NetlinkError::Undecodable {
            op: op(),
            why: u.to_string(),
        })
    }

    /// Reads veth `peer_index` in the namespace this socket belongs to and
    /// checks that it is the far end of `host`.
    pub async fn far_end_here(
        &self,
        host: &Link,
        peer_index: u32,
        netns: &str,
    ) -> Result<Link, NetlinkError> {
        far_end(host, self.link(peer_index).await?, peer_index, netns)
    }
}

/// The same requests from a thread inside another namespace (a far end
/// in a container), blocking that thread, each within [`DEADLINE`].
pub struct RtnlSync {
    socket: Socket,
}

impl RtnlSync {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<RtnlSync, NetlinkError> {
        Ok(RtnlSync {
            socket: request_socket()?,
        })
    }

    pub fn link(&mut self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        let op = move || format!("reading link ifindex {ifindex}");
        let mut items = Vec::new();
        let result = self.socket.exchange(
            &mut Request::get_link(ifindex),
            &op,
            Instant::now() + DEADLINE,
            &mut |i| items.push(i),
        );
        one_link(result, items, &op)
    }

    pub fn set_mtu(&mut self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        let (name, index) = (link.name, link.index);
        self.socket
            .exchange(
                &mut Request::set_mtu(index, mtu),
                &|| super::set_mtu_op(&name, index, mtu),
                Instant::now() + DEADLINE,
                &mut |_| {},
            )
            .map_err(|e| super::set_mtu_failed(&name, index, e))
    }

    pub fn far_end_here(
        &mut self,
        host: &Link,
        peer_index: u32,
        netns: &str,
    ) -> Result<Link, NetlinkError> {
        let peer = self.link(peer_index)?;
        far_end(host, peer, peer_index, netns)
    }
}

/// One item of a link dump into `listed`.
fn keep_link(listed: &mut Listed, max: usize, item: Result<Item, Undecodable>) {
    match item {
        Ok(Item::Link(link)) if listed.links.len() < max => listed.links.push(link),
        Ok(Item::Link(_)) => listed.left_out += 1,
        Ok(_) => {}
        Err(u) => listed.undecodable.push(u),
    }
}

/// The answer to a request for one link: ENODEV is `None`; a reply that
/// cannot be decoded is an error for that link.
fn one_link(
    result: Result<(), NetlinkError>,
    items: Vec<Result<Item, Undecodable>>,
    op: &dyn Fn() -> String,
) -> Result<Option<Link>, NetlinkError> {
    match result {
        Err(NetlinkError::Refused { errno, .. }) if errno == nix::libc::ENODEV => return Ok(None),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    for item in items {
        match item {
            Ok(Item::Link(link)) => return Ok(Some(link)),
            Ok(_) => {}
            Err(u) => {
                return Err(NetlinkError::Undecodable {
                    op: op(),
                    why: u.to_string(),
                })
            }
        }
    }
    Ok(None)
}

/// `peer`, read as link `peer_index` in `netns`, checked to be a veth that
/// points back at `host`.
fn far_end(
    host: &Link,
    peer: Option<Link>,
    peer_index: u32,
    netns: &str,
) -> Result<Link, NetlinkError> {
    let peer = peer.ok_or_else(|| NetlinkError::NoSuchLink {
        name: format!("peer of {}", host.name),
        ifindex: peer_index,
    })?;
    let mismatch = |why: String| NetlinkError::PeerMismatch {
        host: host.name.to_string(),
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

/// The client the engine uses: a request socket in our namespace, the MTU
/// setter, and the resolver that finds the namespaces veth peers were
/// moved into; every request goes through the namespace's [`Quarantine`].
pub struct RtnlClient {
    rtnl: Rtnl,
    setter: MtuSetter,
    resolver: Mutex<NetnsResolver>,
    quarantine: Quarantine,
}

impl RtnlClient {
    /// `rtnl` and `setter` must have been opened in the same namespace,
    /// whose work `quarantine` watches.
    pub fn new(
        rtnl: Rtnl,
        setter: MtuSetter,
        resolver: NetnsResolver,
        quarantine: Quarantine,
    ) -> RtnlClient {
        RtnlClient {
            rtnl,
            setter,
            resolver: Mutex::new(resolver),
            quarantine,
        }
    }

    /// Runs `work` unless the namespace is quarantined, and records how it
    /// ended.
    async fn guarded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, NetlinkError>>,
    ) -> Result<T, NetlinkError> {
        self.quarantine.admit()?;
        let result = work.await;
        self.quarantine.record(&result);
        result
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
        self.guarded(self.rtnl.default_routes(family)).await
    }

    async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        self.guarded(self.rtnl.link(ifindex)).await
    }
}

impl NetOps for RtnlClient {
    async fn links(&self, max: usize) -> Result<Listed, NetlinkError> {
        self.guarded(self.rtnl.links_at_most(max)).await
    }

    fn set_mtu(
        &self,
        link: &Link,
        mtu: u32,
    ) -> impl std::future::Future<Output = Result<SetTiming, NetlinkError>> + Send + 'static {
        // As `guarded`, with the request queued now.
        let quarantine = self.quarantine.clone();
        let answer = quarantine
            .admit()
            .map(|()| self.setter.set(link.index, link.name, mtu));
        async move {
            let result = answer?.await;
            quarantine.record(&result);
            result
        }
    }

    async fn far_end_here(&self, host: &Link, peer_ifindex: u32) -> Result<Link, NetlinkError> {
        self.guarded(self.rtnl.far_end_here(host, peer_ifindex, "self"))
            .await
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
        self.quarantine.admit()?;
        let found = self.resolver.lock().await.open(nsid, &self.rtnl).await;
        self.quarantine.record(&found);
        let (file, path) = found?;
        let host = host.clone();
        let label = path.display().to_string();
        // The thread's deadline is the pod's: a far end is in a container
        // of this pod, whatever namespace that is.
        let result = in_netns(file, label.clone(), Some(&self.quarantine), move |rtnl| {
            let far = rtnl.far_end_here(&host, peer_ifindex, &label)?;
            let set_to = desired(far.mtu);
            if let Some(mtu) = set_to {
                rtnl.set_mtu(&far, mtu)?;
            }
            Ok(PeerChange::new(far, Netns::Path(label), set_to))
        })
        .await;
        self.quarantine.record(&result);
        result
    }

    async fn learn_netns(&self, path: &std::path::Path) -> Result<Option<i32>, NetlinkError> {
        let (file, _) = super::open_ns_file(path).ok_or_else(|| NetlinkError::Netns {
            path: path.display().to_string(),
            message: "cannot open it as a network namespace file".into(),
        })?;
        let nsid = self
            .guarded(self.rtnl.nsid_of(std::os::fd::AsFd::as_fd(&file)))
            .await?;
        if let Some(id) = nsid {
            self.resolver.lock().await.remember(id, path.to_path_buf());
        }
        Ok(nsid)
    }
}
