//! Docker: the API (bollard) and the supervised dockerd process.

mod api;
pub mod args;
mod events;
mod plan;
pub mod supervisor;
mod version;

pub use api::{bridge_name, bridge_names, check_socket, connect, DockerError};
pub use args::is_dockerd;
pub use events::{follow, DockerUpdate};
pub use plan::DockerdPlan;
pub use version::{dockerd_version, probe_dockerd_version};
