//! `mtuvisor doctor`: what is wrong with MTU here, and what to do.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use crate::config::Settings;
use crate::doctor::{self, Request, Target, PROBE_FLOOR};
use crate::error::Error;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The dockerd to read, e.g. unix:///var/run/docker.sock (default: that
    /// socket when it exists, or docker_host).
    #[arg(long, value_name = "unix:///PATH")]
    docker_host: Option<String>,

    /// Probe the path MTU toward HOST (ICMP), falling back to TCP on PORT
    /// when ICMP echo is filtered. Repeatable.
    #[arg(long = "probe", value_name = "HOST[:PORT]")]
    probes: Vec<String>,

    /// Smallest probe size: 1280 (the IPv6 minimum), or down to 576 for
    /// IPv4-only paths.
    #[arg(long, value_name = "BYTES", default_value_t = PROBE_FLOOR)]
    probe_floor: u32,

    /// How long each probe size waits for its answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    probe_timeout_ms: u64,

    /// One JSON object (schema in the README) instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when healthy, 1 when a problem was found.
pub fn run(settings: &Settings, args: DoctorArgs) -> Result<i32, Error> {
    let probes = args
        .probes
        .iter()
        .map(|p| Target::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadInput(format!("invalid --probe {e}")))?;
    if !(576..=1500).contains(&args.probe_floor) {
        return Err(Error::BadInput(format!(
            "invalid --probe-floor {}: expected 576 to 1500",
            args.probe_floor
        )));
    }
    if !(10..=10_000).contains(&args.probe_timeout_ms) {
        return Err(Error::BadInput(format!(
            "invalid --probe-timeout-ms {}: expected 10 to 10000",
            args.probe_timeout_ms
        )));
    }
    let docker_socket = match &args.docker_host {
        Some(h) => Some(
            h.strip_prefix("unix://")
                .filter(|p| p.starts_with('/'))
                .map(Into::into)
                .ok_or_else(|| {
                    Error::BadInput(format!(
                        "invalid --docker-host {h:?}: expected unix:///absolute/path/to/docker.sock"
                    ))
                })?,
        ),
        None => settings.docker_host.clone(),
    };
    let request = Request {
        docker_socket,
        probes,
        probe_floor: args.probe_floor,
        probe_timeout: Duration::from_millis(args.probe_timeout_ms),
    };
    let report = super::runtime()?.block_on(doctor::examine(settings, &request));
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else {
        print!("{}", doctor::text(&report, std::io::stdout().is_terminal()));
    }
    Ok(if report.healthy { 0 } else { 1 })
}
