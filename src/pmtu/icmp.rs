//! ICMP echo with "don't fragment", IPv4 or IPv6: one request of a given
//! size (IP header included), and what came back.
//!
//! IPv4: `IP_PMTUDISC_PROBE` (don't fragment, whatever path MTU the kernel
//! has cached); a router that cannot forward says so with "fragmentation
//! needed" (type 3 code 4). IPv6: `IPV6_DONTFRAG` and `IPV6_PMTUDISC_PROBE`;
//! a router says "packet too big" (type 2, the MTU in the message). The
//! cache is ignored so that a path that widened is measured wide at once,
//! not after the kernel's entry expires (10 minutes); only a packet above
//! the interface's own MTU is refused (EMSGSIZE). A router's message
//! comes through the socket's error queue (`IP_RECVERR`, `IPV6_RECVERR`),
//! matched to the echo it quotes: type, identifier and sequence number,
//! both random for each probe (a forged "too big" from anywhere, a pod
//! sending to the node's address among them, must guess 32 random bits
//! of an echo in flight). The kernel's cached path MTU is never taken as a
//! measurement: anyone can lower it with such a message. A router's
//! figure is only a hint of the next size to try, and a size is narrower
//! than the path only once an echo passed at it and the next one up did
//! not (`search.rs`).
//! A raw socket needs CAP_NET_RAW; without it the kernel's ping sockets
//! are used where `net.ipv4.ping_group_range` allows.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

use super::search::Answer;
use super::sys::{connect, domain, new_socket, recv_error, setsockopt_int, wait, QueuedError};

/// The IPv4 header ahead of the ICMP message we write.
const IPV4_HEADER: u32 = 20;
/// The IPv6 header ahead of the ICMPv6 message we write.
const IPV6_HEADER: u32 = 40;

/// A connected ICMP socket: raw where allowed, else a ping socket.
pub(super) struct Icmp {
    fd: OwnedFd,
    v6: bool,
    raw: bool,
    /// The echo identifier: ours (random) on a raw socket, the kernel's
    /// on a ping socket (read back after each send).
    id: u16,
    seq: u16,
}

/// Random bits from the kernel (getrandom), for identifiers a forger
/// cannot predict.
fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: a buffer of its length; 0 flags (urandom, blocks only
    // before the pool is ever initialised, at boot).
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 2 {
        u16::from_ne_bytes(b)
    } else {
        // No getrandom: the clock's nanoseconds, better than a constant.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16)
    }
}

impl Icmp {
    pub(super) fn open(addr: IpAddr) -> io::Result<Icmp> {
        let to = SocketAddr::new(addr, 0);
        let v6 = to.is_ipv6();
        let protocol = if v6 {
            libc::IPPROTO_ICMPV6
        } else {
            libc::IPPROTO_ICMP
        };
        let (fd, raw) = match new_socket(domain(&to), libc::SOCK_RAW, protocol) {
            Ok(fd) => (fd, true),
            Err(_) => (new_socket(domain(&to), libc::SOCK_DGRAM, protocol)?, false),
        };
        let raw_fd = fd.as_raw_fd();
        if v6 {
            setsockopt_int(
                raw_fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )?;
            setsockopt_int(raw_fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)?;
            setsockopt_int(raw_fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
        } else {
            setsockopt_int(
                raw_fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )?;
            setsockopt_int(raw_fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)?;
        }
        connect(raw_fd, to)?;
        Ok(Icmp {
            fd,
            v6,
            raw,
            id: random_u16(),
            seq: random_u16(),
        })
    }

    /// One echo of `size` bytes (IP header included).
    pub(super) fn echo(&mut self, size: u32, timeout: Duration) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let fd = self.fd.as_raw_fd();
        // Errors about earlier echoes (a late "too big") say nothing about
        // this one.
        while recv_error(fd)?.is_some() {}
        let header = if self.v6 { IPV6_HEADER } else { IPV4_HEADER };
        let mut packet = vec![0u8; (size - header) as usize];
        // Echo request; the kernel sums an ICMPv6 message itself.
        packet[0] = self.request();
        packet[4..6].copy_from_slice(&self.id.to_be_bytes());
        packet[6..8].copy_from_slice(&self.seq.to_be_bytes());
        for (i, b) in packet[8..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        if !self.v6 {
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        // SAFETY: a valid fd and a buffer with its length.
        let sent = unsafe { libc::send(fd, packet.as_ptr().cast(), packet.len(), 0) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            // Above this end's own interface MTU: too big, no figure.
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                return Ok(Answer::TooBig(0));
            }
            return Err(e);
        }
        if !self.raw {
            // A ping socket's identifier is the kernel's: its port.
            if let Some(port) = local_port(fd) {
                self.id = port;
            }
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while wait(fd, libc::POLLIN, deadline)? {
            // A router's "too big" about this echo, from the error queue:
            // the kernel hands it over whatever its own cache says (it
            // keeps only figures that lower the cached path MTU).
            while let Some(error) = recv_error(fd)? {
                if let Some(answer) = self.about_ours(&error) {
                    return Ok(answer);
                }
            }
            // SAFETY: a valid fd and a buffer with its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                // The pending error of a queued entry, read above or next.
                if e.raw_os_error() == Some(libc::EMSGSIZE)
                    || matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    )
                {
                    continue;
                }
                // ICMP errors about our echo (host unreachable): no answer.
                return Ok(Answer::Silent);
            }
            let msg = &buf[..n as usize];
            // A raw IPv4 socket hands over the IP header too; IPv6 never.
            let icmp = if self.raw && !self.v6 {
                let ihl = ((msg.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
                msg.get(ihl..).unwrap_or_default()
            } else {
                msg
            };
            if self.is_our_reply(icmp) {
                return Ok(Answer::Fits);
            }
        }
        Ok(Answer::Silent)
    }

    /// The echo request's ICMP type.
    fn request(&self) -> u8 {
        if self.v6 {
            128
        } else {
            8
        }
    }

    /// Whether a received ICMP message is the reply to our latest echo.
    fn is_our_reply(&self, icmp: &[u8]) -> bool {
        if icmp.len() < 8 {
            return false;
        }
        let id = u16::from_be_bytes([icmp[4], icmp[5]]);
        let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
        let reply = if self.v6 { 129 } else { 0 };
        icmp[0] == reply && seq == self.seq && id == self.id
    }

    /// A router's "fragmentation needed" or "packet too big" about our
    /// latest echo (the queued error quotes its header), as an answer.
    fn about_ours(&self, error: &QueuedError) -> Option<Answer> {
        let from_router = matches!(
            error.origin,
            libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6
        );
        let echo = error.quoted.get(..8)?;
        let ours = echo[0] == self.request()
            && u16::from_be_bytes([echo[4], echo[5]]) == self.id
            && u16::from_be_bytes([echo[6], echo[7]]) == self.seq;
        (from_router && ours && error.errno == libc::EMSGSIZE)
            .then(|| Answer::TooBig(error.info.max(1)))
    }
}

/// The local port of a socket (a ping socket's echo identifier), in
/// host order.
fn local_port(fd: std::os::fd::RawFd) -> Option<u16> {
    // SAFETY: zeroed storage is a valid sockaddr_storage to be filled.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid fd and storage with its length.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // Both sockaddr_in and sockaddr_in6 keep the port right after the
    // family, in network order.
    // SAFETY: the kernel wrote at least the family and the port.
    let port = unsafe {
        *(&addr as *const libc::sockaddr_storage)
            .cast::<u8>()
            .add(2)
            .cast::<[u8; 2]>()
    };
    Some(u16::from_be_bytes(port))
}

/// The Internet checksum (RFC 1071).
pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo() {
        // type 8, code 0, id 1, seq 1, no payload: checksum 0xf7fd.
        let packet = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&packet), 0xf7fd);
    }
}
