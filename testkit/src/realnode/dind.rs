//! What the real-node tests and benchmark run on it: DinD pods as CI
//! runners make them, the DaemonSet as the example writes it, and the
//! checks made inside a pod's dockerd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Container, Pod, RealNode, AGENT_IMAGE};
use crate::eventually;

/// The repository's root (the examples).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .to_path_buf()
}

/// An example file, as written (`examples/<path>`).
pub fn example(path: &str) -> String {
    let file = repo().join("examples").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The DaemonSet's metrics port, in the node's namespace (hostNetwork).
pub const METRICS: &str = "127.0.0.1:9464";
/// Where the DaemonSet's probes ask (`health_addr`, the node's loopback),
/// as the kubelet does with `host: 127.0.0.1`.
pub const HEALTH: &str = "127.0.0.1:9465";
/// The busybox image inside the inner dockerds.
pub const INNER: &str = "busybox:test";

/// A CI pod with docker:dind's shape: one privileged container running an
/// unmodified dockerd (the project's image, its entrypoint bypassed), its
/// data root on a hostPath (an emptyDir in Kubernetes), and busybox's
/// root file system to import.
pub fn dind_pod(node: &RealNode, name: &str) -> Pod {
    let busybox = crate::dockerd::busybox_tar();
    Pod {
        name: name.into(),
        containers: vec![Container {
            name: "dind".into(),
            image: AGENT_IMAGE.into(),
            command: vec![
                "dockerd".into(),
                "--host=unix:///var/run/docker.sock".into(),
                "--data-root=/var/lib/docker".into(),
            ],
            privileged: true,
            mounts: vec![
                (
                    node.host_dir(&format!("{name}-docker")),
                    "/var/lib/docker".into(),
                    false,
                    false,
                ),
                (
                    busybox.parent().unwrap().to_path_buf(),
                    "/images".into(),
                    true,
                    false,
                ),
            ],
            ..Container::default()
        }],
        ..Pod::default()
    }
}

/// Waits for the pod's dockerd and imports busybox into it.
pub fn docker_ready(node: &RealNode, pod: &Pod) {
    docker_ready_from(node, pod, "dind");
}

/// [`docker_ready`] with the client in `container`.
pub fn docker_ready_from(node: &RealNode, pod: &Pod, container: &str) {
    let up = eventually(Duration::from_secs(60), || {
        node.exec(
            pod,
            container,
            &["docker", "version"],
            Duration::from_secs(10),
        )
        .0 == 0
    });
    assert!(
        up,
        "dockerd in {} answers; containerd:\n{}",
        pod.name,
        node.log()
    );
    let tar = format!(
        "/images/{}",
        crate::dockerd::busybox_tar()
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let (code, _, err) = node.exec(
        pod,
        container,
        &["docker", "import", &tar, INNER],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "import busybox in {}: {err}", pod.name);
}

/// What a new container on the default bridge reads at its first
/// instruction.
pub fn first_instruction_mtu(node: &RealNode, pod: &Pod) -> String {
    first_instruction_mtu_from(node, pod, "dind")
}

/// [`first_instruction_mtu`] with the client in `container`.
pub fn first_instruction_mtu_from(node: &RealNode, pod: &Pod, container: &str) -> String {
    first_instruction_mtu_run(node, pod, container, None, Duration::from_secs(60))
}

/// [`first_instruction_mtu`] on the pod's Docker network `network`,
/// within `within` (a burst of starts queues in the pod's dockerd).
pub fn first_instruction_mtu_on(
    node: &RealNode,
    pod: &Pod,
    network: &str,
    within: Duration,
) -> String {
    first_instruction_mtu_run(node, pod, "dind", Some(network), within)
}

fn first_instruction_mtu_run(
    node: &RealNode,
    pod: &Pod,
    container: &str,
    network: Option<&str>,
    within: Duration,
) -> String {
    let mut argv = vec!["docker", "run", "--rm"];
    if let Some(network) = network {
        argv.extend(["--network", network]);
    }
    argv.extend([INNER, "cat", "/sys/class/net/eth0/mtu"]);
    let (code, out, err) = node.exec(pod, container, &argv, within);
    assert_eq!(code, 0, "docker run in {}: {err}", pod.name);
    out
}

/// What a `docker build` RUN step (the legacy builder: no buildx here)
/// reads as its MTU, with the client in `container`.
pub fn build_step_mtu(node: &RealNode, pod: &Pod, container: &str) -> String {
    let (code, out, err) = node.exec(
        pod,
        container,
        &[
            "sh",
            "-c",
            &format!(
                "printf 'FROM {INNER}\\nRUN cat /sys/class/net/eth0/mtu > /mtu\\n' \\
                 | DOCKER_BUILDKIT=0 docker build -q -t step - >/dev/null \\
                 && docker run --rm step cat /mtu"
            ),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "docker build in {}/{container}: {err}", pod.name);
    out
}

pub fn link_mtu(node: &RealNode, pod: &Pod, link: &str) -> String {
    node.exec(
        pod,
        "dind",
        &["cat", &format!("/sys/class/net/{link}/mtu")],
        Duration::from_secs(10),
    )
    .1
}

/// The pinned helm (scripts/install-tools.sh puts it there).
pub fn helm() -> PathBuf {
    repo().join("target/tools/bin/helm")
}

/// charts/mtuvisor rendered as examples/kubernetes/node-daemonset.yaml is
/// (scripts/render-daemonset.sh: release `mtuvisor` in kube-system,
/// Kubernetes 1.33), with `values` files (`-f`) given as YAML text.
pub fn chart_rendering(values: &[&str]) -> String {
    let helm = helm();
    assert!(
        helm.exists(),
        "{} is missing: the real node deploys the chart's rendering; \
         run `bash scripts/install-tools.sh helm` (scripts/test.sh does)",
        helm.display()
    );
    let dir = std::env::temp_dir().join(format!("mtuvisor-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", "mtuvisor"])
        .arg(repo().join("charts/mtuvisor"))
        .args(["--namespace", "kube-system", "--kube-version", "1.33.0"]);
    for (i, text) in values.iter().enumerate() {
        let file = dir.join(format!("values-{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        cmd.arg("-f").arg(file);
    }
    let out = cmd.output().expect("helm runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// The DaemonSet's pod, as the chart renders it with its default values
/// (which the raw manifest is). On a machine shared with other tests the
/// agent looks only at this node's pods (`cni-*`, which only the one real
/// node at a time makes); nothing else is changed.
pub fn daemonset(node: &RealNode) -> Pod {
    daemonset_from(node, &chart_rendering(&[]))
}

/// [`daemonset`] from the rendering or manifest `yaml`.
pub fn daemonset_from(node: &RealNode, yaml: &str) -> Pod {
    let mut pod = Pod::from_manifest(yaml, &node.host_dir("agent"));
    let c = pod.container_mut("mtuvisor");
    assert_eq!(
        c.image, AGENT_IMAGE,
        "the DaemonSet's image is the one the real node imports (testkit/src/realnode/images.rs)"
    );
    c.env
        .push(("MTUVISOR_NETNS_INCLUDE".into(), "cni-*".into()));
    pod
}

/// What the DaemonSet controller does with `yaml` on this node: runs its
/// pod when the node's labels and taints admit it (see
/// [`super::NodeIdentity::admits`]), else nothing.
pub fn schedule_daemonset(node: &mut RealNode, yaml: &str) -> Option<Pod> {
    if !node.identity.admits(yaml) {
        return None;
    }
    let pod = daemonset_from(node, yaml);
    Some(node.run_pod(pod))
}
