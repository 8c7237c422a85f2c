//! `mtuvisor detect`: print the outer MTU and where it comes from.

use clap::Args;

use crate::detect::outer_mtu;
use crate::error::Error;
use crate::netlink::Rtnl;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &DetectArgs) -> Result<(), Error> {
    let outer = super::runtime()?.block_on(async {
        let rtnl = Rtnl::connect()?;
        Ok::<_, Error>(outer_mtu(&rtnl).await?)
    })?;
    if args.json {
        let json = serde_json::to_string(&outer).expect("OuterMtu serializes");
        println!("{json}");
    } else {
        print!("{outer}");
    }
    Ok(())
}
