//! The rtnetlink notification stream (RTNLGRP_LINK and the route groups),
//! turned into the few events the engine reacts to, through the border's
//! socket and decoder.

use std::collections::VecDeque;
use std::time::Instant;

use super::socket::{AsyncSocket, Read};
use super::wire::{self, Item, Undecodable};
use super::{Link, NetlinkError, Socket};

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

/// rtnetlink multicast groups (linux/rtnetlink.h) as bind(2)'s mask:
/// RTMGRP_LINK, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE.
const GROUPS: u32 = 0x1 | 0x40 | 0x400;

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
    /// A notification that cannot be decoded: an error for the object it
    /// is about (its ifindex, when that could be read).
    Undecodable(Undecodable),
    /// A datagram another process sent to the notification group, posing
    /// as the kernel: dropped unread.
    NotFromKernel,
}

/// A subscription in one namespace; its socket closes when this is
/// dropped.
pub struct NetMonitor {
    socket: AsyncSocket,
    /// The rest of the last datagram read (one can hold several messages).
    parsed: VecDeque<NetEvent>,
    /// When that datagram was read.
    read_at: Instant,
}

impl NetMonitor {
    /// The socket of a subscription in the calling thread's namespace,
    /// with a receive buffer of `buffer` bytes; see [`NetMonitor::new`].
    pub fn socket(buffer: usize) -> Result<Socket, NetlinkError> {
        Socket::open(GROUPS, Some(buffer)).map_err(|source| NetlinkError::Socket {
            context: " for link and route notifications".into(),
            source,
        })
    }

    /// The subscription of `socket` (opened by [`NetMonitor::socket`],
    /// here or on a thread inside another namespace), driven by the
    /// current tokio runtime.
    pub fn new(socket: Socket) -> Result<NetMonitor, NetlinkError> {
        Ok(NetMonitor {
            socket: AsyncSocket::new(socket).map_err(|source| NetlinkError::Socket {
                context: " for link and route notifications (registering it)".into(),
                source,
            })?,
            parsed: VecDeque::new(),
            read_at: Instant::now(),
        })
    }

    /// Subscribes in the calling thread's namespace.
    pub fn subscribe(buffer: usize) -> Result<NetMonitor, NetlinkError> {
        NetMonitor::new(NetMonitor::socket(buffer)?)
    }

    /// The next event, and when it was read from the socket; `None` when
    /// the socket failed for good. Each event counts against the task's
    /// share of the runtime (tokio's budget), so that a datagram of many
    /// messages does not keep the one enforcement thread from every other
    /// pod's.
    pub async fn next(&mut self) -> Option<(NetEvent, Instant)> {
        loop {
            if let Some(event) = self.parsed.pop_front() {
                tokio::task::coop::consume_budget().await;
                return Some((event, self.read_at));
            }
            let parsed = &mut self.parsed;
            let read = self.socket.next(|d| parse(d, parsed)).await;
            self.read_at = Instant::now();
            let now = self.read_at;
            match read {
                Ok(Read::Kernel(())) => {}
                Ok(Read::NotFromKernel) => return Some((NetEvent::NotFromKernel, now)),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Some((NetEvent::Overrun, now))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A datagram too large to keep: lost, as in an overrun.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Some((NetEvent::Overrun, now))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "link notifications socket failed");
                    return None;
                }
            }
        }
    }
}

/// The events of one datagram. One whose messages cannot be split has lost
/// whatever followed: that is an overrun (state is re-read).
fn parse(datagram: &[u8], out: &mut VecDeque<NetEvent>) {
    for message in wire::messages(datagram) {
        let Ok((header, payload)) = message else {
            out.push_back(NetEvent::Overrun);
            return;
        };
        let event = match wire::decode(&header, payload) {
            Ok(Item::Link(link)) => NetEvent::LinkChanged(link),
            Ok(Item::LinkGone(index)) => NetEvent::LinkRemoved(index),
            Ok(Item::DefaultRoute(_)) => NetEvent::DefaultRouteChanged,
            Ok(Item::Overrun) => NetEvent::Overrun,
            Ok(_) => continue,
            Err(u) => NetEvent::Undecodable(u),
        };
        out.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::wire::forge;

    #[test]
    fn every_message_of_a_datagram_is_an_event_or_an_error_for_its_object() {
        let good = forge::link(0, 5, b"\xff\nname", b"veth", 1500, 3, None, &[]);
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&6u32.to_ne_bytes());
        body.extend(forge::attr(4, &[0; 7]));
        let bad = forge::message(wire::RTM_NEWLINK, 0, 0, &body);
        let after = forge::link(0, 7, b"ok", b"bridge", 1500, 0, None, &[]);
        let mut out = VecDeque::new();
        parse(&[good, bad, after].concat(), &mut out);
        let events: Vec<_> = out.into_iter().collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[0], NetEvent::LinkChanged(l) if l.index == 5));
        assert!(matches!(&events[1], NetEvent::Undecodable(u) if u.ifindex == Some(6)));
        assert!(matches!(&events[2], NetEvent::LinkChanged(l) if l.index == 7));
    }

    #[test]
    fn a_datagram_that_cannot_be_split_is_an_overrun() {
        let mut out = VecDeque::new();
        parse(&[0xffu8; 24], &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), [NetEvent::Overrun]);
    }
}
