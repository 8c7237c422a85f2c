//! MSS clamping rules on real iptables (nf_tables and legacy) and nft, each
//! in a namespace of its own.

use testkit as common;

use std::time::{Duration, Instant};

use common::dockerd::{require_docker, DockerLab};
use common::{assert_rejected, eventually, in_netns, metric, privileged, run_mtuvisor, Lab};
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
            testkit::firewall::overall(b.ensure(MssMode::Pmtu)).unwrap(),
            testkit::firewall::overall(b.ensure(MssMode::Pmtu)).unwrap(),
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
    if !require_docker("auto_picks_legacy_beside_a_dockerd_on_legacy_iptables") {
        return;
    }
    let mut d = common::dockerd::DockerLab::new("mssdl");
    // dockerd runs `iptables` from PATH: make that the legacy one.
    let path = d.legacy_iptables_path();
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
    let without = |backend: &str| {
        std::process::Command::new("/usr/bin/nsenter")
            .arg(format!("--net=/run/netns/{pod}"))
            .args([common::bin(), "watch"])
            .env("MTUVISOR_MSS_BACKEND", backend)
            .env("PATH", &empty)
            .output()
            .unwrap()
    };
    let out = without("iptables-legacy");
    assert_rejected(&out, &["iptables-legacy", "not installed"]);
    // As in the release image (docker:dind's Alpine has no nft): the line
    // says what to do instead.
    let out = without("nftables");
    let _ = std::fs::remove_dir_all(&empty);
    assert_rejected(
        &out,
        &["nft is not installed", "set mss.backend to auto", "no nft"],
    );
    assert!(
        traces(&pod).is_empty(),
        "no rule written: {:?}",
        traces(&pod)
    );
}

/// Partial states made by hand, as a crash, a flush or an older mtuvisor
/// leave them: one ensure must leave exactly one complete copy, and a
/// second must change nothing.
fn converges_from(tag: &str, backend: BackendChoice, setup: &[&[&str]]) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    for cmd in setup {
        run_in(&pod, cmd);
    }
    let (first, second) = in_netns(&pod, move || {
        let b = select_backend(backend).unwrap();
        (
            testkit::firewall::overall(b.ensure(MssMode::Pmtu)).unwrap(),
            testkit::firewall::overall(b.ensure(MssMode::Pmtu)).unwrap(),
        )
    });
    assert_eq!(first, Ensured::Installed, "{tag}: the first ensure repairs");
    assert_eq!(
        second,
        Ensured::Unchanged,
        "{tag}: the second finds it complete"
    );
    let families = match backend {
        BackendChoice::Nftables => 1,
        _ => 2,
    };
    assert_eq!(
        copies(&pod, backend),
        (families, families),
        "{tag}: one rule and one jump per family: {:?}",
        traces(&pod)
    );
    match backend {
        BackendChoice::Nftables => {
            let t = dump(&pod, &["nft", "list", "table", "inet", "mtuvisor"]);
            assert!(t.contains("maxseg size set rt mtu"), "{t}");
            assert_eq!(t.matches("chain ").count(), 1, "only our chain: {t}");
        }
        _ => {
            let (v4, v6) = if backend == BackendChoice::IptablesLegacy {
                ("iptables-legacy-save", "ip6tables-legacy-save")
            } else {
                ("iptables-save", "ip6tables-save")
            };
            for tool in [v4, v6] {
                let t = dump(&pod, &[tool, "-t", "mangle"]);
                assert!(t.contains("--clamp-mss-to-pmtu"), "{tool}: {t}");
                assert!(
                    !t.contains("--set-mss"),
                    "{tool}: the old rule is gone: {t}"
                );
                let forward: Vec<&str> =
                    t.lines().filter(|l| l.starts_with("-A FORWARD")).collect();
                assert_eq!(
                    forward.first().copied(),
                    Some("-A FORWARD -j MTUVISOR-MSS"),
                    "{tool}: the jump comes first: {t}"
                );
                assert!(
                    forward.contains(&"-A FORWARD -p udp -j ACCEPT") || !tag.ends_with('d'),
                    "{tool}: a rule that is not ours stays: {t}"
                );
            }
        }
    }
}

/// An older mtuvisor's rule (a fixed MSS), and today's, as `iptables -S`
/// prints them.
const RULE_1400: &str =
    "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1400";
const RULE_PMTU: &str =
    "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu";

fn rule(line: &'static str) -> Vec<&'static str> {
    line.split_whitespace().collect()
}

/// `tool -t mangle ARGS…`
fn mangle(tool: &'static str, args: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![tool, "-w", "-t", "mangle"];
    v.extend_from_slice(args);
    v
}

fn iptables_partial_states(tag: &str, backend: BackendChoice, v4: &'static str, v6: &'static str) {
    // a: chain and rule, no jump (a crash between -A and -I).
    let s = [
        mangle(v4, &["-N", "MTUVISOR-MSS"]),
        mangle(v4, &rule(RULE_PMTU)),
    ];
    converges_from(
        &format!("{tag}a"),
        backend,
        &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    // b: the jump to an empty chain (someone flushed it; iptables refuses
    // a jump to no chain at all, so this is the nearest state).
    let s = [
        mangle(v4, &["-N", "MTUVISOR-MSS"]),
        mangle(v4, &["-I", "FORWARD", "1", "-j", "MTUVISOR-MSS"]),
    ];
    converges_from(
        &format!("{tag}b"),
        backend,
        &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    // c: IPv6 done, IPv4 not.
    let s = [
        mangle(v6, &["-N", "MTUVISOR-MSS"]),
        mangle(v6, &rule(RULE_PMTU)),
        mangle(v6, &["-I", "FORWARD", "1", "-j", "MTUVISOR-MSS"]),
    ];
    converges_from(
        &format!("{tag}c"),
        backend,
        &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    // d: an older version's rule (a fixed MSS), two jumps, one behind a
    // rule that is not ours.
    let s = [
        mangle(v4, &["-N", "MTUVISOR-MSS"]),
        mangle(v4, &rule(RULE_1400)),
        mangle(v4, &rule(RULE_PMTU)),
        mangle(v4, &["-A", "FORWARD", "-p", "udp", "-j", "ACCEPT"]),
        mangle(v4, &["-A", "FORWARD", "-j", "MTUVISOR-MSS"]),
        mangle(v4, &["-A", "FORWARD", "-j", "MTUVISOR-MSS"]),
        mangle(v6, &["-N", "MTUVISOR-MSS"]),
        mangle(v6, &rule(RULE_1400)),
        mangle(v6, &["-A", "FORWARD", "-p", "udp", "-j", "ACCEPT"]),
        mangle(v6, &["-I", "FORWARD", "1", "-j", "MTUVISOR-MSS"]),
    ];
    converges_from(
        &format!("{tag}d"),
        backend,
        &s.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
}

#[test]
fn iptables_nft_converges_from_partial_states() {
    if privileged("iptables_nft_converges_from_partial_states") {
        iptables_partial_states("mspn", BackendChoice::IptablesNft, "iptables", "ip6tables");
    }
}

#[test]
fn iptables_legacy_converges_from_partial_states() {
    if privileged("iptables_legacy_converges_from_partial_states") {
        iptables_partial_states(
            "mspl",
            BackendChoice::IptablesLegacy,
            "iptables-legacy",
            "ip6tables-legacy",
        );
    }
}

#[test]
fn nftables_converges_from_partial_states() {
    if !privileged("nftables_converges_from_partial_states") {
        return;
    }
    let b = BackendChoice::Nftables;
    // a: the table alone (a crash after `add table`).
    converges_from("mspfa", b, &[&["nft", "add", "table", "inet", "mtuvisor"]]);
    // b: the chain without its rule.
    converges_from(
        "mspfb",
        b,
        &[
            &["nft", "add", "table", "inet", "mtuvisor"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "mtuvisor",
                "forward",
                "{ type filter hook forward priority mangle; policy accept; }",
            ],
        ],
    );
    // c: what mtuvisor 0.1 wrote (no comment), twice, plus a stray chain.
    converges_from(
        "mspfc",
        b,
        &[
            &["nft", "add", "table", "inet", "mtuvisor"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "mtuvisor",
                "forward",
                "{ type filter hook forward priority mangle; policy accept; }",
            ],
            &[
                "nft", "add", "rule", "inet", "mtuvisor", "forward", "tcp", "flags", "syn", "/",
                "syn,rst", "tcp", "option", "maxseg", "size", "set", "rt", "mtu",
            ],
            &[
                "nft", "add", "rule", "inet", "mtuvisor", "forward", "tcp", "flags", "syn", "/",
                "syn,rst", "tcp", "option", "maxseg", "size", "set", "1400",
            ],
            &["nft", "add", "chain", "inet", "mtuvisor", "stray"],
        ],
    );
    // d: our chain on the wrong priority.
    converges_from(
        "mspfd",
        b,
        &[
            &["nft", "add", "table", "inet", "mtuvisor"],
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "mtuvisor",
                "forward",
                "{ type filter hook forward priority 0; policy accept; }",
            ],
        ],
    );
}

// ---- Under supervise, the mode the image runs, against a real dockerd ----

const METRICS_ADDR: &str = "127.0.0.1:9464";

/// One complete copy: a rule and a jump (or hooked chain) per family.
fn complete(pod: &str, backend: BackendChoice) -> bool {
    let n = if backend == BackendChoice::Nftables {
        1
    } else {
        2
    };
    copies(pod, backend) == (n, n)
}

fn scrape(d: &DockerLab) -> String {
    common::http_get(&d.pod, METRICS_ADDR, "/metrics").1
}

fn mss_warnings(d: &DockerLab) -> Vec<String> {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("MSS"))
        .map(String::from)
        .collect()
}

fn supervised_lifecycle(tag: &str, backend: BackendChoice, name: &str, legacy_dockerd: bool) {
    let mut d = DockerLab::new(tag);
    let path = d.legacy_iptables_path();
    let mut env = vec![("MTUVISOR_MSS_BACKEND", name)];
    if legacy_dockerd {
        env.push(("PATH", &path));
    }

    // The default reconcile interval (30 s): the rules must not wait for it.
    let started = Instant::now();
    d.start_supervised_env(&["--metrics-addr", METRICS_ADDR], &env);
    d.ready();
    let answered = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || complete(&d.pod, backend)),
        "{name}: rules within 2 s of dockerd answering: {:?}\n{}",
        traces(&d.pod),
        d.tail()
    );
    eprintln!(
        "{name} under supervise: dockerd answered {:?} after start; rules complete {:?} after it answered",
        answered - started,
        answered.elapsed()
    );
    let text = scrape(&d);
    assert_eq!(
        metric(&text, "mtuvisor_mss_rules_installed{family=\"ipv4\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "mtuvisor_mss_rules_installed{family=\"ipv6\"}"),
        1.0
    );
    assert_eq!(metric(&text, "mtuvisor_mss_ensure_failures_total"), 0.0);
    if legacy_dockerd {
        assert!(
            dump(&d.pod, &["iptables-legacy-save"]).contains("DOCKER"),
            "dockerd wrote legacy rules"
        );
    }
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        traces(&d.pod).is_empty(),
        "a clean stop leaves no trace: {:?}",
        traces(&d.pod)
    );

    // A flush is repaired within one reconcile interval, never doubled.
    d.start_supervised_env(&["--reconcile-interval", "500ms"], &env);
    d.ready();
    assert!(eventually(Duration::from_secs(2), || complete(
        &d.pod, backend
    )));
    match backend {
        BackendChoice::Nftables => run_in(&d.pod, &["nft", "delete", "table", "inet", "mtuvisor"]),
        BackendChoice::IptablesLegacy => run_in(
            &d.pod,
            &["iptables-legacy", "-t", "mangle", "-F", "MTUVISOR-MSS"],
        ),
        _ => run_in(&d.pod, &["iptables", "-t", "mangle", "-F", "MTUVISOR-MSS"]),
    }
    // (Not checked "incomplete" here: the 500 ms reconcile may already
    // have repaired it; the command above succeeded, so it was gone.)
    assert!(
        eventually(Duration::from_millis(1500), || complete(&d.pod, backend)),
        "{name}: restored within one reconcile interval (500ms)"
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert!(complete(&d.pod, backend), "reconciles never add a copy");

    // A crash of mtuvisor leaves the rules; the next start adopts them.
    let main = d.main.unwrap();
    d.lab.signal(main, nix::sys::signal::Signal::SIGKILL);
    d.lab.wait(main, Duration::from_secs(5));
    let dockerd = d.dockerd_pid().expect("dockerd's pid");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(eventually(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{dockerd}")).exists()
    }));
    assert!(complete(&d.pod, backend), "the crash left them");
    d.start_supervised_env(&[], &env);
    d.ready();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        complete(&d.pod, backend),
        "adopted, not doubled: {:?}",
        traces(&d.pod)
    );
    assert_eq!(
        d.stop_main(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(traces(&d.pod).is_empty(), "{:?}", traces(&d.pod));
    assert!(mss_warnings(&d).is_empty(), "{:#?}", mss_warnings(&d));
}

#[test]
fn iptables_nft_backend_under_supervise() {
    if require_docker("iptables_nft_backend_under_supervise") {
        supervised_lifecycle("msssn", BackendChoice::IptablesNft, "iptables", false);
    }
}

#[test]
fn iptables_legacy_backend_under_supervise() {
    if require_docker("iptables_legacy_backend_under_supervise") {
        supervised_lifecycle(
            "msssl",
            BackendChoice::IptablesLegacy,
            "iptables-legacy",
            true,
        );
    }
}

#[test]
fn nftables_backend_under_supervise() {
    if require_docker("nftables_backend_under_supervise") {
        supervised_lifecycle("msssf", BackendChoice::Nftables, "nftables", false);
    }
}

/// Under supervise, `auto` is first chosen before dockerd exists; once
/// dockerd has written legacy rules, the MSS rules follow it there.
#[test]
fn auto_follows_a_legacy_dockerd_under_supervise() {
    if !require_docker("auto_follows_a_legacy_dockerd_under_supervise") {
        return;
    }
    let mut d = DockerLab::new("msssa");
    let path = d.legacy_iptables_path();
    d.start_supervised_env(&[], &[("PATH", &path)]);
    d.ready();
    assert!(
        eventually(Duration::from_secs(2), || complete(
            &d.pod,
            BackendChoice::IptablesLegacy
        )),
        "auto moved to legacy: {:?}\n{}",
        traces(&d.pod),
        d.tail()
    );
    assert!(
        !dump(&d.pod, &["nft", "list", "ruleset"]).contains("MTUVISOR"),
        "nothing left in nf_tables: {:?}",
        traces(&d.pod)
    );
}

/// The reproduction: five `kill -9` of dockerd under supervise.
#[test]
fn five_dockerd_kills_leave_the_rules_and_no_warning() {
    if !require_docker("five_dockerd_kills_leave_the_rules_and_no_warning") {
        return;
    }
    let mut d = DockerLab::new("msssk");
    d.start_supervised(&["--metrics-addr", METRICS_ADDR]);
    d.ready();
    for kill in 1..=5 {
        let pid = d.dockerd_pid().expect("dockerd's pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(
            eventually(Duration::from_secs(60), || d
                .dockerd_pid()
                .is_some_and(|p| p != pid)
                && d.wait_ready(Duration::from_millis(200))),
            "kill {kill}: a new dockerd answers\n{}",
            d.tail()
        );
    }
    assert!(
        eventually(Duration::from_secs(2), || complete(
            &d.pod,
            BackendChoice::IptablesNft
        )),
        "rules present after 5 kills: {:?}",
        traces(&d.pod)
    );
    let text = scrape(&d);
    assert_eq!(metric(&text, "mtuvisor_dockerd_restarts_total"), 5.0);
    assert_eq!(metric(&text, "mtuvisor_mss_ensure_failures_total"), 0.0);
    assert_eq!(
        metric(&text, "mtuvisor_mss_rules_installed{family=\"ipv4\"}"),
        1.0
    );
    assert!(mss_warnings(&d).is_empty(), "{:#?}", mss_warnings(&d));
}
