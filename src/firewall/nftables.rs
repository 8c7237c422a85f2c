//! Native nftables: a table of mtuvisor's own (`inet mtuvisor`) with a
//! forward chain at mangle priority, covering IPv4 and IPv6 at once.
//!
//! The state is read as data (`nft -j list table`, at most
//! [`MAX_LISTING`] bytes) only to answer one question: is the table
//! exactly ours (one base chain `forward` at mangle priority holding our one
//! rule, marked by its comment and with the expressions nft gave it when
//! we made it)? When it is not (missing, or anything in it a pod added:
//! chains of any name, rules by the thousand, a listing too large to
//! read), the whole table is made again in one `nft -f` transaction of
//! fixed text: created if missing, deleted, created with our chain and
//! rule. Nothing read from the table is ever written back to nft, and the
//! work does not grow with what a pod put there.

use std::sync::Mutex;

use serde::Deserialize;

use crate::process::find_program;

use super::{
    run_with_input, run_within, BackendChoice, EnsureReport, Ensured, Family, FirewallError,
    MssBackend, MssMode, NFT_TABLE,
};

/// Our base chain, and where it hooks (mangle is priority -150).
const CHAIN: &str = "forward";
const HOOK: &str = "forward";
const TYPE: &str = "filter";
const PRIO_MANGLE: i64 = -150;

/// Our table lists in about a kilobyte; a listing larger than this holds
/// what a pod added, and is not read further.
const MAX_LISTING: usize = 64 << 10;

pub struct Nftables {
    /// The expressions of our rule as nft listed them right after we made
    /// it, per mode's comment: what "our rule" looks like, so that a rule
    /// a pod wrote with our comment is not taken for it.
    made: Mutex<Option<(String, serde_json::Value)>>,
}

impl Nftables {
    pub fn new() -> Result<Nftables, FirewallError> {
        find_program("nft").ok_or(FirewallError::Missing {
            tool: "nft".into(),
            backend: "nftables",
        })?;
        Ok(Nftables {
            made: Mutex::new(None),
        })
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

#[derive(Debug, Deserialize, Clone, PartialEq)]
struct RuleItem {
    chain: String,
    comment: Option<String>,
    #[serde(default)]
    expr: serde_json::Value,
}

/// What our table holds.
#[derive(Debug, Default, Clone, PartialEq)]
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

/// What the table is, as far as this backend needs to know.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Missing,
    /// Read whole.
    Read(TableState),
    /// There, but not readable within the bound (too large, or not the
    /// JSON nft writes): not ours as it is.
    Unreadable,
}

fn read_state() -> Result<Found, FirewallError> {
    let listed = match run_within(
        "nft",
        &["-j", "list", "table", "inet", NFT_TABLE],
        MAX_LISTING,
    ) {
        Ok(out) => out,
        Err(FirewallError::Command { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(Found::Missing)
        }
        Err(FirewallError::TooLarge { .. }) => return Ok(Found::Unreadable),
        Err(e) => return Err(e),
    };
    Ok(parse_state(&listed).map_or(Found::Unreadable, Found::Read))
}

/// Whether `state` is exactly our table for `comment`: one base chain, at
/// our hook and priority, holding one rule, ours (`expr`, when known, as
/// nft listed it when we made it).
fn exactly_ours(state: &TableState, comment: &str, expr: Option<&serde_json::Value>) -> bool {
    let [chain] = state.chains.as_slice() else {
        return false;
    };
    let [rule] = state.rules.as_slice() else {
        return false;
    };
    chain.name == CHAIN
        && chain.kind.as_deref() == Some(TYPE)
        && chain.hook.as_deref() == Some(HOOK)
        && chain.prio == Some(PRIO_MANGLE)
        && rule.chain == CHAIN
        && rule.comment.as_deref() == Some(comment)
        && expr.is_some_and(|e| *e == rule.expr)
}

/// The `nft -f` script that makes the table again with the chain and the
/// one rule for `wanted`; with nothing wanted, no table. Fixed text only.
fn rebuild(wanted: Option<(&str, &str)>) -> String {
    // `add` first so that `delete` finds a table whether or not one was
    // there: the whole script is one transaction, all or nothing.
    let mut script = format!("add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    if let Some((stmt, comment)) = wanted {
        script.push_str(&format!(
            "add table inet {NFT_TABLE}\n\
             add chain inet {NFT_TABLE} {CHAIN} {{ type {TYPE} hook {HOOK} priority mangle; policy accept; }}\n\
             add rule inet {NFT_TABLE} {CHAIN} {stmt} comment \"{comment}\"\n"
        ));
    }
    script
}

impl Nftables {
    fn apply(&self, wanted: Option<(&str, &str)>) -> Result<Ensured, FirewallError> {
        let found = read_state()?;
        match (wanted, &found) {
            (None, Found::Missing) => return Ok(Ensured::Unchanged),
            (Some((_, comment)), Found::Read(state)) => {
                let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let expr = made.as_ref().filter(|(c, _)| c == comment).map(|(_, e)| e);
                if exactly_ours(state, comment, expr) {
                    return Ok(Ensured::Unchanged);
                }
            }
            _ => {}
        }
        run_with_input("nft", &["-f", "-"], &rebuild(wanted))?;
        // What our rule looks like, listed by nft itself: the reference for
        // the next ensures.
        if let Some((_, comment)) = wanted {
            if let Ok(Found::Read(state)) = read_state() {
                if let [rule] = state.rules.as_slice() {
                    *self.made.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((comment.to_string(), rule.expr.clone()));
                }
            }
        }
        Ok(Ensured::Installed)
    }
}

impl MssBackend for Nftables {
    fn ensure(&self, mode: MssMode) -> EnsureReport {
        let wanted = desired(mode);
        let result = self.apply(wanted.as_ref().map(|(s, c)| (s.as_str(), c.as_str())));
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

    /// A reader with no memory of what it made (`doctor`, another
    /// process) takes any rule with our comment in our chain for ours.
    fn complete(&self, mode: MssMode) -> Result<bool, FirewallError> {
        let found = read_state()?;
        Ok(match (desired(mode), &found) {
            (None, Found::Missing) => true,
            (Some((_, comment)), Found::Read(state)) => {
                let expr = state.rules.first().map(|r| &r.expr);
                exactly_ours(state, &comment, expr)
            }
            _ => false,
        })
    }

    fn remove(&self) -> Result<(), FirewallError> {
        self.apply(None).map(|_| ())
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

    const COMMENT: &str = "mtuvisor mss pmtu";

    fn base() -> ChainItem {
        ChainItem {
            name: CHAIN.into(),
            kind: Some(TYPE.into()),
            hook: Some(HOOK.into()),
            prio: Some(PRIO_MANGLE),
        }
    }

    fn rule(comment: Option<&str>, expr: serde_json::Value) -> RuleItem {
        RuleItem {
            chain: CHAIN.into(),
            comment: comment.map(String::from),
            expr,
        }
    }

    fn ours() -> serde_json::Value {
        serde_json::json!([{"match": {"op": "==", "left": 1, "right": 2}}])
    }

    #[test]
    fn reads_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "mtuvisor", "handle": 1}},
            {"chain": {"family": "inet", "table": "mtuvisor", "name": "forward", "handle": 1,
                       "type": "filter", "hook": "forward", "prio": -150, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "mtuvisor", "name": "x\ninclude \"/etc/shadow\"", "handle": 2}},
            {"rule": {"family": "inet", "table": "mtuvisor", "chain": "forward", "handle": 3,
                      "comment": "mtuvisor mss pmtu", "expr": []}}]}"#;
        let state = parse_state(json).unwrap();
        assert_eq!(state.chains[0], base());
        assert_eq!(state.chains[1].hook, None);
        assert_eq!(state.rules.len(), 1);
        assert!(!exactly_ours(&state, COMMENT, Some(&serde_json::json!([]))));
    }

    #[test]
    fn only_exactly_our_table_is_left_as_it_is() {
        let state = TableState {
            chains: vec![base()],
            rules: vec![rule(Some(COMMENT), ours())],
        };
        assert!(exactly_ours(&state, COMMENT, Some(&ours())));
        // Our comment on a rule that does something else.
        assert!(!exactly_ours(&state, COMMENT, Some(&serde_json::json!([]))));
        // Not knowing what ours looks like yet: made again once.
        assert!(!exactly_ours(&state, COMMENT, None));
        // Another mode's rule, a second rule, a second chain, another hook.
        assert!(!exactly_ours(&state, "mtuvisor mss 1360", Some(&ours())));
        let two = TableState {
            rules: vec![rule(Some(COMMENT), ours()), rule(Some(COMMENT), ours())],
            ..state.clone()
        };
        assert!(!exactly_ours(&two, COMMENT, Some(&ours())));
        let chains = TableState {
            chains: vec![
                base(),
                ChainItem {
                    name: "x\n".into(),
                    kind: None,
                    hook: None,
                    prio: None,
                },
            ],
            ..state.clone()
        };
        assert!(!exactly_ours(&chains, COMMENT, Some(&ours())));
        let hooked = TableState {
            chains: vec![ChainItem {
                prio: Some(0),
                ..base()
            }],
            ..state
        };
        assert!(!exactly_ours(&hooked, COMMENT, Some(&ours())));
    }

    #[test]
    fn the_rebuild_is_fixed_text_in_one_transaction() {
        let (stmt, comment) = desired(MssMode::Pmtu).unwrap();
        assert_eq!(
            rebuild(Some((&stmt, &comment))),
            "add table inet mtuvisor\n\
             delete table inet mtuvisor\n\
             add table inet mtuvisor\n\
             add chain inet mtuvisor forward { type filter hook forward priority mangle; policy accept; }\n\
             add rule inet mtuvisor forward tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment \"mtuvisor mss pmtu\"\n"
        );
        assert_eq!(
            rebuild(None),
            "add table inet mtuvisor\ndelete table inet mtuvisor\n"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Any listing text: parsed or refused, never a panic; and a
            /// table with any chain a pod named is never taken for ours.
            #[test]
            fn any_listing_is_parsed_or_refused_and_foreign_chains_are_never_ours(
                text in any::<String>(),
                name in any::<String>(),
            ) {
                let _ = parse_state(&text);
                let json = serde_json::json!({"nftables": [
                    {"chain": {"name": "forward", "type": "filter", "hook": "forward", "prio": -150}},
                    {"chain": {"name": name}},
                    {"rule": {"chain": "forward", "comment": "mtuvisor mss pmtu", "expr": []}},
                ]});
                let state = parse_state(&json.to_string()).unwrap();
                prop_assert!(!exactly_ours(&state, "mtuvisor mss pmtu", Some(&serde_json::json!([]))));
            }
        }
    }
}
