//! The images as users run them, as the DinD container of a "pod": here a
//! container of a plain test dockerd whose networks have MTU 1450.
//!
//! No registry can be reached here, so the image under test is the offline
//! one (image/Dockerfile.debian, on a base made from Debian's packages by
//! image/rootfs.sh), which keeps docker:dind's contract with the project's
//! own dockerd-entrypoint.sh. The release image (image/Dockerfile, FROM
//! docker:<pin>-dind) is built against a stand-in for docker:dind that
//! records what it is given.

use testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::dockerd::{busybox_tar, require_docker, DockerLab, IMAGE as BUSYBOX_OUTER};
use common::realnode::base_tar;
use common::{bin, eventually};

const BASE: &str = "mtuvisor-test/base:bookworm";
const IMAGE: &str = "mtuvisor-test/dind:latest";
/// The busybox image inside the inner dockerds.
const INNER: &str = "busybox:test";
/// The user-defined network of the "pod", at the pod's MTU.
const NET: &str = "ci";

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

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A build context laid out as the repository's root (the context both
/// Dockerfiles expect), with its .dockerignore and this build's binary.
fn context(d: &DockerLab, name: &str) -> PathBuf {
    let ctx = d.dir.join(name);
    std::fs::create_dir_all(ctx.join("image")).unwrap();
    for f in [
        ".dockerignore",
        "image/Dockerfile",
        "image/Dockerfile.debian",
        "image/dockerd-entrypoint.sh",
    ] {
        std::fs::copy(Path::new(REPO).join(f), ctx.join(f)).unwrap();
    }
    std::fs::copy(bin(), ctx.join("image/mtuvisor-local")).unwrap();
    ctx
}

/// The outer dockerd ("the node"), with the offline image built in it and
/// a user-defined network at the pod's MTU.
fn lab(tag: &str) -> DockerLab {
    let mut d = DockerLab::new(tag);
    d.start_plain_with(&["--mtu=1450"]);
    d.ready();
    d.docker_ok(&["import", base_tar().to_str().unwrap(), BASE]);
    let ctx = context(&d, "context");
    d.docker_ok(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={BASE}"),
        "--build-arg",
        "TARGETARCH=local",
        "-f",
        ctx.join("image/Dockerfile.debian").to_str().unwrap(),
        "-t",
        IMAGE,
        ctx.to_str().unwrap(),
    ]);
    d.docker_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=1450",
        NET,
    ]);
    d
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts the image as a detached DinD container named `name`.
fn run_dind(d: &DockerLab, name: &str, options: &[&str], command: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "--network", NET];
    args.extend_from_slice(PRIVILEGED);
    args.extend_from_slice(options);
    args.push(IMAGE);
    args.extend_from_slice(command);
    d.docker_ok(&args);
}

/// The DinD container's log (mtuvisor's and dockerd's).
fn logs(d: &DockerLab, name: &str) -> String {
    both(&d.docker(&["logs", name]))
}

/// A "job" container on the pod network: the image's docker CLI with
/// `env`, `volumes` and `stdin`, running `docker ARGS`.
struct Job<'a> {
    d: &'a DockerLab,
    env: Vec<String>,
    volumes: Vec<String>,
}

impl Job<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.d.docker_cmd();
        cmd.args([
            "run",
            "--rm",
            "-i",
            "--network",
            NET,
            "--entrypoint",
            "docker",
        ]);
        cmd.args(["-e", "DOCKER_BUILDKIT=0"]);
        for e in &self.env {
            cmd.args(["-e", e]);
        }
        for v in &self.volumes {
            cmd.args(["-v", v]);
        }
        cmd.arg(IMAGE).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker run")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "job `docker {}` failed: {}",
            args.join(" "),
            both(&out)
        );
        text(&out)
    }

    fn with_stdin(&self, args: &[&str], stdin: Stdio) -> Output {
        self.cmd(args).stdin(stdin).output().expect("docker run")
    }

    /// Waits until the inner dockerd answers this job.
    fn connects(&self, dind: &str) {
        let answered = eventually(Duration::from_secs(90), || {
            self.run(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        });
        assert!(
            answered,
            "the job reaches the inner dockerd: {}\n--- {dind} ---\n{}",
            both(&self.run(&["version"])),
            logs(self.d, dind)
        );
    }

    /// busybox into the inner dockerd, through this job's connection.
    fn import_busybox(&self) {
        let out = self.with_stdin(
            &["import", "-", INNER],
            Stdio::from(std::fs::File::open(busybox_tar()).unwrap()),
        );
        assert!(out.status.success(), "import: {}", both(&out));
    }

    /// What an inner container's first instruction reads as its MTU.
    fn first_instruction_mtu(&self, network: &str) -> String {
        self.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            INNER,
            "cat",
            "/sys/class/net/eth0/mtu",
        ])
    }

    /// `docker build` of a RUN step that reads the MTU: what it printed.
    fn build_step_mtu(&self) -> String {
        let dockerfile =
            format!("FROM {INNER}\nRUN echo build-mtu=$(cat /sys/class/net/eth0/mtu)\n");
        let mut child = self
            .cmd(&["build", "--no-cache", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let all = both(&out);
        assert!(out.status.success(), "docker build: {all}");
        all.lines()
            .find_map(|l| l.trim().strip_prefix("build-mtu="))
            .unwrap_or_else(|| panic!("no build-mtu line in {all}"))
            .to_string()
    }
}

/// dockerd's command line inside the DinD container, from its pid file.
fn dockerd_cmdline(d: &DockerLab, dind: &str) -> Vec<String> {
    let out = d.docker_ok(&[
        "exec",
        dind,
        "sh",
        "-c",
        "tr '\\0' '\\n' < /proc/$(cat /var/run/docker.pid)/cmdline",
    ]);
    out.lines().map(str::to_string).collect()
}

fn ca_fingerprint(d: &DockerLab, dind: &str) -> String {
    d.docker_ok(&[
        "exec",
        dind,
        "openssl",
        "x509",
        "-in",
        "/certs/ca/cert.pem",
        "-noout",
        "-fingerprint",
        "-sha256",
    ])
}

/// `docker stop` sends SIGTERM to mtuvisor (PID 1), which stops dockerd
/// cleanly: exit code 0, and the log tells what happened.
fn stops_cleanly(d: &DockerLab, dind: &str) {
    d.docker_ok(&["stop", "-t", "30", dind]);
    let code = d.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", dind]);
    let log = logs(d, dind);
    assert_eq!(code, "0", "exit code after docker stop; log:\n{log}");
    assert!(log.contains("dockerd stopped"), "{log}");
}

/// GitLab's documented Kubernetes-executor setup, with this image in place
/// of docker:dind: the service listens with TLS on 2376, the job reaches
/// it as `docker:2376` with the client certificates from a shared volume.
#[test]
fn gitlab_tls_service() {
    if !require_docker("gitlab_tls_service") {
        return;
    }
    let d = lab("gtls");
    let certs = format!("{}-certs", d.lab.prefix());
    run_dind(
        &d,
        "docker",
        &[
            "--network-alias",
            "docker",
            "-e",
            "DOCKER_TLS_CERTDIR=/certs",
            "-v",
            &format!("{certs}:/certs/client"),
        ],
        &[],
    );
    let job = Job {
        d: &d,
        env: vec![
            "DOCKER_HOST=tcp://docker:2376".into(),
            "DOCKER_TLS_VERIFY=1".into(),
            "DOCKER_CERT_PATH=/certs/client".into(),
        ],
        volumes: vec![format!("{certs}:/certs/client:ro")],
    };
    job.connects("docker");

    let argv = dockerd_cmdline(&d, "docker");
    for flag in ["--host=tcp://0.0.0.0:2376", "--tlsverify", "--mtu=1450"] {
        assert!(argv.iter().any(|a| a == flag), "{flag} in {argv:?}");
    }
    assert!(
        !argv.iter().any(|a| a.contains(":2375")),
        "no plain port with TLS: {argv:?}"
    );

    job.import_busybox();
    assert_eq!(
        job.first_instruction_mtu("bridge"),
        "1450",
        "default bridge"
    );
    job.ok(&["network", "create", "job"]);
    assert_eq!(
        job.first_instruction_mtu("job"),
        "1450",
        "a network the job created (at 1500 by dockerd)"
    );
    assert_eq!(job.build_step_mtu(), "1450", "a docker build RUN step");

    // No client certificate, no entry: neither in plain text nor with the
    // CA alone.
    let stranger = Job {
        d: &d,
        env: vec!["DOCKER_HOST=tcp://docker:2376".into()],
        volumes: vec![],
    };
    let plain = stranger.run(&["version", "--format", "{{.Server.Version}}"]);
    assert!(!plain.status.success(), "plain client: {}", both(&plain));
    let ca_only = Job {
        d: &d,
        env: vec!["DOCKER_HOST=tcp://docker:2376".into()],
        volumes: vec![format!("{certs}:/certs/client:ro")],
    }
    .run(&[
        "--tlsverify",
        "--tlscacert=/certs/client/ca.pem",
        "version",
        "--format",
        "{{.Server.Version}}",
    ]);
    assert!(
        !ca_only.status.success(),
        "a client with the CA but no certificate: {}",
        both(&ca_only)
    );
    assert!(
        !text(&ca_only).contains("20."),
        "no server version for it: {}",
        both(&ca_only)
    );

    // A restart keeps the CA: the job's certificates still work.
    let ca = ca_fingerprint(&d, "docker");
    d.docker_ok(&["restart", "-t", "30", "docker"]);
    job.connects("docker");
    assert_eq!(
        ca_fingerprint(&d, "docker"),
        ca,
        "the same CA after a restart"
    );
    assert_eq!(job.first_instruction_mtu("bridge"), "1450", "after restart");

    let log = logs(&d, "docker");
    assert!(log.contains("supervising dockerd"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("set MTU") && l.contains("link=br-")),
        "mtuvisor clamped the job's network bridge: {log}"
    );
    stops_cleanly(&d, "docker");
    d.docker_ok(&["rm", "-v", "docker"]);
}

/// DOCKER_TLS_CERTDIR="" (plain 2375) with flags as the command, as
/// GitLab's docs have users write `--mtu=…`; then actions-runner-
/// controller's form, `dockerd --host=unix:///var/run/docker.sock`, with
/// the socket shared with the runner through a volume; then another
/// command, which runs as given.
#[test]
fn plain_port_flags_and_the_arc_form() {
    if !require_docker("plain_port_flags_and_the_arc_form") {
        return;
    }
    let d = lab("gplain");

    // Flags only: dockerd gets the entrypoint's defaults, then the flags;
    // the user's --mtu wins over mtuvisor's.
    run_dind(
        &d,
        "docker",
        &["--network-alias", "docker", "-e", "DOCKER_TLS_CERTDIR="],
        &["--mtu=1400", "--debug"],
    );
    let job = Job {
        d: &d,
        env: vec!["DOCKER_HOST=tcp://docker:2375".into()],
        volumes: vec![],
    };
    job.connects("docker");
    let argv = dockerd_cmdline(&d, "docker");
    for flag in [
        "--host=unix:///var/run/docker.sock",
        "--host=tcp://0.0.0.0:2375",
        "--mtu=1400",
        "--debug",
    ] {
        assert!(argv.iter().any(|a| a == flag), "{flag} in {argv:?}");
    }
    assert_eq!(
        argv.iter().filter(|a| a.starts_with("--mtu")).count(),
        1,
        "only the user's --mtu: {argv:?}"
    );
    assert!(!argv.iter().any(|a| a.contains("tls")), "{argv:?}");
    job.import_busybox();
    assert_eq!(
        job.first_instruction_mtu("bridge"),
        "1400",
        "the default bridge at the user's --mtu"
    );
    job.ok(&["network", "create", "job"]);
    assert_eq!(job.first_instruction_mtu("job"), "1450", "a new network");
    assert_eq!(
        job.build_step_mtu(),
        "1400",
        "a build on the default bridge"
    );
    stops_cleanly(&d, "docker");
    d.docker_ok(&["rm", "-v", "docker"]);

    // actions-runner-controller: `dockerd …` as the command, the socket
    // shared with the runner container.
    let socket = format!("{}-run", d.lab.prefix());
    run_dind(
        &d,
        "arc",
        &["-v", &format!("{socket}:/var/run")],
        &["dockerd", "--host=unix:///var/run/docker.sock"],
    );
    let runner = Job {
        d: &d,
        env: vec!["DOCKER_HOST=unix:///var/run/docker.sock".into()],
        volumes: vec![format!("{socket}:/var/run")],
    };
    runner.connects("arc");
    let argv = dockerd_cmdline(&d, "arc");
    assert_eq!(
        argv,
        [
            "dockerd",
            "--host=unix:///var/run/docker.sock",
            "--mtu=1450"
        ],
        "the command as given, plus mtuvisor's --mtu"
    );
    runner.import_busybox();
    assert_eq!(runner.first_instruction_mtu("bridge"), "1450");
    stops_cleanly(&d, "arc");
    d.docker_ok(&["rm", "-v", "arc"]);

    // Another command runs once, as given, with stdin, and its exit code
    // is the container's.
    let mut args = vec!["run", "--rm", "-i", "--network", NET];
    args.extend_from_slice(PRIVILEGED);
    args.extend_from_slice(&[IMAGE, "sh", "-c", "read line; echo \"got $line\"; exit 3"]);
    let mut child = d
        .docker_cmd()
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", both(&out));
    assert_eq!(text(&out), "got hello", "{}", both(&out));
    assert!(
        !both(&out).contains("--mtu"),
        "no dockerd flag given to another command: {}",
        both(&out)
    );
}

/// image/Dockerfile puts mtuvisor in front of the official
/// dockerd-entrypoint.sh. No registry can be reached here, so docker:dind
/// is replaced by a stand-in built from the Debian base: its
/// dockerd-entrypoint.sh records the arguments it receives, and its
/// `dockerd --version` answers as Engine 29 does. The release workflow
/// builds the real thing.
#[test]
fn release_dockerfile_wraps_dockerd_entrypoint() {
    if !require_docker("release_dockerfile_wraps_dockerd_entrypoint") {
        return;
    }
    let mut d = DockerLab::new("grel");
    d.start_plain_with(&["--mtu=1450"]);
    d.ready();
    d.docker_ok(&["import", base_tar().to_str().unwrap(), BASE]);

    let standin = d.dir.join("standin");
    std::fs::create_dir_all(&standin).unwrap();
    std::fs::write(
        standin.join("dockerd-entrypoint.sh"),
        "#!/bin/sh\n\
         # docker:dind's stand-in: says what it got, then waits for SIGTERM.\n\
         trap 'echo stand-in: stopped; exit 0' TERM\n\
         printf 'stand-in got:'; printf ' [%s]' \"$@\"; echo\n\
         while :; do sleep 0.1; done\n",
    )
    .unwrap();
    std::fs::write(
        standin.join("dockerd"),
        "#!/bin/sh\n\
         # Only what mtuvisor asks before it starts the entrypoint.\n\
         [ \"$1\" = --version ] && echo 'Docker version 29.7.2, build 0000000' && exit 0\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::write(
        standin.join("Dockerfile"),
        format!("FROM {BASE}\nCOPY dockerd-entrypoint.sh dockerd /usr/local/bin/\n"),
    )
    .unwrap();
    // The classic builder has no COPY --chmod; it keeps the context's modes.
    for f in ["dockerd-entrypoint.sh", "dockerd"] {
        common::sh(&["chmod", "0755", standin.join(f).to_str().unwrap()]);
    }
    d.docker_ok(&[
        "build",
        "-q",
        "-t",
        "standin/docker:dind",
        standin.to_str().unwrap(),
    ]);

    let ctx = context(&d, "release-context");
    // As the release workflow's artifacts deliver it: actions/upload-artifact
    // and download-artifact do not keep file modes.
    common::sh(&[
        "chmod",
        "0644",
        ctx.join("image/mtuvisor-local").to_str().unwrap(),
    ]);
    d.docker_ok(&[
        "build",
        "-q",
        "--target",
        "prebuilt",
        "--build-arg",
        "DIND=standin/docker:dind",
        "--build-arg",
        "TARGETARCH=local",
        "-f",
        ctx.join("image/Dockerfile").to_str().unwrap(),
        "-t",
        "mtuvisor-test/release:latest",
        ctx.to_str().unwrap(),
    ]);
    let entrypoint = d.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        "mtuvisor-test/release:latest",
    ]);
    assert_eq!(
        entrypoint,
        r#"["mtuvisor","supervise","--","dockerd-entrypoint.sh"] []"#
    );
    // The binary runs (the release workflow's smoke step does the same
    // with the pushed image, per platform).
    let version = d.docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "mtuvisor",
        "mtuvisor-test/release:latest",
        "--version",
    ]);
    assert_eq!(version, format!("mtuvisor {}", env!("CARGO_PKG_VERSION")));

    let engine24 = "--default-network-opt=bridge=com.docker.network.driver.mtu=1450";
    for (i, (command, expected)) in [
        (vec![], format!(" [--mtu=1450] [{engine24}]")),
        (vec!["--mtu=1400"], format!(" [--mtu=1400] [{engine24}]")),
        (
            vec!["dockerd", "--host=unix:///var/run/docker.sock"],
            format!(" [dockerd] [--host=unix:///var/run/docker.sock] [--mtu=1450] [{engine24}]"),
        ),
        (vec!["sh", "-c", "true"], " [sh] [-c] [true]".to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("rel{i}");
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(PRIVILEGED);
        args.push("mtuvisor-test/release:latest");
        args.extend(command.iter().copied());
        d.docker_ok(&args);
        let mut log = String::new();
        let recorded = eventually(Duration::from_secs(30), || {
            log = logs(&d, &name);
            log.contains("stand-in got:")
        });
        assert!(recorded, "{command:?}: the entrypoint ran; log:\n{log}");
        let got = log
            .lines()
            .find_map(|l| l.strip_prefix("stand-in got:"))
            .unwrap()
            .to_string();
        assert_eq!(got, expected, "{command:?}: log:\n{log}");
        d.docker_ok(&["rm", "-f", &name]);
    }
}

/// examples/compose, for real: the plain inner dockerd's download stalls,
/// mtuvisor's completes, and `down -v` leaves nothing behind.
#[test]
fn compose_repro_shows_the_hang_and_the_fix() {
    if !require_docker("compose_repro_shows_the_hang_and_the_fix") {
        return;
    }
    // Debian's Compose 1.29 where it is (this suite's machines), else the
    // Compose v2 plugin (GitHub's runner images have only that).
    let compose_bin: &[&str] = if Path::new("/usr/bin/docker-compose").exists() {
        &["docker-compose"]
    } else {
        &["docker", "compose"]
    };
    assert!(
        compose_bin.len() == 1
            || Command::new("docker")
                .args(["compose", "version"])
                .output()
                .is_ok_and(|o| o.status.success()),
        "compose_repro_shows_the_hang_and_the_fix needs Debian's docker-compose or the Compose v2 plugin \
         (scripts/test.sh installs docker-compose)"
    );
    let d = lab("gcomp");
    d.import_busybox();
    let dir = format!("{REPO}/examples/compose");
    let project = d.lab.prefix().replace('-', "");
    // This machine cannot grant --privileged (see PRIVILEGED): an override
    // gives the DinD services the same, less CAP_SYS_RESOURCE. Compose has
    // no `systempaths=unconfined`, so /proc/sys stays read-only: IP
    // forwarding, which the inner dockerd would switch on, is set here.
    let override_file = d.dir.join("no-privileged.yml");
    let extra = String::from(
        "    privileged: false\n    cap_add: [ALL]\n    cap_drop: [SYS_RESOURCE]\n    \
         security_opt: [seccomp=unconfined, apparmor=unconfined]\n    \
         device_cgroup_rules: ['a *:* rwm']\n    volumes: ['/sys/fs/cgroup:/sys/fs/cgroup']\n    \
         sysctls: {net.ipv4.ip_forward: '1'}\n",
    );
    std::fs::write(
        &override_file,
        format!("version: \"2.4\"\nservices:\n  dind-plain:\n{extra}  dind-mtuvisor:\n{extra}"),
    )
    .unwrap();
    // Everything docker-compose and try.sh are given: the test dockerd,
    // a project of the test's own, the images built here.
    let env = [
        ("DOCKER_HOST", format!("unix://{}", d.socket.display())),
        ("COMPOSE_PROJECT_NAME", project.clone()),
        ("DROPIN_IMAGE", IMAGE.to_string()),
        ("DIND_IMAGE", IMAGE.to_string()),
        ("BUSYBOX_IMAGE", BUSYBOX_OUTER.to_string()),
        ("INNER_IMAGE", INNER.to_string()),
    ];
    let files = format!("-f docker-compose.yml -f {}", override_file.display());
    let compose_cmd = |args: &[&str]| -> Command {
        let mut cmd = Command::new(compose_bin[0]);
        cmd.args(&compose_bin[1..])
            .current_dir(&dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(files.split(' '))
            .args(args);
        cmd
    };
    let compose = |args: &[&str]| -> Output { compose_cmd(args).output().expect("compose runs") };
    let config = compose(&["config", "-q"]);
    assert!(config.status.success(), "config: {}", both(&config));
    let up = compose(&["up", "-d"]);
    assert!(up.status.success(), "up: {}", both(&up));

    // The inner dockerds have no registry either: busybox goes in by hand.
    for service in ["dind-plain", "dind-mtuvisor"] {
        let ready = eventually(Duration::from_secs(90), || {
            compose(&["exec", "-T", service, "docker", "version"])
                .status
                .success()
        });
        assert!(
            ready,
            "{service} answers: {}",
            both(&compose(&["logs", service]))
        );
        let mut cmd = compose_cmd(&["exec", "-T", service, "docker", "import", "-", INNER]);
        cmd.stdin(std::fs::File::open(busybox_tar()).unwrap());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "import into {service}: {}",
            both(&out)
        );
    }

    // The README's command.
    let tried = Command::new("sh")
        .arg(format!("{dir}/try.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("COMPOSE", format!("{} {files}", compose_bin.join(" ")))
        .output()
        .unwrap();
    let out = both(&tried);
    eprintln!("{out}");
    assert!(tried.status.success(), "try.sh: {out}");
    assert!(
        out.contains("dind-plain     inner eth0 MTU 1500: wget of 8 MB stalled, killed after 15 s"),
        "{out}"
    );
    assert!(
        out.contains("dind-mtuvisor  inner eth0 MTU 1450: wget of 8 MB completed in"),
        "{out}"
    );

    let down = compose(&["down", "-v"]);
    assert!(down.status.success(), "down: {}", both(&down));
    let label = format!("label=com.docker.compose.project={project}");
    for what in [
        vec!["ps", "-a", "-q", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ] {
        assert_eq!(d.docker_ok(&what), "", "left behind: docker {what:?}");
    }
    // The anonymous /var/lib/docker volumes too: none is left at all.
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"]), "", "volumes left");
}
