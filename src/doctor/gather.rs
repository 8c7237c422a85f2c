//! Reading what doctor reports on: the managed links, Docker's networks
//! and dockerd's flags, the MSS rules, a running mtuvisor, the
//! capabilities at hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    Capabilities, DockerView, IptablesFamily, LinkRow, MssView, MtuvisorView, NetworkRow, Request,
    DOCKER_ANSWER, HEALTH_ANSWER, MTU_OPTION,
};
use crate::config::Settings;
use crate::docker::args::user_mtu;
use crate::enforce::BridgeMatcher;
use crate::firewall::{legacy_in_use, select_backend, BackendChoice, MssMode};
use crate::netlink::Link;

pub(super) fn managed_links(
    links: &[Link],
    matcher: &BridgeMatcher,
    target: Option<u32>,
) -> Vec<LinkRow> {
    let bridges: BTreeMap<u32, &Link> = links
        .iter()
        .filter(|l| l.is_bridge() && matcher.matches(&l.name))
        .map(|l| (l.index, l))
        .collect();
    let over = |mtu: u32| target.is_some_and(|t| mtu > t);
    let mut rows: Vec<LinkRow> = bridges
        .values()
        .map(|b| LinkRow {
            name: b.name.to_string(),
            role: "bridge",
            mtu: b.mtu,
            bridge: None,
            over_target: over(b.mtu),
        })
        .collect();
    for l in links {
        if let Some(bridge) = l.master.and_then(|m| bridges.get(&m)) {
            rows.push(LinkRow {
                name: l.name.to_string(),
                role: "port",
                mtu: l.mtu,
                bridge: Some(bridge.name.to_string()),
                over_target: over(l.mtu),
            });
        }
    }
    rows
}

pub(super) async fn read_docker(request: &Request, notes: &mut Vec<String>) -> Option<DockerView> {
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

/// How much of a process's command line, and of daemon.json, is read.
const CMDLINE_BYTES: usize = 64 << 10;
const DAEMON_JSON_BYTES: usize = 1 << 20;

/// `--mtu` and `--config-file` of a dockerd in this PID namespace.
pub(super) fn dockerd_command_line() -> (Option<u32>, PathBuf) {
    let default = PathBuf::from("/etc/docker/daemon.json");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (None, default);
    };
    for entry in dir.flatten() {
        // A process's arguments, bounded (a pod's process can make them
        // huge), read without following anything (`readfile`).
        let Ok(raw) =
            crate::readfile::read(&entry.path().join("cmdline"), CMDLINE_BYTES).map(|b| b.bytes)
        else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| crate::docker::is_dockerd(a)) {
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
pub(super) fn daemon_json(path: &Path) -> (Option<u32>, Option<u32>) {
    let Some(v) = crate::readfile::read_text(path, DAEMON_JSON_BYTES)
        .ok()
        .filter(|(_, truncated)| !truncated)
        .and_then(|(t, _)| serde_json::from_str::<serde_json::Value>(&t).ok())
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

pub(super) fn read_mss(mode: MssMode, caps: &Capabilities, notes: &mut Vec<String>) -> MssView {
    let legacy = legacy_in_use();
    let dockerd_family = if legacy {
        IptablesFamily::Legacy
    } else {
        IptablesFamily::NfTables
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
        BackendChoice::IptablesLegacy => dockerd_family == IptablesFamily::Legacy,
        _ => dockerd_family == IptablesFamily::NfTables,
    });
    view
}

pub(super) async fn mtuvisor_health(settings: &Settings) -> MtuvisorView {
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
pub(super) fn capabilities() -> Capabilities {
    use crate::caps;
    let has = |cap| caps::has(cap).unwrap_or(false);
    Capabilities {
        net_admin: has(caps::NET_ADMIN),
        net_raw: has(caps::NET_RAW),
        sys_admin: has(caps::SYS_ADMIN),
    }
}
