//! The rtnetlink notification stream (RTNLGRP_LINK and the route groups),
//! turned into the few events the engine reacts to.

use std::collections::VecDeque;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, TokioSocket};

use super::{Link, NetlinkError};

/// The kernel's receive buffer: the one queue of notifications not yet
/// read. Nothing is copied out of it before the loop asks for the next
/// event, so a namespace that floods us (a pod creating links by the
/// thousand) costs at most this much, and what does not fit is dropped
/// by the kernel and reported (ENOBUFS) as an overrun, after which the
/// loop sweeps. Our own namespace gets more room than each pod's
/// (`node`): dockerd creating dozens of containers at once would
/// otherwise overrun it often.
pub const RECV_BUFFER_OWN: usize = 8 << 20;
pub const RECV_BUFFER_POD: usize = 2 << 20;

/// rtnetlink multicast groups (linux/rtnetlink.h): RTNLGRP_LINK,
/// RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE.
const GROUPS: [u32; 3] = [1, 7, 11];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// RTM_NEWLINK: a link appeared or changed.
    LinkChanged(Link),
    /// RTM_DELLINK: a link left this namespace.
    LinkRemoved(u32),
    /// A default route was added, changed or removed.
    DefaultRouteChanged,
    /// The kernel dropped notifications (ENOBUFS): state must be re-read.
    Overrun,
}

/// A subscription in one namespace; its socket closes when this is
/// dropped.
pub struct NetMonitor {
    socket: TokioSocket,
    /// The rest of the last datagram read (one can hold several messages).
    parsed: VecDeque<NetEvent>,
}

impl NetMonitor {
    /// Subscribes in the calling thread's namespace, with a receive buffer
    /// of `buffer` bytes; the socket is registered with the current tokio
    /// runtime.
    pub fn subscribe(buffer: usize) -> Result<NetMonitor, NetlinkError> {
        let socket_err = |source| NetlinkError::Socket {
            context: " for link and route notifications".into(),
            source,
        };
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(socket_err)?;
        let raw = socket.socket_mut();
        raw.bind_auto().map_err(socket_err)?;
        for group in GROUPS {
            raw.add_membership(group).map_err(socket_err)?;
        }
        // Not fatal: without CAP_NET_ADMIN the kernel caps the size, and
        // overruns are handled anyway.
        let _ = raw.set_rx_buf_sz(buffer);
        Ok(NetMonitor {
            socket,
            parsed: VecDeque::new(),
        })
    }

    /// The next event; `None` when the socket failed for good.
    pub async fn next(&mut self) -> Option<NetEvent> {
        loop {
            if let Some(event) = self.parsed.pop_front() {
                return Some(event);
            }
            match self.socket.recv_from_full().await {
                Ok((datagram, _)) => self.parse(&datagram),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Some(NetEvent::Overrun)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "link notifications socket failed");
                    return None;
                }
            }
        }
    }

    fn parse(&mut self, datagram: &[u8]) {
        let mut offset = 0;
        while offset < datagram.len() {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
            else {
                return;
            };
            let len = msg.header.length as usize;
            if let Some(event) = classify(msg) {
                self.parsed.push_back(event);
            }
            if len == 0 {
                return;
            }
            offset += (len + 3) & !3;
        }
    }
}

fn classify(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
    match msg.payload {
        NetlinkPayload::Overrun(_) => Some(NetEvent::Overrun),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
            Link::from_message(&link).map(NetEvent::LinkChanged)
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
            Some(NetEvent::LinkRemoved(link.header.index))
        }
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route),
        ) if route.header.destination_prefix_length == 0 => Some(NetEvent::DefaultRouteChanged),
        _ => None,
    }
}
