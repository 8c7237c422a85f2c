//! What the firewall tests ask of an ensure.

use mtuvisor::firewall::{EnsureReport, Ensured, FirewallError};

/// One result for all of a report's families: the first error, else
/// `Installed` if any family changed.
pub fn overall(report: EnsureReport) -> Result<Ensured, FirewallError> {
    let mut result = Ensured::Unchanged;
    for (_, r) in report.families {
        if r? == Ensured::Installed {
            result = Ensured::Installed;
        }
    }
    Ok(result)
}

/// A directory of wrappers for the firewall tools: each writes, to `log`,
/// the capabilities and no_new_privs of the process that runs it (what
/// the tool itself gets after exec) and its parent's name, then executes
/// the real tool with the same arguments. Put first on the PATH of the
/// process under test.
pub fn capability_recorders(dir: &std::path::Path, log: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for tool in [
        "iptables",
        "ip6tables",
        "iptables-restore",
        "ip6tables-restore",
        "iptables-legacy",
        "ip6tables-legacy",
        "iptables-legacy-restore",
        "ip6tables-legacy-restore",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
        "nft",
    ] {
        let real = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists());
        let Some(real) = real else { continue };
        let script = format!(
            "#!/bin/sh\n\
             caps=$(grep -E '^(CapEff|CapPrm|CapAmb|NoNewPrivs):' /proc/$$/status | tr -s '\\t\\n' '  ')\n\
             echo \"{tool} parent=$(cat /proc/$PPID/comm) $caps\" >> {log}\n\
             exec {real} \"$@\"\n",
            log = log.display(),
            real = real.display()
        );
        let path = dir.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// The lines [`capability_recorders`] wrote for tools that `parent` ran:
/// (tool, CapEff, NoNewPrivs).
pub fn recorded_capabilities(log: &std::path::Path, parent: &str) -> Vec<(String, u64, bool)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(&format!(" parent={parent} ")))
        .filter_map(|l| {
            let tool = l.split_whitespace().next()?.to_string();
            let field = |name: &str| {
                l.split(name)
                    .nth(1)?
                    .split_whitespace()
                    .next()
                    .map(String::from)
            };
            let eff = u64::from_str_radix(&field("CapEff:")?, 16).ok()?;
            let nnp = field("NoNewPrivs:")? == "1";
            Some((tool, eff, nnp))
        })
        .collect()
}
