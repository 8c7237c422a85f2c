//! The judgement: what is wrong in a [`Report`], most important first, and
//! how to fix each. Pure: it reads the report and nothing else.

use super::{LinkRow, Problem, Report, MTU_OPTION};

pub(super) fn judge(r: &Report) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(outer) = &r.outer else {
        problems.push(Problem {
            what: "no default route: the outer MTU is unknown".into(),
            fix: vec!["give it: mtuvisor supervise --mtu N (or MTUVISOR_MTU=N)".into()],
        });
        return problems;
    };
    // What mtuvisor would enforce: the outer MTU (or `mtu`), at most
    // `mtu_ceiling`; links above it are the problem.
    let t = outer.target_mtu;
    let limit = match outer.target_source {
        "ceiling" => format!("mtu_ceiling {t}"),
        "fixed" => format!("the configured mtu {t}"),
        _ => format!("the outer MTU {t}"),
    };
    let run_mtuvisor = format!(
        "run mtuvisor: `mtuvisor supervise` as the dind entrypoint, `mtuvisor watch` as a sidecar, \
         or `mtuvisor node` on every node; it keeps every Docker link at or below {t}"
    );
    // The path beyond eth0 comes first: no setting of eth0's MTU fixes it.
    for p in &r.probes {
        let Some(path) = p.path_mtu.filter(|m| *m < t) else {
            continue;
        };
        let quoted = &p.target;
        let hole = if p.black_hole {
            "; bigger packets vanish without an ICMP \"fragmentation needed\" (a black hole)"
        } else {
            ""
        };
        problems.push(Problem {
            what: format!(
                "the path to {} carries at most {path} bytes, less than the {t} enforced on \
                 Docker's links{hole}. MSS clamping covers TCP only: UDP from containers (QUIC \
                 and HTTP/3, large DNS answers) is protected only by their link MTU, which only \
                 the first two fixes lower",
                p.target
            ),
            fix: vec![
                format!(
                    "path_probe = [\"{quoted}\"]   (mtuvisor config, or MTUVISOR_PATH_PROBE={quoted}): \
                     mtuvisor measures the path every path_probe_interval and follows it"
                ),
                format!("or mtu = {path}   (mtuvisor config, or MTUVISOR_MTU={path})"),
                format!("mss = {}   (TCP MSS clamping for what MTU clamping cannot reach)", path - 40),
                format!("without mtuvisor: dockerd --mtu={path}; GitLab: command: [\"--mtu={path}\"]; Drone plugins/docker: mtu: {path}"),
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
                "Docker network {} (bridge {}): {}, above {limit}{containers}",
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
            what: format!("Docker links above {limit}: {}", names.join(", ")),
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
            what: format!("dockerd runs with --mtu={m}, above {limit}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        Capabilities, DockerView, IptablesFamily, MssView, MtuvisorView, NetworkRow, Outcome,
        Outer, ProbeResult,
    };

    /// A pod at 1450 where nothing is wrong.
    fn healthy() -> Report {
        Report {
            schema: 1,
            healthy: true,
            problems: Vec::new(),
            notes: Vec::new(),
            outer: Some(Outer {
                mtu: 1450,
                interface: "eth0".into(),
                source: "ipv4 link_mtu".into(),
                target_mtu: 1450,
                target_source: "link",
                mtu_ceiling: 1500,
            }),
            links: vec![LinkRow {
                name: "docker0".into(),
                role: "bridge",
                mtu: 1450,
                bridge: None,
                over_target: false,
            }],
            docker: None,
            mss: MssView {
                backend: Some("iptables (nf_tables)".into()),
                rules_present: Some(true),
                dockerd_family: IptablesFamily::NfTables,
                same_family: Some(true),
            },
            mtuvisor: MtuvisorView {
                health_url: "http://127.0.0.1:9464/healthz".into(),
                running: true,
            },
            capabilities: Capabilities {
                net_admin: true,
                net_raw: true,
                sys_admin: true,
            },
            probes: Vec::new(),
        }
    }

    fn docker(networks: Vec<NetworkRow>, dockerd_mtu: Option<u32>) -> DockerView {
        DockerView {
            socket: "/var/run/docker.sock".into(),
            dockerd_mtu,
            daemon_json_mtu: None,
            default_network_mtu: None,
            networks,
        }
    }

    #[test]
    fn nothing_wrong_is_no_problem() {
        assert!(judge(&healthy()).is_empty());
    }

    #[test]
    fn no_outer_mtu_is_the_one_problem_and_says_how_to_give_it() {
        let mut r = healthy();
        r.outer = None;
        r.links[0].over_target = true;
        let problems = judge(&r);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].what.contains("no default route"));
        assert!(problems[0].fix[0].contains("--mtu N"));
    }

    #[test]
    fn a_narrower_path_comes_first_with_the_mtu_and_mss_to_set() {
        let mut r = healthy();
        r.links[0].over_target = true;
        r.links[0].mtu = 1500;
        r.probes.push(ProbeResult {
            target: "registry.example:443".into(),
            address: Some("192.0.2.9".into()),
            method: Some(crate::doctor::Method::Icmp),
            outcome: Outcome::Bottleneck,
            path_mtu: Some(1400),
            black_hole: true,
            reported_mtu: None,
            sizes_tried: 9,
            took_ms: 40,
            note: String::new(),
        });
        let problems = judge(&r);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].what.contains("at most 1400") && problems[0].what.contains("black hole")
        );
        assert!(problems[0].what.contains("UDP"), "what MSS cannot cover");
        assert!(problems[0]
            .what
            .contains("QUIC and HTTP/3, large DNS answers"));
        assert!(problems[0].fix[0].starts_with("path_probe = [\"registry.example:443\"]"));
        assert!(problems[0]
            .fix
            .iter()
            .any(|f| f.starts_with("or mtu = 1400")));
        assert!(problems[0].fix.iter().any(|f| f.starts_with("mss = 1360")));
        assert!(
            problems[1].what.contains("docker0 (1500)"),
            "then the loose link"
        );
    }

    #[test]
    fn a_network_above_the_target_names_itself_and_its_links_are_not_said_twice() {
        let mut r = healthy();
        r.links = vec![LinkRow {
            name: "br-0123456789ab".into(),
            role: "bridge",
            mtu: 1500,
            bridge: None,
            over_target: true,
        }];
        r.docker = Some(docker(
            vec![NetworkRow {
                name: "ci".into(),
                bridge: "br-0123456789ab".into(),
                mtu_option: Some(1500),
                bridge_mtu: Some(1500),
                containers: vec!["job".into()],
                over_target: true,
            }],
            Some(1500),
        ));
        let problems = judge(&r);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0]
            .what
            .starts_with("Docker network ci (bridge br-0123456789ab)"));
        assert!(problems[0].what.contains("containers on it: job"));
        assert!(problems[0].fix[1].contains("com.docker.network.driver.mtu=1450"));
        assert!(problems[1].what.contains("--mtu=1500"));
    }

    #[test]
    fn a_jumbo_pod_held_at_the_ceiling_is_no_problem_and_a_link_above_it_is() {
        let mut r = healthy();
        let outer = r.outer.as_mut().unwrap();
        (outer.mtu, outer.target_mtu, outer.target_source) = (9001, 1500, "ceiling");
        r.links[0].mtu = 1500;
        assert!(judge(&r).is_empty(), "docker0 at 1500 on a 9001 pod");
        r.links[0].mtu = 9001;
        r.links[0].over_target = true;
        let problems = judge(&r);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].what.contains("above mtu_ceiling 1500"),
            "{problems:?}"
        );
    }

    #[test]
    fn rules_in_another_family_than_dockerds_are_a_problem() {
        let mut r = healthy();
        r.mss.same_family = Some(false);
        r.mss.dockerd_family = IptablesFamily::Legacy;
        let problems = judge(&r);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].what.contains("dockerd uses iptables-legacy"));
    }
}
