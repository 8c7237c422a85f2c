//! One parser per kind of value; each names the key, the value, where it
//! came from and what is accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, LogFormat, MtuSetting, Origin, MAX_MTU, MIN_MTU};
use crate::firewall::{BackendChoice, MssMode};

pub fn parse_mtu(value: &str, origin: Origin) -> Result<MtuSetting, ConfigError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(MtuSetting::Auto);
    }
    match v.parse::<u32>() {
        Ok(n) if (MIN_MTU..=MAX_MTU).contains(&n) => Ok(MtuSetting::Fixed(n)),
        _ => Err(ConfigError::Invalid {
            key: "mtu",
            value: value.to_string(),
            origin,
            expected: format!("expected \"auto\" or a whole number from {MIN_MTU} to {MAX_MTU}"),
        }),
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_interval(value: &str, origin: Origin) -> Result<Duration, ConfigError> {
    parse_duration(
        value,
        "reconcile_interval",
        Duration::from_millis(100),
        Duration::from_secs(86400),
        origin,
    )
}

pub(super) fn parse_duration(
    value: &str,
    key: &'static str,
    min: Duration,
    max: Duration,
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
        _ => Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            origin,
            expected: format!(
                "expected a duration from {} to {}, such as 30s, 500ms or 5m",
                human(min),
                human(max)
            ),
        }),
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
        _ => Err(ConfigError::Invalid {
            key: "docker_host",
            value: value.to_string(),
            origin,
            expected: "expected unix:///absolute/path/to/docker.sock".into(),
        }),
    }
}

/// `HOST:PORT` with HOST an IP address (`0.0.0.0:9464`, `[::]:9464`), or
/// `off` / empty for none.
pub(super) fn parse_metrics_addr(
    value: &str,
    origin: Origin,
) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.trim();
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| ConfigError::Invalid {
        key: "metrics_addr",
        value: value.to_string(),
        origin,
        expected: "expected IP:PORT such as 0.0.0.0:9464 or [::]:9464, or off".into(),
    })
}

pub const MIN_MSS: u16 = 536;
pub const MAX_MSS: u16 = 65495;

pub(super) fn parse_mss(value: &str, origin: Origin) -> Result<MssMode, ConfigError> {
    let v = value.trim();
    match v {
        "pmtu" => return Ok(MssMode::Pmtu),
        "off" => return Ok(MssMode::Off),
        _ => {}
    }
    match v.parse::<u16>() {
        Ok(n) if (MIN_MSS..=MAX_MSS).contains(&n) => Ok(MssMode::Fixed(n)),
        _ => Err(ConfigError::Invalid {
            key: "mss",
            value: value.to_string(),
            origin,
            expected: format!(
                "expected \"pmtu\", \"off\" or a whole number from {MIN_MSS} to {MAX_MSS}"
            ),
        }),
    }
}

pub(super) fn parse_backend(value: &str, origin: Origin) -> Result<BackendChoice, ConfigError> {
    match value.trim() {
        "auto" => Ok(BackendChoice::Auto),
        "iptables" | "iptables-nft" => Ok(BackendChoice::IptablesNft),
        "iptables-legacy" => Ok(BackendChoice::IptablesLegacy),
        "nftables" | "nft" => Ok(BackendChoice::Nftables),
        _ => Err(ConfigError::Invalid {
            key: "mss_backend",
            value: value.to_string(),
            origin,
            expected: "expected auto, iptables, iptables-legacy or nftables".into(),
        }),
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
        _ => Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            origin,
            expected: "expected true or false".into(),
        }),
    }
}

pub(super) fn parse_max_restarts(value: &str, origin: Origin) -> Result<Option<u32>, ConfigError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    v.parse::<u32>()
        .map(Some)
        .map_err(|_| ConfigError::Invalid {
            key: "max_restarts",
            value: value.to_string(),
            origin,
            expected: "expected \"unlimited\" or a whole number".into(),
        })
}

pub(super) fn parse_log_format(value: &str, origin: Origin) -> Result<LogFormat, ConfigError> {
    match value.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::Invalid {
            key: "log_format",
            value: value.to_string(),
            origin,
            expected: "expected \"text\" or \"json\"".into(),
        }),
    }
}

pub(super) fn parse_stop_timeout(value: &str, origin: Origin) -> Result<Duration, ConfigError> {
    parse_duration(
        value,
        "stop_timeout",
        Duration::from_secs(1),
        Duration::from_secs(3600),
        origin,
    )
}
