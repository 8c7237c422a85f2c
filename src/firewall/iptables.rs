//! iptables and ip6tables, nf_tables flavour or legacy: a chain of our own
//! in the mangle table, jumped to first thing from FORWARD.

use tracing::info;

use super::{run, which, Ensured, FirewallError, MssBackend, MssMode, CHAIN};

pub struct Iptables {
    backend: &'static str,
    /// The iptables and ip6tables binaries; ip6tables is `None` when the
    /// tool or the kernel lacks IPv6 (said once, at selection).
    v4: String,
    v6: Option<String>,
}

impl Iptables {
    pub fn nft() -> Result<Iptables, FirewallError> {
        Iptables::with("iptables (nf_tables)", "iptables", "ip6tables", "nf_tables")
    }

    pub fn legacy() -> Result<Iptables, FirewallError> {
        Iptables::with(
            "iptables-legacy",
            "iptables-legacy",
            "ip6tables-legacy",
            "legacy",
        )
    }

    fn with(
        backend: &'static str,
        v4: &str,
        v6: &str,
        flavour: &str,
    ) -> Result<Iptables, FirewallError> {
        let missing = || FirewallError::Missing {
            tool: v4.to_string(),
            backend,
        };
        which(v4).ok_or_else(missing)?;
        // `iptables` may be either flavour; the nft backend must not end up
        // writing legacy tables, nor the reverse.
        let version = run(v4, &["--version"])?;
        if !version.contains(flavour) {
            return Err(missing());
        }
        let v6 = if !super::ipv6_enabled() {
            info!(
                backend,
                "IPv6 is disabled in this namespace; MSS clamping for IPv4 only"
            );
            None
        } else if which(v6).is_none() {
            info!(
                backend,
                tool = v6,
                "not installed; MSS clamping for IPv4 only"
            );
            None
        } else {
            Some(v6.to_string())
        };
        Ok(Iptables {
            backend,
            v4: v4.to_string(),
            v6,
        })
    }

    fn tools(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.v4.as_str()).chain(self.v6.as_deref())
    }
}

/// The rule in our chain, as `iptables -S` prints it.
fn desired_rule(mode: MssMode) -> Option<String> {
    let target = match mode {
        MssMode::Pmtu => "--clamp-mss-to-pmtu".to_string(),
        MssMode::Fixed(n) => format!("--set-mss {n}"),
        MssMode::Off => return None,
    };
    Some(format!(
        "-A {CHAIN} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS {target}"
    ))
}

const JUMP: &str = "-j MTUVISOR-MSS";

fn ensure_family(tool: &str, mode: MssMode) -> Result<Ensured, FirewallError> {
    let Some(rule) = desired_rule(mode) else {
        return remove_family(tool).map(|()| Ensured::Unchanged);
    };
    let mut changed = false;
    let chain = run(tool, &["-w", "-t", "mangle", "-S", CHAIN]);
    let rules: Vec<String> = match chain {
        Ok(out) => out
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(String::from)
            .collect(),
        Err(_) => {
            run(tool, &["-w", "-t", "mangle", "-N", CHAIN])?;
            changed = true;
            Vec::new()
        }
    };
    if rules != [rule.clone()] {
        run(tool, &["-w", "-t", "mangle", "-F", CHAIN])?;
        let args: Vec<&str> = rule.split_whitespace().collect();
        let mut full = vec!["-w", "-t", "mangle"];
        full.extend(args);
        run(tool, &full)?;
        changed = true;
    }
    // Exactly one jump, first in FORWARD (a crash may have left extras).
    let forward = run(tool, &["-w", "-t", "mangle", "-S", "FORWARD"])?;
    let jumps: Vec<usize> = forward
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .enumerate()
        .filter(|(_, l)| l.ends_with(JUMP))
        .map(|(i, _)| i + 1)
        .collect();
    if jumps != [1] {
        for _ in &jumps {
            run(tool, &["-w", "-t", "mangle", "-D", "FORWARD", "-j", CHAIN])?;
        }
        run(
            tool,
            &["-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", CHAIN],
        )?;
        changed = true;
    }
    Ok(if changed {
        Ensured::Installed
    } else {
        Ensured::Unchanged
    })
}

fn remove_family(tool: &str) -> Result<(), FirewallError> {
    while run(tool, &["-w", "-t", "mangle", "-D", "FORWARD", "-j", CHAIN]).is_ok() {}
    if run(tool, &["-w", "-t", "mangle", "-S", CHAIN]).is_ok() {
        run(tool, &["-w", "-t", "mangle", "-F", CHAIN])?;
        run(tool, &["-w", "-t", "mangle", "-X", CHAIN])?;
    }
    Ok(())
}

impl MssBackend for Iptables {
    fn ensure(&self, mode: MssMode) -> Result<Ensured, FirewallError> {
        let mut result = Ensured::Unchanged;
        for tool in self.tools() {
            if ensure_family(tool, mode)? == Ensured::Installed {
                result = Ensured::Installed;
            }
        }
        Ok(result)
    }

    fn remove(&self) -> Result<(), FirewallError> {
        for tool in self.tools() {
            remove_family(tool)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let families = if self.v6.is_some() {
            "IPv4+IPv6"
        } else {
            "IPv4"
        };
        format!("{} ({families}, mangle/{CHAIN})", self.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_as_iptables_prints_them() {
        assert_eq!(
            desired_rule(MssMode::Pmtu).unwrap(),
            "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
        );
        assert_eq!(
            desired_rule(MssMode::Fixed(1360)).unwrap(),
            "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1360"
        );
        assert_eq!(desired_rule(MssMode::Off), None);
    }
}
