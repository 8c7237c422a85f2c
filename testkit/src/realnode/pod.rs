//! Pods on the real node, as kubelet asks for them: a spec (made by hand or
//! translated from an example manifest's pod template), then
//! `RunPodSandbox`, `CreateContainer` and `StartContainer` for each
//! container in order, `ExecSync` into them, and stop and removal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;

use super::RealNode;

/// A container as the tests and the manifests describe it.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub privileged: bool,
    pub add_caps: Vec<String>,
    pub drop_caps: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `seccompProfile: RuntimeDefault` (else unconfined).
    pub seccomp_default: bool,
    /// (host path, container path, read-only, HostToContainer).
    pub mounts: Vec<(PathBuf, String, bool, bool)>,
    /// `startupProbe.httpGet`'s path and port: kubelet starts the next
    /// container once it answers 200 (native sidecars).
    pub startup_probe: Option<(String, u16)>,
    /// `startupProbe.exec.command`: the same, by a command that must exit 0.
    pub startup_exec: Option<Vec<String>>,
}

/// A pod as the tests and the manifests describe it.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    pub name: String,
    pub host_network: bool,
    pub host_pid: bool,
    /// `shareProcessNamespace`.
    pub share_pids: bool,
    pub containers: Vec<Container>,
    /// Set once it runs.
    pub sandbox: String,
    /// Container name -> id, once started.
    pub ids: HashMap<String, String>,
    /// Where the runtime writes its containers' logs, once it runs.
    pub log_dir: PathBuf,
}

/// `yaml` (a manifest) with `edit` applied to its document: how a test
/// makes the change a person might make to an example.
pub fn edit_manifest(yaml: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut doc: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("manifest parses");
    edit(&mut doc);
    serde_yaml_ng::to_string(&doc).expect("manifest serialises")
}

impl Pod {
    /// The pod template of a Kubernetes manifest (a Pod, or a workload's
    /// `spec.template`): the fields the examples use. hostPath volumes
    /// keep their paths; an emptyDir becomes a directory under
    /// `empty_dirs`. Init containers with `restartPolicy: Always` (native
    /// sidecars) start first, as kubelet starts them.
    pub fn from_manifest(yaml: &str, empty_dirs: &Path) -> Pod {
        let doc: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("manifest parses");
        let spec = if doc["kind"] == "Pod" {
            &doc["spec"]
        } else {
            &doc["spec"]["template"]["spec"]
        };
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or("pod")
            .to_string();
        let mut volumes: HashMap<String, PathBuf> = HashMap::new();
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().unwrap_or_default().to_string();
            let path = if let Some(p) = v["hostPath"]["path"].as_str() {
                PathBuf::from(p)
            } else {
                let d = empty_dirs.join(&vname);
                std::fs::create_dir_all(&d).unwrap();
                d
            };
            volumes.insert(vname, path);
        }
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        let container = |c: &serde_json::Value| -> Container {
            let sc = &c["securityContext"];
            Container {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                image: c["image"].as_str().unwrap_or_default().to_string(),
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                env: c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
                    .collect(),
                privileged: sc["privileged"] == true,
                add_caps: strings(&sc["capabilities"]["add"]),
                drop_caps: strings(&sc["capabilities"]["drop"]),
                no_new_privs: sc["allowPrivilegeEscalation"] == false,
                seccomp_default: sc["seccompProfile"]["type"] == "RuntimeDefault"
                    || spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
                mounts: c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let vol = m["name"].as_str().unwrap_or_default();
                        let host = volumes
                            .get(vol)
                            .unwrap_or_else(|| panic!("volume {vol} is declared"))
                            .clone();
                        (
                            host,
                            m["mountPath"].as_str().unwrap_or_default().to_string(),
                            m["readOnly"] == true,
                            m["mountPropagation"] == "HostToContainer",
                        )
                    })
                    .collect(),
                startup_probe: c["startupProbe"]["httpGet"]["path"].as_str().map(|path| {
                    let port = &c["startupProbe"]["httpGet"]["port"];
                    let port = port.as_u64().map(|p| p as u16).unwrap_or_else(|| {
                        // A named port: the container's ports list says which.
                        c["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|p| p["name"] == *port)
                            .and_then(|p| p["containerPort"].as_u64())
                            .expect("the probe's named port") as u16
                    });
                    (path.to_string(), port)
                }),
                startup_exec: c["startupProbe"]["exec"]["command"]
                    .as_array()
                    .map(|_| strings(&c["startupProbe"]["exec"]["command"])),
            }
        };
        let sidecars = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["restartPolicy"] == "Always");
        let containers = sidecars
            .chain(spec["containers"].as_array().into_iter().flatten())
            .map(container)
            .collect();
        Pod {
            name,
            host_network: spec["hostNetwork"] == true,
            host_pid: spec["hostPID"] == true,
            share_pids: spec["shareProcessNamespace"] == true,
            containers,
            ..Pod::default()
        }
    }

    /// The container named `name`.
    pub fn container_mut(&mut self, name: &str) -> &mut Container {
        self.containers
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn sandbox_config(&self, uid: &str) -> cri::PodSandboxConfig {
        let mode = |node: bool| {
            if node {
                cri::NamespaceMode::Node as i32
            } else {
                cri::NamespaceMode::Pod as i32
            }
        };
        // Kubelet: each container its own PID namespace unless the pod
        // shares one (or takes the node's).
        let pid = if self.host_pid {
            cri::NamespaceMode::Node as i32
        } else if self.share_pids {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: uid.to_string(),
                namespace: "default".into(),
                attempt: 0,
            }),
            // Kubelet leaves it empty for host-network pods (runc refuses
            // a hostname without a UTS namespace of its own).
            hostname: if self.host_network {
                String::new()
            } else {
                self.name.clone()
            },
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: mode(self.host_network),
                        pid,
                        ipc: mode(false),
                        ..Default::default()
                    }),
                    privileged: self.containers.iter().any(|c| c.privileged),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn container_config(c: &Container, pod: &Pod) -> cri::ContainerConfig {
    let unconfined = || cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    };
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        log_path: format!("{}.log", c.name),
        envs: c
            .env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: c
            .mounts
            .iter()
            .map(|(host, path, ro, h2c)| cri::Mount {
                container_path: path.clone(),
                host_path: host.display().to_string(),
                readonly: *ro,
                propagation: if *h2c {
                    cri::MountPropagation::PropagationHostToContainer as i32
                } else {
                    cri::MountPropagation::PropagationPrivate as i32
                },
                ..Default::default()
            })
            .collect(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: c.add_caps.clone(),
                    drop_capabilities: c.drop_caps.clone(),
                    ..Default::default()
                }),
                privileged: c.privileged,
                no_new_privs: c.no_new_privs,
                namespace_options: pod
                    .sandbox_config("")
                    .linux
                    .and_then(|l| l.security_context.and_then(|s| s.namespace_options)),
                seccomp: Some(if c.seccomp_default {
                    cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                        ..Default::default()
                    }
                } else {
                    unconfined()
                }),
                apparmor: Some(unconfined()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl RealNode {
    /// Runs `pod`: its sandbox, then each container in order.
    pub fn run_pod(&mut self, mut pod: Pod) -> Pod {
        let uid = format!("{}-{}", self.lab.prefix(), pod.name);
        let mut config = pod.sandbox_config(&uid);
        // Kubelet: /var/log/pods/<namespace>_<name>_<uid>, one file per
        // container.
        pod.log_dir = self.dir.join("logs").join(&uid);
        std::fs::create_dir_all(&pod.log_dir).unwrap();
        config.log_directory = pod.log_dir.display().to_string();
        let sandbox = self
            .call(|mut c| {
                let config = config.clone();
                async move {
                    c.run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                }
            })
            .pod_sandbox_id;
        self.track(&sandbox);
        pod.sandbox = sandbox.clone();
        for container in pod.containers.clone() {
            let id = self.start_container(&pod, &container, &config);
            pod.ids.insert(container.name.clone(), id);
            if let Some((path, port)) = &container.startup_probe {
                let addr = format!("{}:{port}", self.ip_of(&pod));
                let started = crate::eventually(Duration::from_secs(30), || {
                    crate::try_http_get(&self.netns, &addr, path).is_ok_and(|(s, _)| s == 200)
                });
                assert!(
                    started,
                    "{}'s startup probe ({addr}{path}) never answered 200",
                    container.name
                );
            }
            if let Some(cmd) = &container.startup_exec {
                let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                let started = crate::eventually(Duration::from_secs(60), || {
                    self.exec(&pod, &container.name, &cmd, Duration::from_secs(10))
                        .0
                        == 0
                });
                assert!(
                    started,
                    "{}'s startup probe ({cmd:?}) never succeeded",
                    container.name
                );
            }
        }
        pod
    }

    /// The pod's IP address (the CNI plugin's), reachable from the node's
    /// namespace.
    pub fn ip_of(&self, pod: &Pod) -> String {
        let sandbox = pod.sandbox.clone();
        let status = self.call(|mut c| async move {
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox,
                verbose: false,
            })
            .await
        });
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .expect("the pod's IP")
    }

    fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> String {
        let config = container_config(container, pod);
        let (sandbox, sandbox_config) = (pod.sandbox.clone(), sandbox_config.clone());
        let id = self
            .call(|mut c| async move {
                c.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox,
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                })
                .await
            })
            .container_id;
        let start = id.clone();
        self.call(|mut c| async move {
            c.start_container(cri::StartContainerRequest {
                container_id: start,
            })
            .await
        });
        id
    }

    /// Runs `cmd` in `container` of `pod`: (exit code, stdout, stderr).
    pub fn exec(
        &self,
        pod: &Pod,
        container: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> (i32, String, String) {
        let id = pod.ids[container].clone();
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        let r = self.call(|mut c| async move {
            c.exec_sync(cri::ExecSyncRequest {
                container_id: id,
                cmd,
                timeout: timeout.as_secs() as i64,
            })
            .await
        });
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).trim().to_string(),
            String::from_utf8_lossy(&r.stderr).trim().to_string(),
        )
    }

    /// What `container` wrote to stdout and stderr, without the CRI log
    /// format's prefix (time, stream, tag) on each line.
    pub fn container_log(&self, pod: &Pod, container: &str) -> String {
        let text = std::fs::read_to_string(pod.log_dir.join(format!("{container}.log")))
            .unwrap_or_default();
        text.lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The runtime's ContainerStatus of `container` in `pod`, with its
    /// verbose `info` when asked.
    fn container_status(
        &self,
        pod: &Pod,
        container: &str,
        verbose: bool,
    ) -> cri::ContainerStatusResponse {
        let id = pod.ids[container].clone();
        self.call(|mut c| async move {
            c.container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose,
            })
            .await
        })
    }

    /// When `container` started (the runtime's clock, nanoseconds).
    pub fn started_at(&self, pod: &Pod, container: &str) -> i64 {
        let status = self.container_status(pod, container, false);
        status.status.expect("a container status").started_at
    }

    /// The process ID (the machine's) of `container`'s first process.
    pub fn pid_of(&self, pod: &Pod, container: &str) -> i32 {
        let status = self.container_status(pod, container, true);
        let info: serde_json::Value =
            serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
        info["pid"].as_i64().expect("the container's pid") as i32
    }

    /// The path of the pod's network namespace file (`cni-<uuid>`).
    pub fn netns_of(&self, pod: &Pod) -> PathBuf {
        let sandbox = pod.sandbox.clone();
        let status = self.call(|mut c| async move {
            c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox,
                verbose: true,
            })
            .await
        });
        let info: serde_json::Value =
            serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(PathBuf::from)
            .expect("the sandbox's network namespace path")
    }

    /// `StopPodSandbox` and `RemovePodSandbox`, as kubelet does when a pod
    /// is deleted.
    pub fn remove_pod(&mut self, pod: &Pod) {
        remove_sandbox(self, &pod.sandbox);
        self.untrack(&pod.sandbox);
    }
}

pub(super) fn remove_sandbox(node: &RealNode, sandbox: &str) {
    let id = sandbox.to_string();
    let _ = node.try_call(|mut c| async move {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
            .await
    });
    let id = sandbox.to_string();
    let _ = node.try_call(|mut c| async move {
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
    });
}
