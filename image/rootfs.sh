#!/bin/sh
# The image's base from Debian's packages alone, for machines without a
# container registry: Debian 12 (minbase) with dockerd, containerd, runc,
# the docker CLI, iptables, nftables and iproute2, written as a tarball for
# `docker import`. With a registry, image/Dockerfile starts from
# debian:bookworm-slim and installs the same packages itself.
#
#   sh image/rootfs.sh OUT.tar [MIRROR]
set -eu
out=${1:?usage: rootfs.sh OUT.tar [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
packages=docker.io,iptables,nftables,iproute2,openssl,ca-certificates

command -v debootstrap >/dev/null || {
	apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
}
dir=$(mktemp -d /tmp/mtuvisor-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
	tail -20 "$dir.log" >&2
	rm -f "$dir.log"
	exit 1
}
rm -f "$dir.log"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -cf "$out.tmp" . && mv "$out.tmp" "$out"
