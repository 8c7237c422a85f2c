//! The rtnetlink notification stream (RTNLGRP_LINK and the route groups),
//! turned into the few events the engine reacts to.

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;
use netlink_sys::SocketAddr;
use rtnetlink::MulticastGroup;

use super::{Link, NetlinkError};

/// Kernel default receive buffers (~200 KiB) overflow when dockerd creates
/// dozens of containers at once; a larger buffer makes a resync rarer.
const RECV_BUFFER_BYTES: usize = 8 << 20;

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

/// The subscription's socket closes when this is dropped.
pub struct NetMonitor {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    _conn: crate::AbortOnDrop,
}

impl NetMonitor {
    /// Subscribes in the calling thread's namespace; the socket is driven on
    /// the current tokio runtime.
    pub fn subscribe() -> Result<NetMonitor, NetlinkError> {
        let socket_err = |source| NetlinkError::Socket {
            context: " for link and route notifications".into(),
            source,
        };
        let (mut conn, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])
        .map_err(socket_err)?;
        // Not fatal: without CAP_NET_ADMIN the kernel caps the size, and
        // overruns are handled anyway.
        let _ = conn
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(RECV_BUFFER_BYTES);
        Ok(NetMonitor {
            messages,
            _conn: crate::AbortOnDrop(tokio::spawn(conn)),
        })
    }

    /// The next event; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<NetEvent> {
        loop {
            let (msg, _) = self.messages.next().await?;
            if let Some(event) = classify(msg) {
                return Some(event);
            }
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
