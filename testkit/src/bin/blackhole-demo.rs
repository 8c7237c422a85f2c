//! The headline of the README's demo (scripts/demo.sh): the failure users
//! come with, and its fix. A pod network namespace whose eth0 has MTU 1450,
//! a router beyond it that drops its ICMP "fragmentation needed", and a web
//! server at MTU 1500 with an 8 MB file. The same `wget` runs in an inner
//! container under a plain dockerd (it stalls and is killed after 15 s),
//! then under `mtuvisor supervise` (it completes); then the MTUs.
//! Exits 1 when either outcome is not what it should be.

use std::time::Duration;

use testkit::blackhole::BlackHole;
use testkit::dockerd::{require_docker, IMAGE};

const LIMIT: Duration = Duration::from_secs(15);

fn outcome(took: &Result<Duration, String>) -> String {
    match took {
        Ok(t) => format!(
            "completed in {:.2} s (container start included)",
            t.as_secs_f64()
        ),
        Err(_) => format!("stalled, killed after {} s", LIMIT.as_secs()),
    }
}

fn main() {
    if !require_docker("the demo") {
        return;
    }
    println!("== a pod (eth0 MTU 1450) behind a router that drops ICMP \"fragmentation needed\"");
    let mut b = BlackHole::new("demo", 1450);
    let url = b.http_big();

    b.d.start_plain();
    b.d.ready();
    b.d.import_busybox();
    let plain_mtu = b.d.first_instruction_mtu(None);
    let plain = b.try_fetch("bridge", &url, LIMIT);
    println!(
        "plain dockerd:       inner container eth0 MTU {plain_mtu}: wget {url} {}",
        outcome(&plain)
    );
    if b.d.stop_main(Duration::from_secs(30)).is_none() {
        eprintln!("the plain dockerd did not stop within 30 s");
        std::process::exit(1);
    }

    b.d.start_supervised(&[]);
    b.d.ready();
    let fixed_mtu = b.d.first_instruction_mtu(None);
    let fixed = b.try_fetch("bridge", &url, LIMIT);
    println!(
        "mtuvisor supervise:  inner container eth0 MTU {fixed_mtu}: wget {url} {}",
        outcome(&fixed)
    );

    println!();
    println!("== MTUs under mtuvisor supervise, with a container running");
    b.d.docker_ok(&["run", "-d", "--name", "demo", IMAGE, "sleep", "600"]);
    println!("  {:<26} {:<16} MTU", "WHERE", "LINK");
    let links = testkit::ip(&b.d.pod, &["-o", "link", "show"]);
    for line in links.lines() {
        let mut words = line.split_whitespace();
        let name = words.nth(1).unwrap_or("").trim_end_matches(':');
        let name = name.split('@').next().unwrap_or(name);
        let mtu = line
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .unwrap_or("?");
        if name != "lo" {
            println!("  {:<26} {:<16} {mtu}", "pod", name);
        }
    }
    let inner =
        b.d.docker_ok(&["exec", "demo", "cat", "/sys/class/net/eth0/mtu"]);
    println!("  {:<26} {:<16} {inner}", "container on docker0", "eth0");
    b.d.docker_ok(&["rm", "-f", "demo"]);

    if let Err(why) = &fixed {
        eprintln!("under mtuvisor: {why}");
    }
    let as_expected = plain.is_err() && fixed.is_ok();
    if !as_expected {
        eprintln!("the demo did not show a stall without mtuvisor and a completion with it; dockerd's log:\n{}", b.d.tail());
        std::process::exit(1);
    }
}
