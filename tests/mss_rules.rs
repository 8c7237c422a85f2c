//! MSS clamping rules on real iptables (nf_tables and legacy) and nft, each
//! in a namespace of its own.

mod common;

use std::time::Duration;

use common::{assert_rejected, eventually, in_netns, privileged, run_mtuvisor, Lab};
use mtuvisor::firewall::{select_backend, BackendChoice, Ensured, MssMode};

/// What a tool prints inside `netns`.
fn dump(netns: &str, tool: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(tool)
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_in(netns: &str, tool: &[&str]) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(tool)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{tool:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Everything of mtuvisor's in every family and every tool.
fn traces(netns: &str) -> Vec<String> {
    let mut all = Vec::new();
    for tool in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["iptables-legacy-save"],
        &["ip6tables-legacy-save"],
        &["nft", "list", "ruleset"],
    ] {
        for line in dump(netns, tool).lines() {
            if line.to_lowercase().contains("mtuvisor") {
                all.push(format!("{}: {}", tool[0], line.trim()));
            }
        }
    }
    all
}

/// (rule copies, jump copies) as the backend's own tool lists them, IPv4
/// and IPv6 summed.
fn copies(netns: &str, backend: BackendChoice) -> (usize, usize) {
    let count = |text: &str, needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    match backend {
        BackendChoice::Nftables => {
            let t = dump(netns, &["nft", "list", "table", "inet", "mtuvisor"]);
            (count(&t, "maxseg size set"), count(&t, "hook forward"))
        }
        _ => {
            let (v4, v6) = if backend == BackendChoice::IptablesLegacy {
                ("iptables-legacy-save", "ip6tables-legacy-save")
            } else {
                ("iptables-save", "ip6tables-save")
            };
            let t = dump(netns, &[v4, "-t", "mangle"]) + &dump(netns, &[v6, "-t", "mangle"]);
            (
                count(&t, "-j TCPMSS"),
                count(&t, "-A FORWARD -j MTUVISOR-MSS"),
            )
        }
    }
}

fn backend_lifecycle(tag: &str, backend: BackendChoice, name: &str) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);

    // ensure twice: one copy, the second call a no-op.
    let (first, second) = in_netns(&pod, move || {
        let b = select_backend(backend).unwrap();
        (
            b.ensure(MssMode::Pmtu).overall().unwrap(),
            b.ensure(MssMode::Pmtu).overall().unwrap(),
        )
    });
    assert_eq!((first, second), (Ensured::Installed, Ensured::Unchanged));
    let (rules, jumps) = copies(&pod, backend);
    assert!(
        rules >= 1 && rules == jumps,
        "one rule and one jump per family: {rules} {jumps}"
    );
    let per_family = rules;
    in_netns(&pod, move || {
        select_backend(backend).unwrap().remove().unwrap()
    });
    assert!(traces(&pod).is_empty(), "{:?}", traces(&pod));

    // Through the binary: installed at start, restored after a flush
    // within one reconcile interval, gone after a clean stop.
    let env = [("MTUVISOR_MSS_BACKEND", name)];
    let w = lab.watch(&pod, &["--reconcile-interval", "500ms"], &env);
    assert!(eventually(Duration::from_secs(3), || copies(&pod, backend)
        == (per_family, per_family)));
    match backend {
        BackendChoice::Nftables => run_in(&pod, &["nft", "delete", "table", "inet", "mtuvisor"]),
        BackendChoice::IptablesLegacy => run_in(
            &pod,
            &["iptables-legacy", "-t", "mangle", "-F", "MTUVISOR-MSS"],
        ),
        _ => run_in(&pod, &["iptables", "-t", "mangle", "-F", "MTUVISOR-MSS"]),
    }
    assert_ne!(copies(&pod, backend).0, per_family, "flushed");
    assert!(
        eventually(Duration::from_millis(1500), || copies(&pod, backend)
            == (per_family, per_family)),
        "restored within one reconcile interval (500ms)"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        copies(&pod, backend),
        (per_family, per_family),
        "reconciles never add a copy"
    );

    // A crash leaves the rules; the next start adopts them.
    lab.signal(w, nix::sys::signal::Signal::SIGKILL);
    lab.wait(w, Duration::from_secs(5));
    assert_eq!(copies(&pod, backend), (per_family, per_family));
    let w = lab.watch(&pod, &[], &env);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        copies(&pod, backend),
        (per_family, per_family),
        "adopted, not doubled"
    );

    let status = lab.stop(w, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        traces(&pod).is_empty(),
        "a clean stop leaves no trace: {:?}",
        traces(&pod)
    );
}

#[test]
fn iptables_nft_backend() {
    if privileged("iptables_nft_backend") {
        backend_lifecycle("mssn", BackendChoice::IptablesNft, "iptables");
    }
}

#[test]
fn iptables_legacy_backend() {
    if privileged("iptables_legacy_backend") {
        backend_lifecycle("mssl", BackendChoice::IptablesLegacy, "iptables-legacy");
    }
}

#[test]
fn nftables_backend() {
    if privileged("nftables_backend") {
        backend_lifecycle("mssf", BackendChoice::Nftables, "nftables");
    }
}

#[test]
fn fixed_mss_is_installed_as_given() {
    if !privileged("fixed_mss_is_installed_as_given") {
        return;
    }
    let mut lab = Lab::new("mssx");
    let (pod, _) = lab.pod(1450);
    let w = lab.watch(
        &pod,
        &["--mss", "1360"],
        &[("MTUVISOR_MSS_BACKEND", "iptables")],
    );
    assert!(eventually(Duration::from_secs(3), || dump(
        &pod,
        &["iptables-save", "-t", "mangle"]
    )
    .contains("--set-mss 1360")));
    assert_eq!(lab.stop(w, Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn auto_picks_legacy_beside_a_dockerd_on_legacy_iptables() {
    if !common::dockerd::require_docker("auto_picks_legacy_beside_a_dockerd_on_legacy_iptables") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("mssdl");
    // dockerd runs `iptables` from PATH: make that the legacy one, as on
    // hosts whose kernel or distribution uses legacy iptables.
    let bin = d.dir.join("legacy-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ] {
        std::os::unix::fs::symlink("/usr/sbin/xtables-legacy-multi", bin.join(tool)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    d.start_plain_env(&[], &[("PATH", &path)]);
    d.ready();
    assert!(
        dump(&d.pod, &["iptables-legacy-save"]).contains("DOCKER"),
        "dockerd wrote legacy rules"
    );
    assert!(
        !dump(&d.pod, &["nft", "list", "ruleset"]).contains("DOCKER"),
        "and none in nf_tables"
    );
    d.start_sidecar();
    assert!(
        eventually(Duration::from_secs(5), || dump(
            &d.pod,
            &["iptables-legacy-save", "-t", "mangle"]
        )
        .contains("-A FORWARD -j MTUVISOR-MSS")),
        "auto chose legacy: {}",
        d.tail()
    );
    assert!(
        !dump(&d.pod, &["nft", "list", "ruleset"]).contains("MTUVISOR"),
        "nothing in nf_tables"
    );
}

#[test]
fn auto_follows_the_family_dockerd_uses() {
    if !privileged("auto_follows_the_family_dockerd_uses") {
        return;
    }
    let mut lab = Lab::new("mssa");
    let (legacy_pod, _) = lab.pod(1450);
    // What a dockerd using legacy iptables leaves in its namespace.
    run_in(
        &legacy_pod,
        &["iptables-legacy", "-t", "filter", "-N", "DOCKER"],
    );
    run_in(
        &legacy_pod,
        &[
            "iptables-legacy",
            "-t",
            "filter",
            "-A",
            "FORWARD",
            "-j",
            "DOCKER",
        ],
    );
    let w = lab.watch(&legacy_pod, &[], &[]);
    assert!(eventually(Duration::from_secs(3), || dump(
        &legacy_pod,
        &["iptables-legacy-save", "-t", "mangle"]
    )
    .contains("MTUVISOR-MSS")));
    assert!(
        !dump(&legacy_pod, &["nft", "list", "ruleset"]).contains("MTUVISOR"),
        "nothing in nf_tables"
    );
    assert_eq!(lab.stop(w, Duration::from_secs(5)).code(), Some(0));

    let mut lab2 = Lab::new("mssb");
    let (nft_pod, _) = lab2.pod(1450);
    let w = lab2.watch(&nft_pod, &[], &[]);
    assert!(eventually(Duration::from_secs(3), || dump(
        &nft_pod,
        &["iptables-save", "-t", "mangle"]
    )
    .contains("MTUVISOR-MSS")));
    assert!(
        !dump(&nft_pod, &["iptables-legacy-save"]).contains("MTUVISOR"),
        "nothing in legacy tables"
    );
    assert_eq!(lab2.stop(w, Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn bad_mss_input_writes_no_rule() {
    if !privileged("bad_mss_input_writes_no_rule") {
        return;
    }
    let mut lab = Lab::new("mssbad");
    let (pod, _) = lab.pod(1450);
    assert_rejected(
        &run_mtuvisor(&pod, &["watch", "--mss", "20"], &[]),
        &["mss", "\"20\"", "536"],
    );
    assert_rejected(
        &run_mtuvisor(&pod, &["watch", "--mss", "sometimes"], &[]),
        &["mss", "sometimes"],
    );
    assert_rejected(
        &run_mtuvisor(&pod, &["watch", "--mss", "1420"], &[]),
        &["mss", "1410"],
    );
    // A backend whose tool is missing: a PATH without it.
    let empty = std::env::temp_dir().join(format!("{}-emptybin", lab.prefix()));
    std::fs::create_dir_all(&empty).unwrap();
    // nsenter by its path: the child's PATH is the one being emptied.
    let out = std::process::Command::new("/usr/bin/nsenter")
        .arg(format!("--net=/run/netns/{pod}"))
        .args([common::BIN, "watch"])
        .env("MTUVISOR_MSS_BACKEND", "iptables-legacy")
        .env("PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&empty);
    assert_rejected(&out, &["iptables-legacy", "not installed"]);
    assert!(
        traces(&pod).is_empty(),
        "no rule written: {:?}",
        traces(&pod)
    );
}
