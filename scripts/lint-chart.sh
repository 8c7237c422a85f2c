#!/usr/bin/env bash
# The Helm chart, checked offline with the real tools (pinned, installed by
# scripts/install-tools.sh and scripts/install-linters.sh):
#
# - `helm lint --strict`, with the default values and with each file in
#   charts/mtuvisor/ci/ (values.schema.json is checked on each);
# - every documented value rendered non-default by one of those files;
# - `helm template` with each, for Kubernetes 1.29 and 1.33, each rendering
#   validated (kubernetes-validate --strict) against that version's
#   schemas;
# - examples/kubernetes/node-daemonset.yaml equal to the chart's rendering
#   (scripts/render-daemonset.sh);
# - the PrometheusRule's rules: `promtool check rules`, and `promtool test
#   rules` with charts/tests/prometheus-rules.test.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-linters.sh
bash scripts/install-tools.sh
helm=target/tools/bin/helm
promtool=target/tools/bin/promtool
venv=target/linters/bin
chart=charts/mtuvisor
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== helm lint --strict"
"$helm" lint --strict --quiet "$chart"
for values in "$chart"/ci/*-values.yaml; do
    "$helm" lint --strict --quiet "$chart" -f "$values"
done

echo "== every value rendered non-default"
"$venv/python" scripts/check-chart.py coverage

echo "== helm template, each rendering validated (Kubernetes 1.29 and 1.33)"
renderings=0
for values in default "$chart"/ci/*-values.yaml; do
    args=()
    if [ "$values" != default ]; then args=(-f "$values"); fi
    for version in 1.29.0 1.33.0; do
        out="$scratch/$(basename "$values" .yaml)-$version.yaml"
        "$helm" template mtuvisor "$chart" --namespace kube-system --kube-version "$version" \
            "${args[@]}" > "$out"
        # The Prometheus Operator's kinds have no schema there: they are
        # said to be skipped (a warning), the rules are checked below.
        "$venv/kubernetes-validate" --strict --quiet --no-warn -k "$version" "$out"
        renderings=$((renderings + 1))
    done
done
echo "$renderings renderings valid"

echo "== the raw manifest is the chart's rendering"
if ! diff -u examples/kubernetes/node-daemonset.yaml <(bash scripts/render-daemonset.sh); then
    echo "examples/kubernetes/node-daemonset.yaml differs from the chart: bash scripts/render-daemonset.sh --write" >&2
    exit 1
fi

echo "== promtool (the chart's alerts)"
"$helm" template mtuvisor "$chart" --namespace kube-system --set prometheusRule.enabled=true \
    --show-only templates/prometheusrule.yaml > "$scratch/rule.yaml"
"$venv/python" scripts/check-chart.py rules "$scratch/rule.yaml" "$scratch/prometheus-rules.yaml"
cp charts/tests/prometheus-rules.test.yaml "$scratch/"
"$promtool" check rules "$scratch/prometheus-rules.yaml"
"$promtool" test rules "$scratch/prometheus-rules.test.yaml"
echo "chart: all checks passed"
