//! mtuvisor keeps the links an in-pod dockerd creates (bridges, host-side
//! veths and the containers' `eth0`) at or below the pod's outer MTU.

pub mod cli;
pub mod config;
pub mod detect;
pub mod docker;
pub mod enforce;
pub mod error;
pub mod firewall;
pub mod logging;
pub mod netlink;
