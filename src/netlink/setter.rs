//! MTU changes sent from threads of their own.
//!
//! The kernel runs an rtnetlink request inside the sender's `sendmsg`, under
//! the RTNL lock. When dockerd starts many containers at once, that lock is
//! held for 15–30 ms per veth it moves into a container or deletes, and a
//! request waits in line. On the enforcement thread the wait would stop
//! everything else; two requests on one socket would also queue one behind
//! the other, each waiting its own turn. Here each request goes to an idle
//! worker with a blocking socket of its own, so the two ends of a new veth
//! wait for the lock side by side and the event loop keeps reading
//! notifications meanwhile. The workers are the process's; the sockets are
//! each namespace's (`node` enforces in many).

use std::io;
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread;

use netlink_packet_core::{ErrorMessage, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::sync::oneshot;

use super::NetlinkError;

/// Requests that may wait for RTNL at the same time, in the whole process:
/// the worker threads are shared by every namespace enforced in (`node`),
/// so they do not grow with pods.
const WORKERS: usize = 4;

struct Job {
    ifindex: u32,
    mtu: u32,
    sockets: Arc<Sockets>,
    reply: oneshot::Sender<Result<(), Failure>>,
}

/// Why one request failed, before it is given a link's name.
enum Failure {
    Io(io::Error),
    Nack(ErrorMessage),
}

/// One namespace's blocking sockets; a worker borrows an idle one for a
/// request. They close when the namespace's setter and its last request
/// are gone.
struct Sockets {
    idle: Mutex<Vec<(Socket, u32)>>,
    returned: Condvar,
}

impl Sockets {
    fn take(&self) -> (Socket, u32) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = idle.pop() {
                return s;
            }
            idle = self.returned.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, socket: (Socket, u32)) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(socket);
        self.returned.notify_one();
    }
}

/// The process's workers, started on first use.
fn workers() -> Result<&'static Mutex<mpsc::Sender<Job>>, NetlinkError> {
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    if let Some(jobs) = JOBS.get() {
        return Ok(jobs);
    }
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for n in 0..WORKERS {
        let rx = Arc::clone(&rx);
        thread::Builder::new()
            .name(format!("mtu-set-{n}"))
            .spawn(move || {
                // A thread starts in its creator's namespace, which may be a
                // pod's (`node` opens sockets from threads inside pods): a
                // worker there would keep that namespace alive for good.
                // The workers need none (the sockets carry theirs), so
                // they live in the process's own.
                if let Ok(own) = std::fs::File::open("/proc/self/ns/net") {
                    let _ = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET);
                }
                // A request sent late loses the race with dockerd's move
                // of the far end, and waits behind it.
                crate::sched::join();
                work(&rx)
            })
            .map_err(|source| NetlinkError::Socket {
                context: " for MTU changes (its thread did not start)".into(),
                source,
            })?;
    }
    Ok(JOBS.get_or_init(|| Mutex::new(tx)))
}

/// Sets MTUs in the namespace it was created in, through the process's
/// shared workers.
pub struct MtuSetter {
    sockets: Arc<Sockets>,
}

impl MtuSetter {
    /// Opens `count` sockets (the requests that may wait for RTNL at once
    /// in this namespace) in the calling thread's network namespace.
    pub fn new(count: usize) -> Result<MtuSetter, NetlinkError> {
        workers()?;
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let socket = open().map_err(|source| NetlinkError::Socket {
                context: " for MTU changes".into(),
                source,
            })?;
            idle.push((socket, 0));
        }
        Ok(MtuSetter {
            sockets: Arc::new(Sockets {
                idle: Mutex::new(idle),
                returned: Condvar::new(),
            }),
        })
    }

    /// Sets the MTU of link `ifindex` (named `name`, for errors).
    pub async fn set(&self, ifindex: u32, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let (reply, done) = oneshot::channel();
        let gone = || NetlinkError::Socket {
            context: " for MTU changes".into(),
            source: io::Error::other("its worker threads are gone"),
        };
        let jobs = workers()?.lock().unwrap_or_else(|e| e.into_inner()).clone();
        jobs.send(Job {
            ifindex,
            mtu,
            sockets: self.sockets.clone(),
            reply,
        })
        .map_err(|_| gone())?;
        match done.await.map_err(|_| gone())? {
            Ok(()) => Ok(()),
            Err(Failure::Nack(e)) => Err(super::set_mtu_failed(
                name,
                ifindex,
                mtu,
                rtnetlink::Error::NetlinkError(e),
            )),
            Err(Failure::Io(source)) => Err(NetlinkError::Io {
                op: format!("setting MTU {mtu} on {name} (ifindex {ifindex})"),
                source,
            }),
        }
    }
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Holding the lock only while taking a job lets idle workers queue.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let (socket, seq) = job.sockets.take();
        let seq = seq.wrapping_add(1);
        let result = set_mtu(&socket, seq, job.ifindex, job.mtu);
        job.sockets.give_back((socket, seq));
        let _ = job.reply.send(result);
    }
}

/// One RTM_SETLINK and its acknowledgement.
fn set_mtu(socket: &Socket, seq: u32, ifindex: u32, mtu: u32) -> Result<(), Failure> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Mtu(mtu));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.sequence_number = seq;
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(Failure::Io)?;
    loop {
        let (data, _) = socket.recv_from_full().map_err(Failure::Io)?;
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| Failure::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            let len = reply.header.length as usize;
            if reply.header.sequence_number == seq {
                if let NetlinkPayload::Error(e) = reply.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(Failure::Nack(e)),
                    };
                }
            }
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
        }
    }
}
