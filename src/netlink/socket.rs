//! The one netlink socket: every request, dump and notification goes
//! through it, from the runtime thread ([`AsyncSocket`]) or from a thread
//! of its own ([`Socket::exchange`]), and every reply is read by the same
//! loop ([`Exchange`]) through the decoder in `wire.rs`.
//!
//! Only the kernel's datagrams are read. Any process with NET_ADMIN in a
//! namespace (a pod) may send a netlink datagram to a multicast group
//! there, or to another socket's port, and the kernel hands it on as it
//! would its own: a forged link notification, or a forged answer to one of
//! our requests. Every datagram's sender is looked at before a byte of it
//! is read: one not from the kernel (port 0) is dropped unread and
//! counted ([`Read::NotFromKernel`]), as systemd-networkd does.
//!
//! The socket is non-blocking and every exchange has a deadline: a reply
//! that never comes (or comes in a form nothing can read) ends the request
//! with an error naming it, after at most [`DEADLINE`], never a wait
//! without end. A message that cannot be decoded is handed to the caller
//! as an error for its one object; a datagram that cannot be split fails
//! only the exchange it arrived in. The kernel itself still runs a request
//! inside `sendmsg`, under the RTNL lock, and nothing in user space can
//! shorten that wait: it is the node's floor, the same for dockerd.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::libc;
use tokio::io::unix::AsyncFd;

use super::wire::{self, Item, Request, Undecodable};
use super::NetlinkError;

/// How long any one request, dump or wait for a reply may take.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The largest datagram read; a larger one (the kernel never sends one)
/// is dropped and reported.
const MAX_DATAGRAM: usize = 4 << 20;

/// A netlink route socket in the namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    /// A dump abandoned at its deadline: the kernel goes on with it as it
    /// is read, and refuses another dump on this socket until it is done.
    abandoned: Option<u32>,
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Socket {
    /// A `NETLINK_ROUTE` socket in the calling thread's network namespace,
    /// non-blocking, subscribed to the multicast `groups` (a bitmask of
    /// `1 << (RTNLGRP_* - 1)`), with a receive buffer of `rcvbuf` bytes
    /// when given.
    pub fn open(groups: u32, rcvbuf: Option<usize>) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned from here on.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw was just returned by socket(2) and is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is "any port, no groups".
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: a valid fd and a sockaddr_nl with its size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Requests go to the kernel (port 0): connected, plain send().
        addr.nl_groups = 0;
        // SAFETY: a valid fd and a sockaddr_nl with its size.
        let rc = unsafe {
            libc::connect(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(size) = rcvbuf {
            // Not fatal: without CAP_NET_ADMIN the kernel caps the size
            // (SO_RCVBUFFORCE is refused), and overruns are handled anyway.
            let size = size as libc::c_int;
            for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
                // SAFETY: a valid fd and a pointer to an int with its size.
                let rc = unsafe {
                    libc::setsockopt(
                        raw,
                        libc::SOL_SOCKET,
                        opt,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if rc == 0 {
                    break;
                }
            }
        }
        Ok(Socket {
            fd,
            seq: 0,
            abandoned: None,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends to the kernel (the socket is connected to it).
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: a valid fd and a buffer with its length.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends `request` and reads its answer on this thread, blocking until
    /// it is complete or `deadline` passes; every item of the answer goes
    /// to `each`. `op` names the request in errors.
    pub fn exchange(
        &mut self,
        request: &mut Request,
        op: &dyn Fn() -> String,
        deadline: Instant,
        each: &mut dyn FnMut(Result<Item, Undecodable>),
    ) -> Result<(), NetlinkError> {
        self.drain_abandoned(deadline)
            .map_err(|stopped| stopped.error(op()))?;
        let seq = self.next_seq();
        let dump = request.is_dump();
        self.send(request.with_seq(seq))
            .map_err(|source| NetlinkError::Io { op: op(), source })?;
        let mut end = None;
        let read = self.read_until(
            &mut Exchange::one(seq, dump),
            deadline,
            &mut |_, item| each(item),
            &mut |_, finished| end = Some(finished),
        );
        if let Err(stopped) = read {
            if dump && matches!(stopped, Stopped::TimedOut) {
                self.abandoned = Some(seq);
            }
            return Err(stopped.error(op()));
        }
        end.map_or(Ok(()), |finished| finished.into_result(op))
    }

    /// Sends every request of `requests` (none of them a dump) in one
    /// datagram and reads their answers, blocking until each is answered or
    /// `deadline` passes: one `sendmsg`, in which the kernel runs them one
    /// after the other, each taking the RTNL lock as soon as it is free,
    /// with no return to user space in between. `op(i)` names request `i`
    /// in errors; `answered(i, result)` is called once for each request,
    /// as soon as its answer is read (or the exchange fails).
    pub fn exchange_all(
        &mut self,
        requests: &mut [Request],
        op: &dyn Fn(usize) -> String,
        deadline: Instant,
        answered: &mut dyn FnMut(usize, Result<(), NetlinkError>),
    ) {
        let mut bytes = Vec::new();
        let mut waiting: Vec<(u32, usize)> = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter_mut().enumerate() {
            debug_assert!(!request.is_dump(), "exchange_all takes no dumps");
            let seq = self.next_seq();
            bytes.extend_from_slice(request.with_seq(seq));
            while !bytes.len().is_multiple_of(4) {
                bytes.push(0);
            }
            waiting.push((seq, i));
        }
        let mut exchange = Exchange::all(waiting);
        let read = self
            .drain_abandoned(deadline)
            .and_then(|()| self.send(&bytes).map_err(Stopped::Io))
            .and_then(|()| {
                self.read_until(
                    &mut exchange,
                    deadline,
                    &mut |_, _| {},
                    &mut |i, finished| answered(i, finished.into_result(&|| op(i))),
                )
            });
        if let Err(stopped) = read {
            for i in exchange.waiting() {
                answered(i, Err(stopped.error(op(i))));
            }
        }
    }

    /// Reads the rest of a dump abandoned at its deadline, so that its
    /// messages are not taken for the next request's.
    fn drain_abandoned(&mut self, deadline: Instant) -> Result<(), Stopped> {
        while let Some(seq) = self.abandoned {
            self.read_until(
                &mut Exchange::one(seq, true),
                deadline,
                &mut |_, _| {},
                &mut |_, _| {},
            )?;
            self.abandoned = None;
        }
        Ok(())
    }

    /// Reads datagrams into `exchange` until every answer in it has ended,
    /// or `deadline` passes: checked after every datagram too, since a
    /// dump keeps coming for as long as the namespace has links.
    fn read_until(
        &self,
        exchange: &mut Exchange,
        deadline: Instant,
        each: &mut dyn FnMut(usize, Result<Item, Undecodable>),
        ended: &mut dyn FnMut(usize, Finished),
    ) -> Result<(), Stopped> {
        let fd = self.fd.as_raw_fd();
        while !exchange.is_over() {
            match recv(fd, |d| exchange.feed(d, each, ended)) {
                Ok(_) if !exchange.is_over() && Instant::now() >= deadline => {
                    return Err(Stopped::TimedOut)
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match wait_readable(fd, deadline) {
                        Ok(true) => {}
                        Ok(false) => return Err(Stopped::TimedOut),
                        Err(e) => return Err(Stopped::Io(e)),
                    }
                }
                Err(e) => return Err(Stopped::Io(e)),
            }
        }
        Ok(())
    }
}

/// Why answers stopped being read before every one ended.
#[derive(Debug)]
enum Stopped {
    TimedOut,
    Io(io::Error),
}

impl Stopped {
    /// The error for one request, named `op`.
    fn error(&self, op: String) -> NetlinkError {
        match self {
            Stopped::TimedOut => NetlinkError::TimedOut {
                op,
                after: DEADLINE,
            },
            Stopped::Io(e) => NetlinkError::Io {
                op,
                source: io::Error::new(e.kind(), e.to_string()),
            },
        }
    }
}

/// How an answer ended.
#[derive(Debug, Clone, Copy)]
enum Finished {
    Done,
    Refused(i32),
    Malformed(wire::Malformed),
}

impl Finished {
    fn into_result(self, op: &dyn Fn() -> String) -> Result<(), NetlinkError> {
        match self {
            Finished::Done => Ok(()),
            Finished::Refused(errno) => Err(NetlinkError::Refused { op: op(), errno }),
            Finished::Malformed(m) => Err(NetlinkError::Undecodable {
                op: op(),
                why: m.to_string(),
            }),
        }
    }
}

/// The answers to requests sent together (one, or a datagram of several),
/// read datagram by datagram: messages of other requests (an earlier dump
/// abandoned at its deadline) are skipped; each answer ends with the
/// kernel's acknowledgement or refusal, or with the end of its dump.
struct Exchange {
    /// (sequence number, the request's index) of the answers not ended yet.
    waiting: Vec<(u32, usize)>,
    /// One dump: an acknowledgement does not end it, NLMSG_DONE does.
    dump: bool,
}

impl Exchange {
    /// One request, index 0.
    fn one(seq: u32, dump: bool) -> Exchange {
        Exchange {
            waiting: vec![(seq, 0)],
            dump,
        }
    }

    /// Requests sent in one datagram (no dump among them).
    fn all(waiting: Vec<(u32, usize)>) -> Exchange {
        Exchange {
            waiting,
            dump: false,
        }
    }

    fn is_over(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The indexes of the answers not ended yet.
    fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting.iter().map(|(_, i)| *i)
    }

    /// Reads one datagram: the items of answer `i` go to `each(i, …)`, and
    /// its end to `ended(i, …)`, once. A datagram that cannot be split ends
    /// every answer still waiting: whose were in it cannot be told.
    fn feed(
        &mut self,
        datagram: &[u8],
        each: &mut dyn FnMut(usize, Result<Item, Undecodable>),
        ended: &mut dyn FnMut(usize, Finished),
    ) {
        for message in wire::messages(datagram) {
            let (header, payload) = match message {
                Ok(m) => m,
                Err(m) => {
                    for (_, i) in self.waiting.drain(..) {
                        ended(i, Finished::Malformed(m));
                    }
                    return;
                }
            };
            let Some(at) = self.waiting.iter().position(|(seq, _)| *seq == header.seq) else {
                continue;
            };
            let i = self.waiting[at].1;
            let end = match wire::decode(&header, payload) {
                Ok(Item::Ack) if !self.dump => Finished::Done,
                Ok(Item::Ack) => continue,
                Ok(Item::Refused(errno) | Item::Done(Some(errno))) => Finished::Refused(errno),
                Ok(Item::Done(None)) => Finished::Done,
                Ok(item) => {
                    each(i, Ok(item));
                    continue;
                }
                Err(undecodable) => {
                    each(i, Err(undecodable));
                    continue;
                }
            };
            self.waiting.swap_remove(at);
            ended(i, end);
        }
    }
}

/// Feeds `datagrams` to one exchange (numbered 1, a dump), as the reading
/// loop does: for fuzzing the reply path without a socket.
#[cfg(test)]
pub(crate) fn feed_for_fuzz(
    datagrams: &[Vec<u8>],
    each: &mut dyn FnMut(Result<Item, Undecodable>),
) {
    let mut exchange = Exchange::one(1, true);
    for d in datagrams {
        exchange.feed(d, &mut |_, item| each(item), &mut |_, _| {});
        if exchange.is_over() {
            return;
        }
    }
}

thread_local! {
    /// Where datagrams are read: one buffer per thread, never per socket
    /// (the node agent holds three sockets per pod).
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer kept past this size is given back after use.
const KEEP: usize = 64 << 10;

/// Reads one queued datagram and hands it to `f`; `WouldBlock` when none
/// is queued, `ENOBUFS` (as the kernel reports it) when datagrams were
/// dropped for want of room.
pub fn recv<R>(fd: RawFd, f: impl FnOnce(&[u8]) -> R) -> io::Result<Read<R>> {
    let flags = libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    // SAFETY: zeroed storage is a valid sockaddr to be filled.
    let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let size = loop {
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: a zero-length read: the kernel writes nothing but the
        // sender's address, and returns the datagram's length (MSG_TRUNC).
        let n = unsafe {
            libc::recvfrom(
                fd,
                std::ptr::null_mut(),
                0,
                flags,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut len,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if i32::from(from.nl_family) == libc::AF_NETLINK && from.nl_pid != 0 {
        // SAFETY: a zero-length read that consumes the datagram.
        unsafe { libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT) };
        return Ok(Read::NotFromKernel);
    }
    if size > MAX_DATAGRAM {
        // SAFETY: a zero-length read that consumes the datagram.
        unsafe { libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT) };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a netlink datagram of {size} bytes; dropped"),
        ));
    }
    BUFFER.with(|buffer| {
        let mut buf = buffer.borrow_mut();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let got = loop {
            // SAFETY: a valid fd and a buffer of at least `size` bytes.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), size, libc::MSG_DONTWAIT) };
            if n >= 0 {
                break (n as usize).min(size);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let result = f(&buf[..got]);
        if buf.len() > KEEP {
            buf.truncate(KEEP);
            buf.shrink_to_fit();
        }
        Ok(Read::Kernel(result))
    })
}

/// What one datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<R> {
    /// The kernel's, handed to the reader.
    Kernel(R),
    /// Another process's (a pod's forgery): dropped unread.
    NotFromKernel,
}

/// Waits until `fd` is readable or `deadline` passes (false).
fn wait_readable(fd: RawFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up: never back before the deadline.
        let ms = left
            .as_nanos()
            .div_ceil(1_000_000)
            .clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one pollfd, valid for the call.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A [`Socket`] driven by the tokio runtime it was registered with.
pub struct AsyncSocket {
    fd: AsyncFd<Socket>,
}

impl AsyncSocket {
    /// Registers `socket` with the current runtime.
    pub fn new(socket: Socket) -> io::Result<AsyncSocket> {
        // SAFETY: the descriptor is the Socket's own, which the AsyncFd
        // owns and so keeps open, unchanged, for as long as it is
        // registered.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(AsyncSocket { fd })
    }

    /// [`Socket::exchange`] without blocking the thread: the task waits.
    pub async fn exchange(
        &mut self,
        request: &mut Request,
        op: &(dyn Fn() -> String + Sync),
        deadline: Instant,
        each: &mut (dyn FnMut(Result<Item, Undecodable>) + Send),
    ) -> Result<(), NetlinkError> {
        let timed_out = || NetlinkError::TimedOut {
            op: op(),
            after: DEADLINE,
        };
        let until = tokio::time::Instant::from_std(deadline);
        while let Some(seq) = self.fd.get_ref().abandoned {
            let mut drain = Exchange::one(seq, true);
            tokio::time::timeout_at(until, self.read_until(&mut drain, op, &mut |_| {}))
                .await
                .map_err(|_| timed_out())??;
            self.fd.get_mut().abandoned = None;
        }
        let socket = self.fd.get_mut();
        let seq = socket.next_seq();
        let dump = request.is_dump();
        socket
            .send(request.with_seq(seq))
            .map_err(|source| NetlinkError::Io { op: op(), source })?;
        let mut exchange = Exchange::one(seq, dump);
        match tokio::time::timeout_at(until, self.read_until(&mut exchange, op, each)).await {
            Ok(finished) => finished?.into_result(op),
            Err(_) => {
                if dump {
                    self.fd.get_mut().abandoned = Some(seq);
                }
                Err(timed_out())
            }
        }
    }

    async fn read_until(
        &self,
        exchange: &mut Exchange,
        op: &(dyn Fn() -> String + Sync),
        each: &mut (dyn FnMut(Result<Item, Undecodable>) + Send),
    ) -> Result<Finished, NetlinkError> {
        let mut end = Finished::Done;
        while !exchange.is_over() {
            self.next(|d| {
                exchange.feed(d, &mut |_, item| each(item), &mut |_, finished| {
                    end = finished
                })
            })
            .await
            .map_err(|source| NetlinkError::Io { op: op(), source })?;
            if !exchange.is_over() {
                // A dump's next datagram is always ready (the kernel makes
                // it while the last is read): without a turn given back
                // here, a pod with links by the thousand would hold the
                // runtime every other pod's enforcer runs on for as long as
                // they take, and the caller's deadline would never be
                // looked at.
                tokio::task::yield_now().await;
            }
        }
        Ok(end)
    }

    /// The next datagram, handed to `f` when it arrives (unless it is not
    /// the kernel's).
    pub async fn next<R>(&self, mut f: impl FnMut(&[u8]) -> R) -> io::Result<Read<R>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| recv(s.as_raw_fd(), &mut f)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::wire::forge;

    /// A socket whose "kernel" is the other end of a datagram pair: what
    /// it answers, and when, is the test's.
    fn pair() -> (Socket, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two fds, which are ours from here on.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: both fds were just made and are owned once each.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (
            Socket {
                fd: ours,
                seq: 0,
                abandoned: None,
            },
            theirs,
        )
    }

    fn answer(fd: &OwnedFd, datagram: &[u8]) {
        // SAFETY: a valid fd and a buffer with its length.
        let n = unsafe { libc::send(fd.as_raw_fd(), datagram.as_ptr().cast(), datagram.len(), 0) };
        assert_eq!(n as usize, datagram.len());
    }

    fn op() -> String {
        "reading link ifindex 7".into()
    }

    /// Runs one exchange whose answers were queued beforehand (the
    /// request is numbered 1).
    fn exchange_with(
        answers: &[Vec<u8>],
        request: &mut Request,
    ) -> (
        Result<(), NetlinkError>,
        Vec<Result<Item, Undecodable>>,
        Duration,
    ) {
        let (mut socket, theirs) = pair();
        for a in answers {
            answer(&theirs, a);
        }
        let mut items = Vec::new();
        let began = Instant::now();
        let deadline = began + Duration::from_millis(300);
        let result = socket.exchange(request, &op, deadline, &mut |i| items.push(i));
        (result, items, began.elapsed())
    }

    #[test]
    fn an_answer_that_never_comes_ends_at_the_deadline() {
        let (result, items, took) = exchange_with(&[], &mut Request::get_link(7));
        assert!(
            matches!(result, Err(NetlinkError::TimedOut { .. })),
            "{result:?}"
        );
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("reading link ifindex 7"));
        assert!(items.is_empty());
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn an_undecodable_reply_is_an_error_for_its_object_and_the_request_ends() {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&7u32.to_ne_bytes());
        body.extend(forge::attr(4, &[1, 2])); // an MTU of two bytes
        let bad = forge::message(wire::RTM_NEWLINK, 0, 1, &body);
        let (result, items, took) = exchange_with(
            &[[bad, forge::ack(1, 0)].concat()],
            &mut Request::get_link(7),
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().ifindex, Some(7));
        assert!(took < Duration::from_millis(100), "{took:?}");
    }

    #[test]
    fn a_name_of_any_bytes_is_answered() {
        let link = forge::link(
            1,
            7,
            b"e\xff\n",
            b"veth",
            1500,
            0,
            Some((3, 0)),
            &forge::alias(b"\xfe\n"),
        );
        let (result, items, _) =
            exchange_with(&[link, forge::ack(1, 0)], &mut Request::get_link(7));
        assert!(result.is_ok());
        let Ok(Item::Link(l)) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(l.name.as_bytes(), b"e\xff\n");
    }

    #[test]
    fn a_datagram_that_cannot_be_split_fails_the_exchange_at_once() {
        let (result, _, took) = exchange_with(&[vec![0xff; 40]], &mut Request::get_link(7));
        assert!(
            matches!(result, Err(NetlinkError::Undecodable { .. })),
            "{result:?}"
        );
        assert!(took < Duration::from_millis(100));
    }

    #[test]
    fn stale_answers_are_skipped_and_a_refusal_is_an_error() {
        let stale = forge::link(9, 7, b"old", b"veth", 1500, 0, None, &[]);
        let (result, items, _) =
            exchange_with(&[stale, forge::ack(1, 19)], &mut Request::get_link(7));
        assert!(items.is_empty());
        match result {
            Err(NetlinkError::Refused { errno, .. }) => assert_eq!(errno, 19),
            other => panic!("{other:?}"),
        }
    }

    /// Requests sent together, numbered 1 to `n`, whose answers (queued
    /// beforehand) are read within 300 ms: what each request was told, in
    /// the order told.
    fn exchange_all_with(answers: &[Vec<u8>], n: usize) -> Vec<(usize, String)> {
        let (mut socket, theirs) = pair();
        for a in answers {
            answer(&theirs, a);
        }
        let mut requests: Vec<Request> = (0..n)
            .map(|i| Request::set_mtu(7 + i as u32, 1450))
            .collect();
        let mut told = Vec::new();
        socket.exchange_all(
            &mut requests,
            &|i| format!("setting MTU 1450 on l{i}"),
            Instant::now() + Duration::from_millis(300),
            &mut |i, result| {
                told.push((
                    i,
                    match result {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.to_string(),
                    },
                ))
            },
        );
        told
    }

    #[test]
    fn requests_sent_together_are_each_told_once_whatever_comes_back() {
        // Answered out of order, one refused, one never: each told once,
        // the refusal and the silence named after their own request.
        let told = exchange_all_with(&[[forge::ack(2, 22), forge::ack(1, 0)].concat()], 3);
        assert_eq!(told.len(), 3, "{told:?}");
        assert_eq!(told[0].0, 1);
        assert!(told[0].1.contains("l1"), "{told:?}");
        assert_eq!(told[1], (0, "ok".to_string()));
        assert_eq!(told[2].0, 2);
        assert!(
            told[2].1.contains("l2") && told[2].1.contains("no complete answer"),
            "{told:?}"
        );
        // A datagram that cannot be split: whose answers were in it cannot
        // be told, so every request still waiting fails with it, at once.
        let told = exchange_all_with(&[forge::ack(1, 0), vec![0xff; 40]], 3);
        assert_eq!(told[0], (0, "ok".to_string()));
        let rest: Vec<usize> = told[1..].iter().map(|(i, _)| *i).collect();
        assert_eq!(rest.len(), 2, "{told:?}");
        assert!(rest.contains(&1) && rest.contains(&2), "{told:?}");
        assert!(
            told[1..].iter().all(|(_, e)| e.contains("cannot")),
            "{told:?}"
        );
    }

    #[test]
    fn a_dump_abandoned_at_its_deadline_is_read_to_its_end_before_the_next_request() {
        let (mut socket, theirs) = pair();
        let a = forge::link(1, 2, b"a", b"bridge", 1500, 0, None, &[]);
        answer(&theirs, &a);
        let short = Instant::now() + Duration::from_millis(100);
        let first = socket.exchange(&mut Request::dump_links(), &op, short, &mut |_| {});
        assert!(
            matches!(first, Err(NetlinkError::TimedOut { .. })),
            "{first:?}"
        );
        // The rest of the first dump, then the answer to the second.
        answer(&theirs, &forge::done(1));
        answer(
            &theirs,
            &forge::link(2, 7, b"b", b"veth", 1500, 0, None, &[]),
        );
        answer(&theirs, &forge::ack(2, 0));
        let mut items = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        let second = socket.exchange(&mut Request::get_link(7), &op, deadline, &mut |i| {
            items.push(i)
        });
        assert!(second.is_ok(), "{second:?}");
        assert_eq!(items.len(), 1);
        // What was sent: two requests, numbered 1 and 2, numbers only.
        let mut buf = [0u8; 256];
        for want in [1u32, 2] {
            // SAFETY: a valid fd and a buffer with its length.
            let n =
                unsafe { libc::recv(theirs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let (h, _) = wire::messages(&buf[..n as usize]).next().unwrap().unwrap();
            assert_eq!(h.seq, want);
        }
    }

    #[test]
    fn a_dump_ends_at_done_with_every_object() {
        let a = forge::link(1, 2, b"a", b"bridge", 1500, 0, None, &[]);
        let b = forge::link(1, 3, b"\xff", b"veth", 1500, 2, None, &[]);
        let (result, items, _) = exchange_with(
            &[[a, b].concat(), forge::done(1)],
            &mut Request::dump_links(),
        );
        assert!(result.is_ok());
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn a_real_kernel_answers_through_the_same_loop() {
        let mut s = Socket::open(0, None).unwrap();
        let mut links = Vec::new();
        s.exchange(
            &mut Request::dump_links(),
            &|| "listing links".into(),
            Instant::now() + DEADLINE,
            &mut |i| links.push(i),
        )
        .unwrap();
        let lo = links
            .iter()
            .filter_map(|i| match i {
                Ok(Item::Link(l)) => Some(l),
                _ => None,
            })
            .find(|l| l.name == "lo")
            .expect("lo");
        let mut one = Vec::new();
        s.exchange(
            &mut Request::get_link(lo.index),
            &|| "reading lo".into(),
            Instant::now() + DEADLINE,
            &mut |i| one.push(i),
        )
        .unwrap();
        assert!(matches!(&one[..], [Ok(Item::Link(l))] if l.name == "lo"));
        let missing = s.exchange(
            &mut Request::get_link(u32::MAX >> 1),
            &|| "reading a link that is not there".into(),
            Instant::now() + DEADLINE,
            &mut |_| {},
        );
        assert!(
            matches!(
                missing,
                Err(NetlinkError::Refused {
                    errno: libc::ENODEV,
                    ..
                })
            ),
            "{missing:?}"
        );
    }
}
