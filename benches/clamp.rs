//! Clamp latency and sweep time, printed as figures.
//!
//!     cargo bench --bench clamp
//!
//! Targets (2-core machine): p99 notification-to-both-ends-clamped < 5 ms;
//! full sweep over 500 ports < 200 ms.

use testkit as common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{ip, ms, mtu, percentile, sh, timed_veth_series, Lab, Pace};
use mtuvisor::enforce::{BridgeMatcher, Engine};
use mtuvisor::netlink::{MtuSetter, NetnsResolver, Quarantine, Rtnl, RtnlClient};

const VETHS: usize = 300;
const PORTS: usize = 500;

fn main() {
    // `cargo bench` passes --bench; a filter that does not name us skips.
    if !common::bench_selected("clamp") {
        return;
    }
    if !common::privileged("bench clamp") {
        return;
    }
    latency(Pace::Dockerd);
    latency(Pace::BackToBack);
    sweep(false);
    sweep(true);
}

fn latency(pace: Pace) {
    let (_lab, pod, containers) = common::latency_lab("blat");

    let samples = timed_veth_series(&pod, &containers, "br-0123456789ab", VETHS, 1450, pace);
    let mut from_note: Vec<Duration> = samples.iter().filter_map(|s| s.from_notification).collect();
    let mut from_create: Vec<Duration> = samples.iter().filter_map(|s| s.from_creation).collect();
    from_note.sort();
    from_create.sort();
    let p99 = percentile(&from_note, 99.0);
    let pacing = match pace {
        Pace::Dockerd => "paced like dockerd: 3 store commits between attach and move",
        Pace::BackToBack => "back to back: move right after attach, worst case",
    };
    println!("clamp latency over {VETHS} veths, dockerd's order ({pacing})");
    println!(
        "  clamped both ends:                {}/{VETHS}",
        from_note.len()
    );
    println!(
        "  notification -> both ends clamped: p50 {}  p99 {}  max {}   target p99 < 5 ms: {}",
        ms(percentile(&from_note, 50.0)),
        ms(p99),
        ms(*from_note.last().unwrap()),
        verdict(p99 < Duration::from_millis(5)),
    );
    let within = from_create
        .iter()
        .filter(|d| **d <= Duration::from_millis(10))
        .count();
    println!(
        "  creation -> both ends clamped:     p50 {}  p99 {}  max {}   within 10 ms: {within}/{VETHS} (target >= 99 %: {})",
        ms(percentile(&from_create, 50.0)),
        ms(percentile(&from_create, 99.0)),
        ms(*from_create.last().unwrap()),
        verdict(within * 100 >= VETHS * 99),
    );
}

/// Times `Engine::sweep` over a bridge with `PORTS` veth ports, first when
/// every link needs lowering, then in the steady state (nothing to change).
/// With `moved`, every peer sits in a namespace of its own, as a
/// container's `eth0` does.
fn sweep(moved: bool) {
    let mut lab = Lab::new(if moved { "bswm" } else { "bsw" });
    let (pod, _) = lab.pod(1450);
    ip(&pod, &["link", "add", "br-0123456789ab", "type", "bridge"]);
    let mut batch = String::new();
    let mut peer_batches = Vec::new();
    for i in 0..PORTS {
        if moved {
            let c = lab.netns(&format!("s{i}"));
            batch.push_str(&format!(
                "link add vs{i} type veth peer name eth0 netns {c}\n"
            ));
            peer_batches.push(c);
        } else {
            batch.push_str(&format!("link add vs{i} type veth peer name ps{i}\n"));
        }
        batch.push_str(&format!("link set vs{i} master br-0123456789ab\n"));
    }
    let file = lab.temp_file("batch", &batch);
    sh(&["ip", "-n", &pod, "-batch", file.to_str().unwrap()]);

    let (first, steady, report) = common::in_netns(&pod, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = RtnlClient::new(
                Rtnl::connect().unwrap(),
                MtuSetter::new(4).unwrap(),
                NetnsResolver::new(vec!["/run/netns".into()], Default::default()),
                Quarantine::new("self"),
            );
            let mut engine = Engine::new(client, BridgeMatcher::default(), 1450);
            let t = Instant::now();
            let report = engine.sweep().await.unwrap();
            let first = t.elapsed();
            let t = Instant::now();
            engine.sweep().await.unwrap();
            (first, t.elapsed(), report)
        })
    });
    assert_eq!(mtu(&pod, "vs0"), 1450);
    let peers = if moved {
        "peers in 500 namespaces"
    } else {
        "peers in the same namespace"
    };
    println!("full sweep over {PORTS} ports + {PORTS} peers ({peers})");
    println!(
        "  first sweep ({} links changed): {}   target < 200 ms: {}",
        report.changed,
        ms(first),
        verdict(first < Duration::from_millis(200))
    );
    println!(
        "  steady-state sweep (nothing to change): {}   target < 200 ms: {}",
        ms(steady),
        verdict(steady < Duration::from_millis(200))
    );
    let _ = std::io::stdout().flush();
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
