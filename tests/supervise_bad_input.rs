//! Bad input to `supervise` and `watch --docker-host`: one line, exit 2,
//! no dockerd left behind.

use testkit as common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::{assert_rejected, ip, mtu, privileged, run_mtuvisor, Lab};

/// No process carries `marker` (a path unique to this test) in its command line.
fn nothing_running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| !String::from_utf8_lossy(&c).contains(marker))
            .unwrap_or(true)
    })
}

/// A directory removed when the test ends, passed or failed.
struct Scratch(String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = String;
    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::fmt::Display for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn pod(tag: &str) -> (Lab, String, Scratch) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    let dir = format!("/tmp/mtuvisor-e2e/{}", lab.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    (lab, pod, Scratch(dir))
}

#[test]
fn command_that_does_not_exist() {
    if !privileged("command_that_does_not_exist") {
        return;
    }
    let (_lab, pod, dir) = pod("bcmd");
    let missing = format!("{dir}/no-such-dockerd");
    let out = run_mtuvisor(
        &pod,
        &["supervise", "--", &missing, "--data-root", &dir],
        &[],
    );
    assert_rejected(&out, &["command not found", &missing]);
    assert!(nothing_running_with(&dir));
    assert_eq!(mtu(&pod, "docker0"), 1500, "nothing enforced either");
}

#[test]
fn invalid_stop_timeout() {
    if !privileged("invalid_stop_timeout") {
        return;
    }
    let (_lab, pod, dir) = pod("bstop");
    for bad in ["forever", "0s", "-5"] {
        let out = run_mtuvisor(
            &pod,
            &[
                "supervise",
                "--stop-timeout",
                bad,
                "--",
                "dockerd",
                "--data-root",
                &dir,
            ],
            &[],
        );
        assert_rejected(&out, &["stop_timeout", bad]);
    }
    let out = run_mtuvisor(
        &pod,
        &["supervise", "--", "dockerd", "--data-root", &dir],
        &[("MTUVISOR_STOP_TIMEOUT", "soon")],
    );
    assert_rejected(&out, &["MTUVISOR_STOP_TIMEOUT", "soon"]);
    let out = run_mtuvisor(
        &pod,
        &["supervise", "--", "dockerd", "--data-root", &dir],
        &[("MTUVISOR_REALTIME_PRIORITY", "100")],
    );
    assert_rejected(&out, &["MTUVISOR_REALTIME_PRIORITY", "100", "1–99"]);
    assert!(nothing_running_with(&dir), "no dockerd was started");
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn unreachable_docker_socket() {
    if !privileged("unreachable_docker_socket") {
        return;
    }
    let (_lab, pod, dir) = pod("bdead");
    // A socket file nobody listens on any more.
    let path = format!("{dir}/dead.sock");
    drop(UnixListener::bind(&path).unwrap());
    let out = run_mtuvisor(
        &pod,
        &["watch", &format!("--docker-host=unix://{path}")],
        &[],
    );
    assert_rejected(&out, &[&path, "Docker API"]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn socket_that_is_not_docker() {
    if !privileged("socket_that_is_not_docker") {
        return;
    }
    let (_lab, pod, dir) = pod("bhttp");
    let path = format!("{dir}/not-docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n");
        }
    });
    let out = run_mtuvisor(
        &pod,
        &["watch", &format!("--docker-host=unix://{path}")],
        &[],
    );
    assert_rejected(&out, &[&path, "Docker API"]);
    let out = run_mtuvisor(&pod, &["watch", "--docker-host=tcp://127.0.0.1:2375"], &[]);
    assert_rejected(&out, &["docker_host", "unix://"]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn mss_backend_missing_or_mss_too_large() {
    if !privileged("mss_backend_missing_or_mss_too_large") {
        return;
    }
    let (_lab, pod, dir) = pod("bmss");
    let out = run_mtuvisor(
        &pod,
        &[
            "supervise",
            "--mss",
            "1420",
            "--",
            "dockerd",
            "--data-root",
            &dir,
        ],
        &[],
    );
    assert_rejected(&out, &["mss", "1410"]);
    // A PATH without iptables-legacy (nsenter by its path: PATH is emptied).
    let empty = format!("{dir}/emptybin");
    std::fs::create_dir_all(&empty).unwrap();
    let dockerd = common::dockerd::dockerd_path().expect("a dockerd");
    let out = std::process::Command::new("/usr/bin/nsenter")
        .arg(format!("--net=/run/netns/{pod}"))
        .args([
            common::bin(),
            "supervise",
            "--",
            &dockerd.display().to_string(),
            "--data-root",
            &dir,
        ])
        .env("MTUVISOR_MSS_BACKEND", "iptables-legacy")
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_rejected(&out, &["iptables-legacy", "not installed"]);
    assert!(nothing_running_with(&dir), "no dockerd was started");
    assert_eq!(mtu(&pod, "docker0"), 1500);
}
