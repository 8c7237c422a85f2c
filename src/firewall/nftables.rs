//! Native nftables: a table of mtuvisor's own (`inet mtuvisor`) with a
//! forward chain at mangle priority, covering IPv4 and IPv6 at once.

use super::{run, run_with_input, which, Ensured, FirewallError, MssBackend, MssMode, NFT_TABLE};

pub struct Nftables;

impl Nftables {
    pub fn new() -> Result<Nftables, FirewallError> {
        which("nft").ok_or(FirewallError::Missing {
            tool: "nft".into(),
            backend: "nftables",
        })?;
        Ok(Nftables)
    }
}

/// The statement as `nft list` prints it.
fn statement(mode: MssMode) -> Option<String> {
    let value = match mode {
        MssMode::Pmtu => "rt mtu".to_string(),
        MssMode::Fixed(n) => n.to_string(),
        MssMode::Off => return None,
    };
    Some(format!(
        "tcp flags syn / syn,rst tcp option maxseg size set {value}"
    ))
}

impl MssBackend for Nftables {
    fn ensure(&self, mode: MssMode) -> Result<Ensured, FirewallError> {
        let Some(stmt) = statement(mode) else {
            self.remove()?;
            return Ok(Ensured::Unchanged);
        };
        if let Ok(listed) = run("nft", &["list", "table", "inet", NFT_TABLE]) {
            let rules: Vec<&str> = listed
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("tcp "))
                .collect();
            let hooked = listed.contains("type filter hook forward priority mangle");
            if hooked && rules == [stmt.as_str()] {
                return Ok(Ensured::Unchanged);
            }
        }
        // One transaction: the table is replaced whole, never doubled.
        let script = format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n\
             table inet {NFT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority mangle; policy accept;\n    {stmt}\n  }}\n}}\n"
        );
        run_with_input("nft", &["-f", "-"], &script)?;
        Ok(Ensured::Installed)
    }

    fn remove(&self) -> Result<(), FirewallError> {
        if run("nft", &["list", "table", "inet", NFT_TABLE]).is_ok() {
            run("nft", &["delete", "table", "inet", NFT_TABLE])?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("nftables (IPv4+IPv6, table inet {NFT_TABLE})")
    }
}
