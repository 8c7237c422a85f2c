//! Everything that speaks rtnetlink: the link model, a client, network
//! namespace resolution and the link/route monitor.
//!
//! The border with what a pod controls is `wire.rs` (every message
//! decoded, nowhere else) and `socket.rs` (every request, dump and
//! notification read, each with a deadline); see their module docs.

mod client;
#[cfg(test)]
pub(crate) mod fake;
mod link;
mod monitor;
mod netns;
mod quarantine;
mod route;
mod setter;
mod socket;
pub mod wire;

use std::future::Future;
use std::time::{Duration, Instant};

pub use client::{Rtnl, RtnlClient, RtnlSync};
pub use link::{Link, LinkKind, PeerRef};
pub use monitor::{NetEvent, NetMonitor, RECV_BUFFER_OWN, RECV_BUFFER_POD};
pub(crate) use netns::NETNS_THREADS;
pub use netns::{
    in_netns, open_ns_file, open_proc_ns, unpinned, Fence, NetnsResolver, NsFile, NsId,
};
pub use quarantine::Quarantine;
pub use route::{DefaultRoute, Family, MAIN_TABLE};
pub use setter::MtuSetter;
pub(crate) use setter::WORKERS as SETTER_THREADS;
pub use socket::{Socket, DEADLINE};
pub use wire::{printable, LinkName, Undecodable};

/// Errors of netlink requests, each naming the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket{context}: {source}")]
    Socket {
        context: String,
        source: std::io::Error,
    },
    #[error("{op} failed: {} (errno {errno})", nix::errno::Errno::from_raw(*errno).desc())]
    Refused { op: String, errno: i32 },
    #[error("{op} failed: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("{op} got no complete answer within {after:?}; given up")]
    TimedOut { op: String, after: Duration },
    #[error("{op} failed: the answer cannot be decoded ({why})")]
    Undecodable { op: String, why: String },
    #[error(
        "network namespace {netns}: left alone for {retry_in:?} after work there did not end \
         in time"
    )]
    Quarantined { netns: String, retry_in: Duration },
    #[error("link {name} (ifindex {ifindex}) no longer exists")]
    NoSuchLink { name: String, ifindex: u32 },
    #[error("network namespace {path}: {message}")]
    Netns { path: String, message: String },
    #[error("network namespace {path}: cannot enter it (setns refused: needs CAP_SYS_ADMIN)")]
    NetnsDenied { path: String },
    #[error("no network namespace with nsid {nsid} among {searched}; {hint}")]
    NsidNotFound {
        nsid: i32,
        searched: String,
        /// What to do: grant SYS_PTRACE when /proc could not be read,
        /// else add the namespace's directory to `netns_dirs`.
        hint: String,
    },
    #[error(
        "no network namespace with nsid {nsid} was known at the last search, \
         less than a second ago; searching again in {retry_in:?}"
    )]
    NsidNotSearchedYet {
        nsid: i32,
        retry_in: std::time::Duration,
    },
    #[error(
        "its far end is in {path}, the node's network namespace or another pod's, \
         where nothing is ever changed (a pod's own link on a bridge named like Docker's?)"
    )]
    Fenced { path: String },
    #[error("peer of {host} (ifindex {ifindex}) is not the veth we expected: {why}")]
    PeerMismatch {
        host: String,
        ifindex: u32,
        why: String,
    },
}

impl NetlinkError {
    /// True when the kernel said the link is gone (ENODEV), which is a normal
    /// race with whoever deletes links, not a failure.
    pub fn is_gone(&self) -> bool {
        match self {
            NetlinkError::NoSuchLink { .. } => true,
            NetlinkError::Refused { errno, .. } => *errno == nix::libc::ENODEV,
            _ => false,
        }
    }

    /// The capability whose absence made the kernel refuse (EPERM): a
    /// link request wants NET_ADMIN, entering a namespace SYS_ADMIN.
    pub fn wanted_capability(&self) -> Option<u32> {
        match self {
            NetlinkError::Refused { errno, .. } if *errno == nix::libc::EPERM => {
                Some(crate::caps::NET_ADMIN)
            }
            NetlinkError::NetnsDenied { .. } => Some(crate::caps::SYS_ADMIN),
            _ => None,
        }
    }

    /// True when a veth's far end cannot be reached from here: its
    /// namespace is not found (or not looked for yet), or may not be
    /// entered.
    pub fn is_out_of_reach(&self) -> bool {
        matches!(
            self,
            NetlinkError::NsidNotFound { .. }
                | NetlinkError::NsidNotSearchedYet { .. }
                | NetlinkError::NetnsDenied { .. }
        )
    }

    /// True when the work did not end within its deadline (or was not
    /// started because its namespace is quarantined after one that did
    /// not).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            NetlinkError::TimedOut { .. } | NetlinkError::Quarantined { .. }
        )
    }
}

/// What a failed RTM_SETLINK of an MTU on link `name` means: the link is
/// gone (ENODEV: deleted, or moved away, before our request reached it),
/// or the error as it was.
fn set_mtu_failed(name: &LinkName, ifindex: u32, e: NetlinkError) -> NetlinkError {
    match e {
        NetlinkError::Refused { errno, .. } if errno == nix::libc::ENODEV => {
            NetlinkError::NoSuchLink {
                name: name.to_string(),
                ifindex,
            }
        }
        e => e,
    }
}

/// How a request that sets an MTU is named in errors.
fn set_mtu_op(name: &LinkName, ifindex: u32, mtu: u32) -> String {
    format!("setting MTU {mtu} on {name} (ifindex {ifindex})")
}

/// Which namespace a link lives in: ours, or the one at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    Own,
    Path(String),
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netns::Own => f.write_str("self"),
            Netns::Path(p) => f.write_str(p),
        }
    }
}

/// A namespace's links as listed, up to a bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listed {
    pub links: Vec<Link>,
    /// Links past the bound, not kept.
    pub left_out: usize,
    /// Links whose message could not be decoded: not listed, each named
    /// by its ifindex where that could be read.
    pub undecodable: Vec<Undecodable>,
}

/// The state of a veth's far end, as read in its own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub name: LinkName,
    pub ifindex: u32,
    pub mtu: u32,
    /// The namespace it lives in.
    pub netns: Netns,
}

/// What `adjust_peer` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub peer: PeerState,
    /// The MTU set, when one was.
    pub set_to: Option<u32>,
}

impl PeerChange {
    /// What applying a rule to far end `peer`, found in `netns`, did.
    pub fn new(peer: Link, netns: Netns, set_to: Option<u32>) -> PeerChange {
        PeerChange {
            peer: PeerState {
                name: peer.name,
                ifindex: peer.index,
                mtu: peer.mtu,
                netns,
            },
            set_to,
        }
    }
}

/// When an MTU change was queued, sent to the kernel and acknowledged by
/// it: where the time of a clamp goes (`mtuvisor_clamp_stage_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetTiming {
    pub queued: Instant,
    pub sent: Instant,
    pub acked: Instant,
}

impl SetTiming {
    /// A change made at once (no queue, no wait).
    pub fn at(now: Instant) -> SetTiming {
        SetTiming {
            queued: now,
            sent: now,
            acked: now,
        }
    }
}

/// What reading the outer MTU needs: the default routes and the links
/// they leave by. `detect` chooses; this only reads.
pub trait RouteTable: Send + Sync {
    /// The default routes (prefix length 0) of `family`, every table.
    fn default_routes(
        &self,
        family: Family,
    ) -> impl Future<Output = Result<Vec<DefaultRoute>, NetlinkError>> + Send;

    /// One link in this namespace, `None` when it does not exist.
    fn link(&self, ifindex: u32)
        -> impl Future<Output = Result<Option<Link>, NetlinkError>> + Send;
}

/// The narrow set of operations the enforcement engine needs. The real
/// implementation is [`RtnlClient`]; unit tests use the in-memory fake in
/// `fake.rs`. Which MTU a link should have is the caller's business: it
/// passes a plain function of the current MTU.
pub trait NetOps: RouteTable {
    /// Every link in this namespace, the first `max` of them kept.
    fn links(&self, max: usize) -> impl Future<Output = Result<Listed, NetlinkError>> + Send;

    /// Sets the MTU of a link in this namespace. The request is queued
    /// when this is called, not when the answer is awaited: a caller can
    /// start several and go on with other work meanwhile.
    fn set_mtu(
        &self,
        link: &Link,
        mtu: u32,
    ) -> impl Future<Output = Result<SetTiming, NetlinkError>> + Send + 'static;

    /// Reads the far end of veth `host` wherever it lives and sets its MTU to
    /// `desired(current)` when that returns a value: here through
    /// [`NetOps::set_mtu`], in another namespace through
    /// [`NetOps::adjust_far_end_in`].
    fn adjust_peer<F>(
        &self,
        host: &Link,
        desired: F,
    ) -> impl Future<Output = Result<PeerChange, NetlinkError>> + Send
    where
        F: Fn(u32) -> Option<u32> + Copy + Send + Sync + 'static,
    {
        async move {
            let Some(peer) = host.peer else {
                return Err(NetlinkError::PeerMismatch {
                    host: host.name.to_string(),
                    ifindex: host.index,
                    why: "it has no peer (not a veth)".into(),
                });
            };
            let Some(nsid) = peer.netnsid else {
                // Here in our namespace: set like every other MTU here.
                let far = self.far_end_here(host, peer.ifindex).await?;
                let set_to = desired(far.mtu);
                if let Some(mtu) = set_to {
                    self.set_mtu(&far, mtu).await?;
                }
                return Ok(PeerChange::new(far, Netns::Own, set_to));
            };
            self.adjust_far_end_in(nsid, host, peer.ifindex, desired)
                .await
        }
    }

    /// The far end of veth `host`, link `peer_ifindex` in this namespace,
    /// checked to be a veth that points back at `host`.
    fn far_end_here(
        &self,
        host: &Link,
        peer_ifindex: u32,
    ) -> impl Future<Output = Result<Link, NetlinkError>> + Send;

    /// [`NetOps::adjust_peer`] for a far end in the namespace this one
    /// calls `nsid`.
    fn adjust_far_end_in<F>(
        &self,
        nsid: i32,
        host: &Link,
        peer_ifindex: u32,
        desired: F,
    ) -> impl Future<Output = Result<PeerChange, NetlinkError>> + Send
    where
        F: Fn(u32) -> Option<u32> + Copy + Send + Sync + 'static;

    /// The nsid our namespace has for the namespace file at `path`,
    /// remembered for later look-ups of far ends there; `None` when it has
    /// none (no veth of ours has an end there).
    fn learn_netns(
        &self,
        path: &std::path::Path,
    ) -> impl Future<Output = Result<Option<i32>, NetlinkError>> + Send;
}
