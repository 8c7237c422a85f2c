//! Prometheus metrics and /healthz, scraped from inside the pod namespace.

use testkit as common;

use std::time::Duration;

use common::{
    docker_style_veth, eventually, http_get, ip, metric, mtu, privileged, run_mtuvisor, Lab,
};

const ADDR: &str = "127.0.0.1:9464";

#[test]
fn watch_serves_what_it_did() {
    if !privileged("watch_serves_what_it_did") {
        return;
    }
    let mut lab = Lab::new("met1");
    let (pod, _) = lab.pod(1450);
    let c = lab.netns("c");
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "up"]);
    docker_style_veth(&pod, "docker0", "vethx", &c);
    lab.watch(&pod, &["--metrics-addr", ADDR], &[]);
    assert!(eventually(Duration::from_secs(2), || mtu(&c, "eth0") == 1450));
    assert!(eventually(Duration::from_secs(2), || {
        common::try_http_get(&pod, ADDR, "/healthz").is_ok_and(|(status, _)| status == 200)
    }));

    // One more veth after start: clamped from its notification, and timed.
    let c2 = lab.netns("c2");
    docker_style_veth(&pod, "docker0", "vethy", &c2);
    assert!(eventually(Duration::from_secs(2), || mtu(&c2, "eth0") == 1450));

    let (status, text) = http_get(&pod, ADDR, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "mtuvisor_target_mtu"), 1450.0);
    assert_eq!(metric(&text, "mtuvisor_ready"), 1.0);
    // docker0, vethx and its far end at start; vethy and its far end later.
    assert_eq!(metric(&text, "mtuvisor_mtu_changes_total"), 5.0, "{text}");
    assert_eq!(metric(&text, "mtuvisor_mtu_change_failures_total"), 0.0);
    assert!(metric(&text, "mtuvisor_sweeps_total") >= 1.0);
    assert_eq!(metric(&text, "mtuvisor_clamp_seconds_count"), 1.0, "{text}");
    // The same clamp, split into its stages.
    for stage in ["loop", "decide", "queue", "kernel", "wake"] {
        assert_eq!(
            metric(
                &text,
                &format!("mtuvisor_clamp_stage_seconds_count{{stage=\"{stage}\"}}")
            ),
            1.0,
            "{text}"
        );
    }
    assert!(text.contains("mtuvisor_build_info{version=\""));
    // Counted at the allocator: a live process holds some heap, and far
    // less than it maps (a bound a counter gone wrong, e.g. wrapped past
    // zero, would break).
    let heap = metric(&text, "mtuvisor_heap_bytes");
    assert!(heap > 0.0 && heap < 64e6, "mtuvisor_heap_bytes {heap}");

    // The target follows eth0, and the gauge with it.
    ip(&pod, &["link", "set", "eth0", "mtu", "1400"]);
    assert!(eventually(Duration::from_secs(2), || {
        let (_, text) = http_get(&pod, ADDR, "/metrics");
        metric(&text, "mtuvisor_target_mtu") == 1400.0
    }));

    assert_eq!(http_get(&pod, ADDR, "/nothing").0, 404);
}

#[test]
fn an_unusable_metrics_address_is_bad_input_and_changes_nothing() {
    if !privileged("an_unusable_metrics_address_is_bad_input_and_changes_nothing") {
        return;
    }
    let mut lab = Lab::new("met2");
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);

    let out = run_mtuvisor(&pod, &["watch", "--metrics-addr", "localhost:9464"], &[]);
    common::assert_rejected(&out, &["metrics_addr", "localhost:9464", "IP:PORT"]);

    // The port is taken inside the pod namespace (a socket stays in the
    // namespace it was opened in).
    let taken = common::in_netns(&pod, || std::net::TcpListener::bind(ADDR).unwrap());
    let out = run_mtuvisor(&pod, &["watch", "--metrics-addr", ADDR], &[]);
    common::assert_rejected(&out, &["cannot listen on 127.0.0.1:9464", "metrics"]);
    drop(taken);
    assert_eq!(mtu(&pod, "docker0"), 1500, "nothing was applied");
}
