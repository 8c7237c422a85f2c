//! The process's effective capabilities, as `/proc/self/status` lists them:
//! what `sched` and `doctor` say to grant when the kernel refuses.

/// Capability numbers (linux/capability.h) mtuvisor asks about.
pub const NET_ADMIN: u32 = 12;
pub const NET_RAW: u32 = 13;
pub const SYS_ADMIN: u32 = 21;
pub const SYS_NICE: u32 = 23;

/// The effective set (`CapEff`), `None` when it cannot be read.
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

/// Whether capability `cap` is effective (`None`: cannot tell).
pub fn has(cap: u32) -> Option<bool> {
    effective().map(|eff| eff & (1 << cap) != 0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_as_hex() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000803000\n";
        let eff = parse_cap_eff(status).unwrap();
        assert!(eff & (1 << SYS_NICE) != 0);
        assert!(eff & (1 << NET_ADMIN) != 0 && eff & (1 << NET_RAW) != 0);
        assert!(eff & (1 << SYS_ADMIN) == 0);
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }
}
