//! What the path probe costs, on the lab of tests/path_probe.rs (the pod's
//! eth0 1500, a 1400 link two routers away): packets and time per probe
//! for a black hole (the routers drop their "too big" messages) and for an
//! honest bottleneck, IPv4 and IPv6 (`doctor --probe`); and the time from
//! `mtuvisor watch --path-probe` starting to Docker's bridge at the probed
//! MTU.
//!
//!     cargo bench --bench path_probe

use testkit as common;

use std::time::{Duration, Instant};

use common::blackhole::{BlackHole, SERVER, SERVER6};
use common::dockerd::require_docker;
use common::{eventually, ip, mtu, percentile, run_mtuvisor};

const RUNS: usize = 7;

fn main() {
    if !common::bench_selected("path_probe") {
        return;
    }
    if !require_docker("bench path_probe") {
        return;
    }
    println!("path probe, bottleneck 1400 beyond a 1500 eth0, {RUNS} runs each");
    println!(
        "{:<8} {:<7} {:>8} {:>12} {:>12}",
        "path", "family", "packets", "p50 time", "max time"
    );
    let mut first_target = Vec::new();
    for silent in [true, false] {
        let mut b = BlackHole::beyond(if silent { "bpps" } else { "bpph" }, 1400, silent);
        let pod = b.d.pod.clone();
        let kind = if silent { "silent" } else { "honest" };
        for (family, target) in [("IPv4", SERVER), ("IPv6", SERVER6)] {
            let mut times = Vec::new();
            let mut packets = Vec::new();
            for _ in 0..RUNS {
                let out = run_mtuvisor(
                    &pod,
                    &[
                        "doctor",
                        "--json",
                        "--probe",
                        target,
                        "--probe-timeout-ms",
                        "1000",
                    ],
                    &[],
                );
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("doctor --json");
                let p = &v["probes"][0];
                assert_eq!(p["path_mtu"], 1400, "{p}");
                packets.push(p["sizes_tried"].as_u64().unwrap());
                times.push(Duration::from_millis(p["took_ms"].as_u64().unwrap()));
            }
            times.sort();
            packets.sort();
            println!(
                "{kind:<8} {family:<7} {:>8} {:>9} ms {:>9} ms",
                packets[packets.len() / 2],
                percentile(&times, 50.0).as_millis(),
                times.last().unwrap().as_millis()
            );
        }
        // From watch's start to docker0 at the probed 1400.
        let mut starts = Vec::new();
        for _ in 0..RUNS {
            ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
            ip(&pod, &["link", "set", "docker0", "up"]);
            let mut cmd = common::mtuvisor_in(&pod);
            cmd.args(["watch", "--path-probe", SERVER, "--mss", "off"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let t = Instant::now();
            let i = b.d.lab.spawn(cmd);
            assert!(
                eventually(Duration::from_secs(60), || mtu(&pod, "docker0") == 1400),
                "docker0 at the probed MTU"
            );
            starts.push(t.elapsed());
            b.d.lab.stop(i, Duration::from_secs(10));
            ip(&pod, &["link", "del", "docker0"]);
        }
        starts.sort();
        first_target.push((kind, starts));
    }
    println!("from `watch --path-probe` started to docker0 at the probed 1400 (IPv4):");
    for (kind, starts) in first_target {
        println!(
            "  {kind:<8} p50 {:>5} ms  max {:>5} ms",
            percentile(&starts, 50.0).as_millis(),
            starts.last().unwrap().as_millis()
        );
    }
}
