//! What mtuvisor reads from, and adds to, dockerd's command line. Pure
//! functions: the supervisor runs them, unit tests check them.

use std::path::PathBuf;

/// Where dockerd listens when no `-H unix://…` is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// dockerd's `--exec-root` default; its `netns/` holds the sandboxes.
pub const DEFAULT_EXEC_ROOT: &str = "/var/run/docker";

/// The values of a flag in any of its spellings: `--name V`, `--name=V`,
/// and for a short alias `-x V`, `-x=V`, `-xV`.
fn flag_values<'a>(args: &'a [String], long: &str, short: Option<&str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let names = std::iter::once(long).chain(short);
        for name in names {
            if a == name {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.as_str());
                    i += 1;
                }
                break;
            } else if let Some(v) = a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
                out.push(v);
                break;
            } else if name.len() == 2 && a.starts_with(name) && !a.starts_with("--") && a.len() > 2
            {
                out.push(&a[2..]);
                break;
            }
        }
        i += 1;
    }
    out
}

/// The MTU the arguments already set with `--mtu`, if any.
pub fn user_mtu(args: &[String]) -> Option<String> {
    flag_values(args, "--mtu", None)
        .last()
        .map(|v| v.to_string())
}

/// Whether `program` (a name or a path) is dockerd itself.
pub fn is_dockerd(program: &str) -> bool {
    std::path::Path::new(program)
        .file_name()
        .is_some_and(|n| n == "dockerd")
}

/// Whether `command` ends in dockerd with the arguments given: dockerd
/// itself, or a wrapper (`dockerd-entrypoint.sh`, `docker-init --`) given
/// nothing, flags only, or `dockerd …`, the forms docker:dind's entrypoint
/// turns into a dockerd. Any other command (`dockerd-entrypoint.sh sh`)
/// is run as given.
pub fn reaches_dockerd(command: &[String]) -> bool {
    match command {
        [] => true,
        [program, rest @ ..] => {
            is_dockerd(program)
                || match rest.first() {
                    None => true,
                    Some(first) => first.starts_with('-') || is_dockerd(first),
                }
        }
    }
}

/// The API socket dockerd will listen on: the first `unix://` one in
/// `-H`/`--host`; else, when a wrapper starts dockerd, `docker_host` (the
/// environment's DOCKER_HOST, which docker:dind's entrypoint uses when it
/// is a unix socket); else the default.
pub fn docker_socket(command: &[String], docker_host: Option<&str>) -> PathBuf {
    let wrapper = command.first().is_some_and(|p| !is_dockerd(p));
    flag_values(command, "--host", Some("-H"))
        .into_iter()
        .find_map(|h| h.strip_prefix("unix://"))
        .or_else(|| {
            docker_host
                .filter(|_| wrapper)
                .and_then(|h| h.strip_prefix("unix://"))
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// dockerd's `--exec-root`, where its sandboxes' namespace files live.
pub fn exec_root(args: &[String]) -> PathBuf {
    flag_values(args, "--exec-root", None)
        .last()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_EXEC_ROOT))
}

/// Parses `Docker version 24.0.7, build afdd53b` (and Debian's
/// `20.10.24+dfsg1`) into (major, minor).
pub fn parse_docker_version(output: &str) -> Option<(u32, u32)> {
    let rest = output.split("version").nth(1)?.trim_start();
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The arguments to start dockerd with: the user's, plus `--mtu=N` unless
/// they set one, plus (Engine 24+) a default network option so that new
/// networks are born at N.
pub fn dockerd_args(args: &[String], mtu: u32, version: Option<(u32, u32)>) -> Vec<String> {
    let mut out = args.to_vec();
    if user_mtu(args).is_none() {
        out.push(format!("--mtu={mtu}"));
    }
    let has_default_opt = !flag_values(args, "--default-network-opt", None).is_empty();
    if version.is_some_and(|(major, _)| major >= 24) && !has_default_opt {
        out.push(format!(
            "--default-network-opt=bridge=com.docker.network.driver.mtu={mtu}"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_socket_in_every_spelling() {
        let socket = |args: &[&str]| docker_socket(&v(args), None);
        assert_eq!(socket(&["dockerd"]), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket(&["dockerd", "-H", "unix:///a.sock"]),
            PathBuf::from("/a.sock")
        );
        assert_eq!(
            socket(&["dockerd", "-Hunix:///b.sock"]),
            PathBuf::from("/b.sock")
        );
        assert_eq!(
            socket(&["dockerd", "--host=unix:///c.sock"]),
            PathBuf::from("/c.sock")
        );
        assert_eq!(
            socket(&[
                "dockerd",
                "--host",
                "tcp://0.0.0.0:2375",
                "-H",
                "unix:///d.sock"
            ]),
            PathBuf::from("/d.sock")
        );
    }

    #[test]
    fn a_wrapper_takes_the_socket_from_docker_host() {
        let host = Some("unix:///run/dind.sock");
        assert_eq!(
            docker_socket(&v(&["dockerd-entrypoint.sh"]), host),
            PathBuf::from("/run/dind.sock")
        );
        assert_eq!(
            docker_socket(&v(&["dockerd-entrypoint.sh"]), Some("tcp://docker:2376")),
            PathBuf::from(DEFAULT_SOCKET),
            "only a unix socket is where dockerd listens"
        );
        assert_eq!(
            docker_socket(&v(&["dockerd"]), host),
            PathBuf::from(DEFAULT_SOCKET),
            "dockerd itself does not read DOCKER_HOST"
        );
        assert_eq!(
            docker_socket(&v(&["dockerd-entrypoint.sh", "-H", "unix:///x.sock"]), host),
            PathBuf::from("/x.sock"),
            "a flag wins"
        );
    }

    #[test]
    fn which_commands_reach_dockerd() {
        for reaches in [
            &["dockerd"][..],
            &["/usr/bin/dockerd", "--debug"],
            &["dockerd-entrypoint.sh"],
            &["dockerd-entrypoint.sh", "--mtu=1400"],
            &[
                "dockerd-entrypoint.sh",
                "dockerd",
                "--host=unix:///var/run/docker.sock",
            ],
            &["dockerd-entrypoint.sh", "/usr/local/bin/dockerd"],
            &["docker-init", "--", "dockerd"],
        ] {
            assert!(reaches_dockerd(&v(reaches)), "{reaches:?}");
        }
        for other in [
            &["dockerd-entrypoint.sh", "sh"][..],
            &["dockerd-entrypoint.sh", "docker", "version"],
        ] {
            assert!(!reaches_dockerd(&v(other)), "{other:?}");
        }
    }

    #[test]
    fn mtu_is_appended_unless_given() {
        assert_eq!(
            dockerd_args(&v(&["dockerd"]), 1450, Some((20, 10))),
            v(&["dockerd", "--mtu=1450"])
        );
        assert_eq!(
            dockerd_args(&v(&["dockerd", "--mtu", "1400"]), 1450, None),
            v(&["dockerd", "--mtu", "1400"])
        );
        assert_eq!(
            user_mtu(&v(&["dockerd", "--mtu=1400"])),
            Some("1400".into())
        );
    }

    #[test]
    fn engine_24_also_gets_the_default_network_option() {
        assert_eq!(
            dockerd_args(&v(&["dockerd-entrypoint.sh"]), 1420, Some((24, 0))),
            v(&[
                "dockerd-entrypoint.sh",
                "--mtu=1420",
                "--default-network-opt=bridge=com.docker.network.driver.mtu=1420"
            ])
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_docker_version("Docker version 20.10.24+dfsg1, build 5d6db84"),
            Some((20, 10))
        );
        assert_eq!(
            parse_docker_version("Docker version 24.0.7, build afdd53b"),
            Some((24, 0))
        );
        assert_eq!(parse_docker_version("garbage"), None);
    }

    #[test]
    fn exec_root_default_and_given() {
        assert_eq!(
            exec_root(&v(&["dockerd"])),
            PathBuf::from(DEFAULT_EXEC_ROOT)
        );
        assert_eq!(
            exec_root(&v(&["dockerd", "--exec-root=/x"])),
            PathBuf::from("/x")
        );
    }
}
