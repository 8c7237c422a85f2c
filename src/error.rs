//! The top-level error, and the exit code each kind maps to.

use crate::config::ConfigError;
use crate::detect::DetectError;
use crate::docker::DockerError;
use crate::firewall::FirewallError;
use crate::metrics::MetricsError;
use crate::netlink::NetlinkError;

/// Exit code for bad input (configuration, flags, environment): nothing was
/// changed.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A firewall tool missing or refusing at start: bad input, found
    /// before anything is touched.
    #[error("{0}")]
    Firewall(#[source] FirewallError),
    /// The Docker socket given does not answer as Docker: bad input.
    #[error("{0}")]
    Docker(#[source] DockerError),
    /// Asked to stop before it could start (`node`: a pod that went while
    /// its enforcer was still waiting for its network).
    #[error("stopped before enforcement could start")]
    Stopped,
    /// The metrics address cannot be bound (bad input), or the server not
    /// started.
    #[error("{0}")]
    Metrics(#[source] MetricsError),
    #[error("the link notification socket closed; restart mtuvisor")]
    MonitorClosed,
    #[error("cannot start: {0}")]
    Startup(String),
    /// Bad input found by looking at the system (a command that does not
    /// exist, a socket that is not Docker's).
    #[error("{0}")]
    BadInput(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::BadInput(_)
            | Error::Firewall(_)
            | Error::Docker(_)
            | Error::Metrics(MetricsError::Bind { .. }) => EXIT_BAD_INPUT,
            _ => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_firewall_or_docker_error_is_bad_input_and_stays_the_source() {
        let missing = FirewallError::Missing {
            tool: "nft".into(),
            backend: "nftables",
        };
        let e = Error::Firewall(missing);
        assert_eq!(e.exit_code(), EXIT_BAD_INPUT);
        let source = e.source().expect("the firewall's own error");
        assert!(source.downcast_ref::<FirewallError>().is_some());
        assert_eq!(e.to_string(), source.to_string());
        let e = Error::Docker(DockerError::CommandNotFound {
            program: "dockerd".into(),
        });
        assert_eq!(e.exit_code(), EXIT_BAD_INPUT);
        assert!(e.source().unwrap().downcast_ref::<DockerError>().is_some());
        assert_eq!(Error::Stopped.exit_code(), EXIT_FAILURE);
    }
}
