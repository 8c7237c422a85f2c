//! The settings table: one row per key names its TOML name (and dotted
//! spellings), environment variable, flag and the subcommands that take
//! it, its default and meaning, and the function that parses it into
//! [`Settings`]. Layering, `--help`, the unknown-key message and the
//! README's table all come from here.

use std::path::PathBuf;

use super::parse::*;
use super::{ConfigError, Origin, Settings};

/// Where a key's flag is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// On the top-level command, valid before or after any subcommand.
    Global,
    Watch,
    Supervise,
    Node,
}

/// A value as a layer gives it: text (TOML strings, numbers and booleans
/// are written out), or a TOML array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    Text(String),
    List(Vec<String>),
}

impl Raw {
    /// A single value; a list is refused with the key named.
    fn text(self, key: &'static str, origin: &Origin) -> Result<String, ConfigError> {
        match self {
            Raw::Text(s) => Ok(s),
            Raw::List(items) => Err(ConfigError::Invalid {
                key,
                value: format!("{items:?}"),
                origin: origin.clone(),
                expected: "expected a single value, not a list".into(),
            }),
        }
    }

    /// A list: a TOML array, or comma-separated text (environment, flags).
    fn list(self) -> Vec<String> {
        match self {
            Raw::List(items) => items,
            Raw::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// Parses a value of the row's key into [`Settings`]; the row is given so
/// that messages name its key.
type Apply = fn(&Key, &mut Settings, Raw, &Origin) -> Result<(), ConfigError>;

pub struct Key {
    /// The TOML key, and the name used in messages and `origin()`.
    pub name: &'static str,
    /// Other TOML spellings (`mss.mode` for `[mss] mode = …`).
    pub aliases: &'static [&'static str],
    pub env: &'static str,
    /// The flag (`--mtu`), and where it is accepted.
    pub flag: Option<(&'static str, &'static [Cmd])>,
    pub value_name: &'static str,
    /// The default, as text its parser takes (lists comma-separated; empty:
    /// none). The one home of the default: `Settings::default()` parses it.
    pub default: &'static str,
    pub meaning: &'static str,
    pub apply: Apply,
}

impl Key {
    pub fn takes_flag_in(&self, cmd: Cmd) -> bool {
        self.flag.is_some_and(|(_, cmds)| cmds.contains(&cmd))
    }

    pub fn flag_name(&self) -> Option<&'static str> {
        self.flag.map(|(f, _)| f)
    }
}

/// The commands that enforce: their flags are the same.
const ENFORCING: &[Cmd] = &[Cmd::Watch, Cmd::Supervise, Cmd::Node];

pub static KEYS: &[Key] = &[
    Key {
        name: "mtu",
        aliases: &[],
        env: "MTUVISOR_MTU",
        flag: Some(("--mtu", ENFORCING)),
        value_name: "auto|N",
        default: "auto",
        meaning: "`auto` or 576–65535 (≥ 1280 where IPv6 is routed)",
        apply: |k, s, v, o| {
            s.mtu = parse_mtu(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "mtu_ceiling",
        aliases: &[],
        env: "MTUVISOR_MTU_CEILING",
        flag: Some(("--mtu-ceiling", &[Cmd::Global])),
        value_name: "N",
        default: "1500",
        meaning: "the target never exceeds it, nor `supervise`'s `--mtu` to dockerd: a jumbo-frame pod's Docker networks stay at 1500, as plain dockerd's do, unless raised; 576–65535",
        apply: |k, s, v, o| {
            s.mtu_ceiling = parse_mtu_ceiling(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "path_probe",
        aliases: &[],
        env: "MTUVISOR_PATH_PROBE",
        flag: Some(("--path-probe", ENFORCING)),
        value_name: "HOST[:PORT],...",
        default: "",
        meaning: "probe the path MTU to these targets (ICMP echo with don't-fragment, TCP on PORT where echo is filtered, IPv4 or IPv6) at start and every `path_probe_interval`; the target is then the smaller of the outer MTU and the narrowest path; comma-separated in the environment",
        apply: |k, s, v, o| {
            s.path_probe = parse_targets(v.list(), k.name, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "path_probe_interval",
        aliases: &[],
        env: "MTUVISOR_PATH_PROBE_INTERVAL",
        flag: Some(("--path-probe-interval", ENFORCING)),
        value_name: "DURATION",
        default: "5m",
        meaning: "how often `path_probe` measures again, 1s–24h",
        apply: |k, s, v, o| {
            let text = v.text(k.name, o)?;
            s.path_probe_interval = parse_duration(&text, k.name, PROBE_INTERVAL_RANGE, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "reconcile_interval",
        aliases: &[],
        env: "MTUVISOR_RECONCILE_INTERVAL",
        flag: Some(("--reconcile-interval", ENFORCING)),
        value_name: "DURATION",
        default: "30s",
        meaning: "full sweep period, 100ms–24h",
        apply: |k, s, v, o| {
            let text = v.text(k.name, o)?;
            s.reconcile_interval =
                parse_duration(&text, k.name, INTERVAL_RANGE, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "bridge_patterns",
        aliases: &[],
        env: "MTUVISOR_BRIDGE_PATTERNS",
        flag: None,
        value_name: "GLOB,...",
        default: "",
        meaning: "extra bridge names to manage, globs (`cni*`); comma-separated in the environment",
        apply: |_, s, v, _| {
            s.bridge_patterns = v.list();
            Ok(())
        },
    },
    Key {
        name: "netns_dirs",
        aliases: &[],
        env: "MTUVISOR_NETNS_DIRS",
        flag: None,
        value_name: "DIR,...",
        default: "/run/netns,/var/run/docker/netns",
        meaning: "where namespace files are: the pods `node` enforces in, and the namespaces veth peers live in (before `/proc/*/ns/net`); comma-separated in the environment",
        apply: |_, s, v, _| {
            s.netns_dirs = v.list().into_iter().map(PathBuf::from).collect();
            Ok(())
        },
    },
    Key {
        name: "netns_include",
        aliases: &[],
        env: "MTUVISOR_NETNS_INCLUDE",
        flag: Some(("--netns-include", &[Cmd::Node])),
        value_name: "GLOB,...",
        default: "*",
        meaning: "`node`: names of the pod namespaces to enforce in, globs (`cni-*`): a file's name in `netns_dirs`, `netns-<inode>` for one found through `/proc`; comma-separated in the environment",
        apply: |k, s, v, o| {
            let globs = parse_globs(v.list(), k.name, o.clone())?;
            s.netns_include = globs;
            Ok(())
        },
    },
    Key {
        name: "proc_scan",
        aliases: &[],
        env: "MTUVISOR_PROC_SCAN",
        flag: Some(("--proc-scan", &[Cmd::Node])),
        value_name: "off|DURATION",
        default: "off",
        meaning: "`node`: how often to look for pods in `/proc` as well (runtimes that make no namespace file; a namespace counts when the first process of a PID namespace one level below the agent's holds it), 100ms–24h, or `off`",
        apply: |k, s, v, o| {
            let text = v.text(k.name, o)?;
            s.proc_scan = match text.trim() {
                "off" | "false" => None,
                _ => Some(parse_duration(&text, k.name, INTERVAL_RANGE, o.clone())?),
            };
            Ok(())
        },
    },
    Key {
        name: "include_host",
        aliases: &[],
        env: "MTUVISOR_INCLUDE_HOST",
        flag: Some(("--include-host", &[Cmd::Node])),
        value_name: "BOOL",
        default: "false",
        meaning: "`node`: enforce in the node's own namespace too (a Docker engine on the host)",
        apply: |k, s, v, o| {
            s.include_host = parse_bool(&v.text(k.name, o)?, k.name, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "log_format",
        aliases: &[],
        env: "MTUVISOR_LOG_FORMAT",
        flag: Some(("--log-format", &[Cmd::Global])),
        value_name: "text|json",
        default: "text",
        meaning: "`text` or `json`",
        apply: |k, s, v, o| {
            s.log_format = parse_log_format(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "docker_host",
        aliases: &[],
        env: "MTUVISOR_DOCKER_HOST",
        flag: Some(("--docker-host", &[Cmd::Watch])),
        value_name: "unix:///PATH",
        default: "",
        meaning: "`unix:///path` of the dockerd to follow (a socket that does not exist yet is waited for)",
        apply: |k, s, v, o| {
            s.docker_host = parse_docker_host(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "stop_timeout",
        aliases: &[],
        env: "MTUVISOR_STOP_TIMEOUT",
        flag: Some(("--stop-timeout", &[Cmd::Supervise])),
        value_name: "DURATION",
        default: "25s",
        meaning: "time dockerd gets to stop before SIGKILL, 1s–1h",
        apply: |k, s, v, o| {
            let text = v.text(k.name, o)?;
            s.stop_timeout = parse_duration(&text, k.name, STOP_TIMEOUT_RANGE, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "max_restarts",
        aliases: &[],
        env: "MTUVISOR_MAX_RESTARTS",
        flag: Some(("--max-restarts", &[Cmd::Supervise])),
        value_name: "N|unlimited",
        default: "unlimited",
        meaning: "restarts of dockerd before giving up",
        apply: |k, s, v, o| {
            s.max_restarts = parse_max_restarts(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "mss",
        aliases: &["mss.mode"],
        env: "MTUVISOR_MSS",
        flag: Some(("--mss", ENFORCING)),
        value_name: "pmtu|off|N",
        default: "pmtu",
        meaning: "TCP MSS clamping: `pmtu`, `off` or a fixed MSS",
        apply: |k, s, v, o| {
            s.mss = parse_mss(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "mss_backend",
        aliases: &["mss.backend"],
        env: "MTUVISOR_MSS_BACKEND",
        flag: None,
        value_name: "BACKEND",
        default: "auto",
        meaning: "`auto`, `iptables`, `iptables-legacy`, `nftables`",
        apply: |k, s, v, o| {
            s.mss_backend = parse_backend(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "mss_keep_on_exit",
        aliases: &["mss.keep_on_exit"],
        env: "MTUVISOR_MSS_KEEP_ON_EXIT",
        flag: None,
        value_name: "BOOL",
        default: "false",
        meaning: "leave the MSS rules on a clean stop",
        apply: |k, s, v, o| {
            s.mss_keep_on_exit =
                parse_bool(&v.text(k.name, o)?, k.name, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "enforce_mtu",
        aliases: &[],
        env: "MTUVISOR_ENFORCE_MTU",
        flag: None,
        value_name: "BOOL",
        default: "true",
        meaning: "`false`: MSS clamping only",
        apply: |k, s, v, o| {
            s.enforce_mtu = parse_bool(&v.text(k.name, o)?, k.name, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "realtime_priority",
        aliases: &[],
        env: "MTUVISOR_REALTIME_PRIORITY",
        flag: Some(("--realtime-priority", ENFORCING)),
        value_name: "off|1-99",
        default: "1",
        meaning: "`SCHED_FIFO` priority of the threads that clamp, so that they win the race with a container's start on a busy node (needs CAP_SYS_NICE, and a real-time budget where the kernel schedules real time per cgroup; without them, ordinary scheduling and one line saying why), or `off`",
        apply: |k, s, v, o| {
            s.realtime_priority =
                parse_realtime_priority(&v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "metrics_addr",
        aliases: &[],
        env: "MTUVISOR_METRICS_ADDR",
        flag: Some(("--metrics-addr", ENFORCING)),
        value_name: "IP:PORT",
        default: "off",
        meaning: "`IP:PORT` to serve `/metrics`, `/healthz` and `/livez` on, e.g. `0.0.0.0:9464`",
        apply: |k, s, v, o| {
            s.metrics_addr = parse_listen_addr(k.name, &v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "health_addr",
        aliases: &[],
        env: "MTUVISOR_HEALTH_ADDR",
        flag: Some(("--health-addr", ENFORCING)),
        value_name: "IP:PORT",
        default: "off",
        meaning: "`IP:PORT` to serve `/healthz` and `/livez` on apart from `/metrics`, with connections of its own: under `node`, `127.0.0.1:9465`, which the kubelet probes with `host: 127.0.0.1` and no pod can reach or fill",
        apply: |k, s, v, o| {
            s.health_addr = parse_listen_addr(k.name, &v.text(k.name, o)?, o.clone())?;
            Ok(())
        },
    },
    Key {
        name: "liveness_timeout",
        aliases: &[],
        env: "MTUVISOR_LIVENESS_TIMEOUT",
        flag: Some(("--liveness-timeout", ENFORCING)),
        value_name: "DURATION",
        default: "30s",
        meaning: "`/livez` answers 503 once the enforcement loop, the MTU setter's workers or (`node`) discovery has made no progress this long while work waits, 2s–1h",
        apply: |k, s, v, o| {
            let text = v.text(k.name, o)?;
            s.liveness_timeout = parse_duration(&text, k.name, LIVENESS_RANGE, o.clone())?;
            Ok(())
        },
    },
];

/// The row for a TOML key or one of its dotted spellings.
pub fn find(toml_key: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.name == toml_key || k.aliases.contains(&toml_key))
}

pub fn by_name(name: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("not a setting: {name}"))
}

/// Every TOML spelling, for the unknown-key message.
pub fn known_keys() -> String {
    KEYS.iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The README's configuration table.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | env | flag | default | meaning |\n|---|---|---|---|---|\n");
    for k in KEYS {
        let flag = match k.flag {
            None => String::new(),
            Some((f, cmds)) if cmds == ENFORCING || cmds == [Cmd::Global] => format!("`{f}`"),
            Some((f, cmds)) => {
                let names: Vec<&str> = cmds
                    .iter()
                    .map(|c| match c {
                        Cmd::Watch => "watch",
                        Cmd::Supervise => "supervise",
                        Cmd::Node => "node",
                        Cmd::Global => "all",
                    })
                    .collect();
                format!("`{f}` ({})", names.join(", "))
            }
        };
        let aliases = if k.aliases.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = k.aliases.iter().map(|a| format!("`{a}`")).collect();
            format!(" (or {})", list.join(", "))
        };
        let default = match k.default {
            "" => "none".to_string(),
            d => format!("`{d}`"),
        };
        out.push_str(&format!(
            "| `{}`{aliases} | `{}` | {flag} | {default} | {} |\n",
            k.name, k.env, k.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_is_the_key_table() {
        let readme = include_str!("../../docs/configuration.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "docs/configuration.md's configuration table must be exactly:\n{table}"
        );
    }

    #[test]
    fn env_names_follow_the_prefix_the_environment_layer_reads() {
        for k in KEYS {
            assert_eq!(
                k.env,
                format!("MTUVISOR_{}", k.name.to_uppercase()),
                "{}",
                k.name
            );
        }
    }

    #[test]
    fn names_flags_and_env_are_unique() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.env, b.env);
                assert!(a.flag_name().is_none() || a.flag_name() != b.flag_name());
            }
        }
    }
}
