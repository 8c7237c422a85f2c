#!/usr/bin/env bash
# The raw DaemonSet, examples/kubernetes/node-daemonset.yaml, for clusters
# without Helm: charts/mtuvisor rendered with its default values (release
# "mtuvisor" in kube-system, Kubernetes 1.33's API). Prints it; with
# --write, writes the file. scripts/lint-chart.sh fails when the file
# differs from a fresh rendering.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh helm
out=examples/kubernetes/node-daemonset.yaml
render() {
    cat <<'HEADER'
# The node agent's DaemonSet for clusters without Helm: charts/mtuvisor
# rendered with its default values (`bash scripts/render-daemonset.sh
# --write`; CI fails when this file differs from the chart). With Helm,
# install the chart instead (README, "Install with Helm"): the same
# objects, and options (monitors, alerts, settings) in values.yaml.
#
# Kubernetes >= 1.30 (the appArmorProfile field); on 1.29 install the
# chart, which renders the AppArmor annotation there.
#
#   kubectl apply -f node-daemonset.yaml
HEADER
    target/tools/bin/helm template mtuvisor charts/mtuvisor --namespace kube-system --kube-version 1.33.0
}
case "${1:-}" in
    --write) render > "$out"; echo "wrote $out" ;;
    "") render ;;
    *) echo "usage: render-daemonset.sh [--write]" >&2; exit 2 ;;
esac
