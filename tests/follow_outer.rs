//! The target follows the outer MTU at run time.

use testkit as common;

use std::time::Duration;

use common::{docker_style_veth, eventually, ip, mtu, privileged, Lab};

#[test]
fn managed_links_follow_the_outer_mtu_down_and_back_up() {
    if !privileged("managed_links_follow_the_outer_mtu_down_and_back_up") {
        return;
    }
    let mut lab = Lab::new("fo");
    let (pod, router) = lab.pod(1450);
    let c = lab.netns("c");
    let c2 = lab.netns("c2");
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    docker_style_veth(&pod, "docker0", "vethf", &c);
    // A port that starts below the target: lowered with it, but never raised
    // above where it started.
    docker_style_veth(&pod, "docker0", "vethlow", &c2);
    ip(&pod, &["link", "set", "vethlow", "mtu", "1420"]);
    ip(&c2, &["link", "set", "eth0", "mtu", "1420"]);
    // Set explicitly, as dockerd does: a bridge whose MTU was never set
    // follows its smallest port.
    ip(&pod, &["link", "set", "docker0", "mtu", "1500"]);
    let managed = |expect: u32, low: u32| {
        let pod = pod.clone();
        let (c, c2) = (c.clone(), c2.clone());
        move || {
            mtu(&pod, "docker0") == expect
                && mtu(&pod, "vethf") == expect
                && mtu(&c, "eth0") == expect
                && mtu(&pod, "vethlow") == low
                && mtu(&c2, "eth0") == low
        }
    };

    lab.watch(&pod, &[], &[]);
    assert!(eventually(Duration::from_secs(2), managed(1450, 1420)));

    ip(&pod, &["link", "set", "eth0", "mtu", "1400"]);
    ip(&router, &["link", "set", "down0", "mtu", "1400"]);
    assert!(
        eventually(Duration::from_secs(2), managed(1400, 1400)),
        "lowered to 1400 within 2 s"
    );

    ip(&pod, &["link", "set", "eth0", "mtu", "1450"]);
    assert!(
        eventually(Duration::from_secs(2), managed(1450, 1420)),
        "raised back within 2 s"
    );

    // A route mtu below the link moves the target too.
    ip(
        &pod,
        &[
            "route",
            "change",
            "default",
            "via",
            "192.0.2.1",
            "mtu",
            "1380",
        ],
    );
    assert!(
        eventually(Duration::from_secs(2), managed(1380, 1380)),
        "route mtu 1380 followed"
    );
    ip(&pod, &["route", "change", "default", "via", "192.0.2.1"]);
    assert!(eventually(Duration::from_secs(2), managed(1450, 1420)));
}

#[test]
fn links_not_lowered_by_mtuvisor_are_never_raised() {
    if !privileged("links_not_lowered_by_mtuvisor_are_never_raised") {
        return;
    }
    let mut lab = Lab::new("fo2");
    let (pod, _) = lab.pod(1400);
    ip(&pod, &["link", "add", "docker0", "type", "bridge"]);
    ip(&pod, &["link", "set", "docker0", "mtu", "1300"]);
    lab.watch(&pod, &[], &[]);
    std::thread::sleep(Duration::from_millis(300));
    ip(&pod, &["link", "set", "eth0", "mtu", "1450"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mtu(&pod, "docker0"), 1300);
}
