#!/bin/bash
# poolscope's PgBouncer entrypoint: writes pgbouncer.ini and userlist.txt from
# the environment, then runs PgBouncer in the foreground (logs to stderr).
#
# Environment (unset or empty = the default in brackets; "-" = PgBouncer's own):
#   PGBOUNCER_DB_HOST             [db]         PostgreSQL host
#   PGBOUNCER_DB_PORT             [5432]       PostgreSQL port
#   PGBOUNCER_DB_NAME             [poolscope]  database, same name for clients
#   PGBOUNCER_AUTH_USER           [poolscope]  the one login in userlist.txt;
#                                              also stats_users (SHOW POOLS …)
#   PGBOUNCER_AUTH_PASSWORD_FILE  [/run/secrets/db_password]  its password
#                                 (one trailing newline is dropped; the file
#                                 must be readable by uid 999)
#   PGBOUNCER_POOL_MODE           [transaction] session|transaction|statement
#   PGBOUNCER_DEFAULT_POOL_SIZE   [-]  whole numbers; a bad value exits 2
#   PGBOUNCER_MAX_CLIENT_CONN     [-]
#   PGBOUNCER_RESERVE_POOL_SIZE   [-]
#   PGBOUNCER_QUERY_WAIT_TIMEOUT  [-]  seconds
#
# The generated files go to /run/pgbouncer (a tmpfs under a read-only root
# filesystem), or to a private directory under ${TMPDIR:-/tmp} when that is not
# writable. The password is read from its file into an unexported variable and
# written only to userlist.txt (mode 0600): never to the environment, the
# command line or the log.
#
# Arguments: none runs PgBouncer; arguments starting with "-" are added to its
# command line; anything else is run instead (e.g. `pgbouncer --version`).
set -eu

prog=pgbouncer-entrypoint

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

# One line, exit 2: a setting has a value PgBouncer must not be started with.
bad() { # NAME EXPECTED VALUE
  printf '%s: expected %s, got "%s"\n' "$1" "$2" "$3" >&2
  exit 2
}
die() {
  printf '%s: %s\n' "$prog" "$1" >&2
  exit 1
}

db_host="${PGBOUNCER_DB_HOST:-db}"
db_port="${PGBOUNCER_DB_PORT:-5432}"
db_name="${PGBOUNCER_DB_NAME:-poolscope}"
auth_user="${PGBOUNCER_AUTH_USER:-poolscope}"
password_file="${PGBOUNCER_AUTH_PASSWORD_FILE:-/run/secrets/db_password}"
pool_mode="${PGBOUNCER_POOL_MODE:-transaction}"

# Names go unquoted into pgbouncer.ini and its connection string: keep them to
# characters that need no quoting there.
[[ "$db_host" =~ ^[A-Za-z0-9_.:/-]+$ ]] ||
  bad PGBOUNCER_DB_HOST "a host name or IP address" "$db_host"
[[ "$db_port" =~ ^[0-9]{1,5}$ ]] && [ "$((10#$db_port))" -ge 1 ] && [ "$((10#$db_port))" -le 65535 ] ||
  bad PGBOUNCER_DB_PORT "a port number (1-65535)" "$db_port"
[[ "$db_name" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] && [ "$db_name" != pgbouncer ] ||
  bad PGBOUNCER_DB_NAME "a database name of letters, digits, _ . - (not pgbouncer)" "$db_name"
[[ "$auth_user" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
  bad PGBOUNCER_AUTH_USER "a role name of letters, digits, _ . -" "$auth_user"
case "$pool_mode" in
  session|transaction|statement) ;;
  *) bad PGBOUNCER_POOL_MODE "session, transaction or statement" "$pool_mode" ;;
esac

# Optional whole-number settings: "pgbouncer.ini key=value" lines, in order.
optional_lines=""
summary=""
for pair in \
  PGBOUNCER_DEFAULT_POOL_SIZE:default_pool_size \
  PGBOUNCER_MAX_CLIENT_CONN:max_client_conn \
  PGBOUNCER_RESERVE_POOL_SIZE:reserve_pool_size \
  PGBOUNCER_QUERY_WAIT_TIMEOUT:query_wait_timeout
do
  var="${pair%%:*}"
  key="${pair#*:}"
  value="${!var:-}"
  if [ -z "$value" ]; then
    summary="$summary $key=(pgbouncer default)"
    continue
  fi
  [[ "$value" =~ ^[0-9]{1,9}$ ]] || bad "$var" "a whole number" "$value"
  value="$((10#$value))"
  optional_lines="$optional_lines$key = $value"$'\n'
  summary="$summary $key=$value"
done

# The password: everything in the file but one trailing newline.
[ -f "$password_file" ] && [ -r "$password_file" ] ||
  die "cannot read the password file $password_file (PGBOUNCER_AUTH_PASSWORD_FILE) as uid $(id -u)"
password=""
IFS= read -r -d '' password < "$password_file" || true
password="${password%$'\n'}"
[ -n "$password" ] || die "the password file $password_file is empty"
case "$password" in
  *$'\n'*|*$'\r'*) die "the password in $password_file spans more than one line" ;;
esac

# Where the generated files go: /run/pgbouncer, else a private temp directory.
umask 077
conf_dir=""
if [ -d /run/pgbouncer ] && [ -w /run/pgbouncer ] && [ -x /run/pgbouncer ] &&
   probe="$(mktemp /run/pgbouncer/.probe.XXXXXX 2>/dev/null)"; then
  rm -f "$probe"
  conf_dir=/run/pgbouncer
else
  conf_dir="$(mktemp -d "${TMPDIR:-/tmp}/pgbouncer.XXXXXX" 2>/dev/null)" ||
    die "no writable directory for the generated config: mount a tmpfs at /run/pgbouncer (or set TMPDIR to a writable one)"
fi
ini="$conf_dir/pgbouncer.ini"
userlist="$conf_dir/userlist.txt"

# userlist.txt: "user" "password", a double quote inside doubled.
rm -f "$userlist"
printf '"%s" "%s"\n' "${auth_user//\"/\"\"}" "${password//\"/\"\"}" > "$userlist"
chmod 0600 "$userlist"
unset password

rm -f "$ini"
cat > "$ini" <<EOF
; Generated by $prog at container start; edits are lost on restart.
[databases]
$db_name = host=$db_host port=$db_port dbname=$db_name

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
; No unix socket (read-only root filesystem), no pid file, log to stderr only.
unix_socket_dir =
syslog = 0

auth_type = scram-sha-256
auth_file = $userlist
admin_users =
stats_users = $auth_user

pool_mode = $pool_mode
${optional_lines}
; Named prepared statements in transaction mode (sqlx prepares every query).
max_prepared_statements = 200
; Startup parameters sqlx sends: extra_float_digits is dropped, the rest are
; accepted and tracked per client. PgBouncer re-applies a tracked parameter on
; whichever server connection the client gets; before 1.26 only those that
; PostgreSQL reports (IntervalStyle), so statement_timeout and
; client_connection_check_interval are accepted but not applied by 1.24/1.25:
; there they hold as the role's defaults in PostgreSQL (set by docker/db-init
; and, from its own settings, by the service at every start).
ignore_startup_parameters = extra_float_digits
track_extra_parameters = IntervalStyle, statement_timeout, client_connection_check_interval
application_name_add_host = 0
EOF
chmod 0600 "$ini"

version="$(pgbouncer --version 2>/dev/null | sed -n '1s/^PgBouncer //p')"
printf '%s: PgBouncer %s, config %s: %s = %s:%s/%s, auth_user=%s (password from %s), auth_type=scram-sha-256, listen 0.0.0.0:6432, pool_mode=%s%s, max_prepared_statements=200\n' \
  "$prog" "${version:-?}" "$ini" "$db_name" "$db_host" "$db_port" "$db_name" \
  "$auth_user" "$password_file" "$pool_mode" "$summary" >&2
if [ -n "$version" ] && dpkg --compare-versions "$version" lt 1.26 2>/dev/null; then
  printf '%s: PgBouncer %s (< 1.26) accepts statement_timeout and client_connection_check_interval as startup parameters but does not apply them (PostgreSQL does not report them back); server connections take them from the role'"'"'s defaults, which the service keeps in agreement with its settings\n' \
    "$prog" "$version" >&2
fi

exec pgbouncer "$@" "$ini"
