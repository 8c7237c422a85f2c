//! The process's effective capabilities, as `/proc/self/status` lists them:
//! what `sched` and `doctor` say to grant when the kernel refuses.

/// Capability numbers (linux/capability.h) mtuvisor asks about.
pub const NET_ADMIN: u32 = 12;
pub const NET_RAW: u32 = 13;
pub const SYS_PTRACE: u32 = 19;
pub const SYS_ADMIN: u32 = 21;
pub const SYS_NICE: u32 = 23;

/// A capability a mode needs, and what stops working without it.
#[derive(Debug)]
pub struct Grant {
    pub cap: u32,
    /// As a securityContext lists it (`SYS_ADMIN`).
    pub name: &'static str,
    /// What stops working without it, for a person.
    pub without: &'static str,
    /// Without it the mode cannot do its job (not ready), rather than
    /// doing it with less.
    pub required: bool,
}

/// What `watch` and `supervise` use in their pod (supervise's dockerd
/// needs more: what the runtime gives a privileged container). Not
/// NET_RAW: without it iptables-legacy cannot read its tables and the MSS
/// rules go to nf_tables, which the kernel applies as well.
pub static POD_GRANTS: [Grant; 3] = [
    Grant {
        cap: NET_ADMIN,
        name: "NET_ADMIN",
        without: "no link MTU can be changed and no MSS rule written: containers keep \
                  Docker's 1500",
        required: true,
    },
    Grant {
        cap: SYS_ADMIN,
        name: "SYS_ADMIN",
        without: "no container's network namespace can be entered (setns): a \
                  container that started before mtuvisor, or whose veth dockerd moved \
                  before it was clamped, keeps 1500 at both ends (containers started \
                  later are clamped before the move)",
        required: false,
    },
    Grant {
        cap: SYS_PTRACE,
        name: "SYS_PTRACE",
        without: "a container found only through /proc/<pid>/ns/net (a shared process \
                  namespace without Docker's sandbox files) cannot be entered when it \
                  runs as root",
        required: false,
    },
];

/// Compares the effective set with `grants`: one WARN per missing grant,
/// naming it, what stops working and where to add it. Returns the missing
/// ones (none when the set cannot be read).
pub fn check(grants: &'static [Grant]) -> Vec<&'static Grant> {
    check_against(grants, effective())
}

fn check_against(grants: &'static [Grant], eff: Option<u64>) -> Vec<&'static Grant> {
    let missing = missing(grants, eff);
    for g in &missing {
        tracing::warn!(
            capability = g.name,
            required = g.required,
            "missing CAP_{}: {}; add {} to the container's \
             securityContext.capabilities.add (docker run: --cap-add {})",
            g.name,
            g.without,
            g.name,
            g.name
        );
    }
    missing
}

/// Of `grants`, those not in the effective set `eff` (`None`, cannot
/// tell: none).
pub fn missing(grants: &'static [Grant], eff: Option<u64>) -> Vec<&'static Grant> {
    let Some(eff) = eff else {
        return Vec::new();
    };
    grants.iter().filter(|g| eff & (1 << g.cap) == 0).collect()
}

/// The effective set (`CapEff`), `None` when it cannot be read. Read once:
/// mtuvisor never changes its capabilities, and the engine asks on every
/// refused request (whether a failure was already reported at start).
pub fn effective() -> Option<u64> {
    static EFFECTIVE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *EFFECTIVE.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_cap_eff(&status)
    })
}

/// Whether capability `cap` is effective (`None`: cannot tell).
pub fn has(cap: u32) -> Option<bool> {
    effective().map(|eff| eff & (1 << cap) != 0)
}

/// The capabilities a tool the agent runs may keep: writing rules
/// (`iptables`, `nft`) needs NET_ADMIN, and iptables-legacy reads its
/// tables through a raw socket (NET_RAW, where the agent holds it).
pub const TOOL_CAPS: [u32; 2] = [NET_ADMIN, NET_RAW];

/// Makes `cmd`'s process give up, before it executes, every capability but
/// those of `keep` the agent holds, and the right to gain any
/// (`no_new_privs`): a tool that runs as root keeps what its job needs,
/// never SYS_ADMIN, SYS_PTRACE or SYS_NICE. Under no_new_privs the kernel
/// gives a root process at exec no more than it held before (the bounding
/// set, which only CAP_SETPCAP could shrink, would otherwise be granted
/// back), so lowering the permitted set is enough.
pub fn restrict_child(cmd: &mut std::process::Command, keep: &[u32]) {
    use std::os::unix::process::CommandExt;
    let wanted = keep.iter().fold(0u64, |m, c| m | 1 << c);
    // Unknown: keep only what was asked (capset refuses to add anything).
    let mask = wanted & effective().unwrap_or(wanted);
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: the closure runs in the child between fork and exec and
    // makes only raw system calls (prctl, capset) on data it owns: nothing
    // that allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Best effort: ambient capabilities are empty unless someone
            // raised them, and older kernels lack the call.
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            let mut header = CapHeader {
                version: CAP_V3,
                pid: 0,
            };
            let rc = libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            );
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `_LINUX_CAPABILITY_VERSION_3` and its structures (linux/capability.h).
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
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

    #[test]
    fn a_restricted_child_keeps_only_what_it_was_allowed_and_cannot_gain_more() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status",
        ]);
        restrict_child(&mut cmd, &[NET_ADMIN]);
        let out = crate::process::output(&mut cmd, b"").unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(field("NoNewPrivs:"), "1", "{text}");
        let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
        let prm = u64::from_str_radix(&field("CapPrm:"), 16).unwrap();
        let allowed = 1u64 << NET_ADMIN;
        assert_eq!(eff & !allowed, 0, "{text}");
        assert_eq!(prm & !allowed, 0, "{text}");
        if has(NET_ADMIN) == Some(true) {
            assert_eq!(eff, allowed, "{text}");
        }
    }

    #[test]
    fn missing_grants_are_those_outside_the_effective_set() {
        static GRANTS: [Grant; 2] = [
            Grant {
                cap: NET_ADMIN,
                name: "NET_ADMIN",
                without: "",
                required: true,
            },
            Grant {
                cap: SYS_ADMIN,
                name: "SYS_ADMIN",
                without: "",
                required: true,
            },
        ];
        let names = |eff| -> Vec<&str> { missing(&GRANTS, eff).iter().map(|g| g.name).collect() };
        assert_eq!(names(Some(0x803000)), ["SYS_ADMIN"]);
        assert_eq!(
            names(Some(1 << SYS_ADMIN | 1 << NET_ADMIN)),
            Vec::<&str>::new()
        );
        assert_eq!(
            names(None),
            Vec::<&str>::new(),
            "cannot tell: trust the grant"
        );
    }
}
