#!/usr/bin/env bash
# Offline checks of everything users copy: Kubernetes manifests against the
# Kubernetes schemas, the Helm chart (scripts/lint-chart.sh), the examples and the release workflow against the
# rules of the systems they go into (scripts/check-examples.py, with a
# self-test that each rule catches its broken form), every YAML file with
# yamllint, the GitHub workflows
# with actionlint, the Dockerfiles with hadolint, every shell script with
# ShellCheck, the systemd unit with
# systemd-analyze, and the release binary step for the host target. Exits
# non-zero on the first broken example. Needs target/optimized/mtuvisor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-linters.sh
bin=target/linters/bin

echo "== kubernetes-validate (Kubernetes 1.29 and 1.33, strict)"
# The pods from 1.29 on (native sidecars); the raw DaemonSet from 1.30 on
# (the appArmorProfile field; the chart renders the annotation for 1.29).
pods=()
for f in examples/kubernetes/*.yaml; do
    [ "$f" = examples/kubernetes/node-daemonset.yaml ] || pods+=("$f")
done
for version in 1.29.0 1.33.0; do
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${pods[@]}"
done
for version in 1.30.0 1.33.0; do
    "$bin/kubernetes-validate" --strict --quiet -k "$version" examples/kubernetes/node-daemonset.yaml
done

echo "== the Helm chart"
bash scripts/lint-chart.sh

echo "== rust-version against the lockfile, the pinned toolchain and the image"
"$bin/python" scripts/check-rust-version.py
"$bin/python" scripts/check-rust-version.py --self-test

echo "== links (every relative link and anchor in the Markdown)"
"$bin/python" scripts/check-links.py
"$bin/python" scripts/check-links.py --self-test

echo "== check-examples (the rules of the systems the examples go into)"
"$bin/python" scripts/check-examples.py
# Each rule fails on the broken form it exists for.
"$bin/python" scripts/check-examples.py --self-test

echo "== yamllint"
"$bin/yamllint" --strict -c .yamllint.yml examples .github .yamllint.yml \
    charts/mtuvisor/Chart.yaml charts/mtuvisor/values.yaml charts/mtuvisor/ci charts/tests

echo "== actionlint"
"$bin/actionlint" .github/workflows/*.yml

echo "== hadolint"
"$bin/hadolint" image/Dockerfile image/Dockerfile.debian

echo "== shellcheck"
shellcheck .ci/run scripts/*.sh image/*.sh examples/*/*.sh

echo "== systemd-analyze verify"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for unit in examples/systemd/*.service; do
    # The unit names the installed path; verify it against this build.
    sed "s#/usr/local/bin/mtuvisor#$PWD/target/optimized/mtuvisor#" "$unit" > "$scratch/$(basename "$unit")"
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$scratch/$(basename "$unit")"
done

echo "== compose config (the image test runs the file for real)"
# Debian's Compose 1.29 where it is, else the v2 plugin (GitHub's runners).
if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f examples/compose/docker-compose.yml config -q
else
    docker compose -f examples/compose/docker-compose.yml config -q
fi

echo "== release binary step (host target)"
host=$(rustc -vV | sed -n 's/^host: //p')
bash scripts/release-binary.sh "$host" "$scratch/dist/mtuvisor-host"
bash scripts/checksums.sh "$scratch/dist"
(cd "$scratch/dist" && sha256sum -c SHA256SUMS)
echo "examples: all checks passed"
