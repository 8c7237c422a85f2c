//! `mtuvisor doctor`: reads the whole MTU chain of this namespace, probes
//! the path beyond `eth0` when asked, and says what is wrong and exactly
//! what to do. Read-only: it changes nothing, and runs with whatever
//! privileges it has, saying what it could not read and why.

mod gather;
mod judge;
mod render;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use crate::pmtu::{probe, Method, Outcome, ProbeResult, Target};
pub use render::text;

use crate::config::Settings;
use crate::detect::{outer_mtu, DetectError, TargetSource};
use crate::enforce::BridgeMatcher;
use crate::netlink::Rtnl;

/// The version of the JSON document (`--json`); documented in the README.
pub const SCHEMA_VERSION: u32 = 1;
/// Docker's option for a bridge network's MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// How long the Docker API and mtuvisor's `/healthz` get to answer.
const DOCKER_ANSWER: Duration = Duration::from_secs(5);
const HEALTH_ANSWER: Duration = Duration::from_secs(1);
/// IPv6's minimum MTU: the probe's default floor.
pub const PROBE_FLOOR: u32 = crate::pmtu::IPV6_MIN_MTU;

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
    /// What mtuvisor enforces here with these settings (before any path
    /// probe): the outer MTU or `mtu`, at most `mtu_ceiling`.
    pub target_mtu: u32,
    /// What decided it: `fixed`, `link`, `route`, `ceiling`, `floor`.
    pub target_source: &'static str,
    pub mtu_ceiling: u32,
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
    pub dockerd_family: IptablesFamily,
    pub same_family: Option<bool>,
}

/// Which iptables a dockerd writes its rules with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IptablesFamily {
    #[serde(rename = "iptables-legacy")]
    Legacy,
    #[serde(rename = "nf_tables")]
    NfTables,
}

impl std::fmt::Display for IptablesFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IptablesFamily::Legacy => "iptables-legacy",
            IptablesFamily::NfTables => "nf_tables",
        })
    }
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
    let capabilities = gather::capabilities();
    let rtnl = Rtnl::connect().ok();
    let outer = match &rtnl {
        Some(r) => match outer_mtu(r).await {
            Ok(o) => {
                let (target_mtu, origin) = TargetSource::configured(settings, o.clone()).decide();
                Some(Outer {
                    mtu: o.mtu,
                    interface: o.interface,
                    source: o.source,
                    target_mtu,
                    target_source: origin.label(),
                    mtu_ceiling: settings.mtu_ceiling,
                })
            }
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
    let target = outer.as_ref().map(|o| o.target_mtu);
    let docker = gather::read_docker(request, &mut notes).await;
    let mut matcher = BridgeMatcher::new(settings.bridge_patterns.clone());
    if let Some(d) = &docker {
        matcher.set_docker_bridges(d.networks.iter().map(|n| n.bridge.clone()).collect());
    }
    let all_links = match &rtnl {
        Some(r) => r
            .links_at_most(usize::MAX)
            .await
            .map(|l| l.links)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let links = gather::managed_links(&all_links, &matcher, target);
    let docker = docker.map(|mut d| {
        for n in &mut d.networks {
            n.bridge_mtu = all_links
                .iter()
                .find(|l| l.name == n.bridge.as_str())
                .map(|l| l.mtu);
            n.over_target = target.is_some_and(|t| {
                n.bridge_mtu.is_some_and(|m| m > t) || n.mtu_option.is_some_and(|m| m > t)
            });
        }
        d
    });
    let mss = gather::read_mss(settings.mss, &capabilities, &mut notes);
    let mtuvisor = gather::mtuvisor_health(settings).await;
    let ceiling = target.unwrap_or(settings.mtu_ceiling);
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
    report.problems = judge::judge(&report);
    report.healthy = report.problems.is_empty();
    report
}
