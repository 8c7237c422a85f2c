//! Seeded randomness for hostile pod states: a generator small enough to
//! stay the same across versions (a failing seed must replay the same
//! bytes forever), and the byte strings the kernel lets a pod put where
//! the agent reads.

/// SplitMix64: a fixed, well-mixed sequence per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed nobody chose: the clock and the process.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An interface name the kernel accepts (`dev_valid_name`): 1 to 15
    /// bytes, none of them NUL, `/`, `:` or whitespace; `%` is left out
    /// too (the kernel would number it). At least one byte is outside
    /// ASCII or a control character, so that no name is plain text.
    pub fn link_name(&mut self) -> Vec<u8> {
        let len = self.between(1, 15) as usize;
        let mut name: Vec<u8> = (0..len).map(|_| self.name_byte()).collect();
        let at = self.below(len as u64) as usize;
        name[at] = *self.pick(&[0xff, 0xfe, 0xc0, 0x01, 0x1b, 0x7f, 0xf8]);
        if name == b"." || name == b".." {
            name.push(0xff);
        }
        name
    }

    fn name_byte(&mut self) -> u8 {
        loop {
            let b = self.between(1, 255) as u8;
            if !matches!(
                b,
                b'/' | b':' | b'%' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'
            ) {
                // The kernel's isspace() also holds 0xa0 (its ctype table
                // is Latin-1's), and dev_valid_name() refuses it. Mapped,
                // not drawn again, so that a kept seed means the same
                // case as before wherever it drew no 0xa0.
                return if b == 0xa0 { 0xa1 } else { b };
            }
        }
    }

    /// An interface alias: 1 to 255 bytes of anything but NUL, with a
    /// newline and a byte outside UTF-8 in it.
    pub fn alias(&mut self) -> Vec<u8> {
        let len = self.between(2, 255) as usize;
        let mut alias: Vec<u8> = (0..len).map(|_| self.between(1, 255) as u8).collect();
        alias[0] = 0xff;
        alias[len - 1] = b'\n';
        alias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_bytes() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            assert_eq!(a.link_name(), b.link_name());
        }
        // Pinned: a kept seed must mean the same case in every version.
        assert_eq!(Rng::new(1).next_u64(), 0x910a_2dec_8902_5cc1);
    }

    #[test]
    fn names_are_what_the_kernel_accepts() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let n = r.link_name();
            assert!((1..=15).contains(&n.len()));
            assert!(!n
                .iter()
                .any(|b| matches!(b, 0 | b'/' | b':' | b'%' | 0xa0) || b.is_ascii_whitespace()));
            assert!(std::str::from_utf8(&n).is_err() || n.iter().any(|b| b.is_ascii_control()));
        }
    }
}

// --- The chaos pod: hostile states, generated ----------------------------

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hostile::{self, Arena, Attack};

/// The flood pairs a chaos pod keeps at once.
const FLOOD_PAIRS: usize = 1500;

/// What a chaos run may do: the node agent sees every kind; an enforcer
/// inside the pod (`watch`, `supervise`) the kinds that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Node,
    InPod,
}

/// A hostile pod driven by a seeded generator: each [`ChaosPod::step`]
/// changes its state in one of the ways a CI job can (links named and
/// aliased with random bytes, far ends in namespaces it made and moved
/// between them, nested namespaces, Docker-named bridges, floods, rules
/// and chains in both firewall backends, route changes, files in its
/// root), and says what it did. The same seed replays the same steps.
pub struct ChaosPod {
    pub pod: String,
    scope: Scope,
    rng: Rng,
    scratch: PathBuf,
    /// Namespaces the pod made (a process of its own holds each).
    holders: Vec<(Attack, i32)>,
    /// Other processes it runs (nested namespaces, files in its root).
    others: Vec<Attack>,
    /// Links it made in its own namespace, and those in the namespaces it
    /// made, by (holder index or none, name).
    links: Vec<(Option<usize>, Vec<u8>)>,
    bridges: Vec<Vec<u8>>,
    counter: u64,
    /// Floods made and not yet deleted (tag, pairs), and their pairs.
    floods: std::collections::VecDeque<(u64, usize)>,
    flooded: usize,
    /// A file outside the pod that it tries to make the agent read.
    secret: Option<PathBuf>,
}

/// Runs a command; whether it succeeded (a chaos step may fail: a name
/// already taken, a link already gone).
fn attempt(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b)
}

impl ChaosPod {
    pub fn new(
        pod: &str,
        seed: u64,
        scope: Scope,
        scratch: &Path,
        secret: Option<&Path>,
    ) -> ChaosPod {
        ChaosPod {
            pod: pod.to_string(),
            scope,
            rng: Rng::new(seed),
            scratch: scratch.to_path_buf(),
            holders: Vec::new(),
            others: Vec::new(),
            links: Vec::new(),
            bridges: Vec::new(),
            counter: 0,
            floods: std::collections::VecDeque::new(),
            flooded: 0,
            secret: secret.map(Path::to_path_buf),
        }
    }

    /// `ip` in the pod (`None`) or in a namespace it made.
    fn ip_in(&self, at: Option<usize>) -> Command {
        let mut cmd = Command::new("nsenter");
        match at {
            None => cmd.arg(format!("--net=/run/netns/{}", self.pod)),
            Some(h) => cmd.arg(format!("--net=/proc/{}/ns/net", self.holders[h].1)),
        };
        cmd.arg("ip");
        cmd
    }

    fn netns_arg(&self, at: Option<usize>) -> String {
        match at {
            None => format!("/run/netns/{}", self.pod),
            Some(h) => format!("/proc/{}/ns/net", self.holders[h].1),
        }
    }

    fn fresh_name(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut name = self.rng.link_name();
        // Unique within the run: the last bytes count.
        name.truncate(11);
        name.extend_from_slice(format!("{:04}", self.counter % 10_000).as_bytes());
        name
    }

    fn bridge_name(&mut self) -> Vec<u8> {
        match self.rng.below(4) {
            0 => b"docker0".to_vec(),
            1 => format!("br-{:012x}", self.rng.below(1 << 48)).into_bytes(),
            2 => b"cni-podman0".to_vec(),
            _ => self.fresh_name(),
        }
    }

    fn ensure_bridge(&mut self) -> Vec<u8> {
        if !self.bridges.is_empty() && self.rng.chance(70) {
            return self.rng.pick(&self.bridges).clone();
        }
        let name = self.bridge_name();
        if attempt(
            self.ip_in(None)
                .args(["link", "add"])
                .arg(os(&name))
                .args(["type", "bridge"]),
        ) {
            attempt(
                self.ip_in(None)
                    .args(["link", "set"])
                    .arg(os(&name))
                    .arg("up"),
            );
            self.bridges.push(name.clone());
        }
        name
    }

    fn holder(&mut self, arena: &dyn Arena) -> usize {
        if self.holders.is_empty() || (self.holders.len() < 4 && self.rng.chance(10)) {
            let made = hostile::own_namespace(arena, &self.pod, &self.scratch);
            self.holders.push(made);
        }
        self.rng.below(self.holders.len() as u64) as usize
    }

    /// One step; what it did, for a person.
    pub fn step(&mut self, arena: &dyn Arena) -> String {
        let roll = self.rng.below(100);
        match roll {
            0..=24 => self.veths(arena),
            25..=34 => self.rename(),
            35..=42 => self.alias(),
            43..=49 => self.move_far_end(arena),
            50..=54 if self.scope == Scope::Node => {
                let count = self.rng.between(1, 20) as usize;
                let nested = self.rng.chance(50);
                self.others
                    .push(hostile::namespaces(arena, &self.pod, count, nested));
                format!("{count} namespaces (nested: {nested})")
            }
            55..=59 => self.flood(),
            60..=69 => self.rules(),
            70..=76 => self.routes(),
            77..=80 if self.scope == Scope::Node => {
                let a = match (self.rng.below(4), &self.secret) {
                    (0, _) => hostile::hostname_fifo(arena, &self.pod, &self.scratch),
                    (1, _) => hostile::hostname_huge(arena, &self.pod, &self.scratch),
                    (2, Some(secret)) => {
                        hostile::hostname_symlink_out(arena, &self.pod, &self.scratch, secret)
                    }
                    _ => hostile::hostname_newline(arena, &self.pod, &self.scratch),
                };
                self.others.push(a);
                "a hostname file of its choosing in its root".into()
            }
            81..=90 => self.delete(),
            91..=95 => self.mtu(),
            _ => self.forge(),
        }
    }

    /// Link notifications posing as the kernel's, sent to the group.
    fn forge(&mut self) -> String {
        let (forgery, datagrams, each) = match self.rng.below(3) {
            0 => (
                hostile::Forgery::BigKinds { kind_len: 65_000 },
                self.rng.between(1, 50) as usize,
                1,
            ),
            1 => (
                hostile::Forgery::Flood,
                self.rng.between(1, 50) as usize,
                500,
            ),
            _ => (
                hostile::Forgery::Undecodable,
                self.rng.between(1, 50) as usize,
                500,
            ),
        };
        let sent = hostile::forge_link_notifications(
            &self.pod,
            forgery,
            datagrams,
            each,
            std::time::Duration::from_millis(1),
        );
        format!("{sent} datagrams of forged notifications ({forgery:?})")
    }

    fn veths(&mut self, arena: &dyn Arena) -> String {
        let bridge = self.ensure_bridge();
        let count = self.rng.between(1, 8) as usize;
        let far = if self.rng.chance(60) {
            Some(self.holder(arena))
        } else {
            None
        };
        let alias = self.rng.chance(30).then(|| self.rng.alias());
        let mut made = 0;
        for _ in 0..count {
            let (host, peer) = (self.fresh_name(), self.fresh_name());
            let mut cmd = self.ip_in(None);
            cmd.args(["link", "add"])
                .arg(os(&host))
                .args(["type", "veth", "peer", "name"])
                .arg(os(&peer));
            if far.is_some() {
                cmd.arg("netns").arg(self.netns_arg(far));
            }
            if !attempt(&mut cmd) {
                continue;
            }
            made += 1;
            if let Some(a) = &alias {
                attempt(
                    self.ip_in(far)
                        .args(["link", "set", "dev"])
                        .arg(os(&peer))
                        .arg("alias")
                        .arg(os(a)),
                );
            }
            attempt(
                self.ip_in(far)
                    .args(["link", "set"])
                    .arg(os(&peer))
                    .arg("up"),
            );
            attempt(
                self.ip_in(None)
                    .args(["link", "set"])
                    .arg(os(&host))
                    .arg("master")
                    .arg(os(&bridge))
                    .arg("up"),
            );
            self.links.push((None, host));
            self.links.push((far, peer));
        }
        format!(
            "{made} veths on {} (far ends {}{})",
            crate::chaos::printable(&bridge),
            if far.is_some() {
                "in a namespace it made"
            } else {
                "beside them"
            },
            if alias.is_some() { ", aliased" } else { "" }
        )
    }

    fn pick_link(&mut self) -> Option<usize> {
        (!self.links.is_empty()).then(|| self.rng.below(self.links.len() as u64) as usize)
    }

    fn rename(&mut self) -> String {
        let Some(i) = self.pick_link() else {
            return "nothing to rename".into();
        };
        let (at, old) = self.links[i].clone();
        let new = self.fresh_name();
        // A link must be down to be renamed.
        attempt(
            self.ip_in(at)
                .args(["link", "set"])
                .arg(os(&old))
                .arg("down"),
        );
        let ok = attempt(
            self.ip_in(at)
                .args(["link", "set"])
                .arg(os(&old))
                .arg("name")
                .arg(os(&new)),
        );
        attempt(
            self.ip_in(at)
                .args(["link", "set"])
                .arg(os(if ok { &new } else { &old }))
                .arg("up"),
        );
        if ok {
            self.links[i].1 = new.clone();
        }
        format!(
            "renamed {} to {}",
            crate::chaos::printable(&old),
            crate::chaos::printable(&new)
        )
    }

    fn alias(&mut self) -> String {
        let Some(i) = self.pick_link() else {
            return "nothing to alias".into();
        };
        let (at, name) = self.links[i].clone();
        let alias = self.rng.alias();
        attempt(
            self.ip_in(at)
                .args(["link", "set", "dev"])
                .arg(os(&name))
                .arg("alias")
                .arg(os(&alias)),
        );
        format!(
            "aliased {} with {} bytes",
            crate::chaos::printable(&name),
            alias.len()
        )
    }

    fn move_far_end(&mut self, arena: &dyn Arena) -> String {
        let Some(i) = self.pick_link() else {
            return "nothing to move".into();
        };
        let (at, name) = self.links[i].clone();
        let to = if at.is_some() && self.rng.chance(50) {
            None
        } else {
            Some(self.holder(arena))
        };
        if to == at {
            return "moved nothing".into();
        }
        let ok = attempt(
            self.ip_in(at)
                .args(["link", "set"])
                .arg(os(&name))
                .arg("netns")
                .arg(self.netns_arg(to)),
        );
        if ok {
            self.links[i].0 = to;
            attempt(
                self.ip_in(to)
                    .args(["link", "set"])
                    .arg(os(&name))
                    .arg("up"),
            );
        }
        format!(
            "moved {} to {}",
            crate::chaos::printable(&name),
            if to.is_some() {
                "a namespace it made"
            } else {
                "itself"
            }
        )
    }

    fn flood(&mut self) -> String {
        let bridge = format!("br-{:012x}", self.rng.below(1 << 48));
        let pairs = self.rng.between(50, 300) as usize;
        // Floods come and go: past FLOOD_PAIRS in all, the oldest goes
        // first (the pod's links stay mostly under the agent's limit, so
        // that the runs keep checking enforcement there).
        let mut gone = 0;
        while self.flooded + pairs > FLOOD_PAIRS {
            let Some((old_tag, old_pairs)) = self.floods.pop_front() else {
                break;
            };
            let file = self
                .scratch
                .join(format!("unflood-{}-{old_tag}", std::process::id()));
            let text: String = (0..old_pairs)
                .map(|i| format!("link del fl{old_tag}x{i}\n"))
                .collect();
            let _ = std::fs::write(&file, text);
            attempt(
                Command::new("ip")
                    .args(["-n", &self.pod, "-force", "-batch"])
                    .arg(&file),
            );
            let _ = std::fs::remove_file(&file);
            let prefix = format!("fl{old_tag}x");
            self.links
                .retain(|(_, n)| !n.starts_with(prefix.as_bytes()));
            self.flooded -= old_pairs;
            gone += old_pairs;
        }
        self.counter += 1;
        let tag = self.counter;
        self.floods.push_back((tag, pairs));
        self.flooded += pairs;
        let file = self
            .scratch
            .join(format!("flood-{}-{tag}", std::process::id()));
        let mut text = format!("link add {bridge} type bridge\nlink set {bridge} up\n");
        for i in 0..pairs {
            text.push_str(&format!(
                "link add fl{tag}x{i} type veth peer name fm{tag}x{i}\nlink set fl{tag}x{i} master {bridge} up\n"
            ));
        }
        let _ = std::fs::write(&file, text);
        attempt(
            Command::new("ip")
                .args(["-n", &self.pod, "-force", "-batch"])
                .arg(&file),
        );
        let _ = std::fs::remove_file(&file);
        self.bridges.push(bridge.clone().into_bytes());
        for i in 0..pairs {
            self.links.push((None, format!("fl{tag}x{i}").into_bytes()));
        }
        format!("{pairs} veth pairs on {bridge} ({gone} of earlier floods deleted)")
    }

    fn rules(&mut self) -> String {
        let count = self.rng.between(1, 5000) as usize;
        if self.rng.chance(50) {
            let mut text = String::from("*mangle\n");
            if self.rng.chance(70) {
                text.push_str(":MTUVISOR-MSS - [0:0]\n");
                for i in 0..count {
                    text.push_str(&format!(
                        "-A MTUVISOR-MSS -p tcp --dport {} -j ACCEPT\n",
                        1 + i % 65000
                    ));
                }
            }
            let jumps = self.rng.between(0, 40);
            for _ in 0..jumps {
                text.push_str("-A FORWARD -j MTUVISOR-MSS\n");
            }
            text.push_str("COMMIT\n");
            let file = self.scratch.join(format!("rules-{}", std::process::id()));
            let _ = std::fs::write(&file, text);
            attempt(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", self.pod))
                    .args(["iptables-restore", "--noflush"])
                    .arg(&file),
            );
            let _ = std::fs::remove_file(&file);
            format!("{count} rules in MTUVISOR-MSS, {jumps} jumps to it")
        } else {
            // A table named like the agent's, with chains of any name
            // (JSON carries any text) and rules.
            let mut items =
                vec![serde_json::json!({"add": {"table": {"family": "inet", "name": "mtuvisor"}}})];
            let chains = self.rng.between(1, 5);
            for _ in 0..chains {
                let mut name: String = self
                    .rng
                    .alias()
                    .iter()
                    .map(|b| char::from(*b % 128))
                    .filter(|c| *c != '\0')
                    .take(60)
                    .collect();
                if let (true, Some(secret)) = (self.rng.chance(30), &self.secret) {
                    name = format!("x\ninclude \"{}\"\n", secret.display());
                }
                items.push(serde_json::json!({"add": {"chain": {"family": "inet", "table": "mtuvisor", "name": name}}}));
            }
            let file = self
                .scratch
                .join(format!("nft-{}.json", std::process::id()));
            let _ = std::fs::write(&file, serde_json::json!({"nftables": items}).to_string());
            attempt(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", self.pod))
                    .args(["nft", "-j", "-f"])
                    .arg(&file),
            );
            let _ = std::fs::remove_file(&file);
            format!("a table inet mtuvisor of its own with {chains} chains")
        }
    }

    fn routes(&mut self) -> String {
        let mtu = self.rng.between(552, 9000);
        match self.rng.below(3) {
            0 => {
                attempt(self.ip_in(None).args([
                    "route",
                    "change",
                    "default",
                    "via",
                    &self.gateway(),
                    "mtu",
                    &mtu.to_string(),
                ]));
                format!("its default route's mtu set to {mtu}")
            }
            1 => {
                let table = self.rng.between(1, 250);
                attempt(self.ip_in(None).args([
                    "route",
                    "add",
                    "default",
                    "via",
                    &self.gateway(),
                    "table",
                    &table.to_string(),
                    "mtu",
                    &mtu.to_string(),
                ]));
                format!("a default route in table {table} with mtu {mtu}")
            }
            _ => {
                attempt(self.ip_in(None).args([
                    "route",
                    "change",
                    "default",
                    "via",
                    &self.gateway(),
                ]));
                "its default route's mtu cleared".into()
            }
        }
    }

    fn gateway(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.pod, "-4", "route", "show", "default"])
            .output();
        out.ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.split_whitespace()
                    .skip_while(|w| *w != "via")
                    .nth(1)
                    .map(String::from)
            })
            .unwrap_or_else(|| "10.244.0.1".into())
    }

    fn delete(&mut self) -> String {
        let Some(i) = self.pick_link() else {
            return "nothing to delete".into();
        };
        let (at, name) = self.links.swap_remove(i);
        attempt(self.ip_in(at).args(["link", "del"]).arg(os(&name)));
        format!("deleted {}", crate::chaos::printable(&name))
    }

    fn mtu(&mut self) -> String {
        let mtu = self.rng.between(68, 9000);
        if self.rng.chance(30) && !self.bridges.is_empty() {
            let b = self.rng.pick(&self.bridges).clone();
            attempt(
                self.ip_in(None)
                    .args(["link", "set"])
                    .arg(os(&b))
                    .args(["mtu", &mtu.to_string()]),
            );
            return format!("bridge {} to mtu {mtu}", crate::chaos::printable(&b));
        }
        let Some(i) = self.pick_link() else {
            return "nothing to resize".into();
        };
        let (at, name) = self.links[i].clone();
        attempt(
            self.ip_in(at)
                .args(["link", "set"])
                .arg(os(&name))
                .args(["mtu", &mtu.to_string()]),
        );
        format!("{} to mtu {mtu}", crate::chaos::printable(&name))
    }
}

/// Bytes shown as printable ASCII (`\xNN` for the rest).
pub fn printable(bytes: &[u8]) -> String {
    mtuvisor::netlink::printable(bytes)
}
