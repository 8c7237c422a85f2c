use super::*;
use crate::netlink::fake::{link, veth, FakeNet};
use crate::netlink::LinkKind;

/// eth0 (outer), docker0 with a remote-peer port, lxcbr0 with a port.
fn pod() -> FakeNet {
    let net = FakeNet::default();
    net.add(link(1, "lo", LinkKind::Other("".into()), 65536));
    net.add(veth(2, "eth0", 1450, None, 9, Some(0)));
    net.add(link(3, "docker0", LinkKind::Bridge, 1500));
    net.add(veth(4, "vethA", 1500, Some(3), 2, Some(1)));
    net.remote.lock().unwrap().insert(4, 1500);
    net.add(link(5, "lxcbr0", LinkKind::Bridge, 1500));
    net.add(veth(6, "lxcport", 1500, Some(5), 7, None));
    net.add(veth(7, "lxcpeer", 1500, None, 6, None));
    net
}

#[tokio::test]
async fn sweep_lowers_managed_links_only() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    let report = engine.sweep().await.unwrap();
    assert_eq!(report.changed, 3);
    let net = engine.net();
    assert_eq!(net.mtu(3), 1450);
    assert_eq!(net.mtu(4), 1450);
    assert_eq!(net.remote_mtu(4), 1450);
    assert_eq!(
        (net.mtu(1), net.mtu(2), net.mtu(5), net.mtu(6), net.mtu(7)),
        (65536, 1450, 1500, 1500, 1500)
    );
    assert_eq!(
        engine.sweep().await.unwrap().changed,
        0,
        "a second sweep changes nothing"
    );
}

#[tokio::test]
async fn target_moves_down_and_back_up_only_for_what_it_lowered() {
    let net = pod();
    net.add(link(8, "br-0123456789ab", LinkKind::Bridge, 1400));
    let mut engine = Engine::new(net, BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    engine.net().sets();

    engine.set_target(1380).await;
    let net = engine.net();
    assert_eq!(
        (net.mtu(3), net.mtu(4), net.remote_mtu(4), net.mtu(8)),
        (1380, 1380, 1380, 1380)
    );

    engine.set_target(9000).await;
    let net = engine.net();
    // Back to where each started, never above, and br- (1400 at start,
    // lowered to 1380 by us) back to 1400.
    assert_eq!(
        (net.mtu(3), net.mtu(4), net.remote_mtu(4), net.mtu(8)),
        (1500, 1500, 1500, 1400)
    );
    assert_eq!(net.mtu(6), 1500, "unmanaged port never touched");
}

#[tokio::test]
async fn enslaved_veth_gets_both_ends_and_stale_notifications_are_ignored() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    engine.net().sets();
    // dockerd: create the pair, then attach one end to the bridge.
    let host = veth(10, "vethB", 1500, None, 11, None);
    let far = veth(11, "vethC", 1500, None, 10, None);
    engine.net().add(host.clone());
    engine.net().add(far.clone());
    engine.on_link_changed(host.clone()).await;
    engine.on_link_changed(far.clone()).await;
    assert!(
        engine.net().sets().is_empty(),
        "not managed before it joins a managed bridge"
    );

    let attached = Link {
        master: Some(3),
        ..host.clone()
    };
    engine.net().add(attached.clone());
    engine.on_link_changed(attached.clone()).await;
    let mut sets = engine.net().sets();
    sets.sort();
    assert_eq!(sets, vec![("vethB".into(), 1450), ("vethC".into(), 1450)]);

    // A notification queued before our change still says 1500.
    engine.on_link_changed(attached.clone()).await;
    engine.on_link_changed(far.clone()).await;
    assert!(
        engine.net().sets().is_empty(),
        "stale notifications cause no second set"
    );

    // Our own notifications arrive; someone then raises it for real.
    engine
        .on_link_changed(Link {
            mtu: 1450,
            ..attached.clone()
        })
        .await;
    engine
        .on_link_changed(Link {
            mtu: 1500,
            ..attached
        })
        .await;
    assert_eq!(engine.net().sets(), vec![("vethB".into(), 1450)]);
}

#[tokio::test]
async fn far_end_announced_without_a_peer_is_set_together_with_the_host_end() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    engine.net().sets();
    // The kernel announces the first end of a new pair before the
    // second exists: that notification names no peer.
    let far = Link {
        peer: None,
        ..veth(11, "vethC", 1500, None, 0, None)
    };
    let host = veth(12, "vethB", 1500, None, 11, None);
    engine.net().add(veth(11, "vethC", 1500, None, 12, None));
    engine.net().add(host.clone());
    engine.on_link_changed(far).await;
    engine.on_link_changed(host.clone()).await;
    let lookups_before = *engine.net().peer_lookups.lock().unwrap();

    let attached = Link {
        master: Some(3),
        ..host
    };
    engine.net().add(attached.clone());
    engine.on_link_changed(attached).await;
    let mut sets = engine.net().sets();
    sets.sort();
    assert_eq!(sets, vec![("vethB".into(), 1450), ("vethC".into(), 1450)]);
    assert_eq!(
        *engine.net().peer_lookups.lock().unwrap(),
        lookups_before,
        "both ends set at once, without reading the far end first"
    );
}

#[tokio::test]
async fn a_far_end_checked_here_is_not_checked_again_when_it_moves() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    let host = veth(10, "vethB", 1500, Some(3), 11, None);
    engine.net().add(veth(11, "vethC", 1500, None, 10, None));
    engine.net().add(host.clone());
    engine
        .on_link_changed(veth(11, "vethC", 1500, None, 10, None))
        .await;
    engine.on_link_changed(host.clone()).await;
    engine.net().sets();
    // Moved: the far end now sits in nsid 4, which FakeNet does not
    // know; a look there would panic.
    let moved = veth(10, "vethB", 1450, Some(3), 2, Some(4));
    engine.net().add(moved.clone());
    engine.on_link_removed(11);
    engine.on_link_changed(moved).await;
    assert!(engine.net().sets().is_empty());
}

#[tokio::test]
async fn whether_a_managed_bridge_exists_follows_links_and_names() {
    let net = FakeNet::default();
    net.add(veth(2, "eth0", 1450, None, 9, Some(0)));
    net.add(link(5, "lxcbr0", LinkKind::Bridge, 1500));
    let mut engine = Engine::new(net, BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    assert!(!engine.has_managed_bridge(), "lxcbr0 is not Docker's");
    // dockerd creates docker0; later it is renamed out of management.
    let docker0 = link(3, "docker0", LinkKind::Bridge, 1500);
    engine.net().add(docker0.clone());
    engine.on_link_changed(docker0).await;
    assert!(engine.has_managed_bridge());
    engine
        .on_link_changed(link(3, "old0", LinkKind::Bridge, 1450))
        .await;
    assert!(!engine.has_managed_bridge(), "renamed out");
    // A bridge Docker names (a network with its own bridge name).
    engine
        .set_docker_bridges(HashSet::from(["lxcbr0".to_string()]))
        .await;
    assert!(engine.has_managed_bridge(), "named by Docker");
    engine.set_docker_bridges(HashSet::new()).await;
    assert!(!engine.has_managed_bridge(), "no longer named");
    // Created, then removed.
    let br = link(8, "br-0123456789ab", LinkKind::Bridge, 1500);
    engine.net().add(br.clone());
    engine.on_link_changed(br).await;
    assert!(engine.has_managed_bridge());
    engine.on_link_removed(8);
    assert!(!engine.has_managed_bridge(), "removed");
}

#[tokio::test]
async fn bridge_renamed_into_management_brings_its_ports() {
    let mut engine = Engine::new(pod(), BridgeMatcher::new(vec!["cni*".into()]), 1450);
    engine.sweep().await.unwrap();
    engine.net().sets();
    let renamed = link(5, "cni0", LinkKind::Bridge, 1500);
    engine.net().add(renamed.clone());
    engine.on_link_changed(renamed).await;
    let mut sets = engine.net().sets();
    sets.sort();
    assert_eq!(
        sets,
        vec![
            ("cni0".into(), 1450),
            ("lxcpeer".into(), 1450),
            ("lxcport".into(), 1450)
        ]
    );
}

#[tokio::test]
async fn removed_links_forget_what_was_lowered() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    engine.on_link_removed(4);
    engine.net().links.lock().unwrap().remove(&4);
    engine.set_target(1500).await;
    assert_eq!(engine.net().mtu(3), 1500);
}

/// A far end out of reach holds its host end: lowered alone, the pair
/// would drop the container's frames above the target. Once the far end
/// can be reached, both are lowered (at the next sweep, or when Docker
/// reports its sandbox).
#[tokio::test]
async fn a_host_end_waits_for_its_far_end() {
    let net = pod();
    net.unresolved.lock().unwrap().insert(4);
    let mut engine = Engine::new(net, BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    let net = engine.net();
    assert_eq!(net.mtu(3), 1450, "the bridge is lowered");
    assert_eq!(
        (net.mtu(4), net.remote_mtu(4)),
        (1500, 1500),
        "the pair stays matched"
    );
    net.unresolved.lock().unwrap().clear();
    net.sandboxes
        .lock()
        .unwrap()
        .insert("/run/docker/netns/c".into(), 1);
    engine
        .on_sandbox("c", std::path::Path::new("/run/docker/netns/c"))
        .await;
    let net = engine.net();
    assert_eq!((net.mtu(4), net.remote_mtu(4)), (1450, 1450), "both ends");
}

/// A veth pair (host end `h` on docker0, far end `f` here) made and deleted
/// at once, its clamp left in flight: the RTM_DELLINKs are read first.
async fn made_and_deleted(engine: &mut Engine<FakeNet>, h: u32, f: u32) {
    let far = veth(f, "vf", 1500, None, h, None);
    let host = veth(h, "vh", 1500, Some(3), f, None);
    engine.net().add(far.clone());
    engine.net().add(host.clone());
    engine.on_link_changed(far).await;
    engine.on_link_changed(host).await;
    engine.net().links.lock().unwrap().remove(&h);
    engine.net().links.lock().unwrap().remove(&f);
    engine.on_link_removed(f);
    engine.on_link_removed(h);
}

/// A pod makes veth pairs on its bridge and deletes them at once: with
/// clamps left in flight, the kernel's RTM_DELLINKs are read before the
/// answers come back (found by the attack review of issue 28). A clamp that
/// lands afterwards remembers nothing of links that are gone.
#[tokio::test]
async fn clamps_landing_after_their_veths_are_gone_leave_nothing_behind() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    engine.net().sets();
    let before = (
        engine.pending.len(),
        engine.peer_checked.len(),
        engine.original.len(),
    );
    let pairs = 3200u32;
    for i in 0..pairs {
        made_and_deleted(&mut engine, 1000 + 2 * i, 1001 + 2 * i).await;
        if !engine.has_room() || i + 1 == pairs {
            engine.settle().await;
        }
    }
    let links = engine.links.len();
    let (pending, checked, original) = (
        engine.pending.len(),
        engine.peer_checked.len(),
        engine.original.len(),
    );
    assert!(links < 10, "{links} links known");
    assert_eq!(
        (pending, checked, original),
        before,
        "nothing remembered of links that are gone"
    );
}

/// ... and a link the pod then makes with a gone far end's index (a pod
/// picks indexes: `ip link add ... index N`) is clamped like any other.
#[tokio::test]
async fn a_port_made_with_the_index_of_a_gone_far_end_is_clamped() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    let f = 1001u32;
    made_and_deleted(&mut engine, 1000, f).await;
    engine.settle().await;
    engine.net().sets();
    // A new veth on docker0 whose host end has ifindex 1001 (f's).
    let new_far = veth(2000, "nf", 1500, None, f, None);
    let new_host = veth(f, "nh", 1500, Some(3), 2000, None);
    engine.net().add(new_far.clone());
    engine.net().add(new_host.clone());
    engine.on_link_changed(new_far).await;
    engine.on_link_changed(new_host).await;
    engine.settle().await;
    let sets = engine.net().sets();
    assert_eq!(
        engine.net().mtu(f),
        1450,
        "the new port's host end clamped: {sets:?}"
    );
}

#[tokio::test]
async fn every_clamp_a_settle_lands_is_timed() {
    let mut engine = Engine::new(pod(), BridgeMatcher::default(), 1450);
    engine.sweep().await.unwrap();
    let _ = engine.take_timed();
    // Three containers' veths join docker0; their clamps are left in
    // flight, and one settle lands them all.
    let mut ports = Vec::new();
    for i in 0..3u32 {
        let (h, f) = (20 + 2 * i, 21 + 2 * i);
        let host = veth(h, &format!("vh{i}"), 1500, Some(3), f, None);
        engine.net().add(host.clone());
        engine
            .net()
            .add(veth(f, &format!("vf{i}"), 1500, None, h, None));
        engine
            .on_link_changed(veth(f, &format!("vf{i}"), 1500, None, h, None))
            .await;
        ports.push(host);
    }
    for host in ports {
        engine.on_link_changed(host).await;
    }
    engine.settle().await;
    let mut timed: Vec<u32> = engine.take_timed().iter().map(|t| t.ifindex).collect();
    timed.sort();
    assert_eq!(timed, vec![20, 22, 24], "each clamp with its own stages");
    assert!(engine.take_timed().is_empty(), "each is taken once");
}
