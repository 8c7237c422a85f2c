//! What the agent needs granted, checked once at start against its own
//! effective capabilities: each missing one is one WARN naming the grant,
//! a metric, and (where the agent cannot do its job without it) `/healthz`
//! not ready, so that a manifest that lost a grant never reports a useless
//! agent healthy. Real-time priority (SYS_NICE) has its own warning
//! (`sched`): without it the agent still clamps.

use tracing::warn;

use crate::caps::{self, Grant};
use crate::metrics::NodeMetrics;

/// The DaemonSet's grants, and what each is for.
pub static GRANTS: [Grant; 4] = [
    Grant {
        cap: caps::NET_ADMIN,
        name: "NET_ADMIN",
        without: "no link MTU can be changed and no MSS rule written in any pod",
        required: true,
    },
    Grant {
        cap: caps::SYS_ADMIN,
        name: "SYS_ADMIN",
        without: "no pod's network namespace can be entered (setns): nothing is \
                  enforced, new containers keep 1500",
        required: true,
    },
    Grant {
        cap: caps::SYS_PTRACE,
        name: "SYS_PTRACE",
        without: "a process's /proc/<pid>/ns/net cannot be opened when it holds \
                  capabilities the agent lacks (any root container): containers \
                  that ran before the agent keep eth0 at 1500 while their host end \
                  is lowered",
        required: true,
    },
    Grant {
        cap: caps::NET_RAW,
        name: "NET_RAW",
        without: "iptables-legacy cannot read its tables: no MSS rules in pods whose \
                  Docker uses iptables-legacy (iptables-nft and nft need no NET_RAW)",
        required: false,
    },
];

/// Checks the agent's effective set, logs one WARN per missing grant and
/// tells `node` (metrics, readiness).
pub fn check(node: &NodeMetrics) {
    check_against(node, caps::effective());
}

fn check_against(node: &NodeMetrics, eff: Option<u64>) {
    let missing = caps::missing(&GRANTS, eff);
    for g in &missing {
        warn!(
            capability = g.name,
            required = g.required,
            "missing CAP_{}: {}; add {} to the agent container's \
             securityContext.capabilities.add",
            g.name,
            g.without,
            g.name
        );
    }
    node.set_grants(&GRANTS, missing);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_required_grant_makes_the_agent_unready() {
        let node = NodeMetrics::default();
        node.set_ready(true);
        let all = GRANTS.iter().fold(0u64, |eff, g| eff | 1 << g.cap);
        check_against(&node, Some(all));
        assert_eq!(node.unready(), None);
        check_against(&node, Some(all & !(1 << caps::NET_RAW)));
        assert_eq!(node.unready(), None, "NET_RAW only degrades");
        check_against(&node, Some(all & !(1 << caps::SYS_ADMIN)));
        let why = node.unready().expect("not ready without SYS_ADMIN");
        assert!(
            why.contains("CAP_SYS_ADMIN") && why.contains("capabilities.add"),
            "{why}"
        );
    }
}
