//! Instruments for the latency test and the benchmarks: dockerd's veth
//! sequence at netlink speed, timed from the kernel's notifications, and a
//! probe of how long any RTNL request waits.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mtuvisor::netlink::Link;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::lab::{enter_netns, eventually, ip, mtu, Lab};

/// The clamp-latency set-up: a pod (eth0 1450) with `br-0123456789ab` up,
/// four container namespaces, and `mtuvisor watch` running with the bridge
/// already clamped. Returns the lab (keep it alive), the pod and the
/// containers.
pub fn latency_lab(tag: &str) -> (Lab, String, Vec<String>) {
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    let containers: Vec<String> = (0..4).map(|i| lab.netns(&format!("c{i}"))).collect();
    ip(&pod, &["link", "add", "br-0123456789ab", "type", "bridge"]);
    ip(&pod, &["link", "set", "br-0123456789ab", "up"]);
    lab.watch(&pod, &[], &[("MTUVISOR_LOG", "warn")]);
    assert!(eventually(Duration::from_secs(2), || mtu(
        &pod,
        "br-0123456789ab"
    ) == 1450));
    (lab, pod, containers)
}

/// A link notification as mtuvisor's decoder reads it.
fn agent_view(message: &[u8]) -> Option<Link> {
    use mtuvisor::netlink::wire::{decode, messages, Item};
    let (header, payload) = messages(message).next()?.ok()?;
    match decode(&header, payload) {
        Ok(Item::Link(link)) => Some(link),
        _ => None,
    }
}

/// An rtnetlink connection in the calling thread's namespace, driven by
/// the current runtime: the test's own requests (the agent's go through
/// its own socket).
fn connection() -> rtnetlink::Handle {
    let (conn, handle, _) = rtnetlink::new_connection().expect("rtnetlink socket");
    tokio::spawn(conn);
    handle
}

// --- Timed veth series: dockerd's sequence at netlink speed -------------

/// A link notification, stamped when the kernel handed it to our reader.
pub struct Seen {
    pub at: Instant,
    pub netns: usize,
    pub link: Link,
    /// IFF_UP.
    pub up: bool,
    /// The hardware address.
    pub address: Vec<u8>,
}

/// Blocking readers of RTNLGRP_LINK in several namespaces, one thread each,
/// so that every notification is stamped on arrival.
pub struct Notifications {
    pub rx: mpsc::Receiver<Seen>,
}

impl Notifications {
    pub fn listen(namespaces: &[String]) -> Notifications {
        let (tx, rx) = mpsc::channel();
        for (i, ns) in namespaces.iter().enumerate() {
            let tx = tx.clone();
            let (ready_tx, ready_rx) = mpsc::channel();
            let ns = ns.clone();
            std::thread::spawn(move || {
                enter_netns(&ns);
                let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
                socket.set_rx_buf_sz(8 << 20).ok();
                socket
                    .bind(&SocketAddr::new(0, 1 /* RTMGRP_LINK */))
                    .expect("bind");
                ready_tx.send(()).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let Ok(n) = socket.recv(&mut &mut buf[..], 0) else {
                        return;
                    };
                    let at = Instant::now();
                    let mut offset = 0;
                    while offset < n {
                        let Ok(msg) =
                            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                        else {
                            break;
                        };
                        let len = msg.header.length as usize;
                        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) =
                            msg.payload
                        {
                            // The link as the agent reads it: through its
                            // own decoder, on the same bytes.
                            if let Some(link) = agent_view(&buf[offset..offset + len]) {
                                let up = m.header.flags.contains(LinkFlags::Up);
                                let address = m
                                    .attributes
                                    .iter()
                                    .find_map(|a| match a {
                                        LinkAttribute::Address(a) => Some(a.clone()),
                                        _ => None,
                                    })
                                    .unwrap_or_default();
                                let seen = Seen {
                                    at,
                                    netns: i,
                                    link,
                                    up,
                                    address,
                                };
                                if tx.send(seen).is_err() {
                                    return;
                                }
                            }
                        }
                        if len == 0 {
                            break;
                        }
                        offset += (len + 3) & !3;
                    }
                }
            });
            ready_rx.recv().expect("reader ready");
        }
        Notifications { rx }
    }
}

/// How closely the series follows dockerd between attaching the host end
/// and moving the far end into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As libnetwork does: after `addToBridge` and bringing the host end up,
    /// and before Join moves the far end, it commits three bolt
    /// transactions to its local store (the bridge driver's endpoint, the
    /// endpoint, the network's endpoint count), each a page write plus two
    /// fdatasyncs (data, then meta page).
    Dockerd,
    /// No gap at all: the move follows the attach as fast as netlink
    /// answers. Harsher than any dockerd; the worst case.
    BackToBack,
}

/// One veth of a series.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From just before the create request to both ends seen at the target.
    pub from_creation: Option<Duration>,
    /// From the kernel's notification that the host end joined the bridge
    /// (what makes it a managed link) to both ends seen at the target.
    pub from_notification: Option<Duration>,
}

/// Creates `count` veths in `pod` the way dockerd does — create the pair,
/// enslave the host end to `bridge`, move the other end into one of
/// `containers` and rename it `eth0` — each at netlink speed, and times how
/// long until both ends are seen at or below `target`. Each veth is deleted
/// once measured.
pub fn timed_veth_series(
    pod: &str,
    containers: &[String],
    bridge: &str,
    count: usize,
    target: u32,
    pace: Pace,
) -> Vec<Sample> {
    let mut all = vec![pod.to_string()];
    all.extend(containers.iter().cloned());
    let notes = Notifications::listen(&all);
    let pod = pod.to_string();
    let containers = containers.to_vec();
    let bridge = bridge.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(drive_series(
            &pod,
            &containers,
            &bridge,
            count,
            target,
            pace,
            notes,
        ))
    })
    .join()
    .expect("series thread")
}

async fn drive_series(
    pod: &str,
    containers: &[String],
    bridge: &str,
    count: usize,
    target: u32,
    pace: Pace,
    notes: Notifications,
) -> Vec<Sample> {
    use futures::TryStreamExt;
    use rtnetlink::{LinkUnspec, LinkVeth};

    // One socket per namespace, each opened while this thread is inside it.
    let mut in_container = Vec::new();
    let mut container_fds = Vec::new();
    for c in containers {
        enter_netns(c);
        in_container.push(connection());
        container_fds.push(File::open(format!("/run/netns/{c}")).unwrap());
    }
    enter_netns(pod);
    let h = connection();
    let by_name = |handle: rtnetlink::Handle, name: String| async move {
        handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .header
            .index
    };
    let bridge_index = by_name(h.clone(), bridge.to_string()).await;
    let store = std::env::temp_dir().join(format!("mtuvisor-endpoint-store-{pod}"));
    let mut store_file = File::create(&store).unwrap();

    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let c = i % containers.len();
        let host = format!("vtest{i}");
        let tmp = format!("vtmp{i}");
        while notes.rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        h.link()
            .add(LinkVeth::new(&host, &tmp).build())
            .execute()
            .await
            .unwrap();
        let host_index = by_name(h.clone(), host.clone()).await;
        let tmp_index = by_name(h.clone(), tmp.clone()).await;
        h.link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        // libnetwork brings the host end up only after attaching it.
        h.link()
            .set(LinkUnspec::new_with_index(host_index).up().build())
            .execute()
            .await
            .unwrap();
        if pace == Pace::Dockerd {
            for _transaction in 0..3 {
                for _page in 0..2 {
                    store_file.write_all(&[0u8; 4096]).unwrap();
                    store_file.sync_data().unwrap();
                }
            }
        }
        h.link()
            .set(
                LinkUnspec::new_with_index(tmp_index)
                    .setns_by_fd(container_fds[c].as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        let ch = in_container[c].clone();
        let moved = by_name(ch.clone(), tmp.clone()).await;
        ch.link()
            .set(LinkUnspec::new_with_index(moved).name("eth0").up().build())
            .execute()
            .await
            .unwrap();

        let mut enslaved_at = None;
        let mut host_done = None;
        let mut peer_done = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while host_done.is_none() || peer_done.is_none() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Ok(seen) = notes.rx.recv_timeout(left) else {
                break;
            };
            let l = &seen.link;
            let is_host = seen.netns == 0 && l.index == host_index;
            let is_peer = (seen.netns == 0 && l.index == tmp_index)
                || (seen.netns == c + 1 && l.peer.is_some_and(|p| p.ifindex == host_index));
            if is_host && l.master == Some(bridge_index) && enslaved_at.is_none() {
                enslaved_at = Some(seen.at);
            }
            if is_host && l.mtu <= target && host_done.is_none() {
                host_done = Some(seen.at);
            }
            if is_peer && l.mtu <= target && peer_done.is_none() {
                peer_done = Some(seen.at);
            }
        }
        let done = host_done.zip(peer_done).map(|(a, b)| a.max(b));
        samples.push(Sample {
            from_creation: done.map(|d| d - t0),
            from_notification: done
                .zip(enslaved_at)
                .map(|(d, e)| d.saturating_duration_since(e)),
        });
        h.link().del(host_index).execute().await.unwrap();
    }
    drop(store_file);
    let _ = std::fs::remove_file(&store);
    samples
}

/// p-th percentile (0..=100) of sorted durations.
/// The filters `cargo bench` passes a bench binary (its own `--` flags,
/// such as `--bench`, left out).
pub fn bench_filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// Whether the bench `name` runs: every filter is part of its name (none
/// given: yes). Another bench's name skips it.
pub fn bench_selected(name: &str) -> bool {
    bench_filters().iter().all(|f| name.contains(f.as_str()))
}

/// Share of the durations above 10 ms, in percent (0 for none).
pub fn over_10ms(durations: &[Duration]) -> f64 {
    let over = durations
        .iter()
        .filter(|d| **d > Duration::from_millis(10))
        .count();
    100.0 * over as f64 / durations.len().max(1) as f64
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// How long any RTNL request from a namespace waits while something else
/// runs: a thread in `netns` sets the MTU of a veth pair of its own (on no
/// bridge, so nothing manages it) every `every`, and times each request
/// from send to acknowledgement. This is the floor for any netlink client
/// there, mtuvisor included.
pub struct RtnlProbe {
    netns: String,
    link: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(Instant, Duration)>>>,
}

impl RtnlProbe {
    pub fn start(netns: &str, name: &str, every: Duration) -> RtnlProbe {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let (a, b) = (format!("{name}a"), format!("{name}b"));
        ip(
            netns,
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (netns_of_probe, probe_link) = (netns.to_string(), a.clone());
        let netns = netns.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                enter_netns(&netns);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let rtnl = mtuvisor::netlink::Rtnl::connect().unwrap();
                    let link = rtnl
                        .links_at_most(usize::MAX)
                        .await
                        .unwrap()
                        .links
                        .into_iter()
                        .find(|l| l.name == a)
                        .expect("probe link");
                    let mut samples = Vec::new();
                    let mut tick = tokio::time::interval(every);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let mtu = 1400 + (samples.len() as u32 % 2);
                        let t = Instant::now();
                        rtnl.set_mtu(&link, mtu).await.expect("probe set MTU");
                        samples.push((t, t.elapsed()));
                    }
                    samples
                })
            }
        });
        RtnlProbe {
            netns: netns_of_probe,
            link: probe_link,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the probe and removes its veth; every request as (sent at,
    /// round trip).
    pub fn finish(mut self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.take().unwrap().join().expect("probe thread");
        ip(&self.netns, &["link", "del", &self.link]);
        samples
    }
}

/// Two or more pods' veths on a watched bridge, from the notifications of
/// a run: per veth, from its host end joining the bridge to both ends at
/// the pod's target (the clamp), and to dockerd bringing it up (dockerd's
/// own next request, the yardstick).
#[derive(Debug, Default, Clone)]
pub struct ClampRace {
    pub clamp: Vec<Duration>,
    pub up: Vec<Duration>,
    /// Veths whose far end was clamped only after the move.
    pub unseen: usize,
}

/// Reads everything `notes` received: `bridges[i]` is the watched
/// bridge's ifindex in namespace `i`, `wants[i]` that pod's target.
pub fn clamp_race(notes: &Notifications, bridges: &[u32], wants: &[u32]) -> ClampRace {
    use std::collections::HashMap;
    // Per (pod, ifindex): when the host end joined the bench bridge, when it
    // was seen at the target, when dockerd brought it up (its next request),
    // and its peer; far ends seen at the target while still in the pod.
    #[derive(Default)]
    struct Veth {
        joined: Option<Instant>,
        host_done: Option<Instant>,
        host_up: Option<Instant>,
        peer: Option<u32>,
    }
    let mut veths: HashMap<(usize, u32), Veth> = HashMap::new();
    let mut far_done: HashMap<(usize, u32), Instant> = HashMap::new();
    while let Ok(seen) = notes.rx.try_recv() {
        let (i, l) = (seen.netns, &seen.link);
        if l.master == Some(bridges[i]) {
            let v = veths.entry((i, l.index)).or_default();
            v.joined.get_or_insert(seen.at);
            if v.peer.is_none() {
                v.peer = l.peer.filter(|p| p.netnsid.is_none()).map(|p| p.ifindex);
            }
            if l.mtu <= wants[i] {
                v.host_done.get_or_insert(seen.at);
            }
            if seen.up {
                v.host_up.get_or_insert(seen.at);
            }
        } else if l.peer.is_some() && l.master.is_none() && l.mtu <= wants[i] {
            far_done.entry((i, l.index)).or_insert(seen.at);
        }
    }
    let (mut clamp, mut up, mut unseen) = (Vec::new(), Vec::new(), 0);
    for ((i, _), v) in &veths {
        let Some(joined) = v.joined else { continue };
        match (v.host_done, v.peer.and_then(|p| far_done.get(&(*i, p)))) {
            (Some(h), Some(f)) => clamp.push(h.max(*f).saturating_duration_since(joined)),
            _ => unseen += 1,
        }
        if let Some(u) = v.host_up {
            up.push(u.saturating_duration_since(joined));
        }
    }
    clamp.sort();
    up.sort();
    ClampRace { clamp, up, unseen }
}

impl ClampRace {
    /// Prints the race's figures, with `probed` (an unrelated RTM_SETLINK's
    /// waits over the same time: the floor) and the agent's `stages`.
    pub fn print(self, probed: Vec<Duration>, stages: Option<&ClampStagesSeen>) {
        let mean = (!self.clamp.is_empty())
            .then(|| self.clamp.iter().sum::<Duration>() / self.clamp.len() as u32);
        if !self.clamp.is_empty() && !self.up.is_empty() {
            let p99 = |v: &[Duration]| percentile(v, 99.0).as_secs_f64();
            println!(
                "  the agent against dockerd's own next request: {:.2}x at p99, {:.2}x in the share over 10 ms (goal within 1.2x)",
                p99(&self.clamp) / p99(&self.up).max(1e-9),
                over_10ms(&self.clamp) / over_10ms(&self.up).max(1e-9)
            );
        }
        for (what, mut lat) in [
            (
                "host end joined the bridge -> both ends clamped (the agent)",
                self.clamp,
            ),
            (
                "host end joined -> host end up (dockerd's own next request)",
                self.up,
            ),
            ("an unrelated RTM_SETLINK every 5 ms (the floor)", probed),
        ] {
            lat.sort();
            if lat.is_empty() {
                continue;
            }
            println!(
                "  {what}: n={} p50 {}  p99 {}  max {}  over 10 ms: {:.1} %",
                lat.len(),
                ms(percentile(&lat, 50.0)),
                ms(percentile(&lat, 99.0)),
                ms(*lat.last().unwrap()),
                over_10ms(&lat)
            );
        }
        println!(
            "  far end clamped only after the move (not timed from the pod namespace): {}",
            self.unseen
        );
        if let Some(stages) = stages {
            stages.print(mean);
        }
    }
}

/// One run of [`race_at_once`], as figures.
#[derive(Debug, Default, Clone)]
pub struct RaceRun {
    /// Containers that read their own pod's MTU at their first
    /// instruction, of `started`.
    pub right: usize,
    pub started: usize,
    pub race: ClampRace,
    /// An unrelated RTM_SETLINK's waits over the run (the floor).
    pub probed: Vec<Duration>,
    /// The agent's own split of its clamps over the run.
    pub stages: Option<ClampStagesSeen>,
}

impl RaceRun {
    /// Prints runs together: first-instruction MTUs, the clamp race and
    /// the stage split over all of them.
    pub fn print_all(label: &str, runs: &[RaceRun]) {
        let right: usize = runs.iter().map(|r| r.right).sum();
        let started: usize = runs.iter().map(|r| r.started).sum();
        println!(
            "{label}, {} runs together: {right}/{started} read their own pod's MTU first (target 100 %)",
            runs.len()
        );
        let mut race = ClampRace::default();
        let mut probed = Vec::new();
        let mut stages: Option<ClampStagesSeen> = None;
        for r in runs {
            race.clamp.extend(&r.race.clamp);
            race.up.extend(&r.race.up);
            race.unseen += r.race.unseen;
            probed.extend(&r.probed);
            if let Some(s) = &r.stages {
                stages = Some(match stages {
                    Some(all) => all.plus(s),
                    None => s.clone(),
                });
            }
        }
        race.clamp.sort();
        race.up.sort();
        race.print(probed, stages.as_ref());
    }
}

/// Starts `at_once` containers in each pod at the same moment (`start(i)`
/// starts one in pod `i`, named in /run/netns as `pods[i]`, and returns
/// the MTU it read at its first instruction), with every link
/// notification stamped and an unrelated RTM_SETLINK probing the floor in
/// each pod; then prints how many read their own pod's `wants[i]`, the
/// clamp race on the watched bridges (`bridges[i]`) and, with `metrics`
/// (the agent's `/metrics` page), where the agent's time went.
#[allow(clippy::too_many_arguments)]
pub fn race_at_once(
    label: &str,
    pods: &[String],
    bridges: &[u32],
    wants: &[u32],
    at_once: usize,
    start: impl Fn(usize) -> String + Sync,
    metrics: Option<&dyn Fn() -> String>,
) -> RaceRun {
    let notes = Notifications::listen(pods);
    let probes: Vec<RtnlProbe> = pods
        .iter()
        .map(|p| RtnlProbe::start(p, "mvprobe", Duration::from_millis(5)))
        .collect();
    let stages_before = metrics.map(|m| ClampStagesSeen::parse(&m()));
    let began = Instant::now();
    let start = &start;
    let read: Vec<(String, u32)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..at_once)
            .flat_map(|_| 0..pods.len())
            .map(|i| s.spawn(move || (start(i), wants[i])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = began.elapsed();
    let probed: Vec<Duration> = probes
        .into_iter()
        .flat_map(|p| p.finish())
        .filter(|(at, _)| *at >= began)
        .map(|(_, d)| d)
        .collect();
    let stages = metrics
        .zip(stages_before)
        .map(|(m, before)| ClampStagesSeen::parse(&m()).since(&before));
    let right = read
        .iter()
        .filter(|(got, want)| *got == want.to_string())
        .count();
    let mtus: Vec<String> = wants.iter().map(u32::to_string).collect();
    println!(
        "{label}, {} pods x {at_once} containers started at once (eth0 {}): {right}/{} read their own pod's MTU first, in {:.1} s (target 100 %)",
        pods.len(),
        mtus.join(" and "),
        read.len(),
        took.as_secs_f64()
    );
    let wrong: Vec<&str> = read
        .iter()
        .filter(|(got, want)| *got != want.to_string())
        .map(|(got, _)| got.as_str())
        .collect();
    if !wrong.is_empty() {
        println!("  read instead: {}", wrong.join(", "));
    }
    let race = clamp_race(&notes, bridges, wants);
    race.clone().print(probed.clone(), stages.as_ref());
    RaceRun {
        right,
        started: read.len(),
        race,
        probed,
        stages,
    }
}

/// The agent's `mtuvisor_clamp_stage_seconds` (and `mtuvisor_clamp_seconds`,
/// every label set together) as read from its `/metrics`: per histogram,
/// cumulative bucket counts by upper bound, the sum and the count.
#[derive(Debug, Default, Clone)]
pub struct ClampStagesSeen {
    series: std::collections::BTreeMap<String, StageHistogram>,
}

#[derive(Debug, Default, Clone)]
struct StageHistogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// The order stages are printed in (the agent's `CLAMP_STAGES`), then the
/// whole clamp as the agent times it.
const STAGE_ORDER: [&str; 6] = ["loop", "decide", "queue", "kernel", "wake", "total"];

impl ClampStagesSeen {
    /// Parses a `/metrics` page.
    pub fn parse(page: &str) -> ClampStagesSeen {
        let mut seen = ClampStagesSeen::default();
        for line in page.lines() {
            let Some((name, rest)) = line.split_once(['{', ' ']) else {
                continue;
            };
            let key = match name.strip_prefix("mtuvisor_clamp_stage_seconds") {
                Some(kind) => rest
                    .split_once("stage=\"")
                    .and_then(|(_, s)| s.split_once('"'))
                    .map(|(stage, _)| (stage.to_string(), kind)),
                None => name
                    .strip_prefix("mtuvisor_clamp_seconds")
                    .map(|kind| ("total".to_string(), kind)),
            };
            let Some((stage, kind)) = key else { continue };
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let h = seen.series.entry(stage).or_default();
            match kind {
                "_sum" => h.sum += value,
                "_count" => h.count += value as u64,
                "_bucket" => {
                    let le = rest
                        .split_once("le=\"")
                        .and_then(|(_, s)| s.split_once('"'))
                        .map(|(le, _)| le.parse::<f64>().unwrap_or(f64::INFINITY))
                        .unwrap_or(f64::INFINITY);
                    match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, c)) => *c += value as u64,
                        None => h.buckets.push((le, value as u64)),
                    }
                }
                _ => {}
            }
        }
        for h in seen.series.values_mut() {
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        seen
    }

    /// What was observed after `before`.
    pub fn since(&self, before: &ClampStagesSeen) -> ClampStagesSeen {
        let mut out = self.clone();
        for (stage, h) in &mut out.series {
            let Some(b) = before.series.get(stage) else {
                continue;
            };
            h.sum -= b.sum;
            h.count = h.count.saturating_sub(b.count);
            for (le, c) in &mut h.buckets {
                if let Some((_, bc)) = b.buckets.iter().find(|(bl, _)| bl == le) {
                    *c = c.saturating_sub(*bc);
                }
            }
        }
        out
    }

    /// Two runs' observations together.
    pub fn plus(&self, other: &ClampStagesSeen) -> ClampStagesSeen {
        let mut out = self.clone();
        for (stage, o) in &other.series {
            let h = out.series.entry(stage.clone()).or_default();
            h.sum += o.sum;
            h.count += o.count;
            for (le, c) in &o.buckets {
                match h.buckets.iter_mut().find(|(b, _)| b == le) {
                    Some((_, hc)) => *hc += c,
                    None => h.buckets.push((*le, *c)),
                }
            }
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out
    }

    /// The clamps the agent timed.
    pub fn clamps(&self) -> u64 {
        self.series.get("total").map_or(0, |h| h.count)
    }

    /// The agent's mean for a stage, in seconds.
    pub fn mean(&self, stage: &str) -> Option<f64> {
        let h = self.series.get(stage)?;
        (h.count > 0).then(|| h.sum / h.count as f64)
    }

    /// The bucket bound at or under which `p` % of a stage's observations
    /// fall (an upper bound of that percentile).
    pub fn quantile_bound(&self, stage: &str, p: f64) -> Option<f64> {
        let h = self.series.get(stage)?;
        let rank = (h.count as f64 * p / 100.0).ceil().max(1.0) as u64;
        h.buckets
            .iter()
            .find(|(_, c)| *c >= rank)
            .map(|(le, _)| *le)
    }

    /// Prints the split, one line per stage, with `clamp_mean` (the bench's
    /// own mean of the clamp, from the kernel's notification) beside the
    /// agent's: their difference is the time a notification waited in the
    /// socket before the agent read it.
    pub fn print(&self, clamp_mean: Option<Duration>) {
        let n = self.clamps();
        println!("  where the agent's clamps went ({n} timed by the agent, /metrics mtuvisor_clamp_stage_seconds):");
        let show = |s: Option<f64>| match s {
            Some(s) if s.is_infinite() => "> 1 s".to_string(),
            Some(s) => ms(Duration::from_secs_f64(s)),
            None => "-".to_string(),
        };
        if let (Some(bench), Some(agent)) = (clamp_mean, self.mean("total")) {
            println!(
                "    socket (notification queued -> read, the bench's mean less the agent's): mean {}",
                ms(bench.saturating_sub(Duration::from_secs_f64(agent)))
            );
        }
        for stage in STAGE_ORDER {
            if !self.series.contains_key(stage) {
                continue;
            }
            println!(
                "    {stage:<7} mean {:>9}  p50 <= {:>9}  p99 <= {:>9}",
                show(self.mean(stage)),
                show(self.quantile_bound(stage, 50.0)),
                show(self.quantile_bound(stage, 99.0)),
            );
        }
    }
}
