//! A real kernel's rtnetlink, as the enforcer reads it.
//!
//! A bridge announces each port it takes, changes and lets go with a
//! message of its own (family AF_BRIDGE) on the links' group: no kind, no
//! peer, and a "deleted" that means "left the bridge". Read as the link,
//! it made a new veth look peerless between dockerd's steps, and a clamp
//! landing then left the container's end at 1500 until the next sweep
//! (caught by the chaos pod's canary, seed 8709328065884241172).
//!
//! A dump's next datagram is always ready: a pod with links by the
//! thousand must neither hold the runtime every pod's enforcer shares nor
//! outlast the request's deadline (an attack review of stop 33).

use testkit as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ifindex, in_netns, ip, privileged, sh, Lab};
use mtuvisor::netlink::wire::{Item, Request};
use mtuvisor::netlink::{
    LinkKind, NetEvent, NetMonitor, NetlinkError, Rtnl, Socket, RECV_BUFFER_POD,
};

/// Every event the namespace's monitor reads while `steps` run there,
/// until it has been quiet for 300 ms.
fn events_during<T: Send + 'static>(
    ns: &str,
    steps: impl FnOnce() -> T + Send + 'static,
) -> (T, Vec<NetEvent>) {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut monitor = NetMonitor::subscribe(RECV_BUFFER_POD).expect("subscribe");
            let done = tokio::task::spawn_blocking(steps).await.unwrap();
            let mut events = Vec::new();
            while let Ok(Some((event, _))) =
                tokio::time::timeout(Duration::from_millis(300), monitor.next()).await
            {
                events.push(event);
            }
            (done, events)
        })
    })
}

#[test]
fn a_veth_port_is_never_announced_without_its_peer_nor_gone_while_it_lives() {
    if !privileged("a_veth_port_is_never_announced_without_its_peer_nor_gone_while_it_lives") {
        return;
    }
    let mut lab = Lab::new("mon1");
    let ns = lab.netns("pod");
    let container = lab.netns("c");
    ip(&ns, &["link", "add", "br0", "type", "bridge"]);
    ip(&ns, &["link", "set", "br0", "up"]);

    // dockerd's steps for one container, then a port let go and one
    // deleted: every message the bridge adds is in the same stream.
    let (pod, c) = (ns.clone(), container.clone());
    let (mh1, events) = events_during(&ns, move || {
        for (host, far) in [("mh0", "mf0"), ("mh1", "mf1")] {
            ip(
                &pod,
                &["link", "add", host, "type", "veth", "peer", "name", far],
            );
            ip(&pod, &["link", "set", host, "master", "br0"]);
            ip(&pod, &["link", "set", host, "up"]);
            ip(&pod, &["link", "set", host, "mtu", "1450"]);
        }
        ip(&pod, &["link", "set", "mf0", "netns", &c]);
        ip(&c, &["link", "set", "mf0", "name", "eth0"]);
        ip(&c, &["link", "set", "eth0", "up"]);
        let mh1 = ifindex(&pod, "mh1");
        ip(&pod, &["link", "set", "mh1", "nomaster"]);
        ip(&pod, &["link", "del", "mh1"]);
        mh1
    });
    let (mh0, br0) = (ifindex(&ns, "mh0"), ifindex(&ns, "br0"));

    let mut seen_mh0 = 0;
    for event in &events {
        if let NetEvent::LinkChanged(link) = event {
            if link.name.as_str().is_some_and(|n| n.starts_with("mh")) {
                assert_eq!(
                    link.kind,
                    LinkKind::Veth,
                    "a veth announced as another kind: {link:?}\nall: {events:#?}"
                );
                // mh1 loses its peer when it is deleted (the pair goes
                // end by end); mh0's lives throughout.
                if link.index == mh0 {
                    assert!(
                        link.peer.is_some(),
                        "a veth announced without its peer: {link:?}\nall: {events:#?}"
                    );
                    seen_mh0 += 1;
                }
            }
        }
    }
    assert!(
        seen_mh0 >= 3,
        "mh0's own notifications (made, enslaved, up, MTU, far end moved) were read: {events:#?}"
    );
    // mh0 lives on: no event says it is gone. mh1 left the bridge, then
    // was deleted: one event says it is gone, not two.
    let gone: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            NetEvent::LinkRemoved(i) => Some(*i),
            _ => None,
        })
        .collect();
    assert!(
        !gone.contains(&mh0),
        "a living port taken as gone: {gone:?}"
    );
    assert!(!gone.contains(&br0), "the bridge taken as gone: {gone:?}");
    assert_eq!(
        gone.iter().filter(|i| **i == mh1).count(),
        1,
        "mh1 let go by the bridge, then deleted: {gone:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, NetEvent::Undecodable(_))),
        "{events:#?}"
    );
}

#[test]
fn a_dump_of_links_by_the_thousand_shares_the_runtime_and_keeps_its_deadline() {
    if !privileged("a_dump_of_links_by_the_thousand_shares_the_runtime_and_keeps_its_deadline") {
        return;
    }
    const PAIRS: usize = 1500;
    let mut lab = Lab::new("mon2");
    let ns = lab.netns("many");
    let batch = std::env::temp_dir().join(format!("{}-links.batch", lab.prefix()));
    let lines: String = (0..PAIRS)
        .map(|i| format!("link add mxa{i} type veth peer name mxb{i}\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    sh(&["ip", "-n", &ns, "-batch", batch.to_str().unwrap()]);
    let _ = std::fs::remove_file(&batch);

    let (listed, polls, short, after) = in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Another pod's work on the same runtime: how often it got a turn
        // while the dump was read.
        let polls = Arc::new(AtomicUsize::new(0));
        let (listed, polls) = rt.block_on(async {
            let counted = polls.clone();
            let other = tokio::spawn(async move {
                loop {
                    counted.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            tokio::task::yield_now().await;
            let rtnl = Rtnl::connect().expect("socket");
            let before = polls.load(Ordering::Relaxed);
            let listed = rtnl.links_at_most(100_000).await.expect("dump");
            let during = polls.load(Ordering::Relaxed) - before;
            other.abort();
            (listed.links.len(), during)
        });
        // The same dump with a deadline far shorter than it takes: it ends
        // at the deadline, and the socket's next request gets its own
        // answer (the rest of the dump is read past first).
        let mut socket = Socket::open(0, None).expect("socket");
        let began = Instant::now();
        let short = socket.exchange(
            &mut Request::dump_links(),
            &|| "listing links".into(),
            began + Duration::from_millis(1),
            &mut |_| {},
        );
        let short = (short, began.elapsed());
        let mut lo = Vec::new();
        let after = socket.exchange(
            &mut Request::get_link(1),
            &|| "reading lo".into(),
            Instant::now() + Duration::from_secs(5),
            &mut |i| lo.push(i),
        );
        let after = after.map(|()| {
            lo.iter()
                .filter_map(|i| match i {
                    Ok(Item::Link(l)) => l.name.as_str().map(str::to_string),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        (listed, polls, short, after)
    });
    eprintln!(
        "{listed} links: the runtime's other work got {polls} turns during the dump; \
         asked to end within 1 ms, the dump ended after {:?}",
        short.1
    );
    assert_eq!(listed, 2 * PAIRS + 1, "every link listed");
    assert!(
        polls >= 10,
        "the runtime's other work got {polls} turns while {listed} links were read"
    );
    let (short, took) = short;
    assert!(
        matches!(short, Err(NetlinkError::TimedOut { .. })),
        "a dump of {listed} links asked to end within 1 ms: {short:?} after {took:?}"
    );
    assert_eq!(after.expect("lo"), vec!["lo".to_string()]);
}
