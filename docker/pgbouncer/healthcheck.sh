#!/bin/bash
# pgbouncer-healthcheck [host] [port]: exits 0 when PgBouncer answers the
# PostgreSQL protocol on host:port (default 127.0.0.1:6432). Sends an
# SSLRequest and expects the one-byte answer 'N' (no TLS) or 'S' (TLS): no
# login, no password, no postgresql-client needed.
set -eu
host="${1:-127.0.0.1}"
port="${2:-6432}"
exec 3<>"/dev/tcp/$host/$port"
# SSLRequest: length 8, code 80877103 (0x04d2162f).
printf '\000\000\000\010\004\322\026\057' >&3
reply=""
IFS= read -r -n 1 -t 2 reply <&3 || true
exec 3<&-
case "$reply" in
  N|S) exit 0 ;;
  *) echo "pgbouncer-healthcheck: no PostgreSQL protocol answer on $host:$port" >&2; exit 1 ;;
esac
