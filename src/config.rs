//! Settings, in layers: defaults < TOML file < `MTUVISOR_*` environment <
//! command-line flags. Everything is validated before anything is touched.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::firewall::{BackendChoice, MssMode};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/mtuvisor/config.toml";

pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65535;
/// IPv6 requires every link to carry 1280-byte packets (RFC 8200).
pub const MIN_IPV6_MTU: u32 = 1280;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid {key} {value:?} (from {origin}): {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: Origin,
        expected: String,
    },
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        path: String,
        key: String,
        known: String,
    },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("environment: {message}")]
    Env { message: String },
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => f.write_str(v),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtuSetting {
    /// Follow the outer MTU detected from the default route(s).
    Auto,
    Fixed(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mtu: MtuSetting,
    /// Where `mtu` came from: needed for the IPv6 check, made once the
    /// namespace has been looked at.
    pub mtu_origin: Origin,
    pub reconcile_interval: Duration,
    /// Extra bridge-name globs (`*`, `?`) to manage besides Docker's names.
    pub bridge_patterns: Vec<String>,
    /// Directories searched for the namespaces veth peers were moved into,
    /// before `/proc/*/ns/net`.
    pub netns_dirs: Vec<PathBuf>,
    pub log_format: LogFormat,
    /// `watch`: the Docker API socket to follow, if any.
    pub docker_host: Option<PathBuf>,
    /// `supervise`: how long dockerd gets to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// `supervise`: restarts before giving up; `None` for unlimited.
    pub max_restarts: Option<u32>,
    /// TCP MSS clamping of forwarded SYNs.
    pub mss: MssMode,
    pub mss_origin: Origin,
    pub mss_backend: BackendChoice,
    /// Leave the MSS rules in place on a clean stop.
    pub mss_keep_on_exit: bool,
    /// Keep managed links at or below the target (default). Off leaves MSS
    /// clamping as the only protection.
    pub enforce_mtu: bool,
    /// Where to serve Prometheus metrics and `/healthz`; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            mtu: MtuSetting::Auto,
            mtu_origin: Origin::Default,
            reconcile_interval: Duration::from_secs(30),
            bridge_patterns: Vec::new(),
            netns_dirs: vec![
                PathBuf::from("/run/netns"),
                PathBuf::from("/var/run/docker/netns"),
            ],
            log_format: LogFormat::Text,
            docker_host: None,
            // Under Kubernetes' default 30 s grace period.
            stop_timeout: Duration::from_secs(25),
            max_restarts: None,
            mss: MssMode::Pmtu,
            mss_origin: Origin::Default,
            mss_backend: BackendChoice::Auto,
            mss_keep_on_exit: false,
            enforce_mtu: true,
            metrics_addr: None,
        }
    }
}

/// Values given as command-line flags (the top layer).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub mtu: Option<String>,
    pub reconcile_interval: Option<String>,
    pub log_format: Option<String>,
    pub docker_host: Option<String>,
    pub stop_timeout: Option<String>,
    pub max_restarts: Option<String>,
    pub mss: Option<String>,
    pub metrics_addr: Option<String>,
}

/// One layer as read: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    mtu: Option<String>,
    reconcile_interval: Option<String>,
    bridge_patterns: Option<StringList>,
    netns_dirs: Option<StringList>,
    log_format: Option<String>,
    docker_host: Option<String>,
    stop_timeout: Option<String>,
    max_restarts: Option<String>,
    /// `"pmtu"`, `"off"`, a number, or a `[mss]` table.
    mss: Option<config::Value>,
    mss_backend: Option<String>,
    mss_keep_on_exit: Option<String>,
    enforce_mtu: Option<String>,
    metrics_addr: Option<String>,
}

const KNOWN_KEYS: &[&str] = &[
    "mtu",
    "reconcile_interval",
    "bridge_patterns",
    "netns_dirs",
    "log_format",
    "docker_host",
    "stop_timeout",
    "max_restarts",
    "mss",
    "mss_backend",
    "mss_keep_on_exit",
    "enforce_mtu",
    "metrics_addr",
];

/// A list in TOML, or a comma-separated string in the environment.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringList {
    List(Vec<String>),
    Joined(String),
}

impl StringList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringList::List(v) => v,
            StringList::Joined(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

impl Settings {
    /// Builds the settings from all layers, reading the real environment.
    pub fn load(flags: &Flags) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Settings::load_from(flags, &env, Path::new(DEFAULT_CONFIG_FILE))
    }

    pub fn load_from(
        flags: &Flags,
        env: &HashMap<String, String>,
        default_file: &Path,
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        let file = match &flags.config {
            Some(path) => Some(path.clone()),
            None => default_file.exists().then(|| default_file.to_path_buf()),
        };
        if let Some(path) = file {
            let layer = read_file_layer(&path)?;
            settings.apply(layer, &|_| Origin::File(path.clone()))?;
        }
        settings.apply(read_env_layer(env)?, &|key| Origin::Env(env_var_name(key)))?;
        let flag_layer = Layer {
            mtu: flags.mtu.clone(),
            reconcile_interval: flags.reconcile_interval.clone(),
            log_format: flags.log_format.clone(),
            docker_host: flags.docker_host.clone(),
            stop_timeout: flags.stop_timeout.clone(),
            max_restarts: flags.max_restarts.clone(),
            mss: flags.mss.clone().map(config::Value::from),
            metrics_addr: flags.metrics_addr.clone(),
            ..Layer::default()
        };
        settings.apply(flag_layer, &|key| Origin::Flag(flag_name(key)))?;
        Ok(settings)
    }

    fn apply(
        &mut self,
        layer: Layer,
        origin: &dyn Fn(&'static str) -> Origin,
    ) -> Result<(), ConfigError> {
        if let Some(v) = layer.mtu {
            self.mtu = parse_mtu(&v, origin("mtu"))?;
            self.mtu_origin = origin("mtu");
        }
        if let Some(v) = layer.reconcile_interval {
            self.reconcile_interval = parse_interval(&v, origin("reconcile_interval"))?;
        }
        if let Some(v) = layer.bridge_patterns {
            self.bridge_patterns = v.into_vec();
        }
        if let Some(v) = layer.netns_dirs {
            self.netns_dirs = v.into_vec().into_iter().map(PathBuf::from).collect();
        }
        if let Some(v) = layer.log_format {
            self.log_format = parse_log_format(&v, origin("log_format"))?;
        }
        if let Some(v) = layer.docker_host {
            self.docker_host = parse_docker_host(&v, origin("docker_host"))?;
        }
        if let Some(v) = layer.stop_timeout {
            self.stop_timeout = parse_duration(
                &v,
                "stop_timeout",
                Duration::from_secs(1),
                Duration::from_secs(3600),
                origin("stop_timeout"),
            )?;
        }
        if let Some(v) = layer.max_restarts {
            self.max_restarts = parse_max_restarts(&v, origin("max_restarts"))?;
        }
        if let Some(v) = layer.mss {
            self.apply_mss(v, origin("mss"))?;
        }
        if let Some(v) = layer.mss_backend {
            self.mss_backend = parse_backend(&v, origin("mss_backend"))?;
        }
        if let Some(v) = layer.enforce_mtu {
            self.enforce_mtu = parse_bool(&v, "enforce_mtu", origin("enforce_mtu"))?;
        }
        if let Some(v) = layer.metrics_addr {
            self.metrics_addr = parse_metrics_addr(&v, origin("metrics_addr"))?;
        }
        if let Some(v) = layer.mss_keep_on_exit {
            self.mss_keep_on_exit = parse_bool(&v, "mss_keep_on_exit", origin("mss_keep_on_exit"))?;
        }
        Ok(())
    }

    /// `mss = "pmtu"`, or `[mss]` with `mode`, `backend`, `keep_on_exit`.
    fn apply_mss(&mut self, value: config::Value, origin: Origin) -> Result<(), ConfigError> {
        let config::ValueKind::Table(table) = value.kind.clone() else {
            let text = value.into_string().unwrap_or_default();
            self.mss = parse_mss(&text, origin.clone())?;
            self.mss_origin = origin;
            return Ok(());
        };
        for (key, v) in table {
            let text = v.into_string().unwrap_or_default();
            match key.as_str() {
                "mode" => {
                    self.mss = parse_mss(&text, origin.clone())?;
                    self.mss_origin = origin.clone();
                }
                "backend" => self.mss_backend = parse_backend(&text, origin.clone())?,
                "keep_on_exit" => {
                    self.mss_keep_on_exit = parse_bool(&text, "mss.keep_on_exit", origin.clone())?
                }
                other => {
                    return Err(ConfigError::UnknownKey {
                        path: origin.to_string(),
                        key: format!("mss.{other}"),
                        known: "mss.mode, mss.backend, mss.keep_on_exit".into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// A fixed MSS must fit the target MTU (40 bytes of IPv4 and TCP
    /// headers); checked once the target is known, before anything is
    /// touched.
    pub fn check_mss_for_mtu(&self, mtu: u32) -> Result<(), ConfigError> {
        match self.mss {
            MssMode::Fixed(n) if u32::from(n) + 40 > mtu => Err(ConfigError::Invalid {
                key: "mss",
                value: n.to_string(),
                origin: self.mss_origin.clone(),
                expected: format!(
                    "a fixed MSS must be at most the MTU ({mtu}) minus 40, {}",
                    mtu - 40
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The check that needs the namespace: an MTU below 1280 cannot carry
    /// IPv6, so it is refused when the outer link routes IPv6.
    pub fn check_mtu_for_ipv6(&self, has_ipv6_route: bool) -> Result<(), ConfigError> {
        match self.mtu {
            MtuSetting::Fixed(n) if n < MIN_IPV6_MTU && has_ipv6_route => {
                Err(ConfigError::Invalid {
                    key: "mtu",
                    value: n.to_string(),
                    origin: self.mtu_origin.clone(),
                    expected: format!(
                        "this namespace routes IPv6, which needs an MTU of at least {MIN_IPV6_MTU}"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

fn read_file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::File {
            path: shown.clone(),
            message: format!("not valid TOML: {}", one_line(&e.to_string())),
        })?;
    parsed
        .try_deserialize::<Layer>()
        .map_err(|e| file_error(&shown, &e.to_string()))
}

fn file_error(path: &str, message: &str) -> ConfigError {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        if let Some(key) = rest.split('`').next() {
            return ConfigError::UnknownKey {
                path: path.to_string(),
                key: key.to_string(),
                known: KNOWN_KEYS.join(", "),
            };
        }
    }
    ConfigError::File {
        path: path.to_string(),
        message: one_line(message),
    }
}

fn read_env_layer(env: &HashMap<String, String>) -> Result<Layer, ConfigError> {
    // Only the known keys are taken: MTUVISOR_LOG (the log filter) and other
    // MTUVISOR_* variables are not settings.
    let known: HashMap<String, String> = KNOWN_KEYS
        .iter()
        .filter_map(|key| {
            env.get(env_var_name(key))
                .map(|v| (key.to_string(), v.clone()))
        })
        .collect();
    let mut builder = config::Config::builder();
    for (key, value) in known {
        builder = builder
            .set_override(key, value)
            .map_err(|e| ConfigError::Env {
                message: one_line(&e.to_string()),
            })?;
    }
    let built = builder.build().map_err(|e| ConfigError::Env {
        message: one_line(&e.to_string()),
    })?;
    built
        .try_deserialize::<Layer>()
        .map_err(|e| ConfigError::Env {
            message: one_line(&e.to_string()),
        })
}

fn env_var_name(key: &str) -> &'static str {
    match key {
        "mtu" => "MTUVISOR_MTU",
        "reconcile_interval" => "MTUVISOR_RECONCILE_INTERVAL",
        "bridge_patterns" => "MTUVISOR_BRIDGE_PATTERNS",
        "netns_dirs" => "MTUVISOR_NETNS_DIRS",
        "log_format" => "MTUVISOR_LOG_FORMAT",
        "docker_host" => "MTUVISOR_DOCKER_HOST",
        "stop_timeout" => "MTUVISOR_STOP_TIMEOUT",
        "max_restarts" => "MTUVISOR_MAX_RESTARTS",
        "mss" => "MTUVISOR_MSS",
        "mss_backend" => "MTUVISOR_MSS_BACKEND",
        "mss_keep_on_exit" => "MTUVISOR_MSS_KEEP_ON_EXIT",
        "enforce_mtu" => "MTUVISOR_ENFORCE_MTU",
        "metrics_addr" => "MTUVISOR_METRICS_ADDR",
        _ => unreachable!("not a setting: {key}"),
    }
}

fn flag_name(key: &str) -> &'static str {
    match key {
        "mtu" => "--mtu",
        "reconcile_interval" => "--reconcile-interval",
        "log_format" => "--log-format",
        "docker_host" => "--docker-host",
        "stop_timeout" => "--stop-timeout",
        "max_restarts" => "--max-restarts",
        "mss" => "--mss",
        "metrics_addr" => "--metrics-addr",
        _ => unreachable!("no flag for {key}"),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

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

fn parse_duration(
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

fn parse_docker_host(value: &str, origin: Origin) -> Result<Option<PathBuf>, ConfigError> {
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
fn parse_metrics_addr(value: &str, origin: Origin) -> Result<Option<SocketAddr>, ConfigError> {
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

fn parse_mss(value: &str, origin: Origin) -> Result<MssMode, ConfigError> {
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

fn parse_backend(value: &str, origin: Origin) -> Result<BackendChoice, ConfigError> {
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

fn parse_bool(value: &str, key: &'static str, origin: Origin) -> Result<bool, ConfigError> {
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

fn parse_max_restarts(value: &str, origin: Origin) -> Result<Option<u32>, ConfigError> {
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

fn parse_log_format(value: &str, origin: Origin) -> Result<LogFormat, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(flags: &Flags, e: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(flags, &env(e), Path::new("/nonexistent/mtuvisor.toml"))
    }

    fn file(text: &str) -> tempfile_path::TempToml {
        tempfile_path::TempToml::new(text)
    }

    mod tempfile_path {
        use super::*;
        pub struct TempToml(pub PathBuf);
        impl TempToml {
            pub fn new(text: &str) -> TempToml {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("mtuvisor-cfg-{}-{n}.toml", std::process::id()));
                std::fs::File::create(&path)
                    .unwrap()
                    .write_all(text.as_bytes())
                    .unwrap();
                TempToml(path)
            }
        }
        impl Drop for TempToml {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults() {
        let s = load(&Flags::default(), &[]).unwrap();
        assert_eq!(s.mtu, MtuSetting::Auto);
        assert_eq!(s.reconcile_interval, Duration::from_secs(30));
    }

    #[test]
    fn layers_override_in_order() {
        let f = file("mtu = 1400\nreconcile_interval = \"5s\"\nbridge_patterns = [\"cni*\"]\n");
        let flags = Flags {
            config: Some(f.0.clone()),
            ..Flags::default()
        };
        let s = load(&flags, &[]).unwrap();
        assert_eq!(s.mtu, MtuSetting::Fixed(1400));
        assert_eq!(s.bridge_patterns, vec!["cni*".to_string()]);
        let s = load(
            &flags,
            &[("MTUVISOR_MTU", "1380"), ("MTUVISOR_LOG", "debug")],
        )
        .unwrap();
        assert_eq!(s.mtu, MtuSetting::Fixed(1380));
        assert_eq!(s.mtu_origin, Origin::Env("MTUVISOR_MTU"));
        let flags = Flags {
            mtu: Some("1300".into()),
            ..flags
        };
        let s = load(&flags, &[("MTUVISOR_MTU", "1380")]).unwrap();
        assert_eq!(s.mtu, MtuSetting::Fixed(1300));
        assert_eq!(s.reconcile_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_key_value_and_origin() {
        let flags = Flags {
            mtu: Some("20".into()),
            ..Flags::default()
        };
        let err = load(&flags, &[]).unwrap_err().to_string();
        assert!(err.contains("mtu \"20\" (from --mtu)"), "{err}");
        let err = load(&Flags::default(), &[("MTUVISOR_MTU", "abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"abc\" (from MTUVISOR_MTU)"), "{err}");
        let err = load(
            &Flags::default(),
            &[("MTUVISOR_RECONCILE_INTERVAL", "soon")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("reconcile_interval \"soon\""), "{err}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let f = file("mtu = 1400\nmtuu = 1\n");
        let flags = Flags {
            config: Some(f.0.clone()),
            ..Flags::default()
        };
        match load(&flags, &[]).unwrap_err() {
            ConfigError::UnknownKey { key, .. } => assert_eq!(key, "mtuu"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn ipv6_floor() {
        let flags = Flags {
            mtu: Some("1000".into()),
            ..Flags::default()
        };
        let s = load(&flags, &[]).unwrap();
        assert!(s.check_mtu_for_ipv6(false).is_ok());
        assert!(s.check_mtu_for_ipv6(true).is_err());
    }

    #[test]
    fn intervals() {
        let o = || Origin::Default;
        assert_eq!(
            parse_interval("500ms", o()).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_interval("2m", o()).unwrap(), Duration::from_secs(120));
        assert_eq!(parse_interval("15", o()).unwrap(), Duration::from_secs(15));
        assert!(parse_interval("0s", o()).is_err());
        assert!(parse_interval("1y", o()).is_err());
    }

    #[test]
    fn mss_settings() {
        let f = file("[mss]\nmode = 1360\nbackend = \"nftables\"\nkeep_on_exit = true\n");
        let flags = Flags {
            config: Some(f.0.clone()),
            ..Flags::default()
        };
        let s = load(&flags, &[]).unwrap();
        assert_eq!(s.mss, MssMode::Fixed(1360));
        assert_eq!(s.mss_backend, BackendChoice::Nftables);
        assert!(s.mss_keep_on_exit);
        assert!(s.check_mss_for_mtu(1400).is_ok());
        assert!(s.check_mss_for_mtu(1399).is_err());
        let s = load(&Flags::default(), &[("MTUVISOR_MSS", "off")]).unwrap();
        assert_eq!(s.mss, MssMode::Off);
        let f = file("mss = \"pmtu\"\n");
        let flags = Flags {
            config: Some(f.0.clone()),
            ..Flags::default()
        };
        assert_eq!(load(&flags, &[]).unwrap().mss, MssMode::Pmtu);
        for bad in ["20", "sometimes", "70000"] {
            let err = load(&Flags::default(), &[("MTUVISOR_MSS", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("mss") && err.contains(bad), "{err}");
        }
        let f = file("[mss]\nmodee = \"pmtu\"\n");
        let flags = Flags {
            config: Some(f.0.clone()),
            ..Flags::default()
        };
        assert!(load(&flags, &[])
            .unwrap_err()
            .to_string()
            .contains("mss.modee"));
    }

    #[test]
    fn supervise_settings() {
        let s = load(
            &Flags::default(),
            &[
                ("MTUVISOR_STOP_TIMEOUT", "10s"),
                ("MTUVISOR_MAX_RESTARTS", "3"),
                ("MTUVISOR_DOCKER_HOST", "unix:///run/dind/docker.sock"),
            ],
        )
        .unwrap();
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.max_restarts, Some(3));
        assert_eq!(s.docker_host, Some(PathBuf::from("/run/dind/docker.sock")));
        for (var, value) in [
            ("MTUVISOR_STOP_TIMEOUT", "forever"),
            ("MTUVISOR_STOP_TIMEOUT", "0s"),
            ("MTUVISOR_MAX_RESTARTS", "-1"),
            ("MTUVISOR_DOCKER_HOST", "tcp://1.2.3.4:2375"),
        ] {
            let err = load(&Flags::default(), &[(var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn metrics_addr() {
        assert_eq!(load(&Flags::default(), &[]).unwrap().metrics_addr, None);
        let s = load(&Flags::default(), &[("MTUVISOR_METRICS_ADDR", "[::]:9464")]).unwrap();
        assert_eq!(s.metrics_addr, Some("[::]:9464".parse().unwrap()));
        let flags = Flags {
            metrics_addr: Some("off".into()),
            ..Flags::default()
        };
        let s = load(&flags, &[("MTUVISOR_METRICS_ADDR", "0.0.0.0:9464")]).unwrap();
        assert_eq!(s.metrics_addr, None, "the flag wins, and off means none");
        let err = load(
            &Flags::default(),
            &[("MTUVISOR_METRICS_ADDR", "localhost:9464")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("MTUVISOR_METRICS_ADDR") && err.contains("IP:PORT"),
            "{err}"
        );
    }
}
