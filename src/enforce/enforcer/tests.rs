//! The loop's handlers against the fake: what each kind of event does
//! to the links and to the enforcer's metrics.

use std::collections::HashSet;
use std::path::PathBuf;

use tokio::sync::watch;

use super::*;
use crate::metrics::Registry;
use crate::netlink::fake::{link, veth, FakeNet};
use crate::netlink::LinkKind;

/// eth0 (outer, 1450) and docker0 at 1500 with one port whose far end
/// is in a container (nsid 1).
fn pod() -> FakeNet {
    let net = FakeNet::default();
    net.add(veth(2, "eth0", 1450, None, 9, Some(0)));
    net.add(link(3, "docker0", LinkKind::Bridge, 1500));
    net.add(veth(4, "vethA", 1500, Some(3), 2, Some(1)));
    net.remote.lock().unwrap().insert(4, 1500);
    *net.outer.lock().unwrap() = Some(("eth0".into(), 2, 1450));
    net
}

struct Loop {
    enforcer: Enforcer<FakeNet>,
    registry: Registry,
    _ready: watch::Sender<bool>,
}

impl Loop {
    async fn start(net: FakeNet) -> Loop {
        let registry = Registry::default();
        let (ready, rx) = watch::channel(true);
        let metrics = registry.add(&[], rx, crate::netlink::Quarantine::new("self"));
        let last = crate::detect::outer_mtu(&net).await.unwrap();
        let mut enforcer = Enforcer::new(
            net,
            &Settings::default(),
            TargetSource::follow(last, 1500),
            None,
            metrics,
            false,
        );
        enforcer.start().await.unwrap();
        Loop {
            enforcer,
            registry,
            _ready: ready,
        }
    }

    fn net(&self) -> &FakeNet {
        self.enforcer.engine.net()
    }

    /// Runs what events asked for and is due (re-reads, sweeps).
    async fn settle(&mut self) {
        while let Some(due) = self.enforcer.next_due() {
            tokio::time::sleep_until(due.into()).await;
            self.enforcer.on_due().await;
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.registry.render();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

#[tokio::test]
async fn start_sweeps_and_says_so_in_the_metrics() {
    let l = Loop::start(pod()).await;
    assert_eq!(l.net().mtu(3), 1450);
    assert_eq!(l.net().remote_mtu(4), 1450);
    assert_eq!(l.metric("mtuvisor_target_mtu"), 1450.0);
    assert_eq!(l.metric("mtuvisor_sweeps_total"), 1.0);
    // docker0, vethA and vethA's far end.
    assert_eq!(l.metric("mtuvisor_managed_links"), 3.0);
    // docker0, vethA and its far end.
    assert_eq!(l.metric("mtuvisor_mtu_changes_total"), 3.0);
}

#[tokio::test]
async fn a_notification_of_a_new_port_clamps_both_ends_and_is_timed() {
    let mut l = Loop::start(pod()).await;
    l.net().sets();
    // dockerd's order: the pair is created here, one end attached.
    let far = veth(11, "vethB-far", 1500, None, 10, None);
    let host = veth(10, "vethB", 1500, Some(3), 11, None);
    l.net().add(far.clone());
    l.net().add(host.clone());
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(far))
        .await;
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(host))
        .await;
    assert_eq!((l.net().mtu(10), l.net().mtu(11)), (1450, 1450));
    assert_eq!(l.metric("mtuvisor_mtu_changes_total"), 5.0);
    assert_eq!(l.metric("mtuvisor_clamp_seconds_count"), 1.0);
}

/// A container's end moved into a namespace that got its nsid just after
/// the last search (searches run at most once a second): both ends wait,
/// and a sweep reaches them once the search may run again, not at the
/// next reconcile (30 s).
#[tokio::test]
async fn a_far_end_not_looked_for_yet_is_reached_when_the_search_may_run() {
    let mut l = Loop::start(pod()).await;
    let host = veth(12, "vethC", 1500, Some(3), 2, Some(2));
    l.net().add(host.clone());
    l.net().remote.lock().unwrap().insert(12, 1500);
    l.net().unsearched.lock().unwrap().insert(12);
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(host))
        .await;
    assert_eq!(
        (l.net().mtu(12), l.net().remote_mtu(12)),
        (1500, 1500),
        "the host end waits for its far end"
    );
    let due = l.enforcer.next_due().expect("a sweep is due");
    assert!(due <= Instant::now() + Duration::from_millis(50));
    l.settle().await;
    assert_eq!((l.net().mtu(12), l.net().remote_mtu(12)), (1450, 1450));
    assert_eq!(l.metric("mtuvisor_sweeps_total"), 2.0);
    assert_eq!(l.enforcer.next_due(), None, "nothing more is due");
}

#[tokio::test]
async fn a_docker_update_names_a_bridge_to_manage_and_a_sandbox_to_check() {
    let net = pod();
    // A Docker network whose bridge has a name of the user's choosing.
    net.add(link(20, "ci-net", LinkKind::Bridge, 1500));
    let mut l = Loop::start(net).await;
    assert_eq!(l.net().mtu(20), 1500, "not Docker's name: not managed yet");
    let names: HashSet<String> = ["ci-net".to_string()].into();
    l.enforcer
        .on_docker_update(DockerUpdate::Bridges(names))
        .await;
    assert_eq!(l.net().mtu(20), 1450);

    // A container started: Docker names its sandbox. Its far end was
    // checked there already (by the sweep), so the sandbox is only
    // learnt, not entered again: entering waits behind dockerd's own
    // RTNL work.
    let sandbox = PathBuf::from("/run/docker/netns/abc");
    l.net().sandboxes.lock().unwrap().insert(sandbox.clone(), 1);
    let lookups = *l.net().peer_lookups.lock().unwrap();
    l.enforcer
        .on_docker_update(DockerUpdate::Sandbox {
            container: "c1".into(),
            netns: sandbox,
        })
        .await;
    assert_eq!(*l.net().peer_lookups.lock().unwrap(), lookups);
    assert_eq!(l.net().remote_mtu(4), 1450);
    l.enforcer.on_docker_update(DockerUpdate::Resynced).await;
    assert_eq!(l.metric("mtuvisor_docker_resyncs_total"), 1.0);
}

#[tokio::test]
async fn a_tick_sweeps_what_changed_unseen() {
    let mut l = Loop::start(pod()).await;
    // Raised by someone else, and the notification lost.
    l.net().links.lock().unwrap().get_mut(&3).unwrap().mtu = 1500;
    l.enforcer.on_tick().await;
    assert_eq!(l.net().mtu(3), 1450);
    assert_eq!(l.metric("mtuvisor_sweeps_total"), 2.0);
    l.enforcer.on_net_event_settled(NetEvent::Overrun).await;
    l.settle().await;
    assert_eq!(l.metric("mtuvisor_netlink_overruns_total"), 1.0);
    assert_eq!(l.metric("mtuvisor_sweeps_total"), 3.0);
    // A burst of overruns is one sweep, not one each.
    for _ in 0..5 {
        l.enforcer.on_net_event_settled(NetEvent::Overrun).await;
    }
    l.settle().await;
    assert_eq!(l.metric("mtuvisor_netlink_overruns_total"), 6.0);
    assert_eq!(l.metric("mtuvisor_sweeps_total"), 4.0);
}

#[tokio::test]
async fn a_lower_outer_mtu_moves_the_target_and_the_links() {
    let mut l = Loop::start(pod()).await;
    *l.net().outer.lock().unwrap() = Some(("eth0".into(), 2, 1400));
    l.enforcer
        .on_net_event_settled(NetEvent::DefaultRouteChanged)
        .await;
    l.settle().await;
    assert_eq!(l.metric("mtuvisor_target_mtu"), 1400.0);
    assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1400, 1400));
    assert_eq!(l.net().remote_mtu(4), 1400);
    // And back up: only to where they were before mtuvisor, which is
    // above 1450 here; never above the target.
    *l.net().outer.lock().unwrap() = Some(("eth0".into(), 2, 1450));
    let mut eth0 = l.net().links.lock().unwrap()[&2].clone();
    eth0.mtu = 1450;
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(eth0))
        .await;
    l.settle().await;
    assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1450, 1450));
    assert_eq!(l.metric("mtuvisor_target_mtu"), 1450.0);
}

/// A reading of the path prober: `path` toward one target, bounded by
/// `ceiling`; `None`: no answer.
fn reading(ceiling: u32, path: Option<u32>) -> PathReading {
    use crate::pmtu::{Outcome, ProbeResult};
    PathReading {
        ceiling,
        results: vec![ProbeResult {
            target: "registry.example".into(),
            address: None,
            method: None,
            outcome: match path {
                Some(p) if p < ceiling => Outcome::Bottleneck,
                Some(_) => Outcome::Clear,
                None => Outcome::Unreachable,
            },
            path_mtu: path,
            black_hole: false,
            reported_mtu: None,
            sizes_tried: 1,
            took_ms: 1,
            note: "no answer".into(),
        }],
    }
}

#[tokio::test]
async fn a_narrower_path_lowers_the_target_and_a_clear_one_lifts_it_again() {
    let mut l = Loop::start(pod()).await;
    assert_eq!(l.enforcer.probe_ceiling(), 1450, "bounded by the outer MTU");
    assert_eq!(l.metric("mtuvisor_target_source{source=\"link\"}"), 1.0);
    l.enforcer.on_path_reading(&reading(1450, Some(1400))).await;
    assert_eq!(l.metric("mtuvisor_target_mtu"), 1400.0);
    assert_eq!(l.metric("mtuvisor_target_source{source=\"probe\"}"), 1.0);
    assert_eq!(l.metric("mtuvisor_target_source{source=\"link\"}"), 0.0);
    assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1400, 1400));
    assert_eq!(l.net().remote_mtu(4), 1400);
    assert_eq!(
        l.enforcer.probe_ceiling(),
        1450,
        "the probe is not bounded by itself"
    );
    // Nothing answered: the last measurement stands.
    l.enforcer.on_path_reading(&reading(1450, None)).await;
    assert_eq!(l.net().mtu(3), 1400);
    // The bottleneck is gone: back to the outer MTU, no higher.
    l.enforcer.on_path_reading(&reading(1450, Some(1450))).await;
    assert_eq!((l.net().mtu(3), l.net().mtu(4)), (1450, 1450));
    assert_eq!(l.metric("mtuvisor_target_source{source=\"link\"}"), 1.0);
    // A reading bounded higher (node: mtu_ceiling) that is still wider
    // than this pod's outer MTU changes nothing.
    l.enforcer.on_path_reading(&reading(1500, Some(1480))).await;
    assert_eq!(l.metric("mtuvisor_target_mtu"), 1450.0);
    assert_eq!(l.metric("mtuvisor_target_source{source=\"link\"}"), 1.0);
}

#[tokio::test]
async fn a_route_mtu_below_the_floor_gives_the_floor() {
    let mut l = Loop::start(pod()).await;
    // A pod that set `mtu 300` on its own default route.
    *l.net().outer.lock().unwrap() = Some(("eth0".into(), 2, 300));
    l.enforcer
        .on_net_event_settled(NetEvent::DefaultRouteChanged)
        .await;
    l.settle().await;
    assert_eq!(l.metric("mtuvisor_target_mtu"), 576.0);
    assert_eq!((l.net().mtu(3), l.net().mtu(4)), (576, 576));
}

#[tokio::test]
async fn the_bridge_the_default_route_leaves_by_is_never_managed() {
    // A pod that enslaved its eth0 to a bridge it named docker0 and
    // routes through that bridge: eth0's far end is the node's.
    let net = FakeNet::default();
    net.add(link(3, "docker0", LinkKind::Bridge, 1500));
    net.add(veth(2, "eth0", 1500, Some(3), 9, Some(0)));
    net.remote.lock().unwrap().insert(2, 1500);
    *net.outer.lock().unwrap() = Some(("docker0".into(), 3, 600));
    let mut l = Loop::start(net).await;
    assert_eq!(l.net().mtu(3), 1500, "the uplink bridge is not touched");
    assert_eq!(l.net().mtu(2), 1500, "nor its port");
    assert_eq!(l.net().remote_mtu(2), 1500, "nor the node's end");
    assert_eq!(l.metric("mtuvisor_managed_links"), 0.0);
    // A real Docker bridge beside it is managed, at the pod's MTU.
    let br = link(5, "br-0123456789ab", LinkKind::Bridge, 1500);
    l.net().add(br.clone());
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(br))
        .await;
    assert_eq!(l.net().mtu(5), 600);
    // The route moves to eth0 (out of the bridge): docker0 is Docker's
    // again, and its port is no longer the uplink.
    *l.net().outer.lock().unwrap() = Some(("eth1".into(), 7, 1450));
    l.enforcer
        .on_net_event_settled(NetEvent::DefaultRouteChanged)
        .await;
    l.settle().await;
    assert_eq!(l.net().mtu(3), 1450);
}

#[tokio::test]
async fn a_far_end_in_a_fenced_namespace_is_left_alone_and_said_once() {
    let net = pod();
    net.fenced.lock().unwrap().insert(4);
    let mut l = Loop::start(net).await;
    assert_eq!(l.net().remote_mtu(4), 1500);
    assert_eq!(l.metric("mtuvisor_mtu_change_failures_total"), 0.0);
    let lookups = *l.net().peer_lookups.lock().unwrap();
    l.enforcer.on_tick().await;
    assert_eq!(
        *l.net().peer_lookups.lock().unwrap(),
        lookups,
        "not tried again while its peer stays the same"
    );
}

#[tokio::test]
async fn a_far_end_gone_with_its_container_is_not_a_failure() {
    let net = pod();
    net.unresolved.lock().unwrap().insert(4);
    let mut l = Loop::start(net).await;
    l.enforcer.on_tick().await;
    assert_eq!(l.metric("mtuvisor_mtu_change_failures_total"), 0.0);
}

#[tokio::test]
async fn with_mtu_enforcement_off_links_are_followed_and_never_changed() {
    let net = FakeNet::default();
    net.add(veth(2, "eth0", 1450, None, 9, Some(0)));
    *net.outer.lock().unwrap() = Some(("eth0".into(), 2, 1450));
    let registry = Registry::default();
    let (_ready, rx) = watch::channel(true);
    let metrics = registry.add(&[], rx, crate::netlink::Quarantine::new("self"));
    let last = crate::detect::outer_mtu(&net).await.unwrap();
    let mut settings = Settings::default();
    settings.enforce_mtu = false;
    let mut enforcer = Enforcer::new(
        net,
        &settings,
        TargetSource::follow(last, 1500),
        None,
        metrics,
        true,
    );
    enforcer.start().await.unwrap();
    assert!(!enforcer.engine.has_managed_bridge());
    let docker0 = link(3, "docker0", LinkKind::Bridge, 1500);
    enforcer.engine.net().add(docker0.clone());
    enforcer
        .on_net_event_settled(NetEvent::LinkChanged(docker0))
        .await;
    assert!(enforcer.engine.has_managed_bridge(), "Docker is seen");
    assert_eq!(enforcer.engine.net().mtu(3), 1500, "and not changed");
    assert!(enforcer.engine.net().sets().is_empty());
}

#[tokio::test]
async fn links_past_the_limit_are_counted_and_left_alone() {
    let net = pod();
    for i in 0..MAX_LINKS as u32 {
        net.add(link(
            100 + i,
            &format!("dummy{i}"),
            LinkKind::Other("dummy".into()),
            1500,
        ));
    }
    let mut l = Loop::start(net).await;
    // pod() has 3 links, so 3 dummies are past the limit.
    assert_eq!(l.metric("mtuvisor_links_left_out"), 3.0);
    // A new Docker veth while full: not followed.
    let late = veth(5000, "vethLate", 1500, Some(3), 5001, None);
    l.net().add(late.clone());
    l.enforcer
        .on_net_event_settled(NetEvent::LinkChanged(late))
        .await;
    assert_eq!(l.net().mtu(5000), 1500);
}
