//! The active path-MTU probe: how large a packet gets from this namespace
//! to a target and back, beyond `eth0`.
//!
//! IPv4 or IPv6, as the target resolves. ICMP first (`icmp.rs`): echo
//! requests with "don't fragment", binary search of the packet size
//! between a floor (1280, the IPv6 minimum, unless asked lower for IPv4)
//! and a ceiling (the outer MTU). A size fits when its echo reply comes
//! back. A router that cannot forward it either says so ("fragmentation
//! needed", "packet too big") or stays silent: a black hole. TCP when ICMP
//! echo gets no answer at all (filtered) and a port is given (`tcp.rs`).
//!
//! Used by `doctor --probe` and by enforcement's `path_probe`.
//!
//! Bounded: at most `2 + ceil(log2(ceiling - floor))` sizes per method,
//! each waiting at most the timeout. A size that gets no echo reply waits
//! eight times the slowest reply seen so far (at least 250 ms), not the
//! whole timeout: a black hole's silent sizes are what a probe costs.

mod icmp;
mod search;
mod sys;
mod tcp;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use icmp::Icmp;
use search::search;
pub use search::{Method, Outcome, ProbeResult};
use tcp::tcp_fits;

/// No IPv6 link carries less (RFC 8200), and the probe's default floor.
pub const IPV6_MIN_MTU: u32 = 1280;
/// The least a size waits for its echo reply once one has come back.
const MIN_WAIT: Duration = Duration::from_millis(250);
/// How many round trips a size waits for its echo reply.
const RTTS_WAITED: u32 = 8;

/// A target as given: `HOST`, `HOST:PORT`, an IPv6 address, or
/// `[IPv6]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub shown: String,
    pub host: String,
    pub port: Option<u16>,
}

impl Target {
    /// Parses a target; bad input names what is wrong (not the setting:
    /// the caller does).
    pub fn parse(text: &str) -> Result<Target, String> {
        let port_of = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text:?}: the port must be 1-65535"))
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: expected [IPv6]:PORT"))?;
            let port = match after {
                "" => None,
                p => Some(port_of(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{text:?}: expected [IPv6]:PORT"))?,
                )?),
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            // An IPv6 address without a port.
            (text, None)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(port_of(p)?)),
                None => (text, None),
            }
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{text:?}: expected HOST or HOST:PORT"));
        }
        Ok(Target {
            shown: text.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// The first address the name resolves to, as the resolver orders
    /// them (its order prefers what the host can route).
    fn resolve(&self) -> Option<IpAddr> {
        (self.host.as_str(), self.port.unwrap_or(0))
            .to_socket_addrs()
            .ok()?
            .map(|a| a.ip())
            .next()
    }
}

/// Probes `target` between `floor` and `ceiling` bytes (the floor raised
/// to 1280 toward an IPv6 address: no IPv6 link carries less).
pub fn probe(target: &Target, floor: u32, ceiling: u32, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let mut result = ProbeResult::unmeasured(&target.shown);
    let Some(addr) = target.resolve() else {
        result.outcome = Outcome::Unresolved;
        result.note = format!("{} does not resolve to an address", target.host);
        return result;
    };
    result.address = Some(addr.to_string());
    let floor = if addr.is_ipv6() {
        floor.max(IPV6_MIN_MTU)
    } else {
        floor
    };
    let ceiling = ceiling.max(floor);
    let mut wait = timeout;
    let mut slowest = Duration::ZERO;
    let icmp = match Icmp::open(addr) {
        Ok(mut socket) => search(&mut result, floor, ceiling, |size| {
            let sent = Instant::now();
            let answer = socket.echo(size, wait);
            if matches!(answer, Ok(search::Answer::Fits)) {
                slowest = slowest.max(sent.elapsed());
                wait = (slowest * RTTS_WAITED).clamp(MIN_WAIT.min(timeout), timeout);
            }
            answer
        }),
        Err(e) => Err(format!(
            "no ICMP socket ({e}; needs CAP_NET_RAW or ping_group_range)"
        )),
    };
    match icmp {
        Ok(()) => result.method = Some(Method::Icmp),
        Err(why) => {
            result.note = why;
            if let Some(port) = target.port {
                result.sizes_tried = 0;
                let sock = SocketAddr::new(addr, port);
                match search(&mut result, floor, ceiling, |size| {
                    tcp_fits(sock, size, timeout)
                }) {
                    Ok(()) => {
                        result.method = Some(Method::Tcp);
                        result.note = format!("{}; measured over TCP port {port}", result.note);
                    }
                    Err(why) => result.note = format!("{}; TCP port {port}: {why}", result.note),
                }
            }
        }
    }
    result.took_ms = started.elapsed().as_millis() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("198.51.100.10:443").unwrap(),
            Target {
                shown: "198.51.100.10:443".into(),
                host: "198.51.100.10".into(),
                port: Some(443)
            }
        );
        assert_eq!(Target::parse("example.org").unwrap().port, None);
        assert!(Target::parse("h:0").is_err());
        assert!(Target::parse(":80").is_err());
        assert!(Target::parse("h:http").is_err());
        let v6 = Target::parse("2001:db8::10").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::10", None));
        let v6 = Target::parse("[2001:db8::10]:443").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::10", Some(443)));
        assert!(Target::parse("[2001:db8::10]:").is_err());
        assert!(Target::parse("[2001:db8::10").is_err());
    }
}
