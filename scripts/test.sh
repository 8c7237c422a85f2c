#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests in real network
# namespaces against the real binary. Run as root on Debian/Ubuntu.
#
# Release build: what is tested is what ships, and the clamp-latency test
# measures the real thing. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
exec cargo test --release "$@"
