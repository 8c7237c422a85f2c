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
            for cap in ((sc.get("capabilities") or {}).get("add") or []):
                if not commented(text, f"- {cap}"):
                    f.add("daemonset", f"{where} container {c.get('name')}",
                          f"capability {cap} added without a comment saying what it is for")
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


def check_release(f, where, wf, files):
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
    smoke = jobs.get("smoke") or {}
    ssteps = smoke.get("steps", []) or []
    if any(str(st.get("uses", "")).startswith("docker/login-action@") for st in ssteps) \
            or "secrets." in str(ssteps) or (smoke.get("permissions") or {}):
        f.add("release", f"{where} job smoke", "logs in (or holds a token) before it pulls: a "
              "private package would pass here and fail for every kubelet, Compose file and "
              "GitLab service, which pull anonymously; pull with no credentials")
    first_pull = next((i for i, st in enumerate(ssteps) if "docker pull" in str(st.get("run", ""))), None)
    first_run = next((i for i, st in enumerate(ssteps) if "docker run" in str(st.get("run", ""))), None)
    if first_pull is None or (first_run is not None and first_run < first_pull):
        f.add("release", f"{where} job smoke", "no anonymous `docker pull` before the image is run")
    installer = next((st for job in jobs.values() for st in job.get("steps", []) or []
                      if str(st.get("uses", "")).startswith("sigstore/cosign-installer@")), None)
    version = str(((installer or {}).get("with") or {}).get("cosign-release", ""))
    if installer and not re.match(r"^v\d+\.\d+\.\d+$", version):
        f.add("release", where, "cosign-installer without cosign-release: the installer's default "
              "cosign signs, whose format the README's verify may not match")
    texts = " ".join(str(st.get("run", "")) for job in jobs.values() for st in job.get("steps", []) or [])
    if "cosign sign" in texts and "--new-bundle-format=false" not in texts:
        f.add("release", where, "signed only in cosign v3's Sigstore bundle, which cosign v2's "
              "verify does not find (\"no signatures found\"); also sign with "
              "--new-bundle-format=false")
    docs = "\n".join(t for p, t in files.items() if p == "README.md" or p.startswith("docs/"))
    if version and f"cosign {version}" not in docs:
        f.add("release", where, f"no README or docs/ page names cosign {version}, the version "
              "that signs (and verifies)")
    if not signed:
        f.add("release", where, "the image is not signed (cosign sign)")
    if not smoked:
        f.add("release", where, "no smoke test of the pushed image (`mtuvisor --version` in it)")


# --- The examples' own instructions -----------------------------------------

ARC_CONTROLLER = "gha-runner-scale-set-controller"
MTUVISOR_IMAGE = "ghcr.io/mtuvisor/mtuvisor:"


def shell_blocks(markdown):
    """The commands of a Markdown file's ```sh blocks, continuations joined,
    comments dropped."""
    out, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```sh", "```bash", "```console")
            continue
        if inside:
            out.append(line)
    text = re.sub(r"\\\n\s*", " ", "\n".join(out))
    return [ln.split(" #", 1)[0].strip() for ln in text.splitlines() if ln.strip()
            and not ln.strip().startswith("#")]


def check_kubernetes_readme(f, files):
    where = "examples/kubernetes/README.md"
    readme = files.get(where)
    if readme is None:
        return
    manifests = {p.rsplit("/", 1)[1]: [d for d in load_yaml_docs(t) if isinstance(d, dict)]
                 for p, t in files.items()
                 if p.startswith("examples/kubernetes/") and p.endswith(".yaml")}
    names = {}
    for file, docs in manifests.items():
        for d in docs:
            if d.get("kind") == "Pod":
                names.setdefault(d["metadata"]["name"], []).append(file)
    for name, where_from in names.items():
        if len(where_from) > 1:
            f.add("readme", "examples/kubernetes", f"pod name {name} in {', '.join(where_from)}: "
                  "applying one replaces the other (or fails); give each its own")
    checked, current = {}, None
    for cmd in shell_blocks(readme):
        words = cmd.split()
        if words[:3] == ["kubectl", "apply", "-f"]:
            current = words[3]
            checked.setdefault(current, 0)
            continue
        if "exec" not in words or current is None or current not in manifests:
            continue
        docs = manifests[current]
        at = words.index("exec")
        ns = words[words.index("-n") + 1] if "-n" in words else "default"
        target = words[at + 1]
        container = words[words.index("-c") + 1] if "-c" in words else None
        run = words[words.index("--") + 1:] if "--" in words else []
        if target.startswith(("daemonset/", "ds/")):
            ds = next((d for d in docs if d.get("kind") == "DaemonSet"), None)
            if not ds or ds["metadata"]["name"] != target.split("/", 1)[1] \
                    or ds["metadata"].get("namespace", "default") != ns:
                f.add("readme", where, f"`{cmd}`: {current} has no DaemonSet {target} in {ns}")
            checked[current] += 1
            continue
        pod = next((d for d in docs if d.get("kind") == "Pod"), None)
        if not pod or pod["metadata"]["name"] != target:
            f.add("readme", where, f"`{cmd}`: {current}'s pod is not {target} "
                  f"({pod['metadata']['name'] if pod else 'none'})")
            continue
        conts = {c.get("name"): c for _, c in containers(pod.get("spec", {}))}
        if container not in conts:
            f.add("readme", where, f"`{cmd}`: {target} has no container {container}")
        elif run[:1] == ["mtuvisor"] and not str(conts[container].get("image", "")).startswith(MTUVISOR_IMAGE):
            f.add("readme", where, f"`{cmd}`: container {container} runs "
                  f"{conts[container].get('image')}, which has no mtuvisor binary; exec into the "
                  "container that runs mtuvisor's image")
        checked[current] += 1
    for file in manifests:
        if not checked.get(file):
            f.add("readme", where, f"{file}: no `kubectl apply -f {file}` followed by how to check it")


def check_arc_readme(f, files):
    where = "examples/actions-runner-controller/README.md"
    readme = files.get(where)
    if readme is None:
        return
    namespaces, controller = set(), False
    for cmd in shell_blocks(readme):
        words = cmd.split()
        if words[:3] == ["kubectl", "create", "namespace"]:
            namespaces.add(words[3])
            continue
        if words[:1] == ["kubectl"] and "-n" in words and words[words.index("-n") + 1] not in namespaces:
            f.add("arc", where, f"`{' '.join(words[:5])} …` in namespace "
                  f"{words[words.index('-n') + 1]} before anything creates it")
        if words[:2] != ["helm", "install"]:
            continue
        chart = next((w for w in words if w.startswith("oci://")), "")
        ns = next((words[i + 1] for i, w in enumerate(words) if w in ("-n", "--namespace")), None)
        if ns and "--create-namespace" not in words and ns not in namespaces:
            f.add("arc", where, f"`helm install … {chart.rsplit('/', 1)[-1]}` into namespace {ns}, "
                  "which nothing creates: helm refuses (--create-namespace)")
        if ns and "--create-namespace" in words:
            namespaces.add(ns)
        if chart.endswith("/" + ARC_CONTROLLER):
            controller = True
        elif chart.endswith("/gha-runner-scale-set") and not controller:
            f.add("arc", where, f"the runner scale set is installed without the controller "
                  f"({ARC_CONTROLLER}) before it: no runner pod would ever be made")


# --- Every workflow, and what GitHub's runner image has --------------------

# What a package, installed with apt-get, puts on PATH (the names the checks
# look for).
PKG_PROVIDES = {
    "protobuf-compiler": ["protoc"], "musl-tools": ["musl-gcc"], "docker-compose": ["docker-compose"],
    "debootstrap": ["debootstrap"], "busybox-static": ["busybox"], "nftables": ["nft"],
    "shellcheck": ["shellcheck"], "iproute2": ["ip"], "util-linux": ["nsenter"],
    "docker.io": ["dockerd", "docker", "containerd", "ctr", "runc"], "containerd": ["containerd", "ctr"],
    "runc": ["runc"], "iptables": ["iptables"], "openssl": ["openssl"], "npm": ["npm"],
    "python3-venv": [], "containernetworking-plugins": [], "systemd": ["systemd-analyze"],
}
# What an action puts on PATH.
ACTION_PROVIDES = {"sigstore/cosign-installer": ["cosign"]}
# A cargo invocation that builds the test kit (--workspace, --all-targets,
# tests and benches), whose CRI client's build script runs protoc.
BUILDS_TESTKIT = re.compile(r"\bcargo\s+(?:\+\S+\s+)?(?:test|bench\b|(?:clippy|build|check)\b[^\n;&|]*"
                            r"(?:--workspace|--all-targets|-p mtuvisor-testkit))")
SEPARATORS = re.compile(r"&&|\|\||[;|`]|\$\(|\bthen\b|\bdo\b|\belse\b")


def load_toolset(files):
    return yaml.safe_load(files.get(".github/runner-toolset.yaml", "")) or {}


def commands_of(text):
    """The command lines of a shell text, each as its words, with what
    runs it (sudo's words) kept apart: [(sudo_words or None, words)]."""
    out = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.split(" #", 1)[0]
        if line.strip().startswith("#"):
            continue
        for part in SEPARATORS.split(line):
            words = part.replace("(", " ").replace(")", " ").split()
            while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])
                             or words[0] in ("!", "if", "while", "until", "exec", "time", "{")):
                words = words[1:]
            sudo = None
            if words and words[0] == "sudo":
                rest = words[1:]
                while rest and rest[0].startswith("-"):
                    rest = rest[1:]
                sudo, words = words, rest
                if words and words[0] == "env":
                    words = words[1:]
                    while words and ("=" in words[0] or words[0].startswith("-")):
                        words = words[1:]
            if words:
                out.append((sudo, [w.strip("\"'") for w in words]))
    return out


def script_path(words):
    if words[0] in ("bash", "sh") and len(words) > 1 and words[1].endswith(".sh"):
        return words[1]
    return None


def analyse(text, files, toolset, seen=None):
    """What a shell text (a step, a script) needs, installs, and would
    install in conflict with the image, following `bash scripts/X.sh`:
    (needs: {tool: where}, provides: set, conflicts: [(package, where)])."""
    seen = seen if seen is not None else set()
    needs, provides, conflicts = {}, set(), []
    tracked = set(toolset.get("commands", [])) | set(toolset.get("absent", [])) | {
        t for tools in PKG_PROVIDES.values() for t in tools} | {"cosign"}
    have = set(toolset.get("commands", [])) | set(toolset.get("paths", []))
    optional = set(re.findall(r"command -v ([\w.-]+)", text))
    for m in re.finditer(r"^need (\S+) (\S+)$", text, re.M):
        tool, package = m.groups()
        provides.add(tool.rsplit("/", 1)[-1] if tool.startswith("/") else tool)
        if tool not in have and package in toolset.get("conflicts_with_image", []):
            conflicts.append((package, f"`need {tool} {package}` finds no {tool} on the image"))
    if BUILDS_TESTKIT.search(text):
        needs.setdefault("protoc", "cargo building the test kit (its CRI client runs protoc)")
    for _, words in commands_of(text):
        if words[0] == "apt-get" and "install" in words:
            for pkg in words[words.index("install") + 1:]:
                pkg = pkg.split("=")[0]
                if pkg.startswith("-") or pkg.startswith("$") or pkg.startswith('"$'):
                    continue
                provides.update(PKG_PROVIDES.get(pkg, []))
                if pkg in toolset.get("conflicts_with_image", []):
                    conflicts.append((pkg, "apt-get install"))
            continue
        path = script_path(words)
        if path and path in files and path not in seen:
            seen.add(path)
            n, p, c = analyse(files[path], files, toolset, seen)
            provides |= p
            conflicts += [(pkg, f"{path}: {why}") for pkg, why in c]
            for tool, why in n.items():
                needs.setdefault(tool, f"{path}: {why}")
            continue
        tool = words[0]
        if tool in tracked and tool not in optional:
            needs.setdefault(tool, " ".join(words[:4]))
    return needs, provides, conflicts


def needs_user_path(text, files, toolset):
    """Whether running `text` needs a tool that only the runner user's PATH
    (and HOME) holds: cargo and rustup in ~/.cargo/bin."""
    needs, _, _ = analyse(text, files, toolset)
    return sorted(set(needs) & set(toolset.get("user_path_only", [])))


def check_workflow(f, where, wf, files):
    toolset = load_toolset(files)
    top = wf.get("permissions")
    if top not in ({}, {"contents": "read"}):
        f.add("permissions", where, f"workflow-wide permissions {top!r}: every job gets them; "
              "set permissions: {} and give each job its own")
    release = where.endswith("/release.yml")
    for name, job in (wf.get("jobs") or {}).items():
        at = f"{where} job {name}"
        perms = job.get("permissions")
        if perms is None:
            f.add("permissions", at, "no permissions of its own")
        elif not release and any(v == "write" for v in (perms or {}).values()):
            f.add("permissions", at, f"writes ({perms}): CI reads the repository and nothing else")
        steps = job.get("steps", []) or []
        for st in steps:
            uses = st.get("uses")
            if uses and not uses.startswith("./") and not SHA_PIN.match(uses):
                f.add("pin", at, f"{uses} is not pinned by commit")
            if uses and uses.startswith("actions/checkout@"):
                if (st.get("with") or {}).get("persist-credentials") is not False:
                    f.add("credentials", at, "checkout keeps its credentials (persist-credentials: false)")
        runner = str(job.get("runs-on", ""))
        if job.get("container") or not (runner.startswith("ubuntu-24.04") or "matrix" in runner):
            continue
        have = set(toolset.get("commands", [])) | set(toolset.get("paths", []))
        pinned_rust = False
        for st in steps:
            uses = st.get("uses") or ""
            have |= set(ACTION_PROVIDES.get(uses.split("@")[0], []))
            text = str(st.get("run", "") or "")
            if not text:
                continue
            needs, provides, conflicts = analyse(text, files, toolset)
            have |= provides
            pinned_rust |= "rustup toolchain install" in text
            if "cargo" in needs and not pinned_rust and "rust-toolchain.toml" in files:
                f.add("toolset", at, f"`{text.strip().splitlines()[0][:60]}` runs cargo before "
                      "`rustup toolchain install`: with the image's Rust, not rust-toolchain.toml's")
            for pkg, why in conflicts:
                f.add("toolset", at, f"installs {pkg} ({why}) beside the image's Docker "
                      f"(docker-ce, containerd.io): apt would remove them; use the image's")
            for tool, why in sorted(needs.items()):
                if tool not in have:
                    f.add("toolset", at, f"`{text.strip().splitlines()[0][:60]}` needs {tool} "
                          f"({why}), which {toolset.get('image')} does not have and no earlier "
                          "step installs")
            for sudo, words in commands_of(text):
                if sudo is None:
                    continue
                sub = " ".join(words)
                lost = needs_user_path(sub, files, toolset)
                kept = "PATH=$PATH" in " ".join(sudo) and (
                    "-E" in sudo or any(w.strip("\"'").startswith("RUSTUP_HOME=") for w in sudo))
                if lost and not kept:
                    f.add("sudo", at, f"`{' '.join(sudo[:1] + words[:3])}` runs {', '.join(lost)} "
                          "as root: sudo's secure_path drops ~/.cargo/bin and its HOME hides "
                          "rustup's toolchains; pass \"PATH=$PATH\" and RUSTUP_HOME")


# --- Driver -----------------------------------------------------------------


def check(files):
    """Checks `files` ({relative path: text}); the findings."""
    f = Findings()
    check_kubernetes_readme(f, files)
    check_arc_readme(f, files)
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
        elif path.startswith(".github/workflows/") and path.endswith(".yml"):
            wf = yaml.safe_load(text)
            check_workflow(f, path, wf, files)
            if path == ".github/workflows/release.yml":
                check_release(f, path, wf, files)
    return f


def tree():
    out = {}
    for pattern in ("examples/**/*.yaml", "examples/**/*.yml", "examples/**/.gitlab-ci.yml",
                    "examples/**/*.toml", "examples/**/*.md", ".github/workflows/*.yml",
                    ".github/runner-toolset.yaml", "scripts/*.sh", "README.md", "docs/*.md",
                    "rust-toolchain.toml"):
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
    ("examples/kubernetes/node-daemonset.yaml", "                # setns() into each pod's network namespace.\n",
     "", "daemonset"),
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
    # The examples' own instructions.
    ("examples/kubernetes/README.md", "kubectl exec ci-build-sidecar -c mtuvisor -- mtuvisor doctor",
     "kubectl exec ci-build -c dind -- mtuvisor doctor", "readme"),
    ("examples/kubernetes/README.md", "kubectl exec ci-build-native -c mtuvisor --",
     "kubectl exec ci-build-native -c dind --", "readme"),
    ("examples/kubernetes/dind-sidecar.yaml", "  name: ci-build-sidecar\n", "  name: ci-build-supervised\n",
     "readme"),
    ("examples/kubernetes/README.md", "kubectl -n kube-system exec daemonset/mtuvisor-node",
     "kubectl exec daemonset/mtuvisor-node", "readme"),
    ("examples/actions-runner-controller/README.md",
     "--namespace arc-systems --create-namespace", "-n arc-systems", "arc"),
    ("examples/actions-runner-controller/README.md", "kubectl create namespace arc-runners\n", "", "arc"),
    ("examples/actions-runner-controller/README.md",
     "actions-runner-controller-charts/gha-runner-scale-set-controller", "actions-runner-controller-charts/x",
     "arc"),
    ("README.md", "it with cosign v3.1.3 or any cosign v2:", "it:", "release"),
    # Every workflow: pins, credentials, least permissions.
    (".github/workflows/ci.yml", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
     "actions/checkout@v5", "pin"),
    (".github/workflows/ci.yml", "        with:\n          persist-credentials: false\n", "\n", "credentials"),
    (".github/workflows/ci.yml", "permissions: {}\n", "permissions:\n  contents: write\n", "permissions"),
    (".github/workflows/ci.yml", "    permissions:\n      contents: read\n", "", "permissions"),
    # The runner image as it is: no protoc, Compose v2 only, sudo's PATH
    # and HOME, Docker's own packages.
    (".github/workflows/ci.yml",
     "      - run: sudo apt-get update && sudo apt-get install -y --no-install-recommends protobuf-compiler\n",
     "", "toolset"),
    ("scripts/lint-examples.sh", "if command -v docker-compose >/dev/null 2>&1; then\n",
     "docker-compose -f examples/compose/docker-compose.yml config -q\nif false; then\n", "toolset"),
    (".github/workflows/ci.yml", "      - run: bash scripts/lint-examples.sh\n",
     "      - run: sudo bash scripts/lint-examples.sh\n", "sudo"),
    (".github/workflows/ci.yml",
     "sudo env \"PATH=$PATH\" \"RUSTUP_HOME=$HOME/.rustup\" \"CARGO_HOME=$HOME/.cargo\" bash scripts/test.sh",
     "sudo bash scripts/test.sh", "sudo"),
    ("scripts/install-prereqs.sh", "need dockerd docker.io\n", "need /usr/sbin/dockerd docker.io\n", "toolset"),
    (".github/workflows/ci.yml", "      - run: rustup toolchain install\n", "", "toolset"),
    (".github/workflows/release.yml", "      - run: rustup toolchain install\n", "", "toolset"),
    # A release anyone can verify: pulled anonymously, cosign's version
    # named, a signature cosign v2 finds.
    (".github/workflows/release.yml", "      - name: Pulled anonymously\n",
     "      - uses: docker/login-action@4907a6ddec9925e35a0a9e82d7399ccc52663121 # v4.1.0\n"
     "        with:\n          registry: ghcr.io\n          username: ${{ github.actor }}\n"
     "          password: ${{ secrets.GITHUB_TOKEN }}\n      - name: Pulled anonymously\n", "release"),
    (".github/workflows/release.yml", "          docker pull --platform", "          true --platform", "release"),
    (".github/workflows/release.yml", "        with:\n          # The version the README names.\n"
     "          cosign-release: v3.1.3\n", "", "release"),
    (".github/workflows/release.yml",
     "          cosign sign --yes --new-bundle-format=false --use-signing-config=false \"$IMAGE@$DIGEST\"\n",
     "", "release"),
    (".github/workflows/release.yml", "permissions: {}\n",
     "permissions:\n  contents: write\n  packages: write\n", "release"),
    (".github/workflows/release.yml", "          persist-credentials: false\n", "", "release"),
    (".github/workflows/release.yml", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
     "actions/checkout@v7", "release"),
    (".github/workflows/release.yml", "--sbom=true --provenance=mode=max ", "", "release"),
    (".github/workflows/release.yml",
     "          cosign sign --yes \"$IMAGE@$DIGEST\"\n"
     "          cosign sign --yes --new-bundle-format=false --use-signing-config=false \"$IMAGE@$DIGEST\"\n",
     "          echo unsigned\n", "release"),
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
