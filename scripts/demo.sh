#!/usr/bin/env bash
# The built-in demo, in two parts.
#
# 1. The failure users come with, and its fix (testkit/src/bin/blackhole-demo.rs):
#    a pod network namespace whose eth0 has MTU 1450, a router beyond it
#    that drops its ICMP "fragmentation needed", a web server at MTU 1500.
#    The same wget of 8 MB in an inner container stalls under a plain
#    dockerd (killed after 15 s) and completes under `mtuvisor supervise`.
# 2. How it works, link by link: a pod namespace with a Docker-style
#    docker0 and br-<id> bridge and three "containers" at MTU 1500, and an
#    unrelated bridge. mtuvisor watch runs in the pod; the MTUs are shown
#    before and after, then a container starts and the outer MTU drops to
#    1400 while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-prereqs.sh
cargo build --profile optimized --quiet --workspace --bins
bin=$PWD/target/optimized/mtuvisor

echo "== part 1: an 8 MB download from an inner container, without and with mtuvisor"
target/optimized/blackhole-demo
echo
echo "== part 2: mtuvisor watch in a pod namespace, link by link"

p=mtuvisor-demo
pod=$p-pod router=$p-router
containers=("$p-c1" "$p-c2" "$p-c3" "$p-c4")
log=$(mktemp)
watcher=
cleanup() {
    if [ -n "$watcher" ]; then
        kill "$watcher" 2>/dev/null || true
        wait "$watcher" 2>/dev/null || true
    fi
    for ns in "$pod" "$router" "${containers[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -f "$log"
}
trap cleanup EXIT
cleanup
trap cleanup EXIT

for ns in "$pod" "$router" "${containers[@]}"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$pod" link add eth0 type veth peer name down0 netns "$router"
ip -n "$pod" link set eth0 mtu 1450 up
ip -n "$router" link set down0 mtu 1450 up
ip -n "$pod" addr add 192.0.2.2/24 dev eth0
ip -n "$router" addr add 192.0.2.1/24 dev down0
ip -n "$pod" route add default via 192.0.2.1

# What dockerd does: a bridge, a veth pair per container, one end on the
# bridge, the other moved into the container and renamed eth0.
container() { # bridge host-end namespace
    ip -n "$pod" link add "$2" type veth peer name "$2p"
    ip -n "$pod" link set "$2" master "$1" up
    ip -n "$pod" link set "$2p" netns "$3"
    ip -n "$3" link set "$2p" name eth0 up
}
ip -n "$pod" link add docker0 type bridge
ip -n "$pod" link add br-0123456789ab type bridge
ip -n "$pod" link add lxcbr0 type bridge
for br in docker0 br-0123456789ab lxcbr0; do ip -n "$pod" link set "$br" mtu 1500 up; done
container docker0 veth1a2b3c4 "${containers[0]}"
container br-0123456789ab veth5d6e7f8 "${containers[1]}"
container br-0123456789ab veth9a8b7c6 "${containers[2]}"

show() {
    printf '  %-22s %-18s %s\n' NAMESPACE LINK MTU
    for ns in "$pod" "${containers[@]}"; do
        ip -n "$ns" -o link show | awk -v ns="$ns" '{
            name=$2; sub(/:$/, "", name); sub(/@.*/, "", name)
            for (i = 1; i < NF; i++) if ($i == "mtu") mtu = $(i + 1)
            if (name != "lo") printf "  %-22s %-18s %s\n", ns, name, mtu
        }'
    done
}

echo
echo "== mtuvisor detect (in the pod)"
nsenter --net=/run/netns/$pod "$bin" detect
echo
echo "== before: Docker's links at 1500 on a 1450 network"
show

nsenter --net=/run/netns/$pod "$bin" watch >"$log" 2>&1 &
watcher=$!
sleep 1
echo
echo "== after mtuvisor watch started (lxcbr0 is not Docker's: left alone)"
show

echo
echo "== a container starts on br-0123456789ab while mtuvisor runs"
container br-0123456789ab vethc4c4c4c "${containers[3]}"
sleep 0.2
echo "  ${containers[3]} eth0 MTU: $(ip -n "${containers[3]}" -o link show eth0 | sed 's/.* mtu \([0-9]*\).*/\1/')"

echo
echo "== the outer MTU drops to 1400"
ip -n "$pod" link set eth0 mtu 1400
sleep 1
show

kill -TERM "$watcher"
status=0
wait "$watcher" || status=$?
watcher=
echo
echo "== mtuvisor exited with status $status on SIGTERM; its log:"
sed 's/^/  /' "$log"
