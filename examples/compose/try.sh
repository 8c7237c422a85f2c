#!/bin/sh
# After `docker compose up -d`: the same download of 8 MB inside a
# container of each inner dockerd. The plain one stalls (killed after
# LIMIT seconds), mtuvisor's completes. Exit 0 when that is what happened.
#
#   sh try.sh            # COMPOSE="docker-compose" for Compose 1.29
#
# INNER_IMAGE (default busybox:1.37) is what the inner containers run; the
# inner dockerds pull it on first use unless it is there.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPOSE:-}" ]; then
	if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
image=${INNER_IMAGE:-busybox:1.37}
limit=${LIMIT:-15}
url=http://198.18.51.10/8mb.bin

inner() { # SERVICE ARGS...: docker in the service's own dockerd
	service=$1
	shift
	# shellcheck disable=SC2086 # COMPOSE is a command with its arguments
	$COMPOSE exec -T "$service" docker "$@"
}

result=0
for service in dind-plain dind-mtuvisor; do
	i=0
	until inner "$service" version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -ge 60 ]; then
			echo "$service: its dockerd did not answer within 60 s" >&2
			exit 1
		fi
		sleep 1
	done
	mtu=$(inner "$service" run --rm "$image" cat /sys/class/net/eth0/mtu)
	# Timed inside the container (/proc/uptime), so the host needs no GNU date.
	# shellcheck disable=SC2016 # expanded by the inner shell
	# Completed means all 8388608 bytes arrived.
	script='read a _ </proc/uptime; n=$(timeout -s KILL "$1" wget -q -O - "$2" 2>/dev/null | wc -c); read b _ </proc/uptime; [ "$n" -eq 8388608 ] && echo "$a $b"'
	took=$(inner "$service" run --rm "$image" sh -c "$script" sh "$limit" "$url" | awk 'NF == 2 { printf "%.2f", $2 - $1 }')
	if [ -n "$took" ]; then
		printf '%-14s inner eth0 MTU %s: wget of 8 MB completed in %s s\n' "$service" "$mtu" "$took"
		outcome=completed
	else
		printf '%-14s inner eth0 MTU %s: wget of 8 MB stalled, killed after %s s\n' "$service" "$mtu" "$limit"
		outcome=stalled
	fi
	case $service/$outcome in
	dind-plain/stalled | dind-mtuvisor/completed) ;;
	*) result=1 ;;
	esac
done
exit "$result"
