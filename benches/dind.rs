//! mtuvisor supervise against a real dockerd, as figures.
//!
//!     cargo bench --bench dind
//!
//! Prints first-instruction correctness over 200 container starts (serial,
//! then 50 at a time) on a user-defined network, and the time from the
//! first sign of a new container interface (the kernel's notification that
//! its host end joined the bridge, or Docker's `connect` event, whichever
//! comes first) to both ends clamped. Targets: 100 % correct; p99 < 10 ms.
//!
//! Beside it, the floor any netlink client in the pod stands on while dockerd
//! works: an unrelated RTM_SETLINK sent every 5 ms, and dockerd's own
//! requests (create -> attach, and its next request after the attach).

use testkit as common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::dockerd::{require_docker, DockerLab};
use common::{ms, over_10ms, percentile, Notifications, RtnlProbe};

const STARTS: usize = 200;
const AT_ONCE: usize = 50;

fn main() {
    if !common::bench_selected("dind") {
        return;
    }
    if !require_docker("bench dind") {
        return;
    }
    let mut d = DockerLab::new("bdind");
    d.start_supervised(&[]);
    d.ready();
    d.import_busybox();
    let id = d.docker_ok(&["network", "create", "bench"]);
    let bridge = format!("br-{}", &id[..12]);
    let bridge_index: u32 = common::ip(&d.pod, &["-j", "link", "show", "dev", &bridge])
        .split("\"ifindex\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("bridge ifindex");

    let notes = Notifications::listen(std::slice::from_ref(&d.pod));
    let events = docker_connect_events(&d);
    let probe = RtnlProbe::start(&d.pod, "mvprobe", Duration::from_millis(5));

    let serial_start = Instant::now();
    let serial: Vec<String> = (0..STARTS)
        .map(|_| d.first_instruction_mtu(Some("bench")))
        .collect();
    let serial_time = serial_start.elapsed();
    let batch_start = Instant::now();
    let mut batched = Vec::new();
    for _ in 0..STARTS / AT_ONCE {
        batched.extend(std::thread::scope(|s| {
            let hs: Vec<_> = (0..AT_ONCE)
                .map(|_| s.spawn(|| d.first_instruction_mtu(Some("bench"))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let batch_time = batch_start.elapsed();
    let probed = probe.finish();

    let right = |v: &[String]| v.iter().filter(|m| *m == "1450").count();
    println!("first instruction reads 1450 (container eth0 on a user-defined network)");
    println!(
        "  serial:        {}/{STARTS} ({:.1} %)  in {:.1} s",
        right(&serial),
        100.0 * right(&serial) as f64 / STARTS as f64,
        serial_time.as_secs_f64()
    );
    println!(
        "  {AT_ONCE} at a time:  {}/{STARTS} ({:.1} %)  in {:.1} s   target 100 %: {}",
        right(&batched),
        100.0 * right(&batched) as f64 / STARTS as f64,
        batch_time.as_secs_f64(),
        if right(&serial) + right(&batched) == 2 * STARTS {
            "met"
        } else {
            "MISSED"
        }
    );

    // Host ends that joined the bench bridge, and when each end was seen
    // at 1450. A far end clamped after dockerd moved it into the container
    // is not visible from the pod namespace; those are counted apart (the
    // first-instruction figures above cover them).
    #[derive(Default)]
    struct Veth {
        created: Option<Instant>,
        joined: Option<Instant>,
        peer: Option<u32>,
        host_done: Option<Instant>,
        /// dockerd bringing the host end up: its next request after the
        /// join, sent before the join's notification reaches anyone.
        host_up: Option<Instant>,
    }
    let mut veths: HashMap<u32, Veth> = HashMap::new();
    let mut far_done: HashMap<u32, Instant> = HashMap::new();
    while let Ok(seen) = notes.rx.try_recv() {
        let l = &seen.link;
        if l.peer.is_some() && l.master.is_none() && l.name.as_bytes().starts_with(b"veth") {
            veths
                .entry(l.index)
                .or_default()
                .created
                .get_or_insert(seen.at);
        }
        if l.master == Some(bridge_index) {
            let v = veths.entry(l.index).or_default();
            v.joined.get_or_insert(seen.at);
            if v.peer.is_none() {
                v.peer = l.peer.filter(|p| p.netnsid.is_none()).map(|p| p.ifindex);
            }
            if l.mtu <= 1450 {
                v.host_done.get_or_insert(seen.at);
            }
            if seen.up {
                v.host_up.get_or_insert(seen.at);
            }
        } else if l.peer.is_some() && l.master.is_none() && l.mtu <= 1450 {
            far_done.entry(l.index).or_insert(seen.at);
        }
    }
    let connect_times = events.join().unwrap();
    let mut joined: Vec<&Veth> = veths.values().filter(|v| v.joined.is_some()).collect();
    joined.sort_by_key(|v| v.joined);
    let batch_began = serial_start + serial_time;
    let mut phases: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut far_after_move = 0;
    let mut connect_first = 0;
    for (i, v) in joined.iter().enumerate() {
        let mut start = v.joined.unwrap();
        let phase = usize::from(start >= batch_began);
        // One container at a time, the i-th connect event is this veth's:
        // take it if it came first.
        if phase == 0 {
            if let Some(&c) = connect_times.get(i) {
                if c < start {
                    connect_first += 1;
                    start = c;
                }
            }
        }
        match (v.host_done, v.peer.and_then(|p| far_done.get(&p))) {
            (Some(h), Some(f)) => phases[phase].push(h.max(*f).saturating_duration_since(start)),
            _ => far_after_move += 1,
        }
    }
    println!("first sign (kernel notification of the host end joining the bridge, or Docker's connect event) -> both ends clamped");
    for (name, mut lat) in [
        ("serial", phases[0].clone()),
        ("50 at a time", phases[1].clone()),
    ] {
        lat.sort();
        if lat.is_empty() {
            continue;
        }
        let p99 = percentile(&lat, 99.0);
        println!(
            "  {name:<13} n={:<4} p50 {}  p99 {}  max {}  over 10 ms: {:>4.1} %   target p99 < 10 ms: {}",
            lat.len(),
            ms(percentile(&lat, 50.0)),
            ms(p99),
            ms(*lat.last().unwrap()),
            over_10ms(&lat),
            if p99 < Duration::from_millis(10) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    // The floor under those figures: what any RTNL request from the pod
    // namespace waited meanwhile; dockerd's own wait between creating a
    // pair and attaching it (two requests one after the other); and how
    // long dockerd's own next request after the join took to land, sent at
    // the moment the notification mtuvisor acts on was sent.
    let mut probe_phases: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for (at, took) in probed {
        if at >= serial_start {
            probe_phases[usize::from(at >= batch_began)].push(took);
        }
    }
    let mut gap_phases: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut up_phases: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for v in &joined {
        let j = v.joined.unwrap();
        let phase = usize::from(j >= batch_began);
        if let Some(c) = v.created {
            gap_phases[phase].push(j.saturating_duration_since(c));
        }
        if let Some(u) = v.host_up {
            up_phases[phase].push(u.saturating_duration_since(j));
        }
    }
    println!("the floor: RTNL waits in the pod namespace meanwhile");
    for (what, phases) in [
        (
            "a probe's RTM_SETLINK on a link of its own, every 5 ms",
            probe_phases,
        ),
        (
            "dockerd's own: veth pair created -> attached to the bridge",
            gap_phases,
        ),
        (
            "dockerd's own, from the same notification as mtuvisor: attached -> host end up (its next request)",
            up_phases,
        ),
    ] {
        println!("  {what}");
        for (name, mut lat) in ["serial", "50 at a time"].into_iter().zip(phases) {
            lat.sort();
            if lat.is_empty() {
                continue;
            }
            println!(
                "    {name:<13} n={:<5} p50 {}  p99 {}  max {}  over 10 ms: {:>4.1} %",
                lat.len(),
                ms(percentile(&lat, 50.0)),
                ms(percentile(&lat, 99.0)),
                ms(*lat.last().unwrap()),
                over_10ms(&lat),
            );
        }
    }
    println!("  Docker's connect event came before the kernel notification: {connect_first} of {} (serial)", phases[0].len());
    println!("  far end clamped only after the move (not timed from the pod namespace): {far_after_move}");
}

/// Times of Docker `network connect` events for the bench network, read
/// with `docker events` until the bench is done.
fn docker_connect_events(d: &DockerLab) -> std::thread::JoinHandle<Vec<Instant>> {
    let mut child = d
        .docker_cmd()
        .args([
            "events",
            "--filter",
            "type=network",
            "--filter",
            "event=connect",
            "--format",
            "{{.Actor.Attributes.name}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut times = Vec::new();
        let reader = std::io::BufReader::new(stdout);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if line == "bench" && tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        });
        // Collect until no event for a while after the bench's last start.
        while let Ok(t) = rx.recv_timeout(Duration::from_secs(20)) {
            times.push(t);
            if times.len() >= 2 * STARTS {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        times
    })
}
