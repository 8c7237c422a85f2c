//! `mtuvisor detect`: print the outer MTU, where it comes from, and the
//! target mtuvisor would enforce with these settings.

use clap::Args;
use serde::Serialize;

use crate::config::Settings;
use crate::detect::{outer_mtu, OuterMtu, TargetSource};
use crate::error::Error;
use crate::netlink::Rtnl;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The JSON document: the outer MTU's fields, and the target.
#[derive(Serialize)]
struct Detected {
    #[serde(flatten)]
    outer: OuterMtu,
    /// What `watch`, `supervise` and `node` would enforce here before any
    /// path probe (and `supervise` give dockerd as `--mtu`).
    target_mtu: u32,
    /// `link`, `route`, `fixed`, `ceiling` or `floor`.
    target_source: &'static str,
    mtu_ceiling: u32,
}

pub fn run(settings: &Settings, args: &DetectArgs) -> Result<(), Error> {
    let outer = super::runtime()?.block_on(async {
        let rtnl = Rtnl::connect()?;
        Ok::<_, Error>(outer_mtu(&rtnl).await?)
    })?;
    let (target_mtu, origin) = TargetSource::configured(settings, outer.clone()).decide();
    if args.json {
        let detected = Detected {
            outer,
            target_mtu,
            target_source: origin.label(),
            mtu_ceiling: settings.mtu_ceiling,
        };
        let json = serde_json::to_string(&detected).expect("the report serializes");
        println!("{json}");
    } else {
        print!("{outer}");
        println!("target MTU: {target_mtu} ({})", origin.explain());
    }
    Ok(())
}
