//! On a real node (containerd's CRI plugin, the CNI `bridge` plugin at MTU
//! 1450; testkit/src/realnode): the DaemonSet as charts/mtuvisor renders
//! it (examples/kubernetes/node-daemonset.yaml is that rendering), placed
//! on the node or not from its affinity, node selector and tolerations
//! against the node's labels and taints, and translated field by field
//! into CRI as kubelet would, beside privileged DinD pods.

use testkit as common;

use std::time::Duration;

use common::realnode::dind::{
    build_step_mtu, chart_rendering, daemonset, dind_pod, docker_ready, docker_ready_from, example,
    first_instruction_mtu, first_instruction_mtu_from, first_instruction_mtu_on, link_mtu,
    schedule_daemonset, HEALTH, INNER, METRICS,
};
use common::realnode::{
    edit_manifest, require_real_node, Container, NodeIdentity, Pod, RealNode, AGENT_IMAGE,
    BUSYBOX_IMAGE,
};
use common::{eventually, try_http_get};

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

    let rendering = chart_rendering(&[]);
    assert!(
        example("kubernetes/node-daemonset.yaml").ends_with(&rendering),
        "examples/kubernetes/node-daemonset.yaml is the chart's rendering \
         (bash scripts/render-daemonset.sh --write)"
    );
    let agent = schedule_daemonset(&mut node, &rendering)
        .expect("the chart's DaemonSet is placed on an untainted Linux node");
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, HEALTH, "/healthz").is_ok_and(|(s, _)| s == 200)
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
    // SYS_NICE granted, and still no real-time priority: this kernel
    // schedules real time per cgroup and the runtime gives a container's
    // cgroup no budget. Said once, as information (nobody can grant a
    // budget through Kubernetes), and in the metric.
    let said = node.container_log(&agent, "mtuvisor");
    let realtime: Vec<&str> = said.lines().filter(|l| l.contains("real-time")).collect();
    assert_eq!(
        realtime.len(),
        1,
        "one line about real-time priority:\n{said}"
    );
    assert!(
        realtime[0].contains("\"level\":\"INFO\"") && realtime[0].contains("no real-time budget"),
        "information, not a warning: {}",
        realtime[0]
    );
    let (_, metrics) = common::http_get(&node.netns, METRICS, "/metrics");
    assert!(
        metrics.contains("\nmtuvisor_realtime_priority 0\n"),
        "{metrics}"
    );

    let after = node.run_pod(dind_pod(&node, "dind-after"));
    // A pod on a narrower network (a second CNI network at 1400, as a pod
    // on a WireGuard-backed node would have): its eth0 lowered as its
    // dockerd starts; the agent follows it.
    let narrow = node.run_pod(dind_pod(&node, "dind-1400"));
    common::sh(&[
        "nsenter",
        &format!("--net={}", node.netns_of(&narrow).display()),
        "ip",
        "link",
        "set",
        "eth0",
        "mtu",
        "1400",
    ]);
    docker_ready(&node, &after);
    docker_ready(&node, &narrow);
    for (pod, want) in [(&before, "1450"), (&after, "1450"), (&narrow, "1400")] {
        let enforced = eventually(Duration::from_secs(20), || {
            link_mtu(&node, pod, "docker0") == want
        });
        assert!(enforced, "docker0 in {} at {want}", pod.name);
        let reads: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..30)
                .map(|_| s.spawn(|| first_instruction_mtu(&node, pod)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            reads.iter().all(|r| r == want),
            "every inner container of {} reads {want} at its first instruction: {reads:?}",
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

/// Two DinD pods (eth0 at 1450 and at 1400) under the chart's DaemonSet,
/// each starting 30 containers at the same moment on a user network, three
/// bursts one after the other: every container reads its own pod's MTU at
/// its first instruction (a burst is where the agent's clamp races the
/// pod's dockerd; issue 28 measured one in a hundred losing).
#[test]
fn bursts_in_two_dind_pods_read_each_pods_mtu_at_the_first_instruction() {
    if !require_real_node("bursts_in_two_dind_pods_read_each_pods_mtu_at_the_first_instruction") {
        return;
    }
    const BURST: usize = 30;
    const ROUNDS: usize = 3;
    let mut node = RealNode::start("rnburst");
    let agent = schedule_daemonset(&mut node, &chart_rendering(&[]))
        .expect("the chart's DaemonSet is placed on an untainted Linux node");
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, HEALTH, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "the agent is ready; containerd:\n{}", node.log());
    let wide = node.run_pod(dind_pod(&node, "burst-1450"));
    let narrow = node.run_pod(dind_pod(&node, "burst-1400"));
    common::sh(&[
        "nsenter",
        &format!("--net={}", node.netns_of(&narrow).display()),
        "ip",
        "link",
        "set",
        "eth0",
        "mtu",
        "1400",
    ]);
    let pods = [(&wide, "1450"), (&narrow, "1400")];
    for (pod, want) in pods {
        docker_ready(&node, pod);
        let (code, _, err) = node.exec(
            pod,
            "dind",
            &["docker", "network", "create", "burst"],
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "docker network create in {}: {err}", pod.name);
        let enforced = eventually(Duration::from_secs(20), || {
            link_mtu(&node, pod, "docker0") == want
        });
        assert!(enforced, "docker0 in {} at {want}", pod.name);
    }
    let node = &node;
    for round in 1..=ROUNDS {
        let reads: Vec<(&str, &str, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BURST)
                .flat_map(|_| pods)
                .map(|(pod, want)| {
                    s.spawn(move || {
                        let read =
                            first_instruction_mtu_on(node, pod, "burst", Duration::from_secs(120));
                        (pod.name.as_str(), want, read)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wrong: Vec<_> = reads.iter().filter(|(_, want, got)| got != want).collect();
        assert!(
            wrong.is_empty(),
            "round {round}: {} of {} containers read another MTU than their pod's at their \
             first instruction (pod, want, read): {wrong:?}\nagent:\n{}",
            wrong.len(),
            reads.len(),
            node.container_log(&agent, "mtuvisor")
        );
    }
}

/// A node that shows itself as virtual-kubelet does (label `type:
/// virtual-kubelet`, taint `virtual-kubelet.io/provider`, the Linux os
/// label) gets no agent from the chart's rendering nor from the raw
/// manifest: their node affinity keeps it off, though their toleration of
/// every taint admits the node. Its DinD pod keeps Docker's 1500. The same
/// chart without `excludedNodes` would place the agent there.
#[test]
fn a_virtual_kubelet_node_gets_no_agent() {
    if !require_real_node("a_virtual_kubelet_node_gets_no_agent") {
        return;
    }
    let mut node = RealNode::start("rnvk");
    node.identity = NodeIdentity::virtual_kubelet(&node.netns);
    let dind = node.run_pod(dind_pod(&node, "dind"));
    docker_ready(&node, &dind);
    for (what, yaml) in [
        ("the chart's rendering", chart_rendering(&[])),
        (
            "the raw manifest",
            example("kubernetes/node-daemonset.yaml"),
        ),
    ] {
        assert!(
            schedule_daemonset(&mut node, &yaml).is_none(),
            "{what}: no agent on a virtual-kubelet node"
        );
    }
    let open = chart_rendering(&["excludedNodes: []\n"]);
    assert!(
        node.identity.admits(&open),
        "without excludedNodes the toleration of every taint admits the node"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        try_http_get(&node.netns, HEALTH, "/healthz").is_err(),
        "nothing serves the agent's port on the node"
    );
    assert_eq!(link_mtu(&node, &dind, "docker0"), "1500");
    assert_eq!(first_instruction_mtu(&node, &dind), "1500");
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
        try_http_get(&node.netns, HEALTH, "/livez").is_ok_and(|(s, _)| s == 200)
    });
    assert!(alive, "the agent is alive; containerd:\n{}", node.log());
    let (status, body) = common::http_get(&node.netns, HEALTH, "/healthz");
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

/// A sidecar example (`yaml`, as written or changed by a test) run as
/// kubelet would: `watch` beside the unmodified dind image in one sandbox,
/// started in the manifest's order (a native sidecar first, once its
/// startup probe answers); every inner container reads the pod's 1450 at
/// its first instruction. Returns the pod.
fn sidecar_example_clamps(node: &mut RealNode, manifest: &str, yaml: &str, run: usize) -> Pod {
    let mut pod = Pod::from_manifest(yaml, &node.host_dir(&format!("empty-{run}")));
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
    docker_ready(node, &pod);
    let metrics = format!("{}:9464", node.ip_of(&pod));
    let ready = eventually(Duration::from_secs(30), || {
        try_http_get(&node.netns, &metrics, "/healthz").is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "{manifest}: watch is ready");
    assert!(
        eventually(Duration::from_secs(10), || link_mtu(node, &pod, "docker0")
            == "1450"),
        "{manifest}: docker0 at the pod's 1450"
    );
    let reads: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| first_instruction_mtu(node, &pod)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        reads.iter().all(|r| r == "1450"),
        "{manifest}: every inner container reads 1450 at its first instruction: {reads:?}"
    );
    pod
}

/// Whether `watch` started before dind in `pod` (the runtime's clocks).
fn watch_started_first(node: &RealNode, pod: &Pod) -> bool {
    node.started_at(pod, "mtuvisor") < node.started_at(pod, "dind")
}

/// Both sidecar examples as written, on one node; then the native sidecar
/// made an ordinary container (moved to `containers`, as on a cluster
/// without native sidecars, or by an edit that drops `restartPolicy:
/// Always` and moves it): dind then starts before watch is in place, and
/// the start-order check that the example as written passes fails.
#[test]
fn the_sidecar_examples_clamp_beside_unmodified_dind_in_their_start_order() {
    if !require_real_node("the_sidecar_examples_clamp_beside_unmodified_dind_in_their_start_order")
    {
        return;
    }
    let mut node = RealNode::start("rnsc");
    let plain = sidecar_example_clamps(
        &mut node,
        "dind-sidecar.yaml",
        &example("kubernetes/dind-sidecar.yaml"),
        0,
    );
    node.remove_pod(&plain);

    let manifest = "dind-native-sidecar.yaml";
    let yaml = example(&format!("kubernetes/{manifest}"));
    let native = sidecar_example_clamps(&mut node, manifest, &yaml, 1);
    assert!(
        watch_started_first(&node, &native),
        "{manifest}: the native sidecar starts, and is ready, before dind"
    );
    node.remove_pod(&native);

    let ordinary = edit_manifest(&yaml, |doc| {
        let spec = &mut doc["spec"];
        let inits = spec["initContainers"].as_array_mut().unwrap();
        let at = inits
            .iter()
            .position(|c| c["name"] == "mtuvisor")
            .expect("the native sidecar");
        let mut watch = inits.remove(at);
        let fields = watch.as_object_mut().unwrap();
        fields.remove("restartPolicy");
        fields.remove("startupProbe");
        spec["containers"].as_array_mut().unwrap().push(watch);
    });
    let mutated = sidecar_example_clamps(&mut node, "the ordinary-container edit", &ordinary, 2);
    assert!(
        !watch_started_first(&node, &mutated),
        "made an ordinary container, watch starts after dind: the order check above catches it"
    );
}

/// The image in place of docker:dind, in both shapes, on one node.
///
/// dind-supervised.yaml: `supervise` as the native-sidecar dind container,
/// waited for by its `docker info` startup probe; the job container, a
/// docker client on the shared socket, gets the pod's MTU in a container
/// and in a `docker build` RUN step. No registry here: the job's own
/// alpine build cannot run, so the job container waits and the test runs
/// its two steps against busybox.
///
/// GitLab's shape (examples/gitlab/config.toml, runner `kubernetes-dind`):
/// the image as the job's `docker` service with TLS on 2376, the job
/// reaching it as `docker:2376` with the client certificates the service
/// made in the shared volume; the same two steps.
#[test]
fn the_image_in_place_of_dind_gives_the_jobs_containers_and_build_steps_the_pods_mtu() {
    if !require_real_node(
        "the_image_in_place_of_dind_gives_the_jobs_containers_and_build_steps_the_pods_mtu",
    ) {
        return;
    }
    let mut node = RealNode::start("rnsup");
    let yaml = example("kubernetes/dind-supervised.yaml");
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
    node.remove_pod(&pod);

    let pod = node.run_pod(gitlab_job_pod(&node));
    // The runner waits for the service's HEALTHCHECK_TCP_PORT.
    let service = format!("{}:2376", node.ip_of(&pod));
    let listening = eventually(Duration::from_secs(60), || {
        common::in_netns(&node.netns, {
            let service = service.clone();
            move || std::net::TcpStream::connect(service.as_str()).is_ok()
        })
    });
    assert!(listening, "the docker service listens on 2376");
    docker_ready_from(&node, &pod, "build");
    let (_, host, _) = node.exec(
        &pod,
        "build",
        &["sh", "-c", "echo $DOCKER_HOST $DOCKER_TLS_VERIFY"],
        Duration::from_secs(5),
    );
    assert_eq!(
        host, "tcp://docker:2376 1",
        "the job talks TLS to docker:2376"
    );
    assert_eq!(first_instruction_mtu_from(&node, &pod, "build"), "1450");
    assert_eq!(
        build_step_mtu(&node, &pod, "build"),
        "1450",
        "the RUN step read the pod's MTU"
    );
}

/// The pod GitLab Runner's Kubernetes executor makes for a job under the
/// `kubernetes-dind` runner of examples/gitlab/config.toml: the job's
/// container (`build`, a docker client) with the runner's environment,
/// each service a container of the same pod with its own environment,
/// privileged as the runner says, the runner's emptyDir volumes in each,
/// and each service's alias resolving to the pod itself (the executor's
/// hostAliases, which kubelet writes into /etc/hosts).
fn gitlab_job_pod(node: &RealNode) -> Pod {
    let text = example("gitlab/config.toml");
    let config: toml::Value = toml::from_str(&text).expect("config.toml parses");
    let runner = config["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str() == Some("kubernetes-dind"))
        .expect("the kubernetes-dind runner");
    let kube = &runner["kubernetes"];
    let env = |v: Option<&toml::Value>| -> Vec<(String, String)> {
        v.and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let privileged = kube["privileged"].as_bool() == Some(true);
    let volumes: Vec<(std::path::PathBuf, String, bool, bool)> = kube["volumes"]["empty_dir"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap();
            let path = v["mount_path"].as_str().unwrap();
            (
                node.host_dir(&format!("gitlab-{name}")),
                path.to_string(),
                false,
                false,
            )
        })
        .collect();
    let mut aliases = vec!["localhost".to_string()];
    let mut containers = Vec::new();
    for (i, svc) in kube["services"].as_array().unwrap().iter().enumerate() {
        let image = svc["name"].as_str().unwrap();
        assert_eq!(image, AGENT_IMAGE, "the service is the project's image");
        aliases.extend(svc.get("alias").and_then(|a| a.as_str()).map(String::from));
        let data = node.host_dir(&format!("gitlab-svc-{i}-docker"));
        let mut mounts = volumes.clone();
        mounts.push((data, "/var/lib/docker".into(), false, false));
        containers.push(Container {
            name: format!("svc-{i}"),
            image: image.into(),
            env: env(svc.get("environment")),
            privileged,
            mounts,
            ..Container::default()
        });
    }
    let hosts = node.host_dir("gitlab-hosts").join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1\t{}\n", aliases.join(" "))).unwrap();
    let busybox = common::dockerd::busybox_tar()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut mounts = volumes;
    mounts.push((hosts, "/etc/hosts".into(), true, false));
    mounts.push((busybox, "/images".into(), true, false));
    containers.insert(
        0,
        Container {
            name: "build".into(),
            image: common::realnode::CLI_IMAGE.into(),
            command: vec!["sleep".into(), "600".into()],
            env: env(runner.get("environment")),
            privileged,
            mounts,
            ..Container::default()
        },
    );
    Pod {
        name: "runner-job".into(),
        containers,
        ..Pod::default()
    }
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
        try_http_get(&node.netns, HEALTH, "/healthz").is_ok_and(|(s, _)| s == 200)
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
