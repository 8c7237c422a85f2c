//! Native nftables: a table of mtuvisor's own (`inet mtuvisor`) with a
//! forward chain at mangle priority, covering IPv4 and IPv6 at once.
//!
//! The state is read as data (`nft -j list table`), the rule is known by
//! its comment (which names the mode), and the plan (only what is missing
//! added, only what is extra deleted) is applied as one `nft -f`
//! transaction: all or nothing.

use serde::Deserialize;

use crate::process::find_program;

use super::{
    run, run_with_input, BackendChoice, EnsureReport, Ensured, Family, FirewallError, MssBackend,
    MssMode, NFT_TABLE,
};

/// Our base chain, and where it hooks (mangle is priority -150).
const CHAIN: &str = "forward";
const HOOK: &str = "forward";
const TYPE: &str = "filter";
const PRIO_MANGLE: i64 = -150;

pub struct Nftables;

impl Nftables {
    pub fn new() -> Result<Nftables, FirewallError> {
        find_program("nft").ok_or(FirewallError::Missing {
            tool: "nft".into(),
            backend: "nftables",
        })?;
        Ok(Nftables)
    }
}

/// The statement, and the comment that marks it as ours and names the mode.
fn desired(mode: MssMode) -> Option<(String, String)> {
    let value = match mode {
        MssMode::Pmtu => "rt mtu".to_string(),
        MssMode::Fixed(n) => n.to_string(),
        MssMode::Off => return None,
    };
    let comment = match mode {
        MssMode::Fixed(n) => format!("mtuvisor mss {n}"),
        _ => "mtuvisor mss pmtu".to_string(),
    };
    Some((
        format!("tcp flags syn / syn,rst tcp option maxseg size set {value}"),
        comment,
    ))
}

/// `nft -j` output: a list of one-key objects (`metainfo`, `table`,
/// `chain`, `rule`, …).
#[derive(Debug, Deserialize)]
struct Listing {
    nftables: Vec<std::collections::HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
struct ChainItem {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    prio: Option<i64>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
struct RuleItem {
    chain: String,
    handle: u64,
    comment: Option<String>,
}

/// What our table holds; `None` when there is no table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TableState {
    chains: Vec<ChainItem>,
    rules: Vec<RuleItem>,
}

fn parse_state(json: &str) -> Result<TableState, String> {
    let listing: Listing = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut state = TableState::default();
    for mut item in listing.nftables {
        if let Some(chain) = item.remove("chain") {
            state
                .chains
                .push(serde_json::from_value(chain).map_err(|e| e.to_string())?);
        } else if let Some(rule) = item.remove("rule") {
            state
                .rules
                .push(serde_json::from_value(rule).map_err(|e| e.to_string())?);
        }
    }
    Ok(state)
}

fn read_state() -> Result<Option<TableState>, FirewallError> {
    let listed = match run("nft", &["-j", "list", "table", "inet", NFT_TABLE]) {
        Ok(out) => out,
        Err(FirewallError::Command { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    parse_state(&listed)
        .map(Some)
        .map_err(|e| FirewallError::Command {
            command: format!("nft -j list table inet {NFT_TABLE}"),
            stderr: format!("unexpected JSON: {e}"),
        })
}

/// The `nft -f` script that turns `state` (`None`: no table) into exactly
/// the chain and the one rule for `wanted`; or, with nothing wanted, no
/// table. Empty when nothing is to change.
fn plan(state: Option<&TableState>, wanted: Option<(&str, &str)>) -> String {
    let mut script = String::new();
    let Some((stmt, comment)) = wanted else {
        if state.is_some() {
            script.push_str(&format!("delete table inet {NFT_TABLE}\n"));
        }
        return script;
    };
    let empty = TableState::default();
    let state = match state {
        Some(s) => s,
        None => {
            script.push_str(&format!("add table inet {NFT_TABLE}\n"));
            &empty
        }
    };
    let hooked = |c: &ChainItem| {
        c.kind.as_deref() == Some(TYPE)
            && c.hook.as_deref() == Some(HOOK)
            && c.prio == Some(PRIO_MANGLE)
    };
    let mut chain_ok = false;
    for chain in &state.chains {
        if chain.name == CHAIN && hooked(chain) {
            chain_ok = true;
        } else {
            // A base chain's hook cannot be changed in place, and a chain
            // that is not ours has no business in our table.
            script.push_str(&format!(
                "flush chain inet {NFT_TABLE} {0}\ndelete chain inet {NFT_TABLE} {0}\n",
                chain.name
            ));
        }
    }
    if !chain_ok {
        script.push_str(&format!(
            "add chain inet {NFT_TABLE} {CHAIN} {{ type {TYPE} hook {HOOK} priority mangle; policy accept; }}\n"
        ));
    }
    let ours: Vec<&RuleItem> = if chain_ok {
        state.rules.iter().filter(|r| r.chain == CHAIN).collect()
    } else {
        Vec::new()
    };
    let keep = ours
        .iter()
        .position(|r| r.comment.as_deref() == Some(comment));
    if keep.is_none() {
        script.push_str(&format!(
            "add rule inet {NFT_TABLE} {CHAIN} {stmt} comment \"{comment}\"\n"
        ));
    }
    for (i, rule) in ours.iter().enumerate() {
        if Some(i) != keep {
            script.push_str(&format!(
                "delete rule inet {NFT_TABLE} {CHAIN} handle {}\n",
                rule.handle
            ));
        }
    }
    script
}

fn apply(wanted: Option<(&str, &str)>) -> Result<Ensured, FirewallError> {
    let state = read_state()?;
    let script = plan(state.as_ref(), wanted);
    if script.is_empty() {
        return Ok(Ensured::Unchanged);
    }
    run_with_input("nft", &["-f", "-"], &script)?;
    Ok(Ensured::Installed)
}

impl MssBackend for Nftables {
    fn ensure(&self, mode: MssMode) -> EnsureReport {
        let wanted = desired(mode);
        let result = apply(wanted.as_ref().map(|(s, c)| (s.as_str(), c.as_str())));
        // One table serves both families: they share the outcome.
        EnsureReport {
            families: self
                .families()
                .into_iter()
                .map(|family| (family, result.clone()))
                .collect(),
            switched: None,
        }
    }

    fn complete(&self, mode: MssMode) -> Result<bool, FirewallError> {
        let wanted = desired(mode);
        let state = read_state()?;
        Ok(plan(
            state.as_ref(),
            wanted.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
        )
        .is_empty())
    }

    fn remove(&self) -> Result<(), FirewallError> {
        apply(None).map(|_| ())
    }

    fn families(&self) -> Vec<Family> {
        vec![Family::Ipv4, Family::Ipv6]
    }

    fn describe(&self) -> String {
        format!("nftables (IPv4+IPv6, table inet {NFT_TABLE})")
    }

    fn kind(&self) -> BackendChoice {
        BackendChoice::Nftables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STMT: &str = "tcp flags syn / syn,rst tcp option maxseg size set rt mtu";
    const PMTU: (&str, &str) = (STMT, "mtuvisor mss pmtu");

    fn base() -> ChainItem {
        ChainItem {
            name: CHAIN.into(),
            kind: Some(TYPE.into()),
            hook: Some(HOOK.into()),
            prio: Some(PRIO_MANGLE),
        }
    }

    fn rule(handle: u64, comment: Option<&str>) -> RuleItem {
        RuleItem {
            chain: CHAIN.into(),
            handle,
            comment: comment.map(String::from),
        }
    }

    #[test]
    fn reads_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "mtuvisor", "handle": 1}},
            {"chain": {"family": "inet", "table": "mtuvisor", "name": "forward", "handle": 1,
                       "type": "filter", "hook": "forward", "prio": -150, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "mtuvisor", "name": "other", "handle": 2}},
            {"rule": {"family": "inet", "table": "mtuvisor", "chain": "forward", "handle": 3,
                      "comment": "mtuvisor mss pmtu", "expr": []}}]}"#;
        let state = parse_state(json).unwrap();
        assert_eq!(state.chains[0], base());
        assert_eq!(state.chains[1].hook, None);
        assert_eq!(state.rules, [rule(3, Some("mtuvisor mss pmtu"))]);
    }

    #[test]
    fn a_complete_table_needs_nothing() {
        let state = TableState {
            chains: vec![base()],
            rules: vec![rule(3, Some("mtuvisor mss pmtu"))],
        };
        assert_eq!(plan(Some(&state), Some(PMTU)), "");
    }

    #[test]
    fn from_nothing_table_chain_and_rule_are_added() {
        assert_eq!(
            plan(None, Some(PMTU)),
            "add table inet mtuvisor\n\
             add chain inet mtuvisor forward { type filter hook forward priority mangle; policy accept; }\n\
             add rule inet mtuvisor forward tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment \"mtuvisor mss pmtu\"\n"
        );
    }

    #[test]
    fn table_without_chain_gets_chain_and_rule() {
        let script = plan(Some(&TableState::default()), Some(PMTU));
        assert!(!script.contains("add table"), "{script}");
        assert!(script.starts_with("add chain"), "{script}");
        assert!(script.contains("add rule"), "{script}");
    }

    #[test]
    fn chain_without_rule_gets_only_the_rule() {
        let state = TableState {
            chains: vec![base()],
            rules: vec![],
        };
        let script = plan(Some(&state), Some(PMTU));
        assert_eq!(script.lines().count(), 1, "{script}");
        assert!(script.starts_with("add rule"), "{script}");
    }

    #[test]
    fn an_older_versions_rule_is_replaced() {
        // mtuvisor 0.1 wrote the rule without a comment; a mode change
        // leaves the other mode's comment.
        let state = TableState {
            chains: vec![base()],
            rules: vec![rule(3, None), rule(4, Some("mtuvisor mss 1360"))],
        };
        let script = plan(Some(&state), Some(PMTU));
        assert_eq!(
            script.lines().collect::<Vec<_>>(),
            [
                "add rule inet mtuvisor forward tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment \"mtuvisor mss pmtu\"",
                "delete rule inet mtuvisor forward handle 3",
                "delete rule inet mtuvisor forward handle 4",
            ]
        );
    }

    #[test]
    fn duplicates_are_deleted_and_one_kept() {
        let c = Some("mtuvisor mss pmtu");
        let state = TableState {
            chains: vec![base()],
            rules: vec![rule(3, c), rule(5, c)],
        };
        assert_eq!(
            plan(Some(&state), Some(PMTU)),
            "delete rule inet mtuvisor forward handle 5\n"
        );
    }

    #[test]
    fn a_chain_on_the_wrong_hook_is_rebuilt() {
        let state = TableState {
            chains: vec![ChainItem {
                prio: Some(0),
                ..base()
            }],
            rules: vec![rule(3, Some("mtuvisor mss pmtu"))],
        };
        let script = plan(Some(&state), Some(PMTU));
        assert!(
            script.starts_with(
                "flush chain inet mtuvisor forward\ndelete chain inet mtuvisor forward\nadd chain"
            ),
            "{script}"
        );
        assert!(script.contains("add rule"), "{script}");
    }

    #[test]
    fn removal_deletes_the_table_if_there_is_one() {
        assert_eq!(
            plan(Some(&TableState::default()), None),
            "delete table inet mtuvisor\n"
        );
        assert_eq!(plan(None, None), "");
    }
}
