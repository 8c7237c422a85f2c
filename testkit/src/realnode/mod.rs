//! A real node without kubelet: containerd's CRI plugin and the CNI
//! `bridge` plugin, driven over CRI as kubelet drives them.
//!
//! containerd runs in a network namespace of its own (the "node": host-
//! network pods get it), with its own root, state, socket, runc root, CNI
//! configuration (a `bridge` conflist at MTU 1450, as flannel gives) and
//! IPAM directory. Images are made from Debian's packages and this build's
//! binary as OCI archives and imported (no registry). Pods' namespace
//! files are containerd's own (`/run/netns/cni-<uuid>`). Everything is
//! stopped and removed on drop, failures included. One real node at a
//! time on the machine (a lock file): an agent under test looks at every
//! `cni-*` file.

pub mod dind;
mod images;
mod pod;
mod schedule;

pub use images::{base_tar, AGENT_IMAGE, BUSYBOX_IMAGE, CLI_IMAGE, DIND_IMAGE};
pub use pod::{edit_manifest, Container, Pod};
pub use schedule::{NodeIdentity, Taint};

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::lab::{ip, Lab};

/// The pods' `eth0` MTU the CNI configuration gives.
pub const POD_MTU: u32 = 1450;
/// How long one CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Fails (or skips, with `MTUVISOR_SKIP_PRIVILEGED=1`) when the real node
/// cannot run here: root, containerd, runc, ctr and the CNI plugins.
pub fn require_real_node(test: &str) -> bool {
    if !crate::privileged(test) {
        return false;
    }
    let missing: Vec<&str> = ["containerd", "runc", "ctr"]
        .into_iter()
        .filter(|t| !crate::process::on_path(t))
        .chain(
            ["bridge", "host-local", "loopback"]
                .into_iter()
                .filter(|p| !Path::new("/usr/lib/cni").join(p).exists()),
        )
        .collect();
    if missing.is_empty() {
        return true;
    }
    panic!(
        "{test} needs a real node: containerd (with its CRI plugin), runc and the CNI plugins \
         in /usr/lib/cni; missing: {}. Install Debian's containerd, runc and \
         containernetworking-plugins (scripts/install-prereqs.sh), or set \
         MTUVISOR_SKIP_PRIVILEGED=1 to skip it",
        missing.join(", ")
    );
}

pub struct RealNode {
    pub lab: Lab,
    /// The node's network namespace (containerd's; host-network pods').
    pub netns: String,
    /// The labels and taints it shows the scheduler: an untainted Linux
    /// node unless a test makes it another kind.
    pub identity: NodeIdentity,
    pub dir: PathBuf,
    containerd: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pods: Vec<String>,
    _one: File,
}

impl RealNode {
    /// containerd in a namespace of its own, answering CRI, with the test
    /// images imported.
    pub fn start(tag: &str) -> RealNode {
        let one = one_at_a_time();
        let mut lab = Lab::new(tag);
        let netns = lab.netns("node");
        let dir = PathBuf::from(format!("/tmp/mtuvisor-e2e/{}", lab.prefix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        let socket = dir.join("containerd.sock");
        std::fs::write(dir.join("config.toml"), config(&dir, &socket)).unwrap();
        std::fs::write(dir.join("cni/10-bridge.conflist"), conflist(&dir)).unwrap();
        ip(&netns, &["link", "set", "lo", "up"]);
        let log = File::create(dir.join("containerd.log")).unwrap();
        let containerd = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let client = loop {
            if socket.exists() {
                if let Ok(c) = rt.block_on(connect(&socket)) {
                    break c;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not answer CRI at {}; its log:\n{}",
                socket.display(),
                std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut node = RealNode {
            identity: NodeIdentity::linux(&netns),
            lab,
            netns,
            dir,
            containerd: Some(containerd),
            rt,
            client,
            pods: Vec::new(),
            _one: one,
        };
        node.wait_ready();
        images::import_all(&node.dir, &socket);
        node
    }

    /// The CRI status says the runtime and its network are ready.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let status = self
                .call(|mut c| async move {
                    c.status(k8s_cri::v1::StatusRequest { verbose: false })
                        .await
                })
                .status;
            let ready = status.is_some_and(|s| s.conditions.iter().all(|c| c.status));
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd's CRI never became ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One CRI call, with a timeout; panics with containerd's log tail on
    /// failure.
    pub(crate) fn call<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.try_call(f)
            .unwrap_or_else(|e| panic!("CRI call failed: {e}; containerd's log:\n{}", self.log()))
    }

    pub(crate) fn try_call<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client.clone();
        self.rt.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
                Ok(r) => r.map(|r| r.into_inner()),
                Err(_) => Err(tonic::Status::deadline_exceeded("CRI call timed out")),
            }
        })
    }

    /// The last 60 lines of containerd's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub(crate) fn track(&mut self, sandbox: &str) {
        self.pods.push(sandbox.to_string());
    }

    pub(crate) fn untrack(&mut self, sandbox: &str) {
        self.pods.retain(|p| p != sandbox);
    }

    /// A web server beyond the node at MTU 1500 (198.51.100.10, an 8 MB
    /// file), reached from the pods through the node, which drops its own
    /// ICMP "fragmentation needed" (as an overlay that loses it does): a
    /// packet above a pod's 1450 coming back vanishes. Returns the file's
    /// URL.
    pub fn black_hole_server(&mut self) -> String {
        let server = self.lab.netns("srv");
        let node = self.netns.clone();
        ip(
            &node,
            &[
                "link", "add", "up0", "mtu", "1500", "type", "veth", "peer", "name", "s0", "netns",
                &server,
            ],
        );
        ip(&node, &["link", "set", "up0", "up"]);
        ip(&node, &["addr", "add", "198.51.100.1/24", "dev", "up0"]);
        ip(&server, &["link", "set", "s0", "up"]);
        ip(&server, &["link", "set", "lo", "up"]);
        ip(&server, &["addr", "add", "198.51.100.10/24", "dev", "s0"]);
        ip(&server, &["route", "add", "default", "via", "198.51.100.1"]);
        crate::lab::sh(&[
            "nsenter",
            &format!("--net=/run/netns/{node}"),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        crate::lab::drop_frag_needed(&node);
        let www = self.dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let data: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(www.join("8mb.bin"), data).unwrap();
        let mut httpd = Command::new("nsenter");
        httpd
            .arg(format!("--net=/run/netns/{server}"))
            .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.lab.spawn(httpd);
        let up = crate::eventually(Duration::from_secs(10), || {
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{node}"))
                .args(["busybox", "wget", "-q", "-O", "/dev/null"])
                .arg("http://198.51.100.10/8mb.bin")
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "the server beyond the node answers");
        "http://198.51.100.10/8mb.bin".into()
    }

    /// A directory of this node's for hostPath volumes.
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.join("host").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        for pod in std::mem::take(&mut self.pods) {
            pod::remove_sandbox(self, &pod);
        }
        if let Some(mut c) = self.containerd.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims outlive containerd; theirs carry this node's paths.
        crate::dockerd::kill_processes_under(&self.dir);
        crate::dockerd::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?;
    Ok(RuntimeServiceClient::new(channel))
}

/// An exclusive lock on the machine's one real node at a time.
fn one_at_a_time() -> File {
    std::fs::create_dir_all("/tmp/mtuvisor-e2e").unwrap();
    let f = File::create("/tmp/mtuvisor-e2e/real-node.lock").unwrap();
    // SAFETY: flock on an fd we own.
    let rc = unsafe { nix::libc::flock(f.as_raw_fd(), nix::libc::LOCK_EX) };
    assert_eq!(rc, 0, "lock the real node");
    f
}

/// containerd's configuration: everything of its own under `dir`.
fn config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Without it no sandbox starts here: the sandbox asks for
  # oom_score_adj -998, and lowering it needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#,
        socket = socket.display(),
        pause = images::PAUSE_IMAGE,
    )
}

/// The `bridge` plugin at the overlay's MTU, with IPAM of this node's own.
fn conflist(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "mtuvisor-test",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "mtu": POD_MTU,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.89.0.0/16"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.join("ipam").display().to_string(),
            }
        }]
    })
    .to_string()
}
