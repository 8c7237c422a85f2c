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

    /// Blocks until the child exits; past `timeout`, calls `on_timeout`
    /// once (which kills it) and waits at most [`KILL_GRACE`] more for the
    /// exit. A child still there then (in an uninterruptible wait in the
    /// kernel) is an error; its exit goes to the reaper, if it runs.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
        on_timeout: impl FnOnce(),
    ) -> io::Result<ExitStatus> {
        let mut deadline = std::time::Instant::now() + timeout;
        let mut on_timeout = Some(on_timeout);
        // Tools take milliseconds: look often at first, then less.
        let mut pause = std::time::Duration::from_micros(200);
        loop {
            let exited = match &mut self.waiter {
                ExitWaiter::Reaper(rx) => rx.try_recv().map_err(|_| reaper_gone())?,
                ExitWaiter::Direct => self.child.try_wait()?,
            };
            if let Some(status) = exited {
                return Ok(status);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let Some(kill) = on_timeout.take() else {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "pid {} did not exit within {KILL_GRACE:?} of being killed",
                            self.child.id()
                        ),
                    ));
                };
                kill();
                deadline = now + KILL_GRACE;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(10));
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

/// How long a killed child may take to exit before its waiter gives up.
pub const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn reaper_gone() -> io::Error {
    io::Error::other("the reaper dropped this child's exit status")
}

/// How long a tool may run, and how much it may print, before it is
/// killed. The firewall tools run inside pods (`node`): a pod can hold the
/// xtables lock forever or fill its tables until a listing is gigabytes,
/// and neither may stall a thread of ours or fill our memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: std::time::Duration,
    /// Bytes of stdout, and separately of stderr.
    pub max_output: usize,
}

impl Limits {
    /// For `iptables`, `nft` and version probes: generous for a healthy
    /// system (they take milliseconds; `iptables -w` gives up on the
    /// lock after its own bounded wait, well inside this).
    pub const TOOL: Limits = Limits {
        timeout: std::time::Duration::from_secs(15),
        max_output: 8 << 20,
    };
}

/// Runs `cmd` to completion with `input` on its stdin, within
/// [`Limits::TOOL`]; its output and status, as `Command::output` gives them.
pub fn output(cmd: &mut Command, input: &[u8]) -> io::Result<Output> {
    output_within(cmd, input, Limits::TOOL)
}

/// [`output`] within `limits`: past the timeout, or once either stream
/// passes `max_output`, the child's process group is killed and the call
/// fails with `TimedOut` or `InvalidData`, naming the limit.
///
/// The calling thread alone feeds the input and reads both pipes (with
/// `poll`), so a tool costs no thread beside the one that runs it: four
/// pods' ensures at once are four threads, not sixteen.
pub fn output_within(cmd: &mut Command, input: &[u8], limits: Limits) -> io::Result<Output> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: a kill reaches whatever it started too, so
        // that nothing keeps our pipes open after it.
        .process_group(0);
    let mut child = spawn(cmd)?;
    let pid = child.id() as i32;
    // Why the group was killed: 0 not, 1 timeout, 2 too much output, 3 an
    // error of ours.
    let mut killed = 0u8;
    let mut kill_group = |why: u8| {
        if killed == 0 {
            killed = why;
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    };
    let deadline = std::time::Instant::now() + limits.timeout;
    let stdio = (child.take_stdin(), child.take_stdout(), child.take_stderr());
    let served = serve(stdio, input, deadline, limits.max_output, &mut kill_group);
    let (stdout, stderr) = match served {
        Ok(outputs) => outputs,
        Err(e) => {
            // Nothing left running, nor a zombie when there is no reaper
            // (unless it outlives its kill by KILL_GRACE).
            kill_group(3);
            let _ = child.wait_timeout(std::time::Duration::ZERO, || ());
            return Err(e);
        }
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let status = child.wait_timeout(left, || kill_group(1))?;
    match killed {
        1 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("still running after {:?}; killed", limits.timeout),
        )),
        2 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("printed more than {} bytes; killed", limits.max_output),
        )),
        _ => Ok(Output {
            status,
            stdout,
            stderr,
        }),
    }
}

/// Feeds `input` and reads both outputs until they close, killing the
/// group through `kill` past `deadline` or once an output passes `max`;
/// a pipe still open [`KILL_GRACE`] after the kill (held by a process that
/// left the group) is given up on. Stdout and stderr, as far as they were kept.
fn serve(
    (stdin, stdout, stderr): (
        Option<std::process::ChildStdin>,
        Option<ChildStdout>,
        Option<ChildStderr>,
    ),
    input: &[u8],
    deadline: std::time::Instant,
    max: usize,
    kill: &mut impl FnMut(u8),
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut pipes = Pipes::new(stdin, input, stdout, stderr)?;
    let mut give_up = None;
    while pipes.open() {
        let now = std::time::Instant::now();
        if give_up.is_some_and(|at| now >= at) {
            break;
        }
        if now >= deadline {
            kill(1);
            give_up.get_or_insert(now + KILL_GRACE);
        }
        let wait = give_up.unwrap_or(deadline).saturating_duration_since(now);
        if pipes.turn(wait, max)? {
            kill(2);
            give_up.get_or_insert(std::time::Instant::now() + KILL_GRACE);
        }
    }
    Ok((pipes.out.kept, pipes.err.kept))
}

/// A child's three pipes, served by one thread: the input written as the
/// child takes it, each output read as it comes and kept up to a cap.
struct Pipes<'a> {
    input: Option<(std::process::ChildStdin, &'a [u8])>,
    out: Capped<ChildStdout>,
    err: Capped<ChildStderr>,
}

struct Capped<P> {
    pipe: Option<P>,
    kept: Vec<u8>,
    over: bool,
}

impl<P: Read + std::os::fd::AsFd> Capped<P> {
    fn new(pipe: Option<P>) -> io::Result<Self> {
        if let Some(p) = &pipe {
            nonblocking(p)?;
        }
        Ok(Capped {
            pipe,
            kept: Vec::new(),
            over: false,
        })
    }

    /// Reads what is there, at most 1 MiB a turn; past `max` bytes, keeps
    /// nothing more and says so at once (the rest is drained unkept, turn
    /// by turn, until the killed child's end closes).
    fn read(&mut self, max: usize) -> io::Result<bool> {
        let Some(p) = &mut self.pipe else {
            return Ok(false);
        };
        let mut chunk = [0u8; 16 << 10];
        for _ in 0..64 {
            match p.read(&mut chunk) {
                Ok(0) => {
                    self.pipe = None;
                    break;
                }
                Ok(n) if self.over || self.kept.len() + n > max => {
                    self.over = true;
                    break;
                }
                Ok(n) => self.kept.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.over)
    }
}

fn nonblocking(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl<'a> Pipes<'a> {
    fn new(
        stdin: Option<std::process::ChildStdin>,
        input: &'a [u8],
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> io::Result<Self> {
        // No input: the child reads its end at once.
        let input = match stdin {
            Some(s) if !input.is_empty() => {
                nonblocking(&s)?;
                Some((s, input))
            }
            _ => None,
        };
        Ok(Pipes {
            input,
            out: Capped::new(stdout)?,
            err: Capped::new(stderr)?,
        })
    }

    fn open(&self) -> bool {
        self.input.is_some() || self.out.pipe.is_some() || self.err.pipe.is_some()
    }

    /// Waits at most `wait` for any pipe to be ready and serves the ready
    /// ones; true once an output has passed `max`.
    fn turn(&mut self, wait: std::time::Duration, max: usize) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let (mut fds, mut which) = (Vec::with_capacity(3), Vec::with_capacity(3));
        if let Some((s, _)) = &self.input {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
            which.push(0);
        }
        if let Some(p) = &self.out.pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            which.push(1);
        }
        if let Some(p) = &self.err.pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            which.push(2);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        let mut over = false;
        for w in ready {
            match w {
                0 => self.feed(),
                1 => over |= self.out.read(max)?,
                _ => over |= self.err.read(max)?,
            }
        }
        Ok(over)
    }

    /// Writes what the child takes of its input; closes it once all is
    /// written or the child will take no more (a child that exits without
    /// reading its input is fine).
    fn feed(&mut self) {
        let Some((stdin, rest)) = &mut self.input else {
            return;
        };
        loop {
            match stdin.write(rest) {
                Ok(n) => {
                    *rest = &rest[n..];
                    if rest.is_empty() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.input = None;
    }
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

    #[test]
    fn a_tool_that_hangs_is_killed_at_its_deadline_with_what_it_started() {
        let limits = Limits {
            timeout: std::time::Duration::from_millis(300),
            max_output: 1 << 20,
        };
        let began = std::time::Instant::now();
        // The grandchild keeps the pipes open: the group kill ends it too.
        let err = output_within(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            b"",
            limits,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            began.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
    }

    #[test]
    fn input_and_both_outputs_past_a_pipe_buffer_flow_at_once_on_one_thread() {
        // 1 MiB in, echoed to stdout, and 1 MiB to stderr written first:
        // a reader that served one pipe at a time would deadlock here.
        let input = vec![b'x'; 1 << 20];
        let out = output(
            Command::new("sh").args(["-c", "head -c 1048576 /dev/zero >&2; cat"]),
            &input,
        )
        .unwrap();
        assert_eq!(out.stdout.len(), 1 << 20);
        assert_eq!(out.stderr.len(), 1 << 20);
        assert!(out.status.success());
    }

    #[test]
    fn a_process_that_left_the_group_holding_the_pipes_is_given_up_on() {
        let limits = Limits {
            timeout: std::time::Duration::from_millis(300),
            max_output: 1 << 20,
        };
        let began = std::time::Instant::now();
        // `setsid` takes the sleeper out of the group the kill reaches; it
        // keeps stdout open for 5 s.
        let err = output_within(
            Command::new("sh").args(["-c", "setsid sleep 5 & sleep 30"]),
            b"",
            limits,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let took = began.elapsed();
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn a_child_that_outlives_its_kill_is_given_up_on_after_the_grace() {
        // The "kill" here kills nothing, as SIGKILL does not end a process
        // in an uninterruptible wait: the waiter still returns.
        let mut child = spawn(Command::new("sleep").arg("30")).unwrap();
        let began = std::time::Instant::now();
        let err = child
            .wait_timeout(std::time::Duration::from_millis(100), || ())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let took = began.elapsed();
        assert!(took >= KILL_GRACE && took < KILL_GRACE * 3, "{took:?}");
        let _ = nix::sys::signal::kill(
            Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    }

    #[test]
    fn a_tool_that_prints_too_much_is_killed_and_nothing_is_kept() {
        let limits = Limits {
            timeout: std::time::Duration::from_secs(30),
            max_output: 64 << 10,
        };
        let err = output_within(&mut Command::new("yes"), b"", limits).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("65536 bytes"), "{err}");
        // Under the cap, all of it.
        let out = output_within(
            Command::new("head").args(["-c", "65536", "/dev/zero"]),
            b"",
            limits,
        )
        .unwrap();
        assert_eq!(out.stdout.len(), 65536);
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
