//! Real-time scheduling for the threads that race dockerd.
//!
//! A clamp is a race: dockerd attaches a new veth to its bridge and, a few
//! hundred microseconds later, moves the far end into the container and
//! starts the user's process. The kernel's notification reaches us at once,
//! but on a node busy starting containers (dockerd, containerd, runc and the
//! containers themselves all runnable) a woken ordinary thread waits for a
//! CPU for milliseconds: measured on 2 cores with 2 × 50 containers starting
//! at once, 34–54 % of clamps took over 10 ms against 4–10 % for dockerd's own
//! next request, and nearly all of it was time spent waiting to run, before
//! and between our two requests. Under `SCHED_FIFO` the same clamps take
//! over 10 ms 2 % of the time (`cargo bench --bench node`).
//!
//! So the threads on that path (the runtime thread that reads notifications
//! and decides, and the workers that send RTM_SETLINK) run at a low
//! real-time priority. They sleep almost always and each wake-up does
//! microseconds of work; the kernel's real-time throttling
//! (`sched_rt_runtime_us`, 95 % by default) bounds them even if that were
//! ever wrong. `SCHED_RESET_ON_FORK` keeps everything they start ordinary:
//! dockerd, iptables, nft, the blocking pool and every other thread.
//!
//! It needs CAP_SYS_NICE (and, where the kernel has real-time group
//! scheduling, a real-time budget for the cgroup); without it, enforcement
//! runs as before, and says so once: a warning when CAP_SYS_NICE is
//! missing (a grant fixes it), an info line when the cgroup has no budget
//! (kubelet and the container runtimes give none, so nobody can act on
//! it). `mtuvisor_realtime_priority` shows which it came to.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The priority the clamping threads run at; 0: ordinary scheduling.
static PRIORITY: AtomicI32 = AtomicI32::new(0);

/// Why the kernel refused real-time priority.
#[derive(Debug)]
pub enum Refused {
    /// No CAP_SYS_NICE: a grant away (a person can act).
    NoCapability,
    /// CAP_SYS_NICE is held, so the kernel schedules real time per cgroup
    /// (`CONFIG_RT_GROUP_SCHED`) and ours has no budget
    /// (`cpu.rt_runtime_us` 0, what every container runtime and kubelet
    /// give a new cgroup): nothing the pod's owner can grant.
    NoBudget,
    /// Anything else the kernel said.
    Other(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoCapability => {
                f.write_str("no CAP_SYS_NICE: grant it (Kubernetes: capabilities add SYS_NICE)")
            }
            Refused::NoBudget => f.write_str(
                "CAP_SYS_NICE is held, but the kernel has real-time group scheduling and \
                 this cgroup has no real-time budget (cpu.rt_runtime_us is 0, as container \
                 runtimes leave it)",
            ),
            Refused::Other(e) => write!(f, "{e}"),
        }
    }
}

/// Puts the calling thread (the enforcement runtime's) under `SCHED_FIFO`
/// at `priority`, and remembers it for [`join`] and [`priority`]. `None`
/// leaves it alone.
pub fn enter(priority: Option<u8>) -> Result<(), Refused> {
    let Some(priority) = priority else {
        return Ok(());
    };
    set_this_thread(i32::from(priority)).map_err(|e| {
        match (e.raw_os_error(), crate::caps::has(crate::caps::SYS_NICE)) {
            (Some(nix::libc::EPERM), Some(false)) => Refused::NoCapability,
            (Some(nix::libc::EPERM), Some(true)) => Refused::NoBudget,
            _ => Refused::Other(e),
        }
    })?;
    PRIORITY.store(i32::from(priority), Ordering::Relaxed);
    Ok(())
}

/// The `SCHED_FIFO` priority the clamping threads run at; 0: ordinary.
pub fn priority() -> u8 {
    u8::try_from(PRIORITY.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Gives a thread on the clamping path (an MTU worker, a thread that
/// enters a container's namespace) the priority [`enter`] chose. Threads
/// start ordinary (`SCHED_RESET_ON_FORK`), so each asks for itself; when
/// [`enter`] failed or was not called, this does nothing.
pub fn join() {
    let priority = PRIORITY.load(Ordering::Relaxed);
    if priority > 0 {
        // [`enter`] succeeded with the same priority in this process, so
        // this cannot fail for want of permission; if it did, the thread
        // just stays ordinary.
        let _ = set_this_thread(priority);
    }
}

fn set_this_thread(priority: i32) -> io::Result<()> {
    let param = nix::libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let rc = unsafe {
        nix::libc::sched_setscheduler(
            0,
            nix::libc::SCHED_FIFO | nix::libc::SCHED_RESET_ON_FORK,
            &param,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `at` on the kernel's monotonic clock, in nanoseconds: what another
/// process (a benchmark joining our log lines with its own observations)
/// reads from `clock_gettime(CLOCK_MONOTONIC)`. `Instant` is that clock on
/// Linux, but does not say its value.
pub fn monotonic_ns(at: std::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let (base, base_ns) = *BASE.get_or_init(|| {
        let now = std::time::Instant::now();
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is always readable");
        (
            now,
            ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        )
    });
    if at >= base {
        base_ns + at.duration_since(base).as_nanos() as u64
    } else {
        base_ns.saturating_sub(base.duration_since(at).as_nanos() as u64)
    }
}
