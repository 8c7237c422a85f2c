//! `mtuvisor node`: the node agent (a DaemonSet). Enforces in every pod
//! network namespace it finds, until stopped.

use std::sync::Arc;

use clap::Args;
use tracing::info;

use super::flags::{self, SettingFlags};
use crate::config::Settings;
use crate::error::Error;
use crate::metrics::{self, NodeMetrics, Registry};
use crate::node;
use crate::process;
use crate::AbortOnDrop;

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub settings: SettingFlags<flags::Node>,
}

pub fn run(settings: Settings) -> Result<(), Error> {
    let listener = settings.metrics_addr.map(metrics::bind).transpose()?;
    // iptables and nft are spawned per pod; their exits go to one owner.
    process::start_reaper(false)
        .map_err(|e| Error::Startup(format!("cannot start the child reaper: {e}")))?;
    let own = node::discovery::own_netns().map_err(|e| {
        Error::Startup(format!(
            "cannot read this process's network namespace (/proc/self/ns/net): {e}"
        ))
    })?;
    super::runtime()?.block_on(async move {
        let node_metrics = Arc::new(NodeMetrics::default());
        let registry = Arc::new(Registry::for_node(node_metrics.clone()));
        let _server =
            listener.map(|l| AbortOnDrop(tokio::spawn(metrics::serve(l, registry.clone()))));
        let (shutdown, handle) = super::shutdown_on_signal()?;
        info!(node_netns_inode = own.ino, "node agent starting");
        let result = node::run(settings, registry, node_metrics, shutdown).await;
        handle.close();
        result.map_err(|e| Error::Startup(format!("node discovery failed: {e}")))
    })
}
