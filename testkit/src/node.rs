//! A simulated Kubernetes node for `mtuvisor node`: a node namespace with
//! a `cni0` bridge at MTU 1450, and pod namespaces made the way a CNI
//! plugin makes them (a veth from `cni0` becomes the pod's `eth0`, with an
//! address and a default route through the bridge, and the namespace file
//! in /run/netns). The agent only looks at this lab's own pods
//! (`--netns-include <prefix>-p*`) and never scans /proc, so tests running
//! beside it are never touched.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::lab::{eventually, ip, Lab};
use crate::process::mtuvisor_in;

/// Where the agent serves metrics, inside the node namespace.
pub const METRICS: &str = "127.0.0.1:9464";

pub struct NodeLab {
    pub lab: Lab,
    pub node: String,
    pub log: PathBuf,
    pods: u32,
}

impl NodeLab {
    pub fn new(tag: &str) -> NodeLab {
        let mut lab = Lab::new(tag);
        let node = lab.netns("node");
        ip(&node, &["link", "add", "cni0", "type", "bridge"]);
        ip(&node, &["link", "set", "cni0", "mtu", "1450", "up"]);
        ip(&node, &["addr", "add", "10.244.0.1/16", "dev", "cni0"]);
        let log = std::env::temp_dir().join(format!("{}-agent.log", lab.prefix()));
        NodeLab {
            lab,
            node,
            log,
            pods: 0,
        }
    }

    /// A pod whose `eth0` has MTU `mtu`; returns its namespace's name,
    /// `<prefix>-p<name>`.
    pub fn pod(&mut self, name: &str, mtu: u32) -> String {
        self.pod_as(&format!("p{name}"), mtu)
    }

    /// A pod like [`NodeLab::pod`] whose namespace is `<prefix>-<name>`
    /// (outside [`NodeLab::include`] unless `name` starts with `p`).
    pub fn pod_as(&mut self, name: &str, mtu: u32) -> String {
        self.pods += 1;
        let n = self.pods;
        let pod = self.lab.netns(name);
        let host = format!("vp{n}");
        let mtu = mtu.to_string();
        ip(
            &self.node,
            &[
                "link", "add", &host, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ],
        );
        ip(&self.node, &["link", "set", &host, "master", "cni0", "up"]);
        ip(&pod, &["link", "set", "eth0", "mtu", &mtu, "up"]);
        let addr = format!("10.244.{}.{}/16", n / 250 + 1, n % 250 + 2);
        ip(&pod, &["addr", "add", &addr, "dev", "eth0"]);
        ip(&pod, &["route", "add", "default", "via", "10.244.0.1"]);
        pod
    }

    /// A pod with what dockerd makes, without dockerd: bridge
    /// `br-<index as 12 hex>` and three veths on it (both ends in the pod).
    /// Returns (pod, bridge).
    pub fn docker_pod(&mut self, name: &str, index: usize) -> (String, String) {
        let pod = self.pod(name, 1450);
        let bridge = format!("br-{index:012x}");
        ip(&pod, &["link", "add", &bridge, "type", "bridge"]);
        ip(&pod, &["link", "set", &bridge, "up"]);
        for v in 0..3 {
            let host = format!("veth{v}");
            let peer = format!("{host}p");
            ip(
                &pod,
                &["link", "add", &host, "type", "veth", "peer", "name", &peer],
            );
            ip(&pod, &["link", "set", &host, "master", &bridge, "up"]);
        }
        (pod, bridge)
    }

    /// The namespace name `pod(name, …)` gives.
    pub fn pod_name(&self, name: &str) -> String {
        format!("{}-p{name}", self.lab.prefix())
    }

    /// A glob matching this lab's pods and nothing else.
    pub fn include(&self) -> String {
        format!("{}-p*", self.lab.prefix())
    }

    /// `mtuvisor node` in the node namespace, for this lab's pods only.
    pub fn agent(&mut self, extra: &[&str]) -> usize {
        let include = self.include();
        self.agent_including(&include, extra)
    }

    /// `mtuvisor node` for the namespace files matching `include`.
    pub fn agent_including(&mut self, include: &str, extra: &[&str]) -> usize {
        self.agent_with(include, extra, &[])
    }

    /// [`NodeLab::agent_including`] with `env` added.
    pub fn agent_with(&mut self, include: &str, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let i = self.spawn_agent(mtuvisor_in(&self.node), include, extra, env);
        let up = eventually(Duration::from_secs(10), || {
            crate::http::try_http_get(&self.node, METRICS, "/healthz").is_ok_and(|(s, _)| s == 200)
        });
        assert!(up, "the agent answers /healthz; log:\n{}", self.tail());
        i
    }

    /// `mtuvisor node` for the pods `include` names, started by `cmd` (a
    /// command that ends in the binary: [`mtuvisor_in`], or one that drops
    /// capabilities or moves it to another cgroup first), metrics on
    /// [`METRICS`], its log appended to this lab's; waits until `/livez`
    /// answers (ready or not).
    pub fn spawn_agent(
        &mut self,
        mut cmd: Command,
        include: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        cmd.arg("node")
            .args(["--proc-scan", "off", "--netns-include", include])
            .args(["--metrics-addr", METRICS])
            .args(extra)
            .env("MTUVISOR_NETNS_DIRS", "/run/netns")
            .env("MTUVISOR_LOG", "debug")
            .envs(env.iter().copied());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        let i = self.lab.spawn(cmd);
        let alive = eventually(Duration::from_secs(10), || {
            crate::http::try_http_get(&self.node, METRICS, "/livez").is_ok_and(|(s, _)| s == 200)
        });
        assert!(alive, "the agent answers /livez; log:\n{}", self.tail());
        i
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> String {
        crate::http::http_get(&self.node, METRICS, "/metrics").1
    }

    /// A sample of the agent's metrics by its full name with labels.
    pub fn sample(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Every link of `netns` with its MTU, for comparing before and after.
pub fn snapshot(netns: &str) -> Vec<(String, u32)> {
    let out = ip(netns, &["-j", "link", "show"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    let mut links: Vec<(String, u32)> = v
        .as_array()
        .expect("a list of links")
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["mtu"].as_u64().unwrap_or_default() as u32,
            )
        })
        .collect();
    links.sort();
    links
}

/// iptables' mangle table in `netns` as `iptables -S` prints it.
pub fn mangle_rules(netns: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["iptables", "-t", "mangle", "-S"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
