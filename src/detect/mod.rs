//! Finding the outer MTU: the MTU that packets leaving the pod can carry;
//! and from it (`target.rs`) the target MTU and what decided it.

mod target;

use std::fmt;

use serde::Serialize;

pub use crate::netlink::Family;
use crate::netlink::{DefaultRoute, NetlinkError, RouteTable, MAIN_TABLE};
pub use target::{Origin, TargetSource};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "no default route in this network namespace (neither IPv4 nor IPv6), so the outer MTU \
         is unknown; pass --mtu N (or set MTUVISOR_MTU) to give it"
    )]
    NoDefaultRoute,
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// Which number bounded the MTU of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The MTU of the default route's interface.
    LinkMtu,
    /// The `mtu` attribute of the default route itself (set by some CNIs).
    RouteMtu,
}

/// The outer MTU as seen through one family's default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyMtu {
    pub family: Family,
    pub interface: String,
    pub ifindex: u32,
    pub link_mtu: u32,
    pub route_mtu: Option<u32>,
    pub mtu: u32,
    pub bound: Bound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OuterMtu {
    pub mtu: u32,
    pub interface: String,
    /// e.g. `ipv4 link_mtu`, `ipv6 route_mtu`.
    pub source: String,
    pub ipv4: Option<FamilyMtu>,
    pub ipv6: Option<FamilyMtu>,
}

impl OuterMtu {
    /// The interfaces whose MTU the result depends on.
    pub fn ifindexes(&self) -> Vec<u32> {
        self.families().map(|f| f.ifindex).collect()
    }

    pub fn families(&self) -> impl Iterator<Item = &FamilyMtu> {
        self.ipv4.iter().chain(self.ipv6.iter())
    }

    /// Combines per-family results: the smaller MTU wins, IPv4 on a tie.
    pub fn from_families(ipv4: Option<FamilyMtu>, ipv6: Option<FamilyMtu>) -> Option<OuterMtu> {
        let winner = match (&ipv4, &ipv6) {
            (Some(v4), Some(v6)) => {
                if v6.mtu < v4.mtu {
                    v6
                } else {
                    v4
                }
            }
            (Some(only), None) | (None, Some(only)) => only,
            (None, None) => return None,
        };
        let bound = match winner.bound {
            Bound::LinkMtu => "link_mtu",
            Bound::RouteMtu => "route_mtu",
        };
        Some(OuterMtu {
            mtu: winner.mtu,
            interface: winner.interface.clone(),
            source: format!("{} {bound}", serde_family(winner.family)),
            ipv4: ipv4.clone(),
            ipv6: ipv6.clone(),
        })
    }
}

fn serde_family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

impl fmt::Display for OuterMtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "outer MTU: {} on {}", self.mtu, self.interface)?;
        for family in [Family::Ipv4, Family::Ipv6] {
            let found = self.families().find(|m| m.family == family);
            match found {
                None => writeln!(f, "  {family}: no default route")?,
                Some(m) => {
                    let route = m.route_mtu.map_or("none".to_string(), |r| r.to_string());
                    let from = match m.bound {
                        Bound::LinkMtu => "the link MTU",
                        Bound::RouteMtu => "the route's mtu attribute",
                    };
                    writeln!(
                        f,
                        "  {family}: default route via {} (link MTU {}, route mtu {route}) -> {} from {from}",
                        m.interface, m.link_mtu, m.mtu
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The outer MTU of the namespace `net` reads: the default route each
/// family would use, bounded by its interface's MTU and its own `mtu`.
pub async fn outer_mtu(net: &impl RouteTable) -> Result<OuterMtu, DetectError> {
    let ipv4 = family_mtu(net, Family::Ipv4).await?;
    let ipv6 = family_mtu(net, Family::Ipv6).await?;
    OuterMtu::from_families(ipv4, ipv6).ok_or(DetectError::NoDefaultRoute)
}

async fn family_mtu(
    net: &impl RouteTable,
    family: Family,
) -> Result<Option<FamilyMtu>, NetlinkError> {
    let routes = net.default_routes(family).await?;
    let Some(route) = pick_default_route(&routes) else {
        return Ok(None);
    };
    let mut best: Option<FamilyMtu> = None;
    for &oif in &route.oifs {
        let Some(link) = net.link(oif).await? else {
            continue;
        };
        let (mtu, bound) = match route.mtu {
            Some(r) if r < link.mtu => (r, Bound::RouteMtu),
            _ => (link.mtu, Bound::LinkMtu),
        };
        let candidate = FamilyMtu {
            family,
            interface: link.name.to_string(),
            ifindex: link.index,
            link_mtu: link.mtu,
            route_mtu: route.mtu,
            mtu,
            bound,
        };
        if best.as_ref().is_none_or(|b| candidate.mtu < b.mtu) {
            best = Some(candidate);
        }
    }
    Ok(best)
}

/// The default route the kernel would use: main table, unicast, leaving
/// by some interface, lowest metric.
pub fn pick_default_route(routes: &[DefaultRoute]) -> Option<&DefaultRoute> {
    routes
        .iter()
        .filter(|r| r.unicast && r.table == MAIN_TABLE && !r.oifs.is_empty())
        .min_by_key(|r| r.priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(family: Family, mtu: u32, bound: Bound) -> FamilyMtu {
        FamilyMtu {
            family,
            interface: "eth0".into(),
            ifindex: 2,
            link_mtu: 1450,
            route_mtu: None,
            mtu,
            bound,
        }
    }

    #[test]
    fn smaller_family_wins() {
        let outer = OuterMtu::from_families(
            Some(fam(Family::Ipv4, 1450, Bound::LinkMtu)),
            Some(fam(Family::Ipv6, 1380, Bound::RouteMtu)),
        )
        .unwrap();
        assert_eq!(outer.mtu, 1380);
        assert_eq!(outer.source, "ipv6 route_mtu");
    }

    #[test]
    fn no_route_no_mtu() {
        assert_eq!(OuterMtu::from_families(None, None), None);
    }

    fn route(table: u32, oif: u32, metric: u32, mtu: Option<u32>) -> DefaultRoute {
        DefaultRoute {
            table,
            unicast: true,
            priority: metric,
            oifs: vec![oif],
            mtu,
        }
    }

    #[test]
    fn picks_lowest_metric_default_in_main_table() {
        let blackhole = DefaultRoute {
            unicast: false,
            ..route(254, 4, 0, None)
        };
        let routes = vec![
            blackhole,
            route(100, 6, 0, None),
            route(254, 7, 200, None),
            route(254, 8, 100, Some(1400)),
        ];
        let picked = pick_default_route(&routes).unwrap();
        assert_eq!(picked.oifs, vec![8]);
        assert_eq!(picked.mtu, Some(1400));
    }
}
