//! The rules: which links are mtuvisor's to manage (pure functions of
//! names), and which MTU a managed link gets.

use std::collections::HashSet;

use crate::config::glob_match;
use crate::netlink::LinkName;

/// Matches the bridges whose links mtuvisor keeps at or below the target:
/// Docker's own names plus globs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct BridgeMatcher {
    patterns: Vec<String>,
    /// Bridges of Docker networks, learnt from the API: these may carry any
    /// name (`com.docker.network.bridge.name`).
    from_docker: HashSet<String>,
}

impl BridgeMatcher {
    pub fn new(patterns: Vec<String>) -> BridgeMatcher {
        BridgeMatcher {
            patterns,
            from_docker: HashSet::new(),
        }
    }

    /// Whether a bridge of this name is managed. A name that is not UTF-8
    /// is no name Docker gives nor one a pattern was written for.
    pub fn matches(&self, bridge_name: &LinkName) -> bool {
        bridge_name
            .as_str()
            .is_some_and(|name| self.matches_text(name))
    }

    fn matches_text(&self, bridge_name: &str) -> bool {
        is_docker_bridge_name(bridge_name)
            || self.from_docker.contains(bridge_name)
            || self.patterns.iter().any(|p| glob_match(p, bridge_name))
    }

    /// Replaces the bridges learnt from Docker; true when they changed.
    pub fn set_docker_bridges(&mut self, names: HashSet<String>) -> bool {
        if names == self.from_docker {
            return false;
        }
        self.from_docker = names;
        true
    }
}

/// `docker0`, or `br-` followed by the first 12 hex digits of a network ID,
/// which is how dockerd names the bridge of a user-defined network.
pub fn is_docker_bridge_name(name: &str) -> bool {
    if name == "docker0" {
        return true;
    }
    name.strip_prefix("br-").is_some_and(|id| {
        id.len() == 12
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The rule that decides a managed link's MTU: lower anything above `target`;
/// raise back only a link mtuvisor lowered, never above where it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuRule {
    pub target: u32,
    /// The MTU the link had before mtuvisor lowered it, if it did.
    pub original: Option<u32>,
}

impl MtuRule {
    pub fn desired(&self, current: u32) -> Option<u32> {
        if current > self.target {
            return Some(self.target);
        }
        let restore = self.original?.min(self.target);
        (current < restore).then_some(restore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names() {
        assert!(is_docker_bridge_name("docker0"));
        assert!(is_docker_bridge_name("br-0123456789ab"));
        assert!(!is_docker_bridge_name("br-0123456789AB"));
        assert!(!is_docker_bridge_name("br-0123456789a"));
        assert!(!is_docker_bridge_name("br-0123456789abc"));
        assert!(!is_docker_bridge_name("lxcbr0"));
        assert!(!is_docker_bridge_name("docker1"));
    }

    #[test]
    fn matcher_combines_docker_names_and_patterns() {
        let m = BridgeMatcher::new(vec!["cni*".into()]);
        assert!(m.matches(&"cni0".into()));
        assert!(m.matches(&"docker0".into()));
        assert!(!m.matches(&"lxcbr0".into()));
        // Bytes outside UTF-8 match no name and no pattern, not even `*`.
        let all = BridgeMatcher::new(vec!["*".into()]);
        assert!(all.matches(&"x".into()));
        assert!(!all.matches(&LinkName::new(b"docker0\xff").unwrap()));
    }

    #[test]
    fn lowers_only_above_target() {
        let rule = MtuRule {
            target: 1450,
            original: None,
        };
        assert_eq!(rule.desired(1500), Some(1450));
        assert_eq!(rule.desired(1450), None);
        assert_eq!(rule.desired(1400), None);
    }

    #[test]
    fn raises_only_what_it_lowered_and_never_above_the_original() {
        let rule = MtuRule {
            target: 1450,
            original: Some(1500),
        };
        assert_eq!(rule.desired(1400), Some(1450));
        let rule = MtuRule {
            target: 9000,
            original: Some(1500),
        };
        assert_eq!(rule.desired(1450), Some(1500));
        assert_eq!(rule.desired(1500), None);
    }
}
