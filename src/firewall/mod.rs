//! TCP MSS clamping, the safety net for traffic that MTU clamping cannot
//! reach. A narrow backend trait, chosen once at start; one file per
//! backend, each knowing nothing of the others.

mod iptables;
mod nftables;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use iptables::Iptables;
pub use nftables::Nftables;

/// The chain (iptables) and table (nft) that belong to mtuvisor.
pub const CHAIN: &str = "MTUVISOR-MSS";
pub const NFT_TABLE: &str = "mtuvisor";

/// What SYN packets forwarded through the pod get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MssMode {
    /// Clamp to the route MTU (`--clamp-mss-to-pmtu`, `rt mtu`).
    Pmtu,
    /// A fixed MSS, for a bottleneck beyond the pod's eth0.
    Fixed(u16),
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    IptablesNft,
    IptablesLegacy,
    Nftables,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{tool} is not installed (needed by the {backend} MSS backend); install it or choose another mss.backend")]
    Missing { tool: String, backend: &'static str },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
}

/// Whether `ensure` had to change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Unchanged,
    Installed,
}

/// One way of installing the MSS rules.
pub trait MssBackend: Send + Sync {
    /// Installs the rules for `mode`, or leaves them alone when they are
    /// already exactly so: never a second copy.
    fn ensure(&self, mode: MssMode) -> Result<Ensured, FirewallError>;
    /// Removes every trace of mtuvisor's rules.
    fn remove(&self) -> Result<(), FirewallError>;
    /// For logs: the backend and the families it covers.
    fn describe(&self) -> String;
}

/// Picks the backend once: the configured one, or with `Auto` the family
/// dockerd itself uses in this namespace, so that rules never end up split
/// across two: legacy when the legacy tables hold rules or the legacy
/// module has tables here (as the docker:dind entrypoint decides), else the
/// nf_tables flavour of iptables, else nft.
pub fn select_backend(choice: BackendChoice) -> Result<Box<dyn MssBackend>, FirewallError> {
    match choice {
        BackendChoice::IptablesNft => Ok(Box::new(Iptables::nft()?)),
        BackendChoice::IptablesLegacy => Ok(Box::new(Iptables::legacy()?)),
        BackendChoice::Nftables => Ok(Box::new(Nftables::new()?)),
        BackendChoice::Auto => {
            if legacy_in_use() {
                if let Ok(b) = Iptables::legacy() {
                    return Ok(Box::new(b));
                }
            }
            if let Ok(b) = Iptables::nft() {
                return Ok(Box::new(b));
            }
            Ok(Box::new(Nftables::new()?))
        }
    }
}

fn legacy_in_use() -> bool {
    let tables = std::fs::read_to_string("/proc/net/ip_tables_names").unwrap_or_default();
    if !tables.trim().is_empty() {
        return true;
    }
    ["iptables-legacy-save", "ip6tables-legacy-save"]
        .iter()
        .any(|tool| {
            run(tool, &[])
                .map(|out| out.lines().any(|l| l.starts_with("-A ")))
                .unwrap_or(false)
        })
}

/// Finds a tool on PATH.
pub(crate) fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a tool; its stdout on success, its stderr in the error otherwise.
pub(crate) fn run(tool: &str, args: &[&str]) -> Result<String, FirewallError> {
    run_with_input(tool, args, "")
}

/// Runs a tool with `input` on stdin.
pub(crate) fn run_with_input(
    tool: &str,
    args: &[&str],
    input: &str,
) -> Result<String, FirewallError> {
    use std::io::Write;
    let spawn_err = |source| FirewallError::Spawn {
        tool: tool.to_string(),
        source,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    if !input.is_empty() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    drop(stdin);
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError::Command {
            command: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this namespace has IPv6 at all.
pub(crate) fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// The MSS rules as the enforcement loop drives them: `ensure` at start,
/// on every reconcile and after every dockerd (re)start; `finish` on a
/// clean stop. The tools fork and wait for tens of milliseconds, so they
/// run on a task of their own: link notifications keep being handled
/// meanwhile (a veth that waits is a veth dockerd may move unclamped).
pub struct MssClamp {
    backend: Arc<dyn MssBackend>,
    mode: MssMode,
    keep_on_exit: bool,
    /// An `ensure` is under way; a second one is not started beside it.
    busy: Arc<AtomicBool>,
}

impl MssClamp {
    /// Chooses the backend; a missing tool is bad input, found before
    /// anything is touched. With `mode` off, a backend is still looked for
    /// (to remove what an earlier run left), but its absence is fine.
    pub fn prepare(
        mode: MssMode,
        choice: BackendChoice,
        keep_on_exit: bool,
    ) -> Result<Option<MssClamp>, FirewallError> {
        let backend = match select_backend(choice) {
            Ok(b) => b,
            Err(_) if mode == MssMode::Off => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(MssClamp {
            backend: Arc::from(backend),
            mode,
            keep_on_exit,
            busy: Arc::new(AtomicBool::new(false)),
        }))
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Starts an `ensure` in the background unless one is under way.
    pub fn ensure(&self) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (backend, mode, busy) = (self.backend.clone(), self.mode, self.busy.clone());
        tokio::task::spawn_blocking(move || {
            match backend.ensure(mode) {
                Ok(Ensured::Installed) => {
                    tracing::info!(backend = %backend.describe(), ?mode, "MSS clamping rules installed")
                }
                Ok(Ensured::Unchanged) => tracing::debug!("MSS clamping rules in place"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install MSS clamping rules; retrying at the next reconcile")
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// On a clean stop: waits for an `ensure` under way (so that it cannot
    /// put rules back), then removes the rules unless told to keep them.
    pub async fn finish(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.busy.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if self.keep_on_exit {
            tracing::info!("leaving MSS clamping rules in place (keep_on_exit)");
            return;
        }
        let backend = self.backend.clone();
        match tokio::task::spawn_blocking(move || backend.remove()).await {
            Ok(Ok(())) => tracing::info!("MSS clamping rules removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove MSS clamping rules"),
            Err(e) => tracing::warn!(error = %e, "MSS clamping task failed"),
        }
    }
}
