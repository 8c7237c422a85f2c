//! Threads of a running agent stopped for real, from outside (ptrace
//! stops one thread, not its whole process): what a stuck loop, worker or
//! discovery looks like to the agent's other threads and to the kubelet.

use std::sync::mpsc;
use std::time::Duration;

use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The ids of `pid`'s threads whose name starts with `prefix` (the main
/// thread's name is the process's).
pub fn threads_named(pid: i32, prefix: &str) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim().starts_with(prefix))
                })
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Threads held stopped until this is dropped (or the test's process
/// ends: the kernel lets a tracee go when its tracer exits).
pub struct Stopped {
    release: Option<mpsc::Sender<()>>,
    tracer: Option<std::thread::JoinHandle<()>>,
}

/// Stops `tids` (threads of another process) and returns once each is
/// stopped. Every ptrace request comes from one tracer thread, as the
/// kernel requires.
pub fn stop(tids: Vec<i32>) -> Stopped {
    assert!(!tids.is_empty(), "threads to stop");
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let tracer = std::thread::spawn(move || {
        for tid in &tids {
            let pid = Pid::from_raw(*tid);
            ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE");
            ptrace::interrupt(pid).expect("PTRACE_INTERRUPT");
            waitpid(pid, Some(WaitPidFlag::__WALL)).expect("the thread stops");
        }
        stopped_tx.send(()).unwrap();
        let _ = released.recv();
        for tid in &tids {
            let _ = ptrace::detach(Pid::from_raw(*tid), None);
        }
    });
    stopped_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the threads are stopped");
    Stopped {
        release: Some(release),
        tracer: Some(tracer),
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.tracer.take() {
            let _ = t.join();
        }
    }
}
