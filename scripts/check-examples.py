#!/usr/bin/env python3
"""What a user pastes must work in the real system: checks of the examples
and the release workflow against the rules of the systems they go into,
each rule stated with the source it comes from (the schemas and linters
cannot know them). Run by scripts/lint-examples.sh with the linters'
virtualenv (PyYAML); exits 1 with one line per broken rule.

    python3 scripts/check-examples.py              # check the tree
    python3 scripts/check-examples.py --self-test  # each rule fails on the
                                                   # broken form it exists for

The self-test puts the old, broken lines back into copies of the files, one
mutation at a time, and requires the rule written for it to fail: a check
that cannot fail is not kept.
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Facts, each with its source. gha-runner-scale-set 0.14.2: values.yaml
# ("Container mode": "If any customization is required for dind or
# kubernetes mode, containerMode should remain empty, and configuration
# should be applied to the template") and templates/_helpers.tpl (in dind
# mode it emits its own init-dind-externals and dind, then appends the
# template's, and drops a template container named dind).
ARC_CHART = "gha-runner-scale-set 0.14.2"
ARC_OWN_INIT = ("init-dind-externals", "dind")
ARC_SOCKET = "unix:///var/run/docker.sock"
# GitLab Runner's Kubernetes executor (16.9+, "Define a list of services"):
# it waits for a service only when the service sets HEALTHCHECK_TCP_PORT.
GITLAB_HEALTHCHECK = "HEALTHCHECK_TCP_PORT"
# docker:dind's dockerd-entrypoint.sh: no arguments, or flags only, gives
# `dockerd --host=unix://… --host=tcp://0.0.0.0:2376 --tlsverify …` when
# DOCKER_TLS_CERTDIR is set (the image sets /certs), and plain
# tcp://0.0.0.0:2375 when it is empty; `dockerd …` runs as given.
DIND_IMAGES = re.compile(r"(^|/)docker:([\w.-]*-)?dind$|^docker:dind$|ghcr\.io/mtuvisor/mtuvisor:")
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


class Findings:
    def __init__(self):
        self.errors = []

    def add(self, rule, where, message):
        self.errors.append((rule, f"{where}: {message} [{rule}]"))


def load_yaml_docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --- Containers and pod specs, wherever they are -----------------------------


def pod_specs(doc):
    """Every pod spec in a Kubernetes object or ARC values (template.spec)."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc.get("metadata", {}), doc.get("spec", {})
    elif kind in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        template = doc.get("spec", {}).get("template", {})
        yield template.get("metadata", {}), template.get("spec", {})
    elif "template" in doc and "githubConfigUrl" in doc:
        template = doc.get("template") or {}
        yield template.get("metadata", {}) or {}, template.get("spec", {}) or {}


def containers(spec):
    for c in spec.get("initContainers", []) or []:
        yield "initContainers", c
    for c in spec.get("containers", []) or []:
        yield "containers", c


def env_of(container):
    return {e.get("name"): str(e.get("value", "")) for e in container.get("env", []) or []}


def runs_mtuvisor(container):
    return (container.get("command") or [None])[0] == "mtuvisor"


# --- dockerd on TCP only with --tlsverify ---------------------------------


def tcp_without_tls(args, tls_certdir):
    """The tcp:// addresses a docker:dind (or mtuvisor's image) entrypoint
    makes dockerd listen on without --tlsverify, given its arguments and
    DOCKER_TLS_CERTDIR."""
    args = [str(a) for a in args or []]
    hosts = []
    for i, a in enumerate(args):
        if a.startswith("--host="):
            hosts.append(a.split("=", 1)[1])
        elif a in ("-H", "--host") and i + 1 < len(args):
            hosts.append(args[i + 1])
    verify = "--tlsverify" in args or any(a.startswith("--tlsverify=true") for a in args)
    if not args or args[0].startswith("-"):
        # The entrypoint's defaults come first.
        if tls_certdir:
            hosts.append("tcp://0.0.0.0:2376")
            verify = True
        else:
            hosts.append("tcp://0.0.0.0:2375")
    elif args[0] != "dockerd":
        return []  # another command: no dockerd started by it
    return [h for h in hosts if h.startswith("tcp://") and not verify]


def check_dind_containers(f, where, spec):
    for _, c in containers(spec):
        image = str(c.get("image", ""))
        if not DIND_IMAGES.search(image) or runs_mtuvisor(c) or c.get("command"):
            continue
        certdir = env_of(c).get("DOCKER_TLS_CERTDIR", "/certs")
        for host in tcp_without_tls(c.get("args"), certdir):
            f.add(
                "tls",
                f"{where} container {c.get('name')}",
                f"dockerd listens on {host} without --tlsverify: an unauthenticated "
                "Docker API for every pod of the cluster; serve the unix socket only "
                "(args: [dockerd, --host=unix:///var/run/docker.sock]) or keep TLS",
            )


# --- Kubernetes manifests ---------------------------------------------------


def check_sidecars(f, where, spec):
    for section, c in containers(spec):
        if not runs_mtuvisor(c) or "watch" not in (c.get("args") or []):
            continue
        dirs = env_of(c).get("MTUVISOR_NETNS_DIRS", "")
        if "docker/netns" in dirs:
            f.add(
                "sidecar",
                f"{where} container {c.get('name')}",
                "MTUVISOR_NETNS_DIRS names dockerd's netns directory, whose mounts stay "
                "in the dind container's mount namespace: it does nothing here",
            )
        native = section == "initContainers" and c.get("restartPolicy") == "Always"
        if native and not c.get("startupProbe"):
            f.add(
                "sidecar",
                f"{where} container {c.get('name')}",
                "a native sidecar without a startupProbe: the next container starts as "
                "soon as it has started, before watch enforces; probe /healthz",
            )


def check_one_off_pods(f, where, doc):
    if doc.get("kind") != "Pod":
        return
    spec = doc.get("spec", {})
    for _, c in containers(spec):
        script = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
        if c.get("name") == "job" and spec.get("restartPolicy", "Always") == "Always":
            f.add(
                "job",
                f"{where} container job",
                "a one-off job in a pod with restartPolicy Always is restarted for ever "
                "(CrashLoopBackOff); set restartPolicy: Never",
            )
        if re.search(r"docker build [^|&;]*\s\.(\s|$)", script) and not c.get("workingDir"):
            f.add(
                "job",
                f"{where} container {c.get('name')}",
                "`docker build .` where the image has no Dockerfile; give the build its "
                "Dockerfile (on stdin: `docker build -t app -`) or a context",
            )


def commented(text, key):
    """Whether the line that sets `key` has a comment right above it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(key):
            j = i - 1
            while j >= 0 and lines[j].strip() == "":
                j -= 1
            return j >= 0 and lines[j].strip().startswith("#")
    return False


# Nodes a node agent must not be scheduled on, as they present themselves
# (labels, taints): they refuse hostPID, hostNetwork and added capabilities,
# so the pod never starts and a rolling update waits on it. virtual-kubelet
# nodes as it registers them (label type=virtual-kubelet, role agent, taint
# virtual-kubelet.io/provider=<provider>:NoSchedule, the os label of the
# pods they take) and EKS Fargate nodes (label
# eks.amazonaws.com/compute-type=fargate).
NODES_WITHOUT_AGENT = {
    "virtual-kubelet": ({"kubernetes.io/os": "linux", "type": "virtual-kubelet",
                         "kubernetes.io/role": "agent"},
                        [{"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}]),
    "EKS Fargate": ({"kubernetes.io/os": "linux", "eks.amazonaws.com/compute-type": "fargate"},
                    [{"key": "eks.amazonaws.com/compute-type", "value": "fargate", "effect": "NoSchedule"}]),
}
# A node it must reach: a tainted Linux node (a control plane).
NODE_WITH_AGENT = ({"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""},
                   [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])


def matches(expr, labels):
    """One nodeSelectorRequirement against a node's labels (Kubernetes'
    semantics: NotIn and DoesNotExist hold where the label is absent)."""
    key, op, values = expr.get("key"), expr.get("operator"), [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def tolerates(tolerations, taint):
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and str(t.get("value", "")) == str(taint.get("value", "")):
            return True
    return False


def schedulable(spec, labels, taints):
    """Whether the scheduler (and the DaemonSet controller) would place a
    pod with `spec` on a node with `labels` and `taints`: nodeSelector,
    required node affinity (terms ORed, expressions ANDed) and NoSchedule
    or NoExecute taints against the tolerations."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != str(value):
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(
            all(matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms):
        return False
    return all(tolerates(spec.get("tolerations"), t) for t in taints
               if t.get("effect") in ("NoSchedule", "NoExecute"))


def check_node_agent(f, where, text, doc):
    if doc.get("kind") != "DaemonSet":
        return
    for meta, spec in pod_specs(doc):
        if spec.get("nodeSelector", {}).get("kubernetes.io/os") != "linux":
            f.add("daemonset", where, "no nodeSelector kubernetes.io/os: linux: it would land on "
                  "Windows nodes, where it cannot run")
        for kind, (labels, taints) in NODES_WITHOUT_AGENT.items():
            if schedulable(spec, labels, taints):
                f.add("daemonset", where, f"schedulable on {kind} nodes ({labels}, taints "
                      f"{[t['key'] for t in taints]}), which refuse hostPID, hostNetwork and added "
                      "capabilities: the pod never starts and a rollout waits on it; exclude them "
                      "by node affinity")
        if not schedulable(spec, *NODE_WITH_AGENT):
            f.add("daemonset", where, "not schedulable on a tainted Linux node (a control plane): "
                  "a CI pod can land anywhere")
        if spec.get("automountServiceAccountToken") is not False:
            f.add("daemonset", where, "a service-account token is mounted though the agent "
                  "never talks to the API server; set automountServiceAccountToken: false")
        annotations = (meta or {}).get("annotations", {}) or {}
        for _, c in containers(spec):
            sc = c.get("securityContext", {}) or {}
            if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                f.add("daemonset", f"{where} container {c.get('name')}", "no seccomp profile "
                      "(seccompProfile: {type: RuntimeDefault})")
            annotation = f"container.apparmor.security.beta.kubernetes.io/{c.get('name')}"
            if annotation in annotations:
                f.add("daemonset", f"{where} container {c.get('name')}", f"the annotation "
                      f"{annotation} is deprecated since Kubernetes 1.30 (the kubelet warns): "
                      "securityContext.appArmorProfile says the same")
            if spec.get("hostPID") and not sc.get("appArmorProfile"):
                f.add("daemonset", f"{where} container {c.get('name')}", "reads other "
                      "containers' /proc (hostPID) with no AppArmor profile: the runtime's "
                      "default denies it for privileged pods on Ubuntu and COS nodes "
                      "(securityContext.appArmorProfile: {type: Unconfined})")
        for key in ("nodeSelector:", "affinity:", "automountServiceAccountToken:", "seccompProfile:",
                    "appArmorProfile:", "tolerations:"):
            if not commented(text, key):
                f.add("daemonset", where, f"{key} without a comment saying why")


# --- actions-runner-controller ----------------------------------------------


def check_arc(f, where, values):
    spec = ((values.get("template") or {}).get("spec")) or {}
    mode = ((values.get("containerMode") or {}).get("type")) or ""
    inits = [c.get("name") for c in spec.get("initContainers", []) or []]
    conts = [c.get("name") for c in spec.get("containers", []) or []]
    customised = bool(inits) or "dind" in conts
    if mode and customised:
        f.add("arc", where, f"containerMode.type {mode!r} beside a custom template: "
              f"{ARC_CHART} then adds its own {', '.join(ARC_OWN_INIT)} before these and "
              "drops a template container named dind; leave containerMode empty")
    names = inits + conts + (list(ARC_OWN_INIT) if mode == "dind" else [])
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        f.add("arc", where, f"container names twice in the pod: {', '.join(dupes)}")
    if mode == "dind" and "dind" in conts:
        f.add("arc", where, f"a container named dind in dind mode: {ARC_CHART} drops it")
    if mode:
        return
    by_name = {c.get("name"): c for _, c in containers(spec)}
    dind = next((c for s, c in containers(spec) if c.get("name") == "dind"), None)
    if dind is None:
        f.add("arc", where, "no dind container: the runner's DOCKER_HOST has nothing behind it")
        return
    if "dind" not in inits or dind.get("restartPolicy") != "Always" or not dind.get("startupProbe"):
        f.add("arc", where, f"dind is not where {ARC_CHART} puts it on Kubernetes >= 1.29: an "
              "init container with restartPolicy: Always and a startupProbe (docker info)")
    if f"--host={ARC_SOCKET}" not in [str(a) for a in dind.get("args", []) or []]:
        f.add("arc", where, f"dind does not serve {ARC_SOCKET}")
    runner = by_name.get("runner", {})
    renv = env_of(runner)
    if renv.get("DOCKER_HOST") != ARC_SOCKET:
        f.add("arc", where, f"the runner's DOCKER_HOST is not {ARC_SOCKET}")
    if "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS" not in renv:
        f.add("arc", where, "the runner does not wait for Docker (RUNNER_WAIT_FOR_DOCKER_IN_SECONDS)")
    volumes = {v.get("name") for v in spec.get("volumes", []) or []}
    for _, c in containers(spec):
        for m in c.get("volumeMounts", []) or []:
            if m.get("name") not in volumes:
                f.add("arc", where, f"{c.get('name')} mounts {m.get('name')}, which is no volume")
    check_dind_containers(f, where, spec)
    check_sidecars(f, where, spec)


# --- GitLab -----------------------------------------------------------------


def docker_host_port(variables):
    m = re.match(r"^tcp://([\w.-]+):(\d+)$", str((variables or {}).get("DOCKER_HOST", "")))
    return (m.group(1), m.group(2)) if m else (None, None)


def check_gitlab_ci(f, where, ci):
    top = ci.get("variables", {}) or {}
    for job, body in ci.items():
        if not isinstance(body, dict) or "script" not in body:
            continue
        variables = {**top, **(body.get("variables", {}) or {})}
        host, port = docker_host_port(variables)
        certdir = str(variables.get("DOCKER_TLS_CERTDIR", "/certs"))
        for svc in body.get("services", []) or []:
            svc = {"name": svc} if isinstance(svc, str) else svc
            image = str(svc.get("name", ""))
            if not DIND_IMAGES.search(image) or svc.get("entrypoint"):
                continue
            svars = svc.get("variables", {}) or {}
            alias = svc.get("alias") or image.split("/")[-1].split(":")[0]
            if alias == host and str(svars.get(GITLAB_HEALTHCHECK)) != port:
                f.add("gitlab", f"{where} job {job} service {image}",
                      f"{GITLAB_HEALTHCHECK} is {svars.get(GITLAB_HEALTHCHECK)!r}, not {port!r} "
                      f"(DOCKER_HOST's port): the Kubernetes executor does not wait for it")
            for h in tcp_without_tls(svc.get("command"), str(svars.get("DOCKER_TLS_CERTDIR", certdir))):
                f.add("tls", f"{where} job {job} service {image}",
                      f"dockerd listens on {h} without --tlsverify")


def check_gitlab_config(f, where, config):
    for runner in config.get("runners", []) or []:
        env = dict(e.split("=", 1) for e in runner.get("environment", []) or [])
        host, port = docker_host_port(env)
        for svc in (runner.get("kubernetes", {}) or {}).get("services", []) or []:
            image = str(svc.get("name", ""))
            if not DIND_IMAGES.search(image):
                continue
            senv = dict(e.split("=", 1) for e in svc.get("environment", []) or [])
            if svc.get("alias") == host and senv.get(GITLAB_HEALTHCHECK) != port:
                f.add("gitlab", f"{where} runner {runner.get('name')} service {image}",
                      f"{GITLAB_HEALTHCHECK} is {senv.get(GITLAB_HEALTHCHECK)!r}, not {port!r} "
                      "(DOCKER_HOST's port): the runner does not wait for it")
            for h in tcp_without_tls(svc.get("command"), senv.get("DOCKER_TLS_CERTDIR", "/certs")):
                f.add("tls", f"{where} runner {runner.get('name')}", f"dockerd on {h} without --tlsverify")


# --- Compose ----------------------------------------------------------------


def check_compose(f, where, compose):
    for name, svc in (compose.get("services", {}) or {}).items():
        image = str(svc.get("image", ""))
        if not re.search(r"dind|IMAGE", image):
            continue
        env = svc.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        entry = " ".join(str(e) for e in svc.get("entrypoint", []) or [])
        if "dockerd-entrypoint.sh" not in entry:
            continue
        for h in tcp_without_tls(svc.get("command"), str(env.get("DOCKER_TLS_CERTDIR", "/certs"))):
            f.add("tls", f"{where} service {name}", f"dockerd listens on {h} without --tlsverify")


# --- The release workflow ---------------------------------------------------


def check_release(f, where, wf):
    top = wf.get("permissions")
    if top not in ({}, None, "read-all") and top != {"contents": "read"}:
        f.add("release", where, f"workflow-wide permissions {top!r}: every job gets them; "
              "give each job its own")
    jobs = wf.get("jobs", {}) or {}
    signed = smoked = False
    for name, job in jobs.items():
        perms = job.get("permissions")
        if perms is None:
            f.add("release", f"{where} job {name}", "no permissions of its own")
            perms = top if isinstance(top, dict) else {}
        steps = job.get("steps", []) or []
        text = "\n".join(str(s.get("run", "")) for s in steps)
        builds = "cargo " in text or "release-binary.sh" in text
        writes = [k for k, v in (perms or {}).items() if v == "write"]
        if builds and writes:
            f.add("release", f"{where} job {name}", f"runs cargo (every dependency's build "
                  f"script) with {', '.join(writes)}: write")
        if "checksums.sh" in text or "sha256sum mtuvisor" in text:
            if builds:
                f.add("release", f"{where} job {name}", "checksums made in the job that builds")
        for s in steps:
            uses = s.get("uses")
            if uses and not uses.startswith("./") and not SHA_PIN.match(uses):
                f.add("release", f"{where} job {name}", f"{uses} is not pinned by commit")
            if uses and uses.startswith("actions/checkout@"):
                if (s.get("with") or {}).get("persist-credentials") is not False:
                    f.add("release", f"{where} job {name}", "checkout keeps its credentials "
                          "(persist-credentials: false)")
        if "buildx build" in text and not ("--sbom" in text and "--provenance" in text):
            f.add("release", f"{where} job {name}", "the image is pushed without SBOM and provenance")
        signed |= "cosign sign" in text
        smoked |= "--version" in text and "docker run" in text
    if not signed:
        f.add("release", where, "the image is not signed (cosign sign)")
    if not smoked:
        f.add("release", where, "no smoke test of the pushed image (`mtuvisor --version` in it)")


# --- Driver -----------------------------------------------------------------


def check(files):
    """Checks `files` ({relative path: text}); the findings."""
    f = Findings()
    for path, text in sorted(files.items()):
        if path.startswith("examples/kubernetes/") and path.endswith(".yaml"):
            for doc in load_yaml_docs(text):
                for _, spec in pod_specs(doc):
                    check_dind_containers(f, path, spec)
                    check_sidecars(f, path, spec)
                check_one_off_pods(f, path, doc)
                check_node_agent(f, path, text, doc)
        elif path.startswith("examples/actions-runner-controller/") and path.endswith(".yaml"):
            check_arc(f, path, yaml.safe_load(text))
        elif path.endswith(".gitlab-ci.yml"):
            check_gitlab_ci(f, path, yaml.safe_load(text))
        elif path.startswith("examples/gitlab/") and path.endswith(".toml"):
            check_gitlab_config(f, path, tomllib.loads(text))
        elif path.endswith("docker-compose.yml"):
            check_compose(f, path, yaml.safe_load(text))
        elif path == ".github/workflows/release.yml":
            check_release(f, path, yaml.safe_load(text))
    return f


def tree():
    out = {}
    for pattern in ("examples/**/*.yaml", "examples/**/*.yml", "examples/**/.gitlab-ci.yml",
                    "examples/**/*.toml", ".github/workflows/release.yml"):
        for p in ROOT.glob(pattern):
            out[str(p.relative_to(ROOT))] = p.read_text()
    return out


# Each broken form this exists for: (file, what is there now, what was
# there, the rule that must catch it).
MUTATIONS = [
    ("examples/actions-runner-controller/values.yaml", "githubConfigSecret: github-app-secret\n",
     "githubConfigSecret: github-app-secret\ncontainerMode:\n  type: \"dind\"\n", "arc"),
    ("examples/actions-runner-controller/values-sidecar.yaml", "      - name: mtuvisor\n",
     "      - name: dind\n", "arc"),
    ("examples/actions-runner-controller/values.yaml",
     "        restartPolicy: Always\n", "", "arc"),
    ("examples/actions-runner-controller/values.yaml",
     "          - name: RUNNER_WAIT_FOR_DOCKER_IN_SECONDS\n            value: \"120\"\n", "", "arc"),
    ("examples/gitlab/.gitlab-ci.yml", "      variables:\n        HEALTHCHECK_TCP_PORT: \"2376\"\n  script:",
     "  script:", "gitlab"),
    ("examples/gitlab/.gitlab-ci.yml", "HEALTHCHECK_TCP_PORT: \"2376\"", "HEALTHCHECK_TCP_PORT: \"2375\"",
     "gitlab"),
    ("examples/gitlab/config.toml", ", \"HEALTHCHECK_TCP_PORT=2376\"]", "]", "gitlab"),
    ("examples/kubernetes/dind-sidecar.yaml",
     "      args: [\"dockerd\", \"--host=unix:///var/run/docker.sock\"]\n", "", "tls"),
    ("examples/kubernetes/dind-native-sidecar.yaml",
     "      args: [\"dockerd\", \"--host=unix:///var/run/docker.sock\"]\n", "", "tls"),
    ("examples/compose/docker-compose.yml",
     "    command: [\"dockerd\", \"--host=unix:///var/run/docker.sock\"]\n", "", "tls"),
    ("examples/kubernetes/dind-sidecar.yaml", "        - name: MTUVISOR_LOG_FORMAT\n",
     "        - name: MTUVISOR_NETNS_DIRS\n          value: \"/var/run/docker/netns\"\n"
     "        - name: MTUVISOR_LOG_FORMAT\n", "sidecar"),
    ("examples/kubernetes/dind-native-sidecar.yaml", "      startupProbe:\n", "      xStartupProbe:\n",
     "sidecar"),
    ("examples/kubernetes/dind-supervised.yaml", "  restartPolicy: Never\n", "", "job"),
    ("examples/kubernetes/dind-supervised.yaml", "| docker build -t app - &&", "&& docker build -t app . &&",
     "job"),
    ("examples/kubernetes/node-daemonset.yaml", "      nodeSelector:\n        kubernetes.io/os: linux\n", "",
     "daemonset"),
    ("examples/kubernetes/node-daemonset.yaml", "      automountServiceAccountToken: false\n", "",
     "daemonset"),
    ("examples/kubernetes/node-daemonset.yaml", "            seccompProfile:\n              type: RuntimeDefault\n",
     "", "daemonset"),
    ("examples/kubernetes/node-daemonset.yaml",
     "            appArmorProfile:\n              type: Unconfined\n", "", "daemonset"),
    # The deprecated annotation in place of the field.
    ("examples/kubernetes/node-daemonset.yaml", "      annotations:\n",
     "      annotations:\n        container.apparmor.security.beta.kubernetes.io/mtuvisor: unconfined\n",
     "daemonset"),
    # Only the OS selector and the toleration of every taint: virtual-kubelet
    # and Fargate nodes admitted.
    ("examples/kubernetes/node-daemonset.yaml", "                  - key: type\n",
     "                  - key: type-of-node\n", "daemonset"),
    ("examples/kubernetes/node-daemonset.yaml", "                  - key: eks.amazonaws.com/compute-type\n",
     "                  - key: compute-type\n", "daemonset"),
    (".github/workflows/release.yml", "permissions: {}\n",
     "permissions:\n  contents: write\n  packages: write\n", "release"),
    (".github/workflows/release.yml", "          persist-credentials: false\n", "", "release"),
    (".github/workflows/release.yml", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
     "actions/checkout@v7", "release"),
    (".github/workflows/release.yml", "--sbom=true --provenance=mode=max ", "", "release"),
    (".github/workflows/release.yml", "run: cosign sign --yes", "run: echo", "release"),
]


def self_test():
    files = tree()
    clean = check(files)
    assert not clean.errors, "the tree itself must pass first"
    failed = []
    for path, now, then, rule in MUTATIONS:
        text = files.get(path, "")
        if now not in text:
            failed.append(f"{path}: the line the mutation replaces is gone: {now!r}")
            continue
        mutated = dict(files)
        mutated[path] = text.replace(now, then, 1)
        rules = {r for r, _ in check(mutated).errors}
        if rule not in rules:
            failed.append(f"{path}: putting back {then!r} is not caught by rule {rule!r}")
    for line in failed:
        print(f"check-examples self-test: {line}", file=sys.stderr)
    print(f"check-examples self-test: {len(MUTATIONS) - len(failed)} of {len(MUTATIONS)} "
          "broken forms caught")
    return 1 if failed else 0


def main():
    if "--self-test" in sys.argv[1:]:
        return self_test()
    findings = check(tree())
    for _, line in findings.errors:
        print(f"check-examples: {line}", file=sys.stderr)
    if findings.errors:
        return 1
    print("check-examples: every example follows the rules of the system it goes into")
    return 0


if __name__ == "__main__":
    sys.exit(main())
