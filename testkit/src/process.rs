//! The binary under test and how tests run it: privileges, the binary's
//! path, starting it in a namespace, checking a refusal.

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `mtuvisor` binary cargo built for these tests, benches and the demo
/// (in the same profile's directory).
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // A test or bench lives in target/<profile>/deps, the demo in
        // target/<profile> itself.
        let beside = exe.parent().expect("a binary lives in a directory");
        let bin = [beside, beside.parent().unwrap_or(beside)]
            .iter()
            .map(|dir| dir.join("mtuvisor"))
            .find(|bin| bin.is_file())
            .unwrap_or_else(|| beside.join("mtuvisor"));
        assert!(
            bin.exists(),
            "{} does not exist: run the tests with cargo, which builds it first",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

/// Returns false (and says so) when the test must be skipped; panics with
/// a clear message when root is missing and skipping was not asked for.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && which("ip") {
        return true;
    }
    if std::env::var("MTUVISOR_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root and iproute2 (MTUVISOR_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2 to build network namespaces; \
         run the suite as root (scripts/test.sh), or set MTUVISOR_SKIP_PRIVILEGED=1 to skip it"
    );
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

/// `nsenter --net=/run/netns/NS mtuvisor` (not `ip netns exec`, which
/// remounts /sys).
pub fn mtuvisor_in(netns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).arg(bin());
    cmd.env_remove("MTUVISOR_MTU")
        .env_remove("MTUVISOR_LOG_FORMAT");
    cmd
}

pub fn run_mtuvisor(netns: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    mtuvisor_in(netns)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mtuvisor")
}

/// Bad input: exit 2 and exactly one line on stderr, naming `mentions`.
pub fn assert_rejected(out: &Output, mentions: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit 2, got {:?}: {err}",
        out.status
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "exactly one line: {err:?}"
    );
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}
