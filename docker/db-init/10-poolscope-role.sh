#!/usr/bin/env bash
# Runs once, when the postgres image initialises an empty data directory
# (docker-entrypoint-initdb.d); later `up`s reuse the volume and skip it.
#
# The service logs in as a NON-superuser: PostgreSQL keeps
# superuser_reserved_connections free for superusers, so when the pool exhausts
# max_connections an operator can still `psql -U postgres` in and look.
set -euo pipefail

# psql variables (:'pw') quote the password, whatever characters it holds.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v pw="${POOLSCOPE_DB_PASSWORD:-poolscope}" <<'SQL'
CREATE ROLE poolscope LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
-- Owning the database lets the service's migration create its table.
CREATE DATABASE poolscope OWNER poolscope;
SQL
