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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
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
    reply: oneshot::Sender<Result<(), Failure>>,
}

/// Why one request failed, before it is given a link's name.
enum Failure {
    Io(io::Error),
    Nack(ErrorMessage),
}

/// One namespace's requests and blocking sockets.
struct Queue {
    jobs: VecDeque<Job>,
    idle: Vec<(Socket, u32)>,
    /// Sockets lent to workers right now.
    lent: usize,
    /// In [`Shared::ready`].
    ready: bool,
    /// Its setter is gone: the sockets close once the last comes back.
    closed: bool,
}

/// Every namespace's queue, and the namespaces that have both a request
/// and an idle socket, in turn. A worker takes the next namespace's next
/// request with one of that namespace's own sockets, so it never waits for
/// one namespace's sockets while another namespace's request could go: a
/// pod that asks for thousands of changes gets its turn like any other.
#[derive(Default)]
struct Schedule {
    queues: HashMap<u64, Queue>,
    ready: VecDeque<u64>,
}

impl Schedule {
    /// Puts namespace `id` in line when it has work it can start now.
    fn reconsider(&mut self, id: u64) -> bool {
        let Some(q) = self.queues.get_mut(&id) else {
            return false;
        };
        if !q.ready && !q.jobs.is_empty() && !q.idle.is_empty() {
            q.ready = true;
            self.ready.push_back(id);
            return true;
        }
        false
    }
}

struct Shared {
    schedule: Mutex<Schedule>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The process's workers, started on first use.
fn workers() -> Result<&'static Arc<Shared>, NetlinkError> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    if let Some(shared) = SHARED.get() {
        return Ok(shared);
    }
    let shared = Arc::new(Shared {
        schedule: Mutex::new(Schedule::default()),
        work: Condvar::new(),
    });
    for n in 0..WORKERS {
        let shared = Arc::clone(&shared);
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
                work(&shared)
            })
            .map_err(|source| NetlinkError::Socket {
                context: " for MTU changes (its thread did not start)".into(),
                source,
            })?;
    }
    Ok(SHARED.get_or_init(|| shared))
}

/// Sets MTUs in the namespace it was created in, through the process's
/// shared workers.
pub struct MtuSetter {
    id: u64,
    shared: &'static Arc<Shared>,
}

impl MtuSetter {
    /// Opens `count` sockets (the requests that may wait for RTNL at once
    /// in this namespace) in the calling thread's network namespace.
    pub fn new(count: usize) -> Result<MtuSetter, NetlinkError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shared = workers()?;
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            let socket = open().map_err(|source| NetlinkError::Socket {
                context: " for MTU changes".into(),
                source,
            })?;
            idle.push((socket, 0));
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        shared.lock().queues.insert(
            id,
            Queue {
                jobs: VecDeque::new(),
                idle,
                lent: 0,
                ready: false,
                closed: false,
            },
        );
        Ok(MtuSetter { id, shared })
    }

    /// Sets the MTU of link `ifindex` (named `name`, for errors).
    pub async fn set(&self, ifindex: u32, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let (reply, done) = oneshot::channel();
        let gone = || NetlinkError::Socket {
            context: " for MTU changes".into(),
            source: io::Error::other("its worker threads are gone"),
        };
        {
            let mut schedule = self.shared.lock();
            let queue = schedule.queues.get_mut(&self.id).ok_or_else(gone)?;
            queue.jobs.push_back(Job {
                ifindex,
                mtu,
                reply,
            });
            if schedule.reconsider(self.id) {
                self.shared.work.notify_one();
            }
        }
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

impl Drop for MtuSetter {
    fn drop(&mut self) {
        let mut schedule = self.shared.lock();
        if let Some(q) = schedule.queues.get_mut(&self.id) {
            // Requests still queued were abandoned with their callers.
            q.jobs.clear();
            q.closed = true;
            if q.lent == 0 {
                schedule.queues.remove(&self.id);
            }
        }
    }
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn work(shared: &Shared) {
    loop {
        let (id, job, (socket, seq)) = {
            let mut schedule = shared.lock();
            loop {
                if let Some(id) = schedule.ready.pop_front() {
                    let q = schedule.queues.get_mut(&id).expect("a ready queue exists");
                    q.ready = false;
                    if let (Some(job), Some(socket)) = (q.jobs.pop_front(), q.idle.pop()) {
                        q.lent += 1;
                        // Its next request waits for its next turn.
                        schedule.reconsider(id);
                        break (id, job, socket);
                    }
                    continue;
                }
                schedule = shared
                    .work
                    .wait(schedule)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let seq = seq.wrapping_add(1);
        let result = set_mtu(&socket, seq, job.ifindex, job.mtu);
        let _ = job.reply.send(result);
        let mut schedule = shared.lock();
        let Some(q) = schedule.queues.get_mut(&id) else {
            continue;
        };
        q.lent -= 1;
        if q.closed {
            if q.lent == 0 {
                schedule.queues.remove(&id);
            }
            continue;
        }
        q.idle.push((socket, seq));
        if schedule.reconsider(id) {
            shared.work.notify_one();
        }
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
