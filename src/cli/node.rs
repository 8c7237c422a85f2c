//! `mtuvisor node`: the node agent (a DaemonSet). Enforces in every pod
//! network namespace it finds, until stopped.

use std::sync::Arc;

use clap::Args;
use tracing::info;

use super::flags::{self, SettingFlags};
use crate::config::Settings;
use crate::error::Error;
use crate::firewall::{self, MssMode};
use crate::metrics::{self, NodeMetrics, Registry};
use crate::node;

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Node>,
}

pub fn run(settings: Settings) -> Result<(), Error> {
    few_arenas();
    // iptables and nft are spawned per pod; their exits go to one owner.
    let listeners = super::listen_then_reap(&settings, false)?;
    // The firewall tools, checked once, here: each pod's backend is only
    // chosen once it has Docker (in that pod), and a tool missing from the
    // agent's image is bad input for the whole node, not a pod's failure.
    if settings.mss != MssMode::Off {
        firewall::select_backend(settings.mss_backend).map_err(Error::Firewall)?;
    }
    let own = node::discovery::own_netns().map_err(|e| {
        Error::Startup(format!(
            "cannot read this process's network namespace (/proc/self/ns/net): {e}"
        ))
    })?;
    super::enforcing_runtime(&settings)?.block_on(async move {
        let node_metrics = Arc::new(NodeMetrics::default());
        let registry = Arc::new(Registry::for_node(node_metrics.clone()));
        registry.set_liveness_timeout(settings.liveness_timeout);
        let _server = metrics::spawn_server(listeners, registry.clone()).map_err(Error::Metrics)?;
        let _heartbeat = crate::health::Heartbeat::start();
        let (shutdown, handle) = super::shutdown_on_signal()?;
        info!(node_netns_inode = own.ino, "node agent starting");
        let result = node::run(settings, registry, node_metrics, shutdown).await;
        handle.close();
        result.map_err(|e| Error::Startup(format!("node discovery failed: {e}")))
    })
}

/// At most two malloc arenas for the whole agent (glibc). Nearly
/// everything is allocated on the runtime thread; the other threads (MTU
/// workers, the blocking pool, threads that enter pods) allocate little,
/// but by default each gets an arena of its own that fragments on its own.
/// Measured over rounds of 200 pods created and deleted, the agent's
/// anonymous memory after a round moved by up to 1 MB with per-thread
/// arenas and by under 0.1 MB with two; the price is a higher peak at 110
/// pods (15.3 MB resident instead of 12.9; one arena: 16.8). musl has one
/// heap anyway.
fn few_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before the agent starts any thread; mallopt only sets
    // a parameter of glibc's allocator.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}
