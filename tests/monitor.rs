//! The link notifications of a real kernel, as the enforcer reads them.
//!
//! A bridge announces each port it takes, changes and lets go with a
//! message of its own (family AF_BRIDGE) on the links' group: no kind, no
//! peer, and a "deleted" that means "left the bridge". Read as the link,
//! it made a new veth look peerless between dockerd's steps, and a clamp
//! landing then left the container's end at 1500 until the next sweep
//! (caught by the chaos pod's canary, seed 8709328065884241172).

use testkit as common;

use std::time::Duration;

use common::{in_netns, ip, privileged, Lab};
use mtuvisor::netlink::{LinkKind, NetEvent, NetMonitor, RECV_BUFFER_POD};

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

fn ifindex(netns: &str, link: &str) -> u32 {
    let out = ip(netns, &["-j", "link", "show", "dev", link]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
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
