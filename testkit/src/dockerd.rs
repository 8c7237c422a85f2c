//! A real dockerd (Debian's docker.io) in a pod namespace whose eth0 has
//! MTU 1450, with paths of its own, torn down even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::lab::{eventually, Lab};
use crate::process::mtuvisor_in;

/// Debian's client (20.10), matching the daemon; not whatever else is on PATH.
pub const DOCKER: &str = "/usr/bin/docker";
pub const IMAGE: &str = "mtuvisor-test/busybox:latest";
pub const OUTER_MTU: u32 = 1450;

/// One dockerd at a time per test binary: on two cores, parallel daemons
/// only make each other slow, and the kill/stop tests time things.
static ONE_DAEMON: Mutex<()> = Mutex::new(());

/// The dockerd the tests run: Debian's (`/usr/sbin/dockerd`, Engine
/// 20.10, the engine the suite is written against), else the first on
/// PATH (a host with Docker's own packages, such as GitHub's runner
/// images, whose `/usr/bin/dockerd` is used rather than installing
/// Debian's beside it).
pub fn dockerd_path() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/dockerd");
    if debian.exists() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("dockerd"))
        .find(|p| p.exists())
}

/// Fails with a clear message when dockerd and friends are missing.
pub fn require_docker(test: &str) -> bool {
    if !crate::process::privileged(test) {
        return false;
    }
    let mut missing: Vec<&str> = [(DOCKER, "docker.io"), ("/bin/busybox", "busybox-static")]
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if dockerd_path().is_none() {
        missing.insert(0, "docker.io");
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "{test} needs {} (Debian's packages; scripts/test.sh installs them)",
        missing.join(", ")
    );
    true
}

pub struct DockerLab {
    pub lab: Lab,
    pub pod: String,
    /// The namespace at the other end of the pod's eth0.
    pub router: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub exec_root: PathBuf,
    pub data_root: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    /// The supervising mtuvisor, or the plain dockerd.
    pub main: Option<usize>,
    pub sidecar: Option<usize>,
    /// `None` for a second daemon of the same test ([`DockerLab::beside`]).
    _one: Option<MutexGuard<'static, ()>>,
}

impl DockerLab {
    pub fn new(tag: &str) -> DockerLab {
        let one = ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner());
        DockerLab::with(tag, Some(one))
    }

    /// A second daemon in a pod of its own, for a test that already holds
    /// `first` (two pods on one node).
    pub fn beside(tag: &str, _first: &DockerLab) -> DockerLab {
        DockerLab::with(tag, None)
    }

    fn with(tag: &str, one: Option<MutexGuard<'static, ()>>) -> DockerLab {
        let mut lab = Lab::new(tag);
        let (pod, router) = lab.pod(OUTER_MTU);
        let dir = PathBuf::from(format!("/tmp/mtuvisor-e2e/{}", lab.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DockerLab {
            lab,
            pod,
            router,
            socket: dir.join("docker.sock"),
            exec_root: dir.join("exec"),
            data_root: dir.join("data"),
            pidfile: dir.join("docker.pid"),
            log: dir.join("daemon.log"),
            dir,
            main: None,
            sidecar: None,
            _one: one,
        }
    }

    pub fn dockerd_args(&self) -> Vec<String> {
        vec![
            "dockerd".into(),
            format!("--data-root={}", self.data_root.display()),
            format!("--exec-root={}", self.exec_root.display()),
            format!("--host=unix://{}", self.socket.display()),
            format!("--pidfile={}", self.pidfile.display()),
            // No registry here; do not let dockerd try.
            "--max-concurrent-downloads=1".into(),
        ]
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap()
    }

    /// `mtuvisor supervise [extra] -- dockerd …` in the pod.
    pub fn start_supervised(&mut self, extra: &[&str]) -> usize {
        self.start_supervised_env(extra, &[])
    }

    /// `start_supervised` with extra environment (for mtuvisor and dockerd).
    pub fn start_supervised_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let mut cmd = mtuvisor_in(&self.pod);
        cmd.envs(env.iter().copied());
        cmd.arg("supervise")
            .args(extra)
            .arg("--")
            .args(self.dockerd_args());
        cmd.env("MTUVISOR_LOG", "debug")
            .stdout(self.log_file())
            .stderr(self.log_file());
        let i = self.lab.spawn(cmd);
        self.main = Some(i);
        i
    }

    /// dockerd alone, as `docker:dind` runs it.
    pub fn start_plain(&mut self) -> usize {
        self.start_plain_with(&[])
    }

    /// dockerd alone with extra flags (e.g. a hand-set `--mtu`).
    pub fn start_plain_with(&mut self, extra: &[&str]) -> usize {
        self.start_plain_env(extra, &[])
    }

    /// dockerd alone with extra flags and environment.
    pub fn start_plain_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let mut cmd = Command::new("nsenter");
        cmd.envs(env.iter().copied());
        cmd.arg(format!("--net=/run/netns/{}", self.pod))
            .args(self.dockerd_args())
            .args(extra);
        cmd.stdout(self.log_file()).stderr(self.log_file());
        let i = self.lab.spawn(cmd);
        self.main = Some(i);
        i
    }

    /// `mtuvisor watch --docker-host` beside the dockerd.
    pub fn start_sidecar(&mut self) -> usize {
        self.start_sidecar_with(&[], &[])
    }

    pub fn start_sidecar_with(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        let mut cmd = mtuvisor_in(&self.pod);
        cmd.arg("watch")
            .arg(format!("--docker-host=unix://{}", self.socket.display()));
        cmd.args(args).envs(env.iter().copied());
        cmd.env("MTUVISOR_NETNS_DIRS", self.exec_root.join("netns"));
        cmd.env("MTUVISOR_LOG", "debug")
            .stdout(self.log_file())
            .stderr(self.log_file());
        let i = self.lab.spawn(cmd);
        self.sidecar = Some(i);
        i
    }

    /// A PATH on which `iptables` and friends are the legacy ones, as on
    /// hosts whose kernel or distribution uses legacy iptables: a dockerd
    /// started with it writes legacy rules.
    pub fn legacy_iptables_path(&self) -> String {
        let bin = self.dir.join("legacy-bin");
        legacy_iptables_links(&bin);
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Waits until the API answers.
    pub fn wait_ready(&self, within: Duration) -> bool {
        eventually(within, || {
            Command::new(DOCKER)
                .arg("-H")
                .arg(format!("unix://{}", self.socket.display()))
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    pub fn ready(&self) {
        assert!(
            self.wait_ready(Duration::from_secs(60)),
            "dockerd did not answer; log:\n{}",
            self.tail()
        );
    }

    pub fn docker_cmd(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        cmd.env("DOCKER_BUILDKIT", "0");
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd().args(args).output().expect("run docker")
    }

    /// Runs docker, panicking with its stderr and the daemon log on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            self.tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What a container's first instruction reads as its eth0 MTU.
    pub fn first_instruction_mtu(&self, network: Option<&str>) -> String {
        let mut args = vec!["run", "--rm"];
        if let Some(n) = network {
            args.extend(["--network", n]);
        }
        args.extend([IMAGE, "cat", "/sys/class/net/eth0/mtu"]);
        self.docker_ok(&args)
    }

    pub fn import_busybox(&self) {
        let tar = busybox_tar();
        let mut child = self
            .docker_cmd()
            .args(["import", "-", IMAGE])
            .stdin(std::fs::File::open(tar).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "docker import failed");
    }

    pub fn dockerd_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The whole log of the daemon and of the mtuvisor that runs it.
    pub fn tail_all(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Signals the main process and waits for it to exit.
    pub fn stop_main(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let i = self.main?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.lab.pid(i)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.lab.exited(i) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        if let Some(i) = self.sidecar {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.lab.pid(i)),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // A clean dockerd stop unmounts what it mounted.
        if self.stop_main(Duration::from_secs(30)).is_none() {
            if let Some(pid) = self.dockerd_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        kill_processes_under(&self.dir);
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `docker-compose run` of a one-service project: the service's eth0 MTU.
pub fn compose_reads_1450(d: &DockerLab) {
    let project = d.dir.join("compose");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("docker-compose.yml"),
        format!("version: '2.4'\nservices:\n  probe:\n    image: {IMAGE}\n    command: cat /sys/class/net/eth0/mtu\n"),
    )
    .unwrap();
    let out = std::process::Command::new("docker-compose")
        .current_dir(&project)
        .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .args(["-p", "mtuprobe", "run", "--rm", "probe"])
        .output()
        .expect("docker-compose (Debian's docker-compose package)");
    assert!(
        out.status.success(),
        "compose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1450");
    let _ = std::process::Command::new("docker-compose")
        .current_dir(&project)
        .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .args(["-p", "mtuprobe", "down"])
        .output();
}

/// 50 containers started at once; every one must read 1450 first thing.
pub fn fifty_in_parallel(d: &DockerLab, network: &str) {
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| d.first_instruction_mtu(Some(network))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let right = results.iter().filter(|r| *r == "1450").count();
    assert_eq!(
        right, 50,
        "50 of 50 read 1450 at their first instruction: {results:?}"
    );
}

/// containerd and shims started for this daemon carry its paths in their
/// command lines; nothing else does.
pub(crate) fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub(crate) fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The iptables tools as the legacy ones, symlinks in `dir` (made if
/// missing).
pub fn legacy_iptables_links(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for tool in [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ] {
        let link = dir.join(tool);
        if !link.exists() {
            std::os::unix::fs::symlink("/usr/sbin/xtables-legacy-multi", link).unwrap();
        }
    }
}

/// A root file system of Debian's static busybox, as a tar for
/// `docker import`: built once, shared by every test process (written to a
/// temporary name, then renamed, so that a reader never sees half a tar).
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let tar = PathBuf::from("/tmp/mtuvisor-e2e/busybox-v4.tar");
        if tar.exists() {
            return tar;
        }
        let work = PathBuf::from(format!(
            "/tmp/mtuvisor-e2e/busybox-build-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&work);
        let fs = work.join("rootfs");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(fs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", fs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "sleep", "wget", "ip", "echo", "true", "ls", "mkdir", "timeout", "head",
            "httpd", "wc",
        ] {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(applet)).unwrap();
        }
        let partial = work.join("busybox.tar");
        crate::lab::sh(&[
            "tar",
            "-C",
            fs.to_str().unwrap(),
            "-cf",
            partial.to_str().unwrap(),
            ".",
        ]);
        std::fs::rename(&partial, &tar).unwrap();
        let _ = std::fs::remove_dir_all(&work);
        tar
    })
}
