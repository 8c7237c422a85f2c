//! The border (issue 27): what one pod writes where the node agent reads,
//! as an attacker with one CI job would, one test per way in. Each holds
//! against `mtuvisor node` on a simulated node (the agent in a PID
//! namespace of its own, `/proc` scanned), with random bytes where a pod
//! chooses bytes: every seed is printed, and `MTUVISOR_SEED` replays one.

use testkit as common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::chaos::Rng;
use common::hostile::{self, log_len, Scratch};
use common::node::{NodeLab, METRICS};
use common::{eventually, ip, mtu, privileged};

fn seed(test: &str) -> u64 {
    let seed = std::env::var("MTUVISOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    eprintln!("{test}: seed {seed} (MTUVISOR_SEED={seed} replays it)");
    seed
}

/// The log from byte `from` on: valid UTF-8 (no byte a pod chose reaches
/// it raw) and without a line that starts with anything but a timestamp
/// (no newline a pod chose splits a line).
fn assert_log_clean(log: &Path, from: usize) {
    let bytes = std::fs::read(log).unwrap();
    let tail = &bytes[from.min(bytes.len())..];
    let text = std::str::from_utf8(tail).unwrap_or_else(|e| {
        panic!(
            "the log holds bytes that are not UTF-8 at {}: {:?}",
            e.valid_up_to(),
            String::from_utf8_lossy(
                &tail[e.valid_up_to().saturating_sub(80)..]
                    [..160.min(tail.len() - e.valid_up_to().saturating_sub(80))]
            )
        )
    });
    for line in text.lines() {
        assert!(
            line.starts_with("20") || line.trim().is_empty(),
            "a log line that is not one of the agent's: {line:?}"
        );
    }
}

/// Every far end in `holder`'s namespace and every host end `hb*` of
/// `pod` at `target`.
fn pairs_at(pod: &str, holder: i32, count: usize, target: u32) -> bool {
    let far = hostile::veth_mtus_of(holder);
    far.len() == count
        && far.iter().all(|m| *m == target)
        && (0..count).all(|i| mtu(pod, &format!("hb{i}")) == target)
}

/// A pod whose containers' ends carry names (row 1) or aliases (row 2) of
/// random bytes, in a namespace it made: each pair is clamped on both
/// ends, a pod made afterwards is enforced in within 2 s, the agent stays
/// alive, its log stays clean, and it stops in time.
fn names_of_any_bytes(tag: &str, aliases: bool) {
    let seed = seed(tag);
    let mut rng = Rng::new(seed);
    let mut n = NodeLab::new(tag);
    let scratch = Scratch::new(n.lab.prefix());
    let agent = hostile::start_agent(&mut n, &[], &[], &["--reconcile-interval", "2s"]);
    let from = log_len(&n.log);
    let pod = n.pod("evil", 1450);
    let (_holding, holder) = hostile::own_namespace(&agent, &pod, &scratch.0);
    let names: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            if aliases {
                format!("c{i}").into_bytes()
            } else {
                let mut name = rng.link_name();
                // Unique within the namespace.
                name.truncate(13);
                name.extend_from_slice(format!("{i:02}").as_bytes());
                name
            }
        })
        .collect();
    let alias = aliases.then(|| rng.alias());
    hostile::far_ends_named(&pod, "docker0", holder, &names, alias.as_deref());
    let clamped = eventually(Duration::from_secs(10), || pairs_at(&pod, holder, 10, 1450));
    assert!(
        clamped,
        "seed {seed}: every pair at 1450 (far ends {:?}); log:\n{}",
        hostile::veth_mtus_of(holder),
        n.tail()
    );
    // A pod made afterwards is enforced in at once.
    let later = n.pod("later", 1450);
    ip(&later, &["link", "add", "docker0", "type", "bridge"]);
    let began = Instant::now();
    let enforced = eventually(Duration::from_secs(2), || mtu(&later, "docker0") == 1450);
    assert!(
        enforced,
        "seed {seed}: a pod made afterwards is enforced in within 2 s; log:\n{}",
        n.tail()
    );
    eprintln!(
        "{tag}: a pod made afterwards enforced in after {:?}",
        began.elapsed()
    );
    let (status, _) = common::http_get(&n.node, METRICS, "/livez");
    assert_eq!(status, 200);
    assert_log_clean(&n.log, from);
    // A clean stop, in time: nothing is stuck.
    let stopped = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = n.lab.wait(agent.outer, Duration::from_secs(12));
    assert!(status.success(), "seed {seed}: clean stop: {status:?}");
    eprintln!("{tag}: stopped in {:?}", stopped.elapsed());
}

#[test]
fn far_ends_named_with_any_bytes_are_clamped_and_hold_nothing_up() {
    if !privileged("far_ends_named_with_any_bytes_are_clamped_and_hold_nothing_up") {
        return;
    }
    names_of_any_bytes("bnames", false);
}

#[test]
fn far_ends_with_aliases_of_any_bytes_are_clamped_and_hold_nothing_up() {
    if !privileged("far_ends_with_aliases_of_any_bytes_are_clamped_and_hold_nothing_up") {
        return;
    }
    names_of_any_bytes("baliases", true);
}
