#!/usr/bin/env bash
# Runs once, when the postgres image initialises an empty data directory
# (docker-entrypoint-initdb.d); later `up`s reuse the volume and skip it.
# Works with the official image (runs this as user postgres) and with anything
# that follows its conventions (may run it as root).
#
# 1. The service logs in as a NON-superuser: PostgreSQL keeps
#    superuser_reserved_connections free for superusers, so when the pool
#    exhausts max_connections an operator can still `psql -U postgres` in and look.
# 2. No `trust` authentication: initdb writes `trust` rules for the socket and
#    for 127.0.0.1/::1 (the image adds only `host all all all scram-sha-256`).
#    Here socket rules become `peer` with a map that lets the container's root
#    and postgres OS users in as the postgres role - so
#    `docker compose exec db psql -U postgres` keeps working without a password
#    (whoever can `docker exec` owns the data files anyway) - and TCP rules
#    become scram-sha-256. The server reads the files when the entrypoint
#    restarts it after the init scripts, so later init scripts still run.
# 3. The role's session defaults in its database: statement_timeout 65 s
#    (DB_STATEMENT_TIMEOUT's default, SLEEP_MAX 60 + 5) and
#    client_connection_check_interval 1 s. The service asks for both when it
#    connects, but PgBouncer 1.24 does not pass them on to PostgreSQL; its
#    server connections start with these instead. Whenever the service starts
#    through a pooler it sets them again from its own settings (src/db/
#    role_defaults.rs), so they follow .env; here they are in place before
#    PgBouncer's very first server connection. Written as plain numbers
#    (milliseconds), the spelling the service compares with.
set -euo pipefail

pgdata=${PGDATA:-/var/lib/postgresql/data}

# The password: from the file compose provides (POOLSCOPE_DB_PASSWORD_FILE),
# else the variable, else the default. psql's :'pw' quotes it, whatever
# characters it holds.
if [ -n "${POOLSCOPE_DB_PASSWORD_FILE:-}" ]; then
  pw=$(cat "$POOLSCOPE_DB_PASSWORD_FILE")
else
  pw=${POOLSCOPE_DB_PASSWORD:-poolscope}
fi
[ -n "$pw" ] || { echo "10-poolscope-role.sh: empty password for role poolscope" >&2; exit 1; }

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v pw="$pw" <<'SQL'
CREATE ROLE poolscope LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
-- Owning the database lets the service's migration create its table.
CREATE DATABASE poolscope OWNER poolscope;
ALTER ROLE poolscope IN DATABASE poolscope SET statement_timeout = 65000;
ALTER ROLE poolscope IN DATABASE poolscope SET client_connection_check_interval = 1000;
SQL
unset pw

# Rewrite in place (`>` keeps the file's owner and mode; this may run as root).
hba=$pgdata/pg_hba.conf
rules=$(awk '
  /^[ \t]*(#|$)/ { print; next }
  $NF == "trust" {
    sub(/trust[ \t]*$/, ($1 == "local") ? "peer map=poolscope_local" : "scram-sha-256")
  }
  { print }
' "$hba")
printf '%s\n' "$rules" >"$hba"
cat >>"$pgdata/pg_ident.conf" <<'IDENT'

# poolscope (docker/db-init): OS users allowed in as the postgres role over the
# container's socket (`docker compose exec db psql -U postgres`).
poolscope_local   root       postgres
poolscope_local   postgres   postgres
IDENT
if grep -Eq '^[^#]*[[:space:]]trust([[:space:]]|$)' "$hba"; then
  echo "10-poolscope-role.sh: a trust rule is left in $hba" >&2
  exit 1
fi
echo "10-poolscope-role.sh: role poolscope created (statement_timeout 65s, client_connection_check_interval 1s in database poolscope); pg_hba.conf has no trust rule"
