//! The report as a person reads it: problems first, each with its fix,
//! then the chain as aligned tables. Colour only on a terminal.

use std::fmt::Write as _;

use super::Report;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bad(&self, t: &str) -> String {
        self.wrap("1;31", t)
    }
    fn good(&self, t: &str) -> String {
        self.wrap("1;32", t)
    }
    fn head(&self, t: &str) -> String {
        self.wrap("1", t)
    }
}

/// Rows of cells, columns padded to their widest cell.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

pub fn text(r: &Report, colour: bool) -> String {
    let p = Paint { on: colour };
    let mut out = String::new();
    if r.healthy {
        let _ = writeln!(out, "{} no MTU problem found", p.good("OK"));
    }
    for (i, problem) in r.problems.iter().enumerate() {
        let _ = writeln!(
            out,
            "{} {}",
            p.bad(&format!("PROBLEM {}:", i + 1)),
            problem.what
        );
        for fix in &problem.fix {
            let _ = writeln!(out, "  fix: {fix}");
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "\n{}", p.head("outer MTU"));
    match &r.outer {
        Some(o) => {
            let _ = writeln!(out, "  {} on {} ({})", o.mtu, o.interface, o.source);
            let _ = writeln!(
                out,
                "  target: {} ({})",
                o.target_mtu,
                match o.target_source {
                    "ceiling" => format!(
                        "mtu_ceiling {}: the outer MTU is above it; Docker's links stay at {} as \
                         plain dockerd's do; raise mtu_ceiling to use {}",
                        o.mtu_ceiling, o.mtu_ceiling, o.mtu
                    ),
                    other => other.to_string(),
                }
            );
        }
        None => {
            let _ = writeln!(out, "  unknown: no default route");
        }
    }
    if !r.probes.is_empty() {
        let _ = writeln!(out, "\n{}", p.head("path beyond eth0"));
        let mut rows = vec![[
            "target",
            "method",
            "path MTU",
            "black hole",
            "reported",
            "note",
        ]
        .map(String::from)
        .to_vec()];
        for pr in &r.probes {
            rows.push(vec![
                pr.target.clone(),
                opt(pr.method.map(|m| format!("{m:?}").to_lowercase())),
                opt(pr.path_mtu),
                if pr.path_mtu.is_some() {
                    if pr.black_hole {
                        "yes"
                    } else {
                        "no"
                    }
                } else {
                    "-"
                }
                .into(),
                opt(pr.reported_mtu),
                format!(
                    "{:?} in {} ms, sizes tried: {}; {}",
                    pr.outcome, pr.took_ms, pr.sizes_tried, pr.note
                )
                .trim_end_matches("; ")
                .to_lowercase(),
            ]);
        }
        table(&mut out, &rows);
    }
    if let Some(d) = &r.docker {
        let _ = writeln!(out, "\n{} ({})", p.head("Docker networks"), d.socket);
        let mut rows = vec![[
            "network",
            "bridge",
            "mtu option",
            "bridge MTU",
            "containers",
            "",
        ]
        .map(String::from)
        .to_vec()];
        for n in &d.networks {
            rows.push(vec![
                n.name.clone(),
                n.bridge.clone(),
                opt(n.mtu_option),
                opt(n.bridge_mtu),
                if n.containers.is_empty() {
                    "-".into()
                } else {
                    n.containers.join(",")
                },
                if n.over_target {
                    p.bad("above target")
                } else {
                    String::new()
                },
            ]);
        }
        table(&mut out, &rows);
        let _ = writeln!(
            out,
            "  dockerd --mtu: {}   daemon.json mtu: {}   default-network-opts mtu: {}",
            opt(d.dockerd_mtu),
            opt(d.daemon_json_mtu),
            opt(d.default_network_mtu)
        );
    }
    let _ = writeln!(out, "\n{}", p.head("Docker links here"));
    if r.links.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut rows = vec![["link", "role", "MTU", "bridge", ""]
            .map(String::from)
            .to_vec()];
        for l in &r.links {
            rows.push(vec![
                l.name.clone(),
                l.role.into(),
                l.mtu.to_string(),
                opt(l.bridge.clone()),
                if l.over_target {
                    p.bad("above target")
                } else {
                    String::new()
                },
            ]);
        }
        table(&mut out, &rows);
    }
    let _ = writeln!(out, "\n{}", p.head("MSS clamping"));
    let present = match r.mss.rules_present {
        Some(true) => "present",
        Some(false) => "absent",
        None => "unknown",
    };
    let _ = writeln!(
        out,
        "  mtuvisor rules: {present}   backend: {}   dockerd uses: {}",
        opt(r.mss.backend.clone()),
        r.mss.dockerd_family
    );
    let _ = writeln!(out, "\n{}", p.head("here"));
    let _ = writeln!(
        out,
        "  mtuvisor running: {} ({})   CAP_NET_ADMIN: {}   CAP_NET_RAW: {}   CAP_SYS_ADMIN: {}",
        if r.mtuvisor.running { "yes" } else { "no" },
        r.mtuvisor.health_url,
        yes(r.capabilities.net_admin),
        yes(r.capabilities.net_raw),
        yes(r.capabilities.sys_admin)
    );
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
