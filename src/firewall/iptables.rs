//! iptables and ip6tables, nf_tables flavour or legacy: a chain of our own
//! in the mangle table, jumped to first thing from FORWARD.
//!
//! Each ensure reads the family's mangle table once (`-S`), plans the
//! commands that turn what is there into exactly one complete copy, and
//! runs only those. Planning is a pure function, tested for every partial
//! state a crash, a flush or an older mtuvisor can leave.

use tracing::info;

use crate::process::find_program;

use super::{
    run, BackendChoice, EnsureReport, Ensured, Family, FirewallError, MssBackend, MssMode, CHAIN,
};

/// `-w` with a bound: how long a call waits for the xtables lock (held
/// by dockerd while it writes, or by anyone, forever) before it gives up
/// and the ensure is retried at the next reconcile. Without a number, `-w`
/// waits for ever.
const LOCK_WAIT_SECS: &str = "5";

pub struct Iptables {
    backend: &'static str,
    kind: BackendChoice,
    /// The iptables and ip6tables binaries; ip6tables is `None` when the
    /// tool or the kernel lacks IPv6 (said once, at selection).
    v4: String,
    v6: Option<String>,
}

impl Iptables {
    pub fn nft() -> Result<Iptables, FirewallError> {
        Iptables::with(
            "iptables (nf_tables)",
            BackendChoice::IptablesNft,
            "iptables",
            "ip6tables",
            "nf_tables",
        )
    }

    pub fn legacy() -> Result<Iptables, FirewallError> {
        Iptables::with(
            "iptables-legacy",
            BackendChoice::IptablesLegacy,
            "iptables-legacy",
            "ip6tables-legacy",
            "legacy",
        )
    }

    fn with(
        backend: &'static str,
        kind: BackendChoice,
        v4: &str,
        v6: &str,
        flavour: &str,
    ) -> Result<Iptables, FirewallError> {
        let missing = || FirewallError::Missing {
            tool: v4.to_string(),
            backend,
        };
        find_program(v4).ok_or_else(missing)?;
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
        } else if find_program(v6).is_none() {
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
            kind,
            v4: v4.to_string(),
            v6,
        })
    }

    fn tools(&self) -> impl Iterator<Item = (Family, &str)> {
        std::iter::once((Family::Ipv4, self.v4.as_str()))
            .chain(self.v6.as_deref().map(|t| (Family::Ipv6, t)))
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

/// What one family's mangle table holds of ours, from `iptables -t mangle -S`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TableState {
    /// `-N MTUVISOR-MSS` is listed.
    chain: bool,
    /// Our chain's rules, in order, as `-A MTUVISOR-MSS …` lines.
    rules: Vec<String>,
    /// 1-based positions in FORWARD of rules that jump to our chain.
    jumps: Vec<usize>,
}

fn parse_state(save: &str) -> TableState {
    let mut state = TableState::default();
    let chain_rule = format!("-A {CHAIN} ");
    let mut forward = 0;
    for line in save.lines().map(str::trim) {
        if line == format!("-N {CHAIN}") {
            state.chain = true;
        } else if line.starts_with(&chain_rule) {
            state.rules.push(line.to_string());
        } else if line.starts_with("-A FORWARD ") || line == "-A FORWARD" {
            forward += 1;
            if line.ends_with(&format!("-j {CHAIN}")) {
                state.jumps.push(forward);
            }
        }
    }
    state
}

/// The commands (after `-w -t mangle`) that turn `state` into exactly one
/// copy: the chain, `rule` alone in it, and one jump first in FORWARD; or,
/// with no rule, nothing of ours at all. Protection never lapses on the
/// way: what is added comes before what is deleted.
fn plan(state: &TableState, rule: Option<&str>) -> Vec<Vec<String>> {
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let mut steps = Vec::new();
    let Some(rule) = rule else {
        for pos in state.jumps.iter().rev() {
            steps.push(args(&["-D", "FORWARD", &pos.to_string()]));
        }
        if state.chain {
            steps.push(args(&["-F", CHAIN]));
            steps.push(args(&["-X", CHAIN]));
        }
        return steps;
    };
    if !state.chain {
        steps.push(args(&["-N", CHAIN]));
    }
    let keep = state.rules.iter().position(|r| r == rule);
    if keep.is_none() {
        steps.push(rule.split_whitespace().map(String::from).collect());
    }
    // Everything else in the chain (an older mode, a second copy) goes,
    // from the bottom up so that the positions hold; an appended rule is
    // below them all.
    for pos in (0..state.rules.len()).rev().filter(|i| Some(*i) != keep) {
        steps.push(args(&["-D", CHAIN, &(pos + 1).to_string()]));
    }
    let (first, shift) = if state.jumps.first() == Some(&1) {
        (true, 0)
    } else {
        steps.push(args(&["-I", "FORWARD", "1", "-j", CHAIN]));
        (false, 1)
    };
    for pos in state.jumps.iter().rev() {
        if !(first && *pos == 1) {
            steps.push(args(&["-D", "FORWARD", &(pos + shift).to_string()]));
        }
    }
    steps
}

fn apply_family(tool: &str, rule: Option<&str>) -> Result<Ensured, FirewallError> {
    let state = parse_state(&run(tool, &["-w", LOCK_WAIT_SECS, "-t", "mangle", "-S"])?);
    let steps = plan(&state, rule);
    for step in &steps {
        let mut full = vec!["-w", LOCK_WAIT_SECS, "-t", "mangle"];
        full.extend(step.iter().map(String::as_str));
        run(tool, &full)?;
    }
    Ok(if steps.is_empty() {
        Ensured::Unchanged
    } else {
        Ensured::Installed
    })
}

impl MssBackend for Iptables {
    fn ensure(&self, mode: MssMode) -> EnsureReport {
        let rule = desired_rule(mode);
        EnsureReport {
            families: self
                .tools()
                .map(|(family, tool)| (family, apply_family(tool, rule.as_deref())))
                .collect(),
            switched: None,
        }
    }

    fn complete(&self, mode: MssMode) -> Result<bool, FirewallError> {
        let rule = desired_rule(mode);
        for (_, tool) in self.tools() {
            let state = parse_state(&run(tool, &["-w", LOCK_WAIT_SECS, "-t", "mangle", "-S"])?);
            if !plan(&state, rule.as_deref()).is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn remove(&self) -> Result<(), FirewallError> {
        for (_, tool) in self.tools() {
            apply_family(tool, None)?;
        }
        Ok(())
    }

    fn families(&self) -> Vec<Family> {
        self.tools().map(|(family, _)| family).collect()
    }

    fn describe(&self) -> String {
        let families = if self.v6.is_some() {
            "IPv4+IPv6"
        } else {
            "IPv4"
        };
        format!("{} ({families}, mangle/{CHAIN})", self.backend)
    }

    fn kind(&self) -> BackendChoice {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PMTU: &str =
        "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu";
    const OLD: &str =
        "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1400";

    fn steps(state: &TableState, rule: Option<&str>) -> Vec<String> {
        plan(state, rule).iter().map(|s| s.join(" ")).collect()
    }

    fn complete() -> TableState {
        TableState {
            chain: true,
            rules: vec![PMTU.into()],
            jumps: vec![1],
        }
    }

    #[test]
    fn rules_as_iptables_prints_them() {
        assert_eq!(desired_rule(MssMode::Pmtu).unwrap(), PMTU);
        assert_eq!(
            desired_rule(MssMode::Fixed(1360)).unwrap(),
            "-A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1360"
        );
        assert_eq!(desired_rule(MssMode::Off), None);
    }

    #[test]
    fn state_is_read_from_the_whole_table() {
        let save = "-P PREROUTING ACCEPT\n-P FORWARD ACCEPT\n-N MTUVISOR-MSS\n-N OTHER\n\
                    -A FORWARD -j OTHER\n-A FORWARD -j MTUVISOR-MSS\n-A FORWARD -p tcp -j MTUVISOR-MSS\n\
                    -A MTUVISOR-MSS -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu\n\
                    -A OTHER -j RETURN\n";
        assert_eq!(
            parse_state(save),
            TableState {
                chain: true,
                rules: vec![PMTU.into()],
                jumps: vec![2, 3],
            }
        );
    }

    #[test]
    fn a_complete_copy_needs_nothing() {
        assert!(steps(&complete(), Some(PMTU)).is_empty());
    }

    #[test]
    fn from_nothing_everything_is_added() {
        assert_eq!(
            steps(&TableState::default(), Some(PMTU)),
            ["-N MTUVISOR-MSS", PMTU, "-I FORWARD 1 -j MTUVISOR-MSS"]
        );
    }

    #[test]
    fn chain_without_jump_gets_only_the_jump() {
        let state = TableState {
            jumps: vec![],
            ..complete()
        };
        assert_eq!(steps(&state, Some(PMTU)), ["-I FORWARD 1 -j MTUVISOR-MSS"]);
    }

    #[test]
    fn empty_chain_with_jump_gets_only_the_rule() {
        // What a flush of the chain, or a crash between -N and -A, leaves.
        let state = TableState {
            rules: vec![],
            ..complete()
        };
        assert_eq!(steps(&state, Some(PMTU)), [PMTU]);
    }

    #[test]
    fn jump_without_chain_gets_the_chain_and_rule() {
        // iptables itself refuses this state; a plan for it must still
        // converge (another tool could have left it).
        let state = TableState {
            chain: false,
            rules: vec![],
            jumps: vec![1],
        };
        assert_eq!(steps(&state, Some(PMTU)), ["-N MTUVISOR-MSS", PMTU]);
    }

    #[test]
    fn an_older_versions_rule_is_replaced_after_the_new_one_is_in() {
        let state = TableState {
            rules: vec![OLD.into()],
            ..complete()
        };
        assert_eq!(steps(&state, Some(PMTU)), [PMTU, "-D MTUVISOR-MSS 1"]);
    }

    #[test]
    fn extra_copies_are_removed_bottom_up() {
        let state = TableState {
            rules: vec![OLD.into(), PMTU.into(), PMTU.into(), OLD.into()],
            jumps: vec![1, 4, 7],
            chain: true,
        };
        assert_eq!(
            steps(&state, Some(PMTU)),
            [
                "-D MTUVISOR-MSS 4",
                "-D MTUVISOR-MSS 3",
                "-D MTUVISOR-MSS 1",
                "-D FORWARD 7",
                "-D FORWARD 4"
            ]
        );
    }

    #[test]
    fn a_jump_not_first_is_put_first_then_the_old_one_removed() {
        let state = TableState {
            jumps: vec![3],
            ..complete()
        };
        assert_eq!(
            steps(&state, Some(PMTU)),
            ["-I FORWARD 1 -j MTUVISOR-MSS", "-D FORWARD 4"]
        );
    }

    #[test]
    fn removal_takes_jumps_then_the_chain() {
        let state = TableState {
            jumps: vec![1, 5],
            ..complete()
        };
        assert_eq!(
            steps(&state, None),
            [
                "-D FORWARD 5",
                "-D FORWARD 1",
                "-F MTUVISOR-MSS",
                "-X MTUVISOR-MSS"
            ]
        );
        assert!(steps(&TableState::default(), None).is_empty());
    }
}
