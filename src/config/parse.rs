//! One parser per kind of value; each names the key, the value, where it
//! came from and what is accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, LogFormat, MtuSetting, Origin, MAX_MTU, MIN_MTU};
use crate::firewall::{BackendChoice, MssMode};
use crate::pmtu::Target;

pub fn parse_mtu(value: &str, origin: Origin) -> Result<MtuSetting, ConfigError> {
    word_or_number(
        "mtu",
        value,
        origin,
        &[("auto", MtuSetting::Auto)],
        MIN_MTU..=MAX_MTU,
        MtuSetting::Fixed,
    )
}

pub fn parse_mtu_ceiling(value: &str, origin: Origin) -> Result<u32, ConfigError> {
    word_or_number("mtu_ceiling", value, origin, &[], MIN_MTU..=MAX_MTU, |n| n)
}

/// `HOST[:PORT]` targets for the path probe, each checked.
pub fn parse_targets(
    items: Vec<String>,
    key: &'static str,
    origin: Origin,
) -> Result<Vec<Target>, ConfigError> {
    items
        .iter()
        .map(|item| {
            Target::parse(item).map_err(|why| {
                invalid(
                    key,
                    item,
                    origin.clone(),
                    format!("{why}; expected HOST, HOST:PORT, an IPv6 address or [IPv6]:PORT"),
                )
            })
        })
        .collect()
}

/// The range each duration key accepts.
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(86400));
pub const PROBE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86400));
pub const STOP_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds, within `range`.
pub fn parse_duration(
    value: &str,
    key: &'static str,
    (min, max): (Duration, Duration),
    origin: Origin,
) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let parsed = digits.parse::<u64>().ok().and_then(|n| match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    });
    match parsed {
        Some(d) if d >= min && d <= max => Ok(d),
        _ => Err(invalid(
            key,
            value,
            origin,
            format!(
                "expected a duration from {} to {}, such as 30s, 500ms or 5m",
                human(min),
                human(max)
            ),
        )),
    }
}

fn human(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

pub(super) fn parse_docker_host(
    value: &str,
    origin: Origin,
) -> Result<Option<PathBuf>, ConfigError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(Some(PathBuf::from(path))),
        _ => Err(invalid(
            "docker_host",
            value,
            origin,
            "expected unix:///absolute/path/to/docker.sock",
        )),
    }
}

/// `HOST:PORT` with HOST an IP address (`0.0.0.0:9464`, `[::]:9464`), or
/// `off` / empty for none, for `key`.
pub(super) fn parse_listen_addr(
    key: &'static str,
    value: &str,
    origin: Origin,
) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        invalid(
            key,
            value,
            origin,
            "expected IP:PORT such as 127.0.0.1:9465, 0.0.0.0:9464 or [::]:9464, or off",
        )
    })
}

pub const LIVENESS_RANGE: (Duration, Duration) =
    (Duration::from_secs(2), Duration::from_secs(3600));

pub const MIN_MSS: u16 = 536;
pub const MAX_MSS: u16 = 65495;

pub(super) fn parse_mss(value: &str, origin: Origin) -> Result<MssMode, ConfigError> {
    word_or_number(
        "mss",
        value,
        origin,
        &[("pmtu", MssMode::Pmtu), ("off", MssMode::Off)],
        u32::from(MIN_MSS)..=u32::from(MAX_MSS),
        // In range, so it fits.
        |n| MssMode::Fixed(n as u16),
    )
}

pub(super) fn parse_backend(value: &str, origin: Origin) -> Result<BackendChoice, ConfigError> {
    match value.trim() {
        "auto" => Ok(BackendChoice::Auto),
        "iptables" | "iptables-nft" => Ok(BackendChoice::IptablesNft),
        "iptables-legacy" => Ok(BackendChoice::IptablesLegacy),
        "nftables" | "nft" => Ok(BackendChoice::Nftables),
        _ => Err(invalid(
            "mss_backend",
            value,
            origin,
            "expected auto, iptables, iptables-legacy or nftables",
        )),
    }
}

/// `off` or a `SCHED_FIFO` priority.
pub(super) fn parse_realtime_priority(
    value: &str,
    origin: Origin,
) -> Result<Option<u8>, ConfigError> {
    match value.trim() {
        "off" | "false" | "0" => Ok(None),
        v => match v.parse::<u8>() {
            Ok(n @ 1..=99) => Ok(Some(n)),
            _ => Err(invalid(
                "realtime_priority",
                value,
                origin,
                "expected off or a SCHED_FIFO priority 1–99",
            )),
        },
    }
}

pub(super) fn parse_bool(
    value: &str,
    key: &'static str,
    origin: Origin,
) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(key, value, origin, "expected true or false")),
    }
}

/// One or more name globs (`*`, `?`), none of them empty.
pub(super) fn parse_globs(
    globs: Vec<String>,
    key: &'static str,
    origin: Origin,
) -> Result<Vec<String>, ConfigError> {
    if globs.is_empty() || globs.iter().any(|g| g.trim().is_empty()) {
        return Err(invalid(
            key,
            &globs.join(","),
            origin,
            "expected one or more globs such as cni-* (`*` for every file)",
        ));
    }
    Ok(globs)
}

pub(super) fn parse_max_restarts(value: &str, origin: Origin) -> Result<Option<u32>, ConfigError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    v.parse::<u32>().map(Some).map_err(|_| {
        invalid(
            "max_restarts",
            value,
            origin,
            "expected \"unlimited\" or a whole number",
        )
    })
}

pub(super) fn parse_log_format(value: &str, origin: Origin) -> Result<LogFormat, ConfigError> {
    match value.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(invalid(
            "log_format",
            value,
            origin,
            "expected \"text\" or \"json\"",
        )),
    }
}

/// The error for `value` of `key`, naming where it came from and what is
/// accepted.
fn invalid(
    key: &'static str,
    value: &str,
    origin: Origin,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        origin,
        expected: expected.into(),
    }
}

/// `value` as one of `words` (any case), else a whole number in `range`.
fn word_or_number<T: Copy>(
    key: &'static str,
    value: &str,
    origin: Origin,
    words: &[(&str, T)],
    range: std::ops::RangeInclusive<u32>,
    number: impl Fn(u32) -> T,
) -> Result<T, ConfigError> {
    let v = value.trim();
    if let Some((_, word)) = words.iter().find(|(w, _)| v.eq_ignore_ascii_case(w)) {
        return Ok(*word);
    }
    match v.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(number(n)),
        _ => {
            let names: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            Err(invalid(
                key,
                value,
                origin,
                format!(
                    "expected {} or a whole number from {} to {}",
                    names.join(", "),
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

/// Shell-style glob with `*` (any run) and `?` (any one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    pi = star + 1;
                    ni = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("cni*", "cni0"));
        assert!(glob_match("*br?", "mybr1"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("cni*", "xcni0"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("*", ""));
    }
}
