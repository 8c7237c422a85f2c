//! What the agent needs granted, checked once at start against its own
//! effective capabilities: each missing one is one WARN naming the grant,
//! a metric, and (where the agent cannot do its job without it) `/healthz`
//! not ready, so that a manifest that lost a grant never reports a useless
//! agent healthy. Real-time priority (SYS_NICE) has its own warning
//! (`sched`): without it the agent still clamps. NET_RAW is not asked
//! for: without it iptables-legacy cannot read its tables, and the MSS
//! rules go to nf_tables, which the kernel applies as well; path_probe's
//! ICMP probe says itself when it lacks it.

use tracing::warn;

use crate::caps::{self, Grant};
use crate::metrics::{NodeMetrics, Registry};

/// The DaemonSet's grants, and what each is for.
pub static GRANTS: [Grant; 3] = [
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
];

/// Checks the agent's effective set, logs one WARN per missing grant and
/// tells the registry (metrics, readiness); then that each directory of
/// `netns_dirs` that is a mount of its own receives the mounts made after
/// the agent started, and tells `node`.
pub fn check(registry: &Registry, node: &NodeMetrics, netns_dirs: &[std::path::PathBuf]) {
    registry.set_grants(&GRANTS, &caps::check(&GRANTS));
    // The agent's own mounts, one per pod's namespace file: bounded all the
    // same (16 MiB is some 60,000 mounts).
    let mountinfo = std::fs::File::open("/proc/self/mountinfo")
        .and_then(|f| {
            use std::io::Read;
            let mut text = String::new();
            f.take(16 << 20).read_to_string(&mut text).map(|_| text)
        })
        .unwrap_or_default();
    let private: Vec<String> = netns_dirs
        .iter()
        .filter(|d| is_private_mount(&mountinfo, d))
        .map(|d| d.display().to_string())
        .collect();
    for dir in &private {
        warn!(
            dir = %dir,
            "{dir} is mounted without propagation: pods made after the agent started are \
             not seen; mount it with mountPropagation: HostToContainer"
        );
    }
    node.set_private_mounts(private);
}

/// Whether `dir` is a mount point (in `mountinfo`'s format) that neither
/// shares nor receives mounts (no `shared:` or `master:` field): a hostPath
/// volume without HostToContainer propagation. The directory as part of a
/// larger mount, or the host's own, is not one.
fn is_private_mount(mountinfo: &str, dir: &std::path::Path) -> bool {
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    mountinfo
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(dir))
        .is_some_and(|l| {
            let optional = l.split(" - ").next().unwrap_or_default();
            !optional
                .split_whitespace()
                .skip(6)
                .any(|f| f.starts_with("shared:") || f.starts_with("master:"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_required_grant_makes_the_agent_unready() {
        let node = std::sync::Arc::new(NodeMetrics::default());
        node.set_ready(true);
        let registry = Registry::for_node(node);
        let all = GRANTS.iter().fold(0u64, |eff, g| eff | 1 << g.cap);
        let with = |eff| registry.set_grants(&GRANTS, &caps::missing(&GRANTS, Some(eff)));
        with(all);
        assert_eq!(registry.unready(), None);
        with(all & !(1 << caps::SYS_ADMIN));
        let why = registry.unready().expect("not ready without SYS_ADMIN");
        assert!(
            why.contains("CAP_SYS_ADMIN") && why.contains("capabilities.add"),
            "{why}"
        );
        assert!(registry.is_alive(), "a restart would not grant it");
    }
}
