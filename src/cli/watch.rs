//! `mtuvisor watch`: enforce the MTU in this network namespace until stopped.

use clap::Args;
use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tracing::info;

use crate::config::{Flags, Settings};
use crate::enforce::run_watch;
use crate::error::Error;

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Target MTU: `auto` (follow the outer MTU) or a number [env: MTUVISOR_MTU].
    #[arg(long, value_name = "auto|N")]
    mtu: Option<String>,

    /// Full reconcile period, e.g. 30s [env: MTUVISOR_RECONCILE_INTERVAL].
    #[arg(long, value_name = "DURATION")]
    reconcile_interval: Option<String>,
}

impl WatchArgs {
    pub fn fill_flags(&self, flags: &mut Flags) {
        flags.mtu = self.mtu.clone();
        flags.reconcile_interval = self.reconcile_interval.clone();
    }
}

pub fn run(settings: Settings) -> Result<(), Error> {
    super::runtime()?.block_on(async {
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|e| Error::Startup(format!("cannot install signal handlers: {e}")))?;
        let handle = signals.handle();
        let shutdown = async move {
            if let Some(sig) = signals.next().await {
                info!(signal = sig, "received signal");
            }
        };
        let result = run_watch(settings, shutdown).await;
        handle.close();
        result
    })
}
