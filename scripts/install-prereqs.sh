#!/usr/bin/env bash
# Installs, from Debian's packages, what the demo and the tests drive:
# iproute2 (namespaces, veths, bridges), util-linux (nsenter), docker.io
# (dockerd, containerd, runc and the 20.10 client), busybox-static (the
# test image is imported from it), docker-compose, iptables, nftables and
# debootstrap (the image test builds its Debian base with it);
# containernetworking-plugins (the real node's CNI bridge, host-local and
# loopback) and protobuf-compiler (the CRI client's build script).
# Does nothing when they are already there.
#
# A Docker engine that is there already counts, wherever it is (GitHub's
# runner images have Docker's own docker-ce and containerd.io, dockerd at
# /usr/bin/dockerd, and Compose v2 as `docker compose`): Debian's docker.io
# is never installed beside it, which apt could only do by removing it.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "mtuvisor: the demo and the tests build network namespaces and run dockerd; run as root" >&2
    exit 1
fi

missing=()
need() { # command-or-path package
    if [[ $1 == /* ]]; then [ -e "$1" ] || missing+=("$2"); else command -v "$1" >/dev/null 2>&1 || missing+=("$2"); fi
}
need ip iproute2
need nsenter util-linux
need dockerd docker.io
need docker docker.io
# Compose 1.29 (Debian) or the v2 plugin.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    missing+=(docker-compose)
fi
need iptables iptables
need nft nftables
need openssl openssl
need debootstrap debootstrap
need ctr containerd
need runc runc
need /usr/lib/cni/bridge containernetworking-plugins
need /usr/lib/cni/host-local containernetworking-plugins
need /usr/lib/cni/loopback containernetworking-plugins
need protoc protobuf-compiler
# The static build: the dynamic one cannot run inside the imported image.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi

if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
