//! The target MTU and why it is what it is: the configured MTU or the
//! outer MTU (the default route's interface, or the route's own `mtu`),
//! lowered to the narrowest path measured (`path_probe`), never above the
//! ceiling (`mtu_ceiling`), never below what the namespace can be given
//! (576, or 1280 where IPv6 is routed).

use super::{Bound, OuterMtu};
use crate::config::{MtuSetting, Settings, MIN_IPV6_MTU, MIN_MTU};

/// What decided the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `mtu = N`.
    Fixed,
    /// The MTU of the default route's interface.
    Link,
    /// The `mtu` attribute of the default route.
    Route,
    /// The narrowest path `path_probe` measured.
    Probe,
    /// `mtu_ceiling` (a jumbo-frame pod).
    Ceiling,
    /// The lowest MTU the namespace can be given.
    Floor,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Fixed => "fixed",
            Origin::Link => "link",
            Origin::Route => "route",
            Origin::Probe => "probe",
            Origin::Ceiling => "ceiling",
            Origin::Floor => "floor",
        }
    }

    /// What it means, for a log line or a report.
    pub fn explain(self) -> &'static str {
        match self {
            Origin::Fixed => "target MTU fixed by configuration",
            Origin::Link => "target MTU follows the outer MTU",
            Origin::Route => "target MTU follows the default route's mtu",
            Origin::Probe => "target MTU is the narrowest path measured (path_probe)",
            Origin::Ceiling => {
                "target MTU held at mtu_ceiling (the outer MTU is above it; raise mtu_ceiling \
                 to use it)"
            }
            Origin::Floor => {
                "target MTU at the floor (576, or 1280 where IPv6 is routed): the outer MTU is \
                 below it"
            }
        }
    }

    pub const ALL: [Origin; 6] = [
        Origin::Fixed,
        Origin::Link,
        Origin::Route,
        Origin::Probe,
        Origin::Ceiling,
        Origin::Floor,
    ];
}

/// Where the target MTU comes from. Either way the outer MTU's last
/// reading is kept: its interfaces are the pod's uplink, never managed.
#[derive(Debug, Clone)]
pub struct TargetSource {
    /// `Some`: fixed by configuration; `None`: follows the outer MTU.
    fixed: Option<u32>,
    outer: Option<OuterMtu>,
    /// The narrowest path measured, if any.
    probed: Option<u32>,
    ceiling: u32,
}

/// The lowest target the outer MTU may give: what IPv6 needs where it is
/// routed, else the IPv4 minimum. A pod that gives its own default route
/// `mtu 300` gets this, not 300.
fn floor(outer: &OuterMtu) -> u32 {
    if outer.ipv6.is_some() {
        MIN_IPV6_MTU
    } else {
        MIN_MTU
    }
}

impl TargetSource {
    pub fn fixed(mtu: u32, outer: Option<OuterMtu>, ceiling: u32) -> TargetSource {
        TargetSource {
            fixed: Some(mtu),
            outer,
            probed: None,
            ceiling,
        }
    }

    pub fn follow(outer: OuterMtu, ceiling: u32) -> TargetSource {
        TargetSource {
            fixed: None,
            outer: Some(outer),
            probed: None,
            ceiling,
        }
    }

    /// What `settings` make of `outer` (for `detect` and `doctor`).
    pub fn configured(settings: &Settings, outer: OuterMtu) -> TargetSource {
        match settings.mtu {
            MtuSetting::Fixed(n) => TargetSource::fixed(n, Some(outer), settings.mtu_ceiling),
            MtuSetting::Auto => TargetSource::follow(outer, settings.mtu_ceiling),
        }
    }

    /// The target and what decided it.
    pub fn decide(&self) -> (u32, Origin) {
        let (mut mtu, mut origin) = match (self.fixed, &self.outer) {
            (Some(n), _) => (n, Origin::Fixed),
            (None, Some(o)) => (
                o.mtu,
                match o.families().find(|f| f.mtu == o.mtu).map(|f| f.bound) {
                    Some(Bound::RouteMtu) => Origin::Route,
                    _ => Origin::Link,
                },
            ),
            (None, None) => unreachable!("a followed target always has an outer reading"),
        };
        if let Some(p) = self.probed.filter(|p| *p < mtu) {
            (mtu, origin) = (p, Origin::Probe);
        }
        if mtu > self.ceiling {
            (mtu, origin) = (self.ceiling, Origin::Ceiling);
        }
        if let (None, Some(o)) = (self.fixed, &self.outer) {
            if mtu < floor(o) {
                (mtu, origin) = (floor(o), Origin::Floor);
            }
        }
        (mtu, origin)
    }

    pub fn target(&self) -> u32 {
        self.decide().0
    }

    /// The MTU the path probe is bounded by: the target before any probe.
    pub fn probe_ceiling(&self) -> u32 {
        let unprobed = TargetSource {
            probed: None,
            ..self.clone()
        };
        unprobed.target()
    }

    pub fn probed(&self) -> Option<u32> {
        self.probed
    }

    pub fn ceiling(&self) -> u32 {
        self.ceiling
    }

    pub fn follows_outer(&self) -> bool {
        self.fixed.is_none()
    }

    pub fn outer(&self) -> Option<&OuterMtu> {
        self.outer.as_ref()
    }

    /// The outer MTU below its floor, when it is (for one warning).
    pub fn outer_below_floor(&self) -> Option<(u32, u32)> {
        let o = self.outer.as_ref().filter(|_| self.fixed.is_none())?;
        (o.mtu < floor(o)).then(|| (o.mtu, floor(o)))
    }

    pub fn set_outer(&mut self, outer: OuterMtu) {
        self.outer = Some(outer);
    }

    pub fn set_probed(&mut self, probed: Option<u32>) {
        self.probed = probed;
    }

    pub fn depends_on(&self, ifindex: u32) -> bool {
        self.outer
            .as_ref()
            .is_some_and(|o| o.ifindexes().contains(&ifindex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Family, FamilyMtu};

    fn outer(link: u32, route: Option<u32>, v6: bool) -> OuterMtu {
        let mtu = route.map_or(link, |r| r.min(link));
        let fam = |family| FamilyMtu {
            family,
            interface: "eth0".into(),
            ifindex: 2,
            link_mtu: link,
            route_mtu: route,
            mtu,
            bound: if route.is_some_and(|r| r < link) {
                Bound::RouteMtu
            } else {
                Bound::LinkMtu
            },
        };
        OuterMtu::from_families(Some(fam(Family::Ipv4)), v6.then(|| fam(Family::Ipv6))).unwrap()
    }

    #[test]
    fn the_outer_mtu_by_its_bound() {
        let t = TargetSource::follow(outer(1450, None, false), 1500);
        assert_eq!(t.decide(), (1450, Origin::Link));
        let t = TargetSource::follow(outer(1500, Some(1400), false), 1500);
        assert_eq!(t.decide(), (1400, Origin::Route));
    }

    #[test]
    fn a_narrower_path_lowers_it_and_a_wider_one_does_not_raise_it() {
        let mut t = TargetSource::follow(outer(1500, None, false), 1500);
        t.set_probed(Some(1400));
        assert_eq!(t.decide(), (1400, Origin::Probe));
        assert_eq!(t.probe_ceiling(), 1500);
        t.set_probed(Some(9000));
        assert_eq!(t.decide(), (1500, Origin::Link));
        t.set_probed(None);
        assert_eq!(
            t.decide(),
            (1500, Origin::Link),
            "a failed probe: the outer MTU"
        );
    }

    #[test]
    fn a_jumbo_pod_is_held_to_the_ceiling_unless_raised() {
        let t = TargetSource::follow(outer(9001, None, false), 1500);
        assert_eq!(t.decide(), (1500, Origin::Ceiling));
        let t = TargetSource::follow(outer(9001, None, false), 9001);
        assert_eq!(t.decide(), (9001, Origin::Link));
        assert_eq!(t.probe_ceiling(), 9001);
    }

    #[test]
    fn never_below_what_the_namespace_can_carry() {
        let t = TargetSource::follow(outer(1450, Some(300), false), 1500);
        assert_eq!(t.decide(), (576, Origin::Floor));
        assert_eq!(t.outer_below_floor(), Some((300, 576)));
        let t = TargetSource::follow(outer(1450, Some(1000), true), 1500);
        assert_eq!(t.decide(), (1280, Origin::Floor));
    }

    #[test]
    fn a_fixed_mtu_is_lowered_by_a_probe_only() {
        let mut t = TargetSource::fixed(1400, Some(outer(1500, None, false)), 1500);
        assert_eq!(t.decide(), (1400, Origin::Fixed));
        t.set_probed(Some(1380));
        assert_eq!(t.decide(), (1380, Origin::Probe));
        assert!(!t.follows_outer());
    }
}
