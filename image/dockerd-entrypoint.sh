#!/bin/sh
# dockerd-entrypoint.sh of mtuvisor's Debian-based image (image/Dockerfile.debian),
# which `mtuvisor supervise` runs. It keeps docker:dind's contract, so that
# the image can take docker:dind's place in any setup:
#
#   no arguments, or flags only (`--mtu=1450 --debug`)
#       dockerd with the default socket (or DOCKER_HOST when it is unix://)
#       and, when DOCKER_TLS_CERTDIR is set (the image sets /certs), TLS on
#       tcp://0.0.0.0:2376 with --tlsverify and certificates made here on
#       the first start; when it is empty, plain tcp://0.0.0.0:2375. The
#       flags come after these, so they can override them.
#   `dockerd ARGS...`
#       that dockerd, as given (actions-runner-controller's form).
#   any other command
#       run as given, with DOCKER_HOST pointing at the local socket if unset.
#
# Certificates (DOCKER_TLS_CERTDIR=DIR): DIR/ca holds the CA, made once and
# kept across restarts; DIR/server is reissued on every start (the
# container's addresses may have changed); DIR/client (share it with the
# jobs) is issued once and reissued only when it no longer verifies or
# expires within 30 days. Server certificates without a CA key in DIR/ca are
# the user's own: they are verified, never replaced. DOCKER_TLS_SAN adds
# subject alternative names (`DNS:docker.example,IP:10.0.0.5`).
set -eu

days=825
# Reissue what expires within this many seconds (30 days).
renew=2592000

key() { # FILE: an RSA key, unless one is there
	[ -s "$1" ] || openssl genrsa -out "$1" 4096 2>/dev/null
}

# Every name and address a client may use for this daemon.
san() {
	{
		ip -o addr show | awk '{ split($4, a, "/"); print "IP:" a[1] }'
		for name in "$(hostname)" "$(hostname -f 2>/dev/null || true)" docker localhost; do
			[ -z "$name" ] || echo "DNS:$name"
		done
		if [ -n "${DOCKER_TLS_SAN:-}" ]; then echo "$DOCKER_TLS_SAN" | tr ',' '\n'; fi
	} | sort -u | paste -sd, -
}

issue() { # DIR NAME USAGE [SAN]: DIR/{key,cert,ca}.pem signed by the CA
	mkdir -p "$1"
	key "$1/key.pem"
	printf '[ext]\nextendedKeyUsage = %s\n' "$3" >"$1/openssl.cnf"
	if [ -n "${4:-}" ]; then printf 'subjectAltName = %s\n' "$4" >>"$1/openssl.cnf"; fi
	openssl req -new -key "$1/key.pem" -subj "/CN=$2" -out "$1/csr.pem"
	openssl x509 -req -in "$1/csr.pem" -CA "$ca/cert.pem" -CAkey "$ca/key.pem" \
		-CAcreateserial -days "$days" -extfile "$1/openssl.cnf" -extensions ext \
		-out "$1/cert.pem" 2>/dev/null
	cp "$ca/cert.pem" "$1/ca.pem"
	rm -f "$1/csr.pem"
	openssl verify -CAfile "$1/ca.pem" "$1/cert.pem" >/dev/null
}

valid() { # DIR: DIR's certificate is the CA's and does not expire soon
	[ -s "$1/cert.pem" ] && [ -s "$1/key.pem" ] && cmp -s "$1/ca.pem" "$ca/cert.pem" &&
		openssl verify -CAfile "$ca/cert.pem" "$1/cert.pem" >/dev/null 2>&1 &&
		openssl x509 -in "$1/cert.pem" -noout -checkend "$renew" >/dev/null
}

certificates() { # DIR
	dir=$1
	ca=$dir/ca
	if [ -s "$dir/server/ca.pem" ] && [ -s "$dir/server/cert.pem" ] &&
		[ -s "$dir/server/key.pem" ] && [ ! -s "$ca/key.pem" ]; then
		openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem" >/dev/null
		return
	fi
	mkdir -p "$ca"
	key "$ca/key.pem"
	if ! { [ -s "$ca/cert.pem" ] && openssl x509 -in "$ca/cert.pem" -noout -checkend "$renew" >/dev/null; }; then
		openssl req -new -x509 -key "$ca/key.pem" -subj '/CN=mtuvisor dind CA' -days "$days" \
			-addext keyUsage=critical,digitalSignature,keyCertSign -out "$ca/cert.pem"
	fi
	issue "$dir/server" 'mtuvisor dind server' serverAuth "$(san)"
	if ! valid "$dir/client"; then
		issue "$dir/client" 'mtuvisor dind client' clientAuth
	fi
	# Jobs run as any user: they must read the client key.
	chmod 0644 "$dir/client/key.pem"
	echo "dockerd-entrypoint.sh: TLS certificates in $dir (CA $(openssl x509 -in "$ca/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2))" >&2
}

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	socket=unix:///var/run/docker.sock
	case ${DOCKER_HOST:-} in unix://*) socket=$DOCKER_HOST ;; esac
	if [ -n "${DOCKER_TLS_CERTDIR:-}" ]; then
		certificates "$DOCKER_TLS_CERTDIR"
		set -- dockerd --host="$socket" --host=tcp://0.0.0.0:2376 --tlsverify \
			--tlscacert "$DOCKER_TLS_CERTDIR/server/ca.pem" \
			--tlscert "$DOCKER_TLS_CERTDIR/server/cert.pem" \
			--tlskey "$DOCKER_TLS_CERTDIR/server/key.pem" "$@"
	else
		set -- dockerd --host="$socket" --host=tcp://0.0.0.0:2375 "$@"
	fi
fi

if [ "$1" = dockerd ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "dockerd-entrypoint.sh: dockerd must run as root here (this image has no rootless mode)" >&2
		exit 1
	fi
	# A pid file left by an unclean stop keeps dockerd from starting.
	find /run /var/run -maxdepth 1 -iname 'docker*.pid' -delete 2>/dev/null || true
	# Legacy iptables when asked, or when the host already uses it (mixing
	# the two leaves dockerd's rules where the kernel does not look).
	legacy=
	if [ -n "${DOCKER_IPTABLES_LEGACY+set}" ]; then
		legacy=$DOCKER_IPTABLES_LEGACY
	else
		for f in /proc/net/ip_tables_names /proc/net/ip6_tables_names; do
			if [ -s "$f" ] && [ -n "$(cat "$f")" ]; then legacy=1; fi
		done
	fi
	if [ -n "$legacy" ]; then PATH=/usr/local/sbin/.iptables-legacy:$PATH; fi
	export PATH
	echo "dockerd-entrypoint.sh: $(iptables --version)" >&2
	exec "$@"
fi

if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ]; then
	export DOCKER_HOST=unix:///var/run/docker.sock
fi
exec "$@"
