#!/usr/bin/env bash
# Installs, from Debian's packages, the tools the demo and the tests drive:
# iproute2 (ip, namespaces, veths, bridges) and util-linux (nsenter).
# Does nothing when they are already there.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "mtuvisor: the demo and the tests build network namespaces and need root; run as root" >&2
    exit 1
fi

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
