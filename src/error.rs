//! The top-level error, and the exit code each kind maps to.

use crate::config::ConfigError;
use crate::detect::DetectError;
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
            Error::Config(_) | Error::BadInput(_) => EXIT_BAD_INPUT,
            _ => EXIT_FAILURE,
        }
    }
}
