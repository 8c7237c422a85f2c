//! The active path-MTU probe: how large a packet gets from this namespace
//! to a target and back, beyond `eth0`.
//!
//! ICMP first: echo requests with DF set (`IP_PMTUDISC_DO`), binary search
//! of the packet size between a floor (1280, the IPv6 minimum, unless asked
//! lower) and the outer MTU. A size fits when its echo reply comes back. A
//! router that cannot forward it either says so (ICMP "fragmentation
//! needed", which the kernel records as the path MTU and then refuses
//! larger sends with EMSGSIZE) or stays silent: a black hole. A raw ICMP
//! socket needs CAP_NET_RAW; without it the kernel's ping sockets are used
//! where `net.ipv4.ping_group_range` allows.
//!
//! TCP when ICMP echo gets no answer at all (filtered) and a port is given:
//! one connection per size, its MSS pinned with `TCP_MAXSEG` and DF set
//! with the kernel's own path-MTU learning off (`IP_PMTUDISC_PROBE`), so a
//! segment too big for the path is never shrunk for us: it fits when the
//! peer acknowledges four full segments (`TCP_INFO`), which any listening
//! kernel does whatever the application reads.
//!
//! Bounded: at most `2 + ceil(log2(ceiling - floor))` sizes per method,
//! each waiting at most the timeout.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

use super::sys::{connect, getsockopt_int, new_socket, setsockopt_int, wait};
use serde::Serialize;

/// The IPv4 header, ahead of the ICMP message we write.
const IP_HEADER: u32 = 20;
/// IPv4 and TCP headers.
const TCP_OVERHEAD: u32 = 40;
/// `tcpi_options` bit: timestamps in use (linux/tcp.h).
const TCPI_OPT_TIMESTAMPS: u8 = 1;
/// How often a TCP probe looks whether its data was acknowledged.
const ACK_POLL: Duration = Duration::from_millis(5);
/// Full segments a TCP probe sends.
const TCP_SEGMENTS: usize = 4;

/// A target as given: `HOST` or `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub shown: String,
    pub host: String,
    pub port: Option<u16>,
}

impl Target {
    /// Parses `HOST[:PORT]`; bad input names what is wrong.
    pub fn parse(text: &str) -> Result<Target, String> {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => {
                let port =
                    p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        format!("invalid --probe {text:?}: the port must be 1-65535")
                    })?;
                (h, Some(port))
            }
            None => (text, None),
        };
        if host.is_empty() {
            return Err(format!(
                "invalid --probe {text:?}: expected HOST or HOST:PORT"
            ));
        }
        Ok(Target {
            shown: text.to_string(),
            host: host.to_string(),
            port,
        })
    }

    fn resolve(&self) -> Option<Ipv4Addr> {
        (self.host.as_str(), self.port.unwrap_or(0))
            .to_socket_addrs()
            .ok()?
            .find_map(|a| match a {
                std::net::SocketAddr::V4(v4) => Some(*v4.ip()),
                _ => None,
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Icmp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The path carries the outer MTU.
    Clear,
    /// The path carries less than the outer MTU.
    Bottleneck,
    /// No answer at the floor size either.
    Unreachable,
    /// The target's name does not resolve to an IPv4 address.
    Unresolved,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub target: String,
    pub address: Option<String>,
    pub method: Option<Method>,
    pub outcome: Outcome,
    /// The largest packet (IP header included) that got through.
    pub path_mtu: Option<u32>,
    /// Packets above `path_mtu` vanished without an ICMP "fragmentation
    /// needed" (ICMP only: TCP cannot tell).
    pub black_hole: bool,
    /// The largest size an answer named: a router's ICMP "fragmentation
    /// needed" (ICMP), or the peer's own MSS plus headers (TCP).
    pub reported_mtu: Option<u32>,
    pub sizes_tried: u32,
    pub took_ms: u64,
    /// What was tried and why it gave up, for a person.
    pub note: String,
}

impl ProbeResult {
    /// Nothing measured yet toward `target`.
    fn unmeasured(target: &str) -> ProbeResult {
        ProbeResult {
            target: target.to_string(),
            address: None,
            method: None,
            outcome: Outcome::Unreachable,
            path_mtu: None,
            black_hole: false,
            reported_mtu: None,
            sizes_tried: 0,
            took_ms: 0,
            note: String::new(),
        }
    }
}

/// What one size did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Fits,
    /// A router said the path takes at most this.
    TooBig(u32),
    Silent,
}

/// Probes `target` between `floor` and `ceiling` bytes.
pub fn probe(target: &Target, floor: u32, ceiling: u32, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let mut result = ProbeResult::unmeasured(&target.shown);
    let Some(addr) = target.resolve() else {
        result.outcome = Outcome::Unresolved;
        result.note = format!("{} does not resolve to an IPv4 address", target.host);
        return result;
    };
    result.address = Some(addr.to_string());
    let icmp = match Icmp::open(addr) {
        Ok(mut socket) => search(&mut result, floor, ceiling, |size| {
            socket.echo(size, timeout)
        }),
        Err(e) => Err(format!(
            "no ICMP socket ({e}; needs CAP_NET_RAW or ping_group_range)"
        )),
    };
    match icmp {
        Ok(()) => result.method = Some(Method::Icmp),
        Err(why) => {
            result.note = why;
            if let Some(port) = target.port {
                result.sizes_tried = 0;
                let sock = SocketAddrV4::new(addr, port);
                match search(&mut result, floor, ceiling, |size| {
                    tcp_fits(sock, size, timeout)
                }) {
                    Ok(()) => {
                        result.method = Some(Method::Tcp);
                        result.note = format!("{}; measured over TCP port {port}", result.note);
                    }
                    Err(why) => result.note = format!("{}; TCP port {port}: {why}", result.note),
                }
            }
        }
    }
    result.took_ms = started.elapsed().as_millis() as u64;
    result
}

/// Binary search with `try_size`; fills the result, or says why the target
/// cannot be measured.
fn search(
    result: &mut ProbeResult,
    floor: u32,
    ceiling: u32,
    mut try_size: impl FnMut(u32) -> io::Result<Answer>,
) -> Result<(), String> {
    let mut attempt = |size: u32, result: &mut ProbeResult| -> Result<Answer, String> {
        result.sizes_tried += 1;
        try_size(size).map_err(|e| e.to_string())
    };
    match attempt(floor, result)? {
        Answer::Fits => {}
        Answer::TooBig(mtu) => {
            return Err(format!(
                "even {floor} bytes are too big (a router says {mtu})"
            ))
        }
        Answer::Silent => return Err(format!("no answer to {floor}-byte probes")),
    }
    let (mut fits, mut fails) = (floor, ceiling + 1);
    let mut silent_above = false;
    let mut reported = None;
    let mut next = ceiling;
    while fails - fits > 1 {
        match attempt(next, result)? {
            Answer::Fits => {
                fits = next;
                // The size a router named fits: the path is exactly that.
                if reported == Some(next) {
                    fails = next + 1;
                }
            }
            Answer::Silent => {
                fails = next;
                silent_above = true;
            }
            Answer::TooBig(mtu) => {
                fails = next;
                reported = Some(mtu);
                // The router's figure is the likely answer: try it next.
                if mtu > fits && mtu < fails {
                    next = mtu;
                    continue;
                }
            }
        }
        next = fits + (fails - fits) / 2;
    }
    result.path_mtu = Some(fits);
    result.reported_mtu = reported;
    result.black_hole = fits < ceiling && silent_above && reported.is_none();
    result.outcome = if fits >= ceiling {
        Outcome::Clear
    } else {
        Outcome::Bottleneck
    };
    Ok(())
}

/// A connected ICMP socket: raw where allowed, else a ping socket.
struct Icmp {
    fd: OwnedFd,
    raw: bool,
    id: u16,
    seq: u16,
}

impl Icmp {
    fn open(addr: Ipv4Addr) -> io::Result<Icmp> {
        let (fd, raw) = match new_socket(libc::SOCK_RAW, libc::IPPROTO_ICMP) {
            Ok(fd) => (fd, true),
            Err(_) => (new_socket(libc::SOCK_DGRAM, libc::IPPROTO_ICMP)?, false),
        };
        setsockopt_int(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?;
        connect(fd.as_raw_fd(), SocketAddrV4::new(addr, 0))?;
        Ok(Icmp {
            fd,
            raw,
            id: (std::process::id() & 0xffff) as u16,
            seq: 0,
        })
    }

    /// One echo of `size` bytes (IP header included).
    fn echo(&mut self, size: u32, timeout: Duration) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = vec![0u8; (size - IP_HEADER) as usize];
        packet[0] = 8; // echo request
        packet[4..6].copy_from_slice(&self.id.to_be_bytes());
        packet[6..8].copy_from_slice(&self.seq.to_be_bytes());
        for (i, b) in packet[8..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid fd and a buffer with its length.
        let sent = unsafe { libc::send(fd, packet.as_ptr().cast(), packet.len(), 0) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            // The kernel already knows the path is smaller: a router said so.
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                return Ok(Answer::TooBig(self.known_mtu()?));
            }
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while wait(fd, libc::POLLIN, deadline)? {
            // SAFETY: a valid fd and a buffer with its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EMSGSIZE) {
                    return Ok(Answer::TooBig(self.known_mtu()?));
                }
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                // ICMP errors about our echo (host unreachable): no answer.
                return Ok(Answer::Silent);
            }
            let msg = &buf[..n as usize];
            let icmp = if self.raw {
                let ihl = ((msg.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
                msg.get(ihl..).unwrap_or_default()
            } else {
                msg
            };
            if icmp.len() < 8 {
                continue;
            }
            let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            let id = u16::from_be_bytes([icmp[4], icmp[5]]);
            match icmp[0] {
                // The kernel chooses a ping socket's id.
                0 if seq == self.seq && (!self.raw || id == self.id) => return Ok(Answer::Fits),
                // A raw socket also sees "fragmentation needed" itself.
                3 if icmp[1] == 4 && self.raw => {
                    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]) as u32;
                    return Ok(Answer::TooBig(mtu.max(1)));
                }
                _ => {}
            }
        }
        // Silence; unless the kernel heard a "too big" meanwhile.
        match self.known_mtu() {
            Ok(mtu) if mtu < size => Ok(Answer::TooBig(mtu)),
            _ => Ok(Answer::Silent),
        }
    }

    /// The path MTU the kernel has for the connected destination.
    fn known_mtu(&self) -> io::Result<u32> {
        getsockopt_int(self.fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MTU).map(|m| m as u32)
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether TCP segments that make `size`-byte packets reach `addr`.
fn tcp_fits(addr: SocketAddrV4, size: u32, timeout: Duration) -> io::Result<Answer> {
    let mss = (size - TCP_OVERHEAD) as libc::c_int;
    let fd = new_socket(libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss)?;
    setsockopt_int(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )?;
    let deadline = Instant::now() + timeout;
    match connect(raw, addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if !wait(raw, libc::POLLOUT, deadline)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            let err = getsockopt_int(raw, libc::SOL_SOCKET, libc::SO_ERROR)?;
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e),
    }
    let data = vec![0x55u8; mss as usize * TCP_SEGMENTS];
    let mut written = 0;
    while written < data.len() {
        // SAFETY: a valid fd and the unwritten part of the buffer.
        let n = unsafe {
            libc::send(
                raw,
                data[written..].as_ptr().cast(),
                data.len() - written,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                if !wait(raw, libc::POLLOUT, deadline)? {
                    return Ok(Answer::Silent);
                }
                continue;
            }
            return Err(e);
        }
        written += n as usize;
    }
    loop {
        // SAFETY: tcp_info is plain data; the kernel fills at most its size.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: a valid fd and a tcp_info with its length.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Segments carry `mss` less the TCP options in use (timestamps:
        // 12 bytes), so that packets are `size` bytes. A peer whose own MSS
        // is smaller limits what this connection can tell.
        let options = if info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0 {
            12
        } else {
            0
        };
        if info.tcpi_snd_mss + options < mss as u32 {
            return Ok(Answer::TooBig(info.tcpi_snd_mss + options + TCP_OVERHEAD));
        }
        if info.tcpi_unacked == 0 {
            return Ok(Answer::Fits);
        }
        if Instant::now() >= deadline {
            return Ok(Answer::Silent);
        }
        std::thread::sleep(ACK_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("198.51.100.10:443").unwrap(),
            Target {
                shown: "198.51.100.10:443".into(),
                host: "198.51.100.10".into(),
                port: Some(443)
            }
        );
        assert_eq!(Target::parse("example.org").unwrap().port, None);
        assert!(Target::parse("h:0").is_err());
        assert!(Target::parse(":80").is_err());
        assert!(Target::parse("h:http").is_err());
    }

    #[test]
    fn checksum_of_a_known_echo() {
        // type 8, code 0, id 1, seq 1, no payload: checksum 0xf7fd.
        let packet = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&packet), 0xf7fd);
    }

    /// A path of `mtu` that says "too big" (`reports`) or stays silent.
    fn path(mtu: u32, reports: bool) -> impl FnMut(u32) -> io::Result<Answer> {
        move |size| {
            Ok(if size <= mtu {
                Answer::Fits
            } else if reports {
                Answer::TooBig(mtu)
            } else {
                Answer::Silent
            })
        }
    }

    fn empty() -> ProbeResult {
        ProbeResult::unmeasured("t")
    }

    #[test]
    fn a_silent_bottleneck_is_found_exactly_and_called_a_black_hole() {
        let mut r = empty();
        search(&mut r, 1280, 1500, path(1400, false)).unwrap();
        assert_eq!(r.path_mtu, Some(1400));
        assert!(r.black_hole);
        assert_eq!(r.outcome, Outcome::Bottleneck);
        assert!(r.sizes_tried <= 2 + 8, "{}", r.sizes_tried);
    }

    #[test]
    fn a_reported_bottleneck_takes_three_sizes() {
        let mut r = empty();
        search(&mut r, 1280, 1500, path(1400, true)).unwrap();
        assert_eq!((r.path_mtu, r.reported_mtu), (Some(1400), Some(1400)));
        assert!(!r.black_hole);
        assert_eq!(r.sizes_tried, 3);
    }

    #[test]
    fn a_clear_path_takes_two_sizes() {
        let mut r = empty();
        search(&mut r, 1280, 1450, path(9000, false)).unwrap();
        assert_eq!(
            (r.path_mtu, r.outcome, r.sizes_tried),
            (Some(1450), Outcome::Clear, 2)
        );
    }

    #[test]
    fn no_answer_at_the_floor_is_no_measurement() {
        let mut r = empty();
        let err = search(&mut r, 1280, 1500, |_| Ok(Answer::Silent)).unwrap_err();
        assert!(err.contains("no answer to 1280-byte probes"), "{err}");
        assert_eq!(r.path_mtu, None);
    }
}
