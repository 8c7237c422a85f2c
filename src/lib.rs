//! mtuvisor keeps the links an in-pod dockerd creates (bridges, host-side
//! veths and the containers' `eth0`) at or below the pod's outer MTU.

pub mod backoff;
pub mod caps;
pub mod cli;
pub mod config;
pub mod detect;
pub mod docker;
pub mod doctor;
pub mod enforce;
pub mod error;
pub mod firewall;
pub mod health;
pub mod heap;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod pmtu;
pub mod process;
pub mod readfile;
pub mod sched;

/// Stops a spawned task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
