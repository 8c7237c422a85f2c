#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests in real network
# namespaces against the real binary. Run as root on Debian/Ubuntu.
#
# The `optimized` profile: release's optimisation level, without the LTO
# and stripping that only the shipped binary needs (Cargo.toml says why).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
# helm, pinned: the real node deploys the chart's rendering.
bash scripts/install-tools.sh helm
exec cargo test --profile optimized "$@"
