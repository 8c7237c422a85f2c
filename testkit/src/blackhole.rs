//! The PMTU black hole users hit, made reproducible: a server (MTU 1500)
//! behind a router whose link to the pod has a smaller MTU and which drops
//! the ICMP "fragmentation needed" it would send, and the pod with dockerd.
//! [`BlackHole::beyond`] moves the bottleneck past the pod's first hop
//! (the pod's `eth0` says 1500), silent or honest, IPv4 and IPv6, and
//! lets a test move it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::dockerd::{DockerLab, IMAGE};
use crate::lab::{eventually, ip, sh};

pub const SERVER: &str = "198.51.100.10";
/// The server's IPv6 address in [`BlackHole::beyond`].
pub const SERVER6: &str = "2001:db8:3::10";
pub const BIG: &str = "8mb.bin";
const BIG_BYTES: usize = 8 << 20;

pub struct BlackHole {
    pub d: DockerLab,
    pub server: String,
    /// [`BlackHole::beyond`]: the router past the bottleneck.
    pub mid: Option<String>,
}

fn in_ns(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}")).args(args);
    cmd
}

fn run_in(netns: &str, args: &[&str]) {
    let out = in_ns(netns, args).output().expect("nsenter");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl BlackHole {
    /// `router_to_pod_mtu`: the MTU of the router's link toward the pod
    /// (1450 like the pod's eth0, or smaller for a bottleneck beyond it).
    pub fn new(tag: &str, router_to_pod_mtu: u32) -> BlackHole {
        let mut d = DockerLab::new(tag);
        let router = d.router.clone();
        ip(
            &router,
            &[
                "link",
                "set",
                "down0",
                "mtu",
                &router_to_pod_mtu.to_string(),
            ],
        );
        let server = d.lab.netns("srv");
        ip(
            &server,
            &[
                "link", "add", "s0", "type", "veth", "peer", "name", "up0", "netns", &router,
            ],
        );
        ip(&server, &["link", "set", "s0", "mtu", "1500", "up"]);
        ip(&router, &["link", "set", "up0", "mtu", "1500", "up"]);
        ip(
            &server,
            &["addr", "add", &format!("{SERVER}/24"), "dev", "s0"],
        );
        ip(&router, &["addr", "add", "198.51.100.1/24", "dev", "up0"]);
        ip(&server, &["route", "add", "default", "via", "198.51.100.1"]);
        run_in(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The black hole: the router cannot say "fragmentation needed".
        crate::lab::drop_frag_needed(&router);
        serve(&mut d, &server, &router);
        BlackHole {
            d,
            server,
            mid: None,
        }
    }

    /// The pod's `eth0` and its router's end at 1500; past the router a
    /// link of `bottleneck` to a second router (`mid`), then the server
    /// at 1500. IPv4 and IPv6 (pod `2001:db8:1::2`, server [`SERVER6`]).
    /// `silent`: both routers drop the "fragmentation needed" and "packet
    /// too big" they would send (the black hole); else they send them.
    pub fn beyond(tag: &str, bottleneck: u32, silent: bool) -> BlackHole {
        let mut d = DockerLab::new(tag);
        let (pod, router) = (d.pod.clone(), d.router.clone());
        ip(&pod, &["link", "set", "eth0", "mtu", "1500"]);
        ip(&router, &["link", "set", "down0", "mtu", "1500"]);
        let mid = d.lab.netns("mid");
        let server = d.lab.netns("srv");
        let b = bottleneck.to_string();
        ip(
            &router,
            &[
                "link", "add", "nar0", "type", "veth", "peer", "name", "nar1", "netns", &mid,
            ],
        );
        ip(&router, &["link", "set", "nar0", "mtu", &b, "up"]);
        ip(&mid, &["link", "set", "nar1", "mtu", &b, "up"]);
        ip(
            &server,
            &[
                "link", "add", "s0", "type", "veth", "peer", "name", "up0", "netns", &mid,
            ],
        );
        ip(&server, &["link", "set", "s0", "mtu", "1500", "up"]);
        ip(&mid, &["link", "set", "up0", "mtu", "1500", "up"]);
        // IPv4: pod 192.0.2.0/24 (the lab's), routers 100.64.0.0/30,
        // server 198.51.100.0/24.
        ip(&router, &["addr", "add", "100.64.0.1/30", "dev", "nar0"]);
        ip(&mid, &["addr", "add", "100.64.0.2/30", "dev", "nar1"]);
        ip(&mid, &["addr", "add", "198.51.100.1/24", "dev", "up0"]);
        ip(
            &server,
            &["addr", "add", &format!("{SERVER}/24"), "dev", "s0"],
        );
        ip(
            &router,
            &["route", "add", "198.51.100.0/24", "via", "100.64.0.2"],
        );
        ip(&mid, &["route", "add", "192.0.2.0/24", "via", "100.64.0.1"]);
        ip(&server, &["route", "add", "default", "via", "198.51.100.1"]);
        // IPv6: pod 2001:db8:1::/64, routers 2001:db8:2::/64, server
        // 2001:db8:3::/64.
        let v6 = |ns: &str, addr: &str, dev: &str| {
            ip(ns, &["-6", "addr", "add", addr, "dev", dev, "nodad"]);
        };
        crate::lab::ipv6_default_route(&pod, "eth0", "2001:db8:1");
        v6(&router, "2001:db8:1::1/64", "down0");
        v6(&router, "2001:db8:2::1/64", "nar0");
        v6(&mid, "2001:db8:2::2/64", "nar1");
        v6(&mid, "2001:db8:3::1/64", "up0");
        v6(&server, &format!("{SERVER6}/64"), "s0");
        ip(
            &router,
            &[
                "-6",
                "route",
                "add",
                "2001:db8:3::/64",
                "via",
                "2001:db8:2::2",
            ],
        );
        ip(
            &mid,
            &[
                "-6",
                "route",
                "add",
                "2001:db8:1::/64",
                "via",
                "2001:db8:2::1",
            ],
        );
        ip(
            &server,
            &["-6", "route", "add", "default", "via", "2001:db8:3::1"],
        );
        for ns in [&router, &mid] {
            run_in(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            run_in(ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
            if silent {
                crate::lab::drop_frag_needed(ns);
                run_in(
                    ns,
                    &[
                        "ip6tables",
                        "-A",
                        "OUTPUT",
                        "-p",
                        "icmpv6",
                        "--icmpv6-type",
                        "packet-too-big",
                        "-j",
                        "DROP",
                    ],
                );
            }
        }
        serve(&mut d, &server, &router);
        // A fresh IPv6 path holds its first packets for about 2 s while
        // the hops resolve their neighbours; the tests are about sizes,
        // so the lab is ready once a small echo crosses it.
        let v6_up = eventually(Duration::from_secs(10), || {
            in_ns(
                &pod,
                &["busybox", "ping", "-6", "-c", "1", "-W", "1", SERVER6],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        });
        assert!(v6_up, "the lab's IPv6 path to {SERVER6} did not come up");
        BlackHole {
            d,
            server,
            mid: Some(mid),
        }
    }

    /// Moves the bottleneck of [`BlackHole::beyond`] to `mtu` (both ends).
    pub fn set_bottleneck(&self, mtu: u32) {
        let mid = self.mid.as_ref().expect("a lab made by BlackHole::beyond");
        let m = mtu.to_string();
        ip(&self.d.router, &["link", "set", "nar0", "mtu", &m]);
        ip(mid, &["link", "set", "nar1", "mtu", &m]);
    }
}

/// busybox wget, quiet, any certificate, the body discarded; the URL next.
const WGET: [&str; 5] = ["wget", "--no-check-certificate", "-q", "-O", "/dev/null"];

/// The server's 8 MB file over HTTP and a TLS server with a long chain;
/// returns once the router (no bottleneck on its side) can fetch both.
fn serve(d: &mut DockerLab, server: &str, router: &str) {
    let www = d.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let data: Vec<u8> = (0..BIG_BYTES)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(www.join(BIG), data).unwrap();
    std::fs::write(www.join("small.txt"), "hello\n").unwrap();
    let pki = pki();
    let mut httpd = in_ns(
        server,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ],
    );
    httpd.stdout(Stdio::null()).stderr(Stdio::null());
    d.lab.spawn(httpd);
    let mut tls = in_ns(
        server,
        &[
            "openssl",
            "s_server",
            "-quiet",
            "-accept",
            "443",
            "-WWW",
            "-cert",
            pki.join("leaf.crt").to_str().unwrap(),
            "-key",
            pki.join("leaf.key").to_str().unwrap(),
            "-cert_chain",
            pki.join("chain.pem").to_str().unwrap(),
            // busybox's own TLS (the image has no openssl for wget to
            // hand over to) signs only with SHA-1, which OpenSSL 3
            // refuses at its default level. The chain sent is still the
            // full three RSA-4096 certificates.
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
    );
    tls.current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    d.lab.spawn(tls);
    // Up when the router itself (no bottleneck on its side) can fetch.
    let up = eventually(Duration::from_secs(10), || {
        [
            "http://198.51.100.10/small.txt",
            "https://198.51.100.10/small.txt",
        ]
        .iter()
        .all(|url| {
            let mut wget = vec!["busybox"];
            wget.extend_from_slice(&WGET);
            wget.push(url);
            in_ns(router, &wget)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    });
    assert!(up, "lab servers did not come up");
}

impl BlackHole {
    /// Runs `command` in a fresh container on `network`, killed after
    /// `limit`. `--init`: a process that is PID 1 would ignore the signal.
    fn run_limited(
        &self,
        network: &str,
        limit: Duration,
        command: &[&str],
    ) -> std::process::Output {
        let secs = limit.as_secs().to_string();
        let mut args = vec![
            "run",
            "--rm",
            "--init",
            "--network",
            network,
            IMAGE,
            "timeout",
            "-s",
            "KILL",
            &secs,
        ];
        args.extend_from_slice(command);
        self.d.docker(&args)
    }

    /// From a fresh container on `network`: fetch `url` within `limit`.
    /// Returns how long it took, or `None` when it stalled or failed (and
    /// says how on stderr, for the test's log).
    pub fn fetch(&self, network: &str, url: &str, limit: Duration) -> Option<Duration> {
        self.try_fetch(network, url, limit)
            .map_err(|why| eprintln!("{why}"))
            .ok()
    }

    /// [`BlackHole::fetch`] without a word: how long it took, or how it
    /// failed. For the demo, whose stall without mtuvisor is the point and
    /// not a failure to report.
    pub fn try_fetch(&self, network: &str, url: &str, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let mut wget = WGET.to_vec();
        wget.push(url);
        let out = self.run_limited(network, limit, &wget);
        if out.status.success() {
            return Ok(start.elapsed());
        }
        Err(format!(
            "fetch {url} on {network}: {:?} after {:?}: {}",
            out.status.code(),
            start.elapsed(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }

    /// One container downloading `url` `count` times in a row, timed
    /// inside the container (`/proc/uptime`, 10 ms steps) so that neither
    /// its start nor the network's set-up is counted: the time per download.
    pub fn download_time(
        &self,
        network: &str,
        url: &str,
        count: usize,
        limit: Duration,
    ) -> Option<Duration> {
        let script =
            format!(
            "read a _ < /proc/uptime; for i in {}; do wget -q -O /dev/null {url} || exit 1; done; \
             read b _ < /proc/uptime; echo $a $b",
            (1..=count).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
        );
        let out = self.run_limited(network, limit, &["sh", "-c", &script]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
        let (a, b) = (it.next()??, it.next()??);
        Some(Duration::from_secs_f64((b - a) / count as f64))
    }

    pub fn http_big(&self) -> String {
        format!("http://{SERVER}/{BIG}")
    }

    /// The handshake is what stalls: the server's certificate chain spans
    /// several full-size packets.
    pub fn https_small(&self) -> String {
        format!("https://{SERVER}/small.txt")
    }
}

/// A chain of three RSA-4096 certificates (root, intermediate, leaf),
/// made once and shared by every test process.
fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from("/tmp/mtuvisor-e2e/pki-rsa4096-v1");
        if dir.join("chain.pem").exists() {
            return dir;
        }
        let work = PathBuf::from(format!(
            "/tmp/mtuvisor-e2e/pki-build-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let w = |f: &str| work.join(f).to_str().unwrap().to_string();
        std::fs::write(work.join("ca.ext"), "basicConstraints=critical,CA:TRUE\n").unwrap();
        let days = "3650";
        sh(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:4096",
            "-nodes",
            "-keyout",
            &w("root.key"),
            "-out",
            &w("root.crt"),
            "-subj",
            "/CN=mtuvisor-test-root",
            "-days",
            days,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ]);
        sh(&[
            "openssl",
            "req",
            "-newkey",
            "rsa:4096",
            "-nodes",
            "-keyout",
            &w("int.key"),
            "-out",
            &w("int.csr"),
            "-subj",
            "/CN=mtuvisor-test-intermediate",
        ]);
        sh(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            &w("int.csr"),
            "-CA",
            &w("root.crt"),
            "-CAkey",
            &w("root.key"),
            "-CAcreateserial",
            "-out",
            &w("int.crt"),
            "-days",
            days,
            "-extfile",
            &w("ca.ext"),
        ]);
        sh(&[
            "openssl",
            "req",
            "-newkey",
            "rsa:4096",
            "-nodes",
            "-keyout",
            &w("leaf.key"),
            "-out",
            &w("leaf.csr"),
            "-subj",
            &format!("/CN={SERVER}"),
        ]);
        sh(&[
            "openssl",
            "x509",
            "-req",
            "-in",
            &w("leaf.csr"),
            "-CA",
            &w("int.crt"),
            "-CAkey",
            &w("int.key"),
            "-CAcreateserial",
            "-out",
            &w("leaf.crt"),
            "-days",
            days,
        ]);
        let chain = std::fs::read_to_string(work.join("int.crt")).unwrap()
            + &std::fs::read_to_string(work.join("root.crt")).unwrap();
        std::fs::write(work.join("chain.pem"), chain).unwrap();
        match std::fs::rename(&work, &dir) {
            Ok(()) => {}
            // Another test process made it first.
            Err(_) => {
                let _ = std::fs::remove_dir_all(&work);
            }
        }
        dir
    })
}
