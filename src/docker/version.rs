//! `dockerd --version`: which Engine will run, for the flags it accepts.

use std::path::Path;
use std::process::Command;

use super::args::parse_docker_version;
use crate::process::{self, find_program};

/// The version of the dockerd that `command_name` (found at `program`)
/// runs: the command itself when it is dockerd, else (a wrapper such as
/// `dockerd-entrypoint.sh`) the dockerd on PATH.
pub fn probe_dockerd_version(program: &Path, command_name: &str) -> Option<(u32, u32)> {
    if super::args::is_dockerd(command_name) {
        dockerd_version(program)
    } else {
        dockerd_version(&find_program("dockerd")?)
    }
}

/// `dockerd --version` of the binary at `dockerd`, as (major, minor).
pub fn dockerd_version(dockerd: &Path) -> Option<(u32, u32)> {
    let out = process::output(Command::new(dockerd).arg("--version"), b"").ok()?;
    parse_docker_version(&String::from_utf8_lossy(&out.stdout))
}
