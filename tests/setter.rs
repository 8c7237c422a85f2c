//! The MTU setter's threads against a real namespace: each request is
//! answered with what the kernel said, named after the link it concerns.

use testkit as common;

use common::{ifindex, in_netns, ip, mtu, privileged, Lab};
use mtuvisor::netlink::{MtuSetter, NetlinkError};

#[test]
fn sets_in_its_own_namespace_and_names_the_link_on_failure() {
    if !privileged("sets_in_its_own_namespace_and_names_the_link_on_failure") {
        return;
    }
    let mut lab = Lab::new("set1");
    let ns = lab.netns("a");
    ip(
        &ns,
        &["link", "add", "sa", "type", "veth", "peer", "name", "sb"],
    );
    let (a, b) = (ifindex(&ns, "sa"), ifindex(&ns, "sb"));

    let results = in_netns(&ns, move || {
        let setter = MtuSetter::new(4).expect("setter");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // Both at once, as the engine sets the two ends of a new veth.
            let (ra, rb) = tokio::join!(
                setter.set(a, "sa".into(), 1400),
                setter.set(b, "sb".into(), 1380)
            );
            let gone = setter.set(999_999, "nothere".into(), 1400).await;
            let invalid = setter.set(a, "sa".into(), 40).await;
            (ra, rb, gone, invalid)
        })
    });
    let (ra, rb, gone, invalid) = results;
    ra.expect("set sa");
    rb.expect("set sb");
    assert_eq!((mtu(&ns, "sa"), mtu(&ns, "sb")), (1400, 1380));

    let gone = gone.unwrap_err();
    assert!(gone.is_gone(), "ENODEV is a vanished link: {gone}");
    assert!(matches!(
        gone,
        NetlinkError::NoSuchLink {
            ifindex: 999_999,
            ..
        }
    ));

    let invalid = invalid.unwrap_err().to_string();
    assert!(
        invalid.contains("setting MTU 40 on sa (ifindex"),
        "names the request and the link: {invalid}"
    );
    assert_eq!(mtu(&ns, "sa"), 1400, "a refused request changes nothing");
}

/// Requests queued together go out together (one datagram, up to the
/// setter's batch): each is answered on its own, a refused one in the
/// middle fails alone, and more than a batch's worth is all answered.
#[test]
fn requests_queued_together_are_each_answered() {
    if !privileged("requests_queued_together_are_each_answered") {
        return;
    }
    let mut lab = Lab::new("set2");
    let ns = lab.netns("a");
    let mut links = Vec::new();
    for n in 0..40 {
        let (a, b) = (format!("qa{n}"), format!("qb{n}"));
        ip(
            &ns,
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        links.push((ifindex(&ns, &a), a));
    }
    let asked: Vec<(u32, String, u32)> = links
        .iter()
        .enumerate()
        .map(|(n, (index, name))| {
            // Every seventh asks for an MTU the kernel refuses.
            let mtu = if n % 7 == 3 { 40 } else { 1300 + n as u32 };
            (*index, name.clone(), mtu)
        })
        .collect();
    let queued = asked.clone();
    let results = in_netns(&ns, move || {
        let setter = MtuSetter::new(1).expect("setter");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // All queued before any is awaited: one worker takes them at once.
        let answers: Vec<_> = queued
            .iter()
            .map(|(index, name, mtu)| setter.set(*index, name.as_str().into(), *mtu))
            .collect();
        rt.block_on(futures::future::join_all(answers))
    });
    for ((_, name, want), result) in asked.iter().zip(results) {
        if *want == 40 {
            let e = result.unwrap_err().to_string();
            assert!(
                e.contains(&format!("setting MTU 40 on {name} (ifindex")),
                "the refusal names its own request: {e}"
            );
            assert_eq!(mtu(&ns, name), 1500, "{name} refused, unchanged");
        } else {
            let timing = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(timing.queued <= timing.sent && timing.sent <= timing.acked);
            assert_eq!(mtu(&ns, name), *want, "{name}");
        }
    }
}
