//! What `supervise` runs: the command (dockerd, or a wrapper such as
//! `dockerd-entrypoint.sh`), found on PATH, the Engine version it will run,
//! the API socket and sandbox directory its arguments imply, and the final
//! argument list with the MTU added.

use std::path::PathBuf;

use tracing::{info, warn};

use super::args::{docker_socket, dockerd_args, exec_root, reaches_dockerd, user_mtu};
use super::probe_dockerd_version;
use super::DockerError;
use crate::process::find_program;

pub struct DockerdPlan {
    command: Vec<String>,
    version: Option<(u32, u32)>,
    /// Whether the command ends in dockerd (see [`reaches_dockerd`]); when
    /// not, it runs once, as given, and enforcement only watches.
    pub dockerd: bool,
    /// The API socket from `-H`/`--host`, else the default.
    pub socket: PathBuf,
    /// Where dockerd keeps its sandboxes' namespace files.
    pub sandbox_dir: PathBuf,
}

impl DockerdPlan {
    /// `command` as given after `--` (empty: `dockerd`). A program that is
    /// not there is bad input. Probes the version: the reaper must run.
    pub fn new(command: Vec<String>) -> Result<DockerdPlan, DockerError> {
        let command = if command.is_empty() {
            vec!["dockerd".to_string()]
        } else {
            command
        };
        let program = find_program(&command[0]).ok_or_else(|| DockerError::CommandNotFound {
            program: command[0].clone(),
        })?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let dockerd = reaches_dockerd(&command);
        if !dockerd {
            info!(command = %command.join(" "), "the command does not start dockerd: it runs once, as given, and mtuvisor enforces on whatever Docker networks appear");
        }
        Ok(DockerdPlan {
            version: probe_dockerd_version(&program, &command[0]),
            dockerd,
            socket: docker_socket(&command, docker_host.as_deref()),
            sandbox_dir: exec_root(&command).join("netns"),
            command,
        })
    }

    /// The command to run: with `set_mtu`, dockerd gets `--mtu=mtu` (and on
    /// Engine 24+ the default network option) unless the user set one;
    /// without (MSS clamping only), or when the command is not a dockerd,
    /// it runs as given.
    pub fn argv(&self, mtu: u32, set_mtu: bool) -> Vec<String> {
        if !self.dockerd {
            return self.command.clone();
        }
        if let Some(given) = user_mtu(&self.command) {
            if given.parse::<u32>().is_ok_and(|n| n > mtu) {
                warn!(given_mtu = %given, target_mtu = mtu, "the command sets --mtu above the target; containers on the default bridge will be clamped anyway");
            }
        }
        if set_mtu {
            dockerd_args(&self.command, mtu, self.version)
        } else {
            self.command.clone()
        }
    }
}
