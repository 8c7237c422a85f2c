//! The reaper against a storm of orphans (issue: the reaper took the exit
//! status of the iptables a backend waited for, so MSS clamping failed).
//!
//! The storm runs in a process of its own (this test binary, re-executed):
//! once the reaper runs it owns every `waitpid` in the process, and the
//! test harness's own `Command::output` calls would be fair game for it.
//! The child spawns nothing but through `mtuvisor::process`.

use testkit as common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Lab;
use mtuvisor::firewall::{select_backend, BackendChoice, Ensured, MssMode};

const NETNS_ENV: &str = "MTUVISOR_TEST_STORM_NETNS";
const CYCLES: usize = 200;
/// Orphans per second: each a `sleep` whose parent shell exits at once.
const ORPHANS_PER_SECOND: u32 = 50;

#[test]
fn orphan_storm_takes_no_exit_status_from_its_owner() {
    if !common::dockerd::require_docker("orphan_storm_takes_no_exit_status_from_its_owner") {
        return;
    }
    let mut lab = Lab::new("reap");
    let (pod, _) = lab.pod(1450);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "storm_in_a_process_of_its_own",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, &pod)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "the storm child failed:\n{text}");
    assert!(text.contains("storm: "), "the storm ran:\n{text}");
}

/// Run by the test above, in a process of its own.
#[test]
#[ignore = "run by orphan_storm_takes_no_exit_status_from_its_owner"]
fn storm_in_a_process_of_its_own() {
    let pod = std::env::var(NETNS_ENV).expect(
        "run by orphan_storm_takes_no_exit_status_from_its_owner, which sets the namespace",
    );
    // The right answer, read before the reaper exists.
    let expected = mtuvisor::docker::dockerd_version(&common::dockerd::dockerd_path().unwrap());
    assert!(expected.is_some(), "dockerd --version answers");
    mtuvisor::process::start_reaper(true).expect("start the reaper");

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let orphans = Arc::new(AtomicU32::new(0));
    let adopted = Arc::new(AtomicU32::new(0));
    let storm = {
        let (stop, orphans, adopted) = (stop.clone(), orphans.clone(), adopted.clone());
        std::thread::spawn(move || {
            let period = Duration::from_secs(1) / ORPHANS_PER_SECOND;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // sh exits at once; its `sleep` is re-parented to us.
                let out = mtuvisor::process::output(
                    std::process::Command::new("sh")
                        .args(["-c", "sleep 0.2 </dev/null >/dev/null 2>&1 & exit 0"]),
                    b"",
                )
                .expect("spawn the orphan maker");
                assert!(out.status.success());
                orphans.fetch_add(1, Ordering::Relaxed);
                adopted.fetch_max(adopted_sleeps(), Ordering::Relaxed);
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };

    // Ensure cycles in the pod, each backend in turn; every fourth cycle
    // starts from nothing, so that a cycle runs up to ten commands.
    let ensure = {
        let pod = pod.clone();
        std::thread::spawn(move || {
            common::enter_netns(&pod);
            let backends = [
                BackendChoice::IptablesNft,
                BackendChoice::IptablesLegacy,
                BackendChoice::Nftables,
            ]
            .map(|b| select_backend(b).expect("backend"));
            let mut failures = Vec::new();
            for cycle in 0..CYCLES {
                let backend = &backends[cycle % backends.len()];
                if cycle % 4 == 0 {
                    if let Err(e) = backend.remove() {
                        failures.push(format!("cycle {cycle} remove: {e}"));
                    }
                }
                match testkit::firewall::overall(backend.ensure(MssMode::Pmtu)) {
                    Ok(Ensured::Installed) | Ok(Ensured::Unchanged) => {}
                    Err(e) => failures.push(format!("cycle {cycle}: {e}")),
                }
            }
            for b in &backends {
                let _ = b.remove();
            }
            failures
        })
    };

    let mut probes = 0;
    let mut wrong_versions = Vec::new();
    while !ensure.is_finished() {
        let got = mtuvisor::docker::dockerd_version(&common::dockerd::dockerd_path().unwrap());
        probes += 1;
        if got != expected {
            wrong_versions.push(got);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = ensure.join().expect("ensure thread");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    storm.join().expect("storm thread");

    // The last orphans sleep 0.2 s; once they have exited, every child
    // must have been collected: none left, zombie or not.
    let zombies_gone = common::eventually(Duration::from_secs(5), || children().is_empty());
    println!(
        "storm: {} orphans made, up to {} adopted at once, {CYCLES} ensure cycles, {} failures \
         ({} ECHILD), {probes} version probes, {} wrong, zombies left: {:?}, storm lasted {:?}",
        orphans.load(Ordering::Relaxed),
        adopted.load(Ordering::Relaxed),
        failures.len(),
        failures
            .iter()
            .filter(|f| f.contains("os error 10"))
            .count(),
        wrong_versions.len(),
        zombies(),
        took,
    );
    assert!(failures.is_empty(), "ensure failures: {failures:#?}");
    assert!(
        wrong_versions.is_empty(),
        "wrong versions: {wrong_versions:?}"
    );
    assert!(probes >= 5, "the probe ran during the storm: {probes}");
    assert!(
        adopted.load(Ordering::Relaxed) > 0,
        "orphans were re-parented to this process"
    );
    assert!(zombies_gone, "zombies left: {:?}", zombies());
}

/// Our children that are `sleep`: orphans the subreaper adopted.
fn adopted_sleeps() -> u32 {
    children()
        .iter()
        .filter(|(_, comm, _)| comm == "sleep")
        .count() as u32
}

fn zombies() -> Vec<(i32, String)> {
    children()
        .into_iter()
        .filter(|(_, _, state)| *state == 'Z')
        .map(|(pid, comm, _)| (pid, comm))
        .collect()
}

/// (pid, comm, state) of every process whose parent is this one.
fn children() -> Vec<(i32, String, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, comm, state));
        }
    }
    out
}
