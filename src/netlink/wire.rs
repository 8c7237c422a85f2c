//! The border: every byte the kernel hands over from a network namespace
//! (a pod's, under `node`) is decoded here, message by message, and
//! nowhere else.
//!
//! What a pod controls reaches us through these messages: its links'
//! names, aliases and alternative names (any byte but `/`, `:` and
//! whitespace in a name, any byte at all in an alias), their number, its
//! routes. So the decoder reads only the few fields enforcement uses, as
//! bytes, and skips every other attribute unread, whatever it holds. A
//! message it cannot read (an attribute that runs past its message, a
//! field of the wrong size, a link without a name or MTU, which the kernel
//! never sends) is [`Undecodable`], named by its type and, where the fixed
//! header was readable, its ifindex: an error for that one object, never a
//! dropped reply nor a failed dump. A datagram whose message headers do not
//! add up ends there with [`Malformed`].
//!
//! Requests are built here too, from numbers only: no name a pod chose is
//! ever sent back to the kernel.

use std::fmt;

use super::route::{DefaultRoute, Family};
use super::{Link, LinkKind, PeerRef};

/// `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;

// Message types (linux/netlink.h, linux/rtnetlink.h).
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNSID: u16 = 88;
pub const RTM_GETNSID: u16 = 90;

// Flags.
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

// Link attributes (linux/if_link.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
/// `RTEXT_FILTER_SKIP_STATS`: per-link statistics are not even asked for.
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

// Route attributes (linux/rtnetlink.h).
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTN_UNICAST: u8 = 1;

// Namespace ids (linux/net_namespace.h).
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// `NLA_TYPE_MASK`: the nested and byte-order flags are not part of a type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// How much of another kind's name is kept (the kernel's are words:
/// `vxlan`, `macvlan`, `wireguard`).
const MAX_KIND: usize = 16;

/// `IFNAMSIZ`: a name is at most 15 bytes and its NUL.
const IFNAMSIZ: usize = 16;

const IFINFOMSG_LEN: usize = 16;
/// `ifi_family` of the link's own messages (`rtnl_fill_ifinfo`).
const AF_UNSPEC: u8 = 0;
const RTMSG_LEN: usize = 12;
const RTGENMSG_LEN: usize = 4;

/// A network interface's name as the kernel holds it: up to 15 bytes, any
/// of which may be outside UTF-8 or a control character. Shown escaped
/// (`\xff`), so that a name never breaks a log line; matched as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkName {
    len: u8,
    bytes: [u8; IFNAMSIZ - 1],
}

impl LinkName {
    /// A name of 1 to 15 bytes, without NUL.
    pub fn new(bytes: &[u8]) -> Option<LinkName> {
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return None;
        }
        let mut name = LinkName {
            len: bytes.len() as u8,
            bytes: [0; IFNAMSIZ - 1],
        };
        name.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(name)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text, when it is UTF-8 (for matching against names
    /// Docker or the configuration gave as text).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

impl From<&str> for LinkName {
    /// For names written in code; a name the kernel would refuse panics.
    fn from(name: &str) -> LinkName {
        LinkName::new(name.as_bytes()).unwrap_or_else(|| panic!("not an interface name: {name:?}"))
    }
}

impl PartialEq<str> for LinkName {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for LinkName {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for LinkName {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(self.as_bytes()))
    }
}

impl fmt::Debug for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Bytes as text a log line can carry: printable ASCII as it is, every
/// other byte (control characters, `\`, anything outside ASCII) as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
}

/// The rest of a datagram cannot be split into messages: a header's
/// length is shorter than a header or runs past the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a netlink message at byte {} of its datagram has an impossible length",
            self.offset
        )
    }
}

/// The messages of one datagram, in order; after a [`Malformed`] header,
/// nothing more.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages {
        rest: datagram,
        offset: 0,
        broken: false,
    }
}

pub struct Messages<'a> {
    rest: &'a [u8],
    offset: usize,
    broken: bool,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.broken || self.rest.is_empty() {
            return None;
        }
        let bad = Malformed {
            offset: self.offset,
        };
        let fail = |this: &mut Self| {
            this.broken = true;
            Some(Err(bad))
        };
        if self.rest.len() < HEADER_LEN {
            return fail(self);
        }
        let len = u32_at(self.rest, 0) as usize;
        if len < HEADER_LEN || len > self.rest.len() {
            return fail(self);
        }
        let header = Header {
            kind: u16_at(self.rest, 4),
            flags: u16_at(self.rest, 6),
            seq: u32_at(self.rest, 8),
        };
        let payload = &self.rest[HEADER_LEN..len];
        let next = align(len).min(self.rest.len());
        self.rest = &self.rest[next..];
        self.offset += next;
        Some(Ok((header, payload)))
    }
}

/// What one message says, as far as mtuvisor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// RTM_NEWLINK: a link as it now is.
    Link(Link),
    /// RTM_DELLINK: the link with this ifindex left the namespace.
    LinkGone(u32),
    /// RTM_NEWLINK or RTM_DELLINK of another address family than the
    /// link's own: a subsystem's view of the link, not the link. A bridge
    /// announces each port it takes, changes and lets go (AF_BRIDGE) on
    /// the same group as the links: such a message names no kind and no
    /// peer, and its RTM_DELLINK means "left the bridge", not "gone".
    /// Never taken as the link's state.
    LinkView { ifindex: u32, family: u8 },
    /// RTM_NEWROUTE / RTM_DELROUTE of a default route (prefix length 0).
    DefaultRoute(DefaultRoute),
    /// A route to anything else.
    OtherRoute,
    /// RTM_NEWNSID: the nsid asked for, `None` when none is assigned.
    Nsid(Option<i32>),
    /// NLMSG_ERROR with code 0: the request was done.
    Ack,
    /// NLMSG_ERROR: the kernel refused, with this errno.
    Refused(i32),
    /// NLMSG_DONE: a dump is complete (or, with an errno, failed).
    Done(Option<i32>),
    /// NLMSG_OVERRUN.
    Overrun,
    /// A type nobody asked for (NLMSG_NOOP, an address, a neighbour).
    Other(u16),
}

/// A message that cannot be read: an error for the one object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Its message type.
    pub kind: u16,
    /// The link it is about, when the fixed header could be read.
    pub ifindex: Option<u32>,
    pub why: &'static str,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ifindex {
            Some(i) => write!(
                f,
                "a netlink message of type {} about ifindex {i} cannot be decoded: {}",
                self.kind, self.why
            ),
            None => write!(
                f,
                "a netlink message of type {} cannot be decoded: {}",
                self.kind, self.why
            ),
        }
    }
}

/// Decodes one message.
pub fn decode(header: &Header, payload: &[u8]) -> Result<Item, Undecodable> {
    let fail = |ifindex, why| Undecodable {
        kind: header.kind,
        ifindex,
        why,
    };
    match header.kind {
        NLMSG_ERROR => {
            if payload.len() < 4 {
                return Err(fail(None, "an error message without its code"));
            }
            Ok(match i32_at(payload, 0) {
                0 => Item::Ack,
                code => Item::Refused(code.saturating_neg()),
            })
        }
        NLMSG_DONE => Ok(Item::Done(
            (payload.len() >= 4)
                .then(|| i32_at(payload, 0))
                .filter(|c| *c < 0)
                .map(i32::saturating_neg),
        )),
        NLMSG_OVERRUN => Ok(Item::Overrun),
        RTM_NEWLINK | RTM_DELLINK => {
            let ifindex = link_index(payload)
                .ok_or_else(|| fail(None, "a link message shorter than its fixed header"))?;
            match payload[0] {
                AF_UNSPEC if header.kind == RTM_NEWLINK => decode_link(payload)
                    .map(Item::Link)
                    .map_err(|(i, why)| fail(i, why)),
                AF_UNSPEC => Ok(Item::LinkGone(ifindex)),
                family => Ok(Item::LinkView { ifindex, family }),
            }
        }
        RTM_NEWROUTE | RTM_DELROUTE => decode_route(payload).map_err(|why| fail(None, why)),
        RTM_NEWNSID => decode_nsid(payload)
            .map(Item::Nsid)
            .map_err(|why| fail(None, why)),
        other => Ok(Item::Other(other)),
    }
}

/// The ifindex of a link message's fixed header (`struct ifinfomsg`).
fn link_index(payload: &[u8]) -> Option<u32> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    u32::try_from(i32_at(payload, 4)).ok()
}

fn decode_link(payload: &[u8]) -> Result<Link, (Option<u32>, &'static str)> {
    let index =
        link_index(payload).ok_or((None, "a link message shorter than its fixed header"))?;
    let fail = |why| (Some(index), why);
    let mut name = None;
    let mut mtu = None;
    let mut master = None;
    let mut kind = LinkKind::Other(String::new());
    let mut link = None;
    let mut netnsid = None;
    for attr in attributes(&payload[IFINFOMSG_LEN..]) {
        let (kind_of, value) = attr.map_err(fail)?;
        match kind_of {
            IFLA_IFNAME => {
                let bytes = until_nul(value);
                name = Some(
                    LinkName::new(bytes)
                        .ok_or(fail("a name that is empty or longer than 15 bytes"))?,
                );
            }
            IFLA_MTU => mtu = Some(exact_u32(value).ok_or(fail("an MTU that is not 4 bytes"))?),
            IFLA_LINK => {
                link = Some(exact_u32(value).ok_or(fail("a peer index that is not 4 bytes"))?)
            }
            IFLA_MASTER => {
                let m = exact_u32(value).ok_or(fail("a master index that is not 4 bytes"))?;
                master = (m != 0).then_some(m);
            }
            IFLA_LINK_NETNSID => {
                let id = exact_u32(value).ok_or(fail("a peer nsid that is not 4 bytes"))? as i32;
                netnsid = (id >= 0).then_some(id);
            }
            IFLA_LINKINFO => {
                for info in attributes(value) {
                    let (info_kind, v) = info.map_err(fail)?;
                    if info_kind == IFLA_INFO_KIND {
                        kind = match until_nul(v) {
                            b"bridge" => LinkKind::Bridge,
                            b"veth" => LinkKind::Veth,
                            // The kernel's kinds are short words; only
                            // their start is kept.
                            other => {
                                LinkKind::Other(printable(&other[..other.len().min(MAX_KIND)]))
                            }
                        };
                    }
                }
            }
            // Aliases, alternative names, statistics, addresses and every
            // attribute a later kernel adds: not read.
            _ => {}
        }
    }
    let peer = match (&kind, link) {
        (LinkKind::Veth, Some(ifindex)) if ifindex != 0 => Some(PeerRef { ifindex, netnsid }),
        _ => None,
    };
    Ok(Link {
        index,
        name: name.ok_or(fail("a link without a name"))?,
        kind,
        mtu: mtu.ok_or(fail("a link without an MTU"))?,
        master,
        peer,
    })
}

fn decode_route(payload: &[u8]) -> Result<Item, &'static str> {
    if payload.len() < RTMSG_LEN {
        return Err("a route message shorter than its fixed header");
    }
    if payload[1] != 0 {
        return Ok(Item::OtherRoute);
    }
    let mut route = DefaultRoute {
        table: u32::from(payload[4]),
        unicast: payload[7] == RTN_UNICAST,
        priority: 0,
        oifs: Vec::new(),
        mtu: None,
    };
    for attr in attributes(&payload[RTMSG_LEN..]) {
        let (kind, value) = attr?;
        match kind {
            RTA_TABLE => route.table = exact_u32(value).ok_or("a table that is not 4 bytes")?,
            RTA_PRIORITY => {
                route.priority = exact_u32(value).ok_or("a metric that is not 4 bytes")?
            }
            RTA_OIF => route
                .oifs
                .push(exact_u32(value).ok_or("an interface that is not 4 bytes")?),
            RTA_MULTIPATH => {
                // `struct rtnexthop`: length (u16), flags, hops, ifindex
                // (i32), then its own attributes.
                let mut rest = value;
                while rest.len() >= 8 {
                    let len = usize::from(u16_at(rest, 0));
                    if len < 8 || len > rest.len() {
                        return Err("a next hop whose length runs past its route");
                    }
                    route.oifs.push(u32_at(rest, 4));
                    rest = &rest[align(len).min(rest.len())..];
                }
            }
            RTA_METRICS => {
                for metric in attributes(value) {
                    let (m, v) = metric?;
                    if m == RTAX_MTU {
                        let mtu = exact_u32(v).ok_or("an MTU metric that is not 4 bytes")?;
                        route.mtu = (mtu > 0).then_some(mtu);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Item::DefaultRoute(route))
}

fn decode_nsid(payload: &[u8]) -> Result<Option<i32>, &'static str> {
    if payload.len() < RTGENMSG_LEN {
        return Err("an nsid message shorter than its fixed header");
    }
    let mut nsid = None;
    for attr in attributes(&payload[RTGENMSG_LEN..]) {
        let (kind, value) = attr?;
        if kind == NETNSA_NSID {
            let id = exact_u32(value).ok_or("an nsid that is not 4 bytes")? as i32;
            nsid = (id >= 0).then_some(id);
        }
    }
    Ok(nsid)
}

/// The attributes in `bytes` (`struct rtattr` / `struct nlattr`), each as
/// (type, value); an attribute whose length is impossible ends the walk
/// with an error.
fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), &'static str>> {
    let mut rest = bytes;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || rest.len() < 4 {
            // Fewer than 4 bytes left: padding, nothing to read.
            return None;
        }
        let len = usize::from(u16_at(rest, 0));
        if len < 4 || len > rest.len() {
            broken = true;
            return Some(Err("an attribute whose length runs past its message"));
        }
        let item = (u16_at(rest, 2) & NLA_TYPE_MASK, &rest[4..len]);
        rest = &rest[align(len).min(rest.len())..];
        Some(Ok(item))
    })
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or_default()
}

fn exact_u32(value: &[u8]) -> Option<u32> {
    (value.len() == 4).then(|| u32_at(value, 0))
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}

/// A request, built from numbers only.
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, body: &[u8]) -> Request {
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len() + 8);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // seq, set on send
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
        bytes.extend_from_slice(body);
        let mut r = Request { bytes };
        r.finish();
        r
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Request {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
        self.bytes
            .extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.finish();
        self
    }

    fn finish(&mut self) {
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Every link, without statistics.
    pub fn dump_links() -> Request {
        Request::new(RTM_GETLINK, NLM_F_DUMP, &[0; IFINFOMSG_LEN])
            .attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())
    }

    /// One link by index, acknowledged.
    pub fn get_link(ifindex: u32) -> Request {
        Request::new(RTM_GETLINK, NLM_F_ACK, &ifinfomsg(ifindex))
            .attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())
    }

    /// RTM_SETLINK of an MTU by ifindex, acknowledged. IFLA_TARGET_NETNSID
    /// is never used: current kernels take it as "move the link there",
    /// not "address the link there".
    pub fn set_mtu(ifindex: u32, mtu: u32) -> Request {
        Request::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex)).attr(IFLA_MTU, &mtu.to_ne_bytes())
    }

    /// Every route of one family.
    pub fn dump_routes(family: Family) -> Request {
        let mut rtmsg = [0u8; RTMSG_LEN];
        rtmsg[0] = match family {
            Family::Ipv4 => 2,  // AF_INET
            Family::Ipv6 => 10, // AF_INET6
        };
        Request::new(RTM_GETROUTE, NLM_F_DUMP, &rtmsg)
    }

    /// The nsid this namespace has for the namespace of file descriptor
    /// `fd` (RTM_GETNSID with NETNSA_FD, as `ip link` asks it).
    pub fn get_nsid(fd: i32) -> Request {
        Request::new(RTM_GETNSID, NLM_F_ACK, &[0; RTGENMSG_LEN]).attr(NETNSA_FD, &fd.to_ne_bytes())
    }

    pub fn is_dump(&self) -> bool {
        u16_at(&self.bytes, 6) & NLM_F_DUMP == NLM_F_DUMP
    }

    /// The bytes to send, numbered `seq`.
    pub fn with_seq(&mut self, seq: u32) -> &[u8] {
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.bytes
    }
}

fn ifinfomsg(ifindex: u32) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    m
}

/// Builders of the kernel's messages, for tests of the decoder and of
/// everything that reads it: the bytes a kernel (or a hostile pod's
/// kernel objects) could produce.
#[cfg(test)]
pub mod forge {
    use super::*;

    /// An attribute: type and value.
    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while !a.len().is_multiple_of(4) {
            a.push(0);
        }
        a
    }

    /// A message of `kind` numbered `seq` with `body`.
    pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    /// RTM_NEWLINK for a link: ifindex, raw name bytes, kind, MTU, master,
    /// peer, and `extra` attributes appended as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn link(
        seq: u32,
        index: u32,
        name: &[u8],
        kind: &[u8],
        mtu: u32,
        master: u32,
        peer: Option<(u32, i32)>,
        extra: &[u8],
    ) -> Vec<u8> {
        let mut body = ifinfomsg(index).to_vec();
        let mut nul_name = name.to_vec();
        nul_name.push(0);
        body.extend(attr(IFLA_IFNAME, &nul_name));
        body.extend(attr(IFLA_MTU, &mtu.to_ne_bytes()));
        if master != 0 {
            body.extend(attr(IFLA_MASTER, &master.to_ne_bytes()));
        }
        if let Some((ifindex, nsid)) = peer {
            body.extend(attr(IFLA_LINK, &ifindex.to_ne_bytes()));
            if nsid >= 0 {
                body.extend(attr(IFLA_LINK_NETNSID, &nsid.to_ne_bytes()));
            }
        }
        let mut kind_nul = kind.to_vec();
        kind_nul.push(0);
        body.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, &kind_nul)));
        body.extend_from_slice(extra);
        message(RTM_NEWLINK, 0, seq, &body)
    }

    /// IFLA_IFALIAS (20) with any bytes.
    pub fn alias(bytes: &[u8]) -> Vec<u8> {
        attr(20, bytes)
    }

    /// IFLA_PROP_LIST (52) holding IFLA_ALT_IFNAME (53) entries.
    pub fn alt_names(names: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for n in names {
            let mut v = n.to_vec();
            v.push(0);
            list.extend(attr(53, &v));
        }
        attr(52 | 0x8000, &list)
    }

    pub fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; HEADER_LEN]);
        message(NLMSG_ERROR, 0, seq, &body)
    }

    pub fn done(seq: u32) -> Vec<u8> {
        message(NLMSG_DONE, 2, seq, &0i32.to_ne_bytes())
    }

    /// A default route (or, with `prefix` > 0, any route) of table
    /// `table` through `oif`, with an MTU metric when given.
    pub fn route(seq: u32, prefix: u8, table: u32, oif: u32, mtu: Option<u32>) -> Vec<u8> {
        let mut body = vec![2, prefix, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        body.extend(attr(RTA_TABLE, &table.to_ne_bytes()));
        body.extend(attr(RTA_OIF, &oif.to_ne_bytes()));
        if let Some(m) = mtu {
            body.extend(attr(RTA_METRICS, &attr(RTAX_MTU, &m.to_ne_bytes())));
        }
        message(RTM_NEWROUTE, 0, seq, &body)
    }

    pub fn nsid(seq: u32, id: i32) -> Vec<u8> {
        let mut body = vec![0u8; RTGENMSG_LEN];
        body.extend(attr(NETNSA_NSID, &id.to_ne_bytes()));
        message(RTM_NEWNSID, 0, seq, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::forge::*;
    use super::*;

    fn one(datagram: &[u8]) -> Result<Item, Undecodable> {
        let mut all = messages(datagram);
        let (h, p) = all.next().expect("a message").expect("splits");
        decode(&h, p)
    }

    #[test]
    fn a_link_is_read_with_its_peer_and_master() {
        let m = link(7, 12, b"veth1", b"veth", 1500, 3, Some((5, 2)), &[]);
        let Item::Link(l) = one(&m).unwrap() else {
            panic!()
        };
        assert_eq!(l.index, 12);
        assert_eq!(l.name, "veth1");
        assert_eq!((l.kind, l.mtu, l.master), (LinkKind::Veth, 1500, Some(3)));
        assert_eq!(
            l.peer,
            Some(PeerRef {
                ifindex: 5,
                netnsid: Some(2)
            })
        );
    }

    #[test]
    fn a_bridge_s_view_of_its_port_is_never_the_port() {
        // What a bridge sends when it takes a port (br_ifinfo_notify):
        // family AF_BRIDGE, the port's name, MTU and master, no kind, no
        // peer. Read as the link, it would drop the veth's peer.
        let mut body = ifinfomsg(12).to_vec();
        body[0] = 7; // AF_BRIDGE
        body.extend(attr(IFLA_IFNAME, b"veth1\0"));
        body.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        body.extend(attr(IFLA_MASTER, &3u32.to_ne_bytes()));
        assert_eq!(
            one(&message(RTM_NEWLINK, 0, 0, &body)).unwrap(),
            Item::LinkView {
                ifindex: 12,
                family: 7
            }
        );
        // Letting it go is not the link going.
        assert_eq!(
            one(&message(RTM_DELLINK, 0, 0, &body)).unwrap(),
            Item::LinkView {
                ifindex: 12,
                family: 7
            }
        );
        // Even one that could not be read as a link is no error for it.
        let mut bad = ifinfomsg(13).to_vec();
        bad[0] = 7;
        bad.extend(attr(IFLA_MTU, &[1, 2]));
        assert!(matches!(
            one(&message(RTM_NEWLINK, 0, 0, &bad)),
            Ok(Item::LinkView { ifindex: 13, .. })
        ));
        // The link's own (AF_UNSPEC) deletion is the link gone.
        let own = ifinfomsg(12);
        assert_eq!(
            one(&message(RTM_DELLINK, 0, 0, &own)).unwrap(),
            Item::LinkGone(12)
        );
    }

    #[test]
    fn any_byte_in_a_name_alias_or_alternative_name_is_read_or_skipped() {
        // The kernel refuses only '/', ':', whitespace and NUL in a name,
        // and nothing in an alias.
        let name = b"x\xff\x01\x1b[\xc3";
        let extra = [
            alias(b"\xff\xfe\nmtuvisor_ready 1\n"),
            alt_names(&[b"\xff\xff\xff", b"alt\x7f"]),
        ]
        .concat();
        let m = link(1, 40, name, b"veth", 1500, 9, Some((41, -1)), &extra);
        let Item::Link(l) = one(&m).unwrap() else {
            panic!()
        };
        assert_eq!(l.name.as_bytes(), name);
        assert_eq!(l.name.as_str(), None);
        assert_eq!(l.name.to_string(), "x\\xff\\x01\\x1b[\\xc3");
        assert_eq!(l.peer.map(|p| p.netnsid), Some(None));
    }

    #[test]
    fn a_message_that_cannot_be_read_is_an_error_for_its_object() {
        // An MTU of 2 bytes.
        let mut body = ifinfomsg(33).to_vec();
        body.extend(attr(IFLA_IFNAME, b"a\0"));
        body.extend(attr(IFLA_MTU, &[1, 2]));
        let e = one(&message(RTM_NEWLINK, 0, 1, &body)).unwrap_err();
        assert_eq!((e.ifindex, e.why), (Some(33), "an MTU that is not 4 bytes"));
        // An attribute that runs past its message.
        let mut body = ifinfomsg(34).to_vec();
        body.extend_from_slice(&[200, 0, 3, 0, b'a', 0, 0, 0]);
        let e = one(&message(RTM_NEWLINK, 0, 1, &body)).unwrap_err();
        assert_eq!(e.ifindex, Some(34), "{e}");
        // A name of 16 bytes.
        let m = link(1, 35, b"0123456789abcdef", b"veth", 1500, 0, None, &[]);
        assert_eq!(one(&m).unwrap_err().ifindex, Some(35));
        // No fixed header.
        let e = one(&message(RTM_NEWLINK, 0, 1, &[1, 2])).unwrap_err();
        assert_eq!(e.ifindex, None);
    }

    #[test]
    fn a_datagram_whose_lengths_do_not_add_up_ends_with_malformed() {
        let mut d = link(1, 2, b"a", b"veth", 1500, 0, None, &[]);
        d.extend_from_slice(&[0xff, 0xff, 0, 0, 16, 0, 0, 0]);
        let all: Vec<_> = messages(&d).collect();
        assert!(all[0].is_ok());
        assert!(all[1].is_err());
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn acks_refusals_dumps_routes_and_nsids() {
        assert_eq!(one(&ack(1, 0)).unwrap(), Item::Ack);
        assert_eq!(one(&ack(1, 19)).unwrap(), Item::Refused(19));
        assert_eq!(one(&done(1)).unwrap(), Item::Done(None));
        let Item::DefaultRoute(r) = one(&route(1, 0, 1000, 4, Some(1400))).unwrap() else {
            panic!()
        };
        assert_eq!((r.table, r.oifs, r.mtu), (1000, vec![4], Some(1400)));
        assert_eq!(one(&route(1, 24, 254, 4, None)).unwrap(), Item::OtherRoute);
        assert_eq!(one(&nsid(1, 3)).unwrap(), Item::Nsid(Some(3)));
        assert_eq!(one(&nsid(1, -1)).unwrap(), Item::Nsid(None));
    }

    #[test]
    fn requests_carry_numbers_only() {
        let mut r = Request::set_mtu(12, 1450);
        let bytes = r.with_seq(9).to_vec();
        let (h, p) = messages(&bytes).next().unwrap().unwrap();
        assert_eq!(h.kind, RTM_SETLINK);
        assert_eq!(h.seq, 9);
        assert_eq!(link_index(p), Some(12));
        assert!(Request::dump_links().is_dump());
        assert!(!Request::get_link(3).is_dump());
    }

    #[test]
    fn printable_escapes_everything_but_printable_ascii() {
        assert_eq!(printable(b"docker0"), "docker0");
        assert_eq!(printable(b"a\nb\\c\xff"), "a\\x0ab\\x5cc\\xff");
    }

    /// Fuzzing the border directly: whatever bytes arrive, the decoder
    /// ends, never panics, and reads what the kernel allows a pod to write
    /// as it was written. Failing cases are kept in
    /// proptest-regressions/netlink/wire.txt and replayed first.
    mod fuzz {
        use super::*;
        use crate::netlink::socket;
        use proptest::prelude::*;

        fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(1u8..=255, 1..=15)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn any_datagram_is_split_and_decoded_without_panic(d in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let mut payload = 0;
                for m in messages(&d) {
                    match m {
                        Ok((h, p)) => {
                            payload += p.len() + HEADER_LEN;
                            let _ = decode(&h, p);
                        }
                        Err(_) => break,
                    }
                }
                prop_assert!(payload <= d.len());
            }

            #[test]
            fn a_link_of_any_name_alias_and_unknown_attributes_is_read_as_written(
                index in 1u32..i32::MAX as u32,
                name in name_bytes(),
                alias in proptest::collection::vec(1u8..=255, 1..=255),
                alt in proptest::collection::vec(name_bytes(), 0..4),
                unknown in proptest::collection::vec((60u16..0x3fff, proptest::collection::vec(any::<u8>(), 0..64)), 0..8),
                mtu in 68u32..65536,
            ) {
                let mut extra = forge::alias(&alias);
                let alt: Vec<&[u8]> = alt.iter().map(Vec::as_slice).collect();
                extra.extend(forge::alt_names(&alt));
                for (kind, value) in &unknown {
                    extra.extend(forge::attr(*kind, value));
                }
                let m = forge::link(1, index, &name, b"veth", mtu, 0, None, &extra);
                let (h, p) = messages(&m).next().unwrap().unwrap();
                let Ok(Item::Link(l)) = decode(&h, p) else {
                    return Err(TestCaseError::fail("not read"));
                };
                prop_assert_eq!(l.name.as_bytes(), &name[..]);
                prop_assert_eq!((l.index, l.mtu), (index, mtu));
                // Shown as printable ASCII only, one line.
                prop_assert!(l.name.to_string().bytes().all(|b| b.is_ascii_graphic() || b == b' '));
            }

            #[test]
            fn a_damaged_link_message_is_read_or_an_error_for_that_link(
                name in name_bytes(),
                flips in proptest::collection::vec((32usize..200, any::<u8>()), 1..8),
            ) {
                // Bytes past the fixed headers damaged: whatever they say,
                // the message is about ifindex 42.
                let mut m = forge::link(1, 42, &name, b"bridge", 1500, 0, None, &forge::alias(b"\xff\n"));
                for (at, byte) in flips {
                    if at < m.len() {
                        m[at] = byte;
                    }
                }
                let (h, p) = messages(&m).next().unwrap().unwrap();
                match decode(&h, p) {
                    Ok(Item::Link(l)) => prop_assert_eq!(l.index, 42),
                    Ok(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    Err(u) => prop_assert_eq!(u.ifindex, Some(42)),
                }
            }

            #[test]
            fn an_exchange_fed_any_datagrams_ends_or_waits_never_panics(
                datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..8),
            ) {
                let mut items = 0;
                socket::feed_for_fuzz(&datagrams, &mut |_| items += 1);
                prop_assert!(items <= datagrams.iter().map(Vec::len).sum::<usize>());
            }

            #[test]
            fn printable_is_printable(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let shown = printable(&bytes);
                prop_assert!(shown.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
            }
        }
    }
}
