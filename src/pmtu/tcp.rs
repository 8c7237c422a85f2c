//! The TCP probe, for paths where ICMP echo is filtered: one connection
//! per size, its MSS pinned with `TCP_MAXSEG` and "don't fragment" set with
//! the kernel's own path-MTU learning off (`IP_PMTUDISC_PROBE`,
//! `IPV6_PMTUDISC_PROBE`), so that a segment too big for the path is never
//! shrunk for us: it fits when the peer acknowledges four full segments
//! (`TCP_INFO`), which any listening kernel does whatever the application
//! reads.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::libc;

use super::search::Answer;
use super::sys::{connect, domain, getsockopt_int, new_socket, setsockopt_int, wait};

/// `tcpi_options` bit: timestamps in use (linux/tcp.h).
const TCPI_OPT_TIMESTAMPS: u8 = 1;
/// How often a TCP probe looks whether its data was acknowledged.
const ACK_POLL: Duration = Duration::from_millis(5);
/// Full segments a TCP probe sends.
const TCP_SEGMENTS: usize = 4;

/// IP and TCP headers.
fn overhead(addr: &SocketAddr) -> u32 {
    match addr {
        SocketAddr::V4(_) => 40,
        SocketAddr::V6(_) => 60,
    }
}

/// Whether TCP segments that make `size`-byte packets reach `addr`.
pub(super) fn tcp_fits(addr: SocketAddr, size: u32, timeout: Duration) -> io::Result<Answer> {
    let overhead = overhead(&addr);
    let mss = (size - overhead) as libc::c_int;
    let fd = new_socket(domain(&addr), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss)?;
    let (level, name, probe) = match addr {
        SocketAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        ),
        SocketAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ),
    };
    setsockopt_int(raw, level, name, probe)?;
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
            // The kernel sends smaller segments than asked: either the
            // peer's own MSS is smaller (a measurement of what this
            // connection can tell), or the kernel's cached path MTU toward
            // the target is below the size, which anyone can lower with a
            // forged "too big" and so is never taken as a measurement.
            let (level, name) = match addr {
                SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
                SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
            };
            if let Ok(cached) = getsockopt_int(raw, level, name) {
                if (cached as u32) < size {
                    return Err(io::Error::other(format!(
                        "the kernel's cached path MTU toward the target is {cached}, below \
                         {size}: a \"too big\" message set it, which anyone can send; not \
                         measured over TCP until it expires"
                    )));
                }
            }
            return Ok(Answer::TooBig(info.tcpi_snd_mss + options + overhead));
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
