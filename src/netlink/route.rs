//! Default routes as plain facts, decoded from RTM_NEWROUTE (`wire.rs`):
//! what the domain (`detect`) needs to choose the route the kernel would
//! use and the MTU it allows.

use std::fmt;

use serde::Serialize;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
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
pub const MAIN_TABLE: u32 = 254;

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
