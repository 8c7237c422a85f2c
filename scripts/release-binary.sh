#!/usr/bin/env bash
# Builds the release binary for TARGET (a Rust target triple, e.g.
# x86_64-unknown-linux-musl for a static binary) and writes it to OUT. The
# release workflow runs it per architecture (its checksums are computed in
# a job of their own, scripts/checksums.sh); it runs here for the host
# target.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: release-binary.sh TARGET OUT}
out=${2:?usage: release-binary.sh TARGET OUT}
cargo build --release --locked --target "$target" --bin mtuvisor
mkdir -p "$(dirname "$out")"
cp "target/$target/release/mtuvisor" "$out"
echo "$out: $(stat -c %s "$out") bytes"
