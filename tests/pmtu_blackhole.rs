//! The failure users report, end to end: through a PMTU black hole, an
//! inner container's download and TLS handshake stall without mtuvisor and
//! complete with it.

use testkit as common;

use std::time::Duration;

use common::blackhole::BlackHole;
use common::dockerd::require_docker;

/// Long enough for 8 MB on this lab many times over; a stall never ends.
const LIMIT: Duration = Duration::from_secs(15);

fn lab(tag: &str, router_to_pod_mtu: u32) -> BlackHole {
    let mut b = BlackHole::new(tag, router_to_pod_mtu);
    b.d.start_plain();
    b.d.ready();
    b.d.import_busybox();
    b.d.docker_ok(&["network", "create", "ci"]);
    b
}

fn completes(b: &BlackHole, what: &str) {
    let http = b.fetch("ci", &b.http_big(), LIMIT);
    let https = b.fetch("ci", &b.https_small(), LIMIT);
    assert!(
        http.is_some(),
        "{what}: the 8 MB download completes; log:\n{}",
        b.d.tail()
    );
    assert!(
        https.is_some(),
        "{what}: the TLS handshake completes; log:\n{}",
        b.d.tail()
    );
    eprintln!(
        "{what}: 8 MB in {:?}, TLS fetch in {:?}",
        http.unwrap(),
        https.unwrap()
    );
}

fn settle(b: &BlackHole) {
    // The sidecar's first sweep and MSS rules; both are in place within a
    // second of its start.
    assert!(common::eventually(Duration::from_secs(5), || common::mtu(
        &b.d.pod, "docker0"
    ) <= 1450));
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn without_mtuvisor_the_lab_is_a_black_hole() {
    if !require_docker("without_mtuvisor_the_lab_is_a_black_hole") {
        return;
    }
    let b = lab("bhnone", 1450);
    assert_eq!(
        b.fetch("ci", &b.http_big(), LIMIT),
        None,
        "the 8 MB download must stall"
    );
    assert_eq!(
        b.fetch("ci", &b.https_small(), LIMIT),
        None,
        "the TLS handshake must stall"
    );
}

#[test]
fn mtu_clamping_and_mss_both_complete() {
    if !require_docker("mtu_clamping_and_mss_both_complete") {
        return;
    }
    let mut b = lab("bhfull", 1450);
    b.d.start_sidecar();
    settle(&b);
    completes(&b, "MTU + MSS");
}

#[test]
fn mtu_clamping_alone_completes() {
    if !require_docker("mtu_clamping_alone_completes") {
        return;
    }
    let mut b = lab("bhmtu", 1450);
    b.d.start_sidecar_with(&["--mss", "off"], &[]);
    settle(&b);
    completes(&b, "MTU only");
}

#[test]
fn mss_clamping_alone_completes() {
    if !require_docker("mss_clamping_alone_completes") {
        return;
    }
    let mut b = lab("bhmss", 1450);
    b.d.start_sidecar_with(&[], &[("MTUVISOR_ENFORCE_MTU", "false")]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(common::mtu(&b.d.pod, "docker0"), 1500, "links left alone");
    completes(&b, "MSS only");
}

#[test]
fn fixed_mss_covers_a_bottleneck_beyond_eth0() {
    if !require_docker("fixed_mss_covers_a_bottleneck_beyond_eth0") {
        return;
    }
    // The router's link to the pod is 1400 while the pod's eth0 says 1450.
    let mut b = lab("bhfix", 1400);
    b.d.start_sidecar_with(&["--mss", "1360"], &[]);
    settle(&b);
    completes(&b, "bottleneck 1400, mss 1360");
}

// ---- The same cases under supervise, the mode the image runs ----

fn supervised(
    tag: &str,
    router_to_pod_mtu: u32,
    flags: &[&str],
    env: &[(&str, &str)],
) -> BlackHole {
    let mut b = BlackHole::new(tag, router_to_pod_mtu);
    b.d.start_supervised_env(flags, env);
    b.d.ready();
    b.d.import_busybox();
    b.d.docker_ok(&["network", "create", "ci"]);
    b
}

#[test]
fn mtu_clamping_and_mss_both_complete_under_supervise() {
    if !require_docker("mtu_clamping_and_mss_both_complete_under_supervise") {
        return;
    }
    let b = supervised("bhsfull", 1450, &[], &[]);
    settle(&b);
    completes(&b, "supervise: MTU + MSS");
}

#[test]
fn mtu_clamping_alone_completes_under_supervise() {
    if !require_docker("mtu_clamping_alone_completes_under_supervise") {
        return;
    }
    let b = supervised("bhsmtu", 1450, &["--mss", "off"], &[]);
    settle(&b);
    completes(&b, "supervise: MTU only");
}

#[test]
fn mss_clamping_alone_completes_under_supervise() {
    if !require_docker("mss_clamping_alone_completes_under_supervise") {
        return;
    }
    let b = supervised("bhsmss", 1450, &[], &[("MTUVISOR_ENFORCE_MTU", "false")]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(common::mtu(&b.d.pod, "docker0"), 1500, "links left alone");
    completes(&b, "supervise: MSS only");
}

#[test]
fn fixed_mss_covers_a_bottleneck_beyond_eth0_under_supervise() {
    if !require_docker("fixed_mss_covers_a_bottleneck_beyond_eth0_under_supervise") {
        return;
    }
    let b = supervised("bhsfix", 1400, &["--mss", "1360"], &[]);
    settle(&b);
    completes(&b, "supervise: bottleneck 1400, mss 1360");
}
