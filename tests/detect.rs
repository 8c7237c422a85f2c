//! `mtuvisor detect` in real namespaces.

use testkit as common;

use common::{ip, ipv6_default_route, privileged, run_mtuvisor, Lab};

fn detect_json(netns: &str) -> serde_json::Value {
    let out = run_mtuvisor(netns, &["detect", "--json"], &[]);
    assert!(
        out.status.success(),
        "detect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("detect --json prints one JSON object")
}

#[test]
fn link_mtu_of_the_default_route_interface() {
    if !privileged("link_mtu_of_the_default_route_interface") {
        return;
    }
    let mut lab = Lab::new("det1");
    let (pod, _) = lab.pod(1450);
    let v = detect_json(&pod);
    assert_eq!(v["mtu"], 1450);
    assert_eq!(v["interface"], "eth0");
    assert_eq!(v["source"], "ipv4 link_mtu");
    assert_eq!(v["ipv4"]["link_mtu"], 1450);
    assert!(v["ipv6"].is_null());

    let text = run_mtuvisor(&pod, &["detect"], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("outer MTU: 1450 on eth0"), "{text}");
}

#[test]
fn route_mtu_attribute_bounds_the_link_mtu() {
    if !privileged("route_mtu_attribute_bounds_the_link_mtu") {
        return;
    }
    let mut lab = Lab::new("det2");
    let (pod, _) = lab.pod(1450);
    ip(
        &pod,
        &[
            "route",
            "change",
            "default",
            "via",
            "192.0.2.1",
            "mtu",
            "1400",
        ],
    );
    let v = detect_json(&pod);
    assert_eq!(v["mtu"], 1400);
    assert_eq!(v["source"], "ipv4 route_mtu");
    assert_eq!(v["ipv4"]["route_mtu"], 1400);
    assert_eq!(v["ipv4"]["link_mtu"], 1450);
}

#[test]
fn smaller_ipv6_default_route_wins() {
    if !privileged("smaller_ipv6_default_route_wins") {
        return;
    }
    let mut lab = Lab::new("det3");
    let (pod, router) = lab.pod(1450);
    // A second uplink carrying only IPv6, at 1420 (a WireGuard-sized MTU).
    ip(
        &pod,
        &[
            "link", "add", "eth1", "type", "veth", "peer", "name", "down1", "netns", &router,
        ],
    );
    ip(&pod, &["link", "set", "eth1", "mtu", "1420", "up"]);
    ip(&router, &["link", "set", "down1", "up"]);
    ipv6_default_route(&pod, "eth1", "2001:db8:5");
    let v = detect_json(&pod);
    assert_eq!(v["mtu"], 1420);
    assert_eq!(v["interface"], "eth1");
    assert_eq!(v["source"], "ipv6 link_mtu");
    assert_eq!(v["ipv4"]["mtu"], 1450);
    assert_eq!(v["ipv6"]["mtu"], 1420);

    // And an IPv6 route mtu below both.
    ip(
        &pod,
        &[
            "-6",
            "route",
            "change",
            "default",
            "via",
            "2001:db8:5::1",
            "dev",
            "eth1",
            "mtu",
            "1380",
        ],
    );
    let v = detect_json(&pod);
    assert_eq!(v["mtu"], 1380);
    assert_eq!(v["source"], "ipv6 route_mtu");
}

#[test]
fn no_default_route_is_an_error_that_says_what_to_do() {
    if !privileged("no_default_route_is_an_error_that_says_what_to_do") {
        return;
    }
    let mut lab = Lab::new("det4");
    let ns = lab.netns("bare");
    let out = run_mtuvisor(&ns, &["detect"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no default route") && err.contains("--mtu"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
