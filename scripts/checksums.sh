#!/usr/bin/env bash
# Writes DIR/SHA256SUMS for the release binaries in DIR (mtuvisor-*), as the
# release workflow publishes it: computed from the files as downloaded, in
# a job that built nothing, so that what is signed off is what users get.
set -euo pipefail
dir=${1:?usage: checksums.sh DIR}
cd "$dir"
shopt -s nullglob
binaries=(mtuvisor-*)
if [ ${#binaries[@]} -eq 0 ]; then
    echo "checksums.sh: no mtuvisor-* binary in $dir" >&2
    exit 1
fi
sha256sum "${binaries[@]}" > SHA256SUMS
cat SHA256SUMS
