//! On a real node (containerd's CRI plugin, the CNI `bridge` plugin at MTU
//! 1450; testkit/src/realnode): the DaemonSet of
//! examples/kubernetes/node-daemonset.yaml, translated field by field into
//! CRI as kubelet would, beside privileged DinD pods.

use testkit as common;

use std::path::Path;
use std::time::Duration;

use common::realnode::{require_real_node, Container, Pod, RealNode, AGENT_IMAGE, BUSYBOX_IMAGE};
use common::{eventually, try_http_get};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The DaemonSet's metrics port, in the node's namespace (hostNetwork).
const METRICS: &str = "127.0.0.1:9464";
/// The busybox image inside the inner dockerds.
const INNER: &str = "busybox:test";

/// A CI pod with docker:dind's shape: one privileged container running an
/// unmodified dockerd (the project's image, its entrypoint bypassed), its
/// data root on a hostPath (an emptyDir in Kubernetes), and busybox's
/// root file system to import.
fn dind_pod(node: &RealNode, name: &str) -> Pod {
    let busybox = common::dockerd::busybox_tar();
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
fn docker_ready(node: &RealNode, pod: &Pod) {
    docker_ready_from(node, pod, "dind");
}

/// [`docker_ready`] with the client in `container`.
fn docker_ready_from(node: &RealNode, pod: &Pod, container: &str) {
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
        common::dockerd::busybox_tar()
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
fn first_instruction_mtu(node: &RealNode, pod: &Pod) -> String {
    first_instruction_mtu_from(node, pod, "dind")
}

/// [`first_instruction_mtu`] with the client in `container`.
fn first_instruction_mtu_from(node: &RealNode, pod: &Pod, container: &str) -> String {
    let (code, out, err) = node.exec(
        pod,
        container,
        &[
            "docker",
            "run",
            "--rm",
            INNER,
            "cat",
            "/sys/class/net/eth0/mtu",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "docker run in {}: {err}", pod.name);
    out
}

/// What a `docker build` RUN step (the legacy builder: no buildx here)
/// reads as its MTU, with the client in `container`.
fn build_step_mtu(node: &RealNode, pod: &Pod, container: &str) -> String {
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

fn link_mtu(node: &RealNode, pod: &Pod, link: &str) -> String {
    node.exec(
        pod,
        "dind",
        &["cat", &format!("/sys/class/net/{link}/mtu")],
        Duration::from_secs(10),
    )
    .1
}

/// The DaemonSet's pod, as the manifest writes it. On a machine shared with
/// other tests the agent looks only at this node's pods (`cni-*`, which
/// only the one real node at a time makes); nothing else is changed.
fn daemonset(node: &RealNode) -> Pod {
    let yaml =
        std::fs::read_to_string(Path::new(REPO).join("examples/kubernetes/node-daemonset.yaml"))
            .unwrap();
    let mut pod = Pod::from_manifest(&yaml, &node.host_dir("agent"));
    let c = pod.container_mut("mtuvisor");
    assert_eq!(
        c.image, AGENT_IMAGE,
        "the DaemonSet's image is the one the real node imports (testkit/src/realnode/images.rs)"
    );
    c.env
        .push(("MTUVISOR_NETNS_INCLUDE".into(), "cni-*".into()));
    pod
}

#[test]
fn the_daemonset_as_written_enforces_in_dind_pods() {
    if !require_real_node("the_daemonset_as_written_enforces_in_dind_pods") {
        return;
    }
    let mut node = RealNode::start("rnds");
    let before = node.run_pod(dind_pod(&node, "dind-before"));
    docker_ready(&node, &before);
    assert_eq!(
        link_mtu(&node, &before, "eth0"),
        "1450",
        "the CNI plugin's MTU"
    );
    // The bug, on a real runtime: without the agent, 1500.
    assert_eq!(first_instruction_mtu(&node, &before), "1500");

    let plain = node.run_pod(Pod {
        name: "no-docker".into(),
        containers: vec![Container {
            name: "job".into(),
            image: BUSYBOX_IMAGE.into(),
            command: vec!["sleep".into(), "600".into()],
            ..Container::default()
        }],
        ..Pod::default()
    });

    let agent = node.run_pod(daemonset(&node));
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    let agent_log = |node: &RealNode| {
        node.exec(&agent, "mtuvisor", &["true"], Duration::from_secs(5));
        node.log()
    };
    assert!(
        ready,
        "the agent is ready; containerd:\n{}",
        agent_log(&node)
    );

    let after = node.run_pod(dind_pod(&node, "dind-after"));
    docker_ready(&node, &after);
    for pod in [&before, &after] {
        let enforced = eventually(Duration::from_secs(20), || {
            link_mtu(&node, pod, "docker0") == "1450"
        });
        assert!(enforced, "docker0 in {} at 1450", pod.name);
        let reads: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..30)
                .map(|_| s.spawn(|| first_instruction_mtu(&node, pod)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            reads.iter().all(|r| r == "1450"),
            "every inner container of {} reads 1450 at its first instruction: {reads:?}",
            pod.name
        );
    }
    let (_, rules, _) = node.exec(
        &after,
        "dind",
        &[
            "sh",
            "-c",
            "iptables-save -t mangle; nft list ruleset 2>/dev/null",
        ],
        Duration::from_secs(10),
    );
    assert!(
        rules.contains("TCPMSS") || rules.contains("maxseg"),
        "MSS rules in the DinD pod: {rules}"
    );
    assert_eq!(
        node.exec(
            &plain,
            "job",
            &["cat", "/sys/class/net/eth0/mtu"],
            Duration::from_secs(5)
        )
        .1,
        "1450",
        "a pod without Docker is left as the CNI plugin made it"
    );

    // Drone's plugins/docker shape: the build in the container that runs
    // its own dockerd.
    assert_eq!(
        build_step_mtu(&node, &after, "dind"),
        "1450",
        "a docker build RUN step reads the pod's MTU"
    );

    // A pod deleted: the runtime's unmount of its namespace file succeeds,
    // and the agent keeps nothing of it (no fd, no thread in it).
    let netns = node.netns_of(&after);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&netns).unwrap());
    let pid = node.pid_of(&agent, "mtuvisor");
    node.remove_pod(&after);
    assert!(
        eventually(Duration::from_secs(10), || !netns.exists()),
        "{} removed by the runtime",
        netns.display()
    );
    let held = format!("net:[{ino}]");
    let let_go = eventually(Duration::from_secs(10), || {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|f| std::fs::read_link(f.path()).ok())
            .any(|l| l.display().to_string() == held);
        !fds && !common::hostile::namespaces_of_threads(pid).contains(&held)
    });
    assert!(
        let_go,
        "the agent holds nothing of the removed pod ({held})"
    );
}

/// The DaemonSet with `mutate` applied to its container, then a DinD pod
/// made after it: the agent is alive but not ready, says `why`, and the
/// inner containers keep 1500. A change to the manifest that drops the
/// grant fails the test above; this one shows how it fails.
fn mutated_daemonset_enforces_nothing(tag: &str, mutate: impl FnOnce(&mut Container), why: &str) {
    let mut node = RealNode::start(tag);
    let mut pod = daemonset(&node);
    mutate(pod.container_mut("mtuvisor"));
    let _agent = node.run_pod(pod);
    let alive = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, METRICS, "/livez").is_ok_and(|(s, _)| s == 200)
    });
    assert!(alive, "the agent is alive; containerd:\n{}", node.log());
    let (status, body) = common::http_get(&node.netns, METRICS, "/healthz");
    assert_eq!(status, 503, "not ready: {body}");
    assert!(body.contains(why), "says {why:?}: {body}");
    let dind = node.run_pod(dind_pod(&node, "dind"));
    docker_ready(&node, &dind);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(link_mtu(&node, &dind, "docker0"), "1500");
    assert_eq!(first_instruction_mtu(&node, &dind), "1500");
}

#[test]
fn the_daemonset_without_sys_admin_is_not_ready_and_enforces_nothing() {
    if !require_real_node("the_daemonset_without_sys_admin_is_not_ready_and_enforces_nothing") {
        return;
    }
    mutated_daemonset_enforces_nothing(
        "rnadm",
        |c| {
            assert!(c.add_caps.iter().any(|a| a == "SYS_ADMIN"));
            c.add_caps.retain(|a| a != "SYS_ADMIN");
        },
        "missing CAP_SYS_ADMIN",
    );
}

#[test]
fn the_daemonset_without_host_to_container_propagation_is_not_ready_and_sees_no_new_pod() {
    if !require_real_node(
        "the_daemonset_without_host_to_container_propagation_is_not_ready_and_sees_no_new_pod",
    ) {
        return;
    }
    mutated_daemonset_enforces_nothing(
        "rnprop",
        |c| {
            let netns = c
                .mounts
                .iter_mut()
                .find(|m| m.1 == "/run/netns")
                .expect("the DaemonSet mounts /run/netns");
            assert!(netns.3, "the manifest asks for HostToContainer");
            netns.3 = false;
        },
        "mountPropagation: HostToContainer",
    );
}

/// A sidecar example as written: `watch` beside the unmodified dind image
/// in one sandbox, started in the manifest's order (a native sidecar
/// first, once its startup probe answers).
fn sidecar_example_clamps(tag: &str, manifest: &str) {
    let mut node = RealNode::start(tag);
    let yaml = std::fs::read_to_string(Path::new(REPO).join("examples/kubernetes").join(manifest))
        .unwrap();
    let mut pod = Pod::from_manifest(&yaml, &node.host_dir("empty"));
    assert_eq!(pod.container_mut("dind").image, "docker:dind");
    pod.container_mut("dind").image = common::realnode::DIND_IMAGE.into();
    // Busybox's root file system, for the inner dockerd to import.
    let busybox = common::dockerd::busybox_tar()
        .parent()
        .unwrap()
        .to_path_buf();
    pod.container_mut("dind")
        .mounts
        .push((busybox, "/images".into(), true, false));
    let pod = node.run_pod(pod);
    docker_ready(&node, &pod);
    let metrics = format!("{}:9464", node.ip_of(&pod));
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, &metrics, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "{manifest}: watch is ready");
    assert!(
        eventually(Duration::from_secs(10), || link_mtu(&node, &pod, "docker0")
            == "1450"),
        "{manifest}: docker0 at the pod's 1450"
    );
    let reads: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| first_instruction_mtu(&node, &pod)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        reads.iter().all(|r| r == "1450"),
        "{manifest}: every inner container reads 1450 at its first instruction: {reads:?}"
    );
}

#[test]
fn the_sidecar_example_clamps_beside_unmodified_dind() {
    if !require_real_node("the_sidecar_example_clamps_beside_unmodified_dind") {
        return;
    }
    sidecar_example_clamps("rnsc", "dind-sidecar.yaml");
}

#[test]
fn the_native_sidecar_example_clamps_beside_unmodified_dind() {
    if !require_real_node("the_native_sidecar_example_clamps_beside_unmodified_dind") {
        return;
    }
    sidecar_example_clamps("rnnsc", "dind-native-sidecar.yaml");
}

/// The image in place of docker:dind (dind-supervised.yaml): `supervise`
/// as the native-sidecar dind container, waited for by its `docker info`
/// startup probe; the job container, a docker client on the shared
/// socket, gets the pod's MTU in a container and in a `docker build` RUN
/// step. No registry here: the job's own alpine build cannot run, so the
/// job container waits and the test runs its two steps against busybox.
#[test]
fn the_supervised_example_gives_the_jobs_containers_and_build_steps_the_pods_mtu() {
    if !require_real_node(
        "the_supervised_example_gives_the_jobs_containers_and_build_steps_the_pods_mtu",
    ) {
        return;
    }
    let mut node = RealNode::start("rnsup");
    let yaml =
        std::fs::read_to_string(Path::new(REPO).join("examples/kubernetes/dind-supervised.yaml"))
            .unwrap();
    let mut pod = Pod::from_manifest(&yaml, &node.host_dir("empty"));
    assert_eq!(pod.containers[0].name, "dind", "the sidecar starts first");
    let job = pod.container_mut("job");
    assert_eq!(job.image, "docker:cli");
    assert!(job.command.join(" ").contains("docker build"));
    job.image = common::realnode::CLI_IMAGE.into();
    job.command = vec!["sleep".into(), "600".into()];
    let busybox = common::dockerd::busybox_tar()
        .parent()
        .unwrap()
        .to_path_buf();
    job.mounts.push((busybox, "/images".into(), true, false));
    let pod = node.run_pod(pod);
    let metrics = format!("{}:9464", node.ip_of(&pod));
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, &metrics, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "supervise is ready");
    docker_ready_from(&node, &pod, "job");
    assert_eq!(first_instruction_mtu_from(&node, &pod, "job"), "1450");
    assert_eq!(
        build_step_mtu(&node, &pod, "job"),
        "1450",
        "the RUN step read the pod's MTU"
    );
}

/// What an inner container's download of 8 MB through the black hole
/// does within 15 s: `true` when it completes.
fn download(node: &RealNode, pod: &Pod, url: &str) -> bool {
    let (code, _, _) = node.exec(
        pod,
        "dind",
        &[
            "docker",
            "run",
            "--rm",
            // A timeout that is PID 1 could not kill its wget.
            "--init",
            INNER,
            "timeout",
            "-s",
            "KILL",
            "15",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            url,
        ],
        Duration::from_secs(60),
    );
    code == 0
}

/// The hang users come with, on the real node, and the DaemonSet closing
/// it: a pod's inner container downloads from a server beyond the node
/// whose "fragmentation needed" is lost.
#[test]
fn the_black_hole_through_the_real_node_is_closed_by_the_daemonset() {
    if !require_real_node("the_black_hole_through_the_real_node_is_closed_by_the_daemonset") {
        return;
    }
    let mut node = RealNode::start("rnbh");
    let url = node.black_hole_server();
    let dind = node.run_pod(dind_pod(&node, "dind"));
    docker_ready(&node, &dind);
    assert!(
        !download(&node, &dind, &url),
        "without the agent the download stalls (the black hole)"
    );
    let _agent = node.run_pod(daemonset(&node));
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "the agent is ready");
    assert!(
        eventually(Duration::from_secs(20), || link_mtu(
            &node, &dind, "docker0"
        ) == "1450"),
        "docker0 at 1450"
    );
    assert!(
        download(&node, &dind, &url),
        "with the agent the download completes"
    );
}
