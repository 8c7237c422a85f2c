//! The 8 MB download through the PMTU black hole, side by side: mtuvisor
//! beside a plain dockerd (MTU and MSS clamping) against the ideal, a
//! dockerd started by hand with the right `--mtu`, both on the default
//! bridge so that only the mechanism differs; mtuvisor on a user-defined
//! network (whose extra FORWARD rules every packet crosses) is shown too.
//! Target: mtuvisor within 1.2x of the ideal.
//!
//!     cargo bench --bench blackhole

use testkit as common;

use std::time::Duration;

use common::blackhole::BlackHole;
use common::dockerd::require_docker;
use common::{ms, percentile};

const RUNS: usize = 7;
/// Downloads per container, timed inside it (`/proc/uptime` counts in
/// 10 ms steps, so many downloads per reading).
const PER_CONTAINER: usize = 50;
const LIMIT: Duration = Duration::from_secs(30);

fn main() {
    if !common::bench_selected("blackhole") {
        return;
    }
    if !require_docker("bench blackhole") {
        return;
    }
    let (with_mtuvisor, on_user_network) = {
        let mut b = BlackHole::new("bbhm", 1450);
        b.d.start_plain();
        b.d.ready();
        b.d.import_busybox();
        b.d.docker_ok(&["network", "create", "ci"]);
        b.d.start_sidecar();
        assert!(common::eventually(Duration::from_secs(5), || common::mtu(
            &b.d.pod, "docker0"
        ) <= 1450));
        std::thread::sleep(Duration::from_millis(500));
        (downloads(&b, "bridge"), downloads(&b, "ci"))
    };
    let ideal = {
        let mut b = BlackHole::new("bbhi", 1450);
        b.d.start_plain_with(&["--mtu=1450"]);
        b.d.ready();
        b.d.import_busybox();
        downloads(&b, "bridge")
    };
    let (m, i) = (percentile(&with_mtuvisor, 50.0), percentile(&ideal, 50.0));
    let ratio = m.as_secs_f64() / i.as_secs_f64();
    println!(
        "8 MB through the PMTU black hole: time per download (timed inside the container), {RUNS} containers x {PER_CONTAINER} downloads"
    );
    println!(
        "  mtuvisor, default bridge:                  p50 {}  min {}  max {}",
        ms(m),
        ms(with_mtuvisor[0]),
        ms(*with_mtuvisor.last().unwrap())
    );
    println!(
        "  mtuvisor, user-defined network:            p50 {}  min {}  max {}",
        ms(percentile(&on_user_network, 50.0)),
        ms(on_user_network[0]),
        ms(*on_user_network.last().unwrap())
    );
    println!(
        "  ideal dockerd --mtu=1450, default bridge:  p50 {}  min {}  max {}",
        ms(i),
        ms(ideal[0]),
        ms(*ideal.last().unwrap())
    );
    println!(
        "  ratio mtuvisor/ideal, default bridge (p50): {ratio:.2}x   target within 1.2x: {}",
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
}

fn downloads(b: &BlackHole, network: &str) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            b.download_time(network, &b.http_big(), PER_CONTAINER, LIMIT)
                .expect("downloads complete")
        })
        .collect();
    times.sort();
    times
}
