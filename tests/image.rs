//! The image (image/Dockerfile) as users run it: privileged, as the DinD
//! container of a pod whose eth0 has MTU 1450, here a container of a plain
//! dockerd started with `--mtu=1450`. Its base is built from Debian's
//! packages (image/rootfs.sh), since no registry can be reached.

use testkit as common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::dockerd::{busybox_tar, require_docker, DockerLab};
use common::{bin, eventually};

const BASE: &str = "mtuvisor-test/base:bookworm";
const IMAGE: &str = "mtuvisor-test/dind:latest";
const INNER_IMAGE: &str = "busybox:test";

/// What `--privileged` gives, less CAP_SYS_RESOURCE: this machine's own
/// bounding set lacks it, so runc refuses `--privileged` here. Users run
/// the image with `--privileged` (or `privileged: true` in Kubernetes).
const PRIVILEGED: &[&str] = &[
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup",
];

/// The base tarball, built once per machine (about 40 s and 550 MB).
fn base_tar() -> PathBuf {
    let tar = PathBuf::from("/tmp/mtuvisor-e2e/image-base-bookworm-v1.tar");
    if !tar.exists() {
        std::fs::create_dir_all("/tmp/mtuvisor-e2e").unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/image/rootfs.sh");
        common::sh(&["sh", script, tar.to_str().unwrap()]);
    }
    tar
}

/// `docker build` of image/Dockerfile on the base, with this build's binary.
fn build_image(d: &DockerLab) {
    d.docker_ok(&["import", base_tar().to_str().unwrap(), BASE]);
    let context = d.dir.join("image-context");
    std::fs::create_dir_all(&context).unwrap();
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/image/Dockerfile");
    std::fs::copy(dockerfile, context.join("Dockerfile")).unwrap();
    std::fs::copy(bin(), context.join("mtuvisor-local")).unwrap();
    d.docker_ok(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={BASE}"),
        "-t",
        IMAGE,
        context.to_str().unwrap(),
    ]);
}

/// `docker exec dind docker …` against the inner dockerd.
fn inner(d: &DockerLab, args: &[&str]) -> String {
    let mut all = vec!["exec", "dind", "docker"];
    all.extend_from_slice(args);
    d.docker_ok(&all)
}

#[test]
fn image_runs_dind_at_the_pod_mtu() {
    if !require_docker("image_runs_dind_at_the_pod_mtu") {
        return;
    }
    let mut d = DockerLab::new("img");
    // The "pod": containers of this dockerd get eth0 at 1450.
    d.start_plain_with(&["--mtu=1450"]);
    d.ready();
    build_image(&d);
    d.docker_ok(&[&["run", "-d", "--name", "dind"], PRIVILEGED, &[IMAGE]].concat());

    let answered = eventually(Duration::from_secs(60), || {
        d.docker(&["exec", "dind", "docker", "version"])
            .status
            .success()
    });
    assert!(
        answered,
        "the inner dockerd answers; container log:\n{}",
        String::from_utf8_lossy(&d.docker(&["logs", "--tail", "30", "dind"]).stderr)
    );
    let detect = d.docker_ok(&["exec", "dind", "mtuvisor", "detect"]);
    assert!(detect.contains("outer MTU: 1450 on eth0"), "{detect}");

    let status = d
        .docker_cmd()
        .args(["exec", "-i", "dind", "docker", "import", "-", INNER_IMAGE])
        .stdin(std::fs::File::open(busybox_tar()).unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "busybox imported into the inner dockerd");
    let read = |network: &str| {
        inner(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                network,
                INNER_IMAGE,
                "cat",
                "/sys/class/net/eth0/mtu",
            ],
        )
    };
    assert_eq!(read("bridge"), "1450", "default bridge");
    inner(&d, &["network", "create", "ci"]);
    assert_eq!(read("ci"), "1450", "a user-defined network created at 1500");

    // docker stop sends SIGTERM to mtuvisor (PID 1): dockerd is stopped
    // cleanly and the container exits 0.
    let t = Instant::now();
    d.docker_ok(&["stop", "-t", "30", "dind"]);
    let took = t.elapsed();
    let code = d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "dind"]);
    assert_eq!(code, "0", "exit code after docker stop");
    assert!(took < Duration::from_secs(25), "stopped in {took:?}");
    let logs = d.docker(&["logs", "dind"]);
    let logs =
        String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("supervising dockerd"), "{logs}");
    assert!(logs.contains("dockerd stopped"), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("set MTU") && l.contains("link=br-")),
        "the user network's bridge was clamped by mtuvisor: {logs}"
    );
    d.docker_ok(&["rm", "-v", "dind"]);
}
