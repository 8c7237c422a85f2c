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
//! notifications meanwhile. A worker takes every request its namespace has
//! queued (up to [`BATCH`]) and sends them in one datagram: the kernel runs
//! them one after the other inside that one `sendmsg`, each taking the lock
//! the moment it is free, where requests sent one by one would each wait
//! for a worker to be scheduled again, and behind whatever dockerd took the
//! lock for in the meantime (issue 28 measured that wait, not the lock, as
//! most of a clamp on a busy node). The workers are the process's; the
//! sockets are each namespace's (`node` enforces in many).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::wire::Request;
use super::{LinkName, NetlinkError, SetTiming, Socket, DEADLINE};

/// Requests that may wait for RTNL at the same time, in the whole process:
/// the worker threads are shared by every namespace enforced in (`node`),
/// so they do not grow with pods.
pub(crate) const WORKERS: usize = 4;

struct Job {
    ifindex: u32,
    name: LinkName,
    mtu: u32,
    queued: Instant,
    reply: oneshot::Sender<Result<SetTiming, NetlinkError>>,
}

/// One namespace's requests and sockets.
struct Queue {
    jobs: VecDeque<Job>,
    idle: Vec<Socket>,
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
    /// Requests queued or being sent, in every namespace: while there are
    /// any, the workers must make progress (`health::WORKERS`).
    pending: usize,
}

impl Schedule {
    fn added(&mut self, n: usize) {
        if self.pending == 0 && n > 0 {
            crate::health::WORKERS.due_now();
        }
        self.pending += n;
    }

    /// `n` requests ended (answered, or abandoned with their callers).
    fn ended(&mut self, n: usize) {
        self.pending = self.pending.saturating_sub(n);
        if self.pending == 0 {
            crate::health::WORKERS.idle();
        } else {
            crate::health::WORKERS.due_now();
        }
    }
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

/// The process's workers, started on first use: by one caller, however
/// many ask at once (a second set would double the threads that may wait
/// for RTNL, and the bound the README gives). A worker that could not be
/// started (the node out of threads) is tried again at the next call;
/// there are never more than [`WORKERS`], and the ones running serve
/// meanwhile.
fn workers() -> Result<&'static Arc<Shared>, NetlinkError> {
    static SHARED: Mutex<Option<(&'static Arc<Shared>, usize)>> = Mutex::new(None);
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let (shared, started) = slot.get_or_insert_with(|| {
        let shared: &'static Arc<Shared> = Box::leak(Box::new(Arc::new(Shared {
            schedule: Mutex::new(Schedule::default()),
            work: Condvar::new(),
        })));
        (shared, 0)
    });
    let shared: &'static Arc<Shared> = shared;
    while *started < WORKERS {
        let worker = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("mtu-set-{started}"))
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
                work(&worker)
            });
        match spawned {
            Ok(_) => *started += 1,
            Err(source) if *started == 0 => {
                return Err(NetlinkError::Socket {
                    context: " for MTU changes (its thread did not start)".into(),
                    source,
                })
            }
            Err(_) => break,
        }
    }
    Ok(shared)
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
            let socket = Socket::open(0, None).map_err(|source| NetlinkError::Socket {
                context: " for MTU changes".into(),
                source,
            })?;
            idle.push(socket);
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

    /// Sets the MTU of link `ifindex` (named `name`, for errors), within
    /// [`DEADLINE`] once a worker takes it. The request is queued now; the
    /// future only waits for its answer.
    pub fn set(
        &self,
        ifindex: u32,
        name: LinkName,
        mtu: u32,
    ) -> impl std::future::Future<Output = Result<SetTiming, NetlinkError>> + Send + 'static {
        let (reply, done) = oneshot::channel();
        let gone = || NetlinkError::Socket {
            context: " for MTU changes".into(),
            source: io::Error::other("its worker threads are gone"),
        };
        let queued = {
            let mut schedule = self.shared.lock();
            match schedule.queues.get_mut(&self.id) {
                Some(queue) => {
                    queue.jobs.push_back(Job {
                        ifindex,
                        name,
                        mtu,
                        queued: Instant::now(),
                        reply,
                    });
                    schedule.added(1);
                    if schedule.reconsider(self.id) {
                        self.shared.work.notify_one();
                    }
                    true
                }
                None => false,
            }
        };
        async move {
            if !queued {
                return Err(gone());
            }
            done.await.map_err(|_| gone())?
        }
    }
}

impl Drop for MtuSetter {
    fn drop(&mut self) {
        let mut schedule = self.shared.lock();
        if let Some(q) = schedule.queues.get_mut(&self.id) {
            // Requests still queued were abandoned with their callers.
            let abandoned = q.jobs.len();
            q.jobs.clear();
            q.closed = true;
            if q.lent == 0 {
                schedule.queues.remove(&self.id);
            }
            schedule.ended(abandoned);
        }
    }
}

/// Requests of one namespace a worker sends together, in one datagram.
const BATCH: usize = 32;

fn work(shared: &Shared) {
    let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
    loop {
        let (id, mut socket) = {
            let mut schedule = shared.lock();
            loop {
                if let Some(id) = schedule.ready.pop_front() {
                    let q = schedule.queues.get_mut(&id).expect("a ready queue exists");
                    q.ready = false;
                    if q.jobs.is_empty() {
                        continue;
                    }
                    if let Some(socket) = q.idle.pop() {
                        let n = q.jobs.len().min(BATCH);
                        jobs.extend(q.jobs.drain(..n));
                        q.lent += 1;
                        // Its next requests wait for its next turn.
                        schedule.reconsider(id);
                        break (id, socket);
                    }
                    continue;
                }
                schedule = shared
                    .work
                    .wait(schedule)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let taken = jobs.len();
        set_mtus(&mut socket, &mut jobs);
        let mut schedule = shared.lock();
        schedule.ended(taken);
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
        q.idle.push(socket);
        if schedule.reconsider(id) {
            shared.work.notify_one();
        }
    }
}

/// The RTM_SETLINKs of `jobs` in one datagram, and their acknowledgements,
/// within [`DEADLINE`]; every job is answered (and `jobs` left empty).
fn set_mtus(socket: &mut Socket, jobs: &mut Vec<Job>) {
    let mut requests: Vec<Request> = jobs
        .iter()
        .map(|j| Request::set_mtu(j.ifindex, j.mtu))
        .collect();
    let mut replies: Vec<Option<Job>> = jobs.drain(..).map(Some).collect();
    let ops: Vec<(LinkName, u32, u32)> = replies
        .iter()
        .flatten()
        .map(|j| (j.name, j.ifindex, j.mtu))
        .collect();
    let sent = Instant::now();
    socket.exchange_all(
        &mut requests,
        &|i| super::set_mtu_op(&ops[i].0, ops[i].1, ops[i].2),
        sent + DEADLINE,
        &mut |i, result| {
            let Some(job) = replies.get_mut(i).and_then(Option::take) else {
                return;
            };
            let result = result
                .map(|()| SetTiming {
                    queued: job.queued,
                    sent,
                    acked: Instant::now(),
                })
                .map_err(|e| super::set_mtu_failed(&job.name, job.ifindex, e));
            let _ = job.reply.send(result);
        },
    );
    debug_assert!(replies.iter().all(Option::is_none), "every job answered");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim().starts_with(prefix))
            })
            .count()
    }

    #[test]
    fn setters_made_at_once_share_one_set_of_workers() {
        let start = std::sync::Barrier::new(16);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    std::sync::Barrier::wait(&start);
                    MtuSetter::new(1).expect("a setter")
                });
            }
        });
        // A worker names itself once it runs, a moment after its spawn
        // returned: counted until all have, never more than WORKERS.
        let mut named = 0;
        for _ in 0..200 {
            named = threads_named("mtu-set-");
            assert!(named <= WORKERS, "{named} workers");
            if named == WORKERS {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(named, WORKERS);
    }
}
