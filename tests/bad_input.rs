//! Bad configuration: one line on stderr, exit 2, nothing touched.

use testkit as common;

use common::{assert_rejected, ip, ipv6_default_route, mtu, privileged, run_mtuvisor, Lab};

/// A pod with a managed bridge at 1500 that a bad run must leave alone.
fn lab(tag: &str) -> (Lab, String) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    (lab, pod)
}

#[test]
fn mtu_flag_out_of_range() {
    if !privileged("mtu_flag_out_of_range") {
        return;
    }
    let (_lab, pod) = lab("bi1");
    let out = run_mtuvisor(&pod, &["watch", "--mtu", "20"], &[]);
    assert_rejected(&out, &["mtu", "\"20\"", "--mtu", "576"]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn realtime_priority_not_off_or_1_to_99() {
    if !privileged("realtime_priority_not_off_or_1_to_99") {
        return;
    }
    let (_lab, pod) = lab("bi7");
    for bad in ["0x1", "100", "high"] {
        let out = run_mtuvisor(&pod, &["watch", "--realtime-priority", bad], &[]);
        assert_rejected(&out, &["realtime_priority", bad, "off", "1–99"]);
    }
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn mtu_env_not_a_number() {
    if !privileged("mtu_env_not_a_number") {
        return;
    }
    let (_lab, pod) = lab("bi2");
    let out = run_mtuvisor(&pod, &["watch"], &[("MTUVISOR_MTU", "abc")]);
    assert_rejected(&out, &["\"abc\"", "MTUVISOR_MTU"]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn config_file_with_unknown_key() {
    if !privileged("config_file_with_unknown_key") {
        return;
    }
    let (mut lab, pod) = lab("bi3");
    let cfg = lab.temp_file("bad.toml", "mtu = 1400\nreconcile_intervall = \"5s\"\n");
    let out = run_mtuvisor(&pod, &["watch", "--config", cfg.to_str().unwrap()], &[]);
    assert_rejected(
        &out,
        &["unknown key", "reconcile_intervall", cfg.to_str().unwrap()],
    );
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn config_file_with_malformed_value() {
    if !privileged("config_file_with_malformed_value") {
        return;
    }
    let (mut lab, pod) = lab("bi4");
    let cfg = lab.temp_file("bad.toml", "reconcile_interval = \"often\"\n");
    let out = run_mtuvisor(&pod, &["watch", "--config", cfg.to_str().unwrap()], &[]);
    assert_rejected(&out, &["reconcile_interval", "\"often\""]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn mtu_below_ipv6_minimum_where_ipv6_is_routed() {
    if !privileged("mtu_below_ipv6_minimum_where_ipv6_is_routed") {
        return;
    }
    let (_lab, pod) = lab("bi5");
    ipv6_default_route(&pod, "eth0", "2001:db8:6");
    let out = run_mtuvisor(&pod, &["watch", "--mtu", "1200"], &[]);
    assert_rejected(&out, &["1280", "IPv6"]);
    assert_eq!(mtu(&pod, "docker0"), 1500);
}

#[test]
fn unknown_flag_is_one_line_exit_2() {
    // Needs no privileges: parsing fails before anything is looked at.
    let out = std::process::Command::new(common::bin())
        .args(["watch", "--mtuu", "1400"])
        .output()
        .unwrap();
    assert_rejected(&out, &["--mtuu"]);
}

/// Flags, environment, and what the one line must mention.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

/// `path_probe`, `path_probe_interval` and `mtu_ceiling`: each bad form
/// refused in one line under every enforcing command, nothing touched.
#[test]
fn path_probe_interval_and_ceiling_out_of_range() {
    if !privileged("path_probe_interval_and_ceiling_out_of_range") {
        return;
    }
    let (_lab, pod) = lab("bi8");
    for cmd in ["watch", "supervise", "node"] {
        let cases: [Case; 6] = [
            (
                &["--path-probe", "registry.example:http"],
                &[],
                &["path_probe", "registry.example:http", "HOST:PORT"],
            ),
            (
                &["--path-probe", "[2001:db8::1"],
                &[],
                &["path_probe", "[2001:db8::1", "[IPv6]:PORT"],
            ),
            (
                &[],
                &[("MTUVISOR_PATH_PROBE", "a.example, b.example:0")],
                &["path_probe", "b.example:0", "MTUVISOR_PATH_PROBE"],
            ),
            (
                &["--path-probe-interval", "100ms"],
                &[],
                &["path_probe_interval", "100ms", "1s"],
            ),
            (
                &["--mtu-ceiling", "575"],
                &[],
                &["mtu_ceiling", "575", "576"],
            ),
            (
                &["--mtu", "9001"],
                &[],
                &["mtu", "9001", "mtu_ceiling", "1500"],
            ),
        ];
        for (flags, env, words) in cases {
            let mut args = vec![cmd];
            args.extend_from_slice(flags);
            let out = run_mtuvisor(&pod, &args, env);
            assert_rejected(&out, words);
        }
    }
    assert_eq!(mtu(&pod, "docker0"), 1500);
}
