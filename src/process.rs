//! Child processes: one owner of every exit status in the process.
//!
//! `supervise` is a child subreaper (see `docker/supervisor.rs`): every
//! orphan below it (containerd, shims, a double-forked helper) is
//! re-parented to mtuvisor and must be collected, or it stays a zombie. An
//! orphan's pid is not known in advance, so collecting them takes
//! `waitpid(-1)`, which collects *any* child, including the `iptables` that
//! a firewall backend is waiting for at that moment: that caller then gets
//! ECHILD and its rules are not installed.
//!
//! The rule, for the whole process:
//! - **Every child is spawned through this module** ([`spawn`], [`output`]),
//!   never with `std::process::Command::spawn`/`output`/`status` elsewhere
//!   (a unit test checks the tree for it).
//! - **Once the reaper runs ([`start_reaper`]), it alone calls `waitpid`.**
//!   A child spawned here is registered under the table's lock *before* the
//!   reaper can look for exits (the reaper drains under the same lock), so
//!   its status always goes to its owner, through a channel; any other exit
//!   is an orphan's and is only logged.
//! - Before the reaper runs (one-shot commands such as `detect`, library
//!   users, tests), the owner waits for its own child with `waitpid(pid)`.
//!
//! The reaper must be started before the first child is spawned: a child
//! spawned before it would be waited for directly and could be collected by
//! the reaper first.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{LazyLock, Mutex, MutexGuard};

use futures::channel::oneshot;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::SIGCHLD;
use tracing::debug;

#[derive(Default)]
struct Table {
    /// The reaper runs: exits reach their owners through `waiters`.
    reaping: bool,
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves the table consistent (every
    // change to it is a single insert or remove).
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the reaper thread; call it before anything is spawned. With
/// `subreaper`, orphans of our descendants come to us (and are reaped)
/// rather than to the container's init. Idempotent.
pub fn start_reaper(subreaper: bool) -> io::Result<()> {
    if subreaper {
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    }
    let mut t = table();
    if t.reaping {
        return Ok(());
    }
    // Registered before the flag is set: no exit after it goes unnoticed.
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD])?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            drain_exits();
            // Coalesced signals are fine: each wake-up drains every exit.
            for _ in signals.forever() {
                drain_exits();
            }
        })?;
    t.reaping = true;
    Ok(())
}

/// Collects every exited child: a registered one's status goes to its
/// owner, any other is an orphan.
fn drain_exits() {
    let mut t = table();
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                debug!(error = %e, "waitpid failed");
                return;
            }
            Ok(status) => status,
        };
        let Some(pid) = status.pid() else { continue };
        let Some(raw) = raw_status(&status) else {
            continue;
        };
        match t.waiters.remove(&pid.as_raw()) {
            // The owner may have given up waiting; its status is dropped.
            Some(waiter) => drop(waiter.send(ExitStatus::from_raw(raw))),
            None => debug!(pid = pid.as_raw(), ?status, "reaped an orphaned process"),
        }
    }
}

/// The wait(2) status word for an exit or a death by signal.
fn raw_status(status: &WaitStatus) -> Option<i32> {
    match *status {
        WaitStatus::Exited(_, code) => Some((code & 0xff) << 8),
        WaitStatus::Signaled(_, signal, core) => Some(signal as i32 | if core { 0x80 } else { 0 }),
        _ => None,
    }
}

/// How a spawned child's exit is collected.
enum ExitWaiter {
    Reaper(oneshot::Receiver<ExitStatus>),
    /// No reaper: the owner waits for its own pid.
    Direct,
}

/// A child spawned through this module. Dropping it neither kills nor
/// waits; with the reaper running, its exit is still collected.
pub struct Spawned {
    child: Child,
    waiter: ExitWaiter,
}

/// Spawns `cmd` and registers it, so that its exit status reaches only
/// [`Spawned::wait`] / [`Spawned::exited`].
pub fn spawn(cmd: &mut Command) -> io::Result<Spawned> {
    // The lock is held across fork: the reaper cannot collect the child
    // before it is registered.
    let mut t = table();
    let child = cmd.spawn()?;
    let waiter = if t.reaping {
        let (tx, rx) = oneshot::channel();
        t.waiters.insert(child.id() as i32, tx);
        ExitWaiter::Reaper(rx)
    } else {
        ExitWaiter::Direct
    };
    Ok(Spawned { child, waiter })
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Blocks the calling thread until the child exits.
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        match self.waiter {
            ExitWaiter::Reaper(rx) => futures::executor::block_on(rx).map_err(|_| reaper_gone()),
            ExitWaiter::Direct => self.child.wait(),
        }
    }

    /// Completes when the child exits. Needs the reaper (async code runs
    /// only in the long-running modes, which start it).
    pub async fn exited(self) -> io::Result<ExitStatus> {
        match self.waiter {
            ExitWaiter::Reaper(rx) => rx.await.map_err(|_| reaper_gone()),
            ExitWaiter::Direct => Err(io::Error::other(
                "waiting for a child asynchronously needs the reaper (start_reaper)",
            )),
        }
    }
}

fn reaper_gone() -> io::Error {
    io::Error::other("the reaper dropped this child's exit status")
}

/// Runs `cmd` to completion with `input` on its stdin; its output and
/// status, as `Command::output` gives them.
pub fn output(cmd: &mut Command, input: &[u8]) -> io::Result<Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd)?;
    let stdin = child.take_stdin();
    let stdout = child.take_stdout();
    let stderr = child.take_stderr();
    // Both pipes are read at once: a child that fills one while we block on
    // the other would never exit.
    let err_reader = std::thread::spawn(move || read_all(stderr));
    if let Some(mut stdin) = stdin {
        // A child that exits without reading its input is not an error here.
        if let Err(e) = stdin.write_all(input) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(e);
            }
        }
    }
    let stdout = read_all(stdout)?;
    let stderr = err_reader
        .join()
        .map_err(|_| io::Error::other("stderr reader panicked"))??;
    let status = child.wait()?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn read_all(pipe: Option<impl Read>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        p.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// Finds an executable: a path as given, or a name on PATH.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_status_round_trips() {
        let pid = Pid::from_raw(1);
        let exited = ExitStatus::from_raw(raw_status(&WaitStatus::Exited(pid, 3)).unwrap());
        assert_eq!(exited.code(), Some(3));
        let killed = ExitStatus::from_raw(
            raw_status(&WaitStatus::Signaled(
                pid,
                nix::sys::signal::Signal::SIGKILL,
                false,
            ))
            .unwrap(),
        );
        assert_eq!(killed.signal(), Some(9));
    }

    #[test]
    fn output_without_reaper_reads_both_pipes_and_input() {
        let out = output(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 4"]),
            b"hello",
        )
        .unwrap();
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(4));
    }

    /// The rule in the module doc: no other file spawns or waits for a
    /// process, so the reaper can never take an exit someone waits for.
    #[test]
    fn every_child_is_spawned_here() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut offenders = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(src)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/process.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        let l = line.trim();
                        if [".spawn()", ".output()", ".status()", ".wait()"]
                            .iter()
                            .any(|p| l.contains(p))
                            && !l.starts_with("//")
                        {
                            offenders.push(format!("{}:{}: {l}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "spawn and wait through mtuvisor::process only:\n{}",
            offenders.join("\n")
        );
    }
}
