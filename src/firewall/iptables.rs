//! iptables and ip6tables, nf_tables flavour or legacy: a chain of our own
//! in the mangle table, jumped to first thing from FORWARD.
//!
//! Under `node` the tables are a pod's, and whatever it put there is its
//! own: nothing read from them is ever sent back to a tool, and the work of
//! one ensure does not grow with them. Each ensure reads three things: the
//! first two rules of our chain (`-S MTUVISOR-MSS 1`, `2`: exactly our rule,
//! alone?) and FORWARD's rules (where our jumps are). When anything is off,
//! one `iptables-restore --noflush` of fixed text puts it right at once:
//! declaring our chain empties it (whatever a pod filled it with: one
//! process for any number of rules), our rule is appended, the jump put
//! first, and at most [`MAX_JUMPS_REMOVED`] extra jumps are removed by
//! their position (numbers we counted, never text we read); the restore is
//! atomic, so protection never lapses on the way. Planning is a pure
//! function, tested for every partial state a crash, a flush, an older
//! mtuvisor or a pod can leave.

use tracing::info;

use crate::process::find_program;

use super::{
    run, run_with_input, BackendChoice, EnsureReport, Ensured, Family, FirewallError, MssBackend,
    MssMode, CHAIN,
};

/// `-w` with a bound: how long a call waits for the xtables lock (held
/// by dockerd while it writes, or by anyone, forever) before it gives up
/// and the ensure is retried at the next reconcile. Without a number, `-w`
/// waits for ever.
const LOCK_WAIT_SECS: &str = "5";

/// Extra jumps to our chain removed by one ensure (a second copy left by
/// an older mtuvisor, or a pod's doing); more are left for the next one:
/// a jump more only clamps the same SYN to the same value again.
const MAX_JUMPS_REMOVED: usize = 16;

pub struct Iptables {
    backend: &'static str,
    kind: BackendChoice,
    /// The iptables and ip6tables binaries, each with its restore tool;
    /// ip6tables is `None` when the tool or the kernel lacks IPv6 (said
    /// once, at selection).
    v4: Tools,
    v6: Option<Tools>,
}

#[derive(Debug, Clone)]
struct Tools {
    tool: String,
    restore: String,
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
        let missing = |tool: &str| FirewallError::Missing {
            tool: tool.to_string(),
            backend,
        };
        let tools = |tool: &str| -> Option<Tools> {
            let restore = format!("{tool}-restore");
            (find_program(tool).is_some() && find_program(&restore).is_some()).then(|| Tools {
                tool: tool.to_string(),
                restore,
            })
        };
        let v4_tools = tools(v4).ok_or_else(|| missing(&format!("{v4} (with {v4}-restore)")))?;
        // `iptables` may be either flavour; the nft backend must not end up
        // writing legacy tables, nor the reverse.
        let version = run(v4, &["--version"])?;
        if !version.contains(flavour) {
            return Err(missing(v4));
        }
        let v6 = if !super::ipv6_enabled() {
            info!(
                backend,
                "IPv6 is disabled in this namespace; MSS clamping for IPv4 only"
            );
            None
        } else {
            let found = tools(v6);
            if found.is_none() {
                info!(
                    backend,
                    tool = v6,
                    "not installed; MSS clamping for IPv4 only"
                );
            }
            found
        };
        Ok(Iptables {
            backend,
            kind,
            v4: v4_tools,
            v6,
        })
    }

    fn tools(&self) -> impl Iterator<Item = (Family, &Tools)> {
        std::iter::once((Family::Ipv4, &self.v4)).chain(self.v6.as_ref().map(|t| (Family::Ipv6, t)))
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

/// What one family's mangle table holds of ours.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TableState {
    /// Our chain exists (its first rule could be listed).
    chain: bool,
    /// Its first rule, as `-S` prints it.
    first: Option<String>,
    /// It has a second rule.
    more: bool,
    /// 1-based positions in FORWARD of rules that jump to our chain.
    jumps: Vec<usize>,
}

/// The positions of FORWARD's jumps to our chain, from `-S FORWARD`.
fn forward_jumps(listing: &str) -> Vec<usize> {
    let jump = format!("-j {CHAIN}");
    listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("-A FORWARD"))
        .enumerate()
        .filter(|(_, l)| l.ends_with(&jump))
        .map(|(i, _)| i + 1)
        .collect()
}

fn read_state(tool: &str) -> Result<TableState, FirewallError> {
    let rule = |n: &str| {
        run(
            tool,
            &["-w", LOCK_WAIT_SECS, "-t", "mangle", "-S", CHAIN, n],
        )
    };
    let first = rule("1");
    let mut state = TableState {
        jumps: forward_jumps(&run(
            tool,
            &["-w", LOCK_WAIT_SECS, "-t", "mangle", "-S", "FORWARD"],
        )?),
        ..TableState::default()
    };
    match first {
        Ok(out) => {
            state.chain = true;
            state.first = out
                .lines()
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty());
            state.more = rule("2").map(|o| !o.trim().is_empty()).unwrap_or(true);
        }
        // No chain (each flavour says so in its words), or one we cannot
        // read: either way, declaring it in a restore makes it ours.
        Err(FirewallError::Command { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(state)
}

/// The `iptables-restore --noflush` input that turns `state` into exactly
/// one copy (the chain holding `rule` alone, one jump first in FORWARD),
/// or, with no rule, nothing of ours at all; `None` when nothing is to
/// change. Fixed text and numbers only. Whether everything could be
/// removed is the second value (false: jumps past the bound were left).
fn plan(state: &TableState, rule: Option<&str>) -> (Option<String>, bool) {
    let mut lines = Vec::new();
    let mut complete = true;
    let mut remove_jumps = |jumps: &[usize], shift: usize, lines: &mut Vec<String>| {
        if jumps.len() > MAX_JUMPS_REMOVED {
            complete = false;
        }
        for pos in jumps.iter().rev().take(MAX_JUMPS_REMOVED) {
            lines.push(format!("-D FORWARD {}", pos + shift));
        }
    };
    match rule {
        None => {
            remove_jumps(&state.jumps, 0, &mut lines);
            if state.chain {
                lines.push(format!("-F {CHAIN}"));
                if state.jumps.len() <= MAX_JUMPS_REMOVED {
                    lines.push(format!("-X {CHAIN}"));
                }
            }
        }
        Some(rule) => {
            let chain_ok = state.chain && state.first.as_deref() == Some(rule) && !state.more;
            if !chain_ok {
                // Declared: created, or emptied whatever it held.
                lines.push(format!(":{CHAIN} - [0:0]"));
                lines.push(rule.to_string());
            }
            let (first, extra, shift) = if state.jumps.first() == Some(&1) {
                (true, &state.jumps[1..], 0)
            } else {
                (false, &state.jumps[..], 1)
            };
            if !first {
                lines.push(format!("-I FORWARD 1 -j {CHAIN}"));
            }
            remove_jumps(extra, shift, &mut lines);
        }
    }
    if lines.is_empty() {
        return (None, complete);
    }
    let mut script = String::from("*mangle\n");
    for l in &lines {
        script.push_str(l);
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    (Some(script), complete)
}

fn apply_family(tools: &Tools, rule: Option<&str>) -> Result<Ensured, FirewallError> {
    let state = read_state(&tools.tool)?;
    let (script, complete) = plan(&state, rule);
    if let Some(script) = &script {
        run_with_input(&tools.restore, &["-w", LOCK_WAIT_SECS, "--noflush"], script)?;
    }
    if !complete {
        return Err(FirewallError::Command {
            command: format!("{} -t mangle (removing jumps to {CHAIN})", tools.tool),
            stderr: format!(
                "FORWARD holds more than {MAX_JUMPS_REMOVED} jumps to {CHAIN}; \
                 the rest go at the next ensure"
            ),
        });
    }
    Ok(if script.is_none() {
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
                .map(|(family, tools)| (family, apply_family(tools, rule.as_deref())))
                .collect(),
            switched: None,
        }
    }

    fn complete(&self, mode: MssMode) -> Result<bool, FirewallError> {
        let rule = desired_rule(mode);
        for (_, tools) in self.tools() {
            let state = read_state(&tools.tool)?;
            if plan(&state, rule.as_deref()).0.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn remove(&self) -> Result<(), FirewallError> {
        for (_, tools) in self.tools() {
            apply_family(tools, None)?;
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

    /// The restore input's lines between `*mangle` and `COMMIT`.
    fn steps(state: &TableState, rule: Option<&str>) -> Vec<String> {
        match plan(state, rule).0 {
            None => Vec::new(),
            Some(script) => {
                let lines: Vec<String> = script.lines().map(String::from).collect();
                assert_eq!(lines.first().map(String::as_str), Some("*mangle"));
                assert_eq!(lines.last().map(String::as_str), Some("COMMIT"));
                lines[1..lines.len() - 1].to_vec()
            }
        }
    }

    fn complete() -> TableState {
        TableState {
            chain: true,
            first: Some(PMTU.into()),
            more: false,
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
    fn jumps_are_counted_in_forward_only() {
        let listing = "-P FORWARD ACCEPT\n-A FORWARD -j OTHER\n-A FORWARD -j MTUVISOR-MSS\n\
                       -A FORWARD -p tcp -j MTUVISOR-MSS\n-A FORWARD -j MTUVISOR-MSS-NOT\n";
        assert_eq!(forward_jumps(listing), vec![2, 3]);
    }

    #[test]
    fn a_complete_copy_needs_nothing() {
        assert!(steps(&complete(), Some(PMTU)).is_empty());
    }

    #[test]
    fn from_nothing_everything_is_added_in_one_restore() {
        assert_eq!(
            steps(&TableState::default(), Some(PMTU)),
            [
                ":MTUVISOR-MSS - [0:0]",
                PMTU,
                "-I FORWARD 1 -j MTUVISOR-MSS"
            ]
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
    fn an_empty_chain_or_another_rule_or_more_rules_is_emptied_and_given_the_rule() {
        // A flush, an older version's rule, or a pod's 100,000 rules: the
        // same fixed lines, whatever the chain held.
        for state in [
            TableState {
                first: None,
                ..complete()
            },
            TableState {
                first: Some(OLD.into()),
                ..complete()
            },
            TableState {
                more: true,
                ..complete()
            },
        ] {
            assert_eq!(
                steps(&state, Some(PMTU)),
                [":MTUVISOR-MSS - [0:0]", PMTU],
                "{state:?}"
            );
        }
    }

    #[test]
    fn extra_jumps_are_removed_by_position_bottom_up_and_boundedly() {
        let state = TableState {
            jumps: vec![1, 4, 7],
            ..complete()
        };
        assert_eq!(steps(&state, Some(PMTU)), ["-D FORWARD 7", "-D FORWARD 4"]);
        let many = TableState {
            jumps: (1..=100).collect(),
            ..complete()
        };
        let (script, complete_) = plan(&many, Some(PMTU));
        assert!(!complete_);
        assert_eq!(
            script
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("-D"))
                .count(),
            MAX_JUMPS_REMOVED
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

    #[test]
    fn removal_past_the_bound_empties_the_chain_and_says_so() {
        let state = TableState {
            jumps: (1..=40).collect(),
            ..complete()
        };
        let (script, done) = plan(&state, None);
        let script = script.unwrap();
        assert!(!done);
        assert!(script.contains("-F MTUVISOR-MSS"));
        assert!(!script.contains("-X MTUVISOR-MSS"), "{script}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Whatever a pod's FORWARD holds (any text a listing can
            /// show), the jumps found are positions among its rules, and
            /// the plan is our fixed text with numbers.
            #[test]
            fn any_listing_yields_positions_and_a_plan_of_fixed_text(
                lines in proptest::collection::vec(
                    prop_oneof![
                        Just("-A FORWARD -j MTUVISOR-MSS".to_string()),
                        Just("-A FORWARD -p tcp -j MTUVISOR-MSS".to_string()),
                        "-A FORWARD [ -~]{0,80}",
                        "[ -~\\n]{0,80}",
                        any::<String>(),
                    ],
                    0..64,
                ),
                first in proptest::option::of(any::<String>()),
                more in any::<bool>(),
                chain in any::<bool>(),
            ) {
                let listing = lines.join("\n");
                let jumps = forward_jumps(&listing);
                let rules = listing.lines().filter(|l| l.trim().starts_with("-A FORWARD")).count();
                prop_assert!(jumps.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(jumps.iter().all(|j| *j >= 1 && *j <= rules));
                let state = TableState { chain, first, more, jumps };
                for rule in [desired_rule(MssMode::Pmtu), None] {
                    if let (Some(script), _) = plan(&state, rule.as_deref()) {
                        for line in script.lines() {
                            let fixed = line == "*mangle" || line == "COMMIT"
                                || line == ":MTUVISOR-MSS - [0:0]"
                                || Some(line) == desired_rule(MssMode::Pmtu).as_deref()
                                || line == "-I FORWARD 1 -j MTUVISOR-MSS"
                                || line == "-F MTUVISOR-MSS" || line == "-X MTUVISOR-MSS"
                                || line.strip_prefix("-D FORWARD ").is_some_and(|n| n.parse::<usize>().is_ok());
                            prop_assert!(fixed, "{line:?}");
                        }
                    }
                }
            }
        }
    }
}
