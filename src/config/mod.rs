//! Settings, in layers: defaults < TOML file < `MTUVISOR_*` environment <
//! command-line flags. Everything is validated before anything is touched.
//!
//! One home per setting: `keys.rs` has a row per key (TOML name,
//! environment variable, flag, default, parser); this file layers them and
//! records where each value came from; `parse.rs` has the parsers.

mod keys;
mod parse;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::firewall::{BackendChoice, MssMode};

pub use keys::{markdown_table, Cmd, Key, Raw, KEYS};
pub use parse::{glob_match, parse_mtu, MAX_MSS, MIN_MSS};

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
    /// The target never exceeds it, nor dockerd's `--mtu` (`supervise`).
    pub mtu_ceiling: u32,
    /// Path-MTU probe targets; empty: none (the target is the outer MTU).
    pub path_probe: Vec<crate::pmtu::Target>,
    pub path_probe_interval: Duration,
    pub reconcile_interval: Duration,
    /// Extra bridge-name globs (`*`, `?`) to manage besides Docker's names.
    pub bridge_patterns: Vec<String>,
    /// Directories searched for the namespaces veth peers were moved into,
    /// before `/proc/*/ns/net`.
    pub netns_dirs: Vec<PathBuf>,
    /// `node`: globs of the namespace file names to enforce in.
    pub netns_include: Vec<String>,
    /// `node`: the period of the `/proc` scan; `None`: no scan.
    pub proc_scan: Option<Duration>,
    /// `node`: enforce in the node's own namespace too.
    pub include_host: bool,
    pub log_format: LogFormat,
    /// `watch`: the Docker API socket to follow, if any.
    pub docker_host: Option<PathBuf>,
    /// `supervise`: how long dockerd gets to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// `supervise`: restarts before giving up; `None` for unlimited.
    pub max_restarts: Option<u32>,
    /// TCP MSS clamping of forwarded SYNs.
    pub mss: MssMode,
    pub mss_backend: BackendChoice,
    /// Leave the MSS rules in place on a clean stop.
    pub mss_keep_on_exit: bool,
    /// Keep managed links at or below the target (default). Off leaves MSS
    /// clamping as the only protection.
    pub enforce_mtu: bool,
    /// Where to serve Prometheus metrics and `/healthz`; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Where to serve `/healthz` and `/livez` alone; `None`: nowhere apart.
    pub health_addr: Option<SocketAddr>,
    /// How long a part that must make progress may go without while work
    /// waits before `/livez` fails.
    pub liveness_timeout: Duration,
    /// The `SCHED_FIFO` priority of the threads that clamp; `None`: ordinary.
    pub realtime_priority: Option<u8>,
    /// Where each key's value came from (absent: the default).
    origins: BTreeMap<&'static str, Origin>,
}

impl Default for Settings {
    /// Every key at the default its row in `keys.rs` gives (the one home
    /// of defaults); the values written here are placeholders, each
    /// replaced at once.
    fn default() -> Settings {
        let mut s = Settings {
            mtu: MtuSetting::Auto,
            mtu_ceiling: 0,
            path_probe: Vec::new(),
            path_probe_interval: Duration::ZERO,
            reconcile_interval: Duration::ZERO,
            bridge_patterns: Vec::new(),
            netns_dirs: Vec::new(),
            netns_include: Vec::new(),
            proc_scan: None,
            include_host: false,
            log_format: LogFormat::Text,
            docker_host: None,
            stop_timeout: Duration::ZERO,
            max_restarts: None,
            mss: MssMode::Off,
            mss_backend: BackendChoice::Auto,
            mss_keep_on_exit: false,
            enforce_mtu: false,
            metrics_addr: None,
            health_addr: None,
            liveness_timeout: Duration::ZERO,
            realtime_priority: None,
            origins: BTreeMap::new(),
        };
        for key in KEYS {
            (key.apply)(key, &mut s, Raw::Text(key.default.into()), &Origin::Default)
                .unwrap_or_else(|e| panic!("the default of {} does not parse: {e}", key.name));
        }
        s
    }
}

/// The top layer: `--config` and the setting flags given on the command
/// line, by key name.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub values: Vec<(&'static str, String)>,
}

impl Flags {
    /// Flags by key name, e.g. `[("mtu", "1300")]`.
    pub fn with(values: &[(&'static str, &str)]) -> Flags {
        Flags {
            config: None,
            values: values.iter().map(|(k, v)| (*k, v.to_string())).collect(),
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
            for (key, raw) in read_file_layer(&path)? {
                settings.set(key, raw, Origin::File(path.clone()))?;
            }
        }
        for (key, raw) in read_env_layer(env) {
            settings.set(key, raw, Origin::Env(key.env))?;
        }
        for (name, value) in &flags.values {
            let key = keys::by_name(name);
            let origin = Origin::Flag(key.flag_name().unwrap_or(key.name));
            settings.set(key, Raw::Text(value.clone()), origin)?;
        }
        settings.check_mtu_within_ceiling()?;
        Ok(settings)
    }

    /// A fixed MTU above the ceiling is refused: raise the ceiling to
    /// mean it.
    fn check_mtu_within_ceiling(&self) -> Result<(), ConfigError> {
        match self.mtu {
            MtuSetting::Fixed(n) if n > self.mtu_ceiling => Err(ConfigError::Invalid {
                key: "mtu",
                value: n.to_string(),
                origin: self.origin("mtu"),
                expected: format!(
                    "at most mtu_ceiling ({}, from {}); raise mtu_ceiling for a larger MTU",
                    self.mtu_ceiling,
                    self.origin("mtu_ceiling")
                ),
            }),
            _ => Ok(()),
        }
    }

    fn set(&mut self, key: &'static Key, raw: Raw, origin: Origin) -> Result<(), ConfigError> {
        (key.apply)(key, self, raw, &origin)?;
        self.origins.insert(key.name, origin);
        Ok(())
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// A fixed MSS must fit the target MTU (40 bytes of IPv4 and TCP
    /// headers); checked once the target is known, before anything is
    /// touched.
    pub fn check_mss_for_mtu(&self, mtu: u32) -> Result<(), ConfigError> {
        match self.mss {
            MssMode::Fixed(n) if u32::from(n) + 40 > mtu => Err(ConfigError::Invalid {
                key: "mss",
                value: n.to_string(),
                origin: self.origin("mss"),
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
                    origin: self.origin("mtu"),
                    expected: format!(
                        "this namespace routes IPv6, which needs an MTU of at least {MIN_IPV6_MTU}"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The file's keys, flattened (`[mss] mode` is `mss.mode`), each matched
/// to its row; a malformed file is reported with line and column.
fn read_file_layer(path: &Path) -> Result<Vec<(&'static Key, Raw)>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        ConfigError::File {
            path: shown.clone(),
            message: format!("not valid TOML{at}: {}", one_line(e.message())),
        }
    })?;
    let mut out = Vec::new();
    flatten(&shown, "", table, &mut out)?;
    Ok(out)
}

fn flatten(
    path: &str,
    prefix: &str,
    table: toml::Table,
    out: &mut Vec<(&'static Key, Raw)>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let dotted = format!("{prefix}{name}");
        let raw = match value {
            toml::Value::Table(inner) => {
                flatten(path, &format!("{dotted}."), inner, out)?;
                continue;
            }
            toml::Value::String(s) => Raw::Text(s),
            toml::Value::Array(items) => Raw::List(
                items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            other => Raw::Text(other.to_string()),
        };
        let key = keys::find(&dotted).ok_or_else(|| ConfigError::UnknownKey {
            path: path.to_string(),
            key: dotted.clone(),
            known: keys::known_keys(),
        })?;
        out.push((key, raw));
    }
    Ok(())
}

/// The `MTUVISOR_*` variables that are settings (others, such as the log
/// filter `MTUVISOR_LOG`, are not): one lookup per row of the table, by the
/// variable it names.
fn read_env_layer(env: &HashMap<String, String>) -> Vec<(&'static Key, Raw)> {
    KEYS.iter()
        .filter_map(|key| Some((key, Raw::Text(env.get(key.env)?.clone()))))
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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
        assert_eq!(s.stop_timeout, Duration::from_secs(25));
        assert_eq!(
            s.netns_dirs,
            [
                PathBuf::from("/run/netns"),
                PathBuf::from("/var/run/docker/netns")
            ]
        );
        assert!(s.bridge_patterns.is_empty());
        assert_eq!(s.docker_host, None);
        assert_eq!(s.metrics_addr, None);
        assert_eq!(s.max_restarts, None);
        assert_eq!(s.mss, MssMode::Pmtu);
        assert!(s.enforce_mtu && !s.mss_keep_on_exit);
        assert_eq!(s.origin("mtu"), Origin::Default);
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
        assert_eq!(s.origin("mtu"), Origin::Env("MTUVISOR_MTU"));
        let flags = Flags {
            values: vec![("mtu", "1300".into())],
            ..flags
        };
        let s = load(&flags, &[("MTUVISOR_MTU", "1380")]).unwrap();
        assert_eq!(s.mtu, MtuSetting::Fixed(1300));
        assert_eq!(s.reconcile_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_key_value_and_origin() {
        let flags = Flags::with(&[("mtu", "20")]);
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
        let flags = Flags::with(&[("mtu", "1000")]);
        let s = load(&flags, &[]).unwrap();
        assert!(s.check_mtu_for_ipv6(false).is_ok());
        assert!(s.check_mtu_for_ipv6(true).is_err());
    }

    #[test]
    fn intervals() {
        let o = || Origin::Default;
        let parse_interval = |v: &str, o: Origin| {
            parse::parse_duration(v, "reconcile_interval", parse::INTERVAL_RANGE, o)
        };
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
        let flags = Flags::with(&[("metrics_addr", "off")]);
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
