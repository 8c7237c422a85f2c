//! Default routes as plain facts, parsed from RTM_NEWROUTE: what the
//! domain (`detect`) needs to choose the route the kernel would use and
//! the MTU it allows.

use std::fmt;

use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteType,
};
use netlink_packet_route::AddressFamily;
use serde::Serialize;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub(crate) fn address_family(self) -> AddressFamily {
        match self {
            Family::Ipv4 => AddressFamily::Inet,
            Family::Ipv6 => AddressFamily::Inet6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// The main routing table's number.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route with prefix length 0, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub table: u32,
    /// `unicast` (not `blackhole`, `unreachable`, ...).
    pub unicast: bool,
    /// The metric; lower wins.
    pub priority: u32,
    /// The interfaces it leaves by (several for a multipath route).
    pub oifs: Vec<u32>,
    /// Its `mtu` metric, when set.
    pub mtu: Option<u32>,
}

impl DefaultRoute {
    /// A default route from a route message; `None` for any other route.
    pub fn from_message(r: &RouteMessage) -> Option<DefaultRoute> {
        if r.header.destination_prefix_length != 0 {
            return None;
        }
        let mut route = DefaultRoute {
            table: u32::from(r.header.table),
            unicast: r.header.kind == RouteType::Unicast,
            priority: 0,
            oifs: Vec::new(),
            mtu: None,
        };
        for attr in &r.attributes {
            match attr {
                RouteAttribute::Table(t) => route.table = *t,
                RouteAttribute::Priority(p) => route.priority = *p,
                RouteAttribute::Oif(i) => route.oifs.push(*i),
                RouteAttribute::MultiPath(hops) => {
                    route.oifs.extend(hops.iter().map(|h| h.interface_index))
                }
                RouteAttribute::Metrics(metrics) => {
                    route.mtu = metrics.iter().find_map(|m| match m {
                        RouteMetric::Mtu(mtu) if *mtu > 0 => Some(*mtu),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(prefix: u8, table: u8, oif: u32, metric: u32, mtu: Option<u32>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.destination_prefix_length = prefix;
        r.header.table = table;
        r.header.kind = RouteType::Unicast;
        r.attributes.push(RouteAttribute::Oif(oif));
        r.attributes.push(RouteAttribute::Priority(metric));
        if let Some(m) = mtu {
            r.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(m)]));
        }
        r
    }

    #[test]
    fn a_default_route_is_read_whole_and_others_are_not_default_routes() {
        assert_eq!(
            DefaultRoute::from_message(&message(24, 254, 5, 0, None)),
            None
        );
        let r = DefaultRoute::from_message(&message(0, 254, 8, 100, Some(1400))).unwrap();
        assert_eq!(
            r,
            DefaultRoute {
                table: MAIN_TABLE,
                unicast: true,
                priority: 100,
                oifs: vec![8],
                mtu: Some(1400),
            }
        );
        // A table above 255 is only in the RTA_TABLE attribute.
        let mut big = message(0, 252, 9, 0, None);
        big.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(DefaultRoute::from_message(&big).unwrap().table, 1000);
    }
}
