//! `mtuvisor doctor`: reads the whole MTU chain of this namespace, probes
//! the path beyond `eth0` when asked, and says what is wrong and exactly
//! what to do. Read-only: it changes nothing, and runs with whatever
//! privileges it has, saying what it could not read and why.

mod probe;
mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use probe::{probe, Method, Outcome, ProbeResult, Target};
pub use render::text;

use crate::config::Settings;
use crate::detect::{detect_outer_mtu, DetectError};
use crate::docker::args::user_mtu;
use crate::enforce::BridgeMatcher;
use crate::firewall::{legacy_in_use, select_backend, BackendChoice, MssMode};
use crate::netlink::{Link, Rtnl};

/// The version of the JSON document (`--json`); documented in the README.
pub const SCHEMA_VERSION: u32 = 1;
/// Docker's option for a bridge network's MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// How long the Docker API and mtuvisor's `/healthz` get to answer.
const DOCKER_ANSWER: Duration = Duration::from_secs(5);
const HEALTH_ANSWER: Duration = Duration::from_secs(1);
/// IPv6's minimum MTU: the probe's default floor.
pub const PROBE_FLOOR: u32 = 1280;

/// What to look at, from the command line.
pub struct Request {
    pub docker_socket: Option<PathBuf>,
    pub probes: Vec<Target>,
    pub probe_floor: u32,
    pub probe_timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub healthy: bool,
    /// What needs fixing, most important first, each with the fix.
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not problems (what could not be read).
    pub notes: Vec<String>,
    pub outer: Option<Outer>,
    pub links: Vec<LinkRow>,
    pub docker: Option<DockerView>,
    pub mss: MssView,
    pub mtuvisor: MtuvisorView,
    pub capabilities: Capabilities,
    pub probes: Vec<ProbeResult>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub what: String,
    pub fix: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Outer {
    pub mtu: u32,
    pub interface: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct LinkRow {
    pub name: String,
    /// `bridge` or `port` (a host-side veth of a managed bridge).
    pub role: &'static str,
    pub mtu: u32,
    pub bridge: Option<String>,
    pub over_target: bool,
}

#[derive(Debug, Serialize)]
pub struct DockerView {
    pub socket: String,
    /// `--mtu` on dockerd's command line, if it runs in this PID namespace.
    pub dockerd_mtu: Option<u32>,
    /// `mtu` and `default-network-opts` in daemon.json, if readable.
    pub daemon_json_mtu: Option<u32>,
    pub default_network_mtu: Option<u32>,
    pub networks: Vec<NetworkRow>,
}

#[derive(Debug, Serialize)]
pub struct NetworkRow {
    pub name: String,
    pub bridge: String,
    pub mtu_option: Option<u32>,
    /// The bridge's actual MTU; `None` while it has no link here.
    pub bridge_mtu: Option<u32>,
    pub containers: Vec<String>,
    pub over_target: bool,
}

#[derive(Debug, Serialize)]
pub struct MssView {
    pub backend: Option<String>,
    /// Whether mtuvisor's rules are in place; `None`: could not be read.
    pub rules_present: Option<bool>,
    /// The iptables family dockerd uses here.
    pub dockerd_family: &'static str,
    pub same_family: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct MtuvisorView {
    pub health_url: String,
    pub running: bool,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub net_admin: bool,
    pub net_raw: bool,
    pub sys_admin: bool,
}

/// Reads everything and judges it.
pub async fn examine(settings: &Settings, request: &Request) -> Report {
    let mut notes = Vec::new();
    let capabilities = capabilities();
    let rtnl = Rtnl::connect().ok();
    let outer = match &rtnl {
        Some(r) => match detect_outer_mtu(r).await {
            Ok(o) => Some(Outer {
                mtu: o.mtu,
                interface: o.interface,
                source: o.source,
            }),
            Err(DetectError::NoDefaultRoute) => None,
            Err(e) => {
                notes.push(format!("cannot read the routes: {e}"));
                None
            }
        },
        None => {
            notes.push("cannot open a netlink socket".into());
            None
        }
    };
    let target = outer.as_ref().map(|o| o.mtu);
    let docker = read_docker(request, &mut notes).await;
    let mut matcher = BridgeMatcher::new(settings.bridge_patterns.clone());
    if let Some(d) = &docker {
        matcher.set_docker_bridges(d.networks.iter().map(|n| n.bridge.clone()).collect());
    }
    let all_links = match &rtnl {
        Some(r) => r.links().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let links = managed_links(&all_links, &matcher, target);
    let docker = docker.map(|mut d| {
        for n in &mut d.networks {
            n.bridge_mtu = all_links.iter().find(|l| l.name == n.bridge).map(|l| l.mtu);
            n.over_target = target.is_some_and(|t| {
                n.bridge_mtu.is_some_and(|m| m > t) || n.mtu_option.is_some_and(|m| m > t)
            });
        }
        d
    });
    let mss = read_mss(settings.mss, &capabilities, &mut notes);
    let mtuvisor = mtuvisor_health(settings).await;
    let ceiling = target.unwrap_or(1500);
    let probes: Vec<ProbeResult> = {
        let (targets, floor, timeout) = (
            request.probes.clone(),
            request.probe_floor,
            request.probe_timeout,
        );
        tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .map(|t| probe(t, floor, ceiling, timeout))
                .collect()
        })
        .await
        .unwrap_or_default()
    };
    if !capabilities.net_admin {
        notes.push(
            "no CAP_NET_ADMIN here: mtuvisor could not change MTUs or firewall rules in this \
             namespace. Where a platform allows neither privileged containers nor NET_ADMIN \
             (virtual-kubelet nodes), dockerd cannot run either: build with a daemonless builder \
             that runs RUN steps in the pod's own network (kaniko, rootless BuildKit with host \
             networking), which avoids the nested MTU altogether"
                .into(),
        );
    }
    let mut report = Report {
        schema: SCHEMA_VERSION,
        healthy: false,
        problems: Vec::new(),
        notes,
        outer,
        links,
        docker,
        mss,
        mtuvisor,
        capabilities,
        probes,
    };
    report.problems = judge(&report);
    report.healthy = report.problems.is_empty();
    report
}

fn managed_links(links: &[Link], matcher: &BridgeMatcher, target: Option<u32>) -> Vec<LinkRow> {
    let bridges: BTreeMap<u32, &Link> = links
        .iter()
        .filter(|l| l.is_bridge() && matcher.matches(&l.name))
        .map(|l| (l.index, l))
        .collect();
    let over = |mtu: u32| target.is_some_and(|t| mtu > t);
    let mut rows: Vec<LinkRow> = bridges
        .values()
        .map(|b| LinkRow {
            name: b.name.clone(),
            role: "bridge",
            mtu: b.mtu,
            bridge: None,
            over_target: over(b.mtu),
        })
        .collect();
    for l in links {
        if let Some(bridge) = l.master.and_then(|m| bridges.get(&m)) {
            rows.push(LinkRow {
                name: l.name.clone(),
                role: "port",
                mtu: l.mtu,
                bridge: Some(bridge.name.clone()),
                over_target: over(l.mtu),
            });
        }
    }
    rows
}

async fn read_docker(request: &Request, notes: &mut Vec<String>) -> Option<DockerView> {
    let socket = request
        .docker_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::docker::args::DEFAULT_SOCKET));
    if !socket.exists() {
        if request.docker_socket.is_some() {
            notes.push(format!("{} does not exist", socket.display()));
        }
        return None;
    }
    let docker = match tokio::time::timeout(DOCKER_ANSWER, crate::docker::connect(&socket)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            notes.push(format!("Docker API: {e}"));
            return None;
        }
        Err(_) => {
            notes.push(format!(
                "{} did not answer within {}s",
                socket.display(),
                DOCKER_ANSWER.as_secs()
            ));
            return None;
        }
    };
    let listed = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap_or_default();
    let mut networks = Vec::new();
    for n in listed {
        let Some(bridge) = crate::docker::bridge_name(&n) else {
            continue;
        };
        let name = n.name.clone().unwrap_or_default();
        let inspected = docker
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok();
        let mut containers: Vec<String> = inspected
            .and_then(|i| i.containers)
            .map(|c| c.values().filter_map(|e| e.name.clone()).collect())
            .unwrap_or_default();
        containers.sort();
        networks.push(NetworkRow {
            mtu_option: n
                .options
                .as_ref()
                .and_then(|o| o.get(MTU_OPTION))
                .and_then(|v| v.parse().ok()),
            name,
            bridge,
            bridge_mtu: None,
            containers,
            over_target: false,
        });
    }
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let (dockerd_mtu, config_file) = dockerd_command_line();
    let (daemon_json_mtu, default_network_mtu) = daemon_json(&config_file);
    Some(DockerView {
        socket: socket.display().to_string(),
        dockerd_mtu,
        daemon_json_mtu,
        default_network_mtu,
        networks,
    })
}

/// `--mtu` and `--config-file` of a dockerd in this PID namespace.
fn dockerd_command_line() -> (Option<u32>, PathBuf) {
    let default = PathBuf::from("/etc/docker/daemon.json");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (None, default);
    };
    for entry in dir.flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_dockerd = args
            .first()
            .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "dockerd"));
        if is_dockerd {
            let file = args
                .iter()
                .position(|a| a == "--config-file")
                .and_then(|i| args.get(i + 1).cloned())
                .or_else(|| {
                    args.iter()
                        .find_map(|a| a.strip_prefix("--config-file=").map(String::from))
                })
                .map(PathBuf::from)
                .unwrap_or(default);
            return (user_mtu(&args).and_then(|m| m.parse().ok()), file);
        }
    }
    (None, default)
}

/// daemon.json's `mtu`, and the bridge MTU in its `default-network-opts`.
fn daemon_json(path: &Path) -> (Option<u32>, Option<u32>) {
    let Some(v) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return (None, None);
    };
    let number = |v: Option<&serde_json::Value>| {
        v.and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(|n| n as u32)
    };
    (
        number(v.get("mtu")),
        number(v.pointer(&format!(
            "/default-network-opts/bridge/{}",
            MTU_OPTION.replace('/', "~1")
        ))),
    )
}

fn read_mss(mode: MssMode, caps: &Capabilities, notes: &mut Vec<String>) -> MssView {
    let legacy = legacy_in_use();
    let dockerd_family = if legacy {
        "iptables-legacy"
    } else {
        "nf_tables"
    };
    let mode = if mode == MssMode::Off {
        MssMode::Pmtu
    } else {
        mode
    };
    let mut view = MssView {
        backend: None,
        rules_present: None,
        dockerd_family,
        same_family: None,
    };
    let backend = match select_backend(BackendChoice::Auto) {
        Ok(b) => b,
        Err(e) => {
            notes.push(format!("MSS rules: {e}"));
            return view;
        }
    };
    view.backend = Some(backend.describe());
    if !caps.net_admin {
        notes.push("MSS rules: cannot read the firewall without CAP_NET_ADMIN".into());
        return view;
    }
    // The rules may live in either family: look in each, and say which.
    // The legacy tables only when something uses them already: reading a
    // legacy table creates it in this namespace, and that alone would make
    // dockerd's and mtuvisor's `auto` choose legacy.
    let mut found = None;
    let choices = [
        BackendChoice::IptablesLegacy,
        BackendChoice::IptablesNft,
        BackendChoice::Nftables,
    ];
    for choice in choices
        .into_iter()
        .filter(|c| legacy || *c != BackendChoice::IptablesLegacy)
    {
        if let Ok(b) = select_backend(choice) {
            if b.complete(mode).unwrap_or(false) {
                found = Some(b.kind());
                view.backend = Some(b.describe());
                break;
            }
        }
    }
    view.rules_present = Some(found.is_some());
    view.same_family = found.map(|k| match k {
        BackendChoice::IptablesLegacy => dockerd_family == "iptables-legacy",
        _ => dockerd_family == "nf_tables",
    });
    view
}

async fn mtuvisor_health(settings: &Settings) -> MtuvisorView {
    let addr = settings
        .metrics_addr
        .unwrap_or_else(|| "127.0.0.1:9464".parse().expect("an address"));
    let url = format!("http://{addr}/healthz");
    let running = tokio::time::timeout(HEALTH_ANSWER, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200"))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    MtuvisorView {
        health_url: url,
        running,
    }
}

/// The effective capabilities that matter here, from /proc/self/status.
fn capabilities() -> Capabilities {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |bit: u32| eff & (1 << bit) != 0;
    Capabilities {
        net_admin: has(12),
        net_raw: has(13),
        sys_admin: has(21),
    }
}

/// What is wrong, most important first, and how to fix each.
fn judge(r: &Report) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(outer) = &r.outer else {
        problems.push(Problem {
            what: "no default route: the outer MTU is unknown".into(),
            fix: vec!["give it: mtuvisor supervise --mtu N (or MTUVISOR_MTU=N)".into()],
        });
        return problems;
    };
    let t = outer.mtu;
    let run_mtuvisor = format!(
        "run mtuvisor: `mtuvisor supervise` as the dind entrypoint, `mtuvisor watch` as a sidecar, \
         or `mtuvisor node` on every node; it keeps every Docker link at or below {t}"
    );
    // The path beyond eth0 comes first: no setting of eth0's MTU fixes it.
    for p in &r.probes {
        let Some(path) = p.path_mtu.filter(|m| *m < t) else {
            continue;
        };
        let hole = if p.black_hole {
            "; bigger packets vanish without an ICMP \"fragmentation needed\" (a black hole)"
        } else {
            ""
        };
        problems.push(Problem {
            what: format!(
                "the path to {} carries at most {path} bytes, less than {}'s {t}{hole}",
                p.target, outer.interface
            ),
            fix: vec![
                format!("mtu = {path}   (mtuvisor config, or MTUVISOR_MTU={path})"),
                format!("mss = {}   (TCP MSS clamping for what MTU clamping cannot reach)", path - 40),
                format!("dockerd --mtu={path}; GitLab: command: [\"--mtu={path}\"]; Drone plugins/docker: mtu: {path}"),
            ],
        });
    }
    for n in r
        .docker
        .iter()
        .flat_map(|d| &d.networks)
        .filter(|n| n.over_target)
    {
        let mut what = Vec::new();
        if let Some(m) = n.bridge_mtu.filter(|m| *m > t) {
            what.push(format!("bridge MTU {m}"));
        }
        if let Some(m) = n.mtu_option.filter(|m| *m > t) {
            what.push(format!("MTU option {m}, which its new containers get"));
        }
        let containers = if n.containers.is_empty() {
            String::new()
        } else {
            format!("; containers on it: {}", n.containers.join(", "))
        };
        problems.push(Problem {
            what: format!(
                "Docker network {} (bridge {}): {}, above the outer {t}{containers}",
                n.name,
                n.bridge,
                what.join(", ")
            ),
            fix: vec![
                run_mtuvisor.clone(),
                format!(
                    "or recreate it: docker network create -o {MTU_OPTION}={t} {}",
                    n.name
                ),
                format!(
                    "or for networks created later (Engine 24+), daemon.json: \
                     \"default-network-opts\": {{\"bridge\": {{\"{MTU_OPTION}\": \"{t}\"}}}}"
                ),
            ],
        });
    }
    let known: Vec<&str> = r
        .docker
        .iter()
        .flat_map(|d| &d.networks)
        .filter(|n| n.over_target)
        .map(|n| n.bridge.as_str())
        .collect();
    let loose: Vec<&LinkRow> = r
        .links
        .iter()
        .filter(|l| l.over_target)
        .filter(|l| {
            !known.contains(&l.name.as_str())
                && !l.bridge.as_deref().is_some_and(|b| known.contains(&b))
        })
        .collect();
    if !loose.is_empty() {
        let names: Vec<String> = loose
            .iter()
            .map(|l| format!("{} ({})", l.name, l.mtu))
            .collect();
        problems.push(Problem {
            what: format!("Docker links above the outer MTU {t}: {}", names.join(", ")),
            fix: vec![
                run_mtuvisor.clone(),
                format!("or start dockerd with --mtu={t} (daemon.json: \"mtu\": {t})"),
            ],
        });
    }
    if let Some(m) = r
        .docker
        .as_ref()
        .and_then(|d| d.dockerd_mtu)
        .filter(|m| *m > t)
    {
        problems.push(Problem {
            what: format!("dockerd runs with --mtu={m}, above the outer {t}"),
            fix: vec![format!(
                "--mtu={t} (GitLab: command: [\"--mtu={t}\"]; Drone: mtu: {t})"
            )],
        });
    }
    if r.mss.same_family == Some(false) {
        problems.push(Problem {
            what: format!(
                "mtuvisor's MSS rules are in {}, but dockerd uses {}: forwarded traffic may miss them",
                r.mss.backend.clone().unwrap_or_default(),
                r.mss.dockerd_family
            ),
            fix: vec!["mss_backend = \"auto\" (the default) and restart mtuvisor".into()],
        });
    }
    problems
}
